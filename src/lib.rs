//! talix: the Talos cluster-bootstrap runbook as a reproducible, content-addressed workflow.
//!
//! Architecture: profile → derivation graph → store ← steps (exec, discovery, proxmox, secrets).

pub mod address;
pub mod cli;
pub mod clientcert;
pub mod commands;
pub mod demo;
pub mod derivation;
pub mod digest;
pub mod discovery;
pub mod engine;
pub mod exec;
pub mod exit;
pub mod graph;
pub mod kubeconfig_merge;
pub mod lockfile;
pub mod profile;
pub mod progress;
pub mod proxmox;
pub mod secrets;
pub mod spawn;
pub mod steps;
pub mod store;
pub mod workspace;
