//! Benchmarks, printed as a table (`cargo bench --bench bootstrap`): the literal hand-written
//! runbook against talix on the same simulated 3+2 cluster (first bootstrap time, talosctl
//! calls), talix's first bootstrap at 3+2, 3+22 and 3+57 against the floor (what the simulated
//! machines themselves need: the slowest reboot after its apply; bootstrap and health answer
//! at once in the simulator), talix re-runs (nothing changed; store lost), plan/build latency,
//! and the discovery scan. Everything runs on loopback. `BENCH_REBOOT_MS` sets the simulated
//! install/reboot time (default 2000 ms, the simulator's default); `BENCH_WORKERS` the worker
//! counts of the first-bootstrap rows (default `2,22,57`); `BENCH_JOBS` the profile's `up.jobs`
//! (default: talix's); `BENCH_RUNBOOK` the runbook script
//! (default `../shared/bench/runbook.sh` beside the workspace); `BENCH_LOG_DIR` keeps each
//! run's stderr (talix's timestamped progress lines) there; `BENCH_TALIX` runs another build
//! of talix (before/after on the same machine; the simulated talosctl stays this build's).
//!
//! talix and the runbook run without the `LD_LIBRARY_PATH` cargo sets for a bench (six build
//! directories): with it, every talosctl the run started searched them all for its shared
//! libraries first, ~80 failed `openat`s per process, a cost no operator's shell has.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use talos_sim::node::{ClusterSpec, SimCluster};

const TALIX: &str = env!("CARGO_BIN_EXE_talix");

/// The talix that runs: this build, or `BENCH_TALIX`.
fn talix_bin() -> std::ffi::OsString {
    std::env::var_os("BENCH_TALIX").unwrap_or_else(|| TALIX.into())
}
const RUNBOOK_MACS: [&str; 5] = [
    "02:54:00:00:01:51",
    "02:54:00:00:01:52",
    "02:54:00:00:01:53",
    "02:54:00:00:02:61",
    "02:54:00:00:02:62",
];

struct Row {
    scenario: String,
    wall: Duration,
    calls: Option<usize>,
    note: String,
}

fn subnet(salt: u32) -> (u8, u8) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id()
        ^ salt.wrapping_mul(2654435761);
    (1 + (seed % 254) as u8, ((seed >> 8) % 256) as u8)
}

fn calls(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| !l.contains("\"--client\"")).count())
        .unwrap_or(0)
}

fn peak_child_rss_mib() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

/// The demo profile with `workers` workers (w1, w2, ... at .21, .22, ...).
fn profile_sized(a: u8, b: u8, recipient: &str, workers: usize) -> String {
    let mut text = talix::demo::profile_yaml(a, b, recipient);
    if let Ok(jobs) = std::env::var("BENCH_JOBS") {
        // `up.jobs` (talosctl processes at once); the default otherwise.
        text = text.replace("\nnodes:\n", &format!("\nup:\n  jobs: {jobs}\nnodes:\n"));
    }
    for i in 2..workers {
        text.push_str(&format!(
            "      - {{ name: w{}, ip: 127.{a}.{b}.{}, mac: \"02:54:00:{a:02x}:{b:02x}:{:02x}\" }}\n",
            i + 1,
            21 + i,
            0x21 + i
        ));
    }
    text
}

/// The demo's machines with `workers` workers (DHCP addresses .101, .102, ...).
fn spec_sized(a: u8, b: u8, reboot_ms: u64, workers: usize) -> ClusterSpec {
    let mut spec = talix::demo::spec(a, b, Some(reboot_ms)).unwrap();
    let template = spec.nodes[4].clone();
    spec.nodes.truncate(3 + workers.min(2));
    for i in 2..workers {
        let mut n = template.clone();
        n.name = format!("w{}", i + 1);
        n.mac = format!("02:54:00:{a:02x}:{b:02x}:{:02x}", 0x21 + i);
        n.address = Ipv4Addr::new(127, a, b, (101 + 3 + i) as u8);
        spec.nodes.push(n);
    }
    spec
}

/// What the simulated machines need for a first bootstrap: the slowest node's reboot after
/// its apply (the simulator answers bootstrap and health as soon as the nodes are up, so they
/// add nothing).
fn floor(spec: &ClusterSpec) -> Duration {
    Duration::from_millis(
        spec.nodes
            .iter()
            .map(|n| n.reboot_delay_ms + n.faults.slow_reboot_ms)
            .max()
            .unwrap_or(0),
    )
}

