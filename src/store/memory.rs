//! An in-process store with the same contract as the on-disk one; used by engine unit tests
//! and as the second backend of the conformance suite. Manifests are kept as the JSON bytes a
//! disk store would hold, so the same damage (a garbage manifest) can be represented.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Manifest, Store, StoreError, WriteLock};
use crate::derivation::StepId;
use crate::digest::Digest;

/// Per key: the manifest's JSON bytes and the stored outputs.
pub(crate) type Objects = BTreeMap<Digest, (Vec<u8>, BTreeMap<String, Vec<u8>>)>;

#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    pub(crate) objects: Arc<Mutex<Objects>>,
    refs: Arc<Mutex<BTreeMap<(String, StepId), Digest>>>,
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
    fn put(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
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
