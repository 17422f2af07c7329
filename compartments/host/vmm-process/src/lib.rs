//! `ward-vmm-process`: the process that runs one compartment's VM as
//! `wardd` starts it (the `ward-vmm` binary), and what `wardd` and it
//! share: the [`spec`] wardd writes for it, the [`console_log`] it keeps
//! and wardd serves, and the [`exit`] codes both read.
//!
//! Small on purpose, like Firecracker's jailer: the VMM itself
//! (`ward-vmm`), its jail (`ward-sandbox`), the images, and JSON.

pub mod console_lines;
pub mod console_log;
pub mod exit;
pub mod spec;
