//! `talix plan`, `why` and `build` as users run them: a fresh store plans everything, a build
//! makes its steps cached, plan never writes, and reasons name the changed input.

mod common;

use common::{Cluster, Workspace, plan_statuses};

#[test]
fn fresh_store_plans_every_step_as_new_or_blocked_and_writes_nothing() {
    let ws = Workspace::with_examples();
    let before = ws.files();
    let out = ws
        .talix()
        .args(["plan", "--json", "profiles/homelab.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let steps = plan_statuses(&out);
    let ids: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        ids,
        [
            "secrets",
            "base-config",
            "talosconfig",
            "patch/cp1",
            "patch/cp2",
            "patch/cp3",
            "patch/w1",
            "patch/w2",
            "render/cp1",
            "render/cp2",
            "render/cp3",
            "render/w1",
            "render/w2",
            "discover",
            "apply/cp1",
            "apply/cp2",
            "apply/cp3",
            "apply/w1",
            "apply/w2",
            "upgrade/cp1",
            "upgrade/cp2",
            "upgrade/cp3",
            "upgrade/w1",
            "upgrade/w2",
            "ready/cp1",
            "ready/cp2",
            "ready/cp3",
            "ready/w1",
            "ready/w2",
            "bootstrap",
            "health",
            "kubeconfig",
            "upgrade-k8s",
            "verify"
        ]
    );
    for (id, status, reason) in &steps {
        match status.as_str() {
            "run" => assert_eq!(reason, "new", "{id}"),
            "blocked" => assert!(reason.starts_with("waits for "), "{id}: {reason}"),
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    assert_eq!(
        ws.files(),
        before,
        "plan writes nothing, not even an empty store"
    );
}

#[test]
fn plan_json_has_a_stable_schema() {
    let ws = Workspace::with_examples();
    let out = ws
        .talix()
        .args(["plan", "--json", "profiles/single.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["profile"], "single");
    assert_eq!(v["contract"], "v1.11");
    let patch = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "patch/solo")
        .unwrap();
    let keys: Vec<&String> = patch.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "inputs", "key", "reason", "status"]);
    assert_eq!(patch["key"].as_str().unwrap().len(), 64);
    assert_eq!(patch["inputs"]["node.ip"], "192.168.1.50");
    let blocked = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "render/solo")
        .unwrap();
    assert!(blocked["key"].is_null() && blocked["inputs"].is_null());
}

#[test]
fn build_caches_config_steps_then_plan_explains_a_change() {
    let ws = Cluster::new();
    ws.talix()
        .args(["build", "profiles/homelab.yaml"])
        .assert()
        .stdout(predicates::str::contains("built    patch/w1"));
    assert!(
        ws.root().join("store/v1/objects").is_dir(),
        "default store is <workspace>/store"
    );
    let patch =
        std::fs::read_to_string(ws.root().join("clusters/homelab/patches/w1.yaml")).unwrap();
    assert!(
        patch.contains("          - 10.0.0.21/24\n") && !patch.contains("vip:"),
        "{patch}"
    );
    let cp = std::fs::read_to_string(ws.root().join("clusters/homelab/patches/cp1.yaml")).unwrap();
    assert!(
        cp.contains("        vip:\n          ip: 10.0.0.10\n")
            && cp.contains("    hostname: cp1\n"),
        "{cp}"
    );
    let lock = std::fs::read_to_string(ws.root().join("profiles/homelab.lock")).unwrap();
    assert!(lock.contains("contract: v1.11"), "{lock}");

    let out = ws
        .talix()
        .args(["plan", "--json", "profiles/homelab.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let cached: Vec<String> = plan_statuses(&out)
        .into_iter()
        .filter(|s| s.1 == "cached")
        .map(|s| s.0)
        .collect();
    assert_eq!(
        cached,
        [
            "secrets",
            "base-config",
            "talosconfig",
            "patch/cp1",
            "patch/cp2",
            "patch/cp3",
            "patch/w1",
            "patch/w2",
            "render/cp1",
            "render/cp2",
            "render/cp3",
            "render/w1",
            "render/w2",
            "kubeconfig"
        ]
    );

    ws.edit("profiles/homelab.yaml", "ip: 10.0.0.21", "ip: 10.0.0.31");
    ws.talix()
        .args(["plan", "profiles/homelab.yaml"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "  run      patch/w1     node.ip 10.0.0.21 -> 10.0.0.31\n",
        ))
        .stdout(predicates::str::contains("  cached   patch/w2"));
    ws.talix()
        .args(["why", "profiles/homelab.yaml", "patch/w1"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "step patch/w1 (plain outputs): run\n",
        ))
        .stdout(predicates::str::contains(
            "changed since:\n  node.ip 10.0.0.21 -> 10.0.0.31\n",
        ));
}

#[test]
fn why_unknown_step_lists_the_steps() {
    let ws = Workspace::with_examples();
    ws.talix()
        .args(["why", "profiles/single.yaml", "render/ghost"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "no step \"render/ghost\"; steps are: secrets, base-config, talosconfig, patch/solo",
        ));
}

#[test]
fn store_flag_and_env_override_the_default_store() {
    let ws = Cluster::new();
    let elsewhere = ws.root().join("elsewhere");
    ws.talix()
        .args(["build", "profiles/single.yaml", "--store"])
        .arg(&elsewhere)
        .assert()
        .success();
    let objects = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("v1/objects"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // `secrets init` recorded only the secrets steps (of both examples) in the default store;
    // the build went elsewhere.
    assert_eq!(objects(&ws.root().join("store")), 2);
    // secrets, base-config, talosconfig, patch, render, kubeconfig
    assert_eq!(objects(&elsewhere), 6);
    let env_store = ws.root().join("env-store");
    ws.talix()
        .env("TALIX_STORE", &env_store)
        .args(["build", "profiles/single.yaml"])
        .assert()
        .success();
    assert_eq!(objects(&env_store), 6);
    ws.talix()
        .args(["store", "verify", "--store"])
        .arg(&env_store)
        .assert()
        .success()
        .stdout(predicates::str::contains("objects verified"));
}

#[test]
fn contract_pin_survives_a_version_bump_and_a_change_needs_a_flag() {
    let ws = Cluster::new();
    // single.yaml names no contract: it defaults to v1.11 and is pinned at the first build.
    ws.talix()
        .args(["build", "profiles/single.yaml"])
        .assert()
        .success();
    ws.edit(
        "profiles/single.yaml",
        "version: v1.11.5",
        "version: v1.12.1",
    );
    let out = ws
        .talix()
        .args(["plan", "--json", "profiles/single.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["contract"], "v1.11", "the pinned contract stays");
    // Asking for another contract explicitly is refused without the flag...
    ws.edit(
        "profiles/single.yaml",
        "  factory:",
        "  contract: v1.12\n  factory:",
    );
    ws.talix()
        .args(["plan", "profiles/single.yaml"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "talos.contract v1.12 differs from the contract v1.11 pinned in",
        ))
        .stderr(predicates::str::contains(
            "hint: changing the contract of an existing cluster can break it",
        ));
    // ...and accepted, with a warning, with it.
    ws.talix()
        .args(["plan", "profiles/single.yaml", "--allow-contract-change"])
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "warning: changing the config contract of single from v1.11 to v1.12",
        ));
}
