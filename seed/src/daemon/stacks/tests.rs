//! The stack engine inside the daemon: an in-memory store, fake-power nodes, the REST API for
//! the operator's side and the daemon's own functions for the node's side (deployed, signals).

use super::*;
use crate::daemon::api::Api;
use crate::daemon::metadata::{put_signal, Signal, SignalStatus};
use crate::daemon::Settings;
use crate::inventory::Capabilities;
use crate::inventory::Node;
use crate::lifecycle::Timeouts;
use crate::store::memory::MemStore;
use http::{Method, StatusCode};
use netboot::http::ApiRequest;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;

const TOKEN: &str = "t0k";

const TEMPLATE: &str = "heat_template_version: wallaby
parameters:
  compute_count: {type: number, default: 2}
resources:
  control:
    type: OS::Seed::Server
    properties: {image: golden, profile: control}
  compute:
    type: OS::Heat::ResourceGroup
    properties:
      count: {get_param: compute_count}
      resource_def: {type: OS::Seed::Server, properties: {image: golden, profile: compute}}
  cfg:
    type: OS::Heat::SoftwareConfig
    properties: {group: script, config: 'echo hi'}
  go:
    type: OS::Heat::SoftwareDeployment
    properties: {config: {get_resource: cfg}, server: {get_resource: control}}
outputs:
  control_node: {value: {get_attr: [control, node]}}
";

fn settings() -> Settings {
    crate::daemon::test_support::settings(Timeouts::default(), true)
}

fn store_with(nodes_: &[(&str, &str)]) -> Arc<MemStore> {
    let store = Arc::new(MemStore::new());
    let all: Vec<Node> = nodes_
        .iter()
        .enumerate()
        .map(|(i, (name, profile))| {
            let mac = format!("52:54:00:00:01:{i:02x}");
            let mut n = crate::daemon::test_support::fake_node(name, &mac);
            n.lifecycle.state = State::Available;
            n.capabilities = Capabilities(
                [("profile".to_string(), profile.to_string())]
                    .into_iter()
                    .collect(),
            );
            n
        })
        .collect();
    nodes::create(&*store, &all).unwrap();
    store
}

fn request(method: Method, path: &str, body: Json) -> ApiRequest {
    crate::daemon::test_support::request(method, path, Some(TOKEN), &body.to_string())
}

async fn call(api: &Api, method: Method, path: &str, body: Json) -> (StatusCode, Json) {
    let r = api.respond(&request(method, path, body)).await;
    (r.status, serde_json::from_str(&r.body).unwrap())
}

/// `POST /v1/stacks` with `body` (the stack request).
async fn create(api: &Api, body: Json) -> (StatusCode, Json) {
    call(api, Method::POST, "/v1/stacks", body).await
}

fn node(d: &Daemon, name: &str) -> Node {
    nodes::get(d.store(), name).unwrap().unwrap().0
}

/// Play every node's side once: finish deploys, signal what is published.
fn play_nodes(d: &Arc<Daemon>) {
    for (n, _) in nodes::list(d.store()).unwrap() {
        if n.lifecycle.state == State::Deploying {
            d.apply(&n.name, Event::Deployed, vec![]).unwrap();
        }
        if let Some(m) = metadata::get(d.store(), &n.name).unwrap() {
            for dep in m.data["deployments"].as_array().unwrap() {
                let sig = Signal {
                    deployment: dep["name"].as_str().unwrap().into(),
                    status: SignalStatus::Complete,
                    reason: None,
                    outputs: Default::default(),
                    counter: m.counter,
                };
                put_signal(d.store(), &n.name, &sig).unwrap();
            }
        }
    }
}

fn allocations(d: &Daemon) -> BTreeMap<String, String> {
    nodes::list(d.store())
        .unwrap()
        .into_iter()
        .filter_map(|(n, _)| Some((n.allocation?.member, n.name)))
        .collect()
}

