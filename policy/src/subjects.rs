//! The compartments rules can match, numbered, and sets of them.
//!
//! Every defined compartment gets a number (in name order) and, if the
//! policy has a `[template.app]`, one more number stands for every ad-hoc
//! compartment made from it: they all have the template's role and tags, so
//! no rule can tell them apart. If the policy has a `[host]`, the host gets
//! the number after those: only the pattern `host` matches it (it is not a
//! compartment, so `@any` and the other patterns do not). A rule's `from`
//! and `to` then become sets of numbers, computed once. Validation compares those sets to find shadowed
//! rules, and evaluation tests one bit each.

use rustc_hash::FxHashMap;

use crate::model::{CompartmentSpec, HOST, Pattern, PolicySpec};
use crate::names::check_name;

/// A set of subject numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubjectSet {
    words: Box<[u64]>,
}

impl SubjectSet {
    fn empty(len: usize) -> Self {
        Self { words: vec![0; len.div_ceil(64)].into_boxed_slice() }
    }

    fn insert(&mut self, subject: usize) {
        if let Some(word) = self.words.get_mut(subject / 64) {
            *word |= 1 << (subject % 64);
        }
    }

    pub(crate) fn contains(&self, subject: usize) -> bool {
        self.words.get(subject / 64).is_some_and(|word| word & (1 << (subject % 64)) != 0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|word| *word == 0)
    }

    /// Whether every member of `other` is a member of `self`.
    pub(crate) fn is_superset(&self, other: &Self) -> bool {
        self.words.iter().zip(other.words.iter()).all(|(mine, theirs)| theirs & !mine == 0)
    }
}

/// The subjects of one policy.
#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    /// Defined compartments' names by number.
    names: Vec<String>,
    /// Names are the policy's own (the user's), and lookups never insert,
    /// so a fast unkeyed hash is safe: a caller cannot grow the table or
    /// make a lookup cost more than probing the policy's own names.
    numbers: FxHashMap<String, usize>,
    /// The number of every ad-hoc compartment, if there is a template.
    disposable: Option<usize>,
    /// The host's number, if there is a `[host]`.
    host: Option<usize>,
}

/// Who a name is, for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// A defined compartment, an ad-hoc one (the template's number), or the
    /// host (its number).
    Known(usize),
    /// A name that is neither: every rule misses it, so every call is denied.
    Unknown,
}

impl Subjects {
    pub(crate) fn new(spec: &PolicySpec) -> Self {
        let names: Vec<String> = spec.compartments.keys().cloned().collect();
        let numbers = names.iter().enumerate().map(|(number, name)| (name.clone(), number)).collect();
        let disposable = spec.app_template.as_ref().map(|_| names.len());
        let after_compartments = names.len() + usize::from(disposable.is_some());
        let host = spec.host.as_ref().map(|_| after_compartments);
        Self { names, numbers, disposable, host }
    }

    /// How many subject numbers there are.
    pub(crate) fn len(&self) -> usize {
        self.names.len() + usize::from(self.disposable.is_some()) + usize::from(self.host.is_some())
    }

    pub(crate) fn disposable(&self) -> Option<usize> {
        self.disposable
    }

    /// A name's subject: the host for `host` (if the policy has a
    /// `[host]`, else nothing: `host` never names a compartment), a
    /// defined compartment, else an ad-hoc one if the policy has a template
    /// and the name could be a compartment's.
    pub(crate) fn resolve(&self, name: &str) -> Subject {
        if name == HOST {
            return self.host.map_or(Subject::Unknown, Subject::Known);
        }
        if let Some(number) = self.numbers.get(name) {
            return Subject::Known(*number);
        }
        match self.disposable {
            Some(number) if check_name(name).is_ok() => Subject::Known(number),
            _ => Subject::Unknown,
        }
    }

    /// The subjects `pattern` matches.
    pub(crate) fn matching(&self, spec: &PolicySpec, pattern: &Pattern) -> SubjectSet {
        let mut set = SubjectSet::empty(self.len());
        let members = spec.compartments.values().enumerate().map(|(number, compartment)| (number, compartment, false));
        let template =
            spec.app_template.as_ref().zip(self.disposable).map(|(template, number)| (number, template, true));
        for (number, compartment, is_disposable) in members.chain(template) {
            if matches(pattern, self.names.get(number).map(String::as_str), compartment, is_disposable) {
                set.insert(number);
            }
        }
        if let (Pattern::Host, Some(host)) = (pattern, self.host) {
            set.insert(host);
        }
        set
    }
}

fn matches(pattern: &Pattern, name: Option<&str>, compartment: &CompartmentSpec, is_disposable: bool) -> bool {
    match pattern {
        Pattern::Any => true,
        Pattern::Tag(tag) => compartment.tags.contains(tag),
        Pattern::Role(role) => compartment.role == *role,
        Pattern::Disposable => is_disposable,
        // The host is not a compartment; `matching` adds its number.
        Pattern::Host => false,
        Pattern::Name(wanted) => !is_disposable && name == Some(wanted.as_str()),
    }
}
