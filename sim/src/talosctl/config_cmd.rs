//! `talosctl config endpoint|node|context|contexts|info|merge` (talosctl-cli.md §9): client-side
//! edits of the talosconfig, written back 0600 in 4-space YAML, with talosctl's messages.

use std::path::PathBuf;

use super::flags::{self, FlagKind, FlagSpec, GLOBAL_FLAGS, ParsedFlags};
use super::talosconfig::{self, Talosconfig, TalosconfigError};
use super::{CliError, command_usage, exact_args, minimum_args};
use crate::machineconfig::yaml::{self, Yaml};
use crate::pki;

fn group_usage() -> String {
    "Manage the client configuration file (talosconfig)\n\nUsage:\n  talosctl config [command]\n\nAvailable Commands:\n  context     Set the current context\n  contexts    List defined contexts\n  endpoint    Set the endpoint(s) for the current context\n  info        Show information about the current context\n  merge       Merge additional contexts from another client configuration file\n  node        Set the node(s) for the current context\n\nFlags:\n  -h, --help   help for config\n\nUse \"talosctl config [command] --help\" for more information about a command.\n".to_string()
}

const INFO_FLAGS: &[FlagSpec] = &[FlagSpec::new(
    "output",
    Some('o'),
    FlagKind::String,
    "text",
    "output format (json|yaml|text). Default text.",
)];

/// Runs `talosctl config ...` (arguments after `config`).
pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let Some(position) = super::find_command_word(&args).map(|(i, _)| i) else {
        print!("{}", group_usage());
        return Ok(());
    };
    let mut rest = args.clone();
    let sub = rest.remove(position);
    let (use_line, extra): (&str, &[FlagSpec]) = match sub.as_str() {
        "endpoint" | "endpoints" => ("config endpoint <endpoint>...", &[]),
        "node" | "nodes" => ("config node <endpoint>...", &[]),
        "context" | "use-context" => ("config context <context>", &[]),
        "contexts" | "get-contexts" => ("config contexts", &[]),
        "info" => ("config info", INFO_FLAGS),
        "merge" => ("config merge <from>", &[]),
        _ => {
            print!("{}", group_usage());
            return Ok(());
        }
    };
    let mut specs: Vec<FlagSpec> = extra.to_vec();
    specs.extend_from_slice(GLOBAL_FLAGS);
    let usage = command_usage(use_line, extra, true);
    let parsed = flags::parse(&rest, &specs).map_err(|e| CliError::new(e, &usage))?;
    if parsed.help {
        print!("{usage}");
        return Ok(());
    }
    let fail = |e: String| CliError::new(e, &usage);
    let args = &parsed.positionals;
    match sub.as_str() {
        "endpoint" | "endpoints" => {
            minimum_args(args, 1, &usage)?;
            let trimmed = args.iter().map(|a| a.trim().to_string()).collect();
            edit_current(&parsed, |ctx| ctx.endpoints = trimmed).map_err(fail)
        }
        "node" | "nodes" => {
            let trimmed = args.iter().map(|a| a.trim().to_string()).collect();
            edit_current(&parsed, |ctx| ctx.nodes = trimmed).map_err(fail)
        }
        "context" | "use-context" => {
            exact_args(args, 1, &usage)?;
            let (path, mut config) = load(&parsed).map_err(fail)?;
            if !config.contexts.contains_key(&args[0]) {
                return Err(fail(
                    TalosconfigError::UndefinedContext(args[0].clone()).to_string(),
                ));
            }
            config.context = args[0].clone();
            config
                .save(&path, 0o600)
                .map_err(|e| fail(format!("error writing config: {e}")))
        }
        "contexts" | "get-contexts" => {
            // No Args validator upstream: extra arguments are ignored.
            let (_, config) = load(&parsed).map_err(fail)?;
            print!("{}", contexts_table(&config));
            Ok(())
        }
        "info" => {
            super::no_args(args, "config info", &usage)?;
            let (_, config) = load(&parsed).map_err(fail)?;
            print!("{}", info(&config, &parsed).map_err(fail)?);
            Ok(())
        }
        _ => {
            minimum_args(args, 1, &usage)?;
            merge(&parsed, &args[0]).map_err(fail)
        }
    }
}

