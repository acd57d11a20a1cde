import CUDADriver
import CVAttentionABI
import VAttention
#if canImport(Glibc)
import Glibc
#endif

// The C ABI of include/vattention.h. Every entry point catches every Swift error and turns it into a code plus a
// per-thread message: nothing crosses the boundary as a Swift error or a trap on bad input.

/// What a `vattn_manager*` points to: the manager and what keeps its backend alive.
final class ManagerBox {
    let manager: KVCacheManager
    let device: CUDADevice?
    let stream: CUDAStream?
    init(manager: KVCacheManager, device: CUDADevice?, stream: CUDAStream?) {
        self.manager = manager
        self.device = device
        self.stream = stream
    }
}

nonisolated(unsafe) private var errorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()

private func setError(_ message: String) {
    if let old = pthread_getspecific(errorKey) { free(old) }
    pthread_setspecific(errorKey, strdup(message))
}

/// Runs `body`, mapping errors to VATTN_E_* codes.
private func guarded(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return Int32(VATTN_OK)
    } catch let e as KVCacheError {
        setError(e.description)
        switch e {
        case .outOfPages: return Int32(VATTN_E_OUT_OF_PAGES)
        case .noFreeSlot: return Int32(VATTN_E_NO_SLOT)
        case .backend: return Int32(VATTN_E_BACKEND)
        default: return Int32(VATTN_E_INVALID)
        }
    } catch let e as CUDAError {
        setError(e.description)
        return Int32(e.code == -1 ? VATTN_E_NO_DRIVER : VATTN_E_BACKEND)
    } catch {
        setError("\(error)")
        return Int32(VATTN_E_BACKEND)
    }
}

private func box(_ m: OpaquePointer?) throws -> ManagerBox {
    guard let m else { throw KVCacheError.invalidSpec("null vattn_manager") }
    return Unmanaged<ManagerBox>.fromOpaque(UnsafeRawPointer(m)).takeUnretainedValue()
}

@_cdecl("vattn_last_error")
public func vattn_last_error() -> UnsafePointer<CChar>? {
    UnsafePointer(pthread_getspecific(errorKey)?.assumingMemoryBound(to: CChar.self))
}

@_cdecl("vattn_create")
public func vattn_create(_ spec: UnsafePointer<vattn_spec>?, _ backend: Int32, _ budget: Int64, _ background: Int32,
                         _ lookAhead: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        guard let spec = spec?.pointee, let out else { throw KVCacheError.invalidSpec("null argument") }
        guard let dtype = [KVElementType.fp16, .bf16, .fp32][safe: Int(spec.dtype)],
              let layout = [KVCacheSpec.Layout.perLayer, .mega][safe: Int(spec.layout)]
        else { throw KVCacheError.invalidSpec("unknown dtype \(spec.dtype) or layout \(spec.layout)") }
        let s = KVCacheSpec(layers: Int(spec.layers), kvHeads: Int(spec.kv_heads), headDim: Int(spec.head_dim),
                            dtype: dtype, maxSlots: Int(spec.max_slots), maxContext: Int(spec.max_context),
                            pageSize: Int(spec.page_size), layout: layout)
        let policy = MapAheadPolicy(background: background != 0, lookAheadTokens: Int(lookAhead))
        let result: ManagerBox
        switch backend {
        case Int32(VATTN_BACKEND_HOST):
            result = ManagerBox(manager: try KVCacheManager(spec: s, backend: HostMemoryBackend(),
                                                            memoryBudget: Int(budget), policy: policy),
                                device: nil, stream: nil)
        case Int32(VATTN_BACKEND_CUDA):
            let cuda = try CUDA.load()
            let device = try CUDADevice(cuda)
            // The legacy default stream (nil): PyTorch's current stream by default; fences record there.
            let b = try CUDAMemoryBackend(device: device, stream: nil)
            result = ManagerBox(manager: try KVCacheManager(spec: s, backend: b, memoryBudget: Int(budget),
                                                            policy: policy),
                                device: device, stream: nil)
        default:
            throw KVCacheError.invalidSpec("unknown backend \(backend)")
        }
        out.pointee = OpaquePointer(Unmanaged.passRetained(result).toOpaque())
    }
}

