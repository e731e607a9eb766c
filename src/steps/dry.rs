//! `talix up --dry-run`: stand-ins for the builders of the steps that touch the cluster. Each
//! reads the same inputs and the same lock file as the real builder, records the commands the
//! real one would run -- built by the same argv functions of [`crate::steps::cluster`], so the
//! two cannot drift -- runs none of them, and returns the receipt the real builder returns, so
//! the engine decides exactly as in a real run which later steps run (early cut-off included).
//!
//! Read-only probes whose answer only the cluster knows (the discovery scan, "does the node
//! already answer this cluster's talosconfig", "which Talos does it run") are not made: the
//! commands that depend on them are printed with their condition, and an address that only
//! discovery can find is printed as `<discovered>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;

use crate::derivation::StepId;
use crate::digest::{Digest, domain};
use crate::engine::{BuildContext, Builder, Builders, BuiltOutput, StepError};
use crate::lockfile::LockFile;
use crate::secrets::LazyIdentities;
use crate::steps::cluster::{self, ApplyTarget, Timing};

/// What a recorded command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Runs on this machine only (config generation).
    Local,
    /// Asks a node or the cluster; changes nothing.
    Read,
    /// Changes a node or the cluster.
    Change,
    /// Writes a file of the workspace.
    Write,
}

/// One thing `up` would do.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub step: String,
    pub effect: Effect,
    /// `talosctl`, `kubectl`, or `None` for a file write or a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The arguments, exactly as `up` passes them (pipes shown as `<pipe...>`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The file written, or what a note says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// When the command runs only under a condition a dry run cannot check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

static JOURNAL: Mutex<Option<Vec<Entry>>> = Mutex::new(None);

/// Start recording (a dry run).
pub fn start() {
    *JOURNAL.lock().unwrap() = Some(Vec::new());
}

/// Stop recording; what was recorded, in order.
pub fn take() -> Vec<Entry> {
    JOURNAL.lock().unwrap().take().unwrap_or_default()
}

/// Record `entry` when a dry run is recording.
pub fn record(entry: Entry) {
    if let Some(j) = JOURNAL.lock().unwrap().as_mut() {
        j.push(entry);
    }
}

/// Called by [`crate::steps::configs::talosctl_with_secrets`] for every talosctl it runs:
/// during a dry run the configuration steps are built for real (locally, into an overlay of
/// the store), and their commands are recorded with the `/dev/fd/N` pipes shown as `<pipe>`.
pub fn record_local(step: &StepId, argv: &[String], pipes: &[String]) {
    if JOURNAL.lock().unwrap().is_none() {
        return;
    }
    let argv = argv
        .iter()
        .map(|a| {
            pipes.iter().fold(a.clone(), |a, p| {
                if a.contains(p.as_str()) {
                    a.replace(p.as_str(), "<pipe>")
                } else {
                    a
                }
            })
        })
        .collect();
    record(Entry {
        step: step.to_string(),
        effect: Effect::Local,
        program: Some("talosctl".into()),
        argv,
        text: None,
        when: None,
    });
}

fn command(cx: &BuildContext<'_>, program: &str, effect: Effect, argv: Vec<String>) -> Entry {
    Entry {
        step: cx.step.id.to_string(),
        effect,
        program: Some(program.into()),
        argv,
        text: None,
        when: None,
    }
}

