//! How `-n`/`-e` values become dial targets, IPv6 included, as in the real client and apid:
//! talosctl appends the port with Go's JoinHostPort to whatever SplitHostPort rejects
//! (pkg/machinery/client/resolver/roundrobin.go@v1.13.9 EnsureEndpointsHavePorts), one endpoint
//! is dialled through grpc's dns resolver (pkg/machinery/client/connection.go@v1.13.9 getTarget;
//! grpc-go internal/resolver/dns/dns_resolver.go@v1.82.1 parseTarget), and apid dials a node at
//! FormatAddress(node):50000 but refuses a node with a port (siderolabs/net net.go@v0.4.0,
//! internal/app/apid/pkg/backend/apid.go@v1.13.9, director.go aggregateDirector: Internal).

mod sim_nodes_support;

use std::time::Duration;

use sim_nodes_support::*;

/// `[::1]` as a maintenance-mode node is an endpoint: it becomes `[[::1]]:50000`, which grpc's
/// dns resolver refuses before dialling. Bare `::1` is bracketed and dialled.
#[test]
fn ipv6_endpoints_in_maintenance_mode() {
    let work = Workdir::new();
    let cfg = work.write("c.yaml", "version: v1alpha1\n");
    let out = work.talosctl(&["apply-config", "--insecure", "-n", "[::1]", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error applying new configuration: rpc error: code = Unavailable desc = name resolver error: invalid target address [[::1]]:50000, error info: address [[::1]]:50000:443: missing port in address\n"
    );
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        "::1",
        "-f",
        &cfg.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error applying new configuration: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp [::1]:50000: connect: connection refused\"\n"
    );
    // Several endpoints: the round-robin resolver hands the bad address to the dialer.
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        "[::1],[::1]",
        "-f",
        "c.yaml",
    ]);
    assert_eq!(
        stderr(&out),
        "error applying new configuration: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp: address [[::1]]:50000: missing port in address\"\n"
    );
    // Never dials outside loopback.
    let out = work.talosctl(&[
        "apply-config",
        "--insecure",
        "-n",
        "2001:db8::11",
        "-f",
        "c.yaml",
    ]);
    assert!(
        stderr(&out).contains("dial tcp [2001:db8::11]:50000: connect: network is unreachable"),
        "{}",
        stderr(&out)
    );
}

/// Through apid: `[ip]` is the same node as `ip`, a bare IPv6 node is dialled bracketed, and a
/// node with a port fails the whole call.
#[test]
fn node_targets_through_apid() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [Machine {
        name: "cp1",
        controlplane: true,
        dhcp: 51,
        static_ip: 151,
    }];
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.151:6443"),
        &[],
    );
    let _service = work.start_service("serve", &serve_spec(&subnet, &ms, 20, &[]));
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
        Duration::from_secs(30),
    );
    let bracketed = format!("[{st}]");
    let out = work.talosctl_ok(&["--talosconfig", &tc, "-n", &bracketed, "version"]);
    assert!(out.contains("Tag:"), "{out}");

    let out = work.talosctl(&["--talosconfig", &tc, "-n", "::1", "version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("* ::1: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp [::1]:50000: connect: connection refused\""),
        "{}",
        stderr(&out)
    );

    let with_port = format!("{st}:50000");
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &with_port, "etcd", "members"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error getting members: rpc error: code = Internal desc = invalid target \"{with_port}\"\n"
        )
    );
}
