//! The jail on this machine, as root: every jail is entered in a forked
//! child, so the test harness itself is never jailed. The child reports
//! what it sees from inside over a pipe (which it keeps through the jail),
//! and the parent checks from outside (namespaces, exit codes, cgroups).
//! Every child is waited for; a child that hangs is killed after a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ward_sandbox::jail::{
    self, Capability, CgroupHost, CgroupLimits, Controller, ControllerSupport, CpuMax, JailError, JailLimits, JailSpec,
    Namespace, PidNamespace,
};

/// Forks one child at a time: a forked child of this multi-threaded
/// harness must not find another test of this file halfway through a fork.
static FORK: Mutex<()> = Mutex::new(());

/// How long a child may take before it is killed and the test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The limits the test jails use: the address-space limit must stay above
/// what the forked harness has mapped already (thread stacks and arenas).
fn test_limits() -> JailLimits {
    JailLimits { address_space: 8 << 30, file_size: 1 << 20, open_files: 64, processes: 512 }
}

/// A child forked by `spawn`, talking over two pipes.
struct Forked {
    pid: libc::pid_t,
    from_child: BufReader<File>,
    to_child: Option<File>,
    /// Set, under the lock, once the child is reaped: the watchdog never
    /// kills a recycled pid.
    reaped: Arc<Mutex<bool>>,
    watchdog_stop: Arc<AtomicBool>,
}

/// The child's ends of the pipes.
struct ChildPipes {
    to_parent: File,
    from_parent: File,
}

impl ChildPipes {
    fn fds(&self) -> Vec<RawFd> {
        vec![self.to_parent.as_raw_fd(), self.from_parent.as_raw_fd()]
    }

    fn say(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.to_parent, "{}", line.as_ref());
    }

    /// Blocks until the parent drops its end.
    fn wait_for_parent(&mut self) {
        let mut buf = [0u8; 1];
        let _ = self.from_parent.read(&mut buf);
    }
}

