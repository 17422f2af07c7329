//! Printing text that came from a file or a command line without letting it
//! drive the terminal.
//!
//! A policy's strings (an `image`, a value an error quotes, a file name)
//! may hold control characters (an escape sequence can recolour or rewrite
//! the terminal) or Unicode bidirectional controls (U+202E turns the rest
//! of a line around, so `"gmi.exe"` can read as `"exe.img"`). Every place
//! `ward-policy` and Ward's commands print such text goes through
//! [`Escaped`] (or [`escape`]), or [`Quoted`] for a quoted string: each
//! such character is written as `\u{XXXX}` instead.
//!
//! ```
//! use ward_policy::display::{Escaped, Quoted, escape};
//!
//! assert_eq!(escape("vault.img"), "vault.img");
//! assert_eq!(escape("a\u{202e}gmi.exe"), "a\\u{202e}gmi.exe");
//! assert_eq!(Escaped("\x1b[31mred").to_string(), "\\u{1b}[31mred");
//! assert_eq!(Quoted("say \"hi\"\n").to_string(), "\"say \\\"hi\\\"\\n\"");
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Whether `c` is escaped when printed: C0 controls (U+0000-U+001F), DEL,
/// C1 controls (U+0080-U+009F), the Unicode bidirectional controls
/// (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the line and
/// paragraph separators U+2028 and U+2029.
pub fn is_escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// `text` with every character [`is_escaped`] says must not be printed
/// raw written as `\u{XXXX}`; borrowed when there is none (the usual case).
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_escaped) { Cow::Owned(Escaped(text).to_string()) } else { Cow::Borrowed(text) }
}

/// Displays a string as [`escape`] does, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(is_escaped) {
            let (clean, tail) = rest.split_at(at);
            f.write_str(clean)?;
            let mut chars = tail.chars();
            if let Some(c) = chars.next() {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// Displays a string in double quotes, as Rust's `{:?}` does for the
/// characters it escapes (`"`, `\`, newline, tab, carriage return) and as
/// [`Escaped`] does for the rest of [`is_escaped`]'s characters, which
/// `{:?}` would print raw (U+202E among them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if is_escaped(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// Displays a character in single quotes, as [`Quoted`] does a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotedChar(pub(crate) char);

impl fmt::Display for QuotedChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            '\'' => f.write_str("'\\''"),
            '"' => f.write_str("'\"'"),
            c => {
                let mut buffer = [0; 4];
                let quoted = Quoted(c.encode_utf8(&mut buffer)).to_string();
                write!(f, "'{}'", quoted.get(1..quoted.len() - 1).unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidirectional_marks_are_escaped() {
        for c in ['\0', '\x07', '\x1b', '\x7f', '\u{80}', '\u{9b}', '\u{061c}', '\u{200e}', '\u{200f}'] {
            assert_eq!(escape(&format!("a{c}b")), format!("a\\u{{{:x}}}b", u32::from(c)));
        }
        for c in ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}') {
            assert!(!escape(&c.to_string()).contains(c), "{:x}", u32::from(c));
        }
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for text in ["vault.img", "é 😀 日本", "a\\b", "\"q\""] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn quoted_escapes_like_debug_and_more() {
        assert_eq!(Quoted("a\"b\\c\n").to_string(), format!("{:?}", "a\"b\\c\n"));
        assert_eq!(Quoted("é").to_string(), "\"é\"");
        assert_eq!(Quoted("x\u{202e}y\u{1}").to_string(), "\"x\\u{202e}y\\u{1}\"");
    }
}
