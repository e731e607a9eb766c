//! Generating a fresh secrets bundle with `talosctl gen secrets` so that the plaintext never
//! lands in a regular file: read from stdout (`-o -`, talosctl v1.12+) or, for older talosctl,
//! from a FIFO in a [`PrivateDir`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secrecy::zeroize::Zeroizing;

use super::bundle::validate_bundle;
use super::error::SecretsError;
use super::private_dir::PrivateDir;
use super::secret_bytes::SecretBytes;

/// Largest stderr excerpt carried in an error.
const STDERR_LIMIT: usize = 4096;

/// Parse `v1.12.3`, `1.11.0-alpha.1`, `v1.13` into (major, minor).
pub fn parse_major_minor(version: &str) -> Result<(u64, u64), SecretsError> {
    let bad = || SecretsError::BadTalosctlVersion {
        version: version.chars().take(40).collect(),
    };
    let trimmed = version.trim().trim_start_matches('v');
    let mut parts = trimmed.split(['.', '-', '+']);
    let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok((major, minor))
}

/// Whether `talosctl gen secrets -o -` writes to stdout for this talosctl version. `-` means
/// stdout from v1.12.0-beta.0 on; in v1.12.0-alpha.0 … alpha.2 (and before v1.12) it is a file
/// named `-`, which would put the plaintext bundle on disk (upstream:
/// `cmd/talosctl/cmd/mgmt/gen/secrets.go`, `stdoutOutput` exists at v1.12.0-beta.0 and is
/// absent at v1.12.0-alpha.2).
pub fn writes_secrets_to_stdout(talosctl_version: &str) -> Result<bool, SecretsError> {
    let version = parse_major_minor(talosctl_version)?;
    if version != (1, 12) {
        return Ok(version > (1, 12));
    }
    // v1.12.x: only the pre-releases before beta.0 lack it.
    let bare = talosctl_version.trim().trim_start_matches('v');
    Ok(!bare.starts_with("1.12.0-alpha"))
}

/// Run `talosctl gen secrets --talos-version <contract>` and return the validated bundle.
///
/// `talosctl_version` is the version of the `talosctl` binary (as `talosctl version --client`
/// reports it): from v1.12 on the bundle is read from stdout (`-o -`); before that `-o` names a
/// FIFO in a [`PrivateDir`] (with `--force`, since the FIFO exists) read concurrently. A
/// failing talosctl yields [`SecretsError::TalosctlFailed`] with its stderr.
pub fn generate_bundle_with_talosctl(
    talosctl: &Path,
    contract: &str,
    talosctl_version: &str,
) -> Result<SecretBytes, SecretsError> {
    let bundle = if writes_secrets_to_stdout(talosctl_version)? {
        generate_to_stdout(talosctl, contract)?
    } else {
        generate_through_fifo(talosctl, contract)?
    };
    validate_bundle(&bundle, "bundle from `talosctl gen secrets`")?;
    Ok(bundle)
}

fn base_command(talosctl: &Path, contract: &str) -> Command {
    let mut cmd = Command::new(talosctl);
    cmd.args(["gen", "secrets", "--talos-version", contract]);
    cmd.stdin(Stdio::null());
    cmd
}

fn spawn_error(talosctl: &Path, e: std::io::Error) -> SecretsError {
    SecretsError::TalosctlSpawn {
        program: talosctl.to_path_buf(),
        detail: e.to_string(),
    }
}

fn failure(talosctl: &Path, status: std::process::ExitStatus, stderr: &[u8]) -> SecretsError {
    let text = String::from_utf8_lossy(stderr);
    let mut text = text.trim_end().to_string();
    if text.len() > STDERR_LIMIT {
        let mut cut = STDERR_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[… stderr truncated]");
    }
    if text.is_empty() {
        text = "(no stderr output)".into();
    }
    SecretsError::TalosctlFailed {
        program: talosctl.to_path_buf(),
        status: status.to_string(),
        stderr: text,
    }
}

fn generate_to_stdout(talosctl: &Path, contract: &str) -> Result<SecretBytes, SecretsError> {
    let output = base_command(talosctl, contract)
        .args(["-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| spawn_error(talosctl, e))?;
    let stdout = SecretBytes::new(output.stdout);
    if !output.status.success() {
        return Err(failure(talosctl, output.status, &output.stderr));
    }
    Ok(stdout)
}

fn generate_through_fifo(talosctl: &Path, contract: &str) -> Result<SecretBytes, SecretsError> {
    let private = PrivateDir::create()?;
    let fifo = private.make_fifo("secrets.yaml")?;
    let reader_path = fifo.clone();
    let reader = std::thread::Builder::new()
        .name("talix-gen-secrets-fifo".into())
        .spawn(move || -> std::io::Result<Zeroizing<Vec<u8>>> {
            // Blocks until a writer opens the FIFO (talosctl, or `release_reader` below).
            let mut file = std::fs::File::open(&reader_path)?;
            let mut data = Zeroizing::new(Vec::new());
            file.read_to_end(&mut data)?;
            Ok(data)
        })
        .map_err(|e| SecretsError::io("start FIFO reader", e))?;
    let output = base_command(talosctl, contract)
        .arg("-o")
        .arg(&fifo)
        .arg("--force")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    // Whatever happened, make sure the reader is not left blocked in open().
    release_reader(&fifo, &reader);
    let data = reader.join();
    let output = output.map_err(|e| spawn_error(talosctl, e))?;
    if !output.status.success() {
        return Err(failure(talosctl, output.status, &output.stderr));
    }
    match data {
        Ok(Ok(mut data)) => Ok(SecretBytes::new(std::mem::take(&mut *data))),
        Ok(Err(e)) => Err(SecretsError::io(
            format!("read {} (FIFO)", fifo.display()),
            e,
        )),
        Err(_) => Err(SecretsError::io(
            "read gen secrets FIFO",
            std::io::Error::other("reader thread panicked"),
        )),
    }
}

/// If the reader thread is still waiting for a writer (talosctl failed before opening the
/// FIFO), open and close the write side so it sees EOF.
fn release_reader<T>(fifo: &PathBuf, reader: &std::thread::JoinHandle<T>) {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..500 {
        if reader.is_finished() {
            return;
        }
        // O_NONBLOCK: fails with ENXIO instead of blocking when no reader is there yet.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_output_starts_at_v1_12_0_beta_0() {
        for (version, stdout) in [
            ("v1.11.6", false),
            ("v1.12.0-alpha.0", false),
            ("v1.12.0-alpha.2", false),
            ("v1.12.0-beta.0", true),
            ("v1.12.0-rc.1", true),
            ("v1.12.0", true),
            ("v1.12.11", true),
            ("v1.13.0-alpha.0", true),
            ("v1.14.0-rc.1", true),
        ] {
            assert_eq!(
                writes_secrets_to_stdout(version).unwrap(),
                stdout,
                "{version}"
            );
        }
    }

    #[test]
    fn parses_versions() {
        assert_eq!(parse_major_minor("v1.12.0").unwrap(), (1, 12));
        assert_eq!(parse_major_minor("1.11.6").unwrap(), (1, 11));
        assert_eq!(parse_major_minor("v1.13.0-alpha.1").unwrap(), (1, 13));
        assert_eq!(parse_major_minor("v1.9").unwrap(), (1, 9));
        assert!(parse_major_minor("latest").is_err());
    }
}
