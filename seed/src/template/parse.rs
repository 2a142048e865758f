//! From YAML to a checked [`Template`]: top-level keys, version, parameters, resources (type,
//! properties, `depends_on`, `metadata`, ResourceGroup `resource_def`), outputs; then every
//! reference is resolved and the resource dependency graph is ordered (`graph.rs`).
//!
//! Every error is reported, not only the first: each parameter, resource and output is parsed
//! on its own (its first error counts for it), then every reference is checked; the errors
//! come together, by position, capped at [`super::MAX_ERRORS`].

use std::path::Path;

use super::expr::{Expr, ExprKind};
use super::graph::Broken;
use super::params::{unknown_key, Parameter};
use super::types::{names, Kind, PropSpec, ResourceType};
use super::yaml::{self, Location, Node, NodeExt, Value};
use super::{Error, Problem};

/// A parsed and checked HOT template.
#[derive(Debug, Clone)]
pub struct Template {
    /// The file name used in locations.
    pub file: String,
    /// `heat_template_version`, as written.
    pub version: String,
    /// `description`.
    pub description: Option<String>,
    /// Declared parameters, in document order.
    pub parameters: Vec<Parameter>,
    /// Resources, in document order.
    pub resources: Vec<Resource>,
    /// Outputs, in document order.
    pub outputs: Vec<Output>,
    /// Where `parameters:` is (or the top of the file): errors about given parameters the
    /// template does not declare point here.
    pub parameters_at: Location,
    /// Indices into `resources` in dependency order (dependencies first).
    pub order: Vec<usize>,
}

/// A resource of the template.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Its name.
    pub name: String,
    /// Where its name is.
    pub at: Location,
    /// Its type.
    pub rtype: ResourceType,
    /// Its properties: a mapping expression (empty when none are given).
    pub properties: Expr,
    /// Explicit dependencies.
    pub depends_on: Vec<(String, Location)>,
    /// `metadata`, if any.
    pub metadata: Option<Expr>,
    /// For `OS::Heat::ResourceGroup`: the member definition (`resource_def`), named like the
    /// group.
    pub member: Option<Box<Resource>>,
}

/// A template output.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its name.
    pub name: String,
    /// Where its name is.
    pub at: Location,
    /// `value`.
    pub value: Expr,
    /// `description`.
    pub description: Option<String>,
}

const TOP_KEYS: &[&str] = &[
    "heat_template_version",
    "description",
    "parameter_groups",
    "parameters",
    "resources",
    "outputs",
];

const RESOURCE_KEYS: &[&str] = &["type", "properties", "depends_on", "metadata"];
const RESOURCE_DEF_KEYS: &[&str] = &["type", "properties", "metadata"];

const VERSIONS: &[&str] = &[
    "2013-05-23",
    "2014-10-16",
    "2015-04-30",
    "2015-10-15",
    "2016-04-08",
    "2016-10-14",
    "2017-02-24",
    "2017-09-01",
    "2018-03-02",
    "2018-08-31",
    "2021-04-16",
    "newton",
    "ocata",
    "pike",
    "queens",
    "rocky",
    "wallaby",
];

const FUNCTIONS: &[&str] = &[
    "get_param",
    "get_resource",
    "get_attr",
    "str_replace",
    "list_join",
];

fn is_function(node: &Node) -> bool {
    matches!(&node.value, Value::Map(m) if m.len() == 1 && FUNCTIONS.contains(&m[0].0.name.as_str()))
}

