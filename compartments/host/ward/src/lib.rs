//! `ward-host`: the host side of Ward that a person talks to.
//!
//! It owns what a user names and manages: compartments, their names, what
//! the policy grants them, the commands of the `ward` command line and the
//! supervisor `wardd`. Running a compartment's VM is the `ward-vmm`
//! process's job (`ward-vmm-process`), its confinement `ward-sandbox`'s;
//! which kernel it boots comes from `ward-images`. This crate has no
//! `unsafe` code: what it needs of the system beyond `std` is in
//! `ward-sandbox`.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod daemon;
pub mod fleet;
pub mod grant;
pub mod host_file;
pub mod ipc_bench;
pub mod lifecycle;
pub mod manage;
pub mod manpages;
pub mod name;
pub mod output;
pub mod policy_cmd;
pub mod policy_source;
pub mod progress;
pub mod run;
pub mod stats;
