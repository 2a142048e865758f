//! A template bound to parameters: typed parameter values, ResourceGroups expanded into
//! members in dependency order, and the evaluator of intrinsic functions against the
//! attributes of created resources (supplied through [`Resolver`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::expr::{self, Expr, ExprKind};
use super::parse::{Resource, Template};
use super::types::{Kind, ResourceType};
use super::yaml::Location;
use super::{Error, Problem};

/// What the orchestrator knows about created resources; evaluation asks it.
pub trait Resolver {
    /// The reference id of a created member (what `get_resource` returns); `None` if the
    /// member does not exist yet.
    fn reference(&self, member: &str) -> Option<Json>;
    /// An attribute of a created member; `None` if not known (yet).
    fn attribute(&self, member: &str, attribute: &str) -> Option<Json>;
}

/// One concrete resource to create: a plain resource, or a member of a ResourceGroup.
#[derive(Debug, Clone)]
pub struct Member {
    /// `control`, or `compute-0` for members of group `compute`.
    pub name: String,
    /// The template resource it comes from (the group for members).
    pub resource: String,
    /// The member index within its group.
    pub index: Option<usize>,
    /// Its type.
    pub rtype: ResourceType,
    /// Properties with parameters resolved and `%index%` substituted; `get_resource` /
    /// `get_attr` stay as functions until [`Stack::evaluate`].
    pub properties: Expr,
    /// `metadata`, resolved the same way.
    pub metadata: Option<Expr>,
    /// The members this one waits for.
    pub depends_on: BTreeSet<String>,
}

/// A template bound to parameter values, groups expanded.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The template.
    pub template: Template,
    /// Every parameter's value (given or default).
    pub params: BTreeMap<String, Json>,
    /// Concrete resources in dependency order (dependencies first).
    pub members: Vec<Member>,
    /// Per group, the member indices removed by `removal_policies`: never reused, so the
    /// orchestrator must keep them with the stack and updates carry them forward.
    pub removed: BTreeMap<String, BTreeSet<usize>>,
}

/// Split a `key=value` parameter argument.
pub fn split_assignment(arg: &str) -> Option<(&str, &str)> {
    arg.split_once('=').filter(|(k, _)| !k.is_empty())
}

impl Stack {
    /// Bind `params` (`(name, value-as-text)`) to a template for `stack create`.
    pub fn new(template: Template, params: &[(String, String)]) -> Result<Stack, Error> {
        Stack::bind(template, params, None, BTreeMap::new())
    }

    /// Bind a (possibly changed) template and parameters for `stack update` of `self`:
    /// group members keep their indices and `removal_policies` apply to `self`'s members.
    pub fn update(&self, template: Template, params: &[(String, String)]) -> Result<Stack, Error> {
        Stack::bind(template, params, Some(self), BTreeMap::new())
    }

    /// Rebuild a stored stack exactly: the same template text, parameters and
    /// [`Stack::removed`] indices that were stored give the same members.
    pub fn restore(
        template: Template,
        params: &[(String, String)],
        removed: BTreeMap<String, BTreeSet<usize>>,
    ) -> Result<Stack, Error> {
        let mut stack = Stack::bind(template, params, None, removed)?;
        stack.removed.retain(|_, r| !r.is_empty());
        Ok(stack)
    }

