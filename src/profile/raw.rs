//! The profile exactly as written: serde types that reject unknown keys, with addresses kept as
//! text so that validation can report every bad value with its field path, not just the first.
//!
//! The same types derive the profile's JSON Schema (`talix schema`, see [`super::schema`]): the
//! doc comments on the fields are its descriptions, `x-runbook-step` names the steps a field
//! feeds (step kinds of [`crate::graph`]), and `default` (a literal) or `x-default` (prose, for
//! a default computed from other fields) is what validation substitutes when the key is left
//! out. An `Option` field needs no `#[serde(default)]` (serde reads a
//! missing one as `None`); leaving it off lets the schema carry the real default, not `null`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{
    Cidr, Contract, DevicePath, DnsLabel, ExtensionName, HttpsUrl, InterfaceName, IpAddress,
    KubeApiHost, MacAddress, ProxmoxTokenId, Recipient, SchematicId, Version,
};
use super::validate::{
    DEFAULT_API_PORT, DEFAULT_ATTEMPTS, DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_NAMESERVERS, DEFAULT_RETRY_WAIT_S, MAX_ATTEMPTS, MAX_CONCURRENCY,
    MAX_CONNECT_TIMEOUT_MS, MAX_EXTENSIONS, MAX_RETRY_WAIT_S, MIN_CONCURRENCY,
};

/// A talix profile: one Talos Linux cluster, pinned. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "talix profile")]
pub struct RawProfile {
    /// The cluster name: a DNS label (lower-case letters, digits and `-`, at most 63
    /// characters). It names the lock file `<name>.lock`, the secrets file
    /// `<name>.secrets.age`, the recipients file `<name>.recipients` and the default config
    /// directory `clusters/<name>`.
    #[schemars(with = "DnsLabel")]
    #[schemars(extend("x-runbook-step" = ["base-config", "talosconfig", "kubeconfig"]))]
    pub name: String,
    /// The node network and the cluster's internal networks.
    pub network: RawNetwork,
    /// The Talos release, image and machine-config settings.
    pub talos: RawTalos,
    /// Who can decrypt the secrets bundle and every secret store object.
    pub secrets: RawSecrets,
    /// How `up` finds machines booted in maintenance mode (all keys optional).
    pub discovery: Option<RawDiscovery>,
    /// A Proxmox VE API to learn the MAC address of nodes given by `vmid`.
    pub proxmox: Option<RawProxmox>,
    /// The kubeconfig merge of `up`.
    pub kubeconfig: Option<RawKubeconfig>,
    /// The machines of the cluster, by role.
    pub nodes: RawNodes,
    /// Strategic-merge patch files applied on top of the generated configs, in the order
    /// all, role, node.
    #[serde(default)]
    pub patches: RawPatches,
    /// How `talix up` runs (part of no key: changing it re-runs nothing).
    pub up: Option<RawUp>,
}

