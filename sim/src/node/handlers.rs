//! Server side of every simulated Talos API call: maintenance-mode rules, apply/reboot, bootstrap
//! and etcd membership, resources for `get`, health checks, kubeconfig, upgrades.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::config::{ConfigFacts, image_tag};
use super::wire::{Reply, Request, Response, RpcError, version_at_least};
use super::{AppliedConfig, ClusterState, Phase, Shared, tls};

type CallResult = Result<Value, RpcError>;

/// Handles `request` arriving at node `me`. `None` means "drop the connection" (fault knob).
pub(crate) fn dispatch(shared: &Arc<Shared>, me: usize, request: Request) -> Option<Response> {
    let mut replies = Vec::new();
    if request.nodes.is_empty() {
        match handle(shared, me, &request) {
            Outcome::Reply(r) => replies.push(reply(String::new(), r)),
            Outcome::Drop => return None,
        }
    } else if let Some(bad) = request
        .nodes
        .iter()
        .find(|t| t.is_empty() || crate::gonet::address_contains_port(t))
    {
        // apid's backend factory refuses a target with a port, failing the whole call.
        // upstream: internal/app/apid/pkg/backend/apid.go@v1.13.9 NewAPID,
        // internal/app/apid/pkg/director/director.go@v1.13.9 aggregateDirector (codes.Internal)
        replies.push(reply(
            String::new(),
            Err(RpcError::new("Internal", format!("invalid target {bad:?}"))),
        ));
    } else {
        for target in &request.nodes {
            let resolved = resolve_target(&shared.lock(), me, target);
            let result = match resolved {
                Ok(idx) => match handle(shared, idx, &request) {
                    Outcome::Reply(r) => r,
                    Outcome::Drop => Err(RpcError::new(
                        "Unavailable",
                        "error reading from server: EOF",
                    )),
                },
                Err(e) => Err(e),
            };
            replies.push(reply(target.clone(), result));
        }
    }
    Some(Response { replies })
}

/// `Some(n)` when `request` is a maintenance apply-config to node `me` whose answer is held
/// until `n` machines are configured (fault `apply_answer_waits_for_configured`).
pub(crate) fn held_apply(shared: &Arc<Shared>, me: usize, request: &Request) -> Option<usize> {
    let state = shared.lock();
    let node = &state.nodes[me];
    let want = node.spec.faults.apply_answer_waits_for_configured as usize;
    (want > 0
        && request.method == "apply_config"
        && request.nodes.is_empty()
        && node.phase == Phase::Maintenance)
        .then_some(want)
}

/// Machines of the spec (not foreign ones) that have received a config.
pub(crate) fn configured_count(shared: &Arc<Shared>) -> usize {
    let state = shared.lock();
    state
        .nodes
        .iter()
        .filter(|n| !n.foreign && n.config.is_some())
        .count()
}

/// The answer of a held apply whose bound expired.
pub(crate) fn held_apply_expired(have: usize, want: usize) -> Response {
    Response {
        replies: vec![reply(
            String::new(),
            Err(RpcError::new(
                "DeadlineExceeded",
                format!(
                    "context deadline exceeded (simulator: this answer waited for {want} configured machines, {have} were)"
                ),
            )),
        )],
    }
}

fn reply(node: String, result: CallResult) -> Reply {
    match result {
        Ok(v) => Reply {
            node,
            result: v,
            error: None,
        },
        Err(e) => Reply {
            node,
            result: Value::Null,
            error: Some(e),
        },
    }
}

enum Outcome {
    Reply(CallResult),
    Drop,
}

/// apid proxying: find the running node of the same cluster answering at `target`. apid dials
/// `FormatAddress(target):50000`, so `2001:db8::11` and `[2001:db8::11]` are the same node.
/// upstream: internal/app/apid/pkg/backend/apid.go@v1.13.9 GetConnection
fn resolve_target(state: &ClusterState, me: usize, target: &str) -> Result<usize, RpcError> {
    let host = crate::gonet::format_address(target);
    let port = state.nodes[me].spec.api_port;
    let unreachable = || {
        RpcError::new(
            "Unavailable",
            format!(
                "connection error: desc = \"transport: Error while dialing: dial tcp {host}:{port}: connect: connection refused\""
            ),
        )
    };
    let Ok(ip) = host.parse::<Ipv4Addr>() else {
        return Err(unreachable());
    };
    if state.nodes[me].phase == Phase::Maintenance {
        return Ok(me);
    }
    let found = state.nodes.iter().position(|n| {
        n.address == ip && n.listening && matches!(n.phase, Phase::Running | Phase::Maintenance)
    });
    let Some(idx) = found else {
        return Err(unreachable());
    };
    if state.nodes[idx].cluster_key() != state.nodes[me].cluster_key() {
        return Err(RpcError::new(
            "Unavailable",
            "connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"",
        ));
    }
    Ok(idx)
}

