//! Go's host:port handling (net.SplitHostPort / net.JoinHostPort) and the address helpers
//! talosctl and apid build on, ported so the simulator turns `-n`/`-e` values into dial targets
//! (and errors) exactly as the real client and apid do, IPv6 included.

use std::net::IpAddr;

/// Go's `net.SplitHostPort`, with its `*net.AddrError` texts
/// (`address X: missing port in address`, `too many colons`, …).
pub fn split_host_port(hostport: &str) -> Result<(String, String), String> {
    let err = |why: &str| format!("address {hostport}: {why}");
    const MISSING_PORT: &str = "missing port in address";
    const TOO_MANY_COLONS: &str = "too many colons in address";
    let Some(i) = hostport.rfind(':') else {
        return Err(err(MISSING_PORT));
    };
    let bytes = hostport.as_bytes();
    let (host, j, k);
    if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else {
            return Err(err("missing ']' in address"));
        };
        if end + 1 == hostport.len() {
            return Err(err(MISSING_PORT));
        } else if end + 1 != i {
            return Err(err(if bytes[end + 1] == b':' {
                TOO_MANY_COLONS
            } else {
                MISSING_PORT
            }));
        }
        host = &hostport[1..end];
        j = 1;
        k = end + 1;
    } else {
        host = &hostport[..i];
        if host.contains(':') {
            return Err(err(TOO_MANY_COLONS));
        }
        j = 0;
        k = 0;
    }
    if hostport[j..].contains('[') {
        return Err(err("unexpected '[' in address"));
    }
    if hostport[k..].contains(']') {
        return Err(err("unexpected ']' in address"));
    }
    Ok((host.to_string(), hostport[i + 1..].to_string()))
}

/// Go's `net.JoinHostPort`: brackets a host containing a colon, whatever it is.
pub fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// talosctl's endpoint normalisation: the default port is appended with JoinHostPort to every
/// endpoint SplitHostPort rejects, so `2001:db8::11` → `[2001:db8::11]:50000` and
/// `[2001:db8::11]` → `[[2001:db8::11]]:50000`.
/// upstream: pkg/machinery/client/resolver/roundrobin.go@v1.13.9 EnsureEndpointsHavePorts
pub fn ensure_port(endpoint: &str, default_port: u16) -> String {
    match split_host_port(endpoint) {
        Ok(_) => endpoint.to_string(),
        Err(_) => join_host_port(endpoint, &default_port.to_string()),
    }
}

/// grpc-go's dns resolver target check for a single endpoint (`dns:///HOST:PORT`); `Err` is the
/// resolver build error (`invalid target address …, error info: …`).
/// upstream: grpc-go internal/resolver/dns/dns_resolver.go@v1.82.1 parseTarget (default port 443)
pub fn dns_parse_target(target: &str) -> Result<(String, String), String> {
    if target.is_empty() {
        return Err("missing address".to_string());
    }
    if target.parse::<IpAddr>().is_ok() {
        return Ok((target.to_string(), "443".to_string()));
    }
    if let Ok((host, port)) = split_host_port(target) {
        if port.is_empty() {
            return Err("missing port after port-separator colon".to_string());
        }
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        return Ok((host, port));
    }
    match split_host_port(&format!("{target}:443")) {
        Ok(hp) => Ok(hp),
        Err(e) => Err(format!("invalid target address {target}, error info: {e}")),
    }
}

/// siderolabs/net `AddressContainsPort`: apid refuses such node targets.
/// upstream: github.com/siderolabs/net net.go@v0.4.0, internal/app/apid/pkg/backend/apid.go@v1.13.9
pub fn address_contains_port(addr: &str) -> bool {
    let Ok((host, _)) = split_host_port(addr) else {
        return false;
    };
    !host.contains(':') || host.parse::<IpAddr>().is_ok()
}

/// siderolabs/net `FormatAddress`: brackets stripped, IPv6 re-bracketed, IPv4 canonical.
pub fn format_address(addr: &str) -> String {
    let trimmed = addr.trim_matches(|c| c == '[' || c == ']');
    match trimmed.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_port_matches_go() {
        assert_eq!(
            split_host_port("[::1]:50000").unwrap(),
            ("::1".to_string(), "50000".to_string())
        );
        assert_eq!(
            split_host_port("2001:db8::11").unwrap_err(),
            "address 2001:db8::11: too many colons in address"
        );
        assert_eq!(
            split_host_port("[2001:db8::11]").unwrap_err(),
            "address [2001:db8::11]: missing port in address"
        );
        assert_eq!(
            split_host_port("[[2001:db8::11]]:50000").unwrap_err(),
            "address [[2001:db8::11]]:50000: missing port in address"
        );
        assert_eq!(
            split_host_port("127.0.0.1").unwrap_err(),
            "address 127.0.0.1: missing port in address"
        );
    }

    #[test]
    fn endpoints_get_ports_like_talosctl() {
        assert_eq!(ensure_port("127.0.0.1", 50000), "127.0.0.1:50000");
        assert_eq!(ensure_port("127.0.0.1:123", 50000), "127.0.0.1:123");
        assert_eq!(ensure_port("2001:db8::11", 50000), "[2001:db8::11]:50000");
        assert_eq!(
            ensure_port("[2001:db8::11]", 50000),
            "[[2001:db8::11]]:50000"
        );
        assert_eq!(ensure_port("[::1]:50001", 50000), "[::1]:50001");
    }

    #[test]
    fn dns_target_errors_like_grpc() {
        assert_eq!(
            dns_parse_target("[[2001:db8::11]]:50000").unwrap_err(),
            "invalid target address [[2001:db8::11]]:50000, error info: address [[2001:db8::11]]:50000:443: missing port in address"
        );
        assert!(dns_parse_target("[::1]:50000").is_ok());
    }

    #[test]
    fn apid_target_rules() {
        assert!(address_contains_port("127.0.0.1:50000"));
        assert!(address_contains_port("[::1]:50000"));
        assert!(!address_contains_port("2001:db8::11"));
        assert!(!address_contains_port("[2001:db8::11]"));
        assert_eq!(format_address("[2001:db8::11]"), "[2001:db8::11]");
        assert_eq!(format_address("2001:db8::11"), "[2001:db8::11]");
        assert_eq!(format_address("127.0.0.1"), "127.0.0.1");
    }
}
