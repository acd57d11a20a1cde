import Support
import CCUDA
import CUDADriver
import Synchronization

/// vAttention on a GPU: cuMemAddressReserve / cuMemCreate / cuMemMap + cuMemSetAccess / cuMemUnmap / cuMemRelease.
///
/// VMM calls do not wait for queued kernels, so a page is only unmapped after the fence recorded when its slot was
/// last used has completed (`recordFence` records an event on the compute stream).
public final class CUDAMemoryBackend: MemoryBackend {
    public var location: MemoryLocation { .device }
    public let name = "cuda"
    public let device: CUDADevice
    /// The stream the model's kernels run on: fences are recorded there.
    public let stream: CUDAStream?
    public let granularity: Int
    /// When set, one zeroed physical page is mapped read-only over every unbacked page of every reservation, so a
    /// kernel reading past a request's length reads zeros instead of faulting (kvcached's approach).
    public let zeroPage: Bool

    private let zero = Locked<CUmemGenericAllocationHandle?>(nil)
    private var cuda: CUDA { device.cuda }

    public init(device: CUDADevice, stream: CUDAStream?, zeroPage: Bool = false) throws(CUDAError) {
        self.device = device
        self.stream = stream
        self.granularity = try device.allocationGranularity()
        self.zeroPage = zeroPage
    }

    /// The device's memory (cuDeviceTotalMem: no context needed, nothing queued).
    public var physicalMemoryLimit: Int? {
        let (r, bytes) = cuda.api.deviceTotalMemory(device.handle)
        return r == 0 && bytes > 0 ? bytes : nil
    }

    deinit {
        if let h = zero.withLock({ $0 }) { _ = cuda.api.memRelease(h) }
    }

    public func reserve(bytes: Int) throws -> UInt {
        let (r, address) = cuda.api.memAddressReserve(bytes, granularity)
        try cuda.check(r, "cuMemAddressReserve")
        if zeroPage {
            let handle = try zeroPageHandle(scratch: address)
            var offset = 0
            while offset < bytes {
                try mapZero(handle, at: UInt(address) + UInt(offset))
                offset += granularity
            }
        }
        return UInt(address)
    }

    public func releaseReservation(address: UInt, bytes: Int) throws {
        if zeroPage {
            var offset = 0
            while offset < bytes {
                try cuda.check(cuda.api.memUnmap(CUdeviceptr(address) + CUdeviceptr(offset), granularity), "cuMemUnmap")
                offset += granularity
            }
        }
        try cuda.check(cuda.api.memAddressFree(CUdeviceptr(address), bytes), "cuMemAddressFree")
    }

    public func createPages(count: Int, pageSize: Int) throws -> [PhysicalPage] {
        precondition(pageSize % granularity == 0, "page size must be a multiple of \(granularity)")
        var pages: [PhysicalPage] = []
        pages.reserveCapacity(count)
        do {
            for _ in 0..<count {
                let (r, handle) = cuda.api.memCreate(pageSize, device.handle)
                try cuda.check(r, "cuMemCreate")
                pages.append(PhysicalPage(id: handle))
            }
        } catch {
            for p in pages { _ = cuda.api.memRelease(p.id) }
            throw error
        }
        return pages
    }

    public func releasePages(_ pages: [PhysicalPage], pageSize: Int) throws {
        for p in pages { try cuda.check(cuda.api.memRelease(p.id), "cuMemRelease") }
    }

    public func map(_ page: PhysicalPage, at address: UInt, pageSize: Int) throws {
        let p = CUdeviceptr(address)
        if zeroPage { try cuda.check(cuda.api.memUnmap(p, pageSize), "cuMemUnmap") }
        try cuda.check(cuda.api.memMap(p, pageSize, page.id), "cuMemMap")
        let access = cuda.api.memSetAccess(p, pageSize, device.handle, Int32(CU_MEM_ACCESS_FLAGS_PROT_READWRITE_))
        if access != 0 {
            _ = cuda.api.memUnmap(p, pageSize)  // leave the range as it was: the page goes back to the pool
            throw cuda.error(access, "cuMemSetAccess")
        }
    }

    public func unmap(address: UInt, pageSize: Int) throws {
        try cuda.check(cuda.api.memUnmap(CUdeviceptr(address), pageSize), "cuMemUnmap")
        if zeroPage {
            let handle = try zeroPageHandle(scratch: nil)
            var offset = 0
            while offset < pageSize {
                try mapZero(handle, at: address + UInt(offset))
                offset += granularity
            }
        }
    }

    public func recordFence() throws -> (any MemoryFence)? {
        let event = try CUDAEvent(cuda)
        try event.record(on: stream)
        return CUDAFence(event: event)
    }

    public func bindCurrentThread() throws { try device.makeCurrent() }

    private func mapZero(_ handle: CUmemGenericAllocationHandle, at address: UInt) throws {
        try cuda.check(cuda.api.memMap(CUdeviceptr(address), granularity, handle), "cuMemMap(zero page)")
        try cuda.check(
            cuda.api.memSetAccess(CUdeviceptr(address), granularity, device.handle, Int32(CU_MEM_ACCESS_FLAGS_PROT_READ_)),
            "cuMemSetAccess(zero page, read-only)")
    }

    /// The shared zero page, created on first use. It is zeroed through a temporary read-write mapping at `scratch`
    /// (the start of the first reservation), which the caller then re-maps read-only.
    private func zeroPageHandle(scratch: CUdeviceptr?) throws -> CUmemGenericAllocationHandle {
        try zero.withLock { cached in
            if let h = cached { return h }
            guard let scratch else { preconditionFailure("zero page used before any reservation") }
            let (r, h) = cuda.api.memCreate(granularity, device.handle)
            try cuda.check(r, "cuMemCreate(zero page)")
            try cuda.check(cuda.api.memMap(scratch, granularity, h), "cuMemMap(zero page)")
            try cuda.check(
                cuda.api.memSetAccess(scratch, granularity, device.handle, Int32(CU_MEM_ACCESS_FLAGS_PROT_READWRITE_)),
                "cuMemSetAccess(zero page)")
            try cuda.check(cuda.api.memsetD8(scratch, 0, granularity), "cuMemsetD8(zero page)")
            try cuda.check(cuda.api.contextSynchronize(), "cuCtxSynchronize")
            try cuda.check(cuda.api.memUnmap(scratch, granularity), "cuMemUnmap(zero page)")
            cached = h
            return h
        }
    }
}

/// An event recorded on the compute stream; `wait` blocks until the work before it has finished.
final class CUDAFence: MemoryFence {
    let event: CUDAEvent
    init(event: CUDAEvent) { self.event = event }
    func wait() throws { try event.synchronize() }
}
