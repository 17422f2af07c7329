//! Which thread handles the signals that end a VMM process.
//!
//! A process-directed SIGTERM or SIGINT may be delivered to any thread that
//! does not block it. The VMM's own threads run under seccomp filters made
//! for their work (the vCPU thread may not even `pwrite`), so a handler
//! that records the end and exits must run on the main thread: every other
//! thread blocks these signals first thing.

/// Blocks SIGTERM and SIGINT in the calling thread (they stay pending for
/// the process, and the main thread takes them).
pub fn leave_stop_signals_to_main() {
    // SAFETY: `set` is a local `sigset_t` that `sigemptyset` initializes
    // before use; `pthread_sigmask` reads it and changes only this thread's
    // mask (the old mask is not asked for).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_leaves_the_signals_to_main_blocks_them() {
        let blocked = std::thread::spawn(|| {
            leave_stop_signals_to_main();
            // SAFETY: as above; the old mask is read into a local.
            unsafe {
                let mut old: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
                (libc::sigismember(&old, libc::SIGTERM), libc::sigismember(&old, libc::SIGINT))
            }
        })
        .join()
        .unwrap();
        assert_eq!(blocked, (1, 1));
    }
}
