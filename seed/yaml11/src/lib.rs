//! YAML as the OpenStack tools read it (PyYAML, YAML 1.1 scalars), into a small tree whose
//! every node knows where it starts (`FILE:LINE:COLUMN`). The one YAML reader of the workspace:
//! Heat templates (`seed::template`), instackenv files (`seed::inventory`, through
//! [`Node::to_json`]) and os-apply-config `.oac` control files (`ramdisk::config::control`).
//!
//! Parsing is `saphyr-parser`'s event stream; the tree is built here rather than with a loader
//! because a loader keeps no start position for collections and keeps the last of duplicate
//! keys silently (a duplicated resource name would vanish). Differences from PyYAML, all
//! stricter or simpler: a duplicate key is an error (PyYAML keeps the last), a plain mapping key
//! is its text as written (`on:` names `on`, not `True`), timestamps stay strings (as Heat's
//! loader makes them), tags other than the core schema's are ignored.

mod resolve;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

/// Nodes one document may hold, aliases expanded: a bound on "billion laughs" alias bombs.
const MAX_NODES: usize = 1_000_000;

/// Where something is in a file: `FILE:LINE:COLUMN`, both numbers 1-based.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file name as given to the parser (usually the path on the command line).
    pub file: Arc<str>,
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based (in characters).
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

/// The content of a YAML node (aliases resolved, merge keys `<<` applied).
#[derive(Clone, Debug)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true`/`True`/`yes`/`on`… (YAML 1.1).
    Bool(bool),
    /// An integer (`0755` is octal, `0x`, `0b`, `1_000`, `1:30` base 60, as YAML 1.1).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (quoted, or plain text that is not another scalar).
    Str(String),
    /// A sequence.
    List(Vec<Node>),
    /// A mapping with scalar keys, in document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it is.
#[derive(Clone, Debug)]
pub struct Key {
    /// Where the key starts.
    pub at: Location,
    /// The key's text as written (an alias of a non-string scalar: as [`Node::text`] gives it).
    pub name: String,
}

/// How plain (unquoted, untagged) scalars are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// As PyYAML reads them (YAML 1.1): `True`, `yes`, `off` are booleans, `0755` is octal,
    /// `1:30` is 90. Heat templates and os-apply-config files are written for this.
    Yaml11,
    /// As their text, nulls (`~`, `null`, nothing) excepted: for files whose reader decides
    /// each field's type, so that an unquoted MAC (`00:11:22:33:44:55`, a base-60 number to
    /// YAML 1.1) or a password like `0123` stays as written.
    Text,
}

/// Not YAML, or YAML this reader refuses; `at` is where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct Error {
    /// Where the problem is.
    pub at: Location,
    /// What it is.
    pub message: String,
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

    /// The text of a string, number or boolean (`true`/`false`, decimal numbers); `None` for
    /// null and collections.
    pub fn text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::List(_) | Value::Map(_) => None,
        }
    }

    /// Convert to JSON (non-finite floats become null).
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
        /// The key just read was a merge key `<<`: the next node is merged.
        merging: bool,
        /// Entries from merge keys (the first source of a key wins).
        merged: Vec<(Key, Node)>,
    },
}

/// Builds the tree from parser events.
struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    /// Anchored nodes and their sizes (nodes, for the alias budget).
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes made so far, aliases expanded.
    nodes: usize,
    root: Option<Node>,
    schema: Schema,
}

/// The number of nodes in `n`.
fn size(n: &Node) -> usize {
    1 + match &n.value {
        Value::List(l) => l.iter().map(size).sum(),
        Value::Map(m) => m.iter().map(|(_, v)| 1 + size(v)).sum(),
        _ => 0,
    }
}

impl Builder {
    fn location(&self, m: &Marker) -> Location {
        // The parser's lines are 1-based and its columns 0-based; editors count columns from 1.
        Location {
            file: self.file.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn error(at: &Location, message: impl Into<String>) -> Error {
        Error {
            at: at.clone(),
            message: message.into(),
        }
    }

    /// Count `n` more nodes against the budget.
    fn spend(&mut self, n: usize, at: &Location) -> Result<(), Error> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Builder::error(
                at,
                format!("more than {MAX_NODES} nodes with aliases expanded"),
            ));
        }
        Ok(())
    }

    /// Whether the next node is a mapping key.
    fn at_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Map {
                key: None,
                merging: false,
                ..
            })
        )
    }

    fn insert(&mut self, node: Node, anchor: usize) -> Result<(), Error> {
        if anchor > 0 {
            let n = size(&node);
            self.anchors.insert(anchor, (node.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::List { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                merging,
                merged,
                ..
            }) => {
                if *merging {
                    *merging = false;
                    return merge(merged, node);
                }
                match key.take() {
                    Some(k) => entries.push((k, node)),
                    None => {
                        let name = node.text().ok_or_else(|| {
                            Builder::error(
                                &node.at,
                                format!("a mapping key must be a scalar, not {}", node.kind()),
                            )
                        })?;
                        if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                            return Err(Builder::error(
                                &node.at,
                                format!(
                                    "duplicate key `{name}` (first at line {}, column {})",
                                    first.at.line, first.at.col
                                ),
                            ));
                        }
                        *key = Some(Key { at: node.at, name });
                    }
                }
            }
        }
        Ok(())
    }

    /// Close the innermost collection.
    fn close(&mut self, at: &Location) -> Result<(), Error> {
        let (node, anchor) = match self.stack.pop() {
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
                merged,
                ..
            }) => (
                Node {
                    at,
                    value: Value::Map(with_merged(entries, merged)),
                },
                anchor,
            ),
            None => return Err(Builder::error(at, "unbalanced YAML")),
        };
        self.insert(node, anchor)
    }
}

