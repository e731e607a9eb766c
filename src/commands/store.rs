//! `talix store ls | gc | pin | unpin | verify [--repair]`: the store's roots and what they
//! keep alive. The store walks closures (`store::gc`); this file decides what the roots are,
//! because that needs the filesystem: whether a profile file still exists, what its lock file
//! records.
//!
//! Roots:
//! - `profile:<name>`: the refs of a profile whose profile file (recorded with its refs) still
//!   exists, limited to the steps its current graph has (a removed node's refs are not roots);
//!   refs that record no profile file (written by an older talix) are kept as roots;
//! - `pin:<name>/<step>`: `talix store pin`;
//! - `lock:<name>`: objects of the profile whose outputs a lock file records (applied config
//!   hashes, pending applies, the secrets bundle), whether or not the profile file still exists.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Access, CliError, Result, Session, load_profile, store_dir};
use crate::cli::{ContractArgs, StoreAction};
use crate::derivation::{Effect, Step, StepId};
use crate::digest::Digest;
use crate::lockfile::LockFile;
use crate::store::gc::{self, Reach, Root};
use crate::store::local::LocalStore;
use crate::store::{Manifest, Pin, Store, StoreError};
use crate::workspace::{PathPolicy, Workspace};

/// What the store commands get from the command line.
pub(super) struct StoreCtx<'a> {
    pub flag: Option<&'a Path>,
    pub identity: Option<&'a Path>,
    pub policy: PathPolicy,
}

pub(super) fn store_cmd(cx: &StoreCtx<'_>, action: &StoreAction) -> Result<()> {
    match action {
        StoreAction::Prune { profile } => super::inspect::prune(cx.flag, profile.as_deref()),
        StoreAction::Verify {
            profile,
            repair,
            json,
        } => verify(cx, profile.as_deref(), *repair, *json),
        StoreAction::Ls { profile, json } => ls(cx, profile.as_deref(), *json),
        StoreAction::Gc {
            profile,
            dry_run,
            no_wait,
        } => collect(cx, profile.as_deref(), *dry_run, *no_wait),
        StoreAction::Pin { profile, steps } => pin(cx, profile, steps, true),
        StoreAction::Unpin { profile, steps } => pin(cx, profile, steps, false),
        StoreAction::Export { .. } | StoreAction::Import { .. } => {
            unreachable!("store export/import are dispatched to commands::store_archive")
        }
    }
}

/// The store a store command works on; it must exist (exit 2 otherwise).
pub(super) fn existing_store(flag: Option<&Path>, profile: Option<&Path>) -> Result<LocalStore> {
    let store = LocalStore::open(&store_dir(flag, profile))?;
    if !store.exists() {
        return Err(CliError::input(format!(
            "error: no talix store at {} (expected {}/v{})\nhint: pass --store DIR, set TALIX_STORE, or name a profile whose workspace has one",
            store.root().display(),
            store.root().display(),
            crate::store::LAYOUT_VERSION
        )));
    }
    Ok(store)
}

/// The roots of a store, and what the operator should know about how they were chosen.
struct RootSet {
    roots: Vec<Root>,
    /// Profiles whose profile file is gone: their refs are no root any more. With `true`, no
    /// lock file needs them either, so gc may drop the refs themselves.
    dropped: Vec<(String, PathBuf, bool)>,
    notes: Vec<String>,
}

/// The step ids of the profile at `path` as it is now; `None` when it does not load (then all
/// its refs stay roots: gc never guesses).
fn current_steps(path: &Path, policy: PathPolicy) -> Option<BTreeSet<StepId>> {
    let profile = crate::profile::load_with(path, policy).ok()?.profile;
    let lock = LockFile::load(profile.workspace.lock_file()).unwrap_or_default();
    let contract = crate::graph::effective_contract(&profile, &lock, true).ok()?;
    Some(
        crate::graph::steps(&profile, contract.contract)
            .into_iter()
            .map(|s| s.id)
            .collect(),
    )
}

