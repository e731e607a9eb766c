//! `talix up --dry-run`: the commands `up` would run, in order, without running any that
//! touches a node and without writing anything. The engine walks the same graph as `up` over a
//! copy-on-write overlay of the store (writes stay in memory); the configuration steps are
//! built for real (talosctl on this machine only), the cluster steps by the stand-ins of
//! [`crate::steps::dry`], which print what the real builders would run.

use super::realise::{check_kubernetes_jump, resolve_proxmox_macs};
use super::{CliError, Result, Session};
use crate::derivation::StepId;
use crate::engine::{Engine, Realised, Status};
use crate::graph;
use crate::steps::dry::{self, DryEnv, Effect, Entry};
use crate::store::Store;
use crate::store::overlay::Overlay;

/// One step that would run, with what it would do.
#[derive(serde::Serialize)]
struct StepOut {
    id: String,
    reason: String,
    commands: Vec<Entry>,
}

pub(super) fn up_dry_run(mut s: Session, json: bool) -> Result<()> {
    let timing = crate::steps::cluster::Timing::from_env()
        .map_err(|e| CliError::input(format!("error: {e}")))?;
    check_kubernetes_jump(&s)?;
    // Every step of `up` keys on both tools: probe them in the background while the store is
    // read; only after the checks that refuse without running anything.
    s.tools.prefetch([
        crate::derivation::Tool::Talosctl,
        crate::derivation::Tool::Kubectl,
    ]);
    // Read-only (the Proxmox API): without it the configs would differ from `up`'s.
    resolve_proxmox_macs(&mut s.profile)?;
    let overlay = Overlay::new(&s.store);
    let engine = Engine {
        profile: &s.profile,
        store: &overlay,
        tools: &s.tools,
        cipher: Some(&s.cipher),
    };
    let all = s.steps();
    let config: Vec<_> = all
        .iter()
        .filter(|st| graph::BUILD_KINDS.contains(&st.id.kind()))
        .cloned()
        .collect();
    let mut ran: Vec<(StepId, String)> = Vec::new();
    let mut cached = 0usize;
    let mut note = |r: &Realised, st: &Status| {
        if r.ran {
            let why = match st {
                Status::Run { new: true, .. } => "new".to_string(),
                Status::Run { changes, .. } if changes.is_empty() => "re-observed".to_string(),
                other => other.reason(),
            };
            ran.push((r.id.clone(), why));
        } else {
            cached += 1;
        }
    };
    dry::start();
    let result = (|| -> std::result::Result<(), CliError> {
        // As `up`: configs first, then a scan only when some node must be applied.
        let builders = dry::builders(
            s.identities.clone(),
            DryEnv {
                lock: s.lock.clone(),
                talosconfig: s.profile.workspace.talosconfig(),
                kubeconfig: s.profile.workspace.kubeconfig(),
                timing,
            },
        );
        let configs = engine.realise(&config, &builders, &mut note)?;
        record_config_writes(&s, &overlay, &configs)?;
        let must_apply = engine
            .plan(&all)?
            .iter()
            .any(|p| p.step.id.kind() == "apply" && p.status != Status::Cached);
        let force = if must_apply {
            [StepId::new("discover", None)].into()
        } else {
            Default::default()
        };
        // The configuration steps are in the overlay now; the walk reports only the others.
        engine.realise_forcing(&all, &builders, &force, |r, st| {
            if !graph::BUILD_KINDS.contains(&r.id.kind()) {
                note(r, st)
            }
        })?;
        Ok(())
    })();
    let journal = dry::take();
    result?;

    let steps: Vec<StepOut> = ran
        .iter()
        .map(|(id, reason)| StepOut {
            id: id.to_string(),
            reason: reason.clone(),
            commands: journal
                .iter()
                .filter(|e| e.step == id.as_str())
                .cloned()
                .collect(),
        })
        .collect();
    let changes = journal
        .iter()
        .filter(|e| e.effect == Effect::Change)
        .count();
    if json {
        let doc = serde_json::json!({
            "profile": s.profile.name,
            "dry_run": true,
            "steps": steps,
            "cached": cached,
            "changes": changes,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON serialises")
        );
        return Ok(());
    }
    for st in &steps {
        println!("{}  ({})", st.id, st.reason);
        if st.commands.is_empty() {
            println!("  # computed by talix, no command");
        }
        for e in &st.commands {
            println!("  {}", render(e));
        }
    }
    if steps.is_empty() {
        println!(
            "{}: nothing to run; {} steps cached (dry run)",
            s.profile.name, cached
        );
    } else {
        println!(
            "{}: {} steps would run ({} commands change nodes), {} cached (dry run: nothing was run or written)",
            s.profile.name,
            steps.len(),
            changes,
            cached
        );
    }
    Ok(())
}

/// The files `up` writes after building configs (node patches, talosconfig) that would change.
fn record_config_writes(s: &Session, overlay: &Overlay<'_>, done: &[Realised]) -> Result<()> {
    for r in done.iter().filter(|r| r.ran) {
        let (target, output) = match (r.id.kind(), r.id.node()) {
            ("patch", Some(node)) => (s.profile.workspace.node_patch(node), "patch"),
            ("talosconfig", None) => (s.profile.workspace.talosconfig(), "talosconfig"),
            _ => continue,
        };
        let want = overlay
            .manifest(&r.key)?
            .and_then(|m| m.outputs.get(output).map(|o| o.hash));
        let have = std::fs::read(&target)
            .ok()
            .map(|b| crate::digest::Digest::of_domain(crate::digest::domain::OBJECT, &b));
        if want.is_some() && have == want {
            continue;
        }
        dry::record(Entry {
            step: r.id.to_string(),
            effect: Effect::Write,
            program: None,
            argv: vec![],
            text: Some(target.display().to_string()),
            when: None,
        });
    }
    Ok(())
}

/// One entry as a line: a shell command (arguments quoted where the shell needs it), a file
/// write, or a note, with its condition.
fn render(e: &Entry) -> String {
    let mut line = match (&e.program, &e.text) {
        (Some(program), _) => std::iter::once(program.as_str())
            .chain(e.argv.iter().map(String::as_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" "),
        (None, Some(text)) if e.effect == Effect::Write => format!("# write {text}"),
        (None, Some(text)) => format!("# {text}"),
        (None, None) => String::new(),
    };
    if let Some(when) = &e.when {
        line.push_str(&format!("    # {when}"));
    }
    line
}

/// `arg` as a POSIX shell word: bare when safe, else single-quoted, with `$'...'` for newlines.
pub fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_string();
    }
    if arg.contains('\n') || arg.contains('\t') {
        let mut out = String::from("$'");
        for c in arg.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_are_quoted_as_a_shell_reads_them() {
        assert_eq!(shell_quote("apply-config"), "apply-config");
        assert_eq!(shell_quote("127.0.0.1:50000"), "127.0.0.1:50000");
        assert_eq!(shell_quote("<discovered>:50000"), "'<discovered>:50000'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("a: 1\nb: 2\n"), "$'a: 1\\nb: 2\\n'");
        assert_eq!(shell_quote(""), "''");
    }
}
