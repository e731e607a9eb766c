//! The on-disk store: `<root>/v1/objects/<key>/{manifest.json,out/<name>}`, refs under
//! `<root>/v1/refs/<profile>/`, a writer lock at `<root>/v1/lock`, scratch in `<root>/v1/tmp/`
//! (same filesystem, so publishing an object is one `rename`).
//!
//! What is synced to disk ([`Durability`]): receipts a re-run must not repeat and pins, each
//! before the call returns. Objects that can be had again and refs are written and renamed
//! into place, not synced: a kill loses none of them, a power loss may, and what it damages
//! fails verification and is rebuilt (objects) or ignored (refs). Before this, syncing every
//! ref and every receipt of a readiness check was ~1,500 of the ~1,800 `fsync`s of a 3+57
//! first bootstrap, most of them queued on the disk while the last nodes came back (issue 10).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fs_err as fs;

use super::{Durability, LAYOUT_VERSION, Manifest, Pin, Store, StoreError, WriteLock};
use crate::derivation::StepId;
use crate::digest::Digest;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// No file of an object is read past this (manifests are kilobytes, configs well below a
/// MiB): a huge or endless file in the store is damage, not something to load.
const MAX_OBJECT_FILE: u64 = 256 << 20;

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// `<root>/v1/objects`, opened on the first read that finds it: files of an object are
    /// opened beneath it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, one call where
    /// checking every directory on the way took three `lstat`s and an `open` (a no-op `up`
    /// reads ~2,000 object files at 250 nodes).
    objects_fd: Arc<OnceLock<OwnedFd>>,
    /// Test hook: stop a `put` after writing everything but before publishing it, as a crash
    /// would.
    #[cfg(test)]
    pub(crate) crash_before_publish: bool,
}

