//! Shared harness for the simulator tests: random loopback subnets, a `talosctl` symlink to the
//! talix binary, and `talix sim serve|proxmox` child processes that stop when dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A random `127.a.b` prefix so parallel tests never share addresses.
pub fn random_subnet() -> String {
    let seed = format!(
        "{}-{:?}-{:?}",
        std::process::id(),
        std::time::SystemTime::now(),
        std::thread::current().id()
    );
    let h = blake3::hash(seed.as_bytes());
    let b = h.as_bytes();
    format!("127.{}.{}", 10 + b[0] % 240, b[1])
}

/// A temp dir holding `talosctl` (a symlink to the talix binary) and the test's files.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talos-sim"), dir.path().join("talosctl"))
            .unwrap();
        Workdir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs `talosctl ARGS` in the work dir with a private HOME and no TALOSCONFIG.
    pub fn talosctl(&self, args: &[&str]) -> Output {
        self.talosctl_env(args, &[])
    }

    /// Like [`Workdir::talosctl`] with extra environment variables.
    pub fn talosctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.file("talosctl"));
        cmd.args(args)
            .current_dir(self.path())
            .env("HOME", self.path())
            .env_remove("TALOSCONFIG")
            .env_remove("KUBECONFIG")
            .env_remove("TALOSCTL_SIM_VERSION")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Like [`Workdir::talosctl`] but panics unless it exits 0; returns stdout.
    pub fn talosctl_ok(&self, args: &[&str]) -> String {
        let out = self.talosctl(args);
        assert!(
            out.status.success(),
            "talosctl {args:?} failed: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Repeats `talosctl ARGS` until it exits 0 or `limit` passes.
    pub fn talosctl_until_ok(&self, args: &[&str], limit: Duration) -> Output {
        let start = Instant::now();
        loop {
            let out = self.talosctl(args);
            if out.status.success() || start.elapsed() > limit {
                return out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `talix sim SUBCOMMAND --spec FILE --ready-file PATH` and waits for the ready file.
    pub fn start_service(&self, subcommand: &str, spec_yaml: &str) -> Service {
        let spec = self.write(&format!("{subcommand}-spec.yaml"), spec_yaml);
        let ready = self.file(&format!("{subcommand}-ready.json"));
        let child = Command::new(env!("CARGO_BIN_EXE_talos-sim"))
            .args([subcommand, "--spec"])
            .arg(&spec)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut service = Service {
            child,
            ready: ready.clone(),
        };
        let start = Instant::now();
        while !ready.exists() {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!("talix sim {subcommand} exited early: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sim {subcommand} not ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }
}

/// A simulator child process; SIGTERM stops it (`serve` no longer stops on stdin EOF unless
/// started with `--exit-on-stdin-eof`).
pub struct Service {
    pub child: Child,
    pub ready: PathBuf,
}

/// Sends SIGTERM to `child` (through kill(1): the tests need no signal crate).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM failed");
}

/// Waits (polling, generous bound) for `child` to exit; `None` if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Service {
    pub fn ready_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&self.ready).unwrap()).unwrap()
    }

    pub fn addresses(&self) -> BTreeMap<String, String> {
        serde_json::from_value(self.ready_json()).unwrap()
    }

    /// Stops the service with SIGTERM (closing stdin too: `proxmox` still stops on stdin EOF)
    /// and waits for a clean exit (killed after a generous bound).
    pub fn stop(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        sigterm(&self.child);
        match wait_exit(&mut self.child, Duration::from_secs(60)) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child.wait().unwrap()
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One machine of a test cluster.
pub struct Machine {
    pub name: &'static str,
    pub controlplane: bool,
    /// Last octet of the maintenance (DHCP) address.
    pub dhcp: u8,
    /// Last octet of the static address set by its config.
    pub static_ip: u8,
}

/// The files a test cluster needs: per-node machine configs and a talosconfig.
pub struct ClusterFiles {
    pub subnet: String,
    pub talosconfig: PathBuf,
    pub configs: BTreeMap<String, PathBuf>,
}

impl ClusterFiles {
    pub fn dhcp(&self, m: &Machine) -> String {
        format!("{}.{}", self.subnet, m.dhcp)
    }
    pub fn static_addr(&self, m: &Machine) -> String {
        format!("{}.{}", self.subnet, m.static_ip)
    }
    pub fn config(&self, m: &Machine) -> String {
        self.configs[m.name].display().to_string()
    }
}

/// Node patch: hostname and static address on ens18 (the simulated NIC's default name; contract
/// v1.11 layout).
pub fn node_patch(name: &str, address: &str) -> String {
    format!(
        "machine:\n    network:\n        hostname: {name}\n        interfaces:\n            - interface: ens18\n              addresses:\n                  - {address}/24\n"
    )
}

/// The simulator spec for `machines` (+ optional extra YAML per node, keyed by name).
pub fn serve_spec(
    subnet: &str,
    machines: &[Machine],
    reboot_ms: u64,
    extra: &[(&str, &str)],
) -> String {
    let mut s = String::from("nodes:\n");
    for m in machines {
        s.push_str(&format!(
            "  - name: {}\n    mac: \"bc:24:11:00:00:{:02x}\"\n    address: {subnet}.{}\n    role: {}\n    reboot_delay_ms: {reboot_ms}\n",
            m.name,
            m.dhcp,
            m.dhcp,
            if m.controlplane { "controlplane" } else { "worker" }
        ));
        for (name, yaml) in extra {
            if *name == m.name {
                s.push_str(yaml);
            }
        }
    }
    for (name, yaml) in extra {
        if *name == "*cluster*" {
            s.push_str(yaml);
        }
    }
    s
}

/// Generates secrets and configs with the simulated talosctl (`gen secrets`, `gen config`,
/// `machineconfig patch`, `config endpoints`), exactly as an operator would.
pub fn generate_cluster(
    work: &Workdir,
    subnet: &str,
    machines: &[Machine],
    endpoint: &str,
    gen_flags: &[&str],
) -> ClusterFiles {
    work.talosctl_ok(&["gen", "secrets", "-o", "secrets.yaml"]);
    let mut args = vec![
        "gen",
        "config",
        "demo",
        endpoint,
        "--with-secrets",
        "secrets.yaml",
        "--with-docs=false",
        "--with-examples=false",
        "--install-image",
        "ghcr.io/siderolabs/installer:v1.11.5",
        "-o",
        "gen",
    ];
    args.extend_from_slice(gen_flags);
    work.talosctl_ok(&args);
    let mut configs = BTreeMap::new();
    for m in machines {
        let patch = work.write(
            &format!("{}-patch.yaml", m.name),
            &node_patch(m.name, &format!("{subnet}.{}", m.static_ip)),
        );
        let base = if m.controlplane {
            "gen/controlplane.yaml"
        } else {
            "gen/worker.yaml"
        };
        let out = format!("{}.yaml", m.name);
        work.talosctl_ok(&[
            "machineconfig",
            "patch",
            base,
            "-p",
            &format!("@{}", patch.display()),
            "-o",
            &out,
        ]);
        configs.insert(m.name.to_string(), work.file(&out));
    }
    let talosconfig = work.file("gen/talosconfig");
    let endpoints: Vec<String> = machines
        .iter()
        .filter(|m| m.controlplane)
        .map(|m| format!("{subnet}.{}", m.static_ip))
        .collect();
    let mut args = vec![
        "--talosconfig".to_string(),
        talosconfig.display().to_string(),
        "config".into(),
        "endpoints".into(),
    ];
    args.extend(endpoints);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    work.talosctl_ok(&args);
    ClusterFiles {
        subnet: subnet.to_string(),
        talosconfig,
        configs,
    }
}

/// Generates secrets and a base config (`--install-image INSTALLER`), then one config per
/// `(name, controlplane, patch)` via `machineconfig patch` (which, like talosctl, does not
/// validate). Returns the talosconfig (no endpoints set) and the config paths by name.
pub fn generate_patched(
    work: &Workdir,
    endpoint: &str,
    installer: &str,
    nodes: &[(&str, bool, String)],
) -> (PathBuf, BTreeMap<String, PathBuf>) {
    work.talosctl_ok(&["gen", "secrets", "-o", "secrets.yaml"]);
    work.talosctl_ok(&[
        "gen",
        "config",
        "demo",
        endpoint,
        "--with-secrets",
        "secrets.yaml",
        "--with-docs=false",
        "--with-examples=false",
        "--install-image",
        installer,
        "-o",
        "gen",
    ]);
    let mut configs = BTreeMap::new();
    for (name, controlplane, patch) in nodes {
        let patch = work.write(&format!("{name}-patch.yaml"), patch);
        let base = if *controlplane {
            "gen/controlplane.yaml"
        } else {
            "gen/worker.yaml"
        };
        let out = format!("{name}.yaml");
        work.talosctl_ok(&[
            "machineconfig",
            "patch",
            base,
            "-p",
            &format!("@{}", patch.display()),
            "-o",
            &out,
        ]);
        configs.insert(name.to_string(), work.file(&out));
    }
    (work.file("gen/talosconfig"), configs)
}
