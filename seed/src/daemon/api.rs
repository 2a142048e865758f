//! The daemon's HTTP API under `/v1/` (and `/metrics`): one typed router, its requests and
//! answers the [`::api`] crate's types, its OpenAPI document generated from the same
//! declarations.
//!
//! **One route = one declaration.** Each handler carries its `#[utoipa::path]` (method, path,
//! body, answers, credential) and [`routes`] registers it with `utoipa_axum::routes!`, which
//! adds it to the axum router and to the document at once: nothing else lists routes, and
//! `GET /v1/openapi.json` serves what the code declares. The routes:
//!
//! - agent ([`agent`]), with the node's per-boot agent token (`seed.token=`, found by the MAC in
//!   the body; 401 counted as `seed_agent_auth_failures_total`; unknown MAC 404):
//!   `POST /v1/agent/facts`, `/v1/agent/heartbeat` (a deploy's command carries the node's
//!   credential, so only its own agent ever gets it), `/v1/agent/progress` (a report whose `op`
//!   is not the node's current deploy is dropped; `done` means written, `failed` fails it);
//! - deployed nodes, with the node's credential: `POST /v1/node/booted` (its image's first
//!   boot: active), and the metadata service ([`super::metadata_api`]):
//!   `GET /v1/node/metadata` (long-poll), `POST /v1/node/signal`;
//! - operators, with an API token whose role allows the request ([`auth`]: `reader` GETs,
//!   `operator` also acts, `admin` also manages tokens) ([`nodes`], [`stacks`], [`images`],
//!   [`tokens`], and the operator side of [`super::metadata_api`]): `/v1/nodes…` (enroll an
//!   instackenv list, list, show, inspect, manage, provide, deploy, undeploy, metadata,
//!   credential), `/v1/stacks…`, `/v1/images…`, `/v1/tokens…`, `/v1/ha/handoff`, `/v1/ha/members…` ([`ha`]: never
//!   forwarded to the leader, it is about the daemon asked);
//! - open: `GET /v1/openapi.json`, `GET /metrics` (netboot counters and [`super::metrics`]).
//!
//! Errors are one type ([`ApiError`] → `{"error": "…"}`), credentials one check each
//! ([`auth`]). Handlers whose work commits to the store run it on the blocking pool
//! ([`extract::blocking`]); the metadata long-poll waits asynchronously. Passwords, node
//! credentials and agent tokens never leave: node views carry the BMC address and user only.
//!
//! The router is reached through netboot's [`ApiHandler`] ([`Api`]): the netboot HTTP server
//! hands it every `/v1/` request on the provisioning network, and the operators' listener
//! ([`super::admin`]) every `/v1/` and `/metrics` request.

mod agent;
mod audit;
mod auth;
mod error;
mod extract;
pub mod forward;
mod ha;
mod images;
mod nodes;
mod stacks;
mod tokens;

pub use agent::properties;
pub(crate) use auth::{Admin, NodeCredential, Operator, SecretsReader};
pub use error::ApiError;
pub(crate) use error::{BadRequest, NotFound, Unauthorized};
pub(crate) use extract::{blocking, Name, Payload, Peer, PeerAddr};
pub use images::image_view;
pub use nodes::node_view;

