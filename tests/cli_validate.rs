//! `talix validate` as a user runs it: good profiles pass, bad ones fail with every problem
//! named by file, line and field, exit 2, and nothing written.

mod common;

use common::Workspace;
use predicates::prelude::PredicateBooleanExt as _;

#[test]
fn example_profiles_are_valid() {
    let ws = Workspace::with_examples();
    ws.talix()
        .args(["validate", "profiles/homelab.yaml"])
        .assert()
        .success()
        .stdout(
            "profiles/homelab.yaml: profile homelab is valid (3 control-plane, 2 worker nodes)\n",
        )
        .stderr("");
    ws.talix()
        .args(["validate", "profiles/single.yaml"])
        .assert()
        .success()
        .stdout(
            "profiles/single.yaml: profile single is valid (1 control-plane, 0 worker nodes)\n",
        );
}

const BAD: &str = r#"name: Bad_Name
network:
  api_endpoint: 10.0.0.21
  subnet: 10.0.0.0/24
  gateway: 10.0.1.1
  pod_cidr: 10.0.0.0/16
  service_cidr: 10.96.0.0/12
talos:
  version: 1.11
  kubernetes_version: v1.34.1
  factory:
    schematic_id: abc
  vip: { interface: eth0, ip: 10.0.0.11 }
secrets:
  recipients: [age1pq1xyz, "hello"]
nodes:
  controlplane:
    assignments:
      - { name: cp1, ip: 10.0.0.11, mac: "02:54:00:00:01" }
      - { name: cp1, ip: 10.0.0.300 }
  worker:
    assignments:
      - { name: w1, ip: 10.0.0.21, mac: "02:54:00:00:02:21" }
      - { name: w2, ip: 10.0.0.21, mac: "02:54:00:00:02:22" }
patches:
  nodes: { ghost: [] }
"#;

#[test]
fn bad_profile_reports_every_error_with_file_line_and_field() {
    let ws = Workspace::empty();
    ws.write("profiles/bad.yaml", BAD);
    let before = ws.files();
    ws.talix().args(["validate", "profiles/bad.yaml"]).assert().code(2).stdout("").stderr(
        "warning: profiles/bad.yaml:19: nodes.controlplane.assignments: 2 control-plane nodes: an odd number is recommended (etcd quorum tolerates no more failures with 2 than with 1)
error: profiles/bad.yaml:1: name: \"Bad_Name\" must be a DNS label: lower-case letters, digits and '-', at most 63 characters
error: profiles/bad.yaml:3: network.api_endpoint: 10.0.0.21 is a worker's address (nodes.worker.assignments[0]); the API endpoint must be the VIP or a control-plane node
error: profiles/bad.yaml:5: network.gateway: 10.0.1.1 is outside network.subnet 10.0.0.0/24
error: profiles/bad.yaml:6: network.pod_cidr: 10.0.0.0/16 overlaps the node subnet network.subnet 10.0.0.0/24
error: profiles/bad.yaml:9: talos.version: \"1.11\" is not a version of the form vMAJOR.MINOR.PATCH
error: profiles/bad.yaml:12: talos.factory.schematic_id: must be 64 lower-case hex characters (an Image Factory schematic id); got 3 characters
error: profiles/bad.yaml:13: talos.vip.ip: 10.0.0.11 is also the address of node cp1 (nodes.controlplane.assignments[0].ip); the VIP must be a free address
error: profiles/bad.yaml:15: secrets.recipients[0]: post-quantum (age1pq...) recipients are not supported; use an X25519 age1... or ssh-ed25519 recipient
error: profiles/bad.yaml:15: secrets.recipients[1]: \"hello\" is not an age recipient (age1... or ssh-ed25519 ...)
error: profiles/bad.yaml:19: nodes.controlplane.assignments[0].mac: \"02:54:00:00:01\" is not a MAC address (expected aa:bb:cc:dd:ee:ff)
error: profiles/bad.yaml:20: nodes.controlplane.assignments[1].ip: \"10.0.0.300\" is not an IP address
error: profiles/bad.yaml:20: nodes.controlplane.assignments[1].name: node name cp1 is already used by nodes.controlplane.assignments[0]
error: profiles/bad.yaml:24: nodes.worker.assignments[1].ip: 10.0.0.21 is already assigned to nodes.worker.assignments[0]
error: profiles/bad.yaml:26: patches.nodes.ghost: no node is named ghost
",
    );
    assert_eq!(ws.files(), before, "validate writes nothing");
}

#[test]
fn unknown_key_is_rejected_with_its_line() {
    let ws = Workspace::with_examples();
    ws.edit(
        "profiles/homelab.yaml",
        "  gateway: 10.0.0.1\n",
        "  gateway: 10.0.0.1\n  gatway: 10.0.0.1\n",
    );
    ws.talix()
        .args(["validate", "profiles/homelab.yaml"])
        .assert()
        .code(2)
        .stderr("error: profiles/homelab.yaml:9: network.gatway: unknown field `gatway`, expected one of api_endpoint, subnet, gateway, nameservers, pod_cidr, service_cidr\n");
}

