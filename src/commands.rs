//! What each command does: resolves the parsed flags (profile, store, lock file) and calls the
//! engine. This is the edge: errors become one message and an exit code here.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use std::sync::Arc;

use crate::cli::{Cli, Command, ContractArgs, SecretsAction, StoreAction};
use crate::derivation::{Step, StepId};
use crate::digest::{Digest, domain};
use crate::engine::{Engine, Planned, Status};
use crate::exec::ToolVersions;
use crate::graph::{self, EffectiveContract};
use crate::lockfile::LockFile;
use crate::lockfile::SecretsLock;
use crate::profile::{self, Finding, Profile};
use crate::secrets::{AgeObjectCipher, LazyIdentities, Recipients, SecretsCommands};
use crate::steps::StepEnv;
use crate::store::Store;
use crate::store::local::{LocalStore, atomic_write};

/// A failure at the edge: what to print and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// Bad input from the operator (exit 2).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        Self {
            code: 1,
            message: format!("error: {e}"),
        }
    }
}

type Result<T> = std::result::Result<T, CliError>;

/// Everything a profile command needs, resolved once.
pub struct Session {
    pub profile: Profile,
    pub lock: LockFile,
    pub contract: EffectiveContract,
    pub store: LocalStore,
    pub tools: ToolVersions,
    pub identities: Arc<LazyIdentities>,
    pub cipher: AgeObjectCipher,
}

fn print_warnings(warnings: &[Finding]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Load and validate a profile; errors exit 2.
pub fn load_profile(path: &Path) -> Result<Profile> {
    match profile::load(path) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            Ok(loaded.profile)
        }
        Err(e) => {
            print_warnings(&e.warnings);
            Err(CliError::input(e.to_string()))
        }
    }
}

/// The store for a command: `--store`/`TALIX_STORE`, else `<workspace>/store`.
pub fn store_dir(flag: Option<&Path>, profile_path: Option<&Path>) -> PathBuf {
    match (flag, profile_path) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(p)) => {
            profile::workspace_root(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
                .join("store")
        }
        (None, None) => PathBuf::from("store"),
    }
}

impl Session {
    pub fn open(
        cli_store: Option<&Path>,
        identity: Option<&Path>,
        profile_path: &Path,
        contract: &ContractArgs,
    ) -> Result<Self> {
        let profile = load_profile(profile_path)?;
        let lock = LockFile::load(&profile.lock_path())
            .map_err(|e| CliError::input(format!("error: {e}")))?;
        let contract = graph::effective_contract(&profile, &lock, contract.allow_contract_change)
            .map_err(|e| CliError::input(format!("error: {e}")))?;
        if contract.source == graph::ContractSource::Profile
            && lock
                .contract
                .as_deref()
                .is_some_and(|c| c != contract.contract.to_string())
        {
            eprintln!(
                "warning: changing the config contract of {} from {} to {} (--allow-contract-change)",
                profile.name,
                lock.contract.as_deref().unwrap_or("?"),
                contract.contract
            );
        }
        if !profile.talos.secrets_file.exists() && lock.cluster_exists() {
            return Err(CliError::input(format!(
                "error: {} is missing, but {} records that the cluster was bootstrapped with secrets {}\nhint: restore the secrets file from git or a backup; new secrets would lock you out of the running cluster",
                profile.talos.secrets_file.display(),
                profile.lock_path().display(),
                lock.bootstrap
                    .as_ref()
                    .map(|b| b.secrets_hash.short())
                    .unwrap_or_default()
            )));
        }
        let store = LocalStore::open(&store_dir(cli_store, Some(profile_path)))?;
        let recipients = recipients_of(&profile)?;
        let identities = Arc::new(LazyIdentities::new(identity.map(Path::to_path_buf)));
        let cipher = AgeObjectCipher {
            recipients,
            identities: identities.clone(),
        };
        Ok(Self {
            profile,
            lock,
            contract,
            store,
            tools: ToolVersions::default(),
            identities,
            cipher,
        })
    }

    pub fn step_env(&self) -> StepEnv {
        StepEnv {
            identities: self.identities.clone(),
            cluster: None,
        }
    }

