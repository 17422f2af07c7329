//! The daemon's durable state, in sled: every compartment's record and an
//! append-only audit log.
//!
//! Every change is flushed before the daemon acts on it or answers, so a
//! daemon killed at any moment (even `kill -9`) finds, on restart, each
//! compartment as it last said it was, and the audit log up to its last
//! line.

use serde::{Deserialize, Serialize};

use super::proto::{AuditEntry, State};
use crate::grant::DiskRequest;

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    /// A record did not decode (a newer daemon's, or damage).
    #[error("state store: record {key:?} does not decode: {source}")]
    Decode {
        /// Its key.
        key: String,
        /// The error.
        source: serde_json::Error,
    },
}

/// What happens when a compartment's VMM ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Nothing.
    Never,
    /// Start it again if it failed (non-zero exit or crash), with backoff.
    OnFailure,
    /// Start it again, with backoff.
    Always,
}

/// Everything the daemon keeps about a compartment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Name.
    pub name: String,
    /// Role, from the policy.
    pub role: String,
    /// Image it boots.
    pub image: String,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// Restart policy.
    pub restart: Restart,
    /// Removed with its state when it stops.
    pub disposable: bool,
    /// Lifecycle state.
    pub state: State,
    /// VMM pid while running.
    pub pid: Option<u32>,
    /// Unix time (ms) it last started.
    pub started_at_ms: Option<u64>,
    /// Exit code of its last run as a shell shows it: the guest's own if
    /// it powered off, else its VMM's (125: crashed, 128 + N: ended by
    /// signal N, so 137 when killed). `None`: a VMM adopted after a daemon
    /// restart that ended without saying how.
    pub exit_code: Option<i32>,
    /// Restarts so far.
    pub restarts: u32,
    /// Consecutive failed runs (for backoff).
    pub failures: u32,
    /// Unix time (ms) before which it is not restarted.
    pub restart_at_ms: Option<u64>,
    /// Unix time (ms) it was created.
    pub created_at_ms: u64,
    /// Unix time (ms) its last run ended.
    #[serde(default)]
    pub ended_at_ms: Option<u64>,
    /// Devices the policy granted: a virtio console, an entropy device.
    #[serde(default)]
    pub devices: Granted,
    /// Host files attached as disks, in order (checked against the
    /// policy's volumes when it was created).
    #[serde(default)]
    pub disks: Vec<DiskRequest>,
    /// The uid (and gid) its jailed VMM runs as: its own, so compartments
    /// share no identity and each has its own task limit. Given at the
    /// first start.
    #[serde(default)]
    pub uid: Option<u32>,
    /// While stopping: Unix time (ms) after which its VMM is killed. Kept
    /// in the record so a stop outlives the daemon that began it.
    #[serde(default)]
    pub stop_deadline_ms: Option<u64>,
    /// How its last run ended, in words (the VMM's exit record, or what
    /// the daemon saw).
    #[serde(default)]
    pub exit_reason: Option<String>,
}

/// Devices the policy granted a compartment (its disks are in
/// [`Record::disks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// A virtio console.
    pub console: bool,
    /// A virtio entropy device.
    pub rng: bool,
    /// A vsock device: IPC with other compartments through the router.
    #[serde(default)]
    pub vsock: bool,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    compartments: sled::Tree,
    audit: sled::Tree,
}

