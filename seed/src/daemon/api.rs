//! The daemon's HTTP API under `/v1/`, served by the netboot HTTP server:
//!
//! - agent, with `Authorization: Bearer <agent token>`: the per-boot token of the node the
//!   request is about (found by the report's MAC), which the seed put on that node's ramdisk
//!   command line as `seed.token=` ([`super::agent_token`]; valid only while the node is
//!   inspecting, deploying or cleaning, and only for that step). Missing or wrong → 401 (JSON
//!   error, counted as `seed_agent_auth_failures_total`, logged at warn without the token) and
//!   nothing changes; an unknown MAC → 404. `POST /v1/agent/facts` ([`Report`] → [`Ack`]),
//!   `POST /v1/agent/heartbeat` ([`Heartbeat`] → [`Command`]: a deploy's command carries the
//!   node's credential, so only its own agent ever gets it), `POST /v1/agent/progress`
//!   ([`Progress`] → [`Command`]: a deploy's phase and bytes; a report whose `op` is not the
//!   node's current deploy is dropped, `done` means the image is written, `failed` fails the
//!   deploy with the agent's `error`);
//! - deployed nodes, with `Authorization: Bearer <node credential>` (401 missing or unknown):
//!   `POST /v1/node/booted` (the image's first boot: the credential's owner becomes active);
//! - REST, with `Authorization: Bearer <token>` (401 without): `GET /v1/nodes`,
//!   `POST /v1/nodes` (enroll an instackenv list, JSON or YAML),
//!   `GET /v1/nodes/NAME` (with `progress`, the agent's last deploy report),
//!   `POST /v1/nodes/NAME/{inspect,manage,provide}`, `POST /v1/nodes/NAME/deploy` (JSON
//!   `{"image": "tiny", "root_hint": "size>=4"}`, hint optional) and
//!   `POST /v1/nodes/NAME/undeploy` (optional JSON `{"full_wipe": true}`: power off, tear down,
//!   clean, revoke the node's credential).
//! - the metadata service ([`super::metadata_api`]): `GET /v1/node/metadata` (long-poll) and
//!   `POST /v1/node/signal` with the node's own credential; `PUT/GET /v1/nodes/NAME/metadata`
//!   and `POST /v1/nodes/NAME/credential` with the token;
//! - open: `GET /v1/openapi.json` (the API's description, `seed/openapi.yaml`), `GET /metrics`
//!   (Prometheus text: netboot counters and [`super::metrics`]).
//!
//! [`ROUTES`] lists every route the router knows; a test keeps it, the router and the OpenAPI
//! document in step. Passwords, node credentials and agent tokens never leave: node views carry
//! the BMC address and user only.

use super::{metadata_api, Daemon, DaemonError, FACTS};
use crate::inventory::{BootMode, Disk, Mac, Node, Properties};
use crate::lifecycle::{Event, State};
use crate::store::{nodes, Expect, Op};
use http::{Method, StatusCode};
use netboot::http::{ApiHandler, ApiRequest, ApiResponse};
use ramdisk::agent::{facts::Facts, Ack, Heartbeat, Progress, Report};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tracing::{info, warn};

/// Every route the router answers (method, OpenAPI path template). Keep in step with
/// [`Api::handle`] (and so [`Api::respond`]) and `seed/openapi.yaml`: the tests check both.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/agent/facts"),
    ("POST", "/v1/agent/heartbeat"),
    ("POST", "/v1/agent/progress"),
    ("POST", "/v1/node/booted"),
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
    ("GET", "/v1/node/metadata"),
    ("POST", "/v1/node/signal"),
    ("GET", "/v1/stacks"),
    ("POST", "/v1/stacks"),
    ("GET", "/v1/stacks/{name}"),
    ("PUT", "/v1/stacks/{name}"),
    ("DELETE", "/v1/stacks/{name}"),
    ("GET", "/v1/stacks/{name}/events"),
];

