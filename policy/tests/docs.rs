//! `docs/POLICY.md` shows real policies and real output: its example is the
//! golden valid policy, and its `explain` examples are what `explain`
//! prints for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::fs;
use std::path::Path;

use ward_policy::{Policy, explain, render_explanation};

fn read(relative: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

fn example_files() -> Vec<(String, String)> {
    ["00-base.toml", "50-work.toml"]
        .iter()
        .map(|name| (format!("policy/{name}"), read(&format!("tests/golden/valid/{name}"))))
        .collect()
}

#[test]
fn policy_doc_shows_the_golden_valid_policy_verbatim() {
    let doc = read("../docs/POLICY.md");
    for (path, text) in example_files() {
        assert!(doc.contains(&format!("```toml\n{text}```")), "docs/POLICY.md does not show {path} verbatim");
    }
}

#[test]
fn policy_doc_explain_examples_are_real_output() {
    let doc = read("../docs/POLICY.md");
    let policy = Policy::from_files(&example_files()).unwrap();
    for (from, to, call) in
        [("work-mail", "vault", "sign"), ("tmp-7", "comms", "storage.get+photos"), ("vault", "comms", "sign")]
    {
        let text = render_explanation(&explain(&policy, from, to, call).unwrap());
        let indented: String = text.lines().map(|line| format!("  {line}\n")).collect();
        assert!(doc.contains(&indented), "docs/POLICY.md lacks the explain output:\n{indented}");
    }
}

/// The `[host]` example of the "Host services" section.
fn host_example(doc: &str) -> String {
    let start = doc.find("```toml\n[host]\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[test]
fn policy_doc_host_example_loads_with_the_example_policy() {
    let doc = read("../docs/POLICY.md");
    let mut files = example_files();
    files.insert(1, ("policy/10-host.toml".to_owned(), host_example(&doc)));
    let policy = Policy::from_files(&files).unwrap();
    let decide = |from: &str, call: &str| {
        let decision = policy.decide(from, ward_policy::HOST, &call.parse().unwrap());
        decision.action.as_str()
    };
    assert_eq!(decide("work-mail", "notify"), "allow");
    assert_eq!(decide("vault", "notify"), "deny");
    let redirected = policy.decide("tmp-7", "storage", &"clipboard.get".parse().unwrap());
    assert_eq!((redirected.action.as_str(), redirected.target), ("ask", Some(ward_policy::HOST)));
}