fn handle(shared: &Arc<Shared>, idx: usize, request: &Request) -> Outcome {
    let phase = shared.lock().nodes[idx].phase;
    let params = &request.params;
    let result = match (phase, request.method.as_str()) {
        (Phase::Maintenance, "apply_config") => return maintenance_apply(shared, idx, params),
        (Phase::Maintenance, "version") => {
            let state = shared.lock();
            let node = &state.nodes[idx];
            if version_at_least(&node.talos_version, 1, 13) {
                Ok(version_info(&node.talos_version))
            } else {
                Err(RpcError::new(
                    "Unimplemented",
                    "API is not implemented in maintenance mode",
                ))
            }
        }
        (Phase::Maintenance, "get") => get_resources(&shared.lock(), idx, params),
        (Phase::Maintenance, other) => {
            let state = shared.lock();
            if version_at_least(&state.nodes[idx].talos_version, 1, 13) {
                Err(RpcError::new("PermissionDenied", "not authorized"))
            } else {
                Err(RpcError::new(
                    "Unimplemented",
                    format!("method {} not implemented", grpc_method(other)),
                ))
            }
        }
        (Phase::Running, "version") => Ok(version_info(&shared.lock().nodes[idx].talos_version)),
        (Phase::Running, "get") => get_resources(&shared.lock(), idx, params),
        (Phase::Running, "apply_config") => configured_apply(shared, idx, params),
        (Phase::Running, "bootstrap") => match bootstrap_fault(shared, idx) {
            Some(outcome) => return outcome,
            None => bootstrap(shared, idx),
        },
        (Phase::Running, "etcd_members") => etcd_members(&shared.lock(), idx),
        (Phase::Running, "kubeconfig") => kubeconfig(&shared.lock(), idx),
        (Phase::Running, "health") => Ok(health(&shared.lock(), idx, params)),
        (Phase::Running, "upgrade") => upgrade(shared, idx, params),
        (Phase::Running, "reboot") => reboot(shared, idx),
        (Phase::Running, "nodename") => {
            Ok(json!({"nodename": shared.lock().nodes[idx].hostname()}))
        }
        (Phase::Running, "upgrade_k8s") => upgrade_k8s(shared, idx, params),
        (Phase::Running, "reset") => reset(shared, idx, params),
        (_, other) => Err(RpcError::new(
            "Unimplemented",
            format!("unknown method {other}"),
        )),
    };
    Outcome::Reply(result)
}

fn grpc_method(method: &str) -> String {
    let mut out = String::new();
    for part in method.split('_') {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.push(c.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

fn version_info(tag: &str) -> Value {
    json!({
        "tag": tag,
        "sha": "0000000",
        "built": "",
        "go_version": "go1.24.0",
        "os": "linux",
        "arch": "amd64",
    })
}

fn decode_config(params: &Value) -> Result<Vec<u8>, RpcError> {
    let b64 = params
        .get("data")
        .and_then(Value::as_str)
        .unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| RpcError::new("InvalidArgument", format!("failed to parse config: {e}")))
}

/// Validation as the node running `version` does it (its decoder registry and validators, see
/// `machineconfig::check`), answered with the status `ApplyConfiguration` gives; then the facts
/// the simulator needs (CA material etc.).
fn validate_config(
    bytes: &[u8],
    version: &str,
    maintenance: bool,
) -> Result<ConfigFacts, RpcError> {
    let rules = crate::machineconfig::NodeRules::for_version(version);
    if let Err(rejection) = crate::machineconfig::check(bytes, rules) {
        let (code, message) = rejection.grpc_status(rules, maintenance);
        return Err(RpcError::new(code, message));
    }
    ConfigFacts::extract(bytes).map_err(|e| RpcError::new("InvalidArgument", e))
}

fn maintenance_apply(shared: &Arc<Shared>, idx: usize, params: &Value) -> Outcome {
    let mode = params
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("auto")
        .to_string();
    let dry_run = params
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let version = shared.lock().nodes[idx].talos_version.clone();
    let modern = version_at_least(&version, 1, 13);
    if !modern && matches!(mode.as_str(), "no-reboot" | "staged") {
        return Outcome::Reply(Err(RpcError::new(
            "Unimplemented",
            format!("apply configuration --mode='{mode}' is not supported in maintenance mode"),
        )));
    }
    let bytes = match decode_config(params) {
        Ok(b) => b,
        Err(e) => return Outcome::Reply(Err(e)),
    };
    let facts = match validate_config(&bytes, &version, true) {
        Ok(f) => f,
        Err(e) => return Outcome::Reply(Err(e)),
    };
    if dry_run {
        return Outcome::Reply(Ok(json!({
            "mode_details": "Dry run summary:\nNode is running in maintenance mode and does not have a config yet.",
            "warnings": [],
        })));
    }
    let (delay, never_back) = {
        let mut state = shared.lock();
        let node = &mut state.nodes[idx];
        if node.apply_failures_left > 0 {
            node.apply_failures_left -= 1;
            return Outcome::Drop;
        }
        node.phase = Phase::Rebooting;
        node.tls = None;
        node.talos_version = facts
            .install_image
            .as_deref()
            .and_then(image_tag)
            .map(str::to_string)
            .unwrap_or_else(|| node.spec.maintenance_version.clone());
        node.config = Some(Arc::new(AppliedConfig { facts }));
        (
            Duration::from_millis(node.spec.reboot_delay_ms + node.spec.faults.slow_reboot_ms),
            node.spec.faults.never_comes_back,
        )
    };
    shared.bump(idx);
    spawn_reboot(shared.clone(), idx, delay, never_back);
    let details = if modern {
        "Applied configuration without a reboot"
    } else {
        ""
    };
    Outcome::Reply(Ok(json!({"mode_details": details, "warnings": []})))
}

/// After `delay` the node comes up configured at its static address (or never, as a fault).
fn spawn_reboot(shared: Arc<Shared>, idx: usize, delay: Duration, never_back: bool) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let refreshed = {
            let mut state = shared.lock();
            if never_back {
                state.nodes[idx].phase = Phase::Gone;
                Vec::new()
            } else {
                come_up(&mut state, idx)
            }
        };
        for other in refreshed {
            shared.bump(other);
        }
        shared.bump(idx);
    });
}

