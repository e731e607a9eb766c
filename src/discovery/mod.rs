//! Node discovery (runbook step 5): find which maintenance-mode address belongs to which profile
//! node, by scanning the subnet for the Talos API port, reading each host's physical NICs and
//! matching MACs, falling back to counting only when that cannot be wrong.

mod allow;
mod links;
mod matching;
mod scan;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use allow::{ALLOW_NETS_VAR, AllowNets};
pub use links::{
    DEFAULT_API_PORT, DEFAULT_PROBE_TIMEOUT, LinkProbe, PhysicalLink, nodes_arg,
    parse_physical_links, probe_links, probe_links_within, unsupported,
};
pub use matching::{ExpectedNode, FoundHost, MatchedBy, Matching, match_nodes, match_nodes_with};
pub use scan::{MIN_IPV4_PREFIX, MIN_IPV6_PREFIX, check_target, scan, scan_with, tcp_accepts};

use crate::profile::model::{Node, Profile};

/// Everything that can go wrong while discovering nodes.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{ALLOW_NETS_VAR}={value:?} is invalid: {reason}")]
    BadAllowNets { value: String, reason: String },
    #[error(
        "refusing to scan {subnet}: {refused} is outside {ALLOW_NETS_VAR} ({allowed}); nothing was sent"
    )]
    NotAllowed {
        subnet: IpNet,
        refused: IpAddr,
        allowed: String,
    },
    #[error(
        "refusing to scan {subnet}: it is larger than /{minimum}; set discovery.subnet to the nodes' DHCP subnet"
    )]
    SubnetTooLarge { subnet: IpNet, minimum: u8 },
    #[error("the scan was interrupted")]
    ScanAborted,
    #[error("cannot read the links of {ip}: {source}")]
    Probe {
        ip: IpAddr,
        source: Box<crate::exec::ExecError>,
    },
    #[error(
        "`talosctl get links --insecure` against {ip} did not finish within {limit:?}; given up"
    )]
    ProbeTimeout { ip: IpAddr, limit: Duration },
    #[error("cannot parse `talosctl get links -o json` from {ip}: {reason}")]
    LinkOutput { ip: IpAddr, reason: String },
    #[error(
        "{ip} carries the MACs of several nodes ({}); MACs in the profile/Proxmox must be unique per node",
        nodes.join(", ")
    )]
    HostClaimsSeveralNodes { ip: IpAddr, nodes: Vec<String> },
    #[error(
        "node {node}: its MAC {mac} was found on several hosts ({}); two machines share a MAC, fix the VM definitions",
        join_ips(hosts)
    )]
    NodeClaimedTwice {
        node: String,
        mac: String,
        hosts: Vec<IpAddr>,
    },
    #[error(
        "cannot tell which address belongs to which node: unmatched nodes {}; {} maintenance-mode candidate address(es): {}. \
         Counting (runbook step 5d) needs exactly as many addresses as nodes, and never puts a node with a known MAC on a machine whose links lack it. \
         Add `mac:` to these nodes in the profile or configure `proxmox:` so MACs can be looked up",
        nodes.join(", "),
        candidates.len(),
        join_ips(candidates)
    )]
    Ambiguous {
        nodes: Vec<String>,
        candidates: Vec<IpAddr>,
        /// What could be matched anyway.
        partial: Box<Matching>,
    },
    #[error(
        "cannot match nodes {} by MAC (no MAC known, or their links cannot be read), and the profile forbids matching by count (discovery.count_fallback: false); candidate addresses {}. \
         Add `mac:` to these nodes or configure `proxmox:`, or allow the count fallback",
        nodes.join(", "),
        join_ips(candidates)
    )]
    CountFallbackDisabled {
        nodes: Vec<String>,
        candidates: Vec<IpAddr>,
        partial: Box<Matching>,
    },
    #[error(
        "node {node}: its config puts the static address on link {link}, but the machine at {ip} has no such link (it has: {}); nothing was applied. \
         Set the node's `mac:` (or `vmid:` with `proxmox:`) so talix selects the NIC by MAC, or set `interface:` to one of its links",
        if have.is_empty() { "no physical links".to_string() } else { have.join(", ") }
    )]
    LinkMissing {
        node: String,
        ip: IpAddr,
        link: String,
        have: Vec<String>,
    },
    #[error("no maintenance-mode machine found for {}", nodes.join(", "))]
    NodesNotFound {
        nodes: Vec<String>,
        partial: Box<Matching>,
    },
    #[error(
        "nodes not found after {attempts} scan(s) of {subnet} port {port}: {} ({last}). \
         Check that these machines are booted into maintenance mode on that subnet",
        nodes.join(", ")
    )]
    Missing {
        nodes: Vec<String>,
        attempts: u32,
        subnet: IpNet,
        port: u16,
        /// What the last scan did find.
        last: String,
        /// What the last scan could match.
        partial: Box<Matching>,
    },
}

