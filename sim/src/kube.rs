//! A simulated Kubernetes API, just enough for the real `kubectl get nodes` to work against the
//! kubeconfig from `talosctl kubeconfig`: TLS from the cluster's Kubernetes CA, client
//! certificate authentication, discovery documents and the node list of the simulated cluster.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::node::config::ConfigFacts;
use crate::node::{Phase, Shared, tls};

/// Errors starting the simulated Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("the Kubernetes endpoint {0:?} is not a loopback IPv4 address")]
    EndpointNotLoopback(String),
    #[error("the configuration has no Kubernetes CA key")]
    NoCaKey,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running simulated Kubernetes API server of one cluster.
pub struct KubeApi {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl KubeApi {
    /// Starts the API on the cluster's control plane endpoint (VIP or first CP address).
    pub(crate) fn start(
        shared: Arc<Shared>,
        cluster_key: String,
        facts: &ConfigFacts,
    ) -> Result<KubeApi, KubeError> {
        let host = facts.endpoint_host().unwrap_or_default();
        let ip: IpAddr = host
            .parse()
            .ok()
            .filter(|ip: &IpAddr| ip.is_loopback())
            .ok_or_else(|| KubeError::EndpointNotLoopback(facts.endpoint.clone()))?;
        let addr = SocketAddr::new(ip, facts.endpoint_port());
        let (Some(ca), Some(key)) = (&facts.k8s_ca_cert, &facts.k8s_ca_key) else {
            return Err(KubeError::NoCaKey);
        };
        let cert = tls::issue_leaf(
            ca,
            key,
            tls::LeafUsage::Server {
                ips: &[ip],
                dns: &["kubernetes".to_string(), "kubernetes.default".to_string()],
            },
        )?;
        let server = tls::server_config(&cert, Some(ca), &[b"http/1.1"])?;
        let std_listener =
            std::net::TcpListener::bind(addr).map_err(|source| KubeError::Bind { addr, source })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| KubeError::Bind { addr, source })?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|source| KubeError::Bind { addr, source })?;
        let (stop, mut stop_rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(server);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let shared = shared.clone();
                        let key = cluster_key.clone();
                        tokio::spawn(async move {
                            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                let peer = tls::peer_identity(s.get_ref().1.peer_certificates());
                                let _ = serve_http(s, &shared, &key, addr, peer).await;
                            }
                        });
                    }
                    _ = stop_rx.changed() => return,
                }
            }
        });
        Ok(KubeApi { addr, stop, task })
    }

    /// Stops listening.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// The group of the admin kubeconfig (`KubernetesAdminCertOrganization`,
/// pkg/machinery/constants/constants.go@v1.14.0-rc.1), bound to cluster-admin by default RBAC.
pub const ADMIN_GROUP: &str = "system:masters";

/// A real apiserver authenticates any client certificate of its CA (the handshake checked the
/// chain) as user CN, groups O, then RBAC decides: only `system:masters` may read here.
fn forbidden(peer: Option<&tls::PeerIdentity>, method: &str, path: &str) -> Option<Value> {
    let peer = peer?;
    if peer.organizations.iter().any(|o| o == ADMIN_GROUP) {
        return None;
    }
    let user = peer.common_name.clone().unwrap_or_default();
    let verb = if method == "GET" { "get" } else { "access" };
    Some(status_body(
        403,
        "Forbidden",
        &format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
    ))
}

