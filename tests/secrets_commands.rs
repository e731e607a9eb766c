//! The library side of `talix secrets init|show|rekey|edit|verify`, driven with real keys, a
//! fake talosctl and shell-script editors.

mod secrets_common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use secrets_common::*;
use talix::secrets::{
    BundleSource, EditOutcome, InitOptions, SecretBytes, SecretsCommands, bundle_hash,
    generate_bundle_with_talosctl,
};

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    recipient: String,
    secrets: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(dir.path(), "key.txt");
    let secrets = dir.path().join("homelab.secrets.yaml.age");
    Setup {
        dir,
        key,
        recipient,
        secrets,
    }
}

fn init_plain(s: &Setup) {
    SecretsCommands::init(
        &s.secrets,
        &recipients(&[&s.recipient]),
        BundleSource::Plaintext(sample()),
        InitOptions::default(),
        None,
    )
    .unwrap();
}

#[test]
fn generate_reads_stdout_from_talosctl_1_12() {
    let dir = tempfile::tempdir().unwrap();
    let talosctl = fake_talosctl(dir.path(), false);
    let bundle = generate_bundle_with_talosctl(&talosctl, "v1.11", "v1.12.0").unwrap();
    assert_eq!(bundle.expose_secret(), SAMPLE_BUNDLE.as_bytes());
    let log = fs_err::read_to_string(dir.path().join("talosctl.log")).unwrap();
    assert_eq!(log.trim(), "gen secrets --talos-version v1.11 -o -");
}

#[test]
fn generate_uses_a_pipe_before_talosctl_1_12() {
    let dir = tempfile::tempdir().unwrap();
    let talosctl = fake_talosctl(dir.path(), true);
    let bundle = generate_bundle_with_talosctl(&talosctl, "v1.10", "v1.11.6").unwrap();
    assert_eq!(bundle.expose_secret(), SAMPLE_BUNDLE.as_bytes());
    let log = fs_err::read_to_string(dir.path().join("talosctl.log")).unwrap();
    let args: Vec<&str> = log.split_whitespace().collect();
    assert_eq!(&args[..4], &["gen", "secrets", "--talos-version", "v1.10"]);
    assert_eq!(args[4], "-o");
    assert_eq!(args[6], "--force");
    // An anonymous pipe handed over as /dev/fd/N: no name on any file system.
    assert!(args[5].starts_with("/dev/fd/"), "{}", args[5]);
}

#[test]
fn generate_carries_talosctl_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let talosctl = fake_talosctl(dir.path(), true);
    for version in ["v1.13.0", "v1.11.0"] {
        let err = generate_bundle_with_talosctl(&talosctl, "latest", version)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "`{} gen secrets` failed (exit status: 1):\n\
                 invalid talos-version: error parsing version \"latest\"",
                talosctl.display()
            )
        );
    }
}

#[test]
fn generate_rejects_an_invalid_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let talosctl = script(
        &dir.path().join("talosctl"),
        "printf 'cluster:\\n    secret: x\\n'\n",
    );
    let err = generate_bundle_with_talosctl(&talosctl, "v1.11", "v1.12.1")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "bundle from `talosctl gen secrets`: invalid Talos secrets bundle: cluster.id is required; \
         secrets is required; trustdinfo is required; certs is required"
    );
}

#[test]
fn init_with_talosctl_then_show_and_verify() {
    let s = setup();
    let talosctl = fake_talosctl(s.dir.path(), true);
    let hash = SecretsCommands::init(
        &s.secrets,
        &recipients(&[&s.recipient]),
        BundleSource::Talosctl {
            program: talosctl,
            contract: "v1.11".into(),
            talosctl_version: "v1.11.6".into(),
        },
        InitOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(hash, bundle_hash(&sample()));
    let ids = identities(&s.key);
    assert_eq!(SecretsCommands::show(&s.secrets, &ids).unwrap(), sample());
    assert_eq!(SecretsCommands::verify(&s.secrets, &ids).unwrap(), hash);
    // The age CLI reads it too.
    let plain = run_ok(
        std::process::Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&s.key)
            .arg(&s.secrets),
    );
    assert_eq!(plain, SAMPLE_BUNDLE.as_bytes());
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let s = setup();
    init_plain(&s);
    let before = fs_err::read(&s.secrets).unwrap();
    let err = SecretsCommands::init(
        &s.secrets,
        &recipients(&[&s.recipient]),
        BundleSource::Plaintext(sample()),
        InitOptions::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "{}: already exists; refusing to overwrite the cluster secrets\n\
             hint: pass --force to replace it (every config derived from it changes)",
            s.secrets.display()
        )
    );
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);
}

