//! Discovery end to end against the in-process Talos simulator: real TCP scan, real
//! `talosctl get links --insecure -o json` (the talix binary as `talosctl`), MAC matching with a
//! foreign cluster's machine on the subnet, the count fallback and its refusal, nodes whose links
//! are unreadable, and rescans for nodes that boot late.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use talix::discovery::{
    AllowNets, DiscoverParams, DiscoveryError, ExpectedNode, FoundHost, LinkProbe, discover,
    match_nodes, probe_links,
};
use talos_sim::node::{ClusterSpec, SimCluster};

fn random_prefix(salt: &str) -> String {
    let seed = format!(
        "{salt}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = blake3::hash(seed.as_bytes());
    let b = h.as_bytes();
    format!("127.{}.{}", 10 + b[0] % 240, b[1])
}

struct Bed {
    _dir: tempfile::TempDir,
    talosctl: PathBuf,
    prefix: String,
}

impl Bed {
    fn new(salt: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let talosctl = dir.path().join("talosctl");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_talix"), &talosctl).unwrap();
        Bed {
            _dir: dir,
            talosctl,
            prefix: random_prefix(salt),
        }
    }

    fn ip(&self, last: u8) -> IpAddr {
        format!("{}.{last}", self.prefix).parse().unwrap()
    }

    /// `(name, mac, last octet, extra YAML lines)` for own and foreign machines.
    fn spec(
        &self,
        own: &[(&str, &str, u8, &str)],
        foreign: &[(&str, &str, u8)],
        port: u16,
    ) -> ClusterSpec {
        let mut yaml = String::from("nodes:\n");
        for (name, mac, last, extra) in own {
            yaml += &format!(
                "  - name: {name}\n    mac: \"{mac}\"\n    address: {}.{last}\n    api_port: {port}\n{extra}",
                self.prefix
            );
        }
        yaml += "foreign_nodes:\n";
        if foreign.is_empty() {
            yaml = yaml.replace("foreign_nodes:\n", "foreign_nodes: []\n");
        }
        for (name, mac, last) in foreign {
            yaml += &format!(
                "  - name: {name}\n    mac: \"{mac}\"\n    address: {}.{last}\n    api_port: {port}\n",
                self.prefix
            );
        }
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn params(&self, port: u16) -> DiscoverParams {
        DiscoverParams {
            talosctl: self.talosctl.clone(),
            subnet: format!("{}.0/24", self.prefix).parse().unwrap(),
            port,
            concurrency: 64,
            connect_timeout: Duration::from_millis(500),
            attempts: 1,
            retry_wait: Duration::from_millis(100),
            probe_timeout: Duration::from_secs(20),
            count_fallback: true,
        }
    }
}

fn expected(list: &[(&str, Option<&str>)]) -> Vec<ExpectedNode> {
    list.iter()
        .map(|(name, mac)| ExpectedNode {
            name: name.to_string(),
            mac: mac.map(str::to_string),
            link: None,
        })
        .collect()
}

fn loopback() -> AllowNets {
    AllowNets::parse("127.0.0.0/8").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_macs_known_on_a_non_default_port() {
    let bed = Bed::new("allknown");
    let port = 50123;
    let sim = SimCluster::start(bed.spec(
        &[
            ("cp1", "BC:24:11:00:00:01", 31, ""),
            ("cp2", "bc:24:11:00:00:02", 32, ""),
            ("w1", "bc:24:11:00:00:03", 140, ""),
        ],
        &[],
        port,
    ))
    .await
    .unwrap();

    // probe_links on its own: the physical NIC only (lo filtered), lower-case.
    let talosctl = bed.talosctl.clone();
    let ip = bed.ip(31);
    let probe = tokio::task::spawn_blocking(move || probe_links(&talosctl, ip, port))
        .await
        .unwrap()
        .unwrap();
    let LinkProbe::Links(links) = &probe else {
        panic!("links unreadable: {probe:?}")
    };
    let macs: Vec<&str> = links.iter().map(|l| l.mac.as_str()).collect();
    assert_eq!(macs, ["bc:24:11:00:00:01"]);
    assert!(!links[0].name.is_empty(), "each link has its name");

    let want = expected(&[
        ("cp1", Some("bc:24:11:00:00:01")),
        ("cp2", Some("BC:24:11:00:00:02")),
        ("w1", Some("bc:24:11:00:00:03")),
    ]);
    let matching = discover(&bed.params(port), &want, Some(&loopback()))
        .await
        .unwrap();
    assert_eq!(
        matching.assigned,
        BTreeMap::from([
            ("cp1".to_string(), bed.ip(31)),
            ("cp2".to_string(), bed.ip(32)),
            ("w1".to_string(), bed.ip(140)),
        ])
    );
    assert!(matching.foreign.is_empty());
    assert!(matching.warnings.is_empty(), "{:?}", matching.warnings);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_maintenance_node_is_ignored() {
    let bed = Bed::new("foreign");
    let sim = SimCluster::start(bed.spec(
        &[
            ("cp1", "bc:24:11:00:00:01", 11, ""),
            ("cp2", "bc:24:11:00:00:02", 12, ""),
        ],
        &[("other-cp1", "bc:24:11:99:00:01", 10)],
        50000,
    ))
    .await
    .unwrap();
    // Something else listening on the API port that is not a maintenance-mode Talos API (e.g. an
    // already configured machine): skipped with a note, never an error.
    let impostor = tokio::net::TcpListener::bind((bed.ip(99), 50000))
        .await
        .unwrap();
    let impostor = tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = impostor.accept().await {
                drop(stream);
            }
        }
    });
    // A host that accepts and then says nothing: its probe is given up after probe_timeout.
    let silent = tokio::net::TcpListener::bind((bed.ip(98), 50000))
        .await
        .unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        }
    });
    let want = expected(&[
        ("cp1", Some("bc:24:11:00:00:01")),
        ("cp2", Some("bc:24:11:00:00:02")),
    ]);
    let mut params = bed.params(50000);
    params.probe_timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let matching = discover(&params, &want, Some(&loopback())).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    impostor.abort();
    silent.abort();
    assert!(
        matching
            .warnings
            .iter()
            .any(|w| w.starts_with(&format!("{}: ", bed.ip(98))) && w.contains("ignored")),
        "{:?}",
        matching.warnings
    );
    assert!(
        matching.warnings.iter().any(|w| w
            .starts_with(&format!("{}: answers on port 50000", bed.ip(99)))
            && w.contains("ignored")),
        "{:?}",
        matching.warnings
    );
    assert_eq!(matching.assigned["cp1"], bed.ip(11));
    assert_eq!(matching.assigned["cp2"], bed.ip(12));
    assert_eq!(matching.foreign, vec![bed.ip(10)]);
    assert!(
        matching
            .warnings
            .iter()
            .all(|w| !w.contains(&format!("{}:", bed.ip(10)))),
        "{:?}",
        matching.warnings
    );
    sim.shutdown().await;
}

