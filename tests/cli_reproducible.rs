//! Reproducible builds: the committed files (profile, patches, lock file, encrypted secrets) plus
//! the age identity give, on an empty store anywhere, the same keys and byte-identical plaintext
//! for every pure step — the talosconfig and kubeconfig included, whose client certificates
//! talix derives itself. And the derived credentials work: the real `kubectl` and the
//! simulator's Talos API accept them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Cluster, Workspace};

const P: &str = "profiles/homelab.yaml";

/// A fresh workspace elsewhere with copies of the committed files of `origin` only (no store,
/// no `clusters/`, no `.talix/`), the same identity and the same talosctl.
fn clone_committed(origin: &Cluster) -> Workspace {
    let ws = Workspace::empty();
    common::copy_dir(&origin.root().join("profiles"), &ws.root().join("profiles"));
    std::fs::copy(origin.root().join("key.txt"), ws.root().join("key.txt")).unwrap();
    std::fs::create_dir_all(ws.root().join("bin")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talix"), ws.root().join("bin/talosctl"))
        .unwrap();
    ws
}

/// `talix` in `ws` with the simulator as talosctl, the workspace key, and `store`.
fn talix_in(ws: &Workspace, store: &Path) -> assert_cmd::Command {
    let mut cmd = ws.talix();
    cmd.env("TALIX_TALOSCTL", ws.root().join("bin/talosctl"))
        .env("TALIX_AGE_KEY_FILE", ws.root().join("key.txt"))
        .env("TALIX_STORE", store);
    cmd
}

/// `plan --json` keys by step id (null for steps that have none yet).
fn keys(cmd: &mut assert_cmd::Command) -> BTreeMap<String, serde_json::Value> {
    let out = cmd
        .args(["plan", "--json", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["key"].clone()))
        .collect()
}

/// Every exported file by name.
fn exported(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn yaml(bytes: &[u8]) -> serde_json::Value {
    serde_saphyr::from_slice(bytes).unwrap()
}

fn pem_der(b64_pem: &str) -> Vec<u8> {
    let pem = String::from_utf8(common::base64_decode(b64_pem)).unwrap();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    common::base64_decode(&body)
}

#[test]
fn two_fresh_workspaces_from_the_committed_files_build_identical_stores() {
    // The operator's machine: secrets init and a first build pin the lock file.
    let origin = Cluster::new();
    origin.talix().args(["build", P]).assert().success();
    let lock = std::fs::read(origin.root().join("profiles/homelab.lock")).unwrap();

    // Two other machines: other temp dirs, stores at other paths, later runs.
    let (x, y) = (clone_committed(&origin), clone_committed(&origin));
    let stores = tempfile::tempdir().unwrap();
    let (sx, sy) = (stores.path().join("x/store"), stores.path().join("y-store"));
    let mut built = Vec::new();
    for (ws, store) in [(&x, &sx), (&y, &sy)] {
        let out = talix_in(ws, store)
            .args(["build", P])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("built    kubeconfig"), "{text}");
        assert!(text.contains("built    talosconfig"), "{text}");
        let out_dir = ws.root().join("exported");
        talix_in(ws, store)
            .args(["export", P, "--out"])
            .arg(&out_dir)
            .assert()
            .success();
        built.push((keys(&mut talix_in(ws, store)), exported(&out_dir)));
        assert_eq!(
            std::fs::read(ws.root().join("profiles/homelab.lock")).unwrap(),
            lock,
            "a rebuild from the committed files leaves the lock file as committed"
        );
    }
    // And the origin's own store.
    let origin_out = origin.root().join("exported");
    origin
        .talix()
        .args(["export", P, "--out"])
        .arg(&origin_out)
        .assert()
        .success();
    let origin_keys = keys(&mut origin.talix());

    let (kx, fx) = &built[0];
    let (ky, fy) = &built[1];
    assert_eq!(kx, ky, "identical keys on both machines");
    assert_eq!(kx, &origin_keys, "identical keys to the origin's");
    for step in [
        "secrets",
        "base-config",
        "talosconfig",
        "kubeconfig",
        "patch/cp1",
        "render/w2",
    ] {
        assert!(kx[step].is_string(), "{step} has a key: {kx:?}");
    }
    let names: Vec<&String> = fx.keys().collect();
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
    for (name, bytes) in fx {
        assert!(
            fy[name] == *bytes,
            "{name} differs between the two machines"
        );
        assert!(
            exported(&origin_out)[name] == *bytes,
            "{name} differs from the origin's"
        );
    }
    // The store objects' plaintext is the same, but ciphertext is not (age is randomised):
    // encryption happens after the key is fixed, so the keys above still agree.

    // What the derived files say.
    let tc = yaml(&fx["talosconfig"]);
    let ctx = &tc["contexts"]["homelab"];
    assert_eq!(tc["context"], "homelab");
    assert_eq!(
        ctx["endpoints"],
        serde_json::json!(["10.0.0.11", "10.0.0.12", "10.0.0.13"])
    );
    assert_eq!(ctx["nodes"].as_array().unwrap().len(), 5);
    let kc = yaml(&fx["kubeconfig"]);
    assert_eq!(kc["current-context"], "admin@homelab");
    assert_eq!(kc["clusters"][0]["name"], "homelab");
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://10.0.0.10:6443"
    );
    assert_eq!(kc["contexts"][0]["context"]["user"], "admin@homelab");

    // Validity starts at the CA's own NotBefore: nothing reads the clock.
    let ca = x509_parser::parse_x509_certificate(&pem_der(ctx["ca"].as_str().unwrap()))
        .unwrap()
        .1
        .validity()
        .not_before
        .timestamp();
    let crt_der = pem_der(ctx["crt"].as_str().unwrap());
    let (_, crt) = x509_parser::parse_x509_certificate(&crt_der).unwrap();
    assert_eq!(crt.validity().not_before.timestamp(), ca);
    assert_eq!(
        crt.validity().not_after.timestamp(),
        ca + 87_600 * 3600,
        "default secrets.crt_ttl 87600h"
    );
    let orgs: Vec<&str> = crt
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(orgs, ["os:admin"]);
    let kube_der = pem_der(
        kc["users"][0]["user"]["client-certificate-data"]
            .as_str()
            .unwrap(),
    );
    let (_, kube) = x509_parser::parse_x509_certificate(&kube_der).unwrap();
    assert_eq!(kube.subject().to_string(), "O=system:masters, CN=admin");

    // Nothing of this went through talosctl: no `gen config -t talosconfig`, no `kubeconfig`.
    let calls = std::fs::read_to_string(origin.root().join("talosctl.log")).unwrap_or_default();
    assert!(!calls.contains("\"talosconfig\",\"-o\""), "{calls}");
    assert!(!calls.contains("\"kubeconfig\""), "{calls}");
}

