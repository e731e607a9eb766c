//! Issue 8, defects 5 and 6: `secrets edit` of a bootstrapped cluster's bundle and a `rekey`
//! that would lock the operator out need an explicit flag; an interrupted edit never leaves the
//! plaintext on tmpfs (SIGTERM, SIGINT, SIGHUP remove it at once, a SIGKILL's leftovers are swept
//! by the next run); no interactive editor without a terminal.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Cluster;

const P: &str = "profiles/single.yaml";

fn secrets_file(c: &Cluster) -> PathBuf {
    c.root().join("profiles/single.secrets.age")
}

/// Record a bootstrap with the current bundle in the lock file, as `up` does.
fn mark_bootstrapped(c: &Cluster) {
    let lock_path = c.root().join("profiles/single.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    let hash = lock
        .lines()
        .find_map(|l| l.trim().strip_prefix("bundle_hash: "))
        .unwrap()
        .to_string();
    std::fs::write(
        &lock_path,
        format!(
            "{lock}bootstrap:\n  node: solo\n  at: 2026-01-01T00:00:00Z\n  secrets_hash: {hash}\n"
        ),
    )
    .unwrap();
}

fn executable(c: &Cluster, rel: &str, body: &str) -> PathBuf {
    let p = c.write(rel, body);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn edit_of_the_bootstrapped_bundle_needs_the_flag_and_says_what_breaks() {
    let c = Cluster::new();
    mark_bootstrapped(&c);
    let before = std::fs::read(secrets_file(&c)).unwrap();
    let marker = c.root().join("editor-ran");
    let editor = executable(
        &c,
        "bin/ed",
        &format!(
            "#!/bin/sh\ntouch '{}'\nsed -i 's/bootstraptoken: .*/bootstraptoken: abcdef.0123456789abcdef/' \"$1\"\n",
            marker.display()
        ),
    );
    let out = c
        .talix()
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .args(["secrets", "edit", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to edit the secrets bundle the cluster was bootstrapped with"),
        "{err}"
    );
    assert!(err.contains("every running node reject"), "{err}");
    assert!(err.contains("--i-know-this-breaks-the-cluster"), "{err}");
    assert!(!marker.exists(), "the editor must not even start");
    assert_eq!(std::fs::read(secrets_file(&c)).unwrap(), before);
    // With the flag it goes through.
    c.talix()
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .args(["secrets", "edit", "--i-know-this-breaks-the-cluster", P])
        .assert()
        .success();
    assert_ne!(std::fs::read(secrets_file(&c)).unwrap(), before);
}

#[test]
fn rekey_that_locks_the_operator_out_needs_the_flag() {
    let c = Cluster::new();
    let before = std::fs::read(secrets_file(&c)).unwrap();
    let out = std::process::Command::new("age-keygen")
        .output()
        .expect("age-keygen installed");
    let other = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .or_else(|| {
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .find_map(|l| l.strip_prefix("Public key: ").map(str::to_string))
        })
        .unwrap();
    c.edit(
        P,
        &format!("    - {}", c.recipient),
        &format!("    - {other}"),
    );
    let out = c
        .talix()
        .args(["secrets", "rekey", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "refusing to re-encrypt to 1 recipient(s) none of your identities can decrypt"
        ),
        "{err}"
    );
    assert!(err.contains("--i-know-this-locks-me-out"), "{err}");
    assert_eq!(std::fs::read(secrets_file(&c)).unwrap(), before);
    c.talix()
        .args(["secrets", "rekey", "--i-know-this-locks-me-out", P])
        .assert()
        .success();
    assert_ne!(std::fs::read(secrets_file(&c)).unwrap(), before);
    // And indeed nothing can be decrypted any more.
    c.talix().args(["secrets", "show", P]).assert().code(1);
}

#[test]
fn no_editor_and_no_terminal_is_an_error_and_prints_no_plaintext() {
    let c = Cluster::new();
    let out = c
        .talix()
        .env_remove("EDITOR")
        .env_remove("VISUAL")
        .args(["secrets", "edit", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no editor: $VISUAL and $EDITOR are unset and there is no terminal for vi\n\
         hint: set EDITOR (e.g. EDITOR=nano), or run `talix secrets edit` from a terminal\n"
    );
}

/// A tmpfs directory for this test's scratch, so leftovers can be listed exactly.
fn private_base() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").expect("/dev/shm is tmpfs")
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Start `secrets edit` with an editor that announces its scratch file and then waits (bounded),
/// and return the child once the editor is running.
fn edit_in_progress(c: &Cluster, base: &Path) -> std::process::Child {
    let ready = c.root().join("editor-ready");
    let _ = std::fs::remove_file(&ready);
    let editor = executable(
        c,
        "bin/slow-editor",
        &format!("#!/bin/sh\necho \"$1\" > '{}'\nsleep 60\n", ready.display()),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_talix"));
    cmd.current_dir(c.root())
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", c.root())
        .env("TALIX_TALOSCTL", c.root().join("bin/talosctl"))
        .env("TALIX_AGE_KEY_FILE", c.root().join("key.txt"))
        .env("TALIX_PRIVATE_TMP", base)
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .args(["secrets", "edit", P])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists()
        || std::fs::read_to_string(&ready)
            .unwrap_or_default()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "the editor never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let scratch = PathBuf::from(std::fs::read_to_string(&ready).unwrap().trim());
    assert!(scratch.starts_with(base), "{}", scratch.display());
    assert!(scratch.exists());
    child
}

#[test]
fn a_signalled_edit_removes_the_plaintext_at_once() {
    let c = Cluster::new();
    for (sig, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let base = private_base();
        let mut child = edit_in_progress(&c, base.path());
        assert_eq!(entries(base.path()).len(), 1);
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(sig), "{name}: {status:?}");
        assert_eq!(entries(base.path()), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn a_killed_edit_is_swept_by_the_next_run() {
    let c = Cluster::new();
    let base = private_base();
    let mut child = edit_in_progress(&c, base.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let left = entries(base.path());
    assert_eq!(left.len(), 1, "SIGKILL cannot be caught: {left:?}");
    assert!(left[0].starts_with(&format!("talix-private-{}-", child.id())));
    // A live process's directory is not touched by the sweep.
    let live = base
        .path()
        .join(format!("talix-private-{}-Live01", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    let out = c
        .talix()
        .env("TALIX_PRIVATE_TMP", base.path())
        .args(["secrets", "verify", P])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left by an interrupted talix run"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        entries(base.path()),
        vec![live.file_name().unwrap().to_string_lossy().into_owned()]
    );
}
