//! Which fields a Talos machine config document may contain, and in which order Talos writes
//! them. Derived from the upstream JSON schemas (v1.11, v1.13, newest) by
//! `tools/derive_known_fields.py` into `known_fields.txt`; used for strict decoding (unknown
//! keys are errors, as in Talos) and for re-encoding patched configs in Go struct field order.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::machineconfig::yaml::Yaml;

/// The field table: per document kind, schema paths with their declaration order.
pub struct FieldTable {
    order: HashMap<(String, String), usize>,
    types: HashMap<(String, String), ScalarType>,
    masks: HashMap<(String, String), u8>,
}

/// Which schema generations a check accepts fields from (bits of `known_fields.txt`).
pub type SchemaMask = u8;
/// Fields of the v1.11 schema (the classic layout).
pub const SCHEMA_V1_11: SchemaMask = 1;
/// Fields of the v1.13 schema.
pub const SCHEMA_V1_13: SchemaMask = 2;
/// Fields of the newest schema (v1.14+ layout).
pub const SCHEMA_NEWEST: SchemaMask = 4;
/// Every field any schema knows (what the newest loader accepts: deprecated fields stay).
pub const SCHEMA_ALL: SchemaMask = SCHEMA_V1_11 | SCHEMA_V1_13 | SCHEMA_NEWEST;

/// The fields a Talos node of `talos_version` (e.g. `v1.11.5`) decodes: loaders keep
/// accepting fields older schemas documented, so each generation adds to the previous ones.
/// v1.12 nodes are approximated by the v1.13 schema. Unparsable versions accept everything.
pub fn schema_mask_for_version(talos_version: &str) -> SchemaMask {
    match crate::machineconfig::contract::parse_major_minor(talos_version) {
        Some(v) if v <= (1, 11) => SCHEMA_V1_11,
        Some(v) if v <= (1, 13) => SCHEMA_V1_11 | SCHEMA_V1_13,
        _ => SCHEMA_ALL,
    }
}

/// The scalar type the schema gives a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarType {
    String,
    Integer,
    Boolean,
    Number,
}

impl ScalarType {
    fn parse(text: &str) -> Option<ScalarType> {
        match text {
            "string" => Some(ScalarType::String),
            "integer" => Some(ScalarType::Integer),
            "boolean" => Some(ScalarType::Boolean),
            "number" => Some(ScalarType::Number),
            _ => None,
        }
    }

    /// The Go type name yaml.v3 reports in decoding errors.
    fn go_name(self) -> &'static str {
        match self {
            ScalarType::String => "string",
            ScalarType::Integer => "int",
            ScalarType::Boolean => "bool",
            ScalarType::Number => "float64",
        }
    }
}

/// How the children of a mapping are keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// A Go struct: only known field names.
    Struct,
    /// A typed map (`{}`): any key, children share one schema.
    Keyed,
    /// Free-form content (`*`): anything goes.
    FreeForm,
}

impl FieldTable {
    fn load() -> FieldTable {
        let mut order = HashMap::new();
        let mut types = HashMap::new();
        let mut masks = HashMap::new();
        for (index, line) in include_str!("known_fields.txt").lines().enumerate() {
            let mut parts = line.split(' ');
            let (Some(kind), Some(path)) = (parts.next(), parts.next()) else {
                continue;
            };
            let path = if path == "." { "" } else { path };
            // The JSON schemas title two documents after their Go alias; the decoder's kinds
            // are `UnattendedInstallConfig` and `KubeSpanEndpointsConfig` (upstream:
            // pkg/machinery/config/types/runtime/unattended_install.go,
            // pkg/machinery/config/types/network/kubespan_endpoints.go@v1.14.0-rc.1).
            let kind = match kind {
                "UnattendedInstall" => "UnattendedInstallConfig",
                "KubeSpanEndpoints" => "KubeSpanEndpointsConfig",
                other => other,
            };
            let key = (kind.to_string(), path.to_string());
            if let Some(scalar) = parts.next().and_then(ScalarType::parse) {
                types.insert(key.clone(), scalar);
            }
            let mask = parts
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(SCHEMA_ALL);
            masks.insert(key.clone(), mask);
            order.insert(key, index);
        }
        FieldTable {
            order,
            types,
            masks,
        }
    }

