//! The contract matrix, end to end on the simulator: for contracts v1.11, v1.12, v1.13 and
//! v1.14 (talosctl and nodes of the same release, plus a v1.14 talosctl managing a v1.11
//! contract cluster), on machines whose NIC is not `eth0`:
//!
//! 1. a fresh `up` that selects every NIC by MAC,
//! 2. a no-op re-run (nothing sent to a node),
//! 3. a Talos patch bump: a rolling `talosctl upgrade` of every node, workers through a
//!    control-plane endpoint (talosctl >= v1.13 drains through the endpoint and only control
//!    planes serve the kubeconfig: trap 11),
//! 4. a Kubernetes patch bump: `upgrade-k8s` exactly once, and kube-proxy at the new version
//!    afterwards (applied configs move only the kubelets and static pods: trap 12).
//!
//! Every talosctl call is checked for bare `-n` addresses (trap 13).

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::SimProcess;
use serde_json::{Value, json};
use talos_sim::node::ClusterSpec;

struct Case {
    contract: &'static str,
    talosctl: &'static str,
    /// Talos of the boot media, and the version the profile installs first.
    talos: &'static str,
    /// The patch release of the bump.
    talos_next: &'static str,
    kubernetes: &'static str,
    kubernetes_next: &'static str,
}

struct Bed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    net: (u8, u8),
    _sim: SimProcess,
    recipient: String,
}

const CP: &str = "cp1";
const WORKER: &str = "w1";

fn mac(net: (u8, u8), last: u8) -> String {
    format!("02:54:00:{:02x}:{:02x}:{last:02x}", net.0, net.1)
}

impl Bed {
    fn ip(&self, last: u8) -> String {
        format!("127.{}.{}.{last}", self.net.0, self.net.1)
    }

    fn start(case: &Case) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("profiles")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talix"), root.join("bin/talosctl")).unwrap();
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(root.join("key.txt"))
            .output()
            .expect("age-keygen (Debian package age) is installed");
        assert!(out.status.success());
        let key = std::fs::read_to_string(root.join("key.txt")).unwrap();
        let recipient = key
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .unwrap()
            .to_string();
        let m = |net: (u8, u8), name: &str, last: u8, dhcp: u8| {
            serde_json::from_value(json!({
                "name": name,
                "mac": mac(net, last),
                "address": Ipv4Addr::new(127, net.0, net.1, dhcp).to_string(),
                "maintenance_version": case.talos,
                "reboot_delay_ms": 100,
            }))
            .unwrap()
        };
        let sim = SimProcess::start_spec(&root, |a, b| ClusterSpec {
            nodes: vec![m((a, b), CP, 0x11, 101), m((a, b), WORKER, 0x21, 102)],
            foreign_nodes: vec![],
        });
        let bed = Bed {
            net: sim.subnet,
            _dir: dir,
            root,
            _sim: sim,
            recipient,
        };
        bed.write_profile(case, case.talos, case.kubernetes);
        bed.talix()
            .args(["secrets", "init", "profiles/m.yaml"])
            .assert()
            .success();
        bed.clear_calls();
        bed
    }

    fn write_profile(&self, case: &Case, talos: &str, kubernetes: &str) {
        let net = format!("127.{}.{}", self.net.0, self.net.1);
        let text = format!(
            "name: m\nnetwork:\n  api_endpoint: {net}.10\n  subnet: {net}.0/24\n  gateway: {net}.1\n  pod_cidr: 10.244.0.0/16\n  service_cidr: 10.96.0.0/12\ntalos:\n  version: {talos}\n  kubernetes_version: {kubernetes}\n  contract: {contract}\n  factory:\n    schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n  vip: {{ interface: ens18, ip: {net}.10 }}\nsecrets:\n  recipients: [{r}]\ndiscovery:\n  concurrency: 64\n  connect_timeout_ms: 500\n  attempts: 10\n  retry_wait_s: 1\nnodes:\n  controlplane:\n    assignments:\n      - {{ name: {CP}, ip: {net}.11, mac: \"{m1}\" }}\n  worker:\n    assignments:\n      - {{ name: {WORKER}, ip: {net}.21, mac: \"{m2}\" }}\n",
            contract = case.contract,
            r = self.recipient,
            m1 = mac(self.net, 0x11),
            m2 = mac(self.net, 0x21),
        );
        std::fs::write(self.root.join("profiles/m.yaml"), text).unwrap();
    }

    fn talix(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("talix").unwrap();
        cmd.current_dir(&self.root)
            .env_remove("TALIX_STORE")
            .env("TALIX_TALOSCTL", self.root.join("bin/talosctl"))
            .env("TALIX_AGE_KEY_FILE", self.root.join("key.txt"))
            .env("TALOSCTL_SIM_LOG", self.root.join("talosctl.log"))
            .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
            .env("TALIX_POLL_MS", "50")
            .env("TALIX_READY_TIMEOUT_S", "120")
            .env("TALIX_BOOTSTRAP_TIMEOUT_S", "120")
            .env("TALIX_HEALTH_TIMEOUT_S", "120")
            .timeout(Duration::from_secs(600));
        cmd
    }

    fn up(&self, talosctl: &str) -> String {
        let out = self
            .talix()
            .env("TALOSCTL_SIM_VERSION", talosctl)
            .args(["up", "profiles/m.yaml"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "talix up failed:\n{text}");
        text
    }

    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.root.join("talosctl.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    fn calls_of(&self, verb: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|a| a.iter().any(|x| x == verb))
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.root.join("talosctl.log"));
    }

    fn kubectl(&self, args: &[&str]) -> Value {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.root.join("clusters/m/kubeconfig"))
            .args(args)
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.root.join("profiles/m.lock")).unwrap()
    }
}

