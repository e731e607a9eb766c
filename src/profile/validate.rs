//! Profile loading and validation: every check a careful operator would make before touching a
//! cluster, all errors collected (not just the first), each naming file, field path and line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::locate::LineIndex;
use super::model::*;
use super::raw::*;
use crate::workspace::{PathPolicy, Workspace, WrittenPaths};

/// One problem found in a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: Option<u64>,
    /// Field path such as `nodes.worker.assignments[1].ip` (empty for the whole document).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// A profile that cannot be used; `errors` is never empty.
#[derive(Debug, thiserror::Error)]
pub struct ProfileError {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

/// A loaded profile and the warnings validation produced.
#[derive(Debug)]
pub struct Loaded {
    pub profile: Profile,
    pub warnings: Vec<Finding>,
}

struct Checker<'a> {
    file: &'a Path,
    lines: LineIndex,
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Checker<'_> {
    fn finding(&self, field: &str, message: String) -> Finding {
        Finding {
            file: self.file.to_path_buf(),
            line: self.lines.line_of(field),
            field: field.to_string(),
            message,
        }
    }
    fn error(&mut self, field: &str, message: impl Into<String>) {
        let f = self.finding(field, message.into());
        self.errors.push(f);
    }
    fn warn(&mut self, field: &str, message: impl Into<String>) {
        let f = self.finding(field, message.into());
        self.warnings.push(f);
    }
    fn ip(&mut self, field: &str, text: &str) -> Option<IpAddr> {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.error(field, format!("{text:?} is not an IP address"));
                None
            }
        }
    }
    fn net(&mut self, field: &str, text: &str) -> Option<IpNet> {
        match text.trim().parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    field,
                    format!("{text:?} has host bits set; the network is {}", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(
                    field,
                    format!("{text:?} is not a CIDR (expected ADDRESS/PREFIX, e.g. 10.0.0.0/24)"),
                );
                None
            }
        }
    }
    fn parse<T: std::str::FromStr<Err = String>>(&mut self, field: &str, text: &str) -> Option<T> {
        match text.parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(field, e);
                None
            }
        }
    }
}

/// Read, parse and validate the profile at `path`, its paths confined to the workspace.
pub fn load(path: &Path) -> Result<Loaded, ProfileError> {
    load_with(path, PathPolicy::default())
}

/// [`load`] with the command line's path policy (`--allow-outside-workspace`).
pub fn load_with(path: &Path, policy: PathPolicy) -> Result<Loaded, ProfileError> {
    let file_error = |message: String| ProfileError {
        errors: vec![Finding {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            message,
        }],
        warnings: vec![],
    };
    let text = read_profile_text(path).map_err(|(line, field, message)| ProfileError {
        errors: vec![Finding {
            file: path.to_path_buf(),
            line,
            field,
            message,
        }],
        warnings: vec![],
    })?;
    let absolute =
        std::path::absolute(path).map_err(|e| file_error(format!("cannot resolve path: {e}")))?;
    let raw: RawProfile = serde_saphyr::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let message = first_line(&e.to_string());
        // The parser knows the line, not the field: the deepest key written on that line is it.
        let mut field = line
            .and_then(|l| LineIndex::build(&text).deepest_at(l))
            .unwrap_or_default();
        // Unknown and duplicate keys: name the key itself. The index records a key whose value
        // starts on the next line at that line, and a flow mapping's keys all share one line,
        // so the deepest key on the line is not always the offending one.
        let key_error = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            .or_else(|| {
                message
                    .strip_prefix("duplicate mapping key: ")
                    .and_then(|m| m.split(',').next())
            })
            .map(str::to_string);
        if let (Some(key), Some(l)) = (&key_error, line) {
            let parent = match field.rfind(['.', '[']) {
                Some(i) if field.rsplit(['.', '[']).next() != Some(key.as_str()) => {
                    Some(field[..i].to_string())
                }
                Some(_) => None,
                None if field.is_empty() => block_parent(&text, l),
                None => Some(String::new()),
            };
            if let Some(parent) = parent {
                field = if parent.is_empty() {
                    key.clone()
                } else {
                    format!("{parent}.{key}")
                };
            }
        }
        if field.is_empty()
            && let Some(l) = line
            && let Some(own) = text
                .lines()
                .nth(usize::try_from(l).unwrap_or(usize::MAX).saturating_sub(1))
                .and_then(|t| t.trim().trim_start_matches("- ").split_once(':'))
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.contains(' '))
        {
            // A syntax error: the index could not be built; name the key on that line.
            field = match block_parent(&text, l) {
                Some(p) if !p.is_empty() => format!("{p}.{own}"),
                _ => own,
            };
        }
        let message = our_wording(&message, key_error.as_deref(), &text, line);
        // "missing field `x`" points into the mapping that lacks it: name the missing field.
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            let own_key = line
                .and_then(|l| text.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?))
                .and_then(|l| l.trim().trim_start_matches("- ").split(':').next())
                .map(str::trim)
                .unwrap_or_default();
            let parent = match field.rfind(['.', '[']) {
                // The deepest path on the line is the mapping that lacks the field (its value
                // starts there), not a sibling key written on that line.
                _ if !field.is_empty() && !field.split(['.', '[']).any(|seg| seg == own_key) => {
                    field.clone()
                }
                Some(i) => field[..i].to_string(),
                None if field.is_empty() => line
                    .and_then(|l| block_parent(&text, l))
                    .unwrap_or_default(),
                None => String::new(),
            };
            field = if parent.is_empty() {
                missing.to_string()
            } else {
                format!("{parent}.{missing}")
            };
        }
        ProfileError {
            errors: vec![Finding {
                file: path.to_path_buf(),
                line,
                field,
                message,
            }],
            warnings: vec![],
        }
    })?;
    let mut checker = Checker {
        file: path,
        lines: LineIndex::build(&text),
        errors: vec![],
        warnings: vec![],
    };
    let profile = resolve(&mut checker, raw, &absolute, policy);
    checker
        .errors
        .sort_by(|a, b| (a.line, &a.field).cmp(&(b.line, &b.field)));
    match profile {
        Some(profile) if checker.errors.is_empty() => Ok(Loaded {
            profile,
            warnings: checker.warnings,
        }),
        _ => Err(ProfileError {
            errors: checker.errors,
            warnings: checker.warnings,
        }),
    }
}

