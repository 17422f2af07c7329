//! `ward bench`: measurements behind docs/BENCHMARKS.md.
//!
//! Boot figures come from separate `ward run --timing` processes, so each
//! run pays what a user pays: process start, KVM open, VM creation, boot.
//! Disk figures come from the `diskbench` guest program through `ward run
//! --disk`, next to this process doing the same I/O on the same file.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{BenchBootArgs, BenchDiskArgs};

/// A benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// This program's own path is unknown.
    #[error("cannot find the ward binary to run: {0}")]
    CurrentExe(std::io::Error),
    /// A child `ward run` could not start.
    #[error("cannot start `ward run`: {0}")]
    Spawn(std::io::Error),
    /// A child `ward run` failed.
    #[error("run {run} of `ward run` failed ({status}): {stderr}")]
    RunFailed {
        /// Which run.
        run: usize,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// A child's timing report lacked a milestone.
    #[error("run {run}: no {milestone:?} in the timing report")]
    MissingMilestone {
        /// Which run.
        run: usize,
        /// Which milestone.
        milestone: &'static str,
    },
    /// No runs were asked for.
    #[error("--runs must be at least 1")]
    NoRuns,
    /// The disk file is too small for one 1 MiB request.
    #[error("--size must be at least 1 MiB")]
    DiskTooSmall,
    /// The disk file could not be made or used by the host side.
    #[error("disk file {path}: {source}")]
    DiskFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guest program's report lacked a figure.
    #[error("diskbench printed no {what} figure for {request_kib} KiB requests; its output was:\n{output}")]
    MissingDiskFigure {
        /// "read" or "write".
        what: &'static str,
        /// Request size.
        request_kib: usize,
        /// What it printed.
        output: String,
    },
}

/// The milestones of `ward run --timing`, in order.
pub const MILESTONES: [&str; 5] =
    ["VM created", "first guest instruction", "first console line", "first program output", "power-off"];

/// Runs the boot benchmark and returns its report.
pub fn boot(args: &BenchBootArgs) -> Result<String, BenchError> {
    if args.runs == 0 {
        return Err(BenchError::NoRuns);
    }
    let exe = std::env::current_exe().map_err(BenchError::CurrentExe)?;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(args.runs); MILESTONES.len()];
    let mut progress = crate::progress::Progress::new("boot", args.runs);
    for run in 1..=args.runs {
        let out = Command::new(&exe)
            .args(["run", "--timing", "--memory", &args.memory.to_string(), "bench"])
            .output()
            .map_err(BenchError::Spawn)?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(BenchError::RunFailed { run, status: out.status, stderr });
        }
        for (i, milestone) in MILESTONES.iter().enumerate() {
            let value = parse_milestone(&stderr, milestone).ok_or(BenchError::MissingMilestone { run, milestone })?;
            samples[i].push(value);
        }
        progress.step("");
    }
    drop(progress);
    let mut report = format!(
        "ward bench boot: {} runs of `ward run --timing --memory {} bench` (host clock, from process start)\n",
        args.runs, args.memory
    );
    report.push_str(&format!("  {:<24} {:>10} {:>10} {:>10}\n", "milestone", "median", "min", "max"));
    for (milestone, values) in MILESTONES.iter().zip(&mut samples) {
        values.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let (Some(min), Some(max)) = (values.first(), values.last()) else {
            continue;
        };
        report.push_str(&format!("  {milestone:<24} {:>10} {:>10} {:>10}\n", ms(median(values)), ms(*min), ms(*max)));
    }
    Ok(report)
}

/// The request sizes `diskbench` measures, in bytes (the guest program and
/// the host side must agree).
pub const DISK_REQUESTS: [usize; 2] = [64 * 1024, 1024 * 1024];

/// One throughput figure: bytes moved and the time it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Throughput {
    /// MiB per second.
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / f64::from(1u32 << 20) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Removes the benchmark's disk file however the benchmark ends.
struct TempDisk(PathBuf);

impl Drop for TempDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the disk benchmark and returns its report.
pub fn disk(args: &BenchDiskArgs) -> Result<String, BenchError> {
    if args.size == 0 {
        return Err(BenchError::DiskTooSmall);
    }
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let disk = TempDisk(dir.join(format!("ward-bench-disk-{}.img", std::process::id())));
    let file_error = |source| BenchError::DiskFile { path: disk.0.clone(), source };
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&disk.0).map_err(file_error)?;
    file.set_len(args.size << 20).map_err(file_error)?;

    // The guest first, on a fresh (sparse) file, as a user's new disk is.
    let exe = std::env::current_exe().map_err(BenchError::CurrentExe)?;
    let out = Command::new(&exe)
        .args(["run", "--foreground", "bench-disk", "--image", "diskbench", "--disk"])
        .arg(&disk.0)
        .output()
        .map_err(BenchError::Spawn)?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = format!("{output}{}", String::from_utf8_lossy(&out.stderr));
        return Err(BenchError::RunFailed { run: 1, status: out.status, stderr });
    }

    let mut report = format!(
        "ward bench disk: {} MiB file in {}, sequential, written then flushed then read back\n",
        args.size,
        dir.display()
    );
    report.push_str(&format!("  {:<18} {:>14} {:>14} {:>8}\n", "request", "guest (MiB/s)", "host (MiB/s)", "ratio"));
    for request in DISK_REQUESTS {
        let [host_write, host_read] = host_pass(&file, request).map_err(file_error)?;
        for (what, host) in [("write", host_write), ("read", host_read)] {
            let guest = parse_diskbench(&output, what, request).ok_or_else(|| BenchError::MissingDiskFigure {
                what,
                request_kib: request / 1024,
                output: output.clone(),
            })?;
            report.push_str(&format!(
                "  {:<18} {:>14.1} {:>14.1} {:>8}\n",
                format!("{} KiB {what}", request / 1024),
                guest.mib_s(),
                host.mib_s(),
                format!("{}x", two_significant(guest.mib_s() / host.mib_s().max(1e-9)))
            ));
        }
    }
    if let Some(line) = output.lines().find_map(|l| l.trim().strip_prefix("diskbench: 512-byte read round trip: ")) {
        report.push_str(&format!("  one 512-byte guest read, round trip: {line}\n"));
    }
    Ok(report)
}

