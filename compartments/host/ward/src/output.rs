//! How `ward` shows times and durations to a person: local dates, and
//! durations in the largest units that matter (`3d 4h`, `2m 5s`, `340ms`).
//! Scripts read `--json`, which keeps Unix milliseconds.

use chrono::{Local, TimeZone};

/// Unix time `ms` as a local date and time, `2026-12-04 15:04:05.123`.
pub fn local_time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Local.timestamp_millis_opt(ms).single())
        .map_or_else(|| format!("{ms} ms after 1970"), |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
}

/// A duration of `ms` milliseconds, in its two largest units.
pub fn duration_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")];
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut parts = Vec::new();
    let mut left = ms;
    for (size, name) in UNITS {
        if left >= size || !parts.is_empty() {
            parts.push(format!("{}{name}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    // `1h 0m` says no more than `1h`.
    if parts.len() == 2 && parts[1].starts_with('0') {
        parts.pop();
    }
    parts.join(" ")
}

/// How long before `now_ms` the time `at_ms` was: `5m 2s ago`.
pub fn age(at_ms: u64, now_ms: u64) -> String {
    format!("{} ago", duration_ms(now_ms.saturating_sub(at_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_their_two_largest_units() {
        assert_eq!(duration_ms(340), "340ms");
        assert_eq!(duration_ms(5_000), "5s");
        assert_eq!(duration_ms(125_000), "2m 5s");
        assert_eq!(duration_ms(3_600_000), "1h");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000 + 59_000), "3d 4h");
        assert_eq!(age(1_000, 61_000), "1m ago");
    }

    #[test]
    fn times_are_local_dates() {
        let text = local_time(1_764_806_400_123);
        assert_eq!(text.len(), "2025-12-04 00:00:00.123".len(), "{text}");
        assert!(text.starts_with("2025-12-0") && text.ends_with(".123"), "{text}");
    }
}
