//! Typed reading of TOML values with their positions.
//!
//! The parser walks the span-preserving tree of `toml::de::DeTable` by hand
//! rather than through serde, so that it can go on after a bad field and
//! report every problem of a file, each at the position of the key or value
//! at fault.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ErrorKind, Location, PolicyError};
use crate::source::SourceFile;

/// A TOML value with its position.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Reads one file's values, collecting errors as it goes.
#[derive(Debug)]
pub(crate) struct Reader<'f, 'e> {
    pub(crate) file: &'f SourceFile<'f>,
    pub(crate) errors: &'e mut Vec<PolicyError>,
}

impl Reader<'_, '_> {
    pub(crate) fn location(&self, span: &Range<usize>) -> Location {
        self.file.location(span.start)
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, context: &str, kind: ErrorKind) {
        let location = self.location(span);
        self.errors.push(PolicyError { location, context: context.to_owned(), kind });
    }

    /// Reports every key of `table` that is not in `allowed`.
    pub(crate) fn check_keys(&mut self, table: &DeTable<'_>, allowed: &'static [&'static str], context: &str) {
        for key in table.keys() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                let kind = ErrorKind::UnknownKey { key: key.get_ref().to_string(), expected: allowed };
                self.error(&key.span(), context, kind);
            }
        }
    }

    /// Reports a value of the wrong type.
    pub(crate) fn wrong_type(&mut self, value: &Value<'_>, field: &str, expected: &'static str, context: &str) {
        let kind =
            ErrorKind::WrongType { field: field.to_owned(), expected, found: type_with_article(value.get_ref()) };
        self.error(&value.span(), context, kind);
    }

    /// Reports a missing required field at the table that should hold it.
    pub(crate) fn missing(&mut self, table_span: &Range<usize>, field: &'static str, context: &str) {
        self.error(table_span, context, ErrorKind::MissingField { field });
    }

    pub(crate) fn as_table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        field: &str,
        context: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(value, field, "a table", context);
                None
            }
        }
    }

    pub(crate) fn as_str<'v>(&mut self, value: &'v Value<'_>, field: &str, context: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(text) => Some(text.as_ref()),
            _ => {
                self.wrong_type(value, field, "a string", context);
                None
            }
        }
    }

    pub(crate) fn as_bool(&mut self, value: &Value<'_>, field: &str, context: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(flag) => Some(*flag),
            _ => {
                self.wrong_type(value, field, "a boolean (true or false)", context);
                None
            }
        }
    }

    pub(crate) fn as_array<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        field: &str,
        context: &str,
    ) -> Option<&'v [Value<'i>]> {
        match value.get_ref() {
            DeValue::Array(array) => Some(&array[..]),
            _ => {
                self.wrong_type(value, field, "an array", context);
                None
            }
        }
    }

    /// An integer in `min..=max`, reported with `unit` when out of range.
    pub(crate) fn as_integer_in(
        &mut self,
        value: &Value<'_>,
        field: &str,
        (min, max): (u64, u64),
        unit: &'static str,
        context: &str,
    ) -> Option<u64> {
        let DeValue::Integer(integer) = value.get_ref() else {
            self.wrong_type(value, field, "an integer", context);
            return None;
        };
        // Parsed as i128 so that any TOML integer (i64) and its negation fit;
        // a value that does not is reported as written.
        let parsed = i128::from_str_radix(integer.as_str(), integer.radix()).ok();
        match parsed.and_then(|number| u64::try_from(number).ok()).filter(|number| (min..=max).contains(number)) {
            Some(number) => Some(number),
            None => {
                let kind =
                    ErrorKind::OutOfRange { field: field.to_owned(), value: integer.to_string(), unit, min, max };
                self.error(&value.span(), context, kind);
                None
            }
        }
    }

    /// An array of strings; elements of another type are reported and skipped.
    pub(crate) fn as_strings<'v>(
        &mut self,
        value: &'v Value<'_>,
        field: &str,
        context: &str,
    ) -> Option<Vec<(&'v str, Range<usize>)>> {
        let array = self.as_array(value, field, context)?;
        let element_field = format!("each element of {field}");
        Some(
            array
                .iter()
                .filter_map(|element| Some((self.as_str(element, &element_field, context)?, element.span())))
                .collect(),
        )
    }
}

fn type_with_article(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
