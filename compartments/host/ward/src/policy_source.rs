//! Where the policy comes from, and reading it.
//!
//! In order: `--policy PATH`, the `WARD_POLICY` environment variable,
//! `$XDG_CONFIG_HOME/ward/policy` (or `~/.config/ward/policy`) if it exists,
//! else the built-in policy (`compartments/default-policy.toml`). A path may
//! be one TOML file or a directory of them (see docs/POLICY.md for the
//! order). `ward-policy` does no I/O: this module reads the files.

use std::path::{Path, PathBuf};

use ward_policy::display::Escaped;
use ward_policy::{Policy, PolicyErrors};

use crate::host_file::{self, HostFileError};

/// The built-in policy's text.
pub const BUILT_IN: &str = include_str!("../default-policy.toml");
/// How the built-in policy is named in messages.
pub const BUILT_IN_NAME: &str = "(built-in policy)";

/// The largest policy file read, in bytes (16 MiB: a policy of tens of
/// thousands of rules is a few MiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most policy files a directory may hold.
pub const MAX_FILES: usize = 1024;
/// The largest policy in all, in bytes, over all of a directory's files.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// What a policy file is read as, in errors about its size.
const WHAT: &str = "a policy file";

/// Reading the policy failed. Paths are printed escaped (a file name may
/// hold control characters).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A directory could not be listed, or a path could not be looked at.
    #[error("cannot read policy {}: {source}", Escaped(&path.display().to_string()))]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A policy file (the one named, or a `*.toml` entry of the directory)
    /// cannot be read as a regular file: missing, a dangling symlink, a
    /// symlink loop, unreadable, not a regular file (a FIFO, a device, a
    /// directory), larger than [`MAX_FILE_BYTES`], or not UTF-8 (with the
    /// line and column of its first bad byte). The whole policy is refused:
    /// its rules must not be silently dropped.
    #[error("cannot use the policy: {}", Escaped(&.0.to_string()))]
    File(#[source] HostFileError),
    /// A directory entry ends in `.toml` but its name is not UTF-8, so it
    /// cannot be ordered or named in messages as the others are.
    #[error("policy file {}: its name is not UTF-8", Escaped(&path.display().to_string()))]
    NameNotUtf8 {
        /// The entry.
        path: PathBuf,
    },
    /// The directory holds more than [`MAX_FILES`] policy files.
    #[error("policy {}: more than {max} policy files", Escaped(&path.display().to_string()))]
    TooManyFiles {
        /// The directory.
        path: PathBuf,
        /// The bound.
        max: usize,
    },
    /// The directory's policy files hold more than [`MAX_TOTAL_BYTES`].
    #[error("policy {}: its files hold more than {max} bytes", Escaped(&path.display().to_string()))]
    TooLarge {
        /// The directory.
        path: PathBuf,
        /// The bound.
        max: u64,
    },
    /// The policy has errors (each with file, line and column).
    #[error("the policy has errors:\n{0}")]
    Invalid(PolicyErrors),
}

/// Where to read the policy from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// A file or directory.
    Path(PathBuf),
    /// The built-in policy.
    BuiltIn,
}

impl PolicySource {
    /// The source for an optional `--policy` argument.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(path) = explicit {
            return Self::Path(path.to_owned());
        }
        if let Some(path) = std::env::var_os("WARD_POLICY").filter(|p| !p.is_empty()) {
            return Self::Path(PathBuf::from(path));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
        match config.map(|dir| dir.join("ward/policy")) {
            Some(path) if path.exists() => Self::Path(path),
            _ => Self::BuiltIn,
        }
    }

    /// How to name it in messages (escaped).
    pub fn describe(&self) -> String {
        match self {
            Self::Path(path) => Escaped(&path.display().to_string()).to_string(),
            Self::BuiltIn => BUILT_IN_NAME.to_owned(),
        }
    }

    /// The files, as (path, text), in evaluation order.
    pub fn read(&self) -> Result<Vec<(PathBuf, String)>, SourceError> {
        match self {
            Self::BuiltIn => Ok(vec![(PathBuf::from(BUILT_IN_NAME), BUILT_IN.to_owned())]),
            Self::Path(path) => read_path(path),
        }
    }

    /// Reads and parses the policy.
    pub fn load(&self) -> Result<Policy, SourceError> {
        let files = self.read()?;
        Policy::from_files(&files).map_err(SourceError::Invalid)
    }
}

