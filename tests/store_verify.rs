//! `talix store verify [--repair]`: a flipped byte, a truncated output and a missing object are
//! found; `--repair` rebuilds the pure ones (then verify is clean and `plan` shows them cached),
//! and on a cluster brought up on the simulator it names the receipts it cannot rebuild and
//! exits non-zero.

mod common;

use std::path::PathBuf;

use common::Cluster;
use predicates::prelude::*;

const HOMELAB: &str = "profiles/homelab.yaml";

/// The key the store's ref of `step` holds for `profile`.
fn ref_key(c: &Cluster, profile: &str, step: &str) -> String {
    let p = c
        .root()
        .join("store/v1/refs")
        .join(profile)
        .join(step.replace('/', "~"));
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

fn object(c: &Cluster, key: &str) -> PathBuf {
    c.root().join("store/v1/objects").join(key)
}

fn flip_byte(path: PathBuf) {
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

fn truncate(path: PathBuf) {
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
}

fn statuses(c: &Cluster, p: &str) -> Vec<(String, String, String)> {
    let out = c
        .talix()
        .args(["plan", "--json", p])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    common::plan_statuses(&out)
}

fn assert_build_steps_cached(c: &Cluster, p: &str) {
    for (id, status, reason) in statuses(c, p) {
        if talix::graph::BUILD_KINDS.contains(&id.split('/').next().unwrap()) {
            assert_eq!(status, "cached", "{id}: {reason}");
        }
    }
}

/// Damage three pure objects: flip a byte of render/cp1 (ciphertext), truncate patch/w1,
/// delete the talosconfig object. Returns their keys.
fn damage(c: &Cluster) -> [String; 3] {
    let render = ref_key(c, "homelab", "render/cp1");
    let patch = ref_key(c, "homelab", "patch/w1");
    let talosconfig = ref_key(c, "homelab", "talosconfig");
    flip_byte(object(c, &render).join("out/config"));
    truncate(object(c, &patch).join("out/patch"));
    std::fs::remove_dir_all(object(c, &talosconfig)).unwrap();
    [render, patch, talosconfig]
}

#[test]
fn verify_finds_a_flipped_byte_a_truncation_and_a_missing_object_and_repair_rebuilds_them() {
    let c = Cluster::new();
    c.talix().args(["build", HOMELAB]).assert().success();
    c.talix().args(["store", "verify"]).assert().success();
    let [render, patch, talosconfig] = damage(&c);

    let out = c
        .talix()
        .args(["store", "verify", HOMELAB])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&render) && err.contains("output config does not match its hash"),
        "{err}"
    );
    assert!(
        err.contains(&patch) && err.contains("output patch does not match its hash"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "store object {talosconfig} (talosconfig) is missing"
        )),
        "{err}"
    );
    assert!(err.contains("3 problems"), "{err}");
    // `ls` marks the damaged ones (the missing one is not listed: it is not there).
    let ls = c
        .talix()
        .args(["store", "ls", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let ls: serde_json::Value = serde_json::from_slice(&ls).unwrap();
    let objects = ls["objects"].as_array().unwrap();
    for o in objects {
        let key = o["key"].as_str().unwrap();
        assert_eq!(
            o["damaged"].as_bool().unwrap(),
            key == render || key == patch,
            "{o}"
        );
        assert_ne!(key, talosconfig);
    }
    assert!(err.contains("--repair"), "the way out is named: {err}");

    let out = c
        .talix()
        .args(["store", "verify", "--repair", HOMELAB])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    for (step, key) in [
        ("render/cp1", &render),
        ("patch/w1", &patch),
        ("talosconfig", &talosconfig),
    ] {
        assert!(text.contains(&format!("rebuilt {step} {key}")), "{text}");
    }
    assert!(
        !text.contains("rebuilt base-config"),
        "intact objects stay: {text}"
    );
    assert!(text.contains("objects verified"), "{text}");
    c.talix().args(["store", "verify"]).assert().success();
    assert_build_steps_cached(&c, HOMELAB);

    // Without PROFILE, --repair finds the profile from the file its refs record.
    let [render, patch, talosconfig] = damage(&c);
    let out = c
        .talix()
        .args(["store", "verify", "--repair"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [&render, &patch, &talosconfig] {
        assert!(text.contains(key.as_str()), "{text}");
    }
    c.talix().args(["store", "verify"]).assert().success();
    assert_build_steps_cached(&c, HOMELAB);

    // A damaged old realisation (no current step builds it): repair cannot rebuild it and says
    // so (exit 1); gc removes it, since no root reaches it, and verify is clean again.
    let old = ref_key(&c, "homelab", "patch/w2");
    c.edit(HOMELAB, "ip: 10.0.0.22", "ip: 10.0.0.32");
    c.talix().args(["build", HOMELAB]).assert().success();
    flip_byte(object(&c, &old).join("out/patch"));
    let out = c
        .talix()
        .args(["store", "verify", "--repair", HOMELAB])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&old)
            && err.contains("not rebuilt: patch/w2 is not a step --repair can rebuild"),
        "{err}"
    );
    let out = c
        .talix()
        .args(["store", "gc"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains(&format!("removed {old} patch/w2")),
        "gc removes the damaged garbage"
    );
    c.talix().args(["store", "verify"]).assert().success();
}

#[test]
fn repair_after_up_rebuilds_the_pure_objects_and_names_the_receipts_it_cannot_rebuild() {
    const DEMO: &str = "profiles/demo.yaml";
    let (c, _sim) = Cluster::with_sim(100, |_| {});
    c.talix_fast().args(["up", DEMO]).assert().success();
    c.talix().args(["store", "verify"]).assert().success();
    let render = ref_key(&c, "demo", "render/w1");
    let apply = ref_key(&c, "demo", "apply/w1");
    let bootstrap = ref_key(&c, "demo", "bootstrap");
    flip_byte(object(&c, &render).join("out/config"));
    truncate(object(&c, &apply).join("out/receipt"));
    std::fs::remove_dir_all(object(&c, &bootstrap)).unwrap();

    let out = c
        .talix()
        .args(["store", "verify", "--repair", DEMO])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let (text, err) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(
        text.contains(&format!("rebuilt render/w1 {render}")),
        "{text}"
    );
    assert!(
        !err.lines()
            .any(|l| l.starts_with("error:") && l.contains(&render)),
        "the pure object is repaired: {err}"
    );
    for (step, key) in [("apply/w1", &apply), ("bootstrap", &bootstrap)] {
        assert!(err.contains(key.as_str()), "{step}: {err}");
        assert!(
            err.contains(&format!("cannot be rebuilt: {step} is a receipt")),
            "{step}: {err}"
        );
    }
    assert!(err.contains("2 receipts that cannot be rebuilt"), "{err}");
    // Nothing was sent to the cluster by the repair.
    let sent = |verb: &str| {
        c.calls()
            .iter()
            .filter(|a| a.contains(&verb.to_string()))
            .count()
    };
    assert_eq!(sent("apply-config"), 5, "only up's applies");
    assert_eq!(sent("bootstrap"), 1, "only up's bootstrap");

    // verify agrees; after `store prune` (the damaged receipt goes) `plan` shows the rebuilt
    // configs cached, and the next `up` records the receipts again without sending anything
    // twice: then verify is clean.
    c.talix()
        .args(["store", "verify", DEMO])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(&apply).and(predicate::str::contains(&render).not()));
    c.talix().args(["store", "prune", DEMO]).assert().success();
    assert_build_steps_cached(&c, DEMO);
    c.talix()
        .args(["store", "verify", DEMO])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("(apply/w1) is missing"));
    c.talix_fast().args(["up", DEMO]).assert().success();
    c.talix().args(["store", "verify", DEMO]).assert().success();
    assert_eq!(sent("apply-config"), 5, "nothing applied twice");
    assert_eq!(sent("bootstrap"), 1, "etcd bootstrapped once");
}
