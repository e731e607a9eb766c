//! The Proxmox VE API client: looks up each Talos VM's MAC addresses (`cluster/resources`, then
//! the VM's `config`) so discovery can match maintenance-mode hosts by MAC. The API token secret
//! is held in a `SecretString`, sent only in the `Authorization` header, and never printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::profile::model::{Proxmox, ProxmoxTls, TokenSecretSource};

/// Errors talking to Proxmox or obtaining the token secret. None of them contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxClientError {
    #[error("proxmox.url {url:?} is not a valid https:// URL")]
    BadUrl { url: String },
    #[error("proxmox.token_id {token_id:?} must have the form USER@REALM!TOKENNAME")]
    BadTokenId { token_id: String },
    #[error("the Proxmox token secret is not usable in an HTTP header (control characters?)")]
    BadSecret,
    #[error("cannot read proxmox.ca_file: {source}")]
    CaFile { source: std::io::Error },
    #[error("proxmox.ca_file {path} holds no usable PEM certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("environment variable {var} (proxmox.token_secret_env) is not set or empty")]
    SecretEnvMissing { var: String },
    #[error("proxmox.token_secret_command {command:?} failed: {reason}")]
    SecretCommand { command: String, reason: String },
    #[error(
        "Proxmox rejected the API token ({status}): check proxmox.token_id ({token_id}) and the secret from {secret_source}"
    )]
    Unauthorized {
        status: String,
        token_id: String,
        secret_source: String,
    },
    #[error(
        "Proxmox VM {vmid} not found in cluster/resources (is the vmid right, and does the token have VM.Audit on /vms/{vmid}?)"
    )]
    UnknownVm { vmid: u32 },
    #[error("Proxmox guest {vmid} is an LXC container, not a QEMU VM")]
    NotQemu { vmid: u32 },
    #[error("Proxmox VM {vmid}: {key} = {value:?} has no valid MAC address")]
    BadNic {
        vmid: u32,
        key: String,
        value: String,
    },
    #[error("GET {url}: {status}")]
    Http { url: String, status: String },
    #[error("GET {url}: {reason}{hint}")]
    Transport {
        url: String,
        reason: String,
        hint: &'static str,
    },
    #[error("GET {url}: unexpected response: {reason}")]
    Decode { url: String, reason: String },
}

type Result<T, E = ProxmoxClientError> = std::result::Result<T, E>;

static INSECURE_WARNED: AtomicBool = AtomicBool::new(false);

/// A client for one Proxmox VE cluster, authenticated with an API token.
pub struct ProxmoxClient {
    http: reqwest::Client,
    /// `https://host:8006` (no trailing slash, no `/api2/json`).
    base: reqwest::Url,
    token_id: String,
    authorization: HeaderValue,
    secret_source: String,
}

