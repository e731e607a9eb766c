//! apply-config is refused the way the node's own Talos release refuses it: which documents it
//! knows, decoder wording, owner-document conflicts, and the gRPC status talosctl prints
//! (maintenance service of v1.11/v1.12 vs machined). A refused config changes nothing.

mod sim_nodes_support;

use std::time::Duration;

use sim_nodes_support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn apply(work: &Workdir, args: &[&str]) -> (bool, String) {
    let mut full = vec!["apply-config"];
    full.extend_from_slice(args);
    let out = work.talosctl(&full);
    (out.status.success(), stderr(&out))
}

#[test]
fn maintenance_rejections_follow_the_node_release() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let link_doc = |extra: &str| {
        format!(
            "machine:\n    network:\n        hostname: w1\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: ens18\naddresses:\n    - address: {subnet}.121{extra}\n"
        )
    };
    let vip = format!(
        "machine:\n    network:\n        interfaces:\n            - interface: ens18\n              addresses: [{subnet}.122/24]\n              vip:\n                  ip: {subnet}.100\n"
    );
    let (_, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.100:6443"),
        "ghcr.io/siderolabs/installer:v1.11.5",
        &[("bare", false, link_doc("")), ("vip", false, vip)],
    );
    let mut spec = String::from("nodes:\n");
    for (name, last, version) in [
        ("old", 21, "v1.11.5"),
        ("mid", 22, "v1.12.4"),
        ("new", 23, "v1.13.2"),
    ] {
        spec.push_str(&format!(
            "  - {{name: {name}, mac: \"bc:24:11:00:00:{last}\", address: {subnet}.{last}, reboot_delay_ms: 50, maintenance_version: {version}}}\n"
        ));
    }
    let service = work.start_service("serve", &spec);
    let node = |last: u8| format!("{subnet}.{last}");
    let bare = configs["bare"].display().to_string();
    let vip = configs["vip"].display().to_string();

    // v1.11 does not register LinkConfig; its maintenance service answers decode errors
    // without a gRPC status (upstream: internal/app/maintenance/server.go@v1.11.6).
    let (ok, err) = apply(&work, &["--insecure", "-n", &node(21), "-f", &bare]);
    assert!(!ok);
    assert_eq!(
        err,
        "error applying new configuration: rpc error: code = Unknown desc = failed to parse config: \"LinkConfig\" \"v1alpha1\": not registered\n"
    );
    // v1.12 knows it, but a LinkConfig address needs a prefix (netip.Prefix decoding), and the
    // v1.12 decoder names the document and its line.
    let (ok, err) = apply(&work, &["--insecure", "-n", &node(22), "-f", &bare]);
    assert!(!ok);
    assert!(
        err.starts_with("error applying new configuration: rpc error: code = Unknown desc = failed to parse config: error decoding document v1alpha1/LinkConfig/ens18 (line "),
        "{err}"
    );
    assert!(
        err.ends_with(&format!(
            "): error decoding LinkConfig to *network.LinkConfigV1Alpha1: netip.ParsePrefix(\"{subnet}.121\"): no '/'\n"
        )),
        "{err}"
    );
    // v1.13: machined answers InvalidArgument, unprefixed.
    let (ok, err) = apply(&work, &["--insecure", "-n", &node(23), "-f", &bare]);
    assert!(!ok);
    assert!(
        err.starts_with("error applying new configuration: rpc error: code = InvalidArgument desc = error decoding document v1alpha1/LinkConfig/ens18 (line "),
        "{err}"
    );

    // A VIP on a worker: validation errors, worded per release.
    let (ok, err) = apply(&work, &["--insecure", "-n", &node(21), "-f", &vip]);
    assert!(!ok);
    assert_eq!(
        err,
        "error applying new configuration: rpc error: code = InvalidArgument desc = configuration validation failed: 1 error occurred:\n\t* virtual (shared) IP is not allowed on non-controlplane nodes\n\n\n"
    );
    let (ok, err) = apply(&work, &["--insecure", "-n", &node(23), "-f", &vip]);
    assert!(!ok);
    assert_eq!(
        err,
        "error applying new configuration: rpc error: code = InvalidArgument desc = 1 error occurred:\n\t* v1alpha1.Config: 1 error occurred:\n\t* virtual (shared) IP is not allowed on non-controlplane nodes\n\n\n\n\n"
    );

    // Nothing was applied: every node is still in maintenance at its DHCP address.
    for last in [21, 22, 23] {
        let out = work.talosctl(&["get", "machinestatus", "--insecure", "-n", &node(last)]);
        assert!(stdout(&out).contains("maintenance"), "{}", stdout(&out));
    }
    let addresses = service.addresses();
    assert_eq!(addresses["old"], node(21));
    assert_eq!(addresses["new"], node(23));
}

