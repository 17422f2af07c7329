//! The service rules: patterns, order, default deny, arguments, redirects,
//! disposables, and the checks validation makes on rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{action, assert_one_error, base_errors, rule, with_base};
use ward_policy::ServiceCall;

#[test]
fn no_rule_means_deny() {
    let policy = with_base("");
    assert_eq!(action(&policy, "mail", "vault", "sign"), "deny");
    let decision = policy.decide("mail", "vault", &ServiceCall::parse("sign").unwrap());
    assert_eq!(decision.rule, None);
}

#[test]
fn first_matching_rule_wins() {
    let policy = with_base(&(rule("sign", "mail", "vault", "deny") + &rule("sign", "@any", "vault", "allow")));
    assert_eq!(action(&policy, "mail", "vault", "sign"), "deny");
    assert_eq!(action(&policy, "storage", "vault", "sign"), "allow");
    let decision = policy.decide("storage", "vault", &ServiceCall::parse("sign").unwrap());
    assert_eq!(decision.rule, Some(1));
}

#[test]
fn exact_name_matches_only_that_compartment() {
    let policy = with_base(&rule("sign", "mail", "vault", "allow"));
    assert_eq!(action(&policy, "mail", "vault", "sign"), "allow");
    assert_eq!(action(&policy, "storage", "vault", "sign"), "deny");
    assert_eq!(action(&policy, "mail", "storage", "sign"), "deny");
}

#[test]
fn tag_pattern_matches_tagged_compartments_and_template() {
    let policy = with_base(
        &(rule("storage.get", "@tag:work", "storage", "allow")
            + &rule("storage.put", "@tag:untrusted", "storage", "ask")),
    );
    assert_eq!(action(&policy, "mail", "storage", "storage.get"), "allow");
    assert_eq!(action(&policy, "storage", "storage", "storage.get"), "allow");
    assert_eq!(action(&policy, "vault", "storage", "storage.get"), "deny");
    assert_eq!(action(&policy, "app-1", "storage", "storage.put"), "ask");
    assert_eq!(action(&policy, "mail", "storage", "storage.put"), "deny");
}

#[test]
fn role_pattern_matches_by_role_including_disposables() {
    let policy = with_base(&rule("sign", "@role:app", "@role:identity", "ask"));
    assert_eq!(action(&policy, "scratch", "vault", "sign"), "ask");
    assert_eq!(action(&policy, "mail", "vault", "sign"), "deny");
}

#[test]
fn disposable_pattern_matches_undefined_names_only() {
    let policy = with_base(&rule("storage.get", "@disposable", "storage", "allow"));
    assert_eq!(action(&policy, "tmp-42", "storage", "storage.get"), "allow");
    assert_eq!(action(&policy, "mail", "storage", "storage.get"), "deny");
}

#[test]
fn any_pattern_matches_everyone_but_invalid_names() {
    let policy = with_base(&rule("sign", "@any", "@any", "allow"));
    assert_eq!(action(&policy, "mail", "vault", "sign"), "allow");
    assert_eq!(action(&policy, "anything", "vault", "sign"), "allow");
    assert_eq!(action(&policy, "Not Valid", "vault", "sign"), "deny");
}

#[test]
fn undefined_names_without_template_match_nothing() {
    let text = "[compartment.a]\nrole = \"app\"\nimage = \"a\"\noffers = [\"x\"]\n\n".to_owned()
        + &rule("x", "@any", "@any", "allow");
    let policy = common::load(&text);
    assert_eq!(action(&policy, "a", "a", "x"), "allow");
    assert_eq!(action(&policy, "ghost", "a", "x"), "deny");
    assert_eq!(action(&policy, "a", "ghost", "x"), "deny");
}

#[test]
fn service_without_argument_matches_every_argument() {
    let policy = with_base(&rule("storage.get", "mail", "storage", "allow"));
    assert_eq!(action(&policy, "mail", "storage", "storage.get"), "allow");
    assert_eq!(action(&policy, "mail", "storage", "storage.get+photos"), "allow");
    assert_eq!(action(&policy, "mail", "storage", "storage.put"), "deny");
}

