//! Lock files: a POSIX record lock on a whole file, held by the process
//! that took it for as long as it lives.
//!
//! Record locks (`fcntl(F_SETLK)`) belong to the process: a child does not
//! inherit them at `fork`, and they go when the process dies, however it
//! dies. That is what "a live wardd holds it" must mean (a `flock` lock,
//! by contrast, is shared with every process holding a copy of the
//! descriptor). The process must not open and close the file elsewhere:
//! closing any descriptor of it releases the lock.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

// The lock types and SEEK_SET are small constants (0..=2) that fit the
// `short` fields of `struct flock`.
#[allow(clippy::cast_possible_truncation, reason = "F_WRLCK, F_UNLCK and SEEK_SET are 0..=2")]
const WRITE_LOCK: libc::c_short = libc::F_WRLCK as libc::c_short;
#[allow(clippy::cast_possible_truncation, reason = "F_WRLCK, F_UNLCK and SEEK_SET are 0..=2")]
const UNLOCKED: libc::c_short = libc::F_UNLCK as libc::c_short;
#[allow(clippy::cast_possible_truncation, reason = "F_WRLCK, F_UNLCK and SEEK_SET are 0..=2")]
const FROM_START: libc::c_short = libc::SEEK_SET as libc::c_short;

/// An open lock file and whether this process holds its lock.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

/// Why a lock file was not locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// It could not be opened.
    #[error("lock file {path}: {source}")]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another live process holds it.
    #[error("held by {}", .holder.map_or_else(|| "another process".to_owned(), |pid| format!("pid {pid}")))]
    Held {
        /// Its pid, if the kernel said.
        holder: Option<i32>,
    },
}

impl LockFile {
    /// Opens (creating, mode 0600, never through a symlink) and locks
    /// `path` without waiting.
    pub fn try_lock(path: &Path) -> Result<Self, LockError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| LockError::Open { path: path.to_owned(), source })?;
        let mut lock = libc::flock { l_type: WRITE_LOCK, l_whence: FROM_START, l_start: 0, l_len: 0, l_pid: 0 };
        // SAFETY: F_SETLK reads the `flock` we pass, which lives across the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &raw const lock) } == 0 {
            return Ok(Self { _file: file });
        }
        // SAFETY: F_GETLK writes the holder into our `flock`, valid for writing.
        let asked = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &raw mut lock) };
        let holder = (asked == 0 && lock.l_type != UNLOCKED).then_some(lock.l_pid);
        Err(LockError::Held { holder })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::StandIn;

    #[test]
    fn a_lock_held_by_another_process_names_it_and_goes_when_it_dies() {
        let path = std::env::temp_dir().join(format!("ward-lockfile-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let holder = StandIn::fork(|| match LockFile::try_lock(&path) {
            Ok(lock) => {
                std::mem::forget(lock);
                1
            }
            Err(_) => 0,
        });
        assert_eq!(holder.report, 1);
        match LockFile::try_lock(&path) {
            Err(LockError::Held { holder: Some(pid) }) => assert_eq!(pid, holder.pid()),
            other => panic!("expected the lock to be held by {}: {other:?}", holder.pid()),
        }
        drop(holder);
        assert!(LockFile::try_lock(&path).is_ok());
        std::fs::remove_file(path).unwrap();
    }
}
