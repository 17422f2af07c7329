//! `ward-ipc`: the inter-compartment IPC router (docs/IPC.md). Work in
//! progress: the routing core.

mod logger;
pub mod router;

pub use logger::init_logging;
