//! Mustache templates rendered against JSON metadata, with os-apply-config's semantics.
//!
//! os-apply-config renders with pystache through a `JsonRenderer`: no HTML escaping, missing
//! keys render empty (`missing_tags='ignore'`), and a non-string value is written as
//! `json.dumps(value)` (so `true`, `[1, 2]`, `{"a": 1}`), `null` as nothing. Sections follow
//! Python truthiness (`0`, `""`, `[]`, `{}`, `false`, `null` are false), iterate lists and
//! push any other truthy value as the new context. Everything else is the mustache spec:
//! dotted names, `{{.}}`, inverted sections, comments, set delimiters, and standalone tag lines
//! that vanish with their indentation and newline. Partials have no loader here: like a
//! missing partial in pystache they render empty.
//!
//! Deliberate difference: a section that is never closed (`x {{#a}} open`) is an error
//! naming its line. pystache renders such a template anyway (that one as ` open`), which
//! would write a half-configured file; refusing it leaves the old file in place and fails
//! the run, so the mistake is seen.
//!
//! Hand-written on purpose. The maintained crates do not give these semantics: `ramhorns`
//! renders Rust structs (derive), always HTML-escapes `{{x}}` and has no JSON-value context;
//! `mustache` (nickel-org, unmaintained since 2019) always escapes `{{x}}` and stringifies
//! values its own way; `handlebars` is a different language (its own context rules). Neither
//! can write a list as JSON the way os-apply-config does, and none reports `file:line` for a
//! bad tag.

use serde_json::Value;
use std::fmt::Write as _;

/// A template that failed to parse: the 1-based line of the offending tag and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the tag.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Name {
    /// `{{.}}`: the top of the context stack.
    Dot,
    /// `a.b.c`.
    Path(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Var(Name),
    Section {
        name: Name,
        inverted: bool,
        /// 1-based line of its opening tag (named when rendering it runs over the budget).
        line: usize,
        children: Vec<Node>,
    },
}

struct Frame {
    name: String,
    parsed: Name,
    inverted: bool,
    line: usize,
    children: Vec<Node>,
}

impl Template {
    /// Parse `src`.
    pub fn parse(src: &str) -> Result<Self, ParseError> {
        Parser::new(src).run()
    }

    /// Render with `data` as the root context. Nested sections over lists multiply (three
    /// levels over a 100-item list: a million passes), so rendering is bounded: at most
    /// [`MAX_STEPS`] tags and texts visited and [`MAX_OUTPUT`] bytes written, else an error
    /// naming the line of the section that ran over (found by fuzzing: a template of 20 nested
    /// sections over a 5-item list never finished).
    pub fn render(&self, data: &Value) -> Result<String, ParseError> {
        let mut out = String::new();
        let mut stack = vec![data];
        let mut steps = MAX_STEPS;
        render_nodes(&self.nodes, &mut stack, &mut out, &mut steps, 1)?;
        Ok(out)
    }
}

/// The most tags and texts one render visits.
pub const MAX_STEPS: u64 = 2_000_000;
/// The largest rendered file, in bytes.
pub const MAX_OUTPUT: usize = 64 << 20;