/// When the last [`talix`] run started (Unix ms), for the kept logs.
static LAST_START_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn talix(ws: &Path, log: &Path, args: &[&str]) -> (Duration, bool, String) {
    LAST_START_MS.store(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let started = Instant::now();
    // BENCH_PERF=DIR: every first `up` runs under `perf record` (DIR/up-<n>.data), for profiling.
    let mut cmd = match std::env::var_os("BENCH_PERF") {
        Some(dir) if args.first() == Some(&"up") => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut c = Command::new("perf");
            c.args(["record", "-F", "4000", "-g", "-q", "-o"])
                .arg(Path::new(&dir).join(format!("up-{n}.data")))
                .arg("--")
                .arg(talix_bin());
            c
        }
        // BENCH_WRAP="strace -f -c -o /tmp/up.strace": every first `up` runs under that
        // command (split on spaces), e.g. to count its system calls.
        _ if args.first() == Some(&"up") && std::env::var_os("BENCH_WRAP").is_some() => {
            let wrap = std::env::var("BENCH_WRAP").unwrap();
            let mut words = wrap.split_whitespace();
            let mut c = Command::new(words.next().expect("BENCH_WRAP names a command"));
            c.args(words).arg(talix_bin());
            c
        }
        _ => Command::new(talix_bin()),
    };
    let out = cmd
        .args(args)
        .current_dir(ws)
        .env(
            "TALIX_TALOSCTL",
            std::env::var_os("BENCH_TALOSCTL").unwrap_or_else(|| ws.join("bin/talosctl").into()),
        )
        .env("TALIX_AGE_KEY_FILE", ws.join("key.txt"))
        .env("TALOSCTL_SIM_LOG", log)
        .env("TALOSCTL_SIM_LOG_TIMING", "1")
        .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
        .env("TALOSCTL_SIM_VERSION", talix::demo::DEMO_TALOS)
        .env("TALIX_POLL_MS", "100")
        .env_remove("TALIX_STORE")
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ok = out.status.success();
    (
        started.elapsed(),
        ok,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start_sim(
    rt: &tokio::runtime::Runtime,
    spec: impl Fn(u8, u8) -> ClusterSpec,
) -> (SimCluster, u8, u8) {
    for salt in 0..8 {
        let (a, b) = subnet(salt);
        if let Ok(c) = rt.block_on(SimCluster::start(spec(a, b))) {
            return (c, a, b);
        }
    }
    panic!("no free loopback subnet");
}

fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().to_path_buf();
    std::fs::create_dir_all(ws.join("profiles")).unwrap();
    std::fs::create_dir_all(ws.join("bin")).unwrap();
    std::os::unix::fs::symlink(TALIX, ws.join("bin/talosctl")).unwrap();
    (dir, ws)
}

fn bench_runbook(rt: &tokio::runtime::Runtime, reboot_ms: u64, rows: &mut Vec<Row>) {
    let runbook = std::env::var("BENCH_RUNBOOK").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench/runbook.sh").to_string()
    });
    let runbook = runbook.as_str();
    if !Path::new(runbook).exists()
        || Command::new("sh")
            .args(["-c", "command -v jq && command -v bc"])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
    {
        rows.push(Row {
            scenario: "runbook.sh (literal)".into(),
            wall: Duration::ZERO,
            calls: None,
            note: "skipped: needs ../shared/bench/runbook.sh, jq, bc".into(),
        });
        return;
    }
    let (_dir, ws) = workspace();
    std::fs::write(ws.join("bin/nc"), "#!/bin/bash\nw=1; while [ $# -gt 2 ]; do case \"$1\" in -w) w=$2; shift 2;; *) shift;; esac; done\ntimeout \"$w\" bash -c \"</dev/tcp/$1/$2\" 2>/dev/null\n").unwrap();
    std::fs::set_permissions(
        ws.join("bin/nc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (cluster, a, b) = start_sim(rt, |a, b| {
        let mut spec = talix::demo::spec(a, b, Some(reboot_ms)).unwrap();
        for (n, mac) in spec.nodes.iter_mut().zip(RUNBOOK_MACS) {
            n.mac = mac.into();
            // The literal runbook predates contract v1.12 (its hostname and nameserver patch
            // fails on current Talos: traps 2 and 9), so its baseline runs on v1.11 machines.
            n.maintenance_version = "v1.11.5".into();
            // Its patches name `interface: eth0`: machines booted with classic NIC names, so
            // the baseline completes (on `ens18` machines no node ever takes its address).
            n.kernel_args = vec!["net.ifnames=0".into()];
        }
        spec
    });
    let log = ws.join("talosctl.log");
    let started = Instant::now();
    // Bounded: a runbook that never sees its nodes loops forever (`until ...; do sleep`).
    let out = Command::new("timeout")
        .args(["300", "bash"])
        .arg(runbook)
        .current_dir(&ws)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", ws.join("bin").display()),
        )
        .env("HOME", &ws)
        .env("NET", format!("127.{a}.{b}"))
        .env("TALOSCTL_SIM_LOG", &log)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut note = if out.status.success() {
        "completed".to_string()
    } else {
        "FAILED".to_string()
    };
    if text.contains("count-based fallback") {
        note.push_str("; MAC filter matched nothing (trap 3), fell back to count order");
    }
    note.push_str(&format!(
        "; {:.2}x the floor of {:.2} s",
        wall.as_secs_f64() / (reboot_ms as f64 / 1000.0),
        reboot_ms as f64 / 1000.0
    ));
    rows.push(Row {
        scenario: "runbook.sh (literal), first bootstrap 3+2".into(),
        wall,
        calls: Some(calls(&log)),
        note,
    });
    rt.block_on(cluster.shutdown());
}

