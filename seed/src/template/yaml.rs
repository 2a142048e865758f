//! YAML with positions: templates are read by [`yaml11`] (the workspace's one YAML reader:
//! PyYAML's YAML 1.1 scalars, as Heat reads templates, so `hidden: True` and `enabled: yes` are
//! booleans), into a tree whose every node carries the [`Location`] (file, line, column) that
//! error messages name. [`NodeExt`] asks the tree the template's questions and answers in
//! template errors.

pub use yaml11::{Key, Location, Node, Value};

use super::{Error, Problem};

/// Parse one YAML document into a [`Node`]; `file` is the name used in locations.
pub fn parse(file: &str, text: &str) -> Result<Node, Error> {
    match yaml11::parse(file, text) {
        Ok(Some(root)) => Ok(root),
        Ok(None) => Err(Error::at(
            &Location {
                file: file.into(),
                line: 1,
                col: 1,
            },
            Problem::Yaml("the file is empty".into()),
        )),
        Err(e) => Err(Error::at(&e.at, Problem::Yaml(e.message))),
    }
}

/// A node's content as the template needs it, else an error naming the node's location.
pub trait NodeExt {
    /// The entries if this is a mapping, else an error saying what `what` must be.
    fn as_map(&self, what: &str) -> Result<&[(Key, Node)], Error>;
    /// The items if this is a sequence, else an error.
    fn as_list(&self, what: &str) -> Result<&[Node], Error>;
    /// The text if this is a string, else an error.
    fn as_str(&self, what: &str) -> Result<&str, Error>;
    /// The text of a scalar (strings, numbers and booleans as written), else an error.
    fn scalar_text(&self, what: &str) -> Result<String, Error>;
    /// The error "WHAT must be EXPECTED, not KIND" at this node.
    fn expected(&self, what: &str, expected: &str) -> Error;
}

impl NodeExt for Node {
    fn as_map(&self, what: &str) -> Result<&[(Key, Node)], Error> {
        match &self.value {
            Value::Map(m) => Ok(m),
            _ => Err(self.expected(what, "a mapping")),
        }
    }

    fn as_list(&self, what: &str) -> Result<&[Node], Error> {
        match &self.value {
            Value::List(l) => Ok(l),
            _ => Err(self.expected(what, "a list")),
        }
    }

    fn as_str(&self, what: &str) -> Result<&str, Error> {
        match &self.value {
            Value::Str(s) => Ok(s),
            _ => Err(self.expected(what, "a string")),
        }
    }

    fn scalar_text(&self, what: &str) -> Result<String, Error> {
        self.text().ok_or_else(|| self.expected(what, "a scalar"))
    }

    fn expected(&self, what: &str, expected: &str) -> Error {
        Error::at(
            &self.at,
            Problem::WrongKind {
                what: what.to_string(),
                expected: expected.to_string(),
                found: self.kind(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_yaml_errors_are_template_errors() {
        let e = parse("d.yaml", "resources:\n  a: 1\n  b: 2\n  a: 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "d.yaml:4:3: YAML: duplicate key `a` (first at line 2, column 3)"
        );
        let e = parse("bad.yaml", "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
        let e = parse("e.yaml", "# nothing\n").unwrap_err();
        assert_eq!(e.to_string(), "e.yaml:1:1: YAML: the file is empty");
    }

    #[test]
    fn template_yaml_kinds_in_errors() {
        let n = parse("k.yaml", "a: True\n").unwrap();
        let (_, v) = &n.as_map("top").unwrap()[0];
        assert_eq!(v.scalar_text("a").unwrap(), "true");
        let e = v.as_str("`a`").unwrap_err();
        assert!(e.to_string().starts_with("k.yaml:1:4: "), "{e}");
        assert!(e.to_string().contains("a boolean"), "{e}");
    }
}
