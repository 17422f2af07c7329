//! Seccomp filters, one per router thread, each allowing only the system
//! calls that thread makes (the pattern of `vmm/src/seccomp.rs`, with the
//! router's own lists).
//!
//! | thread | does | allowed beyond the common set |
//! | --- | --- | --- |
//! | worker (one per compartment) | epoll loop, queues, eventfds | `epoll_wait`/`epoll_pwait`, `read`, `write` |
//! | vhost-user (one per compartment, and its starter) | the vhost-user protocol: messages with descriptors, mapping guest memory, kick registration | `recvmsg`, `sendmsg`, `accept4`, `poll`, `shutdown`, `epoll_ctl`, `read`, `write`, `fstat`, thread creation |
//! | control | the control socket, starting each compartment's threads | everything the others need (threads inherit it) plus `eventfd2`, `epoll_create1`, `seccomp` |
//!
//! The common set is what any Rust thread needs to live and end: `futex`,
//! memory (`mmap` and `mprotect` never with `PROT_EXEC`, `munmap`,
//! `mremap`, `brk`, `madvise`), `close`, `fcntl`, `getrandom` (hash map
//! keys), `sched_yield`, `rt_sigprocmask`, `sigaltstack`, `exit`,
//! `exit_group`, the clock calls the vDSO may fall back to. Nothing opens
//! a file, makes a socket, connects, maps executable memory, runs a program
//! or changes credentials.
//!
//! A filter applies to the thread that installs it and every thread it
//! starts later, on top of their own. The control thread starts every
//! compartment's threads, so its filter is the union of all; each worker
//! then narrows to its own list as soon as it runs, before it touches guest
//! memory. A call outside the list fails with `EPERM` (logged by the
//! kernel), as in the VMM.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Which of the router's threads a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// A compartment's queue worker.
    Worker,
    /// A compartment's vhost-user protocol thread (and the thread that
    /// starts it).
    VhostUser,
    /// The control thread ([`crate::serve`]).
    Control,
}

/// A filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules (a bug in this module).
    #[error("cannot build the seccomp filter of the {role:?} thread: {source}")]
    Build {
        /// The thread.
        role: ThreadRole,
        /// The error.
        source: seccompiler::BackendError,
    },
    /// The BPF program could not be compiled.
    #[error("cannot compile the seccomp filter of the {role:?} thread: {source}")]
    Compile {
        /// The thread.
        role: ThreadRole,
        /// The error.
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of the {role:?} thread: {source}")]
    Install {
        /// The thread.
        role: ThreadRole,
        /// The error.
        source: std::io::Error,
    },
}

/// System calls every thread needs.
const COMMON: &[i64] = &[
    libc::SYS_futex,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_madvise,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_getrandom,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    // Ending the whole process is no escalation, and a signal handler that
    // ends it may run on any thread.
    libc::SYS_exit_group,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_restart_syscall,
    // Log lines.
    libc::SYS_write,
];

/// What a worker does beyond [`COMMON`].
const WORKER: &[i64] = &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, libc::SYS_read];

/// What the vhost-user threads do beyond [`COMMON`].
const VHOST_USER: &[i64] = &[
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_accept4,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_shutdown,
    libc::SYS_epoll_ctl,
    libc::SYS_read,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_dup,
    // Starting threads (the protocol thread; glibc's thread start).
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
];

/// What only the control thread does beyond the others. `seccomp` lets
/// the threads it starts add their own, narrower filters (a filter can
/// only take away).
const CONTROL: &[i64] = &[libc::SYS_eventfd2, libc::SYS_epoll_create1, libc::SYS_rt_sigaction, libc::SYS_seccomp];

fn condition(role: ThreadRole, arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|source| SeccompError::Build { role, source })
}

/// The rules of `role`'s filter: system call number to the argument rules
/// that allow it (none: any arguments).
pub(crate) fn rules(role: ThreadRole) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let lists: &[&[i64]] = match role {
        ThreadRole::Worker => &[COMMON, WORKER],
        ThreadRole::VhostUser => &[COMMON, VHOST_USER],
        ThreadRole::Control => &[COMMON, WORKER, VHOST_USER, CONTROL],
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        lists.iter().flat_map(|list| list.iter()).map(|&call| (call, Vec::new())).collect();
    // Memory, never executable.
    let exec = u64::try_from(libc::PROT_EXEC).unwrap_or(4);
    for call in [libc::SYS_mmap, libc::SYS_mprotect] {
        let no_exec = condition(role, 2, SeccompCmpOp::MaskedEq(exec), 0)?;
        rules.insert(
            call,
            vec![SeccompRule::new(vec![no_exec]).map_err(|source| SeccompError::Build { role, source })?],
        );
    }
    Ok(rules)
}

/// The compiled filter of `role`: the allowed calls pass, anything else
/// fails with `EPERM`.
pub(crate) fn filter(role: ThreadRole) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules(role)?, SeccompAction::Errno(1), SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|source| SeccompError::Build { role, source })?;
    BpfProgram::try_from(filter).map_err(|source| SeccompError::Compile { role, source })
}

/// Installs `role`'s filter on the calling thread (and the threads it
/// starts from now on), for the rest of its life.
pub(crate) fn install(role: ThreadRole) -> Result<(), SeccompError> {
    let program = filter(role)?;
    ward_sandbox::seccomp::install(&program).map_err(|source| SeccompError::Install { role, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered<T: Send + 'static>(role: ThreadRole, body: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            install(role).unwrap();
            body()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn every_role_compiles() {
        for role in [ThreadRole::Worker, ThreadRole::VhostUser, ThreadRole::Control] {
            assert!(!filter(role).unwrap().is_empty());
        }
    }

    #[test]
    fn worker_may_not_open_files_make_sockets_or_start_threads() {
        let (socket, open, eventfd) = filtered(ThreadRole::Worker, || {
            // SAFETY: plain calls with constant arguments; results checked.
            let socket = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            let socket_errno = std::io::Error::last_os_error().raw_os_error();
            let open = std::fs::File::open("/etc/hostname").map_err(|e| e.raw_os_error());
            let eventfd = vmm_sys_util::eventfd::EventFd::new(0).map_err(|e| e.raw_os_error());
            ((socket, socket_errno), open.map(|_| ()), eventfd.map(|_| ()))
        });
        assert_eq!(socket, (-1, Some(libc::EPERM)));
        assert_eq!(open, Err(Some(libc::EPERM)));
        assert_eq!(eventfd, Err(Some(libc::EPERM)));
    }

    #[test]
    fn worker_keeps_what_it_needs() {
        let ok = filtered(ThreadRole::Worker, || {
            let data = vec![7u8; 1 << 20];
            let map: std::collections::HashMap<u64, u64> = (0..100).map(|i| (i, i)).collect();
            data.iter().map(|&b| u64::from(b)).sum::<u64>() == 7 << 20 && map.len() == 100
        });
        assert!(ok);
    }

    #[test]
    fn control_may_not_open_files_or_map_executable_memory() {
        let (open, errno) = filtered(ThreadRole::Control, || {
            let open = std::fs::File::open("/etc/hostname").map_err(|e| e.raw_os_error());
            // SAFETY: an anonymous mapping request; the result is checked
            // and nothing is mapped when it fails.
            let mapped = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            (open.map(|_| ()), (mapped == libc::MAP_FAILED).then(|| std::io::Error::last_os_error().raw_os_error()))
        });
        assert_eq!(open, Err(Some(libc::EPERM)));
        assert_eq!(errno, Some(Some(libc::EPERM)));
    }
}
