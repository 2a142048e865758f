//! `seed stack create|update|replace|delete|show|list|events`: a client of the daemon's `/v1/stacks`
//! API (like `seed node inspect`); `--wait` follows the stack with a spinner showing each
//! member's state until it completes or fails.

use super::client::{Client, ClientArgs};
use super::table::{self, table};
use anyhow::Context;
use api::stack::{ReplaceRequest, StackEvent, StackRequest, StackView};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Create, update, delete and look at stacks (Heat-style templates) on a running seed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StackCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum StackCommand {
    /// Create a stack from a template: `-f overcloud.yaml -P compute_count=3`.
    Create(Change),
    /// Update a stack to a new template and/or parameters; only what changed is redone.
    Update(Change),
    /// Move one server to another free node matching it (its machine died, or is retired),
    /// keeping its name and metadata; its node is released and cleaned, and what depends on it
    /// (its deployments) is done again on the new node.
    Replace {
        /// The stack's name.
        name: String,
        /// The server: its member name (`members-0`) or its node's name.
        member: String,
        /// Wait (at most this many seconds) until the stack completes or fails.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "3600")]
        wait: Option<u64>,
    },
    /// Delete a stack: its nodes are released and cleaned.
    Delete {
        name: String,
        /// Wait (at most this many seconds) until the stack is gone.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "3600")]
        wait: Option<u64>,
    },
    /// Status, members (member → node → state) and outputs of one stack.
    Show { name: String },
    /// One line per stack.
    List,
    /// A stack's events, oldest first.
    Events { name: String },
}

#[derive(Debug, clap::Args)]
pub struct Change {
    /// The stack's name.
    pub name: String,
    /// The template file.
    #[arg(short = 'f', long = "template", value_name = "FILE")]
    pub template: PathBuf,
    /// A parameter, `key=value` (repeatable).
    #[arg(short = 'P', long = "parameter", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Wait (at most this many seconds) until the stack completes or fails.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "3600")]
    pub wait: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let c = args.client.client()?;
    match args.command {
        StackCommand::Create(ch) => change(&c, ch, true),
        StackCommand::Update(ch) => change(&c, ch, false),
        StackCommand::Replace { name, member, wait } => {
            let body = ReplaceRequest {
                member: member.clone(),
            };
            let _: StackView = c.post(&format!("/v1/stacks/{name}/replace"), &body)?;
            println!("{name}: replacing {member} requested");
            match wait {
                Some(secs) => follow(&c, &name, secs, false),
                None => Ok(()),
            }
        }
        StackCommand::Delete { name, wait } => {
            let _: StackView = c.delete(&format!("/v1/stacks/{name}"))?;
            println!("{name}: delete requested");
            if let Some(secs) = wait {
                follow(&c, &name, secs, true)?;
            }
            Ok(())
        }
        StackCommand::Show { name } => {
            let s = stack(&c, &name)?.with_context(|| format!("no stack named {name:?}"))?;
            print!("{}", show(&s));
            Ok(())
        }
        StackCommand::List => {
            let all: Vec<StackView> = c.get("/v1/stacks")?;
            let mut rows = vec![table::header(&["NAME", "STATUS", "MEMBERS", "REASON"])];
            for s in &all {
                rows.push(vec![
                    s.name.clone(),
                    s.status.clone(),
                    s.members.len().to_string(),
                    s.reason.clone(),
                ]);
            }
            print!("{}", table(&rows));
            Ok(())
        }
        StackCommand::Events { name } => {
            let events: Vec<StackEvent> = c
                .get_opt(&format!("/v1/stacks/{name}/events"))?
                .with_context(|| format!("no stack named {name:?}"))?;
            for e in events {
                println!(
                    "{:>5}  {}  {:<24} {:<20} {}",
                    e.id,
                    when(e.time_ms),
                    e.resource,
                    e.status,
                    e.reason
                );
            }
            Ok(())
        }
    }
}

