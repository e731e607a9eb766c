//! An in-process store with the same contract as the on-disk one; used by engine unit tests
//! and as the second backend of the conformance suite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Manifest, Store, StoreError, WriteLock};
use crate::derivation::StepId;
use crate::digest::Digest;

type Objects = BTreeMap<Digest, (Manifest, BTreeMap<String, Vec<u8>>)>;

#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    objects: Arc<Mutex<Objects>>,
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
    fn manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|(m, _)| m.clone()))
    }
    fn read_output(&self, key: &Digest, output: &str) -> Result<Vec<u8>, StoreError> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .and_then(|(_, o)| o.get(output).cloned())
            .ok_or_else(|| StoreError::MissingOutput {
                key: *key,
                output: output.to_string(),
            })
    }
    fn put(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), StoreError> {
        self.objects
            .lock()
            .unwrap()
            .entry(manifest.key)
            .or_insert_with(|| (manifest.clone(), stored.clone()));
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
mod tests {
    #[test]
    fn conformance_suite() {
        super::super::conformance::run_all(&super::MemoryStore::default());
    }
}
