//! What a Talos node rejects in a machine config, in the words of the node's own Talos version:
//! decode errors (unregistered kinds, unknown keys, wrong scalar types, duplicates; the first one
//! aborts loading, as in the upstream decoder) and validation errors (v1alpha1 checks, per-document
//! `Validate`, `V1Alpha1ConflictValidate` and container checks; all reported together, as with
//! multierror), rendered the way `ApplyConfiguration` answers them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::contract::parse_major_minor;
use super::schema::{self, SCHEMA_ALL, SchemaMask};
use super::yaml::{self, Yaml};
use super::{ConfigDocuments, MachineConfigSummary, is_v1alpha1_document, summarize_documents};

/// Prefix of decode errors answered by the v1.11/v1.12 maintenance service
/// (upstream: internal/app/maintenance/server.go@v1.11.6, @v1.12.11).
pub const PARSE_PREFIX: &str = "failed to parse config: ";
/// Prefix of validation errors answered by the v1.11/v1.12 maintenance service
/// (upstream: internal/app/maintenance/server.go@v1.11.6, @v1.12.11).
pub const VALIDATION_PREFIX: &str = "configuration validation failed: ";
/// Message of a node rejecting a config without the legacy document (talosctl-cli.md §5).
pub const MISSING_V1ALPHA1: &str = "the applied machine configuration doesn't contain v1alpha1 config, did you mean to patch the machine config instead?";
/// Talos' message for a VIP on a worker (upstream:
/// pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go@v1.12.11).
pub const VIP_ON_WORKER: &str = "virtual (shared) IP is not allowed on non-controlplane nodes";
/// Talos' message for a static hostname next to a `HostnameConfig` document.
pub const HOSTNAME_CONFLICT: &str = "static hostname is already set in v1alpha1 config";
/// Talos' message for `stableHostname: true` in v1alpha1 next to a `HostnameConfig` document.
pub const STABLE_HOSTNAME_CONFLICT: &str = "stable hostname is already set in v1alpha1 config";

/// Document kinds each Talos release registers (`registry.Register` calls under
/// pkg/machinery/config/types). upstream: @v1.11.6.
const KINDS_V1_11: &[&str] = &[
    "v1alpha1",
    "EthernetConfig",
    "EventSinkConfig",
    "ExistingVolumeConfig",
    "ExtensionServiceConfig",
    "KmsgLogConfig",
    "KubeSpanEndpointsConfig",
    "NetworkDefaultActionConfig",
    "NetworkRuleConfig",
    "PCIDriverRebindConfig",
    "RawVolumeConfig",
    "SideroLinkConfig",
    "SwapVolumeConfig",
    "TrustedRootsConfig",
    "UserVolumeConfig",
    "VolumeConfig",
    "WatchdogTimerConfig",
    "ZswapConfig",
];
/// Kinds added in v1.12 (upstream: pkg/machinery/config/types/**@v1.12.11).
const KINDS_ADDED_V1_12: &[&str] = &[
    "BondConfig",
    "BridgeConfig",
    "DHCPv4Config",
    "DHCPv6Config",
    "DummyLinkConfig",
    "HCloudVIPConfig",
    "HostnameConfig",
    "Layer2VIPConfig",
    "LinkAliasConfig",
    "LinkConfig",
    "OOMConfig",
    "RegistryAuthConfig",
    "RegistryMirrorConfig",
    "RegistryTLSConfig",
    "ResolverConfig",
    "StaticHostConfig",
    "TimeSyncConfig",
    "VLANConfig",
    "WireguardConfig",
];
/// Kinds added in v1.13 (upstream: pkg/machinery/config/types/**@v1.13.9).
const KINDS_ADDED_V1_13: &[&str] = &[
    "BlackholeRouteConfig",
    "EnvironmentConfig",
    "ExternalVolumeConfig",
    "ImageVerificationConfig",
    "KubeSpanConfig",
    "RoutingRuleConfig",
    "TCPProbeConfig",
    "VRFConfig",
];
/// Kinds added in v1.14 (upstream: pkg/machinery/config/types/**@v1.14.0-rc.1).
const KINDS_ADDED_V1_14: &[&str] = &[
    "BGPInstanceConfig",
    "CRIBaseRuntimeSpecConfig",
    "CRICustomizationConfig",
    "ContainerConfig",
    "DiscoveryIdentityConfig",
    "DiscoveryServiceConfig",
    "EtcFileConfig",
    "FilesystemScrubConfig",
    "FilesystemTrimConfig",
    "HTTPProbeConfig",
    "ImageCacheConfig",
    "KernelModuleConfig",
    "KubeAPIServerCAConfig",
    "KubeAPIServerConfig",
    "KubeAdmissionControlConfig",
    "KubeAggregatorCAConfig",
    "KubeAuditPolicyConfig",
    "KubeAuthenticationConfig",
    "KubeAuthorizerConfig",
    "KubeClusterConfig",
    "KubeControllerManagerConfig",
    "KubeCoreDNSConfig",
    "KubeCredentialProviderConfig",
    "KubeEtcdEncryptionConfig",
    "KubeExternalManifestConfig",
    "KubeFlannelCNIConfig",
    "KubeInlineManifestConfig",
    "KubeNetworkConfig",
    "KubeNodeConfig",
    "KubePrismConfig",
    "KubeProxyConfig",
    "KubeSchedulerConfig",
    "KubeServiceAccountConfig",
    "KubeStaticPodConfig",
    "KubeTalosAPIAccessConfig",
    "KubeletConfig",
    "LVMLogicalVolumeConfig",
    "LVMVolumeGroupConfig",
    "RAIDArrayConfig",
    "SecurityProfileConfig",
    "SysctlConfig",
    "SysfsConfig",
    "UdevRulesConfig",
    "UnattendedInstallConfig",
    "VethConfig",
];

/// Documents only a control plane may carry (`ControlplaneOnlyDocument` implementers,
/// upstream: pkg/machinery/config/types/k8s/*.go@v1.14.0-rc.1).
const CONTROLPLANE_ONLY_V1_14: &[&str] = &[
    "KubeAPIServerConfig",
    "KubeAdmissionControlConfig",
    "KubeAggregatorCAConfig",
    "KubeAuditPolicyConfig",
    "KubeAuthenticationConfig",
    "KubeAuthorizerConfig",
    "KubeControllerManagerConfig",
    "KubeCoreDNSConfig",
    "KubeEtcdEncryptionConfig",
    "KubeFlannelCNIConfig",
    "KubeProxyConfig",
    "KubeSchedulerConfig",
    "KubeServiceAccountConfig",
    "KubeTalosAPIAccessConfig",
];

/// The rules of one Talos release (`minor` = (1, 12) etc.; unparsable versions = newest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRules {
    minor: (u32, u32),
}

impl NodeRules {
    /// Rules of the node running `talos_version` (`v1.12.4`).
    pub fn for_version(talos_version: &str) -> NodeRules {
        NodeRules {
            minor: parse_major_minor(talos_version).unwrap_or((1, 14)),
        }
    }

    /// The newest release the simulator knows.
    pub fn newest() -> NodeRules {
        NodeRules { minor: (1, 14) }
    }

    fn at_least(self, minor: u32) -> bool {
        self.minor >= (1, minor)
    }