#[test]
fn more_network_checks() {
    let ws = Workspace::with_examples();
    let p = "profiles/homelab.yaml";
    ws.edit(
        p,
        "service_cidr: 10.96.0.0/12",
        "service_cidr: 10.244.0.0/20",
    );
    ws.edit(p, "subnet: 10.0.0.0/24", "subnet: 10.0.0.5/24");
    ws.edit(
        p,
        "vip: { interface: eth0, ip: 10.0.0.10 }",
        "vip: { interface: eth0, ip: 10.0.9.10 }",
    );
    ws.edit(
        p,
        "mac: \"02:54:00:00:01:52\"",
        "mac: \"02:54:00:00:01:51\"",
    );
    ws.edit(
        p,
        "schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
        "schematic_id: 376567988AD370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
    );
    let out = ws
        .talix()
        .args(["validate", p])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    for needle in [
        "profiles/homelab.yaml:7: network.subnet: \"10.0.0.5/24\" has host bits set; the network is 10.0.0.0/24",
        "profiles/homelab.yaml:11: network.service_cidr: 10.244.0.0/20 overlaps network.pod_cidr 10.244.0.0/16",
        "profiles/homelab.yaml:17: talos.factory.schematic_id: must be 64 lower-case hex characters",
        "nodes.controlplane.assignments[1].mac: 02:54:00:00:01:51 is already the MAC of nodes.controlplane.assignments[0]",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn even_control_plane_count_warns_but_passes() {
    let ws = Workspace::with_examples();
    ws.edit(
        "profiles/homelab.yaml",
        "      - { name: cp3, ip: 10.0.0.13, mac: \"02:54:00:00:01:53\", vmid: 153 }\n",
        "",
    );
    ws.talix()
        .args(["validate", "profiles/homelab.yaml"])
        .assert()
        .success()
        .stderr(predicates::str::contains("warning: profiles/homelab.yaml:37: nodes.controlplane.assignments: 2 control-plane nodes: an odd number is recommended"));
}

#[test]
fn missing_and_unparsable_profiles() {
    let ws = Workspace::empty();
    ws.talix()
        .args(["validate", "profiles/nope.yaml"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "error: profiles/nope.yaml: cannot read profile:",
        ));
    ws.write("profiles/broken.yaml", "name: [x\n");
    ws.talix()
        .args(["validate", "profiles/broken.yaml"])
        .assert()
        .code(2)
        .stderr(predicates::str::starts_with(
            "error: profiles/broken.yaml:1: ",
        ));
    ws.write(
        "profiles/short.yaml",
        "name: x\nnetwork:\n  api_endpoint: a\n",
    );
    ws.talix()
        .args(["validate", "profiles/short.yaml"])
        .assert()
        .code(2)
        .stderr("error: profiles/short.yaml:3: network.subnet: missing field `subnet`\n");
}

#[test]
fn no_recipients_anywhere_is_an_error_but_a_recipients_file_counts() {
    let ws = Workspace::with_examples();
    let text = std::fs::read_to_string(ws.profile("single")).unwrap();
    let start = text.find("secrets:").unwrap();
    let end = text.find("nodes:").unwrap();
    let stripped = format!(
        "{}secrets:\n  recipients: []\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(ws.profile("single"), stripped).unwrap();
    ws.talix()
        .args(["validate", "profiles/single.yaml"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("secrets.recipients: no age recipients: list at least one here or in single.recipients beside the profile"));
    ws.write(
        "profiles/single.recipients",
        "# team keys\nage1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n",
    );
    ws.talix()
        .args(["validate", "profiles/single.yaml"])
        .assert()
        .success();
}

#[test]
fn endpoint_with_a_port_and_blank_interfaces_are_rejected() {
    let ws = Workspace::with_examples();
    ws.edit(
        "profiles/single.yaml",
        "api_endpoint: 192.168.1.50",
        "api_endpoint: 192.168.1.50:6443",
    );
    ws.edit(
        "profiles/single.yaml",
        "nodes:\n  controlplane:\n",
        "nodes:\n  controlplane:\n    interface: \"\"\n",
    );
    ws.talix().args(["validate", "profiles/single.yaml"]).assert().code(2).stderr(
        "error: profiles/single.yaml:4: network.api_endpoint: \"192.168.1.50:6443\" must be a host name or IP address (no scheme, no port)\n\
         error: profiles/single.yaml:19: nodes.controlplane.interface: must name a network interface (e.g. eth0)\n",
    );
}

/// Trap 10: a node without a MAC whose link name is the defaulted `eth0` is warned about
/// (Talos names NICs `ens18`/`enp0s18` unless the image sets net.ifnames=0); naming the
/// interface, or a MAC, silences it.
#[test]
fn a_node_without_mac_on_the_default_eth0_is_warned_about() {
    let ws = Workspace::with_examples();
    ws.edit("profiles/single.yaml", "mac: \"02:54:00:00:02:01\" }", "}");
    ws.talix()
        .args(["validate", "profiles/single.yaml"])
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "nodes.controlplane.assignments[0]: solo has no mac: its static address goes on link eth0",
        ));
    ws.edit(
        "profiles/single.yaml",
        "  controlplane:\n",
        "  controlplane:\n    interface: enp0s18\n",
    );
    ws.talix()
        .args(["validate", "profiles/single.yaml"])
        .assert()
        .success()
        .stderr(predicates::str::contains("has no mac").not());
}