use super::Daemon;
use axum::response::IntoResponse;
use http::{header, HeaderMap, Method, StatusCode, Uri};
use netboot::http::{ApiHandler, ApiRequest, ApiResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler gets: the daemon, the operators' token, the metrics registry. It rides
/// in each request's extensions ([`extract`]), not in the router, so one route table serves
/// every [`Api`] and making an `Api` costs an `Arc` (fake machines make one per call).
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) daemon: Arc<Daemon>,
    token: Arc<str>,
    /// Rendered at `GET /metrics` (the netboot counters and, once registered, the daemon's).
    metrics: Option<Arc<netboot::metrics::Metrics>>,
    /// Whether this API answers operator routes (false: the provisioning network's HTTP port
    /// when the REST API lives only on the operators' listener, see [`Api::without_operators`]).
    operators: bool,
    /// In HA: who leads; a follower forwards its writes there ([`forward`]).
    leadership: Option<Arc<dyn forward::Leadership>>,
    /// In HA: this daemon's hand-off ([`ha`]).
    handoff: Option<Arc<crate::ha::handoff::Handoff>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "seed",
        version = "1",
        description = "The seed daemon's API: the REST API operators and the `seed` CLI use \
            (bearer token), the agent API the deploy ramdisk uses (with the node's per-boot \
            agent token from the ramdisk's `seed.token=` command line), and the node API a \
            deployed machine uses with its per-node credential.\n\nThe same router answers on \
            the netboot HTTP server (provisioning network) and on the operators' listener \
            (`[api] listen`, e.g. 127.0.0.1:6385). BMC passwords never appear in any response. \
            Generated from the code (`seed::daemon::api`)."
    ),
    servers((url = "http://127.0.0.1:6385")),
    tags(
        (name = "nodes", description = "Operators: enroll, look at and drive nodes"),
        (name = "stacks", description = "Operators: stacks of nodes from Heat-style templates"),
        (name = "images", description = "Operators: the seed's golden images"),
        (name = "tokens", description = "Admins: named API tokens with roles"),
        (name = "ha", description = "The HA control plane: a seed's hand-off to the undercloud"),
        (name = "agent", description = "The deploy ramdisk's agent"),
        (name = "node", description = "A deployed node, with its own credential"),
        (name = "meta", description = "This document and the metrics"),
    ),
    components(
        schemas(::api::ErrorBody),
        responses(
            error::BadRequest,
            error::Unauthorized,
            error::Forbidden,
            error::NotFound,
            error::Conflict
        )
    ),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

/// The three credentials as OpenAPI security schemes.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        c.add_security_scheme(
            "token",
            bearer(
                "An API token: `[api] token` (role admin) or a named token from \
                 `POST /v1/tokens` (role admin, operator or reader: reader may only GET; \
                 operator may also act on nodes, stacks and images; admin manages tokens)",
            ),
        );
        c.add_security_scheme(
            "agent_token",
            bearer(
                "The node's per-boot agent token: the `seed.token=` of the ramdisk's kernel \
                 command line, valid for the node's current inspect, deploy or clean step",
            ),
        );
        c.add_security_scheme(
            "node_credential",
            bearer("The node's own credential, written by the deploy into its identity file"),
        );
    }
}

/// Every route: each `routes!` entry is a handler whose `#[utoipa::path]` names its method and
/// path, so the router and the document cannot disagree. Handlers of one path share an entry.
fn routes() -> OpenApiRouter {
    use super::metadata_api as md;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(metrics))
        .routes(routes!(openapi_document))
        .routes(routes!(agent::facts))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::progress))
        .routes(routes!(nodes::booted))
        .routes(routes!(md::node_metadata))
        .routes(routes!(md::node_signal))
        .routes(routes!(nodes::list_nodes, nodes::enroll_nodes))
        .routes(routes!(nodes::show_node))
        .routes(routes!(nodes::inspect))
        .routes(routes!(nodes::manage))
        .routes(routes!(nodes::provide))
        .routes(routes!(nodes::deploy))
        .routes(routes!(nodes::undeploy))
        .routes(routes!(md::show_metadata, md::put_metadata))
        .routes(routes!(md::issue_credential))
        .routes(routes!(stacks::list_stacks, stacks::create_stack))
        .routes(routes!(
            stacks::show_stack,
            stacks::update_stack,
            stacks::delete_stack
        ))
        .routes(routes!(stacks::stack_events))
        .routes(routes!(stacks::replace_member))
        .routes(routes!(images::list_images))
        .routes(routes!(images::show_image))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(ha::show_handoff, ha::start_handoff))
        .routes(routes!(ha::list_members, ha::add_member))
        .routes(routes!(ha::remove_member))
}

