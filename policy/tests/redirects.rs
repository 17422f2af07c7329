//! Redirects (`target = "..."`) are routes, not permissions: a redirected
//! call goes through only if the caller may make the same call to the
//! target directly (the shape of Qubes issue 8227: a redirect must not reach
//! a compartment an earlier rule denies), and `check` flags a redirect that
//! can never let a call through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{BASE, load, rule};
use ward_policy::{Action, Policy, check, diff, explain, render_check, render_diff, render_explanation};

fn redirect(service: &str, from: &str, to: &str, action: &str, target: &str) -> String {
    format!(
        "[[rule]]\nservice = \"{service}\"\nfrom = \"{from}\"\nto = \"{to}\"\naction = \"{action}\"\ntarget = \"{target}\"\n\n"
    )
}

fn decide<'p>(policy: &'p Policy, from: &str, to: &str, call: &str) -> (Action, Option<&'p str>) {
    let decision = policy.decide(from, to, &call.parse().unwrap());
    (decision.action, decision.target)
}

/// The line the first rule after `BASE` starts on.
fn first_rule_line() -> usize {
    format!("{BASE}\n").lines().count() + 1
}

#[test]
fn a_redirect_only_for_a_caller_an_earlier_rule_denies_is_flagged() {
    // Rule 1 denies mail -> vault `sign`; rule 2 would send mail's `sign`
    // to any compartment on to vault.
    let text = format!(
        "{BASE}\n{}{}",
        rule("sign", "mail", "vault", "deny"),
        redirect("sign", "mail", "@any", "allow", "vault")
    );
    let report = render_check(&check(&[("p.toml", text.as_str())]));
    let line = first_rule_line();
    assert_eq!(
        report,
        format!(
            "p.toml:{}:10: rule #2: target \"vault\": this redirect never lets a call through, since no caller it matches may make the call to \"vault\" directly (for example, rule #1 at p.toml:{line}:1 denies \"sign\" from \"mail\" to \"vault\")\n1 error\n",
            line + 11
        )
    );
}

#[test]
fn a_redirected_call_is_denied_when_the_caller_may_not_call_the_target_itself() {
    // Valid: the redirect lets storage's calls through, not mail's.
    let policy = load(&format!(
        "{BASE}\n{}{}",
        rule("sign", "mail", "vault", "deny"),
        redirect("sign", "@any", "@any", "allow", "vault")
    ));
    assert_eq!(decide(&policy, "mail", "storage", "sign"), (Action::Deny, None));
    assert_eq!(decide(&policy, "mail", "vault", "sign"), (Action::Deny, None));
    assert_eq!(decide(&policy, "storage", "mail", "sign"), (Action::Allow, Some("vault")));
    let decision = policy.decide("mail", "storage", &"sign".parse().unwrap());
    let checked = decision.redirect.unwrap();
    assert!(checked.is_refused());
    assert_eq!((decision.rule, checked.target, checked.direct_rule), (Some(1), "vault", Some(0)));

    let line = first_rule_line();
    assert_eq!(
        render_explanation(&explain(&policy, "mail", "storage", "sign").unwrap()),
        format!(
            "sign from mail to storage: deny: rule #2 at p.toml:{}:1 redirects the call to \"vault\", and a direct call is not let through\n  \
             [[rule]] service = \"sign\", from = \"@any\", to = \"@any\", action = \"allow\", target = \"vault\"\n  \
             directly, sign from mail to vault: deny: rule #1 at p.toml:{line}:1 decided\n  \
             [[rule]] service = \"sign\", from = \"mail\", to = \"vault\", action = \"deny\"\n",
            line + 6
        )
    );
}

