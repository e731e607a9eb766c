//! The discovery scanner against real loopback listeners: it finds exactly the listening
//! addresses of a random 127.x.y.0/24, and refuses targets outside TALIX_ALLOW_NETS or larger
//! than a /16 before sending anything.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use talix::discovery::{AllowNets, DiscoveryError, scan};
use tokio::net::TcpListener;

/// A random `127.a.b` prefix (a ≥ 10) so parallel tests never share addresses.
fn random_prefix(salt: &str) -> [u8; 3] {
    let seed = format!(
        "{salt}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = blake3::hash(seed.as_bytes());
    let b = h.as_bytes();
    [127, 10 + b[0] % 240, b[1]]
}

fn addr(prefix: [u8; 3], last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(prefix[0], prefix[1], prefix[2], last))
}

/// Binds listeners on `lasts` of the prefix, all on one port (picked by the first bind).
async fn listeners(prefix: [u8; 3], lasts: &[u8]) -> (Vec<TcpListener>, u16) {
    let first = TcpListener::bind(SocketAddr::new(addr(prefix, lasts[0]), 0))
        .await
        .unwrap();
    let port = first.local_addr().unwrap().port();
    let mut all = vec![first];
    for &last in &lasts[1..] {
        all.push(
            TcpListener::bind(SocketAddr::new(addr(prefix, last), port))
                .await
                .unwrap(),
        );
    }
    (all, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_exactly_the_listening_addresses_of_a_loopback_24() {
    let prefix = random_prefix("finds");
    let lasts = [200u8, 3, 77, 254];
    let (_held, port) = listeners(prefix, &lasts).await;
    let subnet = format!("{}.{}.{}.0/24", prefix[0], prefix[1], prefix[2])
        .parse()
        .unwrap();
    let allow = AllowNets::parse("127.0.0.0/8").unwrap();
    let started = Instant::now();
    let found = scan(subnet, port, 32, Duration::from_millis(500), Some(&allow))
        .await
        .unwrap();
    let mut expected: Vec<IpAddr> = lasts.iter().map(|&l| addr(prefix, l)).collect();
    expected.sort();
    assert_eq!(found, expected, "sorted, exactly the listeners");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "254 loopback probes took {:?}",
        started.elapsed()
    );

    // A different port on the same subnet finds nothing.
    let other = if port == 65535 { port - 1 } else { port + 1 };
    let none = scan(subnet, other, 8, Duration::from_millis(500), None)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_of_one_still_scans_everything() {
    let prefix = random_prefix("serial");
    let (_held, port) = listeners(prefix, &[9, 17]).await;
    let subnet = format!("{}.{}.{}.0/27", prefix[0], prefix[1], prefix[2])
        .parse()
        .unwrap();
    let found = scan(subnet, port, 1, Duration::from_millis(500), None)
        .await
        .unwrap();
    assert_eq!(found, vec![addr(prefix, 9), addr(prefix, 17)]);
}

#[tokio::test]
async fn refuses_targets_outside_talix_allow_nets() {
    // Only the refusal path: 10.0.0.0/24 must never actually be probed.
    let allow = AllowNets::parse("127.0.0.0/8").unwrap();
    let started = Instant::now();
    let err = scan(
        "10.0.0.0/24".parse().unwrap(),
        50000,
        64,
        Duration::from_secs(5),
        Some(&allow),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DiscoveryError::NotAllowed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("10.0.0.0/24")
            && text.contains("TALIX_ALLOW_NETS")
            && text.contains("127.0.0.0/8")
            && text.contains("nothing was sent"),
        "{text}"
    );
    // Refused before any connect: no 5 s connect timeout was waited for.
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn refuses_subnets_larger_than_a_16() {
    let err = scan(
        "127.0.0.0/8".parse().unwrap(),
        50000,
        64,
        Duration::from_millis(100),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, DiscoveryError::SubnetTooLarge { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.0/8") && text.contains("/16"),
        "{text}"
    );
}

/// A listener whose accept queue is full (backlog 0 plus one held connection): the kernel drops
/// further SYNs, so a connect to it hangs until the scanner's timeout, like a firewalled host.
async fn stuck_listener(ip: IpAddr, port: u16) -> (tokio::net::TcpListener, tokio::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, port)).unwrap();
    let listener = socket.listen(0).unwrap();
    let filler = tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
        .await
        .unwrap();
    (listener, filler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_hosts_cost_one_timeout_each_within_the_concurrency_bound() {
    let prefix = random_prefix("hanging");
    let (_open, port) = listeners(prefix, &[20]).await;
    let mut stuck = Vec::new();
    for last in [10u8, 11, 12, 13] {
        stuck.push(stuck_listener(addr(prefix, last), port).await);
    }
    let subnet = format!("{}.{}.{}.0/27", prefix[0], prefix[1], prefix[2])
        .parse()
        .unwrap();
    let timeout = Duration::from_millis(300);

    // One probe at a time: the four hanging hosts are waited for one after the other.
    let started = Instant::now();
    let found = scan(subnet, port, 1, timeout, None).await.unwrap();
    let serial = started.elapsed();
    assert_eq!(
        found,
        vec![addr(prefix, 20)],
        "hanging hosts are not reported"
    );
    assert!(
        serial >= timeout * 4,
        "concurrency 1 overlapped probes: {serial:?}"
    );

    // Eight at a time: the hanging hosts are waited for together.
    let started = Instant::now();
    let found = scan(subnet, port, 8, timeout, None).await.unwrap();
    let parallel = started.elapsed();
    assert_eq!(found, vec![addr(prefix, 20)]);
    assert!(parallel >= timeout, "{parallel:?}");
    assert!(
        parallel < timeout * 4,
        "concurrency 8 did not overlap probes: {parallel:?}"
    );
}
