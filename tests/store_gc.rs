//! `talix store ls | gc | pin | unpin` with `talix build` on the simulator's talosctl: gc keeps
//! exactly what the roots (live profiles' latest realisations, pins, lock files) reach, checked
//! against a reachability computed here from the store's own files; a removed profile drops its
//! root; a dry run deletes nothing; a second gc frees nothing; a held store lock makes gc wait
//! (or refuse with --no-wait) without touching anything.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::Cluster;

const HOMELAB: &str = "profiles/homelab.yaml";
const SINGLE: &str = "profiles/single.yaml";

fn build(c: &Cluster, p: &str) {
    c.talix().args(["build", p]).assert().success();
}

fn run_ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.talix().args(args).assert().success().get_output().clone();
    String::from_utf8(out.stdout).unwrap()
}

fn objects_dir(c: &Cluster) -> std::path::PathBuf {
    c.root().join("store/v1/objects")
}

/// Keys of the objects in the store, from its directory.
fn keys(c: &Cluster) -> BTreeSet<String> {
    std::fs::read_dir(objects_dir(c))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every file of the store with its bytes (what "nothing changed" compares).
fn snapshot(c: &Cluster) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(c.root().join("store/v1"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() != "lock")
        .map(|e| {
            (
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The refs of `profile` as the store's files hold them: step file -> key.
fn refs(c: &Cluster, profile: &str) -> BTreeMap<String, String> {
    let dir = c.root().join("store/v1/refs").join(profile);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            (
                e.file_name().to_string_lossy().replace('~', "/"),
                std::fs::read_to_string(e.path())
                    .unwrap()
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// The closure of `roots` computed from the manifests' `deps` (independently of talix's gc).
fn closure(c: &Cluster, roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().collect();
    while let Some(k) = stack.pop() {
        if !seen.insert(k.clone()) {
            continue;
        }
        let path = objects_dir(c).join(&k).join("manifest.json");
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let deps = m["deps"].as_object().cloned().unwrap_or_default();
        let input_deps = m["inputs"]["deps"].as_object().cloned().unwrap_or_default();
        assert_eq!(
            deps.is_empty(),
            input_deps.is_empty(),
            "{k}: the manifest records the object of every dependency"
        );
        stack.extend(deps.values().map(|v| v.as_str().unwrap().to_string()));
    }
    seen
}

/// `talix store ls --json` objects: key -> (step, profile, roots).
fn ls(c: &Cluster) -> BTreeMap<String, (String, String, Vec<String>)> {
    let text = run_ok(c, &["store", "ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert!(o["size"].as_u64().unwrap() > 0, "{o}");
            assert!(o["age_s"].as_i64().is_some(), "{o}");
            assert!(o["secret"].is_boolean() && o["damaged"] == false, "{o}");
            (
                o["key"].as_str().unwrap().to_string(),
                (
                    o["step"].as_str().unwrap().to_string(),
                    o["profile"].as_str().unwrap().to_string(),
                    o["roots"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect(),
                ),
            )
        })
        .collect()
}

/// Keys `talix store gc` printed as removed (or would remove).
fn removed(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("removed ")
                .or_else(|| l.strip_prefix("would remove "))
        })
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn plan_all_build_steps_cached(c: &Cluster, p: &str) {
    let out = c
        .talix()
        .args(["plan", "--json", p])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    for (id, status, _) in common::plan_statuses(&out) {
        let kind = id.split('/').next().unwrap();
        if talix::graph::BUILD_KINDS.contains(&kind) {
            assert_eq!(status, "cached", "{p}: {id} after gc");
        }
    }
}

#[test]
fn gc_with_two_profiles_and_old_realisations_keeps_exactly_what_roots_reach() {
    let c = Cluster::new();
    build(&c, HOMELAB);
    build(&c, SINGLE);
    // Old realisations: each edit leaves the previous patch/render/talosconfig behind.
    c.edit(HOMELAB, "ip: 10.0.0.22", "ip: 10.0.0.32");
    build(&c, HOMELAB);
    c.edit(HOMELAB, "ip: 10.0.0.32", "ip: 10.0.0.42");
    build(&c, HOMELAB);
    c.edit(SINGLE, "ip: 192.168.1.50", "ip: 192.168.1.60");
    build(&c, SINGLE);

    let before = keys(&c);
    let live: BTreeSet<String> = closure(
        &c,
        refs(&c, "homelab")
            .into_values()
            .chain(refs(&c, "single").into_values()),
    );
    let garbage: BTreeSet<String> = before.difference(&live).cloned().collect();
    assert!(
        garbage.len() >= 6,
        "three rebuilds leave old objects: {garbage:?}"
    );

    // `ls` says which root reaches each object; the garbage is reached by none.
    let listed = ls(&c);
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), before);
    for (key, (step, profile, roots)) in &listed {
        if live.contains(key) {
            assert!(
                roots.contains(&format!("profile:{profile}")),
                "{key} {step}: {roots:?}"
            );
        } else {
            assert!(roots.is_empty(), "{key} {step} is garbage: {roots:?}");
        }
    }
    let text = run_ok(&c, &["store", "ls", HOMELAB]);
    assert!(text.lines().next().unwrap().starts_with("KEY"), "{text}");
    assert!(
        !text.contains(" single "),
        "ls PROFILE lists only that profile's objects:\n{text}"
    );

    // A dry run names exactly the garbage and deletes nothing.
    let snap = snapshot(&c);
    let dry = run_ok(&c, &["store", "gc", "--dry-run"]);
    assert_eq!(removed(&dry), garbage, "{dry}");
    assert!(
        dry.contains(&format!("would free {} objects", garbage.len())),
        "{dry}"
    );
    assert_eq!(snapshot(&c), snap, "--dry-run changed the store");

    let out = run_ok(&c, &["store", "gc", HOMELAB]);
    assert_eq!(removed(&out), garbage, "{out}");
    let bytes: u64 = out
        .lines()
        .filter(|l| l.starts_with("removed "))
        .map(|l| {
            l.split_whitespace()
                .rev()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(
        out.contains(&format!("freed {} objects, {bytes} bytes", garbage.len())),
        "{out}"
    );
    assert_eq!(keys(&c), live, "kept: exactly the closure of the roots");
    for (key, (step, _, roots)) in ls(&c) {
        assert!(!roots.is_empty(), "{key} {step} survived without a root");
    }
    plan_all_build_steps_cached(&c, HOMELAB);
    plan_all_build_steps_cached(&c, SINGLE);
    run_ok(&c, &["store", "verify"]);

    // Twice is a no-op.
    let snap = snapshot(&c);
    let again = run_ok(&c, &["store", "gc"]);
    assert!(again.contains("freed 0 objects, 0 bytes"), "{again}");
    assert_eq!(snapshot(&c), snap);
}

#[test]
fn a_removed_profile_drops_its_root_a_pin_keeps_its_closure_and_a_lock_file_its_records() {
    let c = Cluster::new();
    build(&c, HOMELAB);
    build(&c, SINGLE);
    let single_refs = refs(&c, "single");
    let render = single_refs["render/solo"].clone();
    let secrets = single_refs["secrets"].clone();
    let pinned = run_ok(&c, &["store", "pin", SINGLE, "render/solo"]);
    assert!(
        pinned.contains(&format!("pinned render/solo {render}")),
        "{pinned}"
    );
    // A step the store has no realisation of: exit 2, nothing pinned.
    c.talix()
        .args(["store", "pin", SINGLE, "render/nope"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("render/nope"));
    let homelab_live = closure(&c, refs(&c, "homelab").into_values());
    let pin_closure = closure(&c, [render.clone()]);
    assert!(
        pin_closure.contains(&secrets) && pin_closure.len() >= 4,
        "{pin_closure:?}"
    );

    // The profile file goes (its lock file stays): its refs are no root, the pin's closure
    // stays, and what the lock file records (the secrets bundle) is reached by `lock:single`.
    let profile_text = std::fs::read_to_string(c.root().join(SINGLE)).unwrap();
    std::fs::remove_file(c.root().join(SINGLE)).unwrap();
    assert!(c.root().join("profiles/single.lock").is_file());
    let listed = ls(&c);
    assert!(
        listed[&secrets].2.contains(&"lock:single".to_string()),
        "{:?}",
        listed[&secrets]
    );
    assert!(
        listed[&render]
            .2
            .contains(&"pin:single/render/solo".to_string())
    );
    let out = c
        .talix()
        .args(["store", "gc"])
        .assert()
        .success()
        .stderr(predicates::str::contains("single.yaml is gone"))
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let kept = keys(&c);
    let want: BTreeSet<String> = homelab_live.union(&pin_closure).cloned().collect();
    assert_eq!(kept, want, "{out}");
    assert!(
        !refs(&c, "single").is_empty(),
        "refs stay while the lock file needs them"
    );

    // Unpinned (with the profile back to name it) and with the lock file gone too, nothing
    // of single remains: its refs were dropped with its root.
    std::fs::remove_file(c.root().join("profiles/single.lock")).unwrap();
    run_ok(&c, &["store", "gc"]);
    assert!(
        refs(&c, "single").is_empty(),
        "refs of a gone profile are dropped"
    );
    assert_eq!(keys(&c), want, "the pin still keeps its closure");
    std::fs::write(c.root().join(SINGLE), &profile_text).unwrap();
    let unpinned = run_ok(&c, &["store", "unpin", SINGLE]);
    assert!(
        unpinned.contains(&format!("unpinned render/solo {render}")),
        "{unpinned}"
    );
    run_ok(&c, &["store", "gc"]);
    assert_eq!(keys(&c), homelab_live);
    plan_all_build_steps_cached(&c, HOMELAB);
}

#[test]
fn gc_refuses_with_no_wait_and_waits_while_another_process_holds_the_store_lock() {
    let c = Cluster::new();
    build(&c, HOMELAB);
    c.edit(HOMELAB, "ip: 10.0.0.22", "ip: 10.0.0.32");
    build(&c, HOMELAB);
    let store = talix::store::local::LocalStore::open(&c.root().join("store")).unwrap();
    let held = talix::store::Store::lock(&store, false).unwrap();
    let snap = snapshot(&c);

    c.talix()
        .args(["store", "gc", "--no-wait"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("locked by another talix process"))
        .stderr(predicates::str::contains("nothing was removed"));
    assert_eq!(snapshot(&c), snap);

    // Without --no-wait it says it waits, and does nothing until the lock is released.
    // The environment of `Workspace::talix`, on a std Command so it can run alongside.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_talix"))
        .current_dir(c.root())
        .env_remove("TALIX_STORE")
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", c.root())
        .args(["store", "gc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let waiting = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) if line.contains("waiting for another talix process") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(waiting, "gc said it waits for the lock");
    assert!(
        child.try_wait().unwrap().is_none(),
        "gc waits while the lock is held"
    );
    assert_eq!(snapshot(&c), snap, "nothing removed while waiting");
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!removed(&text).is_empty(), "{text}");
    plan_all_build_steps_cached(&c, HOMELAB);
}

#[test]
fn ls_and_gc_without_a_store_are_usage_errors() {
    let c = common::Workspace::empty();
    c.write(
        "profiles/p.yaml",
        &common::legacy_demo_profile(
            1,
            2,
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        ),
    );
    for args in [
        &["store", "ls"][..],
        &["store", "gc"],
        &["store", "pin", "profiles/p.yaml"],
        &["store", "unpin", "profiles/p.yaml"],
    ] {
        c.talix()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains("no talix store at"));
    }
    assert!(
        !Path::new(&c.root().join("store")).exists(),
        "nothing created"
    );
}

/// The output hash `output` of object `key`, from its manifest.
fn output_hash(c: &Cluster, key: &str, output: &str) -> String {
    let path = objects_dir(c).join(key).join("manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    m["outputs"][output]["hash"].as_str().unwrap().to_string()
}

#[test]
fn a_lock_file_keeps_the_config_it_records_as_applied_and_a_removed_node_is_no_root() {
    let c = Cluster::new();
    build(&c, HOMELAB);
    let old_render = refs(&c, "homelab")["render/w2"].clone();
    let old_talosconfig = refs(&c, "homelab")["talosconfig"].clone();
    let applied = output_hash(&c, &old_render, "config");
    c.edit(HOMELAB, "ip: 10.0.0.22", "ip: 10.0.0.32");
    build(&c, HOMELAB);
    // As `up` records an apply: the config hash, not the key (the lock file outlives stores).
    let lock = c.root().join("profiles/homelab.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(
        &lock,
        format!(
            "{text}nodes:\n  w2:\n    applied_config: {applied}\n    at: 2026-12-01T00:00:00Z\n"
        ),
    )
    .unwrap();
    let listed = ls(&c);
    assert!(
        listed[&old_render].2.contains(&"lock:homelab".to_string()),
        "{:?}",
        listed[&old_render]
    );
    let out = run_ok(&c, &["store", "gc"]);
    let gone = removed(&out);
    assert!(gone.contains(&old_talosconfig), "{out}");
    let kept = keys(&c);
    for k in closure(&c, [old_render.clone()]) {
        assert!(
            kept.contains(&k),
            "{k} is needed by the lock file's applied config: {out}"
        );
    }

    // w2 leaves the profile: its refs are no root any more, its objects go.
    let w2_patch = refs(&c, "homelab")["patch/w2"].clone();
    let w2_render = refs(&c, "homelab")["render/w2"].clone();
    c.edit(
        HOMELAB,
        "      - { name: w2, ip: 10.0.0.32, vmid: 162 }\n",
        "",
    );
    build(&c, HOMELAB);
    let out = run_ok(&c, &["store", "gc"]);
    let gone = removed(&out);
    assert!(
        gone.contains(&w2_patch) && gone.contains(&w2_render),
        "{out}"
    );
    assert!(
        keys(&c).contains(&old_render),
        "the lock file still records it"
    );
    plan_all_build_steps_cached(&c, HOMELAB);
}

#[test]
fn gc_killed_between_moving_an_object_aside_and_removing_it_leaves_whole_objects_only() {
    let c = Cluster::new();
    build(&c, HOMELAB);
    c.edit(HOMELAB, "ip: 10.0.0.22", "ip: 10.0.0.32");
    build(&c, HOMELAB);
    let live = closure(
        &c,
        refs(&c, "homelab")
            .into_values()
            .chain(refs(&c, "single").into_values()),
    );
    let garbage: BTreeSet<String> = keys(&c).difference(&live).cloned().collect();
    assert_eq!(
        garbage.len(),
        3,
        "patch/w2, render/w2, talosconfig: {garbage:?}"
    );

    // SIGKILLed at its second removal: the first object is gone, the second moved aside.
    let out = c
        .talix()
        .args(["store", "gc"])
        .env("TALIX_TEST_CRASH_AT", "store-discard#2")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "killed at the crash point");
    let left = keys(&c);
    assert_eq!(
        left.difference(&live).count(),
        1,
        "the garbage object gc had not reached yet"
    );
    assert!(live.is_subset(&left));
    // Every object left is whole; what was moved aside is scratch, not an object.
    c.talix().args(["store", "verify"]).assert().success();
    let scratch: Vec<_> = std::fs::read_dir(c.root().join("store/v1/tmp"))
        .unwrap()
        .collect();
    assert_eq!(scratch.len(), 1, "{scratch:?}");

    let again = run_ok(&c, &["store", "gc"]);
    assert_eq!(removed(&again).len(), 1, "{again}");
    assert_eq!(keys(&c), live);
    let pruned = run_ok(&c, &["store", "prune"]);
    assert!(pruned.contains("pruned 1 entries"), "{pruned}");
    plan_all_build_steps_cached(&c, HOMELAB);
}
