//! `talix discover`: runbook step 5 on its own. Scans, reads links and matches exactly as `up`
//! does (one search, [`crate::steps::discover::find_nodes`]), then reports every profile node:
//! where its MAC came from, the maintenance address found and how it was matched, plus the
//! hosts that answered but are not ours. Never applies, never writes the lock file or the store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use super::{CliError, Result};
use crate::discovery::{DiscoveryError, Matching};
use crate::lockfile::LockFile;
use crate::workspace::PathPolicy;

/// Version of the `--json` schema (README, "talix discover --json"); bumped on any change that
/// is not a new optional field.
pub const DISCOVER_JSON_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
struct Report {
    version: u32,
    profile: String,
    subnet: String,
    port: u16,
    /// Every node found in maintenance mode or already configured.
    complete: bool,
    nodes: Vec<NodeReport>,
    /// Node -> maintenance-mode address, for the nodes found in maintenance mode.
    maintenance_addresses: BTreeMap<String, IpAddr>,
    /// Hosts that answered in maintenance mode with MACs of no node (another cluster).
    foreign: Vec<IpAddr>,
    /// Maintenance-mode hosts left unmatched (not provably foreign).
    unclaimed: Vec<IpAddr>,
    warnings: Vec<String>,
    /// Why some nodes are not accounted for.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    name: String,
    role: String,
    /// The static address of its config.
    ip: IpAddr,
    mac: Option<String>,
    /// `profile`, `lock` (learned at an earlier `up`) or `proxmox` (VM `vmid`'s first NIC).
    mac_source: Option<&'static str>,
    vmid: Option<u32>,
    /// `found` (in maintenance mode), `configured`, `not-found` or `ambiguous`.
    status: &'static str,
    /// Where it answers: its maintenance address, or where it is configured.
    address: Option<IpAddr>,
    /// `mac`, `count` (runbook step 5d), `static-address` (already answers this cluster's
    /// talosconfig there), `interrupted-apply` (a killed run sent it its first config: it left
    /// maintenance mode, and `up` records it once it answers) or `lock-file` (recorded as
    /// configured).
    matched_by: Option<&'static str>,
    /// For configured nodes: how the lock file says it was matched at its first apply.
    first_matched_by: Option<String>,
}

fn input(e: impl std::fmt::Display) -> CliError {
    CliError::input(format!("error: {e}"))
}

