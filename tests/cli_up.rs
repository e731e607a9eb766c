//! `talix up` against the simulator (real processes, real TCP on loopback, the real kubectl):
//! from maintenance mode to a verified cluster, then nothing repeated: not with the store
//! intact, and not with the store lost (the lock file remembers).

mod common;

use common::Cluster;

const P: &str = "profiles/demo.yaml";

fn up(c: &Cluster) -> String {
    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn up_brings_a_cluster_from_maintenance_to_verified_then_everything_is_cached() {
    let (c, _sim) = Cluster::with_sim(100, |_| {});
    let text = up(&c);
    for step in [
        "discover",
        "apply/cp1",
        "apply/w2",
        "ready/cp3",
        "bootstrap",
        "health",
        "kubeconfig",
        "verify",
    ] {
        assert!(
            text.contains(&format!(" {step} ")),
            "{step} missing in:\n{text}"
        );
    }
    let bootstraps = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"bootstrap".to_string()))
        .count();
    assert_eq!(bootstraps, 1, "etcd bootstrapped exactly once");
    let applies = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"apply-config".to_string()))
        .count();
    assert_eq!(applies, 5);
    use std::os::unix::fs::PermissionsExt;
    let kubeconfig = c.root().join("clusters/demo/kubeconfig");
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert!(lock.contains("bootstrap:\n  node: cp1\n"), "{lock}");
    assert_eq!(lock.matches("applied_config:").count(), 5, "{lock}");

    // The real kubectl sees the nodes through the kubeconfig talix fetched.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes["items"].as_array().unwrap().len(), 5);

    // Again: nothing runs, nothing is sent to a node.
    c.clear_calls();
    let text = up(&c);
    assert!(!text.contains("  ran "), "{text}");
    let node_calls: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|a| !a.starts_with(&["version".to_string(), "--client".to_string()]))
        .collect();
    assert!(
        node_calls.is_empty(),
        "no talosctl call reached a node: {node_calls:?}"
    );
    let out = c
        .talix_fast()
        .args(["plan", "--json", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    for (id, status, _) in common::plan_statuses(&out) {
        assert_eq!(status, "cached", "{id}");
    }
}

#[test]
fn after_up_plaintext_secrets_exist_only_in_age_files_and_the_files_asked_for() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    let tmp = c.root().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    c.talix_fast()
        .env("TMPDIR", &tmp)
        .args(["up", P])
        .assert()
        .success();
    let bundle = c
        .talix()
        .args(["secrets", "show", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let bundle = String::from_utf8(bundle).unwrap();
    let talosconfig = c.root().join("clusters/demo/talosconfig");
    let kubeconfig = c.root().join("clusters/demo/kubeconfig");
    let leaks = common::plaintext_leaks(&bundle, &[c.root(), &tmp], &[&talosconfig, &kubeconfig]);
    assert!(
        leaks.is_empty(),
        "plaintext secrets on disk:\n{}",
        leaks.join("\n")
    );
    use std::os::unix::fs::PermissionsExt;
    for f in [&talosconfig, &kubeconfig] {
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    // The 0600 files hold no bundle secret either (client certs only, CA keys stay in age files).
    assert!(common::plaintext_leaks(&bundle, &[&talosconfig, &kubeconfig], &[]).is_empty());
}

#[test]
fn version_bumps_upgrade_running_nodes_one_by_one() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    up(&c);
    // Trap 6: the new installer image reaches the configs, and `upgrade` moves the nodes.
    c.edit(P, "version: v1.11.5", "version: v1.11.6");
    c.clear_calls();
    let text = up(&c);
    for n in ["cp1", "cp2", "cp3", "w1", "w2"] {
        assert!(text.contains(&format!("ran      upgrade/{n}")), "{text}");
    }
    let upgrades: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"upgrade".to_string()))
        .collect();
    assert_eq!(upgrades.len(), 5, "{upgrades:?}");
    // Rolling: one node after the other, each waited for (its version asked) before the next.
    let order: Vec<String> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"upgrade".to_string()) || a.contains(&"version".to_string()))
        .filter_map(|a| {
            let node = a.iter().position(|x| x == "-n").map(|i| a[i + 1].clone())?;
            Some(format!(
                "{}:{node}",
                if a.contains(&"upgrade".to_string()) {
                    "upgrade"
                } else {
                    "version"
                }
            ))
        })
        .collect();
    let upgrades_at: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, x)| x.starts_with("upgrade:"))
        .map(|(i, _)| i)
        .collect();
    for pair in upgrades_at.windows(2) {
        let upgraded = order[pair[0]].trim_start_matches("upgrade:");
        assert!(
            order[pair[0] + 1..pair[1]]
                .iter()
                .any(|x| x == &format!("version:{upgraded}")),
            "the next upgrade waited for {upgraded}: {order:?}"
        );
    }
    assert!(
        upgrades
            .iter()
            .all(|a| a.iter().any(|x| x.ends_with(":v1.11.6"))),
        "{upgrades:?}"
    );
    assert!(
        !c.calls()
            .iter()
            .any(|a| a.contains(&"bootstrap".to_string()))
    );
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert_eq!(lock.matches("talos_version: v1.11.6").count(), 5, "{lock}");
    // Kubernetes: the re-applied configs carry the new kubelet image; upgrade-k8s checks every
    // kubelet and runs `talosctl upgrade-k8s` (at most once, on one control plane) only for
    // what is still behind.
    c.edit(
        P,
        "kubernetes_version: 1.34.1",
        "kubernetes_version: 1.34.2",
    );
    c.clear_calls();
    let text = up(&c);
    assert!(text.contains("ran      upgrade-k8s"), "{text}");
    let k8s: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"upgrade-k8s".to_string()))
        .collect();
    assert!(k8s.len() <= 1, "{k8s:?}");
    let kubeconfig = c.root().join("clusters/demo/kubeconfig");
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "-o", "json"])
        .output()
        .unwrap();
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for item in nodes["items"].as_array().unwrap() {
        assert_eq!(item["status"]["nodeInfo"]["kubeletVersion"], "v1.34.2");
    }
}

