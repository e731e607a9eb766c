//! Interoperability with the real `age` CLI (Debian `age` 1.1.1) in both directions, for X25519
//! keys from `age-keygen` and SSH keys from `ssh-keygen`.

mod secrets_common;

use std::process::Command;

use secrets_common::*;
use talix::secrets::{decrypt, decrypt_file, encrypt_armored, write_encrypted_atomically};

#[test]
fn talix_file_decrypts_with_age_cli_x25519() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let (_other_key, other) = age_keygen(dir.path(), "other.txt");
    let file = dir.path().join("secrets.yaml.age");
    write_encrypted_atomically(&file, &sample(), &recipients(&[&other, &recipient])).unwrap();
    let text = fs_err::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("-----END AGE ENCRYPTED FILE-----")
    );
    let plain = run_ok(Command::new("age").arg("-d").arg("-i").arg(&key).arg(&file));
    assert_eq!(plain, SAMPLE_BUNDLE.as_bytes());
}

#[test]
fn age_cli_files_decrypt_with_talix_armored_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let plain_path = dir.path().join("plain.yaml");
    fs_err::write(&plain_path, SAMPLE_BUNDLE).unwrap();
    let ids = identities(&key);
    for armor in [true, false] {
        let out = dir.path().join(if armor { "a.age" } else { "b.age" });
        let mut cmd = Command::new("age");
        cmd.arg("-r").arg(&recipient);
        if armor {
            cmd.arg("-a");
        }
        run_ok(cmd.arg("-o").arg(&out).arg(&plain_path));
        let bytes = fs_err::read(&out).unwrap();
        assert_eq!(bytes.starts_with(b"-----BEGIN AGE"), armor);
        let plain = decrypt_file(&out, &ids).unwrap();
        assert_eq!(plain.expose_secret(), SAMPLE_BUNDLE.as_bytes());
    }
}

#[test]
fn ssh_ed25519_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = ssh_keygen(dir.path(), "id_ed25519", "ed25519");
    assert!(public.starts_with("ssh-ed25519 AAAA"));
    let ids = identities(&private);

    // talix → age CLI
    let file = dir.path().join("t.age");
    write_encrypted_atomically(&file, &sample(), &recipients(&[&public])).unwrap();
    let plain = run_ok(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&private)
            .arg(&file),
    );
    assert_eq!(plain, SAMPLE_BUNDLE.as_bytes());

    // age CLI → talix (armored and binary)
    let plain_path = dir.path().join("plain.yaml");
    fs_err::write(&plain_path, SAMPLE_BUNDLE).unwrap();
    for armor in [true, false] {
        let out = dir.path().join(format!("c{armor}.age"));
        let mut cmd = Command::new("age");
        cmd.arg("-r").arg(&public);
        if armor {
            cmd.arg("-a");
        }
        run_ok(cmd.arg("-o").arg(&out).arg(&plain_path));
        let plain = decrypt_file(&out, &ids).unwrap();
        assert_eq!(plain.expose_secret(), SAMPLE_BUNDLE.as_bytes());
    }
}

#[test]
fn ssh_rsa_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = ssh_keygen(dir.path(), "id_rsa", "rsa");
    let ids = identities(&private);
    let ciphertext = encrypt_armored(&sample(), &recipients(&[&public])).unwrap();
    let file = dir.path().join("r.age");
    fs_err::write(&file, &ciphertext).unwrap();
    let plain = run_ok(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&private)
            .arg(&file),
    );
    assert_eq!(plain, SAMPLE_BUNDLE.as_bytes());
    assert_eq!(
        decrypt(&ciphertext, &ids, "r.age").unwrap().expose_secret(),
        SAMPLE_BUNDLE.as_bytes()
    );
}

#[test]
fn key_file_with_several_keys_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, r1) = age_keygen(dir.path(), "k1");
    let (k2, r2) = age_keygen(dir.path(), "k2");
    let both = dir.path().join("both.txt");
    let text = format!(
        "{}\n\n{}",
        fs_err::read_to_string(&k1).unwrap(),
        fs_err::read_to_string(&k2).unwrap()
    );
    fs_err::write(&both, text).unwrap();
    let ids = identities(&both);
    assert_eq!(ids.len(), 2);
    for r in [&r1, &r2] {
        let ct = encrypt_armored(&sample(), &recipients(&[r])).unwrap();
        assert_eq!(
            decrypt(&ct, &ids, "x").unwrap().expose_secret(),
            SAMPLE_BUNDLE.as_bytes()
        );
    }
}

#[test]
fn passphrase_protected_ssh_key_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id_locked");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "correct horse", "-f"])
            .arg(&path),
    );
    let err = talix::secrets::Identities::from_file(
        &path,
        talix::secrets::IdentitySource::Explicit(path.clone()),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "--identity {}: a passphrase-protected OpenSSH key is not supported\n\
             hint: use an unencrypted key file (e.g. a dedicated `ssh-keygen -t ed25519 -N ''` key) \
             or an age key",
            path.display()
        )
    );
}

#[test]
fn talix_binary_output_decrypts_with_age_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let ct = talix::secrets::encrypt_binary(&sample(), &recipients(&[&recipient])).unwrap();
    let file = dir.path().join("obj.age");
    fs_err::write(&file, ct).unwrap();
    let plain = run_ok(Command::new("age").arg("-d").arg("-i").arg(&key).arg(&file));
    assert_eq!(plain, SAMPLE_BUNDLE.as_bytes());
}
