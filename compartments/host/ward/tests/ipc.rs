//! Inter-compartment IPC with real processes on real KVM (docs/IPC.md):
//! compartments of the `ipc-peer` image under wardd, calling each other
//! through the `ward-ipc` router under a policy, with the user answering
//! `ask`s, the router killed mid-transfer, and a guest flooding it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use ward_host::daemon::slot;

/// Three compartments that offer the same services; rules decide.
const POLICY: &str = r#"
[compartment.alpha]
role = "app"
image = "ipc-peer"
memory = 32
offers = ["echo", "sink", "asked", "secret"]
devices = { vsock = true }

[compartment.beta]
role = "app"
image = "ipc-peer"
memory = 32
offers = ["echo", "sink", "asked", "secret"]
devices = { vsock = true }

[compartment.gamma]
role = "app"
image = "ipc-peer"
memory = 32
offers = ["echo", "sink", "asked", "secret"]
devices = { vsock = true }

[compartment.loner]
role = "app"
image = "ipc-peer"
memory = 32

[host]
offers = ["echo", "clock"]

[[rule]]
service = "echo"
from = "@role:app"
to = "@role:app"
action = "allow"

[[rule]]
service = "*"
from = "alpha"
to = "host"
action = "allow"

[[rule]]
service = "asked"
from = "alpha"
to = "beta"
action = "ask"

[[rule]]
service = "secret"
from = "alpha"
to = "gamma"
action = "deny"
"#;

/// A wardd of its own, in a temporary directory. One at a time: these
/// tests move much data and flood the router, and on a two-core machine
/// each one's time-outs would be at the mercy of the others' load. (Their
/// uids and cgroup names would not collide: each wardd has a slot of its
/// own, `daemon::slot`.)
struct Daemon {
    dir: PathBuf,
    child: Child,
    extra: Vec<String>,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ward")).with_file_name(name)
}

