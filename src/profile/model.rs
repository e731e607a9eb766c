//! The validated profile: typed addresses, versions and resolved paths. Everything downstream
//! (the derivation graph, the steps) reads this, never the raw YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Serialize;

/// A Talos or Kubernetes release `major.minor.patch` (written with or without a leading `v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let body = s.strip_prefix('v').unwrap_or(s);
        let parts: Vec<&str> = body.split('.').collect();
        let num = |p: &str| {
            p.parse::<u32>()
                .ok()
                .filter(|_| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        match parts.as_slice() {
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(major), Some(minor), Some(patch)) => Ok(Self {
                    major,
                    minor,
                    patch,
                }),
                _ => Err(format!(
                    "{s:?} is not a version of the form vMAJOR.MINOR.PATCH"
                )),
            },
            _ => Err(format!(
                "{s:?} is not a version of the form vMAJOR.MINOR.PATCH"
            )),
        }
    }
}

impl Version {
    /// The config contract this release defaults to (its major.minor).
    pub fn contract(&self) -> Contract {
        Contract {
            major: self.major,
            minor: self.minor,
        }
    }
    /// `v1.11.5`.
    pub fn with_v(&self) -> String {
        format!("v{self}")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A machine-config contract `vMAJOR.MINOR` (talosctl `--talos-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Contract {
    pub major: u32,
    pub minor: u32,
}

impl FromStr for Contract {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let body = s.strip_prefix('v').unwrap_or(s);
        let bad = || format!("{s:?} is not a contract of the form vMAJOR.MINOR (e.g. v1.11)");
        let (a, b) = body.split_once('.').ok_or_else(bad)?;
        let num = |p: &str| {
            (!p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        Ok(Self {
            major: num(a).ok_or_else(bad)?,
            minor: num(b).ok_or_else(bad)?,
        })
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.major, self.minor)
    }
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        })
    }
}

/// One machine of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// Static address the node gets (its prefix is the subnet's).
    pub ip: IpAddr,
    /// Lower-case `aa:bb:cc:dd:ee:ff`, when known from the profile.
    pub mac: Option<String>,
    pub vmid: Option<u32>,
    /// The interface the static address, route (and on control planes the VIP) go on.
    pub interface: String,
    /// Index in its group's `assignments` list (for field paths in messages).
    pub index: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    /// Host of the Kubernetes API endpoint (`https://<host>:6443`).
    pub api_endpoint: String,
    pub subnet: IpNet,
    pub gateway: IpAddr,
    pub nameservers: Vec<IpAddr>,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vip {
    pub interface: String,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Talos {
    pub version: Version,
    pub kubernetes_version: Version,
    /// The contract named in the profile, if any; see [`crate::lockfile`] for pinning.
    pub contract: Option<Contract>,
    pub schematic_id: String,
    pub vip: Option<Vip>,
    pub api_port: u16,
    pub install_disk: Option<String>,
    pub extensions: Vec<String>,
}

impl Talos {
    /// `factory.talos.dev/installer/<schematic>:v<version>`.
    pub fn installer_image(&self) -> String {
        format!(
            "factory.talos.dev/installer/{}:{}",
            self.schematic_id,
            self.version.with_v()
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    pub subnet: IpNet,
    pub concurrency: u32,
    pub connect_timeout_ms: u64,
    pub attempts: u32,
    pub retry_wait_s: u64,
    /// Runbook step 5d: nodes without a readable MAC may be matched by count (default true).
    pub count_fallback: bool,
}

/// What `up` does with the fetched kubeconfig besides `<config_dir>/kubeconfig`.
#[derive(Debug, Clone, Serialize)]
pub struct KubeconfigSettings {
    /// Merge the cluster's context into `$KUBECONFIG` / `~/.kube/config` (runbook step 11;
    /// default true).
    pub merge: bool,
}

/// Where the Proxmox API token secret comes from (never the secret itself).
#[derive(Debug, Clone, Serialize)]
pub enum TokenSecretSource {
    Env(String),
    Command(Vec<String>),
}

/// How the Proxmox server certificate is checked.
#[derive(Debug, Clone, Serialize)]
pub enum ProxmoxTls {
    CaFile(PathBuf),
    InsecureSkipVerify,
    SystemRoots,
}

#[derive(Debug, Clone, Serialize)]
pub struct Proxmox {
    pub url: String,
    pub token_id: String,
    pub token_secret: TokenSecretSource,
    pub tls: ProxmoxTls,
}

/// A user patch file: its path as written (relative to the profile) and resolved.
#[derive(Debug, Clone, Serialize)]
pub struct PatchFile {
    pub written: String,
    pub path: PathBuf,
    /// `patches.all[0]` etc.
    pub field: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Patches {
    pub all: Vec<PatchFile>,
    pub controlplane: Vec<PatchFile>,
    pub worker: Vec<PatchFile>,
    pub nodes: BTreeMap<String, Vec<PatchFile>>,
}

impl Patches {
    /// The user patches that apply to `node`, in application order: all, role, node.
    pub fn for_node(&self, node: &Node) -> Vec<&PatchFile> {
        let role = match node.role {
            Role::Controlplane => &self.controlplane,
            Role::Worker => &self.worker,
        };
        self.all
            .iter()
            .chain(role)
            .chain(self.nodes.get(&node.name).into_iter().flatten())
            .collect()
    }
}

/// A validated profile.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: String,
    /// The profile file.
    pub source: PathBuf,
    /// Every path the profile names, resolved and confined (see [`crate::workspace`]).
    pub workspace: crate::workspace::Workspace,
    pub network: Network,
    pub talos: Talos,
    pub recipients: Vec<String>,
    /// `<name>.recipients` beside the profile, when it exists.
    pub recipients_file: Option<PathBuf>,
    /// `secrets.crt_ttl` in seconds: lifetime of the derived talosconfig / kubeconfig client
    /// certificates from the CA's NotBefore (see [`crate::clientcert`]).
    pub crt_ttl_s: i64,
    pub discovery: Discovery,
    pub proxmox: Option<Proxmox>,
    pub kubeconfig: KubeconfigSettings,
    /// Control-plane nodes first, each group in profile order.
    pub nodes: Vec<Node>,
    pub patches: Patches,
    pub up: UpSettings,
}

/// How `talix up` runs: nothing here enters a key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpSettings {
    /// talosctl/kubectl processes run at once (`up.jobs`; `--jobs` overrides it).
    pub jobs: Option<usize>,
}

impl Profile {
    pub fn controlplanes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Controlplane)
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
    /// `secrets.crt_ttl` as talix shows it (`87600h`, or seconds when not whole hours).
    pub fn crt_ttl_text(&self) -> String {
        if self.crt_ttl_s % 3600 == 0 {
            format!("{}h", self.crt_ttl_s / 3600)
        } else {
            format!("{}s", self.crt_ttl_s)
        }
    }
    /// `https://<api_endpoint>:6443`.
    pub fn cluster_endpoint(&self) -> String {
        let host = &self.network.api_endpoint;
        if host.contains(':') && !host.starts_with('[') {
            format!("https://[{host}]:6443")
        } else {
            format!("https://{host}:6443")
        }
    }
}
