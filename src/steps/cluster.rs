//! The steps that touch the cluster: `apply/<node>`, `upgrade/<node>`, `ready/<node>`,
//! `bootstrap`, `health`, `upgrade-k8s` and `verify` (the kubeconfig they use is a pure build
//! step, derived from the secrets: `crate::steps::configs`). Each leaves a receipt (deterministic bytes, so an unchanged step
//! is never repeated) and records what the cluster must never forget in the lock file as it
//! happens: the config applied to each node, and the one bootstrap.
//!
//! Runbook traps avoided: bootstrap runs on exactly one node and `AlreadyExists` means "done",
//! never "try another node" (8); membership is checked with etcd members and Kubernetes nodes,
//! not `get members`, which is empty with discovery off (4).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::derivation::{StepId, Tool};
use crate::digest::{Digest, domain};
use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::exec::{self, ExecError};
use crate::lockfile::{BootstrapLock, LockFile, NodeLock};
use crate::profile::model::Version as KubeVersion;
use crate::profile::{Node, Profile, Role};
use crate::secrets::SecretBytes;
use crate::steps::configs::talosctl_with_secrets;
use crate::store::now_rfc3339;

/// Timing knobs (environment overrides for tests and slow labs).
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long to wait for a node to come back after apply (TALIX_READY_TIMEOUT_S, 600).
    pub ready_timeout: Duration,
    /// How long bootstrap retries `FailedPrecondition` (TALIX_BOOTSTRAP_TIMEOUT_S, 300).
    pub bootstrap_timeout: Duration,
    /// `health --wait-timeout` (TALIX_HEALTH_TIMEOUT_S, 600).
    pub health_timeout: Duration,
    /// Poll interval (TALIX_POLL_MS, 1000).
    pub poll: Duration,
}

impl Timing {
    /// From the environment; a value that is not a whole number is an error naming the variable.
    pub fn from_env() -> Result<Self, String> {
        let number = |var: &str, default: u64| -> Result<u64, String> {
            match std::env::var(var) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{var}={v:?} is not a whole number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Self {
            ready_timeout: Duration::from_secs(number("TALIX_READY_TIMEOUT_S", 600)?),
            bootstrap_timeout: Duration::from_secs(number("TALIX_BOOTSTRAP_TIMEOUT_S", 300)?),
            health_timeout: Duration::from_secs(number("TALIX_HEALTH_TIMEOUT_S", 600)?),
            poll: Duration::from_millis(number("TALIX_POLL_MS", 1000)?),
        })
    }
}

/// The lock file, shared by the steps of one run and saved after every change, so a run that
/// fails half-way still records what it did (a bootstrap above all).
///
/// Saves are group-committed: a change returns only once a save that contains it is on disk
/// (so a write-ahead record is durable before its side effect starts), but changes made while
/// a save is in flight share the next save instead of queueing one save each. With 60 nodes
/// applied at once, 120 records used to be 120 serialised whole-file saves (issue 10).
#[derive(Clone)]
pub struct SharedLock {
    pub workspace: crate::workspace::Workspace,
    state: Arc<(Mutex<LockState>, std::sync::Condvar)>,
}

struct LockState {
    lock: LockFile,
    /// Changes made so far (a counter), and the last one a finished save contained.
    changed: u64,
    saved: u64,
    /// A save is in flight (its writer does not hold the mutex while writing).
    saving: bool,
    /// The last failed save: every change up to this one failed with this message.
    failed: Option<(u64, String)>,
    /// How many saves were written (for tests).
    saves: u64,
}

impl SharedLock {
    pub fn new(workspace: crate::workspace::Workspace, lock: LockFile) -> Self {
        Self {
            workspace,
            state: Arc::new((
                Mutex::new(LockState {
                    lock,
                    changed: 0,
                    saved: 0,
                    saving: false,
                    failed: None,
                    saves: 0,
                }),
                std::sync::Condvar::new(),
            )),
        }
    }
    fn state(&self) -> std::sync::MutexGuard<'_, LockState> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn get(&self) -> LockFile {
        self.state().lock.clone()
    }
    /// How many times the file was written by this run.
    pub fn saves(&self) -> u64 {
        self.state().saves
    }
    pub fn update(
        &self,
        cx: &BuildContext<'_>,
        f: impl FnOnce(&mut LockFile),
    ) -> Result<(), StepError> {
        self.update_with(f).map_err(|e| cx.fail(e.to_string()))
    }
    /// Change the lock file and save it (only when something changed); returns once a save
    /// holding the change is on disk. Every writer of a run goes through this one state, so
    /// concurrent steps never lose each other's records.
    pub fn update_with(
        &self,
        f: impl FnOnce(&mut LockFile),
    ) -> Result<(), crate::lockfile::LockFileError> {
        let cvar = &self.state.1;
        let mut st = self.state();
        let before = st.lock.clone();
        f(&mut st.lock);
        if st.lock == before {
            return Ok(());
        }
        st.changed += 1;
        let mine = st.changed;
        loop {
            if let Some((upto, message)) = &st.failed
                && *upto >= mine
                && st.saved < mine
            {
                return Err(crate::lockfile::LockFileError::Save(message.clone()));
            }
            if st.saved >= mine {
                return Ok(());
            }
            if st.saving {
                st = cvar.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // This thread writes everything changed so far, without holding the mutex.
            st.saving = true;
            let snapshot = st.lock.clone();
            let upto = st.changed;
            drop(st);
            let result = snapshot.save(&self.workspace);
            st = self.state();
            st.saving = false;
            st.saves += 1;
            match result {
                Ok(()) => st.saved = st.saved.max(upto),
                Err(e) => {
                    let message = e.to_string();
                    st.failed = Some((upto, message));
                    cvar.notify_all();
                    return Err(e);
                }
            }
            cvar.notify_all();
        }
    }
}

/// What the cluster steps share.
#[derive(Clone)]
pub struct ClusterEnv {
    pub lock: SharedLock,
    /// The plaintext talosconfig the operator asked for (`<config_dir>/talosconfig`, 0600).
    pub talosconfig: PathBuf,
    /// `<config_dir>/kubeconfig` (0600), written by `up` after the kubeconfig step.
    pub kubeconfig: PathBuf,
    pub timing: Timing,
    /// How many nodes are worked on at once (`up --jobs`), also inside one step (verify).
    pub jobs: usize,
    /// Held while a node is upgraded: upgrades roll, one node at a time, even when nodes are
    /// otherwise handled in parallel (etcd keeps its quorum; workloads move one node at a time).
    pub rolling: Arc<Mutex<()>>,
    /// Nodes seen answering the authenticated API in this run: name -> (address, Talos
    /// version). `ready/<node>` right after `upgrade/<node>` uses it instead of asking again.
    pub seen: Arc<Mutex<BTreeMap<String, (IpAddr, String)>>>,
    /// This run created the cluster (`talosctl bootstrap` succeeded, not `AlreadyExists`).
    pub bootstrapped_now: Arc<std::sync::atomic::AtomicBool>,
}

