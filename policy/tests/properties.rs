//! Properties: the parser never panics, whatever it is given; `show`
//! re-parses to the same policy; the compiled rule index decides exactly as
//! reading the rules one by one would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use proptest::prelude::*;
use std::collections::BTreeSet;

use ward_policy::{
    AD_HOC, Action, CompartmentSpec, HOST, OTHER_SERVICE, Pattern, Policy, PolicySpec, ServiceCall, ServicePattern,
    Verdict, diff, explain, render_diff, render_explanation, show,
};

const NAMES: &[&str] = &["vault", "storage", "mail", "app-1", "work-browser", "x"];
/// Redirect targets: the compartments and the host.
const TARGETS: &[&str] = &["vault", "storage", "mail", "app-1", "work-browser", "x", "host"];
const TAGS: &[&str] = &["work", "personal", "red"];
const SERVICES: &[&str] = &["sign", "storage.get", "mail.send", "net_peer"];
const ARGUMENTS: &[&str] = &["photos", "Daily-2", "x.y"];
const ROLES: &[&str] = &["identity", "storage", "communication", "app"];

/// A compartment (or template, without a name) to write as TOML.
#[derive(Clone, Debug)]
struct GenCompartment {
    role: &'static str,
    image: String,
    memory: u32,
    vcpus: u8,
    autostart: bool,
    restart: &'static str,
    tags: Vec<&'static str>,
    offers: Vec<&'static str>,
    console: bool,
    rng: bool,
    vsock: bool,
    network: bool,
    volumes: Vec<(String, u64, bool)>,
    peers: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Debug)]
struct GenRule {
    service: String,
    from: String,
    to: String,
    action: &'static str,
    target: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct GenPolicy {
    compartments: Vec<(&'static str, GenCompartment)>,
    template: Option<GenCompartment>,
    /// `[host]`'s offers, if the policy has one.
    host: Option<Vec<&'static str>>,
    rules: Vec<GenRule>,
}

fn subset(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(pool, 0..=pool.len())
}

fn peer() -> impl Strategy<Value = (String, Vec<String>)> {
    let address = (any::<[u8; 4]>(), 8u8..=32).prop_map(|(octets, prefix)| {
        let net = ipnet::Ipv4Net::new(octets.into(), prefix).unwrap().trunc();
        if prefix == 32 { net.addr().to_string() } else { net.to_string() }
    });
    let ports = proptest::collection::vec(
        prop_oneof![
            (1u16..=u16::MAX).prop_map(|port| port.to_string()),
            (1u16..=30000, 0u16..=30000).prop_map(|(first, span)| format!("\"{first}-{}\"", first + span)),
        ],
        0..3,
    );
    prop_oneof![(address, ports), "[1-9A-HJ-NP-Za-km-z]{4,20}".prop_map(|key| (format!("did:key:z{key}"), Vec::new())),]
}

fn compartment(role: BoxedStrategy<&'static str>) -> impl Strategy<Value = GenCompartment> {
    (
        (role, "i[ -~é\u{1F600}\t\n]{0,12}", 8u32..=3328, 1u8..=2, any::<bool>()),
        (prop::sample::select(&["never", "on-failure", "always"][..]), subset(TAGS), subset(SERVICES)),
        (any::<[bool; 4]>(), proptest::collection::vec((1u64..=1 << 20, any::<bool>()), 0..3)),
        proptest::collection::vec(peer(), 0..3),
    )
        .prop_map(
            |((role, image, memory, vcpus, autostart), (restart, tags, offers), (devices, volumes), peers)| {
                let network = devices[3] || !peers.is_empty();
                GenCompartment {
                    role,
                    image,
                    memory,
                    vcpus,
                    autostart,
                    restart,
                    tags,
                    offers,
                    console: devices[0],
                    rng: devices[1],
                    vsock: devices[2],
                    network,
                    volumes: volumes
                        .into_iter()
                        .enumerate()
                        .map(|(i, (size, ro))| (format!("vol-{i}"), size, ro))
                        .collect(),
                    peers,
                }
            },
        )
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("@any".to_owned()),
        Just("@disposable".to_owned()),
        prop::sample::select(TAGS).prop_map(|tag| format!("@tag:{tag}")),
        prop::sample::select(ROLES).prop_map(|role| format!("@role:{role}")),
        prop::sample::select(NAMES).prop_map(str::to_owned),
        // Valid only as `to`, and only with a `[host]`: other rules are
        // refused and dropped by `load_valid`.
        Just("host".to_owned()),
    ]
}

fn rule() -> impl Strategy<Value = GenRule> {
    let service = prop_oneof![
        1 => Just("*".to_owned()),
        4 => prop::sample::select(SERVICES).prop_map(str::to_owned),
        2 => (prop::sample::select(SERVICES), prop::sample::select(ARGUMENTS)).prop_map(|(s, a)| format!("{s}+{a}")),
    ];
    let action = prop::sample::select(&["allow", "deny", "ask"][..]);
    let target = proptest::option::weighted(0.2, prop::sample::select(TARGETS));
    (service, pattern(), pattern(), action, target).prop_map(|(service, from, to, action, target)| GenRule {
        service,
        from,
        to,
        action,
        target: if action == "deny" { None } else { target },
    })
}

fn policy() -> impl Strategy<Value = GenPolicy> {
    (
        proptest::sample::subsequence(NAMES, 1..=NAMES.len()),
        proptest::collection::vec(compartment(prop::sample::select(ROLES).boxed()), NAMES.len()),
        proptest::option::of(compartment(Just("app").boxed())),
        proptest::option::of(subset(SERVICES)),
        proptest::collection::vec(rule(), 0..12),
    )
        .prop_map(|(names, specs, template, host, rules)| GenPolicy {
            compartments: names.into_iter().zip(specs).collect(),
            template,
            host,
            rules,
        })
}

/// A TOML string escaping everything but letters and digits, to exercise
/// the parser's escapes (`show` writes them differently).
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if c.is_ascii_alphanumeric() { out.push(c) } else { out.push_str(&format!("\\U{:08X}", u32::from(c))) }
    }
    out.push('"');
    out
}