    fn bind(
        template: Template,
        given: &[(String, String)],
        old: Option<&Stack>,
        mut removed: BTreeMap<String, BTreeSet<usize>>,
    ) -> Result<Stack, Error> {
        let mut params = BTreeMap::new();
        for (name, text) in given {
            let p = template.parameter(name).ok_or_else(|| {
                Error::at(
                    &template.parameters_at,
                    Problem::UndeclaredParameter(name.clone()),
                )
            })?;
            let value = p.convert(text, &p.at)?;
            p.check(&value)?;
            if params.insert(name.clone(), value).is_some() {
                return Err(Error::at(
                    &p.at,
                    Problem::ParameterType {
                        name: name.clone(),
                        why: "given more than once".into(),
                    },
                ));
            }
        }
        for p in &template.parameters {
            if !params.contains_key(&p.name) {
                let d = p
                    .default
                    .clone()
                    .ok_or_else(|| Error::at(&p.at, Problem::MissingParameter(p.name.clone())))?;
                params.insert(p.name.clone(), d);
            }
        }
        if let Some(old) = old {
            removed.clone_from(&old.removed);
        }
        let members = expand(&template, &params, &mut removed, old)?;
        Ok(Stack {
            template,
            params,
            members,
            removed,
        })
    }

    /// Resolve parameters in an expression (functions on resources stay).
    pub fn resolve(&self, e: &Expr) -> Result<Expr, Error> {
        resolve_params(&self.params, e)
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The members of group `resource` (or the resource itself if it is not a group).
    pub fn members_of(&self, resource: &str) -> impl Iterator<Item = &Member> {
        let resource = resource.to_string();
        self.members.iter().filter(move |m| m.resource == resource)
    }

    /// Evaluate an expression completely.
    pub fn evaluate(&self, e: &Expr, r: &dyn Resolver) -> Result<Json, Error> {
        let e = self.resolve(e)?;
        self.eval(&e, r)
    }

    /// A member's properties, fully evaluated.
    pub fn properties(&self, member: &str, r: &dyn Resolver) -> Result<Json, Error> {
        let m = self.member(member).ok_or_else(|| {
            Error::at(
                &self.template.parameters_at,
                Problem::UnknownResource(member.to_string()),
            )
        })?;
        self.eval(&m.properties, r)
    }

    /// Every output, fully evaluated, in document order.
    pub fn outputs(&self, r: &dyn Resolver) -> Result<Vec<(String, Json)>, Error> {
        self.template
            .outputs
            .iter()
            .map(|o| Ok((o.name.clone(), self.evaluate(&o.value, r)?)))
            .collect()
    }

    fn eval(&self, e: &Expr, r: &dyn Resolver) -> Result<Json, Error> {
        Ok(match &e.kind {
            ExprKind::Literal(v) => v.clone(),
            ExprKind::List(items) => Json::Array(
                items
                    .iter()
                    .map(|i| self.eval(i, r))
                    .collect::<Result<_, _>>()?,
            ),
            ExprKind::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.eval(v, r)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            ExprKind::GetParam { .. } => unreachable!("parameters are resolved first"),
            ExprKind::GetResource(name) => self.reference(name, r, &e.at)?,
            ExprKind::GetAttr {
                resource,
                attribute,
                path,
            } => {
                let path: Vec<Json> = path
                    .iter()
                    .map(|p| self.eval(p, r))
                    .collect::<Result<_, _>>()?;
                self.attribute(resource, attribute, &path, r, &e.at)?
            }
            ExprKind::StrReplace { template, params } => {
                expr::str_replace(&self.eval(template, r)?, &self.eval(params, r)?, &e.at)?
            }
            ExprKind::ListJoin { delimiter, lists } => {
                let lists: Vec<Json> = lists
                    .iter()
                    .map(|l| self.eval(l, r))
                    .collect::<Result<_, _>>()?;
                expr::list_join(delimiter, &lists, &e.at)?
            }
        })
    }

    fn is_group(&self, resource: &str) -> bool {
        self.template
            .resource(resource)
            .is_some_and(|r| r.member.is_some())
    }

    fn reference(&self, member: &str, r: &dyn Resolver, at: &Location) -> Result<Json, Error> {
        match r.reference(member) {
            Some(v) => Ok(v),
            // A group has no physical id of its own; its name stands for it.
            None if self.is_group(member) => Ok(Json::String(member.to_string())),
            None => Err(Error::at(
                at,
                Problem::NotReady {
                    resource: member.to_string(),
                    attribute: "its reference (get_resource)".into(),
                },
            )),
        }
    }

    fn plain_attribute(
        &self,
        member: &str,
        attribute: &str,
        path: &[Json],
        r: &dyn Resolver,
        at: &Location,
    ) -> Result<Json, Error> {
        let v = r.attribute(member, attribute).ok_or_else(|| {
            Error::at(
                at,
                Problem::NotReady {
                    resource: member.to_string(),
                    attribute: attribute.to_string(),
                },
            )
        })?;
        Ok(expr::attr_path(&v, path))
    }

    fn attribute(
        &self,
        resource: &str,
        attribute: &str,
        path: &[Json],
        r: &dyn Resolver,
        at: &Location,
    ) -> Result<Json, Error> {
        if !self.is_group(resource) {
            return self.plain_attribute(resource, attribute, path, r, at);
        }
        let members: Vec<&Member> = self.members_of(resource).collect();
        let key = |m: &Member| m.index.expect("group members have an index").to_string();
        match attribute {
            "refs" => {
                let refs = members
                    .iter()
                    .map(|m| self.reference(&m.name, r, at))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(expr::attr_path(&Json::Array(refs), path))
            }
            "refs_map" => {
                let refs = members
                    .iter()
                    .map(|m| Ok((key(m), self.reference(&m.name, r, at)?)))
                    .collect::<Result<serde_json::Map<_, _>, Error>>()?;
                Ok(expr::attr_path(&Json::Object(refs), path))
            }
            "attributes" => {
                let Some((Json::String(attr), rest)) = path.split_first() else {
                    return Err(Error::at(
                        at,
                        Problem::Eval("`attributes` of a group needs an attribute name".into()),
                    ));
                };
                let map = members
                    .iter()
                    .map(|m| Ok((key(m), self.plain_attribute(&m.name, attr, rest, r, at)?)))
                    .collect::<Result<serde_json::Map<_, _>, Error>>()?;
                Ok(Json::Object(map))
            }
            other => {
                if let Some(rest) = other.strip_prefix("resource.") {
                    let (index, attr) = rest
                        .split_once('.')
                        .map_or((rest, None), |(i, a)| (i, Some(a)));
                    let name = format!("{resource}-{index}");
                    if self.member(&name).is_none() {
                        return Err(Error::at(
                            at,
                            Problem::Eval(format!("group `{resource}` has no member {index}")),
                        ));
                    }
                    return match attr {
                        Some(a) => self.plain_attribute(&name, a, path, r, at),
                        None => Ok(expr::attr_path(&self.reference(&name, r, at)?, path)),
                    };
                }
                // Pass-through: the attribute of every member, path applied to each.
                members
                    .iter()
                    .map(|m| self.plain_attribute(&m.name, other, path, r, at))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Json::Array)
            }
        }
    }
}