#[tokio::test]
async fn create_through_the_api_survives_a_restart_and_completes() {
    let store = store_with(&[
        ("ctl", "control"),
        ("c1", "compute"),
        ("c2", "compute"),
        ("c3", "compute"),
    ]);
    let d = Daemon::new(store.clone(), settings()).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    let (status, body) = create(
        &api,
        json!({"name": "oc", "file": "oc.yaml", "template": TEMPLATE}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "CREATE_IN_PROGRESS");
    let (status, _) = create(&api, json!({"name": "oc", "template": TEMPLATE})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    d.reconcile_stacks().unwrap();
    let alloc = allocations(&d);
    assert_eq!(alloc.len(), 3, "{alloc:?}");
    assert_eq!(alloc["control"], "ctl");
    for (m, n) in &alloc {
        assert_eq!(node(&d, n).lifecycle.state, State::Deploying, "{m} on {n}");
    }

    // "Restart": a new daemon over the same store continues from there.
    drop(api);
    let d = Daemon::new(store, settings()).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    for _ in 0..6 {
        play_nodes(&d);
        d.reconcile_stacks().unwrap();
    }
    let (status, body) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "CREATE_COMPLETE", "{body}");
    assert_eq!(body["outputs"]["control_node"], "ctl");
    assert_eq!(allocations(&d), alloc, "nothing moved across the restart");
    let members = body["members"].as_array().unwrap();
    let control = members.iter().find(|m| m["name"] == "control").unwrap();
    assert_eq!(control["node_state"], "active");
    let (_, events) = call(&api, Method::GET, "/v1/stacks/oc/events", json!(null)).await;
    let statuses: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"CREATE_IN_PROGRESS"));
    assert_eq!(statuses.last(), Some(&"CREATE_COMPLETE"));

    // Scale out to 3 through PUT: one more node, the others untouched.
    let (status, body) = call(
        &api,
        Method::PUT,
        "/v1/stacks/oc",
        json!({"template": TEMPLATE, "params": {"compute_count": "3"}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for _ in 0..6 {
        d.reconcile_stacks().unwrap();
        play_nodes(&d);
    }
    d.reconcile_stacks().unwrap();
    let (_, body) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(body["status"], "UPDATE_COMPLETE", "{body}");
    let after = allocations(&d);
    assert_eq!(after.len(), 4);
    assert_eq!(after["compute-2"], "c3");

    // Delete: every node is released (deleted by the lifecycle) and the record goes.
    let (status, _) = call(&api, Method::DELETE, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.reconcile_stacks().unwrap();
    d.reconcile_stacks().unwrap();
    assert!(allocations(&d).is_empty());
    for n in ["ctl", "c1", "c2", "c3"] {
        assert_eq!(node(&d, n).lifecycle.state, State::Deleting, "{n}");
        assert!(metadata::get(d.store(), n).unwrap().is_none());
    }
    let (status, _) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn not_enough_nodes_allocates_nothing() {
    let store = store_with(&[("ctl", "control"), ("c1", "compute")]);
    let d = Daemon::new(store, settings()).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    create(&api, json!({"name": "oc", "template": TEMPLATE})).await;
    d.reconcile_stacks().unwrap();
    let (_, body) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(body["status"], "CREATE_FAILED");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("not enough nodes"),
        "{body}"
    );
    assert!(allocations(&d).is_empty());
    assert_eq!(node(&d, "ctl").lifecycle.state, State::Available);
}

#[tokio::test]
async fn template_errors_are_400_with_the_place() {
    let d = Daemon::new(store_with(&[]), settings()).unwrap();
    let api = Api::new(d, TOKEN);
    let bad = "heat_template_version: wallaby\nresources:\n  x:\n    type: OS::Nova::Server\n    properties: {flavor: big}\n";
    let (status, body) = create(
        &api,
        json!({"name": "oc", "file": "bad.yaml", "template": bad}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.starts_with("bad.yaml:5:"), "{msg}");
    let (status, _) = call(&api, Method::GET, "/v1/stacks", json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&api, Method::GET, "/v1/stacks/nope/events", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn group_deployment_metadata_survives_completion() {
    let store = store_with(&[("ctl", "control"), ("c1", "compute"), ("c2", "compute")]);
    let d = Daemon::new(store, settings()).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    let template = include_str!("../../../tests/templates/lab-overcloud.yaml");
    let (status, body) = create(
        &api,
        json!({"name": "oc", "file": "lab-overcloud.yaml", "template": template}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..8 {
        d.reconcile_stacks().unwrap();
        play_nodes(&d);
    }
    for _ in 0..3 {
        d.reconcile_stacks().unwrap();
    }
    let (_, body) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(body["status"], "CREATE_COMPLETE", "{body}");
    for n in ["ctl", "c1", "c2"] {
        let m = metadata::get(d.store(), n).unwrap().unwrap();
        let deps = m.data["deployments"].as_array().unwrap();
        assert_eq!(deps.len(), 1, "{n}: {}", m.data);
        assert_eq!(
            deps[0]["config"]["demo"]["greeting"], "hello",
            "{n}: {}",
            m.data
        );
    }
}

/// Issue 17's "a misspelled image wipes every free node": a stack whose server names an image
/// the store does not have is refused at create and at update (400, naming the server and the
/// image), before anything is stored, allocated or powered.
#[tokio::test]
async fn a_missing_image_is_refused_before_any_node_is_touched() {
    let store = store_with(&[("ctl", "control"), ("c1", "compute"), ("c2", "compute")]);
    let d = Daemon::new(store, settings()).unwrap();
    let images = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let imgs = ::images::ImageStore::open(images.path().join("images")).unwrap();
    let manifest = ::images::store::write_placeholder(src.path(), "golden", b"golden").unwrap();
    imgs.import(&manifest).unwrap();
    assert!(d.set_images(imgs, "images"));
    let api = Api::new(d.clone(), TOKEN);
    let typo = TEMPLATE.replace(
        "resource_def: {type: OS::Seed::Server, properties: {image: golden",
        "resource_def: {type: OS::Seed::Server, properties: {image: gloden",
    );
    assert_ne!(typo, TEMPLATE);
    let (status, body) = create(&api, json!({"name": "oc", "template": typo})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.starts_with("server compute-0: no image named \"gloden\"")
            && msg.contains("nothing was changed"),
        "{msg}"
    );
    let (status, _) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    d.reconcile_stacks().unwrap();
    assert!(allocations(&d).is_empty());
    // The right image creates it; an update to the typo is refused and changes nothing.
    let (status, body) = create(&api, json!({"name": "oc", "template": TEMPLATE})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..10 {
        d.reconcile_stacks().unwrap();
        play_nodes(&d);
    }
    let (_, body) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(body["status"], "CREATE_COMPLETE", "{body}");
    let before = allocations(&d);
    let (status, body) = call(
        &api,
        Method::PUT,
        "/v1/stacks/oc",
        json!({"name": "oc", "template": typo}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, body) = call(&api, Method::GET, "/v1/stacks/oc", json!(null)).await;
    assert_eq!(body["status"], "CREATE_COMPLETE", "{body}");
    d.reconcile_stacks().unwrap();
    assert_eq!(allocations(&d), before);
    for n in ["ctl", "c1", "c2"] {
        assert_eq!(node(&d, n).lifecycle.state, State::Active, "{n}");
    }
}