/// The hashes lock file `path` records (what must not be collected); `None` when absent.
fn lock_hashes(path: &Path) -> Result<Option<BTreeSet<Digest>>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let lock = LockFile::load(path).map_err(|e| CliError {
        code: crate::exit::Exit::Failure,
        message: format!(
            "error: {e}\nnothing was removed: gc must know what the lock file records"
        ),
    })?;
    let mut hashes: BTreeSet<Digest> = lock.nodes.values().map(|n| n.applied_config).collect();
    hashes.extend(lock.pending.applies.values().copied());
    if let Some(s) = &lock.secrets {
        hashes.insert(s.bundle_hash);
    }
    if let Some(b) = &lock.bootstrap {
        hashes.insert(b.secrets_hash);
    }
    Ok(Some(hashes))
}

/// Every manifest that can be read (trusted: it belongs to its key), by key.
fn manifests(store: &dyn Store) -> Result<BTreeMap<Digest, Option<Manifest>>> {
    let mut out = BTreeMap::new();
    for key in store.keys()? {
        let m = match store.manifest(&key) {
            Ok(m) => m,
            Err(e) if e.is_damage() => None,
            Err(e) => return Err(e.into()),
        };
        out.insert(key, m);
    }
    Ok(out)
}

/// The roots of `store`. With `all` (every manifest) `None`, lock files are not read: only the
/// refs and pins (what `verify` checks for presence).
fn root_set(
    store: &LocalStore,
    all: Option<&BTreeMap<Digest, Option<Manifest>>>,
    policy: PathPolicy,
) -> Result<RootSet> {
    let mut set = RootSet {
        roots: vec![],
        dropped: vec![],
        notes: vec![],
    };
    for name in store.ref_profiles()? {
        let refs = store.refs(&name)?;
        let label = format!("profile:{name}");
        let source = store.ref_source(&name)?;
        let Some(source) = source else {
            set.notes.push(format!(
                "refs of {name} record no profile file (written by an older talix): kept as roots"
            ));
            set.roots.extend(refs.values().map(|k| Root {
                key: *k,
                label: label.clone(),
            }));
            continue;
        };
        let live = source.is_file();
        if live {
            let current = current_steps(&source, policy);
            if current.is_none() {
                set.notes.push(format!(
                    "{} does not load: every ref of {name} kept as a root",
                    source.display()
                ));
            }
            for (step, key) in &refs {
                if current.as_ref().is_none_or(|c| c.contains(step)) {
                    set.roots.push(Root {
                        key: *key,
                        label: label.clone(),
                    });
                }
            }
        }
        let (ws, _) = Workspace::resolve(&source, &name, Default::default(), policy);
        let Some(all) = all else {
            continue;
        };
        let hashes = lock_hashes(ws.lock_file())?;
        if let Some(hashes) = &hashes {
            let label = format!("lock:{name}");
            for (key, m) in all {
                if let Some(m) = m
                    && m.profile == name
                    && m.outputs.values().any(|o| hashes.contains(&o.hash))
                {
                    set.roots.push(Root {
                        key: *key,
                        label: label.clone(),
                    });
                }
            }
        }
        if !live {
            set.dropped.push((name, source, hashes.is_none()));
        }
    }
    for p in store.pins()? {
        set.roots.push(Root {
            key: p.key,
            label: format!("pin:{}/{}", p.profile, p.step),
        });
    }
    set.roots.sort();
    set.roots.dedup();
    Ok(set)
}

/// `5s`, `3m`, `2h`, `4d`.
fn human_age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn age_of(created: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((time::OffsetDateTime::now_utc() - t).whole_seconds())
}

/// The name of the profile at `path` (loaded and validated; exit 2 when it is not valid).
fn profile_name(path: &Path, policy: PathPolicy) -> Result<String> {
    Ok(load_profile(path, policy)?.name)
}

