//! The profile's JSON Schema, derived (schemars) from the very serde types the parser reads
//! ([`super::raw`]), so an editor's view of a profile cannot drift from talix's; and the
//! profile reference (`docs/profile-reference.md`) rendered from that schema.
//!
//! The schema is draft-07 (what yaml-language-server reads). It encodes what a schema can: the
//! keys (unknown ones are errors, as in the parser), types, required keys, defaults, value
//! formats (IP address, CIDR, version, MAC, ...) and numeric bounds. Checks across fields
//! (an address inside the subnet, unique node names, a contract not newer than the version,
//! patch files that exist) stay with `talix validate`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value};

/// Where the committed copy of the schema lives, relative to the repository root; example
/// profiles point at it with `# yaml-language-server: $schema=../schema/profile.schema.json`.
pub const COMMITTED_SCHEMA: &str = "schema/profile.schema.json";
/// Where the committed profile reference lives, relative to the repository root.
pub const COMMITTED_REFERENCE: &str = "docs/profile-reference.md";

/// Declares a schema-only type: a string with a pattern (and optionally a format) that a raw
/// field is declared `#[schemars(with = ...)]`. Never constructed; the parser reads `String`.
macro_rules! string_format {
    ($(#[doc = $doc:literal])* $name:ident, $pattern:expr $(, $key:literal : $value:tt)*) => {
        $(#[doc = $doc])*
        pub enum $name {}
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let description: &[&str] = &[$($doc),*];
                let description = description
                    .iter()
                    .map(|l| l.trim())
                    .collect::<Vec<_>>()
                    .join(" ");
                #[allow(unused_mut)]
                let mut schema = json_schema!({
                    "type": "string",
                    "description": description,
                    "pattern": $pattern,
                });
                $( schema.insert($key.into(), serde_json::json!($value)); )*
                schema
            }
        }
    };
}

/// The DNS-label rule of `name` and node names (`is_dns_label` in validate.rs).
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

string_format!(
    /// A DNS label: lower-case letters, digits and `-`, at most 63 characters, no `-` at
    /// either end.
    DnsLabel,
    DNS_LABEL_PATTERN
);
/// A dotted-quad IPv4 address, each octet 0-255 without leading zeros (as Rust parses them).
macro_rules! ipv4 {
    () => {
        r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}
/// Something with a colon made of hex digits, colons and dots: the shape of an IPv6 address
/// (the `ipv6` format, where a validator checks formats, says whether it is one).
macro_rules! ipv6ish {
    () => {
        r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"
    };
}

string_format!(
    /// An IPv4 or IPv6 address, without prefix or port (`10.0.0.11`, `fd00::11`).
    IpAddress,
    r"^[0-9A-Fa-f:.]+$",
    "anyOf": [
        { "pattern": concat!("^", ipv4!(), "$") },
        { "pattern": concat!("^", ipv6ish!(), "$"), "format": "ipv6" }
    ]
);
string_format!(
    /// A network in CIDR notation, ADDRESS/PREFIX with no host bits set (`10.0.0.0/24`).
    Cidr,
    r"^[0-9A-Fa-f:.]+/[0-9]+$",
    "anyOf": [
        { "pattern": concat!("^", ipv4!(), "/(3[0-2]|[12]?[0-9])$") },
        { "pattern": concat!("^", ipv6ish!(), "/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$") }
    ]
);
string_format!(
    /// A host name or IP address, without scheme or port.
    KubeApiHost,
    r"^[^\s/]+$",
    "anyOf": [
        { "pattern": "^[^:]+$" },
        { "pattern": concat!("^", ipv6ish!(), "$"), "format": "ipv6" }
    ]
);
string_format!(
    /// A release `vMAJOR.MINOR.PATCH`, the `v` optional (`v1.11.5`, `1.34.1`). Write it as a
    /// string: YAML reads `1.10` as a number.
    Version,
    "^v?[0-9]+\\.[0-9]+\\.[0-9]+$"
);
string_format!(
    /// A machine-config contract `vMAJOR.MINOR` (`v1.11`).
    Contract,
    "^v?[0-9]+\\.[0-9]+$"
);
string_format!(
    /// An Image Factory schematic id: 64 lower-case hex characters.
    SchematicId,
    "^[0-9a-f]{64}$"
);
string_format!(
    /// A MAC address, six hex pairs separated by `:` or `-` (`02:54:00:00:01:51`); quote it
    /// in YAML.
    MacAddress,
    "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
);
string_format!(
    /// A network link name (`ens18`, `eth0`).
    InterfaceName,
    "^\\S+$"
);
string_format!(
    /// A device path under `/dev/` (`/dev/sda`, `/dev/nvme0n1`).
    DevicePath,
    "^/dev/"
);
string_format!(
    /// A system extension name (`siderolabs/qemu-guest-agent`).
    ExtensionName,
    "^\\S+$"
);
string_format!(
    /// An age recipient: X25519 `age1...` (not post-quantum `age1pq1...`) or an SSH public key
    /// `ssh-ed25519 AAAA...`.
    Recipient,
    "^\\s*(age1(?!pq1)|ssh-ed25519 |ssh-rsa )"
);
string_format!(
    /// An `https://` URL.
    HttpsUrl,
    "^https://",
    "format": "uri"
);
string_format!(
    /// A Proxmox API token id, `USER@REALM!TOKENNAME`.
    ProxmoxTokenId,
    "@[^!]*!|![^@]*@"
);

/// The profile's JSON Schema (draft-07), as `talix schema` prints it.
pub fn profile_schema() -> Value {
    let generator = SchemaGenerator::new(SchemaSettings::draft07());
    let schema = generator.into_root_schema_for::<super::raw::RawProfile>();
    let mut value = schema.to_value();
    strip_null(&mut value);
    if let Value::Object(root) = &mut value {
        root.insert(
            "$comment".into(),
            Value::String(format!(
                "Generated by `talix schema` from the types talix parses profiles with; \
                 committed as {COMMITTED_SCHEMA}. Cross-field checks are `talix validate`'s."
            )),
        );
    }
    value
}

/// `talix schema` output: the schema, pretty-printed, with a final newline.
pub fn profile_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&profile_schema()).expect("a JSON value prints");
    text.push('\n');
    text
}

