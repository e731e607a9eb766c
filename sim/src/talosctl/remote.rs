//! Node-facing talosctl commands of the simulator (apply-config, bootstrap, health, kubeconfig,
//! version, get, etcd members, upgrade, upgrade-k8s): same flags, output streams, messages and
//! exit codes as the real talosctl, spoken over the simulator's JSON-lines-over-TLS protocol.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::node::tls;
use crate::node::wire::{self, Reply, Request, Response, RpcError};

/// Default Talos API port appended to endpoints and nodes without one.
const API_PORT: u16 = 50000;

/// A command failure: the text talosctl prints on stderr before exiting 1.
#[derive(Debug)]
struct CliError(String);

impl<T: std::fmt::Display> From<T> for CliError {
    fn from(e: T) -> Self {
        CliError(e.to_string())
    }
}

type CliResult = Result<(), CliError>;

#[derive(Parser, Debug)]
#[command(
    name = "talosctl",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// The path to the Talos configuration file.
    #[arg(long, global = true)]
    talosconfig: Option<PathBuf>,
    /// Target the specified nodes.
    #[arg(short = 'n', long, global = true, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Override default endpoints in Talos configuration.
    #[arg(short = 'e', long, global = true, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Context to be used in command.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Cluster to connect to if a proxy endpoint is used.
    #[arg(short = 'c', long, global = true)]
    cluster: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(name = "apply-config", alias = "apply")]
    ApplyConfig(ApplyArgs),
    Bootstrap(BootstrapArgs),
    Health(HealthArgs),
    Kubeconfig(KubeconfigArgs),
    Version(VersionArgs),
    #[command(alias = "g")]
    Get(GetArgs),
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    Upgrade(UpgradeArgs),
    #[command(name = "upgrade-k8s")]
    UpgradeK8s(UpgradeK8sArgs),
    Reset(ResetArgs),
}

#[derive(Args, Debug)]
struct ResetArgs {
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    graceful: bool,
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    reboot: bool,
    #[arg(long = "wipe-mode", default_value = "all")]
    wipe_mode: String,
    #[arg(long = "user-disks-to-wipe", value_delimiter = ',')]
    user_disks_to_wipe: Vec<String>,
    #[arg(long = "system-labels-to-wipe", value_delimiter = ',')]
    system_labels_to_wipe: Vec<String>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    wait: bool,
    #[arg(long)]
    debug: bool,
    #[arg(long, default_value = "30m0s")]
    timeout: String,
    #[arg(short = 'i', long)]
    insecure: bool,
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// `config`/`machineconfig` when invoked as `apply`.
    what: Option<String>,
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    #[arg(short = 'p', long = "config-patch")]
    config_patch: Vec<String>,
    #[arg(short = 'i', long)]
    insecure: bool,
    #[arg(long = "cert-fingerprint", value_delimiter = ',')]
    cert_fingerprint: Vec<String>,
    #[arg(short = 'm', long, default_value = "auto")]
    mode: String,
    #[arg(long = "dry-run")]
    dry_run: bool,
    #[arg(long, default_value = "1m0s")]
    timeout: String,
}

#[derive(Args, Debug)]
struct BootstrapArgs {
    #[arg(long = "recover-from")]
    recover_from: Option<PathBuf>,
    #[arg(long = "recover-skip-hash-check")]
    recover_skip_hash_check: bool,
}

#[derive(Args, Debug)]
struct HealthArgs {
    #[arg(long = "wait-timeout", default_value = "20m0s")]
    wait_timeout: String,
    #[arg(long = "control-plane-nodes", value_delimiter = ',')]
    control_plane_nodes: Vec<String>,
    #[arg(long = "worker-nodes", value_delimiter = ',')]
    worker_nodes: Vec<String>,
    #[arg(long = "init-node")]
    init_node: Option<String>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    server: bool,
    #[arg(long = "k8s-endpoint")]
    k8s_endpoint: Option<String>,
    #[arg(long = "run-e2e")]
    run_e2e: bool,
}

#[derive(Args, Debug)]
struct KubeconfigArgs {
    local_path: Option<PathBuf>,
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(short = 'm', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    merge: bool,
    #[arg(long = "force-context-name")]
    force_context_name: Option<String>,
}

#[derive(Args, Debug)]
struct VersionArgs {
    #[arg(long)]
    client: bool,
    #[arg(long)]
    short: bool,
    #[arg(short = 'i', long)]
    insecure: bool,
    #[arg(long, hide = true)]
    json: bool,
}

#[derive(Args, Debug)]
struct GetArgs {
    resource_type: String,
    id: Option<String>,
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
    #[arg(long)]
    namespace: Option<String>,
    #[arg(short = 'w', long)]
    watch: bool,
    #[arg(short = 'i', long)]
    insecure: bool,
}

#[derive(Subcommand, Debug)]
enum EtcdCommand {
    Members,
}

#[derive(Args, Debug)]
struct UpgradeArgs {
    #[arg(short = 'i', long)]
    image: Option<String>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    wait: bool,
    #[arg(long)]
    insecure: bool,
    #[arg(short = 's', long)]
    stage: bool,
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(short = 'p', long, hide = true)]
    preserve: bool,
    #[arg(short = 'm', long = "reboot-mode", default_value = "default")]
    reboot_mode: String,
    #[arg(long)]
    debug: bool,
    #[arg(long, default_value = "30m0s")]
    timeout: String,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    drain: bool,
    #[arg(long = "drain-timeout", default_value = "5m0s")]
    drain_timeout: String,
    #[arg(long = "no-reboot")]
    no_reboot: bool,
    #[arg(long)]
    legacy: bool,
    #[arg(long, default_value = "auto")]
    progress: String,
    #[arg(long, default_value = "system")]
    namespace: String,
}

#[derive(Args, Debug)]
struct UpgradeK8sArgs {
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long = "dry-run")]
    dry_run: bool,
    #[arg(long = "upgrade-kubelet", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    upgrade_kubelet: bool,
    #[arg(long = "pre-pull-images", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pre_pull_images: bool,
}

