//! The daemon's Prometheus metrics, rendered after the netboot counters at `/metrics` (on the
//! HTTP boot server and on the operators' API listener):
//!
//! - `seed_nodes{state="…"}`: nodes by lifecycle state, counted from the store at each scrape
//!   (every state is listed, zeros included, so a dashboard's series never vanish);
//! - `seed_inspect_duration_seconds`, `seed_deploy_duration_seconds`: histograms of the steps
//!   that succeeded, from the transition into the step to the transition out of it, as this
//!   daemon saw them (a step that spans a restart is not measured);
//! - `seed_inspect_failures_total`, `seed_deploy_failures_total`, `seed_transitions_total`;
//! - `seed_agent_auth_failures_total`: `/v1/agent/*` calls refused for a missing or wrong
//!   per-boot agent token;
//! - `seed_pxe_boot_retries_total`: power-cycles by the boot watchdog, for nodes that did not
//!   reach the seed in time after being powered into PXE.
//!
//! Hand-written rather than with a metrics crate: netboot's counters are already rendered as
//! text by `netboot::metrics`, and two histograms and a gauge do not justify a second registry
//! that would have to own those counters too.

use crate::lifecycle::State;
use crate::store::{nodes, Store, StoreError};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the duration buckets, in seconds (a fake deploy takes well under a second,
/// a real one minutes).
const BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Every state name, in lifecycle order.
pub const STATES: [&str; 12] = [
    "enroll",
    "verifying",
    "manageable",
    "inspecting",
    "inspect failed",
    "available",
    "deploying",
    "deploy failed",
    "active",
    "deleting",
    "cleaning",
    "clean failed",
];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<HistInner>,
}

#[derive(Debug, Default, Clone)]
struct HistInner {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
    }
}

/// The daemon's own metrics; [`DaemonMetrics::transition`] is called for every committed step.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    pub inspect: Histogram,
    pub deploy: Histogram,
    inspect_failures: AtomicU64,
    deploy_failures: AtomicU64,
    transitions: AtomicU64,
    agent_auth_failures: AtomicU64,
    pxe_boot_retries: AtomicU64,
    /// When each node entered the step it is in (ms).
    started: Mutex<HashMap<String, u64>>,
}

