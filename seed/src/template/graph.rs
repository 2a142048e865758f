//! The checks after parsing: every reference (`get_param`, `get_resource`, `get_attr`,
//! `depends_on`) resolves, and the resource dependency graph is ordered, a cycle being an
//! error that names it.

use std::collections::BTreeSet;

use super::expr::{Expr, ExprKind};
use super::parse::{Resource, Template};
use super::{Error, Problem};

/// Declarations that failed to parse (already reported): references to them are not errors
/// of their own.
#[derive(Debug, Default)]
pub(super) struct Broken {
    /// Parameters.
    pub params: BTreeSet<String>,
    /// Resources.
    pub resources: BTreeSet<String>,
    /// `parameters:` itself is malformed: no parameter can be checked.
    pub all_params: bool,
    /// `resources:` itself is malformed: no resource can be checked.
    pub all_resources: bool,
}

impl Broken {
    fn param(&self, name: &str) -> bool {
        self.all_params || self.params.contains(name)
    }

    fn resource(&self, name: &str) -> bool {
        self.all_resources || self.resources.contains(name)
    }
}

impl Template {
    /// Every unresolved reference: resources (in document order) first, then outputs.
    pub(super) fn reference_errors(&self, broken: &Broken) -> Vec<Error> {
        let mut errors = Vec::new();
        let mut check = |e: &Expr| e.walk(&mut |e| errors.extend(self.check_one(e, broken)));
        for r in &self.resources {
            r.exprs().into_iter().for_each(&mut check);
        }
        for o in &self.outputs {
            check(&o.value);
        }
        for r in &self.resources {
            for (d, at) in &r.depends_on {
                if self.resource(d).is_none() && !broken.resource(d) {
                    errors.push(Error::at(at, Problem::UnknownResource(d.clone())));
                }
            }
        }
        errors
    }

    fn check_one(&self, e: &Expr, broken: &Broken) -> Option<Error> {
        match &e.kind {
            ExprKind::GetParam { name, .. }
                if self.parameter(name).is_none() && !broken.param(name) =>
            {
                Some(Error::at(&e.at, Problem::UnknownParameter(name.clone())))
            }
            ExprKind::GetResource(r) if self.resource(r).is_none() && !broken.resource(r) => {
                Some(Error::at(&e.at, Problem::UnknownResource(r.clone())))
            }
            ExprKind::GetAttr {
                resource,
                attribute,
                ..
            } => {
                let Some(res) = self.resource(resource) else {
                    return (!broken.resource(resource))
                        .then(|| Error::at(&e.at, Problem::UnknownResource(resource.clone())));
                };
                if res.has_attribute(attribute) {
                    return None;
                }
                let known = res
                    .rtype
                    .attributes()
                    .map(|a| a.join(", "))
                    .unwrap_or_default();
                Some(Error::at(
                    &e.at,
                    Problem::UnknownAttribute {
                        resource: resource.clone(),
                        rtype: res.rtype.name(),
                        attribute: attribute.clone(),
                        known,
                    },
                ))
            }
            _ => None,
        }
    }

    /// The resources `r` depends on (explicitly and through functions), by index.
    pub fn dependencies(&self, r: &Resource) -> BTreeSet<usize> {
        let mut deps = BTreeSet::new();
        let index = |n: &str| self.resources.iter().position(|x| x.name == n);
        for (d, _) in &r.depends_on {
            deps.extend(index(d));
        }
        for e in r.exprs() {
            for (d, _) in e.references() {
                deps.extend(index(d));
            }
        }
        deps
    }

    /// Kahn's algorithm, taking the first ready resource in document order each time so the
    /// order is stable; when nothing is ready, the rest contains a cycle, which is named.
    pub(super) fn dependency_order(&self) -> Result<Vec<usize>, Error> {
        let deps: Vec<BTreeSet<usize>> = self
            .resources
            .iter()
            .map(|r| self.dependencies(r))
            .collect();
        let mut placed = vec![false; deps.len()];
        let mut order = Vec::with_capacity(deps.len());
        while order.len() < deps.len() {
            let ready = (0..deps.len())
                .find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d] && d != i));
            match ready {
                Some(i) => {
                    placed[i] = true;
                    order.push(i);
                }
                None => {
                    // Walk unplaced dependencies from the first stuck resource until one
                    // repeats: that stretch of the walk is a cycle.
                    let start = (0..deps.len())
                        .find(|&i| !placed[i])
                        .expect("some unplaced");
                    let mut path = vec![start];
                    loop {
                        let cur = *path.last().expect("non-empty");
                        let next = *deps[cur]
                            .iter()
                            .find(|&&d| !placed[d])
                            .expect("a stuck resource has an unplaced dependency");
                        if let Some(pos) = path.iter().position(|&p| p == next) {
                            let cycle: Vec<usize> = path[pos..].to_vec();
                            let first = cycle[0];
                            let mut names: Vec<String> = cycle
                                .iter()
                                .map(|&i| self.resources[i].name.clone())
                                .collect();
                            names.push(self.resources[first].name.clone());
                            return Err(Error::at(
                                &self.resources[first].at,
                                Problem::Cycle(names),
                            ));
                        }
                        path.push(next);
                    }
                }
            }
        }
        Ok(order)
    }
}
