//! `talix up` handles nodes in parallel (issue 10): applies overlap (observed by the simulator,
//! not timed), etcd is bootstrapped once, right after the first control plane answers; a node
//! that fails stops only itself, and the next `up` finishes just that node; progress is plain
//! timestamped lines when stderr is not a terminal (or with NO_COLOR), one live line per node
//! on a terminal, and a summary table ends the run.

mod common;

use common::Cluster;

const P: &str = "profiles/demo.yaml";

fn count(c: &Cluster, word: &str) -> usize {
    c.calls()
        .iter()
        .filter(|a| a.contains(&word.to_string()))
        .count()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn applies_overlap_etcd_is_bootstrapped_once_and_the_run_ends_with_a_summary() {
    // cp1's maintenance apply is answered only once all 5 machines have their config: a talix
    // that waited for each apply's answer before sending the next would never get one.
    let (c, _sim) = Cluster::with_sim(100, |spec| {
        spec.nodes[0].faults.apply_answer_waits_for_configured = 5;
    });
    let out = c
        .talix_fast()
        .env("NO_COLOR", "1")
        .args(["up", "--jobs", "5", P])
        .assert()
        .success()
        .get_output()
        .clone();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(count(&c, "apply-config"), 5, "{:?}", c.calls());
    assert_eq!(count(&c, "bootstrap"), 1, "etcd bootstrapped exactly once");
    // Every node's extensions in one multi-node call through the first control plane.
    let extensions: Vec<Vec<String>> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"extensions".to_string()))
        .collect();
    assert_eq!(extensions.len(), 1, "{extensions:?}");
    assert_eq!(
        extensions[0]
            .iter()
            .skip_while(|a| *a != "-n")
            .nth(1)
            .map(|n| n.split(',').count()),
        Some(5),
        "{extensions:?}"
    );

    // Not a terminal (and NO_COLOR): no escape code anywhere, timestamped node lines.
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "escape codes in:\n{stdout}\n{stderr}"
    );
    let stamped: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 25 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z'
        })
        .collect();
    for node in ["cp1", "cp2", "cp3", "w1", "w2", "cluster"] {
        assert!(
            stamped
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(node)),
            "no timestamped line for {node}:\n{stderr}"
        );
    }
    assert!(
        stamped.iter().any(|l| l.contains("applying config")),
        "{stderr}"
    );

    // The summary: one row per node, on stdout with the other results.
    let header = stdout
        .lines()
        .position(|l| {
            l.starts_with("NODE") && l.contains("ROLE") && l.contains("CHANGED IN THIS RUN")
        })
        .unwrap_or_else(|| panic!("no summary table in:\n{stdout}"));
    let rows: Vec<&str> = stdout.lines().skip(header + 1).take(5).collect();
    for (row, (node, role)) in rows.iter().zip([
        ("cp1", "controlplane"),
        ("cp2", "controlplane"),
        ("cp3", "controlplane"),
        ("w1", "worker"),
        ("w2", "worker"),
    ]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..2], [node, role], "{row}");
        assert!(cells[2].starts_with("127."), "{row}");
        assert_eq!(cells[3], common::LEGACY_TALOS, "{row}");
        assert_eq!(cells[4], "yes", "{row}");
        assert_eq!(cells[5], "qemu-guest-agent", "{row}");
        assert!(row.contains("applied "), "{row}");
    }
    assert!(rows[0].contains("etcd bootstrapped"), "{}", rows[0]);

    // Again: nothing is sent, the table says nothing changed.
    c.clear_calls();
    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(count(&c, "apply-config") + count(&c, "bootstrap"), 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("w2 ") && l.trim_end().ends_with(" -")),
        "{stdout}"
    );
    // Every step once, as a whole line, then the same table (printed as one block each); the
    // Talos column of nodes not handled in this run comes from the lock file.
    let cached: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  cached   "))
        .collect();
    assert_eq!(cached.len(), 5 * 5 + 9, "{stdout}");
    assert!(cached.contains(&"  cached   ready/w2"), "{stdout}");
    let header = stdout
        .lines()
        .position(|l| l.starts_with("NODE") && l.contains("TALOS"))
        .unwrap_or_else(|| panic!("no summary table in:\n{stdout}"));
    assert_eq!(stdout.lines().nth(header - 1), Some(""), "{stdout}");
    for row in stdout.lines().skip(header + 1).take(5) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[3], common::LEGACY_TALOS, "{row}");
        assert_eq!(cells[4], "yes", "{row}");
    }
}

