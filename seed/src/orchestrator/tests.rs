//! The engine against a small simulated world: nodes whose state follows the actions the way
//! the daemon and lifecycle would move them, with deploys finishing or failing on command.

use super::*;
use crate::inventory::Allocation;
use crate::lifecycle::DeployTarget;
use rand::{rngs::StdRng, SeedableRng};

mod replace;

const TEMPLATE: &str = r#"
heat_template_version: wallaby
parameters:
  compute_count: {type: number, default: 2}
  removal: {type: json, default: []}
  message: {type: string, default: hello}
resources:
  control:
    type: OS::Seed::Server
    properties:
      image: golden
      profile: control
      min_ram_mib: 8192
      root_device_hint: {min_size_gib: 20}
  compute:
    type: OS::Heat::ResourceGroup
    properties:
      count: {get_param: compute_count}
      removal_policies: {get_param: removal}
      resource_def:
        type: OS::Seed::Server
        properties: {image: golden, profile: compute}
  cfg:
    type: OS::Heat::SoftwareConfig
    properties: {group: script, config: {get_param: message}}
  control_deploy:
    type: OS::Heat::SoftwareDeployment
    properties: {config: {get_resource: cfg}, server: {get_resource: control}}
outputs:
  control_node: {value: {get_attr: [control, node]}}
  stdout: {value: {get_attr: [control_deploy, deploy_stdout]}}
"#;

const WAIT: &str = r#"
heat_template_version: wallaby
resources:
  web:
    type: OS::Heat::ResourceGroup
    properties:
      count: 2
      resource_def: {type: OS::Seed::Server, properties: {image: golden}}
  handle: {type: OS::Heat::WaitConditionHandle}
  up:
    type: OS::Heat::WaitCondition
    depends_on: [web]
    properties: {handle: {get_resource: handle}, count: 2, timeout: 600}
"#;

fn node(name: &str, profile: &str, ram: u64) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        state: State::Available,
        memory_mib: Some(ram),
        disk_gib: 100,
        profile: Some(profile.into()),
        mac: Some(format!("52:54:00:00:00:{:02x}", name.len())),
        ..NodeInfo::default()
    }
}

struct World {
    nodes: Vec<NodeInfo>,
    rec: StackRecord,
    cfg: Config,
    now: u64,
    rng: StdRng,
    /// Every action of the last pass.
    last: Vec<Action>,
}

impl World {
    /// `update` of the stack, now, to `text` with the one parameter `key=value`.
    fn update_one(
        &self,
        text: &str,
        key: &str,
        value: &str,
    ) -> Result<(StackRecord, crate::template::Plan), StackError> {
        let params = vec![(key.to_string(), value.to_string())];
        update(&self.rec, "t.yaml", text, params, self.now)
    }

    fn new(text: &str, params: &[&str], nodes: Vec<NodeInfo>) -> World {
        let params = params
            .iter()
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        World {
            nodes,
            rec: create("s", "t.yaml", text, params, 0).expect("template"),
            cfg: Config::default(),
            now: 1,
            rng: StdRng::seed_from_u64(7),
            last: vec![],
        }
    }