/// The `-e` value for a node's own API (see [`crate::address`]).
pub(crate) fn endpoint(profile: &Profile, ip: IpAddr) -> String {
    crate::address::endpoint_arg(ip, profile.talos.api_port)
}

pub(crate) fn node_of<'a>(cx: &'a BuildContext<'_>) -> Result<&'a Node, StepError> {
    let name = cx
        .step
        .id
        .node()
        .ok_or_else(|| cx.fail("per-node step without a node"))?;
    cx.profile
        .node(name)
        .ok_or_else(|| cx.fail(format!("no node {name} in the profile")))
}

pub(crate) fn first_controlplane<'a>(cx: &'a BuildContext<'_>) -> Result<&'a Node, StepError> {
    cx.profile
        .controlplanes()
        .next()
        .ok_or_else(|| cx.fail("no control-plane node"))
}

/// `talosctl --talosconfig T -e <node> -n <node> ARGS` (authenticated, the node as its own
/// endpoint), capturing output.
fn talosctl_auth(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    node: IpAddr,
    args: &[&str],
) -> Result<Output, ExecError> {
    talosctl_via(cx, env, node, node, args)
}

/// `talosctl --talosconfig T -e <endpoint> -n <node> ARGS`: `-n` is always the bare address
/// (apid forwards to port 50000 of the node), `-e` carries the API port when it is not 50000.
fn talosctl_via(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    endpoint_ip: IpAddr,
    node: IpAddr,
    args: &[&str],
) -> Result<Output, ExecError> {
    let program = exec::locate(Tool::Talosctl)?;
    let argv = auth_argv(cx.profile, &env.talosconfig, endpoint_ip, node, args);
    exec::run_capture(&program, argv, |_| {})
}

/// The argv of [`talosctl_via`]; `up --dry-run` prints the same.
pub fn auth_argv(
    profile: &Profile,
    talosconfig: &std::path::Path,
    endpoint_ip: IpAddr,
    node: IpAddr,
    args: &[&str],
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "--talosconfig".into(),
        talosconfig.display().to_string(),
        "-e".into(),
        endpoint(profile, endpoint_ip),
        "-n".into(),
        crate::address::node_arg(node),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// Where an apply-config goes: a machine in maintenance mode (the node is the endpoint,
/// `--insecure`), or a configured node through this cluster's talosconfig.
pub enum ApplyTarget<'a> {
    /// `-n <endpoint>` (address with the API port, or `<discovered>` in a dry run).
    Maintenance {
        endpoint: &'a str,
    },
    Configured {
        endpoint: &'a str,
        node: &'a str,
    },
}

/// The argv of an apply-config of the config piped in as `file`.
pub fn apply_args(
    talosconfig: &std::path::Path,
    target: &ApplyTarget<'_>,
    file: &str,
) -> Vec<String> {
    let mut args = vec![
        "apply-config".to_string(),
        "--file".into(),
        file.to_string(),
    ];
    match target {
        ApplyTarget::Maintenance { endpoint } => {
            // Maintenance mode: the node is the endpoint.
            args.extend(["-n".into(), endpoint.to_string(), "--insecure".into()]);
        }
        ApplyTarget::Configured { endpoint, node } => args.extend([
            "--talosconfig".into(),
            talosconfig.display().to_string(),
            "-e".into(),
            endpoint.to_string(),
            "-n".into(),
            node.to_string(),
        ]),
    }
    args
}

/// The receipt of `apply/<node>`: what is on the node, not how it got there.
pub fn apply_receipt(node: &str, config: Digest) -> BTreeMap<String, BuiltOutput> {
    receipt(json!({"node": node, "config": config}))
}

/// The receipt of `ready/<node>`, answering with Talos `talos`.
pub fn ready_receipt(node: &Node, talos: &str) -> BTreeMap<String, BuiltOutput> {
    receipt(json!({"node": node.name, "address": node.ip.to_string(), "talos": talos}))
}

/// The receipt of `upgrade/<node>`.
pub fn upgrade_receipt(node: &str, talos: &str) -> BTreeMap<String, BuiltOutput> {
    receipt(json!({"node": node, "talos": talos}))
}

/// The receipt of `bootstrap`.
pub fn bootstrap_receipt(node: &str, secrets: Digest) -> BTreeMap<String, BuiltOutput> {
    receipt(json!({"node": node, "secrets": secrets}))
}

/// The receipt of `upgrade-k8s`.
pub fn upgrade_k8s_receipt(kubernetes: &str) -> BTreeMap<String, BuiltOutput> {
    receipt(json!({"kubernetes": kubernetes}))
}

/// `talosctl bootstrap`.
pub const BOOTSTRAP_ARGS: &[&str] = &["bootstrap"];
/// `talosctl etcd members` (trap 4: not `get members`).
pub const ETCD_MEMBERS_ARGS: &[&str] = &["etcd", "members"];
/// `talosctl get extensions -o json`.
pub const GET_EXTENSIONS_ARGS: &[&str] = &["get", "extensions", "-o", "json"];
/// `talosctl version`: whether (and with which Talos) a node answers.
pub const VERSION_ARGS: &[&str] = &["version"];

/// `talosctl upgrade --image <image>`.
pub fn upgrade_args(image: &str) -> Vec<String> {
    vec!["upgrade".into(), "--image".into(), image.into()]
}

/// `talosctl upgrade-k8s --to <version>`.
pub fn upgrade_k8s_args(to: &str) -> Vec<String> {
    vec!["upgrade-k8s".into(), "--to".into(), to.into()]
}

