//! The audit trail: one `tracing` event with target `audit` for every state-changing request
//! (any method but GET and HEAD) the API answers, on every listener: who (the credential's
//! kind, never the credential: `agent`, `node`, `anonymous`, or the API token's name with its
//! role, e.g. `ci` and `operator`, the config file's token being `config`), from where, what
//! (method and path), and the result (the status code). Refused requests are
//! logged too: a burst of 401s is what an audit is for.
//!
//! Filter them with `RUST_LOG=audit=info` or route the `audit` target to its own sink.

use super::auth::Authn;
use http::{Method, StatusCode};
use netboot::http::ApiRequest;
use tracing::info;

/// One request, before it is answered.
pub(super) struct Entry {
    who: String,
    role: &'static str,
    method: Method,
    path: String,
    peer: std::net::SocketAddr,
}

impl Entry {
    /// The entry for `req`, or `None` when it changes nothing (GET, HEAD).
    pub(super) fn of(req: &ApiRequest, authn: Option<&Authn>) -> Option<Entry> {
        if matches!(req.method, Method::GET | Method::HEAD) {
            return None;
        }
        let path = req.path.trim_end_matches('/');
        let (who, role) = if path.starts_with("/v1/agent/") {
            ("agent".to_string(), "")
        } else if path.starts_with("/v1/node/") {
            ("node".to_string(), "")
        } else {
            match authn.and_then(Authn::caller) {
                Some(c) => (c.name.clone(), c.role.as_str()),
                None => ("anonymous".to_string(), ""),
            }
        };
        Some(Entry {
            who,
            role,
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
            who = self.who.as_str(),
            role = self.role,
            peer = %self.peer,
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            result,
            "audit"
        );
    }
}
