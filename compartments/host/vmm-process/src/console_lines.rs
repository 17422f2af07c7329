//! The line format of a console history, and reading it back.
//!
//! Every line on disk begins with the UTC time it was started, to the
//! millisecond, and one byte saying whose it is:
//!
//! ```text
//! 2026-12-04T21:07:15.123Z Ward kernel 0.1.0          the guest's output
//! 2026-12-04T21:07:18.940Z=ward: mail started         Ward's marker
//! ```
//!
//! The VMM's writer stamps every line the guest starts, so a guest cannot
//! write a marker, nor a time of its own choosing. `ward logs` shows the
//! lines without their stamps (or with them, `--timestamps`), keeps those
//! since a time (`--since`), and shows markers as `-- ward: ... --`.
//! Lines written before stamps existed have none; they are shown as they
//! are, and `--since` leaves them out.

use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::console_log::CappedLog;

/// `2026-12-04T21:07:15.123Z`.
pub const STAMP_LEN: usize = 24;
/// The stamp, then whose line it is.
const HEADER_LEN: usize = STAMP_LEN + 1;
const GUEST: u8 = b' ';
const WARD: u8 = b'=';
const STAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// The stamp of `at`.
pub fn stamp(at: SystemTime) -> [u8; STAMP_LEN] {
    let text = DateTime::<Utc>::from(at).format(STAMP_FORMAT).to_string();
    let mut out = [b'0'; STAMP_LEN];
    // Years past 9999 do not fit: such a clock gets a stamp of zeros,
    // which reads back as no time at all.
    if text.len() == STAMP_LEN {
        out.copy_from_slice(text.as_bytes());
    }
    out
}

/// Stamps the guest's output as the writer thread receives it.
#[derive(Debug)]
pub struct Stamper {
    at_line_start: bool,
}

impl Stamper {
    /// A stamper at the start of a line.
    pub fn new() -> Self {
        Self { at_line_start: true }
    }

    /// `chunk` with a header before each line it starts, at `now`.
    pub fn stamp(&mut self, chunk: &[u8], now: SystemTime) -> Vec<u8> {
        // Formatted once a chunk, and only if a line starts in it.
        let mut header: Option<[u8; HEADER_LEN]> = None;
        let mut out = Vec::with_capacity(chunk.len() + HEADER_LEN);
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            if self.at_line_start {
                out.extend_from_slice(header.get_or_insert_with(|| {
                    let mut h = [GUEST; HEADER_LEN];
                    h[..STAMP_LEN].copy_from_slice(&stamp(now));
                    h
                }));
            }
            out.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        out
    }
}

impl Default for Stamper {
    fn default() -> Self {
        Self::new()
    }
}

/// What to write before new lines in a file whose last byte is `last`
/// (`None`: empty): a newline if it ends in the middle of a line.
pub fn newline_after(last: Option<u8>) -> &'static [u8] {
    if last.is_none_or(|b| b == b'\n') { b"" } else { b"\n" }
}

/// Appends Ward's marker `text` (one line: control characters become
/// spaces) to the console history at `path`, after a newline if the file
/// ends mid-line, rotating it at `cap` as the VMM does.
pub fn append_marker(path: &Path, cap: u64, text: &str, now: SystemTime) -> io::Result<()> {
    let mut log = CappedLog::open(path, cap)?;
    let mut line = Vec::with_capacity(HEADER_LEN + text.len() + 2);
    line.extend_from_slice(newline_after(last_byte(log.current())?));
    line.extend_from_slice(&stamp(now));
    line.push(WARD);
    line.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().bytes());
    line.push(b'\n');
    log.write_all(&line)
}

/// The last byte of `file`, if it has one.
pub fn last_byte(file: &std::fs::File) -> io::Result<Option<u8>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(Some(last[0]))
}

/// A line's header: when, and whether it is Ward's marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    at_ms: u64,
    marker: bool,
}

/// The header at the start of `line`, if it has one.
fn header(line: &[u8]) -> Option<Header> {
    let marker = match *line.get(STAMP_LEN)? {
        GUEST => false,
        WARD => true,
        _ => return None,
    };
    let text = std::str::from_utf8(&line[..STAMP_LEN]).ok()?;
    let at = NaiveDateTime::parse_from_str(text, STAMP_FORMAT).ok()?.and_utc();
    Some(Header { at_ms: u64::try_from(at.timestamp_millis()).ok()?, marker })
}

/// Milliseconds since the Unix epoch of `at`.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How `ward logs` shows a history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Only lines started at or after this Unix time (ms).
    pub since_ms: Option<u64>,
    /// Each line with its stamp.
    pub timestamps: bool,
    /// The console only: no markers (`ward run` prints what the guest
    /// prints).
    pub console_only: bool,
}

/// Turns stored lines into what `ward logs` prints, chunk by chunk as they
/// are read (a chunk may end anywhere, even inside a header).
#[derive(Debug)]
pub struct Reader {
    view: View,
    at_line_start: bool,
    /// Whether the line being read is shown.
    showing: bool,
    /// The start of a line too short yet to hold its header.
    carry: Vec<u8>,
}

impl Reader {
    /// A reader that starts at the beginning of a line.
    pub fn new(view: View) -> Self {
        Self { view, at_line_start: true, showing: true, carry: Vec::new() }
    }