fn join_ips(ips: &[IpAddr]) -> String {
    let parts: Vec<String> = ips.iter().map(ToString::to_string).collect();
    if parts.is_empty() {
        "(none)".to_string()
    } else {
        parts.join(", ")
    }
}

/// How to discover: where to scan and how patiently.
#[derive(Debug, Clone)]
pub struct DiscoverParams {
    /// The `talosctl` executable used for `get links --insecure`.
    pub talosctl: PathBuf,
    pub subnet: IpNet,
    /// The Talos API port (50000 unless the profile says otherwise).
    pub port: u16,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    /// Scans before giving up (at least one).
    pub attempts: u32,
    /// Pause between scans.
    pub retry_wait: Duration,
    /// Time limit of one `talosctl get links` run.
    pub probe_timeout: Duration,
    /// Whether nodes without a readable MAC may be matched by count (runbook step 5d;
    /// `discovery.count_fallback`).
    pub count_fallback: bool,
}

impl DiscoverParams {
    /// Parameters from the profile's `discovery:` block and `talos.api_port`.
    pub fn from_profile(profile: &Profile, talosctl: PathBuf) -> Self {
        let d = &profile.discovery;
        DiscoverParams {
            talosctl,
            subnet: d.subnet,
            port: profile.talos.api_port,
            concurrency: d.concurrency.max(1) as usize,
            connect_timeout: Duration::from_millis(d.connect_timeout_ms),
            attempts: d.attempts.max(1),
            retry_wait: Duration::from_secs(d.retry_wait_s),
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            count_fallback: d.count_fallback,
        }
    }
}

impl ExpectedNode {
    /// The node with its profile MAC, or else the first MAC Proxmox lists for its VM (`net0`
    /// first), from [`crate::proxmox::ProxmoxClient::vm_macs`].
    pub fn for_node(node: &Node, vm_macs: &BTreeMap<u32, Vec<String>>) -> Self {
        let mac = node.mac.clone().or_else(|| {
            node.vmid
                .and_then(|id| vm_macs.get(&id))
                .and_then(|macs| macs.first().cloned())
        });
        // The config names the link only when the profile (or lock file) knows no MAC.
        let link = match crate::steps::patch::Nic::of(node) {
            crate::steps::patch::Nic::Name(name) => Some(name),
            crate::steps::patch::Nic::Mac(_) => None,
        };
        ExpectedNode {
            name: node.name.clone(),
            mac: mac.map(|m| m.to_ascii_lowercase()),
            link,
        }
    }
}

