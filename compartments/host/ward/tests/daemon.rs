//! wardd with real processes on real KVM: many compartments at once, VMMs
//! and the daemon itself killed with SIGKILL, garbage on the socket, the
//! console history cap, shutdown. Each test ends with every compartment
//! accounted for and no stray VMM process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = r#"
[compartment.keeper]
role = "app"
image = "idle"
memory = 16
restart = "always"

[compartment.looper]
role = "app"
image = "hello"
memory = 16
restart = "on-failure"

[template.app]
image = "idle"
memory = 16
"#;

/// A wardd of its own, in temporary directories.
struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ward")).with_file_name(name)
}

impl Daemon {
    fn start(test: &str, policy: &str, extra: &[&str]) -> Self {
        assert!(Path::new("/dev/kvm").exists(), "/dev/kvm is missing: these tests need it and never skip");
        let dir = std::env::temp_dir().join(format!("ward-daemon-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.toml"), policy).unwrap();
        let mut d = Self { dir, child: None, extra: extra.iter().map(|s| (*s).to_owned()).collect() };
        d.spawn();
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("wardd.sock")
    }

    fn spawn(&mut self) {
        let child = Command::new(bin("wardd"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--policy")
            .arg(self.dir.join("policy.toml"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("wardd.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let log = self.dir.join("wardd.log");
        wait_until("wardd answers", Duration::from_secs(10), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "wardd ended ({status}) before it answered: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            self.ward(&["ls"]).status.success()
        });
    }

    fn ward(&self, args: &[&str]) -> Output {
        Command::new(bin("ward")).arg("--socket").arg(self.socket()).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ward(args);
        assert!(out.status.success(), "ward {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (state, pid, restarts) of each compartment, from `ward ls`.
    fn table(&self) -> Vec<(String, String, Option<u32>, u32)> {
        self.ok(&["ls"])
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_owned(), f[2].to_owned(), f[3].parse().ok(), f[9].parse().unwrap())
            })
            .collect()
    }

    fn state(&self, name: &str) -> Option<String> {
        self.table().into_iter().find(|r| r.0 == name).map(|r| r.1)
    }

    /// The EXIT column of `ward ls` for `name`.
    fn exit_code(&self, name: &str) -> Option<String> {
        let ls = self.ok(&["ls"]);
        let row = ls.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| f[0] == name)?;
        Some(row[8].to_owned())
    }

    /// The daemon's slot (`daemon::slot`), as it recorded it.
    fn slot(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("state/slot")).unwrap().trim().parse().unwrap()
    }

    /// The pid of wardd.
    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap()
    }

