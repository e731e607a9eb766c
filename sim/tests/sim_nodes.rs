//! Simulated Talos nodes driven by the simulated talosctl, as an operator would: maintenance
//! mode, apply-config, reboot to the static address, bootstrap (twice), health, etcd members,
//! kubeconfig, get output shapes, upgrade.

mod sim_nodes_support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::Value;
use sim_nodes_support::*;

const ALREADY: &str = "error executing bootstrap: 1 error occurred:\n\t* {node}: rpc error: code = AlreadyExists desc = etcd data directory is not empty\n\n\n";

fn machines() -> [Machine; 3] {
    [
        Machine {
            name: "cp1",
            controlplane: true,
            dhcp: 11,
            static_ip: 101,
        },
        Machine {
            name: "cp2",
            controlplane: true,
            dhcp: 12,
            static_ip: 102,
        },
        Machine {
            name: "w1",
            controlplane: false,
            dhcp: 21,
            static_ip: 121,
        },
    ]
}

fn json_stream(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("stream of JSON objects")
}

#[test]
fn full_life_cycle_from_maintenance_to_healthy_cluster() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = machines();
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.101:6443"),
        &[],
    );
    let service = work.start_service("serve", &serve_spec(&subnet, &ms, 150, &[]));
    let tc = files.talosconfig.display().to_string();
    let [cp1, cp2, w1] = &ms;

    // Maintenance mode: reachable at the DHCP address with --insecure only.
    assert_eq!(service.addresses()["cp1"], files.dhcp(cp1));
    let out = work.talosctl_ok(&[
        "get",
        "machinestatus",
        "--insecure",
        "-n",
        &files.dhcp(cp1),
        "-o",
        "json",
    ]);
    let status = json_stream(&out);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["spec"]["stage"], "maintenance");
    assert_eq!(status[0]["node"], "");

    let out = work.talosctl(&["version", "--insecure", "-n", &files.dhcp(cp1)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error getting version: rpc error: code = Unimplemented desc = API is not implemented in maintenance mode\n"
    );
    assert!(stdout(&out).starts_with("Client:\n\tTag:         v1.11.5\n"));
    assert!(stdout(&out).ends_with("Server:\n"));

    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "version",
        "-n",
        &files.dhcp(cp1),
        "-e",
        &files.dhcp(cp1),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("x509: certificate signed by unknown authority"),
        "{}",
        stderr(&out)
    );

    // apply-config --insecure: silent success (v1.11 maintenance API), then the API disappears.
    for m in &ms {
        let out = work.talosctl(&[
            "apply-config",
            "--insecure",
            "-n",
            &files.dhcp(m),
            "--file",
            &files.config(m),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
        assert_eq!(stderr(&out), "");
    }
    let out = work.talosctl(&["get", "machinestatus", "--insecure", "-n", &files.dhcp(cp1)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("connect: connection refused"),
        "{}",
        stderr(&out)
    );

    // After the reboot: authenticated API at the static address.
    for m in &ms {
        let out = work.talosctl_until_ok(
            &[
                "--talosconfig",
                &tc,
                "version",
                "-n",
                &files.static_addr(m),
                "-e",
                &files.static_addr(cp1),
            ],
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(&format!(
            "\tNODE:        {}\n\tTag:         v1.11.5\n",
            files.static_addr(m)
        )));
    }
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(service.addresses()["w1"], files.static_addr(w1));
    let out = work.talosctl(&["version", "--insecure", "-n", &files.static_addr(cp1)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("remote error: tls: certificate required"),
        "{}",
        stderr(&out)
    );

    // Health fails while etcd is not bootstrapped.
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "health",
        "--wait-timeout",
        "600ms",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("waiting for etcd to be healthy: etcd is not bootstrapped yet"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).ends_with(
        "healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded\n"
    ));

    // Bootstrap: several -n refused, worker refused, first CP works, any second call AlreadyExists.
    let both = format!("{},{}", files.static_addr(cp1), files.static_addr(cp2));
    let out = work.talosctl(&["--talosconfig", &tc, "bootstrap", "-n", &both]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("command \"bootstrap\" is not supported with multiple nodes\n")
    );
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "bootstrap",
        "-n",
        &files.static_addr(w1),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error executing bootstrap: 1 error occurred:\n\t* {}: rpc error: code = FailedPrecondition desc = bootstrap can only be performed on a control plane node\n\n\n",
            files.static_addr(w1)
        )
    );
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "bootstrap",
        "-n",
        &files.static_addr(cp1),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out) + &stderr(&out), "");
    for m in [cp1, cp2] {
        let out = work.talosctl(&[
            "--talosconfig",
            &tc,
            "bootstrap",
            "-n",
            &files.static_addr(m),
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            ALREADY.replace("{node}", &files.static_addr(m))
        );
    }

    // etcd members: both control planes, zero-padded hex IDs.
    let out = work.talosctl_ok(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "etcd",
        "members",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NODE "));
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NODE",
            "ID",
            "HOSTNAME",
            "PEER URLS",
            "CLIENT URLS",
            "LEARNER"
        ]
    );
    for (line, m) in lines[1..].iter().zip([cp1, cp2]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1].len(), 16);
        assert_eq!(cols[2], m.name);
        assert_eq!(cols[3], format!("https://{}:2380", files.static_addr(m)));
        assert_eq!(cols[5], "false");
    }

    // Discovery is on in the generated config: members lists every node.
    let out = work.talosctl_ok(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "get",
        "members",
        "-o",
        "json",
    ]);
    let members = json_stream(&out);
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["spec"]["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cp1", "cp2", "w1"]);
    assert_eq!(members[2]["spec"]["machineType"], "worker");
    assert_eq!(members[0]["node"], files.static_addr(cp1));

    // Health passes with explicit node lists.
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "health",
        "--control-plane-nodes",
        &both,
        "--worker-nodes",
        &files.static_addr(w1),
        "--wait-timeout",
        "10s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("waiting for etcd to be healthy: OK\n"));
    assert!(stderr(&out).contains("waiting for all k8s nodes to report ready: OK\n"));
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "health",
        "--control-plane-nodes",
        "cp1",
    ]);
    assert_eq!(out.status.code(), Some(1));

    // kubeconfig: written fresh with mode 0600; existing file without --merge/--force refused.
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "kubeconfig",
        "kc",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kc = work.file("kc");
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(text.contains(&format!("server: https://{}:6443", files.static_addr(cp1))));
    assert!(text.contains("current-context: admin@demo"));
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "kubeconfig",
        "kc",
        "--merge=false",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "kubeconfig file already exists, use --force to overwrite: {:?}\n",
            "kc"
        )
    );
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &files.static_addr(cp1),
        "kubeconfig",
        "-",
    ]);
    assert!(stdout(&out).starts_with("apiVersion: v1\nkind: Config\n"));

    assert!(service.stop().success());
}

