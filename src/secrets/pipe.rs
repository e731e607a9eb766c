//! Handing plaintext to a child process without touching any disk: the child reads a pipe as
//! `/dev/fd/N` (for flags such as `--with-secrets /dev/fd/N`) while a thread in talix feeds it.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::thread::JoinHandle;

use super::error::SecretsError;
use super::secret_bytes::SecretBytes;

/// Attaches secrets to a [`Command`] as inheritable pipes.
pub struct SecretPipe;

/// The parent side of one attached pipe: owns the read end until the child is spawned, and the
/// thread writing the secret into the write end.
///
/// Call [`PipeFeeder::child_spawned`] right after `spawn()` (or [`PipeFeeder::finish`] once the
/// child is done); if dropped instead, the pipe is closed and the writer thread ends on its own.
pub struct PipeFeeder {
    read_end: Option<OwnedFd>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for PipeFeeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PipeFeeder(read end {:?})",
            self.read_end.as_ref().map(|fd| fd.as_raw_fd())
        )
    }
}

impl SecretPipe {
    /// Create a pipe carrying `secret`, make its read end visible to `cmd`'s child as
    /// `/dev/fd/N` (the returned path), and start the writer thread. Several pipes can be
    /// attached to one command. Spawn the command once per attach: the hook refers to this
    /// pipe's descriptor, which is closed after [`PipeFeeder::child_spawned`].
    ///
    /// Both ends are close-on-exec in talix; only the child clears the flag on its copy of the
    /// read end (in `pre_exec`), so no other child started concurrently inherits it.
    pub fn attach(
        cmd: &mut Command,
        secret: SecretBytes,
    ) -> Result<(String, PipeFeeder), SecretsError> {
        let (path, feeder) = Self::open(secret)?;
        let child_fd = feeder.child_fd().expect("a new feeder holds its read end");
        crate::exec::keep_in_child(cmd, child_fd);
        Ok((path, feeder))
    }

    /// [`SecretPipe::attach`] without a command: the child must be started by
    /// [`crate::exec::spawn_piped`] with [`PipeFeeder::child_fd`] among the descriptors it keeps.
    pub fn open(secret: SecretBytes) -> Result<(String, PipeFeeder), SecretsError> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(SecretsError::io(
                "create secret pipe",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let child_fd = read_end.as_raw_fd();
        let writer = std::thread::Builder::new()
            .name("talix-secret-pipe".into())
            .spawn(move || {
                let mut pipe = File::from(write_end);
                let result = pipe.write_all(secret.expose_secret());
                drop(secret);
                match result {
                    // The child closed the pipe without reading everything; its exit status
                    // tells whether that was a failure.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            })
            .map_err(|e| SecretsError::io("start secret pipe writer", e))?;
        Ok((
            format!("/dev/fd/{child_fd}"),
            PipeFeeder {
                read_end: Some(read_end),
                writer: Some(writer),
            },
        ))
    }
}

impl PipeFeeder {
    /// The read end the child reads as `/dev/fd/N` (until [`PipeFeeder::child_spawned`]).
    pub fn child_fd(&self) -> Option<RawFd> {
        self.read_end.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Close talix's copy of the read end; call right after the child was spawned, so the
    /// writer sees the pipe close when the child exits.
    pub fn child_spawned(&mut self) {
        self.read_end = None;
    }

    /// Close talix's read end (if still open) and wait for the writer thread.
    pub fn finish(mut self) -> Result<(), SecretsError> {
        self.read_end = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(SecretsError::io("feed secret pipe", e)),
            Some(Err(_)) => Err(SecretsError::io(
                "feed secret pipe",
                std::io::Error::other("writer thread panicked"),
            )),
        }
    }
}

impl Drop for PipeFeeder {
    fn drop(&mut self) {
        // Closing the read end makes a still-blocked writer fail with EPIPE and exit; the thread
        // is detached rather than joined so drop never blocks on a child.
        self.read_end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn child_reads_secret_from_dev_fd() {
        let mut cmd = Command::new("cat");
        let (path, mut feeder) =
            SecretPipe::attach(&mut cmd, SecretBytes::new(b"bundle-bytes\n".to_vec())).unwrap();
        assert!(path.starts_with("/dev/fd/"));
        cmd.arg(&path).stdout(Stdio::piped());
        let child = cmd.spawn().unwrap();
        feeder.child_spawned();
        let out = child.wait_with_output().unwrap();
        feeder.finish().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"bundle-bytes\n");
    }

    #[test]
    fn two_pipes_on_one_command_and_large_payload() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut cmd = Command::new("sh");
        let (a, mut fa) =
            SecretPipe::attach(&mut cmd, SecretBytes::new(b"first|".to_vec())).unwrap();
        let (b, mut fb) = SecretPipe::attach(&mut cmd, SecretBytes::new(big.clone())).unwrap();
        assert_ne!(a, b);
        cmd.args(["-c", "cat \"$1\" \"$2\"", "sh", &a, &b])
            .stdout(Stdio::piped());
        let child = cmd.spawn().unwrap();
        fa.child_spawned();
        fb.child_spawned();
        let out = child.wait_with_output().unwrap();
        fa.finish().unwrap();
        fb.finish().unwrap();
        assert!(out.status.success());
        let mut expected = b"first|".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(out.stdout, expected);
    }

    #[test]
    fn read_end_is_not_inherited_by_other_children() {
        let mut with_pipe = Command::new("true");
        let (path, feeder) =
            SecretPipe::attach(&mut with_pipe, SecretBytes::new(b"x".to_vec())).unwrap();
        // A command without the pre_exec hook must not see the descriptor.
        let out = Command::new("sh")
            .args(["-c", &format!("test -e {path} && echo open || echo closed")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
        drop(feeder);
    }

    #[test]
    fn child_that_never_reads_does_not_hang_the_writer() {
        let mut cmd = Command::new("true");
        let (_path, mut feeder) =
            SecretPipe::attach(&mut cmd, SecretBytes::new(vec![7u8; 1 << 20])).unwrap();
        let status = cmd.status().unwrap();
        feeder.child_spawned();
        assert!(status.success());
        feeder.finish().unwrap();
    }
}
