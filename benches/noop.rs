//! What a run that changes nothing costs (`cargo bench --bench noop`): for simulated clusters of
//! 3 control planes + 2, 22, 57 and 247 workers, the first `up` brings the cluster up, then
//! `plan`, a no-op `up` and `up --dry-run` are timed (wall and CPU medians of `NOOP_RUNS`,
//! default 10). Issue 10's target: a no-op `up` within 2x of `plan` at every size, under 100 ms
//! for 250 nodes. `NOOP_SIZES=2,57` picks sizes; `NOOP_BEFORE=/path/to/talix` also measures
//! another build on the same workspaces (before/after); `NOOP_KEEP=1` keeps the workspaces.
//! Loopback only.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use talos_sim::node::{ClusterSpec, NodeSpec, SimCluster};

const TALIX: &str = env!("CARGO_BIN_EXE_talix");

fn static_ip(a: u8, k: usize) -> String {
    if k < 3 {
        format!("127.{a}.1.{}", 11 + k)
    } else {
        let j = k - 3;
        format!("127.{a}.{}.{}", 2 + j / 200, 10 + j % 200)
    }
}

fn name(k: usize) -> String {
    if k < 3 {
        format!("cp{}", k + 1)
    } else {
        format!("w{}", k - 2)
    }
}

fn mac(a: u8, k: usize) -> String {
    format!("02:55:{a:02x}:00:{:02x}:{:02x}", k / 256, k % 256)
}

/// 3 + `workers` machines in maintenance mode on 127.a.10.x (the profile's discovery subnet).
fn spec(a: u8, workers: usize) -> ClusterSpec {
    let nodes = (0..3 + workers)
        .map(|k| {
            serde_json::from_value::<NodeSpec>(serde_json::json!({
                "name": name(k),
                "mac": mac(a, k),
                "address": format!("127.{a}.10.{}", 1 + k),
                "maintenance_version": talix::demo::DEMO_TALOS,
                "reboot_delay_ms": 20,
                "extensions": [{"name": "qemu-guest-agent", "version": "10.0.2"}],
            }))
            .unwrap()
        })
        .collect();
    ClusterSpec {
        nodes,
        foreign_nodes: vec![],
    }
}

/// The matching profile: node subnet 127.a.0.0/16 (room for 250 static addresses).
fn profile(a: u8, workers: usize, recipient: &str) -> String {
    let entry = |k: usize| {
        format!(
            "      - {{ name: {}, ip: {}, mac: \"{}\" }}\n",
            name(k),
            static_ip(a, k),
            mac(a, k)
        )
    };
    let cps: String = (0..3).map(entry).collect();
    let ws: String = (3..3 + workers).map(entry).collect();
    format!(
        "name: demo\nnetwork:\n  api_endpoint: 127.{a}.0.10\n  subnet: 127.{a}.0.0/16\n  gateway: 127.{a}.0.1\n  pod_cidr: 10.244.0.0/16\n  service_cidr: 10.96.0.0/12\ntalos:\n  version: {}\n  kubernetes_version: {}\n  factory:\n    schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba\n  vip: {{ interface: ens18, ip: 127.{a}.0.10 }}\n  extensions: [siderolabs/qemu-guest-agent]\nsecrets:\n  recipients: [{recipient}]\ndiscovery:\n  subnet: 127.{a}.10.0/24\n  concurrency: 64\n  connect_timeout_ms: 300\n  attempts: 3\n  retry_wait_s: 1\nnodes:\n  controlplane:\n    assignments:\n{cps}  worker:\n    assignments:\n{ws}",
        talix::demo::DEMO_TALOS,
        talix::demo::DEMO_KUBERNETES
    )
}

/// CPU time (user + system) of every waited-for child so far: talix and what it ran.
fn children_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn talix(ws: &Path, args: &[&str]) -> (Duration, String) {
    talix_cpu(TALIX, ws, args).0
}