/// `x` with at least two significant digits (and two decimals): ratios
/// far below one stay readable (0.0021, not 0.00).
fn two_significant(x: f64) -> String {
    let (mut decimals, mut threshold) = (2usize, 0.1);
    while x > 0.0 && x < threshold && decimals < 9 {
        decimals += 1;
        threshold /= 10.0;
    }
    format!("{x:.decimals$}")
}

/// The host side: what `diskbench` does with one request size, with
/// `pwrite`/`pread` on the same file, flushing (`fdatasync`) after the
/// writes as the guest's flush does.
fn host_pass(file: &std::fs::File, request: usize) -> std::io::Result<[Throughput; 2]> {
    let total = file.metadata()?.len();
    let mut buf = vec![0x5au8; request];
    let mut pass = |write: bool| -> std::io::Result<Throughput> {
        let start = Instant::now();
        let mut at = 0u64;
        while at + request as u64 <= total {
            if write {
                file.write_all_at(&buf, at)?;
            } else {
                file.read_exact_at(&mut buf, at)?;
            }
            at += request as u64;
        }
        if write {
            file.sync_data()?;
        }
        Ok(Throughput { bytes: at, elapsed: start.elapsed() })
    };
    Ok([pass(true)?, pass(false)?])
}

/// The figure `diskbench` printed for `what` ("read" or "write") with
/// `request`-byte requests, from a line like
/// `diskbench: write 64 KiB requests: 1024 MiB in 4711 ms: 217 MiB/s`.
pub fn parse_diskbench(output: &str, what: &str, request: usize) -> Option<Throughput> {
    let prefix = format!("diskbench: {what} {} KiB requests: ", request / 1024);
    let rest = output.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str()))?;
    let (mib, rest) = rest.split_once(" MiB in ")?;
    let (ms, _) = rest.split_once(" ms")?;
    Some(Throughput {
        bytes: mib.trim().parse::<u64>().ok()? << 20,
        elapsed: Duration::from_millis(ms.trim().parse().ok()?),
    })
}

/// The median of sorted, non-empty `values` (mean of the middle two for an
/// even count).
pub fn median(values: &[Duration]) -> Duration {
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// The time of `milestone` in a `--timing` report.
pub fn parse_milestone(report: &str, milestone: &str) -> Option<Duration> {
    let line = report.lines().find(|l| l.trim_start().starts_with(milestone))?;
    let value = line.trim_start()[milestone.len()..].trim().strip_suffix(" ms")?;
    let ms: f64 = value.trim().parse().ok()?;
    Some(Duration::from_secs_f64(ms / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let d = Duration::from_millis;
        assert_eq!(median(&[d(1), d(5), d(9)]), d(5));
        assert_eq!(median(&[d(1), d(3), d(5), d(100)]), d(4));
    }

    #[test]
    fn diskbench_lines_parse_to_throughput() {
        let out = "booting\ndiskbench: write 64 KiB requests: 1024 MiB in 2048 ms: 500 MiB/s\n\
                   diskbench: read 1024 KiB requests: 16 MiB in 100 ms: 160 MiB/s\n";
        let write = parse_diskbench(out, "write", 64 * 1024).unwrap();
        assert_eq!(write, Throughput { bytes: 1 << 30, elapsed: Duration::from_millis(2048) });
        assert!((write.mib_s() - 500.0).abs() < 1e-6);
        assert_eq!(parse_diskbench(out, "read", 1 << 20).unwrap().bytes, 16 << 20);
        assert_eq!(parse_diskbench(out, "read", 64 * 1024), None);
    }

    #[test]
    fn small_ratios_keep_two_significant_digits() {
        assert_eq!(two_significant(0.00213), "0.0021");
        assert_eq!(two_significant(0.5), "0.50");
        assert_eq!(two_significant(0.05), "0.050");
        assert_eq!(two_significant(1.234), "1.23");
        assert_eq!(two_significant(0.0), "0.00");
    }

    #[test]
    fn milestones_parse_from_the_timing_report() {
        let report = crate::run::timing_report(&ward_vmm::BootTimings {
            vm_created: Some(Duration::from_micros(6500)),
            first_instruction: Some(Duration::from_micros(7750)),
            first_console_line: None,
            first_user_output: None,
            power_off: Some(Duration::from_millis(12)),
        });
        assert_eq!(parse_milestone(&report, "VM created"), Some(Duration::from_micros(6500)));
        assert_eq!(parse_milestone(&report, "first console line"), None);
        assert_eq!(parse_milestone(&report, "power-off"), Some(Duration::from_millis(12)));
    }
}