    /// Whether this release registers documents of `kind` (`v1alpha1` = the legacy document).
    pub fn knows_kind(self, kind: &str) -> bool {
        KINDS_V1_11.contains(&kind)
            || (self.at_least(12) && KINDS_ADDED_V1_12.contains(&kind))
            || (self.at_least(13) && KINDS_ADDED_V1_13.contains(&kind))
            || (self.at_least(14) && KINDS_ADDED_V1_14.contains(&kind))
    }

    fn schema_mask(self) -> SchemaMask {
        schema::schema_mask_for_version(&format!("v{}.{}.0", self.minor.0, self.minor.1))
    }
}

/// Why a node refuses a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The decoder's first error, as this release words it (no service prefix).
    Decode(String),
    /// No v1alpha1 document.
    MissingV1Alpha1,
    /// Validation failures: the v1alpha1 document's own errors, and the other top-level
    /// entries (per-document errors with their `Kind/name: ` prefix, conflicts, container checks).
    Invalid {
        v1alpha1: Vec<String>,
        others: Vec<String>,
        /// v1.12+ wrap the v1alpha1 errors as one `v1alpha1.Config: <multierror>` entry; v1.11
        /// appends them flat (upstream: pkg/machinery/config/container/container.go@v1.11.6 vs
        /// @v1.12.11).
        wrapped: bool,
    },
}

impl Rejection {
    /// Every problem as one flat list (decode errors carry [`PARSE_PREFIX`]).
    pub fn problems(&self) -> Vec<String> {
        match self {
            Rejection::Decode(text) => vec![format!("{PARSE_PREFIX}{text}")],
            Rejection::MissingV1Alpha1 => vec![MISSING_V1ALPHA1.to_string()],
            Rejection::Invalid {
                v1alpha1, others, ..
            } => v1alpha1.iter().chain(others).cloned().collect(),
        }
    }

    /// The validation error text (`Container.Validate(...).Error()`).
    pub fn validation_text(&self) -> String {
        match self {
            Rejection::Invalid {
                v1alpha1,
                others,
                wrapped,
            } => {
                let mut entries = Vec::new();
                if *wrapped {
                    if !v1alpha1.is_empty() {
                        entries.push(format!("v1alpha1.Config: {}", format_errors(v1alpha1)));
                    }
                } else {
                    entries.extend(v1alpha1.iter().cloned());
                }
                entries.extend(others.iter().cloned());
                format_errors(&entries)
            }
            Rejection::Decode(text) => text.clone(),
            Rejection::MissingV1Alpha1 => MISSING_V1ALPHA1.to_string(),
        }
    }

    /// The gRPC status (code, message) `ApplyConfiguration` answers with. `maintenance`: the node
    /// has no config yet. v1.11/v1.12 maintenance mode is a separate service that prefixes its
    /// errors and answers decode errors without a status (code Unknown); from v1.13 machined
    /// answers both cases (upstream: internal/app/maintenance/server.go@v1.11.6, @v1.12.11;
    /// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go@v1.13.9, @v1.14.0-rc.1).
    pub fn grpc_status(&self, rules: NodeRules, maintenance: bool) -> (&'static str, String) {
        let legacy_maintenance = maintenance && !rules.at_least(13);
        match self {
            Rejection::Decode(text) if legacy_maintenance => {
                ("Unknown", format!("{PARSE_PREFIX}{text}"))
            }
            Rejection::Decode(text) => ("InvalidArgument", text.clone()),
            Rejection::MissingV1Alpha1 => ("InvalidArgument", MISSING_V1ALPHA1.to_string()),
            Rejection::Invalid { .. } if legacy_maintenance => (
                "InvalidArgument",
                format!("{VALIDATION_PREFIX}{}", self.validation_text()),
            ),
            Rejection::Invalid { .. } => ("InvalidArgument", self.validation_text()),
        }
    }
}

/// Checks a machine config as the newest Talos does before accepting it. On success returns
/// its summary; on failure every problem as a flat list (see [`Rejection::problems`]).
pub fn validate(bytes: &[u8]) -> Result<MachineConfigSummary, Vec<String>> {
    check(bytes, NodeRules::newest()).map_err(|r| r.problems())
}

/// [`validate`] as a node running `talos_version` (e.g. `v1.11.5`) does: older nodes do not know
/// fields and documents newer releases added (`grubUseUKICmdline`, `HostnameConfig`, …).
pub fn validate_for(
    bytes: &[u8],
    talos_version: &str,
) -> Result<MachineConfigSummary, Vec<String>> {
    check(bytes, NodeRules::for_version(talos_version)).map_err(|r| r.problems())
}

/// The full check of a node following `rules`.
pub fn check(bytes: &[u8], rules: NodeRules) -> Result<MachineConfigSummary, Rejection> {
    let config = ConfigDocuments::parse(bytes).map_err(|e| Rejection::Decode(e.to_string()))?;
    let lines = document_lines(std::str::from_utf8(bytes).unwrap_or_default());
    if let Some(error) = first_decode_error(&config, &lines, rules) {
        return Err(Rejection::Decode(error));
    }
    let Some(main) = config.v1alpha1() else {
        return Err(Rejection::MissingV1Alpha1);
    };
    let wrapped = rules.at_least(12);
    let v1alpha1 = v1alpha1_errors(main);
    let mut others = Vec::new();
    for doc in &config.docs {
        let kind = doc.get("kind").and_then(Yaml::as_str).unwrap_or_default();
        let errors = document_errors(doc, kind, rules);
        if errors.is_empty() {
            continue;
        }
        // errors.Join renders one error per line; v1.12+ prefix the document ID (docID).
        let joined = errors.join("\n");
        if wrapped {
            let id = match text(doc, "name") {
                Some(name) => format!("{kind}/{name}"),
                None => kind.to_string(),
            };
            others.push(format!("{id}: {joined}"));
        } else {
            others.push(joined);
        }
    }
    for doc in &config.docs {
        let kind = doc.get("kind").and_then(Yaml::as_str).unwrap_or_default();
        if let Some(conflict) = conflict_error(doc, kind, main, rules) {
            others.push(conflict);
        }
    }
    others.extend(container_errors(&config, main, rules));
    if !v1alpha1.is_empty() || !others.is_empty() {
        return Err(Rejection::Invalid {
            v1alpha1,
            others,
            wrapped,
        });
    }
    summarize_documents(&config).map_err(|e| Rejection::Decode(e.to_string()))
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

/// 1-based line of each non-empty document's first content line (what yaml.v3 reports as the
/// mapping node's line), in document order.
fn document_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut seen_content = false;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            seen_content = false;
            let rest = trimmed.strip_prefix("---").unwrap_or_default().trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                lines.push(index + 1);
                seen_content = true;
            }
            continue;
        }
        let body = trimmed.trim_start();
        if seen_content || body.is_empty() || body.starts_with('#') || body.starts_with('%') {
            continue;
        }
        lines.push(index + 1);
        seen_content = true;
    }
    lines
}

