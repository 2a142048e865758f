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

    /// Render with `data` as the root context.
    pub fn render(&self, data: &Value) -> String {
        let mut out = String::new();
        let mut stack = vec![data];
        render_nodes(&self.nodes, &mut stack, &mut out);
        out
    }
}

/// Parse and render in one step.
pub fn render(src: &str, data: &Value) -> Result<String, ParseError> {
    Ok(Template::parse(src)?.render(data))
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

fn render_nodes(nodes: &[Node], stack: &mut Vec<&Value>, out: &mut String) {
    for node in nodes {
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
                children,
            } => {
                let value = lookup(name, stack).filter(|v| truthy(v));
                match (value, inverted) {
                    (None, true) => render_nodes(children, stack, out),
                    (None, false) | (Some(_), true) => {}
                    (Some(Value::Array(items)), false) => {
                        for item in items {
                            stack.push(item);
                            render_nodes(children, stack, out);
                            stack.pop();
                        }
                    }
                    (Some(v), false) => {
                        stack.push(v);
                        render_nodes(children, stack, out);
                        stack.pop();
                    }
                }
            }
        }
    }
}

/// Write `v` the way Python's `json.dumps(v)` does: `", "` and `": "` separators and
/// non-ASCII characters as `\uXXXX` escapes. (Object keys come out in serde_json's map order,
/// which is sorted; Python keeps the document's order.)
pub fn python_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
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
mod tests {
    use super::*;
    use serde_json::json;

