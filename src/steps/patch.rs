//! `patch/<node>`: the per-node patch of the runbook (hostname, static address, default route,
//! nameservers, and on control planes the VIP), generated natively and shaped the way the
//! pinned contract's generated config expects it.
//!
//! - Contracts before v1.12: the v1alpha1 `machine.network` block.
//! - From v1.12: the typed documents upstream recommends, each owning what it configures:
//!   `HostnameConfig` (`auto: off`), `LinkAliasConfig` + `LinkConfig`, `Layer2VIPConfig`,
//!   `ResolverConfig`. A typed document rejects the v1alpha1 twin of its field (`... is already
//!   set in v1alpha1 config`), and from contract v1.14 `gen config` always emits a
//!   `ResolverConfig`, so the patch never sets a v1alpha1 network field from v1.12 on (traps 2
//!   and 9). Upstream: `pkg/machinery/config/types/network/{hostname,link,link_alias,layer2_vip,resolver}.go`
//!   exist from v1.12.0; `V1Alpha1ConflictValidate` in each (e.g. hostname.go@v1.12.11:
//!   "static hostname is already set in v1alpha1 config").
//!
//! The NIC is selected by MAC whenever one is known (trap 10: kernel names are predictable,
//! `ens18`/`enp0s18`, unless the image sets `net.ifnames=0`): `deviceSelector.hardwareAddr` in
//! v1alpha1, a `LinkAliasConfig` whose CEL selector matches `mac(link.permanent_addr)` from
//! v1.12 (the form of upstream's own example, link_alias.go@v1.12.11). Without a MAC the link is
//! named, and discovery checks that the machine has it before anything is applied.

use std::collections::BTreeMap;

use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::profile::{Contract, Node, Profile, Role};

pub struct PatchBuilder;

/// First contract whose configs use the typed network documents (`HostnameConfig`,
/// `LinkConfig`, `LinkAliasConfig`, `Layer2VIPConfig`, `ResolverConfig`).
pub const TYPED_NETWORK_CONTRACT: Contract = Contract {
    major: 1,
    minor: 12,
};

/// The alias `LinkAliasConfig` gives the MAC-selected NIC. Upstream warns against kernel-style
/// names (`eth0`, `ens3`) for aliases, as they may collide with real links (link_alias.go).
pub const LINK_ALIAS: &str = "net0";

/// How a node's NIC is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nic {
    /// By hardware address (lower-case `aa:bb:cc:dd:ee:ff`).
    Mac(String),
    /// By kernel link name (only when no MAC is known).
    Name(String),
}

impl Nic {
    /// The NIC selection for `node`: its MAC when known, else its interface name.
    pub fn of(node: &Node) -> Nic {
        match &node.mac {
            Some(mac) => Nic::Mac(mac.to_ascii_lowercase()),
            None => Nic::Name(node.interface.clone()),
        }
    }

    /// The value hashed into the patch step (`mac 02:..` / `name ens18`).
    pub fn input(&self) -> String {
        match self {
            Nic::Mac(m) => format!("mac {m}"),
            Nic::Name(n) => format!("name {n}"),
        }
    }
}

/// The patch YAML for `node` under `contract`.
pub fn node_patch(profile: &Profile, node: &Node, contract: Contract) -> String {
    let header = format!(
        "# talix patch for {} ({}), contract {contract}\n",
        node.name, node.role
    );
    let body = if contract < TYPED_NETWORK_CONTRACT {
        v1alpha1_patch(profile, node)
    } else {
        typed_patch(profile, node)
    };
    header + &body
}

fn vip_of<'a>(profile: &'a Profile, node: &Node) -> Option<&'a crate::profile::model::Vip> {
    profile
        .talos
        .vip
        .as_ref()
        .filter(|_| node.role == Role::Controlplane)
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

