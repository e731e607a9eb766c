//! Reading a maintenance-mode machine's NICs with `talosctl get links --insecure -o json`, so a
//! scanned address can be tied to a profile node by MAC (step 5c of the runbook, without its
//! `.spec.kind == "ether"` filter, which matches nothing: trap 3).

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::DiscoveryError;
use crate::exec::ExecError;

pub use crate::address::DEFAULT_API_PORT;

/// What `get links` told us about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkProbe {
    /// The physical links (`type == "ether"`, `kind == ""`), in output order.
    Links(Vec<PhysicalLink>),
    /// The node refused the links resource or the API (older maintenance servers); `reason` is
    /// talosctl's error line.
    Unsupported { reason: String },
}

impl LinkProbe {
    /// A probe that read these `(name, mac)` links.
    pub fn links<N: Into<String>, M: Into<String>>(
        links: impl IntoIterator<Item = (N, M)>,
    ) -> Self {
        LinkProbe::Links(
            links
                .into_iter()
                .map(|(name, mac)| PhysicalLink {
                    name: name.into(),
                    mac: mac.into().to_ascii_lowercase(),
                })
                .collect(),
        )
    }
}

/// One physical NIC found in a `get links -o json` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalLink {
    /// Resource id: the interface name (`eth0`).
    pub name: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The `--nodes` value of an `--insecure` call: the node is the endpoint there, so the port is
/// added when it is not 50000 (see [`crate::address`]).
pub fn nodes_arg(ip: IpAddr, port: u16) -> String {
    crate::address::endpoint_arg(ip, port)
}

/// How long one `get links` may take before the host is given up on (a host that accepts TCP but
/// never speaks TLS would otherwise hold discovery forever).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `talosctl get links --insecure --nodes <ip>[:port] -o json` and keeps the physical links.
/// A node that reports the resource or API as unsupported yields [`LinkProbe::Unsupported`];
/// any other failure (unreachable, not in maintenance mode) is an error with talosctl's stderr.
/// Gives up after [`DEFAULT_PROBE_TIMEOUT`].
pub fn probe_links(talosctl: &Path, ip: IpAddr, port: u16) -> Result<LinkProbe, DiscoveryError> {
    probe_links_within(talosctl, ip, port, DEFAULT_PROBE_TIMEOUT)
}

/// [`probe_links`] with an explicit time limit; talosctl is killed when it is exceeded.
pub fn probe_links_within(
    talosctl: &Path,
    ip: IpAddr,
    port: u16,
    limit: Duration,
) -> Result<LinkProbe, DiscoveryError> {
    let nodes = nodes_arg(ip, port);
    let args = [
        "get",
        "links",
        "--insecure",
        "--nodes",
        &nodes,
        "-o",
        "json",
    ];
    let run = run_with_limit(talosctl, &args, limit).map_err(|source| DiscoveryError::Probe {
        ip,
        source: Box::new(source),
    })?;
    let Some((status, stdout, stderr)) = run else {
        return Err(DiscoveryError::ProbeTimeout { ip, limit });
    };
    if status.success() {
        let text = String::from_utf8_lossy(&stdout);
        let links = parse_physical_links(&text)
            .map_err(|reason| DiscoveryError::LinkOutput { ip, reason })?;
        return Ok(LinkProbe::Links(links));
    }
    let stderr = String::from_utf8_lossy(&stderr).trim_end().to_string();
    if unsupported(&stderr) {
        return Ok(LinkProbe::Unsupported {
            reason: first_error_line(&stderr),
        });
    }
    Err(DiscoveryError::Probe {
        ip,
        source: Box::new(ExecError::Failed {
            program: talosctl
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            args: args.join(" "),
            status: status.to_string(),
            stderr,
        }),
    })
}

type Finished = (std::process::ExitStatus, Vec<u8>, Vec<u8>);

