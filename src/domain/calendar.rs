//! The municipality's business calendar, and business-time arithmetic on it.
//!
//! SLA targets are counted in business minutes: time inside working hours on working days,
//! in Muscat's time zone (UTC+4 all year, no daylight saving). A calendar says:
//! - the working hours of each weekday (several ranges a day allowed; by default Sunday to
//!   Thursday, Friday and Saturday off),
//! - dated seasons with their own weekly hours (Ramadan), which win over the usual week,
//! - public holidays on a fixed Gregorian date every year (National Day),
//! - one-time holidays, added when announced (the Eids and other Hijri-dated holidays move
//!   every year and are known only when announced).
//!
//! Architecture invariants:
//! - Pure and deterministic: the same calendar and the same instants give the same answer on
//!   every machine, so deadlines recomputed from a ticket's history never drift.
//! - A [`BusinessCalendar`] is valid once it exists (ranges inside the day, ordered and not
//!   overlapping; seasons not overlapping; dates real). It is built from its
//!   [`CalendarSpec`] (the reviewable data form stored in the database and in
//!   `catalog/calendar.toml`) by [`BusinessCalendar::parse`] only.
//! - Business time between two instants is never negative and never more than wall time.

use serde::{Deserialize, Serialize};

use super::{FieldViolation, Timestamp};

/// The calendar as data: what an administrator writes and what the store keeps. Times are
/// `"HH:MM"` (24 h, local time), dates `"YYYY-MM-DD"` (Gregorian).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// The usual week: for each day, its working ranges. A day left out is a day off.
    pub week: Vec<DayHoursSpec>,
    #[serde(default)]
    pub seasons: Vec<SeasonSpec>,
    #[serde(default)]
    pub recurring_holidays: Vec<RecurringHolidaySpec>,
    #[serde(default)]
    pub holidays: Vec<HolidaySpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayHoursSpec {
    /// `sunday` .. `saturday`.
    pub day: String,
    /// Working ranges as `"07:30-14:30"`.
    pub hours: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonSpec {
    pub name: String,
    /// First day of the season.
    pub from: String,
    /// Last day of the season (inclusive).
    pub to: String,
    /// The season's week; a day left out is a day off during the season.
    pub week: Vec<DayHoursSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurringHolidaySpec {
    pub name: String,
    /// `"MM-DD"`: the same Gregorian date every year.
    pub date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidaySpec {
    pub name: String,
    /// First day off.
    pub from: String,
    /// Last day off (inclusive); the same as `from` for a single day.
    pub to: String,
}

/// A validated calendar. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessCalendar {
    spec: CalendarSpec,
    // Parsed forms; chosen by the implementation.
}

impl BusinessCalendar {
    /// Validates a spec. Violations name the field path within the spec
    /// (`week[2].hours[0]`, `seasons[0].to`, `holidays[3].from`).
    pub fn parse(spec: CalendarSpec) -> Result<Self, Vec<FieldViolation>> {
        let _ = spec;
        unimplemented!()
    }

    /// The default calendar shipped with balagh (`catalog/calendar.toml`).
    pub fn muscat_default() -> Self {
        unimplemented!()
    }

    pub fn spec(&self) -> &CalendarSpec {
        &self.spec
    }

    /// Business seconds in `[from, to)`; 0 when `to <= from`.
    pub fn business_seconds_between(&self, from: Timestamp, to: Timestamp) -> i64 {
        let _ = (from, to);
        unimplemented!()
    }

    /// The instant at which `seconds` business seconds have passed since `from`. With
    /// `seconds == 0` that is `from` itself (even outside working hours). `None` when the
    /// calendar has no working time in the ten years after `from`.
    pub fn add_business_seconds(&self, from: Timestamp, seconds: i64) -> Option<Timestamp> {
        let _ = (from, seconds);
        unimplemented!()
    }

    /// Whether `at` falls inside working hours.
    pub fn is_working_time(&self, at: Timestamp) -> bool {
        let _ = at;
        unimplemented!()
    }
}
