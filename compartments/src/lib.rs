//! `ward-compartments`: the host side of Ward.
//!
//! It owns what a user names and manages: compartments, their names and
//! specs, and the commands of the `ward` command line. Running a
//! compartment's VM is `ward-vmm`'s job; which kernel it boots comes from
//! `ward-images`.

pub mod bench;
pub mod cli;
pub mod console_log;
pub mod daemon;
pub mod fleet;
pub mod grant;
pub mod host_file;
pub mod ipc_bench;
pub mod jail;
pub mod manage;
pub mod name;
pub mod policy_cmd;
pub mod policy_source;
pub mod run;
pub mod vmm_spec;
