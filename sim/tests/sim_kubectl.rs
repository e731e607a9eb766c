//! The real kubectl lists the simulated cluster's nodes through the kubeconfig that the
//! simulated `talosctl kubeconfig` returns.

mod sim_nodes_support;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sim_nodes_support::*;

#[test]
fn kubectl_get_nodes_lists_the_simulated_nodes() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [
        Machine {
            name: "cp1",
            controlplane: true,
            dhcp: 51,
            static_ip: 151,
        },
        Machine {
            name: "w1",
            controlplane: false,
            dhcp: 52,
            static_ip: 152,
        },
    ];
    // The VIP is the Kubernetes endpoint; it exists only once etcd is bootstrapped.
    let vip = format!("{subnet}.150");
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{vip}:6443"),
        &["--kubernetes-version", "1.33.2"],
    );
    let service = work.start_service("serve", &serve_spec(&subnet, &ms, 50, &[]));
    let tc = files.talosconfig.display().to_string();
    for m in &ms {
        work.talosctl_ok(&[
            "apply-config",
            "--insecure",
            "-n",
            &files.dhcp(m),
            "-f",
            &files.config(m),
        ]);
    }
    let cp = files.static_addr(&ms[0]);
    for m in &ms {
        let out = work.talosctl_until_ok(
            &["--talosconfig", &tc, "-n", &files.static_addr(m), "version"],
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        std::net::TcpStream::connect(format!("{vip}:6443")).is_err(),
        "no API before bootstrap"
    );
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &cp, "bootstrap"]);
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &cp, "kubeconfig", "."]);
    let kubeconfig = work.file("kubeconfig");

    let out = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "get",
            "nodes",
            "-o",
            "json",
        ])
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl failed: {}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cp1", "w1"]);
    for n in items {
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.33.2");
    }
    assert_eq!(
        items[1]["status"]["addresses"][0]["address"],
        files.static_addr(&ms[1])
    );

    // kubectl's default table output works too.
    let out = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "get",
            "nodes",
        ])
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("NAME   STATUS   ROLES           AGE"),
        "{}",
        stdout(&out)
    );

    // A kubeconfig for another cluster's CA is rejected by the API server's TLS.
    let bogus = std::fs::read_to_string(&kubeconfig).unwrap();
    let other = work.write(
        "other-kubeconfig",
        &bogus.replace("client-key-data: ", "client-key-data: AAAA"),
    );
    let out = Command::new("kubectl")
        .args([
            "--kubeconfig",
            &other.display().to_string(),
            "get",
            "nodes",
            "--request-timeout",
            "5s",
        ])
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Default path: merged into ~/.kube/config (0600); a second run renames the new entries.
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &cp, "kubeconfig"]);
    let default = work.path().join(".kube/config");
    assert_eq!(
        std::fs::metadata(&default).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = work.talosctl_ok(&["--talosconfig", &tc, "-n", &cp, "kubeconfig"]);
    assert_eq!(
        out,
        "renamed auth info \"admin@demo\" -> \"admin@demo-1\"\nrenamed context \"admin@demo\" -> \"admin@demo-1\"\n"
    );
    let out = Command::new("kubectl")
        .args(["config", "current-context"])
        .env("HOME", work.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "admin@demo-1\n", "{}", stderr(&out));
    let out = Command::new("kubectl")
        .args(["get", "nodes", "-o", "name"])
        .env("HOME", work.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "node/cp1\nnode/w1\n", "{}", stderr(&out));

    // upgrade-k8s moves every kubelet to the new version.
    let two = format!("{cp},{}", files.static_addr(&ms[1]));
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &two,
        "upgrade-k8s",
        "--to",
        "1.34.0",
    ]);
    assert!(
        stderr(&out).starts_with("command \"upgrade-k8s\" is not supported with multiple nodes\n")
    );
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &cp,
        "upgrade-k8s",
        "--to",
        "1.34.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("automatically detected the lowest Kubernetes version 1.33.2"));
    let out = Command::new("kubectl")
        .args([
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.nodeInfo.kubeletVersion}",
        ])
        .env("HOME", work.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "v1.34.0 v1.34.0", "{}", stderr(&out));

    // A newer talosctl warns about older servers (never fails).
    let out = work.talosctl_env(
        &["--talosconfig", &tc, "-n", &cp, "get", "ms"],
        &[("TALOSCTL_SIM_VERSION", "v1.12.0")],
    );
    assert!(out.status.success());
    assert_eq!(
        stderr(&out),
        format!("WARNING: {cp}: server version v1.11.5 is older than client version v1.12.0\n")
    );

    drop(service);
}
