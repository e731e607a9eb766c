//! The lock file: machine-written facts that must survive a lost store and travel with the
//! profile in git (`profiles/<name>.lock`). Versions and hashes only, never a secret.
//!
//! - `contract`: the machine-config contract pinned at the first build; later `talos.version`
//!   bumps leave it alone (trap 5 of the runbook).
//! - `talosctl_version`: the talosctl that produced the pinned configs.
//! - `secrets`: the plaintext bundle hash (domain-separated blake3) and the ciphertext hash.
//! - `bootstrap`: which node bootstrapped etcd, when, with which secrets (never bootstrap twice).
//! - `nodes`: the config hash applied to each node, and when; how its maintenance address was
//!   found at the first apply (`matched_by: mac|count`, runbook step 5d).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::workspace::Workspace;

pub const LOCK_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsLock {
    /// Domain-separated blake3 of the plaintext bundle.
    pub bundle_hash: Digest,
    /// blake3 of the encrypted file as committed.
    pub ciphertext_hash: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapLock {
    pub node: String,
    pub at: String,
    pub secrets_hash: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLock {
    pub applied_config: Digest,
    /// The address the node was configured at (where a later re-apply must go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talos_version: Option<String>,
    /// The MAC its NIC was selected by when the profile names none (learned from the Proxmox
    /// API), so later offline builds select the same NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// How its maintenance-mode address was found at the first apply: `mac`, or `count` when
    /// runbook step 5d assigned it (no readable MAC). Absent in older lock files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<crate::discovery::MatchedBy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talosctl_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsLock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapLock>,
    /// The Kubernetes version the cluster was brought to (bootstrap or `upgrade-k8s`): a bump of
    /// more than one minor version from it is refused before anything changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeLock>,
    /// Side effects started but not yet recorded (write-ahead): a run killed between sending
    /// them and recording them leaves these, so the next run can tell from the cluster whether
    /// they happened instead of doing them twice.
    #[serde(default, skip_serializing_if = "Pending::is_empty")]
    pub pending: Pending,
}

/// See [`LockFile::pending`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The node `talosctl bootstrap` was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// First applies (from maintenance mode) sent, by node: the config hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applies: BTreeMap<String, Digest>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.bootstrap.is_none() && self.applies.is_empty()
    }
}

impl Default for LockFile {
    fn default() -> Self {
        Self {
            format: LOCK_FORMAT,
            contract: None,
            talosctl_version: None,
            secrets: None,
            bootstrap: None,
            kubernetes: None,
            nodes: BTreeMap::new(),
            pending: Pending::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockFileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{path}: not a talix lock file: {reason}\nhint: it is machine-written; restore it from git rather than editing it"
    )]
    Parse { path: PathBuf, reason: String },
    #[error(
        "{path}: lock file format {found} is newer than this talix understands ({LOCK_FORMAT})"
    )]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{path}: not written: it would lose {} recorded by another talix run\nhint: run the command again; it starts from what is recorded now",
        records.join(", ")
    )]
    WouldLose { path: PathBuf, records: Vec<String> },
    /// A save this change was waiting for (it shared another change's save) failed.
    #[error("{0}")]
    Save(String),
}

/// A lock file holds a few hashes per node; anything this big is not one.
const MAX_LOCK_FILE: u64 = 1 << 20;

/// Read the lock file: absent is `None`; it must be a regular file (not a FIFO or a device,
/// which would block or never end) of at most [`MAX_LOCK_FILE`] bytes.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, LockFileError> {
    use std::io::Read;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())).into());
        }
    };
    let bad = |reason: String| LockFileError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    fs_err::File::open(path)?
        .take(MAX_LOCK_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LOCK_FILE {
        return Err(bad(format!("larger than {} KiB", MAX_LOCK_FILE >> 10)));
    }
    Ok(Some(bytes))
}

const HEADER: &str = "# Machine-written by talix. Commit it beside the profile; do not edit.\n# It pins the config contract and records what was done to the cluster (hashes only).\n";

