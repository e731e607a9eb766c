//! The hand-written runbook (shared/bench/runbook.sh) runs to the end against the simulator and
//! shows its documented failures: the `kind == "ether"` link filter finds no MAC (trap 3, so it
//! falls back to count-based matching) and `get members` is empty with discovery off (trap 4).

mod sim_nodes_support;

use std::process::{Command, Stdio};

use sim_nodes_support::*;

const MACS: [&str; 5] = [
    "02:54:00:00:01:51",
    "02:54:00:00:01:52",
    "02:54:00:00:01:53",
    "02:54:00:00:02:61",
    "02:54:00:00:02:62",
];

#[test]
fn runbook_completes_against_simulated_nodes() {
    let runbook = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/runbook.sh");
    assert!(std::path::Path::new(runbook).exists(), "{runbook} missing");
    for tool in ["jq", "bc", "bash", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(found.status.success(), "the runbook needs {tool}");
    }
    let work = Workdir::new();
    let net = random_subnet();
    let bin = work.file("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talos-sim"), bin.join("talosctl")).unwrap();
    // netcat shim: `nc -z -w N host port` through bash's /dev/tcp.
    let nc = bin.join("nc");
    std::fs::write(
        &nc,
        "#!/bin/bash\nw=1; while [ $# -gt 2 ]; do case \"$1\" in -w) w=$2; shift 2;; *) shift;; esac; done\ntimeout \"$w\" bash -c \"</dev/tcp/$1/$2\" 2>/dev/null\n",
    )
    .unwrap();
    std::fs::set_permissions(&nc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut spec = String::from("nodes:\n");
    for (i, (name, mac)) in ["cp1", "cp2", "cp3", "w1", "w2"]
        .iter()
        .zip(MACS)
        .enumerate()
    {
        spec.push_str(&format!(
            // The runbook's patches name `eth0`: these images boot with `net.ifnames=0`.
            "  - {{name: {name}, mac: \"{mac}\", address: {net}.{}, reboot_delay_ms: 100, kernel_args: [net.ifnames=0]}}\n",
            101 + i
        ));
    }
    let service = work.start_service("serve", &spec);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(runbook)
        .current_dir(work.path())
        .env("PATH", path)
        .env("HOME", work.path())
        .env("NET", &net)
        .env("WAIT_STEP", "0.2")
        .env_remove("TALOSCONFIG")
        .env_remove("KUBECONFIG")
        .env_remove("TALOSCTL_SIM_VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = stdout(&out);
    assert!(
        out.status.success(),
        "runbook failed\n{stdout}\n{}",
        stderr(&out)
    );
    assert!(
        stdout.contains("MAC matching failed: count-based fallback"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{net}.101: discovered MAC=\n")));
    let tail: Vec<&str> = stdout.lines().rev().take(2).collect();
    assert!(tail[0].starts_with("RUNBOOK_SECONDS="), "{stdout}");
    assert!(
        tail[1].starts_with("NODE ") && tail[1].ends_with("ADDRESSES"),
        "members is empty: {stdout}"
    );
    assert!(work.path().join(".kube/config").exists());
    // Every node ended at its static address from the runbook's patches.
    let addresses = service.addresses();
    assert_eq!(addresses["cp1"], format!("{net}.11"));
    assert_eq!(addresses["w2"], format!("{net}.22"));
}
