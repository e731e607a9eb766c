//! The derivation graph of a profile: one [`Step`] per runbook step (per cluster or per node),
//! each declaring exactly the inputs it reads. Step ids are stable; they are the names `plan`,
//! `why` and the store use.

use crate::derivation::{Effect, InputValue, Step, StepId, Tool};
use crate::digest::{Digest, domain};
use crate::lockfile::LockFile;
use crate::profile::{Contract, Node, Profile, Role};

/// Schema versions of each step kind's builder. Bump one when its behaviour changes: every
/// key of that kind changes, so stale outputs are rebuilt.
pub mod schema {
    pub const SECRETS: u32 = 1;
    pub const BASE_CONFIG: u32 = 1;
    pub const TALOSCONFIG: u32 = 2;
    pub const PATCH: u32 = 2;
    pub const RENDER: u32 = 1;
    pub const DISCOVER: u32 = 1;
    pub const APPLY: u32 = 1;
    pub const READY: u32 = 1;
    pub const BOOTSTRAP: u32 = 1;
    pub const HEALTH: u32 = 1;
    pub const KUBECONFIG: u32 = 2;
    pub const VERIFY: u32 = 1;
    pub const UPGRADE: u32 = 1;
    pub const UPGRADE_K8S: u32 = 1;
}

/// Where the effective contract came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractSource {
    Profile,
    LockFile,
    TalosVersion,
}

/// The contract steps use, and why.
#[derive(Debug, Clone, Copy)]
pub struct EffectiveContract {
    pub contract: Contract,
    pub source: ContractSource,
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error(
        "{profile}: talos.contract {wanted} differs from the contract {pinned} pinned in {lock}\nhint: changing the contract of an existing cluster can break it (etcd encryption, config shape); if you really mean it, pass --allow-contract-change"
    )]
    Changed {
        profile: String,
        lock: String,
        wanted: Contract,
        pinned: Contract,
    },
    #[error("{lock}: contract {text:?} is not of the form vMAJOR.MINOR")]
    BadPinned { lock: String, text: String },
}

/// Resolve the contract: the lock file's pin wins over the talos.version default; a profile
/// contract that differs from the pin needs `allow_change`.
pub fn effective_contract(
    profile: &Profile,
    lock: &LockFile,
    allow_change: bool,
) -> Result<EffectiveContract, ContractError> {
    let pinned = match &lock.contract {
        Some(text) => Some(
            text.parse::<Contract>()
                .map_err(|_| ContractError::BadPinned {
                    lock: profile.workspace.lock_file().display().to_string(),
                    text: text.clone(),
                })?,
        ),
        None => None,
    };
    match (profile.talos.contract, pinned) {
        (Some(wanted), Some(pinned)) if wanted != pinned && !allow_change => {
            Err(ContractError::Changed {
                profile: profile.source.display().to_string(),
                lock: profile.workspace.lock_file().display().to_string(),
                wanted,
                pinned,
            })
        }
        (Some(wanted), _) => Ok(EffectiveContract {
            contract: wanted,
            source: ContractSource::Profile,
        }),
        (None, Some(pinned)) => Ok(EffectiveContract {
            contract: pinned,
            source: ContractSource::LockFile,
        }),
        (None, None) => Ok(EffectiveContract {
            contract: profile.talos.version.contract(),
            source: ContractSource::TalosVersion,
        }),
    }
}

/// A file input by content hash (absent files hash as absent, so creating one is a change).
pub fn file_input(path: &std::path::Path, shown: &str) -> InputValue {
    match std::fs::read(path) {
        Ok(bytes) => InputValue::File {
            path: shown.to_string(),
            hash: Digest::of_domain(domain::FILE, &bytes),
        },
        Err(_) => InputValue::Value(serde_json::Value::String(format!("{shown} (missing)"))),
    }
}

pub fn secrets_id() -> StepId {
    StepId::new("secrets", None)
}
pub fn base_config_id() -> StepId {
    StepId::new("base-config", None)
}

fn node_values(step: Step, node: &Node) -> Step {
    step.value("node.name", &node.name)
        .value("node.role", node.role)
        .value("node.ip", node.ip.to_string())
}

