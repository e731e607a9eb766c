//! The description of a simulated cluster (which machines exist, where they answer, which faults
//! they inject), read from YAML or JSON by `talix sim serve --spec FILE`.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors reading or checking a cluster spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot parse cluster spec {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid cluster spec: {0}")]
    Invalid(String),
}

/// Machines of a simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// The machines meant for this cluster.
    pub nodes: Vec<NodeSpec>,
    /// Machines of some other cluster, in maintenance mode on the same subnet.
    #[serde(default)]
    pub foreign_nodes: Vec<NodeSpec>,
}

/// Which kind of machine the operator intends a node to become (informational only: the applied
/// machine config decides the real type).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleHint {
    Controlplane,
    Worker,
}

/// One simulated machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// MAC address of its single NIC, e.g. `bc:24:11:5e:2a:01`.
    pub mac: String,
    /// Name of that NIC. Default: what the kernel calls a Proxmox virtio NIC (PCI slot 18)
    /// under predictable naming, `ens18`; `eth0` when `kernel_args` has `net.ifnames=0`.
    #[serde(default)]
    pub nic: Option<String>,
    /// Kernel arguments of the boot image (only `net.ifnames=0` matters: classic `eth0` names).
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// The DHCP address it has in maintenance mode (must be in 127.0.0.0/8).
    pub address: Ipv4Addr,
    #[serde(default)]
    pub role: Option<RoleHint>,
    #[serde(default = "default_api_port")]
    pub api_port: u16,
    /// Time the node is unreachable after a maintenance apply-config (install + reboot).
    #[serde(default = "default_reboot_delay_ms")]
    pub reboot_delay_ms: u64,
    /// Talos version of the boot media (what runs in maintenance mode).
    #[serde(default = "default_maintenance_version")]
    pub maintenance_version: String,
    /// System extensions reported by `get extensions`.
    #[serde(default)]
    pub extensions: Vec<ExtensionSpec>,
    #[serde(default)]
    pub faults: Faults,
}

/// A system extension baked into the node image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionSpec {
    pub name: String,
    pub version: String,
}

/// Fault injection knobs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Extra time added to the reboot after apply-config.
    #[serde(default)]
    pub slow_reboot_ms: u64,
    /// The first maintenance apply-config drops the connection without applying anything.
    #[serde(default)]
    pub apply_fails_once: bool,
    /// After apply-config the node never answers again.
    #[serde(default)]
    pub never_comes_back: bool,
    /// The maintenance apply-config takes effect but its answer is held until this many
    /// machines of the spec have received a config (this one included), for at most 60 s;
    /// past that it answers `DeadlineExceeded`. Observes a client that applies machines
    /// concurrently (one that waits for each answer before the next apply never gets one).
    #[serde(default)]
    pub apply_answer_waits_for_configured: u32,
    /// `get links` is refused (forces count-based matching in discovery).
    #[serde(default)]
    pub links_unsupported: bool,
    /// `bootstrap` answers FailedPrecondition this many times before working.
    #[serde(default)]
    pub bootstrap_not_ready_times: u32,
    /// Transient `bootstrap` failures, one per call in this order, before bootstrap works
    /// (repeat a kind for N calls). Nothing is bootstrapped by a failed call.
    #[serde(default)]
    pub bootstrap_errors: Vec<BootstrapError>,
}

/// A transient bootstrap failure, each one the talosctl-side retry of upstream treats as
/// expected (upstream: pkg/cluster/bootstrap.go@v1.13.9 APIBootstrapper.Bootstrap).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapError {
    /// `DeadlineExceeded`: the call timed out in the gRPC stack.
    DeadlineExceeded,
    /// `Canceled`: apid restarting (maintenance -> ready) closed the backend connection.
    Canceled,
    /// The connection is dropped without an answer (`error reading from server: EOF`).
    Eof,
    /// `Unavailable`: apid cannot dial the node (connection refused).
    Unavailable,
    /// `FailedPrecondition`: bootstrap is not available yet.
    FailedPrecondition,
    /// `FailedPrecondition`: time is not in sync yet.
    TimeNotInSync,
}

fn default_api_port() -> u16 {
    50000
}
fn default_reboot_delay_ms() -> u64 {
    2000
}
fn default_maintenance_version() -> String {
    "v1.11.5".to_string()
}

/// What the simulated NIC looks like to `get links` and link selectors: a Proxmox virtio-net
/// device at PCI slot 18 (hence `ens18`).
pub const NIC_DRIVER: &str = "virtio_net";
/// PCI bus path of the simulated NIC.
pub const NIC_BUS_PATH: &str = "0000:00:12.0";

