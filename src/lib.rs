//! talix: the Talos cluster-bootstrap runbook as a reproducible, content-addressed workflow.
//!
//! Architecture: profile → derivation graph → store ← steps (exec, discovery, proxmox, secrets).

pub mod cli;
pub mod derivation;
pub mod digest;
pub mod secrets;
pub mod sim;
pub mod profile;
pub mod store;
