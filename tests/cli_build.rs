//! `talix build` against the simulator's talosctl, counting its invocations: unchanged inputs
//! run no `gen` and no `machineconfig patch`; each kind of change re-runs exactly what it must.

mod common;

use common::Cluster;

const P: &str = "profiles/homelab.yaml";

/// (gen config for controlplane/worker, gen config for talosconfig, machineconfig patch, gen secrets).
/// The talosconfig (and kubeconfig) are derived by talix itself: the second count stays 0.
fn counts(c: &Cluster) -> (usize, usize, usize, usize) {
    let calls = c.calls();
    let gen_cfg = |t: &str| {
        calls
            .iter()
            .filter(|a| {
                a.starts_with(&["gen".into(), "config".into()])
                    && a.windows(2).any(|w| w[0] == "-t" && w[1] == t)
            })
            .count()
    };
    (
        gen_cfg("controlplane") + gen_cfg("worker"),
        gen_cfg("talosconfig"),
        c.count(&["machineconfig", "patch"]),
        c.count(&["gen", "secrets"]),
    )
}

fn fresh() -> Cluster {
    let c = Cluster::new();
    c.talix().args(["build", P]).assert().success();
    c.clear_calls();
    c
}

fn rebuild(c: &Cluster) -> String {
    let out = c
        .talix()
        .args(["build", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn first_build_runs_each_generator_once_per_output() {
    let c = Cluster::new();
    let out = c
        .talix()
        .args(["build", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("homelab: 13 built, 1 cached"), "{text}");
    assert!(text.contains("built    kubeconfig"), "{text}");
    assert_eq!(counts(&c), (2, 0, 5, 0));
    // every generator call pins the contract (trap 5) and passes the subnets as a strategic
    // merge patch, never JSON6902 (trap 1)
    for argv in c
        .calls()
        .iter()
        .filter(|a| a.starts_with(&["gen".into(), "config".into()]))
    {
        assert!(
            argv.windows(2)
                .any(|w| w[0] == "--talos-version" && w[1] == "v1.11"),
            "{argv:?}"
        );
        assert!(
            argv.iter()
                .any(|a| a.starts_with("cluster:\n  network:\n    podSubnets:")),
            "{argv:?}"
        );
        assert!(
            argv.iter().any(|a| a.starts_with("/dev/fd/")),
            "secrets go through a pipe: {argv:?}"
        );
        assert!(argv.contains(&"--with-cluster-discovery=false".to_string()));
    }
}

#[test]
fn no_change_runs_no_generator() {
    let c = fresh();
    let text = rebuild(&c);
    assert!(text.contains("homelab: 0 built, 14 cached"), "{text}");
    assert_eq!(counts(&c), (0, 0, 0, 0));
}

#[test]
fn one_node_ip_change_renders_exactly_that_node() {
    let c = fresh();
    c.edit(P, "ip: 10.0.0.22", "ip: 10.0.0.32");
    let text = rebuild(&c);
    assert!(
        text.contains("built    patch/w2") && text.contains("built    render/w2"),
        "{text}"
    );
    assert!(
        text.contains("built    talosconfig"),
        "the node list changed: {text}"
    );
    assert!(text.contains("cached   kubeconfig"), "{text}");
    assert_eq!(counts(&c), (0, 0, 1, 0));
    let tc = std::fs::read_to_string(c.root().join("clusters/homelab/talosconfig")).unwrap();
    assert!(
        tc.contains("10.0.0.32") && !tc.contains("10.0.0.22"),
        "{tc}"
    );
}

#[test]
fn one_user_patch_change_renders_exactly_that_node() {
    let c = fresh();
    c.write(
        "profiles/patches/cp2-extra.yaml",
        "machine:\n  sysctls:\n    vm.max_map_count: \"262144\"\n",
    );
    c.edit(
        P,
        "  worker: []\n",
        "  worker: []\n  nodes: { cp2: [patches/cp2-extra.yaml] }\n",
    );
    rebuild(&c);
    assert_eq!(counts(&c), (0, 0, 1, 0));
    c.write(
        "profiles/patches/cp2-extra.yaml",
        "machine:\n  sysctls:\n    vm.max_map_count: \"524288\"\n",
    );
    c.clear_calls();
    let text = rebuild(&c);
    assert!(
        text.contains("built    render/cp2") && !text.contains("built    patch/cp2"),
        "{text}"
    );
    assert_eq!(counts(&c), (0, 0, 1, 0));
}

#[test]
fn adding_a_worker_adds_one_patch_and_render_and_updates_the_talosconfig() {
    let c = fresh();
    c.edit(P, "      - { name: w2, ip: 10.0.0.22, vmid: 162 }\n", "      - { name: w2, ip: 10.0.0.22, vmid: 162 }\n      - { name: w3, ip: 10.0.0.23, vmid: 163 }\n");
    let text = rebuild(&c);
    assert!(
        text.contains("built    patch/w3") && text.contains("built    render/w3"),
        "{text}"
    );
    assert!(text.contains("built    talosconfig"), "{text}");
    assert_eq!(counts(&c), (0, 0, 1, 0));
    assert!(c.root().join("clusters/homelab/patches/w3.yaml").is_file());
}

#[test]
fn talos_version_bump_rebuilds_configs_keeps_secrets_and_contract() {
    let c = fresh();
    let secrets_before = std::fs::read(c.root().join("profiles/homelab.secrets.age")).unwrap();
    c.edit(P, "version: v1.11.5", "version: v1.11.6");
    let text = rebuild(&c);
    assert!(text.contains("cached   secrets"), "{text}");
    assert_eq!(counts(&c), (2, 0, 5, 0));
    assert_eq!(
        std::fs::read(c.root().join("profiles/homelab.secrets.age")).unwrap(),
        secrets_before
    );
    for argv in c
        .calls()
        .iter()
        .filter(|a| a.starts_with(&["gen".into(), "config".into()]))
    {
        assert!(
            argv.windows(2)
                .any(|w| w[0] == "--talos-version" && w[1] == "v1.11"),
            "contract pinned: {argv:?}"
        );
        assert!(
            argv.iter().any(|a| a.ends_with(":v1.11.6")),
            "new installer image: {argv:?}"
        );
    }
    // A minor bump without a profile contract also keeps the pinned contract.
    c.edit(P, "  contract: v1.11\n", "");
    c.edit(P, "version: v1.11.6", "version: v1.12.0");
    c.clear_calls();
    rebuild(&c);
    for argv in c
        .calls()
        .iter()
        .filter(|a| a.starts_with(&["gen".into(), "config".into()]))
    {
        assert!(
            argv.windows(2)
                .any(|w| w[0] == "--talos-version" && w[1] == "v1.11"),
            "contract still pinned: {argv:?}"
        );
    }
}

#[test]
fn kubernetes_version_bump_rebuilds_base_config_and_every_render() {
    let c = fresh();
    c.edit(
        P,
        "kubernetes_version: 1.34.1",
        "kubernetes_version: 1.34.2",
    );
    rebuild(&c);
    assert_eq!(counts(&c), (2, 0, 5, 0));
    c.talix()
        .args(["plan", P])
        .assert()
        .success()
        .stdout(predicates::str::contains("cached   render/w1"));
}

#[test]
fn new_talosctl_patch_release_with_identical_output_reruns_base_config_only() {
    let c = fresh();
    let out = c
        .talix()
        .env("TALOSCTL_SIM_VERSION", "v1.11.6")
        .args(["plan", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan = String::from_utf8(out).unwrap();
    assert!(
        plan.contains("run      base-config  tool talosctl v1.11.5 -> v1.11.6"),
        "{plan}"
    );
    let out = c
        .talix()
        .env("TALOSCTL_SIM_VERSION", "v1.11.6")
        .args(["build", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("built    base-config") && text.contains("cached   render/cp1"),
        "{text}"
    );
    assert_eq!(
        counts(&c),
        (2, 0, 0, 0),
        "no machineconfig patch: early cut-off"
    );
}

#[test]
fn rekey_changes_nothing_downstream() {
    let c = fresh();
    let before = std::fs::read(c.root().join("profiles/homelab.secrets.age")).unwrap();
    c.talix().args(["secrets", "rekey", P]).assert().success();
    assert_ne!(
        std::fs::read(c.root().join("profiles/homelab.secrets.age")).unwrap(),
        before,
        "new ciphertext"
    );
    let out = c
        .talix()
        .args(["plan", "--json", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let statuses = common::plan_statuses(&out);
    for (id, status, _) in statuses.iter().filter(|s| {
        [
            "secrets",
            "base-config",
            "talosconfig",
            "patch",
            "render",
            "kubeconfig",
        ]
        .contains(&s.0.split('/').next().unwrap())
    }) {
        assert_eq!(status, "cached", "{id}");
    }
    rebuild(&c);
    assert_eq!(counts(&c), (0, 0, 0, 0));
}

#[test]
fn export_writes_plaintext_configs_0600() {
    let c = fresh();
    // A talosconfig someone opened up is closed again by the next build.
    let tc = c.root().join("clusters/homelab/talosconfig");
    std::fs::set_permissions(&tc, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.talix().args(["build", P]).assert().success();
    assert_eq!(
        std::fs::metadata(&tc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = c.root().join("exported");
    c.talix()
        .args(["export", P, "--out"])
        .arg(&out)
        .assert()
        .success();
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "controlplane.yaml",
            "cp1.yaml",
            "cp2.yaml",
            "cp3.yaml",
            "kubeconfig",
            "talosconfig",
            "w1.yaml",
            "w2.yaml",
            "worker.yaml"
        ]
    );
    for n in &names {
        assert_eq!(
            std::fs::metadata(out.join(n)).unwrap().permissions().mode() & 0o777,
            0o600,
            "{n}"
        );
    }
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(c.root().join("clusters/homelab/talosconfig"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let cp1 = std::fs::read_to_string(out.join("cp1.yaml")).unwrap();
    assert!(
        cp1.contains("hostname: cp1")
            && cp1.contains("10.0.0.11/24")
            && cp1.contains("ip: 10.0.0.10"),
        "{cp1}"
    );
    let w1 = std::fs::read_to_string(out.join("w1.yaml")).unwrap();
    assert!(!w1.contains("vip:"), "no VIP on workers");
}

/// Build the HA example under `contract` (talosctl of that series) and return the rendered
/// node configs.
fn rendered_under(contract: &str, talos_version: &str) -> Vec<(String, Vec<u8>)> {
    let c = Cluster::new();
    c.edit(P, "version: v1.11.5", &format!("version: {talos_version}"));
    c.edit(P, "contract: v1.11", &format!("contract: {contract}"));
    let sim_version = format!("{contract}.0");
    c.talix()
        .env("TALOSCTL_SIM_VERSION", &sim_version)
        .args(["build", P])
        .assert()
        .success();
    let out = c.root().join("exported");
    c.talix()
        .env("TALOSCTL_SIM_VERSION", &sim_version)
        .args(["export", P, "--out"])
        .arg(&out)
        .assert()
        .success();
    ["cp1", "cp2", "cp3", "w1", "w2"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read(out.join(format!("{n}.yaml"))).unwrap(),
            )
        })
        .collect()
}

#[test]
fn rendered_configs_pass_the_simulators_validation_for_each_contract() {
    for (contract, version) in [
        ("v1.11", "v1.11.5"),
        ("v1.12", "v1.12.1"),
        ("v1.14", "v1.14.0"),
    ] {
        for (node, bytes) in rendered_under(contract, version) {
            let summary = talos_sim::machineconfig::validate(&bytes)
                .unwrap_or_else(|errors| panic!("{contract} {node}: {errors:?}"));
            let text = String::from_utf8_lossy(&bytes);
            let hostname_docs = text.matches("kind: HostnameConfig").count();
            if contract == "v1.11" {
                assert_eq!(hostname_docs, 0, "{contract} {node}");
                assert!(
                    text.contains(&format!("hostname: {node}")),
                    "{contract} {node}"
                );
            } else {
                assert_eq!(
                    hostname_docs, 1,
                    "{contract} {node}: one HostnameConfig document"
                );
                assert!(
                    !text.contains(&format!("    hostname: {node}")),
                    "{contract} {node}: no machine.network.hostname"
                );
            }
            assert_eq!(
                summary.hostname.as_deref(),
                Some(node.as_str()),
                "{contract} {node}"
            );
            let vip = summary.vip.map(|v| v.to_string());
            assert_eq!(
                vip.as_deref() == Some("10.0.0.10"),
                node.starts_with("cp"),
                "{contract} {node}: VIP on control planes only"
            );
        }
    }
}

/// The `plan` line of step `id`.
fn plan_line(c: &Cluster, id: &str) -> String {
    let out = c
        .talix()
        .args(["plan", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("no {id} in\n{text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn plan_names_the_changed_input_in_each_case() {
    let c = fresh();
    c.edit(
        P,
        "kubernetes_version: 1.34.1",
        "kubernetes_version: 1.34.2",
    );
    assert_eq!(
        plan_line(&c, "base-config"),
        "run base-config talos.kubernetes_version 1.34.1 -> 1.34.2"
    );
    assert_eq!(
        plan_line(&c, "render/w1"),
        "blocked render/w1 waits for base-config"
    );
    c.edit(
        P,
        "kubernetes_version: 1.34.2",
        "kubernetes_version: 1.34.1",
    );
    c.edit(P, "version: v1.11.5", "version: v1.11.6");
    let line = plan_line(&c, "base-config");
    assert!(line.starts_with("run base-config installer_image factory.talos.dev/installer/") && line.ends_with(":v1.11.5 -> factory.talos.dev/installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba:v1.11.6"), "{line}");
    c.edit(P, "version: v1.11.6", "version: v1.11.5");
    assert_eq!(plan_line(&c, "base-config"), "cached base-config");
    c.write(
        "profiles/patches/ntp.yaml",
        "machine:\n  time:\n    servers:\n      - pool.ntp.org\n",
    );
    let line = plan_line(&c, "render/cp1");
    assert!(
        line.starts_with("run render/cp1 user_patch[0] patches/ntp.yaml (")
            && line.contains(") -> patches/ntp.yaml ("),
        "{line}"
    );
    c.edit(P, "      - { name: w2, ip: 10.0.0.22, vmid: 162 }\n", "      - { name: w2, ip: 10.0.0.22, vmid: 162 }\n      - { name: w3, ip: 10.0.0.23, vmid: 163 }\n");
    assert_eq!(plan_line(&c, "patch/w3"), "run patch/w3 new");
    let line = plan_line(&c, "talosconfig");
    assert!(
        line.starts_with("run talosconfig nodes [") && line.contains("\"10.0.0.23\"]"),
        "{line}"
    );
}

/// Every external wait is bounded (issue 8, defect 8): a talosctl that hangs in `gen config`
/// is killed at TALIX_EXEC_TIMEOUT_S and the build fails saying so.
#[test]
fn a_hanging_talosctl_is_killed_at_the_exec_timeout() {
    let c = Cluster::new();
    let fake = c.root().join("bin/hanging-talosctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$*\" in *version*) exec \"{}\" \"$@\";; esac\nexec sleep 120\n",
            c.root().join("bin/talosctl").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = std::time::Instant::now();
    c.talix()
        .env("TALIX_TALOSCTL", &fake)
        .env("TALIX_EXEC_TIMEOUT_S", "2")
        .args(["build", P])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "did not finish within 2s and was killed",
        ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(100),
        "the build waited for the hung talosctl"
    );
}