/// Runs a node-facing talosctl command; `args` is the full argv after the program name.
pub fn main(args: Vec<OsString>) -> i32 {
    let argv = std::iter::once(OsString::from("talosctl")).chain(args);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            // cobra's wording for the common cases, then usage (the text mentions "flag").
            let text = match (e.kind(), e.get(clap::error::ContextKind::InvalidArg)) {
                (clap::error::ErrorKind::UnknownArgument, Some(arg)) => {
                    format!(
                        "unknown flag: {}",
                        arg.to_string().split('=').next().unwrap_or_default()
                    )
                }
                _ => e
                    .to_string()
                    .trim_start_matches("error: ")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            eprintln!(
                "{text}\n\nUse \"talosctl [command] --help\" for more information about a command."
            );
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => 0,
        Err(CliError(text)) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{text}");
            if ["arg(s)", "flag", "command"]
                .iter()
                .any(|w| text.contains(w))
            {
                let _ = writeln!(
                    stderr,
                    "\nUse \"talosctl [command] --help\" for more information about a command."
                );
            }
            1
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    let global = cli.global;
    match cli.command {
        Command::ApplyConfig(a) => apply_config(&global, a).await,
        Command::Bootstrap(a) => bootstrap(&global, a).await,
        Command::Health(a) => health(&global, a).await,
        Command::Kubeconfig(a) => kubeconfig(&global, a).await,
        Command::Version(a) => version(&global, a).await,
        Command::Get(a) => get(&global, a).await,
        Command::Etcd {
            command: EtcdCommand::Members,
        } => etcd_members(&global).await,
        Command::Upgrade(a) => upgrade(&global, a).await,
        Command::UpgradeK8s(a) => upgrade_k8s(&global, a).await,
        Command::Reset(a) => reset(&global, a).await,
    }
}

// ---------------------------------------------------------------------------------------------
// talosconfig and connection

/// One context of a talosconfig (only what the client needs).
#[derive(Default)]
struct Context {
    endpoints: Vec<String>,
    nodes: Vec<String>,
    ca: Option<String>,
    crt: Option<String>,
    key: Option<String>,
}

fn talosconfig_path(global: &Global) -> Option<PathBuf> {
    if let Some(p) = &global.talosconfig {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os("TALOSCONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let talos_home = std::env::var_os("TALOS_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".talos")));
    let candidates = [
        talos_home.map(|d| d.join("config")),
        Some(PathBuf::from("/var/run/secrets/talos.dev/config")),
    ];
    let first = candidates[0].clone();
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .or(first)
}

fn decode_b64_pem(value: Option<&Value>) -> Option<String> {
    let raw = value?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn load_context(global: &Global) -> Result<Context, CliError> {
    let Some(path) = talosconfig_path(global) else {
        return Ok(Context::default());
    };
    if !path.exists() {
        // talosctl creates an empty config file where it looked.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = fs_err::create_dir_all(parent);
        }
        let _ = write_private(&path, b"context: \"\"\ncontexts: {}\n");
        return Ok(Context::default());
    }
    let text = fs_err::read_to_string(&path)?;
    let doc: Value = serde_saphyr::from_str(&text)
        .map_err(|e| CliError(format!("failed to parse config: {e}")))?;
    let name = match &global.context {
        Some(n) => n.clone(),
        None => doc
            .get("context")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let ctx = doc.get("contexts").and_then(|c| c.get(&name));
    let Some(ctx) = ctx else {
        if global.context.is_some() {
            return Err(CliError(format!("context {name:?} not found in config")));
        }
        return Ok(Context::default());
    };
    let list = |key: &str| -> Vec<String> {
        ctx.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    Ok(Context {
        endpoints: list("endpoints"),
        nodes: list("nodes"),
        ca: decode_b64_pem(ctx.get("ca")),
        crt: decode_b64_pem(ctx.get("crt")),
        key: decode_b64_pem(ctx.get("key")),
    })
}

/// The dial target of an endpoint, as talosctl builds it (default port appended with Go's
/// JoinHostPort to whatever SplitHostPort rejects).
fn with_port(host: &str) -> String {
    crate::gonet::ensure_port(host, API_PORT)
}

/// Where to connect and what to ask for.
struct Connection {
    tls: Arc<rustls::ClientConfig>,
    endpoints: Vec<String>,
    /// Node metadata sent with the call (empty in `--insecure` mode).
    nodes: Vec<String>,
}

const NODES_NOT_SET: &str = "nodes are not set for the command: please use `--nodes` flag or configuration file to set the nodes to run the command against";

fn connect_insecure(global: &Global) -> Result<Connection, CliError> {
    if global.nodes.is_empty() {
        return Err(CliError(NODES_NOT_SET.to_string()));
    }
    Ok(Connection {
        tls: tls::insecure_client_config()?,
        endpoints: global.nodes.clone(),
        nodes: Vec::new(),
    })
}

fn connect_authenticated(global: &Global) -> Result<Connection, CliError> {
    let ctx = load_context(global)?;
    let endpoints = if global.endpoints.is_empty() {
        ctx.endpoints.clone()
    } else {
        global.endpoints.clone()
    };
    let nodes = if global.nodes.is_empty() {
        ctx.nodes.clone()
    } else {
        global.nodes.clone()
    };
    if nodes.is_empty() {
        return Err(CliError(NODES_NOT_SET.to_string()));
    }
    if endpoints.is_empty() {
        return Err(CliError("failed to determine endpoints".to_string()));
    }
    let (Some(ca), Some(crt), Some(key)) = (&ctx.ca, &ctx.crt, &ctx.key) else {
        return Err(CliError("failed to determine endpoints".to_string()));
    };
    Ok(Connection {
        tls: tls::client_config(ca, Some((crt, key)))?,
        endpoints,
        nodes,
    })
}

fn connect(global: &Global, insecure: bool) -> Result<Connection, CliError> {
    if insecure {
        connect_insecure(global)
    } else {
        connect_authenticated(global)
    }
}

fn go_alert_name(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateRequired => "certificate required".into(),
        A::BadCertificate => "bad certificate".into(),
        A::UnknownCA => "unknown certificate authority".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::DecryptError => "error decrypting message".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn unavailable(desc: String) -> RpcError {
    RpcError::new("Unavailable", desc)
}

fn tls_error_text(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match inner {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .to_string()
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("tls: failed to verify certificate: x509: {other:?}")
        }
        rustls::Error::AlertReceived(alert) => {
            format!("remote error: tls: {}", go_alert_name(*alert))
        }
        other => format!("tls: {other}"),
    })
}

/// One request/response exchange with a single endpoint, errors rendered like grpc-go's.
async fn exchange(
    endpoint: &str,
    single: bool,
    tls: Arc<rustls::ClientConfig>,
    request: &Request,
) -> Result<Response, RpcError> {
    let target = with_port(endpoint);
    // upstream: pkg/machinery/client/connection.go@v1.13.9 getTarget: one endpoint is dialled as
    // `dns:///TARGET` (grpc's dns resolver parses it first), several through the round-robin
    // resolver, whose addresses go to the dialer as they are.
    if single {
        if let Err(e) = crate::gonet::dns_parse_target(&target) {
            return Err(unavailable(format!("name resolver error: {e}")));
        }
    } else if let Err(e) = crate::gonet::split_host_port(&target) {
        return Err(unavailable(format!(
            "connection error: desc = \"transport: Error while dialing: dial tcp: {e}\""
        )));
    }
    let addr: SocketAddr = match target.parse() {
        Ok(a) => a,
        Err(_) => {
            return Err(unavailable(format!(
                "connection error: desc = \"transport: Error while dialing: dial tcp: lookup {target}: no such host\""
            )));
        }
    };
    let dial_error = |what: &str| {
        unavailable(format!(
            "connection error: desc = \"transport: Error while dialing: dial tcp {addr}: {what}\""
        ))
    };
    // The simulator only ever dials loopback: anything else is answered as an unroutable network
    // without a packet leaving the machine.
    if !addr.ip().is_loopback() {
        return Err(dial_error("connect: network is unreachable"));
    }
    let tcp = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(dial_error("connect: connection refused"));
        }
        Ok(Err(e)) => return Err(dial_error(&format!("connect: {e}"))),
        Err(_) => return Err(dial_error("i/o timeout")),
    };
    let server_name = ServerName::IpAddress(match addr.ip() {
        IpAddr::V4(v4) => v4.into(),
        IpAddr::V6(v6) => v6.into(),
    });
    let stream = match TlsConnector::from(tls).connect(server_name, tcp).await {
        Ok(s) => s,
        Err(e) => {
            let text = tls_error_text(&e).unwrap_or_else(|| e.to_string());
            return Err(unavailable(format!(
                "connection error: desc = \"transport: authentication handshake failed: {text}\""
            )));
        }
    };
    let mut reader = BufReader::new(stream);
    let io_error = |e: std::io::Error| match tls_error_text(&e) {
        Some(text) => unavailable(format!(
            "connection error: desc = \"error reading server preface: {text}\""
        )),
        None => unavailable("error reading from server: EOF".to_string()),
    };
    wire::write_json(reader.get_mut(), request)
        .await
        .map_err(io_error)?;
    match wire::read_json::<Response, _>(&mut reader).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(unavailable("error reading from server: EOF".to_string())),
        Err(e) => Err(io_error(e)),
    }
}