/// The OpenAPI document, written by hand in YAML.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The OpenAPI document as JSON (converted once from [`OPENAPI_YAML`]).
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let v: serde_json::Value = match yaml11::parse("openapi.yaml", OPENAPI_YAML) {
            Ok(v) => v.map_or(serde_json::Value::Null, |n| n.to_json()),
            Err(e) => {
                // The unit test parses it: this only happens with a broken build.
                tracing::error!(error = %e, "seed/openapi.yaml does not parse");
                serde_json::json!({"error": "the OpenAPI document does not parse"})
            }
        };
        serde_json::to_string_pretty(&v).unwrap_or_default()
    })
}

/// The [`ApiHandler`] of the daemon.
#[derive(Debug)]
pub struct Api {
    daemon: Arc<Daemon>,
    token: String,
    /// Rendered at `GET /metrics` (the netboot counters and, once registered, the daemon's).
    metrics: Option<Arc<netboot::metrics::Metrics>>,
}

impl Api {
    pub fn new(daemon: Arc<Daemon>, token: impl Into<String>) -> Self {
        Api {
            daemon,
            token: token.into(),
            metrics: None,
        }
    }

    /// Serve `metrics` at `GET /metrics` (register the daemon's collector on it with
    /// [`super::metrics::register`]).
    pub fn with_metrics(mut self, metrics: Arc<netboot::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// An in-process operator request (benches, tools): `method path` with a JSON `body`,
    /// authenticated with this API's own token. Returns the status code and the body.
    pub fn local(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let r = self.respond(&ApiRequest {
            method: method.parse().unwrap_or(Method::GET),
            path: path.into(),
            query: None,
            headers,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        });
        (r.status.as_u16(), r.body)
    }

    /// Answer one request (synchronous: store writes are short; power runs in node workers).
    pub fn respond(&self, req: &ApiRequest) -> ApiResponse {
        let path = req.path.trim_end_matches('/');
        match (req.method.clone(), path) {
            (Method::GET, "/metrics") => return self.metrics(),
            (Method::GET, "/v1/openapi.json") => {
                return ApiResponse {
                    status: StatusCode::OK,
                    content_type: "application/json",
                    body: openapi_json().to_string(),
                }
            }
            (Method::POST, "/v1/agent/facts") => return self.facts(req),
            (Method::POST, "/v1/agent/heartbeat") => return self.heartbeat(req),
            (Method::POST, "/v1/agent/progress") => return self.progress(req),
            (Method::POST, "/v1/node/booted") => return self.booted(req),
            (
                _,
                "/v1/agent/facts"
                | "/v1/agent/heartbeat"
                | "/v1/agent/progress"
                | "/v1/node/booted",
            ) => return error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
            _ => {}
        }
        if !self.authorized(req) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong `Authorization: Bearer <token>`",
            );
        }
        if let Some(rest) = path.strip_prefix("/v1/stacks") {
            return super::stacks::route(&self.daemon, req, rest);
        }
        let Some(rest) = path.strip_prefix("/v1/nodes") else {
            return error(StatusCode::NOT_FOUND, "no such endpoint");
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (req.method.clone(), parts.as_slice()) {
            (Method::GET, []) => self.list(),
            (Method::POST, []) => self.import(req),
            (Method::GET, [name]) => self.show(name),
            (Method::POST, [name, verb @ ("deploy" | "undeploy")]) => {
                self.deploy_request(name, verb, &req.body)
            }
            (Method::POST, [name, verb]) => self.request(name, verb),
            (_, [] | [_] | [_, _]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// `GET /metrics`: the netboot counters with the daemon's collector, or the daemon's
    /// metrics alone when no registry was given.
    fn metrics(&self) -> ApiResponse {
        let body = match &self.metrics {
            Some(m) => m.render(),
            None => match self.daemon.metrics().render(self.daemon.store()) {
                Ok(t) => t,
                Err(e) => return internal(&e),
            },
        };
        ApiResponse {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }

    /// `POST /v1/nodes`: enroll an instackenv list (JSON, or YAML unless the content type
    /// says JSON); all of it or nothing. 201 with the names enrolled.
    fn import(&self, req: &ApiRequest) -> ApiResponse {
        use crate::inventory::{parse_instackenv, Format};
        let Ok(text) = std::str::from_utf8(&req.body) else {
            return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
        };
        let json = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let format = if json { Format::Json } else { Format::Yaml };
        let store = self.daemon.store();
        let taken: Vec<_> = match nodes::list(store) {
            Ok(all) => all.into_iter().map(|(n, _)| (n.name, n.macs)).collect(),
            Err(e) => return internal(&e),
        };
        let new = match parse_instackenv(text, format, &taken, super::now_ms()) {
            Ok(n) => n,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("nothing enrolled: {}", error_chain(&e)),
                )
            }
        };
        if let Err(e) = self.daemon.enroll(&new) {
            return daemon_error(&e);
        }
        let names: Vec<&str> = new.iter().map(|n| n.name.as_str()).collect();
        info!(count = names.len(), "nodes enrolled through the API");
        ApiResponse::json(
            StatusCode::CREATED,
            &serde_json::json!({ "enrolled": names }),
        )
    }

    fn authorized(&self, req: &ApiRequest) -> bool {
        let Some(given) = bearer(req) else {
            return false;
        };
        constant_time_eq(given.as_bytes(), self.token.as_bytes())
    }

    fn list(&self) -> ApiResponse {
        match nodes::list(self.daemon.store()) {
            Ok(all) => {
                let views: Vec<NodeView> = all
                    .iter()
                    .map(|(n, _)| {
                        NodeView::new(n, self.facts_of(&n.name))
                            .with_progress(self.daemon.last_progress(&n.name))
                    })
                    .collect();
                ApiResponse::json(StatusCode::OK, &views)
            }
            Err(e) => internal(&e),
        }
    }

    fn show(&self, name: &str) -> ApiResponse {
        match nodes::get(self.daemon.store(), name) {
            Ok(Some((n, _))) => ApiResponse::json(
                StatusCode::OK,
                &NodeView::new(&n, self.facts_of(name))
                    .with_progress(self.daemon.last_progress(name)),
            ),
            Ok(None) => error(StatusCode::NOT_FOUND, &format!("no node named {name:?}")),
            Err(e) => internal(&e),
        }
    }

    fn facts_of(&self, name: &str) -> Option<serde_json::Value> {
        let rec = self.daemon.store().get(FACTS, name).ok()??;
        serde_json::from_slice(&rec.value).ok()
    }

    fn request(&self, name: &str, verb: &str) -> ApiResponse {
        let d = &self.daemon;
        let res = match verb {
            "inspect" => d.request_inspect(name),
            "manage" => d.apply(name, Event::Manage, vec![]),
            "provide" => d.apply(name, Event::Provide, vec![]),
            _ => return error(StatusCode::NOT_FOUND, &format!("unknown request {verb:?}")),
        };
        match res {
            Ok(n) => ApiResponse::json(
                StatusCode::ACCEPTED,
                &NodeView::new(&n, self.facts_of(name)),
            ),
            Err(e) => daemon_error(&e),
        }
    }

    /// `POST /v1/nodes/NAME/deploy` and `…/undeploy`.
    fn deploy_request(&self, name: &str, verb: &str, body: &[u8]) -> ApiResponse {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DeployBody {
            image: String,
            #[serde(default)]
            root_hint: Option<String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct UndeployBody {
            #[serde(default)]
            full_wipe: bool,
        }
        let d = &self.daemon;
        let res = if verb == "deploy" {
            let b: DeployBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"image\": NAME, \"root_hint\": HINT}}: {e}"),
                    )
                }
            };
            if b.image.trim().is_empty() {
                return error(StatusCode::BAD_REQUEST, "the image name is empty");
            }
            if let Some(Err(e)) = b.root_hint.as_deref().map(super::deploy::check_root_hint) {
                return error(StatusCode::BAD_REQUEST, &e);
            }
            let target = crate::lifecycle::DeployTarget {
                image: b.image,
                root_hint: b.root_hint.filter(|h| !h.trim().is_empty()),
            };
            d.request_deploy(name, target)
        } else {
            let b: UndeployBody = if body.iter().all(u8::is_ascii_whitespace) {
                UndeployBody::default()
            } else {
                match serde_json::from_slice(body) {
                    Ok(b) => b,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("expected {{\"full_wipe\": BOOL}} or nothing: {e}"),
                        )
                    }
                }
            };
            d.request_undeploy(name, b.full_wipe)
        };
        match res {
            Ok(n) => ApiResponse::json(
                StatusCode::ACCEPTED,
                &NodeView::new(&n, self.facts_of(name)),
            ),
            Err(e) => daemon_error(&e),
        }
    }

    /// `POST /v1/agent/progress`: recorded (or dropped if stale); answered with the command.
    fn progress(&self, req: &ApiRequest) -> ApiResponse {
        let p: Progress = match serde_json::from_slice(&req.body) {
            Ok(p) => p,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("not a progress report: {e}"),
                )
            }
        };
        let mac: Mac = match p.boot_mac.parse() {
            Ok(m) => m,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let name = match nodes::by_mac(self.daemon.store(), mac) {
            Ok(Some(n)) => n,
            Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no node has MAC {mac}")),
            Err(e) => return internal(&e),
        };
        if let Err(r) = self.agent_authorized(req, &name, &p.boot_mac) {
            return r;
        }
        match self.daemon.agent_progress(&name, p) {
            Ok(_) => ApiResponse::json(StatusCode::OK, &self.daemon.pending_command(&name)),
            Err(e) => daemon_error(&e),
        }
    }

    /// `POST /v1/node/booted` with the node's credential.
    fn booted(&self, req: &ApiRequest) -> ApiResponse {
        let unauthorized = || {
            error(
                StatusCode::UNAUTHORIZED,
                "missing or unknown `Authorization: Bearer <node credential>`",
            )
        };
        let Some(token) = bearer(req).filter(|t| !t.is_empty()) else {
            return unauthorized();
        };
        match self.daemon.node_booted(token) {
            Ok(Some(n)) => {
                info!(node = %n.name, peer = %req.peer, "deployed image booted");
                ApiResponse::json(
                    StatusCode::OK,
                    &serde_json::json!({"node": n.name, "state": n.lifecycle.state.name()}),
                )
            }
            Ok(None) => {
                info!(peer = %req.peer, "booted with an unknown credential refused");
                unauthorized()
            }
            Err(e) => daemon_error(&e),
        }
    }

    fn facts(&self, req: &ApiRequest) -> ApiResponse {
        let report: Report = match serde_json::from_slice(&req.body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a facts report: {e}")),
        };
        let name = match self.find(&report.boot_mac, &report.facts) {
            Ok(Some(n)) => n,
            Ok(None) => {
                info!(boot_mac = %report.boot_mac, peer = %req.peer, "facts from an unknown machine refused");
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no node has MAC {} or any reported NIC", report.boot_mac),
                );
            }
            Err(e) => return e,
        };
        if let Err(r) = self.agent_authorized(req, &name, &report.boot_mac) {
            return r;
        }
        match self.daemon.facts_are_no_inspection(&name) {
            // The ramdisk's agent reports facts at every boot: while deploying they only say
            // "up", and the agent goes on to heartbeat for its deploy command.
            Ok(true) => {
                return ApiResponse::json(
                    StatusCode::OK,
                    &Ack {
                        node: name,
                        heartbeat_secs: self.daemon.settings().heartbeat_secs,
                    },
                )
            }
            Ok(false) => {}
            Err(e) => return daemon_error(&e),
        }
        let stored = serde_json::to_vec(&report.facts).unwrap_or_default();
        let props = properties(&report.facts);
        let d = &self.daemon;
        match d.apply(
            &name,
            Event::Inspected(props),
            vec![Op::put(FACTS, &name, stored, Expect::Any)],
        ) {
            Ok(n) => {
                if d.settings().provide_after_inspect && n.lifecycle.state == State::Manageable {
                    if let Err(e) = d.apply(&name, Event::Provide, vec![]) {
                        tracing::warn!(node = %name, error = %e, "provide after inspection");
                    }
                }
                ApiResponse::json(
                    StatusCode::OK,
                    &Ack {
                        node: name,
                        heartbeat_secs: d.settings().heartbeat_secs,
                    },
                )
            }
            Err(e) => daemon_error(&e),
        }
    }

    fn heartbeat(&self, req: &ApiRequest) -> ApiResponse {
        let hb: Heartbeat = match serde_json::from_slice(&req.body) {
            Ok(h) => h,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a heartbeat: {e}")),
        };
        let mac: Mac = match hb.boot_mac.parse() {
            Ok(m) => m,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match nodes::by_mac(self.daemon.store(), mac) {
            Ok(Some(name)) => match self.agent_authorized(req, &name, &hb.boot_mac) {
                // Only the node's own agent gets its command (a deploy's carries its credential).
                Ok(()) => ApiResponse::json(StatusCode::OK, &self.daemon.pending_command(&name)),
                Err(r) => r,
            },
            Ok(None) => error(StatusCode::NOT_FOUND, &format!("no node has MAC {mac}")),
            Err(e) => internal(&e),
        }
    }

    /// Whether the agent call carries node `name`'s current per-boot token; the 401 to answer
    /// when not (counted, and logged with the node and MAC, never the token).
    fn agent_authorized(&self, req: &ApiRequest, name: &str, mac: &str) -> Result<(), ApiResponse> {
        let presented = bearer(req).filter(|t| !t.is_empty());
        let ok = match presented {
            Some(t) => match self.daemon.agent_token_ok(name, t) {
                Ok(ok) => ok,
                Err(e) => return Err(daemon_error(&e)),
            },
            None => false,
        };
        if ok {
            // Its agent runs: the node got through PXE (meets the boot watchdog).
            self.daemon.boot_seen(name);
            return Ok(());
        }
        self.daemon.metrics().agent_auth_failure();
        let why = if presented.is_some() {
            "not the node's current agent token"
        } else {
            "no agent token"
        };
        warn!(node = name, %mac, peer = %req.peer, path = %req.path, why, "agent call refused");
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong `Authorization: Bearer <agent token>` (the seed.token= of this \
             node's current ramdisk boot)",
        ))
    }

    /// The node owning the boot MAC, else any of the reported NICs' MACs.
    fn find(&self, boot_mac: &str, facts: &Facts) -> Result<Option<String>, ApiResponse> {
        let boot: Mac = boot_mac.parse().map_err(|e: crate::inventory::BadMac| {
            error(StatusCode::BAD_REQUEST, &e.to_string())
        })?;
        let others = facts.nics.iter().filter_map(|n| n.mac.parse::<Mac>().ok());
        for mac in std::iter::once(boot).chain(others) {
            match nodes::by_mac(self.daemon.store(), mac) {
                Ok(Some(name)) => return Ok(Some(name)),
                Ok(None) => {}
                Err(e) => return Err(internal(&e)),
            }
        }
        Ok(None)
    }
}

