//! The TCP connect scan that finds machines answering on the Talos API port (step 5a of the
//! runbook), with bounded concurrency and the `TALIX_ALLOW_NETS` guard applied before any packet.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{AllowNets, DiscoveryError};

/// Largest IPv4 subnet the scanner accepts (a /16 is 65534 hosts; a /8 is a mistake).
pub const MIN_IPV4_PREFIX: u8 = 16;
/// Largest IPv6 subnet the scanner accepts (the same host count as an IPv4 /16).
pub const MIN_IPV6_PREFIX: u8 = 112;

/// Checks size and the allow list; nothing is sent when this fails.
pub fn check_target(subnet: IpNet, allow: Option<&AllowNets>) -> Result<(), DiscoveryError> {
    let minimum = match subnet {
        IpNet::V4(_) => MIN_IPV4_PREFIX,
        IpNet::V6(_) => MIN_IPV6_PREFIX,
    };
    if subnet.prefix_len() < minimum {
        return Err(DiscoveryError::SubnetTooLarge { subnet, minimum });
    }
    if let Some(allow) = allow {
        allow.check_subnet(subnet)?;
    }
    Ok(())
}

/// Connect-scans every host address of `subnet` on `port` (network and broadcast addresses are
/// skipped for IPv4 prefixes shorter than /31) and returns the addresses that accepted, sorted.
pub async fn scan(
    subnet: IpNet,
    port: u16,
    concurrency: usize,
    connect_timeout: Duration,
    allow: Option<&AllowNets>,
) -> Result<Vec<IpAddr>, DiscoveryError> {
    scan_with(subnet, port, concurrency, allow, move |addr| {
        tcp_accepts(addr, connect_timeout)
    })
    .await
}

/// True when a TCP connection to `addr` is established within `limit` (it is closed at once).
pub async fn tcp_accepts(addr: SocketAddr, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// [`scan`] with the probe passed in, so the scheduling (guard, bound, ordering) can be tested
/// without a network. At most `concurrency` probes are in flight at any time.
pub async fn scan_with<P, F>(
    subnet: IpNet,
    port: u16,
    concurrency: usize,
    allow: Option<&AllowNets>,
    probe: P,
) -> Result<Vec<IpAddr>, DiscoveryError>
where
    P: Fn(SocketAddr) -> F,
    F: Future<Output = bool> + Send + 'static,
{
    check_target(subnet, allow)?;
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut probes = JoinSet::new();
    let mut open = Vec::new();
    for ip in subnet.hosts() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DiscoveryError::ScanAborted)?;
        let attempt = probe(SocketAddr::new(ip, port));
        probes.spawn(async move {
            let open = attempt.await;
            drop(permit);
            (ip, open)
        });
        // Reap finished probes as we go so the set stays small on a /16.
        while let Some(done) = probes.try_join_next() {
            let (ip, is_open) = done.map_err(|_| DiscoveryError::ScanAborted)?;
            if is_open {
                open.push(ip);
            }
        }
    }
    while let Some(done) = probes.join_next().await {
        let (ip, is_open) = done.map_err(|_| DiscoveryError::ScanAborted)?;
        if is_open {
            open.push(ip);
        }
    }
    open.sort();
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_more_probes_in_flight_than_the_bound() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (f, p, s) = (in_flight.clone(), peak.clone(), seen.clone());
        let open = scan_with(
            "127.1.2.0/26".parse().unwrap(),
            50000,
            5,
            None,
            move |addr| {
                let (f, p, s) = (f.clone(), p.clone(), s.clone());
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    s.lock().unwrap().push(addr);
                    // Every seventh host "answers".
                    matches!(addr.ip(), IpAddr::V4(v4) if v4.octets()[3] % 7 == 0)
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(
            peak.load(Ordering::SeqCst),
            5,
            "the bound is reached and never exceeded"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 62, "a /26 has 62 hosts");
        assert!(seen.iter().all(|a| a.port() == 50000));
        let expected: Vec<IpAddr> = (1..63u8)
            .filter(|o| o % 7 == 0)
            .map(|o| IpAddr::from([127, 1, 2, o]))
            .collect();
        assert_eq!(open, expected, "sorted, exactly the answering hosts");
    }

    #[tokio::test]
    async fn refused_targets_send_nothing() {
        let calls = Arc::new(AtomicUsize::new(0));
        let allow = AllowNets::parse("127.0.0.0/8").unwrap();
        let c = calls.clone();
        let err = scan_with(
            "10.0.0.0/24".parse().unwrap(),
            50000,
            4,
            Some(&allow),
            move |_| {
                c.fetch_add(1, Ordering::SeqCst);
                async { true }
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DiscoveryError::NotAllowed { .. }), "{err}");
        let c = calls.clone();
        let err = scan_with("127.0.0.0/8".parse().unwrap(), 50000, 4, None, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async { true }
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("127.0.0.0/8"), "{err}");
        assert!(err.to_string().contains("/16"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no probe was started");
    }

    #[test]
    fn size_limits_per_family() {
        check_target("10.0.0.0/16".parse().unwrap(), None).unwrap();
        assert!(check_target("10.0.0.0/15".parse().unwrap(), None).is_err());
        check_target("fd00::/112".parse().unwrap(), None).unwrap();
        assert!(check_target("fd00::/64".parse().unwrap(), None).is_err());
    }

    #[tokio::test]
    async fn slash_31_and_32_probe_every_address() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        scan_with("127.3.3.4/31".parse().unwrap(), 1, 2, None, move |a| {
            s.lock().unwrap().push(a.ip());
            async { false }
        })
        .await
        .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(
            seen,
            vec![IpAddr::from([127, 3, 3, 4]), IpAddr::from([127, 3, 3, 5])]
        );
    }
}
