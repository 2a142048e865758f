//! `seed daemon`: the store, the lifecycle driver, netboot answered from node state, and the
//! agent/REST API on the netboot HTTP server. See `seed/examples/seed.toml`.

use crate::daemon::agent_token::AgentTokens;
use crate::daemon::api::Api;
use crate::daemon::config::DaemonConfig;
use crate::daemon::policy::{RAMDISK_INITRD, RAMDISK_KERNEL};
use crate::daemon::{AgentTls, Daemon, Settings};
use crate::ha::float::FloatingAddress;
use crate::ha::handoff::{self, Handoff};
use crate::ha::leases::StoreLeases;
use crate::ha::{Ha, LeaderOnly};
use crate::lifecycle::Timeouts;
use crate::store::config::StoreConfig;
use crate::store::sealed;
use crate::store::Store;
use ::api::ha::{Handoff as HandoffRecord, HandoffStep};
use anyhow::Context;
use netboot::dhcp::leases::LeaseKeeper;
use netboot::metrics::Metrics;
use netboot::BootPolicy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Run the seed daemon from a config file.
///
/// With `[store] backend = "etcd"` the daemon is one of several on a shared etcd store: it
/// campaigns, and only while it leads does it drive the lifecycle, answer DHCP and boots, and
/// reconcile stacks; as a follower it serves reads and forwards writes to the leader.
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
    if let Some(why) = crate::daemon::config::weak_token(cfg.api.token.expose()) {
        anyhow::bail!(
            "{}: [api] token {why}; the daemon does not start with it",
            args.config.display()
        );
    }
    let http = cfg
        .netboot
        .http
        .clone()
        .context("[netboot.http] is required")?;
    install_ramdisk(&cfg.ramdisk.kernel, &http.root.join(RAMDISK_KERNEL))?;
    install_ramdisk(&cfg.ramdisk.initrd, &http.root.join(RAMDISK_INITRD))?;
    private_dir(&cfg.netboot.state_dir)?;
    let api_tls = match cfg.api.listen {
        Some(listen) => api_tls(&cfg, listen)?,
        None => None,
    };
    let resumed = handoff_before_start(&cfg)?;
    // The etcd member this daemon runs (`[store] member`): killed with the daemon.
    let _member = run_member(&cfg)?;
    let (store, ha) = open_store(&cfg, http.port, resumed.is_none())?;
    let (agent_tls, https) = agent_tls(&cfg, ha.is_some())?;
    let mut cfg = cfg;
    if let Some(h) = cfg.netboot.http.as_mut() {
        h.https = https;
    }
    // The leader's floating address comes and goes: TFTP and HTTP listen on every address, so
    // that the others reach this daemon's image copies at its own address, leading or not.
    cfg.netboot.floating_server_ip =
        matches!(&cfg.store, StoreConfig::Etcd { ha, .. } if ha.floating.is_some());
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
        agent_tls,
    };
    let daemon = Daemon::new(store, settings).context("loading nodes")?;
    let (images_dir, images_url) = cfg.images_dir()?;
    let open_images = || {
        images::ImageStore::open(&images_dir)
            .with_context(|| format!("opening the image store {}", images_dir.display()))
    };
    let images = open_images()?;
    daemon.set_images(images, &images_url);
    daemon.set_reservations(
        cfg.netboot
            .nodes
            .iter()
            .filter_map(|n| n.ip.map(|ip| (n.mac, ip))),
    );
    let metrics = Arc::new(Metrics::default());
    // The daemon's gauges and histograms follow the netboot counters at every `/metrics`.
    crate::daemon::metrics::register(&daemon, &metrics);
    let mut api = Api::new(daemon.clone(), cfg.api.token.expose()).with_metrics(metrics.clone());
    // Cancelled once this daemon has handed over: it stops serving.
    let handed_over = CancellationToken::new();
    if let (Some(ha), StoreConfig::Etcd { etcd, ha: s }) = (&ha, &cfg.store) {
        crate::ha::register_metrics(ha, &metrics);
        let h = Handoff::new(
            ha.clone(),
            etcd.clone(),
            &cfg.netboot.state_dir,
            s.after_handoff,
            s.lease_ttl,
            handed_over.clone(),
        );
        if let Some(r) = resumed.clone() {
            h.resume(r);
        }
        // Every member keeps a full copy of the image store, fetched from the others.
        let base = format!(
            "http://{}:{}/{}",
            url_host(&ha.me.api).unwrap_or(cfg.netboot.server_ip.to_string()),
            http.port,
            images_url.trim_start_matches('/')
        );
        crate::ha::images::spawn_replicator(
            ha.raw.clone(),
            open_images()?,
            ha.me.name.clone(),
            base,
            cfg.netboot.state_dir.clone(),
            std::time::Duration::from_secs(3),
            handed_over.clone(),
        )
        .context("starting image replication")?;
        // Members added through the API join as learners; the leader makes them voters.
        crate::ha::members::spawn_promoter(
            ha.clone(),
            std::time::Duration::from_secs(2),
            handed_over.clone(),
        )
        .context("starting the learners' promotion")?;
        api = api.with_handoff(h).with_leadership(ha.clone());
        let h = ha.clone();
        daemon.set_leader_gate(Arc::new(move || h.is_leader()));
    }
    let api = Arc::new(api);
    let floating = match (&ha, &cfg.store) {
        (Some(_), StoreConfig::Etcd { ha: s, .. }) => match s.floating {
            None => None,
            Some((ip, prefix)) => Some(FloatingAddress {
                iface: cfg
                    .netboot
                    .interface
                    .clone()
                    .context("[store] floating_address needs [netboot] interface")?,
                ip,
                prefix,
            }),
        },
        _ => None,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    super::stall::watch(rt.handle().clone()).context("starting the runtime watchdog")?;
    rt.block_on(async move {
        let shutdown = super::cancel_on_signal();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            handed_over.cancelled().await;
            stop.cancel();
        });
        let (policy, leases): (Arc<dyn BootPolicy>, Option<Arc<dyn LeaseKeeper>>) = match ha {
            None => {
                let armed = daemon.resume().context("re-arming deadlines")?;
                daemon.spawn_stacks();
                tracing::info!(
                    deadlines = armed,
                    "seed daemon ready (agent API needs the node's per-boot token; REST the bearer token)"
                );
                (daemon.clone(), None)
            }
            Some(ha) => {
                let leases = Arc::new(StoreLeases::new(ha.store.clone()));
                tracing::info!(
                    name = %ha.me.name,
                    api = %ha.me.api,
                    "seed daemon ready in the HA control plane: leader duties once elected"
                );
                tokio::spawn(leader_duties(
                    ha.clone(),
                    daemon.clone(),
                    leases.clone(),
                    floating,
                    shutdown.clone(),
                ));
                (
                    Arc::new(LeaderOnly::new(daemon.clone(), ha)),
                    Some(leases as Arc<dyn LeaseKeeper>),
                )
            }
        };
        if let Some(addr) = cfg.api.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the API on {addr}"))?;
            tokio::spawn(crate::daemon::admin::serve(
                listener,
                api_tls,
                api.clone(),
                shutdown.clone(),
            ));
        }
        // The provisioning network's HTTP port: agent and node routes, and the REST API only
        // when configured (or when there is no operators' listener).
        let on_provisioning = if cfg.api.on_provisioning() {
            if cfg.api.listen.is_none() {
                tracing::warn!(
                    "the REST API is served on the provisioning network (no [api] listen): \
                     every machine being deployed can reach it"
                );
            }
            api
        } else {
            Arc::new((*api).clone().without_operators())
        };
        netboot::server::run_with_leases(
            cfg.netboot,
            policy,
            metrics,
            Some(on_provisioning),
            leases,
            shutdown,
        )
        .await
        .context("netboot")
    })
}

