//! `seed daemon`: the store, the lifecycle driver, netboot answered from node state, and the
//! agent/REST API on the netboot HTTP server. See `seed/examples/seed.toml`.

use crate::daemon::api::Api;
use crate::daemon::config::DaemonConfig;
use crate::daemon::policy::{RAMDISK_INITRD, RAMDISK_KERNEL};
use crate::daemon::{Daemon, Settings};
use crate::lifecycle::Timeouts;
use crate::store::redb::RedbStore;
use anyhow::Context;
use netboot::metrics::Metrics;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Run the seed daemon from a config file.
///
/// The config names the store file, the API token, the ramdisk files and a [netboot] section
/// of the same shape as `seed netboot`'s file. Stops cleanly on Ctrl-C or SIGTERM.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the TOML config file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = DaemonConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let http = cfg
        .netboot
        .http
        .clone()
        .context("[netboot.http] is required")?;
    install_ramdisk(&cfg.ramdisk.kernel, &http.root.join(RAMDISK_KERNEL))?;
    install_ramdisk(&cfg.ramdisk.initrd, &http.root.join(RAMDISK_INITRD))?;
    if let Some(dir) = cfg.store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = RedbStore::open(&cfg.store)
        .with_context(|| format!("opening the store {}", cfg.store.display()))?;
    let settings = Settings {
        server_ip: cfg.netboot.server_ip,
        http_port: http.port,
        timeouts: Timeouts {
            inspect_ms: cfg.lifecycle.inspect_timeout_secs.saturating_mul(1000),
            deploy_ms: cfg.lifecycle.deploy_timeout_secs.saturating_mul(1000),
            boot_ms: cfg.lifecycle.boot_timeout_secs.saturating_mul(1000),
            boot_retries_max: cfg.lifecycle.boot_retries_max,
            ..Timeouts::default()
        },
        heartbeat_secs: cfg.agent.heartbeat_secs,
        provide_after_inspect: cfg.lifecycle.provide_after_inspect,
    };
    let daemon = Daemon::new(Arc::new(store), settings).context("loading nodes")?;
    let (images_dir, images_url) = cfg.images_dir()?;
    let images = images::ImageStore::open(&images_dir)
        .with_context(|| format!("opening the image store {}", images_dir.display()))?;
    daemon.set_images(images, &images_url);
    let metrics = Arc::new(Metrics::default());
    // The daemon's gauges and histograms follow the netboot counters at every `/metrics`.
    crate::daemon::metrics::register(&daemon, &metrics);
    let api =
        Arc::new(Api::new(daemon.clone(), cfg.api.token.clone()).with_metrics(metrics.clone()));
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let armed = daemon.resume().context("re-arming deadlines")?;
        daemon.spawn_stacks();
        tracing::info!(
            store = %cfg.store.display(),
            deadlines = armed,
            "seed daemon ready (agent API needs the node's per-boot token; REST the bearer token)"
        );
        let shutdown = CancellationToken::new();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            sd.cancel();
        });
        if let Some(addr) = cfg.api.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the API on {addr}"))?;
            tokio::spawn(crate::daemon::admin::serve(
                listener,
                api.clone(),
                shutdown.clone(),
            ));
        }
        netboot::server::run_with_api(cfg.netboot, daemon, metrics, Some(api), shutdown)
            .await
            .context("netboot")
    })
}

/// Hard-link `from` to `to` (same filesystem), else copy. A missing file is a warning: the
/// daemon still runs, but nodes cannot boot the ramdisk until it is there.
fn install_ramdisk(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.exists() {
        tracing::warn!(
            file = %from.display(),
            "ramdisk file missing (build it with `cargo xtask ramdisk`); inspection cannot boot"
        );
        return Ok(());
    }
    let dir = to.parent().context("ramdisk target has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Already in place (a bundle ships the ramdisk inside its HTTP root): removing `to` would
    // delete the only copy.
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(from), std::fs::canonicalize(to)) {
        if a == b {
            return Ok(());
        }
    }
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
