import Testing

@Test func placeholder_ModelTests() { #expect(Bool(true)) }
