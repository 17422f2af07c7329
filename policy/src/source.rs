//! Policy files as the caller hands them in, and the order they are read in.
//!
//! The library does no I/O: the caller reads a directory and passes
//! `(path, text)` pairs. [`order_files`] puts a directory listing into the
//! documented order (by file name, so `00-base.toml` comes before
//! `50-work.toml`); the files are then read in that order: compartments are
//! merged (a name defined twice is an error) and rules concatenated.

use std::path::Path;
use std::sync::Arc;

use crate::error::Location;

/// Keeps the policy files of a directory listing and sorts them.
///
/// A policy file is one whose name ends in `.toml` and does not start with
/// `.` (editors' swap and backup files are skipped). Files are sorted by
/// file name, byte by byte, then by full path to break ties, so the order
/// does not depend on how the caller listed the directory.
///
/// ```
/// let listing = vec![("policy/50-work.toml", "..."), ("policy/README", "..."), ("policy/00-base.toml", "...")];
/// let ordered = ward_policy::order_files(listing);
/// let paths: Vec<_> = ordered.iter().map(|(path, _)| *path).collect();
/// assert_eq!(paths, ["policy/00-base.toml", "policy/50-work.toml"]);
/// ```
pub fn order_files<P: AsRef<Path>, T>(listing: Vec<(P, T)>) -> Vec<(P, T)> {
    let mut files: Vec<(P, T)> = listing.into_iter().filter(|(path, _)| is_policy_file(path.as_ref())).collect();
    files.sort_by(|(a, _), (b, _)| {
        let (a, b) = (a.as_ref(), b.as_ref());
        a.file_name().cmp(&b.file_name()).then_with(|| a.cmp(b))
    });
    files
}

fn is_policy_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else { return false };
    !name.starts_with('.') && name.ends_with(".toml")
}

/// One file's text with a table of line starts, to turn byte offsets from
/// the TOML parser into lines and columns.
#[derive(Debug)]
pub(crate) struct SourceFile<'a> {
    pub(crate) path: Arc<str>,
    pub(crate) text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceFile<'a> {
    pub(crate) fn new(path: &Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1))
            .collect();
        Self { path: Arc::from(path.display().to_string()), text, line_starts }
    }

    /// The location of byte `offset` (clamped to the text).
    pub(crate) fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line_index = self.line_starts.partition_point(|start| *start <= offset).saturating_sub(1);
        let line_start = self.line_starts.get(line_index).copied().unwrap_or(0);
        // The parser's offsets are at character boundaries, but a clamp or a
        // bad offset must not panic: count characters of the valid prefix.
        let column = self.text.get(line_start..offset).map_or(offset - line_start, |prefix| prefix.chars().count());
        Location { file: Arc::clone(&self.path), line: to_u32(line_index + 1), column: to_u32(column + 1) }
    }
}

fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_files_sorts_by_file_name_and_skips_other_files() {
        let listing = vec![
            ("b/10-x.toml", 1),
            ("a/50-work.toml", 2),
            ("z/00-base.toml", 3),
            ("z/.00-swap.toml", 4),
            ("z/notes.txt", 5),
            ("a/10-x.toml", 6),
        ];
        let ordered: Vec<_> = order_files(listing).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ordered, [3, 6, 1, 2]);
    }

    #[test]
    fn location_counts_lines_and_characters_from_one() {
        let file = SourceFile::new(Path::new("p.toml"), "ab\ncé d\n");
        assert_eq!(file.location(0).to_string(), "p.toml:1:1");
        assert_eq!(file.location(3).to_string(), "p.toml:2:1");
        // 'é' is two bytes but one column.
        assert_eq!(file.location(6).to_string(), "p.toml:2:3");
        assert_eq!(file.location(999).to_string(), "p.toml:3:1");
    }
}