type ApiFuture = Pin<Box<dyn Future<Output = ApiResponse> + Send + 'static>>;

impl Api {
    /// The metadata service ([`metadata_api`]): `/v1/node/{metadata,signal}` with the node's
    /// credential, `/v1/nodes/NAME/{metadata,credential}` with the admin token. `None` for any
    /// other path. The node `GET` is async: it may long-poll.
    fn metadata_routes(&self, req: &ApiRequest) -> Option<ApiFuture> {
        let ready = |r: ApiResponse| -> Option<ApiFuture> { Some(Box::pin(async move { r })) };
        let path = req.path.trim_end_matches('/');
        match (req.method.clone(), path) {
            (Method::GET, "/v1/node/metadata") => {
                return Some(Box::pin(metadata_api::get(
                    self.daemon.clone(),
                    req.clone(),
                )))
            }
            (Method::POST, "/v1/node/signal") => {
                return ready(metadata_api::signal(&self.daemon, req))
            }
            (_, "/v1/node/metadata" | "/v1/node/signal") => {
                return ready(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"))
            }
            _ => {}
        }
        let (name, what) = path.strip_prefix("/v1/nodes/")?.split_once('/')?;
        if !matches!(what, "metadata" | "credential") {
            return None;
        }
        if !self.authorized(req) {
            return ready(error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong `Authorization: Bearer <token>`",
            ));
        }
        ready(match (req.method.clone(), what) {
            (Method::GET, "metadata") => metadata_api::show(&self.daemon, name),
            (Method::PUT, "metadata") => metadata_api::put(&self.daemon, name, req),
            (Method::POST, "credential") => metadata_api::issue_credential(&self.daemon, name),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        })
    }
}