/// Builds node `idx`'s authenticated-API TLS: a server certificate from the OS CA (its own key,
/// or, like trustd, from a configured node of the same cluster that has it). Without any CA key
/// it falls back to a self-signed certificate that clients will reject; `bool` says which.
fn node_server_tls(
    state: &ClusterState,
    idx: usize,
) -> Result<(Arc<tokio_rustls::rustls::ServerConfig>, bool), tls::TlsError> {
    let node = &state.nodes[idx];
    let Some(config) = &node.config else {
        return Err(tls::TlsError::MissingPem("machine config"));
    };
    let facts = &config.facts;
    let ca_key = facts.os_ca_key.clone().or_else(|| {
        state.nodes.iter().find_map(|n| {
            n.config
                .as_ref()
                .filter(|c| n.phase == Phase::Running && c.facts.os_ca_cert == facts.os_ca_cert)
                .and_then(|c| c.facts.os_ca_key.clone())
        })
    });
    let ips = [IpAddr::V4(node.address)];
    let trusted = ca_key.is_some();
    let cert = match ca_key {
        Some(key) => tls::issue_leaf(
            &facts.os_ca_cert,
            &key,
            tls::LeafUsage::Server {
                ips: &ips,
                dns: &[],
            },
        ),
        None => tls::self_signed(&ips, &[]),
    }?;
    Ok((
        tls::server_config(&cert, Some(&facts.os_ca_cert), &[])?,
        trusted,
    ))
}

/// The node finished booting with its config. Returns other nodes whose listeners must be
/// rebuilt (nodes that were waiting for a certificate this node can now issue).
fn come_up(state: &mut ClusterState, idx: usize) -> Vec<usize> {
    let Some(config) = state.nodes[idx].config.clone() else {
        return Vec::new();
    };
    let facts = &config.facts;
    // Only configuration of a link the machine really has counts; otherwise it keeps its DHCP
    // address (where the operator will not look for it).
    let link = state.nodes[idx].spec.link_facts();
    let addressing = facts
        .network
        .resolve(&link, &state.nodes[idx].talos_version);
    let address = addressing
        .addresses
        .iter()
        .copied()
        .find(Ipv4Addr::is_loopback)
        .unwrap_or(state.nodes[idx].spec.address);
    state.nodes[idx].address = address;
    state.nodes[idx].vip = addressing.vip.filter(|_| facts.is_controlplane());
    state.nodes[idx].booted_at = time::OffsetDateTime::now_utc();
    match node_server_tls(state, idx) {
        Ok((cfg, trusted)) => {
            state.nodes[idx].tls = Some(cfg);
            state.nodes[idx].trusted_cert = trusted;
            state.nodes[idx].phase = Phase::Running;
        }
        Err(e) => {
            tracing::error!(node = %state.nodes[idx].spec.name, error = %e, "cannot build node TLS");
            state.nodes[idx].phase = Phase::Gone;
        }
    }
    if facts.is_controlplane() {
        let key = facts.os_ca_cert.clone();
        if let Some(etcd) = state.etcd.get_mut(&key)
            && etcd.bootstrapped
            && !etcd.members.contains(&idx)
        {
            etcd.members.push(idx);
        }
    }
    let mut refreshed = Vec::new();
    if facts.os_ca_key.is_some() {
        for j in 0..state.nodes.len() {
            let waiting = j != idx
                && state.nodes[j].phase == Phase::Running
                && !state.nodes[j].trusted_cert
                && state.nodes[j].cluster_key() == Some(facts.os_ca_cert.as_str());
            if waiting && let Ok((cfg, true)) = node_server_tls(state, j) {
                state.nodes[j].tls = Some(cfg);
                state.nodes[j].trusted_cert = true;
                refreshed.push(j);
            }
        }
    }
    refreshed
}

