//! Runbook step 11 (`talosctl kubeconfig --force`, "merged into ~/.kube/config with a context
//! named after the cluster"): the cluster's kubeconfig merged into the operator's, so `kubectl`
//! works without `--kubeconfig`. talix fetches with `--merge=false` (its own copy in the config
//! dir) and merges here, where it can promise what talosctl's merger does not spell out:
//!
//! - the target is the first entry of `$KUBECONFIG`, else `~/.kube/config`;
//! - the cluster, user and context of the same name are replaced (talosctl's `--force`
//!   `OverwriteDecision`, cmd/talosctl/cmd/talos/kubeconfig.go@v1.11.6, `extractAndMerge`);
//!   every other cluster, user, context and every unknown field is kept;
//! - `current-context` becomes the cluster's context (`ActivateContext: true` upstream);
//! - the file is written 0600, atomically (temp file in the same directory, fsync, rename,
//!   fsync of the directory), its directory created 0700 when missing; a symlinked file is
//!   written through to its target;
//! - nothing is written when the merge changes nothing, and a file talix cannot parse is left
//!   untouched (its content is never echoed: it holds other clusters' credentials);
//! - the read, merge and write happen under kubectl's own lock on the file, `<file>.lock`
//!   created exclusively and removed afterwards (client-go `tools/clientcmd/loader.go`,
//!   `lockFile`/`unlockFile`, which `kubectl config` takes through `ModifyConfig`), so two
//!   talix runs bringing up two clusters at once, or a `kubectl config use-context` beside
//!   one, cannot lose each other's change. A held lock is waited for up to [`LOCK_WAIT`], then
//!   refused naming the lock file (a crashed kubectl can leave one behind).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A kubeconfig larger than this is not one.
const MAX_KUBECONFIG_BYTES: u64 = 16 << 20;

/// How long a merge waits for another writer's `<file>.lock` (a kubectl write takes
/// milliseconds; client-go itself retries 5 × 100 ms).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The sections whose entries are `{name, <kind>: {...}}` and merge by name.
const SECTIONS: [&str; 3] = ["clusters", "users", "contexts"];

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{}: cannot merge into it: {reason}; it was left untouched", path.display())]
    Existing { path: PathBuf, reason: String },
    #[error("the cluster's kubeconfig cannot be merged: {0}")]
    Incoming(String),
    #[error(
        "{}: another kubectl or talix has been writing {} for {}s (this is its lock file); it was left untouched\nhint: if no kubectl or talix is running, remove {} and run again",
        lock.display(), file.display(), waited.as_secs(), lock.display()
    )]
    Locked {
        lock: PathBuf,
        file: PathBuf,
        waited: std::time::Duration,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The file merged into (a symlink's target).
    pub path: PathBuf,
    /// The context that is now current.
    pub context: String,
    /// Whether the file was written.
    pub changed: bool,
}

/// The file to merge into: the first non-empty entry of `KUBECONFIG` (a colon list, as
/// kubectl reads it), else `$HOME/.kube/config`; `None` when neither is set.
pub fn target_from_env(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(list) = env("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Some(first);
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".kube").join("config"))
}

/// YAML text to a value, without ever quoting the text in the error (it holds credentials).
fn parse(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let msg = e.to_string();
        let line = msg
            .split("line ")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .filter(|n| !n.is_empty());
        match line {
            Some(n) => format!("not valid YAML (near line {n})"),
            None => "not valid YAML".to_string(),
        }
    })
}

fn entry_name(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
}

