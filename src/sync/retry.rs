//! When to try a failed push again, and when to give up.
//!
//! The schedule is exponential with jitter and a cap, honours the platform's `Retry-After`,
//! and gives up after `max_attempts` or `max_age`. The intervals come from the `backoff`
//! crate, which RUSTSEC-2025-0012 marks unmaintained: it is used here and nowhere else, so it
//! can be swapped by rewriting [`RetryPolicy::interval`] alone. The decision is persisted by
//! the caller (`next_attempt_at`, `n_attempts`), so the schedule survives restarts.

use std::time::Duration;

use backoff::backoff::Backoff;

use crate::domain::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Each interval is spread by up to this share either way, so retries do not march in step.
    pub randomization: f64,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(15 * 60),
            randomization: 0.3,
            max_attempts: 25,
            max_age: Duration::from_secs(72 * 3600),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAt(Timestamp),
    GiveUp(String),
}

impl RetryPolicy {
    /// The pause before attempt number `attempt + 1`, for the `attempt`-th failure (1-based).
    pub fn interval(&self, attempt: u32) -> Duration {
        let mut schedule = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_interval)
            .with_multiplier(self.multiplier)
            .with_max_interval(self.max_interval)
            .with_randomization_factor(self.randomization)
            .with_max_elapsed_time(None)
            .build();
        let mut interval = self.initial_interval;
        for _ in 0..attempt.clamp(1, 64) {
            interval = schedule.next_backoff().unwrap_or(self.max_interval);
        }
        interval
    }

    /// Decides after the `n_attempts`-th failed attempt of an entry first queued at `queued`.
    /// A `retry_after` from the platform is a floor for the pause.
    pub fn after_failure(
        &self,
        n_attempts: u32,
        queued: Timestamp,
        now: Timestamp,
        retry_after: Option<Duration>,
    ) -> RetryDecision {
        if n_attempts >= self.max_attempts {
            return RetryDecision::GiveUp(format!("gave up after {n_attempts} attempts"));
        }
        let age =
            Duration::from_micros(u64::try_from(now.as_micros() - queued.as_micros()).unwrap_or(0));
        if age >= self.max_age {
            return RetryDecision::GiveUp(format!(
                "gave up after {} hours",
                self.max_age.as_secs() / 3600
            ));
        }
        let pause = self
            .interval(n_attempts)
            .max(retry_after.unwrap_or_default());
        let pause = i64::try_from(pause.as_micros()).unwrap_or(i64::MAX);
        RetryDecision::RetryAt(Timestamp::from_micros(
            now.as_micros().saturating_add(pause),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_286_400_000_000;

    #[test]
    fn intervals_grow_with_jitter_and_stay_under_the_cap() {
        let policy = RetryPolicy::default();
        for attempt in 1..=25_u32 {
            let exponent = i32::try_from(attempt).unwrap() - 1;
            let base = policy.initial_interval.as_secs_f64() * policy.multiplier.powi(exponent);
            let base = base.min(policy.max_interval.as_secs_f64());
            let got = policy.interval(attempt).as_secs_f64();
            assert!(
                got >= base * 0.7 - 1e-6 && got <= base * 1.3 + 1e-6,
                "{attempt}: {got} vs {base}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor_and_limits_give_up() {
        let policy = RetryPolicy::default();
        let queued = Timestamp::from_micros(T0);
        let now = Timestamp::from_micros(T0 + 5_000_000);
        match policy.after_failure(1, queued, now, Some(Duration::from_secs(120))) {
            RetryDecision::RetryAt(at) => assert!(at.as_micros() >= now.as_micros() + 120_000_000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            policy.after_failure(25, queued, now, None),
            RetryDecision::GiveUp(_)
        ));
        let three_days_later = Timestamp::from_micros(T0 + 72 * 3600 * 1_000_000);
        assert!(matches!(
            policy.after_failure(3, queued, three_days_later, None),
            RetryDecision::GiveUp(_)
        ));
    }
}