/// Largest profile read (a real one is a few KiB; this leaves room for long comments).
pub const MAX_PROFILE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest patch file accepted.
pub const MAX_PATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Upper bounds of the discovery knobs: beyond these a value is a typo, not a wish, and would
/// stall `up` (a wait of 2^64 seconds).
pub const MAX_RETRY_WAIT_S: u64 = 3600;
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
pub const MAX_ATTEMPTS: u32 = 100;
/// The values of the optional keys that are left out (the schema's `default`s are these).
pub const DEFAULT_API_PORT: u16 = 50000;
pub const DEFAULT_NAMESERVERS: [&str; 2] = ["1.1.1.1", "8.8.8.8"];
pub const DEFAULT_CONCURRENCY: u32 = 256;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_ATTEMPTS: u32 = 5;
pub const DEFAULT_RETRY_WAIT_S: u64 = 30;
/// Bounds of `discovery.concurrency` (probes in flight).
pub const MIN_CONCURRENCY: u32 = 1;
pub const MAX_CONCURRENCY: u32 = 4096;
/// At most this many system extensions (Image Factory schematics carry a handful).
pub const MAX_EXTENSIONS: usize = 256;

/// Open `path` without blocking (a FIFO is refused, not waited on), refuse anything but a
/// regular file, and read at most `limit` bytes. `what` names the file in messages.
pub fn read_regular_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{what} does not exist"),
            _ => format!("cannot read {what}: {e}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let is = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!("{what} is {is}, not a regular file"));
    }
    if meta.len() > limit {
        return Err(format!(
            "{what} is {} bytes, larger than the {limit}-byte limit",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{what} is larger than the {limit}-byte limit"));
    }
    Ok(bytes)
}

/// The profile text: a regular UTF-8 file of at most [`MAX_PROFILE_BYTES`].
fn read_profile_text(path: &Path) -> Result<String, (Option<u64>, String, String)> {
    let bytes = read_regular_bounded(path, MAX_PROFILE_BYTES, "the file").map_err(|m| {
        // Too large: name the line and field where the limit is crossed (a 50 MB list).
        let (line, field) = oversized_at(path).unwrap_or_default();
        (line, field, format!("cannot read profile: {m}"))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() as u64;
        (
            Some(line),
            String::new(),
            format!("the profile is not UTF-8 text (invalid byte at offset {at})"),
        )
    })
}

/// For a profile over [`MAX_PROFILE_BYTES`]: the line holding byte `MAX_PROFILE_BYTES` and the
/// key written on it (with its block-style parents), read from the first bytes only.
fn oversized_at(path: &Path) -> Option<(Option<u64>, String)> {
    use std::io::Read;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() <= MAX_PROFILE_BYTES {
        return None;
    }
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_PROFILE_BYTES)
        .read_to_end(&mut head)
        .ok()?;
    let text = String::from_utf8_lossy(&head);
    let line = text.matches('\n').count() as u64 + 1;
    let line_text = text.lines().last()?;
    let key = line_text
        .trim()
        .trim_start_matches("- ")
        .split(':')
        .next()?
        .trim()
        .to_string();
    let parent = block_parent(&text, line).unwrap_or_default();
    let field = if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    };
    Some((Some(line), field))
}

