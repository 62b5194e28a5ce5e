//! A JSON document as the comparer reads it: one flat arena of nodes instead of a
//! `serde_json::Value` tree. Strings without escapes are borrowed from the body, object members
//! are sorted by name once while parsing, and no node owns an allocation of its own, so parsing
//! a body costs a handful of growing vectors rather than one allocation per member and string.
//!
//! The parser is serde_json's (`deserialize_any` with a seed that fills the arena), so what is
//! JSON, its error messages and its recursion limit (128 nested arrays or objects) are exactly
//! serde_json's; numbers arrive as serde_json reads them (`u64`, `i64` or `f64`), and duplicate
//! member names keep the last value, as in a `Value`.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::borrow::Cow;
use std::fmt;

/// One node; containers refer to their children in [`Doc`]'s `elements` / `members`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'d> {
    Null,
    Bool(bool),
    PosInt(u64),
    NegInt(i64),
    Float(f64),
    Str(Cow<'d, str>),
    /// `len` node indexes from `start` in `elements`, in document order.
    Array {
        start: usize,
        len: usize,
    },
    /// `len` members from `start` in `members`, sorted by name, names unique.
    Object {
        start: usize,
        len: usize,
    },
}

/// A parsed document; `'d` is the body (or `Value`) its strings borrow from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc<'d> {
    nodes: Vec<Node<'d>>,
    elements: Vec<usize>,
    members: Vec<(Cow<'d, str>, usize)>,
    root: usize,
}

impl<'d> Doc<'d> {
    /// Parses `body` as serde_json does (`serde_json::from_slice`).
    pub(crate) fn parse(body: &'d [u8]) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(body);
        // About one node per 8 bytes of a typical API response; the vectors grow past that.
        let mut builder = Builder::with_capacity(body.len() / 8);
        let root = NodeSeed(&mut builder).deserialize(&mut de)?;
        de.end()?;
        Ok(builder.finish(root))
    }

    /// The same document from a `Value` (its strings borrowed).
    pub(crate) fn from_value(value: &'d serde_json::Value) -> Result<Self, serde_json::Error> {
        let mut builder = Builder::with_capacity(16);
        let root = NodeSeed(&mut builder).deserialize(value)?;
        Ok(builder.finish(root))
    }

    pub(crate) fn root(&self) -> usize {
        self.root
    }

    /// The node at `index` (`Null` for an index no node has: never built).
    pub(crate) fn node(&self, index: usize) -> &Node<'d> {
        self.nodes.get(index).unwrap_or(&Node::Null)
    }

    pub(crate) fn elements(&self, start: usize, len: usize) -> &[usize] {
        self.elements
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }

    pub(crate) fn members(&self, start: usize, len: usize) -> &[(Cow<'d, str>, usize)] {
        self.members
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }

    /// Node `index` for serialisation (compact JSON, members in name order, as a `Value`).
    pub(crate) fn at(&self, index: usize) -> At<'_, 'd> {
        At { doc: self, index }
    }
}

/// Collects nodes; containers keep their children on the scratch stacks until they end (a
/// nested container ends first), then move them to the document in one piece.
struct Builder<'d> {
    doc: Doc<'d>,
    element_stack: Vec<usize>,
    member_stack: Vec<(Cow<'d, str>, usize)>,
}

impl<'d> Builder<'d> {
    fn with_capacity(nodes: usize) -> Self {
        Self {
            doc: Doc {
                nodes: Vec::with_capacity(nodes),
                elements: Vec::with_capacity(nodes / 2),
                members: Vec::with_capacity(nodes / 2),
                root: 0,
            },
            element_stack: Vec::new(),
            member_stack: Vec::new(),
        }
    }

    fn push(&mut self, node: Node<'d>) -> usize {
        self.doc.nodes.push(node);
        self.doc.nodes.len() - 1
    }

    fn end_array(&mut self, mark: usize) -> usize {
        let start = self.doc.elements.len();
        self.doc.elements.extend(
            self.element_stack
                .drain(mark.min(self.element_stack.len())..),
        );
        let len = self.doc.elements.len() - start;
        self.push(Node::Array { start, len })
    }

    fn end_object(&mut self, mark: usize) -> usize {
        let mark = mark.min(self.member_stack.len());
        let members = self.member_stack.get_mut(mark..).unwrap_or_default();
        // Stable: of members with the same name the last stays last, and is the one kept.
        members.sort_by(|x, y| x.0.cmp(&y.0));
        let start = self.doc.members.len();
        let mut pending: Option<(Cow<'d, str>, usize)> = None;
        for member in self.member_stack.drain(mark..) {
            if let Some(previous) = pending.take() {
                if previous.0 != member.0 {
                    self.doc.members.push(previous);
                }
            }
            pending = Some(member);
        }
        self.doc.members.extend(pending);
        let len = self.doc.members.len() - start;
        self.push(Node::Object { start, len })
    }

    fn finish(mut self, root: usize) -> Doc<'d> {
        self.doc.root = root;
        self.doc
    }
}