/// The router and the document, built once per process.
struct Table {
    router: axum::Router,
    doc: utoipa::openapi::OpenApi,
    json: String,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let (router, doc) = routes().split_for_parts();
        let router = router
            .fallback(no_such_endpoint)
            .method_not_allowed_fallback(method_not_allowed);
        let json = doc.to_pretty_json().unwrap_or_else(|e| {
            // Serialising a document of plain maps cannot fail; keep serving the API if it did.
            tracing::error!(error = %e, "the OpenAPI document does not serialise");
            String::from("{}")
        });
        Table { router, doc, json }
    })
}

/// The OpenAPI document (generated from the routes).
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    &table().doc
}

/// The OpenAPI document as JSON, as `GET /v1/openapi.json` serves it.
pub fn openapi_json() -> &'static str {
    &table().json
}

/// Every route the router answers: (method, path template), from the document.
pub fn route_list() -> Vec<(Method, String)> {
    let mut out = vec![];
    for (path, item) in &openapi().paths.paths {
        let ops = [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
            (Method::HEAD, &item.head),
        ];
        for (m, op) in ops {
            if op.is_some() {
                out.push((m, path.clone()));
            }
        }
    }
    out
}

/// The [`ApiHandler`] of the daemon: the typed router with this daemon and token.
///
/// The router is called as a tower service ([`ServiceExt::oneshot`]) on requests the HTTP
/// edges have already read, rather than served by axum itself: nodes reach the API through
/// netboot's HTTP server, which also runs on the userspace wire (smoltcp), where there is no
/// `TcpListener` for axum to accept on. The peer's address travels as a request extension.
#[derive(Clone)]
pub struct Api {
    state: AppState,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(daemon: Arc<Daemon>, token: impl Into<String>) -> Self {
        Api {
            state: AppState {
                daemon,
                token: Arc::from(token.into()),
                metrics: None,
                operators: true,
                leadership: None,
                handoff: None,
            },
        }
    }

    /// The same API without the operator routes: every one answers 404 (after nothing is
    /// looked at), so the REST API is not reachable where this one serves — the provisioning
    /// network's HTTP port, unless `[api] provisioning = true`. Agent and node routes, the
    /// OpenAPI document and `/metrics` stay.
    pub fn without_operators(mut self) -> Self {
        self.state.operators = false;
        self
    }

    /// Serve `metrics` at `GET /metrics` (register the daemon's collector on it with
    /// [`super::metrics::register`]).
    /// In HA: forward writes to the leader while this daemon follows ([`forward`]).
    pub fn with_leadership(mut self, l: Arc<dyn forward::Leadership>) -> Self {
        self.state.leadership = Some(l);
        self
    }

    /// In HA: this daemon's hand-off, at `/v1/ha/handoff`.
    pub fn with_handoff(mut self, h: Arc<crate::ha::handoff::Handoff>) -> Self {
        self.state.handoff = Some(h);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<netboot::metrics::Metrics>) -> Self {
        self.state.metrics = Some(metrics);
        self
    }

    /// An in-process operator request (benches, tools): `method path` with a JSON `body`,
    /// authenticated with this API's own token. Returns the status code and the body.
    pub async fn local(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {}", self.state.token)) {
            headers.insert(header::AUTHORIZATION, v);
        }
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (path, None),
        };
        let r = self
            .respond(&ApiRequest {
                method: method.parse().unwrap_or(Method::GET),
                path: path.into(),
                query,
                headers,
                body: bytes::Bytes::copy_from_slice(body.as_bytes()),
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            })
            .await;
        (r.status.as_u16(), r.body)
    }

    /// Answer one request.
    pub async fn respond(&self, req: &ApiRequest) -> ApiResponse {
        dispatch(self.state.clone(), req.clone()).await
    }
}

impl ApiHandler for Api {
    fn handle(&self, req: ApiRequest) -> Pin<Box<dyn Future<Output = ApiResponse> + Send>> {
        Box::pin(dispatch(self.state.clone(), req))
    }
}

