//! The unprivileged identity the VMM runs as, and the one-way drop to it.
//!
//! **Default identity: `nobody`.** `compartment_identity` returns the uid
//! and primary gid of `nobody` from `/etc/passwd` (65534/65534 on Debian),
//! or 65534/65534 if there is no such entry. It owns no files, so a VMM
//! running as it can open nothing that is not world-accessible, and in its
//! private, empty root there is nothing at all.
//!
//! **Why a dedicated uid per compartment would be better (not implemented
//! here).** Every compartment as `nobody` shares one uid, so:
//! - `RLIMIT_NPROC` counts the tasks of the uid across the whole host, not
//!   per compartment (hence `JailLimits::processes` is a host-wide cap and
//!   the per-compartment thread limit is the cgroup's `pids.max`);
//! - per-uid kernel objects (the user keyring, inotify and fanotify
//!   per-user limits, `RLIMIT_MSGQUEUE`/`RLIMIT_SIGPENDING` accounting) are
//!   shared by all compartments, and one can exhaust them for the others;
//! - two compartments could signal each other if they could name each
//!   other's pids: today the PID namespace prevents that, a separate uid
//!   would prevent it without relying on it.
//!
//! A dedicated uid needs no file ownership (the VMM opens everything as
//! root before dropping), only an allocator in `wardd`: a range of uids
//! unused on the host (none in `/etc/passwd`, none in `/etc/subuid`),
//! one slot per running compartment, recorded in its state so a restarted
//! daemon reuses it. The jail takes any uid/gid in `JailSpec`, so that is
//! a change in the daemon only.
//!
//! **The drop** (`drop_privileges`), after everything that needs root:
//! clear ambient capabilities and drop the bounding set (nothing regained
//! by `execve`), `setgroups([])`, `setresgid`, `setresuid` (real, effective
//! and saved: no way back), `PR_SET_NO_NEW_PRIVS`, not dumpable; then it
//! checks: all three uids and gids are the target, no supplementary groups,
//! no capability left, `setuid(0)` and `setgid(0)` fail.

use super::error::JailError;
use super::report::{JailReport, Measure};
use super::sys;

/// The uid and gid of `nobody` when `/etc/passwd` does not say.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// The unprivileged uid and gid compartments run as by default: those of
/// `nobody` in `/etc/passwd`, else 65534/65534.
pub fn compartment_identity() -> (u32, u32) {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| passwd_entry(&text, "nobody"))
        .filter(|&(uid, gid)| uid != 0 && gid != 0)
        .unwrap_or(NOBODY)
}

/// The uid and primary gid of `user` in a `passwd(5)` file.
pub(super) fn passwd_entry(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Drops to `uid`/`gid` for good, then checks that root cannot be regained.
/// The parent-death signal, which the kernel clears when the uid changes,
/// is set again.
pub(super) fn drop_privileges(uid: u32, gid: u32, report: &mut JailReport) -> Result<(), JailError> {
    let death_signal = sys::parent_death_signal().unwrap_or(0);

    // Capabilities first, while we still may change them. Best effort: the
    // uid change below clears the effective and permitted sets anyway; these
    // only close the ways back through `execve`, which no_new_privs closes too.
    match sys::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong) {
        Ok(_) => report.push(Measure::applied("ambient caps", "cleared")),
        Err(e) => report.push(Measure::missing("ambient caps", format!("PR_CAP_AMBIENT_CLEAR_ALL failed: {e}"))),
    }
    report.push(drop_bounding_set());

    sys::clear_groups().map_err(|e| JailError::syscall("setgroups([])", e))?;
    sys::setresgid(gid).map_err(|e| JailError::syscall(format!("setresgid({gid}, {gid}, {gid})"), e))?;
    sys::setresuid(uid).map_err(|e| JailError::syscall(format!("setresuid({uid}, {uid}, {uid})"), e))?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| JailError::syscall("prctl(PR_SET_NO_NEW_PRIVS, 1)", e))?;
    // No core dumps, no ptrace by other processes of the same uid, /proc
    // files owned by root. The uid change already did it; said explicitly.
    sys::prctl(libc::PR_SET_DUMPABLE, 0).map_err(|e| JailError::syscall("prctl(PR_SET_DUMPABLE, 0)", e))?;
    if death_signal != 0 {
        let signal = libc::c_ulong::try_from(death_signal).unwrap_or(0);
        sys::prctl(libc::PR_SET_PDEATHSIG, signal)
            .map_err(|e| JailError::syscall(format!("prctl(PR_SET_PDEATHSIG, {death_signal})"), e))?;
    }

    verify(uid, gid)?;
    report.push(Measure::applied(
        "identity",
        format!("uid {uid}, gid {gid}, no supplementary groups, no capabilities; setuid(0) fails"),
    ));
    report.push(Measure::applied("no_new_privs", "PR_SET_NO_NEW_PRIVS set; not dumpable"));
    Ok(())
}

