//! A simulated Proxmox VE API (HTTPS, API-token auth) serving the two calls talix uses to map VMs
//! to MAC addresses, with the real response shapes, reason phrases and quirks (LXC entries mixed
//! in, upper-case MACs, `netN` property strings, delayed 401s).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::node::tls;

/// Errors starting the Proxmox simulator.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot parse Proxmox spec {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid Proxmox spec: {0}")]
    Invalid(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What the simulated Proxmox cluster contains.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxSpec {
    /// Listening address (127.0.0.0/8 only).
    pub address: Ipv4Addr,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The accepted token, `USER@REALM!TOKENID=SECRET`.
    pub token: String,
    /// Delay before answering a 401 (PVE waits 3 s).
    #[serde(default = "default_auth_delay")]
    pub auth_failure_delay_ms: u64,
    #[serde(default)]
    pub guests: Vec<GuestSpec>,
}

/// A QEMU VM or LXC container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub vmid: u32,
    pub node: String,
    #[serde(default = "default_guest_type", rename = "type")]
    pub guest_type: String,
    /// Absent when the node has no stats for the guest yet (then `status` is `unknown`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub template: bool,
    #[serde(default)]
    pub tags: Option<String>,
    /// `netN` index → property string, e.g. `0: "virtio=BC:24:11:5E:2A:01,bridge=vmbr0"`.
    #[serde(default)]
    pub nets: BTreeMap<u32, String>,
}

fn default_port() -> u16 {
    8006
}
fn default_auth_delay() -> u64 {
    3000
}
fn default_guest_type() -> String {
    "qemu".into()
}
fn default_status() -> String {
    "running".into()
}

impl ProxmoxSpec {
    /// Reads a spec from YAML or JSON.
    pub fn load(path: &Path) -> Result<Self, ProxmoxError> {
        let text = fs_err::read_to_string(path)?;
        serde_saphyr::from_str(&text).map_err(|e| ProxmoxError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// A running simulated Proxmox API.
pub struct ProxmoxSim {
    pub addr: SocketAddr,
    /// PEM of the cluster CA ("PVE Cluster Manager CA") that signed the server certificate.
    pub ca_pem: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ProxmoxSim {
    /// Starts the server and writes the CA certificate to `ca_file`.
    pub async fn start(spec: ProxmoxSpec, ca_file: &Path) -> Result<ProxmoxSim, ProxmoxError> {
        if !spec.address.is_loopback() {
            return Err(ProxmoxError::Invalid(format!(
                "{} is not in 127.0.0.0/8",
                spec.address
            )));
        }
        let (ca, issuer) = tls::self_signed_ca("PVE Cluster Manager CA")?;
        let ip = IpAddr::V4(spec.address);
        let mut dns = vec!["localhost".to_string()];
        dns.extend(spec.guests.iter().map(|g| g.node.clone()));
        dns.sort();
        dns.dedup();
        let server_cert =
            tls::issue_server_from(&issuer, &[ip, IpAddr::V4(Ipv4Addr::LOCALHOST)], &dns)?;
        let server = tls::server_config(&server_cert, None, &[b"http/1.1"])?;
        fs_err::write(ca_file, &ca.cert_pem)?;
        let addr = SocketAddr::new(ip, spec.port);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stop_rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(server);
        let spec = Arc::new(spec);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let spec = spec.clone();
                        tokio::spawn(async move {
                            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                let _ = serve_http(s, &spec).await;
                            }
                        });
                    }
                    _ = stop_rx.changed() => return,
                }
            }
        });
        Ok(ProxmoxSim {
            addr,
            ca_pem: ca.cert_pem,
            stop,
            task,
        })
    }

    /// Base URL, e.g. `https://127.0.0.9:8006`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

struct HttpResponse {
    status: u16,
    reason: String,
    body: Option<Value>,
}

impl HttpResponse {
    fn ok(data: Value) -> Self {
        HttpResponse {
            status: 200,
            reason: "OK".into(),
            body: Some(json!({ "data": data })),
        }
    }
    fn error(status: u16, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        HttpResponse {
            status,
            body: Some(json!({"data": null, "message": format!("{reason}\n")})),
            reason,
        }
    }
}

