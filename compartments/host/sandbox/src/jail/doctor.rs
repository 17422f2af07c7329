//! `ward doctor`: what this host supports of the jail, tried rather than
//! guessed.
//!
//! Each namespace, the private root, the uid drop and no_new_privs are
//! tried in a forked child that exits at once, so the caller changes in
//! nothing. A probe child runs only system calls on data prepared before
//! the fork (no allocation, no lock), writes eight bytes to a pipe and
//! `_exit`s: that is async-signal-safe, so `doctor` may be called from a
//! multi-threaded process such as `wardd`. Cgroups, `/dev/kvm` and seccomp
//! are read, not changed.

use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::FileTypeExt;

use super::cgroup::{CgroupHost, Controller, ControllerSupport};
use super::identity::compartment_identity;
use super::namespaces::Namespace;
use super::sys;

/// One thing the jail needs, and whether this host has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// What, e.g. `network namespace`.
    pub name: &'static str,
    /// Whether this host supports it for Ward.
    pub available: bool,
    /// One line: how it was found, or why it is missing.
    pub detail: String,
}

impl Capability {
    fn yes(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, available: true, detail: detail.into() }
    }

    fn no(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, available: false, detail: detail.into() }
    }
}

/// Everything `ward doctor` checks, in a fixed order.
pub fn doctor() -> Vec<Capability> {
    let mut caps = vec![root_privileges(), kvm()];
    caps.extend(Namespace::ALL.into_iter().map(namespace));
    caps.push(private_root());
    caps.push(identity_drop());
    caps.push(no_new_privs());
    caps.extend(cgroups());
    caps.push(seccomp());
    caps
}

/// The table `ward doctor` prints.
pub fn render_doctor(caps: &[Capability]) -> String {
    let width = caps.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in caps {
        let answer = if c.available { "yes" } else { "NO " };
        let _ = writeln!(out, "{answer}  {:<width$}  {}", c.name, c.detail);
    }
    let available = caps.iter().filter(|c| c.available).count();
    let _ = writeln!(
        out,
        "{available} of {} available; a compartment reports what it runs without when it starts",
        caps.len()
    );
    out
}

/// A probe's failure: which step (1-based) and its `errno` (0: the step
/// "succeeded" where it must fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Failure {
    step: u8,
    errno: i32,
}

impl Failure {
    fn of(step: u8, e: &io::Error) -> Self {
        Self { step, errno: e.raw_os_error().unwrap_or(0) }
    }
}

/// Runs `steps` in a forked child and returns how it went. See the module
/// documentation for why the child is async-signal-safe: `steps` must
/// only call `sys` functions on data made before the call.
fn probe(steps: impl FnOnce() -> Result<(), Failure>) -> Result<Result<(), Failure>, String> {
    let (read_end, write_end) = sys::pipe().map_err(|e| format!("pipe2 failed: {e}"))?;
    // SAFETY: the child runs `steps` (system calls on prepared data), one
    // `write` and `_exit`: async-signal-safe, as `fork` requires in a
    // process that may have other threads.
    let forked = unsafe { sys::fork() };
    match forked {
        Err(e) => {
            let _ = sys::close(read_end);
            let _ = sys::close(write_end);
            Err(format!("fork failed: {e}"))
        }
        Ok(sys::Fork::Child) => {
            let message = match steps() {
                Ok(()) => [0u8; 8],
                Err(f) => {
                    let mut m = [0u8; 8];
                    m[0] = 1;
                    m[1] = f.step;
                    m[4..8].copy_from_slice(&f.errno.to_le_bytes());
                    m
                }
            };
            let _ = sys::write(write_end, &message);
            sys::exit_now(0)
        }
        Ok(sys::Fork::Parent(pid)) => {
            let _ = sys::close(write_end);
            let mut message = [0u8; 8];
            let got = sys::read(read_end, &mut message);
            let _ = sys::close(read_end);
            let status = sys::waitpid(pid, 0);
            match (got, status) {
                (Ok(8), _) if message[0] == 0 => Ok(Ok(())),
                (Ok(8), _) => {
                    let errno = i32::from_le_bytes([message[4], message[5], message[6], message[7]]);
                    Ok(Err(Failure { step: message[1], errno }))
                }
                (_, Ok(Some(status))) => Err(format!("the probe process died (wait status {status:#x})")),
                (_, Ok(None)) | (_, Err(_)) => Err("the probe process could not be waited for".to_owned()),
            }
        }
    }
}

/// `errno` as the system's message.
fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// Describes a probe's failure with `steps`, the names of its steps.
fn failure_text(f: Failure, steps: &[&str]) -> String {
    let step = steps.get(usize::from(f.step).saturating_sub(1)).copied().unwrap_or("a step");
    if f.errno == 0 {
        format!("{step} succeeded but must not")
    } else {
        format!("{step} failed: {}", errno_text(f.errno))
    }
}

/// Runs a probe and turns it into a capability.
fn probed(
    name: &'static str,
    ok: impl Into<String>,
    steps: &[&str],
    run: impl FnOnce() -> Result<(), Failure>,
) -> Capability {
    match probe(run) {
        Ok(Ok(())) => Capability::yes(name, ok),
        Ok(Err(f)) => Capability::no(name, failure_text(f, steps)),
        Err(e) => Capability::no(name, format!("could not be tried: {e}")),
    }
}