    /// Record the current secrets file (ciphertext hash -> bundle hash) in `lock`.
    pub fn record_secrets(&self, lock: &mut LockFile, bundle_hash: Digest) -> Result<()> {
        let ciphertext = fs_err::read(&self.profile.talos.secrets_file)?;
        lock.secrets = Some(SecretsLock {
            bundle_hash,
            ciphertext_hash: Digest::of_domain(domain::FILE, &ciphertext),
        });
        Ok(())
    }

    /// An output's plaintext (decrypted when the object is secret).
    pub fn read_plain(&self, key: &Digest, output: &str) -> Result<Vec<u8>> {
        let manifest = self
            .store
            .manifest(key)?
            .ok_or_else(|| CliError::from(format!("object {key} is not in the store")))?;
        let stored = self.store.read_output(key, output)?;
        if manifest.outputs.get(output).is_some_and(|o| o.encrypted) {
            use crate::engine::ObjectCipher;
            return self.cipher.decrypt(&stored).map_err(CliError::from);
        }
        Ok(stored)
    }

    pub fn steps(&self) -> Vec<Step> {
        graph::steps(&self.profile, self.contract.contract)
    }

    pub fn engine(&self) -> Engine<'_> {
        Engine {
            profile: &self.profile,
            store: &self.store,
            tools: &self.tools,
            cipher: Some(&self.cipher),
        }
    }
}

/// The profile's recipients: `secrets.recipients` plus `<name>.recipients` beside it.
pub fn recipients_of(profile: &Profile) -> Result<Recipients> {
    let origin = format!("{}: secrets.recipients", profile.source.display());
    Recipients::from_sources(
        &profile.recipients,
        &origin,
        profile.recipients_file.as_deref(),
    )
    .map_err(|e| CliError::input(format!("error: {e}")))
}

pub fn dispatch(cli: Cli) -> Result<()> {
    let store_flag = cli.store.as_deref();
    let identity = cli.identity.as_deref();
    let open =
        |path: &Path, contract: &ContractArgs| Session::open(store_flag, identity, path, contract);
    match &cli.command {
        Command::Validate(p) => validate(&p.profile),
        Command::Plan {
            profile,
            json,
            contract,
        } => plan(open(&profile.profile, contract)?, &profile.profile, *json),
        Command::Why {
            profile,
            step,
            contract,
        } => why(open(&profile.profile, contract)?, &profile.profile, step),
        Command::Build { profile, contract } => build(open(&profile.profile, contract)?),
        Command::Up { profile, contract } => up(open(&profile.profile, contract)?),
        Command::Demo {
            keep,
            reboot_delay_ms,
        } => crate::demo::run(*keep, *reboot_delay_ms),
        Command::Export {
            profile,
            out,
            contract,
        } => export(open(&profile.profile, contract)?, out),
        Command::Secrets { action } => secrets_cmd(&open, action),
        Command::Store { action } => store_cmd(store_flag, action),
    }
}

fn validate(path: &Path) -> Result<()> {
    let profile = load_profile(path)?;
    let cps = profile.controlplanes().count();
    println!(
        "{}: profile {} is valid ({} control-plane, {} worker nodes)",
        path.display(),
        profile.name,
        cps,
        profile.nodes.len() - cps
    );
    Ok(())
}

fn status_counts(planned: &[Planned]) -> (usize, usize, usize) {
    let count = |w: &str| planned.iter().filter(|p| p.status.word() == w).count();
    (count("cached"), count("run"), count("blocked"))
}