#[test]
fn init_force_guards_the_bootstrapped_bundle() {
    let s = setup();
    init_plain(&s);
    let before = fs_err::read(&s.secrets).unwrap();
    let ids = identities(&s.key);
    let rec = recipients(&[&s.recipient]);
    let bootstrapped = bundle_hash(&sample());
    let other_bundle = SecretBytes::new(
        SAMPLE_BUNDLE
            .replace("inn7ol.u4ehnti8qyls9ymo", "abcdef.0123456789abcdef")
            .into_bytes(),
    );
    let options = InitOptions {
        force: true,
        bootstrapped_with: Some(bootstrapped),
        i_know_this_breaks_the_cluster: false,
    };
    let err = SecretsCommands::init(
        &s.secrets,
        &rec,
        BundleSource::Plaintext(other_bundle.clone()),
        options,
        Some(&ids),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "{}: refusing to replace the secrets bundle the cluster was bootstrapped with (bundle {})\n\
             hint: a new bundle means new CAs and a new etcd encryption key; the running cluster \
             rejects configs made from it\n\
             hint: only to rebuild the cluster from scratch, pass --i-know-this-breaks-the-cluster",
            s.secrets.display(),
            bootstrapped.short()
        )
    );
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);

    // Without identities the current bundle cannot be checked: refused too.
    assert!(
        SecretsCommands::init(
            &s.secrets,
            &rec,
            BundleSource::Plaintext(other_bundle.clone()),
            options,
            None
        )
        .is_err()
    );
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);

    // With the override it goes through.
    let hash = SecretsCommands::init(
        &s.secrets,
        &rec,
        BundleSource::Plaintext(other_bundle.clone()),
        InitOptions {
            i_know_this_breaks_the_cluster: true,
            ..options
        },
        Some(&ids),
    )
    .unwrap();
    assert_eq!(hash, bundle_hash(&other_bundle));

    // Once the file no longer holds the bootstrapped bundle, --force alone replaces it.
    let hash = SecretsCommands::init(
        &s.secrets,
        &rec,
        BundleSource::Plaintext(sample()),
        options,
        Some(&ids),
    )
    .unwrap();
    assert_eq!(hash, bootstrapped);
}

#[test]
fn init_rejects_an_invalid_import() {
    let s = setup();
    let broken = SecretBytes::new(
        SAMPLE_BUNDLE
            .replace("    bootstraptoken: inn7ol.u4ehnti8qyls9ymo\n", "")
            .into_bytes(),
    );
    let err = SecretsCommands::init(
        &s.secrets,
        &recipients(&[&s.recipient]),
        BundleSource::Plaintext(broken),
        InitOptions::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "imported bundle: invalid Talos secrets bundle: secrets.bootstraptoken is required"
    );
    assert!(!s.secrets.exists());
}

