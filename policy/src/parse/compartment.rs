//! Reading a `[compartment.NAME]` or `[template.app]` table.

use std::collections::BTreeSet;
use std::ops::Range;

use rustc_hash::FxHashMap;
use toml::de::DeTable;

use super::fields::{Reader, Value};
use super::network::read_network_rules;
use crate::display::Quoted;
use crate::error::ErrorKind;
use crate::model::{
    BlockVolume, CompartmentSpec, DEFAULT_MEMORY_MIB, Devices, MEMORY_MIB, RestartPolicy, Role, VCPUS, VOLUME_MIB,
};
use crate::names::{check_name, check_service_name};

/// The keys of a compartment (and of the template).
pub(crate) const COMPARTMENT_KEYS: &[&str] =
    &["role", "image", "memory", "vcpus", "devices", "autostart", "restart", "tags", "offers", "network"];

const DEVICE_KEYS: &[&str] = &["console", "rng", "vsock", "network", "block"];
const VOLUME_KEYS: &[&str] = &["name", "size", "read-only"];

/// Whether the table is a named compartment or the template, which differ
/// only in that the template's role is `app` whether or not it says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Compartment,
    Template,
}

/// Reads a compartment's table. Returns the spec (with stand-in values for
/// fields that were wrong, so later checks can go on) and whether any field
/// was wrong.
pub(crate) fn read_compartment(
    reader: &mut Reader<'_, '_>,
    table: &DeTable<'_>,
    table_span: &Range<usize>,
    kind: Kind,
    context: &str,
) -> (CompartmentSpec, bool) {
    let errors_before = reader.errors.len();
    reader.check_keys(table, COMPARTMENT_KEYS, context);

    let role = match (table.get("role"), kind) {
        (Some(value), _) => read_role(reader, value, kind, context),
        (None, Kind::Template) => Some(Role::App),
        (None, Kind::Compartment) => {
            reader.missing(table_span, "role", context);
            None
        }
    };
    let image = match table.get("image") {
        Some(value) => read_image(reader, value, context),
        None => {
            reader.missing(table_span, "image", context);
            None
        }
    };
    let memory_mib = table
        .get("memory")
        .and_then(|value| {
            let range = (u64::from(*MEMORY_MIB.start()), u64::from(*MEMORY_MIB.end()));
            reader.as_integer_in(value, "memory", range, " MiB", context)
        })
        .and_then(|memory| u32::try_from(memory).ok());
    let vcpus = table
        .get("vcpus")
        .and_then(|value| {
            reader.as_integer_in(value, "vcpus", (u64::from(*VCPUS.start()), u64::from(*VCPUS.end())), "", context)
        })
        .and_then(|vcpus| u8::try_from(vcpus).ok());
    let devices = table.get("devices").and_then(|value| read_devices(reader, value, context));
    let autostart = table.get("autostart").and_then(|value| reader.as_bool(value, "autostart", context));
    let restart = table.get("restart").and_then(|value| read_restart(reader, value, context));
    let tags = table.get("tags").map(|value| read_name_set(reader, value, "tags", "tag", context)).unwrap_or_default();
    let offers =
        table.get("offers").map(|value| read_name_set(reader, value, "offers", "service", context)).unwrap_or_default();
    let network = table.get("network").map(|value| read_network_rules(reader, value, context)).unwrap_or_default();

    let devices = devices.unwrap_or_default();
    if let Some(value) = table.get("network")
        && !devices.network
    {
        reader.error(&value.span(), context, ErrorKind::NetworkWithoutDevice);
    }

    let spec = CompartmentSpec {
        // Stand-ins for wrong or missing required fields: the error is
        // already recorded, and the policy will not be returned.
        role: role.unwrap_or(Role::App),
        image: image.unwrap_or_default(),
        memory_mib: memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
        vcpus: vcpus.unwrap_or(*VCPUS.start()),
        devices,
        autostart: autostart.unwrap_or(false),
        restart: restart.unwrap_or_default(),
        tags,
        offers,
        network,
    };
    (spec, reader.errors.len() > errors_before)
}

fn read_role(reader: &mut Reader<'_, '_>, value: &Value<'_>, kind: Kind, context: &str) -> Option<Role> {
    let word = reader.as_str(value, "role", context)?;
    let Some(role) = Role::from_word(word) else {
        let kind = ErrorKind::BadEnum { field: "role".into(), value: word.into(), expected: Role::WORDS };
        reader.error(&value.span(), context, kind);
        return None;
    };
    if kind == Kind::Template && role != Role::App {
        let kind = ErrorKind::BadEnum { field: "role".into(), value: word.into(), expected: &["app"] };
        reader.error(&value.span(), context, kind);
        return None;
    }
    Some(role)
}