/// Finds `expected` nodes (only those still in maintenance mode: configured nodes do not answer
/// `--insecure` and must not be passed). Rescans until every node is matched or `attempts` run
/// out; the final error lists the nodes still missing. Hosts that answer the port but not
/// `get links --insecure` (e.g. configured machines) are skipped with a warning.
pub async fn discover(
    params: &DiscoverParams,
    expected: &[ExpectedNode],
    allow: Option<&AllowNets>,
) -> Result<Matching, DiscoveryError> {
    if expected.is_empty() {
        return Ok(Matching::default());
    }
    let attempts = params.attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let open = scan(
            params.subnet,
            params.port,
            params.concurrency,
            params.connect_timeout,
            allow,
        )
        .await?;
        tracing::info!(
            attempt,
            subnet = %params.subnet,
            port = params.port,
            answering = open.len(),
            "discovery scan"
        );
        let (found, skipped) = probe_all(params, &open).await;
        let retry_reason = match match_nodes_with(expected, &found, params.count_fallback) {
            Ok(mut matching) => {
                matching.warnings.extend(skipped);
                check_named_links(expected, &found, &mut matching)?;
                return Ok(matching);
            }
            Err(DiscoveryError::NodesNotFound { nodes, partial }) => {
                let summary = found_summary(&partial, &[]);
                (nodes, summary, partial)
            }
            // Fewer machines than nodes: some may still be booting.
            Err(DiscoveryError::Ambiguous {
                nodes,
                candidates,
                partial,
            }) if candidates.len() < nodes.len() => {
                let summary = found_summary(&partial, &candidates);
                let mut partial = partial;
                partial.unclaimed = candidates;
                (nodes, summary, partial)
            }
            Err(e) => return Err(e),
        };
        if attempt >= attempts {
            let (nodes, mut last, mut partial) = retry_reason;
            partial.warnings.extend(skipped.iter().cloned());
            if !skipped.is_empty() {
                last = format!("{last}; {}", skipped.join("; "));
            }
            return Err(DiscoveryError::Missing {
                nodes,
                attempts,
                subnet: params.subnet,
                port: params.port,
                last,
                partial,
            });
        }
        tracing::info!(
            missing = %retry_reason.0.join(","),
            wait_s = params.retry_wait.as_secs_f64(),
            "nodes not all found yet; rescanning"
        );
        tokio::time::sleep(params.retry_wait).await;
    }
}

/// A node whose config names its link (no MAC known) must be matched to a machine that has a
/// link of that name: a config for a link the machine lacks leaves it configured but without
/// its static address (trap 10), so this is refused before anything is applied. A machine
/// whose links could not be read cannot be checked: that is a warning.
pub fn check_named_links(
    expected: &[ExpectedNode],
    found: &[FoundHost],
    matching: &mut Matching,
) -> Result<(), DiscoveryError> {
    for node in expected {
        let (Some(link), Some(ip)) = (&node.link, matching.assigned.get(&node.name)) else {
            continue;
        };
        match found.iter().find(|h| h.ip == *ip).map(|h| &h.probe) {
            Some(LinkProbe::Links(links)) => {
                if !links.iter().any(|l| &l.name == link) {
                    return Err(DiscoveryError::LinkMissing {
                        node: node.name.clone(),
                        ip: *ip,
                        link: link.clone(),
                        have: links.iter().map(|l| l.name.clone()).collect(),
                    });
                }
            }
            _ => matching.warnings.push(format!(
                "{}: the links of {ip} could not be read, so talix cannot check that it has the link {link} its config names",
                node.name
            )),
        }
    }
    Ok(())
}

/// `matched cp1 at 10.0.0.5; other machines: 10.0.0.9` for the final "missing" error.
fn found_summary(partial: &Matching, unassigned: &[IpAddr]) -> String {
    let matched: Vec<String> = partial
        .assigned
        .iter()
        .map(|(node, ip)| format!("{node} at {ip}"))
        .collect();
    let mut others: Vec<IpAddr> = partial.foreign.iter().chain(unassigned).copied().collect();
    others.sort();
    format!(
        "matched {}; other machines: {}",
        if matched.is_empty() {
            "none".to_string()
        } else {
            matched.join(", ")
        },
        join_ips(&others)
    )
}