impl LockFile {
    /// Read the lock file; absent means "nothing recorded yet".
    pub fn load(path: &Path) -> Result<Self, LockFileError> {
        let Some(bytes) = read_bounded(path)? else {
            return Ok(Self::default());
        };
        let text = String::from_utf8_lossy(&bytes);
        // The format first, leniently: a newer talix's lock file is "too new", not "garbage".
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        if let Ok(FormatOnly { format }) = serde_saphyr::from_str::<FormatOnly>(&text)
            && format > LOCK_FORMAT
        {
            return Err(LockFileError::Format {
                path: path.to_path_buf(),
                found: format,
            });
        }
        serde_saphyr::from_str(&text).map_err(|e| LockFileError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string().lines().next().unwrap_or_default().to_string(),
        })
    }

    /// Write the workspace's lock file atomically (temp in the workspace scratch + rename).
    /// Callers hold the workspace lock ([`Workspace::lock`]) from before they loaded `self`, so
    /// this read-modify-write never loses a record another run wrote.
    ///
    /// As a last line of defence, a save that would drop a record the file on disk holds (the
    /// bootstrap, a node) is refused: records are only ever added or updated.
    pub fn save(&self, ws: &Workspace) -> Result<(), LockFileError> {
        let path = ws.lock_file();
        if let Ok(current) = Self::load(path) {
            let mut lost = Vec::new();
            if current.bootstrap.is_some() && current.bootstrap != self.bootstrap {
                lost.push("the bootstrap record".to_string());
            }
            lost.extend(
                current
                    .nodes
                    .keys()
                    .filter(|n| !self.nodes.contains_key(*n))
                    .map(|n| format!("the record of node {n}")),
            );
            if !lost.is_empty() {
                return Err(LockFileError::WouldLose {
                    path: path.to_path_buf(),
                    records: lost,
                });
            }
        }
        let body = serde_saphyr::to_string(self).map_err(|e| LockFileError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        ws.write_atomic(path, format!("{HEADER}{body}").as_bytes(), Some(0o644))?;
        Ok(())
    }

    /// Whether the lock file says a cluster exists (etcd was bootstrapped).
    pub fn cluster_exists(&self) -> bool {
        self.bootstrap.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, _) = Workspace::resolve(
            &dir.path().join("x.yaml"),
            "x",
            Default::default(),
            Default::default(),
        );
        let p = dir.path().join("x.lock");
        assert_eq!(LockFile::load(&p).unwrap(), LockFile::default());
        let mut lock = LockFile {
            contract: Some("v1.11".into()),
            ..Default::default()
        };
        lock.nodes.insert(
            "cp1".into(),
            NodeLock {
                applied_config: Digest::from_bytes([7; 32]),
                address: Some("10.0.0.11".into()),
                at: "2026-01-01T00:00:00Z".into(),
                talos_version: None,
                mac: None,
                matched_by: None,
            },
        );
        lock.save(&ws).unwrap();
        assert_eq!(LockFile::load(&p).unwrap(), lock);
        assert!(
            fs_err::read_to_string(&p)
                .unwrap()
                .starts_with("# Machine-written by talix")
        );
    }

    #[test]
    fn a_save_that_would_lose_a_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, _) = Workspace::resolve(
            &dir.path().join("x.yaml"),
            "x",
            Default::default(),
            Default::default(),
        );
        let stale = LockFile::default();
        let mut lock = LockFile {
            bootstrap: Some(BootstrapLock {
                node: "cp1".into(),
                at: "2026-01-01T00:00:00Z".into(),
                secrets_hash: Digest::from_bytes([1; 32]),
            }),
            ..Default::default()
        };
        lock.nodes.insert(
            "cp1".into(),
            NodeLock {
                applied_config: Digest::from_bytes([7; 32]),
                address: None,
                at: "2026-01-01T00:00:00Z".into(),
                talos_version: None,
                mac: None,
                matched_by: None,
            },
        );
        lock.save(&ws).unwrap();
        let e = stale.save(&ws).unwrap_err().to_string();
        assert!(
            e.contains("the bootstrap record") && e.contains("the record of node cp1"),
            "{e}"
        );
        assert_eq!(
            LockFile::load(ws.lock_file()).unwrap(),
            lock,
            "left as it was"
        );
        // Updating a record is fine.
        let mut newer = lock.clone();
        newer.nodes.get_mut("cp1").unwrap().applied_config = Digest::from_bytes([8; 32]);
        newer.save(&ws).unwrap();
    }

    #[test]
    fn matched_by_count_round_trips_and_older_entries_still_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let hash = Digest::from_bytes([7; 32]).to_string();
        // A node entry as talix wrote it before `matched_by` existed.
        fs_err::write(
            &p,
            format!("format: 1\nnodes:\n  cp1:\n    applied_config: {hash}\n    at: 2026-01-01T00:00:00Z\n"),
        )
        .unwrap();
        let old = LockFile::load(&p).unwrap();
        assert_eq!(old.nodes["cp1"].matched_by, None);
        fs_err::write(
            &p,
            format!("format: 1\nnodes:\n  cp1:\n    applied_config: {hash}\n    at: 2026-01-01T00:00:00Z\n    matched_by: count\n"),
        )
        .unwrap();
        let new = LockFile::load(&p).unwrap();
        assert_eq!(
            new.nodes["cp1"].matched_by,
            Some(crate::discovery::MatchedBy::Count)
        );
        fs_err::write(
            &p,
            format!("format: 1\nnodes:\n  cp1:\n    applied_config: {hash}\n    at: 2026-01-01T00:00:00Z\n    matched_by: guess\n"),
        )
        .unwrap();
        assert!(LockFile::load(&p).is_err());
    }

    #[test]
    fn a_newer_format_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        fs_err::write(&p, "format: 2\nsomething_new: true\n").unwrap();
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("lock file format 2 is newer than this talix understands (1)"),
            "{e}"
        );
    }

    #[test]
    fn a_fifo_or_a_huge_file_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let status = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(status.success());
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b'#'; (MAX_LOCK_FILE + 1) as usize]).unwrap();
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        fs_err::write(&p, "format: 1\nsurprise: true\n").unwrap();
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("not a talix lock file"), "{e}");
    }
}
