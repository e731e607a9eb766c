//! What a simulated node needs to know from an applied machine config: its type, addresses, the
//! cluster it joins and the CA material it serves with. Extracted from the YAML documents.

use std::net::Ipv4Addr;

use base64::Engine as _;
use serde_json::Value;

use crate::machineconfig::selector::{CelSelector, DeviceSelector, LinkFacts};

/// The node-relevant facts of a machine config (private keys included; never printed).
#[derive(Clone)]
pub struct ConfigFacts {
    pub machine_type: String,
    pub hostname: Option<String>,
    /// How the config addresses links; which link it really hits is decided by [`NetworkIntent::resolve`].
    pub network: NetworkIntent,
    pub cluster_name: String,
    pub endpoint: String,
    pub kubernetes_version: String,
    pub install_image: Option<String>,
    pub discovery_enabled: bool,
    pub os_ca_cert: String,
    pub os_ca_key: Option<String>,
    pub k8s_ca_cert: Option<String>,
    pub k8s_ca_key: Option<String>,
}

impl std::fmt::Debug for ConfigFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFacts")
            .field("machine_type", &self.machine_type)
            .field("hostname", &self.hostname)
            .field("network", &self.network)
            .field("cluster_name", &self.cluster_name)
            .field("endpoint", &self.endpoint)
            .field("kubernetes_version", &self.kubernetes_version)
            .field("install_image", &self.install_image)
            .field("discovery_enabled", &self.discovery_enabled)
            .finish_non_exhaustive()
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn b64_pem(v: &Value, path: &[&str]) -> Option<String> {
    let raw = str_at(v, path)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    String::from_utf8(bytes)
        .ok()
        .filter(|s| s.contains("-----BEGIN"))
}

/// `KubeAPIServerCAConfig.issuingCA.<field>` (plain PEM), if present.
fn issuing_ca(docs: &[Value], field: &str) -> Option<String> {
    of_kind(docs, "KubeAPIServerCAConfig")
        .find_map(|d| str_at(d, &["issuingCA", field]))
        .map(str::to_string)
        .filter(|s| s.contains("-----BEGIN"))
}

/// The tag of an image reference (`repo/name:tag` → `tag`), if any.
pub fn image_tag(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next()?;
    let tag = last.split_once(':')?.1;
    Some(tag.split('@').next().unwrap_or(tag)).filter(|t| !t.is_empty())
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter()
        .filter(move |d| d.get("kind").and_then(Value::as_str) == Some(kind))
}

fn first_ipv4_of_cidr(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next()?.parse().ok()
}

