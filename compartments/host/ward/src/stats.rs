//! `ward stats`: what running compartments use of the host, sampled every
//! interval: CPU (as a share of one core, from the CPU time their VMMs
//! used between two samples), host memory against the guest memory the
//! policy granted, and the bytes their disks read and wrote. On a terminal
//! the table is redrawn in place; piped, each sample follows the last.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::daemon::proto::{State, Status, Usage};
use crate::daemon::state::now_ms;
use crate::manage::{self, ManageError};
use crate::output::bytes;

/// One compartment in one sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Its name.
    pub name: String,
    /// Unix time (ms) of the sample.
    pub at_ms: u64,
    /// Its lifecycle state.
    pub state: State,
    /// CPU its VMM used since the last sample, in percent of one core
    /// (`None` on the first sample of a run).
    pub cpu_percent: Option<f64>,
    /// Guest memory granted, MiB.
    pub memory_mib: u64,
    /// What its VMM uses of the host: memory, CPU time, disk bytes.
    #[serde(flatten)]
    pub usage: Usage,
}

/// What `ward stats` shows and how.
#[derive(Clone, Debug)]
pub struct StatsOptions {
    /// Only these (default: every running compartment).
    pub names: Vec<String>,
    /// One sample, then done.
    pub once: bool,
    /// JSON lines instead of a table.
    pub json: bool,
    /// Time between samples.
    pub interval: Duration,
}

/// Samples and prints until interrupted (or once); ends with an error if
/// wardd goes away or a named compartment does not exist.
pub fn stats(socket: &Path, options: &StatsOptions, out: &mut dyn Write) -> Result<(), ManageError> {
    let redraw = !options.json && std::io::stdout().is_terminal();
    let mut before = (Instant::now(), chosen(socket, &options.names)?);
    loop {
        std::thread::sleep(options.interval);
        let now = (Instant::now(), chosen(socket, &options.names)?);
        let elapsed = now.0.duration_since(before.0);
        let samples: Vec<Sample> =
            now.1.iter().map(|s| sample(s, before.1.iter().find(|b| b.name == s.name), elapsed)).collect();
        let text = if options.json {
            samples.iter().map(|s| serde_json::to_string(s).unwrap_or_default() + "\n").collect()
        } else {
            render(&samples)
        };
        let written = if redraw { write!(out, "\x1b[H\x1b[2J{text}") } else { write!(out, "{text}") };
        // Whoever reads our output went away: done.
        if written.and_then(|()| out.flush()).is_err() || options.once {
            return Ok(());
        }
        before = now;
    }
}

/// The compartments to sample: those named, else every running one.
fn chosen(socket: &Path, names: &[String]) -> Result<Vec<Status>, ManageError> {
    let all = manage::statuses(socket)?;
    if names.is_empty() {
        return Ok(all.into_iter().filter(|s| s.state == State::Running).collect());
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|s| &s.name == n)
                .cloned()
                .ok_or_else(|| ManageError::Refused(format!("no compartment {n}")))
        })
        .collect()
}

/// `now`, and its CPU share since `before` (the same run's: the same pid).
fn sample(now: &Status, before: Option<&Status>, elapsed: Duration) -> Sample {
    let cpu_percent = before.filter(|b| b.pid.is_some() && b.pid == now.pid).and_then(|b| {
        let used = now.usage.cpu_ms?.checked_sub(b.usage.cpu_ms?)?;
        let wall = elapsed.as_secs_f64() * 1e3;
        (wall > 0.0).then(|| used as f64 * 100.0 / wall)
    });
    Sample {
        name: now.name.clone(),
        at_ms: now_ms(),
        state: now.state,
        cpu_percent,
        memory_mib: now.memory_mib,
        usage: now.usage,
    }
}

/// The table for a person.
fn render(samples: &[Sample]) -> String {
    let dash = || "-".to_owned();
    let mut out = format!(
        "{:<20} {:<8} {:>7} {:>10} {:>10} {:>6} {:>10} {:>10}\n",
        "NAME", "STATE", "CPU %", "HOST MEM", "GUEST MEM", "MEM %", "DISK READ", "DISK WRITE"
    );
    for s in samples {
        let mem_percent = s.usage.rss_kib.map(|r| r as f64 * 100.0 / (s.memory_mib.max(1) as f64 * 1024.0));
        out.push_str(&format!(
            "{:<20} {:<8} {:>7} {:>10} {:>10} {:>6} {:>10} {:>10}\n",
            s.name,
            s.state.as_str(),
            s.cpu_percent.map_or_else(dash, |c| format!("{c:.1}")),
            s.usage.rss_kib.map_or_else(dash, |r| bytes(r.saturating_mul(1024))),
            bytes(s.memory_mib.saturating_mul(1 << 20)),
            mem_percent.map_or_else(dash, |m| format!("{m:.0}")),
            s.usage.disk_read_bytes.map_or_else(dash, bytes),
            s.usage.disk_written_bytes.map_or_else(dash, bytes),
        ));
    }
    if samples.is_empty() {
        out.push_str("no compartment is running\n");
    }
    out
}
