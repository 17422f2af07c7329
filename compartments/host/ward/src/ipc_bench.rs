//! `ward bench ipc`: IPC between two compartments next to the same
//! exchange between two host processes over a UNIX socket, in one run.
//!
//! It starts a `wardd` of its own (temporary state, a policy of two
//! `ipc-peer` compartments that may call each other's `echo` and `sink`),
//! has one compartment measure 64-byte request/response round trips and a
//! bulk transfer to the other, then does the same with a child process
//! (`ward bench unix-peer`) over a socket pair, and prints both and their
//! ratios.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::BenchIpcArgs;
use crate::manage::ManageError;

const POLICY: &str = r#"
[compartment.bench-a]
role = "app"
image = "ipc-peer"
memory = 64
offers = ["echo", "sink"]
devices = { vsock = true }

[compartment.bench-b]
role = "app"
image = "ipc-peer"
memory = 64
offers = ["echo", "sink"]
devices = { vsock = true }

[[rule]]
service = "*"
from = "@role:app"
to = "@role:app"
action = "allow"
"#;

/// Size of one request and of its response.
const MESSAGE: usize = 64;

/// What one side measured.
#[derive(Debug, Default)]
struct Figures {
    median_us: f64,
    mean_us: f64,
    mib_per_s: f64,
}

