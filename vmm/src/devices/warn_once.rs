//! Logging a guest's misbehaviour once per kind, so a hostile guest cannot
//! flood the host's log by repeating it.

use std::collections::HashSet;

/// Remembers which warnings a device has already logged.
#[derive(Debug, Default)]
pub struct WarnOnce {
    seen: HashSet<&'static str>,
}

impl WarnOnce {
    /// Whether `kind` is new; records it.
    pub fn first(&mut self, kind: &'static str) -> bool {
        self.seen.insert(kind)
    }

    /// Logs `message` at warning level if `kind` has not been logged before.
    pub fn warn(&mut self, kind: &'static str, message: impl FnOnce() -> String) {
        if self.first(kind) {
            log::warn!("{} (further occurrences are not logged)", message());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_reported_once() {
        let mut w = WarnOnce::default();
        assert!(w.first("a"));
        assert!(!w.first("a"));
        assert!(w.first("b"));
    }
}