/// Wall time and stdout of `talix args`, and the CPU time it (and its children) used.
fn talix_cpu(bin: &str, ws: &Path, args: &[&str]) -> ((Duration, String), Duration) {
    let cpu = children_cpu();
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .current_dir(ws)
        .env("TALIX_TALOSCTL", ws.join("bin/talosctl"))
        .env("TALIX_AGE_KEY_FILE", ws.join("key.txt"))
        .env("TALOSCTL_SIM_LOG", ws.join("talosctl.log"))
        .env("TALOSCTL_SIM_VERSION", talix::demo::DEMO_TALOS)
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("TALIX_POLL_MS", "50")
        .env("HOME", ws)
        .env_remove("TALIX_STORE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "talix {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        (wall, String::from_utf8_lossy(&out.stdout).into_owned()),
        children_cpu() - cpu,
    )
}

fn calls(ws: &Path) -> usize {
    std::fs::read_to_string(ws.join("talosctl.log"))
        .map(|t| t.lines().filter(|l| !l.contains("\"--client\"")).count())
        .unwrap_or(0)
}

/// Medians of `runs` runs of `talix args`: (wall, best wall, CPU).
fn timed(bin: &str, ws: &Path, args: &[&str], runs: usize) -> (Duration, Duration, Duration) {
    let (mut wall, mut cpu): (Vec<Duration>, Vec<Duration>) = (0..runs)
        .map(|_| {
            let ((w, _), c) = talix_cpu(bin, ws, args);
            (w, c)
        })
        .unzip();
    wall.sort();
    cpu.sort();
    (wall[wall.len() / 2], wall[0], cpu[cpu.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("noop: bench");
        return;
    }
    let sizes: Vec<usize> = std::env::var("NOOP_SIZES")
        .unwrap_or_else(|_| "2,22,57,247".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("NOOP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let keep = std::env::var_os("NOOP_KEEP").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // This build, and `NOOP_BEFORE` (another talix, e.g. a build of an older commit) measured
    // on the same converged workspaces for a before/after table.
    let mut bins = vec![("this build".to_string(), TALIX.to_string())];
    if let Ok(before) = std::env::var("NOOP_BEFORE") {
        bins.insert(0, ("NOOP_BEFORE".to_string(), before));
    }
    let has_dry_run = |bin: &str| {
        String::from_utf8_lossy(
            &Command::new(bin)
                .args(["up", "--help"])
                .output()
                .unwrap()
                .stdout,
        )
        .contains("--dry-run")
    };
    let mut rows = Vec::new();
    for (i, &workers) in sizes.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        std::fs::create_dir_all(ws.join("profiles")).unwrap();
        std::fs::create_dir_all(ws.join("bin")).unwrap();
        // The simulator as talosctl: always this build's (the measured talix may be older).
        std::os::unix::fs::symlink(TALIX, ws.join("bin/talosctl")).unwrap();
        let mut started = None;
        for attempt in 0..8u32 {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                ^ std::process::id()
                ^ (attempt + 31 * i as u32).wrapping_mul(2654435761);
            let a = 1 + (seed % 254) as u8;
            if let Ok(c) = rt.block_on(SimCluster::start(spec(a, workers))) {
                started = Some((c, a));
                break;
            }
        }
        let (cluster, a) = started.expect("a free loopback /16");
        let recipient = talix::secrets::generate_identity_file(&ws.join("key.txt")).unwrap();
        std::fs::write(
            ws.join("profiles/demo.yaml"),
            profile(a, workers, &recipient),
        )
        .unwrap();
        let p = "profiles/demo.yaml";
        talix(ws, &["secrets", "init", p]);
        let (first, _) = talix(ws, &["up", p]);
        let _ = std::fs::remove_file(ws.join("talosctl.log"));
        let (noop_once, out) = talix(ws, &["up", p]);
        assert!(!out.contains("  ran "), "a no-op up ran something:\n{out}");
        let noop_calls = calls(ws);
        for (label, bin) in &bins {
            let plan = timed(bin, ws, &["plan", p], runs);
            let up = timed(bin, ws, &["up", p], runs);
            let dry = if has_dry_run(bin) {
                let ((_, dry_out), _) = talix_cpu(bin, ws, &["up", "--dry-run", p]);
                assert!(
                    dry_out.contains("nothing to run"),
                    "dry run of a converged cluster:\n{dry_out}"
                );
                Some(timed(bin, ws, &["up", "--dry-run", p], runs))
            } else {
                None
            };
            rows.push((workers, label.clone(), first, noop_calls, plan, up, dry));
        }
        let _ = noop_once;
        rt.block_on(cluster.shutdown());
        if keep {
            println!("kept {}", dir.keep().display());
        }
    }
    println!(
        "\nno-op runs on a converged simulated cluster ({}), loopback only;\n\
         times: median wall / median CPU (user+sys of talix and its children) of {runs} runs;\n\
         up/plan: ratio of wall medians, (cpu) of CPU medians; calls: talosctl calls of a no-op up\n",
        bins.iter()
            .map(|(l, b)| format!("{l}: {b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<8} {:<12} {:>10} {:>16} {:>16} {:>16} {:>9} {:>9} {:>6}",
        "nodes",
        "talix",
        "first up",
        "plan ms",
        "no-op up ms",
        "dry-run ms",
        "up/plan",
        "(cpu)",
        "calls"
    );
    for (workers, label, first, calls, plan, up, dry) in rows {
        println!(
            "{:<8} {:<12} {:>8.1} s {:>16} {:>16} {:>16} {:>9.2} {:>9.2} {:>6}",
            format!("3+{workers}"),
            label,
            first.as_secs_f64(),
            format!("{} / {}", ms(plan.0), ms(plan.2)),
            format!("{} / {}", ms(up.0), ms(up.2)),
            dry.map(|d| format!("{} / {}", ms(d.0), ms(d.2)))
                .unwrap_or_else(|| "-".into()),
            up.0.as_secs_f64() / plan.0.as_secs_f64(),
            up.2.as_secs_f64() / plan.2.as_secs_f64(),
            calls
        );
    }
}
