//! Thin, safe wrappers of the system calls the jail makes.
//!
//! Every `unsafe` of the jail lives here, one call per function, each
//! checking the return value and turning `-1` into the `errno` it left.
//!
//! Identity changes (`setresuid`, `setresgid`, `setgroups`, `setuid`) are
//! made with the raw system call, not glibc's wrapper: the kernel changes
//! only the calling thread's credentials, which is exactly what we want in
//! the single-threaded processes these run in (`enter` checks there is one
//! thread; the doctor's probes run in a freshly forked child, which has one
//! thread), and a raw system call is async-signal-safe where glibc's
//! wrapper, which signals every thread it knows of, is not documented to be.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::ptr;

/// `-1` becomes the `errno` it left; anything else is returned.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// The same for the `long` that `syscall(2)` returns.
fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `unshare(flags)`.
pub(super) fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes no pointers; the result is checked.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// `mount(source, target, fstype, flags, data)`.
pub(super) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let opt = |s: Option<&CStr>| s.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string that outlives
    // the call; the kernel only reads them. The result is checked.
    let ret = unsafe { libc::mount(opt(source), target.as_ptr(), opt(fstype), flags, opt(data).cast()) };
    check(ret).map(drop)
}

/// `umount2(target, flags)`.
pub(super) fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `pivot_root(new_root, put_old)` (no glibc wrapper: raw system call).
pub(super) fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }).map(drop)
}

/// `chdir(path)`.
pub(super) fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `chroot(path)`.
pub(super) fn chroot(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::chroot(path.as_ptr()) }).map(drop)
}

