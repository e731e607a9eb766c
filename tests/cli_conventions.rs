//! Command-line conventions, as a script or a terminal meets them: data on stdout, messages and
//! logs on stderr; no escape codes off a terminal or with NO_COLOR (checked on a real pty with
//! util-linux `script`, where colors do appear without NO_COLOR, so the probe can fail); `-v`
//! and TALIX_LOG/RUST_LOG; `--json` for data; exit codes 0/1/2 (src/exit.rs).

mod common;

use std::process::Command as Std;

use common::{Cluster, Workspace};

const ESC: u8 = 0x1b;

fn has_escapes(bytes: &[u8]) -> bool {
    bytes.contains(&ESC)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `talix ARGS` on a pseudo-terminal (stdout and stderr both a tty, merged), via util-linux
/// `script`; `None` (with a notice) where `script` is missing.
fn on_a_terminal(ws: &Workspace, args: &str, no_color: bool) -> Option<Vec<u8>> {
    let have = Std::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        println!("SKIPPED terminal check: util-linux `script` is not installed");
        return None;
    }
    let exe = env!("CARGO_BIN_EXE_talix");
    let mut cmd = Std::new("script");
    cmd.args(["-qec", &format!("'{exe}' {args}"), "/dev/null"])
        .current_dir(ws.root())
        .env_remove("NO_COLOR")
        .env_remove("TALIX_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TALIX_STORE")
        .env("TERM", "xterm-256color")
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("HOME", ws.root());
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().unwrap();
    Some(out.stdout)
}

#[test]
fn help_has_colors_only_on_a_terminal_without_no_color() {
    let ws = Workspace::with_examples();
    let out = ws
        .talix()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(!has_escapes(&out.stdout), "{}", text(&out.stdout));
    assert!(out.stderr.is_empty());
    let help = text(&out.stdout);
    for line in [
        "Exit status:",
        "  0  success",
        "  1  failure",
        "  2  bad input",
        "NO_COLOR",
    ] {
        assert!(help.contains(line), "{line} missing in --help:\n{help}");
    }
    let sub = ws
        .talix()
        .args(["plan", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(!has_escapes(&sub.stdout));

    let Some(colored) = on_a_terminal(&ws, "--help", false) else {
        return;
    };
    assert!(
        has_escapes(&colored),
        "clap colors its help on a terminal (the probe works): {}",
        text(&colored)
    );
    let plain = on_a_terminal(&ws, "--help", true).unwrap();
    assert!(!has_escapes(&plain), "NO_COLOR=1: {}", text(&plain));
    assert!(text(&plain).contains("Exit status:"));
    // clap's usage errors (stderr) follow the same rule.
    let colored = on_a_terminal(&ws, "frobnicate", false).unwrap();
    assert!(has_escapes(&colored), "{}", text(&colored));
    let plain = on_a_terminal(&ws, "frobnicate", true).unwrap();
    assert!(
        text(&plain).contains("unrecognized subcommand"),
        "{}",
        text(&plain)
    );
    assert!(!has_escapes(&plain), "NO_COLOR=1: {}", text(&plain));
}

#[test]
fn verbose_logs_are_on_stderr_without_escape_codes_and_leave_stdout_alone() {
    let ws = Workspace::with_examples();
    let p = "profiles/homelab.yaml";
    let quiet = ws
        .talix()
        .args(["plan", p])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        !text(&quiet.stderr).contains("INFO"),
        "no info logs without -v: {}",
        text(&quiet.stderr)
    );
    let loud = ws
        .talix()
        .args(["-v", "plan", p])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(
        text(&loud.stdout),
        text(&quiet.stdout),
        "-v adds nothing to stdout"
    );
    let logs = text(&loud.stderr);
    assert!(
        logs.contains("INFO") && logs.contains("profile homelab"),
        "{logs}"
    );
    assert!(
        !has_escapes(&loud.stderr),
        "escape codes in logs off a terminal: {logs:?}"
    );
    // -vv: debug as well; the data on stdout is still the same.
    let louder = ws
        .talix()
        .args(["-vv", "plan", p])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(text(&louder.stdout), text(&quiet.stdout));

    // RUST_LOG alone turns logs on; TALIX_LOG wins over it.
    let rust_log = ws
        .talix()
        .env("RUST_LOG", "info")
        .args(["plan", p])
        .output()
        .unwrap();
    assert!(
        text(&rust_log.stderr).contains("INFO"),
        "{}",
        text(&rust_log.stderr)
    );
    let both = ws
        .talix()
        .env("RUST_LOG", "info")
        .env("TALIX_LOG", "error")
        .args(["plan", p])
        .output()
        .unwrap();
    assert!(
        !text(&both.stderr).contains("INFO"),
        "{}",
        text(&both.stderr)
    );
    // A broken filter is reported, not fatal.
    let bad = ws
        .talix()
        .env("TALIX_LOG", "talix=loud")
        .args(["plan", p])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(0));
    assert!(text(&bad.stderr).contains("warning: TALIX_LOG: invalid log filter"));
    assert_eq!(text(&bad.stdout), text(&quiet.stdout));

    let Some(colored) = on_a_terminal(&ws, &format!("-v plan {p}"), false) else {
        return;
    };
    assert!(
        has_escapes(&colored),
        "logs are colored on a terminal: {}",
        text(&colored)
    );
    let plain = on_a_terminal(&ws, &format!("-v plan {p}"), true).unwrap();
    assert!(text(&plain).contains("INFO"), "{}", text(&plain));
    assert!(
        !has_escapes(&plain),
        "NO_COLOR=1 on a terminal: {:?}",
        text(&plain)
    );
}

