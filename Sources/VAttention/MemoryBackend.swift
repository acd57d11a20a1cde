/// A physical page owned by a backend: a CUDA allocation handle, or a page of a host memfd.
public struct PhysicalPage: Hashable, Sendable, CustomStringConvertible {
    public let id: UInt64
    public init(id: UInt64) { self.id = id }
    public var description: String { "page#\(id)" }
}

/// Proof that device work queued before it was recorded has finished, once `wait()` returns.
public protocol MemoryFence: AnyObject, Sendable {
    func wait() throws
}

/// Where memory lives: the host's address space or a GPU's.
public enum MemoryLocation: String, Sendable {
    case host, device
}

/// What vAttention needs from a memory system: virtual ranges that cost nothing until backed, physical pages made once
/// at start, and map/unmap of one page at one address. Two real implementations: `CUDAMemoryBackend` (cuMem* VMM) and
/// `HostMemoryBackend` (mmap + memfd).
///
/// Backends are not thread-safe by contract beyond what the OS/driver gives; `KVCacheManager` serialises its calls.
public protocol MemoryBackend: AnyObject, Sendable {
    /// A short name for reports ("cuda", "host").
    var name: String { get }
    /// Who can address the memory: host kernels read host memory only, device kernels device memory only.
    var location: MemoryLocation { get }
    /// The smallest mappable page; page sizes must be multiples of it.
    var granularity: Int { get }
    /// Reserves `bytes` (a multiple of `granularity`) of virtual address space with no memory behind it.
    func reserve(bytes: Int) throws -> UInt
    /// Gives back a reservation; every page mapped in it must have been unmapped first.
    func releaseReservation(address: UInt, bytes: Int) throws
    /// Creates `count` physical pages of `pageSize` bytes (at start-up: never on the hot path).
    func createPages(count: Int, pageSize: Int) throws -> [PhysicalPage]
    /// Frees physical pages; none may still be mapped.
    func releasePages(_ pages: [PhysicalPage], pageSize: Int) throws
    /// Backs `[address, address + pageSize)` with `page`, readable and writable.
    func map(_ page: PhysicalPage, at address: UInt, pageSize: Int) throws
    /// Removes the backing of `[address, address + pageSize)`; the range stays reserved.
    func unmap(address: UInt, pageSize: Int) throws
    /// A fence after all device work queued so far (nil when work is synchronous, as on the host).
    func recordFence() throws -> (any MemoryFence)?
    /// Makes the calling thread able to call the backend (binds the CUDA context). Called once per thread.
    func bindCurrentThread() throws
    /// The most physical memory the backend could ever supply (host: the machine's RAM; GPU: the device's memory),
    /// bytes; nil when unknown. A KV budget above it is refused rather than attempted. Called after
    /// `bindCurrentThread`.
    var physicalMemoryLimit: Int? { get }
}

extension MemoryBackend {
    public var physicalMemoryLimit: Int? { nil }
}
