//! `talix demo`, the README's first command: a whole bootstrap rehearsed on loopback, `up` twice
//! (the second all cached), everything stopped and removed afterwards.

use assert_cmd::Command;

#[test]
fn demo_runs_the_whole_bootstrap_then_everything_is_cached_and_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_talix"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env("PATH", "/usr/bin:/bin")
        .env_remove("TALIX_STORE")
        .env_remove("TALIX_TALOSCTL")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for needle in [
        "ran      bootstrap",
        "ran      verify",
        "demo: 0 ran, 34 cached",
        "34 steps: 34 cached, 0 run, 0 blocked",
        "the simulated cluster is stopped and the workspace removed",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    // kubectl listed the five simulated nodes.
    assert_eq!(
        text.lines().filter(|l| l.contains(" Ready ")).count(),
        5,
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo workspace is removed: {left:?}");
}
