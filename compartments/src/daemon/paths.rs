//! Where the daemon keeps things.
//!
//! As root: state in `/var/lib/ward`, the socket in `/run/ward`. Otherwise
//! under `$XDG_STATE_HOME` (or `~/.local/state`) and `$XDG_RUNTIME_DIR` (or
//! `/tmp/ward-$UID`). `wardd --state-dir` and `--socket` override both.

use std::path::{Path, PathBuf};

/// The daemon's directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The sled store, console logs, run files.
    pub state_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The default socket path.
pub fn default_socket() -> PathBuf {
    if euid() == 0 {
        return PathBuf::from("/run/ward/wardd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ward/wardd.sock"),
        None => PathBuf::from(format!("/tmp/ward-{}/wardd.sock", euid())),
    }
}

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if euid() == 0 {
        return PathBuf::from("/var/lib/ward");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("ward")
}

impl Paths {
    /// The sled database.
    pub fn db(&self) -> PathBuf {
        self.state_dir.join("db")
    }

    /// Per-compartment files: spec, exit record, console log, VMM errors.
    pub fn spec(&self, name: &str) -> PathBuf {
        self.state_dir.join("run").join(format!("{name}.json"))
    }

    /// See [`Self::spec`].
    pub fn exit_file(&self, name: &str) -> PathBuf {
        self.state_dir.join("run").join(format!("{name}.exit"))
    }

    /// See [`Self::spec`].
    pub fn console_log(&self, name: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{name}.log"))
    }

    /// See [`Self::spec`].
    pub fn vmm_errors(&self, name: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{name}.vmm.log"))
    }

    /// Creates the directories, private to the daemon's user.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for dir in [self.state_dir.clone(), self.state_dir.join("run"), self.state_dir.join("logs")]
            .into_iter()
            .chain(self.socket.parent().map(Path::to_owned))
        {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
}
