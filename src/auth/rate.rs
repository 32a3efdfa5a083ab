//! Per-caller limits: a token bucket of calls per caller, and a cap on the watch streams one
//! caller holds open. One abusive caller is slowed down before it can take the whole server's
//! capacity (which [`crate::grpc::shed`] protects as a whole).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Callers remembered before idle buckets are forgotten.
const MAX_TRACKED_CALLERS: usize = 10_000;

/// Calls per second and burst per caller, and open watch streams per caller.
#[derive(Debug)]
pub struct CallerLimits {
    rate_per_second: f64,
    burst: f64,
    max_streams: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
    streams: Mutex<HashMap<String, usize>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl CallerLimits {
    /// `rate_per_second` and `burst` at least 1, `max_streams` at least 1.
    pub fn new(rate_per_second: u32, burst: u32, max_streams: usize) -> Arc<Self> {
        Arc::new(Self {
            rate_per_second: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            max_streams: max_streams.max(1),
            buckets: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one call from the caller's bucket, or says how long until one is there.
    pub fn take(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_CALLERS && !buckets.contains_key(caller) {
            // A full bucket and one never seen are the same: forget the idle ones.
            let full_after = Duration::from_secs_f64(self.burst / self.rate_per_second);
            buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate_per_second;
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }

    /// A slot for one more watch stream of the caller, held as long as the stream is open;
    /// `None` when the caller holds as many as allowed.
    pub fn open_stream(self: &Arc<Self>, caller: &str) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(caller.to_owned()).or_insert(0);
        if *open >= self.max_streams {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            limits: self.clone(),
            caller: caller.to_owned(),
        })
    }

    pub fn max_streams(&self) -> usize {
        self.max_streams
    }
}

/// One open watch stream of a caller; given back when dropped (the stream ended).
#[derive(Debug)]
pub struct StreamSlot {
    limits: Arc<CallerLimits>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .limits
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = streams.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limits = CallerLimits::new(10, 3, 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.take("a", t0).expect("within the burst");
        }
        let wait = limits.take("a", t0).expect_err("burst spent");
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        limits
            .take("b", t0)
            .expect("another caller has its own bucket");
        limits
            .take("a", t0 + Duration::from_millis(100))
            .expect("one call back after 1/rate");
    }

    #[test]
    fn stream_slots_are_capped_per_caller_and_given_back() {
        let limits = CallerLimits::new(10, 10, 2);
        let one = limits.open_stream("a").expect("first");
        let _two = limits.open_stream("a").expect("second");
        assert!(limits.open_stream("a").is_none(), "third refused");
        assert!(
            limits.open_stream("b").is_some(),
            "other callers unaffected"
        );
        drop(one);
        assert!(limits.open_stream("a").is_some(), "a slot came back");
    }
}
