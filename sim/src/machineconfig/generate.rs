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
    /// `(registry host, mirror URL)` pairs from `--registry-mirror`, in flag order.
    pub registry_mirrors: Vec<(String, String)>,
    /// `persist` of the v1alpha1 document (`--persist`, talosctl ≤ v1.12; always true later).
    pub persist: bool,
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

/// Mirrors grouped by host, hosts sorted, each host's endpoints in flag order: upstream collects
/// `WithRegistryMirror(host, url)` into a `map[host][]endpoint` (appending) and emits one
/// mirror per host sorted by name (`generate/options.go`, `generate/registry.go`@v1.14.0-rc.1).
fn grouped_mirrors(input: &GenerateInput) -> Vec<(String, Vec<String>)> {
    let mut grouped: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (host, url) in &input.registry_mirrors {
        grouped.entry(host.clone()).or_default().push(url.clone());
    }
    grouped.into_iter().collect()
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
        let mirrors: Vec<(String, Yaml)> = grouped_mirrors(input)
            .into_iter()
            .map(|(host, urls)| (host, map([("endpoints", strings(&urls))])))
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

        // upstream: generate.go GetAPIServerSANs@v1.14.0-rc.1 — the endpoint host (contracts
        // ≤ v1.11) then the additional SANs, appended without de-duplication.
        let mut sans: Vec<String> = Vec::new();
        if !c.greater_than(1, 11) {
            sans.push(endpoint_host(&input.endpoint));
        }
        sans.extend(input.additional_sans.iter().cloned());
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
        ("persist", Yaml::Bool(input.persist)),
        ("machine", Yaml::from_pairs(machine)),
        ("cluster", Yaml::from_pairs(cluster)),
    ])
}

fn typed(kind: &str, rest: Vec<(&str, Yaml)>) -> Yaml {
    let mut pairs = vec![("apiVersion", s("v1alpha1")), ("kind", s(kind))];
    pairs.extend(rest);
    Yaml::from_pairs(pairs)
}

/// The v1.14+ v1alpha1 document: `machine{type, token, ca, certSANs, features}` and
/// `cluster{token, etcd}` (upstream: generate/init.go, worker.go@v1.14.0-rc.1).
fn multidoc_main(bundle: &SecretsBundle, input: &GenerateInput, t: MachineType) -> Yaml {
    let cp = t.is_control_plane();
    let mut cluster: Vec<(&str, Yaml)> = vec![("token", s(&bundle.secrets.bootstraptoken))];
    if cp {
        cluster.push(("etcd", map([("ca", ca_pair(&bundle.certs.etcd, true))])));
    }
    map([
        ("version", s("v1alpha1")),
        ("debug", Yaml::Bool(false)),
        ("persist", Yaml::Bool(input.persist)),
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
    ])
}

/// Go's `%q` of a plain string (what `fmt.Sprintf("disk.dev_path == %q", disk)` produces):
/// double quotes, `"` and `\` backslash-escaped, control characters as Go escapes.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `UnattendedInstallConfig` document that replaces `machine.install` from the v1.14
/// contract on; generated only when an install disk is set (upstream: generate/init.go
/// `unattendedInstallConfig`@v1.14.0-rc.1; kind `UnattendedInstallConfigKind` in
/// types/runtime/unattended_install.go@v1.14.0-rc.1 — the JSON schema's `UnattendedInstall` is
/// not a registered kind).
fn unattended_install(input: &GenerateInput) -> Yaml {
    let installer = if input.install_image.is_empty() {
        Yaml::map()
    } else {
        map([("image", s(&input.install_image))])
    };
    typed(
        "UnattendedInstallConfig",
        vec![
            ("installer", installer),
            (
                "provisioning",
                map([
                    (
                        "diskSelector",
                        map([(
                            "match",
                            s(&format!(
                                "disk.dev_path == {}",
                                go_quote(&input.install_disk)
                            )),
                        )]),
                    ),
                    ("wipe", Yaml::Bool(false)),
                ]),
            ),
        ],
    )
}

/// The v1.14+ documents between the v1alpha1 document and the registry/network ones, in
/// upstream order: discovery service, discovery identity, unattended install, resolver, block
/// (`VolumeConfig EPHEMERAL`, `FilesystemTrimConfig`), security profile.
fn multidoc_machine_docs(bundle: &SecretsBundle, input: &GenerateInput) -> Vec<Yaml> {
    let mut docs = Vec::new();
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
    if !input.install_disk.is_empty() {
        docs.push(unattended_install(input));
    }
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
    docs
}

