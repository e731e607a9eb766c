//! Maps field paths such as `nodes.worker.assignments[1].ip` to the line they were written on,
//! so validation errors found after parsing can still point at the profile's source.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Line numbers (1-based) of every key and value in a YAML document, by field path.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: BTreeMap<String, u64>,
}

impl LineIndex {
    /// Index `text`; a document that does not parse yields an empty index (the typed parse
    /// reports the syntax error with its own location).
    pub fn build(text: &str) -> Self {
        let mut index = Self::default();
        if let Ok(root) = serde_saphyr::from_str::<Spanned<Node>>(text) {
            index.walk(String::new(), &root);
        }
        index
    }

    fn walk(&mut self, path: String, node: &Spanned<Node>) {
        self.lines
            .insert(path.clone(), node.referenced.line().max(1));
        match &node.value {
            Node::Map(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.walk(child, value);
                }
            }
            Node::Seq(items) => {
                for (i, value) in items.iter().enumerate() {
                    self.walk(format!("{path}[{i}]"), value);
                }
            }
            Node::Scalar => {}
        }
    }

    /// The deepest field path written on `line` (for errors that only know their line).
    pub fn deepest_at(&self, line: u64) -> Option<String> {
        self.lines
            .iter()
            .filter(|(path, l)| **l == line && !path.is_empty())
            .max_by_key(|(path, _)| (path.matches(['.', '[']).count(), path.len()))
            .map(|(path, _)| path.clone())
    }

    /// The line of `path`, or of its nearest written ancestor (a defaulted field has no line of
    /// its own; its parent does).
    pub fn line_of(&self, path: &str) -> Option<u64> {
        let mut p = path.to_string();
        loop {
            if let Some(line) = self.lines.get(&p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! scalar {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: serde::de::Error>(self, _v: $ty) -> Result<Node, E> { Ok(Node::Scalar) })*
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<KeyText>()? {
            entries.push((key.0, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
}

/// A mapping key rendered as text (keys may be numbers or booleans in YAML).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_in_block_and_flow_style() {
        let text = "name: x\nnodes:\n  worker:\n    assignments:\n      - { name: w1, ip: 1.2.3.4 }\n      - name: w2\n        ip: 1.2.3.5\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("name"), Some(1));
        assert_eq!(idx.line_of("nodes.worker.assignments[0].ip"), Some(5));
        assert_eq!(idx.line_of("nodes.worker.assignments[1].ip"), Some(7));
        assert_eq!(idx.line_of("nodes.worker.assignments[1].mac"), Some(6));
    }
}