async fn serve_http<S>(stream: S, spec: &ProxmoxSpec) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    content_length = value.trim().parse().unwrap_or(0);
                }
                headers.push((name, value.trim().to_string()));
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length.min(512 * 1024)];
            reader.read_exact(&mut body).await?;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let auth = headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str());
        let response = respond(spec, &method, &target, auth);
        if response.status == 401 {
            tokio::time::sleep(Duration::from_millis(spec.auth_failure_delay_ms)).await;
        }
        let body = response
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let close = response.status >= 400;
        let head = format!(
            "HTTP/1.1 {} {}\r\nServer: pve-api-daemon/3.0\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n{}\r\n",
            response.status,
            response.reason,
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        if close {
            return Ok(());
        }
    }
}

/// Extracts the token with PVE's rule `(?:^|\s)PVEAPIToken(?:=| )([^;]*)`, URI-unescaped.
fn token_from_header(header: &str) -> Option<String> {
    let mut search = 0;
    while let Some(pos) = header[search..].find("PVEAPIToken") {
        let start = search + pos;
        let preceded_ok = start == 0 || header[..start].ends_with(char::is_whitespace);
        let rest = &header[start + "PVEAPIToken".len()..];
        if preceded_ok && (rest.starts_with('=') || rest.starts_with(' ')) {
            let value = rest[1..].split(';').next().unwrap_or_default();
            return Some(uri_unescape(value));
        }
        search = start + 1;
    }
    None
}

fn uri_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn respond(spec: &ProxmoxSpec, method: &str, target: &str, auth: Option<&str>) -> HttpResponse {
    let Some(token) = auth.and_then(token_from_header) else {
        return HttpResponse {
            status: 401,
            reason: "No ticket".into(),
            body: None,
        };
    };
    if token != spec.token {
        return HttpResponse {
            status: 401,
            reason: "Authentication failed!".into(),
            body: None,
        };
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let not_implemented =
        || HttpResponse::error(501, format!("Method '{method} {path}' not implemented"));
    if method != "GET" {
        return not_implemented();
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api2", "json", "version"] => HttpResponse::ok(
            json!({"version": "8.3.0", "release": "8.3", "repoid": "c1689ccb1065a83b"}),
        ),
        ["api2", "json", "cluster", "resources"] => {
            cluster_resources(spec, query_param(query, "type"))
        }
        ["api2", "json", "nodes", node, "qemu", vmid, "config"] => vm_config(spec, node, vmid),
        _ => not_implemented(),
    }
}

fn cluster_resources(spec: &ProxmoxSpec, kind: Option<&str>) -> HttpResponse {
    if let Some(k) = kind
        && !matches!(k, "vm" | "storage" | "node" | "sdn")
    {
        return HttpResponse {
            status: 400,
            reason: "Parameter verification failed.".into(),
            body: Some(json!({
                "data": null,
                "errors": {"type": format!("value '{k}' does not have a value in the enumeration 'vm, storage, node, sdn'")},
                "message": "Parameter verification failed.\n",
            })),
        };
    }
    let mut data = Vec::new();
    if matches!(kind, None | Some("vm")) {
        for g in &spec.guests {
            let mut entry = json!({
                "id": format!("{}/{}", g.guest_type, g.vmid),
                "vmid": g.vmid,
                "type": g.guest_type,
                "node": g.node,
                "status": g.status,
            });
            if let Some(name) = &g.name {
                entry["name"] = json!(name);
                entry["template"] = json!(u8::from(g.template));
                let running = g.status == "running";
                for (k, v) in [
                    ("uptime", json!(if running { 5231 } else { 0 })),
                    ("maxcpu", json!(4)),
                    ("cpu", json!(if running { 0.0213 } else { 0.0 })),
                    ("maxmem", json!(8_589_934_592u64)),
                    ("mem", json!(if running { 2_147_483_648u64 } else { 0 })),
                    ("maxdisk", json!(34_359_738_368u64)),
                    ("disk", json!(0)),
                    ("netin", json!(123_456)),
                    ("netout", json!(654_321)),
                    ("diskread", json!(1_048_576)),
                    ("diskwrite", json!(2_097_152)),
                ] {
                    entry[k] = v;
                }
            }
            if let Some(tags) = &g.tags {
                entry["tags"] = json!(tags);
            }
            data.push(entry);
        }
    }
    if matches!(kind, None | Some("node")) {
        let mut nodes: Vec<&str> = spec.guests.iter().map(|g| g.node.as_str()).collect();
        nodes.sort();
        nodes.dedup();
        for n in nodes {
            data.push(
                json!({"id": format!("node/{n}"), "type": "node", "node": n, "status": "online"}),
            );
        }
    }
    HttpResponse::ok(Value::Array(data))
}