/// Every step of the profile, in dependency order.
pub fn steps(profile: &Profile, contract: Contract) -> Vec<Step> {
    let p = profile;
    let t = &p.talos;
    let net = &p.network;
    let shown_secrets = p
        .workspace
        .secrets_file()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();

    out.push(
        Step::new(secrets_id(), schema::SECRETS, Effect::Pure)
            .input(
                "secrets_file",
                file_input(p.workspace.secrets_file(), &shown_secrets),
            )
            .secret(),
    );
    out.push(
        Step::new(base_config_id(), schema::BASE_CONFIG, Effect::Pure)
            .value("name", &p.name)
            .value("network.api_endpoint", &net.api_endpoint)
            .value("talos.kubernetes_version", t.kubernetes_version.to_string())
            .value("talos.contract", contract.to_string())
            .value("installer_image", t.installer_image())
            .value("talos.install_disk", &t.install_disk)
            .value("network.pod_cidr", net.pod_cidr.to_string())
            .value("network.service_cidr", net.service_cidr.to_string())
            .dep(secrets_id(), &["bundle"])
            .tool(Tool::Talosctl)
            .secret(),
    );
    let cp_ips: Vec<String> = p.controlplanes().map(|n| n.ip.to_string()).collect();
    let all_ips: Vec<String> = p.nodes.iter().map(|n| n.ip.to_string()).collect();
    out.push(
        Step::new(
            StepId::new("talosconfig", None),
            schema::TALOSCONFIG,
            Effect::Pure,
        )
        .value("name", &p.name)
        .value("endpoints", &cp_ips)
        .value("nodes", &all_ips)
        .value("secrets.crt_ttl", p.crt_ttl_text())
        .dep(secrets_id(), &["bundle"])
        .secret(),
    );
    for node in &p.nodes {
        let mut patch = node_values(
            Step::new(
                StepId::new("patch", Some(&node.name)),
                schema::PATCH,
                Effect::Pure,
            ),
            node,
        )
        .value("network.subnet_prefix", net.subnet.prefix_len())
        .value("network.gateway", net.gateway.to_string())
        .value(
            "network.nameservers",
            net.nameservers
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
        )
        .value("node.nic", crate::steps::patch::Nic::of(node).input())
        .value("talos.contract", contract.to_string());
        if node.role == Role::Controlplane {
            patch = patch.value(
                "talos.vip",
                t.vip
                    .as_ref()
                    .map(|v| format!("{} on {}", v.ip, v.interface)),
            );
        }
        out.push(patch);
    }
    for node in &p.nodes {
        let mut render = Step::new(
            StepId::new("render", Some(&node.name)),
            schema::RENDER,
            Effect::Pure,
        )
        .dep(base_config_id(), &[role_output(node.role)])
        .dep(StepId::new("patch", Some(&node.name)), &["patch"])
        .tool_series(Tool::Talosctl)
        .secret();
        for (i, patch) in p.patches.for_node(node).into_iter().enumerate() {
            render = render.input(
                &format!("user_patch[{i}]"),
                file_input(&patch.path, &patch.written),
            );
        }
        out.push(render);
    }
    let expected_macs: Vec<String> = p
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.name, n.mac.as_deref().unwrap_or("?")))
        .collect();
    let discover = Step::new(
        StepId::new("discover", None),
        schema::DISCOVER,
        Effect::Observe,
    )
    .value("discovery.subnet", p.discovery.subnet.to_string())
    .value("talos.api_port", t.api_port)
    .value("expected_macs", expected_macs)
    .value("proxmox.url", p.proxmox.as_ref().map(|x| &x.url))
    // It asks configured nodes with the talosconfig `up` writes when that step finishes.
    .after(StepId::new("talosconfig", None))
    .tool(Tool::Talosctl);
    // Forbidding the count fallback changes what discovery may answer; the default (allowed)
    // adds no input, so keys of existing stores stay as they were.
    let discover = if p.discovery.count_fallback {
        discover
    } else {
        discover.value("discovery.count_fallback", false)
    };
    out.push(discover);
    for node in &p.nodes {
        out.push(
            node_values(
                Step::new(
                    StepId::new("apply", Some(&node.name)),
                    schema::APPLY,
                    Effect::SideEffect,
                ),
                node,
            )
            .dep(StepId::new("render", Some(&node.name)), &["config"])
            // The maintenance address comes from a fresh scan when one runs (read through
            // `latest_output`, not part of the key).
            .after(StepId::new("discover", None))
            // Configured nodes are applied with the talosconfig written when that step finishes.
            .after(StepId::new("talosconfig", None))
            .tool(Tool::Talosctl),
        );
    }
    // Trap 6: a new installer image in the machine config does not upgrade a running node;
    // `talosctl upgrade` does. Rolling, one node at a time, in profile order.
    for node in &p.nodes {
        out.push(
            Step::new(
                StepId::new("upgrade", Some(&node.name)),
                schema::UPGRADE,
                Effect::SideEffect,
            )
            .value("node.ip", node.ip.to_string())
            .value("installer_image", t.installer_image())
            .dep(StepId::new("apply", Some(&node.name)), &[])
            .tool(Tool::Talosctl)
            // It asks the running version first and upgrades only a node behind.
            .replayable(),
        );
    }
    for node in &p.nodes {
        out.push(
            Step::new(
                StepId::new("ready", Some(&node.name)),
                schema::READY,
                Effect::SideEffect,
            )
            .value("node.ip", node.ip.to_string())
            .dep(StepId::new("upgrade", Some(&node.name)), &[])
            .replayable(),
        );
    }
    let first_cp = p.controlplanes().next().map(|n| n.name.clone());
    let mut bootstrap = Step::new(
        StepId::new("bootstrap", None),
        schema::BOOTSTRAP,
        Effect::SideEffect,
    )
    .value("bootstrap_node", &first_cp)
    .dep(secrets_id(), &["bundle"])
    .tool(Tool::Talosctl);
    if let Some(first) = &first_cp {
        // Runbook step 9: bootstrap as soon as the first control plane answers, not after
        // every node (the others join etcd / the cluster when they come up).
        bootstrap = bootstrap.after(StepId::new("ready", Some(first)));
    }
    out.push(bootstrap);
    let mut health = Step::new(
        StepId::new("health", None),
        schema::HEALTH,
        Effect::SideEffect,
    )
    .dep(StepId::new("bootstrap", None), &[])
    .tool(Tool::Talosctl)
    .replayable();
    for node in &p.nodes {
        health = health.dep(StepId::new("ready", Some(&node.name)), &[]);
    }
    out.push(health);
    out.push(
        Step::new(
            StepId::new("kubeconfig", None),
            schema::KUBECONFIG,
            Effect::Pure,
        )
        .value("name", &p.name)
        .value("network.api_endpoint", &net.api_endpoint)
        .value("secrets.crt_ttl", p.crt_ttl_text())
        .dep(secrets_id(), &["bundle"])
        .secret(),
    );
    out.push(
        Step::new(
            StepId::new("upgrade-k8s", None),
            schema::UPGRADE_K8S,
            Effect::SideEffect,
        )
        .value("talos.kubernetes_version", t.kubernetes_version.to_string())
        .dep(StepId::new("health", None), &[])
        .dep(StepId::new("kubeconfig", None), &[])
        .tool(Tool::Talosctl)
        .tool(Tool::Kubectl)
        // It reads the running versions first and upgrades only what is behind.
        .replayable(),
    );
    out.push(
        Step::new(
            StepId::new("verify", None),
            schema::VERIFY,
            Effect::SideEffect,
        )
        .value("talos.extensions", &t.extensions)
        .value(
            "nodes",
            p.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        )
        .dep(StepId::new("upgrade-k8s", None), &[])
        .dep(StepId::new("kubeconfig", None), &[])
        .tool(Tool::Kubectl)
        .tool(Tool::Talosctl)
        .replayable(),
    );
    out
}

