//! `seed node import FILE`: enroll an instackenv list, into the store or through the daemon.

use super::super::client::Client;
use crate::inventory::{self, Format};
use crate::store::{nodes, Store};
use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Into the store opened here.
pub(super) fn import(store: &dyn Store, file: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let taken: Vec<_> = nodes::list(store)
        .context("reading enrolled nodes")?
        .into_iter()
        .map(|(n, _)| (n.name, n.macs))
        .collect();
    let new = inventory::parse_instackenv(&text, Format::from_path(file), &taken, super::now_ms())
        .with_context(|| format!("{}: nothing enrolled", file.display()))?;
    nodes::create(store, &new).context("enrolling (nothing enrolled)")?;
    let names: Vec<&str> = new.iter().map(|n| n.name.as_str()).collect();
    writeln!(out, "enrolled {} node(s): {}", new.len(), names.join(", "))?;
    Ok(())
}

/// Through the daemon's API: the file as it is, all of it or nothing.
pub(super) fn import_api(c: &Client, file: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ct = match Format::from_path(file) {
        Format::Json => "application/json",
        Format::Yaml => "application/yaml",
    };
    let done: api::node::Enrolled = c
        .post_text("/v1/nodes", ct, &text)
        .with_context(|| format!("{}: nothing enrolled", file.display()))?;
    writeln!(
        out,
        "enrolled {} node(s): {}",
        done.enrolled.len(),
        done.enrolled.join(", ")
    )?;
    Ok(())
}