fn load(parsed: &ParsedFlags) -> Result<(PathBuf, Talosconfig), String> {
    let explicit = parsed.string("talosconfig");
    let path = talosconfig::resolve_path(Some(explicit.as_str()).filter(|p| !p.is_empty()))
        .map_err(|e| format!("error reading config: {e}"))?;
    let config = Talosconfig::load(&path).map_err(|e| format!("error reading config: {e}"))?;
    Ok((path, config))
}

/// The context a `config` subcommand edits: upstream first insists on a valid current context
/// (`openConfigAndContext`), then picks `--context` if given (`getContextData`).
fn context_name(config: &Talosconfig, parsed: &ParsedFlags) -> Result<String, String> {
    if config.context.is_empty() {
        return Err(TalosconfigError::NoContext.to_string());
    }
    if !config.contexts.contains_key(&config.context) {
        return Err(TalosconfigError::UndefinedContext(config.context.clone()).to_string());
    }
    let name = match parsed.string("context") {
        name if name.is_empty() => config.context.clone(),
        name => name,
    };
    if !config.contexts.contains_key(&name) {
        return Err(TalosconfigError::UndefinedContext(name).to_string());
    }
    Ok(name)
}

fn edit_current(
    parsed: &ParsedFlags,
    edit: impl FnOnce(&mut talosconfig::TalosContext),
) -> Result<(), String> {
    let (path, mut config) = load(parsed)?;
    let name = context_name(&config, parsed)?;
    if let Some(ctx) = config.contexts.get_mut(&name) {
        edit(ctx);
    }
    config
        .save(&path, 0o600)
        .map_err(|e| format!("error writing config: {e}"))
}

/// Go's text/tabwriter with padding 3 (the last column is not padded).
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                out.push_str(&format!("{cell:<width$}", width = widths[c] + 3));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

fn contexts_table(config: &Talosconfig) -> String {
    let mut rows = vec![vec![
        "CURRENT".to_string(),
        "NAME".to_string(),
        "ENDPOINTS".to_string(),
        "NODES".to_string(),
    ]];
    for (name, ctx) in &config.contexts {
        let current = if *name == config.context { "*" } else { "" };
        let nodes = if ctx.nodes.len() > 3 {
            format!("{}...", ctx.nodes[..3].join(","))
        } else {
            ctx.nodes.join(",")
        };
        rows.push(vec![
            current.to_string(),
            name.clone(),
            ctx.endpoints.join(","),
            nodes,
        ]);
    }
    tabwrite(&rows)
}

/// go-humanize's relative time (`1 year from now`).
pub fn humanize_from_now(seconds: i64) -> String {
    let (amount, suffix) = if seconds >= 0 {
        (seconds, "from now")
    } else {
        (-seconds, "ago")
    };
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const WEEK: i64 = 7 * DAY;
    const MONTH: i64 = 30 * DAY;
    const YEAR: i64 = 12 * MONTH;
    let text = match amount {
        0 => return "now".to_string(),
        a if a < 2 => "1 second".to_string(),
        a if a < MINUTE => format!("{a} seconds"),
        a if a < 2 * MINUTE => "1 minute".to_string(),
        a if a < HOUR => format!("{} minutes", a / MINUTE),
        a if a < 2 * HOUR => "1 hour".to_string(),
        a if a < DAY => format!("{} hours", a / HOUR),
        a if a < 2 * DAY => "1 day".to_string(),
        a if a < WEEK => format!("{} days", a / DAY),
        a if a < 2 * WEEK => "1 week".to_string(),
        a if a < MONTH => format!("{} weeks", a / WEEK),
        a if a < 2 * MONTH => "1 month".to_string(),
        a if a < YEAR => format!("{} months", a / MONTH),
        a if a < 18 * MONTH => "1 year".to_string(),
        a if a < 2 * YEAR => "2 years".to_string(),
        a => format!("{} years", a / YEAR),
    };
    format!("{text} {suffix}")
}

