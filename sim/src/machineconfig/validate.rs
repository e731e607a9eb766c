//! What a Talos node rejects in a machine config, in Talos' words: decode errors (unknown keys,
//! unregistered kinds, wrong scalar types, duplicates; the first one aborts loading, as in the
//! upstream decoder) and validation errors (upstream `v1alpha1_validation.go`, `hostname.go`;
//! all of them are reported together, as with multierror).

use std::net::IpAddr;

use ipnet::IpNet;

use super::schema::{self, SCHEMA_ALL, SchemaMask};
use super::yaml::{self, Yaml};
use super::{ConfigDocuments, MachineConfigSummary, is_v1alpha1_document, summarize_documents};

/// Prefix of every decode error (the node's `failed to parse config: …`).
pub const PARSE_PREFIX: &str = "failed to parse config: ";
/// Message of a node rejecting a config without the legacy document (talosctl-cli.md §5).
pub const MISSING_V1ALPHA1: &str = "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?";
/// Talos' message for a VIP on a worker.
pub const VIP_ON_WORKER: &str = "virtual (shared) IP is not allowed on non-controlplane nodes";
/// Talos' message for a static hostname next to a `HostnameConfig` document.
pub const HOSTNAME_CONFLICT: &str = "static hostname is already set in v1alpha1 config";
/// Talos' message for `stableHostname: true` in v1alpha1 next to a `HostnameConfig` document.
pub const STABLE_HOSTNAME_CONFLICT: &str = "stable hostname is already set in v1alpha1 config";

/// Checks a machine config as the newest Talos does before accepting it. On success returns
/// its summary. On failure: either exactly one decode error (prefixed `failed to parse
/// config: `), or every validation error (unprefixed; join them with [`format_errors`]).
pub fn validate(bytes: &[u8]) -> Result<MachineConfigSummary, Vec<String>> {
    validate_with_mask(bytes, SCHEMA_ALL)
}

/// [`validate`] as a node running `talos_version` (e.g. `v1.11.5`) does: older nodes do not know
/// fields and documents newer contracts generate (`grubUseUKICmdline`, `HostnameConfig`, …).
pub fn validate_for(
    bytes: &[u8],
    talos_version: &str,
) -> Result<MachineConfigSummary, Vec<String>> {
    validate_with_mask(bytes, schema::schema_mask_for_version(talos_version))
}