/// The TLS server configuration of the operators' listener on `listen` (`[api] tls`), `None`
/// when it serves plain HTTP (a warning unless on loopback: the token would cross the network
/// in clear).
fn api_tls(
    cfg: &DaemonConfig,
    listen: std::net::SocketAddr,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    use crate::daemon::api_tls;
    use crate::daemon::config::ApiTls;
    let files = match cfg.api.tls() {
        ApiTls::Off => {
            if !listen.ip().is_loopback() {
                tracing::warn!(
                    %listen,
                    "[api] tls = \"off\": the API (and its bearer tokens) in clear on the network"
                );
            }
            return Ok(None);
        }
        ApiTls::Files { cert, key } => api_tls::CertFiles { cert, key },
        ApiTls::Auto { names } => {
            let names = api_tls::server_names(listen, &names);
            let e = api_tls::ensure(&cfg.netboot.state_dir, &names)
                .context("the API's CA and server certificate")?;
            if e.new_ca {
                tracing::info!(ca = %e.ca.display(), "API CA created: clients pin it (`seed ca export`)");
            }
            if e.new_server {
                tracing::info!(names = %names.join(","), "API server certificate issued");
            }
            e.files
        }
    };
    let config = api_tls::server_config(&files).context("the API's TLS certificate")?;
    Ok(Some(config))
}