fn write_compartment(out: &mut String, header: &str, c: &GenCompartment) {
    let list = |items: &[&str]| items.iter().map(|item| quote(item)).collect::<Vec<_>>().join(", ");
    out.push_str(&format!(
        "[{header}]\nrole = {}\nimage = {}\nmemory = {}\nvcpus = {}\nautostart = {}\nrestart = {}\ntags = [{}]\noffers = [{}]\n",
        quote(c.role),
        quote(&c.image),
        c.memory,
        c.vcpus,
        c.autostart,
        quote(c.restart),
        list(&c.tags),
        list(&c.offers)
    ));
    let volumes: Vec<String> = c
        .volumes
        .iter()
        .map(|(name, size, ro)| format!("{{ name = \"{name}\", size = {size}, read-only = {ro} }}"))
        .collect();
    out.push_str(&format!(
        "devices = {{ console = {}, rng = {}, vsock = {}, network = {}, block = [{}] }}\n",
        c.console,
        c.rng,
        c.vsock,
        c.network,
        volumes.join(", ")
    ));
    for (peer, ports) in &c.peers {
        out.push_str(&format!("\n[[{header}.network]]\npeer = \"{peer}\"\n"));
        if !ports.is_empty() {
            out.push_str(&format!("ports = [{}]\n", ports.join(", ")));
        }
    }
    out.push('\n');
}

