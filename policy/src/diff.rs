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

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

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
    /// Calls decided differently, sorted by from, to and call: the first
    /// [`MAX_LISTED_DECISIONS`] of them.
    pub decisions: Vec<DecisionChange>,
    /// How many more calls are decided differently than `decisions` lists
    /// (a change of `@any` to `@any` in a policy of thousands of
    /// compartments changes millions of decisions).
    pub unlisted_decisions: u64,
    /// Compartments and template added, removed or changed, and the host's
    /// offers changed.
    pub fields: Vec<FieldChange>,
}

/// The most decision changes a [`PolicyDiff`] lists; the rest are counted.
pub const MAX_LISTED_DECISIONS: usize = 10_000;

impl PolicyDiff {
    /// Whether the two policies behave the same.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty() && self.unlisted_decisions == 0 && self.fields.is_empty()
    }
}

/// Compares what `old` and `new` allow.
pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let (decisions, unlisted_decisions) = DecisionDiff::new(old, new).changes(MAX_LISTED_DECISIONS);
    PolicyDiff { decisions, unlisted_decisions, fields: field_changes(old, new) }
}

/// Comparing decisions without deciding every (caller, destination, call):
/// that is (compartments + 1)² × calls decisions, minutes for a policy of
/// thousands of compartments.
///
/// Every name either policy knows is an *element* (and `@disposable`, and
/// `host`). Two callers that are in the `from` sets of exactly the same
/// rules (of both policies) that can match a call are decided alike for
/// that call, whoever the destination, redirects included (the direct call
/// to a target is decided by the same rules); so are two destinations in
/// the `to` sets of the same rules. So for each call, the elements are
/// split into classes by the sets they are in, and one decision a pair of
/// classes is compared.
///
/// The `*` rules can match every call: their sets give every element a
/// *base* class, once. A call's own (named) rules then split off the
/// elements they name (*touched*): a caller no named rule of the call
/// matches is decided by the `*` rules alone, the same way for every call,
/// so those pairs are compared once for all calls. Each call costs the
/// sizes of its own rules' sets, plus a decision per pair of classes, plus
/// the lines it prints; calls with the same rules are compared once.
struct DecisionDiff<'p> {
    sides: [Side<'p>; 2],
    /// Every element's label, in order.
    labels: Vec<&'p str>,
    /// The element that is the host (never a caller), if any.
    host: Option<u32>,
    calls: Vec<(String, ServiceCall)>,
    /// A call no named rule of either policy matches: only `*` rules do.
    unnamed: Option<ServiceCall>,
    /// Elements' members of a policy's set (by side and id), computed once.
    members: FxHashMap<u64, Arc<[u32]>>,
}

/// One policy, as the diff sees it.
struct Side<'p> {
    policy: &'p Policy,
    /// Each element's subject in this policy, if it has one.
    subject: Vec<Option<usize>>,
    /// Each subject's elements.
    elements: Vec<Vec<u32>>,
    /// The rules of each service a rule names, by index.
    named: FxHashMap<&'p str, Vec<usize>>,
    /// The `*` rules, by index.
    any: Vec<usize>,
}

impl<'p> Side<'p> {
    fn new(policy: &'p Policy, labels: &[&str]) -> Self {
        let subjects = policy.index().subjects();
        let mut elements = vec![Vec::new(); subjects.len()];
        let subject: Vec<Option<usize>> = labels
            .iter()
            .map(|label| {
                let resolved = if *label == AD_HOC {
                    subjects.disposable().map_or(Subject::Unknown, Subject::Known)
                } else {
                    subjects.resolve(label)
                };
                match resolved {
                    Subject::Known(subject) => Some(subject),
                    Subject::Unknown => None,
                }
            })
            .collect();
        for (element, subject) in subject.iter().enumerate() {
            if let Some(list) = subject.and_then(|subject| elements.get_mut(subject)) {
                list.push(element_number(element));
            }
        }
        let mut named: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        let mut any = Vec::new();
        for (index, rule) in policy.rules().iter().enumerate() {
            match rule.service.service_name() {
                Some(name) => named.entry(name).or_default().push(index),
                None => any.push(index),
            }
        }
        Self { policy, subject, elements, named, any }
    }

