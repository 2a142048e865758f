//! Step 3: publishing. Each deployed server's node gets one document, os-collect-config's
//! shape (`deployments` + `identity` + the server's `metadata`), published where it differs;
//! a deployment completes once each of its nodes signalled about the document published now.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value as Json};

use super::{is_deployment, Action, MemberError, MemberStatus, Pass, SignalStatus, View};
use crate::template::{Member, ResourceType, Stack};

/// Node → (its server member, the entries of the deployments targeting it).
type Desired = BTreeMap<String, (String, Vec<Json>)>;

impl Pass<'_> {
    /// A deployment's entry in its nodes' metadata, and those nodes (with the server key).
    fn deployment(
        &self,
        stack: &Stack,
        m: &Member,
    ) -> Result<(Json, Vec<(String, String)>), MemberError> {
        let view = View { rec: &self.rec };
        let props = stack.properties(&m.name, &view)?;
        let targets: Vec<(String, String)> = match m.rtype {
            ResourceType::SoftwareDeployment | ResourceType::StructuredDeployment => props
                .get("server")
                .and_then(Json::as_str)
                .map(|s| vec![(s.to_string(), s.to_string())])
                .unwrap_or_default(),
            _ => props
                .get("servers")
                .and_then(Json::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let config_name = props.get("config").and_then(Json::as_str).unwrap_or("");
        let config = self
            .rec
            .members
            .get(config_name)
            .map(|r| r.attributes.clone())
            .unwrap_or_default();
        let mut inputs: Vec<Json> = vec![];
        let values = props
            .get("input_values")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(declared) = config.get("inputs").and_then(Json::as_array) {
            for i in declared {
                let Some(name) = i.get("name").and_then(Json::as_str) else {
                    continue;
                };
                let value = values
                    .get(name)
                    .or_else(|| i.get("default"))
                    .cloned()
                    .unwrap_or(Json::Null);
                inputs.push(json!({ "name": name, "type": i.get("type").cloned().unwrap_or(json!("String")), "value": value }));
            }
        }
        for (k, v) in &values {
            if !inputs.iter().any(|i| i["name"] == json!(k)) {
                inputs.push(json!({ "name": k, "type": "String", "value": v }));
            }
        }
        let entry = json!({
            "name": m.name,
            "group": config.get("group").cloned().unwrap_or(json!("Heat::Ungrouped")),
            "config": config.get("config").cloned().unwrap_or(Json::Null),
            "inputs": inputs,
            "options": config.get("options").cloned().unwrap_or(json!({})),
            "outputs": config.get("outputs").cloned().unwrap_or(json!([])),
        });
        Ok((entry, targets))
    }

    /// Nodes whose metadata must wait: a deployment not started yet will target them as soon
    /// as the servers it waits for are up. Publishing now would hand the node an incomplete
    /// configuration to render and run: a group deployment waits for all its servers, so the
    /// first compute up would render its files without the group's config, and a scale-out
    /// (which restarts the group deployment) would take the config away from the computes
    /// already running. A deployment that waits, directly or not, for another deployment's or
    /// a wait condition's signals holds nothing: those signals may need this node's metadata.
    fn held_nodes(&self, stack: &Stack) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        for m in stack.members.iter().filter(|m| is_deployment(m.rtype)) {
            if self.rec.members[&m.name].status != MemberStatus::Init
                || self.waits_for_signals(stack, m)
            {
                continue;
            }
            if let Ok((_, targets)) = self.deployment(stack, m) {
                held.extend(targets.into_iter().map(|(_, node)| node));
            }
        }
        held
    }

    /// Whether `m` waits, through its unfinished dependencies, for a signal from a node.
    fn waits_for_signals(&self, stack: &Stack, m: &Member) -> bool {
        let mut todo: Vec<&str> = m.depends_on.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            let done = self.rec.members.get(name).map(|r| r.status) == Some(MemberStatus::Complete);
            let Some(dep) = stack.member(name) else {
                continue;
            };
            if done {
                continue;
            }
            if is_deployment(dep.rtype) || dep.rtype == ResourceType::WaitCondition {
                return true;
            }
            todo.extend(dep.depends_on.iter().map(String::as_str));
        }
        false
    }

    /// Publish merged metadata to deployed nodes; complete deployments their nodes signalled.
    pub(super) fn publish(&mut self, stack: &Stack) {
        let Some((desired, deployments)) = self.desired(stack) else {
            return;
        };
        let documents = self.documents(stack, desired);
        for (m, targets) in deployments {
            if self.rec.members[&m.name].status != MemberStatus::InProgress {
                continue;
            }
            if !self.signalled(m, &targets, &documents) {
                return;
            }
        }
    }

    /// Each deployed server's node → (its member, the entries of the deployments targeting
    /// it), and the started deployments with their targets. `None`: a deployment failed to
    /// evaluate, and the stack with it.
    #[allow(clippy::type_complexity)]
    fn desired<'s>(
        &mut self,
        stack: &'s Stack,
    ) -> Option<(Desired, Vec<(&'s Member, Vec<(String, String)>)>)> {
        let mut desired = Desired::new();
        for m in stack
            .members
            .iter()
            .filter(|m| m.rtype == ResourceType::Server)
        {
            let r = &self.rec.members[&m.name];
            if let (Some(node), MemberStatus::Complete) = (&r.node, r.status) {
                desired.insert(node.clone(), (m.name.clone(), vec![]));
            }
        }
        let mut deployments = vec![];
        for m in &stack.members {
            if !is_deployment(m.rtype) || self.rec.members[&m.name].status == MemberStatus::Init {
                continue;
            }
            match self.deployment(stack, m) {
                Ok((entry, targets)) => {
                    for (_, node) in &targets {
                        if let Some((_, list)) = desired.get_mut(node) {
                            list.push(entry.clone());
                        }
                    }
                    deployments.push((m, targets));
                }
                Err(e) => {
                    self.member_failed(&m.name, &e);
                    return None;
                }
            }
        }
        Some((desired, deployments))
    }

    /// The document of every node not held ([`Pass::held_nodes`]), asking to publish those that
    /// differ from what the node has. Returns node → document.
    fn documents(&mut self, stack: &Stack, desired: Desired) -> BTreeMap<String, Json> {
        let held = self.held_nodes(stack);
        let mut documents = BTreeMap::new();
        for (node, (member, list)) in desired {
            if held.contains(&node) {
                // Its current document (if any) stays; no signal counts until it is published.
                continue;
            }
            let server = stack.member(&member).expect("member");
            let view = View { rec: &self.rec };
            let server_metadata = server
                .properties
                .get("metadata")
                .and_then(|e| stack.evaluate(e, &view).ok())
                .unwrap_or(json!({}));
            let attrs = &self.rec.members[&member].attributes;
            let doc = json!({
                "deployments": list,
                "identity": {
                    "stack": self.rec.name,
                    "member": member,
                    "node": node,
                    "name": attrs.get("name").cloned().unwrap_or(Json::Null),
                },
                "metadata": server_metadata,
            });
            if self.node(&node).and_then(|n| n.metadata.as_ref()) != Some(&doc) {
                self.actions.push(Action::Publish {
                    node: node.clone(),
                    metadata: doc.clone(),
                });
            }
            documents.insert(node, doc);
        }
        documents
    }

    /// Complete deployment `m` in progress once every target signalled about the document
    /// published now (`documents`), gathering their outputs. False: a node signalled failure,
    /// and the stack failed.
    fn signalled(
        &mut self,
        m: &Member,
        targets: &[(String, String)],
        documents: &BTreeMap<String, Json>,
    ) -> bool {
        let mut outputs: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
        let mut done = true;
        for (key, node) in targets {
            let Some(n) = self.node(node) else {
                done = false;
                continue;
            };
            // Only a signal about what is published now counts.
            let current = documents
                .get(node)
                .is_some_and(|d| n.metadata.as_ref() == Some(d));
            let sig = n
                .signals
                .iter()
                .find(|s| s.deployment == m.name && s.counter >= n.metadata_counter);
            match (current, sig) {
                (true, Some(s)) if s.status == SignalStatus::Failed => {
                    let reason = format!(
                        "{} on {node}: {}",
                        m.name,
                        s.reason.clone().unwrap_or_else(|| "failed".into())
                    );
                    self.set_member(&m.name, MemberStatus::Failed, &reason);
                    self.fail(&reason);
                    return false;
                }
                (true, Some(s)) => {
                    outputs.insert(key.clone(), s.outputs.clone());
                }
                _ => done = false,
            }
        }
        if done {
            let attrs = &mut self
                .rec
                .members
                .get_mut(&m.name)
                .expect("record")
                .attributes;
            attrs.clear();
            let single = matches!(
                m.rtype,
                ResourceType::SoftwareDeployment | ResourceType::StructuredDeployment
            );
            for (key, outs) in outputs {
                for (k, v) in outs {
                    if single {
                        attrs.insert(k, v);
                    } else {
                        attrs
                            .entry(k)
                            .or_insert_with(|| json!({}))
                            .as_object_mut()
                            .expect("object")
                            .insert(key.clone(), v);
                    }
                }
            }
            self.set_member(&m.name, MemberStatus::Complete, "");
        }
        true
    }
}
