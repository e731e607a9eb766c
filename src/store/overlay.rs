//! A copy-on-write view of another store, for `talix up --dry-run`: reads fall through to the
//! store below, every write (objects, refs, discards) lands in memory and is forgotten when the
//! overlay is dropped, so the engine can walk a whole run without changing the real store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::memory::MemoryStore;
use super::{Durability, Manifest, Pin, Store, StoreError, WriteLock};
use crate::derivation::StepId;
use crate::digest::Digest;

pub struct Overlay<'a> {
    base: &'a dyn Store,
    upper: MemoryStore,
    /// Objects of `base` discarded through the overlay (damaged ones the engine rebuilds).
    hidden: Mutex<BTreeSet<Digest>>,
    /// Profiles whose refs (and source) in `base` were removed through the overlay.
    removed: Mutex<BTreeSet<String>>,
    /// Pins of `base` removed through the overlay.
    unpinned: Mutex<BTreeSet<Pin>>,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn Store) -> Self {
        Self {
            base,
            upper: MemoryStore::default(),
            hidden: Mutex::new(BTreeSet::new()),
            removed: Mutex::new(BTreeSet::new()),
            unpinned: Mutex::new(BTreeSet::new()),
        }
    }

    fn hidden(&self, key: &Digest) -> bool {
        self.hidden.lock().unwrap().contains(key)
    }

    fn removed(&self, profile: &str) -> bool {
        self.removed.lock().unwrap().contains(profile)
    }

    fn in_upper(&self, key: &Digest) -> bool {
        self.upper.objects.lock().unwrap().contains_key(key)
    }

    /// Keys of the objects written through the overlay (never in the store below).
    pub fn written(&self) -> Vec<Digest> {
        self.upper.objects.lock().unwrap().keys().copied().collect()
    }
}

