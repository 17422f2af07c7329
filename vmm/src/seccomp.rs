//! Seccomp filters, one per VMM thread, each allowing only the system
//! calls that thread makes (measured with `strace -f` on `ward run`).
//!
//! | thread | does | allowed beyond the common set |
//! | --- | --- | --- |
//! | vCPU | `KVM_RUN`, MMIO exits, debug console, page service, handing a vhost-user backend its queues at DRIVER_OK, looking at the vCPU after a kick | `ioctl` (`KVM_RUN`, `KVM_GET_REGS`, `KVM_GET_MP_STATE` only), `write`, `sendmsg`/`recvmsg`, `rt_sigreturn` (the kick's handler returns) |
//! | device loop | epoll, queue I/O, disk files, entropy, console in/out, a new vhost-user connection after the backend restarted | `epoll_wait`/`epoll_pwait`/`epoll_ctl`, `read`, `write`, `pread64`/`pwrite64`/`preadv`/`pwritev`, `fdatasync`/`fsync`, `sendmsg`/`recvmsg`, `setsockopt` |
//! | main (the caller of `Vm::run`) | waits for the vCPU and kicks it every second (`signals::kick`), takes SIGTERM and SIGINT (they press the guest's power button: `signals::press_on_stop_signals`), stops the device loop, tears the VM down, prints, exits | `write`, `getpid`, `rt_sigreturn`, and `tgkill` with the kick signal only |
//!
//! The common set is what any Rust thread needs to live and end:
//! `futex`, memory (`mmap` and `mprotect` never with `PROT_EXEC`,
//! `munmap`, `mremap`, `brk`, `madvise`), `close` (and `fcntl(F_GETFD)`,
//! which debug builds of std call before it), `getrandom` (hash map keys),
//! `sched_yield`, `rt_sigprocmask`, `sigaltstack`, `exit`, `exit_group`
//! (ending the process is no escalation, and an ending signal's handler
//! may run on any thread), and the clock
//! calls the vDSO may fall back to. Nothing opens a file, makes a
//! socket, maps executable memory, creates a process or a thread, or
//! changes credentials: a guest that took over a VMM thread gets no new
//! resource from the host.
//!
//! **Refuse with `EPERM`, not kill.** A call outside the list fails with
//! `EPERM` and the kernel logs it (the filter is installed with
//! `SECCOMP_FILTER_FLAG_LOG`, so it lands in the audit log / `dmesg`). The
//! thread then takes its normal error path: a device answers the guest with
//! an I/O error, the VMM logs the failure. Killing the process would be
//! stricter, but a new libc or kernel that implements a library call with a
//! different system call (say `clone3`, `statx` or `rseq` variants) would
//! then take down every compartment at once with no message; with `EPERM`
//! the compartment keeps running, the refusal is in the log, and an
//! attacker still gets nothing the list does not allow, which is the
//! point of the filter.
//!
//! Filters are per thread (no `TSYNC`): each thread installs its own before
//! it does the guest's work. A thread inherits its creator's filter, so
//! the main thread installs its own only after starting the others.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

vmm_sys_util::ioctl_io_nr!(KVM_RUN, kvm_bindings::KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, kvm_bindings::KVMIO, 0x81, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, kvm_bindings::KVMIO, 0x98, kvm_bindings::kvm_mp_state);

/// Which of a compartment's threads a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// The vCPU thread.
    Vcpu,
    /// The virtio device loop.
    DeviceLoop,
    /// The thread that runs the VM (`Vm::run`'s caller).
    Main,
}

/// Which threads get a filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// No filters: for tests that run VMs inside a test harness, whose own
    /// threads must stay unfiltered.
    Off,
    /// The vCPU and device threads only; the caller's thread stays free
    /// for work after the run (`ward-vmm` writes its exit record), so it
    /// must be confined otherwise (the jail).
    VmmThreads,
    /// The vCPU and device threads, and the thread that calls `Vm::run`,
    /// for the rest of its life: `ward run` in its own process.
    #[default]
    AllThreads,
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
];

/// System calls allowed with any arguments, per role, beyond [`COMMON`].
fn plain_calls(role: ThreadRole) -> &'static [i64] {
    match role {
        // vhost-user messages go over sockets already open; nothing makes
        // or connects one.
        ThreadRole::Vcpu => &[libc::SYS_write, libc::SYS_sendmsg, libc::SYS_recvmsg, libc::SYS_rt_sigreturn],
        ThreadRole::DeviceLoop => &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_fdatasync,
            libc::SYS_fsync,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_setsockopt,
        ],
        // `rt_sigreturn`: the stop signals' handler (the power button) runs
        // on this thread and returns.
        ThreadRole::Main => &[libc::SYS_write, libc::SYS_getpid, libc::SYS_rt_sigreturn],
    }
}

fn condition(role: ThreadRole, arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|source| SeccompError::Build { role, source })
}

fn rule(role: ThreadRole, conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|source| SeccompError::Build { role, source })
}

