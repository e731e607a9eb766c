//! Tying scanned maintenance-mode hosts to profile nodes: by MAC first, then by count as step 5d
//! of the runbook specifies it: the nodes left without a readable MAC take the remaining
//! maintenance-mode addresses sorted numerically, in profile order, and only when there are
//! exactly as many addresses as nodes (an extra machine on the subnet makes counting a guess).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{DiscoveryError, LinkProbe};

/// A node discovery should find, with its MAC when the profile or Proxmox knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNode {
    pub name: String,
    /// Any case; compared lower-case.
    pub mac: Option<String>,
    /// The link name the node's config addresses when its NIC is not selected by MAC: the
    /// machine it is matched to must have it (checked before anything is applied).
    pub link: Option<String>,
}

/// A host that answered on the API port, and what its links said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundHost {
    pub ip: IpAddr,
    pub probe: LinkProbe,
}

/// The result of matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching {
    /// Node name → maintenance address.
    pub assigned: BTreeMap<String, IpAddr>,
    /// Hosts proven not to be ours (their MACs match no expected node): another cluster's
    /// maintenance nodes. Ignored; not repeated in `warnings`, so callers print this as a note.
    pub foreign: Vec<IpAddr>,
    /// Things the user should know (count-based assignments, ignored hosts).
    pub warnings: Vec<String>,
    /// The nodes of `assigned` that were matched by count (step 5d), not by MAC.
    pub by_count: BTreeSet<String>,
    /// Maintenance-mode hosts neither matched nor proven foreign (set on the partial result of
    /// a failed discovery: the candidates there were too few to count on).
    pub unclaimed: Vec<IpAddr>,
}

impl Matching {
    /// How `node` was matched, if it was.
    pub fn matched_by(&self, node: &str) -> Option<MatchedBy> {
        self.assigned.contains_key(node).then(|| {
            if self.by_count.contains(node) {
                MatchedBy::Count
            } else {
                MatchedBy::Mac
            }
        })
    }
}

/// How a maintenance-mode address was tied to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchedBy {
    /// A MAC from the profile, the lock file or the Proxmox API was on one of its links.
    Mac,
    /// Runbook step 5d: sorted addresses assigned in profile order (no readable MAC).
    Count,
}

impl std::fmt::Display for MatchedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatchedBy::Mac => "mac",
            MatchedBy::Count => "count",
        })
    }
}

/// Matches `found` hosts to `expected` nodes (in profile order), the count fallback allowed.
/// See [`match_nodes_with`].
pub fn match_nodes(
    expected: &[ExpectedNode],
    found: &[FoundHost],
) -> Result<Matching, DiscoveryError> {
    match_nodes_with(expected, found, true)
}

