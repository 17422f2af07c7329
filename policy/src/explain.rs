//! `ward policy explain FROM TO SERVICE`: the decision and the rule, file
//! and line that made it.

use std::fmt::Write as _;

use crate::Policy;
use crate::display::Quoted;
use crate::error::{Location, QueryError};
use crate::eval::{Decision, ServiceCall};
use crate::model::{HOST, Rule};
use crate::names::check_name;
use crate::policy::Lookup;

/// How a name in a query was understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution<'p> {
    /// A compartment the policy defines, and where.
    Defined(Option<&'p Location>),
    /// Not defined: an ad-hoc compartment from `[template.app]` (defined
    /// there).
    AdHoc(Option<&'p Location>),
    /// Not defined, and no template: it matches no rule.
    Undefined,
    /// `host`: the host's services, from `[host]` (defined there). Rules
    /// match it only as a destination.
    Host(Option<&'p Location>),
    /// `host`, and the policy has no `[host]`: it matches no rule.
    NoHost,
}

/// Why a call is decided the way it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation<'p> {
    /// The caller, as given.
    pub from: String,
    /// How the caller was understood.
    pub from_is: Resolution<'p>,
    /// The destination, as given.
    pub to: String,
    /// How the destination was understood.
    pub to_is: Resolution<'p>,
    /// The call.
    pub call: ServiceCall,
    /// The decision.
    pub decision: Decision<'p>,
    /// The rule that decided, and where it is; `None` if no rule matched.
    pub rule: Option<(&'p Rule, Option<&'p Location>)>,
    /// For a redirected call: the rule that decides the same call made to
    /// the target directly, and where it is (`None` if no rule matches it:
    /// the redirect is refused). See [`crate::Redirect`].
    pub direct_rule: Option<(&'p Rule, Option<&'p Location>)>,
}

/// Explains the decision for a call of `call` (`service` or
/// `service+argument`) from `from` to `to`.
///
/// ```
/// let policy = ward_policy::Policy::from_text("p.toml", r#"
/// [compartment.vault]
/// role = "identity"
/// image = "vault.img"
/// offers = ["sign"]
///
/// [[rule]]
/// service = "sign"
/// from = "@any"
/// to = "vault"
/// action = "ask"
/// "#).unwrap();
/// let explanation = ward_policy::explain(&policy, "vault", "vault", "sign").unwrap();
/// assert!(ward_policy::render_explanation(&explanation).contains("ask: rule #1 at p.toml:7:1"));
/// ```
pub fn explain<'p>(policy: &'p Policy, from: &str, to: &str, call: &str) -> Result<Explanation<'p>, QueryError> {
    for name in [from, to] {
        check_name(name).map_err(|reason| QueryError::BadName { name: name.to_owned(), reason })?;
    }
    let call = ServiceCall::parse(call)?;
    let decision = policy.decide(from, to, &call);
    let located = |index: usize| policy.rules().get(index).map(|rule| (rule, policy.rule_location(index)));
    let rule = decision.rule.and_then(located);
    let direct_rule = decision.redirect.and_then(|redirect| redirect.direct_rule).and_then(located);
    Ok(Explanation {
        from: from.to_owned(),
        from_is: resolve(policy, from),
        to: to.to_owned(),
        to_is: resolve(policy, to),
        call,
        decision,
        rule,
        direct_rule,
    })
}

fn resolve<'p>(policy: &'p Policy, name: &str) -> Resolution<'p> {
    if name == HOST {
        return match policy.host() {
            Some(_) => Resolution::Host(policy.host_location()),
            None => Resolution::NoHost,
        };
    }
    match policy.compartment(name) {
        Lookup::Defined(_) => Resolution::Defined(policy.compartment_location(name)),
        Lookup::AdHoc(_) => Resolution::AdHoc(policy.template_location()),
        Lookup::Undefined => Resolution::Undefined,
    }
}

