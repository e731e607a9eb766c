//! The exit codes of `talix`, defined once: every command's status goes through [`Exit`], and
//! `talix --help` and the man page show [`Exit::table`] (the README copies it).
//!
//! talix distinguishes only what a script can act on differently: success, a failure (of a
//! step, a tool, the cluster, the store), and bad input (a usage error or a profile, lock file
//! or path the operator must fix; nothing was changed). Waiting for a lock is not an error:
//! a second writer waits and says so, so there is no "busy" code. The `talosctl` entry point
//! (the simulator) keeps talosctl's own codes and does not use this module.

use std::process::ExitCode;

/// How `talix` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done (also `--help` and `--version`).
    Success = 0,
    /// Something failed: a step, talosctl or kubectl, the cluster, the store, an I/O error.
    Failure = 1,
    /// Bad input: a usage error, an invalid profile, lock file or path; nothing was changed.
    Usage = 2,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

impl Exit {
    /// Every code, in order.
    pub const ALL: [Exit; 3] = [Exit::Success, Exit::Failure, Exit::Usage];

    /// One line for `--help`, the man page and the README.
    pub fn describe(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure (a step, talosctl/kubectl, the cluster, the store)",
            Exit::Usage => {
                "bad input: usage error, invalid profile, lock file or path (nothing was changed)"
            }
        }
    }

    /// The table shown after `talix --help` and in the man page.
    pub fn table() -> String {
        let mut out = String::from("Exit status:");
        for e in Self::ALL {
            out.push_str(&format!("\n  {}  {}", e.code(), e.describe()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_the_table_lists_each() {
        let codes: std::collections::BTreeSet<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), Exit::ALL.len());
        let table = Exit::table();
        for e in Exit::ALL {
            assert!(
                table.contains(&format!("\n  {}  {}", e.code(), e.describe())),
                "{table}"
            );
        }
        assert_eq!(
            (
                Exit::Success.code(),
                Exit::Failure.code(),
                Exit::Usage.code()
            ),
            (0, 1, 2)
        );
    }

    #[test]
    fn the_readme_documents_every_code() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let section = readme
            .split("Exit status (`src/exit.rs`")
            .nth(1)
            .expect("README has the exit status table");
        let rows: Vec<u8> = section
            .lines()
            .skip(1)
            .map(str::trim)
            .take_while(|l| l.is_empty() || l.starts_with('|'))
            .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
            .collect();
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(rows, codes, "README's exit status table");
    }
}
