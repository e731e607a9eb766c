//! A small pflag/cobra-compatible flag parser: same syntax (`--flag=v`, `--flag v`, `-f v`,
//! `-fv`, bool clusters, `--`), same error texts, so the simulator fails like talosctl does.

use std::collections::HashMap;

/// How a flag takes values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    /// One string; the last occurrence wins.
    String,
    /// Repeatable, comma-separated values are split (pflag `StringSlice`).
    StringSlice,
    /// Repeatable, values kept whole (pflag `StringArray`).
    StringArray,
}

/// One accepted flag.
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    pub long: &'static str,
    pub short: Option<char>,
    pub kind: FlagKind,
    /// Default shown in usage and used by [`ParsedFlags::bool`] / [`ParsedFlags::string`].
    pub default: &'static str,
    pub help: &'static str,
}

impl FlagSpec {
    pub const fn new(
        long: &'static str,
        short: Option<char>,
        kind: FlagKind,
        default: &'static str,
        help: &'static str,
    ) -> FlagSpec {
        FlagSpec {
            long,
            short,
            kind,
            default,
            help,
        }
    }
}

/// The connection flags every node-facing command (and `config`) accepts (talosctl-cli.md §1).
pub const GLOBAL_FLAGS: &[FlagSpec] = &[
    FlagSpec::new(
        "talosconfig",
        None,
        FlagKind::String,
        "",
        "The path to the Talos configuration file. Defaults to 'TALOSCONFIG' env variable if set, otherwise '$HOME/.talos/config' and '/var/run/secrets/talos.dev/config' in order.",
    ),
    FlagSpec::new(
        "nodes",
        Some('n'),
        FlagKind::StringSlice,
        "",
        "target the specified nodes",
    ),
    FlagSpec::new(
        "endpoints",
        Some('e'),
        FlagKind::StringSlice,
        "",
        "override default endpoints in Talos configuration",
    ),
    FlagSpec::new(
        "context",
        None,
        FlagKind::String,
        "",
        "Context to be used in command",
    ),
    FlagSpec::new(
        "cluster",
        Some('c'),
        FlagKind::String,
        "",
        "Cluster to connect to if a proxy endpoint is used.",
    ),
    FlagSpec::new(
        "siderov1-keys-dir",
        None,
        FlagKind::String,
        "",
        "The path to the SideroV1 auth PGP keys directory.",
    ),
];

/// Result of parsing: values by long name, plus positional arguments.
#[derive(Clone, Debug, Default)]
pub struct ParsedFlags {
    values: HashMap<&'static str, Vec<String>>,
    defaults: HashMap<&'static str, &'static str>,
    pub positionals: Vec<String>,
    pub help: bool,
}

impl ParsedFlags {
    /// Whether the flag appeared on the command line.
    pub fn changed(&self, long: &str) -> bool {
        self.values.contains_key(long)
    }

    /// A bool flag's value (default when absent).
    pub fn bool(&self, long: &str) -> bool {
        match self.values.get(long).and_then(|v| v.last()) {
            Some(v) => v == "true",
            None => self.defaults.get(long).copied() == Some("true"),
        }
    }

    /// A string flag's value (default when absent).
    pub fn string(&self, long: &str) -> String {
        match self.values.get(long).and_then(|v| v.last()) {
            Some(v) => v.clone(),
            None => self.defaults.get(long).copied().unwrap_or("").to_string(),
        }
    }

    /// All values of a repeatable flag (defaults split on commas when absent).
    pub fn list(&self, long: &str) -> Vec<String> {
        match self.values.get(long) {
            Some(v) => v.clone(),
            None => self
                .defaults
                .get(long)
                .filter(|d| !d.is_empty())
                .map(|d| d.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }
}

fn parse_bool(text: &str, display: &str) -> Result<String, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok("true".to_string()),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok("false".to_string()),
        _ => Err(format!(
            "invalid argument \"{text}\" for \"{display}\" flag: strconv.ParseBool: parsing \"{text}\": invalid syntax"
        )),
    }
}

fn store(
    parsed: &mut ParsedFlags,
    spec: &FlagSpec,
    value: String,
    display: &str,
) -> Result<(), String> {
    let entry = parsed.values.entry(spec.long).or_default();
    match spec.kind {
        FlagKind::Bool => {
            let v = parse_bool(&value, display)?;
            *entry = vec![v];
        }
        FlagKind::String => *entry = vec![value],
        FlagKind::StringSlice => {
            if !value.is_empty() {
                entry.extend(value.split(',').map(|s| s.trim().to_string()));
            }
        }
        FlagKind::StringArray => entry.push(value),
    }
    Ok(())
}

