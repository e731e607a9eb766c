//! Scratch space for plaintext that must exist as a file for a moment (an editor buffer, a FIFO):
//! a 0700 directory on tmpfs/ramfs, never on a persistent disk, removed when dropped (also when
//! the caller returns an error or panics).

use fs_err::os::unix::fs::OpenOptionsExt;
use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::SecretsError;
use super::secret_bytes::SecretBytes;

/// `statfs` magic numbers of memory-backed file systems (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Override of the base directory (tests); still has to be tmpfs or ramfs.
pub const ENV_PRIVATE_TMP: &str = "TALIX_PRIVATE_TMP";

/// A private 0700 directory on tmpfs, deleted with everything in it on drop.
#[derive(Debug)]
pub struct PrivateDir {
    dir: tempfile::TempDir,
}

impl PrivateDir {
    /// Create one under `$TALIX_PRIVATE_TMP` (must be tmpfs/ramfs), else `$XDG_RUNTIME_DIR` if it
    /// is tmpfs, else `/dev/shm` if it is tmpfs; otherwise fail rather than use a disk.
    pub fn create() -> Result<Self, SecretsError> {
        Self::create_with_env(&|name| std::env::var_os(name))
    }

    /// [`PrivateDir::create`] with the environment supplied by `env`.
    pub fn create_with_env(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Self, SecretsError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(base) = var(ENV_PRIVATE_TMP) {
            return Self::create_in(Path::new(&base));
        }
        let mut tried = Vec::new();
        let mut candidates = Vec::new();
        match var("XDG_RUNTIME_DIR") {
            Some(dir) => candidates.push(PathBuf::from(dir)),
            None => tried.push("$XDG_RUNTIME_DIR (unset)".to_string()),
        }
        candidates.push(PathBuf::from("/dev/shm"));
        for base in candidates {
            match filesystem_magic(&base) {
                Ok(magic) if is_memory_backed(magic) => return Self::create_in(&base),
                Ok(magic) => {
                    tried.push(format!("{} (not tmpfs: magic {magic:#x})", base.display()))
                }
                Err(e) => tried.push(format!("{} ({e})", base.display())),
            }
        }
        Err(SecretsError::NoPrivateTmpfs {
            tried: tried.join(", "),
        })
    }

    /// Create one directly under `base`, which must be on tmpfs or ramfs.
    pub fn create_in(base: &Path) -> Result<Self, SecretsError> {
        let magic = filesystem_magic(base)
            .map_err(|e| SecretsError::io(format!("statfs {}", base.display()), e))?;
        if !is_memory_backed(magic) {
            return Err(SecretsError::NotTmpfs {
                path: base.to_path_buf(),
                magic,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("talix-private-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|e| {
                SecretsError::io(format!("create private directory in {}", base.display()), e)
            })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `secret` to a new 0600 file `name` in this directory and return its path.
    pub fn write_secret(&self, name: &str, secret: &SecretBytes) -> Result<PathBuf, SecretsError> {
        let path = self.child(name)?;
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SecretsError::io("create private file", e))?;
        file.write_all(secret.expose_secret())
            .map_err(|e| SecretsError::io("write private file", e))?;
        Ok(path)
    }

    /// Create a FIFO `name` (mode 0600) in this directory and return its path.
    pub fn make_fifo(&self, name: &str) -> Result<PathBuf, SecretsError> {
        let path = self.child(name)?;
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            SecretsError::BadPrivateName {
                name: name.to_string(),
            }
        })?;
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        if rc != 0 {
            return Err(SecretsError::io(
                format!("mkfifo {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(path)
    }

    fn child(&self, name: &str) -> Result<PathBuf, SecretsError> {
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('\0');
        if !plain {
            return Err(SecretsError::BadPrivateName {
                name: name.to_string(),
            });
        }
        Ok(self.dir.path().join(name))
    }
}

fn is_memory_backed(magic: i64) -> bool {
    magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
}

/// The `f_type` of the file system holding `path`.
pub fn filesystem_magic(path: &Path) -> std::io::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statfs only writes into the zeroed struct we own; c_path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    fn shm_env(name: &str) -> Option<OsString> {
        (name == ENV_PRIVATE_TMP).then(|| OsString::from("/dev/shm"))
    }

    #[test]
    fn is_0700_on_tmpfs_and_removed_on_drop() {
        let dir = PrivateDir::create_with_env(&shm_env).unwrap();
        let path = dir.path().to_path_buf();
        let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(filesystem_magic(&path).unwrap(), TMPFS_MAGIC);
        let file = dir
            .write_secret("bundle.yaml", &SecretBytes::new(b"s3cret".to_vec()))
            .unwrap();
        let mode = fs_err::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs_err::read(&file).unwrap(), b"s3cret");
        let fifo = dir.make_fifo("pipe").unwrap();
        assert!(fs_err::metadata(&fifo).unwrap().file_type().is_fifo());
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn removed_on_error_and_on_panic() {
        fn fails(dir_out: &mut Option<PathBuf>) -> Result<(), SecretsError> {
            let dir = PrivateDir::create_in(Path::new("/dev/shm"))?;
            *dir_out = Some(dir.path().to_path_buf());
            dir.write_secret("x", &SecretBytes::new(b"x".to_vec()))?;
            dir.write_secret("../escape", &SecretBytes::new(b"x".to_vec()))?;
            Ok(())
        }
        let mut seen = None;
        let err = fails(&mut seen).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid private file name \"../escape\": must be a plain file name"
        );
        assert!(!seen.unwrap().exists());

        let result = std::panic::catch_unwind(|| {
            let dir = PrivateDir::create_in(Path::new("/dev/shm")).unwrap();
            let path = dir.path().to_path_buf();
            std::panic::panic_any(path);
        });
        let path = *result.unwrap_err().downcast::<PathBuf>().unwrap();
        assert!(path.starts_with("/dev/shm"));
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_persistent_disk() {
        // The crate directory lives on a disk in every supported setup (ext4, xfs, overlay …).
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(!is_memory_backed(filesystem_magic(base).unwrap()));
        let err = PrivateDir::create_with_env(&|name| {
            (name == ENV_PRIVATE_TMP).then(|| base.as_os_str().to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!(
                "{}: not on tmpfs or ramfs (filesystem magic",
                base.display()
            )),
            "{err}"
        );
        assert!(err.contains("hint: point TALIX_PRIVATE_TMP at a tmpfs directory"));
    }

    #[test]
    fn xdg_runtime_dir_on_disk_falls_back_to_dev_shm() {
        let disk = env!("CARGO_MANIFEST_DIR");
        let dir = PrivateDir::create_with_env(&|name| {
            (name == "XDG_RUNTIME_DIR").then(|| OsString::from(disk))
        })
        .unwrap();
        assert!(dir.path().starts_with("/dev/shm"));
    }
}
