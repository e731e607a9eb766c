//! The documentation under docs/ describes commands that exist: every `talix ...` command line
//! in its code (fenced blocks and inline spans) names a real subcommand and real flags, checked
//! against the command line parser (`talix <subcommand> --help`); and its relative links, and
//! the README's links to it, lead to files that exist.

mod common;

use std::path::{Path, PathBuf};

use common::Workspace;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

/// `talix ...` command lines: lines of fenced code blocks and inline code spans.
fn command_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            let code = line.split(" #").next().unwrap_or_default().trim();
            if code.starts_with("talix ") {
                out.push(code.to_string());
            }
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("talix ") {
                out.push(span.to_string());
            }
        }
    }
    out
}

/// The subcommand path (`secrets init`) and the long flags (`--from`) of a command line.
fn parse(line: &str) -> (Vec<String>, Vec<String>) {
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let path = words
        .iter()
        .take_while(|w| {
            w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .map(|w| w.to_string())
        .collect();
    let flags = words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect();
    (path, flags)
}

#[test]
fn every_talix_command_in_the_docs_exists_with_its_flags() {
    let ws = Workspace::empty();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, text) in docs() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in command_lines(&text) {
            if line.contains('<') {
                continue; // a placeholder (`talix <command> --help`), not a command
            }
            let (sub, flags) = parse(&line);
            let out = ws.talix().args(&sub).arg("--help").output().unwrap();
            let help = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                failures.push(format!(
                    "{name}: `{line}`: `talix {} --help` fails",
                    sub.join(" ")
                ));
                continue;
            }
            for flag in flags {
                if flag != "--help"
                    && !help.contains(&format!("{flag} "))
                    && !help.contains(&format!("{flag}\n"))
                {
                    failures.push(format!(
                        "{name}: `{line}`: no {flag} in `talix {} --help`",
                        sub.join(" ")
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked >= 20, "only {checked} command lines in docs/");
}

/// The checker itself: a made-up subcommand or flag is caught.
#[test]
fn the_command_check_catches_what_does_not_exist() {
    let ws = Workspace::empty();
    let (sub, _) = parse("talix store compact $P");
    assert_eq!(sub, ["store", "compact"]);
    assert!(
        !ws.talix()
            .args(&sub)
            .arg("--help")
            .output()
            .unwrap()
            .status
            .success()
    );
    let (sub, flags) = parse("talix secrets init --from secrets.yaml $P");
    assert_eq!(
        (sub.as_slice(), flags.as_slice()),
        (
            &["secrets".to_string(), "init".to_string()][..],
            &["--from".to_string()][..]
        )
    );
    let help = ws.talix().args(["up", "--help"]).output().unwrap().stdout;
    // The help-text test the checker uses finds a real flag and misses a made-up one.
    let help = String::from_utf8_lossy(&help);
    assert!(
        help.contains("--dry-run ") && !help.contains("--yolo "),
        "{help}"
    );
    assert_eq!(
        command_lines("run `talix plan $P` then\n```sh\ntalix up $P   # go\n```\n"),
        ["talix plan $P", "talix up $P"]
    );
}

/// Markdown link targets outside code (`[text](target)`).
fn links(text: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            prose.extend(line.split('`').step_by(2));
            prose.push('\n');
        }
    }
    prose
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|l| !l.starts_with("http") && !l.starts_with('#'))
        .map(|l| l.split('#').next().unwrap().to_string())
        .collect()
}

#[test]
fn relative_links_in_docs_and_the_readme_lead_to_files() {
    let mut all: Vec<(PathBuf, String)> = docs();
    for rel in ["README.md", "store/README.md"] {
        let p = repo().join(rel);
        all.push((p.clone(), std::fs::read_to_string(p).unwrap()));
    }
    for (path, text) in &all {
        for link in links(text) {
            let target = path.parent().unwrap_or(Path::new(".")).join(&link);
            assert!(
                target.exists(),
                "{}: link {link} leads nowhere",
                path.display()
            );
        }
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for page in [
        "docs/architecture.md",
        "docs/profile-reference.md",
        "docs/operator-guide.md",
    ] {
        assert!(
            links(&readme).iter().any(|l| l == page),
            "README.md does not link {page}"
        );
    }
}
