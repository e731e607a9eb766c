//! The talosctl-compatible command line: finds the command word the way cobra does (global
//! flags may come before or after it), runs the offline commands here and hands every
//! node-facing command, with its arguments untouched, to [`remote`].

pub mod config_cmd;
pub mod flags;
#[path = "gen.rs"]
pub mod gen_cmd;
pub mod patch_cmd;
pub mod remote;
pub mod talosconfig;

use std::ffi::OsString;

use flags::{FlagKind, GLOBAL_FLAGS};

/// Commands served by the simulated nodes (`remote`).
pub const REMOTE_COMMANDS: &[&str] = &[
    "apply-config",
    "apply",
    "bootstrap",
    "health",
    "kubeconfig",
    "version",
    "get",
    "g",
    "etcd",
    "upgrade",
    "upgrade-k8s",
    "reset",
];

/// Top-level commands handled offline here.
const LOCAL_COMMANDS: &[&str] = &["gen", "machineconfig", "mc", "config"];

/// An error the way talosctl reports it: message, plus usage when the text mentions args,
/// flags or commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub usage: String,
}

impl CliError {
    pub fn new(message: impl Into<String>, usage: &str) -> CliError {
        CliError {
            message: message.into(),
            usage: usage.to_string(),
        }
    }
}

/// Prints an error as talosctl's `main` does and returns exit status 1.
pub fn report(err: &CliError) -> i32 {
    use std::io::Write as _;
    let mut text = format!("{}\n", err.message);
    if ["arg(s)", "flag", "command"]
        .iter()
        .any(|w| err.message.contains(w))
    {
        text.push('\n');
        text.push_str(&err.usage);
        text.push('\n');
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
    1
}

/// Runs one talosctl invocation (without the program name). Returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let strings: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some((position, command)) = find_command_word(&strings) else {
        // No command: cobra prints the root help.
        print!("{}", root_usage());
        return 0;
    };
    if REMOTE_COMMANDS.contains(&command.as_str()) {
        return remote::main(args);
    }
    let mut rest: Vec<String> = strings.clone();
    rest.remove(position);
    let result = match command.as_str() {
        "gen" => gen_cmd::run(rest),
        "machineconfig" | "mc" => patch_cmd::run(rest),
        "config" => config_cmd::run(rest),
        other => Err(CliError::new(
            format!("unknown command \"{other}\" for \"talosctl\""),
            &root_usage(),
        )),
    };
    match result {
        Ok(()) => 0,
        Err(e) => report(&e),
    }
}

/// The first argument that is neither a flag nor a global flag's value: the command word.
pub fn find_command_word(args: &[String]) -> Option<(usize, String)> {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            return None;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let name = body.split('=').next().unwrap_or_default();
            let takes_value = GLOBAL_FLAGS
                .iter()
                .any(|f| f.long == name && f.kind != FlagKind::Bool);
            i += if takes_value && !body.contains('=') {
                2
            } else {
                1
            };
            continue;
        }
        if arg.len() > 1 && arg.starts_with('-') {
            let first = arg.chars().nth(1).unwrap_or_default();
            let takes_value = GLOBAL_FLAGS
                .iter()
                .any(|f| f.short == Some(first) && f.kind != FlagKind::Bool);
            i += if takes_value && arg.len() == 2 { 2 } else { 1 };
            continue;
        }
        return Some((i, arg.clone()));
    }
    None
}

/// Root help text (abridged to the commands the simulator knows).
pub fn root_usage() -> String {
    let mut commands: Vec<&str> = REMOTE_COMMANDS.to_vec();
    commands.extend(LOCAL_COMMANDS.iter().filter(|c| **c != "mc"));
    commands.sort_unstable();
    commands.dedup();
    let mut text = String::from("Usage:\n  talosctl [command]\n\nAvailable Commands:\n");
    for c in commands {
        text.push_str(&format!("  {c}\n"));
    }
    text.push_str("\nFlags:\n");
    text.push_str(&flags::usage_block(GLOBAL_FLAGS));
    text.push_str("\nUse \"talosctl [command] --help\" for more information about a command.\n");
    text
}

/// Usage text of a leaf command, cobra layout.
pub fn command_usage(use_line: &str, specs: &[flags::FlagSpec], with_globals: bool) -> String {
    let mut text = format!("Usage:\n  talosctl {use_line} [flags]\n\nFlags:\n");
    text.push_str(&flags::usage_block(specs));
    text.push_str("  -h, --help   help for this command\n");
    if with_globals {
        text.push_str("\nGlobal Flags:\n");
        text.push_str(&flags::usage_block(GLOBAL_FLAGS));
    }
    text
}

/// cobra's `ExactArgs(n)` check.
pub fn exact_args(args: &[String], n: usize, usage: &str) -> Result<(), CliError> {
    if args.len() != n {
        return Err(CliError::new(
            format!("accepts {n} arg(s), received {}", args.len()),
            usage,
        ));
    }
    Ok(())
}

/// cobra's `MinimumNArgs(n)` check.
pub fn minimum_args(args: &[String], n: usize, usage: &str) -> Result<(), CliError> {
    if args.len() < n {
        return Err(CliError::new(
            format!("requires at least {n} arg(s), only received {}", args.len()),
            usage,
        ));
    }
    Ok(())
}

/// cobra's `NoArgs` check.
pub fn no_args(args: &[String], command_path: &str, usage: &str) -> Result<(), CliError> {
    if let Some(first) = args.first() {
        return Err(CliError::new(
            format!("unknown command \"{first}\" for \"talosctl {command_path}\""),
            usage,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_command_after_global_flags() {
        assert_eq!(
            find_command_word(&strings(&[
                "--talosconfig",
                "x",
                "-n",
                "1",
                "config",
                "info"
            ])),
            Some((4, "config".to_string()))
        );
        assert_eq!(
            find_command_word(&strings(&["--talosconfig=x", "-n1", "bootstrap"])),
            Some((2, "bootstrap".to_string()))
        );
        assert_eq!(
            find_command_word(&strings(&[
                "-e",
                "1.2.3.4",
                "--context",
                "c",
                "get",
                "links"
            ])),
            Some((4, "get".to_string()))
        );
        assert_eq!(find_command_word(&strings(&["--nodes", "1"])), None);
    }
}
