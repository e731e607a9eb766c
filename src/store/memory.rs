//! An in-process store with the same contract as the on-disk one; used by engine unit tests
//! and as the second backend of the conformance suite. Manifests are kept as the JSON bytes a
//! disk store would hold, so the same damage (a garbage manifest) can be represented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Durability, Manifest, Pin, Store, StoreError, WriteLock};
use crate::derivation::StepId;
use crate::digest::Digest;

/// Per key: the manifest's JSON bytes and the stored outputs.
pub(crate) type Objects = BTreeMap<Digest, (Vec<u8>, BTreeMap<String, Vec<u8>>)>;

#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    pub(crate) objects: Arc<Mutex<Objects>>,
    refs: Arc<Mutex<BTreeMap<(String, StepId), Digest>>>,
    sources: Arc<Mutex<BTreeMap<String, PathBuf>>>,
    pins: Arc<Mutex<BTreeSet<Pin>>>,
    locked: Arc<Mutex<bool>>,
}

struct MemLock(Arc<Mutex<bool>>);
impl WriteLock for MemLock {}
impl Drop for MemLock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = false;
    }
}

impl Store for MemoryStore {
    fn load_manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError> {
        let objects = self.objects.lock().unwrap();
        let Some((json, _)) = objects.get(key) else {
            return Ok(None);
        };
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                key: *key,
                step: None,
                reason: format!("its manifest does not parse: {e}"),
            })
    }
    fn load_output(&self, key: &Digest, output: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .and_then(|(_, o)| o.get(output).cloned()))
    }
    fn discard(&self, key: &Digest) -> Result<(), StoreError> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    fn stored_size(&self, key: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self.objects.lock().unwrap().get(key).map(|(json, outs)| {
            json.len() as u64 + outs.values().map(|o| o.len() as u64).sum::<u64>()
        }))
    }
    fn refs(&self, profile: &str) -> Result<BTreeMap<StepId, Digest>, StoreError> {
        Ok(self
            .refs
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, _), _)| p == profile)
            .map(|((_, s), k)| (s.clone(), *k))
            .collect())
    }
    fn ref_profiles(&self) -> Result<Vec<String>, StoreError> {
        let mut out: BTreeSet<String> = self
            .refs
            .lock()
            .unwrap()
            .keys()
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(self.sources.lock().unwrap().keys().cloned());
        Ok(out.into_iter().collect())
    }
    fn remove_refs(&self, profile: &str) -> Result<(), StoreError> {
        self.refs.lock().unwrap().retain(|(p, _), _| p != profile);
        self.sources.lock().unwrap().remove(profile);
        Ok(())
    }
    fn set_ref_source(&self, profile: &str, source: &Path) -> Result<(), StoreError> {
        self.sources
            .lock()
            .unwrap()
            .insert(profile.to_string(), source.to_path_buf());
        Ok(())
    }
    fn ref_source(&self, profile: &str) -> Result<Option<PathBuf>, StoreError> {
        Ok(self.sources.lock().unwrap().get(profile).cloned())
    }
    fn pin(&self, pin: &Pin) -> Result<(), StoreError> {
        self.pins.lock().unwrap().insert(pin.clone());
        Ok(())
    }
    fn unpin(&self, pin: &Pin) -> Result<bool, StoreError> {
        Ok(self.pins.lock().unwrap().remove(pin))
    }
    fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        Ok(self.pins.lock().unwrap().iter().cloned().collect())
    }
    /// Memory has no disk: every durability is the same.
    fn put_with(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
        _durability: Durability,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        self.objects
            .lock()
            .unwrap()
            .entry(manifest.key)
            .or_insert_with(|| (json, stored.clone()));
        Ok(())
    }
    fn set_ref(&self, profile: &str, step: &StepId, key: &Digest) -> Result<(), StoreError> {
        self.refs
            .lock()
            .unwrap()
            .insert((profile.to_string(), step.clone()), *key);
        Ok(())
    }
    fn get_ref(&self, profile: &str, step: &StepId) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .refs
            .lock()
            .unwrap()
            .get(&(profile.to_string(), step.clone()))
            .copied())
    }
    fn lock(&self, wait: bool) -> Result<Box<dyn WriteLock>, StoreError> {
        loop {
            {
                let mut l = self.locked.lock().unwrap();
                if !*l {
                    *l = true;
                    return Ok(Box::new(MemLock(self.locked.clone())));
                }
            }
            if !wait {
                return Err(StoreError::Locked {
                    path: "memory".into(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    fn keys(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self.objects.lock().unwrap().keys().copied().collect())
    }
}

#[cfg(test)]
use super::conformance::Damage;

/// Damage done to the in-memory maps, as `Damage` describes it.
#[cfg(test)]
pub(crate) fn damage_memory(store: &MemoryStore, d: Damage) {
    let mut objects = store.objects.lock().unwrap();
    match d {
        Damage::FlipByte(key, output) => {
            let bytes = objects.get_mut(&key).unwrap().1.get_mut(output).unwrap();
            bytes[0] ^= 1;
        }
        Damage::Truncate(key, output) => {
            let bytes = objects.get_mut(&key).unwrap().1.get_mut(output).unwrap();
            bytes.truncate(bytes.len() / 2);
        }
        Damage::DeleteOutput(key, output) => {
            objects.get_mut(&key).unwrap().1.remove(output);
        }
        Damage::GarbageManifest(key) => {
            objects.get_mut(&key).unwrap().0 = b"{ not json".to_vec();
        }
        Damage::CopyObject { from, over } => {
            let copy = objects[&from].clone();
            objects.insert(over, copy);
        }
        Damage::CopyOutput { from, over, output } => {
            let copy = objects[&from].1[output].clone();
            objects
                .get_mut(&over)
                .unwrap()
                .1
                .insert(output.into(), copy);
        }
        // No filesystem, so no symlinks: the nearest damage is foreign bytes.
        Damage::SymlinkOut(key, output) => {
            objects
                .get_mut(&key)
                .unwrap()
                .1
                .insert(output.into(), b"localhost\n".to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::run_all;
    use super::*;

    #[test]
    fn conformance_suite() {
        let store = MemoryStore::default();
        let s2 = store.clone();
        run_all(&store, &move |d| damage_memory(&s2, d));
    }
}
