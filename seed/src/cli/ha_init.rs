//! `seed ha init`: a single seed (one redb file) becomes the first member of an HA control
//! plane — the collapsed cluster of one etcd member the undercloud then joins — without losing
//! a record: its state is migrated into an etcd member it will run itself (`[store] member`).
//!
//! Everything that can be checked is checked before anything is touched: the config must name a
//! redb store, and the rewritten config must load (an HTTPS API, not there yet in HA, is refused
//! here rather than at the next start). Then the member is started as a new cluster in
//! `<state_dir>/etcd`, the store (and the DHCP lease file) migrated into it and compared by
//! checksum, the member stopped, and only then is the config file rewritten (the old one kept as
//! `<file>.before-ha-init`). A failure before the rewrite removes the new member's data and
//! leaves the seed as it was.

use crate::daemon::config::DaemonConfig;
use crate::store::config::StoreConfig;
use crate::store::etcd::member::{etcd_binary, wait_ready, Member, MemberSpec};
use crate::store::etcd::{EtcdConfig, EtcdStore};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Make this seed the first member of an HA control plane (a one-member etcd cluster it runs
/// itself); run it with the daemon stopped.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The daemon's config file (`store = "FILE"`): rewritten to `[store] backend = "etcd"`.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The daemon's and its etcd member's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the member answers clients (default: http://<server_ip>:2379).
    #[arg(long, value_name = "URL")]
    pub client_url: Option<String>,
    /// Where the member answers its peers (default: http://<server_ip>:2380).
    #[arg(long, value_name = "URL")]
    pub peer_url: Option<String>,
    /// The daemon's own API URL, where the others forward writes while it leads (`[store]
    /// advertise`; give it with --floating-address, whose address moves).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// The provisioning address the leader holds, IP/PREFIX (`[store] floating_address`):
    /// usually the seed's server_ip, which then follows the lead to the undercloud.
    #[arg(long, value_name = "CIDR")]
    pub floating_address: Option<String>,
}

/// What `[store]` gets besides the member.
#[derive(Debug, Default)]
struct Extra<'a> {
    advertise: Option<&'a str>,
    floating_address: Option<&'a str>,
}

/// `text` with its top-level `store = …` line replaced by a `[store]` table at the end.
fn rewritten(
    text: &str,
    name: &str,
    data_dir: &Path,
    client: &str,
    peer: &str,
    extra: &Extra,
) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("store") && t["store".len()..].trim_start().starts_with('='))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "\n# `seed ha init`: the first member of an HA control plane (a one-member etcd cluster\n\
         # this daemon runs). Others join with `seed ha add`; `seed handoff` leaves it to them.\n\
         [store]\nbackend = \"etcd\"\nendpoints = [{client:?}]\nname = {name:?}\n\
         member = {{ data_dir = {:?}, client_url = {client:?}, peer_url = {peer:?} }}\n",
        data_dir.display().to_string()
    ));
    if let Some(a) = extra.advertise {
        out.push_str(&format!("advertise = {a:?}\n"));
    }
    if let Some(f) = extra.floating_address {
        out.push_str(&format!("floating_address = {f:?}\n"));
    }
    out
}

