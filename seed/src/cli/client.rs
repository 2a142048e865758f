//! The CLI's one client of the daemon's API: a base URL (`127.0.0.1:6385` and
//! `http://127.0.0.1:6385/` alike), the operator's bearer token, blocking calls with a bounded
//! time, and answers read as the [`api`] crate's types. A refusal becomes an error carrying the
//! status and the daemon's own `error` text. [`Client::anonymous`] is the same client without a
//! token, for what the daemon serves to anyone who reaches it (`/metrics`).
//!
//! HTTPS (`[api] tls`, the daemon's default): the client trusts only the CA it is given
//! (`--ca FILE`, `SEED_CA`; `seed ca export` prints the seed's own), never the system's roots.
//! Given a CA, an address without a scheme (and the default) is `https://`; an `https://` URL
//! without one is refused with the way to get it.

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::http::{Response, StatusCode};

/// The operators' API address a daemon listens on by default.
pub const DEFAULT_API: &str = "127.0.0.1:6385";

/// How long one call may take (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(30);

/// `http://HOST:PORT` (`https://` when `tls`: a CA is pinned) from `HOST:PORT` or a URL,
/// without a trailing `/`.
pub fn normalize(api: &str, tls: bool) -> String {
    let a = api.trim().trim_end_matches('/');
    if a.contains("://") {
        a.to_string()
    } else {
        format!("{}://{a}", if tls { "https" } else { "http" })
    }
}

/// `--api` and `--token` of the commands that only talk to a running daemon (`seed stack`,
/// `seed token`): flattened into their arguments, global to their subcommands.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The daemon's API (`https://` by default with --ca, else `http://`).
    #[arg(long, env = "SEED_API", default_value = DEFAULT_API, global = true)]
    pub api: String,
    /// The CA certificate (PEM) the daemon's HTTPS must chain to (`seed ca export`).
    #[arg(long, env = "SEED_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
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
        Client::new(&self.api, Some(self.token.expose()), self.ca.as_deref())
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

/// How long a `--wait` keeps trying a control plane that does not answer (see
/// [`Client::get_patient`]): a leader's lease running out and another member taking the
/// floating address over fit well within it.
pub const FAILOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(90);

impl Client {
    /// A client of the API at `api` with the operator's `token` (required: the error says how
    /// to give it), trusting only the CA in the PEM file `ca` for HTTPS (required for an
    /// `https://` URL: the error says how to get it).
    pub fn new(api: &str, token: Option<&str>, ca: Option<&Path>) -> anyhow::Result<Client> {
        let base = normalize(api, ca.is_some());
        let token = token.filter(|t| !t.trim().is_empty()).with_context(|| {
            format!("the seed daemon's API at {base} needs its token: --token or SEED_TOKEN")
        })?;
        let roots = match ca {
            Some(f) => Some(read_ca(f)?),
            None if base.starts_with("https://") => bail!(
                "the seed daemon's API at {base} is HTTPS: give its CA certificate with --ca FILE \
                 or SEED_CA (on the seed's host, `seed ca export --config SEED.TOML > ca.pem`)"
            ),
            None => None,
        };
        Ok(Client {
            auth: Some(format!("Bearer {}", token.trim())),
            base,
            agent: agent(TIMEOUT, roots),
        })
    }

    /// A client of the API at `api` without a token, each call bounded by `timeout`: for the
    /// routes the daemon serves to anyone (`/metrics`), e.g. the appliance's status screen.
    pub fn anonymous(api: &str, timeout: Duration) -> Client {
        Client {
            base: normalize(api, false),
            auth: None,
            agent: agent(timeout, None),
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

    /// [`Client::get`] for a `--wait` that follows work across a failover: while the control
    /// plane's floating address moves to another member (or the seed hands over) nothing
    /// answers for a few seconds, so a GET that reaches nobody is tried again for up to
    /// [`FAILOVER_GRACE`] before it counts. Any answer, a refusal included, counts at once.
    pub fn get_patient<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send_patient(path)?;
        self.answer("GET", path, resp)
    }

    /// [`Client::get_opt`], patient as [`Client::get_patient`].
    pub fn get_opt_patient<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let resp = self.send_patient(path)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.answer("GET", path, resp).map(Some)
    }