impl std::fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("base", &self.base.as_str())
            .field("token_id", &self.token_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl ProxmoxClient {
    /// A client for `url` (`https://host:8006`, with or without `/api2/json`). `tls` decides the
    /// trust: `CaFile` makes that CA the only root, `InsecureSkipVerify` checks nothing (warned
    /// once per process), `SystemRoots` uses the platform roots.
    pub fn new(url: &str, token_id: &str, secret: SecretString, tls: &ProxmoxTls) -> Result<Self> {
        let base = parse_base(url)?;
        if !token_id.contains('@') || !token_id.contains('!') {
            return Err(ProxmoxClientError::BadTokenId {
                token_id: token_id.to_string(),
            });
        }
        let mut authorization = HeaderValue::from_str(&format!(
            "PVEAPIToken={token_id}={}",
            secret.expose_secret()
        ))
        .map_err(|_| ProxmoxClientError::BadSecret)?;
        authorization.set_sensitive(true);
        // PVE delays every 401 by 3 s: stay well above it.
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .no_proxy();
        match tls {
            ProxmoxTls::CaFile(path) => {
                let pem =
                    fs_err::read(path).map_err(|source| ProxmoxClientError::CaFile { source })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ProxmoxClientError::BadCa {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if certs.is_empty() {
                    return Err(ProxmoxClientError::BadCa {
                        path: path.clone(),
                        reason: "no CERTIFICATE block".to_string(),
                    });
                }
                builder = builder.tls_certs_only(certs);
            }
            ProxmoxTls::InsecureSkipVerify => {
                if !INSECURE_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %base,
                        "proxmox.insecure_skip_verify is set: the Proxmox server certificate is NOT checked"
                    );
                }
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
            ProxmoxTls::SystemRoots => {}
        }
        let http = builder
            .build()
            .map_err(|e| ProxmoxClientError::Client(error_chain(&e)))?;
        Ok(ProxmoxClient {
            http,
            base,
            token_id: token_id.to_string(),
            authorization,
            secret_source: "the configured token secret".to_string(),
        })
    }

    /// A client from the profile's `proxmox:` block, reading the secret from its source.
    pub fn from_profile(proxmox: &Proxmox) -> Result<Self> {
        let secret = token_secret(&proxmox.token_secret)?;
        Ok(
            Self::new(&proxmox.url, &proxmox.token_id, secret, &proxmox.tls)?
                .with_secret_source(describe_source(&proxmox.token_secret)),
        )
    }

    /// Names where the secret came from, for the 401 message (e.g. `env PVE_TOKEN_SECRET`).
    pub fn with_secret_source(mut self, description: impl Into<String>) -> Self {
        self.secret_source = description.into();
        self
    }

    /// MACs (lower-case, in `netN` order) of each QEMU VM in `vmids`.
    pub async fn vm_macs(&self, vmids: &[u32]) -> Result<BTreeMap<u32, Vec<String>>> {
        let mut out = BTreeMap::new();
        if vmids.is_empty() {
            return Ok(out);
        }
        let resources = self
            .get(&["cluster", "resources"], Some(("type", "vm")))
            .await?;
        let list = resources
            .as_array()
            .ok_or_else(|| ProxmoxClientError::Decode {
                url: self.url(&["cluster", "resources"]).to_string(),
                reason: "data is not a list".to_string(),
            })?;
        let mut qemu_node: BTreeMap<u32, String> = BTreeMap::new();
        let mut containers = Vec::new();
        for entry in list {
            let Some(vmid) = entry
                .get("vmid")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
            else {
                continue;
            };
            match entry.get("type").and_then(Value::as_str) {
                Some("qemu") => {
                    if let Some(node) = entry.get("node").and_then(Value::as_str) {
                        qemu_node.insert(vmid, node.to_string());
                    }
                }
                Some("lxc") => containers.push(vmid),
                _ => {}
            }
        }
        for &vmid in vmids {
            let Some(node) = qemu_node.get(&vmid) else {
                return Err(if containers.contains(&vmid) {
                    ProxmoxClientError::NotQemu { vmid }
                } else {
                    ProxmoxClientError::UnknownVm { vmid }
                });
            };
            let vmid_text = vmid.to_string();
            let config = self
                .get(&["nodes", node, "qemu", &vmid_text, "config"], None)
                .await?;
            let config = config
                .as_object()
                .ok_or_else(|| ProxmoxClientError::Decode {
                    url: self
                        .url(&["nodes", node, "qemu", &vmid_text, "config"])
                        .to_string(),
                    reason: "data is not an object".to_string(),
                })?;
            out.insert(vmid, nic_macs(vmid, config)?);
        }
        Ok(out)
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["api2", "json"])
                .extend(segments);
        }
        url
    }

    /// GETs an API path and returns its `data`.
    async fn get(&self, segments: &[&str], query: Option<(&str, &str)>) -> Result<Value> {
        let mut url = self.url(segments);
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let response = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let status_line = format!("{} {reason}", status.as_u16());
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ProxmoxClientError::Unauthorized {
                status: status_line,
                token_id: self.token_id.clone(),
                secret_source: self.secret_source.clone(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let message = parsed
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty() && *m != reason.trim());
            let errors = parsed
                .as_ref()
                .and_then(|v| v.get("errors"))
                .filter(|e| e.is_object())
                .map(|e| format!(" {e}"))
                .unwrap_or_default();
            return Err(ProxmoxClientError::Http {
                url: url.to_string(),
                status: match message {
                    Some(m) => format!("{status_line}: {m}{errors}"),
                    None => format!("{status_line}{errors}"),
                },
            });
        }
        let Some(mut envelope) = parsed else {
            return Err(ProxmoxClientError::Decode {
                url: url.to_string(),
                reason: "body is not JSON".to_string(),
            });
        };
        match envelope.get_mut("data") {
            Some(data) => Ok(data.take()),
            None => Err(ProxmoxClientError::Decode {
                url: url.to_string(),
                reason: "no \"data\" field".to_string(),
            }),
        }
    }
}