/// An optional key is left out, not written as `null`: drop the `null` alternative schemars
/// adds for `Option` fields (`type: [string, null]`, `anyOf: [{...}, {type: null}]`).
fn strip_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.retain(|s| *s != serde_json::json!({ "type": "null" }));
                if any.len() == 1
                    && let Value::Object(only) = any.remove(0)
                {
                    map.remove("anyOf");
                    for (k, v) in only {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            // Draft-07 ignores the siblings of `$ref` (a default, a description): refer
            // through `allOf`, as schemars does for fields that were never optional.
            if map.len() > 1
                && let Some(target) = map.remove("$ref")
            {
                map.insert("allOf".into(), serde_json::json!([{ "$ref": target }]));
            }
            for v in map.values_mut() {
                strip_null(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// The names of a serde struct's fields in declaration order (serde passes them to
/// `deserialize_struct`); the schema's `properties` are a sorted map, the reference follows the
/// order of the types instead.
pub fn field_order<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Recorder(Option<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &mut Recorder {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut recorder = Recorder(None);
    let _ = T::deserialize(&mut recorder);
    recorder.0.unwrap_or(&[])
}

/// Field order of every object definition of the schema (and of the root, `""`).
fn field_orders() -> BTreeMap<&'static str, &'static [&'static str]> {
    use super::raw::*;
    BTreeMap::from([
        ("", field_order::<RawProfile>()),
        ("Network", field_order::<RawNetwork>()),
        ("Talos", field_order::<RawTalos>()),
        ("Factory", field_order::<RawFactory>()),
        ("Vip", field_order::<RawVip>()),
        ("Secrets", field_order::<RawSecrets>()),
        ("Discovery", field_order::<RawDiscovery>()),
        ("Proxmox", field_order::<RawProxmox>()),
        ("Kubeconfig", field_order::<RawKubeconfig>()),
        ("Nodes", field_order::<RawNodes>()),
        ("NodeGroup", field_order::<RawNodeGroup>()),
        ("Assignment", field_order::<RawAssignment>()),
        ("Patches", field_order::<RawPatches>()),
        ("Up", field_order::<RawUp>()),
    ])
}

/// The definition a (sub)schema refers to: `$ref`, or the one `$ref` of an `allOf` (draft-07
/// puts a referencing field's description beside an `allOf`).
fn reference(schema: &Value) -> Option<&str> {
    let target = schema.get("$ref").or_else(|| {
        let all = schema.get("allOf")?.as_array()?;
        all.first()?.get("$ref")
    })?;
    target.as_str()?.strip_prefix("#/definitions/")
}

fn is_object_definition(defs: &Map<String, Value>, name: &str) -> bool {
    defs.get(name).is_some_and(|d| {
        d.get("type").and_then(Value::as_str) == Some("object") && d.get("properties").is_some()
    })
}

/// The type column: `string (IpAddress)`, `list of Cidr`, `integer 1..4096`, `object`.
fn type_text(defs: &Map<String, Value>, schema: &Value) -> String {
    if let Some(name) = reference(schema) {
        return if is_object_definition(defs, name) {
            format!("object ([{name}](#{}))", name.to_lowercase())
        } else {
            format!("string ([{name}](#{}))", name.to_lowercase())
        };
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    match ty {
        "array" => {
            let items = schema.get("items").cloned().unwrap_or(Value::Null);
            let mut t = format!("list of {}", type_text(defs, &items));
            let min = schema.get("minItems").and_then(Value::as_u64);
            let max = schema.get("maxItems").and_then(Value::as_u64);
            match (min, max) {
                (Some(a), Some(b)) => write!(t, ", {a} to {b} items").unwrap(),
                (Some(a), None) => write!(t, ", at least {a}").unwrap(),
                (None, Some(b)) => write!(t, ", at most {b}").unwrap(),
                (None, None) => {}
            }
            if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
                t.push_str(", unique");
            }
            t
        }
        "object" => match schema.get("additionalProperties") {
            Some(v @ Value::Object(_)) => {
                let keys = match schema.get("propertyNames").and_then(reference) {
                    Some(k) => format!("[{k}](#{})", k.to_lowercase()),
                    None => "string".into(),
                };
                format!("map of {keys} to {}", type_text(defs, v))
            }
            _ => "object".into(),
        },
        "integer" => {
            let min = schema.get("minimum").and_then(Value::as_u64);
            let max = schema.get("maximum").and_then(Value::as_u64);
            match (min, max) {
                (Some(a), Some(b)) => format!("integer {a} to {b}"),
                (Some(a), None) => format!("integer ≥ {a}"),
                (None, Some(b)) => format!("integer ≤ {b}"),
                (None, None) => "integer".into(),
            }
        }
        other => other.to_string(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn default_text(schema: &Value, required: bool) -> String {
    if required {
        return "**required**".into();
    }
    if let Some(prose) = schema.get("x-default").and_then(Value::as_str) {
        return one_line(prose);
    }
    match schema.get("default") {
        None => "optional".into(),
        Some(v) => format!("`{}`", serde_json::to_string(v).unwrap_or_default()),
    }
}

fn steps_text(schema: &Value) -> String {
    match schema.get("x-runbook-step").and_then(Value::as_array) {
        Some(steps) if !steps.is_empty() => steps
            .iter()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "—".into(),
    }
}

/// The profile reference in Markdown (`talix schema --markdown`), rendered from `schema`:
/// one table per object, fields in the order of the types, then the value formats.
pub fn reference_markdown(schema: &Value) -> String {
    let empty = Map::new();
    let defs = schema
        .get("definitions")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let orders = field_orders();
    let mut out = String::new();
    out.push_str(
        "<!-- Generated by `talix schema --markdown` from the types talix parses profiles with.\n     \
         Do not edit: change the doc comments in src/profile/raw.rs and run\n     \
         `cargo run -- schema --markdown > docs/profile-reference.md` (tests/schema.rs checks it). -->\n\n",
    );
    out.push_str("# Profile reference\n\n");
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        writeln!(out, "{}\n", one_line(d)).unwrap();
    }
    out.push_str(
        "One YAML file per cluster under `profiles/`. The JSON Schema of this page is \
         `schema/profile.schema.json` (`talix schema`); the example profiles name it in their \
         first line so that editors with a YAML language server complete and check them. \
         `talix validate` checks everything below and what a schema cannot: addresses inside \
         the subnet, unique names, addresses and MACs, a contract not newer than the version, \
         patch files that exist, paths that stay inside the workspace.\n\n\
         **Feeds** names the runbook steps (the derivation graph's step ids) that use the \
         field. Most fields enter those steps' keys (`talix why PROFILE STEP` lists the \
         inputs), so changing one re-runs the steps and whatever depends on their outputs; \
         the paths (`config_dir`, `patches_dir`) and the discovery knobs only say where a \
         step writes or how it searches.\n\n",
    );
    // Sections in document order: (heading path, definition name or "" for the root).
    let mut queue: Vec<(String, String)> = vec![(String::new(), String::new())];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((path, def)) = (!queue.is_empty()).then(|| queue.remove(0)) {
        let object = if def.is_empty() {
            schema
        } else {
            match defs.get(&def) {
                Some(d) => d,
                None => continue,
            }
        };
        let Some(props) = object.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let required: Vec<&str> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let heading = if path.is_empty() {
            "Top level".to_string()
        } else {
            format!("`{path}`")
        };
        writeln!(out, "## {heading}\n").unwrap();
        if !def.is_empty() && seen.insert(def.clone()) {
            writeln!(out, "<a id=\"{}\"></a>", def.to_lowercase()).unwrap();
        }
        if let Some(d) = object.get("description").and_then(Value::as_str)
            && !def.is_empty()
        {
            writeln!(out, "{}\n", one_line(d)).unwrap();
        }
        out.push_str("| Field | Type | Default | Feeds | Description |\n|---|---|---|---|---|\n");
        let order: Vec<&str> = orders
            .get(def.as_str())
            .map(|o| o.to_vec())
            .unwrap_or_else(|| props.keys().map(String::as_str).collect());
        let mut children = Vec::new();
        for key in order {
            let Some(field) = props.get(key) else {
                continue;
            };
            let full = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
            let description = field
                .get("description")
                .and_then(Value::as_str)
                .map(one_line)
                .unwrap_or_default();
            writeln!(
                out,
                "| `{full}` | {} | {} | {} | {description} |",
                type_text(defs, field),
                default_text(field, required.contains(&key)),
                steps_text(field),
            )
            .unwrap();
            // Nested objects get their own section: a field of an object type, or a list of
            // objects (`assignments[]`).
            if let Some(name) = reference(field)
                && is_object_definition(defs, name)
            {
                children.push((full.clone(), name.to_string()));
            } else if let Some(name) = field.get("items").and_then(reference)
                && is_object_definition(defs, name)
            {
                children.push((format!("{full}[]"), name.to_string()));
            }
        }
        out.push('\n');
        // Children right after their parent, in field order.
        for (i, c) in children.into_iter().enumerate() {
            queue.insert(i, c);
        }
    }
    out.push_str("## Value formats\n\n| Format | Pattern | Meaning |\n|---|---|---|\n");
    for (name, def) in defs {
        if is_object_definition(defs, name) {
            continue;
        }
        // The pattern, and the alternatives (`anyOf`) when there are some.
        let code = |p: &str| format!("`{}`", p.replace('|', "\\|"));
        let mut pattern = def
            .get("pattern")
            .and_then(Value::as_str)
            .map(code)
            .unwrap_or_default();
        let alternatives: Vec<String> = def
            .get("anyOf")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("pattern")?.as_str())
                    .map(code)
                    .collect()
            })
            .unwrap_or_default();
        if !alternatives.is_empty() {
            write!(pattern, ", and one of {}", alternatives.join(" or ")).unwrap();
        }
        let description = def
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        writeln!(
            out,
            "| <a id=\"{}\"></a>`{name}` | {pattern} | {description} |",
            name.to_lowercase(),
        )
        .unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_order_follows_the_struct() {
        assert_eq!(
            field_order::<super::super::raw::RawNetwork>(),
            [
                "api_endpoint",
                "subnet",
                "gateway",
                "nameservers",
                "pod_cidr",
                "service_cidr"
            ]
        );
    }

    /// Every object of the schema has its field order, and it names exactly its properties.
    #[test]
    fn every_object_definition_has_its_field_order() {
        let schema = profile_schema();
        let defs = schema["definitions"].as_object().unwrap();
        let orders = field_orders();
        let mut objects: Vec<(&str, &Value)> = vec![("", &schema)];
        objects.extend(
            defs.iter()
                .filter(|(n, _)| is_object_definition(defs, n))
                .map(|(n, d)| (n.as_str(), d)),
        );
        for (name, object) in objects {
            let mut props: Vec<&str> = object["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut order = orders
                .get(name)
                .unwrap_or_else(|| panic!("no field order for {name:?}"))
                .to_vec();
            props.sort();
            order.sort();
            assert_eq!(props, order, "{name}");
        }
    }

    fn homelab() -> crate::profile::Profile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/homelab.yaml");
        crate::profile::load(&path).unwrap().profile
    }

    /// Each field's `x-runbook-step` list, by field path (`network.gateway`).
    fn runbook_steps() -> BTreeMap<String, Vec<String>> {
        fn walk(
            defs: &Map<String, Value>,
            path: &str,
            v: &Value,
            out: &mut BTreeMap<String, Vec<String>>,
        ) {
            let Some(props) = v.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (key, field) in props {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let Some(Value::Array(steps)) = field.get("x-runbook-step") {
                    out.insert(
                        full.clone(),
                        steps
                            .iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect(),
                    );
                }
                let target =
                    reference(field).or_else(|| field.get("allOf")?.get(0).and_then(reference));
                if let Some(def) = target.and_then(|n| defs.get(n)) {
                    walk(defs, &full, def, out);
                }
            }
        }
        let schema = profile_schema();
        let defs = schema["definitions"].as_object().unwrap().clone();
        let mut out = BTreeMap::new();
        walk(&defs, "", &schema, &mut out);
        out
    }

    /// `x-runbook-step` names real steps: each is a step kind of the derivation graph
    /// (`patch/<node>` a per-node one).
    #[test]
    fn runbook_steps_are_steps_of_the_graph() {
        let steps = crate::graph::steps(&homelab(), "v1.11".parse().unwrap());
        let kinds: BTreeMap<&str, bool> = steps
            .iter()
            .map(|s| (s.id.kind(), s.id.node().is_some()))
            .collect();
        let named = runbook_steps();
        assert!(named.len() > 30, "{named:?}");
        for (field, list) in named {
            for step in list {
                let kind = step.split('/').next().unwrap();
                let per_node = step.ends_with("/<node>");
                assert_eq!(
                    kinds.get(kind),
                    Some(&per_node),
                    "{field}: {step} is not a step of the graph"
                );
            }
        }
    }

    /// The other direction: a profile field that a step reads by name (`talix why` shows it)
    /// lists that step, so a new input in graph.rs cannot be missing from the reference.
    #[test]
    fn every_field_a_step_reads_lists_that_step() {
        let named = runbook_steps();
        let steps = crate::graph::steps(&homelab(), "v1.11".parse().unwrap());
        let mut checked = 0;
        // Inputs named after a profile field but derived from another one.
        let derived = BTreeMap::from([("network.subnet_prefix", "network.subnet")]);
        let roots: Vec<String> = profile_schema()["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for step in &steps {
            for input in step.values.keys() {
                let field = derived.get(input.as_str()).copied().unwrap_or(input);
                // `network.gateway`, not `nodes` (the list of node addresses) or `node.ip`.
                let is_field = roots.iter().any(|r| field.starts_with(&format!("{r}.")));
                let Some(list) = named.get(field) else {
                    assert!(
                        !is_field,
                        "{} reads {input}, which the schema does not list: a renamed field?",
                        step.id
                    );
                    continue;
                };
                let kind = step.id.kind();
                let shown = if step.id.node().is_some() {
                    format!("{kind}/<node>")
                } else {
                    kind.to_string()
                };
                assert!(
                    list.contains(&shown),
                    "{input} feeds {} but its x-runbook-step is {list:?}",
                    step.id
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "{checked}");
    }

    /// The value formats agree with the parser's own checks, value by value: what the schema
    /// accepts the parser accepts and the other way round (for checks of one value; host bits
    /// of a CIDR and the like are validate's alone).
    #[test]
    fn value_formats_agree_with_the_parser() {
        use super::super::model::{Contract as C, Version as V};
        use super::super::validate::{is_dns_label, is_endpoint_host, normalize_mac};
        let schema = profile_schema();
        let accepts = |format: &str, value: &str| {
            let probe = serde_json::json!({
                "definitions": schema["definitions"],
                "$ref": format!("#/definitions/{format}"),
            });
            jsonschema::draft7::options()
                .should_validate_formats(true)
                .build(&probe)
                .unwrap()
                .is_valid(&Value::String(value.into()))
        };
        type Check = fn(&str) -> bool;
        let cases: &[(&str, Check, &[&str])] = &[
            (
                "DnsLabel",
                is_dns_label,
                &[
                    "a",
                    "cp1",
                    "a-b",
                    "1",
                    "-a",
                    "a-",
                    "A",
                    "a_b",
                    "",
                    "a.b",
                    &"a".repeat(63),
                    &"a".repeat(64),
                ],
            ),
            (
                "Version",
                |s| s.parse::<V>().is_ok(),
                &[
                    "v1.11.5",
                    "1.11.5",
                    "v01.2.3",
                    "v1.11",
                    "1.11",
                    "latest",
                    "v1.11.5-rc1",
                    "1.2.3.4",
                    "v",
                    "vv1.2.3",
                    "V1.2.3",
                ],
            ),
            (
                "Contract",
                |s| s.parse::<C>().is_ok(),
                &["v1.11", "1.11", "v1", "v1.11.5", "one", "v1.", ".11"],
            ),
            (
                "MacAddress",
                |s| normalize_mac(s).is_some(),
                &[
                    "02:54:00:00:01:51",
                    "02-54-00-00-01-51",
                    "02:54-00:00:01:51",
                    "AA:BB:CC:DD:EE:FF",
                    "02:54:00:00:01",
                    "0254.0000.0151",
                    "02:54:00:00:01:5g",
                    "2:54:00:00:01:51",
                ],
            ),
            (
                "IpAddress",
                |s| s.parse::<std::net::IpAddr>().is_ok(),
                &[
                    "10.0.0.1",
                    "0.0.0.0",
                    "255.255.255.255",
                    "256.0.0.1",
                    "10.0.0",
                    "010.0.0.1",
                    "1.2.3.4.5",
                    "fd00::1",
                    "::1",
                    "::",
                    "fd00::g",
                    "fd00:::1",
                    "dns.google",
                    "10.0.0.1/24",
                ],
            ),
            (
                "Cidr",
                |s| s.parse::<ipnet::IpNet>().is_ok(),
                &[
                    "10.0.0.0/24",
                    "10.0.0.0/0",
                    "10.0.0.0/32",
                    "10.0.0.0/33",
                    "10.0.0.0",
                    "10.0.0/24",
                    "fd00::/64",
                    "fd00::/128",
                    "fd00::/129",
                    "24",
                    "10.0.0.0/24/1",
                ],
            ),
            (
                "KubeApiHost",
                is_endpoint_host,
                &[
                    "10.0.0.10",
                    "cp.example.lan",
                    "fd00::10",
                    "10.0.0.10:6443",
                    "cp:6443",
                    "https://x",
                    "",
                    "a b",
                    "[fd00::10]",
                ],
            ),
            (
                "SchematicId",
                |s| {
                    s.len() == 64
                        && s.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                },
                &[
                    &"a".repeat(64),
                    &"A".repeat(64),
                    &"a".repeat(63),
                    &"g".repeat(64),
                ],
            ),
        ];
        let mut disagreements = Vec::new();
        for (format, parser, values) in cases {
            for value in *values {
                let (schema_says, parser_says) = (accepts(format, value), parser(value));
                if schema_says != parser_says {
                    disagreements.push(format!(
                        "{format} {value:?}: schema {schema_says}, parser {parser_says}"
                    ));
                }
            }
        }
        assert!(disagreements.is_empty(), "{disagreements:#?}");
    }

    #[test]
    fn optional_keys_are_left_out_not_null() {
        let text = profile_schema_text();
        assert!(!text.contains("\"null\""), "{text}");
    }
}