fn configured_apply(shared: &Arc<Shared>, idx: usize, params: &Value) -> CallResult {
    let bytes = decode_config(params)?;
    let version = shared.lock().nodes[idx].talos_version.clone();
    let facts = validate_config(&bytes, &version, false)?;
    let mode = params.get("mode").and_then(Value::as_str).unwrap_or("auto");
    if params
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Ok(
            json!({"mode_details": "Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n\nNo changes.", "warnings": []}),
        );
    }
    let mut state = shared.lock();
    let node = &mut state.nodes[idx];
    if node
        .config
        .as_ref()
        .is_some_and(|c| c.facts.machine_type != facts.machine_type)
    {
        return Err(RpcError::new(
            "InvalidArgument",
            "machine type can't be changed",
        ));
    }
    let details = match mode {
        "staged" => "Staged configuration to be applied after the next reboot".to_string(),
        "reboot" => "Applied configuration with a reboot".to_string(),
        "try" => format!(
            "Applied configuration without a reboot\nThe config is applied in 'try' mode and will be automatically reverted back in {}",
            params
                .get("timeout")
                .and_then(Value::as_str)
                .unwrap_or("1m0s")
        ),
        _ => "Applied configuration without a reboot".to_string(),
    };
    // A new install image in the config does not change the running Talos version (trap 6).
    if mode != "staged" {
        node.config = Some(Arc::new(AppliedConfig { facts }));
    }
    if mode == "reboot" {
        node.phase = Phase::Rebooting;
        node.tls = None;
        let delay =
            Duration::from_millis(node.spec.reboot_delay_ms + node.spec.faults.slow_reboot_ms);
        drop(state);
        shared.bump(idx);
        spawn_reboot(shared.clone(), idx, delay, false);
    }
    Ok(json!({"mode_details": details, "warnings": []}))
}

/// The next injected transient bootstrap failure of node `idx`, as the client would get it.
/// Texts: grpc-go's status for a timed-out call (`context deadline exceeded`) and for a closed
/// client connection (`grpc: the client connection is closing`, what apid's backend connection
/// answers while apid restarts), apid's dial error, and the node's own FailedPrecondition answers
/// (upstream: internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go@v1.13.9 Bootstrap).
fn bootstrap_fault(shared: &Arc<Shared>, idx: usize) -> Option<Outcome> {
    use super::BootstrapError as E;
    let mut state = shared.lock();
    let node = &mut state.nodes[idx];
    let fault = node.bootstrap_errors_left.pop_front()?;
    let error = match fault {
        E::DeadlineExceeded => RpcError::new("DeadlineExceeded", "context deadline exceeded"),
        E::Canceled => RpcError::new("Canceled", "grpc: the client connection is closing"),
        E::Eof => return Some(Outcome::Drop),
        E::Unavailable => RpcError::new(
            "Unavailable",
            format!(
                "connection error: desc = \"transport: Error while dialing: dial tcp {}:{}: connect: connection refused\"",
                node.address, node.spec.api_port
            ),
        ),
        E::FailedPrecondition => {
            RpcError::new("FailedPrecondition", "bootstrap is not available yet")
        }
        E::TimeNotInSync => RpcError::new("FailedPrecondition", "time is not in sync yet"),
    };
    Some(Outcome::Reply(Err(error)))
}

fn bootstrap(shared: &Arc<Shared>, idx: usize) -> CallResult {
    let kube_to_start;
    {
        let mut state = shared.lock();
        let version = state.nodes[idx].talos_version.clone();
        let Some(config) = state.nodes[idx].config.clone() else {
            return Err(RpcError::new(
                "FailedPrecondition",
                "bootstrap is not available yet",
            ));
        };
        if !config.facts.is_controlplane() {
            return Err(if version_at_least(&version, 1, 13) {
                RpcError::new(
                    "Unimplemented",
                    "bootstrap is only available on control plane nodes",
                )
            } else {
                RpcError::new(
                    "FailedPrecondition",
                    "bootstrap can only be performed on a control plane node",
                )
            });
        }
        if state.nodes[idx].bootstrap_not_ready_left > 0 {
            state.nodes[idx].bootstrap_not_ready_left -= 1;
            return Err(RpcError::new(
                "FailedPrecondition",
                "bootstrap is not available yet",
            ));
        }
        let key = config.facts.os_ca_cert.clone();
        let already = state
            .etcd
            .get(&key)
            .is_some_and(|e| e.bootstrapped && e.members.contains(&idx));
        if already {
            return Err(RpcError::new(
                "AlreadyExists",
                "etcd data directory is not empty",
            ));
        }
        let mut joiners = vec![idx];
        for (i, n) in state.nodes.iter().enumerate() {
            if i != idx
                && n.phase == Phase::Running
                && n.config
                    .as_ref()
                    .is_some_and(|c| c.facts.os_ca_cert == key && c.facts.is_controlplane())
            {
                joiners.push(i);
            }
        }
        let etcd = state.etcd.entry(key.clone()).or_default();
        if etcd.bootstrapped {
            // A second etcd cluster would be split brain; Talos refuses the same way.
            return Err(RpcError::new(
                "AlreadyExists",
                "etcd data directory is not empty",
            ));
        }
        etcd.bootstrapped = true;
        etcd.manifests_version = Some(config.facts.kubernetes_version.clone());
        for j in joiners {
            if !etcd.members.contains(&j) {
                etcd.members.push(j);
            }
        }
        kube_to_start = (!state.kube.contains_key(&key)).then_some((key, config));
    }
    if let Some((key, config)) = kube_to_start {
        match crate::kube::KubeApi::start(shared.clone(), key.clone(), &config.facts) {
            Ok(api) => {
                shared.lock().kube.insert(key, api);
            }
            Err(e) => tracing::warn!(error = %e, "simulated Kubernetes API not started"),
        }
    }
    Ok(json!({}))
}

