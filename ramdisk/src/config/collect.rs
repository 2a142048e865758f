//! Collect: fetch this node's metadata from the seed's metadata service, keep it in a cache on
//! the state partition, and run refresh when it changed; then tell the seed how each deployment
//! went (os-collect-config's job, with the seed as the only source).
//!
//! - The node knows who it is from the [`Identity`] the deploy wrote
//!   (`/var/lib/seed/identity.json`): its name, the seed's URL and its own credential.
//! - [`Collector::collect`] long-polls `GET /v1/node/metadata?since=N&wait=S` with bounded
//!   retries and backoff; a new document is written atomically to `<cache>/seed.json` (listed in
//!   `<cache>/os_config_files.json`) and its counter to `<cache>/state.json`. If the seed cannot
//!   be reached the cached document is used, so a node whose seed is gone still boots with its
//!   last configuration.
//! - [`Collector::pass`] runs refresh only when the counter differs from the last one applied,
//!   and signals every deployment in the metadata's `deployments` list (each with a `name`):
//!   complete with `deploy_stdout`/`deploy_stderr`/`deploy_status_code`, or failed with the
//!   failing script's output as the reason.
//!
//! The metadata holds secrets: nothing here logs the data or the credential.

use crate::config::metadata::{self, MetadataError};
use crate::config::refresh::{RefreshError, Step};
pub use images::manifest::Identity;
use images::manifest::{IDENTITY_FILE, STATE_MOUNT};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the list of cached files in the cache directory.
pub const OS_CONFIG_FILES: &str = "os_config_files.json";

/// Why the cache could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct CacheError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let err = |source| CacheError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    // 0600: the metadata may hold secrets (passwords a template generated).
    let mut f = fsutil::AtomicFile::with_mode(path, 0o600).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.commit().map_err(err)
}

/// Store each source's metadata as `<cache>/<name>.json` (in the order given: later sources
/// win the merge) and write `<cache>/os_config_files.json` listing them. Returns the list's
/// path.
pub fn store(cache: &Path, sources: &[(&str, Value)]) -> Result<PathBuf, CacheError> {
    let mut files = Vec::new();
    for (name, value) in sources {
        let path = cache.join(format!("{name}.json"));
        let bytes = serde_json::to_vec_pretty(value).expect("a JSON value serialises");
        write_atomic(&path, &bytes)?;
        files.push(Value::String(path.display().to_string()));
    }
    let list = cache.join(OS_CONFIG_FILES);
    write_atomic(
        &list,
        &serde_json::to_vec(&Value::Array(files)).expect("serialises"),
    )?;
    Ok(list)
}

/// The merged metadata of everything listed in `<cache>/os_config_files.json`.
pub fn collect(cache: &Path) -> Result<Value, MetadataError> {
    let files = metadata::load_list_from_json(&cache.join(OS_CONFIG_FILES))?;
    metadata::collect(&files)
}

/// The source name of the seed's document in the cache (`<cache>/seed.json`).
pub const SEED_SOURCE: &str = "seed";
/// The cache's bookkeeping file: the cached counter and the last one applied.
pub const STATE_FILE: &str = "state.json";

/// Where the deploy writes the identity.
pub fn default_identity() -> PathBuf {
    Path::new(STATE_MOUNT).join(IDENTITY_FILE)
}

/// The metadata cache on the state partition.
pub fn default_cache() -> PathBuf {
    Path::new(STATE_MOUNT).join("metadata")
}