/// Deserialises one value into the builder; yields its node index.
struct NodeSeed<'b, 'd>(&'b mut Builder<'d>);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(self.0.push(Node::Null))
    }

    fn visit_none<E>(self) -> Result<usize, E> {
        Ok(self.0.push(Node::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E>(self, v: bool) -> Result<usize, E> {
        Ok(self.0.push(Node::Bool(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<usize, E> {
        Ok(self.0.push(Node::PosInt(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<usize, E> {
        // As `serde_json::Number`: a non-negative integer is a `u64`.
        let node = u64::try_from(v).map_or(Node::NegInt(v), Node::PosInt);
        Ok(self.0.push(node))
    }

    fn visit_f64<E>(self, v: f64) -> Result<usize, E> {
        // As `Value`: a non-finite number (never read from JSON text) is null.
        let node = if v.is_finite() {
            Node::Float(v)
        } else {
            Node::Null
        };
        Ok(self.0.push(node))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<usize, E> {
        Ok(self.0.push(Node::Str(Cow::Borrowed(v))))
    }

    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        Ok(self.0.push(Node::Str(Cow::Owned(v.to_string()))))
    }

    fn visit_string<E>(self, v: String) -> Result<usize, E> {
        Ok(self.0.push(Node::Str(Cow::Owned(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let builder = self.0;
        let mark = builder.element_stack.len();
        while let Some(element) = seq.next_element_seed(NodeSeed(&mut *builder))? {
            builder.element_stack.push(element);
        }
        Ok(builder.end_array(mark))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let builder = self.0;
        let mark = builder.member_stack.len();
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value = map.next_value_seed(NodeSeed(&mut *builder))?;
            builder.member_stack.push((name, value));
        }
        Ok(builder.end_object(mark))
    }
}

/// A member name, borrowed when it has no escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A node of a document, serialised as the equivalent `Value` would be.
pub(crate) struct At<'a, 'd> {
    doc: &'a Doc<'d>,
    index: usize,
}

impl Serialize for At<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.doc.node(self.index) {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::PosInt(u) => serializer.serialize_u64(*u),
            Node::NegInt(i) => serializer.serialize_i64(*i),
            Node::Float(f) => serializer.serialize_f64(*f),
            Node::Str(s) => serializer.serialize_str(s),
            Node::Array { start, len } => {
                let elements = self.doc.elements(*start, *len);
                let mut seq = serializer.serialize_seq(Some(elements.len()))?;
                for element in elements {
                    seq.serialize_element(&self.doc.at(*element))?;
                }
                seq.end()
            }
            Node::Object { start, len } => {
                let members = self.doc.members(*start, *len);
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (name, value) in members {
                    map.serialize_entry(name.as_ref(), &self.doc.at(*value))?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn round_trip(text: &str) -> String {
        let doc = Doc::parse(text.as_bytes()).unwrap();
        serde_json::to_string(&doc.at(doc.root())).unwrap()
    }

    #[test]
    fn a_document_serialises_as_its_value_does() {
        for text in [
            r#"{"b":[1,-2,3.5,-0.0,1e300,"x\"y",null,true],"a":{"z":{},"y":[]},"é":"\u00e9\n"}"#,
            r#"{"a":1,"a":2,"b":{"c":1,"c":[3]}}"#,
            "[18446744073709551615,-9223372036854775808,123456789012345678901234567890]",
            r#""plain""#,
            "0",
            "[]",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(round_trip(text), value.to_string(), "{text}");
            let doc = Doc::from_value(&value).unwrap();
            assert_eq!(
                serde_json::to_string(&doc.at(doc.root())).unwrap(),
                value.to_string()
            );
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let body = br#"{"name":"plain","esc\"aped":"a\nb"}"#;
        let doc = Doc::parse(body).unwrap();
        let Node::Object { start, len } = doc.node(doc.root()) else {
            panic!("{doc:?}")
        };
        let members = doc.members(*start, *len);
        assert!(matches!(members[0].0, Cow::Owned(_)), "{members:?}");
        assert!(matches!(members[1].0, Cow::Borrowed("name")), "{members:?}");
        assert!(matches!(
            doc.node(members[1].1),
            Node::Str(Cow::Borrowed("plain"))
        ));
        assert_eq!(
            doc.node(members[0].1),
            &Node::Str(Cow::Owned("a\nb".into()))
        );
    }

    #[test]
    fn errors_are_serde_jsons() {
        for text in ["{\"a\":1", "[1e400]", "[1] x", "", "{x}"] {
            let ours = Doc::parse(text.as_bytes()).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Doc::parse(deep.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("recursion limit exceeded"));
        assert!(Doc::parse(json!([1]).to_string().as_bytes()).is_ok());
    }
}
