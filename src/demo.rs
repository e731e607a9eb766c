//! `talix demo`: rehearse a whole bootstrap on one machine. A simulated 3 control-plane + 2
//! worker cluster boots in maintenance mode on free loopback addresses; talix then runs exactly
//! what an operator runs (`secrets init`, `plan`, `up`, `up` again) against it, in a temporary
//! workspace with its own age key, and cleans everything up afterwards.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use crate::cli::Cli;
use crate::commands::{CliError, dispatch};
use talos_sim::node::{ClusterSpec, NodeSpec, SimCluster};

/// The Talos release the demo installs (current Talos: contract v1.14), the talosctl it drives
/// and the Kubernetes it runs.
pub const DEMO_TALOS: &str = "v1.14.0";
pub const DEMO_KUBERNETES: &str = "1.37.0";

const CONTROLPLANES: [&str; 3] = ["cp1", "cp2", "cp3"];
const WORKERS: [&str; 2] = ["w1", "w2"];

/// A /24 inside 127.0.0.0/8 that is not 127.0.0.0/24, chosen from the clock and pid.
fn pick_subnet(attempt: u32) -> (u8, u8) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().rotate_left(7)
        ^ attempt.wrapping_mul(2654435761);
    let a = 1 + (seed % 254) as u8;
    let b = ((seed >> 8) % 256) as u8;
    (a, b)
}

/// The demo profile for subnet 127.a.b.0/24 (also used by the `up` tests).
pub fn profile_yaml(a: u8, b: u8, recipient: &str) -> String {
    let net = format!("127.{a}.{b}");
    let cps: String = CONTROLPLANES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "      - {{ name: {n}, ip: {net}.{}, mac: \"02:54:00:{a:02x}:{b:02x}:{:02x}\" }}\n",
                11 + i,
                0x11 + i
            )
        })
        .collect();
    let ws: String = WORKERS
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "      - {{ name: {n}, ip: {net}.{}, mac: \"02:54:00:{a:02x}:{b:02x}:{:02x}\" }}\n",
                21 + i,
                0x21 + i
            )
        })
        .collect();
    format!(
        "# Written by `talix demo`: a 3+2 cluster on loopback, simulated.\nname: demo\nnetwork:\n  api_endpoint: {net}.10\n  subnet: {net}.0/24\n  gateway: {net}.1\n  pod_cidr: 10.244.0.0/16\n  service_cidr: 10.96.0.0/12\ntalos:\n  version: {DEMO_TALOS}\n  kubernetes_version: {DEMO_KUBERNETES}\n  factory:\n    schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n  vip: {{ interface: ens18, ip: {net}.10 }}\n  extensions: [siderolabs/qemu-guest-agent]\nsecrets:\n  recipients: [{recipient}]\ndiscovery:\n  concurrency: 64\n  connect_timeout_ms: 300\n  attempts: 3\n  retry_wait_s: 1\nkubeconfig:\n  merge: false  # a rehearsal never touches your ~/.kube/config\nnodes:\n  controlplane:\n    assignments:\n{cps}  worker:\n    assignments:\n{ws}"
    )
}

/// The simulated machines matching [`profile_yaml`] (DHCP addresses .101-.105).
pub fn spec(a: u8, b: u8, reboot_delay_ms: Option<u64>) -> Result<ClusterSpec, CliError> {
    let mut nodes = Vec::new();
    for (i, name) in CONTROLPLANES.iter().chain(WORKERS.iter()).enumerate() {
        let mac_last = if i < 3 { 0x11 + i } else { 0x21 + i - 3 };
        let mut node: NodeSpec = serde_json::from_value(serde_json::json!({
            "name": name,
            "mac": format!("02:54:00:{a:02x}:{b:02x}:{mac_last:02x}"),
            "address": Ipv4Addr::new(127, a, b, 101 + i as u8).to_string(),
            "maintenance_version": DEMO_TALOS,
            // No `nic`: the simulator's default, `ens18` (a Proxmox virtio NIC under predictable
            // naming); talix selects it by MAC.
            "extensions": [{"name": "qemu-guest-agent", "version": "10.0.2"}],
        }))
        .map_err(|e| CliError::from(format!("demo spec: {e}")))?;
        if let Some(ms) = reboot_delay_ms {
            node.reboot_delay_ms = ms;
        }
        nodes.push(node);
    }
    Ok(ClusterSpec {
        nodes,
        foreign_nodes: vec![],
    })
}

