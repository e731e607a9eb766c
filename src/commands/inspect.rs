//! Commands that only read: `validate`, `plan`, `why`, and the store maintenance commands.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::{CliError, Result, Session};
use crate::cli::StoreAction;
use crate::engine::{Planned, Status};
use crate::store::Store;
use crate::store::local::LocalStore;

use super::{load_profile, store_dir};

pub(super) fn validate(path: &Path, policy: crate::workspace::PathPolicy) -> Result<()> {
    let profile = load_profile(path, policy)?;
    let cps = profile.controlplanes().count();
    println!(
        "{}: profile {} is valid ({} control-plane, {} worker nodes)",
        path.display(),
        profile.name,
        cps,
        profile.nodes.len() - cps
    );
    Ok(())
}

pub(super) fn status_counts(planned: &[Planned]) -> (usize, usize, usize) {
    let count = |w: &str| planned.iter().filter(|p| p.status.word() == w).count();
    (count("cached"), count("run"), count("blocked"))
}

pub(super) fn plan(s: Session, path: &Path, as_json: bool) -> Result<()> {
    let steps = s.steps();
    // Probe every tool the keys need at once, while the first keys are computed.
    s.tools
        .prefetch(steps.iter().flat_map(|st| st.tools.iter().map(|(t, _)| *t)));
    let planned = s.engine().plan(&steps)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let steps: Vec<_> = planned
            .iter()
            .map(|p| {
                json!({
                    "id": p.step.id,
                    "status": p.status.word(),
                    "reason": p.status.reason(),
                    "key": p.key.map(|k| k.to_string()),
                    "inputs": p.inputs.as_ref().map(|i| i.flat()),
                })
            })
            .collect();
        let doc = json!({"profile": s.profile.name, "contract": s.contract.contract.to_string(), "steps": steps});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "plan for {} ({}), contract {}",
        s.profile.name,
        path.display(),
        s.contract.contract
    )?;
    let width = planned
        .iter()
        .map(|p| p.step.id.as_str().len())
        .max()
        .unwrap_or(0);
    for p in &planned {
        let reason = match &p.status {
            Status::Run {
                changes,
                new: false,
            } if changes.is_empty() => "not in the store".to_string(),
            other => other.reason(),
        };
        let line = format!(
            "  {:<8} {:<width$}  {}",
            p.status.word(),
            p.step.id.as_str(),
            reason
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    let (c, r, b) = status_counts(&planned);
    writeln!(
        out,
        "{} steps: {c} cached, {r} run, {b} blocked",
        planned.len()
    )?;
    Ok(())
}

pub(super) fn why(s: Session, path: &Path, step: &str) -> Result<()> {
    let planned = s.engine().plan(&s.steps())?;
    let Some(p) = planned.iter().find(|p| p.step.id.as_str() == step) else {
        let ids: Vec<&str> = planned.iter().map(|p| p.step.id.as_str()).collect();
        return Err(CliError::input(format!(
            "error: {}: no step {step:?}; steps are: {}",
            path.display(),
            ids.join(", ")
        )));
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "step {} ({}): {}",
        p.step.id,
        if p.step.secret {
            "secret outputs"
        } else {
            "plain outputs"
        },
        p.status.word()
    )?;
    match &p.key {
        Some(k) => writeln!(out, "key {k}")?,
        None => writeln!(
            out,
            "key unknown until {} run",
            p.status.reason().trim_start_matches("waits for ")
        )?,
    }
    writeln!(out, "inputs:")?;
    let flat = match &p.inputs {
        Some(i) => i.flat(),
        None => p
            .step
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    };
    let width = flat.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in &flat {
        writeln!(out, "  {k:<width$}  {v}")?;
    }
    let previous = match s.store.get_ref(&s.profile.name, &p.step.id)? {
        Some(k) => s.store.manifest(&k)?,
        None => None,
    };
    match (previous, &p.inputs) {
        (None, _) => writeln!(out, "never realised in this store")?,
        (Some(m), Some(inputs)) => {
            writeln!(
                out,
                "last realised {} (key {}, {} ms)",
                m.created,
                m.key.short(),
                m.duration_ms
            )?;
            let changes = inputs.diff(&m.inputs);
            if changes.is_empty() {
                writeln!(out, "no input changed since")?;
            } else {
                writeln!(out, "changed since:")?;
                for c in changes {
                    writeln!(out, "  {c}")?;
                }
            }
            for (name, info) in &m.outputs {
                writeln!(
                    out,
                    "output {name}: {}{}",
                    info.hash.short(),
                    if info.encrypted { " (encrypted)" } else { "" }
                )?;
            }
        }
        (Some(m), None) => {
            writeln!(
                out,
                "last realised {} (key {}); upstream steps must run before the new key is known",
                m.created,
                m.key.short()
            )?;
        }
    }
    Ok(())
}

pub(super) fn store_cmd(flag: Option<&Path>, action: &StoreAction) -> Result<()> {
    let (profile, verify) = match action {
        StoreAction::Verify { profile } => (profile, true),
        StoreAction::Prune { profile } => (profile, false),
    };
    let store = LocalStore::open(&store_dir(flag, profile.as_deref()))?;
    if !store.exists() {
        return Err(CliError::input(format!(
            "error: no talix store at {} (expected {}/v{})\nhint: pass --store DIR, set TALIX_STORE, or name a profile whose workspace has one",
            store.root().display(),
            store.root().display(),
            crate::store::LAYOUT_VERSION
        )));
    }
    if verify {
        let problems = store.verify()?;
        let n = store.keys()?.len();
        if problems.is_empty() {
            println!("{}: {n} objects verified", store.root().display());
            return Ok(());
        }
        return Err(CliError {
            code: 1,
            message: problems
                .iter()
                .map(|p| format!("error: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    let _lock = store.lock(true)?;
    let mut removed = store.prune()?;
    if let Some(p) = profile {
        // The workspace's scratch too (what interrupted runs left); live runs keep theirs.
        let (ws, _) = crate::workspace::Workspace::resolve(
            &std::path::absolute(p)?,
            "",
            Default::default(),
            Default::default(),
        );
        removed.extend(ws.sweep_scratch());
    }
    for r in &removed {
        println!("removed {}", r.display());
    }
    println!(
        "{}: pruned {} entries",
        store.root().display(),
        removed.len()
    );
    Ok(())
}