fn etcd_members(state: &ClusterState, idx: usize) -> CallResult {
    let node = &state.nodes[idx];
    let Some(config) = &node.config else {
        return Err(RpcError::new("FailedPrecondition", "etcd is not running"));
    };
    if !config.facts.is_controlplane() {
        return Err(RpcError::new(
            "Unimplemented",
            "etcd is not available on worker nodes",
        ));
    }
    let etcd = state
        .etcd
        .get(&config.facts.os_ca_cert)
        .filter(|e| e.bootstrapped && e.members.contains(&idx))
        .ok_or_else(|| RpcError::new("Unavailable", "etcd is not running"))?;
    let members: Vec<Value> = etcd
        .members
        .iter()
        .map(|&m| {
            let n = &state.nodes[m];
            json!({
                "id": n.member_id,
                "hostname": n.hostname(),
                "peer_urls": [format!("https://{}:2380", n.address)],
                "client_urls": [format!("https://{}:2379", n.address)],
                "is_learner": false,
            })
        })
        .collect();
    Ok(json!({ "members": members }))
}

/// Version of the cluster's bootstrap manifests (kube-proxy): fixed at bootstrap, moved only by
/// `upgrade-k8s`.
pub(crate) fn manifests_k8s_version(state: &ClusterState, config: &ConfigFacts) -> String {
    state
        .etcd
        .get(&config.os_ca_cert)
        .and_then(|e| e.manifests_version.clone())
        .unwrap_or_else(|| config.kubernetes_version.clone())
}

fn kubeconfig(state: &ClusterState, idx: usize) -> CallResult {
    let node = &state.nodes[idx];
    let Some(config) = &node.config else {
        return Err(RpcError::new(
            "FailedPrecondition",
            "machine configuration is not available",
        ));
    };
    let facts = &config.facts;
    // upstream: internal/app/internal/machinehelper/machinehelper.go@v1.13.9 CheckControlplane
    // (checkControlplane in v1alpha1_server.go@v1.11.6/v1.12.9): Unimplemented on workers.
    if !facts.is_controlplane() {
        return Err(RpcError::new(
            "Unimplemented",
            "kubeconfig is only available on control plane nodes",
        ));
    }
    let (Some(ca), Some(key)) = (&facts.k8s_ca_cert, &facts.k8s_ca_key) else {
        return Err(RpcError::new(
            "FailedPrecondition",
            "k8s API server CA config is not set",
        ));
    };
    let client = tls::issue_leaf(
        ca,
        key,
        tls::LeafUsage::Client {
            common_name: "admin",
            organizations: &["system:masters"],
        },
    )
    .map_err(|e| RpcError::new("Internal", e.to_string()))?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let name = &facts.cluster_name;
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n    - name: {name}\n      cluster:\n        server: {server}\n        certificate-authority-data: {ca}\nusers:\n    - name: admin@{name}\n      user:\n        client-certificate-data: {crt}\n        client-key-data: {key}\ncontexts:\n    - context:\n        cluster: {name}\n        namespace: default\n        user: admin@{name}\n      name: admin@{name}\ncurrent-context: admin@{name}\n",
        server = facts.endpoint,
        ca = b64(ca),
        crt = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    );
    Ok(json!({ "kubeconfig": b64(&text) }))
}