/// The `base-config` output a node's render reads.
pub fn role_output(role: Role) -> &'static str {
    match role {
        Role::Controlplane => "controlplane",
        Role::Worker => "worker",
    }
}

/// The step kinds `talix build` realises (no network, no cluster).
pub const BUILD_KINDS: &[&str] = &[
    "secrets",
    "base-config",
    "talosconfig",
    "patch",
    "render",
    "kubeconfig",
];

#[cfg(test)]
mod invalidation_table {
    //! Changing each profile field invalidates exactly the steps that use it (and what follows
    //! from them), and nothing else. Builders here are stand-ins whose output is a function of
    //! their key, so every input change propagates exactly as far as the declarations say.
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::engine::{BuildContext, Builder, Builders, BuiltOutput, Engine, StepError};
    use crate::exec::ToolVersions;
    use crate::store::memory::MemoryStore;

    const PROFILE: &str = r#"
name: table
network:
  api_endpoint: 10.0.0.10
  subnet: 10.0.0.0/24
  pod_cidr: 10.244.0.0/16
  service_cidr: 10.96.0.0/12
talos:
  version: v1.11.5
  kubernetes_version: 1.34.1
  factory:
    schematic_id: 376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba
  vip: { interface: eth0, ip: 10.0.0.10 }
  extensions: [siderolabs/qemu-guest-agent]
secrets:
  recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
discovery:
  concurrency: 256
nodes:
  controlplane:
    assignments:
      - { name: cp1, ip: 10.0.0.11, mac: "02:54:00:00:01:51" }
      - { name: cp2, ip: 10.0.0.12 }
      - { name: cp3, ip: 10.0.0.13 }
  worker:
    assignments:
      - { name: w1, ip: 10.0.0.21 }
      - { name: w2, ip: 10.0.0.22 }
patches:
  nodes: { cp1: [cp1-extra.yaml] }
"#;