#[test]
fn get_output_shapes_and_discovery_disabled_members() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = [Machine {
        name: "cp1",
        controlplane: true,
        dhcp: 31,
        static_ip: 131,
    }];
    let files = generate_cluster(
        &work,
        &subnet,
        &ms,
        &format!("https://{subnet}.131:6443"),
        &["--with-cluster-discovery=false"],
    );
    let ext = "    extensions:\n      - name: qemu-guest-agent\n        version: 9.2.0\n";
    let service = work.start_service("serve", &serve_spec(&subnet, &ms, 50, &[("cp1", ext)]));
    let dhcp = files.dhcp(&ms[0]);

    // json: a stream of 4-space-indented objects with sorted keys, not an array.
    let out = work.talosctl_ok(&["get", "links", "--insecure", "-n", &dhcp, "-o", "json"]);
    assert!(
        out.starts_with("{\n    \"metadata\": {\n        \"created\": "),
        "{out}"
    );
    assert!(!out.trim_start().starts_with('['));
    let links = json_stream(&out);
    assert_eq!(links.len(), 2);
    let nic = &links[0];
    assert_eq!(
        nic["metadata"]["id"], "ens18",
        "a Proxmox virtio NIC under predictable naming"
    );
    assert_eq!(nic["metadata"]["type"], "LinkStatuses.net.talos.dev");
    assert!(nic["metadata"]["version"].is_number());
    assert_eq!(nic["spec"]["type"], "ether");
    assert_eq!(
        nic["spec"]["kind"], "",
        "physical NICs have an empty kind (trap 3)"
    );
    assert_eq!(nic["spec"]["hardwareAddr"], "bc:24:11:00:00:1f");
    let keys: Vec<&String> = nic["spec"].as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let pos = |k: &str| out.find(&format!("\n    \"{k}\"")).unwrap();
    assert!(pos("metadata") < pos("node") && pos("node") < pos("spec"));

    // yaml: node line, metadata in COSI order, `---` between resources.
    let out = work.talosctl_ok(&["get", "links", "--insecure", "-n", &dhcp, "-o", "yaml"]);
    assert!(out.starts_with("node: \"\"\nmetadata:\n    namespace: network\n    type: LinkStatuses.net.talos.dev\n    id: ens18\n    version: 1\n"), "{out}");
    assert_eq!(out.matches("\n---\n").count(), 1);
    assert!(out.contains("\n    kind: \"\"\n"));
    // spec fields keep Talos' struct order in YAML.
    assert!(
        out.contains("spec:\n    index: 2\n    type: ether\n    linkIndex: 0\n    flags: "),
        "{out}"
    );

    // table
    let out = work.talosctl_ok(&["get", "links", "--insecure", "-n", &dhcp]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NODE",
            "NAMESPACE",
            "TYPE",
            "ID",
            "VERSION",
            "ALIAS",
            "TYPE",
            "KIND",
            "HW ADDR",
            "OPER STATE",
            "LINK STATE"
        ]
    );
    assert!(out.lines().nth(1).unwrap().contains("LinkStatus   ens18"));
    let out = work.talosctl_ok(&["get", "extensions", "--insecure", "-n", &dhcp]);
    assert!(out.contains("qemu-guest-agent   9.2.0"), "{out}");
    let out = work.talosctl(&["get", "links", "--insecure", "-n", &dhcp, "-o", "xml"]);
    assert_eq!(stderr(&out), "output format \"xml\" is not supported\n");
    let out = work.talosctl(&["get", "blorp", "--insecure", "-n", &dhcp]);
    assert_eq!(
        stderr(&out),
        "rpc error: code = NotFound desc = resource \"blorp\" is not registered\n"
    );
    let out = work.talosctl_ok(&["get", "members", "--insecure", "-n", &dhcp, "-o", "json"]);
    assert_eq!(out, "", "no members before a config exists");

    // Configure; with discovery disabled `get members` stays empty (trap 4).
    work.talosctl_ok(&[
        "apply-config",
        "-i",
        "-n",
        &dhcp,
        "-f",
        &files.config(&ms[0]),
    ]);
    let tc = files.talosconfig.display().to_string();
    let st = files.static_addr(&ms[0]);
    let out = work.talosctl_until_ok(
        &[
            "--talosconfig",
            &tc,
            "-n",
            &st,
            "get",
            "machinestatus",
            "-o",
            "json",
        ],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let status = json_stream(&stdout(&out));
    assert_eq!(status[0]["spec"]["stage"], "running");
    assert_eq!(status[0]["spec"]["status"]["ready"], true);
    assert_eq!(status[0]["node"], st);
    work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "bootstrap"]);
    let out = work.talosctl_ok(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "get",
        "members",
        "-o",
        "json",
    ]);
    assert_eq!(out, "");
    let out = work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "etcd", "members"]);
    assert_eq!(out.lines().count(), 2, "etcd still knows its member: {out}");

    // The client version check warns about older servers without failing.
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "get", "ms"]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");

    drop(service);
}

