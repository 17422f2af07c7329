//! Deciding a service call: the first rule that matches decides, no match
//! means deny.
//!
//! Rules are compiled once, when the policy is loaded: each rule's `from`
//! and `to` become sets of subject numbers, and rules are indexed by
//! service name and then by caller. A decision looks up two names and one
//! service, and then scans only the rules of that service whose `from`
//! matches the caller (and the `*` rules whose `from` does), in policy
//! order, testing one bit and the argument per rule.

use std::fmt;
use std::str::FromStr;

use rustc_hash::FxHashMap;

use crate::error::QueryError;
use crate::model::{Action, PolicySpec, ServicePattern};
use crate::names::{check_argument, check_service_name};
use crate::subjects::{Subject, SubjectSet, Subjects};

/// A service call as a caller makes it: `service` or `service+argument`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceCall {
    name: String,
    argument: Option<String>,
}

impl ServiceCall {
    /// Checks and parses `sign` or `storage.get+photos`.
    ///
    /// ```
    /// let call: ward_policy::ServiceCall = "storage.get+photos".parse().unwrap();
    /// assert_eq!(call.name(), "storage.get");
    /// assert_eq!(call.argument(), Some("photos"));
    /// ```
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let bad = |reason: String| QueryError::BadServiceCall { call: text.to_owned(), reason };
        let (name, argument) = match text.split_once('+') {
            Some((name, argument)) => (name, Some(argument)),
            None => (text, None),
        };
        check_service_name(name).map_err(bad)?;
        if let Some(argument) = argument {
            check_argument(argument).map_err(bad)?;
        }
        Ok(Self { name: name.to_owned(), argument: argument.map(str::to_owned) })
    }

    /// The service.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The argument, if any.
    pub fn argument(&self) -> Option<&str> {
        self.argument.as_deref()
    }
}

impl FromStr for ServiceCall {
    type Err = QueryError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for ServiceCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.argument {
            Some(argument) => write!(f, "{}+{argument}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What the policy says about one call.
///
/// The rule that matches the call as the caller made it (`rule`) decides,
/// unless it redirects the call (`target = "..."`): a redirect is a route,
/// not a permission, so the call then goes through only if the caller
/// could make the same call to the target directly (see [`Redirect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    /// Allow, deny or ask: what happens to the call.
    pub action: Action,
    /// For allow and ask: the compartment (or [`crate::HOST`]) the call
    /// goes to instead of the one asked for. `None` for a denied call.
    pub target: Option<&'p str>,
    /// The index (in [`crate::Policy::rules`]) of the first rule that
    /// matches the call, or `None` when no rule matched and the call is
    /// denied by default.
    pub rule: Option<usize>,
    /// If that rule redirects the call: where, and what the policy says of
    /// the same call made to the target directly.
    pub redirect: Option<Redirect<'p>>,
}

impl Decision<'_> {
    /// The default: no rule matched, deny.
    pub const NO_MATCH: Decision<'static> = Decision { action: Action::Deny, target: None, rule: None, redirect: None };

    /// Whether the call goes through without asking.
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// A redirected call, checked: the caller must be let to make the same call
/// (same service and argument) to the target itself. The policy's decision
/// for that direct call must be `allow` or `ask`, and must not send the
/// call somewhere else; the redirected call is then allowed if both the
/// redirecting rule and the direct call allow, and asked if either asks.
/// Otherwise it is denied ([`Redirect::is_refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect<'p> {
    /// Where the matching rule sends the call.
    pub target: &'p str,
    /// The rule that decides the direct call (the first that matches it),
    /// or `None` if none does (deny). It may be the redirecting rule itself
    /// (`to = "@any"` also matches the target).
    pub direct_rule: Option<usize>,
    /// What that rule decides (deny if no rule matched).
    pub direct_action: Action,
    /// That rule's own redirect target, if it has one.
    pub direct_target: Option<&'p str>,
}

impl Redirect<'_> {
    /// Whether the redirected call is denied: the direct call to the target
    /// is denied, or is itself redirected elsewhere.
    pub fn is_refused(&self) -> bool {
        self.direct_action == Action::Deny || self.direct_target.is_some_and(|target| target != self.target)
    }
}

/// The stricter of two actions: deny before ask before allow.
fn stricter(a: Action, b: Action) -> Action {
    let rank = |action: Action| match action {
        Action::Deny => 0,
        Action::Ask => 1,
        Action::Allow => 2,
    };
    if rank(a) <= rank(b) { a } else { b }
}

/// One rule, ready to test once its service is known to match.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRule {
    /// `Some` if the rule is about one argument only.
    argument: Option<Box<str>>,
    to: SubjectSet,
    action: Action,
    target: Option<Box<str>>,
}

