//! `ward-ipc`: the inter-compartment IPC router (docs/IPC.md). One jailed
//! process serves the virtio-vsock device of every compartment that has
//! one, over vhost-user, and routes their connections: a guest calls
//! another compartment's service by opening a stream to the router and
//! writing one call line; the router asks `ward-policy` (and, for `ask`,
//! the user through `wardd`), opens a connection to the callee's service
//! port and joins the two, with separate flow control on each hop. Nothing
//! a guest sends reaches another compartment except the bytes of an
//! allowed call.
//!
//! The crate has four parts:
//! - [`router`]: the routing core, pure and without I/O;
//! - `device`: the vhost-user backend of one compartment's vsock device,
//!   moving packets between its virtqueues and the router;
//! - `control`: the control socket to `wardd` ([`serve`]);
//! - `seccomp`: the filter each thread installs.

mod control;
mod device;
pub mod host;
mod logger;
pub mod router;
mod seccomp;

pub use control::{ControlError, Options, serve, serve_with};
pub use logger::init_logging;
pub use seccomp::{SeccompError, ThreadRole};
