//! The `seed daemon` configuration file (TOML): the store, the API token, the ramdisk files,
//! lifecycle options and a nested `[netboot]` section of the same shape as `seed netboot`'s file.
//!
//! Paths in a file read with [`DaemonConfig::load`] that are relative resolve against the
//! directory of that file (so an unpacked bundle's `etc/seed.toml` works wherever the bundle
//! is); [`DaemonConfig::from_toml`] leaves them as written.

use crate::store::config::{RawStore, StoreConfig};
use netboot::config::NetbootConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A validated daemon configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The store: a redb file (`store = "FILE"`), or etcd shared with other daemons (`[store]`,
    /// see [`crate::store::config`]).
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub agent: AgentConfig,
    pub ramdisk: RamdiskConfig,
    pub lifecycle: LifecycleConfig,
    pub images: ImagesConfig,
    pub netboot: NetbootConfig,
}

/// The image store deploys come from (`[images]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// The store directory; it must be inside the HTTP root (the agents stream the images from
    /// the HTTP server, which serves nothing outside its root). Default `<http root>/images`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl DaemonConfig {
    /// The image store directory and its URL path under the HTTP root (`images`).
    pub fn images_dir(&self) -> Result<(PathBuf, String), DaemonConfigError> {
        let root = &self
            .netboot
            .http
            .as_ref()
            .ok_or_else(|| DaemonConfigError::Invalid("[netboot.http] is required".into()))?
            .root;
        let dir = match &self.images.dir {
            None => root.join("images"),
            Some(d) if d.is_relative() => root.join(d),
            Some(d) => d.clone(),
        };
        let outside = || {
            DaemonConfigError::Invalid(format!(
                "[images] dir {} must be a directory inside the HTTP root {}",
                dir.display(),
                root.display()
            ))
        };
        let rel = dir.strip_prefix(root).map_err(|_| outside())?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                std::path::Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        if parts.is_empty() {
            return Err(outside());
        }
        Ok((dir, parts.join("/")))
    }
}

/// The shortest `[api] token` the daemon starts with.
pub const MIN_TOKEN_LEN: usize = 12;

/// Tokens from samples, documentation and habit: refused whatever their length.
const SAMPLE_TOKENS: [&str; 10] = [
    "change-me",
    "changeme",
    "change_me",
    "secret",
    "password",
    "token",
    "admin",
    "seed",
    "test",
    "replace-me",
];

/// Why `[api] token` is too weak to start with, if it is: a sample token, shorter than
/// [`MIN_TOKEN_LEN`], one repeated character, or with spaces or control characters.
pub fn weak_token(token: &str) -> Option<String> {
    let lower = token.to_ascii_lowercase();
    if SAMPLE_TOKENS.contains(&lower.as_str()) || lower.contains("change-me") {
        return Some("is a sample token: set your own (e.g. `openssl rand -hex 32`)".into());
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        return Some(format!(
            "is shorter than {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("holds spaces or control characters".into());
    }
    let mut chars = token.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Some("is one character repeated".into());
    }
    None
}

/// The REST API (`/v1/nodes…`). The agent endpoints (`/v1/agent/…`) take the node's per-boot
/// agent token instead ([`super::agent_token`]). Its `Debug` hides the token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Requests must carry `Authorization: Bearer <token>`.
    pub token: crate::secret::Secret,
    /// Also serve the API on this address with kernel sockets (e.g. `127.0.0.1:6385`), for
    /// operators and the CLI off the provisioning network.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Also answer the REST API (operator routes) on the provisioning network's HTTP port,
    /// where every machine being deployed can reach it. Default: only when there is no
    /// `listen` (then it is the only way in).
    #[serde(default)]
    pub provisioning: Option<bool>,
    /// HTTPS on `listen`: `"auto"` (the default: a CA and server certificate the seed makes in
    /// its state directory, [`crate::daemon::api_tls`]) or `"off"` (plain HTTP). With
    /// `tls_cert` + `tls_key`, the operator's own certificate instead.
    #[serde(default)]
    pub tls: Option<TlsMode>,
    /// The operator's certificate chain (PEM) for `listen`, with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The operator's private key (PEM) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// More names (DNS names or IPs) the auto server certificate is for, beside `localhost`,
    /// 127.0.0.1 and the listen address's IP.
    #[serde(default)]
    pub tls_names: Vec<String>,
}

/// `[api] tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Auto,
    Off,
}

