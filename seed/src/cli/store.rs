//! `seed store migrate --from redb:FILE --to etcd:URL[,URL…]` (and back): the whole state of a
//! seed moved between stores, checked by a checksum ([`crate::store::migrate`]).
//!
//! Run it with the daemons stopped: a redb file that a daemon holds is refused (redb's lock
//! says so), and an etcd source must not change while it is read. A destination that holds any
//! record is refused unless `--force` (which deletes the destination's records first). An empty
//! source is refused (a wrong path or prefix would otherwise wipe a `--force`d destination).

use crate::store::etcd::{EtcdConfig, EtcdStore, TlsFiles};
use crate::store::migrate::{self, MigrateError, Summary};
use crate::store::redb::RedbStore;
use crate::store::sealed::{self, SealKey};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Move the seed's state between stores.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every record of every table (nodes, stacks and their events, metadata, signals,
    /// credentials, the agent-token key, DHCP leases, …) from one store into another, and check
    /// a sha256 over every (table, key, value) of the source before and of the destination
    /// after. Stop the daemons first.
    Migrate(MigrateArgs),
    /// Print a store's tables, record counts and checksum (what `migrate` compares).
    Checksum {
        /// `redb:FILE` or `etcd:URL[,URL…]`.
        store: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The source: `redb:FILE` or `etcd:URL[,URL…]`.
    #[arg(long, value_name = "STORE")]
    pub from: String,
    /// The destination: `etcd:URL[,URL…]` or `redb:FILE` (created if missing).
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// Delete every record the destination holds before copying into it.
    #[arg(long)]
    pub force: bool,
    /// A single seed's DHCP lease file (`<[netboot] state_dir>/dhcp-leases.json`) to carry into the
    /// destination's `dhcp-leases` table (where daemons on etcd keep their leases).
    #[arg(long, value_name = "FILE")]
    pub leases: Option<PathBuf>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// How to reach etcd (for an `etcd:` store).
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// The key prefix of the seed's records in etcd (`[store] prefix`).
    #[arg(long, default_value = "/seed/")]
    pub prefix: String,
    /// Client TLS for https:// endpoints: the CA, this client's certificate and key.
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires_all = ["ca", "key"])]
    pub cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires_all = ["ca", "cert"])]
    pub key: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        StoreCommand::Migrate(a) => migrate(a),
        StoreCommand::Checksum { store, etcd } => {
            let s = open(&store, &etcd, Role::Source)?;
            let sum = migrate::checksum(&*s).with_context(|| format!("reading {store}"))?;
            print_summary(&store, &sum);
            Ok(())
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Source,
    Destination,
}