/// `req` through the router: an `http::Request` (path without a trailing `/`, the peer and the
/// API's state as extensions) in, the answer collected into an [`ApiResponse`] out.
async fn dispatch(state: AppState, req: ApiRequest) -> ApiResponse {
    if let Some(l) = &state.leadership {
        if forward::must_forward(&**l, &req.method, &req.path) {
            return forward::to_leader(l.clone(), req).await;
        }
    }
    let path = match req.path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    let uri = match &req.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return collect(ApiError::bad_request("not a valid request path").into_response()).await;
    };
    // Operator routes: the token is looked up once, for the handler's role check and the
    // audit line alike.
    let authn =
        (state.operators && operator_path(path)).then(|| auth::authenticate(&state, &req.headers));
    let audit = audit::Entry::of(&req, authn.as_ref());
    if !state.operators && operator_path(path) {
        let refused = ApiError::not_found(
            "the REST API is not served on the provisioning network: use the operators' \
             listener ([api] listen), or set [api] provisioning = true",
        )
        .into_response();
        if let Some(a) = audit {
            a.log(refused.status());
        }
        return collect(refused).await;
    }
    let mut http_req = http::Request::new(axum::body::Body::from(req.body));
    *http_req.method_mut() = req.method;
    *http_req.uri_mut() = uri;
    *http_req.headers_mut() = req.headers;
    http_req.extensions_mut().insert(PeerAddr(req.peer));
    if let Some(a) = authn {
        http_req.extensions_mut().insert(a);
    }
    http_req.extensions_mut().insert(state);
    let resp = match table().router.clone().oneshot(http_req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if let Some(a) = audit {
        a.log(resp.status());
    }
    collect(resp).await
}

/// Whether `path` is an operator route (not the agent's, a deployed node's or open).
fn operator_path(path: &str) -> bool {
    !(path.starts_with("/v1/agent/")
        || path.starts_with("/v1/node/")
        || path == "/v1/openapi.json"
        || path == "/metrics")
}

async fn collect(resp: axum::response::Response) -> ApiResponse {
    let (parts, body) = resp.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "API: the answer's body");
            bytes::Bytes::new()
        }
    };
    ApiResponse {
        status: parts.status,
        // Every answer the router makes is JSON but `/metrics`; a 304 has no body and keeps
        // the JSON type it always had.
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// No route has this path: 404, after the operator's token as for any operator route (a
/// caller without it learns nothing about which paths exist).
async fn no_such_endpoint(s: AppState, headers: HeaderMap) -> ApiError {
    if !auth::operator_ok(&s, &headers) {
        return ApiError::unauthorized(auth::OPERATOR_REFUSED);
    }
    ApiError::not_found("no such endpoint")
}

/// A route has this path but not this method: 405 (operator routes check the token first).
async fn method_not_allowed(s: AppState, uri: Uri, headers: HeaderMap) -> ApiError {
    let path = uri.path();
    if path.starts_with("/v1/agent/") || path == "/v1/node/booted" {
        return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let open = path.starts_with("/v1/node/") || path == "/metrics" || path == "/v1/openapi.json";
    if !open && !auth::operator_ok(&s, &headers) {
        return ApiError::unauthorized(auth::OPERATOR_REFUSED);
    }
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Prometheus metrics.
///
/// Netboot counters (DHCP, TFTP, HTTP) and the daemon's: `seed_nodes{state}`,
/// `seed_inspect_duration_seconds`, `seed_deploy_duration_seconds` (histograms),
/// `seed_inspect_failures_total`, `seed_deploy_failures_total`, `seed_transitions_total`,
/// `seed_agent_auth_failures_total` (agent calls refused for their token).
#[utoipa::path(get, path = "/metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
        content_type = "text/plain"),
))]
async fn metrics(s: AppState) -> Result<impl IntoResponse, ApiError> {
    let body = match &s.metrics {
        Some(m) => m.render(),
        None => s.daemon.metrics().render(s.daemon.store())?,
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}

/// This document, as JSON.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses(
    (status = 200, description = "The OpenAPI document", body = Object),
))]
async fn openapi_document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod routes_tests;

#[cfg(test)]
mod deploy_tests;

#[cfg(test)]
mod boot_watch_tests;

#[cfg(test)]
mod token_tests;
