//! `ward policy diff OLD NEW`: what a change would allow or forbid that it
//! did not before.
//!
//! Decisions are compared over every (from, to, call) combination that can
//! differ: every compartment of either policy plus one stand-in for ad-hoc
//! compartments, and every service either policy names or offers, once
//! without an argument (which stands for every argument no rule names) and
//! once with each argument a rule names, plus one stand-in for services no
//! rule names if a `*` rule exists. If either policy has a `[host]`, calls
//! to the host (as a destination only: it does not call compartments) are
//! compared too. Changes to compartments' limits, devices and network
//! rules, and to the host's offers, are listed field by field.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::Policy;
use crate::display::Quoted;
use crate::eval::{Decision, ServiceCall};
use crate::model::{Action, CompartmentSpec, HOST, HostSpec, ServicePattern};
use crate::subjects::Subject;

/// The name the diff shows for ad-hoc compartments.
pub const AD_HOC: &str = "@disposable";

/// The name the diff shows for a service no rule of either policy names.
pub const OTHER_SERVICE: &str = "*";

/// A decision without the rule that made it, so two policies compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Allow, deny or ask.
    pub action: Action,
    /// Redirect target, for allow and ask.
    pub target: Option<String>,
}

impl Verdict {
    fn of(decision: &Decision<'_>) -> Self {
        Self { action: decision.action, target: decision.target.map(str::to_owned) }
    }

    /// How much it grants: deny < ask < allow.
    fn rank(&self) -> u8 {
        match self.action {
            Action::Deny => 0,
            Action::Ask => 1,
            Action::Allow => 2,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.action.as_str())?;
        match &self.target {
            Some(target) => write!(f, " (to {})", Quoted(target)),
            None => Ok(()),
        }
    }
}

/// One call decided differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionChange {
    /// The caller ([`AD_HOC`] for ad-hoc compartments).
    pub from: String,
    /// The destination ([`AD_HOC`] for ad-hoc compartments, [`HOST`] for
    /// the host's services).
    pub to: String,
    /// The call (`service`, `service+argument`, or [`OTHER_SERVICE`]).
    pub call: String,
    /// What the old policy decided.
    pub before: Verdict,
    /// What the new policy decides.
    pub after: Verdict,
}

impl DecisionChange {
    /// Whether the new policy grants more (deny to ask or allow, ask to
    /// allow); a change of redirect target alone counts as granting more,
    /// since a different compartment now receives the call.
    pub fn grants_more(&self) -> bool {
        self.after.rank() > self.before.rank() || (self.after.rank() == self.before.rank() && self.after != self.before)
    }
}

/// One field of a compartment (or the template) that changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    /// `compartment "mail"`, `template "app"` or `host`.
    pub subject: String,
    /// The field (`memory`, `devices.network`, `network`, ...).
    pub field: String,
    /// The old value, or `None` if it was added.
    pub before: Option<String>,
    /// The new value, or `None` if it was removed.
    pub after: Option<String>,
}

/// Everything a change would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Calls decided differently, sorted by from, to and call.
    pub decisions: Vec<DecisionChange>,
    /// Compartments and template added, removed or changed, and the host's
    /// offers changed.
    pub fields: Vec<FieldChange>,
}

impl PolicyDiff {
    /// Whether the two policies behave the same.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.fields.is_empty()
    }
}

/// Compares what `old` and `new` allow.
pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let mut names: BTreeSet<&str> = old.compartment_names().chain(new.compartment_names()).collect();
    let any_template = old.spec().app_template.is_some() || new.spec().app_template.is_some();
    if any_template {
        names.insert(AD_HOC);
    }
    // The host is only ever a destination: nothing matches it as a caller.
    let mut destinations = names.clone();
    if old.host().is_some() || new.host().is_some() {
        destinations.insert(HOST);
    }
    let calls = calls_of(old, new);

    let mut decisions = Vec::new();
    for from in &names {
        for to in &destinations {
            for (label, call) in &calls {
                let before = decide(old, from, to, call);
                let after = decide(new, from, to, call);
                if before != after {
                    decisions.push(DecisionChange {
                        from: (*from).to_owned(),
                        to: (*to).to_owned(),
                        call: label.clone(),
                        before,
                        after,
                    });
                }
            }
        }
    }
    PolicyDiff { decisions, fields: field_changes(old, new) }
}