/// The rules of `role`'s filter: system call number to the argument rules
/// that allow it (none: any arguments).
pub fn rules(role: ThreadRole) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().chain(plain_calls(role)).map(|&call| (call, Vec::new())).collect();
    // Rust's debug builds check a descriptor is open before closing it.
    let get_fd = u64::try_from(libc::F_GETFD).unwrap_or(1);
    rules.insert(libc::SYS_fcntl, vec![rule(role, vec![condition(role, 1, SeccompCmpOp::Eq, get_fd)?])?]);
    // Memory, never executable.
    let exec = u64::try_from(libc::PROT_EXEC).unwrap_or(4);
    for call in [libc::SYS_mmap, libc::SYS_mprotect] {
        let no_exec = condition(role, 2, SeccompCmpOp::MaskedEq(exec), 0)?;
        rules.insert(call, vec![rule(role, vec![no_exec])?]);
    }
    if role == ThreadRole::Vcpu {
        let requests: [libc::c_ulong; 3] = [KVM_RUN(), KVM_GET_REGS(), KVM_GET_MP_STATE()];
        let allowed = requests
            .into_iter()
            .map(|request| rule(role, vec![condition(role, 1, SeccompCmpOp::Eq, request)?]))
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_ioctl, allowed);
    }
    if role == ThreadRole::Main {
        // The kick, and no other signal to any thread.
        let kick = u64::try_from(crate::signals::kick_signal()).unwrap_or(34);
        rules.insert(libc::SYS_tgkill, vec![rule(role, vec![condition(role, 2, SeccompCmpOp::Eq, kick)?])?]);
    }
    Ok(rules)
}

/// The compiled filter of `role`: the allowed calls pass, anything else
/// fails with `EPERM`.
pub fn filter(role: ThreadRole) -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::x86_64;
    let filter = SeccompFilter::new(rules(role)?, SeccompAction::Errno(1), SeccompAction::Allow, arch)
        .map_err(|source| SeccompError::Build { role, source })?;
    BpfProgram::try_from(filter).map_err(|source| SeccompError::Compile { role, source })
}

/// Installs `role`'s filter on the calling thread, for the rest of its life.
pub fn install(role: ThreadRole) -> Result<(), SeccompError> {
    let program = filter(role)?;
    ward_sandbox::seccomp::install(&program).map_err(|source| SeccompError::Install { role, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on a fresh thread with `role`'s filter installed.
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
        for role in [ThreadRole::Vcpu, ThreadRole::DeviceLoop, ThreadRole::Main] {
            assert!(!filter(role).unwrap().is_empty());
        }
    }

    #[test]
    fn device_thread_may_not_open_files_or_make_sockets() {
        let (socket, open) = filtered(ThreadRole::DeviceLoop, || {
            // SAFETY: plain calls with constant arguments; results checked.
            let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            let socket_errno = std::io::Error::last_os_error().raw_os_error();
            let open = std::fs::File::open("/etc/hostname").map_err(|e| e.raw_os_error());
            ((socket, socket_errno), open.map(|_| ()))
        });
        assert_eq!(socket, (-1, Some(libc::EPERM)));
        assert_eq!(open, Err(Some(libc::EPERM)));
    }

    #[test]
    fn device_thread_keeps_what_it_needs() {
        let ok = filtered(ThreadRole::DeviceLoop, || {
            let event = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK);
            // Creating an eventfd is not in the list: the loop creates them
            // before it installs its filter.
            assert!(event.is_err());
            let mut bytes = [0u8; 32];
            // SAFETY: writes into a local buffer of the given length.
            let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
            let data = vec![7u8; 1 << 20];
            got == 32 && data.iter().map(|&b| u64::from(b)).sum::<u64>() == 7 << 20
        });
        assert!(ok);
    }

    #[test]
    fn vcpu_thread_may_only_run_the_vcpu_among_ioctls() {
        let (allowed, refused) = filtered(ThreadRole::Vcpu, || {
            // SAFETY: ioctls on an invalid descriptor: no effect but the
            // error; the filter decides before the kernel looks at the fd.
            let allowed = unsafe { libc::ioctl(-1, KVM_RUN(), 0) };
            let allowed_errno = std::io::Error::last_os_error().raw_os_error();
            // SAFETY: as above.
            let refused = unsafe { libc::ioctl(-1, libc::TIOCSTI, 0) };
            let refused_errno = std::io::Error::last_os_error().raw_os_error();
            ((allowed, allowed_errno), (refused, refused_errno))
        });
        assert_eq!(allowed, (-1, Some(libc::EBADF)), "KVM_RUN passes the filter");
        assert_eq!(refused, (-1, Some(libc::EPERM)));
    }

    #[test]
    fn no_thread_may_map_executable_memory() {
        let errno = filtered(ThreadRole::Main, || {
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
            (mapped == libc::MAP_FAILED).then(|| std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(errno, Some(Some(libc::EPERM)));
    }
}
