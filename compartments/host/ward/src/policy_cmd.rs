//! `ward policy`: check, show, explain and diff, on the policy in use or on
//! the files named. The logic is `ward-policy`'s; this is the command line.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::PolicyCommand;
use crate::policy_source::{PolicySource, SourceError};

/// `ward policy check`: the policy has errors (they are printed).
pub const EXIT_INVALID: u8 = 1;
/// `ward policy diff`: the two policies differ, as `diff(1)` exits.
pub const EXIT_DIFFERENT: u8 = 1;
/// `ward policy diff` could not compare (a policy could not be read, or has
/// errors), as `diff(1)` exits on trouble. The other commands exit 1.
pub const EXIT_DIFF_TROUBLE: u8 = 2;

/// What a `ward policy` command printed, and how it exits.
#[derive(Debug)]
pub struct Report {
    /// For stdout.
    pub text: String,
    /// The exit code: 0, or [`EXIT_INVALID`] (check) or [`EXIT_DIFFERENT`]
    /// (diff).
    pub code: u8,
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

/// The exit code of `command` when it fails before it can report (see
/// [`PolicyCommandError`]): [`EXIT_DIFF_TROUBLE`] for `diff`, 1 otherwise.
pub fn error_code(command: &PolicyCommand) -> u8 {
    match command {
        PolicyCommand::Diff { .. } => EXIT_DIFF_TROUBLE,
        PolicyCommand::Check { .. } | PolicyCommand::Show | PolicyCommand::Explain { .. } => 1,
    }
}

/// Runs `command` as the `ward` binary does: prints its report on stdout,
/// or its error as one `ward: error: ...` line on stderr, and returns the
/// exit code.
pub fn main(command: &PolicyCommand, policy: Option<&Path>) -> ExitCode {
    match run(command, policy) {
        Ok(report) => {
            print!("{}", report.text);
            ExitCode::from(report.code)
        }
        Err(e) => {
            eprintln!("ward: error: {e}");
            ExitCode::from(error_code(command))
        }
    }
}

/// Runs `command` with `policy` (the `--policy` argument, if any).
pub fn run(command: &PolicyCommand, policy: Option<&Path>) -> Result<Report, PolicyCommandError> {
    match command {
        PolicyCommand::Check { path } => {
            let source = PolicySource::resolve(path.as_deref().or(policy));
            let files = source.read()?;
            let result = ward_policy::check(&files);
            let code = if result.is_ok() { 0 } else { EXIT_INVALID };
            Ok(Report { code, text: ward_policy::render_check(&result) })
        }
        PolicyCommand::Show => {
            let policy = PolicySource::resolve(policy).load()?;
            Ok(Report { code: 0, text: ward_policy::show(&policy) })
        }
        PolicyCommand::Explain { from, to, service, json } => {
            let policy = PolicySource::resolve(policy).load()?;
            let explanation = ward_policy::explain(&policy, from, to, service)?;
            let text = if *json {
                let mut text = serde_json::to_string_pretty(&explanation_json(&explanation)).unwrap_or_default();
                text.push('\n');
                text
            } else {
                ward_policy::render_explanation(&explanation)
            };
            Ok(Report { code: 0, text })
        }
        PolicyCommand::Diff { old, new } => {
            let old = PolicySource::Path(old.clone()).load()?;
            let new = PolicySource::Path(new.clone()).load()?;
            let diff = ward_policy::diff(&old, &new);
            let code = if diff.is_empty() { 0 } else { EXIT_DIFFERENT };
            Ok(Report { code, text: ward_policy::render_diff(&diff) })
        }
    }
}

/// `ward policy explain --json`: the decision, the rule that made it and
/// where it is, and for a redirect what the direct call would get
/// (docs/CLI.md lists the fields); its `explanation` field is the text
/// `explain` prints without `--json`, notes included.
fn explanation_json(explanation: &ward_policy::Explanation<'_>) -> serde_json::Value {
    use serde_json::json;
    let rule = |index: Option<usize>, found: Option<(&ward_policy::Rule, Option<&ward_policy::Location>)>| match (
        index, found,
    ) {
        (Some(index), Some((rule, location))) => json!({
            "number": index + 1,
            "file": location.map(|l| l.file.to_string()),
            "line": location.map(|l| l.line),
            "column": location.map(|l| l.column),
            "text": rule.to_string(),
        }),
        _ => serde_json::Value::Null,
    };
    let decision = &explanation.decision;
    let redirect = decision.redirect.map(|r| {
        json!({
            "target": r.target,
            "refused": r.is_refused(),
            "direct_decision": r.direct_action.as_str(),
            "direct_rule": rule(r.direct_rule, explanation.direct_rule),
        })
    });
    json!({
        "from": explanation.from,
        "to": explanation.to,
        "service": explanation.call.to_string(),
        "decision": decision.action.as_str(),
        "target": decision.target,
        "rule": rule(decision.rule, explanation.rule),
        "redirect": redirect,
        "explanation": ward_policy::render_explanation(explanation).trim_end(),
    })
}
