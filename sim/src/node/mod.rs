//! Simulated Talos nodes on loopback: each machine listens on its own 127.x address, starts in
//! maintenance mode at its "DHCP" address, installs and reboots after `apply-config --insecure`,
//! then serves the authenticated API at the static address from its config, so discovery,
//! bootstrap and health logic can be exercised against real sockets.

pub mod config;
mod handlers;
pub(crate) use handlers::{canonical_type, manifests_k8s_version};
pub mod spec;
pub mod tls;
pub mod wire;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

pub use config::ConfigFacts;
pub use spec::{BootstrapError, ClusterSpec, ExtensionSpec, Faults, NodeSpec, RoleHint, SpecError};

/// Errors starting or running the simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("simulated nodes did not come up within {0:?}")]
    StartTimeout(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where a node is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Unconfigured, maintenance API at the DHCP address.
    Maintenance,
    /// Installing / rebooting: unreachable.
    Rebooting,
    /// Configured, authenticated API at its (static) address.
    Running,
    /// Never came back (fault knob).
    Gone,
}

/// A snapshot of one node, for tests and the ready file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub foreign: bool,
    pub phase: Phase,
    pub address: Ipv4Addr,
    pub api_port: u16,
    pub talos_version: String,
    pub machine_type: Option<String>,
    pub etcd_member: bool,
    /// The shared IP this node announces (a control plane whose config puts a VIP on a link it
    /// has; workers never win the etcd-based election).
    pub vip: Option<Ipv4Addr>,
}

pub(crate) struct AppliedConfig {
    pub facts: ConfigFacts,
}

pub(crate) struct NodeState {
    pub spec: NodeSpec,
    pub foreign: bool,
    pub phase: Phase,
    pub address: Ipv4Addr,
    /// VIP announced on the node's link (set when it comes up configured).
    pub vip: Option<Ipv4Addr>,
    pub talos_version: String,
    pub config: Option<Arc<AppliedConfig>>,
    pub apply_failures_left: u32,
    pub bootstrap_not_ready_left: u32,
    /// Transient bootstrap failures still to answer, in order.
    pub bootstrap_errors_left: std::collections::VecDeque<BootstrapError>,
    /// Talos version installed by a LifecycleService upgrade, booted by the next reboot.
    pub pending_version: Option<String>,
    /// TLS configuration of the current listener (maintenance or authenticated).
    pub tls: Option<Arc<ServerConfig>>,
    /// False while a running node only has a self-signed certificate (no CA key reachable).
    pub trusted_cert: bool,
    /// True while a listener is bound for the current phase.
    pub listening: bool,
    pub member_id: u64,
    pub booted_at: time::OffsetDateTime,
}

impl NodeState {
    pub fn hostname(&self) -> String {
        self.config
            .as_ref()
            .and_then(|c| c.facts.hostname.clone())
            .unwrap_or_else(|| format!("talos-{}", self.address.to_string().replace('.', "-")))
    }

    pub fn cluster_key(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.facts.os_ca_cert.as_str())
    }
}

/// etcd of one simulated cluster (keyed by its OS CA certificate).
#[derive(Default)]
pub(crate) struct EtcdCluster {
    pub bootstrapped: bool,
    /// Node indices of members, in join order.
    pub members: Vec<usize>,
    /// Version of the bootstrap manifests (kube-proxy DaemonSet, CoreDNS…): the bootstrap
    /// node's Kubernetes version, moved only by `upgrade-k8s` — a new config does not touch
    /// existing objects (upstream: internal/app/machined/pkg/controllers/k8s/manifest_apply.go
    /// @v1.14.0-rc.1 creates missing objects only).
    pub manifests_version: Option<String>,
}

pub(crate) struct ClusterState {
    pub nodes: Vec<NodeState>,
    pub etcd: HashMap<String, EtcdCluster>,
    pub kube: HashMap<String, crate::kube::KubeApi>,
}

pub(crate) struct Shared {
    state: Mutex<ClusterState>,
    generations: Vec<watch::Sender<u64>>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells node `idx`'s listener task that its phase or address changed.
    pub fn bump(&self, idx: usize) {
        self.generations[idx].send_modify(|g| *g += 1);
    }
}

