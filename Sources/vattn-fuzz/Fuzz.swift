// libFuzzer targets for the parsers that read what users and clients send: a GGUF file, an OpenAI request body, text
// for the tokenizer. Each target checks properties that must hold for every input, not only "no crash".
//
//   scripts/fuzz.sh [SECONDS]                      builds with coverage + AddressSanitizer, fuzzes each target
//   vattn-fuzz TARGET [libFuzzer flags] [CORPUS]    (that build) fuzzes one target
//   vattn-fuzz TARGET FILE_OR_DIR...               (an ordinary build) replays a corpus: the regression test
import FoundationEssentials
import Glibc
#if VATTN_FUZZ
import CLibFuzzer
#endif
@testable import Model
@testable import Server

enum FuzzTarget: String, CaseIterable {
    case gguf, request, tokenizer

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .gguf: fuzzGGUF(bytes)
        case .request: fuzzRequest(bytes)
        case .tokenizer: fuzzTokenizer(bytes)
        }
    }
}

func printError(_ text: String) {
    _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
}

/// A property that failed: says which, then aborts (libFuzzer saves the input that did it).
func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if condition { return }
    printError("vattn-fuzz: property failed: \(message())\n")
    abort()
}

// MARK: GGUF: the reader, then everything the loader derives from a file, never trusting its sizes.

/// How far the inputs got (printed by the replay, so a corpus that stops reaching a stage shows).
nonisolated(unsafe) var reached: [String: Int] = [:]

func fuzzGGUF(_ bytes: UnsafeRawBufferPointer) {
    guard let file = try? GGUFFile(bytes: Array(bytes)) else { return }
    reached["parsed", default: 0] += 1
    for info in file.tensors {
        require(info.fileOffset >= 0 && info.byteCount >= 0 && info.fileOffset + info.byteCount <= file.fileSize,
                "tensor \(info.name) [\(info.fileOffset), +\(info.byteCount)) outside the file of \(file.fileSize) bytes")
        guard let tensor = try? file.tensor(named: info.name), tensor.rowCount > 0, tensor.rowLength > 0 else { continue }
        let row = tensor.dequantizeRow(tensor.rowCount - 1)
        require(row.count == tensor.rowLength, "row of \(row.count) values for a row length of \(tensor.rowLength)")
    }
    if let hp = try? LlamaHyperparameters(file: file) {
        reached["hyperparameters", default: 0] += 1
        require(hp.blockCount > 0 && hp.headCount > 0 && hp.embeddingLength > 0, "accepted hyperparameters \(hp)")
        require(hp.rmsNormEpsilon.isFinite && hp.ropeFreqBase.isFinite, "accepted non-finite hyperparameters \(hp)")
    }
    if let tokenizer = try? Tokenizer(file: file) {
        reached["tokenizer", default: 0] += 1
        let ids = tokenizer.encode("Hello, world! 123")
        require(ids.allSatisfy { Int($0) < tokenizer.vocabularySize }, "token id outside the vocabulary")
        _ = tokenizer.decode(ids)
    }
    if (try? ChatTemplate(file: file)) != nil { reached["chat template", default: 0] += 1 }
}

// MARK: Request bodies: decoding gives a request or a 400 that names what is wrong, never another error.

func fuzzRequest(_ bytes: UnsafeRawBufferPointer) {
    let data = Data(bytes)
    requireDecodes(ChatCompletionRequest.self, data)
    requireDecodes(CompletionRequest.self, data)
    if let rewritten = lastKeyWins(data) {
        require((try? JSONValue.parse(Array(rewritten))) != nil || (try? JSONValue.parse(Array(data))) == nil,
                "lastKeyWins turned JSON into something that is not")
    }
    _ = try? JSONValue.parse(bytes)
}

