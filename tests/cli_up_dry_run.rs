//! `talix up --dry-run` against the simulator: it prints the commands `up` then really runs (the
//! same argv, compared with the simulator's call log), in order, `<discovered>` for maintenance
//! addresses and no secret; it sends nothing to a node and writes nothing (store, lock file,
//! config dir, scratch hashed before and after); on a converged cluster it has nothing to run.
//! And a no-op `up` rewrites nothing (issue 10: refs were rewritten and fsynced every run).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use common::Cluster;

const P: &str = "profiles/demo.yaml";

type Snapshot = BTreeMap<String, (String, u64, i64, i64)>;

/// Every file and directory below the workspace with its content hash, inode and mtime; but
/// the root (where the tests' call log comes and goes), that log, the simulator's files and
/// kubectl's cache in $HOME.
fn snapshot(c: &Cluster) -> Snapshot {
    walkdir::WalkDir::new(c.root())
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let rel = e
                .path()
                .strip_prefix(c.root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            !rel.starts_with("talosctl.log")
                && !rel.starts_with("sim-")
                && !rel.starts_with(".kube")
        })
        .map(|e| {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let content = if meta.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                blake3::hash(&bytes).to_hex().to_string()
            } else {
                "dir".into()
            };
            let rel = e
                .path()
                .strip_prefix(c.root())
                .unwrap()
                .display()
                .to_string();
            (rel, (content, meta.ino(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

/// What differs between two snapshots (changed, created or removed), by path.
fn changed(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
        .collect();
    out.sort();
    out
}

fn dry_run(c: &Cluster, json: bool) -> String {
    let mut cmd = c.talix_fast();
    cmd.args(["up", "--dry-run"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg(P).assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

/// talosctl calls that reach a node (not `version --client`, not the local config generators).
fn node_calls(c: &Cluster) -> Vec<Vec<String>> {
    c.calls()
        .into_iter()
        .filter(|a| {
            !a.starts_with(&["version".to_string(), "--client".to_string()])
                && !matches!(a[0].as_str(), "gen" | "machineconfig")
        })
        .collect()
}

/// The dry run's talosctl commands of `--json` output that change nodes or the cluster, as
/// argv vectors.
fn dry_commands(json: &str, effect: &str) -> Vec<(String, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("--dry-run --json is JSON");
    let mut out = Vec::new();
    for step in v["steps"].as_array().unwrap() {
        for cmd in step["commands"].as_array().unwrap() {
            if cmd["effect"] == effect && cmd["program"] == "talosctl" {
                out.push((
                    step["id"].as_str().unwrap().to_string(),
                    cmd["argv"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string())
                        .collect(),
                ));
            }
        }
    }
    out
}

/// `/dev/fd/N` and `<pipe...>` as one token, so the real argv and the dry run's compare.
fn unpiped(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            if a.starts_with("/dev/fd/") || a.starts_with("<pipe") {
                "<pipe>".to_string()
            } else {
                a.clone()
            }
        })
        .collect()
}

#[test]
fn a_dry_run_of_a_new_cluster_lists_applies_then_bootstrap_and_changes_nothing() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    let had_store = c.root().join("store").exists();
    let before = snapshot(&c);
    let text = dry_run(&c, false);
    let json = dry_run(&c, true);
    let touched = changed(&before, &snapshot(&c));
    assert!(
        touched.is_empty(),
        "the dry run wrote, moved or left: {touched:?}"
    );
    assert_eq!(
        c.root().join("store").exists(),
        had_store,
        "a store was created"
    );
    let reached = node_calls(&c);
    assert!(
        reached.is_empty(),
        "talosctl calls reached a node: {reached:?}"
    );

    // In order: the five applies at discovered maintenance addresses, then one bootstrap on
    // cp1, health.
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} missing in:\n{text}"))
    };
    let applies: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("talosctl apply-config"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(applies.len(), 5, "{text}");
    for (i, node) in applies.iter().zip(["cp1", "cp2", "cp3", "w1", "w2"]) {
        assert!(
            lines[..*i]
                .iter()
                .rev()
                .any(|l| l.starts_with(&format!("apply/{node} "))),
            "{text}"
        );
        assert!(
            lines[*i].contains("-n '<discovered>' --insecure")
                && lines[*i].contains(&format!("'<pipe:render/{node}>'")),
            "{}",
            lines[*i]
        );
    }
    let bootstraps: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("talosctl ") && l.ends_with(" bootstrap"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bootstraps.len(), 1, "one bootstrap:\n{text}");
    let bootstrap = bootstraps[0];
    assert!(applies.iter().all(|i| *i < bootstrap), "{text}");
    assert!(bootstrap < at(" health --wait-timeout"), "{text}");
    // The kubeconfig is derived from the secrets bundle (issue 9), built with the configs:
    // before any node is touched, with no command.
    assert!(
        at("kubeconfig  (new)") < applies[0]
            && lines[at("kubeconfig  (new)") + 1].contains("computed by talix, no command"),
        "{text}"
    );
    assert!(
        !text.contains("talosctl kubeconfig") && !text.contains(" kubeconfig -"),
        "{text}"
    );
    assert!(
        text.contains("discover  (new)") && text.contains("<discovered>"),
        "{text}"
    );
    assert!(text.contains("talosctl gen config demo"), "{text}");

    // No secret of the bundle in either form.
    let bundle = c
        .talix()
        .args(["secrets", "show", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let needles = common::secret_needles(&String::from_utf8(bundle).unwrap());
    assert!(needles.len() >= 10);
    for out in [&text, &json] {
        for n in &needles {
            assert!(
                !out.contains(n.as_str()),
                "a secret ({}...) in the dry run",
                &n[..8]
            );
        }
    }

    // Then `up` runs exactly the applies and the bootstrap the dry run printed, in that order
    // (the upgrades and upgrade-k8s it printed carry their condition: the machines already
    // run the profile's Talos and Kubernetes, so they do not run).
    let all_changes = dry_commands(&json, "change");
    let printed: Vec<_> = all_changes
        .iter()
        .filter(|(_, a)| a[0] == "apply-config" || a.last().unwrap() == "bootstrap")
        .cloned()
        .collect();
    assert_eq!(printed.len(), 6, "{all_changes:?}");
    assert!(
        text.lines()
            .filter(|l| l.contains(" upgrade --image ") || l.contains(" upgrade-k8s --to "))
            .all(|l| l.contains("    # if ")),
        "{text}"
    );
    c.clear_calls();
    c.talix_fast().args(["up", P]).assert().success();
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    let ran: Vec<Vec<String>> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"apply-config".to_string()) || a.contains(&"bootstrap".to_string()))
        .collect();
    assert_eq!(ran.len(), printed.len(), "{ran:?}\n{printed:?}");
    for ((step, want), got) in printed.iter().zip(&ran) {
        let want = unpiped(want);
        let got = unpiped(got);
        if let Some(i) = want.iter().position(|a| a == "<discovered>") {
            // The address discovery found: the maintenance (DHCP) address of that machine.
            assert!(
                got[i].parse::<std::net::IpAddr>().is_ok(),
                "{step}: {got:?}"
            );
            let mut got = got.clone();
            got[i] = "<discovered>".into();
            assert_eq!(got, want, "{step}");
        } else {
            assert_eq!(got, want, "{step}");
        }
    }
    assert!(lock.contains("bootstrap:"), "{lock}");
}

#[test]
fn a_dry_run_of_a_converged_cluster_has_nothing_to_run_and_a_version_bump_shows_the_upgrades() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    c.talix_fast().args(["up", P]).assert().success();
    c.clear_calls();
    let before = snapshot(&c);
    let text = dry_run(&c, false);
    assert!(text.contains("demo: nothing to run;"), "{text}");
    assert!(
        !text.contains("talosctl") && !text.contains("kubectl"),
        "{text}"
    );
    let json = dry_run(&c, true);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 0, "{json}");
    assert!(
        c.calls()
            .iter()
            .all(|a| a.starts_with(&["version".to_string(), "--client".to_string()])),
        "{:?}",
        c.calls()
    );
    let touched = changed(&before, &snapshot(&c));
    assert!(
        touched.is_empty(),
        "the dry run wrote, moved or left: {touched:?}"
    );

    // A Talos bump: every config is re-rendered and re-applied through the talosconfig at the
    // recorded address, and each node upgraded (if it runs another version); nothing changes.
    c.edit(P, "version: v1.11.5", "version: v1.11.6");
    let before = snapshot(&c);
    let json = dry_run(&c, true);
    let touched = changed(&before, &snapshot(&c));
    assert!(
        touched.is_empty(),
        "the dry run wrote, moved or left: {touched:?}"
    );
    assert!(node_calls(&c).is_empty(), "{:?}", node_calls(&c));
    let printed = dry_commands(&json, "change");
    let applies: Vec<_> = printed
        .iter()
        .filter(|(_, a)| a[0] == "apply-config")
        .collect();
    let upgrades: Vec<_> = printed
        .iter()
        .filter(|(_, a)| a.contains(&"upgrade".to_string()))
        .collect();
    assert_eq!(applies.len(), 5, "{printed:?}");
    assert_eq!(upgrades.len(), 5, "{printed:?}");
    assert!(
        applies
            .iter()
            .all(|(_, a)| a.contains(&"--talosconfig".to_string())
                && !a.contains(&"--insecure".to_string())),
        "{applies:?}"
    );
    assert!(
        !printed
            .iter()
            .any(|(_, a)| a.contains(&"bootstrap".to_string())),
        "bootstrapped once, ever: {printed:?}"
    );

    // And `up` runs those applies and upgrades with the same arguments.
    c.clear_calls();
    c.talix_fast().args(["up", P]).assert().success();
    let ran: Vec<Vec<String>> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"apply-config".to_string()) || a.contains(&"upgrade".to_string()))
        .map(|a| unpiped(&a))
        .collect();
    let want: Vec<Vec<String>> = applies
        .iter()
        .chain(upgrades.iter())
        .map(|(_, a)| unpiped(a))
        .collect();
    let mut ran_sorted = ran.clone();
    ran_sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(ran_sorted, want_sorted);
}

#[test]
fn a_no_op_up_rewrites_no_file_and_stores_no_object() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    c.talix_fast().args(["up", P]).assert().success();
    // The first re-run may settle what the first run left (nothing should be left, but the
    // assertion is about steady state).
    c.talix_fast().args(["up", P]).assert().success();
    let before = snapshot(&c);
    assert!(before.keys().any(|k| k.starts_with("store/v1/refs/demo/")));
    assert!(before.contains_key("profiles/demo.lock"));
    assert!(before.contains_key("clusters/demo/kubeconfig"));
    c.clear_calls();
    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("  ran "), "{out}");
    let touched = changed(&before, &snapshot(&c));
    assert!(
        touched.is_empty(),
        "a no-op up rewrote, created or removed (content, inode or mtime): {touched:?}"
    );
    assert!(node_calls(&c).is_empty(), "{:?}", node_calls(&c));
}