    fn node(&mut self, name: &str) -> &mut NodeInfo {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// One reconcile, its actions applied to the world as the daemon would.
    fn pass(&mut self) -> &[Action] {
        self.now += 1000;
        let out = reconcile(&self.rec, &self.nodes, self.now, &self.cfg, &mut self.rng);
        self.rec = out.record;
        for a in &out.actions {
            match a {
                Action::Allocate { member, node } => {
                    let n = self.node(node);
                    assert!(n.allocation.is_none(), "{node} allocated twice");
                    n.allocation = Some(Allocation {
                        stack: "s".into(),
                        member: member.clone(),
                    });
                }
                Action::Deploy { node, .. } => {
                    let n = self.node(node);
                    n.attempts = match n.state {
                        State::DeployFailed { .. } => n.attempts + 1,
                        State::Available => 1,
                        ref s => panic!("deploy of {node} in {s}"),
                    };
                    n.state = State::Deploying;
                }
                Action::Publish { node, metadata } => {
                    let n = self.node(node);
                    n.metadata = Some(metadata.clone());
                    n.metadata_counter += 1;
                }
                Action::Release { node } => {
                    let n = self.node(node);
                    n.allocation = None;
                    n.state = State::Available;
                    n.metadata = None;
                    n.signals.clear();
                    n.attempts = 0;
                }
                Action::Event(_) => {}
            }
        }
        self.last = out.actions;
        &self.last
    }

    fn deploys(&self) -> Vec<String> {
        self.last
            .iter()
            .filter_map(|a| match a {
                Action::Deploy { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect()
    }

    fn finish_deploys(&mut self) {
        for n in &mut self.nodes {
            if n.state == State::Deploying {
                n.state = State::Active;
                n.attempts = 0;
            }
        }
    }

    fn signal(&mut self, node: &str, deployment: &str, outputs: Json) {
        let n = self.node(node);
        let counter = n.metadata_counter;
        n.signals.retain(|s| s.deployment != deployment);
        n.signals.push(Signal {
            deployment: deployment.into(),
            status: SignalStatus::Complete,
            reason: None,
            outputs: outputs.as_object().cloned().unwrap_or_default(),
            counter,
        });
    }

    fn node_of(&self, member: &str) -> String {
        self.rec.members[member].node.clone().unwrap()
    }

    /// Deploy everything and signal every deployment until the stack settles.
    fn settle(&mut self) {
        for _ in 0..20 {
            self.pass();
            if !self.rec.status.in_progress() {
                return;
            }
            self.finish_deploys();
            let published: Vec<(String, Vec<String>)> = self
                .nodes
                .iter()
                .filter_map(|n| {
                    let names = n.metadata.as_ref()?["deployments"]
                        .as_array()?
                        .iter()
                        .map(|d| d["name"].as_str().unwrap().to_string())
                        .collect();
                    Some((n.name.clone(), names))
                })
                .collect();
            for (node, names) in published {
                for d in names {
                    self.signal(
                        &node,
                        &d,
                        json!({"deploy_stdout": format!("ran on {node}")}),
                    );
                }
            }
        }
        panic!("stack did not settle: {:?}", self.rec.status);
    }

    fn allocated(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.allocation.as_ref()?.member.clone(), n.name.clone())))
            .collect()
    }
}

fn pool() -> Vec<NodeInfo> {
    vec![
        node("ctl-small", "control", 4096),
        node("ctl-big", "control", 16384),
        node("cmp-a", "compute", 4096),
        node("cmp-b", "compute", 4096),
        node("cmp-c", "compute", 4096),
    ]
}

#[test]
fn schedules_by_profile_and_ram() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.pass();
    let alloc = w.allocated();
    assert_eq!(alloc["control"], "ctl-big", "ctl-small has too little RAM");
    assert!(alloc["compute-0"].starts_with("cmp-"));
    assert!(alloc["compute-1"].starts_with("cmp-"));
    assert_ne!(alloc["compute-0"], alloc["compute-1"]);
    assert_eq!(w.deploys().len(), 3);
    let target = w.last.iter().find_map(|a| match a {
        Action::Deploy { member, target, .. } if member == "control" => Some(target.clone()),
        _ => None,
    });
    assert_eq!(
        target,
        Some(DeployTarget {
            image: "golden".into(),
            root_hint: Some("size>=20".into())
        })
    );
}

#[test]
fn an_empty_profile_takes_any_node() {
    let text = "heat_template_version: wallaby
parameters:
  profile: {type: string, default: ''}
resources:
  web:
    type: OS::Seed::Server
    properties: {image: golden, profile: {get_param: profile}}
";
    let mut unprofiled = node("plain", "x", 4096);
    unprofiled.profile = None;
    let mut w = World::new(text, &[], vec![unprofiled.clone()]);
    w.pass();
    assert_eq!(w.allocated()["web"], "plain");
    // A named profile still has to match.
    let mut w = World::new(text, &["profile=control"], vec![unprofiled]);
    w.pass();
    assert!(w.allocated().is_empty());
}

#[test]
fn not_enough_nodes_fails_before_any_allocation() {
    let mut nodes = pool();
    nodes.retain(|n| n.name != "ctl-big");
    let mut w = World::new(TEMPLATE, &[], nodes);
    let actions = w.pass().to_vec();
    assert_eq!(w.rec.status, Status::CreateFailed);
    assert!(
        w.rec.reason.contains("not enough nodes") && w.rec.reason.contains("profile=control"),
        "{}",
        w.rec.reason
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Allocate { .. } | Action::Deploy { .. })),
        "{actions:?}"
    );
    assert!(w.allocated().is_empty());
    // Nothing more happens on later passes.
    w.pass();
    assert!(w.deploys().is_empty());
}