fn to_toml(policy: &GenPolicy, rules: &[GenRule]) -> String {
    let mut out = String::new();
    if let Some(offers) = &policy.host {
        let offers: Vec<String> = offers.iter().map(|service| quote(service)).collect();
        out.push_str(&format!("[host]\noffers = [{}]\n\n", offers.join(", ")));
    }
    for (name, compartment) in &policy.compartments {
        write_compartment(&mut out, &format!("compartment.{name}"), compartment);
    }
    if let Some(template) = &policy.template {
        write_compartment(&mut out, "template.app", template);
    }
    for rule in rules {
        out.push_str(&format!(
            "[[rule]]\nservice = \"{}\"\nfrom = \"{}\"\nto = \"{}\"\naction = \"{}\"\n",
            rule.service, rule.from, rule.to, rule.action
        ));
        if let Some(target) = rule.target {
            out.push_str(&format!("target = \"{target}\"\n"));
        }
        out.push('\n');
    }
    out
}

/// Loads the generated policy, dropping the rules validation refuses
/// (shadowed, naming absent compartments, ...) until it is valid; the
/// compartments themselves are always valid.
fn load_valid(policy: &GenPolicy) -> Policy {
    let mut rules = policy.rules.clone();
    loop {
        let text = to_toml(policy, &rules);
        match Policy::from_text("gen.toml", &text) {
            Ok(loaded) => return loaded,
            Err(errors) => {
                let bad_rule = errors
                    .errors()
                    .iter()
                    .find_map(|error| error.context.strip_prefix("rule #")?.parse::<usize>().ok());
                match bad_rule {
                    Some(number) => {
                        rules.remove(number - 1);
                    }
                    None => panic!("the generated compartments are invalid:\n{errors}\n{text}"),
                }
            }
        }
    }
}

/// Who a name is, for `naive_decision`.
#[derive(Clone, Copy)]
enum Naive<'a> {
    /// A defined compartment (with its name) or an ad-hoc one (no name).
    Compartment(Option<&'a str>, &'a CompartmentSpec),
    /// The host's services.
    Host,
}

/// Reads the rules one by one, as the language defines them.
fn naive_decision(spec: &PolicySpec, from: &str, to: &str, call: &ServiceCall) -> (Action, Option<String>) {
    let resolve = |name: &str| -> Option<Naive<'_>> {
        if name == "host" {
            return spec.host.as_ref().map(|_| Naive::Host);
        }
        match spec.compartments.get_key_value(name) {
            Some((name, compartment)) => Some(Naive::Compartment(Some(name.as_str()), compartment)),
            None => spec.app_template.as_ref().map(|template| Naive::Compartment(None, template)),
        }
    };
    let matches = |pattern: &Pattern, subject: Naive<'_>| match (pattern, subject) {
        (Pattern::Host, Naive::Host) => true,
        (_, Naive::Host) | (Pattern::Host, _) => false,
        (Pattern::Any, _) => true,
        (Pattern::Tag(tag), Naive::Compartment(_, compartment)) => compartment.tags.contains(tag),
        (Pattern::Role(role), Naive::Compartment(_, compartment)) => compartment.role == *role,
        (Pattern::Disposable, Naive::Compartment(name, _)) => name.is_none(),
        (Pattern::Name(wanted), Naive::Compartment(name, _)) => name == Some(wanted.as_str()),
    };
    let first_match = |from: Naive<'_>, to: Naive<'_>| {
        spec.rules.iter().find(|rule| {
            let service_matches = match &rule.service {
                ServicePattern::Any => true,
                ServicePattern::Named { name, argument } => {
                    name == call.name() && argument.as_deref().is_none_or(|wanted| call.argument() == Some(wanted))
                }
            };
            service_matches && matches(&rule.from, from) && matches(&rule.to, to)
        })
    };
    let (Some(from), Some(to)) = (resolve(from), resolve(to)) else { return (Action::Deny, None) };
    let Some(rule) = first_match(from, to) else { return (Action::Deny, None) };
    let Some(target) = &rule.target else { return (rule.action, None) };
    // A redirect holds only if the caller may make the same call to the
    // target directly, and that call is not sent elsewhere.
    let direct = resolve(target).and_then(|target| first_match(from, target));
    match direct {
        Some(direct) if direct.action != Action::Deny && direct.target.as_ref().is_none_or(|other| other == target) => {
            let action = if rule.action == Action::Allow && direct.action == Action::Allow {
                Action::Allow
            } else {
                Action::Ask
            };
            (action, Some(target.clone()))
        }
        _ => (Action::Deny, None),
    }
}

