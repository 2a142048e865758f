//! `seed appliance …`: what the appliance OS (`cargo xtask appliance`) runs at boot and on its
//! consoles. `config` turns the appliance's short `seed.toml` into the daemon's config, the
//! network script, the operator's password entry and the API token; `status` is the screen on
//! tty1 and the serial console.
//!
//! The boot itself is busybox init (`images/elements/seed-appliance`): its rcS finds the config
//! (kernel command line `seed.config=URL`, the `SEEDCFG` partition, else the defaults) and the
//! state partition, then calls `seed appliance config`; the daemon is a `respawn` service that
//! does not start while `/run/seed/config-error` exists.

pub mod config;
pub mod ha;
pub mod status;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Check the appliance's seed.toml and write the daemon's config, the network script and
    /// the token; on a bad config write the message to RUN/config-error and exit 2.
    Config(ConfigArgs),
    /// Check an appliance seed.toml (as `config` does) and print what it would run with.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// The status screen (tty1, serial): refreshes itself; Enter offers the operator login.
    Status(status::Args),
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// The appliance's seed.toml (none: the built-in defaults).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where it came from, for the console (`SEEDCFG on /dev/sda3`, `seed.config=URL`).
    #[arg(long, default_value = "built-in defaults")]
    source: String,
    /// The bundle's share/ directory (ramdisk, ipxe, images).
    #[arg(long, default_value = "/usr/share/seed")]
    share: PathBuf,
    /// The state directory (store, leases, logs, token).
    #[arg(long, default_value = "/var/lib/seed")]
    state: PathBuf,
    /// Where the state lives, for the console (`persistent on /dev/sda4`, `RAM`).
    #[arg(long, default_value = "RAM")]
    state_place: String,
    /// Run-time directory for the generated files.
    #[arg(long, default_value = "/run/seed")]
    run: PathBuf,
    /// The shadow file to give root's password (none: leave it alone).
    #[arg(long)]
    shadow: Option<PathBuf>,
}

/// What the status screen shows about the configuration (`RUN/appliance.json`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Info {
    pub version: String,
    pub config_source: String,
    pub config_error: Option<String>,
    pub interface: String,
    pub address: String,
    pub api_url: String,
    pub dhcp_mode: String,
    pub state: String,
    pub token_file: String,
    pub login: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Config(a) => run_config(a),
        Cmd::Check { file } => {
            let c = config::load(&file)?;
            println!(
                "{}: ok: provisioning {} on {}, DHCP {} pool {}–{}",
                file.display(),
                c.address,
                c.raw.provisioning.interface,
                c.raw.dhcp.mode.as_str(),
                c.pool.0,
                c.pool.1
            );
            Ok(())
        }
        Cmd::Status(a) => status::run(a),
    }
}

/// `text` as `path` with `mode`, atomically and durably (the status screen and the boot
/// scripts read these files while they change).
fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let mut f = fsutil::AtomicFile::with_mode(path, mode)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.commit())
        .with_context(|| format!("writing {}", path.display()))
}

/// What the status screen shows: `appliance.json` in the run directory.
fn write_info(run: &Path, info: &Info) -> Result<()> {
    write(
        &run.join("appliance.json"),
        &serde_json::to_string_pretty(info)?,
        0o644,
    )
}