fn health(state: &ClusterState, idx: usize, params: &Value) -> Value {
    let me = &state.nodes[idx];
    let Some(config) = &me.config else {
        return json!({"checks": [["etcd to be healthy", "machine configuration is not available"]]});
    };
    let key = &config.facts.os_ca_cert;
    let wanted = |field: &str| -> Vec<Ipv4Addr> {
        params
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect()
    };
    let mut control_planes = wanted("control_plane_nodes");
    let mut workers = wanted("worker_nodes");
    let discovered = control_planes.is_empty() && workers.is_empty();
    if discovered {
        for n in &state.nodes {
            if let Some(c) = &n.config
                && &c.facts.os_ca_cert == key
            {
                if c.facts.is_controlplane() {
                    control_planes.push(n.address);
                } else {
                    workers.push(n.address);
                }
            }
        }
    }
    let find = |ip: &Ipv4Addr| {
        state
            .nodes
            .iter()
            .find(|n| n.address == *ip && n.cluster_key() == Some(key.as_str()))
    };
    let etcd = state.etcd.get(key).filter(|e| e.bootstrapped);
    let mut checks: Vec<(String, Option<String>)> = Vec::new();
    let etcd_ok = match etcd {
        None => Some("etcd is not bootstrapped yet".to_string()),
        Some(_) => None,
    };
    checks.push(("etcd to be healthy".into(), etcd_ok.clone()));
    let member_ips: Vec<Ipv4Addr> = etcd
        .map(|e| e.members.iter().map(|&m| state.nodes[m].address).collect())
        .unwrap_or_default();
    let consistent = if etcd_ok.is_some() {
        etcd_ok.clone()
    } else {
        control_planes
            .iter()
            .find(|ip| !member_ips.contains(ip))
            .map(|ip| format!("{ip}: etcd member not found"))
    };
    checks.push((
        "etcd members to be consistent across nodes".into(),
        consistent.clone(),
    ));
    let cp_only = member_ips
        .iter()
        .find(|ip| !control_planes.contains(ip))
        .map(|ip| format!("etcd member {ip} is not a control plane node"));
    checks.push((
        "etcd members to be control plane nodes".into(),
        consistent.clone().or(cp_only),
    ));
    let apid = control_planes
        .iter()
        .chain(workers.iter())
        .find(|ip| find(ip).is_none_or(|n| n.phase != Phase::Running || !n.listening))
        .map(|ip| format!("{ip}: rpc error: code = Unavailable desc = connection refused"));
    checks.push(("apid to be ready".into(), apid.clone()));
    let wrong_type = control_planes
        .iter()
        .map(|ip| (ip, true))
        .chain(workers.iter().map(|ip| (ip, false)))
        .find_map(|(ip, cp)| {
            let n = find(ip)?;
            let is_cp = n.config.as_ref()?.facts.is_controlplane();
            (is_cp != cp).then(|| {
                format!(
                    "{ip}: expected {} node",
                    if cp { "control plane" } else { "worker" }
                )
            })
        });
    checks.push((
        "all nodes to finish boot sequence".into(),
        apid.clone().or(wrong_type.clone()),
    ));
    let k8s = if etcd_ok.is_some() || !state.kube.contains_key(key) {
        Some("kubernetes API is not available yet".to_string())
    } else {
        apid.clone().or(wrong_type)
    };
    checks.push(("all k8s nodes to report".into(), k8s.clone()));
    checks.push(("all k8s nodes to report ready".into(), k8s));
    json!({
        "discovered": if discovered {
            Some(control_planes.iter().chain(workers.iter()).map(|ip| ip.to_string()).collect::<Vec<_>>())
        } else { None },
        "checks": checks.into_iter().map(|(name, err)| json!([name, err])).collect::<Vec<_>>(),
    })
}

/// `reset`: leave etcd (graceful control planes), wipe the config, then either power off or
/// reboot into maintenance mode at the DHCP address.
fn reset(shared: &Arc<Shared>, idx: usize, params: &Value) -> CallResult {
    let reboot = params
        .get("reboot")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let delay = {
        let mut guard = shared.lock();
        let state = &mut *guard;
        let node = &mut state.nodes[idx];
        let key = node.cluster_key().map(str::to_string);
        node.phase = Phase::Rebooting;
        node.tls = None;
        node.config = None;
        let delay =
            Duration::from_millis(node.spec.reboot_delay_ms + node.spec.faults.slow_reboot_ms);
        if let Some(key) = key {
            let mut emptied = false;
            if let Some(etcd) = state.etcd.get_mut(&key) {
                etcd.members.retain(|&m| m != idx);
                emptied = etcd.members.is_empty();
            }
            if emptied {
                state.etcd.remove(&key);
                if let Some(api) = state.kube.remove(&key) {
                    tokio::spawn(api.shutdown());
                }
            }
        }
        delay
    };
    shared.bump(idx);
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        {
            let mut state = shared.lock();
            let node = &mut state.nodes[idx];
            if reboot {
                node.address = node.spec.address;
                node.vip = None;
                node.talos_version = node.spec.maintenance_version.clone();
                node.booted_at = time::OffsetDateTime::now_utc();
                let ips = [IpAddr::V4(node.address)];
                match tls::self_signed(&ips, &[]).and_then(|c| tls::server_config(&c, None, &[])) {
                    Ok(cfg) => {
                        node.tls = Some(cfg);
                        node.phase = Phase::Maintenance;
                    }
                    Err(_) => node.phase = Phase::Gone,
                }
            } else {
                node.phase = Phase::Gone;
            }
        }
        shared.bump(idx);
    });
    Ok(json!({"ack": "Reset request received"}))
}

fn upgrade(shared: &Arc<Shared>, idx: usize, params: &Value) -> CallResult {
    let image = params
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(tag) = image_tag(&image).map(str::to_string) else {
        return Err(RpcError::new(
            "InvalidArgument",
            format!("invalid image reference {image:?}"),
        ));
    };
    if params
        .get("install_only")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        // LifecycleService.Upgrade: installs the new image; the node keeps running its current
        // version until it is rebooted (upstream: cmd/talosctl/cmd/talos/upgrade.go@v1.13.9).
        shared.lock().nodes[idx].pending_version = Some(tag);
        return Ok(json!({"exit_code": 0}));
    }
    let delay = {
        let mut state = shared.lock();
        let node = &mut state.nodes[idx];
        node.phase = Phase::Rebooting;
        node.tls = None;
        node.talos_version = tag;
        Duration::from_millis(node.spec.reboot_delay_ms + node.spec.faults.slow_reboot_ms)
    };
    shared.bump(idx);
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let refreshed = come_up(&mut shared.lock(), idx);
        for other in refreshed {
            shared.bump(other);
        }
        shared.bump(idx);
    });
    Ok(json!({"ack": "Upgrade request received"}))
}