/// Every decision that differs, found by deciding every (caller,
/// destination, call) one by one, as the diff did before it grouped them.
fn naive_decision_changes(old: &Policy, new: &Policy) -> BTreeSet<(String, String, String, String, String)> {
    let mut callers: BTreeSet<&str> = old.compartment_names().chain(new.compartment_names()).collect();
    if old.spec().app_template.is_some() || new.spec().app_template.is_some() {
        callers.insert(AD_HOC);
    }
    let mut destinations = callers.clone();
    if old.host().is_some() || new.host().is_some() {
        destinations.insert(HOST);
    }
    let mut calls: BTreeSet<String> = BTreeSet::new();
    let mut any = false;
    for policy in [old, new] {
        for rule in policy.rules() {
            match &rule.service {
                ServicePattern::Any => any = true,
                ServicePattern::Named { name, argument } => {
                    calls.insert(name.clone());
                    calls.extend(argument.as_ref().map(|argument| format!("{name}+{argument}")));
                }
            }
        }
        for compartment in policy.spec().compartments.values().chain(&policy.spec().app_template) {
            calls.extend(compartment.offers.iter().cloned());
        }
        calls.extend(policy.host().into_iter().flat_map(|host| host.offers.iter().cloned()));
    }
    if any {
        calls.insert(OTHER_SERVICE.to_owned());
    }
    // An ad-hoc compartment is any name neither policy defines.
    let name = |label: &str| if label == AD_HOC { "zz-ad-hoc" } else { label }.to_owned();
    let verdict = |policy: &Policy, from: &str, to: &str, call: &ServiceCall| {
        let decision = policy.decide(&name(from), &name(to), call);
        Verdict { action: decision.action, target: decision.target.map(str::to_owned) }
    };
    let mut changes = BTreeSet::new();
    for call in &calls {
        let parsed = ServiceCall::parse(if call == OTHER_SERVICE { "other-service-0" } else { call }).unwrap();
        for from in &callers {
            for to in &destinations {
                let (before, after) = (verdict(old, from, to, &parsed), verdict(new, from, to, &parsed));
                if before != after {
                    changes.insert((
                        from.to_string(),
                        to.to_string(),
                        call.clone(),
                        before.to_string(),
                        after.to_string(),
                    ));
                }
            }
        }
    }
    changes
}

/// A generated rule's patterns as the model has them.
fn model_pattern(text: &str) -> Pattern {
    match text {
        "@any" => Pattern::Any,
        "@disposable" => Pattern::Disposable,
        "host" => Pattern::Host,
        _ => match (text.strip_prefix("@tag:"), text.strip_prefix("@role:")) {
            (Some(tag), _) => Pattern::Tag(tag.to_owned()),
            (_, Some(role)) => Pattern::Role(ward_policy::Role::from_word(role).unwrap()),
            _ => Pattern::Name(text.to_owned()),
        },
    }
}

fn model_service(text: &str) -> ServicePattern {
    if text == "*" {
        return ServicePattern::Any;
    }
    let (name, argument) = match text.split_once('+') {
        Some((name, argument)) => (name, Some(argument.to_owned())),
        None => (text, None),
    };
    ServicePattern::Named { name: name.to_owned(), argument }
}

