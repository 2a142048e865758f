//! Named API tokens through the API: the role matrix (reader GETs only, operator acts but does
//! not manage tokens, admin does both), expiry and revocation (401), and the store keeping the
//! token's hash only (the redb file's bytes never hold the secret).

use super::*;
use crate::daemon::test_support::{fake_node, request as req, settings};
use crate::lifecycle::{State, Timeouts};
use crate::store::nodes;
use crate::store::redb::RedbStore;

const TOKEN: &str = "the-config-token";

fn setup(dir: &std::path::Path) -> (Arc<Daemon>, Api) {
    let store = Arc::new(RedbStore::open(&dir.join("seed.redb")).unwrap());
    let mut node = fake_node("n1", "52:54:00:00:00:01");
    node.lifecycle.state = State::Enroll;
    nodes::create(&*store, &[node]).unwrap();
    let d = Daemon::new(store, settings(Timeouts::default(), true)).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    (d, api)
}

async fn call(api: &Api, m: Method, path: &str, token: &str, body: &str) -> ApiResponse {
    api.respond(&req(m, path, Some(token), body)).await
}

/// Create token `name` with `role` as the config's admin; its secret.
async fn create(api: &Api, name: &str, role: &str, expires: Option<u64>) -> String {
    let body = match expires {
        Some(s) => format!(r#"{{"name":"{name}","role":"{role}","expires_in_secs":{s}}}"#),
        None => format!(r#"{{"name":"{name}","role":"{role}"}}"#),
    };
    let r = call(api, Method::POST, "/v1/tokens", TOKEN, &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["role"], role);
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn roles_expiry_revocation_and_hashes_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, api) = setup(dir.path());
    let reader = create(&api, "dash", "reader", None).await;
    let operator = create(&api, "ci", "operator", None).await;
    let admin = create(&api, "ops", "admin", None).await;

    // reader: GET yes, any write 403 naming the role needed.
    assert_eq!(
        call(&api, Method::GET, "/v1/nodes", &reader, "")
            .await
            .status,
        200
    );
    let r = call(&api, Method::POST, "/v1/nodes/n1/manage", &reader, "").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("needs role operator"), "{}", r.body);
    // A node's metadata holds generated passwords: not for readers.
    let r = call(&api, Method::GET, "/v1/nodes/n1/metadata", &reader, "").await;
    assert_eq!(r.status, 403, "{}", r.body);

    // operator: acts on nodes, but no token management (not even the list).
    let r = call(&api, Method::POST, "/v1/nodes/n1/manage", &operator, "").await;
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    let r = call(&api, Method::GET, "/v1/tokens", &operator, "").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("needs role admin"), "{}", r.body);
    let body = r#"{"name":"sneaky","role":"admin"}"#;
    let r = call(&api, Method::POST, "/v1/tokens", &operator, body).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // admin (named): lists without secrets or hashes, revokes.
    let r = call(&api, Method::GET, "/v1/tokens", &admin, "").await;
    assert_eq!(r.status, 200);
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&r.body)
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["ci", "dash", "ops"]);
    for t in [&reader, &operator, &admin] {
        let secret = t.rsplit_once('_').unwrap().1;
        assert!(!r.body.contains(secret), "{}", r.body);
    }
    assert!(!r.body.contains("sha256"), "{}", r.body);
    let r = call(&api, Method::DELETE, "/v1/tokens/dash", &admin, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(&api, Method::GET, "/v1/nodes", &reader, "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
    let r = call(&api, Method::DELETE, "/v1/tokens/nope", &admin, "").await;
    assert_eq!(r.status, 404);

    // Expired (0 s to live): 401.
    let short = create(&api, "short", "operator", Some(0)).await;
    let r = call(&api, Method::GET, "/v1/nodes", &short, "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);

    // Forged and unknown tokens: 401; duplicate and bad names refused.
    let forged = format!("seed_ops_{}", "0".repeat(64));
    for (method, path, token, body, want) in [
        (Method::GET, "/v1/nodes", forged.as_str(), "", 401),
        (
            Method::POST,
            "/v1/tokens",
            TOKEN,
            r#"{"name":"ci","role":"reader"}"#,
            409,
        ),
        (
            Method::POST,
            "/v1/tokens",
            TOKEN,
            r#"{"name":"config","role":"reader"}"#,
            400,
        ),
    ] {
        let r = call(&api, method.clone(), path, token, body).await;
        assert_eq!(r.status, want, "{method} {path} {body}: {}", r.body);
    }

    // At rest: the store file holds no secret (hashes only).
    drop(api);
    drop(_d);
    let bytes = std::fs::read(dir.path().join("seed.redb")).unwrap();
    for t in [&reader, &operator, &admin, &short] {
        let secret = t.rsplit_once('_').unwrap().1;
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a token's secret is in the store file"
        );
    }
    let hashed = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(admin.as_bytes()));
    assert!(
        bytes.windows(64).any(|w| w == hashed.as_bytes()),
        "its hash is"
    );
}