#[test]
fn a_refused_apply_fails_only_that_node_and_the_next_up_finishes_just_it() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    // A patch w1's Talos refuses (InvalidArgument): `machineconfig patch` takes it, the node
    // does not.
    c.write(
        "profiles/w1-extra.yaml",
        "cluster:\n  network:\n    dnsDomain: \"not a domain!\"\n",
    );
    c.edit(
        P,
        "nodes:\n  controlplane:",
        "patches:\n  nodes: { w1: [w1-extra.yaml] }\nnodes:\n  controlplane:",
    );
    let out = c
        .talix_fast()
        .args(["up", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let error = &stderr[stderr.find("error:").unwrap_or(0)..];
    assert!(
        error.contains("apply/w1: w1: applying config ")
            && error.contains(" at 127.")
            && error.contains("not a valid DNS name"),
        "the error names the node and what it said:\n{stderr}"
    );
    assert!(error.contains("health"), "what did not run: {error}");
    // The other four nodes were configured and recorded, etcd bootstrapped once on cp1.
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert_eq!(lock.matches("applied_config:").count(), 4, "{lock}");
    assert!(lock.contains("bootstrap:\n  node: cp1\n"), "{lock}");
    assert!(!lock.contains("\n  w1:"), "{lock}");
    assert_eq!(count(&c, "bootstrap"), 1);
    let w1_row = stdout
        .lines()
        .find(|l| l.starts_with("w1 "))
        .unwrap_or_else(|| panic!("no summary row for w1:\n{stdout}"));
    assert!(w1_row.contains("FAILED apply/w1"), "{w1_row}");
    let cp2_row = stdout.lines().find(|l| l.starts_with("cp2 ")).unwrap();
    assert!(cp2_row.contains("applied "), "{cp2_row}");
    // Receipts exist only for what succeeded.
    let plan = c
        .talix_fast()
        .args(["plan", "--json", P])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let statuses = common::plan_statuses(&plan);
    let status = |id: &str| {
        statuses
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, s, _)| s.clone())
            .unwrap()
    };
    for n in ["cp1", "cp2", "cp3", "w2"] {
        assert_eq!(status(&format!("apply/{n}")), "cached", "apply/{n}");
        assert_eq!(status(&format!("ready/{n}")), "cached", "ready/{n}");
    }
    assert_eq!(status("bootstrap"), "cached");
    assert_eq!(status("apply/w1"), "run");
    assert_ne!(status("health"), "cached");

    // Fixed: the next run applies w1 only (still in maintenance mode), bootstraps nothing.
    c.write(
        "profiles/w1-extra.yaml",
        "machine:\n  sysctls:\n    vm.max_map_count: \"262144\"\n",
    );
    c.clear_calls();
    c.talix_fast().args(["up", P]).assert().success();
    let applies: Vec<Vec<String>> = c
        .calls()
        .into_iter()
        .filter(|a| a.contains(&"apply-config".to_string()))
        .collect();
    assert_eq!(applies.len(), 1, "only w1 is applied again: {applies:?}");
    assert!(
        applies[0].contains(&"--insecure".to_string()),
        "{applies:?}"
    );
    assert_eq!(count(&c, "bootstrap"), 0);
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert_eq!(lock.matches("applied_config:").count(), 5, "{lock}");
}

#[test]
fn a_node_that_never_comes_back_is_named_and_the_bootstrap_does_not_wait_for_it() {
    let (c, _sim) = Cluster::with_sim(50, |spec| {
        spec.nodes[4].faults.never_comes_back = true;
    });
    let out = c
        .talix_fast()
        .env("TALIX_READY_TIMEOUT_S", "10")
        .args(["up", P])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let error = &stderr[stderr.find("error:").unwrap_or(0)..];
    assert!(
        error.contains("w2 at 127.") && error.contains("no answer within"),
        "{stderr}"
    );
    // Bootstrapped once, on cp1, although w2 never became ready: the bootstrap waits for the
    // first control plane only.
    assert_eq!(count(&c, "bootstrap"), 1, "{:?}", c.calls());
    let lock = std::fs::read_to_string(c.root().join("profiles/demo.lock")).unwrap();
    assert!(lock.contains("bootstrap:\n  node: cp1\n"), "{lock}");
    let w2 = stdout.lines().find(|l| l.starts_with("w2 ")).unwrap();
    assert!(w2.contains("FAILED upgrade/w2"), "{w2}");
    let w1 = stdout.lines().find(|l| l.starts_with("w1 ")).unwrap();
    assert!(!w1.contains("FAILED"), "{w1}");
}

