//! Template values as expression trees: literals, lists, maps and the intrinsic functions the
//! seed implements (`get_param`, `get_resource`, `get_attr`, `str_replace`, `list_join`).
//!
//! Parsing turns a one-key mapping whose key is a Heat function name into a function node
//! (or an error for the functions the seed does not implement). The pure helpers for the
//! functions' semantics (path walking, replacing, joining) live here too, shared by the
//! partial evaluation at bind time and the full evaluation against created resources.

use serde_json::Value as Json;

use super::yaml::{Location, Node, NodeExt, Value};
use super::{Error, Problem};

/// A template value with the location where it starts.
#[derive(Clone, Debug)]
pub struct Expr {
    /// Where it starts.
    pub at: Location,
    /// What it is.
    pub kind: ExprKind,
}

/// The kinds of template values.
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// A scalar (null, boolean, number, string).
    Literal(Json),
    /// A list of values.
    List(Vec<Expr>),
    /// A mapping of values, in document order.
    Map(Vec<(String, Expr)>),
    /// `get_param: NAME` or `get_param: [NAME, key-or-index, …]`.
    GetParam {
        /// The parameter.
        name: String,
        /// Keys/indices into a json or list parameter.
        path: Vec<Expr>,
    },
    /// `get_resource: NAME`.
    GetResource(String),
    /// `get_attr: [NAME, ATTRIBUTE, key-or-index, …]`.
    GetAttr {
        /// The resource.
        resource: String,
        /// The attribute.
        attribute: String,
        /// Keys/indices into the attribute's value.
        path: Vec<Expr>,
    },
    /// `str_replace: {template: …, params: {…}}`.
    StrReplace {
        /// The text with placeholders.
        template: Box<Expr>,
        /// The placeholder → value mapping.
        params: Box<Expr>,
    },
    /// `list_join: [DELIMITER, LIST, …]`.
    ListJoin {
        /// Between items.
        delimiter: String,
        /// The lists joined, one after another.
        lists: Vec<Expr>,
    },
}

/// Heat functions the seed knows by name but does not implement: using one is an error
/// rather than silently passing a one-key mapping through as data.
const UNSUPPORTED: &[&str] = &[
    "get_file",
    "repeat",
    "resource_facade",
    "str_replace_strict",
    "str_replace_vstrict",
    "str_split",
    "map_merge",
    "map_replace",
    "yaql",
    "equals",
    "if",
    "not",
    "and",
    "or",
    "filter",
    "make_url",
    "list_concat",
    "list_concat_unique",
    "contains",
    "digest",
    "Ref",
];

fn args_err(at: &Location, function: &'static str, why: impl Into<String>) -> Error {
    Error::at(
        at,
        Problem::FunctionArgs {
            function,
            why: why.into(),
        },
    )
}

impl Expr {
    /// Parse a YAML node into an expression.
    pub fn parse(node: &Node) -> Result<Expr, Error> {
        let at = node.at.clone();
        let kind = match &node.value {
            Value::Null => ExprKind::Literal(Json::Null),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Str(_) => {
                ExprKind::Literal(node.to_json())
            }
            Value::List(items) => {
                ExprKind::List(items.iter().map(Expr::parse).collect::<Result<_, _>>()?)
            }
            Value::Map(entries) => {
                if let [(key, arg)] = entries.as_slice() {
                    if let Some(kind) = parse_function(&key.name, &key.at, arg)? {
                        return Ok(Expr {
                            at: key.at.clone(),
                            kind,
                        });
                    }
                }
                ExprKind::Map(
                    entries
                        .iter()
                        .map(|(k, v)| Ok((k.name.clone(), Expr::parse(v)?)))
                        .collect::<Result<_, Error>>()?,
                )
            }
        };
        Ok(Expr { at, kind })
    }

    /// A literal expression.
    pub fn literal(at: &Location, value: Json) -> Expr {
        let kind = match value {
            Json::Array(items) => {
                ExprKind::List(items.into_iter().map(|v| Expr::literal(at, v)).collect())
            }
            Json::Object(map) => ExprKind::Map(
                map.into_iter()
                    .map(|(k, v)| (k, Expr::literal(at, v)))
                    .collect(),
            ),
            scalar => ExprKind::Literal(scalar),
        };
        Expr {
            at: at.clone(),
            kind,
        }
    }

