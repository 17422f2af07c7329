//! Checks that need the whole policy: names defined twice (also across
//! files), rules naming compartments or tags that do not exist, patterns
//! that match nothing, `allow`s of services nobody offers, and rules an
//! earlier rule shadows, and rules that name the host (`host`) wrongly:
//! as a caller, without a `[host]`, or for a service it does not offer. Turns the drafts into the policy's data and the
//! positions `explain` reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{ErrorKind, Location, PolicyError};
use crate::model::{Action, HOST, Pattern, PolicySpec, ServicePattern};
use crate::parse::{Draft, DraftCompartment, DraftRule};
use crate::subjects::{SubjectSet, Subjects};

/// Where each part of a valid policy was written.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    pub(crate) compartments: HashMap<String, Location>,
    pub(crate) template: Option<Location>,
    /// Where `[host]` is.
    pub(crate) host: Option<Location>,
    /// By rule index.
    pub(crate) rules: Vec<Location>,
}

/// Merges the drafts and checks them. The result is only used if `errors`
/// stays empty.
pub(crate) fn validate(draft: Draft, errors: &mut Vec<PolicyError>) -> (PolicySpec, Origins) {
    let mut spec = PolicySpec::default();
    let mut origins = Origins::default();
    let any_damaged = draft.compartments.iter().chain(&draft.templates).any(|compartment| compartment.damaged);

    merge_compartments(draft.compartments, &mut spec, &mut origins, errors);
    for template in draft.templates {
        match &origins.template {
            Some(first) => errors.push(PolicyError {
                location: template.location,
                context: String::new(),
                kind: ErrorKind::Duplicate { what: "template", name: "app".into(), first: first.clone() },
            }),
            None => {
                origins.template = Some(template.location);
                spec.app_template = Some(template.spec);
            }
        }
    }

    for host in draft.hosts {
        match &origins.host {
            Some(first) => errors.push(PolicyError {
                location: host.location,
                context: String::new(),
                kind: ErrorKind::Duplicate { what: "table", name: HOST.into(), first: first.clone() },
            }),
            None => {
                origins.host = Some(host.location);
                spec.host = Some(host.spec);
            }
        }
    }

    check_rules(&spec, &draft.rules, any_damaged, errors);

    for rule in draft.rules {
        origins.rules.push(rule.location);
        spec.rules.push(rule.rule);
    }
    (spec, origins)
}

/// Checks every rule against the merged compartments: names, tags and
/// offers exist, patterns match something, no rule is shadowed.
fn check_rules(spec: &PolicySpec, rules: &[DraftRule], any_damaged: bool, errors: &mut Vec<PolicyError>) {
    let subjects = Subjects::new(spec);
    let tags: BTreeSet<&str> = spec
        .compartments
        .values()
        .chain(&spec.app_template)
        .flat_map(|compartment| &compartment.tags)
        .map(String::as_str)
        .collect();
    let offered: BTreeSet<&str> = spec
        .compartments
        .values()
        .chain(&spec.app_template)
        .flat_map(|compartment| &compartment.offers)
        .map(String::as_str)
        .collect();

    let mut checked = Vec::with_capacity(rules.len());
    for rule in rules {
        let from_known = check_pattern(spec, &tags, rule, "from", errors);
        let to_known = check_pattern(spec, &tags, rule, "to", errors);
        let target_known = check_target(spec, rule, errors);
        check_offered(spec, &offered, rule, errors);
        // Set comparisons mean something only when every compartment was
        // read whole: a stand-in role or tag list would make them wrong.
        let set_of =
            |known: bool, pattern: &Pattern, at: &Location, field: &'static str, errors: &mut Vec<PolicyError>| {
                if !known || any_damaged {
                    return None;
                }
                let set = subjects.matching(spec, pattern);
                report_empty(rule, &set, field, pattern, at, errors);
                Some(set)
            };
        let from = set_of(from_known, &rule.rule.from, &rule.from_at, "from", errors);
        let to = set_of(to_known, &rule.rule.to, &rule.to_at, "to", errors);
        // A damaged rule holds stand-ins, so it neither shadows nor is shadowed.
        let sound = !rule.damaged && target_known;
        checked.push(from.zip(to).filter(|_| sound));
    }
    report_shadowed(rules, &checked, errors);
}

fn merge_compartments(
    compartments: Vec<DraftCompartment>,
    spec: &mut PolicySpec,
    origins: &mut Origins,
    errors: &mut Vec<PolicyError>,
) {
    for compartment in compartments {
        let Some(name) = compartment.name else { continue };
        if let Some(first) = origins.compartments.get(&name) {
            errors.push(PolicyError {
                location: compartment.location,
                context: String::new(),
                kind: ErrorKind::Duplicate { what: "compartment", name, first: first.clone() },
            });
            continue;
        }
        origins.compartments.insert(name.clone(), compartment.location);
        spec.compartments.insert(name, compartment.spec);
    }
}

fn rule_error(rule: &DraftRule, location: &Location, kind: ErrorKind) -> PolicyError {
    PolicyError { location: location.clone(), context: format!("rule #{}", rule.number), kind }
}