/// Parses `args` (after the command words) against `specs`. Errors are pflag's texts.
pub fn parse(args: &[String], specs: &[FlagSpec]) -> Result<ParsedFlags, String> {
    let mut parsed = ParsedFlags {
        defaults: specs.iter().map(|s| (s.long, s.default)).collect(),
        ..ParsedFlags::default()
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            parsed.positionals.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if name == "help" {
                parsed.help = true;
                continue;
            }
            let spec = specs
                .iter()
                .find(|s| s.long == name)
                .ok_or_else(|| format!("unknown flag: --{name}"))?;
            let display = format!("--{name}");
            let value = match (spec.kind, inline) {
                (_, Some(v)) => v,
                (FlagKind::Bool, None) => "true".to_string(),
                (_, None) => {
                    if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(format!("flag needs an argument: {display}"));
                    }
                }
            };
            store(&mut parsed, spec, value, &display)?;
        } else if arg.len() > 1 && arg.starts_with('-') {
            let shorts: Vec<char> = arg[1..].chars().collect();
            let mut j = 0;
            while j < shorts.len() {
                let c = shorts[j];
                j += 1;
                if c == 'h' {
                    parsed.help = true;
                    continue;
                }
                let spec = specs
                    .iter()
                    .find(|s| s.short == Some(c))
                    .ok_or_else(|| format!("unknown shorthand flag: '{c}' in {arg}"))?;
                let display = format!("-{c}, --{}", spec.long);
                let rest: String = shorts[j..].iter().collect();
                if spec.kind == FlagKind::Bool {
                    if let Some(v) = rest.strip_prefix('=') {
                        store(&mut parsed, spec, v.to_string(), &display)?;
                        break;
                    }
                    store(&mut parsed, spec, "true".to_string(), &display)?;
                    continue;
                }
                let value = if let Some(v) = rest.strip_prefix('=') {
                    v.to_string()
                } else if !rest.is_empty() {
                    rest
                } else if i < args.len() {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return Err(format!("flag needs an argument: '{c}' in -{c}"));
                };
                store(&mut parsed, spec, value, &display)?;
                break;
            }
        } else {
            parsed.positionals.push(arg.clone());
        }
    }
    Ok(parsed)
}

/// Renders the `Flags:` block of a usage text, pflag style.
pub fn usage_block(specs: &[FlagSpec]) -> String {
    let rows: Vec<(String, String)> = specs
        .iter()
        // Flags without help text are hidden, as cobra hides them.
        .filter(|s| !s.help.is_empty())
        .map(|s| {
            let short = s
                .short
                .map(|c| format!("-{c}, "))
                .unwrap_or_else(|| "    ".to_string());
            let kind = match s.kind {
                FlagKind::Bool => "",
                FlagKind::String => " string",
                FlagKind::StringSlice => " strings",
                FlagKind::StringArray => " stringArray",
            };
            let default = match (s.kind, s.default) {
                (_, "") | (FlagKind::Bool, "false") => String::new(),
                (FlagKind::Bool, d) => format!(" (default {d})"),
                (FlagKind::String, d) => format!(" (default \"{d}\")"),
                (_, d) => format!(" (default [{d}])"),
            };
            (
                format!("  {short}--{}{kind}", s.long),
                format!("{}{default}", s.help),
            )
        })
        .collect();
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(l, r)| format!("{l:width$}   {r}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        FlagSpec::new("output", Some('o'), FlagKind::String, "", ""),
        FlagSpec::new("force", Some('f'), FlagKind::Bool, "false", ""),
        FlagSpec::new("nodes", Some('n'), FlagKind::StringSlice, "", ""),
        FlagSpec::new("patch", Some('p'), FlagKind::StringArray, "", ""),
        FlagSpec::new("docs", None, FlagKind::Bool, "true", ""),
    ];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_pflag_syntax() {
        let p = parse(
            &strings(&[
                "a",
                "-o",
                "x",
                "--nodes=1,2",
                "-n3",
                "-fp",
                "{a: b, c: d}",
                "--docs=false",
                "b",
            ]),
            SPECS,
        )
        .unwrap();
        assert_eq!(p.positionals, ["a", "b"]);
        assert_eq!(p.string("output"), "x");
        assert_eq!(p.list("nodes"), ["1", "2", "3"]);
        assert_eq!(p.list("patch"), ["{a: b, c: d}"]);
        assert!(p.bool("force"));
        assert!(!p.bool("docs"));
    }

    #[test]
    fn reports_pflag_errors() {
        assert_eq!(
            parse(&strings(&["--bogus"]), SPECS).unwrap_err(),
            "unknown flag: --bogus"
        );
        assert_eq!(
            parse(&strings(&["-x"]), SPECS).unwrap_err(),
            "unknown shorthand flag: 'x' in -x"
        );
        assert_eq!(
            parse(&strings(&["--output"]), SPECS).unwrap_err(),
            "flag needs an argument: --output"
        );
        assert_eq!(
            parse(&strings(&["-o"]), SPECS).unwrap_err(),
            "flag needs an argument: 'o' in -o"
        );
        assert_eq!(
            parse(&strings(&["--force=maybe"]), SPECS).unwrap_err(),
            "invalid argument \"maybe\" for \"--force\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
    }
}
