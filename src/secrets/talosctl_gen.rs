//! Generating a fresh secrets bundle with `talosctl gen secrets` so that the plaintext never
//! lands in a regular file: read from stdout (`-o -`, talosctl v1.12+) or, for older talosctl,
//! from an anonymous pipe named to it as `/dev/fd/N`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use secrecy::zeroize::Zeroizing;

use super::bundle::validate_bundle;
use super::error::SecretsError;
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

/// Largest bundle accepted from talosctl (a real one is about 9 KiB).
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;

fn bounded_output(
    talosctl: &Path,
    cmd: &mut Command,
) -> Result<std::process::Output, SecretsError> {
    let limit = crate::exec::exec_timeout();
    crate::exec::output_within(cmd, limit)
        .map_err(|e| spawn_error(talosctl, e))?
        .ok_or_else(|| SecretsError::TalosctlTimedOut {
            program: talosctl.to_path_buf(),
            limit_s: limit.as_secs(),
        })
}

fn check_output(talosctl: &Path, bundle: SecretBytes) -> Result<SecretBytes, SecretsError> {
    if bundle.expose_secret().is_empty() {
        return Err(SecretsError::TalosctlNoOutput {
            program: talosctl.to_path_buf(),
        });
    }
    if bundle.expose_secret().len() > MAX_BUNDLE_BYTES {
        return Err(SecretsError::BundleTooLarge {
            origin: "bundle from `talosctl gen secrets`".into(),
            limit: MAX_BUNDLE_BYTES,
        });
    }
    Ok(bundle)
}

fn generate_to_stdout(talosctl: &Path, contract: &str) -> Result<SecretBytes, SecretsError> {
    let mut cmd = base_command(talosctl, contract);
    cmd.args(["-o", "-"]);
    let output = bounded_output(talosctl, &mut cmd)?;
    let stdout = SecretBytes::new(output.stdout);
    if !output.status.success() {
        return Err(failure(talosctl, output.status, &output.stderr));
    }
    check_output(talosctl, stdout)
}

/// Before v1.12 `-o` names a file. talix hands talosctl `/dev/fd/N`, the write end of an
/// anonymous pipe whose read end only talix holds (with `--force`, since that path exists).
///
/// Defect 13: this used to be a named FIFO in a private directory, read by a thread that opened
/// it by path, with a polling loop opening the write side to release a reader left waiting. Its
/// end of data was "the first writer closed", so a talosctl that opened the output more than
/// once (or any other process that opened the FIFO) ended or split the bundle early, which
/// surfaced as "not valid YAML (line 1, column 1)". An anonymous pipe has no name another
/// process can open, and its EOF comes exactly when every write end is closed: talix's copy is
/// closed right after the spawn, the child's when it and its descendants exit.
fn generate_through_fifo(talosctl: &Path, contract: &str) -> Result<SecretBytes, SecretsError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SecretsError::io(
            "create gen secrets pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child_fd = write_end.as_raw_fd();
    let mut cmd = base_command(talosctl, contract);
    cmd.arg("-o")
        .arg(format!("/dev/fd/{child_fd}"))
        .arg("--force");
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(child_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let reader = std::thread::Builder::new()
        .name("talix-gen-secrets-pipe".into())
        .spawn(move || -> std::io::Result<(Zeroizing<Vec<u8>>, bool)> {
            let mut data = Zeroizing::new(Vec::new());
            let mut file = std::fs::File::from(read_end);
            let mut limited = (&mut file).take(MAX_BUNDLE_BYTES as u64 + 1);
            limited.read_to_end(&mut data)?;
            let too_large = data.len() > MAX_BUNDLE_BYTES;
            Ok((data, too_large))
        })
        .map_err(|e| SecretsError::io("start gen secrets reader", e))?;
    let limit = crate::exec::exec_timeout();
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let spawned = cmd.spawn();
    // talix's copy of the write end: closed now, so EOF depends on the child only.
    drop(write_end);
    let mut child = spawned.map_err(|e| spawn_error(talosctl, e))?;
    let mut stderr_pipe = child.stderr.take();
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(p) = stderr_pipe.as_mut() {
            let _ = p.read_to_end(&mut bytes);
        }
        bytes
    });
    let status = crate::exec::wait_within(&mut child, limit)
        .map_err(|e| spawn_error(talosctl, e))?
        .ok_or_else(|| SecretsError::TalosctlTimedOut {
            program: talosctl.to_path_buf(),
            limit_s: limit.as_secs(),
        })?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(failure(talosctl, status, &stderr));
    }
    match reader.join() {
        Ok(Ok((_, true))) => Err(SecretsError::BundleTooLarge {
            origin: "bundle from `talosctl gen secrets`".into(),
            limit: MAX_BUNDLE_BYTES,
        }),
        Ok(Ok((mut data, false))) => {
            check_output(talosctl, SecretBytes::new(std::mem::take(&mut *data)))
        }
        Ok(Err(e)) => Err(SecretsError::io("read gen secrets pipe", e)),
        Err(_) => Err(SecretsError::io(
            "read gen secrets pipe",
            std::io::Error::other("reader thread panicked"),
        )),
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
