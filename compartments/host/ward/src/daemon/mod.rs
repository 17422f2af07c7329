//! `wardd`, the host supervisor: owns compartments, starts one `ward-vmm`
//! process for each, watches them, and answers the `ward` command line on
//! a control socket.

pub mod args;
pub mod client;
pub mod ipc;
pub mod op_error;
pub mod paths;
pub mod proto;
pub mod server;
pub mod slot;
pub mod state;
pub mod supervisor;
pub mod usage;
