//! The talix command line: flags are parsed here (clap types only) and resolved into actions in
//! `commands`; errors are mapped to exit codes in one place ([`crate::exit`]). The completion
//! scripts and man pages are generated from these same types (`talix completions`, `talix man`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::exit::Exit;

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
    /// Log more on stderr: -v info, -vv debug, -vvv trace (TALIX_LOG, else RUST_LOG, adds
    /// tracing filter directives, e.g. TALIX_LOG=talix::discovery=debug).
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
    Validate {
        #[command(flatten)]
        profile: ProfileArg,
        /// Machine-readable output: {"valid", "errors", "warnings"}, each finding with file,
        /// line, field and message (also when invalid: exit 2, the findings on stdout).
        #[arg(long)]
        json: bool,
    },
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
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Realise the configuration steps (secrets, base-config, talosconfig, patch/*, render/*,
    /// kubeconfig) without touching the network. The talosconfig and kubeconfig client
    /// certificates are derived from the secrets bundle, so the same committed files give the
    /// same bytes on every machine.
    Build {
        #[command(flatten)]
        profile: ProfileArg,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Bring the cluster up (or up to date): build, find maintenance-mode nodes, apply,
    /// bootstrap etcd once, wait for health, write the kubeconfig, verify. Steps whose inputs
    /// did not change are not repeated.
    Up {
        #[command(flatten)]
        profile: ProfileArg,
        #[command(flatten)]
        contract: ContractArgs,
        /// Do not merge the cluster's context into $KUBECONFIG / ~/.kube/config (the copy in
        /// the config dir is written anyway). The profile can say so too: `kubeconfig.merge:
        /// false`.
        #[arg(long)]
        no_merge_kubeconfig: bool,
        /// Print the commands `up` would run, in order (secrets never shown, `<discovered>`
        /// where only discovery knows the address), and run none that touches a node: nothing
        /// is written to the store, the lock file or the config dir.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: machine-readable output
        /// ({"profile", "dry_run", "steps": [{"id", "reason", "commands"}], "cached", "changes"}).
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// talosctl/kubectl processes run at once. Nodes are worked on in parallel (applies,
        /// readiness waits, checks), each waiting for a free slot to run one; upgrades still
        /// roll one node at a time (default: the profile's `up.jobs`, else 8).
        #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: Option<u16>,
    },
    /// Find the profile's nodes in maintenance mode (runbook step 5: scan, read links, match by
    /// MAC or by count) and say which address is which, without applying anything. Exit 0 when
    /// every node is found or already configured, 1 when some are not.
    Discover {
        #[command(flatten)]
        profile: ProfileArg,
        /// Machine-readable output (schema in the README, `version` field).
        #[arg(long)]
        json: bool,
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
    /// Write the plaintext configs (controlplane.yaml, worker.yaml, one per node, talosconfig,
    /// kubeconfig) to a directory, each file 0600 (after `talix build`).
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
    /// Print the derivation graph in Graphviz DOT (`| dot -Tsvg`): steps as nodes coloured by
    /// plan status (cached / run / blocked), dependencies as edges. Changes nothing.
    Graph {
        #[command(flatten)]
        profile: ProfileArg,
        /// The same graph as JSON: {"profile", "contract", "nodes": [...], "edges": [...]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        contract: ContractArgs,
    },
    /// Print the profile's JSON Schema (draft-07, for editors: the example profiles point at
    /// the committed copy schema/profile.schema.json), or with --markdown the profile reference.
    Schema {
        /// Print the profile reference (docs/profile-reference.md) instead, rendered from the
        /// schema.
        #[arg(long)]
        markdown: bool,
    },
    /// Inspect or clean the store.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Print a shell completion script to stdout, generated from this command line, e.g.
    /// `talix completions bash > ~/.local/share/bash-completion/completions/talix`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run the built-in Talos simulator: `sim serve --spec FILE [--ready-file PATH]` (simulated
    /// nodes on loopback), `sim proxmox` (the Proxmox VE API), `sim talosctl ARGS` (the
    /// talosctl-compatible CLI, also reached through a `talosctl` symlink to talix).
    Sim {
        /// `serve ...`, `proxmox ...` or `talosctl ...`, parsed by the simulator.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Print the talix(1) man page (roff) to stdout, or write one page per command to a
    /// directory, e.g. `talix man | man -l -`.
    Man {
        /// Write talix.1, talix-plan.1, talix-secrets-init.1, ... to DIR instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
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
    Verify {
        #[command(flatten)]
        profile: ProfileArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Check every object against its recorded hashes, and that every root's object exists.
    Verify {
        /// A profile whose workspace store to use (else --store / TALIX_STORE / ./store);
        /// with --repair, the profile whose steps are rebuilt.
        profile: Option<PathBuf>,
        /// Rebuild damaged or missing objects of pure steps (PROFILE's, else those of every
        /// profile the store's refs record) and name the receipts that cannot be rebuilt.
        #[arg(long)]
        repair: bool,
        /// Machine-readable output (also when objects are damaged: exit 1, the list on stdout).
        #[arg(long)]
        json: bool,
    },
    /// Remove what the store does not recognise (interrupted writes, unknown entries).
    Prune { profile: Option<PathBuf> },
    /// List the objects: key, step, size, age, secret or not, and the roots that reach them.
    Ls {
        /// Only this profile's objects (and its workspace store unless --store is given).
        profile: Option<PathBuf>,
        /// Machine-readable output (see the README for the schema).
        #[arg(long)]
        json: bool,
    },
    /// Delete every object no root reaches (roots: each live profile's latest realisation,
    /// pins, what lock files record), and print what was freed.
    Gc {
        /// A profile whose workspace store to use (else --store / TALIX_STORE / ./store).
        profile: Option<PathBuf>,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse instead of waiting when another talix process holds the store lock.
        #[arg(long)]
        no_wait: bool,
    },
    /// Keep the current realisation of PROFILE's steps (all, or STEP...) through gc.
    Pin {
        profile: PathBuf,
        /// Step ids (e.g. render/cp1); default: every step realised for the profile.
        steps: Vec<String>,
    },
    /// Remove PROFILE's pins (all, or those of STEP...).
    Unpin {
        profile: PathBuf,
        steps: Vec<String>,
    },
    /// Write the closure of the profile's latest realisation (every object its steps reach,
    /// secret ones still encrypted) to a deterministic tar archive.
    Export {
        /// The profile whose latest realisation to export.
        profile: PathBuf,
        /// The archive to write (replaced atomically).
        #[arg(short = 'o', long = "output", value_name = "FILE.tar")]
        output: PathBuf,
    },
    /// Check an archive made by `talix store export` entry by entry, then add its objects (and
    /// the profile's refs) to the store; a bad archive changes nothing.
    Import {
        /// The archive to import.
        #[arg(value_name = "FILE.tar")]
        archive: PathBuf,
        /// A profile whose workspace store to import into (else --store / TALIX_STORE / ./store).
        profile: Option<PathBuf>,
    },
}

/// The command line as clap sees it, with `--help`'s epilogue (output conventions and the exit
/// codes from [`Exit::table`]): what is parsed, completed and documented in the man page.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().after_help(format!(
        "Output: data (plans, reports, JSON, completions, man pages) on stdout; warnings, \
         progress and logs on stderr. Colors and spinners only on a terminal; NO_COLOR=1 turns \
         colors off.\n\n{}",
        Exit::table()
    ))
}

/// Parse `args` and run; the exit code comes from [`Exit`] (0 success, 1 failure, 2 bad input).
pub fn run(args: Vec<OsString>) -> ExitCode {
    use clap::FromArgMatches;
    let parsed = command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map_err(|e| e.format(&mut command())));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` print to stdout and succeed; usage errors exit 2.
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return code.into();
        }
    };
    init_tracing(cli.verbose);
    match commands::dispatch(cli) {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            // An empty message: nothing to say (stdout's reader went away, see DataOut).
            if !e.message.trim().is_empty() {
                eprintln!("{}", e.message.trim_end());
            }
            e.code.into()
        }
    }
}

/// Whether escape codes may go to stderr: it is a terminal, `NO_COLOR` is unset or empty
/// (<https://no-color.org>), and `TERM` is not `dumb`.
pub fn color_on_stderr() -> bool {
    use std::io::IsTerminal;
    color_allowed(|name| std::env::var_os(name)) && std::io::stderr().is_terminal()
}

fn color_allowed(var: impl Fn(&str) -> Option<OsString>) -> bool {
    let no_color = var("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = var("TERM").is_some_and(|v| v == "dumb");
    !no_color && !dumb
}

/// The tracing filter: the level `-v` asks for (warn, info, debug, trace), plus the directives
/// of `TALIX_LOG`, else `RUST_LOG` (TALIX_LOG wins; an empty variable counts as unset). An
/// invalid filter is reported and ignored, never fatal.
fn log_filter(
    verbose: u8,
    var: impl Fn(&str) -> Option<String>,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let plain = || tracing_subscriber::EnvFilter::new(level.to_string());
    let from_env = ["TALIX_LOG", "RUST_LOG"].into_iter().find_map(|name| {
        var(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v))
    });
    let Some((name, value)) = from_env else {
        return (plain(), None);
    };
    // The variable's directives come after the level, so a bare level in it (RUST_LOG=debug)
    // replaces the one -v chose, and target directives (talix::discovery=trace) add to it.
    match tracing_subscriber::EnvFilter::builder().parse(format!("{level},{value}")) {
        Ok(filter) => (filter, None),
        Err(e) => (
            plain(),
            Some(format!(
                "warning: {name}: invalid log filter ({e}); ignored"
            )),
        ),
    }
}

fn init_tracing(verbose: u8) {
    let (filter, warning) = log_filter(verbose, |name| std::env::var(name).ok());
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_on_stderr())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_types_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn no_color_and_dumb_terminals_turn_colors_off() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert!(color_allowed(env(&[])));
        assert!(
            color_allowed(env(&[("NO_COLOR", "")])),
            "empty NO_COLOR is unset"
        );
        assert!(!color_allowed(env(&[("NO_COLOR", "1")])));
        assert!(!color_allowed(env(&[("TERM", "dumb")])));
        assert!(color_allowed(env(&[("TERM", "xterm-256color")])));
    }

    fn filter(verbose: u8, pairs: &[(&str, &str)]) -> (String, Option<String>) {
        let (f, w) = log_filter(verbose, |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        (f.to_string(), w)
    }

    #[test]
    fn verbosity_sets_the_default_level() {
        assert_eq!(filter(0, &[]).0, "warn");
        assert_eq!(filter(1, &[]).0, "info");
        assert_eq!(filter(2, &[]).0, "debug");
        assert_eq!(filter(5, &[]).0, "trace");
    }

    #[test]
    fn talix_log_wins_over_rust_log_and_adds_to_the_verbosity() {
        let (f, w) = filter(
            1,
            &[
                ("TALIX_LOG", "talix::discovery=trace"),
                ("RUST_LOG", "debug"),
            ],
        );
        assert!(f.contains("talix::discovery=trace"), "{f}");
        assert!(f.contains("info"), "{f}");
        assert!(!f.contains("debug"), "{f}");
        assert_eq!(w, None);
        let (f, _) = filter(0, &[("RUST_LOG", "debug")]);
        assert_eq!(f, "debug", "a bare level replaces -v's");
        let (f, _) = filter(2, &[("RUST_LOG", "warn")]);
        assert_eq!(f, "warn");
        let (f, _) = filter(0, &[("TALIX_LOG", ""), ("RUST_LOG", "debug")]);
        assert!(
            f.contains("debug"),
            "an empty TALIX_LOG counts as unset: {f}"
        );
    }

    #[test]
    fn an_invalid_filter_warns_and_is_ignored() {
        let (f, w) = filter(1, &[("TALIX_LOG", "talix=notalevel")]);
        assert_eq!(f, "info");
        let w = w.expect("a warning");
        assert!(w.contains("TALIX_LOG") && w.contains("invalid"), "{w}");
    }
}
