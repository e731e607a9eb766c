//! Simulated machines have one NIC with a realistic name (`ens18` by default, as a Proxmox
//! virtio NIC under predictable naming) and take a static address only from configuration of a
//! link they really have: by name, by `deviceSelector`, or (v1.12+) by a `LinkAliasConfig`
//! alias. Otherwise they stay at their DHCP address.

mod sim_nodes_support;

use std::time::Duration;

use sim_nodes_support::*;

const LIMIT: Duration = Duration::from_secs(30);

fn spec(subnet: &str, nodes: &[(&str, &str, u8, &str)]) -> String {
    let mut s = String::from("nodes:\n");
    for (name, mac, last, extra) in nodes {
        s.push_str(&format!(
            "  - name: {name}\n    mac: \"{mac}\"\n    address: {subnet}.{last}\n    reboot_delay_ms: 50\n{extra}"
        ));
    }
    s
}

fn apply_insecure(work: &Workdir, node: &str, config: &std::path::Path) {
    work.talosctl_ok(&[
        "apply-config",
        "--insecure",
        "-n",
        node,
        "-f",
        &config.display().to_string(),
    ]);
}

/// Waits until the authenticated API answers at `address` (the node came up configured there).
fn wait_configured_at(work: &Workdir, tc: &str, address: &str) -> std::process::Output {
    work.talosctl_until_ok(
        &["--talosconfig", tc, "-e", address, "-n", address, "version"],
        LIMIT,
    )
}

fn hostname_and(name: &str, network: &str) -> String {
    format!("machine:\n    network:\n        hostname: {name}\n{network}")
}

#[test]
fn a_config_for_a_link_the_machine_lacks_leaves_it_on_its_dhcp_address() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let patch = hostname_and(
        "cp1",
        &format!(
            "        interfaces:\n            - interface: eth0\n              addresses: [{subnet}.111/24]\n"
        ),
    );
    let (tc, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.111:6443"),
        "ghcr.io/siderolabs/installer:v1.11.5",
        &[("cp1", true, patch)],
    );
    let tc = tc.display().to_string();
    let service = work.start_service(
        "serve",
        &spec(&subnet, &[("cp1", "bc:24:11:00:00:01", 11, "")]),
    );
    let dhcp = format!("{subnet}.11");
    // In maintenance the machine shows its real NIC.
    let links = work.talosctl_ok(&["get", "links", "--insecure", "-n", &dhcp]);
    assert!(links.contains("LinkStatus   ens18"), "{links}");
    apply_insecure(&work, &dhcp, &configs["cp1"]);

    let out = wait_configured_at(&work, &tc, &dhcp);
    assert!(
        out.status.success(),
        "configured node is not at its DHCP address: {}",
        stderr(&out)
    );
    let static_addr = format!("{subnet}.111");
    let out = work.talosctl(&[
        "--talosconfig",
        &tc,
        "-e",
        &static_addr,
        "-n",
        &static_addr,
        "version",
    ]);
    assert!(!out.status.success(), "eth0's address must not be used");
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
    let links = work.talosctl_ok(&[
        "--talosconfig",
        &tc,
        "-e",
        &dhcp,
        "-n",
        &dhcp,
        "get",
        "links",
    ]);
    assert!(links.contains("ens18"), "{links}");
    assert_eq!(service.addresses()["cp1"], dhcp);
}

#[test]
fn the_eth0_name_needs_net_ifnames_0() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let patch = hostname_and(
        "cp1",
        &format!(
            "        interfaces:\n            - interface: eth0\n              addresses: [{subnet}.111/24]\n"
        ),
    );
    let (tc, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.111:6443"),
        "ghcr.io/siderolabs/installer:v1.11.5",
        &[("cp1", true, patch)],
    );
    let tc = tc.display().to_string();
    let _service = work.start_service(
        "serve",
        &spec(
            &subnet,
            &[(
                "cp1",
                "bc:24:11:00:00:01",
                11,
                "    kernel_args: [net.ifnames=0]\n",
            )],
        ),
    );
    let dhcp = format!("{subnet}.11");
    let links = work.talosctl_ok(&["get", "links", "--insecure", "-n", &dhcp]);
    assert!(links.contains("LinkStatus   eth0"), "{links}");
    apply_insecure(&work, &dhcp, &configs["cp1"]);
    let out = wait_configured_at(&work, &tc, &format!("{subnet}.111"));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn device_selector_by_mac_finds_ens18_and_globs_are_case_sensitive() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let by_mac = |name: &str, mac: &str, last: u8| {
        hostname_and(
            name,
            &format!(
                "        interfaces:\n            - deviceSelector:\n                  hardwareAddr: \"{mac}\"\n              addresses: [{subnet}.{last}/24]\n"
            ),
        )
    };
    let (tc, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.112:6443"),
        "ghcr.io/siderolabs/installer:v1.11.5",
        &[
            ("cp1", true, by_mac("cp1", "bc:24:11:00:00:02", 112)),
            ("cp2", true, by_mac("cp2", "bc:24:11:*", 113)),
            // upstream compares against net.HardwareAddr.String() (lowercase) with a
            // case-sensitive glob: an uppercase MAC selects nothing.
            ("cp3", true, by_mac("cp3", "BC:24:11:00:00:04", 114)),
        ],
    );
    let tc = tc.display().to_string();
    let _service = work.start_service(
        "serve",
        &spec(
            &subnet,
            &[
                ("cp1", "bc:24:11:00:00:02", 12, ""),
                ("cp2", "bc:24:11:00:00:03", 13, ""),
                ("cp3", "bc:24:11:00:00:04", 14, ""),
            ],
        ),
    );
    for (name, last) in [("cp1", 12), ("cp2", 13), ("cp3", 14)] {
        apply_insecure(&work, &format!("{subnet}.{last}"), &configs[name]);
    }
    for address in [
        format!("{subnet}.112"),
        format!("{subnet}.113"),
        format!("{subnet}.14"),
    ] {
        let out = wait_configured_at(&work, &tc, &address);
        assert!(out.status.success(), "{address}: {}", stderr(&out));
    }
}