/// Single-threaded runtime on purpose: the `discover` step drives discovery from one.
#[tokio::test(flavor = "current_thread")]
async fn one_node_without_mac_is_resolved_by_count() {
    let bed = Bed::new("onemacless");
    let sim = SimCluster::start(bed.spec(
        &[
            ("cp1", "bc:24:11:00:00:01", 21, ""),
            ("w1", "bc:24:11:00:00:09", 22, ""),
        ],
        &[],
        50000,
    ))
    .await
    .unwrap();
    let want = expected(&[("cp1", Some("bc:24:11:00:00:01")), ("w1", None)]);
    let matching = discover(&bed.params(50000), &want, Some(&loopback()))
        .await
        .unwrap();
    assert_eq!(matching.assigned["cp1"], bed.ip(21));
    assert_eq!(matching.assigned["w1"], bed.ip(22));
    assert!(
        matching
            .warnings
            .iter()
            .any(|w| w.contains("w1") && w.contains("by count") && w.contains("no known MAC")),
        "{:?}",
        matching.warnings
    );
    sim.shutdown().await;
}

/// Runbook step 5d: nodes without a MAC take the machines left over, sorted numerically
/// (.42 < .43 < .140, which a string sort gets wrong), in profile order, only when there are
/// exactly as many; one machine too many is refused at once, listing what was found, and
/// `count_fallback: false` refuses counting altogether.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_mac_are_counted_only_when_the_numbers_match() {
    let bed = Bed::new("twomacless");
    let sim = SimCluster::start(bed.spec(
        &[
            ("cp1", "bc:24:11:00:00:01", 41, ""),
            ("w1", "bc:24:11:00:00:02", 43, ""),
            ("w2", "bc:24:11:00:00:03", 140, ""),
        ],
        &[],
        50000,
    ))
    .await
    .unwrap();
    let want = expected(&[
        ("cp1", Some("bc:24:11:00:00:01")),
        ("w1", None),
        ("w2", None),
    ]);
    let matching = discover(&bed.params(50000), &want, Some(&loopback()))
        .await
        .unwrap();
    assert_eq!(matching.assigned["cp1"], bed.ip(41));
    assert_eq!(matching.assigned["w1"], bed.ip(43));
    assert_eq!(matching.assigned["w2"], bed.ip(140));
    assert_eq!(
        matching.by_count.iter().collect::<Vec<_>>(),
        ["w1", "w2"],
        "cp1 was matched by MAC"
    );

    let mut forbidden = bed.params(50000);
    forbidden.count_fallback = false;
    let err = discover(&forbidden, &want, Some(&loopback()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DiscoveryError::CountFallbackDisabled { .. }),
        "{err}"
    );

    // One machine more than nodes: counting would be a guess.
    let extra = SimCluster::start(bed.spec(&[("stray", "bc:24:11:00:00:04", 42, "")], &[], 50000))
        .await
        .unwrap();
    let mut params = bed.params(50000);
    params.attempts = 5;
    params.retry_wait = Duration::from_secs(2);
    let started = Instant::now();
    let err = discover(&params, &want, Some(&loopback()))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an ambiguity that waiting cannot fix is reported at once"
    );
    match &err {
        DiscoveryError::Ambiguous {
            nodes,
            candidates,
            partial,
        } => {
            assert_eq!(nodes, &["w1".to_string(), "w2".to_string()]);
            assert_eq!(candidates, &[bed.ip(42), bed.ip(43), bed.ip(140)]);
            assert_eq!(partial.assigned["cp1"], bed.ip(41));
        }
        other => panic!("expected Ambiguous, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("w1, w2")
            && text.contains(&format!("{}, {}, {}", bed.ip(42), bed.ip(43), bed.ip(140)))
            && text.contains("mac:")
            && text.contains("proxmox:"),
        "{text}"
    );
    extra.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_unreadable_links_is_matched_by_count() {
    let bed = Bed::new("unsupported");
    let unsupported = "    faults:\n      links_unsupported: true\n";
    let sim = SimCluster::start(bed.spec(
        &[
            ("cp1", "bc:24:11:00:00:01", 51, ""),
            ("cp2", "bc:24:11:00:00:02", 52, unsupported),
        ],
        &[],
        50000,
    ))
    .await
    .unwrap();

    let talosctl = bed.talosctl.clone();
    let ip = bed.ip(52);
    let probe = tokio::task::spawn_blocking(move || probe_links(&talosctl, ip, 50000))
        .await
        .unwrap()
        .unwrap();
    match &probe {
        LinkProbe::Unsupported { reason } => {
            assert!(
                reason.contains("NotFound") && reason.contains("not registered"),
                "{reason}"
            )
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }

    let want = expected(&[
        ("cp1", Some("bc:24:11:00:00:01")),
        ("cp2", Some("bc:24:11:00:00:02")),
    ]);
    let matching = discover(&bed.params(50000), &want, Some(&loopback()))
        .await
        .unwrap();
    assert_eq!(matching.assigned["cp1"], bed.ip(51));
    assert_eq!(matching.assigned["cp2"], bed.ip(52));
    assert!(
        matching
            .warnings
            .iter()
            .any(|w| w.contains("cp2") && w.contains("by count")),
        "{:?}",
        matching.warnings
    );

    // With a foreign machine also unreadable, counting would be a guess: refused.
    let found = [
        FoundHost {
            ip: bed.ip(51),
            probe: LinkProbe::links([("ens18", "bc:24:11:00:00:01")]),
        },
        FoundHost {
            ip: bed.ip(52),
            probe: probe.clone(),
        },
        FoundHost {
            ip: bed.ip(60),
            probe,
        },
    ];
    assert!(matches!(
        match_nodes(&want, &found),
        Err(DiscoveryError::Ambiguous { .. })
    ));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescans_until_a_late_node_boots_and_reports_missing_ones() {
    let bed = Bed::new("late");
    let early = SimCluster::start(bed.spec(&[("cp1", "bc:24:11:00:00:01", 61, "")], &[], 50000))
        .await
        .unwrap();
    let late_spec = bed.spec(&[("cp2", "bc:24:11:00:00:02", 62, "")], &[], 50000);
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        SimCluster::start(late_spec).await.unwrap()
    });
    let want = expected(&[
        ("cp1", Some("bc:24:11:00:00:01")),
        ("cp2", Some("bc:24:11:00:00:02")),
    ]);
    let mut params = bed.params(50000);
    params.attempts = 20;
    params.retry_wait = Duration::from_millis(200);
    let matching = discover(&params, &want, Some(&loopback())).await.unwrap();
    assert_eq!(matching.assigned["cp2"], bed.ip(62));
    let late = late.await.unwrap();

    // A node that never shows up: the final error names it after the last attempt.
    let want = expected(&[
        ("cp1", Some("bc:24:11:00:00:01")),
        ("w9", Some("bc:24:11:00:00:99")),
    ]);
    params.attempts = 3;
    params.retry_wait = Duration::from_millis(100);
    let err = discover(&params, &want, Some(&loopback()))
        .await
        .unwrap_err();
    match &err {
        DiscoveryError::Missing {
            nodes, attempts, ..
        } => {
            assert_eq!(nodes, &["w9".to_string()]);
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected Missing, got {other}"),
    }
    assert!(err.to_string().contains("w9"), "{err}");
    assert!(
        err.to_string().contains(&format!("cp1 at {}", bed.ip(61)))
            && err
                .to_string()
                .contains(&format!("other machines: {}", bed.ip(62))),
        "{err}"
    );

    // Nothing to look for: no scan at all (a refused subnet proves nothing was attempted).
    let mut refused = bed.params(50000);
    refused.subnet = "10.0.0.0/24".parse().unwrap();
    assert!(
        discover(&refused, &[], Some(&loopback()))
            .await
            .unwrap()
            .assigned
            .is_empty()
    );
    let err = discover(&refused, &want, Some(&loopback()))
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::NotAllowed { .. }), "{err}");

    early.shutdown().await;
    late.shutdown().await;
}
