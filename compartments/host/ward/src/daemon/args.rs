//! `wardd`'s command line. It lives in the library so that `ward man`
//! can write wardd's manual page too.

use std::path::PathBuf;

use clap::Parser;

/// wardd: the Ward host supervisor.
#[derive(Debug, Parser)]
#[command(name = "wardd", version)]
pub struct Args {
    /// The control socket (default: /run/ward/wardd.sock as root).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State directory: store, console logs (default: /var/lib/ward as root).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The policy (file or directory; default as for `ward`).
    #[arg(long, value_name = "PATH")]
    pub policy: Option<PathBuf>,
    /// Cap of one console history file, bytes.
    #[arg(long, default_value_t = ward_vmm_process::console_log::DEFAULT_CAP)]
    pub log_cap: u64,
    /// Do not jail VMM processes (for debugging only).
    #[arg(long)]
    pub no_jail: bool,
    /// Seconds an IPC call the policy says to `ask` about waits for
    /// `ward allow` or `ward deny` before it is denied.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub ask_timeout: u64,
    /// A host service compartments may call (`to = "host"` in the policy):
    /// its name and the UNIX socket it listens on. Repeatable.
    #[arg(long = "host-service", value_name = "NAME=SOCKET", value_parser = parse_host_service)]
    pub host_services: Vec<(String, PathBuf)>,
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
