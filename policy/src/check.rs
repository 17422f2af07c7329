//! `ward policy check`: whether a policy is valid, and a summary if it is.

use std::path::Path;

use crate::Policy;
use crate::error::PolicyErrors;

/// What a valid policy holds, for the check's one-line report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Compartments defined.
    pub compartments: usize,
    /// Whether `[template.app]` is defined.
    pub app_template: bool,
    /// How many services `[host]` offers, if the policy has a `[host]`.
    pub host_services: Option<usize>,
    /// Service rules.
    pub rules: usize,
}

/// Checks a policy split over `files` (read in the order given): its
/// summary, or every problem found.
pub fn check<P: AsRef<Path>, T: AsRef<str>>(files: &[(P, T)]) -> Result<Summary, PolicyErrors> {
    let policy = Policy::from_files(files)?;
    Ok(Summary {
        files: files.len(),
        compartments: policy.spec().compartments.len(),
        app_template: policy.spec().app_template.is_some(),
        host_services: policy.host().map(|host| host.offers.len()),
        rules: policy.rules().len(),
    })
}

/// The check's result as text: a summary line, or one line per error and a
/// count. The summary names the host's services only if there is a `[host]`:
/// `policy ok: 1 file, 2 compartments, no app template, 1 host service, 3 rules`.
pub fn render_check(result: &Result<Summary, PolicyErrors>) -> String {
    match result {
        Ok(summary) => format!(
            "policy ok: {} file{}, {} compartment{}, {}, {}{} rule{}\n",
            summary.files,
            plural(summary.files),
            summary.compartments,
            plural(summary.compartments),
            if summary.app_template { "an app template" } else { "no app template" },
            summary.host_services.map(|count| format!("{count} host service{}, ", plural(count))).unwrap_or_default(),
            summary.rules,
            plural(summary.rules),
        ),
        Err(errors) => format!("{errors}\n{} error{}\n", errors.len(), plural(errors.len())),
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}