fn talix(args: &[&str]) -> Result<(), CliError> {
    let argv: Vec<OsString> = std::iter::once("talix")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    println!("\n$ talix {}", args.join(" "));
    dispatch(Cli::try_parse_from(argv).map_err(|e| CliError::from(e.to_string()))?)
}

fn show_kubectl(kubeconfig: &Path) {
    println!(
        "\n$ kubectl --kubeconfig {} get nodes",
        kubeconfig.display()
    );
    match std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "nodes"])
        .output()
    {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => eprintln!("(kubectl not available: {e})"),
    }
}

/// The closing line: with `--keep` the workspace stays, so it must not say it was removed
/// (issue 8, defect 14).
fn done_message(seconds: f64, keep: bool) -> String {
    let workspace = if keep {
        "the workspace is kept (path above)"
    } else {
        "the workspace removed"
    };
    format!(
        "\ntalix demo: done in {seconds:.1} s; the simulated cluster is stopped and {workspace}."
    )
}

/// Run the demo. `keep` leaves the workspace in place (its path is printed).
pub fn run(keep: bool, reboot_delay_ms: Option<u64>) -> Result<(), CliError> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(CliError::from)?;
    let ws = tempfile::Builder::new()
        .prefix("talix-demo-")
        .tempdir()
        .map_err(CliError::from)?;
    let root: PathBuf = ws.path().to_path_buf();
    fs_err::create_dir_all(root.join("profiles"))?;
    fs_err::create_dir_all(root.join("bin"))?;
    std::os::unix::fs::symlink(&exe, root.join("bin/talosctl"))?;
    let key = root.join("age-key.txt");
    let recipient = crate::secrets::generate_identity_file(&key).map_err(CliError::from)?;
    // SAFETY: no other thread exists yet (the simulator runtime starts below), so changing the
    // process environment cannot race with a reader.
    unsafe {
        std::env::set_var("TALIX_TALOSCTL", root.join("bin/talosctl"));
        std::env::set_var("TALIX_AGE_KEY_FILE", &key);
        std::env::set_var("TALIX_STORE", root.join("store"));
        std::env::set_var("TALIX_ALLOW_NETS", "127.0.0.0/8");
        // The simulated talosctl claims the demo's release.
        std::env::set_var("TALOSCTL_SIM_VERSION", DEMO_TALOS);
        if std::env::var_os("TALIX_POLL_MS").is_none() {
            std::env::set_var("TALIX_POLL_MS", "200");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::from)?;
    let mut attempt = 0;
    let (cluster, a, b) = loop {
        let (a, b) = pick_subnet(attempt);
        match runtime.block_on(SimCluster::start(spec(a, b, reboot_delay_ms)?)) {
            Ok(c) => break (c, a, b),
            Err(e) if attempt < 5 => {
                tracing::debug!("subnet 127.{a}.{b}.0/24 busy: {e}");
                attempt += 1;
            }
            Err(e) => {
                return Err(CliError::from(format!(
                    "could not start the simulated cluster: {e}"
                )));
            }
        }
    };
    let profile = root.join("profiles/demo.yaml");
    fs_err::write(&profile, profile_yaml(a, b, &recipient))?;
    println!(
        "talix demo: simulated cluster of 5 machines in maintenance mode on 127.{a}.{b}.101-105 (workspace {})",
        root.display()
    );

    let p = profile.to_string_lossy().into_owned();
    let result = (|| {
        talix(&["secrets", "init", &p])?;
        talix(&["plan", &p])?;
        talix(&["up", &p])?;
        if let Ok(loaded) = crate::profile::load(&profile) {
            show_kubectl(&loaded.profile.workspace.kubeconfig());
        }
        talix(&["up", &p])?;
        talix(&["plan", &p])
    })();
    runtime.block_on(cluster.shutdown());
    drop(runtime);
    match (&result, keep) {
        (_, true) => {
            let kept = ws.keep();
            println!("\nworkspace kept at {}", kept.display());
        }
        (Ok(()), false) => {
            ws.close().map_err(CliError::from)?;
        }
        (Err(_), false) => {
            let kept = ws.keep();
            eprintln!(
                "\nthe demo failed; its workspace is kept for inspection at {}",
                kept.display()
            );
        }
    }
    result?;
    println!("{}", done_message(started.elapsed().as_secs_f64(), keep));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keep_never_says_removed() {
        let kept = super::done_message(1.0, true);
        assert!(kept.contains("kept") && !kept.contains("removed"), "{kept}");
        let gone = super::done_message(1.0, false);
        assert!(gone.contains("removed") && !gone.contains("kept"), "{gone}");
    }
}