/// Add the entries of a merge key's value (a mapping, or a list of mappings: the first
/// mapping holding a key wins) to `merged`.
fn merge(merged: &mut Vec<(Key, Node)>, node: Node) -> Result<(), Error> {
    let sources = match node.value {
        Value::Map(m) => vec![m],
        Value::List(items) => items
            .into_iter()
            .map(|n| match n.value {
                Value::Map(m) => Ok(m),
                _ => Err(n.at),
            })
            .collect::<Result<_, _>>()
            .map_err(|at| {
                Builder::error(
                    &at,
                    "a merge key `<<` takes a mapping or a list of mappings",
                )
            })?,
        _ => {
            return Err(Builder::error(
                &node.at,
                "a merge key `<<` takes a mapping or a list of mappings",
            ))
        }
    };
    for (k, v) in sources.into_iter().flatten() {
        if !merged.iter().any(|(m, _)| m.name == k.name) {
            merged.push((k, v));
        }
    }
    Ok(())
}

/// PyYAML's order: merged keys first (a key also given explicitly takes the explicit value),
/// then the explicit keys not merged.
fn with_merged(entries: Vec<(Key, Node)>, merged: Vec<(Key, Node)>) -> Vec<(Key, Node)> {
    if merged.is_empty() {
        return entries;
    }
    let mut explicit: Vec<Option<(Key, Node)>> = entries.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(merged.len() + explicit.len());
    for (k, v) in merged {
        let own = explicit
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|(ek, _)| ek.name == k.name))
            .and_then(Option::take);
        out.push(own.unwrap_or((k, v)));
    }
    out.extend(explicit.into_iter().flatten());
    out
}

/// The value of a scalar event.
fn scalar(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    schema: Schema,
) -> Result<Value, String> {
    if let Some(t) = tag.filter(|t| t.is_yaml_core_schema()) {
        return resolve::tagged(&text, &t.suffix)
            .ok_or_else(|| format!("`{text}` is not a valid !!{}", t.suffix));
    }
    Ok(match (style, schema) {
        (ScalarStyle::Plain, Schema::Yaml11) => resolve::plain(&text),
        (ScalarStyle::Plain, Schema::Text) if resolve::is_null(&text) => Value::Null,
        _ => Value::Str(text.into_owned()),
    })
}

/// Parse a YAML stream holding at most one document, scalars as PyYAML reads them
/// ([`Schema::Yaml11`]); `file` is the name used in locations. `Ok(None)` when there is no
/// document (an empty file, or only comments).
pub fn parse(file: &str, text: &str) -> Result<Option<Node>, Error> {
    parse_with(file, text, Schema::Yaml11)
}

/// [`parse`] with plain scalars read as `schema` says.
pub fn parse_with(file: &str, text: &str, schema: Schema) -> Result<Option<Node>, Error> {
    let mut b = Builder {
        file: file.into(),
        stack: vec![],
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        schema,
    };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) =
            event.map_err(|e| Builder::error(&b.location(e.marker()), e.info().to_string()))?;
        let at = b.location(&span.start);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Builder::error(
                        &at,
                        "one YAML document expected, found another",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                b.spend(1, &at)?;
                if b.at_key() && style == ScalarStyle::Plain && tag.is_none() && text == "<<" {
                    if let Some(Frame::Map { merging, .. }) = b.stack.last_mut() {
                        *merging = true;
                    }
                    continue;
                }
                // A plain key is its text as written: a parameter or resource named `on` or
                // `0x10` keeps its name (PyYAML would make it `True` or 16).
                let schema = if b.at_key() { Schema::Text } else { b.schema };
                let value = scalar(text, style, tag.as_deref(), schema)
                    .map_err(|m| Builder::error(&at, m))?;
                b.insert(Node { at, value }, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                b.spend(1, &at)?;
                b.stack.push(Frame::List {
                    at,
                    anchor,
                    items: vec![],
                });
            }
            Event::MappingStart(anchor, _) => {
                b.spend(1, &at)?;
                b.stack.push(Frame::Map {
                    at,
                    anchor,
                    entries: vec![],
                    key: None,
                    merging: false,
                    merged: vec![],
                });
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(&at)?,
            Event::Alias(id) => {
                let n = b
                    .anchors
                    .get(&id)
                    .map(|(_, n)| *n)
                    .ok_or_else(|| Builder::error(&at, "alias of an unknown anchor"))?;
                b.spend(n, &at)?;
                let node = b.anchors[&id].0.clone();
                b.insert(node, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    Ok(b.root)
}

#[cfg(test)]
mod tests;