fn expand(
    template: &Template,
    params: &BTreeMap<String, Json>,
    removed: &mut BTreeMap<String, BTreeSet<usize>>,
    old: Option<&Stack>,
) -> Result<Vec<Member>, Error> {
    let mut names_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut members = Vec::new();
    for &i in &template.order {
        let r = &template.resources[i];
        let deps: BTreeSet<String> = template
            .dependencies(r)
            .into_iter()
            .flat_map(|d| names_of[&template.resources[d].name].clone())
            .collect();
        let mut names = vec![];
        match &r.member {
            None => {
                names.push(r.name.clone());
                members.push(Member {
                    name: r.name.clone(),
                    resource: r.name.clone(),
                    index: None,
                    rtype: r.rtype,
                    properties: checked(r.rtype, resolve_params(params, &r.properties)?)?,
                    metadata: r
                        .metadata
                        .as_ref()
                        .map(|m| resolve_params(params, m))
                        .transpose()?,
                    depends_on: deps,
                });
            }
            Some(def) => {
                for index in group_indices(params, removed, r, old)? {
                    let var = index_var(params, r)?;
                    let idx = index.to_string();
                    let name = format!("{}-{index}", r.name);
                    names.push(name.clone());
                    members.push(Member {
                        name,
                        resource: r.name.clone(),
                        index: Some(index),
                        rtype: def.rtype,
                        properties: checked(
                            def.rtype,
                            resolve_params(params, &def.properties.substitute(&var, &idx))?,
                        )?,
                        metadata: def
                            .metadata
                            .as_ref()
                            .map(|m| resolve_params(params, &m.substitute(&var, &idx)))
                            .transpose()?,
                        depends_on: deps.clone(),
                    });
                }
            }
        }
        names_of.insert(r.name.clone(), names);
    }
    Ok(members)
}