#[test]
fn upgrade_changes_the_version_but_a_new_install_image_in_the_config_does_not() {
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
    let service = work.start_service("serve", &serve_spec(&subnet, &ms, 400, &[]));
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
    let out = work.talosctl_until_ok(
        &["--talosconfig", &tc, "-n", &st, "version"],
        Duration::from_secs(10),
    );
    assert!(stdout(&out).contains("\tTag:         v1.11.5\n\tSHA"));

    // Trap 6: a new installer image applied to a running node changes nothing.
    let patch = work.write(
        "img.yaml",
        "machine:\n    install:\n        image: ghcr.io/siderolabs/installer:v1.12.0\n",
    );
    work.talosctl_ok(&[
        "machineconfig",
        "patch",
        &files.config(&ms[0]),
        "-p",
        &format!("@{}", patch.display()),
        "-o",
        "new.yaml",
    ]);
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "apply-config",
        "-f",
        "new.yaml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "Applied configuration without a reboot\n");
    let out = work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "version"]);
    assert!(
        out.contains("\tNODE:        ") && out.contains("\tTag:         v1.11.5\n\tSHA"),
        "{out}"
    );

    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "apply-config",
        "-f",
        "new.yaml",
        "-m",
        "try",
        "--timeout",
        "2m0s",
    ]);
    assert_eq!(
        stderr(&out),
        "Applied configuration without a reboot\nThe config is applied in 'try' mode and will be automatically reverted back in 2m0s\n"
    );
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "apply-config",
        "-f",
        "new.yaml",
        "-m",
        "reboot",
    ]);
    assert_eq!(stderr(&out), "Applied configuration with a reboot\n");
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "version"]);
    assert!(
        stderr(&out).contains("connection refused"),
        "rebooting: {}",
        stderr(&out)
    );
    let out = work.talosctl_until_ok(
        &["--talosconfig", &tc, "-n", &st, "version"],
        Duration::from_secs(10),
    );
    assert!(
        stdout(&out).contains("\tTag:         v1.11.5\n"),
        "still the old version after a reboot"
    );
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "apply-config",
        "-f",
        "new.yaml",
        "-m",
        "bogus",
    ]);
    assert_eq!(
        stderr(&out),
        "possible options are: auto, interactive, no-reboot, reboot, staged, try\n"
    );

    // `upgrade` does: the node reboots into the new version.
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-n",
        &st,
        "upgrade",
        "--image",
        "ghcr.io/siderolabs/installer:v1.12.0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = work.talosctl_ok(&["--talosconfig", &tc, "-n", &st, "version"]);
    assert!(out.contains("\tTag:         v1.12.0\n"), "{out}");
    let out = work.talosctl(&["--talosconfig", &tc, "-n", &st, "upgrade", "--insecure"]);
    assert_eq!(stderr(&out), "cannot use --wait and --insecure together\n");

    drop(service);
}