fn v1alpha1_patch(profile: &Profile, node: &Node) -> String {
    let net = &profile.network;
    let mut y = String::from("machine:\n  network:\n");
    y.push_str(&format!("    hostname: {}\n", node.name));
    y.push_str("    interfaces:\n");
    match Nic::of(node) {
        // upstream: v1alpha1 Device.DeviceSelector{hardwareAddr} (v1alpha1_types.go@v1.11.6).
        Nic::Mac(mac) => y.push_str(&format!(
            "      - deviceSelector:\n          hardwareAddr: {}\n",
            quoted(&mac)
        )),
        Nic::Name(name) => y.push_str(&format!("      - interface: {name}\n")),
    }
    y.push_str("        dhcp: false\n");
    y.push_str(&format!(
        "        addresses:\n          - {}/{}\n",
        node.ip,
        net.subnet.prefix_len()
    ));
    let default_route = if net.gateway.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    y.push_str(&format!(
        "        routes:\n          - network: {default_route}\n            gateway: {}\n",
        net.gateway
    ));
    if let Some(vip) = vip_of(profile, node) {
        y.push_str(&format!("        vip:\n          ip: {}\n", vip.ip));
    }
    y.push_str("    nameservers:\n");
    for ns in &net.nameservers {
        y.push_str(&format!("      - {ns}\n"));
    }
    y
}

fn typed_patch(profile: &Profile, node: &Node) -> String {
    let net = &profile.network;
    let mut docs = Vec::new();
    // HostnameConfig: `auto: off` with a static hostname (`auto: stable` + hostname is invalid:
    // hostname.go@v1.12.11 Validate).
    docs.push(format!(
        "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: \"off\"\nhostname: {}\n",
        node.name
    ));
    let link = match Nic::of(node) {
        Nic::Mac(mac) => {
            docs.push(format!(
                "apiVersion: v1alpha1\nkind: LinkAliasConfig\nname: {LINK_ALIAS}\nselector:\n  match: {}\n",
                quoted(&format!("mac(link.permanent_addr) == \"{mac}\""))
            ));
            LINK_ALIAS.to_string()
        }
        Nic::Name(name) => name,
    };
    // A route without `destination` is the default route of the gateway's family; an explicit
    // 0.0.0.0/0 is rejected ("route 0 destination must be a valid IP prefix": link.go@v1.12.11
    // CommonLinkConfig.Validate refuses an unspecified destination address).
    docs.push(format!(
        "apiVersion: v1alpha1\nkind: LinkConfig\nname: {link}\naddresses:\n  - address: {}/{}\nroutes:\n  - gateway: {}\n",
        node.ip,
        net.subnet.prefix_len(),
        net.gateway
    ));
    if let Some(vip) = vip_of(profile, node) {
        // Layer2VIPConfig is named by the VIP address (layer2_vip.go@v1.12.11).
        docs.push(format!(
            "apiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: {}\nlink: {link}\n",
            vip.ip
        ));
    }
    if !net.nameservers.is_empty() {
        let mut r = String::from("apiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n");
        for ns in &net.nameservers {
            r.push_str(&format!("  - address: {ns}\n"));
        }
        docs.push(r);
    }
    docs.join("---\n")
}

