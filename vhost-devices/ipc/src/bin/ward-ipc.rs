//! `ward-ipc`: the inter-compartment IPC router, as `wardd` starts it
//! (docs/IPC.md, "The router process").
//!
//! `ward-ipc [--control-fd N] (--uid UID | --no-jail)` serves the control
//! socket inherited as descriptor `N` (3 by default) until it closes.
//! Unless `--no-jail` is given it first jails itself as a VMM does (its own
//! PID namespace, an empty root, the unprivileged uid and gid `UID`: its
//! own, the first of its daemon's slot (`daemon::slot`), `no_new_privs`,
//! limits, every other descriptor closed); its threads then add their
//! seccomp filters. Log lines go to standard error, prefixed `ward-ipc:`.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use ward_sandbox::jail::{self, JailSpec, PidNamespace};

/// Descriptors the router may hold: a dozen per compartment (vhost-user
/// connection, kicks, calls, memory, eventfds) for hundreds of them.
const OPEN_FILES: u64 = 16_384;

fn main() -> ExitCode {
    ward_ipc::init_logging();
    let mut control_fd: RawFd = 3;
    let mut jailed = true;
    let mut uid = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-jail" => jailed = false,
            "--uid" => match args.next().map(|value| value.parse::<u32>()) {
                Some(Ok(value @ 1..)) => uid = Some(value),
                _ => return usage(),
            },
            "--control-fd" => match args.next().map(|value| value.parse::<RawFd>()) {
                Some(Ok(fd @ 3..)) => control_fd = fd,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; we check the result.
    if unsafe { libc::fcntl(control_fd, libc::F_GETFD) } < 0 {
        eprintln!("ward-ipc: descriptor {control_fd} is not open (the control socket)");
        return ExitCode::FAILURE;
    }
    if jailed {
        let Some(uid) = uid else { return usage() };
        match jail::enter_pid_namespace() {
            Ok(PidNamespace::Parent { child }) => jail::wait_and_exit(child),
            Ok(PidNamespace::Child) => {}
            Err(e) => eprintln!("ward-ipc: no PID namespace: {e}"),
        }
        let mut spec = JailSpec::new("ward-ipc", 0, vec![control_fd]);
        // An identity of its own: no compartment's VMM, and nothing else
        // on the host, runs as it.
        (spec.uid, spec.gid) = (uid, uid);
        // It maps the memory of every compartment it serves.
        spec.limits.address_space = u64::MAX;
        spec.limits.open_files = spec.limits.open_files.max(OPEN_FILES);
        match jail::enter(&spec) {
            Ok(report) if report.is_complete() => {}
            Ok(report) => eprintln!("ward-ipc: jailed, except: {}", report.missing_summary()),
            Err(e) => {
                eprintln!("ward-ipc: cannot enter the jail: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // SAFETY: the descriptor is open (checked above) and nothing else in
    // this process owns it.
    let control = unsafe { OwnedFd::from_raw_fd(control_fd) };
    match ward_ipc::serve(control) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-ipc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("ward-ipc: usage: ward-ipc [--control-fd N] (--uid UID | --no-jail) (it is started by wardd)");
    ExitCode::from(2)
}