    /// The named rules that can match `call`: its service's, without an
    /// argument or with the call's.
    fn rules_for(&self, call: &ServiceCall) -> Vec<usize> {
        let Some(rules) = self.named.get(call.name()) else { return Vec::new() };
        rules
            .iter()
            .copied()
            .filter(|index| match self.policy.rules().get(*index).map(|rule| &rule.service) {
                Some(ServicePattern::Named { argument: Some(argument), .. }) => {
                    call.argument() == Some(argument.as_str())
                }
                _ => true,
            })
            .collect()
    }

    fn verdict(&self, from: u32, to: u32, call: &ServiceCall) -> Verdict {
        let subject = |element: u32| self.subject.get(element as usize).copied().flatten();
        match (subject(from), subject(to)) {
            (Some(from), Some(to)) => Verdict::of(&self.policy.index().decide_subjects(from, to, call)),
            _ => Verdict::of(&Decision::NO_MATCH),
        }
    }
}

fn element_number(element: usize) -> u32 {
    u32::try_from(element).unwrap_or(u32::MAX)
}

/// Which sets a rule contributes to a class: its `from` or its `to`.
#[derive(Clone, Copy)]
enum End {
    From,
    To,
}

/// A partition of the elements into classes by the sets they are in.
#[derive(Default)]
struct Classes {
    /// Each element's class (for the elements it covers).
    class_of: FxHashMap<u32, u32>,
    /// Each class's elements, ascending.
    members: Vec<Vec<u32>>,
}

impl Classes {
    /// Classes of `elements` (ascending) by `tokens`: the sets each is in.
    fn split(elements: impl Iterator<Item = u32>, tokens: &FxHashMap<u32, Vec<u64>>, base: Option<&Vec<u32>>) -> Self {
        let mut by_key: FxHashMap<(u32, &[u64]), u32> = FxHashMap::default();
        let mut classes = Self::default();
        for element in elements {
            let base_class = base.and_then(|base| base.get(element as usize)).copied().unwrap_or(0);
            let key = (base_class, tokens.get(&element).map_or(&[][..], Vec::as_slice));
            let next = u32::try_from(classes.members.len()).unwrap_or(u32::MAX);
            let class = *by_key.entry(key).or_insert(next);
            if class == next {
                classes.members.push(Vec::new());
            }
            if let Some(list) = classes.members.get_mut(class as usize) {
                list.push(element);
            }
            classes.class_of.insert(element, class);
        }
        classes
    }
}

impl<'p> DecisionDiff<'p> {
    fn new(old: &'p Policy, new: &'p Policy) -> Self {
        let mut labels: BTreeSet<&str> = old.compartment_names().chain(new.compartment_names()).collect();
        if old.spec().app_template.is_some() || new.spec().app_template.is_some() {
            labels.insert(AD_HOC);
        }
        // The host is only ever a destination: nothing matches it as a caller.
        if old.host().is_some() || new.host().is_some() {
            labels.insert(HOST);
        }
        let labels: Vec<&str> = labels.into_iter().collect();
        let host = labels.iter().position(|label| *label == HOST).map(element_number);
        let calls = calls_of(old, new);
        let unnamed = unnamed_call(old, new);
        let sides = [Side::new(old, &labels), Side::new(new, &labels)];
        Self { sides, labels, host, calls, unnamed, members: FxHashMap::default() }
    }

    /// The elements in rule `index`'s `from` or `to` set, of side `side`,
    /// and the token that names that set.
    fn set_of(&mut self, side: usize, index: usize, end: End) -> Option<(u64, Arc<[u32]>)> {
        let policy = self.sides.get(side)?;
        let (from, to) = policy.policy.index().rule_sets(index)?;
        let set = match end {
            End::From => from,
            End::To => to,
        };
        let token = (side as u64) << 32 | u64::from(set.id());
        if let Some(members) = self.members.get(&token) {
            return Some((token, Arc::clone(members)));
        }
        let mut members: Vec<u32> = set
            .members()
            .iter()
            .flat_map(|subject| policy.elements.get(*subject as usize).into_iter().flatten().copied())
            .collect();
        members.sort_unstable();
        let members: Arc<[u32]> = members.into();
        self.members.insert(token, Arc::clone(&members));
        Some((token, members))
    }