fn index_var(params: &BTreeMap<String, Json>, group: &Resource) -> Result<String, Error> {
    match group.properties.get("index_var") {
        None => Ok("%index%".into()),
        Some(e) => match resolve_params(params, e)?.as_literal() {
            Some(Json::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(Error::at(
                &e.at,
                Problem::Eval("`index_var` must be a non-empty string".into()),
            )),
        },
    }
}

/// The most members one group may have: far above any seed's machine room, far below what
/// exhausts its memory (a token holder's `count: 1e12` is an error, not an allocation).
pub const MAX_GROUP_COUNT: usize = 10_000;

/// The member indices of a group: the first `count` indices not removed before. Members
/// named in `removal_policies` that exist in the old stack are removed for good (Heat's
/// name blacklist), so scaling in removes them and later scale-outs never reuse them.
fn group_indices(
    params: &BTreeMap<String, Json>,
    removed: &mut BTreeMap<String, BTreeSet<usize>>,
    group: &Resource,
    old: Option<&Stack>,
) -> Result<Vec<usize>, Error> {
    let count = match group.properties.get("count") {
        None => 1,
        Some(e) => {
            let v = resolve_params(params, e)?.as_literal();
            let n = v
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .ok_or_else(|| {
                    Error::at(
                        &e.at,
                        Problem::Eval(format!(
                            "`count` of `{}` must be a non-negative integer known from parameters, not {}",
                            group.name,
                            v.map(|v| v.to_string()).unwrap_or_else(|| "a resource attribute".into())
                        )),
                    )
                })?;
            if n > MAX_GROUP_COUNT as u64 {
                return Err(Error::at(
                    &e.at,
                    Problem::Eval(format!(
                        "`count` of `{}` is {n}: at most {MAX_GROUP_COUNT}",
                        group.name
                    )),
                ));
            }
            n as usize
        }
    };
    let removed = removed.entry(group.name.clone()).or_default();
    if let (Some(old), Some(policies)) = (old, group.properties.get("removal_policies")) {
        let existing: BTreeSet<usize> = old
            .members
            .iter()
            .filter(|m| m.resource == group.name)
            .filter_map(|m| m.index)
            .collect();
        let policies = resolve_params(params, policies)?;
        let Some(Json::Array(policies)) = policies.as_literal() else {
            return Err(Error::at(
                &policies.at,
                Problem::Eval("`removal_policies` must be known from parameters".into()),
            ));
        };
        for p in &policies {
            for entry in p
                .get("resource_list")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                let text = expr::to_text(entry);
                let text = text
                    .strip_prefix(&format!("{}-", group.name))
                    .unwrap_or(&text);
                if let Ok(i) = text.parse::<usize>() {
                    if existing.contains(&i) {
                        removed.insert(i);
                    }
                }
            }
        }
    }
    Ok((0..).filter(|i| !removed.contains(i)).take(count).collect())
}