fn ls(cx: &StoreCtx<'_>, profile: Option<&Path>, as_json: bool) -> Result<()> {
    let store = existing_store(cx.flag, profile)?;
    let only = profile.map(|p| profile_name(p, cx.policy)).transpose()?;
    let all = manifests(&store)?;
    let set = root_set(&store, Some(&all), cx.policy)?;
    // Listing never fails on damage: a root behind an untrusted manifest simply reaches less.
    let reach = lenient_reach(&store, &set.roots)?;
    for n in &set.notes {
        eprintln!("note: {n}");
    }
    struct Row {
        key: Digest,
        m: Option<Manifest>,
        damaged: bool,
        size: u64,
        roots: Vec<String>,
    }
    let mut rows = Vec::new();
    for (key, trusted) in all {
        // Damaged: what every read would refuse (a manifest not of its key, an output that
        // does not match). What it says about itself is still shown when it parses.
        let damaged = trusted.is_none()
            || match store.checked(&key) {
                Ok(_) => false,
                Err(e) if e.is_damage() || matches!(e, StoreError::MissingOutput { .. }) => true,
                Err(e) => return Err(e.into()),
            };
        let m = trusted.or_else(|| store.load_manifest(&key).ok().flatten());
        if let Some(name) = &only
            && m.as_ref().is_none_or(|m| &m.profile != name)
        {
            continue;
        }
        let size = store.stored_size(&key)?.unwrap_or(0);
        let roots = reach
            .get(&key)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        rows.push(Row {
            key,
            m,
            damaged,
            size,
            roots,
        });
    }
    let sort_key = |r: &Row| {
        (
            r.m.as_ref()
                .map(|m| (m.profile.clone(), m.step.clone(), m.created.clone())),
            r.key,
        )
    };
    rows.sort_by_key(sort_key);
    let mut out = std::io::stdout().lock();
    if as_json {
        let objects: Vec<_> = rows
            .iter()
            .map(|r| {
                let m = r.m.as_ref();
                json!({
                    "key": r.key.to_string(),
                    "step": m.map(|m| m.step.as_str()),
                    "profile": m.map(|m| m.profile.as_str()),
                    "effect": m.map(|m| m.effect),
                    "secret": m.map(|m| m.outputs.values().any(|o| o.encrypted)),
                    "size": r.size,
                    "created": m.map(|m| m.created.as_str()),
                    "age_s": m.and_then(|m| age_of(&m.created)),
                    "damaged": r.damaged,
                    "roots": r.roots,
                })
            })
            .collect();
        let doc = json!({
            "store": store.root().display().to_string(),
            "objects": objects,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let width = rows
        .iter()
        .filter_map(|r| {
            r.m.as_ref()
                .map(|m| m.step.as_str().len() + if r.damaged { 10 } else { 0 })
        })
        .max()
        .unwrap_or(9)
        .max(9);
    writeln!(
        out,
        "{:<12}  {:<width$}  {:<12}  {:>9}  {:>5}  {:<6}  ROOTS",
        "KEY", "STEP", "PROFILE", "SIZE", "AGE", "SECRET"
    )?;
    let (mut garbage, mut garbage_bytes, mut total) = (0, 0, 0);
    for r in &rows {
        total += r.size;
        if r.roots.is_empty() {
            garbage += 1;
            garbage_bytes += r.size;
        }
        let (step, prof, age, secret) = match &r.m {
            Some(m) => (
                format!("{}{}", m.step, if r.damaged { " (damaged)" } else { "" }),
                m.profile.clone(),
                age_of(&m.created).map(human_age).unwrap_or_default(),
                if m.outputs.values().any(|o| o.encrypted) {
                    "secret"
                } else {
                    "plain"
                },
            ),
            None => ("(damaged)".into(), "?".into(), String::new(), "?"),
        };
        let roots = if r.roots.is_empty() {
            "-".to_string()
        } else {
            r.roots.join(",")
        };
        writeln!(
            out,
            "{:<12}  {step:<width$}  {prof:<12}  {:>9}  {age:>5}  {secret:<6}  {roots}",
            r.key.short(),
            r.size
        )?;
    }
    writeln!(
        out,
        "{} objects, {total} bytes; {garbage} reached by no root ({garbage_bytes} bytes, what `talix store gc` frees)",
        rows.len()
    )?;
    Ok(())
}

/// Like [`gc::reach`], but a root behind an untrusted manifest reaches only itself.
fn lenient_reach(store: &dyn Store, roots: &[Root]) -> Result<Reach> {
    let mut reach = Reach::new();
    for root in roots {
        match gc::reach(store, std::slice::from_ref(root)) {
            Ok(r) => {
                for (k, labels) in r {
                    reach.entry(k).or_default().extend(labels);
                }
            }
            Err(gc::GcError::Untrusted { .. }) => {
                reach
                    .entry(root.key)
                    .or_default()
                    .insert(root.label.clone());
            }
            Err(gc::GcError::Store(e)) => return Err(e.into()),
        }
    }
    Ok(reach)
}

fn take_lock(store: &LocalStore, no_wait: bool) -> Result<Box<dyn crate::store::WriteLock>> {
    store.lock(!no_wait).map_err(|e| match e {
        StoreError::Locked { .. } => CliError {
            code: crate::exit::Exit::Failure,
            message: format!(
                "error: {e}\nnothing was removed\nhint: wait for it to finish, or run gc without --no-wait to wait for it"
            ),
        },
        other => other.into(),
    })
}

fn collect(cx: &StoreCtx<'_>, profile: Option<&Path>, dry_run: bool, no_wait: bool) -> Result<()> {
    let store = existing_store(cx.flag, profile)?;
    // Under the writer lock from here on: no `up` or `build` publishes an object or moves a
    // ref between choosing the roots and deleting what they do not reach.
    let _lock = take_lock(&store, no_wait)?;
    let all = manifests(&store)?;
    let set = root_set(&store, Some(&all), cx.policy)?;
    for n in &set.notes {
        eprintln!("note: {n}");
    }
    for (name, source, _) in &set.dropped {
        eprintln!(
            "note: {} is gone: the refs of {name} are no longer a root",
            source.display()
        );
    }
    let reach = gc::reach(&store, &set.roots).map_err(|e| CliError {
        code: crate::exit::Exit::Failure,
        message: format!("error: {e}"),
    })?;
    let freed = gc::collect(&store, &reach, dry_run)?;
    if !dry_run {
        for (name, _, unneeded) in &set.dropped {
            if *unneeded {
                store.remove_refs(name)?;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let verb = if dry_run { "would remove" } else { "removed" };
    for f in &freed {
        writeln!(
            out,
            "{verb} {} {} ({}) {} bytes",
            f.key,
            f.step.as_ref().map(|s| s.as_str()).unwrap_or("(damaged)"),
            f.profile.as_deref().unwrap_or("?"),
            f.size
        )?;
    }
    let bytes: u64 = freed.iter().map(|f| f.size).sum();
    let kept = all.len() - freed.len();
    writeln!(
        out,
        "{}: {} {} objects, {bytes} bytes; {kept} objects kept",
        store.root().display(),
        if dry_run { "would free" } else { "freed" },
        freed.len()
    )?;
    Ok(())
}

fn pin(cx: &StoreCtx<'_>, profile: &Path, steps: &[String], add: bool) -> Result<()> {
    let name = profile_name(profile, cx.policy)?;
    let store = existing_store(cx.flag, Some(profile))?;
    let _lock = store.lock(true)?;
    let mut out = std::io::stdout().lock();
    if add {
        let refs = store.refs(&name)?;
        if refs.is_empty() {
            return Err(CliError::input(format!(
                "error: {}: nothing of {name} is in the store {} yet\nhint: run `talix build {}` first",
                profile.display(),
                store.root().display(),
                profile.display()
            )));
        }
        let chosen: Vec<(StepId, Digest)> = if steps.is_empty() {
            refs.into_iter().collect()
        } else {
            let mut chosen = Vec::new();
            for s in steps {
                let id = StepId(s.clone());
                match refs.get(&id) {
                    Some(k) => chosen.push((id, *k)),
                    None => {
                        return Err(CliError::input(format!(
                            "error: {}: step {s:?} of {name} has no realisation in the store; realised steps are: {}",
                            profile.display(),
                            refs.keys()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
            }
            chosen
        };
        for (step, key) in chosen {
            store.pin(&Pin {
                profile: name.clone(),
                step: step.clone(),
                key,
            })?;
            writeln!(out, "pinned {step} {key}")?;
        }
        return Ok(());
    }
    let wanted: BTreeSet<&str> = steps.iter().map(String::as_str).collect();
    let mut removed = 0;
    for p in store.pins()? {
        if p.profile == name && (wanted.is_empty() || wanted.contains(p.step.as_str())) {
            store.unpin(&p)?;
            writeln!(out, "unpinned {} {}", p.step, p.key)?;
            removed += 1;
        }
    }
    if removed == 0 {
        writeln!(out, "no pins of {name} to remove")?;
    }
    Ok(())
}

/// One thing `verify` found wrong.
struct Problem {
    /// From the manifest (or the ref or pin naming a missing object).
    step: Option<StepId>,
    profile: Option<String>,
    effect: Option<Effect>,
    /// The object is absent (a ref or pin names it), rather than damaged.
    missing: bool,
    what: String,
}

impl Problem {
    /// The problem and the way out; `repaired`: `--repair` already rebuilt what it could.
    fn line(&self, repaired: bool) -> String {
        let step = self.step.as_ref().map(|s| s.as_str()).unwrap_or("it");
        let hint = match self.effect {
            Some(Effect::SideEffect | Effect::Observe) => format!(
                "cannot be rebuilt: {step} is a receipt of a step with effects (the cluster, not talix, holds what it records); {}the next `talix up` records it again (the lock file remembers what was applied, so nothing is sent twice)",
                if self.missing {
                    ""
                } else {
                    "`talix store prune` removes it and "
                }
            ),
            _ if repaired => format!(
                "not rebuilt: {step} is not a step --repair can rebuild (an old realisation, another profile's object, or a step built from receipts such as kubeconfig); `talix store prune` removes it, the next run rebuilds what is still needed"
            ),
            _ => "`talix store verify --repair PROFILE` rebuilds it (or `talix store prune` removes it)"
                .to_string(),
        };
        format!("{}\n  {hint}", self.what)
    }
}

/// Every object checked the way every read checks it, plus every live root's object present.
fn audit(store: &LocalStore, policy: PathPolicy) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for key in store.keys()? {
        match store.checked(&key) {
            Ok(_) => {}
            Err(e @ (StoreError::Damaged { .. } | StoreError::MissingOutput { .. })) => {
                let m = store.load_manifest(&key).ok().flatten();
                problems.push(Problem {
                    step: m.as_ref().map(|m| m.step.clone()),
                    profile: m.as_ref().map(|m| m.profile.clone()),
                    effect: m.as_ref().map(|m| m.effect),
                    missing: false,
                    what: e.to_string().lines().next().unwrap_or_default().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let present: BTreeSet<Digest> = store.keys()?.into_iter().collect();
    let set = root_set(store, None, policy)?;
    let mut seen = BTreeSet::new();
    // The steps (and so the effects) of missing objects, from the profiles' refs and pins.
    let mut named: BTreeMap<Digest, (String, StepId)> = BTreeMap::new();
    for name in store.ref_profiles()? {
        for (step, key) in store.refs(&name)? {
            named.insert(key, (name.clone(), step));
        }
    }
    for p in store.pins()? {
        named.insert(p.key, (p.profile, p.step));
    }
    for root in &set.roots {
        if present.contains(&root.key) || !seen.insert(root.key) {
            continue;
        }
        let (profile, step) = named
            .get(&root.key)
            .cloned()
            .map(|(p, s)| (Some(p), Some(s)))
            .unwrap_or((None, None));
        problems.push(Problem {
            effect: step.as_ref().map(|s| effect_of_kind(s.kind())),
            missing: true,
            what: format!(
                "store object {}{} is missing (named by {})",
                root.key,
                step.as_ref().map(|s| format!(" ({s})")).unwrap_or_default(),
                root.label
            ),
            step,
            profile,
        });
    }
    Ok(problems)
}

/// The effect of a step kind, for a missing object (no manifest to ask).
fn effect_of_kind(kind: &str) -> Effect {
    match kind {
        "secrets" | "base-config" | "talosconfig" | "patch" | "render" | "kubeconfig" => {
            Effect::Pure
        }
        "discover" => Effect::Observe,
        _ => Effect::SideEffect,
    }
}

/// The steps `--repair` may rebuild: pure steps whose dependencies are all such steps (a pure
/// step built from a receipt needs the cluster).
fn pure_prefix(steps: Vec<Step>) -> Vec<Step> {
    let mut ok: BTreeSet<StepId> = BTreeSet::new();
    let mut out = Vec::new();
    for step in steps {
        if step.effect == Effect::Pure && step.deps.iter().all(|d| ok.contains(&d.step)) {
            ok.insert(step.id.clone());
            out.push(step);
        }
    }
    out
}

fn verify(cx: &StoreCtx<'_>, profile: Option<&Path>, repair: bool, as_json: bool) -> Result<()> {
    let store = existing_store(cx.flag, profile)?;
    let mut problems = audit(&store, cx.policy)?;
    if repair && !problems.is_empty() {
        let targets: Vec<PathBuf> = match profile {
            Some(p) => vec![p.to_path_buf()],
            None => {
                // Every profile a problem belongs to whose file the refs recorded.
                let names: BTreeSet<String> =
                    problems.iter().filter_map(|p| p.profile.clone()).collect();
                let mut t = Vec::new();
                for n in names {
                    match store.ref_source(&n)? {
                        Some(src) if src.is_file() => t.push(src),
                        _ => eprintln!(
                            "note: the store records no existing profile file for {n}: name it (`talix store verify --repair PROFILE`) to rebuild its objects"
                        ),
                    }
                }
                t
            }
        };
        for path in targets {
            repair_profile(cx, &store, &path)?;
        }
        problems = audit(&store, cx.policy)?;
    }
    let n = store.keys()?.len();
    // With --json the document is written first, also when objects are damaged; a failure to
    // write it never hides damage (the exit status is the verdict).
    let mut written = Ok(());
    if as_json {
        let doc = serde_json::json!({
            "store": store.root().display().to_string(),
            "objects": n,
            "ok": problems.is_empty(),
            "problems": problems.iter().map(|p| p.line(repair)).collect::<Vec<_>>(),
        });
        written = writeln!(
            super::DataOut::lock(),
            "{}",
            serde_json::to_string_pretty(&doc)?
        );
    }
    if problems.is_empty() {
        if as_json {
            return Ok(written?);
        }
        super::outln!("{}: {n} objects verified", store.root().display());
        return Ok(());
    }
    let receipts = problems
        .iter()
        .filter(|p| matches!(p.effect, Some(Effect::SideEffect | Effect::Observe)))
        .count();
    let mut message: Vec<String> = problems
        .iter()
        .map(|p| format!("error: {}", p.line(repair)))
        .collect();
    message.push(format!(
        "{}: {} problems in {n} objects ({receipts} receipts that cannot be rebuilt)",
        store.root().display(),
        problems.len()
    ));
    Err(CliError {
        code: crate::exit::Exit::Failure,
        message: message.join("\n"),
    })
}

/// Re-realise the pure steps of the profile at `path` into `store`: a damaged object is
/// discarded and rebuilt, a missing one built, an intact one left alone.
fn repair_profile(cx: &StoreCtx<'_>, store: &LocalStore, path: &Path) -> Result<()> {
    let s = Session::open(
        Some(store.root()),
        cx.identity,
        path,
        &ContractArgs::default(),
        cx.policy,
        Access::Read,
    )?;
    let _lock = store.lock(true)?;
    s.store.set_ref_source(&s.profile.name, &s.profile.source)?;
    let steps = pure_prefix(s.steps());
    let builders = crate::steps::builders(&s.step_env());
    let mut rebuilt = 0;
    s.engine().realise(&steps, &builders, |r, _| {
        if r.ran {
            rebuilt += 1;
            println!("rebuilt {} {}", r.id, r.key);
        }
    })?;
    super::outln!(
        "{}: {rebuilt} of {} pure steps rebuilt",
        s.profile.name,
        steps.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_rebuilds_only_pure_steps_whose_inputs_are_pure() {
        let step = |id: &str, effect, deps: &[&str]| {
            deps.iter()
                .fold(Step::new(StepId(id.into()), 1, effect), |s, d| {
                    s.dep(StepId((*d).into()), &[])
                })
        };
        let steps = vec![
            step("secrets", Effect::Pure, &[]),
            step("render/a", Effect::Pure, &["secrets"]),
            step("apply/a", Effect::SideEffect, &["render/a"]),
            step("bootstrap", Effect::SideEffect, &["secrets"]),
            step("kubeconfig", Effect::Pure, &["bootstrap", "secrets"]),
            step("discover", Effect::Observe, &[]),
        ];
        let ids: Vec<String> = pure_prefix(steps).into_iter().map(|s| s.id.0).collect();
        assert_eq!(ids, ["secrets", "render/a"]);
    }

    #[test]
    fn ages_read_as_the_largest_sensible_unit() {
        assert_eq!(human_age(-3), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 3600), "3h");
        assert_eq!(human_age(5 * 86400), "5d");
    }
}