/// A pipe, close-on-exec: (read end, write end).
fn pipe() -> (File, File) {
    let mut fds = [-1; 2];
    // SAFETY: the pointer is to a live array of two ints.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// Forks a child that runs `body` and `_exit`s with the code it returns
/// (1 after writing `error=...` if it returns an error).
fn spawn(body: impl FnOnce(&mut ChildPipes) -> Result<i32, String>) -> Forked {
    let (from_child_r, from_child_w) = pipe();
    let (to_child_r, to_child_w) = pipe();
    // SAFETY: this harness has other threads, so the child may only rely
    // on what is safe after fork. It allocates (glibc's malloc takes its
    // arena locks around fork and resets them in the child, so that is
    // safe on this host), makes system calls, and writes to its own pipes;
    // it never takes the stdout/stderr locks (no print, and a panic is
    // caught), and leaves with `_exit`, running no exit handler. The FORK
    // lock keeps the other tests of this file out of fork and jail code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(from_child_r);
        drop(to_child_w);
        let mut pipes = ChildPipes { to_parent: from_child_w, from_parent: to_child_r };
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut pipes))) {
            Ok(Ok(code)) => code,
            Ok(Err(e)) => {
                pipes.say(format!("error={e}"));
                1
            }
            Err(_) => 101,
        };
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(code) }
    }
    drop(from_child_w);
    drop(to_child_r);
    let reaped = Arc::new(Mutex::new(false));
    let watchdog_stop = Arc::new(AtomicBool::new(false));
    {
        let reaped = Arc::clone(&reaped);
        let stop = Arc::clone(&watchdog_stop);
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < TIMEOUT {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let reaped = reaped.lock().unwrap();
            if !*reaped {
                // SAFETY: `pid` is our unreaped child (checked under the lock).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
    }
    Forked { pid, from_child: BufReader::new(from_child_r), to_child: Some(to_child_w), reaped, watchdog_stop }
}

impl Forked {
    /// Lines from the child up to `ready` (or the end).
    fn read_until_ready(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.from_child.read_line(&mut line).unwrap_or(0) == 0 {
                return lines;
            }
            let l = line.trim_end().to_owned();
            if l == "ready" {
                return lines;
            }
            lines.push(l);
        }
    }

    /// Lets the child go on (it waits for the parent's end to close).
    fn release(&mut self) {
        self.to_child = None;
    }

    /// Releases the child, reads the rest of its lines and reaps it.
    fn finish(mut self) -> (Vec<String>, i32) {
        self.release();
        let lines = self.read_until_ready();
        let status = self.reap();
        (lines, status)
    }

    /// Waits for the child; returns its wait status.
    fn reap(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child; the status pointer is a live local.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(ret, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        *self.reaped.lock().unwrap() = true;
        self.watchdog_stop.store(true, Ordering::Relaxed);
        status
    }
}

impl Drop for Forked {
    /// A test that failed half-way still leaves no process behind.
    fn drop(&mut self) {
        let mut reaped = self.reaped.lock().unwrap();
        if !*reaped {
            // SAFETY: our own unreaped child; the status pointer is null.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            *reaped = true;
        }
        self.watchdog_stop.store(true, Ordering::Relaxed);
    }
}

/// The exit code of a wait status; panics with the status if it was a signal.
fn exit_code(status: i32) -> i32 {
    assert!(libc::WIFEXITED(status), "child did not exit normally: wait status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// `key=value` lines as a map (the child's findings).
fn findings(lines: &[String]) -> BTreeMap<String, String> {
    lines.iter().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The `errno` of the last call, by name for the common ones.
fn last_errno() -> String {
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => "EPERM".to_owned(),
        Some(libc::EBADF) => "EBADF".to_owned(),
        Some(e) => format!("errno {e}"),
        None => "none".to_owned(),
    }
}

/// What a jailed child checks from inside, as `key=value` lines.
fn inside_findings(pipes: &mut ChildPipes, not_kept: RawFd) {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the pointers are to live locals.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    pipes.say(format!("uids={r},{e},{s}"));
    // SAFETY: as above.
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    pipes.say(format!("gids={r},{e},{s}"));
    // SAFETY: integer argument; the result is checked. Raw system call, as
    // the jail itself makes them (this process has one thread).
    let setuid0 = unsafe { libc::syscall(libc::SYS_setuid, 0) };
    pipes.say(format!("setuid0={}", if setuid0 == 0 { "succeeded".to_owned() } else { last_errno() }));
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    pipes.say(format!("no_new_privs={nnp}"));
    let entries = std::fs::read_dir("/").map(|d| d.count().to_string()).unwrap_or_else(|e| format!("error {e}"));
    pipes.say(format!("root_entries={entries}"));
    pipes.say(format!("etc_passwd={}", if Path::new("/etc/passwd").exists() { "visible" } else { "absent" }));
    pipes.say(format!("proc={}", if Path::new("/proc/self").exists() { "visible" } else { "absent" }));
    let created = std::fs::write("/x", b"x").map_or_else(|e| format!("refused: {e}"), |()| "created".to_owned());
    pipes.say(format!("create_file={created}"));
    // SAFETY: F_GETFD only reads descriptor flags.
    let open = unsafe { libc::fcntl(not_kept, libc::F_GETFD) };
    pipes.say(format!("not_kept_fd={}", if open == -1 { last_errno() } else { "open".to_owned() }));
    for (name, resource) in [
        ("core", libc::RLIMIT_CORE),
        ("fsize", libc::RLIMIT_FSIZE),
        ("as", libc::RLIMIT_AS),
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
    ] {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: the pointer is to a live local.
        unsafe { libc::getrlimit(resource, &mut lim) };
        pipes.say(format!("rlimit_{name}={},{}", lim.rlim_cur, lim.rlim_max));
    }
    let mut host = [0u8; 65];
    // SAFETY: the buffer is live and its length given.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    pipes.say(format!("hostname={}", String::from_utf8_lossy(&host[..end])));
    // SAFETY: getpid cannot fail.
    pipes.say(format!("pid={}", unsafe { libc::getpid() }));
    let mut sig = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int to a live local.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut i32, 0, 0, 0) };
    pipes.say(format!("pdeathsig={sig}"));
}

/// The namespace links of a process.
fn ns_links(pid: &str) -> BTreeMap<&'static str, PathBuf> {
    Namespace::ALL
        .into_iter()
        .map(|ns| (ns.proc_name(), std::fs::read_link(format!("/proc/{pid}/ns/{}", ns.proc_name())).unwrap()))
        .collect()
}

/// What `doctor` says this host can do, by name.
fn supported() -> BTreeMap<&'static str, Capability> {
    jail::doctor().into_iter().map(|c| (c.name, c)).collect()
}

fn is_supported(caps: &BTreeMap<&'static str, Capability>, name: &str) -> bool {
    caps.get(name).is_some_and(|c| c.available)
}

