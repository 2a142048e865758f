//! Template parameters: declaration (type, default, hidden, constraints), conversion of the
//! `key=value` strings given on the command line, and constraint checks.

use regex::Regex;
use serde_json::Value as Json;

use super::yaml::{Location, Node, NodeExt, Value};
use super::{Error, Problem};

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Text.
    String,
    /// An integer or a float.
    Number,
    /// `true`/`false` (also yes/no, on/off, 1/0, t/f, y/n).
    Boolean,
    /// `a,b,c` → a list of strings.
    CommaDelimitedList,
    /// A JSON document (a mapping or list in YAML defaults).
    Json,
}

impl ParamType {
    /// The name used in templates.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::CommaDelimitedList => "comma_delimited_list",
            ParamType::Json => "json",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "string" => ParamType::String,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "comma_delimited_list" => ParamType::CommaDelimitedList,
            "json" => ParamType::Json,
            _ => return None,
        })
    }
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub at: Location,
    /// Its type.
    pub ty: ParamType,
    /// The default value (already converted to the type).
    pub default: Option<Json>,
    /// Whether the value is secret (never echoed in errors).
    pub hidden: bool,
    /// The description.
    pub description: Option<String>,
    /// Constraints, checked in order.
    pub constraints: Vec<Constraint>,
    /// `tags`: free-form labels (Heat clients group parameters by them); recorded, no effect.
    pub tags: Vec<String>,
}

/// A parameter constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Where it is declared.
    pub at: Location,
    /// What it checks.
    pub kind: ConstraintKind,
    /// The message shown when the value violates it, if the template gives one.
    pub description: Option<String>,
}

/// What a constraint checks.
#[derive(Debug, Clone)]
pub enum ConstraintKind {
    /// The value (or each list item) is one of these.
    AllowedValues(Vec<Json>),
    /// A number in `min..=max`.
    Range {
        /// Lower bound.
        min: Option<f64>,
        /// Upper bound.
        max: Option<f64>,
    },
    /// A string length or list length in `min..=max`.
    Length {
        /// Lower bound.
        min: Option<u64>,
        /// Upper bound.
        max: Option<u64>,
    },
    /// The whole string matches the pattern.
    AllowedPattern(Regex),
    /// `custom_constraint: NAME` (e.g. `nova.flavor`, `glance.image`, `neutron.network`).
    ///
    /// Heat checks these against constraint plugins that look the value up in the OpenStack
    /// service it names (Nova, Glance, Neutron…). The seed has none of those plugins, so the
    /// name is recorded and **nothing is enforced**: every value satisfies it. They are
    /// validation hints, not semantics, and refusing them would refuse most real templates.
    Custom(String),
}

const PARAM_KEYS: &[&str] = &[
    "type",
    "label",
    "description",
    "default",
    "hidden",
    "constraints",
    "immutable",
    "tags",
];

pub(crate) fn unknown_key(at: &Location, what: &str, key: &str, known: &[&str]) -> Error {
    Error::at(
        at,
        Problem::UnknownKey {
            what: what.to_string(),
            key: key.to_string(),
            known: known.join(", "),
        },
    )
}

impl Parameter {
    /// Parse one entry of `parameters:`.
    pub(crate) fn parse(name: &str, name_at: &Location, node: &Node) -> Result<Self, Error> {
        let what = format!("parameter `{name}`");
        let entries = node.as_map(&what)?;
        let mut ty = None;
        let mut default = None;
        let mut hidden = false;
        let mut description = None;
        let mut constraints = Vec::new();
        let mut tags = Vec::new();
        for (k, v) in entries {
            match k.name.as_str() {
                "type" => {
                    let t = v.as_str("a parameter type")?;
                    ty = Some(ParamType::from_name(t).ok_or_else(|| {
                        Error::at(
                            &v.at,
                            Problem::NotAllowed {
                                what: format!("the type of {what}"),
                                allowed: "string, number, boolean, comma_delimited_list, json"
                                    .into(),
                                found: t.to_string(),
                            },
                        )
                    })?);
                }
                "default" => default = Some(v),
                "hidden" => match v.value {
                    Value::Bool(b) => hidden = b,
                    _ => return Err(v.expected("`hidden`", "a boolean")),
                },
                "description" => description = Some(v.scalar_text("a description")?),
                "label" | "immutable" => {}
                "tags" => {
                    for t in v.as_list("`tags`")? {
                        tags.push(t.as_str("a tag")?.to_string());
                    }
                }
                "constraints" => {
                    for c in v.as_list("`constraints`")? {
                        constraints.push(Constraint::parse(c)?);
                    }
                }
                other => return Err(unknown_key(&k.at, &what, other, PARAM_KEYS)),
            }
        }
        let Some(ty) = ty else {
            return Err(Error::at(
                name_at,
                Problem::MissingKey {
                    what,
                    key: "type".into(),
                },
            ));
        };
        let mut p = Parameter {
            name: name.to_string(),
            at: name_at.clone(),
            ty,
            default: None,
            hidden,
            description,
            constraints,
            tags,
        };
        if let Some(d) = default {
            let value = p.convert_default(d)?;
            p.check(&value)?;
            p.default = Some(value);
        }
        Ok(p)
    }

