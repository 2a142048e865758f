//! `seed node list`: one line per node, from the store or the daemon's API.

use super::super::client::Client;
use super::super::table::{self, bytes, mib};
use crate::store::{nodes, Store};
use anyhow::Context;
use api::NodeView;
use std::io::Write;

/// From the store opened here.
pub(super) fn list(store: &dyn Store, out: &mut dyn Write) -> anyhow::Result<()> {
    let all = nodes::list(store).context("reading nodes")?;
    let views: Vec<NodeView> = all
        .iter()
        .map(|(n, _)| crate::daemon::api::node_view(n))
        .collect();
    print(&views, out)
}

/// From the daemon's API.
pub(super) fn list_api(c: &Client, out: &mut dyn Write) -> anyhow::Result<()> {
    let all: Vec<NodeView> = c.get("/v1/nodes")?;
    print(&all, out)
}

fn print(all: &[NodeView], out: &mut dyn Write) -> anyhow::Result<()> {
    if all.is_empty() {
        writeln!(out, "no nodes enrolled (seed node import FILE)")?;
        return Ok(());
    }
    let mut rows = vec![table::header(&[
        "NAME",
        "STATE",
        "MAINT",
        "MACS",
        "BMC",
        "PROFILE",
        "CPU",
        "RAM",
        "DISK",
        "LAST ERROR",
    ])];
    for n in all {
        let p = &n.properties;
        let disks = p.disk_bytes();
        rows.push(vec![
            n.name.clone(),
            n.state.clone(),
            match &n.maintenance {
                Some(r) if !r.is_empty() => format!("yes: {r}"),
                Some(_) => "yes".into(),
                None => String::new(),
            },
            n.macs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            format!("{}:{}", n.bmc.address, n.bmc.port),
            n.capabilities.profile().unwrap_or("-").to_string(),
            p.cpus.map_or("-".into(), |c| c.to_string()),
            p.memory_mib.map_or("-".into(), mib),
            if p.disks.is_empty() {
                "-".into()
            } else {
                bytes(disks)
            },
            n.last_error.clone().unwrap_or_default(),
        ]);
    }
    write!(out, "{}", table::table(&rows))?;
    Ok(())
}
