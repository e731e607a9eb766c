//! The profile exactly as written: serde types that reject unknown keys, with addresses kept as
//! text so that validation can report every bad value with its field path, not just the first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: String,
    pub network: RawNetwork,
    pub talos: RawTalos,
    pub secrets: RawSecrets,
    #[serde(default)]
    pub discovery: Option<RawDiscovery>,
    #[serde(default)]
    pub proxmox: Option<RawProxmox>,
    pub nodes: RawNodes,
    #[serde(default)]
    pub patches: RawPatches,
    #[serde(default)]
    pub up: Option<RawUp>,
}

/// How `talix up` runs (not part of any key).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUp {
    /// talosctl/kubectl processes run at once.
    #[serde(default)]
    pub jobs: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub api_endpoint: String,
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    pub pod_cidr: String,
    pub service_cidr: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTalos {
    pub version: String,
    pub kubernetes_version: String,
    #[serde(default)]
    pub contract: Option<String>,
    pub factory: RawFactory,
    #[serde(default)]
    pub vip: Option<RawVip>,
    #[serde(default)]
    pub api_port: Option<u16>,
    #[serde(default)]
    pub install_disk: Option<String>,
    #[serde(default)]
    pub config_dir: Option<String>,
    #[serde(default)]
    pub secrets_file: Option<String>,
    #[serde(default)]
    pub patches_dir: Option<String>,
    #[serde(default)]
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFactory {
    pub schematic_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub interface: String,
    pub ip: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    #[serde(default)]
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub retry_wait_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxmox {
    pub url: String,
    pub token_id: String,
    #[serde(default)]
    pub token_secret_env: Option<String>,
    #[serde(default)]
    pub token_secret_command: Option<Vec<String>>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodes {
    pub controlplane: RawNodeGroup,
    #[serde(default)]
    pub worker: Option<RawNodeGroup>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeGroup {
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub assignments: Vec<RawAssignment>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssignment {
    pub name: String,
    pub ip: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub vmid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPatches {
    #[serde(default)]
    pub all: Vec<String>,
    #[serde(default)]
    pub controlplane: Vec<String>,
    #[serde(default)]
    pub worker: Vec<String>,
    #[serde(default)]
    pub nodes: BTreeMap<String, Vec<String>>,
}
