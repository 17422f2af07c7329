//! Reading a `[[rule]]` table: a service rule in the style of Qubes' qrexec
//! policy.

use std::ops::Range;

use toml::de::DeTable;

use super::fields::{Reader, Value};
use crate::error::{ErrorKind, Location};
use crate::model::{Action, HOST, Pattern, Role, Rule, ServicePattern};
use crate::names::{check_argument, check_name, check_service_name};

const RULE_KEYS: &[&str] = &["service", "from", "to", "action", "target"];

/// A rule as read, with the positions validation reports errors at.
#[derive(Clone, Debug)]
pub(crate) struct DraftRule {
    /// Its number in policy order, from 1.
    pub(crate) number: usize,
    pub(crate) rule: Rule,
    /// Where the `[[rule]]` table starts.
    pub(crate) location: Location,
    pub(crate) service_at: Location,
    pub(crate) from_at: Location,
    pub(crate) to_at: Location,
    pub(crate) target_at: Option<Location>,
    /// Whether a field was wrong (the rule then holds stand-ins).
    pub(crate) damaged: bool,
}

pub(super) fn read_rule(
    reader: &mut Reader<'_, '_>,
    value: &Value<'_>,
    number: usize,
    context: &str,
) -> Option<DraftRule> {
    let table: &DeTable<'_> = reader.as_table(value, "each element of rule", context)?;
    let errors_before = reader.errors.len();
    let table_span = value.span();
    reader.check_keys(table, RULE_KEYS, context);

    let service = required(reader, table, &table_span, "service", context)
        .map(|(text, span)| (read_service(reader, text, &span, context), span));
    let from = required(reader, table, &table_span, "from", context)
        .map(|(text, span)| (read_pattern(reader, text, &span, "from", context), span));
    let to = required(reader, table, &table_span, "to", context)
        .map(|(text, span)| (read_pattern(reader, text, &span, "to", context), span));
    let action = required(reader, table, &table_span, "action", context).and_then(|(word, span)| {
        let action = Action::from_word(word);
        if action.is_none() {
            let kind = ErrorKind::BadEnum { field: "action".into(), value: word.into(), expected: Action::WORDS };
            reader.error(&span, context, kind);
        }
        action
    });
    let target = table.get("target").and_then(|value| {
        let name = reader.as_str(value, "target", context)?;
        if let Err(reason) = check_name(name) {
            reader.error(
                &value.span(),
                context,
                ErrorKind::BadValue { field: "target".into(), value: name.into(), reason },
            );
            return None;
        }
        Some((name.to_owned(), value.span()))
    });
    if let (Some(Action::Deny), Some((_, span))) = (action, &target) {
        reader.error(span, context, ErrorKind::TargetWithDeny);
    }

    let damaged = reader.errors.len() > errors_before;
    let at = |span: Option<&Range<usize>>| reader.location(span.unwrap_or(&table_span));
    let service_at = at(service.as_ref().map(|(_, span)| span));
    let from_at = at(from.as_ref().map(|(_, span)| span));
    let to_at = at(to.as_ref().map(|(_, span)| span));
    let target_at = target.as_ref().map(|(_, span)| reader.location(span));
    Some(DraftRule {
        number,
        rule: Rule {
            // Stand-ins for wrong fields make a rule that matches nothing
            // in particular; it is marked damaged and never evaluated.
            service: service.and_then(|(service, _)| service).unwrap_or(ServicePattern::Any),
            from: from.and_then(|(from, _)| from).unwrap_or(Pattern::Any),
            to: to.and_then(|(to, _)| to).unwrap_or(Pattern::Any),
            action: action.unwrap_or(Action::Deny),
            target: target.map(|(name, _)| name),
        },
        location: reader.location(&table_span),
        service_at,
        from_at,
        to_at,
        target_at,
        damaged,
    })
}

/// A required string field and its span.
fn required<'t>(
    reader: &mut Reader<'_, '_>,
    table: &'t DeTable<'_>,
    table_span: &Range<usize>,
    field: &'static str,
    context: &str,
) -> Option<(&'t str, Range<usize>)> {
    let Some(value) = table.get(field) else {
        reader.missing(table_span, field, context);
        return None;
    };
    reader.as_str(value, field, context).map(|text| (text, value.span()))
}