impl ConfigFacts {
    /// Extracts the facts; `Err` names what is missing or unparsable.
    pub fn extract(bytes: &[u8]) -> Result<Self, String> {
        let docs: Vec<Value> = serde_saphyr::from_slice_multiple(bytes)
            .map_err(|e| format!("failed to parse config: {e}"))?;
        let main = docs
            .iter()
            .find(|d| {
                d.get("kind").is_none()
                    && (d.get("machine").is_some() || d.get("cluster").is_some())
            })
            .ok_or("the machine configuration doesn't contain v1alpha1 config")?;
        let by_kind = |kind: &'static str| of_kind(&docs, kind);

        let machine_type = str_at(main, &["machine", "type"])
            .ok_or("machine.type is not set")?
            .to_string();
        let machine_type = if machine_type == "init" {
            "controlplane".into()
        } else {
            machine_type
        };

        let network = NetworkIntent::extract(main, &docs);

        let hostname = str_at(main, &["machine", "network", "hostname"])
            .or_else(|| by_kind("HostnameConfig").find_map(|d| str_at(d, &["hostname"])))
            .map(str::to_string);

        let cluster_name = str_at(main, &["cluster", "clusterName"])
            .or_else(|| by_kind("KubeClusterConfig").find_map(|d| str_at(d, &["clusterName"])))
            .ok_or("cluster.clusterName is not set")?
            .to_string();
        let endpoint = str_at(main, &["cluster", "controlPlane", "endpoint"])
            .or_else(|| by_kind("KubeClusterConfig").find_map(|d| str_at(d, &["endpoint"])))
            .ok_or("cluster.controlPlane.endpoint is not set")?
            .to_string();
        let kubelet_image = str_at(main, &["machine", "kubelet", "image"])
            .or_else(|| by_kind("KubeletConfig").find_map(|d| str_at(d, &["image"])));
        let kubernetes_version = kubelet_image
            .and_then(image_tag)
            .unwrap_or("v1.34.1")
            .trim_start_matches('v')
            .to_string();
        let install_image = str_at(main, &["machine", "install", "image"]).map(str::to_string);
        let discovery_enabled = main
            .pointer("/cluster/discovery/enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        let os_ca_cert =
            b64_pem(main, &["machine", "ca", "crt"]).ok_or("machine.ca.crt is missing")?;
        Ok(ConfigFacts {
            machine_type,
            hostname,
            network,
            cluster_name,
            endpoint,
            kubernetes_version,
            install_image,
            discovery_enabled,
            os_ca_cert,
            os_ca_key: b64_pem(main, &["machine", "ca", "key"]),
            // From contract v1.14 the Kubernetes CA is a `KubeAPIServerCAConfig` document with
            // plain PEM (`issuingCA.{cert,key}`; workers only `acceptedCAs`), not `cluster.ca`
            // (pkg/machinery/config/types/v1alpha1/testdata/stability/v1.14/base-controlplane.yaml
            // @v1.14.0-rc.1).
            k8s_ca_cert: b64_pem(main, &["cluster", "ca", "crt"])
                .or_else(|| issuing_ca(&docs, "cert")),
            k8s_ca_key: b64_pem(main, &["cluster", "ca", "key"])
                .or_else(|| issuing_ca(&docs, "key")),
        })
    }

    /// Host part of the Kubernetes endpoint URL.
    pub fn endpoint_host(&self) -> Option<String> {
        let rest = self.endpoint.strip_prefix("https://")?;
        let hostport = rest.split('/').next()?;
        if let Some(stripped) = hostport.strip_prefix('[') {
            return stripped.split(']').next().map(str::to_string);
        }
        Some(
            hostport
                .rsplit_once(':')
                .map_or(hostport, |(h, _)| h)
                .to_string(),
        )
    }

    /// Port of the Kubernetes endpoint URL (6443 when absent).
    pub fn endpoint_port(&self) -> u16 {
        self.endpoint
            .strip_prefix("https://")
            .and_then(|r| r.split('/').next())
            .and_then(|hp| hp.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(6443)
    }

    pub fn is_controlplane(&self) -> bool {
        self.machine_type == "controlplane"
    }
}

/// Which link a v1alpha1 `interfaces[]` entry configures.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DeviceTarget {
    Name(String),
    Selector(DeviceSelector),
}

/// One v1alpha1 `machine.network.interfaces[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeviceIntent {
    target: DeviceTarget,
    addresses: Vec<Ipv4Addr>,
    vip: Option<Ipv4Addr>,
}

/// A `LinkAliasConfig`: alias name and its selector (None: not evaluable, never matches; the
/// validator refuses such configs before they get here).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AliasIntent {
    name: String,
    selector: Option<CelSelector>,
}

/// The static addressing a config asks for, per link reference (names, aliases, selectors).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkIntent {
    devices: Vec<DeviceIntent>,
    /// `LinkConfig` documents: link name (or alias) and addresses.
    link_configs: Vec<(String, Vec<Ipv4Addr>)>,
    aliases: Vec<AliasIntent>,
    /// `Layer2VIPConfig` documents: VIP and link name (or alias).
    layer2_vips: Vec<(Ipv4Addr, String)>,
}

/// What a node's link ends up with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkAddressing {
    pub addresses: Vec<Ipv4Addr>,
    pub vip: Option<Ipv4Addr>,
}

