//! The sockets between wardd, the router and the VMMs (docs/IPC.md, "The
//! router process"), made the same way by wardd and by the tests that
//! stand in for it.

use std::os::fd::{FromRawFd, OwnedFd};
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