/// The decoder's pass: document kinds, duplicates, unknown keys, scalar types, typed values.
/// upstream: pkg/machinery/config/configloader/internal/decoder/decoder.go@v1.11.6 (bare
/// errors) and @v1.12.11..@v1.14.0-rc.1 (wrapped with the document ID and line).
fn first_decode_error(
    config: &ConfigDocuments,
    lines: &[usize],
    rules: NodeRules,
) -> Option<String> {
    let table = schema::FieldTable::get();
    let with_lines = rules.at_least(12);
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for (index, doc) in config.docs.iter().enumerate() {
        let line = lines.get(index).copied().unwrap_or(1);
        if doc.as_map().is_none() {
            return Some(if with_lines {
                format!("expected a YAML document at line {line}")
            } else {
                "expected a document".to_string()
            });
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
        let legacy = is_v1alpha1_document(doc);
        let declared = doc.get("kind").and_then(Yaml::as_str).unwrap_or_default();
        let id_kind = if declared.is_empty() {
            "v1alpha1"
        } else {
            declared
        };
        let id = (api.clone(), id_kind.to_string(), name.clone());
        if seen.contains(&id) {
            return Some(if with_lines {
                format!("duplicate document {api}/{id_kind}/{name} is not allowed (line {line})")
            } else {
                format!("duplicate document {api}/{id_kind}/{name} is not allowed")
            });
        }
        seen.push(id);
        let wrap = |inner: String| {
            if with_lines {
                format!("error decoding document {api}/{id_kind}/{name} (line {line}): {inner}")
            } else {
                inner
            }
        };
        let kind = if legacy {
            "v1alpha1".to_string()
        } else if declared.is_empty() {
            return Some(wrap("missing kind".to_string()));
        } else if api.is_empty() && rules.at_least(12) {
            return Some(wrap("missing apiVersion".to_string()));
        } else {
            declared.to_string()
        };
        let registered = rules.knows_kind(&kind) && (legacy || api == "v1alpha1");
        if !registered {
            let version = if legacy { "" } else { api.as_str() };
            return Some(wrap(format!("\"{kind}\" \"{version}\": not registered")));
        }
        if let Some(error) = typed_value_error(doc, &kind) {
            return Some(wrap(error));
        }
        let skind = kind.as_str();
        if table.knows_kind(skind) {
            let mask = if table.knows_kind_in(skind, rules.schema_mask()) {
                rules.schema_mask()
            } else {
                SCHEMA_ALL
            };
            if let Some(unknown) = schema::unknown_keys_in(doc, skind, mask) {
                return Some(wrap(format!(
                    "unknown keys found during decoding:\n{}",
                    yaml::emit(&unknown)
                )));
            }
            if let Some(error) = schema::type_errors(doc, skind).into_iter().next() {
                return Some(wrap(error));
            }
        }
    }
    None
}

/// Values Go decodes through `UnmarshalText` (netip prefixes and addresses, enums) fail the
/// whole decode, wrapped as `error decoding <Kind> to <Go type>: …` (decoder.go).
fn typed_value_error(doc: &Yaml, kind: &str) -> Option<String> {
    let go_type = match kind {
        "LinkConfig" => "*network.LinkConfigV1Alpha1",
        "HostnameConfig" => "*network.HostnameConfigV1Alpha1",
        _ => return None,
    };
    let fail = |inner: String| Some(format!("error decoding {kind} to {go_type}: {inner}"));
    if kind == "HostnameConfig" {
        // upstream: pkg/machinery/nethelpers (enumer AutoHostnameKind: off, talos-addr, stable)
        if let Some(auto) = doc.get("auto").and_then(Yaml::as_str)
            && !["off", "talos-addr", "stable"].contains(&auto)
        {
            return fail(format!("{auto} does not belong to AutoHostnameKind values"));
        }
        return None;
    }
    for address in seq(doc, "addresses") {
        if let Some(value) = address.get("address").and_then(Yaml::as_str)
            && let Some(e) = go_parse_prefix_error(value)
        {
            return fail(e);
        }
    }
    for route in seq(doc, "routes") {
        if let Some(value) = route.get("destination").and_then(Yaml::as_str)
            && let Some(e) = go_parse_prefix_error(value)
        {
            return fail(e);
        }
        for field in ["gateway", "source"] {
            if let Some(value) = route.get(field).and_then(Yaml::as_str)
                && let Some(e) = go_parse_addr_error(value)
            {
                return fail(e);
            }
        }
    }
    None
}

/// Go's `netip.ParseAddr` error for `s`, or None when it parses (IPv4 reasons spelled like Go;
/// other failures as `unable to parse IP`).
pub(crate) fn go_parse_addr_error(s: &str) -> Option<String> {
    if s.parse::<IpAddr>().is_ok() {
        return None;
    }
    let quoted = format!("{s:?}");
    let (reason, at) = if s.contains('.') && !s.contains(':') {
        ipv4_reason(s)
    } else {
        ("unable to parse IP".to_string(), None)
    };
    Some(match at {
        Some(at) => format!("ParseAddr({quoted}): {reason} (at {at:?})"),
        None => format!("ParseAddr({quoted}): {reason}"),
    })
}

fn ipv4_reason(s: &str) -> (String, Option<String>) {
    let bytes = s.as_bytes();
    let mut fields = 0;
    let mut value: u32 = 0;
    let mut digits = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if c.is_ascii_digit() {
            if digits == 1 && value == 0 {
                return ("IPv4 field has octet with leading zero".to_string(), None);
            }
            value = value * 10 + u32::from(c - b'0');
            digits += 1;
            if value > 255 {
                return ("IPv4 field has value >255".to_string(), None);
            }
        } else if c == b'.' {
            if i == 0 || i == bytes.len() - 1 || bytes[i - 1] == b'.' {
                return (
                    "IPv4 field must have at least one digit".to_string(),
                    Some(s[i..].to_string()),
                );
            }
            if fields == 3 {
                return ("IPv4 address too long".to_string(), None);
            }
            fields += 1;
            value = 0;
            digits = 0;
        } else {
            return ("unexpected character".to_string(), Some(s[i..].to_string()));
        }
    }
    if fields < 3 {
        return ("IPv4 address too short".to_string(), None);
    }
    ("unable to parse IP".to_string(), None)
}

/// Go's `netip.ParsePrefix` error for `s`, or None when it parses.
pub(crate) fn go_parse_prefix_error(s: &str) -> Option<String> {
    let head = format!("netip.ParsePrefix({s:?}): ");
    let Some((addr, bits)) = s.rsplit_once('/') else {
        return Some(format!("{head}no '/'"));
    };
    if let Some(e) = go_parse_addr_error(addr) {
        return Some(format!("{head}{e}"));
    }
    let max = if addr.contains(':') { 128 } else { 32 };
    let well_formed = !bits.is_empty()
        && bits.bytes().all(|c| c.is_ascii_digit())
        && !(bits.len() > 1 && bits.starts_with('0'));
    if !well_formed {
        return Some(format!("{head}bad bits after slash: {bits:?}"));
    }
    match bits.parse::<u32>() {
        Ok(n) if n <= max => None,
        _ => Some(format!("{head}prefix length out of range")),
    }
}

/// Whether `dotted` is set to something other than null.
fn present(doc: &Yaml, dotted: &str) -> bool {
    !matches!(doc.path(dotted), None | Some(Yaml::Null))
}

fn is_true(doc: &Yaml, dotted: &str) -> bool {
    doc.path(dotted) == Some(&Yaml::Bool(true))
}

fn non_empty(doc: &Yaml, dotted: &str) -> bool {
    match doc.path(dotted) {
        Some(Yaml::Seq(items)) => !items.is_empty(),
        Some(Yaml::Map(items)) => !items.is_empty(),
        Some(Yaml::Str(s)) => !s.is_empty(),
        _ => false,
    }
}

