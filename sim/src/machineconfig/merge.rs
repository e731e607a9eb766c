//! Config patches as Talos applies them (strategic-merge.md): format detection, strategic merge
//! with Talos' Go merge rules (interfaces by name, vlans by id, zero values skipped, ...),
//! `$patch: delete` selectors, and RFC 6902 JSON patches, which only work on single-document
//! configs. Ported from pkg/machinery/config/configpatcher, config/merge and
//! configloader/internal/decoder@v1.14.0-rc.1; the Go field facts (omitempty, pointers,
//! `merge:"replace"`) come from go_fields.txt (tools/derive_go_fields.py).

use serde_json::Value;

use crate::machineconfig::schema::{self, FieldTable};
use crate::machineconfig::yaml::{self, Style, Yaml};

use go::GoTable;

/// One loaded patch. `Debug` shows the shape only (patch values may be key material).
#[derive(Clone, PartialEq)]
pub enum Patch {
    /// A partial machine config: delete selectors and documents to merge, in file order.
    Strategic(Vec<PatchDoc>),
    /// RFC 6902 operations.
    Json6902(Vec<Value>),
}

/// One element of a strategic patch, as the upstream decoder yields them: the `$patch:
/// delete` selectors of a document first, then what remains of the document.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchDoc {
    Delete(Selector),
    Merge(Yaml),
}

/// A `$patch: delete` selector (upstream: configloader/internal/decoder/selector.go).
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    /// (apiVersion, kind, name) of the document it applies to; kind `v1alpha1` = legacy.
    pub id: (String, String, String),
    /// Keys from the document root; list items appear as `[i]`.
    pub path: Vec<String>,
    /// For list items: the first `key: value` of the item, which picks the item to remove.
    pub item: Option<(String, String)>,
}

impl std::fmt::Debug for Patch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Patch::Strategic(docs) => f.debug_tuple("Strategic").field(docs).finish(),
            Patch::Json6902(ops) => write!(f, "Json6902(<{} operations>)", ops.len()),
        }
    }
}

