//! `talix completions` and `talix man`: shell completion scripts (clap_complete) and roff man
//! pages (clap_mangen) generated from the same clap types that parse the command line
//! ([`crate::cli::command`]), so a new subcommand or flag is completed and documented without
//! anyone editing a script or a page.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CliError, Result};
use crate::store::local::atomic_write;

/// The completion script for `shell`, as `talix completions SHELL` prints it.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "talix", &mut out);
    out
}

pub(super) fn completions(shell: clap_complete::Shell) -> Result<()> {
    let script = completion_script(shell);
    let mut out = super::DataOut::lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// Every man page: `talix.1` first, then one per (nested) subcommand, e.g.
/// `talix-secrets-init.1`, each as (file name, roff). The `help` pseudo-command has none.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut roff = Vec::new();
        man.render(&mut roff)?;
        pages.push((man.get_filename(), roff));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, pages)?;
        }
        Ok(())
    }
    // Built once so every subcommand knows its full name (`talix secrets init`, display name
    // `talix-secrets-init`), as clap_mangen::generate_to does.
    let mut cmd = crate::cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(&cmd, &mut pages)?;
    Ok(pages)
}

pub(super) fn man(out_dir: Option<&Path>) -> Result<()> {
    let pages = man_pages()?;
    let Some(dir) = out_dir else {
        let mut out = super::DataOut::lock();
        out.write_all(&pages[0].1)?;
        out.flush()?;
        return Ok(());
    };
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::input(format!(
            "error: --out-dir {}: not a directory",
            dir.display()
        )));
    }
    fs_err::create_dir_all(dir)?;
    let mut written: Vec<PathBuf> = Vec::new();
    for (name, roff) in &pages {
        let path = dir.join(name);
        atomic_write(&path, roff, Some(0o644))?;
        written.push(path);
    }
    eprintln!("{}: wrote {} man pages", dir.display(), written.len());
    // The list of pages is the command's data (e.g. for an install script).
    let mut out = super::DataOut::lock();
    for path in &written {
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_named_after_its_path() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "talix.1");
        for want in [
            "talix-plan.1",
            "talix-secrets.1",
            "talix-secrets-init.1",
            "talix-store-verify.1",
            "talix-completions.1",
            "talix-man.1",
        ] {
            assert!(names.contains(&want), "{want} missing in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        // One page per command of the clap tree, none twice.
        fn count(cmd: &clap::Command) -> usize {
            1 + cmd
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .map(count)
                .sum::<usize>()
        }
        assert_eq!(pages.len(), count(&crate::cli::command()));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn the_main_page_names_the_subcommands_and_the_exit_codes() {
        let pages = man_pages().unwrap();
        let roff = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(roff.contains("\n.TH talix 1 "), "{roff}");
        for word in ["plan", "why", "secrets", "completions", "Exit status"] {
            assert!(roff.contains(word), "{word} missing in:\n{roff}");
        }
    }
}