/// Parse and render in one step.
pub fn render(src: &str, data: &Value) -> Result<String, ParseError> {
    Template::parse(src)?.render(data)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    otag: String,
    ctag: String,
    /// Open sections, innermost last; the root is `root`.
    stack: Vec<Frame>,
    root: Vec<Node>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            otag: "{{".into(),
            ctag: "}}".into(),
            stack: Vec::new(),
            root: Vec::new(),
        }
    }

    fn line_of(&self, pos: usize) -> usize {
        1 + self.src[..pos].bytes().filter(|&b| b == b'\n').count()
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line_of(pos),
            message: message.into(),
        }
    }

    fn children(&mut self) -> &mut Vec<Node> {
        match self.stack.last_mut() {
            Some(f) => &mut f.children,
            None => &mut self.root,
        }
    }

    fn push_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let children = self.children();
        if let Some(Node::Text(t)) = children.last_mut() {
            t.push_str(text);
        } else {
            children.push(Node::Text(text.to_string()));
        }
    }

    /// Remove trailing spaces/tabs from the last text node (the indentation of a standalone
    /// tag, already known to be whitespace only).
    fn trim_indent(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let children = self.children();
        if let Some(Node::Text(t)) = children.last_mut() {
            let keep = t.len().saturating_sub(n);
            debug_assert!(t[keep..].bytes().all(|b| b == b' ' || b == b'\t'));
            t.truncate(keep);
            if t.is_empty() {
                children.pop();
            }
        }
    }

    fn run(mut self) -> Result<Template, ParseError> {
        while self.pos < self.src.len() {
            let rest = &self.src[self.pos..];
            let Some(rel) = rest.find(self.otag.as_str()) else {
                let rest = rest.to_string();
                self.push_text(&rest);
                self.pos = self.src.len();
                break;
            };
            let tag_start = self.pos + rel;
            let text = self.src[self.pos..tag_start].to_string();
            self.push_text(&text);
            self.tag(tag_start)?;
        }
        if let Some(f) = self.stack.last() {
            return Err(ParseError {
                line: f.line,
                message: format!("section `{}` is never closed", f.name),
            });
        }
        Ok(Template { nodes: self.root })
    }

    /// Parse the tag at `start` (which begins with the open delimiter) and advance past it.
    fn tag(&mut self, start: usize) -> Result<(), ParseError> {
        let inner_start = start + self.otag.len();
        let sigil = self.src[inner_start..].chars().next();
        let (close, sigil_len) = match sigil {
            Some('{') => (format!("}}{}", self.ctag), 1),
            Some('=') => (format!("={}", self.ctag), 1),
            Some('#' | '^' | '/' | '!' | '>' | '&') => (self.ctag.clone(), 1),
            _ => (self.ctag.clone(), 0),
        };
        let body_start = inner_start + sigil_len;
        let Some(rel) = self.src[body_start..].find(close.as_str()) else {
            return Err(self.err(
                start,
                format!("unclosed tag: no `{close}` after `{}`", self.otag),
            ));
        };
        let body = &self.src[body_start..body_start + rel];
        let end = body_start + rel + close.len();
        let name = body.trim().to_string();

        // Standalone: only whitespace between the line start and the tag, and between the tag
        // and the end of the line (or the template).
        let standalone_kind = matches!(sigil, Some('#' | '^' | '/' | '!' | '>' | '='));
        let mut indent = 0;
        let mut next = end;
        if standalone_kind {
            let line_start = self.src[..start].rfind('\n').map_or(0, |i| i + 1);
            let before = &self.src[line_start..start];
            let after_len = self.src[end..]
                .find(|c| c != ' ' && c != '\t')
                .unwrap_or(self.src.len() - end);
            let after = &self.src[end + after_len..];
            let eol = if after.is_empty() {
                Some(0)
            } else if after.starts_with("\r\n") {
                Some(2)
            } else if after.starts_with('\n') {
                Some(1)
            } else {
                None
            };
            if before.chars().all(|c| c == ' ' || c == '\t') {
                if let Some(eol) = eol {
                    indent = before.len();
                    next = end + after_len + eol;
                }
            }
        }

        match sigil {
            Some('!') => {}
            Some('=') => {
                let mut parts = name.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(o), Some(c), None) if !o.contains('=') && !c.contains('=') => {
                        self.otag = o.to_string();
                        self.ctag = c.to_string();
                    }
                    _ => return Err(self.err(start, format!("invalid set-delimiter tag `{body}`"))),
                }
            }
            Some('>') => {} // no partials: a missing partial renders empty, as in pystache
            Some('#' | '^') => {
                let parsed = self.name(&name, start)?;
                self.trim_indent(indent);
                self.stack.push(Frame {
                    name,
                    parsed,
                    inverted: sigil == Some('^'),
                    line: self.line_of(start),
                    children: Vec::new(),
                });
                self.pos = next;
                return Ok(());
            }
            Some('/') => {
                // The indentation belongs to the section being closed.
                self.trim_indent(indent);
                let Some(frame) = self.stack.pop() else {
                    return Err(
                        self.err(start, format!("closing tag `{name}` has no open section"))
                    );
                };
                if frame.name != name {
                    return Err(self.err(
                        start,
                        format!(
                            "section end tag mismatch: `{name}` closes `{}` (opened on line {})",
                            frame.name, frame.line
                        ),
                    ));
                }
                let node = Node::Section {
                    name: frame.parsed,
                    inverted: frame.inverted,
                    line: frame.line,
                    children: frame.children,
                };
                self.children().push(node);
                self.pos = next;
                return Ok(());
            }
            _ => {
                let parsed = self.name(&name, start)?;
                self.children().push(Node::Var(parsed));
                self.pos = end;
                return Ok(());
            }
        }
        // Comments, delimiters, partials.
        self.trim_indent(indent);
        self.pos = next;
        Ok(())
    }

    fn name(&self, name: &str, start: usize) -> Result<Name, ParseError> {
        if name.is_empty() {
            return Err(self.err(start, "empty tag"));
        }
        if name == "." {
            return Ok(Name::Dot);
        }
        if name.chars().any(char::is_whitespace) || name.split('.').any(str::is_empty) {
            return Err(self.err(start, format!("invalid tag name `{name}`")));
        }
        Ok(Name::Path(name.split('.').map(str::to_string).collect()))
    }
}

