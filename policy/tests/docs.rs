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