    /// Each element in some set of `rules` (by side), with the tokens of
    /// the sets it is in, in a fixed order.
    fn tokens(&mut self, rules: &[Vec<usize>; 2], end: End) -> FxHashMap<u32, Vec<u64>> {
        let mut tokens: FxHashMap<u32, Vec<u64>> = FxHashMap::default();
        let mut seen: FxHashSet<u64> = FxHashSet::default();
        for (side, rules) in rules.iter().enumerate() {
            for index in rules {
                let Some((token, members)) = self.set_of(side, *index, end) else { continue };
                if !seen.insert(token) {
                    continue;
                }
                for element in members.iter() {
                    tokens.entry(*element).or_default().push(token);
                }
            }
        }
        tokens
    }

    /// The first `limit` changes, sorted by caller, destination and call
    /// (the order of elements and of calls), and how many more there are.
    fn changes(mut self, limit: usize) -> (Vec<DecisionChange>, u64) {
        let elements = self.labels.len();
        let everyone = 0..element_number(elements);
        let callers: Vec<u32> = everyone.clone().filter(|element| Some(*element) != self.host).collect();
        let star = [self.sides[0].any.clone(), self.sides[1].any.clone()];
        let all_calls = std::mem::take(&mut self.calls);

        // Base classes, from the `*` rules.
        let caller_tokens = self.tokens(&star, End::From);
        let base_callers = Classes::split(callers.iter().copied(), &caller_tokens, None);
        let dest_tokens = self.tokens(&star, End::To);
        let base_dests = Classes::split(everyone, &dest_tokens, None);
        let base_caller_of = dense(&base_callers, elements);
        let base_dest_of = dense(&base_dests, elements);
        let shared = |classes: &Classes| -> Vec<Arc<[u32]>> {
            classes.members.iter().map(|list| list.as_slice().into()).collect()
        };
        let (base_caller_lists, base_dest_lists) = (shared(&base_callers), shared(&base_dests));

        // Callers no named rule matches: the `*` rules decide, for any call.
        let mut star_changes: Vec<(usize, usize, Verdict, Verdict)> = Vec::new();
        if let Some(unnamed) = &self.unnamed {
            for (caller_class, caller_members) in base_callers.members.iter().enumerate() {
                let Some(&from) = caller_members.first() else { continue };
                for (dest_class, dest_members) in base_dests.members.iter().enumerate() {
                    let Some(&to) = dest_members.first() else { continue };
                    let before = self.sides[0].verdict(from, to, unnamed);
                    let after = self.sides[1].verdict(from, to, unnamed);
                    if before != after {
                        star_changes.push((caller_class, dest_class, before, after));
                    }
                }
            }
        }

        // The calls, grouped by the named rules that can match them.
        let mut groups: Vec<([Vec<usize>; 2], Vec<u32>)> = Vec::new();
        let mut group_of: FxHashMap<[Vec<usize>; 2], usize> = FxHashMap::default();
        for (number, (_, call)) in all_calls.iter().enumerate() {
            let key = [self.sides[0].rules_for(call), self.sides[1].rules_for(call)];
            let number = element_number(number);
            match group_of.get(&key) {
                Some(group) => {
                    if let Some((_, calls)) = groups.get_mut(*group) {
                        calls.push(number);
                    }
                }
                None => {
                    group_of.insert(key.clone(), groups.len());
                    groups.push((key, vec![number]));
                }
            }
        }

        let mut blocks: Vec<Block> = Vec::new();
        for (rules, calls) in groups {
            let Some((_, call)) = calls.first().and_then(|call| all_calls.get(*call as usize)) else { continue };
            let calls: Arc<[u32]> = calls.into();
            let caller_tokens = self.tokens(&rules, End::From);
            let dest_tokens = self.tokens(&rules, End::To);
            let mut touched_callers: Vec<u32> =
                caller_tokens.keys().copied().filter(|element| Some(*element) != self.host).collect();
            touched_callers.sort_unstable();
            let mut touched_dests: Vec<u32> = dest_tokens.keys().copied().collect();
            touched_dests.sort_unstable();
            let callers = Classes::split(touched_callers.iter().copied(), &caller_tokens, Some(&base_caller_of));
            let dests = Classes::split(touched_dests.iter().copied(), &dest_tokens, Some(&base_dest_of));
            let touched_caller_set: Arc<FxHashSet<u32>> = Arc::new(touched_callers.iter().copied().collect());
            let touched_dest_set: Arc<FxHashSet<u32>> = Arc::new(touched_dests.iter().copied().collect());

            // Destinations: the classes of those a named rule names, and
            // the rest of each base class (which the named rules do not
            // tell apart), each with a representative.
            let mut dest_groups: Vec<(u32, Members)> = dests
                .members
                .iter()
                .filter_map(|members| Some((*members.first()?, Members::all(members.as_slice().into()))))
                .collect();
            let mut touched_per_base: FxHashMap<u32, u64> = FxHashMap::default();
            for element in &touched_dests {
                *touched_per_base.entry(base_dest_of.get(*element as usize).copied().unwrap_or(0)).or_default() += 1;
            }
            for (class, list) in base_dest_lists.iter().enumerate() {
                let touched = touched_per_base.get(&element_number(class)).copied().unwrap_or(0);
                let rest = Members::except(Arc::clone(list), Arc::clone(&touched_dest_set), touched);
                if let Some(first) = rest.first() {
                    dest_groups.push((first, rest));
                }
            }
            for caller_members in &callers.members {
                let Some(&from) = caller_members.first() else { continue };
                let caller_list: Arc<[u32]> = caller_members.as_slice().into();
                for (to, dest_members) in &dest_groups {
                    let before = self.sides[0].verdict(from, *to, call);
                    let after = self.sides[1].verdict(from, *to, call);
                    if before != after {
                        blocks.push(Block {
                            callers: Members::all(Arc::clone(&caller_list)),
                            dests: dest_members.clone(),
                            calls: Arc::clone(&calls),
                            before,
                            after,
                        });
                    }
                }
            }
            // Callers no named rule of the call matches.
            let mut touched_callers_per_base: FxHashMap<u32, u64> = FxHashMap::default();
            for element in &touched_callers {
                *touched_callers_per_base
                    .entry(base_caller_of.get(*element as usize).copied().unwrap_or(0))
                    .or_default() += 1;
            }
            for (caller_class, dest_class, before, after) in &star_changes {
                let (Some(caller_list), Some(dest_list)) =
                    (base_caller_lists.get(*caller_class), base_dest_lists.get(*dest_class))
                else {
                    continue;
                };
                let touched = touched_callers_per_base.get(&element_number(*caller_class)).copied().unwrap_or(0);
                blocks.push(Block {
                    callers: Members::except(Arc::clone(caller_list), Arc::clone(&touched_caller_set), touched),
                    dests: Members::all(Arc::clone(dest_list)),
                    calls: Arc::clone(&calls),
                    before: before.clone(),
                    after: after.clone(),
                });
            }
        }
        self.first_changes(&blocks, &all_calls, limit)
    }

