//! The compartment part of the language: every field, its default, its
//! range and its errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

mod common;

use common::{assert_one_error, errors, load};
use ward_policy::{Lookup, Peer, PortRange, RestartPolicy, Role};

fn compartment(fields: &str) -> String {
    format!("[compartment.c]\nrole = \"app\"\nimage = \"c.img\"\n{fields}\n")
}

#[test]
fn minimal_compartment_gets_defaults_and_only_a_console() {
    let policy = load(&compartment(""));
    let Lookup::Defined(spec) = policy.compartment("c") else { panic!("c should be defined") };
    assert_eq!(spec.role, Role::App);
    assert_eq!(spec.image, "c.img");
    assert_eq!(spec.memory_mib, 128);
    assert_eq!(spec.vcpus, 1);
    assert!(!spec.autostart);
    assert_eq!(spec.restart, RestartPolicy::Never);
    assert!(spec.devices.console);
    assert!(!spec.devices.rng && !spec.devices.vsock && !spec.devices.network);
    assert!(spec.devices.block.is_empty());
    assert!(spec.tags.is_empty() && spec.offers.is_empty() && spec.network.is_empty());
}

#[test]
fn every_field_is_read() {
    let policy = load(&compartment(
        r#"memory = 512
vcpus = 2
autostart = true
restart = "on-failure"
tags = ["work", "personal"]
offers = ["notes.read"]

[compartment.c.devices]
console = false
rng = true
vsock = true
network = true
block = [{ name = "data", size = 2048 }, { name = "media", size = 100, read-only = true }]

[[compartment.c.network]]
peer = "192.0.2.0/24"
ports = [443, "8000-8100"]

[[compartment.c.network]]
peer = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
"#,
    ));
    let spec = policy.compartment("c").spec().unwrap();
    assert_eq!((spec.memory_mib, spec.vcpus, spec.autostart), (512, 2, true));
    assert_eq!(spec.restart, RestartPolicy::OnFailure);
    assert_eq!(spec.tags.iter().collect::<Vec<_>>(), ["personal", "work"]);
    assert!(spec.offers.contains("notes.read"));
    assert!(!spec.devices.console && spec.devices.rng && spec.devices.vsock && spec.devices.network);
    assert_eq!(spec.devices.block.len(), 2);
    assert_eq!((spec.devices.block[0].name.as_str(), spec.devices.block[0].size_mib), ("data", 2048));
    assert!(!spec.devices.block[0].read_only && spec.devices.block[1].read_only);
    assert_eq!(spec.network.len(), 2);
    assert_eq!(spec.network[0].ports, [PortRange { first: 443, last: 443 }, PortRange { first: 8000, last: 8100 }]);
    assert!(matches!(spec.network[1].peer, Peer::Identity(_)));
}

#[test]
fn every_role_and_restart_policy_is_accepted() {
    for role in ["identity", "storage", "communication", "app"] {
        for restart in ["never", "on-failure", "always"] {
            let text = format!("[compartment.c]\nrole = {role:?}\nimage = \"i\"\nrestart = {restart:?}\n");
            let policy = load(&text);
            let spec = policy.compartment("c").spec().unwrap();
            assert_eq!((spec.role.as_str(), spec.restart.as_str()), (role, restart));
        }
    }
}

#[test]
fn memory_out_of_range_names_field_value_and_range() {
    let lines = errors(&compartment("memory = 9000"));
    assert_eq!(lines, ["p.toml:4:10: compartment \"c\": memory 9000 MiB is out of range (8..=3328)"]);
    assert_one_error(&errors(&compartment("memory = 7")), &["memory 7 MiB is out of range"]);
    assert_one_error(&errors(&compartment("memory = -1")), &["memory -1 MiB"]);
    assert_one_error(&errors(&compartment("memory = 99999999999999999")), &["memory 99999999999999999 MiB"]);
    load(&compartment("memory = 8"));
    load(&compartment("memory = 3328"));
    load(&compartment("memory = 1_024"));
}

#[test]
fn vcpus_out_of_range_is_an_error() {
    assert_one_error(&errors(&compartment("vcpus = 0")), &["vcpus 0 is out of range (1..=2)"]);
    assert_one_error(&errors(&compartment("vcpus = 3")), &["vcpus 3 is out of range (1..=2)"]);
}

