//! `seed handoff`: the seed daemon asked leaves the HA control plane to the daemons that joined
//! it (the undercloud), a client of `POST /v1/ha/handoff` ([`crate::ha::handoff`]).

use super::client::{Client, ClientArgs};
use ::api::ha::{Handoff, HandoffStep};
use std::time::{Duration, Instant};

/// Hand the seed's place in the control plane over to the undercloud: the seed leaves the
/// election, its etcd member leaves the cluster, then it stops (or powers its machine off).
/// Refused with the reason, and nothing changed, unless every other member has started and
/// answers, another daemon campaigns and every image is replicated. Run it again after an
/// interruption: the seed goes on from the step it reached.
#[derive(Debug, clap::Args)]
#[command(mut_arg("token", |a| a.help("The API's bearer token (role admin).")))]
pub struct Args {
    /// Return once the hand-off is under way instead of following it to the end.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to follow it (seconds).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let c = args.client.client()?;
    let r: Handoff = c.post_empty("/v1/ha/handoff")?;
    println!(
        "{}: hand-off under way ({}); successors: {}",
        r.member,
        step(r.step),
        r.successors.join(", ")
    );
    if args.no_wait {
        return Ok(());
    }
    follow(&c, r, args.timeout)
}

fn step(s: HandoffStep) -> &'static str {
    match s {
        HandoffStep::Resigning => "resigning: waiting for another daemon to lead",
        HandoffStep::Removing => "removing its etcd member",
        HandoffStep::Done => "done",
    }
}

/// Poll with a spinner until the seed says done (it lingers a moment before it stops
/// answering); a seed gone before that is an error that says how to go on.
fn follow(c: &Client, mut last: Handoff, secs: u64) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    loop {
        match c.get_opt::<Handoff>("/v1/ha/handoff") {
            Ok(Some(r)) => last = r,
            Ok(None) => anyhow::bail!("{}: the daemon forgot its hand-off", last.member),
            Err(e) => {
                bar.finish_and_clear();
                let hint = if last.step == HandoffStep::Removing {
                    // The last step: it may have finished and gone while a poll was on its way.
                    " (it may have finished and switched off: `seed ha members` on the \
                     undercloud shows whether it left)"
                } else {
                    ""
                };
                return Err(e.context(format!(
                    "{}: the daemon stopped answering before it said the hand-off was done \
                     (last step: {}){hint}; if it was stopped or killed, start it again: it \
                     goes on from there by itself",
                    last.member,
                    step(last.step)
                )));
            }
        }
        if last.given_up {
            bar.finish_and_clear();
            anyhow::bail!(
                "{}: the hand-off was given up: {}",
                last.member,
                last.error.as_deref().unwrap_or("no reason given")
            );
        }
        if last.step == HandoffStep::Done {
            break;
        }
        bar.set_message(format!(
            "{}: {} ({}s){}",
            last.member,
            step(last.step),
            start.elapsed().as_secs(),
            last.error
                .as_deref()
                .map(|e| format!(" — retrying: {e}"))
                .unwrap_or_default()
        ));
        anyhow::ensure!(
            start.elapsed().as_secs() < secs,
            "{}: still {} after {secs} s",
            last.member,
            step(last.step)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    bar.finish_and_clear();
    println!(
        "{}: handed over after {} s; {} leads; the store is etcd at {}",
        last.member,
        start.elapsed().as_secs(),
        last.leader.as_deref().unwrap_or("another daemon"),
        last.endpoints.join(",")
    );
    Ok(())
}
