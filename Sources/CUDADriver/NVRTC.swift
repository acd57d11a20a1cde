import CCUDA
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

private struct NVRTCFns: @unchecked Sendable {
    let version: PFN_nvrtcVersion
    let errorString: PFN_nvrtcGetErrorString
    let create: PFN_nvrtcCreateProgram
    let destroy: PFN_nvrtcDestroyProgram
    let compile: PFN_nvrtcCompileProgram
    let logSize: PFN_nvrtcGetProgramLogSize
    let log: PFN_nvrtcGetProgramLog
    let cubinSize: PFN_nvrtcGetCUBINSize
    let cubin: PFN_nvrtcGetCUBIN
}

/// Run-time CUDA C++ compiler (NVRTC, dlopen'd) with an in-memory and on-disk cache of CUBINs.
/// Cache key: FNV-1a of source + headers + architecture + options + NVRTC version.
public final class NVRTC: Sendable {
    private let fns: NVRTCFns
    public let version: (major: Int32, minor: Int32)
    private let memoryCache = Mutex<[UInt64: [UInt8]]>([:])
    /// Directory for cached CUBINs; nil disables the disk cache.
    public let cacheDirectory: String?

    public static let searchPaths = [
        "/usr/local/cuda/lib64/libnvrtc.so", "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12",
    ]

    public init(cacheDirectory: String? = NVRTC.defaultCacheDirectory()) throws(CUDAError) {
        var handle: UnsafeMutableRawPointer?
        var errors: [String] = []
        for path in NVRTC.searchPaths {
            if let h = dlopen(path, RTLD_NOW | RTLD_LOCAL) { handle = h; break }
            errors.append(dlerror().map { String(cString: $0) } ?? path)
        }
        guard let handle else { throw .nvrtcNotFound(errors.joined(separator: "; ")) }
        func sym<T>(_ name: String, _: T.Type) throws(CUDAError) -> T {
            guard let p = dlsym(handle, name) else { throw .missingSymbol(name) }
            return unsafeBitCast(p, to: T.self)
        }
        fns = NVRTCFns(
            version: try sym("nvrtcVersion", PFN_nvrtcVersion.self),
            errorString: try sym("nvrtcGetErrorString", PFN_nvrtcGetErrorString.self),
            create: try sym("nvrtcCreateProgram", PFN_nvrtcCreateProgram.self),
            destroy: try sym("nvrtcDestroyProgram", PFN_nvrtcDestroyProgram.self),
            compile: try sym("nvrtcCompileProgram", PFN_nvrtcCompileProgram.self),
            logSize: try sym("nvrtcGetProgramLogSize", PFN_nvrtcGetProgramLogSize.self),
            log: try sym("nvrtcGetProgramLog", PFN_nvrtcGetProgramLog.self),
            cubinSize: try sym("nvrtcGetCUBINSize", PFN_nvrtcGetCUBINSize.self),
            cubin: try sym("nvrtcGetCUBIN", PFN_nvrtcGetCUBIN.self))
        var major: Int32 = 0, minor: Int32 = 0
        _ = fns.version(&major, &minor)
        version = (major, minor)
        self.cacheDirectory = cacheDirectory
    }

    public static func defaultCacheDirectory() -> String? {
        if let d = getenv("VATTN_KERNEL_CACHE") { return String(cString: d) }
        guard let home = getenv("HOME") else { return nil }
        return String(cString: home) + "/.cache/vattn/kernels"
    }

    /// Compiles `source` to a CUBIN for `architecture` (e.g. `sm_90`). `headers` (include name → text) are what its
    /// `#include "…"` lines may name; they are part of the cache key. Compile errors throw with NVRTC's log.
    public func compile(source: String, name: String, architecture: String, options: [String] = [],
                        headers: [String: String] = [:]) throws(CUDAError) -> [UInt8]
    {
        let allOptions = ["--gpu-architecture=\(architecture)", "--std=c++17"] + options
        let includes = headers.sorted { $0.key < $1.key }
        let key = fnv1a(([source] + includes.flatMap { [$0.key, $0.value] } + allOptions + ["\(version)"])
            .joined(separator: "\u{0}"))
        if let hit = memoryCache.withLock({ $0[key] }) { return hit }
        let path = cacheDirectory.map { "\($0)/\(name)-\(String(key, radix: 16)).cubin" }
        if let path, let bytes = readFile(path) {
            memoryCache.withLock { $0[key] = bytes }
            return bytes
        }
        var program: nvrtcProgram?
        let headerTexts = includes.map { strdup($0.value) }, headerNames = includes.map { strdup($0.key) }
        defer { (headerTexts + headerNames).forEach { free($0) } }
        var r = headerTexts.map { UnsafePointer($0) }.withUnsafeBufferPointer { texts in
            headerNames.map { UnsafePointer($0) }.withUnsafeBufferPointer { names in
                fns.create(&program, source, name, Int32(includes.count), texts.baseAddress, names.baseAddress)
            }
        }
        guard r == 0 else { throw error(r, "nvrtcCreateProgram", log: "") }
        defer { _ = fns.destroy(&program) }
        let cStrings = allOptions.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        r = cStrings.map { UnsafePointer($0) }.withUnsafeBufferPointer {
            fns.compile(program, Int32(allOptions.count), $0.baseAddress)
        }
        if r != 0 { throw error(r, "nvrtcCompileProgram(\(name))", log: programLog(program)) }
        var size = 0
        _ = fns.cubinSize(program, &size)
        var cubin = [UInt8](repeating: 0, count: size)
        r = cubin.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { fns.cubin(program, $0.baseAddress) }
        }
        guard r == 0 else { throw error(r, "nvrtcGetCUBIN", log: "") }
        memoryCache.withLock { $0[key] = cubin }
        if let path, let dir = cacheDirectory { writeFile(path, cubin, directory: dir) }
        return cubin
    }

    private func programLog(_ program: nvrtcProgram?) -> String {
        var size = 0
        _ = fns.logSize(program, &size)
        var log = [CChar](repeating: 0, count: size + 1)
        _ = fns.log(program, &log)
        return String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func error(_ r: nvrtcResult, _ call: String, log: String) -> CUDAError {
        let name = fns.errorString(r).map { String(cString: $0) } ?? "NVRTC_ERROR_\(r)"
        return CUDAError(code: r, name: name, call: call, message: log.isEmpty ? name : log)
    }
}

func fnv1a(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    fseek(f, 0, SEEK_END)
    let n = ftell(f)
    guard n > 0 else { return nil }
    fseek(f, 0, SEEK_SET)
    var bytes = [UInt8](repeating: 0, count: n)
    return fread(&bytes, 1, n, f) == n ? bytes : nil
}

/// Best effort: a failed cache write only costs a recompile next time. Written to a temporary name and renamed so a
/// concurrent reader never sees half a file.
private func writeFile(_ path: String, _ bytes: [UInt8], directory: String) {
    var partial = ""
    for component in directory.split(separator: "/") {
        partial += "/" + component
        mkdir(partial, 0o755)
    }
    let temporary = path + ".\(getpid()).tmp"
    guard let f = fopen(temporary, "wb") else { return }
    let ok = fwrite(bytes, 1, bytes.count, f) == bytes.count
    fclose(f)
    if ok { rename(temporary, path) } else { unlink(temporary) }
}
