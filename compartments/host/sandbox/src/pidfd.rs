//! Process descriptors (`pidfd_open`): a handle on one process that a
//! recycled pid can never alias, for the VMMs a restarted daemon adopts
//! (it is not their parent, so it cannot wait for them).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A process descriptor.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// A descriptor of the live process `pid`.
    pub fn open(pid: u32) -> std::io::Result<Self> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: pidfd_open takes plain integers; the result is checked and
        // owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        Ok(Self(owned(fd)?))
    }

    /// Whether the process has ended (a pidfd is readable then), without
    /// waiting. A zombie has ended.
    pub fn has_exited(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no waiting.
        let ready = unsafe { libc::poll(&raw mut poll, 1, 0) };
        ready > 0 && poll.revents != 0
    }

    /// Sends `signal` to the process (never to another that got its pid).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: our pidfd, a signal number, no siginfo, no flags.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), signal, 0usize, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A copy of the process's descriptor `fd` (`pidfd_getfd`; wardd runs
    /// as root, which may take a descriptor from its own compartments'
    /// VMMs).
    pub fn take_fd(&self, fd: i32) -> std::io::Result<OwnedFd> {
        // SAFETY: pidfd_getfd takes our pidfd and plain integers; the result
        // is a new descriptor in this process (close-on-exec), checked and
        // owned.
        let taken = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.0.as_raw_fd(), fd, 0) };
        owned(taken)
    }
}

/// A descriptor a system call returned, or its error.
fn owned(result: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = i32::try_from(result).map_err(|_| std::io::Error::last_os_error())?;
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel just gave us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_sees_its_process_end_even_as_a_zombie() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(!pidfd.has_exited());
        pidfd.signal(libc::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Not reaped yet: a zombie.
        while !pidfd.has_exited() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(pidfd.has_exited());
    }

    #[test]
    fn a_descriptor_is_taken_from_another_process() {
        let child = std::process::Command::new("sleep").arg("30").stdin(std::process::Stdio::piped()).spawn();
        let mut child = child.unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        let stdin = pidfd.take_fd(0).unwrap();
        // The copy is the read end of the pipe whose write end we hold.
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes into `stat`, valid for writing.
        assert_eq!(unsafe { libc::fstat(stdin.as_raw_fd(), stat.as_mut_ptr()) }, 0);
        // SAFETY: fstat succeeded, so `stat` is initialised.
        assert_eq!(unsafe { stat.assume_init() }.st_mode & libc::S_IFMT, libc::S_IFIFO);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