/// The explanation as text, for example:
///
/// ```text
/// sign from mail to vault: allow: rule #3 at policy/50-work.toml:12:1 decided
///   [[rule]] service = "sign", from = "@tag:work", to = "vault", action = "allow"
/// ```
///
/// or `sign from mail to vault: no rule matched: deny`. For a redirected
/// call, what the policy says of the same call made to the target directly
/// follows, unless the redirecting rule decides that too:
///
/// ```text
/// sign from mail to comms: deny: rule #2 at p.toml:20:1 redirects the call to "vault", and a direct call is not let through
///   [[rule]] service = "sign", from = "mail", to = "@any", action = "allow", target = "vault"
///   directly, sign from mail to vault: deny: rule #1 at p.toml:14:1 decided
///   [[rule]] service = "sign", from = "mail", to = "vault", action = "deny"
/// ```
pub fn render_explanation(explanation: &Explanation<'_>) -> String {
    let mut out = format!("{} from {} to {}: ", explanation.call, explanation.from, explanation.to);
    let decision = &explanation.decision;
    match (&explanation.rule, decision.rule) {
        (Some((rule, location)), Some(index)) => {
            let at = location.map(|location| format!(" at {location}")).unwrap_or_default();
            match decision.redirect {
                Some(redirect) if redirect.is_refused() => {
                    let _ = write!(
                        out,
                        "deny: rule #{}{at} redirects the call to {}, and a direct call is not let through\n  [[rule]] {rule}",
                        index + 1,
                        Quoted(redirect.target)
                    );
                }
                _ => {
                    let _ = write!(out, "{}", decision.action);
                    if let Some(target) = decision.target {
                        let _ = write!(out, " (redirected to {})", Quoted(target));
                    }
                    let _ = write!(out, ": rule #{}{at} decided\n  [[rule]] {rule}", index + 1);
                }
            }
            if let Some(redirect) = decision.redirect
                && redirect.direct_rule != Some(index)
            {
                let _ = write!(
                    out,
                    "\n  directly, {} from {} to {}: ",
                    explanation.call, explanation.from, redirect.target
                );
                match (explanation.direct_rule, redirect.direct_rule) {
                    (Some((direct, location)), Some(direct_index)) => {
                        let _ = write!(out, "{}", redirect.direct_action);
                        if let Some(elsewhere) = redirect.direct_target {
                            let _ = write!(out, " (redirected to {})", Quoted(elsewhere));
                        }
                        let at = location.map(|location| format!(" at {location}")).unwrap_or_default();
                        let _ = write!(out, ": rule #{}{at} decided\n  [[rule]] {direct}", direct_index + 1);
                    }
                    _ => out.push_str("no rule matched: deny"),
                }
            }
        }
        _ => out.push_str("no rule matched: deny"),
    }
    let sides = [(&explanation.from, &explanation.from_is, true), (&explanation.to, &explanation.to_is, false)];
    for (name, resolution, is_caller) in sides {
        match resolution {
            Resolution::Defined(_) => {}
            Resolution::Host(_) if is_caller => {
                out.push_str(
                    "\n  note: \"host\" is the host, which does not call compartments: no rule matches it as a caller",
                );
            }
            Resolution::Host(_) => {}
            Resolution::NoHost => {
                out.push_str("\n  note: \"host\" is the host, and the policy has no [host]: no rule matches it");
            }
            Resolution::AdHoc(location) => {
                let at = location.map(|location| format!(" at {location}")).unwrap_or_default();
                let _ = write!(
                    out,
                    "\n  note: {} is not defined: it is an ad-hoc compartment from [template.app]{at}",
                    Quoted(name)
                );
            }
            Resolution::Undefined => {
                let _ = write!(
                    out,
                    "\n  note: {} is not defined and the policy has no [template.app]: no rule matches it",
                    Quoted(name)
                );
            }
        }
    }
    out.push('\n');
    out
}
