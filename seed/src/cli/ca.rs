//! `seed ca export [--state DIR | --config FILE]`: the CA certificate of the daemon's HTTPS API
//! (`[api] tls = "auto"`), read from its state directory, printed as PEM for clients to pin
//! (`seed … --ca FILE`, `curl --cacert FILE`). No daemon needed.

use crate::daemon::api_tls;
use crate::daemon::config::{ApiTls, DaemonConfig};
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
    },
}

/// Run `seed ca …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let CaCommand::Export { state, config } = args.command;
    let state = match (state, config) {
        (Some(s), _) => s,
        (None, Some(c)) => {
            let cfg = DaemonConfig::load(&c).with_context(|| format!("loading {}", c.display()))?;
            match cfg.api.tls() {
                ApiTls::Auto { .. } => {}
                ApiTls::Off => bail!("{}: [api] tls = \"off\": the API has no CA", c.display()),
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
    print!("{pem}");
    Ok(())
}
