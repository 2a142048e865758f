//! `seed ha members|add|remove`: the HA control plane's etcd membership and its daemons, a
//! client of `/v1/ha/members` ([`crate::ha::members`]).

use super::client::{Client, ClientArgs};
use super::table::{self, table};
use ::api::ha::{MemberAdded, MemberRequest, MemberView, Membership};
use anyhow::Context;
use std::io::Write;

/// The HA control plane: its etcd members and daemons; add a member before starting it, remove
/// a dead one. (Hand a seed over with `seed handoff`.)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: HaCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum HaCommand {
    /// Make a single seed (one redb file) the first member of an HA control plane: its state
    /// migrated into a one-member etcd cluster the daemon then runs itself. Daemon stopped.
    Init(super::ha_init::InitArgs),
    /// The etcd members (name, id, peer and client URLs) and the daemons (leader marked).
    Members,
    /// Add an etcd member that will answer its peers at PEER_URL, then print how to start it.
    Add {
        /// Its name: also its seed daemon's `[store] name`.
        name: String,
        /// e.g. http://10.0.1.2:2380
        #[arg(long)]
        peer_url: String,
    },
    /// Remove an etcd member (dead, being replaced) by name or hex id.
    Remove { name: String },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let HaCommand::Init(a) = args.command {
        return super::ha_init::run(a);
    }
    let c = args.client.client()?;
    run_with(&c, args.command, &mut std::io::stdout().lock())
}

pub fn run_with(c: &Client, cmd: HaCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        HaCommand::Init(a) => super::ha_init::run(a)?,
        HaCommand::Members => {
            let m: Membership = c.get("/v1/ha/members")?;
            let mut rows = vec![table::header(&["MEMBER", "ID", "ROLE", "PEER", "CLIENT"])];
            for v in &m.members {
                rows.push(vec![
                    if v.name.is_empty() {
                        "(not started)".into()
                    } else {
                        v.name.clone()
                    },
                    v.id.clone(),
                    if v.learner { "learner" } else { "voter" }.into(),
                    v.peer_urls.join(","),
                    v.client_urls.join(","),
                ]);
            }
            write!(out, "{}", table(&rows))?;
            let mut rows = vec![table::header(&["DAEMON", "API", "ROLE"])];
            for d in &m.daemons {
                rows.push(vec![
                    d.name.clone(),
                    d.api.clone(),
                    if d.leader { "leader" } else { "follower" }.into(),
                ]);
            }
            writeln!(out)?;
            write!(out, "{}", table(&rows))?;
        }
        HaCommand::Add { name, peer_url } => {
            let req = MemberRequest {
                name: name.clone(),
                peer_url,
            };
            let a: MemberAdded = c
                .post("/v1/ha/members", &req)
                .with_context(|| format!("adding etcd member {name:?}"))?;
            writeln!(
                out,
                "{} added (id {}): start it now with\n  etcd --name {} --initial-cluster {} \
                 --initial-cluster-state {} …",
                a.name, a.id, a.name, a.initial_cluster, a.initial_cluster_state
            )?;
        }
        HaCommand::Remove { name } => {
            let v: MemberView = c
                .delete(&format!("/v1/ha/members/{name}"))
                .with_context(|| format!("removing etcd member {name:?}"))?;
            writeln!(out, "{} (id {}): removed", v.name, v.id)?;
        }
    }
    Ok(())
}
