//! The workspace: the one owner of every path a profile names (the profile, its lock file,
//! secrets file and recipients file, the config dir, the patches dir and its node patches, the
//! default store and the scratch dir). Paths are resolved here and nowhere else, so a hostile
//! profile (often someone else's pull request) cannot make talix read or write outside the
//! workspace, nor overwrite the profile, its lock file or its secrets file with an output.
//!
//! The workspace also owns the writer lock that serialises runs on one profile folder (the lock
//! file is read after taking it and written under it) and the scratch dir for atomic writes, so
//! an interrupted run never leaves temp files in `profiles/` (a committed folder).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::store::Durability;

/// How strictly profile paths are confined. The default confines them to the workspace; only
/// the command line (`--allow-outside-workspace`) can loosen it, never the profile itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PathPolicy {
    pub allow_outside_workspace: bool,
}

/// A path a profile names that cannot be used: the field that named it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem {
    pub field: String,
    pub message: String,
}

/// Every path of one profile's workspace, resolved and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    root: PathBuf,
    profile: PathBuf,
    name: String,
    lock_file: PathBuf,
    secrets_file: PathBuf,
    recipients_file: PathBuf,
    config_dir: PathBuf,
    patches_dir: PathBuf,
    /// Which field named the config dir and the patches dir (for messages).
    config_field: &'static str,
    patches_field: &'static str,
    policy: PathPolicy,
}

/// The profile's own settings for its paths, as written (`None`: the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct WrittenPaths<'a> {
    pub config_dir: Option<&'a str>,
    pub secrets_file: Option<&'a str>,
    pub patches_dir: Option<&'a str>,
}

/// The workspace root for a profile file: the folder holding `profiles/`, or the profile's own
/// folder when it is not inside a `profiles/` folder.
pub fn root_for(profile_path: &Path) -> PathBuf {
    let dir = profile_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    if dir.file_name().is_some_and(|n| n == "profiles") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// `path` with `.` and `..` resolved lexically (no filesystem access).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` as the filesystem resolves it: the longest existing ancestor canonicalised (symlinks
/// followed), the rest appended lexically.
fn resolved(path: &Path) -> PathBuf {
    let path = lexical(path);
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canon) = std::fs::canonicalize(existing) {
            let mut out = canon;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return lexical(&out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path,
        }
    }
}