/// A path names a directory of policy files or one file. Every file is
/// read with [`host_file::read_text`]: opened without blocking, checked to
/// be a regular file on the open descriptor, read within
/// [`MAX_FILE_BYTES`], UTF-8 checked with a line and column.
fn read_path(path: &Path) -> Result<Vec<(PathBuf, String)>, SourceError> {
    let err = |source| SourceError::Read { path: path.to_owned(), source };
    // `metadata` follows symlinks: a link to a directory is a directory. A
    // dangling path is left to `read_text`, which names it.
    if !std::fs::metadata(path).is_ok_and(|meta| meta.is_dir()) {
        let text = host_file::read_text(path, MAX_FILE_BYTES, WHAT).map_err(SourceError::File)?;
        return Ok(vec![(path.to_owned(), text)]);
    }
    let mut files = Vec::new();
    let mut total: u64 = 0;
    for entry in std::fs::read_dir(path).map_err(err)? {
        let entry_path = entry.map_err(err)?.path();
        if !is_policy_entry(&entry_path)? {
            continue;
        }
        if files.len() == MAX_FILES {
            return Err(SourceError::TooManyFiles { path: path.to_owned(), max: MAX_FILES });
        }
        // Whatever the entry is (a symlink to a regular file is fine), it
        // must read as a regular file, or the whole policy is refused.
        let text = host_file::read_text(&entry_path, MAX_FILE_BYTES, WHAT).map_err(SourceError::File)?;
        total = total.saturating_add(text.len() as u64);
        if total > MAX_TOTAL_BYTES {
            return Err(SourceError::TooLarge { path: path.to_owned(), max: MAX_TOTAL_BYTES });
        }
        files.push((entry_path, text));
    }
    Ok(ward_policy::order_files(files))
}

