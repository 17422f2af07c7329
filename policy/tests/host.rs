//! Host services: the `[host]` table, rules naming `host` as a destination,
//! the reserved name, evaluation, explain, show, diff and check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{BASE, action, errors, load, rule};
use ward_policy::{
    HOST, Lookup, Pattern, Policy, Resolution, ServiceCall, check, diff, explain, render_check, render_diff,
    render_explanation, show,
};

/// `[host]` offering `notify` and `clipboard.get`, then `BASE` (line 4 on).
const HOST_TABLE: &str = "[host]\noffers = [\"notify\", \"clipboard.get\"]\n";

/// `HOST_TABLE`, `BASE` and `rules`.
fn with_host(rules: &str) -> Policy {
    load(&format!("{HOST_TABLE}{BASE}\n{rules}"))
}

/// The errors of `HOST_TABLE`, `BASE` and `rules`.
fn host_errors(rules: &str) -> Vec<String> {
    errors(&format!("{HOST_TABLE}{BASE}\n{rules}"))
}

/// The line the first rule after `HOST_TABLE` and `BASE` starts on.
fn first_rule_line() -> usize {
    format!("{HOST_TABLE}{BASE}\n").lines().count() + 1
}

fn call(text: &str) -> ServiceCall {
    ServiceCall::parse(text).unwrap()
}

#[test]
fn host_table_is_read_with_its_offers() {
    let policy = with_host("");
    let host = policy.host().unwrap();
    assert_eq!(host.offers.iter().map(String::as_str).collect::<Vec<_>>(), ["clipboard.get", "notify"]);
    assert_eq!(policy.spec().host.as_ref(), Some(host));
    assert_eq!(policy.host_location().unwrap().to_string(), "p.toml:1:2");
    // Offers may be left out: the host then offers nothing.
    let empty = load("[host]\n");
    assert!(empty.host().unwrap().offers.is_empty());
    // Without the table there is no host.
    assert_eq!(load(BASE).host(), None);
}

#[test]
fn host_table_keys_types_and_offers_are_checked() {
    assert_eq!(
        errors("[host]\noffer = [\"notify\"]\n"),
        ["p.toml:2:1: host: unknown key \"offer\"; expected one of: offers"]
    );
    assert_eq!(errors("host = \"notify\"\n"), ["p.toml:1:8: host must be a table, found a string"]);
    assert_eq!(errors("[host]\noffers = \"notify\"\n"), ["p.toml:2:10: host: offers must be an array, found a string"]);
    assert_eq!(
        errors("[host]\noffers = [\"notify\", \"Notify\", \"notify\", 3]\n"),
        [
            "p.toml:2:21: host: service \"Notify\" is not valid: a service name cannot have 'N' (at position 0)",
            "p.toml:2:31: host: service \"notify\" is already defined at p.toml:2:11",
            "p.toml:2:41: host: each element of offers must be a string, found an integer",
        ]
    );
}

#[test]
fn host_table_may_be_defined_once_in_the_whole_policy() {
    let result =
        Policy::from_files(&[("a.toml", "[host]\noffers = [\"notify\"]\n"), ("b.toml", "\n[host]\noffers = []\n")]);
    let lines: Vec<String> = result.unwrap_err().errors().iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["b.toml:2:2: table \"host\" is already defined at a.toml:1:2"]);
    // Within one file TOML itself refuses a second table.
    assert_eq!(errors("[host]\n[host]\n"), ["p.toml:2:2: invalid TOML: duplicate key"]);
}

#[test]
fn the_name_host_is_reserved() {
    assert_eq!(
        errors("[compartment.host]\nrole = \"app\"\nimage = \"h.img\"\n"),
        ["p.toml:1:14: compartment \"host\": the name \"host\" is reserved for the host's services"]
    );
    // The compartment's other errors are still reported.
    let lines = errors("[compartment.host]\nrole = \"app\"\n");
    assert_eq!(lines.len(), 2, "{lines:?}");
    // With a template, `host` is still no ad-hoc compartment.
    let policy = with_host("");
    assert_eq!(policy.compartment(HOST), Lookup::Undefined);
    assert_eq!(load(BASE).compartment(HOST), Lookup::Undefined);
    assert!(matches!(policy.compartment("host-1"), Lookup::AdHoc(_)));
}

