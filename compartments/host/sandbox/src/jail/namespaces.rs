//! The namespaces `enter` gives the VMM: mount, network, IPC and UTS.
//!
//! Each is unshared on its own, so a kernel that refuses one (a container
//! without `CAP_SYS_ADMIN`, a kernel built without `CONFIG_NET_NS`) costs
//! only that one, and the report names it with the `errno`. The PID
//! namespace is different (it applies to children only) and has its own
//! module, `pidns`.
//!
//! - **mount**: the private root (`root`) needs it; mounts made in the jail
//!   never reach the host.
//! - **network**: a new namespace has only a loopback interface, down; the
//!   VMM reaches nothing by IP. Its devices talk over descriptors it
//!   already holds (vhost-user sockets, pipes).
//! - **IPC**: no System V IPC or POSIX message queues shared with the host.
//! - **UTS**: the host name is the compartment's, not the host's.

use super::report::{JailReport, Measure};
use super::sys;

/// A kind of Linux namespace the jail uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Mount points (`CLONE_NEWNS`).
    Mount,
    /// Network devices, addresses, sockets (`CLONE_NEWNET`).
    Network,
    /// System V IPC, POSIX message queues (`CLONE_NEWIPC`).
    Ipc,
    /// Host and domain name (`CLONE_NEWUTS`).
    Uts,
    /// Process ids (`CLONE_NEWPID`): see `enter_pid_namespace`.
    Pid,
}

impl Namespace {
    /// The namespaces `enter` unshares, in order.
    pub const ENTERED: [Namespace; 4] = [Namespace::Mount, Namespace::Network, Namespace::Ipc, Namespace::Uts];

    /// Every kind the jail uses.
    pub const ALL: [Namespace; 5] =
        [Namespace::Mount, Namespace::Network, Namespace::Ipc, Namespace::Uts, Namespace::Pid];

    /// The `clone`/`unshare` flag.
    pub fn flag(self) -> libc::c_int {
        match self {
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Network => libc::CLONE_NEWNET,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Pid => libc::CLONE_NEWPID,
        }
    }

    /// The flag's name, for messages.
    pub fn flag_name(self) -> &'static str {
        match self {
            Namespace::Mount => "CLONE_NEWNS",
            Namespace::Network => "CLONE_NEWNET",
            Namespace::Ipc => "CLONE_NEWIPC",
            Namespace::Uts => "CLONE_NEWUTS",
            Namespace::Pid => "CLONE_NEWPID",
        }
    }

    /// What it is called in reports, e.g. `network namespace`.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Mount => "mount namespace",
            Namespace::Network => "network namespace",
            Namespace::Ipc => "ipc namespace",
            Namespace::Uts => "uts namespace",
            Namespace::Pid => "pid namespace",
        }
    }

    /// Its link in `/proc/<pid>/ns/`, e.g. `net`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::Mount => "mnt",
            Namespace::Network => "net",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Pid => "pid",
        }
    }
}

/// Which namespaces the process now has of its own.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Unshared {
    /// A private mount namespace.
    pub(super) mount: bool,
    /// A private UTS namespace.
    pub(super) uts: bool,
}

/// Unshares each of `Namespace::ENTERED`, one call each, reporting each.
pub(super) fn unshare_each(report: &mut JailReport) -> Unshared {
    let mut unshared = Unshared::default();
    for ns in Namespace::ENTERED {
        match sys::unshare(ns.flag()) {
            Ok(()) => {
                report.push(Measure::applied(ns.name(), format!("unshare({})", ns.flag_name())));
                match ns {
                    Namespace::Mount => unshared.mount = true,
                    Namespace::Uts => unshared.uts = true,
                    _ => {}
                }
            }
            Err(e) => report.push(Measure::missing(ns.name(), format!("unshare({}) failed: {e}", ns.flag_name()))),
        }
    }
    unshared
}

/// Sets the host name seen inside the jail, if it has its own UTS namespace
/// (without one, setting it would rename the host).
pub(super) fn set_hostname(hostname: &str, own_uts: bool, report: &mut JailReport) {
    const NAME: &str = "host name";
    if !own_uts {
        report.push(Measure::missing(NAME, "needs a private uts namespace; the host's name stays visible"));
        return;
    }
    match sys::sethostname(hostname.as_bytes()) {
        Ok(()) => report.push(Measure::applied(NAME, format!("{hostname:?}"))),
        Err(e) => report.push(Measure::missing(NAME, format!("sethostname({hostname:?}) failed: {e}"))),
    }
}
