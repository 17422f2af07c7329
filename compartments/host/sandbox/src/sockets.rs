//! Sockets beyond what `std` makes: the `SOCK_SEQPACKET` pairs and
//! one-connection listeners between wardd, the router and the VMMs
//! (docs/IPC.md, "The router process"), connecting without waiting, send
//! buffers, peer credentials, and noticing a peer that went away.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;

/// A `SOCK_SEQPACKET` socket pair, close-on-exec, as datagram sockets
/// (they keep message boundaries alike): the control socket, and each
/// VMM's reconnect socket.
pub fn seqpacket_pair() -> std::io::Result<(UnixDatagram, UnixDatagram)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`; checked.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and belong to nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((UnixDatagram::from(a), UnixDatagram::from(b)))
}

/// A vhost-user connection for one compartment: a listener bound at
/// `path` (in a directory only the caller can reach), connected to once,
/// and unlinked, so it can only ever accept that one connection. The
/// listener goes to the router, the stream to the VMM.
pub fn one_connection(path: &Path) -> std::io::Result<(UnixListener, UnixStream)> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let stream = UnixStream::connect(path);
    // From here nobody can connect: the listener holds one connection.
    let _ = std::fs::remove_file(path);
    Ok((listener, stream?))
}

/// Connects to the UNIX stream socket at `path` without waiting: a
/// service whose backlog is full (it stopped accepting) is an error
/// (`EAGAIN`), never a wait that would stall wardd's reader of the router.
pub fn connect_now(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: an all-zero sockaddr_un is valid; the path is copied in below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or(1);
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "socket path too long"));
    }
    for (slot, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = b as libc::c_char;
    }
    // SAFETY: socket takes plain integers; the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and nothing else owns it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).unwrap_or(110);
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    if unsafe { libc::connect(fd, std::ptr::from_ref(&addr).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// Asks for a send buffer of `bytes` on `socket` (the kernel caps it at
/// `net.core.wmem_max`; a policy larger than what it grants fails to send,
/// with an error).
pub fn set_send_buffer(socket: &impl AsRawFd, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads an int from a valid pointer for the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&size).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        );
    }
}

/// The peer's uid, from SO_PEERCRED.
pub fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).ok()?;
    // SAFETY: `cred` and `len` are valid for writing and sized for
    // SO_PEERCRED; the fd is the open connection's.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &raw mut len)
    };
    (rc == 0).then_some(cred.uid)
}

/// Waits up to `timeout` for `stream`'s peer to go away; true if it did
/// (closed, or shut its side). Bytes it sends meanwhile are read and
/// dropped.
pub fn peer_gone(stream: &UnixStream, timeout: std::time::Duration) -> bool {
    use std::io::Read;
    let mut poll = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&raw mut poll, 1, ms) };
    if ready <= 0 {
        return false;
    }
    if poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return true;
    }
    let mut sink = [0u8; 4096];
    let _ = stream.set_nonblocking(true);
    let gone = matches!((&mut &*stream).read(&mut sink), Ok(0));
    let _ = stream.set_nonblocking(false);
    gone
}

/// Makes `listener`'s backlog `backlog` connections (a test's stuck
/// service).
pub fn set_backlog(listener: &UnixListener, backlog: i32) -> std::io::Result<()> {
    // SAFETY: listen on our own listening socket, plain integers.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
