//! `seed node`: enroll machines from an instackenv file, list and show them, delete them, and
//! put them in or out of maintenance (these open the embedded store directly); inspect, deploy
//! and undeploy them through the running daemon's REST API. `list`, `show` and `import` go
//! through the API too when one is named (`--api`, `SEED_API`) or answers on 127.0.0.1:6385
//! (and no `--store` was given), since a running daemon holds the store file.
//!
//! One module per verb; every API call goes through [`super::client::Client`], and lists and
//! views are printed from the API's [`api::NodeView`] whichever way they were read.

mod deploy;
mod import;
mod inspect;
mod list;
mod local;
mod show;

use super::client::{self, Client};
use crate::store::sealed::{self, SealedStore};
use anyhow::Context;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub use client::DEFAULT_API;

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
    /// Ask the running daemon to inspect nodes (PXE-boot the ramdisk, collect their facts),
    /// through its API; `--wait` follows them to the end.
    Inspect {
        /// The nodes' names (inspected at once).
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
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
    /// The daemon's API [default: 127.0.0.1:6385 (https with --ca) when it answers and no
    /// --store is given; else the store file is opened].
    #[arg(long, env = "SEED_API", value_name = "URL")]
    pub api: Option<String>,
    /// The API's bearer token.
    #[arg(long, env = "SEED_TOKEN", hide_env_values = true)]
    pub token: Option<api::Secret>,
    /// The CA certificate (PEM) the daemon's HTTPS must chain to (`seed ca export`).
    #[arg(long, env = "SEED_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl Remote {
    /// A client of the daemon to use, if any ([`client::daemon_url`]).
    pub fn client(&self, store_given: bool) -> anyhow::Result<Option<Client>> {
        client::daemon_url(self.api.as_deref(), store_given, self.ca.is_some())
            .map(|url| {
                Client::new(
                    &url,
                    self.token.as_ref().map(api::Secret::expose),
                    self.ca.as_deref(),
                )
            })
            .transpose()
    }
}

/// Where the daemon's REST API is.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The daemon's API (`https://` by default with --ca, else `http://`).
    #[arg(long, env = "SEED_API", default_value = client::DEFAULT_API)]
    pub api: String,
    /// The API's bearer token.
    #[arg(long, env = "SEED_TOKEN", hide_env_values = true)]
    pub token: api::Secret,
    /// The CA certificate (PEM) the daemon's HTTPS must chain to (`seed ca export`).
    #[arg(long, env = "SEED_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl ApiArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.api, Some(self.token.expose()), self.ca.as_deref())
    }
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

fn open_store(path: Option<PathBuf>) -> anyhow::Result<SealedStore> {
    let path = match path {
        Some(p) => p,
        None => default_store_path()?,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    sealed::open_redb(&path).with_context(|| format!("opening the store {}", path.display()))
}

/// Read node `name` every `every` until `step` says it is done (`Some(result)`), at most `secs`
/// seconds (`--wait`).
fn follow(
    c: &Client,
    name: &str,
    secs: u64,
    every: std::time::Duration,
    mut step: impl FnMut(&api::NodeView) -> Option<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let node: api::NodeView = c
            .get_patient(&format!("/v1/nodes/{name}"))
            .with_context(|| format!("reading {name} from the seed"))?;
        if let Some(done) = step(&node) {
            return done;
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < secs,
            "{name} is still {} after {secs} s",
            node.state
        );
        std::thread::sleep(every);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = &mut std::io::stdout().lock();
    // The daemon holds the store: these go through its API.
    match &args.command {
        NodeCommand::Inspect { names, api, wait } => {
            return inspect::inspect(&api.client()?, names, *wait)
        }
        NodeCommand::Deploy {
            name,
            image,
            root_hint,
            api,
            wait,
        } => return deploy::deploy(&api.client()?, name, image, root_hint.as_deref(), *wait),
        NodeCommand::Undeploy {
            name,
            full_wipe,
            api,
        } => return deploy::undeploy(&api.client()?, name, *full_wipe),
        NodeCommand::List { remote }
        | NodeCommand::Show { remote, .. }
        | NodeCommand::Import { remote, .. } => {
            if let Some(c) = remote.client(args.store.is_some())? {
                return match &args.command {
                    NodeCommand::List { .. } => list::list_api(&c, out),
                    NodeCommand::Show { name, .. } => show::show_api(&c, name, out),
                    NodeCommand::Import { file, .. } => import::import_api(&c, file, out),
                    _ => unreachable!("matched above"),
                };
            }
        }
        NodeCommand::Delete { .. } | NodeCommand::Maintenance { .. } => {}
    }
    let store = open_store(args.store)?;
    match args.command {
        NodeCommand::Import { file, .. } => import::import(&store, &file, out),
        NodeCommand::List { .. } => list::list(&store, out),
        NodeCommand::Show { name, .. } => show::show(&store, &name, out),
        NodeCommand::Delete { name } => local::delete(&store, &name, out),
        NodeCommand::Maintenance { name, mode, reason } => {
            local::maintenance(&store, &name, matches!(mode, OnOff::On), reason, out)
        }
        NodeCommand::Inspect { .. } | NodeCommand::Deploy { .. } | NodeCommand::Undeploy { .. } => {
            unreachable!("handled above")
        }
    }
}

#[cfg(test)]
mod tests;
