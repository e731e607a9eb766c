//! `talix secrets ...` as users run it, interop with the real `age` CLI, every bad input with its
//! exact message (and the encrypted file untouched), and a scan proving plaintext secrets never
//! land on disk outside age files and the 0600 files the operator asked for.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Std;

use common::{Cluster, base64_decode, base64_encode, contains, secret_needles};

const P: &str = "profiles/single.yaml";

fn secrets_file(c: &Cluster) -> PathBuf {
    c.root().join("profiles/single.secrets.age")
}

fn age(args: &[&str]) -> std::process::Output {
    Std::new("age")
        .args(args)
        .output()
        .expect("age CLI installed")
}

#[test]
fn init_writes_an_armored_file_the_age_cli_decrypts() {
    let c = Cluster::new();
    let text = std::fs::read_to_string(secrets_file(&c)).unwrap();
    assert!(
        text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
        "ASCII-armored for git"
    );
    let key = c.root().join("key.txt");
    let out = age(&[
        "-d",
        "-i",
        key.to_str().unwrap(),
        secrets_file(&c).to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = String::from_utf8(out.stdout).unwrap();
    assert!(
        plain.contains("bootstraptoken:") && plain.contains("certs:"),
        "a Talos secrets bundle"
    );
    // `secrets show` prints the same plaintext; `verify` prints the hash the lock file records.
    let shown = c
        .talix()
        .args(["secrets", "show", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(String::from_utf8(shown).unwrap(), plain);
    let lock = std::fs::read_to_string(c.root().join("profiles/single.lock")).unwrap();
    let verify = c
        .talix()
        .args(["secrets", "verify", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let hash = String::from_utf8(verify)
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(lock.contains(&format!("bundle_hash: {hash}")), "{lock}");
    assert!(
        !lock.contains("bootstraptoken") && !lock.contains(plain.lines().nth(2).unwrap()),
        "no secrets in the lock file"
    );
}

#[test]
fn a_file_encrypted_by_the_age_cli_is_read_by_talix_armored_and_binary() {
    let c = Cluster::new();
    let plain = c
        .talix()
        .args(["secrets", "show", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plain_path = c.root().join("plain.yaml");
    std::fs::write(&plain_path, &plain).unwrap();
    for armor in [true, false] {
        let mut args = vec![
            "-r",
            c.recipient.as_str(),
            "-o",
            secrets_file(&c).to_str().unwrap().to_string().leak(),
        ];
        if armor {
            args.insert(0, "-a");
        }
        args.push(plain_path.to_str().unwrap());
        let out = age(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.talix()
            .args(["secrets", "verify", P])
            .assert()
            .success()
            .stdout(predicates::str::contains("valid secrets bundle"));
    }
}

#[test]
fn refuses_to_overwrite_and_to_replace_the_bootstrapped_bundle() {
    let c = Cluster::new();
    let before = std::fs::read(secrets_file(&c)).unwrap();
    c.talix().args(["secrets", "init", P]).assert().code(1).stderr(format!(
        "error: {}: already exists; refusing to overwrite the cluster secrets\nhint: pass --force to replace it (every config derived from it changes)\n",
        secrets_file(&c).display()
    ));
    assert_eq!(std::fs::read(secrets_file(&c)).unwrap(), before);

    // The lock file says the cluster was bootstrapped with this bundle.
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
            "{lock}bootstrap:\n  node: solo\n  at: 2026-11-25T00:00:00Z\n  secrets_hash: {hash}\n"
        ),
    )
    .unwrap();
    c.talix()
        .args(["secrets", "init", "--force", P])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "the cluster was bootstrapped with",
        ));
    assert_eq!(
        std::fs::read(secrets_file(&c)).unwrap(),
        before,
        "untouched"
    );
    c.talix()
        .args([
            "secrets",
            "init",
            "--force",
            "--i-know-this-breaks-the-cluster",
            P,
        ])
        .assert()
        .success();
    assert_ne!(
        std::fs::read(secrets_file(&c)).unwrap(),
        before,
        "replaced on explicit request"
    );
}

#[test]
fn a_missing_secrets_file_of_an_existing_cluster_is_an_error_never_a_regeneration() {
    let c = Cluster::new();
    let lock_path = c.root().join("profiles/single.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    std::fs::write(
        &lock_path,
        format!(
            "{lock}bootstrap:\n  node: solo\n  at: 2026-11-25T00:00:00Z\n  secrets_hash: {}\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    std::fs::remove_file(secrets_file(&c)).unwrap();
    for cmd in [&["plan", P][..], &["build", P], &["secrets", "init", P]] {
        c.talix()
            .args(cmd)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(format!(
                "error: {} is missing, but",
                secrets_file(&c).display()
            )))
            .stderr(predicates::str::contains(
                "hint: restore the secrets file from git or a backup",
            ));
    }
    assert!(!secrets_file(&c).exists());
}

/// Run `talix secrets verify` and expect exactly `stderr`, with the file untouched.
fn rejects(c: &Cluster, env: &[(&str, &str)], args: &[&str], stderr: String) {
    let before = std::fs::read(secrets_file(c)).unwrap();
    let mut cmd = c.talix();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).assert().code(1).stderr(stderr);
    assert_eq!(
        std::fs::read(secrets_file(c)).unwrap(),
        before,
        "the encrypted file is untouched"
    );
}

#[test]
fn bad_inputs_get_one_clear_message_each() {
    let c = Cluster::new();
    let f = secrets_file(&c);
    let shown = f.display().to_string();
    let original = std::fs::read(&f).unwrap();
    let restore = || std::fs::write(&f, &original).unwrap();

    // Wrong identity.
    let other = c.root().join("other.txt");
    assert!(
        Std::new("age-keygen")
            .arg("-o")
            .arg(&other)
            .output()
            .unwrap()
            .status
            .success()
    );
    rejects(
        &c,
        &[("TALIX_AGE_KEY_FILE", other.to_str().unwrap())],
        &["secrets", "verify", P],
        format!(
            "error: {shown}: no matching identity: none of the 1 age identities from $TALIX_AGE_KEY_FILE ({}) can decrypt it\nhint: the file is encrypted to other keys; a current recipient must add your public key to the recipients and run `talix secrets rekey`\n",
            other.display()
        ),
    );
    // No identity anywhere.
    let mut cmd = c.talix();
    cmd.env_remove("TALIX_AGE_KEY_FILE").args(["secrets", "verify", P]).assert().code(1).stderr(format!(
        "error: no age identity found to decrypt the secrets\nhint: looked in, in this order: --identity (not given), $TALIX_AGE_KEY_FILE (unset), $SOPS_AGE_KEY_FILE (unset), $SOPS_AGE_KEY (unset), {}/.config/sops/age/keys.txt (not found)\nhint: pass --identity FILE, or set SOPS_AGE_KEY_FILE to your age-keygen key file\n",
        c.root().display()
    ));
    // Tampered ciphertext (one bit of the payload flipped, armor kept valid).
    let text = String::from_utf8(original.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let body: String = lines[1..lines.len() - 1].concat();
    let mut raw = base64_decode(&body);
    let n = raw.len();
    raw[n - 5] ^= 1;
    let b64 = base64_encode(&raw);
    let rewrapped: Vec<String> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    std::fs::write(
        &f,
        format!(
            "{}\n{}\n{}\n",
            lines[0],
            rewrapped.join("\n"),
            lines[lines.len() - 1]
        ),
    )
    .unwrap();
    rejects(
        &c,
        &[],
        &["secrets", "verify", P],
        format!(
            "error: {shown}: integrity check failed: the encrypted data was modified or corrupted after encryption\nhint: restore the file from version control (`git checkout -- FILE`)\n"
        ),
    );
    // Truncated.
    std::fs::write(&f, &original[..300]).unwrap();
    rejects(
        &c,
        &[],
        &["secrets", "verify", P],
        format!(
            "error: {shown}: truncated age file: it ends before the encrypted data is complete\nhint: restore the file from version control (`git checkout -- FILE`)\n"
        ),
    );
    // Not age at all.
    std::fs::write(&f, "cluster:\n    id: plaintext\n").unwrap();
    rejects(
        &c,
        &[],
        &["secrets", "verify", P],
        format!(
            "error: {shown}: not an age-encrypted file (no `age-encryption.org/v1` header and no `-----BEGIN AGE ENCRYPTED FILE-----` armor)\nhint: a plaintext bundle must be imported (`talix secrets init --from FILE`), not stored as is\n"
        ),
    );
    restore();
    // Unsupported recipient type and an empty recipients list are profile errors (exit 2).
    c.edit(
        P,
        &format!("    - {}", c.recipient),
        "    - age1pq1qqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
    );
    c.talix()
        .args(["secrets", "rekey", P])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "secrets.recipients[0]: post-quantum (age1pq...) recipients are not supported",
        ));
    assert_eq!(std::fs::read(&f).unwrap(), original);
}

#[test]
fn edit_with_a_missing_field_leaves_the_file_untouched() {
    let c = Cluster::new();
    let before = std::fs::read(secrets_file(&c)).unwrap();
    // An "editor" that deletes the bootstrap token.
    let editor = c.write(
        "bin/break-it",
        "#!/bin/sh\nsed -i '/bootstraptoken:/d' \"$1\"\n",
    );
    make_executable(&editor);
    c.talix()
        .env("EDITOR", &editor)
        .env_remove("VISUAL")
        .args(["secrets", "edit", P])
        .assert()
        .code(1)
        .stderr(format!(
            "error: {} is unchanged: the edited bundle was rejected: edited bundle: invalid Talos secrets bundle: secrets.bootstraptoken is required\n",
            secrets_file(&c).display()
        ));
    assert_eq!(std::fs::read(secrets_file(&c)).unwrap(), before);
}

#[test]
fn no_plaintext_secret_reaches_the_disk() {
    let c = Cluster::new();
    let tmp = c.root().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    c.talix()
        .env("TMPDIR", &tmp)
        .args(["build", "profiles/homelab.yaml"])
        .assert()
        .success();
    c.talix()
        .env("TMPDIR", &tmp)
        .args(["plan", "profiles/homelab.yaml"])
        .assert()
        .success();
    let plain = c
        .talix()
        .args(["secrets", "show", "profiles/homelab.yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let needles = secret_needles(&String::from_utf8(plain).unwrap());
    assert!(needles.len() >= 10, "{} needles", needles.len());
    let mut offenders = Vec::new();
    for dir in [c.root().to_path_buf(), tmp.clone()] {
        for entry in walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
        {
            let bytes = std::fs::read(entry.path()).unwrap();
            if let Some(n) = needles.iter().find(|n| contains(&bytes, n.as_bytes())) {
                offenders.push(format!(
                    "{} contains {}...",
                    entry.path().display(),
                    &n[..8]
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "plaintext secrets on disk:\n{}",
        offenders.join("\n")
    );
    // And the store objects of secret steps are age files.
    for entry in walkdir::WalkDir::new(c.root().join("store/v1/objects"))
        .into_iter()
        .filter_map(Result::ok)
    {
        let p = entry.path();
        if p.parent().is_some_and(|d| d.ends_with("out"))
            && [
                "controlplane",
                "worker",
                "config",
                "talosconfig",
                "kubeconfig",
            ]
            .iter()
            .any(|n| p.ends_with(n))
        {
            assert!(
                std::fs::read(p)
                    .unwrap()
                    .starts_with(b"age-encryption.org/v1"),
                "{} is not age",
                p.display()
            );
        }
    }
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}
