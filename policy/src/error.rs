//! What can be wrong with a policy, and where.
//!
//! Every problem the parser or the validator finds becomes one
//! [`PolicyError`]: a [`Location`] (file, line, column), the thing it is
//! about (`compartment "mail"`, `rule #3`, ...) and an [`ErrorKind`] whose
//! message names the field and what was expected. A policy with problems is
//! rejected with all of them at once in [`PolicyErrors`], sorted by file
//! order, line and column.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::display::{Escaped, Quoted};

/// A place in a policy file: 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file's path, as the caller named it.
    pub file: Arc<str>,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, counted in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", Escaped(&self.file), self.line, self.column)
    }
}

/// One problem in a policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {}{kind}", ContextPrefix(context))]
pub struct PolicyError {
    /// Where the problem is.
    pub location: Location,
    /// What it is about, e.g. `compartment "mail"` or `rule #3`; empty for
    /// problems of the file itself (syntax, unknown top-level keys).
    pub context: String,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// Prints a non-empty context followed by `": "`.
struct ContextPrefix<'a>(&'a str);

impl fmt::Display for ContextPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { Ok(()) } else { write!(f, "{}: ", self.0) }
    }
}

/// What is wrong. Each message names the field and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file is not valid TOML.
    #[error("invalid TOML: {}", Escaped(.0))]
    Syntax(String),
    /// A key the language does not have.
    #[error("unknown key {}; expected one of: {}", Quoted(key), expected.join(", "))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys allowed here.
        expected: &'static [&'static str],
    },
    /// A value of the wrong TOML type.
    #[error("{field} must be {expected}, found {found}")]
    WrongType {
        /// The field.
        field: String,
        /// The type expected, with its article (`an integer`).
        expected: &'static str,
        /// The type found, with its article.
        found: &'static str,
    },
    /// A required field is missing.
    #[error("missing required field {field:?}")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A number outside its range.
    #[error("{field} {value}{unit} is out of range ({min}..={max})")]
    OutOfRange {
        /// The field.
        field: String,
        /// The value as written (it may not fit any integer type).
        value: String,
        /// The unit with a leading space (`" MiB"`), or empty.
        unit: &'static str,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A string that is not one of the allowed words.
    #[error("{field} {} is not valid; expected one of: {}", Quoted(value), expected.join(", "))]
    BadEnum {
        /// The field.
        field: String,
        /// The value as written.
        value: String,
        /// The allowed words.
        expected: &'static [&'static str],
    },
    /// A value whose form is wrong (a name, a service, an address, ...).
    #[error("{field} {} is not valid: {reason}", Quoted(value))]
    BadValue {
        /// The field.
        field: String,
        /// The value as written.
        value: String,
        /// What the form should be.
        reason: String,
    },
    /// The same name twice (also across files).
    #[error("{what} {} is already defined at {first}", Quoted(name))]
    Duplicate {
        /// What kind of thing (`compartment`, `tag`, `block volume`, ...).
        what: &'static str,
        /// The name.
        name: String,
        /// Where it was defined first.
        first: Location,
    },
    /// A rule names a compartment the policy does not define.
    #[error("{field} names compartment {}, which is not defined", Quoted(name))]
    UnknownCompartment {
        /// `from`, `to` or `target`.
        field: &'static str,
        /// The name.
        name: String,
    },
    /// A rule names a tag no compartment or template has.
    #[error("{field} names tag {}, which no compartment or template has", Quoted(tag))]
    UnknownTag {
        /// `from` or `to`.
        field: &'static str,
        /// The tag.
        tag: String,
    },
    /// A pattern that matches nothing in this policy.
    #[error("{field} pattern {} matches no compartment of this policy", Quoted(pattern))]
    MatchesNothing {
        /// `from` or `to`.
        field: &'static str,
        /// The pattern.
        pattern: String,
    },
    /// `@disposable` without a `[template.app]`.
    #[error("{field} pattern \"@disposable\" needs a [template.app], which is not defined")]
    NoTemplate {
        /// `from` or `to`.
        field: &'static str,
    },
    /// A rule an earlier rule always matches first.
    #[error(
        "this rule can never match: rule #{earlier_number} at {earlier} covers every service, source and destination it matches"
    )]
    Shadowed {
        /// The earlier rule's number (from 1, in policy order).
        earlier_number: usize,
        /// Where the earlier rule is.
        earlier: Location,
    },
    /// An `allow`/`ask` for a service nobody offers.
    #[error("{action} for service {}, which no compartment offers", Quoted(service))]
    NotOffered {
        /// `allow` or `ask`.
        action: &'static str,
        /// The service.
        service: String,
    },
    /// An `allow`/`ask` to a compartment that does not offer the service.
    #[error("{action} for service {} to compartment {}, which does not offer it", Quoted(service), Quoted(compartment))]
    NotOfferedBy {
        /// `allow` or `ask`.
        action: &'static str,
        /// The service.
        service: String,
        /// The destination (`to` or `target`).
        compartment: String,
    },
    /// An `allow`/`ask` to the host (`to` or `target`) for a service its
    /// `[host]` table does not offer.
    #[error("{action} for service {} to the host, which does not offer it", Quoted(service))]
    NotOfferedByHost {
        /// `allow` or `ask`.
        action: &'static str,
        /// The service.
        service: String,
    },
    /// A compartment named like the host.
    #[error("the name {} is reserved for the host's services", Quoted(name))]
    ReservedName {
        /// The name (`host`).
        name: String,
    },
    /// `from = "host"`: the host is only ever called.
    #[error("from names the host, but the host does not call compartments; only to and target may name it")]
    HostCaller,
    /// `to` or `target` names the host, and there is no `[host]`.
    #[error("{field} \"host\" needs a [host] table, which is not defined")]
    NoHost {
        /// `to` or `target`.
        field: &'static str,
    },
    /// A redirect that can never let a call through: no caller the rule
    /// matches may make the call to the target directly.
    #[error(
        "target {}: this redirect never lets a call through, since no caller it matches may make the call to {} directly ({example})",
        Quoted(target),
        Quoted(target)
    )]
    RedirectRefused {
        /// The target.
        target: String,
        /// One caller and call, and why the direct call is refused.
        example: String,
    },
    /// `target` on a `deny` rule.
    #[error("target is only allowed with action \"allow\" or \"ask\"")]
    TargetWithDeny,
    /// `ports` on a rule whose peer is an identity.
    #[error("ports are for address peers; a peer identity is reached whatever its address and port")]
    PortsForIdentity,
    /// `ports = []`.
    #[error("ports is empty, which would allow no port; leave it out to allow every port")]
    EmptyPorts,
    /// Network rules on a compartment without a network device.
    #[error("network rules need devices.network = true")]
    NetworkWithoutDevice,
    /// A template other than `[template.app]`.
    #[error("template {} is not supported; only [template.app] exists (ad-hoc compartments are apps)", Quoted(name))]
    UnknownTemplate {
        /// The template's name as written.
        name: String,
    },
}

