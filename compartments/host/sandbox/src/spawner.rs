//! Starting processes: every process wardd starts (VMMs, the IPC router)
//! is forked by one thread that lives as long as the daemon, and dies with
//! the daemon until it has become its program.
//!
//! Between `fork` and `exec` a child holds a copy of every descriptor of
//! the daemon (close-on-exec closes them only at `exec`): the listening
//! control socket, the store's files and their locks. A daemon killed
//! while a child is still there (joining its cgroup, say) would leave that
//! copy behind for a restarted daemon to trip over. So each child asks, as
//! its first act after `fork`, to be killed when its parent dies
//! (`PR_SET_PDEATHSIG`), and checks that the parent has not died already.
//! The kernel sends that signal when the *thread* that forked ends, which
//! is why one long-lived thread does every fork: a connection thread that
//! ends after answering `ward start` must not take the new VMM with it.
//! A program that must outlive the daemon (`ward-vmm`, which a restarted
//! daemon adopts) clears the signal as its first act ([`outlive_parent`]),
//! then says so on a socket its starter gave it (the spec's `started_fd`):
//! wardd's `start` answers only after that, so a daemon killed the moment
//! it answered finds the VMM running, not killed with it.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};

type Job = (Command, mpsc::SyncSender<io::Result<Child>>);

/// The thread that starts processes. It ends when this value is dropped,
/// and with it (by their parent-death signal) any child that has not yet
/// cleared that signal: the daemon keeps it for its whole life.
#[derive(Debug)]
pub struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// Starts the thread.
    pub fn start() -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("wardd-spawn".into()).spawn(move || {
            for (mut command, reply) in queue {
                let _ = reply.send(command.spawn());
            }
        })?;
        Ok(Self { jobs: Mutex::new(jobs) })
    }

    /// A command for `program` whose process dies with the daemon until it
    /// execs (see the module documentation); more `pre_exec` work may be
    /// added to it, which runs after this.
    pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut command = Command::new(program);
        // SAFETY: runs in the child between fork and exec and only makes
        // async-signal-safe system calls (prctl, getppid); it allocates
        // nothing (an OS error is a plain code).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the request took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        command
    }

    /// Starts `command` (made by [`Self::command`]) on the spawning thread.
    pub fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || io::Error::other("wardd's spawning thread is gone");
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).send((command, reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

/// Lets this process outlive the daemon that started it: clears the
/// parent-death signal [`Spawner::command`] set. `ward-vmm` calls it first.
pub fn outlive_parent() {
    // SAFETY: PR_SET_PDEATHSIG with 0 clears the signal; no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::StandIn;

    fn is_gone(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z")
    }

    #[test]
    fn a_child_dies_with_the_daemon_that_started_it() {
        // A stand-in daemon starts `sleep 30` with the spawner.
        let daemon = StandIn::fork(|| {
            let Ok(spawner) = Spawner::start() else { return 0 };
            let mut sleep = Spawner::command("sleep");
            sleep.arg("30");
            let pid = spawner.spawn(sleep).map_or(0, |child| child.id());
            // As in wardd, the spawning thread lives as long as the daemon.
            std::mem::forget(spawner);
            pid
        });
        let sleeper = i32::try_from(daemon.report).unwrap();
        assert!(sleeper > 0, "the stand-in daemon could not start sleep");
        assert!(!is_gone(sleeper));
        drop(daemon);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_gone(sleeper) {
            assert!(std::time::Instant::now() < deadline, "the child outlived the daemon that started it");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
