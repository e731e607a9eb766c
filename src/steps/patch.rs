//! `patch/<node>`: the per-node strategic-merge patch of the runbook (hostname, static address,
//! default route, nameservers, and on control planes the VIP), generated natively.
//!
//! Trap 2 of the runbook: from contract v1.12 on, generated configs carry a `HostnameConfig`
//! document, and a static `machine.network.hostname` beside it fails validation. So for those
//! contracts the hostname goes into the `HostnameConfig` document instead.

use std::collections::BTreeMap;

use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::profile::{Contract, Node, Profile, Role};

pub struct PatchBuilder;

/// First contract whose generated configs carry a `HostnameConfig` document.
pub const HOSTNAME_CONFIG_CONTRACT: Contract = Contract {
    major: 1,
    minor: 12,
};

/// The patch YAML for `node` under `contract`.
pub fn node_patch(profile: &Profile, node: &Node, contract: Contract) -> String {
    let net = &profile.network;
    let legacy_hostname = contract < HOSTNAME_CONFIG_CONTRACT;
    let mut y = String::new();
    y.push_str(&format!(
        "# talix patch for {} ({}), contract {contract}\n",
        node.name, node.role
    ));
    y.push_str("machine:\n  network:\n");
    if legacy_hostname {
        y.push_str(&format!("    hostname: {}\n", node.name));
    }
    y.push_str("    interfaces:\n");
    y.push_str(&format!("      - interface: {}\n", node.interface));
    y.push_str("        dhcp: false\n");
    y.push_str(&format!(
        "        addresses:\n          - {}/{}\n",
        node.ip,
        net.subnet.prefix_len()
    ));
    let default_route = if net.gateway.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    y.push_str(&format!(
        "        routes:\n          - network: {default_route}\n            gateway: {}\n",
        net.gateway
    ));
    if node.role == Role::Controlplane
        && let Some(vip) = &profile.talos.vip
    {
        y.push_str(&format!("        vip:\n          ip: {}\n", vip.ip));
    }
    y.push_str("    nameservers:\n");
    for ns in &net.nameservers {
        y.push_str(&format!("      - {ns}\n"));
    }
    if !legacy_hostname {
        y.push_str("---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: off\n");
        y.push_str(&format!("hostname: {}\n", node.name));
    }
    y
}

impl Builder for PatchBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let name = cx
            .step
            .id
            .node()
            .ok_or_else(|| cx.fail("patch step without a node"))?;
        let node = cx
            .profile
            .node(name)
            .ok_or_else(|| cx.fail(format!("no node {name} in the profile")))?;
        let contract: Contract = cx
            .step
            .values
            .get("talos.contract")
            .map(|v| v.to_string())
            .ok_or_else(|| cx.fail("missing talos.contract input"))?
            .parse()
            .map_err(|e: String| cx.fail(e))?;
        let yaml = node_patch(cx.profile, node, contract);
        Ok([("patch".to_string(), BuiltOutput::Content(yaml.into_bytes()))].into())
    }
}