/// Resolve a name against the context stack (innermost last), as the spec and pystache do:
/// the first part is searched from the top of the stack down; the rest must resolve inside it.
fn lookup<'v>(name: &Name, stack: &[&'v Value]) -> Option<&'v Value> {
    match name {
        Name::Dot => stack.last().copied(),
        Name::Path(parts) => {
            let first = &parts[0];
            let mut value = stack
                .iter()
                .rev()
                .find_map(|ctx| ctx.as_object().and_then(|m| m.get(first.as_str())))?;
            for part in &parts[1..] {
                value = value.as_object()?.get(part.as_str())?;
            }
            Some(value)
        }
    }
}

/// Python truthiness, which is what pystache uses for sections.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Render `nodes` (inside the section opened on `line`, 1 at the top) onto `out`, spending
/// `steps`.
fn render_nodes<'a>(
    nodes: &'a [Node],
    stack: &mut Vec<&'a Value>,
    out: &mut String,
    steps: &mut u64,
    line: usize,
) -> Result<(), ParseError> {
    for node in nodes {
        if *steps == 0 || out.len() > MAX_OUTPUT {
            return Err(ParseError {
                line,
                message: format!(
                    "rendering this section runs over {MAX_STEPS} steps or {} MiB: nested \
                     sections over lists multiply",
                    MAX_OUTPUT >> 20
                ),
            });
        }
        *steps -= 1;
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Var(name) => match lookup(name, stack) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => out.push_str(s),
                Some(v) => python_json(v, out),
            },
            Node::Section {
                name,
                inverted,
                line,
                children,
            } => {
                let value = lookup(name, stack).filter(|v| truthy(v));
                match (value, inverted) {
                    (None, true) => render_nodes(children, stack, out, steps, *line)?,
                    (None, false) | (Some(_), true) => {}
                    (Some(Value::Array(items)), false) => {
                        for item in items {
                            stack.push(item);
                            render_nodes(children, stack, out, steps, *line)?;
                            stack.pop();
                        }
                    }
                    (Some(v), false) => {
                        stack.push(v);
                        render_nodes(children, stack, out, steps, *line)?;
                        stack.pop();
                    }
                }
            }
        }
    }
    Ok(())
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation when
/// the decimal point falls within `-4 < decpt <= 16`, else `d.ddde±XX` (at least two exponent
/// digits): `2.5`, `2.0`, `0.0001`, `1e-05`, `1e+16`, `1000000000000000.0`.
pub fn python_float(f: f64, out: &mut String) {
    // `{:e}` gives the same shortest round-trip digits: `-1.5e-7`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is a number");
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    let decpt = exp + 1;
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.push_str(&"0".repeat(decpt.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if decpt < digits.len() {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        } else {
            out.push_str(&digits);
            out.push_str(&"0".repeat(decpt - digits.len()));
            out.push_str(".0");
        }
    }
}

/// Write `v` the way Python's `json.dumps(v)` does: `", "` and `": "` separators,
/// non-ASCII characters as `\uXXXX` escapes, floats as `repr(float)` ([`python_float`]).
///
/// Known differences, left because fixing them means serde_json features that unify across
/// the whole workspace (`preserve_order` changes every map the daemon serialises,
/// `arbitrary_precision` how every number deserialises): object keys come out sorted
/// (Python keeps the document's order), and an integer beyond 64 bits was read as a float
/// (`1.2345678901234568e+22`; Python keeps it whole).
pub fn python_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => python_float(f, out),
            None => {
                let _ = write!(out, "{n}");
            }
        },
        Value::String(s) => python_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_str(k, out);
                out.push_str(": ");
                python_json(item, out);
            }
            out.push('}');
        }
    }
}

fn python_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[path = "mustache_tests.rs"]
mod tests;
