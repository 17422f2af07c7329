//! The MMIO bus and the devices on it.
//!
//! Every device a compartment has is MMIO: port I/O is broken in long mode
//! on our hosts and the guest never uses it. A device sees offsets into its
//! own register window and never the guest's raw addresses.

pub mod bus;
pub mod debug_console;
pub mod page_service;
pub mod virtio;
mod warn_once;

pub use bus::{BusDevice, BusError, MmioBus};
pub use warn_once::WarnOnce;