/// The control-plane and worker lists `health` is given, comma-separated.
pub fn health_lists(profile: &Profile) -> (String, String) {
    let list = |role: Role| {
        profile
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    (list(Role::Controlplane), list(Role::Worker))
}

/// `talosctl health` with explicit node lists.
pub fn health_args(profile: &Profile, timing: &Timing) -> Vec<String> {
    let (cps, workers) = health_lists(profile);
    let mut args = vec![
        "health".to_string(),
        "--wait-timeout".into(),
        format!("{}s", timing.health_timeout.as_secs()),
        "--control-plane-nodes".into(),
        cps,
    ];
    if !workers.is_empty() {
        args.extend(["--worker-nodes".into(), workers]);
    }
    args
}

/// The receipt of `health`.
pub fn health_receipt(profile: &Profile) -> BTreeMap<String, BuiltOutput> {
    let (cps, workers) = health_lists(profile);
    receipt(json!({"controlplane": cps, "workers": workers, "result": "healthy"}))
}

/// `kubectl --kubeconfig K get --raw /api/v1/nodes`: the `NodeList` `get nodes -o json` prints,
/// without kubectl's API discovery round trips first.
pub fn kubectl_nodes_args(kubeconfig: &std::path::Path) -> Vec<String> {
    let k = kubeconfig.display().to_string();
    ["--kubeconfig", &k, "get", "--raw", "/api/v1/nodes"]
        .map(String::from)
        .to_vec()
}

/// `kubectl --kubeconfig K -n kube-system get pods -o json`.
pub fn kubectl_pods_args(kubeconfig: &std::path::Path) -> Vec<String> {
    let k = kubeconfig.display().to_string();
    [
        "--kubeconfig",
        &k,
        "-n",
        "kube-system",
        "get",
        "pods",
        "-o",
        "json",
    ]
    .map(String::from)
    .to_vec()
}

/// A spinner on stderr while waiting on the cluster (drawn only when stderr is a terminal),
/// cleared when dropped, on success and on error alike.
pub struct Spinner(indicatif::ProgressBar);

impl Spinner {
    pub fn start(message: String) -> Self {
        if crate::progress::installed() {
            // The per-node board shows what is going on; a second live line would tear it.
            return Self(indicatif::ProgressBar::hidden());
        }
        if !spinner_allowed(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("TERM").as_deref(),
        ) {
            eprintln!("{message} ...");
            return Self(indicatif::ProgressBar::hidden());
        }
        let pb = indicatif::ProgressBar::new_spinner().with_message(message);
        pb.enable_steady_tick(Duration::from_millis(120));
        Self(pb)
    }
}

/// Whether a spinner may be drawn: stderr is a terminal that understands cursor movement.
/// (NO_COLOR is about colors; the spinner has none, so it stays.)
fn spinner_allowed(stderr_is_terminal: bool, term: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && term.is_none_or(|t| t != "dumb")
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Whether the node at `ip` answers the authenticated API with this cluster's talosconfig.
pub fn answers_authenticated(cx: &BuildContext<'_>, env: &ClusterEnv, ip: IpAddr) -> bool {
    answers_with_talosconfig(cx.profile, &env.talosconfig, ip)
}

/// [`answers_authenticated`] outside a build (`talix discover`): `talosctl --talosconfig T -e
/// <ip> -n <ip> version` succeeds. False when `talosconfig` does not exist.
pub fn answers_with_talosconfig(
    profile: &Profile,
    talosconfig: &std::path::Path,
    ip: IpAddr,
) -> bool {
    if !talosconfig.is_file() {
        return false;
    }
    let Ok(program) = exec::locate(Tool::Talosctl) else {
        return false;
    };
    let tc = talosconfig.display().to_string();
    let ep = endpoint(profile, ip);
    let n = crate::address::node_arg(ip);
    exec::run_capture(
        &program,
        ["--talosconfig", &tc, "-e", &ep, "-n", &n, "version"],
        |_| {},
    )
    .is_ok()
}

fn receipt(v: Value) -> BTreeMap<String, BuiltOutput> {
    [(
        "receipt".to_string(),
        BuiltOutput::Content(serde_json::to_vec_pretty(&v).unwrap_or_default()),
    )]
    .into()
}

fn stderr_of(e: &ExecError) -> String {
    match e {
        ExecError::Failed { stderr, .. } => stderr.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------

pub struct ApplyBuilder(pub ClusterEnv);

impl Builder for ApplyBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        let node = node_of(cx)?;
        let render = StepId::new("render", Some(&node.name));
        let config = SecretBytes::new(cx.dep_output(&render, "config")?);
        let config_hash = Digest::of_domain(domain::OBJECT, config.expose_secret());
        let recorded = env.lock.get().nodes.get(&node.name).cloned();
        if recorded
            .as_ref()
            .is_some_and(|r| r.applied_config == config_hash)
        {
            // The lock file (committed) says this exact config is on the node: a lost store
            // must not cause a re-apply.
            tracing::info!(
                "{}: config {} already applied (lock file)",
                node.name,
                config_hash.short()
            );
            return Ok(apply_receipt(&node.name, config_hash));
        }
        let pending_here = recorded.is_none()
            && env.lock.get().pending.applies.get(&node.name) == Some(&config_hash);
        if pending_here
            && (answers_authenticated(cx, env, node.ip)
                || (!found_in_maintenance(cx, &node.name)
                    && comes_up_authenticated(cx, env, node, config_hash)?))
        {
            // A run was killed after sending this node its first config and before recording
            // it: the node answers with this cluster's talosconfig at its static address, so
            // the config it was sent is on it. Recorded, not applied twice.
            crate::progress::note(&format!(
                "note: {}: the interrupted apply of config {} reached the node; recorded",
                node.name,
                config_hash.short()
            ));
            record_apply(cx, env, node, config_hash, None)?;
            return Ok(apply_receipt(&node.name, config_hash));
        }
        let discovered_configured = recorded.is_none()
            && cx
                .latest_output(&StepId::new("discover", None), "configured")
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
                .is_some_and(|names| names.contains(&node.name));
        let configured = recorded.is_some() || discovered_configured;
        let mut matched_by = None;
        let (target, insecure) = if configured {
            // A configured node answers where it was configured (its address may be what this
            // very change moves).
            let at = recorded
                .as_ref()
                .and_then(|r| r.address.as_deref())
                .and_then(|a| a.parse().ok())
                .unwrap_or(node.ip);
            (at, false)
        } else {
            let found = cx.latest_output(&StepId::new("discover", None), "nodes")?;
            let found: BTreeMap<String, IpAddr> = serde_json::from_slice(&found)
                .map_err(|e| cx.fail(format!("discovery result: {e}")))?;
            let ip = *found.get(&node.name).ok_or_else(|| {
                cx.fail(format!(
                    "{} was not found in maintenance mode on {}; is the VM running?",
                    node.name, cx.profile.discovery.subnet
                ))
            })?;
            // Runbook step 5d: recorded in the lock file when the address was found by count.
            let by_count = cx
                .latest_output(&StepId::new("discover", None), "by_count")
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
                .is_some_and(|names| names.contains(&node.name));
            matched_by = Some(if by_count {
                crate::discovery::MatchedBy::Count
            } else {
                crate::discovery::MatchedBy::Mac
            });
            (ip, true)
        };
        if insecure {
            // Write-ahead: the first apply is about to be sent.
            env.lock.update(cx, |l| {
                l.pending.applies.insert(node.name.clone(), config_hash);
            })?;
        }
        crate::progress::state(
            &node.name,
            &format!(
                "applying config {} at {target}{}",
                config_hash.short(),
                if insecure { " (maintenance mode)" } else { "" }
            ),
        );
        let ep = endpoint(cx.profile, target);
        let bare = crate::address::node_arg(target);
        let apply_target = if insecure {
            ApplyTarget::Maintenance { endpoint: &ep }
        } else {
            ApplyTarget::Configured {
                endpoint: &ep,
                node: &bare,
            }
        };
        let mut last_error = String::new();
        for attempt in 1..=3 {
            let result = talosctl_with_secrets(cx, vec![config.clone()], |fds| {
                apply_args(&env.talosconfig, &apply_target, &fds[0])
            });
            match result {
                Ok(_) => {
                    last_error.clear();
                    break;
                }
                Err(e) => {
                    last_error = e.message;
                    // Validation errors will not go away; connection drops may.
                    if last_error.contains("InvalidArgument") || attempt == 3 {
                        break;
                    }
                    std::thread::sleep(env.timing.poll);
                }
            }
        }
        if !last_error.is_empty() {
            return Err(cx.fail(format!(
                "{}: applying config {} at {target} failed: {last_error}",
                node.name,
                config_hash.short()
            )));
        }
        record_apply(cx, env, node, config_hash, matched_by)?;
        crate::progress::changed(&node.name, &format!("applied {}", config_hash.short()));
        // The receipt says what is on the node, not how it got there, so a receipt rebuilt from
        // the lock file is identical and nothing downstream re-runs.
        Ok(apply_receipt(&node.name, config_hash))
    }
}

/// Record in the lock file that `config_hash` is on `node` (at its static address from now on),
/// and how its maintenance address was found when this was its first apply (else what an
/// earlier apply recorded stays).
fn record_apply(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    node: &Node,
    config_hash: Digest,
    matched_by: Option<crate::discovery::MatchedBy>,
) -> Result<(), StepError> {
    env.lock.update(cx, |l| {
        let matched_by = matched_by.or(l.nodes.get(&node.name).and_then(|n| n.matched_by));
        l.nodes.insert(
            node.name.clone(),
            NodeLock {
                applied_config: config_hash,
                // The static address from the config: where the node answers from now on.
                address: Some(node.ip.to_string()),
                at: now_rfc3339(),
                talos_version: Some(cx.profile.talos.version.with_v()),
                mac: node.mac.clone(),
                matched_by,
            },
        );
        l.pending.applies.remove(&node.name);
    })
}

pub struct ReadyBuilder(pub ClusterEnv);

impl Builder for ReadyBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        let node = node_of(cx)?;
        let _spinner = Spinner::start(format!(
            "waiting for {} to answer at {}",
            node.name, node.ip
        ));
        let seen = env
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node.name)
            .filter(|(ip, _)| *ip == node.ip)
            .map(|(_, tag)| tag.clone());
        let server = match seen {
            // upgrade/<node> of this run just saw it answer there.
            Some(tag) => tag,
            None => server_version(cx, env, node, None)?,
        };
        crate::progress::state(
            &node.name,
            &format!("ready at {} (Talos {server})", node.ip),
        );
        Ok(ready_receipt(node, &server))
    }
}

