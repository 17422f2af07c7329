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

use ward_sandbox::process::euid;

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

/// The host-wide directory of daemon slots (`daemon::slot`): one per host
/// for root's daemons; a user's daemons (which jail nothing, so use no
/// host uids or cgroups) keep theirs in their runtime directory.
pub fn default_slot_registry() -> PathBuf {
    if euid() == 0 {
        return PathBuf::from("/run/ward/slots");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ward/slots"),
        None => PathBuf::from(format!("/tmp/ward-{}/slots", euid())),
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

    /// Makes the directories the daemon needs, without changing any that
    /// exist: what is missing is created private to the daemon's user
    /// (0700, ancestors too); one that exists is used as it is if it is
    /// safe, refused if not. `--socket /tmp/w.sock` must never make `/tmp`
    /// private, and a directory others can write to (without the sticky
    /// bit) is one where they could swap the socket or the store.
    pub fn create(&self) -> Result<(), UnsafeDir> {
        for dir in [self.state_dir.clone(), self.state_dir.join("run"), self.state_dir.join("logs")]
            .into_iter()
            .chain(self.socket.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned))
        {
            ensure_dir(&dir)?;
        }
        Ok(())
    }
}

/// A directory the daemon will not use.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDir {
    /// It could not be made or inspected.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It exists and is not a directory.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Others may write to it and it has no sticky bit.
    #[error(
        "{path} is writable by other users (mode {mode:04o}) without the sticky bit; \
         use a directory only you can write to (wardd changes no existing directory)"
    )]
    WritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// It belongs to another user (neither root nor the daemon's).
    #[error("{path} belongs to uid {owner}, neither root nor wardd's user {me}")]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's user.
        me: u32,
    },
}

/// Makes `dir` (and missing ancestors) mode 0700 if it does not exist;
/// else checks that it and every ancestor are safe (see [`Paths::create`]).
fn ensure_dir(dir: &Path) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| UnsafeDir::Io { path: dir.to_owned(), source };
    match std::fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(UnsafeDir::NotADirectory { path: dir.to_owned() });
    }
    check_owner(dir, &meta)?;
    for ancestor in dir.ancestors() {
        if let Ok(meta) = std::fs::metadata(ancestor) {
            check_mode(ancestor, &meta)?;
        }
    }
    Ok(())
}

fn check_mode(dir: &Path, meta: &std::fs::Metadata) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(UnsafeDir::WritableByOthers { path: dir.to_owned(), mode });
    }
    Ok(())
}

fn check_owner(dir: &Path, meta: &std::fs::Metadata) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::MetadataExt;
    let me = euid();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(UnsafeDir::ForeignOwner { path: dir.to_owned(), owner: meta.uid(), me });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-paths-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn missing_directories_are_made_private() {
        let dir = scratch("fresh");
        let paths = Paths { state_dir: dir.join("a/state"), socket: dir.join("b/sock/w.sock") };
        paths.create().unwrap();
        for made in ["a", "a/state", "a/state/run", "a/state/logs", "b", "b/sock"] {
            assert_eq!(mode(&dir.join(made)), 0o700, "{made}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_shared_sticky_directory_is_used_and_left_as_it_is() {
        let dir = scratch("sticky");
        let shared = dir.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let paths = Paths { state_dir: dir.join("state"), socket: shared.join("w.sock") };
        paths.create().unwrap();
        assert_eq!(mode(&shared), 0o1777);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused_and_not_changed() {
        let dir = scratch("open");
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let paths = Paths { state_dir: dir.join("state"), socket: open.join("w.sock") };
        let e = paths.create().unwrap_err();
        assert!(matches!(&e, UnsafeDir::WritableByOthers { path, mode: 0o777 } if *path == open), "{e}");
        assert_eq!(mode(&open), 0o777);
        // Below it, too: anyone could rename the directory away.
        let paths = Paths { state_dir: open.join("state"), socket: dir.join("w.sock") };
        assert!(matches!(paths.create().unwrap_err(), UnsafeDir::WritableByOthers { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_existing_private_directory_keeps_its_mode() {
        let dir = scratch("keep");
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
        Paths { state_dir: state.clone(), socket: dir.join("w.sock") }.create().unwrap();
        assert_eq!(mode(&state), 0o750);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
