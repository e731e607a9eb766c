//! Talos machine configuration as the simulator understands it: parsing (single and
//! multi-document), a summary the simulated nodes act on, and the validation real Talos applies.

pub mod contract;
pub mod generate;
pub mod merge;
pub mod schema;
pub mod selector;
mod validate;
pub mod yaml;

pub use validate::{
    HOSTNAME_CONFLICT, MISSING_V1ALPHA1, NodeRules, PARSE_PREFIX, Rejection,
    STABLE_HOSTNAME_CONFLICT, VALIDATION_PREFIX, VIP_ON_WORKER, check, format_errors, validate,
    validate_for,
};

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;

use yaml::Yaml;

/// Role of a machine, from `machine.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineType {
    ControlPlane,
    Worker,
    /// Legacy `init` type (a control plane node that bootstraps itself).
    Init,
}

impl MachineType {
    /// The spelling used in configs and in `get members` output.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::ControlPlane => "controlplane",
            MachineType::Worker => "worker",
            MachineType::Init => "init",
        }
    }

    /// Whether the node runs the control plane (and may carry a VIP, bootstrap etcd).
    pub fn is_control_plane(self) -> bool {
        !matches!(self, MachineType::Worker)
    }

    fn parse(s: &str) -> Option<MachineType> {
        match s {
            "controlplane" => Some(MachineType::ControlPlane),
            "worker" | "join" => Some(MachineType::Worker),
            "init" => Some(MachineType::Init),
            _ => None,
        }
    }
}

/// Layout of the config file: the classic single v1alpha1 document, or v1alpha1 plus typed
/// documents (v1.12+ generators always add at least a `HostnameConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContractShape {
    SingleDocument,
    MultiDocument,
}

/// Static addressing of one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddresses {
    /// Link name (`eth0`), or empty when the interface is picked by `deviceSelector`.
    pub interface: String,
    /// Static addresses with prefix length.
    pub addresses: Vec<IpNet>,
    /// Whether DHCP is enabled on the link.
    pub dhcp: bool,
}

/// A certificate authority as PEM text. The key is never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CaMaterial {
    pub crt_pem: String,
    /// Empty on workers (their configs carry `key: ""`).
    pub key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("crt_pem_len", &self.crt_pem.len())
            .field("has_key", &!self.key_pem.is_empty())
            .finish()
    }
}

/// What a simulated node needs to know about the config it was given.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineConfigSummary {
    pub machine_type: MachineType,
    /// Static hostname (`machine.network.hostname` or `HostnameConfig.hostname`).
    pub hostname: Option<String>,
    /// Static addresses per interface (`machine.network.interfaces`, or `LinkConfig` documents).
    pub interfaces: Vec<InterfaceAddresses>,
    /// Shared virtual IP (`interfaces[].vip.ip` or a `Layer2VIPConfig` document).
    pub vip: Option<IpAddr>,
    /// Link the VIP is announced on, when known.
    pub vip_interface: Option<String>,
    pub cluster_name: Option<String>,
    /// Kubernetes API URL (`cluster.controlPlane.endpoint` / `KubeClusterConfig.endpoint`).
    pub control_plane_endpoint: Option<String>,
    /// Kubernetes version without the leading `v`, from the kubelet image tag.
    pub kubernetes_version: Option<String>,
    pub install_image: Option<String>,
    pub install_disk: Option<String>,
    /// Talos API CA (`machine.ca`).
    pub os_ca: CaMaterial,
    /// Kubernetes CA (`cluster.ca` / `KubeAPIServerCAConfig.issuingCA`, or its first `acceptedCAs`).
    pub k8s_ca: CaMaterial,
    pub shape: ContractShape,
    /// `kind` of every typed document, in file order (the v1alpha1 document is not listed).
    pub document_kinds: Vec<String>,
}

/// Problems found while reading a machine config.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("failed to parse config: {0}")]
    Parse(String),
    #[error("the machine configuration doesn't contain v1alpha1 config")]
    MissingV1Alpha1,
    #[error("machine.type is missing or unknown: {0:?}")]
    MachineType(String),
}

/// One parsed config file: its documents in order.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigDocuments {
    pub docs: Vec<Yaml>,
}

impl ConfigDocuments {
    /// Parses config bytes (any number of `---`-separated documents).
    pub fn parse(bytes: &[u8]) -> Result<ConfigDocuments, ConfigError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ConfigError::Parse("config is not valid UTF-8".to_string()))?;
        let docs = yaml::parse_documents(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Ok(ConfigDocuments { docs })
    }

    /// The legacy v1alpha1 document (no `kind`, has `version`/`machine`/`cluster`/...).
    pub fn v1alpha1(&self) -> Option<&Yaml> {
        self.docs.iter().find(|d| is_v1alpha1_document(d))
    }

    /// Mutable access to the v1alpha1 document.
    pub fn v1alpha1_mut(&mut self) -> Option<&mut Yaml> {
        self.docs.iter_mut().find(|d| is_v1alpha1_document(d))
    }

    /// Typed documents of the given kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Yaml> + 'a {
        self.docs
            .iter()
            .filter(move |d| d.get("kind").and_then(Yaml::as_str) == Some(kind))
    }

    /// Re-encodes the documents in Talos style.
    pub fn encode(&self) -> String {
        yaml::emit_documents(&self.docs)
    }
}