#[test]
fn jobs_in_the_profile_are_checked() {
    let c = common::Workspace::with_examples();
    c.edit(
        "profiles/homelab.yaml",
        "nodes:\n",
        "up:\n  jobs: 0\nnodes:\n",
    );
    let out = c
        .talix()
        .args(["validate", "profiles/homelab.yaml"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let text = text(&out);
    assert!(
        text.contains("up.jobs") && text.contains("between 1 and 256"),
        "{text}"
    );
    c.edit("profiles/homelab.yaml", "jobs: 0", "jobs: 4");
    c.talix()
        .args(["validate", "profiles/homelab.yaml"])
        .assert()
        .success();
}

/// `text` without CSI escape sequences (`ESC [ params letter`) and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// `talix up` on a pseudo-terminal (stdout and stderr both the tty, merged) via util-linux
/// `script`, with the cluster's simulator as talosctl.
fn up_on_a_terminal(c: &Cluster, no_color: bool) -> Vec<u8> {
    let exe = env!("CARGO_BIN_EXE_talix");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("'{exe}' up --jobs 5 {P}"), "/dev/null"])
        .current_dir(c.root())
        .env_remove("NO_COLOR")
        .env_remove("TALIX_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TALIX_STORE")
        .env_remove("KUBECONFIG")
        .env("TERM", "xterm-256color")
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", c.root())
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("TALIX_TALOSCTL", c.root().join("bin/talosctl"))
        .env("TALIX_AGE_KEY_FILE", c.root().join("key.txt"))
        .env("TALOSCTL_SIM_LOG", c.root().join("talosctl.log"))
        .env("TALIX_POLL_MS", "50")
        .env("TALIX_READY_TIMEOUT_S", "60")
        .env("TALIX_BOOTSTRAP_TIMEOUT_S", "60")
        .env("TALIX_HEALTH_TIMEOUT_S", "60");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd
        .output()
        .expect("util-linux `script` is installed (.ci/run installs bsdutils)");
    assert!(out.status.success(), "{}", text(&out.stdout));
    out.stdout
}

#[test]
fn on_a_terminal_each_node_has_a_live_line_that_is_cleared_at_the_end() {
    // cp1's maintenance apply is answered only once all 5 machines have their config, so every
    // node's line is on the board together, whatever the machine's speed.
    let (c, _sim) = Cluster::with_sim(300, |spec| {
        spec.nodes[0].faults.apply_answer_waits_for_configured = 5;
    });
    let out = up_on_a_terminal(&c, false);
    let all = text(&out);
    assert_eq!(count(&c, "apply-config"), 5, "{:?}", c.calls());
    // Live lines: drawn and redrawn in place (cursor movement, line erase), one per node and
    // one for the cluster, each with the node's state and its elapsed time.
    assert!(
        all.contains("\u{1b}[2K"),
        "no line erased in place:\n{all:?}"
    );
    assert!(all.contains("\u{1b}[1A"), "no cursor moved up:\n{all:?}");
    // The board as drawn: escape sequences and carriage returns taken out (its lines are
    // padded to the terminal's width, not ended by newlines).
    let drawn = strip_escapes(&all);
    for node in ["cp1", "cp2", "cp3", "w1", "w2", "cluster"] {
        let prefix = format!("{node:<7} ");
        let live = drawn.match_indices(&prefix).any(|(i, _)| {
            let line: String = drawn[i + prefix.len()..].chars().take(72).collect();
            // A spinner (braille), the node's state, its elapsed time: `⠙ ready (1s)`.
            line.chars()
                .next()
                .is_some_and(|c| ('\u{2800}'..='\u{28ff}').contains(&c))
                && line.contains(" (")
                && line.contains("s)")
        });
        assert!(live, "no live line for {node}:\n{drawn}");
    }
    // No plain timestamped progress line on a terminal: the board replaced them.
    assert!(
        !drawn.lines().any(|l| {
            let b = l.as_bytes();
            b.len() > 25 && b[4] == b'-' && b[10] == b'T' && b[23] == b'Z'
        }),
        "{drawn}"
    );
    // The board is cleared at the end: the summary table is the last thing shown, and every
    // node is in it.
    let tail = &all[all.rfind("NODE").expect("a summary table")..];
    assert!(
        !tail.contains('\u{1b}'),
        "the board was drawn after the table:\n{tail:?}"
    );
    for node in ["cp1", "cp2", "cp3", "w1", "w2"] {
        assert!(
            tail.lines().any(|l| l.starts_with(&format!("{node} "))),
            "{tail}"
        );
    }
}

#[test]
fn on_a_terminal_with_no_color_progress_is_plain_timestamped_lines() {
    let (c, _sim) = Cluster::with_sim(50, |_| {});
    let out = up_on_a_terminal(&c, true);
    let all = text(&out);
    assert!(
        !out.contains(&0x1b),
        "an escape code with NO_COLOR:\n{all:?}"
    );
    for node in ["cp1", "cp2", "cp3", "w1", "w2", "cluster"] {
        assert!(
            all.lines().any(|l| {
                let b = l.as_bytes();
                b.len() > 25
                    && b[10] == b'T'
                    && b[23] == b'Z'
                    && l.split_whitespace().nth(1) == Some(node)
            }),
            "no timestamped line for {node}:\n{all}"
        );
    }
}
