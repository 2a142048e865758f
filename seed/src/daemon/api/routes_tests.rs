//! The router and the generated OpenAPI document agree, and the document is honest about each
//! route's credential; `/metrics` and `POST /v1/nodes`.

use super::*;
use crate::lifecycle::Timeouts;
use crate::store::memory::MemStore;
use crate::store::nodes;

const TOKEN: &str = "t";

fn api() -> (Arc<Daemon>, Api) {
    let d = Daemon::new(
        Arc::new(MemStore::new()),
        crate::daemon::test_support::settings(Timeouts::default(), true),
    )
    .unwrap();
    let m = Arc::new(netboot::metrics::Metrics::default());
    m.counter("dhcp_offers_total", "offers");
    crate::daemon::metrics::register(&d, &m);
    (d.clone(), Api::new(d, TOKEN).with_metrics(m))
}

fn req(method: &str, path: &str, ct: Option<&str>, body: &str) -> ApiRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    if let Some(ct) = ct {
        headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
    }
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path, None),
    };
    ApiRequest {
        method: method.parse().unwrap(),
        path: path.into(),
        query,
        headers,
        body: bytes::Bytes::from(body.to_string()),
        peer: "127.0.0.1:1".parse().unwrap(),
    }
}

/// The API's surface: a route added or removed shows up here (and in the document by itself).
const SURFACE: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/agent/facts"),
    ("POST", "/v1/agent/heartbeat"),
    ("POST", "/v1/agent/progress"),
    ("POST", "/v1/node/booted"),
    ("GET", "/v1/node/metadata"),
    ("POST", "/v1/node/signal"),
    ("GET", "/v1/nodes"),
    ("POST", "/v1/nodes"),
    ("GET", "/v1/nodes/{name}"),
    ("POST", "/v1/nodes/{name}/inspect"),
    ("POST", "/v1/nodes/{name}/manage"),
    ("POST", "/v1/nodes/{name}/provide"),
    ("POST", "/v1/nodes/{name}/deploy"),
    ("POST", "/v1/nodes/{name}/undeploy"),
    ("GET", "/v1/nodes/{name}/metadata"),
    ("PUT", "/v1/nodes/{name}/metadata"),
    ("POST", "/v1/nodes/{name}/credential"),
    ("GET", "/v1/stacks"),
    ("POST", "/v1/stacks"),
    ("GET", "/v1/stacks/{name}"),
    ("PUT", "/v1/stacks/{name}"),
    ("DELETE", "/v1/stacks/{name}"),
    ("GET", "/v1/stacks/{name}/events"),
    ("POST", "/v1/stacks/{name}/replace"),
    ("GET", "/v1/images"),
    ("GET", "/v1/images/{name}"),
    ("GET", "/v1/tokens"),
    ("POST", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{name}"),
    ("GET", "/v1/ha/handoff"),
    ("POST", "/v1/ha/handoff"),
    ("GET", "/v1/ha/members"),
    ("POST", "/v1/ha/members"),
    ("DELETE", "/v1/ha/members/{name}"),
];