/// Drops every capability from the bounding set (needs `CAP_SETPCAP`,
/// hence before the uid change), up to the first number the kernel does
/// not know.
fn drop_bounding_set() -> Measure {
    const NAME: &str = "bounding set";
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 => {
                return Measure::applied(NAME, format!("capabilities 0..{cap} dropped"));
            }
            Err(e) => return Measure::missing(NAME, format!("prctl(PR_CAPBSET_DROP, {cap}) failed: {e}")),
        }
    }
    Measure::applied(NAME, "capabilities 0..64 dropped")
}

/// Checks the drop from the inside: the identity is the target's on all
/// counts, and root cannot be regained.
fn verify(uid: u32, gid: u32) -> Result<(), JailError> {
    let kept = |what: String| Err(JailError::PrivilegesKept(what));
    let uids = sys::getresuid().map_err(|e| JailError::syscall("getresuid", e))?;
    if uids != [uid; 3] {
        return kept(format!("uids are {uids:?}, expected {uid} for all three"));
    }
    let gids = sys::getresgid().map_err(|e| JailError::syscall("getresgid", e))?;
    if gids != [gid; 3] {
        return kept(format!("gids are {gids:?}, expected {gid} for all three"));
    }
    match sys::group_count() {
        Ok(0) => {}
        Ok(n) => return kept(format!("{n} supplementary groups left")),
        Err(e) => return Err(JailError::syscall("getgroups", e)),
    }
    let caps = sys::capget().map_err(|e| JailError::syscall("capget", e))?;
    if caps.effective != 0 || caps.permitted != 0 || caps.inheritable != 0 {
        return kept(format!(
            "capabilities left: effective {:#x}, permitted {:#x}, inheritable {:#x}",
            caps.effective, caps.permitted, caps.inheritable
        ));
    }
    if sys::setuid(0).is_ok() {
        return kept("setuid(0) succeeded".to_owned());
    }
    if sys::setgid(0).is_ok() {
        return kept("setgid(0) succeeded".to_owned());
    }
    match sys::prctl(libc::PR_GET_NO_NEW_PRIVS, 0) {
        Ok(1) => Ok(()),
        Ok(v) => kept(format!("PR_GET_NO_NEW_PRIVS is {v}")),
        Err(e) => Err(JailError::syscall("prctl(PR_GET_NO_NEW_PRIVS)", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn passwd_entry_finds_uid_and_gid() {
        assert_eq!(passwd_entry(PASSWD, "nobody"), Some((65534, 65534)));
        assert_eq!(passwd_entry(PASSWD, "daemon"), Some((1, 1)));
    }

    #[test]
    fn passwd_entry_missing_user_is_none() {
        assert_eq!(passwd_entry(PASSWD, "ward"), None);
        assert_eq!(passwd_entry("", "nobody"), None);
    }

    #[test]
    fn passwd_entry_malformed_line_is_none() {
        assert_eq!(passwd_entry("nobody:x:notanumber:65534:::\n", "nobody"), None);
        assert_eq!(passwd_entry("nobody:x\n", "nobody"), None);
    }

    #[test]
    fn passwd_entry_does_not_match_a_prefix() {
        assert_eq!(passwd_entry("nobodyelse:x:5:5:::\n", "nobody"), None);
    }

    #[test]
    fn compartment_identity_is_not_root() {
        let (uid, gid) = compartment_identity();
        assert_ne!(uid, 0);
        assert_ne!(gid, 0);
    }
}
