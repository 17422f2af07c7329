//! `ward policy` and the policy's hold on `ward run`, as a user sees them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ward")).args(args).env_remove("WARD_POLICY").output().unwrap()
}

/// `ward ARGS`, killed (and the test failed) if it has not finished within
/// ten seconds: for commands that used to block.
fn ward_within_10s(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .env_remove("WARD_POLICY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("ward {args:?} still ran after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
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
fn explain_json_gives_the_decision_and_the_rule_for_a_script() {
    let dir = policy_dir("explain-json", &[("00-base.toml", BASE)]);
    let p = dir.to_str().unwrap();
    let out =
        ward(&["--policy", p, "policy", "explain", "--from", "mail", "--to", "vault", "--service", "sign", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let asked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((asked["decision"].as_str(), asked["service"].as_str()), (Some("ask"), Some("sign")), "{asked}");
    assert_eq!(asked["rule"]["number"], 1, "{asked}");
    // BASE's rule is its lines 14-18: `[[rule]]` is line 14.
    assert!(asked["rule"]["file"].as_str().unwrap().ends_with("00-base.toml"), "{asked}");
    assert_eq!(asked["rule"]["line"], 14, "{asked}");
    assert!(asked["redirect"].is_null());

    let out =
        ward(&["--policy", p, "policy", "explain", "--from", "vault", "--to", "mail", "--service", "sign", "--json"]);
    let denied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(denied["decision"], "deny");
    assert!(denied["rule"].is_null(), "{denied}");
    assert!(denied["explanation"].as_str().unwrap().contains("no rule matched"), "{denied}");
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
fn diff_exits_0_when_the_policies_behave_the_same_1_when_they_differ_and_2_on_trouble() {
    let old = policy_dir("diff-code-old", &[("00-base.toml", BASE)]);
    let same = policy_dir("diff-code-same", &[("10-split.toml", BASE)]);
    let new = policy_dir("diff-code-new", &[("00-base.toml", &BASE.replace("memory = 40", "memory = 64"))]);
    let (old, same, new) = (old.to_str().unwrap(), same.to_str().unwrap(), new.to_str().unwrap());
    let out = ward(&["policy", "diff", old, same]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).starts_with("no change"));
    let out = ward(&["policy", "diff", old, new]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("~ compartment \"mail\": memory: 40 MiB -> 64 MiB"), "{}", text(&out.stdout));
    let out = ward(&["policy", "diff", old, "/nonexistent/policy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("ward: error: ") && text(&out.stderr).contains("/nonexistent/policy"));
    let broken = policy_dir("diff-code-broken", &[("00-base.toml", "[compartment.x]\n")]);
    let out = ward(&["policy", "diff", old, broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("missing required field"), "{}", text(&out.stderr));
}

#[test]
fn check_prints_the_first_100_errors_and_counts_the_rest() {
    let bad: String =
        (0..250).map(|i| format!("[compartment.c{i}]\nrole = \"app\"\nimage = \"x\"\nvcpus = 9\n")).collect();
    let dir = policy_dir("many-errors", &[("00-bad.toml", &bad)]);
    let out = ward(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert_eq!(report.lines().count(), 102, "{report}");
    assert!(report.ends_with("... and 150 more errors\n250 errors\n"), "{report}");
    // Commands that load the policy cap them too.
    let err = text(&ward(&["--policy", dir.to_str().unwrap(), "policy", "show"]).stderr);
    assert_eq!(err.lines().count(), 102, "{err}");
}

#[test]
fn show_prints_bidirectional_and_control_characters_escaped() {
    let dir = policy_dir(
        "bidi",
        &[(
            "00-base.toml",
            &COMPARTMENTS.replace("image = \"hello\"\nmemory = 40", "image = \"he\\u202Eoll\\u001B[2J\"\nmemory = 40"),
        )],
    );
    let out = ward(&["--policy", dir.to_str().unwrap(), "policy", "show"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains('\u{202e}') && !shown.contains('\u{1b}'), "{shown}");
    assert!(shown.contains("image = \"he\\u202Eoll\\u001B[2J\""), "{shown}");
}

#[test]
fn check_flags_a_redirect_to_a_compartment_the_caller_may_not_call() {
    // Rule 1 denies mail -> vault; rule 2 would send mail's calls to any
    // compartment on to vault (Qubes issue 8227).
    let rules = "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"vault\"\naction = \"deny\"\n\n\
                 [[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"@any\"\naction = \"allow\"\ntarget = \"vault\"\n";
    let dir = policy_dir("redirect", &[("00-base.toml", COMPARTMENTS), ("10-rules.toml", rules)]);
    let out = ward(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(
        report.contains("10-rules.toml:12:10: rule #2: target \"vault\": this redirect never lets a call through"),
        "{report}"
    );
}

/// BASE's compartments without its rule.
const COMPARTMENTS: &str = r#"
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
"#;

/// Compartments, then (in `10-deny.toml`) a deny, then an allow that the
/// deny must win over.
const SPLIT: [(&str, &str); 2] = [
    ("00-base.toml", COMPARTMENTS),
    ("20-allow.toml", "[[rule]]\nservice = \"sign\"\nfrom = \"@any\"\nto = \"vault\"\naction = \"allow\"\n"),
];
const DENY: &str = "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"vault\"\naction = \"deny\"\n";

#[test]
fn a_policy_file_whose_symlink_target_moved_refuses_the_policy_instead_of_dropping_its_rules() {
    let dir = policy_dir("moved", &SPLIT);
    let outside = policy_dir("moved-target", &[("deny.toml", DENY)]);
    std::os::unix::fs::symlink(outside.join("deny.toml"), dir.join("10-deny.toml")).unwrap();
    let p = dir.to_str().unwrap();
    let explain = ["--policy", p, "policy", "explain", "--from", "mail", "--to", "vault", "--service", "sign"];
    // While the link resolves, the deny decides.
    let out = text(&ward(&explain).stdout);
    assert!(out.contains("sign from mail to vault: deny: rule #1"), "{out}");

    std::fs::rename(outside.join("deny.toml"), outside.join("elsewhere.toml")).unwrap();
    let out = ward(&["policy", "check", p]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(err.contains("10-deny.toml") && err.contains("No such file or directory"), "{err}");
    let out = ward(&explain);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("allow"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("10-deny.toml"), "{}", text(&out.stderr));
}

#[test]
fn a_toml_entry_that_is_a_fifo_or_a_directory_refuses_the_policy() {
    let dir = policy_dir("fifo-entry", &SPLIT);
    mkfifo(&dir.join("10-deny.toml"));
    let out = ward_within_10s(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("10-deny.toml is a FIFO, not a regular file"), "{}", text(&out.stderr));

    let dir = policy_dir("dir-entry", &SPLIT);
    std::fs::create_dir(dir.join("10-deny.toml")).unwrap();
    let out = ward(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("10-deny.toml is a directory, not a regular file"), "{}", text(&out.stderr));
}

#[test]
fn a_fifo_given_as_the_policy_is_refused_at_once() {
    let dir = policy_dir("fifo", &[]);
    let fifo = dir.join("policy.toml");
    mkfifo(&fifo);
    for args in [
        vec!["policy", "check", fifo.to_str().unwrap()],
        vec!["--policy", fifo.to_str().unwrap(), "policy", "show"],
        vec!["--policy", fifo.to_str().unwrap(), "run", "mail"],
    ] {
        let out = ward_within_10s(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("policy.toml is a FIFO, not a regular file"), "{}", text(&out.stderr));
    }
}

#[test]
fn a_policy_file_larger_than_16_mib_is_refused_without_being_read() {
    let dir = policy_dir("large", &[("00-base.toml", BASE)]);
    // Sparse: a terabyte the test never writes, and ward must never read.
    std::fs::File::create(dir.join("10-huge.toml")).unwrap().set_len(1 << 40).unwrap();
    let out = ward_within_10s(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("10-huge.toml is 1099511627776 bytes, more than the 16777216 bytes allowed"));
}

#[test]
fn invalid_utf8_in_a_policy_file_is_reported_at_its_line_and_column() {
    let dir = policy_dir("utf8", &[("00-base.toml", BASE)]);
    std::fs::write(dir.join("10-bad.toml"), b"# ok\n[compartment.x]\nimage = \"\xc3\xa9\xff\"\n").unwrap();
    let out = ward(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("10-bad.toml:3:11: the file is not UTF-8 text (invalid byte 0xff)"), "{err}");
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