/// Matches `found` hosts to `expected` nodes, which must be in profile order. See the module
/// docs for the rules; `count_fallback: false` (the profile's `discovery.count_fallback`)
/// refuses every count-based assignment. The errors say which nodes and addresses were left and
/// how to make the matching certain.
pub fn match_nodes_with(
    expected: &[ExpectedNode],
    found: &[FoundHost],
    count_fallback: bool,
) -> Result<Matching, DiscoveryError> {
    let mut matching = Matching::default();
    let mac_of: BTreeMap<&str, String> = expected
        .iter()
        .filter_map(|n| {
            n.mac
                .as_ref()
                .map(|m| (n.name.as_str(), m.to_ascii_lowercase()))
        })
        .collect();

    // 1. MAC matching.
    let mut claims: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let mut unmatched_with_macs: Vec<IpAddr> = Vec::new();
    let mut unsupported: Vec<(IpAddr, &str)> = Vec::new();
    for host in found {
        match &host.probe {
            LinkProbe::Links(links) => {
                let macs: BTreeSet<String> =
                    links.iter().map(|l| l.mac.to_ascii_lowercase()).collect();
                let nodes: Vec<&str> = expected
                    .iter()
                    .filter(|n| {
                        mac_of
                            .get(n.name.as_str())
                            .is_some_and(|m| macs.contains(m))
                    })
                    .map(|n| n.name.as_str())
                    .collect();
                match nodes.as_slice() {
                    [] => unmatched_with_macs.push(host.ip),
                    [node] => claims.entry(node).or_default().push(host.ip),
                    several => {
                        return Err(DiscoveryError::HostClaimsSeveralNodes {
                            ip: host.ip,
                            nodes: several.iter().map(|s| s.to_string()).collect(),
                        });
                    }
                }
            }
            LinkProbe::Unsupported { reason } => unsupported.push((host.ip, reason)),
        }
    }
    for (node, hosts) in claims {
        if let [ip] = hosts.as_slice() {
            matching.assigned.insert(node.to_string(), *ip);
        } else {
            return Err(DiscoveryError::NodeClaimedTwice {
                node: node.to_string(),
                mac: mac_of.get(node).cloned().unwrap_or_default(),
                hosts,
            });
        }
    }

    // 2. Count-based fallback for what is left.
    let unmatched: Vec<&ExpectedNode> = expected
        .iter()
        .filter(|n| !matching.assigned.contains_key(&n.name))
        .collect();
    let any_without_mac = unmatched.iter().any(|n| n.mac.is_none());
    // A host whose MACs match nothing is foreign unless some unmatched node has no known MAC.
    let mut candidates: Vec<IpAddr> = unsupported.iter().map(|(ip, _)| *ip).collect();
    if any_without_mac {
        candidates.extend(&unmatched_with_macs);
    } else {
        // Reported through `foreign` only (callers print it as a note), not duplicated in warnings.
        matching.foreign.extend(&unmatched_with_macs);
    }
    candidates.sort();
    matching.foreign.sort();

    if unmatched.is_empty() {
        for (ip, reason) in &unsupported {
            matching.warnings.push(format!(
                "{ip}: links unreadable ({reason}); every node is already matched, so it is ignored"
            ));
        }
        return Ok(matching);
    }
    if candidates.is_empty() {
        return Err(DiscoveryError::NodesNotFound {
            nodes: unmatched.iter().map(|n| n.name.clone()).collect(),
            partial: Box::new(matching),
        });
    }
    // Step 5d: only when the number found equals the number expected exactly.
    if candidates.len() != unmatched.len() {
        return Err(DiscoveryError::Ambiguous {
            nodes: unmatched.iter().map(|n| n.name.clone()).collect(),
            candidates,
            partial: Box::new(matching),
        });
    }
    // A node whose MAC is known cannot be a host whose links were read without that MAC: such
    // a pairing would be a wrong guess, so counting is refused.
    let readable: BTreeSet<IpAddr> = unmatched_with_macs.iter().copied().collect();
    let contradicted = unmatched
        .iter()
        .zip(&candidates)
        .any(|(node, ip)| node.mac.is_some() && readable.contains(ip));
    if contradicted {
        return Err(DiscoveryError::Ambiguous {
            nodes: unmatched.iter().map(|n| n.name.clone()).collect(),
            candidates,
            partial: Box::new(matching),
        });
    }
    if !count_fallback {
        return Err(DiscoveryError::CountFallbackDisabled {
            nodes: unmatched.iter().map(|n| n.name.clone()).collect(),
            candidates,
            partial: Box::new(matching),
        });
    }
    // IpAddr orders numerically (10.0.0.9 < 10.0.0.10), `candidates` is sorted.
    let total = unmatched.len();
    for (node, ip) in unmatched.iter().zip(&candidates) {
        let why = match &node.mac {
            None => "it has no known MAC".to_string(),
            Some(mac) => format!("its MAC {mac} could not be read from the host"),
        };
        let rule = if total == 1 {
            "the only unmatched node and the only candidate address".to_string()
        } else {
            format!(
                "{total} unmatched nodes and exactly {total} candidate addresses, sorted numerically and assigned in profile order"
            )
        };
        matching.warnings.push(format!(
            "{}: assigned {ip} by count ({why}; {rule})",
            node.name
        ));
        matching.assigned.insert(node.name.clone(), *ip);
        matching.by_count.insert(node.name.clone());
    }
    Ok(matching)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, mac: Option<&str>) -> ExpectedNode {
        ExpectedNode {
            name: name.into(),
            mac: mac.map(Into::into),
            link: None,
        }
    }
    fn host(last: u8, macs: &[&str]) -> FoundHost {
        FoundHost {
            ip: IpAddr::from([127, 0, 0, last]),
            probe: LinkProbe::links(
                macs.iter()
                    .enumerate()
                    .map(|(i, m)| (format!("ens{}", 18 + i), *m)),
            ),
        }
    }
    fn dark(last: u8) -> FoundHost {
        FoundHost {
            ip: IpAddr::from([127, 0, 0, last]),
            probe: LinkProbe::Unsupported {
                reason: "rpc error: code = Unimplemented".into(),
            },
        }
    }
    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn macs_match_case_insensitively_and_any_nic_counts() {
        let expected = [
            node("cp1", Some("BC:24:11:00:00:01")),
            node("w1", Some("bc:24:11:00:00:02")),
        ];
        let found = [
            host(9, &["02:00:00:00:00:09", "bc:24:11:00:00:02"]),
            host(4, &["bc:24:11:00:00:01"]),
        ];
        let m = match_nodes(&expected, &found).unwrap();
        assert_eq!(
            m.assigned,
            BTreeMap::from([("cp1".into(), ip(4)), ("w1".into(), ip(9))])
        );
        assert!(m.foreign.is_empty() && m.warnings.is_empty());
    }

    #[test]
    fn hosts_with_unknown_macs_are_foreign_when_all_macs_are_known() {
        let expected = [node("cp1", Some("bc:24:11:00:00:01"))];
        let found = [
            host(3, &["de:ad:00:00:00:01"]),
            host(4, &["bc:24:11:00:00:01"]),
        ];
        let m = match_nodes(&expected, &found).unwrap();
        assert_eq!(m.assigned["cp1"], ip(4));
        assert_eq!(m.foreign, vec![ip(3)]);
        assert!(
            m.warnings.is_empty(),
            "foreign hosts are reported once, in `foreign`: {:?}",
            m.warnings
        );
    }

    #[test]
    fn two_hosts_with_one_nodes_mac_is_an_error() {
        let expected = [node("cp1", Some("bc:24:11:00:00:01"))];
        let found = [
            host(3, &["bc:24:11:00:00:01"]),
            host(4, &["bc:24:11:00:00:01"]),
        ];
        let err = match_nodes(&expected, &found).unwrap_err().to_string();
        assert!(
            err.contains("cp1") && err.contains("127.0.0.3") && err.contains("127.0.0.4"),
            "{err}"
        );
    }

    #[test]
    fn one_host_carrying_two_nodes_macs_is_an_error() {
        let expected = [
            node("a", Some("02:00:00:00:00:01")),
            node("b", Some("02:00:00:00:00:02")),
        ];
        let found = [host(3, &["02:00:00:00:00:01", "02:00:00:00:00:02"])];
        let err = match_nodes(&expected, &found).unwrap_err().to_string();
        assert!(err.contains("127.0.0.3") && err.contains("a, b"), "{err}");
    }

    #[test]
    fn one_node_without_mac_takes_the_single_leftover_host() {
        let expected = [node("cp1", Some("02:00:00:00:00:01")), node("w1", None)];
        let found = [
            host(7, &["02:00:00:00:00:07"]),
            host(5, &["02:00:00:00:00:01"]),
        ];
        let m = match_nodes(&expected, &found).unwrap();
        assert_eq!(m.assigned["w1"], ip(7));
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("w1") && w.contains("by count")),
            "{:?}",
            m.warnings
        );
        assert!(m.foreign.is_empty());
    }

    #[test]
    fn count_fallback_refuses_when_a_foreign_host_makes_it_ambiguous() {
        let expected = [node("cp1", Some("02:00:00:00:00:01")), node("w1", None)];
        let found = [
            host(5, &["02:00:00:00:00:01"]),
            host(7, &["02:00:00:00:00:07"]),
            host(8, &["02:00:00:00:00:08"]),
        ];
        let err = match_nodes(&expected, &found).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("w1") && text.contains("127.0.0.7") && text.contains("127.0.0.8"),
            "{text}"
        );
        assert!(text.contains("mac:") && text.contains("proxmox:"), "{text}");
    }

    fn dark_at(ip: IpAddr) -> FoundHost {
        FoundHost {
            ip,
            probe: LinkProbe::Unsupported {
                reason: "rpc error: code = Unimplemented".into(),
            },
        }
    }

    /// Step 5d: sorted numerically (10.0.0.9 < 10.0.0.10 < 10.0.0.100, which a string sort
    /// gets wrong), assigned in profile order.
    #[test]
    fn nodes_without_macs_take_the_numerically_sorted_addresses_in_profile_order() {
        let expected = [node("cp1", None), node("cp2", None), node("w1", None)];
        let at = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut readable = host(1, &["02:00:00:00:00:02"]);
        readable.ip = at("10.0.0.10");
        let found = [dark_at(at("10.0.0.100")), dark_at(at("10.0.0.9")), readable];
        let m = match_nodes(&expected, &found).unwrap();
        assert_eq!(
            m.assigned,
            BTreeMap::from([
                ("cp1".into(), at("10.0.0.9")),
                ("cp2".into(), at("10.0.0.10")),
                ("w1".into(), at("10.0.0.100")),
            ])
        );
        assert_eq!(m.by_count.len(), 3);
        assert_eq!(m.matched_by("cp2"), Some(MatchedBy::Count));
        assert!(
            m.warnings
                .iter()
                .all(|w| w.contains("by count") && w.contains("profile order")),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn counting_is_refused_with_one_machine_too_many_listing_what_was_found() {
        let expected = [node("a", None), node("b", None)];
        let found = [
            host(1, &["02:00:00:00:00:01"]),
            host(2, &["02:00:00:00:00:02"]),
            dark(3),
        ];
        let err = match_nodes(&expected, &found).unwrap_err();
        assert!(matches!(err, DiscoveryError::Ambiguous { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("a, b") && text.contains("127.0.0.1, 127.0.0.2, 127.0.0.3"),
            "{text}"
        );
        assert!(text.contains("3 maintenance-mode"), "{text}");
    }

    #[test]
    fn the_profile_can_forbid_counting() {
        let expected = [node("a", None), node("b", None)];
        let found = [
            host(1, &["02:00:00:00:00:01"]),
            host(2, &["02:00:00:00:00:02"]),
        ];
        let err = match_nodes_with(&expected, &found, false).unwrap_err();
        assert!(
            matches!(err, DiscoveryError::CountFallbackDisabled { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("discovery.count_fallback: false")
                && text.contains("a, b")
                && text.contains("127.0.0.1, 127.0.0.2"),
            "{text}"
        );
        // Also the single-node case, which counting used to settle on its own.
        let one = [node("cp1", Some("02:00:00:00:00:01")), node("w1", None)];
        let found = [
            host(5, &["02:00:00:00:00:01"]),
            host(7, &["02:00:00:00:00:07"]),
        ];
        assert!(matches!(
            match_nodes_with(&one, &found, false),
            Err(DiscoveryError::CountFallbackDisabled { .. })
        ));
        // MAC matching does not need the fallback.
        let m = match_nodes_with(&one[..1], &found, false).unwrap();
        assert_eq!(m.matched_by("cp1"), Some(MatchedBy::Mac));
    }

    #[test]
    fn a_known_mac_is_never_counted_onto_a_host_whose_links_lack_it() {
        // cp2's MAC is known; 127.0.0.3's links were read and do not have it.
        let expected = [node("cp2", Some("02:00:00:00:00:02")), node("w1", None)];
        let found = [host(3, &["02:00:00:00:00:03"]), dark(4)];
        let err = match_nodes(&expected, &found).unwrap_err();
        assert!(matches!(err, DiscoveryError::Ambiguous { .. }), "{err}");
    }

    #[test]
    fn unreadable_links_fall_back_to_count_even_with_a_known_mac() {
        let expected = [
            node("cp1", Some("02:00:00:00:00:01")),
            node("cp2", Some("02:00:00:00:00:02")),
        ];
        let found = [host(1, &["02:00:00:00:00:01"]), dark(2)];
        let m = match_nodes(&expected, &found).unwrap();
        assert_eq!(m.assigned["cp2"], ip(2));
        assert!(
            m.warnings
                .iter()
                .any(|w| w.contains("cp2") && w.contains("could not be read"))
        );
    }

    #[test]
    fn missing_nodes_are_reported_with_what_was_matched() {
        let expected = [
            node("cp1", Some("02:00:00:00:00:01")),
            node("cp2", Some("02:00:00:00:00:02")),
        ];
        let found = [
            host(1, &["02:00:00:00:00:01"]),
            host(9, &["02:00:00:00:00:09"]),
        ];
        match match_nodes(&expected, &found).unwrap_err() {
            DiscoveryError::NodesNotFound { nodes, partial } => {
                assert_eq!(nodes, vec!["cp2".to_string()]);
                assert_eq!(partial.assigned["cp1"], ip(1));
                assert_eq!(partial.foreign, vec![ip(9)]);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn extra_unreadable_hosts_are_ignored_once_everything_matched() {
        let expected = [node("cp1", Some("02:00:00:00:00:01"))];
        let found = [host(1, &["02:00:00:00:00:01"]), dark(2)];
        let m = match_nodes(&expected, &found).unwrap();
        assert_eq!(m.assigned.len(), 1);
        assert!(m.warnings.iter().any(|w| w.contains("127.0.0.2")));
    }
}
