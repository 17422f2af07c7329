//! `ward-sandbox`: how Ward's host processes are confined and started.
//!
//! Every process of the host side (`wardd`, each compartment's `ward-vmm`,
//! the IPC router `ward-ipc`) is confined with what this crate offers, and
//! every system call the host side makes without a safe wrapper in `std`
//! is made here, behind a safe function with its `SAFETY` argument: the
//! other host crates hold no `unsafe` code of their own.
//!
//! - [`jail`]: namespaces, an empty private root, an unprivileged identity,
//!   resource limits, cgroups, and `ward doctor`'s view of what a host
//!   allows;
//! - [`seccomp`]: installing a thread's filter (the filters themselves are
//!   their owners': the VMM's and the router's);
//! - [`spawner`]: starting processes that die with their parent until they
//!   exec; [`process`]: the rest of process control;
//! - [`pidfd`]: process descriptors; [`lockfile`]: POSIX record locks;
//!   [`sockets`]: socket pairs, one-connection listeners, peer credentials.

pub mod jail;
pub mod lockfile;
pub mod pidfd;
pub mod process;
pub mod seccomp;
pub mod sockets;
pub mod spawner;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
