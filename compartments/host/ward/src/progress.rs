//! Progress of long work, for a person at a terminal: one line on standard
//! error, redrawn in place (`ward: starting 12/50 mail`) and cleared when
//! the work is done. When standard error is not a terminal (piped, a log
//! file, a script) nothing is written: the results alone go out.

use std::io::{IsTerminal, Write};

/// One piece of long work, counted in steps.
#[derive(Debug)]
pub struct Progress {
    what: String,
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    /// Work of `total` steps, described as `what` (`starting`, `boot`);
    /// shown only on a terminal, and only when there is more than one step.
    pub fn new(what: &str, total: usize) -> Self {
        let shown = total > 1 && std::io::stderr().is_terminal();
        let progress = Self { what: what.to_owned(), total, done: 0, shown };
        progress.draw("");
        progress
    }

    /// One more step done; `detail` names it.
    pub fn step(&mut self, detail: &str) {
        self.done = (self.done + 1).min(self.total);
        self.draw(detail);
    }

    /// Takes the line away, so a message can be printed in its place (the
    /// next step draws it again).
    pub fn clear(&self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }

    fn draw(&self, detail: &str) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[Kward: {} {}/{} {detail}", self.what, self.done, self.total);
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    /// The line goes, so what is printed next starts clean.
    fn drop(&mut self) {
        self.clear();
    }
}
