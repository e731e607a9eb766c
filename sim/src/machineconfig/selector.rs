//! The link selectors a Talos node evaluates against its NICs: v1alpha1 `deviceSelector` (glob
//! fields) and the CEL expressions of `LinkAliasConfig.selector.match`. The simulator evaluates a
//! strict subset of CEL (the forms upstream documents) and refuses anything else instead of
//! guessing whether it would match.

/// What a selector can see of a link (a `LinkStatus` spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    /// Link name (`ens18`).
    pub name: String,
    /// Current MAC, lowercase `aa:bb:…` (Go's `net.HardwareAddr.String()`).
    pub hardware_addr: String,
    /// Permanent MAC, same spelling.
    pub permanent_addr: String,
    pub driver: String,
    pub bus_path: String,
    pub pci_id: String,
    /// `type == ether && kind == ""` (upstream: pkg/machinery/resources/network/link_status.go@v1.11.6).
    pub physical: bool,
}

/// `ryanuber/go-glob`: `*` matches any run of characters, nothing else is special
/// (used by both the device selector and CEL `glob()`; upstream:
/// internal/app/machined/pkg/controllers/network/device_config.go@v1.11.6,
/// pkg/machinery/cel/celenv/celenv.go@v1.12.11).
pub fn glob(pattern: &str, subject: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == subject;
    }
    let first = parts[0];
    let last = parts[parts.len() - 1];
    if !subject.starts_with(first) {
        return false;
    }
    let mut rest = &subject[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A v1alpha1 `deviceSelector` (upstream: pkg/machinery/config/types/v1alpha1/v1alpha1_types.go
/// `NetworkDeviceSelector`@v1.11.6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSelector {
    pub bus_path: Option<String>,
    pub hardware_addr: Option<String>,
    pub permanent_addr: Option<String>,
    pub pci_id: Option<String>,
    pub driver: Option<String>,
    pub physical: Option<bool>,
}

impl DeviceSelector {
    /// `DeviceConfigController.selectDevices`@v1.11.6: every set glob field must match; with no
    /// glob field set only `physical` decides; with nothing set nothing matches.
    pub fn matches(&self, link: &LinkFacts) -> bool {
        let mut matched: Option<bool> = None;
        for (pattern, value) in [
            (&self.hardware_addr, &link.hardware_addr),
            (&self.permanent_addr, &link.permanent_addr),
            (&self.pci_id, &link.pci_id),
            (&self.driver, &link.driver),
            (&self.bus_path, &link.bus_path),
        ] {
            let Some(pattern) = pattern.as_deref().filter(|p| !p.is_empty()) else {
                continue;
            };
            if !glob(pattern, value) {
                matched = Some(false);
                break;
            }
            matched = Some(true);
        }
        if let Some(physical) = self.physical
            && matched.unwrap_or(true)
        {
            matched = Some(physical == link.physical);
        }
        matched.unwrap_or(false)
    }
}

/// A parsed `LinkAliasConfig` selector: `||` of `&&` of terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelSelector {
    any_of: Vec<Vec<Term>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    PermanentMac,
    HardwareMac,
    Driver,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Equals(Field, String),
    Glob(String, Field),
}

/// Why the simulator refuses a selector.
pub fn unsupported(expression: &str) -> String {
    format!(
        "talos-sim cannot evaluate CEL expression {expression:?} (supported: mac(link.permanent_addr) == \"…\", glob(\"…\", mac(link.permanent_addr)), link.driver == \"…\", joined by && or ||)"
    )
}

impl CelSelector {
    /// Parses the documented forms (upstream examples in
    /// pkg/machinery/config/types/network/link_alias.go@v1.12.11:
    /// `mac(link.permanent_addr) == "00:1a:2b:3c:4d:5e"`, `glob("00:1a:2b:*", mac(link.permanent_addr))`,
    /// `link.driver == "e1000"`), also with `link.hardware_addr`, `glob(…, link.driver)`, and
    /// `&&`/`||` between terms. Anything else is refused.
    pub fn parse(expression: &str) -> Result<CelSelector, String> {
        let mut any_of = Vec::new();
        for alternative in split_outside_quotes(expression, "||") {
            let mut all_of = Vec::new();
            for term in split_outside_quotes(&alternative, "&&") {
                all_of.push(parse_term(term.trim()).ok_or_else(|| unsupported(expression))?);
            }
            any_of.push(all_of);
        }
        Ok(CelSelector { any_of })
    }

    pub fn matches(&self, link: &LinkFacts) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|t| term_matches(t, link)))
    }
}

fn field_value<'a>(field: &Field, link: &'a LinkFacts) -> &'a str {
    match field {
        Field::PermanentMac => &link.permanent_addr,
        Field::HardwareMac => &link.hardware_addr,
        Field::Driver => &link.driver,
    }
}

fn term_matches(term: &Term, link: &LinkFacts) -> bool {
    match term {
        // CEL string equality is exact: `mac()` yields lowercase, so an uppercase literal never
        // matches, as on a real node.
        Term::Equals(field, literal) => field_value(field, link) == literal,
        Term::Glob(pattern, field) => glob(pattern, field_value(field, link)),
    }
}