#[test]
fn creates_publishes_and_evaluates_outputs() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.settle();
    assert_eq!(w.rec.status, Status::CreateComplete, "{}", w.rec.reason);
    let ctl = w.node_of("control");
    let outputs = w.rec.outputs.clone().unwrap();
    assert_eq!(outputs["control_node"], json!(ctl));
    assert_eq!(outputs["stdout"], json!(format!("ran on {ctl}")));
    let md = w.node(&ctl).metadata.clone().unwrap();
    assert_eq!(md["identity"]["member"], json!("control"));
    assert_eq!(md["deployments"][0]["name"], json!("control_deploy"));
    assert_eq!(md["deployments"][0]["group"], json!("script"));
    assert_eq!(md["deployments"][0]["config"], json!("hello"));
    // A settled stack does nothing more.
    assert!(w.pass().is_empty());
}

#[test]
fn deployment_completes_only_on_a_signal_about_current_metadata() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.pass();
    w.finish_deploys();
    w.pass(); // servers complete, metadata published
    let ctl = w.node_of("control");
    assert!(w.node(&ctl).metadata.is_some());
    // A stale signal (an older counter) does not count.
    w.signal(&ctl, "control_deploy", json!({}));
    w.node(&ctl).signals[0].counter = 0;
    w.pass();
    assert_eq!(
        w.rec.members["control_deploy"].status,
        MemberStatus::InProgress
    );
    w.signal(&ctl, "control_deploy", json!({}));
    w.pass();
    assert_eq!(
        w.rec.members["control_deploy"].status,
        MemberStatus::Complete
    );
    assert_eq!(w.rec.status, Status::CreateComplete);
}

#[test]
fn bounded_concurrency() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.cfg.max_in_flight = 1;
    w.pass();
    assert_eq!(w.deploys().len(), 1);
    assert_eq!(w.allocated().len(), 3, "every server is allocated up front");
    w.pass();
    assert!(w.deploys().is_empty(), "one is still in flight");
    w.finish_deploys();
    w.pass();
    assert_eq!(w.deploys().len(), 1);
}

#[test]
fn scale_out_then_in_with_removal_policies() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.settle();
    let before = w.allocated();
    let (rec, todo) = w.update_one(TEMPLATE, "compute_count", "3").unwrap();
    assert_eq!(todo.create, vec!["compute-2".to_string()]);
    w.rec = rec;
    w.pass();
    assert_eq!(w.deploys().len(), 1, "only the new member deploys");
    w.settle();
    assert_eq!(w.rec.status, Status::UpdateComplete, "{}", w.rec.reason);
    let three = w.allocated();
    assert_eq!(three.len(), 4);
    for (m, n) in &before {
        assert_eq!(&three[m], n, "{m} kept its node");
    }
    // Scale in to 2, removing compute-0 by name.
    let params = vec![
        ("compute_count".into(), "2".into()),
        ("removal".into(), r#"[{"resource_list": ["0"]}]"#.into()),
    ];
    let (rec, todo) = update(&w.rec, "t.yaml", TEMPLATE, params, w.now).unwrap();
    assert_eq!(todo.delete, vec!["compute-0".to_string()]);
    w.rec = rec;
    w.pass();
    let released: Vec<&Action> = w
        .last
        .iter()
        .filter(|a| matches!(a, Action::Release { .. }))
        .collect();
    assert_eq!(
        released,
        vec![&Action::Release {
            node: three["compute-0"].clone()
        }]
    );
    assert!(w.deploys().is_empty());
    w.settle();
    assert_eq!(w.rec.status, Status::UpdateComplete);
    let two = w.allocated();
    assert_eq!(two.len(), 3);
    assert_eq!(two["compute-1"], three["compute-1"]);
    assert_eq!(two["compute-2"], three["compute-2"]);
    assert!(!two.contains_key("compute-0"));
}

#[test]
fn retry_then_replace_then_fail() {
    let mut nodes = pool();
    nodes.retain(|n| n.name != "cmp-c");
    nodes.push(node("cmp-spare", "compute", 8192));
    let mut w = World::new(TEMPLATE, &[], nodes);
    w.cfg.retries = 1;
    w.pass();
    let victim = w.node_of("compute-0");
    let fail = |w: &mut World, n: &str| {
        let n = w.node(n);
        assert_eq!(n.state, State::Deploying);
        n.state = State::DeployFailed {
            reason: "disk on fire".into(),
        };
    };
    // First failure: retried on the same node.
    fail(&mut w, &victim);
    w.pass();
    assert_eq!(w.deploys(), vec![victim.clone()]);
    // Second failure: moved to the spare, the failed node released.
    fail(&mut w, &victim);
    w.pass();
    assert_eq!(w.node_of("compute-0"), "cmp-spare");
    assert!(w.last.contains(&Action::Release {
        node: victim.clone()
    }));
    // The replacement is deployed on the next pass, once its allocation is committed.
    w.pass();
    assert_eq!(w.deploys(), vec!["cmp-spare".to_string()]);
    // The spare fails twice too; the victim (free again) is excluded: nothing is left.
    fail(&mut w, "cmp-spare");
    w.pass();
    assert_eq!(w.deploys(), vec!["cmp-spare".to_string()]);
    fail(&mut w, "cmp-spare");
    w.pass();
    assert_eq!(w.rec.status, Status::CreateFailed);
    assert!(
        w.rec.reason.contains("compute-0") && w.rec.reason.contains("disk on fire"),
        "{}",
        w.rec.reason
    );
}

