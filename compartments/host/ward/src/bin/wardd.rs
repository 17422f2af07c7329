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

use ward_host::daemon::args::Args;
use ward_host::daemon::paths::{Paths, default_slot_registry, default_socket, default_state_dir};
use ward_host::daemon::server::{self, SocketClaim};
use ward_host::daemon::supervisor::{Config, Supervisor};
use ward_host::policy_source::PolicySource;

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
