//! `.oac` control files: a YAML mapping beside a template (`etc/foo` → `etc/foo.oac`) that
//! sets the written file's `mode`, `owner`, `group`, and whether an empty result is written
//! (`allow_empty`, default true; when false an empty result deletes the file instead).
//!
//! os-apply-config loads these with PyYAML, which speaks YAML 1.1: `mode: 0755` is octal
//! 493, `yes`/`on` are booleans. yaml-rust2 (YAML 1.2) would read `0755` as decimal, so the
//! document is parsed with yaml-rust2's event parser and its plain scalars are resolved with
//! YAML 1.1's rules here.

use nix::unistd::{Gid, Group, Uid, User};
use yaml_rust2::parser::{Event, EventReceiver, Parser};
use yaml_rust2::scanner::TScalarStyle;

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

/// A resolved YAML 1.1 scalar.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
}

impl Scalar {
    fn show(&self) -> String {
        match self {
            Scalar::Null => "None".into(),
            Scalar::Bool(b) => if *b { "True" } else { "False" }.into(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// YAML 1.1 (PyYAML) resolution of a plain scalar.
fn resolve_plain(s: &str) -> Scalar {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Scalar::Bool(true)
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Scalar::Bool(false)
        }
        _ => {}
    }
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    let parsed = if let Some(bin) = clean.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()
    } else if let Some(hex) = clean.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if clean.len() > 1 && clean.starts_with('0') {
        i64::from_str_radix(&clean[1..], 8).ok()
    } else if !clean.is_empty() && clean.bytes().all(|b| b.is_ascii_digit()) {
        clean.parse().ok()
    } else {
        None
    };
    match parsed {
        Some(i) if !digits.starts_with('_') => Scalar::Int(if neg { -i } else { i }),
        _ => Scalar::Str(s.to_string()),
    }
}

#[derive(Default)]
struct Events(Vec<Event>);

impl EventReceiver for Events {
    fn on_event(&mut self, ev: Event) {
        self.0.push(ev);
    }
}

/// Parse the text of a control file.
pub fn parse(text: &str) -> Result<Control, ControlError> {
    let mut events = Events::default();
    Parser::new_from_str(text)
        .load(&mut events, false)
        .map_err(|e| ControlError::Yaml(e.to_string()))?;
    let body: Vec<Event> = events
        .0
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd
            )
        })
        .collect();
    let mut control = Control::default();
    let pairs = match body.as_slice() {
        [] => return Ok(control), // empty document: all defaults
        [Event::Scalar(s, TScalarStyle::Plain, ..)] if resolve_plain(s) == Scalar::Null => {
            return Ok(control)
        }
        [Event::MappingStart(..), inner @ .., Event::MappingEnd] => inner,
        _ => return Err(ControlError::NotADict),
    };
    for pair in pairs.chunks(2) {
        let [Event::Scalar(key, ..), Event::Scalar(raw, style, ..)] = pair else {
            return Err(ControlError::NotADict);
        };
        let value = if *style == TScalarStyle::Plain {
            resolve_plain(raw)
        } else {
            Scalar::Str(raw.clone())
        };
        match key.as_str() {
            "allow_empty" => match value {
                Scalar::Bool(b) => control.allow_empty = b,
                other => return Err(ControlError::AllowEmpty(other.show())),
            },
            "mode" => match value {
                Scalar::Int(m) if (0..=0o777).contains(&m) => control.mode = Some(m as u32),
                Scalar::Int(m) => return Err(ControlError::ModeRange(m)),
                other => return Err(ControlError::ModeNotNumeric(other.show())),
            },
            "owner" => control.owner = Some(resolve_id("owner", value)?),
            "group" => control.group = Some(resolve_id("group", value)?),
            other => return Err(ControlError::UnknownKey(other.to_string())),
        }
    }
    Ok(control)
}

fn resolve_id(kind: &'static str, value: Scalar) -> Result<u32, ControlError> {
    let missing = |v: String| match kind {
        "owner" => ControlError::NoUser(v),
        _ => ControlError::NoGroup(v),
    };
    let id = match (&value, kind) {
        (Scalar::Int(i), "owner") => u32::try_from(*i)
            .ok()
            .and_then(|u| User::from_uid(Uid::from_raw(u)).ok().flatten())
            .map(|u| u.uid.as_raw()),
        (Scalar::Int(i), _) => u32::try_from(*i)
            .ok()
            .and_then(|g| Group::from_gid(Gid::from_raw(g)).ok().flatten())
            .map(|g| g.gid.as_raw()),
        (Scalar::Str(s), "owner") => User::from_name(s).ok().flatten().map(|u| u.uid.as_raw()),
        (Scalar::Str(s), _) => Group::from_name(s).ok().flatten().map(|g| g.gid.as_raw()),
        (other, _) => {
            return Err(ControlError::IdType {
                kind,
                value: other.show(),
            })
        }
    };
    id.ok_or_else(|| missing(value.show()))
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