#[test]
fn to_host_parses_as_the_host_pattern() {
    let policy = with_host(&rule("notify", "mail", "host", "allow"));
    assert_eq!(policy.rules()[0].to, Pattern::Host);
    assert_eq!(policy.rules()[0].to.to_string(), "host");
}

#[test]
fn the_host_does_not_call_compartments() {
    let line = first_rule_line();
    assert_eq!(
        host_errors(&rule("sign", "host", "vault", "allow")),
        [format!(
            "p.toml:{}:8: rule #1: from names the host, but the host does not call compartments; only to and target may name it",
            line + 2
        )]
    );
}

#[test]
fn naming_the_host_needs_a_host_table() {
    let lines = common::base_errors(&rule("notify", "mail", "host", "allow"));
    let line = format!("{BASE}\n").lines().count() + 1;
    assert_eq!(
        lines,
        [format!("p.toml:{}:6: rule #1: to \"host\" needs a [host] table, which is not defined", line + 3)]
    );
    let redirect =
        "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"vault\"\naction = \"ask\"\ntarget = \"host\"\n";
    let lines = common::base_errors(redirect);
    assert_eq!(
        lines,
        [format!("p.toml:{}:10: rule #1: target \"host\" needs a [host] table, which is not defined", line + 5)]
    );
    // A deny to the host needs the table too.
    assert_eq!(common::base_errors(&rule("*", "@any", "host", "deny")).len(), 1);
}

#[test]
fn allow_and_ask_to_the_host_must_name_a_service_it_offers() {
    let line = first_rule_line();
    assert_eq!(
        host_errors(&rule("sign", "mail", "host", "allow")),
        [format!("p.toml:{}:6: rule #1: allow for service \"sign\" to the host, which does not offer it", line + 3)]
    );
    // A service no compartment offers, and the host does not either.
    assert_eq!(
        host_errors(&rule("print", "mail", "host", "ask")),
        [format!("p.toml:{}:6: rule #1: ask for service \"print\" to the host, which does not offer it", line + 3)]
    );
    // Redirected to the host: the target is checked.
    let redirect =
        "[[rule]]\nservice = \"sign\"\nfrom = \"mail\"\nto = \"vault\"\naction = \"ask\"\ntarget = \"host\"\n";
    assert_eq!(
        host_errors(redirect),
        [format!("p.toml:{}:10: rule #1: ask for service \"sign\" to the host, which does not offer it", line + 5)]
    );
    // Redirected away from the host: the target compartment is checked.
    let away =
        "[[rule]]\nservice = \"storage.get\"\nfrom = \"mail\"\nto = \"host\"\naction = \"allow\"\ntarget = \"vault\"\n";
    assert_eq!(
        host_errors(away),
        [format!(
            "p.toml:{}:10: rule #1: allow for service \"storage.get\" to compartment \"vault\", which does not offer it",
            line + 5
        )]
    );
    // Deny rules name any service.
    with_host(&rule("print", "@any", "host", "deny"));
}

#[test]
fn host_offers_count_only_for_calls_to_the_host() {
    // Only the host offers `notify`: fine to the host...
    with_host(&rule("notify", "@any", "host", "allow"));
    // ...but `to = "@any"` never reaches the host, so nobody offers it there.
    let line = first_rule_line();
    assert_eq!(
        host_errors(&rule("notify", "@any", "@any", "allow")),
        [format!("p.toml:{}:11: rule #1: allow for service \"notify\", which no compartment offers", line + 1)]
    );
}

#[test]
fn calls_to_the_host_are_decided_first_match() {
    let policy = with_host(
        &(rule("notify", "mail", "host", "deny")
            + &rule("notify", "@any", "host", "allow")
            + &rule("clipboard.get+text", "@disposable", "host", "ask")),
    );
    assert_eq!(action(&policy, "mail", HOST, "notify"), "deny");
    assert_eq!(action(&policy, "vault", HOST, "notify"), "allow");
    assert_eq!(action(&policy, "tmp-1", HOST, "notify+x"), "allow");
    assert_eq!(policy.decide("vault", HOST, &call("notify")).rule, Some(1));
    assert_eq!(action(&policy, "tmp-1", HOST, "clipboard.get+text"), "ask");
    assert_eq!(action(&policy, "tmp-1", HOST, "clipboard.get"), "deny");
    assert_eq!(action(&policy, "vault", HOST, "clipboard.get+text"), "deny");
    // `host` is only the host: not a compartment's name, not an ad-hoc one.
    assert_eq!(action(&policy, "mail", "vault", "notify"), "deny");
}