fn plan(s: Session, path: &Path, as_json: bool) -> Result<()> {
    let planned = s.engine().plan(&s.steps())?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let steps: Vec<_> = planned
            .iter()
            .map(|p| {
                json!({
                    "id": p.step.id,
                    "status": p.status.word(),
                    "reason": p.status.reason(),
                    "key": p.key.map(|k| k.to_string()),
                    "inputs": p.inputs.as_ref().map(|i| i.flat()),
                })
            })
            .collect();
        let doc = json!({"profile": s.profile.name, "contract": s.contract.contract.to_string(), "steps": steps});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "plan for {} ({}), contract {}",
        s.profile.name,
        path.display(),
        s.contract.contract
    )?;
    let width = planned
        .iter()
        .map(|p| p.step.id.as_str().len())
        .max()
        .unwrap_or(0);
    for p in &planned {
        let reason = match &p.status {
            Status::Run {
                changes,
                new: false,
            } if changes.is_empty() => "not in the store".to_string(),
            other => other.reason(),
        };
        let line = format!(
            "  {:<8} {:<width$}  {}",
            p.status.word(),
            p.step.id.as_str(),
            reason
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    let (c, r, b) = status_counts(&planned);
    writeln!(
        out,
        "{} steps: {c} cached, {r} run, {b} blocked",
        planned.len()
    )?;
    Ok(())
}

fn why(s: Session, path: &Path, step: &str) -> Result<()> {
    let planned = s.engine().plan(&s.steps())?;
    let Some(p) = planned.iter().find(|p| p.step.id.as_str() == step) else {
        let ids: Vec<&str> = planned.iter().map(|p| p.step.id.as_str()).collect();
        return Err(CliError::input(format!(
            "error: {}: no step {step:?}; steps are: {}",
            path.display(),
            ids.join(", ")
        )));
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "step {} ({}): {}",
        p.step.id,
        if p.step.secret {
            "secret outputs"
        } else {
            "plain outputs"
        },
        p.status.word()
    )?;
    match &p.key {
        Some(k) => writeln!(out, "key {k}")?,
        None => writeln!(
            out,
            "key unknown until {} run",
            p.status.reason().trim_start_matches("waits for ")
        )?,
    }
    writeln!(out, "inputs:")?;
    let flat = match &p.inputs {
        Some(i) => i.flat(),
        None => p
            .step
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    };
    let width = flat.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in &flat {
        writeln!(out, "  {k:<width$}  {v}")?;
    }
    let previous = match s.store.get_ref(&s.profile.name, &p.step.id)? {
        Some(k) => s.store.manifest(&k)?,
        None => None,
    };
    match (previous, &p.inputs) {
        (None, _) => writeln!(out, "never realised in this store")?,
        (Some(m), Some(inputs)) => {
            writeln!(
                out,
                "last realised {} (key {}, {} ms)",
                m.created,
                m.key.short(),
                m.duration_ms
            )?;
            let changes = inputs.diff(&m.inputs);
            if changes.is_empty() {
                writeln!(out, "no input changed since")?;
            } else {
                writeln!(out, "changed since:")?;
                for c in changes {
                    writeln!(out, "  {c}")?;
                }
            }
            for (name, info) in &m.outputs {
                writeln!(
                    out,
                    "output {name}: {}{}",
                    info.hash.short(),
                    if info.encrypted { " (encrypted)" } else { "" }
                )?;
            }
        }
        (Some(m), None) => {
            writeln!(
                out,
                "last realised {} (key {}); upstream steps must run before the new key is known",
                m.created,
                m.key.short()
            )?;
        }
    }
    Ok(())
}

fn export(s: Session, out: &Path) -> Result<()> {
    let steps: Vec<Step> = s
        .steps()
        .into_iter()
        .filter(|st| graph::BUILD_KINDS.contains(&st.id.kind()))
        .collect();
    let planned = s.engine().plan(&steps)?;
    if planned.iter().any(|p| p.status != Status::Cached) {
        return Err(CliError {
            code: 1,
            message: format!(
                "error: configs of {} are not built; run `talix build {}` first",
                s.profile.name,
                s.profile.source.display()
            ),
        });
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
    for p in &planned {
        let key = p.key.expect("cached steps have keys");
        let files: Vec<(String, &str)> = match (p.step.id.kind(), p.step.id.node()) {
            ("base-config", _) => vec![
                ("controlplane.yaml".into(), "controlplane"),
                ("worker.yaml".into(), "worker"),
            ],
            ("talosconfig", _) => vec![("talosconfig".into(), "talosconfig")],
            ("render", Some(node)) => vec![(format!("{node}.yaml"), "config")],
            _ => vec![],
        };
        for (name, output) in files {
            let bytes = s.read_plain(&key, output)?;
            let target = out.join(&name);
            atomic_write(&target, &bytes, Some(0o600))?;
            written.push(name);
        }
    }
    println!(
        "{}: wrote {} (mode 0600)",
        out.display(),
        written.join(", ")
    );
    Ok(())
}

/// Prints one line per step as the engine finishes it; counts what ran.
#[derive(Default)]
struct Progress {
    ran: usize,
    cached: usize,
}

impl Progress {
    fn report_silently(&mut self, r: &crate::engine::Realised) {
        if r.ran {
            self.ran += 1
        } else {
            self.cached += 1
        }
    }

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
            println!(
                "  {verb:<8} {:<16} {} ms  ({why})",
                r.id.as_str(),
                r.duration_ms
            );
        } else {
            self.cached += 1;
            println!("  cached   {}", r.id.as_str());
        }
    }
}