fn decide(policy: &Policy, name: &str, to: &str, call: &ServiceCall) -> Verdict {
    let subject = |name: &str| {
        if name == AD_HOC {
            policy.index().subjects().disposable().map_or(Subject::Unknown, Subject::Known)
        } else {
            policy.index().subjects().resolve(name)
        }
    };
    match (subject(name), subject(to)) {
        (Subject::Known(from), Subject::Known(to)) => Verdict::of(&policy.index().decide_subjects(from, to, call)),
        _ => Verdict::of(&Decision::NO_MATCH),
    }
}

/// The calls worth comparing, each with the label the diff shows.
fn calls_of(old: &Policy, new: &Policy) -> Vec<(String, ServiceCall)> {
    let mut services: BTreeSet<String> = BTreeSet::new();
    let mut with_argument: BTreeSet<String> = BTreeSet::new();
    let mut any_service_rule = false;
    for policy in [old, new] {
        for rule in policy.rules() {
            match &rule.service {
                ServicePattern::Any => any_service_rule = true,
                ServicePattern::Named { name, argument } => {
                    services.insert(name.clone());
                    if let Some(argument) = argument {
                        with_argument.insert(format!("{name}+{argument}"));
                    }
                }
            }
        }
        let spec = policy.spec();
        for compartment in spec.compartments.values().chain(&spec.app_template) {
            services.extend(compartment.offers.iter().cloned());
        }
        if let Some(host) = &spec.host {
            services.extend(host.offers.iter().cloned());
        }
    }
    let mut calls: Vec<(String, ServiceCall)> = services
        .iter()
        .chain(&with_argument)
        .filter_map(|text| ServiceCall::parse(text).ok().map(|call| (text.clone(), call)))
        .collect();
    if any_service_rule {
        // A name no rule or offer uses: only `*` rules can match it.
        let unused = (0..).map(|n| format!("other-service-{n}")).find(|name| !services.contains(name));
        if let Some(call) = unused.and_then(|name| ServiceCall::parse(&name).ok()) {
            calls.push((OTHER_SERVICE.to_owned(), call));
        }
    }
    calls.sort_by(|(a, _), (b, _)| a.cmp(b));
    calls
}

fn field_changes(old: &Policy, new: &Policy) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let names: BTreeSet<&str> = old.compartment_names().chain(new.compartment_names()).collect();
    for name in names {
        let subject = format!("compartment {}", Quoted(name));
        compare(&mut changes, &subject, old.spec().compartments.get(name), new.spec().compartments.get(name));
    }
    compare(&mut changes, "template \"app\"", old.spec().app_template.as_ref(), new.spec().app_template.as_ref());
    let (old_host, new_host) = (host_offers(old.host()), host_offers(new.host()));
    if old_host != new_host {
        changes.push(FieldChange {
            subject: HOST.to_owned(),
            field: "offers".to_owned(),
            before: Some(old_host),
            after: Some(new_host),
        });
    }
    changes
}

/// The host's offers as the diff shows them: `["notify", "print"]`, or
/// `no [host]`.
fn host_offers(host: Option<&HostSpec>) -> String {
    match host {
        Some(host) => {
            let quoted: Vec<String> = host.offers.iter().map(|service| Quoted(service).to_string()).collect();
            format!("[{}]", quoted.join(", "))
        }
        None => "no [host]".to_owned(),
    }
}