#[test]
fn rekey_changes_ciphertext_and_keeps_plaintext_hash() {
    let s = setup();
    init_plain(&s);
    let before = fs_err::read(&s.secrets).unwrap();
    let (new_key, new_recipient) = age_keygen(s.dir.path(), "new.txt");
    // Re-encrypting to a key the operator does not hold locks them out: refused by default
    // (issue 8, defect 5) and the file is left as it was.
    let err = SecretsCommands::rekey(
        &s.secrets,
        &identities(&s.key),
        &recipients(&[&new_recipient]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("none of your identities can decrypt"), "{err}");
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);
    let hash = SecretsCommands::rekey_checked(
        &s.secrets,
        &identities(&s.key),
        &recipients(&[&new_recipient]),
        true,
    )
    .unwrap();
    assert_eq!(hash, bundle_hash(&sample()));
    let after = fs_err::read(&s.secrets).unwrap();
    assert_ne!(before, after);
    // Only the new recipient can read it now.
    assert_eq!(
        SecretsCommands::verify(&s.secrets, &identities(&new_key)).unwrap(),
        hash
    );
    let err = SecretsCommands::show(&s.secrets, &identities(&s.key)).unwrap_err();
    assert!(err.to_string().contains("no matching identity"), "{err}");
}

/// An editor script that records the path and mode it was given, then runs `action` on it.
fn editor(s: &Setup, action: &str) -> (String, PathBuf) {
    let record = s.dir.path().join("editor.record");
    let path = script(
        &s.dir.path().join("editor.sh"),
        &format!(
            "echo \"$1\" > '{rec}'\nstat -c %a \"$1\" >> '{rec}'\n\
             stat -f -c %T \"$1\" >> '{rec}'\n{action}\n",
            rec = record.display()
        ),
    );
    (path.display().to_string(), record)
}

/// (scratch path, its mode, its file system type) as the editor saw them.
fn recorded(record: &Path) -> (PathBuf, String, String) {
    let text = fs_err::read_to_string(record).unwrap();
    let mut lines = text.lines();
    (
        PathBuf::from(lines.next().unwrap()),
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

#[test]
fn edit_valid_change_is_reencrypted_and_scratch_removed() {
    let s = setup();
    init_plain(&s);
    let ids = identities(&s.key);
    let rec = recipients(&[&s.recipient]);
    let (ed, record) = editor(
        &s,
        "sed -i 's/inn7ol.u4ehnti8qyls9ymo/abcdef.0123456789abcdef/' \"$1\"",
    );
    let outcome = SecretsCommands::edit(&s.secrets, &ids, &rec, &ed).unwrap();
    let (scratch, mode, fs_type) = recorded(&record);
    assert_eq!(mode, "600");
    assert_eq!(fs_type, "tmpfs");
    assert!(!scratch.exists());
    assert!(!scratch.parent().unwrap().exists());
    let shown = SecretsCommands::show(&s.secrets, &ids).unwrap();
    let text = String::from_utf8(shown.expose_secret().to_vec()).unwrap();
    assert!(text.contains("bootstraptoken: abcdef.0123456789abcdef"));
    assert_eq!(
        outcome,
        EditOutcome::Changed {
            before: bundle_hash(&sample()),
            after: bundle_hash(&shown)
        }
    );
}

#[test]
fn edit_without_change_does_not_rewrite() {
    let s = setup();
    init_plain(&s);
    let before = fs_err::read(&s.secrets).unwrap();
    let outcome = SecretsCommands::edit(
        &s.secrets,
        &identities(&s.key),
        &recipients(&[&s.recipient]),
        "true",
    )
    .unwrap();
    assert_eq!(outcome, EditOutcome::Unchanged(bundle_hash(&sample())));
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);
}

#[test]
fn edit_invalid_names_the_field_and_leaves_file_untouched() {
    let s = setup();
    init_plain(&s);
    let before = fs_err::read(&s.secrets).unwrap();
    let (ed, record) = editor(&s, "sed -i '/^    id: /d' \"$1\"");
    let err = SecretsCommands::edit(
        &s.secrets,
        &identities(&s.key),
        &recipients(&[&s.recipient]),
        &ed,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "{} is unchanged: the edited bundle was rejected: edited bundle: invalid Talos secrets \
             bundle: cluster.id is required",
            s.secrets.display()
        )
    );
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);
    let (scratch, _, _) = recorded(&record);
    assert!(!scratch.parent().unwrap().exists());
}