    struct KeyEcho;
    impl Builder for KeyEcho {
        fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
            let names: &[&str] = match cx.step.id.kind() {
                "secrets" => &["bundle"],
                "base-config" => &["controlplane", "worker"],
                "render" => &["config"],
                "patch" => &["patch"],
                _ => &["receipt"],
            };
            // Output depends on every value and dep output: derived from the step's own values
            // and upstream outputs (read through the context, as real builders do).
            let mut seed = serde_json::to_string(&cx.step.values).unwrap();
            for dep in &cx.step.deps {
                for out in &dep.outputs {
                    seed.push_str(&String::from_utf8_lossy(&cx.dep_output(&dep.step, out)?));
                }
            }
            Ok(names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        BuiltOutput::Content(
                            format!("{n}:{}", blake3::hash(seed.as_bytes())).into_bytes(),
                        ),
                    )
                })
                .collect())
        }
    }

    /// Stand-in for age at this boundary (the real cipher has its own tests).
    struct Reverse;
    impl crate::engine::ObjectCipher for Reverse {
        fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, String> {
            Ok(plaintext.iter().rev().copied().collect())
        }
        fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
            Ok(stored.iter().rev().copied().collect())
        }
    }

    fn builders() -> Builders {
        let mut b = Builders::default();
        for kind in [
            "secrets",
            "base-config",
            "talosconfig",
            "patch",
            "render",
            "discover",
            "apply",
            "ready",
            "bootstrap",
            "upgrade",
            "upgrade-k8s",
            "health",
            "kubeconfig",
            "verify",
        ] {
            b.register(kind, Box::new(KeyEcho));
        }
        b
    }

    fn write(dir: &std::path::Path, text: &str) -> Profile {
        std::fs::write(dir.join("table.yaml"), text).unwrap();
        crate::profile::load(&dir.join("table.yaml"))
            .unwrap()
            .profile
    }

    /// Steps not `cached` after applying `edit` to a fully realised profile.
    fn invalidated(edit: impl Fn(&str) -> String, files: &[(&str, &str)]) -> BTreeSet<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cp1-extra.yaml"), "machine: {}\n").unwrap();
        std::fs::write(dir.path().join("table.secrets.age"), "ciphertext-1").unwrap();
        let store = MemoryStore::default();
        let tools = ToolVersions::default();
        let profile = write(dir.path(), PROFILE);
        // The contract is pinned at the first build (as the lock file does).
        let contract = profile.talos.version.contract();
        let engine = Engine {
            profile: &profile,
            store: &store,
            tools: &tools,
            cipher: Some(&Reverse),
        };
        engine
            .realise(&steps(&profile, contract), &builders(), |_, _| {})
            .unwrap();
        assert!(
            engine
                .plan(&steps(&profile, contract))
                .unwrap()
                .iter()
                .all(|p| p.status.word() == "cached")
        );

        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let changed = write(dir.path(), &edit(PROFILE));
        let engine = Engine {
            profile: &changed,
            store: &store,
            tools: &tools,
            cipher: Some(&Reverse),
        };
        engine
            .plan(&steps(&changed, contract))
            .unwrap()
            .into_iter()
            .filter(|p| p.status.word() != "cached")
            .map(|p| p.step.id.to_string())
            .collect()
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    const ALL_NODES: [&str; 5] = ["cp1", "cp2", "cp3", "w1", "w2"];
    fn per_node(kinds: &[&str], nodes: &[&str]) -> Vec<String> {
        kinds
            .iter()
            .flat_map(|k| nodes.iter().map(move |n| format!("{k}/{n}")))
            .collect()
    }
    fn with(mut base: Vec<String>, extra: &[&str]) -> BTreeSet<String> {
        base.extend(extra.iter().map(|s| s.to_string()));
        base.into_iter().collect()
    }

    #[test]
    fn bootstrap_waits_only_for_the_first_control_plane_and_applies_for_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cp1-extra.yaml"), "machine: {}\n").unwrap();
        let profile = write(dir.path(), PROFILE);
        let all = steps(&profile, profile.talos.version.contract());
        let find = |id: &str| all.iter().find(|s| s.id.as_str() == id).unwrap();
        let bootstrap = find("bootstrap");
        assert_eq!(bootstrap.after, [StepId::new("ready", Some("cp1"))]);
        assert!(
            bootstrap.deps.iter().all(|d| d.step.kind() != "ready"),
            "not a key input: an upgrade of cp1 does not re-run the bootstrap"
        );
        for n in ALL_NODES {
            assert_eq!(
                find(&format!("apply/{n}")).after,
                [
                    StepId::new("discover", None),
                    StepId::new("talosconfig", None)
                ]
            );
        }
    }

    #[test]
    fn only_the_receipts_a_re_run_must_not_repeat_are_synced() {
        use crate::store::Durability;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cp1-extra.yaml"), "machine: {}\n").unwrap();
        let profile = write(dir.path(), PROFILE);
        let all = steps(&profile, profile.talos.version.contract());
        let synced: BTreeSet<String> = all
            .iter()
            .filter(|s| s.durability() == Durability::Synced)
            .map(|s| s.id.kind().to_string())
            .collect();
        assert_eq!(synced, set(&["apply", "bootstrap"]));
        // The checks that look before they act are side effects all the same (never cached
        // like a pure step by plan), only their receipts are relaxed.
        for kind in ["upgrade", "ready", "health", "upgrade-k8s", "verify"] {
            let step = all.iter().find(|s| s.id.kind() == kind).unwrap();
            assert!(
                step.replayable && step.effect == Effect::SideEffect,
                "{kind}"
            );
        }
    }

    #[test]
    fn no_change_invalidates_nothing() {
        assert_eq!(invalidated(|p| p.to_string(), &[]), set(&[]));
    }

    #[test]
    fn worker_ip_changes_only_that_worker_and_the_talosconfig() {
        let got = invalidated(|p| p.replace("10.0.0.21", "10.0.0.31"), &[]);
        assert_eq!(
            got,
            set(&[
                "talosconfig",
                "patch/w1",
                "render/w1",
                "apply/w1",
                "upgrade/w1",
                "ready/w1",
                "health",
                "upgrade-k8s",
                "verify"
            ])
        );
    }

    #[test]
    fn kubernetes_version_changes_base_config_and_every_render() {
        let got = invalidated(
            |p| p.replace("kubernetes_version: 1.34.1", "kubernetes_version: 1.34.2"),
            &[],
        );
        assert_eq!(
            got,
            with(
                per_node(&["render", "apply", "upgrade", "ready"], &ALL_NODES),
                &["base-config", "health", "upgrade-k8s", "verify"]
            )
        );
    }

    #[test]
    fn talos_version_bump_keeps_patches_and_contract() {
        let got = invalidated(|p| p.replace("version: v1.11.5", "version: v1.11.6"), &[]);
        assert_eq!(
            got,
            with(
                per_node(&["render", "apply", "upgrade", "ready"], &ALL_NODES),
                &["base-config", "health", "upgrade-k8s", "verify"]
            )
        );
    }

    #[test]
    fn gateway_changes_every_patch() {
        let got = invalidated(
            |p| {
                p.replace(
                    "  subnet: 10.0.0.0/24\n",
                    "  subnet: 10.0.0.0/24\n  gateway: 10.0.0.254\n",
                )
            },
            &[],
        );
        assert_eq!(
            got,
            with(
                per_node(
                    &["patch", "render", "apply", "upgrade", "ready"],
                    &ALL_NODES
                ),
                &["health", "upgrade-k8s", "verify"]
            )
        );
    }

    #[test]
    fn vip_changes_only_control_plane_patches() {
        let got = invalidated(|p| p.replace("ip: 10.0.0.10 }", "ip: 10.0.0.9 }"), &[]);
        assert_eq!(
            got,
            with(
                per_node(
                    &["patch", "render", "apply", "upgrade", "ready"],
                    &["cp1", "cp2", "cp3"]
                ),
                &["health", "upgrade-k8s", "verify"]
            )
        );
    }

    #[test]
    fn api_endpoint_changes_configs_and_kubeconfig_not_the_talosconfig() {
        let got = invalidated(
            |p| p.replace("api_endpoint: 10.0.0.10", "api_endpoint: 10.0.0.11"),
            &[],
        );
        assert_eq!(
            got,
            with(
                per_node(&["render", "apply", "upgrade", "ready"], &ALL_NODES),
                &[
                    "base-config",
                    "kubeconfig",
                    "health",
                    "upgrade-k8s",
                    "verify"
                ]
            )
        );
    }

    #[test]
    fn crt_ttl_changes_only_the_client_configs() {
        let got = invalidated(
            |p| {
                p.replace(
                    "secrets:\n  recipients:",
                    "secrets:\n  crt_ttl: 8760h\n  recipients:",
                )
            },
            &[],
        );
        assert_eq!(
            got,
            set(&["talosconfig", "kubeconfig", "upgrade-k8s", "verify"])
        );
    }

    #[test]
    fn bootstrap_does_not_invalidate_the_kubeconfig() {
        // The kubeconfig is derived from the secrets alone: a new bootstrap node re-runs the
        // bootstrap and what follows it, but the kubeconfig stays cached.
        let got = invalidated(
            |p| {
                p.replace(
                    "      - { name: cp1, ip: 10.0.0.11, mac: \"02:54:00:00:01:51\" }\n      - { name: cp2, ip: 10.0.0.12 }\n",
                    "      - { name: cp2, ip: 10.0.0.12 }\n      - { name: cp1, ip: 10.0.0.11, mac: \"02:54:00:00:01:51\" }\n",
                )
            },
            &[],
        );
        assert!(got.contains("bootstrap"), "{got:?}");
        assert!(!got.contains("kubeconfig"), "{got:?}");
    }

    #[test]
    fn pod_cidr_changes_base_config() {
        let got = invalidated(|p| p.replace("10.244.0.0/16", "10.245.0.0/16"), &[]);
        assert_eq!(
            got,
            with(
                per_node(&["render", "apply", "upgrade", "ready"], &ALL_NODES),
                &["base-config", "health", "upgrade-k8s", "verify"]
            )
        );
    }

    #[test]
    fn extensions_change_only_verify() {
        let got = invalidated(
            |p| {
                p.replace(
                    "[siderolabs/qemu-guest-agent]",
                    "[siderolabs/qemu-guest-agent, siderolabs/iscsi-tools]",
                )
            },
            &[],
        );
        assert_eq!(got, set(&["verify"]));
    }

    #[test]
    fn discovery_tuning_changes_nothing_but_subnet_changes_discover() {
        assert_eq!(
            invalidated(|p| p.replace("concurrency: 256", "concurrency: 64"), &[]),
            set(&[])
        );
        let got = invalidated(
            |p| p.replace("concurrency: 256", "concurrency: 64\n  subnet: 10.0.0.0/25"),
            &[],
        );
        assert_eq!(got, set(&["discover"]));
    }

    #[test]
    fn user_patch_content_changes_only_its_node() {
        let got = invalidated(
            |p| p.to_string(),
            &[("cp1-extra.yaml", "machine: {sysctls: {a: b}}\n")],
        );
        assert_eq!(
            got,
            set(&[
                "render/cp1",
                "apply/cp1",
                "upgrade/cp1",
                "ready/cp1",
                "health",
                "upgrade-k8s",
                "verify"
            ])
        );
    }

    #[test]
    fn adding_a_worker_adds_its_steps_rediscovers_and_updates_the_talosconfig() {
        let got = invalidated(
            |p| {
                p.replace(
                    "      - { name: w2, ip: 10.0.0.22 }\n",
                    "      - { name: w2, ip: 10.0.0.22 }\n      - { name: w3, ip: 10.0.0.23 }\n",
                )
            },
            &[],
        );
        assert_eq!(
            got,
            set(&[
                "discover",
                "talosconfig",
                "patch/w3",
                "render/w3",
                "apply/w3",
                "upgrade/w3",
                "ready/w3",
                "health",
                "upgrade-k8s",
                "verify"
            ])
        );
    }

    #[test]
    fn new_secrets_file_blocks_everything_that_uses_the_secrets() {
        let got = invalidated(|p| p.to_string(), &[("table.secrets.age", "ciphertext-2")]);
        assert_eq!(
            got,
            with(
                per_node(&["render", "apply", "upgrade", "ready"], &ALL_NODES),
                &[
                    "secrets",
                    "base-config",
                    "talosconfig",
                    "bootstrap",
                    "kubeconfig",
                    "health",
                    "upgrade-k8s",
                    "verify"
                ]
            )
        );
    }

    #[test]
    fn early_cut_off_identical_upstream_output_invalidates_nothing_below() {
        // A new talosctl version re-runs base-config; if it yields identical bytes, no render runs.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cp1-extra.yaml"), "machine: {}\n").unwrap();
        let profile = write(dir.path(), PROFILE);
        let contract = profile.talos.version.contract();
        let store = MemoryStore::default();
        let tools = ToolVersions::default();
        struct Constant;
        impl Builder for Constant {
            fn build(
                &self,
                cx: &BuildContext<'_>,
            ) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
                let names: &[&str] = match cx.step.id.kind() {
                    "base-config" => &["controlplane", "worker"],
                    "secrets" => &["bundle"],
                    "render" => &["config"],
                    "patch" => &["patch"],
                    _ => &["out"],
                };
                Ok(names
                    .iter()
                    .map(|n| (n.to_string(), BuiltOutput::Content(n.as_bytes().to_vec())))
                    .collect())
            }
        }
        let mut b = Builders::default();
        for kind in ["secrets", "base-config", "patch", "render"] {
            b.register(kind, Box::new(Constant));
        }
        let config_steps: Vec<Step> = steps(&profile, contract)
            .into_iter()
            .filter(|s| {
                BUILD_KINDS.contains(&s.id.kind())
                    && !matches!(s.id.kind(), "talosconfig" | "kubeconfig")
            })
            .collect();
        let engine = Engine {
            profile: &profile,
            store: &store,
            tools: &tools,
            cipher: Some(&Reverse),
        };
        engine.realise(&config_steps, &b, |_, _| {}).unwrap();
        // Simulate "talosctl changed" by bumping the base-config schema: a new key, same bytes.
        let bumped: Vec<Step> = config_steps
            .iter()
            .cloned()
            .map(|mut s| {
                if s.id.kind() == "base-config" {
                    s.schema += 1;
                }
                s
            })
            .collect();
        let mut ran = Vec::new();
        engine
            .realise(&bumped, &b, |r, _| {
                if r.ran {
                    ran.push(r.id.to_string())
                }
            })
            .unwrap();
        assert_eq!(
            ran,
            vec!["base-config".to_string()],
            "only base-config re-ran; renders were cut off"
        );
    }
}
