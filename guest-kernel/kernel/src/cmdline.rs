//! The kernel command line: space-separated `key` and `key=value` words.

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

    /// The words, in order.
    pub fn words(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty())
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
    fn empty_line_has_no_words() {
        assert_eq!(Cmdline::new(b"   ").words().count(), 0);
    }
}
