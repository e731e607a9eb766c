//! The example profiles as shipped: each validates, builds with the talosctl of its own release,
//! and renders configs that a node of that release accepts (the simulator's validation, ported
//! from upstream's validators).

mod common;

use common::{Cluster, Workspace};

fn talos_version_of(profile: &str) -> String {
    profile
        .lines()
        .find_map(|l| l.trim().strip_prefix("version: "))
        .unwrap()
        .to_string()
}

#[test]
fn examples_validate_build_and_render_configs_their_release_accepts() {
    let c = Cluster::of(Workspace::shipped_examples());
    let mut versions = Vec::new();
    for name in ["homelab", "single"] {
        let text = std::fs::read_to_string(c.profile(name)).unwrap();
        let version = talos_version_of(&text);
        versions.push(version.clone());
        let p = format!("profiles/{name}.yaml");
        c.talix().args(["validate", &p]).assert().success();
        c.talix()
            .env("TALOSCTL_SIM_VERSION", &version)
            .args(["build", &p])
            .assert()
            .success();
        let out = c.root().join(format!("exported-{name}"));
        c.talix()
            .env("TALOSCTL_SIM_VERSION", &version)
            .args(["export", &p, "--out"])
            .arg(&out)
            .assert()
            .success();
        let mut rendered = 0;
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if matches!(
                file.as_str(),
                "controlplane.yaml" | "worker.yaml" | "talosconfig" | "kubeconfig"
            ) {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            talos_sim::machineconfig::validate_for(&bytes, &version)
                .unwrap_or_else(|e| panic!("{name}: {file} rejected by a {version} node: {e:?}"));
            if name == "single" {
                // allow-scheduling-v1.14.yaml removed the control-plane taint.
                let text = String::from_utf8_lossy(&bytes);
                assert!(text.contains("kind: KubeNodeConfig"), "{text}");
                assert!(
                    !text.contains("node-role.kubernetes.io/control-plane: NoSchedule"),
                    "{text}"
                );
            }
            rendered += 1;
        }
        assert!(rendered >= 1, "{name}: no node configs exported");
    }
    // Current Talos for the examples, and one on an older contract.
    assert!(
        versions.iter().any(|v| v.starts_with("v1.14.")),
        "{versions:?}"
    );
    assert!(
        versions.iter().any(|v| !v.starts_with("v1.14.")),
        "{versions:?}"
    );
}