impl Template {
    /// Read and parse a template file; locations name `path` as given.
    pub fn load(path: &Path) -> Result<Template, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Template::parse(&path.display().to_string(), &text)
    }

    /// Parse template text; `file` is the name used in error locations.
    pub fn parse(file: &str, text: &str) -> Result<Template, Error> {
        let root = yaml::parse(file, text)?;
        let entries = root.as_map("a template")?;
        let mut t = Template {
            file: file.to_string(),
            version: String::new(),
            description: None,
            parameters: vec![],
            resources: vec![],
            outputs: vec![],
            parameters_at: root.at.clone(),
            order: vec![],
        };
        let mut version_seen = false;
        // Every declaration is parsed on its own, so one mistake does not hide the next; a
        // declaration that fails is remembered so references to it add no errors of their own.
        let mut errors = Vec::new();
        let mut broken = Broken::default();
        for (k, v) in entries {
            let done = match k.name.as_str() {
                "heat_template_version" => {
                    version_seen = true;
                    v.scalar_text("heat_template_version").and_then(|version| {
                        if !VERSIONS.contains(&version.as_str()) {
                            return Err(Error::at(&v.at, Problem::Version(version)));
                        }
                        t.version = version;
                        Ok(())
                    })
                }
                "description" => v
                    .scalar_text("description")
                    .map(|d| t.description = Some(d)),
                // Accepted for compatibility (they only group parameters in UIs).
                "parameter_groups" => v.as_list("parameter_groups").map(drop),
                "parameters" => {
                    t.parameters_at = k.at.clone();
                    let done = each(v, "parameters", |name, decl| {
                        match Parameter::parse(&name.name, &name.at, decl) {
                            Ok(p) => t.parameters.push(p),
                            Err(e) => {
                                broken.params.insert(name.name.clone());
                                errors.push(e);
                            }
                        }
                    });
                    broken.all_params |= done.is_err();
                    done
                }
                "resources" => {
                    let done = each(v, "resources", |name, decl| {
                        match parse_resource(&name.name, &name.at, decl) {
                            Ok(r) => t.resources.push(r),
                            Err(e) => {
                                broken.resources.insert(name.name.clone());
                                errors.push(e);
                            }
                        }
                    });
                    broken.all_resources |= done.is_err();
                    done
                }
                "outputs" => each(v, "outputs", |name, decl| {
                    match parse_output(&name.name, &name.at, decl) {
                        Ok(o) => t.outputs.push(o),
                        Err(e) => errors.push(e),
                    }
                }),
                other => Err(unknown_key(&k.at, "the template", other, TOP_KEYS)),
            };
            errors.extend(done.err());
        }
        if !version_seen {
            errors.push(Error::at(
                &root.at,
                Problem::MissingKey {
                    what: "the template".into(),
                    key: "heat_template_version".into(),
                },
            ));
        }
        errors.extend(t.reference_errors(&broken));
        match t.dependency_order() {
            Ok(order) => t.order = order,
            Err(e) => errors.push(e),
        }
        match Error::all(errors) {
            Some(e) => Err(e),
            None => Ok(t),
        }
    }

    /// The resource called `name`.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The parameter called `name`.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

impl Resource {
    /// Every expression of the resource (properties, metadata, member definition).
    pub fn exprs(&self) -> Vec<&Expr> {
        let mut out = vec![&self.properties];
        out.extend(self.metadata.as_ref());
        if let Some(m) = &self.member {
            out.extend(m.exprs());
        }
        out
    }

    /// Whether `get_attr` may ask this resource for `attribute`.
    pub fn has_attribute(&self, attribute: &str) -> bool {
        if self.rtype.has_attribute(attribute) {
            return true;
        }
        match &self.member {
            // `resource.N` or `resource.N.attr`, and pass-through member attributes.
            Some(m) => {
                if let Some(rest) = attribute.strip_prefix("resource.") {
                    let mut parts = rest.splitn(2, '.');
                    let index_ok = parts.next().is_some_and(|n| n.parse::<usize>().is_ok());
                    index_ok && parts.next().is_none_or(|a| m.has_attribute(a))
                } else {
                    m.has_attribute(attribute)
                }
            }
            None => false,
        }
    }

    /// A literal property value, if the property is set and contains no function.
    pub fn literal(&self, property: &str) -> Option<serde_json::Value> {
        self.properties.get(property)?.as_literal()
    }
}

/// Call `f` on each entry of the mapping `v` (nothing when `v` is null).
fn each<'a>(
    v: &'a Node,
    what: &str,
    mut f: impl FnMut(&'a yaml::Key, &'a Node),
) -> Result<(), Error> {
    if !matches!(v.value, Value::Null) {
        for (name, decl) in v.as_map(what)? {
            f(name, decl);
        }
    }
    Ok(())
}

fn parse_resource(name: &str, name_at: &Location, node: &Node) -> Result<Resource, Error> {
    parse_resource_with(name, name_at, node, RESOURCE_KEYS)
}

