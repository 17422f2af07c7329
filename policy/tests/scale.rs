//! Large policies: how many errors are printed, and that the checks made
//! to run in near-linear time still find what they found before. (How long
//! they take is measured by `cargo run --release -p ward-policy --example
//! large_policy`, not asserted here: machines are noisy.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::fmt::Write as _;

use ward_policy::{MAX_PRINTED_ERRORS, Policy, check, render_check};

#[test]
fn check_prints_the_first_100_errors_and_counts_the_rest() {
    let mut text = String::new();
    for i in 0..150 {
        let _ = write!(text, "[compartment.c{i}]\nrole = \"app\"\nimage = \"x\"\nmemory = 1\n");
    }
    let report = render_check(&check(&[("p.toml", text.as_str())]));
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), MAX_PRINTED_ERRORS + 2, "{report}");
    assert_eq!(lines[0], "p.toml:4:10: compartment \"c0\": memory 1 MiB is out of range (8..=3328)");
    assert_eq!(lines[99], "p.toml:400:10: compartment \"c99\": memory 1 MiB is out of range (8..=3328)");
    assert_eq!(lines[100], "... and 50 more errors");
    assert_eq!(lines[101], "150 errors");
    // Every error is still there for a program to read.
    assert_eq!(Policy::from_text("p.toml", &text).unwrap_err().len(), 150);
}

#[test]
fn a_duplicate_in_a_line_of_120000_tags_is_found_where_it_is() {
    let mut tags: Vec<String> = (0..120_000).map(|i| format!("\"t{i}\"")).collect();
    tags.push("\"t7\"".to_owned());
    let text = format!("[compartment.c]\nrole = \"app\"\nimage = \"x\"\ntags = [{}]\n", tags.join(","));
    let errors = Policy::from_text("p.toml", &text).unwrap_err();
    let column_of = |tag: &str| text.lines().nth(3).unwrap().find(tag).unwrap() + 1;
    assert_eq!(
        errors.to_string(),
        format!(
            "p.toml:4:{}: compartment \"c\": tag \"t7\" is already defined at p.toml:4:{}",
            text.lines().nth(3).unwrap().len() - 4,
            column_of("\"t7\"")
        )
    );
}

#[test]
fn shadowing_is_found_among_many_rules_of_one_service() {
    // 100 callers, a rule for every (caller, destination) pair, and at the
    // end one more that the first rule of its caller and destination covers.
    let mut text = String::new();
    for i in 0..100 {
        let _ = write!(
            text,
            "[compartment.c{i}]\nrole = \"app\"\nimage = \"x\"\ntags = [\"t{}\"]\noffers = [\"sync\"]\n",
            i % 3
        );
    }
    let rule = |text: &mut String, from: &str, to: &str| {
        let _ = write!(text, "[[rule]]\nservice = \"sync\"\nfrom = \"{from}\"\nto = \"{to}\"\naction = \"allow\"\n");
    };
    for from in 0..100 {
        for to in 0..100 {
            rule(&mut text, &format!("c{from}"), &format!("c{to}"));
        }
    }
    assert_eq!(Policy::from_text("p.toml", &text).unwrap().rules().len(), 10_000);
    rule(&mut text, "@tag:t1", "@tag:t2");
    rule(&mut text, "c42", "c17");
    rule(&mut text, "@tag:t1", "c5");
    let errors = Policy::from_text("p.toml", &text).unwrap_err();
    let lines: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    // Rule numbers: (from * 100 + to) + 1.
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("rule #10002: this rule can never match: rule #4218 at"), "{}", lines[0]);
    assert!(lines[1].contains("rule #10003: this rule can never match: rule #10001 at"), "{}", lines[1]);
}
