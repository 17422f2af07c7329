//! The PID namespace: the VMM runs as PID 1 of a namespace of its own.
//!
//! Inside, the VMM sees only its own threads and children: it cannot name,
//! signal or trace any process of the host or of another compartment. And
//! when it exits, the kernel kills everything left in its namespace.
//!
//! `unshare(CLONE_NEWPID)` moves only the caller's *future children* into
//! the new namespace, so `enter_pid_namespace` unshares and forks:
//! - the **child** is PID 1 of the new namespace and goes on to open its
//!   descriptors, `enter` the jail and run the VM;
//! - the **parent** stays outside, in the host's namespace, as the pid
//!   `wardd` knows, and calls `wait_and_exit`: it forwards `SIGTERM` and
//!   `SIGINT` to the child and exits with the child's status.
//!
//! Sequence and its reasons:
//! - `SIGTERM`, `SIGINT` and `SIGCHLD` are blocked *before* the fork, so a
//!   signal that arrives at once is held for `wait_and_exit` instead of
//!   killing the parent; the child restores its mask.
//! - The child asks for `SIGKILL` when the parent dies
//!   (`PR_SET_PDEATHSIG`): `wardd` killing the pid it knows (`kill -9`)
//!   takes the VMM with it. A parent that died before that request is
//!   seen through a pipe, and the child exits. (`enter` sets the request
//!   again after the uid change, which clears it.)
//! - **PID 1 ignores every signal it has no handler for**, from inside its
//!   namespace and, except `SIGKILL`/`SIGSTOP`, from outside too. So the
//!   VMM must install handlers for `SIGTERM`/`SIGINT` to stop gracefully;
//!   without one, the forwarded signal does nothing and only a `SIGKILL`
//!   of the parent (by `wardd`, after its grace period) stops it.
//!
//! The parent keeps root but holds no descriptor of the VMM (it forks
//! before the VMM opens anything) and runs only `sigtimedwait`, `kill`,
//! `waitpid` and `_exit`. (A `wardd` that starts the VMM with
//! `clone3(CLONE_NEWPID)` itself would need no such parent.)

use std::os::fd::RawFd;

use super::error::JailError;
use super::sys;

/// Which side of `enter_pid_namespace` this process is.
#[derive(Debug, PartialEq, Eq)]
pub enum PidNamespace {
    /// The child: PID 1 of the new namespace. Go on: open descriptors,
    /// `enter`, run the VM.
    Child,
    /// The parent, outside: call `wait_and_exit(child)` and nothing else.
    Parent {
        /// The child, as seen from the parent.
        child: Child,
    },
}

/// A child process made by `enter_pid_namespace`.
#[derive(Debug, PartialEq, Eq)]
pub struct Child {
    pid: libc::pid_t,
}

impl Child {
    /// Its pid in the parent's namespace.
    pub fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }
}

/// The signals forwarded from the parent to the child.
const FORWARDED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// The signals the parent takes with `sigtimedwait`.
fn parent_signals() -> libc::sigset_t {
    sys::sigset(&[libc::SIGTERM, libc::SIGINT, libc::SIGCHLD])
}

