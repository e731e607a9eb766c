//! The `talos-sim` executable: invoked as `talosctl` (a symlink named so) it is the
//! talosctl-compatible simulator; `talos-sim serve|proxmox|talosctl ...` runs its services.

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
    let code = if invoked_as == "talosctl" || invoked_as.starts_with("talosctl-") {
        talos_sim::talosctl_main(args[1..].to_vec())
    } else {
        talos_sim::sim_main(args[1..].to_vec())
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
