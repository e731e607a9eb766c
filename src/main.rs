//! The `talix` executable: argument dispatch and exit codes, nothing else.
//!
//! Invoked as `talosctl` (a symlink or copy named so) or as `talix sim ...`, the same binary runs
//! the built-in Talos simulator; otherwise it is the talix command line.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if invoked_as == "talosctl" || invoked_as.starts_with("talosctl-") {
        return exit_code(talos_sim::talosctl_main(args[1..].to_vec()));
    }
    if args.get(1).is_some_and(|a| a == "sim") {
        return exit_code(talos_sim::sim_main(args[2..].to_vec()));
    }
    talix::cli::run(args)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
