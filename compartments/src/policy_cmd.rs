//! `ward policy`: check, show, explain and diff, on the policy in use or on
//! the files named. The logic is `ward-policy`'s; this is the command line.

use std::path::Path;

use crate::cli::PolicyCommand;
use crate::policy_source::{PolicySource, SourceError};

/// What a `ward policy` command printed, and whether it succeeded.
#[derive(Debug)]
pub struct Report {
    /// For stdout.
    pub text: String,
    /// Exit successfully.
    pub ok: bool,
}

/// A `ward policy` command failed before it could report.
#[derive(Debug, thiserror::Error)]
pub enum PolicyCommandError {
    /// A policy could not be read or has errors.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The query is not valid (bad name or service call).
    #[error(transparent)]
    Query(#[from] ward_policy::QueryError),
}

/// Runs `command` with `policy` (the `--policy` argument, if any).
pub fn run(command: &PolicyCommand, policy: Option<&Path>) -> Result<Report, PolicyCommandError> {
    match command {
        PolicyCommand::Check { path } => {
            let source = PolicySource::resolve(path.as_deref().or(policy));
            let files = source.read()?;
            let result = ward_policy::check(&files);
            Ok(Report { ok: result.is_ok(), text: ward_policy::render_check(&result) })
        }
        PolicyCommand::Show => {
            let policy = PolicySource::resolve(policy).load()?;
            Ok(Report { ok: true, text: ward_policy::show(&policy) })
        }
        PolicyCommand::Explain { from, to, service } => {
            let policy = PolicySource::resolve(policy).load()?;
            let explanation = ward_policy::explain(&policy, from, to, service)?;
            Ok(Report { ok: true, text: ward_policy::render_explanation(&explanation) })
        }
        PolicyCommand::Diff { old, new } => {
            let old = PolicySource::Path(old.clone()).load()?;
            let new = PolicySource::Path(new.clone()).load()?;
            Ok(Report { ok: true, text: ward_policy::render_diff(&ward_policy::diff(&old, &new)) })
        }
    }
}
