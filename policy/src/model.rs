//! The policy as data: compartments, the app template, service rules and
//! network rules. These types hold no source positions, so two policies
//! that say the same thing compare equal however they were written or split
//! into files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::display::Quoted;

/// Smallest and largest memory a compartment may have, in MiB. The upper
/// bound is the VMM's: guest RAM ends below the MMIO window at 3.25 GiB.
pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 8..=3328;

/// How many vCPUs a compartment may have on our hosts.
pub const VCPUS: std::ops::RangeInclusive<u8> = 1..=2;

/// Smallest and largest block volume, in MiB (1 TiB at most).
pub const VOLUME_MIB: std::ops::RangeInclusive<u64> = 1..=1 << 20;

/// What a compartment is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Holds the user's keys and signs.
    Identity,
    /// Keeps personal data, encrypted.
    Storage,
    /// Talks to peers, end-to-end encrypted.
    Communication,
    /// Runs an untrusted program.
    App,
}

impl Role {
    /// The words of the language, in the order they are listed in errors.
    pub const WORDS: &'static [&'static str] = &["identity", "storage", "communication", "app"];

    /// The role's word in the language.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Storage => "storage",
            Self::Communication => "communication",
            Self::App => "app",
        }
    }

    /// The role a word names, if any.
    pub fn from_word(word: &str) -> Option<Self> {
        [Self::Identity, Self::Storage, Self::Communication, Self::App].into_iter().find(|role| role.as_str() == word)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the supervisor does when a compartment stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RestartPolicy {
    /// Leave it stopped.
    #[default]
    Never,
    /// Start it again if it crashed or exited with a non-zero code.
    OnFailure,
    /// Start it again whenever it stops.
    Always,
}

impl RestartPolicy {
    /// The words of the language.
    pub const WORDS: &'static [&'static str] = &["never", "on-failure", "always"];

    /// The policy's word in the language.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure => "on-failure",
            Self::Always => "always",
        }
    }

    /// The restart policy a word names, if any.
    pub fn from_word(word: &str) -> Option<Self> {
        [Self::Never, Self::OnFailure, Self::Always].into_iter().find(|policy| policy.as_str() == word)
    }
}

/// A block volume a compartment may have.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlockVolume {
    /// The volume's name, unique within its compartment.
    pub name: String,
    /// Its size in MiB.
    pub size_mib: u64,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// The devices a compartment may have. Default deny: only the console.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Devices {
    /// The console (on unless the policy turns it off).
    pub console: bool,
    /// An entropy source.
    pub rng: bool,
    /// A vsock to the host.
    pub vsock: bool,
    /// A network device (mediated: see the compartment's network rules).
    pub network: bool,
    /// Block volumes, in attachment order.
    pub block: Vec<BlockVolume>,
}

impl Default for Devices {
    fn default() -> Self {
        Self { console: true, rng: false, vsock: false, network: false, block: Vec::new() }
    }
}

/// A peer a compartment may reach over its network device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// An address or a network in CIDR form (`192.0.2.7`, `2001:db8::/32`).
    Network(IpNet),
    /// A peer identity (`did:key:z6Mk...`), reached through the
    /// communication layer whatever its address.
    Identity(String),
}

impl fmt::Display for Peer {
    /// The peer as the language writes it: a single address without `/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Network(net) if net.prefix_len() == net.max_prefix_len() => write!(f, "{}", net.addr()),
            Self::Network(net) => write!(f, "{net}"),
            Self::Identity(did) => f.write_str(did),
        }
    }
}

/// An inclusive range of ports; a single port is a range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (at least `first`).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

/// One peer a compartment may reach, on some ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetworkRule {
    /// Who.
    pub peer: Peer,
    /// On which ports; empty means every port. Always empty for identities.
    pub ports: Vec<PortRange>,
}