pub struct BootstrapBuilder(pub ClusterEnv);

impl Builder for BootstrapBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        let node = first_controlplane(cx)?;
        let secrets = cx.dep_output_hash(&StepId::new("secrets", None), "bundle")?;
        if let Some(done) = env.lock.get().bootstrap {
            // The lock file travels in git: a lost store never leads to a second bootstrap.
            if done.secrets_hash != secrets {
                return Err(cx.fail(second_bootstrap_refusal(&done, secrets)));
            }
            tracing::info!(
                "etcd was bootstrapped on {} at {} (lock file); not again",
                done.node,
                done.at
            );
            return Ok(bootstrap_receipt(&done.node, done.secrets_hash));
        }
        let interrupted = env.lock.get().pending.bootstrap.as_deref() == Some(node.name.as_str());
        if interrupted
            && talosctl_auth(cx, env, node.ip, ETCD_MEMBERS_ARGS)
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().count() > 1)
        {
            // A run was killed after sending bootstrap and before recording it, and etcd has
            // members: it was bootstrapped. Recorded, not sent twice.
            crate::progress::note(&format!(
                "note: the interrupted bootstrap of {} took effect (etcd has members); recorded",
                node.name
            ));
        } else {
            env.lock
                .update(cx, |l| l.pending.bootstrap = Some(node.name.clone()))?;
            crate::progress::state(
                crate::progress::CLUSTER,
                &format!("bootstrapping etcd on {}", node.name),
            );
            bootstrap_once(cx, env, node)?;
            crate::progress::changed(&node.name, "etcd bootstrapped");
        }
        env.lock.update(cx, |l| {
            l.bootstrap = Some(BootstrapLock {
                node: node.name.clone(),
                at: now_rfc3339(),
                secrets_hash: secrets,
            });
            l.pending.bootstrap = None;
            // The cluster is created at the profile's Kubernetes version.
            l.kubernetes
                .get_or_insert_with(|| cx.profile.talos.kubernetes_version.to_string());
        })?;
        // The receipt says what holds, not how it was learned (identical when rebuilt from the
        // lock file, so nothing downstream re-runs).
        Ok(bootstrap_receipt(&node.name, secrets))
    }
}

/// Why a bootstrap recorded with other secrets is not repeated.
pub fn second_bootstrap_refusal(done: &BootstrapLock, secrets: Digest) -> String {
    format!(
        "the lock file records a bootstrap of {} with secrets {}, but the secrets are now {}; refusing to bootstrap a second cluster over it",
        done.node,
        done.secrets_hash.short(),
        secrets.short()
    )
}

/// `talosctl bootstrap` on `node`, retrying what upstream treats as transient; `AlreadyExists`
/// means done (trap 8).
fn bootstrap_once(cx: &BuildContext<'_>, env: &ClusterEnv, node: &Node) -> Result<(), StepError> {
    let started = Instant::now();
    let result = loop {
        match talosctl_auth(cx, env, node.ip, BOOTSTRAP_ARGS) {
            Ok(_) => {
                env.bootstrapped_now
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                break "bootstrapped";
            }
            Err(e) => {
                let text = stderr_of(&e);
                if text.contains("AlreadyExists") {
                    // Trap 8: etcd already has data on this node: it is bootstrapped.
                    break "already bootstrapped";
                }
                let transient = bootstrap_transient(&text);
                if transient && started.elapsed() < env.timing.bootstrap_timeout {
                    std::thread::sleep(env.timing.poll);
                    continue;
                }
                return Err(cx.fail(format!(
                    "bootstrap on {} ({}) failed: {text}",
                    node.name, node.ip
                )));
            }
        }
    };
    tracing::info!("bootstrap on {}: {result}", node.name);
    Ok(())
}

