//! `wardd`: the Ward host supervisor.
//!
//! It owns the user's compartments: starts one `ward-vmm` process for each,
//! keeps their state in sled, restarts them by their policy, starts the
//! policy's `autostart` compartments, and answers `ward` on its control
//! socket. SIGTERM or SIGINT stops every compartment and the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;

use ward_host::daemon::paths::{Paths, default_slot_registry, default_socket, default_state_dir};
use ward_host::daemon::server::{self, SocketClaim};
use ward_host::daemon::supervisor::{Config, Supervisor};
use ward_host::policy_source::PolicySource;

/// wardd: the Ward host supervisor.
#[derive(Debug, Parser)]
#[command(name = "wardd", version)]
struct Args {
    /// The control socket (default: /run/ward/wardd.sock as root).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// State directory: store, console logs (default: /var/lib/ward as root).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The policy (file or directory; default as for `ward`).
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,
    /// Cap of one console history file, bytes.
    #[arg(long, default_value_t = ward_vmm_process::console_log::DEFAULT_CAP)]
    log_cap: u64,
    /// Do not jail VMM processes (for debugging only).
    #[arg(long)]
    no_jail: bool,
    /// Seconds an IPC call the policy says to `ask` about waits for
    /// `ward allow` or `ward deny` before it is denied.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    ask_timeout: u64,
    /// A host service compartments may call (`to = "host"` in the policy):
    /// its name and the UNIX socket it listens on. Repeatable.
    #[arg(long = "host-service", value_name = "NAME=SOCKET", value_parser = parse_host_service)]
    host_services: Vec<(String, PathBuf)>,
}

/// `NAME=SOCKET`: a service name (docs/POLICY.md) and an absolute path.
fn parse_host_service(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=SOCKET"))?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if !valid {
        return Err(format!("{name:?} is not a service name (a-z, 0-9, '.', '_', '-')"));
    }
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(format!("{}: the socket path must be absolute", path.display()));
    }
    Ok((name.to_owned(), path))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("WARD_LOG", "info"))
        .format(|buf, record| writeln!(buf, "wardd: {}: {}", record.level().as_str().to_lowercase(), record.args()))
        .init();
    let args = Args::parse();
    ward_sandbox::process::raise_open_file_limit();
    let paths = Paths {
        state_dir: args.state_dir.unwrap_or_else(default_state_dir),
        socket: args.socket.unwrap_or_else(default_socket),
    };
    let sibling = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
            .unwrap_or_else(|| PathBuf::from(name))
    };
    let vmm_binary = sibling("ward-vmm");
    let ipc_binary = sibling("ward-ipc");
    // Found now, not at the first start: a wardd without its helpers
    // would accept every compartment and start none.
    for helper in [&vmm_binary, &ipc_binary] {
        if !is_executable(helper) {
            eprintln!(
                "wardd: error: {} is missing or not executable: wardd runs it for every compartment \
                 (build it with `cargo build --workspace`, next to wardd)",
                helper.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = paths.create() {
        eprintln!("wardd: error: {e}");
        return ExitCode::FAILURE;
    }
    let config = Config {
        paths: paths.clone(),
        policy: PolicySource::resolve(args.policy.as_deref()),
        vmm_binary,
        log_cap: args.log_cap,
        jail: !args.no_jail,
        ipc_binary,
        ask_timeout: Duration::from_secs(args.ask_timeout),
        host_services: args.host_services.into_iter().collect(),
        slot_registry: default_slot_registry(),
    };
    // First the claim (is another wardd serving this socket?), then the
    // store (is another wardd using this state?), then the socket, which
    // goes with the claim on every way out.
    let mut claim = match SocketClaim::take(&paths.socket) {
        Ok(claim) => claim,
        Err(e) => {
            eprintln!("wardd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sup = match Supervisor::open(config) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("wardd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match claim.bind() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wardd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("wardd: error: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    match sup.autostart() {
        Ok(started) if !started.is_empty() => log::info!("autostarted {}", started.join(", ")),
        Ok(_) => {}
        Err(e) => log::warn!("autostart: {e}"),
    }
    log::info!("serving {}", paths.socket.display());
    let supervisor = {
        let (sup, stop) = (Arc::clone(&sup), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sup.supervise();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    server::serve(&listener, &sup, &stop);
    log::info!("stopping every compartment");
    let _ = supervisor.join();
    sup.stop_all(Duration::from_secs(5));
    sup.stop_ipc();
    drop(claim); // removes the socket
    ExitCode::SUCCESS
}

/// A regular file someone may execute.
fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
