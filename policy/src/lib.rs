//! `ward-policy`: the single source of truth for what every compartment may
//! do. A policy is a set of TOML files (read in file-name order) that
//! defines the compartments (role, image, memory, vCPUs, devices, restart
//! policy, tags, the services each offers and the network peers each may
//! reach), a `[template.app]` that ad-hoc app compartments are made from,
//! a `[host]` table of the host's services compartments may call,
//! and service rules in the style of Qubes' qrexec policy (first match
//! wins, no match means deny). This crate parses a policy with exact error
//! positions, reports every problem at once, and then evaluates, explains,
//! shows and compares it. It is a pure library: it does no I/O (callers
//! hand it `(path, text)` pairs) and depends on nothing else of Ward's, so
//! every part of Ward that enforces the policy asks the same code. The
//! language is documented in `docs/POLICY.md`.
//!
//! ```
//! use ward_policy::{Lookup, Policy};
//!
//! let policy = Policy::from_text("policy.toml", r#"
//!     [compartment.mail]
//!     role = "communication"
//!     image = "mail.img"
//!     memory = 256
//! "#).unwrap();
//! let Lookup::Defined(mail) = policy.compartment("mail") else { unreachable!() };
//! assert_eq!(mail.memory_mib, 256);
//! assert_eq!(policy.compartment("unknown"), Lookup::Undefined);
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod check;
mod diff;
pub mod display;
mod error;
mod eval;
mod explain;
mod model;
mod names;
mod parse;
mod policy;
mod render;
mod source;
mod subjects;
mod validate;

pub use check::{Summary, check, render_check};
pub use diff::{
    AD_HOC, DecisionChange, FieldChange, MAX_LISTED_DECISIONS, OTHER_SERVICE, PolicyDiff, Verdict, diff, render_diff,
};
pub use error::{ErrorKind, Location, MAX_PRINTED_ERRORS, PolicyError, PolicyErrors, QueryError};
pub use eval::{Decision, Redirect, ServiceCall};
pub use explain::{Explanation, Resolution, explain, render_explanation};
pub use model::{
    Action, BlockVolume, CompartmentSpec, DEFAULT_MEMORY_MIB, Devices, HOST, HostSpec, MEMORY_MIB, NetworkRule,
    Pattern, Peer, PolicySpec, PortRange, RestartPolicy, Role, Rule, ServicePattern, VCPUS, VOLUME_MIB,
};
pub use policy::{Lookup, Policy};
pub use render::show;
pub use source::order_files;