/// Runs `program args` with captured output; `Ok(None)` when it was killed after `limit`
/// ([`crate::exec::output_within`]: the process permit, dies with talix, pipes drained). Its
/// permit has [`crate::exec::Priority::High`]: no node can be applied before every machine is
/// named, so a render waiting for a slot must not delay the scan (issue 10, 3+57 benchmark).
fn run_with_limit(
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> Result<Option<Finished>, ExecError> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    let out = crate::exec::output_within_as(&mut cmd, limit, crate::exec::Priority::High).map_err(
        |source| ExecError::Spawn {
            program: program.display().to_string(),
            source,
        },
    )?;
    Ok(out.map(|o| (o.status, o.stdout, o.stderr)))
}

/// Whether talosctl's stderr says the links resource or the API is not available on this node:
/// `Unimplemented` (maintenance server of v1.7–v1.12 for admin APIs), `NotFound … is not
/// registered` (a build without the resource), `PermissionDenied` (v1.13+ read-only maintenance
/// role on a resource it may not read).
pub fn unsupported(stderr: &str) -> bool {
    stderr.contains("code = Unimplemented")
        || stderr.contains("not implemented")
        || (stderr.contains("code = NotFound") && stderr.contains("is not registered"))
        || stderr.contains("code = PermissionDenied")
}

fn first_error_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| l.contains("rpc error") || l.contains("not implemented"))
        .or_else(|| stderr.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or_default()
        .to_string()
}

