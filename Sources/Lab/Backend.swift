import CUDADriver
import VAttention

/// The memory backend a bench or check runs the manager on.
public enum BackendChoice: String, CaseIterable, Sendable {
    case host, cuda
}

/// A backend plus what keeps it alive (device, stream) for the length of a command.
struct BackendHandle {
    let backend: any MemoryBackend
    let device: CUDADevice?
    let stream: CUDAStream?
    let description: String

    static func make(_ choice: BackendChoice, zeroPage: Bool = false) throws -> BackendHandle {
        switch choice {
        case .host:
            return BackendHandle(backend: HostMemoryBackend(zeroPage: zeroPage), device: nil, stream: nil,
                                 description: "host (mmap + memfd)")
        case .cuda:
            let cuda = try CUDA.load()
            let device = try CUDADevice(cuda)
            let stream = try CUDAStream(cuda)
            let backend = try CUDAMemoryBackend(device: device, stream: stream, zeroPage: zeroPage)
            return BackendHandle(backend: backend, device: device, stream: stream,
                                 description: "cuda: \(try device.name()), driver \(cuda.driverVersion)")
        }
    }
}