/// Errors of `talosctl bootstrap` that upstream retries as transient
/// (`pkg/cluster/bootstrap.go@v1.13.9`: FailedPrecondition, Unavailable, DeadlineExceeded,
/// Canceled, "apid restarts on transitioning maintenance -> ready", and
/// `error reading from server: EOF`), plus a refused connection while apid restarts.
pub fn bootstrap_transient(stderr: &str) -> bool {
    [
        "FailedPrecondition",
        "Unavailable",
        "DeadlineExceeded",
        "Canceled",
        "error reading from server: EOF",
        "connection refused",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

pub struct HealthBuilder(pub ClusterEnv);

impl Builder for HealthBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        let node = first_controlplane(cx)?;
        let args = health_args(cx.profile, &env.timing);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _spinner = Spinner::start("waiting for the cluster to become healthy".to_string());
        crate::progress::state(
            crate::progress::CLUSTER,
            "waiting for the cluster to become healthy",
        );
        talosctl_auth(cx, env, node.ip, &args)
            .map_err(|e| cx.fail(format!("cluster health check failed: {}", stderr_of(&e))))?;
        Ok(health_receipt(cx.profile))
    }
}

pub struct VerifyBuilder(pub ClusterEnv);

impl Builder for VerifyBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        let cp = first_controlplane(cx)?;
        let mut problems = Vec::new();

        // Kubernetes nodes (real kubectl against the kubeconfig the operator gets), etcd
        // members and the nodes' extensions are asked at the same time.
        write_kubeconfig(cx, env)?;
        let all_nodes: Vec<&Node> = cx.profile.nodes.iter().collect();
        let want_extensions = !cx.profile.talos.extensions.is_empty();
        let (nodes, etcd, answers) = std::thread::scope(|scope| {
            let etcd = scope.spawn(|| talosctl_auth(cx, env, cp.ip, &["etcd", "members"]));
            let extensions = scope.spawn(|| {
                want_extensions.then(|| {
                    extensions_at_once(cx, env, cp, &all_nodes)
                        .unwrap_or_else(|| extensions_one_by_one(cx, env, &all_nodes))
                })
            });
            let nodes = kubernetes_nodes(cx, env);
            let etcd = etcd.join().unwrap_or_else(|_| {
                Err(ExecError::Spawn {
                    program: "talosctl".into(),
                    source: std::io::Error::other("the etcd members query panicked"),
                })
            });
            (nodes, etcd, extensions.join().unwrap_or_default())
        });
        let nodes = nodes?;
        let mut ready = BTreeMap::new();
        for item in &nodes {
            let name = item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let is_ready = item["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.insert(name, is_ready);
        }
        for n in &cx.profile.nodes {
            match ready.get(&n.name) {
                Some(true) => {}
                Some(false) => problems.push(format!("Kubernetes node {} is not Ready", n.name)),
                None => problems.push(format!("Kubernetes node {} is missing", n.name)),
            }
        }

        // etcd members (trap 4: not `get members`).
        let out =
            etcd.map_err(|e| cx.fail(format!("talosctl etcd members failed: {}", stderr_of(&e))))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let members = text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count();
        let want = cx.profile.controlplanes().count();
        if members != want {
            problems.push(format!(
                "etcd has {members} members, expected {want} (one per control-plane node)"
            ));
        }

        // Extensions on every node, `jobs` nodes at a time.
        let mut extensions = BTreeMap::new();
        if let Some(answers) = answers {
            for (n, got) in answers {
                let names = got
                    .map_err(|e| cx.fail(format!("talosctl get extensions on {}: {e}", n.name)))?;
                for want in &cx.profile.talos.extensions {
                    let short = want.rsplit('/').next().unwrap_or(want);
                    if !names.iter().any(|have| have == want || have == short) {
                        problems.push(format!(
                            "{}: extension {want} is not installed (schematic {}?)",
                            n.name,
                            &cx.profile.talos.schematic_id[..12]
                        ));
                    }
                }
                extensions.insert(n.name.clone(), names);
            }
        }
        if !problems.is_empty() {
            return Err(cx.fail(format!("verification failed:\n  {}", problems.join("\n  "))));
        }
        Ok(receipt(
            json!({"kubernetes_nodes_ready": ready.len(), "ready": ready, "etcd_members": members, "extensions": extensions}),
        ))
    }
}

/// Per-node answers of `get extensions`.
type ExtensionAnswers<'n> = Vec<(&'n Node, Result<Vec<String>, String>)>;

/// Every node's extensions with one `talosctl -e <cp> -n <all nodes> get extensions` (apid on
/// the control plane asks each node; each resource names its node). `None` when that call
/// fails (a node does not answer): then each node is asked on its own, to name it.
fn extensions_at_once<'n>(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    cp: &Node,
    nodes: &[&'n Node],
) -> Option<ExtensionAnswers<'n>> {
    let program = exec::locate(Tool::Talosctl).ok()?;
    let tc = env.talosconfig.display().to_string();
    let ep = endpoint(cx.profile, cp.ip);
    let all = nodes
        .iter()
        .map(|n| crate::address::node_arg(n.ip))
        .collect::<Vec<_>>()
        .join(",");
    let out = exec::run_capture(
        &program,
        [
            "--talosconfig",
            &tc,
            "-e",
            &ep,
            "-n",
            &all,
            "get",
            "extensions",
            "-o",
            "json",
        ],
        |_| {},
    )
    .ok()?;
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
    {
        let (Some(node), Some(name)) = (v["node"].as_str(), v["spec"]["metadata"]["name"].as_str())
        else {
            continue;
        };
        by_node
            .entry(node.to_string())
            .or_default()
            .push(name.to_string());
    }
    Some(
        nodes
            .iter()
            .map(|n| {
                let names = by_node
                    .get(&crate::address::node_arg(n.ip))
                    .cloned()
                    .unwrap_or_default();
                (*n, Ok(names))
            })
            .collect(),
    )
}