impl ApiHandler for Api {
    fn handle(
        &self,
        req: ApiRequest,
    ) -> Pin<Box<dyn Future<Output = ApiResponse> + Send + 'static>> {
        if let Some(f) = self.metadata_routes(&req) {
            return f;
        }
        let resp = self.respond(&req);
        Box::pin(async move { resp })
    }
}

/// What inspection found, in inventory terms.
pub fn properties(f: &Facts) -> Properties {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Properties {
        cpus: Some(f.cpus),
        memory_mib: Some(f.memory_mib),
        disks: f
            .disks
            .iter()
            .map(|d| Disk {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: opt(&d.model),
                serial: opt(&d.serial),
                partitions: vec![],
            })
            .collect(),
        boot_mode: Some(match f.boot_mode {
            ramdisk::agent::facts::BootMode::Bios => BootMode::Bios,
            ramdisk::agent::facts::BootMode::Uefi => BootMode::Uefi,
        }),
        arch: None,
    }
}

/// A node as the API shows it: no password.
#[derive(Serialize)]
struct NodeView<'a> {
    name: &'a str,
    macs: &'a [Mac],
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
    bmc: BmcView<'a>,
    properties: &'a Properties,
    capabilities: &'a crate::inventory::Capabilities,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<serde_json::Value>,
    /// The agent's last deploy progress (memory only).
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    /// Power-cycles by the PXE boot watchdog in the current (or last) step.
    boot_retries: u32,
    updated_ms: u64,
}