#[test]
fn a_lost_store_never_bootstraps_or_applies_again() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    up(&c);
    std::fs::remove_dir_all(c.root().join("store")).unwrap();
    c.clear_calls();
    up(&c);
    let calls = c.calls();
    assert!(
        !calls.iter().any(|a| a.contains(&"bootstrap".to_string())),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|a| a.contains(&"apply-config".to_string())),
        "{calls:?}"
    );
}

#[test]
fn a_user_patch_change_reapplies_only_that_node_authenticated() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    up(&c);
    c.write(
        "profiles/w2-extra.yaml",
        "machine:\n  sysctls:\n    vm.max_map_count: \"262144\"\n",
    );
    c.edit(
        P,
        "nodes:\n  controlplane:",
        "patches:\n  nodes: { w2: [w2-extra.yaml] }\nnodes:\n  controlplane:",
    );
    c.clear_calls();
    let text = up(&c);
    assert!(text.contains("ran      apply/w2"), "{text}");
    let applies: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"apply-config".to_string()))
        .collect();
    assert_eq!(applies.len(), 1, "{applies:?}");
    assert!(
        !applies[0].contains(&"--insecure".to_string()),
        "a configured node is applied with the talosconfig: {applies:?}"
    );
    assert!(
        !c.calls()
            .iter()
            .any(|a| a.contains(&"bootstrap".to_string()))
    );
}

#[test]
fn faults_apply_drops_once_bootstrap_not_ready_and_a_foreign_node() {
    let (c, _sim) = Cluster::with_sim(50, |spec| {
        spec.nodes[3].faults.apply_fails_once = true;
        spec.nodes[0].faults.bootstrap_not_ready_times = 3;
        let mut foreign = spec.nodes[4].clone();
        foreign.name = "stranger".into();
        foreign.mac = "02:99:99:99:99:99".into();
        foreign.address = std::net::Ipv4Addr::new(
            foreign.address.octets()[0],
            foreign.address.octets()[1],
            foreign.address.octets()[2],
            150,
        );
        spec.foreign_nodes.push(foreign);
    });
    up(&c);
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert_eq!(lock.matches("applied_config:").count(), 5);
    let bootstraps = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"bootstrap".to_string()))
        .count();
    assert_eq!(
        bootstraps, 4,
        "three FailedPrecondition answers retried, then success"
    );
    let stranger: Vec<_> = c
        .calls()
        .into_iter()
        .filter(|a| a.iter().any(|x| x.contains(".150")) && !a.contains(&"links".to_string()))
        .collect();
    assert!(
        stranger.is_empty(),
        "nothing but the link probe reached the foreign machine: {stranger:?}"
    );
}