#[test]
fn no_color_output_of_plan_and_validate_errors_has_no_escape_codes() {
    let ws = Workspace::with_examples();
    let plan = ws
        .talix()
        .env("NO_COLOR", "1")
        .args(["-v", "plan", "profiles/homelab.yaml"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(text(&plan.stdout).contains("plan for homelab"));
    assert!(!has_escapes(&plan.stdout) && !has_escapes(&plan.stderr));

    ws.edit(
        "profiles/homelab.yaml",
        "name: homelab",
        "name: Not_A_Label",
    );
    let bad = ws
        .talix()
        .env("NO_COLOR", "1")
        .args(["-v", "validate", "profiles/homelab.yaml"])
        .assert()
        .code(2)
        .stdout("")
        .get_output()
        .clone();
    let err = text(&bad.stderr);
    assert!(
        err.contains("homelab.yaml") && err.contains("name"),
        "{err}"
    );
    assert!(!has_escapes(&bad.stderr), "{err:?}");
}

#[test]
fn up_on_the_simulator_with_no_color_has_no_escape_codes() {
    let (c, _sim) = Cluster::with_sim(100, |_| {});
    let out = c
        .talix_fast()
        .env("NO_COLOR", "1")
        .args(["-v", "up", "profiles/demo.yaml"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(" bootstrap ") && stdout.contains(" verify "),
        "{stdout}"
    );
    assert!(!has_escapes(&out.stdout), "{stdout:?}");
    assert!(
        !has_escapes(&out.stderr),
        "stderr (logs, spinner) off a terminal: {:?}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("INFO"), "{stderr}");
    // Off a terminal the per-node progress board (which replaces the spinners) is plain
    // timestamped lines `<RFC 3339>Z <node> <state> (+<elapsed>s)`: not silence, not cursor
    // movement.
    for (who, state) in [
        ("cluster", "looking for maintenance-mode machines"),
        ("cp1", "waiting for the Talos API at "),
        ("cluster", "waiting for the cluster to become healthy"),
    ] {
        assert!(
            stderr.lines().any(|l| {
                let mut parts = l.splitn(2, ' ');
                let (stamp, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                stamp.len() > 20
                    && stamp.ends_with('Z')
                    && stamp.as_bytes()[10] == b'T'
                    && rest.starts_with(who)
                    && rest[who.len()..].trim_start().starts_with(state)
                    && l.ends_with("s)")
            }),
            "{who} {state:?} missing in:\n{stderr}"
        );
    }
    assert!(!stderr.contains('\r'), "{stderr:?}");
}

#[test]
fn exit_codes_usage_error_bad_profile_and_failure() {
    let c = Cluster::new();
    // Usage errors: 2, message on stderr, nothing on stdout.
    for args in [
        &["frobnicate"][..],
        &["plan"][..],
        &["plan", "profiles/homelab.yaml", "--no-such-flag"][..],
        &["completions", "tcsh"][..],
    ] {
        c.talix()
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicates::str::contains("error:"));
    }
    // --help / --version: 0, on stdout.
    c.talix()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicates::str::contains("talix"));
    // The simulator behind a global flag (parsed by talix first): its usage error is still 2.
    c.talix()
        .args(["-v", "sim", "bogus"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("usage: talix sim"));
    // A bad profile: 2.
    c.write("profiles/broken.yaml", "name: broken\nnodes: [\n");
    c.talix()
        .args(["validate", "profiles/broken.yaml"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicates::str::contains("broken.yaml"));
    c.talix()
        .args(["plan", "profiles/no-such.yaml"])
        .assert()
        .code(2)
        .stdout("");
    // A failure: 1 (exporting configs that were never built).
    c.talix()
        .args(["export", "profiles/homelab.yaml", "--out", "out"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicates::str::contains("talix build"));
    assert!(!c.root().join("out").exists(), "nothing written on failure");
}

#[test]
fn why_store_verify_and_secrets_verify_speak_json() {
    let c = Cluster::new();
    let p = "profiles/homelab.yaml";
    c.talix().args(["build", p]).assert().success();

    let out = c
        .talix()
        .args(["why", "--json", p, "render/cp1"])
        .assert()
        .success()
        .get_output()
        .clone();
    let why: serde_json::Value = serde_json::from_slice(&out.stdout).expect("why --json is JSON");
    assert_eq!(why["step"], "render/cp1");
    assert_eq!(why["status"], "cached");
    assert_eq!(why["secret"], true);
    let key = why["key"].as_str().unwrap().to_string();
    assert_eq!(why["last_realised"]["key"], key.as_str());
    assert_eq!(why["last_realised"]["changes"], serde_json::json!([]));
    assert_eq!(why["last_realised"]["outputs"]["config"]["encrypted"], true);
    let inputs = why["inputs"].as_object().unwrap();
    assert!(!inputs.is_empty());
    // The text and the JSON say the same: every input line of `why` is in the JSON.
    let plain = text(
        &c.talix()
            .args(["why", p, "render/cp1"])
            .output()
            .unwrap()
            .stdout,
    );
    for (k, v) in inputs {
        let v = v.as_str().unwrap();
        assert!(
            plain
                .lines()
                .any(|l| l.trim_start().starts_with(k.as_str()) && l.trim_end().ends_with(v)),
            "{k} = {v} not in:\n{plain}"
        );
    }
    // No secret value: the bundle's contents never appear in the JSON.
    let bundle = text(
        &c.talix()
            .args(["secrets", "show", p])
            .output()
            .unwrap()
            .stdout,
    );
    let json_text = text(&out.stdout);
    for needle in common::secret_needles(&bundle) {
        assert!(!json_text.contains(&needle), "a secret value in why --json");
    }
    // Edit the profile: the JSON names the change.
    c.edit(p, "10.0.0.21", "10.0.0.31");
    let changed: serde_json::Value = serde_json::from_slice(
        &c.talix()
            .args(["why", "--json", p, "patch/w1"])
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .unwrap();
    assert_eq!(changed["status"], "run");
    let changes = changed["last_realised"]["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|ch| ch["old"] == "10.0.0.21" && ch["new"] == "10.0.0.31"),
        "{changes:?}"
    );
    c.edit(p, "10.0.0.31", "10.0.0.21");

    // secrets verify --json: the bundle hash (as the text prints it), nothing secret.
    let sv: serde_json::Value = serde_json::from_slice(
        &c.talix()
            .args(["secrets", "verify", "--json", p])
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .unwrap();
    assert_eq!(sv["valid"], true);
    let hash = sv["bundle_hash"].as_str().unwrap();
    let sv_text = text(
        &c.talix()
            .args(["secrets", "verify", p])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(sv_text.contains(hash), "{sv_text} vs {hash}");

    // store verify --json: clean, then a damaged object (exit 1, the problem in the JSON).
    let ok: serde_json::Value = serde_json::from_slice(
        &c.talix()
            .args(["store", "verify", "--json", p])
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .unwrap();
    assert_eq!(ok["ok"], true);
    assert!(ok["objects"].as_u64().unwrap() > 5, "{ok}");
    assert_eq!(ok["problems"], serde_json::json!([]));
    let patch_key = {
        let plan: serde_json::Value = serde_json::from_slice(
            &c.talix()
                .args(["plan", "--json", p])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "patch/w1")
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let output = c
        .root()
        .join("store/v1/objects")
        .join(&patch_key)
        .join("out/patch");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&output, "machine: {}\n").unwrap();
    let bad = c
        .talix()
        .args(["store", "verify", "--json", p])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("JSON even on failure");
    assert_eq!(doc["ok"], false);
    let problems = doc["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains(&patch_key)),
        "{problems:?}"
    );
    assert!(text(&bad.stderr).contains(&patch_key));
}

#[test]
fn validate_speaks_json_with_file_line_and_field() {
    let ws = Workspace::with_examples();
    let p = "profiles/homelab.yaml";
    let ok: serde_json::Value = serde_json::from_slice(
        &ws.talix()
            .args(["validate", "--json", p])
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .expect("validate --json is JSON");
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["name"], "homelab");
    assert_eq!(
        (
            ok["controlplane_nodes"].as_u64(),
            ok["worker_nodes"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(ok["errors"], serde_json::json!([]));

    // Two problems: both reported, each with its line and field, exit 2.
    ws.edit(p, "ip: 10.0.0.21", "ip: 10.9.9.21");
    ws.edit(p, "name: homelab", "name: Not_A_Label");
    let out = ws
        .talix()
        .args(["validate", "--json", p])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let bad: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON when invalid");
    assert_eq!(bad["valid"], false);
    let errors = bad["errors"].as_array().unwrap();
    assert!(errors.len() >= 2, "{errors:?}");
    let text_lines = text(&ws.talix().args(["validate", p]).output().unwrap().stderr);
    for e in errors {
        assert!(e["file"].as_str().unwrap().ends_with("homelab.yaml"), "{e}");
        assert!(e["line"].as_u64().is_some(), "{e}");
        let line = format!("{}:{}", e["file"].as_str().unwrap(), e["line"]);
        assert!(
            text_lines.contains(&line),
            "{line} not in the text report:\n{text_lines}"
        );
    }
    assert!(errors.iter().any(|e| e["field"] == "name"), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e["field"].as_str().unwrap().contains("assignments[0].ip")),
        "{errors:?}"
    );
    assert!(
        text(&out.stderr).contains("error:"),
        "errors also on stderr"
    );
}

/// A stdout whose reader is already gone (`talix plan | head -0`): a pipe with its read end
/// closed before talix starts, so every write fails with EPIPE, deterministically.
fn closed_stdout() -> std::process::Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    std::process::Stdio::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) })
}

/// `talix ARGS` as [`Cluster::talix`] runs it, with the given stdout.
fn talix_std(c: &Cluster, stdout: std::process::Stdio) -> Std {
    let mut cmd = Std::new(env!("CARGO_BIN_EXE_talix"));
    cmd.current_dir(c.root())
        .env_remove("TALIX_STORE")
        .env_remove("TALIX_LOG")
        .env_remove("RUST_LOG")
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", c.root())
        .env("TALIX_TALOSCTL", c.root().join("bin/talosctl"))
        .env("TALIX_AGE_KEY_FILE", c.root().join("key.txt"))
        .stdout(stdout);
    cmd
}

#[test]
fn a_reader_that_goes_away_ends_data_commands_quietly_and_never_stops_a_run() {
    let c = Cluster::new();
    let p = "profiles/homelab.yaml";
    for args in [
        &["plan", p][..],
        &["plan", "--json", p][..],
        &["validate", p][..],
        &["why", p, "secrets"][..],
        &["completions", "zsh"][..],
        &["man"][..],
    ] {
        let out = talix_std(&c, closed_stdout()).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
    }
    // `build` with nobody reading its report still builds everything.
    let out = talix_std(&c, closed_stdout())
        .args(["build", p])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = c
        .talix()
        .args(["plan", "--json", p])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let statuses = common::plan_statuses(&plan);
    for (id, status, _) in &statuses {
        if ["secrets", "base-config", "talosconfig"].contains(&id.as_str())
            || id.starts_with("patch/")
            || id.starts_with("render/")
        {
            assert_eq!(status, "cached", "{id}");
        }
    }
    assert!(c.root().join("clusters/homelab/talosconfig").is_file());

    // A reader that left never turns a verdict into success.
    c.write("profiles/broken.yaml", "name: broken\nnodes: [\n");
    let out = talix_std(&c, closed_stdout())
        .args(["validate", "--json", "profiles/broken.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let patch = statuses.iter().find(|(id, _, _)| id == "patch/w1").unwrap();
    assert_eq!(patch.1, "cached");
    let plan: serde_json::Value = serde_json::from_slice(&plan).unwrap();
    let key = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "patch/w1")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let output = c
        .root()
        .join("store/v1/objects")
        .join(&key)
        .join("out/patch");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&output, "machine: {}\n").unwrap();
    let out = talix_std(&c, closed_stdout())
        .args(["store", "verify", "--json", p])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&key), "{}", text(&out.stderr));
}