/// A wardd of the bench's own.
struct Daemon {
    dir: PathBuf,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: wardd stops its compartments before it ends.
        if let Ok(pidfd) = ward_sandbox::pidfd::Pidfd::open(self.child.id()) {
            let _ = pidfd.signal(libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn ward(socket: &Path, args: &[&str]) -> Result<String, ManageError> {
    let out = Command::new(sibling("ward"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .map_err(|e| ManageError::Refused(format!("cannot run ward: {e}")))?;
    if !out.status.success() {
        return Err(ManageError::Refused(format!("ward {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ward bench ipc`.
pub fn ipc(args: &BenchIpcArgs) -> Result<String, ManageError> {
    let guest = guest_figures(args)?;
    let host = host_figures(args)?;
    let ratio = |g: f64, h: f64| if h > 0.0 { g / h } else { 0.0 };
    Ok(format!(
        "IPC, {rounds} round trips of {MESSAGE} bytes and {mib} MiB one way\n\
         {:<36} {:>12} {:>12} {:>12}\n\
         {:<36} {:>12.1} {:>12.1} {:>12.1}\n\
         {:<36} {:>12.1} {:>12.1} {:>12.1}\n\
         {:<36} {:>12.1} {:>12.1} {:>12.4}\n",
        "",
        "median µs",
        "mean µs",
        "MiB/s",
        "two compartments (vsock, ward-ipc)",
        guest.median_us,
        guest.mean_us,
        guest.mib_per_s,
        "two host processes (UNIX socket)",
        host.median_us,
        host.mean_us,
        host.mib_per_s,
        "ratio compartments / host",
        ratio(guest.median_us, host.median_us),
        ratio(guest.mean_us, host.mean_us),
        ratio(guest.mib_per_s, host.mib_per_s),
        rounds = args.rounds,
        mib = args.bytes >> 20,
    ))
}

fn guest_figures(args: &BenchIpcArgs) -> Result<Figures, ManageError> {
    let dir = std::env::temp_dir().join(format!("ward-bench-ipc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let io = |e: std::io::Error| ManageError::Refused(format!("bench directory {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(dir.join("policy.toml"), POLICY).map_err(io)?;
    let socket = dir.join("wardd.sock");
    let child = Command::new(sibling("wardd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ManageError::Refused(format!("cannot start wardd: {e}")))?;
    let daemon = Daemon { dir, child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ward(&socket, &["ls"]).is_err() {
        if Instant::now() > deadline {
            return Err(ManageError::Refused("the bench's wardd did not answer in 10 s".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ward(&socket, &["create", "bench-b", "--cmdline=-- sleep 1"])?;
    ward(&socket, &["start", "bench-b"])?;
    let steps = format!("--cmdline=-- sleep 500,ping bench-b {},bulk bench-b {}", args.rounds, args.bytes);
    ward(&socket, &["create", "bench-a", &steps])?;
    ward(&socket, &["start", "bench-a"])?;
    let mut figures = Figures::default();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let logs = ward(&socket, &["logs", "bench-a"])?;
        let find = |prefix: &str| logs.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
        if let (Some(ping), Some(bulk)) = (find("ipc: ping"), find("ipc: bulk")) {
            if !bulk.contains(": ok") {
                return Err(ManageError::Refused(format!("the bulk transfer failed: {bulk}")));
            }
            figures.median_us = field(&ping, "median_us=");
            figures.mean_us = field(&ping, "mean_us=");
            figures.mib_per_s = field(&bulk, "mib_per_s=");
            break;
        }
        if let Some(failed) = find("ipc: ping").filter(|l| l.contains("failed")) {
            return Err(ManageError::Refused(failed));
        }
        if Instant::now() > deadline {
            return Err(ManageError::Refused(format!("no figures from the compartments in {} s", args.timeout)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(daemon);
    Ok(figures)
}

/// The number after `key` in `line`.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn host_figures(args: &BenchIpcArgs) -> Result<Figures, ManageError> {
    let io = |e: std::io::Error| ManageError::Refused(format!("host comparison: {e}"));
    let (mut ours, theirs) = UnixStream::pair().map_err(io)?;
    let mut child = Command::new(std::env::current_exe().map_err(io)?)
        .args(["bench", "unix-peer"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .map_err(io)?;
    let result = (|| {
        writeln!(ours, "ping {}", args.rounds)?;
        let (mut request, mut response) = ([7u8; MESSAGE], [0u8; MESSAGE]);
        let mut times = Vec::with_capacity(usize::try_from(args.rounds).unwrap_or(0));
        for i in 0..args.rounds {
            request[0] = (i & 0xff) as u8;
            let start = Instant::now();
            ours.write_all(&request)?;
            ours.read_exact(&mut response)?;
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
        writeln!(ours, "bulk {}", args.bytes)?;
        let chunk = vec![0x5au8; 64 * 1024];
        let start = Instant::now();
        let mut left = args.bytes;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            ours.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        let mut line = String::new();
        BufReader::new(&ours).read_line(&mut line)?;
        let seconds = start.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        Ok::<_, std::io::Error>(Figures {
            median_us: times.get(times.len() / 2).copied().unwrap_or(0.0),
            mean_us: mean,
            mib_per_s: (args.bytes as f64 / f64::from(1 << 20)) / seconds.max(1e-9),
        })
    })();
    drop(ours);
    let _ = child.wait();
    result.map_err(io)
}

/// `ward bench unix-peer`: the host side's peer, on its standard input (a
/// socket): `ping N` echoes N messages, `bulk B` reads B bytes and answers
/// `got B`.
pub fn unix_peer() -> Result<String, ManageError> {
    use std::os::fd::AsFd;
    let io = |e: std::io::Error| ManageError::Refused(format!("unix-peer: {e}"));
    // Our standard input is the socket the bench passed.
    let socket = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().map_err(io)?);
    let mut reader = BufReader::new(socket.try_clone().map_err(io)?);
    let mut writer = socket;
    let mut line = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Ok(String::new());
        }
        let mut words = line.split_whitespace();
        let (command, count) = (words.next(), words.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0));
        match command {
            Some("ping") => {
                for _ in 0..count {
                    reader.read_exact(&mut buf[..MESSAGE]).map_err(io)?;
                    writer.write_all(&buf[..MESSAGE]).map_err(io)?;
                }
            }
            Some("bulk") => {
                let mut left = count;
                while left > 0 {
                    let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    let got = reader.read(&mut buf[..n]).map_err(io)?;
                    if got == 0 {
                        return Err(ManageError::Refused("unix-peer: the bench went away".into()));
                    }
                    left -= got as u64;
                }
                writeln!(writer, "got {count}").map_err(io)?;
            }
            _ => return Err(ManageError::Refused(format!("unix-peer: unknown command {line:?}"))),
        }
    }
}