fn config_steps(s: &Session) -> Vec<Step> {
    s.steps()
        .into_iter()
        .filter(|st| graph::BUILD_KINDS.contains(&st.id.kind()))
        .collect()
}

fn build(s: Session) -> Result<()> {
    let _guard = s.store.lock(true)?;
    let builders = crate::steps::builders(&s.step_env());
    let steps = config_steps(&s);
    let mut progress = Progress::default();
    s.engine()
        .realise(&steps, &builders, |r, st| progress.report(r, st))?;
    materialise(&s, &steps)?;
    let lock = pin_lock(&s, s.lock.clone())?;
    if lock != s.lock {
        lock.save(&s.profile.lock_path())?;
    }
    println!(
        "{}: {} built, {} cached",
        s.profile.name, progress.ran, progress.cached
    );
    Ok(())
}

/// The whole runbook: configs, discovery of maintenance-mode nodes (only when a node must be
/// applied), apply, ready, bootstrap (once, ever), health, kubeconfig, verify.
fn up(s: Session) -> Result<()> {
    use crate::steps::cluster::{ClusterEnv, SharedLock, Timing, write_private};
    let _guard = s.store.lock(true)?;
    let mut progress = Progress::default();
    let steps = config_steps(&s);
    s.engine()
        .realise(&steps, &crate::steps::builders(&s.step_env()), |r, st| {
            progress.report(r, st)
        })?;
    materialise(&s, &steps)?;
    let lock = pin_lock(&s, s.lock.clone())?;
    if lock != s.lock {
        lock.save(&s.profile.lock_path())?;
    }

    let cluster = ClusterEnv {
        lock: SharedLock::new(s.profile.lock_path(), lock),
        talosconfig: s.profile.talos.config_dir.join("talosconfig"),
        kubeconfig: s.profile.talos.config_dir.join("kubeconfig"),
        timing: Timing::from_env(),
    };
    let env = crate::steps::StepEnv {
        identities: s.identities.clone(),
        cluster: Some(cluster.clone()),
    };
    let builders = crate::steps::builders(&env);
    let all = s.steps();
    let planned = s.engine().plan(&all)?;
    let must_apply = planned
        .iter()
        .any(|p| p.step.id.kind() == "apply" && p.status != Status::Cached);
    let mut force = std::collections::BTreeSet::new();
    if must_apply {
        force.insert(StepId::new("discover", None));
    }
    let cluster_steps: Vec<Step> = all.clone();
    let engine = s.engine();
    let mut quiet = Progress::default();
    let result = engine.realise_forcing(&cluster_steps, &builders, &force, |r, st| {
        if graph::BUILD_KINDS.contains(&r.id.kind()) {
            quiet.report_silently(r);
        } else {
            progress.report(r, st);
        }
    });
    // Whatever happened, hand the operator the kubeconfig if there is one.
    if let Some(p) = engine
        .plan(&all)?
        .iter()
        .find(|p| p.step.id.kind() == "kubeconfig" && p.status == Status::Cached)
        && let Some(key) = p.key
    {
        write_private(&cluster.kubeconfig, &s.read_plain(&key, "kubeconfig")?)?;
    }
    result?;
    println!(
        "{}: {} ran, {} cached; talosconfig {} ; kubeconfig {}",
        s.profile.name,
        progress.ran,
        progress.cached,
        cluster.talosconfig.display(),
        cluster.kubeconfig.display()
    );
    Ok(())
}

