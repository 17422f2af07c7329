//! A loaded, valid policy and what launchers and device backends ask it.

use std::net::IpAddr;
use std::path::Path;

use crate::error::{Location, PolicyErrors};
use crate::eval::{Decision, RuleIndex, ServiceCall};
use crate::model::{CompartmentSpec, HOST, HostSpec, NetworkRule, Peer, PolicySpec, Rule};
use crate::parse::read_files;
use crate::source::SourceFile;
use crate::validate::{Origins, check_redirects, validate};

/// A valid policy: its data, where each part was written, and its rules
/// compiled for evaluation. Two policies are equal when they say the same
/// thing, however they were written or split into files.
#[derive(Clone, Debug)]
pub struct Policy {
    spec: PolicySpec,
    origins: Origins,
    index: RuleIndex,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Policy {}

/// What a launcher gets for a compartment name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'p> {
    /// The policy defines a compartment of that name.
    Defined(&'p CompartmentSpec),
    /// The name is not defined, and `[template.app]` applies: the launcher
    /// may start an ad-hoc (disposable) app compartment of that name.
    AdHoc(&'p CompartmentSpec),
    /// The name is not defined and no template applies (or the name is not
    /// a valid compartment name): nothing may be started.
    Undefined,
}

impl<'p> Lookup<'p> {
    /// The spec to start the compartment with, if it may be started.
    pub fn spec(self) -> Option<&'p CompartmentSpec> {
        match self {
            Self::Defined(spec) | Self::AdHoc(spec) => Some(spec),
            Self::Undefined => None,
        }
    }
}

impl Policy {
    /// Reads and checks a policy split over `files`, read in the order
    /// given (see [`crate::order_files`] for the order of a directory).
    /// Returns every problem found if there is any.
    ///
    /// ```
    /// let policy = ward_policy::Policy::from_files(&[("policy/00-base.toml", r#"
    ///     [compartment.vault]
    ///     role = "identity"
    ///     image = "vault.img"
    ///     offers = ["sign"]
    ///
    ///     [compartment.mail]
    ///     role = "communication"
    ///     image = "mail.img"
    ///
    ///     [[rule]]
    ///     service = "sign"
    ///     from = "mail"
    ///     to = "vault"
    ///     action = "allow"
    /// "#)]).unwrap();
    /// let call = "sign".parse().unwrap();
    /// assert!(policy.decide("mail", "vault", &call).is_allowed());
    /// assert!(!policy.decide("vault", "mail", &call).is_allowed());
    /// ```
    pub fn from_files<P: AsRef<Path>, T: AsRef<str>>(files: &[(P, T)]) -> Result<Self, PolicyErrors> {
        let sources: Vec<SourceFile<'_>> =
            files.iter().map(|(path, text)| SourceFile::new(path.as_ref(), text.as_ref())).collect();
        let file_order: Vec<_> = sources.iter().map(|source| source.path.clone()).collect();
        let mut errors = Vec::new();
        let Some(draft) = read_files(&sources, &mut errors) else {
            return Err(PolicyErrors::new(errors, &file_order));
        };
        let (spec, origins) = validate(draft, &mut errors);
        if !errors.is_empty() {
            return Err(PolicyErrors::new(errors, &file_order));
        }
        let index = RuleIndex::build(&spec);
        let errors = check_redirects(&spec, &index, &origins);
        if !errors.is_empty() {
            return Err(PolicyErrors::new(errors, &file_order));
        }
        Ok(Self { spec, origins, index })
    }

    /// [`Policy::from_files`] for a policy in one file.
    pub fn from_text(path: impl AsRef<Path>, text: &str) -> Result<Self, PolicyErrors> {
        Self::from_files(&[(path.as_ref(), text)])
    }

    /// The policy's data.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// What a launcher may start under `name`: a defined compartment, an
    /// ad-hoc app from `[template.app]`, or nothing. The reserved name
    /// [`HOST`] is never a compartment: it is always `Undefined`.
    pub fn compartment(&self, name: &str) -> Lookup<'_> {
        if let Some(spec) = self.spec.compartments.get(name) {
            return Lookup::Defined(spec);
        }
        match self.spec.app_template.as_ref() {
            Some(template) if name != HOST && crate::names::check_name(name).is_ok() => Lookup::AdHoc(template),
            _ => Lookup::Undefined,
        }
    }

    /// The defined compartments' names, in order.
    pub fn compartment_names(&self) -> impl Iterator<Item = &str> {
        self.spec.compartments.keys().map(String::as_str)
    }

    /// The service rules, in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.spec.rules
    }

    /// Where rule `index` (0-based) was written.
    pub fn rule_location(&self, index: usize) -> Option<&Location> {
        self.origins.rules.get(index)
    }

    /// Where compartment `name` was defined.
    pub fn compartment_location(&self, name: &str) -> Option<&Location> {
        self.origins.compartments.get(name)
    }

    /// Where `[template.app]` was defined.
    pub fn template_location(&self) -> Option<&Location> {
        self.origins.template.as_ref()
    }

    /// `[host]`: the services of the host compartments may call, if the
    /// policy has the table. Rules decide who may call them: ask
    /// [`Policy::decide`] with [`HOST`] as the destination.
    ///
    /// ```
    /// let policy = ward_policy::Policy::from_text("p.toml", r#"
    ///     [host]
    ///     offers = ["notify"]
    ///
    ///     [compartment.mail]
    ///     role = "communication"
    ///     image = "mail.img"
    ///
    ///     [[rule]]
    ///     service = "notify"
    ///     from = "mail"
    ///     to = "host"
    ///     action = "allow"
    /// "#).unwrap();
    /// assert!(policy.host().is_some_and(|host| host.offers.contains("notify")));
    /// assert!(policy.decide("mail", ward_policy::HOST, &"notify".parse().unwrap()).is_allowed());
    /// ```
    pub fn host(&self) -> Option<&HostSpec> {
        self.spec.host.as_ref()
    }

    /// Where `[host]` was defined.
    pub fn host_location(&self) -> Option<&Location> {
        self.origins.host.as_ref()
    }

    /// Decides a call of `call` from compartment `from` to compartment `to`:
    /// the first matching rule decides, no match means deny. A name that is
    /// not defined is an ad-hoc compartment if the policy has a
    /// `[template.app]`, and otherwise matches no rule. `to` may be [`HOST`]
    /// for a call of the host's services (`[host]`); without a `[host]`,
    /// and as a caller, `host` matches no rule (the host does not call
    /// compartments).
    pub fn decide(&self, from: &str, to: &str, call: &ServiceCall) -> Decision<'_> {
        self.index.decide(from, to, call)
    }

    pub(crate) fn index(&self) -> &RuleIndex {
        &self.index
    }

    /// The network rule that lets compartment `name` reach `address` on
    /// `port`, if any (default deny: `None`).
    pub fn network_rule_for_address(&self, name: &str, address: IpAddr, port: u16) -> Option<&NetworkRule> {
        let spec = self.compartment(name).spec()?;
        if !spec.devices.network {
            return None;
        }
        spec.network.iter().find(|rule| rule.allows_address(address, port))
    }

    /// Whether compartment `name` may reach the peer identity `did`
    /// (`did:key:z...`).
    pub fn may_reach_identity(&self, name: &str, did: &str) -> bool {
        self.compartment(name).spec().is_some_and(|spec| {
            spec.devices.network && spec.network.iter().any(|rule| rule.peer == Peer::Identity(did.to_owned()))
        })
    }
}