fn spec(keep_fds: Vec<RawFd>) -> JailSpec {
    let mut spec = JailSpec::new("jail-test", 64 << 20, keep_fds);
    spec.limits = test_limits();
    spec
}

#[test]
fn enter_jails_the_process_and_reports_each_measure() {
    let caps = supported();
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (uid, gid) = jail::compartment_identity();
    let mut child = spawn(|pipes| {
        // A raw descriptor: the jail closes it behind any owner's back.
        let not_kept = File::open("/dev/null").map_err(|e| e.to_string())?.into_raw_fd();
        let spec = spec(pipes.fds());
        let report = jail::enter(&spec).map_err(|e| e.to_string())?;
        for m in &report.measures {
            pipes.say(format!("measure:{}={}", m.name, if m.applied { "applied" } else { "missing" }));
            pipes.say(format!("report:{m}"));
        }
        inside_findings(pipes, not_kept);
        pipes.say("ready");
        pipes.wait_for_parent();
        Ok(0)
    });
    let lines = child.read_until_ready();
    let f = findings(&lines);
    assert!(!f.contains_key("error"), "enter failed in the child: {lines:?}");
    let report: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("report:")).collect();
    eprintln!("the child's JailReport:\n{}", report.join("\n"));

    // From outside: the child is in namespaces of its own.
    let mine = ns_links("self");
    let its = ns_links(&child.pid.to_string());
    for ns in Namespace::ENTERED {
        if is_supported(&caps, ns.name()) {
            assert_ne!(mine[ns.proc_name()], its[ns.proc_name()], "{} is shared with the parent", ns.name());
        }
    }
    assert_eq!(mine["pid"], its["pid"], "no pid namespace was asked for in this test");
    let (rest, status) = child.finish();
    assert_eq!(exit_code(status), 0, "child: {rest:?}");

    // From inside.
    assert_eq!(f["uids"], format!("{uid},{uid},{uid}"));
    assert_eq!(f["gids"], format!("{gid},{gid},{gid}"));
    assert_eq!(f["setuid0"], "EPERM");
    assert_eq!(f["no_new_privs"], "1");
    assert_eq!(f["not_kept_fd"], "EBADF", "a descriptor not in keep_fds is still open");
    assert_eq!(f["rlimit_core"], "0,0");
    assert_eq!(f["rlimit_fsize"], format!("{0},{0}", 1 << 20));
    assert_eq!(f["rlimit_as"], format!("{0},{0}", 8u64 << 30));
    assert_eq!(f["rlimit_nofile"], "64,64");
    assert_eq!(f["rlimit_nproc"], "512,512");
    assert_eq!(f["pdeathsig"], "0", "this child was not made by enter_pid_namespace");
    assert_eq!(f["measure:pid namespace"], "missing", "the child is not PID 1: reported, not ignored");
    if is_supported(&caps, "pivot_root into tmpfs") {
        assert_eq!(f["measure:private root"], "applied");
        assert_eq!(f["root_entries"], "0", "the new root is not empty");
        assert_eq!(f["etc_passwd"], "absent");
        assert_eq!(f["proc"], "absent");
        assert!(f["create_file"].starts_with("refused"), "the root is writable: {}", f["create_file"]);
    }
    if is_supported(&caps, "uts namespace") {
        assert_eq!(f["hostname"], "jail-test");
    }
    for ns in Namespace::ENTERED {
        let expected = if is_supported(&caps, ns.name()) { "applied" } else { "missing" };
        assert_eq!(f[&format!("measure:{}", ns.name())], expected, "{}", ns.name());
    }
    for name in ["descriptors", "core dumps", "file size", "address space", "open files", "uid tasks", "identity"] {
        assert_eq!(f[&format!("measure:{name}")], "applied", "{name}");
    }
    assert_eq!(f["measure:no_new_privs"], "applied");
}

