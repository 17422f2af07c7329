//! Checks that need the whole policy: names defined twice (also across
//! files), rules naming compartments or tags that do not exist, patterns
//! that match nothing, `allow`s of services nobody offers, and rules an
//! earlier rule shadows, and rules that name the host (`host`) wrongly:
//! as a caller, without a `[host]`, or for a service it does not offer. Turns the drafts into the policy's data and the
//! positions `explain` reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::display::Quoted;
use crate::error::{ErrorKind, Location, PolicyError};
use crate::eval::{RuleIndex, ServiceCall};
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
    /// Where each rule's `target` is, by rule index.
    pub(crate) targets: Vec<Option<Location>>,
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
        origins.targets.push(rule.target_at);
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
                let set = subjects.matching(pattern);
                report_empty(rule, &set, field, pattern, at, errors);
                Some(set)
            };
        let from = set_of(from_known, &rule.rule.from, &rule.from_at, "from", errors);
        let to = set_of(to_known, &rule.rule.to, &rule.to_at, "to", errors);
        // A damaged rule holds stand-ins, so it neither shadows nor is shadowed.
        let sound = !rule.damaged && target_known;
        checked.push(from.zip(to).filter(|_| sound));
    }
    report_shadowed(&subjects, rules, &checked, errors);
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
/// too, so it is never reached.
///
/// Rather than comparing each rule with every earlier one (quadratic in the
/// rules of a service), the earliest rule of each (service, `from` set,
/// `to` set) is kept in a table, and each rule looks up the keys that would
/// cover it: the services that cover its service (`*`, the service without
/// an argument, the service with its argument) times the canonical sets
/// that contain its `from` (among those some rule uses as `from`) times
/// those that contain its `to`. A rule naming one compartment has a few
/// such sets (its name, its role, its tags, `@any`).
fn report_shadowed(
    subjects: &Subjects,
    rules: &[DraftRule],
    sets: &[Option<(SubjectSet, SubjectSet)>],
    errors: &mut Vec<PolicyError>,
) {
    fn usable(set: &Option<(SubjectSet, SubjectSet)>) -> Option<&(SubjectSet, SubjectSet)> {
        set.as_ref().filter(|(from, to)| !from.is_empty() && !to.is_empty())
    }
    let used_from: FxHashSet<u32> = sets.iter().filter_map(usable).map(|(from, _)| from.id()).collect();
    let used_to: FxHashSet<u32> = sets.iter().filter_map(usable).map(|(_, to)| to.id()).collect();
    let mut from_supersets: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
    let mut to_supersets: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
    let supersets = |cache: &mut FxHashMap<u32, Vec<u32>>, used: &FxHashSet<u32>, set: &SubjectSet| {
        cache
            .entry(set.id())
            .or_insert_with(|| subjects.supersets(set).into_iter().filter(|id| used.contains(id)).collect())
            .clone()
    };
    // Services (with or without an argument) as small numbers; `*` is 0.
    let mut services: FxHashMap<(&str, Option<&str>), u32> = FxHashMap::default();
    let mut earliest: FxHashMap<(u32, u32, u32), usize> = FxHashMap::default();
    for (index, (rule, set)) in rules.iter().zip(sets).enumerate() {
        // Rules with an empty set were reported as matching nothing.
        let Some((from, to)) = usable(set) else { continue };
        let covering: Vec<u32> = match &rule.rule.service {
            ServicePattern::Any => vec![0],
            ServicePattern::Named { name, argument } => {
                let mut keys = vec![0];
                keys.extend(services.get(&(name.as_str(), None)));
                if let Some(argument) = argument {
                    keys.extend(services.get(&(name.as_str(), Some(argument.as_str()))));
                }
                keys
            }
        };
        let from_ids = supersets(&mut from_supersets, &used_from, from);
        let to_ids = supersets(&mut to_supersets, &used_to, to);
        let mut covered_by: Option<usize> = None;
        for service in &covering {
            for from_id in &from_ids {
                for to_id in &to_ids {
                    if let Some(&earlier) = earliest.get(&(*service, *from_id, *to_id)) {
                        covered_by = Some(covered_by.map_or(earlier, |found| found.min(earlier)));
                    }
                }
            }
        }
        if let Some(earlier) = covered_by.and_then(|earlier| rules.get(earlier)) {
            let kind = ErrorKind::Shadowed { earlier_number: earlier.number, earlier: earlier.location.clone() };
            errors.push(rule_error(rule, &rule.location, kind));
        }
        let service = match &rule.rule.service {
            ServicePattern::Any => 0,
            ServicePattern::Named { name, argument } => {
                let next = u32::try_from(services.len() + 1).unwrap_or(u32::MAX);
                *services.entry((name.as_str(), argument.as_deref())).or_insert(next)
            }
        };
        earliest.entry((service, from.id(), to.id())).or_insert(index);
    }
}

