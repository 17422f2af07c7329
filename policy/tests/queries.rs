//! What the CLI shows: check, show, explain and diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{BASE, load, rule, with_base};
use ward_policy::{Policy, check, diff, explain, render_check, render_diff, render_explanation, show};

#[test]
fn check_summarizes_a_valid_policy() {
    let result = check(&[("p.toml", BASE)]);
    assert_eq!(render_check(&result), "policy ok: 1 file, 3 compartments, an app template, 0 rules\n");
}

#[test]
fn check_lists_every_error_and_counts_them() {
    let result = check(&[("p.toml", "[compartment.c]\nrole = \"x\"\n")]);
    assert_eq!(
        render_check(&result),
        "p.toml:1:1: compartment \"c\": missing required field \"image\"\n\
         p.toml:2:8: compartment \"c\": role \"x\" is not valid; expected one of: identity, storage, communication, app\n\
         2 errors\n"
    );
}

#[test]
fn show_is_normalized_and_reparses_to_the_same_policy() {
    let written = format!(
        "{BASE}\n{}{}",
        rule("sign", "@tag:work", "vault", "ask"),
        "[[rule]]\nservice = \"storage.get+photos\"\nfrom = \"@disposable\"\nto = \"@any\"\naction = \"allow\"\ntarget = \"storage\"\n"
    );
    let policy = load(&written);
    let shown = show(&policy);
    let again = Policy::from_text("shown.toml", &shown).unwrap();
    assert_eq!(again, policy);
    assert_eq!(show(&again), shown, "show must be a fixed point");
    // Compartments in name order, every field written.
    let mail = shown.find("[compartment.mail]").unwrap();
    let storage = shown.find("[compartment.storage]").unwrap();
    let vault = shown.find("[compartment.vault]").unwrap();
    assert!(mail < storage && storage < vault);
    assert!(shown.contains("memory = 128\nvcpus = 1\nautostart = false\nrestart = \"never\""));
    assert!(shown.contains("target = \"storage\""));
}

#[test]
fn show_of_policies_split_differently_is_the_same() {
    let (first, second) = BASE.split_at(BASE.find("[compartment.storage]").unwrap());
    let split = Policy::from_files(&[("a.toml", first), ("b.toml", second)]).unwrap();
    assert_eq!(show(&split), show(&load(BASE)));
}

#[test]
fn show_escapes_strings() {
    let policy = load("[compartment.c]\nrole = \"app\"\nimage = \"dir\\\\with \\\"quotes\\\"\\n\"\n");
    let again = Policy::from_text("shown.toml", &show(&policy)).unwrap();
    assert_eq!(again.compartment("c").spec().unwrap().image, "dir\\with \"quotes\"\n");
}

#[test]
fn explain_names_the_rule_file_and_line() {
    let policy = with_base(&(rule("sign", "mail", "vault", "allow") + &rule("sign", "@any", "vault", "deny")));
    let text = render_explanation(&explain(&policy, "mail", "vault", "sign").unwrap());
    assert_eq!(
        text,
        "sign from mail to vault: allow: rule #1 at p.toml:24:1 decided\n  [[rule]] service = \"sign\", from = \"mail\", to = \"vault\", action = \"allow\"\n"
    );
    let text = render_explanation(&explain(&policy, "storage", "vault", "sign+x").unwrap());
    assert!(text.starts_with("sign+x from storage to vault: deny: rule #2 at p.toml:30:1 decided"), "{text}");
}

#[test]
fn explain_without_a_match_says_default_deny() {
    let policy = with_base("");
    let text = render_explanation(&explain(&policy, "mail", "vault", "sign").unwrap());
    assert_eq!(text, "sign from mail to vault: no rule matched: deny\n");
}