/// Calls `method` through the first reachable endpoint (client-side round robin).
async fn call(conn: &Connection, method: &str, params: Value) -> Result<Vec<Reply>, RpcError> {
    let request = Request {
        method: method.to_string(),
        nodes: conn.nodes.iter().map(|n| n.to_string()).collect(),
        params,
    };
    let mut last = None;
    for endpoint in &conn.endpoints {
        match exchange(
            endpoint,
            conn.endpoints.len() == 1,
            conn.tls.clone(),
            &request,
        )
        .await
        {
            Ok(r) => return Ok(r.replies),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| unavailable("no endpoints".to_string())))
}

/// hashicorp/go-multierror rendering of per-node failures.
fn multierror(errors: &[(String, RpcError)]) -> String {
    let n = errors.len();
    let points: Vec<String> = errors
        .iter()
        .map(|(node, e)| {
            if node.is_empty() {
                format!("* {e}")
            } else {
                format!("* {node}: {e}")
            }
        })
        .collect();
    format!(
        "{n} error{} occurred:\n\t{}\n\n",
        if n == 1 { "" } else { "s" },
        points.join("\n\t")
    )
}

/// Splits replies into successes and the rendered error (bare for a local reply, multierror
/// when the nodes were proxied).
fn split_replies(replies: Vec<Reply>) -> (Vec<(String, Value)>, Option<String>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut local_error = None;
    for r in replies {
        match r.error {
            Some(e) if r.node.is_empty() => local_error = Some(e.to_string()),
            Some(e) => failed.push((r.node, e)),
            None => ok.push((r.node, r.result)),
        }
    }
    let error = local_error.or_else(|| (!failed.is_empty()).then(|| multierror(&failed)));
    (ok, error)
}