#[test]
fn pid_namespace_child_is_pid_1_and_parent_exits_with_its_code() {
    let caps = supported();
    assert!(is_supported(&caps, "pid namespace"), "this host has no pid namespaces: {:?}", caps["pid namespace"]);
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = spawn(|pipes| match jail::enter_pid_namespace().map_err(|e| e.to_string())? {
        PidNamespace::Parent { child } => jail::wait_and_exit(child),
        PidNamespace::Child => {
            let mut spec = spec(pipes.fds());
            // Everything, on a host that has everything (this one).
            spec.require_all = true;
            match jail::enter(&spec) {
                Ok(report) => pipes.say(format!("complete={}", report.is_complete())),
                Err(e) => pipes.say(format!("enter_error={e}")),
            }
            // SAFETY: getpid cannot fail.
            pipes.say(format!("pid={}", unsafe { libc::getpid() }));
            let mut sig = 0;
            // SAFETY: PR_GET_PDEATHSIG writes one int to a live local.
            unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut i32, 0, 0, 0) };
            pipes.say(format!("pdeathsig={sig}"));
            Ok(7)
        }
    });
    let lines = child.read_until_ready();
    let status = child.reap();
    let f = findings(&lines);
    assert_eq!(f.get("pid").map(String::as_str), Some("1"), "{lines:?}");
    let everything = Namespace::ENTERED.iter().all(|ns| is_supported(&caps, ns.name()))
        && is_supported(&caps, "pivot_root into tmpfs");
    if everything {
        assert_eq!(f.get("complete").map(String::as_str), Some("true"), "{lines:?}");
    }
    assert_eq!(f.get("pdeathsig").map(String::as_str), Some("9"), "the uid change cleared PR_SET_PDEATHSIG");
    assert_eq!(exit_code(status), 7, "the parent did not exit with the child's code");
}

/// Installed by the PID 1 child of the forwarding test.
extern "C" fn exit_42(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(42) }
}

#[test]
fn wait_and_exit_forwards_sigterm_to_the_child() {
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = spawn(|pipes| match jail::enter_pid_namespace().map_err(|e| e.to_string())? {
        PidNamespace::Parent { child } => jail::wait_and_exit(child),
        PidNamespace::Child => {
            // PID 1 ignores signals it has no handler for: install one.
            let handler: extern "C" fn(libc::c_int) = exit_42;
            // SAFETY: the handler only calls _exit, which is async-signal-safe.
            unsafe { libc::signal(libc::SIGTERM, handler as libc::sighandler_t) };
            pipes.say("ready");
            loop {
                // SAFETY: pause has no arguments; the handler ends the process.
                unsafe { libc::pause() };
            }
        }
    });
    child.read_until_ready();
    // SAFETY: our own, unreaped child.
    unsafe { libc::kill(child.pid, libc::SIGTERM) };
    let status = child.reap();
    assert_eq!(exit_code(status), 42, "SIGTERM was not forwarded to the child, or its exit code was lost");
}

#[test]
fn killing_the_parent_kills_the_jailed_child() {
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Orphans of this process's children come back to it, so the test can
    // reap the grandchild and see how it died.
    // SAFETY: integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let mut child = spawn(|pipes| match jail::enter_pid_namespace().map_err(|e| e.to_string())? {
        PidNamespace::Parent { child } => jail::wait_and_exit(child),
        PidNamespace::Child => {
            jail::enter(&spec(pipes.fds())).map_err(|e| e.to_string())?;
            pipes.say("ready");
            loop {
                // SAFETY: pause has no arguments.
                unsafe { libc::pause() };
            }
        }
    });
    let lines = child.read_until_ready();
    assert!(lines.is_empty(), "{lines:?}");
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.pid)).unwrap();
    let grandchild: libc::pid_t = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: our own, unreaped child.
    unsafe { libc::kill(child.pid, libc::SIGKILL) };
    let status = child.reap();
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);

    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: the grandchild is ours once orphaned (subreaper); a live local.
        let ret = unsafe { libc::waitpid(grandchild, &mut status, libc::WNOHANG) };
        if ret == grandchild {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "the jailed child outlived its parent");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the jailed child did not die by SIGKILL: wait status {status:#x}"
    );
}

