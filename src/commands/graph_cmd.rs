//! `talix graph PROFILE [--json]`: the derivation graph as Graphviz DOT (for `dot -Tsvg`) or
//! JSON, each step coloured by what `plan` says about it. Read-only, like `plan`.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::json;

use super::{Result, Session};
use crate::derivation::{Effect, StepId};
use crate::engine::Planned;

/// Fill colour per plan status (cached green, run amber, blocked grey).
fn colour(status: &str) -> &'static str {
    match status {
        "cached" => "#b7e1a1",
        "run" => "#ffd966",
        _ => "#d9d9d9",
    }
}

/// A DOT double-quoted string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Edges `(from, to, outputs)` in step order, then dependency order; one per pair.
fn edges(planned: &[Planned]) -> Vec<(StepId, StepId, Vec<&'static str>)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for p in planned {
        for d in &p.step.deps {
            if seen.insert((d.step.clone(), p.step.id.clone())) {
                out.push((d.step.clone(), p.step.id.clone(), d.outputs.clone()));
            }
        }
    }
    out
}

/// The DOT text of a plan.
pub fn dot(profile: &str, contract: &str, planned: &[Planned]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quoted(&format!("talix {profile}")));
    let _ = writeln!(
        out,
        "  graph [label={}, labelloc=t, rankdir=LR, fontname=\"sans-serif\"];",
        quoted(&format!("{profile} (contract {contract})"))
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];"
    );
    for p in planned {
        let word = p.status.word();
        let mut attrs = vec![
            format!("label={}", quoted(&format!("{}\n{word}", p.step.id))),
            format!("fillcolor={}", quoted(colour(word))),
        ];
        if let Some(k) = p.key {
            attrs.push(format!("tooltip={}", quoted(&format!("key {k}"))));
        }
        if p.step.effect == Effect::SideEffect {
            // Side effects (receipts) get a double border.
            attrs.push("peripheries=2".into());
        }
        let _ = writeln!(
            out,
            "  {} [{}];",
            quoted(p.step.id.as_str()),
            attrs.join(", ")
        );
    }
    for (from, to, _) in edges(planned) {
        let _ = writeln!(
            out,
            "  {} -> {};",
            quoted(from.as_str()),
            quoted(to.as_str())
        );
    }
    out.push_str("}\n");
    out
}

pub(super) fn graph(s: Session, as_json: bool) -> Result<()> {
    let planned = s.engine().plan(&s.steps())?;
    let contract = s.contract.contract.to_string();
    let mut out = std::io::stdout().lock();
    if !as_json {
        out.write_all(dot(&s.profile.name, &contract, &planned).as_bytes())?;
        return Ok(());
    }
    let nodes: Vec<_> = planned
        .iter()
        .map(|p| {
            json!({
                "id": p.step.id,
                "status": p.status.word(),
                "reason": p.status.reason(),
                "key": p.key.map(|k| k.to_string()),
                "effect": p.step.effect,
                "secret": p.step.secret,
            })
        })
        .collect();
    let edges: Vec<_> = edges(&planned)
        .into_iter()
        .map(|(from, to, outputs)| json!({"from": from, "to": to, "outputs": outputs}))
        .collect();
    let doc = json!({
        "profile": s.profile.name,
        "contract": contract,
        "nodes": nodes,
        "edges": edges,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_strings_escape_quotes_backslashes_and_newlines() {
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(quoted("render/cp1"), "\"render/cp1\"");
    }
}
