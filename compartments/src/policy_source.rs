//! Where the policy comes from, and reading it.
//!
//! In order: `--policy PATH`, the `WARD_POLICY` environment variable,
//! `$XDG_CONFIG_HOME/ward/policy` (or `~/.config/ward/policy`) if it exists,
//! else the built-in policy (`compartments/default-policy.toml`). A path may
//! be one TOML file or a directory of them (see docs/POLICY.md for the
//! order). `ward-policy` does no I/O: this module reads the files.

use std::path::{Path, PathBuf};

use ward_policy::{Policy, PolicyErrors};

/// The built-in policy's text.
pub const BUILT_IN: &str = include_str!("../default-policy.toml");
/// How the built-in policy is named in messages.
pub const BUILT_IN_NAME: &str = "(built-in policy)";

/// Reading the policy failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or directory could not be read.
    #[error("cannot read policy {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
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

    /// How to name it in messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Path(path) => path.display().to_string(),
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

fn read_path(path: &Path) -> Result<Vec<(PathBuf, String)>, SourceError> {
    let err = |source| SourceError::Read { path: path.to_owned(), source };
    if !path.is_dir() {
        return Ok(vec![(path.to_owned(), std::fs::read_to_string(path).map_err(err)?)]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(err)? {
        let entry_path = entry.map_err(err)?.path();
        let name = entry_path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // The same rule `order_files` applies: `*.toml`, not hidden.
        if entry_path.is_file() && name.ends_with(".toml") && !name.starts_with('.') {
            let text = std::fs::read_to_string(&entry_path)
                .map_err(|source| SourceError::Read { path: entry_path.clone(), source })?;
            files.push((entry_path, text));
        }
    }
    Ok(ward_policy::order_files(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_policy_is_valid_and_defines_hello_and_the_app_template() {
        let policy = PolicySource::BuiltIn.load().unwrap();
        assert!(matches!(policy.compartment("hello"), ward_policy::Lookup::Defined(_)));
        assert!(matches!(policy.compartment("anything"), ward_policy::Lookup::AdHoc(_)));
    }

    #[test]
    fn directories_are_read_in_name_order_skipping_other_files() {
        let dir = std::env::temp_dir().join(format!("ward-policy-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("50-b.toml"), "").unwrap();
        std::fs::write(dir.join("00-a.toml"), "").unwrap();
        std::fs::write(dir.join("README"), "not policy").unwrap();
        std::fs::write(dir.join(".hidden.toml"), "x = ").unwrap();
        let files = PolicySource::Path(dir.clone()).read().unwrap();
        let names: Vec<_> = files.iter().map(|(p, _)| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["00-a.toml", "50-b.toml"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_path_is_a_read_error_naming_it() {
        let e = PolicySource::Path("/nonexistent/ward.toml".into()).read().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ward.toml"), "{e}");
    }
}