fn change(c: &Client, ch: Change, create: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&ch.template)
        .with_context(|| format!("reading {}", ch.template.display()))?;
    let mut params = BTreeMap::new();
    for p in &ch.params {
        let (k, v) = crate::template::split_assignment(p)
            .with_context(|| format!("-P {p:?}: want key=value"))?;
        anyhow::ensure!(
            params.insert(k.to_string(), v.to_string()).is_none(),
            "-P {k} is given twice"
        );
    }
    let body = StackRequest {
        name: ch.name.clone(),
        file: ch.template.display().to_string(),
        template: text,
        params,
    };
    let _: StackView = if create {
        c.post("/v1/stacks", &body)?
    } else {
        c.put(&format!("/v1/stacks/{}", ch.name), &body)?
    };
    println!(
        "{}: {} requested",
        ch.name,
        if create { "create" } else { "update" }
    );
    match ch.wait {
        Some(secs) => follow(c, &ch.name, secs, false),
        None => Ok(()),
    }
}

/// One stack; `None` if there is none of that name.
fn stack(c: &Client, name: &str) -> anyhow::Result<Option<StackView>> {
    c.get_opt(&format!("/v1/stacks/{name}"))
}

/// Poll the stack with a spinner until it is no longer in progress (or gone, for a delete).
fn follow(c: &Client, name: &str, secs: u64, gone_ok: bool) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    loop {
        let Some(s) = c.get_opt_patient::<StackView>(&format!("/v1/stacks/{name}"))? else {
            bar.finish_and_clear();
            anyhow::ensure!(gone_ok, "{name} disappeared");
            println!("{name}: deleted after {} s", start.elapsed().as_secs());
            return Ok(());
        };
        let members: Vec<String> = s
            .members
            .iter()
            .filter_map(|m| Some(format!("{}:{}", m.name, m.node_state.as_deref()?)))
            .collect();
        bar.set_message(format!(
            "{name}: {} ({}s) {}",
            s.status,
            start.elapsed().as_secs(),
            members.join(" ")
        ));
        if !s.status.ends_with("_IN_PROGRESS") {
            bar.finish_and_clear();
            print!("{}", show(&s));
            anyhow::ensure!(!s.status.ends_with("_FAILED"), "{name}: {}", s.reason);
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < secs,
            "{name} is still {} after {secs} s",
            s.status
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `seed stack show`: status, members and outputs.
pub fn show(s: &StackView) -> String {
    let mut out = format!(
        "stack:    {}\nstatus:   {}\nreason:   {}\n",
        s.name, s.status, s.reason
    );
    let mut rows = vec![table::header(&["MEMBER", "STATUS", "NODE", "NODE STATE"])];
    for m in &s.members {
        rows.push(vec![
            m.name.clone(),
            m.status.clone(),
            m.node.clone().unwrap_or_else(|| "-".into()),
            m.node_state.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&table(&rows));
    if let Some(outputs) = &s.outputs {
        out.push_str("outputs:\n");
        for (k, v) in outputs {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    out
}

fn when(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::stack::MemberView;

    #[test]
    fn show_prints_members_and_outputs() {
        let s = StackView {
            name: "oc".into(),
            status: "CREATE_COMPLETE".into(),
            reason: "Stack CREATE completed successfully".into(),
            members: vec![MemberView {
                name: "control".into(),
                status: "COMPLETE".into(),
                node: Some("ctl-0".into()),
                node_state: Some("active".into()),
                reason: None,
            }],
            outputs: Some(
                [("ip".to_string(), serde_json::json!("10.0.0.5"))]
                    .into_iter()
                    .collect(),
            ),
            created_ms: 0,
            updated_ms: 0,
        };
        let text = show(&s);
        assert!(text.contains("CREATE_COMPLETE"));
        assert!(text.contains("control  COMPLETE  ctl-0  active"), "{text}");
        assert!(text.contains("ip: \"10.0.0.5\""), "{text}");
    }
}