/// Per-document `Validate` of the typed documents this release has.
fn document_errors(doc: &Yaml, kind: &str, rules: NodeRules) -> Vec<String> {
    match kind {
        "HostnameConfig" => hostname_config_errors(doc),
        "LinkConfig" => link_config_errors(doc),
        "LinkAliasConfig" => link_alias_errors(doc, rules),
        "Layer2VIPConfig" => layer2_vip_errors(doc),
        "ResolverConfig" if rules.at_least(14) => resolver_errors(doc),
        _ => Vec::new(),
    }
}

/// `V1Alpha1ConflictValidate` of the document kinds that own a v1alpha1 field, per release.
fn conflict_error(doc: &Yaml, kind: &str, main: &Yaml, rules: NodeRules) -> Option<String> {
    let v14 = rules.at_least(14);
    let err = |s: &str| Some(s.to_string());
    match kind {
        // upstream: pkg/machinery/config/types/block/volume_config.go@v1.12.11 (container.go@v1.11.6)
        "VolumeConfig" => {
            let name = text(doc, "name").unwrap_or_default();
            let label = match name.as_str() {
                "STATE" => "state",
                "EPHEMERAL" => "ephemeral",
                _ => return None,
            };
            (present(doc, "encryption")
                && present(main, &format!("machine.systemDiskEncryption.{label}")))
            .then(|| {
                format!(
                    "system disk encryption for {name:?} is configured in both v1alpha1.Config and VolumeConfig"
                )
            })
        }
        // upstream: pkg/machinery/config/types/network/hostname.go@v1.12.11
        "HostnameConfig" => {
            if text(main, "machine.network.hostname").is_some() {
                err(HOSTNAME_CONFLICT)
            } else if is_true(main, "machine.features.stableHostname") {
                err(STABLE_HOSTNAME_CONFLICT)
            } else {
                None
            }
        }
        // upstream: pkg/machinery/config/types/network/resolver.go@v1.12.11, @v1.14.0-rc.1
        "ResolverConfig" => {
            let nameservers = seq(main, "machine.network.nameservers")
                .iter()
                .any(|n| n.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()));
            if present(main, "machine.network.searchDomains") {
                err(".machine.network.searchDomains is already set in v1alpha1 config")
            } else if nameservers {
                err(".machine.network.nameservers is already set in v1alpha1 config")
            } else if is_true(main, "machine.network.disableSearchDomain") {
                err(".machine.network.disableSearchDomain is already set in v1alpha1 config")
            } else if v14 && non_empty(doc, "hostDNS") && present(main, "machine.features.hostDNS")
            {
                err(".machine.features.hostDNS is already set in v1alpha1 config")
            } else {
                None
            }
        }
        // upstream: pkg/machinery/config/types/network/time_sync.go@v1.12.11
        "TimeSyncConfig" => {
            if !present(main, "machine.time") {
                None
            } else if is_true(main, "machine.time.disabled") {
                err("time sync cannot be disabled in both v1alpha1 and new-style configuration")
            } else if non_empty(main, "machine.time.servers") {
                err("time servers cannot be specified in both v1alpha1 and new-style configuration")
            } else if text(main, "machine.time.bootTimeout").is_some_and(|t| t != "0s" && t != "0")
            {
                err("boot timeout cannot be specified in both v1alpha1 and new-style configuration")
            } else {
                None
            }
        }
        // upstream: pkg/machinery/config/types/network/kubespan.go@v1.13.9
        "KubeSpanConfig" => present(main, "machine.network.kubespan").then(|| {
            "kubespan is already configured in v1alpha1 machine.network.kubespan".to_string()
        }),
        _ if v14 => conflict_error_v1_14(kind, main),
        _ => None,
    }
}

/// The v1.14 owner documents (upstream: pkg/machinery/config/types/{k8s,cluster,cri,runtime}/*.go
/// @v1.14.0-rc.1, `V1Alpha1ConflictValidate`).
fn conflict_error_v1_14(kind: &str, main: &Yaml) -> Option<String> {
    let p = |dotted: &str| present(main, dotted);
    let first = |checks: &[(bool, &str)]| {
        checks
            .iter()
            .find(|(hit, _)| *hit)
            .map(|(_, message)| message.to_string())
    };
    match kind {
        "DiscoveryIdentityConfig" => first(&[(
            text(main, "cluster.id").is_some() || text(main, "cluster.secret").is_some(),
            "cluster identity is already configured in .cluster.id/.cluster.secret of the v1alpha1 config",
        )]),
        "DiscoveryServiceConfig" => first(&[(
            p("cluster.discovery"),
            "discovery service is already configured in .cluster.discovery of the v1alpha1 config",
        )]),
        "CRIBaseRuntimeSpecConfig" => first(&[(
            non_empty(main, "machine.baseRuntimeSpecOverrides"),
            "base runtime spec overrides are already set in v1alpha1 config",
        )]),
        "ImageCacheConfig" => first(&[(
            p("machine.features.imageCache"),
            "image cache config is already set in v1alpha1 config",
        )]),
        "KubeAdmissionControlConfig" | "KubeAuthorizerConfig" => first(&[(
            non_empty(main, "cluster.apiServer.admissionControl"),
            "admission control plugin config is already set in v1alpha1 config",
        )]),
        "KubeAggregatorCAConfig" => first(&[(
            p("cluster.aggregatorCA"),
            "kube-apiserver aggregator CA is already set in v1alpha1 config (.cluster.aggregatorCA), please remove it and use the new KubeAggregatorCAConfig document instead",
        )]),
        "KubeAPIServerConfig" => first(&[
            (
                p("cluster.apiServer"),
                "kube-apiserver config is already set in v1alpha1 config (.cluster.apiServer)",
            ),
            (
                main.path("cluster.controlPlane.localAPIServerPort")
                    .is_some_and(|v| !matches!(v, Yaml::Null | Yaml::Int(0))),
                "kube-apiserver API port is already set in v1alpha1 config (.cluster.controlPlane.localAPIServerPort)",
            ),
        ]),
        "KubeAPIServerCAConfig" => first(&[(
            p("cluster.ca"),
            "kube-apiserver CA is already set in v1alpha1 config (.cluster.ca)",
        )]),
        "KubeAuditPolicyConfig" => first(&[(
            non_empty(main, "cluster.apiServer.auditPolicy"),
            "audit policy config is already set in v1alpha1 config",
        )]),
        "KubeClusterConfig" => first(&[
            (
                text(main, "cluster.clusterName").is_some(),
                "cluster name is already set in the v1alpha1 config (.cluster.clusterName). Please remove it and use only the new KubeClusterConfig document to avoid conflicts",
            ),
            (
                p("cluster.controlPlane.endpoint"),
                "cluster endpoint is already set in the v1alpha1 config (.cluster.controlPlane.endpoint). Please remove it and use only the new KubeClusterConfig document to avoid conflicts",
            ),
        ]),
        "KubeControllerManagerConfig" => first(&[
            (
                p("cluster.controllerManager"),
                "kube-controller-manager config is already set in v1alpha1 config (.cluster.controllerManager)",
            ),
            (
                p("machine.controlPlane.controllerManager"),
                "kube-controller-manager config is already set in v1alpha1 config (.machine.controlplane.controllerManager)",
            ),
        ]),
        "KubeCoreDNSConfig" => first(&[(
            p("cluster.coreDNS"),
            "CoreDNS config is already set in v1alpha1 config (.cluster.coreDNS)",
        )]),
        "KubeCredentialProviderConfig" => first(&[(
            p("machine.kubelet"),
            "cannot use KubeCredentialProviderConfig with legacy kubelet configuration (.machine.kubelet)",
        )]),
        "KubeEtcdEncryptionConfig" => first(&[(
            text(main, "cluster.secretboxEncryptionSecret").is_some()
                || text(main, "cluster.aescbcEncryptionSecret").is_some(),
            "etcd encryption config is already set in v1alpha1 config",
        )]),
        "KubeFlannelCNIConfig" => first(&[(
            p("cluster.network"),
            "cluster network config in v1alpha1 config (.machine.cluster.network) can't be used with KubeFlannelCNIConfig document, please remove it to avoid conflicts",
        )]),
        "KubeletConfig" => first(&[(
            p("machine.kubelet"),
            "kubelet config is already set in v1alpha1 config (.machine.kubelet)",
        )]),
        "KubePrismConfig" => first(&[(
            p("machine.features.kubePrism"),
            "KubePrism config in v1alpha1 config (.machine.features.kubePrism) can't be used with KubePrismConfig document, please remove it to avoid conflicts",
        )]),
        "KubeNetworkConfig" => first(&[(
            p("cluster.network"),
            "cluster network config is already set in the v1alpha1 config (.machine.cluster.network). Please remove it and use only the new KubeNetworkConfig document to avoid conflicts",
        )]),
        "KubeNodeConfig" => first(&[
            (
                p("cluster.allowSchedulingOnControlPlanes"),
                ".cluster.allowSchedulingOnControlPlanes is already set in v1alpha1 config",
            ),
            (
                p("cluster.allowSchedulingOnMasters"),
                ".cluster.allowSchedulingOnMasters is already set in v1alpha1 config",
            ),
            (
                p("machine.kubelet.skipNodeRegistration"),
                ".machine.kubelet.skipNodeRegistration is already set in v1alpha1 config",
            ),
            (
                p("machine.kubelet.registerWithFQDN"),
                ".machine.kubelet.registerWithFQDN is already set in v1alpha1 config",
            ),
            (
                p("machine.kubelet.nodeIP"),
                ".machine.kubelet.nodeIP is already set in v1alpha1 config",
            ),
            (
                p("machine.nodeLabels"),
                ".machine.nodeLabels is already set in v1alpha1 config",
            ),
            (
                p("machine.nodeAnnotations"),
                ".machine.nodeAnnotations is already set in v1alpha1 config",
            ),
            (
                p("machine.nodeTaints"),
                ".machine.nodeTaints is already set in v1alpha1 config",
            ),
        ]),
        "KubeProxyConfig" => first(&[(
            p("cluster.proxy"),
            "cluster proxy config in v1alpha1 config (.machine.cluster.proxy) can't be used with KubeProxyConfig document, please remove it to avoid conflicts",
        )]),
        "KubeSchedulerConfig" => first(&[
            (
                p("cluster.scheduler"),
                "kube-scheduler config is already set in v1alpha1 config (.cluster.scheduler)",
            ),
            (
                p("machine.controlPlane.scheduler"),
                "kube-scheduler config is already set in v1alpha1 config (.machine.controlplane.scheduler)",
            ),
        ]),
        "KubeServiceAccountConfig" => first(&[(
            p("cluster.serviceAccount"),
            "service account is already set in v1alpha1 config (.cluster.serviceAccount)",
        )]),
        "KubeTalosAPIAccessConfig" => first(&[(
            p("machine.features.kubernetesTalosAPIAccess"),
            ".machine.features.kubernetesTalosAPIAccess is already set in v1alpha1 config",
        )]),
        "UnattendedInstallConfig" => first(&[(
            p("machine.install"),
            "UnattendedInstallConfig config is incompatible with v1alpha1 config (.machine.install)",
        )]),
        _ => None,
    }
}

