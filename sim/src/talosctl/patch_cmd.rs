//! `talosctl machineconfig patch <file>` (talosctl-cli.md §4): applies strategic merge and
//! JSON6902 patches offline with the same engine as `gen config`, printing or writing the result.

use std::io::Write as _;
use std::path::Path;

use super::flags::{self, FlagKind, FlagSpec};
use super::gen_cmd::go_io_error;
use super::{CliError, command_usage, exact_args};
use crate::machineconfig::merge;
use crate::machineconfig::yaml;

const PATCH_FLAGS: &[FlagSpec] = &[
    FlagSpec::new(
        "patch",
        Some('p'),
        FlagKind::StringArray,
        "",
        "patch generated machineconfigs (applied to all node types), use @file to read a patch from file",
    ),
    FlagSpec::new(
        "output",
        Some('o'),
        FlagKind::String,
        "",
        "output destination. if not specified, output will be printed to stdout",
    ),
];

fn group_usage() -> String {
    "Machine config related commands\n\nUsage:\n  talosctl machineconfig [command]\n\nAliases:\n  machineconfig, mc\n\nAvailable Commands:\n  gen         Generates a set of configuration files for Talos cluster\n  patch       Patch a machine config\n\nFlags:\n  -h, --help   help for machineconfig\n\nUse \"talosctl machineconfig [command] --help\" for more information about a command.\n".to_string()
}

/// Runs `talosctl machineconfig ...` (arguments after `machineconfig`).
pub fn run(args: Vec<String>) -> Result<(), CliError> {
    match args.iter().position(|a| !a.starts_with('-')) {
        Some(i) if args[i] == "patch" => {
            let mut rest = args.clone();
            rest.remove(i);
            patch(rest)
        }
        Some(i) if args[i] == "gen" => {
            // `machineconfig gen` is an alias of `gen config` that registers no flags.
            let mut rest = args.clone();
            rest.remove(i);
            let usage = command_usage(
                "machineconfig gen <cluster name> <cluster endpoint>",
                &[],
                false,
            );
            let parsed = flags::parse(&rest, &[]).map_err(|e| CliError::new(e, &usage))?;
            exact_args(&parsed.positionals, 2, &usage)?;
            let mut gen_args = vec!["config".to_string()];
            gen_args.extend(parsed.positionals);
            super::gen_cmd::run(gen_args)
        }
        _ => {
            print!("{}", group_usage());
            Ok(())
        }
    }
}

fn patch(args: Vec<String>) -> Result<(), CliError> {
    let usage = command_usage(
        "machineconfig patch <machineconfig-file>",
        PATCH_FLAGS,
        false,
    );
    let parsed = flags::parse(&args, PATCH_FLAGS).map_err(|e| CliError::new(e, &usage))?;
    if parsed.help {
        print!("Patch a machine config\n\n{usage}");
        return Ok(());
    }
    exact_args(&parsed.positionals, 1, &usage)?;
    let fail = |e: String| CliError::new(e, &usage);
    let input_path = &parsed.positionals[0];
    let input = std::fs::read(input_path).map_err(|e| fail(go_io_error("open", input_path, &e)))?;
    let patches = merge::load_patches(&parsed.list("patch")).map_err(|e| fail(e.to_string()))?;
    let output: Vec<u8> = if patches.is_empty() {
        input
    } else {
        let text =
            String::from_utf8(input).map_err(|_| fail("config is not valid UTF-8".to_string()))?;
        let docs = yaml::parse_documents(&text).map_err(|e| fail(e.to_string()))?;
        merge::apply_patches(docs, &patches)
            .map_err(|e| fail(e.to_string()))?
            .render()
            .into_bytes()
    };
    let destination = parsed.string("output");
    if destination.is_empty() {
        let mut stdout = std::io::stdout();
        stdout
            .write_all(&output)
            .and_then(|()| stdout.write_all(b"\n"))
            .map_err(|e| fail(e.to_string()))?;
        return Ok(());
    }
    let path = Path::new(&destination);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    super::talosconfig::write_private(path, &output, 0o644)
        .map_err(|e| fail(go_io_error("open", &destination, &e)))?;
    Ok(())
}
