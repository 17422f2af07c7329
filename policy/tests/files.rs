//! Policies split over files: order, merging, duplicates across files, and
//! the order errors are reported in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use ward_policy::{Policy, order_files};

const BASE: &str = "[compartment.vault]\nrole = \"identity\"\nimage = \"v\"\noffers = [\"sign\"]\n";
const WORK: &str = "[compartment.mail]\nrole = \"communication\"\nimage = \"m\"\n\n[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"vault\"\naction = \"allow\"\n";
const LATER: &str = "[[rule]]\nservice = \"sign\"\nfrom = \"@any\"\nto = \"vault\"\naction = \"deny\"\n";

#[test]
fn compartments_merge_and_rules_concatenate_in_file_order() {
    let listing = vec![("p/90-later.toml", LATER), ("p/00-base.toml", BASE), ("p/50-work.toml", WORK)];
    let policy = Policy::from_files(&order_files(listing)).unwrap();
    assert_eq!(policy.compartment_names().collect::<Vec<_>>(), ["mail", "vault"]);
    assert_eq!(policy.rules().len(), 2);
    assert_eq!(policy.rule_location(0).unwrap().to_string(), "p/50-work.toml:5:1");
    assert_eq!(policy.rule_location(1).unwrap().to_string(), "p/90-later.toml:1:1");
    assert_eq!(policy.compartment_location("vault").unwrap().to_string(), "p/00-base.toml:1:14");
}

#[test]
fn file_order_changes_which_rule_wins() {
    let call = "sign".parse().unwrap();
    let early = Policy::from_files(&[("a.toml", BASE), ("b.toml", WORK), ("c.toml", LATER)]).unwrap();
    assert!(early.decide("mail", "vault", &call).is_allowed());
    // The same files in another order: the deny-all rule now comes first,
    // and the allow after it can never match.
    let errors = Policy::from_files(&[("a.toml", BASE), ("c.toml", LATER), ("b.toml", WORK)]).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "b.toml:5:1: rule #2: this rule can never match: rule #1 at c.toml:1:1 covers every service, source and destination it matches"
    );
}

#[test]
fn compartment_defined_in_two_files_is_a_duplicate() {
    let errors = Policy::from_files(&[("a.toml", BASE), ("b.toml", BASE)]).unwrap_err();
    assert_eq!(errors.to_string(), "b.toml:1:14: compartment \"vault\" is already defined at a.toml:1:14");
}

#[test]
fn errors_are_sorted_by_file_order_then_position() {
    let bad = "[compartment.x]\nrole = \"app\"\nimage = \"i\"\nmemory = 1\nvcpus = 9\n";
    let errors = Policy::from_files(&[("z.toml", bad), ("a.toml", &bad.replace("[compartment.x]", "[compartment.y]"))])
        .unwrap_err();
    let files: Vec<_> = errors.errors().iter().map(|error| error.location.file.to_string()).collect();
    assert_eq!(files, ["z.toml", "z.toml", "a.toml", "a.toml"]);
    assert!(errors.errors()[0].location.line < errors.errors()[1].location.line);
}

#[test]
fn syntax_errors_of_every_file_are_reported_and_nothing_else() {
    let errors = Policy::from_files(&[
        ("a.toml", "[compartment.a\n"),
        ("b.toml", "memory = = 1\n"),
        ("c.toml", "unknown = 1\n"),
    ])
    .unwrap_err();
    let lines: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with("a.toml:1:15: invalid TOML: unclosed table"));
    assert!(lines[1].starts_with("b.toml:1:"));
    assert!(lines.iter().all(|line| line.contains("invalid TOML")));
}

#[test]
fn empty_policy_is_valid_and_denies_everything() {
    let policy = Policy::from_files::<&str, &str>(&[]).unwrap();
    assert!(!policy.decide("a", "b", &"x".parse().unwrap()).is_allowed());
    let policy = Policy::from_text("empty.toml", "# nothing yet\n").unwrap();
    assert_eq!(policy.compartment_names().count(), 0);
}