/// A running simulated cluster. Dropping it without [`SimCluster::shutdown`] aborts its tasks.
pub struct SimCluster {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl SimCluster {
    /// Starts one listener per node and returns once every maintenance API is accepting.
    pub async fn start(spec: ClusterSpec) -> Result<SimCluster, SimError> {
        spec.check()?;
        let now = time::OffsetDateTime::now_utc();
        let mut nodes = Vec::new();
        for (node, foreign) in spec.all_nodes() {
            let cert = tls::self_signed(&[IpAddr::V4(node.address)], &[])?;
            nodes.push(NodeState {
                spec: node.clone(),
                foreign,
                phase: Phase::Maintenance,
                address: node.address,
                vip: None,
                talos_version: node.maintenance_version.clone(),
                config: None,
                apply_failures_left: u32::from(node.faults.apply_fails_once),
                bootstrap_not_ready_left: node.faults.bootstrap_not_ready_times,
                bootstrap_errors_left: node.faults.bootstrap_errors.iter().copied().collect(),
                pending_version: None,
                tls: Some(tls::server_config(&cert, None, &[])?),
                trusted_cert: false,
                listening: false,
                member_id: member_id_for(&node.name),
                booted_at: now,
            });
        }
        let count = nodes.len();
        let generations = (0..count).map(|_| watch::channel(0u64).0).collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(ClusterState {
                nodes,
                etcd: HashMap::new(),
                kube: HashMap::new(),
            }),
            generations,
        });
        let (stop, _) = watch::channel(false);
        let (bound_tx, mut bound_rx) =
            tokio::sync::mpsc::channel::<Result<(), SimError>>(count.max(1));
        let mut tasks = Vec::new();
        for idx in 0..count {
            let gen_rx = shared.generations[idx].subscribe();
            tasks.push(tokio::spawn(run_listener(
                shared.clone(),
                idx,
                gen_rx,
                stop.subscribe(),
                Some(bound_tx.clone()),
            )));
        }
        drop(bound_tx);
        let cluster = SimCluster {
            shared,
            tasks,
            stop,
        };
        let limit = Duration::from_secs(10);
        for _ in 0..count {
            match tokio::time::timeout(limit, bound_rx.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
                Ok(None) | Err(_) => {
                    cluster.shutdown().await;
                    return Err(SimError::StartTimeout(limit));
                }
            }
        }
        Ok(cluster)
    }

    /// Snapshot of every node (own nodes first, then foreign ones, in spec order).
    pub fn statuses(&self) -> Vec<NodeStatus> {
        let state = self.shared.lock();
        state
            .nodes
            .iter()
            .map(|n| NodeStatus {
                name: n.spec.name.clone(),
                foreign: n.foreign,
                phase: n.phase,
                address: n.address,
                api_port: n.spec.api_port,
                talos_version: n.talos_version.clone(),
                machine_type: n.config.as_ref().map(|c| c.facts.machine_type.clone()),
                etcd_member: n.cluster_key().is_some_and(|k| {
                    state.etcd.get(k).is_some_and(|e| {
                        e.members
                            .iter()
                            .any(|&m| state.nodes[m].spec.name == n.spec.name)
                    })
                }),
                vip: n.vip,
            })
            .collect()
    }

    /// Status of the node called `name`.
    pub fn status(&self, name: &str) -> Option<NodeStatus> {
        self.statuses().into_iter().find(|s| s.name == name)
    }

    /// Waits until `name` reaches `phase` (polling), up to `limit`.
    pub async fn wait_for_phase(&self, name: &str, phase: Phase, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.status(name).is_some_and(|s| {
                s.phase == phase && (phase != Phase::Running || self.is_listening(name))
            }) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn is_listening(&self, name: &str) -> bool {
        self.shared
            .lock()
            .nodes
            .iter()
            .any(|n| n.spec.name == name && n.listening)
    }

    /// Node name → current `address` (the ready-file content).
    pub fn addresses(&self) -> std::collections::BTreeMap<String, String> {
        self.statuses()
            .into_iter()
            .map(|s| (s.name, s.address.to_string()))
            .collect()
    }

    /// Stops every listener and background task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let kube: Vec<_> = self.shared.lock().kube.drain().map(|(_, k)| k).collect();
        for k in kube {
            k.shutdown().await;
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn member_id_for(name: &str) -> u64 {
    let hash = blake3::hash(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(bytes)
}

/// Keeps node `idx`'s listener in step with its phase: bound while in maintenance or running,
/// closed while rebooting or gone, re-bound at the new address after a change.
async fn run_listener(
    shared: Arc<Shared>,
    idx: usize,
    mut generation: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    mut first_bind: Option<tokio::sync::mpsc::Sender<Result<(), SimError>>>,
) {
    loop {
        generation.borrow_and_update();
        let plan = {
            let mut state = shared.lock();
            let node = &mut state.nodes[idx];
            node.listening = false;
            match node.phase {
                Phase::Maintenance | Phase::Running => node.tls.clone().map(|t| {
                    (
                        SocketAddr::new(IpAddr::V4(node.address), node.spec.api_port),
                        t,
                    )
                }),
                Phase::Rebooting | Phase::Gone => None,
            }
        };
        let Some((addr, tls)) = plan else {
            tokio::select! {
                r = generation.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            continue;
        };
        let listener = match bind_with_retry(addr).await {
            Ok(l) => l,
            Err(source) => {
                tracing::error!(%addr, error = %source, "simulated node cannot listen");
                if let Some(tx) = first_bind.take() {
                    let _ = tx.send(Err(SimError::Bind { addr, source })).await;
                }
                tokio::select! {
                    r = generation.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        shared.lock().nodes[idx].listening = true;
        if let Some(tx) = first_bind.take() {
            let _ = tx.send(Ok(())).await;
        }
        let acceptor = TlsAcceptor::from(tls);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let shared = shared.clone();
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            if let Ok(Ok(tls_stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                let peer = tls::peer_identity(tls_stream.get_ref().1.peer_certificates());
                                serve_connection(shared, idx, tls_stream, peer).await;
                            }
                        });
                    }
                }
                r = generation.changed() => { if r.is_err() { return } break; }
                _ = stop.changed() => return,
            }
        }
    }
}

async fn bind_with_retry(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

/// The role `talosctl gen config` issues (`role.Admin`, pkg/machinery/role/role.go@v1.14.0-rc.1).
pub const ADMIN_ROLE: &str = "os:admin";

async fn serve_connection<S>(
    shared: Arc<Shared>,
    idx: usize,
    stream: S,
    peer: Option<tls::PeerIdentity>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let request: wire::Request = match wire::read_json(&mut reader).await {
        Ok(Some(r)) => r,
        _ => return,
    };
    // Authorisation as apid/machined do it: roles are the client certificate's organizations
    // (the handshake already checked the chain to the OS CA). The simulator serves only
    // `os:admin`; any other role set is refused as upstream refuses a role a method does not
    // allow: PermissionDenied "not authorized"
    // (pkg/grpc/middleware/authz/authorizer.go@v1.11.6 ErrNotAuthorized). Maintenance mode
    // has no client certificates (None) and no roles.
    if let Some(peer) = &peer
        && !peer.organizations.iter().any(|o| o == ADMIN_ROLE)
    {
        let response = wire::Response {
            replies: vec![wire::Reply {
                node: String::new(),
                result: serde_json::Value::Null,
                error: Some(wire::RpcError::new("PermissionDenied", "not authorized")),
            }],
        };
        let _ = wire::write_json(reader.get_mut(), &response).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(reader.get_mut()).await;
        return;
    }
    let held = handlers::held_apply(&shared, idx, &request);
    let Some(mut response) = handlers::dispatch(&shared, idx, request) else {
        // Fault: drop the connection without answering.
        return;
    };
    if let Some(want) = held {
        let deadline = tokio::time::Instant::now() + HELD_APPLY_BOUND;
        loop {
            let have = handlers::configured_count(&shared);
            if have >= want {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                response = handlers::held_apply_expired(have, want);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _ = wire::write_json(reader.get_mut(), &response).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(reader.get_mut()).await;
}

/// How long a held maintenance apply answer (`apply_answer_waits_for_configured`) waits.
const HELD_APPLY_BOUND: Duration = Duration::from_secs(60);

const SERVE_USAGE: &str =
    "usage: talix sim serve --spec FILE [--ready-file PATH] [--exit-on-stdin-eof]";

/// How long `serve` waits for its listeners and tasks once asked to stop; past it the runtime is
/// dropped with whatever is still running (a stuck client connection must not keep it alive).
const SHUTDOWN_BOUND: Duration = Duration::from_secs(3);

/// `talix sim serve --spec FILE [--ready-file PATH] [--exit-on-stdin-eof]` (also `talos-sim
/// serve`): runs the nodes until SIGTERM or SIGINT (or EOF on stdin, only when asked with
/// `--exit-on-stdin-eof`), printing one line per machine on stdout saying where it listens (and
/// another whenever a machine moves). Returns the process exit status.
pub fn serve_main(args: Vec<std::ffi::OsString>) -> i32 {
    let mut spec_path = None;
    let mut ready_path = None;
    let mut exit_on_stdin_eof = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--spec") => spec_path = it.next(),
            Some("--ready-file") => ready_path = it.next(),
            Some("--exit-on-stdin-eof") => exit_on_stdin_eof = true,
            _ => {
                eprintln!("{SERVE_USAGE}");
                return 2;
            }
        }
    }
    let Some(spec_path) = spec_path else {
        eprintln!("{SERVE_USAGE}");
        return 2;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(serve(
        Path::new(&spec_path),
        ready_path.as_deref().map(Path::new),
        exit_on_stdin_eof,
    ));
    // Never wait for stragglers (a half-open client connection, a reboot timer) after stopping.
    runtime.shutdown_timeout(SHUTDOWN_BOUND);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("talix sim serve: {e}");
            1
        }
    }
}

/// One line per machine: where its API answers now and in which phase.
fn listening_lines(cluster: &SimCluster) -> Vec<String> {
    cluster
        .statuses()
        .into_iter()
        .map(|s| {
            let phase = match s.phase {
                Phase::Maintenance => "maintenance",
                Phase::Rebooting => "rebooting",
                Phase::Running => "running",
                Phase::Gone => "gone",
            };
            let kind = if s.foreign { "foreign node" } else { "node" };
            format!(
                "talos-sim: {kind} {} listening on {}:{} ({phase}, Talos {})",
                s.name, s.address, s.api_port, s.talos_version
            )
        })
        .collect()
}

fn print_lines(lines: &[String]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// EOF on stdin, watched from a detached thread (a blocking read inside the runtime would keep
/// the runtime from shutting down while stdin stays open).
fn stdin_eof() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match std::io::Read::read(&mut stdin, &mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    rx
}

async fn serve(
    spec_path: &Path,
    ready_path: Option<&Path>,
    exit_on_stdin_eof: bool,
) -> Result<(), SimError> {
    let spec = ClusterSpec::load(spec_path)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let cluster = SimCluster::start(spec).await?;
    let ready_path_owned = ready_path.map(Path::to_path_buf);
    let mut last_lines = listening_lines(&cluster);
    print_lines(&last_lines);
    if let Some(path) = &ready_path_owned {
        write_ready_file(path, &cluster)?;
    }
    let mut eof = if exit_on_stdin_eof {
        Some(stdin_eof())
    } else {
        None
    };
    let mut refresh = tokio::time::interval(Duration::from_millis(100));
    let mut last = cluster.addresses();
    let result = loop {
        tokio::select! {
            _ = int.recv() => break Ok(()),
            _ = term.recv() => break Ok(()),
            _ = async { match eof.as_mut() { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => break Ok(()),
            _ = refresh.tick() => {
                let lines = listening_lines(&cluster);
                if lines != last_lines {
                    let changed: Vec<String> =
                        lines.iter().filter(|l| !last_lines.contains(l)).cloned().collect();
                    print_lines(&changed);
                    last_lines = lines;
                }
                let now = cluster.addresses();
                if now != last {
                    if let Some(path) = &ready_path_owned
                        && let Err(e) = write_ready_file(path, &cluster)
                    {
                        break Err(e);
                    }
                    last = now;
                }
            }
        }
    };
    let _ = tokio::time::timeout(SHUTDOWN_BOUND, cluster.shutdown()).await;
    result
}

/// Writes the ready file atomically (temp file + rename) so readers never see half of it.
fn write_ready_file(path: &Path, cluster: &SimCluster) -> Result<(), SimError> {
    let body = serde_json::to_vec_pretty(&cluster.addresses()).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    fs_err::write(&tmp, body)?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}