struct FileLock(#[allow(dead_code)] File);
impl WriteLock for FileLock {}

impl LocalStore {
    /// The store at `root`. Nothing is created until the first write, so read-only commands
    /// (`plan`, `why`) leave no trace.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            root: root.to_path_buf(),
            objects_fd: Arc::default(),
            #[cfg(test)]
            crash_before_publish: false,
        })
    }

    /// Whether a store of this layout exists at the root (nothing is created by asking).
    pub fn exists(&self) -> bool {
        self.base().is_dir()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn base(&self) -> PathBuf {
        self.root.join(format!("v{LAYOUT_VERSION}"))
    }

    fn object_dir(&self, key: &Digest) -> PathBuf {
        self.base().join("objects").join(key.to_string())
    }

    fn ref_path(&self, profile: &str, step: &StepId) -> PathBuf {
        // `/` in step ids becomes `~` (not allowed in node names), one file per step.
        self.base()
            .join("refs")
            .join(profile)
            .join(step.as_str().replace('/', "~"))
    }

    fn refs_dir(&self, profile: &str) -> PathBuf {
        self.base().join("refs").join(profile)
    }

    /// `refs/<profile>/.source`: the profile file (a dot name is never a step id).
    fn ref_source_path(&self, profile: &str) -> PathBuf {
        self.refs_dir(profile).join(".source")
    }

    /// `pins/<profile>/<step with ~>/<key>` (empty files).
    fn pin_path(&self, pin: &Pin) -> PathBuf {
        self.base()
            .join("pins")
            .join(&pin.profile)
            .join(pin.step.as_str().replace('/', "~"))
            .join(pin.key.to_string())
    }

    /// Replace `path` with `bytes` atomically through the store's scratch (swept by prune),
    /// synced to disk (file and directory) when `durability` says so.
    fn replace_file(
        &self,
        path: &Path,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let tmp = self.tmp_path("ref");
        fs::create_dir_all(self.base().join("tmp"))?;
        fs::create_dir_all(path.parent().expect("store files have a parent"))?;
        write_file(&tmp, bytes, durability)?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            )));
        }
        if durability == Durability::Synced {
            sync_dir(path.parent().expect("store files have a parent"))?;
        }
        Ok(())
    }

    /// Move `path` into the scratch (one rename), then remove it: a crash leaves scratch.
    /// `point` names the moment in between for the reliability suite's kills.
    fn remove_aside(&self, path: &Path, label: &str, point: &str) -> Result<bool, StoreError> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(false);
        }
        fs::create_dir_all(self.base().join("tmp"))?;
        let aside = self.tmp_path(label);
        std::fs::rename(path, &aside)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent)?;
        }
        crate::workspace::crash_point(point);
        remove_any(&aside)?;
        Ok(true)
    }

    fn tmp_path(&self, label: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.base()
            .join("tmp")
            .join(format!("{label}.{}.{n}.{nanos}", std::process::id()))
    }

    /// Path of an output as stored, for materialising copies.
    pub fn output_path(&self, key: &Digest, output: &str) -> PathBuf {
        self.object_dir(key).join("out").join(output)
    }

    /// Remove what the store does not recognise or cannot trust: scratch left by interrupted
    /// writes, object directories without a manifest, and damaged objects (a manifest that does
    /// not parse or does not belong to its key, an output missing, changed or replaced by a
    /// symlink), so the next run rebuilds them. Returns the removed paths. Call with the writer
    /// lock held.
    pub fn prune(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut removed = Vec::new();
        for dir in ["objects", "refs", "tmp"] {
            fs::create_dir_all(self.base().join(dir))?;
        }
        for entry in fs::read_dir(self.base().join("tmp"))? {
            let path = entry?.path();
            remove_any(&path)?;
            removed.push(path);
        }
        for entry in fs::read_dir(self.base().join("objects"))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let trusted = match name.parse::<Digest>() {
                Ok(key) => match self.checked(&key) {
                    Ok(Some(_)) => true,
                    Ok(None) => false,
                    Err(e) if e.is_damage() => {
                        tracing::warn!("pruning {}: {e}", path.display());
                        false
                    }
                    Err(StoreError::MissingOutput { .. }) => false,
                    Err(e) => return Err(e),
                },
                Err(_) => false,
            };
            if !trusted {
                remove_any(&path)?;
                removed.push(path);
            }
        }
        // Temp files an older talix left beside refs.
        for entry in walkdir::WalkDir::new(self.base().join("refs"))
            .into_iter()
            .filter_map(Result::ok)
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".talix-tmp-")
            {
                remove_any(entry.path())?;
                removed.push(entry.path().to_path_buf());
            }
        }
        for entry in fs::read_dir(&self.root)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('v') && name != format!("v{LAYOUT_VERSION}") && path.is_dir() {
                // An older or newer layout: not ours to read; leave it, but say so.
                tracing::warn!(
                    "store layout {} left in place (this talix uses v{LAYOUT_VERSION})",
                    path.display()
                );
            }
        }
        Ok(removed)
    }

    /// Check every object the way every read does (see [`Store::checked`]). Returns problems,
    /// one line each.
    pub fn verify(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        for key in self.keys()? {
            match self.checked(&key) {
                Ok(_) => {}
                Err(e @ (StoreError::Damaged { .. } | StoreError::MissingOutput { .. })) => {
                    problems.push(e.to_string().lines().next().unwrap_or_default().to_string())
                }
                Err(e) => return Err(e),
            }
        }
        Ok(problems)
    }
}

/// Refuse a symlink (or anything but a directory / regular file) inside an object.
fn check_entry(key: &Digest, path: &Path, dir: bool) -> Result<bool, StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(StoreError::Damaged {
            key: *key,
            step: None,
            reason: format!("{} is a symlink", path.display()),
        }),
        Ok(meta) if (dir && meta.is_dir()) || (!dir && meta.is_file()) => Ok(true),
        Ok(_) => Err(StoreError::Damaged {
            key: *key,
            step: None,
            reason: format!(
                "{} is not a {}",
                path.display(),
                if dir { "directory" } else { "regular file" }
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))),
    }
}