fn validate_with_mask(
    bytes: &[u8],
    allowed: SchemaMask,
) -> Result<MachineConfigSummary, Vec<String>> {
    let config = ConfigDocuments::parse(bytes).map_err(|e| vec![e.to_string()])?;
    if let Some(error) = first_decode_error(&config, allowed) {
        return Err(vec![format!("{PARSE_PREFIX}{error}")]);
    }
    let Some(main) = config.v1alpha1() else {
        return Err(vec![MISSING_V1ALPHA1.to_string()]);
    };
    let mut errors = v1alpha1_errors(main);
    for doc in config.of_kind("HostnameConfig") {
        errors.extend(hostname_config_errors(doc));
        // V1Alpha1ConflictValidate: the legacy document must not name the host itself.
        if text(main, "machine.network.hostname").is_some() {
            errors.push(HOSTNAME_CONFLICT.to_string());
        } else if main.path("machine.features.stableHostname") == Some(&Yaml::Bool(true)) {
            errors.push(STABLE_HOSTNAME_CONFLICT.to_string());
        }
    }
    let worker = text(main, "machine.type").as_deref() == Some("worker");
    for link in config.of_kind("LinkConfig") {
        let name = text(link, "name").unwrap_or_default();
        for address in seq(link, "addresses") {
            let value = text(address, "address").unwrap_or_default();
            if value.parse::<IpNet>().is_err() {
                errors.push(format!(
                    "LinkConfig {name:?}: netip.ParsePrefix({value:?}): invalid prefix"
                ));
            }
        }
    }
    for vip in config.of_kind("Layer2VIPConfig") {
        let ip = text(vip, "name").unwrap_or_default();
        if ip.parse::<IpAddr>().is_err() {
            errors.push(format!(
                "Layer2VIPConfig: failed to parse {ip:?} as IP address"
            ));
        }
        if worker {
            errors.push(VIP_ON_WORKER.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    summarize_documents(&config).map_err(|e| vec![e.to_string()])
}

/// Renders errors the way Talos' multierror does (`1 error occurred:\n\t* …\n\n`).
pub fn format_errors(errors: &[String]) -> String {
    let noun = if errors.len() == 1 { "error" } else { "errors" };
    let mut out = format!("{} {noun} occurred:\n", errors.len());
    for e in errors {
        out.push_str(&format!("\t* {e}\n"));
    }
    out.push('\n');
    out
}

fn text(doc: &Yaml, dotted: &str) -> Option<String> {
    doc.path(dotted)
        .and_then(Yaml::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn seq<'a>(doc: &'a Yaml, dotted: &str) -> &'a [Yaml] {
    doc.path(dotted).and_then(Yaml::as_seq).unwrap_or_default()
}

/// The decoder's pass: document kinds, duplicates, unknown keys, scalar types.
fn first_decode_error(config: &ConfigDocuments, allowed: SchemaMask) -> Option<String> {
    let table = schema::FieldTable::get();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for doc in &config.docs {
        if doc.as_map().is_none() {
            return Some("expected a YAML document".to_string());
        }
        let api = doc
            .get("apiVersion")
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_string();
        let name = doc
            .get("name")
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = if is_v1alpha1_document(doc) {
            "v1alpha1".to_string()
        } else {
            match doc.get("kind").and_then(Yaml::as_str) {
                None => return Some("missing kind".to_string()),
                Some(_) if api.is_empty() => return Some("missing apiVersion".to_string()),
                Some(kind) => kind.to_string(),
            }
        };
        let id = (api.clone(), kind.clone(), name.clone());
        if seen.contains(&id) {
            return Some(format!(
                "duplicate document {api}/{kind}/{name} is not allowed"
            ));
        }
        seen.push(id);
        if !table.knows_kind_in(&kind, allowed) {
            return Some(format!("\"{kind}\" \"{api}\": not registered"));
        }
        if let Some(unknown) = schema::unknown_keys_in(doc, &kind, allowed) {
            return Some(format!(
                "unknown keys found during decoding:\n{}",
                yaml::emit(&unknown)
            ));
        }
        if let Some(error) = schema::type_errors(doc, &kind).into_iter().next() {
            return Some(error);
        }
    }
    None
}

/// `validateIPOrCIDR` of the upstream validator, with Go's error texts.
fn ip_or_cidr_error(address: &str) -> Option<String> {
    if address.contains('/') {
        address
            .parse::<IpNet>()
            .is_err()
            .then(|| format!("invalid CIDR address: {address}"))
    } else {
        address
            .parse::<IpAddr>()
            .is_err()
            .then(|| format!("failed to parse IP address {address:?}"))
    }
}

/// A pared-down `sideronet.ValidateEndpointURI`.
fn endpoint_error(endpoint: &str) -> Option<String> {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return Some(format!("{endpoint:?}: missing scheme"));
    };
    if scheme != "https" && scheme != "http" {
        return Some(format!("{endpoint:?}: scheme must be http or https"));
    }
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Some(format!("{endpoint:?}: missing host"));
    }
    None
}

fn is_valid_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() - name.matches('.').count() > 255 {
        return false;
    }
    let body = name.strip_suffix(['.', '_']).unwrap_or(name);
    body.split('.').all(|label| {
        let mut chars = label.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
            && label.len() <= 63
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// `Config.Validate` of v1alpha1 (the checks that matter to a bootstrap).
fn v1alpha1_errors(main: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(machine) = main.get("machine").filter(|m| m.as_map().is_some()) else {
        return vec!["machine instructions are required".to_string()];
    };
    let machine_type = text(machine, "type").unwrap_or_default();
    let control_plane = matches!(machine_type.as_str(), "controlplane" | "init");
    let worker = matches!(machine_type.as_str(), "worker" | "join");

    match main.get("cluster") {
        None | Some(Yaml::Null) => errors.push("cluster instructions are required".to_string()),
        Some(cluster) => {
            if let Some(control) = cluster.get("controlPlane") {
                match text(control, "endpoint") {
                    None => errors.push("cluster controlplane endpoint is required".to_string()),
                    Some(endpoint) => {
                        if let Some(e) = endpoint_error(&endpoint) {
                            errors.push(format!("invalid controlplane endpoint: {e}"));
                        }
                    }
                }
            }
            if let Some(domain) = text(cluster, "network.dnsDomain")
                && !is_valid_dns_name(&domain)
            {
                errors.push(format!("{domain:?} is not a valid DNS name"));
            }
            if cluster.get("etcd").is_some() && !control_plane {
                errors.push("etcd config is only allowed on control plane machines".to_string());
            }
            if worker && text(cluster, "ca.key").is_some() {
                errors.push(
                    "cluster CA key is not allowed on non-controlplane nodes (.cluster.ca)"
                        .to_string(),
                );
            }
            let discovery_on = cluster.path("discovery.enabled") == Some(&Yaml::Bool(true));
            let service_off =
                cluster.path("discovery.registries.service.disabled") == Some(&Yaml::Bool(true));
            if discovery_on && !service_off {
                if text(cluster, "id").is_none() {
                    errors.push("cluster discovery service requires .cluster.id".to_string());
                }
                if text(cluster, "secret").is_none() {
                    errors.push("cluster discovery service requires .cluster.secret".to_string());
                }
            }
            if control_plane
                && let Some(cni) = text(cluster, "network.cni.name")
                && !["flannel", "custom", "none"].contains(&cni.as_str())
            {
                errors.push(
                    "cni name should be one of [\"flannel\", \"custom\", \"none\"]".to_string(),
                );
            }
        }
    }

    if let Some(install) = machine.get("install").filter(|i| i.as_map().is_some()) {
        if text(install, "disk").is_none() && install.get("diskSelector").is_none() {
            errors.push("either install disk or diskSelector should be defined".to_string());
        }
        if !seq(install, "extraKernelArgs").is_empty()
            && install.get("grubUseUKICmdline") == Some(&Yaml::Bool(true))
        {
            errors.push(
                "install.extraKernelArgs and install.grubUseUKICmdline can't be used together"
                    .to_string(),
            );
        }
    }
    if machine.path("features.hostDNS.forwardKubeDNSToHost") == Some(&Yaml::Bool(true))
        && machine.path("features.hostDNS.enabled") != Some(&Yaml::Bool(true))
    {
        errors.push("feature hostDNS.forwardKubeDNSToHost requires hostDNS.enabled to be true (.machine.features.hostDNS)".to_string());
    }

    let ca_crt = text(machine, "ca.crt");
    let ca_key = text(machine, "ca.key");
    let accepted = !seq(machine, "acceptedCAs").is_empty();
    if machine.get("ca").is_none() && !accepted {
        errors.push(
            "issuing CA or some accepted CAs are required (.machine.ca, machine.acceptedCAs)"
                .to_string(),
        );
    }
    if control_plane {
        if machine.get("ca").is_none() {
            errors.push("issuing CA is required (.machine.ca)".to_string());
        } else if ca_key.is_none() {
            errors.push(
                "issuing CA key is required for controlplane nodes (.machine.ca.key)".to_string(),
            );
        }
    } else if worker {
        for device in seq(machine, "network.interfaces") {
            if device.get("vip").is_some() {
                errors.push(VIP_ON_WORKER.to_string());
            }
            for vlan in seq(device, "vlans") {
                if vlan.get("vip").is_some() {
                    errors.push(VIP_ON_WORKER.to_string());
                }
            }
        }
        if machine.get("ca").is_some() {
            if ca_key.is_some() {
                errors.push(
                    "issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)"
                        .to_string(),
                );
            }
            if ca_crt.is_none() && !accepted {
                errors.push("trusted CA certificates are required on non-controlplane nodes (.machine.ca.crt, .machine.acceptedCAs)".to_string());
            }
        }
        if main
            .path("cluster.ca.key")
            .and_then(Yaml::as_str)
            .is_some_and(|k| !k.is_empty())
        {
            errors.push("issuing Kubernetes API CA key is not allowed on non-controlplane nodes (.cluster.ca)".to_string());
        }
    } else {
        errors.push(format!("unknown machine type {machine_type:?}"));
    }

    for device in seq(machine, "network.interfaces") {
        errors.extend(device_errors(device));
    }
    let kubespan = machine.path("network.kubespan.enabled") == Some(&Yaml::Bool(true));
    if kubespan && main.path("cluster.discovery.enabled") != Some(&Yaml::Bool(true)) {
        errors.push(
            ".cluster.discovery should be enabled when .machine.network.kubespan is enabled"
                .to_string(),
        );
    }
    if main.get("persist") == Some(&Yaml::Bool(false)) {
        errors.push(".persist should be enabled".to_string());
    }
    errors
}

/// `CheckDeviceInterface`, `CheckDeviceAddressing`, `CheckDeviceRoutes` and VLAN checks.
fn device_errors(device: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    if device.get("ignore") == Some(&Yaml::Bool(true)) {
        return errors;
    }
    let name = text(device, "interface").unwrap_or_default();
    let selector = device.get("deviceSelector");
    let pair = "[networking.os.device.interface], [networking.os.device.deviceSelector]";
    match (name.is_empty(), selector.is_some()) {
        (true, false) => errors.push(format!("{pair}: required either config section to be set")),
        (false, true) => errors.push(format!("{pair}: config sections are mutually exclusive")),
        _ => {}
    }
    if device.get("cidr").is_some() && !seq(device, "addresses").is_empty() {
        errors.push(format!(
            "[networking.os.device] {name:?}: interface can't have both .cidr and .addresses set"
        ));
    }
    if let Some(cidr) = text(device, "cidr")
        && let Some(e) = ip_or_cidr_error(&cidr)
    {
        errors.push(format!("[networking.os.device.CIDR] {name:?}: {e}"));
    }
    for address in seq(device, "addresses") {
        let value = address.as_str().unwrap_or_default();
        if let Some(e) = ip_or_cidr_error(value) {
            errors.push(format!("[networking.os.device.addresses] {name:?}: {e}"));
        }
    }
    if let Some(vip) = device.get("vip") {
        let ip = text(vip, "ip").unwrap_or_default();
        if ip.parse::<IpAddr>().is_err() {
            errors.push(format!(
                "[networking.os.device.vip] failed to parse {ip:?} as IP address"
            ));
        }
    }
    for (index, route) in seq(device, "routes").iter().enumerate() {
        let field = |f: &str| format!("networking.os.device.route[{index}].{f}");
        let network = text(route, "network");
        let gateway = text(route, "gateway");
        if let Some(n) = &network
            && n.parse::<IpNet>().is_err()
        {
            errors.push(format!(
                "[{}] {n:?}: invalid network address",
                field("network")
            ));
        }
        if let Some(g) = &gateway
            && g.parse::<IpAddr>().is_err()
        {
            errors.push(format!(
                "[{}] {g:?}: invalid network address",
                field("gateway")
            ));
        }
        if network.is_none() && gateway.is_none() {
            errors.push(format!(
                "[networking.os.device.route[{index}]]: either network or gateway should be set"
            ));
        }
        if let Some(source) = text(route, "source")
            && source.parse::<IpAddr>().is_err()
        {
            errors.push(format!(
                "[{}] {source:?}: invalid network address",
                field("source")
            ));
        }
    }
    for vlan in seq(device, "vlans") {
        let id = vlan.get("vlanId").map(yaml::emit).unwrap_or_default();
        let id = id.trim_end();
        for address in seq(vlan, "addresses") {
            let value = address.as_str().unwrap_or_default();
            if let Some(e) = ip_or_cidr_error(value) {
                errors.push(format!(
                    "[networking.os.device.vlan.addresses] {name}.{id}: {e}"
                ));
            }
        }
    }
    errors
}

/// `HostnameConfigV1Alpha1.Validate` (pkg/machinery/config/types/network/hostname.go).
fn hostname_config_errors(doc: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    let auto = doc.get("auto").and_then(Yaml::as_str);
    let hostname = text(doc, "hostname");
    if auto.is_none() && hostname.is_none() {
        errors.push("either 'auto' or 'hostname' must be set".to_string());
    }
    if auto.is_some_and(|a| a != "off") && hostname.is_some() {
        errors.push("'auto' and 'hostname' cannot be set at the same time".to_string());
    }
    if let Some(value) = auto
        && value != "off"
        && value != "stable"
    {
        errors.push(format!("invalid value for 'auto': {value}"));
    }
    if let Some(fqdn) = hostname {
        if fqdn.len() > 253 {
            errors.push(format!("fqdn is too long: {}", fqdn.len()));
        }
        let host = fqdn.split('.').next().unwrap_or_default();
        if host.is_empty() || host.len() > 63 {
            errors.push(format!("invalid hostname {host:?}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP_V111: &str = include_str!("testdata/controlplane-contract-v1.11.yaml");
    const WORKER_V111: &str = include_str!("testdata/worker-contract-v1.11.yaml");
    const CP_V114: &str = include_str!("testdata/controlplane-contract-v1.14-multidoc.yaml");

    fn errors_of(text: &str) -> Vec<String> {
        validate(text.as_bytes()).unwrap_err()
    }

    /// The v1.11 fixtures are generated without an install disk, which a metal node requires.
    fn with_disk(base: &str) -> String {
        base.replace(
            "    install:\n        wipe: false\n",
            "    install:\n        disk: /dev/sda\n        wipe: false\n",
        )
    }

    fn with_network(base: &str, network: &str) -> String {
        with_disk(base).replace("    network: {}\n", &format!("    network:\n{network}"))
    }

    #[test]
    fn accepts_the_fixtures_once_they_name_an_install_disk() {
        for text in [
            with_disk(CP_V111),
            with_disk(WORKER_V111),
            CP_V114.to_string(),
        ] {
            assert!(
                validate(text.as_bytes()).is_ok(),
                "{:?}",
                validate(text.as_bytes())
            );
        }
        assert_eq!(
            errors_of(CP_V111),
            ["either install disk or diskSelector should be defined"]
        );
    }

    #[test]
    fn decode_errors_come_alone_and_prefixed() {
        let unknown = with_network(CP_V111, "        interfacez: []\n        hostname: 7\n");
        assert_eq!(
            errors_of(&unknown),
            [
                "failed to parse config: unknown keys found during decoding:\nmachine:\n    network:\n        interfacez: []\n"
            ]
        );
        let bad_type = with_network(
            CP_V111,
            "        interfaces:\n            - interface: eth0\n              dhcp: yes\n",
        );
        assert_eq!(
            errors_of(&bad_type),
            [
                "failed to parse config: machine.network.interfaces[0].dhcp: cannot unmarshal !!str `yes` into bool"
            ]
        );
        let unknown_kind = format!("{CP_V111}---\napiVersion: v1alpha1\nkind: BogusConfig\n");
        assert_eq!(
            errors_of(&unknown_kind),
            ["failed to parse config: \"BogusConfig\" \"v1alpha1\": not registered"]
        );
        let twice =
            format!("{CP_V114}---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n");
        assert_eq!(
            errors_of(&twice),
            ["failed to parse config: duplicate document v1alpha1/HostnameConfig/ is not allowed"]
        );
        assert_eq!(
            errors_of("apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n"),
            [MISSING_V1ALPHA1]
        );
    }

    #[test]
    fn older_nodes_reject_newer_contract_fields() {
        let v112 = with_disk(CP_V111).replace(
            "        wipe: false\n",
            "        wipe: false\n        grubUseUKICmdline: true\n",
        );
        assert!(validate_for(v112.as_bytes(), "v1.12.0").is_ok());
        assert_eq!(
            validate_for(v112.as_bytes(), "v1.11.5").unwrap_err(),
            [
                "failed to parse config: unknown keys found during decoding:\nmachine:\n    install:\n        grubUseUKICmdline: true\n"
            ]
        );
        assert_eq!(
            validate_for(CP_V114.as_bytes(), "v1.11.5").unwrap_err(),
            ["failed to parse config: \"DiscoveryServiceConfig\" \"v1alpha1\": not registered"]
        );
    }

    #[test]
    fn validation_errors_are_collected() {
        let vip = with_network(
            WORKER_V111,
            "        interfaces:\n            - interface: eth0\n              addresses: [10.5.0.5/24, 10.5.0.6]\n              vip:\n                ip: 10.5.0.10\n",
        );
        assert_eq!(errors_of(&vip), [VIP_ON_WORKER]);
        let addresses = with_network(
            CP_V111,
            "        interfaces:\n            - interface: eth0\n              addresses: [10.5.0.300/24, nope]\n              routes:\n                  - network: 0.0.0.0/0\n                    gateway: 10.5.0.x\n              vip:\n                ip: not-an-ip\n            - dhcp: true\n",
        );
        assert_eq!(
            errors_of(&addresses),
            [
                "[networking.os.device.addresses] \"eth0\": invalid CIDR address: 10.5.0.300/24",
                "[networking.os.device.addresses] \"eth0\": failed to parse IP address \"nope\"",
                "[networking.os.device.vip] failed to parse \"not-an-ip\" as IP address",
                "[networking.os.device.route[0].gateway] \"10.5.0.x\": invalid network address",
                "[networking.os.device.interface], [networking.os.device.deviceSelector]: required either config section to be set",
            ]
        );
        let worker_keys = with_disk(WORKER_V111).replace(
            "        key: \"\"\n    certSANs",
            "        key: a2V5\n    certSANs",
        );
        assert_eq!(
            errors_of(&worker_keys),
            ["issuing Talos API CA key is not allowed on non-controlplane nodes (.machine.ca)"]
        );
        let no_persist = with_disk(CP_V111).replace("persist: true", "persist: false");
        assert_eq!(errors_of(&no_persist), [".persist should be enabled"]);
        let http = with_disk(CP_V111).replace("endpoint: https://base:6443", "endpoint: base:6443");
        assert_eq!(
            errors_of(&http),
            ["invalid controlplane endpoint: \"base:6443\": missing scheme"]
        );
    }

    #[test]
    fn hostname_rules_follow_upstream() {
        let hostname_twice = with_network(CP_V111, "        hostname: cp1\n")
            + "---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
        assert_eq!(errors_of(&hostname_twice), [HOSTNAME_CONFLICT]);
        let stable_twice = format!(
            "{}---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n",
            with_disk(CP_V111)
        );
        assert_eq!(errors_of(&stable_twice), [STABLE_HOSTNAME_CONFLICT]);
        let both = CP_V114.replace(
            "kind: HostnameConfig\nauto: stable\n",
            "kind: HostnameConfig\nauto: stable\nhostname: cp1\n",
        );
        assert_eq!(
            errors_of(&both),
            ["'auto' and 'hostname' cannot be set at the same time"]
        );
        let static_name = CP_V114.replace(
            "kind: HostnameConfig\nauto: stable\n",
            "kind: HostnameConfig\nauto: off\nhostname: cp1\n",
        );
        assert_eq!(
            validate(static_name.as_bytes())
                .unwrap()
                .hostname
                .as_deref(),
            Some("cp1")
        );
        assert_eq!(
            format_errors(&[VIP_ON_WORKER.to_string()]),
            format!("1 error occurred:\n\t* {VIP_ON_WORKER}\n\n")
        );
    }
}
