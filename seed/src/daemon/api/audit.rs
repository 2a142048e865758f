//! The audit trail: one `tracing` event with target `audit` for every state-changing request
//! (any method but GET and HEAD) the API answers, on every listener: who (the credential's
//! kind, never the credential; the node for agent and node calls when the body names it), from
//! where, what (method and path), and the result (the status code). Refused requests are
//! logged too: a burst of 401s is what an audit is for.
//!
//! Filter them with `RUST_LOG=audit=info` or route the `audit` target to its own sink.

use super::{auth, AppState};
use http::{Method, StatusCode};
use netboot::http::ApiRequest;
use tracing::info;

/// One request, before it is answered.
pub(super) struct Entry {
    who: &'static str,
    method: Method,
    path: String,
    peer: std::net::SocketAddr,
}

impl Entry {
    /// The entry for `req`, or `None` when it changes nothing (GET, HEAD).
    pub(super) fn of(s: &AppState, req: &ApiRequest) -> Option<Entry> {
        if matches!(req.method, Method::GET | Method::HEAD) {
            return None;
        }
        let path = req.path.trim_end_matches('/');
        let who = if path.starts_with("/v1/agent/") {
            "agent"
        } else if path.starts_with("/v1/node/") {
            "node"
        } else if auth::operator_ok(s, &req.headers) {
            "operator"
        } else {
            "anonymous"
        };
        Some(Entry {
            who,
            method: req.method.clone(),
            path: path.to_string(),
            peer: req.peer,
        })
    }

    /// Log it with the answer's status.
    pub(super) fn log(self, status: StatusCode) {
        let result = if status.is_success() {
            "ok"
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            "refused"
        } else {
            "failed"
        };
        info!(
            target: "audit",
            who = self.who,
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            result,
            "audit"
        );
    }
}
