//! `seed node show NAME`: everything known about one node (never its BMC password), from the
//! store or the daemon's API.

use super::super::client::Client;
use super::super::table::{self, bytes, mib};
use crate::store::{nodes, Store};
use anyhow::Context;
use api::NodeView;
use std::io::Write;

/// From the store opened here: the view, plus what only the store has.
pub(super) fn show(store: &dyn Store, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let (n, rev) = nodes::get(store, name)
        .with_context(|| format!("reading node {name}"))?
        .with_context(|| format!("no node called {name:?}"))?;
    let mut rows = rows(&crate::daemon::api::node_view(&n));
    // The password is deliberately absent: it is a Secret and prints as ***.
    if let Some((_, bmc)) = rows.iter_mut().find(|(k, _)| *k == "bmc") {
        bmc.push_str(&format!(" password {}", n.bmc.password));
    }
    if let Some(t) = &n.lifecycle.target {
        rows.push(("image", t.image.clone()));
    }
    rows.push(("created", table::date(n.created_ms)));
    rows.push(("updated", table::date(n.updated_ms)));
    rows.push(("revision", rev.to_string()));
    write!(out, "{}", table::fields(&rows))?;
    Ok(())
}

/// From the daemon's API (with the facts its agent reported).
pub(super) fn show_api(c: &Client, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let n: NodeView = c.get(&format!("/v1/nodes/{name}"))?;
    let mut rows = rows(&n);
    rows.push(("updated", table::date(n.updated_ms)));
    write!(out, "{}", table::fields(&rows))?;
    Ok(())
}

fn rows(n: &NodeView) -> Vec<(&'static str, String)> {
    let p = &n.properties;
    let dash = |v: Option<String>| v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let mut rows = vec![("name", n.name.clone()), ("state", n.state.clone())];
    if let Some(r) = &n.reason {
        rows.push(("reason", r.clone()));
    }
    rows.push((
        "maintenance",
        match n.maintenance.as_deref() {
            None => "off".into(),
            Some("") => "on".into(),
            Some(r) => format!("on ({r})"),
        },
    ));
    rows.push(("last error", dash(n.last_error.clone())));
    let macs: Vec<String> = n.macs.iter().map(ToString::to_string).collect();
    rows.push(("macs", macs.join(", ")));
    let b = &n.bmc;
    rows.push((
        "bmc",
        format!("{} {}:{} user {}", b.driver, b.address, b.port, b.username),
    ));
    rows.push(("capabilities", n.capabilities.to_string()));
    rows.push((
        "profile",
        dash(n.capabilities.profile().map(str::to_string)),
    ));
    rows.push(("cpus", dash(p.cpus.map(|c| c.to_string()))));
    rows.push(("memory", dash(p.memory_mib.map(mib))));
    rows.push(("boot mode", dash(p.boot_mode.map(|m| m.to_string()))));
    rows.push(("arch", dash(p.arch.clone())));
    if p.disks.is_empty() {
        rows.push(("disks", "-".into()));
    }
    for (i, d) in p.disks.iter().enumerate() {
        let name = if d.name.is_empty() {
            format!("#{i}")
        } else {
            d.name.clone()
        };
        let mut s = format!("{name} {}", bytes(d.size_bytes));
        if let Some(m) = &d.model {
            s.push_str(&format!(" model {m}"));
        }
        if let Some(sn) = &d.serial {
            s.push_str(&format!(" serial {sn}"));
        }
        rows.push(("disk", s));
    }
    if let Some(f) = &n.facts {
        rows.push(("cpu model", dash(Some(f.cpu_model.clone()))));
        for nic in &f.nics {
            let link = if nic.link { "link up" } else { "no link" };
            rows.push(("nic", format!("{} {} {link}", nic.name, nic.mac)));
        }
    }
    rows
}