fn split_outside_quotes(text: &str, operator: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && rest.starts_with(operator) {
            parts.push(std::mem::take(&mut current));
            rest = &rest[operator.len()..];
            continue;
        }
        current.push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts.push(current);
    parts
}

fn string_literal(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then(|| inner.to_string())
}

fn parse_field(text: &str) -> Option<Field> {
    match text.replace(' ', "").as_str() {
        "mac(link.permanent_addr)" => Some(Field::PermanentMac),
        "mac(link.hardware_addr)" => Some(Field::HardwareMac),
        "link.driver" => Some(Field::Driver),
        _ => None,
    }
}

fn parse_term(term: &str) -> Option<Term> {
    if let Some(args) = term
        .strip_prefix("glob(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        let (pattern, subject) = args.split_once(',')?;
        return Some(Term::Glob(
            string_literal(pattern.trim())?,
            parse_field(subject.trim())?,
        ));
    }
    let (left, right) = term.split_once("==")?;
    let (left, right) = (left.trim(), right.trim());
    if let (Some(field), Some(literal)) = (parse_field(left), string_literal(right)) {
        return Some(Term::Equals(field, literal));
    }
    if let (Some(literal), Some(field)) = (string_literal(left), parse_field(right)) {
        return Some(Term::Equals(field, literal));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ens18() -> LinkFacts {
        LinkFacts {
            name: "ens18".into(),
            hardware_addr: "bc:24:11:5e:2a:01".into(),
            permanent_addr: "bc:24:11:5e:2a:01".into(),
            driver: "virtio_net".into(),
            bus_path: "0000:00:12.0".into(),
            pci_id: String::new(),
            physical: true,
        }
    }

    #[test]
    fn glob_is_star_only() {
        assert!(glob("bc:24:11:*", "bc:24:11:5e:2a:01"));
        assert!(glob("*:01", "bc:24:11:5e:2a:01"));
        assert!(glob("bc:*:2a:*", "bc:24:11:5e:2a:01"));
        assert!(!glob("bc:24:11:?e:2a:01", "bc:24:11:5e:2a:01"));
        assert!(!glob("BC:24:11:*", "bc:24:11:5e:2a:01"));
        assert!(glob("*", ""));
    }

    #[test]
    fn device_selector_follows_select_devices() {
        let link = ens18();
        let by_mac = DeviceSelector {
            hardware_addr: Some("bc:24:11:5e:2a:01".into()),
            ..Default::default()
        };
        assert!(by_mac.matches(&link));
        let upper = DeviceSelector {
            hardware_addr: Some("BC:24:11:5E:2A:01".into()),
            ..Default::default()
        };
        assert!(!upper.matches(&link), "globs are case-sensitive");
        let mac_and_driver = DeviceSelector {
            hardware_addr: Some("bc:24:11:*".into()),
            driver: Some("e1000".into()),
            ..Default::default()
        };
        assert!(!mac_and_driver.matches(&link));
        let physical = DeviceSelector {
            physical: Some(true),
            ..Default::default()
        };
        assert!(physical.matches(&link));
        let not_physical = DeviceSelector {
            physical: Some(false),
            ..Default::default()
        };
        assert!(!not_physical.matches(&link));
        let bus = DeviceSelector {
            bus_path: Some("0000:00:12.*".into()),
            physical: Some(true),
            ..Default::default()
        };
        assert!(bus.matches(&link));
        assert!(!DeviceSelector::default().matches(&link));
    }

    #[test]
    fn cel_selector_accepts_documented_forms_only() {
        let link = ens18();
        for (expr, expected) in [
            (r#"mac(link.permanent_addr) == "bc:24:11:5e:2a:01""#, true),
            (r#"mac(link.permanent_addr) == "BC:24:11:5E:2A:01""#, false),
            (r#""bc:24:11:5e:2a:01" == mac(link.hardware_addr)"#, true),
            (r#"glob("bc:24:11:*", mac(link.permanent_addr))"#, true),
            (r#"glob("00:1a:2b:*", mac(link.permanent_addr))"#, false),
            (r#"link.driver == "virtio_net""#, true),
            (
                r#"link.driver == "e1000" || link.driver == "virtio_net""#,
                true,
            ),
            (
                r#"link.driver == "virtio_net" && mac(link.permanent_addr) == "00:00:00:00:00:01""#,
                false,
            ),
        ] {
            let selector = CelSelector::parse(expr).unwrap();
            assert_eq!(selector.matches(&link), expected, "{expr}");
        }
        for expr in [
            r#"link.permanent_addr == "bc:24:11:5e:2a:01""#,
            r#"link.name == "ens18""#,
            r#"(link.driver == "virtio_net")"#,
            "true",
        ] {
            assert_eq!(CelSelector::parse(expr), Err(unsupported(expr)), "{expr}");
        }
    }
}
