//! Shared helpers for the `secrets_*` integration tests: keys made by the real `age-keygen` and
//! `ssh-keygen`, the upstream sample bundle, and a fake `talosctl` that only knows `gen secrets`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use talix::secrets::{Identities, IdentitySource, Recipients, SecretBytes};

/// The upstream test bundle (`talosctl gen secrets` format).
pub const SAMPLE_BUNDLE: &str = include_str!("../../src/secrets/testdata/secrets.yaml");

pub fn sample() -> SecretBytes {
    SecretBytes::new(SAMPLE_BUNDLE.as_bytes().to_vec())
}

/// `age-keygen -o DIR/NAME`; returns (key file, public recipient).
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen is installed (apt-get install age)");
    assert!(status.status.success(), "age-keygen failed");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// `ssh-keygen -t KIND -N '' -f DIR/NAME`; returns (private key file, public key line).
pub fn ssh_keygen(dir: &Path, name: &str, kind: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "test@talix", "-f"])
        .arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let out = cmd
        .output()
        .expect("ssh-keygen is installed (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = fs_err::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

pub fn recipients(keys: &[&str]) -> Recipients {
    let list: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    Recipients::from_sources(&list, "test.yaml: secrets.recipients", None).unwrap()
}

pub fn identities(key_file: &Path) -> Identities {
    Identities::from_file(key_file, IdentitySource::Explicit(key_file.to_path_buf())).unwrap()
}

/// Run a command, panicking with its stderr when it fails; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Write an executable shell script.
pub fn script(path: &Path, body: &str) -> PathBuf {
    fs_err::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// A fake `talosctl` knowing only `gen secrets` with `--talos-version`, `-o` and `--force`.
/// It logs its arguments to `<dir>/talosctl.log`. With `require_fifo`, it refuses to write
/// anything but a FIFO (proving the plaintext never lands in a regular file); an existing output
/// without `--force` fails as upstream does; an unparsable contract fails as upstream does.
pub fn fake_talosctl(dir: &Path, require_fifo: bool) -> PathBuf {
    let sample = dir.join("sample-bundle.yaml");
    fs_err::write(&sample, SAMPLE_BUNDLE).unwrap();
    let log = dir.join("talosctl.log");
    let fifo_check = if require_fifo {
        "[ -p \"$out\" ] || { echo \"fake talosctl: $out is not a FIFO\" >&2; exit 1; }"
    } else {
        ""
    };
    script(
        &dir.join("talosctl"),
        &format!(
            r#"echo "$@" >> '{log}'
[ "$1 $2" = "gen secrets" ] || {{ echo "unknown command \"$1\" for \"talosctl\"" >&2; exit 1; }}
shift 2
out=secrets.yaml; force=0; ver=""
while [ $# -gt 0 ]; do
  case "$1" in
    --talos-version) ver=$2; shift 2 ;;
    -o|--output-file) out=$2; shift 2 ;;
    -f|--force) force=1; shift ;;
    *) echo "unknown flag: $1" >&2; exit 1 ;;
  esac
done
case "$ver" in
  v1.[0-9]*) ;;
  *) echo "invalid talos-version: error parsing version \"$ver\"" >&2; exit 1 ;;
esac
if [ "$out" = "-" ]; then cat '{sample}'; exit 0; fi
{fifo_check}
if [ -e "$out" ] && [ $force = 0 ]; then
  echo "file \"$out\" already exists, use --force to overwrite" >&2; exit 1
fi
cat '{sample}' > "$out"
"#,
            log = log.display(),
            sample = sample.display(),
        ),
    )
}