/// The value after `flag` in `argv`.
fn flag<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

/// Trap 13: every `-n`/`--nodes` value is a bare address or, in maintenance mode, `ip[:port]`;
/// never bracketed.
fn assert_bare_nodes(calls: &[Vec<String>]) {
    for argv in calls {
        for f in ["-n", "--nodes"] {
            if let Some(n) = flag(argv, f) {
                assert!(!n.contains('['), "bracketed node address in {argv:?}");
            }
        }
    }
}

fn kube_proxy_versions(bed: &Bed) -> Vec<String> {
    let pods = bed.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "k8s-app=kube-proxy",
    ]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["name"] == "kube-proxy")
        .map(|c| {
            c["image"]
                .as_str()
                .unwrap()
                .rsplit_once(':')
                .unwrap()
                .1
                .to_string()
        })
        .collect()
}

fn run(case: Case) {
    let bed = Bed::start(&case);
    let (cp_ip, w_ip) = (bed.ip(11), bed.ip(21));

    // A file named `-` in the working directory: `kubeconfig -` without `--merge=false`
    // would merge into it (cmd/talosctl/cmd/talos/kubeconfig.go@v1.14.0-rc.1).
    let dash = bed.root.join("-");
    std::fs::write(&dash, "not a kubeconfig\n").unwrap();

    // 1. Fresh up, NICs selected by MAC.
    bed.up(case.talosctl);
    assert_eq!(
        std::fs::read_to_string(&dash).unwrap(),
        "not a kubeconfig\n",
        "talosctl kubeconfig wrote into ./-"
    );
    let applies = bed.calls_of("apply-config");
    assert_eq!(applies.len(), 2, "{applies:?}");
    assert_eq!(bed.calls_of("bootstrap").len(), 1);
    assert_bare_nodes(&bed.calls());
    let patch = std::fs::read_to_string(bed.root.join("clusters/m/patches/cp1.yaml")).unwrap();
    if case.contract == "v1.11" {
        assert!(patch.contains("hardwareAddr:"), "{patch}");
    } else {
        assert!(patch.contains("kind: LinkAliasConfig"), "{patch}");
        assert!(!patch.contains("nameservers:\n      -"), "{patch}");
    }
    let nodes = bed.kubectl(&["get", "nodes"]);
    assert_eq!(nodes["items"].as_array().unwrap().len(), 2);
    let lock = bed.lock();
    assert!(lock.contains("bootstrap:"), "{lock}");

    // 2. Nothing changed: nothing is sent to a node.
    bed.clear_calls();
    bed.up(case.talosctl);
    for verb in ["apply-config", "bootstrap", "upgrade", "upgrade-k8s"] {
        assert_eq!(bed.calls_of(verb), Vec::<Vec<String>>::new(), "{verb}");
    }

    // 3. Talos patch bump: rolling upgrade, the worker through the control-plane endpoint.
    bed.write_profile(&case, case.talos_next, case.kubernetes);
    bed.clear_calls();
    bed.up(case.talosctl);
    let upgrades = bed.calls_of("upgrade");
    assert_eq!(upgrades.len(), 2, "one upgrade per node: {upgrades:?}");
    assert_bare_nodes(&upgrades);
    let worker = upgrades
        .iter()
        .find(|a| flag(a, "-n") == Some(w_ip.as_str()))
        .unwrap_or_else(|| panic!("no upgrade of the worker: {upgrades:?}"));
    assert_eq!(
        flag(worker, "-e"),
        Some(cp_ip.as_str()),
        "the worker is upgraded through a control-plane endpoint: {worker:?}"
    );
    let lock = bed.lock();
    assert_eq!(
        lock.matches(&format!("talos_version: {}", case.talos_next))
            .count(),
        2,
        "{lock}"
    );

    // 4. Kubernetes patch bump: upgrade-k8s once, kube-proxy moves.
    let before = kube_proxy_versions(&bed);
    assert!(
        before.iter().all(|v| v == &format!("v{}", case.kubernetes)),
        "{before:?}"
    );
    bed.write_profile(&case, case.talos_next, case.kubernetes_next);
    bed.clear_calls();
    bed.up(case.talosctl);
    assert_eq!(bed.calls_of("upgrade-k8s").len(), 1, "{:?}", bed.calls());
    let after = kube_proxy_versions(&bed);
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|v| v == &format!("v{}", case.kubernetes_next)),
        "kube-proxy after upgrade-k8s: {after:?}"
    );
    let lock = bed.lock();
    assert!(
        lock.contains(&format!("kubernetes: \"{}\"", case.kubernetes_next)),
        "{lock}"
    );

    // A Kubernetes jump of two minor versions is refused before anything changes.
    let next: Vec<u32> = case
        .kubernetes_next
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let skip = format!("{}.{}.0", next[0], next[1] + 2);
    bed.write_profile(&case, case.talos_next, &skip);
    bed.clear_calls();
    let lock_before = bed.lock();
    let out = bed
        .talix()
        .env("TALOSCTL_SIM_VERSION", case.talosctl)
        .args(["up", "profiles/m.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("skips a minor version"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(bed.calls(), Vec::<Vec<String>>::new());
    assert_eq!(bed.lock(), lock_before);
    bed.write_profile(&case, case.talos_next, case.kubernetes_next);

    // And once more: nothing to do.
    bed.clear_calls();
    bed.up(case.talosctl);
    for verb in ["apply-config", "bootstrap", "upgrade", "upgrade-k8s"] {
        assert_eq!(bed.calls_of(verb), Vec::<Vec<String>>::new(), "{verb}");
    }
}

#[test]
fn contract_v1_11() {
    run(Case {
        contract: "v1.11",
        talosctl: "v1.11.6",
        talos: "v1.11.5",
        talos_next: "v1.11.6",
        kubernetes: "1.34.1",
        kubernetes_next: "1.34.2",
    });
}

#[test]
fn contract_v1_12() {
    run(Case {
        contract: "v1.12",
        talosctl: "v1.12.11",
        talos: "v1.12.10",
        talos_next: "v1.12.11",
        kubernetes: "1.35.3",
        kubernetes_next: "1.35.4",
    });
}

#[test]
fn contract_v1_13() {
    run(Case {
        contract: "v1.13",
        talosctl: "v1.13.9",
        talos: "v1.13.8",
        talos_next: "v1.13.9",
        kubernetes: "1.36.2",
        kubernetes_next: "1.36.3",
    });
}

#[test]
fn contract_v1_14() {
    run(Case {
        contract: "v1.14",
        talosctl: "v1.14.0",
        talos: "v1.14.0",
        talos_next: "v1.14.1",
        kubernetes: "1.37.0",
        kubernetes_next: "1.37.1",
    });
}

#[test]
fn talosctl_v1_14_manages_a_contract_v1_11_cluster() {
    run(Case {
        contract: "v1.11",
        talosctl: "v1.14.0",
        talos: "v1.11.5",
        talos_next: "v1.11.6",
        kubernetes: "1.34.1",
        kubernetes_next: "1.34.2",
    });
}

/// Trap 10: a node whose MAC is unknown is configured on the link the profile names; when the
/// machine has no such link (its NIC is `ens18`, the profile says `eth0`), `up` refuses before
/// anything is applied and names the links the machine has.
#[test]
fn a_named_link_the_machine_lacks_is_refused_before_any_apply() {
    let case = Case {
        contract: "v1.14",
        talosctl: "v1.14.0",
        talos: "v1.14.0",
        talos_next: "v1.14.1",
        kubernetes: "1.37.0",
        kubernetes_next: "1.37.1",
    };
    let bed = Bed::start(&case);
    let profile = bed.root.join("profiles/m.yaml");
    let text = std::fs::read_to_string(&profile).unwrap();
    let m2 = mac(bed.net, 0x21);
    let text = text
        .replace(&format!(", mac: \"{m2}\" }}"), " }")
        .replace("  worker:\n", "  worker:\n    interface: eth0\n");
    assert!(text.contains("interface: eth0"), "{text}");
    std::fs::write(&profile, text).unwrap();
    let out = bed
        .talix()
        .env("TALOSCTL_SIM_VERSION", case.talosctl)
        .args(["up", "profiles/m.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("node w1: its config puts the static address on link eth0"),
        "{stderr}"
    );
    assert!(stderr.contains("it has: ens18"), "{stderr}");
    assert_eq!(bed.calls_of("apply-config"), Vec::<Vec<String>>::new());
}
