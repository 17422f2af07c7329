//! Jailing a compartment's VMM process, and what this host allows of it.
//!
//! Each compartment's VM runs in its own `ward-vmm` process. If the guest
//! ever breaks out into that process, the jail decides what it finds: no
//! files (an empty, read-only root), no network, no other process to see
//! or signal (its own PID namespace), no privilege (an unprivileged uid,
//! no capabilities, `no_new_privs`), bounded resources (rlimits in the
//! process, cgroup limits from the daemon), and only the descriptors the
//! VMM opened on purpose.
//!
//! # The sequence in `ward-vmm`
//!
//! ```text
//! main (single-threaded, root, started by wardd)
//! ├─ [already in its cgroup: wardd made it (Cgroup::create) and the
//! │   process joined it in pre_exec, before its first instruction]
//! ├─ enter_pid_namespace()
//! │   ├─ Parent { child } → wait_and_exit(child)      (never returns)
//! │   └─ Child (PID 1 of a new PID namespace):
//! ├─ install SIGTERM/SIGINT handlers (PID 1 ignores signals it has no handler for)
//! ├─ open /dev/kvm, the console log files, the exit-record file, the disks
//! ├─ enter(&JailSpec { keep_fds: those descriptors, .. })  → JailReport: log it once
//! └─ build the VM (guest RAM mmap, vCPU thread, devices) and run it
//! ```
//!
//! - The pid namespace comes first because it needs a fork, and a fork is
//!   only simple while the process is single-threaded and holds nothing.
//! - The descriptors are opened before `enter` because afterwards there is
//!   nothing to open them from (empty root) and no right to (uid `nobody`).
//! - `enter` comes before the VM is built: no guest code ever runs outside
//!   the jail, and the guest RAM mapping counts against `RLIMIT_AS` from
//!   the start.
//! - The cgroup is applied before `ward-vmm` forks, so the child inherits
//!   it. (`cgroup_limit` moves a running process in instead, for callers
//!   that start the process first.)
//!
//! # What is required and what is best effort
//!
//! `enter` fails (`JailError`) if it cannot close the other descriptors, set
//! the rlimits, drop to the unprivileged identity, set `no_new_privs`, or
//! verify that root cannot be regained: without those the process must not
//! run a guest. Namespaces, the private root (which needs the mount
//! namespace), the host name, the bounding set and the PID namespace are
//! applied where the kernel allows; each one missing is a `Measure` in the
//! `JailReport` with the failing call and `errno`, which `ward-vmm` logs
//! once at start. `JailSpec::require_all` turns any missing measure into
//! an error instead. `doctor` lists what this host supports beforehand.
//!
//! # Not here
//!
//! Seccomp filters are per thread and belong to the VMM (`vmm/`), installed
//! after `enter` on each thread; `doctor` reports whether the host has them.
//! User namespaces are not used: `wardd` runs as root.

mod cgroup;
mod doctor;
mod error;
mod fds;
mod identity;
mod limits;
mod namespaces;
mod pidns;
mod report;
mod root;
mod sys;

use std::os::fd::RawFd;
use std::path::PathBuf;

pub use cgroup::{
    CPU_PERIOD_US, Cgroup, CgroupHost, CgroupLimits, Controller, ControllerSupport, CpuMax, MEMORY_OVERHEAD, PARENT,
    cgroup_limit,
};
pub use doctor::{Capability, doctor, render_doctor};
pub use error::JailError;
pub use identity::{NOBODY, compartment_identity};
pub use limits::{
    DEFAULT_FILE_SIZE, DEFAULT_OPEN_FILES, DEFAULT_THREADS, DEFAULT_UID_TASKS, JailLimits, PER_THREAD_ADDRESS_SPACE,
    VMM_BASE_ADDRESS_SPACE, address_space_for,
};
pub use namespaces::Namespace;
pub use pidns::{Child, PidNamespace, enter_pid_namespace, wait_and_exit};
pub use report::{JailReport, Measure};

/// Longest host name the kernel takes (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// What the jail of one VMM process is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailSpec {
    /// The unprivileged uid to run as (never 0).
    pub uid: u32,
    /// The unprivileged gid to run as (never 0).
    pub gid: u32,
    /// Descriptors to keep open (0, 1 and 2 are always kept): `/dev/kvm`,
    /// disks, console log, control pipe. Each must be open.
    pub keep_fds: Vec<RawFd>,
    /// The directory the new root's tmpfs is mounted on, in the jail's
    /// own mount namespace only (the host's view of it never changes). Any
    /// existing directory; `/tmp` by default.
    pub root_dir: PathBuf,
    /// The host name inside the jail (its own UTS namespace).
    pub hostname: String,
    /// The rlimits.
    pub limits: JailLimits,
    /// Fail, rather than report, if any measure cannot be applied.
    pub require_all: bool,
}

impl JailSpec {
    /// The default jail for compartment `name` with `memory` bytes of guest
    /// RAM, keeping `keep_fds`: the `compartment_identity`, a tmpfs root on
    /// `/tmp`, the host name `name`, `JailLimits::for_guest(memory)`, best
    /// effort.
    pub fn new(name: &str, memory: u64, keep_fds: Vec<RawFd>) -> Self {
        let (uid, gid) = compartment_identity();
        Self {
            uid,
            gid,
            keep_fds,
            root_dir: PathBuf::from(root::DEFAULT_ROOT_DIR),
            hostname: name.to_owned(),
            limits: JailLimits::for_guest(memory),
            require_all: false,
        }
    }