async fn serve_http<S>(
    stream: S,
    shared: &Shared,
    key: &str,
    addr: SocketAddr,
    peer: Option<tls::PeerIdentity>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        let mut wants_table = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    content_length = value.trim().parse().unwrap_or(0);
                } else if name == "connection" && value.trim().eq_ignore_ascii_case("close") {
                    close = true;
                } else if name == "accept" && value.contains("as=Table") {
                    wants_table = true;
                }
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length.min(1 << 20)];
            reader.read_exact(&mut body).await?;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let path = target.split('?').next().unwrap_or_default();
        let (status, body) = if let Some(denied) = forbidden(peer.as_ref(), &method, path) {
            (403, denied)
        } else if method == "GET" {
            let (status, body) = route(path, shared, key, addr);
            if wants_table && status == 200 && path.starts_with("/api/v1/nodes") {
                (status, node_table(&body))
            } else if wants_table
                && status == 200
                && body.get("kind").and_then(Value::as_str) != Some("Status")
                && (path.contains("/pods") || path.contains("/daemonsets"))
            {
                (status, name_table(&body))
            } else {
                (status, body)
            }
        } else {
            (
                405,
                status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ),
            )
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let reason = match status {
            200 => "OK",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Method Not Allowed",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n\r\n",
            body.len()
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

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn route(path: &str, shared: &Shared, key: &str, addr: SocketAddr) -> (u16, Value) {
    let path = path.trim_end_matches('/');
    match path {
        "/version" => {
            let v = cluster_version(shared, key);
            let minor = v.split('.').nth(1).unwrap_or("0").to_string();
            (
                200,
                json!({"major": "1", "minor": minor, "gitVersion": format!("v{v}"),
                         "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                         "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0",
                         "compiler": "gc", "platform": "linux/amd64"}),
            )
        }
        "/api" => (
            200,
            json!({"kind": "APIVersions", "versions": ["v1"],
                               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]}),
        ),
        "/apis" => (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        ),
        "/apis/apps/v1" => (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
                {"name": "daemonsets", "singularName": "daemonset", "namespaced": true, "kind": "DaemonSet",
                 "verbs": ["get", "list", "watch"], "shortNames": ["ds"], "categories": ["all"]}
            ]}),
        ),
        "/apis/apps/v1/daemonsets" | "/apis/apps/v1/namespaces/kube-system/daemonsets" => (
            200,
            json!({"kind": "DaemonSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "1"},
                   "items": [kube_proxy_daemonset(shared, key)]}),
        ),
        "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy" => {
            (200, kube_proxy_daemonset(shared, key))
        }
        "/api/v1/pods" | "/api/v1/namespaces/kube-system/pods" => (
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                   "items": kube_system_pods(shared, key)}),
        ),
        "/api/v1" => (
            200,
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
                 "verbs": ["get", "list", "watch"], "shortNames": ["no"]},
                {"name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node", "verbs": ["get"]},
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                 "verbs": ["get", "list", "watch"], "shortNames": ["po"], "categories": ["all"]}
            ]}),
        ),
        "/api/v1/nodes" => (
            200,
            json!({"kind": "NodeList", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": "1"}, "items": nodes(shared, key)}),
        ),
        _ => {
            if let Some(name) = path.strip_prefix("/api/v1/nodes/")
                && let Some(node) = nodes(shared, key)
                    .into_iter()
                    .find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
            {
                return (200, node);
            }
            if let Some(name) = path.strip_prefix("/api/v1/namespaces/kube-system/pods/") {
                return match kube_system_pods(shared, key)
                    .into_iter()
                    .find(|p| p.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
                {
                    Some(p) => (200, p),
                    None => (
                        404,
                        status_body(404, "NotFound", &format!("pods \"{name}\" not found")),
                    ),
                };
            }
            if let Some(name) =
                path.strip_prefix("/apis/apps/v1/namespaces/kube-system/daemonsets/")
            {
                return (
                    404,
                    status_body(
                        404,
                        "NotFound",
                        &format!("daemonsets.apps \"{name}\" not found"),
                    ),
                );
            }
            if let Some(name) = path.strip_prefix("/api/v1/nodes/") {
                return (
                    404,
                    status_body(404, "NotFound", &format!("nodes \"{name}\" not found")),
                );
            }
            (
                404,
                status_body(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            )
        }
    }
}

/// The server-side printing kubectl asks for by default (`NAME STATUS ROLES AGE VERSION`).
fn node_table(body: &Value) -> Value {
    let items: Vec<Value> = match body.get("items").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => vec![body.clone()],
    };
    let column = |name: &str, priority: u8| {
        json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" },
               "description": "", "priority": priority})
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|n| {
            let s = |p: &str| n.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
            let roles = if n.pointer("/metadata/labels/node-role.kubernetes.io~1control-plane").is_some() {
                "control-plane"
            } else {
                "<none>"
            };
            let internal_ip = n
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .and_then(|x| x["address"].as_str())
                .unwrap_or("<none>")
                .to_string();
            json!({
                "cells": [s("/metadata/name"), "Ready", roles, age(&s("/metadata/creationTimestamp")),
                          s("/status/nodeInfo/kubeletVersion"), internal_ip, "<none>",
                          s("/status/nodeInfo/osImage"), s("/status/nodeInfo/kernelVersion"),
                          s("/status/nodeInfo/containerRuntimeVersion")],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": n.get("metadata").cloned().unwrap_or(Value::Null)},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
        "columnDefinitions": [column("Name", 0), column("Status", 0), column("Roles", 0), column("Age", 0),
                              column("Version", 0), column("Internal-IP", 1), column("External-IP", 1),
                              column("OS-Image", 1), column("Kernel-Version", 1), column("Container-Runtime", 1)],
        "rows": rows,
    })
}

/// kubectl-style short age (`42s`, `5m`, `3h`) of an RFC 3339 timestamp.
fn age(timestamp: &str) -> String {
    let Ok(t) =
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
    else {
        return "<unknown>".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// The API server's version: the kube-apiserver static pod of the first running control plane
/// (its image follows the machine config; the simulator takes the config's Kubernetes version).
fn cluster_version(shared: &Shared, key: &str) -> String {
    let state = shared.lock();
    state
        .nodes
        .iter()
        .filter(|n| n.phase == Phase::Running)
        .find_map(|n| {
            n.config
                .as_ref()
                .filter(|c| c.facts.os_ca_cert == key && c.facts.is_controlplane())
        })
        .or_else(|| {
            state
                .nodes
                .iter()
                .find_map(|n| n.config.as_ref().filter(|c| c.facts.os_ca_cert == key))
        })
        .map(|c| c.facts.kubernetes_version.clone())
        .unwrap_or_default()
}

fn manifests_version(shared: &Shared, key: &str) -> String {
    let state = shared.lock();
    state
        .nodes
        .iter()
        .find_map(|n| n.config.as_ref().filter(|c| c.facts.os_ca_cert == key))
        .map(|c| crate::node::manifests_k8s_version(&state, &c.facts))
        .unwrap_or_default()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The kube-proxy DaemonSet of the bootstrap manifests, as a real cluster returns it (trimmed
/// to what an operator reads: image, selector, status counts).
fn kube_proxy_daemonset(shared: &Shared, key: &str) -> Value {
    let version = manifests_version(shared, key);
    let count = nodes(shared, key).len();
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "uid": "kube-proxy",
                     "resourceVersion": "1", "generation": 1,
                     "creationTimestamp": "2025-01-01T00:00:00Z",
                     "labels": {"k8s-app": "kube-proxy", "tier": "node"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy", "tier": "node"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy", "tier": "node"}},
                "spec": {"containers": [{"name": "kube-proxy",
                    "image": format!("registry.k8s.io/kube-proxy:v{version}"),
                    "command": ["/usr/local/bin/kube-proxy", "--cluster-cidr=10.244.0.0/16",
                                "--hostname-override=$(NODE_NAME)", "--kubeconfig=/etc/kubernetes/kubeconfig",
                                "--proxy-mode=iptables", "--conntrack-max-per-core=0"]}],
                         "serviceAccountName": "kube-proxy", "hostNetwork": true,
                         "priorityClassName": "system-node-critical"},
            },
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        },
        "status": {"currentNumberScheduled": count, "desiredNumberScheduled": count,
                   "numberAvailable": count, "numberReady": count, "updatedNumberScheduled": count,
                   "numberMisscheduled": 0, "observedGeneration": 1},
    })
}