/// The v1.14+ Kubernetes documents (upstream: generate/kubernetes.go@v1.14.0-rc.1): the
/// universal ones for every node, then the control plane ones.
fn kubernetes_docs(bundle: &SecretsBundle, input: &GenerateInput, t: MachineType) -> Vec<Yaml> {
    let cp = t.is_control_plane();
    let k8s = &input.kubernetes_version;
    let mut docs = Vec::new();
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
    // Control planes carry the issuing CA, workers only accept it.
    let (k8s_crt, k8s_key) = pem_of(&bundle.certs.k8s);
    let ca = if cp {
        (
            "issuingCA",
            map([("cert", s(&k8s_crt)), ("key", s(&k8s_key))]),
        )
    } else {
        ("acceptedCAs", Yaml::Seq(vec![s(&k8s_crt)]))
    };
    docs.push(typed("KubeAPIServerCAConfig", vec![ca]));
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
        // Both bundle secrets become `secretbox` providers, key2 (secretbox secret) first, then
        // key1 (the legacy aescbc secret), as upstream orders them for the legacy apiserver path.
        let mut providers = Vec::new();
        for (name, secret) in [
            ("key2", &bundle.secrets.secretboxencryptionsecret),
            ("key1", &bundle.secrets.aescbcencryptionsecret),
        ] {
            if !secret.is_empty() {
                providers.push(map([(
                    "secretbox",
                    map([(
                        "keys",
                        Yaml::Seq(vec![map([("name", s(name)), ("secret", s(secret))])]),
                    )]),
                )]));
            }
        }
        docs.push(typed(
            "KubeEtcdEncryptionConfig",
            vec![(
                "config",
                map([(
                    "resources",
                    Yaml::Seq(vec![map([
                        ("providers", Yaml::Seq(providers)),
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
    docs
}

/// Generates the documents of one machine config, in upstream's order (generate/init.go,
/// worker.go@v1.14.0-rc.1, same order at v1.12.11/v1.13.9): the v1alpha1 document; from v1.14
/// the discovery/install/resolver/block/security documents; from v1.12 the registry mirror
/// documents, `HostnameConfig`, and from v1.13 `KubeSpanConfig`; from v1.14 the Kubernetes
/// documents.
pub fn generate(bundle: &SecretsBundle, input: &GenerateInput, t: MachineType) -> Vec<Yaml> {
    let c = input.contract;
    let multidoc = c.greater_than(1, 13);
    let mut docs = if multidoc {
        let mut docs = vec![multidoc_main(bundle, input, t)];
        docs.extend(multidoc_machine_docs(bundle, input));
        docs
    } else {
        vec![classic_document(bundle, input, t)]
    };
    if c.greater_than(1, 11) {
        for (host, urls) in grouped_mirrors(input) {
            let endpoints = urls.iter().map(|url| map([("url", s(url))])).collect();
            docs.push(typed(
                "RegistryMirrorConfig",
                vec![("name", s(&host)), ("endpoints", Yaml::Seq(endpoints))],
            ));
        }
        docs.push(typed("HostnameConfig", vec![("auto", s("stable"))]));
    }
    if input.kubespan && c.greater_than(1, 12) {
        docs.push(typed("KubeSpanConfig", vec![("enabled", Yaml::Bool(true))]));
    }
    if multidoc {
        docs.extend(kubernetes_docs(bundle, input, t));
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
            persist: true,
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

    fn kinds(docs: &[Yaml]) -> Vec<&str> {
        docs.iter()
            .map(|d| d.get("kind").and_then(Yaml::as_str).unwrap_or("v1alpha1"))
            .collect()
    }

    #[test]
    fn mirrors_of_one_host_share_a_document_and_hosts_are_sorted() {
        // upstream: generate/options.go WithRegistryMirror appends per host; registry.go sorts
        // the documents by name (@v1.14.0-rc.1).
        let mut input = fixture_input(Contract::parse("v1.13").unwrap());
        input.registry_mirrors = vec![
            ("ghcr.io".to_string(), "https://b.example".to_string()),
            ("docker.io".to_string(), "https://z.example".to_string()),
            ("ghcr.io".to_string(), "https://a.example".to_string()),
        ];
        let docs = generate(&sample_bundle(), &input, MachineType::Worker);
        assert_eq!(
            kinds(&docs),
            [
                "v1alpha1",
                "RegistryMirrorConfig",
                "RegistryMirrorConfig",
                "HostnameConfig"
            ]
        );
        assert_eq!(
            yaml::emit(&docs[2]),
            "apiVersion: v1alpha1\nkind: RegistryMirrorConfig\nname: ghcr.io\nendpoints:\n    - url: https://b.example\n    - url: https://a.example\n"
        );
        assert_eq!(
            docs[1].get("name").and_then(Yaml::as_str),
            Some("docker.io")
        );
        let mut v111 = input.clone();
        v111.contract = Contract::parse("v1.11").unwrap();
        let classic = yaml::emit_documents(&generate(&sample_bundle(), &v111, MachineType::Worker));
        assert!(classic.contains(
            "        mirrors:\n            docker.io:\n                endpoints:\n                    - https://z.example\n            ghcr.io:\n                endpoints:\n                    - https://b.example\n                    - https://a.example\n"
        ));
    }

    #[test]
    fn v1_14_places_kubespan_and_mirrors_between_machine_and_kubernetes_documents() {
        // upstream: generate/init.go, network.go@v1.14.0-rc.1.
        let mut input = fixture_input(Contract::parse("v1.14").unwrap());
        input.kubespan = true;
        input.registry_mirrors =
            vec![("docker.io".to_string(), "http://127.0.0.1:5000".to_string())];
        let docs = generate(&sample_bundle(), &input, MachineType::Worker);
        let k = kinds(&docs);
        let at = k.iter().position(|k| *k == "HostnameConfig").unwrap();
        assert_eq!(
            k[at - 2..at + 3],
            [
                "SecurityProfileConfig",
                "RegistryMirrorConfig",
                "HostnameConfig",
                "KubeSpanConfig",
                "KubeClusterConfig"
            ]
        );
    }

    #[test]
    fn api_server_sans_keep_duplicates_like_upstream() {
        // upstream: generate.go GetAPIServerSANs@v1.11.6 and @v1.14.0-rc.1 appends without
        // de-duplication.
        let mut input = fixture_input(Contract::parse("v1.11").unwrap());
        input.additional_sans = vec!["base".to_string(), "10.0.0.1".to_string()];
        let docs = generate(&sample_bundle(), &input, MachineType::ControlPlane);
        assert_eq!(
            docs[0].path("cluster.apiServer.certSANs"),
            Some(&Yaml::Seq(vec![s("base"), s("base"), s("10.0.0.1")]))
        );
    }

    #[test]
    fn v1_14_encryption_config_maps_a_legacy_aescbc_secret_to_secretbox_key1() {
        // upstream: generate/kubernetes.go@v1.14.0-rc.1 — secretbox key2 for the secretbox
        // secret, then secretbox key1 for the aescbc secret.
        let mut bundle = sample_bundle();
        let secret = std::mem::take(&mut bundle.secrets.secretboxencryptionsecret);
        bundle.secrets.aescbcencryptionsecret = secret.clone();
        let input = fixture_input(Contract::parse("v1.14").unwrap());
        let docs = generate(&bundle, &input, MachineType::ControlPlane);
        let enc = docs
            .iter()
            .find(|d| d.get("kind").and_then(Yaml::as_str) == Some("KubeEtcdEncryptionConfig"))
            .unwrap();
        assert_eq!(
            yaml::emit(enc),
            format!(
                "apiVersion: v1alpha1\nkind: KubeEtcdEncryptionConfig\nconfig:\n    resources:\n        - providers:\n            - secretbox:\n                keys:\n                    - name: key1\n                      secret: {secret}\n          resources:\n            - secrets\n"
            )
        );
    }

    #[test]
    fn persist_false_reaches_the_document() {
        let mut input = fixture_input(Contract::parse("v1.12").unwrap());
        input.persist = false;
        let docs = generate(&sample_bundle(), &input, MachineType::Worker);
        assert_eq!(docs[0].get("persist"), Some(&Yaml::Bool(false)));
    }

    #[test]
    fn install_disk_selector_is_go_quoted() {
        let mut input = fixture_input(Contract::parse("v1.14").unwrap());
        input.install_disk = "/dev/disk/by-id/a\"b\\c".to_string();
        let docs = generate(&sample_bundle(), &input, MachineType::Worker);
        assert_eq!(
            docs[3]
                .path("provisioning.diskSelector.match")
                .and_then(Yaml::as_str),
            Some("disk.dev_path == \"/dev/disk/by-id/a\\\"b\\\\c\"")
        );
        assert_eq!(kinds(&docs)[3], "UnattendedInstallConfig");
    }

    #[test]
    fn endpoint_host_handles_ports_and_ipv6() {
        assert_eq!(endpoint_host("https://base:6443"), "base");
        assert_eq!(endpoint_host("https://[fd00::1]:6443/"), "fd00::1");
        assert_eq!(endpoint_host("https://10.5.0.10"), "10.5.0.10");
    }
}
