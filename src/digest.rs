//! A blake3 digest newtype: the one name for "content identity" across the store, the
//! derivation keys and the lock file. Printed and serialised as 64 lowercase hex characters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte blake3 digest.
///
/// Invariant: `Display`/`Serialize` always give 64 lowercase hex characters and `FromStr`
/// accepts exactly that, so a digest round-trips through file names, JSON and YAML unchanged.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// Domains for [`Digest::of_domain`]: every hash of one kind of data uses its own context string,
/// so a hash of one kind can never be mistaken for (or collide with) a hash of another.
pub mod domain {
    /// The plaintext Talos secrets bundle.
    pub const SECRETS_BUNDLE: &str = "talix 2026-11 secrets bundle v1";
    /// A store object's content (plaintext bytes of one output).
    pub const OBJECT: &str = "talix 2026-11 object content v1";
    /// A derivation key over its canonical inputs.
    pub const DERIVATION: &str = "talix 2026-11 derivation key v1";
    /// Any other file hashed as an input (user patches, ciphertext files).
    pub const FILE: &str = "talix 2026-11 input file v1";
}

impl Digest {
    /// Hash `bytes` with blake3 in key-derivation mode under `context` (domain separation).
    pub fn of_domain(context: &str, bytes: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(context);
        hasher.update(bytes);
        Self(*hasher.finalize().as_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex characters, for human-facing output.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }

    /// Wrap raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// A string that is not 64 lowercase hex characters.
#[derive(Debug, thiserror::Error)]
#[error("not a digest (expected 64 lowercase hex characters): {0:?}")]
pub struct DigestParseError(String);

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestParseError(s.chars().take(80).collect());
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
        Ok(Self(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let d = Digest::of_domain(domain::OBJECT, b"hello");
        let parsed: Digest = d.to_string().parse().unwrap();
        assert_eq!(d, parsed);
        assert_eq!(d.to_string().len(), 64);
    }

    #[test]
    fn domains_separate() {
        assert_ne!(
            Digest::of_domain(domain::OBJECT, b"x"),
            Digest::of_domain(domain::FILE, b"x")
        );
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("abc".parse::<Digest>().is_err());
        assert!("Z".repeat(64).parse::<Digest>().is_err());
        assert!("A".repeat(64).parse::<Digest>().is_err());
    }
}