/// The agents' HTTPS (`[agent] tls`): the CA's pin and the HTTPS port's certificate, issued
/// for `server_ip` under the seed's CA (made here at first, shared with the operators' API);
/// `None` when the agents speak plain HTTP (a warning: their token, the node's credential and
/// its metadata then cross the provisioning network in clear).
fn agent_tls(
    cfg: &DaemonConfig,
    ha: bool,
) -> anyhow::Result<(Option<AgentTls>, Option<netboot::http::HttpsConfig>)> {
    use crate::daemon::api_tls;
    if !cfg.agent.tls_on(ha) {
        tracing::warn!(
            "[agent] tls off: the agents' token, the deploy's credential and the nodes' \
             metadata cross the provisioning network in clear"
        );
        return Ok((None, None));
    }
    let dir = &cfg.netboot.state_dir;
    let e = api_tls::ensure_agent(dir, cfg.netboot.server_ip)
        .context("the agents' HTTPS certificate")?;
    if e.new_server {
        tracing::info!(ip = %cfg.netboot.server_ip, "agents' HTTPS certificate issued");
    }
    let config = api_tls::server_config(&e.files).context("the agents' HTTPS certificate")?;
    let ca_sha256 = api_tls::ca_sha256(&e.ca).context("the seed's CA")?;
    let port = cfg.agent.https_port;
    tracing::info!(port, ca_sha256 = %ca_sha256, "agents call the seed over HTTPS");
    Ok((
        Some(AgentTls { port, ca_sha256 }),
        Some(netboot::http::HttpsConfig { port, config }),
    ))
}

/// Create `dir` (and its parents) 0700 if missing: what the seed keeps there (the store, the
/// DHCP leases) is for its own user only. An existing directory is left as it is (it may be
/// shared, `/var/lib` say), with a warning when others may look into it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", m.permissions().mode() & 0o777),
            "the seed's state directory is open to other users (0700 recommended)"
        ),
        Ok(_) => {}
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?,
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("making {} private ({mode:o})", path.display()))
}

/// Start the etcd member of `[store] member` (Debian's etcd), its log beside its data, joining
/// the control plane first when it says `join` ([`super::ha_join`]), and check it did not exit
/// at once (a port taken, a data directory of another cluster).
fn run_member(cfg: &DaemonConfig) -> anyhow::Result<Option<crate::store::etcd::member::Member>> {
    use crate::store::etcd::member::{etcd_binary, Member};
    let StoreConfig::Etcd { ha, .. } = &cfg.store else {
        return Ok(None);
    };
    let Some(mut spec) = ha.member.as_deref().cloned() else {
        return Ok(None);
    };
    let bin = etcd_binary().context("[store] member")?;
    super::ha_join::resolve(&mut spec, cfg.api.token.expose()).context("[store] member.join")?;
    let mut cmd = spec.command(&bin);
    // SAFETY: prctl(2) in the child before exec: the member gets SIGTERM when the daemon dies,
    // however it dies (a kill -9 included), instead of living on without it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let log = spec.data_dir.with_extension("log");
    let mut m = Member::spawn(spec, cmd, &log).context("starting [store] member")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    m.check().context("[store] member")?;
    tracing::info!(
        name = %m.spec.name,
        client = %m.spec.client_url,
        peer = %m.spec.peer_url,
        log = %log.display(),
        "etcd member started beside the daemon"
    );
    Ok(Some(m))
}

/// The host of `http://HOST:PORT/…` (an advertised API URL).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let hostport = rest.split('/').next()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// A hand-off an earlier run of this daemon left unfinished (it goes on, out of the election),
/// or an error when it finished: a seed that handed over must never answer on the wire again.
fn handoff_before_start(cfg: &DaemonConfig) -> anyhow::Result<Option<HandoffRecord>> {
    let dir = &cfg.netboot.state_dir;
    let Some(r) = handoff::load(dir).with_context(|| format!("reading {}", dir.display()))? else {
        return Ok(None);
    };
    if r.step == HandoffStep::Done {
        anyhow::bail!(
            "this seed handed the control plane over to {} (etcd {}){}: it answers nothing any \
             more. {} records it; a new seed needs a state directory of its own",
            r.successors.join(", "),
            r.endpoints.join(", "),
            r.leader
                .as_ref()
                .map(|l| format!(", {l} leading"))
                .unwrap_or_default(),
            dir.join(handoff::FILE).display()
        );
    }
    if !matches!(cfg.store, StoreConfig::Etcd { .. }) {
        anyhow::bail!(
            "{} records a hand-off under way but the store is not etcd",
            dir.join(handoff::FILE).display()
        );
    }
    Ok(Some(r))
}

/// The daemon's store, and its HA membership when the store is etcd.
type StoreAndMembership = (Arc<dyn Store>, Option<Arc<Ha>>);