/// Callers whose `from` set is at most this large are indexed one by one;
/// rules of larger sets are kept in a list of their own and tested.
const INDEXED_CALLERS: usize = 64;

/// Rules that can match one service (or any service, for `*` rules), in
/// policy order: those with a small `from` listed under each of its
/// callers, the others (`@any`, large tags and roles) in one list, tested
/// with their `from` set. Building costs at most 64 entries a rule, however
/// many compartments the policy has.
#[derive(Clone, Debug, Default)]
struct CallerLists {
    by_caller: ByCaller,
    broad: Vec<u32>,
}

/// Rules by caller: in a table, or, once built, in a vector by subject
/// number when the lists cover enough of the subjects for it to be small.
#[derive(Clone, Debug)]
enum ByCaller {
    Table(FxHashMap<u32, Vec<u32>>),
    Dense(Vec<Vec<u32>>),
}

impl Default for ByCaller {
    fn default() -> Self {
        Self::Table(FxHashMap::default())
    }
}

impl CallerLists {
    fn add(&mut self, index: u32, from: &SubjectSet) {
        if from.len() > INDEXED_CALLERS {
            self.broad.push(index);
            return;
        }
        if let ByCaller::Table(table) = &mut self.by_caller {
            for subject in from.members() {
                table.entry(*subject).or_default().push(index);
            }
        }
    }

    /// Turns the table into a vector if it lists rules for at least one
    /// subject in four: then the vector is at most four times the table.
    fn finish(&mut self, subjects: usize, always: bool) {
        let ByCaller::Table(table) = &mut self.by_caller else { return };
        if !always && table.len().saturating_mul(4) < subjects {
            return;
        }
        let mut dense = vec![Vec::new(); subjects];
        for (subject, list) in table.drain() {
            if let Some(slot) = dense.get_mut(subject as usize) {
                *slot = list;
            }
        }
        self.by_caller = ByCaller::Dense(dense);
    }

    /// The rules listed for `subject`, in policy order.
    #[inline]
    fn of(&self, subject: usize) -> &[u32] {
        let list = match &self.by_caller {
            ByCaller::Table(table) => u32::try_from(subject).ok().and_then(|subject| table.get(&subject)),
            ByCaller::Dense(dense) => dense.get(subject),
        };
        list.map_or(&[][..], Vec::as_slice)
    }
}

/// The compiled rules of a policy.
#[derive(Clone, Debug)]
pub(crate) struct RuleIndex {
    subjects: Subjects,
    /// What a decision reads of each rule, by index, kept small.
    rules: Vec<CompiledRule>,
    /// Each rule's `from` set, by index (read only for broad rules).
    froms: Vec<SubjectSet>,
    /// Each rule's target's subject, by index (a valid policy's targets
    /// exist).
    target_subjects: Vec<Option<usize>>,
    /// The rules of each service some rule names, without `*` rules.
    by_service: FxHashMap<Box<str>, CallerLists>,
    /// The `*` rules, kept apart so that they are not copied into every
    /// service's lists (a few `*` rules times many services would be large).
    any_service: CallerLists,
}

impl RuleIndex {
    pub(crate) fn build(spec: &PolicySpec) -> Self {
        let subjects = Subjects::new(spec);
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut froms = Vec::with_capacity(spec.rules.len());
        let mut target_subjects = Vec::with_capacity(spec.rules.len());
        let mut by_service: FxHashMap<Box<str>, CallerLists> = FxHashMap::default();
        let mut any_service = CallerLists::default();
        for (index, rule) in spec.rules.iter().enumerate() {
            // More than 4 billion rules do not fit in memory anyway.
            let Ok(index) = u32::try_from(index) else { break };
            let from = subjects.matching(&rule.from);
            let lists = match rule.service.service_name() {
                Some(name) => by_service.entry(name.into()).or_default(),
                None => &mut any_service,
            };
            lists.add(index, &from);
            rules.push(CompiledRule {
                argument: match &rule.service {
                    ServicePattern::Named { argument: Some(argument), .. } => Some(argument.as_str().into()),
                    _ => None,
                },
                to: subjects.matching(&rule.to),
                action: rule.action,
                target: rule.target.as_deref().map(Into::into),
            });
            froms.push(from);
            target_subjects.push(rule.target.as_deref().and_then(|target| match subjects.resolve(target) {
                Subject::Known(subject) => Some(subject),
                Subject::Unknown => None,
            }));
        }
        for lists in by_service.values_mut() {
            lists.finish(subjects.len(), false);
        }
        // One list for every call: always a vector.
        any_service.finish(subjects.len(), true);
        Self { subjects, rules, froms, target_subjects, by_service, any_service }
    }