/// Merges `incoming` (a kubeconfig as talosctl writes it) into `existing` (`Null` for none):
/// returns the merged document and the context now current. `Err((true, reason))` blames the
/// existing document, `Err((false, reason))` the incoming one.
pub fn merge(existing: &Value, incoming: &Value) -> Result<(Value, String), (bool, String)> {
    let inc = incoming
        .as_object()
        .ok_or((false, "not a mapping".to_string()))?;
    let contexts = inc
        .get("contexts")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or((false, "it has no contexts".to_string()))?;
    let context = match inc.get("current-context").and_then(Value::as_str) {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => entry_name(&contexts[0])
            .ok_or((false, "its context has no name".to_string()))?
            .to_string(),
    };
    let mut out: Map<String, Value> = match existing {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err((true, "it is not a YAML mapping".to_string())),
    };
    for key in ["apiVersion", "kind"] {
        if !out.contains_key(key)
            && let Some(v) = inc.get(key)
        {
            out.insert(key.to_string(), v.clone());
        }
    }
    for section in SECTIONS {
        let mut list = match out.get(section) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err((true, format!("`{section}` is not a list"))),
        };
        let entries = match inc.get(section) {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return Err((false, format!("`{section}` is not a list"))),
        };
        for entry in entries {
            let name =
                entry_name(entry).ok_or((false, format!("an entry of `{section}` has no name")))?;
            match list.iter().position(|e| entry_name(e) == Some(name)) {
                Some(i) => list[i] = entry.clone(),
                None => list.push(entry.clone()),
            }
        }
        out.insert(section.to_string(), Value::Array(list));
    }
    out.insert(
        "current-context".to_string(),
        Value::String(context.clone()),
    );
    Ok((Value::Object(out), context))
}

/// kubectl's lock on a kubeconfig, held while it exists: `<file>.lock`, created with
/// `O_CREAT | O_EXCL` and removed when dropped (client-go `tools/clientcmd/loader.go`).
struct FileLock(PathBuf);

