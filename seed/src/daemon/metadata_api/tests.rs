//! The metadata service through the daemon's API handler, against an in-memory store.

use super::*;
use crate::daemon::api::Api;
use crate::daemon::test_support::{fake_node, settings};
use crate::lifecycle::Timeouts;
use crate::store::memory::MemStore;
use http::Method;
use netboot::http::ApiHandler;
use netboot::http::ApiResponse;
use serde_json::json;
use std::sync::Arc;

const TOKEN: &str = "admin-t0ken";

fn setup() -> (Arc<Daemon>, Api) {
    let store = Arc::new(MemStore::new());
    nodes::create(
        &*store,
        &[
            fake_node("node1", "52:54:00:00:00:01"),
            fake_node("node2", "52:54:00:00:00:02"),
        ],
    )
    .unwrap();
    let d = Daemon::new(store, settings(Timeouts::default(), true)).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    (d, api)
}

use crate::daemon::test_support::request as req;

async fn call(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> ApiResponse {
    api.handle(req(method, path, token, body)).await
}

/// `GET path` with `token`.
async fn get(api: &Api, path: &str, token: &str) -> ApiResponse {
    call(api, Method::GET, path, Some(token), "").await
}

fn body(r: &ApiResponse) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {:?}", r.body))
}

/// A credential for `node` through the operator route.
async fn credential(api: &Api, node: &str) -> String {
    let r = call(
        api,
        Method::POST,
        &format!("/v1/nodes/{node}/credential"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    body(&r)["credential"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn who_may_read_what() {
    let (_d, api) = setup();
    let c1 = credential(&api, "node1").await;
    let c2 = credential(&api, "node2").await;
    let r = call(
        &api,
        Method::PUT,
        "/v1/nodes/node1/metadata",
        Some(TOKEN),
        r#"{"pw": "one"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    call(
        &api,
        Method::PUT,
        "/v1/nodes/node2/metadata",
        Some(TOKEN),
        r#"{"pw": "two"}"#,
    )
    .await;

    let table: &[(&str, Option<&str>, StatusCode)] = &[
        ("/v1/node/metadata", None, StatusCode::UNAUTHORIZED),
        (
            "/v1/node/metadata",
            Some("forged"),
            StatusCode::UNAUTHORIZED,
        ),
        // The admin token is not a node credential.
        ("/v1/node/metadata", Some(TOKEN), StatusCode::UNAUTHORIZED),
        ("/v1/node/metadata", Some(&c1), StatusCode::OK),
        ("/v1/node/metadata?node=node1", Some(&c1), StatusCode::OK),
        (
            "/v1/node/metadata?node=node2",
            Some(&c1),
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/node/metadata?node=node1",
            Some(&c2),
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/node/metadata?since=x",
            Some(&c1),
            StatusCode::BAD_REQUEST,
        ),
        // Operator routes want the admin token, not a node's.
        (
            "/v1/nodes/node1/metadata",
            Some(&c1),
            StatusCode::UNAUTHORIZED,
        ),
        ("/v1/nodes/node1/metadata", None, StatusCode::UNAUTHORIZED),
        ("/v1/nodes/node1/metadata", Some(TOKEN), StatusCode::OK),
        (
            "/v1/nodes/ghost/metadata",
            Some(TOKEN),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (path, token, want) in table {
        let r = call(&api, Method::GET, path, *token, "").await;
        assert_eq!(r.status, *want, "GET {path} with {token:?}: {}", r.body);
    }
    // Each credential gets its own node's data, with the identity.
    let r1 = body(&call(&api, Method::GET, "/v1/node/metadata", Some(&c1), "").await);
    let r2 = body(&call(&api, Method::GET, "/v1/node/metadata", Some(&c2), "").await);
    assert_eq!(
        r1,
        json!({"counter": 1, "data": {"pw": "one", "seed": {"node": "node1"}}})
    );
    assert_eq!(r2["data"]["pw"], "two");
    assert_eq!(r2["data"]["seed"]["node"], "node2");

    // Re-keying revokes the old credential.
    let c1b = credential(&api, "node1").await;
    let r = call(&api, Method::GET, "/v1/node/metadata", Some(&c1), "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&api, Method::GET, "/v1/node/metadata", Some(&c1b), "").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn operator_publish_refuses_bad_input() {
    let (d, api) = setup();
    let put = |path: &'static str, token: Option<&'static str>, b: &'static str| {
        call(&api, Method::PUT, path, token, b)
    };
    assert_eq!(
        put("/v1/nodes/node1/metadata", None, "{}").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        put("/v1/nodes/node1/metadata", Some(TOKEN), "[1]")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let r = put("/v1/nodes/node1/metadata", Some(TOKEN), "{nope").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        body(&r)["error"]
            .as_str()
            .unwrap()
            .contains("key must be a string"),
        "{}",
        r.body
    );
    assert_eq!(
        put("/v1/nodes/ghost/metadata", Some(TOKEN), "{}")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = call(
        &api,
        Method::POST,
        "/v1/nodes/ghost/credential",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &api,
        Method::DELETE,
        "/v1/nodes/node1/metadata",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        metadata::get(d.store(), "node1").unwrap(),
        None,
        "nothing was stored"
    );
    // Other node routes still reach the REST API.
    let r = call(&api, Method::GET, "/v1/nodes/node1", Some(TOKEN), "").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn long_poll_wakes_on_change() {
    let (d, api) = setup();
    let c1 = credential(&api, "node1").await;
    assert_eq!(d.publish_metadata("node1", json!({"v": 1})).unwrap(), 1);
    let api = Arc::new(api);
    let a = api.clone();
    let c = c1.clone();
    let poll = tokio::spawn(async move {
        call(
            &a,
            Method::GET,
            "/v1/node/metadata?since=1&wait=30",
            Some(&c),
            "",
        )
        .await
    });
    // Another node's change does not wake it.
    d.publish_metadata("node2", json!({"v": 9})).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "answered without a change");
    // Re-publishing the same data keeps the counter: still no answer.
    assert_eq!(d.publish_metadata("node1", json!({"v": 1})).unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!poll.is_finished(), "answered without a change");
    assert_eq!(d.publish_metadata("node1", json!({"v": 2})).unwrap(), 2);
    let r = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the long-poll was not woken")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(body(&r)["counter"], 2);
    assert_eq!(body(&r)["data"]["v"], 2);

    // A node whose counter differs (ahead of a rebuilt store, or behind) is answered at once.
    for since in [0, 1, 7] {
        let r = get(
            &api,
            &format!("/v1/node/metadata?since={since}&wait=30"),
            &c1,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(body(&r)["counter"], 2);
    }
}

#[tokio::test(start_paused = true)]
async fn long_poll_times_out_with_304() {
    let (d, api) = setup();
    let c1 = credential(&api, "node1").await;
    // Nothing published yet: counter 0.
    let r = get(&api, "/v1/node/metadata?since=0&wait=5", &c1).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    d.publish_metadata("node1", json!({"v": 1})).unwrap();
    let started = tokio::time::Instant::now();
    let r = get(&api, "/v1/node/metadata?since=1&wait=600", &c1).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    // Paused clock: the wait is capped at MAX_WAIT_SECS, not 600.
    assert_eq!(started.elapsed().as_secs(), MAX_WAIT_SECS);
    // wait=0 answers at once.
    let r = get(&api, "/v1/node/metadata?since=1", &c1).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn signals_are_stored_for_the_credentials_node() {
    let (d, api) = setup();
    let c2 = credential(&api, "node2").await;
    let woken = d.metadata_notifier().subscribe_signals();
    let sig = json!({
        "deployment": "db-config",
        "status": "complete",
        "outputs": {"deploy_stdout": "ok", "deploy_status_code": 0},
        "counter": 3
    });
    let r = call(
        &api,
        Method::POST,
        "/v1/node/signal",
        Some(&c2),
        &sig.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(woken.has_changed().unwrap(), "signal waiters woken");
    let got = metadata::signals(d.store(), "node2").unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].deployment, "db-config");
    assert_eq!(got[0].status, metadata::SignalStatus::Complete);
    assert_eq!(got[0].outputs["deploy_stdout"], "ok");
    assert!(metadata::signals(d.store(), "node1").unwrap().is_empty());
    // The operator sees it beside the metadata.
    let r = body(&get(&api, "/v1/nodes/node2/metadata", TOKEN).await);
    assert_eq!(r["signals"][0]["deployment"], "db-config");

    let bad = call(
        &api,
        Method::POST,
        "/v1/node/signal",
        Some(&c2),
        r#"{"deployment": "x", "status": "meh"}"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        body(&bad)["error"]
            .as_str()
            .unwrap()
            .contains("unknown variant `meh`"),
        "{}",
        bad.body
    );
    let empty = call(
        &api,
        Method::POST,
        "/v1/node/signal",
        Some(&c2),
        r#"{"deployment": " ", "status": "failed"}"#,
    )
    .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let anon = call(
        &api,
        Method::POST,
        "/v1/node/signal",
        None,
        &sig.to_string(),
    )
    .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let get = call(&api, Method::GET, "/v1/node/signal", Some(&c2), "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(metadata::signals(d.store(), "node2").unwrap().len(), 1);
}

#[test]
fn the_identity_cannot_be_overridden() {
    let doc = document(
        "node1",
        Some(Metadata {
            counter: 4,
            data: json!({"seed": {"node": "node2", "extra": 1}, "a": 1}),
        }),
    );
    assert_eq!(doc.counter, 4);
    assert_eq!(
        doc.data,
        json!({"seed": {"node": "node1", "extra": 1}, "a": 1})
    );
    assert_eq!(document("n", None).data, json!({"seed": {"node": "n"}}));
    let odd = document(
        "n",
        Some(Metadata {
            counter: 1,
            data: json!({"seed": 5}),
        }),
    );
    assert_eq!(odd.data, json!({"seed": {"node": "n"}}));
}

#[test]
fn query_parsing() {
    assert_eq!(Query::parse(None).unwrap(), Query::default());
    let q = Query::parse(Some("since=3&wait=999&node=a%2Db&x=1")).unwrap();
    assert_eq!(
        q,
        Query {
            since: Some(3),
            wait_secs: MAX_WAIT_SECS,
            node: Some("a-b".into())
        }
    );
    assert!(Query::parse(Some("wait=-1")).is_err());
}