/// `openat2(2)` is missing (Linux < 5.6) or refused (a seccomp filter): every read takes the
/// checked path.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open `rel` (relative to `dir`) read-only, refusing a symlink in any component and any path
/// out of `dir` (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). `None` when the kernel does not
/// offer `openat2`.
fn open_beneath(dir: &OwnedFd, rel: &Path) -> Option<std::io::Result<File>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let Ok(c_rel) = std::ffi::CString::new(rel.as_os_str().as_bytes()) else {
        return Some(Err(std::io::ErrorKind::InvalidInput.into()));
    };
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_NONBLOCK: a FIFO planted in the store must not hang the read (it is refused below).
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: a valid directory fd, a NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            return None;
        }
        return Some(Err(e));
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Some(Ok(unsafe { File::from_raw_fd(fd as i32) }))
}

impl LocalStore {
    /// The objects directory, opened once (`None` while there is none, or it cannot be opened:
    /// the checked path then reports why).
    fn objects_fd(&self) -> Option<&OwnedFd> {
        if let Some(fd) = self.objects_fd.get() {
            return Some(fd);
        }
        let dir = File::open(self.base().join("objects")).ok()?;
        if !dir.metadata().ok()?.is_dir() {
            return None;
        }
        let _ = self.objects_fd.set(OwnedFd::from(dir));
        self.objects_fd.get()
    }

    /// Read `<objects>/<key>/<rel>` (a regular file), never through a symlink below the objects
    /// directory; `None` when absent. The fast path is one `openat2`; anything but its
    /// success is looked at again by the checked path, which names the offending component.
    fn read_in_object(&self, key: &Digest, rel: &[&str]) -> Result<Option<Vec<u8>>, StoreError> {
        let dir = self.object_dir(key);
        let mut rel_path = PathBuf::from(key.to_string());
        let mut file = dir.clone();
        for part in rel {
            rel_path.push(part);
            file.push(part);
        }
        // Anything but an opened regular file (absent, damaged, refused) goes to the checked
        // path, which decides and says why. An absent file is looked for again there too, in
        // case the objects directory held open was replaced since (a store removed and made
        // again).
        if let Some(Some(Ok(f))) = self.objects_fd().map(|o| open_beneath(o, &rel_path)) {
            let meta = f.metadata().map_err(|e| io_at(&file, e))?;
            if meta.is_file() {
                return read_opened(key, f, meta.len(), &file).map(Some);
            }
        }
        let out = dir.join("out");
        let dirs: &[&Path] = if rel.len() > 1 {
            &[&dir, &out]
        } else {
            &[&dir]
        };
        read_in_object_checked(key, dirs, &file)
    }
}

/// Whether the ref file at `path` is exactly `line`: read into a small buffer, without the
/// `fstat` that sizes a `fs::read` (a no-op `up` asks this of every step's ref).
fn ref_holds(path: &Path, line: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut buf = [0u8; 256];
    let mut n = 0;
    loop {
        match f.read(&mut buf[n..]) {
            Ok(0) => return &buf[..n] == line,
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn io_at(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", path.display()),
    ))
}

/// The whole of an opened object file of `len` bytes (as `fstat` said), refusing one past
/// [`MAX_OBJECT_FILE`]. Sized up front: a read of the file and one that finds its end.
fn read_opened(key: &Digest, f: File, len: u64, file: &Path) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let too_large = || StoreError::Damaged {
        key: *key,
        step: None,
        reason: format!(
            "{} is larger than {} MiB",
            file.display(),
            MAX_OBJECT_FILE >> 20
        ),
    };
    if len > MAX_OBJECT_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(len as usize + 1);
    f.take(MAX_OBJECT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_at(file, e))?;
    if bytes.len() as u64 > MAX_OBJECT_FILE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Read a regular file inside an object without following a symlink at any point below the
/// object directory, checking each directory on the way; `None` when absent.
fn read_in_object_checked(
    key: &Digest,
    dirs: &[&Path],
    file: &Path,
) -> Result<Option<Vec<u8>>, StoreError> {
    for d in dirs {
        if !check_entry(key, d, true)? {
            return Ok(None);
        }
    }
    if !check_entry(key, file, false)? {
        return Ok(None);
    }
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StoreError::Damaged {
                key: *key,
                step: None,
                reason: format!("{} is a symlink", file.display()),
            });
        }
        Err(e) => return Err(io_at(file, e)),
    };
    let meta = f.metadata().map_err(|e| io_at(file, e))?;
    if !meta.is_file() {
        return Err(StoreError::Damaged {
            key: *key,
            step: None,
            reason: format!("{} is not a regular file", file.display()),
        });
    }
    read_opened(key, f, meta.len(), file).map(Some)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Create `path` with `bytes`, synced when `durability` says so.