/// The dotted path of the block-style mapping holding the key on `line` (1-based), from
/// indentation alone; `None` when a sequence is in the way (the index knows those better).
fn block_parent(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut want = indent(lines.get(at)?);
    let mut parents = Vec::new();
    for l in lines[..at].iter().rev() {
        let body = l.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if indent(l) < want {
            if body.starts_with('-') {
                return None;
            }
            parents.push(body.split(':').next()?.trim().to_string());
            want = indent(l);
            if want == 0 {
                break;
            }
        }
    }
    parents.reverse();
    Some(parents.join("."))
}

/// The YAML library's messages for duplicate keys and out-of-range numbers, in our words.
fn our_wording(message: &str, key: Option<&str>, text: &str, line: Option<u64>) -> String {
    if message.starts_with("multiple YAML documents detected") {
        return "a profile is a single YAML document; a second one starts here (`---`)".into();
    }
    if message.starts_with("unexpected end of input") && text.trim().is_empty() {
        return "the profile is empty".into();
    }
    if message.starts_with("duplicate mapping key") {
        return format!(
            "`{}` is written twice in the same mapping; keep one",
            key.unwrap_or("key")
        );
    }
    let range = match message {
        "invalid u8" => Some("0 to 255"),
        "invalid u16" => Some("0 to 65535"),
        "invalid u32" => Some("0 to 4294967295"),
        "invalid u64" => Some("0 to 18446744073709551615"),
        _ => None,
    };
    if let Some(range) = range {
        let value = line
            .and_then(|l| text.lines().nth(usize::try_from(l).ok()?.checked_sub(1)?))
            .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default();
        return format!("{value:?} is not a whole number from {range}");
    }
    message.to_string()
}

fn first_line(message: &str) -> String {
    // serde-saphyr renders a snippet after the message; keep the message itself.
    let msg = message.lines().next().unwrap_or(message).trim();
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    // The line is already in the prefix we print; drop the parser's own "line N column M: ".
    match msg
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, rest)) if position.contains("column") => rest.to_string(),
        _ => msg.to_string(),
    }
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `network.api_endpoint`: a host name or IP address, no scheme, no port, no blanks.
pub(crate) fn is_endpoint_host(endpoint: &str) -> bool {
    // A bare IPv6 address has colons; anything else with a colon carries a port.
    let has_port = endpoint.contains(':') && endpoint.parse::<IpAddr>().is_err();
    !(endpoint.is_empty()
        || endpoint.contains('/')
        || has_port
        || endpoint.contains(char::is_whitespace))
}

pub(crate) fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