func requireDecodes<T: Decodable>(_ type: T.Type, _ data: Data) {
    do {
        _ = try OpenAIRoutes.decodeJSON(T.self, from: data)
    } catch let e as APIError {
        require(e.response.status.code == 400, "\(T.self): status \(e.response.status.code) for a bad body")
    } catch {
        require(false, "\(T.self): \(error) is not an APIError")
    }
}

// MARK: Tokenizer (the default model's): text round-trips, and chat content never becomes a control token.

nonisolated(unsafe) var fuzzTokenizerModel: (Tokenizer, ChatTemplate)?

func loadTokenizerModel() -> (Tokenizer, ChatTemplate) {
    if let loaded = fuzzTokenizerModel { return loaded }
    let path = getenv("VATTN_FUZZ_MODEL").map { String(cString: $0) }
        ?? (String(cString: getenv("HOME")) + "/.cache/vattn/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    do {
        let file = try GGUFFile(path: path)
        let loaded = (try Tokenizer(file: file), try ChatTemplate(file: file))
        fuzzTokenizerModel = loaded
        return loaded
    } catch {
        printError("vattn-fuzz tokenizer: cannot load \(path) (scripts/fixtures/fetch_model.sh; or VATTN_FUZZ_MODEL): \(error)\n")
        exit(2)
    }
}

func fuzzTokenizer(_ bytes: UnsafeRawBufferPointer) {
    let (tokenizer, template) = loadTokenizerModel()
    let text = String(decoding: bytes, as: UTF8.self)
    let ids = tokenizer.encode(text)
    require(!ids.contains { tokenizer.isSpecial($0) }, "plain text encoded to a control token")
    // Bytes without a token are dropped (SmolLM2 has none for a few control characters); all others round-trip.
    let expected = text.utf8.filter { tokenizer.hasToken(forByte: $0) }
    let decoded = ids.flatMap { tokenizer.tokenBytes($0) }
    require(decoded == expected, "text does not round-trip through encode and decode: \(text.debugDescription) → \(ids)")
    // The same conversation with this text and with empty content: the control tokens must be the same ones.
    func controlTokens(_ content: String) -> [TokenID] {
        let segments = template.segments([.system(content), .user(content)], addGenerationPrompt: true)
        return tokenizer.encode(segments: segments).filter { tokenizer.isSpecial($0) }
    }
    require(controlTokens(text) == controlTokens(""), "chat content became a control token")
}

// MARK: Entry points

nonisolated(unsafe) var selectedTarget = FuzzTarget.gguf

func usage() -> Never {
    printError("usage: vattn-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) "
               + "[libFuzzer flags] [CORPUS_DIR...]\n")
    exit(2)
}

@main
struct FuzzMain {
    static func main() {
        guard CommandLine.arguments.count >= 2, let target = FuzzTarget(rawValue: CommandLine.arguments[1]) else { usage() }
        selectedTarget = target
        #if VATTN_FUZZ
        // libFuzzer sees the command line without the target's name.
        var argc = CommandLine.argc - 1
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        argv![1] = argv![0]
        argv = argv! + 1
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        })
        #else
        replay(target, paths: Array(CommandLine.arguments.dropFirst(2)))
        #endif
    }

    /// Runs every file of the given files and folders through `target`.
    static func replay(_ target: FuzzTarget, paths: [String]) {
        guard !paths.isEmpty else { usage() }
        var count = 0
        for path in paths {
            for file in filesUnder(path) {
                guard let bytes = readAll(file) else {
                    printError("vattn-fuzz: cannot read \(file)\n")
                    exit(1)
                }
                bytes.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        let stages = reached.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        print("vattn-fuzz \(target.rawValue): \(count) inputs, every property held"
              + (stages.isEmpty ? "" : " (reached: \(stages.joined(separator: ", ")))"))
    }
    static func filesUnder(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [path] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasPrefix(".") { continue }
            out += filesUnder(path + "/" + name)
        }
        return out.sorted()
    }

    static func readAll(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { return out }
            out += chunk[..<n]
        }
    }
}