#[test]
fn kept_kvm_descriptor_creates_a_vm_inside_the_jail() {
    const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
    const KVM_CREATE_VM: libc::c_ulong = 0xae01;
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = spawn(|pipes| {
        // As ward-vmm does: open /dev/kvm as root, then enter keeping it.
        let kvm = File::options().read(true).write(true).open("/dev/kvm").map_err(|e| e.to_string())?.into_raw_fd();
        let mut fds = pipes.fds();
        fds.push(kvm);
        let mut spec = spec(fds);
        spec.limits = JailLimits { address_space: jail::address_space_for(64 << 20, 4) + (8 << 30), ..test_limits() };
        jail::enter(&spec).map_err(|e| e.to_string())?;
        let reopen = File::open("/dev/kvm").map_or_else(|e| format!("refused: {e}"), |_| "opened".to_owned());
        pipes.say(format!("reopen={reopen}"));
        // SAFETY: KVM ioctls with integer arguments on descriptors we own.
        let version = unsafe { libc::ioctl(kvm, KVM_GET_API_VERSION, 0) };
        pipes.say(format!("api={version}"));
        // SAFETY: as above; the result is a new VM descriptor or -1.
        let vm = unsafe { libc::ioctl(kvm, KVM_CREATE_VM, 0) };
        pipes.say(format!("vm={}", if vm >= 0 { "created".to_owned() } else { last_errno() }));
        // Guest RAM is an anonymous mapping, counted against RLIMIT_AS: 64
        // MiB fits, far more than the limit does not.
        let map = |len: usize| {
            // SAFETY: a fresh anonymous mapping, unmapped at once if made.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    false
                } else {
                    libc::munmap(p, len);
                    true
                }
            }
        };
        pipes.say(format!("map_guest_ram={}", map(64 << 20)));
        pipes.say(format!("map_beyond_limit={}", map(64 << 30)));
        Ok(0)
    });
    let (lines, status) = child.finish();
    assert_eq!(exit_code(status), 0, "{lines:?}");
    let f = findings(&lines);
    assert!(f["reopen"].starts_with("refused"), "/dev/kvm can be opened again inside the jail: {}", f["reopen"]);
    assert_eq!(f["api"], "12");
    assert_eq!(f["vm"], "created", "{lines:?}");
    assert_eq!(f["map_guest_ram"], "true");
    assert_eq!(f["map_beyond_limit"], "false", "RLIMIT_AS does not bound the address space");
}

#[test]
fn missing_root_dir_is_reported_and_refused_when_everything_is_required() {
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = spawn(|pipes| {
        let mut spec = spec(pipes.fds());
        spec.root_dir = PathBuf::from("/nonexistent-ward-jail-dir");
        spec.require_all = true;
        match jail::enter(&spec) {
            Ok(_) => pipes.say("result=entered"),
            Err(JailError::Incomplete(missing)) => pipes.say(format!("incomplete={missing}")),
            Err(e) => pipes.say(format!("other={e}")),
        }
        Ok(0)
    });
    let (lines, status) = child.finish();
    assert_eq!(exit_code(status), 0);
    let f = findings(&lines);
    let missing = f.get("incomplete").unwrap_or_else(|| panic!("expected Incomplete, got {lines:?}"));
    assert!(missing.contains("private root (mount(tmpfs, /nonexistent-ward-jail-dir) failed"), "{missing}");
    assert!(missing.contains("pid namespace"), "{missing}");
}

#[test]
fn keep_fd_not_open_is_refused_before_anything_changes() {
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = spawn(|pipes| {
        let mut fds = pipes.fds();
        fds.push(9999);
        match jail::enter(&spec(fds)) {
            Err(JailError::KeepFdNotOpen(fd)) => pipes.say(format!("refused={fd}")),
            Ok(_) => pipes.say("refused=no"),
            Err(e) => pipes.say(format!("refused=other {e}")),
        }
        // SAFETY: geteuid cannot fail.
        pipes.say(format!("euid={}", unsafe { libc::geteuid() }));
        Ok(0)
    });
    let (lines, status) = child.finish();
    assert_eq!(exit_code(status), 0);
    let f = findings(&lines);
    assert_eq!(f["refused"], "9999");
    assert_eq!(f["euid"], "0", "the failed enter changed the identity");
}

/// Each hierarchy's `ward` directory, and whether it existed before the test.
fn parents_before(host: &CgroupHost) -> Vec<(PathBuf, bool)> {
    let mounts = host.v2.iter().map(|(m, _)| m).chain(host.v1.iter().map(|(m, _)| m));
    mounts
        .map(|m| {
            let parent = m.join(jail::PARENT);
            let existed = parent.exists();
            (parent, existed)
        })
        .collect()
}

