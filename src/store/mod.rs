//! The content-addressed store: immutable objects named by derivation key, each an output set
//! plus a manifest, written atomically so a reader never sees half an object.
//!
//! One trait ([`Store`]) is the service boundary; [`local::LocalStore`] is the on-disk backend
//! and [`memory::MemoryStore`] an in-process one. `tests` holds one conformance suite that runs
//! against both.

pub mod archive;
pub mod gc;
pub mod local;
pub mod memory;
pub mod overlay;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The object each dependency's outputs were read from, by step: the edges of the object's
    /// closure (what gc keeps alive with it). Not part of the key (`inputs.deps` holds the
    /// output hashes, which is what early cut-off needs); absent in manifests written before
    /// talix recorded it (gc then matches `inputs.deps` output hashes instead).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<StepId, Digest>,
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
    /// An object whose bytes do not match its manifest, or whose manifest does not belong to
    /// its key: never used, always named with the way out.
    #[error(
        "store object {key}{} is damaged: {reason}\nhint: run `talix store prune` to remove damaged objects, then run the command again",
        step.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    Damaged {
        key: Digest,
        step: Option<StepId>,
        reason: String,
    },
}

impl StoreError {
    fn damaged(key: &Digest, step: Option<&StepId>, reason: impl Into<String>) -> Self {
        StoreError::Damaged {
            key: *key,
            step: step.cloned(),
            reason: reason.into(),
        }
    }

    /// Whether this is damage to one object (as opposed to an I/O failure or a locked store).
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Damaged { .. })
    }
}

/// Whether `m` is the manifest of object `key`: it names the key, its inputs hash to it, and it
/// is of this layout. A manifest copied from another object fails here.
pub(crate) fn check_belongs(key: &Digest, m: &Manifest) -> Result<(), StoreError> {
    if m.key != *key {
        return Err(StoreError::damaged(
            key,
            Some(&m.step),
            format!("its manifest belongs to object {}", m.key),
        ));
    }
    if m.inputs.key() != *key {
        return Err(StoreError::damaged(
            key,
            Some(&m.step),
            "its manifest's inputs do not hash to its key",
        ));
    }
    if m.layout != LAYOUT_VERSION || m.inputs.kind != m.step.kind() {
        return Err(StoreError::damaged(
            key,
            Some(&m.step),
            "its manifest is inconsistent (layout or step kind)",
        ));
    }
    Ok(())
}

/// Check `stored` (output `name` of `m`, as read) against the manifest.
pub(crate) fn check_output(
    key: &Digest,
    m: &Manifest,
    name: &str,
    stored: &[u8],
) -> Result<(), StoreError> {
    let info = m
        .outputs
        .get(name)
        .ok_or_else(|| StoreError::MissingOutput {
            key: *key,
            output: name.to_string(),
        })?;
    let h = Digest::of_domain(crate::digest::domain::OBJECT, stored);
    if h != info.stored_hash
        || (!info.encrypted && (h != info.hash || stored.len() as u64 != info.size))
    {
        return Err(StoreError::damaged(
            key,
            Some(&m.step),
            format!("output {name} does not match its hash"),
        ));
    }
    Ok(())
}

/// An exclusive writer lock; released on drop.
pub trait WriteLock: Send {}

/// A gc root an operator asked for (`talix store pin`): object `key`, the realisation of
/// `step` for `profile` when it was pinned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pin {
    pub profile: String,
    pub step: StepId,
    pub key: Digest,
}

/// How much a stored object or record must survive a power loss (a killed process loses
/// nothing either way: the kernel still has every byte written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk before the call returns: receipts of side effects a re-run must not repeat
    /// (apply, bootstrap) and gc roots (pins).
    Synced,
    /// Written, not synced: what can be had again. An object that a power loss damages fails
    /// verification on its next read and is rebuilt (pure and observing steps, receipts of
    /// [replayable](crate::derivation::Step::replayable) steps); a ref is a hint for `plan`
    /// and `why`, and a damaged one is ignored. Nix stores the same way by default
    /// (`fsync-store-paths = false`).
    Relaxed,
}

impl Durability {
    /// The durability an object needs when the caller cannot say more than its manifest does:
    /// receipts synced, everything else relaxed.
    pub fn of(manifest: &Manifest) -> Self {
        if manifest.effect == crate::derivation::Effect::SideEffect {
            Durability::Synced
        } else {
            Durability::Relaxed
        }
    }
}