    /// The value if the expression contains no function at all.
    pub fn as_literal(&self) -> Option<Json> {
        match &self.kind {
            ExprKind::Literal(v) => Some(v.clone()),
            ExprKind::List(items) => items.iter().map(Expr::as_literal).collect(),
            ExprKind::Map(entries) => entries
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_literal()?)))
                .collect::<Option<serde_json::Map<_, _>>>()
                .map(Json::Object),
            _ => None,
        }
    }

    /// The entries if this is a literal mapping.
    pub fn as_map(&self) -> Option<&[(String, Expr)]> {
        match &self.kind {
            ExprKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The entry `key` of a literal mapping.
    pub fn get(&self, key: &str) -> Option<&Expr> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A canonical JSON form, functions written as Heat writes them; locations are left out,
    /// so two expressions are the same value exactly when their canonical forms are equal.
    pub fn canonical(&self) -> Json {
        match &self.kind {
            ExprKind::Literal(v) => v.clone(),
            ExprKind::List(items) => items.iter().map(Expr::canonical).collect(),
            ExprKind::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.clone(), v.canonical()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            ExprKind::GetParam { name, path } => {
                let mut args = vec![Json::from(name.clone())];
                args.extend(path.iter().map(Expr::canonical));
                serde_json::json!({ "get_param": args })
            }
            ExprKind::GetResource(name) => serde_json::json!({ "get_resource": name }),
            ExprKind::GetAttr {
                resource,
                attribute,
                path,
            } => {
                let mut args = vec![Json::from(resource.clone()), Json::from(attribute.clone())];
                args.extend(path.iter().map(Expr::canonical));
                serde_json::json!({ "get_attr": args })
            }
            ExprKind::StrReplace { template, params } => serde_json::json!({
                "str_replace": { "template": template.canonical(), "params": params.canonical() }
            }),
            ExprKind::ListJoin { delimiter, lists } => {
                let mut args = vec![Json::from(delimiter.clone())];
                args.extend(lists.iter().map(Expr::canonical));
                serde_json::json!({ "list_join": args })
            }
        }
    }

    /// Every expression in the tree, depth first, this one included.
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Expr)) {
        visit(self);
        match &self.kind {
            ExprKind::Literal(_) | ExprKind::GetResource(_) => {}
            ExprKind::List(items) => items.iter().for_each(|e| e.walk(visit)),
            ExprKind::Map(entries) => entries.iter().for_each(|(_, e)| e.walk(visit)),
            ExprKind::GetParam { path, .. } | ExprKind::GetAttr { path, .. } => {
                path.iter().for_each(|e| e.walk(visit))
            }
            ExprKind::StrReplace { template, params } => {
                template.walk(visit);
                params.walk(visit);
            }
            ExprKind::ListJoin { lists, .. } => lists.iter().for_each(|e| e.walk(visit)),
        }
    }

    /// The resources this expression refers to (`get_resource`, `get_attr`), with where.
    pub fn references(&self) -> Vec<(&str, &Location)> {
        let mut out = Vec::new();
        self.walk(&mut |e| match &e.kind {
            ExprKind::GetResource(r) | ExprKind::GetAttr { resource: r, .. } => {
                out.push((r.as_str(), &e.at))
            }
            _ => {}
        });
        out
    }

    /// A copy with `var` replaced by `index` in every literal string and mapping key
    /// (`%index%` in a ResourceGroup's `resource_def`).
    pub fn substitute(&self, var: &str, index: &str) -> Expr {
        let kind = match &self.kind {
            ExprKind::Literal(Json::String(s)) => {
                ExprKind::Literal(Json::String(s.replace(var, index)))
            }
            ExprKind::Literal(v) => ExprKind::Literal(v.clone()),
            ExprKind::List(items) => {
                ExprKind::List(items.iter().map(|e| e.substitute(var, index)).collect())
            }
            ExprKind::Map(entries) => ExprKind::Map(
                entries
                    .iter()
                    .map(|(k, e)| (k.replace(var, index), e.substitute(var, index)))
                    .collect(),
            ),
            ExprKind::GetParam { name, path } => ExprKind::GetParam {
                name: name.clone(),
                path: path.iter().map(|e| e.substitute(var, index)).collect(),
            },
            ExprKind::GetResource(r) => ExprKind::GetResource(r.clone()),
            ExprKind::GetAttr {
                resource,
                attribute,
                path,
            } => ExprKind::GetAttr {
                resource: resource.clone(),
                attribute: attribute.clone(),
                path: path.iter().map(|e| e.substitute(var, index)).collect(),
            },
            ExprKind::StrReplace { template, params } => ExprKind::StrReplace {
                template: Box::new(template.substitute(var, index)),
                params: Box::new(params.substitute(var, index)),
            },
            ExprKind::ListJoin { delimiter, lists } => ExprKind::ListJoin {
                delimiter: delimiter.replace(var, index),
                lists: lists.iter().map(|e| e.substitute(var, index)).collect(),
            },
        };
        Expr {
            at: self.at.clone(),
            kind,
        }
    }
}

