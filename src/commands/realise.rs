//! Commands that realise steps: `build` (configs only, offline), `export`, and `up` (the whole
//! runbook against the cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{CliError, Result, Session};
use crate::derivation::{Step, StepId};
use crate::engine::{EngineError, Observer, Realised, Status};
use crate::graph;
use crate::lockfile::LockFile;
use crate::store::Store;
use crate::store::local::atomic_write;

/// One line of the run's report on stdout. A reader that went away (`talix up | head -3`)
/// never stops a run half-way: the line is dropped and the work goes on.
macro_rules! report {
    ($($arg:tt)*) => {{
        let _ = super::DataOut::line(&format!($($arg)*));
    }};
}

pub(super) fn export(s: Session, out: &Path) -> Result<()> {
    let steps: Vec<Step> = s
        .steps()
        .into_iter()
        .filter(|st| graph::BUILD_KINDS.contains(&st.id.kind()))
        .collect();
    let planned = s.engine().plan(&steps)?;
    if planned.iter().any(|p| p.status != Status::Cached) {
        return Err(CliError::failure(format!(
            "error: configs of {} are not built; run `talix build {}` first",
            s.profile.name,
            s.profile.source.display()
        )));
    }
    let mut files = Vec::new();
    for p in &planned {
        let key = p.key.expect("cached steps have keys");
        let named: Vec<(String, &str)> = match (p.step.id.kind(), p.step.id.node()) {
            ("base-config", _) => vec![
                ("controlplane.yaml".into(), "controlplane"),
                ("worker.yaml".into(), "worker"),
            ],
            ("talosconfig", _) => vec![("talosconfig".into(), "talosconfig")],
            ("kubeconfig", _) => vec![("kubeconfig".into(), "kubeconfig")],
            ("render", Some(node)) => vec![(format!("{node}.yaml"), "config")],
            _ => vec![],
        };
        files.extend(named.into_iter().map(|(name, output)| (key, name, output)));
    }
    // Refuse every target before writing anything.
    for (_, name, _) in &files {
        s.profile
            .workspace
            .refuse_overwrite(&out.join(name))
            .map_err(|e| CliError::input(format!("error: {e}")))?;
    }
    if !out.exists() {
        fs_err::create_dir_all(out)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs_err::set_permissions(out, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let mut written = Vec::new();
    for (key, name, output) in files {
        let bytes = s.read_plain(&key, output)?;
        atomic_write(&out.join(&name), &bytes, Some(0o600))?;
        written.push(name);
    }
    super::outln!(
        "{}: wrote {} (mode 0600)",
        out.display(),
        written.join(", ")
    );
    Ok(())
}

/// Prints one line per step as the engine finishes it (stdout), moves the per-node board
/// (stderr, see [`crate::progress`]) and remembers what happened for the summary.
#[derive(Default)]
struct Progress {
    ran: usize,
    cached: usize,
    /// Every finished step of this run (ran or reused), by id.
    realised: BTreeMap<StepId, Realised>,
    /// Failed steps with the first line of their error.
    failed: BTreeMap<StepId, String>,
    skipped: BTreeSet<StepId>,
    /// Result lines held back to be printed as one block (a run where every step is cached
    /// prints them all at once: one write, not one per step).
    held: Option<String>,
}

/// What the board says while a step of `kind` runs.
fn doing(kind: &str) -> &'static str {
    match kind {
        "patch" => "writing its patch",
        "render" => "rendering its config",
        "discover" => "looking for maintenance-mode machines",
        "apply" => "applying its config",
        "upgrade" => "checking its Talos version",
        "ready" => "waiting until it answers",
        "bootstrap" => "bootstrapping etcd",
        "health" => "waiting for the cluster to become healthy",
        "kubeconfig" => "deriving the kubeconfig",
        "upgrade-k8s" => "checking Kubernetes versions",
        "verify" => "verifying nodes, etcd members and extensions",
        _ => "working",
    }
}

fn line_of(step: &Step) -> &str {
    step.id.node().unwrap_or(crate::progress::CLUSTER)
}

impl Observer for Progress {
    fn started(&mut self, step: &Step, _status: &Status) {
        if matches!(step.id.kind(), "secrets" | "base-config" | "talosconfig") {
            return;
        }
        crate::progress::state(line_of(step), doing(step.id.kind()));
    }

    fn finished(&mut self, r: &Realised, status: &Status) {
        self.realised.insert(r.id.clone(), r.clone());
        self.report(r, status);
        if r.ran {
            let done = match r.id.kind() {
                "apply" => Some("config applied; rebooting"),
                "upgrade" => Some("Talos version checked"),
                "ready" => Some("ready"),
                "bootstrap" => Some("etcd bootstrapped"),
                "health" => Some("healthy"),
                "verify" => Some("verified"),
                _ => None,
            };
            if let Some(done) = done {
                let line = r.id.node().unwrap_or(crate::progress::CLUSTER);
                crate::progress::state(line, done);
            }
        }
    }

    fn failed(&mut self, step: &Step, error: &EngineError) {
        let text = error.to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        crate::progress::state(line_of(step), &format!("FAILED {}: {first}", step.id));
        self.failed.insert(step.id.clone(), first);
    }

    fn skipped(&mut self, step: &Step, because: &[StepId]) {
        crate::progress::state(
            line_of(step),
            &format!(
                "{} not run: {} did not succeed",
                step.id,
                because
                    .iter()
                    .map(StepId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        self.skipped.insert(step.id.clone());
    }
}

impl Progress {
    fn report(&mut self, r: &crate::engine::Realised, status: &Status) {
        if r.ran {
            self.ran += 1;
            let why = match status {
                Status::Run { new: true, .. } => "new".to_string(),
                Status::Run { changes, .. } if changes.is_empty() => "re-observed".to_string(),
                other => other.reason(),
            };
            let verb = if matches!(
                r.id.kind(),
                "secrets" | "base-config" | "talosconfig" | "patch" | "render" | "kubeconfig"
            ) {
                "built"
            } else {
                "ran"
            };
            crate::progress::println(&format!(
                "  {verb:<8} {:<16} {} ms  ({why})",
                r.id.as_str(),
                r.duration_ms
            ));
        } else {
            self.cached += 1;
            let line = format!("  cached   {}", r.id.as_str());
            match &mut self.held {
                Some(held) => {
                    held.push_str(&line);
                    held.push('\n');
                }
                None => crate::progress::println(&line),
            }
        }
    }
}

/// How many talosctl/kubectl processes run at once: `--jobs`, else the profile's `up.jobs`,
/// else [`DEFAULT_JOBS`]. Installed as the process bound ([`crate::exec::set_process_limit`]).
fn jobs_for(s: &Session, flag: Option<usize>) -> usize {
    let jobs = flag.or(s.profile.up.jobs).unwrap_or(DEFAULT_JOBS).max(1);
    crate::exec::set_process_limit(jobs);
    jobs
}

/// How many steps are in flight at once: every node can be waited for at the same time (a
/// node rebooting costs a sleeping thread, not a process slot), plus the cluster-wide steps.
fn steps_in_flight(s: &Session, jobs: usize) -> usize {
    (s.profile.nodes.len() + 4).clamp(jobs, 1024)
}

/// Default of `up --jobs`: enough that nodes reboot together, few enough that a laptop running
/// talosctl for each of them stays responsive.
pub const DEFAULT_JOBS: usize = 8;

fn config_steps(s: &Session) -> Vec<Step> {
    s.steps()
        .into_iter()
        .filter(|st| graph::BUILD_KINDS.contains(&st.id.kind()))
        .collect()
}

/// Realise the configuration steps (the caller holds the store lock), write what operators
/// read, and pin the contract / talosctl version / secrets hashes in the lock file.
fn realise_configs(s: &Session, progress: &mut Progress, jobs: usize) -> Result<LockFile> {
    // The refs written below record where the profile lives: gc roots only live profiles.
    s.store.set_ref_source(&s.profile.name, &s.profile.source)?;
    let steps = config_steps(s);
    let done = s.engine().realise_scheduled(
        &steps,
        &crate::steps::builders(&s.step_env()),
        &BTreeSet::new(),
        jobs,
        progress,
    )?;
    materialise(s, &done)?;
    let lock = pin_lock(s, s.lock.clone(), &done)?;
    if lock != s.lock {
        lock.save(&s.profile.workspace)?;
    }
    Ok(lock)
}

pub(super) fn build(s: Session) -> Result<()> {
    let _guard = s.store.lock(true)?;
    let mut progress = Progress::default();
    let jobs = jobs_for(&s, None);
    realise_configs(&s, &mut progress, jobs)?;
    report!(
        "{}: {} built, {} cached",
        s.profile.name,
        progress.ran,
        progress.cached
    );
    Ok(())
}

/// The whole runbook: configs, discovery of maintenance-mode nodes (only when a node must be
/// applied), apply, upgrade, ready, bootstrap (once, ever), health, kubeconfig, upgrade-k8s,
/// verify. Nodes are handled `jobs` at a time; a node that fails stops only what depends on
/// it, and the summary table says what happened to each node.
/// How `up` was asked to run (command-line flags).
#[derive(Debug, Clone, Copy)]
pub(super) struct UpOptions {
    /// Merge the kubeconfig into $KUBECONFIG / ~/.kube/config (unless the profile says
    /// `kubeconfig.merge: false`).
    pub merge_kubeconfig: bool,
    /// talosctl/kubectl processes at once (`--jobs`; else the profile's `up.jobs`).
    pub jobs: Option<usize>,
}

pub(super) fn up(mut s: Session, options: UpOptions) -> Result<()> {
    let timing = Timing::from_env().map_err(|e| CliError::input(format!("error: {e}")))?;
    check_kubernetes_jump(&s)?;
    // Every step of `up` keys on both tools: probe them in the background while the store is
    // read; only after the checks that refuse without running anything. On a first bootstrap
    // kubectl is needed only at the end (verify), and its probe (~100 ms of CPU) would compete
    // with the renders and applies that every node's reboot waits for: it is probed once the
    // first node is back from its reboot and the CPU idles (`server_version`).
    s.tools.prefetch([crate::derivation::Tool::Talosctl]);
    if s.lock.cluster_exists() {
        s.tools.prefetch([crate::derivation::Tool::Kubectl]);
    }
    let jobs = jobs_for(&s, options.jobs);
    resolve_proxmox_macs(&mut s.profile)?;
    let _guard = s.store.lock(true)?;
    let mut progress = Progress::default();
    // A run that changes nothing (every object in the store, nothing to observe) needs one
    // verified read of each step -- the plan -- and then only checks refs, files and the lock
    // file: nothing is rewritten, decrypted or sent (issue 10: a no-op `up` cost 4.5 ms a node).
    let planned = s.engine().plan(&s.steps())?;
    if planned.iter().all(|p| p.status == Status::Cached) {
        return up_unchanged(&s, &planned, &mut progress, options);
    }
    let names: Vec<String> = s.profile.nodes.iter().map(|n| n.name.clone()).collect();
    crate::progress::install(&names);
    let result = up_locked(&s, timing, jobs, options, &mut progress);
    let changes = crate::progress::finish();
    if progress.realised.keys().any(|id| id.kind() == "apply")
        || progress
            .failed
            .keys()
            .chain(&progress.skipped)
            .any(|id| !graph::BUILD_KINDS.contains(&id.kind()))
    {
        print_summary(&s, &progress, &changes);
    }
    let (talosconfig, kubeconfig) = result?;
    report_up(&s, &progress, &talosconfig, &kubeconfig);
    Ok(())
}

/// The last line of `up`: what ran, what was reused, and where the operator's files are.
fn report_up(s: &Session, progress: &Progress, talosconfig: &Path, kubeconfig: &Path) {
    report!(
        "{}: {} ran, {} cached; talosconfig {} ; kubeconfig {}",
        s.profile.name,
        progress.ran,
        progress.cached,
        talosconfig.display(),
        kubeconfig.display()
    );
}

use crate::steps::cluster::{ClusterEnv, SharedLock, Timing};

/// [`up`] once the store is locked: returns where the talosconfig and kubeconfig are.
///
/// One scheduled run covers the configuration and the cluster steps, so the discovery scan
/// runs while configs render and a node is applied as soon as its own config is ready. What
/// `build` does after its steps happens here as each one finishes (see [`UpPublisher`]).
fn up_locked(
    s: &Session,
    timing: Timing,
    jobs: usize,
    options: UpOptions,
    progress: &mut Progress,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    // The refs written below record where the profile lives: gc roots only live profiles.
    s.store.set_ref_source(&s.profile.name, &s.profile.source)?;
    let all = s.steps();
    let engine = s.engine();
    // Scan only when some node must (or may: its config is not built yet) be applied: a fresh
    // observation, never a stale one.
    let must_apply = engine
        .plan(&all)?
        .iter()
        .any(|p| p.step.id.kind() == "apply" && p.status != Status::Cached);
    let force = if must_apply {
        [StepId::new("discover", None)].into()
    } else {
        Default::default()
    };
    let mut lock = s.lock.clone();
    if lock.contract.is_none() || s.contract.source == graph::ContractSource::Profile {
        lock.contract = Some(s.contract.contract.to_string());
    }
    let cluster = ClusterEnv {
        lock: SharedLock::new(s.profile.workspace.clone(), s.lock.clone()),
        talosconfig: s.profile.workspace.talosconfig(),
        kubeconfig: s.profile.workspace.kubeconfig(),
        timing,
        jobs,
        rolling: Default::default(),
        seen: Default::default(),
        bootstrapped_now: Default::default(),
    };
    cluster
        .lock
        .update_with(|l| *l = lock)
        .map_err(CliError::from)?;
    let env = crate::steps::StepEnv {
        identities: s.identities.clone(),
        cluster: Some(cluster.clone()),
    };
    let publisher = UpPublisher {
        s,
        lock: &cluster.lock,
        errors: Default::default(),
    };
    let result = engine.realise_publishing(
        &all,
        &crate::steps::builders(&env),
        &force,
        steps_in_flight(s, jobs),
        progress,
        &publisher,
    );
    let written = publisher
        .errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    // Whatever happened, hand the operator the kubeconfig if there is one (best effort: a
    // failure here must not hide the step error).
    let handed = (|| -> Result<Option<Vec<u8>>> {
        let kubeconfig = match &result {
            Ok(done) => done
                .iter()
                .find(|r| r.id.kind() == "kubeconfig")
                .map(|r| r.key),
            Err(_) => engine
                .plan(&all)?
                .into_iter()
                .find(|p| p.step.id.kind() == "kubeconfig" && p.status == Status::Cached)
                .and_then(|p| p.key),
        };
        if let Some(key) = kubeconfig {
            ensure_output(s, &key, "kubeconfig", &cluster.kubeconfig, 0o600)?;
            if options.merge_kubeconfig && s.profile.kubeconfig.merge {
                return Ok(Some(s.read_plain(&key, "kubeconfig")?));
            }
        }
        Ok(None)
    })();
    let merged = match &handed {
        Err(e) => {
            eprintln!(
                "warning: could not write {}: {}",
                cluster.kubeconfig.display(),
                e.message
            );
            Ok(())
        }
        // Runbook step 11: the context merged into the operator's kubeconfig.
        Ok(Some(bytes)) if options.merge_kubeconfig && s.profile.kubeconfig.merge => {
            merge_kubeconfig(bytes)
        }
        Ok(_) => Ok(()),
    };
    if let (Err(_), Err(m)) = (&result, &merged) {
        eprintln!("warning: {}", m.message.trim_start_matches("error: "));
    }
    if let Some(e) = written.into_iter().next() {
        return Err(e);
    }
    if let Err(e) = result {
        let failed: Vec<String> = e
            .failures()
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>();
        let mut message = if failed.len() == 1 {
            format!("error: {}", failed[0])
        } else {
            format!(
                "error: {} steps failed:\n{}",
                failed.len(),
                failed
                    .iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        if !progress.skipped.is_empty() {
            message.push_str(&format!(
                "\nnot run because of it: {}",
                progress
                    .skipped
                    .iter()
                    .map(StepId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        message.push_str(
            "\nwhat succeeded is recorded; the next `talix up` continues with what failed",
        );
        return Err(CliError::failure(message));
    }
    merged?;
    Ok((cluster.talosconfig, cluster.kubeconfig))
}

/// What `build` does after its steps, done by `up` as each step finishes, on the thread that
/// ran it and before anything that comes after it starts ([`crate::engine::Publish`]): node
/// patches and the talosconfig written for the operator (discovery and applies read that
/// talosconfig), the talosctl version and secrets hashes pinned in the lock file (through the
/// run's one lock-file owner). Errors are kept for the end of the run.
struct UpPublisher<'a> {
    s: &'a Session,
    lock: &'a SharedLock,
    errors: std::sync::Mutex<Vec<CliError>>,
}

impl crate::engine::Publish for UpPublisher<'_> {
    fn published(&self, _step: &Step, r: &Realised) {
        if graph::BUILD_KINDS.contains(&r.id.kind())
            && let Err(e) = self.after_config_step(r)
        {
            self.errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e);
        }
    }
}

impl UpPublisher<'_> {
    fn after_config_step(&self, r: &Realised) -> Result<()> {
        let s = self.s;
        materialise(s, std::slice::from_ref(r))?;
        match r.id.kind() {
            "base-config" => {
                if let Ok(v) = s.tools.get(crate::derivation::Tool::Talosctl) {
                    self.lock
                        .update_with(|l| l.talosctl_version = Some(v))
                        .map_err(CliError::from)?;
                }
            }
            "secrets" => {
                if let Some(bundle) = s
                    .store
                    .manifest(&r.key)?
                    .and_then(|m| m.outputs.get("bundle").map(|b| b.hash))
                {
                    let mut lock = self.lock.get();
                    s.record_secrets(&mut lock, bundle)?;
                    self.lock
                        .update_with(|l| l.secrets = lock.secrets)
                        .map_err(CliError::from)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The receipt of step `id` realised in this run, as JSON.
fn receipt_of(s: &Session, progress: &Progress, id: &StepId) -> Option<serde_json::Value> {
    let key = progress.realised.get(id)?.key;
    let bytes = s.read_plain(&key, "receipt").ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The table at the end of `up` (stdout, like the step lines): one row per node.
fn print_summary(s: &Session, progress: &Progress, changes: &BTreeMap<String, Vec<String>>) {
    let verify = receipt_of(s, progress, &StepId::new("verify", None));
    let lock = crate::lockfile::LockFile::load(s.profile.workspace.lock_file()).ok();
    let mut rows = vec![[
        "NODE".to_string(),
        "ROLE".into(),
        "ADDRESS".into(),
        "TALOS".into(),
        "READY".into(),
        "EXTENSIONS".into(),
        "CHANGED IN THIS RUN".into(),
    ]];
    for n in &s.profile.nodes {
        let ready_id = StepId::new("ready", Some(&n.name));
        let from_receipt = || {
            receipt_of(s, progress, &ready_id).and_then(|r| r["talos"].as_str().map(str::to_string))
        };
        // The version the upgrade step confirmed and recorded in the lock file, which is what
        // the ready receipt says too; read from the receipt only when the node was handled in
        // this run (a no-op `up` at 250 nodes read 250 receipts just for this column).
        let from_lock = || {
            lock.as_ref()
                .and_then(|l| l.nodes.get(&n.name))
                .and_then(|l| l.talos_version.clone())
        };
        let talos = if progress.realised.get(&ready_id).is_some_and(|r| r.ran) {
            from_receipt().or_else(from_lock)
        } else {
            from_lock().or_else(from_receipt)
        }
        .unwrap_or_else(|| "-".into());
        let failed: Vec<&StepId> = progress
            .failed
            .keys()
            .filter(|id| id.node() == Some(n.name.as_str()))
            .collect();
        let ready = match &verify {
            Some(v) => match v["ready"].get(&n.name).and_then(|r| r.as_bool()) {
                Some(true) => "yes",
                Some(false) => "no",
                // Receipts from before per-node readiness was recorded: verify passed, so
                // every node was Ready.
                None => "yes",
            },
            None if !failed.is_empty() => "no",
            None if progress.realised.contains_key(&ready_id) => "api only",
            None => "?",
        };
        let extensions = verify
            .as_ref()
            .and_then(|v| v["extensions"].get(&n.name).cloned())
            .and_then(|e| serde_json::from_value::<Vec<String>>(e).ok())
            .filter(|e| !e.is_empty())
            .map(|e| e.join(","))
            .unwrap_or_else(|| "-".into());
        let mut what: Vec<String> = changes.get(&n.name).cloned().unwrap_or_default();
        what.extend(failed.iter().map(|id| format!("FAILED {id}")));
        let skipped = progress
            .skipped
            .iter()
            .filter(|id| id.node() == Some(n.name.as_str()))
            .count();
        if skipped > 0 {
            what.push(format!("{skipped} step(s) not run"));
        }
        let what = if what.is_empty() {
            "-".to_string()
        } else {
            what.join("; ")
        };
        rows.push([
            n.name.clone(),
            n.role.to_string(),
            n.ip.to_string(),
            talos,
            ready.to_string(),
            extensions,
            what,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    // One block, one write.
    let mut table = String::from("\n");
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        table.push_str(line.join("  ").trim_end());
        table.push('\n');
    }
    report!("{table}");
}

/// Merge the cluster's context into `$KUBECONFIG` (first entry) or `~/.kube/config` and say
/// which context is now current (see [`crate::kubeconfig_merge`]).
fn merge_kubeconfig(bytes: &[u8]) -> Result<()> {
    use crate::kubeconfig_merge as km;
    let target = km::target_from_env(&|name| std::env::var_os(name)).ok_or_else(|| {
        CliError::from(
            "cannot merge the kubeconfig: neither KUBECONFIG nor HOME is set (pass --no-merge-kubeconfig or set kubeconfig.merge: false)",
        )
    })?;
    let outcome = km::merge_file(&target, bytes).map_err(|e| {
        CliError::from(format!(
            "{e}\nhint: the cluster is up and its kubeconfig is in the config dir; fix or move that file, or pass --no-merge-kubeconfig"
        ))
    })?;
    if outcome.changed {
        eprintln!(
            "kubeconfig: merged context {} into {}; current context is now {}",
            outcome.context,
            outcome.path.display(),
            outcome.context
        );
    } else {
        eprintln!(
            "kubeconfig: {} already has context {} (current); unchanged",
            outcome.path.display(),
            outcome.context
        );
    }
    Ok(())
}

/// `up` when every step is cached: what [`Engine::realise_forcing`] does with cached steps
/// (refs, one line each), the files operators read made to match, the lock file pinned.
fn up_unchanged(
    s: &Session,
    planned: &[crate::engine::Planned],
    progress: &mut Progress,
    options: UpOptions,
) -> Result<()> {
    let mut done = Vec::new();
    progress.held = Some(String::new());
    let mut failed = None;
    for p in planned {
        let key = p.key.expect("cached steps have keys");
        if let Err(e) = s.store.set_ref(&s.profile.name, &p.step.id, &key) {
            failed = Some(e);
            break;
        }
        let r = Realised {
            id: p.step.id.clone(),
            ran: false,
            key,
            duration_ms: 0,
        };
        progress.report(&r, &Status::Cached);
        progress.realised.insert(r.id.clone(), r.clone());
        done.push(r);
    }
    if let Some(held) = progress.held.take().filter(|h| !h.is_empty()) {
        crate::progress::println(held.trim_end_matches('\n'));
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    let known = planned
        .iter()
        .filter_map(|p| p.outputs.as_ref().map(|o| (&p.step.id, o)))
        .collect();
    materialise_known(s, &done, &known)?;
    let lock = pin_lock(s, s.lock.clone(), &done)?;
    if lock != s.lock {
        lock.save(&s.profile.workspace)?;
    }
    let (talosconfig, kubeconfig) = (
        s.profile.workspace.talosconfig(),
        s.profile.workspace.kubeconfig(),
    );
    if let Some(r) = done.iter().find(|r| r.id.kind() == "kubeconfig") {
        if let Err(e) = ensure_output(s, &r.key, "kubeconfig", &kubeconfig, 0o600) {
            eprintln!(
                "warning: could not write {}: {}",
                kubeconfig.display(),
                e.message
            );
        } else if options.merge_kubeconfig && s.profile.kubeconfig.merge {
            // Runbook step 11 also on a run that changes nothing: the merge itself writes only
            // when the operator's kubeconfig lacks (or differs in) this cluster's context.
            merge_kubeconfig(&s.read_plain(&r.key, "kubeconfig")?)?;
        }
    }
    // The table of a run that changed nothing: every node as its receipts say, nothing changed.
    if done.iter().any(|r| r.id.kind() == "apply") {
        print_summary(s, progress, &BTreeMap::new());
    }
    report_up(s, progress, &talosconfig, &kubeconfig);
    Ok(())
}

/// Refused before anything changes: a Kubernetes jump upgrade-k8s would refuse half-way.
pub(super) fn check_kubernetes_jump(s: &Session) -> Result<()> {
    if let Some(current) = s.lock.kubernetes.as_deref() {
        let from: crate::profile::model::Version = current.parse().map_err(|e: String| {
            CliError::input(format!(
                "error: {}: kubernetes: {e}",
                s.profile.workspace.lock_file().display()
            ))
        })?;
        crate::steps::cluster::check_kubernetes_path(&from, &s.profile.talos.kubernetes_version)
            .map_err(|e| {
                CliError::input(format!(
                    "error: {}: talos.kubernetes_version: {e}\nnothing was changed",
                    s.profile.source.display()
                ))
            })?;
    }
    Ok(())
}

/// Nodes without a MAC in the profile or the lock file but with a Proxmox `vmid` get the MAC
/// of their VM's first NIC (`net0` first) from the Proxmox API before anything is built, so
/// their configs select the NIC by MAC (trap 10); the apply records it in the lock file, and
/// later offline builds select the same NIC. Returns the nodes whose MAC came from Proxmox.
pub(super) fn resolve_proxmox_macs(profile: &mut crate::profile::Profile) -> Result<Vec<String>> {
    let Some(px) = profile.proxmox.clone() else {
        return Ok(vec![]);
    };
    let wanted: Vec<u32> = profile
        .nodes
        .iter()
        .filter(|n| n.mac.is_none())
        .filter_map(|n| n.vmid)
        .collect();
    if wanted.is_empty() {
        return Ok(vec![]);
    }
    let client = crate::proxmox::ProxmoxClient::from_profile(&px)
        .map_err(|e| CliError::from(format!("error: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let macs = runtime
        .block_on(client.vm_macs(&wanted))
        .map_err(|e| CliError::from(format!("error: {e}")))?;
    let mut filled = Vec::new();
    for node in &mut profile.nodes {
        if node.mac.is_none()
            && let Some(mac) = node
                .vmid
                .and_then(|id| macs.get(&id))
                .and_then(|m| m.first())
        {
            node.mac = Some(mac.to_ascii_lowercase());
            filled.push(node.name.clone());
        }
    }
    Ok(filled)
}

/// Write what operators read to the config dir: each node patch in plaintext (no secrets) to
/// `<config_dir>/<patches_dir>/<node>.yaml`, and the talosconfig 0600 to
/// `<config_dir>/talosconfig`. Files are rewritten only when their content differs.
fn materialise(s: &Session, done: &[Realised]) -> Result<()> {
    materialise_known(s, done, &BTreeMap::new())
}

/// [`materialise`], with the output hashes a plan already verified (`known`, by step): their
/// manifests are not read again.
fn materialise_known(
    s: &Session,
    done: &[Realised],
    known: &BTreeMap<&StepId, &BTreeMap<String, crate::digest::Digest>>,
) -> Result<()> {
    for r in done {
        let (target, output, mode) = match (r.id.kind(), r.id.node()) {
            ("patch", Some(node)) => (s.profile.workspace.node_patch(node), "patch", 0o644),
            ("talosconfig", None) => (s.profile.workspace.talosconfig(), "talosconfig", 0o600),
            _ => continue,
        };
        let want = known.get(&r.id).and_then(|o| o.get(output)).copied();
        ensure_output_hashed(s, &r.key, output, want, &target, mode)?;
    }
    Ok(())
}

/// Make `target` hold output `output` of object `key` with `mode`. A file that already has the
/// content is recognised by the plaintext hash the manifest records, so nothing is decrypted,
/// rewritten or synced (the mode is still enforced).
pub(super) fn ensure_output(
    s: &Session,
    key: &crate::digest::Digest,
    output: &str,
    target: &Path,
    mode: u32,
) -> Result<()> {
    ensure_output_hashed(s, key, output, None, target, mode)
}

/// [`ensure_output`] given the output's plaintext hash when a verified manifest said it
/// (`want`), else read from the manifest.
fn ensure_output_hashed(
    s: &Session,
    key: &crate::digest::Digest,
    output: &str,
    want: Option<crate::digest::Digest>,
    target: &Path,
    mode: u32,
) -> Result<()> {
    let want = match want {
        Some(_) => want,
        None => s
            .store
            .manifest(key)?
            .and_then(|m| m.outputs.get(output).map(|o| o.hash)),
    };
    let is_file = std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_file());
    let have = is_file
        .then(|| std::fs::read(target).ok())
        .flatten()
        .map(|b| crate::digest::Digest::of_domain(crate::digest::domain::OBJECT, &b));
    if want.is_some() && have == want {
        use std::os::unix::fs::PermissionsExt;
        if fs_err::metadata(target)?.permissions().mode() & 0o777 != mode {
            fs_err::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
        }
        return Ok(());
    }
    let bytes = s.read_plain(key, output)?;
    s.profile.workspace.ensure_file(target, &bytes, mode)?;
    Ok(())
}

/// Record the contract (and talosctl version) in the lock file the first time configs are built,
/// and the secrets hashes.
fn pin_lock(s: &Session, mut lock: LockFile, done: &[Realised]) -> Result<LockFile> {
    if lock.contract.is_none() || s.contract.source == graph::ContractSource::Profile {
        lock.contract = Some(s.contract.contract.to_string());
    }
    if done.iter().any(|r| r.id.kind() == "base-config")
        && let Ok(v) = s.tools.get(crate::derivation::Tool::Talosctl)
    {
        lock.talosctl_version = Some(v);
    }
    let secrets = done.iter().find(|r| r.id == graph::secrets_id());
    if let Some(m) = secrets
        .map(|r| s.store.manifest(&r.key))
        .transpose()?
        .flatten()
        && let Some(bundle) = m.outputs.get("bundle")
    {
        s.record_secrets(&mut lock, bundle.hash)?;
    }
    Ok(lock)
}
