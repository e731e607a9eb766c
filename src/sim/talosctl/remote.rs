//! Node-facing talosctl commands (apply-config, bootstrap, ...), talking to simulated nodes.

use std::ffi::OsString;

/// Runs a node-facing talosctl command; `args` are the full talosctl arguments, unchanged.
pub fn main(args: Vec<OsString>) -> i32 {
    let _ = args;
    eprintln!("not implemented");
    1
}
