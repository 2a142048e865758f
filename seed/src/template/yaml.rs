//! YAML with positions: the one place that touches the YAML parser (`saphyr`).
//!
//! The parser's marked tree is converted at once into our own small [`Node`] tree, so the rest
//! of the template code does not depend on a 0.0.x API, and every node carries the
//! [`Location`] (file, line, column) that error messages name.

use std::fmt;
use std::sync::Arc;

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr::{Marker, ScalarOwned, ScalarStyle, Tag};
use saphyr_parser::{Event, Parser};

use super::{Error, Problem};

/// Where something is in a template file: `FILE:LINE:COLUMN`, both numbers 1-based.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file name as given to the parser (usually the path on the command line).
    pub file: Arc<str>,
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A YAML node with the location where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    /// Where the node starts.
    pub at: Location,
    /// The content.
    pub value: Value,
}

/// The content of a YAML node (core schema; aliases resolved, tags ignored).
#[derive(Clone, Debug)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (quoted, or plain text that is not another scalar).
    Str(String),
    /// A sequence.
    List(Vec<Node>),
    /// A mapping with string keys, in document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it is.
#[derive(Clone, Debug)]
pub struct Key {
    /// Where the key starts.
    pub at: Location,
    /// The key text (scalar keys are converted to their text).
    pub name: String,
}

impl Node {
    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The entries if this is a mapping, else an error saying what `what` must be.
    pub fn as_map(&self, what: &str) -> Result<&[(Key, Node)], Error> {
        match &self.value {
            Value::Map(m) => Ok(m),
            _ => Err(self.expected(what, "a mapping")),
        }
    }

    /// The items if this is a sequence, else an error.
    pub fn as_list(&self, what: &str) -> Result<&[Node], Error> {
        match &self.value {
            Value::List(l) => Ok(l),
            _ => Err(self.expected(what, "a list")),
        }
    }

    /// The text if this is a string, else an error.
    pub fn as_str(&self, what: &str) -> Result<&str, Error> {
        match &self.value {
            Value::Str(s) => Ok(s),
            _ => Err(self.expected(what, "a string")),
        }
    }

    /// The text of a scalar (strings, numbers and booleans as written), else an error.
    pub fn scalar_text(&self, what: &str) -> Result<String, Error> {
        match &self.value {
            Value::Str(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.expected(what, "a scalar")),
        }
    }

    /// The error "WHAT must be EXPECTED, not KIND" at this node.
    pub fn expected(&self, what: &str, expected: &str) -> Error {
        Error::at(
            &self.at,
            Problem::WrongKind {
                what: what.to_string(),
                expected: expected.to_string(),
                found: self.kind(),
            },
        )
    }

    /// Convert to JSON (for parameter defaults and literal values).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.clone().into(),
            Value::List(l) => l.iter().map(Node::to_json).collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| (k.name.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// A collection being built.
enum Frame {
    List {
        at: Location,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        at: Location,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
    },
}

/// Builds the tree from parser events. Hand-written over `saphyr_parser` events rather than
/// saphyr's own loader because that loader keeps no start position for collections and
/// silently keeps the last of duplicate keys (a duplicated resource name would vanish).
struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn location(&self, m: &Marker) -> Location {
        // saphyr's lines are 1-based and its columns 0-based; editors count columns from 1.
        Location {
            file: self.file.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn insert(&mut self, node: Node, anchor: usize) -> Result<(), Error> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::List { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    let name = node.scalar_text("a mapping key")?;
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                        return Err(Error::at(
                            &node.at,
                            Problem::Yaml(format!(
                                "duplicate key `{name}` (first at line {}, column {})",
                                first.at.line, first.at.col
                            )),
                        ));
                    }
                    *key = Some(Key { at: node.at, name });
                }
            },
        }
        Ok(())
    }
}