/// The WAIT stack on two nodes, its servers deployed: the wait condition waits for signals.
fn waiting() -> World {
    let nodes = vec![node("a", "x", 1024), node("b", "x", 1024)];
    let mut w = World::new(WAIT, &[], nodes);
    w.pass();
    w.finish_deploys();
    w.pass();
    w
}

#[test]
fn wait_condition_needs_count_signals() {
    let mut w = waiting();
    assert_eq!(w.rec.members["up"].status, MemberStatus::InProgress);
    w.signal("a", "handle", json!({"ok": 1}));
    w.pass();
    assert_eq!(w.rec.members["up"].status, MemberStatus::InProgress);
    assert_eq!(w.rec.status, Status::CreateInProgress);
    w.signal("b", "handle", json!({"ok": 2}));
    w.pass();
    assert_eq!(w.rec.members["up"].status, MemberStatus::Complete);
    assert_eq!(w.rec.status, Status::CreateComplete);
    assert_eq!(
        w.rec.members["up"].attributes["data"],
        json!({"a": {"ok": 1}, "b": {"ok": 2}})
    );
}

#[test]
fn wait_condition_times_out() {
    let mut w = waiting();
    w.now += 600_000;
    w.pass();
    assert_eq!(w.rec.status, Status::CreateFailed);
    assert!(w.rec.reason.contains("0 of 2"), "{}", w.rec.reason);
}

#[test]
fn metadata_only_update_publishes_without_redeploy() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.settle();
    let ctl = w.node_of("control");
    let (rec, todo) = w.update_one(TEMPLATE, "message", "bye").unwrap();
    assert!(todo.replace.contains(&"cfg".to_string()));
    assert!(todo.update.contains(&"control_deploy".to_string()));
    assert!(!todo
        .replace
        .iter()
        .chain(&todo.update)
        .any(|m| m.starts_with("compute") || m == "control"));
    w.rec = rec;
    w.pass();
    assert!(w.deploys().is_empty());
    let published: Vec<&Action> = w
        .last
        .iter()
        .filter(|a| matches!(a, Action::Publish { .. }))
        .collect();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(
        w.node(&ctl).metadata.as_ref().unwrap()["deployments"][0]["config"],
        json!("bye")
    );
    w.settle();
    assert_eq!(w.rec.status, Status::UpdateComplete);
    assert!(w
        .nodes
        .iter()
        .all(|n| n.state == State::Active || n.allocation.is_none()));
}

#[test]
fn delete_releases_everything_then_completes() {
    let mut w = World::new(TEMPLATE, &[], pool());
    w.settle();
    w.rec = delete(&w.rec, w.now);
    w.pass();
    let released = w
        .last
        .iter()
        .filter(|a| matches!(a, Action::Release { .. }))
        .count();
    assert_eq!(released, 3);
    w.pass();
    assert_eq!(w.rec.status, Status::DeleteComplete);
}

#[test]
fn update_is_refused_while_in_progress_and_errors_name_the_place() {
    let w = World::new(TEMPLATE, &[], pool());
    assert!(matches!(
        update(&w.rec, "t.yaml", TEMPLATE, vec![], 5),
        Err(StackError::Busy { .. })
    ));
    let err = create(
        "x",
        "bad.yaml",
        "heat_template_version: wallaby\nresources:\n  a: {type: OS::Nope}\n",
        vec![],
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("bad.yaml:3:"), "{err}");
}

