//! The scan guard: `TALIX_ALLOW_NETS` confines every discovery probe to the listed networks, so
//! tests and demos can never touch a real LAN by mistake.

use std::net::IpAddr;

use ipnet::IpNet;

use super::DiscoveryError;

/// The environment variable that limits where discovery may send packets.
pub const ALLOW_NETS_VAR: &str = "TALIX_ALLOW_NETS";

/// Networks the scanner may probe (parsed from [`ALLOW_NETS_VAR`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowNets {
    nets: Vec<IpNet>,
}

impl AllowNets {
    /// Parses comma- and/or whitespace-separated CIDRs (`127.0.0.0/8, ::1/128`). An empty list is
    /// an error: a variable that is set but names nothing would silently allow nothing.
    pub fn parse(value: &str) -> Result<Self, DiscoveryError> {
        let mut nets = Vec::new();
        for item in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let net: IpNet = item.parse().map_err(|_| DiscoveryError::BadAllowNets {
                value: value.to_string(),
                reason: format!("{item:?} is not a CIDR like 127.0.0.0/8"),
            })?;
            nets.push(net);
        }
        if nets.is_empty() {
            return Err(DiscoveryError::BadAllowNets {
                value: value.to_string(),
                reason: "it lists no network".to_string(),
            });
        }
        Ok(Self { nets })
    }

    /// Reads [`ALLOW_NETS_VAR`]: `None` only when unset (production: everything allowed). Set but
    /// empty or blank is an error like `" , "`: a CI variable that expands to nothing must not
    /// turn the fence off.
    pub fn from_env() -> Result<Option<Self>, DiscoveryError> {
        Self::from_env_value(std::env::var_os(ALLOW_NETS_VAR))
    }

    /// [`AllowNets::from_env`] on a given variable value (testable without touching the
    /// process environment).
    pub fn from_env_value(
        value: Option<std::ffi::OsString>,
    ) -> Result<Option<Self>, DiscoveryError> {
        let Some(value) = value else { return Ok(None) };
        let Some(text) = value.to_str() else {
            return Err(DiscoveryError::BadAllowNets {
                value: value.to_string_lossy().into_owned(),
                reason: "it is not valid UTF-8".to_string(),
            });
        };
        if text.trim().is_empty() {
            return Err(DiscoveryError::BadAllowNets {
                value: text.to_string(),
                reason: "it is set but empty; unset it to allow every network, or list the \
                         networks discovery may probe"
                    .to_string(),
            });
        }
        Self::parse(text).map(Some)
    }

    /// The allowed networks, as written.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` lies inside one of the allowed networks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Checks every probe target of `subnet`; the error names the subnet, the first refused
    /// address and the variable.
    pub fn check_subnet(&self, subnet: IpNet) -> Result<(), DiscoveryError> {
        if self.nets.iter().any(|n| n.contains(&subnet)) {
            return Ok(());
        }
        match subnet.hosts().find(|ip| !self.allows(*ip)) {
            None => Ok(()),
            Some(refused) => Err(DiscoveryError::NotAllowed {
                subnet,
                refused,
                allowed: self.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for AllowNets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.nets.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commas_and_spaces() {
        let allow = AllowNets::parse("127.0.0.0/8, ::1/128  10.9.0.0/16").unwrap();
        assert_eq!(allow.nets().len(), 3);
        assert!(allow.allows("127.44.3.2".parse().unwrap()));
        assert!(allow.allows("::1".parse().unwrap()));
        assert!(!allow.allows("192.168.1.1".parse().unwrap()));
        assert_eq!(allow.to_string(), "127.0.0.0/8,::1/128,10.9.0.0/16");
    }

    #[test]
    fn bad_cidr_is_an_error_naming_the_item() {
        let err = AllowNets::parse("127.0.0.0/8,bogus")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"bogus\"") && err.contains(ALLOW_NETS_VAR),
            "{err}"
        );
        let err = AllowNets::parse(" , ").unwrap_err().to_string();
        assert!(err.contains("lists no network"), "{err}");
        assert!(AllowNets::from_env_value(Some("127.0.0.0/33".into())).is_err());
    }

    #[test]
    fn only_an_unset_variable_allows_everything() {
        assert_eq!(AllowNets::from_env_value(None).unwrap(), None);
        // Defect 10: empty or blank used to mean "no fence".
        for blank in ["", " ", "\t\n"] {
            let err = AllowNets::from_env_value(Some(blank.into()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("set but empty") && err.contains(ALLOW_NETS_VAR),
                "{err}"
            );
        }
        assert!(
            AllowNets::from_env_value(Some("127.0.0.0/8".into()))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn subnet_check_names_subnet_address_and_variable() {
        let allow = AllowNets::parse("127.0.0.0/8").unwrap();
        allow.check_subnet("127.9.9.0/24".parse().unwrap()).unwrap();
        let err = allow
            .check_subnet("10.0.0.0/24".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.0.0.0/24") && err.contains("10.0.0.1") && err.contains(ALLOW_NETS_VAR),
            "{err}"
        );
        // A subnet covered by two adjacent allowed halves is allowed address by address.
        let halves = AllowNets::parse("127.5.5.0/25,127.5.5.128/25").unwrap();
        halves
            .check_subnet("127.5.5.0/24".parse().unwrap())
            .unwrap();
        let partial = AllowNets::parse("127.5.5.0/25").unwrap();
        let err = partial
            .check_subnet("127.5.5.0/24".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.5.5.128"), "{err}");
    }
}