/// Whether a directory entry is a policy file by its name: the rule
/// `order_files` applies (`*.toml`, not hidden), on the name's bytes, so a
/// `*.toml` entry whose name is not UTF-8 is refused rather than skipped.
fn is_policy_entry(path: &Path) -> Result<bool, SourceError> {
    let Some(name) = path.file_name() else { return Ok(false) };
    let bytes = name.as_encoded_bytes();
    if bytes.starts_with(b".") || !bytes.ends_with(b".toml") {
        return Ok(false);
    }
    match name.to_str() {
        Some(_) => Ok(true),
        None => Err(SourceError::NameNotUtf8 { path: path.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-policy-src-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mkfifo(path: &Path) {
        assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    }

    /// The error of reading directory `dir`, which must fail.
    fn refused(dir: &Path) -> String {
        match PolicySource::Path(dir.to_owned()).read() {
            Ok(files) => panic!("read {} files instead of refusing", files.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn built_in_policy_is_valid_and_defines_hello_and_the_app_template() {
        let policy = PolicySource::BuiltIn.load().unwrap();
        assert!(matches!(policy.compartment("hello"), ward_policy::Lookup::Defined(_)));
        assert!(matches!(policy.compartment("anything"), ward_policy::Lookup::AdHoc(_)));
    }

    #[test]
    fn directories_are_read_in_name_order_skipping_other_files() {
        let dir = scratch("order");
        std::fs::write(dir.join("50-b.toml"), "").unwrap();
        std::fs::write(dir.join("00-a.toml"), "").unwrap();
        std::fs::write(dir.join("README"), "not policy").unwrap();
        std::fs::write(dir.join(".hidden.toml"), "x = ").unwrap();
        // Other entries that are not policy files are not looked at.
        mkfifo(&dir.join("notes.fifo"));
        std::fs::create_dir(dir.join("old")).unwrap();
        let files = PolicySource::Path(dir.clone()).read().unwrap();
        let names: Vec<_> = files.iter().map(|(p, _)| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["00-a.toml", "50-b.toml"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_read() {
        let dir = scratch("link-ok");
        std::fs::create_dir(dir.join("policy")).unwrap();
        std::fs::write(dir.join("shared.toml"), "[host]\n").unwrap();
        std::os::unix::fs::symlink(dir.join("shared.toml"), dir.join("policy/10-host.toml")).unwrap();
        let files = PolicySource::Path(dir.join("policy")).read().unwrap();
        assert_eq!(files, [(dir.join("policy/10-host.toml"), "[host]\n".to_owned())]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_toml_entry_that_is_not_a_readable_regular_file_refuses_the_policy() {
        let dir = scratch("entries");
        std::fs::write(dir.join("00-base.toml"), "").unwrap();
        let entry = dir.join("10-deny.toml");

        std::os::unix::fs::symlink(dir.join("moved.toml"), &entry).unwrap();
        let e = refused(&dir);
        assert!(e.contains("10-deny.toml") && e.contains("No such file"), "dangling symlink: {e}");

        std::fs::remove_file(&entry).unwrap();
        std::os::unix::fs::symlink(&entry, &entry).unwrap();
        let e = refused(&dir);
        assert!(e.contains("10-deny.toml") && e.contains("symbolic links"), "symlink loop: {e}");

        std::fs::remove_file(&entry).unwrap();
        mkfifo(&entry);
        let e = refused(&dir);
        assert!(e.contains("10-deny.toml is a FIFO, not a regular file"), "{e}");

        std::fs::remove_file(&entry).unwrap();
        std::fs::create_dir(&entry).unwrap();
        let e = refused(&dir);
        assert!(e.contains("10-deny.toml is a directory, not a regular file"), "{e}");

        std::fs::remove_dir(&entry).unwrap();
        std::os::unix::fs::symlink("/dev/null", &entry).unwrap();
        let e = refused(&dir);
        assert!(e.contains("10-deny.toml is a character device, not a regular file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_toml_entry_whose_name_is_not_utf8_refuses_the_policy() {
        use std::os::unix::ffi::OsStrExt;
        let dir = scratch("name");
        let name = std::ffi::OsStr::from_bytes(b"10-\xff.toml");
        std::fs::write(dir.join(name), "").unwrap();
        let e = refused(&dir);
        assert!(e.contains("its name is not UTF-8"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_utf8_is_refused_with_file_line_and_column() {
        let dir = scratch("utf8");
        std::fs::write(dir.join("00-base.toml"), b"[compartment.mail]\nimage = \"m\xe9l\"\n").unwrap();
        let e = refused(&dir);
        assert!(e.contains("00-base.toml:2:11: the file is not UTF-8 text"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_larger_than_the_cap_are_refused_before_they_are_read() {
        let dir = scratch("large");
        let file = std::fs::File::create(dir.join("00-big.toml")).unwrap();
        // Sparse: nothing is written, and nothing must be read.
        file.set_len(1 << 40).unwrap();
        let e = refused(&dir);
        assert!(e.contains("00-big.toml is 1099511627776 bytes, more than the 16777216 bytes allowed"), "{e}");
        let e = PolicySource::Path(dir.join("00-big.toml")).read().unwrap_err().to_string();
        assert!(e.contains("more than the 16777216 bytes allowed for a policy file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_number_of_files_and_their_total_size_are_capped() {
        let dir = scratch("many");
        for i in 0..=MAX_FILES {
            std::fs::write(dir.join(format!("{i:04}.toml")), "").unwrap();
        }
        assert!(refused(&dir).contains("more than 1024 policy files"));
        std::fs::remove_dir_all(&dir).unwrap();

        let dir = scratch("total");
        // Five files of 15 MiB (of comments) each: every file is within its
        // cap, but not all of them together.
        let text = format!("{}\n", "#".repeat(15 << 20));
        for i in 0..5 {
            std::fs::write(dir.join(format!("{i}.toml")), &text).unwrap();
        }
        assert!(refused(&dir).contains("its files hold more than 67108864 bytes"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_fifo_named_as_the_policy_is_refused_at_once() {
        let dir = scratch("fifo");
        mkfifo(&dir.join("policy.toml"));
        let e = PolicySource::Path(dir.join("policy.toml")).read().unwrap_err().to_string();
        assert!(e.contains("policy.toml is a FIFO, not a regular file"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_path_is_a_read_error_naming_it() {
        let e = PolicySource::Path("/nonexistent/ward.toml".into()).read().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ward.toml"), "{e}");
    }

    #[test]
    fn paths_in_messages_are_escaped() {
        let e = PolicySource::Path("/nonexistent/\u{1b}[2J\u{202e}.toml".into()).read().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/\\u{1b}[2J\\u{202e}.toml") && !e.contains('\u{1b}'), "{e}");
    }
}
