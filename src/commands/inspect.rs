//! Commands that only read: `validate`, `plan`, `why`, and the store maintenance commands.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::{CliError, Result, Session};
use crate::engine::{Planned, Status};
use crate::store::Store;

use super::load_profile;

pub(super) fn validate(
    path: &Path,
    policy: crate::workspace::PathPolicy,
    as_json: bool,
) -> Result<()> {
    if as_json {
        return validate_json(path, policy);
    }
    let profile = load_profile(path, policy)?;
    let cps = profile.controlplanes().count();
    super::outln!(
        "{}: profile {} is valid ({} control-plane, {} worker nodes)",
        path.display(),
        profile.name,
        cps,
        profile.nodes.len() - cps
    );
    Ok(())
}

fn findings_json(findings: &[crate::profile::Finding]) -> serde_json::Value {
    findings
        .iter()
        .map(|f| {
            json!({
                "file": f.file.display().to_string(),
                "line": f.line,
                "field": f.field,
                "message": f.message,
            })
        })
        .collect()
}

/// `validate --json`: the same findings as the text, on stdout; exit 2 when there are errors
/// (which also go to stderr, as without --json).
fn validate_json(path: &Path, policy: crate::workspace::PathPolicy) -> Result<()> {
    let (doc, result) = match crate::profile::load_with(path, policy) {
        Ok(loaded) => {
            let cps = loaded.profile.controlplanes().count();
            let doc = json!({
                "profile": path.display().to_string(),
                "valid": true,
                "name": loaded.profile.name,
                "controlplane_nodes": cps,
                "worker_nodes": loaded.profile.nodes.len() - cps,
                "errors": [],
                "warnings": findings_json(&loaded.warnings),
            });
            (doc, Ok(()))
        }
        Err(e) => {
            let doc = json!({
                "profile": path.display().to_string(),
                "valid": false,
                "errors": findings_json(&e.errors),
                "warnings": findings_json(&e.warnings),
            });
            (doc, Err(CliError::input(e.to_string())))
        }
    };
    let written = writeln!(
        super::DataOut::lock(),
        "{}",
        serde_json::to_string_pretty(&doc)?
    );
    // The verdict wins over a failure to write the document.
    result?;
    Ok(written?)
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
    let mut out = super::DataOut::lock();
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

pub(super) fn why(s: Session, path: &Path, step: &str, as_json: bool) -> Result<()> {
    let planned = s.engine().plan(&s.steps())?;
    let Some(p) = planned.iter().find(|p| p.step.id.as_str() == step) else {
        let ids: Vec<&str> = planned.iter().map(|p| p.step.id.as_str()).collect();
        return Err(CliError::input(format!(
            "error: {}: no step {step:?}; steps are: {}",
            path.display(),
            ids.join(", ")
        )));
    };
    let previous = match s.store.get_ref(&s.profile.name, &p.step.id)? {
        Some(k) => s.store.manifest(&k)?,
        None => None,
    };
    let flat = match &p.inputs {
        Some(i) => i.flat(),
        None => p
            .step
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    };
    let mut out = super::DataOut::lock();
    if as_json {
        // The same facts as the text: inputs as printed (secrets as hashes), never a value.
        let last = previous.as_ref().map(|m| {
            let changes = p.inputs.as_ref().map(|inputs| {
                inputs
                    .diff(&m.inputs)
                    .into_iter()
                    .map(|c| json!({"input": c.input, "old": c.old, "new": c.new}))
                    .collect::<Vec<_>>()
            });
            let outputs: serde_json::Map<String, serde_json::Value> = m
                .outputs
                .iter()
                .map(|(name, info)| {
                    (
                        name.clone(),
                        json!({"hash": info.hash.to_string(), "size": info.size, "encrypted": info.encrypted}),
                    )
                })
                .collect();
            json!({
                "key": m.key.to_string(),
                "created": m.created,
                "duration_ms": m.duration_ms,
                "changes": changes,
                "outputs": outputs,
            })
        });
        let doc = json!({
            "profile": s.profile.name,
            "step": p.step.id.as_str(),
            "secret": p.step.secret,
            "status": p.status.word(),
            "reason": p.status.reason(),
            "key": p.key.map(|k| k.to_string()),
            "inputs": flat,
            "last_realised": last,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
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
    let width = flat.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in &flat {
        writeln!(out, "  {k:<width$}  {v}")?;
    }
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

/// `talix store prune [PROFILE]`.
pub(super) fn prune(flag: Option<&Path>, profile: Option<&Path>) -> Result<()> {
    let store = super::store::existing_store(flag, profile)?;
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
        super::outln!("removed {}", r.display());
    }
    super::outln!(
        "{}: pruned {} entries",
        store.root().display(),
        removed.len()
    );
    Ok(())
}

/// `talix schema [--markdown]`: the profile's JSON Schema, or the profile reference rendered
/// from it (both generated from the parser's types, see `profile::schema`).
pub(super) fn schema(markdown: bool) -> Result<()> {
    use crate::profile::schema;
    let text = if markdown {
        schema::reference_markdown(&schema::profile_schema())
    } else {
        schema::profile_schema_text()
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