fn read_service(reader: &mut Reader<'_, '_>, text: &str, span: &Range<usize>, context: &str) -> Option<ServicePattern> {
    match parse_service_pattern(text) {
        Ok(service) => Some(service),
        Err(reason) => {
            reader.error(span, context, ErrorKind::BadValue { field: "service".into(), value: text.into(), reason });
            None
        }
    }
}

/// `*`, `service` or `service+argument`.
pub(crate) fn parse_service_pattern(text: &str) -> Result<ServicePattern, String> {
    if text == "*" {
        return Ok(ServicePattern::Any);
    }
    let (name, argument) = match text.split_once('+') {
        Some((name, argument)) => (name, Some(argument)),
        None => (text, None),
    };
    check_service_name(name)?;
    if let Some(argument) = argument {
        check_argument(argument)?;
    }
    Ok(ServicePattern::Named { name: name.to_owned(), argument: argument.map(str::to_owned) })
}

fn read_pattern(
    reader: &mut Reader<'_, '_>,
    text: &str,
    span: &Range<usize>,
    field: &'static str,
    context: &str,
) -> Option<Pattern> {
    if let Some(word) = text.strip_prefix("@role:") {
        let Some(role) = Role::from_word(word) else {
            let kind = ErrorKind::BadEnum { field: format!("{field} role"), value: word.into(), expected: Role::WORDS };
            reader.error(span, context, kind);
            return None;
        };
        return Some(Pattern::Role(role));
    }
    match parse_pattern(text) {
        Ok(pattern) => Some(pattern),
        Err(reason) => {
            reader.error(span, context, ErrorKind::BadValue { field: field.into(), value: text.into(), reason });
            None
        }
    }
}

/// `@any`, `@tag:NAME`, `@role:ROLE`, `@disposable`, `host` (the host's
/// services) or a compartment name.
pub(crate) fn parse_pattern(text: &str) -> Result<Pattern, String> {
    const FORMS: &str = "expected @any, @tag:NAME, @role:ROLE, @disposable or a compartment name";
    match text {
        "@any" => Ok(Pattern::Any),
        "@disposable" => Ok(Pattern::Disposable),
        HOST => Ok(Pattern::Host),
        _ => {
            if let Some(tag) = text.strip_prefix("@tag:") {
                check_name(tag).map_err(|reason| format!("tag: {reason}"))?;
                Ok(Pattern::Tag(tag.to_owned()))
            } else if let Some(word) = text.strip_prefix("@role:") {
                Role::from_word(word).map(Pattern::Role).ok_or_else(|| FORMS.to_owned())
            } else if text.starts_with('@') {
                Err(FORMS.to_owned())
            } else {
                check_name(text)?;
                Ok(Pattern::Name(text.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_patterns_parse_all_forms() {
        assert_eq!(parse_service_pattern("*"), Ok(ServicePattern::Any));
        assert_eq!(parse_service_pattern("sign"), Ok(ServicePattern::Named { name: "sign".into(), argument: None }));
        assert_eq!(
            parse_service_pattern("storage.get+photos"),
            Ok(ServicePattern::Named { name: "storage.get".into(), argument: Some("photos".into()) })
        );
        assert!(parse_service_pattern("sign+").is_err());
        assert!(parse_service_pattern("+x").is_err());
        assert!(parse_service_pattern("a+b+c").is_err());
        assert!(parse_service_pattern("**").is_err());
    }

    #[test]
    fn patterns_parse_all_forms() {
        assert_eq!(parse_pattern("@any"), Ok(Pattern::Any));
        assert_eq!(parse_pattern("@disposable"), Ok(Pattern::Disposable));
        assert_eq!(parse_pattern("@tag:work"), Ok(Pattern::Tag("work".into())));
        assert_eq!(parse_pattern("@role:app"), Ok(Pattern::Role(Role::App)));
        assert_eq!(parse_pattern("mail"), Ok(Pattern::Name("mail".into())));
        assert_eq!(parse_pattern("host"), Ok(Pattern::Host));
        assert!(parse_pattern("@anyvm").unwrap_err().contains("expected @any"));
        assert!(parse_pattern("@tag:").is_err());
        assert!(parse_pattern("@role:root").is_err());
        assert!(parse_pattern("Mail").is_err());
    }
}
