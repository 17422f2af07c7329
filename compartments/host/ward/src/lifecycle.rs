//! The lifecycle verbs of `ward` over one or many compartments: `start`,
//! `stop`, `restart`, `kill`, `rm` (by name or `--all`) and `wait`.
//!
//! Each compartment is handled on its own, as docker does: a failure is
//! reported with the compartment's name and the others go on; the command
//! exits 1 if any failed. A verb with nothing to do (a stop of a stopped
//! compartment, a start of a running one) is not a failure: wardd says so
//! and `ward` prints it as a note on standard error.

use std::path::Path;
use std::process::ExitCode;

use ward_policy::display::escape;

use crate::cli::Selection;
use crate::daemon::proto::{Request, Status};
use crate::manage::{self, ManageError};
use crate::progress::Progress;

/// What to do to each compartment.
#[derive(Clone, Copy, Debug)]
pub enum Verb {
    /// Start it.
    Start,
    /// Stop it, killing its VMM after the timeout.
    Stop {
        /// Seconds the guest has.
        timeout_s: u64,
    },
    /// Stop it if it runs, then start it.
    Restart {
        /// Seconds the guest has to stop.
        timeout_s: u64,
    },
    /// Kill its VMM.
    Kill,
    /// Forget it; with `force`, kill it first.
    Remove {
        /// Kill a running one first.
        force: bool,
    },
}

/// How many compartments are stopped at once (each stop may wait its
/// whole timeout for a guest).
const AT_ONCE: usize = 16;

impl Verb {
    /// Whether `--all` takes a compartment in `status`.
    fn takes(self, status: &Status) -> bool {
        let active = status.state.is_active();
        match self {
            Self::Start => !active,
            Self::Stop { .. } | Self::Kill | Self::Restart { .. } => active,
            Self::Remove { force } => force || !active,
        }
    }

    /// What it is doing, for the progress line.
    fn doing(self) -> &'static str {
        match self {
            Self::Start => "starting",
            Self::Stop { .. } => "stopping",
            Self::Restart { .. } => "restarting",
            Self::Kill => "killing",
            Self::Remove { .. } => "removing",
        }
    }

    /// Does it to `name`; `Ok(Some(note))` when nothing needed doing.
    fn apply(self, socket: &Path, name: &str) -> Result<Option<String>, ManageError> {
        let name = name.to_owned();
        let stop =
            |timeout_s: u64| Request::Stop { name: name.clone(), timeout_ms: Some(timeout_s.saturating_mul(1000)) };
        match self {
            Self::Start => manage::noted(socket, &Request::Start { name }),
            Self::Stop { timeout_s } => manage::noted(socket, &stop(timeout_s)),
            Self::Restart { timeout_s } => {
                // A compartment that was not running is started: the
                // stop's note is not worth printing.
                manage::noted(socket, &stop(timeout_s))?;
                manage::noted(socket, &Request::Start { name })
            }
            Self::Kill => manage::noted(socket, &Request::Kill { name }),
            Self::Remove { force } => {
                if force {
                    manage::noted(socket, &Request::Kill { name: name.clone() })?;
                }
                manage::noted(socket, &Request::Remove { name })
            }
        }
    }
}

/// Does `verb` to the compartments `which` names, or to all it applies to.
pub fn each(socket: &Path, which: &Selection, verb: Verb) -> ExitCode {
    let names: Vec<String> = if which.all {
        match manage::statuses(socket) {
            Ok(list) => list.iter().filter(|s| verb.takes(s)).map(|s| s.name.clone()).collect(),
            Err(e) => return fail(None, &e),
        }
    } else {
        which.names.clone()
    };
    let mut failed = false;
    let mut progress = Progress::new(verb.doing(), names.len());
    for batch in names.chunks(AT_ONCE) {
        std::thread::scope(|s| {
            // Each is reported as it finishes, so the progress line moves.
            let (done, finished) = std::sync::mpsc::channel();
            let threads: Vec<_> = batch
                .iter()
                .map(|name| {
                    let done = done.clone();
                    s.spawn(move || done.send((name, verb.apply(socket, name))))
                })
                .collect();
            drop(done);
            for (name, result) in finished {
                progress.clear();
                match result {
                    Ok(None) => {}
                    Ok(Some(note)) => eprintln!("ward: {}", escape(&note)),
                    Err(e) => {
                        fail(Some(name), &e);
                        failed = true;
                    }
                }
                progress.step(name);
            }
            for thread in threads {
                if thread.join().is_err() {
                    eprintln!("ward: error: a request failed");
                    failed = true;
                }
            }
        });
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The exit code `ward wait` gives for a run whose code is not known.
pub const UNKNOWN_EXIT: u8 = 125;

/// `ward wait`: each compartment's exit code once its run has ended, a
/// line each; exits with the last one's.
pub fn wait(socket: &Path, names: &[String]) -> ExitCode {
    let mut last = ExitCode::SUCCESS;
    for name in names {
        match manage::wait(socket, name) {
            Ok(Some(code)) => {
                println!("{code}");
                last = ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
            }
            Ok(None) => {
                println!("unknown");
                last = ExitCode::from(UNKNOWN_EXIT);
            }
            Err(e) => last = fail(Some(name), &e),
        }
    }
    last
}

/// Reports an error (about compartment `name`, when the message does not
/// name it) and fails.
fn fail(name: Option<&str>, e: &ManageError) -> ExitCode {
    let message = e.to_string();
    match name {
        Some(name) if !message.contains(name) => eprintln!("ward: error: {}: {}", escape(name), escape(&message)),
        _ => eprintln!("ward: error: {}", escape(&message)),
    }
    ExitCode::FAILURE
}
