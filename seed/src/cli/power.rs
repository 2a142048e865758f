//! `seed power` and `seed bootdev`: drive one machine's BMC over IPMI.
//!
//! The BMC comes from `--bmc HOST[:PORT]`, or from a lab node's entry in the lab's `lab.json`
//! (see the lab contract); credentials from `-U`/`-P` (or `SEED_BMC_PASSWORD`), else the lab's.
//! Output is one line; passwords are never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::power::{BootDevice, IpmiConfig, IpmiDriver, Password, PowerAction, PowerDriver};

/// The standard IPMI-over-LAN port.
const IPMI_PORT: u16 = 623;

/// Which BMC, as whom, and how patiently.
#[derive(Debug, clap::Args)]
pub struct BmcArgs {
    /// Lab node whose BMC to use (from the lab's lab.json).
    pub node: Option<String>,
    /// Address the BMC directly: HOST[:PORT] (port 623 by default).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "node")]
    pub bmc: Option<String>,
    /// BMC user name (default: the lab's, else "admin").
    #[arg(short = 'U', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// BMC password (default: the lab's). Prefer the environment variable.
    #[arg(
        short = 'P',
        long = "password",
        value_name = "PASS",
        env = "SEED_BMC_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Password>,
    /// Seconds to wait for each answer.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub timeout: f64,
    /// Attempts after the first one when the BMC does not answer.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
    /// Lab name (labs live in $SEED_LAB_DIR, else $XDG_STATE_HOME/seed/labs).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub lab: String,
    /// Lab directory (overrides --lab).
    #[arg(long, visible_alias = "dir", value_name = "DIR")]
    pub lab_dir: Option<PathBuf>,
}

/// What `seed power` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PowerVerb {
    /// Power up.
    On,
    /// Hard power off.
    Off,
    /// Graceful (ACPI) shutdown.
    Soft,
    /// Power off then on.
    Cycle,
    /// Hard reset.
    Reset,
    /// Print the chassis power state.
    Status,
}

/// Arguments of `seed power`.
#[derive(Debug, clap::Args)]
pub struct PowerArgs {
    /// on | off | soft | cycle | reset | status
    #[arg(value_enum)]
    pub verb: PowerVerb,
    #[command(flatten)]
    pub bmc: BmcArgs,
}

/// The device `seed bootdev` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Pxe,
    Disk,
    Cdrom,
    Bios,
}

impl From<DeviceArg> for BootDevice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Pxe => BootDevice::Pxe,
            DeviceArg::Disk => BootDevice::Disk,
            DeviceArg::Cdrom => BootDevice::Cdrom,
            DeviceArg::Bios => BootDevice::Bios,
        }
    }
}

/// Arguments of `seed bootdev`.
#[derive(Debug, clap::Args)]
pub struct BootdevArgs {
    /// pxe | disk | cdrom | bios
    #[arg(value_enum)]
    pub device: DeviceArg,
    /// Keep this device for every boot, not only the next one.
    #[arg(long)]
    pub persistent: bool,
    #[command(flatten)]
    pub bmc: BmcArgs,
}

pub fn run_power(args: PowerArgs) -> anyhow::Result<()> {
    let (who, driver) = resolve(&args.bmc)?;
    let line = runtime()?.block_on(async {
        let result = power_line(&who, &driver, args.verb).await;
        // Free the BMC's session slot whatever happened (ipmi-rs never closes sessions).
        driver.close().await;
        result
    })?;
    println!("{line}");
    Ok(())
}

async fn power_line(who: &Who, driver: &IpmiDriver, verb: PowerVerb) -> anyhow::Result<String> {
    let (action, what) = match verb {
        PowerVerb::Status => {
            let state = driver.status().await?;
            return Ok(match who {
                Who::Node(n) => format!("{n}: power {state}"),
                Who::Bmc(_) => format!("chassis power is {state}"),
            });
        }
        PowerVerb::On => (PowerAction::On, "power on"),
        PowerVerb::Off => (PowerAction::Off, "power off"),
        PowerVerb::Soft => (PowerAction::SoftOff, "soft power off"),
        PowerVerb::Cycle => (PowerAction::Cycle, "power cycle"),
        PowerVerb::Reset => (PowerAction::Reset, "reset"),
    };
    driver.power(action).await?;
    Ok(format!("{}: {what} requested", who.name()))
}

pub fn run_bootdev(args: BootdevArgs) -> anyhow::Result<()> {
    let (who, driver) = resolve(&args.bmc)?;
    let device = BootDevice::from(args.device);
    runtime()?.block_on(async {
        let result = driver.set_boot_device(device, args.persistent).await;
        driver.close().await;
        result
    })?;
    let when = if args.persistent {
        "every boot"
    } else {
        "next boot"
    };
    println!("{}: boot device {device} ({when})", who.name());
    Ok(())
}

/// Whom the output line names.
enum Who {
    Node(String),
    Bmc(String),
}