#[test]
fn service_with_argument_matches_that_argument_only() {
    let policy = with_base(
        &(rule("storage.get+photos", "mail", "storage", "allow") + &rule("storage.get", "mail", "storage", "deny")),
    );
    assert_eq!(action(&policy, "mail", "storage", "storage.get+photos"), "allow");
    assert_eq!(action(&policy, "mail", "storage", "storage.get+mail"), "deny");
    assert_eq!(action(&policy, "mail", "storage", "storage.get"), "deny");
}

#[test]
fn star_service_matches_every_service_in_order() {
    let policy = with_base(
        &(rule("sign", "mail", "vault", "allow")
            + &rule("*", "@any", "vault", "deny")
            + &rule("storage.get", "@any", "@any", "allow")),
    );
    assert_eq!(action(&policy, "mail", "vault", "sign"), "allow");
    assert_eq!(action(&policy, "storage", "vault", "storage.get"), "deny");
    assert_eq!(action(&policy, "storage", "storage", "storage.get"), "allow");
    assert_eq!(action(&policy, "storage", "vault", "never.named"), "deny");
    let decision = policy.decide("storage", "vault", &ServiceCall::parse("never.named").unwrap());
    assert_eq!(decision.rule, Some(1));
}

#[test]
fn redirect_target_is_returned_with_allow_and_ask() {
    let text = "[[rule]]\nservice = \"storage.get\"\nfrom = \"@disposable\"\nto = \"@any\"\naction = \"ask\"\ntarget = \"storage\"\n";
    let policy = with_base(text);
    let decision = policy.decide("tmp-1", "mail", &ServiceCall::parse("storage.get").unwrap());
    assert_eq!((decision.action.as_str(), decision.target), ("ask", Some("storage")));
}

#[test]
fn target_with_deny_is_an_error() {
    let text = "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"vault\"\naction = \"deny\"\ntarget = \"vault\"\n";
    assert_one_error(&base_errors(text), &["rule #1: target is only allowed with action \"allow\" or \"ask\""]);
}

#[test]
fn unknown_compartment_in_rule_is_an_error() {
    let lines = base_errors(&rule("sign", "ghost", "vault", "allow"));
    assert_one_error(&lines, &["rule #1: from names compartment \"ghost\", which is not defined"]);
    let text = "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"@any\"\naction = \"allow\"\ntarget = \"ghost\"\n";
    assert_one_error(&base_errors(text), &["target names compartment \"ghost\""]);
}

#[test]
fn unknown_tag_in_rule_is_an_error() {
    assert_one_error(
        &base_errors(&rule("sign", "mail", "@tag:nope", "deny")),
        &["to names tag \"nope\", which no compartment or template has"],
    );
}

#[test]
fn role_nobody_has_matches_nothing() {
    let text =
        "[compartment.a]\nrole = \"app\"\nimage = \"a\"\n\n".to_owned() + &rule("x", "@role:identity", "a", "deny");
    assert_one_error(
        &common::errors(&text),
        &["from pattern \"@role:identity\" matches no compartment of this policy"],
    );
}

#[test]
fn disposable_without_template_is_an_error() {
    let text = "[compartment.a]\nrole = \"app\"\nimage = \"a\"\n\n".to_owned() + &rule("x", "@disposable", "a", "deny");
    assert_one_error(&common::errors(&text), &["from pattern \"@disposable\" needs a [template.app]"]);
}

#[test]
fn bad_patterns_and_services_are_errors() {
    assert_one_error(
        &base_errors(&rule("sign", "@anyvm", "vault", "deny")),
        &["from \"@anyvm\" is not valid: expected @any, @tag:NAME"],
    );
    assert_one_error(
        &base_errors(&rule("sign", "@role:root", "vault", "deny")),
        &["from role \"root\" is not valid; expected one of: identity"],
    );
    assert_one_error(&base_errors(&rule("sign+", "mail", "vault", "deny")), &["service \"sign+\" is not valid"]);
    assert_one_error(
        &base_errors(&rule("sign", "mail", "vault", "permit")),
        &["action \"permit\" is not valid; expected one of: allow, deny, ask"],
    );
}