    fn convert_default(&self, node: &Node) -> Result<Json, Error> {
        let json = node.to_json();
        match (self.ty, &json) {
            (ParamType::String, Json::String(_)) => Ok(json),
            (ParamType::String, Json::Number(_) | Json::Bool(_)) => {
                Ok(Json::String(json.to_string()))
            }
            (ParamType::Number, Json::Number(_)) => Ok(json),
            (ParamType::Boolean, Json::Bool(_)) => Ok(json),
            (ParamType::CommaDelimitedList, Json::Array(items)) => Ok(Json::Array(
                items
                    .iter()
                    .map(|i| Json::String(super::expr::to_text(i)))
                    .collect(),
            )),
            (ParamType::Json, Json::Object(_) | Json::Array(_)) => Ok(json),
            (_, Json::String(s)) => self.convert(s, &node.at),
            _ => Err(Error::at(
                &node.at,
                Problem::ParameterType {
                    name: self.name.clone(),
                    why: format!("the default is {}, not a {}", node.kind(), self.ty.name()),
                },
            )),
        }
    }

    /// Convert a value given as text (`-P name=value`) to the parameter's type; errors are
    /// reported at `at` (the declaration).
    pub fn convert(&self, text: &str, at: &Location) -> Result<Json, Error> {
        let shown = if self.hidden {
            "the (hidden) value".to_string()
        } else {
            format!("`{text}`")
        };
        let fail = |why: String| {
            Error::at(
                at,
                Problem::ParameterType {
                    name: self.name.clone(),
                    why,
                },
            )
        };
        match self.ty {
            ParamType::String => Ok(Json::String(text.to_string())),
            ParamType::Number => {
                let t = text.trim();
                if let Ok(i) = t.parse::<i64>() {
                    Ok(i.into())
                } else {
                    t.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Json::Number)
                        .ok_or_else(|| fail(format!("{shown} is not a number")))
                }
            }
            ParamType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "on" | "1" => Ok(Json::Bool(true)),
                "false" | "f" | "no" | "n" | "off" | "0" => Ok(Json::Bool(false)),
                _ => Err(fail(format!("{shown} is not a boolean (true/false)"))),
            },
            ParamType::CommaDelimitedList => Ok(Json::Array(if text.trim().is_empty() {
                vec![]
            } else {
                text.split(',')
                    .map(|s| Json::String(s.trim().to_string()))
                    .collect()
            })),
            ParamType::Json => serde_json::from_str(text)
                .map_err(|e| fail(format!("{shown} is not valid JSON ({e})"))),
        }
    }

    /// Check the constraints on a converted value; errors are reported at the constraint.
    pub fn check(&self, value: &Json) -> Result<(), Error> {
        for c in &self.constraints {
            if let Some(why) = c.violation(value) {
                let why = match &c.description {
                    Some(d) => d.clone(),
                    None if self.hidden => "the (hidden) value violates a constraint".into(),
                    None => why,
                };
                return Err(Error::at(
                    &c.at,
                    Problem::Constraint {
                        name: self.name.clone(),
                        why,
                    },
                ));
            }
        }
        Ok(())
    }
}

fn bound_f64(node: &Node) -> Result<f64, Error> {
    match node.value {
        Value::Int(i) => Ok(i as f64),
        Value::Float(f) => Ok(f),
        _ => Err(node.expected("a bound", "a number")),
    }
}

fn bound_u64(node: &Node) -> Result<u64, Error> {
    match node.value {
        Value::Int(i) if i >= 0 => Ok(i as u64),
        _ => Err(node.expected("a length bound", "a non-negative integer")),
    }
}

