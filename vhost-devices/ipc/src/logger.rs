//! Log lines go to standard error, prefixed `ward-ipc:`.

use std::io::Write as _;

/// The logger: one line per record on standard error.
#[derive(Debug)]
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            };
            let _ = writeln!(std::io::stderr().lock(), "ward-ipc: {level}{}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Sends the `log` records of this process to standard error, prefixed
/// `ward-ipc:` (information and above). Does nothing if a logger is
/// already set.
pub fn init_logging() {
    if log::set_logger(&LOGGER).is_ok() {
        // `WARD_LOG=trace` shows every packet a guest sends.
        let level = match std::env::var("WARD_LOG").as_deref() {
            Ok("trace") => log::LevelFilter::Trace,
            Ok("debug") => log::LevelFilter::Debug,
            _ => log::LevelFilter::Info,
        };
        log::set_max_level(level);
    }
}
