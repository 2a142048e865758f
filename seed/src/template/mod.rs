//! Heat (HOT) templates: parsing with line numbers, intrinsic functions, resource types.
//!
//! The pipeline is sans-IO (only [`Template::load`] reads a file):
//!
//! 1. [`Template::parse`]: YAML with positions ([`yaml`]) → a [`Template`] whose values are
//!    [`Expr`] trees (intrinsic functions parsed, resource types and properties checked,
//!    references resolved, the dependency graph checked for cycles). Anything the seed does not
//!    implement is an [`Error`] naming `FILE:LINE:COLUMN`; every error of the template is
//!    reported at once (one per declaration plus every bad reference, up to [`MAX_ERRORS`]).
//! 2. [`Stack::new`]: bind `key=value` parameters (typed, constrained), expand
//!    `OS::Heat::ResourceGroup`s into members (`compute-0`, `compute-1`, …) and order every
//!    member topologically.
//! 3. [`Stack::evaluate`] / [`Stack::properties`] / [`Stack::outputs`]: evaluate functions
//!    against attributes of created resources, supplied by the orchestrator through
//!    [`Resolver`].
//! 4. [`Stack::update`] + [`plan`]: what a `stack update` adds, deletes, replaces or updates
//!    in place.
//!
//! How `seed stack create|update NAME -f FILE -P k=v` uses it:
//!
//! ```no_run
//! # use seed::template::*;
//! # fn demo(old: &Stack) -> Result<(), Error> {
//! let template = Template::load("overcloud.yaml".as_ref())?;
//! let params = vec![("compute_count".to_string(), "3".to_string())]; // from split_assignment
//! let new = old.update(template, &params)?; // or Stack::new for create
//! let todo = plan(old, &new);
//! for name in &todo.create { /* provision new.member(name) in order */ }
//! // Store the template text, the parameters and `new.removed`; Stack::restore rebuilds it.
//! # Ok(()) }
//! ```

mod expr;
mod graph;
mod params;
mod parse;
mod plan;
mod random;
mod stack;
mod types;
pub mod yaml;

use thiserror::Error as ThisError;

pub use expr::{Expr, ExprKind};
pub use params::{Constraint, ConstraintKind, ParamType, Parameter};
pub use parse::{Output, Resource, Template};
pub use plan::{plan, Plan};
pub use random::random_string;
pub use stack::{split_assignment, Member, Resolver, Stack};
pub use types::{Kind, PropSpec, ResourceType, Update};
pub use yaml::Location;

/// Everything that can go wrong with a template; all but [`Error::Read`] name a location.
/// Parsing reports every error a template has at once ([`Error::Many`]).
#[derive(Debug, ThisError)]
pub enum Error {
    /// The template file could not be read.
    #[error("cannot read template {path}")]
    Read {
        /// The path that was read.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The template (or a parameter, or an evaluation) is wrong at a place in the file.
    #[error("{at}: {problem}")]
    At {
        /// Where.
        at: Location,
        /// What.
        problem: Problem,
    },
    /// Several errors of one template, by position, one per line: at most [`MAX_ERRORS`]
    /// (each an [`Error::At`]), `more` counts those left out.
    #[error("{}", show_many(errors, *more))]
    Many {
        /// The errors shown, in the order of their positions.
        errors: Vec<Error>,
        /// How many more the template has.
        more: usize,
    },
}

/// The most errors of one template reported at once (a template with more usually has one
/// mistake repeated; the first ones are enough to see it).
pub const MAX_ERRORS: usize = 20;

fn show_many(errors: &[Error], more: usize) -> String {
    let mut lines: Vec<String> = errors.iter().map(Error::to_string).collect();
    if more > 0 {
        lines.push(format!("… and {more} more errors"));
    }
    lines.join("\n")
}

impl Error {
    pub(crate) fn at(at: &Location, problem: Problem) -> Self {
        Error::At {
            at: at.clone(),
            problem,
        }
    }

    /// All of `errors` as one error: ordered by position, capped at [`MAX_ERRORS`]; a single
    /// error is itself. `None` when there is none.
    pub(crate) fn all(mut errors: Vec<Error>) -> Option<Self> {
        let key = |e: &Error| e.location().map(|at| (at.line, at.col));
        errors.sort_by_key(key);
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            n => {
                errors.truncate(MAX_ERRORS);
                Some(Error::Many {
                    errors,
                    more: n.saturating_sub(MAX_ERRORS),
                })
            }
        }
    }

    /// Every error this one stands for (itself, or each of [`Error::Many`]).
    pub fn errors(&self) -> &[Error] {
        match self {
            Error::Many { errors, .. } => errors,
            single => std::slice::from_ref(single),
        }
    }