#[derive(Serialize)]
struct BmcView<'a> {
    driver: String,
    address: &'a str,
    port: u16,
    username: &'a str,
}

impl<'a> NodeView<'a> {
    fn new(n: &'a Node, facts: Option<serde_json::Value>) -> Self {
        let lc = &n.lifecycle;
        NodeView {
            name: &n.name,
            macs: &n.macs,
            state: lc.state.name(),
            reason: lc.state.reason(),
            maintenance: lc.maintenance.as_deref(),
            last_error: lc.last_error.as_deref(),
            bmc: BmcView {
                driver: n.bmc.driver.to_string(),
                address: &n.bmc.address,
                port: n.bmc.port,
                username: &n.bmc.username,
            },
            properties: &n.properties,
            capabilities: &n.capabilities,
            facts,
            progress: None,
            boot_retries: lc.boot_retries,
            updated_ms: n.updated_ms,
        }
    }

    fn with_progress(mut self, p: Option<Progress>) -> Self {
        self.progress = p;
        self
    }
}

/// The token of `Authorization: Bearer <token>`, trimmed.
fn bearer(req: &ApiRequest) -> Option<&str> {
    req.headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, msg: &str) -> ApiResponse {
    ApiResponse::json(status, &ErrorBody { error: msg })
}

fn internal(e: &dyn std::error::Error) -> ApiResponse {
    tracing::error!(error = %e, "API");
    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

fn daemon_error(e: &DaemonError) -> ApiResponse {
    match e {
        DaemonError::NotFound(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
        DaemonError::Refused(inner) => error(StatusCode::CONFLICT, &inner.to_string()),
        DaemonError::Store(s) if s.is_conflict() => error(StatusCode::CONFLICT, &s.to_string()),
        DaemonError::Store(s) => internal(s),
    }
}

/// An error and its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Token comparison whose time does not depend on where the first difference is (hand-written:
/// five lines do not justify a crate).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod routes_tests;

#[cfg(test)]
mod deploy_tests;

#[cfg(test)]
mod boot_watch_tests;