impl Constraint {
    fn parse(node: &Node) -> Result<Self, Error> {
        const KEYS: &[&str] = &[
            "allowed_values",
            "range",
            "length",
            "allowed_pattern",
            "custom_constraint",
            "description",
        ];
        let mut kind = None;
        let mut description = None;
        for (k, v) in node.as_map("a constraint")? {
            let parsed = match k.name.as_str() {
                "description" => {
                    description = Some(v.scalar_text("a description")?);
                    continue;
                }
                "allowed_values" => ConstraintKind::AllowedValues(
                    v.as_list("`allowed_values`")?
                        .iter()
                        .map(Node::to_json)
                        .collect(),
                ),
                "range" | "length" => {
                    let mut min = None;
                    let mut max = None;
                    for (bk, bv) in v.as_map(&format!("`{}`", k.name))? {
                        match bk.name.as_str() {
                            "min" => min = Some(bv),
                            "max" => max = Some(bv),
                            other => {
                                return Err(unknown_key(&bk.at, &k.name, other, &["min", "max"]))
                            }
                        }
                    }
                    if k.name == "range" {
                        ConstraintKind::Range {
                            min: min.map(bound_f64).transpose()?,
                            max: max.map(bound_f64).transpose()?,
                        }
                    } else {
                        ConstraintKind::Length {
                            min: min.map(bound_u64).transpose()?,
                            max: max.map(bound_u64).transpose()?,
                        }
                    }
                }
                "allowed_pattern" => {
                    let pat = v.as_str("`allowed_pattern`")?;
                    // Heat requires the whole value to match.
                    let re = Regex::new(&format!("^(?:{pat})$")).map_err(|e| {
                        Error::at(
                            &v.at,
                            Problem::BadConstraint(format!("allowed_pattern: {e}")),
                        )
                    })?;
                    ConstraintKind::AllowedPattern(re)
                }
                "custom_constraint" => {
                    ConstraintKind::Custom(v.as_str("`custom_constraint`")?.to_string())
                }
                other => return Err(unknown_key(&k.at, "a constraint", other, KEYS)),
            };
            if kind.replace(parsed).is_some() {
                return Err(Error::at(
                    &k.at,
                    Problem::BadConstraint("one check per constraint entry".into()),
                ));
            }
        }
        let kind = kind.ok_or_else(|| {
            Error::at(
                &node.at,
                Problem::BadConstraint("a constraint needs a check".into()),
            )
        })?;
        Ok(Constraint {
            at: node.at.clone(),
            kind,
            description,
        })
    }

    /// Why `value` violates this constraint, or `None`.
    pub fn violation(&self, value: &Json) -> Option<String> {
        match &self.kind {
            ConstraintKind::AllowedValues(allowed) => {
                let ok = |v: &Json| allowed.iter().any(|a| loose_eq(a, v));
                let fine = match value {
                    Json::Array(items) => items.iter().all(ok),
                    v => ok(v),
                };
                (!fine).then(|| {
                    let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                    format!("{value} is not one of [{}]", list.join(", "))
                })
            }
            ConstraintKind::Range { min, max } => {
                let n = value.as_f64()?;
                let low = min.is_some_and(|m| n < m);
                let high = max.is_some_and(|m| n > m);
                (low || high).then(|| format!("{n} is out of range {}", bounds(min, max)))
            }
            ConstraintKind::Length { min, max } => {
                let len = match value {
                    Json::String(s) => s.chars().count() as u64,
                    Json::Array(l) => l.len() as u64,
                    Json::Object(m) => m.len() as u64,
                    _ => return None,
                };
                let low = min.is_some_and(|m| len < m);
                let high = max.is_some_and(|m| len > m);
                (low || high).then(|| format!("length {len} is out of range {}", bounds(min, max)))
            }
            ConstraintKind::AllowedPattern(re) => {
                let text = super::expr::to_text(value);
                (!re.is_match(&text)).then(|| {
                    let pat = re.as_str();
                    let pat = &pat[4..pat.len() - 2];
                    format!("{value} does not match `{pat}`")
                })
            }
            // Not enforced: see [`ConstraintKind::Custom`].
            ConstraintKind::Custom(_) => None,
        }
    }
}

fn bounds<T: std::fmt::Display>(min: &Option<T>, max: &Option<T>) -> String {
    let show = |b: &Option<T>| b.as_ref().map(|v| v.to_string()).unwrap_or_default();
    format!("{}..{}", show(min), show(max))
}

/// Equality where a number given as a string equals the number (`-P count=3` vs `3`).
fn loose_eq(a: &Json, b: &Json) -> bool {
    a == b || super::expr::to_text(a) == super::expr::to_text(b)
}