fn scalar(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&Cow<'_, Tag>>) -> Value {
    match ScalarOwned::parse_from_cow_and_metadata(text.clone(), style, tag) {
        Some(ScalarOwned::Null) => Value::Null,
        Some(ScalarOwned::Boolean(b)) => Value::Bool(b),
        Some(ScalarOwned::Integer(i)) => Value::Int(i),
        Some(ScalarOwned::FloatingPoint(f)) => Value::Float(f.into_inner()),
        Some(ScalarOwned::String(s)) => Value::Str(s),
        // A tag saphyr cannot apply (e.g. `!!int abc`): keep the text.
        None => Value::Str(text.into_owned()),
    }
}

/// Parse one YAML document into a [`Node`]; `file` is the name used in locations.
pub fn parse(file: &str, text: &str) -> Result<Node, Error> {
    let mut b = Builder {
        file: file.into(),
        stack: vec![],
        anchors: HashMap::new(),
        root: None,
    };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event
            .map_err(|e| Error::at(&b.location(e.marker()), Problem::Yaml(e.info().to_string())))?;
        let at = b.location(&span.start);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Error::at(
                        &at,
                        Problem::Yaml("a template is one YAML document, found another".into()),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(text, style, tag.as_ref());
                b.insert(Node { at, value }, anchor)?;
            }
            Event::SequenceStart(anchor, _) => b.stack.push(Frame::List {
                at,
                anchor,
                items: vec![],
            }),
            Event::MappingStart(anchor, _) => b.stack.push(Frame::Map {
                at,
                anchor,
                entries: vec![],
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match b.stack.pop() {
                    Some(Frame::List { at, anchor, items }) => (
                        Node {
                            at,
                            value: Value::List(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        at,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            at,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Err(Error::at(&at, Problem::Yaml("unbalanced YAML".into()))),
                };
                b.insert(node, anchor)?;
            }
            Event::Alias(id) => {
                let node = b.anchors.get(&id).cloned().ok_or_else(|| {
                    Error::at(&at, Problem::Yaml("alias of an unknown anchor".into()))
                })?;
                b.insert(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    b.root.ok_or_else(|| {
        Error::at(
            &Location {
                file: b.file.clone(),
                line: 1,
                col: 1,
            },
            Problem::Yaml("the file is empty".into()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_yaml_positions_are_one_based() {
        let n = parse("t.yaml", "a: 1\nb:\n  - x\n  - \"2\"\n").unwrap();
        let m = n.as_map("top").unwrap();
        assert_eq!(m[0].0.name, "a");
        assert_eq!((m[0].0.at.line, m[0].0.at.col), (1, 1));
        assert_eq!((m[0].1.at.line, m[0].1.at.col), (1, 4));
        let l = m[1].1.as_list("b").unwrap();
        assert_eq!((l[1].at.line, l[1].at.col), (4, 5));
        assert!(matches!(l[1].value, Value::Str(ref s) if s == "2"));
        assert_eq!(l[1].at.to_string(), "t.yaml:4:5");
        // Block collections are located at their first entry.
        assert_eq!((m[1].1.at.line, m[1].1.at.col), (3, 3));
        assert_eq!((n.at.line, n.at.col), (1, 1));
    }

    #[test]
    fn template_yaml_duplicate_keys_are_an_error() {
        let e = parse("d.yaml", "resources:\n  a: 1\n  b: 2\n  a: 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.yaml:4:3: YAML: duplicate key `a` (first at line 2, column 3)"
        );
    }

    #[test]
    fn template_yaml_anchors_and_flow_collections() {
        let n = parse("a.yaml", "x: &v {k: [1, 2.5, ~, true]}\ny: *v\n").unwrap();
        let m = n.as_map("top").unwrap();
        assert_eq!(
            m[1].1.to_json(),
            serde_json::json!({"k": [1, 2.5, null, true]})
        );
        // A flow collection starts at its bracket (after any anchor).
        assert_eq!((m[0].1.at.line, m[0].1.at.col), (1, 7));
    }

    #[test]
    fn template_yaml_syntax_error_names_position() {
        let e = parse("bad.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    }
}
