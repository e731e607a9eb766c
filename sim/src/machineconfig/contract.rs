//! The Talos version contract (`--talos-version`): which generator features and output shape a
//! config or secrets bundle is produced for.

use std::fmt;

/// A version contract: a named `major.minor`, or `Current` (newer than every named contract,
/// what talosctl uses when `--talos-version` is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    Version { major: u32, minor: u32 },
    Current,
}

/// `--talos-version` values that do not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid talos-version: error parsing version \"{0}\"")]
pub struct ContractError(pub String);

impl Contract {
    /// Parses `vX.Y`, `X.Y` or `vX.Y.Z…`; the empty string is `Current`.
    pub fn parse(text: &str) -> Result<Contract, ContractError> {
        if text.is_empty() {
            return Ok(Contract::Current);
        }
        let (major, minor) = parse_major_minor(text).ok_or(ContractError(text.to_string()))?;
        Ok(Contract::Version { major, minor })
    }

    /// Whether this contract is strictly newer than `major.minor` (Talos' `Greater`).
    pub fn greater_than(self, major: u32, minor: u32) -> bool {
        match self {
            Contract::Current => true,
            Contract::Version { major: a, minor: b } => (a, b) > (major, minor),
        }
    }

    /// The contract a talosctl of version `client_version` (e.g. `v1.11.5`) generates by default:
    /// its own major.minor.
    pub fn of_client(client_version: &str) -> Contract {
        match parse_major_minor(client_version) {
            Some((major, minor)) => Contract::Version { major, minor },
            None => Contract::Current,
        }
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contract::Version { major, minor } => write!(f, "v{major}.{minor}"),
            Contract::Current => write!(f, "current"),
        }
    }
}

/// Extracts `(major, minor)` from `v1.12.3`, `1.12`, `v1.14.0-rc.1`.
pub fn parse_major_minor(text: &str) -> Option<(u32, u32)> {
    let body = text.strip_prefix('v').unwrap_or(text);
    let core = body.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    if let Some(patch) = parts.next() {
        patch.parse::<u32>().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_talos_version_forms() {
        assert_eq!(
            Contract::parse("v1.11").unwrap(),
            Contract::Version {
                major: 1,
                minor: 11
            }
        );
        assert_eq!(
            Contract::parse("1.12.3").unwrap(),
            Contract::Version {
                major: 1,
                minor: 12
            }
        );
        assert_eq!(Contract::parse("").unwrap(), Contract::Current);
        assert_eq!(
            Contract::parse("foo").unwrap_err().to_string(),
            "invalid talos-version: error parsing version \"foo\""
        );
        assert!(Contract::parse("v1.14.0-rc.1").unwrap().greater_than(1, 13));
        assert!(!Contract::parse("v1.11").unwrap().greater_than(1, 11));
    }
}
