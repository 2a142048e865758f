//! The route table, the router and the OpenAPI document agree; `/metrics` and `POST /v1/nodes`.

use super::*;
use crate::daemon::Settings;
use crate::lifecycle::Timeouts;
use crate::store::memory::MemStore;

const TOKEN: &str = "t";

fn api() -> (Arc<Daemon>, Api) {
    let d = Daemon::new(
        Arc::new(MemStore::new()),
        Settings {
            server_ip: "10.0.0.1".parse().unwrap(),
            http_port: 8080,
            timeouts: Timeouts::default(),
            heartbeat_secs: 7,
            provide_after_inspect: true,
        },
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
    ApiRequest {
        method: method.parse().unwrap(),
        path: path.into(),
        query: None,
        headers,
        body: bytes::Bytes::from(body.to_string()),
        peer: "127.0.0.1:1".parse().unwrap(),
    }
}

#[test]
fn openapi_parses_and_describes_every_route() {
    let doc: serde_json::Value = serde_json::from_str(openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in seed/openapi.yaml"))
            [method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path} is not in seed/openapi.yaml"
        );
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
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
    let agent: Vec<_> = ROUTES
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
    assert!(doc["components"]["securitySchemes"]["agent_token"].is_object());
}

#[tokio::test]
async fn every_listed_route_is_routed() {
    let (_, api) = api();
    for (method, path) in ROUTES {
        let p = path.replace("{name}", "nope");
        let r = api
            .handle(req(method, &p, Some("application/json"), "{}"))
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
}

#[test]
fn openapi_and_metrics_need_no_token() {
    let (_, api) = api();
    for path in ["/v1/openapi.json", "/metrics"] {
        let mut r = req("GET", path, None, "");
        r.headers.clear();
        let resp = api.respond(&r);
        assert_eq!(resp.status, StatusCode::OK, "{path}");
    }
}

#[test]
fn import_through_the_api_then_metrics() {
    let (d, api) = api();
    let yaml = "nodes:\n  - name: a\n    mac: [\"52:54:00:00:00:0a\"]\n    pm_type: fake\n    \
                pm_addr: x\n    pm_user: u\n    pm_password: hunter2\n    \
                capabilities: \"profile:compute\"\n";
    let r = api.respond(&req("POST", "/v1/nodes", Some("application/yaml"), yaml));
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
    let r = api.respond(&req("POST", "/v1/nodes", Some("application/json"), json));
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("nothing enrolled"), "{}", r.body);
    assert_eq!(nodes::list(d.store()).unwrap().len(), 1);
    let r = api.respond(&req("POST", "/v1/nodes", Some("application/json"), "{nope"));
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Without the token: refused.
    let mut anon = req("POST", "/v1/nodes", Some("application/yaml"), yaml);
    anon.headers.remove(http::header::AUTHORIZATION);
    assert_eq!(api.respond(&anon).status, StatusCode::UNAUTHORIZED);

    let m = api.respond(&req("GET", "/metrics", None, ""));
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
