//! The Talos test bed: a talosctl-compatible command line, simulated nodes on loopback, a
//! simulated Kubernetes API and a Proxmox VE API, so every cluster operation can be exercised
//! end to end with real processes and real TCP.

use std::ffi::OsString;

/// Entry point of the talosctl-compatible executable (the binary invoked as `talosctl`, or
/// `talix sim talosctl ARGS`). `args` excludes the program name. Returns the exit status.
pub fn talosctl_main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("talosctl simulator: not implemented yet");
    1
}

/// Entry point of `talix sim ARGS` (hidden): `talosctl ...` and the simulator services.
pub fn sim_main(args: Vec<OsString>) -> i32 {
    match args.first().and_then(|a| a.to_str()) {
        Some("talosctl") => talosctl_main(args[1..].to_vec()),
        _ => {
            eprintln!("usage: talix sim talosctl ARGS...");
            2
        }
    }
}
