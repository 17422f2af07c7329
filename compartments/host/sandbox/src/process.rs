//! Process control the host side needs beyond `std`: its own identity,
//! its descriptor limit, descriptors a child inherits, the clock tick.
//! (Starting children is [`crate::spawner`]'s; watching them
//! [`crate::pidfd`]'s.)

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Lifts the soft limit of open descriptors to the hard one (a daemon
/// holds several per compartment and one per client).
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the `rlimit` we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// Has the process `command` starts keep `fds` (made close-on-exec, as
/// `std` makes every descriptor) under the same numbers.
pub fn inherit_fds(command: &mut Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls fcntl (async-signal-safe) on descriptors of that child; it
    // allocates nothing (an OS error is a plain code).
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Clock ticks per second (for the CPU times in `/proc/PID/stat`).
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&hz| hz > 0)
}

/// The file and the record a stopping signal leaves in it, for the
/// handler: set before any thread starts, never freed.
static STOP_FD: AtomicI32 = AtomicI32::new(-1);
static STOP_RECORD: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static STOP_RECORD_LEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn end_on_signal(signal: libc::c_int) {
    let fd = STOP_FD.load(Ordering::Acquire);
    let record = STOP_RECORD.load(Ordering::Acquire);
    let len = STOP_RECORD_LEN.load(Ordering::Acquire);
    if fd >= 0 && !record.is_null() {
        // SAFETY: `record` points to `len` bytes leaked for the life of the
        // process; `pwrite` and `_exit` are async-signal-safe.
        unsafe { libc::pwrite(fd, record.cast(), len, 0) };
    }
    // SAFETY: `_exit` is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(128 + signal) }
}

/// Ends the process on SIGTERM and SIGINT with exit code 128 + the
/// signal, first writing the record [`leave_on_stop`] armed (if any) at the
/// start of its file. A PID 1 of its namespace would otherwise ignore
/// them. Call before any thread starts.
pub fn exit_on_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installing a handler that only calls async-signal-safe
        // functions; no other thread exists yet.
        unsafe { libc::signal(signal, end_on_signal as *const () as libc::sighandler_t) };
    }
}

/// Arms the record a stopping signal writes at the start of `file` (which
/// must stay open for the life of the process).
pub fn leave_on_stop(file: &File, record: Vec<u8>) {
    let bytes: &'static mut [u8] = Box::leak(record.into_boxed_slice());
    STOP_RECORD_LEN.store(bytes.len(), Ordering::Release);
    STOP_RECORD.store(bytes.as_mut_ptr(), Ordering::Release);
    STOP_FD.store(file.as_raw_fd(), Ordering::Release);
}

/// Disarms it: the process writes its own record from here.
pub fn leave_nothing_on_stop() {
    STOP_FD.store(-1, Ordering::Release);
}

/// Takes ownership of descriptor `fd`, which the process's starter left
/// open for it, after checking it is open (a wrong number must not adopt,
/// and later close, a descriptor that belongs to something else); it is
/// made close-on-exec.
pub fn adopt_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the starter passed `fd` to this process for this purpose and
    // the caller adopts it once, so it is owned from here on.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inherited_descriptor_reaches_the_child_under_its_number() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("echo hello >&{fd}"));
        inherit_fds(&mut command, vec![fd]);
        assert!(command.status().unwrap().success());
        drop(theirs);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut &ours, &mut got).unwrap();
        assert_eq!(got, "hello\n");
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        raise_open_file_limit();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the `rlimit` we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) }, 0);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert!(clock_ticks_per_second().is_some());
    }
}