#[test]
fn rule_fields_are_required_and_typed() {
    let lines = base_errors("[[rule]]\nservice = 1\nfrom = \"mail\"\nextra = true\n");
    assert_one_error(&lines, &["rule #1: service must be a string, found an integer"]);
    assert_one_error(&lines, &["rule #1: missing required field \"to\""]);
    assert_one_error(&lines, &["rule #1: missing required field \"action\""]);
    assert_one_error(&lines, &["rule #1: unknown key \"extra\"; expected one of: service, from, to, action, target"]);
    assert_one_error(&base_errors("[rule]\nservice = \"sign\""), &["rule must be an array, found a table"]);
}

#[test]
fn allow_for_a_service_nobody_offers_is_an_error() {
    assert_one_error(
        &base_errors(&rule("print", "mail", "vault", "allow")),
        &["allow for service \"print\", which no compartment offers"],
    );
    assert_one_error(&base_errors(&rule("print", "mail", "vault", "ask")), &["ask for service \"print\""]);
    with_base(&rule("print", "mail", "vault", "deny"));
}

#[test]
fn allow_to_a_compartment_that_does_not_offer_the_service_is_an_error() {
    assert_one_error(
        &base_errors(&rule("sign", "vault", "mail", "allow")),
        &["allow for service \"sign\" to compartment \"mail\", which does not offer it"],
    );
    let redirect =
        "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"@any\"\naction = \"allow\"\ntarget = \"storage\"\n";
    assert_one_error(&base_errors(redirect), &["to compartment \"storage\", which does not offer it"]);
}

#[test]
fn rule_covered_by_an_earlier_rule_is_shadowed() {
    let lines = base_errors(&(rule("sign", "@any", "vault", "deny") + &rule("sign", "mail", "vault", "allow")));
    assert_eq!(
        lines,
        [
            "p.toml:30:1: rule #2: this rule can never match: rule #1 at p.toml:24:1 covers every service, source and destination it matches"
        ]
    );
}

#[test]
fn shadowing_is_computed_on_what_patterns_match() {
    // mail is the only communication compartment, and it has tag work.
    assert_one_error(
        &base_errors(
            &(rule("sign", "@tag:work", "vault", "deny") + &rule("sign", "@role:communication", "vault", "ask")),
        ),
        &["rule #2: this rule can never match: rule #1"],
    );
    assert_one_error(
        &base_errors(&(rule("*", "mail", "@any", "deny") + &rule("sign", "mail", "vault", "allow"))),
        &["rule #2: this rule can never match"],
    );
    assert_one_error(
        &base_errors(
            &(rule("storage.get", "mail", "storage", "deny") + &rule("storage.get+x", "mail", "storage", "allow")),
        ),
        &["rule #2: this rule can never match"],
    );
}

#[test]
fn narrower_earlier_rules_do_not_shadow() {
    with_base(&(rule("storage.get+x", "mail", "storage", "allow") + &rule("storage.get", "mail", "storage", "deny")));
    with_base(&(rule("sign", "mail", "vault", "allow") + &rule("sign", "@any", "vault", "deny")));
    with_base(&(rule("sign", "mail", "vault", "allow") + &rule("*", "mail", "vault", "deny")));
    with_base(&(rule("sign", "@tag:work", "vault", "allow") + &rule("sign", "@tag:personal", "vault", "deny")));
}

#[test]
fn every_rule_error_is_reported_at_once() {
    let lines = base_errors(&(rule("print", "ghost", "@tag:nope", "allow") + &rule("sign", "@bad", "vault", "maybe")));
    assert_eq!(lines.len(), 5, "{lines:#?}");
}
