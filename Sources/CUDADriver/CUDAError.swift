import CCUDA

/// An error from the CUDA driver, NVRTC, or from loading them.
///
/// Like swift-system's `Errno`, this is an open struct rather than a closed enum: a code a newer driver returns is
/// carried as-is, never a crash. `call` names the driver function that failed.
public struct CUDAError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The `CUresult` (or `nvrtcResult`) value; negative codes are ours (see the static members).
    public var code: Int32
    /// The driver's symbolic name, e.g. `CUDA_ERROR_OUT_OF_MEMORY`.
    public var name: String
    /// The call that failed, e.g. `cuMemCreate`.
    public var call: String
    /// A human sentence: the driver's description or ours.
    public var message: String

    public init(code: Int32, name: String, call: String, message: String) {
        self.code = code
        self.name = name
        self.call = call
        self.message = message
    }

    public var description: String { "\(call) failed: \(name) (\(code)): \(message)" }

    /// `libcuda.so.1` could not be loaded: this machine has no NVIDIA driver.
    public static func driverNotFound(_ detail: String) -> CUDAError {
        CUDAError(code: -1, name: "VATTN_NO_DRIVER", call: "dlopen(libcuda.so.1)",
                  message: "no CUDA driver found (\(detail))")
    }

    /// A driver entry point we need is missing (driver too old).
    public static func missingSymbol(_ symbol: String) -> CUDAError {
        CUDAError(code: -2, name: "VATTN_MISSING_SYMBOL", call: "cuGetProcAddress(\(symbol))",
                  message: "the CUDA driver does not provide \(symbol)")
    }

    /// NVRTC could not be loaded.
    public static func nvrtcNotFound(_ detail: String) -> CUDAError {
        CUDAError(code: -3, name: "VATTN_NO_NVRTC", call: "dlopen(libnvrtc.so)",
                  message: "no NVRTC library found (\(detail))")
    }

    // Driver codes the project tests for by name. Compare on `code`.
    public static let invalidValue: Int32 = 1
    public static let outOfMemory: Int32 = 2
    public static let notInitialized: Int32 = 3
    public static let noDevice: Int32 = 100
    public static let notReady: Int32 = 600
    public static let invalidContext: Int32 = 201
    public static let illegalAddress: Int32 = 700

    /// The error leaves the context unusable, so every later call fails too: the context is not bound or gone
    /// (CUDA_ERROR_INVALID_CONTEXT 201, CONTEXT_IS_DESTROYED 709, NOT_INITIALIZED 3, DEINITIALIZED 4), the device is
    /// gone (NO_DEVICE 100, INVALID_DEVICE 101, DEVICE_UNAVAILABLE 46), or a kernel faulted — the driver's "sticky"
    /// errors, after which the process must restart (ILLEGAL_ADDRESS 700, LAUNCH_TIMEOUT 702, ECC_UNCORRECTABLE 214,
    /// HARDWARE_STACK_ERROR 714 … LAUNCH_FAILED 719, UNKNOWN 999). A server that sees one stops taking requests.
    public var leavesContextUnusable: Bool {
        switch code {
        case 3, 4, 46, 100, 101, 201, 214, 700, 702, 709, 710, 714, 715, 716, 717, 718, 719, 999: return true
        default: return false
        }
    }
}