/// How the operators' listener serves, from `[api] tls*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    /// Plain HTTP.
    Off,
    /// The seed's own CA and server certificate, for these extra names.
    Auto { names: Vec<String> },
    /// The operator's certificate chain and key.
    Files { cert: PathBuf, key: PathBuf },
}

impl ApiConfig {
    /// How `listen` serves.
    pub fn tls(&self) -> ApiTls {
        match (self.tls, &self.tls_cert, &self.tls_key) {
            (Some(TlsMode::Off), _, _) => ApiTls::Off,
            (_, Some(cert), Some(key)) => ApiTls::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => ApiTls::Auto {
                names: self.tls_names.clone(),
            },
        }
    }

    fn check_tls(&self, ha: bool) -> Result<(), DaemonConfigError> {
        let bad = |m: &str| Err(DaemonConfigError::Invalid(format!("[api] {m}")));
        match (self.tls, self.tls_cert.is_some(), self.tls_key.is_some()) {
            (_, true, false) | (_, false, true) => {
                return bad("tls_cert and tls_key go together");
            }
            (Some(TlsMode::Off), true, true) => {
                return bad("tls = \"off\" with tls_cert: choose one");
            }
            (Some(TlsMode::Auto), true, true) => {
                return bad("tls = \"auto\" makes its own certificate: drop tls_cert/tls_key");
            }
            _ => {}
        }
        // Each daemon would make its own CA, and followers forward writes to the leader's
        // advertised URL with a client that pins none: not yet.
        if ha && self.listen.is_some() && self.tls != Some(TlsMode::Off) {
            return bad(
                "tls: with an etcd store (HA) set tls = \"off\" for now: HTTPS between the \
                 daemons (one CA for all, forwarded writes) is not there yet",
            );
        }
        Ok(())
    }

    /// Whether the provisioning network's HTTP port answers operator routes.
    pub fn on_provisioning(&self) -> bool {
        self.provisioning.unwrap_or(self.listen.is_none())
    }
}

/// What the agent is told, and how it reaches the seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// The agents' HTTPS (the ramdisk's agent, the deployed node's first boot and config
    /// agent): `"auto"` (the default, one daemon) serves `/v1/` and the files on `https_port`
    /// too, with a certificate for `server_ip` from the seed's own CA, and points the agents
    /// there with the CA's fingerprint; `"off"` (the default with an etcd store, where each
    /// daemon would have its own CA): plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsMode>,
    /// The HTTPS port on the provisioning network.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
}

fn default_heartbeat() -> u64 {
    10
}

fn default_https_port() -> u16 {
    8443
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            heartbeat_secs: default_heartbeat(),
            tls: None,
            https_port: default_https_port(),
        }
    }
}

impl AgentConfig {
    /// Whether the agents speak HTTPS: as set, else unless `ha`.
    pub fn tls_on(&self, ha: bool) -> bool {
        match self.tls {
            Some(m) => m == TlsMode::Auto,
            None => !ha,
        }
    }

    fn check(&self, ha: bool, http_port: u16) -> Result<(), DaemonConfigError> {
        let bad = |m: String| Err(DaemonConfigError::Invalid(format!("[agent] {m}")));
        if self.heartbeat_secs == 0 {
            return bad("heartbeat_secs must be at least 1".into());
        }
        if ha && self.tls == Some(TlsMode::Auto) {
            return bad(
                "tls = \"auto\" with an etcd store (HA): each daemon would pin its own \
                 CA and a node could not follow a failover; set tls = \"off\" for now"
                    .into(),
            );
        }
        if self.tls_on(ha) && self.https_port == http_port {
            return bad(format!(
                "https_port {} is [netboot.http] port too: choose another",
                self.https_port
            ));
        }
        Ok(())
    }
}

/// The deploy ramdisk, installed under `<http root>/ramdisk/` at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RamdiskConfig {
    #[serde(default = "default_kernel")]
    pub kernel: PathBuf,
    #[serde(default = "default_initrd")]
    pub initrd: PathBuf,
}

fn default_kernel() -> PathBuf {
    "target/ramdisk/vmlinuz".into()
}

fn default_initrd() -> PathBuf {
    "target/ramdisk/initramfs.zst".into()
}

impl Default for RamdiskConfig {
    fn default() -> Self {
        RamdiskConfig {
            kernel: default_kernel(),
            initrd: default_initrd(),
        }
    }
}

