//! Node and endpoint addresses as talosctl parses them, in one place.
//!
//! Upstream (`pkg/machinery/client/resolver/roundrobin.go@v1.14.0-rc.1`,
//! `EnsureEndpointsHavePorts`): an endpoint without a port gets `:50000` with
//! `net.JoinHostPort`, so a bare IPv6 address becomes `[2001:db8::11]:50000`, while a
//! bracketed one becomes `[[2001:db8::11]]:50000`. `-n` names a node *behind* the endpoint
//! (`client.WithNode`: a gRPC metadata value, not dialled); apid forwards to port 50000 of that
//! node, so `-n` is always the bare address. In maintenance mode (`--insecure`) the node is the
//! endpoint (`client.WithMaintenanceMode` sets `endpointsOverride = [node]`), so there `-n`
//! takes the endpoint form.

use std::net::{IpAddr, SocketAddr};

/// The Talos API port talosctl appends when an endpoint has none.
pub const DEFAULT_API_PORT: u16 = 50000;

/// `-e` (and `-n` with `--insecure`): the bare address on port 50000, else `ip:port` /
/// `[v6]:port`.
pub fn endpoint_arg(ip: IpAddr, port: u16) -> String {
    if port == DEFAULT_API_PORT {
        ip.to_string()
    } else {
        SocketAddr::new(ip, port).to_string()
    }
}

/// `-n` behind an endpoint: always the bare address, whatever the API port.
pub fn node_arg(ip: IpAddr) -> String {
    ip.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_bare_on_the_default_port_and_joined_otherwise() {
        let v4: IpAddr = "127.0.0.11".parse().unwrap();
        let v6: IpAddr = "2001:db8::11".parse().unwrap();
        assert_eq!(endpoint_arg(v4, 50000), "127.0.0.11");
        assert_eq!(endpoint_arg(v6, 50000), "2001:db8::11");
        assert_eq!(endpoint_arg(v4, 50001), "127.0.0.11:50001");
        assert_eq!(endpoint_arg(v6, 50001), "[2001:db8::11]:50001");
    }

    #[test]
    fn nodes_are_always_bare() {
        let v6: IpAddr = "2001:db8::11".parse().unwrap();
        assert_eq!(node_arg(v6), "2001:db8::11");
        assert!(!node_arg(v6).contains('['));
    }
}
