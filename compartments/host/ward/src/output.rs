//! How `ward` shows times, durations and sizes to a person: local dates,
//! durations in the largest units that matter (`3d 4h`, `2m 5s`, `340ms`),
//! sizes in binary units (`24.0 MiB`).
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

/// A size in bytes in its largest binary unit: `512 B`, `1.5 KiB`, `24.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A `--since` of `ward logs`: a duration before `now_ms` (`90s`, `10m`,
/// `1h30m`, `2d`), a date and time (RFC 3339, `2026-12-04T21:00:00Z`; or
/// local, `2026-12-04 21:00` with optional seconds), or a local date
/// (`2026-12-04`, from midnight). Returns Unix ms.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Some(ms) = parse_duration_ms(text) {
        return Ok(now_ms.saturating_sub(ms));
    }
    let local = |naive: chrono::NaiveDateTime| Local.from_local_datetime(&naive).earliest();
    let at = chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
        .or_else(|| {
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
                })
                .and_then(local)
                .map(|t| t.timestamp_millis())
        })
        .ok_or_else(|| {
            format!("--since {text:?}: not a duration (10m, 1h30m) nor a date and time (2026-12-04 21:00, RFC 3339)")
        })?;
    u64::try_from(at).map_err(|_| format!("--since {text:?}: before 1970"))
}

/// `90s`, `10m`, `1h30m`, `2d`, `500ms`: a sum of numbers with units.
fn parse_duration_ms(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(unit)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_their_largest_binary_unit() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(24 << 20), "24.0 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn since_takes_durations_and_dates() {
        let now = 1_764_806_400_000;
        assert_eq!(parse_since("10m", now), Ok(now - 600_000));
        assert_eq!(parse_since("1h30m", now), Ok(now - 5_400_000));
        assert_eq!(parse_since("2025-12-04T00:00:00Z", now), Ok(1_764_806_400_000));
        assert_eq!(parse_since("2025-12-04T01:00:00+01:00", now), Ok(1_764_806_400_000));
        let local = parse_since("2025-12-04 00:00", now).unwrap();
        assert_eq!(local_time(local), "2025-12-04 00:00:00.000");
        assert_eq!(parse_since("2025-12-04", now), Ok(local));
        for bad in ["", "10", "5 minutes", "yesterday", "2025-13-01", "99999999999999999999d"] {
            assert!(parse_since(bad, now).is_err(), "{bad:?} was taken");
        }
    }

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
