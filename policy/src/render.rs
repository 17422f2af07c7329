//! `ward policy show`: the effective policy as normalized TOML.
//!
//! Normalized means one spelling for one policy: compartments in name
//! order, every field written out (defaults too) in a fixed order, tags and
//! offers sorted, then the template, then `[host]`, then the rules in
//! evaluation order. Re-parsing the text gives the
//! same policy, and two policies that say the same thing render the same.

use std::fmt::Write as _;

use crate::Policy;
use crate::display::is_escaped;
use crate::model::{CompartmentSpec, NetworkRule, PortRange, Rule};

/// The effective policy as TOML text that re-parses to the same policy.
pub fn show(policy: &Policy) -> String {
    let spec = policy.spec();
    let mut out = String::from("# The effective Ward policy, normalized (ward policy show).\n");
    for (name, compartment) in &spec.compartments {
        write_compartment(&mut out, &format!("compartment.{name}"), compartment);
    }
    if let Some(template) = &spec.app_template {
        write_compartment(&mut out, "template.app", template);
    }
    if let Some(host) = &spec.host {
        let _ = writeln!(out, "\n[host]");
        let _ = writeln!(out, "offers = {}", string_list(host.offers.iter().map(String::as_str)));
    }
    for rule in &spec.rules {
        write_rule(&mut out, rule);
    }
    out
}

fn write_compartment(out: &mut String, header: &str, compartment: &CompartmentSpec) {
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(out, "\n[{header}]");
    let _ = writeln!(out, "role = {}", quote(compartment.role.as_str()));
    let _ = writeln!(out, "image = {}", quote(&compartment.image));
    let _ = writeln!(out, "memory = {}", compartment.memory_mib);
    let _ = writeln!(out, "vcpus = {}", compartment.vcpus);
    let _ = writeln!(out, "autostart = {}", compartment.autostart);
    let _ = writeln!(out, "restart = {}", quote(compartment.restart.as_str()));
    let _ = writeln!(out, "tags = {}", string_list(compartment.tags.iter().map(String::as_str)));
    let _ = writeln!(out, "offers = {}", string_list(compartment.offers.iter().map(String::as_str)));

    let devices = &compartment.devices;
    let _ = writeln!(out, "\n[{header}.devices]");
    let _ = writeln!(out, "console = {}", devices.console);
    let _ = writeln!(out, "rng = {}", devices.rng);
    let _ = writeln!(out, "vsock = {}", devices.vsock);
    let _ = writeln!(out, "network = {}", devices.network);
    for volume in &devices.block {
        let _ = writeln!(out, "\n[[{header}.devices.block]]");
        let _ = writeln!(out, "name = {}", quote(&volume.name));
        let _ = writeln!(out, "size = {}", volume.size_mib);
        let _ = writeln!(out, "read-only = {}", volume.read_only);
    }
    for rule in &compartment.network {
        write_network_rule(out, header, rule);
    }
}

fn write_network_rule(out: &mut String, header: &str, rule: &NetworkRule) {
    let _ = writeln!(out, "\n[[{header}.network]]");
    let _ = writeln!(out, "peer = {}", quote(&rule.peer.to_string()));
    if !rule.ports.is_empty() {
        let ports: Vec<String> = rule.ports.iter().map(|range| port_value(*range)).collect();
        let _ = writeln!(out, "ports = [{}]", ports.join(", "));
    }
}

fn port_value(range: PortRange) -> String {
    if range.first == range.last { range.first.to_string() } else { quote(&range.to_string()) }
}

fn write_rule(out: &mut String, rule: &Rule) {
    let _ = writeln!(out, "\n[[rule]]");
    let _ = writeln!(out, "service = {}", quote(&rule.service.to_string()));
    let _ = writeln!(out, "from = {}", quote(&rule.from.to_string()));
    let _ = writeln!(out, "to = {}", quote(&rule.to.to_string()));
    let _ = writeln!(out, "action = {}", quote(rule.action.as_str()));
    if let Some(target) = &rule.target {
        let _ = writeln!(out, "target = {}", quote(target));
    }
}

fn string_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.map(quote).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string: quotes, backslashes, control characters and
/// bidirectional controls escaped (see [`crate::display::is_escaped`]), so
/// the text shows as written and still loads back the same.
pub(crate) fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if is_escaped(c) => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_toml_needs() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(quote("x\u{202e}y\u{9b}"), "\"x\\u202Ey\\u009B\"");
    }
}