/// Write what operators read to the config dir: each node patch in plaintext (no secrets) to
/// `<config_dir>/<patches_dir>/<node>.yaml`, and the talosconfig 0600 to
/// `<config_dir>/talosconfig`. Files are rewritten only when their content differs.
fn materialise(s: &Session, steps: &[Step]) -> Result<()> {
    let planned = s.engine().plan(steps)?;
    for p in &planned {
        let Some(key) = p.key.filter(|_| p.status == Status::Cached) else {
            continue;
        };
        let (target, output, mode) = match (p.step.id.kind(), p.step.id.node()) {
            ("patch", Some(node)) => (
                s.profile.talos.patches_dir.join(format!("{node}.yaml")),
                "patch",
                0o644,
            ),
            ("talosconfig", None) => (
                s.profile.talos.config_dir.join("talosconfig"),
                "talosconfig",
                0o600,
            ),
            _ => continue,
        };
        let bytes = s.read_plain(&key, output)?;
        if std::fs::read(&target).ok().as_deref() != Some(&bytes[..]) {
            atomic_write(&target, &bytes, Some(mode))?;
        }
    }
    Ok(())
}

/// Record the contract (and talosctl version) in the lock file the first time configs are built,
/// and the secrets hashes.
fn pin_lock(s: &Session, mut lock: LockFile) -> Result<LockFile> {
    if lock.contract.is_none() || s.contract.source == graph::ContractSource::Profile {
        lock.contract = Some(s.contract.contract.to_string());
    }
    let planned = s.engine().plan(&s.steps())?;
    if planned
        .iter()
        .any(|p| p.step.id.kind() == "base-config" && p.status == Status::Cached)
        && let Ok(v) = s.tools.get(crate::derivation::Tool::Talosctl)
    {
        lock.talosctl_version = Some(v);
    }
    if let Some(bundle) = planned
        .first()
        .and_then(|p| p.outputs.as_ref())
        .and_then(|o| o.get("bundle"))
    {
        s.record_secrets(&mut lock, *bundle)?;
    }
    Ok(lock)
}