/// Parses the concatenated JSON objects printed by `get … -o json` (one per resource, no array,
/// no separator) and returns the physical links: `spec.type == "ether"` and `spec.kind == ""`.
pub fn parse_physical_links(text: &str) -> Result<Vec<PhysicalLink>, String> {
    let mut links = Vec::new();
    for (index, item) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let resource = item.map_err(|e| format!("resource #{index} is not JSON: {e}"))?;
        let spec = resource
            .get("spec")
            .ok_or_else(|| format!("resource #{index} has no spec"))?;
        let field = |name: &str| spec.get(name).and_then(Value::as_str);
        if field("type") != Some("ether") || field("kind").unwrap_or_default() != "" {
            continue;
        }
        let Some(mac) = field("hardwareAddr").filter(|m| !m.is_empty()) else {
            continue;
        };
        let name = match resource.pointer("/metadata/id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        links.push(PhysicalLink {
            name,
            mac: mac.to_ascii_lowercase(),
        });
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: &str, typ: &str, kind: &str, mac: &str) -> String {
        // The shape from talosctl-cli.md §11: 4-space indentation, keys sorted.
        format!(
            r#"{{
    "metadata": {{
        "created": "2024-01-01T00:00:00Z",
        "id": "{id}",
        "namespace": "network",
        "owner": "network.LinkStatusController",
        "phase": "running",
        "type": "LinkStatuses.net.talos.dev",
        "updated": "2024-01-01T00:00:00Z",
        "version": 2
    }},
    "node": "",
    "spec": {{
        "broadcastAddr": "ff:ff:ff:ff:ff:ff",
        "driver": "virtio_net",
        "flags": "UP,BROADCAST,RUNNING,MULTICAST,LOWER_UP",
        "hardwareAddr": "{mac}",
        "index": 4,
        "kind": "{kind}",
        "linkState": true,
        "mtu": 1500,
        "operationalState": "up",
        "type": "{typ}"
    }}
}}
"#
        )
    }

    #[test]
    fn keeps_only_physical_links_from_the_stream() {
        let stream = [
            link("lo", "loopback", "", "00:00:00:00:00:00"),
            link("eth0", "ether", "", "4E:95:8E:8F:E4:47"),
            link("br0", "ether", "bridge", "aa:aa:aa:aa:aa:aa"),
            link("bond0", "ether", "bond", "bb:bb:bb:bb:bb:bb"),
            link("eth1", "ether", "", "bc:24:11:00:00:02"),
        ]
        .concat();
        let links = parse_physical_links(&stream).unwrap();
        assert_eq!(
            links,
            vec![
                PhysicalLink {
                    name: "eth0".into(),
                    mac: "4e:95:8e:8f:e4:47".into()
                },
                PhysicalLink {
                    name: "eth1".into(),
                    mac: "bc:24:11:00:00:02".into()
                },
            ]
        );
    }

    #[test]
    fn the_runbook_filter_would_match_nothing() {
        // Trap 3: `.spec.kind == "ether"` is never true for a NIC; ours must still find it.
        let one = link("eth0", "ether", "", "02:54:00:00:01:51");
        let parsed: Value = serde_json::from_str(&one).unwrap();
        assert_ne!(parsed["spec"]["kind"], "ether");
        assert_eq!(parse_physical_links(&one).unwrap().len(), 1);
    }

    #[test]
    fn empty_output_is_no_links_and_garbage_is_an_error() {
        assert_eq!(parse_physical_links("").unwrap(), vec![]);
        assert_eq!(parse_physical_links("\n").unwrap(), vec![]);
        let err = parse_physical_links(&format!(
            "{}[oops",
            link("eth0", "ether", "", "02:00:00:00:00:01")
        ))
        .unwrap_err();
        assert!(err.contains("resource #1"), "{err}");
    }

    #[test]
    fn nodes_argument_appends_port_only_when_not_default() {
        assert_eq!(nodes_arg("127.0.0.5".parse().unwrap(), 50000), "127.0.0.5");
        assert_eq!(
            nodes_arg("127.0.0.5".parse().unwrap(), 50001),
            "127.0.0.5:50001"
        );
        assert_eq!(nodes_arg("::1".parse().unwrap(), 50000), "::1");
        assert_eq!(nodes_arg("::1".parse().unwrap(), 50001), "[::1]:50001");
    }

    #[test]
    fn recognises_unsupported_wording() {
        assert!(unsupported(
            "rpc error: code = NotFound desc = resource \"links\" is not registered\n"
        ));
        assert!(unsupported(
            "1 error occurred:\n\t* : rpc error: code = Unimplemented desc = API is not implemented in maintenance mode\n"
        ));
        assert!(!unsupported(
            "rpc error: code = Unavailable desc = connection refused"
        ));
        assert!(!unsupported(
            "rpc error: code = NotFound desc = machine config not found"
        ));
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_talosctl(dir: &Path, script: &str) -> std::path::PathBuf {
        let path = dir.join("talosctl");
        fs_err::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_hanging_talosctl_is_killed_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let talosctl = fake_talosctl(dir.path(), "exec sleep 30");
        let started = std::time::Instant::now();
        let err = probe_links_within(
            &talosctl,
            "127.0.0.9".parse().unwrap(),
            50000,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(err, DiscoveryError::ProbeTimeout { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.9"), "{err}");
    }

    #[test]
    fn passes_the_exact_arguments_and_keeps_stderr_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let argv = dir.path().join("argv");
        let talosctl = fake_talosctl(
            dir.path(),
            &format!(
                "echo \"$@\" > {}; echo 'rpc error: code = Unavailable desc = boom' >&2; exit 1",
                argv.display()
            ),
        );
        let err = probe_links_within(
            &talosctl,
            "127.0.0.9".parse().unwrap(),
            50001,
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("code = Unavailable desc = boom"), "{err}");
        assert_eq!(
            fs_err::read_to_string(&argv).unwrap().trim(),
            "get links --insecure --nodes 127.0.0.9:50001 -o json"
        );
        let talosctl = fake_talosctl(
            dir.path(),
            "echo 'rpc error: code = Unimplemented desc = API is not implemented in maintenance mode' >&2; exit 1",
        );
        let probe = probe_links_within(
            &talosctl,
            "127.0.0.9".parse().unwrap(),
            50000,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(
            matches!(probe, LinkProbe::Unsupported { ref reason } if reason.contains("Unimplemented")),
            "{probe:?}"
        );
    }
}