    /// What `chunk` shows.
    pub fn read(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(data.len());
        let mut rest = &data[..];
        while !rest.is_empty() {
            if self.at_line_start {
                if rest.len() < HEADER_LEN && !rest.contains(&b'\n') {
                    self.carry = rest.to_vec();
                    break;
                }
                rest = self.begin_line(rest, &mut out);
            }
            let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
            if self.showing {
                out.extend_from_slice(&rest[..end]);
            }
            self.at_line_start = rest[..end].ends_with(b"\n");
            rest = &rest[end..];
        }
        out
    }

    /// What is left at the end of the history (a line cut short).
    pub fn finish(&mut self) -> Vec<u8> {
        let carry = std::mem::take(&mut self.carry);
        if self.view.since_ms.is_some() { Vec::new() } else { carry }
    }

    /// Reads a line's header (if any) from `line`, decides whether the
    /// line is shown, writes what comes before its text; returns the rest.
    fn begin_line<'a>(&mut self, line: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        let found = header(line);
        self.showing = match (found, self.view.since_ms) {
            (Some(h), _) if h.marker && self.view.console_only => false,
            (Some(h), Some(since)) => h.at_ms >= since,
            (None, Some(_)) => false,
            (_, None) => true,
        };
        let Some(h) = found else { return line };
        if self.showing {
            if self.view.timestamps {
                out.extend_from_slice(&line[..STAMP_LEN]);
                out.push(b' ');
            }
            if h.marker {
                out.extend_from_slice(b"-- ");
                let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
                out.extend_from_slice(&line[HEADER_LEN..end]);
                out.extend_from_slice(b" --");
                return &line[end..];
            }
        }
        &line[HEADER_LEN..]
    }
}

/// Where the last `lines` lines of `history` begin (a last line without
/// its newline counts).
pub fn tail_start(history: &[u8], lines: u64) -> usize {
    if lines == 0 {
        return history.len();
    }
    let body = history.strip_suffix(b"\n").unwrap_or(history);
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn show(stored: &[u8], view: View) -> String {
        let mut r = Reader::new(view);
        let mut out = r.read(stored);
        out.extend(r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_line_the_guest_starts_is_stamped_once() {
        let mut s = Stamper::new();
        let mut stored = s.stamp(b"hel", at(1_000));
        stored.extend(s.stamp(b"lo\nwor", at(2_000)));
        stored.extend(s.stamp(b"ld\n\n", at(3_000)));
        let text = String::from_utf8(stored.clone()).unwrap();
        assert_eq!(text, "1970-01-01T00:00:01.000Z hello\n1970-01-01T00:00:02.000Z world\n1970-01-01T00:00:03.000Z \n");
        assert_eq!(show(&stored, View::default()), "hello\nworld\n\n");
    }

    #[test]
    fn a_guest_cannot_forge_a_marker_or_a_time() {
        let mut s = Stamper::new();
        let stored = s.stamp(b"1999-01-01T00:00:00.000Z=ward: fake\n", at(5_000));
        let shown = show(&stored, View { timestamps: true, ..View::default() });
        assert_eq!(shown, "1970-01-01T00:00:05.000Z 1999-01-01T00:00:00.000Z=ward: fake\n");
        assert_eq!(show(&stored, View { console_only: true, ..View::default() }).lines().count(), 1);
    }

    #[test]
    fn since_keeps_later_lines_and_markers_are_framed() {
        let mut s = Stamper::new();
        let mut stored = s.stamp(b"old\n", at(1_000));
        stored.extend(b"1970-01-01T00:00:02.000Z=ward: c started\n");
        stored.extend(s.stamp(b"new\n", at(3_000)));
        assert_eq!(show(&stored, View::default()), "old\n-- ward: c started --\nnew\n");
        assert_eq!(show(&stored, View { since_ms: Some(2_000), ..View::default() }), "-- ward: c started --\nnew\n");
        assert_eq!(show(&stored, View { console_only: true, ..View::default() }), "old\nnew\n");
    }

    #[test]
    fn a_header_split_across_reads_is_still_read() {
        let mut s = Stamper::new();
        let stored = s.stamp(b"one\ntwo\n", at(7_000));
        let mut r = Reader::new(View::default());
        let mut out = Vec::new();
        for piece in stored.chunks(3) {
            out.extend(r.read(piece));
        }
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn unstamped_history_is_shown_as_it_is() {
        assert_eq!(show(b"from before stamps\nx", View::default()), "from before stamps\nx");
        assert_eq!(show(b"from before stamps\n", View { since_ms: Some(0), ..View::default() }), "");
    }

    #[test]
    fn markers_start_on_a_line_of_their_own() {
        let dir = std::env::temp_dir().join(format!("ward-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        std::fs::write(&path, "1970-01-01T00:00:01.000Z prompt> ").unwrap();
        append_marker(&path, 1 << 20, "ward: c ended:\nkilled", at(9_000)).unwrap();
        let stored = std::fs::read(&path).unwrap();
        assert_eq!(show(&stored, View::default()), "prompt> \n-- ward: c ended: killed --\n");
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(last_byte(&file).unwrap(), Some(b'\n'));
        assert_eq!(newline_after(Some(b'x')), b"\n");
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        let h = b"a\nb\nc\n";
        assert_eq!(&h[tail_start(h, 2)..], b"b\nc\n");
        assert_eq!(&h[tail_start(h, 9)..], h);
        assert_eq!(&h[tail_start(h, 0)..], b"");
        assert_eq!(&b"a\nb"[tail_start(b"a\nb", 1)..], b"b");
    }
}
