//! From TOML text to drafts: each file's compartments, template, `[host]`
//! and rules,
//! with every problem a single file can show (syntax, unknown keys, wrong
//! types, bad values, out-of-range numbers). Problems that need the whole
//! policy (duplicates across files, unknown names in rules, shadowing) are
//! `validate`'s.

mod compartment;
mod fields;
mod network;
mod rule;

use toml::de::DeTable;

use compartment::{Kind, read_compartment, read_name_set};
use fields::Reader;
pub(crate) use rule::DraftRule;

use crate::display::Quoted;
use crate::error::{ErrorKind, Location, PolicyError};
use crate::model::{CompartmentSpec, HOST, HostSpec};
use crate::names::check_name;
use crate::source::SourceFile;

const TOP_LEVEL_KEYS: &[&str] = &["compartment", "template", "host", "rule"];

/// The keys of `[host]`.
const HOST_KEYS: &[&str] = &["offers"];

/// A compartment (or the template) as read.
#[derive(Clone, Debug)]
pub(crate) struct DraftCompartment {
    /// `None` for the template.
    pub(crate) name: Option<String>,
    pub(crate) spec: CompartmentSpec,
    /// Where its name (the key) is.
    pub(crate) location: Location,
    /// Whether a field was wrong (the spec then holds stand-ins).
    pub(crate) damaged: bool,
}

/// A `[host]` table as read.
#[derive(Clone, Debug)]
pub(crate) struct DraftHost {
    pub(crate) spec: HostSpec,
    /// Where its key (`host`) is.
    pub(crate) location: Location,
}

/// Everything the files define, in file order, before cross-file checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Draft {
    pub(crate) compartments: Vec<DraftCompartment>,
    pub(crate) templates: Vec<DraftCompartment>,
    /// Every `[host]` (one a file at most; more than one in all is an error).
    pub(crate) hosts: Vec<DraftHost>,
    pub(crate) rules: Vec<DraftRule>,
}

/// Reads every file. Syntax errors come first: if any file is not valid
/// TOML, only syntax errors (of every file) are reported and `None` is
/// returned, since the rest of what is read from a broken file would only
/// add errors that follow from the first.
pub(crate) fn read_files(files: &[SourceFile<'_>], errors: &mut Vec<PolicyError>) -> Option<Draft> {
    let mut tables = Vec::with_capacity(files.len());
    for file in files {
        let (table, syntax_errors) = DeTable::parse_recoverable(file.text);
        for syntax_error in syntax_errors {
            let location = file.location(syntax_error.span().map_or(0, |span| span.start));
            let message = syntax_error.message().trim().to_owned();
            errors.push(PolicyError { location, context: String::new(), kind: ErrorKind::Syntax(message) });
        }
        tables.push(table);
    }
    if !errors.is_empty() {
        return None;
    }
    let mut draft = Draft::default();
    for (file, table) in files.iter().zip(&tables) {
        let mut reader = Reader { file, errors };
        read_document(&mut reader, table.get_ref(), &mut draft);
    }
    Some(draft)
}

fn read_document(reader: &mut Reader<'_, '_>, document: &DeTable<'_>, draft: &mut Draft) {
    reader.check_keys(document, TOP_LEVEL_KEYS, "");
    if let Some(value) = document.get("compartment")
        && let Some(compartments) = reader.as_table(value, "compartment", "")
    {
        for (key, value) in compartments {
            let name = key.get_ref().as_ref();
            let context = format!("compartment {}", Quoted(name));
            let location = reader.location(&key.span());
            let name_ok = match check_name(name) {
                Ok(()) if name == HOST => {
                    reader.error(&key.span(), &context, ErrorKind::ReservedName { name: name.to_owned() });
                    false
                }
                Ok(()) => true,
                Err(reason) => {
                    let kind = ErrorKind::BadValue { field: "compartment name".into(), value: name.into(), reason };
                    reader.error(&key.span(), "", kind);
                    false
                }
            };
            let Some(table) = reader.as_table(value, &context, "") else { continue };
            let (spec, damaged) = read_compartment(reader, table, &value.span(), Kind::Compartment, &context);
            if name_ok {
                draft.compartments.push(DraftCompartment { name: Some(name.to_owned()), spec, location, damaged });
            }
        }
    }
    if let Some(value) = document.get("template")
        && let Some(templates) = reader.as_table(value, "template", "")
    {
        for (key, value) in templates {
            let name = key.get_ref().as_ref();
            if name != "app" {
                reader.error(&key.span(), "", ErrorKind::UnknownTemplate { name: name.to_owned() });
                continue;
            }
            let context = "template \"app\"";
            let Some(table) = reader.as_table(value, context, "") else { continue };
            let (spec, damaged) = read_compartment(reader, table, &value.span(), Kind::Template, context);
            let location = reader.location(&key.span());
            draft.templates.push(DraftCompartment { name: None, spec, location, damaged });
        }
    }
    if let Some((key, value)) = document.iter().find(|(key, _)| key.get_ref().as_ref() == HOST)
        && let Some(table) = reader.as_table(value, HOST, "")
    {
        reader.check_keys(table, HOST_KEYS, HOST);
        let offers = table
            .get("offers")
            .map(|value| read_name_set(reader, value, "offers", "service", HOST))
            .unwrap_or_default();
        draft.hosts.push(DraftHost { spec: HostSpec { offers }, location: reader.location(&key.span()) });
    }
    if let Some(value) = document.get("rule")
        && let Some(rules) = reader.as_array(value, "rule", "")
    {
        for value in rules {
            let number = draft.rules.len() + 1;
            if let Some(rule) = rule::read_rule(reader, value, number, &format!("rule #{number}")) {
                draft.rules.push(rule);
            }
        }
    }
}