#[test]
fn wrong_types_name_field_expected_and_found() {
    assert_one_error(&errors(&compartment("memory = \"lots\"")), &["memory must be an integer, found a string"]);
    assert_one_error(&errors(&compartment("memory = 1.5")), &["memory must be an integer, found a float"]);
    assert_one_error(&errors(&compartment("autostart = \"yes\"")), &["autostart must be a boolean"]);
    assert_one_error(&errors(&compartment("tags = \"work\"")), &["tags must be an array, found a string"]);
    assert_one_error(&errors(&compartment("tags = [1]")), &["each element of tags must be a string, found an integer"]);
    assert_one_error(&errors(&compartment("devices = 1")), &["devices must be a table"]);
    assert_one_error(&errors("[compartment.c]\nrole = 1\nimage = \"i\""), &["role must be a string"]);
    assert_one_error(&errors("compartment = 1"), &["compartment must be a table, found an integer"]);
    assert_one_error(&errors("compartment.c = 1"), &["compartment \"c\" must be a table"]);
}

#[test]
fn bad_enum_values_list_the_allowed_words() {
    assert_one_error(
        &errors("[compartment.c]\nrole = \"admin\"\nimage = \"i\""),
        &["role \"admin\" is not valid; expected one of: identity, storage, communication, app"],
    );
    assert_one_error(
        &errors(&compartment("restart = \"sometimes\"")),
        &["restart \"sometimes\" is not valid; expected one of: never, on-failure, always"],
    );
}

#[test]
fn missing_required_fields_are_reported_at_the_table() {
    let lines = errors("\n[compartment.c]\nmemory = 64\n");
    assert_eq!(
        lines,
        [
            "p.toml:2:1: compartment \"c\": missing required field \"role\"",
            "p.toml:2:1: compartment \"c\": missing required field \"image\"",
        ]
    );
}

#[test]
fn unknown_keys_are_reported_at_every_level() {
    let lines = errors(&compartment(
        "colour = \"red\"\n[compartment.c.devices]\nsound = true\nblock = [{ name = \"d\", size = 1, fast = true }]",
    ));
    assert_one_error(&lines, &["unknown key \"colour\"; expected one of: role, image"]);
    assert_one_error(&lines, &["unknown key \"sound\"; expected one of: console, rng, vsock, network, block"]);
    assert_one_error(&lines, &["block volume \"d\": unknown key \"fast\"; expected one of: name, size, read-only"]);
    assert_one_error(
        &errors("colour = 1"),
        &["p.toml:1:1: unknown key \"colour\"; expected one of: compartment, template, host, rule"],
    );
}

#[test]
fn bad_names_are_refused() {
    assert_one_error(
        &errors("[compartment.Mail]\nrole = \"app\"\nimage = \"i\""),
        &["compartment name \"Mail\" is not valid"],
    );
    assert_one_error(&errors("[compartment.-x]\nrole = \"app\"\nimage = \"i\""), &["must start and end"]);
    assert_one_error(&errors(&compartment("tags = [\"Work\"]")), &["tag \"Work\" is not valid"]);
    assert_one_error(&errors(&compartment("offers = [\"a+b\"]")), &["service \"a+b\" is not valid"]);
}

#[test]
fn empty_image_is_refused() {
    assert_one_error(
        &errors("[compartment.c]\nrole = \"app\"\nimage = \" \""),
        &["image \" \" is not valid: it cannot be empty"],
    );
}

#[test]
fn duplicate_tags_offers_and_volumes_point_at_the_first() {
    assert_one_error(
        &errors(&compartment("tags = [\"work\", \"work\"]")),
        &["tag \"work\" is already defined at p.toml:4:9"],
    );
    assert_one_error(&errors(&compartment("offers = [\"a\", \"a\"]")), &["service \"a\" is already defined"]);
    assert_one_error(
        &errors(&compartment("devices.block = [{ name = \"d\", size = 1 }, { name = \"d\", size = 2 }]")),
        &["block volume \"d\" is already defined"],
    );
}

#[test]
fn block_volumes_need_name_and_size_in_range() {
    assert_one_error(&errors(&compartment("devices.block = [{ size = 1 }]")), &["missing required field \"name\""]);
    assert_one_error(
        &errors(&compartment("devices.block = [{ name = \"d\" }]")),
        &["block volume \"d\": missing required field \"size\""],
    );
    assert_one_error(
        &errors(&compartment("devices.block = [{ name = \"d\", size = 0 }]")),
        &["size 0 MiB is out of range (1..=1048576)"],
    );
}

#[test]
fn network_rules_need_a_network_device() {
    assert_one_error(
        &errors(&compartment("network = [{ peer = \"192.0.2.1\" }]")),
        &["compartment \"c\": network rules need devices.network = true"],
    );
}

