//! The engine's encryption boundary implemented with age: secret store objects are encrypted to
//! the profile's recipients and decrypted with the operator's identities, found lazily (a
//! command that never reads a secret output never needs a key).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::{Identities, Recipients, SecretBytes, decrypt, encrypt_binary};
use crate::engine::ObjectCipher;

/// Identities discovered on first use (`--identity`, then the SOPS order).
#[derive(Debug, Default)]
pub struct LazyIdentities {
    explicit: Option<PathBuf>,
    found: OnceLock<Result<Identities, String>>,
}

impl LazyIdentities {
    pub fn new(explicit: Option<PathBuf>) -> Self {
        Self {
            explicit,
            found: OnceLock::new(),
        }
    }
    /// The identities, or the discovery error (with its hint) as text.
    pub fn get(&self) -> Result<&Identities, String> {
        self.found
            .get_or_init(|| {
                Identities::discover(self.explicit.as_deref()).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// age encryption of store objects.
pub struct AgeObjectCipher {
    pub recipients: Recipients,
    pub identities: Arc<LazyIdentities>,
}

impl ObjectCipher for AgeObjectCipher {
    fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        encrypt_binary(&SecretBytes::new(plaintext.to_vec()), &self.recipients)
            .map_err(|e| e.to_string())
    }
    fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
        let ids = self.identities.get()?;
        decrypt(stored, ids, "store object")
            .map(|s| s.expose_secret().to_vec())
            .map_err(|e| e.to_string())
    }
}