impl NetworkRule {
    /// Whether this rule lets the compartment reach `address` on `port`.
    pub fn allows_address(&self, address: IpAddr, port: u16) -> bool {
        match &self.peer {
            Peer::Network(net) => {
                net.contains(&address) && (self.ports.is_empty() || self.ports.iter().any(|range| range.contains(port)))
            }
            Peer::Identity(_) => false,
        }
    }
}

/// Everything a compartment is: what the launcher needs (limits, devices)
/// and what the rules match on (role, tags) and check (offers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompartmentSpec {
    /// What it is for.
    pub role: Role,
    /// The image it boots.
    pub image: String,
    /// Memory in MiB, within [`MEMORY_MIB`].
    pub memory_mib: u32,
    /// vCPUs, within [`VCPUS`].
    pub vcpus: u8,
    /// The devices it may have.
    pub devices: Devices,
    /// Whether the supervisor starts it at boot.
    pub autostart: bool,
    /// What happens when it stops.
    pub restart: RestartPolicy,
    /// Tags rules can match (`work`, `personal`).
    pub tags: BTreeSet<String>,
    /// Services it offers to other compartments (`sign`, `storage.get`).
    pub offers: BTreeSet<String>,
    /// Peers it may reach; none by default.
    pub network: Vec<NetworkRule>,
}

/// Memory of a compartment that does not say.
pub const DEFAULT_MEMORY_MIB: u32 = 128;

/// Which services a rule is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePattern {
    /// `*`: every service.
    Any,
    /// `name` (any argument, or none) or `name+argument` (that argument).
    Named {
        /// The service.
        name: String,
        /// The argument, if the rule is about one only.
        argument: Option<String>,
    },
}

impl ServicePattern {
    /// Whether every call this pattern matches, `other` matches too.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (Self::Named { .. }, Self::Any) => false,
            (Self::Named { name, argument: None }, Self::Named { name: other_name, .. }) => name == other_name,
            (Self::Named { name, argument: Some(argument) }, Self::Named { name: other_name, argument: other_arg }) => {
                name == other_name && other_arg.as_ref() == Some(argument)
            }
        }
    }

    /// The service's name, unless the pattern is `*`.
    pub fn service_name(&self) -> Option<&str> {
        match self {
            Self::Any => None,
            Self::Named { name, .. } => Some(name),
        }
    }
}

impl fmt::Display for ServicePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Named { name, argument: None } => f.write_str(name),
            Self::Named { name, argument: Some(argument) } => write!(f, "{name}+{argument}"),
        }
    }
}

/// Which compartments a rule's `from` or `to` matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// `@any`: every compartment, disposables included.
    Any,
    /// `@tag:NAME`: compartments (and disposables) with that tag.
    Tag(String),
    /// `@role:ROLE`: compartments (and disposables) of that role.
    Role(Role),
    /// `@disposable`: ad-hoc compartments made from `[template.app]`.
    Disposable,
    /// `host`: the host's services (`[host]`). Only a rule's `to` may name
    /// it; no other pattern matches the host, which is not a compartment.
    Host,
    /// A compartment's exact name.
    Name(String),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("@any"),
            Self::Tag(tag) => write!(f, "@tag:{tag}"),
            Self::Role(role) => write!(f, "@role:{role}"),
            Self::Disposable => f.write_str("@disposable"),
            Self::Host => f.write_str(HOST),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// What a rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The call goes through.
    Allow,
    /// The call is refused.
    Deny,
    /// The user is asked.
    Ask,
}

impl Action {
    /// The words of the language.
    pub const WORDS: &'static [&'static str] = &["allow", "deny", "ask"];

    /// The action's word in the language.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Ask => "ask",
        }
    }

    /// The action a word names, if any.
    pub fn from_word(word: &str) -> Option<Self> {
        [Self::Allow, Self::Deny, Self::Ask].into_iter().find(|action| action.as_str() == word)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One service rule. Rules are evaluated in order; the first that matches
/// decides; no match means deny.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Which services.
    pub service: ServicePattern,
    /// Which callers.
    pub from: Pattern,
    /// Which destinations.
    pub to: Pattern,
    /// What happens.
    pub action: Action,
    /// For `allow` and `ask`: send the call to this compartment (or to
    /// [`HOST`], the host's services) instead.
    pub target: Option<String>,
}

