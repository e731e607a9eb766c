//! The talix command line: flags are parsed here (clap types only) and resolved into actions in
//! `commands`; errors are mapped to exit codes in one place.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "talix",
    version,
    about = "Talos cluster bootstrap as a reproducible, content-addressed workflow"
)]
pub struct Cli {
    /// The store directory (default: <workspace>/store, where the workspace holds profiles/).
    #[arg(long, global = true, env = "TALIX_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// age identity file for decrypting secrets (else TALIX_AGE_KEY_FILE, SOPS_AGE_KEY_FILE,
    /// SOPS_AGE_KEY, ~/.config/sops/age/keys.txt).
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Let the profile name paths outside its workspace (absolute, `../`, or through a
    /// symlink). Only the command line can allow it, never the profile: a profile is often
    /// someone else's pull request.
    #[arg(long, global = true)]
    pub allow_outside_workspace: bool,
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ProfileArg {
    /// The profile (YAML under profiles/).
    #[arg(value_name = "PROFILE")]
    pub profile: PathBuf,
}

#[derive(Debug, Args, Default, Clone)]
pub struct ContractArgs {
    /// Accept a talos.contract that differs from the one pinned in the lock file (dangerous on
    /// a live cluster).
    #[arg(long)]
    pub allow_contract_change: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a profile; every problem is reported with file, field and line.
    Validate(ProfileArg),
    /// Show every step: cached, run (and why), or blocked. Changes nothing.
    Plan {
        #[command(flatten)]
        profile: ProfileArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Show one step's inputs (secrets as hashes) and what changed since its last realisation.
    Why {
        #[command(flatten)]
        profile: ProfileArg,
        /// Step id, e.g. render/cp1.
        step: String,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Realise the configuration steps (secrets, base-config, talosconfig, patch/*, render/*)
    /// without touching the network.
    Build {
        #[command(flatten)]
        profile: ProfileArg,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Bring the cluster up (or up to date): build, find maintenance-mode nodes, apply,
    /// bootstrap etcd once, wait for health, fetch the kubeconfig, verify. Steps whose inputs
    /// did not change are not repeated.
    Up {
        #[command(flatten)]
        profile: ProfileArg,
        #[command(flatten)]
        contract: ContractArgs,
        /// talosctl/kubectl processes run at once. Nodes are worked on in parallel (applies,
        /// readiness waits, checks), each waiting for a free slot to run one; upgrades still
        /// roll one node at a time (default: the profile's `up.jobs`, else 8).
        #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: Option<u16>,
    },
    /// Rehearse a whole bootstrap on this machine: a simulated 3+2 cluster on loopback, `up`,
    /// `up` again (all cached), then clean up.
    Demo {
        /// Keep the temporary workspace (profile, lock file, store, configs) for inspection.
        #[arg(long)]
        keep: bool,
        /// Simulated install/reboot time per node after apply (default: the simulator's 2 s).
        #[arg(long, value_name = "MS")]
        reboot_delay_ms: Option<u64>,
    },
    /// Write the plaintext configs (controlplane.yaml, worker.yaml, one per node, talosconfig)
    /// to a directory, each file 0600 (after `talix build`).
    Export {
        #[command(flatten)]
        profile: ProfileArg,
        /// Target directory (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Manage the age-encrypted secrets bundle beside the profile.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Inspect or clean the store.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Generate a new bundle with `talosctl gen secrets` (pinned contract) and encrypt it.
    Init {
        #[command(flatten)]
        profile: ProfileArg,
        /// Replace an existing secrets file.
        #[arg(long)]
        force: bool,
        /// With --force: replace even the bundle the cluster was bootstrapped with. The running
        /// cluster will no longer accept configs made from the new bundle.
        #[arg(long, requires = "force")]
        i_know_this_breaks_the_cluster: bool,
        /// Import an existing plaintext bundle (talosctl `secrets.yaml`) instead of generating
        /// one; delete the plaintext afterwards.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Print the plaintext bundle to stdout.
    Show(ProfileArg),
    /// Re-encrypt to the current recipients (the bundle, and so every key, is unchanged).
    Rekey {
        #[command(flatten)]
        profile: ProfileArg,
        /// Re-encrypt even when none of your identities can decrypt the result: you can no
        /// longer read, edit or use the bundle; only the remaining recipients can.
        #[arg(long)]
        i_know_this_locks_me_out: bool,
    },
    /// Edit the bundle in $EDITOR (on tmpfs), validate it and re-encrypt it.
    Edit {
        #[command(flatten)]
        profile: ProfileArg,
        /// Edit even the bundle the cluster was bootstrapped with. Changed CAs, keys or tokens
        /// make the running nodes reject every config made from the edited bundle.
        #[arg(long)]
        i_know_this_breaks_the_cluster: bool,
    },
    /// Decrypt, check the bundle's structure and print its hash.
    Verify(ProfileArg),
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Check every object against its recorded hashes.
    Verify {
        /// A profile whose workspace store to use (else --store / TALIX_STORE / ./store).
        profile: Option<PathBuf>,
    },
    /// Remove what the store does not recognise (interrupted writes, unknown entries).
    Prune { profile: Option<PathBuf> },
}

/// Parse `args` and run; the exit code: 0 success, 2 bad input (usage, profile), 1 failure.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.verbose);
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.message.trim_end());
            ExitCode::from(e.code)
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALIX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