fn addresses_of(list: Option<&Value>, field: Option<&str>) -> Vec<Ipv4Addr> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| match field {
            Some(f) => str_at(a, &[f]),
            None => a.as_str(),
        })
        .filter_map(first_ipv4_of_cidr)
        .collect()
}

fn device_selector(v: &Value) -> DeviceSelector {
    let text = |key: &str| str_at(v, &[key]).map(str::to_string);
    DeviceSelector {
        bus_path: text("busPath"),
        hardware_addr: text("hardwareAddr"),
        permanent_addr: text("permanentAddr"),
        pci_id: text("pciID"),
        driver: text("driver"),
        physical: v.get("physical").and_then(Value::as_bool),
    }
}

impl NetworkIntent {
    fn extract(main: &Value, docs: &[Value]) -> NetworkIntent {
        let mut intent = NetworkIntent::default();
        for iface in main
            .pointer("/machine/network/interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if iface.get("ignore").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let target = match (str_at(iface, &["interface"]), iface.get("deviceSelector")) {
                (Some(name), _) => DeviceTarget::Name(name.to_string()),
                (None, Some(selector)) => DeviceTarget::Selector(device_selector(selector)),
                (None, None) => continue,
            };
            intent.devices.push(DeviceIntent {
                target,
                addresses: addresses_of(iface.get("addresses"), None),
                vip: str_at(iface, &["vip", "ip"]).and_then(|s| s.parse().ok()),
            });
        }
        for link in of_kind(docs, "LinkConfig") {
            if let Some(name) = str_at(link, &["name"]) {
                intent.link_configs.push((
                    name.to_string(),
                    addresses_of(link.get("addresses"), Some("address")),
                ));
            }
        }
        for alias in of_kind(docs, "LinkAliasConfig") {
            if let Some(name) = str_at(alias, &["name"]) {
                intent.aliases.push(AliasIntent {
                    name: name.to_string(),
                    selector: str_at(alias, &["selector", "match"])
                        .and_then(|m| CelSelector::parse(m).ok()),
                });
            }
        }
        for vip in of_kind(docs, "Layer2VIPConfig") {
            if let (Some(ip), Some(link)) = (
                str_at(vip, &["name"]).and_then(|s| s.parse().ok()),
                str_at(vip, &["link"]),
            ) {
                intent.layer2_vips.push((ip, link.to_string()));
            }
        }
        intent
    }

    /// The alias `LinkAliasConfig` gives `link` on a node of `talos_version` (v1.12+): the first
    /// config whose selector matches; a `%d` pattern names the first match `…0` (upstream:
    /// internal/app/machined/pkg/controllers/network/link_alias_config.go@v1.12.11,
    /// pkg/machinery/config/types/network/link_alias.go@v1.14.0-rc.1).
    pub fn alias_of(&self, link: &LinkFacts, talos_version: &str) -> Option<String> {
        if !super::wire::version_at_least(talos_version, 1, 12) {
            return None;
        }
        self.aliases
            .iter()
            .find(|a| a.selector.as_ref().is_some_and(|s| s.matches(link)))
            .map(|a| a.name.replace("%d", "0"))
    }

    /// What this config gives the node's only link: entries naming the link (or, from v1.12,
    /// its alias — physical links are looked up by alias too, upstream:
    /// internal/app/machined/pkg/controllers/network/link_spec.go@v1.12.11 `findLink`) or whose
    /// `deviceSelector` matches it (device_config.go@v1.11.6). Entries for links the machine
    /// does not have configure nothing.
    pub fn resolve(&self, link: &LinkFacts, talos_version: &str) -> LinkAddressing {
        let alias = self.alias_of(link, talos_version);
        let names_link = |name: &str| name == link.name || alias.as_deref() == Some(name);
        let mut out = LinkAddressing::default();
        for device in &self.devices {
            let hit = match &device.target {
                DeviceTarget::Name(name) => names_link(name),
                DeviceTarget::Selector(selector) => selector.matches(link),
            };
            if hit {
                out.addresses.extend(&device.addresses);
                out.vip = out.vip.or(device.vip);
            }
        }
        for (name, addresses) in &self.link_configs {
            if names_link(name) {
                out.addresses.extend(addresses);
            }
        }
        for (ip, name) in &self.layer2_vips {
            if names_link(name) {
                out.vip = out.vip.or(Some(*ip));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] =
        include_bytes!("../machineconfig/testdata/controlplane-contract-v1.11.yaml");

    #[test]
    fn extracts_classic_sample() {
        let f = ConfigFacts::extract(SAMPLE).unwrap();
        assert_eq!(f.machine_type, "controlplane");
        assert_eq!(f.cluster_name, "base");
        assert_eq!(f.endpoint_host().as_deref(), Some("base"));
        assert_eq!(f.endpoint_port(), 6443);
        assert_eq!(f.kubernetes_version, "1.28.0");
        assert!(f.discovery_enabled);
        assert!(f.os_ca_cert.contains("BEGIN CERTIFICATE"));
        assert!(f.os_ca_key.is_some());
        assert_eq!(f.network, NetworkIntent::default());
    }

    #[test]
    fn issues_certificates_from_the_sample_cas() {
        let f = ConfigFacts::extract(SAMPLE).unwrap();
        let ip: std::net::IpAddr = "127.0.0.5".parse().unwrap();
        let server = crate::node::tls::issue_leaf(
            &f.os_ca_cert,
            f.os_ca_key.as_deref().unwrap(),
            crate::node::tls::LeafUsage::Server {
                ips: &[ip],
                dns: &[],
            },
        )
        .expect("OS CA (Ed25519) signs");
        crate::node::tls::server_config(&server, Some(&f.os_ca_cert), &[]).unwrap();
        crate::node::tls::issue_leaf(
            f.k8s_ca_cert.as_deref().unwrap(),
            f.k8s_ca_key.as_deref().unwrap(),
            crate::node::tls::LeafUsage::Client {
                common_name: "admin",
                organizations: &["system:masters"],
            },
        )
        .expect("Kubernetes CA (ECDSA) signs");
    }

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("ghcr.io/siderolabs/installer:v1.11.5"),
            Some("v1.11.5")
        );
        assert_eq!(image_tag("localhost:5000/installer"), None);
        assert_eq!(
            image_tag("localhost:5000/installer:v1.13.0"),
            Some("v1.13.0")
        );
    }

    #[test]
    fn rejects_config_without_main_document() {
        assert!(
            ConfigFacts::extract(b"apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n")
                .is_err()
        );
    }

    fn link(name: &str) -> LinkFacts {
        LinkFacts {
            name: name.into(),
            hardware_addr: "bc:24:11:5e:2a:01".into(),
            permanent_addr: "bc:24:11:5e:2a:01".into(),
            driver: "virtio_net".into(),
            bus_path: "0000:00:12.0".into(),
            pci_id: String::new(),
            physical: true,
        }
    }

    fn intent(network: &str, docs: &str) -> NetworkIntent {
        let text = String::from_utf8_lossy(SAMPLE)
            .replace("    network: {}\n", &format!("    network:\n{network}"))
            + docs;
        ConfigFacts::extract(text.as_bytes()).unwrap().network
    }

    fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn v1alpha1_interfaces_address_only_the_named_or_selected_link() {
        let named = intent(
            "        interfaces:\n            - interface: eth0\n              addresses: [127.0.0.9/24]\n              vip:\n                  ip: 127.0.0.10\n",
            "",
        );
        assert_eq!(
            named.resolve(&link("ens18"), "v1.11.5"),
            LinkAddressing::default()
        );
        assert_eq!(
            named.resolve(&link("eth0"), "v1.11.5"),
            LinkAddressing {
                addresses: ips(&["127.0.0.9"]),
                vip: Some("127.0.0.10".parse().unwrap()),
            }
        );
        let by_mac = intent(
            "        interfaces:\n            - deviceSelector:\n                  hardwareAddr: \"bc:24:11:*\"\n              addresses: [127.0.0.9/24]\n",
            "",
        );
        assert_eq!(
            by_mac.resolve(&link("ens18"), "v1.11.5").addresses,
            ips(&["127.0.0.9"])
        );
        let other_mac = intent(
            "        interfaces:\n            - deviceSelector:\n                  hardwareAddr: \"02:00:*\"\n              addresses: [127.0.0.9/24]\n",
            "",
        );
        assert!(
            other_mac
                .resolve(&link("ens18"), "v1.11.5")
                .addresses
                .is_empty()
        );
        let by_driver = intent(
            "        interfaces:\n            - deviceSelector:\n                  driver: virtio_net\n                  physical: true\n              addresses: [127.0.0.9]\n",
            "",
        );
        assert_eq!(
            by_driver.resolve(&link("ens18"), "v1.11.5").addresses,
            ips(&["127.0.0.9"])
        );
        let ignored = intent(
            "        interfaces:\n            - interface: ens18\n              ignore: true\n              addresses: [127.0.0.9/24]\n",
            "",
        );
        assert!(
            ignored
                .resolve(&link("ens18"), "v1.11.5")
                .addresses
                .is_empty()
        );
    }

    #[test]
    fn typed_documents_address_links_by_name_or_alias_from_v1_12() {
        let docs = "---\napiVersion: v1alpha1\nkind: LinkAliasConfig\nname: net0\nselector:\n    match: mac(link.permanent_addr) == \"bc:24:11:5e:2a:01\"\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: net0\naddresses:\n    - address: 127.0.0.9/24\n---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 127.0.0.10\nlink: net0\n";
        let by_alias = intent("        {}\n", docs);
        let ens18 = link("ens18");
        assert_eq!(
            by_alias.alias_of(&ens18, "v1.12.4").as_deref(),
            Some("net0")
        );
        assert_eq!(
            by_alias.resolve(&ens18, "v1.12.4"),
            LinkAddressing {
                addresses: ips(&["127.0.0.9"]),
                vip: Some("127.0.0.10".parse().unwrap()),
            }
        );
        // v1.11 has no aliases.
        assert_eq!(
            by_alias.resolve(&ens18, "v1.11.5"),
            LinkAddressing::default()
        );
        let mut other = ens18.clone();
        other.permanent_addr = "02:00:00:00:00:01".into();
        assert_eq!(
            by_alias.resolve(&other, "v1.12.4"),
            LinkAddressing::default()
        );
        let named = intent(
            "        {}\n",
            "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\naddresses:\n    - address: 127.0.0.9/24\n",
        );
        assert!(named.resolve(&ens18, "v1.12.4").addresses.is_empty());
        assert_eq!(
            named.resolve(&link("eth0"), "v1.12.4").addresses,
            ips(&["127.0.0.9"])
        );
        let pattern = intent(
            "        {}\n",
            "---\napiVersion: v1alpha1\nkind: LinkAliasConfig\nname: net%d\nselector:\n    match: link.driver == \"virtio_net\"\n",
        );
        assert_eq!(pattern.alias_of(&ens18, "v1.14.0").as_deref(), Some("net0"));
    }

    /// The Kubernetes CA of a contract v1.14 control plane comes from `KubeAPIServerCAConfig`;
    /// without it the node serves no Kubernetes API and `health` never sees the nodes.
    #[test]
    fn v1_14_kubernetes_ca_comes_from_kube_apiserver_ca_config() {
        let golden =
            include_bytes!("../../testdata/upstream/stability/v1.14/base-controlplane.yaml");
        let f = ConfigFacts::extract(golden).unwrap();
        assert!(
            f.k8s_ca_cert
                .as_deref()
                .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
        );
        assert!(
            f.k8s_ca_key
                .as_deref()
                .is_some_and(|k| k.contains("PRIVATE KEY"))
        );
        assert_eq!(f.endpoint_host().as_deref(), Some("base"));
    }
}
