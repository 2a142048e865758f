//! YAML with positions: the one place that touches the YAML parser (`saphyr`).
//!
//! The parser's marked tree is converted at once into our own small [`Node`] tree, so the rest
//! of the template code does not depend on a 0.0.x API, and every node carries the
//! [`Location`] (file, line, column) that error messages name.

use std::fmt;
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

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

/// Parse one YAML document into a [`Node`]; `file` is the name used in locations.
pub fn parse(file: &str, text: &str) -> Result<Node, Error> {
    let file: Arc<str> = file.into();
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| {
        let m = e.marker();
        Error::at(
            &Location {
                file: file.clone(),
                line: m.line(),
                col: m.col() + 1,
            },
            Problem::Yaml(e.info().to_string()),
        )
    })?;
    let start = Location {
        file: file.clone(),
        line: 1,
        col: 1,
    };
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Err(Error::at(&start, Problem::Yaml("the file is empty".into())));
    };
    if let Some(extra) = docs.next() {
        let at = convert_location(&file, &extra);
        return Err(Error::at(
            &at,
            Problem::Yaml("a template is one YAML document, found another".into()),
        ));
    }
    convert(&file, doc, &start)
}

fn convert_location(file: &Arc<str>, node: &MarkedYamlOwned) -> Location {
    let m = node.span.start;
    // saphyr's lines are 1-based and its columns 0-based; editors count columns from 1.
    Location {
        file: file.clone(),
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Convert a node; `fallback` is where the node is if the parser did not record it (saphyr
/// leaves some block collections without a start marker: then the first child's location,
/// or failing that the key's, is used).
fn convert(file: &Arc<str>, node: MarkedYamlOwned, fallback: &Location) -> Result<Node, Error> {
    let mut at = convert_location(file, &node);
    let unmarked = node.span.start.line() == 0;
    if unmarked {
        at = fallback.clone();
    }
    let value = match node.data {
        YamlDataOwned::Value(s) => match s {
            ScalarOwned::Null => Value::Null,
            ScalarOwned::Boolean(b) => Value::Bool(b),
            ScalarOwned::Integer(i) => Value::Int(i),
            ScalarOwned::FloatingPoint(f) => Value::Float(f.into_inner()),
            ScalarOwned::String(s) => Value::Str(s),
        },
        YamlDataOwned::Representation(s, _, _) => Value::Str(s),
        YamlDataOwned::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let item = convert(file, item, &at)?;
                if unmarked && out.is_empty() {
                    at = item.at.clone();
                }
                out.push(item);
            }
            Value::List(out)
        }
        YamlDataOwned::Mapping(map) => {
            let mut out: Vec<(Key, Node)> = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key = convert(file, k, &at)?;
                let name = key.scalar_text("a mapping key")?;
                if unmarked && out.is_empty() {
                    at = key.at.clone();
                }
                let value = convert(file, v, &key.at)?;
                out.push((Key { at: key.at, name }, value));
            }
            Value::Map(out)
        }
        YamlDataOwned::Tagged(_, inner) => return convert(file, *inner, &at),
        YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => {
            return Err(Error::at(
                &at,
                Problem::Yaml("unresolvable YAML node (bad alias?)".into()),
            ))
        }
    };
    Ok(Node { at, value })
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
        assert_eq!((m[1].1.at.line, m[1].1.at.col), (3, 5));
        assert_eq!((n.at.line, n.at.col), (1, 1));
    }

    #[test]
    fn template_yaml_syntax_error_names_position() {
        let e = parse("bad.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    }
}