    /// Cases from the official mustache spec (github.com/mustache/spec, v1.1: interpolation,
    /// sections, inverted, comments, delimiters), minus HTML escaping: os-apply-config renders
    /// with escaping switched off, so the escaped-interpolation cases expect the raw text.
    /// (name, template, data, expected)
    fn spec_cases() -> Vec<(&'static str, &'static str, Value, &'static str)> {
        vec![
            // ---- interpolation ----
            ("No Interpolation", "Hello from {Mustache}!\n", json!({}), "Hello from {Mustache}!\n"),
            ("Basic Interpolation", "Hello, {{subject}}!\n", json!({"subject": "world"}), "Hello, world!\n"),
            // Escaping is off in os-apply-config: spec expects "&amp;" etc.; we expect raw.
            ("HTML Escaping (off)", "These characters should be HTML escaped: {{forbidden}}\n", json!({"forbidden": "& \" < >"}), "These characters should be HTML escaped: & \" < >\n"),
            ("Triple Mustache", "These characters should not be HTML escaped: {{{forbidden}}}\n", json!({"forbidden": "& \" < >"}), "These characters should not be HTML escaped: & \" < >\n"),
            ("Ampersand", "These characters should not be HTML escaped: {{&forbidden}}\n", json!({"forbidden": "& \" < >"}), "These characters should not be HTML escaped: & \" < >\n"),
            ("Basic Integer Interpolation", "\"{{mph}} miles an hour!\"", json!({"mph": 85}), "\"85 miles an hour!\""),
            ("Triple Mustache Integer Interpolation", "\"{{{mph}}} miles an hour!\"", json!({"mph": 85}), "\"85 miles an hour!\""),
            ("Basic Decimal Interpolation", "\"{{power}} jiggawatts!\"", json!({"power": 1.21}), "\"1.21 jiggawatts!\""),
            ("Basic Null Interpolation", "I ({{cannot}}) be seen!", json!({"cannot": null}), "I () be seen!"),
            ("Context Misses", "I ({{cannot}}) be seen!", json!({}), "I () be seen!"),
            ("Dotted Names - Basic Interpolation", "\"{{person.name}}\" == \"{{#person}}{{name}}{{/person}}\"", json!({"person": {"name": "Joe"}}), "\"Joe\" == \"Joe\""),
            ("Dotted Names - Arbitrary Depth", "\"{{a.b.c.d.e.name}}\" == \"Phil\"", json!({"a": {"b": {"c": {"d": {"e": {"name": "Phil"}}}}}}), "\"Phil\" == \"Phil\""),
            ("Dotted Names - Broken Chains", "\"{{a.b.c}}\" == \"\"", json!({"a": {}}), "\"\" == \"\""),
            ("Dotted Names - Broken Chain Resolution", "\"{{a.b.c.name}}\" == \"\"", json!({"a": {"b": {}}, "c": {"name": "Jim"}}), "\"\" == \"\""),
            ("Dotted Names - Initial Resolution", "\"{{#a}}{{b.c.d.e.name}}{{/a}}\" == \"Phil\"", json!({"a": {"b": {"c": {"d": {"e": {"name": "Phil"}}}}}, "b": {"c": {"d": {"e": {"name": "Wrong"}}}}}), "\"Phil\" == \"Phil\""),
            ("Dotted Names - Context Precedence", "{{#a}}{{b.c}}{{/a}}", json!({"a": {"b": {}}, "b": {"c": "ERROR"}}), ""),
            ("Implicit Iterators - Basic Interpolation", "Hello, {{.}}!\n", json!("world"), "Hello, world!\n"),
            ("Interpolation - Surrounding Whitespace", "| {{string}} |", json!({"string": "---"}), "| --- |"),
            ("Interpolation - Standalone", "  {{string}}\n", json!({"string": "---"}), "  ---\n"),
            ("Interpolation With Padding", "|{{ string }}|", json!({"string": "---"}), "|---|"),
            ("Triple Mustache With Padding", "|{{{ string }}}|", json!({"string": "---"}), "|---|"),
            ("Ampersand With Padding", "|{{& string }}|", json!({"string": "---"}), "|---|"),
            // ---- sections ----
            ("Section Truthy", "\"{{#boolean}}This should be rendered.{{/boolean}}\"", json!({"boolean": true}), "\"This should be rendered.\""),
            ("Section Falsey", "\"{{#boolean}}This should not be rendered.{{/boolean}}\"", json!({"boolean": false}), "\"\""),
            ("Section Null is falsey", "\"{{#null}}This should not be rendered.{{/null}}\"", json!({"null": null}), "\"\""),
            ("Section Context", "\"{{#context}}Hi {{name}}.{{/context}}\"", json!({"context": {"name": "Joe"}}), "\"Hi Joe.\""),
            ("Section Parent contexts", "\"{{#sec}}{{a}}, {{b}}, {{c.d}}{{/sec}}\"", json!({"a": "foo", "b": "wrong", "sec": {"b": "bar"}, "c": {"d": "baz"}}), "\"foo, bar, baz\""),
            ("Section Variable test", "\"{{#foo}}{{.}} is {{foo}}{{/foo}}\"", json!({"foo": "bar"}), "\"bar is bar\""),
            ("Section List Contexts", "{{#tops}}{{#middles}}{{tname.lower}}{{mname}}.{{#bottoms}}{{tname.upper}}{{mname}}{{bname}}.{{/bottoms}}{{/middles}}{{/tops}}", json!({"tops": [{"tname": {"upper": "A", "lower": "a"}, "middles": [{"mname": "1", "bottoms": [{"bname": "x"}, {"bname": "y"}]}]}]}), "a1.A1x.A1y."),
            ("Section Deeply Nested Contexts", "{{#a}}\n{{one}}\n{{#b}}\n{{one}}{{two}}{{one}}\n{{#c}}\n{{one}}{{two}}{{three}}{{two}}{{one}}\n{{/c}}\n{{/b}}\n{{/a}}\n", json!({"a": {"one": 1}, "b": {"two": 2}, "c": {"three": 3}}), "1\n121\n12321\n"),
            ("Section List", "\"{{#list}}{{item}}{{/list}}\"", json!({"list": [{"item": 1}, {"item": 2}, {"item": 3}]}), "\"123\""),
            ("Section Empty List", "\"{{#list}}Yay lists!{{/list}}\"", json!({"list": []}), "\"\""),
            ("Section Doubled", "{{#bool}}\n* first\n{{/bool}}\n* {{two}}\n{{#bool}}\n* third\n{{/bool}}\n", json!({"bool": true, "two": "second"}), "* first\n* second\n* third\n"),
            ("Section Nested (Truthy)", "| A {{#bool}}B {{#bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": true}), "| A B C D E |"),
            ("Section Nested (Falsey)", "| A {{#bool}}B {{#bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": false}), "| A  E |"),
            ("Section Context Misses", "[{{#missing}}Found key 'missing'!{{/missing}}]", json!({}), "[]"),
            ("Section Implicit Iterator - String", "\"{{#list}}({{.}}){{/list}}\"", json!({"list": ["a", "b", "c", "d", "e"]}), "\"(a)(b)(c)(d)(e)\""),
            ("Section Implicit Iterator - Integer", "\"{{#list}}({{.}}){{/list}}\"", json!({"list": [1, 2, 3, 4, 5]}), "\"(1)(2)(3)(4)(5)\""),
            ("Section Implicit Iterator - Decimal", "\"{{#list}}({{.}}){{/list}}\"", json!({"list": [1.1, 2.2, 3.3, 4.4, 5.5]}), "\"(1.1)(2.2)(3.3)(4.4)(5.5)\""),
            ("Section Implicit Iterator - Array", "\"{{#list}}({{#.}}{{.}}{{/.}}){{/list}}\"", json!({"list": [[1, 2, 3], ["a", "b", "c"]]}), "\"(123)(abc)\""),
            ("Section Dotted Names - Truthy", "\"{{#a.b.c}}Here{{/a.b.c}}\" == \"Here\"", json!({"a": {"b": {"c": true}}}), "\"Here\" == \"Here\""),
            ("Section Dotted Names - Falsey", "\"{{#a.b.c}}Here{{/a.b.c}}\" == \"\"", json!({"a": {"b": {"c": false}}}), "\"\" == \"\""),
            ("Section Dotted Names - Broken Chains", "\"{{#a.b.c}}Here{{/a.b.c}}\" == \"\"", json!({"a": {}}), "\"\" == \"\""),
            ("Section Surrounding Whitespace", " | {{#boolean}}\t|\t{{/boolean}} | \n", json!({"boolean": true}), " | \t|\t | \n"),
            ("Section Internal Whitespace", " | {{#boolean}} {{! Important Whitespace }}\n {{/boolean}} | \n", json!({"boolean": true}), " |  \n  | \n"),
            ("Section Indented Inline Sections", " {{#boolean}}YES{{/boolean}}\n {{#boolean}}GOOD{{/boolean}}\n", json!({"boolean": true}), " YES\n GOOD\n"),
            ("Section Standalone Lines", "| This Is\n{{#boolean}}\n|\n{{/boolean}}\n| A Line\n", json!({"boolean": true}), "| This Is\n|\n| A Line\n"),
            ("Section Indented Standalone Lines", "| This Is\n  {{#boolean}}\n|\n  {{/boolean}}\n| A Line\n", json!({"boolean": true}), "| This Is\n|\n| A Line\n"),
            ("Section Standalone Line Endings", "|\r\n{{#boolean}}\r\n{{/boolean}}\r\n|", json!({"boolean": true}), "|\r\n|"),
            ("Section Standalone Without Previous Line", "  {{#boolean}}\n#{{/boolean}}\n/", json!({"boolean": true}), "#\n/"),
            ("Section Standalone Without Newline", "#{{#boolean}}\n/\n  {{/boolean}}", json!({"boolean": true}), "#\n/\n"),
            ("Section Padding", "|{{# boolean }}={{/ boolean }}|", json!({"boolean": true}), "|=|"),
            // ---- inverted ----
            ("Inverted Falsey", "\"{{^boolean}}This should be rendered.{{/boolean}}\"", json!({"boolean": false}), "\"This should be rendered.\""),
            ("Inverted Truthy", "\"{{^boolean}}This should not be rendered.{{/boolean}}\"", json!({"boolean": true}), "\"\""),
            ("Inverted Null is falsey", "\"{{^null}}This should be rendered.{{/null}}\"", json!({"null": null}), "\"This should be rendered.\""),
            ("Inverted Context", "\"{{^context}}Hi {{name}}.{{/context}}\"", json!({"context": {"name": "Joe"}}), "\"\""),
            ("Inverted List", "\"{{^list}}{{n}}{{/list}}\"", json!({"list": [{"n": 1}, {"n": 2}, {"n": 3}]}), "\"\""),
            ("Inverted Empty List", "\"{{^list}}Yay lists!{{/list}}\"", json!({"list": []}), "\"Yay lists!\""),
            ("Inverted Doubled", "{{^bool}}\n* first\n{{/bool}}\n* {{two}}\n{{^bool}}\n* third\n{{/bool}}\n", json!({"bool": false, "two": "second"}), "* first\n* second\n* third\n"),
            ("Inverted Nested (Falsey)", "| A {{^bool}}B {{^bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": false}), "| A B C D E |"),
            ("Inverted Nested (Truthy)", "| A {{^bool}}B {{^bool}}C{{/bool}} D{{/bool}} E |", json!({"bool": true}), "| A  E |"),
            ("Inverted Context Misses", "[{{^missing}}Found key 'missing'!{{/missing}}]", json!({}), "[Found key 'missing'!]"),
            ("Inverted Dotted Names - Truthy", "\"{{^a.b.c}}Not Here{{/a.b.c}}\" == \"\"", json!({"a": {"b": {"c": true}}}), "\"\" == \"\""),
            ("Inverted Dotted Names - Falsey", "\"{{^a.b.c}}Not Here{{/a.b.c}}\" == \"Not Here\"", json!({"a": {"b": {"c": false}}}), "\"Not Here\" == \"Not Here\""),
            ("Inverted Dotted Names - Broken Chains", "\"{{^a.b.c}}Not Here{{/a.b.c}}\" == \"Not Here\"", json!({"a": {}}), "\"Not Here\" == \"Not Here\""),
            ("Inverted Surrounding Whitespace", " | {{^boolean}}\t|\t{{/boolean}} | \n", json!({"boolean": false}), " | \t|\t | \n"),
            ("Inverted Standalone Lines", "| This Is\n{{^boolean}}\n|\n{{/boolean}}\n| A Line\n", json!({"boolean": false}), "| This Is\n|\n| A Line\n"),
            ("Inverted Standalone Indented Lines", "| This Is\n  {{^boolean}}\n|\n  {{/boolean}}\n| A Line\n", json!({"boolean": false}), "| This Is\n|\n| A Line\n"),
            ("Inverted Standalone Line Endings", "|\r\n{{^boolean}}\r\n{{/boolean}}\r\n|", json!({"boolean": false}), "|\r\n|"),
            ("Inverted Standalone Without Previous Line", "  {{^boolean}}\n^{{/boolean}}\n/", json!({"boolean": false}), "^\n/"),
            ("Inverted Standalone Without Newline", "^{{^boolean}}\n/\n  {{/boolean}}", json!({"boolean": false}), "^\n/\n"),
            ("Inverted Padding", "|{{^ boolean }}={{/ boolean }}|", json!({"boolean": false}), "|=|"),
            // ---- comments ----
            ("Comment Inline", "12345{{! Comment Block! }}67890", json!({}), "1234567890"),
            ("Comment Multiline", "12345{{!\n  This is a\n  multi-line comment...\n}}67890\n", json!({}), "1234567890\n"),
            ("Comment Standalone", "Begin.\n{{! Comment Block! }}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
            ("Comment Indented Standalone", "Begin.\n  {{! Indented Comment Block! }}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
            ("Comment Standalone Line Endings", "|\r\n{{! Standalone Comment }}\r\n|", json!({}), "|\r\n|"),
            ("Comment Standalone Without Previous Line", "  {{! I'm Still Standalone }}\n!", json!({}), "!"),
            ("Comment Standalone Without Newline", "!\n  {{! I'm Still Standalone }}", json!({}), "!\n"),
            ("Comment Multiline Standalone", "Begin.\n{{!\nSomething's going on here...\n}}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
            ("Comment Indented Multiline Standalone", "Begin.\n  {{!\n    Something's going on here...\n  }}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
            ("Comment Indented Inline", "  12 {{! 34 }}\n", json!({}), "  12 \n"),
            ("Comment Surrounding Whitespace", "12345 {{! Comment Block! }} 67890", json!({}), "12345  67890"),
            // ---- delimiters ----
            ("Delimiters Pair Behavior", "{{=<% %>=}}(<%text%>)", json!({"text": "Hey!"}), "(Hey!)"),
            ("Delimiters Special Characters", "({{=[ ]=}}[text])", json!({"text": "It worked!"}), "(It worked!)"),
            ("Delimiters Sections", "[\n{{#section}}\n  {{data}}\n  |data|\n{{/section}}\n\n{{= | | =}}\n|#section|\n  {{data}}\n  |data|\n|/section|\n]\n", json!({"section": true, "data": "I got interpolated."}), "[\n  I got interpolated.\n  |data|\n\n  {{data}}\n  I got interpolated.\n]\n"),
            ("Delimiters Standalone Tag", "Begin.\n{{=@ @=}}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
            ("Delimiters Indented Standalone Tag", "Begin.\n  {{=@ @=}}\nEnd.\n", json!({}), "Begin.\nEnd.\n"),
            ("Delimiters Pair with Padding", "|{{= @   @ =}}|", json!({}), "||"),
        ]
    }

    #[test]
    fn mustache_spec_cases() {
        let mut failures = Vec::new();
        for (name, template, data, expected) in spec_cases() {
            match render(template, &data) {
                Ok(got) if got == expected => {}
                other => failures.push(format!("{name}: got {other:?}, want {expected:?}")),
            }
        }
        assert!(
            failures.is_empty(),
            "spec failures:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn tripleo_mysql_example_exactly() {
        let template = "[client]\nuser = root\n{{#mysql.root-password}}\npassword = {{.}}\n{{/mysql.root-password}}\n";
        let data = json!({"mysql": {"root-password": "Heifs23jk3"}});
        assert_eq!(
            render(template, &data).unwrap(),
            "[client]\nuser = root\npassword = Heifs23jk3\n"
        );
        // Without the key, the password line disappears entirely.
        assert_eq!(
            render(template, &json!({})).unwrap(),
            "[client]\nuser = root\n"
        );
    }

    /// os-apply-config's own renderer tests (test_json_renderer.py, test_apply_config.py).
    #[test]
    fn os_apply_config_renderer_cases() {
        let ctx = json!({"a": {"b": [1, 2, 3, "foo"], "c": "the quick brown fox"}});
        assert_eq!(render("{{a.b}}", &ctx).unwrap(), "[1, 2, 3, \"foo\"]");
        assert_eq!(render("{{a.c}}", &ctx).unwrap(), "the quick brown fox");
        assert_eq!(
            render("ab{{x.a}}cd", &json!({"x": {"a": "123"}})).unwrap(),
            "ab123cd"
        );
        assert_eq!(render("{{badkey}}", &json!({})).unwrap(), "");
        assert_eq!(
            render("{{b}}/{{n}}", &json!({"b": true, "n": null})).unwrap(),
            "true/"
        );
        assert_eq!(
            render("{{o}}", &json!({"o": {"k": "é"}})).unwrap(),
            "{\"k\": \"\\u00e9\"}"
        );
        // Python truthiness: 0 and "" are false.
        assert_eq!(
            render("{{#z}}x{{/z}}{{^e}}y{{/e}}", &json!({"z": 0, "e": ""})).unwrap(),
            "y"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = Template::parse("a\nb\n{{#foo}}bar={{bar}}{{/bar}}").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("section end tag mismatch"), "{e}");
        let e = Template::parse("ok\n\n\n{{#open}}\nnever closed\n").unwrap_err();
        assert_eq!((e.line, e.message.contains("never closed")), (4, true));
        let e = Template::parse("x\n{{unclosed\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Template::parse("{{/nothing}}").unwrap_err();
        assert_eq!(e.line, 1);
        let e = Template::parse("\n{{}}").unwrap_err();
        assert_eq!(e.to_string(), "line 2: empty tag");
    }
}