/// Each node's extensions with its own `get extensions`, `env.jobs` nodes at a time.
fn extensions_one_by_one<'n>(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    nodes: &[&'n Node],
) -> ExtensionAnswers<'n> {
    let per_thread = nodes.len().div_ceil(env.jobs.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|n| {
                            let got =
                                talosctl_auth(cx, env, n.ip, &["get", "extensions", "-o", "json"])
                                    .map(|out| {
                                        extension_names(&String::from_utf8_lossy(&out.stdout))
                                    })
                                    .map_err(|e| stderr_of(&e));
                            (*n, got)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Extension names from a `get extensions -o json` stream.
pub fn extension_names(stream: &str) -> Vec<String> {
    serde_json::Deserializer::from_str(stream)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .filter_map(|v| v["spec"]["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// How often a rebooting node's API port is probed (a TCP connect, no child process), when few
/// nodes wait: it is on the critical path of every first bootstrap.
const PORT_POLL: Duration = Duration::from_millis(10);
/// ... and with many waiting, each probes less often, so all of them together make at most
/// about 2000 connects a second (60 nodes at 10 ms were 12 % of talix's CPU at 3+57).
const PORT_POLL_PER_WAITER: Duration = Duration::from_micros(500);
/// Nodes waiting for their API port right now.
static PORT_WAITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The first retry after the port accepts but talosctl fails (the API is still starting):
/// doubled up to the poll interval.
const API_RETRY_FIRST: Duration = Duration::from_millis(50);

/// The pause between two probes of a rebooting node's port.
fn port_poll(poll: Duration) -> Duration {
    let waiters = PORT_WAITERS.load(std::sync::atomic::Ordering::Relaxed) as u32;
    PORT_POLL.max(PORT_POLL_PER_WAITER * waiters).min(poll)
}

/// Counts a node among [`PORT_WAITERS`] while it lives.
struct PortWaiter;

impl PortWaiter {
    fn new() -> Self {
        PORT_WAITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl Drop for PortWaiter {
    fn drop(&mut self) {
        PORT_WAITERS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
/// Bound of one such probe.
const PORT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The Talos version a node reports (`Server:` block of `talosctl version`), waiting for it to
/// answer (it may be rebooting after apply or upgrade).
fn server_version(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    node: &Node,
    want: Option<&str>,
) -> Result<String, StepError> {
    let started = Instant::now();
    let mut last = String::new();
    let api = std::net::SocketAddr::new(node.ip, cx.profile.talos.api_port);
    let mut retry = API_RETRY_FIRST;
    while started.elapsed() < env.timing.ready_timeout {
        // While the API port does not even accept a connection (the node is rebooting), look
        // again soon without starting a talosctl each time: the node is noticed within
        // PORT_POLL of coming up, however long the configured poll interval is.
        let waiting = PortWaiter::new();
        if std::net::TcpStream::connect_timeout(&api, PORT_PROBE_TIMEOUT).is_err() {
            if last.is_empty() {
                crate::progress::state(
                    &node.name,
                    &format!("waiting for the Talos API at {}", node.ip),
                );
                // A small cluster: nothing waits for a process slot, so the probe verify will
                // need (kubectl) can run now without delaying any node (else: below, once a
                // node is back).
                if exec::ProcessPermit::uncontended() {
                    cx.tools.prefetch([crate::derivation::Tool::Kubectl]);
                }
            }
            last = format!("{api} does not accept connections");
            std::thread::sleep(port_poll(env.timing.poll));
            continue;
        }
        drop(waiting);
        match talosctl_auth(cx, env, node.ip, VERSION_ARGS) {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let tag = text
                    .split("Server:")
                    .nth(1)
                    .and_then(exec::first_version)
                    .unwrap_or_default();
                if want.is_none_or(|w| w == tag) {
                    // A node is up after its reboot: the applies are done or nearly, and the
                    // CPU idles until the last node is back; probe kubectl (verify needs it)
                    // now rather than while every node's config is rendered and applied.
                    cx.tools.prefetch([crate::derivation::Tool::Kubectl]);
                    env.seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(node.name.clone(), (node.ip, tag.clone()));
                    return Ok(tag);
                }
                last = format!("it reports {tag}");
            }
            Err(e) => {
                if last.is_empty() {
                    crate::progress::state(
                        &node.name,
                        &format!("waiting for the Talos API at {}", node.ip),
                    );
                }
                last = stderr_of(&e);
            }
        }
        // The port accepts, so the node is up and its API starting: look again soon, then
        // less and less often.
        std::thread::sleep(retry.min(env.timing.poll));
        retry = (retry * 2).min(env.timing.poll);
    }
    Err(cx.fail(format!(
        "{} at {}: no answer{} within {:?}: {last}",
        node.name,
        node.ip,
        want.map(|w| format!(" with {w}")).unwrap_or_default(),
        env.timing.ready_timeout
    )))
}

/// Whether the discovery of this run found `node` in maintenance mode.
fn found_in_maintenance(cx: &BuildContext<'_>, node: &str) -> bool {
    cx.latest_output(&StepId::new("discover", None), "nodes")
        .ok()
        .and_then(|b| serde_json::from_slice::<BTreeMap<String, IpAddr>>(&b).ok())
        .is_some_and(|found| found.contains_key(node))
}

/// A node that a killed run sent its first config and that left maintenance mode: wait (as
/// for any rebooting node) until it answers with this cluster's talosconfig at its static
/// address. A worker may take until a control plane is up (its certificate comes from one),
/// which this run's other steps are configuring meanwhile.
fn comes_up_authenticated(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
    node: &Node,
    config_hash: Digest,
) -> Result<bool, StepError> {
    crate::progress::state(
        &node.name,
        &format!(
            "waiting for it at {} (an interrupted run sent it config {})",
            node.ip,
            config_hash.short()
        ),
    );
    let started = Instant::now();
    let mut pause = API_RETRY_FIRST;
    while started.elapsed() < env.timing.ready_timeout {
        if answers_authenticated(cx, env, node.ip) {
            return Ok(true);
        }
        std::thread::sleep(pause.min(env.timing.poll));
        pause = (pause * 2).min(env.timing.poll);
    }
    Err(cx.fail(format!(
        "{}: an interrupted run sent it config {}; it left maintenance mode but did not answer with this cluster's talosconfig at {} within {:?}",
        node.name,
        config_hash.short(),
        node.ip,
        env.timing.ready_timeout
    )))
}

/// The endpoint a node's upgrade goes through: a control plane upgrades through itself, a
/// worker through the first control-plane node that is not itself (the bootstrap node).
pub(crate) fn upgrade_endpoint(cx: &BuildContext<'_>, node: &Node) -> Result<IpAddr, StepError> {
    if node.role == Role::Controlplane {
        return Ok(node.ip);
    }
    Ok(first_controlplane(cx)?.ip)
}

pub struct UpgradeBuilder(pub ClusterEnv);

impl Builder for UpgradeBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        let node = node_of(cx)?;
        let target = cx.profile.talos.version.with_v();
        let _spinner = Spinner::start(format!("checking the Talos version of {}", node.name));
        let running = server_version(cx, env, node, None)?;
        if running != target {
            // Rolling: one node at a time (the version check above runs in parallel).
            let _turn = env.rolling.lock().unwrap_or_else(|e| e.into_inner());
            crate::progress::state(&node.name, &format!("upgrading from {running} to {target}"));
            // Trap 6: the installer image in the config changed, but only `upgrade` moves a
            // running node to it. One node at a time; --wait (the default) blocks until done.
            let image = cx.profile.talos.installer_image();
            // Trap 11: talosctl >= v1.13 drains the node first and fetches the kubeconfig from
            // the *endpoint*; only control planes serve it ("kubeconfig is only available on
            // control plane nodes"), so a worker is upgraded through a control-plane endpoint.
            let via = upgrade_endpoint(cx, node)?;
            crate::progress::note(&format!(
                "upgrading {} from {running} to {target}",
                node.name
            ));
            let args = upgrade_args(&image);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            talosctl_via(cx, env, via, node.ip, &args).map_err(|e| {
                cx.fail(format!(
                    "talosctl upgrade of {} to {image} failed: {}",
                    node.name,
                    stderr_of(&e)
                ))
            })?;
            server_version(cx, env, node, Some(&target))?;
            crate::progress::changed(&node.name, &format!("upgraded {running} -> {target}"));
        }
        env.lock.update(cx, |l| {
            if let Some(n) = l.nodes.get_mut(&node.name) {
                n.talos_version = Some(target.clone());
            }
        })?;
        Ok(upgrade_receipt(&node.name, &target))
    }
}

pub struct UpgradeK8sBuilder(pub ClusterEnv);

/// Write the kubeconfig step's output 0600 where the operator (and kubectl) find it.
fn write_kubeconfig(cx: &BuildContext<'_>, env: &ClusterEnv) -> Result<(), StepError> {
    let kubeconfig = cx.dep_output(&StepId::new("kubeconfig", None), "kubeconfig")?;
    env.lock
        .workspace
        .ensure_file(&env.kubeconfig, &kubeconfig, 0o600)
        .map_err(|e| cx.fail(format!("{}: {e}", env.kubeconfig.display())))
}

/// The `NodeList` items (what `kubectl get nodes -o json` prints), with the written
/// kubeconfig: `get --raw /api/v1/nodes` is the same list without kubectl's API discovery
/// round trips first.
fn kubernetes_nodes(cx: &BuildContext<'_>, env: &ClusterEnv) -> Result<Vec<Value>, StepError> {
    let kubectl = exec::locate(Tool::Kubectl).map_err(|e| cx.fail(e.to_string()))?;
    let out = exec::run_capture(&kubectl, kubectl_nodes_args(&env.kubeconfig), |_| {})
        .map_err(|e| cx.fail(format!("kubectl get nodes failed: {}", stderr_of(&e))))?;
    let nodes: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| cx.fail(format!("kubectl output: {e}")))?;
    Ok(nodes["items"].as_array().cloned().unwrap_or_default())
}

/// Kubelet versions by node name.
fn kubelet_versions(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
) -> Result<BTreeMap<String, String>, StepError> {
    let nodes = kubernetes_nodes(cx, env)?;
    Ok(nodes
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                i["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect())
}

impl Builder for UpgradeK8sBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &self.0;
        write_kubeconfig(cx, env)?;
        let want = &cx.profile.talos.kubernetes_version;
        let target = format!("v{want}");
        if env
            .bootstrapped_now
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // This run created the cluster from the configs it applied, every one of which
            // carries `want` (render/<node> is an input of apply/<node>): the control plane,
            // kube-proxy and every kubelet start at it, so nothing can be behind. (verify still
            // checks every node is Ready.)
            env.lock
                .update(cx, |l| l.kubernetes = Some(want.to_string()))?;
            return Ok(receipt(json!({"kubernetes": target})));
        }
        // Trap 12: re-applied configs move the kubelets and the static control-plane pods, but
        // kube-proxy and the bootstrap manifests move only with `upgrade-k8s`. So the cluster's
        // version is the lowest control-plane/kube-proxy version, as upstream detects it.
        let current = lowest_control_plane_version(cx, env)?;
        let kubelets_behind: Vec<String> = kubelet_versions(cx, env)?
            .into_iter()
            .filter(|(_, v)| *v != target)
            .map(|(n, v)| format!("{n} ({v})"))
            .collect();
        let behind = current.as_ref().is_some_and(|c| c != want);
        if behind || !kubelets_behind.is_empty() {
            if let Some(from) = &current {
                check_kubernetes_path(from, want).map_err(|e| cx.fail(e))?;
            }
            let cp = first_controlplane(cx)?;
            crate::progress::note(&format!(
                "upgrading Kubernetes from {} to {target}{}",
                current
                    .as_ref()
                    .map(|c| format!("v{c}"))
                    .unwrap_or_else(|| "?".into()),
                if kubelets_behind.is_empty() {
                    String::new()
                } else {
                    format!(" (kubelets behind: {})", kubelets_behind.join(", "))
                }
            ));
            let _spinner = Spinner::start(format!("talosctl upgrade-k8s --to {want}"));
            let to = want.to_string();
            let args = upgrade_k8s_args(&to);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            talosctl_auth(cx, env, cp.ip, &args).map_err(|e| {
                cx.fail(format!(
                    "talosctl upgrade-k8s --to {to} failed: {}",
                    stderr_of(&e)
                ))
            })?;
            let after = lowest_control_plane_version(cx, env)?;
            if after.as_ref().is_some_and(|a| a != want) {
                return Err(cx.fail(format!(
                    "after upgrade-k8s, the control plane / kube-proxy is still at v{} (wanted {target})",
                    after.unwrap()
                )));
            }
            let still: Vec<String> = kubelet_versions(cx, env)?
                .into_iter()
                .filter(|(_, v)| *v != target)
                .map(|(n, v)| format!("{n} ({v})"))
                .collect();
            if !still.is_empty() {
                return Err(cx.fail(format!(
                    "after upgrade-k8s, kubelets still behind {target}: {}",
                    still.join(", ")
                )));
            }
        }
        env.lock
            .update(cx, |l| l.kubernetes = Some(want.to_string()))?;
        Ok(upgrade_k8s_receipt(&target))
    }
}

/// The lowest version of the kube-system pods labelled `k8s-app` in {kube-apiserver,
/// kube-controller-manager, kube-scheduler, kube-proxy}, from the image tag of the container
/// named like the app: what `talosctl upgrade-k8s` detects as `--from`
/// (`pkg/cluster/kubernetes/detect.go@v1.14.0-rc.1`, `DetectLowestVersion`). `None` when no
/// such pod exists.
fn lowest_control_plane_version(
    cx: &BuildContext<'_>,
    env: &ClusterEnv,
) -> Result<Option<KubeVersion>, StepError> {
    let kubectl = exec::locate(Tool::Kubectl).map_err(|e| cx.fail(e.to_string()))?;
    let out =
        exec::run_capture(&kubectl, kubectl_pods_args(&env.kubeconfig), |_| {}).map_err(|e| {
            cx.fail(format!(
                "kubectl get pods -n kube-system failed: {}",
                stderr_of(&e)
            ))
        })?;
    let pods: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| cx.fail(format!("kubectl output: {e}")))?;
    Ok(lowest_version_of_pods(&pods))
}

/// See [`lowest_control_plane_version`]; `pods` is a `PodList` as JSON.
pub fn lowest_version_of_pods(pods: &Value) -> Option<KubeVersion> {
    const APPS: [&str; 4] = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-proxy",
        "kube-scheduler",
    ];
    let mut lowest: Option<KubeVersion> = None;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let Some(app) = pod["metadata"]["labels"]["k8s-app"].as_str() else {
            continue;
        };
        if !APPS.contains(&app) {
            continue;
        }
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            if c["name"].as_str() != Some(app) {
                continue;
            }
            let tag = c["image"]
                .as_str()
                .and_then(|i| i.rsplit_once(':'))
                .map(|(_, t)| t)
                .unwrap_or_default();
            if let Ok(v) = tag.trim_start_matches('v').parse::<KubeVersion>()
                && lowest.as_ref().is_none_or(|l| v < *l)
            {
                lowest = Some(v);
            }
        }
    }
    lowest
}

