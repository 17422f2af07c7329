//! The compartments rules can match, numbered, and sets of them.
//!
//! Every defined compartment gets a number (in name order) and, if the
//! policy has a `[template.app]`, one more number stands for every ad-hoc
//! compartment made from it: they all have the template's role and tags, so
//! no rule can tell them apart. If the policy has a `[host]`, the host gets
//! the number after those: only the pattern `host` matches it (it is not a
//! compartment, so `@any` and the other patterns do not). A rule's `from`
//! and `to` then become sets of numbers.
//!
//! The sets patterns can name are computed once, when the subjects are
//! numbered: one a subject (names, `@disposable`, `host`), one a role, one
//! a tag, and `@any`; sets with the same members are one set, with one
//! number (its id). Rules share them, so compiling a rule costs nothing per
//! compartment, and the memory held is that of the tag lists the policy
//! writes. Validation compares the sets to find shadowed rules (through
//! their ids, and the sets that contain each subject), and evaluation tests
//! membership with one bit (dense sets) or a short search (sparse ones).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::{HOST, Pattern, PolicySpec, Role};
use crate::names::check_name;

/// A set of subject numbers, as one of the policy's canonical sets: cheap to
/// clone (shared), with an id that is the same for every set of the same
/// members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubjectSet {
    id: u32,
    members: Members,
}

/// How a set holds its members: a set of one inline (names are the most
/// common patterns), a sorted list, or a list and a bitmap when the set is
/// dense enough for the bitmap to be small (at least one member in 64
/// subjects). A membership test follows at most one pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Members {
    One(u32),
    Sparse(Arc<[u32]>),
    Dense(Arc<Dense>),
}

/// A dense set: its members, and a bitmap of them.
#[derive(Debug, PartialEq, Eq)]
struct Dense {
    bits: Box<[u64]>,
    members: Box<[u32]>,
}

/// Sparse sets at most this large are searched one by one.
const LINEAR_SEARCH: usize = 16;

impl SubjectSet {
    fn new(id: u32, members: Vec<u32>, subjects: usize) -> Self {
        let members = match members.as_slice() {
            [one] => Members::One(*one),
            _ if members.len().saturating_mul(64) >= subjects && !members.is_empty() => {
                let mut bits = vec![0u64; subjects.div_ceil(64)];
                for member in &members {
                    if let Some(word) = bits.get_mut(*member as usize / 64) {
                        *word |= 1 << (member % 64);
                    }
                }
                Members::Dense(Arc::new(Dense { bits: bits.into(), members: members.into() }))
            }
            _ => Members::Sparse(members.into()),
        };
        Self { id, members }
    }

