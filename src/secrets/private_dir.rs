//! Scratch space for plaintext that must exist as a file for a moment (an editor buffer, a FIFO):
//! a 0700 directory on tmpfs/ramfs, never on a persistent disk, removed when dropped (also when
//! the caller returns an error or panics), when talix is stopped by SIGTERM, SIGINT or SIGHUP,
//! and — after a SIGKILL — by the next talix run once the owning process is gone (the owner's
//! pid is part of the directory name).

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
        Self::create_in(&Self::base_with_env(env)?)
    }

    /// Remove the scratch directories of talix processes that are gone (see
    /// [`sweep_orphans`]) in the base [`PrivateDir::create`] would use. Best effort.
    pub fn sweep() -> Vec<PathBuf> {
        Self::base_with_env(&|name| std::env::var_os(name))
            .map(|base| sweep_orphans(&base))
            .unwrap_or_default()
    }

    /// The base directory [`PrivateDir::create_with_env`] creates in.
    fn base_with_env(env: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf, SecretsError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(base) = var(ENV_PRIVATE_TMP) {
            return Ok(PathBuf::from(base));
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
                Ok(magic) if is_memory_backed(magic) => return Ok(base),
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
        sweep_orphans(base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|e| {
                SecretsError::io(format!("create private directory in {}", base.display()), e)
            })?;
        scrub::register(dir.path());
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
        scrub::register(&path);
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

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // The TempDir field removes the directory right after this; forget the paths first so
        // a later signal does not unlink a name someone else may have taken.
        scrub::unregister(self.dir.path());
    }
}

/// Directory name prefix; the owner's pid and a random part follow (`talix-private-4242-AbC123`).
const PREFIX: &str = "talix-private-";

/// The pid owning a private directory named `name`, if it is one of ours.
fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether process `pid` exists (EPERM: it does, owned by someone else).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Remove private directories under `base` whose owner process is gone (left by a SIGKILL or a
/// power cut of tmpfs-less RAM). Returns the removed paths. Directories of live processes and
/// names that are not ours are left alone.
pub fn sweep_orphans(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return vec![];
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !process_alive(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Removal of scratch plaintext from a signal handler: the paths are kept as C strings in a
/// fixed table the handler can read without allocating or locking; it unlinks files, removes
/// directories, stops a registered editor child and re-raises the signal with the default action.
mod scrub {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::Once;
    use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

    const SLOTS: usize = 32;
    static PATHS: [AtomicPtr<libc::c_char>; SLOTS] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
    static CHILD: AtomicI32 = AtomicI32::new(0);
    static INSTALL: Once = Once::new();

    /// The signals that remove scratch plaintext before talix dies.
    pub const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

    pub fn register(path: &Path) {
        INSTALL.call_once(install);
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return;
        };
        let raw = c.into_raw();
        for slot in &PATHS {
            if slot
                .compare_exchange(
                    std::ptr::null_mut(),
                    raw,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
            {
                return;
            }
        }
        // Table full: the Drop path still removes it. Reclaim the string.
        // SAFETY: raw came from CString::into_raw above and was not stored.
        drop(unsafe { CString::from_raw(raw) });
    }

    /// Forget `dir` and every registered path inside it. The strings are leaked on purpose: a
    /// handler running on another thread may still be reading one.
    pub fn unregister(dir: &Path) {
        let prefix = dir.as_os_str().as_bytes();
        for slot in &PATHS {
            let p = slot.load(Ordering::SeqCst);
            if p.is_null() {
                continue;
            }
            // SAFETY: non-null entries are valid NUL-terminated strings that are never freed.
            let bytes = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes();
            if bytes.starts_with(prefix) {
                let _ = slot.compare_exchange(
                    p,
                    std::ptr::null_mut(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
    }

    /// The editor (or other child) to stop when talix is signalled; 0 clears it.
    pub fn set_child(pid: u32) {
        CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
    }

    fn install() {
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction with a handler address and SA_RESTART is valid; the
            // handler only calls async-signal-safe functions.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
    }

    static PENDING: AtomicI32 = AtomicI32::new(0);

    /// The signal that arrived while a child was registered, if any.
    pub fn pending() -> Option<libc::c_int> {
        Some(PENDING.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// Die of `sig` with its default action (after the caller removed its scratch).
    pub fn reraise(sig: libc::c_int) -> ! {
        // SAFETY: restoring the default action and raising a signal are always valid.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        std::process::exit(128 + sig)
    }

    extern "C" fn handler(sig: libc::c_int) {
        let child = CHILD.load(Ordering::SeqCst);
        if child > 0 {
            // An editor is running: stop it; the waiting thread removes the whole directory
            // (with any swap file the editor made) and then re-raises.
            PENDING.store(sig, Ordering::SeqCst);
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(child, libc::SIGTERM) };
            return;
        }
        // Files were registered after their directory (later slots): unlink them, then rmdir.
        for slot in PATHS.iter().rev() {
            let p = slot.load(Ordering::SeqCst);
            if !p.is_null() {
                // SAFETY: unlink and rmdir are async-signal-safe; p is a valid C string.
                unsafe {
                    if libc::unlink(p) != 0 {
                        libc::rmdir(p);
                    }
                }
            }
        }
        // SAFETY: restoring the default action and re-raising is async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

pub use scrub::{pending as pending_signal, reraise, set_child as set_scrub_child};

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
