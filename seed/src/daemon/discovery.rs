//! DHCP discovery's budget: each MAC discovery enrolls costs a synced store commit and a node
//! record, and anything on the provisioning network can make up MACs by the thousand. So
//! discovery enrols at most [`BURST`] nodes at once and [`PER_MINUTE`] a minute after that (a
//! token bucket), and stops at [`MAX_PENDING`] discovered nodes nobody has completed yet
//! (still in `enroll` with no BMC address). A MAC refused now is reported again by the DHCP
//! server the next time it asks, so a real machine is enrolled once the flood is over or an
//! operator has dealt with the pending ones.

use crate::inventory::Node;
use crate::lifecycle::State;
use std::time::{Duration, Instant};
use tracing::warn;

/// Enrolments at once.
pub const BURST: u32 = 32;
/// Enrolments a minute, after the burst.
pub const PER_MINUTE: u32 = 30;
/// Discovered nodes not yet completed by an operator, at most.
pub const MAX_PENDING: usize = 256;

/// Whether `n` is a discovered node nobody has completed: in `enroll`, no BMC address.
pub fn pending(n: &Node) -> bool {
    n.lifecycle.state == State::Enroll && n.bmc.address.is_empty()
}

/// The token bucket, and when the last refusal was logged.
#[derive(Debug, Default)]
pub struct Budget {
    tokens: f64,
    last: Option<Instant>,
    logged: Option<Instant>,
    refused: u64,
}

impl Budget {
    /// Take one enrolment now, if the budget has one.
    pub fn admit(&mut self, now: Instant) -> bool {
        let rate = f64::from(PER_MINUTE) / 60.0;
        self.tokens = match self.last {
            None => f64::from(BURST),
            Some(t) => {
                (self.tokens + now.duration_since(t).as_secs_f64() * rate).min(f64::from(BURST))
            }
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        self.refuse(now, "rate limit", 0);
        false
    }

    /// The cap of pending discovered nodes is reached.
    pub fn full(&mut self, pending: usize) {
        // The token taken for this one is given back: nothing was enrolled.
        self.tokens = (self.tokens + 1.0).min(f64::from(BURST));
        self.refuse(Instant::now(), "cap of pending discovered nodes", pending);
    }

    fn refuse(&mut self, now: Instant, why: &str, pending: usize) {
        self.refused += 1;
        // One line every ten seconds at most: a flood must not flood the log too.
        if self
            .logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.logged = Some(now);
            warn!(
                why,
                pending,
                refused = self.refused,
                burst = BURST,
                per_minute = PER_MINUTE,
                max_pending = MAX_PENDING,
                "DHCP discovery: MAC not enrolled for now"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = Budget::default();
        let t0 = Instant::now();
        let taken = (0..1000).filter(|_| b.admit(t0)).count();
        assert_eq!(taken, BURST as usize);
        // Two seconds at 30 a minute: one more.
        assert!(b.admit(t0 + Duration::from_secs(2)));
        assert!(!b.admit(t0 + Duration::from_secs(2)));
        // A long quiet spell refills the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..1000).filter(|_| b.admit(later)).count(), BURST as usize);
    }
}