    /// The shared table.
    pub fn get() -> &'static FieldTable {
        static TABLE: OnceLock<FieldTable> = OnceLock::new();
        TABLE.get_or_init(FieldTable::load)
    }

    /// Whether documents of this kind exist (`v1alpha1` = the legacy document).
    pub fn knows_kind(&self, kind: &str) -> bool {
        self.knows_kind_in(kind, SCHEMA_ALL)
    }

    /// Whether the given schema generations know documents of this kind.
    pub fn knows_kind_in(&self, kind: &str, allowed: SchemaMask) -> bool {
        self.has_in(kind, "", allowed)
    }

    fn has(&self, kind: &str, path: &str) -> bool {
        self.order
            .contains_key(&(kind.to_string(), path.to_string()))
    }

    fn has_in(&self, kind: &str, path: &str, allowed: SchemaMask) -> bool {
        self.masks
            .get(&(kind.to_string(), path.to_string()))
            .is_some_and(|m| m & allowed != 0)
    }

    /// How the mapping at schema path `path` is keyed.
    pub fn map_kind(&self, kind: &str, path: &str) -> MapKind {
        if self.has(kind, &join(path, "*")) {
            MapKind::FreeForm
        } else if self.has(kind, &join(path, "{}")) {
            MapKind::Keyed
        } else {
            MapKind::Struct
        }
    }

    /// Schema path of child `key` of the mapping at `path`, or None when unknown.
    pub fn child(&self, kind: &str, path: &str, key: &str) -> Option<String> {
        self.child_in(kind, path, key, SCHEMA_ALL)
    }

    /// [`FieldTable::child`] restricted to the given schema generations.
    pub fn child_in(
        &self,
        kind: &str,
        path: &str,
        key: &str,
        allowed: SchemaMask,
    ) -> Option<String> {
        match self.map_kind(kind, path) {
            MapKind::FreeForm => Some(join(path, "*")),
            MapKind::Keyed => Some(join(path, "{}")),
            MapKind::Struct => {
                let child = join(path, key);
                self.has_in(kind, &child, allowed).then_some(child)
            }
        }
    }

    /// The scalar type of the field at a schema path, when the schemas agree on one.
    pub fn scalar_type(&self, kind: &str, path: &str) -> Option<ScalarType> {
        self.types
            .get(&(kind.to_string(), path.to_string()))
            .copied()
    }

    /// Declaration order of a struct field (unknown fields sort last).
    pub fn order_of(&self, kind: &str, path: &str) -> usize {
        if kind == "v1alpha1" {
            // `persist` is not in the schemas; Talos writes it after `debug`.
            match path {
                "version" => return 0,
                "debug" => return 1,
                "persist" => return 2,
                _ => {}
            }
        }
        self.order
            .get(&(kind.to_string(), path.to_string()))
            .map_or(usize::MAX, |i| i + 3)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The schema kind of a document: `v1alpha1` for the legacy one, else its `kind`.
pub fn document_kind(doc: &Yaml) -> String {
    doc.get("kind")
        .and_then(Yaml::as_str)
        .unwrap_or("v1alpha1")
        .to_string()
}

/// Unknown keys of a document as a tree of the offending keys and values (for Talos'
/// `unknown keys found during decoding:` message); None when every key is known.
pub fn unknown_keys(doc: &Yaml, kind: &str) -> Option<Yaml> {
    unknown_keys_in(doc, kind, SCHEMA_ALL)
}

/// [`unknown_keys`] for a node that knows only the given schema generations.
pub fn unknown_keys_in(doc: &Yaml, kind: &str, allowed: SchemaMask) -> Option<Yaml> {
    unknown_below(FieldTable::get(), doc, kind, "", allowed)
}

fn unknown_below(
    table: &FieldTable,
    node: &Yaml,
    kind: &str,
    path: &str,
    allowed: SchemaMask,
) -> Option<Yaml> {
    match node {
        Yaml::Map(entries) => {
            if table.map_kind(kind, path) == MapKind::FreeForm {
                return None;
            }
            let mut unknown = Vec::new();
            for (key, value) in entries {
                if key == "$patch" {
                    continue;
                }
                match table.child_in(kind, path, key, allowed) {
                    None => unknown.push((key.clone(), redact_long_strings(value))),
                    Some(child) => {
                        if let Some(sub) = unknown_below(table, value, kind, &child, allowed) {
                            unknown.push((key.clone(), sub));
                        }
                    }
                }
            }
            (!unknown.is_empty()).then_some(Yaml::Map(unknown))
        }
        Yaml::Seq(items) => {
            let item_path = format!("{path}[]");
            let unknown: Vec<Yaml> = items
                .iter()
                .filter_map(|item| unknown_below(table, item, kind, &item_path, allowed))
                .collect();
            (!unknown.is_empty()).then_some(Yaml::Seq(unknown))
        }
        _ => None,
    }
}

fn yaml_tag(node: &Yaml) -> &'static str {
    match node {
        Yaml::Null => "!!null",
        Yaml::Bool(_) => "!!bool",
        Yaml::Int(_) => "!!int",
        Yaml::Float(_) => "!!float",
        Yaml::Str(_) => "!!str",
        Yaml::Seq(_) => "!!seq",
        Yaml::Map(_) => "!!map",
    }
}

