//! What a jail (or a cgroup) applied and what it could not, with the
//! reason: the VMM logs it once at start, so a host that allows less than
//! the full jail says so instead of silently running with less.

use std::fmt;

/// One measure of the jail: applied or not, and a one-line detail (what
/// exactly, or why not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measure {
    /// What, e.g. `network namespace`.
    pub name: &'static str,
    /// Whether it is in place.
    pub applied: bool,
    /// What was applied, or why it was not (the failing call and `errno`).
    pub detail: String,
}

impl Measure {
    /// An applied measure.
    pub(super) fn applied(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, applied: true, detail: detail.into() }
    }

    /// A measure that could not be applied, and why.
    pub(super) fn missing(name: &'static str, reason: impl Into<String>) -> Self {
        Self { name, applied: false, detail: reason.into() }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.applied { "applied" } else { "MISSING" };
        write!(f, "{state:<8} {:<20} {}", self.name, self.detail)
    }
}

/// Everything `enter` did, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JailReport {
    /// The measures, in the order they were taken.
    pub measures: Vec<Measure>,
}

impl JailReport {
    /// Adds a measure.
    pub(super) fn push(&mut self, measure: Measure) {
        self.measures.push(measure);
    }

    /// The measures that could not be applied.
    pub fn missing(&self) -> impl Iterator<Item = &Measure> {
        self.measures.iter().filter(|m| !m.applied)
    }

    /// Whether every measure is in place.
    pub fn is_complete(&self) -> bool {
        self.missing().next().is_none()
    }

    /// The missing measures on one line, e.g. for a log line or an error:
    /// `network namespace (unshare(CLONE_NEWNET) failed: ...); ...`.
    pub fn missing_summary(&self) -> String {
        let parts: Vec<String> = self.missing().map(|m| format!("{} ({})", m.name, m.detail)).collect();
        parts.join("; ")
    }
}

impl fmt::Display for JailReport {
    /// One line per measure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.measures {
            writeln!(f, "{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_missing_measures_with_their_reason() {
        let mut r = JailReport::default();
        r.push(Measure::applied("mount namespace", "unshare(CLONE_NEWNS)"));
        r.push(Measure::missing("network namespace", "unshare(CLONE_NEWNET) failed: EPERM"));
        assert!(!r.is_complete());
        assert_eq!(r.missing().count(), 1);
        assert_eq!(r.missing_summary(), "network namespace (unshare(CLONE_NEWNET) failed: EPERM)");
        let text = r.to_string();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).is_some_and(|l| l.starts_with("MISSING") && l.contains("EPERM")));
    }

    #[test]
    fn empty_report_is_complete() {
        assert!(JailReport::default().is_complete());
        assert_eq!(JailReport::default().missing_summary(), "");
    }
}