    pub(crate) fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The decision for a call from `from` to `to`.
    pub(crate) fn decide(&self, from: &str, to: &str, call: &ServiceCall) -> Decision<'_> {
        match (self.subjects.resolve(from), self.subjects.resolve(to)) {
            (Subject::Known(from), Subject::Known(to)) => self.decide_subjects(from, to, call),
            _ => Decision::NO_MATCH,
        }
    }

    /// The decision for subject numbers (see [`Subjects`]): the first
    /// matching rule among the service's rules and the `*` rules, and for a
    /// redirect, the decision of the same call made to the target directly.
    pub(crate) fn decide_subjects(&self, from: usize, to: usize, call: &ServiceCall) -> Decision<'_> {
        let Some((index, rule)) = self.rule_for(from, to, call) else { return Decision::NO_MATCH };
        let Some(target) = rule.target.as_deref() else {
            return Decision { action: rule.action, target: None, rule: Some(index), redirect: None };
        };
        let target_subject = self.target_subjects.get(index).copied().flatten();
        let direct = target_subject.and_then(|target| self.rule_for(from, target, call));
        let redirect = Redirect {
            target,
            direct_rule: direct.map(|(index, _)| index),
            direct_action: direct.map_or(Action::Deny, |(_, rule)| rule.action),
            direct_target: direct.and_then(|(_, rule)| rule.target.as_deref()),
        };
        let action = if redirect.is_refused() { Action::Deny } else { stricter(rule.action, redirect.direct_action) };
        Decision {
            action,
            target: (action != Action::Deny).then_some(target),
            rule: Some(index),
            redirect: Some(redirect),
        }
    }

    /// The first rule that matches the call, by itself (its redirect not
    /// checked): its index and the rule.
    pub(crate) fn rule_for(&self, from: usize, to: usize, call: &ServiceCall) -> Option<(usize, &CompiledRule)> {
        let index = self.first_match(from, to, call)?;
        self.rules.get(index as usize).map(|rule| (index as usize, rule))
    }

    /// The `from` and `to` sets of rule `index`.
    pub(crate) fn rule_sets(&self, index: usize) -> Option<(&SubjectSet, &SubjectSet)> {
        Some((self.froms.get(index)?, &self.rules.get(index)?.to))
    }

    /// The `from` set and the target's subject of rule `index`, if it
    /// redirects.
    pub(crate) fn redirect_of(&self, index: usize) -> Option<(&SubjectSet, usize)> {
        Some((self.froms.get(index)?, self.target_subjects.get(index).copied().flatten()?))
    }

    /// The index of the first rule that matches the call, if any.
    #[inline]
    fn first_match(&self, from: usize, to: usize, call: &ServiceCall) -> Option<u32> {
        let mut best = u32::MAX;
        let named = self.by_service.get(call.name.as_str());
        for lists in named.into_iter().chain([&self.any_service]) {
            // Each list is in policy order: a match after `best` cannot win.
            for &index in lists.of(from) {
                if index >= best {
                    break;
                }
                if self
                    .rules
                    .get(index as usize)
                    .is_some_and(|rule| rule.to.contains(to) && argument_matches(rule, call))
                {
                    best = index;
                    break;
                }
            }
            for &index in &lists.broad {
                if index >= best {
                    break;
                }
                let from_matches = self.froms.get(index as usize).is_some_and(|set| set.contains(from));
                if from_matches
                    && self
                        .rules
                        .get(index as usize)
                        .is_some_and(|rule| rule.to.contains(to) && argument_matches(rule, call))
                {
                    best = index;
                    break;
                }
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

impl CompiledRule {
    pub(crate) fn action(&self) -> Action {
        self.action
    }

    pub(crate) fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

#[inline]
fn argument_matches(rule: &CompiledRule, call: &ServiceCall) -> bool {
    match &rule.argument {
        None => true,
        Some(wanted) => call.argument.as_deref() == Some(&**wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_calls_parse_name_and_argument() {
        let call = ServiceCall::parse("sign").unwrap();
        assert_eq!((call.name(), call.argument()), ("sign", None));
        let call = ServiceCall::parse("storage.get+photos").unwrap();
        assert_eq!((call.name(), call.argument()), ("storage.get", Some("photos")));
        assert_eq!(call.to_string(), "storage.get+photos");
    }

    #[test]
    fn bad_service_calls_are_refused() {
        for text in ["", "*", "sign+", "Sign", "a+b+c", "+x"] {
            assert!(matches!(ServiceCall::parse(text), Err(QueryError::BadServiceCall { .. })), "{text}");
        }
    }
}
