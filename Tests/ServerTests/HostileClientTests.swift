import Engine
import Foundation
import Hummingbird
import HummingbirdTesting
@testable import Server
import Testing

@Suite("Requests that repeat JSON keys")
struct LastKeyWinsTests {
    struct Shape: Decodable, Equatable {
        var a: Int
        var b: [Inner]?
        struct Inner: Decodable, Equatable { var c: String }
    }

    func decode(_ s: String) throws -> Shape {
        let data = Data(s.utf8)
        return try JSONDecoder().decode(Shape.self, from: lastKeyWins(data) ?? data)
    }

    @Test("the last value of a repeated key counts, at any depth; no repeats: no copy")
    func lastWins() throws {
        #expect(try decode(#"{"a": 1, "a": 2}"#).a == 2)
        #expect(try decode(#" {"a":1,"b":[{"c":"x","c":"y"}],"a":3} "#) == Shape(a: 3, b: [.init(c: "y")]))
        #expect(try decode(#"{"\u0061": 1, "a": 5}"#).a == 5)
        #expect(try decode(#"{"a": 1, "b": [{"c": "x"}], "a\"": 9}"#).a == 1)
        #expect(lastKeyWins(Data(#"{"a": 1, "b": [{"c": "{\"a\": 2, \"a\": 3}"}]}"#.utf8)) == nil)
        #expect(lastKeyWins(Data(#"{"a": 1, "a": "#.utf8)) == nil, "not JSON: left to the decoder")
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(lastKeyWins(Data(deep.utf8)) == nil)
    }
}

@Suite("Routes a request does not match", .enabled(if: Fixture.enabled, Fixture.skipReason), .serialized)
struct UnroutedTests {
    @Test("another method on a route: JSON 405 with Allow; an unknown path: JSON 404")
    func methodAndPath() async throws {
        let (service, routes) = try Fixture.harness()
        try await withEngine(service) {
            let app = Application(router: makeRouter(routes))
            try await app.test(.router) { client in
                let r = try await client.execute(uri: "/v1/chat/completions", method: .get)
                #expect(r.status == .methodNotAllowed)
                #expect(r.headers[.allow] == "POST")
                #expect((try json(r.body)["error"] as? [String: Any])?["code"] as? String == "method_not_allowed")
                let h = try await client.execute(uri: "/metrics", method: .post)
                #expect(h.status == .methodNotAllowed && h.headers[.allow] == "GET")
                let n = try await client.execute(uri: "/v2/anything", method: .get)
                #expect(n.status == .notFound)
                #expect(n.headers[.contentType] == "application/json")
                #expect((try json(n.body)["error"] as? [String: Any])?["code"] as? String == "not_found")
                // The routes themselves are unchanged.
                #expect(try await client.execute(uri: "/health", method: .get).status == .ok)
            }
        }
    }

    @Test("requests in the inbox while slots are free are not 'waiting': no 429; a real wait is, with Retry-After")
    func queueCountsOnlyWaitsForASlot() async throws {
        let (service, routes) = try Fixture.harness(slots: 2, maxWaiting: 0)
        try await withEngine(service) {
            let long = SamplingParameters(temperature: 0, maxTokens: 400, ignoreEOS: true)
            let prompt = service.tokenizer!.encode("Once upon a time")
            // Both submitted before the engine thread has looked at either: both fit in a slot.
            let a = try service.submit(prompt: prompt, parameters: long)
            let b = try service.submit(prompt: prompt, parameters: long)
            try await waitFor { service.snapshot.running == 2 }
            let app = Application(router: makeRouter(routes))
            try await app.test(.router) { client in
                let r = try await client.post("/v1/completions", #"{"model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2}"#)
                #expect(r.status == .tooManyRequests)
                #expect(r.headers[.retryAfter] == "1")
            }
            service.cancel(a.ticket)
            service.cancel(b.ticket)
        }
    }

    @Test("stop strings over the byte bounds are a 400 naming stop")
    func stopBounds() async throws {
        let (service, routes) = try Fixture.harness()
        try await withEngine(service) {
            let app = Application(router: makeRouter(routes))
            try await app.test(.router) { client in
                let long = String(repeating: "y", count: 1025), ok = String(repeating: "y", count: 1024)
                for stop in [#""\#(long)""#, #"["\#(ok)", "\#(ok)", "z"]"#] {
                    let r = try await client.post("/v1/completions",
                                                  #"{"model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2, "stop": \#(stop)}"#)
                    #expect(r.status == .badRequest)
                    #expect((try json(r.body)["error"] as? [String: Any])?["param"] as? String == "stop")
                }
                let r = try await client.post("/v1/completions",
                                              #"{"model": "smollm2-135m", "prompt": "Hi", "max_tokens": 2, "stop": ["\#(ok)", "\#(ok)"]}"#)
                #expect(r.status == .ok)
            }
        }
    }
}