/// kube-system pods: the control-plane static pods of each control plane (images from its
/// machine config) and one kube-proxy pod per node (image from the DaemonSet).
fn kube_system_pods(shared: &Shared, key: &str) -> Vec<Value> {
    let proxy_version = manifests_version(shared, key);
    let state = shared.lock();
    let mut out = Vec::new();
    let pod = |name: String,
               app: &str,
               image: String,
               node: &str,
               ip: String,
               created: String,
               owner: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "uid": name,
                         "resourceVersion": "1", "creationTimestamp": created,
                         "labels": {"k8s-app": app, "tier": if app == "kube-proxy" { "node" } else { "control-plane" }},
                         "ownerReferences": owner},
            "spec": {"nodeName": node, "containers": [{"name": app, "image": image}]},
            "status": {"phase": "Running", "hostIP": ip, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": app, "ready": true, "restartCount": 0,
                                              "image": image, "started": true,
                                              "state": {"running": {"startedAt": created}}}]},
        })
    };
    for n in &state.nodes {
        let Some(c) = &n.config else { continue };
        if c.facts.os_ca_cert != key || n.phase != Phase::Running {
            continue;
        }
        let host = n.hostname();
        let created = rfc3339(n.booted_at);
        let ip = n.address.to_string();
        if c.facts.is_controlplane() {
            for app in [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ] {
                out.push(pod(
                    format!("{app}-{host}"),
                    app,
                    format!("registry.k8s.io/{app}:v{}", c.facts.kubernetes_version),
                    &host,
                    ip.clone(),
                    created.clone(),
                    json!([{"apiVersion": "v1", "kind": "Node", "name": host, "controller": true}]),
                ));
            }
        }
        out.push(pod(
            format!("kube-proxy-{:05x}", n.member_id & 0xfffff),
            "kube-proxy",
            format!("registry.k8s.io/kube-proxy:v{proxy_version}"),
            &host,
            ip,
            created,
            json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy", "controller": true}]),
        ));
    }
    out
}