/// Probes every answering host's links, a few talosctl processes at a time. Returns the hosts that
/// answered `get links` and a note for each host that did not.
async fn probe_all(params: &DiscoverParams, open: &[IpAddr]) -> (Vec<FoundHost>, Vec<String>) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(params.concurrency.clamp(1, 8)));
    let mut tasks = tokio::task::JoinSet::new();
    for &ip in open {
        let permits = permits.clone();
        let talosctl = params.talosctl.clone();
        let port = params.port;
        let limit = params.probe_timeout;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let result =
                tokio::task::spawn_blocking(move || probe_links_within(&talosctl, ip, port, limit))
                    .await;
            (ip, result)
        });
    }
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((ip, Ok(Ok(probe)))) => found.push(FoundHost { ip, probe }),
            Ok((ip, Ok(Err(e)))) => {
                tracing::debug!(%ip, error = %e, "host skipped");
                skipped.push(format!(
                    "{ip}: answers on port {} but not `get links --insecure` (not in maintenance mode?); ignored: {}",
                    params.port,
                    one_line(&e.to_string())
                ));
            }
            Ok((ip, Err(join))) => skipped.push(format!("{ip}: probe did not finish: {join}")),
            Err(join) => skipped.push(format!("probe did not finish: {join}")),
        }
    }
    found.sort_by_key(|h| h.ip);
    skipped.sort();
    (found, skipped)
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::model::Role;

    fn node(name: &str, mac: Option<&str>, vmid: Option<u32>) -> Node {
        Node {
            name: name.into(),
            role: Role::Worker,
            ip: "10.0.0.5".parse().unwrap(),
            mac: mac.map(Into::into),
            vmid,
            interface: "eth0".into(),
            index: 0,
        }
    }

    fn expected_by_link(name: &str, link: &str) -> ExpectedNode {
        ExpectedNode {
            name: name.into(),
            mac: None,
            link: Some(link.into()),
        }
    }

    /// A config that names a link the machine lacks strands the node: refused before apply,
    /// naming the links the machine has.
    #[test]
    fn a_named_link_the_machine_lacks_is_refused_with_the_links_it_has() {
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let found = [FoundHost {
            ip,
            probe: LinkProbe::links([("ens18", "bc:24:11:00:00:01")]),
        }];
        let mut m = Matching::default();
        m.assigned.insert("w1".into(), ip);
        let err = check_named_links(&[expected_by_link("w1", "eth0")], &found, &mut m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("link eth0"), "{err}");
        assert!(err.contains("it has: ens18"), "{err}");
        assert!(err.contains("nothing was applied"), "{err}");

        let mut m2 = Matching::default();
        m2.assigned.insert("w1".into(), ip);
        check_named_links(&[expected_by_link("w1", "ens18")], &found, &mut m2).unwrap();
        assert!(m2.warnings.is_empty());
    }

    #[test]
    fn unreadable_links_cannot_be_checked_and_say_so() {
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let found = [FoundHost {
            ip,
            probe: LinkProbe::Unsupported {
                reason: "Unimplemented".into(),
            },
        }];
        let mut m = Matching::default();
        m.assigned.insert("w1".into(), ip);
        check_named_links(&[expected_by_link("w1", "eth0")], &found, &mut m).unwrap();
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    }

    #[test]
    fn a_node_without_mac_expects_its_interface_and_one_with_mac_none() {
        let by_name = ExpectedNode::for_node(&node("a", None, None), &BTreeMap::new());
        assert_eq!(by_name.link.as_deref(), Some("eth0"));
        let by_mac = ExpectedNode::for_node(
            &node("a", Some("02:00:00:00:00:0a"), None),
            &BTreeMap::new(),
        );
        assert_eq!(by_mac.link, None);
    }

    #[test]
    fn expected_mac_comes_from_profile_then_proxmox_net0() {
        let vm_macs = BTreeMap::from([(
            101,
            vec!["BC:24:11:00:00:01".into(), "bc:24:11:00:00:09".into()],
        )]);
        let from_profile =
            ExpectedNode::for_node(&node("a", Some("02:00:00:00:00:0A"), Some(101)), &vm_macs);
        assert_eq!(from_profile.mac.as_deref(), Some("02:00:00:00:00:0a"));
        let from_proxmox = ExpectedNode::for_node(&node("b", None, Some(101)), &vm_macs);
        assert_eq!(from_proxmox.mac.as_deref(), Some("bc:24:11:00:00:01"));
        let unknown = ExpectedNode::for_node(&node("c", None, Some(555)), &vm_macs);
        assert_eq!(unknown.mac, None);
        assert_eq!(
            ExpectedNode::for_node(&node("d", None, None), &vm_macs).mac,
            None
        );
    }
}
