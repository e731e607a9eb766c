//! Tool versions (part of every key) are remembered between runs per binary identity
//! (`~/.cache/talix/tool-versions-v1`, src/exec.rs `ToolVersions`): the same binary is not asked
//! again, a replaced or touched one is; a symlink to a dispatcher or a script is asked every
//! time; `plan` reads what was remembered but writes nothing.

mod common;

use std::path::{Path, PathBuf};

use common::Cluster;

const P: &str = "profiles/homelab.yaml";

fn cache_dir(c: &Cluster) -> PathBuf {
    c.root().join(".cache/talix/tool-versions-v1")
}

fn remembered(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache_dir(c))
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `talix ARGS` with `talosctl` as the talosctl binary.
fn run(c: &Cluster, talosctl: &Path, args: &[&str]) {
    c.talix()
        .env("TALIX_TALOSCTL", talosctl)
        .args(args)
        .assert()
        .success();
}

fn probes(c: &Cluster) -> usize {
    c.count(&["version", "--client"])
}

/// A real copy of the simulator (an ELF executable named `talosctl`) at `dir/talosctl`.
fn copy_of_the_simulator(c: &Cluster, dir: &str) -> PathBuf {
    let path = c.root().join(dir).join("talosctl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_talix"), &path).unwrap();
    path
}

#[test]
fn the_same_binary_is_asked_its_version_once_and_a_replaced_one_again() {
    let c = Cluster::new();
    let talosctl = copy_of_the_simulator(&c, "tools");
    // plan reads what is remembered but writes nothing.
    run(&c, &talosctl, &["plan", P]);
    assert_eq!(probes(&c), 1);
    assert!(!cache_dir(&c).exists(), "plan wrote {:?}", remembered(&c));
    run(&c, &talosctl, &["build", P]);
    assert_eq!(probes(&c), 2);
    let versions = remembered(&c);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(
        versions[0].starts_with('v') && versions[0].ends_with('\n'),
        "{versions:?}"
    );
    // Asked no more: build and plan use the remembered version.
    run(&c, &talosctl, &["build", P]);
    run(&c, &talosctl, &["plan", P]);
    assert_eq!(probes(&c), 2, "{:?}", c.calls());
    // The binary replaced (a new file in its place, as a package upgrade does): asked again.
    std::fs::remove_file(&talosctl).unwrap();
    copy_of_the_simulator(&c, "tools");
    run(&c, &talosctl, &["build", P]);
    assert_eq!(probes(&c), 3);
    // Rewritten in place (same inode, new content and mtime): asked again.
    let bytes = std::fs::read(&talosctl).unwrap();
    std::fs::write(&talosctl, &bytes).unwrap();
    run(&c, &talosctl, &["build", P]);
    assert_eq!(probes(&c), 4);
    // Another binary of the same name elsewhere is a different identity.
    let other = copy_of_the_simulator(&c, "other");
    run(&c, &other, &["build", P]);
    assert_eq!(probes(&c), 5);
    run(&c, &other, &["build", P]);
    assert_eq!(probes(&c), 5);
}

#[test]
fn a_link_to_a_differently_named_binary_or_a_script_is_asked_every_time() {
    let c = Cluster::new();
    // bin/talosctl is a symlink to the `talix` binary: like a mise shim (a link to `mise`), a
    // binary that answers for whatever it dispatches to.
    let link = c.root().join("bin/talosctl");
    let script = c.root().join("wrap/talosctl");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", link.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (i, talosctl) in [&link, &link, &script, &script].into_iter().enumerate() {
        run(&c, talosctl, &["build", P]);
        assert_eq!(probes(&c), i + 1, "{}", talosctl.display());
    }
    assert!(remembered(&c).is_empty(), "{:?}", remembered(&c));
}

#[test]
fn a_damaged_remembered_version_is_asked_again_and_replaced() {
    let c = Cluster::new();
    let talosctl = copy_of_the_simulator(&c, "tools");
    run(&c, &talosctl, &["build", P]);
    let entry = std::fs::read_dir(cache_dir(&c))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read_to_string(&entry).unwrap();
    for bad in ["", "v1.2.3", "two words\n", "v1.2.3\nmore\n"] {
        std::fs::write(&entry, bad).unwrap();
        let before = probes(&c);
        run(&c, &talosctl, &["build", P]);
        assert_eq!(probes(&c), before + 1, "{bad:?} was believed");
        assert_eq!(std::fs::read_to_string(&entry).unwrap(), good);
    }
}
