//! The daemon's durable state, in sled: every compartment's record and an
//! append-only audit log.
//!
//! Every change is flushed before the daemon acts on it or answers, so a
//! daemon killed at any moment (even `kill -9`) finds, on restart, each
//! compartment as it last said it was, and the audit log up to its last
//! line.

use serde::{Deserialize, Serialize};

use super::proto::State;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Exit code of its last run (`None`: killed or crashed without one).
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

    /// Appends an audit line: `<unix ms> <event> <compartment> <detail>`.
    pub fn audit(&self, event: &str, name: &str, detail: &str) -> Result<(), StoreError> {
        let id = self.db.generate_id()?;
        let line = format!("{} {event} {name} {detail}", now_ms());
        self.audit.insert(id.to_be_bytes(), line.trim_end().as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The last `limit` audit lines, oldest first.
    pub fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut lines: Vec<String> = self
            .audit
            .iter()
            .rev()
            .take(limit)
            .map(|entry| entry.map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
            .collect::<Result<_, _>>()?;
        lines.reverse();
        Ok(lines)
    }
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
        }
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
        let audit = store.audit_tail(10).unwrap();
        assert_eq!(audit.len(), 2);
        assert!(
            audit[0].ends_with("create mail image hello") && audit[1].ends_with("start mail pid 1234"),
            "{audit:?}"
        );
        store.remove("vault").unwrap();
        assert_eq!(store.get("vault").unwrap(), None);
        std::fs::remove_dir_all(d).unwrap();
    }
}
