//! Transient bootstrap failures (fault knob `bootstrap_errors`), printed by the simulated
//! talosctl exactly as the real one prints them, so a caller's retry logic can be exercised.
//!
//! upstream: cmd/talosctl/cmd/talos/bootstrap.go@v1.13.9 wraps the call error as
//! `error executing bootstrap: %w`; with `--nodes` the call goes one-to-many through apid, so a
//! node's error comes back in the reply metadata and is rendered as a go-multierror list.
//! pkg/cluster/bootstrap.go@v1.13.9 retries FailedPrecondition, DeadlineExceeded, Canceled,
//! "connection refused" and "error reading from server: EOF".

mod sim_nodes_support;

use std::time::Duration;

use sim_nodes_support::*;

#[test]
fn each_transient_bootstrap_error_then_success() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [Machine {
        name: "cp1",
        controlplane: true,
        dhcp: 41,
        static_ip: 141,
    }];
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.141:6443"),
        &[],
    );
    let faults = "    faults:\n      bootstrap_errors: [deadline_exceeded, canceled, eof, unavailable, failed_precondition, time_not_in_sync, eof]\n";
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
        Duration::from_secs(30),
    );
    let expected = [
        "DeadlineExceeded desc = context deadline exceeded".to_string(),
        "Canceled desc = grpc: the client connection is closing".to_string(),
        "Unavailable desc = error reading from server: EOF".to_string(),
        format!(
            "Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp {st}:50000: connect: connection refused\""
        ),
        "FailedPrecondition desc = bootstrap is not available yet".to_string(),
        "FailedPrecondition desc = time is not in sync yet".to_string(),
        "Unavailable desc = error reading from server: EOF".to_string(),
    ];
    for e in &expected {
        let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!(
                "error executing bootstrap: 1 error occurred:\n\t* {st}: rpc error: code = {e}\n\n\n"
            )
        );
        assert_eq!(stdout(&out), "");
    }
    // Nothing was bootstrapped by the failed calls: the next one works, the one after is refused.
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
    assert!(
        stderr(&out).contains("code = AlreadyExists desc = etcd data directory is not empty"),
        "{}",
        stderr(&out)
    );
}

/// An unknown fault kind is a spec parse error naming it.
#[test]
fn spec_rejects_unknown_bootstrap_error_kinds() {
    let work = Workdir::new();
    let spec = work.write(
        "spec.yaml",
        "nodes:\n  - name: cp1\n    mac: x\n    address: 127.0.0.1\n    faults:\n      bootstrap_errors: [gremlins]\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["serve", "--spec"])
        .arg(&spec)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("gremlins"), "{}", stderr(&out));
}