/// Unshares the PID namespace and forks: see the module documentation.
/// Must be called while the process is single-threaded. On `Err` no child
/// exists; the caller may go on without a PID namespace (`enter` reports
/// it as missing).
pub fn enter_pid_namespace() -> Result<PidNamespace, JailError> {
    super::ensure_single_threaded()?;
    let (alive_read, alive_write) = sys::pipe().map_err(|e| JailError::syscall("pipe2", e))?;
    let undo = |mask: Option<&libc::sigset_t>| {
        if let Some(mask) = mask {
            let _ = sys::sigprocmask(libc::SIG_SETMASK, mask);
        }
        let _ = sys::close(alive_read);
        let _ = sys::close(alive_write);
    };
    let old_mask = match sys::sigprocmask(libc::SIG_BLOCK, &parent_signals()) {
        Ok(mask) => mask,
        Err(e) => {
            undo(None);
            return Err(JailError::syscall("sigprocmask(SIG_BLOCK, TERM|INT|CHLD)", e));
        }
    };
    // Last before the fork: on failure nothing is left changed.
    if let Err(e) = sys::unshare(libc::CLONE_NEWPID) {
        undo(Some(&old_mask));
        return Err(JailError::syscall("unshare(CLONE_NEWPID)", e));
    }

    // SAFETY: the process is single-threaded (checked above), so the child
    // is a full copy that may do anything the parent could.
    let forked = unsafe { sys::fork() };
    match forked {
        Err(e) => {
            undo(Some(&old_mask));
            Err(JailError::Fork(e))
        }
        Ok(sys::Fork::Parent(pid)) => {
            // The write end stays open, unused, until this process exits:
            // its closing is how the child learns the parent died.
            let _ = sys::close(alive_read);
            Ok(PidNamespace::Parent { child: Child { pid } })
        }
        Ok(sys::Fork::Child) => {
            child_setup(alive_read, alive_write, &old_mask);
            Ok(PidNamespace::Child)
        }
    }
}

/// The child's side of the fork. A failure here exits the child (code
/// 126, one line on stderr): returning an error would leave the caller
/// unable to tell the two processes apart.
fn child_setup(alive_read: RawFd, alive_write: RawFd, old_mask: &libc::sigset_t) {
    let _ = sys::close(alive_write);
    let fail = |what: &str, e: std::io::Error| -> ! {
        let _ = sys::write(2, format!("ward jail: PID namespace child: {what} failed: {e}\n").as_bytes());
        sys::exit_now(126)
    };
    if let Err(e) = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL.unsigned_abs().into()) {
        fail("prctl(PR_SET_PDEATHSIG, SIGKILL)", e);
    }
    // The parent may have died before the request above: then its write
    // end is closed and the pipe shows a hang-up at once. Alive, it never
    // writes, so the pipe is never readable.
    if sys::hung_up(alive_read) {
        sys::exit_now(1);
    }
    let _ = sys::close(alive_read);
    if let Err(e) = sys::sigprocmask(libc::SIG_SETMASK, old_mask) {
        fail("sigprocmask(SIG_SETMASK)", e);
    }
}

/// In the parent: forwards `SIGTERM` and `SIGINT` to `child`, waits for it
/// and exits as it did: with its exit code, or killed by the same signal
/// (re-raised, core dumps off; `128 + signal` if that does not kill).
/// Exits with `_exit`: nothing of the parent's is flushed or run at exit.
pub fn wait_and_exit(child: Child) -> ! {
    let pid = child.pid;
    // A core dump of this process would be of no use.
    let _ = sys::setrlimit(libc::RLIMIT_CORE, 0, 0);
    let signals = parent_signals();
    // Blocked already by `enter_pid_namespace`; again, in case the caller
    // changed the mask.
    let _ = sys::sigprocmask(libc::SIG_BLOCK, &signals);
    loop {
        match sys::waitpid(pid, libc::WNOHANG) {
            Ok(Some(status)) => exit_like(status),
            Ok(None) => {}
            // No such child (ECHILD): nothing to wait for.
            Err(_) => sys::exit_now(125),
        }
        // A timeout bounds the wait even if a SIGCHLD were merged or lost.
        match sys::sigtimedwait(&signals, 1) {
            Ok(Some(sig)) if FORWARDED.contains(&sig) => {
                let _ = sys::kill(pid, sig);
            }
            Ok(_) | Err(_) => {}
        }
    }
}

/// Exits with `status` (from `waitpid`).
fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFEXITED(status) {
        sys::exit_now(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let _ = sys::set_disposition(sig, libc::SIG_DFL);
        let _ = sys::sigprocmask(libc::SIG_UNBLOCK, &sys::sigset(&[sig]));
        sys::raise(sig);
        sys::exit_now(128 + sig);
    }
    sys::exit_now(125)
}