#[test]
fn a_redirected_call_is_asked_if_either_decision_asks() {
    let ask_direct = load(&format!(
        "{BASE}\n{}{}",
        rule("sign", "mail", "vault", "ask"),
        redirect("sign", "mail", "@any", "allow", "vault")
    ));
    assert_eq!(decide(&ask_direct, "mail", "storage", "sign"), (Action::Ask, Some("vault")));
    let line = first_rule_line();
    assert_eq!(
        render_explanation(&explain(&ask_direct, "mail", "storage", "sign").unwrap()),
        format!(
            "sign from mail to storage: ask (redirected to \"vault\"): rule #2 at p.toml:{}:1 decided\n  \
             [[rule]] service = \"sign\", from = \"mail\", to = \"@any\", action = \"allow\", target = \"vault\"\n  \
             directly, sign from mail to vault: ask: rule #1 at p.toml:{line}:1 decided\n  \
             [[rule]] service = \"sign\", from = \"mail\", to = \"vault\", action = \"ask\"\n",
            line + 6
        )
    );
    let ask_redirect = load(&format!(
        "{BASE}\n{}{}",
        rule("sign", "mail", "vault", "allow"),
        redirect("sign", "mail", "@any", "ask", "vault")
    ));
    assert_eq!(decide(&ask_redirect, "mail", "storage", "sign"), (Action::Ask, Some("vault")));
    let both = load(&format!(
        "{BASE}\n{}{}",
        rule("sign", "mail", "vault", "allow"),
        redirect("sign", "mail", "@any", "allow", "vault")
    ));
    assert_eq!(decide(&both, "mail", "storage", "sign"), (Action::Allow, Some("vault")));
}

#[test]
fn a_redirect_whose_rule_also_matches_the_target_needs_no_other_rule() {
    // `to = "@any"` covers storage itself: the direct call is decided by
    // the redirecting rule, which sends it to storage.
    let policy = load(&format!("{BASE}\n{}", redirect("storage.get", "@disposable", "@any", "ask", "storage")));
    assert_eq!(decide(&policy, "tmp-1", "mail", "storage.get"), (Action::Ask, Some("storage")));
    let text = render_explanation(&explain(&policy, "tmp-1", "mail", "storage.get").unwrap());
    assert!(!text.contains("directly"), "{text}");
}

#[test]
fn a_redirect_to_a_target_whose_calls_are_redirected_elsewhere_is_denied() {
    let compartments = "[compartment.a]\nrole = \"app\"\nimage = \"a\"\n\
        [compartment.b]\nrole = \"storage\"\nimage = \"b\"\noffers = [\"x\"]\n\
        [compartment.c]\nrole = \"storage\"\nimage = \"c\"\noffers = [\"x\"]\n\
        [compartment.d]\nrole = \"communication\"\nimage = \"d\"\n\n";
    // a's calls to b are sent on to c; anyone's calls to d go to b.
    let policy = load(&format!(
        "{compartments}{}{}{}{}",
        redirect("x", "a", "b", "allow", "c"),
        redirect("x", "@any", "d", "allow", "b"),
        rule("x", "@any", "c", "allow"),
        rule("x", "@any", "b", "allow"),
    ));
    assert_eq!(decide(&policy, "a", "b", "x"), (Action::Allow, Some("c")));
    // A call redirected to b would not reach b when a makes it: refused,
    // rather than followed on to c (redirects do not chain).
    assert_eq!(decide(&policy, "a", "d", "x"), (Action::Deny, None));
    assert_eq!(decide(&policy, "c", "d", "x"), (Action::Allow, Some("b")));
    let text = render_explanation(&explain(&policy, "a", "d", "x").unwrap());
    assert!(text.contains("directly, x from a to b: allow (redirected to \"c\"): rule #1"), "{text}");
}

#[test]
fn offers_are_checked_for_the_target_as_before() {
    // The redirect check comes on top of the other checks of a target.
    let errors =
        Policy::from_text("p.toml", &format!("{BASE}\n{}", redirect("sign", "mail", "@any", "allow", "storage")))
            .unwrap_err()
            .to_string();
    assert!(errors.contains("to compartment \"storage\", which does not offer it"), "{errors}");
}

#[test]
fn diff_sees_a_redirect_refused_by_a_new_deny() {
    let old = load(&format!("{BASE}\n{}", redirect("sign", "@any", "@any", "allow", "vault")));
    let new = load(&format!(
        "{BASE}\n{}{}",
        rule("sign", "mail", "vault", "deny"),
        redirect("sign", "@any", "@any", "allow", "vault")
    ));
    let out = render_diff(&diff(&old, &new));
    assert!(out.contains("- sign from mail to storage: allow (to \"vault\") -> deny\n"), "{out}");
    assert!(out.contains("- sign from mail to vault: allow (to \"vault\") -> deny\n"), "{out}");
    assert!(!out.contains("from storage"), "{out}");
}
