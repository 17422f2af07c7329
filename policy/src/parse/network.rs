//! Reading a compartment's `[[compartment.NAME.network]]` rules.

use std::net::IpAddr;

use ipnet::IpNet;

use super::fields::{Reader, Value};
use crate::display::Quoted;
use crate::error::ErrorKind;
use crate::model::{NetworkRule, Peer, PortRange};

const NETWORK_KEYS: &[&str] = &["peer", "ports"];

/// The base58btc alphabet of multibase `z` strings, which `did:key`
/// identifiers use.
const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

pub(super) fn read_network_rules(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Vec<NetworkRule> {
    let mut rules = Vec::new();
    for (index, element) in reader.as_array(value, "network", context).unwrap_or_default().iter().enumerate() {
        let rule_context = format!("{context}: network rule {}", index + 1);
        let Some(table) = reader.as_table(element, "each element of network", context) else { continue };
        reader.check_keys(table, NETWORK_KEYS, &rule_context);
        let peer = match table.get("peer") {
            Some(peer) => read_peer(reader, peer, &rule_context),
            None => {
                reader.missing(&element.span(), "peer", &rule_context);
                None
            }
        };
        let ports = table.get("ports").map(|ports| (read_ports(reader, ports, &rule_context), ports.span()));
        let Some(peer) = peer else { continue };
        let ports = match (ports, &peer) {
            (None, _) => Vec::new(),
            (Some((_, span)), Peer::Identity(_)) => {
                reader.error(&span, &rule_context, ErrorKind::PortsForIdentity);
                continue;
            }
            (Some((Some(ports), span)), Peer::Network(_)) => {
                if ports.is_empty() {
                    reader.error(&span, &rule_context, ErrorKind::EmptyPorts);
                    continue;
                }
                ports
            }
            // A port was wrong, and that is reported.
            (Some((None, _)), Peer::Network(_)) => continue,
        };
        rules.push(NetworkRule { peer, ports });
    }
    rules
}

fn read_peer(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Option<Peer> {
    let text = reader.as_str(value, "peer", context)?;
    match parse_peer(text) {
        Ok(peer) => Some(peer),
        Err(reason) => {
            reader.error(
                &value.span(),
                context,
                ErrorKind::BadValue { field: "peer".into(), value: text.into(), reason },
            );
            None
        }
    }
}

/// A peer: `did:key:z...`, an IP address, or a network in CIDR form whose
/// host bits are zero (so each network has one spelling).
pub(crate) fn parse_peer(text: &str) -> Result<Peer, String> {
    if text.starts_with("did:") {
        let key = text.strip_prefix("did:key:z").ok_or("peer identities are did:key:z... (did:key, base58btc)")?;
        if key.is_empty() || !key.chars().all(|c| BASE58.contains(c)) {
            return Err("a did:key identity is 'did:key:z' followed by base58btc characters".into());
        }
        return Ok(Peer::Identity(text.to_owned()));
    }
    if text.contains('/') {
        let net: IpNet =
            text.parse().map_err(|_| "expected an IP address, a CIDR network or did:key:z...".to_string())?;
        if net.trunc() != net {
            return Err(format!("the address has host bits set; the network is {}", net.trunc()));
        }
        return Ok(Peer::Network(net));
    }
    let address: IpAddr =
        text.parse().map_err(|_| "expected an IP address, a CIDR network or did:key:z...".to_string())?;
    Ok(Peer::Network(IpNet::from(address)))
}

/// The port ranges, or `None` if any element was wrong (and reported).
fn read_ports(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Option<Vec<PortRange>> {
    let mut ranges = Vec::new();
    let mut all_read = true;
    for element in reader.as_array(value, "ports", context)? {
        let range = match element.get_ref() {
            toml::de::DeValue::Integer(_) => reader
                .as_integer_in(element, "port", (1, u64::from(u16::MAX)), "", context)
                .and_then(|port| u16::try_from(port).ok())
                .map(|port| PortRange { first: port, last: port }),
            toml::de::DeValue::String(text) => match parse_port_range(text) {
                Ok(range) => Some(range),
                Err(reason) => {
                    let kind = ErrorKind::BadValue { field: "port range".into(), value: text.to_string(), reason };
                    reader.error(&element.span(), context, kind);
                    None
                }
            },
            _ => {
                reader.wrong_type(
                    element,
                    "each element of ports",
                    "a port (integer) or a range (\"FIRST-LAST\")",
                    context,
                );
                None
            }
        };
        all_read &= range.is_some();
        ranges.extend(range);
    }
    all_read.then_some(ranges)
}

/// `"443"` or `"8000-8100"`: ports from 1 to 65535, first not after last.
pub(crate) fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let port = |part: &str| -> Result<u16, String> {
        match part.trim().parse::<u16>() {
            Ok(0) | Err(_) => {
                Err(format!("expected ports from 1 to 65535 as \"PORT\" or \"FIRST-LAST\", found {}", Quoted(part)))
            }
            Ok(port) => Ok(port),
        }
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => {
            let single = port(text)?;
            (single, single)
        }
    };
    if first > last {
        return Err(format!("the range starts after it ends ({first} > {last})"));
    }
    Ok(PortRange { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_accept_addresses_networks_and_did_keys() {
        assert_eq!(parse_peer("192.0.2.7").unwrap().to_string(), "192.0.2.7");
        assert_eq!(parse_peer("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert!(matches!(
            parse_peer("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"),
            Ok(Peer::Identity(_))
        ));
    }

    #[test]
    fn peers_reject_host_bits_hostnames_and_other_dids() {
        assert!(parse_peer("192.0.2.7/24").unwrap_err().contains("192.0.2.0/24"));
        assert!(parse_peer("example.org").is_err());
        assert!(parse_peer("did:web:example.org").unwrap_err().contains("did:key"));
        assert!(parse_peer("did:key:z0OIl").is_err());
        assert!(parse_peer("did:key:z").is_err());
    }

    #[test]
    fn port_ranges_are_ordered_and_non_zero() {
        assert_eq!(parse_port_range("443"), Ok(PortRange { first: 443, last: 443 }));
        assert_eq!(parse_port_range("8000-8100"), Ok(PortRange { first: 8000, last: 8100 }));
        assert!(parse_port_range("0").is_err());
        assert!(parse_port_range("9-1").unwrap_err().contains("starts after"));
        assert!(parse_port_range("70000").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