#[test]
fn patterns_never_match_the_host() {
    for to in ["@any", "@tag:work", "@tag:untrusted", "@role:app", "@role:communication", "@disposable"] {
        let policy = with_host(&rule("*", "@any", to, "allow"));
        for service in ["notify", "sign", "anything"] {
            assert_eq!(action(&policy, "mail", HOST, service), "deny", "{to}");
            assert_eq!(action(&policy, "tmp-1", HOST, service), "deny", "{to}");
        }
    }
    let policy = with_host(&rule("*", "@any", "@any", "allow"));
    assert_eq!(action(&policy, "mail", "vault", "sign"), "allow");
}

#[test]
fn the_host_as_a_caller_matches_no_rule() {
    let policy = with_host(&(rule("*", "@any", "@any", "allow") + &rule("notify", "@any", "host", "allow")));
    assert_eq!(action(&policy, HOST, "vault", "sign"), "deny");
    assert_eq!(action(&policy, HOST, HOST, "notify"), "deny");
    assert_eq!(policy.decide(HOST, "vault", &call("sign")).rule, None);
}

#[test]
fn without_a_host_table_host_matches_nothing_even_with_a_template() {
    let policy = load(&format!("{BASE}\n{}", rule("*", "@any", "@any", "allow")));
    assert_eq!(action(&policy, "mail", "tmp-1", "sign"), "allow");
    assert_eq!(action(&policy, "mail", HOST, "sign"), "deny");
    assert_eq!(action(&policy, HOST, "mail", "sign"), "deny");
}

#[test]
fn redirects_to_the_host_are_decided() {
    let redirect =
        "[[rule]]\nservice = \"notify\"\nfrom = \"@disposable\"\nto = \"@any\"\naction = \"ask\"\ntarget = \"host\"\n";
    // The redirect rule is about compartments: the host itself is not `@any`,
    // so alone it lets no call through (an ad-hoc compartment may not call
    // the host directly), and check says so.
    let line = first_rule_line();
    assert_eq!(
        host_errors(redirect),
        [format!(
            "p.toml:{}:10: rule #1: target \"host\": this redirect never lets a call through, since no caller it matches may make the call to \"host\" directly (for example, no rule lets \"@disposable\" call \"notify\" on \"host\")",
            line + 5
        )]
    );
    // With a rule that lets them call it directly, the redirect holds.
    let policy = with_host(&(rule("notify", "@disposable", "host", "allow") + redirect));
    let decision = policy.decide("tmp-1", "mail", &call("notify"));
    assert_eq!((decision.action.as_str(), decision.target), ("ask", Some(HOST)));
    assert_eq!(action(&policy, "tmp-1", HOST, "notify"), "allow");
}

#[test]
fn shadowing_treats_the_host_as_its_own_destination() {
    let line = first_rule_line();
    // `@any` does not cover the host, so neither rule shadows the other.
    with_host(&(rule("*", "@any", "@any", "deny") + &rule("notify", "mail", "host", "allow")));
    with_host(&(rule("*", "@any", "host", "deny") + &rule("*", "@any", "@any", "deny")));
    // The same destination does.
    assert_eq!(
        host_errors(&(rule("*", "@any", "host", "deny") + &rule("notify", "mail", "host", "allow"))),
        [format!(
            "p.toml:{}:1: rule #2: this rule can never match: rule #1 at p.toml:{line}:1 covers every service, source and destination it matches",
            line + 6
        )]
    );
}