#[test]
fn crt_ttl_is_a_profile_setting_and_bad_values_name_file_line_and_field() {
    let c = Cluster::new();
    c.edit(P, "secrets:\n", "secrets:\n  crt_ttl: 8760h\n");
    c.talix().args(["build", P]).assert().success();
    let out = c.root().join("exported");
    c.talix()
        .args(["export", P, "--out"])
        .arg(&out)
        .assert()
        .success();
    let tc = yaml(&std::fs::read(out.join("talosconfig")).unwrap());
    let ctx = &tc["contexts"]["homelab"];
    let ca_der = pem_der(ctx["ca"].as_str().unwrap());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let crt_der = pem_der(ctx["crt"].as_str().unwrap());
    let (_, crt) = x509_parser::parse_x509_certificate(&crt_der).unwrap();
    assert_eq!(
        crt.validity().not_after.timestamp(),
        ca.validity().not_before.timestamp() + 8760 * 3600
    );

    let before = std::fs::read(c.root().join("profiles/homelab.lock")).unwrap();
    c.edit(P, "crt_ttl: 8760h", "crt_ttl: 10 days");
    let assert = c.talix().args(["build", P]).assert().code(2);
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let line = std::fs::read_to_string(c.root().join(P))
        .unwrap()
        .lines()
        .position(|l| l.contains("crt_ttl"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("homelab.yaml:{line}")) && err.contains("secrets.crt_ttl"),
        "{err}"
    );
    assert!(err.contains("\"10 days\" is not a duration"), "{err}");
    assert_eq!(
        std::fs::read(c.root().join("profiles/homelab.lock")).unwrap(),
        before
    );
}

#[test]
fn derived_credentials_work_against_the_simulator_and_the_real_kubectl() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    let demo = "profiles/demo.yaml";
    // Right after build, before any machine is configured: both files exist.
    c.talix().args(["build", demo]).assert().success();
    let early = c.root().join("early");
    c.talix()
        .args(["export", demo, "--out"])
        .arg(&early)
        .assert()
        .success();
    let built = exported(&early);

    c.talix_fast().args(["up", demo]).assert().success();
    assert_eq!(
        c.count(&["kubeconfig"]),
        0,
        "up asked talosctl for a kubeconfig"
    );
    // `up` hands the operator the very kubeconfig `build` derived, byte for byte.
    let handed = std::fs::read(c.root().join("clusters/demo/kubeconfig")).unwrap();
    assert!(handed == built["kubeconfig"], "up's kubeconfig differs");
    assert!(
        std::fs::read(c.root().join("clusters/demo/talosconfig")).unwrap() == built["talosconfig"]
    );

    // The real kubectl, with the file exported before the cluster existed.
    let kubeconfig: PathBuf = early.join("kubeconfig");
    let out = std::process::Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "nodes", "-o", "name", "--request-timeout", "30s"])
        .env("HOME", c.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node/cp1\nnode/cp2\nnode/cp3\nnode/w1\nnode/w2\n"
    );

    // The simulator's Talos API (mutual TLS against the OS CA, role os:admin).
    let tc = yaml(&built["talosconfig"]);
    let cp1 = tc["contexts"]["demo"]["endpoints"][0]
        .as_str()
        .unwrap()
        .to_string();
    let out = std::process::Command::new(c.root().join("bin/talosctl"))
        .arg("--talosconfig")
        .arg(early.join("talosconfig"))
        .args(["-n", &cp1, "version"])
        .env("HOME", c.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Server:"));
}