/// Open `redb:FILE` or `etcd:URL,…`.
fn open(spec: &str, etcd: &EtcdArgs, role: Role) -> Result<Box<dyn Store>> {
    if let Some(path) = spec.strip_prefix("redb:") {
        let path = PathBuf::from(path);
        if role == Role::Source && !path.is_file() {
            bail!("{}: no such store file", path.display());
        }
        // BMC passwords are sealed with the key file beside a redb store: read through it
        // (etcd keeps them as the daemons read them), and seal what a redb destination gets.
        let opened: Result<Box<dyn Store>, _> =
            if role == Role::Destination || SealKey::path_for(&path).is_file() {
                sealed::open_redb(&path).map(|s| Box::new(s) as Box<dyn Store>)
            } else {
                RedbStore::open(&path).map(|s| Box::new(s) as Box<dyn Store>)
            };
        return match opened {
            Ok(s) => Ok(s),
            Err(e) if RedbStore::is_locked(&e) => bail!(
                "{} is open in another process (a running seed daemon?): stop it first, \
                 a store is migrated while nobody writes to it",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
        };
    }
    if let Some(urls) = spec.strip_prefix("etcd:") {
        let endpoints: Vec<String> = urls
            .split(',')
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        if endpoints.is_empty()
            || endpoints
                .iter()
                .any(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            bail!("{spec}: expected etcd:http://HOST:2379[,http://HOST:2379…]");
        }
        let mut cfg = EtcdConfig::new(endpoints);
        cfg.prefix = etcd.prefix.clone();
        if let (Some(ca), Some(cert), Some(key)) = (&etcd.ca, &etcd.cert, &etcd.key) {
            cfg.tls = Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        let s = EtcdStore::connect(&cfg).with_context(|| format!("connecting to {spec}"))?;
        return Ok(Box::new(s));
    }
    bail!("{spec}: a store is redb:FILE or etcd:URL[,URL…]")
}

pub(crate) fn migrate(a: MigrateArgs) -> Result<()> {
    if a.from == a.to {
        bail!("--from and --to name the same store");
    }
    let from = open(&a.from, &a.etcd, Role::Source)?;
    let to = open(&a.to, &a.etcd, Role::Destination)?;
    let mut source: &dyn Store = &*from;
    // With a lease file, the state to move is the source plus one record: staged in memory.
    let staged;
    if let Some(file) = &a.leases {
        staged = with_leases(&*from, file)?;
        source = &staged;
    }
    let before = migrate::checksum(source).with_context(|| format!("reading {}", a.from))?;
    print_summary(&format!("source {}", a.from), &before);
    if before.records == 0 {
        bail!("{} holds no record: nothing to migrate", a.from);
    }
    if a.force {
        let n = migrate::clear(&*to).with_context(|| format!("clearing {}", a.to))?;
        if n > 0 {
            println!("--force: deleted {n} records of {}", a.to);
        }
    }
    let copied = match migrate::copy(source, &*to) {
        Ok(s) => s,
        Err(MigrateError::NotEmpty(t)) => bail!(
            "{} already holds records (table {t:?}): refusing to mix two states; \
             --force deletes the destination's records first",
            a.to
        ),
        Err(e @ MigrateError::Mismatch { .. }) => {
            return Err(anyhow::Error::new(e).context(format!(
                "the copy in {} is NOT the source's state: do not use it",
                a.to
            )))
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("copying {} into {}", a.from, a.to)))
        }
    };
    let after = migrate::checksum(&*to).with_context(|| format!("reading back {}", a.to))?;
    print_summary(&format!("destination {}", a.to), &after);
    if after.checksum != copied.checksum {
        bail!(
            "checksums differ: {} before, {} after: the destination is NOT the source's state",
            copied.checksum,
            after.checksum
        );
    }
    println!(
        "migrated {} records in {} tables: checksums equal",
        after.records,
        after.tables.len()
    );
    Ok(())
}

/// `from` and the lease file's table as `dhcp-leases/table`, in memory.
fn with_leases(from: &dyn Store, file: &std::path::Path) -> Result<crate::store::memory::MemStore> {
    use crate::ha::leases::{KEY, TABLE};
    if !file.is_file() {
        bail!("{}: no such lease file", file.display());
    }
    let table = netboot::dhcp::leases::load(file)
        .with_context(|| format!("reading the lease file {}", file.display()))?;
    let staged = crate::store::memory::MemStore::new();
    migrate::copy(from, &staged).context("reading the source")?;
    if staged.get(TABLE, KEY)?.is_some() {
        bail!("the source already holds {TABLE}/{KEY}: --leases would replace it");
    }
    let body = serde_json::to_vec(&table.snapshot()).context("encoding the leases")?;
    staged.put(TABLE, KEY, body, crate::store::Expect::Absent)?;
    println!("{} DHCP leases from {}", table.len(), file.display());
    Ok(staged)
}

fn print_summary(what: &str, s: &Summary) {
    println!(
        "{what}: {} records, {} bytes in {} tables",
        s.records,
        s.bytes,
        s.tables.len()
    );
    for (t, n) in &s.tables {
        println!("  {t:<24} {n}");
    }
    println!("  sha256 {}", s.checksum);
}
