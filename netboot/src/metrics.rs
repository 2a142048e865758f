//! Named counters shared by the services, rendered in the Prometheus text format.
//!
//! A service asks once for the counters it bumps (`metrics.counter("dhcp_dropped_total",
//! "Malformed DHCP packets dropped")`) and keeps the `Arc<AtomicU64>`; the HTTP server renders
//! all of them at `/metrics`. Counting malformed input is part of every protocol's contract.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Text another component appends to the rendering (the seed daemon's node gauges).
pub type Collector = Box<dyn Fn() -> String + Send + Sync>;

/// A registry of monotonically increasing counters, plus collectors whose text follows them.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<&'static str, (&'static str, Arc<AtomicU64>)>>,
    collectors: Mutex<Vec<Collector>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The counter with this name, created at zero on first use.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Arc<AtomicU64> {
        let mut map = self.counters.lock().expect("metrics lock");
        map.entry(name)
            .or_insert_with(|| (help, Arc::new(AtomicU64::new(0))))
            .1
            .clone()
    }

    /// The current value of a counter (0 if it was never created).
    pub fn get(&self, name: &str) -> u64 {
        let map = self.counters.lock().expect("metrics lock");
        map.get(name).map_or(0, |(_, c)| c.load(Ordering::Relaxed))
    }

    /// Append `f`'s text (complete Prometheus families) to every rendering.
    pub fn add_collector(&self, f: Collector) {
        self.collectors.lock().expect("metrics lock").push(f);
    }

    /// All counters, then the collectors' text, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        {
            let map = self.counters.lock().expect("metrics lock");
            for (name, (help, c)) in map.iter() {
                out.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                    c.load(Ordering::Relaxed)
                ));
            }
        }
        for f in self.collectors.lock().expect("metrics lock").iter() {
            out.push_str(&f());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_by_name_and_rendered() {
        let m = Metrics::default();
        let a = m.counter("x_total", "x things");
        a.fetch_add(2, Ordering::Relaxed);
        m.counter("x_total", "x things")
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(m.get("x_total"), 3);
        assert!(m.render().contains("# TYPE x_total counter\nx_total 3\n"));
        m.add_collector(Box::new(|| "# TYPE y gauge\ny 7\n".into()));
        assert!(m.render().ends_with("x_total 3\n# TYPE y gauge\ny 7\n"));
    }
}
