//! `talix discover` and the count fallback of runbook step 5d, as a user runs them, against the
//! simulator: MACs from the profile, from the Proxmox API and by count; nothing written by
//! `discover`; `up` assigning numerically sorted addresses in profile order and recording it in
//! the lock file; refusing with one machine too many or when the profile forbids counting.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::Cluster;
use serde_json::Value;

const P: &str = "profiles/demo.yaml";

/// blake3 over every file of the workspace (path and bytes) but the simulator's call log: what
/// `discover` must leave exactly as it was (lock file, store, configs, profiles).
fn fingerprint(root: &Path) -> (String, Vec<String>) {
    let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(root).unwrap().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(p, _)| p != "talosctl.log")
        .collect();
    files.sort();
    let mut h = blake3::Hasher::new();
    for (p, bytes) in &files {
        h.update(p.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    (
        h.finalize().to_hex().to_string(),
        files.into_iter().map(|(p, _)| p).collect(),
    )
}

fn discover_json(c: &Cluster, code: i32) -> (Value, String) {
    let out = c
        .talix_fast()
        .args(["discover", "--json", P])
        .assert()
        .code(code)
        .get_output()
        .clone();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn node<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing in {report}"))
}

fn applies(c: &Cluster) -> usize {
    c.calls()
        .iter()
        .filter(|a| a.contains(&"apply-config".to_string()))
        .count()
}

/// The profile without its `mac:` fields.
fn strip_macs(c: &Cluster) -> String {
    let text = std::fs::read_to_string(c.root().join(P)).unwrap();
    let stripped: String = text
        .lines()
        .map(|l| match l.find(", mac: \"") {
            Some(i) => format!("{} }}\n", &l[..i]),
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(stripped, text);
    stripped
}

fn set_last_octet(addr: &mut Ipv4Addr, last: u8) {
    let o = addr.octets();
    *addr = Ipv4Addr::new(o[0], o[1], o[2], last);
}

#[test]
fn discover_json_with_profile_macs_writes_nothing_then_reports_configured_nodes() {
    let (c, sim) = Cluster::with_sim(50, |spec| {
        let mut foreign = spec.nodes[4].clone();
        foreign.name = "stranger".into();
        foreign.mac = "02:99:99:99:99:99".into();
        set_last_octet(&mut foreign.address, 150);
        spec.foreign_nodes.push(foreign);
    });
    let (a, b) = sim.subnet;
    // A lock file, a store and a talosconfig exist (as after `talix build`).
    c.talix_fast().args(["build", P]).assert().success();
    let before = fingerprint(c.root());
    assert!(
        before.1.iter().any(|p| p == "profiles/demo.lock"),
        "{:?}",
        before.1
    );
    assert!(before.1.iter().any(|p| p.starts_with("store/")));
    c.clear_calls();

    let (report, stderr) = discover_json(&c, 0);
    assert_eq!(fingerprint(c.root()), before, "discover wrote nothing");
    assert_eq!(applies(&c), 0);
    assert!(
        c.calls().iter().all(
            |argv| argv.contains(&"links".to_string()) || argv.contains(&"version".to_string())
        ),
        "only link probes (and version checks): {:?}",
        c.calls()
    );
    assert_eq!(report["version"], 1);
    assert_eq!(report["profile"], "demo");
    assert_eq!(report["complete"], true);
    assert_eq!(report["subnet"], format!("127.{a}.{b}.0/24"));
    for (i, name) in ["cp1", "cp2", "cp3", "w1", "w2"].iter().enumerate() {
        let n = node(&report, name);
        let dhcp = format!("127.{a}.{b}.{}", 101 + i);
        assert_eq!(n["status"], "found", "{n}");
        assert_eq!(n["address"], dhcp, "{n}");
        assert_eq!(n["matched_by"], "mac", "{n}");
        assert_eq!(n["mac_source"], "profile", "{n}");
        assert_eq!(report["maintenance_addresses"][name], dhcp);
    }
    assert_eq!(node(&report, "cp1")["role"], "controlplane");
    assert_eq!(node(&report, "w2")["role"], "worker");
    assert_eq!(
        report["foreign"],
        serde_json::json!([format!("127.{a}.{b}.150")])
    );
    assert!(
        stderr.contains("all 5 node(s) of demo accounted for"),
        "{stderr}"
    );

    // Never a prompt: with stdin an open pipe nobody writes to, it finishes on its own.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_talix"))
        .args(["discover", P])
        .current_dir(c.root())
        .env("TALIX_TALOSCTL", c.root().join("bin/talosctl"))
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("HOME", c.root())
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _open_stdin = child.stdin.take();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("discover waited on stdin");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());

    // The table: one line per node, and the host that is not ours.
    let out = c
        .talix_fast()
        .args(["discover", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(out).unwrap();
    let cp1 = table.lines().find(|l| l.starts_with("cp1 ")).unwrap();
    for cell in [
        "controlplane",
        "02:54:00:",
        "profile",
        &format!("127.{a}.{b}.101"),
        "MAC",
    ] {
        assert!(cp1.contains(cell), "{cell} missing: {table}");
    }
    assert!(
        table.contains(&format!("not ours: 127.{a}.{b}.150")),
        "{table}"
    );

    // After `up`, every node is configured (lock file), first matched by MAC; nothing scanned.
    c.talix_fast().args(["up", P]).assert().success();
    c.clear_calls();
    let (report, _) = discover_json(&c, 0);
    for name in ["cp1", "cp2", "cp3", "w1", "w2"] {
        let n = node(&report, name);
        assert_eq!(n["status"], "configured", "{n}");
        assert_eq!(n["matched_by"], "lock-file", "{n}");
        assert_eq!(n["first_matched_by"], "mac", "{n}");
    }
    assert_eq!(report["maintenance_addresses"], serde_json::json!({}));
    assert!(c.calls().is_empty(), "{:?}", c.calls());
}

#[test]
fn discover_with_macs_from_the_proxmox_api() {
    let (c, sim) = Cluster::with_sim(50, |_| {});
    let (a, b) = sim.subnet;
    // MACs replaced by VM ids; the Proxmox API knows the MACs (upper-case, as PVE writes them).
    let profile = std::fs::read_to_string(c.root().join(P)).unwrap();
    let mut guests = String::new();
    let mut edited = String::new();
    let mut vmid = 151;
    for line in profile.lines() {
        if let Some(start) = line.find("mac: \"") {
            let mac = &line[start + 6..start + 23];
            guests.push_str(&format!("  - {{vmid: {vmid}, node: pve1, name: talos-{vmid}, nets: {{0: \"virtio={},bridge=vmbr0\"}}}}\n", mac.to_uppercase()));
            edited.push_str(&format!("{}vmid: {vmid} }}\n", &line[..start]));
            vmid += 1;
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    c.write(
        "pve-spec.yaml",
        &format!("address: 127.{a}.{b}.250\nport: 8006\ntoken: \"root@pam!talix=s3cr3t-token\"\nauth_failure_delay_ms: 10\nguests:\n{guests}"),
    );
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let info: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap();
    edited.push_str(&format!("proxmox:\n  url: {url}\n  token_id: root@pam!talix\n  token_secret_env: PVE_TOKEN_SECRET\n  ca_file: pve-ca.pem\n"));
    c.write(P, &edited);
    let before = fingerprint(c.root());
    let out = c
        .talix_fast()
        .env("PVE_TOKEN_SECRET", "s3cr3t-token")
        .args(["discover", "--json", P])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cr3t"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, name) in ["cp1", "cp2", "cp3", "w1", "w2"].iter().enumerate() {
        let n = node(&report, name);
        assert_eq!(n["mac_source"], "proxmox", "{n}");
        assert_eq!(n["vmid"], 151 + i, "{n}");
        assert_eq!(n["matched_by"], "mac", "{n}");
        assert_eq!(n["address"], format!("127.{a}.{b}.{}", 101 + i), "{n}");
    }
    let table = c
        .talix_fast()
        .env("PVE_TOKEN_SECRET", "s3cr3t-token")
        .args(["discover", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("proxmox vmid 151"), "{table}");
    // Not even the MACs learned from Proxmox are written (only `up` records them).
    assert_eq!(fingerprint(c.root()), before);
    let _ = pve.kill();
    let _ = pve.wait();
}

/// DHCP addresses whose string order ("100" < "200" < "254" < "30" < "9") is not their numeric
/// order (.9 < .30 < .100 < .200 < .254), one per machine in profile order.
const SCRAMBLED: [u8; 5] = [9, 30, 100, 200, 254];

/// Machines whose `get links` is unsupported, on [`SCRAMBLED`] addresses: MACs cannot be read,
/// so only counting can match them. The profile keeps its MACs, so each config selects its NIC
/// by MAC: a machine given another node's config keeps its DHCP address and `up` fails.
fn unreadable_cluster(extra: bool) -> (Cluster, common::SimProcess) {
    Cluster::with_sim(50, |spec| {
        for (n, last) in spec.nodes.iter_mut().zip(SCRAMBLED) {
            n.faults.links_unsupported = true;
            set_last_octet(&mut n.address, last);
        }
        if extra {
            let mut stray = spec.nodes[4].clone();
            stray.name = "stray".into();
            stray.mac = "02:77:77:77:77:77".into();
            set_last_octet(&mut stray.address, 50);
            spec.nodes.push(stray);
        }
    })
}

#[test]
fn count_fallback_assigns_numerically_sorted_addresses_in_profile_order_and_records_it() {
    let (c, sim) = unreadable_cluster(false);
    let (a, b) = sim.subnet;
    let before = fingerprint(c.root());
    let (report, stderr) = discover_json(&c, 0);
    assert_eq!(fingerprint(c.root()), before, "discover wrote nothing");
    for (name, last) in ["cp1", "cp2", "cp3", "w1", "w2"].iter().zip(SCRAMBLED) {
        let n = node(&report, name);
        assert_eq!(n["address"], format!("127.{a}.{b}.{last}"), "{n}");
        assert_eq!(n["matched_by"], "count", "{n}");
        assert!(
            stderr.contains(&format!(
                "warning: discover: {name}: assigned 127.{a}.{b}.{last} by count"
            )),
            "{stderr}"
        );
    }

    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (name, last) in ["cp1", "cp2", "cp3", "w1", "w2"].iter().zip(SCRAMBLED) {
        assert!(
            stderr.contains(&format!(
                "warning: discover: {name}: assigned 127.{a}.{b}.{last} by count"
            )),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("sorted numerically and assigned in profile order"),
        "{stderr}"
    );
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert_eq!(lock.matches("matched_by: count").count(), 5, "{lock}");
    // Each insecure apply went to the machine counting gave it.
    let insecure: Vec<String> = c
        .calls()
        .into_iter()
        .filter(|a| {
            a.contains(&"apply-config".to_string()) && a.contains(&"--insecure".to_string())
        })
        .filter_map(|a| a.iter().position(|x| x == "-n").map(|i| a[i + 1].clone()))
        .map(|n| n.trim_end_matches(":50000").to_string())
        .collect();
    let mut want: Vec<String> = SCRAMBLED
        .iter()
        .map(|l| format!("127.{a}.{b}.{l}"))
        .collect();
    let mut got = insecure.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{insecure:?}");

    // Recorded: `discover` reports the nodes as configured, first matched by count.
    let (report, _) = discover_json(&c, 0);
    assert_eq!(node(&report, "w2")["first_matched_by"], "count");
}

#[test]
fn count_fallback_refuses_one_machine_too_many_and_a_profile_that_forbids_it() {
    let (c, sim) = unreadable_cluster(true);
    let (a, b) = sim.subnet;
    let (report, stderr) = discover_json(&c, 1);
    assert_eq!(report["complete"], false);
    let mut found: Vec<&str> = report["unclaimed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    found.sort();
    let mut want: Vec<String> = [9, 30, 50, 100, 200, 254]
        .iter()
        .map(|l| format!("127.{a}.{b}.{l}"))
        .collect();
    want.sort();
    assert_eq!(found, want);
    assert_eq!(node(&report, "cp1")["status"], "ambiguous");
    assert!(
        stderr.contains("5 of 5 node(s) not accounted for")
            && stderr.contains("6 maintenance-mode candidate address(es)")
            && stderr.contains(&format!("127.{a}.{b}.9, 127.{a}.{b}.30, 127.{a}.{b}.50")),
        "{stderr}"
    );

    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6 maintenance-mode candidate address(es)")
            && stderr.contains(&format!("127.{a}.{b}.50")),
        "{stderr}"
    );
    assert_eq!(applies(&c), 0, "nothing applied");
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap_or_default();
    assert!(!lock.contains("applied_config"), "{lock}");
}

#[test]
fn a_profile_can_forbid_the_count_fallback() {
    let (c, _sim) = unreadable_cluster(false);
    c.edit(
        P,
        "  retry_wait_s: 1\n",
        "  retry_wait_s: 1\n  count_fallback: false\n",
    );
    let (report, stderr) = discover_json(&c, 1);
    assert!(
        stderr.contains("discovery.count_fallback: false"),
        "{stderr}"
    );
    assert_eq!(node(&report, "w1")["status"], "ambiguous");
    assert_eq!(report["unclaimed"].as_array().unwrap().len(), 5);
    c.clear_calls();
    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("discovery.count_fallback: false"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(applies(&c), 0, "nothing applied");
}

#[test]
fn without_any_mac_readable_links_are_matched_by_count_too() {
    let (c, sim) = Cluster::with_sim(50, |spec| {
        for (n, last) in spec.nodes.iter_mut().zip(SCRAMBLED) {
            set_last_octet(&mut n.address, last);
        }
    });
    let (a, b) = sim.subnet;
    // No MAC known for any node; the workers name the machines' NIC.
    let stripped = strip_macs(&c).replace(
        "  worker:\n    assignments:\n",
        "  worker:\n    interface: ens18\n    assignments:\n",
    );
    c.write(P, &stripped);
    let (report, _) = discover_json(&c, 0);
    for (name, last) in ["cp1", "cp2", "cp3", "w1", "w2"].iter().zip(SCRAMBLED) {
        let n = node(&report, name);
        assert_eq!(n["address"], format!("127.{a}.{b}.{last}"), "{n}");
        assert_eq!(n["matched_by"], "count", "{n}");
        assert_eq!(n["mac"], Value::Null, "{n}");
        assert_eq!(n["mac_source"], Value::Null, "{n}");
    }
}

#[test]
fn count_fallback_and_kubeconfig_merge_are_validated_like_every_field() {
    let ws = common::Workspace::empty();
    let recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let profile = common::legacy_demo_profile(1, 2, recipient);
    for (from, to, field) in [
        (
            "  retry_wait_s: 1\n",
            "  retry_wait_s: 1\n  count_fallback: maybe\n",
            "count_fallback",
        ),
        ("  merge: false", "  merge: 3", "merge"),
        ("  merge: false", "  merge: false\n  mrege: true", "mrege"),
    ] {
        let text = profile.replace(from, to);
        assert_ne!(text, profile);
        ws.write(P, &text);
        let line = text.lines().position(|l| l.contains(field)).unwrap() + 1;
        for cmd in ["validate", "discover"] {
            let out = ws
                .talix()
                .args([cmd, P])
                .assert()
                .code(2)
                .get_output()
                .stderr
                .clone();
            let err = String::from_utf8_lossy(&out);
            assert!(
                err.contains(&format!("profiles/demo.yaml:{line}")) && err.contains(field),
                "{cmd} with {to:?}: {err}"
            );
        }
    }
}

#[test]
fn a_node_not_booted_is_reported_not_found_with_exit_1_and_the_others_found() {
    let (c, sim) = Cluster::with_sim(50, |spec| {
        spec.nodes.remove(4); // w2's machine is not running
    });
    let (a, b) = sim.subnet;
    let (report, stderr) = discover_json(&c, 1);
    assert_eq!(report["complete"], false);
    assert_eq!(node(&report, "w2")["status"], "not-found");
    assert_eq!(node(&report, "w2")["address"], Value::Null);
    assert_eq!(node(&report, "w1")["status"], "found");
    assert_eq!(
        report["maintenance_addresses"]["w1"],
        format!("127.{a}.{b}.104")
    );
    assert!(
        stderr.contains("1 of 5 node(s) not accounted for: w2")
            && stderr.contains("after 3 scan(s)"),
        "{stderr}"
    );
    let out = c
        .talix_fast()
        .args(["discover", P])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(out).unwrap();
    let w2 = table.lines().find(|l| l.starts_with("w2 ")).unwrap();
    assert!(w2.contains("not found"), "{table}");
}

#[test]
fn discover_refuses_a_subnet_outside_talix_allow_nets_before_sending_anything() {
    let c = Cluster::new();
    c.write(P, &common::legacy_demo_profile(1, 2, &c.recipient));
    let out = c
        .talix_fast()
        .env("TALIX_ALLOW_NETS", "127.200.0.0/16")
        .args(["discover", "--json", P])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.1.2.0/24") && stderr.contains("TALIX_ALLOW_NETS"),
        "{stderr}"
    );
    assert!(c.calls().is_empty(), "{:?}", c.calls());
}
