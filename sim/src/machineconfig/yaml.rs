//! An order-preserving YAML value plus an emitter that writes YAML the way Talos' go-yaml v3
//! encoder does (4-space indentation, sequences indented under their key, `""` for empty
//! strings, literal blocks for multi-line text), so simulated output is byte-comparable.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A YAML node whose mappings keep their key order.
#[derive(Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

/// Errors of YAML parsing; the message is the parser's, never the document text.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{0}")]
    Parse(String),
}

impl fmt::Debug for Yaml {
    // Values may hold key material: Debug shows only the shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Yaml::Null => write!(f, "Null"),
            Yaml::Bool(b) => write!(f, "Bool({b})"),
            Yaml::Int(i) => write!(f, "Int({i})"),
            Yaml::Float(x) => write!(f, "Float({x})"),
            Yaml::Str(s) => write!(f, "Str(<{} bytes>)", s.len()),
            Yaml::Seq(items) => f.debug_list().entries(items).finish(),
            Yaml::Map(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (k, v)))
                .finish(),
        }
    }
}

impl Yaml {
    /// An empty mapping.
    pub fn map() -> Yaml {
        Yaml::Map(Vec::new())
    }

    /// A string node.
    pub fn str(s: impl Into<String>) -> Yaml {
        Yaml::Str(s.into())
    }

    /// Looks a key up in a mapping.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Mutable lookup of a key in a mapping.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a dotted path of mapping keys.
    pub fn path(&self, dotted: &str) -> Option<&Yaml> {
        dotted.split('.').try_fold(self, |node, key| node.get(key))
    }