    /// The first `limit` changes of `blocks` in order (a merge of the
    /// blocks, each in order), and how many more there are.
    fn first_changes(
        &self,
        blocks: &[Block],
        calls: &[(String, ServiceCall)],
        limit: usize,
    ) -> (Vec<DecisionChange>, u64) {
        let total = blocks.iter().map(Block::count).fold(0u64, u64::saturating_add);
        let mut heap: BinaryHeap<Reverse<(Position, usize)>> = BinaryHeap::new();
        let mut cursors: Vec<Option<Cursor>> = blocks.iter().map(Block::start).collect();
        for (index, (block, cursor)) in blocks.iter().zip(&cursors).enumerate() {
            if let Some(cursor) = cursor {
                heap.extend(block.at(cursor).map(|key| Reverse((key, index))));
            }
        }
        let label = |element: u32| self.labels.get(element as usize).copied().unwrap_or_default();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(Reverse(((from, to, call), index))) = heap.pop() else { break };
            let (Some(block), Some(slot)) = (blocks.get(index), cursors.get_mut(index)) else { break };
            out.push(DecisionChange {
                from: label(from).to_owned(),
                to: label(to).to_owned(),
                call: calls.get(call as usize).map(|(label, _)| label.clone()).unwrap_or_default(),
                before: block.before.clone(),
                after: block.after.clone(),
            });
            *slot = slot.take().and_then(|cursor| block.next(cursor));
            if let Some(cursor) = slot {
                heap.extend(block.at(cursor).map(|key| Reverse((key, index))));
            }
        }
        let listed = out.len() as u64;
        (out, total.saturating_sub(listed))
    }
}