impl NodeSpec {
    /// The NIC's name: `nic` if given, else `eth0` with `net.ifnames=0`, else `ens18`.
    pub fn nic_name(&self) -> String {
        if let Some(name) = &self.nic {
            return name.clone();
        }
        if self.kernel_args.iter().any(|a| a == "net.ifnames=0") {
            "eth0".to_string()
        } else {
            "ens18".to_string()
        }
    }

    /// The NIC as link selectors see it (MAC in Go's lowercase spelling).
    pub fn link_facts(&self) -> crate::machineconfig::selector::LinkFacts {
        let mac = self.mac.to_ascii_lowercase();
        crate::machineconfig::selector::LinkFacts {
            name: self.nic_name(),
            hardware_addr: mac.clone(),
            permanent_addr: mac,
            driver: NIC_DRIVER.to_string(),
            bus_path: NIC_BUS_PATH.to_string(),
            pci_id: String::new(),
            physical: true,
        }
    }
}

impl ClusterSpec {
    /// Reads a spec from a YAML or JSON file (JSON is YAML).
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = fs_err::read_to_string(path)?;
        let spec: ClusterSpec = serde_saphyr::from_str(&text).map_err(|e| SpecError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        spec.check()?;
        Ok(spec)
    }

    /// Every node, own ones first, then foreign ones, with a flag saying which is which.
    pub fn all_nodes(&self) -> impl Iterator<Item = (&NodeSpec, bool)> {
        self.nodes
            .iter()
            .map(|n| (n, false))
            .chain(self.foreign_nodes.iter().map(|n| (n, true)))
    }

    /// Checks the network rule (loopback only), unique names and unique listening sockets.
    pub fn check(&self) -> Result<(), SpecError> {
        let mut names = std::collections::BTreeSet::new();
        let mut sockets = std::collections::BTreeSet::new();
        for (node, _) in self.all_nodes() {
            if !node.address.is_loopback() {
                return Err(SpecError::Invalid(format!(
                    "node {}: address {} is not in 127.0.0.0/8",
                    node.name, node.address
                )));
            }
            if !names.insert(node.name.clone()) {
                return Err(SpecError::Invalid(format!(
                    "duplicate node name {}",
                    node.name
                )));
            }
            if node
                .nic
                .as_deref()
                .is_some_and(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ']))
            {
                return Err(SpecError::Invalid(format!(
                    "node {}: nic {:?} is not a Linux interface name",
                    node.name,
                    node.nic.as_deref().unwrap_or_default()
                )));
            }
            if !sockets.insert((node.address, node.api_port)) {
                return Err(SpecError::Invalid(format!(
                    "node {}: {}:{} is used twice",
                    node.name, node.address, node.api_port
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults_and_rejects_unknown_fields() {
        let spec: ClusterSpec = serde_saphyr::from_str(
            "nodes:\n  - name: cp1\n    mac: bc:24:11:00:00:01\n    address: 127.0.10.1\n    faults:\n      apply_fails_once: true\n",
        )
        .unwrap();
        assert_eq!(spec.nodes[0].api_port, 50000);
        assert!(spec.nodes[0].faults.apply_fails_once);
        spec.check().unwrap();
        let bad: Result<ClusterSpec, _> = serde_saphyr::from_str(
            "nodes:\n  - name: cp1\n    mac: x\n    address: 127.0.0.1\n    colour: red\n",
        );
        assert!(bad.is_err());
    }

    #[test]
    fn nic_name_defaults_to_ens18_and_follows_ifnames() {
        let spec: ClusterSpec = serde_saphyr::from_str(
            "nodes:\n  - {name: a, mac: x, address: 127.0.0.1}\n  - {name: b, mac: x, address: 127.0.0.2, kernel_args: [quiet, net.ifnames=0]}\n  - {name: c, mac: x, address: 127.0.0.3, nic: enp6s18}\n",
        )
        .unwrap();
        spec.check().unwrap();
        let names: Vec<String> = spec.nodes.iter().map(NodeSpec::nic_name).collect();
        assert_eq!(names, ["ens18", "eth0", "enp6s18"]);
        let bad: ClusterSpec = serde_saphyr::from_str(
            "nodes:\n  - {name: a, mac: x, address: 127.0.0.1, nic: \"\"}\n",
        )
        .unwrap();
        assert!(bad.check().is_err());
    }

    #[test]
    fn rejects_non_loopback_addresses() {
        let spec: ClusterSpec =
            serde_saphyr::from_str("nodes:\n  - name: cp1\n    mac: x\n    address: 10.0.0.1\n")
                .unwrap();
        assert!(spec.check().is_err());
    }
}