fn bench_talix(rt: &tokio::runtime::Runtime, reboot_ms: u64, rows: &mut Vec<Row>) {
    let (_dir, ws) = workspace();
    let (cluster, a, b) = start_sim(rt, |a, b| spec_sized(a, b, reboot_ms, 2));
    let recipient = talix::secrets::generate_identity_file(&ws.join("key.txt")).unwrap();
    std::fs::write(
        ws.join("profiles/demo.yaml"),
        profile_sized(a, b, &recipient, 2),
    )
    .unwrap();
    let log = ws.join("talosctl.log");
    let p = "profiles/demo.yaml";
    let (wall, ok, err) = talix(&ws, &log, &["secrets", "init", p]);
    assert!(ok, "{err}");
    rows.push(Row {
        scenario: "talix secrets init".into(),
        wall,
        calls: Some(calls(&log)),
        note: String::new(),
    });
    let _ = std::fs::remove_file(&log);
    let (wall, ok, err) = talix(&ws, &log, &["up", p]);
    assert!(ok, "{err}");
    keep_log("3+2-first", &err);
    keep_calls("3+2-first", &log);
    let fl = floor(&spec_sized(a, b, reboot_ms, 2));
    rows.push(Row {
        scenario: "talix up, first bootstrap 3+2".into(),
        wall,
        calls: Some(calls(&log)),
        note: format!(
            "{:.2}x the floor of {:.2} s; peak RSS of a child {:.1} MiB",
            wall.as_secs_f64() / fl.as_secs_f64(),
            fl.as_secs_f64(),
            peak_child_rss_mib()
        ),
    });
    for (scenario, prep) in [
        ("talix up, nothing changed", None),
        ("talix up, store lost (lock file only)", Some("store")),
    ] {
        if let Some(dir) = prep {
            std::fs::remove_dir_all(ws.join(dir)).unwrap();
        }
        let _ = std::fs::remove_file(&log);
        let (wall, ok, err) = talix(&ws, &log, &["up", p]);
        assert!(ok, "{err}");
        rows.push(Row {
            scenario: scenario.into(),
            wall,
            calls: Some(calls(&log)),
            note: String::new(),
        });
    }
    let mut plan = Vec::new();
    for _ in 0..10 {
        plan.push(talix(&ws, &log, &["plan", p]).0);
    }
    plan.sort();
    rows.push(Row {
        scenario: "talix plan, 34 steps all cached (median of 10)".into(),
        wall: plan[5],
        calls: None,
        note: String::new(),
    });
    let mut build = Vec::new();
    for _ in 0..10 {
        build.push(talix(&ws, &log, &["build", p]).0);
    }
    build.sort();
    rows.push(Row {
        scenario: "talix build, nothing changed (median of 10)".into(),
        wall: build[5],
        calls: None,
        note: String::new(),
    });
    rt.block_on(cluster.shutdown());
}

/// `BENCH_LOG_DIR/<name>.stderr`: talix's timestamped progress lines, for profiling.
fn keep_log(name: &str, stderr: &str) {
    if let Some(dir) = std::env::var_os("BENCH_LOG_DIR") {
        let _ = std::fs::create_dir_all(&dir);
        let started = LAST_START_MS.load(std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::write(
            Path::new(&dir).join(format!("{name}.stderr")),
            format!("# talix started at {started} (Unix ms)\n{stderr}"),
        );
    }
}

/// `BENCH_LOG_DIR/<name>.calls`: the talosctl calls, one JSON line each with its start and
/// duration.
fn keep_calls(name: &str, log: &Path) {
    if let Some(dir) = std::env::var_os("BENCH_LOG_DIR") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(log, Path::new(&dir).join(format!("{name}.calls")));
    }
}

