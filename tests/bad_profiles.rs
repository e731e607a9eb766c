//! The bad-profile corpus of the reliability suite (issue 8): every profile under
//! `tests/fixtures/bad-profiles/` (see `generate.py` there) is refused by `talix validate` with
//! exit 2, its file and line (and field, where the mistake is inside one), the fragment listed in
//! `expected.txt`, and nothing written. Plus the inputs that cannot live in a fixture: a FIFO,
//! `/dev/zero`, a directory and a 50 MB extensions list as the profile.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Workspace;

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-profiles")
}

/// A workspace with a valid patch and a directory named like a patch.
fn workspace() -> Workspace {
    let ws = Workspace::empty();
    ws.write(
        "profiles/patches/ok.yaml",
        "machine:\n  sysctls:\n    a: \"1\"\n",
    );
    std::fs::create_dir_all(ws.root().join("profiles/patches/dir.yaml")).unwrap();
    ws
}

/// Run validate on `rel`; assert exit 2, no new files, and return stderr.
fn refused(ws: &Workspace, rel: &str) -> String {
    let before = ws.files();
    let started = Instant::now();
    let out = ws.talix().args(["validate", rel]).output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{rel}: took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{rel}: {stderr}");
    assert_eq!(ws.files(), before, "{rel}: files appeared");
    stderr
}

#[test]
fn every_bad_profile_is_refused_with_file_line_and_field_and_writes_nothing() {
    let expected = std::fs::read_to_string(corpus_dir().join("expected.txt")).unwrap();
    let cases: Vec<(&str, &str)> = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_once('\t').expect("NAME<TAB>FRAGMENT"))
        .collect();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let ws = workspace();
    let mut failures = Vec::new();
    for (name, fragment) in &cases {
        let rel = format!("profiles/{name}");
        std::fs::copy(corpus_dir().join(name), ws.root().join(&rel)).unwrap();
        let stderr = refused(&ws, &rel);
        std::fs::remove_file(ws.root().join(&rel)).unwrap();
        let fragment = fragment.replace("{root}", &ws.root().display().to_string());
        let first_error = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default();
        // file:line: always; the fragment pins the field and our wording.
        let located = first_error.starts_with(&format!("error: {rel}:"))
            && first_error[format!("error: {rel}:").len()..]
                .split(':')
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok());
        if !located || !first_error.contains(&fragment) {
            failures.push(format!(
                "{name}:\n  expected {fragment:?}\n  got      {first_error:?}"
            ));
        }
        // Never the YAML library's own wording.
        for bad in ["DuplicateKeyPolicy", "invalid u", "from_str_multiple"] {
            if stderr.contains(bad) {
                failures.push(format!("{name}: library wording {bad:?} in {stderr:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_fifo_dev_zero_or_a_directory_as_the_profile_is_refused_at_once() {
    let ws = workspace();
    let fifo = ws.root().join("profiles/fifo.yaml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = refused(&ws, "profiles/fifo.yaml");
    assert!(
        err.contains(
            "profiles/fifo.yaml: cannot read profile: the file is a FIFO, not a regular file"
        ),
        "{err}"
    );
    std::os::unix::fs::symlink("/dev/zero", ws.root().join("profiles/zero.yaml")).unwrap();
    let err = refused(&ws, "profiles/zero.yaml");
    assert!(
        err.contains("cannot read profile: the file is a device, not a regular file"),
        "{err}"
    );
    std::fs::create_dir(ws.root().join("profiles/dir.yaml")).unwrap();
    let err = refused(&ws, "profiles/dir.yaml");
    assert!(
        err.contains("the file is a directory, not a regular file"),
        "{err}"
    );
}

/// Defect 14: the 50 MB extensions list names its line and field.
#[test]
fn a_50_mb_extensions_list_names_the_field() {
    let ws = workspace();
    let base = std::fs::read_to_string(corpus_dir().join("extension-twice.yaml")).unwrap();
    let mut list = String::with_capacity(50 << 20);
    let mut i = 0u64;
    while list.len() < 50 << 20 {
        list.push_str(&format!("x/ext-{i}, "));
        i += 1;
    }
    let text = base.replace(
        "extensions: [a/b, a/b]",
        &format!("extensions: [{list}a/b]"),
    );
    assert!(text.len() > 50 << 20);
    ws.write("profiles/huge.yaml", &text);
    let err = refused(&ws, "profiles/huge.yaml");
    assert!(
        err.starts_with(
            "error: profiles/huge.yaml:13: talos.extensions: cannot read profile: the file is"
        ),
        "{err}"
    );
    assert!(err.contains("larger than the 4194304-byte limit"), "{err}");
}