impl FileLock {
    /// Takes the lock on `file` (the name kubectl uses: a symlink's own path), waiting up to
    /// `wait` for another writer to release it.
    fn acquire(file: &Path, wait: std::time::Duration) -> Result<Self, MergeError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(_) => return Ok(FileLock(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if started.elapsed() >= wait {
                        return Err(MergeError::Locked {
                            lock,
                            file: file.to_path_buf(),
                            waited: started.elapsed(),
                        });
                    }
                    std::thread::sleep(pause.min(wait.saturating_sub(started.elapsed())));
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(source) => return Err(MergeError::Io { path: lock, source }),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Merges `incoming` (kubeconfig bytes) into the file at `target` (see the module docs).
pub fn merge_file(target: &Path, incoming: &[u8]) -> Result<Outcome, MergeError> {
    merge_file_within(target, incoming, LOCK_WAIT)
}

/// [`merge_file`], waiting up to `lock_wait` for another writer's lock.
pub fn merge_file_within(
    target: &Path,
    incoming: &[u8],
    lock_wait: std::time::Duration,
) -> Result<Outcome, MergeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MergeError::Io { path, source }
    };
    let incoming = parse(incoming).map_err(MergeError::Incoming)?;
    if let Some(dir) = target.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let _lock = FileLock::acquire(target, lock_wait)?;
    // Through a symlink (a dotfile manager's ~/.kube/config) to the file it names.
    let path = match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(target).map_err(io(target))?,
        _ => target.to_path_buf(),
    };
    let existing = if path.exists() {
        let bytes =
            crate::profile::validate::read_regular_bounded(&path, MAX_KUBECONFIG_BYTES, "the file")
                .map_err(|reason| MergeError::Existing {
                    path: path.clone(),
                    reason,
                })?;
        parse(&bytes).map_err(|reason| MergeError::Existing {
            path: path.clone(),
            reason,
        })?
    } else {
        Value::Null
    };
    let (merged, context) = merge(&existing, &incoming).map_err(|(theirs, reason)| {
        if theirs {
            MergeError::Existing {
                path: path.clone(),
                reason,
            }
        } else {
            MergeError::Incoming(reason)
        }
    })?;
    if merged == existing {
        return Ok(Outcome {
            path,
            context,
            changed: false,
        });
    }
    let text = serde_saphyr::to_string(&merged)
        .map_err(|e| MergeError::Incoming(format!("cannot write YAML: {e}")))?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    crate::store::local::atomic_write(&path, text.as_bytes(), Some(0o600)).map_err(io(&path))?;
    Ok(Outcome {
        path,
        context,
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// What the simulator's (and talosctl's) `kubeconfig` prints for cluster `name`.
    fn talos_kubeconfig(name: &str, server: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n    - name: {name}\n      cluster:\n        server: {server}\n        certificate-authority-data: Q0E=\nusers:\n    - name: admin@{name}\n      user:\n        client-certificate-data: Q1JU\n        client-key-data: S0VZ\ncontexts:\n    - context:\n        cluster: {name}\n        namespace: default\n        user: admin@{name}\n      name: admin@{name}\ncurrent-context: admin@{name}\n"
        )
    }

    const OTHER: &str = "apiVersion: v1\nkind: Config\npreferences:\n  colors: true\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example:6443\n    extensions:\n    - name: x\n      extension: {a: 1}\n- name: demo\n  cluster:\n    server: https://old.example:6443\nusers:\n- name: prod-admin\n  user:\n    token: t0k3n\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: prod-admin\ncurrent-context: prod\nx-unknown-field: keep me\n";

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn the_target_is_the_first_kubeconfig_entry_else_home() {
        let env = |k: &str| -> Option<OsString> {
            match k {
                "KUBECONFIG" => Some("::/a/one:/b/two".into()),
                "HOME" => Some("/home/u".into()),
                _ => None,
            }
        };
        assert_eq!(target_from_env(&env), Some(PathBuf::from("/a/one")));
        let home = |k: &str| (k == "HOME").then(|| OsString::from("/home/u"));
        assert_eq!(
            target_from_env(&home),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        let empty_list = |k: &str| match k {
            "KUBECONFIG" => Some(OsString::from("")),
            "HOME" => Some(OsString::from("/h")),
            _ => None,
        };
        assert_eq!(
            target_from_env(&empty_list),
            Some(PathBuf::from("/h/.kube/config"))
        );
        assert_eq!(target_from_env(&|_| None), None);
    }

    #[test]
    fn same_names_are_replaced_everything_else_is_kept_and_the_context_becomes_current() {
        let (merged, ctx) = merge(
            &yaml(OTHER),
            &yaml(&talos_kubeconfig("demo", "https://10.0.0.10:6443")),
        )
        .unwrap();
        assert_eq!(ctx, "admin@demo");
        assert_eq!(merged["current-context"], "admin@demo");
        let names = |s: &str| -> Vec<String> {
            merged[s]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        // The cluster `demo` replaced in place; prod's entries kept.
        assert_eq!(names("clusters"), ["prod", "demo"]);
        assert_eq!(
            merged["clusters"][1]["cluster"]["server"],
            "https://10.0.0.10:6443"
        );
        assert_eq!(
            merged["clusters"][0]["cluster"]["extensions"][0]["name"],
            "x"
        );
        assert_eq!(names("users"), ["prod-admin", "admin@demo"]);
        assert_eq!(names("contexts"), ["prod", "admin@demo"]);
        assert_eq!(merged["x-unknown-field"], "keep me");
        assert_eq!(merged["preferences"]["colors"], true);
        assert_eq!(merged["users"][0]["user"]["token"], "t0k3n");
    }

    #[test]
    fn into_nothing_it_is_the_cluster_kubeconfig() {
        let inc = yaml(&talos_kubeconfig("demo", "https://10.0.0.10:6443"));
        let (merged, _) = merge(&Value::Null, &inc).unwrap();
        assert_eq!(merged, inc);
    }

    #[test]
    fn malformed_documents_are_refused_naming_the_side() {
        let inc = yaml(&talos_kubeconfig("demo", "https://h:6443"));
        assert!(matches!(merge(&yaml("- a\n- b\n"), &inc), Err((true, _))));
        assert!(matches!(
            merge(&yaml("clusters: {a: 1}\n"), &inc),
            Err((true, r)) if r.contains("clusters")
        ));
        assert!(matches!(
            merge(&Value::Null, &yaml("kind: Config\n")),
            Err((false, _))
        ));
    }

    #[test]
    fn a_file_is_merged_0600_atomically_in_a_new_0700_dir_and_not_rewritten_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("home/.kube/config");
        let inc = talos_kubeconfig("demo", "https://10.0.0.10:6443");
        let first = merge_file(&target, inc.as_bytes()).unwrap();
        assert!(first.changed);
        assert_eq!(first.context, "admin@demo");
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(target.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let again = merge_file(&target, inc.as_bytes()).unwrap();
        assert!(!again.changed);
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(
            (after.ino(), after.mtime_nsec()),
            (meta.ino(), meta.mtime_nsec())
        );
        // No temp file left beside it.
        let left: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("config")]);
    }

    #[test]
    fn an_existing_file_keeps_its_other_contexts_and_a_broken_one_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        std::fs::write(&target, OTHER).unwrap();
        let inc = talos_kubeconfig("demo", "https://10.0.0.10:6443");
        assert!(merge_file(&target, inc.as_bytes()).unwrap().changed);
        let merged = yaml(&std::fs::read_to_string(&target).unwrap());
        assert_eq!(merged["current-context"], "admin@demo");
        assert_eq!(merged["contexts"].as_array().unwrap().len(), 2);
        assert_eq!(merged["x-unknown-field"], "keep me");

        let broken = "clusters: [\n  client-key-data: SECRETKEY\n";
        std::fs::write(&target, broken).unwrap();
        let err = merge_file(&target, inc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("left untouched"), "{err}");
        assert!(
            !err.contains("SECRETKEY"),
            "the file's content is never echoed: {err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), broken);
    }

    #[test]
    fn a_symlinked_kubeconfig_is_written_through_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-kubeconfig");
        std::fs::write(&real, OTHER).unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let inc = talos_kubeconfig("demo", "https://10.0.0.10:6443");
        let out = merge_file(&link, inc.as_bytes()).unwrap();
        assert!(out.changed);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::read_to_string(&real)
                .unwrap()
                .contains("admin@demo")
        );
    }

    #[test]
    fn a_held_lock_is_waited_for_then_refused_naming_it_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        std::fs::write(&target, OTHER).unwrap();
        let lock = dir.path().join("config.lock");
        std::fs::write(&lock, "").unwrap();
        let inc = talos_kubeconfig("demo", "https://10.0.0.10:6443");
        let err = merge_file_within(
            &target,
            inc.as_bytes(),
            std::time::Duration::from_millis(50),
        )
        .unwrap_err();
        assert!(matches!(err, MergeError::Locked { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&lock.display().to_string()), "{text}");
        assert!(text.contains("left untouched"), "{text}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), OTHER);
        assert!(lock.exists(), "another writer's lock is not ours to remove");
    }

    #[test]
    fn merges_at_the_same_time_keep_every_cluster() {
        // Two clusters brought up at once merge into one ~/.kube/config: without the lock,
        // one run's read-merge-write overwrote what the other had just written.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        std::fs::write(&target, OTHER).unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        std::thread::scope(|scope| {
            for name in &names {
                let target = &target;
                scope.spawn(move || {
                    let inc = talos_kubeconfig(name, "https://10.0.0.10:6443");
                    merge_file(target, inc.as_bytes()).unwrap();
                });
            }
        });
        let merged = yaml(&std::fs::read_to_string(&target).unwrap());
        let contexts: Vec<&str> = merged["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(entry_name)
            .collect();
        for name in &names {
            assert!(
                contexts.contains(&format!("admin@{name}").as_str()),
                "{contexts:?}"
            );
        }
        assert_eq!(contexts.len(), names.len() + 1, "{contexts:?}");
        assert!(!dir.path().join("config.lock").exists());
    }

    #[test]
    fn kubectl_respects_the_lock_talix_takes() {
        // The lock is kubectl's own convention: the real kubectl refuses to change the file
        // while talix holds it (client-go tools/clientcmd/loader.go `lockFile`).
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        std::fs::write(&target, OTHER).unwrap();
        let held = FileLock::acquire(&target, std::time::Duration::ZERO).unwrap();
        let kubectl = |args: &[&str]| {
            std::process::Command::new("kubectl")
                .args(args)
                .arg("--kubeconfig")
                .arg(&target)
                .output()
                .expect("kubectl is installed (.ci/run installs it)")
        };
        let out = kubectl(&["config", "set-context", "other", "--namespace=x"]);
        assert!(!out.status.success(), "kubectl wrote through talix's lock");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("config.lock"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), OTHER);
        drop(held);
        let out = kubectl(&["config", "set-context", "other", "--namespace=x"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
