//! The kernel command line: space-separated `key` and `key=value` words,
//! then optionally a standalone `--` word after which everything is the
//! boot programs' argument bytes (as Linux passes init its arguments); the
//! kernel reads no flags there.

/// A view of the command line the VMM passed.
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a> {
    raw: &'a [u8],
}

impl<'a> Cmdline<'a> {
    /// Wraps the raw bytes.
    pub const fn new(raw: &'a [u8]) -> Self {
        Self { raw }
    }

    /// The raw bytes.
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The kernel's words, in order (those before a `--` word).
    pub fn words(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.split().0.split(|&b| is_space(b)).filter(|w| !w.is_empty())
    }

    /// The boot programs' argument bytes: everything after the first
    /// standalone `--` word, without the blanks around it (empty if none).
    pub fn program_args(&self) -> &'a [u8] {
        self.split().1
    }

    /// The kernel's part and the programs' part.
    fn split(&self) -> (&'a [u8], &'a [u8]) {
        let raw = self.raw;
        let mut i = 0;
        while i + 1 < raw.len() {
            let standalone = raw[i] == b'-'
                && raw[i + 1] == b'-'
                && (i == 0 || is_space(raw[i - 1]))
                && raw.get(i + 2).is_none_or(|&b| is_space(b));
            if standalone {
                return (&raw[..i], trim(&raw[i + 2..]));
            }
            i += 1;
        }
        (raw, &[])
    }

    /// Whether `key` is given, alone or as `key=...`.
    pub fn has_flag(&self, key: &str) -> bool {
        self.words().any(|w| split_word(w).0 == key.as_bytes())
    }

    /// The value of the last `key=value` word for `key`.
    pub fn value(&self, key: &str) -> Option<&'a [u8]> {
        self.words()
            .filter_map(|w| match split_word(w) {
                (k, Some(v)) if k == key.as_bytes() => Some(v),
                _ => None,
            })
            .last()
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && is_space(*first)
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && is_space(*last)
    {
        bytes = rest;
    }
    bytes
}

fn split_word(word: &[u8]) -> (&[u8], Option<&[u8]>) {
    match word.iter().position(|&b| b == b'=') {
        Some(i) => (&word[..i], Some(&word[i + 1..])),
        None => (word, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_alone_or_with_value_is_found() {
        let c = Cmdline::new(b"quiet ward.panic log=debug");
        assert!(c.has_flag("ward.panic"));
        assert!(c.has_flag("log"));
        assert!(!c.has_flag("ward"));
    }

    #[test]
    fn last_value_wins() {
        let c = Cmdline::new(b"a=1  a=2\ta");
        assert_eq!(c.value("a"), Some(&b"2"[..]));
        assert_eq!(c.value("b"), None);
    }

    #[test]
    fn words_after_a_standalone_double_dash_are_the_programs() {
        let c = Cmdline::new(b"ward.stats --x a=1 --  call vault echo 10,ward.panic a=2 -- more  ");
        assert!(c.has_flag("ward.stats"));
        assert!(c.has_flag("--x"), "only a standalone -- ends the kernel's words");
        assert!(!c.has_flag("ward.panic"), "the programs' words are not the kernel's flags");
        assert_eq!(c.value("a"), Some(&b"1"[..]));
        assert_eq!(c.program_args(), b"call vault echo 10,ward.panic a=2 -- more");
        assert_eq!(Cmdline::new(b"--").program_args(), b"");
        assert_eq!(Cmdline::new(b"--").words().count(), 0);
        assert_eq!(Cmdline::new(b"a -- ").program_args(), b"");
        assert_eq!(Cmdline::new(b"a b--c").program_args(), b"");
        assert_eq!(Cmdline::new(b"a\t--\tx").program_args(), b"x");
    }

    #[test]
    fn empty_line_has_no_words() {
        assert_eq!(Cmdline::new(b"   ").words().count(), 0);
    }
}
