//! Reliability suite, concurrency part: 2 and 4 concurrent `up`, `build`, `store prune` and
//! `store verify` on one profile and one store. Afterwards the lock file keeps every record
//! (the bootstrap and one applied config per node), etcd was bootstrapped exactly once and
//! `store verify` finds nothing wrong.

mod common;

use common::Cluster;

const P: &str = "profiles/demo.yaml";

fn spawn(c: &Cluster, args: &[&str]) -> std::process::Child {
    // The environment of `Cluster::talix_fast`, on a std Command so the runs can overlap.
    let root = c.root();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_talix"));
    cmd.current_dir(root)
        .env_remove("TALIX_STORE")
        .env_remove("TALIX_KUBECTL")
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", root)
        .env("TALIX_TALOSCTL", root.join("bin/talosctl"))
        .env("TALIX_AGE_KEY_FILE", root.join("key.txt"))
        .env("TALOSCTL_SIM_LOG", root.join("talosctl.log"))
        .env("TALIX_POLL_MS", "50")
        .env("TALIX_READY_TIMEOUT_S", "60")
        .env("TALIX_BOOTSTRAP_TIMEOUT_S", "60")
        .env("TALIX_HEALTH_TIMEOUT_S", "60");
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.spawn().unwrap()
}

fn wait_all(children: Vec<(String, std::process::Child)>) {
    for (what, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn check_records(c: &Cluster) {
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert!(lock.contains("bootstrap:\n  node: cp1\n"), "{lock}");
    assert_eq!(lock.matches("applied_config:").count(), 5, "{lock}");
    let bootstraps = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"bootstrap".to_string()))
        .count();
    assert_eq!(bootstraps, 1, "etcd bootstrapped exactly once");
    let out = c.talix().args(["store", "verify", P]).output().unwrap();
    assert!(
        out.status.success(),
        "store verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let leftovers: Vec<_> = c
        .files()
        .into_iter()
        .filter(|f| f.starts_with("profiles/") && f.contains("tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files in profiles/: {leftovers:?}"
    );
}

fn concurrent_up(n: usize) {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    let mut children = Vec::new();
    for i in 0..n {
        children.push((format!("up #{i}"), spawn(&c, &["up", P])));
        if i % 2 == 1 {
            children.push((
                format!("store verify #{i}"),
                spawn(&c, &["store", "verify", P]),
            ));
            children.push((
                format!("store prune #{i}"),
                spawn(&c, &["store", "prune", P]),
            ));
        }
    }
    wait_all(children);
    check_records(&c);
    let applies = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"apply-config".to_string()))
        .count();
    assert_eq!(
        applies, 5,
        "each node applied once: a run that waited re-planned"
    );

    // Then builds, prunes and verifies race each other on the same store: no lost record, no
    // corrupt object, and a final `up` sends nothing to any node.
    let mut children = Vec::new();
    for i in 0..n {
        children.push((format!("build #{i}"), spawn(&c, &["build", P])));
        children.push((
            format!("store prune #{i}"),
            spawn(&c, &["store", "prune", P]),
        ));
        children.push((
            format!("store verify #{i}"),
            spawn(&c, &["store", "verify", P]),
        ));
    }
    wait_all(children);
    check_records(&c);
    c.clear_calls();
    c.talix_fast().args(["up", P]).assert().success();
    let applies = c
        .calls()
        .iter()
        .filter(|a| a.contains(&"apply-config".to_string()) || a.contains(&"bootstrap".to_string()))
        .count();
    assert_eq!(applies, 0, "nothing re-applied or re-bootstrapped");
    println!(
        "concurrency n={n}: {n} ups + {n} builds/prunes/verifies all exit 0; bootstraps 1; \
         applies 5 (none twice); lost lock records 0; store verify problems 0; temp files in profiles/ 0"
    );
}

#[test]
fn two_concurrent_ups_keep_every_lock_record() {
    concurrent_up(2);
}

#[test]
fn four_concurrent_ups_keep_every_lock_record() {
    concurrent_up(4);
}

/// Defect 12: a run killed while writing the lock file leaves no temp file in `profiles/` (a
/// committed folder); its scratch is swept by the next run (and by `store prune`), as is what
/// an older talix left beside the lock file.
#[test]
fn a_killed_write_leaves_nothing_in_profiles_and_the_next_run_sweeps_its_scratch() {
    let c = Cluster::new();
    let p = "profiles/homelab.yaml";
    let status = c
        .talix()
        .env("TALIX_TEST_CRASH_AT", "workspace-write:homelab.lock")
        .args(["build", p])
        .output()
        .unwrap()
        .status;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed at the kill point");
    let in_profiles = |c: &Cluster| -> Vec<String> {
        c.files()
            .into_iter()
            .filter(|f| f.starts_with("profiles/") && f.contains("tmp"))
            .collect()
    };
    assert!(in_profiles(&c).is_empty(), "{:?}", in_profiles(&c));
    let scratch = |c: &Cluster| -> Vec<String> {
        c.files()
            .into_iter()
            .filter(|f| f.starts_with(".talix/tmp/"))
            .collect()
    };
    assert_eq!(
        scratch(&c).len(),
        1,
        "the killed run's scratch: {:?}",
        c.files()
    );
    c.write("profiles/.talix-tmp-LEGACY", "left by an older talix");
    c.talix().args(["build", p]).assert().success();
    assert!(scratch(&c).is_empty(), "{:?}", scratch(&c));
    assert!(in_profiles(&c).is_empty(), "{:?}", in_profiles(&c));
    // `store prune` with the profile sweeps it too.
    let _ = c
        .talix()
        .env("TALIX_TEST_CRASH_AT", "workspace-write:homelab.lock")
        .args(["secrets", "rekey", p])
        .output()
        .unwrap();
    assert_eq!(scratch(&c).len(), 1, "{:?}", c.files());
    c.talix().args(["store", "prune", p]).assert().success();
    assert!(scratch(&c).is_empty(), "{:?}", scratch(&c));
}
