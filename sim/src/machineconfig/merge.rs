//! Config patches as Talos applies them (strategic-merge.md): format detection, strategic merge
//! with Talos' list rules (interfaces by name, vlans by id, ...), `$patch: delete`, and RFC 6902
//! JSON patches, which only work on single-document configs.

use serde_json::Value;

use crate::machineconfig::schema::{self, FieldTable, MapKind};
use crate::machineconfig::yaml::{self, Style, Yaml};

/// One loaded patch. `Debug` shows the shape only (patch values may be key material).
#[derive(Clone, PartialEq)]
pub enum Patch {
    /// A partial machine config (one or more documents).
    Strategic(Vec<Yaml>),
    /// RFC 6902 operations.
    Json6902(Vec<Value>),
}

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Patch::Strategic(docs) => f.debug_tuple("Strategic").field(docs).finish(),
            Patch::Json6902(ops) => write!(f, "Json6902(<{} operations>)", ops.len()),
        }
    }
}

/// Patch failures, with Talos' texts where the reference gives them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("{0}")]
    Load(String),
    #[error("JSON6902 patches are not supported for multi-document machine configuration")]
    JsonOnMultiDoc,
    #[error("failure applying rfc6902 patches to talos machine config: {0}")]
    Json6902(String),
    #[error("patch delete: path '{path}' in document '{document}': {reason}")]
    Delete {
        path: String,
        document: String,
        reason: String,
    },
    #[error("can't delete the root of the legacy document")]
    DeleteRoot,
    #[error("cannot delete an inner key in '{0}'")]
    InnerDelete(String),
    #[error("duplicate document: {0} is not allowed")]
    Duplicate(String),
}

/// Resolves a patch argument (strategic-merge.md §4): `@path`, a bare file name (no newline,
/// no space, not starting with `[` or `{`), or inline text. Errors name the file.
pub fn read_patch_argument(arg: &str) -> Result<String, PatchError> {
    let path = if let Some(path) = arg.strip_prefix('@') {
        Some(path)
    } else if !arg.contains('\n')
        && !arg.contains(' ')
        && !arg.starts_with('[')
        && !arg.starts_with('{')
    {
        Some(arg)
    } else {
        None
    };
    match path {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| PatchError::Load(crate::go_io_error("open", path, &e))),
        None => Ok(arg.to_string()),
    }
}