    /// The problem, if this error has a location (of several, the first's).
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::At { problem, .. } => Some(problem),
            Error::Read { .. } => None,
            Error::Many { errors, .. } => errors.first()?.problem(),
        }
    }

    /// The location, if any (of several, the first's).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::At { at, .. } => Some(at),
            Error::Read { .. } => None,
            Error::Many { errors, .. } => errors.first()?.location(),
        }
    }
}

/// What is wrong (the message after `FILE:LINE:COLUMN: `).
#[derive(Debug, Clone, PartialEq, ThisError)]
pub enum Problem {
    /// The YAML itself is malformed.
    #[error("YAML: {0}")]
    Yaml(String),
    /// A value has the wrong shape.
    #[error("{what} must be {expected}, not {found}")]
    WrongKind {
        /// What the value is (e.g. "property `count` of `compute`").
        what: String,
        /// What it must be.
        expected: String,
        /// What it is.
        found: &'static str,
    },
    /// A mapping has a key the seed does not know.
    #[error("unknown key `{key}` in {what} (known: {known})")]
    UnknownKey {
        /// The mapping.
        what: String,
        /// The key.
        key: String,
        /// The keys that are allowed.
        known: String,
    },
    /// A mandatory key is missing.
    #[error("{what} has no `{key}`")]
    MissingKey {
        /// The mapping.
        what: String,
        /// The key.
        key: String,
    },
    /// `heat_template_version` names a version the seed does not know.
    #[error("unsupported heat_template_version `{0}` (use a date from 2013-05-23 to 2021-04-16, or newton … wallaby)")]
    Version(String),
    /// A Heat intrinsic function the seed does not implement.
    #[error("unsupported function `{0}` (supported: get_param, get_resource, get_attr, str_replace, list_join)")]
    UnknownFunction(String),
    /// A function's arguments are malformed.
    #[error("bad arguments to `{function}`: {why}")]
    FunctionArgs {
        /// The function.
        function: &'static str,
        /// Why.
        why: String,
    },
    /// A resource type the seed does not implement.
    #[error("unknown resource type `{0}` (supported: {known})", known = types::ResourceType::known_names())]
    UnknownType(String),
    /// A property that the resource type does not have.
    #[error("{rtype} has no property `{property}` (known: {known})")]
    UnknownProperty {
        /// The resource type.
        rtype: &'static str,
        /// The property.
        property: String,
        /// The properties that exist.
        known: String,
    },
    /// A required property is missing.
    #[error("resource `{resource}` ({rtype}) is missing required property `{property}`")]
    MissingProperty {
        /// The resource.
        resource: String,
        /// Its type.
        rtype: &'static str,
        /// The property.
        property: &'static str,
    },
    /// A value is not one of those allowed.
    #[error("{what} must be one of {allowed}, not `{found}`")]
    NotAllowed {
        /// What.
        what: String,
        /// The values allowed.
        allowed: String,
        /// The value found.
        found: String,
    },
    /// `get_param` of a parameter the template does not declare.
    #[error("no parameter `{0}` is declared")]
    UnknownParameter(String),
    /// A reference to a resource the template does not declare.
    #[error("no resource `{0}` in this template")]
    UnknownResource(String),
    /// `get_attr` of an attribute the resource type does not have.
    #[error("resource `{resource}` ({rtype}) has no attribute `{attribute}` (known: {known})")]
    UnknownAttribute {
        /// The resource.
        resource: String,
        /// Its type.
        rtype: &'static str,
        /// The attribute.
        attribute: String,
        /// The attributes that exist.
        known: String,
    },
    /// Resources depend on each other in a loop.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A parameter was given (`-P key=value`) that the template does not declare.
    #[error("parameter `{0}` is given but the template does not declare it")]
    UndeclaredParameter(String),
    /// A declared parameter without default was not given.
    #[error("parameter `{0}` has no default and was not given")]
    MissingParameter(String),
    /// A parameter value does not convert to its type.
    #[error("parameter `{name}`: {why}")]
    ParameterType {
        /// The parameter.
        name: String,
        /// Why (the value is left out for hidden parameters).
        why: String,
    },
    /// A parameter value violates a constraint.
    #[error("parameter `{name}`: {why}")]
    Constraint {
        /// The parameter.
        name: String,
        /// The constraint's description, or what is violated.
        why: String,
    },
    /// A constraint itself is malformed (e.g. a bad regex).
    #[error("bad constraint: {0}")]
    BadConstraint(String),
    /// Evaluation needs an attribute the orchestrator cannot supply yet.
    #[error("`{resource}` has no value for `{attribute}` yet")]
    NotReady {
        /// The member.
        resource: String,
        /// The attribute (`get_resource` asks for the reference id).
        attribute: String,
    },
    /// Evaluation found something it cannot use (e.g. a group member that does not exist).
    /// A `get_param`/`get_attr` path into a missing key is not one: it gives `''`/null, as
    /// in Heat.
    #[error("{0}")]
    Eval(String),
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hot_compat_tests;
