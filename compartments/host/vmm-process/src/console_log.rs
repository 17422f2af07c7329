//! A compartment's console history on disk, with a size cap.
//!
//! The VMM appends console output to `<name>.log`; when that would pass the
//! cap its content moves to `<name>.log.1` (replacing the older one) and it
//! starts again empty, so the history on disk never exceeds twice the cap
//! and always holds the most recent output. `ward logs` reads both in order.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::console_lines::{Stamper, last_byte, newline_after};

/// Default cap of one log file, in bytes.
pub const DEFAULT_CAP: u64 = 1 << 20;

/// The older half of a log.
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Appends to a log, rotating at the cap.
///
/// Both files are opened up front and rotation works on the open files
/// only (copy the current one over the older one, then empty the current
/// one): a jailed VMM keeps the descriptors but cannot open or rename
/// paths any more.
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    current: File,
    previous: File,
    written: u64,
    cap: u64,
}

impl CappedLog {
    /// Opens `path` (and its rotated twin) for appending, `cap` bytes per file.
    pub fn open(path: &Path, cap: u64) -> io::Result<Self> {
        let current = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let previous = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(rotated(path))?;
        let written = current.metadata()?.len();
        Ok(Self { path: path.to_owned(), current, previous, written, cap: cap.max(1) })
    }

    /// The file being appended to.
    pub fn current(&self) -> &File {
        &self.current
    }

    /// The descriptors a jail must keep open for this log.
    pub fn fds(&self) -> [std::os::fd::RawFd; 2] {
        use std::os::fd::AsRawFd;
        [self.current.as_raw_fd(), self.previous.as_raw_fd()]
    }

    fn rotate(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.previous.set_len(0)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        loop {
            let n = self.current.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            self.previous.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        // The current file is opened for appending: after this, writes
        // start again at its beginning.
        self.current.set_len(0)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.cap {
            self.rotate()?;
        }
        // A single write larger than the cap keeps only its tail.
        let cap = usize::try_from(self.cap).unwrap_or(usize::MAX);
        let keep = if buf.len() > cap { &buf[buf.len() - cap..] } else { buf };
        self.current.write_all(keep)?;
        self.written += keep.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.flush()
    }
}

/// A console sink that hands output to a writer thread, which appends it
/// to a [`CappedLog`]. The VMM's vCPU and device threads run under seccomp
/// filters that allow `write` but not opening or renaming files, which
/// rotation needs; they only pass bytes over a channel.
#[derive(Debug)]
pub struct LogSender(std::sync::mpsc::Sender<Vec<u8>>);

impl Write for LogSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf.to_vec()).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "console log writer ended"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the writer thread of `log`; returns the sink and the thread, which
/// ends (having written everything) once every sink is dropped.
///
/// Each line is stamped with the time it started ([`crate::console_lines`]).
pub fn spawn_writer(mut log: CappedLog) -> io::Result<(LogSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut stamper = Stamper::new();
    log.write_all(newline_after(last_byte(log.current())?))?;
    let thread = std::thread::Builder::new().name("console-log".into()).spawn(move || {
        ward_vmm::signals::leave_stop_signals_to_main();
        for chunk in rx {
            let stamped = stamper.stamp(&chunk, std::time::SystemTime::now());
            if let Err(e) = log.write_all(&stamped).and_then(|()| log.flush()) {
                log::warn!("console history {}: {e}", log.path.display());
            }
        }
    })?;
    Ok((LogSender(tx), thread))
}

/// The whole history: the rotated file, then the current one.
pub fn read_history(path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for p in [rotated(path), path.to_owned()] {
        match File::open(&p) {
            Ok(mut f) => {
                f.read_to_end(&mut out)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Bytes of the current file from `offset` (all of it if the file is now
/// shorter: it was rotated); returns them and the new offset.
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = if offset > len { 0 } else { offset };
    f.seek(SeekFrom::Start(start))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    let next = start + out.len() as u64;
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-log-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("c.log")
    }

    #[test]
    fn history_is_capped_and_keeps_the_latest_output() {
        let p = path("cap");
        let mut log = CappedLog::open(&p, 100).unwrap();
        for i in 0..50 {
            writeln!(log, "line {i:03}").unwrap();
        }
        let history = String::from_utf8(read_history(&p).unwrap()).unwrap();
        assert!(history.len() <= 200, "{} bytes kept", history.len());
        assert!(history.ends_with("line 049\n"), "{history}");
        assert!(!history.contains("line 000"));
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
    }

    #[test]
    fn the_writer_thread_writes_everything_before_it_ends() {
        let p = path("thread");
        let (mut sink, thread) = spawn_writer(CappedLog::open(&p, 1 << 20).unwrap()).unwrap();
        for i in 0..100 {
            writeln!(sink, "line {i}").unwrap();
        }
        drop(sink);
        thread.join().unwrap();
        assert!(String::from_utf8(read_history(&p).unwrap()).unwrap().ends_with("line 99\n"));
    }

    #[test]
    fn reading_on_follows_growth_and_restarts_after_rotation() {
        let p = path("follow");
        let mut log = CappedLog::open(&p, 64).unwrap();
        log.write_all(b"hello\n").unwrap();
        let (text, next) = read_from(&p, 0).unwrap();
        assert_eq!((text.as_slice(), next), (&b"hello\n"[..], 6));
        log.write_all(&[b'x'; 60]).unwrap(); // rotates: the new file is shorter than 6 + 60
        let (text, _) = read_from(&p, 70).unwrap();
        assert_eq!(text.len(), 60);
    }
}