/// A minimal server-side Table (`NAME AGE`) for list/get requests other than nodes.
fn name_table(body: &Value) -> Value {
    let items: Vec<Value> = match body.get("items").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => vec![body.clone()],
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let s = |p: &str| {
                o.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            json!({"cells": [s("/metadata/name"), age(&s("/metadata/creationTimestamp"))],
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                              "metadata": o.get("metadata").cloned().unwrap_or(Value::Null)}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
           "columnDefinitions": [
               {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
               {"name": "Age", "type": "string", "format": "", "description": "", "priority": 0}],
           "rows": rows})
}

/// Every running node of the cluster, as Kubernetes Node objects.
fn nodes(shared: &Shared, key: &str) -> Vec<Value> {
    let state = shared.lock();
    let mut out = Vec::new();
    for n in &state.nodes {
        let Some(config) = &n.config else { continue };
        if config.facts.os_ca_cert != key || n.phase != Phase::Running {
            continue;
        }
        let hostname = n.hostname();
        let created = n
            .booted_at
            .replace_nanosecond(0)
            .unwrap_or(n.booted_at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), json!(hostname));
        labels.insert("kubernetes.io/os".into(), json!("linux"));
        labels.insert("kubernetes.io/arch".into(), json!("amd64"));
        if config.facts.is_controlplane() {
            labels.insert("node-role.kubernetes.io/control-plane".into(), json!(""));
        }
        // The kubelet runs the image of this node's own machine config.
        let version = config.facts.kubernetes_version.clone();
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": hostname, "uid": format!("{:016x}", n.member_id),
                         "resourceVersion": "1", "creationTimestamp": created, "labels": labels},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": n.address.to_string()},
                              {"type": "Hostname", "address": hostname}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": created, "lastTransitionTime": created}],
                "nodeInfo": {"kubeletVersion": format!("v{version}"),
                             "osImage": format!("Talos ({})", n.talos_version),
                             "containerRuntimeVersion": "containerd://2.1.5",
                             "kernelVersion": "6.12.57-talos", "operatingSystem": "linux",
                             "architecture": "amd64", "machineID": format!("{:032x}", n.member_id),
                             "systemUUID": "", "bootID": ""},
            },
        }));
    }
    out
}
