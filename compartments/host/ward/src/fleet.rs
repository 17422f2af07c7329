//! `ward bench fleet`: what many idle compartments cost, through `wardd`.
//!
//! For each fleet size it creates that many ad-hoc compartments of the
//! `idle` image, starts them one after another, and measures for each the
//! time from the start request to its first console line. When all sleep,
//! it reads each VMM's resident memory and the host's `MemAvailable` drop
//! (which also counts what KVM holds in the kernel for them: page tables,
//! vCPU state). Then it stops and removes them.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::BenchFleetArgs;
use crate::daemon::client::Client;
use crate::daemon::proto::{CreateArgs, LogsArgs, Reply, Request};
use crate::manage::{ManageError, simple};

/// `MemAvailable` from /proc/meminfo, KiB.
fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds from asking `name` to start to its first console line.
fn start_and_time(socket: &Path, name: &str) -> Result<f64, ManageError> {
    let start = Instant::now();
    simple(socket, &Request::Start { name: name.to_owned() })?;
    loop {
        let mut client = Client::connect(socket)?;
        if let Reply::Log { text, .. } = client.request(&Request::Logs(LogsArgs::console(name)))?
            && text.contains('\n')
        {
            return Ok(start.elapsed().as_secs_f64() * 1e3);
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(ManageError::Refused(format!("{name} printed nothing in 30 s")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_all_asleep(socket: &Path, names: &[String]) -> Result<(), ManageError> {
    for name in names {
        let start = Instant::now();
        loop {
            let text = match Client::connect(socket)?.request(&Request::Logs(LogsArgs::console(name)))? {
                Reply::Log { text, .. } => text,
                _ => String::new(),
            };
            if text.contains("sleeper: sleeping") {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(ManageError::Refused(format!("{name} never went to sleep")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The `p`-th percentile (0 to 100) of sorted samples, by nearest rank.
fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank, in integers: p percent of the way through the samples.
    let last = sorted.len() - 1;
    let rank = (last * p.min(100) + 50) / 100;
    sorted[rank.min(last)]
}

/// Runs the fleet benchmark against the daemon at `socket`.
pub fn fleet(socket: &Path, args: &BenchFleetArgs) -> Result<String, ManageError> {
    let mut report = format!(
        "ward bench fleet: idle compartments of {} MiB (image idle), started one by one through wardd\n\
         {:>6} {:>14} {:>14} {:>16} {:>20}\n",
        args.memory, "count", "start median", "start p99", "VMM RSS each", "host memory each"
    );
    for (wave, &count) in args.sizes.iter().enumerate() {
        let names: Vec<String> = (0..count).map(|i| format!("bench-fleet-{wave}-{i}")).collect();
        let before = mem_available_kib();
        let mut times = Vec::with_capacity(count);
        let mut progress = crate::progress::Progress::new(&format!("wave {}: starting", wave + 1), count);
        for name in &names {
            let create = Request::Create(CreateArgs {
                image: Some("idle".into()),
                memory_mib: Some(args.memory),
                ..CreateArgs::from_policy(name)
            });
            simple(socket, &create)?;
            times.push(start_and_time(socket, name)?);
            progress.step(name);
        }
        drop(progress);
        wait_all_asleep(socket, &names)?;
        std::thread::sleep(Duration::from_millis(500));
        let after = mem_available_kib();
        let rss: u64 = match Client::connect(socket)?.request(&Request::List {})? {
            Reply::List { compartments, .. } => {
                compartments.iter().filter(|s| names.contains(&s.name)).filter_map(|s| s.usage.rss_kib).sum()
            }
            _ => 0,
        };
        for name in &names {
            simple(socket, &Request::Kill { name: name.clone() })?;
            simple(socket, &Request::Remove { name: name.clone() })?;
        }
        times.sort_by(f64::total_cmp);
        let n = count.max(1) as u64;
        report.push_str(&format!(
            "{count:>6} {:>11.1} ms {:>11.1} ms {:>12} KiB {:>16} KiB\n",
            percentile(&times, 50),
            percentile(&times, 99),
            rss / n,
            before.saturating_sub(after) / n
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_samples() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), 51.0);
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&[7.0], 99), 7.0);
        assert_eq!(percentile(&[], 50), 0.0);
    }
}