fn is_within(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

static SCRATCH_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Workspace {
    /// Resolve the paths of profile `name` at `profile` (absolute) from what it wrote. Problems
    /// are returned with the field that named the path; the workspace is usable for messages
    /// either way.
    pub fn resolve(
        profile: &Path,
        name: &str,
        written: WrittenPaths<'_>,
        policy: PathPolicy,
    ) -> (Self, Vec<PathProblem>) {
        let profile = lexical(profile);
        let root = root_for(&profile);
        let profile_dir = profile.parent().unwrap_or(Path::new("/")).to_path_buf();
        let config_dir = match written.config_dir {
            Some(d) => lexical(&root.join(d)),
            None => root.join("clusters").join(name),
        };
        let secrets_file = lexical(
            &profile_dir.join(
                written
                    .secrets_file
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{name}.secrets.age")),
            ),
        );
        let patches_text = written.patches_dir.unwrap_or("patches");
        let patches_dir = lexical(&config_dir.join(patches_text));
        let ws = Self {
            lock_file: profile.with_file_name(format!("{name}.lock")),
            recipients_file: profile_dir.join(format!("{name}.recipients")),
            root,
            profile,
            name: name.to_string(),
            secrets_file,
            config_dir,
            patches_dir,
            config_field: "talos.config_dir",
            patches_field: if written.patches_dir.is_some() {
                "talos.patches_dir"
            } else {
                "talos.config_dir"
            },
            policy,
        };
        let mut problems = Vec::new();
        if Path::new(patches_text).is_absolute() || patches_text.split('/').any(|p| p == "..") {
            problems.push(PathProblem {
                field: "talos.patches_dir".into(),
                message: format!(
                    "{patches_text:?} must be a relative path inside talos.config_dir"
                ),
            });
        }
        for (field, text, path) in [
            ("talos.config_dir", written.config_dir, &ws.config_dir),
            ("talos.secrets_file", written.secrets_file, &ws.secrets_file),
        ] {
            if let Some(text) = text
                && let Err(p) = ws.confine(field, text, path)
            {
                problems.push(p);
            }
        }
        (ws, problems)
    }

    /// Refuse `path` (written as `text` in `field`) when it leaves the workspace, lexically or
    /// through a symlink, unless the command line allowed it.
    fn confine(&self, field: &str, text: &str, path: &Path) -> Result<(), PathProblem> {
        if self.policy.allow_outside_workspace {
            return Ok(());
        }
        let hint = "hint: profile paths stay inside the workspace; pass --allow-outside-workspace to allow it";
        if !is_within(path, &self.root) {
            return Err(PathProblem {
                field: field.into(),
                message: format!(
                    "{text:?} is {}, outside the workspace {}\n{hint}",
                    path.display(),
                    self.root.display()
                ),
            });
        }
        let real = resolved(path);
        let real_root = resolved(&self.root);
        if !is_within(&real, &real_root) {
            return Err(PathProblem {
                field: field.into(),
                message: format!(
                    "{text:?} leads through a symlink to {}, outside the workspace {}\n{hint}",
                    real.display(),
                    self.root.display()
                ),
            });
        }
        Ok(())
    }

    /// A file the profile names for talix to read (a patch file, a CA file), written relative
    /// to the profile's folder, confined like every other profile path.
    pub fn input(&self, field: &str, written: &str) -> Result<PathBuf, (PathBuf, PathProblem)> {
        let path = lexical(&self.profile_dir().join(written));
        match self.confine(field, written, &path) {
            Ok(()) => Ok(path),
            Err(p) => Err((path, p)),
        }
    }

    /// Check that no output talix writes for this profile (the lock file, the secrets file, the
    /// talosconfig, the kubeconfig, one patch per node) is, or is inside, the profile, its lock
    /// file, its secrets file, its recipients file, one of `inputs` or the default store.
    pub fn check_outputs<'n>(
        &self,
        nodes: impl IntoIterator<Item = &'n str>,
        inputs: &[(&str, &Path)],
    ) -> Vec<PathProblem> {
        let mut protected: Vec<(String, PathBuf)> = vec![
            (
                format!("the profile {}", self.profile.display()),
                self.profile.clone(),
            ),
            (
                format!("the lock file {}", self.lock_file.display()),
                self.lock_file.clone(),
            ),
            (
                format!("the secrets file {}", self.secrets_file.display()),
                self.secrets_file.clone(),
            ),
            (
                format!("the recipients file {}", self.recipients_file.display()),
                self.recipients_file.clone(),
            ),
            (
                format!("the store {}", self.default_store().display()),
                self.default_store(),
            ),
        ];
        for (field, path) in inputs {
            protected.push((format!("{field} ({})", path.display()), path.to_path_buf()));
        }
        // Each output with the protected entry it is itself (the lock file and the secrets
        // file are outputs too).
        let mut outputs: Vec<(&str, PathBuf, Option<usize>)> = vec![
            ("name", self.lock_file.clone(), Some(1)),
            ("talos.secrets_file", self.secrets_file.clone(), Some(2)),
            (self.config_field, self.talosconfig(), None),
            (self.config_field, self.kubeconfig(), None),
        ];
        for node in nodes {
            outputs.push((self.patches_field, self.node_patch(node), None));
        }
        let protected: Vec<(String, PathBuf, PathBuf)> = protected
            .into_iter()
            .map(|(what, p)| {
                let real = resolved(&p);
                (what, p, real)
            })
            .collect();
        let mut problems = Vec::new();
        for (field, out, itself) in outputs {
            let real_out = resolved(&out);
            for (i, (what, p, real)) in protected.iter().enumerate() {
                if itself == Some(i) {
                    continue;
                }
                let verb = if out == *p || real_out == *real {
                    "is"
                } else if is_within(&out, p) || is_within(&real_out, real) {
                    "is inside"
                } else {
                    continue;
                };
                problems.push(PathProblem {
                    field: field.into(),
                    message: format!(
                        "talix writes {} here, and it {verb} {what}; choose other paths",
                        out.display()
                    ),
                });
            }
        }
        problems
    }

    /// Why talix must not write `path` (an output the command line named, e.g. `export
    /// --out`): it is, or is inside, the profile, its lock file, its secrets file or its
    /// recipients file.
    pub fn refuse_overwrite(&self, path: &Path) -> Result<(), String> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let real = resolved(&path);
        for (what, p) in [
            ("the profile", &self.profile),
            ("the lock file", &self.lock_file),
            ("the secrets file", &self.secrets_file),
            ("the recipients file", &self.recipients_file),
        ] {
            let rp = resolved(p);
            if real == rp || is_within(&real, &rp) || lexical(&path) == *p {
                return Err(format!(
                    "refusing to write {}: it is {what} {}",
                    path.display(),
                    p.display()
                ));
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The profile file.
    pub fn profile(&self) -> &Path {
        &self.profile
    }
    pub fn profile_dir(&self) -> &Path {
        self.profile.parent().unwrap_or(Path::new("/"))
    }
    /// `<profile dir>/<name>.lock`.
    pub fn lock_file(&self) -> &Path {
        &self.lock_file
    }
    /// `talos.secrets_file`, default `<profile dir>/<name>.secrets.age`.
    pub fn secrets_file(&self) -> &Path {
        &self.secrets_file
    }
    /// `<profile dir>/<name>.recipients` (it may not exist).
    pub fn recipients_file(&self) -> &Path {
        &self.recipients_file
    }
    /// `talos.config_dir`, default `<root>/clusters/<name>`.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }
    /// `<config_dir>/<talos.patches_dir>`.
    pub fn patches_dir(&self) -> &Path {
        &self.patches_dir
    }
    /// `<config_dir>/talosconfig` (0600, written by `build`).
    pub fn talosconfig(&self) -> PathBuf {
        self.config_dir.join("talosconfig")
    }
    /// `<config_dir>/kubeconfig` (0600, written by `up`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.config_dir.join("kubeconfig")
    }
    /// `<patches_dir>/<node>.yaml`: the node's generated patch, for operators to read.
    pub fn node_patch(&self, node: &str) -> PathBuf {
        self.patches_dir.join(format!("{node}.yaml"))
    }
    /// `<root>/store`, the store when neither `--store` nor `TALIX_STORE` names one.
    pub fn default_store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// `<root>/.talix/tmp`: scratch for atomic writes into the workspace (same filesystem, so
    /// publishing is one rename). Each entry is named after its process; the next run sweeps
    /// what dead processes left.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join(".talix").join("tmp")
    }

    /// Remove scratch left by processes that are gone (interrupted runs), and the `.talix-tmp-*`
    /// files older talix versions left beside the lock file. Returns what was removed.
    pub fn sweep_scratch(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.scratch_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name.split('.').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_none_or(|p| !process_alive(p))
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed.push(entry.path());
                }
            }
        }
        removed
    }

    /// Sweep temp files an interrupted writer left beside the lock file and the secrets file
    /// (`.talix-tmp-*` from older talix versions, `.<secrets file>.*.tmp` from an interrupted
    /// secrets write); call with the workspace lock held (no other writer is active then).
    fn sweep_legacy(&self) {
        let secrets_prefix = format!(
            ".{}.",
            self.secrets_file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        );
        let secrets_dir = self.secrets_file.parent().unwrap_or(Path::new("/"));
        for dir in [self.profile_dir(), secrets_dir] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let legacy = name.starts_with(".talix-tmp-")
                    || (dir == secrets_dir
                        && name.starts_with(&secrets_prefix)
                        && name.ends_with(".tmp"));
                if legacy && entry.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Replace `path` (a path of this workspace) with `bytes` atomically: a temp file in the
    /// scratch dir, fsync, rename, fsync the directory. Falls back to a temp file beside the
    /// target when the scratch dir is on another filesystem.
    pub fn write_atomic(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: Option<u32>,
    ) -> std::io::Result<()> {
        self.replace(path, bytes, mode, Durability::Synced)
    }

    /// [`Workspace::write_atomic`], syncing the file and its directory only when `durability`
    /// says so (the rename is atomic either way).
    fn replace(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: Option<u32>,
        durability: Durability,
    ) -> std::io::Result<()> {
        let scratch = self.scratch_dir();
        let ready = fs_err::create_dir_all(&scratch).and_then(|()| {
            let ignore = scratch.parent().unwrap_or(&scratch).join(".gitignore");
            if ignore.exists() {
                Ok(())
            } else {
                fs_err::write(ignore, "# talix scratch: never commit\n*\n")
            }
        });
        if ready.is_err() {
            return crate::store::local::atomic_write(path, bytes, mode);
        }
        let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = scratch.join(format!(
            "{}.{n}.{}",
            std::process::id(),
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let result = (|| {
            let mut f = fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                f.file()
                    .set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            f.write_all(bytes)?;
            if durability == Durability::Synced {
                crate::store::local::sync_file(f.file())?;
            }
            crash_point(&format!(
                "workspace-write:{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            let dir = path.parent().unwrap_or(Path::new("."));
            fs_err::create_dir_all(dir)?;
            match std::fs::rename(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    let _ = std::fs::remove_file(&tmp);
                    return crate::store::local::atomic_write(path, bytes, mode);
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ));
                }
            }
            if durability == Durability::Synced {
                crate::store::local::sync_dir(dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Make `path` hold exactly `bytes` with `mode`: rewritten (atomically) only when the
    /// content differs; the mode is enforced either way.
    ///
    /// For copies of store outputs (patches, configs, talosconfig, kubeconfig): renamed into
    /// place, not synced. A file a power loss damages differs from its object, and the next
    /// run writes it again (kubectl writes its kubeconfig the same way). The lock file, the
    /// secrets and profile edits -- records nothing else holds -- are synced
    /// ([`Workspace::write_atomic`]). Syncing each patch delayed the talosconfig (and with it
    /// discovery) by ~50 ms at 3+57 (issue 10).
    pub fn ensure_file(&self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        let same = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
            && std::fs::read(path).ok().as_deref() == Some(bytes);
        if !same {
            return self.replace(path, bytes, Some(mode), Durability::Relaxed);
        }
        use std::os::unix::fs::PermissionsExt;
        if fs_err::metadata(path)?.permissions().mode() & 0o777 != mode {
            fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }

    /// Take the writer lock of this profile folder, waiting for another talix run if `wait`:
    /// every command that writes the lock file holds it from before it reads the lock file until
    /// it exits, so a run that waited reads (and plans from) what the other run recorded.
    /// The lock is `flock` on the folder itself: nothing is created, nothing is left behind.
    pub fn lock(&self, wait: bool) -> std::io::Result<WorkspaceLock> {
        let dir = self.profile_dir();
        let file = std::fs::File::open(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) if wait => {
                eprintln!(
                    "talix: waiting for another talix run on {} to finish",
                    dir.display()
                );
                file.lock().map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
                })?;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("{} is locked by another talix run", dir.display()),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", dir.display()),
                ));
            }
        }
        self.sweep_scratch();
        self.sweep_legacy();
        Ok(WorkspaceLock(file))
    }
}

/// The held workspace lock; released on drop (and by the kernel when the process dies).
#[derive(Debug)]
pub struct WorkspaceLock(#[allow(dead_code)] std::fs::File);

/// Kill point for the reliability suite: when `TALIX_TEST_CRASH_AT` names `point` (or
/// `point#N`: its N-th passage in this process, from 1), the process SIGKILLs itself here (no
/// destructor, no cleanup: what an OOM kill leaves; a power cut may also lose what was not
/// synced, see [`Durability`]).
pub fn crash_point(point: &str) {
    let Some(want) = std::env::var_os("TALIX_TEST_CRASH_AT") else {
        return;
    };
    let want = want.to_string_lossy();
    let (name, nth) = match want.rsplit_once('#') {
        Some((name, n)) => (name, n.parse::<u32>().unwrap_or(1)),
        None => (want.as_ref(), 1),
    };
    if name != point {
        return;
    }
    static PASSED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if PASSED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth {
        // SAFETY: sending a signal to ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(dir: &Path, written: WrittenPaths<'_>) -> (Workspace, Vec<PathProblem>) {
        std::fs::create_dir_all(dir.join("profiles")).unwrap();
        Workspace::resolve(
            &dir.join("profiles/lab.yaml"),
            "lab",
            written,
            PathPolicy::default(),
        )
    }

    #[test]
    fn defaults_are_inside_and_named_by_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let (w, problems) = ws(dir.path(), WrittenPaths::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(w.root(), dir.path());
        assert_eq!(w.lock_file(), dir.path().join("profiles/lab.lock"));
        assert_eq!(
            w.secrets_file(),
            dir.path().join("profiles/lab.secrets.age")
        );
        assert_eq!(
            w.node_patch("cp1"),
            dir.path().join("clusters/lab/patches/cp1.yaml")
        );
        assert!(w.check_outputs(["cp1"], &[]).is_empty());
    }

    #[test]
    fn escapes_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        for written in [
            WrittenPaths {
                config_dir: Some("../elsewhere"),
                ..Default::default()
            },
            WrittenPaths {
                config_dir: Some("/tmp/x"),
                ..Default::default()
            },
            WrittenPaths {
                secrets_file: Some("../../s.age"),
                ..Default::default()
            },
        ] {
            let (_, problems) = ws(dir.path(), written);
            assert_eq!(problems.len(), 1, "{written:?}");
            assert!(problems[0].message.contains("outside the workspace"));
            let (_, allowed) = Workspace::resolve(
                &dir.path().join("profiles/lab.yaml"),
                "lab",
                written,
                PathPolicy {
                    allow_outside_workspace: true,
                },
            );
            assert!(allowed.is_empty(), "{allowed:?}");
        }
        let (w, _) = ws(dir.path(), WrittenPaths::default());
        assert!(w.input("patches.all[0]", "../../etc/passwd").is_err());
        assert!(w.input("patches.all[0]", "p.yaml").is_ok());
    }

    #[test]
    fn a_symlink_out_of_the_workspace_is_an_escape() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        let (_, problems) = ws(
            dir.path(),
            WrittenPaths {
                config_dir: Some("out/lab"),
                ..Default::default()
            },
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("through a symlink"),
            "{problems:?}"
        );
    }

    #[test]
    fn outputs_that_hit_the_profile_or_its_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = ws(
            dir.path(),
            WrittenPaths {
                config_dir: Some("profiles"),
                patches_dir: Some("."),
                ..Default::default()
            },
        );
        let problems = w.check_outputs(["lab"], &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "talos.patches_dir");
        assert!(
            problems[0].message.contains("is the profile"),
            "{problems:?}"
        );
        let (w, _) = ws(
            dir.path(),
            WrittenPaths {
                secrets_file: Some("lab.yaml"),
                ..Default::default()
            },
        );
        let problems = w.check_outputs(["cp1"], &[]);
        assert_eq!(problems[0].field, "talos.secrets_file", "{problems:?}");
        let (w, _) = ws(
            dir.path(),
            WrittenPaths {
                config_dir: Some("profiles/lab.lock"),
                ..Default::default()
            },
        );
        let problems = w.check_outputs(["cp1"], &[]);
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("is inside the lock file")),
            "{problems:?}"
        );
        // A user patch file that is also a generated node patch (read and overwritten).
        let (w, _) = ws(dir.path(), WrittenPaths::default());
        let input = w.node_patch("cp1");
        let problems = w.check_outputs(["cp1"], &[("patches.nodes.cp1[0]", &input)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("is patches.nodes.cp1[0]"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_lock_file_is_synced_copies_of_store_outputs_are_not() {
        let syncs = || crate::store::local::SYNCS.with(|n| n.get());
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = ws(dir.path(), WrittenPaths::default());
        let before = syncs();
        w.write_atomic(w.lock_file(), b"one", Some(0o644)).unwrap();
        assert_eq!(syncs() - before, 2, "the file and its directory");
        let patch = w.node_patch("cp1");
        let before = syncs();
        w.ensure_file(&patch, b"machine: {}\n", 0o644).unwrap();
        w.ensure_file(&patch, b"machine: {}\n", 0o600).unwrap();
        assert_eq!(syncs() - before, 0);
        assert_eq!(fs_err::read(&patch).unwrap(), b"machine: {}\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs_err::metadata(&patch).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn atomic_writes_leave_nothing_beside_the_target_and_dead_scratch_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = ws(dir.path(), WrittenPaths::default());
        w.write_atomic(w.lock_file(), b"one", Some(0o644)).unwrap();
        w.write_atomic(w.lock_file(), b"two", Some(0o644)).unwrap();
        assert_eq!(std::fs::read(w.lock_file()).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("profiles"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["lab.lock"]);
        // A dead process's scratch (no pid is that high: pid_max <= 2^22) is swept; ours is not.
        let dead = w.scratch_dir().join("999999999.0.lab.lock");
        let ours = w.scratch_dir().join(format!("{}.7.x", std::process::id()));
        std::fs::write(&dead, b"x").unwrap();
        std::fs::write(&ours, b"x").unwrap();
        assert_eq!(w.sweep_scratch(), [dead]);
        assert!(ours.exists());
    }

    #[test]
    fn the_lock_excludes_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = ws(dir.path(), WrittenPaths::default());
        let held = w.lock(false).unwrap();
        let e = w.lock(false).unwrap_err();
        assert!(e.to_string().contains("locked by another talix run"), "{e}");
        drop(held);
        w.lock(false).unwrap();
    }
}
