#if canImport(Glibc)
import Glibc
#endif

/// Binds (and closes) a probe socket on `host:port`, so that a port already in use is reported at once — before the
/// model loads — and in words. SO_REUSEADDR as the server's own listener sets it, so a port whose last connections
/// are in TIME_WAIT passes here as it would there.
func checkCanListen(host: String, port: Int) throws {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
    var list: UnsafeMutablePointer<addrinfo>?
    let r = getaddrinfo(host, String(port), &hints, &list)
    guard r == 0, let first = list else {
        throw ValidationErrorText("--host \(host): cannot resolve it (\(String(cString: gai_strerror(r))))")
    }
    defer { freeaddrinfo(list) }
    let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
    guard fd >= 0 else { return }  // no probe possible: the server reports what it finds
    defer { close(fd) }
    var one: Int32 = 1
    _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 else { return }
    let e = errno
    switch e {
    case EADDRINUSE:
        throw ValidationErrorText("cannot listen on \(host):\(port): the port is already in use (another server?); "
                                  + "stop it or choose another --port")
    case EACCES:
        throw ValidationErrorText("cannot listen on \(host):\(port): permission denied (ports below 1024 need privileges); "
                                  + "choose another --port")
    case EADDRNOTAVAIL:
        throw ValidationErrorText("cannot listen on \(host):\(port): \(host) is not an address of this machine (--host)")
    default:
        throw ValidationErrorText("cannot listen on \(host):\(port): \(String(cString: strerror(e))) (errno \(e))")
    }
}
