import CCUDA
#if canImport(Glibc)
import Glibc
#endif

/// cuBLAS (dlopen'd from the CUDA toolkit), for the model's GEMMs. Only what the engine needs: bf16 inputs, fp32
/// accumulation, bf16 or fp32 output, on the engine's stream. Like the driver table, every raw call is here.
public final class CUBLAS: @unchecked Sendable {
    private typealias Create = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private typealias Destroy = @convention(c) (OpaquePointer?) -> Int32
    private typealias SetStream = @convention(c) (OpaquePointer?, CUstream?) -> Int32
    private typealias SetWorkspace = @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int) -> Int32
    private typealias GetVersion = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>) -> Int32
    private typealias GemmEx = @convention(c) (
        OpaquePointer?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer?, UnsafeRawPointer?, Int32, Int32,
        UnsafeRawPointer?, Int32, Int32, UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Int32, Int32, Int32
    ) -> Int32

    public static let searchPaths = [
        "/usr/local/cuda/lib64/libcublas.so", "libcublas.so.13", "libcublas.so.12", "libcublas.so",
    ]

    private let destroy: Destroy
    private let gemmEx: GemmEx
    private let handle: OpaquePointer?
    public let version: Int
    public let cuda: CUDA
    /// cuBLAS's own scratch, set explicitly so GEMMs can be captured in CUDA graphs.
    private let workspace: DeviceBuffer

    /// The element type of a GEMM operand.
    public enum DataType: Int32, Sendable { case fp32 = 0, fp16 = 2, bf16 = 14 }

    public init(_ cuda: CUDA, stream: CUDAStream?) throws(CUDAError) {
        self.cuda = cuda
        // libcublas needs libcublasLt next to it; load it globally first in case the loader cannot find it.
        for lt in ["/usr/local/cuda/lib64/libcublasLt.so", "libcublasLt.so.13", "libcublasLt.so.12"] {
            if dlopen(lt, RTLD_NOW | RTLD_GLOBAL) != nil { break }
        }
        var lib: UnsafeMutableRawPointer?
        var errors: [String] = []
        for path in CUBLAS.searchPaths {
            if let h = dlopen(path, RTLD_NOW | RTLD_LOCAL) { lib = h; break }
            errors.append(dlerror().map { String(cString: $0) } ?? path)
        }
        guard let lib else {
            throw CUDAError(code: -4, name: "VATTN_NO_CUBLAS", call: "dlopen(libcublas.so)",
                            message: "no cuBLAS library found (\(errors.joined(separator: "; ")))")
        }
        func sym<T>(_ name: String, _: T.Type) throws(CUDAError) -> T {
            guard let p = dlsym(lib, name) else { throw .missingSymbol(name) }
            return unsafeBitCast(p, to: T.self)
        }
        let create = try sym("cublasCreate_v2", Create.self)
        destroy = try sym("cublasDestroy_v2", Destroy.self)
        let setStream = try sym("cublasSetStream_v2", SetStream.self)
        let setWorkspace = try sym("cublasSetWorkspace_v2", SetWorkspace.self)
        let getVersion = try sym("cublasGetVersion_v2", GetVersion.self)
        gemmEx = try sym("cublasGemmEx", GemmEx.self)
        var h: OpaquePointer?
        try CUBLAS.check(create(&h), "cublasCreate")
        handle = h
        var v: Int32 = 0
        _ = getVersion(h, &v)
        version = Int(v)
        try CUBLAS.check(setStream(h, stream?.handle), "cublasSetStream")
        workspace = try DeviceBuffer(cuda, byteCount: 32 << 20)
        try CUBLAS.check(setWorkspace(h, UnsafeMutableRawPointer(bitPattern: UInt(workspace.address)), 32 << 20),
                         "cublasSetWorkspace")
    }

    deinit { _ = destroy(handle) }

    /// Y[n, m] = X[n, k] · W[m, k]ᵀ (row-major, PyTorch's `F.linear`): `weight` holds one output feature per row,
    /// as in GGUF and safetensors. fp32 accumulation.
    public func linear(input x: UInt64, _ xType: DataType, weight w: UInt64, _ wType: DataType, output y: UInt64,
                       _ yType: DataType, tokens n: Int, inFeatures k: Int, outFeatures m: Int) throws(CUDAError) {
        guard n > 0 else { return }
        var alpha: Float = 1, beta: Float = 0
        // Column-major view: Yᵀ (m×n) = op(W as k×m col-major)ᵀ · (X as k×n col-major).
        let r = withUnsafePointer(to: &alpha) { a in
            withUnsafePointer(to: &beta) { b in
                gemmEx(handle, 1 /* T */, 0 /* N */, Int32(m), Int32(n), Int32(k), a, raw(w), wType.rawValue,
                       Int32(k), raw(x), xType.rawValue, Int32(k), b, UnsafeMutableRawPointer(bitPattern: UInt(y)),
                       yType.rawValue, Int32(m), 68 /* CUBLAS_COMPUTE_32F */, -1 /* CUBLAS_GEMM_DEFAULT */)
            }
        }
        try CUBLAS.check(r, "cublasGemmEx")
    }

    private func raw(_ p: UInt64) -> UnsafeRawPointer? { UnsafeRawPointer(bitPattern: UInt(p)) }

    static func check(_ status: Int32, _ call: String) throws(CUDAError) {
        guard status != 0 else { return }
        let names: [Int32: String] = [1: "NOT_INITIALIZED", 3: "ALLOC_FAILED", 7: "INVALID_VALUE",
                                      8: "ARCH_MISMATCH", 11: "MAPPING_ERROR", 13: "EXECUTION_FAILED",
                                      14: "INTERNAL_ERROR", 15: "NOT_SUPPORTED"]
        throw CUDAError(code: status, name: "CUBLAS_STATUS_" + (names[status] ?? "\(status)"), call: call,
                        message: "cuBLAS returned status \(status)")
    }
}