impl fmt::Display for Rule {
    /// The rule in one line, as the language writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service = {}, from = {}, to = {}, action = {}",
            Quoted(&self.service.to_string()),
            Quoted(&self.from.to_string()),
            Quoted(&self.to.to_string()),
            Quoted(self.action.as_str())
        )?;
        if let Some(target) = &self.target {
            write!(f, ", target = {}", Quoted(target))?;
        }
        Ok(())
    }
}

/// The name rules use for the host (`to = "host"`, `target = "host"`). It
/// is reserved: no compartment, defined or ad-hoc, may have it.
pub const HOST: &str = "host";

/// `[host]`: the services of the host (processes on the host that wardd
/// connects compartments to) that rules may let compartments call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSpec {
    /// The services the host answers (`notify`); an `allow` or `ask` to the
    /// host must name one of them.
    pub offers: BTreeSet<String>,
}

/// The whole policy, merged from its files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySpec {
    /// Defined compartments by name.
    pub compartments: BTreeMap<String, CompartmentSpec>,
    /// `[template.app]`: what ad-hoc app compartments are made from.
    pub app_template: Option<CompartmentSpec>,
    /// `[host]`: the host's services, if the policy lets compartments call
    /// any (without it, no rule may name the host).
    pub host: Option<HostSpec>,
    /// Service rules in evaluation order.
    pub rules: Vec<Rule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, argument: Option<&str>) -> ServicePattern {
        ServicePattern::Named { name: name.into(), argument: argument.map(Into::into) }
    }

    #[test]
    fn service_any_covers_everything() {
        assert!(ServicePattern::Any.covers(&named("sign", None)));
        assert!(ServicePattern::Any.covers(&ServicePattern::Any));
        assert!(!named("sign", None).covers(&ServicePattern::Any));
    }

    #[test]
    fn service_without_argument_covers_its_arguments() {
        assert!(named("get", None).covers(&named("get", Some("photos"))));
        assert!(named("get", None).covers(&named("get", None)));
        assert!(!named("get", Some("photos")).covers(&named("get", None)));
        assert!(!named("get", Some("photos")).covers(&named("get", Some("mail"))));
        assert!(named("get", Some("photos")).covers(&named("get", Some("photos"))));
        assert!(!named("get", None).covers(&named("put", None)));
    }

    #[test]
    fn single_address_peers_print_without_prefix() {
        let single = Peer::Network("192.0.2.7/32".parse().unwrap());
        let net = Peer::Network("192.0.2.0/24".parse().unwrap());
        assert_eq!(single.to_string(), "192.0.2.7");
        assert_eq!(net.to_string(), "192.0.2.0/24");
    }

    #[test]
    fn network_rules_match_address_and_port() {
        let rule = NetworkRule {
            peer: Peer::Network("192.0.2.0/24".parse().unwrap()),
            ports: vec![PortRange { first: 443, last: 443 }, PortRange { first: 8000, last: 8100 }],
        };
        let inside: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(rule.allows_address(inside, 443));
        assert!(rule.allows_address(inside, 8050));
        assert!(!rule.allows_address(inside, 80));
        assert!(!rule.allows_address("198.51.100.1".parse().unwrap(), 443));
    }

    #[test]
    fn words_round_trip() {
        for word in Role::WORDS {
            assert_eq!(Role::from_word(word).unwrap().as_str(), *word);
        }
        for word in RestartPolicy::WORDS {
            assert_eq!(RestartPolicy::from_word(word).unwrap().as_str(), *word);
        }
        for word in Action::WORDS {
            assert_eq!(Action::from_word(word).unwrap().as_str(), *word);
        }
        assert_eq!(Role::from_word("admin"), None);
    }
}