/// Capability names, by number, for the report.
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities the jail itself needs: `CAP_SYS_ADMIN` (namespaces,
/// mounts, `pivot_root`, host name), `CAP_SETGID`, `CAP_SETUID` (the
/// identity change), `CAP_SETPCAP` (the bounding set).
const NEEDED_CAPS: [usize; 4] = [21, 6, 7, 8];

/// Root: `wardd` jails VMMs as root. Lists effective capabilities missing.
fn root_privileges() -> Capability {
    const NAME: &str = "root privileges";
    let euid = sys::getresuid().map(|[_, e, _]| e);
    let caps = sys::capget();
    match (euid, caps) {
        (Ok(0), Ok(caps)) => {
            let missing: Vec<&str> = CAP_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| caps.effective & (1u64 << i) == 0)
                .map(|(_, n)| *n)
                .collect();
            let needed_missing = NEEDED_CAPS.iter().any(|&i| caps.effective & (1u64 << i) == 0);
            let detail = if missing.is_empty() {
                "euid 0 with every capability".to_owned()
            } else {
                format!("euid 0; effective set lacks {}", missing.join(", "))
            };
            if needed_missing { Capability::no(NAME, detail) } else { Capability::yes(NAME, detail) }
        }
        (Ok(0), Err(e)) => Capability::no(NAME, format!("euid 0, but capget failed: {e}")),
        (Ok(euid), _) => Capability::no(NAME, format!("euid {euid}: wardd must run as root to jail compartments")),
        (Err(e), _) => Capability::no(NAME, format!("cannot read the identity: {e}")),
    }
}

/// `/dev/kvm`: present, a character device, and openable read-write.
fn kvm() -> Capability {
    const NAME: &str = "/dev/kvm";
    match std::fs::metadata("/dev/kvm") {
        Err(e) => Capability::no(NAME, format!("missing: {e} (KVM not enabled, or no kvm module loaded)")),
        Ok(m) if !m.file_type().is_char_device() => Capability::no(NAME, "exists but is not a character device"),
        Ok(_) => match sys::can_open_rw(c"/dev/kvm") {
            Ok(()) => Capability::yes(NAME, "opens read-write"),
            Err(e) => Capability::no(NAME, format!("cannot be opened read-write: {e}")),
        },
    }
}

/// A namespace kind: `unshare` in a child.
fn namespace(ns: Namespace) -> Capability {
    let flag = ns.flag();
    let call = format!("unshare({})", ns.flag_name());
    let ok = format!("{call} works");
    probed(ns.name(), ok, &[call.as_str()], || sys::unshare(flag).map_err(|e| Failure::of(1, &e)))
}

/// The private root, exactly as `enter` makes it (see `root`).
fn private_root() -> Capability {
    const NAME: &str = "pivot_root into tmpfs";
    let dir = super::root::DEFAULT_ROOT_DIR;
    let Ok(dir_c) = CString::new(dir) else {
        return Capability::no(NAME, "bad directory name");
    };
    let steps = [
        "unshare(CLONE_NEWNS)",
        "mount(\"/\", MS_REC|MS_PRIVATE)",
        "mount(tmpfs on /tmp)",
        "chdir(/tmp)",
        "pivot_root(\".\", \".\")",
        "umount2(old root, MNT_DETACH)",
    ];
    probed(NAME, format!("a tmpfs on {dir} becomes the root; the old root detaches"), &steps, || {
        sys::unshare(libc::CLONE_NEWNS).map_err(|e| Failure::of(1, &e))?;
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(|e| Failure::of(2, &e))?;
        sys::mount(Some(c"ward-probe"), &dir_c, Some(c"tmpfs"), 0, Some(c"size=16k"))
            .map_err(|e| Failure::of(3, &e))?;
        sys::chdir(&dir_c).map_err(|e| Failure::of(4, &e))?;
        sys::pivot_root(c".", c".").map_err(|e| Failure::of(5, &e))?;
        sys::umount2(c".", libc::MNT_DETACH).map_err(|e| Failure::of(6, &e))
    })
}

/// The uid drop to the compartment identity, and no way back.
fn identity_drop() -> Capability {
    const NAME: &str = "setresuid to unprivileged";
    let (uid, gid) = compartment_identity();
    let steps = ["setgroups([])", "setresgid", "setresuid", "setuid(0) after the drop"];
    probed(NAME, format!("uid {uid}, gid {gid}; setuid(0) then fails"), &steps, || {
        sys::clear_groups().map_err(|e| Failure::of(1, &e))?;
        sys::setresgid(gid).map_err(|e| Failure::of(2, &e))?;
        sys::setresuid(uid).map_err(|e| Failure::of(3, &e))?;
        match sys::setuid(0) {
            Ok(()) => Err(Failure { step: 4, errno: 0 }),
            Err(_) => Ok(()),
        }
    })
}

