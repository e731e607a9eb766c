//! Tying scanned maintenance-mode hosts to profile nodes: by MAC first, and by count only when the
//! answer is unambiguous (one unmatched node, one candidate host), as step 5d of the runbook
//! demands.

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
}

/// Matches `found` hosts to `expected` nodes. See the module docs for the rules; the errors say
/// which nodes and addresses were left and how to make the matching certain.
pub fn match_nodes(
    expected: &[ExpectedNode],
    found: &[FoundHost],
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
    match (unmatched.as_slice(), candidates.as_slice()) {
        ([node], [ip]) => {
            let why = match &node.mac {
                None => "it has no known MAC".to_string(),
                Some(mac) => format!("its MAC {mac} could not be read from the host"),
            };
            matching.warnings.push(format!(
                "{}: assigned {ip} by count ({why}; the only unmatched node and the only candidate address)",
                node.name
            ));
            matching.assigned.insert(node.name.clone(), *ip);
            Ok(matching)
        }
        (_, []) => Err(DiscoveryError::NodesNotFound {
            nodes: unmatched.iter().map(|n| n.name.clone()).collect(),
            partial: Box::new(matching),
        }),
        _ => Err(DiscoveryError::Ambiguous {
            nodes: unmatched.iter().map(|n| n.name.clone()).collect(),
            candidates,
            partial: Box::new(matching),
        }),
    }
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

    #[test]
    fn two_nodes_without_mac_are_never_guessed() {
        let expected = [node("a", None), node("b", None)];
        let found = [
            host(1, &["02:00:00:00:00:01"]),
            host(2, &["02:00:00:00:00:02"]),
        ];
        let err = match_nodes(&expected, &found).unwrap_err();
        assert!(matches!(err, DiscoveryError::Ambiguous { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("a, b") && text.contains("127.0.0.1, 127.0.0.2"),
            "{text}"
        );
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
