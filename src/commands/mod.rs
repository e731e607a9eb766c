//! What each command does: resolves the parsed flags (profile, store, lock file) into a
//! [`Session`] and calls the engine. This is the edge: errors become one message and an exit
//! code here. One file per group of commands: `inspect` (validate, plan, why, store),
//! `realise` (build, export, up), `secrets`.

mod inspect;
mod realise;
mod secrets;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{Cli, Command, ContractArgs};
use crate::derivation::Step;
use crate::digest::{Digest, domain};
use crate::engine::Engine;
use crate::exec::ToolVersions;
use crate::graph::{self, EffectiveContract};
use crate::lockfile::{LockFile, SecretsLock};
use crate::profile::{self, Finding, Profile};
use crate::secrets::{AgeObjectCipher, LazyIdentities, Recipients};
use crate::steps::StepEnv;
use crate::store::local::LocalStore;
use crate::workspace::{PathPolicy, WorkspaceLock};

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
    /// Held by sessions that may write the lock file, from before it was read until the end.
    _workspace_lock: Option<WorkspaceLock>,
}

/// Whether a session may write the workspace (lock file, secrets file, configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `plan`, `why`, `export`: read the lock file as it is (it is replaced atomically).
    Read,
    /// `build`, `up`, `secrets`: take the workspace lock first, then read the lock file, so a
    /// run that waited for another one starts from what that run recorded.
    Write,
}

fn print_warnings(warnings: &[Finding]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Load and validate a profile; errors exit 2.
pub fn load_profile(path: &Path, policy: PathPolicy) -> Result<Profile> {
    match profile::load_with(path, policy) {
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
            let (ws, _) = crate::workspace::Workspace::resolve(
                &std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
                "",
                Default::default(),
                PathPolicy::default(),
            );
            ws.default_store()
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
        policy: PathPolicy,
        access: Access,
    ) -> Result<Self> {
        let mut profile = load_profile(profile_path, policy)?;
        let workspace_lock = match access {
            Access::Read => None,
            Access::Write => Some(profile.workspace.lock(true)?),
        };
        let lock = LockFile::load(profile.workspace.lock_file())
            .map_err(|e| CliError::input(format!("error: {e}")))?;
        // A MAC learned from the Proxmox API at an earlier `up` selects the same NIC offline.
        for node in &mut profile.nodes {
            if node.mac.is_none() {
                node.mac = lock.nodes.get(&node.name).and_then(|n| n.mac.clone());
            }
        }
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
        if !profile.workspace.secrets_file().exists() && lock.cluster_exists() {
            return Err(CliError::input(format!(
                "error: {} is missing, but {} records that the cluster was bootstrapped with secrets {}\nhint: restore the secrets file from git or a backup; new secrets would lock you out of the running cluster",
                profile.workspace.secrets_file().display(),
                profile.workspace.lock_file().display(),
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
            _workspace_lock: workspace_lock,
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
        let ciphertext = fs_err::read(self.profile.workspace.secrets_file())?;
        lock.secrets = Some(SecretsLock {
            bundle_hash,
            ciphertext_hash: Digest::of_domain(domain::FILE, &ciphertext),
        });
        Ok(())
    }

    /// An output's plaintext (decrypted when the object is secret).
    pub fn read_plain(&self, key: &Digest, output: &str) -> Result<Vec<u8>> {
        crate::engine::read_plain(&self.store, Some(&self.cipher), key, output)
            .map_err(CliError::from)
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
    let policy = PathPolicy {
        allow_outside_workspace: cli.allow_outside_workspace,
    };
    let open_as = |path: &Path, contract: &ContractArgs, access: Access| {
        Session::open(store_flag, identity, path, contract, policy, access)
    };
    let read = |path: &Path, contract: &ContractArgs| open_as(path, contract, Access::Read);
    let open = |path: &Path, contract: &ContractArgs| open_as(path, contract, Access::Write);
    match &cli.command {
        Command::Validate(p) => inspect::validate(&p.profile, policy),
        Command::Plan {
            profile,
            json,
            contract,
        } => inspect::plan(read(&profile.profile, contract)?, &profile.profile, *json),
        Command::Why {
            profile,
            step,
            contract,
        } => inspect::why(read(&profile.profile, contract)?, &profile.profile, step),
        Command::Build { profile, contract } => realise::build(open(&profile.profile, contract)?),
        Command::Up {
            profile,
            contract,
            jobs,
        } => realise::up(open(&profile.profile, contract)?, jobs.map(usize::from)),
        Command::Demo {
            keep,
            reboot_delay_ms,
        } => crate::demo::run(*keep, *reboot_delay_ms),
        Command::Export {
            profile,
            out,
            contract,
        } => realise::export(read(&profile.profile, contract)?, out),
        Command::Secrets { action } => secrets::secrets_cmd(&open, action),
        Command::Store { action } => inspect::store_cmd(store_flag, action),
    }
}
