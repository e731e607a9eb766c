//! Each fault knob of the simulated nodes, observed through the simulated talosctl.

mod sim_nodes_support;

use std::time::{Duration, Instant};

use serde_json::Value;
use sim_nodes_support::*;

fn one_cp(dhcp: u8, static_ip: u8) -> [Machine; 1] {
    [Machine {
        name: "cp1",
        controlplane: true,
        dhcp,
        static_ip,
    }]
}

#[test]
fn apply_fails_once_then_succeeds() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = one_cp(11, 111);
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.111:6443"),
        &[],
    );
    let faults = "    faults:\n      apply_fails_once: true\n";
    let _service = work.start_service("serve", &serve_spec(&subnet, &ms, 50, &[("cp1", faults)]));
    let args = [
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
    ];
    let out = work.talosctl(&args);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error applying new configuration: rpc error: code = Unavailable desc = error reading from server: EOF\n"
    );
    // Nothing was applied: still in maintenance.
    let out = work.talosctl_ok(&[
        "get",
        "ms",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-o",
        "json",
    ]);
    assert!(out.contains("\"stage\": \"maintenance\""));
    let out = work.talosctl(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn slow_reboot_keeps_the_node_unreachable_longer() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = one_cp(12, 112);
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.112:6443"),
        &[],
    );
    let faults = "    faults:\n      slow_reboot_ms: 1500\n";
    let _service = work.start_service("serve", &serve_spec(&subnet, &ms, 20, &[("cp1", faults)]));
    let tc = files.talosconfig.display().to_string();
    let st = files.static_addr(&ms[0]);
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
    ]);
    let applied = Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("dial tcp {st}:50000: connect: connection refused")),
        "{}",
        stderr(&out)
    );
    let out = work.talosctl_until_ok(
        &["--talosconfig", &tc, "-n", &st, "version"],
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    assert!(applied.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn node_that_never_comes_back() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = one_cp(13, 113);
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.113:6443"),
        &[],
    );
    let faults = "    faults:\n      never_comes_back: true\n";
    let service = work.start_service("serve", &serve_spec(&subnet, &ms, 20, &[("cp1", faults)]));
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
    ]);
    let tc = files.talosconfig.display().to_string();
    let out = work.talosctl_until_ok(
        &[
            "--talosconfig",
            &tc,
            "-n",
            &files.static_addr(&ms[0]),
            "version",
        ],
        Duration::from_millis(800),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("connection refused"));
    let out = work.talosctl(&["get", "ms", "--insecure", "-n", &files.dhcp(&ms[0])]);
    assert_eq!(out.status.code(), Some(1));
    drop(service);
}

#[test]
fn get_links_unsupported() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let spec = format!(
        "nodes:\n  - name: a\n    mac: \"bc:24:11:00:00:01\"\n    address: {subnet}.14\n    faults:\n      links_unsupported: true\n"
    );
    let _service = work.start_service("serve", &spec);
    let out = work.talosctl(&["get", "links", "--insecure", "-n", &format!("{subnet}.14")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "rpc error: code = NotFound desc = resource \"links\" is not registered\n"
    );
    let out = work.talosctl(&[
        "get",
        "machinestatus",
        "--insecure",
        "-n",
        &format!("{subnet}.14"),
    ]);
    assert!(out.status.success());
}

#[test]
fn bootstrap_not_ready_a_few_times() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = one_cp(15, 115);
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.115:6443"),
        &[],
    );
    let faults = "    faults:\n      bootstrap_not_ready_times: 2\n";
    let _service = work.start_service("serve", &serve_spec(&subnet, &ms, 20, &[("cp1", faults)]));
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
    ]);
    let tc = files.talosconfig.display().to_string();
    let st = files.static_addr(&ms[0]);
    work.talosctl_until_ok(
        &["--talosconfig", &tc, "-n", &st, "version"],
        Duration::from_secs(10),
    );
    for _ in 0..2 {
        let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
        assert_eq!(
            stderr(&out),
            format!(
                "error executing bootstrap: 1 error occurred:\n\t* {st}: rpc error: code = FailedPrecondition desc = bootstrap is not available yet\n\n\n"
            )
        );
    }
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
    assert!(stderr(&out).contains("AlreadyExists"));
}

#[test]
fn foreign_maintenance_nodes_share_the_subnet() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let spec = format!(
        "nodes:\n  - name: ours\n    mac: \"bc:24:11:00:00:01\"\n    address: {subnet}.16\n\
foreign_nodes:\n  - name: theirs\n    mac: \"BC:24:11:99:99:99\"\n    address: {subnet}.17\n"
    );
    let service = work.start_service("serve", &spec);
    let addresses = service.addresses();
    assert_eq!(addresses.len(), 2);
    // A TCP scan of the subnet finds both; only the MAC tells them apart.
    let mut found = Vec::new();
    for host in 1..=30u8 {
        let addr = format!("{subnet}.{host}:50000");
        if std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
            .is_ok()
        {
            found.push(host);
        }
    }
    assert_eq!(found, [16, 17]);
    let out = work.talosctl_ok(&[
        "get",
        "links",
        "--insecure",
        "-n",
        &format!("{subnet}.17"),
        "-o",
        "json",
    ]);
    let first: Value = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first["spec"]["hardwareAddr"], "bc:24:11:99:99:99");
}

#[test]
fn worker_gets_its_certificate_once_a_control_plane_is_up() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [
        Machine {
            name: "cp1",
            controlplane: true,
            dhcp: 18,
            static_ip: 118,
        },
        Machine {
            name: "w1",
            controlplane: false,
            dhcp: 19,
            static_ip: 119,
        },
    ];
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.118:6443"),
        &[],
    );
    let _service = work.start_service("serve", &serve_spec(&subnet, &ms, 20, &[]));
    let tc = files.talosconfig.display().to_string();
    let (cp, w) = (files.static_addr(&ms[0]), files.static_addr(&ms[1]));
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[1]),
        "-f",
        &files.config(&ms[1]),
    ]);
    // Up, but without a control plane (trustd) it has no certificate from the cluster CA.
    let start = Instant::now();
    let out = loop {
        let out = work.talosctl(&["--talosconfig", &tc, "-e", &w, "-n", &w, "version"]);
        if !stderr(&out).contains("connection refused") || start.elapsed() > Duration::from_secs(10)
        {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("x509: certificate signed by unknown authority"),
        "{}",
        stderr(&out)
    );
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        &files.dhcp(&ms[0]),
        "-f",
        &files.config(&ms[0]),
    ]);
    let out = work.talosctl_until_ok(
        &["--talosconfig", &tc, "-e", &w, "-n", &w, "version"],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    work.talosctl_ok(&["--talosconfig", &tc, "-e", &cp, "-n", &w, "version"]);
}