#[test]
fn explain_notes_ad_hoc_and_undefined_names() {
    let policy = with_base("");
    let text = render_explanation(&explain(&policy, "tmp-1", "vault", "sign").unwrap());
    assert!(
        text.contains(
            "note: \"tmp-1\" is not defined: it is an ad-hoc compartment from [template.app] at p.toml:20:11"
        ),
        "{text}"
    );
    let no_template = load("[compartment.a]\nrole = \"app\"\nimage = \"a\"\n");
    let text = render_explanation(&explain(&no_template, "a", "ghost", "x").unwrap());
    assert!(text.contains("\"ghost\" is not defined and the policy has no [template.app]"), "{text}");
}

#[test]
fn explain_refuses_bad_queries() {
    let policy = with_base("");
    assert_eq!(
        explain(&policy, "mail", "vault", "sign+").unwrap_err().to_string(),
        "service call \"sign+\" is not valid: a service argument cannot be empty"
    );
    assert!(
        explain(&policy, "Mail", "vault", "sign")
            .unwrap_err()
            .to_string()
            .contains("\"Mail\" is not a valid compartment name")
    );
}

#[test]
fn diff_of_equal_policies_is_empty() {
    let policy = with_base(&rule("sign", "mail", "vault", "allow"));
    let result = diff(&policy, &policy.clone());
    assert!(result.is_empty());
    assert_eq!(render_diff(&result), "no change: both policies decide and allow the same\n");
}

#[test]
fn diff_lists_newly_allowed_and_forbidden_calls() {
    let old = with_base(&rule("storage.get", "mail", "storage", "allow"));
    let new = with_base(&rule("sign", "mail", "vault", "allow"));
    let text = render_diff(&diff(&old, &new));
    assert_eq!(text, "- storage.get from mail to storage: allow -> deny\n+ sign from mail to vault: deny -> allow\n");
}

#[test]
fn diff_covers_arguments_disposables_and_other_services() {
    let old = with_base("");
    let new =
        with_base(&(rule("storage.get+photos", "@disposable", "storage", "ask") + &rule("*", "@any", "mail", "deny")));
    let result = diff(&old, &new);
    let calls: Vec<_> = result
        .decisions
        .iter()
        .map(|change| (change.from.as_str(), change.to.as_str(), change.call.as_str()))
        .collect();
    assert_eq!(calls, [("@disposable", "storage", "storage.get+photos")]);
    assert!(result.decisions[0].grants_more());
}

#[test]
fn diff_lists_changes_of_limits_devices_and_network() {
    let old = load("[compartment.c]\nrole = \"app\"\nimage = \"c\"\nmemory = 256\n");
    let new = load(
        "[compartment.c]\nrole = \"app\"\nimage = \"c\"\nmemory = 512\ndevices.network = true\nnetwork = [{ peer = \"192.0.2.0/24\", ports = [443] }]\n\n[compartment.d]\nrole = \"app\"\nimage = \"d\"\n",
    );
    let text = render_diff(&diff(&old, &new));
    assert_eq!(
        text,
        "~ compartment \"c\": memory: 256 MiB -> 512 MiB\n\
         ~ compartment \"c\": devices.network: false -> true\n\
         + compartment \"c\": network: 192.0.2.0/24 ports 443\n\
         + compartment \"d\" added\n"
    );
    let text = render_diff(&diff(&new, &old));
    assert!(text.contains("- compartment \"d\" removed\n"), "{text}");
    assert!(text.contains("- compartment \"c\": network: 192.0.2.0/24 ports 443\n"), "{text}");
}

#[test]
fn diff_treats_a_removed_compartment_as_ad_hoc_when_a_template_applies() {
    let old = with_base(&rule("mail.send", "@any", "mail", "allow"));
    let new = load(&format!("{}\n{}", BASE.replace("[compartment.mail]\nrole = \"communication\"\nimage = \"mail.img\"\ntags = [\"work\"]\noffers = [\"mail.send\"]\n", ""), ""));
    let result = diff(&old, &new);
    assert!(result.decisions.iter().all(|change| !change.grants_more()));
    assert!(result.decisions.iter().any(|change| change.to == "mail" && change.call == "mail.send"));
}
