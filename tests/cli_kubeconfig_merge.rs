//! Runbook step 11 as `talix up` does it: the cluster's context merged into the operator's
//! kubeconfig (`$KUBECONFIG`'s first entry, else `~/.kube/config`), keeping every unrelated
//! cluster, user and context, switching current-context, 0600, not rewritten when nothing
//! changes; `--no-merge-kubeconfig` and `kubeconfig.merge: false` leave the file alone. HOME and
//! KUBECONFIG always point into the test's temporary workspace.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::Cluster;
use serde_json::Value;

const P: &str = "profiles/demo.yaml";
const OPT_OUT: &str =
    "kubeconfig:\n  merge: false  # a rehearsal never touches your ~/.kube/config\n";

const UNRELATED: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://prod.example:6443\n  name: prod\nusers:\n- name: prod-admin\n  user:\n    token: prod-token\ncontexts:\n- context:\n    cluster: prod\n    user: prod-admin\n  name: prod\ncurrent-context: prod\npreferences: {}\nx-team-note: keep me\n";

fn read(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn names(doc: &Value, section: &str) -> Vec<String> {
    doc[section]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// (inode, mtime in ns, bytes): what a rewrite would change.
fn stamp(path: &Path) -> (u64, i64, i64, Vec<u8>) {
    let m = std::fs::metadata(path).unwrap();
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        std::fs::read(path).unwrap(),
    )
}

fn up(c: &Cluster, extra: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = c.talix_fast();
    cmd.arg("up").args(extra).arg(P);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.assert().success().get_output().clone();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn up_merges_the_context_into_home_kube_config_keeping_unrelated_ones_once() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    c.edit(P, OPT_OUT, "");
    // HOME is the workspace (common::Workspace::talix); an operator's existing kubeconfig.
    let target = c.root().join(".kube/config");
    c.write(".kube/config", UNRELATED);
    let stderr = up(&c, &[], &[]);
    assert!(
        stderr.contains(&format!(
            "kubeconfig: merged context admin@demo into {}; current context is now admin@demo",
            target.display()
        )),
        "{stderr}"
    );
    let doc = read(&target);
    assert_eq!(names(&doc, "clusters"), ["prod", "demo"]);
    assert_eq!(names(&doc, "users"), ["prod-admin", "admin@demo"]);
    assert_eq!(names(&doc, "contexts"), ["prod", "admin@demo"]);
    assert_eq!(doc["current-context"], "admin@demo");
    assert_eq!(doc["x-team-note"], "keep me");
    assert_eq!(doc["users"][0]["user"]["token"], "prod-token");
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The cluster entry is the one in the config dir's copy.
    let copy = read(&c.root().join("clusters/demo/kubeconfig"));
    assert_eq!(doc["clusters"][1], copy["clusters"][0]);
    // The real kubectl reads the merged file: both contexts, the cluster's current, its nodes.
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .env("KUBECONFIG", &target)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let contexts = kubectl(&["config", "get-contexts", "-o", "name"]);
    assert_eq!(contexts.lines().collect::<Vec<_>>(), ["admin@demo", "prod"]);
    assert_eq!(kubectl(&["config", "current-context"]).trim(), "admin@demo");
    assert_eq!(kubectl(&["get", "nodes", "-o", "name"]).lines().count(), 5);

    // Again: nothing changed, so the file is not rewritten (same inode, mtime, bytes).
    let before = stamp(&target);
    let stderr = up(&c, &[], &[]);
    assert!(stderr.contains("unchanged"), "{stderr}");
    assert_eq!(stamp(&target), before);

    // The operator switches back to prod; --no-merge-kubeconfig leaves that alone ...
    let text = std::fs::read_to_string(&target).unwrap();
    c.write(
        ".kube/config",
        &text.replace("current-context: admin@demo", "current-context: prod"),
    );
    let before = stamp(&target);
    let stderr = up(&c, &["--no-merge-kubeconfig"], &[]);
    assert!(!stderr.contains("kubeconfig:"), "{stderr}");
    assert_eq!(stamp(&target), before);
    // ... and so does the profile's opt-out.
    c.edit(P, "nodes:\n", &format!("{OPT_OUT}nodes:\n"));
    up(&c, &[], &[]);
    assert_eq!(stamp(&target), before);
    // Without either, the cluster's context is current again.
    c.edit(P, OPT_OUT, "");
    let stderr = up(&c, &[], &[]);
    assert!(
        stderr.contains("current context is now admin@demo"),
        "{stderr}"
    );
    assert_eq!(read(&target)["current-context"], "admin@demo");
}

#[test]
fn kubeconfig_first_entry_is_the_target_and_its_directory_is_created_0700() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    c.edit(P, OPT_OUT, "");
    let first = c.root().join("kube/new/config");
    let second = c.root().join("other-config");
    c.write("other-config", UNRELATED);
    let list = std::env::join_paths([&first, &second]).unwrap();
    let mut cmd = c.talix_fast();
    let out = cmd
        .env("KUBECONFIG", &list)
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&first.display().to_string()), "{stderr}");
    assert_eq!(read(&first)["current-context"], "admin@demo");
    assert_eq!(
        std::fs::metadata(&first).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(first.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(std::fs::read_to_string(&second).unwrap(), UNRELATED);
    // (kubectl keeps its cache in ~/.kube/cache; the config there is not written)
    assert!(
        !c.root().join(".kube/config").exists(),
        "HOME's kubeconfig untouched"
    );

    // A kubeconfig talix cannot parse is left as it is, and says so (the cluster is up).
    std::fs::write(&first, "clusters: [\n  token: do-not-echo\n").unwrap();
    let out = c
        .talix_fast()
        .env("KUBECONFIG", &list)
        .args(["up", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("left untouched") && stderr.contains("--no-merge-kubeconfig"),
        "{stderr}"
    );
    assert!(!stderr.contains("do-not-echo"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&first).unwrap(),
        "clusters: [\n  token: do-not-echo\n"
    );
}
