//! The Talos test bed: a talosctl-compatible command line, simulated nodes on loopback, a
//! simulated Kubernetes API and a Proxmox VE API, so every cluster operation can be exercised
//! end to end with real processes and real TCP.

pub mod gonet;
pub mod kube;
pub mod machineconfig;
pub mod node;
pub mod pki;
pub mod proxmox;
pub mod talosctl;

use std::ffi::OsString;
use std::io::Write as _;

/// Default talosctl version the simulator claims to be (override with `TALOSCTL_SIM_VERSION`).
pub const DEFAULT_CLIENT_VERSION: &str = "v1.11.5";

/// The simulated talosctl's version tag, e.g. `v1.11.5` (env `TALOSCTL_SIM_VERSION`).
pub fn client_version() -> String {
    std::env::var("TALOSCTL_SIM_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_CLIENT_VERSION.to_string())
}

/// Go's rendering of a failed file operation, e.g. `open secrets.yaml: no such file or
/// directory` (talosctl prints `os.PathError`s this way).
pub fn go_io_error(op: &str, path: &str, err: &std::io::Error) -> String {
    let reason = match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_string(),
        std::io::ErrorKind::AlreadyExists => "file exists".to_string(),
        std::io::ErrorKind::NotADirectory => "not a directory".to_string(),
        _ => err.to_string(),
    };
    format!("{op} {path}: {reason}")
}

/// Entry point of the talosctl-compatible executable (the binary invoked as `talosctl`, or
/// `talix sim talosctl ARGS`). `args` excludes the program name. Returns the exit status.
pub fn talosctl_main(args: Vec<OsString>) -> i32 {
    let logged: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let started = std::time::SystemTime::now();
    let exit = talosctl::main(args);
    if let Some(log_path) = std::env::var_os("TALOSCTL_SIM_LOG").filter(|p| !p.is_empty()) {
        let timing = std::env::var_os("TALOSCTL_SIM_LOG_TIMING")
            .filter(|v| !v.is_empty())
            .map(|_| started);
        append_invocation_log(std::path::Path::new(&log_path), &logged, exit, timing);
    }
    exit
}

/// Appends `{"argv": [...], "exit": N}` as one line with a single write (O_APPEND keeps lines
/// whole when several simulator processes log at once). With `TALOSCTL_SIM_LOG_TIMING` set, the
/// line also has `start_ms` (Unix time) and `ms` (how long the call took), for profiling.
fn append_invocation_log(
    path: &std::path::Path,
    argv: &[String],
    exit: i32,
    timing: Option<std::time::SystemTime>,
) {
    let mut line = serde_json::json!({ "argv": argv, "exit": exit });
    if let Some(started) = timing {
        let since = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        };
        line["start_ms"] = serde_json::json!(since(started));
        line["ms"] =
            serde_json::json!(started.elapsed().unwrap_or_default().as_secs_f64() * 1000.0);
    }
    let line = line.to_string() + "\n";
    let result = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = result {
        eprintln!("talosctl simulator: cannot write invocation log: {e}");
    }
}

/// Entry point of `talix sim ARGS` (hidden): `talosctl ...` and the simulator services.
pub fn sim_main(args: Vec<OsString>) -> i32 {
    match args.first().and_then(|a| a.to_str()) {
        Some("talosctl") => talosctl_main(args[1..].to_vec()),
        Some("serve") => node::serve_main(args[1..].to_vec()),
        Some("proxmox") => proxmox::serve_main(args[1..].to_vec()),
        _ => {
            eprintln!("usage: talix sim talosctl ARGS...");
            2
        }
    }
}
