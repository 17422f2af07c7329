//! What `wardd` tells a `ward-vmm` process to run: a compartment's resolved
//! spec, written as JSON for the process to read at start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A compartment to run, fully resolved (the policy already decided).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmSpec {
    /// Compartment name.
    pub name: String,
    /// Built-in image.
    pub image: String,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// Console history file.
    pub console_log: PathBuf,
    /// Cap of one console history file, bytes.
    pub log_cap: u64,
    /// Where the process writes its exit code when the guest stops.
    pub exit_file: PathBuf,
    /// Jail the process before the VM starts.
    pub jail: bool,
    /// A virtio console for programs (output to the history).
    #[serde(default)]
    pub console: bool,
    /// The console's input is the process's standard input (a socket whose
    /// other end wardd writes `ward run`'s input to); else it has none.
    #[serde(default)]
    pub console_input: bool,
    /// A virtio entropy device.
    #[serde(default)]
    pub rng: bool,
    /// Disks: host files the process opens before its jail.
    #[serde(default)]
    pub disks: Vec<DiskRequest>,
    /// The uid and gid the jailed process runs as (`None`: `nobody`).
    #[serde(default)]
    pub uid: Option<u32>,
    /// A vsock device served by wardd's IPC router.
    #[serde(default)]
    pub vsock: Option<VsockSpec>,
    /// A socket (inherited descriptor number) the process writes one byte
    /// to, then closes, once it no longer dies with the wardd that started
    /// it: until then a wardd killed meanwhile takes the new VMM with it
    /// (`ward_sandbox::spawner`), so `ward start` waits for that byte.
    #[serde(default)]
    pub started_fd: Option<i32>,
}

/// The vsock device of a compartment: its CID and the descriptors wardd
/// leaves open in the VMM process for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockSpec {
    /// The compartment's CID.
    pub cid: u64,
    /// The vhost-user stream to the router (inherited descriptor number).
    pub backend_fd: i32,
    /// The `SOCK_SEQPACKET` socket new router connections arrive on after
    /// the router restarted (inherited descriptor number).
    pub reconnect_fd: i32,
    /// wardd's end of that socket, which the process only keeps open
    /// (inherited descriptor number): the socket outlives a wardd that
    /// dies, and the next one takes its end back from this process.
    #[serde(default)]
    pub keep_fd: Option<i32>,
}

/// What the exit file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The guest's exit code, if it powered off.
    pub exit_code: Option<i32>,
    /// How it ended, for people.
    pub reason: String,
}

/// A disk asked for on the command line: a host file, and whether the
/// guest may only read it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRequest {
    /// The host file.
    pub path: std::path::PathBuf,
    /// Read-only.
    pub read_only: bool,
}

impl std::str::FromStr for DiskRequest {
    type Err = String;
    /// `PATH` or `PATH:ro`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, read_only) = match s.strip_suffix(":ro") {
            Some(path) => (path, true),
            None => (s, false),
        };
        if path.is_empty() {
            return Err("a disk is PATH or PATH:ro".into());
        }
        Ok(Self { path: path.into(), read_only })
    }
}