fn parse_function(name: &str, at: &Location, arg: &Node) -> Result<Option<ExprKind>, Error> {
    let kind = match name {
        "get_param" => {
            let (name, path) = name_and_path(arg, at, "get_param", 1)?;
            ExprKind::GetParam {
                name: name[0].clone(),
                path,
            }
        }
        "get_resource" => {
            let name = arg
                .as_str("the argument of get_resource")
                .map_err(|_| args_err(at, "get_resource", "expected a resource name"))?;
            ExprKind::GetResource(name.to_string())
        }
        "get_attr" => {
            let (names, path) = name_and_path(arg, at, "get_attr", 2)?;
            ExprKind::GetAttr {
                resource: names[0].clone(),
                attribute: names[1].clone(),
                path,
            }
        }
        "str_replace" => {
            let entries = arg
                .as_map("the argument of str_replace")
                .map_err(|_| args_err(at, "str_replace", "expected {template: …, params: …}"))?;
            let mut template = None;
            let mut params = None;
            for (k, v) in entries {
                match k.name.as_str() {
                    "template" => template = Some(Expr::parse(v)?),
                    "params" => params = Some(Expr::parse(v)?),
                    other => {
                        return Err(args_err(
                            &k.at,
                            "str_replace",
                            format!("unknown key `{other}` (known: template, params)"),
                        ))
                    }
                }
            }
            let (Some(template), Some(params)) = (template, params) else {
                return Err(args_err(
                    at,
                    "str_replace",
                    "needs both `template` and `params`",
                ));
            };
            if let ExprKind::List(_) | ExprKind::Literal(_) = params.kind {
                return Err(args_err(
                    &params.at,
                    "str_replace",
                    "`params` must be a mapping",
                ));
            }
            ExprKind::StrReplace {
                template: Box::new(template),
                params: Box::new(params),
            }
        }
        "list_join" => {
            let items = arg
                .as_list("the argument of list_join")
                .map_err(|_| args_err(at, "list_join", "expected [delimiter, list, …]"))?;
            let Some((delim, lists)) = items.split_first() else {
                return Err(args_err(at, "list_join", "expected [delimiter, list, …]"));
            };
            let delimiter = delim
                .as_str("the delimiter")
                .map_err(|_| args_err(&delim.at, "list_join", "the delimiter must be a string"))?
                .to_string();
            if lists.is_empty() {
                return Err(args_err(at, "list_join", "nothing to join"));
            }
            ExprKind::ListJoin {
                delimiter,
                lists: lists.iter().map(Expr::parse).collect::<Result<_, _>>()?,
            }
        }
        other if UNSUPPORTED.contains(&other) || other.starts_with("Fn::") => {
            return Err(Error::at(at, Problem::UnknownFunction(other.to_string())))
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// `NAME` or `[NAME…, path…]` where the first `names` items must be strings.
fn name_and_path(
    arg: &Node,
    at: &Location,
    function: &'static str,
    names: usize,
) -> Result<(Vec<String>, Vec<Expr>), Error> {
    let usage = if names == 1 {
        "expected NAME or [NAME, key, …]"
    } else {
        "expected [RESOURCE, ATTRIBUTE, key, …]"
    };
    match &arg.value {
        Value::Str(s) if names == 1 => Ok((vec![s.clone()], vec![])),
        Value::List(items) if items.len() >= names => {
            let mut out = Vec::new();
            for item in &items[..names] {
                out.push(
                    item.as_str("a name")
                        .map_err(|_| args_err(&item.at, function, usage))?
                        .to_string(),
                );
            }
            let path = items[names..]
                .iter()
                .map(Expr::parse)
                .collect::<Result<_, _>>()?;
            Ok((out, path))
        }
        _ => Err(args_err(at, function, usage)),
    }
}

/// Follow `path` (keys into mappings, indices into lists) from `value`; `None` when a step
/// does not exist (a missing key, an index past the end, a path into a scalar). Heat does not
/// fail there: `get_param` gives `''` and `get_attr` gives null, which the callers supply.
pub(crate) fn walk_path(value: &Json, path: &[Json]) -> Option<Json> {
    let mut cur = value;
    for step in path {
        cur = match (cur, step) {
            (Json::Object(m), Json::String(k)) => m.get(k),
            (Json::Object(m), Json::Number(n)) => m.get(&n.to_string()),
            (Json::Array(l), Json::Number(n)) => n.as_u64().and_then(|i| l.get(i as usize)),
            (Json::Array(l), Json::String(s)) => s.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        }?;
    }
    Some(cur.clone())
}

/// `get_param: [NAME, path…]`: the value at `path`, or `''` where it does not exist (Heat's
/// `GetParam` answers `''` for a missing key or index).
pub(crate) fn param_path(value: &Json, path: &[Json]) -> Json {
    walk_path(value, path).unwrap_or_else(|| Json::String(String::new()))
}

/// `get_attr: [RESOURCE, ATTRIBUTE, path…]`: the value at `path`, or null where it does not
/// exist (Heat's `select_from_attribute` answers `None`).
pub(crate) fn attr_path(value: &Json, path: &[Json]) -> Json {
    walk_path(value, path).unwrap_or(Json::Null)
}

/// How Heat turns a value into text inside `str_replace`/`list_join`: strings as they are,
/// null as nothing, other scalars as written, lists and mappings as JSON.
pub(crate) fn to_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// `str_replace`: longer placeholders first, so `$var1` is not eaten by `$var`.
pub(crate) fn str_replace(template: &Json, params: &Json, at: &Location) -> Result<Json, Error> {
    let Json::String(text) = template else {
        return Err(args_err(at, "str_replace", "`template` must be a string"));
    };
    let Json::Object(params) = params else {
        return Err(args_err(at, "str_replace", "`params` must be a mapping"));
    };
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    // Replace in one pass over the text so a replacement value is never itself rewritten.
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    'outer: while !rest.is_empty() {
        for k in &keys {
            if !k.is_empty() && rest.starts_with(k.as_str()) {
                out.push_str(&to_text(&params[k.as_str()]));
                rest = &rest[k.len()..];
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(Json::String(out))
}

/// `list_join`: every list's items, as text, joined by `delimiter`.
pub(crate) fn list_join(delimiter: &str, lists: &[Json], at: &Location) -> Result<Json, Error> {
    let mut items = Vec::new();
    for list in lists {
        match list {
            Json::Array(l) => items.extend(l.iter().map(to_text)),
            other => {
                return Err(args_err(
                    at,
                    "list_join",
                    format!("expected lists to join, got {other}"),
                ))
            }
        }
    }
    Ok(Json::String(items.join(delimiter)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::yaml;
    use serde_json::json;

    fn expr(text: &str) -> Result<Expr, Error> {
        Expr::parse(&yaml::parse("e.yaml", text).unwrap())
    }

    #[test]
    fn template_expr_functions_parse_and_data_maps_stay_data() {
        let e = expr("{get_attr: [server, ip, 0]}").unwrap();
        assert!(
            matches!(e.kind, ExprKind::GetAttr { ref resource, ref attribute, ref path }
            if resource == "server" && attribute == "ip" && path.len() == 1)
        );
        // A one-key mapping that is not a function is data.
        let e = expr("{mysql: {root-password: x}}").unwrap();
        assert_eq!(
            e.as_literal(),
            Some(json!({"mysql": {"root-password": "x"}}))
        );
    }

    #[test]
    fn template_expr_unknown_function_named_with_position() {
        let e = expr("a:\n  b: {get_file: foo.sh}\n").unwrap_err();
        assert_eq!(
            e.problem(),
            Some(&Problem::UnknownFunction("get_file".into()))
        );
        assert_eq!(e.to_string().split(": ").next(), Some("e.yaml:2:7"));
    }

    #[test]
    fn template_expr_str_replace_longest_first_and_no_rescan() {
        let at = expr("x").unwrap().at;
        let out = str_replace(
            &json!("$a-$ab-$b"),
            &json!({"$a": "$b", "$ab": 1, "$b": null}),
            &at,
        )
        .unwrap();
        assert_eq!(out, json!("$b-1-"));
    }

    #[test]
    fn template_expr_list_join_and_path() {
        let at = expr("x").unwrap().at;
        assert_eq!(
            list_join(", ", &[json!(["a", 1]), json!([{"k": true}])], &at).unwrap(),
            json!("a, 1, {\"k\":true}")
        );
        let v = json!({"a": [10, {"b": "deep"}]});
        assert_eq!(
            walk_path(&v, &[json!("a"), json!(1), json!("b")]),
            Some(json!("deep"))
        );
        assert_eq!(walk_path(&v, &[json!("zz")]), None);
    }
}