/// `reboot`: the node goes down and comes back, booting an installed upgrade if there is one.
fn reboot(shared: &Arc<Shared>, idx: usize) -> CallResult {
    let delay = {
        let mut state = shared.lock();
        let node = &mut state.nodes[idx];
        node.phase = Phase::Rebooting;
        node.tls = None;
        if let Some(v) = node.pending_version.take() {
            node.talos_version = v;
        }
        Duration::from_millis(node.spec.reboot_delay_ms + node.spec.faults.slow_reboot_ms)
    };
    shared.bump(idx);
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let refreshed = come_up(&mut shared.lock(), idx);
        for other in refreshed {
            shared.bump(other);
        }
        shared.bump(idx);
    });
    Ok(json!({"ack": "Reboot request received"}))
}

/// Is `from -> to` an upgrade path go-kubernetes supports: same minor or the next one, within
/// 1.19..=1.37 (upstream: github.com/siderolabs/go-kubernetes kubernetes/upgrade/path.go@v0.2.41
/// IsSupported, used by pkg/cluster/kubernetes/talos_managed.go@v1.14.0-rc.1 Upgrade).
fn upgrade_path_supported(from: (u64, u64, u64), to: (u64, u64, u64)) -> bool {
    from.0 == 1
        && to.0 == 1
        && (19..=37).contains(&from.1)
        && (to.1 == from.1 || (to.1 == from.1 + 1 && to.1 <= 37))
}

fn upgrade_k8s(shared: &Arc<Shared>, idx: usize, params: &Value) -> CallResult {
    let to = params
        .get("to")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim_start_matches('v')
        .to_string();
    let mut state = shared.lock();
    let Some(config) = state.nodes[idx].config.clone() else {
        return Err(RpcError::new(
            "FailedPrecondition",
            "machine configuration is not available",
        ));
    };
    if !config.facts.is_controlplane() {
        return Err(RpcError::new(
            "FailedPrecondition",
            "upgrade-k8s must be run against a control plane node",
        ));
    }
    let key = config.facts.os_ca_cert.clone();
    if !state.etcd.get(&key).is_some_and(|e| e.bootstrapped) {
        return Err(RpcError::new(
            "Unavailable",
            "kubernetes API is not available yet",
        ));
    }
    // The lowest version among kube-apiserver, kube-controller-manager, kube-scheduler and
    // kube-proxy (upstream: pkg/cluster/kubernetes/detect.go@v1.14.0-rc.1 DetectLowestVersion).
    let mut versions: Vec<String> = vec![manifests_k8s_version(&state, &config.facts)];
    for n in &state.nodes {
        if let Some(c) = &n.config
            && c.facts.os_ca_cert == key
            && c.facts.is_controlplane()
        {
            versions.push(c.facts.kubernetes_version.clone());
        }
    }
    let detected = versions
        .iter()
        .min_by_key(|v| super::wire::parse_version(v).unwrap_or_default())
        .cloned()
        .unwrap_or_default();
    let from = params
        .get("from")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
        .map(|f| f.trim_start_matches('v').to_string())
        .unwrap_or_else(|| detected.clone());
    let (Some(fv), Some(tv)) = (
        super::wire::parse_version(&from),
        super::wire::parse_version(&to),
    ) else {
        return Err(RpcError::new(
            "InvalidArgument",
            format!("error creating upgrade path error parsing version {from:?} -> {to:?}"),
        ));
    };
    if !upgrade_path_supported(fv, tv) {
        return Ok(json!({"from": from, "to": to, "detected": detected,
            "error": format!("unsupported upgrade path {}.{}->{}.{} (from {from:?} to {to:?})", fv.0, fv.1, tv.0, tv.1)}));
    }
    let upgrade_kubelet = params
        .get("upgrade_kubelet")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    // Machine configs are patched: the control plane images (static pods) on control planes,
    // the kubelet image everywhere unless --upgrade-kubelet=false.
    for n in state.nodes.iter_mut() {
        let Some(c) = n.config.clone() else { continue };
        if c.facts.os_ca_cert != key || (!upgrade_kubelet && !c.facts.is_controlplane()) {
            continue;
        }
        let mut facts = c.facts.clone();
        facts.kubernetes_version = to.clone();
        n.config = Some(Arc::new(AppliedConfig { facts }));
    }
    if let Some(etcd) = state.etcd.get_mut(&key) {
        etcd.manifests_version = Some(to.clone());
    }
    Ok(json!({"from": from, "to": to, "detected": detected}))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn resource(
    namespace: &str,
    typ: &str,
    id: &str,
    owner: &str,
    created: time::OffsetDateTime,
    spec: Value,
) -> Value {
    json!({
        "metadata": {
            "namespace": namespace,
            "type": typ,
            "id": id,
            "version": 1,
            "owner": owner,
            "phase": "running",
            "created": rfc3339(created),
            "updated": rfc3339(created),
        },
        "spec": spec,
    })
}

/// Canonical resource type for a `get` argument, if the simulator knows it.
pub(crate) fn canonical_type(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "link" | "links" | "linkstatus" | "linkstatuses" | "ls" | "linkstatuses.net.talos.dev" => {
            Some("LinkStatuses.net.talos.dev")
        }
        "member" | "members" | "members.cluster.talos.dev" => Some("Members.cluster.talos.dev"),
        "extensions"
        | "extensionstatus"
        | "extensionstatuses"
        | "extensionstatuses.runtime.talos.dev" => Some("ExtensionStatuses.runtime.talos.dev"),
        "machinestatus" | "machinestatuses" | "ms" | "machinestatuses.runtime.talos.dev" => {
            Some("MachineStatuses.runtime.talos.dev")
        }
        _ => None,
    }
}

