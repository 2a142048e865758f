//! The CLI's one client of the daemon's API: a base URL (`127.0.0.1:6385` and
//! `http://127.0.0.1:6385/` alike), the operator's bearer token, blocking calls with a bounded
//! time, and answers read as the [`api`] crate's types. A refusal becomes an error carrying the
//! status and the daemon's own `error` text. [`Client::anonymous`] is the same client without a
//! token, for what the daemon serves to anyone who reaches it (`/metrics`).

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use ureq::http::{Response, StatusCode};

/// The operators' API address a daemon listens on by default.
pub const DEFAULT_API: &str = "127.0.0.1:6385";

/// How long one call may take (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(30);

/// `http://HOST:PORT` from `HOST:PORT` or a URL, without a trailing `/`.
pub fn normalize(api: &str) -> String {
    let a = api.trim().trim_end_matches('/');
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// `--api` and `--token` of the commands that only talk to a running daemon (`seed stack`,
/// `seed token`): flattened into their arguments, global to their subcommands.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The daemon's API.
    #[arg(
        long,
        env = "SEED_API",
        default_value = "http://127.0.0.1:6385",
        global = true
    )]
    pub api: String,
    /// The API's bearer token.
    #[arg(
        long,
        env = "SEED_TOKEN",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    pub token: api::Secret,
}

impl ClientArgs {
    /// A client of the daemon these arguments name ([`Client::new`]).
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.api, Some(self.token.expose()))
    }
}

/// A client of one daemon's API.
pub struct Client {
    base: String,
    /// `Bearer <token>` (secret: no `Debug` for this type); `None`: [`Client::anonymous`].
    auth: Option<String>,
    agent: ureq::Agent,
}

/// What a request carries.
enum Body<'a> {
    None,
    Json(Vec<u8>),
    Text {
        content_type: &'a str,
        text: &'a str,
    },
}

impl Client {
    /// A client of the API at `api` with the operator's `token` (required: the error says how
    /// to give it).
    pub fn new(api: &str, token: Option<&str>) -> anyhow::Result<Client> {
        let base = normalize(api);
        let token = token.filter(|t| !t.trim().is_empty()).with_context(|| {
            format!("the seed daemon's API at {base} needs its token: --token or SEED_TOKEN")
        })?;
        Ok(Client {
            auth: Some(format!("Bearer {}", token.trim())),
            base,
            agent: agent(TIMEOUT),
        })
    }

    /// A client of the API at `api` without a token, each call bounded by `timeout`: for the
    /// routes the daemon serves to anyone (`/metrics`), e.g. the appliance's status screen.
    pub fn anonymous(api: &str, timeout: Duration) -> Client {
        Client {
            base: normalize(api),
            auth: None,
            agent: agent(timeout),
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, Body::None)
    }

    /// `GET path` as `T`; `None` when the daemon answers 404.
    pub fn get_opt<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let resp = self.send("GET", path, Body::None)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.answer("GET", path, resp).map(Some)
    }

    /// `GET path` as text (`/metrics`: Prometheus text, not JSON).
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let mut resp = self.send("GET", path, Body::None)?;
        let status = resp.status();
        if !status.is_success() {
            bail!("the seed answered {} to GET {path}", status.as_u16());
        }
        resp.body_mut()
            .read_to_string()
            .with_context(|| format!("the seed's answer to GET {path}"))
    }

    /// `POST path` with `body` as JSON.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.call("POST", path, json(body)?)
    }

    /// `POST path` without a body.
    pub fn post_empty<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("POST", path, Body::None)
    }

    /// `POST path` with `text` as it is, of `content_type`.
    pub fn post_text<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        text: &str,
    ) -> anyhow::Result<T> {
        self.call("POST", path, Body::Text { content_type, text })
    }

    /// `PUT path` with `body` as JSON.
    pub fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        self.call("PUT", path, json(body)?)
    }

    /// `DELETE path`.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call("DELETE", path, Body::None)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> anyhow::Result<T> {
        let resp = self.send(method, path, body)?;
        self.answer(method, path, resp)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> anyhow::Result<Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth.as_deref();
        let sent = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), auth).call(),
            (m, body) => {
                let r = with_auth(
                    match m {
                        "PUT" => self.agent.put(&url),
                        _ => self.agent.post(&url),
                    },
                    auth,
                );
                match body {
                    Body::None => r.send_empty(),
                    Body::Json(b) => r.content_type("application/json").send(&b[..]),
                    Body::Text { content_type, text } => r.content_type(content_type).send(text),
                }
            }
        };
        sent.with_context(|| format!("reaching the seed at {}", self.base))
    }

    /// The answer as `T`, or the refusal as an error: `the seed answered 404 to GET …: why`.
    fn answer<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        mut resp: Response<ureq::Body>,
    ) -> anyhow::Result<T> {
        let status = resp.status();
        if !status.is_success() {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let reason = serde_json::from_str::<api::ErrorBody>(&text).map_or(text, |b| b.error);
            bail!(
                "the seed answered {} to {method} {path}: {}",
                status.as_u16(),
                reason.trim()
            );
        }
        resp.body_mut()
            .read_json()
            .with_context(|| format!("the seed's answer to {method} {path}"))
    }
}

/// The agent every client uses: `timeout` per call, refusals read, no proxy.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // Refusals are read (status and the daemon's reason), not bare errors.
        .http_status_as_error(false)
        // The daemon is on this host or the management network: never through a proxy.
        .proxy(None)
        .build()
        .new_agent()
}

fn with_auth<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

fn json(body: &impl Serialize) -> anyhow::Result<Body<'static>> {
    Ok(Body::Json(
        serde_json::to_vec(body).context("encoding the request")?,
    ))
}

/// The API to use when a command may read a store instead: the one named (`--api`,
/// `SEED_API`), else [`DEFAULT_API`] when a daemon answers there and no store was named.
pub fn daemon_url(named: Option<&str>, store_given: bool) -> Option<String> {
    if let Some(a) = named {
        return Some(normalize(a));
    }
    if store_given {
        return None;
    }
    let addr: std::net::SocketAddr = DEFAULT_API.parse().expect("valid default");
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .ok()
        .map(|_| format!("http://{DEFAULT_API}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(normalize("127.0.0.1:6385"), "http://127.0.0.1:6385");
        assert_eq!(normalize("http://h:1/"), "http://h:1");
        assert_eq!(normalize("https://h/x//"), "https://h/x");
    }

    #[test]
    fn a_token_is_required() {
        for t in [None, Some(""), Some("  ")] {
            let e = Client::new("h:1", t).err().unwrap();
            assert!(e.to_string().contains("SEED_TOKEN"), "{e}");
            assert!(e.to_string().contains("http://h:1"), "{e}");
        }
        assert_eq!(Client::new("h:1/", Some("t")).unwrap().base(), "http://h:1");
    }

    #[test]
    fn a_named_store_wins_over_probing() {
        assert_eq!(daemon_url(None, true), None);
        assert_eq!(
            daemon_url(Some("http://h:1/"), true).as_deref(),
            Some("http://h:1")
        );
    }
}