fn resolve(
    c: &mut Checker,
    raw: RawProfile,
    absolute: &Path,
    policy: PathPolicy,
) -> Option<Profile> {
    let (ws, problems) = Workspace::resolve(
        absolute,
        &raw.name,
        WrittenPaths {
            config_dir: raw.talos.config_dir.as_deref(),
            secrets_file: raw.talos.secrets_file.as_deref(),
            patches_dir: raw.talos.patches_dir.as_deref(),
        },
        policy,
    );
    for p in problems {
        c.error(&p.field, p.message);
    }

    if !is_dns_label(&raw.name) {
        c.error("name", format!("{:?} must be a DNS label: lower-case letters, digits and '-', at most 63 characters", raw.name));
    }

    // --- network
    let n = &raw.network;
    let subnet = c.net("network.subnet", &n.subnet);
    let pod = c.net("network.pod_cidr", &n.pod_cidr);
    let service = c.net("network.service_cidr", &n.service_cidr);
    if let (Some(p), Some(s)) = (pod, service)
        && (p.contains(&s.network()) || s.contains(&p.network()))
    {
        c.error(
            "network.service_cidr",
            format!("{s} overlaps network.pod_cidr {p}"),
        );
    }
    for (field, net) in [("network.pod_cidr", pod), ("network.service_cidr", service)] {
        if let (Some(net), Some(sub)) = (net, subnet)
            && (net.contains(&sub.network()) || sub.contains(&net.network()))
        {
            c.error(
                field,
                format!("{net} overlaps the node subnet network.subnet {sub}"),
            );
        }
    }
    let in_subnet = |ip: IpAddr| subnet.is_none_or(|s| s.contains(&ip));
    let host_address = |ip: IpAddr| {
        subnet.is_none_or(|s| {
            s.prefix_len() >= s.max_prefix_len() - 1 || (ip != s.network() && ip != s.broadcast())
        })
    };
    let gateway = match &n.gateway {
        Some(g) => c.ip("network.gateway", g),
        None => subnet.and_then(|s| s.hosts().next()),
    };
    if let Some(g) = gateway
        && n.gateway.is_some()
    {
        if !in_subnet(g) {
            c.error(
                "network.gateway",
                format!("{g} is outside network.subnet {}", subnet.unwrap()),
            );
        } else if !host_address(g) {
            c.error(
                "network.gateway",
                format!("{g} is the network or broadcast address of the subnet"),
            );
        }
    }
    let nameservers: Vec<IpAddr> = match &n.nameservers {
        Some(list) => {
            if list.is_empty() {
                c.error("network.nameservers", "must list at least one nameserver (omit the key for the default 1.1.1.1, 8.8.8.8)");
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| c.ip(&format!("network.nameservers[{i}]"), s))
                .collect()
        }
        None => DEFAULT_NAMESERVERS
            .iter()
            .map(|n| n.parse().expect("a default nameserver is an IP address"))
            .collect(),
    };
    if !is_endpoint_host(n.api_endpoint.trim()) {
        c.error(
            "network.api_endpoint",
            format!(
                "{:?} must be a host name or IP address (no scheme, no port)",
                n.api_endpoint
            ),
        );
    }

    // --- talos
    let t = &raw.talos;
    let version = c.parse::<Version>("talos.version", &t.version);
    let kubernetes_version = c.parse::<Version>("talos.kubernetes_version", &t.kubernetes_version);
    let contract = t
        .contract
        .as_deref()
        .and_then(|s| c.parse::<Contract>("talos.contract", s));
    if let (Some(ct), Some(v)) = (contract, version)
        && ct > v.contract()
    {
        c.error(
            "talos.contract",
            format!(
                "{ct} is newer than talos.version {}; a contract can only be older or equal",
                v.with_v()
            ),
        );
    }
    let schematic = t.factory.schematic_id.trim();
    if schematic.len() != 64
        || !schematic
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        c.error("talos.factory.schematic_id", format!("must be 64 lower-case hex characters (an Image Factory schematic id); got {} characters", schematic.len()));
    }
    let vip = t.vip.as_ref().and_then(|v| {
        if v.interface.trim().is_empty() || v.interface.contains(char::is_whitespace) {
            c.error(
                "talos.vip.interface",
                "must name the interface the VIP is announced on (e.g. eth0)",
            );
        }
        let ip = c.ip("talos.vip.ip", &v.ip)?;
        if !in_subnet(ip) {
            c.error(
                "talos.vip.ip",
                format!("{ip} is outside network.subnet {}", subnet.unwrap()),
            );
        } else if !host_address(ip) {
            c.error(
                "talos.vip.ip",
                format!("{ip} is the network or broadcast address of the subnet"),
            );
        }
        if Some(ip) == gateway {
            c.error("talos.vip.ip", format!("{ip} is the gateway address"));
        }
        Some(Vip {
            interface: v.interface.trim().to_string(),
            ip,
        })
    });
    if t.api_port == Some(0) {
        c.error("talos.api_port", "must be a TCP port between 1 and 65535");
    }
    if let Some(disk) = &t.install_disk
        && !disk.starts_with("/dev/")
    {
        c.error(
            "talos.install_disk",
            format!("{disk:?} must be a device path under /dev/"),
        );
    }
    let mut ext_seen = BTreeSet::new();
    if t.extensions.len() > MAX_EXTENSIONS {
        c.error(
            "talos.extensions",
            format!(
                "{} entries; at most {MAX_EXTENSIONS} system extensions are accepted",
                t.extensions.len()
            ),
        );
    }
    for (i, e) in t.extensions.iter().enumerate().take(MAX_EXTENSIONS) {
        if e.trim().is_empty() || e.contains(char::is_whitespace) {
            c.error(
                &format!("talos.extensions[{i}]"),
                format!("{e:?} is not an extension name (e.g. siderolabs/qemu-guest-agent)"),
            );
        } else if !ext_seen.insert(e) {
            c.error(
                &format!("talos.extensions[{i}]"),
                format!("{e} is listed twice"),
            );
        }
    }
    // --- secrets
    let recipients_file = ws.recipients_file().to_path_buf();
    let recipients_file = recipients_file.is_file().then_some(recipients_file);
    if raw.secrets.recipients.is_empty() && recipients_file.is_none() {
        c.error(
            "secrets.recipients",
            format!(
                "no age recipients: list at least one here or in {}.recipients beside the profile",
                raw.name
            ),
        );
    }
    for (i, r) in raw.secrets.recipients.iter().enumerate() {
        let r = r.trim();
        // Post-quantum recipients have the bech32 prefix `age1pq` (`age1pq1…`); an X25519
        // recipient's data may itself begin with "pq" (`age1pqyf9…`: 1 in 1024 keys).
        if r.starts_with("age1pq1") {
            c.error(&format!("secrets.recipients[{i}]"), "post-quantum (age1pq...) recipients are not supported; use an X25519 age1... or ssh-ed25519 recipient");
        } else if !(r.starts_with("age1")
            || r.starts_with("ssh-ed25519 ")
            || r.starts_with("ssh-rsa "))
        {
            let shown: String = r.chars().take(20).collect();
            c.error(
                &format!("secrets.recipients[{i}]"),
                format!("{shown:?} is not an age recipient (age1... or ssh-ed25519 ...)"),
            );
        } else if let Err(message) = crate::secrets::check_recipient(r) {
            // Defect 9: what encryption would reject, validate rejects first.
            c.error(&format!("secrets.recipients[{i}]"), message);
        }
    }
    let crt_ttl_s = match &raw.secrets.crt_ttl {
        None => crate::clientcert::DEFAULT_CRT_TTL_HOURS as i64 * 3600,
        Some(text) => match crate::clientcert::parse_ttl(text) {
            Ok(d) => d.whole_seconds(),
            Err(e) => {
                c.error("secrets.crt_ttl", e);
                0
            }
        },
    };
    if let Some(file) = &recipients_file {
        for (line, message) in crate::secrets::check_recipients_file(file) {
            c.errors.push(Finding {
                file: file.clone(),
                line: (line > 0).then_some(line as u64),
                field: String::new(),
                message,
            });
        }
    }

    // --- up
    let up_jobs = raw.up.as_ref().and_then(|u| u.jobs);
    if let Some(jobs) = up_jobs
        && !(1..=MAX_JOBS).contains(&(jobs as usize))
    {
        c.error(
            "up.jobs",
            format!("{jobs} must be between 1 and {MAX_JOBS}"),
        );
    }

    // --- discovery
    let d = raw.discovery.clone().unwrap_or(RawDiscovery {
        subnet: None,
        concurrency: None,
        connect_timeout_ms: None,
        attempts: None,
        retry_wait_s: None,
        count_fallback: None,
    });
    let discovery_subnet = match &d.subnet {
        Some(s) => c.net("discovery.subnet", s),
        None => subnet,
    };
    let concurrency = d.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(MIN_CONCURRENCY..=MAX_CONCURRENCY).contains(&concurrency) {
        c.error(
            "discovery.concurrency",
            format!("{concurrency} must be between {MIN_CONCURRENCY} and {MAX_CONCURRENCY}"),
        );
    }
    if let Some(net) = discovery_subnet {
        let minimum = match net {
            IpNet::V4(_) => crate::discovery::MIN_IPV4_PREFIX,
            IpNet::V6(_) => crate::discovery::MIN_IPV6_PREFIX,
        };
        if net.prefix_len() < minimum {
            let (field, hint) = if d.subnet.is_some() {
                ("discovery.subnet", "")
            } else {
                (
                    "network.subnet",
                    "; set discovery.subnet to the part of it where the nodes are",
                )
            };
            c.error(
                field,
                format!(
                    "{net} is wider than the discovery scanner accepts (/{minimum} or narrower){hint}"
                ),
            );
        }
    }
    let connect_timeout_ms = d.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
    if connect_timeout_ms == 0 {
        c.error("discovery.connect_timeout_ms", "must be greater than 0");
    } else if connect_timeout_ms > MAX_CONNECT_TIMEOUT_MS {
        c.error(
            "discovery.connect_timeout_ms",
            format!("{connect_timeout_ms} is out of range: at most {MAX_CONNECT_TIMEOUT_MS} (one minute)"),
        );
    }
    let attempts = d.attempts.unwrap_or(DEFAULT_ATTEMPTS);
    if attempts == 0 {
        c.error("discovery.attempts", "must be at least 1");
    } else if attempts > MAX_ATTEMPTS {
        c.error(
            "discovery.attempts",
            format!("{attempts} is out of range: at most {MAX_ATTEMPTS}"),
        );
    }
    let retry_wait_s = d.retry_wait_s.unwrap_or(DEFAULT_RETRY_WAIT_S);
    if retry_wait_s > MAX_RETRY_WAIT_S {
        c.error(
            "discovery.retry_wait_s",
            format!("{retry_wait_s} is out of range: at most {MAX_RETRY_WAIT_S} (one hour)"),
        );
    }

    // --- proxmox
    let proxmox = raw.proxmox.as_ref().and_then(|p| {
        if !p.url.starts_with("https://") {
            c.error("proxmox.url", format!("{:?} must be an https:// URL", p.url));
        }
        if !p.token_id.contains('!') || !p.token_id.contains('@') {
            c.error("proxmox.token_id", format!("{:?} must have the form USER@REALM!TOKENNAME", p.token_id));
        }
        let secret = match (&p.token_secret_env, &p.token_secret_command) {
            (Some(env), None) => Some(TokenSecretSource::Env(env.clone())),
            (None, Some(cmd)) if !cmd.is_empty() => Some(TokenSecretSource::Command(cmd.clone())),
            (None, Some(_)) => {
                c.error("proxmox.token_secret_command", "must name a program to run");
                None
            }
            (Some(_), Some(_)) => {
                c.error("proxmox", "set only one of token_secret_env and token_secret_command");
                None
            }
            (None, None) => {
                c.error("proxmox", "set token_secret_env or token_secret_command (the token secret never goes in the profile)");
                None
            }
        };
        let tls = match (&p.ca_file, p.insecure_skip_verify.unwrap_or(false)) {
            (Some(_), true) => {
                c.error("proxmox", "set only one of ca_file and insecure_skip_verify");
                ProxmoxTls::SystemRoots
            }
            (Some(f), false) => {
                let path = match ws.input("proxmox.ca_file", f) {
                    Ok(path) => path,
                    Err((path, p)) => {
                        c.error(&p.field, p.message);
                        path
                    }
                };
                if !path.is_file() {
                    c.error("proxmox.ca_file", format!("{} does not exist", path.display()));
                }
                ProxmoxTls::CaFile(path)
            }
            (None, true) => ProxmoxTls::InsecureSkipVerify,
            (None, false) => ProxmoxTls::SystemRoots,
        };
        Some(Proxmox { url: p.url.clone(), token_id: p.token_id.clone(), token_secret: secret?, tls })
    });

    // --- nodes
    let mut nodes = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut ips: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut macs: BTreeMap<String, String> = BTreeMap::new();
    let mut vmids: BTreeMap<u32, String> = BTreeMap::new();
    let groups = [
        (Role::Controlplane, Some(&raw.nodes.controlplane)),
        (Role::Worker, raw.nodes.worker.as_ref()),
    ];
    for (role, group) in groups {
        let Some(group) = group else { continue };
        let default_iface = match role {
            Role::Controlplane => vip.as_ref().map(|v| v.interface.clone()),
            Role::Worker => None,
        };
        let interface = group
            .interface
            .clone()
            .or(default_iface)
            .unwrap_or_else(|| "eth0".to_string());
        if group
            .interface
            .as_deref()
            .is_some_and(|i| i.trim().is_empty() || i.contains(char::is_whitespace))
        {
            c.error(
                &format!("nodes.{role}.interface"),
                "must name a network interface (e.g. eth0)",
            );
        }
        if let (Role::Controlplane, Some(v), Some(i)) = (role, &vip, &group.interface)
            && &v.interface != i
        {
            c.error("nodes.controlplane.interface", format!("{i} differs from talos.vip.interface {}; the VIP is announced on the node's interface", v.interface));
        }
        for (i, a) in group.assignments.iter().enumerate() {
            let path = format!("nodes.{role}.assignments[{i}]");
            if !is_dns_label(&a.name) {
                c.error(
                    &format!("{path}.name"),
                    format!("{:?} must be a DNS label (it becomes the hostname)", a.name),
                );
            }
            if let Some(first) = names.insert(a.name.clone(), path.clone()) {
                c.error(
                    &format!("{path}.name"),
                    format!("node name {} is already used by {first}", a.name),
                );
            }
            let ip = c.ip(&format!("{path}.ip"), &a.ip);
            if let Some(ip) = ip {
                if !in_subnet(ip) {
                    c.error(
                        &format!("{path}.ip"),
                        format!("{ip} is outside network.subnet {}", subnet.unwrap()),
                    );
                } else if !host_address(ip) {
                    c.error(
                        &format!("{path}.ip"),
                        format!("{ip} is the network or broadcast address of the subnet"),
                    );
                }
                if let Some(first) = ips.get(&ip) {
                    c.error(
                        &format!("{path}.ip"),
                        format!("{ip} is already assigned to {first}"),
                    );
                } else {
                    ips.insert(ip, path.clone());
                }
                if Some(ip) == gateway {
                    c.error(
                        &format!("{path}.ip"),
                        format!("{ip} is the gateway address"),
                    );
                }
                if vip.as_ref().is_some_and(|v| v.ip == ip) {
                    c.error("talos.vip.ip", format!("{ip} is also the address of node {} ({path}.ip); the VIP must be a free address", a.name));
                }
            }
            let mac = a.mac.as_ref().and_then(|m| match normalize_mac(m) {
                Some(norm) => {
                    if let Some(first) = macs.insert(norm.clone(), path.clone()) {
                        c.error(
                            &format!("{path}.mac"),
                            format!("{m} is already the MAC of {first}"),
                        );
                    }
                    Some(norm)
                }
                None => {
                    c.error(
                        &format!("{path}.mac"),
                        format!("{m:?} is not a MAC address (expected aa:bb:cc:dd:ee:ff)"),
                    );
                    None
                }
            });
            // Trap 10: without a MAC (from the profile, or from Proxmox by vmid) the config
            // names the link; a defaulted `eth0` exists only on images with net.ifnames=0.
            if a.mac.is_none()
                && (a.vmid.is_none() || raw.proxmox.is_none())
                && group.interface.is_none()
                && (role == Role::Worker || vip.is_none())
            {
                c.warn(
                    &path,
                    format!(
                        "{} has no mac: its static address goes on link {interface}, which Talos names only on images with net.ifnames=0 (otherwise ens18, enp0s18, ...); set mac: (or vmid: with proxmox:) to select the NIC by MAC, or nodes.{role}.interface",
                        a.name
                    ),
                );
            }
            if let Some(vmid) = a.vmid
                && let Some(first) = vmids.insert(vmid, path.clone())
            {
                c.error(
                    &format!("{path}.vmid"),
                    format!("vmid {vmid} is already used by {first}"),
                );
            }
            if let Some(ip) = ip {
                nodes.push(Node {
                    name: a.name.clone(),
                    role,
                    ip,
                    mac,
                    vmid: a.vmid,
                    interface: interface.clone(),
                    index: i,
                });
            }
        }
    }
    let cp_count = raw.nodes.controlplane.assignments.len();
    if cp_count == 0 {
        c.error(
            "nodes.controlplane.assignments",
            "at least one control-plane node is required",
        );
    } else if cp_count.is_multiple_of(2) {
        c.warn("nodes.controlplane.assignments", format!("{cp_count} control-plane nodes: an odd number is recommended (etcd quorum tolerates no more failures with {cp_count} than with {})", cp_count - 1));
    }
    if let Ok(ip) = n.api_endpoint.parse::<IpAddr>() {
        let is_vip = vip.as_ref().is_some_and(|v| v.ip == ip);
        match ips.get(&ip) {
            Some(path) if path.starts_with("nodes.worker") => {
                c.error("network.api_endpoint", format!("{ip} is a worker's address ({path}); the API endpoint must be the VIP or a control-plane node"));
            }
            Some(_) if vip.is_some() => {
                c.warn("network.api_endpoint", format!("{ip} is a control-plane node address although a VIP is configured; the endpoint fails with that node"));
            }
            Some(_) => {}
            None if !is_vip => {
                c.warn(
                    "network.api_endpoint",
                    format!("{ip} is neither the VIP nor a control-plane node address"),
                );
            }
            None => {}
        }
    }
    if vip.is_some() && cp_count == 1 {
        c.warn("talos.vip", "a VIP with a single control-plane node adds nothing; it becomes useful with 3 control-plane nodes");
    }

    // --- patches
    let mut patch_list = |field: &str, list: &[String]| -> Vec<PatchFile> {
        list.iter()
            .enumerate()
            .map(|(i, w)| {
                let field = format!("{field}[{i}]");
                let path = match ws.input(&field, w) {
                    Ok(path) => path,
                    Err((path, p)) => {
                        c.error(&p.field, p.message);
                        path
                    }
                };
                // Defect 14: a directory (or FIFO, device) is named as such, not as missing.
                if let Err(message) = read_regular_bounded(
                    &path,
                    MAX_PATCH_BYTES,
                    &format!("patch file {}", path.display()),
                ) {
                    c.error(&field, message);
                }
                PatchFile {
                    written: w.clone(),
                    path,
                    field,
                }
            })
            .collect()
    };
    let mut patches = Patches {
        all: patch_list("patches.all", &raw.patches.all),
        controlplane: patch_list("patches.controlplane", &raw.patches.controlplane),
        worker: patch_list("patches.worker", &raw.patches.worker),
        nodes: BTreeMap::new(),
    };
    for (node, list) in &raw.patches.nodes {
        let files = patch_list(&format!("patches.nodes.{node}"), list);
        patches.nodes.insert(node.clone(), files);
    }
    for node in raw.patches.nodes.keys() {
        if !names.contains_key(node) {
            c.error(
                &format!("patches.nodes.{node}"),
                format!("no node is named {node}"),
            );
        }
    }

    // --- outputs: none may overwrite the profile, its lock, secrets or recipients file, an input
    let mut inputs: Vec<(&str, &Path)> = patches
        .all
        .iter()
        .chain(&patches.controlplane)
        .chain(&patches.worker)
        .chain(patches.nodes.values().flatten())
        .map(|p| (p.field.as_str(), p.path.as_path()))
        .collect();
    if let Some(Proxmox {
        tls: ProxmoxTls::CaFile(ca),
        ..
    }) = &proxmox
    {
        inputs.push(("proxmox.ca_file", ca.as_path()));
    }
    for p in ws.check_outputs(names.keys().map(String::as_str), &inputs) {
        c.error(&p.field, p.message);
    }

    Some(Profile {
        name: raw.name.clone(),
        source: absolute.to_path_buf(),
        workspace: ws,
        network: Network {
            api_endpoint: n.api_endpoint.trim().to_string(),
            subnet: subnet?,
            gateway: gateway?,
            nameservers,
            pod_cidr: pod?,
            service_cidr: service?,
        },
        talos: Talos {
            version: version?,
            kubernetes_version: kubernetes_version?,
            contract,
            schematic_id: schematic.to_string(),
            vip,
            api_port: t.api_port.unwrap_or(DEFAULT_API_PORT),
            install_disk: t.install_disk.clone(),
            extensions: t.extensions.clone(),
        },
        recipients: raw
            .secrets
            .recipients
            .iter()
            .map(|r| r.trim().to_string())
            .collect(),
        recipients_file,
        crt_ttl_s,
        discovery: Discovery {
            subnet: discovery_subnet?,
            concurrency,
            connect_timeout_ms,
            attempts,
            retry_wait_s,
            count_fallback: d.count_fallback.unwrap_or(true),
        },
        proxmox,
        kubeconfig: KubeconfigSettings {
            merge: raw
                .kubeconfig
                .as_ref()
                .and_then(|k| k.merge)
                .unwrap_or(true),
        },
        nodes,
        patches,
        up: super::model::UpSettings {
            jobs: up_jobs.map(|j| j as usize),
        },
    })
}

/// The most steps `up` runs at once (`up.jobs`, `--jobs`): each may run a talosctl.
pub const MAX_JOBS: usize = 256;
