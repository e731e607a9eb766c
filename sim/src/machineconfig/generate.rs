//! Machine config generation (`talosctl gen config`) for a version contract, shaped like the
//! upstream stability fixtures: classic single document up to v1.11, plus `HostnameConfig` for
//! v1.12/v1.13, and the multi-document layout from v1.14 on. Output is a pure function of the
//! secrets bundle and the inputs, so identical inputs give byte-identical configs.

use crate::machineconfig::MachineType;
use crate::machineconfig::contract::Contract;
use crate::machineconfig::yaml::Yaml;
use crate::pki::{CertAndKey, SecretsBundle, decode_b64_text};

/// Everything `gen config` feeds into the generator besides the bundle.
#[derive(Clone, Debug)]
pub struct GenerateInput {
    pub cluster_name: String,
    /// Kubernetes API URL, as given.
    pub endpoint: String,
    pub contract: Contract,
    /// Without the leading `v`.
    pub kubernetes_version: String,
    pub install_image: String,
    pub install_disk: String,
    pub dns_domain: String,
    pub additional_sans: Vec<String>,
    pub discovery: bool,
    pub kubespan: bool,
    /// `(registry host, mirror URL)` pairs from `--registry-mirror`.
    pub registry_mirrors: Vec<(String, String)>,
}

fn s(v: &str) -> Yaml {
    Yaml::str(v)
}

fn map<const N: usize>(pairs: [(&str, Yaml); N]) -> Yaml {
    Yaml::from_pairs(pairs)
}

fn strings(items: &[String]) -> Yaml {
    Yaml::Seq(items.iter().map(Yaml::str).collect())
}

/// Host part of the control plane URL (for the ≤ v1.11 apiServer certSANs).
pub fn endpoint_host(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default().to_string();
    }
    authority.split(':').next().unwrap_or_default().to_string()
}

fn ca_pair(ca: &Option<CertAndKey>, with_key: bool) -> Yaml {
    let (crt, key) = ca
        .as_ref()
        .map(|c| (c.crt.clone(), c.key.clone()))
        .unwrap_or_default();
    map([
        ("crt", s(&crt)),
        ("key", s(if with_key { &key } else { "" })),
    ])
}

