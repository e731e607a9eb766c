//! Which fields a Talos machine config document may contain, and in which order Talos writes
//! them. Derived from the upstream JSON schemas (v1.11, v1.13, newest) by
//! `tools/derive_known_fields.py` into `known_fields.txt`; used for strict decoding (unknown
//! keys are errors, as in Talos) and for re-encoding patched configs in Go struct field order.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::sim::machineconfig::yaml::Yaml;

/// The field table: per document kind, schema paths with their declaration order.
pub struct FieldTable {
    order: HashMap<(String, String), usize>,
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
        for (index, line) in include_str!("known_fields.txt").lines().enumerate() {
            if let Some((kind, path)) = line.split_once(' ') {
                let path = if path == "." { "" } else { path };
                order.insert((kind.to_string(), path.to_string()), index);
            }
        }
        FieldTable { order }
    }

    /// The shared table.
    pub fn get() -> &'static FieldTable {
        static TABLE: OnceLock<FieldTable> = OnceLock::new();
        TABLE.get_or_init(FieldTable::load)
    }

    /// Whether documents of this kind exist (`v1alpha1` = the legacy document).
    pub fn knows_kind(&self, kind: &str) -> bool {
        self.order.contains_key(&(kind.to_string(), String::new()))
    }

    fn has(&self, kind: &str, path: &str) -> bool {
        self.order
            .contains_key(&(kind.to_string(), path.to_string()))
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
        match self.map_kind(kind, path) {
            MapKind::FreeForm => Some(join(path, "*")),
            MapKind::Keyed => Some(join(path, "{}")),
            MapKind::Struct => {
                let child = join(path, key);
                (self.has(kind, &child) || (kind == "v1alpha1" && child == "persist"))
                    .then_some(child)
            }
        }
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
    unknown_below(FieldTable::get(), doc, kind, "")
}

fn unknown_below(table: &FieldTable, node: &Yaml, kind: &str, path: &str) -> Option<Yaml> {
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
                match table.child(kind, path, key) {
                    None => unknown.push((key.clone(), redact_long_strings(value))),
                    Some(child) => {
                        if let Some(sub) = unknown_below(table, value, kind, &child) {
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
                .filter_map(|item| unknown_below(table, item, kind, &item_path))
                .collect();
            (!unknown.is_empty()).then_some(Yaml::Seq(unknown))
        }
        _ => None,
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
    use crate::sim::machineconfig::yaml;

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
                canonicalize(doc, &kind);
            }
            assert_eq!(yaml::emit_documents(&docs), text);
        }
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