impl Daemon {
    fn start(test: &str, extra: &[&str]) -> Self {
        assert!(Path::new("/dev/kvm").exists(), "/dev/kvm is missing: these tests need it and never skip");
        let one_at_a_time = ONE_DAEMON.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = std::env::temp_dir().join(format!("ward-ipc-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = Self::spawn(&dir, &extra);
        let daemon = Self { dir, child, extra, _one_at_a_time: one_at_a_time };
        wait_until("wardd answers", Duration::from_secs(10), || daemon.ward(&["ls"]).status.success());
        daemon
    }

    fn spawn(dir: &Path, extra: &[String]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("wardd.log")).unwrap();
        Command::new(bin("wardd"))
            .arg("--socket")
            .arg(dir.join("wardd.sock"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--policy")
            .arg(dir.join("policy.toml"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Kills wardd with SIGKILL (its compartments run on) and starts it
    /// again on the same state.
    fn kill_and_restart(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(i32::try_from(self.child.id()).unwrap(), 9) };
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, &self.extra);
        wait_until("wardd answers again", Duration::from_secs(10), || self.ward(&["ls"]).status.success());
    }

    fn ward(&self, args: &[&str]) -> Output {
        Command::new(bin("ward")).arg("--socket").arg(self.dir.join("wardd.sock")).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ward(args);
        assert!(out.status.success(), "ward {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates and starts `name` with `steps` for its ipc-peer program.
    fn run(&self, name: &str, steps: &str) {
        // `--cmdline=...`: a value that starts with `--` needs the `=`.
        let cmdline = format!("--cmdline=-- {steps}");
        self.ok(&["create", name, &cmdline]);
        self.ok(&["start", name]);
    }

    fn logs(&self, name: &str) -> String {
        self.ok(&["logs", name])
    }

    /// Waits for a line of `name`'s console that starts with `prefix` and
    /// returns it.
    fn line(&self, name: &str, prefix: &str, timeout: Duration) -> String {
        let mut found = None;
        wait_until(&format!("{name} prints {prefix:?}"), timeout, || {
            found = self.logs(name).lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
            found.is_some()
        });
        found.unwrap_or_default()
    }

    fn audit(&self) -> String {
        self.ok(&["audit", "--limit", "1000"])
    }

    /// The running `ward-ipc` router of this daemon.
    fn router(&self) -> Option<u32> {
        let daemon = self.child.id().to_string();
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(
            |pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let fields: Vec<&str> =
                    stat.rfind(')').and_then(|i| stat.get(i + 2..)).unwrap_or("").split(' ').collect();
                cmd.split(|&b| b == 0).next().unwrap_or_default().ends_with(b"ward-ipc")
                    && fields.first() != Some(&"Z")
                    && fields.get(1) == Some(&daemon.as_str())
            },
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon stops its compartments and the router.
        // SAFETY: signalling our own child.
        unsafe { libc_kill(i32::try_from(self.child.id()).unwrap_or(0), 15) };
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MIB_10: &str = "10485760";

#[test]
fn allowed_calls_work_both_ways_with_ten_mib_intact() {
    let d = Daemon::start("both-ways", &[]);
    d.run("alpha", &format!("call beta echo {MIB_10}"));
    d.run("beta", &format!("call alpha echo {MIB_10}"));
    let there = d.line("alpha", "ipc: call beta echo", Duration::from_secs(180));
    let back = d.line("beta", "ipc: call alpha echo", Duration::from_secs(180));
    for line in [&there, &back] {
        assert!(line.contains(&format!("{MIB_10}: ok checksum=")), "{line}");
    }
    let audit = d.audit();
    assert!(audit.contains("ipc-allow alpha -> beta echo"), "{audit}");
    assert!(audit.contains("ipc-allow beta -> alpha echo"), "{audit}");
}

#[test]
fn a_denied_call_fails_at_once_with_a_clear_error_and_an_audit_line() {
    let d = Daemon::start("denied", &[]);
    d.run("gamma", "sleep 1");
    d.run("alpha", "call gamma secret 100,call gamma sink 100");
    let secret = d.line("alpha", "ipc: call gamma secret", Duration::from_secs(60));
    assert!(secret.contains("failed: denied"), "{secret}");
    // No rule at all denies too (default deny), and says so.
    let sink = d.line("alpha", "ipc: call gamma sink", Duration::from_secs(60));
    assert!(sink.contains("failed: denied"), "{sink}");
    let audit = d.audit();
    assert!(audit.contains("ipc-deny alpha -> gamma secret"), "{audit}");
    assert!(audit.contains("ipc-deny alpha -> gamma sink"), "{audit}");
}

#[test]
fn an_ask_is_answered_through_the_command_line() {
    let d = Daemon::start("ask", &["--ask-timeout", "120"]);
    d.run("beta", "serve asked");
    d.run("alpha", "call beta asked 1000,call beta asked 1000");
    // The first call's id is read from the table, as a person does; the
    // second's from `pending --json`, as a script does.
    let answer = |allow: bool| {
        let mut id = String::new();
        wait_until("a call waits for an answer", Duration::from_secs(60), || {
            id = if allow {
                let pending = d.ok(&["pending"]);
                pending
                    .lines()
                    .find(|l| l.contains("alpha") && l.contains("beta") && l.contains("asked"))
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned()
            } else {
                let asks: serde_json::Value = serde_json::from_str(&d.ok(&["pending", "--json"])).unwrap();
                asks.as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["from"] == "alpha" && a["to"] == "beta" && a["service"] == "asked")
                    .map(|a| {
                        assert!(a["waited_s"].as_u64().is_some(), "{a}");
                        a["id"].as_u64().unwrap().to_string()
                    })
                    .unwrap_or_default()
            };
            !id.is_empty()
        });
        d.ok(&[if allow { "allow" } else { "deny" }, &id]);
    };
    answer(true);
    let first = d.line("alpha", "ipc: call beta asked 1000: ok", Duration::from_secs(60));
    assert!(first.contains("checksum="), "{first}");
    answer(false);
    let second = d.line("alpha", "ipc: call beta asked 1000: failed", Duration::from_secs(60));
    assert!(second.contains("denied"), "{second}");
    assert_eq!(d.ok(&["pending"]).trim(), "no calls are waiting for an answer");
    let audit = d.audit();
    assert!(audit.contains("alpha -> beta asked: user allowed"), "{audit}");
    assert!(audit.contains("alpha -> beta asked: user denied"), "{audit}");
    // An unknown id is an error, not a crash.
    assert!(!d.ward(&["allow", "999999"]).status.success());
}

#[test]
fn an_ask_nobody_answers_is_denied_after_the_timeout() {
    let d = Daemon::start("ask-timeout", &["--ask-timeout", "2"]);
    d.run("beta", "serve asked");
    d.run("alpha", "call beta asked 100");
    let line = d.line("alpha", "ipc: call beta asked 100", Duration::from_secs(60));
    assert!(line.contains("failed: denied: no answer"), "{line}");
    let audit = d.audit();
    assert!(audit.contains("ipc-deny alpha -> beta asked: no answer in 2 s"), "{audit}");
    assert_eq!(d.ok(&["pending"]).trim(), "no calls are waiting for an answer");
}

/// A host service: on each connection, reads the `FROM` line, then echoes
/// every byte until the caller is done. Returns the `FROM` lines it saw.
fn host_echo_service(path: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                log.lock().unwrap().push(line.trim_end().to_owned());
                let mut writer = stream;
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = std::io::Read::read(&mut reader, &mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    writer.write_all(&buf[..n]).unwrap();
                }
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    seen
}

#[test]
fn a_compartment_calls_a_host_service_the_policy_allows() {
    let dir = std::env::temp_dir().join(format!("ward-ipc-host-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("echo.sock");
    let seen = host_echo_service(&socket);
    let service = format!("echo={}", socket.display());
    let d = Daemon::start("host", &["--host-service", &service]);
    d.run("beta", "call host echo 100");
    d.run("alpha", "call host echo+hello 1048576,call host clock 10");
    let echo = d.line("alpha", "ipc: call host echo+hello 1048576", Duration::from_secs(120));
    assert!(echo.contains(": ok checksum="), "{echo}");
    // The service heard who called, and with what.
    assert_eq!(seen.lock().unwrap().as_slice(), ["FROM alpha echo+hello"]);
    // A service the policy allows but wardd does not serve: not listening.
    let clock = d.line("alpha", "ipc: call host clock 10", Duration::from_secs(60));
    assert!(clock.contains("failed: not-listening"), "{clock}");
    // Beta may not call the host at all.
    let denied = d.line("beta", "ipc: call host echo 100", Duration::from_secs(60));
    assert!(denied.contains("failed: denied"), "{denied}");
    let audit = d.audit();
    assert!(audit.contains("ipc-allow alpha -> host echo+hello"), "{audit}");
    assert!(audit.contains("ipc-deny beta -> host echo"), "{audit}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_compartment_without_vsock_has_no_peer() {
    let d = Daemon::start("no-vsock", &[]);
    d.run("loner", "call alpha echo 10");
    let line = d.line("loner", "ipc:", Duration::from_secs(60));
    assert!(line.contains("no vsock device"), "{line}");
}

#[test]
fn a_killed_router_resets_calls_and_comes_back() {
    let d = Daemon::start("router-killed", &[]);
    d.run("beta", "sleep 1");
    // A transfer long enough to be cut, then a retry until it works.
    d.run("alpha", "call beta echo 1073741824,retry beta echo 1048576");
    wait_until("the router runs", Duration::from_secs(30), || d.router().is_some());
    let first = d.router().unwrap();
    // Let the transfer get going, then kill the router under it.
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: signalling a process of this test's daemon.
    unsafe { libc_kill(i32::try_from(first).unwrap(), 9) };
    // A compartment that starts while the router is down brings it back
    // for everyone, not only for itself.
    d.run("gamma", "sleep 1");
    let cut = d.line("alpha", "ipc: call beta echo 1073741824", Duration::from_secs(60));
    assert!(cut.contains("failed"), "{cut}");
    let retry = d.line("alpha", "ipc: retry beta echo 1048576", Duration::from_secs(120));
    assert!(retry.contains(": ok"), "{retry}");
    let second = d.router().unwrap();
    assert_ne!(first, second, "wardd started a new router");
    // The compartments lived through it.
    let ls = d.ok(&["ls"]);
    assert_eq!(ls.lines().filter(|l| l.contains("running")).count(), 3, "{ls}");
}

#[test]
fn compartments_keep_their_ipc_when_wardd_is_killed_and_restarted() {
    let mut d = Daemon::start("wardd-killed", &[]);
    d.run("beta", "sleep 1");
    d.run("alpha", "call beta echo 1000,sleep 8000,retry beta echo 100000");
    let before = d.line("alpha", "ipc: call beta echo 1000", Duration::from_secs(60));
    assert!(before.contains(": ok"), "{before}");
    d.kill_and_restart();
    // The new wardd adopted both VMMs, took back their reconnect sockets,
    // started a router and connected them to it.
    let after = d.line("alpha", "ipc: retry beta echo 100000", Duration::from_secs(120));
    assert!(after.contains(": ok"), "{after}");
    let audit = d.audit();
    assert!(audit.contains("adopt alpha") && audit.contains("adopt beta"), "{audit}");
    assert!(!audit.contains("ipc-lost"), "{audit}");
    assert!(d.router().is_some(), "a router of the new wardd runs");
}

#[test]
fn a_flooding_guest_is_limited_and_hurts_nobody_else() {
    let d = Daemon::start("flood", &[]);
    d.run("gamma", "sleep 1");
    d.run("beta", "sleep 3000,call gamma echo 1048576");
    d.run("alpha", "flood-connect 200,flood-garbage 5000,call beta echo 1000");
    let flood = d.line("alpha", "ipc: flood-connect 200", Duration::from_secs(120));
    let count = |key: &str| -> u32 {
        flood.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|n| n.parse().ok()).unwrap_or(u32::MAX)
    };
    let (accepted, refused) = (count("accepted="), count("refused="));
    assert!((1..=64).contains(&accepted), "at most 64 connections per compartment: {flood}");
    assert!(refused >= 64, "the rest are refused: {flood}");
    d.line("alpha", "ipc: flood-garbage 5000", Duration::from_secs(120));
    // The flooder itself still works, and so do the others.
    let own = d.line("alpha", "ipc: call beta echo 1000", Duration::from_secs(120));
    assert!(own.contains(": ok"), "{own}");
    let other = d.line("beta", "ipc: call gamma echo 1048576", Duration::from_secs(120));
    assert!(other.contains(": ok"), "{other}");
    assert_eq!(d.ok(&["ls"]).lines().filter(|l| l.contains("running")).count(), 3);
    // The router survived it, jailed under its own uid.
    let waiter = d.router().unwrap();
    let jailed = children(waiter);
    assert_eq!(jailed.len(), 1, "the router runs as the child of its waiter: {jailed:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", jailed[0])).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_owned();
    // The first uid of the daemon's slot (recorded in its state).
    let slot: u32 = std::fs::read_to_string(d.dir.join("state/slot")).unwrap().trim().parse().unwrap();
    let expected = (slot::UID_BASE + slot * slot::SLOT_UIDS).to_string();
    assert!(uid.split_whitespace().skip(1).all(|u| u == expected), "{uid}");
    // In a cgroup of its own, whose name no compartment may take.
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", jailed[0])).unwrap();
    assert!(cgroup.contains(&format!("/ward/{slot}.ward-ipc")), "{cgroup}");
    let taken = d.ward(&["create", "ward-ipc"]);
    assert!(String::from_utf8_lossy(&taken.stderr).contains("reserved for the IPC router"), "{taken:?}");
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat.rfind(')').and_then(|i| stat.get(i + 2..)?.split(' ').nth(1)?.parse::<u32>().ok());
            ppid == Some(pid)
        })
        .collect()
}