@_cdecl("vattn_destroy")
public func vattn_destroy(_ m: OpaquePointer?) {
    guard let m else { return }
    let b = Unmanaged<ManagerBox>.fromOpaque(UnsafeRawPointer(m))
    try? b.takeUnretainedValue().manager.shutdown()
    b.release()
}

@_cdecl("vattn_allocate_slot")
public func vattn_allocate_slot(_ m: OpaquePointer?, _ expected: Int64, _ slot: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let s = try box(m).manager.allocateSlot(expectedLength: Int(expected))
        slot?.pointee = Int64(s)
    }
}

@_cdecl("vattn_free_slot")
public func vattn_free_slot(_ m: OpaquePointer?, _ slot: Int64) -> Int32 {
    guarded { try box(m).manager.free(Int(slot)) }
}

@_cdecl("vattn_step")
public func vattn_step(_ m: OpaquePointer?, _ slots: UnsafePointer<Int64>?, _ lengths: UnsafePointer<Int64>?,
                       _ count: Int) -> Int32 {
    guarded {
        guard count == 0 || (slots != nil && lengths != nil) else { throw KVCacheError.invalidSpec("null arrays") }
        let batch = (0..<count).map { (slot: Int(slots![$0]), length: Int(lengths![$0])) }
        try box(m).manager.step(batch)
    }
}

@_cdecl("vattn_map_ahead")
public func vattn_map_ahead(_ m: OpaquePointer?, _ slot: Int64, _ tokens: Int64) -> Int32 {
    guarded { try box(m).manager.mapAhead(Int(slot), tokens: Int(tokens)) }
}

@_cdecl("vattn_can_admit")
public func vattn_can_admit(_ m: OpaquePointer?, _ tokens: Int64, _ answer: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded { answer?.pointee = try box(m).manager.canAdmit(tokens: Int(tokens)) ? 1 : 0 }
}

@_cdecl("vattn_view_of")
public func vattn_view_of(_ m: OpaquePointer?, _ layer: Int64, _ kind: Int32, _ out: UnsafeMutablePointer<vattn_view>?) -> Int32 {
    guarded {
        let manager = try box(m).manager
        guard layer >= 0, layer < manager.spec.layers, let k = KVKind(rawValue: Int(kind)) else {
            throw KVCacheError.invalidSpec("no layer \(layer) / kind \(kind)")
        }
        let v = manager.view(layer: Int(layer), k)
        out?.pointee = vattn_view(address: UInt64(v.address), slot_stride: Int64(v.slotStride),
                                  token_stride: Int64(v.tokenStride), head_stride: Int64(v.headStride))
    }
}

@_cdecl("vattn_get_stats")
public func vattn_get_stats(_ m: OpaquePointer?, _ out: UnsafeMutablePointer<vattn_stats>?) -> Int32 {
    guarded {
        let s = try box(m).manager.stats
        out?.pointee = vattn_stats(
            reserved_bytes: Int64(s.memory.reservedBytes), pool_pages: Int64(s.poolPages), free_pages: Int64(s.freePages),
            mapped_pages: Int64(s.mappedPages), active_slots: Int64(s.memory.activeSlots), used_bytes: Int64(s.memory.usedBytes),
            mapped_bytes: Int64(s.memory.mappedBytes), critical_maps: Int64(s.memory.criticalMaps),
            background_maps: Int64(s.memory.backgroundMaps), unmaps: Int64(s.unmaps), critical_nanos: s.memory.criticalNanos,
            background_nanos: s.backgroundNanos)
    }
}

@_cdecl("vattn_check_invariants")
public func vattn_check_invariants(_ m: OpaquePointer?) -> Int32 {
    guarded {
        let problems = try box(m).manager.checkInvariants()
        if !problems.isEmpty { throw KVCacheError.invalidSpec("invariants broken: \(problems.prefix(3))") }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