fn single_node_check(global: &Global, command: &str) -> CliResult {
    if global.nodes.len() > 1 {
        return Err(CliError(format!(
            "command {command:?} is not supported with multiple nodes"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// commands

async fn apply_config(global: &Global, args: ApplyArgs) -> CliResult {
    if let Some(what) = &args.what
        && !matches!(
            what.to_ascii_lowercase().as_str(),
            "config" | "machineconfig"
        )
    {
        return Err(CliError(format!(
            "unknown command {what:?} for \"talosctl apply\""
        )));
    }
    let allowed: &[&str] = if crate::node::wire::version_at_least(&crate::client_version(), 1, 14) {
        &["auto", "no-reboot", "staged", "try"]
    } else if crate::node::wire::version_at_least(&crate::client_version(), 1, 12) {
        &["auto", "no-reboot", "reboot", "staged", "try"]
    } else {
        &[
            "auto",
            "interactive",
            "no-reboot",
            "reboot",
            "staged",
            "try",
        ]
    };
    if !allowed.contains(&args.mode.as_str()) {
        return Err(CliError(format!(
            "possible options are: {}",
            allowed.join(", ")
        )));
    }
    let Some(file) = &args.file else {
        return Err(CliError(
            "no filename supplied for configuration".to_string(),
        ));
    };
    let data = std::fs::read(file).map_err(|e| {
        CliError(format!(
            "failed to read configuration from {:?}: open {}: {}",
            file.display().to_string(),
            file.display(),
            go_io_error(&e)
        ))
    })?;
    if data.is_empty() {
        return Err(CliError("no configuration data read".to_string()));
    }
    let data = if args.config_patch.is_empty() {
        data
    } else {
        use crate::machineconfig::{merge, yaml};
        let patches =
            merge::load_patches(&args.config_patch).map_err(|e| CliError(e.to_string()))?;
        let text = String::from_utf8(data)
            .map_err(|_| CliError("config is not valid UTF-8".to_string()))?;
        let docs = yaml::parse_documents(&text).map_err(|e| CliError(e.to_string()))?;
        merge::apply_patches(docs, &patches)
            .map_err(|e| CliError(e.to_string()))?
            .render()
            .into_bytes()
    };
    let conn = connect(global, args.insecure)?;
    let params = json!({
        "data": base64::engine::general_purpose::STANDARD.encode(&data),
        "mode": args.mode,
        "dry_run": args.dry_run,
        "timeout": args.timeout,
    });
    let replies = call(&conn, "apply_config", params)
        .await
        .map_err(|e| CliError(format!("error applying new configuration: {e}")))?;
    let (ok, error) = split_replies(replies);
    for (_, result) in &ok {
        for w in result
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            eprintln!("WARNING: {}", w.as_str().unwrap_or_default());
        }
        if let Some(details) = result
            .get("mode_details")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            eprintln!("{details}");
        }
    }
    match error {
        Some(e) => Err(CliError(format!("error applying new configuration: {e}"))),
        None => Ok(()),
    }
}

fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

async fn bootstrap(global: &Global, _args: BootstrapArgs) -> CliResult {
    single_node_check(global, "bootstrap")?;
    let conn = connect_authenticated(global)?;
    let replies = call(&conn, "bootstrap", json!({}))
        .await
        .map_err(|e| CliError(format!("error executing bootstrap: {e}")))?;
    match split_replies(replies).1 {
        Some(e) => Err(CliError(format!("error executing bootstrap: {e}"))),
        None => Ok(()),
    }
}

/// Parses Go durations like `20m0s`, `1h`, `500ms`, `30s`.
fn parse_go_duration(text: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError(format!(
            "invalid argument {text:?} for \"--wait-timeout\" flag: time: invalid duration {text:?}"
        ))
    };
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

async fn health(global: &Global, args: HealthArgs) -> CliResult {
    let timeout = parse_go_duration(&args.wait_timeout)?;
    for ip in args
        .control_plane_nodes
        .iter()
        .chain(args.worker_nodes.iter())
    {
        if ip.parse::<IpAddr>().is_err() {
            return Err(CliError(format!("ParseAddr({ip:?}): unable to parse IP")));
        }
    }
    if args.server {
        single_node_check(global, "health")?;
    }
    let conn = connect_authenticated(global)?;
    let mut cps = args.control_plane_nodes.clone();
    if let Some(init) = &args.init_node {
        cps.push(init.clone());
    }
    let params = json!({"control_plane_nodes": cps, "worker_nodes": args.worker_nodes});
    let deadline = tokio::time::Instant::now() + timeout;
    let mut current = 0usize;
    let mut printed_discovery = false;
    let mut last_printed: Option<String> = None;
    loop {
        let snapshot = call(&conn, "health", params.clone()).await;
        let checks = match snapshot {
            Ok(replies) => {
                let (ok, error) = split_replies(replies);
                match (ok.into_iter().next(), error) {
                    (Some((_, v)), None) => Some(v),
                    (_, e) => {
                        last_printed = print_health_progress(None, e, last_printed);
                        None
                    }
                }
            }
            Err(e) => {
                last_printed = print_health_progress(None, Some(e.to_string()), last_printed);
                None
            }
        };
        if let Some(v) = checks {
            if !printed_discovery {
                if let Some(found) = v.get("discovered").and_then(Value::as_array) {
                    let list: Vec<String> = found
                        .iter()
                        .filter_map(|x| x.as_str())
                        .map(|s| format!("{s:?}"))
                        .collect();
                    eprintln!("discovered nodes: [{}]", list.join(" "));
                }
                printed_discovery = true;
            }
            let list: Vec<(String, Option<String>)> = v
                .get("checks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let name = c.get(0)?.as_str()?.to_string();
                    Some((name, c.get(1).and_then(Value::as_str).map(str::to_string)))
                })
                .collect();
            while let Some((name, error)) = list.get(current) {
                if last_printed.is_none() {
                    eprintln!("waiting for {name}: ...");
                    last_printed = Some(String::new());
                }
                match error {
                    None => {
                        eprintln!("waiting for {name}: OK");
                        current += 1;
                        last_printed = None;
                    }
                    Some(err) => {
                        if last_printed.as_deref() != Some(err.as_str()) {
                            eprintln!("waiting for {name}: {err}");
                            last_printed = Some(err.clone());
                        }
                        break;
                    }
                }
            }
            if current >= list.len() && !list.is_empty() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(
                "healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded".to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_health_progress(
    _check: Option<&str>,
    error: Option<String>,
    last: Option<String>,
) -> Option<String> {
    match error {
        Some(e) if last.as_deref() != Some(e.as_str()) => {
            eprintln!("{}", e.trim_end());
            Some(e)
        }
        _ => last,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
}

async fn kubeconfig(global: &Global, args: KubeconfigArgs) -> CliResult {
    single_node_check(global, "kubeconfig")?;
    let conn = connect_authenticated(global)?;
    let replies = call(&conn, "kubeconfig", json!({}))
        .await
        .map_err(|e| CliError(format!("error copying: {e}")))?;
    let (ok, error) = split_replies(replies);
    if let Some(e) = error {
        return Err(CliError(format!("error copying: {e}")));
    }
    let encoded = ok
        .first()
        .and_then(|(_, v)| v.get("kubeconfig"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let mut text = String::from_utf8(bytes)?;
    if let Some(name) = &args.force_context_name {
        let doc: Value = serde_saphyr::from_str(&text)?;
        let old = doc
            .get("current-context")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        text = text
            .replace(&format!("name: {old}\n"), &format!("name: {name}\n"))
            .replace(
                &format!("current-context: {old}\n"),
                &format!("current-context: {name}\n"),
            );
    }

    let local = args.local_path.clone();
    if local.as_deref() == Some(Path::new("-")) && !Path::new("-").exists() {
        print!("{text}");
        return Ok(());
    }
    let mut merge = args.merge;
    let mut path = match &local {
        Some(p) => p.clone(),
        None if merge => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
            }
        },
        None => PathBuf::from("kubeconfig"),
    };
    if path.is_dir() {
        path = path.join("kubeconfig");
    }
    if !path.exists() {
        merge = false;
    } else if !merge && !args.force {
        return Err(CliError(format!(
            "kubeconfig file already exists, use --force to overwrite: {:?}",
            path.display().to_string()
        )));
    }
    if merge {
        let existing = fs_err::read_to_string(&path)?;
        let merged = merge_kubeconfig(&existing, &text, args.force)?;
        write_private(&path, merged.as_bytes())?;
        return Ok(());
    }
    // `-` means stdout once merging is off, even when a file named `-` exists (with --force):
    // cmd/talosctl/cmd/talos/kubeconfig.go@v1.14.0-rc.1 checks `localPath == stdoutOutput`
    // after the existence checks.
    if local.as_deref() == Some(Path::new("-")) {
        print!("{text}");
        return Ok(());
    }
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        fs_err::create_dir_all(parent)?;
    }
    write_private(&path, text.as_bytes())?;
    Ok(())
}

/// Merges a new kubeconfig into an existing one the way go-kubeconfig does: same-named entries
/// with different content are renamed `name-1`, `name-2`… (or overwritten with `force`).
fn merge_kubeconfig(existing: &str, new: &str, force: bool) -> Result<String, CliError> {
    let mut base: Value =
        serde_saphyr::from_str(existing).map_err(|e| CliError(format!("error merging: {e}")))?;
    if !base.is_object() {
        base = json!({"apiVersion": "v1", "kind": "Config"});
    }
    let mut incoming: Value = serde_saphyr::from_str(new)?;
    for (section, label, reference) in [
        ("clusters", "cluster", "cluster"),
        ("users", "auth info", "user"),
        ("contexts", "context", ""),
    ] {
        let mut out = base
            .get(section)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let entries = incoming
            .get(section)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for mut entry in entries {
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let same = out
                .iter()
                .position(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()));
            match same {
                None => out.push(entry),
                Some(i) if out[i] == entry => {}
                Some(i) if force => out[i] = entry,
                Some(_) => {
                    let mut n = 1;
                    let new_name = loop {
                        let candidate = format!("{name}-{n}");
                        if !out.iter().any(|e| {
                            e.get("name").and_then(Value::as_str) == Some(candidate.as_str())
                        }) {
                            break candidate;
                        }
                        n += 1;
                    };
                    println!("renamed {label} {name:?} -> {new_name:?}");
                    entry["name"] = json!(new_name);
                    out.push(entry);
                    if reference.is_empty() {
                        if incoming.get("current-context").and_then(Value::as_str)
                            == Some(name.as_str())
                        {
                            incoming["current-context"] = json!(new_name);
                        }
                    } else if let Some(contexts) =
                        incoming.get_mut("contexts").and_then(Value::as_array_mut)
                    {
                        for ctx in contexts {
                            if ctx
                                .pointer(&format!("/context/{reference}"))
                                .and_then(Value::as_str)
                                == Some(name.as_str())
                            {
                                ctx["context"][reference] = json!(new_name);
                            }
                        }
                    }
                }
            }
        }
        base[section] = Value::Array(out);
    }
    base["current-context"] = incoming
        .get("current-context")
        .cloned()
        .unwrap_or(json!(""));
    serde_saphyr::to_string(&base).map_err(|e| CliError(e.to_string()))
}

fn client_block(short: bool) {
    let tag = crate::client_version();
    println!("Client:");
    if short {
        println!("\tTalos {tag}");
    } else {
        println!("\tTag:         {tag}");
        println!("\tSHA:         00000000");
        println!("\tBuilt:       ");
        println!("\tGo version:  go1.24.0");
        println!("\tOS/Arch:     {}/{}", std::env::consts::OS, go_arch());
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn version(global: &Global, args: VersionArgs) -> CliResult {
    if !args.json {
        client_block(args.short);
    }
    if args.client {
        return Ok(());
    }
    let conn = connect(global, args.insecure)?;
    if !args.json {
        println!("Server:");
    }
    let _ = std::io::stdout().flush();
    let replies = call(&conn, "version", json!({}))
        .await
        .map_err(|e| CliError(format!("error getting version: {e}")))?;
    let (ok, error) = split_replies(replies);
    if ok.is_empty() {
        return Err(CliError(format!(
            "error getting version: {}",
            error.unwrap_or_default()
        )));
    }
    if let Some(e) = error {
        eprintln!("WARNING: {}", e.trim_end());
    }
    for (node, v) in ok {
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if args.json {
            println!("{}", json!({"metadata": {"hostname": node}, "version": v}));
            continue;
        }
        if !node.is_empty() {
            println!("\tNODE:        {node}");
        }
        println!("\tTag:         {}", field("tag"));
        println!("\tSHA:         {}", field("sha"));
        println!("\tBuilt:       {}", field("built"));
        println!("\tGo version:  {}", field("go_version"));
        println!("\tOS/Arch:     {}/{}", field("os"), field("arch"));
        println!("\tEnabled:     RBAC");
    }
    Ok(())
}

/// `WARNING: <node>: server version X is older than client version Y` (never fails).
async fn client_version_check(conn: &Connection) {
    let client = crate::client_version();
    let Some(client_v) = wire::parse_version(&client) else {
        return;
    };
    let Ok(replies) = call(conn, "version", json!({})).await else {
        return;
    };
    let older: Vec<String> = replies
        .iter()
        .filter(|r| r.error.is_none())
        .filter_map(|r| {
            let tag = r.result.get("tag")?.as_str()?;
            (wire::parse_version(tag)? < client_v).then(|| {
                format!(
                    "{}: server version {tag} is older than client version {client}",
                    r.node
                )
            })
        })
        .collect();
    if !older.is_empty() {
        eprintln!("WARNING: {}", older.join(", "));
    }
}

fn display_type(canonical: &str) -> &'static str {
    match canonical {
        "LinkStatuses.net.talos.dev" => "LinkStatus",
        "Members.cluster.talos.dev" => "Member",
        "ExtensionStatuses.runtime.talos.dev" => "ExtensionStatus",
        _ => "MachineStatus",
    }
}

fn extra_columns(canonical: &str) -> &'static [(&'static str, &'static str)] {
    match canonical {
        "LinkStatuses.net.talos.dev" => &[
            ("ALIAS", "/alias"),
            ("TYPE", "/type"),
            ("KIND", "/kind"),
            ("HW ADDR", "/hardwareAddr"),
            ("OPER STATE", "/operationalState"),
            ("LINK STATE", "/linkState"),
        ],
        "Members.cluster.talos.dev" => &[
            ("HOSTNAME", "/hostname"),
            ("MACHINE TYPE", "/machineType"),
            ("OS", "/operatingSystem"),
            ("ADDRESSES", "/addresses"),
        ],
        "ExtensionStatuses.runtime.talos.dev" => {
            &[("NAME", "/metadata/name"), ("VERSION", "/metadata/version")]
        }
        _ => &[("STAGE", "/stage"), ("READY", "/status/ready")],
    }
}

/// k8s-jsonpath-like rendering of a value in a table cell.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Go tabwriter with minimum padding 3: every column but the last is padded to its widest cell + 3.
fn tabwrite(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            line.push_str(c);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A YAML emitter with Talos' style: 4-space indentation, `[]`/`{}` for empty collections.
fn to_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(k, _)| field_rank(k));
            for (k, v) in entries {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        to_yaml(v, indent + 4, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        to_yaml(v, indent + 4, out);
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", yaml_scalar(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        to_yaml(item, indent + 2, &mut inner);
                        let inner = inner.trim_start().to_string();
                        out.push_str(&format!("{pad}- {inner}"));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", yaml_scalar(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", yaml_scalar(other))),
    }
}

/// Go struct field order of the resource specs the simulator serves (YAML keeps it; JSON sorts).
const SPEC_FIELD_ORDER: &[&str] = &[
    "alias",
    "altNames",
    "index",
    "type",
    "linkIndex",
    "flags",
    "hardwareAddr",
    "permanentAddr",
    "broadcastAddr",
    "mtu",
    "queueDisc",
    "masterIndex",
    "operationalState",
    "kind",
    "slaveKind",
    "busPath",
    "pciID",
    "driver",
    "driverVersion",
    "firmwareVersion",
    "productID",
    "vendorID",
    "product",
    "vendor",
    "linkState",
    "speedMbit",
    "port",
    "duplex",
    "nodeId",
    "addresses",
    "hostname",
    "machineType",
    "operatingSystem",
    "controlPlane",
    "image",
    "metadata",
    "stage",
    "status",
    "ready",
    "unmetConditions",
    "name",
    "reason",
    "version",
    "author",
    "description",
    "compatibility",
    "talos",
];

fn field_rank(key: &str) -> (usize, String) {
    let rank = SPEC_FIELD_ORDER
        .iter()
        .position(|k| *k == key)
        .unwrap_or(SPEC_FIELD_ORDER.len());
    (rank, key.to_string())
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.ends_with(' ')
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
                )
                && s.parse::<f64>().is_err();
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn metadata_yaml(meta: &Value) -> String {
    let mut out = String::from("metadata:\n");
    for key in [
        "namespace",
        "type",
        "id",
        "version",
        "owner",
        "phase",
        "created",
        "updated",
    ] {
        if let Some(v) = meta.get(key) {
            out.push_str(&format!("    {key}: {}\n", yaml_scalar(v)));
        }
    }
    out
}

async fn get(global: &Global, args: GetArgs) -> CliResult {
    let output = args.output.as_str();
    if !matches!(output, "table" | "yaml" | "json") {
        return Err(CliError(format!(
            "output format {output:?} is not supported"
        )));
    }
    if args.watch {
        return Err(CliError(
            "--watch is not supported by the simulator".to_string(),
        ));
    }
    let conn = connect(global, args.insecure)?;
    if !args.insecure {
        client_version_check(&conn).await;
    }
    let params = json!({"type": args.resource_type, "id": args.id, "namespace": args.namespace});
    let replies = call(&conn, "get", params)
        .await
        .map_err(|e| CliError(e.to_string()))?;
    let (ok, error) = split_replies(replies);
    let canonical = crate::node::canonical_type(&args.resource_type);
    let mut stdout = String::new();
    let mut rows = Vec::new();
    if output == "table" {
        let mut header: Vec<String> = ["NODE", "NAMESPACE", "TYPE", "ID", "VERSION"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(c) = canonical {
            header.extend(extra_columns(c).iter().map(|(h, _)| h.to_string()));
        }
        rows.push(header);
    }
    let mut first = true;
    for (node, result) in &ok {
        for res in result
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let meta = res.get("metadata").cloned().unwrap_or(Value::Null);
            let spec = res.get("spec").cloned().unwrap_or(Value::Null);
            match output {
                "json" => {
                    let object = json!({"metadata": meta, "node": node, "spec": spec});
                    let mut buf = Vec::new();
                    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
                    serde::Serialize::serialize(&object, &mut ser)?;
                    stdout.push_str(&String::from_utf8_lossy(&buf));
                    stdout.push('\n');
                }
                "yaml" => {
                    if !first {
                        stdout.push_str("---\n");
                    }
                    stdout.push_str(&format!("node: {}\n", yaml_scalar(&json!(node))));
                    stdout.push_str(&metadata_yaml(&meta));
                    stdout.push_str("spec:\n");
                    to_yaml(&spec, 4, &mut stdout);
                }
                _ => {
                    let typ = meta.get("type").and_then(Value::as_str).unwrap_or_default();
                    let mut row = vec![
                        node.clone(),
                        cell(meta.get("namespace")),
                        display_type(typ).to_string(),
                        cell(meta.get("id")),
                        cell(meta.get("version")),
                    ];
                    for (_, pointer) in extra_columns(typ) {
                        row.push(cell(spec.pointer(pointer)));
                    }
                    rows.push(row);
                }
            }
            first = false;
        }
    }
    if output == "table" {
        stdout = tabwrite(&rows);
    }
    print!("{stdout}");
    let _ = std::io::stdout().flush();
    match error {
        Some(e) => Err(CliError(e)),
        None => Ok(()),
    }
}

async fn etcd_members(global: &Global) -> CliResult {
    let conn = connect_authenticated(global)?;
    let replies = call(&conn, "etcd_members", json!({}))
        .await
        .map_err(|e| CliError(format!("error getting members: {e}")))?;
    let (ok, error) = split_replies(replies);
    if let Some(e) = error {
        return Err(CliError(format!("error getting members: {e}")));
    }
    let mut rows = vec![
        [
            "NODE",
            "ID",
            "HOSTNAME",
            "PEER URLS",
            "CLIENT URLS",
            "LEARNER",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for (node, result) in ok {
        for m in result
            .get("members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let urls = |k: &str| {
                m.get(k)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            rows.push(vec![
                node.clone(),
                format!(
                    "{:016x}",
                    m.get("id").and_then(Value::as_u64).unwrap_or_default()
                ),
                cell(m.get("hostname")),
                urls("peer_urls"),
                urls("client_urls"),
                cell(m.get("is_learner")),
            ]);
        }
    }
    print!("{}", tabwrite(&rows));
    Ok(())
}

/// Is `tag` inside talosctl's new-upgrade-API range `>1.13.0-alpha.2 <2.0.0`.
/// upstream: cmd/talosctl/cmd/talos/upgrade.go@v1.13.9 talosUpgradeAPIVersionRange
fn lifecycle_upgrade_api(tag: &str) -> bool {
    let Some((major, minor, _)) = wire::parse_version(tag) else {
        return false;
    };
    let pre = tag.split_once('-').map(|(_, p)| p).unwrap_or("");
    if (major, minor) == (1, 13) && matches!(pre, "alpha.0" | "alpha.1" | "alpha.2") {
        return false;
    }
    major == 1 && minor >= 13
}

async fn upgrade(global: &Global, mut args: UpgradeArgs) -> CliResult {
    let client = crate::client_version();
    let modern = wire::version_at_least(&client, 1, 13);
    // upstream: cmd/talosctl/cmd/talos/upgrade.go@v1.14.0-rc.1 no longer defines --insecure.
    if args.insecure && wire::version_at_least(&client, 1, 14) {
        return Err(CliError("unknown flag: --insecure".to_string()));
    }
    if modern {
        // pflag prints MarkDeprecated notices on stderr while parsing (upgrade.go@v1.13.9).
        for (used, name) in [
            (args.force, "force"),
            (args.insecure, "insecure"),
            (args.preserve, "preserve"),
            (args.stage, "stage"),
        ] {
            if used {
                eprintln!(
                    "Flag --{name} has been deprecated, legacy flag for MachineService.Upgrade fallback, to be removed in Talos 1.18"
                );
            }
        }
        if args.debug || args.drain {
            args.wait = true;
        }
    }
    if args.wait && args.insecure {
        return Err(CliError(
            "cannot use --wait and --insecure together".to_string(),
        ));
    }
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| format!("ghcr.io/siderolabs/installer:{client}"));
    if !modern {
        return upgrade_legacy(global, &args, &image).await;
    }
    if args.no_reboot {
        args.drain = false;
    }
    if args.legacy {
        eprintln!(
            "WARNING: Forcing use of legacy upgrade method. This flag is deprecated and will be removed in Talos 1.18."
        );
        return upgrade_legacy(global, &args, &image).await;
    }
    let conn = connect_authenticated(global)?;
    let replies = call(&conn, "version", json!({})).await.map_err(|e| {
        CliError(format!(
            "error checking Talos version compatibility: error getting server versions: {e}"
        ))
    })?;
    let (versions, error) = split_replies(replies);
    if let Some(e) = error {
        return Err(CliError(format!(
            "error checking Talos version compatibility: error getting server versions: {e}"
        )));
    }
    if versions.iter().any(|(_, v)| {
        !lifecycle_upgrade_api(v.get("tag").and_then(Value::as_str).unwrap_or_default())
    }) {
        eprintln!("New upgrade API is not available, falling back to legacy");
        return upgrade_legacy(global, &args, &image).await;
    }
    let nodes = conn.nodes.clone();
    let per_node = |n: &str| Connection {
        tls: conn.tls.clone(),
        endpoints: conn.endpoints.clone(),
        nodes: vec![n.to_string()],
    };
    // Image pull, then LifecycleService.Upgrade (install only), reported per node.
    let pulled: Vec<String> = nodes
        .iter()
        .map(|n| format!("{n}: pulled image {image}"))
        .collect();
    eprintln!("{}", pulled.join("\n"));
    let replies = call(
        &conn,
        "upgrade",
        json!({"image": image, "install_only": true}),
    )
    .await
    .map_err(|e| {
        CliError(format!(
            "error during upgrade: error from node {}: {e}",
            nodes.join(",")
        ))
    })?;
    let (done, error) = split_replies(replies);
    if let Some(e) = error {
        return Err(CliError(format!("error during upgrade: {e}")));
    }
    let completed: Vec<String> = done
        .iter()
        .map(|(n, _)| format!("{n}: upgrade completed"))
        .collect();
    eprintln!("{}", completed.join("\n"));
    // Drain: the kubeconfig comes from the endpoint (no node metadata), so a worker as its own
    // endpoint fails here (upstream: cmd/talosctl/cmd/talos/drain.go@v1.13.9 drainNodes,
    // cmd/talosctl/pkg/talos/kubeclient/kubeclient.go@v1.13.9 FromTalosClient).
    let mut names = Vec::new();
    if args.drain {
        let endpoint_only = Connection {
            tls: conn.tls.clone(),
            endpoints: conn.endpoints.clone(),
            nodes: Vec::new(),
        };
        let kubeconfig_error = |e: String| {
            CliError(format!(
                "error creating Kubernetes client for drain: error fetching kubeconfig from Talos API: {e}"
            ))
        };
        let replies = call(&endpoint_only, "kubeconfig", json!({}))
            .await
            .map_err(|e| kubeconfig_error(e.to_string()))?;
        if let Some(e) = split_replies(replies).1 {
            return Err(kubeconfig_error(e));
        }
        for n in &nodes {
            let replies = call(&per_node(n), "nodename", json!({}))
                .await
                .map_err(|e| {
                    CliError(format!("error resolving Kubernetes node name for {n}: {e}"))
                })?;
            let (ok, error) = split_replies(replies);
            if let Some(e) = error {
                return Err(CliError(format!(
                    "error resolving Kubernetes node name for {n}: {e}"
                )));
            }
            let name = ok
                .first()
                .and_then(|(_, v)| v.get("nodename"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // upstream: cmd/talosctl/pkg/talos/nodedrain/nodedrain.go@v1.13.9 messages.
            for m in [
                "cordoning node",
                "node cordoned",
                "draining node",
                "node drained",
            ] {
                eprintln!("{name}: {m}");
            }
            names.push(name);
        }
    }
    if args.no_reboot {
        return Ok(());
    }
    let replies = call(&conn, "reboot", json!({}))
        .await
        .map_err(|e| CliError(format!("error during upgrade: {e}")))?;
    if let Some(e) = split_replies(replies).1 {
        return Err(CliError(format!("error during upgrade: {e}")));
    }
    if args.wait {
        let wanted = crate::node::config::image_tag(&image)
            .unwrap_or_default()
            .to_string();
        wait_for_version(&conn, &wanted, &args.timeout, "error during upgrade").await?;
    }
    for name in &names {
        for m in [
            "waiting for node to become Ready",
            "uncordoning node",
            "node uncordoned",
        ] {
            eprintln!("{name}: {m}");
        }
    }
    Ok(())
}

async fn wait_for_version(conn: &Connection, wanted: &str, timeout: &str, what: &str) -> CliResult {
    let deadline = tokio::time::Instant::now() + parse_go_duration(timeout)?;
    loop {
        if let Ok(replies) = call(conn, "version", json!({})).await
            && replies.iter().all(|r| {
                r.error.is_none() && r.result.get("tag").and_then(Value::as_str) == Some(wanted)
            })
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(format!("{what}: context deadline exceeded")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// MachineService.Upgrade (clients before v1.13, nodes before v1.13.0-alpha.3, `--legacy`).
async fn upgrade_legacy(global: &Global, args: &UpgradeArgs, image: &str) -> CliResult {
    let conn = connect(global, args.insecure)?;
    if !args.insecure {
        client_version_check(&conn).await;
    }
    let replies = call(&conn, "upgrade", json!({"image": image}))
        .await
        .map_err(|e| CliError(format!("error performing upgrade: {e}")))?;
    let (ok, error) = split_replies(replies);
    if let Some(e) = error {
        return Err(CliError(format!("error performing upgrade: {e}")));
    }
    if !args.wait {
        let mut rows = vec![vec![
            "NODE".to_string(),
            "ACK".to_string(),
            "STARTED".to_string(),
        ]];
        for (node, r) in &ok {
            rows.push(vec![node.clone(), cell(r.get("ack")), rfc3339_now()]);
        }
        print!("{}", tabwrite(&rows));
        return Ok(());
    }
    let wanted = crate::node::config::image_tag(image)
        .unwrap_or_default()
        .to_string();
    wait_for_version(&conn, &wanted, &args.timeout, "error performing upgrade").await
}

async fn reset(global: &Global, args: ResetArgs) -> CliResult {
    if args.wait && args.insecure {
        return Err(CliError(
            "cannot use --wait and --insecure together".to_string(),
        ));
    }
    if !matches!(
        args.wipe_mode.as_str(),
        "all" | "system-disk" | "user-disks"
    ) {
        return Err(CliError(format!(
            "invalid argument {:?} for \"--wipe-mode\" flag: must be one of: all, system-disk, user-disks",
            args.wipe_mode
        )));
    }
    let conn = connect(global, args.insecure)?;
    let params =
        json!({"graceful": args.graceful, "reboot": args.reboot, "wipe_mode": args.wipe_mode});
    let replies = call(&conn, "reset", params)
        .await
        .map_err(|e| CliError(format!("error executing reset: {e}")))?;
    if let Some(e) = split_replies(replies).1 {
        return Err(CliError(format!("error executing reset: {e}")));
    }
    if !args.wait {
        return Ok(());
    }
    // Wait until the node has left the authenticated API (it reboots or powers off).
    let deadline = tokio::time::Instant::now() + parse_go_duration(&args.timeout)?;
    loop {
        match call(&conn, "version", json!({})).await {
            Err(_) => return Ok(()),
            Ok(replies) if replies.iter().any(|r| r.error.is_some()) => return Ok(()),
            Ok(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError(
                "error executing reset: context deadline exceeded".to_string(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn upgrade_k8s(global: &Global, args: UpgradeK8sArgs) -> CliResult {
    single_node_check(global, "upgrade-k8s")?;
    let conn = connect_authenticated(global)?;
    client_version_check(&conn).await;
    let to = args.to.clone().unwrap_or_else(default_kubernetes_version);
    let to = to.trim_start_matches('v').to_string();
    if args.dry_run {
        println!("dry run: would upgrade Kubernetes to version {to}");
        return Ok(());
    }
    let params = json!({"to": to, "from": args.from, "upgrade_kubelet": args.upgrade_kubelet});
    let replies = call(&conn, "upgrade_k8s", params)
        .await
        .map_err(|e| CliError(format!("error upgrading Kubernetes: {e}")))?;
    let (ok, error) = split_replies(replies);
    if let Some(e) = error {
        return Err(CliError(format!("error upgrading Kubernetes: {e}")));
    }
    let result = ok.first().map(|(_, r)| r.clone()).unwrap_or_default();
    let from = result
        .get("from")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if args.from.is_none() {
        println!("automatically detected the lowest Kubernetes version {from}");
    }
    // upstream: pkg/cluster/kubernetes/talos_managed.go@v1.14.0-rc.1 Upgrade (path check).
    if let Some(e) = result.get("error").and_then(Value::as_str) {
        return Err(CliError(e.to_string()));
    }
    println!("updating Kubernetes from version {from} to {to}");
    Ok(())
}

/// talosctl's built-in default Kubernetes version for its own release line.
fn default_kubernetes_version() -> String {
    let client = crate::client_version();
    let v = wire::parse_version(&client).unwrap_or((1, 11, 0));
    match (v.0, v.1) {
        (1, 7) => "1.30.5",
        (1, 8) | (1, 9) => "1.32.4",
        (1, 10) | (1, 11) => "1.34.1",
        (1, 12) => "1.35.4",
        _ => "1.36.3",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multierror_matches_go_rendering() {
        let e = RpcError::new("AlreadyExists", "etcd data directory is not empty");
        assert_eq!(
            multierror(&[("10.5.0.2".into(), e)]),
            "1 error occurred:\n\t* 10.5.0.2: rpc error: code = AlreadyExists desc = etcd data directory is not empty\n\n"
        );
    }

    #[test]
    fn unknown_flags_exit_1() {
        assert_eq!(main(vec!["bootstrap".into(), "--bogus".into()]), 1);
        assert_eq!(main(vec!["version".into(), "--help".into()]), 0);
    }

    #[test]
    fn appends_default_port() {
        assert_eq!(with_port("127.0.0.1"), "127.0.0.1:50000");
        assert_eq!(with_port("127.0.0.1:123"), "127.0.0.1:123");
        assert_eq!(with_port("::1"), "[::1]:50000");
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(
            parse_go_duration("20m0s").unwrap(),
            Duration::from_secs(1200)
        );
        assert_eq!(
            parse_go_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_go_duration("abc").is_err());
    }

    #[test]
    fn tabwriter_pads_three_spaces() {
        let rows = vec![
            vec!["NODE".into(), "ID".into()],
            vec!["127.0.0.10".into(), "x".into()],
        ];
        assert_eq!(tabwrite(&rows), "NODE         ID\n127.0.0.10   x\n");
    }

    #[test]
    fn yaml_quotes_ambiguous_strings() {
        assert_eq!(yaml_scalar(&json!("")), "\"\"");
        assert_eq!(yaml_scalar(&json!("ether")), "ether");
        assert_eq!(yaml_scalar(&json!("true")), "\"true\"");
    }

    #[test]
    fn kubeconfig_merge_renames_conflicts() {
        let a = "apiVersion: v1\nkind: Config\nclusters:\n  - name: c\n    cluster:\n      server: https://a:6443\ncontexts:\n  - name: admin@c\n    context:\n      cluster: c\n      user: admin@c\nusers:\n  - name: admin@c\n    user: {}\ncurrent-context: admin@c\n";
        let b = a.replace("https://a:6443", "https://b:6443");
        let merged = merge_kubeconfig(a, &b, false).unwrap();
        let v: Value = serde_saphyr::from_str(&merged).unwrap();
        let names: Vec<&str> = v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c", "c-1"]);
    }
}