#[test]
fn edit_with_failing_editor_leaves_file_untouched() {
    let s = setup();
    init_plain(&s);
    let before = fs_err::read(&s.secrets).unwrap();
    let (ed, record) = editor(&s, "echo garbage > \"$1\"; exit 3");
    let err = SecretsCommands::edit(
        &s.secrets,
        &identities(&s.key),
        &recipients(&[&s.recipient]),
        &ed,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "editor `{ed}` failed (exit status: 3); {} is unchanged",
            s.secrets.display()
        )
    );
    assert_eq!(fs_err::read(&s.secrets).unwrap(), before);
    let (scratch, _, _) = recorded(&record);
    assert!(!scratch.exists());
}

#[test]
fn verify_reports_an_invalid_bundle_inside_valid_encryption() {
    let s = setup();
    let broken = SecretBytes::new(SAMPLE_BUNDLE.replace("certs:", "certz:").into_bytes());
    talix::secrets::write_encrypted_atomically(&s.secrets, &broken, &recipients(&[&s.recipient]))
        .unwrap();
    let err = SecretsCommands::verify(&s.secrets, &identities(&s.key))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: invalid Talos secrets bundle: certs is required",
            s.secrets.display()
        )
    );
    // show still returns it, so the user can repair it.
    assert_eq!(
        SecretsCommands::show(&s.secrets, &identities(&s.key)).unwrap(),
        broken
    );
}

#[test]
fn fifo_is_not_a_regular_file_check_in_fake_works() {
    // The fake refuses a regular file when it requires a FIFO: guards the FIFO test above.
    let dir = tempfile::tempdir().unwrap();
    let talosctl = fake_talosctl(dir.path(), true);
    let out = std::process::Command::new(&talosctl)
        .args(["gen", "secrets", "--talos-version", "v1.10", "-o"])
        .arg(dir.path().join("regular.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a FIFO"));
    let meta = fs_err::metadata(dir.path().join("talosctl")).unwrap();
    assert!(!meta.file_type().is_fifo());
}

/// Defect 13: the FIFO reader must see EOF only once talosctl is done, whatever its writes look
/// like. This talosctl opens and closes the FIFO once without writing (a writer that truncates
/// first), then writes the bundle in two pieces through two more opens. Before the fix the
/// reader took the first close as the end of the bundle ("not valid YAML (line 1, column 1)")
/// and the later opens had no reader; `timeout` bounds them so the old behaviour fails instead
/// of hanging.
#[test]
fn fifo_reader_waits_for_talosctl_to_exit_not_for_the_first_close() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.yaml");
    fs_err::write(&sample, SAMPLE_BUNDLE).unwrap();
    let half = SAMPLE_BUNDLE.len() / 2;
    fs_err::write(dir.path().join("a.yaml"), &SAMPLE_BUNDLE[..half]).unwrap();
    fs_err::write(dir.path().join("b.yaml"), &SAMPLE_BUNDLE[half..]).unwrap();
    let talosctl = script(
        &dir.path().join("talosctl"),
        &format!(
            r#"out=$6
[ -p "$out" ] || {{ echo "not a FIFO: $out" >&2; exit 1; }}
: > "$out"
timeout 10 sh -c 'cat "$1" > "$3"; cat "$2" >> "$3"' sh '{a}' '{b}' "$out" || true
"#,
            a = dir.path().join("a.yaml").display(),
            b = dir.path().join("b.yaml").display(),
        ),
    );
    let bundle = generate_bundle_with_talosctl(&talosctl, "v1.11", "v1.11.6").unwrap();
    assert_eq!(bundle.expose_secret(), SAMPLE_BUNDLE.as_bytes());
}

/// A talosctl that exits 0 without writing anything is reported as such, not as a YAML error.
#[test]
fn fifo_talosctl_that_writes_nothing_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let talosctl = script(&dir.path().join("talosctl"), "exit 0\n");
    let err = generate_bundle_with_talosctl(&talosctl, "v1.11", "v1.11.6")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "`{} gen secrets` exited successfully but wrote no bundle",
            talosctl.display()
        )
    );
}
