//! A circuit breaker for the national platform: when it keeps failing, stop hammering it,
//! wait, let one probe through, and close again by itself when the probe succeeds.
//!
//! Pure state on an injected clock: the worker asks [`Breaker::allows`] before each claim,
//! reports each outcome, and returns a probe it found nothing to use for.

use std::time::Duration;

use crate::domain::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// No pushes until the given time, then one probe.
    Open {
        until: Timestamp,
    },
    /// One probe is in flight.
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    /// Failures in a row that open the breaker.
    threshold: u32,
    cool_down: Duration,
    max_cool_down: Duration,
    current_cool_down: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration, max_cool_down: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            threshold: threshold.max(1),
            cool_down,
            max_cool_down,
            current_cool_down: cool_down,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a push may go now. In the half-open state only the first caller gets through.
    pub fn allows(&mut self, now: Timestamp) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// The probe let through found nothing to push: the breaker stays open, and the next
    /// caller may probe. Without this a half-open breaker would wait for ever for the outcome
    /// of a probe that never went.
    pub fn return_probe(&mut self, now: Timestamp) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open { until: now };
        }
    }

    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.current_cool_down = self.cool_down;
    }

    /// A failure that says the platform is unwell (transport error, timeout, 429, 5xx).
    pub fn record_failure(&mut self, now: Timestamp) {
        self.consecutive_failures += 1;
        let reopen = match self.state {
            // A failed probe: back off longer.
            BreakerState::HalfOpen => {
                self.current_cool_down = (self.current_cool_down * 2).min(self.max_cool_down);
                true
            }
            BreakerState::Closed => self.consecutive_failures >= self.threshold,
            BreakerState::Open { .. } => false,
        };
        if reopen {
            let micros = i64::try_from(self.current_cool_down.as_micros()).unwrap_or(i64::MAX);
            self.state = BreakerState::Open {
                until: Timestamp::from_micros(now.as_micros().saturating_add(micros)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_micros(seconds * 1_000_000)
    }

    #[test]
    fn opens_after_the_threshold_probes_and_closes_by_itself() {
        let mut b = Breaker::new(3, Duration::from_secs(30), Duration::from_secs(300));
        for s in 0..2 {
            assert!(b.allows(at(s)));
            b.record_failure(at(s));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_failure(at(2));
        assert_eq!(b.state(), BreakerState::Open { until: at(32) });
        assert!(!b.allows(at(31)));
        assert!(b.allows(at(32)), "one probe after the cool-down");
        assert!(!b.allows(at(32)), "only one");
        b.record_failure(at(33));
        assert_eq!(
            b.state(),
            BreakerState::Open { until: at(93) },
            "a failed probe doubles the wait"
        );
        assert!(b.allows(at(93)));
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allows(at(94)));
    }

    #[test]
    fn a_probe_returned_unused_goes_to_the_next_caller() {
        let mut b = Breaker::new(1, Duration::from_secs(30), Duration::from_secs(300));
        b.record_failure(at(0));
        assert!(b.allows(at(30)));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.return_probe(at(30));
        assert_eq!(b.state(), BreakerState::Open { until: at(30) });
        assert!(b.allows(at(31)), "the next caller probes");
        assert!(!b.allows(at(31)), "only one");
        b.record_success();
        b.return_probe(at(32));
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a closed breaker stays closed"
        );
    }
}