#[test]
fn macs_from_the_proxmox_api_when_the_profile_has_none() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    // The profile loses its MACs and names VM ids instead; the Proxmox API knows the MACs
    // (upper-case, as PVE writes them).
    let profile = std::fs::read_to_string(c.root().join(P)).unwrap();
    let mut guests = String::new();
    let mut edited = String::new();
    let mut vmid = 151;
    for line in profile.lines() {
        if let Some(start) = line.find("mac: \"") {
            let mac = &line[start + 6..start + 23];
            guests.push_str(&format!("  - {{vmid: {vmid}, node: pve1, name: talos-{vmid}, nets: {{0: \"virtio={},bridge=vmbr0,firewall=1\"}}}}\n", mac.to_uppercase()));
            edited.push_str(&format!("{}vmid: {vmid} }}\n", &line[..start]));
            vmid += 1;
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    guests.push_str("  - {vmid: 300, node: pve1, type: lxc, name: dns, nets: {0: \"name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:02:00\"}}\n");
    let (a, b) = (_sim.subnet.0, _sim.subnet.1);
    let spec = format!(
        "address: 127.{a}.{b}.250\nport: 8006\ntoken: \"root@pam!talix=s3cr3t-token\"\nauth_failure_delay_ms: 10\nguests:\n{guests}"
    );
    c.write("pve-spec.yaml", &spec);
    let ready = c.root().join("pve-ready.json");
    let mut pve = std::process::Command::new(env!("CARGO_BIN_EXE_talix"))
        .args(["sim", "proxmox", "--spec"])
        .arg(c.root().join("pve-spec.yaml"))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--ca-file")
        .arg(c.root().join("profiles/pve-ca.pem"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap();
    edited.push_str(&format!("proxmox:\n  url: {url}\n  token_id: root@pam!talix\n  token_secret_env: PVE_TOKEN_SECRET\n  ca_file: pve-ca.pem\n"));
    c.write(P, &edited);
    let out = c
        .talix_fast()
        .env("PVE_TOKEN_SECRET", "s3cr3t-token")
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("s3cr3t-token")
            && !String::from_utf8_lossy(&out.stdout).contains("s3cr3t-token"),
        "the token never shows"
    );
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert_eq!(lock.matches("applied_config:").count(), 5, "{lock}");
    // (the simulator also stops on its own when this test's end closes its stdin)
    let _ = pve.kill();
    let _ = pve.wait();
}

#[test]
fn the_scanner_refuses_subnets_outside_talix_allow_nets() {
    // Both networks are loopback, so even a broken guard could only touch this machine.
    let (c, sim) = Cluster::with_sim(50, |_| {});
    let (a, b) = sim.subnet;
    let allowed = if a == 1 {
        "127.2.0.0/16"
    } else {
        "127.1.0.0/16"
    };
    let out = c
        .talix_fast()
        .env("TALIX_ALLOW_NETS", allowed)
        .args(["up", P])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("discover:")
            && text.contains(&format!("127.{a}.{b}.0/24"))
            && text.contains("TALIX_ALLOW_NETS"),
        "{text}"
    );
    let applies = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"apply-config".to_string()) || a.contains(&"links".to_string()))
        .count();
    assert_eq!(applies, 0, "nothing was sent to the nodes");
}

#[test]
fn a_lost_lock_file_and_store_recover_from_the_running_cluster() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    up(&c);
    // Both the store and the lock file are gone; the configs (and secrets) are the same.
    std::fs::remove_dir_all(c.root().join("store")).unwrap();
    std::fs::remove_file(c.root().join("profiles/demo.lock")).unwrap();
    c.clear_calls();
    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("already answers with this cluster's talosconfig")
            .count(),
        5,
        "{stderr}"
    );
    let calls = c.calls();
    let insecure = calls
        .iter()
        .filter(|a| {
            a.contains(&"apply-config".to_string()) && a.contains(&"--insecure".to_string())
        })
        .count();
    assert_eq!(
        insecure, 0,
        "configured nodes are not treated as maintenance nodes: {calls:?}"
    );
    // etcd answers AlreadyExists: recorded as bootstrapped, never tried on another node (trap 8).
    let bootstraps: Vec<_> = calls
        .iter()
        .filter(|a| a.contains(&"bootstrap".to_string()))
        .collect();
    assert_eq!(bootstraps.len(), 1, "{bootstraps:?}");
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert!(
        lock.contains("bootstrap:\n  node: cp1\n") && lock.matches("applied_config:").count() == 5,
        "{lock}"
    );
}