impl Who {
    fn name(&self) -> &str {
        match self {
            Who::Node(n) | Who::Bmc(n) => n,
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn resolve(args: &BmcArgs) -> anyhow::Result<(Who, IpmiDriver)> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 600.0) {
        bail!("--timeout must be between 0 and 600 seconds");
    }
    let (who, host, port, lab_user, lab_password) = match (&args.bmc, &args.node) {
        (Some(bmc), _) => {
            let (host, port) = split_host_port(bmc)?;
            (Who::Bmc(format!("{host}:{port}")), host, port, None, None)
        }
        (None, Some(node)) => {
            let dir = lab_dir(args);
            let lab = LabFile::load(&dir)?;
            let n = lab
                .nodes
                .iter()
                .find(|n| &n.name == node)
                .with_context(|| {
                    let names: Vec<_> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
                    format!(
                        "no node {node:?} in lab {:?} ({}); nodes: {}",
                        lab.name,
                        dir.display(),
                        names.join(", ")
                    )
                })?;
            (
                Who::Node(n.name.clone()),
                n.bmc.address.clone(),
                n.bmc.port,
                Some(n.bmc.username.clone()),
                Some(n.bmc.password.clone()),
            )
        }
        (None, None) => bail!("name a lab NODE or give --bmc HOST[:PORT]"),
    };
    let user = args
        .user
        .clone()
        .or(lab_user)
        .unwrap_or_else(|| "admin".to_string());
    let password = match (&args.password, lab_password) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => Password::new(p),
        (None, None) => bail!("no BMC password: give -P PASS or set SEED_BMC_PASSWORD"),
    };
    let mut cfg = IpmiConfig::new(host, port, user, password);
    cfg.timeout = Duration::from_secs_f64(args.timeout);
    cfg.retries = args.retries;
    Ok((who, IpmiDriver::new(cfg)))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let bad = || format!("invalid --bmc {s:?}: expected HOST[:PORT]");
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').with_context(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().with_context(bad)?,
            None if tail.is_empty() => IPMI_PORT,
            None => bail!(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !host.is_empty() => {
            Ok((host.to_string(), port.parse().with_context(bad)?))
        }
        Some(_) if s.parse::<std::net::Ipv6Addr>().is_ok() => Ok((s.to_string(), IPMI_PORT)),
        Some(_) => bail!(bad()),
        None if s.is_empty() => bail!(bad()),
        None => Ok((s.to_string(), IPMI_PORT)),
    }
}

/// The lab directory, as the lab contract defines it.
fn lab_dir(args: &BmcArgs) -> PathBuf {
    if let Some(d) = &args.lab_dir {
        return d.clone();
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(root) = env("SEED_LAB_DIR") {
        return root.join(&args.lab);
    }
    let state = env("XDG_STATE_HOME").unwrap_or_else(|| {
        env("HOME")
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".local/state")
    });
    state.join("seed/labs").join(&args.lab)
}

/// The parts of `lab.json` this command reads (the lab work owns the full format).
#[derive(Debug, Deserialize)]
struct LabFile {
    #[serde(default)]
    name: String,
    nodes: Vec<LabNode>,
}

#[derive(Debug, Deserialize)]
struct LabNode {
    name: String,
    bmc: LabBmc,
}

#[derive(Deserialize)]
struct LabBmc {
    address: String,
    port: u16,
    #[serde(default = "default_user")]
    username: String,
    #[serde(default = "default_password")]
    password: String,
}

impl std::fmt::Debug for LabBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabBmc")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn default_user() -> String {
    "admin".into()
}

fn default_password() -> String {
    "password".into()
}

impl LabFile {
    fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("lab.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is the lab created?)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("127.0.0.1:6231").unwrap(),
            ("127.0.0.1".into(), 6231)
        );
        assert_eq!(split_host_port("bmc7").unwrap(), ("bmc7".into(), 623));
        assert_eq!(split_host_port("[::1]:700").unwrap(), ("::1".into(), 700));
        assert_eq!(split_host_port("[::1]").unwrap(), ("::1".into(), 623));
        assert_eq!(split_host_port("fe80::1").unwrap(), ("fe80::1".into(), 623));
        assert!(split_host_port("host:notaport").is_err());
        assert!(split_host_port("").is_err());
        assert!(split_host_port(":623").is_err());
    }

    #[test]
    fn lab_json_of_the_contract_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lab.json"),
            r#"{
              "name": "default",
              "wire": { "group": "230.0.71.5", "port": 47123 },
              "nodes": [
                {
                  "name": "node1",
                  "macs": ["52:54:00:5e:00:01"],
                  "bmc": { "address": "127.0.0.1", "port": 6231, "username": "admin", "password": "password" },
                  "firmware": "bios",
                  "memory_mib": 512, "cpus": 1, "disks_gib": [4]
                }
              ]
            }"#,
        )
        .unwrap();
        let lab = LabFile::load(dir.path()).unwrap();
        assert_eq!(lab.nodes[0].name, "node1");
        assert_eq!(lab.nodes[0].bmc.port, 6231);
        assert_eq!(lab.nodes[0].bmc.password, "password");
        assert!(!format!("{lab:?}").contains("\"password\""));
    }
}