/// Check properties whose values became known from parameters (the parser could only check
/// literals): shape and allowed values, reported where the value comes from.
fn checked(rtype: ResourceType, props: Expr) -> Result<Expr, Error> {
    for spec in rtype.properties() {
        let Some(e) = props.get(spec.name) else {
            continue;
        };
        let Some(v) = e.as_literal() else {
            continue;
        };
        let ok = match spec.kind {
            Kind::Any => true,
            Kind::Str => !matches!(v, Json::Array(_) | Json::Object(_) | Json::Null),
            Kind::Int => v.is_i64() || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok()),
            Kind::Bool => v.is_boolean(),
            Kind::Map | Kind::Record(_) => v.is_object(),
            Kind::List | Kind::ListOf(_) => v.is_array(),
        };
        let what = || format!("property `{}` ({})", spec.name, rtype.name());
        if !ok {
            return Err(Error::at(
                &e.at,
                Problem::WrongKind {
                    what: what(),
                    expected: spec.kind.describe().into(),
                    found: json_kind(&v),
                },
            ));
        }
        if let (false, Json::String(s)) = (spec.allowed.is_empty(), &v) {
            if !spec.allowed.contains(&s.as_str()) {
                return Err(Error::at(
                    &e.at,
                    Problem::NotAllowed {
                        what: what(),
                        allowed: spec.allowed.join(", "),
                        found: s.clone(),
                    },
                ));
            }
        }
    }
    Ok(props)
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

/// Replace `get_param` by values and fold `str_replace`/`list_join` whose inputs are known.
fn resolve_params(params: &BTreeMap<String, Json>, e: &Expr) -> Result<Expr, Error> {
    let at = &e.at;
    let kind = match &e.kind {
        ExprKind::Literal(_) | ExprKind::GetResource(_) => return Ok(e.clone()),
        ExprKind::List(items) => ExprKind::List(
            items
                .iter()
                .map(|i| resolve_params(params, i))
                .collect::<Result<_, _>>()?,
        ),
        ExprKind::Map(entries) => ExprKind::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), resolve_params(params, v)?)))
                .collect::<Result<_, Error>>()?,
        ),
        ExprKind::GetParam { name, path } => {
            let value = params
                .get(name)
                .ok_or_else(|| Error::at(at, Problem::UnknownParameter(name.clone())))?;
            let mut steps = Vec::new();
            for p in path {
                let p = resolve_params(params, p)?;
                steps.push(p.as_literal().ok_or_else(|| {
                    Error::at(
                        &p.at,
                        Problem::Eval("a get_param path must be known from parameters".into()),
                    )
                })?);
            }
            return Ok(Expr::literal(at, expr::param_path(value, &steps)));
        }
        ExprKind::GetAttr {
            resource,
            attribute,
            path,
        } => ExprKind::GetAttr {
            resource: resource.clone(),
            attribute: attribute.clone(),
            path: path
                .iter()
                .map(|p| resolve_params(params, p))
                .collect::<Result<_, _>>()?,
        },
        ExprKind::StrReplace {
            template,
            params: p,
        } => {
            let template = resolve_params(params, template)?;
            let p = resolve_params(params, p)?;
            if let (Some(t), Some(pv)) = (template.as_literal(), p.as_literal()) {
                return Ok(Expr::literal(at, expr::str_replace(&t, &pv, at)?));
            }
            ExprKind::StrReplace {
                template: Box::new(template),
                params: Box::new(p),
            }
        }
        ExprKind::ListJoin { delimiter, lists } => {
            let lists: Vec<Expr> = lists
                .iter()
                .map(|l| resolve_params(params, l))
                .collect::<Result<_, _>>()?;
            if let Some(values) = lists
                .iter()
                .map(Expr::as_literal)
                .collect::<Option<Vec<_>>>()
            {
                return Ok(Expr::literal(at, expr::list_join(delimiter, &values, at)?));
            }
            ExprKind::ListJoin {
                delimiter: delimiter.clone(),
                lists,
            }
        }
    };
    Ok(Expr {
        at: at.clone(),
        kind,
    })
}
