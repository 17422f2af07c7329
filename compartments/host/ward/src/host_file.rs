//! Opening the files a person names (kernels, policies) without trusting
//! what they are: never blocks, never reads more than a bound.
//!
//! A path may name a FIFO (whose `open` blocks until a writer comes), a
//! device (`/dev/zero` never ends), a directory, a dangling symlink or a
//! sparse file of terabytes. Each is refused with what it is, before any
//! byte is read: the file is opened with `O_NONBLOCK` (a FIFO opens at
//! once, a device is never waited on), then `fstat` of the open descriptor,
//! not of the path, decides, so a file swapped after the check is still
//! caught. Reads stop at the bound even if the file grows meanwhile.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HostFileError {
    /// It could not be opened (missing, dangling symlink, symlink loop,
    /// no permission) or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// It is not a regular file.
    #[error("{path} is {kind}, not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is ("a directory", "a FIFO", ...).
        kind: &'static str,
    },
    /// It is larger than the bound.
    #[error("{path} is {size} bytes, more than the {max} bytes allowed for {what}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
        /// What the file was read as.
        what: &'static str,
    },
    /// It is not UTF-8 text.
    #[error("{path}:{line}:{column}: the file is not UTF-8 text (invalid byte {byte:#04x})")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in characters) of the first invalid byte.
        column: usize,
        /// The byte.
        byte: u8,
    },
}

impl HostFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::NotUtf8 { path, .. } => path,
        }
    }
}

/// Opens `path` for reading if it is a regular file of at most `max`
/// bytes (`what` names its use in the error); returns the file and its size.
pub fn open_regular(path: &Path, max: u64, what: &'static str) -> Result<(File, u64), HostFileError> {
    let io = |source| HostFileError::Io { path: path.to_owned(), source };
    // A first look at the path, so that devices are never even opened
    // (opening one can have effects); the `fstat` below is what counts.
    let meta = std::fs::metadata(path).map_err(io)?;
    check_type(path, meta.file_type())?;
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check_type(path, meta.file_type())?;
    if meta.len() > max {
        return Err(HostFileError::TooLarge { path: path.to_owned(), size: meta.len(), max, what });
    }
    Ok((file, meta.len()))
}

/// Reads `path` whole if it is a regular file of at most `max` bytes.
pub fn read_regular(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, HostFileError> {
    let (file, size) = open_regular(path, max, what)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte past the bound tells a file that grew after `fstat`.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| HostFileError::Io { path: path.to_owned(), source })?;
    if bytes.len() as u64 > max {
        return Err(HostFileError::TooLarge { path: path.to_owned(), size: bytes.len() as u64, max, what });
    }
    Ok(bytes)
}

/// Reads `path` as UTF-8 text, as [`read_regular`] does; invalid UTF-8 is
/// refused with the line and column of its first bad byte.
pub fn read_text(path: &Path, max: u64, what: &'static str) -> Result<String, HostFileError> {
    let bytes = read_regular(path, max, what)?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        // Everything before `at` is valid, so it decodes.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        HostFileError::NotUtf8 {
            path: path.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            byte: bytes[at],
        }
    })
}

fn check_type(path: &Path, kind: std::fs::FileType) -> Result<(), HostFileError> {
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(HostFileError::NotRegular { path: path.to_owned(), kind: what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-host-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_regular_file_within_the_bound_is_read() {
        let dir = scratch("ok");
        std::fs::write(dir.join("f"), "hello").unwrap();
        assert_eq!(read_text(&dir.join("f"), 5, "a test").unwrap(), "hello");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = scratch("fifo");
        let fifo = dir.join("kernel");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let started = Instant::now();
        let e = read_regular(&fifo, 1 << 20, "a test").unwrap_err();
        assert!(matches!(e, HostFileError::NotRegular { kind: "a FIFO", .. }), "{e}");
        assert!(e.to_string().contains("kernel is a FIFO, not a regular file"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn devices_directories_and_dangling_links_are_refused_naming_the_path() {
        let e = read_regular(Path::new("/dev/zero"), 1 << 20, "a test").unwrap_err();
        assert!(matches!(e, HostFileError::NotRegular { kind: "a character device", .. }), "{e}");
        let dir = scratch("kinds");
        let e = read_regular(&dir, 1 << 20, "a test").unwrap_err();
        assert!(matches!(e, HostFileError::NotRegular { kind: "a directory", .. }), "{e}");
        std::os::unix::fs::symlink(dir.join("moved"), dir.join("link.toml")).unwrap();
        let e = read_regular(&dir.join("link.toml"), 1 << 20, "a test").unwrap_err();
        assert!(matches!(e, HostFileError::Io { .. }) && e.to_string().contains("link.toml"), "{e}");
        std::os::unix::fs::symlink(dir.join("loop"), dir.join("loop")).unwrap();
        let e = read_regular(&dir.join("loop"), 1 << 20, "a test").unwrap_err();
        assert_eq!(e.path(), dir.join("loop"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_huge_sparse_file_is_refused_without_reading_it() {
        let dir = scratch("sparse");
        let path = dir.join("big");
        File::create(&path).unwrap().set_len(2 << 30).unwrap();
        let e = read_regular(&path, 1 << 20, "a policy file").unwrap_err();
        assert!(matches!(e, HostFileError::TooLarge { size: 0x8000_0000, max: 0x10_0000, .. }), "{e}");
        assert!(e.to_string().contains("a policy file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let dir = scratch("utf8");
        std::fs::write(dir.join("p.toml"), b"a = 1\nname = \"\xc3\xa9\xff\"\n").unwrap();
        let e = read_text(&dir.join("p.toml"), 1 << 20, "a test").unwrap_err();
        assert!(matches!(e, HostFileError::NotUtf8 { line: 2, column: 10, byte: 0xff, .. }), "{e}");
        assert!(e.to_string().contains("p.toml:2:10"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
