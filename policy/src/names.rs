//! The forms of names: compartments, tags, block volumes, services and
//! service arguments. Each check returns why a name is wrong, in words that
//! complete "... is not valid: ".

use crate::display::QuotedChar;

/// Longest compartment, tag or volume name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 63;

/// Longest service name or argument, in bytes.
pub(crate) const MAX_SERVICE_LEN: usize = 64;

/// Checks a compartment name (also used for tags and block volumes): 1 to 63
/// characters of `a-z`, `0-9` and `-`, not starting or ending with `-`. The
/// same rule as Ward's compartment names elsewhere, so a policy name is
/// always a name a compartment can have.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if let Some((position, found)) =
        name.chars().enumerate().find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("it has {} at position {position}; use a-z, 0-9 and '-'", QuotedChar(found)));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks a service name: 1 to 64 characters of `a-z`, `0-9`, `.`, `_` and
/// `-`, starting and ending with a letter or digit (`sign`, `storage.get`).
pub(crate) fn check_service_name(name: &str) -> Result<(), String> {
    check_word(name, "a service name", |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Checks a service argument: 1 to 64 characters of `A-Z`, `a-z`, `0-9`,
/// `.`, `_` and `-` (the argument in `storage.get+photos`).
pub(crate) fn check_argument(argument: &str) -> Result<(), String> {
    check_word(argument, "a service argument", |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_word(word: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if word.is_empty() {
        return Err(format!("{what} cannot be empty"));
    }
    if let Some((position, found)) = word.chars().enumerate().find(|(_, c)| !allowed(*c)) {
        return Err(format!("{what} cannot have {} (at position {position})", QuotedChar(found)));
    }
    if word.len() > MAX_SERVICE_LEN {
        return Err(format!("{what} is longer than {MAX_SERVICE_LEN} characters"));
    }
    if !word.starts_with(|c: char| c.is_ascii_alphanumeric()) || !word.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{what} must start and end with a letter or digit"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for name in ["mail", "work-mail", "a", "x1", &"a".repeat(63)] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        assert!(check_name("").unwrap_err().contains("empty"));
        assert!(check_name("Mail").unwrap_err().contains("'M' at position 0"));
        assert!(check_name("a_b").unwrap_err().contains("'_'"));
        assert!(check_name("-a").unwrap_err().contains("start and end"));
        assert!(check_name("a-").unwrap_err().contains("start and end"));
        assert!(check_name(&"a".repeat(64)).unwrap_err().contains("longer"));
    }

    #[test]
    fn service_names_allow_dots_and_underscores_inside() {
        assert_eq!(check_service_name("storage.get"), Ok(()));
        assert_eq!(check_service_name("net_peer-2"), Ok(()));
        assert!(check_service_name(".get").is_err());
        assert!(check_service_name("get.").is_err());
        assert!(check_service_name("Get").is_err());
        assert!(check_service_name("a+b").is_err());
        assert!(check_service_name("").is_err());
    }

    #[test]
    fn arguments_allow_upper_case() {
        assert_eq!(check_argument("Photos-2024"), Ok(()));
        assert!(check_argument("a/b").is_err());
        assert!(check_argument("").is_err());
    }
}
