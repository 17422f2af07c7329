//! Deciding a service call: the first rule that matches decides, no match
//! means deny.
//!
//! Rules are compiled once, when the policy is loaded: each rule's `from`
//! and `to` become sets of subject numbers, and rules are indexed by
//! service name, so a decision looks up two names and one service and then
//! scans only the rules that can be about that service (its own and the
//! `*` rules, in policy order), testing two bits per rule.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

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

/// One rule, ready to test.
#[derive(Clone, Debug)]
struct CompiledRule {
    /// `Some` if the rule is about one argument only.
    argument: Option<Box<str>>,
    from: SubjectSet,
    to: SubjectSet,
    action: Action,
    target: Option<Box<str>>,
}

/// The compiled rules of a policy.
#[derive(Clone, Debug)]
pub(crate) struct RuleIndex {
    subjects: Subjects,
    rules: Vec<CompiledRule>,
    /// For each service some rule names: the indices of the rules that can
    /// match it (its own and the `*` ones), in policy order.
    by_service: HashMap<Box<str>, Vec<u32>>,
    /// The rules for a service no rule names: the `*` ones.
    any_service: Vec<u32>,
}

impl RuleIndex {
    pub(crate) fn build(spec: &PolicySpec) -> Self {
        let subjects = Subjects::new(spec);
        let rules = spec
            .rules
            .iter()
            .map(|rule| CompiledRule {
                argument: match &rule.service {
                    ServicePattern::Named { argument: Some(argument), .. } => Some(argument.as_str().into()),
                    _ => None,
                },
                from: subjects.matching(spec, &rule.from),
                to: subjects.matching(spec, &rule.to),
                action: rule.action,
                target: rule.target.as_deref().map(Into::into),
            })
            .collect();
        let mut by_service: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut any_service = Vec::new();
        for (index, rule) in spec.rules.iter().enumerate() {
            // More than 4 billion rules do not fit in memory anyway.
            let Ok(index) = u32::try_from(index) else { break };
            match rule.service.service_name() {
                Some(name) => {
                    // A service's list starts with the `*` rules before its
                    // first own rule, so it stays in policy order.
                    by_service.entry(name.into()).or_insert_with(|| any_service.clone()).push(index);
                }
                None => {
                    any_service.push(index);
                    for list in by_service.values_mut() {
                        list.push(index);
                    }
                }
            }
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

    /// The decision for subject numbers (see [`Subjects`]).
    pub(crate) fn decide_subjects(&self, from: usize, to: usize, call: &ServiceCall) -> Decision<'_> {
        let candidates = self.by_service.get(call.name.as_str()).unwrap_or(&self.any_service);
        for &index in candidates {
            let Some(rule) = self.rules.get(index as usize) else { continue };
            let argument_matches = match &rule.argument {
                None => true,
                Some(wanted) => call.argument.as_deref() == Some(&**wanted),
            };
            if argument_matches && rule.from.contains(from) && rule.to.contains(to) {
                return Decision { action: rule.action, target: rule.target.as_deref(), rule: Some(index as usize) };
            }
        }
        Decision::NO_MATCH
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