fn get_resources(state: &ClusterState, idx: usize, params: &Value) -> CallResult {
    let asked = params
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = params.get("id").and_then(Value::as_str);
    let Some(typ) = canonical_type(asked) else {
        return Err(RpcError::new(
            "NotFound",
            format!("resource \"{asked}\" is not registered"),
        ));
    };
    let node = &state.nodes[idx];
    let booted = node.booted_at;
    let mut items = Vec::new();
    match typ {
        "LinkStatuses.net.talos.dev" => {
            if node.spec.faults.links_unsupported {
                return Err(RpcError::new(
                    "NotFound",
                    format!("resource \"{asked}\" is not registered"),
                ));
            }
            let nic = node.spec.link_facts();
            let mut spec = json!({
                    "index": 2, "type": "ether", "linkIndex": 0,
                    "flags": "UP,BROADCAST,RUNNING,MULTICAST,LOWER_UP",
                    "hardwareAddr": nic.hardware_addr,
                    "permanentAddr": nic.permanent_addr,
                    "broadcastAddr": "ff:ff:ff:ff:ff:ff", "mtu": 1500, "queueDisc": "pfifo_fast",
                    "operationalState": "up", "kind": "", "slaveKind": "",
                    "busPath": nic.bus_path, "driver": nic.driver, "linkState": true,
                    "speedMbit": 4294967295u64, "port": "Other", "duplex": "Unknown",
            });
            // A LinkAliasConfig whose selector matches sets the link's alias (omitempty).
            if let Some(alias) = node
                .config
                .as_ref()
                .and_then(|c| c.facts.network.alias_of(&nic, &node.talos_version))
            {
                spec["alias"] = json!(alias);
            }
            items.push(resource(
                "network",
                typ,
                &nic.name,
                "network.LinkStatusController",
                booted,
                spec,
            ));
            items.push(resource("network", typ, "lo", "network.LinkStatusController", booted, json!({
                "index": 1, "type": "loopback", "linkIndex": 0,
                "flags": "UP,LOOPBACK,RUNNING,LOWER_UP", "hardwareAddr": "00:00:00:00:00:00",
                "permanentAddr": "", "broadcastAddr": "00:00:00:00:00:00", "mtu": 65536,
                "queueDisc": "noqueue", "operationalState": "unknown", "kind": "", "slaveKind": "",
                "linkState": true, "port": "Other", "duplex": "Unknown",
            })));
        }
        "Members.cluster.talos.dev" => {
            if let Some(config) = &node.config
                && config.facts.discovery_enabled
                && node.phase == Phase::Running
            {
                for n in &state.nodes {
                    let Some(c) = &n.config else { continue };
                    if c.facts.os_ca_cert != config.facts.os_ca_cert || n.phase != Phase::Running {
                        continue;
                    }
                    let hostname = n.hostname();
                    items.push(resource(
                        "cluster",
                        typ,
                        &hostname,
                        "cluster.MemberController",
                        n.booted_at,
                        json!({
                            "nodeId": format!("{:016x}", n.member_id),
                            "addresses": [n.address.to_string()],
                            "hostname": hostname,
                            "machineType": c.facts.machine_type,
                            "operatingSystem": format!("Talos ({})", n.talos_version),
                        }),
                    ));
                }
            }
        }
        "ExtensionStatuses.runtime.talos.dev" => {
            for (i, ext) in node.spec.extensions.iter().enumerate() {
                let image = format!("{:03}.ghcr.io-siderolabs-{}-{}", i, ext.name, ext.version);
                items.push(resource(
                    "runtime",
                    typ,
                    &i.to_string(),
                    "runtime.ExtensionStatusController",
                    booted,
                    json!({
                        "image": format!("{image}.sqsh"),
                        "metadata": {
                            "name": ext.name, "version": ext.version, "author": "Sidero Labs",
                            "description": format!("{} system extension", ext.name),
                            "compatibility": {"talos": {"version": ">= v1.0.0"}},
                        },
                    }),
                ));
            }
        }
        _ => {
            let (stage, ready, unmet) = match node.phase {
                Phase::Maintenance => (
                    "maintenance",
                    false,
                    json!([{"name": "config", "reason": "machine configuration is not available"}]),
                ),
                _ => ("running", true, json!([])),
            };
            items.push(resource(
                "runtime",
                typ,
                "machine",
                "runtime.MachineStatusController",
                booted,
                json!({
                    "stage": stage,
                    "status": {"ready": ready, "unmetConditions": unmet},
                }),
            ));
        }
    }
    if let Some(id) = id {
        items.retain(|r| r.pointer("/metadata/id").and_then(Value::as_str) == Some(id));
        if items.is_empty() {
            return Err(RpcError::new(
                "NotFound",
                format!("resource {typ} \"{id}\" is not found"),
            ));
        }
    }
    Ok(json!({ "resources": items }))
}
