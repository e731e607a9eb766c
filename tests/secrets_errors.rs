//! Every bad input to decryption gives its own message, word for word, and a command that fails
//! on it leaves the encrypted file exactly as it was.

mod secrets_common;

use std::path::Path;

use secrets_common::*;
use talix::secrets::{SecretsCommands, decrypt, decrypt_file, encrypt_armored};

const HINT_RESTORE: &str = "hint: restore the file from version control (`git checkout -- FILE`)";

struct Setup {
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
    recipient: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    Setup {
        dir,
        key,
        recipient,
    }
}

/// Store `bytes` as the secrets file, run every reading command on it, check each fails with
/// `expected` and that the file is byte-for-byte unchanged afterwards.
fn assert_all_commands_fail(s: &Setup, bytes: &[u8], expected: &str) {
    let path = s.dir.path().join("secrets.yaml.age");
    fs_err::write(&path, bytes).unwrap();
    let ids = identities(&s.key);
    let label = path.display().to_string();
    let expected = expected.replace("FILEPATH", &label);
    assert_eq!(decrypt_file(&path, &ids).unwrap_err().to_string(), expected);
    assert_eq!(
        SecretsCommands::show(&path, &ids).unwrap_err().to_string(),
        expected
    );
    assert_eq!(
        SecretsCommands::verify(&path, &ids)
            .unwrap_err()
            .to_string(),
        expected
    );
    let rec = recipients(&[&s.recipient]);
    assert_eq!(
        SecretsCommands::rekey(&path, &ids, &rec)
            .unwrap_err()
            .to_string(),
        expected
    );
    assert_eq!(
        SecretsCommands::edit(&path, &ids, &rec, "true")
            .unwrap_err()
            .to_string(),
        expected
    );
    assert_eq!(fs_err::read(&path).unwrap(), bytes, "file was modified");
    assert_only_file(s.dir.path(), "secrets.yaml.age");
}

/// No temp files are left beside the secrets file.
fn assert_only_file(dir: &Path, keep: &str) {
    let stray: Vec<String> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(keep) && n != keep)
        .collect();
    assert!(stray.is_empty(), "stray files: {stray:?}");
}

#[test]
fn wrong_key() {
    let s = setup();
    let (_k, other) = age_keygen(s.dir.path(), "other.txt");
    let ct = encrypt_armored(&sample(), &recipients(&[&other])).unwrap();
    let key = s.key.display();
    assert_all_commands_fail(
        &s,
        &ct,
        &format!(
            "FILEPATH: no matching identity: none of the 1 age identities from --identity {key} \
             can decrypt it\n\
             hint: the file is encrypted to other keys; a current recipient must add your public \
             key to the recipients and run `talix secrets rekey`"
        ),
    );
}

#[test]
fn tampered_payload_armored_and_binary() {
    let s = setup();
    let expected = format!(
        "FILEPATH: integrity check failed: the encrypted data was modified or corrupted after \
         encryption\n{HINT_RESTORE}"
    );
    // Armored: change one base64 character in the last full body line (payload).
    let ct = encrypt_armored(&sample(), &recipients(&[&s.recipient])).unwrap();
    let text = String::from_utf8(ct).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let target = lines.len() - 3;
    let c = lines[target].remove(10);
    lines[target].insert(10, if c == 'A' { 'B' } else { 'A' });
    let tampered = lines.join("\n") + "\n";
    assert_all_commands_fail(&s, tampered.as_bytes(), &expected);

    // Binary, from the age CLI: flip the last byte (the payload's tag).
    let plain = s.dir.path().join("plain");
    fs_err::write(&plain, SAMPLE_BUNDLE).unwrap();
    let mut bin = run_ok(
        std::process::Command::new("age")
            .arg("-r")
            .arg(&s.recipient)
            .arg(&plain),
    );
    *bin.last_mut().unwrap() ^= 0x01;
    assert_all_commands_fail(&s, &bin, &expected);
}

#[test]
fn tampered_header_mac() {
    let s = setup();
    let plain = s.dir.path().join("plain");
    fs_err::write(&plain, SAMPLE_BUNDLE).unwrap();
    let mut bin = run_ok(
        std::process::Command::new("age")
            .arg("-r")
            .arg(&s.recipient)
            .arg(&plain),
    );
    let mac_at = bin.windows(4).position(|w| w == b"\n---").unwrap() + 6;
    bin[mac_at] = if bin[mac_at] == b'A' { b'B' } else { b'A' };
    assert_all_commands_fail(
        &s,
        &bin,
        &format!(
            "FILEPATH: integrity check failed: the encrypted data was modified or corrupted \
             after encryption\n{HINT_RESTORE}"
        ),
    );
}

#[test]
fn truncated_armored_and_binary_header() {
    let s = setup();
    let expected = format!(
        "FILEPATH: truncated age file: it ends before the encrypted data is complete\n{HINT_RESTORE}"
    );
    let ct = encrypt_armored(&sample(), &recipients(&[&s.recipient])).unwrap();
    assert_all_commands_fail(&s, &ct[..ct.len() / 2], &expected);

    let plain = s.dir.path().join("plain");
    fs_err::write(&plain, SAMPLE_BUNDLE).unwrap();
    let bin = run_ok(
        std::process::Command::new("age")
            .arg("-r")
            .arg(&s.recipient)
            .arg(&plain),
    );
    let header_end = bin.windows(4).position(|w| w == b"\n---").unwrap();
    assert_all_commands_fail(&s, &bin[..header_end - 5], &expected);
    // Cut right after the header: the nonce and payload are missing.
    let payload_start = header_end
        + bin[header_end + 1..]
            .iter()
            .position(|b| *b == b'\n')
            .unwrap()
        + 2;
    assert_all_commands_fail(&s, &bin[..payload_start + 4], &expected);
}

#[test]
fn not_an_age_file() {
    let s = setup();
    let expected = "FILEPATH: not an age-encrypted file (no `age-encryption.org/v1` header and no \
         `-----BEGIN AGE ENCRYPTED FILE-----` armor)\n\
         hint: a plaintext bundle must be imported (`talix secrets init --from FILE`), not stored as is";
    assert_all_commands_fail(&s, SAMPLE_BUNDLE.as_bytes(), expected);
    assert_all_commands_fail(&s, b"", expected);
}

#[test]
fn messages_never_contain_plaintext() {
    let s = setup();
    let (_k, other) = age_keygen(s.dir.path(), "other.txt");
    let ct = encrypt_armored(&sample(), &recipients(&[&other])).unwrap();
    let err = decrypt(&ct, &identities(&s.key), "f").unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("0raF93qnkMvF"), "{text}");
        assert!(!text.contains("AGE-SECRET-KEY"), "{text}");
    }
    let not_age = decrypt(SAMPLE_BUNDLE.as_bytes(), &identities(&s.key), "f").unwrap_err();
    assert!(!format!("{not_age} {not_age:?}").contains("0raF93qnkMvF"));
}

#[test]
fn passphrase_file_is_refused_clearly() {
    let s = setup();
    // An scrypt header needs no real passphrase to be recognised.
    let ct = b"age-encryption.org/v1\n-> scrypt c2FsdHNhbHRzYWx0c2FsdA 10\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n0123456789abcdef0123456789abcdef";
    let err = decrypt(ct, &identities(&s.key), "p.age")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("p.age: a passphrase-encrypted (scrypt) age file is not supported"),
        "{err}"
    );
}
