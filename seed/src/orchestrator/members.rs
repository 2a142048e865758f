//! Step 2: what each kind of member does when the walk reaches it: servers deploy (bounded
//! in flight, retried, replaced), random strings and configs complete at once, wait conditions
//! count their signals. Deployments are published and completed in step 3 (`publish.rs`).

use std::collections::BTreeSet;

use rand::Rng;
use serde_json::{Map, Value as Json};

use super::{Action, MemberError, MemberStatus, Pass, SignalStatus, View};
use crate::lifecycle::{DeployTarget, State};
use crate::template::{self, Member, Stack};

impl Pass<'_> {
    /// What a server deploys: its `image` and root-device hint.
    fn target(&self, stack: &Stack, m: &Member) -> Result<DeployTarget, MemberError> {
        let view = View { rec: &self.rec };
        let get = |k: &str| {
            m.properties
                .get(k)
                .map(|e| stack.evaluate(e, &view))
                .transpose()
        };
        let image = match get("image")? {
            Some(Json::String(s)) => s,
            other => return Err(MemberError::Image(other)),
        };
        let hint = get("root_device_hint")?.and_then(|h| {
            let h = h.as_object()?.clone();
            let s = |k: &str| {
                h.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_string())
            };
            s("serial")
                .map(|v| format!("serial={v}"))
                .or_else(|| s("model").map(|v| format!("model={v}")))
                .or_else(|| s("size_gib").map(|v| format!("size>={v}")))
                .or_else(|| s("min_size_gib").map(|v| format!("size>={v}")))
        });
        Ok(DeployTarget {
            image,
            root_hint: hint,
        })
    }

    /// A server: deploy it once its dependencies are complete (within the in-flight bound),
    /// record its attributes when its node is active, retry or replace it when the deploy failed.
    pub(super) fn server(&mut self, stack: &Stack, m: &Member, ready: bool, in_flight: &mut usize) {
        let rec = self.rec.members[&m.name].clone();
        let Some(node_name) = rec.node.clone() else {
            return;
        };
        let Some(node) = self.node(&node_name).cloned() else {
            self.replace(stack, m, "the node is gone from the inventory");
            return;
        };
        match &node.state {
            State::Available if !node.maintenance => {
                if !ready || *in_flight >= self.cfg.max_in_flight {
                    return;
                }
                match self.target(stack, m) {
                    Ok(target) => {
                        *in_flight += 1;
                        self.set_member(&m.name, MemberStatus::InProgress, "");
                        self.actions.push(Action::Deploy {
                            member: m.name.clone(),
                            node: node_name,
                            target,
                        });
                    }
                    Err(e) => self.member_failed(&m.name, &e),
                }
            }
            State::Deploying => self.set_member(&m.name, MemberStatus::InProgress, ""),
            State::Active => {
                let view = View { rec: &self.rec };
                let name = m
                    .properties
                    .get("name")
                    .and_then(|e| stack.evaluate(e, &view).ok())
                    .unwrap_or_else(|| Json::String(m.name.clone()));
                let attrs = self.attributes_mut(&m.name);
                attrs.insert("name".into(), name);
                attrs.insert("node".into(), Json::String(node_name.clone()));
                attrs.insert(
                    "mac".into(),
                    node.mac.clone().map_or(Json::Null, Json::String),
                );
                attrs.insert(
                    "ip".into(),
                    node.ip.clone().map_or(Json::Null, Json::String),
                );
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
            State::DeployFailed { reason } => {
                if node.attempts <= self.cfg.retries && !node.maintenance {
                    if *in_flight >= self.cfg.max_in_flight {
                        return;
                    }
                    match self.target(stack, m) {
                        Ok(target) => {
                            *in_flight += 1;
                            let why = format!(
                                "deploy on {node_name} failed ({reason}); retry {} of {}",
                                node.attempts, self.cfg.retries
                            );
                            self.member_event(&m.name, MemberStatus::InProgress, &why);
                            self.actions.push(Action::Deploy {
                                member: m.name.clone(),
                                node: node_name,
                                target,
                            });
                        }
                        Err(e) => self.fail(&format!("{}: {e}", m.name)),
                    }
                } else {
                    let why = format!(
                        "deploy on {node_name} failed {} time(s): {reason}",
                        node.attempts
                    );
                    self.replace(stack, m, &why);
                }
            }
            _ => {}
        }
    }

    pub(super) fn random<R: Rng>(&mut self, stack: &Stack, m: &Member, rng: &mut R) {
        if self.rec.members[&m.name].attributes.contains_key("value") {
            self.set_member(&m.name, MemberStatus::Complete, "");
            return;
        }
        let view = View { rec: &self.rec };
        let value = stack
            .properties(&m.name, &view)
            .map_err(|e| e.to_string())
            .and_then(|p| template::random_string(&p, rng).map_err(|e| e.to_string()));
        match value {
            Ok(v) => {
                let r = self.rec.members.get_mut(&m.name).expect("record");
                r.attributes.insert("value".into(), Json::String(v));
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
            Err(e) => self.member_failed(&m.name, &e),
        }
    }

    pub(super) fn config(&mut self, stack: &Stack, m: &Member) {
        let view = View { rec: &self.rec };
        match stack.properties(&m.name, &view) {
            Ok(props) => {
                let r = self.rec.members.get_mut(&m.name).expect("record");
                // The evaluated properties are kept whole: deployments read group/inputs too.
                r.attributes = match props {
                    Json::Object(mut o) => {
                        o.entry("config").or_insert(Json::Null);
                        o
                    }
                    _ => Map::new(),
                };
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
            Err(e) => self.member_failed(&m.name, &e),
        }
    }

    /// The nodes of this stack's servers, by node name.
    pub(super) fn stack_nodes(&self) -> BTreeSet<String> {
        self.rec
            .members
            .values()
            .filter_map(|r| r.node.clone())
            .collect()
    }

    pub(super) fn wait_condition(&mut self, stack: &Stack, m: &Member) {
        let r = self.rec.members[&m.name].clone();
        if r.status == MemberStatus::Complete || r.status == MemberStatus::Failed {
            return;
        }
        self.set_member(&m.name, MemberStatus::InProgress, "");
        let view = View { rec: &self.rec };
        let get = |k: &str| {
            m.properties
                .get(k)
                .and_then(|e| stack.evaluate(e, &view).ok())
        };
        let handle = get("handle")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let count = get("count").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        let timeout_ms = get("timeout").and_then(|v| v.as_u64()).unwrap_or(0) * 1000;
        let mut data = Map::new();
        for node in self.stack_nodes() {
            let Some(n) = self.node(&node) else { continue };
            for s in n.signals.iter().filter(|s| s.deployment == handle) {
                if s.status == SignalStatus::Failed {
                    let reason = format!(
                        "{}: {node} signalled failure: {}",
                        m.name,
                        s.reason.clone().unwrap_or_default()
                    );
                    self.set_member(&m.name, MemberStatus::Failed, &reason);
                    self.fail(&reason);
                    return;
                }
                data.insert(node.clone(), Json::Object(s.outputs.clone()));
            }
        }
        if data.len() >= count {
            let r = self.rec.members.get_mut(&m.name).expect("record");
            r.attributes.insert("data".into(), Json::Object(data));
            self.set_member(&m.name, MemberStatus::Complete, "");
        } else if timeout_ms > 0
            && self
                .rec
                .members
                .get(&m.name)
                .and_then(|r| r.started_ms)
                .is_some_and(|s| self.now_ms >= s + timeout_ms)
        {
            let reason = format!(
                "{}: {} of {count} signal(s) on `{handle}` before the timeout",
                m.name,
                data.len()
            );
            self.set_member(&m.name, MemberStatus::Failed, &reason);
            self.fail(&reason);
        }
    }

    /// A wait condition handle completes at once: its `signal` and `endpoint` attributes.
    pub(super) fn wait_condition_handle(&mut self, m: &Member) {
        let r = self.rec.members.get_mut(&m.name).expect("record");
        r.attributes
            .insert("signal".into(), Json::String(m.name.clone()));
        r.attributes.insert(
            "endpoint".into(),
            Json::String(format!("/v1/node/signal/{}", m.name)),
        );
        self.set_member(&m.name, MemberStatus::Complete, "");
    }
}