fn parse_resource_with(
    name: &str,
    name_at: &Location,
    node: &Node,
    keys: &[&str],
) -> Result<Resource, Error> {
    let what = format!("resource `{name}`");
    let mut rtype = None;
    let mut props_node = None;
    let mut depends_on = vec![];
    let mut metadata = None;
    for (k, v) in node.as_map(&what)? {
        match k.name.as_str() {
            "type" if keys.contains(&"type") => {
                let t = v.as_str("a resource type")?;
                rtype = Some(
                    ResourceType::from_name(t)
                        .ok_or_else(|| Error::at(&v.at, Problem::UnknownType(t.to_string())))?,
                );
            }
            "properties" if keys.contains(&"properties") => props_node = Some(v),
            "metadata" if keys.contains(&"metadata") => {
                v.as_map("`metadata`")?;
                metadata = Some(Expr::parse(v)?);
            }
            "depends_on" if keys.contains(&"depends_on") => match &v.value {
                Value::Str(s) => depends_on.push((s.clone(), v.at.clone())),
                Value::List(items) => {
                    for i in items {
                        depends_on
                            .push((i.as_str("a depends_on entry")?.to_string(), i.at.clone()));
                    }
                }
                _ => return Err(v.expected("`depends_on`", "a resource name or a list")),
            },
            other => return Err(unknown_key(&k.at, &what, other, keys)),
        }
    }
    let Some(rtype) = rtype else {
        return Err(Error::at(
            name_at,
            Problem::MissingKey {
                what,
                key: "type".into(),
            },
        ));
    };
    let properties = match props_node {
        Some(p) if !matches!(p.value, Value::Null) => {
            let e = Expr::parse(p)?;
            let entries = p.as_map("`properties`")?;
            check_properties(name, rtype, rtype.properties(), entries, &p.at)?;
            e
        }
        _ => {
            check_properties(name, rtype, rtype.properties(), &[], name_at)?;
            Expr {
                at: name_at.clone(),
                kind: ExprKind::Map(vec![]),
            }
        }
    };
    let member = if rtype == ResourceType::ResourceGroup {
        let (k, def) = props_node
            .and_then(|p| p.as_map("").ok())
            .and_then(|m| m.iter().find(|(k, _)| k.name == "resource_def"))
            .expect("resource_def is a required property");
        if is_function(def) {
            return Err(def.expected("`resource_def`", "a literal resource definition"));
        }
        let m = parse_resource_with(name, &k.at, def, RESOURCE_DEF_KEYS)?;
        if m.rtype == ResourceType::ResourceGroup {
            return Err(Error::at(
                &def.at,
                Problem::Eval("a ResourceGroup of ResourceGroups is not supported".into()),
            ));
        }
        Some(Box::new(m))
    } else {
        None
    };
    Ok(Resource {
        name: name.to_string(),
        at: name_at.clone(),
        rtype,
        properties,
        depends_on,
        metadata,
        member,
    })
}

/// Check property names, required properties and the shape of literal values.
fn check_properties(
    resource: &str,
    rtype: ResourceType,
    specs: &'static [PropSpec],
    entries: &[(yaml::Key, Node)],
    at: &Location,
) -> Result<(), Error> {
    for (k, v) in entries {
        let Some(spec) = specs.iter().find(|s| s.name == k.name) else {
            return Err(Error::at(
                &k.at,
                Problem::UnknownProperty {
                    rtype: rtype.name(),
                    property: k.name.clone(),
                    known: names(specs),
                },
            ));
        };
        check_value(resource, rtype, spec, v)?;
    }
    for spec in specs.iter().filter(|s| s.required) {
        if !entries.iter().any(|(k, _)| k.name == spec.name) {
            return Err(Error::at(
                at,
                Problem::MissingProperty {
                    resource: resource.to_string(),
                    rtype: rtype.name(),
                    property: spec.name,
                },
            ));
        }
    }
    Ok(())
}

fn check_value(
    resource: &str,
    rtype: ResourceType,
    spec: &PropSpec,
    v: &Node,
) -> Result<(), Error> {
    if is_function(v) {
        return Ok(());
    }
    let what = format!("property `{}` of `{resource}`", spec.name);
    match (spec.kind, &v.value) {
        (Kind::Any, _) => {}
        (Kind::Str, Value::Str(s)) => {
            if !spec.allowed.is_empty() && !spec.allowed.contains(&s.as_str()) {
                return Err(Error::at(
                    &v.at,
                    Problem::NotAllowed {
                        what,
                        allowed: spec.allowed.join(", "),
                        found: s.clone(),
                    },
                ));
            }
        }
        (Kind::Str, Value::Int(_) | Value::Float(_) | Value::Bool(_)) => {}
        (Kind::Int, Value::Int(_)) => {}
        (Kind::Int, Value::Str(s)) if s.trim().parse::<i64>().is_ok() => {}
        (Kind::Bool, Value::Bool(_)) => {}
        (Kind::Map, Value::Map(_)) => {}
        (Kind::List, Value::List(_)) => {}
        (Kind::Record(inner), Value::Map(m)) => {
            check_properties(resource, rtype, inner, m, &v.at)?;
        }
        (Kind::ListOf(inner), Value::List(items)) => {
            for item in items {
                if is_function(item) {
                    continue;
                }
                let m = item.as_map(&format!("an item of {what}"))?;
                check_properties(resource, rtype, inner, m, &item.at)?;
            }
        }
        (kind, _) => {
            let expected = kind.describe();
            return Err(v.expected(&what, expected));
        }
    }
    Ok(())
}

fn parse_output(name: &str, name_at: &Location, node: &Node) -> Result<Output, Error> {
    let what = format!("output `{name}`");
    let mut value = None;
    let mut description = None;
    for (k, v) in node.as_map(&what)? {
        match k.name.as_str() {
            "value" => value = Some(Expr::parse(v)?),
            "description" => description = Some(v.scalar_text("a description")?),
            other => return Err(unknown_key(&k.at, &what, other, &["value", "description"])),
        }
    }
    let value = value.ok_or_else(|| {
        Error::at(
            name_at,
            Problem::MissingKey {
                what,
                key: "value".into(),
            },
        )
    })?;
    Ok(Output {
        name: name.to_string(),
        at: name_at.clone(),
        value,
        description,
    })
}