/// Identity of a document for matching: (apiVersion, kind, name).
fn document_id(doc: &Yaml) -> (String, String, String) {
    let text = |k: &str| {
        doc.get(k)
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if crate::machineconfig::is_v1alpha1_document(doc) {
        return (String::new(), "v1alpha1".to_string(), String::new());
    }
    (text("apiVersion"), text("kind"), text("name"))
}

fn document_label(doc: &Yaml) -> String {
    let (api, kind, _) = document_id(doc);
    format!("{api}/{kind}")
}

/// Strict check of a strategic patch document (the config loader's job).
fn check_strategic_document(doc: &Yaml) -> Result<(), String> {
    if doc.as_map().is_none() {
        return Err("missing kind".to_string());
    }
    let kind = if crate::machineconfig::is_v1alpha1_document(doc) {
        "v1alpha1".to_string()
    } else if let Some(kind) = doc.get("kind").and_then(Yaml::as_str) {
        if doc.get("apiVersion").is_none() {
            return Err("missing apiVersion".to_string());
        }
        kind.to_string()
    } else {
        return Err("missing kind".to_string());
    };
    if !FieldTable::get().knows_kind(&kind) {
        let api = doc
            .get("apiVersion")
            .and_then(Yaml::as_str)
            .unwrap_or_default();
        // The upstream registry's error (`"Kind" "version": not registered`).
        return Err(format!("\"{kind}\" \"{api}\": not registered"));
    }
    if let Some(unknown) = schema::unknown_keys(doc, &kind) {
        return Err(format!(
            "unknown keys found during decoding:\n{}",
            yaml::emit(&unknown)
        ));
    }
    if let Some(first) = schema::type_errors(doc, &kind).into_iter().next() {
        return Err(first);
    }
    Ok(())
}

/// Detects the format of a patch text (strategic-merge.md §2).
pub fn parse_patch(text: &str) -> Result<Patch, PatchError> {
    let strategic_error = match yaml::parse_documents(text) {
        Ok(docs) if !docs.is_empty() => {
            let mut seen = Vec::new();
            let mut result = Ok(());
            for doc in &docs {
                if let Err(e) = check_strategic_document(doc) {
                    result = Err(e);
                    break;
                }
                let id = document_id(doc);
                if seen.contains(&id) {
                    result = Err(PatchError::Duplicate(document_label(doc)).to_string());
                    break;
                }
                seen.push(id);
            }
            match result {
                Ok(()) => return Ok(Patch::Strategic(docs)),
                Err(e) => e,
            }
        }
        Ok(_) => "missing kind".to_string(),
        Err(e) => e.to_string(),
    };
    let json_error = match serde_json::from_str::<Vec<Value>>(text) {
        Ok(ops) => return Ok(Patch::Json6902(ops)),
        Err(e) => e.to_string(),
    };
    match yaml::parse_one(text) {
        Ok(Yaml::Null) => return Ok(Patch::Json6902(Vec::new())),
        Ok(Yaml::Seq(items)) if items.iter().all(|i| i.as_map().is_some()) => {
            return Ok(Patch::Json6902(items.iter().map(Yaml::to_json).collect()));
        }
        _ => {}
    }
    if text.trim_start().starts_with('[') {
        Err(PatchError::Load(json_error))
    } else {
        Err(PatchError::Load(strategic_error))
    }
}

/// Reads and parses every patch argument, in order.
pub fn load_patches(args: &[String]) -> Result<Vec<Patch>, PatchError> {
    args.iter()
        .map(|arg| read_patch_argument(arg).and_then(|text| parse_patch(&text)))
        .collect()
}

/// A config after patching.
#[derive(Clone, Debug, PartialEq)]
pub struct Patched {
    pub docs: Vec<Yaml>,
    /// Whether the last applied patch was a JSON6902 one (decides the output encoding).
    pub last_was_json: bool,
}

impl Patched {
    /// Bytes as `machineconfig patch` writes them: Talos field order and 4-space YAML after a
    /// strategic merge; sorted 2-space YAML (ghodss/yaml) after a JSON patch.
    pub fn render(&self) -> String {
        if self.last_was_json {
            self.docs
                .iter()
                .map(|d| yaml::emit_with(d, Style::GoYamlV2))
                .collect::<Vec<_>>()
                .join("---\n")
        } else {
            self.render_canonical()
        }
    }

    /// Talos field order, 4-space YAML (what `gen config` writes after any patch).
    pub fn render_canonical(&self) -> String {
        let mut docs = self.docs.clone();
        for doc in &mut docs {
            let kind = schema::document_kind(doc);
            schema::canonicalize(doc, &kind);
        }
        yaml::emit_documents(&docs)
    }
}

/// Applies patches in order to the documents of a config.
pub fn apply_patches(docs: Vec<Yaml>, patches: &[Patch]) -> Result<Patched, PatchError> {
    let mut state = Patched {
        docs,
        last_was_json: false,
    };
    for patch in patches {
        match patch {
            Patch::Strategic(patch_docs) => {
                strategic_merge(&mut state.docs, patch_docs)?;
                state.last_was_json = false;
            }
            Patch::Json6902(ops) => {
                if state.docs.len() > 1 {
                    return Err(PatchError::JsonOnMultiDoc);
                }
                let mut value = state.docs.first().map(Yaml::to_json).unwrap_or(Value::Null);
                for op in ops {
                    apply_json_op(&mut value, op).map_err(PatchError::Json6902)?;
                }
                state.docs = vec![Yaml::from_json(&value)];
                state.last_was_json = true;
            }
        }
    }
    Ok(state)
}

fn is_delete_marker(node: &Yaml) -> bool {
    node.get("$patch").and_then(Yaml::as_str) == Some("delete")
}

/// Merges strategic patch documents into the config documents.
pub fn strategic_merge(base: &mut Vec<Yaml>, patch_docs: &[Yaml]) -> Result<(), PatchError> {
    for patch_doc in patch_docs {
        let id = document_id(patch_doc);
        let position = base.iter().position(|d| document_id(d) == id);
        let whole_document_delete = is_delete_marker(patch_doc)
            && patch_doc
                .as_map()
                .unwrap_or_default()
                .iter()
                .all(|(k, _)| ["apiVersion", "kind", "name", "$patch"].contains(&k.as_str()));
        if whole_document_delete {
            if id.1 == "v1alpha1" {
                return Err(PatchError::DeleteRoot);
            }
            match position {
                Some(i) => {
                    base.remove(i);
                }
                None => {
                    return Err(PatchError::Delete {
                        path: String::new(),
                        document: document_label(patch_doc),
                        reason: "document not found".to_string(),
                    });
                }
            }
            continue;
        }
        let mut patch = patch_doc.clone();
        match position {
            Some(i) => {
                let label = document_label(&base[i]);
                apply_deletes(&mut base[i], &mut patch, "", &label, false)?;
                let kind = schema::document_kind(&base[i]);
                merge_node(&mut base[i], &patch, &kind, "", "");
            }
            None => {
                let label = document_label(&patch);
                let mut empty = Yaml::map();
                apply_deletes(&mut empty, &mut patch, "", &label, false)?;
                base.push(patch);
            }
        }
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn contains_delete_marker(node: &Yaml) -> bool {
    match node {
        Yaml::Map(entries) => {
            is_delete_marker(node) || entries.iter().any(|(_, v)| contains_delete_marker(v))
        }
        Yaml::Seq(items) => items.iter().any(contains_delete_marker),
        _ => false,
    }
}

fn lookup_failed(path: &str, document: &str) -> PatchError {
    PatchError::Delete {
        path: path.to_string(),
        document: document.to_string(),
        reason: format!("failed to delete path '{path}': lookup failed"),
    }
}

/// Executes `$patch: delete` markers of `patch` against `base` and removes them from `patch`.
fn apply_deletes(
    base: &mut Yaml,
    patch: &mut Yaml,
    path: &str,
    document: &str,
    below_list: bool,
) -> Result<(), PatchError> {
    let Yaml::Map(entries) = patch else {
        return Ok(());
    };
    let mut kept = Vec::new();
    for (key, mut value) in std::mem::take(entries) {
        if key == "$patch" {
            continue;
        }
        let full = join(path, &key);
        if value.as_map().is_some() && is_delete_marker(&value) {
            if below_list {
                return Err(PatchError::InnerDelete(full));
            }
            if base.remove(&key).is_none() {
                return Err(lookup_failed(&full, document));
            }
            continue;
        }
        match &mut value {
            Yaml::Map(_) => {
                let mut missing = Yaml::map();
                let base_child = base.get_mut(&key).unwrap_or(&mut missing);
                apply_deletes(base_child, &mut value, &full, document, below_list)?;
            }
            Yaml::Seq(items) => {
                let mut remaining = Vec::new();
                for item in std::mem::take(items) {
                    if item.as_map().is_some() && is_delete_marker(&item) {
                        if below_list {
                            return Err(PatchError::InnerDelete(full));
                        }
                        let selector = item
                            .as_map()
                            .unwrap_or_default()
                            .iter()
                            .find(|(k, _)| k != "$patch")
                            .cloned();
                        let Some((sel_key, sel_value)) = selector else {
                            return Err(lookup_failed(&full, document));
                        };
                        let Some(Yaml::Seq(base_items)) = base.get_mut(&key) else {
                            return Err(lookup_failed(&full, document));
                        };
                        let before = base_items.len();
                        base_items.retain(|b| b.get(&sel_key) != Some(&sel_value));
                        if base_items.len() == before {
                            return Err(lookup_failed(&full, document));
                        }
                    } else {
                        if contains_delete_marker(&item) {
                            return Err(PatchError::InnerDelete(full));
                        }
                        remaining.push(item);
                    }
                }
                *items = remaining;
            }
            _ => {}
        }
        kept.push((key, value));
    }
    *entries = kept;
    Ok(())
}

fn is_zero_scalar(node: &Yaml) -> bool {
    matches!(node, Yaml::Str(s) if s.is_empty())
        || matches!(node, Yaml::Int(0))
        || matches!(node, Yaml::Null)
}

/// Lists merged element-wise by a key instead of appended (strategic-merge.md §3).
fn list_merge_key(kind: &str, schema_path: &str) -> Option<&'static str> {
    if kind != "v1alpha1" {
        return None;
    }
    match schema_path {
        "machine.network.interfaces" => Some("interface"),
        "machine.network.interfaces[].vlans" => Some("vlanId"),
        "cluster.apiServer.admissionControl" => Some("name"),
        _ => None,
    }
}

fn replaced_wholesale(kind: &str, schema_path: &str) -> bool {
    kind == "v1alpha1"
        && matches!(
            schema_path,
            "cluster.network.podSubnets"
                | "cluster.network.serviceSubnets"
                | "cluster.apiServer.auditPolicy"
        )
}

fn merge_node(base: &mut Yaml, patch: &Yaml, kind: &str, schema_path: &str, path: &str) {
    let table = FieldTable::get();
    match (&mut *base, patch) {
        (Yaml::Map(_), Yaml::Map(patch_entries)) => {
            let map_kind = table.map_kind(kind, schema_path);
            for (key, patch_value) in patch_entries {
                let child_schema = table
                    .child(kind, schema_path, key)
                    .unwrap_or_else(|| join(schema_path, key));
                let child_path = join(path, key);
                if map_kind == MapKind::Struct && is_zero_scalar(patch_value) {
                    continue;
                }
                match base.get_mut(key) {
                    Some(base_value) => {
                        if replaced_wholesale(kind, &child_schema) {
                            *base_value = patch_value.clone();
                        } else {
                            merge_node(base_value, patch_value, kind, &child_schema, &child_path);
                        }
                    }
                    None => base.insert(key, patch_value.clone()),
                }
            }
        }
        (Yaml::Seq(base_items), Yaml::Seq(patch_items)) => {
            if replaced_wholesale(kind, schema_path) {
                *base_items = patch_items.clone();
                return;
            }
            let item_schema = format!("{schema_path}[]");
            match list_merge_key(kind, schema_path) {
                Some(merge_key) => {
                    for item in patch_items {
                        let target = base_items
                            .iter_mut()
                            .find(|b| list_items_match(b, item, merge_key, schema_path));
                        match target {
                            Some(target) => merge_node(target, item, kind, &item_schema, path),
                            None => base_items.push(item.clone()),
                        }
                    }
                }
                None => base_items.extend(patch_items.iter().cloned()),
            }
        }
        (base_slot, patch_value) => *base_slot = patch_value.clone(),
    }
}

fn list_items_match(base: &Yaml, patch: &Yaml, merge_key: &str, schema_path: &str) -> bool {
    match patch.get(merge_key) {
        Some(value) => base.get(merge_key) == Some(value),
        None if schema_path == "machine.network.interfaces" => {
            patch.get("deviceSelector").is_some()
                && base.get("deviceSelector") == patch.get("deviceSelector")
        }
        None => false,
    }
}

// ---- RFC 6902 ----

fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_at<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn get_at_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |node, token| match node {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

fn missing(op: &str, pointer: &str) -> String {
    format!("{op} operation does not apply: doc is missing path: \"{pointer}\": missing value")
}

fn add_at(doc: &mut Value, pointer: &str, value: Value, op: &str) -> Result<(), String> {
    let tokens = pointer_tokens(pointer)?;
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent = get_at_mut(doc, parent_tokens).ok_or_else(|| missing(op, pointer))?;
    match parent {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            let index: usize = last
                .parse()
                .map_err(|_| format!("{op} operation does not apply: invalid index {last:?}"))?;
            if index > items.len() {
                return Err(format!(
                    "{op} operation does not apply: index out of bounds: {index}"
                ));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing(op, pointer)),
    }
}

fn remove_at(doc: &mut Value, pointer: &str, op: &str) -> Result<Value, String> {
    let tokens = pointer_tokens(pointer)?;
    let (last, parent_tokens) = tokens.split_last().ok_or_else(|| missing(op, pointer))?;
    let parent = get_at_mut(doc, parent_tokens).ok_or_else(|| missing(op, pointer))?;
    match parent {
        Value::Object(map) => map.remove(last).ok_or_else(|| missing(op, pointer)),
        Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| missing(op, pointer))?;
            if index < items.len() {
                Ok(items.remove(index))
            } else {
                Err(missing(op, pointer))
            }
        }
        _ => Err(missing(op, pointer)),
    }
}

fn apply_json_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let field = |k: &str| op.get(k).and_then(Value::as_str);
    let name = field("op").ok_or("operation is missing \"op\"")?;
    let path = field("path").ok_or_else(|| format!("{name} operation is missing \"path\""))?;
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| format!("{name} operation is missing \"value\""))
    };
    match name {
        "add" => add_at(doc, path, value()?, "add"),
        "remove" => remove_at(doc, path, "remove").map(|_| ()),
        "replace" => {
            let tokens = pointer_tokens(path)?;
            let slot = get_at_mut(doc, &tokens).ok_or_else(|| {
                format!(
                    "replace operation does not apply: doc is missing key: {path}: missing value"
                )
            })?;
            *slot = value()?;
            Ok(())
        }
        "move" => {
            let from = field("from").ok_or("move operation is missing \"from\"")?;
            let moved = remove_at(doc, from, "move")?;
            add_at(doc, path, moved, "move")
        }
        "copy" => {
            let from = field("from").ok_or("copy operation is missing \"from\"")?;
            let copied = get_at(doc, &pointer_tokens(from)?)
                .cloned()
                .ok_or_else(|| missing("copy", from))?;
            add_at(doc, path, copied, "copy")
        }
        "test" => {
            let actual = get_at(doc, &pointer_tokens(path)?);
            if actual == Some(&value()?) {
                Ok(())
            } else {
                Err(format!("testing value {path} failed: test failed"))
            }
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP_V111: &str = include_str!("testdata/controlplane-contract-v1.11.yaml");
    const CP_V114: &str = include_str!("testdata/controlplane-contract-v1.14-multidoc.yaml");

    fn docs(text: &str) -> Vec<Yaml> {
        yaml::parse_documents(text).unwrap()
    }

    fn patch(text: &str) -> Patch {
        parse_patch(text).unwrap()
    }

    #[test]
    fn detects_patch_formats() {
        assert!(matches!(
            patch("machine:\n  network:\n    hostname: a\n"),
            Patch::Strategic(_)
        ));
        assert!(matches!(
            patch(r#"[{"op": "add", "path": "/machine/network/hostname", "value": "a"}]"#),
            Patch::Json6902(_)
        ));
        assert!(matches!(
            patch("- op: remove\n  path: /debug\n"),
            Patch::Json6902(_)
        ));
        assert_eq!(patch(""), Patch::Json6902(vec![]));
        assert_eq!(
            parse_patch("apiVersion: v1alpha1\nkind: NopeConfig\n")
                .unwrap_err()
                .to_string(),
            "\"NopeConfig\" \"v1alpha1\": not registered"
        );
        let err = parse_patch("machine:\n  netwrk: {}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown keys found during decoding:\nmachine:\n    netwrk: {}\n"
        );
    }

    #[test]
    fn merges_interfaces_by_name_and_appends_other_lists() {
        let base_text = CP_V111.replace(
            "    network: {}\n",
            "    network:\n        interfaces:\n            - interface: eth0\n              addresses:\n                  - 192.168.10.3/24\n",
        );
        let p = patch(
            "machine:\n  certSANs: [a.example]\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.5/24]\n        vip:\n          ip: 192.168.10.50\n      - interface: eth1\n        dhcp: true\n",
        );
        let out = apply_patches(docs(&base_text), &[p]).unwrap();
        let main = &out.docs[0];
        let interfaces = main
            .path("machine.network.interfaces")
            .unwrap()
            .as_seq()
            .unwrap();
        assert_eq!(interfaces.len(), 2);
        let eth0_addresses: Vec<&str> = interfaces[0]
            .get("addresses")
            .unwrap()
            .as_seq()
            .unwrap()
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert_eq!(eth0_addresses, ["192.168.10.3/24", "10.0.0.5/24"]);
        assert_eq!(
            interfaces[0].path("vip.ip").and_then(Yaml::as_str),
            Some("192.168.10.50")
        );
        assert_eq!(interfaces[1].get("dhcp"), Some(&Yaml::Bool(true)));
        assert_eq!(
            main.path("machine.certSANs")
                .unwrap()
                .as_seq()
                .unwrap()
                .len(),
            1
        );
        let rendered = out.render();
        assert!(rendered.contains(
            "    network:\n        interfaces:\n            - interface: eth0\n              addresses:\n                - 192.168.10.3/24\n                - 10.0.0.5/24\n              vip:\n                ip: 192.168.10.50\n"
        ), "{rendered}");
    }

    #[test]
    fn replaces_subnets_and_ignores_zero_values() {
        let p = patch("cluster:\n  network:\n    podSubnets: [10.1.0.0/16]\n    dnsDomain: \"\"\n");
        let out = apply_patches(docs(CP_V111), &[p]).unwrap();
        let net = out.docs[0].path("cluster.network").unwrap();
        assert_eq!(
            net.get("podSubnets"),
            Some(&Yaml::Seq(vec![Yaml::str("10.1.0.0/16")]))
        );
        assert_eq!(net.get("dnsDomain"), Some(&Yaml::str("cluster.local")));
    }

    #[test]
    fn deletes_with_patch_delete_markers() {
        let with_hostname =
            CP_V111.replace("    network: {}\n", "    network:\n        hostname: cp1\n");
        let p = patch("machine:\n  network:\n    hostname:\n      $patch: delete\n");
        let out = apply_patches(docs(&with_hostname), std::slice::from_ref(&p)).unwrap();
        assert!(out.docs[0].path("machine.network.hostname").is_none());
        let err = apply_patches(docs(CP_V111), &[p]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "patch delete: path 'machine.network.hostname' in document '/v1alpha1': failed to delete path 'machine.network.hostname': lookup failed"
        );
        let doc_delete = patch("apiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n");
        let out = apply_patches(docs(CP_V114), &[doc_delete]).unwrap();
        assert!(
            !out.docs
                .iter()
                .any(|d| d.get("kind") == Some(&Yaml::str("HostnameConfig")))
        );
    }

    #[test]
    fn strategic_patch_merges_and_appends_typed_documents() {
        let p = patch(
            "apiVersion: v1alpha1\nkind: HostnameConfig\nauto: off\n---\napiVersion: v1alpha1\nkind: Layer2VIPConfig\nname: 10.5.0.10\nlink: eth0\n",
        );
        let n = docs(CP_V114).len();
        let out = apply_patches(docs(CP_V114), &[p]).unwrap();
        assert_eq!(out.docs.len(), n + 1);
        let hostname = out
            .docs
            .iter()
            .find(|d| d.get("kind") == Some(&Yaml::str("HostnameConfig")))
            .unwrap();
        assert_eq!(hostname.get("auto"), Some(&Yaml::str("off")));
    }

    #[test]
    fn json6902_works_on_single_documents_only() {
        let p = patch(r#"[{"op": "add", "path": "/machine/network/hostname", "value": "cp1"}]"#);
        let out = apply_patches(docs(CP_V111), std::slice::from_ref(&p)).unwrap();
        assert!(out.last_was_json);
        let rendered = out.render();
        assert!(
            rendered.starts_with("cluster:\n  aggregatorCA:\n"),
            "{rendered}"
        );
        assert!(rendered.contains("  network:\n    hostname: cp1\n"));
        let err = apply_patches(docs(CP_V114), &[p]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JSON6902 patches are not supported for multi-document machine configuration"
        );
        let bad = patch(r#"[{"op": "replace", "path": "/machine/nope", "value": 1}]"#);
        let err = apply_patches(docs(CP_V111), &[bad]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failure applying rfc6902 patches to talos machine config: ")
        );
    }
}
