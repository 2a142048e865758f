//! Command-line front end: one module per top-level subcommand, each with its clap `Args` and a
//! `run` that returns `anyhow::Result` (context on every error, printed once by `main`).

pub mod appliance;
pub mod bundle;
pub mod ca;
pub mod client;
pub mod daemon;
pub mod ha;
pub mod ha_init;
pub mod ha_join;
pub mod handoff;
pub mod image;
#[cfg(feature = "lab")]
pub mod lab;
#[cfg(feature = "lab")]
pub mod lab_seed;
#[cfg(feature = "lab")]
pub mod lab_seedcfg;
#[cfg(feature = "lab")]
pub mod lab_up;
pub mod netboot;
pub mod node;
pub mod power;
pub mod stack;
pub mod stall;
pub mod store;
pub mod table;
pub mod token;

use clap::{Parser, Subcommand};

/// seed — a bare-metal bootstrap appliance.
///
/// Netboot (DHCP, TFTP, HTTP/iPXE), power machines through their BMCs, deploy golden images
/// and configure nodes. Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
#[derive(Debug, Parser)]
#[command(name = "seed", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DHCP / ProxyDHCP, TFTP and HTTP boot from a config file (a standalone PXE server).
    Netboot(netboot::Args),
    /// Power a machine on, off, cycle it, or read its power state, through its BMC.
    Power(power::PowerArgs),
    /// Choose the device a machine boots from next (pxe, disk, cdrom), through its BMC.
    Bootdev(power::BootdevArgs),
    /// A virtual datacenter of QEMU nodes with virtual BMCs on this machine.
    #[cfg(feature = "lab")]
    Lab(lab::Args),
    /// Enroll machines (instackenv file), list and show them, delete, set maintenance.
    Node(node::Args),
    /// The CA of the daemon's HTTPS API: `ca export` prints it, for clients to pin (`--ca`).
    Ca(ca::Args),
    /// Run the seed: store, lifecycle, netboot with a node-state boot policy, agent and REST API.
    Daemon(daemon::Args),
    /// Create, update, delete and look at stacks (Heat-style templates) on a running seed.
    Stack(stack::Args),
    /// The state store: `store migrate --from redb:FILE --to etcd:URL` (and back), `store checksum`.
    Store(store::Args),
    /// Golden images in the seed's store: list, show, import (verified), delete.
    Image(image::Args),
    /// Hand the seed's place in the HA control plane over to the undercloud, then switch off.
    Handoff(handoff::Args),
    /// The HA control plane's etcd members and daemons: list, add before starting, remove.
    Ha(ha::Args),
    /// Named API tokens with roles (admin, operator, reader) on a running seed.
    Token(token::Args),
    /// The appliance bundle (`cargo xtask bundle`): `bundle verify` checks an unpacked one.
    Bundle(bundle::Args),
    /// What the appliance OS runs (`cargo xtask appliance`): `config` at boot, `status` on its consoles.
    Appliance(appliance::Args),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Netboot(args) => netboot::run(args),
        Command::Power(args) => power::run_power(args),
        Command::Bootdev(args) => power::run_bootdev(args),
        #[cfg(feature = "lab")]
        Command::Lab(args) => lab::run(args),
        Command::Node(args) => node::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Stack(args) => stack::run(args),
        Command::Store(args) => store::run(args),
        Command::Image(args) => image::run(args),
        Command::Handoff(args) => handoff::run(args),
        Command::Ha(args) => ha::run(args),
        Command::Token(args) => token::run(args),
        Command::Bundle(args) => bundle::run(args),
        Command::Appliance(args) => appliance::run(args),
    }
}

/// Log to stderr, one line per event, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ipmi_rs=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A token cancelled on SIGINT or SIGTERM: how the long-running commands stop cleanly. Call it
/// inside the tokio runtime.
pub(crate) fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = tokio_util::sync::CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
