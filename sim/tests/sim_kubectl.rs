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

    // Strict like a real apiserver: a client certificate of the cluster's CA but without the
    // admin group authenticates and is then forbidden; one of another CA fails the handshake.
    let bundle = talos_sim::pki::parse(&std::fs::read(work.file("secrets.yaml")).unwrap()).unwrap();
    let (k8s_crt, k8s_key) = bundle.ca_pem("k8s");
    let with_client = |name: &str, crt: &str, key: &str| {
        let text: String = bogus
            .lines()
            .map(|l| {
                let indent = &l[..l.len() - l.trim_start().len()];
                if l.trim_start().starts_with("client-certificate-data:") {
                    format!(
                        "{indent}client-certificate-data: {}\n",
                        talos_sim::pki::b64(crt)
                    )
                } else if l.trim_start().starts_with("client-key-data:") {
                    format!("{indent}client-key-data: {}\n", talos_sim::pki::b64(key))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        work.write(name, &text)
    };
    let kubectl_nodes = |file: &std::path::Path| {
        Command::new("kubectl")
            .args(["--kubeconfig", &file.display().to_string()])
            .args(["get", "nodes", "--request-timeout", "10s"])
            .env("HOME", work.path())
            .output()
            .unwrap()
    };
    let (crt, key) =
        talos_sim::pki::issue_client_cert(&k8s_crt, &k8s_key, "intruder", "developers").unwrap();
    let out = kubectl_nodes(&with_client("no-admin-kubeconfig", &crt, &key));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Forbidden") || stderr(&out).contains("forbidden"),
        "{}",
        stderr(&out)
    );
    work.talosctl_ok(&["gen", "secrets", "-o", "foreign-secrets.yaml"]);
    let foreign =
        talos_sim::pki::parse(&std::fs::read(work.file("foreign-secrets.yaml")).unwrap()).unwrap();
    let (f_crt, f_key) = foreign.ca_pem("k8s");
    let (crt, key) =
        talos_sim::pki::issue_client_cert(&f_crt, &f_key, "admin", "system:masters").unwrap();
    let out = kubectl_nodes(&with_client("foreign-ca-kubeconfig", &crt, &key));
    assert!(
        !out.status.success(),
        "a foreign CA's admin cert was accepted"
    );
    assert!(!stderr(&out).contains("Forbidden"), "{}", stderr(&out));
    // The right CA and group: accepted (the same check passes, so it is the identity above).
    let (crt, key) =
        talos_sim::pki::issue_client_cert(&k8s_crt, &k8s_key, "admin", "system:masters").unwrap();
    let out = kubectl_nodes(&with_client("fresh-admin-kubeconfig", &crt, &key));
    assert!(out.status.success(), "{}", stderr(&out));

    // The Talos API likewise: only os:admin of this cluster's OS CA.
    let talosconfig_text = std::fs::read_to_string(&tc).unwrap();
    let with_talos_client = |name: &str, crt: &str, key: &str| {
        let text: String = talosconfig_text
            .lines()
            .map(|l| {
                let indent = &l[..l.len() - l.trim_start().len()];
                if l.trim_start().starts_with("crt:") {
                    format!("{indent}crt: {}\n", talos_sim::pki::b64(crt))
                } else if l.trim_start().starts_with("key:") {
                    format!("{indent}key: {}\n", talos_sim::pki::b64(key))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        work.write(name, &text).display().to_string()
    };
    let (os_crt, os_key) = bundle.ca_pem("os");
    let (crt, key) = talos_sim::pki::issue_client_cert(&os_crt, &os_key, "", "os:reader").unwrap();
    let reader = with_talos_client("reader-talosconfig", &crt, &key);
    let out = work.talosctl(&["--talosconfig", &reader, "-n", &cp, "version"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("code = PermissionDenied desc = not authorized"),
        "{}",
        stderr(&out)
    );
    let (f_os_crt, f_os_key) = foreign.ca_pem("os");
    let (crt, key) =
        talos_sim::pki::issue_client_cert(&f_os_crt, &f_os_key, "", "os:admin").unwrap();
    let stranger = with_talos_client("foreign-talosconfig", &crt, &key);
    let out = work.talosctl(&["--talosconfig", &stranger, "-n", &cp, "version"]);
    assert!(
        !out.status.success(),
        "a foreign OS CA's admin cert was accepted"
    );
    let (crt, key) = talos_sim::pki::issue_client_cert(&os_crt, &os_key, "", "os:admin").unwrap();
    let admin = with_talos_client("admin-talosconfig", &crt, &key);
    work.talosctl_ok(&["--talosconfig", &admin, "-n", &cp, "version"]);

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
