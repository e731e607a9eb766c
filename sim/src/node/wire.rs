//! The simulator's wire protocol between the simulated talosctl and the simulated nodes: one JSON
//! request line and one JSON response line per TLS connection, mirroring gRPC codes and apid's
//! one-to-many proxying (a reply per target node).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest accepted request or response line (machine configs are sent inline).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// A call: `method` with `params`, forwarded to every entry of `nodes` (empty = the node itself).
/// `Debug` leaves out `params`: they can carry a machine config with private keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub params: Value,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// The answer to a [`Request`]: one reply per target node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub replies: Vec<Reply>,
}

/// One node's answer; `node` is the target string as the client sent it ("" when local).
/// `Debug` leaves out `result`: a kubeconfig reply carries a client key.
#[derive(Clone, Serialize, Deserialize)]
pub struct Reply {
    pub node: String,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<RpcError>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("node", &self.node)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// A gRPC-style status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcError {
    pub code: String,
    pub message: String,
}

impl RpcError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RpcError {
    /// Go's rendering of a gRPC status error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rpc error: code = {} desc = {}", self.code, self.message)
    }
}

/// Reads one newline-terminated JSON value; `Ok(None)` on a clean EOF before any byte.
pub async fn read_json<T, R>(reader: &mut BufReader<R>) -> std::io::Result<Option<T>>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Writes `value` as one JSON line and flushes.
pub async fn write_json<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.flush().await
}

use tokio::io::AsyncReadExt as _;

/// Parses `vX.Y.Z[-suffix]` into a comparable triple.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// True when `v` is at least `major.minor`.
pub fn version_at_least(v: &str, major: u64, minor: u64) -> bool {
    parse_version(v).is_some_and(|(a, b, _)| (a, b) >= (major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_grpc_errors_like_go() {
        let e = RpcError::new("AlreadyExists", "etcd data directory is not empty");
        assert_eq!(
            e.to_string(),
            "rpc error: code = AlreadyExists desc = etcd data directory is not empty"
        );
    }

    #[test]
    fn compares_versions() {
        assert!(version_at_least("v1.13.0", 1, 13));
        assert!(!version_at_least("v1.11.5", 1, 13));
        assert!(version_at_least("v2.0.0-alpha.1", 1, 13));
        assert_eq!(parse_version("junk"), None);
    }
}