#[test]
fn the_document_lists_the_whole_surface_and_parses() {
    let mut routes: Vec<(String, String)> = route_list()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    routes.sort();
    let mut surface: Vec<(String, String)> = SURFACE
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    surface.sort();
    assert_eq!(routes, surface);

    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in SURFACE {
        let op = &doc["paths"][*path][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
        assert!(op["operationId"].is_string(), "{method} {path}");
    }
    // Every $ref points at something that exists.
    let text = openapi_json();
    for r in text.split("\"$ref\": \"#/").skip(1) {
        let ptr = &r[..r.find('"').unwrap()];
        assert!(
            doc.pointer(&format!("/{ptr}")).is_some(),
            "dangling $ref #/{ptr}"
        );
    }
}

#[test]
fn openapi_says_agent_routes_need_the_agent_token() {
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    let agent: Vec<_> = SURFACE
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/agent/"))
        .collect();
    assert_eq!(agent.len(), 3);
    for (method, path) in agent {
        let op = &doc["paths"][*path][method.to_ascii_lowercase()];
        assert_eq!(
            op["security"],
            serde_json::json!([{"agent_token": []}]),
            "{method} {path}"
        );
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    for scheme in ["agent_token", "token", "node_credential"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object());
    }
}

/// Each route does what the document says about its credential: one that names the token or a
/// node credential refuses a request without it (401), one that names none answers one.
#[tokio::test]
async fn every_route_checks_the_credential_the_document_names() {
    let (_, api) = api();
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    for (method, path) in SURFACE {
        let op = &doc["paths"][*path][method.to_ascii_lowercase()];
        let scheme = op["security"][0]
            .as_object()
            .and_then(|o| o.keys().next().cloned());
        let mut r = req(method, &path.replace("{name}", "nope"), None, "{}");
        r.headers.clear();
        let resp = api.respond(&r).await;
        match scheme.as_deref() {
            Some("token" | "node_credential") => {
                assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{method} {path}")
            }
            // Agent calls are checked after the body names the node; `{}` names none.
            Some("agent_token") => assert_eq!(resp.status, StatusCode::BAD_REQUEST),
            None => assert_eq!(resp.status, StatusCode::OK, "{method} {path}"),
            Some(other) => panic!("{method} {path}: unknown scheme {other}"),
        }
        assert!(
            serde_json::from_str::<serde_json::Value>(&resp.body).is_ok()
                || resp.content_type.starts_with("text/plain"),
            "{method} {path}: {}",
            resp.body
        );
    }
}

#[tokio::test]
async fn every_listed_route_is_routed() {
    let (_, api) = api();
    for (method, path) in route_list() {
        let p = path.replace("{name}", "nope");
        let r = api
            .handle(req(method.as_str(), &p, Some("application/json"), "{}"))
            .await;
        assert!(
            !r.body.contains("no such endpoint") && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
    }
    let r = api.handle(req("GET", "/v1/bogus", None, "")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<::api::ErrorBody>(&r.body)
            .unwrap()
            .error,
        "no such endpoint"
    );
    // Without the token, an unknown path says nothing about what exists.
    let mut anon = req("GET", "/v1/bogus", None, "");
    anon.headers.clear();
    assert_eq!(api.handle(anon).await.status, StatusCode::UNAUTHORIZED);
    // A known path with another method: 405 with the API's error body.
    let r = api.handle(req("DELETE", "/v1/nodes", None, "")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.body);
    assert!(r.body.contains("method not allowed"), "{}", r.body);
    let r = api.handle(req("GET", "/v1/agent/facts", None, "")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.contains("use POST"), "{}", r.body);
    // A trailing slash is the same route.
    let r = api.handle(req("GET", "/v1/nodes/", None, "")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn openapi_and_metrics_need_no_token() {
    let (_, api) = api();
    for path in ["/v1/openapi.json", "/metrics"] {
        let mut r = req("GET", path, None, "");
        r.headers.clear();
        let resp = api.respond(&r).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn import_through_the_api_then_metrics() {
    let (d, api) = api();
    let yaml = "nodes:\n  - name: a\n    mac: [\"52:54:00:00:00:0a\"]\n    pm_type: fake\n    \
                pm_addr: x\n    pm_user: u\n    pm_password: hunter2\n    \
                capabilities: \"profile:compute\"\n";
    let r = api
        .respond(&req("POST", "/v1/nodes", Some("application/yaml"), yaml))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(!r.body.contains("hunter2"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["enrolled"], serde_json::json!(["a"]));
    // The boot table knows the new MAC at once.
    assert_eq!(
        netboot::BootPolicy::boot_action(&*d, netboot::MacAddr([0x52, 0x54, 0, 0, 0, 0x0a])),
        Some(netboot::BootAction::Exit)
    );
    // JSON too; a taken MAC refuses the whole list.
    let json = r#"{"nodes":[
        {"name":"b","mac":["52:54:00:00:00:0b"],"pm_type":"fake","pm_addr":"x","pm_user":"u","pm_password":"p"},
        {"name":"c","mac":["52:54:00:00:00:0a"],"pm_type":"fake","pm_addr":"x","pm_user":"u","pm_password":"p"}]}"#;
    let r = api
        .respond(&req("POST", "/v1/nodes", Some("application/json"), json))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("nothing enrolled"), "{}", r.body);
    assert_eq!(nodes::list(d.store()).unwrap().len(), 1);
    let r = api
        .respond(&req("POST", "/v1/nodes", Some("application/json"), "{nope"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Without the token: refused.
    let mut anon = req("POST", "/v1/nodes", Some("application/yaml"), yaml);
    anon.headers.remove(http::header::AUTHORIZATION);
    assert_eq!(api.respond(&anon).await.status, StatusCode::UNAUTHORIZED);

    let m = api.respond(&req("GET", "/metrics", None, "")).await;
    assert!(m.content_type.starts_with("text/plain"));
    assert!(m.body.contains("dhcp_offers_total 0\n"), "{}", m.body);
    assert!(
        m.body.contains("seed_nodes{state=\"enroll\"} 1\n"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("seed_nodes{state=\"available\"} 0\n"),
        "{}",
        m.body
    );
}
