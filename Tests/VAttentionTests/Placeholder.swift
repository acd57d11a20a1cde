import Testing

@Test func placeholder_VAttentionTests() { #expect(Bool(true)) }
