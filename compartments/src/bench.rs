//! `ward bench`: measurements behind docs/BENCHMARKS.md.
//!
//! Boot figures come from separate `ward run --timing` processes, so each
//! run pays what a user pays: process start, KVM open, VM creation, boot.

use std::process::Command;
use std::time::Duration;

use crate::cli::BenchBootArgs;

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
    }
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
