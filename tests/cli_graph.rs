//! `talix graph PROFILE [--json]`: DOT that Debian's graphviz `dot -Tsvg` renders, one node per
//! plan step with the plan's status, one edge per dependency; the JSON graph carries the same
//! nodes and statuses as `plan --json`; output is deterministic.

mod common;

use std::collections::BTreeSet;
use std::io::Write;

use common::Cluster;

const P: &str = "profiles/homelab.yaml";

fn stdout(c: &Cluster, args: &[&str]) -> String {
    let out = c.talix().args(args).assert().success().get_output().clone();
    String::from_utf8(out.stdout).unwrap()
}

fn json(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&stdout(c, &["graph", "--json", P])).unwrap()
}

/// `dot -Tsvg` of `text` (graphviz: .ci/run installs it).
fn render_svg(text: &str) -> String {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("graphviz `dot` is installed (Debian package graphviz)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "dot: {err}\n{text}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The graph's (id, status) nodes must be the plan's steps with the plan's statuses.
fn check_against_plan(c: &Cluster) {
    let g = json(c);
    let plan = c
        .talix()
        .args(["plan", "--json", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plan: Vec<(String, String)> = common::plan_statuses(&plan)
        .into_iter()
        .map(|(id, status, _)| (id, status))
        .collect();
    let nodes: Vec<(String, String)> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        nodes, plan,
        "one node per plan step, in plan order, same status"
    );
    let ids: BTreeSet<&str> = nodes.iter().map(|(id, _)| id.as_str()).collect();
    for e in g["edges"].as_array().unwrap() {
        assert!(ids.contains(e["from"].as_str().unwrap()), "{e}");
        assert!(ids.contains(e["to"].as_str().unwrap()), "{e}");
    }
}

#[test]
fn graph_renders_with_dot_and_matches_the_plan_before_and_after_build() {
    let c = Cluster::new();
    check_against_plan(&c);
    let before = json(&c);
    let statuses: BTreeSet<&str> = before["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["blocked", "cached", "run"].into(),
        "only the secrets (from `secrets init`) are in the store"
    );

    let dot = stdout(&c, &["graph", P]);
    assert!(dot.starts_with("digraph "), "{dot}");
    for (id, status) in [
        ("render/cp1", "blocked"),
        ("base-config", "run"),
        ("secrets", "cached"),
    ] {
        assert!(
            dot.contains(&format!("\"{id}\" [label=\"{id}\\n{status}\"")),
            "{dot}"
        );
    }
    assert!(dot.contains("\"render/cp1\" -> \"apply/cp1\";"), "{dot}");
    assert!(dot.contains("\"base-config\" -> \"render/cp1\";"), "{dot}");
    let svg = render_svg(&dot);
    assert!(svg.contains("<svg") && svg.contains("render/cp1"), "{svg}");
    assert_eq!(stdout(&c, &["graph", P]), dot, "deterministic");

    c.talix().args(["build", P]).assert().success();
    check_against_plan(&c);
    let after = json(&c);
    let node = |id: &str| {
        after["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("render/cp1")["status"], "cached");
    assert!(node("render/cp1")["key"].as_str().unwrap().len() == 64);
    assert_eq!(node("apply/cp1")["status"], "run");
    assert_eq!(node("apply/cp1")["effect"], "side-effect");
    let dot = stdout(&c, &["graph", P]);
    assert!(
        dot.contains("\"render/cp1\" [label=\"render/cp1\\ncached\", fillcolor=\"#b7e1a1\""),
        "{dot}"
    );
    render_svg(&dot);
    let edges = after["edges"].as_array().unwrap();
    assert!(
        edges.iter().any(|e| e["from"] == "base-config"
            && e["to"] == "render/w1"
            && e["outputs"][0] == "worker"),
        "{edges:?}"
    );
    assert_eq!(json(&c), after, "deterministic");
}

#[test]
fn graph_of_a_bad_profile_is_a_usage_error() {
    let c = Cluster::new();
    c.edit(P, "ip: 10.0.0.22", "ip: 10.0.0.999");
    c.talix()
        .args(["graph", P])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicates::str::contains("homelab.yaml"));
}