/// Whole-container checks (upstream: pkg/machinery/config/container/validate.go@v1.14.0-rc.1).
fn container_errors(config: &ConfigDocuments, main: &Yaml, rules: NodeRules) -> Vec<String> {
    let mut errors = Vec::new();
    if !rules.at_least(14) {
        return errors;
    }
    let machine_type = text(main, "machine.type").unwrap_or_default();
    let control_plane = matches!(machine_type.as_str(), "controlplane" | "init");
    let mut kinds: Vec<&str> = config
        .docs
        .iter()
        .filter_map(|d| d.get("kind").and_then(Yaml::as_str))
        .filter(|k| CONTROLPLANE_ONLY_V1_14.contains(k))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    if !kinds.is_empty() && !control_plane {
        errors.push(format!(
            "the following document kinds are only allowed on control plane machines: [{}]",
            kinds.join(" ")
        ));
    }
    errors
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

/// `HostnameConfigV1Alpha1.Validate` (upstream: pkg/machinery/config/types/network/hostname.go
/// @v1.12.11, unchanged @v1.14.0-rc.1). An absent `auto` reads as `off` (the enum's zero value);
/// values outside the enum already failed decoding.
fn hostname_config_errors(doc: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    let auto = doc.get("auto").and_then(Yaml::as_str);
    let hostname = text(doc, "hostname");
    if auto.is_none() && hostname.is_none() {
        errors.push("either 'auto' or 'hostname' must be set".to_string());
    }
    let auto_value = auto.unwrap_or("off");
    if auto_value != "off" && hostname.is_some() {
        errors.push("'auto' and 'hostname' cannot be set at the same time".to_string());
    }
    if auto_value != "off" && auto_value != "stable" {
        errors.push(format!("invalid value for 'auto': {auto_value}"));
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

fn is_unspecified(ip: &str) -> bool {
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// `LinkConfigV1Alpha1.Validate` + `CommonLinkConfig.Validate` (upstream:
/// pkg/machinery/config/types/network/link.go@v1.12.11, @v1.14.0-rc.1). Unparsable addresses
/// already failed decoding.
fn link_config_errors(doc: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    if text(doc, "name").is_none() {
        errors.push("name must be specified".to_string());
    }
    for (i, address) in seq(doc, "addresses").iter().enumerate() {
        match text(address, "address") {
            None => errors.push(format!("address {i} must be specified")),
            Some(prefix) => {
                let ip = prefix.split('/').next().unwrap_or_default();
                if is_unspecified(ip) {
                    errors.push(format!("address {i} must be a valid IP address"));
                }
            }
        }
    }
    for (i, route) in seq(doc, "routes").iter().enumerate() {
        if let Some(destination) = text(route, "destination")
            && is_unspecified(destination.split('/').next().unwrap_or_default())
        {
            errors.push(format!("route {i} destination must be a valid IP prefix"));
        }
        for field in ["gateway", "source"] {
            if text(route, field).is_some_and(|ip| is_unspecified(&ip)) {
                errors.push(format!("route {i} {field} must be a valid IP address"));
            }
        }
    }
    errors
}

/// `LinkAliasConfigV1Alpha1.Validate` (upstream: pkg/machinery/config/types/network/link_alias.go
/// @v1.12.11; the `%d` pattern names arrive in @v1.14.0-rc.1). The selector must be a CEL form the
/// simulator can evaluate (see [`super::selector`]).
fn link_alias_errors(doc: &Yaml, rules: NodeRules) -> Vec<String> {
    let mut errors = Vec::new();
    match text(doc, "name") {
        None => errors.push("name must be specified".to_string()),
        Some(name) if rules.at_least(14) && name.contains('%') => {
            let (prefix, suffix) = name.split_once('%').unwrap_or_default();
            if suffix != "d" || prefix.is_empty() {
                errors.push(format!(
                    "name {name:?} contains an invalid format verb, use %d suffix"
                ));
            }
        }
        Some(_) => {}
    }
    match text(doc, "selector.match") {
        None => errors.push("link selector is required".to_string()),
        Some(expression) => {
            if let Err(e) = super::selector::CelSelector::parse(&expression) {
                errors.push(format!("link selector is invalid: {e}"));
            }
        }
    }
    errors
}

/// `Layer2VIPConfigV1Alpha1.Validate` (upstream: pkg/machinery/config/types/network/layer2_vip.go
/// @v1.12.11, @v1.14.0-rc.1). There is no worker check for this document upstream (only the
/// v1alpha1 `interfaces[].vip` is refused on workers).
fn layer2_vip_errors(doc: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    match text(doc, "name") {
        None => errors.push("name must be specified".to_string()),
        Some(name) => {
            if let Some(e) = go_parse_addr_error(&name) {
                errors.push(format!("name must be a valid IP address: {e}"));
            }
        }
    }
    if text(doc, "link").is_none() {
        errors.push("link must be specified".to_string());
    }
    errors
}

/// `ResolverConfigV1Alpha1.Validate` (upstream: pkg/machinery/config/types/network/resolver.go
/// @v1.14.0-rc.1; v1.12/v1.13 have none).
fn resolver_errors(doc: &Yaml) -> Vec<String> {
    let mut errors = Vec::new();
    if non_empty(doc, "hostDNS") && !is_true(doc, "hostDNS.enabled") {
        if is_true(doc, "hostDNS.forwardKubeDNSToHost") {
            errors.push(
                "hostDNS.forwardKubeDNSToHost cannot be enabled when hostDNS.enabled is false"
                    .to_string(),
            );
        }
        if is_true(doc, "hostDNS.resolveMemberNames") {
            errors.push(
                "hostDNS.resolveMemberNames cannot be enabled when hostDNS.enabled is false"
                    .to_string(),
            );
        }
    }
    for (idx, ns) in seq(doc, "nameservers").iter().enumerate() {
        let server_name = text(ns, "tlsServerName");
        // nethelpers.DNSProtocol: Do53 (default), DoT, DoH (enumer, case-insensitive).
        let protocol = text(ns, "protocol").map(|p| p.to_ascii_lowercase());
        match protocol.as_deref() {
            Some("dot") if server_name.is_none() => errors.push(format!(
                "tlsServerName must be set when protocol is DoT: entry {idx}"
            )),
            Some("doh") if server_name.is_none() => errors.push(format!(
                "tlsServerName must be set when protocol is DoH: entry {idx}"
            )),
            None | Some("do53") if server_name.is_some() => errors.push(format!(
                "tlsServerName must be empty when protocol is Do53: entry {idx}"
            )),
            _ => {}
        }
        if text(ns, "address").is_none_or(|a| a.parse::<IpAddr>().is_err()) {
            errors.push(format!(
                "nameserver address must be a valid IP: entry {idx}"
            ));
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

    /// upstream: pkg/machinery/config/configloader/internal/decoder/decoder.go@v1.11.6 (bare
    /// errors) vs @v1.12.11/@v1.14.0-rc.1 (`error decoding document <id> (line N): …`).
    #[test]
    fn decode_errors_come_alone_and_in_the_node_versions_words() {
        let v111 = |text: &str| validate_for(text.as_bytes(), "v1.11.5").unwrap_err();
        let unknown = with_network(CP_V111, "        interfacez: []\n        hostname: 7\n");
        assert_eq!(
            v111(&unknown),
            [
                "failed to parse config: unknown keys found during decoding:\nmachine:\n    network:\n        interfacez: []\n"
            ]
        );
        assert_eq!(
            errors_of(&unknown),
            [
                "failed to parse config: error decoding document /v1alpha1/ (line 1): unknown keys found during decoding:\nmachine:\n    network:\n        interfacez: []\n"
            ]
        );
        let bad_type = with_network(
            CP_V111,
            "        interfaces:\n            - interface: eth0\n              dhcp: yes\n",
        );
        assert_eq!(
            v111(&bad_type),
            [
                "failed to parse config: machine.network.interfaces[0].dhcp: cannot unmarshal !!str `yes` into bool"
            ]
        );
        let unknown_kind = format!("{CP_V111}---\napiVersion: v1alpha1\nkind: BogusConfig\n");
        assert_eq!(
            v111(&unknown_kind),
            ["failed to parse config: \"BogusConfig\" \"v1alpha1\": not registered"]
        );
        assert_eq!(
            errors_of(&unknown_kind),
            [
                "failed to parse config: error decoding document v1alpha1/BogusConfig/ (line 97): \"BogusConfig\" \"v1alpha1\": not registered"
            ]
        );
        let twice =
            format!("{CP_V114}---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n");
        assert_eq!(
            errors_of(&twice),
            [
                "failed to parse config: duplicate document v1alpha1/HostnameConfig/ is not allowed (line 227)"
            ]
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
            ["HostnameConfig: 'auto' and 'hostname' cannot be set at the same time"]
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

    /// A clean v1alpha1 base for typed-document tests (no `stableHostname`, which a
    /// `HostnameConfig` would conflict with).
    fn base() -> String {
        with_disk(CP_V111).replace("        stableHostname: true\n", "")
    }

    fn plus(base: &str, docs: &str) -> String {
        format!("{base}---\n{docs}")
    }

    fn on(version: &str, text: &str) -> Vec<String> {
        match validate_for(text.as_bytes(), version) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        }
    }

    /// upstream: the `registry.Register` calls under pkg/machinery/config/types at each tag.
    #[test]
    fn each_release_accepts_only_the_kinds_it_registers() {
        let link = plus(
            &base(),
            "apiVersion: v1alpha1\nkind: LinkConfig\nname: ens18\n",
        );
        assert_eq!(
            on("v1.11.6", &link),
            ["failed to parse config: \"LinkConfig\" \"v1alpha1\": not registered"]
        );
        assert_eq!(on("v1.12.11", &link), Vec::<String>::new());
        let kubespan = plus(
            &base(),
            "apiVersion: v1alpha1\nkind: KubeSpanConfig\nenabled: false\n",
        );
        assert_eq!(
            on("v1.12.11", &kubespan),
            [
                "failed to parse config: error decoding document v1alpha1/KubeSpanConfig/ (line 97): \"KubeSpanConfig\" \"v1alpha1\": not registered"
            ]
        );
        assert_eq!(on("v1.13.9", &kubespan), Vec::<String>::new());
        let kubelet = plus(
            &base().replace(
                "    kubelet:\n        image: ghcr.io/siderolabs/kubelet:v1.28.0\n        defaultRuntimeSeccompProfileEnabled: true\n        disableManifestsDirectory: true\n",
                "",
            ),
            "apiVersion: v1alpha1\nkind: KubeletConfig\nimage: ghcr.io/siderolabs/kubelet:v1.28.0\n",
        );
        assert!(
            on("v1.13.9", &kubelet)[0].ends_with("\"KubeletConfig\" \"v1alpha1\": not registered")
        );
        assert_eq!(on("v1.14.0-rc.1", &kubelet), Vec::<String>::new());
        // v1.11 already registers KubeSpanEndpointsConfig (the schema titles it differently).
        let endpoints = plus(
            &base(),
            "apiVersion: v1alpha1\nkind: KubeSpanEndpointsConfig\nextraAnnouncedEndpoints: [192.168.1.1:51820]\n",
        );
        assert_eq!(on("v1.11.6", &endpoints), Vec::<String>::new());
        // a known kind with an unknown apiVersion is not registered either
        let v2 = plus(
            &base(),
            "apiVersion: v1alpha2\nkind: LinkConfig\nname: ens18\n",
        );
        assert!(on("v1.12.11", &v2)[0].ends_with("\"LinkConfig\" \"v1alpha2\": not registered"));
    }

    /// Every owner document next to the v1alpha1 field it owns, per release (upstream:
    /// `V1Alpha1ConflictValidate` in pkg/machinery/config/types/**@v1.12.11, @v1.13.9,
    /// @v1.14.0-rc.1).
    #[test]
    fn owner_documents_conflict_with_the_v1alpha1_fields_they_own() {
        let b = base();
        let net = |extra: &str| b.replace("    network: {}\n", &format!("    network:\n{extra}"));
        let cases: Vec<(&str, String, &str, &str)> = vec![
            (
                "v1.12.11",
                net("        nameservers: [1.1.1.1]\n"),
                "apiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n    - address: 8.8.8.8\n",
                ".machine.network.nameservers is already set in v1alpha1 config",
            ),
            (
                "v1.12.11",
                net("        searchDomains: [example.org]\n"),
                "apiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n    - address: 8.8.8.8\n",
                ".machine.network.searchDomains is already set in v1alpha1 config",
            ),
            (
                "v1.12.11",
                net("        disableSearchDomain: true\n"),
                "apiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n    - address: 8.8.8.8\n",
                ".machine.network.disableSearchDomain is already set in v1alpha1 config",
            ),
            (
                "v1.12.11",
                net("        hostname: cp1\n"),
                "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cp1\n",
                HOSTNAME_CONFLICT,
            ),
            (
                "v1.12.11",
                with_disk(CP_V111),
                "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n",
                STABLE_HOSTNAME_CONFLICT,
            ),
            (
                "v1.12.11",
                b.replace(
                    "    install:\n",
                    "    time:\n        servers: [time.cloudflare.com]\n    install:\n",
                ),
                "apiVersion: v1alpha1\nkind: TimeSyncConfig\nntp:\n    servers: [pool.ntp.org]\n",
                "time servers cannot be specified in both v1alpha1 and new-style configuration",
            ),
            (
                "v1.13.9",
                net("        kubespan:\n            enabled: false\n"),
                "apiVersion: v1alpha1\nkind: KubeSpanConfig\nenabled: false\n",
                "kubespan is already configured in v1alpha1 machine.network.kubespan",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: KubeletConfig\nimage: ghcr.io/siderolabs/kubelet:v1.28.0\n",
                "kubelet config is already set in v1alpha1 config (.machine.kubelet)",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: KubeNetworkConfig\n",
                "cluster network config is already set in the v1alpha1 config (.machine.cluster.network). Please remove it and use only the new KubeNetworkConfig document to avoid conflicts",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: KubeClusterConfig\n",
                "cluster name is already set in the v1alpha1 config (.cluster.clusterName). Please remove it and use only the new KubeClusterConfig document to avoid conflicts",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: KubeAPIServerCAConfig\n",
                "kube-apiserver CA is already set in v1alpha1 config (.cluster.ca)",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: KubeNodeConfig\n",
                ".machine.nodeLabels is already set in v1alpha1 config",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: DiscoveryServiceConfig\nname: default\n",
                "discovery service is already configured in .cluster.discovery of the v1alpha1 config",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: KubeEtcdEncryptionConfig\n",
                "etcd encryption config is already set in v1alpha1 config",
            ),
            (
                "v1.14.0-rc.1",
                b.clone(),
                "apiVersion: v1alpha1\nkind: UnattendedInstallConfig\n",
                "UnattendedInstallConfig config is incompatible with v1alpha1 config (.machine.install)",
            ),
        ];
        for (version, main, doc, message) in cases {
            let errors = on(version, &plus(&main, doc));
            assert!(
                errors.iter().any(|e| e == message),
                "{version} {doc}: {errors:?}"
            );
        }
        // Without the owned field the same documents are fine.
        let resolver = plus(
            &b,
            "apiVersion: v1alpha1\nkind: ResolverConfig\nnameservers:\n    - address: 8.8.8.8\n",
        );
        assert_eq!(on("v1.12.11", &resolver), Vec::<String>::new());
    }

    /// upstream: pkg/machinery/config/types/network/hostname.go@v1.12.11 and the enum values of
    /// nethelpers.AutoHostnameKind.
    #[test]
    fn hostname_config_rules() {
        let doc = |body: &str| {
            plus(
                &base(),
                &format!("apiVersion: v1alpha1\nkind: HostnameConfig\n{body}"),
            )
        };
        assert_eq!(
            on("v1.12.11", &doc("hostname: cp1\n")),
            Vec::<String>::new()
        );
        assert_eq!(on("v1.12.11", &doc("auto: off\n")), Vec::<String>::new());
        assert_eq!(
            on("v1.12.11", &doc("auto: stable\nhostname: cp1\n")),
            ["HostnameConfig: 'auto' and 'hostname' cannot be set at the same time"]
        );
        assert_eq!(
            on("v1.12.11", &doc("auto: talos-addr\n")),
            ["HostnameConfig: invalid value for 'auto': talos-addr"]
        );
        assert_eq!(
            on(
                "v1.12.11",
                &doc("{}\n").replace("kind: HostnameConfig\n{}\n", "kind: HostnameConfig\n")
            ),
            ["HostnameConfig: either 'auto' or 'hostname' must be set"]
        );
        assert_eq!(
            on(
                "v1.12.11",
                &doc(&format!("hostname: {}.example\n", "a".repeat(64)))
            ),
            [format!(
                "HostnameConfig: invalid hostname {:?}",
                "a".repeat(64)
            )]
        );
        assert_eq!(
            on("v1.12.11", &doc("auto: dynamic\n")),
            [
                "failed to parse config: error decoding document v1alpha1/HostnameConfig/ (line 97): error decoding HostnameConfig to *network.HostnameConfigV1Alpha1: dynamic does not belong to AutoHostnameKind values"
            ]
        );
    }

    /// upstream: pkg/machinery/config/types/network/link.go@v1.12.11 (netip decoding, Validate).
    #[test]
    fn link_config_rules() {
        let doc = |body: &str| {
            plus(
                &base(),
                &format!("apiVersion: v1alpha1\nkind: LinkConfig\n{body}"),
            )
        };
        assert_eq!(
            on(
                "v1.12.11",
                &doc("name: ens18\naddresses:\n    - address: 10.5.0.5/24\n")
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            on(
                "v1.12.11",
                &doc("name: ens18\naddresses:\n    - address: 10.5.0.5\n")
            ),
            [
                "failed to parse config: error decoding document v1alpha1/LinkConfig/ens18 (line 97): error decoding LinkConfig to *network.LinkConfigV1Alpha1: netip.ParsePrefix(\"10.5.0.5\"): no '/'"
            ]
        );
        assert!(
            on("v1.12.11", &doc("name: ens18\naddresses:\n    - address: 10.5.0.300/24\n"))[0]
                .ends_with("netip.ParsePrefix(\"10.5.0.300/24\"): ParseAddr(\"10.5.0.300\"): IPv4 field has value >255")
        );
        assert_eq!(
            on(
                "v1.12.11",
                &doc(
                    "name: ens18\naddresses:\n    - address: 0.0.0.0/0\nroutes:\n    - gateway: 0.0.0.0\n"
                )
            ),
            [
                "LinkConfig/ens18: address 0 must be a valid IP address\nroute 0 gateway must be a valid IP address"
            ]
        );
        assert_eq!(
            on("v1.12.11", &doc("addresses:\n    - address: 10.5.0.5/24\n")),
            ["LinkConfig: name must be specified"]
        );
    }

    /// upstream: pkg/machinery/config/types/network/link_alias.go@v1.12.11, @v1.14.0-rc.1.
    #[test]
    fn link_alias_config_rules() {
        let doc = |body: &str| {
            plus(
                &base(),
                &format!("apiVersion: v1alpha1\nkind: LinkAliasConfig\n{body}"),
            )
        };
        assert_eq!(
            on(
                "v1.12.11",
                &doc(
                    "name: net0\nselector:\n    match: mac(link.permanent_addr) == \"bc:24:11:00:00:01\"\n"
                )
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            on("v1.12.11", &doc("name: net0\n")),
            ["LinkAliasConfig/net0: link selector is required"]
        );
        let guess = "link.permanent_addr == \"bc:24:11:00:00:01\"";
        assert_eq!(
            on(
                "v1.12.11",
                &doc(&format!("name: net0\nselector:\n    match: '{guess}'\n"))
            ),
            [format!(
                "LinkAliasConfig/net0: link selector is invalid: {}",
                super::super::selector::unsupported(guess)
            )]
        );
        let pattern = doc("name: net%s\nselector:\n    match: link.driver == \"virtio_net\"\n");
        assert_eq!(
            on("v1.14.0-rc.1", &pattern),
            [
                "LinkAliasConfig/net%s: name \"net%s\" contains an invalid format verb, use %d suffix"
            ]
        );
        assert_eq!(on("v1.12.11", &pattern), Vec::<String>::new());
    }

    /// upstream: pkg/machinery/config/types/network/layer2_vip.go@v1.12.11 (no worker rule for
    /// the document) and v1alpha1_validation.go@v1.12.11 (`interfaces[].vip` on workers).
    #[test]
    fn layer2_vip_rules() {
        let doc = |body: &str| {
            plus(
                &base(),
                &format!("apiVersion: v1alpha1\nkind: Layer2VIPConfig\n{body}"),
            )
        };
        assert_eq!(
            on("v1.12.11", &doc("name: 10.5.0.10\nlink: ens18\n")),
            Vec::<String>::new()
        );
        assert_eq!(
            on("v1.12.11", &doc("name: 10.5.0.x\n")),
            [
                "Layer2VIPConfig/10.5.0.x: name must be a valid IP address: ParseAddr(\"10.5.0.x\"): unexpected character (at \"x\")\nlink must be specified"
            ]
        );
        let worker = plus(
            &with_disk(WORKER_V111).replace("        stableHostname: true\n", ""),
            "apiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 10.5.0.10\nlink: ens18\n",
        );
        assert_eq!(on("v1.12.11", &worker), Vec::<String>::new());
    }

    /// upstream: pkg/machinery/config/container/validate.go@v1.14.0-rc.1 (ControlplaneOnlyConfig).
    #[test]
    fn controlplane_only_documents_are_refused_on_workers_from_v1_14() {
        let worker = plus(
            &with_disk(WORKER_V111),
            "apiVersion: v1alpha1\nkind: KubeSchedulerConfig\n---\napiVersion: v1alpha1\nkind: KubeProxyConfig\n",
        );
        assert!(
            on("v1.14.0-rc.1", &worker).contains(
                &"the following document kinds are only allowed on control plane machines: [KubeProxyConfig KubeSchedulerConfig]".to_string()
            ),
            "{:?}",
            on("v1.14.0-rc.1", &worker)
        );
    }

    /// How ApplyConfiguration words a rejection (upstream:
    /// internal/app/maintenance/server.go@v1.11.6/@v1.12.11,
    /// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go@v1.13.9,
    /// pkg/machinery/config/container/container.go@v1.11.6/@v1.12.11).
    #[test]
    fn grpc_status_follows_release_and_mode() {
        let vip = with_network(
            WORKER_V111,
            "        interfaces:\n            - interface: ens18\n              addresses: [10.5.0.5/24]\n              vip:\n                ip: 10.5.0.10\n",
        );
        let status = |version: &str, maintenance: bool| {
            let rules = NodeRules::for_version(version);
            check(vip.as_bytes(), rules)
                .unwrap_err()
                .grpc_status(rules, maintenance)
        };
        assert_eq!(
            status("v1.11.5", true),
            (
                "InvalidArgument",
                format!(
                    "configuration validation failed: 1 error occurred:\n\t* {VIP_ON_WORKER}\n\n"
                )
            )
        );
        assert_eq!(
            status("v1.11.5", false),
            (
                "InvalidArgument",
                format!("1 error occurred:\n\t* {VIP_ON_WORKER}\n\n")
            )
        );
        let wrapped = format!(
            "1 error occurred:\n\t* v1alpha1.Config: 1 error occurred:\n\t* {VIP_ON_WORKER}\n\n\n\n"
        );
        assert_eq!(
            status("v1.12.4", true),
            (
                "InvalidArgument",
                format!("configuration validation failed: {wrapped}")
            )
        );
        assert_eq!(
            status("v1.13.2", true),
            ("InvalidArgument", wrapped.clone())
        );
        assert_eq!(status("v1.14.0", false), ("InvalidArgument", wrapped));
        let bogus = format!("{CP_V111}---\napiVersion: v1alpha1\nkind: BogusConfig\n");
        let decode = |version: &str, maintenance: bool| {
            let rules = NodeRules::for_version(version);
            check(bogus.as_bytes(), rules)
                .unwrap_err()
                .grpc_status(rules, maintenance)
        };
        assert_eq!(
            decode("v1.11.5", true),
            (
                "Unknown",
                "failed to parse config: \"BogusConfig\" \"v1alpha1\": not registered".to_string()
            )
        );
        assert_eq!(
            decode("v1.11.5", false),
            (
                "InvalidArgument",
                "\"BogusConfig\" \"v1alpha1\": not registered".to_string()
            )
        );
        assert_eq!(
            decode("v1.13.2", true).1,
            "error decoding document v1alpha1/BogusConfig/ (line 97): \"BogusConfig\" \"v1alpha1\": not registered"
        );
    }

    /// Go's netip error texts (net/netip ParseAddr/ParsePrefix).
    #[test]
    fn netip_errors_read_like_go() {
        assert_eq!(go_parse_prefix_error("10.0.0.0/8"), None);
        assert_eq!(
            go_parse_prefix_error("10.0.0.1/33").as_deref(),
            Some("netip.ParsePrefix(\"10.0.0.1/33\"): prefix length out of range")
        );
        assert_eq!(
            go_parse_prefix_error("10.0.0.1/x").as_deref(),
            Some("netip.ParsePrefix(\"10.0.0.1/x\"): bad bits after slash: \"x\"")
        );
        assert_eq!(
            go_parse_addr_error("10.0.0").as_deref(),
            Some("ParseAddr(\"10.0.0\"): IPv4 address too short")
        );
        assert_eq!(
            go_parse_addr_error("nope").as_deref(),
            Some("ParseAddr(\"nope\"): unable to parse IP")
        );
    }
}
