//! `.oac` control files: a YAML mapping beside a template (`etc/foo` → `etc/foo.oac`) that
//! sets the written file's `mode`, `owner`, `group`, and whether an empty result is written
//! (`allow_empty`, default true; when false an empty result deletes the file instead).
//!
//! os-apply-config loads these with PyYAML, which speaks YAML 1.1: `mode: 0755` is octal
//! 493, `yes`/`on` are booleans. [`yaml11`] reads them the same way.

use nix::unistd::{Gid, Group, Uid, User};
use yaml11::Value;

/// What a control file asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Write the file even when the rendered body is empty.
    pub allow_empty: bool,
    /// Permission bits (0..=0o777).
    pub mode: Option<u32>,
    /// Owner uid.
    pub owner: Option<u32>,
    /// Group gid.
    pub group: Option<u32>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            allow_empty: true,
            mode: None,
            owner: None,
            group: None,
        }
    }
}

/// A control file that cannot be honoured. Messages follow os-apply-config's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Not YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// YAML, but not a flat mapping of scalars.
    #[error("header is not a dict")]
    NotADict,
    /// A key this agent does not know.
    #[error("unrecognised file control key '{0}'")]
    UnknownKey(String),
    /// `allow_empty` that is not a boolean.
    #[error("allow_empty requires Boolean, got: '{0}'")]
    AllowEmpty(String),
    /// `mode` that is not an integer.
    #[error("mode '{0}' is not numeric")]
    ModeNotNumeric(String),
    /// `mode` outside 0..=0o777.
    #[error("mode '{}' out of range", py_octal(*.0))]
    ModeRange(i64),
    /// `owner`/`group` of the wrong type.
    #[error("{kind} '{value}' must be a string or int")]
    IdType {
        /// `owner` or `group`.
        kind: &'static str,
        /// The value given.
        value: String,
    },
    /// No such user.
    #[error("owner '{0}' not found in passwd database")]
    NoUser(String),
    /// No such group.
    #[error("group '{0}' not found in group database")]
    NoGroup(String),
}

/// Python's `'%#o' % v`: `0o755`, `-0o1`.
fn py_octal(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}0o{:o}", v.unsigned_abs())
}

/// A scalar as Python prints it in os-apply-config's messages (`None`, `True`, `0755` → `493`).
fn show(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => s.clone(),
        Value::List(_) | Value::Map(_) => "<collection>".into(),
    }
}

/// Parse the text of a control file.
pub fn parse(text: &str) -> Result<Control, ControlError> {
    let root = yaml11::parse(".oac", text).map_err(|e| ControlError::Yaml(e.to_string()))?;
    let mut control = Control::default();
    let pairs = match root.map(|n| n.value) {
        None | Some(Value::Null) => return Ok(control), // empty document: all defaults
        Some(Value::Map(pairs)) => pairs,
        Some(_) => return Err(ControlError::NotADict),
    };
    for (key, node) in pairs {
        let value = node.value;
        if matches!(value, Value::List(_) | Value::Map(_)) {
            return Err(ControlError::NotADict);
        }
        match key.name.as_str() {
            "allow_empty" => match value {
                Value::Bool(b) => control.allow_empty = b,
                other => return Err(ControlError::AllowEmpty(show(&other))),
            },
            "mode" => match value {
                Value::Int(m) if (0..=0o777).contains(&m) => control.mode = Some(m as u32),
                Value::Int(m) => return Err(ControlError::ModeRange(m)),
                other => return Err(ControlError::ModeNotNumeric(show(&other))),
            },
            "owner" => control.owner = Some(resolve_id("owner", value)?),
            "group" => control.group = Some(resolve_id("group", value)?),
            other => return Err(ControlError::UnknownKey(other.to_string())),
        }
    }
    Ok(control)
}

fn resolve_id(kind: &'static str, value: Value) -> Result<u32, ControlError> {
    let missing = |v: String| match kind {
        "owner" => ControlError::NoUser(v),
        _ => ControlError::NoGroup(v),
    };
    let id = match (&value, kind) {
        (Value::Int(i), "owner") => u32::try_from(*i)
            .ok()
            .and_then(|u| User::from_uid(Uid::from_raw(u)).ok().flatten())
            .map(|u| u.uid.as_raw()),
        (Value::Int(i), _) => u32::try_from(*i)
            .ok()
            .and_then(|g| Group::from_gid(Gid::from_raw(g)).ok().flatten())
            .map(|g| g.gid.as_raw()),
        (Value::Str(s), "owner") => User::from_name(s).ok().flatten().map(|u| u.uid.as_raw()),
        (Value::Str(s), _) => Group::from_name(s).ok().flatten().map(|g| g.gid.as_raw()),
        (other, _) => {
            return Err(ControlError::IdType {
                kind,
                value: show(other),
            })
        }
    };
    id.ok_or_else(|| missing(show(&value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_apply_config_control_files() {
        assert_eq!(parse("").unwrap(), Control::default());
        assert_eq!(parse("mode: 0755\n").unwrap().mode, Some(0o755));
        assert!(!parse("allow_empty: false\n").unwrap().allow_empty);
        assert_eq!(parse("owner: root\n").unwrap().owner, Some(0));
        assert_eq!(parse("owner: 0\n").unwrap().owner, Some(0));
        assert_eq!(parse("group: 0\n").unwrap().group, Some(0));
        assert_eq!(parse("group: root\n").unwrap().group, Some(0));
        // YAML 1.1 booleans, as PyYAML reads them.
        assert!(!parse("allow_empty: Off\n").unwrap().allow_empty);
        assert!(parse("allow_empty: True\n").unwrap().allow_empty);
        let all = parse("mode: 0600\nowner: root\ngroup: 0\nallow_empty: no\n").unwrap();
        assert_eq!(
            all,
            Control {
                allow_empty: false,
                mode: Some(0o600),
                owner: Some(0),
                group: Some(0)
            }
        );
    }

    #[test]
    fn control_file_errors_match_os_apply_config() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert_eq!(err("mode: '0644'\n"), "mode '0644' is not numeric");
        assert_eq!(err("mode: 01000\n"), "mode '0o1000' out of range");
        assert_eq!(err("mode: -1\n"), "mode '-0o1' out of range");
        assert_eq!(
            err("owner: za\n"),
            "owner 'za' not found in passwd database"
        );
        assert_eq!(
            err("owner: -1\n"),
            "owner '-1' not found in passwd database"
        );
        assert_eq!(err("group: za\n"), "group 'za' not found in group database");
        assert_eq!(
            err("allow_empty: maybe\n"),
            "allow_empty requires Boolean, got: 'maybe'"
        );
        assert_eq!(
            err("colour: blue\n"),
            "unrecognised file control key 'colour'"
        );
        assert_eq!(err("- a\n- b\n"), "header is not a dict");
        assert_eq!(err("mode: [1]\n"), "header is not a dict");
        assert!(err("mode: [\n").starts_with("invalid YAML"));
    }
}
