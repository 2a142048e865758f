//! `seed stack create|update|delete|show|list|events`: a client of the daemon's `/v1/stacks`
//! API (like `seed node inspect`); `--wait` follows the stack with a spinner showing each
//! member's state until it completes or fails.

use crate::daemon::stacks::{StackRequest, StackView};
use crate::orchestrator::StackEvent;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Create, update, delete and look at stacks (Heat-style templates) on a running seed.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: StackCommand,
    /// The daemon's API.
    #[arg(
        long,
        env = "SEED_API",
        default_value = "http://127.0.0.1:6385",
        global = true
    )]
    pub api: String,
    /// The API's bearer token.
    #[arg(
        long,
        env = "SEED_TOKEN",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    pub token: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum StackCommand {
    /// Create a stack from a template: `-f overcloud.yaml -P compute_count=3`.
    Create(Change),
    /// Update a stack to a new template and/or parameters; only what changed is redone.
    Update(Change),
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

struct Client {
    api: String,
    auth: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(api: &str, token: &str) -> Client {
        Client {
            api: api.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// Call the API; a refusal becomes an error carrying the seed's message. `Ok(None)` is 404.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let url = format!("{}{path}", self.api);
        let req = self
            .agent
            .request(method, &url)
            .set("Authorization", &self.auth);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok(Some(r.into_json().context("the seed's answer")?)),
            Err(ureq::Error::Status(404, _)) if method == "GET" => Ok(None),
            Err(ureq::Error::Status(code, r)) => {
                let body: serde_json::Value = r.into_json().unwrap_or_default();
                let msg = body["error"].as_str().unwrap_or("no reason given");
                anyhow::bail!("the seed refused ({code}): {msg}")
            }
            Err(e) => Err(e).with_context(|| format!("reaching the seed at {}", self.api)),
        }
    }

    fn stack(&self, name: &str) -> anyhow::Result<Option<StackView>> {
        self.call("GET", &format!("/v1/stacks/{name}"), None)?
            .map(|v| serde_json::from_value(v).context("the seed's stack"))
            .transpose()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let c = Client::new(&args.api, &args.token);
    match args.command {
        StackCommand::Create(ch) => change(&c, ch, true),
        StackCommand::Update(ch) => change(&c, ch, false),
        StackCommand::Delete { name, wait } => {
            c.call("DELETE", &format!("/v1/stacks/{name}"), None)?;
            println!("{name}: delete requested");
            if let Some(secs) = wait {
                follow(&c, &name, secs, true)?;
            }
            Ok(())
        }
        StackCommand::Show { name } => {
            let s = c
                .stack(&name)?
                .with_context(|| format!("no stack named {name:?}"))?;
            print!("{}", show(&s));
            Ok(())
        }
        StackCommand::List => {
            let v = c.call("GET", "/v1/stacks", None)?.unwrap_or_default();
            let all: Vec<StackView> = serde_json::from_value(v).context("the seed's stacks")?;
            let mut rows = vec![vec![
                "NAME".to_string(),
                "STATUS".into(),
                "MEMBERS".into(),
                "REASON".into(),
            ]];
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
            let v = c
                .call("GET", &format!("/v1/stacks/{name}/events"), None)?
                .with_context(|| format!("no stack named {name:?}"))?;
            let events: Vec<StackEvent> = serde_json::from_value(v).context("the seed's events")?;
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
    let body = serde_json::to_value(&body).context("encoding the request")?;
    let (method, path) = if create {
        ("POST", "/v1/stacks".to_string())
    } else {
        ("PUT", format!("/v1/stacks/{}", ch.name))
    };
    c.call(method, &path, Some(body))?;
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

/// Poll the stack with a spinner until it is no longer in progress (or gone, for a delete).
fn follow(c: &Client, name: &str, secs: u64, gone_ok: bool) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    loop {
        let Some(s) = c.stack(name)? else {
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
    let mut rows = vec![vec![
        "MEMBER".to_string(),
        "STATUS".into(),
        "NODE".into(),
        "NODE STATE".into(),
    ]];
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

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let width: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&width)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
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
    use crate::daemon::stacks::MemberView;

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
