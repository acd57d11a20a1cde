import Support
import CSystemShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// vAttention on host memory, for real: virtual ranges are `mmap(PROT_NONE, MAP_NORESERVE)` reservations, physical
/// pages are offsets in a memfd, mapping is `mmap(MAP_FIXED | MAP_SHARED, memfd, offset)`, and unmapping returns the
/// range to an inaccessible (or, with `zeroPage`, read-as-zero) anonymous mapping. Any multiple of 4 KB is a valid page
/// size — the small pages the paper needed a patched GPU driver for.
public final class HostMemoryBackend: MemoryBackend {
    public var location: MemoryLocation { .host }
    public let name = "host"
    public let granularity: Int
    /// When set, unbacked parts of a reservation read as zeros (the kernel's shared zero page) instead of faulting.
    public let zeroPage: Bool

    private struct Pool {
        var fd: Int32
        var pageSize: Int
        var live: Int
    }
    private struct State {
        var pools: [UInt64: Pool] = [:]
        var nextPool: UInt64 = 0
    }
    private let state = Locked(State())

    public init(zeroPage: Bool = false) {
        granularity = Int(sysconf(Int32(_SC_PAGESIZE)))
        self.zeroPage = zeroPage
    }

    /// The machine's RAM.
    public var physicalMemoryLimit: Int? {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return nil }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: size)
        return overflow ? nil : bytes
    }

    private var emptyProtection: Int32 { zeroPage ? PROT_READ : PROT_NONE }

    public func reserve(bytes: Int) throws -> UInt {
        precondition(bytes > 0 && bytes % granularity == 0, "reservation must be a positive multiple of the granularity")
        let p = mmap(nil, bytes, emptyProtection, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw HostMemoryError(call: "mmap(reserve \(bytes) bytes)", errno: errno) }
        return UInt(bitPattern: p)
    }

    public func releaseReservation(address: UInt, bytes: Int) throws {
        guard munmap(UnsafeMutableRawPointer(bitPattern: address), bytes) == 0 else {
            throw HostMemoryError(call: "munmap", errno: errno)
        }
    }

    public func createPages(count: Int, pageSize: Int) throws -> [PhysicalPage] {
        precondition(pageSize % granularity == 0, "page size must be a multiple of \(granularity)")
        precondition(count < 1 << 32, "too many pages for one pool")
        let fd = vattn_memfd_create("vattn-kv-pool", 1 /* MFD_CLOEXEC */)
        guard fd >= 0 else { throw HostMemoryError(call: "memfd_create", errno: errno) }
        guard ftruncate(fd, off_t(count * pageSize)) == 0 else {
            let e = errno
            close(fd)
            throw HostMemoryError(call: "ftruncate(memfd, \(count * pageSize))", errno: e)
        }
        let pool = state.withLock { s in
            let id = s.nextPool
            s.nextPool += 1
            s.pools[id] = Pool(fd: fd, pageSize: pageSize, live: count)
            return id
        }
        return (0..<count).map { PhysicalPage(id: pool << 32 | UInt64($0)) }
    }

    public func releasePages(_ pages: [PhysicalPage], pageSize: Int) throws {
        state.withLock { s in
            for page in pages {
                let id = page.id >> 32
                guard var pool = s.pools[id] else { preconditionFailure("\(page) is not a page of this backend") }
                pool.live -= 1
                if pool.live == 0 {
                    close(pool.fd)
                    s.pools[id] = nil
                } else {
                    s.pools[id] = pool
                }
            }
        }
    }

    public func map(_ page: PhysicalPage, at address: UInt, pageSize: Int) throws {
        let (fd, poolPageSize) = state.withLock { s -> (Int32, Int) in
            guard let pool = s.pools[page.id >> 32] else { preconditionFailure("\(page) is not a page of this backend") }
            return (pool.fd, pool.pageSize)
        }
        precondition(poolPageSize == pageSize, "page size mismatch")
        let offset = off_t(page.id & 0xffff_ffff) * off_t(pageSize)
        let want = UnsafeMutableRawPointer(bitPattern: address)
        let p = mmap(want, pageSize, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_SHARED, fd, offset)
        guard let p, p != MAP_FAILED, p == want else { throw HostMemoryError(call: "mmap(MAP_FIXED, memfd)", errno: errno) }
    }

    public func unmap(address: UInt, pageSize: Int) throws {
        let want = UnsafeMutableRawPointer(bitPattern: address)
        let p = mmap(want, pageSize, emptyProtection, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED, p == want else { throw HostMemoryError(call: "mmap(MAP_FIXED, unmap)", errno: errno) }
    }

    /// Host work is synchronous: by the time the caller frees a slot nothing still reads it.
    public func recordFence() throws -> (any MemoryFence)? { nil }

    public func bindCurrentThread() throws {}
}

/// A failed system call of the host backend.
public struct HostMemoryError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32
    public var description: String {
        var text = "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        if errno == ENOMEM, let limit = HostMemoryError.maxMapCount() {
            // Every mapped page is its own kernel mapping (VMA); Linux caps them per process.
            text += "; the process may have reached vm.max_map_count (\(limit) mappings): use larger pages, the mega "
                + "layout, or raise it with `sysctl -w vm.max_map_count=N`"
        }
        return text
    }

    static func maxMapCount() -> Int? {
        guard let f = fopen("/proc/sys/vm/max_map_count", "r") else { return nil }
        defer { fclose(f) }
        var value = 0
        return fscanf_int(f, &value) ? value : nil
    }
}

private func fscanf_int(_ f: UnsafeMutablePointer<FILE>, _ value: inout Int) -> Bool {
    var buffer = [CChar](repeating: 0, count: 32)
    guard fgets(&buffer, 32, f) != nil else { return false }
    let text = String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let v = Int(text) else { return false }
    value = v
    return true
}