/// `PR_SET_NO_NEW_PRIVS`, read back.
fn no_new_privs() -> Capability {
    const NAME: &str = "no_new_privs";
    let steps = ["prctl(PR_SET_NO_NEW_PRIVS)", "prctl(PR_GET_NO_NEW_PRIVS) reads 1"];
    probed(NAME, "PR_SET_NO_NEW_PRIVS sticks", &steps, || {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| Failure::of(1, &e))?;
        match sys::prctl(libc::PR_GET_NO_NEW_PRIVS, 0) {
            Ok(1) => Ok(()),
            Ok(_) => Err(Failure { step: 2, errno: libc::EINVAL }),
            Err(e) => Err(Failure::of(2, &e)),
        }
    })
}

/// Cgroup v2, and where each controller would come from.
fn cgroups() -> Vec<Capability> {
    let host = match CgroupHost::detect() {
        Ok(host) => host,
        Err(e) => {
            let mut caps = vec![Capability::no("cgroup v2", e.to_string())];
            caps.extend(Controller::ALL.map(|c| Capability::no(c.measure_name(), "cgroups could not be read")));
            return caps;
        }
    };
    let mut caps = vec![match &host.v2 {
        Some((mount, controllers)) => {
            let hybrid = if host.v1.is_empty() { "" } else { "; cgroup v1 hierarchies mounted too (hybrid layout)" };
            Capability::yes(
                "cgroup v2",
                format!(
                    "mounted at {}; controllers offered: {}{hybrid}",
                    mount.display(),
                    none_if_empty(&controllers.join(" "))
                ),
            )
        }
        None if host.v1.is_empty() => Capability::no("cgroup v2", "no cgroup file system is mounted"),
        None => Capability::no("cgroup v2", "not mounted; only cgroup v1 hierarchies"),
    }];
    for c in Controller::ALL {
        caps.push(match host.support(c) {
            ControllerSupport::V2(mount) => {
                let enabled = std::fs::read_to_string(mount.join("cgroup.subtree_control"))
                    .is_ok_and(|t| t.split_whitespace().any(|x| x == c.name()));
                let state = if enabled { "already enabled" } else { "wardd enables it" };
                Capability::yes(c.measure_name(), format!("cgroup v2 at {} ({state} for children)", mount.display()))
            }
            ControllerSupport::V1(mount) => Capability::yes(
                c.measure_name(),
                format!("cgroup v1 at {} (not in cgroup v2 on this host: the v1 fallback is used)", mount.display()),
            ),
            ControllerSupport::Missing(reason) => Capability::no(c.measure_name(), reason),
        });
    }
    caps
}

/// `(none)` for an empty list.
fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

/// Seccomp filters, and this process's own seccomp mode.
fn seccomp() -> Capability {
    const NAME: &str = "seccomp";
    let own = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_owned())))
        .map_or_else(|| "unknown".to_owned(), |mode| mode_name(&mode));
    match sys::prctl(libc::PR_GET_SECCOMP, 0) {
        Err(e) => Capability::no(NAME, format!("prctl(PR_GET_SECCOMP) failed: {e} (kernel without CONFIG_SECCOMP)")),
        Ok(_) => match sys::seccomp_filters_available() {
            Ok(()) => {
                Capability::yes(NAME, format!("filters with SECCOMP_RET_KILL_PROCESS supported; this process: {own}"))
            }
            Err(e) => Capability::no(
                NAME,
                format!("seccomp(SECCOMP_GET_ACTION_AVAIL, KILL_PROCESS) failed: {e}; this process: {own}"),
            ),
        },
    }
}

/// `/proc/self/status`'s `Seccomp:` value in words.
fn mode_name(mode: &str) -> String {
    match mode {
        "0" => "mode 0 (no filter)".to_owned(),
        "1" => "mode 1 (strict)".to_owned(),
        "2" => "mode 2 (filtered)".to_owned(),
        other => format!("mode {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_one_line_per_capability_and_a_total() {
        let caps = [Capability::yes("/dev/kvm", "opens read-write"), Capability::no("cgroup memory", "nowhere")];
        let text = render_doctor(&caps);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("yes  /dev/kvm"));
        assert!(lines[1].starts_with("NO   cgroup memory  nowhere"));
        assert!(lines[2].starts_with("1 of 2 available"));
    }

    #[test]
    fn failure_text_names_the_step_and_errno() {
        let t = failure_text(Failure { step: 2, errno: libc::EPERM }, &["a", "mount(x)"]);
        assert!(t.starts_with("mount(x) failed: "), "{t}");
        assert!(t.contains("not permitted"), "{t}");
        assert_eq!(failure_text(Failure { step: 1, errno: 0 }, &["setuid(0)"]), "setuid(0) succeeded but must not");
        assert_eq!(failure_text(Failure { step: 9, errno: 0 }, &[]), "a step succeeded but must not");
    }

    #[test]
    fn needed_caps_are_named() {
        assert!(NEEDED_CAPS.iter().all(|&i| i < CAP_NAMES.len()));
        assert_eq!(CAP_NAMES[21], "CAP_SYS_ADMIN");
        assert_eq!(CAP_NAMES[24], "CAP_SYS_RESOURCE");
    }
}