/// `upgrade-k8s` moves one minor version at a time and never down (siderolabs/go-kubernetes
/// upgrade path, used by `upgrade.NewPath` in cmd/talosctl/cmd/talos/upgrade-k8s.go@v1.14.0-rc.1).
/// The error says what to do instead.
pub fn check_kubernetes_path(from: &KubeVersion, to: &KubeVersion) -> Result<(), String> {
    if to < from {
        return Err(format!(
            "Kubernetes v{to} is older than the cluster's v{from}; Kubernetes is never downgraded (set talos.kubernetes_version back to {from} or newer)"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        return Err(format!(
            "Kubernetes v{from} -> v{to} skips a minor version; upgrade-k8s moves one minor version at a time: set talos.kubernetes_version to a 1.{}.x release, run `talix up`, then bump again",
            from.minor + 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod spinner_tests {
    use super::spinner_allowed;
    use std::ffi::OsStr;

    #[test]
    fn spinners_only_on_terminals_that_are_not_dumb() {
        assert!(spinner_allowed(true, Some(OsStr::new("xterm-256color"))));
        assert!(spinner_allowed(true, None));
        assert!(!spinner_allowed(true, Some(OsStr::new("dumb"))));
        assert!(!spinner_allowed(false, Some(OsStr::new("xterm"))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_lock(dir: &std::path::Path) -> SharedLock {
        let (ws, _) = crate::workspace::Workspace::resolve(
            &dir.join("x.yaml"),
            "x",
            Default::default(),
            Default::default(),
        );
        SharedLock::new(ws, LockFile::default())
    }

    fn node_lock(i: u8) -> NodeLock {
        NodeLock {
            applied_config: crate::digest::Digest::from_bytes([i; 32]),
            address: Some(format!("127.0.0.{i}")),
            at: "2026-01-01T00:00:00Z".into(),
            talos_version: None,
            mac: None,
            matched_by: None,
        }
    }

    /// Group commit keeps the write-ahead rule: every change is on disk when its update
    /// returns, however many threads change the lock file at once, and none is lost.
    #[test]
    fn every_change_is_on_disk_when_its_update_returns() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_lock(dir.path());
        let path = shared.workspace.lock_file().to_path_buf();
        std::thread::scope(|scope| {
            for i in 1..=32u8 {
                let shared = shared.clone();
                let path = path.clone();
                scope.spawn(move || {
                    let name = format!("n{i}");
                    shared
                        .update_with(|l| {
                            l.nodes.insert(name.clone(), node_lock(i));
                        })
                        .unwrap();
                    let on_disk = LockFile::load(&path).unwrap();
                    assert_eq!(on_disk.nodes.get(&name), Some(&node_lock(i)));
                });
            }
        });
        let on_disk = LockFile::load(&path).unwrap();
        assert_eq!(on_disk.nodes.len(), 32);
        assert_eq!(on_disk, shared.get());
        assert!((1..=32).contains(&shared.saves()), "{}", shared.saves());
        // A change that changes nothing writes nothing.
        let saves = shared.saves();
        shared.update_with(|_| {}).unwrap();
        assert_eq!(shared.saves(), saves);
    }

    /// A save that fails fails the update that waited for it (here: another run recorded a
    /// node this run's lock file does not hold, so saving would lose it).
    #[test]
    fn a_failed_save_fails_the_update() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared_lock(dir.path());
        let mut other = LockFile::default();
        other.nodes.insert("w9".into(), node_lock(9));
        other.save(&shared.workspace).unwrap();
        let e = shared
            .update_with(|l| {
                l.nodes.insert("cp1".into(), node_lock(1));
            })
            .unwrap_err();
        assert!(e.to_string().contains("the record of node w9"), "{e}");
    }

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn bootstrap_retries_what_upstream_treats_as_transient() {
        // pkg/cluster/bootstrap.go@v1.13.9.
        for text in [
            "rpc error: code = FailedPrecondition desc = time is not in sync yet",
            "rpc error: code = Unavailable desc = connection error",
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded",
            "rpc error: code = Canceled desc = grpc: the client connection is closing",
            "rpc error: code = Unknown desc = error reading from server: EOF",
        ] {
            assert!(bootstrap_transient(text), "{text}");
        }
        for text in [
            "rpc error: code = AlreadyExists desc = etcd data directory is not empty",
            "rpc error: code = PermissionDenied desc = not authorized",
            "rpc error: code = InvalidArgument desc = bad",
        ] {
            assert!(!bootstrap_transient(text), "{text}");
        }
    }

    fn pod(app: &str, container: &str, image: &str) -> Value {
        json!({"metadata": {"labels": {"k8s-app": app}},
               "spec": {"containers": [{"name": container, "image": image}]}})
    }

    #[test]
    fn the_cluster_version_is_the_lowest_control_plane_or_kube_proxy_image() {
        let pods = json!({"items": [
            pod("kube-apiserver", "kube-apiserver", "registry.k8s.io/kube-apiserver:v1.34.2"),
            pod("kube-scheduler", "kube-scheduler", "registry.k8s.io/kube-scheduler:v1.34.2"),
            pod("kube-proxy", "kube-proxy", "registry.k8s.io/kube-proxy:v1.34.1"),
            // Not one of the four apps, or a container not named like the app: ignored.
            pod("kube-dns", "coredns", "registry.k8s.io/coredns/coredns:v1.12.0"),
            pod("kube-apiserver", "sidecar", "example.org/sidecar:v0.1.0"),
        ]});
        assert_eq!(lowest_version_of_pods(&pods), Some(v("1.34.1")));
        assert_eq!(lowest_version_of_pods(&json!({"items": []})), None);
    }

    #[test]
    fn kubernetes_moves_one_minor_version_at_a_time_and_never_down() {
        assert!(check_kubernetes_path(&v("1.34.1"), &v("1.34.3")).is_ok());
        assert!(check_kubernetes_path(&v("1.34.1"), &v("1.35.0")).is_ok());
        assert!(check_kubernetes_path(&v("1.34.1"), &v("1.34.1")).is_ok());
        let skip = check_kubernetes_path(&v("1.34.1"), &v("1.36.0")).unwrap_err();
        assert!(skip.contains("skips a minor version"), "{skip}");
        assert!(skip.contains("1.35.x"), "{skip}");
        let down = check_kubernetes_path(&v("1.34.1"), &v("1.33.5")).unwrap_err();
        assert!(down.contains("never downgraded"), "{down}");
    }
}