/// Scalars whose YAML type the Go field cannot take, in yaml.v3's words prefixed with the
/// field path (`machine.network.interfaces[0].dhcp: cannot unmarshal !!str `yes` into bool`).
pub fn type_errors(doc: &Yaml, kind: &str) -> Vec<String> {
    let mut errors = Vec::new();
    type_errors_below(FieldTable::get(), doc, kind, "", "", &mut errors);
    errors
}

fn type_errors_below(
    table: &FieldTable,
    node: &Yaml,
    kind: &str,
    schema_path: &str,
    shown_path: &str,
    errors: &mut Vec<String>,
) {
    if let Some(expected) = table.scalar_type(kind, schema_path) {
        let fits = match (expected, node) {
            (_, Yaml::Null) => true,
            // `{$patch: delete}` markers stand in for any field in a patch.
            (_, Yaml::Map(_)) if node.get("$patch").is_some() => true,
            (ScalarType::String, Yaml::Seq(_) | Yaml::Map(_)) => false,
            (ScalarType::String, _) => true,
            (ScalarType::Boolean, Yaml::Bool(_)) => true,
            (ScalarType::Integer, Yaml::Int(_)) => true,
            (ScalarType::Number, Yaml::Int(_) | Yaml::Float(_)) => true,
            _ => false,
        };
        if !fits {
            let shown_value = match node {
                Yaml::Str(s) if s.chars().count() < 32 => format!(" `{s}`"),
                Yaml::Str(_) => " `<redacted>`".to_string(),
                Yaml::Int(i) => format!(" `{i}`"),
                Yaml::Float(x) => format!(" `{x}`"),
                Yaml::Bool(b) => format!(" `{b}`"),
                _ => String::new(),
            };
            errors.push(format!(
                "{shown_path}: cannot unmarshal {}{shown_value} into {}",
                yaml_tag(node),
                expected.go_name()
            ));
        }
        return;
    }
    match node {
        Yaml::Map(entries) => {
            if table.map_kind(kind, schema_path) == MapKind::FreeForm {
                return;
            }
            for (key, value) in entries {
                if let Some(child) = table.child(kind, schema_path, key) {
                    type_errors_below(table, value, kind, &child, &join(shown_path, key), errors);
                }
            }
        }
        Yaml::Seq(items) => {
            let item_schema = format!("{schema_path}[]");
            for (i, item) in items.iter().enumerate() {
                let shown = format!("{shown_path}[{i}]");
                type_errors_below(table, item, kind, &item_schema, &shown, errors);
            }
        }
        _ => {}
    }
}

