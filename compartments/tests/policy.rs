//! `ward policy` and the policy's hold on `ward run`, as a user sees them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::PathBuf;
use std::process::{Command, Output};

fn ward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ward")).args(args).env_remove("WARD_POLICY").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A directory with the given policy files.
fn policy_dir(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ward-policy-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    dir
}

const BASE: &str = r#"
[compartment.vault]
role = "identity"
image = "hello"
memory = 24
offers = ["sign"]

[compartment.mail]
role = "app"
image = "hello"
memory = 40
tags = ["work"]

[[rule]]
service = "sign"
from = "mail"
to = "vault"
action = "ask"
"#;

#[test]
fn check_accepts_a_good_policy_and_lists_every_error_of_a_bad_one() {
    let good = policy_dir("good", &[("00-base.toml", BASE)]);
    let out = ward(&["policy", "check", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).starts_with("policy ok: 1 file, 2 compartments"), "{}", text(&out.stdout));

    let bad = policy_dir(
        "bad",
        &[("00-base.toml", BASE), ("10-more.toml", "[compartment.mail]\nrole = \"app\"\nimage = \"x\"\nmemry = 8\n")],
    );
    let out = ward(&["policy", "check", bad.to_str().unwrap()]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("10-more.toml:1:1") && report.contains("mail"), "duplicate name not reported: {report}");
    assert!(report.contains("10-more.toml:4:1") && report.contains("unknown key \"memry\""), "{report}");
}

#[test]
fn explain_names_the_rule_file_and_line_that_decided() {
    let dir = policy_dir("explain", &[("00-base.toml", BASE)]);
    let p = dir.to_str().unwrap();
    let asked = text(
        &ward(&["--policy", p, "policy", "explain", "--from", "mail", "--to", "vault", "--service", "sign"]).stdout,
    );
    assert!(asked.contains("ask") && asked.contains("00-base.toml:"), "{asked}");
    let denied = text(
        &ward(&["--policy", p, "policy", "explain", "--from", "vault", "--to", "mail", "--service", "sign"]).stdout,
    );
    assert!(denied.contains("no rule matched: deny"), "{denied}");
}

#[test]
fn show_output_is_itself_a_valid_policy() {
    let dir = policy_dir("show", &[("00-base.toml", BASE)]);
    let shown = text(&ward(&["--policy", dir.to_str().unwrap(), "policy", "show"]).stdout);
    let again = policy_dir("show-again", &[("policy.toml", &shown)]);
    assert_eq!(ward(&["policy", "check", again.to_str().unwrap()]).status.code(), Some(0), "{shown}");
}

#[test]
fn diff_says_what_a_change_would_allow() {
    let old = policy_dir("diff-old", &[("00-base.toml", BASE)]);
    let new = policy_dir("diff-new", &[("00-base.toml", &BASE.replace("action = \"ask\"", "action = \"allow\""))]);
    let out = text(&ward(&["policy", "diff", old.to_str().unwrap(), new.to_str().unwrap()]).stdout);
    assert!(out.contains("mail") && out.contains("vault") && out.contains("allow"), "{out}");
}

#[test]
fn run_is_refused_for_a_compartment_the_policy_does_not_define() {
    let dir = policy_dir("undefined", &[("00-base.toml", BASE)]);
    let out = ward(&["--policy", dir.to_str().unwrap(), "run", "stranger"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("compartment stranger is not defined by the policy"), "{err}");
}

#[test]
fn run_takes_its_memory_from_the_policy_and_refuses_more() {
    let dir = policy_dir("memory", &[("00-base.toml", BASE)]);
    let p = dir.to_str().unwrap();
    let out = ward(&["--policy", p, "run", "mail"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("| memory 40 MiB |"), "{}", text(&out.stdout));
    let out = ward(&["--policy", p, "run", "mail", "--memory", "41"]);
    assert!(text(&out.stderr).contains("grants at most 40 MiB"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_defined_compartment_cannot_swap_its_image() {
    let dir = policy_dir("image", &[("00-base.toml", BASE)]);
    let out = ward(&["--policy", dir.to_str().unwrap(), "run", "mail", "--image", "fault-demo"]);
    assert!(text(&out.stderr).contains("is only for ad-hoc app compartments"), "{}", text(&out.stderr));
}

#[test]
fn ad_hoc_app_runs_from_the_template_of_the_built_in_policy() {
    let out = ward(&["run", "scratch-app", "--image", "badptr-demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("| memory 64 MiB |"), "{}", text(&out.stdout));
    // Through the virtio console too, every bad pointer and length is refused.
    assert!(text(&out.stdout).contains("badptr: still running as process 1; all refused"), "{}", text(&out.stdout));
}