/// Reports each redirect that can never let a call through: for every
/// caller its rule matches and every call it can redirect, the same call
/// made to the target directly is denied (by an earlier `deny`, or because
/// no rule allows it) or sent somewhere else. The rule would then only
/// deny, which is not what a rule with `allow` or `ask` says. Run on a
/// policy that is otherwise valid, with its rules compiled.
///
/// Each (caller, target, call) is decided once, however many redirects ask
/// about it, and the search for a caller that may make the call stops at the
/// first.
pub(crate) fn check_redirects(spec: &PolicySpec, index: &RuleIndex, origins: &Origins) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut calls = CallSet::default();
    let mut decided: FxHashMap<(u32, usize, usize), Refusal> = FxHashMap::default();
    for (number, rule) in spec.rules.iter().enumerate() {
        let Some((from, target)) = index.redirect_of(number) else { continue };
        let Some(target_name) = rule.target.as_deref() else { continue };
        let tried = calls.for_pattern(spec, &rule.service);
        let mut first_refusal = None;
        let mut let_through = false;
        'callers: for caller in from.members() {
            for call in &tried {
                let refusal = *decided.entry((*caller, target, *call)).or_insert_with(|| {
                    let Some(service_call) = calls.get(*call) else { return Refusal::NoRule };
                    match index.rule_for(*caller as usize, target, service_call) {
                        None => Refusal::NoRule,
                        Some((direct, compiled)) => match (compiled.action(), compiled.target()) {
                            (Action::Deny, _) => Refusal::Denied(direct),
                            (_, Some(other)) if other != target_name => Refusal::Elsewhere(direct),
                            _ => Refusal::None,
                        },
                    }
                });
                if refusal == Refusal::None {
                    let_through = true;
                    break 'callers;
                }
                first_refusal.get_or_insert((*caller, *call, refusal));
            }
        }
        if let_through {
            continue;
        }
        let Some((caller, call, refusal)) = first_refusal else { continue };
        let caller = index.subjects().label(caller as usize);
        let call = calls.get(call).map(ToString::to_string).unwrap_or_default();
        let at_rule = |direct: usize| {
            let at = origins.rules.get(direct).map(|at| format!(" at {at}")).unwrap_or_default();
            format!("rule #{}{at}", direct + 1)
        };
        let example = match refusal {
            Refusal::Denied(direct) => format!(
                "for example, {} denies {} from {} to {}",
                at_rule(direct),
                Quoted(&call),
                Quoted(&caller),
                Quoted(target_name)
            ),
            Refusal::Elsewhere(direct) => format!(
                "for example, {} sends {} from {} to {} on somewhere else",
                at_rule(direct),
                Quoted(&call),
                Quoted(&caller),
                Quoted(target_name)
            ),
            Refusal::NoRule | Refusal::None => format!(
                "for example, no rule lets {} call {} on {}",
                Quoted(&caller),
                Quoted(&call),
                Quoted(target_name)
            ),
        };
        let location = origins.targets.get(number).cloned().flatten().or_else(|| origins.rules.get(number).cloned());
        let Some(location) = location else { continue };
        errors.push(PolicyError {
            location,
            context: format!("rule #{}", number + 1),
            kind: ErrorKind::RedirectRefused { target: target_name.to_owned(), example },
        });
    }
    errors
}

/// Why a redirected call would be refused, if it would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// It would not: the direct call is allowed or asked, and reaches the
    /// target.
    None,
    /// No rule matches the direct call.
    NoRule,
    /// Rule (index) denies the direct call.
    Denied(usize),
    /// Rule (index) sends the direct call to another target.
    Elsewhere(usize),
}

/// The calls a redirect is tried with: for a service, the call without an
/// argument and with each argument a rule names; for `*`, those of every
/// service a rule names, and one of a service no rule names.
#[derive(Debug, Default)]
struct CallSet {
    calls: Vec<ServiceCall>,
    /// The calls of each service, by index into `calls`.
    by_service: FxHashMap<String, Vec<usize>>,
    /// Whether `by_service` is built.
    built: bool,
    /// Every call, for `*`.
    all: Option<Vec<usize>>,
}

impl CallSet {
    fn get(&self, call: usize) -> Option<&ServiceCall> {
        self.calls.get(call)
    }

    fn add(&mut self, text: &str) -> Option<usize> {
        let call = ServiceCall::parse(text).ok()?;
        self.calls.push(call);
        Some(self.calls.len() - 1)
    }

    fn of_service(&mut self, spec: &PolicySpec, name: &str) -> Vec<usize> {
        if self.built {
            return self.by_service.get(name).cloned().unwrap_or_default();
        }
        // Built for every service at once, the first time one is asked for.
        self.built = true;
        let mut arguments: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for rule in &spec.rules {
            if let ServicePattern::Named { name, argument } = &rule.service {
                arguments.entry(name.as_str()).or_default().extend(argument.as_deref());
            }
        }
        for (service, arguments) in arguments {
            let mut calls: Vec<usize> = self.add(service).into_iter().collect();
            for argument in arguments {
                calls.extend(self.add(&format!("{service}+{argument}")));
            }
            self.by_service.insert(service.to_owned(), calls);
        }
        self.by_service.get(name).cloned().unwrap_or_default()
    }

    fn for_pattern(&mut self, spec: &PolicySpec, pattern: &ServicePattern) -> Vec<usize> {
        match pattern {
            ServicePattern::Named { name, argument: None } => self.of_service(spec, name),
            ServicePattern::Named { name, argument: Some(argument) } => {
                let wanted = format!("{name}+{argument}");
                let calls = self.of_service(spec, name);
                calls
                    .into_iter()
                    .filter(|call| self.get(*call).is_some_and(|call| call.to_string() == wanted))
                    .collect()
            }
            ServicePattern::Any => {
                if let Some(all) = &self.all {
                    return all.clone();
                }
                // Any one service will do: make sure the table is built.
                let _ = self.of_service(spec, "");
                let mut all: Vec<usize> = (0..self.calls.len()).collect();
                let unused =
                    (0..).map(|n| format!("other-service-{n}")).find(|name| !self.by_service.contains_key(name));
                all.extend(unused.and_then(|name| self.add(&name)));
                self.all = Some(all.clone());
                all
            }
        }
    }
}