/// Copies a node with every string of 32 or more characters replaced by `<redacted>`: unknown
/// keys are echoed in error messages (as Talos does), and a misplaced key or token must not be.
pub fn redact_long_strings(node: &Yaml) -> Yaml {
    match node {
        Yaml::Str(s) if s.chars().count() >= 32 => Yaml::str("<redacted>"),
        Yaml::Seq(items) => Yaml::Seq(items.iter().map(redact_long_strings).collect()),
        Yaml::Map(entries) => Yaml::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), redact_long_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Reorders struct fields into Talos' (Go declaration) order; typed and free-form maps are
/// sorted by key as Go's encoder does for maps.
pub fn canonicalize(doc: &mut Yaml, kind: &str) {
    canonicalize_at(FieldTable::get(), doc, kind, "");
}

fn canonicalize_at(table: &FieldTable, node: &mut Yaml, kind: &str, path: &str) {
    // A Go string field decodes any scalar as its text and encodes it back as a string.
    if table.scalar_type(kind, path) == Some(ScalarType::String) {
        let text = match node {
            Yaml::Int(i) => Some(i.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Float(x) => Some(x.to_string()),
            _ => None,
        };
        if let Some(text) = text {
            *node = Yaml::Str(text);
        }
        return;
    }
    match node {
        Yaml::Map(entries) => {
            let map_kind = table.map_kind(kind, path);
            for (key, value) in entries.iter_mut() {
                if let Some(child) = table.child(kind, path, key) {
                    canonicalize_at(table, value, kind, &child);
                }
            }
            match map_kind {
                MapKind::Struct => entries.sort_by_key(|(key, _)| {
                    let typed_first = usize::from(!(key == "apiVersion" || key == "kind"));
                    (typed_first, table.order_of(kind, &join(path, key)))
                }),
                MapKind::Keyed | MapKind::FreeForm => entries.sort_by(|a, b| a.0.cmp(&b.0)),
            }
        }
        Yaml::Seq(items) => {
            let item_path = format!("{path}[]");
            for item in items {
                canonicalize_at(table, item, kind, &item_path);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machineconfig::yaml;

    #[test]
    fn samples_are_known_and_already_canonical() {
        for text in [
            include_str!("testdata/controlplane-contract-v1.11.yaml"),
            include_str!("testdata/worker-contract-v1.11.yaml"),
            include_str!("testdata/controlplane-contract-v1.14-multidoc.yaml"),
        ] {
            let mut docs = yaml::parse_documents(text).unwrap();
            for doc in &mut docs {
                let kind = document_kind(doc);
                assert!(FieldTable::get().knows_kind(&kind), "{kind}");
                assert_eq!(unknown_keys(doc, &kind), None, "{kind}");
                assert_eq!(type_errors(doc, &kind), Vec::<String>::new(), "{kind}");
                canonicalize(doc, &kind);
            }
            assert_eq!(yaml::emit_documents(&docs), text);
        }
    }

    #[test]
    fn older_nodes_know_fewer_fields() {
        let doc =
            yaml::parse_one("machine:\n    install:\n        grubUseUKICmdline: true\n").unwrap();
        let v111 = schema_mask_for_version("v1.11.5");
        assert_eq!(
            yaml::emit(&unknown_keys_in(&doc, "v1alpha1", v111).unwrap()),
            "machine:\n    install:\n        grubUseUKICmdline: true\n"
        );
        assert_eq!(
            unknown_keys_in(&doc, "v1alpha1", schema_mask_for_version("v1.12.0")),
            None
        );
        let table = FieldTable::get();
        assert!(!table.knows_kind_in("HostnameConfig", v111));
        assert!(table.knows_kind_in("HostnameConfig", schema_mask_for_version("v1.12.1")));
        // Deprecated fields stay accepted by newer loaders.
        let network = yaml::parse_one("machine:\n    network:\n        hostname: a\n").unwrap();
        assert_eq!(
            unknown_keys_in(&network, "v1alpha1", schema_mask_for_version("v1.14.0")),
            None
        );
    }

    #[test]
    fn reports_type_errors_and_coerces_string_fields() {
        let mut doc = yaml::parse_one(
            "machine:\n    network:\n        interfaces:\n            - interface: 7\n              dhcp: yes\n              mtu: 1500\n",
        )
        .unwrap();
        assert_eq!(
            type_errors(&doc, "v1alpha1"),
            ["machine.network.interfaces[0].dhcp: cannot unmarshal !!str `yes` into bool"]
        );
        canonicalize(&mut doc, "v1alpha1");
        assert!(yaml::emit(&doc).contains("- interface: \"7\"\n"));
    }

    #[test]
    fn unknown_key_errors_do_not_echo_key_material() {
        let doc = yaml::parse_one(
            "machine:\n    cert:\n        key: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVF\n",
        )
        .unwrap();
        assert_eq!(
            yaml::emit(&unknown_keys(&doc, "v1alpha1").unwrap()),
            "machine:\n    cert:\n        key: <redacted>\n"
        );
    }

    #[test]
    fn finds_unknown_keys_and_restores_field_order() {
        let doc = yaml::parse_one(
            "machine:\n    network:\n        interfacez: []\n        hostname: a\n    type: worker\nversion: v1alpha1\n",
        )
        .unwrap();
        let unknown = unknown_keys(&doc, "v1alpha1").unwrap();
        assert_eq!(
            yaml::emit(&unknown),
            "machine:\n    network:\n        interfacez: []\n"
        );
        let mut doc = doc;
        doc.get_mut("machine")
            .unwrap()
            .get_mut("network")
            .unwrap()
            .remove("interfacez");
        canonicalize(&mut doc, "v1alpha1");
        assert_eq!(
            yaml::emit(&doc),
            "version: v1alpha1\nmachine:\n    type: worker\n    network:\n        hostname: a\n"
        );
    }
}
