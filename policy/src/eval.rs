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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    /// Allow, deny or ask.
    pub action: Action,
    /// For allow and ask: the compartment the call goes to instead of the
    /// one asked for.
    pub target: Option<&'p str>,
    /// The index (in [`crate::Policy::rules`]) of the rule that decided, or
    /// `None` when no rule matched and the call is denied by default.
    pub rule: Option<usize>,
}

impl Decision<'_> {
    /// The default: no rule matched, deny.
    pub const NO_MATCH: Decision<'static> = Decision { action: Action::Deny, target: None, rule: None };

    /// Whether the call goes through without asking.
    pub fn is_allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// One rule, ready to test once its service and caller are known to match.
#[derive(Clone, Debug)]
struct CompiledRule {
    /// `Some` if the rule is about one argument only.
    argument: Option<Box<str>>,
    to: SubjectSet,
    action: Action,
    target: Option<Box<str>>,
}

/// Rules that can match one service (or any service, for `*` rules), by
/// caller: `by_caller[from]` lists, in policy order, the rules whose `from`
/// matches subject `from`.
#[derive(Clone, Debug, Default)]
struct CallerLists {
    by_caller: Vec<Vec<u32>>,
}

impl CallerLists {
    fn new(subjects: usize) -> Self {
        Self { by_caller: vec![Vec::new(); subjects] }
    }

    fn add(&mut self, index: u32, from: &SubjectSet) {
        for (subject, list) in self.by_caller.iter_mut().enumerate() {
            if from.contains(subject) {
                list.push(index);
            }
        }
    }
}

/// The compiled rules of a policy.
#[derive(Clone, Debug)]
pub(crate) struct RuleIndex {
    subjects: Subjects,
    rules: Vec<CompiledRule>,
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
        let mut by_service: FxHashMap<Box<str>, CallerLists> = FxHashMap::default();
        let mut any_service = CallerLists::new(subjects.len());
        for (index, rule) in spec.rules.iter().enumerate() {
            // More than 4 billion rules do not fit in memory anyway.
            let Ok(index) = u32::try_from(index) else { break };
            let from = subjects.matching(spec, &rule.from);
            let lists = match rule.service.service_name() {
                Some(name) => by_service.entry(name.into()).or_insert_with(|| CallerLists::new(subjects.len())),
                None => &mut any_service,
            };
            lists.add(index, &from);
            rules.push(CompiledRule {
                argument: match &rule.service {
                    ServicePattern::Named { argument: Some(argument), .. } => Some(argument.as_str().into()),
                    _ => None,
                },
                to: subjects.matching(spec, &rule.to),
                action: rule.action,
                target: rule.target.as_deref().map(Into::into),
            });
        }
        Self { subjects, rules, by_service, any_service }
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

    /// The decision for subject numbers (see [`Subjects`]): the earlier of
    /// the first matching rule of the service and the first matching `*`
    /// rule.
    pub(crate) fn decide_subjects(&self, from: usize, to: usize, call: &ServiceCall) -> Decision<'_> {
        let named = self.by_service.get(call.name.as_str()).and_then(|lists| self.first_match(lists, from, to, call));
        // A `*` rule after the named match cannot win, so stop looking there.
        let any = self.first_match_before(&self.any_service, from, to, call, named.unwrap_or(u32::MAX));
        let Some(index) = any.or(named) else { return Decision::NO_MATCH };
        match self.rules.get(index as usize) {
            Some(rule) => Decision { action: rule.action, target: rule.target.as_deref(), rule: Some(index as usize) },
            None => Decision::NO_MATCH,
        }
    }

    fn first_match(&self, lists: &CallerLists, from: usize, to: usize, call: &ServiceCall) -> Option<u32> {
        self.first_match_before(lists, from, to, call, u32::MAX)
    }

    /// The first rule of `lists` for caller `from` that matches, if it comes
    /// before rule `limit`.
    fn first_match_before(
        &self,
        lists: &CallerLists,
        from: usize,
        to: usize,
        call: &ServiceCall,
        limit: u32,
    ) -> Option<u32> {
        let candidates = lists.by_caller.get(from)?;
        candidates.iter().copied().take_while(|index| *index < limit).find(|index| {
            self.rules.get(*index as usize).is_some_and(|rule| {
                rule.to.contains(to)
                    && match &rule.argument {
                        None => true,
                        Some(wanted) => call.argument.as_deref() == Some(&**wanted),
                    }
            })
        })
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
