//! Compartment names.
//!
//! A name appears in paths, process titles, logs and the policy, so it is
//! kept to a small, unambiguous alphabet.

use std::fmt;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// A valid compartment name: 1 to 63 characters of `a-z`, `0-9` and `-`,
/// starting with a letter or digit and not ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompartmentName(String);

/// Why a name is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Empty.
    #[error("a compartment name cannot be empty")]
    Empty,
    /// Too long.
    #[error("compartment name {0:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// A character outside the alphabet.
    #[error("compartment name {name:?} has {found:?} at position {position}; use a-z, 0-9 and '-'")]
    BadCharacter {
        /// The name.
        name: String,
        /// The character.
        found: char,
        /// Its position (0-based, in characters).
        position: usize,
    },
    /// Starts or ends with `-`.
    #[error("compartment name {0:?} must start and end with a letter or digit")]
    BadEdge(String),
    /// A name Ward uses itself.
    #[error("the name {name:?} is reserved for {owner}; choose another")]
    Reserved {
        /// The name.
        name: String,
        /// What has it.
        owner: &'static str,
    },
}

/// Names no compartment may have, and what has each: the host in rules
/// (`to = "host"`), and the IPC router among each daemon's cgroups.
pub const RESERVED: [(&str, &str); 2] =
    [(ward_policy::HOST, "the host's services"), (crate::daemon::ipc::ROUTER_CGROUP, "the IPC router")];

impl CompartmentName {
    /// Checks and wraps `name`: its spelling, and that Ward does not use
    /// it itself ([`RESERVED`]).
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_spelling(name)?;
        if let Some((_, owner)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
            return Err(NameError::Reserved { name: name.to_owned(), owner });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` is spelled as a compartment name (reserved names too:
/// the router's cgroup is named like one).
pub fn check_spelling(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some((position, found)) =
        name.chars().enumerate().find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadCharacter { name: name.to_owned(), found, position });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_owned()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::BadEdge(name.to_owned()));
    }
    Ok(())
}

impl fmt::Display for CompartmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CompartmentName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in ["hello", "work-mail", "a", "x1", &"a".repeat(63)] {
            assert_eq!(CompartmentName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        assert_eq!(CompartmentName::new(""), Err(NameError::Empty));
        assert_eq!(
            CompartmentName::new("Hello"),
            Err(NameError::BadCharacter { name: "Hello".into(), found: 'H', position: 0 })
        );
        assert!(matches!(CompartmentName::new("../etc"), Err(NameError::BadCharacter { found: '.', .. })));
        assert!(matches!(CompartmentName::new("a b"), Err(NameError::BadCharacter { found: ' ', position: 1, .. })));
        assert_eq!(CompartmentName::new("-x"), Err(NameError::BadEdge("-x".into())));
        assert_eq!(CompartmentName::new("x-"), Err(NameError::BadEdge("x-".into())));
        assert!(matches!(CompartmentName::new(&"a".repeat(64)), Err(NameError::TooLong(_))));
    }

    #[test]
    fn reserved_names_are_refused_saying_what_has_them() {
        let e = CompartmentName::new("host").unwrap_err();
        assert_eq!(e.to_string(), "the name \"host\" is reserved for the host's services; choose another");
        let e = CompartmentName::new("ward-ipc").unwrap_err();
        assert!(e.to_string().contains("reserved for the IPC router"), "{e}");
        assert!(check_spelling("ward-ipc").is_ok());
    }
}
