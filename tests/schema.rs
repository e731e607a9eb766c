//! The profile's JSON Schema (`talix schema`) and the profile reference rendered from it
//! (`talix schema --markdown`): the committed copies are current, the example profiles pass
//! both the parser and a real JSON Schema validator (the `jsonschema` crate, draft-07, formats
//! checked), and the bad-profile corpus's schema-level mistakes are refused by the schema too.

mod common;

use std::path::{Path, PathBuf};

use common::Workspace;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn talix_stdout(args: &[&str]) -> String {
    let out = Workspace::empty().talix().args(args).output().unwrap();
    assert!(out.status.success(), "talix {args:?}: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "talix {args:?} wrote to stderr: {out:?}"
    );
    String::from_utf8(out.stdout).unwrap()
}

fn committed(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn schema() -> Value {
    serde_json::from_str(&talix_stdout(&["schema"])).expect("talix schema prints JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("the schema compiles")
}

/// The profile as a YAML language server sees it: YAML parsed into JSON values.
fn as_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_saphyr::from_str::<Value>(&text).map_err(|e| e.to_string())
}

fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_what_talix_schema_prints() {
    let printed = talix_stdout(&["schema"]);
    assert!(
        printed == committed("schema/profile.schema.json"),
        "schema/profile.schema.json is stale: regenerate it with \
         `cargo run -- schema > schema/profile.schema.json` and commit it"
    );
}

#[test]
fn the_committed_profile_reference_is_what_talix_schema_markdown_prints() {
    let printed = talix_stdout(&["schema", "--markdown"]);
    assert!(
        printed == committed("docs/profile-reference.md"),
        "docs/profile-reference.md is stale: regenerate it with \
         `cargo run -- schema --markdown > docs/profile-reference.md` and commit it"
    );
    // Every field of the schema has its row, and the rows say what feeds what.
    for row in [
        "| `network.api_endpoint` |",
        "| `talos.contract` |",
        "| `discovery.retry_wait_s` | integer 0 to 3600 | `30` | `discover` |",
        "| `nodes.worker.assignments[].mac` |",
        "| `patches.nodes` |",
    ] {
        assert!(printed.contains(row), "no {row:?} in\n{printed}");
    }
}

#[test]
fn the_schema_is_valid_draft_07_and_strict_like_the_parser() {
    let schema = schema();
    jsonschema::draft7::meta::validator()
        .validate(&schema)
        .expect("a valid draft-07 schema");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    // The parser denies unknown fields everywhere; so does the schema, in every object.
    assert_eq!(schema["additionalProperties"], false);
    for (name, def) in schema["definitions"].as_object().unwrap() {
        if def["type"] == "object" && def.get("properties").is_some() {
            assert_eq!(def["additionalProperties"], false, "{name}");
        }
    }
    // Descriptions come from the doc comments of src/profile/raw.rs.
    let api = &schema["definitions"]["Network"]["properties"]["api_endpoint"];
    assert!(
        api["description"]
            .as_str()
            .unwrap()
            .starts_with("Host of the Kubernetes API endpoint"),
        "{api}"
    );
    assert_eq!(
        schema["definitions"]["Talos"]["properties"]["api_port"]["default"],
        50000
    );
}

/// Every example profile under profiles/ names the committed schema in its first line (a
/// yaml-language-server modeline, relative to the profile), and passes both `talix validate`
/// and the schema.
#[test]
fn every_example_profile_names_the_schema_and_passes_parser_and_schema() {
    let v = validator();
    let ws = Workspace::shipped_examples();
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("profiles")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        seen += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let target = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{name}: first line {first:?} is not the schema modeline"));
        let resolved = path.parent().unwrap().join(target);
        assert_eq!(
            std::fs::canonicalize(&resolved).unwrap(),
            std::fs::canonicalize(repo().join("schema/profile.schema.json")).unwrap(),
            "{name}: the modeline points at {}",
            resolved.display()
        );
        ws.talix()
            .args(["validate", &format!("profiles/{name}")])
            .assert()
            .success();
        let doc = as_json(&path).unwrap();
        let errors = schema_errors(&v, &doc);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    assert!(seen >= 2, "{seen} example profiles");
}

/// The profile `talix demo` writes and the test harness's variants of the examples pass the
/// schema too: it is not stricter than the parser on real profiles.
#[test]
fn generated_profiles_pass_the_schema() {
    let v = validator();
    let ws = Workspace::with_examples();
    let demo = ws.write(
        "profiles/demo.yaml",
        &talix::demo::profile_yaml(
            127,
            42,
            "age10lxvmevqfcfn0ufp27je8xd073kllfnr5urju2qk69eetz96w93sckchp8",
        ),
    );
    for path in [demo, ws.profile("single"), ws.profile("homelab")] {
        let rel = path.strip_prefix(ws.root()).unwrap().display().to_string();
        ws.talix().args(["validate", &rel]).assert().success();
        let errors = schema_errors(&v, &as_json(&path).unwrap());
        assert!(errors.is_empty(), "{rel}: {errors:#?}");
    }
}

/// An X25519 recipient whose bech32 data begins with "pq" (1 key in 1024; this one was made by
/// `age-keygen`) is not a post-quantum one (those are `age1pq1...`): both the parser and the
/// schema take it. Both refused it before, which failed a CI run whose random test key
/// happened to start so.
#[test]
fn an_x25519_recipient_that_begins_with_pq_is_not_post_quantum() {
    let v = validator();
    let ws = Workspace::with_examples();
    let path = ws.write(
        "profiles/demo.yaml",
        &talix::demo::profile_yaml(
            127,
            42,
            "age1pqyf9heryrlk9r78xt8rn8m9m5e5u7qe7uz2z9rw2hnfk3rvcseqwluu4l",
        ),
    );
    ws.talix()
        .args(["validate", "profiles/demo.yaml"])
        .assert()
        .success();
    let errors = schema_errors(&v, &as_json(&path).unwrap());
    assert!(errors.is_empty(), "{errors:#?}");
    // A post-quantum one is still refused by both.
    let pq = ws.write(
        "profiles/demo.yaml",
        &talix::demo::profile_yaml(127, 42, "age1pq1qqqqqqqqqqqqqqqqqqqqqqqqqq"),
    );
    ws.talix()
        .args(["validate", "profiles/demo.yaml"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("post-quantum"));
    assert!(!schema_errors(&v, &as_json(&pq).unwrap()).is_empty());
}

/// Mistakes a schema can see: unknown keys, wrong types, malformed values, out-of-range
/// numbers, missing keys. (Cross-field ones such as overlapping networks are validate's.)
const SCHEMA_LEVEL: &[&str] = &[
    "api-port-negative.yaml",
    "api-port-too-big.yaml",
    "api-port-zero.yaml",
    "attempts-huge.yaml",
    "attempts-zero.yaml",
    "concurrency-huge.yaml",
    "concurrency-zero.yaml",
    "connect-timeout-huge.yaml",
    "connect-timeout-zero.yaml",
    "contract-bad.yaml",
    "controlplane-missing.yaml",
    "discovery-subnet-bad.yaml",
    "endpoint-empty.yaml",
    "endpoint-port.yaml",
    "endpoint-url.yaml",
    "extension-blank.yaml",
    "extension-twice.yaml",
    "extensions-too-many.yaml",
    "gateway-not-ip.yaml",
    "install-disk-relative.yaml",
    "k8s-version-bad.yaml",
    "list-document.yaml",
    "name-empty.yaml",
    "name-list.yaml",
    "name-too-long.yaml",
    "name-underscore.yaml",
    "name-uppercase.yaml",
    "nameservers-bad.yaml",
    "nameservers-empty.yaml",
    "nameservers-scalar.yaml",
    "nested-unknown.yaml",
    "network-missing-subnet.yaml",
    "network-unknown-key.yaml",
    "no-controlplane.yaml",
    "node-interface-blank.yaml",
    "node-ip-bad.yaml",
    "node-mac-bad.yaml",
    "node-missing-ip.yaml",
    "node-name-bad.yaml",
    "node-unknown-key.yaml",
    "node-vmid-negative.yaml",
    "nodes-unknown-group.yaml",
    "patches-unknown-key.yaml",
    "proxmox-both-secrets.yaml",
    "proxmox-empty-command.yaml",
    "proxmox-http.yaml",
    "proxmox-no-secret.yaml",
    "proxmox-secret-inline.yaml",
    "proxmox-token-id.yaml",
    "recipient-garbage.yaml",
    "recipient-post-quantum.yaml",
    "recipients-scalar.yaml",
    "retry-wait-float.yaml",
    "retry-wait-negative.yaml",
    "retry-wait-string.yaml",
    "retry-wait-u64-max.yaml",
    "scalar-document.yaml",
    "schematic-short.yaml",
    "schematic-upper.yaml",
    "subnet-bad-prefix.yaml",
    "subnet-no-prefix.yaml",
    "subnet-number.yaml",
    "talos-unknown-key.yaml",
    "version-latest.yaml",
    "version-no-patch.yaml",
    "version-number.yaml",
    "vip-missing-ip.yaml",
];

#[test]
fn schema_level_mistakes_of_the_bad_profile_corpus_are_refused_by_the_schema() {
    let v = validator();
    let corpus = repo().join("tests/fixtures/bad-profiles");
    let mut failures = Vec::new();
    for name in SCHEMA_LEVEL {
        let path = corpus.join(name);
        assert!(path.is_file(), "{name} is not in the corpus");
        match as_json(&path) {
            Ok(doc) if schema_errors(&v, &doc).is_empty() => {
                failures.push(format!("{name}: accepted by the schema"));
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: not YAML, so not a schema test: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The schema names the field: an editor underlines the key the parser would name.
#[test]
fn schema_errors_point_at_the_field() {
    let v = validator();
    let corpus = repo().join("tests/fixtures/bad-profiles");
    for (name, pointer) in [
        ("node-mac-bad.yaml", "/nodes/worker/assignments/0/mac"),
        ("schematic-upper.yaml", "/talos/factory/schematic_id"),
        ("retry-wait-u64-max.yaml", "/discovery/retry_wait_s"),
        ("endpoint-port.yaml", "/network/api_endpoint"),
    ] {
        let doc = as_json(&corpus.join(name)).unwrap();
        let errors = schema_errors(&v, &doc);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{pointer}:"))),
            "{name}: {errors:#?}"
        );
    }
}