/// Lifecycle options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// After a successful inspection, move the node on to `available` (`provide`).
    #[serde(default = "yes")]
    pub provide_after_inspect: bool,
    /// Seconds an inspection may take before it fails.
    #[serde(default = "default_inspect_timeout")]
    pub inspect_timeout_secs: u64,
    /// Seconds each half of a deploy may take (ramdisk boot + image write; then the reboot
    /// until the image says "booted") before it fails.
    #[serde(default = "default_deploy_timeout")]
    pub deploy_timeout_secs: u64,
    /// The PXE boot watchdog: seconds a node powered into PXE by inspect, deploy or clean may
    /// take to fetch its iPXE script (or call the agent API) before it is power-cycled again;
    /// 0 turns the watchdog off (only the step's timeout applies).
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_secs: u64,
    /// Watchdog power-cycles before the step fails ("no PXE boot reached the seed within …").
    #[serde(default = "default_boot_retries_max")]
    pub boot_retries_max: u32,
}

fn default_boot_timeout() -> u64 {
    180
}

fn default_boot_retries_max() -> u32 {
    2
}

fn default_deploy_timeout() -> u64 {
    30 * 60
}

fn yes() -> bool {
    true
}

fn default_inspect_timeout() -> u64 {
    15 * 60
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            provide_after_inspect: true,
            inspect_timeout_secs: default_inspect_timeout(),
            deploy_timeout_secs: default_deploy_timeout(),
            boot_timeout_secs: default_boot_timeout(),
            boot_retries_max: default_boot_retries_max(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    store: RawStore,
    api: ApiConfig,
    #[serde(default)]
    agent: AgentConfig,
    #[serde(default)]
    ramdisk: RamdiskConfig,
    #[serde(default)]
    lifecycle: LifecycleConfig,
    #[serde(default)]
    images: ImagesConfig,
    netboot: toml::Table,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DaemonConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML")]
    Parse(#[from] toml::de::Error),
    #[error("[netboot] section")]
    Netboot(#[source] netboot::config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl DaemonConfig {
    /// Parse and validate from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DaemonConfigError> {
        let raw: Raw = toml::from_str(text)?;
        // Re-serialised so the netboot crate's own validation (reservations, services) runs.
        let nb_text = toml::to_string(&raw.netboot)
            .map_err(|e| DaemonConfigError::Invalid(format!("[netboot]: {e}")))?;
        let netboot = NetbootConfig::from_toml(&nb_text).map_err(DaemonConfigError::Netboot)?;
        if netboot.http.is_none() {
            return Err(DaemonConfigError::Invalid(
                "[netboot.http] is required: the agent API and the ramdisk are served over HTTP"
                    .into(),
            ));
        }
        if raw.api.token.expose().trim().is_empty() {
            return Err(DaemonConfigError::Invalid("[api] token is empty".into()));
        }
        let store = StoreConfig::try_from(raw.store)
            .map_err(|e| DaemonConfigError::Invalid(e.to_string()))?;
        let ha = matches!(store, StoreConfig::Etcd { .. });
        raw.api.check_tls(ha)?;
        let http_port = netboot.http.as_ref().map_or(0, |h| h.port);
        raw.agent.check(ha, http_port)?;
        let cfg = DaemonConfig {
            store,
            api: raw.api,
            agent: raw.agent,
            ramdisk: raw.ramdisk,
            lifecycle: raw.lifecycle,
            images: raw.images,
            netboot,
        };
        cfg.images_dir()?;
        Ok(cfg)
    }

    /// Read, parse and validate a file; its relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, DaemonConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DaemonConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        cfg.resolve_relative(&dir);
        Ok(cfg)
    }

    /// Make every relative path absolute against `base` (the config file's directory): the
    /// store, the ramdisk files, the netboot state directory and the HTTP and TFTP roots.
    /// `[images] dir` stays relative: it is relative to the HTTP root, which this resolves.
    pub fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.store.resolve_paths(base);
        fix(&mut self.ramdisk.kernel);
        fix(&mut self.ramdisk.initrd);
        for p in [&mut self.api.tls_cert, &mut self.api.tls_key]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        fix(&mut self.netboot.state_dir);
        if let Some(h) = self.netboot.http.as_mut() {
            fix(&mut h.root);
        }
        if let Some(t) = self.netboot.tftp.as_mut() {
            fix(&mut t.root);
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