/// The daemon's store: the redb file, or (HA) the etcd store fenced by this daemon's term, with
/// its membership. The agent-token key is shared by every daemon: made (once, whoever comes
/// first) through the unfenced client, since a follower's fenced store writes nothing.
fn open_store(
    cfg: &DaemonConfig,
    http_port: u16,
    candidate: bool,
) -> anyhow::Result<StoreAndMembership> {
    match &cfg.store {
        StoreConfig::Redb { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                private_dir(dir)?;
            }
            // BMC passwords sealed with the key file beside the store (`<file>.key`, 0600).
            let store = sealed::open_redb(path)
                .with_context(|| format!("opening the store {}", path.display()))?;
            // The store holds the agent token key and the sealed BMC passwords: the seed's user
            // only.
            set_mode(path, 0o600)?;
            store
                .seal_existing()
                .context("sealing the BMC passwords an older seed stored in clear")?;
            tracing::info!(store = %path.display(), "store: redb");
            Ok((Arc::new(store), None))
        }
        StoreConfig::Etcd { etcd, ha } => {
            let api = match (&ha.advertise, cfg.api.listen) {
                (Some(a), _) => a.clone(),
                (None, Some(l)) if !l.ip().is_unspecified() => format!("http://{l}"),
                _ => format!("http://{}:{http_port}", cfg.netboot.server_ip),
            };
            let member =
                Arc::new(Ha::start_as(etcd, ha, &api, candidate).with_context(|| {
                    format!("joining the store at {}", etcd.endpoints.join(","))
                })?);
            AgentTokens::load_or_create(&member.raw).context("the agent token key")?;
            tracing::info!(endpoints = %etcd.endpoints.join(","), name = %ha.name, "store: etcd");
            Ok((member.store.clone(), Some(member)))
        }
    }
}

/// Each time this daemon starts to lead: take the DHCP leases over, hold the floating address,
/// rebuild the boot table and the agents' commands and re-arm every deadline from the store,
/// and run the stack reconcile loop, all until the term ends (then the address is let go).
async fn leader_duties(
    ha: Arc<Ha>,
    daemon: Arc<Daemon>,
    leases: Arc<StoreLeases>,
    floating: Option<FloatingAddress>,
    stop: CancellationToken,
) {
    ha.duties(stop, move |term| {
        let (d, floating) = (daemon.clone(), floating.clone());
        leases.takeover();
        tokio::spawn(async move {
            // Claimed before the work is re-armed: nodes are sent to the floating address.
            let mut held = None;
            if let Some(f) = floating {
                let (claimed_tx, claimed) = tokio::sync::oneshot::channel();
                held = Some(tokio::spawn(hold_floating(f, claimed_tx, term.clone())));
                let _ = claimed.await;
            }
            let me = d.clone();
            match tokio::task::spawn_blocking(move || me.take_over()).await {
                Ok(Ok(n)) => tracing::info!(deadlines = n, "leading: work re-armed from the store"),
                Ok(Err(e)) => tracing::warn!(error = %e, "taking over from the store"),
                Err(e) => tracing::warn!(error = %e, "taking over from the store"),
            }
            d.spawn_stacks_until(term.clone());
            term.cancelled().await;
            if let Some(held) = held {
                let _ = held.await;
            }
        });
    })
    .await;
}

/// How often a leader checks that its NIC still has the floating address.
const FLOATING_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Hold `f` for the term: claim it (then say so on `claimed`), claim it again whenever
/// something else removed it from the NIC (a DHCP client renewing the machine's own lease
/// flushes the NIC: an undercloud member lost the address five minutes after it took over),
/// and let it go when the term ends.
async fn hold_floating(
    f: FloatingAddress,
    claimed: tokio::sync::oneshot::Sender<()>,
    term: CancellationToken,
) {
    match float_op(&f, FloatingAddress::claim).await {
        Ok(()) => tracing::info!("floating address claimed"),
        Err(e) => tracing::warn!(error = %e, "claiming the floating address"),
    }
    let _ = claimed.send(());
    loop {
        tokio::select! {
            _ = term.cancelled() => break,
            _ = tokio::time::sleep(FLOATING_CHECK) => {}
        }
        if float_op(&f, FloatingAddress::held).await != Ok(false) || term.is_cancelled() {
            continue;
        }
        tracing::warn!(
            address = %f.ip, iface = %f.iface,
            "the floating address was removed from the NIC by something else: claiming it again"
        );
        if let Err(e) = float_op(&f, FloatingAddress::claim).await {
            tracing::warn!(error = %e, "claiming the floating address");
        }
    }
    if let Err(e) = float_op(&f, FloatingAddress::release).await {
        tracing::warn!(error = %e, "releasing the floating address");
    }
}

/// `op` on the floating address off the runtime (it runs `ip`).
async fn float_op<T: Send + 'static>(
    f: &FloatingAddress,
    op: fn(&FloatingAddress) -> Result<T, crate::ha::float::FloatError>,
) -> Result<T, String> {
    let f = f.clone();
    match tokio::task::spawn_blocking(move || op(&f)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
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
