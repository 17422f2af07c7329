//! Tests' stand-in for another daemon: a forked process that does one
//! thing (take a lock, claim a slot, start a child), reports a number, and
//! waits until it is killed, which its handle does when dropped (a failing
//! test leaves no process behind). It dies with the test's thread, too.
//! Test code only (the `testing` feature): it panics when the test cannot
//! go on.
#![allow(clippy::panic, clippy::unwrap_used, reason = "test support: a failed set-up fails the test")]

/// A forked stand-in process.
#[derive(Debug)]
pub struct StandIn {
    pid: libc::pid_t,
    /// The number it reported.
    pub report: u32,
}

impl StandIn {
    /// Forks; the child runs `work` and reports its result.
    pub fn fork(work: impl FnOnce() -> u32) -> Self {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap_or_else(|e| panic!("socketpair: {e}"));
        // SAFETY: the child runs `work`, writes four bytes and waits to be
        // killed; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain integers; the stand-in must not outlive the test.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            // A panic must not unwind into the test harness of this copy.
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(u32::MAX);
            let _ = std::io::Write::write_all(&mut &theirs, &report.to_le_bytes());
            loop {
                // SAFETY: pause has no preconditions; the process is killed.
                unsafe { libc::pause() };
            }
        }
        drop(theirs);
        let mut report = [0u8; 4];
        let read = std::io::Read::read_exact(&mut &ours, &mut report);
        let stand_in = Self { pid, report: u32::from_le_bytes(report) };
        assert!(read.is_ok(), "the stand-in died before it reported");
        stand_in
    }

    /// Its pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}