/// Why collecting or signalling failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("reading the identity {}", path.display())]
    Identity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the identity {} is not valid", path.display())]
    IdentityJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The seed could not be reached (or timed out).
    #[error("reaching {url}")]
    Transport {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The seed refused or failed the request.
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("reading the answer of {url}")]
    Body {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The seed's HTTPS: its CA could not be had (or the identity's pin is bad).
    #[error("the seed's HTTPS")]
    Tls(#[source] crate::tls::TlsError),
    /// The identity names an `https://` seed without a usable CA pin.
    #[error("the identity's seed_ca: {0}")]
    Pin(String),
    #[error("the cache")]
    Cache(#[from] CacheError),
    #[error("reading the cached metadata")]
    CacheRead(#[source] MetadataError),
    /// Nothing fetched and nothing cached.
    #[error("no metadata: the seed did not answer and nothing is cached")]
    NoMetadata(#[source] Box<CollectError>),
}

impl CollectError {
    /// Worth another try: the network or the seed's own failure (not a refusal).
    fn transient(&self) -> bool {
        match self {
            CollectError::Transport { .. } | CollectError::Body { .. } => true,
            CollectError::Tls(crate::tls::TlsError::Connect { .. }) => true,
            CollectError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Read the identity file the deploy wrote.
pub fn read_identity(path: &Path) -> Result<Identity, CollectError> {
    let text = std::fs::read(path).map_err(|source| CollectError::Identity {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| CollectError::IdentityJson {
        path: path.into(),
        source,
    })
}

/// The document the seed serves, and the signal this node posts back: the API's own types.
pub use crate::config::deployments::{deployment_names, signals_for, sources};
pub use api::metadata::{Metadata as Document, Signal, SignalStatus};

/// The cache's bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheState {
    /// The counter of `<cache>/seed.json`.
    pub counter: u64,
    /// The counter of the last successful refresh, if any.
    #[serde(default)]
    pub applied: Option<u64>,
}

/// Where a pass's metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The seed (a new document or a confirmation that the cache is current).
    Seed,
    /// The cache, because the seed did not answer.
    Cache,
}

/// The metadata a collect found.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub counter: u64,
    pub data: Value,
    pub origin: Origin,
}

/// What one [`Collector::pass`] did.
#[derive(Debug)]
pub struct Pass {
    pub counter: u64,
    pub origin: Origin,
    /// Refresh ran (the counter differed from the last applied one, or forced).
    pub refreshed: bool,
    /// Refresh ran and failed.
    pub failed: bool,
    /// The signals sent (or attempted: a failure to deliver is logged, not fatal).
    pub signals: Vec<Signal>,
}

/// Fetches, caches and signals for one node.
pub struct Collector {
    identity: Identity,
    cache: PathBuf,
    http: Result<crate::tls::SeedClient, String>,
    retries: u32,
    backoff: Duration,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credential here.
        f.debug_struct("Collector")
            .field("node", &self.identity.node)
            .field("seed_url", &self.identity.seed_url)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// What [`Collector::pass`] runs to refresh: given the metadata files, run the phases (the
/// real [`refresh`](crate::config::refresh::refresh), or a stand-in in tests).
pub type RefreshFn<'a> = dyn FnMut(&[PathBuf]) -> Result<Vec<Step>, RefreshError> + 'a;

/// The longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Collector {
    /// A collector for `identity` caching in `cache`; 3 retries, first after 1 s, doubling.
    pub fn new(identity: Identity, cache: impl Into<PathBuf>) -> Self {
        let http =
            crate::tls::SeedClient::new(&identity.seed_url, identity.seed_ca.as_deref(), || {
                ureq::Agent::config_builder()
                    .timeout_connect(Some(Duration::from_secs(5)))
                    // Refusals are read (status and body) rather than turned into bare errors.
                    .http_status_as_error(false)
                    // The seed is on the provisioning network: never through a proxy.
                    .proxy(None)
            })
            .map_err(|e| e.describe());
        Collector {
            identity,
            cache: cache.into(),
            http,
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }

    /// Retry transient failures `retries` times, waiting `backoff`, then twice that … (≤ 30 s).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn cache(&self) -> &Path {
        &self.cache
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.identity.seed_url.trim_end_matches('/'))
    }

    /// The HTTP agent (over HTTPS: once the seed's CA is had by its pin).
    fn http(&self) -> Result<&ureq::Agent, CollectError> {
        match &self.http {
            Ok(c) => c.http().map_err(CollectError::Tls),
            Err(e) => Err(CollectError::Pin(e.clone())),
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.identity.credential.expose().trim())
    }

    fn transport_error(url: &str, e: ureq::Error) -> CollectError {
        CollectError::Transport {
            url: url.to_string(),
            source: Box::new(e),
        }
    }

    /// A refusal (4xx/5xx) as [`CollectError::Status`] with the seed's answer.
    fn refused(url: &str, resp: &mut ureq::http::Response<ureq::Body>) -> Option<CollectError> {
        let status = resp.status().as_u16();
        (status >= 400).then(|| CollectError::Status {
            url: url.to_string(),
            status,
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        })
    }

    /// One request: the document if it differs from `since`, `None` on 304 (unchanged after
    /// waiting up to `wait_secs`).
    pub fn fetch(
        &self,
        since: Option<u64>,
        wait_secs: u64,
    ) -> Result<Option<Document>, CollectError> {
        let mut url = self.url("/v1/node/metadata");
        if let Some(n) = since {
            url.push_str(&format!("?since={n}&wait={wait_secs}"));
        }
        let mut resp = self
            .http()?
            .get(&url)
            .header("Authorization", &self.bearer())
            // The seed holds the request for up to `wait`; give it room to answer.
            .config()
            .timeout_global(Some(Duration::from_secs(wait_secs + 15)))
            .build()
            .call()
            .map_err(|e| Self::transport_error(&url, e))?;
        if let Some(e) = Self::refused(&url, &mut resp) {
            return Err(e);
        }
        if resp.status() == 304 {
            return Ok(None);
        }
        let doc: Document = resp
            .body_mut()
            .read_json()
            .map_err(|e| CollectError::Body {
                url,
                source: std::io::Error::other(e),
            })?;
        Ok(Some(doc))
    }

    fn with_retry<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> Result<T, CollectError>,
    ) -> Result<T, CollectError> {
        let mut pause = self.backoff;
        let mut attempt = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if e.transient() && attempt < self.retries => {
                    attempt += 1;
                    tracing::warn!(
                        "{what}: {}; retry {attempt}/{} in {pause:?}",
                        crate::config::error_chain(&e),
                        self.retries
                    );
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The cache's bookkeeping (default if none).
    pub fn state(&self) -> CacheState {
        std::fs::read(self.cache.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write_state(&self, st: CacheState) -> Result<(), CacheError> {
        write_atomic(
            &self.cache.join(STATE_FILE),
            &serde_json::to_vec(&st).expect("serialises"),
        )
    }

    fn seed_file(&self) -> PathBuf {
        self.cache.join(format!("{SEED_SOURCE}.json"))
    }

    /// The cached document, if any.
    pub fn cached(&self) -> Result<Option<Document>, CollectError> {
        let file = self.seed_file();
        if !file.exists() {
            return Ok(None);
        }
        let data = metadata::collect(&[file]).map_err(CollectError::CacheRead)?;
        Ok(Some(Document {
            counter: self.state().counter,
            data,
        }))
    }

    /// The metadata files refresh reads: the cached seed document, then each os-apply-config
    /// deployment's config (as listed in `<cache>/os_config_files.json` by [`sources`]).
    pub fn metadata_files(&self) -> Vec<PathBuf> {
        match metadata::load_list_from_json(&self.cache.join(OS_CONFIG_FILES)) {
            Ok(list) if !list.is_empty() => list,
            _ => vec![self.seed_file()],
        }
    }

    /// Fetch (long-polling up to `wait_secs` for a change from the cached counter), cache a new
    /// document, and fall back to the cache when the seed does not answer.
    pub fn collect(&self, wait_secs: u64) -> Result<Collected, CollectError> {
        let cached = self.cached()?;
        let since = cached.as_ref().map(|d| d.counter);
        match self.with_retry("fetching metadata", || self.fetch(since, wait_secs)) {
            Ok(Some(doc)) => {
                let sources = sources(&doc.data);
                let refs: Vec<(&str, Value)> = sources
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.clone()))
                    .collect();
                store(&self.cache, &refs)?;
                let mut st = self.state();
                st.counter = doc.counter;
                self.write_state(st)?;
                tracing::info!(node = %self.identity.node, counter = doc.counter, "metadata fetched");
                Ok(Collected {
                    counter: doc.counter,
                    data: doc.data,
                    origin: Origin::Seed,
                })
            }
            Ok(None) => match cached {
                Some(doc) => Ok(Collected {
                    counter: doc.counter,
                    data: doc.data,
                    origin: Origin::Seed,
                }),
                // A 304 to a request without `since`: the seed is confused, nothing to use.
                None => Err(CollectError::NoMetadata(Box::new(CollectError::Status {
                    url: self.url("/v1/node/metadata"),
                    status: 304,
                    body: "not modified, but nothing is cached".into(),
                }))),
            },
            Err(e) => match cached {
                Some(doc) => {
                    tracing::warn!(
                        node = %self.identity.node,
                        counter = doc.counter,
                        "{}; using the cached metadata",
                        crate::config::error_chain(&e)
                    );
                    Ok(Collected {
                        counter: doc.counter,
                        data: doc.data,
                        origin: Origin::Cache,
                    })
                }
                None => Err(CollectError::NoMetadata(Box::new(e))),
            },
        }
    }

    /// Report this node's boot of its image (`POST /v1/node/booted` with `body`, with the
    /// retries): the seed's answer (the state it now gives the node).
    pub fn booted(&self, body: &serde_json::Value) -> Result<api::node::Booted, CollectError> {
        let url = self.url("/v1/node/booted");
        self.with_retry("reporting booted", || {
            let mut resp = self
                .http()?
                .post(&url)
                .header("Authorization", &self.bearer())
                .config()
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .send_json(body)
                .map_err(|e| Self::transport_error(&url, e))?;
            if let Some(e) = Self::refused(&url, &mut resp) {
                return Err(e);
            }
            resp.body_mut()
                .read_json()
                .map_err(|e| Self::transport_error(&url, e))
        })
    }

    /// Post one signal (with the retries).
    pub fn signal(&self, sig: &Signal) -> Result<(), CollectError> {
        let url = self.url("/v1/node/signal");
        self.with_retry("signalling", || {
            let mut resp = self
                .http()?
                .post(&url)
                .header("Authorization", &self.bearer())
                .config()
                .timeout_global(Some(Duration::from_secs(15)))
                .build()
                .send_json(sig)
                .map_err(|e| Self::transport_error(&url, e))?;
            match Self::refused(&url, &mut resp) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    /// One round: collect; refresh when the counter differs from the last applied (or `force`);
    /// then signal each deployment. `refresh` gets the metadata files to apply.
    pub fn pass(
        &self,
        wait_secs: u64,
        force: bool,
        refresh: &mut RefreshFn<'_>,
    ) -> Result<Pass, CollectError> {
        let got = self.collect(wait_secs)?;
        let mut st = self.state();
        let mut pass = Pass {
            counter: got.counter,
            origin: got.origin,
            refreshed: false,
            failed: false,
            signals: Vec::new(),
        };
        if got.counter == 0 && !force {
            // Nothing is published for this node yet (it booted before its stack's deployments
            // reached it, or it is in no stack). That is not an empty configuration: rendering
            // it would blank the node's files. Wait for the first publish.
            tracing::debug!("no metadata published yet; no refresh");
            return Ok(pass);
        }
        if st.applied == Some(got.counter) && !force {
            tracing::debug!(counter = got.counter, "metadata unchanged; no refresh");
            return Ok(pass);
        }
        tracing::info!(node = %self.identity.node, counter = got.counter, "refreshing");
        let result = refresh(&self.metadata_files());
        pass.refreshed = true;
        pass.failed = result.is_err();
        if result.is_ok() {
            st.applied = Some(got.counter);
            self.write_state(st)?;
        }
        pass.signals = signals_for(&got.data, got.counter, &result);
        for sig in &pass.signals {
            match self.signal(sig) {
                Ok(()) => {
                    tracing::info!(deployment = %sig.deployment, status = ?sig.status, "signalled")
                }
                Err(e) => tracing::warn!(
                    deployment = %sig.deployment,
                    "signal not delivered: {}",
                    crate::config::error_chain(&e)
                ),
            }
        }
        Ok(pass)
    }
}

#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;