#[test]
fn reconcile_is_idempotent_after_a_lost_pass() {
    // A crash after the record was committed but before the deploys were applied: the next
    // pass, from the same store state, asks again for exactly those deploys.
    let mut w = World::new(TEMPLATE, &[], pool());
    let out = reconcile(&w.rec, &w.nodes, 10, &w.cfg, &mut w.rng);
    let allocs: Vec<_> = out
        .allocations()
        .map(|(m, n)| (m.to_string(), n.to_string()))
        .collect();
    w.rec = out.record;
    for (m, n) in &allocs {
        w.node(n).allocation = Some(Allocation {
            stack: "s".into(),
            member: m.clone(),
        });
    }
    w.pass();
    let mut again = w.deploys();
    again.sort();
    let mut want: Vec<String> = allocs.into_iter().map(|(_, n)| n).collect();
    want.sort();
    assert_eq!(again, want);
    assert!(!w.last.iter().any(|a| matches!(a, Action::Allocate { .. })));
}

#[test]
fn update_after_not_enough_nodes_retries_with_new_nodes() {
    let mut nodes = pool();
    nodes.retain(|n| n.name != "ctl-big");
    let mut w = World::new(TEMPLATE, &[], nodes);
    w.pass();
    assert_eq!(w.rec.status, Status::CreateFailed);
    w.nodes.push(node("ctl-new", "control", 32768));
    let (rec, todo) = update(&w.rec, "t.yaml", TEMPLATE, vec![], w.now).unwrap();
    assert!(todo.is_empty(), "same template, same members: {todo:?}");
    w.rec = rec;
    w.settle();
    assert_eq!(w.rec.status, Status::UpdateComplete, "{}", w.rec.reason);
    assert_eq!(w.node_of("control"), "ctl-new");
}

/// The lab's two-role stack as the QEMU lab plays it: one compute comes up, then the controller,
/// then the other compute; the computes signal; later a scale-out adds a third compute. A
/// compute's metadata is published once, with the group's config, and never taken away: the
/// lab once showed the first compute rendering its files from a config-less document (the group
/// deployment waits for all its servers), and the computes losing their config during a
/// scale-out (the update restarts the group deployment).
#[test]
fn group_deployment_metadata_is_whole_from_the_first_publish() {
    let text = include_str!("../../tests/templates/lab-overcloud.yaml");
    let nodes = (1..=4).map(|i| node(&format!("n{i}"), "", 8192)).collect();
    let mut w = World::new(text, &[], nodes);
    let mut publishes: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let pass = |w: &mut World, publishes: &mut BTreeMap<String, Vec<Json>>| {
        for a in w.pass() {
            if let Action::Publish { node, metadata } = a {
                publishes
                    .entry(node.clone())
                    .or_default()
                    .push(metadata.clone());
            }
        }
    };
    pass(&mut w, &mut publishes);
    let ctl = w.node_of("controller");
    let (c0, c1) = (w.node_of("compute-0"), w.node_of("compute-1"));
    for up in [&c0, &ctl, &c1] {
        w.node(up).state = State::Active;
        pass(&mut w, &mut publishes);
        pass(&mut w, &mut publishes);
    }
    w.signal(&ctl, "controller_deployment", json!({}));
    w.signal(&c0, "compute_deployments", json!({}));
    pass(&mut w, &mut publishes);
    w.signal(&c1, "compute_deployments", json!({}));
    pass(&mut w, &mut publishes);
    assert_eq!(w.rec.status, Status::CreateComplete, "{}", w.rec.reason);
    let greeting = |d: &Json| d["deployments"][0]["config"]["demo"]["greeting"].clone();
    for n in [&c0, &c1, &ctl] {
        let docs = &publishes[n];
        assert_eq!(
            docs.len(),
            1,
            "{n} published {} times: {docs:#?}",
            docs.len()
        );
        assert_eq!(greeting(&docs[0]), json!("hello"), "{n}: {:#}", docs[0]);
    }

    let (rec, _) = w.update_one(text, "compute_count", "3").expect("update");
    w.rec = rec;
    pass(&mut w, &mut publishes);
    let c2 = w.node_of("compute-2");
    pass(&mut w, &mut publishes);
    for n in [&c0, &c1] {
        assert_eq!(
            publishes[n].len(),
            1,
            "{n} republished during the scale-out"
        );
    }
    w.node(&c2).state = State::Active;
    pass(&mut w, &mut publishes);
    assert_eq!(greeting(&publishes[&c2][0]), json!("hello"));
    for n in [&c0, &c1, &c2] {
        w.signal(n, "compute_deployments", json!({}));
    }
    pass(&mut w, &mut publishes);
    assert_eq!(w.rec.status, Status::UpdateComplete, "{}", w.rec.reason);
    for n in [&c0, &c1, &c2] {
        let docs = &publishes[n];
        assert!(
            docs.iter().all(|d| greeting(d) == json!("hello")),
            "{n}: {docs:#?}"
        );
    }
}
