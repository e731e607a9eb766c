//! Shared test harness: a temporary workspace with `profiles/`, and the talix binary run the way
//! a user runs it, with the environment pinned (loopback-only networks, no stray store).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A workspace with copies of the example profiles (and their patch files), with
    /// `single.yaml` moved back to Talos v1.11.5 / Kubernetes 1.34.1 so the mechanics tests run
    /// one talosctl release (the simulator's default) for both; the examples as shipped are
    /// checked by tests/examples.rs with the talosctl of their release.
    pub fn with_examples() -> Self {
        let ws = Self::shipped_examples();
        let single = ws.profile("single");
        let text = std::fs::read_to_string(&single).unwrap();
        let legacy = text
            .replace("version: v1.14.0\n", "version: v1.11.5\n")
            .replace(
                "kubernetes_version: 1.37.0\n",
                "kubernetes_version: 1.34.1\n",
            )
            .replace(
                "patches/allow-scheduling-v1.14.yaml",
                "patches/allow-scheduling.yaml",
            );
        assert_ne!(text, legacy, "single.yaml is no longer on v1.14.0 / 1.37.0");
        std::fs::write(&single, legacy).unwrap();
        ws
    }

    /// A workspace with exact copies of the example profiles (and their patch files).
    pub fn shipped_examples() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        copy_dir(&src, &dir.path().join("profiles"));
        Self { dir }
    }

    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        Self { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn profile(&self, name: &str) -> PathBuf {
        self.root().join("profiles").join(format!("{name}.yaml"))
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.root().join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// `talix ARGS` in this workspace.
    pub fn talix(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_talix"));
        cmd.current_dir(self.root())
            .env_remove("TALIX_STORE")
            .env_remove("TALIX_TALOSCTL")
            .env_remove("TALIX_KUBECTL")
            // `up` merges into $KUBECONFIG or ~/.kube/config: never the real ones.
            .env_remove("KUBECONFIG")
            .env("TALIX_ALLOW_NETS", "127.0.0.0/8")
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.root());
        cmd
    }

    /// Every file below the workspace, relative, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(self.root())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                e.path()
                    .strip_prefix(self.root())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(src).unwrap();
        let target = dst.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Parse `talix plan --json` output into (id, status, reason) triples.
pub fn plan_statuses(stdout: &[u8]) -> Vec<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_slice(stdout).expect("plan --json is JSON");
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A workspace ready to build: the example profiles re-pointed at a fresh age key (made with the
/// real `age-keygen`), `talosctl` = the built-in simulator, and the secrets bundle of each
/// example created with `talix secrets init`.
pub struct Cluster {
    pub ws: Workspace,
    pub recipient: String,
}

impl std::ops::Deref for Cluster {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        &self.ws
    }
}

impl Cluster {
    pub fn new() -> Self {
        Self::of(Workspace::with_examples())
    }

    /// A cluster workspace around `ws` (its `homelab` and `single` profiles get the test key).
    pub fn of(ws: Workspace) -> Self {
        let out = std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(ws.root().join("key.txt"))
            .output()
            .expect("age-keygen (Debian package age) is installed");
        assert!(
            out.status.success(),
            "age-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = std::fs::read_to_string(ws.root().join("key.txt")).unwrap();
        let recipient = key
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .unwrap()
            .to_string();
        for name in ["homelab", "single"] {
            let p = ws.profile(name);
            let text = std::fs::read_to_string(&p).unwrap();
            let replaced: String = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("- age1") {
                        format!("    - {recipient}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&p, replaced + "\n").unwrap();
        }
        std::fs::create_dir_all(ws.root().join("bin")).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talix"), ws.root().join("bin/talosctl"))
            .unwrap();
        let c = Self { ws, recipient };
        for name in ["homelab", "single"] {
            c.talix()
                .args(["secrets", "init", &format!("profiles/{name}.yaml")])
                .assert()
                .success();
        }
        c.clear_calls();
        c
    }

    /// `talix` with the simulator as talosctl and the workspace key as identity.
    pub fn talix(&self) -> Command {
        let mut cmd = self.ws.talix();
        cmd.env("TALIX_TALOSCTL", self.root().join("bin/talosctl"))
            .env("TALIX_AGE_KEY_FILE", self.root().join("key.txt"))
            .env("TALOSCTL_SIM_LOG", self.root().join("talosctl.log"));
        cmd
    }

    /// The talosctl invocations since the last `clear_calls`, as argv vectors.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.root().join("talosctl.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    }

    /// How many invocations start with `prefix` (e.g. `["gen", "config"]`).
    pub fn count(&self, prefix: &[&str]) -> usize {
        self.calls()
            .iter()
            .filter(|argv| {
                argv.len() >= prefix.len() && argv.iter().zip(prefix).all(|(a, p)| a == p)
            })
            .count()
    }

    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.root().join("talosctl.log"));
    }
}

/// The Talos the `up` tests run (the demo's profile and machines moved back to contract v1.11;
/// tests/contract_matrix.rs covers v1.11-v1.14).
pub const LEGACY_TALOS: &str = "v1.11.5";

/// [`talix::demo::profile_yaml`] on Talos v1.11.5 / Kubernetes 1.34.1.
pub fn legacy_demo_profile(a: u8, b: u8, recipient: &str) -> String {
    talix::demo::profile_yaml(a, b, recipient)
        .replace(
            &format!("version: {}\n", talix::demo::DEMO_TALOS),
            &format!("version: {LEGACY_TALOS}\n"),
        )
        .replace(
            &format!("kubernetes_version: {}\n", talix::demo::DEMO_KUBERNETES),
            "kubernetes_version: 1.34.1\n",
        )
}

/// A simulated cluster (`talix sim serve`) running as a child process for one test, on its own
/// random /24 inside 127.0.0.0/8; killed on drop.
pub struct SimProcess {
    child: std::process::Child,
    pub subnet: (u8, u8),
}

impl SimProcess {
    /// Start the demo's 3+2 machines (see `talix::demo::spec`), with `edit` applied to the spec.
    pub fn start(
        dir: &Path,
        reboot_delay_ms: u64,
        edit: impl Fn(&mut talos_sim::node::ClusterSpec),
    ) -> Self {
        Self::start_spec(dir, |a, b| {
            let mut spec = talix::demo::spec(a, b, Some(reboot_delay_ms)).unwrap();
            for n in &mut spec.nodes {
                n.maintenance_version = LEGACY_TALOS.to_string();
            }
            edit(&mut spec);
            spec
        })
    }

    /// Start the machines `spec_for(a, b)` describes on a free random 127.a.b.0/24.
    pub fn start_spec(
        dir: &Path,
        spec_for: impl Fn(u8, u8) -> talos_sim::node::ClusterSpec,
    ) -> Self {
        for attempt in 0..8u32 {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                ^ std::process::id().rotate_left(7)
                ^ attempt.wrapping_mul(2654435761);
            let (a, b) = (1 + (seed % 254) as u8, ((seed >> 8) % 256) as u8);
            let spec = spec_for(a, b);
            let spec_path = dir.join("sim-spec.json");
            let ready = dir.join("sim-ready.json");
            let _ = std::fs::remove_file(&ready);
            std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_talix"))
                .args(["sim", "serve", "--spec"])
                .arg(&spec_path)
                .arg("--ready-file")
                .arg(&ready)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // A generous bound: a loaded 2-core CI machine starts processes slowly.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if ready.exists() {
                    return Self {
                        child,
                        subnet: (a, b),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // address in use: try another subnet
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start the simulator");
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// A cluster workspace whose `demo` profile matches a running simulator.
    pub fn with_sim(
        reboot_delay_ms: u64,
        edit: impl Fn(&mut talos_sim::node::ClusterSpec),
    ) -> (Cluster, SimProcess) {
        let c = Cluster::new();
        let sim = SimProcess::start(c.root(), reboot_delay_ms, edit);
        let (a, b) = sim.subnet;
        c.write(
            "profiles/demo.yaml",
            &legacy_demo_profile(a, b, &c.recipient),
        );
        c.talix()
            .args(["secrets", "init", "profiles/demo.yaml"])
            .assert()
            .success();
        c.clear_calls();
        (c, sim)
    }

    /// `talix` tuned for fast simulated nodes.
    pub fn talix_fast(&self) -> Command {
        let mut cmd = self.talix();
        cmd.env("TALIX_POLL_MS", "50")
            .env("TALIX_READY_TIMEOUT_S", "30")
            .env("TALIX_BOOTSTRAP_TIMEOUT_S", "30")
            .env("TALIX_HEALTH_TIMEOUT_S", "30");
        cmd
    }
}

/// Every secret value of a bundle, as it could appear on disk: the YAML values, and for base64
/// PEM material the decoded PEM body lines.
pub fn secret_needles(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in bundle.lines() {
        if !line.starts_with(' ') {
            section = line.trim_end_matches(':').to_string();
        }
        let Some((k, v)) = line.trim().split_once(": ") else {
            continue;
        };
        let v = v.trim();
        let secret = matches!(
            k,
            "secret"
                | "bootstraptoken"
                | "secretboxencryptionsecret"
                | "aescbcencryptionsecret"
                | "token"
                | "key"
                | "id"
        );
        if !secret || v.len() < 16 || (section == "cluster" && k == "id") {
            continue;
        }
        out.push(v.to_string());
        if k == "key"
            && let Ok(pem) = String::from_utf8(base64_decode(v))
        {
            out.extend(
                pem.lines()
                    .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap_or_default()
}

pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Files below `dirs` that contain any plaintext secret of `bundle` (see [`secret_needles`]),
/// except those listed in `allowed` (files the operator asked for in plaintext).
pub fn plaintext_leaks(bundle: &str, dirs: &[&Path], allowed: &[&Path]) -> Vec<String> {
    let needles = secret_needles(bundle);
    assert!(needles.len() >= 10, "{} needles", needles.len());
    let mut offenders = Vec::new();
    for dir in dirs.iter().filter(|d| d.exists()) {
        for entry in walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
        {
            if allowed.contains(&entry.path()) {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            if let Some(n) = needles.iter().find(|n| contains(&bytes, n.as_bytes())) {
                offenders.push(format!(
                    "{} contains {}...",
                    entry.path().display(),
                    &n[..8]
                ));
            }
        }
    }
    offenders
}