/// Patch failures, with Talos' texts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("{0}")]
    Load(String),
    #[error("JSON6902 patches are not supported for multi-document machine configuration")]
    JsonOnMultiDoc,
    #[error("failure applying rfc6902 patches to talos machine config: {0}")]
    Json6902(String),
    /// A selector that failed on its document (upstream `selector.ApplyTo`).
    #[error("{0}")]
    Delete(String),
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
    if crate::machineconfig::is_v1alpha1_document(doc) || doc.get("kind").is_none() {
        return (String::new(), "v1alpha1".to_string(), String::new());
    }
    (text("apiVersion"), text("kind"), text("name"))
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
    if !FieldTable::get().knows_kind(&kind) && !GoTable::get().knows_kind(&kind) {
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

// ---- `$patch: delete` extraction (upstream: decoder/delete.go) ----

fn is_delete_entry(key: &str, value: &Yaml) -> bool {
    key == "$patch" && value.as_str() == Some("delete")
}

/// The text of a scalar as the YAML node holds it (`yaml.Node.Value`); "" for collections.
fn scalar_text(node: &Yaml) -> String {
    match node {
        Yaml::Str(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(i) => i.to_string(),
        Yaml::Float(x) => x.to_string(),
        Yaml::Null => "null".to_string(),
        Yaml::Seq(_) | Yaml::Map(_) => String::new(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Parent {
    Document,
    Map,
    Seq,
}

struct Extractor<'a> {
    root: &'a Yaml,
    found: Vec<Selector>,
}

impl Extractor<'_> {
    fn selector(
        &self,
        path: &[String],
        item: Option<(String, String)>,
    ) -> Result<Selector, String> {
        let find = |key: &str| self.root.get(key).map(scalar_text);
        let required = path.is_empty();
        let api = find("apiVersion");
        let kind = find("kind");
        if required {
            if api.is_none() {
                return Err(
                    "missing apiVersion in document for which $patch: delete is used".into(),
                );
            }
            if kind.is_none() {
                return Err("missing kind in document for which $patch: delete is used".into());
            }
        }
        let (api, kind) = (api.unwrap_or_default(), kind.unwrap_or_default());
        let kind = match (api.is_empty(), kind.is_empty()) {
            (true, true) => "v1alpha1".to_string(),
            (false, false) => kind,
            _ => {
                return Err(format!(
                    "kind and apiVersion must be both set for path {}",
                    path.join(".")
                ));
            }
        };
        Ok(Selector {
            id: (api, kind, find("name").unwrap_or_default()),
            path: path.to_vec(),
            item,
        })
    }

    /// Returns whether `node` is to be removed from its parent.
    fn process(
        &mut self,
        parent: Parent,
        node: &mut Yaml,
        path: &mut Vec<String>,
    ) -> Result<bool, String> {
        match node {
            Yaml::Map(entries) => {
                let mut i = 0;
                while i < entries.len() {
                    if is_delete_entry(&entries[i].0, &entries[i].1) {
                        let selector = if parent == Parent::Seq {
                            let item = entries
                                .iter()
                                .find(|(k, v)| !is_delete_entry(k, v))
                                .map(|(k, v)| (k.clone(), scalar_text(v)))
                                .ok_or_else(|| {
                                    format!(
                                        "no key:val found in sequence node for path {}",
                                        path.join(".")
                                    )
                                })?;
                            self.selector(path, Some(item))?
                        } else {
                            if path.iter().any(|p| p.starts_with('[')) {
                                return Err(format!(
                                    "cannot delete an inner key in '{}'",
                                    path.join(".")
                                ));
                            }
                            self.selector(path, None)?
                        };
                        self.found.push(selector);
                        return Ok(true);
                    }
                    path.push(entries[i].0.clone());
                    let delete = self.process(Parent::Map, &mut entries[i].1, path)?;
                    path.pop();
                    if delete {
                        entries.remove(i);
                        if entries.is_empty() {
                            return Ok(true);
                        }
                    } else {
                        i += 1;
                    }
                }
                Ok(false)
            }
            Yaml::Seq(items) => {
                let mut i = 0;
                while i < items.len() {
                    path.push(format!("[{i}]"));
                    let delete = self.process(Parent::Seq, &mut items[i], path)?;
                    path.pop();
                    if delete {
                        items.remove(i);
                        if items.is_empty() {
                            return Ok(true);
                        }
                    } else {
                        i += 1;
                    }
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

/// Whether what remains of a patch document holds nothing but `version`/`kind`/`name`.
fn is_empty_doc(doc: &Yaml) -> bool {
    match doc {
        Yaml::Map(entries) => entries.iter().all(|(k, v)| {
            !matches!(v, Yaml::Map(_) | Yaml::Seq(_))
                && ["version", "kind", "name"].contains(&k.as_str())
        }),
        _ => false,
    }
}

/// Splits one patch document into its delete selectors and the document left to merge.
fn split_patch_document(mut doc: Yaml) -> Result<Vec<PatchDoc>, String> {
    let root = doc.clone();
    let mut extractor = Extractor {
        root: &root,
        found: Vec::new(),
    };
    let whole = extractor.process(Parent::Document, &mut doc, &mut Vec::new())?;
    let mut out: Vec<PatchDoc> = extractor.found.into_iter().map(PatchDoc::Delete).collect();
    if !whole && !is_empty_doc(&doc) {
        out.push(PatchDoc::Merge(doc));
    }
    Ok(out)
}

/// Line numbers where each document of a multi-document text starts (for decoder errors).
fn document_lines(text: &str) -> Vec<usize> {
    let mut lines = vec![1];
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            lines.push(i + 2);
        }
    }
    if text.lines().next().is_some_and(|l| l == "---") {
        lines.remove(0);
    }
    lines
}

fn parse_strategic(text: &str) -> Result<Vec<PatchDoc>, String> {
    let docs = yaml::parse_documents(text).map_err(|e| e.to_string())?;
    if docs.is_empty() {
        return Err("config not found".to_string());
    }
    let lines = document_lines(text);
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.as_map().is_none() {
            return Err(format!(
                "expected a YAML document at line {}",
                lines.get(i).copied().unwrap_or(1)
            ));
        }
        let parts = split_patch_document(doc).map_err(|e| {
            format!(
                "error processing patch delete statements at line {}: {e}",
                lines.get(i).copied().unwrap_or(1)
            )
        })?;
        for part in &parts {
            if let PatchDoc::Merge(d) = part {
                check_strategic_document(d)?;
            }
        }
        out.extend(parts);
    }
    if out.is_empty() {
        return Err("config not found".to_string());
    }
    Ok(out)
}

/// Detects the format of a patch text (upstream: configpatcher/load.go `LoadPatch`).
pub fn parse_patch(text: &str) -> Result<Patch, PatchError> {
    let strategic_error = match parse_strategic(text) {
        Ok(docs) => return Ok(Patch::Strategic(docs)),
        Err(e) => e,
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

/// Reads and parses every patch argument, in order; consecutive JSON patches are joined into
/// one (upstream `LoadPatches`).
pub fn load_patches(args: &[String]) -> Result<Vec<Patch>, PatchError> {
    let mut out: Vec<Patch> = Vec::new();
    for arg in args {
        let patch = parse_patch(&read_patch_argument(arg)?)?;
        match (out.last_mut(), patch) {
            (Some(Patch::Json6902(previous)), Patch::Json6902(ops)) => previous.extend(ops),
            (_, patch) => out.push(patch),
        }
    }
    Ok(out)
}

/// A config after patching.
#[derive(Clone, Debug, PartialEq)]
pub struct Patched {
    pub docs: Vec<Yaml>,
    /// Whether the last applied patch was a JSON6902 one (decides the output encoding).
    pub last_was_json: bool,
}

impl Patched {
    /// Bytes as `machineconfig patch` writes them (upstream `configOrBytes.Bytes`): after a
    /// strategic merge the documents are Go structs encoded by go-yaml v4 (field order, zero
    /// values of non-`omitempty` fields, v1alpha1 first); after a JSON patch, ghodss/yaml's
    /// sorted 2-space YAML.
    pub fn render(&self) -> String {
        if self.last_was_json {
            self.docs
                .iter()
                .map(|d| yaml::emit_with(d, Style::GoYamlV2))
                .collect::<Vec<_>>()
                .join("---\n")
        } else {
            let mut docs = self.docs.clone();
            for doc in &mut docs {
                let kind = go_kind_of(doc);
                go::roundtrip(doc, &kind);
            }
            // container.encodeToBuf: the v1alpha1 document first, then the others in order.
            docs.sort_by_key(|d| usize::from(go_kind_of(d) != "v1alpha1"));
            Patched {
                docs,
                last_was_json: false,
            }
            .render_canonical()
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

fn go_kind_of(doc: &Yaml) -> String {
    document_id(doc).1
}

/// Applies patches in order to the documents of a config (upstream `configpatcher.Apply`).
pub fn apply_patches(docs: Vec<Yaml>, patches: &[Patch]) -> Result<Patched, PatchError> {
    let mut state = Patched {
        docs,
        last_was_json: false,
    };
    // Whether the config has been decoded into Go structs (the input starts as bytes).
    let mut decoded = false;
    for patch in patches {
        match patch {
            Patch::Strategic(patch_docs) => {
                strategic_merge(&mut state.docs, patch_docs)?;
                state.last_was_json = false;
                decoded = true;
            }
            Patch::Json6902(ops) => {
                if state.docs.len() != 1 {
                    return Err(PatchError::JsonOnMultiDoc);
                }
                if decoded && !state.last_was_json {
                    // The JSON patch works on the bytes of the re-encoded config.
                    let kind = go_kind_of(&state.docs[0]);
                    go::roundtrip(&mut state.docs[0], &kind);
                }
                let mut value = state.docs[0].to_json();
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

/// Merges strategic patch documents into the config documents (upstream `StrategicMerge`):
/// documents match by (apiVersion, kind, name); unmatched documents are appended, unmatched
/// delete selectors are skipped.
pub fn strategic_merge(base: &mut Vec<Yaml>, patch_docs: &[PatchDoc]) -> Result<(), PatchError> {
    for doc in base.iter_mut() {
        let kind = go_kind_of(doc);
        go::decode(doc, &kind);
    }
    for patch_doc in patch_docs {
        match patch_doc {
            PatchDoc::Delete(selector) => {
                let Some(i) = base.iter().position(|d| document_id(d) == selector.id) else {
                    continue;
                };
                if apply_selector(&mut base[i], selector)? {
                    base.remove(i);
                }
            }
            PatchDoc::Merge(patch) => {
                let id = document_id(patch);
                let mut patch = patch.clone();
                go::decode(&mut patch, &id.1);
                match base.iter().position(|d| document_id(d) == id) {
                    Some(i) => go::merge(&mut base[i], &patch, &id.1, "", false, false),
                    None => base.push(patch),
                }
            }
        }
    }
    Ok(())
}

/// Runs a selector on its document; true when the whole document is to be removed.
fn apply_selector(doc: &mut Yaml, selector: &Selector) -> Result<bool, PatchError> {
    let (api, kind, name) = &selector.id;
    let path = selector.path.join(".");
    if selector.path.is_empty() {
        if kind == "v1alpha1" {
            return Err(PatchError::Delete(format!(
                "patch delete: path '' in document '{api}/{kind}': can't delete the root of the legacy document"
            )));
        }
        return Ok(true);
    }
    let item = selector
        .item
        .as_ref()
        .map(|(k, v)| (k.as_str(), v.as_str()));
    match go::delete_path(doc, kind, "", &selector.path, item) {
        Ok(()) => Ok(false),
        Err(reason) if name.is_empty() => Err(PatchError::Delete(format!(
            "patch delete: path '{path}' in document '{api}/{kind}': failed to delete path '{path}': {reason}"
        ))),
        Err(reason) => Err(PatchError::Delete(format!(
            "named patch delete: document {api}/{kind}: failed to delete path '{path}': {reason}"
        ))),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The Go side of the config documents: which fields exist with which Go type, how go-yaml
/// decodes and encodes them, and how `merge.Merge` combines them.
mod go {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use super::join;
    use crate::machineconfig::yaml::Yaml;

    /// The Go kind of a field (go_fields.txt).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum GoKind {
        Str,
        Int,
        Float,
        Bool,
        Slice,
        Map,
        Struct,
        /// meta.Unstructured: free-form content.
        Any,
        /// A custom-marshalled scalar and the encoding of its zero value, when known.
        Text(Option<&'static str>),
    }

    #[derive(Clone, Copy, Debug)]
    pub struct Field {
        pub omitempty: bool,
        pub ptr: bool,
        pub replace: bool,
        pub kind: GoKind,
    }

    pub struct GoTable {
        fields: HashMap<(String, String), Field>,
        children: HashMap<(String, String), Vec<(String, String)>>,
    }

    const ROOT: Field = Field {
        omitempty: false,
        ptr: true,
        replace: false,
        kind: GoKind::Struct,
    };

    impl GoTable {
        fn load() -> GoTable {
            let mut fields = HashMap::new();
            let mut children: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
            for line in include_str!("go_fields.txt").lines() {
                let mut parts = line.split(' ');
                let (Some(kind), Some(path), Some(flags)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let path = if path == "." { "" } else { path };
                let mut field = Field {
                    omitempty: false,
                    ptr: false,
                    replace: false,
                    kind: GoKind::Any,
                };
                for flag in flags.split(',') {
                    match flag {
                        "omitempty" => field.omitempty = true,
                        "ptr" => field.ptr = true,
                        "replace" => field.replace = true,
                        "str" => field.kind = GoKind::Str,
                        "int" => field.kind = GoKind::Int,
                        "float" => field.kind = GoKind::Float,
                        "bool" => field.kind = GoKind::Bool,
                        "slice" => field.kind = GoKind::Slice,
                        "map" => field.kind = GoKind::Map,
                        "struct" => field.kind = GoKind::Struct,
                        "any" => field.kind = GoKind::Any,
                        "text:\"\"" => field.kind = GoKind::Text(Some("")),
                        "text:\"0s\"" => field.kind = GoKind::Text(Some("0s")),
                        _ => field.kind = GoKind::Text(None),
                    }
                }
                if !path.is_empty() && !path.ends_with("[]") && !path.ends_with("{}") {
                    let (parent, key) = match path.rsplit_once('.') {
                        Some((parent, key)) => (parent.to_string(), key.to_string()),
                        None => (String::new(), path.to_string()),
                    };
                    let list = children.entry((kind.to_string(), parent)).or_default();
                    if !list.iter().any(|(k, _)| *k == key) {
                        list.push((key, path.to_string()));
                    }
                }
                fields.insert((kind.to_string(), path.to_string()), field);
            }
            GoTable { fields, children }
        }

        pub fn get() -> &'static GoTable {
            static TABLE: OnceLock<GoTable> = OnceLock::new();
            TABLE.get_or_init(GoTable::load)
        }

        pub fn knows_kind(&self, kind: &str) -> bool {
            self.fields.contains_key(&(kind.to_string(), String::new()))
        }

        pub fn field(&self, kind: &str, path: &str) -> Option<Field> {
            if path.is_empty() {
                return self.knows_kind(kind).then_some(ROOT);
            }
            self.fields
                .get(&(kind.to_string(), path.to_string()))
                .copied()
        }

        /// Struct fields of the struct at `path`, in declaration order.
        pub fn struct_fields(&self, kind: &str, path: &str) -> &[(String, String)] {
            self.children
                .get(&(kind.to_string(), path.to_string()))
                .map_or(&[], Vec::as_slice)
        }

        /// Path of child `key` of the struct or map at `path`.
        pub fn child(&self, kind: &str, path: &str, key: &str) -> Option<String> {
            match self.field(kind, path)?.kind {
                GoKind::Struct => {
                    let child = join(path, key);
                    self.fields
                        .contains_key(&(kind.to_string(), child.clone()))
                        .then_some(child)
                }
                GoKind::Map => Some(format!("{path}{{}}")),
                _ => None,
            }
        }
    }

    /// What go-yaml decoding does beyond structure (custom unmarshalers): inline manifests
    /// lose their leading blank lines (upstream: v1alpha1_types.go `ClusterInlineManifests`).
    pub fn decode(doc: &mut Yaml, kind: &str) {
        if kind != "v1alpha1" {
            return;
        }
        let Some(Yaml::Seq(items)) = doc
            .get_mut("cluster")
            .and_then(|c| c.get_mut("inlineManifests"))
        else {
            return;
        };
        for item in items {
            if let Some(Yaml::Str(contents)) = item.get_mut("contents") {
                *contents = contents
                    .trim_start_matches(['\t', '\n', '\u{b}', '\u{c}', '\r'])
                    .to_string();
            }
        }
    }

    /// go-yaml `isZero` of a decoded value.
    pub fn is_zero(table: &GoTable, node: &Yaml, kind: &str, path: &str, field: Field) -> bool {
        if matches!(node, Yaml::Null) {
            return true;
        }
        if field.ptr {
            return false;
        }
        match field.kind {
            GoKind::Str => matches!(node, Yaml::Str(s) if s.is_empty()),
            GoKind::Int => matches!(node, Yaml::Int(0)),
            GoKind::Float => {
                matches!(node, Yaml::Int(0)) || matches!(node, Yaml::Float(x) if *x == 0.0)
            }
            GoKind::Bool => matches!(node, Yaml::Bool(false)),
            GoKind::Slice => matches!(node, Yaml::Seq(items) if items.is_empty()),
            GoKind::Map | GoKind::Any => matches!(node, Yaml::Map(entries) if entries.is_empty()),
            GoKind::Struct => match node {
                Yaml::Map(entries) => entries.iter().all(|(key, value)| {
                    let Some(child) = table.child(kind, path, key) else {
                        return false;
                    };
                    let Some(f) = table.field(kind, &child) else {
                        return false;
                    };
                    is_zero(table, value, kind, &child, f)
                }),
                _ => false,
            },
            GoKind::Text(Some("")) => matches!(node, Yaml::Str(s) if s.is_empty()),
            GoKind::Text(_) => false,
        }
    }

    /// How go-yaml encodes the zero value of a field; None when unknown.
    fn zero_value(table: &GoTable, kind: &str, path: &str, field: Field) -> Option<Yaml> {
        if field.ptr {
            return Some(Yaml::Null);
        }
        Some(match field.kind {
            GoKind::Str => Yaml::str(""),
            GoKind::Int => Yaml::Int(0),
            GoKind::Float => Yaml::Float(0.0),
            GoKind::Bool => Yaml::Bool(false),
            GoKind::Slice => Yaml::Seq(Vec::new()),
            GoKind::Map | GoKind::Any => Yaml::map(),
            GoKind::Struct => {
                let mut node = Yaml::map();
                fill_struct(table, &mut node, kind, path);
                node
            }
            GoKind::Text(Some(z)) => Yaml::str(z),
            GoKind::Text(None) => return None,
        })
    }

    fn fill_struct(table: &GoTable, node: &mut Yaml, kind: &str, path: &str) {
        for (key, child) in table.struct_fields(kind, path) {
            let Some(f) = table.field(kind, child) else {
                continue;
            };
            if f.omitempty || node.get(key).is_some() {
                continue;
            }
            if let Some(zero) = zero_value(table, kind, child, f) {
                node.insert(key, zero);
            }
        }
    }

    /// Decodes into Go structs and encodes back, as go-yaml v4 does: nulls become zero values,
    /// `omitempty` zero values disappear, other zero values appear (`type: ""`, `certSANs:
    /// []`, `cluster: null`). Unknown kinds and free-form content are left as they are.
    pub fn roundtrip(doc: &mut Yaml, kind: &str) {
        let table = GoTable::get();
        if !table.knows_kind(kind) {
            return;
        }
        decode(doc, kind);
        roundtrip_at(table, doc, kind, "");
    }

    fn roundtrip_at(table: &GoTable, node: &mut Yaml, kind: &str, path: &str) {
        let Some(field) = table.field(kind, path) else {
            return;
        };
        match (field.kind, node) {
            (GoKind::Struct, node @ Yaml::Map(_)) => {
                if let Yaml::Map(entries) = node {
                    entries.retain_mut(|(key, value)| {
                        let Some(child) = table.child(kind, path, key) else {
                            return true;
                        };
                        let Some(f) = table.field(kind, &child) else {
                            return true;
                        };
                        if matches!(value, Yaml::Null) {
                            return false;
                        }
                        roundtrip_at(table, value, kind, &child);
                        !(f.omitempty && is_zero(table, value, kind, &child, f))
                    });
                }
                fill_struct(table, node, kind, path);
            }
            (GoKind::Slice, Yaml::Seq(items)) => {
                let item_path = format!("{path}[]");
                for item in items {
                    roundtrip_at(table, item, kind, &item_path);
                }
            }
            (GoKind::Map, Yaml::Map(entries)) => {
                let value_path = format!("{path}{{}}");
                for (_, value) in entries {
                    roundtrip_at(table, value, kind, &value_path);
                }
            }
            _ => {}
        }
    }

    /// Custom `Merge` methods: lists merged item-wise by a key (upstream: v1alpha1_types.go
    /// `NetworkDeviceList`, `VlanList`, `AdmissionPluginConfigList`; extensions
    /// `ConfigFileList`).
    fn list_merge_key(kind: &str, path: &str) -> Option<&'static str> {
        match (kind, path) {
            ("v1alpha1", "machine.network.interfaces") => Some("interface"),
            ("v1alpha1", "machine.network.interfaces[].vlans") => Some("vlanId"),
            ("v1alpha1", "cluster.apiServer.admissionControl") => Some("name"),
            ("ExtensionServiceConfig", "configFiles") => Some("mountPath"),
            _ => None,
        }
    }

    fn same_entries(a: &Yaml, b: &Yaml) -> bool {
        match (a, b) {
            (Yaml::Map(x), Yaml::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| b.get(k).is_some_and(|w| same_entries(v, w)))
            }
            _ => a == b,
        }
    }

    fn items_match(base: &Yaml, patch: &Yaml, key: &str) -> bool {
        if key == "interface" {
            let name = patch
                .get("interface")
                .and_then(Yaml::as_str)
                .unwrap_or_default();
            if !name.is_empty() {
                return base.get("interface").and_then(Yaml::as_str) == Some(name);
            }
            return match (patch.get("deviceSelector"), base.get("deviceSelector")) {
                (Some(p @ Yaml::Map(_)), Some(b @ Yaml::Map(_))) => same_entries(p, b),
                _ => false,
            };
        }
        let zero = if key == "vlanId" {
            Yaml::Int(0)
        } else {
            Yaml::str("")
        };
        base.get(key).unwrap_or(&zero) == patch.get(key).unwrap_or(&zero)
    }

    /// `merge.Merge(left, right)` on the values at `path` (upstream: config/merge/merge.go).
    pub fn merge(
        base: &mut Yaml,
        patch: &Yaml,
        kind: &str,
        path: &str,
        replace: bool,
        overwrite: bool,
    ) {
        let table = GoTable::get();
        let Some(field) = table.field(kind, path) else {
            merge_untyped(base, patch);
            return;
        };
        if let Some(key) = list_merge_key(kind, path) {
            let (Yaml::Seq(items), Yaml::Seq(patch_items)) = (&mut *base, patch) else {
                if !matches!(patch, Yaml::Null) {
                    *base = patch.clone();
                }
                return;
            };
            let item_path = format!("{path}[]");
            for item in patch_items {
                match items.iter_mut().find(|b| items_match(b, item, key)) {
                    Some(existing) => merge(existing, item, kind, &item_path, false, false),
                    None => items.push(item.clone()),
                }
            }
            return;
        }
        if matches!(patch, Yaml::Null) {
            // nil pointers, slices and maps, and zero values, leave the left side alone
            // (booleans aside, but a null boolean is a nil *bool or false).
            if field.kind == GoKind::Bool && !field.ptr {
                *base = Yaml::Bool(false);
            }
            return;
        }
        if matches!(base, Yaml::Null) {
            if field.ptr || matches!(field.kind, GoKind::Slice | GoKind::Map | GoKind::Any) {
                *base = patch.clone();
                return;
            }
            *base = zero_value(table, kind, path, field).unwrap_or(Yaml::Null);
        }
        let overwrite = overwrite || field.ptr;
        let replace = replace || field.replace;
        match field.kind {
            GoKind::Slice => {
                if replace {
                    *base = patch.clone();
                } else if let (Yaml::Seq(items), Yaml::Seq(more)) = (&mut *base, patch) {
                    items.extend(more.iter().cloned());
                } else {
                    *base = patch.clone();
                }
            }
            GoKind::Map | GoKind::Any => {
                if replace {
                    if !matches!(patch, Yaml::Map(e) if e.is_empty()) || field.kind == GoKind::Map {
                        *base = patch.clone();
                    }
                    return;
                }
                let value_path = format!("{path}{{}}");
                // meta.Args (`extraArgs`) copies values over; other maps merge them.
                let copy_values = field.kind == GoKind::Map
                    && matches!(
                        table.field(kind, &value_path),
                        Some(Field {
                            kind: GoKind::Text(None),
                            ..
                        })
                    );
                let (Yaml::Map(_), Yaml::Map(entries)) = (&*base, patch) else {
                    *base = patch.clone();
                    return;
                };
                for (key, value) in entries {
                    match base.get_mut(key) {
                        Some(existing) if !matches!(existing, Yaml::Null) && !copy_values => {
                            if field.kind == GoKind::Any {
                                merge_untyped(existing, value);
                            } else {
                                merge(existing, value, kind, &value_path, false, false);
                            }
                        }
                        _ => base.insert(key, value.clone()),
                    }
                }
            }
            GoKind::Struct => {
                if replace {
                    if !is_zero(
                        table,
                        patch,
                        kind,
                        path,
                        Field {
                            ptr: false,
                            ..field
                        },
                    ) {
                        *base = patch.clone();
                    }
                    return;
                }
                let (Yaml::Map(_), Yaml::Map(entries)) = (&*base, patch) else {
                    *base = patch.clone();
                    return;
                };
                for (key, child) in table.struct_fields(kind, path) {
                    let Some(f) = table.field(kind, child) else {
                        continue;
                    };
                    match (patch.get(key), base.get_mut(key)) {
                        (Some(value), Some(existing)) => {
                            merge(existing, value, kind, child, f.replace, false)
                        }
                        (Some(value), None) => {
                            let mut slot = Yaml::Null;
                            merge(&mut slot, value, kind, child, f.replace, false);
                            let omitted = f.omitempty && is_zero(table, &slot, kind, child, f);
                            if !omitted && (!matches!(slot, Yaml::Null) || f.ptr) {
                                base.insert(key, slot);
                            }
                        }
                        // A right side without the field is its zero value: only a plain
                        // bool (always merged) or a struct holding one changes the left.
                        (None, Some(existing)) => {
                            if f.kind == GoKind::Bool && !f.ptr {
                                *existing = Yaml::Bool(false);
                            } else if f.kind == GoKind::Struct && !f.ptr {
                                merge(existing, &Yaml::map(), kind, child, f.replace, false);
                            }
                        }
                        (None, None) => {}
                    }
                }
                for (key, value) in entries {
                    if table.child(kind, path, key).is_none() {
                        match base.get_mut(key) {
                            Some(existing) => merge_untyped(existing, value),
                            None => base.insert(key, value.clone()),
                        }
                    }
                }
            }
            GoKind::Bool => *base = patch.clone(),
            GoKind::Str | GoKind::Int | GoKind::Float | GoKind::Text(_) => {
                if overwrite
                    || !is_zero(
                        table,
                        patch,
                        kind,
                        path,
                        Field {
                            ptr: false,
                            ..field
                        },
                    )
                {
                    *base = patch.clone();
                }
            }
        }
    }

    /// Merge of free-form values (`map[string]any`): maps by key, lists appended, scalars
    /// replaced unless zero (booleans always).
    fn merge_untyped(base: &mut Yaml, patch: &Yaml) {
        match (&mut *base, patch) {
            (Yaml::Map(_), Yaml::Map(entries)) => {
                for (key, value) in entries {
                    match base.get_mut(key) {
                        Some(existing) if !matches!(existing, Yaml::Null) => {
                            merge_untyped(existing, value)
                        }
                        _ => base.insert(key, value.clone()),
                    }
                }
            }
            (Yaml::Seq(items), Yaml::Seq(more)) => items.extend(more.iter().cloned()),
            (_, Yaml::Null) => {}
            (_, Yaml::Str(s)) if s.is_empty() => {}
            (_, Yaml::Int(0)) => {}
            (slot, value) => *slot = value.clone(),
        }
    }

    const LOOKUP_FAILED: &str = "lookup failed";

    /// `deleteForPath` (upstream: decoder/selector.go) on the value at `path`; errors are the
    /// reason texts.
    pub fn delete_path(
        node: &mut Yaml,
        kind: &str,
        path: &str,
        rest: &[String],
        item: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let table = GoTable::get();
        let Some((search, rest_after)) = rest.split_first() else {
            return Err("path is empty".to_string());
        };
        let field = table.field(kind, path).map_or(GoKind::Any, |f| f.kind);
        match (field, &mut *node) {
            (_, Yaml::Null) => Err(LOOKUP_FAILED.to_string()),
            (GoKind::Struct, Yaml::Map(_)) => {
                let child = table.child(kind, path, search).ok_or(LOOKUP_FAILED)?;
                let f = table.field(kind, &child).ok_or(LOOKUP_FAILED)?;
                if rest_after.is_empty() {
                    // SetZero; a non-omitempty zero comes back when encoding.
                    node.remove(search);
                    return Ok(());
                }
                match node.get_mut(search) {
                    Some(value) if !matches!(value, Yaml::Null) => {
                        delete_path(value, kind, &child, rest_after, item)
                    }
                    _ if f.kind == GoKind::Struct && !f.ptr => {
                        let mut zero = Yaml::map();
                        delete_path(&mut zero, kind, &child, rest_after, item)
                    }
                    _ if f.kind == GoKind::Slice && !f.ptr => {
                        let mut zero = Yaml::Seq(Vec::new());
                        delete_path(&mut zero, kind, &child, rest_after, item)
                    }
                    _ => Err(LOOKUP_FAILED.to_string()),
                }
            }
            (GoKind::Map | GoKind::Any, Yaml::Map(_)) => {
                let value_path = format!("{path}{{}}");
                if node.get(search).is_none() {
                    return Err(LOOKUP_FAILED.to_string());
                }
                if rest_after.is_empty() {
                    node.remove(search);
                    return Ok(());
                }
                let value = node.get_mut(search).ok_or(LOOKUP_FAILED)?;
                if field == GoKind::Any {
                    delete_path(value, "", "", rest_after, item)
                } else {
                    delete_path(value, kind, &value_path, rest_after, item)
                }
            }
            (GoKind::Slice | GoKind::Any, Yaml::Seq(items)) => {
                if !rest_after.is_empty() {
                    return Err(
                        "searching for complex paths in slices is not supported".to_string()
                    );
                }
                if search.is_empty() {
                    return Err("searching for '' in a slice is not supported".to_string());
                }
                if !search.starts_with('[') {
                    return Err(
                        "searching for non-integer keys in slices is not supported".to_string()
                    );
                }
                let item_path = format!("{path}[]");
                let is_struct = field == GoKind::Slice
                    && table
                        .field(kind, &item_path)
                        .is_some_and(|f| f.kind == GoKind::Struct);
                let (key, value) = item.unwrap_or(("", ""));
                if !is_struct || table.child(kind, &item_path, key).is_none() {
                    return Err(LOOKUP_FAILED.to_string());
                }
                let position = items.iter().position(|candidate| {
                    candidate.as_map().is_some()
                        && candidate
                            .get(key)
                            .map_or(value.is_empty(), |v| super::scalar_text(v) == value)
                });
                match position {
                    Some(i) => {
                        items.remove(i);
                        Ok(())
                    }
                    None => Err(LOOKUP_FAILED.to_string()),
                }
            }
            _ => Err(LOOKUP_FAILED.to_string()),
        }
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
        // upstream (decoder/selector.go@v1.14.0-rc.1): deleting a field of a struct that is
        // there is a SetZero, not an error, even when the field is already empty
        // (`network: {}`); only a nil pointer on the way fails the lookup.
        let out = apply_patches(docs(CP_V111), std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            out.docs[0].path("machine.network"),
            Some(&Yaml::map()),
            "network stays an empty struct"
        );
        let without_network = CP_V111.replace("    network: {}\n", "");
        let err = apply_patches(docs(&without_network), &[p]).unwrap_err();
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
        // Deleting a document that is not there is skipped (upstream strategic.go).
        let missing = patch("apiVersion: v1alpha1\nkind: SideroLinkConfig\n$patch: delete\n");
        let out = apply_patches(docs(CP_V114), &[missing]).unwrap();
        assert_eq!(out.docs, docs(CP_V114));
    }

    #[test]
    fn one_patch_file_may_hold_one_document_several_times() {
        let p = patch(
            "apiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: again\n",
        );
        let Patch::Strategic(parts) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(parts.len(), 2);
        let out = apply_patches(docs(CP_V114), &[p]).unwrap();
        let hostname: Vec<&Yaml> = out
            .docs
            .iter()
            .filter(|d| d.get("kind") == Some(&Yaml::str("HostnameConfig")))
            .collect();
        assert_eq!(hostname.len(), 1);
        assert_eq!(hostname[0].get("hostname"), Some(&Yaml::str("again")));
        assert_eq!(hostname[0].get("auto"), None, "re-added from scratch");
        // It goes last: deleted and appended again.
        assert_eq!(out.docs.last(), Some(hostname[0]));
    }

    #[test]
    fn render_encodes_like_go_yaml() {
        let p = patch("machine:\n  network:\n    hostname: a\n");
        let out = apply_patches(
            docs("version: v1alpha1\nmachine:\n  nodeLabels: {}\n"),
            &[p],
        )
        .unwrap();
        assert_eq!(
            out.render(),
            "version: v1alpha1\nmachine:\n    type: \"\"\n    token: \"\"\n    certSANs: []\n    network:\n        hostname: a\ncluster: null\n"
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