    /// Refuses what the jail must never do.
    fn validate(&self) -> Result<(), JailError> {
        let invalid = |why: String| Err(JailError::InvalidSpec(why));
        if self.uid == 0 || self.gid == 0 {
            return invalid(format!("uid {} / gid {}: the jail drops to an unprivileged identity", self.uid, self.gid));
        }
        if !self.root_dir.is_absolute() {
            return invalid(format!("root_dir {} is not absolute", self.root_dir.display()));
        }
        if self.hostname.is_empty() || self.hostname.len() > HOST_NAME_MAX || self.hostname.contains('\0') {
            return invalid(format!("host name {:?} must be 1 to {HOST_NAME_MAX} bytes", self.hostname));
        }
        if self.limits.open_files <= 3 {
            return invalid(format!("open_files {} leaves no descriptor beyond stdio", self.limits.open_files));
        }
        if self.limits.processes == 0 {
            return invalid("processes 0 would forbid the vCPU thread".to_owned());
        }
        Ok(())
    }
}

/// Jails the calling process as `spec` says and reports what was applied.
/// Call it single-threaded, after opening every descriptor in
/// `spec.keep_fds`, before building the VM (see the module documentation
/// for the whole sequence). On `Err` the process is partly jailed and must
/// exit.
///
/// Every descriptor not in `keep_fds` is closed behind its owner's back:
/// turn owners of such descriptors into raw ones (`into_raw_fd`) or drop
/// them before, since dropping a `File` whose descriptor is gone aborts
/// debug builds (Rust's I/O-safety check).
pub fn enter(spec: &JailSpec) -> Result<JailReport, JailError> {
    spec.validate()?;
    ensure_single_threaded()?;
    let mut report = JailReport::default();
    report.push(pid_namespace_measure());

    let kept = fds::close_all_except(&spec.keep_fds)?;
    report.push(Measure::applied("descriptors", format!("every other descriptor closed; kept {kept:?}")));
    // Before the root goes: it reads /proc/self/statm.
    limits::apply(&spec.limits, &mut report)?;

    let unshared = namespaces::unshare_each(&mut report);
    root::enter_private_root(&spec.root_dir, unshared.mount, &mut report);
    namespaces::set_hostname(&spec.hostname, unshared.uts, &mut report);

    // Last: everything above needs root.
    identity::drop_privileges(spec.uid, spec.gid, &mut report)?;

    if spec.require_all && !report.is_complete() {
        return Err(JailError::Incomplete(report.missing_summary()));
    }
    Ok(report)
}

/// Whether this process is PID 1 of a namespace of its own, as
/// `enter_pid_namespace` leaves it.
fn pid_namespace_measure() -> Measure {
    const NAME: &str = "pid namespace";
    match sys::getpid() {
        1 => Measure::applied(NAME, "PID 1 of its own namespace"),
        pid => Measure::missing(
            NAME,
            format!("this process is pid {pid}, not 1: enter_pid_namespace was not used or failed"),
        ),
    }
}

/// Fails unless this process has exactly one thread: unsharing the mount
/// namespace and the raw identity calls act on the calling thread only.
fn ensure_single_threaded() -> Result<(), JailError> {
    let threads = std::fs::read_dir("/proc/self/task").map_err(JailError::CountThreads)?.count();
    if threads == 1 { Ok(()) } else { Err(JailError::NotSingleThreaded(threads)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JailSpec {
        JailSpec::new("mail", 64 << 20, vec![])
    }

    #[test]
    fn new_spec_is_unprivileged_and_valid() {
        let s = spec();
        assert_ne!(s.uid, 0);
        assert_eq!(s.hostname, "mail");
        assert_eq!(s.root_dir, PathBuf::from("/tmp"));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn root_identity_is_invalid() {
        let mut s = spec();
        s.uid = 0;
        assert!(matches!(s.validate(), Err(JailError::InvalidSpec(_))));
        let mut s = spec();
        s.gid = 0;
        assert!(matches!(s.validate(), Err(JailError::InvalidSpec(_))));
    }

    #[test]
    fn relative_root_dir_is_invalid() {
        let mut s = spec();
        s.root_dir = PathBuf::from("tmp");
        assert!(matches!(s.validate(), Err(JailError::InvalidSpec(_))));
    }

    #[test]
    fn bad_host_names_are_invalid() {
        for name in [String::new(), "x".repeat(65), "a\0b".to_owned()] {
            let mut s = spec();
            s.hostname = name;
            assert!(matches!(s.validate(), Err(JailError::InvalidSpec(_))));
        }
    }

    #[test]
    fn enter_refuses_a_multi_threaded_process() {
        // The unit-test harness runs tests on threads of its own, so this
        // process has several; `enter` must refuse before changing anything.
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(matches!(enter(&spec()), Err(JailError::NotSingleThreaded(n)) if n > 1));
    }

    #[test]
    fn pid_namespace_is_missing_outside_one() {
        // The test process is not PID 1.
        assert!(!pid_namespace_measure().applied);
    }
}
