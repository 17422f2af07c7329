//! What a compartment's VMM uses of the host now, from `/proc`: its
//! memory, its CPU time, and the bytes its disks read from and wrote to
//! storage (what `ward ls`, `ward inspect` and `ward stats` show).

use serde::{Deserialize, Serialize};

/// A VMM's use of the host: the process wardd watches and, when jailed,
/// the VMM itself, its child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Host memory (RSS), KiB.
    pub rss_kib: Option<u64>,
    /// CPU time, ms.
    pub cpu_ms: Option<u64>,
    /// Bytes read from storage (its disks; the page cache's hits are not
    /// counted).
    #[serde(default)]
    pub disk_read_bytes: Option<u64>,
    /// Bytes written towards storage (its disks).
    #[serde(default)]
    pub disk_written_bytes: Option<u64>,
}

impl Usage {
    /// The sum of the VMM process `pid` and its children.
    pub fn of_vmm(pid: u32) -> Self {
        vmm_pids(pid).into_iter().map(of_process).reduce(Self::plus).unwrap_or_default()
    }

    fn plus(self, other: Self) -> Self {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), b) => Some(a.saturating_add(b.unwrap_or(0))),
            (None, b) => b,
        };
        Self {
            rss_kib: add(self.rss_kib, other.rss_kib),
            cpu_ms: add(self.cpu_ms, other.cpu_ms),
            disk_read_bytes: add(self.disk_read_bytes, other.disk_read_bytes),
            disk_written_bytes: add(self.disk_written_bytes, other.disk_written_bytes),
        }
    }
}

/// `pid`, then its children (a jailed VMM's waiter has one: the VMM).
pub fn vmm_pids(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid).chain(children.split_whitespace().filter_map(|c| c.parse().ok())).collect()
}

/// One process's use, from `/proc/PID/{status,stat,io}`.
fn of_process(pid: u32) -> Usage {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok();
    let field = |text: &str, key: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
    };
    let status = read("status");
    let io = read("io");
    let cpu_ms = read("stat").and_then(|s| {
        // The fields after the command name, which may hold spaces.
        let rest = s.get(s.rfind(')')? + 2..)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let hz = ward_sandbox::process::clock_ticks_per_second()?;
        Some(ticks * 1000 / hz)
    });
    Usage {
        rss_kib: status.as_deref().and_then(|s| field(s, "VmRSS:")),
        cpu_ms,
        disk_read_bytes: io.as_deref().and_then(|s| field(s, "read_bytes:")),
        disk_written_bytes: io.as_deref().and_then(|s| field(s, "write_bytes:")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_process_that_writes_a_file_shows_its_bytes_and_its_memory() {
        let me = std::process::id();
        let before = Usage::of_vmm(me);
        let path = std::env::temp_dir().join(format!("ward-usage-{me}"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 4 << 20]).unwrap();
        f.sync_all().unwrap();
        let after = Usage::of_vmm(me);
        std::fs::remove_file(&path).unwrap();
        assert!(after.rss_kib.unwrap() > 1024, "{after:?}");
        assert!(after.cpu_ms.is_some(), "{after:?}");
        let written = after.disk_written_bytes.unwrap() - before.disk_written_bytes.unwrap();
        assert!(written >= 4 << 20, "{written} bytes counted of 4 MiB: {before:?} {after:?}");
    }

    #[test]
    fn a_process_that_is_gone_uses_nothing() {
        assert_eq!(of_process(u32::MAX), Usage::default());
    }
}
