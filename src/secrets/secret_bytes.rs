//! `SecretBytes`: the only way plaintext secrets travel through talix, so that they are wiped
//! from memory when dropped and can never be printed by accident.

use std::fmt;

use secrecy::zeroize::Zeroize;

use crate::digest::{Digest, domain};

/// Owned plaintext (a secrets bundle, a rendered config, a key file).
///
/// Invariant: the bytes are zeroized on drop, and `Debug`/`Display` print only the length and a
/// short blake3 of the content: `SecretBytes(<len> bytes, blake3 <short hash>)`.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Take ownership of plaintext bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The plaintext, for code that must hand it on (encryption, a pipe to a child, a parser).
    /// Never format the result.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of plaintext bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The content digest in `domain` (see [`crate::digest::domain`]).
    pub fn digest(&self, domain: &str) -> Digest {
        Digest::of_domain(domain, &self.0)
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl PartialEq for SecretBytes {
    /// Compares content; not constant-time, meant for "did the edit change anything".
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for SecretBytes {}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretBytes({} bytes, blake3 {})",
            self.0.len(),
            self.digest(domain::OBJECT).short()
        )
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_show_length_and_hash_only() {
        let secret = SecretBytes::new(b"hunter2-super-secret".to_vec());
        let expected = format!(
            "SecretBytes(20 bytes, blake3 {})",
            Digest::of_domain(domain::OBJECT, b"hunter2-super-secret").short()
        );
        assert_eq!(format!("{secret:?}"), expected);
        assert_eq!(format!("{secret}"), expected);
        assert_eq!(format!("{secret:#?}"), expected);
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn equal_content_compares_equal() {
        let a = SecretBytes::new(b"x".to_vec());
        assert_eq!(a.clone(), a);
        assert_ne!(a, SecretBytes::new(b"y".to_vec()));
        assert_eq!(a.len(), 1);
        assert!(!a.is_empty());
    }
}