fn store_cmd(flag: Option<&Path>, action: &StoreAction) -> Result<()> {
    let (profile, verify) = match action {
        StoreAction::Verify { profile } => (profile, true),
        StoreAction::Prune { profile } => (profile, false),
    };
    let store = LocalStore::open(&store_dir(flag, profile.as_deref()))?;
    if verify {
        let problems = store.verify()?;
        let n = store.keys()?.len();
        if problems.is_empty() {
            println!("{}: {n} objects verified", store.root().display());
            return Ok(());
        }
        return Err(CliError {
            code: 1,
            message: problems
                .iter()
                .map(|p| format!("error: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    let _lock = store.lock(true)?;
    let removed = store.prune()?;
    for r in &removed {
        println!("removed {}", r.display());
    }
    println!(
        "{}: pruned {} entries",
        store.root().display(),
        removed.len()
    );
    Ok(())
}

fn secrets_cmd(
    open: &dyn Fn(&Path, &ContractArgs) -> Result<Session>,
    action: &SecretsAction,
) -> Result<()> {
    let no_contract_change = ContractArgs::default();
    let profile = match action {
        SecretsAction::Init { profile, .. }
        | SecretsAction::Show(profile)
        | SecretsAction::Rekey(profile)
        | SecretsAction::Edit(profile)
        | SecretsAction::Verify(profile) => &profile.profile,
    };
    let s = open(profile, &no_contract_change)?;
    let file = s.profile.talos.secrets_file.clone();
    let secrets_err = |e: crate::secrets::SecretsError| CliError {
        code: 1,
        message: format!("error: {e}"),
    };
    let ids = || {
        s.identities.get().map_err(|e| CliError {
            code: 1,
            message: format!("error: {e}"),
        })
    };
    let mut lock = s.lock.clone();
    match action {
        SecretsAction::Init {
            force,
            i_know_this_breaks_the_cluster,
            from,
            ..
        } => {
            let source = match from {
                Some(path) => crate::secrets::BundleSource::Plaintext(
                    crate::secrets::SecretBytes::new(fs_err::read(path)?),
                ),
                None => {
                    let program = crate::exec::locate(crate::derivation::Tool::Talosctl)?;
                    let talosctl_version =
                        s.tools
                            .get(crate::derivation::Tool::Talosctl)
                            .map_err(|e| CliError {
                                code: 1,
                                message: format!("error: {e}"),
                            })?;
                    crate::secrets::BundleSource::Talosctl {
                        program,
                        contract: s.contract.contract.to_string(),
                        talosctl_version,
                    }
                }
            };
            let bootstrapped_with = lock.bootstrap.as_ref().map(|b| b.secrets_hash);
            let identities = if *force && bootstrapped_with.is_some() {
                Some(ids()?)
            } else {
                s.identities.get().ok()
            };
            let hash = SecretsCommands::init(
                &file,
                &s.cipher.recipients,
                source,
                crate::secrets::InitOptions {
                    force: *force,
                    bootstrapped_with,
                    i_know_this_breaks_the_cluster: *i_know_this_breaks_the_cluster,
                },
                identities,
            )
            .map_err(secrets_err)?;
            s.record_secrets(&mut lock, hash)?;
            lock.save(&s.profile.lock_path())?;
            realise_secrets_step(&s);
            println!(
                "{}: new secrets bundle {} encrypted to {} recipient(s)",
                file.display(),
                hash.short(),
                s.cipher.recipients.len()
            );
        }
        SecretsAction::Show(_) => {
            let bundle = SecretsCommands::show(&file, ids()?).map_err(secrets_err)?;
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                eprintln!("warning: printing the plaintext secrets bundle to a terminal");
            }
            std::io::stdout().write_all(bundle.expose_secret())?;
        }
        SecretsAction::Rekey(_) => {
            let hash =
                SecretsCommands::rekey(&file, ids()?, &s.cipher.recipients).map_err(secrets_err)?;
            s.record_secrets(&mut lock, hash)?;
            lock.save(&s.profile.lock_path())?;
            realise_secrets_step(&s);
            println!(
                "{}: re-encrypted to {} recipient(s); bundle {} unchanged",
                file.display(),
                s.cipher.recipients.len(),
                hash.short()
            );
        }
        SecretsAction::Edit(_) => {
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".to_string());
            match SecretsCommands::edit(&file, ids()?, &s.cipher.recipients, &editor)
                .map_err(secrets_err)?
            {
                crate::secrets::EditOutcome::Unchanged(h) => {
                    println!("{}: unchanged (bundle {})", file.display(), h.short())
                }
                crate::secrets::EditOutcome::Changed { before, after } => {
                    s.record_secrets(&mut lock, after)?;
                    lock.save(&s.profile.lock_path())?;
                    realise_secrets_step(&s);
                    println!(
                        "{}: bundle {} -> {}",
                        file.display(),
                        before.short(),
                        after.short()
                    );
                }
            }
        }
        SecretsAction::Verify(_) => {
            let hash = SecretsCommands::verify(&file, ids()?).map_err(secrets_err)?;
            println!("{}: valid secrets bundle {hash}", file.display());
        }
    }
    Ok(())
}

/// Realise the `secrets` step for the file as it is now, so `plan` knows its output hash without
/// decrypting (rekey: same hash, everything downstream stays cached). Best effort: an operator
/// who encrypted to others' keys only may not be able to decrypt.
fn realise_secrets_step(s: &Session) {
    let steps = s.steps();
    let builders = crate::steps::builders(&s.step_env());
    let result = s
        .store
        .lock(true)
        .map_err(|e| e.to_string())
        .and_then(|_guard| {
            s.engine()
                .realise(&steps[..1], &builders, |_, _| {})
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        eprintln!(
            "note: the secrets step was not recorded in the store ({e}); `talix build` will do it"
        );
    }
}