pub(super) fn discover(profile_path: &Path, policy: PathPolicy, json: bool) -> Result<()> {
    let mut profile = super::load_profile(profile_path, policy)?;
    // Read only: no workspace lock taken, nothing written (the lock file is replaced
    // atomically by writers, so reading it is safe).
    let lock = LockFile::load(profile.workspace.lock_file()).map_err(input)?;
    let mut mac_source: BTreeMap<String, &'static str> = profile
        .nodes
        .iter()
        .filter(|n| n.mac.is_some())
        .map(|n| (n.name.clone(), "profile"))
        .collect();
    for node in &mut profile.nodes {
        if node.mac.is_none() {
            node.mac = lock.nodes.get(&node.name).and_then(|n| n.mac.clone());
            if node.mac.is_some() {
                mac_source.insert(node.name.clone(), "lock");
            }
        }
    }
    for name in super::realise::resolve_proxmox_macs(&mut profile)? {
        mac_source.insert(name, "proxmox");
    }
    let talosconfig = profile.workspace.talosconfig();
    let outcome = crate::steps::discover::find_nodes(&profile, &lock, &talosconfig)
        .map_err(|e| CliError::from(format!("discover: {e}")))?;
    let (matching, error, ambiguous): (Matching, Option<String>, BTreeSet<String>) =
        match outcome.result {
            Ok(m) => (m, None, BTreeSet::new()),
            Err(
                e @ (DiscoveryError::BadAllowNets { .. }
                | DiscoveryError::NotAllowed { .. }
                | DiscoveryError::SubnetTooLarge { .. }),
            ) => return Err(input(e)),
            Err(e) => {
                let text = e.to_string();
                match e {
                    DiscoveryError::Missing { partial, .. }
                    | DiscoveryError::NodesNotFound { partial, .. } => {
                        (*partial, Some(text), BTreeSet::new())
                    }
                    DiscoveryError::Ambiguous {
                        nodes,
                        candidates,
                        partial,
                    }
                    | DiscoveryError::CountFallbackDisabled {
                        nodes,
                        candidates,
                        partial,
                    } => {
                        let mut m = *partial;
                        m.unclaimed = candidates;
                        (m, Some(text), nodes.into_iter().collect())
                    }
                    _ => (Matching::default(), Some(text), BTreeSet::new()),
                }
            }
        };
    crate::steps::discover::report(&matching);

    let mut nodes = Vec::new();
    for n in &profile.nodes {
        let recorded = lock.nodes.get(&n.name);
        let (status, address, matched_by) = if let Some(r) = recorded {
            let at = r
                .address
                .as_deref()
                .and_then(|a| a.parse().ok())
                .unwrap_or(n.ip);
            ("configured", Some(at), Some("lock-file"))
        } else if outcome.already_configured.contains(&n.name) {
            ("configured", Some(n.ip), Some("static-address"))
        } else if outcome.interrupted.contains(&n.name) {
            ("configured", Some(n.ip), Some("interrupted-apply"))
        } else if let Some(ip) = matching.assigned.get(&n.name) {
            let how = if matching.by_count.contains(&n.name) {
                "count"
            } else {
                "mac"
            };
            ("found", Some(*ip), Some(how))
        } else if ambiguous.contains(&n.name) {
            ("ambiguous", None, None)
        } else {
            ("not-found", None, None)
        };
        nodes.push(NodeReport {
            name: n.name.clone(),
            role: n.role.to_string(),
            ip: n.ip,
            mac: n.mac.clone(),
            mac_source: mac_source.get(&n.name).copied(),
            vmid: n.vmid,
            status,
            address,
            matched_by,
            first_matched_by: recorded.and_then(|r| r.matched_by).map(|m| m.to_string()),
        });
    }
    let maintenance_addresses: BTreeMap<String, IpAddr> = nodes
        .iter()
        .filter(|n| n.status == "found")
        .filter_map(|n| n.address.map(|a| (n.name.clone(), a)))
        .collect();
    let missing: Vec<String> = nodes
        .iter()
        .filter(|n| n.status != "found" && n.status != "configured")
        .map(|n| n.name.clone())
        .collect();
    let report = Report {
        version: DISCOVER_JSON_VERSION,
        profile: profile.name.clone(),
        subnet: profile.discovery.subnet.to_string(),
        port: profile.talos.api_port,
        complete: missing.is_empty(),
        nodes,
        maintenance_addresses,
        foreign: matching.foreign.clone(),
        unclaimed: matching.unclaimed.clone(),
        warnings: matching.warnings.clone(),
        error: error.clone(),
    };
    if json {
        let text = serde_json::to_string_pretty(&report)?;
        super::outln!("{text}");
    } else {
        {
            use std::io::Write as _;
            write!(super::DataOut::lock(), "{}", table(&report))?;
        }
    }
    if missing.is_empty() {
        eprintln!(
            "discover: all {} node(s) of {} accounted for; nothing was applied",
            report.nodes.len(),
            report.profile
        );
        Ok(())
    } else {
        Err(CliError {
            code: crate::exit::Exit::Failure,
            message: format!(
                "error: discover: {} of {} node(s) not accounted for: {}{}",
                missing.len(),
                report.nodes.len(),
                missing.join(", "),
                error.map(|e| format!("\n{e}")).unwrap_or_default()
            ),
        })
    }
}

/// The human-readable form: one line per node, then the hosts that are not ours.
fn table(r: &Report) -> String {
    let mut rows = vec![[
        "NODE".to_string(),
        "ROLE".into(),
        "MAC".into(),
        "MAC FROM".into(),
        "ADDRESS".into(),
        "MATCHED BY".into(),
    ]];
    for n in &r.nodes {
        let source = match (n.mac_source, n.vmid) {
            (Some("proxmox"), Some(id)) => format!("proxmox vmid {id}"),
            (Some("lock"), _) => "lock file".to_string(),
            (Some(s), _) => s.to_string(),
            (None, _) => "-".to_string(),
        };
        let address = match (n.status, n.address) {
            ("found", Some(a)) => a.to_string(),
            ("configured", Some(a)) => format!("{a} (configured)"),
            ("ambiguous", _) => "ambiguous".to_string(),
            _ => "not found".to_string(),
        };
        let how = match n.matched_by {
            Some("mac") => "MAC".to_string(),
            Some("count") => "count (runbook 5d)".to_string(),
            Some("static-address") => "static address already configured".to_string(),
            Some("interrupted-apply") => "sent its config by an interrupted run".to_string(),
            Some("lock-file") => match &n.first_matched_by {
                Some(first) => format!("lock file (first matched by {first})"),
                None => "lock file".to_string(),
            },
            _ => "-".to_string(),
        };
        rows.push([
            n.name.clone(),
            n.role.clone(),
            n.mac.clone().unwrap_or_else(|| "-".into()),
            source,
            address,
            how,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for ip in &r.foreign {
        out.push_str(&format!(
            "not ours: {ip} (maintenance mode, its MACs match no node: another cluster)\n"
        ));
    }
    for ip in &r.unclaimed {
        out.push_str(&format!(
            "not matched: {ip} (maintenance mode, no node could be tied to it)\n"
        ));
    }
    out
}
