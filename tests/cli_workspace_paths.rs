//! Hostile profile paths: a profile (often someone else's pull request) must not make talix
//! overwrite the profile, its lock file or its secrets file, nor read or write outside the
//! workspace. Each case is refused by `validate` (exit 2, naming the field) and by the command
//! that would have written, before anything is written.

mod common;

use std::collections::BTreeMap;

use common::Cluster;

const P: &str = "profiles/single.yaml";

/// Every file of the workspace with its content (to prove nothing was written).
fn snapshot(c: &Cluster) -> BTreeMap<String, Vec<u8>> {
    c.files()
        .into_iter()
        .filter(|f| f != "talosctl.log")
        .map(|f| {
            let bytes = std::fs::read(c.root().join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

fn refused(c: &Cluster, args: &[&str], needles: &[&str]) {
    let before = snapshot(c);
    let out = c.talix().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: {n:?} not in:\n{stderr}");
    }
    assert_eq!(snapshot(c), before, "{args:?} wrote something");
}

fn talos_setting(c: &Cluster, line: &str) {
    c.edit(P, "talos:\n", &format!("talos:\n  {line}\n"));
}

#[test]
fn a_node_patch_cannot_overwrite_the_profile() {
    let c = Cluster::new();
    talos_setting(&c, "config_dir: profiles");
    talos_setting(&c, "patches_dir: .");
    c.edit(P, "name: solo", "name: single");
    for cmd in ["validate", "build"] {
        refused(
            &c,
            &[cmd, P],
            &["talos.patches_dir", "single.yaml", "is the profile"],
        );
    }
}

#[test]
fn the_secrets_file_cannot_be_the_profile_or_the_lock_file() {
    let c = Cluster::new();
    talos_setting(&c, "secrets_file: single.yaml");
    refused(
        &c,
        &["validate", P],
        &["talos.secrets_file", "is the profile"],
    );
    refused(
        &c,
        &["secrets", "init", "--force", P],
        &["talos.secrets_file", "is the profile"],
    );
    c.edit(P, "secrets_file: single.yaml", "secrets_file: single.lock");
    refused(
        &c,
        &["validate", P],
        &["talos.secrets_file", "is the lock file"],
    );
}

#[test]
fn paths_that_escape_the_workspace_are_refused_unless_the_command_line_allows_it() {
    let outside = tempfile::tempdir().unwrap();
    let outside_dir = outside.path().join("cfg");
    let cases = [
        ("config_dir: ../escaped".to_string(), "talos.config_dir"),
        (
            format!("config_dir: {}", outside_dir.display()),
            "talos.config_dir",
        ),
        (
            "secrets_file: ../../s.age".to_string(),
            "talos.secrets_file",
        ),
        (
            "secrets_file: /etc/hostname".to_string(),
            "talos.secrets_file",
        ),
    ];
    for (setting, field) in cases {
        let c = Cluster::new();
        talos_setting(&c, &setting);
        refused(&c, &["validate", P], &[field, "outside the workspace"]);
        refused(&c, &["build", P], &[field, "outside the workspace"]);
        c.talix()
            .args(["--allow-outside-workspace", "validate", P])
            .assert()
            .success();
    }
    // A patch file the profile reads from outside.
    let c = Cluster::new();
    c.edit(
        P,
        "controlplane: [patches/allow-scheduling.yaml]",
        "controlplane: [../../../../../../etc/hostname]",
    );
    refused(
        &c,
        &["validate", P],
        &["patches.controlplane[0]", "outside the workspace"],
    );
    assert!(!outside_dir.exists());
}

#[test]
fn a_symlink_out_of_the_workspace_is_an_escape() {
    let c = Cluster::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), c.root().join("link")).unwrap();
    talos_setting(&c, "config_dir: link/single");
    refused(
        &c,
        &["build", P],
        &["talos.config_dir", "through a symlink"],
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn export_into_the_profile_folder_cannot_overwrite_a_profile_file() {
    let c = Cluster::new();
    c.talix().args(["build", P]).assert().success();
    // A node named like the profile, exported into profiles/: `single.yaml` would be replaced.
    c.edit(P, "name: solo", "name: single");
    c.talix().args(["build", P]).assert().success();
    refused(
        &c,
        &["export", P, "--out", "profiles"],
        &["refusing to write", "is the profile"],
    );
}