fn write_file(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    if durability == Durability::Synced {
        sync_file(f.file())?;
    }
    Ok(())
}

/// `fsync` an open file: every sync of the store's and the workspace's writes goes through here
/// or [`sync_dir`], so tests can count them ([`SYNCS`]).
pub(crate) fn sync_file(f: &File) -> std::io::Result<()> {
    count_sync();
    f.sync_all()
}

/// `fsync` a directory (after a rename into it).
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    count_sync();
    fs::File::open(path)?.sync_all()
}

// `fsync`s made by this thread, for tests of what is synced.
#[cfg(test)]
thread_local! {
    pub(crate) static SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count_sync() {
    #[cfg(test)]
    SYNCS.with(|n| n.set(n.get() + 1));
}

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    // A bare file name (`out.tar`) has the empty path as its parent: that is the current folder.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".talix-tmp-")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.write_all(bytes)?;
    sync_file(tmp.as_file())?;
    tmp.persist(path).map_err(|e| {
        std::io::Error::new(e.error.kind(), format!("{}: {}", path.display(), e.error))
    })?;
    sync_dir(dir)
}

impl Store for LocalStore {
    fn load_manifest(&self, key: &Digest) -> Result<Option<Manifest>, StoreError> {
        let Some(bytes) = self.read_in_object(key, &["manifest.json"])? else {
            return Ok(None);
        };
        let path = self.object_dir(key).join("manifest.json");
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                key: *key,
                step: None,
                reason: format!("its manifest {} does not parse: {e}", path.display()),
            })
    }

    fn load_output(&self, key: &Digest, output: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if output.contains('/') || output.starts_with('.') {
            return Ok(None);
        }
        self.read_in_object(key, &["out", output])
    }

    fn discard(&self, key: &Digest) -> Result<(), StoreError> {
        // Move it aside first (one rename), so a crash mid-removal leaves scratch for prune,
        // never half an object.
        self.remove_aside(
            &self.object_dir(key),
            &format!("discard-{}", key.short()),
            "store-discard",
        )?;
        Ok(())
    }

    fn stored_size(&self, key: &Digest) -> Result<Option<u64>, StoreError> {
        let dir = self.object_dir(key);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        // Without following links: a symlink counts as its own (small) size.
        let mut total = 0;
        for entry in walkdir::WalkDir::new(&dir).follow_links(false) {
            let entry =
                entry.map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
            if !entry.file_type().is_dir() {
                total += entry
                    .metadata()
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", entry.path().display())))?
                    .len();
            }
        }
        Ok(Some(total))
    }

    fn put_with(
        &self,
        manifest: &Manifest,
        stored: &BTreeMap<String, Vec<u8>>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let target = self.object_dir(&manifest.key);
        if std::fs::symlink_metadata(target.join("manifest.json")).is_ok() {
            return Ok(()); // immutable: the first realisation stays
        }
        fs::create_dir_all(self.base().join("objects"))?;
        // Receipts a re-run must not repeat are synced to disk before they are published.
        // Other objects are not: every read verifies an object against its manifest and a
        // damaged one is rebuilt (`Engine::cached`), so a power loss costs a rebuild, never a
        // wrong answer -- and their fsyncs were 12 % of talix's CPU before the last apply of
        // a 3+57 first bootstrap (issue 10).
        let durable = durability == Durability::Synced;
        let write = |path: &Path, bytes: &[u8]| write_file(path, bytes, durability);
        let tmp = self.tmp_path(&manifest.key.short());
        fs::create_dir_all(tmp.join("out"))?;
        for (name, bytes) in stored {
            if name.contains('/') || name.starts_with('.') {
                return Err(StoreError::Corrupt {
                    path: tmp.display().to_string(),
                    reason: format!("bad output name {name:?}"),
                });
            }
            write(&tmp.join("out").join(name), bytes)?;
        }
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        write(&tmp.join("manifest.json"), &json)?;
        if durable {
            sync_dir(&tmp.join("out"))?;
            sync_dir(&tmp)?;
        }
        #[cfg(test)]
        if self.crash_before_publish {
            return Err(StoreError::Io(std::io::Error::other(
                "simulated crash before publish",
            )));
        }
        // Reliability suite: killed with an object fully written but not yet published.
        crate::workspace::crash_point("store-put");
        match std::fs::rename(&tmp, &target) {
            Ok(()) => {}
            Err(_) if target.join("manifest.json").is_file() => {
                // Another writer published the same key first; identical by construction.
                remove_any(&tmp)?;
            }
            Err(e) => {
                remove_any(&tmp)?;
                return Err(StoreError::Corrupt {
                    path: target.display().to_string(),
                    reason: format!(
                        "cannot publish the object ({e}); an unreadable leftover is in the way\nhint: run `talix store prune`"
                    ),
                });
            }
        }
        if durable {
            sync_dir(&self.base().join("objects"))?;
        }
        Ok(())
    }

    fn set_ref(&self, profile: &str, step: &StepId, key: &Digest) -> Result<(), StoreError> {
        let path = self.ref_path(profile, step);
        let line = format!("{key}\n");
        // A ref that already names `key` is left alone: a run that changes nothing writes and
        // syncs nothing (issue 10: a no-op `up` rewrote and fsynced one ref per step).
        if ref_holds(&path, line.as_bytes()) {
            return Ok(());
        }
        // Scratch in the store's tmp/ (swept by prune), never beside the refs.
        self.replace_file(&path, line.as_bytes(), Durability::Relaxed)
    }

    fn refs(&self, profile: &str) -> Result<BTreeMap<StepId, Digest>, StoreError> {
        let dir = self.refs_dir(profile);
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(
                    std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())).into(),
                );
            }
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_file() {
                continue;
            }
            let step = StepId(name.replace('~', "/"));
            if let Some(key) = self.get_ref(profile, &step)? {
                out.insert(step, key);
            }
        }
        Ok(out)
    }

    fn ref_profiles(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.base().join("refs");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(
                    std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())).into(),
                );
            }
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove_refs(&self, profile: &str) -> Result<(), StoreError> {
        self.remove_aside(&self.refs_dir(profile), "refs", "store-remove-refs")?;
        Ok(())
    }

    fn set_ref_source(&self, profile: &str, source: &Path) -> Result<(), StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let path = self.ref_source_path(profile);
        let mut bytes = source.as_os_str().as_bytes().to_vec();
        if read_optional(&path)?.as_deref() == Some(&[bytes.as_slice(), b"\n"].concat()) {
            return Ok(());
        }
        bytes.push(b'\n');
        self.replace_file(&path, &bytes, Durability::Synced)
    }

    fn ref_source(&self, profile: &str) -> Result<Option<PathBuf>, StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let Some(mut bytes) = read_optional(&self.ref_source_path(profile))? else {
            return Ok(None);
        };
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))))
    }

    fn pin(&self, pin: &Pin) -> Result<(), StoreError> {
        let path = self.pin_path(pin);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Ok(());
        }
        self.replace_file(&path, b"", Durability::Synced)
    }

    fn unpin(&self, pin: &Pin) -> Result<bool, StoreError> {
        let path = self.pin_path(pin);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(false);
        }
        fs::remove_file(&path)?;
        // Empty step and profile folders go too (best effort: another pin may appear).
        for dir in path.ancestors().skip(1).take(2) {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
        Ok(true)
    }

    fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        let root = self.base().join("pins");
        let mut out = Vec::new();
        if !root.is_dir() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&root)
            .min_depth(3)
            .max_depth(3)
            .follow_links(false)
        {
            let entry =
                entry.map_err(|e| std::io::Error::other(format!("{}: {e}", root.display())))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(&root).expect("below the root");
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let [profile, step, key] = parts.as_slice() else {
                continue;
            };
            // Anything else in pins/ (an interrupted write's leftovers) is not a pin.
            let Ok(key) = key.parse::<Digest>() else {
                continue;
            };
            out.push(Pin {
                profile: profile.clone(),
                step: StepId(step.replace('~', "/")),
                key,
            });
        }
        out.sort();
        Ok(out)
    }

    fn get_ref(&self, profile: &str, step: &StepId) -> Result<Option<Digest>, StoreError> {
        let path = self.ref_path(profile, step);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        // A ref only feeds plan/why explanations: a damaged one is reported and ignored (the
        // next realisation overwrites it), never a reason to stop.
        match String::from_utf8_lossy(&bytes).trim().parse() {
            Ok(key) => Ok(Some(key)),
            Err(e) => {
                tracing::warn!("ignoring damaged store ref {}: {e}", path.display());
                Ok(None)
            }
        }
    }

    fn lock(&self, wait: bool) -> Result<Box<dyn WriteLock>, StoreError> {
        let path = self.base().join("lock");
        fs::create_dir_all(self.base())?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?
            .into_parts()
            .0;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(FileLock(file))),
            Err(std::fs::TryLockError::WouldBlock) if wait => {
                eprintln!(
                    "talix: waiting for another talix process to release the store lock {}",
                    path.display()
                );
                file.lock().map_err(|e| {
                    StoreError::Io(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ))
                })?;
                Ok(Box::new(FileLock(file)))
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
                path: path.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))),
        }
    }

    fn keys(&self) -> Result<Vec<Digest>, StoreError> {
        let mut keys = Vec::new();
        let objects = self.base().join("objects");
        if !objects.is_dir() {
            return Ok(keys);
        }
        for entry in fs::read_dir(objects)? {
            let entry = entry?;
            if let Ok(k) = entry.file_name().to_string_lossy().parse::<Digest>() {
                keys.push(k);
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// Read a file that may legitimately be absent; other errors name the path.
pub fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    /// Damage done to the files of an object, as `Damage` describes it.
    fn damage(store: &LocalStore, d: conformance::Damage) {
        use conformance::Damage;
        match d {
            Damage::FlipByte(key, output) => {
                let p = store.output_path(&key, output);
                let mut bytes = fs::read(&p).unwrap();
                bytes[0] ^= 1;
                fs::write(&p, bytes).unwrap();
            }
            Damage::Truncate(key, output) => {
                let p = store.output_path(&key, output);
                let bytes = fs::read(&p).unwrap();
                fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }
            Damage::DeleteOutput(key, output) => {
                fs::remove_file(store.output_path(&key, output)).unwrap()
            }
            Damage::GarbageManifest(key) => {
                fs::write(store.object_dir(&key).join("manifest.json"), b"{ not json").unwrap()
            }
            Damage::CopyObject { from, over } => {
                for f in ["manifest.json", "out/patch"] {
                    fs::copy(
                        store.object_dir(&from).join(f),
                        store.object_dir(&over).join(f),
                    )
                    .unwrap();
                }
            }
            Damage::CopyOutput { from, over, output } => {
                fs::copy(
                    store.output_path(&from, output),
                    store.output_path(&over, output),
                )
                .unwrap();
            }
            Damage::SymlinkOut(key, output) => {
                let p = store.output_path(&key, output);
                fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
            }
        }
    }

    #[test]
    fn conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let s2 = store.clone();
        conformance::run_all(&store, &move |d| damage(&s2, d));
    }

    #[test]
    fn setting_a_ref_to_the_key_it_holds_rewrites_nothing() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let step = StepId("render/cp1".into());
        let (a, _) = conformance::manifest_for("render/cp1", "1", &[]);
        let (b, _) = conformance::manifest_for("render/cp1", "2", &[]);
        store.set_ref("p", &step, &a.key).unwrap();
        let path = store.ref_path("p", &step);
        let before = fs::metadata(&path).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.set_ref("p", &step, &a.key).unwrap();
        let same = fs::metadata(&path).unwrap();
        assert_eq!(
            (same.ino(), same.mtime_nsec(), same.mtime()),
            (before.ino(), before.mtime_nsec(), before.mtime()),
            "an unchanged ref is not replaced"
        );
        // A different key still replaces it (one rename: a new inode).
        store.set_ref("p", &step, &b.key).unwrap();
        assert_ne!(fs::metadata(&path).unwrap().ino(), before.ino());
        assert_eq!(store.get_ref("p", &step).unwrap(), Some(b.key));
    }

    #[test]
    fn receipts_and_pins_are_synced_relaxed_objects_and_refs_are_not() {
        let syncs = || SYNCS.with(|n| n.get());
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (mut apply, out) = conformance::manifest_for("apply/cp1", "1", &[("receipt", b"r")]);
        apply.effect = crate::derivation::Effect::SideEffect;
        let before = syncs();
        store.put(&apply, &out).unwrap();
        // The output, the manifest, out/, the object directory and objects/ (the rename).
        assert_eq!(syncs() - before, 5, "a receipt is on disk when put returns");

        let (mut ready, out) = conformance::manifest_for("ready/cp1", "1", &[("receipt", b"r")]);
        ready.effect = crate::derivation::Effect::SideEffect;
        let (render, rout) = conformance::manifest_for("render/cp1", "1", &[("config", b"c")]);
        let before = syncs();
        store.put_with(&ready, &out, Durability::Relaxed).unwrap();
        store.put(&render, &rout).unwrap();
        store
            .set_ref("p", &StepId("ready/cp1".into()), &ready.key)
            .unwrap();
        assert_eq!(
            syncs() - before,
            0,
            "relaxed objects and refs are not synced"
        );
        // ...and are there, verified, all the same.
        assert_eq!(store.checked(&ready.key).unwrap().as_ref(), Some(&ready));
        assert_eq!(store.read_output(&render.key, "config").unwrap(), b"c");
        assert_eq!(
            store.get_ref("p", &StepId("ready/cp1".into())).unwrap(),
            Some(ready.key)
        );

        let before = syncs();
        store
            .pin(&Pin {
                profile: "p".into(),
                step: StepId("apply/cp1".into()),
                key: apply.key,
            })
            .unwrap();
        assert_eq!(
            syncs() - before,
            2,
            "a pin (a gc root) is synced, file and directory"
        );
    }

    type Object = (Manifest, BTreeMap<String, Vec<u8>>);

    /// A store in a temporary directory holding two objects (patch/a "p", patch/b "q").
    fn two_objects() -> (tempfile::TempDir, LocalStore, Object, Object) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (a, out_a) = conformance::manifest_for("patch/a", "x", &[("patch", b"p")]);
        let (b, out_b) = conformance::manifest_for("patch/b", "y", &[("patch", b"q")]);
        store.put(&a, &out_a).unwrap();
        store.put(&b, &out_b).unwrap();
        (dir, store, (a, out_a), (b, out_b))
    }

    #[test]
    fn a_symlinked_object_directory_or_a_fifo_output_is_damage() {
        let (dir, store, (a, _), (b, _)) = two_objects();
        // The objects directory is now held open by the fast path.
        assert_eq!(store.read_output(&a.key, "patch").unwrap(), b"p");
        // b's whole object directory becomes a symlink to a copy elsewhere.
        let b_dir = store.object_dir(&b.key);
        let elsewhere = dir.path().join("elsewhere");
        fs::rename(&b_dir, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &b_dir).unwrap();
        let e = store.manifest(&b.key).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        // a's output replaced by a FIFO: refused at once (never a read that blocks).
        let p = store.output_path(&a.key, "patch");
        fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = store.read_output(&a.key, "patch").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_store_removed_and_made_again_is_read_where_it_is_now() {
        // The objects directory is held open between reads: a store deleted and recreated in
        // the same process must still be read at its path, not through the stale directory.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (a, out_a) = conformance::manifest_for("patch/a", "x", &[("patch", b"p")]);
        store.put(&a, &out_a).unwrap();
        assert_eq!(store.read_output(&a.key, "patch").unwrap(), b"p");
        fs::remove_dir_all(dir.path().join("v1")).unwrap();
        assert_eq!(store.manifest(&a.key).unwrap(), None);
        store.put(&a, &out_a).unwrap();
        assert!(store.manifest(&a.key).unwrap().is_some());
        assert_eq!(store.read_output(&a.key, "patch").unwrap(), b"p");
    }

    #[test]
    fn a_symlinked_object_or_out_dir_is_damage_and_prune_removes_damage() {
        let (_dir, store, (a, _), (b, out_b)) = two_objects();
        // b's out/ becomes a symlink to a's.
        let b_out = store.object_dir(&b.key).join("out");
        fs::remove_dir_all(&b_out).unwrap();
        std::os::unix::fs::symlink(store.object_dir(&a.key).join("out"), &b_out).unwrap();
        let e = store.read_output(&b.key, "patch").unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert_eq!(store.verify().unwrap().len(), 1);
        let removed = store.prune().unwrap();
        assert_eq!(removed, [store.object_dir(&b.key)]);
        assert!(store.verify().unwrap().is_empty());
        assert_eq!(store.read_output(&a.key, "patch").unwrap(), b"p");
        store.put(&b, &out_b).unwrap();
        assert_eq!(store.read_output(&b.key, "patch").unwrap(), b"q");
    }

    #[test]
    fn crash_before_publish_leaves_no_object_and_prune_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(dir.path()).unwrap();
        store.crash_before_publish = true;
        let (m, out) = conformance::manifest_for("render/cp1", "x", &[("config", b"data")]);
        assert!(store.put(&m, &out).is_err());
        assert_eq!(
            store.manifest(&m.key).unwrap(),
            None,
            "a crashed write must be invisible"
        );
        assert!(matches!(
            store.read_output(&m.key, "config"),
            Err(StoreError::MissingOutput { .. })
        ));
        let removed = store.prune().unwrap();
        assert_eq!(
            removed.len(),
            1,
            "the scratch directory is pruned: {removed:?}"
        );
        store.crash_before_publish = false;
        store.put(&m, &out).unwrap();
        assert_eq!(store.read_output(&m.key, "config").unwrap(), b"data");
    }

    #[test]
    fn prune_removes_unrecognised_objects_and_keeps_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (m, out) = conformance::manifest_for("patch/a", "x", &[("patch", b"p")]);
        store.put(&m, &out).unwrap();
        fs::create_dir_all(dir.path().join("v1/objects/not-a-key")).unwrap();
        let removed = store.prune().unwrap();
        assert_eq!(removed.len(), 1);
        assert!(store.manifest(&m.key).unwrap().is_some());
        assert!(store.verify().unwrap().is_empty());
    }

    #[test]
    fn verify_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (m, out) = conformance::manifest_for("patch/a", "x", &[("patch", b"p")]);
        store.put(&m, &out).unwrap();
        fs::write(store.output_path(&m.key, "patch"), b"tampered").unwrap();
        let problems = store.verify().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("does not match its hash"));
    }

    #[test]
    fn lock_contention_across_processes_style_handles() {
        // Two independent opens of the same directory behave like two processes: the second
        // writer is refused while the first holds the lock.
        let dir = tempfile::tempdir().unwrap();
        let a = LocalStore::open(dir.path()).unwrap();
        let b = LocalStore::open(dir.path()).unwrap();
        let held = a.lock(false).unwrap();
        let err = b.lock(false).err().expect("second writer must be refused");
        assert!(
            err.to_string().contains("locked by another talix process"),
            "{err}"
        );
        let waiter = std::thread::spawn(move || b.lock(true).map(|_| ()).is_ok());
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(held);
        assert!(
            waiter.join().unwrap(),
            "a waiting writer gets the lock once it is released"
        );
    }

    #[test]
    fn atomic_write_replaces_whole_file_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"one", Some(0o600)).unwrap();
        atomic_write(&p, b"two", Some(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left");
    }
}
