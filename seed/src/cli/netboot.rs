//! `seed netboot`: the netboot services alone, driven by a TOML file.

use anyhow::Context;
use netboot::config::NetbootConfig;
use netboot::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;

/// Serve DHCP (or ProxyDHCP), TFTP and HTTP boot for the nodes listed in a config file.
///
/// The config file names the provisioning interface and the seed's address on it, the services
/// to run ([dhcp], [tftp], [http]) and the known nodes ([[nodes]]: mac, ip, hostname, boot).
/// See `netboot/examples/netboot.toml`. Stops cleanly on Ctrl-C or SIGTERM.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the TOML config file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Parse and validate the config, print a summary, and exit without serving.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = NetbootConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check {
        println!(
            "config ok: server {} on {}; dhcp {}, tftp {}, http {}; {} known node(s)",
            cfg.server_ip,
            cfg.interface.as_deref().unwrap_or("all interfaces"),
            on_off(cfg.dhcp.is_some()),
            on_off(cfg.tftp.is_some()),
            on_off(cfg.http.is_some()),
            cfg.nodes.len()
        );
        if let Some(w) = &cfg.wire {
            println!("  {}", w.describe(cfg.server_ip));
        }
        return Ok(());
    }
    let policy = Arc::new(cfg.static_policy());
    let metrics = Arc::new(Metrics::default());
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = super::cancel_on_signal();
        netboot::server::run(cfg, policy, metrics, shutdown)
            .await
            .context("netboot")
    })
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