/// Every problem found in a policy, sorted by file order, line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors(Vec<PolicyError>);

impl PolicyErrors {
    /// Sorts `errors` by the position of their file in `file_order` (the
    /// order files are read in, not their paths' order), then by line and
    /// column, dropping exact repeats. The sort is stable, so errors at the
    /// same place keep the order they were found in.
    pub(crate) fn new(mut errors: Vec<PolicyError>, file_order: &[Arc<str>]) -> Self {
        let mut ranks: HashMap<&Arc<str>, usize> = HashMap::with_capacity(file_order.len());
        for (rank, file) in file_order.iter().enumerate() {
            ranks.entry(file).or_insert(rank);
        }
        let file_rank = |file: &Arc<str>| ranks.get(file).copied().unwrap_or(usize::MAX);
        errors
            .sort_by_cached_key(|error| (file_rank(&error.location.file), error.location.line, error.location.column));
        errors.dedup();
        Self(errors)
    }

    /// The errors, in order.
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never true for an error a function returned).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How many errors [`PolicyErrors`] prints; the rest are counted.
pub const MAX_PRINTED_ERRORS: usize = 100;

impl fmt::Display for PolicyErrors {
    /// One error a line, the first [`MAX_PRINTED_ERRORS`] of them, then
    /// `... and N more errors` if there are more (all of them are in
    /// [`PolicyErrors::errors`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().take(MAX_PRINTED_ERRORS).enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        let rest = self.0.len().saturating_sub(MAX_PRINTED_ERRORS);
        if rest > 0 {
            write!(f, "\n... and {rest} more error{}", if rest == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Why a query (`explain`, `decide`) could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The service call is not `service` or `service+argument`.
    #[error("service call {} is not valid: {reason}", Quoted(call))]
    BadServiceCall {
        /// The call as given.
        call: String,
        /// What the form should be.
        reason: String,
    },
    /// A compartment name that cannot be a name at all.
    #[error("{} is not a valid compartment name: {reason}", Quoted(name))]
    BadName {
        /// The name as given.
        name: String,
        /// Why.
        reason: String,
    },
}
