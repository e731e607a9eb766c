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
    pub const TALOSCONFIG: u32 = 1;
    pub const PATCH: u32 = 1;
    pub const RENDER: u32 = 1;
    pub const DISCOVER: u32 = 1;
    pub const APPLY: u32 = 1;
    pub const READY: u32 = 1;
    pub const BOOTSTRAP: u32 = 1;
    pub const HEALTH: u32 = 1;
    pub const KUBECONFIG: u32 = 1;
    pub const VERIFY: u32 = 1;
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
    Changed { profile: String, lock: String, wanted: Contract, pinned: Contract },
    #[error("{lock}: contract {text:?} is not of the form vMAJOR.MINOR")]
    BadPinned { lock: String, text: String },
}

/// Resolve the contract: the lock file's pin wins over the talos.version default; a profile
/// contract that differs from the pin needs `allow_change`.
pub fn effective_contract(profile: &Profile, lock: &LockFile, allow_change: bool) -> Result<EffectiveContract, ContractError> {
    let pinned = match &lock.contract {
        Some(text) => Some(text.parse::<Contract>().map_err(|_| ContractError::BadPinned {
            lock: profile.lock_path().display().to_string(),
            text: text.clone(),
        })?),
        None => None,
    };
    match (profile.talos.contract, pinned) {
        (Some(wanted), Some(pinned)) if wanted != pinned && !allow_change => Err(ContractError::Changed {
            profile: profile.source.display().to_string(),
            lock: profile.lock_path().display().to_string(),
            wanted,
            pinned,
        }),
        (Some(wanted), _) => Ok(EffectiveContract { contract: wanted, source: ContractSource::Profile }),
        (None, Some(pinned)) => Ok(EffectiveContract { contract: pinned, source: ContractSource::LockFile }),
        (None, None) => Ok(EffectiveContract { contract: profile.talos.version.contract(), source: ContractSource::TalosVersion }),
    }
}

/// A file input by content hash (absent files hash as absent, so creating one is a change).
pub fn file_input(path: &std::path::Path, shown: &str) -> InputValue {
    match std::fs::read(path) {
        Ok(bytes) => InputValue::File { path: shown.to_string(), hash: Digest::of_domain(domain::FILE, &bytes) },
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
    step.value("node.name", &node.name).value("node.role", node.role).value("node.ip", node.ip.to_string())
}

/// Every step of the profile, in dependency order.
pub fn steps(profile: &Profile, contract: Contract) -> Vec<Step> {
    let p = profile;
    let t = &p.talos;
    let net = &p.network;
    let shown_secrets = p.talos.secrets_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = Vec::new();

    out.push(
        Step::new(secrets_id(), schema::SECRETS, Effect::Pure)
            .input("secrets_file", file_input(&t.secrets_file, &shown_secrets))
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
        Step::new(StepId::new("talosconfig", None), schema::TALOSCONFIG, Effect::Pure)
            .value("name", &p.name)
            .value("network.api_endpoint", &net.api_endpoint)
            .value("talos.contract", contract.to_string())
            .value("endpoints", &cp_ips)
            .value("nodes", &all_ips)
            .dep(secrets_id(), &["bundle"])
            .tool(Tool::Talosctl)
            .secret(),
    );
    for node in &p.nodes {
        let mut patch = node_values(Step::new(StepId::new("patch", Some(&node.name)), schema::PATCH, Effect::Pure), node)
            .value("network.subnet_prefix", net.subnet.prefix_len())
            .value("network.gateway", net.gateway.to_string())
            .value("network.nameservers", net.nameservers.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .value("node.interface", &node.interface)
            .value("talos.contract", contract.to_string());
        if node.role == Role::Controlplane {
            patch = patch.value("talos.vip", t.vip.as_ref().map(|v| format!("{} on {}", v.ip, v.interface)));
        }
        out.push(patch);
    }
    for node in &p.nodes {
        let mut render = Step::new(StepId::new("render", Some(&node.name)), schema::RENDER, Effect::Pure)
            .dep(base_config_id(), &[role_output(node.role)])
            .dep(StepId::new("patch", Some(&node.name)), &["patch"])
            .tool(Tool::Talosctl)
            .secret();
        for (i, patch) in p.patches.for_node(node).into_iter().enumerate() {
            render = render.input(&format!("user_patch[{i}]"), file_input(&patch.path, &patch.written));
        }
        out.push(render);
    }
    let expected_macs: Vec<String> = p.nodes.iter().map(|n| format!("{}={}", n.name, n.mac.as_deref().unwrap_or("?"))).collect();
    out.push(
        Step::new(StepId::new("discover", None), schema::DISCOVER, Effect::Observe)
            .value("discovery.subnet", p.discovery.subnet.to_string())
            .value("talos.api_port", t.api_port)
            .value("expected_macs", expected_macs)
            .value("proxmox.url", p.proxmox.as_ref().map(|x| &x.url))
            .tool(Tool::Talosctl),
    );
    for node in &p.nodes {
        out.push(
            node_values(Step::new(StepId::new("apply", Some(&node.name)), schema::APPLY, Effect::SideEffect), node)
                .dep(StepId::new("render", Some(&node.name)), &["config"])
                .tool(Tool::Talosctl),
        );
    }
    for node in &p.nodes {
        out.push(
            Step::new(StepId::new("ready", Some(&node.name)), schema::READY, Effect::SideEffect)
                .value("node.ip", node.ip.to_string())
                .dep(StepId::new("apply", Some(&node.name)), &[]),
        );
    }
    let first_cp = p.controlplanes().next().map(|n| n.name.clone());
    out.push(
        Step::new(StepId::new("bootstrap", None), schema::BOOTSTRAP, Effect::SideEffect)
            .value("bootstrap_node", &first_cp)
            .dep(secrets_id(), &["bundle"])
            .tool(Tool::Talosctl),
    );
    let mut health = Step::new(StepId::new("health", None), schema::HEALTH, Effect::SideEffect)
        .dep(StepId::new("bootstrap", None), &[])
        .tool(Tool::Talosctl);
    for node in &p.nodes {
        health = health.dep(StepId::new("ready", Some(&node.name)), &[]);
    }
    out.push(health);
    out.push(
        Step::new(StepId::new("kubeconfig", None), schema::KUBECONFIG, Effect::Pure)
            .value("network.api_endpoint", &net.api_endpoint)
            .dep(StepId::new("bootstrap", None), &[])
            .dep(secrets_id(), &["bundle"])
            .tool(Tool::Talosctl)
            .secret(),
    );
    out.push(
        Step::new(StepId::new("verify", None), schema::VERIFY, Effect::SideEffect)
            .value("talos.extensions", &t.extensions)
            .value("nodes", p.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
            .dep(StepId::new("health", None), &[])
            .dep(StepId::new("kubeconfig", None), &[])
            .tool(Tool::Kubectl)
            .tool(Tool::Talosctl),
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
pub const BUILD_KINDS: &[&str] = &["secrets", "base-config", "talosconfig", "patch", "render"];