/// Unix time now, in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        let db = sled::open(dir)?;
        Ok(Self { compartments: db.open_tree("compartments")?, audit: db.open_tree("audit")?, db })
    }

    /// A compartment's record.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        self.compartments.get(name)?.map(|bytes| decode(name, &bytes)).transpose()
    }

    /// Saves a record, durably.
    pub fn put(&self, record: &Record) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(record).map_err(|source| StoreError::Decode { key: record.name.clone(), source })?;
        self.compartments.insert(record.name.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets a record, durably.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.compartments.remove(name)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every record, by name.
    pub fn all(&self) -> Result<Vec<Record>, StoreError> {
        self.compartments
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                decode(&String::from_utf8_lossy(&key), &bytes)
            })
            .collect()
    }

    /// Appends an audit entry about compartment `name` (none if empty or
    /// `-`).
    pub fn audit(&self, kind: &str, name: &str, detail: &str) -> Result<(), StoreError> {
        let name = Some(name).filter(|n| !n.is_empty() && *n != "-");
        self.audit_between(kind, name, None, detail)
    }

    /// Appends an audit entry about `name` and, for a call between two
    /// compartments, its `peer`.
    pub fn audit_between(
        &self,
        kind: &str,
        name: Option<&str>,
        peer: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        let entry = AuditEntry {
            id,
            at_ms: now_ms(),
            kind: kind.to_owned(),
            compartment: name.map(str::to_owned),
            peer: peer.map(str::to_owned),
            detail: detail.trim_end().to_owned(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|source| StoreError::Decode { key: kind.to_owned(), source })?;
        self.audit.insert(id.to_be_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// The last `limit` audit entries that `keep` says to, oldest first.
    pub fn audit_tail(&self, limit: usize, keep: impl Fn(&AuditEntry) -> bool) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        for item in self.audit.iter().rev() {
            if entries.len() >= limit {
                break;
            }
            let (key, bytes) = item?;
            let entry = audit_entry(&key, &bytes);
            if keep(&entry) {
                entries.push(entry);
            }
        }
        entries.reverse();
        Ok(entries)
    }

    /// Every audit entry written after entry `id`, oldest first.
    pub fn audit_after(&self, id: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let from = id.saturating_add(1).to_be_bytes();
        self.audit
            .range(from..)
            .map(|item| item.map(|(key, bytes)| audit_entry(&key, &bytes)).map_err(Into::into))
            .collect()
    }

    /// The id of the newest audit entry (0 if there is none).
    pub fn audit_last_id(&self) -> Result<u64, StoreError> {
        Ok(self.audit.last()?.map_or(0, |(key, _)| key_id(&key)))
    }
}

fn key_id(key: &[u8]) -> u64 {
    key.try_into().map_or(0, u64::from_be_bytes)
}

/// An audit entry as stored: JSON, or a line of a daemon before protocol
/// version 2 (`<unix ms> <kind> <compartment> <detail>`), kept readable.
fn audit_entry(key: &[u8], bytes: &[u8]) -> AuditEntry {
    let id = key_id(key);
    if let Ok(entry) = serde_json::from_slice::<AuditEntry>(bytes) {
        return AuditEntry { id, ..entry };
    }
    let line = String::from_utf8_lossy(bytes);
    let mut words = line.splitn(4, ' ');
    let at_ms = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let kind = words.next().unwrap_or_default().to_owned();
    let compartment = words.next().filter(|n| !n.is_empty() && *n != "-").map(str::to_owned);
    AuditEntry { id, at_ms, kind, compartment, peer: None, detail: words.next().unwrap_or_default().to_owned() }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { key: key.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Record {
        Record {
            name: name.into(),
            role: "app".into(),
            image: "hello".into(),
            memory_mib: 32,
            cmdline: String::new(),
            restart: Restart::Never,
            disposable: false,
            state: State::Created,
            pid: None,
            started_at_ms: None,
            exit_code: None,
            restarts: 0,
            failures: 0,
            restart_at_ms: None,
            created_at_ms: now_ms(),
            ended_at_ms: None,
            devices: Granted::default(),
            disks: Vec::new(),
            uid: None,
            stop_deadline_ms: None,
            exit_reason: None,
        }
    }

    #[test]
    fn audit_lines_of_an_older_daemon_stay_readable() {
        let d = dir("old-audit");
        let store = Store::open(&d).unwrap();
        store.audit.insert(7u64.to_be_bytes(), &b"1764806400000 exit mail powered off with exit code 0"[..]).unwrap();
        store.audit.insert(8u64.to_be_bytes(), &b"1764806400001 ipc-router - started (generation 1)"[..]).unwrap();
        let audit = store.audit_tail(10, |_| true).unwrap();
        assert_eq!(
            (audit[0].id, audit[0].at_ms, audit[0].kind.as_str(), audit[0].compartment.as_deref()),
            (7, 1_764_806_400_000, "exit", Some("mail"))
        );
        assert_eq!(audit[0].detail, "powered off with exit code 0");
        assert_eq!((audit[1].compartment.as_deref(), audit[1].detail.as_str()), (None, "started (generation 1)"));
        drop(store);
        std::fs::remove_dir_all(d).unwrap();
    }

    fn dir(test: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ward-store-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_and_audit_survive_reopening() {
        let d = dir("reopen");
        {
            let store = Store::open(&d).unwrap();
            let mut r = record("mail");
            r.state = State::Running;
            r.pid = Some(1234);
            store.put(&r).unwrap();
            store.put(&record("vault")).unwrap();
            store.audit("create", "mail", "image hello").unwrap();
            store.audit("start", "mail", "pid 1234").unwrap();
        }
        let store = Store::open(&d).unwrap();
        let names: Vec<String> = store.all().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["mail", "vault"]);
        assert_eq!(store.get("mail").unwrap().unwrap().pid, Some(1234));
        let audit = store.audit_tail(10, |_| true).unwrap();
        let said: Vec<(&str, Option<&str>, &str)> =
            audit.iter().map(|e| (e.kind.as_str(), e.compartment.as_deref(), e.detail.as_str())).collect();
        assert_eq!(said, [("create", Some("mail"), "image hello"), ("start", Some("mail"), "pid 1234")]);
        assert!(audit[0].id < audit[1].id && audit[0].at_ms <= audit[1].at_ms);
        assert_eq!(store.audit_after(audit[0].id).unwrap(), audit[1..]);
        assert_eq!(store.audit_last_id().unwrap(), audit[1].id);
        assert_eq!(store.audit_tail(10, |e| e.kind == "start").unwrap(), audit[1..]);
        store.remove("vault").unwrap();
        assert_eq!(store.get("vault").unwrap(), None);
        std::fs::remove_dir_all(d).unwrap();
    }
}