#[test]
fn explain_works_for_the_host() {
    let policy = with_host(&rule("notify", "@tag:work", "host", "allow"));
    let line = first_rule_line();
    let explanation = explain(&policy, "mail", HOST, "notify").unwrap();
    assert_eq!(explanation.to_is, Resolution::Host(policy.host_location()));
    assert_eq!(
        render_explanation(&explanation),
        format!(
            "notify from mail to host: allow: rule #1 at p.toml:{line}:1 decided\n  [[rule]] service = \"notify\", from = \"@tag:work\", to = \"host\", action = \"allow\"\n"
        )
    );
    assert_eq!(
        render_explanation(&explain(&policy, "vault", HOST, "notify").unwrap()),
        "notify from vault to host: no rule matched: deny\n"
    );
    assert_eq!(
        render_explanation(&explain(&policy, HOST, "mail", "notify").unwrap()),
        "notify from host to mail: no rule matched: deny\n  note: \"host\" is the host, which does not call compartments: no rule matches it as a caller\n"
    );
    let no_host = load(BASE);
    let explanation = explain(&no_host, "mail", HOST, "notify").unwrap();
    assert_eq!(explanation.to_is, Resolution::NoHost);
    assert_eq!(
        render_explanation(&explanation),
        "notify from mail to host: no rule matched: deny\n  note: \"host\" is the host, and the policy has no [host]: no rule matches it\n"
    );
}

#[test]
fn show_prints_the_host_table_after_the_template_and_loads_back() {
    let redirect =
        "[[rule]]\nservice = \"notify\"\nfrom = \"@disposable\"\nto = \"@any\"\naction = \"ask\"\ntarget = \"host\"\n";
    // `[host]` written last, offers unsorted: show normalizes both.
    let policy = load(&format!(
        "{BASE}\n{}{}{redirect}\n[host]\noffers = [\"notify\", \"clipboard.get\"]\n",
        rule("notify", "mail", "host", "allow"),
        rule("notify", "@disposable", "host", "ask")
    ));
    let shown = show(&policy);
    let again = Policy::from_text("shown.toml", &shown).unwrap();
    assert_eq!(again, policy);
    assert_eq!(show(&again), shown, "show must be a fixed point");
    assert!(diff(&policy, &again).is_empty());
    let host = shown.find("\n[host]\noffers = [\"clipboard.get\", \"notify\"]\n").unwrap();
    let template = shown.find("[template.app]").unwrap();
    let first_rule = shown.find("[[rule]]").unwrap();
    assert!(template < host && host < first_rule, "{shown}");
    assert!(shown.contains("to = \"host\"\naction = \"allow\"\n"));
    assert!(shown.contains("target = \"host\"\n"));
    // An empty `[host]` is shown too: it still lets rules name the host.
    let shown = show(&load("[host]\n"));
    assert!(shown.ends_with("\n[host]\noffers = []\n"), "{shown}");
    assert_eq!(Policy::from_text("shown.toml", &shown).unwrap(), load("[host]\n"));
    // Without `[host]`, nothing.
    assert!(!show(&load(BASE)).contains("[host]"));
}

#[test]
fn diff_reports_host_offers_and_calls_to_the_host() {
    let old = load(BASE);
    let new = with_host(&rule("notify", "mail", "host", "allow"));
    assert_eq!(
        render_diff(&diff(&old, &new)),
        "+ notify from mail to host: deny -> allow\n~ host: offers: no [host] -> [\"clipboard.get\", \"notify\"]\n"
    );
    assert_eq!(
        render_diff(&diff(&new, &old)),
        "- notify from mail to host: allow -> deny\n~ host: offers: [\"clipboard.get\", \"notify\"] -> no [host]\n"
    );

    let fewer = load(&format!(
        "[host]\noffers = [\"notify\"]\n{BASE}\n{}",
        rule("notify", "mail", "host", "allow") + &rule("notify", "@disposable", "host", "ask")
    ));
    let result = diff(&new, &fewer);
    assert_eq!(
        render_diff(&result),
        "+ notify from @disposable to host: deny -> ask\n~ host: offers: [\"clipboard.get\", \"notify\"] -> [\"notify\"]\n"
    );
    let change = &result.fields[0];
    assert_eq!((change.subject.as_str(), change.field.as_str()), ("host", "offers"));
    // The host is compared only as a destination.
    assert!(result.decisions.iter().all(|change| change.from != HOST));
}

#[test]
fn check_counts_the_host_services() {
    let text = format!("{HOST_TABLE}{BASE}");
    assert_eq!(
        render_check(&check(&[("p.toml", text.as_str())])),
        "policy ok: 1 file, 3 compartments, an app template, 2 host services, 0 rules\n"
    );
    assert_eq!(
        render_check(&check(&[("p.toml", "[host]\noffers = [\"notify\"]\n")])),
        "policy ok: 1 file, 0 compartments, no app template, 1 host service, 0 rules\n"
    );
}