    fn send_patient(&self, path: &str) -> anyhow::Result<Response<ureq::Body>> {
        let start = std::time::Instant::now();
        let mut said = false;
        loop {
            match self.send("GET", path, Body::None) {
                Ok(r) => return Ok(r),
                Err(e) if start.elapsed() < FAILOVER_GRACE => {
                    if !said {
                        eprintln!("{e:#}; trying again (a failover takes a few seconds)");
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
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
        sent.with_context(|| {
            if self.base.starts_with("http://") {
                // The likely cause when a daemon is there at all: it speaks HTTPS.
                format!(
                    "reaching the seed at {} (a daemon with `[api] tls`, the default, speaks \
                     HTTPS only: give its CA with --ca FILE or SEED_CA, from `seed ca export`)",
                    self.base
                )
            } else {
                format!("reaching the seed at {}", self.base)
            }
        })
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

/// The CA certificates of a PEM file (`seed ca export`'s output).
fn read_ca(path: &Path) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading the CA {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.with_context(|| format!("reading the CA {}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        bail!(
            "{} holds no PEM certificate (`seed ca export` prints the seed's CA)",
            path.display()
        );
    }
    Ok(certs)
}

/// The agent every client uses: `timeout` per call, refusals read, no proxy; HTTPS only to a
/// server whose certificate chains to `roots` (none: no HTTPS at all), with ring.
fn agent(timeout: Duration, roots: Option<Vec<ureq::tls::Certificate<'static>>>) -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let roots = RootCerts::Specific(Arc::new(roots.unwrap_or_default()));
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // Refusals are read (status and the daemon's reason), not bare errors.
        .http_status_as_error(false)
        // The daemon is on this host or the management network: never through a proxy.
        .proxy(None)
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(roots)
                .unversioned_rustls_crypto_provider(crate::daemon::api_tls::provider())
                .build(),
        )
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
/// `SEED_API`), else [`DEFAULT_API`] when a daemon answers there and no store was named
/// (`https://` when `tls`: a CA is given).
pub fn daemon_url(named: Option<&str>, store_given: bool, tls: bool) -> Option<String> {
    if let Some(a) = named {
        return Some(normalize(a, tls));
    }
    if store_given {
        return None;
    }
    let addr: std::net::SocketAddr = DEFAULT_API.parse().expect("valid default");
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .ok()
        .map(|_| normalize(DEFAULT_API, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(normalize("127.0.0.1:6385", false), "http://127.0.0.1:6385");
        assert_eq!(normalize("127.0.0.1:6385", true), "https://127.0.0.1:6385");
        assert_eq!(normalize("http://h:1/", true), "http://h:1");
        assert_eq!(normalize("https://h/x//", false), "https://h/x");
    }

    #[test]
    fn a_token_is_required() {
        for t in [None, Some(""), Some("  ")] {
            let e = Client::new("h:1", t, None).err().unwrap();
            assert!(e.to_string().contains("SEED_TOKEN"), "{e}");
            assert!(e.to_string().contains("http://h:1"), "{e}");
        }
        assert_eq!(
            Client::new("h:1/", Some("t"), None).unwrap().base(),
            "http://h:1"
        );
    }

    #[test]
    fn https_needs_a_ca_that_holds_a_certificate() {
        let e = Client::new("https://h:1", Some("t"), None).err().unwrap();
        assert!(e.to_string().contains("--ca"), "{e}");
        assert!(e.to_string().contains("seed ca export"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let bad = t.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let e = Client::new("h:1", Some("t"), Some(&bad)).err().unwrap();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let names = ["localhost".to_string()];
        let made = crate::daemon::api_tls::ensure(t.path(), &names).unwrap();
        let c = Client::new("h:1", Some("t"), Some(&made.ca)).unwrap();
        assert_eq!(c.base(), "https://h:1");
    }

    #[test]
    fn a_named_store_wins_over_probing() {
        assert_eq!(daemon_url(None, true, false), None);
        assert_eq!(
            daemon_url(Some("http://h:1/"), true, false).as_deref(),
            Some("http://h:1")
        );
    }
}
