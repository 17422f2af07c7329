//! A daemon's share of what is unique per host, not per daemon: the uids
//! its compartments and its router run as, and the names of their cgroups.
//!
//! Several wardds may run on one host (two users, the tests, peers of the
//! communication compartment on one machine). Each claims a *slot*: a
//! number `n` below [`SLOTS`], which gives it the uids `BASE + n·1000` to
//! `BASE + n·1000 + 999` (the first for its IPC router, the others for its
//! compartments, so CIDs are unique too) and the cgroup names `ward/n.NAME`
//! (`.` is not allowed in compartment names, so no two daemons' names
//! meet). The claim is a lock file `n.lock` in a host-wide directory
//! (`/run/ward/slots` as root), locked by the live daemon ([`LockFile`]).
//!
//! A daemon prefers the slot it had (recorded in its state directory as
//! `slot`), since compartments it adopts after a restart still run under
//! that slot's uids. A slot no live daemon holds is free unless processes
//! still run under its uids: then a daemon that died left compartments
//! running, and only that daemon (which prefers it) may take it back.
//! Compartments whose recorded uid lies outside the daemon's slot get a
//! new one at their next start.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ward_sandbox::lockfile::{LockError, LockFile};

/// The first uid (and gid) of slot 0. Far above login users (1000..) and
/// the usual subordinate-id ranges of user namespaces (100000 + 65536·n).
pub const UID_BASE: u32 = 2_100_000_000;
/// Uids per slot: the router's and 999 compartments'.
pub const SLOT_UIDS: u32 = 1000;
/// How many slots a host has: a million uids in all.
pub const SLOTS: u32 = 1000;

/// Claiming a slot failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The registry directory could not be made.
    #[error("slot registry {path}: {source}")]
    Registry {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A lock file could not be opened.
    #[error(transparent)]
    Lock(LockError),
    /// Every slot is held.
    #[error("all {SLOTS} wardd slots of this host are in use (registry {0})")]
    Full(PathBuf),
}

/// The slot this daemon holds (for as long as the value lives).
#[derive(Debug)]
pub struct Slot {
    number: u32,
    _lock: Option<LockFile>,
}

impl Slot {
    /// Claims a slot in `registry` for the daemon whose state is in
    /// `state_dir` (see the module documentation).
    pub fn claim(registry: &Path, state_dir: &Path) -> Result<Self, SlotError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(registry)
            .map_err(|source| SlotError::Registry { path: registry.to_owned(), source })?;
        let record = state_dir.join("slot");
        let preferred = std::fs::read_to_string(&record).ok().and_then(|t| t.trim().parse::<u32>().ok());
        let in_use = uids_in_use();
        let candidates =
            preferred.filter(|&n| n < SLOTS).into_iter().chain((0..SLOTS).filter(|&n| Some(n) != preferred));
        for number in candidates {
            let lock = match LockFile::try_lock(&registry.join(format!("{number}.lock"))) {
                Ok(lock) => lock,
                Err(LockError::Held { .. }) => continue,
                Err(e) => return Err(SlotError::Lock(e)),
            };
            let slot = Self { number, _lock: Some(lock) };
            if Some(number) != preferred && in_use.iter().any(|uid| slot.uids().contains(uid)) {
                continue; // a dead daemon's compartments still run
            }
            // Best effort: without the record the next start picks again.
            let _ = std::fs::write(&record, format!("{number}\n"));
            return Ok(slot);
        }
        Err(SlotError::Full(registry.to_owned()))
    }

    /// Slot `number` without a claim on it, for tests.
    #[cfg(test)]
    pub(crate) fn unclaimed(number: u32) -> Self {
        Self { number: number.min(SLOTS - 1), _lock: None }
    }

    /// The slot number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Every uid of the slot.
    pub fn uids(&self) -> Range<u32> {
        let first = UID_BASE + self.number * SLOT_UIDS;
        first..first + SLOT_UIDS
    }

    /// The uid (and gid) of the daemon's IPC router.
    pub fn router_uid(&self) -> u32 {
        self.uids().start
    }

    /// The uids the daemon's compartments may have.
    pub fn compartment_uids(&self) -> Range<u32> {
        let all = self.uids();
        all.start + 1..all.end
    }

    /// The cgroup name of the daemon's compartment (or router) `name`.
    pub fn cgroup(&self, name: &str) -> String {
        format!("{}.{name}", self.number)
    }

    /// The CID of the compartment whose uid is `uid` (unique per host, as
    /// the uid is).
    pub fn cid(uid: u32) -> u64 {
        ward_abi::vsock::FIRST_GUEST_CID + u64::from(uid.saturating_sub(UID_BASE))
    }
}

/// The real and effective uids of every process on the host.
fn uids_in_use() -> HashSet<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return HashSet::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .flat_map(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_owned();
            line.split_whitespace().skip(1).take(2).filter_map(|u| u.parse::<u32>().ok()).collect::<Vec<_>>()
        })
        .filter(|&uid| uid >= UID_BASE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_sandbox::testing::StandIn;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-slot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn two_daemons_get_different_slots_and_a_restarted_one_its_own() {
        let dir = scratch("two");
        let registry = dir.join("slots");
        let (a_state, b_state) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a_state).unwrap();
        std::fs::create_dir_all(&b_state).unwrap();
        // Daemon a is another process (record locks are per process).
        let a = StandIn::fork(|| {
            Slot::claim(&registry, &a_state).map_or(u32::MAX, |slot| {
                let number = slot.number();
                std::mem::forget(slot);
                number
            })
        });
        let a_number = a.report;
        assert!(a_number < SLOTS);
        let b = Slot::claim(&registry, &b_state).unwrap();
        assert_ne!(b.number(), a_number);
        let a_slot = Slot::unclaimed(a_number);
        assert!(a_slot.uids().end <= b.uids().start || b.uids().end <= a_slot.uids().start);
        assert_ne!(a_slot.cgroup("mail"), b.cgroup("mail"));
        drop(a);
        // A restarted daemon a takes its own slot back.
        drop(b);
        assert_eq!(Slot::claim(&registry, &a_state).unwrap().number(), a_number);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn slots_cover_the_uid_range_without_overlap() {
        let last = Slot::unclaimed(SLOTS - 1);
        assert_eq!(last.uids().end, UID_BASE + SLOTS * SLOT_UIDS);
        assert_eq!(Slot::unclaimed(1).uids().start, Slot::unclaimed(0).uids().end);
        assert_eq!(Slot::cid(Slot::unclaimed(0).router_uid()), ward_abi::vsock::FIRST_GUEST_CID);
        let slot = Slot::unclaimed(3);
        assert!(!slot.compartment_uids().contains(&slot.router_uid()));
        assert_eq!(slot.cgroup("mail"), "3.mail");
    }
}
