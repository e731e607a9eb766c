//! Identity discovery and the private scratch directory read the real process environment: each
//! case runs this test binary again as a child with a prepared environment (the test process's
//! own environment is never changed), and the child reports what it found.

mod secrets_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use secrets_common::*;
use talix::secrets::{Identities, PrivateDir};

const CHILD_MARKER: &str = "TALIX_TEST_DISCOVERY_CHILD";

/// The child half: only does something when started by [`run_child`].
#[test]
#[ignore = "helper: run by the other tests in a child process"]
fn child_report() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    // libtest prints "test child_report ... " without a newline before the test's output.
    println!();
    let explicit = std::env::var_os("TALIX_TEST_EXPLICIT").map(PathBuf::from);
    match Identities::discover(explicit.as_deref()) {
        Ok(ids) => println!("IDENTITY-SOURCE={}", ids.source()),
        Err(e) => println!("IDENTITY-ERROR={}", e.to_string().replace('\n', "|")),
    }
    match PrivateDir::create() {
        Ok(dir) => println!("PRIVATE-DIR={}", dir.path().display()),
        Err(e) => println!("PRIVATE-ERROR={}", e.to_string().replace('\n', "|")),
    }
}

/// Run [`child_report`] with exactly `env` (plus PATH) and return its KEY=VALUE lines.
fn run_child(env: &[(&str, &str)]) -> HashMap<String, String> {
    let mut cmd = assert_cmd::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_report",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env(CHILD_MARKER, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("IDENTITY-") || k.starts_with("PRIVATE-"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn source_of(env: &[(&str, &str)]) -> String {
    let report = run_child(env);
    report
        .get("IDENTITY-SOURCE")
        .cloned()
        .unwrap_or_else(|| format!("error: {:?}", report.get("IDENTITY-ERROR")))
}

#[test]
fn discovery_order_in_a_real_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (explicit, _) = age_keygen(d, "explicit.txt");
    let (talix_key, _) = age_keygen(d, "talix.txt");
    let (sops_key, _) = age_keygen(d, "sops.txt");
    let xdg = d.join("xdg");
    fs_err::create_dir_all(xdg.join("sops/age")).unwrap();
    age_keygen(&xdg.join("sops/age"), "keys.txt");
    let home = d.join("home");
    fs_err::create_dir_all(home.join(".config/sops/age")).unwrap();
    age_keygen(&home.join(".config/sops/age"), "keys.txt");
    let inline = fs_err::read_to_string(&sops_key).unwrap();
    let s = |p: &Path| p.display().to_string();
    let (explicit_s, talix_s, sops_s, xdg_s, home_s) =
        (s(&explicit), s(&talix_key), s(&sops_key), s(&xdg), s(&home));

    let mut env = vec![
        ("HOME", home_s.as_str()),
        ("XDG_CONFIG_HOME", xdg_s.as_str()),
        ("SOPS_AGE_KEY", inline.as_str()),
        ("SOPS_AGE_KEY_FILE", sops_s.as_str()),
        ("TALIX_AGE_KEY_FILE", talix_s.as_str()),
        ("TALIX_TEST_EXPLICIT", explicit_s.as_str()),
    ];
    let expected = [
        format!("--identity {explicit_s}"),
        format!("$TALIX_AGE_KEY_FILE ({talix_s})"),
        format!("$SOPS_AGE_KEY_FILE ({sops_s})"),
        "$SOPS_AGE_KEY".to_string(),
        format!("{xdg_s}/sops/age/keys.txt"),
        format!("{home_s}/.config/sops/age/keys.txt"),
    ];
    for want in expected {
        assert_eq!(source_of(&env), want);
        env.pop();
    }
}

#[test]
fn no_identity_anywhere_lists_the_places_searched() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().display().to_string();
    let report = run_child(&[("HOME", &home)]);
    assert_eq!(
        report["IDENTITY-ERROR"],
        format!(
            "no age identity found to decrypt the secrets|\
             hint: looked in, in this order: --identity (not given), $TALIX_AGE_KEY_FILE (unset), \
             $SOPS_AGE_KEY_FILE (unset), $SOPS_AGE_KEY (unset), {home}/.config/sops/age/keys.txt \
             (not found)|\
             hint: pass --identity FILE, or set SOPS_AGE_KEY_FILE to your age-keygen key file"
        )
    );
}

#[test]
fn private_dir_honours_the_override_but_only_on_tmpfs() {
    let report = run_child(&[("TALIX_PRIVATE_TMP", "/dev/shm")]);
    assert!(report["PRIVATE-DIR"].starts_with("/dev/shm/talix-private-"));
    // Dropped when the child finished.
    assert!(!Path::new(&report["PRIVATE-DIR"]).exists());

    let disk = env!("CARGO_MANIFEST_DIR");
    let report = run_child(&[("TALIX_PRIVATE_TMP", disk)]);
    let err = &report["PRIVATE-ERROR"];
    assert!(
        err.starts_with(&format!("{disk}: not on tmpfs or ramfs")),
        "{err}"
    );
    assert!(err.ends_with("|hint: point TALIX_PRIVATE_TMP at a tmpfs directory such as /dev/shm"));
}