fn info(config: &Talosconfig, parsed: &ParsedFlags) -> Result<String, String> {
    let name = context_name(config, parsed)?;
    let ctx = &config.contexts[&name];
    // configInfo: roles and expiry only when the context has a client certificate.
    let (roles, cert_ttl, cert_not_after) = if ctx.crt.is_empty() {
        (Vec::new(), String::new(), String::new())
    } else {
        let facts = pki::decode_b64_text(&ctx.crt)
            .and_then(|pem| pki::certificate_facts(&pem))
            .map_err(|e| e.to_string())?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let not_after = time::OffsetDateTime::from_unix_timestamp(facts.not_after_unix)
            .map_err(|e| e.to_string())?;
        let mut roles = facts.organizations.clone();
        roles.sort();
        (
            roles,
            humanize_from_now(facts.not_after_unix - now),
            not_after.date().to_string(),
        )
    };
    // Upstream prints the file's current context name even when --context picked another.
    let shown_context = &config.context;
    let list_or = |items: &[String]| {
        if items.is_empty() {
            "not defined".to_string()
        } else {
            items.join(", ")
        }
    };
    match parsed.string("output").as_str() {
        "text" => {
            let mut out = format!(
                "Current context:     {shown_context}\nNodes:               {}\nEndpoints:           {}",
                list_or(&ctx.nodes),
                list_or(&ctx.endpoints),
            );
            if !roles.is_empty() {
                out.push_str(&format!("\nRoles:               {}", roles.join(", ")));
            }
            if !cert_ttl.is_empty() {
                out.push_str(&format!(
                    "\nCertificate expires: {cert_ttl} ({cert_not_after})"
                ));
            }
            out.push('\n');
            Ok(out)
        }
        "json" => {
            // encoding/json keeps struct field order; nil slices are null.
            let list = |v: &[String]| {
                if v.is_empty() {
                    "null".to_string()
                } else {
                    serde_json::to_string_pretty(v)
                        .unwrap_or_default()
                        .replace('\n', "\n  ")
                }
            };
            let quote = |v: &str| serde_json::to_string(v).unwrap_or_default();
            Ok(format!(
                "{{\n  \"context\": {},\n  \"nodes\": {},\n  \"endpoints\": {},\n  \"roles\": {},\n  \"certTTL\": {},\n  \"certNotAfter\": {}\n}}\n",
                quote(shown_context),
                list(&ctx.nodes),
                list(&ctx.endpoints),
                list(&roles),
                quote(&cert_ttl),
                quote(&cert_not_after),
            ))
        }
        "yaml" => {
            let strings = |v: &[String]| Yaml::Seq(v.iter().map(Yaml::str).collect());
            Ok(yaml::emit(&Yaml::from_pairs([
                ("context", Yaml::str(shown_context)),
                ("nodes", strings(&ctx.nodes)),
                ("endpoints", strings(&ctx.endpoints)),
                ("roles", strings(&roles)),
                ("certTTL", Yaml::str(cert_ttl)),
                ("certNotAfter", Yaml::str(cert_not_after)),
            ])))
        }
        other => Err(format!("unknown output format: {other:?}")),
    }
}

fn merge(parsed: &ParsedFlags, from: &str) -> Result<(), String> {
    let (path, mut target) = load(parsed)?;
    // clientconfig.Open creates a missing file, for the source as well.
    let from_path =
        talosconfig::resolve_path(Some(from)).map_err(|e| format!("error reading config: {e}"))?;
    let source = Talosconfig::load(&from_path).map_err(|e| format!("error reading config: {e}"))?;
    let mut mapped = std::collections::BTreeMap::new();
    for (name, ctx) in &source.contexts {
        let mut merged = name.clone();
        if target.contexts.contains_key(&merged) {
            let mut i = 1;
            loop {
                merged = format!("{name}-{i}");
                if !target.contexts.contains_key(&merged) {
                    break;
                }
                i += 1;
            }
            eprintln!("renamed talosconfig context \"{name}\" -> \"{merged}\"");
        }
        mapped.insert(name.clone(), merged.clone());
        target.contexts.insert(merged, ctx.clone());
    }
    if !source.context.is_empty() {
        target.context = mapped.get(&source.context).cloned().unwrap_or_default();
    }
    target
        .save(&path, 0o600)
        .map_err(|e| format!("error writing config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_pads_all_but_the_last_column() {
        let rows = vec![
            vec![
                "CURRENT".into(),
                "NAME".into(),
                "ENDPOINTS".into(),
                "NODES".into(),
            ],
            vec!["*".into(), "demo".into(), "10.5.0.2".into(), "".into()],
        ];
        assert_eq!(
            tabwrite(&rows),
            "CURRENT   NAME   ENDPOINTS   NODES\n*         demo   10.5.0.2    \n"
        );
    }

    #[test]
    fn humanizes_like_go_humanize() {
        assert_eq!(humanize_from_now(365 * 86_400 - 5), "1 year from now");
        assert_eq!(humanize_from_now(3 * 86_400), "3 days from now");
        assert_eq!(humanize_from_now(-90), "1 minute ago");
    }
}