    /// The set's id: equal ids, equal members.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    #[inline]
    pub(crate) fn contains(&self, subject: usize) -> bool {
        match &self.members {
            Members::One(one) => *one as usize == subject,
            Members::Dense(dense) => dense.bits.get(subject / 64).is_some_and(|word| word & (1 << (subject % 64)) != 0),
            Members::Sparse(members) => {
                let Ok(subject) = u32::try_from(subject) else { return false };
                if members.len() <= LINEAR_SEARCH {
                    members.contains(&subject)
                } else {
                    members.binary_search(&subject).is_ok()
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members().is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.members().len()
    }

    /// The members, ascending.
    pub(crate) fn members(&self) -> &[u32] {
        match &self.members {
            Members::One(one) => std::slice::from_ref(one),
            Members::Sparse(members) => members,
            Members::Dense(dense) => &dense.members,
        }
    }

    /// Whether every member of `other` is a member of `self`.
    pub(crate) fn is_superset(&self, other: &Self) -> bool {
        self.id() == other.id()
            || (other.len() <= self.len() && other.members().iter().all(|member| self.contains(*member as usize)))
    }
}

/// The subjects of one policy, and the sets patterns name.
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
    /// Every canonical set, by id.
    sets: Vec<SubjectSet>,
    /// Each subject's set of one, by subject number.
    singletons: Vec<SubjectSet>,
    /// `@role:ROLE`, in the order of [`Role::WORDS`].
    roles: Vec<SubjectSet>,
    /// `@tag:NAME`.
    tags: FxHashMap<String, SubjectSet>,
    /// `@any`: every compartment and the ad-hoc ones, not the host.
    any: SubjectSet,
    empty: SubjectSet,
    /// For each subject, the ids of the canonical sets that contain it.
    containing: Vec<Vec<u32>>,
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

/// Builds the canonical sets: one per distinct list of members.
struct Interner {
    subjects: usize,
    by_members: FxHashMap<Box<[u32]>, SubjectSet>,
    sets: Vec<SubjectSet>,
}

impl Interner {
    fn intern(&mut self, members: Vec<u32>) -> SubjectSet {
        if let Some(set) = self.by_members.get(members.as_slice()) {
            return set.clone();
        }
        // More than 4 billion sets do not fit in memory anyway.
        let id = u32::try_from(self.sets.len()).unwrap_or(u32::MAX);
        let set = SubjectSet::new(id, members.clone(), self.subjects);
        self.by_members.insert(members.into_boxed_slice(), set.clone());
        self.sets.push(set.clone());
        set
    }
}

fn number(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl Subjects {
    pub(crate) fn new(spec: &PolicySpec) -> Self {
        let names: Vec<String> = spec.compartments.keys().cloned().collect();
        let numbers = names.iter().enumerate().map(|(number, name)| (name.clone(), number)).collect();
        let disposable = spec.app_template.as_ref().map(|_| names.len());
        let after_compartments = names.len() + usize::from(disposable.is_some());
        let host = spec.host.as_ref().map(|_| after_compartments);
        let len = after_compartments + usize::from(host.is_some());

        let mut interner = Interner { subjects: len, by_members: FxHashMap::default(), sets: Vec::new() };
        let empty = interner.intern(Vec::new());
        let singletons: Vec<SubjectSet> = (0..len).map(|subject| interner.intern(vec![number(subject)])).collect();
        // Compartments in number order, then the template: member lists
        // come out ascending.
        let members = spec.compartments.values().chain(&spec.app_template).enumerate();
        let mut roles: Vec<Vec<u32>> = vec![Vec::new(); Role::WORDS.len()];
        let mut tags: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        for (subject, compartment) in members.clone() {
            if let Some(list) = roles.get_mut(role_index(compartment.role)) {
                list.push(number(subject));
            }
            for tag in &compartment.tags {
                tags.entry(tag.as_str()).or_default().push(number(subject));
            }
        }
        let roles = roles.into_iter().map(|list| interner.intern(list)).collect();
        let any = interner.intern((0..after_compartments).map(number).collect());
        let tags = tags.into_iter().map(|(tag, list)| (tag.to_owned(), interner.intern(list))).collect();

        let mut containing = vec![Vec::new(); len];
        for set in &interner.sets {
            for member in set.members() {
                if let Some(list) = containing.get_mut(*member as usize) {
                    list.push(set.id());
                }
            }
        }
        Self { names, numbers, disposable, host, sets: interner.sets, singletons, roles, tags, any, empty, containing }
    }

    /// How many subject numbers there are.
    pub(crate) fn len(&self) -> usize {
        self.singletons.len()
    }

    pub(crate) fn disposable(&self) -> Option<usize> {
        self.disposable
    }

    /// How a subject is named in messages: its name, `@disposable` for
    /// ad-hoc compartments, `host` for the host.
    pub(crate) fn label(&self, subject: usize) -> String {
        match self.names.get(subject) {
            Some(name) => name.clone(),
            None if Some(subject) == self.disposable => "@disposable".to_owned(),
            None => HOST.to_owned(),
        }
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
    pub(crate) fn matching(&self, pattern: &Pattern) -> SubjectSet {
        let one = |subject: Option<usize>| subject.and_then(|subject| self.singletons.get(subject));
        let set = match pattern {
            Pattern::Any => Some(&self.any),
            Pattern::Tag(tag) => self.tags.get(tag.as_str()),
            Pattern::Role(role) => self.roles.get(role_index(*role)),
            Pattern::Disposable => one(self.disposable),
            Pattern::Host => one(self.host),
            Pattern::Name(name) => one(self.numbers.get(name.as_str()).copied()),
        };
        set.unwrap_or(&self.empty).clone()
    }

    /// The canonical sets that contain every member of `set` (itself
    /// included), by id. The empty set has none listed.
    pub(crate) fn supersets(&self, set: &SubjectSet) -> Vec<u32> {
        let Some(first) = set.members().first() else { return Vec::new() };
        let candidates = self.containing.get(*first as usize).map_or(&[][..], Vec::as_slice);
        candidates
            .iter()
            .copied()
            .filter(|id| self.sets.get(*id as usize).is_some_and(|candidate| candidate.is_superset(set)))
            .collect()
    }
}

/// A role's place in [`Role::WORDS`].
fn role_index(role: Role) -> usize {
    match role {
        Role::Identity => 0,
        Role::Storage => 1,
        Role::Communication => 2,
        Role::App => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> PolicySpec {
        crate::Policy::from_text("p.toml", text).unwrap().spec().clone()
    }

    const TEXT: &str = r#"
[compartment.a]
role = "app"
image = "a"
tags = ["t", "u"]
[compartment.b]
role = "storage"
image = "b"
tags = ["t"]
[compartment.c]
role = "app"
image = "c"
tags = ["solo"]
[template.app]
image = "x"
tags = ["u"]
[host]
"#;

    #[test]
    fn patterns_match_their_members_and_equal_sets_share_an_id() {
        let spec = policy(TEXT);
        let subjects = Subjects::new(&spec);
        // a = 0, b = 1, c = 2, ad-hoc = 3, host = 4.
        assert_eq!(subjects.len(), 5);
        let members = |pattern: Pattern| subjects.matching(&pattern).members().to_vec();
        assert_eq!(members(Pattern::Any), [0, 1, 2, 3]);
        assert_eq!(members(Pattern::Tag("t".into())), [0, 1]);
        assert_eq!(members(Pattern::Tag("u".into())), [0, 3]);
        assert_eq!(members(Pattern::Role(Role::App)), [0, 2, 3]);
        assert_eq!(members(Pattern::Disposable), [3]);
        assert_eq!(members(Pattern::Host), [4]);
        assert!(subjects.matching(&Pattern::Tag("nope".into())).is_empty());
        let solo = subjects.matching(&Pattern::Tag("solo".into()));
        assert_eq!(solo.id(), subjects.matching(&Pattern::Name("c".into())).id());
        assert!(!subjects.matching(&Pattern::Any).contains(4));
    }

    #[test]
    fn supersets_are_the_canonical_sets_holding_every_member() {
        let spec = policy(TEXT);
        let subjects = Subjects::new(&spec);
        let set = |pattern: Pattern| subjects.matching(&pattern);
        let mut of_a: Vec<u32> = subjects.supersets(&set(Pattern::Name("a".into())));
        of_a.sort_unstable();
        let mut expected: Vec<u32> = [
            set(Pattern::Name("a".into())),
            set(Pattern::Tag("t".into())),
            set(Pattern::Tag("u".into())),
            set(Pattern::Role(Role::App)),
            set(Pattern::Any),
        ]
        .iter()
        .map(SubjectSet::id)
        .collect();
        expected.sort_unstable();
        assert_eq!(of_a, expected);
        let of_t = subjects.supersets(&set(Pattern::Tag("t".into())));
        assert_eq!(of_t.len(), 2, "itself and @any");
        assert!(subjects.supersets(&set(Pattern::Host)).iter().all(|id| *id == set(Pattern::Host).id()));
    }

    #[test]
    fn dense_and_sparse_sets_answer_alike() {
        for members in [vec![], vec![3], (0..40).map(|i| i * 3).collect::<Vec<u32>>()] {
            for subjects in [130, 100_000] {
                let set = SubjectSet::new(0, members.clone(), subjects);
                for subject in 0..130u32 {
                    assert_eq!(set.contains(subject as usize), members.contains(&subject), "{subject}");
                }
            }
        }
    }
}