#[test]
fn network_peers_and_ports_are_checked() {
    let with = |rule: &str| compartment(&format!("devices.network = true\nnetwork = [{rule}]"));
    assert_one_error(
        &errors(&with("{ peer = \"example.org\" }")),
        &["network rule 1: peer \"example.org\" is not valid"],
    );
    assert_one_error(&errors(&with("{ peer = \"10.1.2.3/8\" }")), &["host bits set; the network is 10.0.0.0/8"]);
    assert_one_error(&errors(&with("{ peer = \"192.0.2.1\", ports = [0] }")), &["port 0 is out of range (1..=65535)"]);
    assert_one_error(
        &errors(&with("{ peer = \"192.0.2.1\", ports = [\"9-1\"] }")),
        &["port range \"9-1\" is not valid"],
    );
    assert_one_error(
        &errors(&with("{ peer = \"192.0.2.1\", ports = [] }")),
        &["ports is empty, which would allow no port"],
    );
    assert_one_error(
        &errors(&with("{ peer = \"192.0.2.1\", ports = [true] }")),
        &["each element of ports must be a port"],
    );
    assert_one_error(
        &errors(&with("{ peer = \"did:key:zabc\", ports = [1] }")),
        &["network rule 1: ports are for address peers"],
    );
    assert_one_error(&errors(&with("{ ports = [1] }")), &["network rule 1: missing required field \"peer\""]);
    assert_one_error(
        &errors(&with("{ peer = \"192.0.2.1\", proto = \"tcp\" }")),
        &["unknown key \"proto\"; expected one of: peer, ports"],
    );
}

#[test]
fn network_queries_are_default_deny() {
    let policy = load(&compartment(
        "devices.network = true\nnetwork = [{ peer = \"192.0.2.0/24\", ports = [443] }, { peer = \"did:key:zabc\" }]",
    ));
    let inside = "192.0.2.9".parse().unwrap();
    assert!(policy.network_rule_for_address("c", inside, 443).is_some());
    assert!(policy.network_rule_for_address("c", inside, 80).is_none());
    assert!(policy.network_rule_for_address("c", "198.51.100.1".parse().unwrap(), 443).is_none());
    assert!(policy.network_rule_for_address("other", inside, 443).is_none());
    assert!(policy.may_reach_identity("c", "did:key:zabc"));
    assert!(!policy.may_reach_identity("c", "did:key:zother"));
}

#[test]
fn template_applies_to_undefined_names_only() {
    let policy = load(
        "[compartment.c]\nrole = \"storage\"\nimage = \"c.img\"\n\n[template.app]\nimage = \"app.img\"\nmemory = 64\n",
    );
    assert!(matches!(policy.compartment("c"), Lookup::Defined(spec) if spec.role == Role::Storage));
    let Lookup::AdHoc(template) = policy.compartment("scratch-1") else { panic!("template should apply") };
    assert_eq!((template.role, template.memory_mib, template.image.as_str()), (Role::App, 64, "app.img"));
    assert_eq!(policy.compartment("Not A Name"), Lookup::Undefined);
    let without = load("[compartment.c]\nrole = \"storage\"\nimage = \"c.img\"\n");
    assert_eq!(without.compartment("scratch-1"), Lookup::Undefined);
}

#[test]
fn template_is_app_only_and_single() {
    assert_one_error(
        &errors("[template.work]\nimage = \"i\""),
        &["template \"work\" is not supported; only [template.app]"],
    );
    assert_one_error(
        &errors("[template.app]\nrole = \"storage\"\nimage = \"i\""),
        &["role \"storage\" is not valid; expected one of: app"],
    );
    assert_one_error(&errors("[template.app]\nmemory = 64"), &["template \"app\": missing required field \"image\""]);
    let two = ward_policy::Policy::from_files(&[
        ("a.toml", "[template.app]\nimage = \"i\""),
        ("b.toml", "[template.app]\nimage = \"j\""),
    ]);
    let lines: Vec<String> = two.unwrap_err().errors().iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["b.toml:1:11: template \"app\" is already defined at a.toml:1:11"]);
}

#[test]
fn every_error_of_a_compartment_is_reported_at_once() {
    let lines =
        errors("[compartment.c]\nrole = \"boss\"\nimage = 3\nmemory = 9000\nvcpus = 9\nrestart = \"x\"\ncolour = 1\n");
    assert_eq!(lines.len(), 6, "{lines:#?}");
}
