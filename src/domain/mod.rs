//! The domain: tickets, their lifecycle, the catalog they point at, and time.
//!
//! Architecture invariant: nothing here knows about protobuf, SQL or HTTP. The gRPC layer
//! parses requests into these types; the store persists them.

pub mod calendar;
pub mod catalog;
pub mod filter;
pub mod kpi;
pub mod kpi_targets;
pub mod lifecycle;
pub mod quality;
pub mod satisfaction;
pub mod sla;
pub mod sync;
pub mod text;
pub mod ticket;
pub mod values;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// One offending input field and what is wrong with it. `field` is the request path in
/// snake_case (`reporter.phone`, `attachments[2].sha256`), as gRPC's BadRequest wants it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &str, description: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            description: description.into(),
        }
    }
}

/// A point in time, in microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The municipality's time zone, Asia/Muscat, is UTC+4 all year (no daylight saving).
    pub const MUSCAT_OFFSET_SECONDS: i64 = 4 * 3600;

    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// The calendar year in Muscat at this instant: what reference numbers are counted by.
    pub fn muscat_year(self) -> i32 {
        let seconds = self.0.div_euclid(1_000_000) + Self::MUSCAT_OFFSET_SECONDS;
        chrono::DateTime::from_timestamp(seconds, 0)
            .map(|t| chrono::Datelike::year(&t.naive_utc()))
            .unwrap_or(1970)
    }
}

/// Where the registry reads the time. Injected, so tests can move time at will.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(micros)
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn set(&self, to: Timestamp) {
        self.0.store(to.0, Ordering::SeqCst);
    }

    pub fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muscat_year_turns_four_hours_before_utc() {
        // 2026-12-31T20:00:00Z is 2027-01-01T00:00 in Muscat.
        let new_year_muscat = Timestamp::from_micros(1_798_747_200_000_000);
        assert_eq!(new_year_muscat.muscat_year(), 2027);
        assert_eq!(
            Timestamp::from_micros(new_year_muscat.as_micros() - 1).muscat_year(),
            2026
        );
    }
}