/// The subjects a pattern matches, one by one: each defined compartment by
/// name, `None` for ad-hoc ones, and `Some("host")` for the host.
fn naive_set(spec: &PolicySpec, pattern: &Pattern) -> BTreeSet<Option<String>> {
    let mut set = BTreeSet::new();
    let members = spec
        .compartments
        .iter()
        .map(|(name, spec)| (Some(name.clone()), spec))
        .chain(spec.app_template.iter().map(|spec| (None, spec)));
    for (name, compartment) in members {
        let hit = match pattern {
            Pattern::Any => true,
            Pattern::Tag(tag) => compartment.tags.contains(tag),
            Pattern::Role(role) => compartment.role == *role,
            Pattern::Disposable => name.is_none(),
            Pattern::Host => false,
            Pattern::Name(wanted) => name.as_deref() == Some(wanted.as_str()),
        };
        if hit {
            set.insert(name);
        }
    }
    if *pattern == Pattern::Host && spec.host.is_some() {
        set.insert(Some("host".to_owned()));
    }
    set
}

/// TOML-like text made of the language's own pieces, so that random input
/// reaches deep into the parser rather than failing at the first byte.
fn tomlish() -> impl Strategy<Value = String> {
    let header = prop::sample::select(
        &[
            "[compartment.mail]\n",
            "[compartment.vault]\n",
            "[template.app]\n",
            "[[rule]]\n",
            "[[compartment.mail.network]]\n",
            "[compartment.mail.devices]\n",
            "[[compartment.vault.devices.block]]\n",
        ][..],
    )
    .prop_map(str::to_owned);
    let key = prop::sample::select(
        &[
            "role", "image", "memory", "vcpus", "tags", "offers", "service", "from", "to", "action", "target", "peer",
            "ports", "block", "network", "name", "size", "restart", "x",
        ][..],
    );
    let value = prop::sample::select(
        &[
            "\"app\"",
            "\"@any\"",
            "\"@tag:work\"",
            "\"sign+x\"",
            "\"sign\"",
            "9000",
            "64",
            "-1",
            "1.5",
            "true",
            "[]",
            "[1, \"2-3\"]",
            "[\"work\"]",
            "[\"sign\"]",
            "{ name = \"d\", size = 1 }",
            "\"did:key:zabc\"",
            "\"10.0.0.0/8\"",
            "\"mail\"",
            "\"vault\"",
            "\"allow\"",
            "\"deny\"",
            "\"x.img\"",
        ][..],
    );
    // Sections of distinct keys, so most of the input is valid TOML and
    // reaches the language's own checks; now and then a few random bytes.
    let lines = proptest::collection::btree_map(key, value, 0..7)
        .prop_map(|lines| lines.into_iter().map(|(key, value)| format!("{key} = {value}\n")).collect::<String>());
    let junk = proptest::option::weighted(0.1, "[ -~\n]{0,8}").prop_map(Option::unwrap_or_default);
    let section = (header, lines, junk).prop_map(|(header, lines, junk)| format!("{header}{lines}{junk}"));
    proptest::collection::vec(section, 0..6).prop_map(|sections| sections.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_text(text in any::<String>(), second in "\\PC{0,64}") {
        let _ = Policy::from_files(&[("a.toml", text.as_str()), ("b.toml", second.as_str())]);
    }

    #[test]
    fn parser_never_panics_on_toml_like_text(first in tomlish(), second in tomlish()) {
        if let Ok(policy) = Policy::from_files(&[("a.toml", first.as_str()), ("b.toml", second.as_str())]) {
            let _ = show(&policy);
            let _ = render_diff(&diff(&policy, &policy));
            if let Ok(explanation) = explain(&policy, "mail", "app-1", "sign+x") {
                let _ = render_explanation(&explanation);
            }
        }
    }

    #[test]
    fn show_reparses_to_the_same_policy(generated in policy()) {
        let policy = load_valid(&generated);
        let shown = show(&policy);
        let again = Policy::from_text("shown.toml", &shown)
            .unwrap_or_else(|errors| panic!("show output does not parse:\n{errors}\n{shown}"));
        prop_assert_eq!(&again, &policy);
        prop_assert_eq!(show(&again), shown);
        prop_assert!(diff(&policy, &again).is_empty());
    }

    #[test]
    fn diff_finds_exactly_the_decisions_that_differ(old in policy(), new in policy(), same_compartments in any::<bool>()) {
        // Half the time, the same compartments with other rules: a diff of
        // rules alone.
        let new = if same_compartments { GenPolicy { rules: new.rules, ..old.clone() } } else { new };
        let (old, new) = (load_valid(&old), load_valid(&new));
        let found: BTreeSet<_> = diff(&old, &new)
            .decisions
            .iter()
            .map(|change| (change.from.clone(), change.to.clone(), change.call.clone(), change.before.to_string(), change.after.to_string()))
            .collect();
        prop_assert_eq!(found.len(), diff(&old, &new).decisions.len(), "a decision listed twice");
        prop_assert_eq!(found, naive_decision_changes(&old, &new));
    }

    #[test]
    fn a_rule_is_shadowed_exactly_when_an_earlier_rule_covers_it(
        generated in policy(),
        random in rule(),
        pick in any::<prop::sample::Index>(),
        narrow in 0u8..4,
    ) {
        let policy = load_valid(&generated);
        // Three times in four, a copy of an earlier rule, narrowed: with an
        // argument, or from one compartment its `from` matches.
        let extra = match policy.rules().get(pick.index(policy.rules().len().max(1))) {
            Some(earlier) if narrow > 0 => {
                let mut service = earlier.service.to_string();
                if narrow == 2 && !service.contains('+') && service != "*" {
                    service.push_str("+photos");
                }
                let mut from = earlier.from.to_string();
                if narrow == 3 {
                    let members: Vec<String> = naive_set(policy.spec(), &earlier.from).into_iter().flatten().collect();
                    if let Some(name) = members.get(pick.index(members.len().max(1))) {
                        from = name.clone();
                    }
                }
                GenRule { service, from, to: earlier.to.to_string(), action: "deny", target: None }
            }
            _ => random,
        };
        let text = format!("{}\n{}", show(&policy), to_toml(&GenPolicy { compartments: Vec::new(), template: None, host: None, rules: Vec::new() }, std::slice::from_ref(&extra)));
        let number = policy.rules().len() + 1;
        let errors = match Policy::from_text("p.toml", &text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.errors().to_vec(),
        };
        // Only rules whose other fields are right are compared for shadowing.
        let other = errors.iter().any(|error| !matches!(error.kind, ward_policy::ErrorKind::Shadowed { .. } | ward_policy::ErrorKind::RedirectRefused { .. }));
        prop_assume!(!other);
        let shadowed_by = errors.iter().find_map(|error| match error.kind {
            ward_policy::ErrorKind::Shadowed { earlier_number, .. } => Some(earlier_number),
            _ => None,
        });
        let spec = policy.spec();
        let (service, from, to) = (model_service(&extra.service), naive_set(spec, &model_pattern(&extra.from)), naive_set(spec, &model_pattern(&extra.to)));
        let expected = spec.rules.iter().position(|earlier| {
            earlier.service.covers(&service)
                && naive_set(spec, &earlier.from).is_superset(&from)
                && naive_set(spec, &earlier.to).is_superset(&to)
        });
        prop_assert_eq!(shadowed_by, expected.map(|index| index + 1), "rule #{} in\n{}", number, text);
    }

    #[test]
    fn compiled_rules_decide_like_reading_them_in_order(
        generated in policy(),
        queries in proptest::collection::vec(
            (prop::sample::select(TARGETS), prop::sample::select(&["vault", "mail", "tmp-9", "x", "host"][..]),
             prop::sample::select(SERVICES), proptest::option::of(prop::sample::select(ARGUMENTS))),
            1..20,
        ),
    ) {
        let policy = load_valid(&generated);
        for (from, to, service, argument) in queries {
            let text = match argument { Some(argument) => format!("{service}+{argument}"), None => service.to_owned() };
            let call = ServiceCall::parse(&text).unwrap();
            let decision = policy.decide(from, to, &call);
            let expected = naive_decision(policy.spec(), from, to, &call);
            prop_assert_eq!((decision.action, decision.target.map(str::to_owned)), expected, "{} -> {} {}", from, to, text);
        }
    }
}