#[test]
fn a_configured_node_refuses_a_conflicting_config_and_keeps_its_own() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let patch = format!(
        "machine:\n    network:\n        hostname: cp1\n        interfaces:\n            - interface: ens18\n              addresses: [{subnet}.131/24]\n"
    );
    let (tc, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.131:6443"),
        "ghcr.io/siderolabs/installer:v1.12.4",
        &[("cp1", true, patch)],
    );
    let tc = tc.display().to_string();
    let service = work.start_service(
        "serve",
        &format!(
            "nodes:\n  - {{name: cp1, mac: \"bc:24:11:00:00:31\", address: {subnet}.31, reboot_delay_ms: 50, maintenance_version: v1.12.4}}\n"
        ),
    );
    let cp1 = configs["cp1"].display().to_string();
    let (ok, err) = apply(
        &work,
        &["--insecure", "-n", &format!("{subnet}.31"), "-f", &cp1],
    );
    assert!(ok, "{err}");
    let first = format!("{subnet}.131");
    let out = work.talosctl_until_ok(
        &["--talosconfig", &tc, "-e", &first, "-n", &first, "version"],
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // `machineconfig patch` builds the conflicting config without validating it.
    let moved = std::fs::read_to_string(&configs["cp1"])
        .unwrap()
        .replace(&format!("{subnet}.131/24"), &format!("{subnet}.132/24"));
    work.write("moved.yaml", &moved);
    work.write(
        "hostname-doc.yaml",
        "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cp1\n",
    );
    work.talosctl_ok(&[
        "machineconfig",
        "patch",
        "moved.yaml",
        "-p",
        "@hostname-doc.yaml",
        "-o",
        "conflict.yaml",
    ]);
    let remote = [
        "--talosconfig",
        tc.as_str(),
        "-e",
        first.as_str(),
        "-n",
        first.as_str(),
    ];
    let mut args = remote.to_vec();
    args.extend(["apply-config", "-f", "conflict.yaml", "--mode", "reboot"]);
    let out = work.talosctl(&args);
    assert!(!out.status.success());
    // With -n the reply is per node (apid proxying), so talosctl collects it in a multierror.
    assert_eq!(
        stderr(&out),
        format!(
            "error applying new configuration: 1 error occurred:\n\t* {first}: rpc error: code = InvalidArgument desc = 1 error occurred:\n\t* static hostname is already set in v1alpha1 config\n\n\n\n\n"
        )
    );
    // Unchanged: still answering at the first address, not rebooting.
    let mut version = remote.to_vec();
    version.push("version");
    let out = work.talosctl(&version);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(service.addresses()["cp1"], first);

    // The same change without the conflict is applied (so the check above could fail).
    let mut args = remote.to_vec();
    args.extend(["apply-config", "-f", "moved.yaml", "--mode", "reboot"]);
    let out = work.talosctl(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = format!("{subnet}.132");
    let out = work.talosctl_until_ok(
        &[
            "--talosconfig",
            &tc,
            "-e",
            &second,
            "-n",
            &second,
            "version",
        ],
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
