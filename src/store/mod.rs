//! The content-addressed store: immutable objects named by derivation key, each an output set
//! plus a manifest, written atomically so a reader never sees half an object.
//!
//! One trait ([`Store`]) is the service boundary; [`local::LocalStore`] is the on-disk backend
//! and [`memory::MemoryStore`] an in-process one. `tests` holds one conformance suite that runs
//! against both.

pub mod local;
pub mod memory;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::derivation::{DrvInputs, Effect, StepId};
use crate::digest::Digest;

/// On-disk layout version; part of every path (`store/v1/...`).
pub const LAYOUT_VERSION: u32 = 1;

/// One output of a realised derivation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputInfo {
    /// Hash of the plaintext content (object domain): the output's identity.
    pub hash: Digest,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Stored age-encrypted (the stored bytes are ciphertext).
    pub encrypted: bool,
    /// Hash of the bytes as stored, for `store verify` without decrypting.
    pub stored_hash: Digest,
    /// Whether bytes are stored at all (the secrets bundle records only its identity).
    pub stored: bool,
}

/// What an object records about its realisation. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout: u32,
    pub key: Digest,
    pub step: StepId,
    pub profile: String,
    pub effect: Effect,
    pub inputs: DrvInputs,
    pub outputs: BTreeMap<String, OutputInfo>,
    /// RFC 3339 UTC time of the realisation.
    pub created: String,
    pub duration_ms: u64,
}

impl Manifest {
    /// The output hashes by name (what dependants hash).
    pub fn output_hashes(&self) -> BTreeMap<String, Digest> {
        self.outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.hash))
            .collect()
    }
}

/// Store failures. I/O errors carry their path (fs_err).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt store object {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("no output {output:?} in store object {key}")]
    MissingOutput { key: Digest, output: String },
    #[error("the store {path} is locked by another talix process")]
    Locked { path: String },
    #[error("store {path} has layout {found}, this talix reads layout {LAYOUT_VERSION}")]
    Layout { path: String, found: String },
}

/// An exclusive writer lock; released on drop.
pub trait WriteLock: Send {}

/// The store service boundary.
///
/// Invariants every backend keeps (the conformance suite checks them):
/// - `put` is atomic: after it returns, `manifest(key)` and every output are readable; if it
///   fails or the process dies, the object is absent, never partial.
/// - objects are immutable: a second `put` of an existing key leaves the first one in place.
/// - `stored bytes` are returned exactly as put (ciphertext stays ciphertext).
/// - refs (the last realisation of a step for a profile) are replaced atomically.
pub trait Store: Send + Sync {
    fn manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError>;
    fn read_output(&self, key: &Digest, output: &str) -> Result<Vec<u8>, StoreError>;
    fn put(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), StoreError>;
    fn set_ref(&self, profile: &str, step: &StepId, key: &Digest) -> Result<(), StoreError>;
    fn get_ref(&self, profile: &str, step: &StepId) -> Result<Option<Digest>, StoreError>;
    /// Take the exclusive writer lock, waiting for another writer if `wait`.
    fn lock(&self, wait: bool) -> Result<Box<dyn WriteLock>, StoreError>;
    /// All object keys.
    fn keys(&self) -> Result<Vec<Digest>, StoreError>;
}

/// Compute [`OutputInfo`] for plaintext `content` stored as `stored`.
pub fn output_info(content: &[u8], stored: &[u8], encrypted: bool) -> OutputInfo {
    use crate::digest::domain;
    OutputInfo {
        hash: Digest::of_domain(domain::OBJECT, content),
        size: content.len() as u64,
        encrypted,
        stored_hash: Digest::of_domain(domain::OBJECT, stored),
        stored: true,
    }
}

/// RFC 3339 "now" for manifests and the lock file.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
pub(crate) mod conformance {
    //! One suite, every backend.
    use super::*;
    use crate::derivation::{InputValue, KEY_FORMAT};

    pub fn manifest_for(
        step: &str,
        value: &str,
        outputs: &[(&str, &[u8])],
    ) -> (Manifest, BTreeMap<String, Vec<u8>>) {
        let inputs = DrvInputs {
            format: KEY_FORMAT.into(),
            kind: step.split('/').next().unwrap().into(),
            schema: 1,
            values: [("v".to_string(), InputValue::of(value))].into(),
            deps: BTreeMap::new(),
            tools: BTreeMap::new(),
        };
        let manifest = Manifest {
            layout: LAYOUT_VERSION,
            key: inputs.key(),
            step: StepId(step.into()),
            profile: "test".into(),
            effect: Effect::Pure,
            inputs,
            outputs: outputs
                .iter()
                .map(|(n, c)| (n.to_string(), output_info(c, c, false)))
                .collect(),
            created: now_rfc3339(),
            duration_ms: 1,
        };
        (
            manifest,
            outputs
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_vec()))
                .collect(),
        )
    }

    pub fn run_all(store: &dyn Store) {
        put_then_get(store);
        put_is_immutable(store);
        refs_replace(store);
        missing_is_none(store);
        lock_excludes_second_writer(store);
    }

    fn put_then_get(store: &dyn Store) {
        let (m, out) = manifest_for("patch/cp1", "a", &[("patch", b"machine: {}\n")]);
        store.put(&m, &out).unwrap();
        assert_eq!(store.manifest(&m.key).unwrap().as_ref(), Some(&m));
        assert_eq!(
            store.read_output(&m.key, "patch").unwrap(),
            b"machine: {}\n"
        );
        assert!(store.keys().unwrap().contains(&m.key));
        assert!(matches!(
            store.read_output(&m.key, "nope"),
            Err(StoreError::MissingOutput { .. })
        ));
    }

    fn put_is_immutable(store: &dyn Store) {
        let (m, out) = manifest_for("patch/cp2", "b", &[("patch", b"first")]);
        store.put(&m, &out).unwrap();
        let (mut m2, _) = manifest_for("patch/cp2", "b", &[("patch", b"second")]);
        m2.key = m.key;
        store
            .put(&m2, &[("patch".to_string(), b"second".to_vec())].into())
            .unwrap();
        assert_eq!(store.read_output(&m.key, "patch").unwrap(), b"first");
    }

    fn refs_replace(store: &dyn Store) {
        let step = StepId("render/w1".into());
        let (a, _) = manifest_for("render/w1", "1", &[]);
        let (b, _) = manifest_for("render/w1", "2", &[]);
        assert_eq!(store.get_ref("p", &step).unwrap(), None);
        store.set_ref("p", &step, &a.key).unwrap();
        store.set_ref("p", &step, &b.key).unwrap();
        assert_eq!(store.get_ref("p", &step).unwrap(), Some(b.key));
        assert_eq!(store.get_ref("other", &step).unwrap(), None);
    }

    fn missing_is_none(store: &dyn Store) {
        let (m, _) = manifest_for("x", "never stored", &[]);
        assert_eq!(store.manifest(&m.key).unwrap(), None);
    }

    fn lock_excludes_second_writer(store: &dyn Store) {
        let held = store.lock(false).unwrap();
        assert!(matches!(store.lock(false), Err(StoreError::Locked { .. })));
        drop(held);
        let again = store.lock(false);
        assert!(again.is_ok(), "lock must be free again after drop");
    }
}