fn compare(
    changes: &mut Vec<FieldChange>,
    subject: &str,
    old: Option<&CompartmentSpec>,
    new: Option<&CompartmentSpec>,
) {
    let fields = |spec: Option<&CompartmentSpec>| spec.map(describe).unwrap_or_default();
    let (before, after) = (fields(old), fields(new));
    let mut change = |field: &str, before: Option<String>, after: Option<String>| {
        if before != after {
            changes.push(FieldChange { subject: subject.to_owned(), field: field.to_owned(), before, after });
        }
    };
    match (old, new) {
        (None, None) => {}
        (None, Some(_)) => change("defined", None, Some("added".into())),
        (Some(_), None) => change("defined", Some("removed".into()), None),
        (Some(_), Some(_)) => {
            for ((field, old_value), (_, new_value)) in before.iter().zip(&after) {
                change(field, Some(old_value.clone()), Some(new_value.clone()));
            }
            // Lists compared item by item, so the diff says what came and went.
            let items = |spec: Option<&CompartmentSpec>,
                         list: fn(&CompartmentSpec) -> Vec<String>|
             -> BTreeSet<String> { spec.map(list).unwrap_or_default().into_iter().collect() };
            for (field, list) in LISTS {
                let (old_items, new_items) = (items(old, *list), items(new, *list));
                for removed in old_items.difference(&new_items) {
                    change(field, Some(removed.clone()), None);
                }
                for added in new_items.difference(&old_items) {
                    change(field, None, Some(added.clone()));
                }
            }
        }
    }
}

/// The scalar fields of a compartment, each as text.
fn describe(spec: &CompartmentSpec) -> Vec<(&'static str, String)> {
    vec![
        ("role", spec.role.to_string()),
        ("image", Quoted(&spec.image).to_string()),
        ("memory", format!("{} MiB", spec.memory_mib)),
        ("vcpus", spec.vcpus.to_string()),
        ("autostart", spec.autostart.to_string()),
        ("restart", spec.restart.as_str().to_owned()),
        ("devices.console", spec.devices.console.to_string()),
        ("devices.rng", spec.devices.rng.to_string()),
        ("devices.vsock", spec.devices.vsock.to_string()),
        ("devices.network", spec.devices.network.to_string()),
    ]
}

type ListOf = fn(&CompartmentSpec) -> Vec<String>;

/// The list fields of a compartment, each item as text.
const LISTS: &[(&str, ListOf)] = &[
    ("tags", |spec| spec.tags.iter().cloned().collect()),
    ("offers", |spec| spec.offers.iter().cloned().collect()),
    ("devices.block", |spec| {
        spec.devices
            .block
            .iter()
            .map(|volume| {
                let access = if volume.read_only { "read-only" } else { "read-write" };
                format!("{} {} MiB {access}", Quoted(&volume.name), volume.size_mib)
            })
            .collect()
    }),
    ("network", |spec| {
        spec.network
            .iter()
            .map(|rule| {
                if rule.ports.is_empty() {
                    format!("{} (all ports)", rule.peer)
                } else {
                    let ports: Vec<String> = rule.ports.iter().map(ToString::to_string).collect();
                    format!("{} ports {}", rule.peer, ports.join(","))
                }
            })
            .collect()
    }),
];

/// The diff as text: `+` lines grant more than before, `-` lines less.
///
/// ```text
/// + sign from mail to vault: deny -> allow
/// - storage.get from app-1 to storage: allow -> deny
/// ~ compartment "mail": memory: 256 MiB -> 512 MiB
/// + compartment "mail": network: 192.0.2.0/24 ports 443
/// ~ host: offers: ["notify"] -> ["notify", "print"]
/// ```
pub fn render_diff(diff: &PolicyDiff) -> String {
    if diff.is_empty() {
        return "no change: both policies decide and allow the same\n".to_owned();
    }
    let mut out = String::new();
    for change in &diff.decisions {
        let sign = if change.grants_more() { '+' } else { '-' };
        let _ = writeln!(
            out,
            "{sign} {} from {} to {}: {} -> {}",
            change.call, change.from, change.to, change.before, change.after
        );
    }
    for change in &diff.fields {
        let _ = match (&change.before, &change.after) {
            (Some(before), Some(after)) => {
                writeln!(out, "~ {}: {}: {before} -> {after}", change.subject, change.field)
            }
            (None, Some(after)) if change.field == "defined" => writeln!(out, "+ {} {after}", change.subject),
            (Some(before), None) if change.field == "defined" => writeln!(out, "- {} {before}", change.subject),
            (None, Some(after)) => writeln!(out, "+ {}: {}: {after}", change.subject, change.field),
            (Some(before), None) => writeln!(out, "- {}: {}: {before}", change.subject, change.field),
            (None, None) => Ok(()),
        };
    }
    out
}
