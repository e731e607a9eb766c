//! What a simulated node needs to know from an applied machine config: its type, addresses, the
//! cluster it joins and the CA material it serves with. Extracted from the YAML documents.

use std::net::Ipv4Addr;

use base64::Engine as _;
use serde_json::Value;

/// The node-relevant facts of a machine config (private keys included; never printed).
#[derive(Clone)]
pub struct ConfigFacts {
    pub machine_type: String,
    pub hostname: Option<String>,
    pub static_addresses: Vec<Ipv4Addr>,
    pub vip: Option<Ipv4Addr>,
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
            .field("static_addresses", &self.static_addresses)
            .field("vip", &self.vip)
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

        let mut static_addresses = Vec::new();
        let mut vip = None;
        if let Some(ifaces) = main
            .pointer("/machine/network/interfaces")
            .and_then(Value::as_array)
        {
            for iface in ifaces {
                for a in iface
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(ip) = a.as_str().and_then(first_ipv4_of_cidr) {
                        static_addresses.push(ip);
                    }
                }
                if let Some(ip) = str_at(iface, &["vip", "ip"]).and_then(|s| s.parse().ok()) {
                    vip = Some(ip);
                }
            }
        }
        for link in by_kind("LinkConfig") {
            for a in link
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = str_at(a, &["address"]).and_then(first_ipv4_of_cidr) {
                    static_addresses.push(ip);
                }
            }
        }
        for v in by_kind("Layer2VIPConfig") {
            if let Some(ip) = str_at(v, &["name"]).and_then(|s| s.parse().ok()) {
                vip = Some(ip);
            }
        }

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
            static_addresses,
            vip,
            cluster_name,
            endpoint,
            kubernetes_version,
            install_image,
            discovery_enabled,
            os_ca_cert,
            os_ca_key: b64_pem(main, &["machine", "ca", "key"]),
            k8s_ca_cert: b64_pem(main, &["cluster", "ca", "crt"]),
            k8s_ca_key: b64_pem(main, &["cluster", "ca", "key"]),
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
        assert!(f.static_addresses.is_empty());
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
}
