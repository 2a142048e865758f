//! `seed ca export [--state DIR | --config FILE] [--sha256]`: the seed's own CA certificate, of
//! its HTTPS API (`[api] tls = "auto"`) and of the agents' HTTPS (`[agent] tls`), read from its
//! state directory, printed as PEM for clients to pin (`seed … --ca FILE`, `curl --cacert
//! FILE`), or its SHA-256 (what the ramdisk's `seed.ca=` carries). No daemon needed.

use crate::daemon::api_tls;
use crate::daemon::config::{ApiTls, DaemonConfig};
use crate::store::config::StoreConfig;
use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Print the API's CA certificate (PEM) on stdout.
    Export {
        /// The daemon's state directory ([netboot] state_dir).
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "config",
            required_unless_present = "config"
        )]
        state: Option<PathBuf>,
        /// The daemon's config file (its state directory and [api] tls are read from it).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the certificate's SHA-256 (hex, the agents' pin) instead of the PEM.
        #[arg(long)]
        sha256: bool,
    },
}

/// Run `seed ca …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let CaCommand::Export {
        state,
        config,
        sha256,
    } = args.command;
    let state = match (state, config) {
        (Some(s), _) => s,
        (None, Some(c)) => {
            let cfg = DaemonConfig::load(&c).with_context(|| format!("loading {}", c.display()))?;
            let ha = matches!(cfg.store, StoreConfig::Etcd { .. });
            match cfg.api.tls() {
                _ if cfg.agent.tls_on(ha) => {}
                ApiTls::Auto { .. } => {}
                ApiTls::Off => bail!(
                    "{}: [api] tls = \"off\" and [agent] tls off: the seed makes no CA",
                    c.display()
                ),
                ApiTls::Files { cert, .. } => bail!(
                    "{}: the API serves the operator's certificate {}: its CA is the operator's",
                    c.display(),
                    cert.display()
                ),
            }
            cfg.netboot.state_dir
        }
        (None, None) => bail!("--state DIR or --config FILE"),
    };
    let path = api_tls::ca_path(&state);
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no API CA in {} yet: the daemon makes it at its first start",
            state.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("{} holds no PEM certificate", path.display());
    }
    if sha256 {
        println!("{}", api_tls::ca_sha256(&path)?);
    } else {
        print!("{pem}");
    }
    Ok(())
}