/// `sethostname(name)`.
pub(super) fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`, which the kernel only reads.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `setgroups(0, NULL)`: no supplementary groups.
pub(super) fn clear_groups() -> io::Result<()> {
    // SAFETY: a zero-length list with a null pointer is valid; raw system
    // call (see the module documentation).
    check_long(unsafe { libc::syscall(libc::SYS_setgroups, 0usize, ptr::null::<libc::gid_t>()) }).map(drop)
}

/// `setresgid(gid, gid, gid)`.
pub(super) fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: integer arguments only; raw system call (module documentation).
    check_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

/// `setresuid(uid, uid, uid)`.
pub(super) fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: integer arguments only; raw system call (module documentation).
    check_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// `setuid(uid)`: used to check that root cannot be regained.
pub(super) fn setuid(uid: u32) -> io::Result<()> {
    // SAFETY: integer argument only; raw system call (module documentation).
    check_long(unsafe { libc::syscall(libc::SYS_setuid, uid) }).map(drop)
}

/// `setgid(gid)`: used to check that group root cannot be regained.
pub(super) fn setgid(gid: u32) -> io::Result<()> {
    // SAFETY: integer argument only; raw system call (module documentation).
    check_long(unsafe { libc::syscall(libc::SYS_setgid, gid) }).map(drop)
}

/// `getresuid()`: real, effective, saved.
pub(super) fn getresuid() -> io::Result<[u32; 3]> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live local variables.
    check(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
    Ok([r, e, s])
}

/// `getresgid()`: real, effective, saved.
pub(super) fn getresgid() -> io::Result<[u32; 3]> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are to live local variables.
    check(unsafe { libc::getresgid(&mut r, &mut e, &mut s) })?;
    Ok([r, e, s])
}

/// How many supplementary groups the process has.
pub(super) fn group_count() -> io::Result<usize> {
    // SAFETY: a zero size with a null list only asks for the count.
    let n = check(unsafe { libc::getgroups(0, ptr::null_mut()) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `prctl(option, arg2, 0, 0, 0)`, returning its result.
pub(super) fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    let zero: libc::c_ulong = 0;
    // SAFETY: the options used here take integers only (no pointers); unused
    // arguments are zero as the kernel requires. The result is checked.
    check(unsafe { libc::prctl(option, arg2, zero, zero, zero) })
}

/// `prctl(PR_GET_PDEATHSIG)`: the signal sent when the parent dies, 0 if none.
pub(super) fn parent_death_signal() -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int to the pointer, which is a
    // live local variable.
    check(unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int, zero, zero, zero) })?;
    Ok(sig)
}

/// Capability sets of the calling thread: effective, permitted, inheritable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CapSets {
    /// Effective.
    pub(super) effective: u64,
    /// Permitted.
    pub(super) permitted: u64,
    /// Inheritable.
    pub(super) inheritable: u64,
}

/// `capget()` with the 64-bit (version 3) layout.
pub(super) fn capget() -> io::Result<CapSets> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 reads a header and writes two `Data`, which are live
    // locals of the kernel's layout (`__user_cap_header_struct`,
    // `__user_cap_data_struct`).
    check_long(unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) })?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// `getrlimit(resource)`: (soft, hard).
pub(super) fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: the pointer is to a live local `rlimit`.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// `setrlimit(resource, {soft, hard})`.
pub(super) fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: the pointer is to a live local `rlimit`, which the kernel reads.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// `close_range(first, last, 0)` (raw system call: Linux 5.9).
pub(super) fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: closing descriptors is memory-safe here: the jail runs before
    // the VMM made any object that owns a descriptor outside `keep_fds`.
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) }).map(drop)
}

/// `close(fd)`, ignoring `EBADF` (a descriptor that was not open).
pub(super) fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: as for `close_range`.
    match check(unsafe { libc::close(fd) }) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        other => other.map(drop),
    }
}

/// Whether `fd` is an open descriptor (`fcntl(F_GETFD)`).
pub(super) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A pipe, both ends close-on-exec: (read, write).
pub(super) fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [-1; 2];
    // SAFETY: the pointer is to a live local array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Whether the pipe `fd` reads end-of-file now (its other end is
/// closed), without blocking: `poll` with a zero timeout.
pub(super) fn hung_up(fd: RawFd) -> bool {
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready == 1 && poll.revents & (libc::POLLHUP | libc::POLLIN) != 0
}

/// `write(fd, buf)`, once; async-signal-safe.
pub(super) fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which the kernel reads.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n.unsigned_abs()) }
}

/// `read(fd, buf)`, once, retried on `EINTR`.
pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, which the kernel writes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What `fork` returned, in the process that sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fork {
    /// This is the child.
    Child,
    /// This is the parent; the child's pid.
    Parent(libc::pid_t),
}

/// `fork()`.
///
/// # Safety
///
/// After `fork` in a process with more than one thread, the child may only
/// do what is async-signal-safe until it exits or execs: the caller
/// guarantees the process is single-threaded, or that the child does only
/// that (system calls through this module, `_exit`, no allocation).
pub(super) unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: the caller upholds the contract above; fork takes no pointers.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `_exit(code)`: leaves without running exit handlers or flushing stdio
/// (a forked child must not flush buffers it shares with its parent).
pub(super) fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// `waitpid(pid, flags)`: `Some(status)` once the child changed state,
/// `None` with `WNOHANG` while it runs. Retried on `EINTR`.
pub(super) fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<libc::c_int>> {
    loop {
        let mut status = 0;
        // SAFETY: the status pointer is to a live local int.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        match ret {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 => return Ok(None),
            _ => return Ok(Some(status)),
        }
    }
}

/// `kill(pid, sig)`.
pub(super) fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments only. Callers pass a positive pid (one
    // child), never 0 or a negative process group.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// A signal set holding `signals`.
pub(super) fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live local; sigemptyset and sigaddset only write it
    // and fail only for an invalid signal number, which callers never pass.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// `sigprocmask(how, set)`, returning the previous mask.
pub(super) fn sigprocmask(how: libc::c_int, set: &libc::sigset_t) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, fully written by the call below.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live sigset_t values.
    check(unsafe { libc::sigprocmask(how, set, &mut old) })?;
    Ok(old)
}

/// `sigtimedwait(set, timeout)`: the signal taken, `None` on timeout or `EINTR`.
pub(super) fn sigtimedwait(set: &libc::sigset_t, seconds: libc::time_t) -> io::Result<Option<libc::c_int>> {
    let timeout = libc::timespec { tv_sec: seconds, tv_nsec: 0 };
    // SAFETY: `set` and `timeout` are live; a null siginfo pointer is allowed.
    let ret = unsafe { libc::sigtimedwait(set, ptr::null_mut(), &timeout) };
    if ret == -1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(ret))
}

/// Sets the disposition of `sig` to `SIG_DFL` or `SIG_IGN`.
pub(super) fn set_disposition(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    debug_assert!(handler == libc::SIG_DFL || handler == libc::SIG_IGN);
    // SAFETY: only SIG_DFL or SIG_IGN are installed (no Rust code runs as a
    // handler); the result is checked.
    let old = unsafe { libc::signal(sig, handler) };
    if old == libc::SIG_ERR { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `raise(sig)`.
pub(super) fn raise(sig: libc::c_int) {
    // SAFETY: integer argument only; on failure nothing happens and the
    // caller falls through to its own exit.
    unsafe { libc::raise(sig) };
}

/// `getpid()`.
pub(super) fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and takes no arguments.
    unsafe { libc::getpid() }
}

/// `open(path, O_RDWR | O_CLOEXEC)`, closed again at once: can this
/// process open it read-write?
pub(super) fn can_open_rw(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the descriptor is closed below.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    close(fd)
}

/// `seccomp(SECCOMP_GET_ACTION_AVAIL, 0, &SECCOMP_RET_KILL_PROCESS)`:
/// are seccomp filters (with the kill-process action) supported?
pub(super) fn seccomp_filters_available() -> io::Result<()> {
    let action: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    // SAFETY: the kernel reads one u32 from the pointer, a live local.
    check_long(unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0u32, &action as *const u32) })
        .map(drop)
}