/// The store service boundary.
///
/// Invariants every backend keeps (the conformance suite checks them):
/// - `put` is atomic: after it returns, `manifest(key)` and every output are readable; if it
///   fails or the process dies, the object is absent, never partial. With
///   [`Durability::Synced`] (what `put` picks for receipts) the object is also on disk.
/// - objects are immutable: a second `put` of an existing key leaves the first one in place
///   (a damaged object is [`Store::discard`]ed first).
/// - `stored bytes` are returned exactly as put (ciphertext stays ciphertext).
/// - reads are verified: `manifest(key)` returns only a manifest that belongs to `key`, and
///   `read_output` only bytes that match the manifest's hashes; anything else is
///   [`StoreError::Damaged`]. Symlinks in an object are damage, never followed.
/// - refs (the last realisation of a step for a profile) are replaced atomically; `refs`
///   lists exactly what `set_ref` left (the last key per step), `ref_profiles` every profile
///   with at least one ref, sorted; `remove_refs` drops a profile's refs and its source at once.
/// - a profile's refs remember the profile file they came from (`set_ref_source`), so gc can
///   tell a live profile from a deleted one; the source is the last one set.
/// - pins are a set: pinning twice is one pin, unpinning an absent pin is a no-op, `pins` is
///   sorted. Pins and refs are independent of objects (a pin of an absent object is allowed;
///   `verify` reports it as missing).
/// - `discard` is atomic per object: afterwards the object is absent; a crash during it leaves
///   either the whole object or nothing recognisable as one.
/// - `stored_size` is the bytes the object occupies as stored (manifest and outputs), `None`
///   when the object is absent.
///
/// Backends implement the raw reads (`load_manifest`, `load_output`); the verified reads are
/// provided here, once, for every backend.
pub trait Store: Send + Sync {
    /// The manifest as stored (parsed, not yet checked against `key`); a manifest that does not
    /// parse is [`StoreError::Damaged`].
    fn load_manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError>;
    /// Output `output` of `key` as stored, `None` when absent; never through a symlink.
    fn load_output(&self, key: &Digest, output: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Remove object `key` (a damaged one before it is rebuilt, or garbage). Call with the
    /// writer lock.
    fn discard(&self, key: &Digest) -> Result<(), StoreError>;
    /// Bytes object `key` occupies as stored; `None` when absent.
    fn stored_size(&self, key: &Digest) -> Result<Option<u64>, StoreError>;

    /// The manifest of `key`, checked to belong to it.
    fn manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError> {
        let Some(m) = self.load_manifest(key)? else {
            return Ok(None);
        };
        check_belongs(key, &m)?;
        Ok(Some(m))
    }

    /// Output `output` of `key` as stored, checked against the manifest.
    fn read_output(&self, key: &Digest, output: &str) -> Result<Vec<u8>, StoreError> {
        let m = self
            .manifest(key)?
            .ok_or_else(|| StoreError::MissingOutput {
                key: *key,
                output: output.to_string(),
            })?;
        if !m.outputs.get(output).is_some_and(|i| i.stored) {
            return Err(StoreError::MissingOutput {
                key: *key,
                output: output.to_string(),
            });
        }
        let bytes = self.load_output(key, output)?.ok_or_else(|| {
            StoreError::damaged(key, Some(&m.step), format!("output {output} is missing"))
        })?;
        check_output(key, &m, output, &bytes)?;
        Ok(bytes)
    }

    /// The manifest of `key` with every stored output checked: what a cache hit must pass.
    fn checked(&self, key: &Digest) -> Result<Option<Manifest>, StoreError> {
        let Some(m) = self.manifest(key)? else {
            return Ok(None);
        };
        for (name, _) in m.outputs.iter().filter(|(_, i)| i.stored) {
            let bytes = self.load_output(key, name)?.ok_or_else(|| {
                StoreError::damaged(key, Some(&m.step), format!("output {name} is missing"))
            })?;
            check_output(key, &m, name, &bytes)?;
        }
        Ok(Some(m))
    }

    /// Store an object with the durability its manifest calls for ([`Durability::of`]).
    fn put(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.put_with(manifest, stored, Durability::of(manifest))
    }
    /// Store an object, synced to disk or not as `durability` says (the engine knows more
    /// than the manifest: the receipt of a replayable step is relaxed).
    fn put_with(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
        durability: Durability,
    ) -> Result<(), StoreError>;
    /// Point `profile`'s ref of `step` at `key` (relaxed: a ref is a hint, see
    /// [`Durability::Relaxed`]).
    fn set_ref(&self, profile: &str, step: &StepId, key: &Digest) -> Result<(), StoreError>;
    fn get_ref(&self, profile: &str, step: &StepId) -> Result<Option<Digest>, StoreError>;
    /// Every ref of `profile`: step -> key of its last realisation.
    fn refs(&self, profile: &str) -> Result<BTreeMap<StepId, Digest>, StoreError>;
    /// Every profile that has refs (or a recorded source), sorted.
    fn ref_profiles(&self) -> Result<Vec<String>, StoreError>;
    /// Drop every ref of `profile` and its recorded source (its profile file is gone).
    fn remove_refs(&self, profile: &str) -> Result<(), StoreError>;
    /// Record the profile file (absolute path) whose realisations `profile`'s refs record.
    fn set_ref_source(&self, profile: &str, source: &Path) -> Result<(), StoreError>;
    /// The profile file recorded by [`Store::set_ref_source`], if any.
    fn ref_source(&self, profile: &str) -> Result<Option<PathBuf>, StoreError>;
    /// Add a pin (a gc root).
    fn pin(&self, pin: &Pin) -> Result<(), StoreError>;
    /// Remove a pin; `false` when there was none.
    fn unpin(&self, pin: &Pin) -> Result<bool, StoreError>;
    /// Every pin, sorted.
    fn pins(&self) -> Result<Vec<Pin>, StoreError>;
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
            deps: BTreeMap::new(),
        };
        (
            manifest,
            outputs
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_vec()))
                .collect(),
        )
    }

    /// Damage a test does to a backend's stored bytes, behind the store's back.
    #[derive(Debug, Clone, Copy)]
    pub enum Damage {
        FlipByte(Digest, &'static str),
        Truncate(Digest, &'static str),
        DeleteOutput(Digest, &'static str),
        GarbageManifest(Digest),
        /// Object `from` (manifest and outputs) copied over object `over`.
        CopyObject {
            from: Digest,
            over: Digest,
        },
        /// One output of `from` copied over the same output of `over`.
        CopyOutput {
            from: Digest,
            over: Digest,
            output: &'static str,
        },
        /// The output replaced by a symlink to a file outside the store.
        SymlinkOut(Digest, &'static str),
    }

    pub fn run_all(store: &dyn Store, damage: &dyn Fn(Damage)) {
        put_then_get(store);
        put_is_immutable(store);
        refs_replace(store);
        missing_is_none(store);
        lock_excludes_second_writer(store);
        reads_are_verified(store, damage);
        refs_list_and_remove(store);
        ref_sources(store);
        pins_are_a_set(store);
        stored_size_and_discard(store);
        gc::tests::closures_are_kept_and_garbage_goes(store);
    }

    fn refs_list_and_remove(store: &dyn Store) {
        let (a, _) = manifest_for("render/w1", "list-1", &[]);
        let (b, _) = manifest_for("patch/w1", "list-2", &[]);
        let (c, _) = manifest_for("render/w1", "list-3", &[]);
        store
            .set_ref("lister", &StepId("render/w1".into()), &a.key)
            .unwrap();
        store
            .set_ref("lister", &StepId("patch/w1".into()), &b.key)
            .unwrap();
        store
            .set_ref("lister", &StepId("render/w1".into()), &c.key)
            .unwrap();
        store
            .set_ref("lister-2", &StepId("secrets".into()), &a.key)
            .unwrap();
        assert_eq!(
            store.refs("lister").unwrap(),
            BTreeMap::from([
                (StepId("patch/w1".into()), b.key),
                (StepId("render/w1".into()), c.key)
            ]),
            "the last key per step, with `/` in step ids kept"
        );
        let profiles = store.ref_profiles().unwrap();
        assert!(
            profiles.windows(2).all(|w| w[0] < w[1]),
            "sorted: {profiles:?}"
        );
        assert!(
            profiles.contains(&"lister".to_string()) && profiles.contains(&"lister-2".to_string())
        );
        store.remove_refs("lister").unwrap();
        assert!(store.refs("lister").unwrap().is_empty());
        assert!(
            !store
                .ref_profiles()
                .unwrap()
                .contains(&"lister".to_string())
        );
        assert_eq!(
            store.refs("lister-2").unwrap().len(),
            1,
            "other profiles keep theirs"
        );
        store.remove_refs("lister").unwrap();
        store.remove_refs("never-there").unwrap();
        store.remove_refs("lister-2").unwrap();
    }

    fn ref_sources(store: &dyn Store) {
        assert_eq!(store.ref_source("src").unwrap(), None);
        store
            .set_ref_source("src", Path::new("/w/profiles/a.yaml"))
            .unwrap();
        store
            .set_ref_source("src", Path::new("/w/profiles/b.yaml"))
            .unwrap();
        assert_eq!(
            store.ref_source("src").unwrap(),
            Some(PathBuf::from("/w/profiles/b.yaml"))
        );
        assert!(store.ref_profiles().unwrap().contains(&"src".to_string()));
        assert!(
            store.refs("src").unwrap().is_empty(),
            "a source is not a ref"
        );
        store.remove_refs("src").unwrap();
        assert_eq!(store.ref_source("src").unwrap(), None);
    }

    fn pins_are_a_set(store: &dyn Store) {
        let (a, _) = manifest_for("render/cp1", "pin-1", &[]);
        let (b, _) = manifest_for("render/cp1", "pin-2", &[]);
        let pa = Pin {
            profile: "pinned".into(),
            step: StepId("render/cp1".into()),
            key: a.key,
        };
        let pb = Pin {
            key: b.key,
            ..pa.clone()
        };
        store.pin(&pa).unwrap();
        store.pin(&pa).unwrap();
        store.pin(&pb).unwrap();
        let mut want = vec![pa.clone(), pb.clone()];
        want.sort();
        let got: Vec<Pin> = store
            .pins()
            .unwrap()
            .into_iter()
            .filter(|p| p.profile == "pinned")
            .collect();
        assert_eq!(got, want, "one pin per (profile, step, key), sorted");
        assert!(store.unpin(&pa).unwrap());
        assert!(!store.unpin(&pa).unwrap(), "unpinning twice is a no-op");
        assert!(!store.pins().unwrap().contains(&pa));
        assert!(store.unpin(&pb).unwrap());
    }

    fn stored_size_and_discard(store: &dyn Store) {
        let content: &[u8] = b"size me: 0123456789\n";
        let (m, out) = manifest_for("patch/size", "size", &[("patch", content)]);
        assert_eq!(store.stored_size(&m.key).unwrap(), None);
        store.put(&m, &out).unwrap();
        let size = store.stored_size(&m.key).unwrap().unwrap();
        assert!(size > content.len() as u64, "outputs and manifest: {size}");
        store.discard(&m.key).unwrap();
        assert_eq!(store.stored_size(&m.key).unwrap(), None);
        assert!(!store.keys().unwrap().contains(&m.key));
        store.discard(&m.key).unwrap();
    }

    fn assert_damaged<T: std::fmt::Debug>(what: &str, key: &Digest, r: Result<T, StoreError>) {
        match r {
            Err(e @ StoreError::Damaged { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&key.to_string()),
                    "{what}: names the object: {text}"
                );
                assert!(
                    text.contains("talix store prune"),
                    "{what}: names the repair: {text}"
                );
            }
            other => panic!("{what}: expected damage, got {other:?}"),
        }
    }

    /// Every read checks what it returns: damaged bytes, a foreign or garbage manifest, a
    /// missing output or a symlink are `Damaged` (naming the object and the repair), never
    /// data; a discarded object can be put again.
    fn reads_are_verified(store: &dyn Store, damage: &dyn Fn(Damage)) {
        let object = |tag: &str| {
            let (m, out) = manifest_for(
                "patch/cp1",
                &format!("damage-{tag}"),
                &[("patch", format!("machine: {{}} # {tag}\n").as_bytes())],
            );
            store.put(&m, &out).unwrap();
            assert!(store.checked(&m.key).unwrap().is_some());
            (m, out)
        };
        for (tag, make) in [
            (
                "flip",
                Damage::FlipByte as fn(Digest, &'static str) -> Damage,
            ),
            ("truncate", Damage::Truncate),
            ("delete", Damage::DeleteOutput),
            ("symlink", Damage::SymlinkOut),
        ] {
            let (m, out) = object(tag);
            damage(make(m.key, "patch"));
            assert!(
                store.manifest(&m.key).unwrap().is_some(),
                "{tag}: manifest intact"
            );
            assert_damaged(tag, &m.key, store.read_output(&m.key, "patch"));
            assert_damaged(tag, &m.key, store.checked(&m.key));
            store.discard(&m.key).unwrap();
            assert_eq!(store.manifest(&m.key).unwrap(), None, "{tag}: discarded");
            store.put(&m, &out).unwrap();
            assert_eq!(
                store.read_output(&m.key, "patch").unwrap(),
                out["patch"],
                "{tag}: rebuilt"
            );
        }
        let (m, _) = object("garbage");
        damage(Damage::GarbageManifest(m.key));
        assert_damaged("garbage manifest", &m.key, store.manifest(&m.key));
        assert_damaged(
            "garbage manifest",
            &m.key,
            store.read_output(&m.key, "patch"),
        );

        let (a, _) = object("swap-a");
        let (b, _) = object("swap-b");
        damage(Damage::CopyObject {
            from: a.key,
            over: b.key,
        });
        assert_damaged("swapped object", &b.key, store.manifest(&b.key));
        assert_damaged("swapped object", &b.key, store.read_output(&b.key, "patch"));
        assert!(
            store.checked(&a.key).unwrap().is_some(),
            "the original is fine"
        );

        let (c, _) = object("copy-c");
        let (d, _) = object("copy-d");
        damage(Damage::CopyOutput {
            from: c.key,
            over: d.key,
            output: "patch",
        });
        assert_damaged("copied output", &d.key, store.read_output(&d.key, "patch"));
        for k in [m.key, b.key, d.key] {
            store.discard(&k).unwrap();
        }
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
        // Setting the key a ref already holds is fine (backends may skip the write).
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
