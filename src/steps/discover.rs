//! `discover`: finds the nodes that booted in maintenance mode on DHCP addresses and says which
//! is which (by MAC, from the profile or the Proxmox API; by count when no MAC can be read, as
//! runbook step 5d allows). Its output maps node name -> maintenance address; only nodes the
//! lock file does not record as configured are looked for. [`find_nodes`] is the same search
//! for `talix discover`, which reports it without applying anything.

use std::collections::BTreeMap;
use std::path::Path;

use crate::derivation::Tool;
use crate::discovery::{
    AllowNets, DiscoverParams, DiscoveryError, ExpectedNode, Matching, discover,
};
use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::lockfile::LockFile;
use crate::profile::Profile;
use crate::steps::cluster::ClusterEnv;

pub struct DiscoverBuilder(pub ClusterEnv);

/// What one search for the profile's unconfigured nodes found.
#[derive(Debug)]
pub struct Outcome {
    /// Nodes the lock file does not record that already answer this cluster's talosconfig at
    /// their static address (an apply whose answer was lost, a lost lock file): not looked for.
    pub already_configured: Vec<String>,
    /// Nodes with a pending first apply (a killed run sent them their config) that are no
    /// longer in maintenance mode: their apply step waits for them and records them.
    pub interrupted: Vec<String>,
    /// The nodes looked for (profile order) and what they were expected to show.
    pub expected: Vec<ExpectedNode>,
    /// The matching, or why it failed (the errors carry what could be matched).
    pub result: Result<Matching, DiscoveryError>,
}

/// Runbook step 5 for the nodes `lock` does not record as configured: first checks whether
/// each already answers with `talosconfig` at its static address, then scans, reads links and
/// matches the rest, rescanning `discovery.attempts` times while nodes are missing (a node
/// still rebooting into its static address is checked again before every scan). Sends nothing
/// but TCP connects, `get links --insecure` and `version`. `Err` only when it cannot start.
pub fn find_nodes(
    profile: &Profile,
    lock: &LockFile,
    talosconfig: &Path,
) -> Result<Outcome, String> {
    let unrecorded: Vec<_> = profile
        .nodes
        .iter()
        .filter(|n| !lock.nodes.contains_key(&n.name))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let allow = match AllowNets::from_env() {
        Ok(a) => a,
        Err(e) => {
            return Ok(Outcome {
                already_configured: vec![],
                interrupted: vec![],
                expected: vec![],
                result: Err(e),
            });
        }
    };
    let timeout = std::time::Duration::from_millis(profile.discovery.connect_timeout_ms);
    let mut already_configured: Vec<String> = Vec::new();
    let talosctl = crate::exec::locate(Tool::Talosctl).map_err(|e| e.to_string())?;
    let mut params = DiscoverParams::from_profile(profile, talosctl);
    let attempts = params.attempts.max(1);
    params.attempts = 1;
    // MACs from the Proxmox API were filled into the profile before (by `up` before anything
    // was built, commands::realise::resolve_proxmox_macs), so the patches select the same NIC.
    let no_vm_macs = BTreeMap::new();
    let mut attempt = 0;
    let mut interrupted = Vec::new();
    loop {
        attempt += 1;
        for node in &unrecorded {
            if already_configured.contains(&node.name) {
                continue;
            }
            let allowed = allow.as_ref().is_none_or(|a| a.allows(node.ip));
            let addr = std::net::SocketAddr::new(node.ip, profile.talos.api_port);
            if allowed
                && runtime.block_on(crate::discovery::tcp_accepts(addr, timeout))
                && crate::steps::cluster::answers_with_talosconfig(profile, talosconfig, node.ip)
            {
                eprintln!(
                    "note: discover: {} already answers with this cluster's talosconfig at {}",
                    node.name, node.ip
                );
                already_configured.push(node.name.clone());
            }
        }
        let expected: Vec<ExpectedNode> = unrecorded
            .iter()
            .filter(|n| !already_configured.contains(&n.name))
            .map(|n| ExpectedNode::for_node(n, &no_vm_macs))
            .collect();
        let _spinner = crate::steps::cluster::Spinner::start(format!(
            "looking for {} node(s) in maintenance mode on {} port {}",
            expected.len(),
            params.subnet,
            params.port
        ));
        let result = match runtime.block_on(discover(&params, &expected, allow.as_ref())) {
            Err(DiscoveryError::Missing { .. }) if attempt < attempts => {
                tracing::info!(attempt, "nodes not all found yet; rescanning");
                std::thread::sleep(params.retry_wait);
                continue;
            }
            // Every node still missing was sent its first config by a run that was killed
            // before recording it (a write-ahead `pending` record), and it is not in
            // maintenance mode any more: the config reached it, and it is installing,
            // rebooting, or up but not yet trusted (a worker gets its certificate from a
            // control plane that may not be configured yet). Not found is not missing: its
            // apply step waits for it to answer with this cluster's credentials and records
            // it, while the other nodes are applied (a re-run right after the kill came
            // before its reboot ended and failed here).
            Err(DiscoveryError::Missing { nodes, partial, .. })
                if nodes.iter().all(|n| lock.pending.applies.contains_key(n)) =>
            {
                for n in &nodes {
                    eprintln!(
                        "note: discover: {n} is not in maintenance mode any more: the interrupted run's config reached it"
                    );
                }
                interrupted.extend(nodes);
                Ok(*partial)
            }
            Err(DiscoveryError::Missing {
                nodes,
                subnet,
                port,
                last,
                partial,
                ..
            }) => Err(DiscoveryError::Missing {
                nodes,
                attempts,
                subnet,
                port,
                last,
                partial,
            }),
            other => other,
        };
        return Ok(Outcome {
            already_configured,
            interrupted,
            expected,
            result,
        });
    }
}

/// `warning:` lines for what the matching wants the operator to know (count-based assignments
/// first among them: they are printed before anything is applied), and a note on foreign hosts.
pub fn report(matching: &Matching) {
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
}

impl Builder for DiscoverBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let lock = self.0.lock.get();
        let outcome = find_nodes(cx.profile, &lock, &self.0.talosconfig).map_err(|e| cx.fail(e))?;
        let matching = outcome.result.map_err(|e| cx.fail(e.to_string()))?;
        report(&matching);
        let json =
            serde_json::to_vec_pretty(&matching.assigned).map_err(|e| cx.fail(e.to_string()))?;
        let configured = serde_json::to_vec_pretty(&outcome.already_configured)
            .map_err(|e| cx.fail(e.to_string()))?;
        let by_count =
            serde_json::to_vec_pretty(&matching.by_count).map_err(|e| cx.fail(e.to_string()))?;
        Ok([
            ("nodes".to_string(), BuiltOutput::Content(json)),
            ("configured".to_string(), BuiltOutput::Content(configured)),
            ("by_count".to_string(), BuiltOutput::Content(by_count)),
        ]
        .into())
    }
}