    /// The string content of a string node.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a sequence node.
    pub fn as_seq(&self) -> Option<&[Yaml]> {
        match self {
            Yaml::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a mapping node.
    pub fn as_map(&self) -> Option<&[(String, Yaml)]> {
        match self {
            Yaml::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Sets `key` in a mapping (replacing in place or appending). No-op on non-mappings.
    pub fn insert(&mut self, key: &str, value: Yaml) {
        if let Yaml::Map(entries) = self {
            if let Some(slot) = entries.iter_mut().find(|(k, _)| k == key) {
                slot.1 = value;
            } else {
                entries.push((key.to_string(), value));
            }
        }
    }

    /// Removes `key` from a mapping, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Yaml> {
        match self {
            Yaml::Map(entries) => {
                let index = entries.iter().position(|(k, _)| k == key)?;
                Some(entries.remove(index).1)
            }
            _ => None,
        }
    }

    /// Builds a mapping from (key, value) pairs.
    pub fn from_pairs<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Yaml)>) -> Yaml {
        Yaml::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Converts to a JSON value (mapping order is lost in serde_json's sorted map).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Int(i) => Value::from(*i),
            Yaml::Float(x) => serde_json::Number::from_f64(*x)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Yaml::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Converts a JSON value; object keys come out sorted (as ghodss/yaml does).
    pub fn from_json(value: &serde_json::Value) -> Yaml {
        use serde_json::Value;
        match value {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Int(i),
                None => Yaml::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Yaml::Str(s.clone()),
            Value::Array(items) => Yaml::Seq(items.iter().map(Yaml::from_json).collect()),
            Value::Object(map) => {
                let mut entries: Vec<(String, Yaml)> = map
                    .iter()
                    .map(|(k, v)| (k.clone(), Yaml::from_json(v)))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Yaml::Map(entries)
            }
        }
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(i64::try_from(v)
            .map(Yaml::Int)
            .unwrap_or(Yaml::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Yaml>()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        while let Some(key) = map.next_key::<Yaml>()? {
            let key = match key {
                Yaml::Str(s) => s,
                Yaml::Int(i) => i.to_string(),
                Yaml::Bool(b) => b.to_string(),
                Yaml::Float(x) => x.to_string(),
                Yaml::Null => "null".to_string(),
                _ => return Err(de::Error::custom("mapping keys must be scalars")),
            };
            let value = map.next_value::<Yaml>()?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!(
                    "mapping key \"{key}\" already defined"
                )));
            }
            entries.push((key, value));
        }
        Ok(Yaml::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

/// Parses a (possibly multi-document) YAML text. Empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Yaml>, YamlError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    // YAML 1.2 booleans only (go-yaml v3 reads `y`/`on` as strings), no input snippets in
    // errors (documents carry key material).
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    let docs: Vec<Yaml> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| YamlError::Parse(first_line(&e)))?;
    Ok(docs.into_iter().filter(|d| *d != Yaml::Null).collect())
}

/// Parses exactly one YAML document (empty text = Null).
pub fn parse_one(text: &str) -> Result<Yaml, YamlError> {
    let mut docs = parse_documents(text)?;
    match docs.len() {
        0 => Ok(Yaml::Null),
        1 => Ok(docs.remove(0)),
        n => Err(YamlError::Parse(format!(
            "expected one document, found {n}"
        ))),
    }
}

fn first_line(e: &impl fmt::Display) -> String {
    // The parser error may quote a snippet of the input; keep only the headline.
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Output flavour: go-yaml v3 as Talos configures it, or go-yaml v2 (what ghodss/yaml, used
/// after JSON6902 patches, produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// 4-space steps, sequences indented under their key.
    GoYamlV3,
    /// 2-space steps, sequences at the indentation of their key.
    GoYamlV2,
}

impl Style {
    /// Indentation of a mapping nested under a key at `indent`.
    fn map_child(self, indent: usize) -> usize {
        match self {
            // go-yaml v3 rounds up to the next multiple of the 4-space step.
            Style::GoYamlV3 => 4 * ((indent + 4) / 4),
            Style::GoYamlV2 => indent + 2,
        }
    }

    /// Indentation of a sequence nested under a key at `indent`.
    fn seq_child(self, indent: usize) -> usize {
        match self {
            Style::GoYamlV3 => 4 * ((indent + 4) / 4),
            Style::GoYamlV2 => indent,
        }
    }
}

/// Encodes one document like go-yaml v3 with 4-space indentation (ends with a newline).
pub fn emit(doc: &Yaml) -> String {
    emit_with(doc, Style::GoYamlV3)
}

/// Encodes one document in the given style.
pub fn emit_with(doc: &Yaml, style: Style) -> String {
    let mut out = String::new();
    let w = Writer { style };
    match doc {
        Yaml::Map(entries) if !entries.is_empty() => w.map(&mut out, entries, 0, false),
        Yaml::Seq(items) if !items.is_empty() => w.seq(&mut out, items, 0, false),
        other => {
            out.push_str(&scalar_inline(other));
            out.push('\n');
        }
    }
    out
}

/// Encodes several documents joined with `---` lines, as Talos does for multi-doc configs.
pub fn emit_documents(docs: &[Yaml]) -> String {
    docs.iter().map(emit).collect::<Vec<_>>().join("---\n")
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

struct Writer {
    style: Style,
}

impl Writer {
    fn map(&self, out: &mut String, entries: &[(String, Yaml)], indent: usize, first_inline: bool) {
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 || !first_inline {
                pad(out, indent);
            }
            out.push_str(&format_string(key, true));
            out.push(':');
            self.value_after_key(out, value, indent);
        }
    }

    fn value_after_key(&self, out: &mut String, value: &Yaml, indent: usize) {
        match value {
            Yaml::Map(entries) if !entries.is_empty() => {
                out.push('\n');
                self.map(out, entries, self.style.map_child(indent), false);
            }
            Yaml::Seq(items) if !items.is_empty() => {
                out.push('\n');
                self.seq(out, items, self.style.seq_child(indent), false);
            }
            Yaml::Str(s) if is_block_literal(s) => {
                write_literal(out, s, indent, self.style.map_child(indent))
            }
            other => {
                out.push(' ');
                out.push_str(&scalar_inline(other));
                out.push('\n');
            }
        }
    }

    fn seq(&self, out: &mut String, items: &[Yaml], indent: usize, first_inline: bool) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 || !first_inline {
                pad(out, indent);
            }
            out.push_str("- ");
            match item {
                Yaml::Map(entries) if !entries.is_empty() => {
                    self.map(out, entries, indent + 2, true)
                }
                Yaml::Seq(inner) if !inner.is_empty() => self.seq(out, inner, indent + 2, true),
                Yaml::Str(s) if is_block_literal(s) => {
                    out.pop();
                    // The block's content sits under the item, two columns past the dash
                    // (`acceptedCAs` in the v1.14 worker golden, stability/v1.14/base-worker.yaml
                    // @v1.14.0-rc.1).
                    write_literal(out, s, indent, indent + 2);
                }
                other => {
                    out.push_str(&scalar_inline(other));
                    out.push('\n');
                }
            }
        }
    }
}

/// Multi-line text goes into a literal block unless libyaml's analyzer forbids it (a space
/// before a line break, trailing blanks, control characters): then it is double-quoted.
fn is_block_literal(s: &str) -> bool {
    s.contains('\n')
        && !s.chars().any(|c| c.is_control() && c != '\n')
        && !s.contains(" \n")
        && !s.ends_with(' ')
}

/// A literal block for `s`; `parent` is the column of the owning key, `indent` the content's.
fn write_literal(out: &mut String, s: &str, parent: usize, indent: usize) {
    let chomp = if s.ends_with('\n') { "" } else { "-" };
    // Text starting with a space needs an explicit indentation indicator.
    let indicator = if s.starts_with(' ') {
        (indent - parent).to_string()
    } else {
        String::new()
    };
    out.push_str(&format!(" |{indicator}{chomp}\n"));
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn scalar_inline(node: &Yaml) -> String {
    match node {
        Yaml::Null => "null".to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Int(i) => i.to_string(),
        Yaml::Float(x) => format_float(*x),
        Yaml::Str(s) => format_string(s, false),
        Yaml::Seq(_) => "[]".to_string(),
        Yaml::Map(_) => "{}".to_string(),
    }
}

fn format_float(x: f64) -> String {
    if x.is_nan() {
        ".nan".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { ".inf" } else { "-.inf" }.to_string()
    } else {
        let s = format!("{x}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    }
}

/// Whether a plain scalar with this text would be read back as something other than a string.
fn resolves_to_non_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true"
            | "false"
            | "null"
            | "~"
            | "y"
            | "n"
            | "yes"
            | "no"
            | "on"
            | "off"
            | ".inf"
            | "-.inf"
            | "+.inf"
            | ".nan"
    ) {
        return true;
    }
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if body.is_empty() {
        return false;
    }
    let digits = body.replace('_', "");
    if digits.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    if let Some(hex) = digits.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    if let Some(oct) = digits.strip_prefix("0o") {
        return !oct.is_empty() && oct.chars().all(|c| ('0'..='7').contains(&c));
    }
    if digits.parse::<f64>().is_ok() && digits.chars().any(|c| c.is_ascii_digit()) {
        return true;
    }
    // YAML 1.1 sexagesimal numbers such as 1:20 are quoted by go-yaml as well.
    body.contains(':')
        && body
            .split(':')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn plain_allowed(s: &str, is_key: bool) -> bool {
    if s.is_empty() || s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    if "-?:".contains(first) {
        let second = s.chars().nth(1);
        if second.is_none() || second == Some(' ') {
            return false;
        }
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    if s.chars().any(|c| c.is_control()) {
        return false;
    }
    let _ = is_key;
    true
}

fn format_string(s: &str, is_key: bool) -> String {
    if s.is_empty() {
        return "\"\"".to_string();
    }
    if resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if plain_allowed(s, is_key) {
        return s.to_string();
    }
    if s.chars().any(|c| c.is_control()) {
        return double_quoted(s);
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_configs_round_trip_byte_for_byte() {
        for text in [
            include_str!("testdata/controlplane-contract-v1.11.yaml"),
            include_str!("testdata/worker-contract-v1.11.yaml"),
            include_str!("testdata/controlplane-contract-v1.14-multidoc.yaml"),
        ] {
            let docs = parse_documents(text).unwrap();
            assert_eq!(emit_documents(&docs), text);
        }
    }

    #[test]
    fn quotes_strings_that_would_change_type() {
        let doc = Yaml::from_pairs([
            ("a", Yaml::str("true")),
            ("b", Yaml::str("123")),
            ("c", Yaml::str("")),
            ("d", Yaml::str("- x")),
            ("e", Yaml::str("plain/text:ok")),
        ]);
        assert_eq!(
            emit(&doc),
            "a: \"true\"\nb: \"123\"\nc: \"\"\nd: '- x'\ne: plain/text:ok\n"
        );
        let back = parse_one(&emit(&doc)).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn go_yaml_v2_style_keeps_sequences_at_key_indent() {
        let doc = parse_one("a:\n    b:\n        - x: 1\n          z: [p]\n    c: |\n        l1\n")
            .unwrap();
        assert_eq!(
            emit_with(&doc, Style::GoYamlV2),
            "a:\n  b:\n  - x: 1\n    z:\n    - p\n  c: |\n    l1\n"
        );
    }

    #[test]
    fn multiline_text_round_trips() {
        for text in ["a\nb\n", "a\nb", "a \nb\n", "  indented\nb\n", "tab\tx\ny"] {
            let doc = Yaml::from_pairs([("k", Yaml::str(text))]);
            assert_eq!(parse_one(&emit(&doc)).unwrap(), doc, "{text:?}");
            let nested = Yaml::from_pairs([(
                "list",
                Yaml::Seq(vec![Yaml::from_pairs([
                    ("name", Yaml::str("x")),
                    ("k", Yaml::str(text)),
                ])]),
            )]);
            assert_eq!(parse_one(&emit(&nested)).unwrap(), nested, "{text:?}");
        }
        assert_eq!(
            emit(&Yaml::from_pairs([("k", Yaml::str("a\nb\n"))])),
            "k: |\n    a\n    b\n"
        );
    }

    #[test]
    fn keeps_key_order_and_rejects_duplicates() {
        let doc = parse_one("z: 1\na: 2\n").unwrap();
        let keys: Vec<&str> = doc
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["z", "a"]);
        assert!(parse_one("a: 1\na: 2\n").is_err());
    }
}
