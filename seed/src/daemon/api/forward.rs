//! HA: a follower's writes go to the leader. Any request other than `GET`/`HEAD` that reaches a
//! daemon which does not lead is forwarded, as it came (method, path and query, the
//! `Authorization` and `Content-Type` headers, the body), to the leader's API address from the
//! election, and the leader's answer is returned as is. Forwarding rather than a 307 keeps
//! every client working unchanged (the CLI, agents, `curl` without `-L`), whichever daemon it
//! reached. Reads are served locally from the shared store.
//!
//! A forwarded request carries `X-Seed-Forwarded`: one that arrives at a daemon that does not
//! lead either (the leadership moved meanwhile) is answered 503, never forwarded again, so no
//! request loops between daemons. No leader known (an election under way, no quorum): 503 with
//! the reason; clients retry.

use super::ApiError;
use axum::response::IntoResponse;
use http::{header, Method, StatusCode};
use netboot::http::{ApiRequest, ApiResponse};
use std::sync::Arc;
use std::time::Duration;

/// The header a forwarded request carries.
pub const FORWARDED: &str = "x-seed-forwarded";

/// Who leads, as the API needs it (the daemon's HA membership implements it).
pub trait Leadership: Send + Sync {
    /// Whether this daemon leads now.
    fn leads(&self) -> bool;
    /// The leader's API base URL (`http://HOST:PORT`), when known and not this daemon.
    fn leader_api(&self) -> Option<String>;
    /// Why this daemon cannot act now, when it knows (the store unavailable: no quorum, no
    /// member reachable): answered with the 503s below so that callers see the cause.
    fn why_not(&self) -> Option<String> {
        None
    }
}

/// Whether `req` is a write this daemon must hand to the leader (`/v1/ha/…` never: those
/// routes are about the daemon asked, a seed handing over most of all).
pub(super) fn must_forward(l: &dyn Leadership, method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD) && !path.starts_with("/v1/ha/") && !l.leads()
}

/// Forward `req` to the leader and return its answer.
pub(super) async fn to_leader(l: Arc<dyn Leadership>, req: ApiRequest) -> ApiResponse {
    let unavailable = |why: String| async move {
        super::collect(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response()).await
    };
    let why = l.why_not().map(|w| format!(" ({w})")).unwrap_or_default();
    if req.headers.contains_key(FORWARDED) {
        return unavailable(format!(
            "forwarded to a daemon that does not lead{why}: retry"
        ))
        .await;
    }
    let Some(base) = l.leader_api() else {
        let why = if why.is_empty() {
            " (election under way or no store quorum)".to_string()
        } else {
            why
        };
        return unavailable(format!("no leader now{why}: retry")).await;
    };
    let path = match &req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.clone(),
    };
    let method = req.method.clone();
    let url = format!("{}{path}", base.trim_end_matches('/'));
    tracing::debug!(%method, %url, "write forwarded to the leader");
    // ureq is blocking: on the blocking pool.
    let sent = tokio::task::spawn_blocking(move || send(&url, &req)).await;
    match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => unavailable(format!("the leader at {base} did not answer: {e}")).await,
        Err(e) => unavailable(format!("forwarding to the leader: {e}")).await,
    }
}

fn send(url: &str, req: &ApiRequest) -> Result<ApiResponse, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .new_agent();
    let mut b = http::Request::builder()
        .method(req.method.clone())
        .uri(url)
        .header(FORWARDED, "1");
    for h in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = req.headers.get(&h) {
            b = b.header(h, v.clone());
        }
    }
    let r = b
        .body(req.body.to_vec())
        .map_err(|e| ureq::Error::BadUri(e.to_string()))?;
    let mut resp = agent.run(r)?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = resp.body_mut().read_to_string()?;
    Ok(ApiResponse {
        status,
        content_type,
        body,
    })
}