    fn kill_daemon(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc_kill(i32::try_from(child.id()).unwrap(), signal) };
            let _ = child.wait();
        }
    }

    /// Live ward-vmm processes started for this daemon.
    /// Children of the daemon that ended and were never reaped.
    fn zombies(&self) -> Vec<u32> {
        let Some(daemon) = self.child.as_ref().map(Child::id) else { return Vec::new() };
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let fields: Vec<&str> =
                    stat.rfind(')').and_then(|i| stat.get(i + 2..)).unwrap_or("").split(' ').collect();
                fields.first() == Some(&"Z") && fields.get(1) == Some(&daemon.to_string().as_str())
            })
            .collect()
    }

    fn vmms(&self) -> Vec<u32> {
        let marker = self.dir.join("state").to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let zombie = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z");
                let program = cmd.split(|&b| b == 0).next().unwrap_or_default();
                // A jailed VMM is the child of its waiter; count the waiter.
                let ppid = stat.rfind(')').and_then(|i| stat.get(i + 2..)?.split(' ').nth(1)?.parse::<u32>().ok());
                let parent = std::fs::read(format!("/proc/{}/cmdline", ppid.unwrap_or(0))).unwrap_or_default();
                let parent_is_vmm = parent.split(|&b| b == 0).next().unwrap_or_default().ends_with(b"ward-vmm");
                !zombie
                    && !parent_is_vmm
                    && program.ends_with(b"ward-vmm")
                    && String::from_utf8_lossy(&cmd).contains(&marker)
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_daemon(15);
        // Whatever a failed test left: never leave VMMs behind.
        for pid in self.vmms() {
            // SAFETY: killing a stray VMM of this test.
            unsafe { libc_kill(i32::try_from(pid).unwrap_or(0), 9) };
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_wardd_without_its_helper_programs_refuses_to_start_naming_them() {
    let dir = std::env::temp_dir().join(format!("ward-daemon-{}-lone-wardd", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lone = dir.join("wardd");
    std::fs::copy(bin("wardd"), &lone).unwrap();
    let out = Command::new(&lone)
        .arg("--socket")
        .arg(dir.join("wardd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*dir.join("ward-vmm").to_string_lossy()) && stderr.contains("missing"), "{stderr}");
    assert!(!dir.join("wardd.sock").exists() && !dir.join("state").exists(), "it made nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stop_asks_the_guest_and_its_program_writes_a_marker_to_its_disk_before_it_powers_off() {
    let policy = format!("{POLICY}\n[[template.app.devices.block]]\nname = \"data\"\nsize = 16\n");
    let d = Daemon::start("graceful", &policy, &[]);
    let path = d.dir.join("data.img");
    std::fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
    d.ok(&["create", "store", "--image", "stop-marker", "--disk", path.to_str().unwrap()]);
    d.ok(&["start", "store"]);
    wait_until("the program waits", Duration::from_secs(10), || {
        d.ok(&["logs", "store"]).contains("stop-marker: waiting to be asked to stop")
    });
    let asked = Instant::now();
    d.ok(&["stop", "store", "--timeout", "30"]);
    let took = asked.elapsed();
    let disk = std::fs::read(&path).unwrap();
    assert!(
        disk.starts_with(b"ward stop-marker: stopped cleanly after "),
        "{:?}",
        String::from_utf8_lossy(&disk[..80])
    );
    assert!(took < Duration::from_secs(30), "the guest powered off by itself, before the deadline ({took:?})");
    let logs = d.ok(&["logs", "store"]);
    assert!(logs.contains("marker written and flushed") && logs.contains("powering off with exit code 0"), "{logs}");
    assert_eq!(d.state("store").as_deref(), Some("stopped"));
    assert_eq!(d.exit_code("store").as_deref(), Some("0"), "{}", d.ok(&["ls"]));
}

#[test]
fn a_guest_that_ignores_the_stop_is_killed_at_the_timeout() {
    let d = Daemon::start("deaf", POLICY, &[]);
    d.ok(&["create", "deaf", "--image", "busy"]);
    d.ok(&["start", "deaf"]);
    wait_until("it spins", Duration::from_secs(10), || d.ok(&["logs", "deaf"]).contains("busy: spinning"));
    let asked = Instant::now();
    d.ok(&["stop", "deaf", "--timeout", "1"]);
    assert!(asked.elapsed() >= Duration::from_secs(1), "it waited the timeout out");
    assert_eq!(d.state("deaf").as_deref(), Some("stopped"));
    assert_eq!(d.exit_code("deaf").as_deref(), Some("137"), "killed, as a shell shows it: {}", d.ok(&["ls"]));
    assert!(d.vmms().is_empty());
}

#[test]
fn twenty_compartments_start_at_once_and_stop() {
    let d = Daemon::start("twenty", POLICY, &[]);
    let names: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            let d = &d;
            s.spawn(move || {
                d.ok(&["create", name]);
                d.ok(&["start", name]);
            });
        }
    });
    wait_until("all twenty sleep", Duration::from_secs(60), || {
        names.iter().all(|n| String::from_utf8_lossy(&d.ward(&["logs", n]).stdout).contains("sleeper: sleeping"))
    });
    let running = d.table().iter().filter(|r| r.1 == "running").count();
    assert_eq!(running, 20, "{}", d.ok(&["ls"]));
    assert_eq!(d.vmms().len(), 20);
    std::thread::scope(|s| {
        for name in &names {
            let d = &d;
            s.spawn(move || d.ok(&["stop", name, "--timeout", "2"]));
        }
    });
    let table = d.table();
    assert_eq!(table.len(), 20);
    assert!(table.iter().all(|r| r.1 == "stopped"), "{table:?}");
    assert!(d.vmms().is_empty(), "stray VMMs: {:?}", d.vmms());
    for name in &names {
        d.ok(&["rm", name]);
    }
    assert!(d.zombies().is_empty(), "unreaped VMMs: {:?}", d.zombies());
}

#[test]
fn a_vmm_killed_with_sigkill_is_noticed_and_restarted() {
    let d = Daemon::start("sigkill", POLICY, &[]);
    d.ok(&["create", "keeper"]);
    d.ok(&["start", "keeper"]);
    let pid = d.table()[0].2.expect("keeper has a pid");
    // SAFETY: killing the VMM this test's daemon started.
    unsafe { libc_kill(i32::try_from(pid).unwrap(), 9) };
    let killed = Instant::now();
    wait_until("the exit is recorded", Duration::from_secs(1), || d.ok(&["audit"]).contains("exit keeper"));
    assert!(killed.elapsed() < Duration::from_secs(1), "noticed after {:?}", killed.elapsed());
    wait_until("keeper runs again", Duration::from_secs(10), || {
        let row = &d.table()[0];
        row.1 == "running" && row.2.is_some_and(|p| p != pid) && row.3 == 1
    });
    assert!(d.ok(&["audit"]).contains("restart-scheduled keeper"));
    d.ok(&["stop", "keeper"]);
    assert!(d.vmms().is_empty());
}

#[test]
fn a_daemon_killed_mid_start_finds_every_compartment_again() {
    let mut d = Daemon::start("crash", POLICY, &[]);
    let names: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    for n in &names {
        d.ok(&["create", n]);
    }
    let starts: Vec<Child> = names
        .iter()
        .map(|n| Command::new(bin("ward")).arg("--socket").arg(d.socket()).args(["start", n]).spawn().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    d.kill_daemon(9);
    for mut s in starts {
        let _ = s.wait();
    }
    // A VMM forked but not yet past clearing its parent-death signal dies
    // with the daemon, a moment later: count only those that outlive it.
    std::thread::sleep(Duration::from_millis(300));
    let vmms_before = d.vmms().len();
    d.spawn();
    let table = d.table();
    assert_eq!(table.len(), 6, "every compartment is accounted for: {table:?}");
    let running = table.iter().filter(|r| r.1 == "running").count();
    assert_eq!(running, d.vmms().len(), "running records match live VMMs: {table:?}");
    assert!(running >= vmms_before.min(6) || vmms_before == 0, "adopted {running} of {vmms_before}");
    for n in &names {
        if d.state(n).as_deref() == Some("running") {
            d.ok(&["stop", n, "--timeout", "2"]);
        }
    }
    assert!(d.vmms().is_empty(), "stray VMMs: {:?}", d.vmms());
    // Adopted or not, each compartment's cgroup went with its VMM.
    let slot = d.slot();
    for n in &names {
        let left = ward_sandbox::jail::Cgroup::open(&format!("{slot}.{n}")).map(|c| c.paths().len()).unwrap_or(0);
        assert_eq!(left, 0, "cgroup ward/{slot}.{n} is left behind");
    }
}

#[test]
fn a_thousand_garbage_requests_never_stop_the_daemon() {
    let d = Daemon::start("garbage", POLICY, &[]);
    let garbage: Vec<Vec<u8>> = vec![
        b"hello\n".to_vec(),
        b"{\n".to_vec(),
        b"{\"version\":1}\n".to_vec(),
        b"{\"version\":99,\"request\":{\"kind\":\"ping\"}}\n".to_vec(),
        b"{\"version\":1,\"request\":{\"kind\":\"format_disk\"}}\n".to_vec(),
        b"{\"version\":1,\"request\":{\"kind\":\"start\",\"name\":\"../../etc\"}}\n".to_vec(),
        vec![0xff, 0x00, 0x13, b'\n'],
        [vec![b'x'; 70_000], vec![b'\n']].concat(),
    ];
    for i in 0..1000 {
        let mut s = UnixStream::connect(d.socket()).unwrap();
        s.write_all(&garbage[i % garbage.len()]).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.contains("\"kind\":\"error\""), "request {i} got {line:?}");
    }
    assert!(d.ward(&["ls"]).status.success());
    assert!(d.ok(&["audit"]).is_empty() || !d.ok(&["audit"]).contains("start"));
}

#[test]
fn console_history_stays_under_its_cap() {
    let d = Daemon::start("logcap", POLICY, &["--log-cap", "300"]);
    d.ok(&["create", "chatty", "--image", "hello"]);
    d.ok(&["start", "chatty"]);
    wait_until("chatty stops", Duration::from_secs(20), || d.state("chatty").as_deref() == Some("stopped"));
    let log = d.dir.join("state/logs/chatty.log");
    let current = std::fs::metadata(&log).unwrap().len();
    let rotated = std::fs::metadata(log.with_extension("log.1")).unwrap().len();
    assert!(current <= 300 && rotated <= 300, "{current} + {rotated} bytes on disk");
    // The run's last line, then Ward's marker of its end.
    let history = d.ok(&["logs", "chatty"]);
    let last: Vec<&str> = history.lines().rev().take(2).collect();
    assert!(last[0].starts_with("-- ward: chatty ended: powered off with exit code 0 (exit code 0) --"), "{history}");
    assert!(last[1].ends_with("powering off with exit code 0"), "{history}");
    assert!(!history.contains("Ward kernel"), "the oldest output should be gone: {history}");
}

#[test]
fn sigterm_stops_every_compartment_and_the_daemon() {
    let mut d = Daemon::start("sigterm", POLICY, &[]);
    for n in ["t1", "t2", "t3"] {
        d.ok(&["create", n]);
        d.ok(&["start", n]);
    }
    wait_until("three VMMs", Duration::from_secs(10), || d.vmms().len() == 3);
    // A stop presses the guest's power button: its program exits and the
    // guest powers off, which the jailed VMM records.
    d.ok(&["stop", "t1"]);
    assert!(d.ok(&["audit"]).contains("exit t1 powered off with exit code 0"), "{}", d.ok(&["audit"]));
    d.ok(&["start", "t1"]);
    wait_until("three VMMs again", Duration::from_secs(10), || d.vmms().len() == 3);
    d.kill_daemon(15);
    assert!(d.vmms().is_empty(), "stray VMMs after SIGTERM: {:?}", d.vmms());
    d.spawn();
    let table = d.table();
    assert!(table.len() == 3 && table.iter().all(|r| r.1 == "stopped"), "{table:?}");
}

#[test]
fn autostart_starts_identity_and_storage_before_apps() {
    let policy = r#"
[compartment.a-app]
role = "app"
image = "idle"
memory = 16
autostart = true

[compartment.b-vault]
role = "identity"
image = "idle"
memory = 16
autostart = true

[compartment.c-store]
role = "storage"
image = "idle"
memory = 16
autostart = true
"#;
    let d = Daemon::start("autostart", policy, &[]);
    let audit = d.ok(&["audit"]);
    let order: Vec<&str> =
        audit.lines().filter(|l| l.contains(" start ")).filter_map(|l| l.split(' ').nth(3)).collect();
    assert_eq!(order, ["b-vault", "c-store", "a-app"], "{audit}");
    for n in ["a-app", "b-vault", "c-store"] {
        d.ok(&["stop", n, "--timeout", "2"]);
    }
}

#[test]
fn the_socket_is_private_and_other_users_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start("peer", POLICY, &[]);
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Open the file mode so the peer-credential check is what refuses.
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    use std::os::unix::process::CommandExt;
    let out =
        Command::new(bin("ward")).arg("--socket").arg(d.socket()).arg("ls").uid(65534).gid(65534).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("you may not use this wardd"), "{err}");
}

#[test]
fn disposable_run_leaves_nothing_behind() {
    let d = Daemon::start("disposable", POLICY, &[]);
    let out = d.ward(&["run", "once", "--disposable", "--image", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from ring 3"));
    assert!(d.table().is_empty(), "{:?}", d.table());
    assert!(!d.dir.join("state/logs/once.log").exists());
}

#[test]
fn logs_mark_each_run_and_take_tail_since_and_timestamps() {
    let d = Daemon::start("logs", POLICY, &[]);
    d.ok(&["create", "twice", "--image", "hello"]);
    let run_once = || {
        d.ok(&["start", "twice"]);
        wait_until("twice stops", Duration::from_secs(20), || d.state("twice").as_deref() == Some("stopped"));
    };
    run_once();
    std::thread::sleep(Duration::from_millis(20));
    let between = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(20));
    run_once();

    // Both runs, each between Ward's markers.
    let all = d.ok(&["logs", "twice"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines[0], "-- ward: twice started --", "{all}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("-- ward: twice started")).count(), 2, "{all}");
    let ends: Vec<&&str> = lines.iter().filter(|l| l.starts_with("-- ward: twice ended: ")).collect();
    assert_eq!(ends.len(), 2, "{all}");
    assert!(ends[0].ends_with("(exit code 0) --"), "{all}");
    assert_eq!(all.matches("hello from ring 3").count(), 2, "{all}");

    // --tail: the last lines, the same as the end of the whole.
    let tail = d.ok(&["logs", "twice", "-n", "3"]);
    assert_eq!(tail.lines().collect::<Vec<_>>(), lines[lines.len() - 3..], "{tail}");

    // --since: only the second run, by an RFC 3339 time and by a duration.
    let since = d.ok(&["logs", "twice", "--since", &between.to_rfc3339()]);
    assert!(since.starts_with("-- ward: twice started --\n"), "{since}");
    assert_eq!(since.matches("hello from ring 3").count(), 1, "{since}");
    assert_eq!(d.ok(&["logs", "twice", "--since", "1h"]), all);
    let bad = d.ward(&["logs", "twice", "--since", "last tuesday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since \"last tuesday\": not a duration"));

    // --timestamps: every line's UTC time, in order, the second run's after
    // `between`.
    let stamped = d.ok(&["logs", "twice", "-t"]);
    let times: Vec<chrono::DateTime<chrono::Utc>> = stamped
        .lines()
        .map(|l| chrono::DateTime::parse_from_rfc3339(&l[..24]).unwrap_or_else(|e| panic!("{l:?}: {e}")).to_utc())
        .collect();
    assert_eq!(times.len(), lines.len());
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{stamped}");
    let second =
        stamped.lines().collect::<Vec<_>>().iter().rposition(|l| l.contains("-- ward: twice started")).unwrap();
    assert!(times[second] >= between && times[second - 1] <= between, "{stamped}");
    assert!(stamped.lines().zip(&lines).all(|(s, l)| &s[25..] == *l), "{stamped}");

    // `ward run` prints what the guest prints: no markers.
    let out = d.ward(&["run", "plain", "--disposable", "--image", "hello"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("-- ward:"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn stats_sample_cpu_memory_and_disks_of_running_compartments() {
    let d = Daemon::start("stats", POLICY, &[]);
    d.ok(&["create", "spinner", "--image", "busy", "-m", "16"]);
    d.ok(&["create", "sleeper", "--image", "idle", "-m", "16"]);
    d.ok(&["create", "off", "--image", "idle", "-m", "16"]);
    d.ok(&["start", "spinner", "sleeper"]);
    wait_until("both boot", Duration::from_secs(20), || {
        d.ok(&["logs", "spinner"]).contains("busy:") && d.ok(&["logs", "sleeper"]).contains("sleeper: sleeping")
    });

    // JSON lines: one per running compartment; the stopped one is left out.
    let out = d.ok(&["stats", "--no-stream", "--json", "--interval", "1"]);
    let samples: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |name: &str| samples.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {out}")).clone();
    assert_eq!(samples.len(), 2, "{out}");
    let (spinner, sleeper) = (of("spinner"), of("sleeper"));
    let cpu = |s: &serde_json::Value| s["cpu_percent"].as_f64().unwrap_or_else(|| panic!("{s}"));
    // A guest that spins uses most of a core; one that sleeps next to none.
    assert!(cpu(&spinner) > 25.0, "{out}");
    assert!(cpu(&sleeper) < cpu(&spinner) / 2.0, "{out}");
    for s in [&spinner, &sleeper] {
        assert!(s["rss_kib"].as_u64().unwrap() > 1024, "{s}");
        assert_eq!(s["memory_mib"], 16);
        assert!(s["disk_read_bytes"].as_u64().is_some() && s["disk_written_bytes"].as_u64().is_some(), "{s}");
    }

    // The table, for the names asked; piped, without terminal codes.
    let table = d.ok(&["stats", "--no-stream", "--interval", "0.2", "sleeper", "off"]);
    assert!(!table.contains('\x1b'), "{table:?}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("NAME") && rows[0].contains("CPU %") && rows[0].contains("DISK WRITE"), "{table}");
    assert!(rows[1].starts_with("sleeper") && rows[1].contains("running") && rows[1].contains("16.0 MiB"), "{table}");
    assert!(rows[2].starts_with("off") && rows[2].contains("created"), "{table}");

    let missing = d.ward(&["stats", "--no-stream", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no compartment nobody"));
    assert_eq!(d.ward(&["stats", "--interval", "0"]).status.code(), Some(2));
    d.ok(&["kill", "spinner", "sleeper"]);
}

#[test]
fn work_on_many_compartments_shows_progress_on_a_terminal_and_none_when_piped() {
    let d = Daemon::start("progress", POLICY, &[]);
    for n in ["p1", "p2", "p3"] {
        d.ok(&["create", n, "--image", "idle", "-m", "16"]);
    }
    // Piped: the results only, nothing on standard error.
    let piped = d.ward(&["start", "--all"]);
    assert!(piped.status.success());
    assert_eq!(String::from_utf8_lossy(&piped.stderr), "");
    // On a terminal (script(1) gives ward one): a line redrawn in place
    // as each compartment is done, and cleared at the end.
    let command = format!("{} --socket {} stop --all", bin("ward").display(), d.socket().display());
    let tty = Command::new("script").args(["-qefc", &command, "/dev/null"]).output().unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(0), "{shown}");
    for step in ["ward: stopping 0/3", "ward: stopping 1/3", "ward: stopping 3/3"] {
        assert!(shown.contains(step), "{step:?} missing: {shown:?}");
    }
    assert!(shown.ends_with("\r\x1b[K"), "the line is not cleared: {shown:?}");
    assert!(["p1", "p2", "p3"].iter().all(|n| d.state(n).as_deref() == Some("stopped")), "{}", d.ok(&["ls"]));
}

#[test]
fn a_jailed_compartment_reads_and_writes_its_disk_and_the_policy_bounds_it() {
    let policy = format!("{POLICY}\n[[template.app.devices.block]]\nname = \"data\"\nsize = 16\n");
    let d = Daemon::start("disk", &policy, &[]);
    let path = d.dir.join("data.img");
    std::fs::File::create(&path).unwrap().set_len(8 << 20).unwrap();
    // A relative path: the client makes it absolute for the daemon.
    let out = Command::new(bin("ward"))
        .current_dir(&d.dir)
        .arg("--socket")
        .arg(d.socket())
        .args(["run", "disk-user", "--disposable", "--image", "disk", "--disk", "data.img"])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}{}", String::from_utf8_lossy(&out.stderr));
    assert!(console.contains("read back 64 KiB at sector 16256: identical"), "{console}");
    let bytes = std::fs::read(&path).unwrap();
    let at = 16256 * 512;
    assert!(bytes[at..at + 64 * 1024].iter().enumerate().all(|(i, &b)| b == (i * 31 % 251).to_le_bytes()[0]));

    // A link is followed once, at create: the record keeps the real file.
    let link = d.dir.join("link.img");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    d.ok(&["create", "linked", "--image", "disk", "--disk", link.to_str().unwrap()]);
    let record = d.ok(&["inspect", "linked", "--json"]);
    assert!(record.contains(&format!("{:?}", path.canonicalize().unwrap())), "{record}");
    assert!(!record.contains("link.img"), "{record}");
    d.ok(&["rm", "linked"]);

    // Larger than the volume, or a second disk: refused before anything runs.
    std::fs::File::create(&path).unwrap().set_len(32 << 20).unwrap();
    let out = d.ward(&["create", "too-big", "--image", "disk", "--disk", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.ward(&["create", "no-file", "--image", "disk", "--disk", "/nonexistent/ward.img"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ward.img"));
    assert!(d.table().is_empty(), "{:?}", d.table());
    assert!(d.vmms().is_empty());
}

/// The real uid of the jailed VMM under waiter `pid` (its child).
fn jailed_uid(waiter: u32) -> Option<u32> {
    let child = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rfind(')').and_then(|i| stat.get(i + 2..)?.split(' ').nth(1)?.parse::<u32>().ok()) == Some(waiter)
        })?;
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:")?.split_whitespace().next()?.parse().ok())
}

#[test]
fn each_compartment_runs_as_its_own_unprivileged_uid() {
    let d = Daemon::start("uids", POLICY, &[]);
    for n in ["u1", "u2"] {
        d.ok(&["create", n]);
        d.ok(&["start", n]);
    }
    wait_until("both sleep", Duration::from_secs(20), || {
        ["u1", "u2"].iter().all(|n| String::from_utf8_lossy(&d.ward(&["logs", n]).stdout).contains("sleeper: sleeping"))
    });
    let uids: Vec<u32> = d.vmms().into_iter().map(|waiter| jailed_uid(waiter).expect("a jailed child")).collect();
    assert_eq!(uids.len(), 2);
    assert_ne!(uids[0], uids[1], "compartments share no uid: {uids:?}");
    assert!(uids.iter().all(|&u| u != 0 && u != 65534), "{uids:?}");
    // The identity is the compartment's for good: a restart keeps it.
    d.ok(&["stop", "u1"]);
    d.ok(&["start", "u1"]);
    let audit = d.ok(&["audit"]);
    let starts: Vec<&str> =
        audit.lines().filter(|l| l.contains(" start u1 ")).filter_map(|l| l.rsplit(' ').next()).collect();
    assert_eq!(starts.len(), 2, "{audit}");
    assert_eq!(starts[0], starts[1], "{audit}");
    d.ok(&["stop", "u1"]);
    d.ok(&["stop", "u2"]);
}

#[test]
fn standard_input_of_ward_run_reaches_a_compartment_in_the_daemon() {
    use std::io::Write;
    let d = Daemon::start("input", POLICY, &[]);
    let mut run = Command::new(bin("ward"))
        .arg("--socket")
        .arg(d.socket())
        .args(["run", "echoer", "--disposable", "--image", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    stdin.write_all(b"first line\nsecond line\n").unwrap();
    drop(stdin); // end of input
    let out = run.wait_with_output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}{}", String::from_utf8_lossy(&out.stderr));
    assert!(console.contains("echo: first line\necho: second line\necho: input ended"), "{console}");
    assert!(d.table().is_empty(), "the disposable compartment is gone: {:?}", d.table());
}

/// Sends `signal` to `pid`.
fn kill(pid: u32, signal: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc_kill(i32::try_from(pid).unwrap(), signal) };
}

#[test]
fn a_stop_cut_short_by_a_daemon_crash_is_finished_by_the_next_daemon() {
    let mut d = Daemon::start("stop-crash", POLICY, &[]);
    d.ok(&["create", "keeper"]);
    d.ok(&["start", "keeper"]);
    let vmm = d.table()[0].2.expect("keeper has a pid");
    // A VMM that cannot act on SIGTERM (stopped), so the stop must wait
    // for its deadline, 3 s away; the daemon dies while it waits.
    kill(vmm, 19);
    let mut stop = Command::new(bin("ward"))
        .arg("--socket")
        .arg(d.socket())
        .args(["stop", "keeper", "--timeout", "3"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the stop began", Duration::from_secs(10), || d.ok(&["audit"]).contains("stop keeper"));
    d.kill_daemon(9);
    let _ = stop.wait();
    assert_eq!(d.vmms(), [vmm], "the VMM outlived the daemon");
    d.spawn();
    // The new daemon carries the stop on and kills the VMM at the deadline.
    wait_until("keeper stopped", Duration::from_secs(15), || d.state("keeper").as_deref() == Some("stopped"));
    assert!(d.vmms().is_empty(), "stray VMMs: {:?}", d.vmms());
    d.ok(&["rm", "keeper"]);
}

#[test]
fn a_vmm_no_record_claims_is_killed_when_the_daemon_restarts() {
    let mut d = Daemon::start("stray", POLICY, &[]);
    d.ok(&["create", "keeper"]);
    d.ok(&["start", "keeper"]);
    d.kill_daemon(9);
    // A VMM of this daemon's state that no record knows: keeper's spec
    // under another name, started by hand.
    let run = d.dir.join("state/run");
    let spec = std::fs::read_to_string(run.join("keeper.json")).unwrap();
    let ghost =
        spec.replace("\"keeper\"", "\"ghost\"").replace("keeper.exit", "ghost.exit").replace("keeper.log", "ghost.log");
    std::fs::write(run.join("ghost.json"), ghost).unwrap();
    let mut stray = Command::new(bin("ward-vmm"))
        .arg("--spec")
        .arg(run.join("ghost.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the stray runs", Duration::from_secs(10), || d.vmms().contains(&stray.id()));
    d.spawn();
    wait_until("the stray is killed", Duration::from_secs(10), || stray.try_wait().unwrap().is_some());
    let audit = d.ok(&["audit"]);
    assert!(audit.lines().any(|l| l.contains("kill-stray ghost") && l.contains("no record claims")), "{audit}");
    assert!(audit.contains("adopt keeper"), "{audit}");
    assert_eq!(d.state("keeper").as_deref(), Some("running"));
    d.ok(&["stop", "keeper"]);
}

#[test]
fn a_crash_loop_stops_at_the_start_limit_and_a_manual_start_begins_afresh() {
    let d = Daemon::start("crash-loop", POLICY, &[]);
    // Panics at once, every time: exit code 101.
    d.ok(&["create", "looper", "--cmdline", "ward.panic"]);
    d.ok(&["start", "looper"]);
    // Five failed runs: four restarts after 1, 2, 4 and 8 s, then none.
    wait_until("the start limit", Duration::from_secs(60), || d.ok(&["audit"]).contains("restart-limit looper"));
    let row = d.table().into_iter().find(|r| r.0 == "looper").unwrap();
    assert_eq!((row.1.as_str(), row.3), ("stopped", 4), "{}", d.ok(&["ls"]));
    let audit = d.ok(&["audit"]);
    let waits: Vec<&str> = audit.lines().filter(|l| l.contains("restart-scheduled looper")).collect();
    assert_eq!(waits.len(), 4, "{audit}");
    assert!(waits[3].ends_with("in 8000 ms"), "{audit}");
    // A person's start: no backoff left over, the first restart in 1 s.
    d.ok(&["start", "looper"]);
    wait_until("a fresh restart", Duration::from_secs(20), || {
        d.ok(&["audit"]).lines().filter(|l| l.contains("restart-scheduled looper")).count() == 5
    });
    let audit = d.ok(&["audit"]);
    let last = audit.lines().rfind(|l| l.contains("restart-scheduled looper")).unwrap();
    assert!(last.ends_with("in 1000 ms"), "{audit}");
    d.ok(&["stop", "looper"]);
}

#[test]
fn two_daemons_share_no_uid_cgroup_or_socket() {
    let a = Daemon::start("twin-a", POLICY, &[]);
    let b = Daemon::start("twin-b", POLICY, &[]);
    assert_ne!(a.slot(), b.slot());
    for d in [&a, &b] {
        d.ok(&["create", "twin"]);
        d.ok(&["start", "twin"]);
    }
    let jailed = |d: &Daemon| {
        let waiter = d.vmms()[0];
        // The waiter forks its jailed child just after it starts.
        wait_until("the jailed child runs", Duration::from_secs(10), || jailed_uid(waiter).is_some());
        let uid = jailed_uid(waiter).expect("a jailed child");
        let cgroup = std::fs::read_to_string(format!("/proc/{waiter}/cgroup")).unwrap();
        (uid, cgroup)
    };
    let (a_uid, a_cgroup) = jailed(&a);
    let (b_uid, b_cgroup) = jailed(&b);
    assert_ne!(a_uid, b_uid, "two compartments called twin share a uid");
    assert!(a_cgroup.contains(&format!("/ward/{}.twin", a.slot())), "{a_cgroup}");
    assert!(b_cgroup.contains(&format!("/ward/{}.twin", b.slot())), "{b_cgroup}");
    // A third wardd on a's socket is refused, naming the one serving it.
    let out = Command::new(bin("wardd"))
        .arg("--socket")
        .arg(a.socket())
        .arg("--state-dir")
        .arg(a.dir.join("other-state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("another wardd (pid {}) is serving it", a.pid())), "{err}");
    // One on a's state with a socket of its own fails on the store and
    // leaves no socket behind.
    let other = a.dir.join("other.sock");
    let out = Command::new(bin("wardd"))
        .arg("--socket")
        .arg(&other)
        .arg("--state-dir")
        .arg(a.dir.join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!other.exists(), "a wardd that failed left its socket");
    assert_eq!(a.state("twin").as_deref(), Some("running"));
    a.ok(&["stop", "twin"]);
    b.ok(&["stop", "twin"]);
}

#[test]
fn a_socket_directory_others_may_write_to_is_refused_and_left_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("ward-daemon-{}-open-dir", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("open")).unwrap();
    std::fs::set_permissions(dir.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(bin("wardd"))
        .arg("--socket")
        .arg(dir.join("open/w.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is writable by other users (mode 0777) without the sticky bit"), "{err}");
    let mode = std::fs::metadata(dir.join("open")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "wardd changed the mode of a directory it did not make");
    // A shared directory with the sticky bit (as /tmp) is used, unchanged.
    std::fs::set_permissions(dir.join("open"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut wardd = Command::new(bin("wardd"))
        .arg("--socket")
        .arg(dir.join("open/w.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("wardd serves", Duration::from_secs(10), || dir.join("open/w.sock").exists());
    let mode = std::fs::metadata(dir.join("open")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
    kill(wardd.id(), 15);
    wardd.wait().unwrap();
    assert!(!dir.join("open/w.sock").exists(), "the socket goes with the daemon");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

#[test]
fn idle_connections_are_bounded_and_a_follower_that_went_away_is_noticed() {
    let d = Daemon::start("clients", POLICY, &[]);
    d.ok(&["create", "keeper"]);
    d.ok(&["start", "keeper"]);
    let baseline = threads(d.pid());
    // Abandoned followers: their threads go at once, not when keeper
    // next prints (it never does).
    let mut followers: Vec<Child> = (0..20)
        .map(|_| {
            Command::new(bin("ward"))
                .arg("--socket")
                .arg(d.socket())
                .args(["logs", "-f", "keeper"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_until("twenty followers are served", Duration::from_secs(10), || threads(d.pid()) >= baseline + 20);
    for f in &mut followers {
        f.kill().unwrap();
        f.wait().unwrap();
    }
    wait_until("their threads are gone", Duration::from_secs(2), || threads(d.pid()) <= baseline);
    // Idle connections past the bound get a clear refusal, not a hang or
    // a reset, and the daemon serves again once they go.
    let idle: Vec<UnixStream> =
        (0..ward_host::daemon::server::MAX_CONNECTIONS).map(|_| UnixStream::connect(d.socket()).unwrap()).collect();
    wait_until("every idle connection is served", Duration::from_secs(10), || {
        threads(d.pid()) >= baseline + ward_host::daemon::server::MAX_CONNECTIONS
    });
    let refused = d.ward(&["ls"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("wardd is busy"), "{err}");
    drop(idle);
    wait_until("wardd serves again", Duration::from_secs(5), || d.ward(&["ls"]).status.success());
    d.ok(&["stop", "keeper"]);
}

#[test]
fn what_a_start_would_refuse_is_refused_at_create() {
    let d = Daemon::start("create-checks", POLICY, &[]);
    let long = "x".repeat(5000);
    let out = d.ward(&["create", "wordy", "--cmdline", &long]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the kernel command line is 5000 bytes; at most 4096 are allowed"), "{err}");
    assert!(d.table().is_empty(), "nothing was created: {:?}", d.table());
}

#[test]
fn control_and_bidirectional_characters_reach_the_terminal_escaped() {
    let d = Daemon::start("escapes", POLICY, &[]);
    let out = d.ward(&["create", "x", "--disk", "/nonexistent/a\u{202e}gmi.exe\u{1b}[31m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("a\\u{202e}gmi.exe\\u{1b}[31m"), "{err}");
    assert!(!err.contains('\u{202e}') && !err.contains('\u{1b}'), "{err:?}");
}

/// `ward ARGS --json` (or with `--json` inside ARGS), parsed.
fn json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let text = d.ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ward {args:?} printed no JSON ({e}): {text}"))
}

#[test]
fn the_lifecycle_verbs_work_as_a_docker_user_expects() {
    let d = Daemon::start("verbs", POLICY, &[]);
    for name in ["v1", "v2"] {
        d.ok(&["create", name, "-m", "16"]);
    }
    d.ok(&["create", "v3", "-m", "16", "--restart", "always"]);
    assert_eq!(json(&d, &["inspect", "v3", "--json"])["record"]["restart"], "always");
    d.ok(&["rm", "v3"]);

    // start --all, then a start of a running one: a note, and success.
    d.ok(&["start", "--all"]);
    assert_eq!(d.state("v1").as_deref(), Some("running"));
    assert_eq!(d.state("v2").as_deref(), Some("running"));
    let again = d.ward(&["start", "v1"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("compartment v1 is running already"));

    // ls -q and ls --json.
    assert_eq!(d.ok(&["ls", "-q"]), "v1\nv2\n");
    let list = json(&d, &["ls", "--json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["state"] == "running" && r["pid"].as_u64().is_some()), "{list}");

    // inspect, for a script and for a person.
    let details = json(&d, &["inspect", "v1", "--json"]);
    let pid = details["record"]["pid"].as_u64().unwrap();
    assert_eq!(details["pids"][0].as_u64(), Some(pid), "{details}");
    assert!(Path::new(details["console_log"].as_str().unwrap()).exists(), "{details}");
    let text = d.ok(&["inspect", "v1"]);
    assert!(text.contains("state        running") && text.contains(&format!("pids         {pid}")), "{text}");
    assert!(text.contains("console log") && text.contains("ago)"), "{text}");

    // restart: a new VMM.
    d.ok(&["restart", "v1"]);
    let after = json(&d, &["inspect", "v1", "--json"]);
    assert_eq!(after["record"]["state"], "running");
    assert_ne!(after["record"]["pid"].as_u64(), Some(pid), "restart started a new VMM");

    // wait: blocks until the run ends, prints its exit code and exits
    // with it; the idle guest powers off with 0 when asked to stop.
    let waiter = Command::new(bin("ward"))
        .arg("--socket")
        .arg(d.socket())
        .args(["wait", "v1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopper = std::thread::spawn({
        let socket = d.socket();
        move || {
            std::thread::sleep(Duration::from_millis(500));
            Command::new(bin("ward")).arg("--socket").arg(socket).args(["stop", "v1"]).output().unwrap()
        }
    });
    let waited = waiter.wait_with_output().unwrap();
    assert!(stopper.join().unwrap().status.success());
    assert_eq!((waited.status.code(), String::from_utf8_lossy(&waited.stdout).trim()), (Some(0), "0"));
    let text = d.ok(&["inspect", "v1"]);
    assert!(text.contains("last exit    0: powered off with exit code 0"), "{text}");

    // stop of a stopped one: a note, and success.
    let again = d.ward(&["stop", "v1"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("compartment v1 is not running (stopped)"));

    // kill: 137, as a shell shows a SIGKILL.
    d.ok(&["kill", "v2"]);
    assert_eq!(d.exit_code("v2").as_deref(), Some("137"), "{}", d.ok(&["ls"]));
    let waited = d.ward(&["wait", "v2"]);
    assert_eq!((waited.status.code(), String::from_utf8_lossy(&waited.stdout).trim()), (Some(137), "137"));

    // One name that does not exist fails the command, the others go on.
    let mixed = d.ward(&["kill", "nobody", "v2"]);
    assert_eq!(mixed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&mixed.stderr).contains("no compartment nobody"));

    // rm of a running one is refused; rm -f --all removes everything.
    d.ok(&["start", "v2"]);
    assert!(!d.ward(&["rm", "v2"]).status.success());
    d.ok(&["rm", "-f", "--all"]);
    assert_eq!(d.ok(&["ls", "-q"]), "");
    assert!(d.vmms().is_empty());

    // The audit log, filtered and as JSON.
    let exits = json(&d, &["audit", "--json", "--kind", "exit", "-c", "v2", "-n", "100"]);
    let exits = exits.as_array().unwrap();
    assert_eq!(exits.len(), 2, "killed twice: {exits:?}");
    assert!(exits.iter().all(|e| e["kind"] == "exit" && e["compartment"] == "v2" && e["at_ms"].as_u64() > Some(0)));
    let all = json(&d, &["audit", "--json", "-n", "1000"]);
    let kinds: Vec<&str> = all.as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["create", "start", "stop", "kill", "exit", "remove"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

#[test]
fn events_stream_lifecycle_changes_as_json_lines_and_audit_follows() {
    let d = Daemon::start("events", POLICY, &[]);
    let mut events = Command::new(bin("ward"))
        .arg("--socket")
        .arg(d.socket())
        .args(["events", "--json", "-c", "e1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut follower = Command::new(bin("ward"))
        .arg("--socket")
        .arg(d.socket())
        .args(["audit", "-f", "-n", "0", "--kind", "start"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Both are connected before anything happens: they have seen no entry.
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["create", "e2", "-m", "16"]);
    d.ok(&["create", "e1", "-m", "16"]);
    d.ok(&["start", "e1"]);
    d.ok(&["stop", "e1"]);
    let mut lines = BufReader::new(events.stdout.take().unwrap()).lines();
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("exit") {
        let line = lines.next().expect("an event").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(event["compartment"], "e1", "only e1's: {line}");
        kinds.push(event["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["create", "start", "stop", "exit"]);
    let started = BufReader::new(follower.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert!(started.contains(" start e1 pid "), "{started}");
    for child in [&mut events, &mut follower] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    d.ok(&["rm", "--all"]);
}