/// Whether a document is the legacy v1alpha1 one (decoder rule of formats.md §3).
pub fn is_v1alpha1_document(doc: &Yaml) -> bool {
    if doc.get("kind").is_some() || doc.get("apiVersion").is_some() {
        return false;
    }
    ["version", "machine", "cluster", "debug", "persist"]
        .iter()
        .any(|k| doc.get(k).is_some())
}

fn str_at(doc: &Yaml, dotted: &str) -> Option<String> {
    doc.path(dotted)
        .and_then(Yaml::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Decodes a base64-of-PEM config field; an empty or undecodable field gives "".
pub fn decode_b64_pem(doc: &Yaml, dotted: &str) -> String {
    doc.path(dotted)
        .and_then(Yaml::as_str)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default()
}

/// A static address as Talos reads it: CIDR, or a bare IP meaning a host prefix.
pub fn parse_address(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn image_tag_version(image: &str) -> Option<String> {
    let (_, tag) = image.rsplit_once(':')?;
    if tag.contains('/') {
        return None;
    }
    Some(tag.trim_start_matches('v').to_string())
}

/// Reads the summary of a config without validating it (see [`validate`] for that).
pub fn summarize(bytes: &[u8]) -> Result<MachineConfigSummary, ConfigError> {
    let config = ConfigDocuments::parse(bytes)?;
    summarize_documents(&config)
}

/// [`summarize`] on already parsed documents.
pub fn summarize_documents(config: &ConfigDocuments) -> Result<MachineConfigSummary, ConfigError> {
    let main = config.v1alpha1().ok_or(ConfigError::MissingV1Alpha1)?;
    let type_text = str_at(main, "machine.type").unwrap_or_default();
    let machine_type =
        MachineType::parse(&type_text).ok_or(ConfigError::MachineType(type_text.clone()))?;

    let mut hostname = str_at(main, "machine.network.hostname");
    if hostname.is_none() {
        hostname = config
            .of_kind("HostnameConfig")
            .find_map(|d| str_at(d, "hostname"));
    }

    let mut interfaces = Vec::new();
    let mut vip = None;
    let mut vip_interface = None;
    if let Some(devices) = main
        .path("machine.network.interfaces")
        .and_then(Yaml::as_seq)
    {
        for device in devices {
            let name = str_at(device, "interface").unwrap_or_default();
            let addresses = device
                .get("addresses")
                .and_then(Yaml::as_seq)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.as_str().and_then(parse_address))
                .collect();
            let dhcp = matches!(device.get("dhcp"), Some(Yaml::Bool(true)));
            if let Some(ip) = str_at(device, "vip.ip").and_then(|s| s.parse::<IpAddr>().ok()) {
                vip = Some(ip);
                vip_interface = Some(name.clone()).filter(|n| !n.is_empty());
            }
            interfaces.push(InterfaceAddresses {
                interface: name,
                addresses,
                dhcp,
            });
        }
    }
    for link in config.of_kind("LinkConfig") {
        let name = str_at(link, "name").unwrap_or_default();
        let addresses = link
            .get("addresses")
            .and_then(Yaml::as_seq)
            .unwrap_or_default()
            .iter()
            .filter_map(|a| str_at(a, "address").and_then(|s| s.parse::<IpNet>().ok()))
            .collect();
        let dhcp = config
            .of_kind("DHCPv4Config")
            .any(|d| str_at(d, "name").as_deref() == Some(name.as_str()));
        interfaces.push(InterfaceAddresses {
            interface: name,
            addresses,
            dhcp,
        });
    }
    for dhcp_doc in config.of_kind("DHCPv4Config") {
        let name = str_at(dhcp_doc, "name").unwrap_or_default();
        if !interfaces.iter().any(|i| i.interface == name) {
            interfaces.push(InterfaceAddresses {
                interface: name,
                addresses: Vec::new(),
                dhcp: true,
            });
        }
    }
    if let Some(l2) = config.of_kind("Layer2VIPConfig").next() {
        vip = str_at(l2, "name").and_then(|s| s.parse::<IpAddr>().ok());
        vip_interface = str_at(l2, "link");
    }

    let cluster_name = str_at(main, "cluster.clusterName").or_else(|| {
        config
            .of_kind("KubeClusterConfig")
            .find_map(|d| str_at(d, "clusterName"))
    });
    let control_plane_endpoint = str_at(main, "cluster.controlPlane.endpoint").or_else(|| {
        config
            .of_kind("KubeClusterConfig")
            .find_map(|d| str_at(d, "endpoint"))
    });
    let kubernetes_version = str_at(main, "machine.kubelet.image")
        .or_else(|| {
            config
                .of_kind("KubeletConfig")
                .find_map(|d| str_at(d, "image"))
        })
        .and_then(|image| image_tag_version(&image));
    let install_image = str_at(main, "machine.install.image").or_else(|| {
        config
            .of_kind("UnattendedInstallConfig")
            .find_map(|d| str_at(d, "installer.image"))
    });
    let install_disk = str_at(main, "machine.install.disk");

    let os_ca = CaMaterial {
        crt_pem: decode_b64_pem(main, "machine.ca.crt"),
        key_pem: decode_b64_pem(main, "machine.ca.key"),
    };
    let k8s_ca = if main.path("cluster.ca.crt").is_some() {
        CaMaterial {
            crt_pem: decode_b64_pem(main, "cluster.ca.crt"),
            key_pem: decode_b64_pem(main, "cluster.ca.key"),
        }
    } else {
        config
            .of_kind("KubeAPIServerCAConfig")
            .next()
            .map(|d| CaMaterial {
                // Workers carry only `acceptedCAs` (generate/kubernetes.go@v1.14.0-rc.1).
                crt_pem: str_at(d, "issuingCA.cert")
                    .or_else(|| {
                        d.get("acceptedCAs")
                            .and_then(Yaml::as_seq)
                            .and_then(|cas| cas.first())
                            .and_then(Yaml::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default(),
                key_pem: str_at(d, "issuingCA.key").unwrap_or_default(),
            })
            .unwrap_or_default()
    };

    let document_kinds: Vec<String> = config
        .docs
        .iter()
        .filter_map(|d| d.get("kind").and_then(Yaml::as_str).map(str::to_string))
        .collect();
    let shape = if config.docs.len() > 1 {
        ContractShape::MultiDocument
    } else {
        ContractShape::SingleDocument
    };

    Ok(MachineConfigSummary {
        machine_type,
        hostname,
        interfaces,
        vip,
        vip_interface,
        cluster_name,
        control_plane_endpoint,
        kubernetes_version,
        install_image,
        install_disk,
        os_ca,
        k8s_ca,
        shape,
        document_kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP_V111: &str = include_str!("testdata/controlplane-contract-v1.11.yaml");
    const WORKER_V111: &str = include_str!("testdata/worker-contract-v1.11.yaml");
    const CP_V114: &str = include_str!("testdata/controlplane-contract-v1.14-multidoc.yaml");

    #[test]
    fn summarizes_single_document_samples() {
        let cp = summarize(CP_V111.as_bytes()).unwrap();
        assert_eq!(cp.machine_type, MachineType::ControlPlane);
        assert_eq!(cp.cluster_name.as_deref(), Some("base"));
        assert_eq!(
            cp.control_plane_endpoint.as_deref(),
            Some("https://base:6443")
        );
        assert_eq!(cp.kubernetes_version.as_deref(), Some("1.28.0"));
        assert_eq!(cp.shape, ContractShape::SingleDocument);
        assert!(cp.os_ca.crt_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cp.os_ca.key_pem.contains("ED25519 PRIVATE KEY"));
        assert!(cp.k8s_ca.key_pem.contains("EC PRIVATE KEY"));
        let worker = summarize(WORKER_V111.as_bytes()).unwrap();
        assert_eq!(worker.machine_type, MachineType::Worker);
        assert!(worker.os_ca.key_pem.is_empty());
    }

    #[test]
    fn summarizes_multidoc_sample() {
        let cp = summarize(CP_V114.as_bytes()).unwrap();
        assert_eq!(cp.shape, ContractShape::MultiDocument);
        assert_eq!(cp.cluster_name.as_deref(), Some("base"));
        assert_eq!(cp.kubernetes_version.as_deref(), Some("1.28.0"));
        assert!(cp.k8s_ca.crt_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cp.document_kinds.iter().any(|k| k == "HostnameConfig"));
    }

    #[test]
    fn reads_static_interfaces_and_vip() {
        let text = CP_V111.replace(
            "    network: {}\n",
            "    network:\n        hostname: cp1\n        interfaces:\n            - interface: eth0\n              addresses:\n                  - 10.5.0.2/24\n              vip:\n                  ip: 10.5.0.10\n",
        );
        let s = summarize(text.as_bytes()).unwrap();
        assert_eq!(s.hostname.as_deref(), Some("cp1"));
        assert_eq!(s.interfaces.len(), 1);
        assert_eq!(s.interfaces[0].addresses[0].to_string(), "10.5.0.2/24");
        assert_eq!(s.vip, Some("10.5.0.10".parse().unwrap()));
        assert_eq!(s.vip_interface.as_deref(), Some("eth0"));
    }
}