impl Builder for PatchBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let name = cx
            .step
            .id
            .node()
            .ok_or_else(|| cx.fail("patch step without a node"))?;
        let node = cx
            .profile
            .node(name)
            .ok_or_else(|| cx.fail(format!("no node {name} in the profile")))?;
        let contract: Contract = cx
            .step
            .values
            .get("talos.contract")
            .map(|v| v.to_string())
            .ok_or_else(|| cx.fail("missing talos.contract input"))?
            .parse()
            .map_err(|e: String| cx.fail(e))?;
        let yaml = node_patch(cx.profile, node, contract);
        Ok([("patch".to_string(), BuiltOutput::Content(yaml.into_bytes()))].into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"
name: p
network:
  api_endpoint: 10.0.0.10
  subnet: 10.0.0.0/24
  gateway: 10.0.0.1
  nameservers: [1.1.1.1, 8.8.8.8]
  pod_cidr: 10.244.0.0/16
  service_cidr: 10.96.0.0/12
talos:
  version: v1.14.0
  kubernetes_version: 1.34.1
  factory:
    schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba
  vip: { interface: ens18, ip: 10.0.0.10 }
secrets:
  recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
nodes:
  controlplane:
    assignments:
      - { name: cp1, ip: 10.0.0.11, mac: "02:54:00:00:01:51" }
  worker:
    interface: enp0s18
    assignments:
      - { name: w1, ip: 10.0.0.21 }
"#;

    fn profile() -> (tempfile::TempDir, Profile) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.yaml"), PROFILE).unwrap();
        let p = crate::profile::load(&dir.path().join("p.yaml"))
            .unwrap()
            .profile;
        (dir, p)
    }

    fn c(minor: u32) -> Contract {
        Contract { major: 1, minor }
    }

    /// Split a multi-document patch into (kind, document) pairs.
    fn kinds(yaml: &str) -> Vec<String> {
        yaml.split("\n---\n")
            .map(|d| {
                d.lines()
                    .find_map(|l| l.strip_prefix("kind: "))
                    .unwrap_or("v1alpha1")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn before_v1_12_the_v1alpha1_network_block_selects_the_nic_by_mac() {
        let (_d, p) = profile();
        let cp1 = p.node("cp1").unwrap();
        let y = node_patch(&p, cp1, c(11));
        assert!(y.contains("    hostname: cp1\n"), "{y}");
        assert!(
            y.contains("      - deviceSelector:\n          hardwareAddr: \"02:54:00:00:01:51\"\n"),
            "{y}"
        );
        assert!(
            !y.contains("interface:"),
            "no kernel name when the MAC is known:\n{y}"
        );
        assert!(y.contains("        vip:\n          ip: 10.0.0.10\n"), "{y}");
        assert!(y.contains("    nameservers:\n      - 1.1.1.1\n"), "{y}");
        assert!(!y.contains("kind:"), "{y}");
    }

    #[test]
    fn before_v1_12_a_node_without_mac_names_its_interface_and_gets_no_vip() {
        let (_d, p) = profile();
        let w1 = p.node("w1").unwrap();
        let y = node_patch(&p, w1, c(11));
        assert!(y.contains("      - interface: enp0s18\n"), "{y}");
        assert!(!y.contains("vip"), "{y}");
    }

    /// The defect: contract v1.14 `gen config` always emits a `ResolverConfig`, and the node
    /// rejects `.machine.network.nameservers` beside it. From v1.12 on, no v1alpha1 network
    /// field is set at all.
    #[test]
    fn from_v1_12_only_typed_documents_and_no_v1alpha1_network_fields() {
        let (_d, p) = profile();
        for minor in [12, 13, 14] {
            let cp1 = p.node("cp1").unwrap();
            let y = node_patch(&p, cp1, c(minor));
            assert!(!y.contains("machine:"), "v1.{minor}: {y}");
            assert!(!y.contains("nameservers:\n      -"), "v1.{minor}: {y}");
            assert_eq!(
                kinds(&y),
                [
                    "HostnameConfig",
                    "LinkAliasConfig",
                    "LinkConfig",
                    "Layer2VIPConfig",
                    "ResolverConfig"
                ],
                "v1.{minor}: {y}"
            );
            assert!(
                y.contains("kind: HostnameConfig\nauto: \"off\"\nhostname: cp1\n"),
                "{y}"
            );
            assert!(
                y.contains(
                    "kind: LinkAliasConfig\nname: net0\nselector:\n  match: \"mac(link.permanent_addr) == \\\"02:54:00:00:01:51\\\"\"\n"
                ),
                "{y}"
            );
            assert!(
                y.contains("kind: LinkConfig\nname: net0\naddresses:\n  - address: 10.0.0.11/24\nroutes:\n  - gateway: 10.0.0.1\n"),
                "{y}"
            );
            assert!(
                !y.contains("destination"),
                "an explicit 0.0.0.0/0 is invalid: {y}"
            );
            assert!(
                y.contains("kind: Layer2VIPConfig\nname: 10.0.0.10\nlink: net0\n"),
                "{y}"
            );
            assert!(
                y.contains("kind: ResolverConfig\nnameservers:\n  - address: 1.1.1.1\n  - address: 8.8.8.8\n"),
                "{y}"
            );
        }
    }

    #[test]
    fn from_v1_12_a_worker_without_mac_names_its_link_and_has_no_vip() {
        let (_d, p) = profile();
        let w1 = p.node("w1").unwrap();
        let y = node_patch(&p, w1, c(14));
        assert_eq!(
            kinds(&y),
            ["HostnameConfig", "LinkConfig", "ResolverConfig"],
            "{y}"
        );
        assert!(y.contains("kind: LinkConfig\nname: enp0s18\n"), "{y}");
    }

    #[test]
    fn every_document_is_valid_yaml() {
        let (_d, p) = profile();
        for n in &p.nodes {
            for minor in [11, 12, 13, 14] {
                let y = node_patch(&p, n, c(minor));
                for doc in y.split("\n---\n") {
                    let v: serde_json::Value = serde_saphyr::from_str(doc)
                        .unwrap_or_else(|e| panic!("{}: v1.{minor}: {e}\n{doc}", n.name));
                    assert!(v.is_object(), "{doc}");
                }
            }
        }
    }
}