pub fn run(a: InitArgs) -> Result<()> {
    let path = &a.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = DaemonConfig::load(path).with_context(|| format!("loading {}", path.display()))?;
    let StoreConfig::Redb { path: redb } = &cfg.store else {
        bail!(
            "{}: the store is already etcd: nothing to initialise",
            path.display()
        );
    };
    if !redb.is_file() {
        bail!(
            "{}: no store file (run the daemon once, or import nodes)",
            redb.display()
        );
    }
    let name = a.name.unwrap_or_else(crate::store::config::host_name);
    let ip = cfg.netboot.server_ip;
    let client = a.client_url.unwrap_or(format!("http://{ip}:2379"));
    let peer = a.peer_url.unwrap_or(format!("http://{ip}:2380"));
    let data_dir = cfg.netboot.state_dir.join("etcd");
    if data_dir.exists() {
        bail!(
            "{} exists: an etcd member's data is already there",
            data_dir.display()
        );
    }
    let extra = Extra {
        advertise: a.advertise.as_deref(),
        floating_address: a.floating_address.as_deref(),
    };
    let new_text = rewritten(&text, &name, &data_dir, &client, &peer, &extra);
    DaemonConfig::from_toml(&new_text)
        .with_context(|| format!("{} as an HA seed would not load", path.display()))?;

    std::fs::create_dir_all(&cfg.netboot.state_dir)
        .with_context(|| format!("creating {}", cfg.netboot.state_dir.display()))?;
    let spec = MemberSpec::new(&name, &data_dir, &client, &peer);
    let bin = etcd_binary()?;
    let log = data_dir.with_extension("log");
    let mut member = Member::spawn(spec.clone(), spec.command(&bin), &log)
        .context("starting the seed's etcd member")?;
    let migrated = migrate_into(&cfg, redb, &client, &mut member);
    member.kill();
    if let Err(e) = migrated {
        let _ = std::fs::remove_dir_all(&data_dir);
        return Err(e.context(format!("{} is unchanged", path.display())));
    }
    let backup = path.with_extension("toml.before-ha-init");
    std::fs::copy(path, &backup).with_context(|| format!("keeping {}", backup.display()))?;
    fsutil::write(path, new_text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{name}: the store is now etcd member {name} ({client}, peers {peer}, data {}); \
         the daemon runs it. {} rewritten (was: {}). Start the daemon again.",
        data_dir.display(),
        path.display(),
        backup.display()
    );
    Ok(())
}

/// Wait for the new member, then migrate the redb store (and the lease file) into it.
fn migrate_into(cfg: &DaemonConfig, redb: &Path, client: &str, member: &mut Member) -> Result<()> {
    let store = EtcdStore::connect(&EtcdConfig::new(vec![client.to_string()]))?;
    if let Err(e) = wait_ready(&store, Duration::from_secs(30)) {
        member.check().context("the seed's etcd member")?;
        return Err(e).context("the seed's etcd member does not answer");
    }
    let leases = netboot::dhcp::leases::lease_path(&cfg.netboot.state_dir);
    super::store::migrate(super::store::MigrateArgs {
        from: format!("redb:{}", redb.display()),
        to: format!("etcd:{client}"),
        force: false,
        leases: leases.is_file().then_some(leases),
        etcd: super::store::EtcdArgs {
            prefix: "/seed/".into(),
            ca: None,
            cert: None,
            key: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_line_becomes_a_table_and_the_rest_stays() {
        let text = "# my seed\nstore = \"/var/lib/seed/seed.redb\"\n\n[api]\ntoken = \"t\"\n";
        let out = rewritten(
            text,
            "seed",
            Path::new("/var/lib/seed/etcd"),
            "http://10.0.0.1:2379",
            "http://10.0.0.1:2380",
            &Extra {
                advertise: Some("http://10.0.0.2:6385"),
                floating_address: Some("10.0.0.1/24"),
            },
        );
        assert!(
            out.starts_with("# my seed\n\n[api]\ntoken = \"t\"\n"),
            "{out}"
        );
        assert!(!out.contains("seed.redb"));
        let v: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(v["store"]["backend"].as_str(), Some("etcd"));
        assert_eq!(
            v["store"]["member"]["peer_url"].as_str(),
            Some("http://10.0.0.1:2380")
        );
        assert_eq!(v["api"]["token"].as_str(), Some("t"));
        assert_eq!(v["store"]["floating_address"].as_str(), Some("10.0.0.1/24"));
        assert_eq!(
            v["store"]["advertise"].as_str(),
            Some("http://10.0.0.2:6385")
        );
    }
}