fn read_image(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Option<String> {
    let image = reader.as_str(value, "image", context)?;
    if image.trim().is_empty() {
        let kind =
            ErrorKind::BadValue { field: "image".into(), value: image.into(), reason: "it cannot be empty".into() };
        reader.error(&value.span(), context, kind);
        return None;
    }
    Some(image.to_owned())
}

fn read_restart(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Option<RestartPolicy> {
    let word = reader.as_str(value, "restart", context)?;
    let policy = RestartPolicy::from_word(word);
    if policy.is_none() {
        let kind = ErrorKind::BadEnum { field: "restart".into(), value: word.into(), expected: RestartPolicy::WORDS };
        reader.error(&value.span(), context, kind);
    }
    policy
}

/// Reads `tags` (names) or `offers` (service names, `what` is `"service"`):
/// each checked, none twice. Also reads `[host]`'s `offers`.
pub(super) fn read_name_set(
    reader: &mut Reader<'_, '_>,
    value: &Value<'_>,
    field: &str,
    what: &'static str,
    context: &str,
) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    // Where each name was first written, for duplicates: a table, so a
    // list of 100,000 tags costs 100,000 look-ups, not 5 billion compares.
    let mut first_spans: FxHashMap<&str, Range<usize>> = FxHashMap::default();
    for (name, span) in reader.as_strings(value, field, context).unwrap_or_default() {
        let checked = if what == "service" { check_service_name(name) } else { check_name(name) };
        if let Err(reason) = checked {
            reader.error(&span, context, ErrorKind::BadValue { field: what.into(), value: name.into(), reason });
            continue;
        }
        if let Some(first) = first_spans.get(name) {
            let first = reader.location(first);
            reader.error(&span, context, ErrorKind::Duplicate { what, name: name.into(), first });
            continue;
        }
        first_spans.insert(name, span);
        set.insert(name.to_owned());
    }
    set
}

fn read_devices(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Option<Devices> {
    let table = reader.as_table(value, "devices", context)?;
    reader.check_keys(table, DEVICE_KEYS, context);
    let defaults = Devices::default();
    let mut flag = |key: &str, default: bool| {
        table.get(key).and_then(|value| reader.as_bool(value, &format!("devices.{key}"), context)).unwrap_or(default)
    };
    let console = flag("console", defaults.console);
    let rng = flag("rng", defaults.rng);
    let vsock = flag("vsock", defaults.vsock);
    let network = flag("network", defaults.network);
    let block = table.get("block").map(|value| read_volumes(reader, value, context)).unwrap_or_default();
    Some(Devices { console, rng, vsock, network, block })
}

fn read_volumes(reader: &mut Reader<'_, '_>, value: &Value<'_>, context: &str) -> Vec<BlockVolume> {
    let mut volumes: Vec<BlockVolume> = Vec::new();
    // Every name seen, also of volumes with other errors, for duplicates.
    let mut seen: FxHashMap<&str, Range<usize>> = FxHashMap::default();
    for element in reader.as_array(value, "devices.block", context).unwrap_or_default() {
        let Some(table) = reader.as_table(element, "each element of devices.block", context) else { continue };
        let name = match table.get("name") {
            Some(name) => reader.as_str(name, "devices.block.name", context).map(|text| (text, name.span())),
            None => {
                reader.missing(&element.span(), "name", &format!("{context}: block volume"));
                None
            }
        };
        let volume_context = match name {
            Some((name, _)) => format!("{context}: block volume {}", Quoted(name)),
            None => format!("{context}: block volume"),
        };
        reader.check_keys(table, VOLUME_KEYS, &volume_context);
        let size_mib = match table.get("size") {
            Some(size) => {
                reader.as_integer_in(size, "size", (*VOLUME_MIB.start(), *VOLUME_MIB.end()), " MiB", &volume_context)
            }
            None => {
                reader.missing(&element.span(), "size", &volume_context);
                None
            }
        };
        let read_only =
            table.get("read-only").and_then(|flag| reader.as_bool(flag, "read-only", &volume_context)).unwrap_or(false);
        let Some((name, name_span)) = name else { continue };
        if let Err(reason) = check_name(name) {
            reader.error(
                &name_span,
                context,
                ErrorKind::BadValue { field: "block volume name".into(), value: name.into(), reason },
            );
            continue;
        }
        if let Some(first) = seen.get(name) {
            let first = reader.location(first);
            reader.error(&name_span, context, ErrorKind::Duplicate { what: "block volume", name: name.into(), first });
            continue;
        }
        seen.insert(name, name_span);
        let Some(size_mib) = size_mib else { continue };
        volumes.push(BlockVolume { name: name.to_owned(), size_mib, read_only });
    }
    volumes
}
