//! `seed node`: enroll machines from an instackenv file, list and show them, delete them, and
//! put them in or out of maintenance (these open the embedded store directly); inspect, deploy
//! and undeploy them through the running daemon's REST API. `list`, `show` and `import` go
//! through the API too when one is named (`--api`, `SEED_API`) or answers on 127.0.0.1:6385
//! (and no `--store` was given), since a running daemon holds the store file.

use crate::inventory::{self, Format, Node};
use crate::lifecycle::{self, Event, Timeouts};
use crate::store::{nodes, redb::RedbStore, Store};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Enroll, list, show, delete machines and set maintenance.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store file [default: ${XDG_STATE_HOME:-$HOME/.local/state}/seed/seed.redb].
    #[arg(long, env = "SEED_STORE", global = true, value_name = "PATH")]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Enroll the nodes of an instackenv file (YAML, or JSON if it ends in .json). All of them
    /// or, if any entry is wrong or a name or MAC is taken, none.
    Import {
        /// The file: `nodes: [{name, mac: [..], pm_type: ipmi, pm_addr, pm_port, pm_user,
        /// pm_password, capabilities: "profile:control", cpu, memory, disk, arch}]`.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask the running daemon to inspect a node (PXE-boot the ramdisk, collect its facts),
    /// through its API; `--wait` follows it to the end.
    Inspect {
        /// The node's name.
        name: String,
        /// The daemon's API.
        #[arg(long, env = "SEED_API", default_value = "http://127.0.0.1:6385")]
        api: String,
        /// The API's bearer token.
        #[arg(long, env = "SEED_TOKEN", hide_env_values = true)]
        token: String,
        /// Wait (at most this many seconds) until the node is inspected or failed.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "600")]
        wait: Option<u64>,
    },
    /// Ask the running daemon to deploy an image to a node (inspected and available, or after
    /// a failed deploy), through its API; `--wait` follows it to active with a progress bar.
    Deploy {
        /// The node's name.
        name: String,
        /// The image's name in the seed's image store.
        #[arg(long)]
        image: String,
        /// Which disk: `size>=N` (GiB), `serial=…`, `model=…`, `name=vda` [default: the
        /// smallest disk that fits the image].
        #[arg(long, value_name = "HINT")]
        root_hint: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
        /// Wait (at most this many seconds) until the node is active or failed.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1800")]
        wait: Option<u64>,
    },
    /// Ask the running daemon to undeploy a node (power off, wipe, back to available; the
    /// node's credential is revoked), through its API. Also abandons a running deploy.
    Undeploy {
        /// The node's name.
        name: String,
        /// Wipe whole disks, not just partition tables and edges.
        #[arg(long)]
        full_wipe: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One line per node: name, state, MACs, BMC, profile, RAM, disk, last error.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Everything known about one node (never its BMC password).
    Show {
        /// The node's name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Forget a node. Refused while it is deployed or busy, unless it is in maintenance.
    Delete {
        /// The node's name.
        name: String,
    },
    /// Put a node in maintenance (no action touches it) or take it out.
    Maintenance {
        /// The node's name.
        name: String,
        /// on: hold the node; off: release it.
        #[arg(value_enum)]
        mode: OnOff,
        /// Why (shown by `list` and `show`).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Where a running daemon's API is, for the commands that can use it instead of the store.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The daemon's API [default: http://127.0.0.1:6385 when it answers and no --store is
    /// given; else the store file is opened].
    #[arg(long, env = "SEED_API", value_name = "URL")]
    pub api: Option<String>,
    /// The API's bearer token.
    #[arg(long, env = "SEED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The operators' API address a daemon listens on by default.
pub const DEFAULT_API: &str = "127.0.0.1:6385";

impl Remote {
    /// The API base URL to use, if any: the one named, else the default if a daemon answers
    /// there and no store was named.
    fn url(&self, store_given: bool) -> Option<String> {
        if let Some(a) = &self.api {
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
}

fn normalize(api: &str) -> String {
    let a = api.trim_end_matches('/');
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// A minimal client of the daemon's REST API (blocking, bounded timeouts).
struct Client {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(base: String, token: Option<&str>) -> anyhow::Result<Client> {
        let token = token.with_context(|| {
            format!("the seed daemon's API at {base} needs its token: --token or SEED_TOKEN")
        })?;
        Ok(Client {
            auth: format!("Bearer {token}"),
            base,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        })
    }

    fn answer(
        &self,
        what: &str,
        r: Result<ureq::Response, ureq::Error>,
    ) -> anyhow::Result<serde_json::Value> {
        match r {
            Ok(resp) => resp
                .into_json()
                .with_context(|| format!("{what}: the seed's answer is not JSON")),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body);
                bail!("{what}: the seed answered {code}: {}", msg.trim())
            }
            Err(e) => Err(e).with_context(|| format!("{what}: reaching the seed at {}", self.base)),
        }
    }

    fn get(&self, path: &str, what: &str) -> anyhow::Result<serde_json::Value> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .call();
        self.answer(what, r)
    }

    fn post(
        &self,
        path: &str,
        ct: &str,
        body: &str,
        what: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .set("Content-Type", ct)
            .send_string(body);
        self.answer(what, r)
    }
}

/// Where the daemon's REST API is.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The daemon's API.
    #[arg(long, env = "SEED_API", default_value = "http://127.0.0.1:6385")]
    pub api: String,
    /// The API's bearer token.
    #[arg(long, env = "SEED_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Where the store lives when `--store` and `SEED_STORE` are not given.
pub fn default_store_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_STATE_HOME nor HOME is set")?,
        )
        .join(".local/state"),
    };
    Ok(base.join("seed").join("seed.redb"))
}

fn open_store(path: Option<PathBuf>) -> anyhow::Result<RedbStore> {
    let path = match path {
        Some(p) => p,
        None => default_store_path()?,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    RedbStore::open(&path).with_context(|| format!("opening the store {}", path.display()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let NodeCommand::Inspect {
        name,
        api,
        token,
        wait,
    } = &args.command
    {
        // The daemon holds the store: this one goes through its API.
        return inspect(api, token, name, *wait);
    }
    match &args.command {
        NodeCommand::Deploy {
            name,
            image,
            root_hint,
            api,
            wait,
        } => return deploy(api, name, image, root_hint.as_deref(), *wait),
        NodeCommand::Undeploy {
            name,
            full_wipe,
            api,
        } => return undeploy(api, name, *full_wipe),
        _ => {}
    }
    if let NodeCommand::List { remote }
    | NodeCommand::Show { remote, .. }
    | NodeCommand::Import { remote, .. } = &args.command
    {
        if let Some(url) = remote.url(args.store.is_some()) {
            let client = Client::new(url, remote.token.as_deref())?;
            let out = &mut std::io::stdout().lock();
            return match &args.command {
                NodeCommand::List { .. } => list_api(&client, out),
                NodeCommand::Show { name, .. } => show_api(&client, name, out),
                NodeCommand::Import { file, .. } => import_api(&client, file, out),
                _ => unreachable!("matched above"),
            };
        }
    }
    let store = open_store(args.store)?;
    let out = &mut std::io::stdout().lock();
    match args.command {
        NodeCommand::Import { file, .. } => import(&store, &file, out),
        NodeCommand::Inspect { .. } | NodeCommand::Deploy { .. } | NodeCommand::Undeploy { .. } => {
            unreachable!("handled above")
        }
        NodeCommand::List { .. } => list(&store, out),
        NodeCommand::Show { name, .. } => show(&store, &name, out),
        NodeCommand::Delete { name } => delete(&store, &name, out),
        NodeCommand::Maintenance { name, mode, reason } => {
            maintenance(&store, &name, matches!(mode, OnOff::On), reason, out)
        }
    }
}

use std::io::Write;

fn import(store: &dyn Store, file: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let taken: Vec<_> = nodes::list(store)
        .context("reading enrolled nodes")?
        .into_iter()
        .map(|(n, _)| (n.name, n.macs))
        .collect();
    let new = inventory::parse_instackenv(&text, Format::from_path(file), &taken, now_ms())
        .with_context(|| format!("{}: nothing enrolled", file.display()))?;
    nodes::create(store, &new).context("enrolling (nothing enrolled)")?;
    let names: Vec<&str> = new.iter().map(|n| n.name.as_str()).collect();
    writeln!(out, "enrolled {} node(s): {}", new.len(), names.join(", "))?;
    Ok(())
}

/// `seed node import` through the API: the file as it is, all of it or nothing.
fn import_api(c: &Client, file: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ct = match Format::from_path(file) {
        Format::Json => "application/json",
        Format::Yaml => "application/yaml",
    };
    let v = c.post("/v1/nodes", ct, &text, &format!("{}", file.display()))?;
    let names: Vec<&str> = v["enrolled"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    writeln!(
        out,
        "enrolled {} node(s): {}",
        names.len(),
        names.join(", ")
    )?;
    Ok(())
}

/// A JSON string field, or `-`.
fn field(v: &serde_json::Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// `seed node list` from the API's node views.
fn list_api(c: &Client, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = c.get("/v1/nodes", "listing nodes")?;
    let all = all
        .as_array()
        .context("the seed's node list is not a list")?;
    if all.is_empty() {
        writeln!(out, "no nodes enrolled (seed node import FILE)")?;
        return Ok(());
    }
    let mut rows = vec![list_header()];
    for n in all {
        let disks: u64 = n["properties"]["disks"]
            .as_array()
            .map(|d| d.iter().filter_map(|d| d["size_bytes"].as_u64()).sum())
            .unwrap_or(0);
        rows.push(vec![
            field(n, "/name"),
            field(n, "/state"),
            match n.get("maintenance").and_then(|m| m.as_str()) {
                Some(r) if !r.is_empty() => format!("yes: {r}"),
                Some(_) => "yes".into(),
                None => String::new(),
            },
            n["macs"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            format!("{}:{}", field(n, "/bmc/address"), field(n, "/bmc/port")),
            field(n, "/capabilities/profile"),
            field(n, "/properties/cpus"),
            n["properties"]["memory_mib"]
                .as_u64()
                .map_or("-".into(), mib),
            if disks == 0 { "-".into() } else { bytes(disks) },
            n["last_error"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    write!(out, "{}", table(&rows))?;
    Ok(())
}

fn list_header() -> Vec<String> {
    [
        "NAME",
        "STATE",
        "MAINT",
        "MACS",
        "BMC",
        "PROFILE",
        "CPU",
        "RAM",
        "DISK",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()
}

/// `seed node show` from the API's node view (the view never carries the password).
fn show_api(c: &Client, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let n = c.get(&format!("/v1/nodes/{name}"), &format!("node {name}"))?;
    let mut rows: Vec<(&str, String)> =
        vec![("name", field(&n, "/name")), ("state", field(&n, "/state"))];
    if n.get("reason").is_some() {
        rows.push(("reason", field(&n, "/reason")));
    }
    rows.push((
        "maintenance",
        match n.get("maintenance").and_then(|m| m.as_str()) {
            None => "off".into(),
            Some("") => "on".into(),
            Some(r) => format!("on ({r})"),
        },
    ));
    rows.push(("last error", field(&n, "/last_error")));
    let macs: Vec<&str> = n["macs"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m.as_str()).collect())
        .unwrap_or_default();
    rows.push(("macs", macs.join(", ")));
    rows.push((
        "bmc",
        format!(
            "{} {}:{} user {}",
            field(&n, "/bmc/driver"),
            field(&n, "/bmc/address"),
            field(&n, "/bmc/port"),
            field(&n, "/bmc/username")
        ),
    ));
    let caps: Vec<String> = n["capabilities"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    rows.push(("capabilities", caps.join(",")));
    rows.push(("profile", field(&n, "/capabilities/profile")));
    rows.push(("cpus", field(&n, "/properties/cpus")));
    rows.push((
        "memory",
        n["properties"]["memory_mib"]
            .as_u64()
            .map_or("-".into(), mib),
    ));
    rows.push(("boot mode", field(&n, "/properties/boot_mode")));
    let disks = n["properties"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if disks.is_empty() {
        rows.push(("disks", "-".into()));
    }
    for (i, d) in disks.iter().enumerate() {
        let mut s = format!(
            "{} {}",
            d["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map_or(format!("#{i}"), str::to_string),
            bytes(d["size_bytes"].as_u64().unwrap_or(0))
        );
        if let Some(m) = d["model"].as_str() {
            s.push_str(&format!(" model {m}"));
        }
        if let Some(sn) = d["serial"].as_str() {
            s.push_str(&format!(" serial {sn}"));
        }
        rows.push(("disk", s));
    }
    if let Some(f) = n.get("facts") {
        rows.push(("cpu model", field(f, "/cpu_model")));
        for nic in f["nics"].as_array().into_iter().flatten() {
            rows.push((
                "nic",
                format!(
                    "{} {} {}",
                    field(nic, "/name"),
                    field(nic, "/mac"),
                    if nic["link"].as_bool() == Some(true) {
                        "link up"
                    } else {
                        "no link"
                    }
                ),
            ));
        }
    }
    if let Some(ms) = n["updated_ms"].as_u64() {
        rows.push(("updated", when(ms)));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(out, "{:<w$}  {v}", format!("{k}:"), w = w + 1)?;
    }
    Ok(())
}

fn get(store: &dyn Store, name: &str) -> anyhow::Result<(Node, u64)> {
    nodes::get(store, name)
        .with_context(|| format!("reading node {name}"))?
        .with_context(|| format!("no node called {name:?}"))
}

fn list(store: &dyn Store, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = nodes::list(store).context("reading nodes")?;
    if all.is_empty() {
        writeln!(out, "no nodes enrolled (seed node import FILE)")?;
        return Ok(());
    }
    let mut rows = vec![list_header()];
    for (n, _) in &all {
        let p = &n.properties;
        rows.push(vec![
            n.name.clone(),
            n.lifecycle.state.name().to_string(),
            match &n.lifecycle.maintenance {
                Some(r) if !r.is_empty() => format!("yes: {r}"),
                Some(_) => "yes".into(),
                None => String::new(),
            },
            n.macs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            format!("{}:{}", n.bmc.address, n.bmc.port),
            n.capabilities.profile().unwrap_or("-").to_string(),
            p.cpus.map_or("-".into(), |c| c.to_string()),
            p.memory_mib.map_or("-".into(), mib),
            disk_total(n),
            n.lifecycle.last_error.clone().unwrap_or_default(),
        ]);
    }
    write!(out, "{}", table(&rows))?;
    Ok(())
}

/// Columns padded to their widest cell. Hand-written: a table crate would buy nothing for
/// plain left-aligned ASCII columns.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn mib(m: u64) -> String {
    if m >= 1024 && m.is_multiple_of(1024) {
        format!("{} GiB", m / 1024)
    } else {
        format!("{m} MiB")
    }
}

fn bytes(b: u64) -> String {
    const GIB: u64 = 1 << 30;
    if b >= GIB {
        let g = b as f64 / GIB as f64;
        if b.is_multiple_of(GIB) {
            format!("{} GiB", b / GIB)
        } else {
            format!("{g:.1} GiB")
        }
    } else {
        format!("{} MiB", b >> 20)
    }
}

fn disk_total(n: &Node) -> String {
    if n.properties.disks.is_empty() {
        return "-".into();
    }
    bytes(n.properties.disks.iter().map(|d| d.size_bytes).sum())
}

fn when(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

fn show(store: &dyn Store, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let (n, rev) = get(store, name)?;
    let lc = &n.lifecycle;
    let p = &n.properties;
    let mut rows: Vec<(&str, String)> =
        vec![("name", n.name.clone()), ("state", lc.state.name().into())];
    if let Some(r) = lc.state.reason() {
        rows.push(("reason", r.into()));
    }
    rows.push((
        "maintenance",
        match &lc.maintenance {
            None => "off".into(),
            Some(r) if r.is_empty() => "on".into(),
            Some(r) => format!("on ({r})"),
        },
    ));
    rows.push(("last error", lc.last_error.clone().unwrap_or("-".into())));
    rows.push((
        "macs",
        n.macs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    ));
    // The password is deliberately absent: it is a Secret and prints as ***.
    rows.push((
        "bmc",
        format!(
            "{} {}:{} user {} password {}",
            n.bmc.driver, n.bmc.address, n.bmc.port, n.bmc.username, n.bmc.password
        ),
    ));
    rows.push(("capabilities", n.capabilities.to_string()));
    rows.push(("profile", n.capabilities.profile().unwrap_or("-").into()));
    rows.push(("cpus", p.cpus.map_or("-".into(), |c| c.to_string())));
    rows.push(("memory", p.memory_mib.map_or("-".into(), mib)));
    rows.push((
        "boot mode",
        p.boot_mode.map_or("-".into(), |m| m.to_string()),
    ));
    rows.push(("arch", p.arch.clone().unwrap_or("-".into())));
    if p.disks.is_empty() {
        rows.push(("disks", "-".into()));
    }
    for (i, d) in p.disks.iter().enumerate() {
        let mut s = format!(
            "{} {}",
            if d.name.is_empty() {
                format!("#{i}")
            } else {
                d.name.clone()
            },
            bytes(d.size_bytes)
        );
        if let Some(m) = &d.model {
            s.push_str(&format!(" model {m}"));
        }
        if let Some(sn) = &d.serial {
            s.push_str(&format!(" serial {sn}"));
        }
        rows.push(("disk", s));
    }
    if let Some(t) = &lc.target {
        rows.push(("image", t.image.clone()));
    }
    rows.push(("created", when(n.created_ms)));
    rows.push(("updated", when(n.updated_ms)));
    rows.push(("revision", rev.to_string()));
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(out, "{:<w$}  {v}", format!("{k}:"), w = w + 1)?;
    }
    Ok(())
}

fn delete(store: &dyn Store, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let (n, rev) = get(store, name)?;
    let s = &n.lifecycle.state;
    if (s.is_busy() || *s == lifecycle::State::Active) && n.lifecycle.maintenance.is_none() {
        bail!(
            "node {name} is {}: undeploy it first, or put it in maintenance to force",
            s.name()
        );
    }
    nodes::delete(store, &n, rev).with_context(|| format!("deleting node {name}"))?;
    writeln!(out, "deleted node {name}")?;
    Ok(())
}

fn maintenance(
    store: &dyn Store,
    name: &str,
    on: bool,
    reason: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Read-modify-write with compare-and-swap; retry a few times if another writer got there
    // first.
    for _ in 0..5 {
        let (mut n, rev) = get(store, name)?;
        let event = Event::Maintenance {
            on,
            reason: reason.clone(),
        };
        lifecycle::step(&mut n, event, now_ms(), &Timeouts::default())
            .with_context(|| format!("node {name}"))?;
        match nodes::update(store, &n, rev) {
            Ok(_) => {
                writeln!(
                    out,
                    "node {name}: maintenance {}",
                    if on { "on" } else { "off" }
                )?;
                return Ok(());
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e).with_context(|| format!("saving node {name}")),
        }
    }
    bail!("node {name} kept changing under us; try again")
}

/// `seed node inspect`: POST the request, then (with `--wait`) poll the node with a spinner.
fn inspect(api: &str, token: &str, name: &str, wait: Option<u64>) -> anyhow::Result<()> {
    let api = api.trim_end_matches('/');
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(20))
        .build();
    let auth = format!("Bearer {token}");
    let url = format!("{api}/v1/nodes/{name}/inspect");
    match agent.post(&url).set("Authorization", &auth).call() {
        Ok(_) => println!("{name}: inspection requested"),
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            anyhow::bail!(
                "{name}: the seed refused the inspection ({code}): {}",
                body.trim()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reaching the seed at {api}")),
    }
    let Some(secs) = wait else { return Ok(()) };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let start = std::time::Instant::now();
    loop {
        let node: serde_json::Value = agent
            .get(&format!("{api}/v1/nodes/{name}"))
            .set("Authorization", &auth)
            .call()
            .with_context(|| format!("reading {name} from the seed"))?
            .into_json()
            .context("the seed's answer")?;
        let state = node["state"].as_str().unwrap_or("?").to_string();
        bar.set_message(format!("{name}: {state} ({}s)", start.elapsed().as_secs()));
        if state == "available" || state == "manageable" || state.contains("fail") {
            bar.finish_and_clear();
            println!(
                "{name}: {state} after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            if state.contains("fail") {
                anyhow::bail!(
                    "{name}: {}",
                    node["last_error"].as_str().unwrap_or("inspection failed")
                );
            }
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < secs,
            "{name} is still {state} after {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A client of the daemon's REST API.
struct Rest {
    api: String,
    auth: String,
    agent: ureq::Agent,
}

impl Rest {
    fn new(a: &ApiArgs) -> Self {
        Rest {
            api: a.api.trim_end_matches('/').to_string(),
            auth: format!("Bearer {}", a.token),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(20))
                .build(),
        }
    }

    /// POST a JSON body; the seed's refusal becomes an error with its message.
    fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.api);
        match self
            .agent
            .post(&url)
            .set("Authorization", &self.auth)
            .send_json(body)
        {
            Ok(r) => r.into_json().context("the seed's answer"),
            Err(ureq::Error::Status(code, resp)) => {
                let body: serde_json::Value = resp.into_json().unwrap_or_default();
                bail!(
                    "the seed refused ({code}): {}",
                    body["error"].as_str().unwrap_or("no reason given")
                )
            }
            Err(e) => Err(e).with_context(|| format!("reaching the seed at {}", self.api)),
        }
    }

    fn node(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        self.agent
            .get(&format!("{}/v1/nodes/{name}", self.api))
            .set("Authorization", &self.auth)
            .call()
            .with_context(|| format!("reading {name} from the seed"))?
            .into_json()
            .context("the seed's answer")
    }
}

/// `seed node deploy`: POST the request, then (with `--wait`) follow the node with a progress
/// bar of the agent's phase and bytes until it is active or failed.
fn deploy(
    a: &ApiArgs,
    name: &str,
    image: &str,
    root_hint: Option<&str>,
    wait: Option<u64>,
) -> anyhow::Result<()> {
    let rest = Rest::new(a);
    rest.post(
        &format!("/v1/nodes/{name}/deploy"),
        serde_json::json!({ "image": image, "root_hint": root_hint }),
    )
    .with_context(|| format!("{name}: deploy of {image}"))?;
    println!("{name}: deploy of {image} requested");
    let Some(secs) = wait else { return Ok(()) };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = std::time::Instant::now();
    loop {
        let node = rest.node(name)?;
        let state = node["state"].as_str().unwrap_or("?").to_string();
        bar.set_message(deploy_message(name, &node));
        if let (Some(bytes), Some(total)) = (
            node["progress"]["bytes"].as_u64(),
            node["progress"]["total"].as_u64(),
        ) {
            bar.set_length(total);
            bar.set_position(bytes.min(total));
        }
        if state == "active" || state.contains("fail") || state == "available" {
            bar.finish_and_clear();
            println!(
                "{name}: {state} after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            if state != "active" {
                bail!(
                    "{name}: {}",
                    node["last_error"]
                        .as_str()
                        .unwrap_or("deploy did not finish")
                );
            }
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < secs,
            "{name} is still {state} after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `node: deploying, writing` (the agent's phase while it has one; "booting" once written).
fn deploy_message(name: &str, node: &serde_json::Value) -> String {
    let state = node["state"].as_str().unwrap_or("?");
    match node["progress"]["phase"].as_str() {
        Some("done") if state == "deploying" => format!("{name}: {state}, image written, booting"),
        Some(phase) if state == "deploying" => format!("{name}: {state}, {phase}"),
        _ => format!("{name}: {state}"),
    }
}

/// `seed node undeploy`.
fn undeploy(a: &ApiArgs, name: &str, full_wipe: bool) -> anyhow::Result<()> {
    let rest = Rest::new(a);
    let node = rest
        .post(
            &format!("/v1/nodes/{name}/undeploy"),
            serde_json::json!({ "full_wipe": full_wipe }),
        )
        .with_context(|| format!("{name}: undeploy"))?;
    println!(
        "{name}: undeploy requested ({})",
        node["state"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    #[test]
    fn deploy_message_follows_the_phase() {
        let n = |state: &str, phase: Option<&str>| {
            let mut v = serde_json::json!({ "state": state });
            if let Some(p) = phase {
                v["progress"] = serde_json::json!({ "phase": p, "bytes": 1, "total": 2 });
            }
            deploy_message("n1", &v)
        };
        assert_eq!(n("deploying", None), "n1: deploying");
        assert_eq!(n("deploying", Some("writing")), "n1: deploying, writing");
        assert_eq!(
            n("deploying", Some("done")),
            "n1: deploying, image written, booting"
        );
        assert_eq!(n("active", Some("done")), "n1: active");
    }

    const FILE: &str = r#"
nodes:
  - name: ctrl-0
    mac: ["52:54:00:00:00:01"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6230
    pm_user: admin
    pm_password: topsecret
    capabilities: "profile:control,boot_mode:uefi"
    memory: 8192
    disk: 40
  - name: cmp-0
    mac: ["52:54:00:00:00:02"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6231
    pm_user: admin
    pm_password: topsecret
"#;

    fn run_to_string(f: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>) -> String {
        let mut v = Vec::new();
        f(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn import_list_show_delete_maintenance() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodes.yaml");
        std::fs::write(&file, FILE).unwrap();
        let s = MemStore::new();
        let o = run_to_string(|o| import(&s, &file, o));
        assert_eq!(o, "enrolled 2 node(s): ctrl-0, cmp-0\n");
        // Importing again: refused, nothing changes.
        let e = import(&s, &file, &mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("already used"), "{e:#}");

        let o = run_to_string(|o| list(&s, o));
        assert!(!o.contains("topsecret"));
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(lines.len(), 3, "{o}");
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[2].starts_with("ctrl-0"), "{o}");
        assert!(lines[2].contains("enroll") && lines[2].contains("127.0.0.1:6230"));
        assert!(
            lines[2].contains("control")
                && lines[2].contains("8 GiB")
                && lines[2].contains("40 GiB")
        );

        let o = run_to_string(|o| show(&s, "ctrl-0", o));
        assert!(!o.contains("topsecret"), "{o}");
        assert!(o.contains("password ***"), "{o}");
        assert!(o.contains("boot mode:") && o.contains("uefi"), "{o}");

        run_to_string(|o| maintenance(&s, "cmp-0", true, Some("bad fan".into()), o));
        let o = run_to_string(|o| list(&s, o));
        assert!(o.contains("yes: bad fan"), "{o}");
        run_to_string(|o| maintenance(&s, "cmp-0", false, None, o));
        assert!(!run_to_string(|o| list(&s, o)).contains("bad fan"));

        run_to_string(|o| delete(&s, "cmp-0", o));
        assert!(show(&s, "cmp-0", &mut Vec::new()).is_err());
        assert!(delete(&s, "nope", &mut Vec::new()).is_err());
    }

    #[test]
    fn delete_refuses_active_unless_maintenance() {
        let s = MemStore::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n.json");
        std::fs::write(
            &file,
            r#"{"nodes":[{"name":"a","mac":["52:54:00:00:00:01"],"pm_type":"ipmi","pm_addr":"h","pm_user":"u","pm_password":"p"}]}"#,
        )
        .unwrap();
        import(&s, &file, &mut Vec::new()).unwrap();
        let (mut n, rev) = nodes::get(&s, "a").unwrap().unwrap();
        n.lifecycle.state = lifecycle::State::Active;
        nodes::update(&s, &n, rev).unwrap();
        let e = delete(&s, "a", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("is active"), "{e}");
        maintenance(&s, "a", true, None, &mut Vec::new()).unwrap();
        delete(&s, "a", &mut Vec::new()).unwrap();
    }

    /// A daemon API over an in-memory store on 127.0.0.1:<ephemeral>, served from its own
    /// runtime thread until the returned token is cancelled.
    fn serve_api(token: &str) -> (String, tokio_util::sync::CancellationToken) {
        use crate::daemon::{api::Api, Daemon, Settings};
        let d = Daemon::new(
            std::sync::Arc::new(MemStore::new()),
            Settings {
                server_ip: "10.0.0.1".parse().unwrap(),
                http_port: 8080,
                timeouts: Timeouts::default(),
                heartbeat_secs: 5,
                provide_after_inspect: true,
            },
        )
        .unwrap();
        let api = std::sync::Arc::new(Api::new(d, token));
        let stop = tokio_util::sync::CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                crate::daemon::admin::serve(l, api, s2).await;
            });
        });
        let addr = rx.recv().unwrap();
        (format!("{addr}"), stop)
    }

    #[test]
    fn import_list_show_through_the_api() {
        let (addr, stop) = serve_api("tok");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodes.yaml");
        std::fs::write(&file, FILE).unwrap();
        let remote = Remote {
            api: Some(addr.clone()),
            token: Some("tok".into()),
        };
        let url = remote.url(false).unwrap();
        assert_eq!(url, format!("http://{addr}"));
        let c = Client::new(url.clone(), Some("tok")).unwrap();
        let o = run_to_string(|o| import_api(&c, &file, o));
        assert_eq!(o, "enrolled 2 node(s): ctrl-0, cmp-0\n");
        let e = import_api(&c, &file, &mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("422"), "{e:#}");

        let o = run_to_string(|o| list_api(&c, o));
        assert!(!o.contains("topsecret"), "{o}");
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(lines.len(), 3, "{o}");
        assert!(lines[0].starts_with("NAME"));
        let ctrl = lines.iter().find(|l| l.starts_with("ctrl-0")).unwrap();
        assert!(
            ctrl.contains("enroll") && ctrl.contains("127.0.0.1:6230"),
            "{o}"
        );
        assert!(
            ctrl.contains("control") && ctrl.contains("8 GiB") && ctrl.contains("40 GiB"),
            "{o}"
        );
        let o = run_to_string(|o| show_api(&c, "ctrl-0", o));
        assert!(!o.contains("topsecret"), "{o}");
        assert!(
            o.contains("user admin") && o.contains("52:54:00:00:00:01"),
            "{o}"
        );
        let e = show_api(&c, "nope", &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");

        // A wrong token or none: clear errors, nothing shown.
        let bad = Client::new(url.clone(), Some("wrong")).unwrap();
        let e = list_api(&bad, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("401"), "{e}");
        let e = Client::new(url, None).err().unwrap();
        assert!(e.to_string().contains("SEED_TOKEN"), "{e}");
        stop.cancel();
    }

    #[test]
    fn a_named_store_wins_over_probing() {
        let r = Remote {
            api: None,
            token: None,
        };
        assert_eq!(r.url(true), None);
        let r = Remote {
            api: Some("http://h:1/".into()),
            token: None,
        };
        assert_eq!(r.url(true).as_deref(), Some("http://h:1"));
    }

    #[test]
    fn default_store_path_follows_xdg() {
        // Only checks the shape; the environment is shared across tests so it is not changed.
        let p = default_store_path().unwrap();
        assert!(p.ends_with("seed/seed.redb"), "{}", p.display());
    }
}