fn pem_of(ca: &Option<CertAndKey>) -> (String, String) {
    ca.as_ref()
        .map(|c| {
            (
                decode_b64_text(&c.crt).unwrap_or_default(),
                decode_b64_text(&c.key).unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

fn pod_security_admission() -> Yaml {
    map([
        (
            "apiVersion",
            s("pod-security.admission.config.k8s.io/v1alpha1"),
        ),
        (
            "defaults",
            map([
                ("audit", s("restricted")),
                ("audit-version", s("latest")),
                ("enforce", s("baseline")),
                ("enforce-version", s("latest")),
                ("warn", s("restricted")),
                ("warn-version", s("latest")),
            ]),
        ),
        (
            "exemptions",
            map([
                ("namespaces", Yaml::Seq(vec![s("kube-system")])),
                ("runtimeClasses", Yaml::Seq(vec![])),
                ("usernames", Yaml::Seq(vec![])),
            ]),
        ),
        ("kind", s("PodSecurityConfiguration")),
    ])
}

fn audit_policy() -> Yaml {
    map([
        ("apiVersion", s("audit.k8s.io/v1")),
        ("kind", s("Policy")),
        ("rules", Yaml::Seq(vec![map([("level", s("Metadata"))])])),
    ])
}

fn features(c: Contract, classic: bool) -> Yaml {
    let mut f: Vec<(&str, Yaml)> = Vec::new();
    let legacy = !c.greater_than(1, 11);
    if legacy {
        f.push(("rbac", Yaml::Bool(true)));
        if c.greater_than(1, 1) {
            f.push(("stableHostname", Yaml::Bool(true)));
        }
        if c.greater_than(1, 2) {
            f.push(("apidCheckExtKeyUsage", Yaml::Bool(true)));
        }
    }
    if c.greater_than(1, 4) {
        f.push(("diskQuotaSupport", Yaml::Bool(true)));
    }
    if classic {
        if c.greater_than(1, 5) {
            f.push((
                "kubePrism",
                map([("enabled", Yaml::Bool(true)), ("port", Yaml::Int(7445))]),
            ));
        }
        if c.greater_than(1, 6) {
            let mut dns = vec![("enabled", Yaml::Bool(true))];
            if c.greater_than(1, 7) {
                dns.push(("forwardKubeDNSToHost", Yaml::Bool(true)));
            }
            f.push(("hostDNS", Yaml::from_pairs(dns)));
        }
    }
    Yaml::from_pairs(f)
}

fn discovery(input: &GenerateInput) -> Yaml {
    let registries = if input.contract.greater_than(1, 1) {
        map([
            ("kubernetes", map([("disabled", Yaml::Bool(true))])),
            ("service", Yaml::map()),
        ])
    } else {
        map([("kubernetes", Yaml::map()), ("service", Yaml::map())])
    };
    map([
        ("enabled", Yaml::Bool(input.discovery)),
        ("registries", registries),
    ])
}

fn sorted_mirrors(input: &GenerateInput) -> Vec<(String, String)> {
    let mut mirrors = input.registry_mirrors.clone();
    mirrors.sort();
    mirrors
}

/// The classic (≤ v1.13) v1alpha1 document.
fn classic_document(bundle: &SecretsBundle, input: &GenerateInput, t: MachineType) -> Yaml {
    let c = input.contract;
    let cp = t.is_control_plane();
    let k8s = &input.kubernetes_version;

    let mut kubelet = vec![("image", s(&format!("ghcr.io/siderolabs/kubelet:v{k8s}")))];
    if c.greater_than(1, 1) {
        kubelet.push(("defaultRuntimeSeccompProfileEnabled", Yaml::Bool(true)));
    }
    if c.greater_than(1, 2) {
        kubelet.push(("disableManifestsDirectory", Yaml::Bool(true)));
    }

    let mut machine: Vec<(&str, Yaml)> = vec![
        ("type", s(t.as_str())),
        ("token", s(&bundle.trustdinfo.token)),
        ("ca", ca_pair(&bundle.certs.os, cp)),
        ("certSANs", strings(&input.additional_sans)),
        ("kubelet", Yaml::from_pairs(kubelet)),
    ];
    if !c.greater_than(1, 12) {
        let network = if input.kubespan {
            map([("kubespan", map([("enabled", Yaml::Bool(true))]))])
        } else {
            Yaml::map()
        };
        machine.push(("network", network));
    }
    let mut install = Vec::new();
    if !input.install_disk.is_empty() {
        install.push(("disk", s(&input.install_disk)));
    }
    if !input.install_image.is_empty() {
        install.push(("image", s(&input.install_image)));
    }
    install.push(("wipe", Yaml::Bool(false)));
    if c.greater_than(1, 11) {
        install.push(("grubUseUKICmdline", Yaml::Bool(true)));
    }
    machine.push(("install", Yaml::from_pairs(install)));
    if !input.registry_mirrors.is_empty() && !c.greater_than(1, 11) {
        let mirrors: Vec<(String, Yaml)> = sorted_mirrors(input)
            .into_iter()
            .map(|(host, url)| (host, map([("endpoints", Yaml::Seq(vec![s(&url)]))])))
            .collect();
        machine.push(("registries", map([("mirrors", Yaml::Map(mirrors))])));
    }
    machine.push(("features", features(c, true)));
    if cp && c.greater_than(1, 7) {
        machine.push((
            "nodeLabels",
            map([(
                "node.kubernetes.io/exclude-from-external-load-balancers",
                s(""),
            )]),
        ));
    }

    let network = map([
        ("dnsDomain", s(&input.dns_domain)),
        ("podSubnets", Yaml::Seq(vec![s("10.244.0.0/16")])),
        ("serviceSubnets", Yaml::Seq(vec![s("10.96.0.0/12")])),
    ]);
    let mut cluster: Vec<(&str, Yaml)> = vec![
        ("id", s(&bundle.cluster.id)),
        ("secret", s(&bundle.cluster.secret)),
        ("controlPlane", map([("endpoint", s(&input.endpoint))])),
    ];
    if cp || c.greater_than(1, 7) {
        cluster.push(("clusterName", s(&input.cluster_name)));
    }
    cluster.push(("network", network));
    cluster.push(("token", s(&bundle.secrets.bootstraptoken)));
    if cp {
        if !bundle.secrets.secretboxencryptionsecret.is_empty() {
            cluster.push((
                "secretboxEncryptionSecret",
                s(&bundle.secrets.secretboxencryptionsecret),
            ));
        } else {
            cluster.push((
                "aescbcEncryptionSecret",
                s(&bundle.secrets.aescbcencryptionsecret),
            ));
        }
    }
    cluster.push(("ca", ca_pair(&bundle.certs.k8s, cp)));
    if cp {
        cluster.push(("aggregatorCA", ca_pair(&bundle.certs.k8saggregator, true)));
        let sa_key = bundle
            .certs
            .k8sserviceaccount
            .as_ref()
            .map(|k| k.key.clone())
            .unwrap_or_default();
        cluster.push(("serviceAccount", map([("key", s(&sa_key))])));

        let mut sans: Vec<String> = Vec::new();
        if !c.greater_than(1, 11) {
            sans.push(endpoint_host(&input.endpoint));
        }
        for san in &input.additional_sans {
            if !sans.contains(san) {
                sans.push(san.clone());
            }
        }
        let mut api = vec![(
            "image",
            s(&format!("registry.k8s.io/kube-apiserver:v{k8s}")),
        )];
        if !sans.is_empty() {
            api.push(("certSANs", strings(&sans)));
        }
        if !c.greater_than(1, 11) {
            api.push(("disablePodSecurityPolicy", Yaml::Bool(true)));
        }
        api.push((
            "admissionControl",
            Yaml::Seq(vec![map([
                ("name", s("PodSecurity")),
                ("configuration", pod_security_admission()),
            ])]),
        ));
        if c.greater_than(1, 2) {
            api.push(("auditPolicy", audit_policy()));
        }
        cluster.push(("apiServer", Yaml::from_pairs(api)));
        for (key, component) in [
            ("controllerManager", "kube-controller-manager"),
            ("proxy", "kube-proxy"),
            ("scheduler", "kube-scheduler"),
        ] {
            cluster.push((
                key,
                map([("image", s(&format!("registry.k8s.io/{component}:v{k8s}")))]),
            ));
        }
    }
    cluster.push(("discovery", discovery(input)));
    if cp {
        cluster.push(("etcd", map([("ca", ca_pair(&bundle.certs.etcd, true))])));
    }

    map([
        ("version", s("v1alpha1")),
        ("debug", Yaml::Bool(false)),
        ("persist", Yaml::Bool(true)),
        ("machine", Yaml::from_pairs(machine)),
        ("cluster", Yaml::from_pairs(cluster)),
    ])
}

fn typed(kind: &str, rest: Vec<(&str, Yaml)>) -> Yaml {
    let mut pairs = vec![("apiVersion", s("v1alpha1")), ("kind", s(kind))];
    pairs.extend(rest);
    Yaml::from_pairs(pairs)
}

/// The v1.14+ multi-document layout (see `samples/controlplane-contract-v1.14-multidoc.yaml`).
fn multidoc(bundle: &SecretsBundle, input: &GenerateInput, t: MachineType) -> Vec<Yaml> {
    let cp = t.is_control_plane();
    let k8s = &input.kubernetes_version;
    let mut cluster: Vec<(&str, Yaml)> = vec![("token", s(&bundle.secrets.bootstraptoken))];
    if cp {
        cluster.push(("etcd", map([("ca", ca_pair(&bundle.certs.etcd, true))])));
    }
    let main = map([
        ("version", s("v1alpha1")),
        ("debug", Yaml::Bool(false)),
        ("persist", Yaml::Bool(true)),
        (
            "machine",
            map([
                ("type", s(t.as_str())),
                ("token", s(&bundle.trustdinfo.token)),
                ("ca", ca_pair(&bundle.certs.os, cp)),
                ("certSANs", strings(&input.additional_sans)),
                ("features", features(input.contract, false)),
            ]),
        ),
        ("cluster", Yaml::from_pairs(cluster)),
    ]);
    let mut docs = vec![main];
    if input.discovery {
        docs.push(typed(
            "DiscoveryServiceConfig",
            vec![
                ("name", s("default")),
                ("endpoint", s("https://discovery.talos.dev/")),
            ],
        ));
    }
    docs.push(typed(
        "DiscoveryIdentityConfig",
        vec![
            ("clusterID", s(&bundle.cluster.id)),
            ("clusterSecret", s(&bundle.cluster.secret)),
        ],
    ));
    docs.push(typed(
        "ResolverConfig",
        vec![(
            "hostDNS",
            map([
                ("enabled", Yaml::Bool(true)),
                ("forwardKubeDNSToHost", Yaml::Bool(true)),
            ]),
        )],
    ));
    docs.push(typed(
        "VolumeConfig",
        vec![
            ("name", s("EPHEMERAL")),
            ("mount", map([("secure", Yaml::Bool(true))])),
        ],
    ));
    docs.push(typed(
        "FilesystemTrimConfig",
        vec![("interval", s("168h0m0s"))],
    ));
    docs.push(typed(
        "SecurityProfileConfig",
        vec![("workloadIsolation", Yaml::Bool(true))],
    ));
    docs.push(typed("HostnameConfig", vec![("auto", s("stable"))]));
    docs.push(typed(
        "KubeClusterConfig",
        vec![
            ("clusterName", s(&input.cluster_name)),
            ("endpoint", s(&input.endpoint)),
        ],
    ));
    let mut node = vec![("nodeIP", Yaml::map())];
    if cp {
        node.push((
            "labels",
            map([
                ("node-role.kubernetes.io/control-plane", s("")),
                (
                    "node.kubernetes.io/exclude-from-external-load-balancers",
                    s(""),
                ),
            ]),
        ));
        node.push((
            "taints",
            map([("node-role.kubernetes.io/control-plane", s("NoSchedule"))]),
        ));
    }
    docs.push(typed("KubeNodeConfig", node));
    docs.push(typed(
        "KubeletConfig",
        vec![
            ("image", s(&format!("ghcr.io/siderolabs/kubelet:v{k8s}"))),
            ("config", Yaml::map()),
            ("defaultRuntimeSeccompProfileEnabled", Yaml::Bool(true)),
        ],
    ));
    docs.push(typed(
        "KubeNetworkConfig",
        vec![
            ("dnsDomain", s(&input.dns_domain)),
            ("podSubnets", Yaml::Seq(vec![s("10.244.0.0/16")])),
            ("serviceSubnets", Yaml::Seq(vec![s("10.96.0.0/12")])),
        ],
    ));
    let (k8s_crt, k8s_key) = pem_of(&bundle.certs.k8s);
    let issuing = if cp {
        map([("cert", s(&k8s_crt)), ("key", s(&k8s_key))])
    } else {
        map([("cert", s(&k8s_crt))])
    };
    docs.push(typed("KubeAPIServerCAConfig", vec![("issuingCA", issuing)]));
    docs.push(typed("KubePrismConfig", vec![("port", Yaml::Int(7445))]));
    if cp {
        let (agg_crt, agg_key) = pem_of(&bundle.certs.k8saggregator);
        docs.push(typed(
            "KubeAggregatorCAConfig",
            vec![(
                "issuingCA",
                map([("cert", s(&agg_crt)), ("key", s(&agg_key))]),
            )],
        ));
        docs.push(typed(
            "KubeAdmissionControlConfig",
            vec![
                ("name", s("PodSecurity")),
                ("configuration", pod_security_admission()),
            ],
        ));
        docs.push(typed(
            "KubeAuditPolicyConfig",
            vec![("configuration", audit_policy())],
        ));
        docs.push(typed(
            "KubeAuthenticationConfig",
            vec![(
                "configuration",
                map([
                    (
                        "anonymous",
                        map([
                            (
                                "conditions",
                                Yaml::Seq(
                                    ["/livez", "/readyz", "/healthz"]
                                        .iter()
                                        .map(|p| map([("path", s(p))]))
                                        .collect(),
                                ),
                            ),
                            ("enabled", Yaml::Bool(true)),
                        ]),
                    ),
                    ("jwt", Yaml::Seq(vec![])),
                ]),
            )],
        ));
        docs.push(typed(
            "KubeAuthorizerConfig",
            vec![("name", s("node")), ("type", s("Node"))],
        ));
        docs.push(typed(
            "KubeAuthorizerConfig",
            vec![("name", s("rbac")), ("type", s("RBAC"))],
        ));
        let (provider, secret) = if bundle.secrets.secretboxencryptionsecret.is_empty() {
            ("aescbc", &bundle.secrets.aescbcencryptionsecret)
        } else {
            ("secretbox", &bundle.secrets.secretboxencryptionsecret)
        };
        docs.push(typed(
            "KubeEtcdEncryptionConfig",
            vec![(
                "config",
                map([(
                    "resources",
                    Yaml::Seq(vec![map([
                        (
                            "providers",
                            Yaml::Seq(vec![map([(
                                provider,
                                map([(
                                    "keys",
                                    Yaml::Seq(vec![map([
                                        ("name", s("key2")),
                                        ("secret", s(secret)),
                                    ])]),
                                )]),
                            )])]),
                        ),
                        ("resources", Yaml::Seq(vec![s("secrets")])),
                    ])]),
                )]),
            )],
        ));
        let sa_pem = bundle
            .certs
            .k8sserviceaccount
            .as_ref()
            .and_then(|k| decode_b64_text(&k.key).ok())
            .unwrap_or_default();
        docs.push(typed(
            "KubeServiceAccountConfig",
            vec![(
                "issuer",
                map([
                    ("privateKey", s(&sa_pem)),
                    ("issuerURL", s(&input.endpoint)),
                ]),
            )],
        ));
        let mut api = vec![(
            "image",
            s(&format!("registry.k8s.io/kube-apiserver:v{k8s}")),
        )];
        if !input.additional_sans.is_empty() {
            api.push(("certExtraSANs", strings(&input.additional_sans)));
        }
        docs.push(typed("KubeAPIServerConfig", api));
        docs.push(typed(
            "KubeControllerManagerConfig",
            vec![(
                "image",
                s(&format!("registry.k8s.io/kube-controller-manager:v{k8s}")),
            )],
        ));
        docs.push(typed(
            "KubeSchedulerConfig",
            vec![
                (
                    "image",
                    s(&format!("registry.k8s.io/kube-scheduler:v{k8s}")),
                ),
                ("config", Yaml::map()),
            ],
        ));
        docs.push(typed(
            "KubeProxyConfig",
            vec![
                ("image", s(&format!("registry.k8s.io/kube-proxy:v{k8s}"))),
                ("config", Yaml::map()),
            ],
        ));
        docs.push(typed(
            "KubeFlannelCNIConfig",
            vec![
                ("backendType", s("vxlan")),
                ("backendPort", Yaml::Int(4789)),
            ],
        ));
        docs.push(typed(
            "KubeCoreDNSConfig",
            vec![("enabled", Yaml::Bool(true))],
        ));
    }
    if !input.install_disk.is_empty() {
        // upstream: pkg/machinery/config/types/runtime/unattended_install.go@v1.14.0-rc.1 (kind UnattendedInstallConfig).
        docs.push(typed(
            "UnattendedInstallConfig",
            vec![
                ("installer", map([("image", s(&input.install_image))])),
                (
                    "provisioning",
                    map([(
                        "diskSelector",
                        map([(
                            "match",
                            s(&format!("disk.dev_path == '{}'", input.install_disk)),
                        )]),
                    )]),
                ),
            ],
        ));
    }
    docs
}

/// Generates the documents of one machine config.
pub fn generate(bundle: &SecretsBundle, input: &GenerateInput, t: MachineType) -> Vec<Yaml> {
    let c = input.contract;
    let mut docs = if c.greater_than(1, 13) {
        multidoc(bundle, input, t)
    } else {
        let mut docs = vec![classic_document(bundle, input, t)];
        if c.greater_than(1, 11) {
            docs.push(typed("HostnameConfig", vec![("auto", s("stable"))]));
        }
        docs
    };
    if c.greater_than(1, 11) {
        for (host, url) in sorted_mirrors(input) {
            docs.push(typed(
                "RegistryMirrorConfig",
                vec![
                    ("name", s(&host)),
                    ("endpoints", Yaml::Seq(vec![map([("url", s(&url))])])),
                ],
            ));
        }
    }
    if input.kubespan && c.greater_than(1, 12) {
        docs.push(typed("KubeSpanConfig", vec![("enabled", Yaml::Bool(true))]));
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machineconfig::yaml;
    use crate::pki;

    fn fixture_input(contract: Contract) -> GenerateInput {
        GenerateInput {
            cluster_name: "base".to_string(),
            endpoint: "https://base:6443".to_string(),
            contract,
            kubernetes_version: "1.28.0".to_string(),
            install_image: String::new(),
            install_disk: String::new(),
            dns_domain: "cluster.local".to_string(),
            additional_sans: vec![],
            discovery: true,
            kubespan: false,
            registry_mirrors: vec![],
        }
    }

    fn sample_bundle() -> SecretsBundle {
        pki::parse(include_bytes!("testdata/secrets.yaml")).unwrap()
    }

    #[test]
    fn reproduces_the_v1_11_stability_fixtures_byte_for_byte() {
        let bundle = sample_bundle();
        let input = fixture_input(Contract::parse("v1.11").unwrap());
        let cp = generate(&bundle, &input, MachineType::ControlPlane);
        assert_eq!(
            yaml::emit_documents(&cp),
            include_str!("testdata/controlplane-contract-v1.11.yaml")
        );
        let worker = generate(&bundle, &input, MachineType::Worker);
        assert_eq!(
            yaml::emit_documents(&worker),
            include_str!("testdata/worker-contract-v1.11.yaml")
        );
    }

    #[test]
    fn reproduces_the_v1_14_multidoc_fixture_byte_for_byte() {
        let bundle = sample_bundle();
        let input = fixture_input(Contract::parse("v1.14").unwrap());
        let cp = generate(&bundle, &input, MachineType::ControlPlane);
        assert_eq!(
            yaml::emit_documents(&cp),
            include_str!("testdata/controlplane-contract-v1.14-multidoc.yaml")
        );
    }

    #[test]
    fn v1_12_adds_hostname_config_and_drops_legacy_features() {
        let bundle = sample_bundle();
        let input = fixture_input(Contract::parse("v1.12").unwrap());
        let docs = generate(&bundle, &input, MachineType::ControlPlane);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1].get("kind").and_then(Yaml::as_str),
            Some("HostnameConfig")
        );
        assert!(docs[0].path("machine.features.rbac").is_none());
        assert!(docs[0].path("machine.network").is_some());
        assert!(docs[0].path("cluster.apiServer.certSANs").is_none());
        let v113 = generate(
            &bundle,
            &fixture_input(Contract::parse("v1.13").unwrap()),
            MachineType::Worker,
        );
        assert!(v113[0].path("machine.network").is_none());
    }

    #[test]
    fn every_generated_config_passes_validation() {
        let bundle = sample_bundle();
        for minor in 2..=15 {
            for features in [false, true] {
                let mut input = fixture_input(Contract::Version { major: 1, minor });
                input.install_disk = "/dev/sda".to_string();
                input.install_image = "ghcr.io/siderolabs/installer:v1.11.5".to_string();
                if features {
                    input.kubespan = true;
                    input.additional_sans = vec!["10.5.0.10".to_string()];
                    input.registry_mirrors =
                        vec![("docker.io".to_string(), "http://127.0.0.1:5000".to_string())];
                }
                for t in [MachineType::ControlPlane, MachineType::Worker] {
                    let text = yaml::emit_documents(&generate(&bundle, &input, t));
                    let summary = crate::machineconfig::validate(text.as_bytes())
                        .unwrap_or_else(|e| panic!("v1.{minor} {t:?} {features}: {e:?}"));
                    assert_eq!(summary.machine_type, t);
                    // Workers carry clusterName only for contracts newer than v1.7.
                    let name = (t.is_control_plane() || minor > 7).then_some("base");
                    assert_eq!(summary.cluster_name.as_deref(), name);
                    assert_eq!(summary.kubernetes_version.as_deref(), Some("1.28.0"));
                    assert_eq!(
                        summary.install_image.as_deref(),
                        Some("ghcr.io/siderolabs/installer:v1.11.5")
                    );
                    assert!(!summary.k8s_ca.crt_pem.is_empty());
                }
            }
        }
    }

    #[test]
    fn kubespan_without_discovery_is_rejected_like_talos_does() {
        let mut input = fixture_input(Contract::parse("v1.11").unwrap());
        input.install_disk = "/dev/sda".to_string();
        input.kubespan = true;
        input.discovery = false;
        let text = yaml::emit_documents(&generate(&sample_bundle(), &input, MachineType::Worker));
        assert_eq!(
            crate::machineconfig::validate(text.as_bytes()).unwrap_err(),
            [".cluster.discovery should be enabled when .machine.network.kubespan is enabled"]
        );
    }

    #[test]
    fn endpoint_host_handles_ports_and_ipv6() {
        assert_eq!(endpoint_host("https://base:6443"), "base");
        assert_eq!(endpoint_host("https://[fd00::1]:6443/"), "fd00::1");
        assert_eq!(endpoint_host("https://10.5.0.10"), "10.5.0.10");
    }
}