impl DaemonMetrics {
    /// Node `name` went from `before` to `after` at `now_ms` (committed).
    pub fn transition(&self, name: &str, before: &State, after: &State, now_ms: u64) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let entered = matches!(after, State::Inspecting | State::Deploying);
        if entered && before != after {
            started.insert(name.to_string(), now_ms);
            return;
        }
        if before == after {
            return;
        }
        let since = started.remove(name);
        let secs = |t0: u64| now_ms.saturating_sub(t0) as f64 / 1000.0;
        match (before, after) {
            (State::Inspecting, State::Manageable | State::Available) => {
                if let Some(t0) = since {
                    self.inspect.observe(secs(t0));
                }
            }
            (State::Inspecting, _) => {
                self.inspect_failures.fetch_add(1, Ordering::Relaxed);
            }
            (State::Deploying, State::Active) => {
                if let Some(t0) = since {
                    self.deploy.observe(secs(t0));
                }
            }
            (State::Deploying, _) => {
                self.deploy_failures.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// An agent call was refused: no token, or not the node's current one.
    pub fn agent_auth_failure(&self) {
        self.agent_auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The boot watchdog power-cycled a node that did not reach the seed.
    pub fn pxe_boot_retry(&self) {
        self.pxe_boot_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Boot watchdog power-cycles so far.
    pub fn pxe_boot_retries(&self) -> u64 {
        self.pxe_boot_retries.load(Ordering::Relaxed)
    }

    /// Agent calls refused so far for their token.
    pub fn agent_auth_failures(&self) -> u64 {
        self.agent_auth_failures.load(Ordering::Relaxed)
    }

    /// Deploys that failed or timed out so far.
    pub fn deploy_failures(&self) -> u64 {
        self.deploy_failures.load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format; node counts come from `store`.
    pub fn render(&self, store: &dyn Store) -> Result<String, StoreError> {
        let mut by_state: HashMap<&'static str, u64> = HashMap::new();
        let mut maintenance = 0u64;
        for (n, _) in nodes::list(store)? {
            *by_state.entry(n.lifecycle.state.name()).or_default() += 1;
            maintenance += u64::from(n.lifecycle.maintenance.is_some());
        }
        let mut out = String::new();
        out.push_str("# HELP seed_nodes Nodes by lifecycle state\n# TYPE seed_nodes gauge\n");
        for s in STATES {
            let _ = writeln!(
                out,
                "seed_nodes{{state=\"{s}\"}} {}",
                by_state.get(s).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "# HELP seed_nodes_maintenance Nodes in maintenance\n\
             # TYPE seed_nodes_maintenance gauge\nseed_nodes_maintenance {maintenance}"
        );
        self.inspect.render(
            &mut out,
            "seed_inspect_duration_seconds",
            "Successful inspections, from the request to the facts",
        );
        self.deploy.render(
            &mut out,
            "seed_deploy_duration_seconds",
            "Successful deploys, from the request to the image written",
        );
        for (name, help, c) in [
            (
                "seed_inspect_failures_total",
                "Inspections that failed or timed out",
                &self.inspect_failures,
            ),
            (
                "seed_deploy_failures_total",
                "Deploys that failed or timed out",
                &self.deploy_failures,
            ),
            (
                "seed_transitions_total",
                "Lifecycle transitions committed",
                &self.transitions,
            ),
            (
                "seed_agent_auth_failures_total",
                "Agent calls refused for a missing or wrong per-boot token",
                &self.agent_auth_failures,
            ),
            (
                "seed_pxe_boot_retries_total",
                "Nodes power-cycled again because no PXE boot reached the seed in time",
                &self.pxe_boot_retries,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        Ok(out)
    }
}

/// Append the daemon's metrics to `registry`'s rendering (the netboot HTTP server's and the
/// API's `/metrics`). Holds the daemon weakly: a dropped daemon renders nothing.
pub fn register(daemon: &std::sync::Arc<super::Daemon>, registry: &netboot::metrics::Metrics) {
    let weak = std::sync::Arc::downgrade(daemon);
    registry.add_collector(Box::new(move || {
        let Some(d) = weak.upgrade() else {
            return String::new();
        };
        d.metrics().render(d.store()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: reading nodes");
            String::new()
        })
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    #[test]
    fn durations_failures_and_states() {
        let m = DaemonMetrics::default();
        m.transition("a", &State::Manageable, &State::Inspecting, 1_000);
        m.transition("a", &State::Inspecting, &State::Manageable, 3_000);
        m.transition("b", &State::Available, &State::Deploying, 0);
        m.transition(
            "b",
            &State::Deploying,
            &State::DeployFailed { reason: "x".into() },
            1,
        );
        m.transition("c", &State::Available, &State::Deploying, 10_000);
        m.transition("c", &State::Deploying, &State::Active, 70_000);
        assert_eq!(m.inspect.count(), 1);
        assert_eq!(m.deploy.count(), 1);

        let s = MemStore::new();
        let mut nodes_ = Vec::new();
        for i in 0..3u8 {
            let mac = format!("02:00:00:00:00:{i:02x}");
            let mut n = crate::daemon::test_support::fake_node(&format!("n{i}"), &mac);
            n.lifecycle.state = if i == 0 {
                State::Active
            } else {
                State::Available
            };
            nodes_.push(n);
        }
        nodes::create(&s, &nodes_).unwrap();
        let text = m.render(&s).unwrap();
        assert!(
            text.contains("seed_nodes{state=\"available\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("seed_nodes{state=\"active\"} 1\n"), "{text}");
        assert!(
            text.contains("seed_nodes{state=\"deploy failed\"} 0\n"),
            "{text}"
        );
        // 2 s inspection: in the 2.5 s bucket, not in the 1 s one.
        assert!(text.contains("seed_inspect_duration_seconds_bucket{le=\"1\"} 0\n"));
        assert!(text.contains("seed_inspect_duration_seconds_bucket{le=\"2.5\"} 1\n"));
        assert!(
            text.contains("seed_inspect_duration_seconds_sum 2\n"),
            "{text}"
        );
        assert!(text.contains("seed_deploy_duration_seconds_bucket{le=\"60\"} 1\n"));
        assert!(text.contains("seed_deploy_duration_seconds_bucket{le=\"30\"} 0\n"));
        assert!(text.contains("seed_deploy_failures_total 1\n"), "{text}");
        assert!(text.contains("seed_inspect_failures_total 0\n"), "{text}");
        assert!(
            text.contains("seed_agent_auth_failures_total 0\n"),
            "{text}"
        );
        m.agent_auth_failure();
        assert!(m
            .render(&s)
            .unwrap()
            .contains("seed_agent_auth_failures_total 1\n"));
        assert!(text.contains("seed_pxe_boot_retries_total 0\n"), "{text}");
        m.pxe_boot_retry();
        assert!(m.render(&s).unwrap().contains(
            "# TYPE seed_pxe_boot_retries_total counter\nseed_pxe_boot_retries_total 1\n"
        ));
    }
}