fn note(cx: &BuildContext<'_>, text: impl Into<String>) {
    record(Entry {
        step: cx.step.id.to_string(),
        effect: Effect::Read,
        program: None,
        argv: vec![],
        text: Some(text.into()),
        when: None,
    });
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What the stand-ins read: the lock file as it is now, and the paths `up` would use.
pub struct DryEnv {
    pub lock: LockFile,
    pub talosconfig: PathBuf,
    pub kubeconfig: PathBuf,
    pub timing: Timing,
}

/// The configuration builders (real: they only run talosctl locally) and the stand-ins for
/// every step that touches the cluster.
pub fn builders(identities: Arc<LazyIdentities>, env: DryEnv) -> Builders {
    let mut b = crate::steps::builders(&crate::steps::StepEnv {
        identities,
        cluster: None,
    });
    let env = Arc::new(env);
    for kind in [
        "discover",
        "apply",
        "upgrade",
        "ready",
        "bootstrap",
        "health",
        "upgrade-k8s",
        "verify",
    ] {
        b.register(kind, Box::new(DryBuilder(env.clone())));
    }
    b
}

struct DryBuilder(Arc<DryEnv>);

fn receipt(v: serde_json::Value) -> BTreeMap<String, BuiltOutput> {
    [(
        "receipt".to_string(),
        BuiltOutput::Content(serde_json::to_vec_pretty(&v).unwrap_or_default()),
    )]
    .into()
}

impl Builder for DryBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let env = &*self.0;
        let p = cx.profile;
        let tc = &env.talosconfig;
        let auth = |ip, args: &[&str]| cluster::auth_argv(p, tc, ip, ip, args);
        match cx.step.id.kind() {
            "discover" => {
                note(
                    cx,
                    format!(
                        "scan {} port {} for machines in maintenance mode and read their links (talosctl get links --insecure); not done in a dry run: the addresses it finds are shown as <discovered>",
                        p.discovery.subnet, p.talos.api_port
                    ),
                );
                Ok([
                    ("nodes".to_string(), BuiltOutput::Content(b"{}".to_vec())),
                    (
                        "configured".to_string(),
                        BuiltOutput::Content(b"[]".to_vec()),
                    ),
                ]
                .into())
            }
            "apply" => {
                let node = cluster::node_of(cx)?;
                let render = StepId::new("render", Some(&node.name));
                let config = crate::secrets::SecretBytes::new(cx.dep_output(&render, "config")?);
                let hash = Digest::of_domain(domain::OBJECT, config.expose_secret());
                drop(config);
                let recorded = env.lock.nodes.get(&node.name);
                if recorded.is_some_and(|r| r.applied_config == hash) {
                    note(
                        cx,
                        format!(
                            "config {} is already on {} (lock file): nothing is sent",
                            hash.short(),
                            node.name
                        ),
                    );
                    return Ok(cluster::apply_receipt(&node.name, hash));
                }
                let file = format!("<pipe:{render}>");
                let mut entry = match recorded {
                    Some(r) => {
                        let at = r
                            .address
                            .as_deref()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(node.ip);
                        let ep = cluster::endpoint(p, at);
                        let bare = crate::address::node_arg(at);
                        let target = ApplyTarget::Configured {
                            endpoint: &ep,
                            node: &bare,
                        };
                        command(
                            cx,
                            "talosctl",
                            Effect::Change,
                            cluster::apply_args(tc, &target, &file),
                        )
                    }
                    None => {
                        // As `endpoint_arg` writes a maintenance address: bare on 50000.
                        let ep = if p.talos.api_port == crate::address::DEFAULT_API_PORT {
                            "<discovered>".to_string()
                        } else {
                            format!("<discovered>:{}", p.talos.api_port)
                        };
                        let target = ApplyTarget::Maintenance { endpoint: &ep };
                        let mut e = command(
                            cx,
                            "talosctl",
                            Effect::Change,
                            cluster::apply_args(tc, &target, &file),
                        );
                        e.when = Some(format!(
                            "if {} is found in maintenance mode on {} (a node that already answers this cluster's talosconfig at {} is applied there instead)",
                            node.name, p.discovery.subnet, node.ip
                        ));
                        e
                    }
                };
                if recorded.is_none() && env.lock.pending.applies.get(&node.name) == Some(&hash) {
                    entry.when = Some(format!(
                        "if the interrupted apply of config {} did not reach {} (else it is only recorded)",
                        hash.short(),
                        node.name
                    ));
                }
                record(entry);
                Ok(cluster::apply_receipt(&node.name, hash))
            }
            "upgrade" => {
                let node = cluster::node_of(cx)?;
                let target = p.talos.version.with_v();
                let image = p.talos.installer_image();
                let via = cluster::upgrade_endpoint(cx, node)?;
                record(command(
                    cx,
                    "talosctl",
                    Effect::Read,
                    auth(node.ip, cluster::VERSION_ARGS),
                ));
                let mut e = command(
                    cx,
                    "talosctl",
                    Effect::Change,
                    cluster::auth_argv(p, tc, via, node.ip, &strs(&cluster::upgrade_args(&image))),
                );
                let known = env
                    .lock
                    .nodes
                    .get(&node.name)
                    .and_then(|n| n.talos_version.clone())
                    .map(|v| format!(" (lock file: {v})"))
                    .unwrap_or_default();
                e.when = Some(format!("if {} does not run {target}{known}", node.name));
                record(e);
                Ok(cluster::upgrade_receipt(&node.name, &target))
            }
            "ready" => {
                let node = cluster::node_of(cx)?;
                let mut e = command(
                    cx,
                    "talosctl",
                    Effect::Read,
                    auth(node.ip, cluster::VERSION_ARGS),
                );
                e.when = Some(format!(
                    "repeated until {} answers at {}",
                    node.name, node.ip
                ));
                record(e);
                // After its upgrade step a node runs the profile's Talos.
                Ok(cluster::ready_receipt(node, &p.talos.version.with_v()))
            }
            "bootstrap" => {
                let node = cluster::first_controlplane(cx)?;
                let secrets = cx.dep_output_hash(&crate::graph::secrets_id(), "bundle")?;
                if let Some(done) = &env.lock.bootstrap {
                    if done.secrets_hash != secrets {
                        return Err(cx.fail(cluster::second_bootstrap_refusal(done, secrets)));
                    }
                    note(
                        cx,
                        format!(
                            "etcd was bootstrapped on {} (lock file); not again",
                            done.node
                        ),
                    );
                    return Ok(cluster::bootstrap_receipt(&done.node, done.secrets_hash));
                }
                let mut e = command(
                    cx,
                    "talosctl",
                    Effect::Change,
                    auth(node.ip, cluster::BOOTSTRAP_ARGS),
                );
                if env.lock.pending.bootstrap.as_deref() == Some(node.name.as_str()) {
                    record(command(
                        cx,
                        "talosctl",
                        Effect::Read,
                        auth(node.ip, cluster::ETCD_MEMBERS_ARGS),
                    ));
                    e.when = Some(
                        "if etcd has no members yet (the interrupted bootstrap did not take effect)".into(),
                    );
                }
                record(e);
                Ok(cluster::bootstrap_receipt(&node.name, secrets))
            }
            "health" => {
                let node = cluster::first_controlplane(cx)?;
                record(command(
                    cx,
                    "talosctl",
                    Effect::Read,
                    auth(node.ip, &strs(&cluster::health_args(p, &env.timing))),
                ));
                Ok(cluster::health_receipt(p))
            }
            "upgrade-k8s" => {
                let node = cluster::first_controlplane(cx)?;
                let want = &p.talos.kubernetes_version;
                record(command(
                    cx,
                    "kubectl",
                    Effect::Read,
                    cluster::kubectl_pods_args(&env.kubeconfig),
                ));
                record(command(
                    cx,
                    "kubectl",
                    Effect::Read,
                    cluster::kubectl_nodes_args(&env.kubeconfig),
                ));
                let mut e = command(
                    cx,
                    "talosctl",
                    Effect::Change,
                    auth(
                        node.ip,
                        &strs(&cluster::upgrade_k8s_args(&want.to_string())),
                    ),
                );
                let known = env
                    .lock
                    .kubernetes
                    .as_ref()
                    .map(|k| format!(" (lock file: {k})"))
                    .unwrap_or_default();
                e.when = Some(format!(
                    "if the control plane, kube-proxy or a kubelet is behind v{want}{known}"
                ));
                record(e);
                Ok(cluster::upgrade_k8s_receipt(&format!("v{want}")))
            }
            "verify" => {
                let cp = cluster::first_controlplane(cx)?;
                record(command(
                    cx,
                    "kubectl",
                    Effect::Read,
                    cluster::kubectl_nodes_args(&env.kubeconfig),
                ));
                record(command(
                    cx,
                    "talosctl",
                    Effect::Read,
                    auth(cp.ip, cluster::ETCD_MEMBERS_ARGS),
                ));
                if !p.talos.extensions.is_empty() {
                    for n in &p.nodes {
                        record(command(
                            cx,
                            "talosctl",
                            Effect::Read,
                            auth(n.ip, cluster::GET_EXTENSIONS_ARGS),
                        ));
                    }
                }
                Ok(receipt(json!({"dry_run": true})))
            }
            other => Err(cx.fail(format!("no dry-run stand-in for steps of kind {other:?}"))),
        }
    }
}
