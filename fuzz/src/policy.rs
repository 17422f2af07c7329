//! `policy_parser`: the policy parser with one to three files cut from the
//! input at NUL bytes. Whatever the input, loading must not panic; and a
//! policy that loads must show as text that loads back to the same policy,
//! explain and diff without panicking.

use ward_policy::{Policy, diff, explain, render_diff, render_explanation, show};

/// What an input did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The files loaded as a policy.
    pub loaded: bool,
    /// Its compartments.
    pub compartments: usize,
    /// Its rules.
    pub rules: usize,
    /// Explanations made of it.
    pub explained: usize,
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let files: Vec<(String, &str)> =
        text.splitn(3, '\0').enumerate().map(|(index, text)| (format!("policy/{index}.toml"), text)).collect();
    let Ok(policy) = Policy::from_files(&files) else { return Outcome::default() };

    let shown = show(&policy);
    let again = match Policy::from_text("shown.toml", &shown) {
        Ok(again) => again,
        Err(errors) => panic!("show output does not load:\n{errors}\n{shown}"),
    };
    assert_eq!(again, policy, "show output loads to another policy:\n{shown}");
    assert!(diff(&policy, &again).is_empty());
    let _ = render_diff(&diff(&policy, &Policy::from_text("empty.toml", "").unwrap_or(again)));

    let names: Vec<&str> = policy.compartment_names().chain(["tmp-1"]).collect();
    let services: Vec<String> =
        policy.rules().iter().map(|rule| rule.service.to_string()).filter(|s| s != "*").collect();
    let mut explained = 0;
    for from in names.iter().take(4) {
        for to in names.iter().take(4) {
            for service in services.iter().take(4) {
                if let Ok(explanation) = explain(&policy, from, to, service) {
                    let _ = render_explanation(&explanation);
                    explained += 1;
                }
            }
        }
    }
    Outcome { loaded: true, compartments: names.len() - 1, rules: policy.rules().len(), explained }
}