/// Leaves the hierarchies as found: the `ward` directories a test made go
/// (best effort: a daemon on this host may have started using them).
fn remove_new_parents(parents: Vec<(PathBuf, bool)>) {
    for (parent, existed) in parents {
        if !existed {
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

#[test]
fn cgroup_limits_a_child_and_is_removed() {
    let host = CgroupHost::detect().unwrap();
    if let ControllerSupport::Missing(reason) = host.support(Controller::Memory) {
        // Not a pass in disguise: say loudly why nothing was checked.
        eprintln!("SKIPPED cgroup_limits_a_child_and_is_removed: no memory controller on this host: {reason}");
        return;
    }
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = spawn(|pipes| {
        pipes.wait_for_parent();
        Ok(0)
    });
    let pid = u32::try_from(child.pid).unwrap();
    let name = format!("jail-test-{}", std::process::id());
    let limits =
        CgroupLimits { memory_max: 96 << 20, cpu: Some(CpuMax { quota_us: 50_000, period_us: 100_000 }), pids_max: 8 };
    let parents = parents_before(&host);

    let cgroup = jail::cgroup_limit(&name, pid, &limits).unwrap();
    let report: Vec<String> = cgroup.report().iter().map(ToString::to_string).collect();
    eprintln!("cgroup {name}: {:?}\n{}", cgroup.paths(), report.join("\n"));
    assert!(cgroup.contains(pid), "pid {pid} is not in {:?}", cgroup.paths());
    assert_eq!(cgroup.memory_max().unwrap(), Some(96 << 20));
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&format!("/{}/{name}", jail::PARENT)), "/proc/{pid}/cgroup: {own}");
    for c in Controller::ALL {
        if !matches!(host.support(c), ControllerSupport::Missing(_)) {
            let m = cgroup.report().iter().find(|m| m.name == c.measure_name()).unwrap();
            assert!(m.applied, "{m}");
        }
    }
    let pids_file = cgroup.paths().iter().map(|p| p.join("pids.max")).find(|p| p.exists());
    if let Some(pids_file) = pids_file {
        assert_eq!(std::fs::read_to_string(pids_file).unwrap().trim(), "8");
    }

    let paths: Vec<PathBuf> = cgroup.paths().iter().map(|p| p.to_path_buf()).collect();
    child.release();
    let status = child.reap();
    assert_eq!(exit_code(status), 0);
    cgroup.remove().unwrap();
    for p in &paths {
        assert!(!p.exists(), "{} is left behind", p.display());
    }
    remove_new_parents(parents);
}

#[test]
fn cgroup_open_finds_an_existing_group_for_removal() {
    let host = CgroupHost::detect().unwrap();
    if !host.any() {
        eprintln!("SKIPPED cgroup_open_finds_an_existing_group_for_removal: no cgroup file system on this host");
        return;
    }
    let _fork = FORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let parents = parents_before(&host);
    let name = format!("jail-open-{}", std::process::id());
    let limits = CgroupLimits { memory_max: 64 << 20, cpu: None, pids_max: 4 };
    let made = jail::Cgroup::create(&name, &limits).unwrap();
    let paths: Vec<PathBuf> = made.paths().iter().map(|p| p.to_path_buf()).collect();
    let found = jail::Cgroup::open(&name).unwrap();
    let mut found_paths: Vec<PathBuf> = found.paths().iter().map(|p| p.to_path_buf()).collect();
    let mut expected = paths.clone();
    found_paths.sort();
    expected.sort();
    assert_eq!(found_paths, expected);
    found.remove().unwrap();
    assert!(paths.iter().all(|p| !p.exists()));
    remove_new_parents(parents);
}

#[test]
fn cgroup_bad_name_is_refused() {
    let limits = CgroupLimits::for_guest(64 << 20);
    assert!(matches!(jail::cgroup_limit("../etc", 1, &limits), Err(JailError::CgroupName { .. })));
}

#[test]
fn doctor_lists_every_capability_and_changes_nothing() {
    let before = ns_links("self");
    let caps = jail::doctor();
    assert_eq!(ns_links("self"), before, "doctor changed this process's namespaces");
    // SAFETY: geteuid cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "doctor changed this process's identity");
    let names: Vec<&str> = caps.iter().map(|c| c.name).collect();
    let mut expected = vec!["root privileges", "/dev/kvm"];
    expected.extend(Namespace::ALL.map(Namespace::name));
    expected.extend([
        "pivot_root into tmpfs",
        "setresuid to unprivileged",
        "no_new_privs",
        "cgroup v2",
        "cgroup memory",
        "cgroup cpu",
        "cgroup pids",
        "seccomp",
    ]);
    assert_eq!(names, expected);
    assert!(caps.iter().all(|c| !c.detail.is_empty() && !c.detail.contains('\n')));
    let text = jail::render_doctor(&caps);
    eprintln!("{text}");
    assert_eq!(text.lines().count(), caps.len() + 1);
    // This machine, as the task describes it: root and /dev/kvm.
    assert!(caps[1].available, "{:?}", caps[1]);
}
