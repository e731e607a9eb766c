//! Version-dependent maintenance behaviour, apply-config modes and validation, reset, the
//! library API and process shutdown of the simulated nodes.

mod sim_nodes_support;

use std::process::Command;
use std::time::Duration;

use sim_nodes_support::*;
use talos_sim::node::{ClusterSpec, Phase, SimCluster};

#[test]
fn maintenance_api_depends_on_the_node_version() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [
        Machine {
            name: "old",
            controlplane: true,
            dhcp: 11,
            static_ip: 111,
        },
        Machine {
            name: "new",
            controlplane: true,
            dhcp: 12,
            static_ip: 112,
        },
    ];
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.111:6443"),
        &[],
    );
    let spec = serve_spec(
        &subnet,
        &ms,
        50,
        &[("new", "    maintenance_version: v1.13.2\n")],
    );
    let _service = work.start_service("serve", &spec);
    let (old, new) = (files.dhcp(&ms[0]), files.dhcp(&ms[1]));

    // v1.13+: version works in maintenance mode (no NODE line: no node metadata with --insecure).
    let out = work.talosctl_ok(&["version", "--insecure", "-n", &new]);
    assert!(out.contains("Server:\n\tTag:         v1.13.2\n"), "{out}");

    let out = work.talosctl_ok(&["version", "--client"]);
    assert!(
        out.starts_with("Client:\n\tTag:         v1.11.5\n") && !out.contains("Server:"),
        "{out}"
    );
    let out = work.talosctl_ok(&["version", "--short", "--insecure", "-n", &new]);
    assert!(
        out.starts_with("Client:\n\tTalos v1.11.5\nServer:\n\tTag:         v1.13.2\n"),
        "{out}"
    );

    // v1.11: no-reboot/staged refused, dry run explains, invalid config is rejected.
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        &old,
        "-f",
        &files.config(&ms[0]),
        "-m",
        "no-reboot",
    ]);
    assert_eq!(
        stderr(&out),
        "error applying new configuration: rpc error: code = Unimplemented desc = apply configuration --mode='no-reboot' is not supported in maintenance mode\n"
    );
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        &old,
        "-f",
        &files.config(&ms[0]),
        "--dry-run",
    ]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out),
        "Dry run summary:\nNode is running in maintenance mode and does not have a config yet.\n"
    );
    let bad = work.write(
        "bad.yaml",
        "version: v1alpha1\nmachine:\n    type: controlplane\n",
    );
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        &old,
        "-f",
        &bad.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error applying new configuration: rpc error: code = InvalidArgument desc = configuration validation failed: "),
        "{}",
        stderr(&out)
    );
    let out = work.talosctl(&["apply-config", "--insecure", "-n", &old]);
    assert_eq!(stderr(&out), "no filename supplied for configuration\n");
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        &old,
        "-f",
        "missing.yaml",
    ]);
    assert_eq!(
        stderr(&out),
        "failed to read configuration from \"missing.yaml\": open missing.yaml: no such file or directory\n"
    );
    let out = work.talosctl(&["apply-config", "--insecure", "-f", &files.config(&ms[0])]);
    assert!(
        stderr(&out).starts_with("nodes are not set for the command: please use `--nodes` flag"),
        "{}",
        stderr(&out)
    );

    // v1.13+: success is reported; v1.11: silent.
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        &new,
        "-f",
        &files.config(&ms[1]),
    ]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "Applied configuration without a reboot\n");
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        &old,
        "-f",
        &files.config(&ms[0]),
    ]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
}

#[test]
fn patch_at_apply_time_then_reset_back_to_maintenance() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [Machine {
        name: "cp1",
        controlplane: true,
        dhcp: 21,
        static_ip: 121,
    }];
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.121:6443"),
        &[],
    );
    let _service = work.start_service("serve", &serve_spec(&subnet, &ms, 50, &[]));
    let tc = files.talosconfig.display().to_string();
    let st = files.static_addr(&ms[0]);
    let patch = work.write(
        "host.yaml",
        "machine:\n    network:\n        hostname: patched-cp\n",
    );
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
        "--config-patch",
        &format!("@{}", patch.display()),
    ]);
    work.talosctl_until_ok(
        &["--talosconfig", &tc, "-n", &st, "version"],
        Duration::from_secs(10),
    );
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
    let out = work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "etcd", "members"]);
    assert!(out.contains("   patched-cp   "), "{out}");

    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "reset",
        "--reboot",
        "--insecure",
    ]);
    assert_eq!(stderr(&out), "cannot use --wait and --insecure together\n");
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "reset", "--reboot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = work.talosctl_until_ok(
        &[
            "get",
            "ms",
            "--insecure",
            "-n",
            &files.dhcp(&ms[0]),
            "-o",
            "json",
        ],
        Duration::from_secs(10),
    );
    assert!(
        stdout(&out).contains("\"stage\": \"maintenance\""),
        "{}",
        stdout(&out)
    );
    // Configure again: etcd is empty again, so bootstrap works once more.
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
    ]);
    work.talosctl_until_ok(
        &["--talosconfig", &tc, "-n", &st, "version"],
        Duration::from_secs(10),
    );
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_api_starts_reports_and_shuts_down() {
    let subnet = random_subnet();
    let spec: ClusterSpec = serde_saphyr::from_str(&format!(
        "nodes:\n  - name: a\n    mac: \"bc:24:11:00:00:01\"\n    address: {subnet}.31\n    api_port: 50123\n\
foreign_nodes:\n  - name: f\n    mac: \"bc:24:11:00:00:02\"\n    address: {subnet}.32\n"
    ))
    .unwrap();
    let cluster = SimCluster::start(spec).await.unwrap();
    let statuses = cluster.statuses();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].phase, Phase::Maintenance);
    assert_eq!(statuses[0].api_port, 50123);
    assert!(!statuses[0].foreign && statuses[1].foreign);
    assert!(
        cluster
            .wait_for_phase("a", Phase::Maintenance, Duration::from_secs(1))
            .await
    );
    let addr = format!("{subnet}.31:50123");
    assert!(tokio::net::TcpStream::connect(&addr).await.is_ok());
    cluster.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "listener closed"
    );

    // Non-loopback addresses are refused (network rule).
    let bad: ClusterSpec =
        serde_saphyr::from_str("nodes:\n  - name: a\n    mac: x\n    address: 10.1.2.3\n").unwrap();
    assert!(SimCluster::start(bad).await.is_err());
}

#[test]
fn serve_stops_on_sigterm_and_rejects_bad_specs() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let service = work.start_service(
        "serve",
        &format!("nodes:\n  - name: a\n    mac: x\n    address: {subnet}.41\n"),
    );
    let pid = service.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut service = service;
    let status = service.child.wait().unwrap();
    assert!(status.success(), "{status}");

    let spec = work.write(
        "bad.yaml",
        "nodes:\n  - name: a\n    mac: x\n    address: 127.0.0.1\n    colour: red\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["serve", "--spec", &spec.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
}