/// Checks that a pattern's names exist. Returns whether it did.
fn check_pattern(
    spec: &PolicySpec,
    tags: &BTreeSet<&str>,
    rule: &DraftRule,
    field: &'static str,
    errors: &mut Vec<PolicyError>,
) -> bool {
    let (pattern, at) = if field == "from" { (&rule.rule.from, &rule.from_at) } else { (&rule.rule.to, &rule.to_at) };
    let kind = match pattern {
        Pattern::Name(name) if !spec.compartments.contains_key(name) => {
            ErrorKind::UnknownCompartment { field, name: name.clone() }
        }
        Pattern::Tag(tag) if !tags.contains(tag.as_str()) => ErrorKind::UnknownTag { field, tag: tag.clone() },
        Pattern::Disposable if spec.app_template.is_none() => ErrorKind::NoTemplate { field },
        Pattern::Host if field == "from" => ErrorKind::HostCaller,
        Pattern::Host if spec.host.is_none() => ErrorKind::NoHost { field },
        _ => return true,
    };
    errors.push(rule_error(rule, at, kind));
    false
}

fn check_target(spec: &PolicySpec, rule: &DraftRule, errors: &mut Vec<PolicyError>) -> bool {
    match (&rule.rule.target, &rule.target_at) {
        (Some(target), Some(at)) if target == HOST => {
            if spec.host.is_some() {
                return true;
            }
            errors.push(rule_error(rule, at, ErrorKind::NoHost { field: "target" }));
            false
        }
        (Some(target), Some(at)) if !spec.compartments.contains_key(target) => {
            errors.push(rule_error(rule, at, ErrorKind::UnknownCompartment { field: "target", name: target.clone() }));
            false
        }
        _ => true,
    }
}

/// An `allow` or `ask` must name a service some compartment offers, and
/// the compartment it names as destination must offer it. A call that goes
/// to the host (`to = "host"` without a `target`, or `target = "host"`)
/// must name a service `[host]` offers instead; without a `[host]` the rule
/// is already refused for naming the host.
fn check_offered(spec: &PolicySpec, offered: &BTreeSet<&str>, rule: &DraftRule, errors: &mut Vec<PolicyError>) {
    let action = match rule.rule.action {
        Action::Allow => "allow",
        Action::Ask => "ask",
        Action::Deny => return,
    };
    let ServicePattern::Named { name: service, .. } = &rule.rule.service else { return };
    let destination = match (&rule.rule.target, &rule.target_at, &rule.rule.to) {
        (Some(target), Some(at), _) => Some((target.as_str(), at)),
        (None, _, Pattern::Name(name)) => Some((name.as_str(), &rule.to_at)),
        (None, _, Pattern::Host) => Some((HOST, &rule.to_at)),
        _ => None,
    };
    if let Some((HOST, at)) = destination {
        if let Some(host) = &spec.host
            && !host.offers.contains(service)
        {
            errors.push(rule_error(rule, at, ErrorKind::NotOfferedByHost { action, service: service.clone() }));
        }
        return;
    }
    if !offered.contains(service.as_str()) {
        errors.push(rule_error(rule, &rule.service_at, ErrorKind::NotOffered { action, service: service.clone() }));
        return;
    }
    if let Some((name, at)) = destination
        && let Some(compartment) = spec.compartments.get(name)
        && !compartment.offers.contains(service)
    {
        let kind = ErrorKind::NotOfferedBy { action, service: service.clone(), compartment: name.to_owned() };
        errors.push(rule_error(rule, at, kind));
    }
}

fn report_empty(
    rule: &DraftRule,
    set: &SubjectSet,
    field: &'static str,
    pattern: &Pattern,
    at: &Location,
    errors: &mut Vec<PolicyError>,
) {
    if set.is_empty() {
        errors.push(rule_error(rule, at, ErrorKind::MatchesNothing { field, pattern: pattern.to_string() }));
    }
}

/// Reports each rule that an earlier rule covers entirely: every service,
/// every caller and every destination it matches, the earlier one matches
/// too, so it is never reached. Only rules of the same service (or `*`)
/// are compared.
fn report_shadowed(rules: &[DraftRule], sets: &[Option<(SubjectSet, SubjectSet)>], errors: &mut Vec<PolicyError>) {
    // Earlier rules by service name; `*` rules are in every list's way too.
    let mut by_service: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut any_service: Vec<usize> = Vec::new();
    for (index, (rule, set)) in rules.iter().zip(sets).enumerate() {
        let Some((from, to)) = set else { continue };
        if from.is_empty() || to.is_empty() {
            // Already reported as matching nothing.
            continue;
        }
        let named =
            rule.rule.service.service_name().and_then(|name| by_service.get(name)).map_or(&[][..], Vec::as_slice);
        let candidates = merge_sorted(&any_service, named);
        let covering = candidates.into_iter().find(|&earlier| {
            let (Some(earlier_rule), Some(Some((earlier_from, earlier_to)))) = (rules.get(earlier), sets.get(earlier))
            else {
                return false;
            };
            earlier_rule.rule.service.covers(&rule.rule.service)
                && earlier_from.is_superset(from)
                && earlier_to.is_superset(to)
        });
        if let Some(earlier) = covering.and_then(|earlier| rules.get(earlier)) {
            let kind = ErrorKind::Shadowed { earlier_number: earlier.number, earlier: earlier.location.clone() };
            errors.push(rule_error(rule, &rule.location, kind));
        }
        match rule.rule.service.service_name() {
            Some(name) => by_service.entry(name).or_default().push(index),
            None => any_service.push(index),
        }
    }
}

/// Two ascending index lists merged into one, ascending.
fn merge_sorted(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        if x <= y {
            merged.push(x);
            i += 1;
        } else {
            merged.push(y);
            j += 1;
        }
    }
    merged.extend_from_slice(a.get(i..).unwrap_or_default());
    merged.extend_from_slice(b.get(j..).unwrap_or_default());
    merged
}