fn vm_config(spec: &ProxmoxSpec, node: &str, vmid: &str) -> HttpResponse {
    let Ok(id) = vmid.parse::<u32>() else {
        return HttpResponse {
            status: 400,
            reason: "Parameter verification failed.".into(),
            body: Some(json!({
                "data": null,
                "errors": {"vmid": format!("type check ('integer') failed - got '{vmid}'")},
                "message": "Parameter verification failed.\n",
            })),
        };
    };
    let guest = spec
        .guests
        .iter()
        .find(|g| g.vmid == id && g.guest_type == "qemu" && g.node == node);
    let Some(g) = guest else {
        return HttpResponse::error(
            500,
            format!("Configuration file 'nodes/{node}/qemu-server/{id}.conf' does not exist"),
        );
    };
    let mut data = serde_json::Map::new();
    if let Some(name) = &g.name {
        data.insert("name".into(), json!(name));
    }
    for (k, v) in [
        ("cores", json!(4)),
        ("sockets", json!(1)),
        ("memory", json!("8192")),
        ("cpu", json!("host")),
        ("numa", json!(0)),
        ("onboot", json!(1)),
        ("ostype", json!("l26")),
        ("agent", json!("enabled=1")),
        ("boot", json!("order=scsi0;ide2;net0")),
        ("scsihw", json!("virtio-scsi-single")),
        (
            "scsi0",
            json!(format!("local-lvm:vm-{id}-disk-0,iothread=1,size=32G")),
        ),
        (
            "ide2",
            json!("local:iso/metal-amd64.iso,media=cdrom,size=100M"),
        ),
        (
            "smbios1",
            json!(format!("uuid=6c1f1f0e-2b59-4d0b-9a55-{id:012}")),
        ),
    ] {
        data.insert(k.into(), v);
    }
    for (idx, value) in &g.nets {
        data.insert(format!("net{idx}"), json!(value));
    }
    if let Some(tags) = &g.tags {
        data.insert("tags".into(), json!(tags));
    }
    let digest = blake3::hash(serde_json::to_string(&data).unwrap_or_default().as_bytes());
    data.insert(
        "digest".into(),
        json!(hex::encode(&digest.as_bytes()[..20])),
    );
    HttpResponse::ok(Value::Object(data))
}

/// `talix sim proxmox --spec FILE --ready-file PATH [--ca-file PATH]`: serves until SIGTERM,
/// SIGINT or stdin EOF. The ready file holds `{"url": ..., "ca_file": ...}`.
pub fn serve_main(args: Vec<std::ffi::OsString>) -> i32 {
    let usage = "usage: talix sim proxmox --spec FILE --ready-file PATH [--ca-file PATH]";
    let (mut spec, mut ready, mut ca) = (None, None, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--spec") => spec = it.next().map(PathBuf::from),
            Some("--ready-file") => ready = it.next().map(PathBuf::from),
            Some("--ca-file") => ca = it.next().map(PathBuf::from),
            _ => {
                eprintln!("{usage}");
                return 2;
            }
        }
    }
    let (Some(spec), Some(ready)) = (spec, ready) else {
        eprintln!("{usage}");
        return 2;
    };
    let ca = ca.unwrap_or_else(|| ready.with_extension("ca.pem"));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return 1;
        }
    };
    let result: Result<(), ProxmoxError> = runtime.block_on(async {
        let sim = ProxmoxSim::start(ProxmoxSpec::load(&spec)?, &ca).await?;
        let body = json!({"url": sim.url(), "ca_file": ca.display().to_string()});
        let tmp = ready.with_extension("tmp");
        fs_err::write(&tmp, serde_json::to_vec_pretty(&body).unwrap_or_default())?;
        fs_err::rename(&tmp, &ready)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stdin_eof = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = stdin_eof => {}
        }
        sim.shutdown().await;
        Ok(())
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("talix sim proxmox: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_header_follows_pve_regex() {
        assert_eq!(
            token_from_header("PVEAPIToken=root@pam!talos=abc").as_deref(),
            Some("root@pam!talos=abc")
        );
        assert_eq!(
            token_from_header("x PVEAPIToken root@pam!t=1;y").as_deref(),
            Some("root@pam!t=1")
        );
        assert_eq!(token_from_header("XPVEAPIToken=a"), None);
        assert_eq!(uri_unescape("root%40pam"), "root@pam");
    }
}
