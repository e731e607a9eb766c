//! `discover`: finds the nodes that booted in maintenance mode on DHCP addresses and says which
//! is which (by MAC, from the profile or the Proxmox API). Its output maps node name ->
//! maintenance address; only nodes the lock file does not record as configured are looked for.

use std::collections::BTreeMap;

use crate::derivation::Tool;
use crate::discovery::{AllowNets, DiscoverParams, ExpectedNode, discover};
use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::steps::cluster::ClusterEnv;

pub struct DiscoverBuilder(pub ClusterEnv);

impl Builder for DiscoverBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let recorded = self.0.lock.get().nodes;
        let unrecorded: Vec<_> = cx
            .profile
            .nodes
            .iter()
            .filter(|n| !recorded.contains_key(&n.name))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| cx.fail(e.to_string()))?;
        let allow = AllowNets::from_env().map_err(|e| cx.fail(e.to_string()))?;
        // A node the lock file does not know may still be configured: an apply whose answer was
        // lost (the node rebooted mid-reply), or a lock file lost with the store. Such a node
        // answers the authenticated API at its static address; it is applied there, not looked
        // for in maintenance mode. It may also still be rebooting into its static address, so
        // this is checked again before every scan (defect 7 of issue 8: a re-run while a node
        // reboots must not fail with "nodes not found").
        let timeout = std::time::Duration::from_millis(cx.profile.discovery.connect_timeout_ms);
        let mut already_configured: Vec<String> = Vec::new();
        let talosctl = crate::exec::locate(Tool::Talosctl).map_err(|e| cx.fail(e.to_string()))?;
        let mut params = DiscoverParams::from_profile(cx.profile, talosctl);
        let attempts = params.attempts.max(1);
        params.attempts = 1;
        // MACs from the Proxmox API were filled into the profile by `up` before anything was
        // built (commands::realise::resolve_proxmox_macs), so the patches select the same NIC.
        let no_vm_macs = BTreeMap::new();
        let mut attempt = 0;
        let matching = loop {
            attempt += 1;
            for node in &unrecorded {
                if already_configured.contains(&node.name) {
                    continue;
                }
                let allowed = allow.as_ref().is_none_or(|a| a.allows(node.ip));
                let addr = std::net::SocketAddr::new(node.ip, cx.profile.talos.api_port);
                if allowed
                    && runtime.block_on(crate::discovery::tcp_accepts(addr, timeout))
                    && crate::steps::cluster::answers_authenticated(cx, &self.0, node.ip)
                {
                    eprintln!(
                        "note: discover: {} already answers with this cluster's talosconfig at {}",
                        node.name, node.ip
                    );
                    already_configured.push(node.name.clone());
                }
            }
            let wanted: Vec<_> = unrecorded
                .iter()
                .filter(|n| !already_configured.contains(&n.name))
                .collect();
            let expected: Vec<ExpectedNode> = wanted
                .iter()
                .map(|n| ExpectedNode::for_node(n, &no_vm_macs))
                .collect();
            let _spinner = crate::steps::cluster::Spinner::start(format!(
                "looking for {} node(s) in maintenance mode on {} port {}",
                expected.len(),
                params.subnet,
                params.port
            ));
            match runtime.block_on(discover(&params, &expected, allow.as_ref())) {
                Ok(m) => break m,
                Err(crate::discovery::DiscoveryError::Missing { .. }) if attempt < attempts => {
                    tracing::info!(attempt, "nodes not all found yet; rescanning");
                    std::thread::sleep(params.retry_wait);
                }
                Err(crate::discovery::DiscoveryError::Missing {
                    nodes,
                    subnet,
                    port,
                    last,
                    ..
                }) => {
                    let e = crate::discovery::DiscoveryError::Missing {
                        nodes,
                        attempts,
                        subnet,
                        port,
                        last,
                    };
                    return Err(cx.fail(e.to_string()));
                }
                Err(e) => return Err(cx.fail(e.to_string())),
            }
        };
        for w in &matching.warnings {
            eprintln!("warning: discover: {w}");
        }
        if !matching.foreign.is_empty() {
            eprintln!(
                "note: discover: ignored {} maintenance-mode machine(s) of another cluster: {}",
                matching.foreign.len(),
                matching
                    .foreign
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let json =
            serde_json::to_vec_pretty(&matching.assigned).map_err(|e| cx.fail(e.to_string()))?;
        let configured =
            serde_json::to_vec_pretty(&already_configured).map_err(|e| cx.fail(e.to_string()))?;
        Ok([
            ("nodes".to_string(), BuiltOutput::Content(json)),
            ("configured".to_string(), BuiltOutput::Content(configured)),
        ]
        .into())
    }
}