impl Store for Overlay<'_> {
    fn load_manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError> {
        if self.in_upper(key) {
            return self.upper.load_manifest(key);
        }
        if self.hidden(key) {
            return Ok(None);
        }
        self.base.load_manifest(key)
    }

    fn load_output(&self, key: &Digest, output: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.in_upper(key) {
            return self.upper.load_output(key, output);
        }
        if self.hidden(key) {
            return Ok(None);
        }
        self.base.load_output(key, output)
    }

    fn discard(&self, key: &Digest) -> Result<(), StoreError> {
        self.upper.discard(key)?;
        self.hidden.lock().unwrap().insert(*key);
        Ok(())
    }

    fn put_with(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        // Immutable like every store: an object below (not discarded) stays the one read.
        if !self.in_upper(&manifest.key)
            && !self.hidden(&manifest.key)
            && self
                .base
                .load_manifest(&manifest.key)
                .ok()
                .flatten()
                .is_some()
        {
            return Ok(());
        }
        self.upper.put_with(manifest, stored, durability)
    }

    fn set_ref(&self, profile: &str, step: &StepId, key: &Digest) -> Result<(), StoreError> {
        self.upper.set_ref(profile, step, key)
    }

    fn get_ref(&self, profile: &str, step: &StepId) -> Result<Option<Digest>, StoreError> {
        match self.upper.get_ref(profile, step)? {
            Some(k) => Ok(Some(k)),
            None if self.removed(profile) => Ok(None),
            None => self.base.get_ref(profile, step),
        }
    }

    fn stored_size(&self, key: &Digest) -> Result<Option<u64>, StoreError> {
        if self.in_upper(key) {
            return self.upper.stored_size(key);
        }
        if self.hidden(key) {
            return Ok(None);
        }
        self.base.stored_size(key)
    }

    fn refs(&self, profile: &str) -> Result<BTreeMap<StepId, Digest>, StoreError> {
        let mut refs = if self.removed(profile) {
            BTreeMap::new()
        } else {
            self.base.refs(profile)?
        };
        refs.extend(self.upper.refs(profile)?);
        Ok(refs)
    }

    fn ref_profiles(&self) -> Result<Vec<String>, StoreError> {
        let removed = self.removed.lock().unwrap().clone();
        let mut names: BTreeSet<String> = self
            .base
            .ref_profiles()?
            .into_iter()
            .filter(|p| !removed.contains(p))
            .collect();
        names.extend(self.upper.ref_profiles()?);
        Ok(names.into_iter().collect())
    }

    fn remove_refs(&self, profile: &str) -> Result<(), StoreError> {
        self.upper.remove_refs(profile)?;
        self.removed.lock().unwrap().insert(profile.to_string());
        Ok(())
    }

    fn set_ref_source(&self, profile: &str, source: &Path) -> Result<(), StoreError> {
        self.upper.set_ref_source(profile, source)
    }

    fn ref_source(&self, profile: &str) -> Result<Option<PathBuf>, StoreError> {
        match self.upper.ref_source(profile)? {
            Some(p) => Ok(Some(p)),
            None if self.removed(profile) => Ok(None),
            None => self.base.ref_source(profile),
        }
    }

    fn pin(&self, pin: &Pin) -> Result<(), StoreError> {
        self.unpinned.lock().unwrap().remove(pin);
        self.upper.pin(pin)
    }

    fn unpin(&self, pin: &Pin) -> Result<bool, StoreError> {
        let above = self.upper.unpin(pin)?;
        let below = !self.unpinned.lock().unwrap().contains(pin) && self.base.pins()?.contains(pin);
        if below {
            self.unpinned.lock().unwrap().insert(pin.clone());
        }
        Ok(above || below)
    }

    fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        let unpinned = self.unpinned.lock().unwrap().clone();
        let mut pins: BTreeSet<Pin> = self
            .base
            .pins()?
            .into_iter()
            .filter(|p| !unpinned.contains(p))
            .collect();
        pins.extend(self.upper.pins()?);
        Ok(pins.into_iter().collect())
    }

    /// The overlay's own lock: nothing is created in the store below.
    fn lock(&self, wait: bool) -> Result<Box<dyn WriteLock>, StoreError> {
        self.upper.lock(wait)
    }

    fn keys(&self) -> Result<Vec<Digest>, StoreError> {
        let hidden = self.hidden.lock().unwrap().clone();
        let mut keys: BTreeSet<Digest> = self
            .base
            .keys()?
            .into_iter()
            .filter(|k| !hidden.contains(k))
            .collect();
        keys.extend(self.written());
        Ok(keys.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, run_all};
    use super::*;

    #[test]
    fn conformance_suite_over_an_empty_base() {
        let base = MemoryStore::default();
        let overlay = Overlay::new(&base);
        let upper = overlay.upper.clone();
        run_all(&overlay, &move |d| {
            crate::store::memory::damage_memory(&upper, d)
        });
        assert!(base.keys().unwrap().is_empty(), "nothing reached the base");
    }

    #[test]
    fn reads_fall_through_and_writes_stay_in_the_overlay() {
        let dir = tempfile::tempdir().unwrap();
        let base = crate::store::local::LocalStore::open(dir.path()).unwrap();
        let (a, out_a) = conformance::manifest_for("patch/a", "x", &[("patch", b"p")]);
        let (b, out_b) = conformance::manifest_for("patch/b", "y", &[("patch", b"q")]);
        base.put(&a, &out_a).unwrap();
        let step = StepId("patch/a".into());
        base.set_ref("p", &step, &a.key).unwrap();
        let files_before = walk(dir.path());

        let overlay = Overlay::new(&base);
        assert_eq!(overlay.read_output(&a.key, "patch").unwrap(), b"p");
        overlay.put(&b, &out_b).unwrap();
        overlay.set_ref("p", &step, &b.key).unwrap();
        assert_eq!(overlay.get_ref("p", &step).unwrap(), Some(b.key));
        assert_eq!(overlay.read_output(&b.key, "patch").unwrap(), b"q");
        overlay.discard(&a.key).unwrap();
        assert_eq!(overlay.manifest(&a.key).unwrap(), None);
        assert_eq!(overlay.keys().unwrap(), vec![b.key]);
        let _held = overlay.lock(false).unwrap();
        drop(overlay);

        assert_eq!(
            walk(dir.path()),
            files_before,
            "the store below is untouched"
        );
        assert_eq!(base.get_ref("p", &step).unwrap(), Some(a.key));
        assert!(base.checked(&a.key).unwrap().is_some());
        assert_eq!(base.manifest(&b.key).unwrap(), None);
    }

    /// Every file below `dir` with its content.
    fn walk(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    }
}