fn parse_base(url: &str) -> Result<reqwest::Url> {
    let bad = || ProxmoxClientError::BadUrl {
        url: url.to_string(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/api2/json").unwrap_or(trimmed);
    let parsed = reqwest::Url::parse(trimmed).map_err(|_| bad())?;
    if parsed.scheme() != "https" || parsed.host().is_none() {
        return Err(bad());
    }
    Ok(parsed)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn transport_error(url: &reqwest::Url, error: &reqwest::Error) -> ProxmoxClientError {
    let reason = error_chain(error);
    let lower = reason.to_ascii_lowercase();
    let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
        " (the Proxmox certificate is not trusted: set proxmox.ca_file to the cluster CA, /etc/pve/pve-root-ca.pem, or, at your own risk, proxmox.insecure_skip_verify)"
    } else {
        ""
    };
    ProxmoxClientError::Transport {
        url: url.to_string(),
        reason,
        hint,
    }
}

/// NIC model names PVE accepts as the key of the MAC (`virtio=BC:24:…`).
const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// The MACs of every `netN` key of a VM config, lower-case, ordered by N. A NIC written without
/// a MAC (bare model) is skipped.
pub fn nic_macs(vmid: u32, config: &Map<String, Value>) -> Result<Vec<String>> {
    let mut nics: Vec<(u32, &str, &str)> = config
        .iter()
        .filter_map(|(key, value)| {
            let n = key.strip_prefix("net")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((
                n.parse().ok()?,
                key.as_str(),
                value.as_str().unwrap_or_default(),
            ))
        })
        .collect();
    nics.sort_by_key(|(n, _, _)| *n);
    let mut macs = Vec::new();
    for (_, key, value) in nics {
        match nic_mac(value) {
            Ok(Some(mac)) => macs.push(mac),
            Ok(None) => {}
            Err(_) => {
                return Err(ProxmoxClientError::BadNic {
                    vmid,
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
        }
    }
    Ok(macs)
}

/// The MAC of one `netN` property string (`virtio=BC:24:11:5E:2A:01,bridge=vmbr0`, or
/// `model=virtio,macaddr=…`, any key order), lower-case; `None` for a bare model without MAC.
pub fn nic_mac(property: &str) -> std::result::Result<Option<String>, String> {
    let mut mac = None;
    for item in property.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key == "macaddr" || NIC_MODELS.contains(&key) {
            mac = Some(value.trim());
        }
    }
    match mac {
        None => Ok(None),
        Some(m) if is_mac(m) => Ok(Some(m.to_ascii_lowercase())),
        Some(other) => Err(format!("{other:?} is not a MAC address")),
    }
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How a secret source is named in messages (never its value).
pub fn describe_source(source: &TokenSecretSource) -> String {
    match source {
        TokenSecretSource::Env(var) => format!("env {var} (proxmox.token_secret_env)"),
        TokenSecretSource::Command(argv) => {
            format!(
                "command {:?} (proxmox.token_secret_command)",
                argv.join(" ")
            )
        }
    }
}

/// How long `proxmox.token_secret_command` may take (a password manager prompt included).
pub const TOKEN_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Reads the token secret: the environment variable, or the first stdout line of the command
/// (a failing command's error carries its stderr, never its stdout).
pub fn token_secret(source: &TokenSecretSource) -> Result<SecretString> {
    token_secret_within(source, TOKEN_COMMAND_TIMEOUT)
}

/// [`token_secret`] with the command bounded by `limit`.
pub fn token_secret_within(
    source: &TokenSecretSource,
    limit: std::time::Duration,
) -> Result<SecretString> {
    match source {
        TokenSecretSource::Env(var) => match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                Ok(SecretString::from(value.trim().to_string()))
            }
            _ => Err(ProxmoxClientError::SecretEnvMissing { var: var.clone() }),
        },
        TokenSecretSource::Command(argv) => {
            let command = argv.join(" ");
            let Some((program, args)) = argv.split_first() else {
                return Err(ProxmoxClientError::SecretCommand {
                    command,
                    reason: "no program given".to_string(),
                });
            };
            let mut cmd = std::process::Command::new(program);
            cmd.args(args).stdin(std::process::Stdio::null());
            // Bounded: a hung secret helper (a locked password store) must not hang `up`.
            let output = crate::exec::output_within(&mut cmd, limit)
                .map_err(|e| ProxmoxClientError::SecretCommand {
                    command: command.clone(),
                    reason: format!("cannot start {program}: {e}"),
                })?
                .ok_or_else(|| ProxmoxClientError::SecretCommand {
                    command: command.clone(),
                    reason: format!("no answer within {} ms; it was stopped", limit.as_millis()),
                })?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr)
                    .trim_end()
                    .to_string();
                return Err(ProxmoxClientError::SecretCommand {
                    command,
                    reason: if stderr.is_empty() {
                        format!("{} (no stderr)", output.status)
                    } else {
                        format!("{}:\n{stderr}", output.status)
                    },
                });
            }
            let stdout = String::from_utf8(output.stdout).map_err(|_| {
                ProxmoxClientError::SecretCommand {
                    command: command.clone(),
                    reason: "its output is not UTF-8".to_string(),
                }
            })?;
            let first = stdout.lines().next().unwrap_or_default().trim();
            if first.is_empty() {
                return Err(ProxmoxClientError::SecretCommand {
                    command,
                    reason: "its first output line is empty".to_string(),
                });
            }
            Ok(SecretString::from(first.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8, defect 8: a token command that hangs no longer hangs `up`.
    #[test]
    fn a_hanging_token_command_is_stopped() {
        let source = TokenSecretSource::Command(vec!["sleep".into(), "1000".into()]);
        let started = std::time::Instant::now();
        let err = token_secret_within(&source, std::time::Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no answer within 300 ms; it was stopped"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(100));
    }

    #[test]
    fn parses_nic_property_strings() {
        assert_eq!(
            nic_mac("virtio=BC:24:11:5E:2A:01,bridge=vmbr0,firewall=1")
                .unwrap()
                .as_deref(),
            Some("bc:24:11:5e:2a:01")
        );
        assert_eq!(
            nic_mac("bridge=vmbr1,e1000=bc:24:11:7f:00:3c,tag=20")
                .unwrap()
                .as_deref(),
            Some("bc:24:11:7f:00:3c")
        );
        assert_eq!(
            nic_mac("model=vmxnet3,macaddr=02:AA:00:00:00:01")
                .unwrap()
                .as_deref(),
            Some("02:aa:00:00:00:01")
        );
        assert_eq!(nic_mac("virtio,bridge=vmbr0").unwrap(), None);
        assert!(nic_mac("virtio=not-a-mac,bridge=vmbr0").is_err());
    }

    #[test]
    fn net_keys_in_numeric_order_with_gaps() {
        let config: Map<String, Value> = serde_json::from_str(
            r#"{"net10":"virtio=02:00:00:00:00:0A","net2":"e1000=02:00:00:00:00:02","net0":"virtio=02:00:00:00:00:00",
                "netx":"virtio=02:00:00:00:00:99","network":"x","name":"vm","cores":4}"#,
        )
        .unwrap();
        assert_eq!(
            nic_macs(7, &config).unwrap(),
            vec![
                "02:00:00:00:00:00",
                "02:00:00:00:00:02",
                "02:00:00:00:00:0a"
            ]
        );
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"net1":"virtio=zz,bridge=vmbr0"}"#).unwrap();
        let err = nic_macs(7, &bad).unwrap_err().to_string();
        assert!(err.contains("VM 7") && err.contains("net1"), "{err}");
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let client = ProxmoxClient::new(
            "https://127.0.0.1:8006/api2/json/",
            "root@pam!talos",
            SecretString::from("s3cr3t-uuid".to_string()),
            &ProxmoxTls::SystemRoots,
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("s3cr3t-uuid") && debug.contains("[redacted]"),
            "{debug}"
        );
        assert_eq!(
            client.authorization.to_str().unwrap(),
            "PVEAPIToken=root@pam!talos=s3cr3t-uuid"
        );
        assert!(client.authorization.is_sensitive());
        assert_eq!(
            client.url(&["cluster", "resources"]).as_str(),
            "https://127.0.0.1:8006/api2/json/cluster/resources"
        );
        assert!(matches!(
            ProxmoxClient::new(
                "http://x:8006",
                "root@pam!t",
                SecretString::from("a".to_string()),
                &ProxmoxTls::SystemRoots
            ),
            Err(ProxmoxClientError::BadUrl { .. })
        ));
        let err = ProxmoxClient::new(
            "https://x:8006",
            "root@pam",
            SecretString::from("s3cr3t".to_string()),
            &ProxmoxTls::SystemRoots,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("s3cr3t") && err.contains("token_id"), "{err}");
    }
}
