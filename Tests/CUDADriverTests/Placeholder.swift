import Testing

@Test func placeholder_CUDADriverTests() { #expect(Bool(true)) }