/// talix's first bootstrap of 3 control planes + `workers` workers, against the floor.
fn bench_first_up(
    rt: &tokio::runtime::Runtime,
    reboot_ms: u64,
    workers: usize,
    rows: &mut Vec<Row>,
) -> tempfile::TempDir {
    let (dir, ws) = workspace();
    let (cluster, a, b) = start_sim(rt, |a, b| spec_sized(a, b, reboot_ms, workers));
    let recipient = talix::secrets::generate_identity_file(&ws.join("key.txt")).unwrap();
    std::fs::write(
        ws.join("profiles/demo.yaml"),
        profile_sized(a, b, &recipient, workers),
    )
    .unwrap();
    let log = ws.join("talosctl.log");
    let p = "profiles/demo.yaml";
    let (_, ok, err) = talix(&ws, &log, &["secrets", "init", p]);
    assert!(ok, "{err}");
    let _ = std::fs::remove_file(&log);
    let (wall, ok, err) = talix(&ws, &log, &["up", p]);
    assert!(ok, "{err}");
    keep_log(&format!("3+{workers}-first"), &err);
    keep_calls(&format!("3+{workers}-first"), &log);
    let fl = floor(&spec_sized(a, b, reboot_ms, workers));
    rows.push(Row {
        scenario: format!("talix up, first bootstrap 3+{workers}"),
        wall,
        calls: Some(calls(&log)),
        note: format!(
            "{:.2}x the floor of {:.2} s",
            wall.as_secs_f64() / fl.as_secs_f64(),
            fl.as_secs_f64()
        ),
    });
    rt.block_on(cluster.shutdown());
    dir
}

fn bench_scan(rt: &tokio::runtime::Runtime, rows: &mut Vec<Row>) {
    let (a, b) = subnet(99);
    let listeners: Vec<_> = (0..5)
        .filter_map(|i| {
            std::net::TcpListener::bind((Ipv4Addr::new(127, a, b, 101 + i), 50000)).ok()
        })
        .collect();
    let net: ipnet::IpNet = format!("127.{a}.{b}.0/24").parse().unwrap();
    let allow = talix::discovery::AllowNets::parse("127.0.0.0/8").unwrap();
    for concurrency in [256usize, 16] {
        let started = Instant::now();
        let found = rt
            .block_on(talix::discovery::scan(
                net,
                50000,
                concurrency,
                Duration::from_millis(500),
                Some(&allow),
            ))
            .unwrap();
        rows.push(Row {
            scenario: format!("scan /24 port 50000, concurrency {concurrency}"),
            wall: started.elapsed(),
            calls: None,
            note: format!("{} of {} listeners found", found.len(), listeners.len()),
        });
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("bootstrap: bench");
        return;
    }
    let reboot_ms: u64 = std::env::var("BENCH_REBOOT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let sizes: Vec<usize> = std::env::var("BENCH_WORKERS")
        .unwrap_or_else(|_| "2,22,57".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    // Every workspace is kept until the end: removing one scenario's thousands of files right
    // before the next one starts made ext4 (this machine's, without a journal) skip every
    // recently freed inode on each file the next talix created -- 44 % of talix's CPU before
    // the last apply at 3+57 in `perf record` -- a cost of the harness, not of an operator's
    // first `up`.
    let mut keep = Vec::new();
    for workers in sizes.iter().copied().filter(|&w| w != 2) {
        keep.push(bench_first_up(&rt, reboot_ms, workers, &mut rows));
    }
    bench_talix(&rt, reboot_ms, &mut rows);
    bench_runbook(&rt, reboot_ms, &mut rows);
    bench_scan(&rt, &mut rows);
    drop(keep);
    println!(
        "\nsimulated clusters of 3 control planes + N workers, reboot delay {reboot_ms} ms, loopback only\n"
    );
    println!(
        "{:<52} {:>10} {:>15}  note",
        "scenario", "wall", "talosctl calls"
    );
    for r in rows {
        let wall = if r.wall.as_secs_f64() >= 1.0 {
            format!("{:.2} s", r.wall.as_secs_f64())
        } else {
            format!("{:.1} ms", r.wall.as_secs_f64() * 1000.0)
        };
        let calls = r.calls.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<52} {:>10} {:>15}  {}", r.scenario, wall, calls, r.note);
    }
}
