//! Secrets at rest: age recipients and identities, encryption of the secrets bundle and of every
//! store object derived from it, and private scratch space that never hits a persistent disk.