fn run_config(a: ConfigArgs) -> Result<()> {
    std::fs::create_dir_all(&a.run).with_context(|| format!("creating {}", a.run.display()))?;
    let error_file = a.run.join("config-error");
    let _ = std::fs::remove_file(&error_file);
    let mut info = Info {
        version: env!("CARGO_PKG_VERSION").into(),
        config_source: a.source.clone(),
        state: a.state_place.clone(),
        token_file: a.state.join("api-token").display().to_string(),
        ..Info::default()
    };
    let checked = match &a.file {
        Some(f) => config::load(f),
        None => config::parse("(built-in defaults)", config::DEFAULT_TOML),
    };
    let c = match checked {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            info.config_error = Some(msg.clone());
            write(&error_file, &format!("{msg}\n"), 0o644)?;
            write_info(&a.run, &info)?;
            eprintln!(
                "seed-appliance: CONFIG ERROR: {msg}\n\
                 seed-appliance: the seed is NOT started (no DHCP, no API). Fix the file and reboot."
            );
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&a.state).with_context(|| format!("creating {}", a.state.display()))?;
    let token = token(&c, &a.state)?;
    let paths = config::Paths {
        share: a.share.display().to_string(),
        state: a.state.display().to_string(),
    };
    write(
        &a.run.join("daemon.toml"),
        &config::daemon_toml(&c, &token, &paths),
        0o600,
    )?;
    write(&a.run.join("network.sh"), &network_script(&c), 0o755)?;
    if let Some(shadow) = &a.shadow {
        set_password(shadow, c.raw.operator.password.as_deref())?;
    }
    info.interface = c.raw.provisioning.interface.clone();
    info.address = c.address.to_string();
    info.api_url = format!("http://{}:6385", c.address.addr);
    info.dhcp_mode = c.raw.dhcp.mode.as_str().into();
    info.login = c.raw.operator.password.is_some();
    write_info(&a.run, &info)?;
    eprintln!(
        "seed-appliance: config from {}: provisioning {} on {}, DHCP {}; state {}",
        a.source,
        c.address,
        c.raw.provisioning.interface,
        c.raw.dhcp.mode.as_str(),
        a.state_place
    );
    Ok(())
}

/// The API token: the config's, else the one kept in the state directory, else a new one
/// (printed once, here, on the console).
fn token(c: &config::Checked, state: &Path) -> Result<String> {
    if let Some(t) = &c.raw.api.token {
        return Ok(t.clone());
    }
    let file = state.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&file) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    use rand::Rng;
    let mut b = [0u8; 20];
    rand::rng().fill_bytes(&mut b);
    let t = hex::encode(b);
    write(&file, &format!("{t}\n"), 0o600)?;
    eprintln!(
        "seed-appliance: ==============================================================\n\
         seed-appliance: API token (generated now, shown this once): {t}\n\
         seed-appliance: kept in {}\n\
         seed-appliance: ==============================================================",
        file.display()
    );
    Ok(t)
}

/// Shell commands that configure the NICs (run by rcS; read it there with `cat`).
fn network_script(c: &config::Checked) -> String {
    let p = &c.raw.provisioning;
    let mut s = format!(
        "#!/bin/sh\n# Generated by `seed appliance config`.\nip link set lo up\n\
         ip link set {0} up\nip addr flush dev {0}\nip addr add {1} dev {0}\n",
        p.interface, c.address
    );
    // Every other NIC not named in the config: a DHCP client in the background (a management
    // network gets its address; a network without DHCP server costs nothing).
    let named: Vec<&str> = std::iter::once(p.interface.as_str())
        .chain(c.raw.interfaces.iter().map(|n| n.name.as_str()))
        .collect();
    s.push_str(&format!(
        "for nic in $(ls /sys/class/net); do\n    case \" lo {} \" in *\" $nic \"*) continue;; esac\n    \
         ip link set \"$nic\" up\n    \
         udhcpc -i \"$nic\" -b -t 5 -S -s /etc/udhcpc.script >/dev/null 2>&1\ndone\n",
        named.join(" ")
    ));
    for nic in &c.raw.interfaces {
        s.push_str(&format!("ip link set {} up\n", nic.name));
        if nic.address == "dhcp" {
            s.push_str(&format!(
                "udhcpc -i {} -b -t 5 -S -s /etc/udhcpc.script >/dev/null 2>&1\n",
                nic.name
            ));
        } else {
            s.push_str(&format!("ip addr add {} dev {}\n", nic.address, nic.name));
        }
    }
    s
}

/// Root's password hash in `shadow` (busybox `mkpasswd`, SHA-512), or a locked entry.
fn set_password(shadow: &Path, password: Option<&str>) -> Result<()> {
    let hash = match password {
        None => "*".to_string(),
        Some(p) => {
            use std::io::Write;
            let mut child = std::process::Command::new("mkpasswd")
                .args(["-m", "sha512"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("running mkpasswd")?;
            child.stdin.take().expect("piped").write_all(p.as_bytes())?;
            let out = child.wait_with_output()?;
            let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
            anyhow::ensure!(
                out.status.success() && h.starts_with('$'),
                "mkpasswd failed"
            );
            h
        }
    };
    let old = std::fs::read_to_string(shadow).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| !l.starts_with("root:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.insert_str(0, &format!("root:{hash}:0:0:99999:7:::\n"));
    write(shadow, &text, 0o600)
}
