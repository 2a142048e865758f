//! `seed node delete|maintenance`: changes made in the store opened here.

use crate::lifecycle::{self, Event, Timeouts};
use crate::store::{nodes, Store};
use anyhow::{bail, Context};
use std::io::Write;

fn get(store: &dyn Store, name: &str) -> anyhow::Result<(crate::inventory::Node, u64)> {
    nodes::get(store, name)
        .with_context(|| format!("reading node {name}"))?
        .with_context(|| format!("no node called {name:?}"))
}

/// Forget a node; refused while it is deployed or busy, unless it is in maintenance.
pub(super) fn delete(store: &dyn Store, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let (n, rev) = get(store, name)?;
    let s = &n.lifecycle.state;
    if (s.is_busy() || *s == lifecycle::State::Active) && n.lifecycle.maintenance.is_none() {
        bail!(
            "node {name} is {}: undeploy it first, or put it in maintenance to force",
            s.name()
        );
    }
    nodes::delete(store, &n, rev).with_context(|| format!("deleting node {name}"))?;
    writeln!(out, "deleted node {name}")?;
    Ok(())
}

/// Put a node in maintenance (no action touches it) or take it out.
pub(super) fn maintenance(
    store: &dyn Store,
    name: &str,
    on: bool,
    reason: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Read-modify-write with compare-and-swap; retry a few times if another writer got there
    // first.
    for _ in 0..5 {
        let (mut n, rev) = get(store, name)?;
        let event = Event::Maintenance {
            on,
            reason: reason.clone(),
        };
        lifecycle::step(&mut n, event, super::now_ms(), &Timeouts::default())
            .with_context(|| format!("node {name}"))?;
        match nodes::update(store, &n, rev) {
            Ok(_) => {
                writeln!(
                    out,
                    "node {name}: maintenance {}",
                    if on { "on" } else { "off" }
                )?;
                return Ok(());
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e).with_context(|| format!("saving node {name}")),
        }
    }
    bail!("node {name} kept changing under us; try again")
}
