//! What each command does: resolves the parsed flags (profile, store, lock file) into a
//! [`Session`] and calls the engine. This is the edge: errors become one message and an exit
//! code here. One file per group of commands: `inspect` (validate, plan, why, store prune,
//! schema), `realise` (build, export, up), `discover`, `secrets`, `store` (ls, gc, pin, unpin,
//! verify), `store_archive` (export, import), `graph_cmd` (graph), `generate` (completions, man).

mod discover;
mod dryrun;
pub mod generate;
mod graph_cmd;
mod inspect;
mod realise;
mod secrets;
mod store;
mod store_archive;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{Cli, Command, ContractArgs, StoreAction};
use crate::derivation::Step;
use crate::digest::{Digest, domain};
use crate::engine::Engine;
use crate::exec::ToolVersions;
use crate::exit::Exit;
use crate::graph::{self, EffectiveContract};
use crate::lockfile::{LockFile, SecretsLock};
use crate::profile::{self, Finding, Profile};
use crate::secrets::{AgeObjectCipher, LazyIdentities, Recipients};
use crate::steps::StepEnv;
use crate::store::local::LocalStore;
use crate::workspace::{PathPolicy, WorkspaceLock};

/// A failure at the edge: what to print and the exit code (see [`crate::exit`]).
#[derive(Debug)]
pub struct CliError {
    pub code: Exit,
    pub message: String,
}

impl CliError {
    /// Bad input from the operator ([`Exit::Usage`]).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            code: Exit::Usage,
            message: message.into(),
        }
    }

    /// A failure ([`Exit::Failure`]); `message` is printed as it is.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            code: Exit::Failure,
            message: message.into(),
        }
    }
}

impl<E: std::fmt::Display + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        let closed = (&e as &dyn std::any::Any)
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>());
        if closed {
            // The reader of our data went away (`talix plan | head -1`): nothing to report.
            return Self {
                code: Exit::Success,
                message: String::new(),
            };
        }
        Self::failure(format!("error: {e}"))
    }
}

/// Marks the error of a write to stdout whose reader has gone (EPIPE). Only stdout is treated
/// so: a broken pipe to talosctl (secrets through /dev/fd) stays a failure.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// stdout for a command's data (locked). A reader that went away (`talix plan | head -1`) ends
/// the command quietly with exit 0, as ripgrep does, instead of an error or a panic.
pub struct DataOut(std::io::StdoutLock<'static>);

impl DataOut {
    pub fn lock() -> Self {
        Self(std::io::stdout().lock())
    }

    /// `text` and a newline in one write. stdout is line-buffered, and `writeln!` hands it the
    /// text and the newline apart, which flushed them as two writes (issue 10: a no-op `up` at
    /// 250 nodes made 3,000 writes for 1,500 lines).
    pub fn line(text: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        Self::lock().write_all(&bytes)
    }
}

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl std::io::Write for DataOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

/// `println!` for a command's data, through [`DataOut`]; a write error returns from the
/// calling command (`?`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        $crate::commands::DataOut::line(&format!($($arg)*))?;
    }};
}
pub(crate) use outln;

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
        tracing::info!(
            "profile {} ({}), contract {} ({:?}), store {}, lock file {}",
            profile.name,
            profile.source.display(),
            contract.contract,
            contract.source,
            store.root().display(),
            profile.workspace.lock_file().display()
        );
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
            // Versions remembered between runs; a command that may write adds to them.
            tools: ToolVersions::remembering(access == Access::Write),
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
        Command::Validate { profile, json } => inspect::validate(&profile.profile, policy, *json),
        Command::Plan {
            profile,
            json,
            contract,
        } => inspect::plan(read(&profile.profile, contract)?, &profile.profile, *json),
        Command::Why {
            profile,
            step,
            json,
            contract,
        } => inspect::why(
            read(&profile.profile, contract)?,
            &profile.profile,
            step,
            *json,
        ),
        Command::Build { profile, contract } => realise::build(open(&profile.profile, contract)?),
        Command::Up {
            profile,
            contract,
            no_merge_kubeconfig,
            dry_run: false,
            jobs,
            ..
        } => realise::up(
            open(&profile.profile, contract)?,
            realise::UpOptions {
                merge_kubeconfig: !no_merge_kubeconfig,
                jobs: jobs.map(usize::from),
            },
        ),
        // Reads like `plan`: no workspace lock, no store lock, nothing created.
        Command::Up {
            profile,
            contract,
            dry_run: true,
            json,
            ..
        } => dryrun::up_dry_run(read(&profile.profile, contract)?, *json),
        Command::Discover { profile, json } => discover::discover(&profile.profile, policy, *json),
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
        Command::Graph {
            profile,
            json,
            contract,
        } => graph_cmd::graph(read(&profile.profile, contract)?, *json),
        Command::Store {
            action: StoreAction::Export { profile, output },
        } => store_archive::export(read(profile, &ContractArgs::default())?, output),
        Command::Store {
            action: StoreAction::Import { archive, profile },
        } => store_archive::import(store_flag, archive, profile.as_deref()),
        Command::Store { action } => store::store_cmd(
            &store::StoreCtx {
                flag: store_flag,
                identity,
                policy,
            },
            action,
        ),
        Command::Schema { markdown } => inspect::schema(*markdown),
        Command::Completions { shell } => generate::completions(*shell),
        Command::Man { out_dir } => generate::man(out_dir.as_deref()),
        // `talix sim ...` is normally routed to the simulator before parsing (src/main.rs); this
        // is `talix -v sim ...` and the like. The simulator prints its own messages.
        Command::Sim { args } => match talos_sim::sim_main(args.clone()) {
            0 => Ok(()),
            2 => Err(CliError::input(String::new())),
            _ => Err(CliError::failure(String::new())),
        },
    }
}