/// How `talix up` runs (not part of any key).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Up")]
pub struct RawUp {
    /// talosctl/kubectl processes `up` runs at once; nodes are worked on in parallel, each
    /// waiting for a free slot (`--jobs` overrides it).
    #[schemars(range(min = 1, max = 256))]
    #[schemars(extend("default" = 8))]
    #[schemars(extend("x-runbook-step" = ["apply/<node>", "ready/<node>", "verify"]))]
    pub jobs: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Network")]
pub struct RawNetwork {
    /// Host of the Kubernetes API endpoint `https://<host>:6443` (the VIP in HA setups): a host
    /// name or IP address, no scheme, no port. An IP address must be the VIP or a control-plane
    /// node's, never a worker's.
    #[schemars(with = "KubeApiHost")]
    #[schemars(extend("x-runbook-step" = ["base-config", "talosconfig", "kubeconfig"]))]
    pub api_endpoint: String,
    /// The node subnet; every node address, the gateway and the VIP lie inside it, and its
    /// prefix length is the nodes' (`10.0.0.11/24`). Also the default discovery subnet.
    #[schemars(with = "Cidr")]
    #[schemars(extend("x-runbook-step" = ["patch/<node>", "discover"]))]
    pub subnet: String,
    /// The default route's gateway.
    #[schemars(with = "Option<IpAddress>")]
    #[schemars(extend("x-default" = "the first host of `network.subnet`"))]
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub gateway: Option<String>,
    /// DNS servers of every node (at least one when given).
    #[schemars(with = "Option<Vec<IpAddress>>", length(min = 1))]
    #[schemars(extend("default" = DEFAULT_NAMESERVERS))]
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub nameservers: Option<Vec<String>>,
    /// The pod network; overlaps neither `service_cidr` nor `subnet`.
    #[schemars(with = "Cidr")]
    #[schemars(extend("x-runbook-step" = ["base-config"]))]
    pub pod_cidr: String,
    /// The service network; overlaps neither `pod_cidr` nor `subnet`.
    #[schemars(with = "Cidr")]
    #[schemars(extend("x-runbook-step" = ["base-config"]))]
    pub service_cidr: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Talos")]
pub struct RawTalos {
    /// The Talos release to install and run (`v1.11.5`, the `v` optional). Changing it on a
    /// running cluster upgrades the nodes one at a time (`talosctl upgrade`).
    #[schemars(with = "Version")]
    #[schemars(extend("x-runbook-step" = ["base-config", "upgrade/<node>"]))]
    pub version: String,
    /// The Kubernetes release (`1.34.1`). On a running cluster `up` moves it one minor version
    /// at a time (`talosctl upgrade-k8s`).
    #[schemars(with = "Version")]
    #[schemars(extend("x-runbook-step" = ["base-config", "upgrade-k8s"]))]
    pub kubernetes_version: String,
    /// The machine-config contract (`talosctl --talos-version`), at most the major.minor of
    /// `version`. Pinned in the lock file at the first build; changing it later needs
    /// `--allow-contract-change`.
    #[schemars(with = "Option<Contract>")]
    #[schemars(extend("x-default" = "major.minor of `talos.version`, then pinned in the lock file"))]
    #[schemars(extend("x-runbook-step" = ["secrets", "base-config", "talosconfig", "patch/<node>"]))]
    pub contract: Option<String>,
    /// The Image Factory image the nodes install.
    pub factory: RawFactory,
    /// A virtual IP shared by the control-plane nodes (Talos Layer 2 VIP).
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub vip: Option<RawVip>,
    /// The Talos API port (apid) of every node.
    #[schemars(range(min = 1))]
    #[schemars(extend("default" = DEFAULT_API_PORT))]
    #[schemars(extend("x-runbook-step" = ["discover", "apply/<node>"]))]
    pub api_port: Option<u16>,
    /// The disk Talos installs to, a device path under `/dev/`.
    #[schemars(with = "Option<DevicePath>")]
    #[schemars(extend("x-default" = "talosctl's default, `/dev/sda`"))]
    #[schemars(extend("x-runbook-step" = ["base-config"]))]
    pub install_disk: Option<String>,
    /// Where `up` writes the talosconfig, the kubeconfig and the node patches, relative to the
    /// workspace root (the folder holding `profiles/`).
    #[schemars(extend("x-default" = "`clusters/<name>`"))]
    #[schemars(extend("x-runbook-step" = ["talosconfig", "kubeconfig"]))]
    pub config_dir: Option<String>,
    /// The age-encrypted Talos secrets bundle, relative to the profile's folder.
    #[schemars(extend("x-default" = "`<name>.secrets.age`"))]
    #[schemars(extend("x-runbook-step" = ["secrets"]))]
    pub secrets_file: Option<String>,
    /// The folder inside `config_dir` that receives one patch file per node.
    #[schemars(extend("default" = "patches"))]
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub patches_dir: Option<String>,
    /// System extensions the image must carry (`siderolabs/qemu-guest-agent`); checked on
    /// every node after bootstrap.
    #[serde(default)]
    #[schemars(with = "Vec<ExtensionName>", length(max = MAX_EXTENSIONS))]
    #[schemars(extend("uniqueItems" = true))]
    #[schemars(extend("x-runbook-step" = ["verify"]))]
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Factory")]
pub struct RawFactory {
    /// The Image Factory schematic id (64 lower-case hex characters); the installer image is
    /// `factory.talos.dev/installer/<schematic_id>:<version>`.
    #[schemars(with = "SchematicId")]
    #[schemars(extend("x-runbook-step" = ["base-config", "upgrade/<node>"]))]
    pub schematic_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Vip")]
pub struct RawVip {
    /// The link the VIP is announced on, for control-plane nodes without a MAC address (with
    /// one, the NIC is selected by MAC).
    #[schemars(with = "InterfaceName")]
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub interface: String,
    /// The VIP: a free address of the node subnet (no node's, not the gateway).
    #[schemars(with = "IpAddress")]
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub ip: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Secrets")]
pub struct RawSecrets {
    /// age recipients (X25519 `age1...` or `ssh-ed25519 ...`); more can be listed one per line
    /// in `<name>.recipients` beside the profile. At least one in total.
    #[serde(default)]
    #[schemars(with = "Vec<Recipient>")]
    #[schemars(extend("x-runbook-step" = ["secrets"]))]
    pub recipients: Vec<String>,
    /// Validity of the client certificates talix derives for the talosconfig and the
    /// kubeconfig, counted from each CA certificate's own NotBefore: a Go-style duration of
    /// hours, minutes and seconds (`87600h`, `8760h30m`).
    #[schemars(regex(pattern = r"^([0-9]+[hms])+$"))]
    #[schemars(extend("default" = "87600h"))]
    #[schemars(extend("x-runbook-step" = ["talosconfig", "kubeconfig"]))]
    pub crt_ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Discovery")]
pub struct RawDiscovery {
    /// The addresses scanned for the Talos API port (`TALIX_ALLOW_NETS` still applies).
    #[schemars(with = "Option<Cidr>")]
    #[schemars(extend("x-default" = "`network.subnet`"))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub subnet: Option<String>,
    /// How many addresses are probed at once.
    #[schemars(range(min = MIN_CONCURRENCY, max = MAX_CONCURRENCY))]
    #[schemars(extend("default" = DEFAULT_CONCURRENCY))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub concurrency: Option<u32>,
    /// TCP connect timeout per probe, in milliseconds.
    #[schemars(range(min = 1, max = MAX_CONNECT_TIMEOUT_MS))]
    #[schemars(extend("default" = DEFAULT_CONNECT_TIMEOUT_MS))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub connect_timeout_ms: Option<u64>,
    /// How many scans before giving up on machines still missing.
    #[schemars(range(min = 1, max = MAX_ATTEMPTS))]
    #[schemars(extend("default" = DEFAULT_ATTEMPTS))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub attempts: Option<u32>,
    /// Seconds between scans.
    #[schemars(range(max = MAX_RETRY_WAIT_S))]
    #[schemars(extend("default" = DEFAULT_RETRY_WAIT_S))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub retry_wait_s: Option<u64>,
    /// When MACs cannot be read or none is known, assign the maintenance-mode addresses found,
    /// sorted numerically, to the nodes in profile order, but only when exactly as many were
    /// found as nodes are missing (runbook step 5d). `false` forbids it.
    #[schemars(extend("default" = true))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub count_fallback: Option<bool>,
}

/// Where `up` puts the cluster's kubeconfig besides the 0600 copy in `config_dir`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Kubeconfig")]
pub struct RawKubeconfig {
    /// Merge the cluster's context into `$KUBECONFIG` (first entry) or `~/.kube/config`
    /// (runbook step 11), replacing entries of the same name and keeping the others.
    #[schemars(extend("default" = true))]
    #[schemars(extend("x-runbook-step" = ["kubeconfig"]))]
    pub merge: Option<bool>,
}

/// Exactly one of `token_secret_env` and `token_secret_command`; at most one of `ca_file` and
/// `insecure_skip_verify: true`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Proxmox")]
#[schemars(extend("oneOf" = [
    { "required": ["token_secret_env"] },
    { "required": ["token_secret_command"] },
]))]
#[schemars(extend("not" = {
    "required": ["ca_file", "insecure_skip_verify"],
    "properties": { "insecure_skip_verify": { "const": true } },
}))]
pub struct RawProxmox {
    /// The Proxmox VE API, `https://host:8006`.
    #[schemars(with = "HttpsUrl")]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub url: String,
    /// The API token id, `USER@REALM!TOKENNAME`.
    #[schemars(with = "ProxmoxTokenId")]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub token_id: String,
    /// The environment variable holding the token secret (the secret never goes in the
    /// profile).
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub token_secret_env: Option<String>,
    /// A program and its arguments that print the token secret (`[pass, show, pve/talix]`).
    #[schemars(length(min = 1))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub token_secret_command: Option<Vec<String>>,
    /// A PEM CA certificate for the API's TLS certificate, relative to the profile.
    #[schemars(extend("x-default" = "the system's trust roots"))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub ca_file: Option<String>,
    /// Skip TLS certificate verification (a self-signed lab server).
    #[schemars(extend("default" = false))]
    #[schemars(extend("x-runbook-step" = ["discover"]))]
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Nodes")]
pub struct RawNodes {
    /// The control-plane nodes (at least one; an odd number for etcd quorum). The first one
    /// bootstraps etcd.
    #[schemars(transform = at_least_one_assignment)]
    pub controlplane: RawNodeGroup,
    /// The worker nodes.
    pub worker: Option<RawNodeGroup>,
}

/// `nodes.controlplane` needs at least one assignment (a worker group may be empty): the field
/// refers to `NodeGroup` and adds that constraint beside it.
fn at_least_one_assignment(schema: &mut schemars::Schema) {
    let group = schema
        .remove("$ref")
        .expect("a field of a struct type refers to it");
    schema.insert(
        "allOf".into(),
        serde_json::json!([
            { "$ref": group },
            { "required": ["assignments"], "properties": { "assignments": { "minItems": 1 } } },
        ]),
    );
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NodeGroup")]
pub struct RawNodeGroup {
    /// The link that carries the static address (and on control planes the VIP) for nodes of
    /// this group without a MAC address. Talos names links `ens18`, `enp0s18`, ... unless the
    /// image sets `net.ifnames=0`.
    #[schemars(with = "Option<InterfaceName>")]
    #[schemars(extend("x-default" = "`talos.vip.interface` on control planes, else `eth0`"))]
    #[schemars(extend("x-runbook-step" = ["patch/<node>"]))]
    pub interface: Option<String>,
    /// The machines of this group, in order.
    #[serde(default)]
    pub assignments: Vec<RawAssignment>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Assignment")]
pub struct RawAssignment {
    /// The node name (a DNS label, unique): its hostname and its step ids (`apply/<name>`).
    #[schemars(with = "DnsLabel")]
    #[schemars(extend("x-runbook-step" = ["patch/<node>", "apply/<node>", "verify"]))]
    pub name: String,
    /// The node's static address inside `network.subnet` (unique, not the gateway).
    #[schemars(with = "IpAddress")]
    #[schemars(extend("x-runbook-step" = ["talosconfig", "patch/<node>", "apply/<node>", "upgrade/<node>", "ready/<node>"]))]
    pub ip: String,
    /// The MAC address of the node's NIC (unique): discovery matches on it and the patch
    /// selects the NIC by it.
    #[schemars(with = "Option<MacAddress>")]
    #[schemars(extend("x-runbook-step" = ["patch/<node>", "discover"]))]
    pub mac: Option<String>,
    /// The Proxmox VM id (unique): with `proxmox:`, `up` learns the MAC of its first NIC (and
    /// records it in the lock file), which then selects the NIC like `mac`.
    #[schemars(extend("x-runbook-step" = ["patch/<node>", "discover"]))]
    pub vmid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Patches")]
pub struct RawPatches {
    /// Patch files (relative to the profile) for every node.
    #[serde(default)]
    #[schemars(extend("x-runbook-step" = ["render/<node>"]))]
    pub all: Vec<String>,
    /// Patch files for control-plane nodes.
    #[serde(default)]
    #[schemars(extend("x-runbook-step" = ["render/<node>"]))]
    pub controlplane: Vec<String>,
    /// Patch files for worker nodes.
    #[serde(default)]
    #[schemars(extend("x-runbook-step" = ["render/<node>"]))]
    pub worker: Vec<String>,
    /// Patch files for single nodes, by node name.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "$ref": "#/definitions/DnsLabel" }))]
    #[schemars(extend("x-runbook-step" = ["render/<node>"]))]
    pub nodes: BTreeMap<String, Vec<String>>,
}
