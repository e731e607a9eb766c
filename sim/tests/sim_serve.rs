//! `talos-sim serve` as a tool people script: it says where its machines listen, keeps serving
//! when started with stdin closed (in the background of a script), stops on SIGTERM/SIGINT within
//! a bounded time even while stdin stays open, and stops on stdin EOF only when asked to.

mod sim_nodes_support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sim_nodes_support::*;

fn machines() -> [Machine; 2] {
    [
        Machine {
            name: "cp1",
            controlplane: true,
            dhcp: 31,
            static_ip: 11,
        },
        Machine {
            name: "w1",
            controlplane: false,
            dhcp: 32,
            static_ip: 21,
        },
    ]
}

fn spawn_serve(work: &Workdir, spec: &str, stdin: Stdio, extra: &[&str]) -> std::process::Child {
    let spec = work.write("serve-spec.yaml", spec);
    Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["serve", "--spec"])
        .arg(&spec)
        .arg("--ready-file")
        .arg(work.file("ready.json"))
        .args(extra)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ready(work: &Workdir, child: &mut std::process::Child) {
    let start = Instant::now();
    while !work.file("ready.json").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("serve exited before it was ready: {status}\n{err}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "serve not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Started with stdin closed (`< /dev/null`, as `talos-sim serve ... &` in a script), the
/// simulator keeps serving: a maintenance-mode call answers after the ready file appeared, and the
/// process is still running afterwards. SIGTERM then stops it, exit status 0, and its stdout names
/// every machine with the socket it listens on.
#[test]
fn keeps_serving_with_stdin_closed_and_prints_where_machines_listen() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let ms = machines();
    let mut child = spawn_serve(
        &work,
        &serve_spec(&subnet, &ms, 50, &[]),
        Stdio::null(),
        &[],
    );
    wait_ready(&work, &mut child);
    for m in &ms {
        let out = work.talosctl_until_ok(
            &[
                "get",
                "machinestatus",
                "--insecure",
                "-n",
                &format!("{subnet}.{}", m.dhcp),
            ],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve exited although it was never asked to stop"
    );
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(60)).expect("serve ignored SIGTERM");
    assert!(status.success(), "{status}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    for m in &ms {
        let line = format!(
            "talos-sim: node {} listening on {subnet}.{}:50000 (maintenance, Talos v1.11.5)",
            m.name, m.dhcp
        );
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing in:\n{out}"
        );
    }
}

/// SIGTERM stops it even while its stdin stays open (the old stdin reader blocked the runtime's
/// shutdown), and so does SIGINT.
#[test]
fn sigterm_and_sigint_stop_it_while_stdin_stays_open() {
    for signal in ["-TERM", "-INT"] {
        let work = Workdir::new();
        let subnet = random_subnet();
        let mut child = spawn_serve(
            &work,
            &serve_spec(&subnet, &machines(), 50, &[]),
            Stdio::piped(),
            &[],
        );
        wait_ready(&work, &mut child);
        let _stdin_kept_open = child.stdin.take();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = wait_exit(&mut child, Duration::from_secs(60));
        if exited.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let status = exited.unwrap_or_else(|| panic!("serve did not stop on {signal}"));
        assert!(status.success(), "{signal}: {status}");
    }
}

/// `--exit-on-stdin-eof` keeps the old behaviour for callers that want it: closing stdin stops
/// the simulator cleanly.
#[test]
fn stdin_eof_stops_it_only_when_asked() {
    let work = Workdir::new();
    let subnet = random_subnet();
    let mut child = spawn_serve(
        &work,
        &serve_spec(&subnet, &machines(), 50, &[]),
        Stdio::piped(),
        &["--exit-on-stdin-eof"],
    );
    wait_ready(&work, &mut child);
    drop(child.stdin.take());
    let exited = wait_exit(&mut child, Duration::from_secs(60));
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(exited.expect("stdin EOF ignored").success());
}

/// A bad flag is a usage error (exit 2) naming the new flag.
#[test]
fn usage_names_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_talos-sim"))
        .args(["serve", "--bogus"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--exit-on-stdin-eof"));
}