#[test]
fn link_alias_by_mac_names_ens18_from_v1_12() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let alias = |name: &str, mac: &str, last: u8| {
        format!(
            "machine:\n    network:\n        hostname: {name}\n---\napiVersion: v1alpha1\nkind: LinkAliasConfig\nname: net0\nselector:\n    match: mac(link.permanent_addr) == \"{mac}\"\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: net0\naddresses:\n    - address: {subnet}.{last}/24\n"
        )
    };
    let (tc, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.115:6443"),
        "ghcr.io/siderolabs/installer:v1.12.4",
        &[
            ("cp1", true, alias("cp1", "bc:24:11:00:00:05", 115)),
            // CEL string equality is exact and mac() yields lowercase.
            ("cp2", true, alias("cp2", "BC:24:11:00:00:06", 116)),
        ],
    );
    let tc = tc.display().to_string();
    let v112 = "    maintenance_version: v1.12.4\n";
    let _service = work.start_service(
        "serve",
        &spec(
            &subnet,
            &[
                ("cp1", "bc:24:11:00:00:05", 15, v112),
                ("cp2", "bc:24:11:00:00:06", 16, v112),
            ],
        ),
    );
    apply_insecure(&work, &format!("{subnet}.15"), &configs["cp1"]);
    apply_insecure(&work, &format!("{subnet}.16"), &configs["cp2"]);
    let static_addr = format!("{subnet}.115");
    let out = wait_configured_at(&work, &tc, &static_addr);
    assert!(out.status.success(), "{}", stderr(&out));
    let links = work.talosctl_ok(&[
        "--talosconfig",
        &tc,
        "-e",
        &static_addr,
        "-n",
        &static_addr,
        "get",
        "links",
        "-o",
        "yaml",
    ]);
    assert!(links.contains("    id: ens18\n"), "{links}");
    assert!(
        links.contains("spec:\n    alias: net0\n    index: 2\n"),
        "{links}"
    );
    let out = wait_configured_at(&work, &tc, &format!("{subnet}.16"));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The VIP follows the same rule: only a control plane announces it, and only on a link it has
/// (v1alpha1 `interfaces[].vip`; `Layer2VIPConfig.link`, which upstream accepts on workers too,
/// but a worker never wins the etcd-based election).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_sits_on_a_control_plane_link_the_machine_has() {
    use talos_sim::node::{ClusterSpec, Phase, SimCluster};
    let work = Workdir::new();
    let subnet = random_subnet();
    let vip_on = |name: &str, link: &str, last: u8| {
        hostname_and(
            name,
            &format!(
                "        interfaces:\n            - interface: {link}\n              addresses: [{subnet}.{last}/24]\n              vip:\n                  ip: {subnet}.150\n"
            ),
        )
    };
    let layer2 = format!(
        "machine:\n    network:\n        hostname: w1\n---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: {subnet}.150\nlink: ens18\n"
    );
    let (_, configs) = generate_patched(
        &work,
        &format!("https://{subnet}.150:6443"),
        "ghcr.io/siderolabs/installer:v1.12.4",
        &[
            ("cp1", true, vip_on("cp1", "ens18", 151)),
            ("cp2", true, vip_on("cp2", "eth0", 152)),
            ("w1", false, layer2),
        ],
    );
    let spec: ClusterSpec = serde_saphyr::from_str(&spec(
        &subnet,
        &[
            (
                "cp1",
                "bc:24:11:00:00:51",
                51,
                "    maintenance_version: v1.12.4\n",
            ),
            (
                "cp2",
                "bc:24:11:00:00:52",
                52,
                "    maintenance_version: v1.12.4\n",
            ),
            (
                "w1",
                "bc:24:11:00:00:53",
                53,
                "    maintenance_version: v1.12.4\n",
            ),
        ],
    ))
    .unwrap();
    let cluster = SimCluster::start(spec).await.unwrap();
    let work = std::sync::Arc::new(work);
    for (name, last) in [("cp1", 51), ("cp2", 52), ("w1", 53)] {
        let work = work.clone();
        let config = configs[name].clone();
        let node = format!("{subnet}.{last}");
        tokio::task::spawn_blocking(move || apply_insecure(&work, &node, &config))
            .await
            .unwrap();
    }
    for name in ["cp1", "cp2", "w1"] {
        assert!(
            cluster.wait_for_phase(name, Phase::Running, LIMIT).await,
            "{name}"
        );
    }
    let vip = Some(format!("{subnet}.150").parse().unwrap());
    let cp1 = cluster.status("cp1").unwrap();
    assert_eq!(
        (cp1.address.to_string(), cp1.vip),
        (format!("{subnet}.151"), vip)
    );
    let cp2 = cluster.status("cp2").unwrap();
    assert_eq!(
        (cp2.address.to_string(), cp2.vip),
        (format!("{subnet}.52"), None)
    );
    assert_eq!(cluster.status("w1").unwrap().vip, None);
    cluster.shutdown().await;
}