/// Some elements: a class, or a base class less the elements a call's
/// named rules touch.
#[derive(Clone, Debug)]
struct Members {
    list: Arc<[u32]>,
    except: Option<Arc<FxHashSet<u32>>>,
    count: u64,
}

impl Members {
    fn all(list: Arc<[u32]>) -> Self {
        Self { count: list.len() as u64, list, except: None }
    }

    /// `list` without the `excluded` elements, of which `excluded_here`
    /// are in `list`.
    fn except(list: Arc<[u32]>, except: Arc<FxHashSet<u32>>, excluded_here: u64) -> Self {
        Self { count: (list.len() as u64).saturating_sub(excluded_here), list, except: Some(except) }
    }

    /// The position of the first member at or after position `from`.
    fn next_from(&self, from: usize) -> Option<usize> {
        let rest = self.list.get(from..)?;
        let skip =
            rest.iter().position(|element| self.except.as_ref().is_none_or(|except| !except.contains(element)))?;
        Some(from + skip)
    }

    fn first(&self) -> Option<u32> {
        self.next_from(0).and_then(|at| self.list.get(at).copied())
    }
}

/// Calls decided the same different way for every caller of `callers`,
/// destination of `dests` and call of `calls`.
#[derive(Debug)]
struct Block {
    callers: Members,
    dests: Members,
    /// Indices into the calls, ascending.
    calls: Arc<[u32]>,
    before: Verdict,
    after: Verdict,
}

/// A change's (caller, destination, call), by element and call number.
type Position = (u32, u32, u32);

/// A position in a block: caller, destination and call positions.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    caller: usize,
    dest: usize,
    call: usize,
}

impl Block {
    fn count(&self) -> u64 {
        self.callers.count.saturating_mul(self.dests.count).saturating_mul(self.calls.len() as u64)
    }

    fn start(&self) -> Option<Cursor> {
        if self.calls.is_empty() {
            return None;
        }
        Some(Cursor { caller: self.callers.next_from(0)?, dest: self.dests.next_from(0)?, call: 0 })
    }

    fn at(&self, cursor: &Cursor) -> Option<Position> {
        Some((
            *self.callers.list.get(cursor.caller)?,
            *self.dests.list.get(cursor.dest)?,
            *self.calls.get(cursor.call)?,
        ))
    }

    /// The position after `cursor`, in order: calls, then destinations,
    /// then callers.
    fn next(&self, cursor: Cursor) -> Option<Cursor> {
        if cursor.call + 1 < self.calls.len() {
            return Some(Cursor { call: cursor.call + 1, ..cursor });
        }
        if let Some(dest) = self.dests.next_from(cursor.dest + 1) {
            return Some(Cursor { dest, call: 0, ..cursor });
        }
        let caller = self.callers.next_from(cursor.caller + 1)?;
        Some(Cursor { caller, dest: self.dests.next_from(0)?, call: 0 })
    }
}

/// Each element's class, as a vector (elements not covered get class 0,
/// which is only read for elements that are).
fn dense(classes: &Classes, elements: usize) -> Vec<u32> {
    let mut of = vec![0; elements];
    for (element, class) in &classes.class_of {
        if let Some(slot) = of.get_mut(*element as usize) {
            *slot = *class;
        }
    }
    of
}

/// A call of a service no rule of either policy names (only `*` rules
/// match it), if there is a `*` rule at all.
fn unnamed_call(old: &Policy, new: &Policy) -> Option<ServiceCall> {
    let rules = || old.rules().iter().chain(new.rules());
    if !rules().any(|rule| rule.service == ServicePattern::Any) {
        return None;
    }
    let named: FxHashSet<&str> = rules().filter_map(|rule| rule.service.service_name()).collect();
    let name = (0..).map(|n| format!("other-service-{n}")).find(|name| !named.contains(name.as_str()))?;
    ServiceCall::parse(&name).ok()
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
    if diff.unlisted_decisions > 0 {
        let _ = writeln!(
            out,
            "... and {} more call{} decided differently",
            diff.unlisted_decisions,
            if diff.unlisted_decisions == 1 { "" } else { "s" }
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
