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
//!
//! Limits keep a calendar reviewable and its arithmetic cheap: at most 200 seasons, 100
//! recurring holidays, 2,000 one-time holidays and 8 working ranges a day (a split shift needs
//! two or three; eight is a sane bound, not a policy). Dates lie between 2000-01-01 and
//! 2100-12-31; names are 1 to 100 characters. A spec with many faults gets all of them back at
//! once, each with the path of its field.
//!
//! How the arithmetic stays fast without walking minute by minute: only the first and the last
//! day of a span look at their working ranges; the whole days between are added up at once.
//! Inside 2000..=2100, where seasons and one-time holidays live, `parse` keeps a running sum of
//! business seconds per day (about 37,000 numbers, 300 kB, shared between clones), so a span
//! costs two lookups and a deadline one binary search over days. Outside it only the usual week
//! and the recurring holidays apply, and they are counted arithmetically: whole weeks, then the
//! holidays year by year and by whole 400-year cycles (after which Gregorian dates and weekdays
//! repeat). No call allocates, and instants far from today (even `i64::MIN`) are still answered
//! quickly and without overflow.
//!
//! Instants keep their microseconds: business time is counted exactly in microseconds, and
//! [`BusinessCalendar::business_seconds_between`] rounds it down to whole seconds.

use std::fmt;
use std::sync::{Arc, LazyLock};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::values::parse_text;
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

/// The default calendar shipped with balagh, compiled into the binary. It is data, reviewed like
/// code: the administration confirms the announced dates and may store its own calendar.
pub const MUSCAT_CALENDAR_TOML: &str = include_str!("../../catalog/calendar.toml");

const MAX_SEASONS: usize = 200;
const MAX_RECURRING_HOLIDAYS: usize = 100;
const MAX_HOLIDAYS: usize = 2_000;
const MAX_RANGES_PER_DAY: usize = 8;
const MAX_NAME_CHARS: usize = 100;
const FIRST_DATE: &str = "2000-01-01";
const LAST_DATE: &str = "2100-12-31";
/// The days that seasons and one-time holidays may fall on, [`FIRST_DATE`] to [`LAST_DATE`],
/// as day numbers: `[WINDOW_FIRST_DAY, WINDOW_END_DAY)`.
const WINDOW_FIRST_DAY: i64 = days_from_civil(2000, 1, 1);
const WINDOW_END_DAY: i64 = days_from_civil(2101, 1, 1);

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
const MICROS_PER_DAY: i64 = SECONDS_PER_DAY * MICROS_PER_SECOND;
const MUSCAT_OFFSET_MICROS: i64 = Timestamp::MUSCAT_OFFSET_SECONDS * MICROS_PER_SECOND;
/// 400 Gregorian years. Dates and weekdays both repeat after it (146,097 is a multiple of 7).
const DAYS_PER_GREGORIAN_CYCLE: i64 = 146_097;
/// How far [`BusinessCalendar::add_business_seconds`] looks: ten years and their leap days.
const SEARCH_HORIZON_DAYS: i64 = 3_653;

const DAY_NAMES: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// A validated calendar. See the module docs.
///
/// Days are counted as day numbers: days since 1970-01-01 in Muscat's local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessCalendar {
    spec: CalendarSpec,
    /// The usual week.
    week: Week,
    /// Ordered by first day; no two overlap.
    seasons: Vec<Season>,
    /// Ordered, each date once.
    recurring_holidays: Vec<MonthDay>,
    /// Ordered, with overlapping and adjacent ranges merged.
    holidays: Vec<DayRange>,
    /// The usual week's seconds that the recurring holidays take away in one 400-year cycle.
    recurring_holiday_seconds_per_cycle: i64,
    /// Business seconds added up over the days of the window.
    window_sums: WindowSums,
}

impl BusinessCalendar {
    /// Validates a spec. Violations name the field path within the spec
    /// (`week[2].hours[0]`, `seasons[0].to`, `holidays[3].from`).
    pub fn parse(spec: CalendarSpec) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let week = parse_week("week", &spec.week, &mut violations);
        let seasons = parse_seasons(&spec.seasons, &mut violations);
        let recurring_holidays =
            parse_recurring_holidays(&spec.recurring_holidays, &mut violations);
        let holidays = parse_holidays(&spec.holidays, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        let mut calendar = Self {
            spec,
            week,
            seasons,
            recurring_holidays,
            holidays,
            recurring_holiday_seconds_per_cycle: 0,
            window_sums: WindowSums(Arc::new([0])),
        };
        calendar.recurring_holiday_seconds_per_cycle =
            calendar.recurring_holiday_seconds_year_by_year(0, DAYS_PER_GREGORIAN_CYCLE);
        calendar.window_sums = calendar.sum_up_window();
        Ok(calendar)
    }

    /// The default calendar shipped with balagh (`catalog/calendar.toml`). The file is parsed
    /// once per process; each call returns a cheap copy.
    pub fn muscat_default() -> Self {
        static MUSCAT_DEFAULT: LazyLock<BusinessCalendar> = LazyLock::new(|| {
            // The file is compiled in, and a unit test parses it: failing here is a bug in the
            // build, not a condition to handle at run time.
            BusinessCalendar::from_toml(MUSCAT_CALENDAR_TOML)
                .expect("catalog/calendar.toml must be a valid calendar (see its unit test)")
        });
        MUSCAT_DEFAULT.clone()
    }

    pub fn spec(&self) -> &CalendarSpec {
        &self.spec
    }

    /// Business seconds in `[from, to)`; 0 when `to <= from`.
    pub fn business_seconds_between(&self, from: Timestamp, to: Timestamp) -> i64 {
        let (whole_day_seconds, partial_day_micros) = self.business_time_between(from, to);
        whole_day_seconds + partial_day_micros / MICROS_PER_SECOND
    }

    /// Whole business minutes in `[from, to)`, rounded down; what SLA targets are counted in.
    pub fn business_minutes_between(&self, from: Timestamp, to: Timestamp) -> i64 {
        self.business_seconds_between(from, to) / 60
    }

    /// The instant at which `seconds` business seconds have passed since `from`. With
    /// `seconds == 0` that is `from` itself (even outside working hours). `None` when the
    /// calendar has no working time in the ten years after `from`.
    ///
    /// The answer is the earliest such instant: a deadline that falls on the end of a working
    /// range is that end, not the start of the next range. Negative `seconds` count as 0.
    pub fn add_business_seconds(&self, from: Timestamp, seconds: i64) -> Option<Timestamp> {
        if seconds <= 0 {
            return Some(from);
        }
        // More business time than wall time in the horizon cannot be reached; checking first
        // also keeps the microsecond arithmetic below from overflowing.
        if seconds > SEARCH_HORIZON_DAYS * SECONDS_PER_DAY {
            return None;
        }
        let mut remaining_micros = seconds * MICROS_PER_SECOND;
        let (from_day, from_micro) = local_day_and_micro(from);
        let first_day_hours = self.hours_on(from_day);
        if let Some(micro) = first_day_hours.instant_after(from_micro, remaining_micros) {
            return timestamp_at(from_day, micro);
        }
        remaining_micros -= first_day_hours.business_micros(from_micro, MICROS_PER_DAY);

        // Find the first day on which the remaining time runs out: the smallest exclusive end
        // day `end` whose whole days [first_full_day, end) hold enough, by doubling the span and
        // then halving it.
        let first_full_day = from_day + 1;
        let end_limit = from_day + SEARCH_HORIZON_DAYS + 1;
        let holds_enough = |end_day: i64| {
            self.business_seconds_in_days(first_full_day, end_day) * MICROS_PER_SECOND
                >= remaining_micros
        };
        let mut short_end = first_full_day;
        let mut span_days = 1;
        let mut enough_end = loop {
            let end_day = (first_full_day + span_days).min(end_limit);
            if holds_enough(end_day) {
                break end_day;
            }
            if end_day == end_limit {
                return None;
            }
            short_end = end_day;
            span_days *= 2;
        };
        while enough_end - short_end > 1 {
            let middle = short_end + (enough_end - short_end) / 2;
            if holds_enough(middle) {
                enough_end = middle;
            } else {
                short_end = middle;
            }
        }
        let last_day = enough_end - 1;
        let used_before_micros =
            self.business_seconds_in_days(first_full_day, last_day) * MICROS_PER_SECOND;
        // The search above guarantees that `last_day` holds the rest, so this finds it.
        let micro = self
            .hours_on(last_day)
            .instant_after(0, remaining_micros - used_before_micros)?;
        let reached = timestamp_at(last_day, micro)?;
        let within_horizon =
            reached.as_micros() - from.as_micros() <= SEARCH_HORIZON_DAYS * MICROS_PER_DAY;
        within_horizon.then_some(reached)
    }

    /// [`Self::add_business_seconds`] for a number of business minutes.
    pub fn add_business_minutes(&self, from: Timestamp, minutes: i64) -> Option<Timestamp> {
        self.add_business_seconds(from, minutes.saturating_mul(60))
    }

    /// Whether `at` falls inside working hours.
    pub fn is_working_time(&self, at: Timestamp) -> bool {
        let (day, micro) = local_day_and_micro(at);
        self.hours_on(day).contains(micro)
    }

    /// Parses a calendar file in the form of `catalog/calendar.toml`.
    fn from_toml(text: &str) -> Result<Self, String> {
        let spec: CalendarSpec = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::parse(spec).map_err(|violations| {
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Business time in `[from, to)`: the seconds of the whole days between, and the
    /// microseconds of the first and the last day. Kept apart because their sum in
    /// microseconds may not fit an `i64` over the longest spans.
    fn business_time_between(&self, from: Timestamp, to: Timestamp) -> (i64, i64) {
        if to <= from {
            return (0, 0);
        }
        let (from_day, from_micro) = local_day_and_micro(from);
        let (to_day, to_micro) = local_day_and_micro(to);
        if from_day == to_day {
            return (
                0,
                self.hours_on(from_day)
                    .business_micros(from_micro, to_micro),
            );
        }
        let first_day_micros = self
            .hours_on(from_day)
            .business_micros(from_micro, MICROS_PER_DAY);
        let last_day_micros = self.hours_on(to_day).business_micros(0, to_micro);
        (
            self.business_seconds_in_days(from_day + 1, to_day),
            first_day_micros + last_day_micros,
        )
    }

    /// The working hours of a day: none on a holiday, else its season's, else the usual week's.
    fn hours_on(&self, day: i64) -> &DayHours {
        if self.is_recurring_holiday(day) || self.is_one_time_holiday(day) {
            return &DAY_OFF;
        }
        match self.season_on(day) {
            Some(season) => season.week.hours_on(day),
            None => self.week.hours_on(day),
        }
    }

    fn is_recurring_holiday(&self, day: i64) -> bool {
        if self.recurring_holidays.is_empty() {
            return false;
        }
        let (_, month, day_of_month) = civil_from_days(day);
        self.recurring_holidays
            .binary_search(&MonthDay {
                month,
                day: day_of_month,
            })
            .is_ok()
    }

    fn is_one_time_holiday(&self, day: i64) -> bool {
        let index = self.holidays.partition_point(|h| h.last_day < day);
        self.holidays
            .get(index)
            .is_some_and(|holiday| holiday.first_day <= day)
    }

    fn season_on(&self, day: i64) -> Option<&Season> {
        let index = self.seasons.partition_point(|s| s.last_day < day);
        self.seasons
            .get(index)
            .filter(|season| season.first_day <= day)
    }

    /// Business seconds in the whole days `[first_day, end_day)`.
    fn business_seconds_in_days(&self, first_day: i64, end_day: i64) -> i64 {
        if end_day <= first_day {
            return 0;
        }
        self.usual_seconds_in_days(first_day, end_day.min(WINDOW_FIRST_DAY))
            + self.window_sums.seconds_in_days(first_day, end_day)
            + self.usual_seconds_in_days(first_day.max(WINDOW_END_DAY), end_day)
    }

    /// Seconds of the usual week in `[first_day, end_day)`, less its recurring holidays: the
    /// business time of days outside the window.
    fn usual_seconds_in_days(&self, first_day: i64, end_day: i64) -> i64 {
        if end_day <= first_day {
            return 0;
        }
        let n_whole_weeks = (end_day - first_day) / 7;
        let mut seconds = n_whole_weeks * self.week.total_seconds();
        for day in first_day + n_whole_weeks * 7..end_day {
            seconds += self.week.hours_on(day).total_seconds;
        }
        seconds - self.recurring_holiday_seconds(first_day, end_day)
    }

    /// The usual week's seconds that fall on recurring holidays in `[first_day, end_day)`.
    fn recurring_holiday_seconds(&self, first_day: i64, end_day: i64) -> i64 {
        if self.recurring_holidays.is_empty() {
            return 0;
        }
        let n_cycles = (end_day - first_day) / DAYS_PER_GREGORIAN_CYCLE;
        let rest_first_day = first_day + n_cycles * DAYS_PER_GREGORIAN_CYCLE;
        n_cycles * self.recurring_holiday_seconds_per_cycle
            + self.recurring_holiday_seconds_year_by_year(rest_first_day, end_day)
    }

    /// [`Self::recurring_holiday_seconds`] by looking at each year of the span.
    fn recurring_holiday_seconds_year_by_year(&self, first_day: i64, end_day: i64) -> i64 {
        if end_day <= first_day {
            return 0;
        }
        let (first_year, _, _) = civil_from_days(first_day);
        let (last_year, _, _) = civil_from_days(end_day - 1);
        let mut seconds = 0;
        for year in first_year..=last_year {
            for holiday in &self.recurring_holidays {
                if !holiday.occurs_in(year) {
                    continue;
                }
                let day = days_from_civil(year, i64::from(holiday.month), i64::from(holiday.day));
                if (first_day..end_day).contains(&day) {
                    seconds += self.week.hours_on(day).total_seconds;
                }
            }
        }
        seconds
    }

    /// The running sums of business seconds over the window's days.
    ///
    /// This is [`Self::hours_on`] laid over the whole window in layers, each winning over the
    /// one before: the usual week, the seasons, then the holidays. Layers cost a few simple
    /// passes where asking each day on its own costs searches, which matters when tests parse
    /// thousands of calendars; the tests check that both agree.
    fn sum_up_window(&self) -> WindowSums {
        // Days in the window are not negative offsets from its first day, so the casts are exact.
        let index = |day: i64| (day - WINDOW_FIRST_DAY) as usize;
        let mut seconds_per_day: Vec<i64> = (WINDOW_FIRST_DAY..WINDOW_END_DAY)
            .map(|day| self.week.hours_on(day).total_seconds)
            .collect();
        for season in &self.seasons {
            for day in season.first_day..=season.last_day {
                seconds_per_day[index(day)] = season.week.hours_on(day).total_seconds;
            }
        }
        for holiday in &self.holidays {
            seconds_per_day[index(holiday.first_day)..=index(holiday.last_day)].fill(0);
        }
        let (first_year, _, _) = civil_from_days(WINDOW_FIRST_DAY);
        let (last_year, _, _) = civil_from_days(WINDOW_END_DAY - 1);
        for year in first_year..=last_year {
            for holiday in self.recurring_holidays.iter().filter(|h| h.occurs_in(year)) {
                let day = days_from_civil(year, i64::from(holiday.month), i64::from(holiday.day));
                seconds_per_day[index(day)] = 0;
            }
        }
        let mut running_seconds = 0;
        WindowSums(
            std::iter::once(0)
                .chain(seconds_per_day.into_iter().map(|seconds| {
                    running_seconds += seconds;
                    running_seconds
                }))
                .collect(),
        )
    }
}

/// Running sums of business seconds over the window's days: entry `i` is the business time of
/// the window's first `i` days, so there is one entry more than the window has days. Never
/// changed after `parse`, so clones share it.
#[derive(Clone, PartialEq, Eq)]
struct WindowSums(Arc<[i64]>);

impl WindowSums {
    /// Business seconds of the days in `[first_day, end_day)` that lie in the window.
    fn seconds_in_days(&self, first_day: i64, end_day: i64) -> i64 {
        let window_first = first_day.clamp(WINDOW_FIRST_DAY, WINDOW_END_DAY);
        let window_end = end_day.clamp(WINDOW_FIRST_DAY, WINDOW_END_DAY);
        if window_end <= window_first {
            return 0;
        }
        // Both are clamped into the window, so the indexes are in bounds and not negative.
        self.0[(window_end - WINDOW_FIRST_DAY) as usize]
            - self.0[(window_first - WINDOW_FIRST_DAY) as usize]
    }
}

/// A summary rather than 37,000 numbers in every log line and test failure.
impl fmt::Debug for WindowSums {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowSums")
            .field("n_days", &(self.0.len() - 1))
            .field("total_seconds", &self.0.last())
            .finish()
    }
}

/// One working range of a day, in seconds since local midnight; `end_second` may be 86,400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WorkingRange {
    start_second: i64,
    end_second: i64,
}

/// A day's working ranges: ordered, not overlapping, not touching (touching ones are merged).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct DayHours {
    ranges: Vec<WorkingRange>,
    total_seconds: i64,
}

/// A holiday, or a day off: no working ranges.
static DAY_OFF: DayHours = DayHours {
    ranges: Vec::new(),
    total_seconds: 0,
};

impl DayHours {
    fn from_ranges(mut ranges: Vec<WorkingRange>) -> Self {
        ranges.sort_by_key(|r| r.start_second);
        let mut merged: Vec<WorkingRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start_second <= last.end_second => {
                    last.end_second = last.end_second.max(range.end_second);
                }
                _ => merged.push(range),
            }
        }
        let total_seconds = merged.iter().map(|r| r.end_second - r.start_second).sum();
        Self {
            ranges: merged,
            total_seconds,
        }
    }

    /// Working microseconds in `[from_micro, to_micro)` of this day.
    fn business_micros(&self, from_micro: i64, to_micro: i64) -> i64 {
        self.ranges
            .iter()
            .map(|r| {
                let start = (r.start_second * MICROS_PER_SECOND).max(from_micro);
                let end = (r.end_second * MICROS_PER_SECOND).min(to_micro);
                (end - start).max(0)
            })
            .sum()
    }

    /// The earliest microsecond of the day at which `remaining_micros` (more than 0) working
    /// microseconds have passed since `from_micro`; `None` when the day holds fewer.
    fn instant_after(&self, from_micro: i64, mut remaining_micros: i64) -> Option<i64> {
        for range in &self.ranges {
            let start = (range.start_second * MICROS_PER_SECOND).max(from_micro);
            let end = range.end_second * MICROS_PER_SECOND;
            if start >= end {
                continue;
            }
            if remaining_micros <= end - start {
                return Some(start + remaining_micros);
            }
            remaining_micros -= end - start;
        }
        None
    }

    fn contains(&self, micro: i64) -> bool {
        self.ranges.iter().any(|r| {
            r.start_second * MICROS_PER_SECOND <= micro && micro < r.end_second * MICROS_PER_SECOND
        })
    }
}

/// Working hours for each weekday, Sunday first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Week {
    days: [DayHours; 7],
}

impl Week {
    fn hours_on(&self, day: i64) -> &DayHours {
        &self.days[weekday_from_sunday(day)]
    }

    fn total_seconds(&self) -> i64 {
        self.days.iter().map(|d| d.total_seconds).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Season {
    first_day: i64,
    last_day: i64,
    week: Week,
}

/// Inclusive range of day numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DayRange {
    first_day: i64,
    last_day: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct MonthDay {
    month: u32,
    day: u32,
}

impl MonthDay {
    /// February 29th occurs in leap years only; every other date every year.
    fn occurs_in(self, year: i64) -> bool {
        !(self.month == 2 && self.day == 29) || is_leap_year(year)
    }
}

fn parse_week(path: &str, days: &[DayHoursSpec], violations: &mut Vec<FieldViolation>) -> Week {
    let mut week = Week::default();
    let mut given_at: [Option<usize>; 7] = [None; 7];
    for (index, day) in days.iter().enumerate() {
        let day_path = format!("{path}[{index}]");
        let hours = parse_day_hours(&day_path, &day.hours, violations);
        let Some(weekday) = DAY_NAMES.iter().position(|name| *name == day.day) else {
            violations.push(FieldViolation::new(
                &format!("{day_path}.day"),
                format!(
                    "must be one of {} (lower case), got {:?}",
                    DAY_NAMES.join(", "),
                    day.day
                ),
            ));
            continue;
        };
        match given_at[weekday] {
            Some(first_index) => violations.push(FieldViolation::new(
                &format!("{day_path}.day"),
                format!(
                    "{} is already given at {path}[{first_index}]; a day appears once a week",
                    day.day
                ),
            )),
            None => {
                given_at[weekday] = Some(index);
                week.days[weekday] = hours;
            }
        }
    }
    week
}

fn parse_day_hours(
    day_path: &str,
    hours: &[String],
    violations: &mut Vec<FieldViolation>,
) -> DayHours {
    if hours.len() > MAX_RANGES_PER_DAY {
        violations.push(FieldViolation::new(
            &format!("{day_path}.hours"),
            format!(
                "must hold at most {MAX_RANGES_PER_DAY} ranges, got {}",
                hours.len()
            ),
        ));
        return DayHours::default();
    }
    let mut ranges: Vec<(usize, WorkingRange)> = Vec::new();
    for (index, text) in hours.iter().enumerate() {
        match parse_working_range(text) {
            Ok(range) => ranges.push((index, range)),
            Err(description) => violations.push(FieldViolation::new(
                &format!("{day_path}.hours[{index}]"),
                description,
            )),
        }
    }
    // In start order, a range overlaps an earlier one exactly when it starts before the end
    // of the earlier range that reaches furthest.
    ranges.sort_by_key(|&(index, range)| (range.start_second, index));
    let mut furthest: Option<(usize, WorkingRange)> = None;
    for &(index, range) in &ranges {
        if let Some((furthest_index, furthest_range)) = furthest
            && range.start_second < furthest_range.end_second
        {
            let (earlier, later) = (index.min(furthest_index), index.max(furthest_index));
            violations.push(FieldViolation::new(
                &format!("{day_path}.hours[{later}]"),
                format!(
                    "overlaps {day_path}.hours[{earlier}] ({}); ranges may touch, not overlap",
                    hours[earlier]
                ),
            ));
        }
        if furthest.is_none_or(|(_, f)| range.end_second > f.end_second) {
            furthest = Some((index, range));
        }
    }
    DayHours::from_ranges(ranges.into_iter().map(|(_, range)| range).collect())
}

/// `"07:30-14:30"`: two local times, the first before the second; the second may be `24:00`.
fn parse_working_range(text: &str) -> Result<WorkingRange, String> {
    let format_error = || {
        format!(
            "must be a range of local times like 07:30-14:30 (HH:MM-HH:MM, 24:00 at most), \
             got {text:?}"
        )
    };
    let (start, end) = text.split_once('-').ok_or_else(format_error)?;
    let start_second = parse_time_of_day(start).ok_or_else(format_error)?;
    let end_second = parse_time_of_day(end).ok_or_else(format_error)?;
    if end_second <= start_second {
        return Err(format!("must end after it starts, got {text:?}"));
    }
    Ok(WorkingRange {
        start_second,
        end_second,
    })
}

/// `"HH:MM"` from `00:00` to `24:00`, as seconds since midnight.
fn parse_time_of_day(text: &str) -> Option<i64> {
    let [hours, minutes] = fixed_width_numbers(text, ':', [2, 2])?;
    let valid = (hours < 24 && minutes < 60) || (hours == 24 && minutes == 0);
    valid.then_some(i64::from(hours) * 3600 + i64::from(minutes) * 60)
}

/// Fixed-width decimal fields between separators: `("2026-03-19", '-', [4, 2, 2])` gives
/// `[2026, 3, 19]`. Signs, spaces and other widths give `None`.
fn fixed_width_numbers<const N: usize>(
    text: &str,
    separator: char,
    widths: [usize; N],
) -> Option<[u32; N]> {
    let mut numbers = [0; N];
    let mut fields = text.split(separator);
    for (number, width) in numbers.iter_mut().zip(widths) {
        let field = fields.next()?;
        if field.len() != width || !field.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *number = field.parse().ok()?;
    }
    fields.next().is_none().then_some(numbers)
}

fn parse_seasons(specs: &[SeasonSpec], violations: &mut Vec<FieldViolation>) -> Vec<Season> {
    if specs.len() > MAX_SEASONS {
        violations.push(FieldViolation::new(
            "seasons",
            format!(
                "must hold at most {MAX_SEASONS} seasons, got {}",
                specs.len()
            ),
        ));
        return Vec::new();
    }
    let mut seasons: Vec<(usize, Season)> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let path = format!("seasons[{index}]");
        parse_name(&path, &spec.name, violations);
        let days = parse_date_range(&path, &spec.from, &spec.to, violations);
        let week = parse_week(&format!("{path}.week"), &spec.week, violations);
        if let Some(days) = days {
            seasons.push((
                index,
                Season {
                    first_day: days.first_day,
                    last_day: days.last_day,
                    week,
                },
            ));
        }
    }
    // As for working ranges: in start order, a season overlaps an earlier one when it starts
    // on or before the last day of the earlier season that lasts longest.
    seasons.sort_by_key(|(index, season)| (season.first_day, *index));
    let mut furthest: Option<(usize, i64)> = None;
    for &(index, ref season) in &seasons {
        if let Some((furthest_index, furthest_last_day)) = furthest
            && season.first_day <= furthest_last_day
        {
            let (earlier, later) = (index.min(furthest_index), index.max(furthest_index));
            violations.push(FieldViolation::new(
                &format!("seasons[{later}]"),
                format!(
                    "overlaps seasons[{earlier}] ({:?}); seasons must not share a day",
                    specs[earlier].name
                ),
            ));
        }
        if furthest.is_none_or(|(_, last_day)| season.last_day > last_day) {
            furthest = Some((index, season.last_day));
        }
    }
    seasons.into_iter().map(|(_, season)| season).collect()
}

fn parse_recurring_holidays(
    specs: &[RecurringHolidaySpec],
    violations: &mut Vec<FieldViolation>,
) -> Vec<MonthDay> {
    if specs.len() > MAX_RECURRING_HOLIDAYS {
        violations.push(FieldViolation::new(
            "recurring_holidays",
            format!(
                "must hold at most {MAX_RECURRING_HOLIDAYS} holidays, got {}",
                specs.len()
            ),
        ));
        return Vec::new();
    }
    let mut dates = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let path = format!("recurring_holidays[{index}]");
        parse_name(&path, &spec.name, violations);
        match parse_month_day(&spec.date) {
            Ok(date) => dates.push(date),
            Err(description) => {
                violations.push(FieldViolation::new(&format!("{path}.date"), description))
            }
        }
    }
    // Two holidays on the same date (two names for one day) are harmless: one day off.
    dates.sort_unstable();
    dates.dedup();
    dates
}

fn parse_holidays(specs: &[HolidaySpec], violations: &mut Vec<FieldViolation>) -> Vec<DayRange> {
    if specs.len() > MAX_HOLIDAYS {
        violations.push(FieldViolation::new(
            "holidays",
            format!(
                "must hold at most {MAX_HOLIDAYS} holidays, got {}",
                specs.len()
            ),
        ));
        return Vec::new();
    }
    let mut ranges = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let path = format!("holidays[{index}]");
        parse_name(&path, &spec.name, violations);
        ranges.extend(parse_date_range(&path, &spec.from, &spec.to, violations));
    }
    // One-time holidays may overlap (an Eid announced over a recurring holiday, or announced
    // twice); days off are days off, so overlapping and adjacent ranges merge.
    ranges.sort_by_key(|r| r.first_day);
    let mut merged: Vec<DayRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.first_day <= last.last_day + 1 => {
                last.last_day = last.last_day.max(range.last_day);
            }
            _ => merged.push(range),
        }
    }
    merged
}

fn parse_name(path: &str, name: &str, violations: &mut Vec<FieldViolation>) {
    if let Err(violation) = parse_text(&format!("{path}.name"), name, 1, MAX_NAME_CHARS, false) {
        violations.push(violation);
    }
}

/// `from` and `to` of a season or a holiday: two dates, `to` not before `from`.
fn parse_date_range(
    path: &str,
    from: &str,
    to: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<DayRange> {
    let first_day = parse_date(from)
        .map_err(|description| {
            violations.push(FieldViolation::new(&format!("{path}.from"), description))
        })
        .ok();
    let last_day = parse_date(to)
        .map_err(|description| {
            violations.push(FieldViolation::new(&format!("{path}.to"), description))
        })
        .ok();
    let (first_day, last_day) = (first_day?, last_day?);
    if last_day < first_day {
        violations.push(FieldViolation::new(
            &format!("{path}.to"),
            format!("must not be before from ({from}), got {to}"),
        ));
        return None;
    }
    Some(DayRange {
        first_day,
        last_day,
    })
}

/// `"YYYY-MM-DD"` between 2000-01-01 and 2100-12-31, as a day number.
fn parse_date(text: &str) -> Result<i64, String> {
    let Some([year, month, day]) = fixed_width_numbers(text, '-', [4, 2, 2]) else {
        return Err(format!(
            "must be a date like 2026-03-19 (YYYY-MM-DD), got {text:?}"
        ));
    };
    // Four digits always fit an i32.
    if NaiveDate::from_ymd_opt(year as i32, month, day).is_none() {
        return Err(format!("is not a real date, got {text}"));
    }
    let day_number = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    if !(WINDOW_FIRST_DAY..WINDOW_END_DAY).contains(&day_number) {
        return Err(format!(
            "must be between {FIRST_DATE} and {LAST_DATE}, got {text}"
        ));
    }
    Ok(day_number)
}

/// `"MM-DD"`, any day that occurs in some year (so `02-29` too).
fn parse_month_day(text: &str) -> Result<MonthDay, String> {
    let Some([month, day]) = fixed_width_numbers(text, '-', [2, 2]) else {
        return Err(format!(
            "must be a day of the year like 11-20 (MM-DD), got {text:?}"
        ));
    };
    // 2000 is a leap year, so this accepts 02-29 and nothing that never occurs.
    if NaiveDate::from_ymd_opt(2000, month, day).is_none() {
        return Err(format!("is not a real day of the year, got {text}"));
    }
    Ok(MonthDay { month, day })
}

/// The local day number and the microsecond within that day of an instant. Works for every
/// `i64` without overflow.
fn local_day_and_micro(at: Timestamp) -> (i64, i64) {
    let micros = at.as_micros();
    let mut day = micros.div_euclid(MICROS_PER_DAY);
    let mut micro = micros.rem_euclid(MICROS_PER_DAY) + MUSCAT_OFFSET_MICROS;
    if micro >= MICROS_PER_DAY {
        micro -= MICROS_PER_DAY;
        day += 1;
    }
    (day, micro)
}

/// The instant at a microsecond of a local day; `None` beyond what a [`Timestamp`] holds.
fn timestamp_at(day: i64, micro: i64) -> Option<Timestamp> {
    // The day's midnight alone may lie before i64::MIN while the instant itself does not.
    let micros =
        i128::from(day) * i128::from(MICROS_PER_DAY) + i128::from(micro - MUSCAT_OFFSET_MICROS);
    i64::try_from(micros).ok().map(Timestamp::from_micros)
}

/// 0 for Sunday .. 6 for Saturday; day 0 (1970-01-01) was a Thursday.
fn weekday_from_sunday(day: i64) -> usize {
    // rem_euclid(7) is in 0..7, so the cast is exact.
    (day + 4).rem_euclid(7) as usize
}

fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

// Day numbers and Gregorian dates, by Howard Hinnant's algorithms ("chrono-Compatible Low-Level
// Date Algorithms"). chrono validates the dates of a spec; these run on the hot path because
// they are plain integer arithmetic that covers every day an i64 Timestamp can reach, where
// chrono stops at year 262,143.

/// The day number (days since 1970-01-01) of a proleptic Gregorian date.
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_based_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * march_based_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_GREGORIAN_CYCLE + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day number.
fn civil_from_days(day_number: i64) -> (i64, u32, u32) {
    let shifted = day_number + 719_468;
    let era = shifted.div_euclid(DAYS_PER_GREGORIAN_CYCLE);
    let day_of_era = shifted - era * DAYS_PER_GREGORIAN_CYCLE;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_based_month + 2) / 5 + 1;
    let month = if march_based_month < 10 {
        march_based_month + 3
    } else {
        march_based_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Month is in 1..=12 and day in 1..=31, so the casts are exact.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDateTime, Weekday};
    use proptest::prelude::*;

    const HOUR: i64 = 3600;

    impl BusinessCalendar {
        /// Business microseconds in `[from, to)`, exactly.
        fn business_micros_between(&self, from: Timestamp, to: Timestamp) -> i128 {
            let (whole_day_seconds, partial_day_micros) = self.business_time_between(from, to);
            i128::from(whole_day_seconds) * i128::from(MICROS_PER_SECOND)
                + i128::from(partial_day_micros)
        }
    }

    /// A local Muscat time written `2026-01-22 12:00`.
    fn muscat(text: &str) -> Timestamp {
        let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("test time");
        let utc_seconds = local.and_utc().timestamp() - Timestamp::MUSCAT_OFFSET_SECONDS;
        Timestamp::from_micros(utc_seconds * MICROS_PER_SECOND)
    }

    fn plus_seconds(at: Timestamp, seconds: i64) -> Timestamp {
        Timestamp::from_micros(at.as_micros() + seconds * MICROS_PER_SECOND)
    }

    fn weekday_of(text: &str) -> Weekday {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .expect("test date")
            .weekday()
    }

    fn day(name: &str, hours: &[&str]) -> DayHoursSpec {
        DayHoursSpec {
            day: name.to_owned(),
            hours: hours.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn week_spec(days: Vec<DayHoursSpec>) -> CalendarSpec {
        CalendarSpec {
            week: days,
            seasons: Vec::new(),
            recurring_holidays: Vec::new(),
            holidays: Vec::new(),
        }
    }

    fn every_day(hours: &[&str]) -> Vec<DayHoursSpec> {
        DAY_NAMES.iter().map(|name| day(name, hours)).collect()
    }

    fn season(name: &str, from: &str, to: &str) -> SeasonSpec {
        SeasonSpec {
            name: name.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            week: vec![day("sunday", &["09:00-14:00"])],
        }
    }

    fn holiday(name: &str, from: &str, to: &str) -> HolidaySpec {
        HolidaySpec {
            name: name.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    fn recurring(name: &str, date: &str) -> RecurringHolidaySpec {
        RecurringHolidaySpec {
            name: name.to_owned(),
            date: date.to_owned(),
        }
    }

    fn calendar(spec: CalendarSpec) -> BusinessCalendar {
        BusinessCalendar::parse(spec).expect("a valid test calendar")
    }

    /// The paths of the violations a spec gets.
    fn violation_paths(spec: CalendarSpec) -> Vec<String> {
        match BusinessCalendar::parse(spec) {
            Ok(_) => Vec::new(),
            Err(violations) => violations.into_iter().map(|v| v.field).collect(),
        }
    }

    #[test]
    fn the_default_calendar_parses() {
        let calendar = BusinessCalendar::from_toml(MUSCAT_CALENDAR_TOML);
        assert!(calendar.is_ok(), "{calendar:?}");
        let calendar = BusinessCalendar::muscat_default();
        assert_eq!(calendar.spec().week.len(), 5);
        assert_eq!(calendar.spec().seasons.len(), 2);
        assert_eq!(calendar.spec().recurring_holidays.len(), 3);
        assert_eq!(calendar.spec().holidays.len(), 2);
        assert!(
            calendar
                .spec()
                .holidays
                .iter()
                .all(|h| h.name.contains(" / "))
        );
    }

    #[test]
    fn thursday_afternoon_to_sunday_morning_skips_the_weekend() {
        assert_eq!(weekday_of("2026-01-22"), Weekday::Thu);
        let calendar = BusinessCalendar::muscat_default();
        let thursday = muscat("2026-01-22 12:00");
        let sunday = muscat("2026-01-25 09:00");
        // Thursday 12:00-14:30 and Sunday 07:30-09:00.
        assert_eq!(
            calendar.business_seconds_between(thursday, sunday),
            4 * HOUR
        );
        assert_eq!(calendar.business_minutes_between(thursday, sunday), 240);
        assert_eq!(
            calendar.add_business_seconds(thursday, 4 * HOUR),
            Some(sunday)
        );
        assert_eq!(calendar.add_business_minutes(thursday, 240), Some(sunday));
        assert!(!calendar.is_working_time(muscat("2026-01-23 10:00")));
        assert!(!calendar.is_working_time(muscat("2026-01-24 10:00")));
    }

    #[test]
    fn holidays_are_skipped() {
        assert_eq!(weekday_of("2026-01-11"), Weekday::Sun);
        let calendar = BusinessCalendar::muscat_default();
        // Thursday 12:00-14:30, then Accession Day on Sunday the 11th, then Monday 07:30-09:00.
        let thursday = muscat("2026-01-08 12:00");
        let monday = muscat("2026-01-12 09:00");
        assert_eq!(
            calendar.business_seconds_between(thursday, monday),
            4 * HOUR
        );
        assert_eq!(
            calendar.add_business_seconds(thursday, 4 * HOUR),
            Some(monday)
        );
        assert!(!calendar.is_working_time(muscat("2026-01-11 10:00")));
        assert!(calendar.is_working_time(muscat("2026-01-12 10:00")));

        // Eid al-Fitr, Thursday 2026-03-19 to Monday 2026-03-23: Tuesday is the next working day.
        assert_eq!(weekday_of("2026-03-24"), Weekday::Tue);
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2026-03-19 00:00"), muscat("2026-03-24 00:00")),
            0
        );
        assert_eq!(
            calendar.add_business_seconds(muscat("2026-03-18 13:00"), 2 * HOUR),
            Some(muscat("2026-03-24 08:30"))
        );
        // National Day every year, here on a Monday and a Tuesday.
        assert_eq!(weekday_of("2028-11-20"), Weekday::Mon);
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2028-11-19 00:00"), muscat("2028-11-23 00:00")),
            2 * 7 * HOUR
        );
    }

    #[test]
    fn ramadan_hours_apply_inside_the_season_only() {
        let calendar = BusinessCalendar::muscat_default();
        let hours_on = |date: &str| {
            let midnight = muscat(&format!("{date} 00:00"));
            calendar.business_seconds_between(midnight, plus_seconds(midnight, SECONDS_PER_DAY))
        };
        assert_eq!(weekday_of("2026-02-17"), Weekday::Tue);
        assert_eq!(hours_on("2026-02-15"), 7 * HOUR);
        assert_eq!(hours_on("2026-02-17"), 7 * HOUR);
        assert_eq!(
            hours_on("2026-02-18"),
            5 * HOUR,
            "first day of Ramadan 1447"
        );
        assert_eq!(hours_on("2026-03-01"), 5 * HOUR);
        assert_eq!(hours_on("2026-03-18"), 5 * HOUR);
        assert_eq!(hours_on("2026-03-19"), 0, "Eid al-Fitr wins over Ramadan");
        assert_eq!(hours_on("2026-03-24"), 7 * HOUR);
        assert_eq!(hours_on("2027-02-07"), 7 * HOUR);
        assert_eq!(
            hours_on("2027-02-08"),
            5 * HOUR,
            "first day of Ramadan 1448"
        );
        assert_eq!(hours_on("2027-03-09"), 5 * HOUR);
        assert_eq!(hours_on("2027-03-10"), 7 * HOUR);
        assert_eq!(weekday_of("2028-02-14"), Weekday::Mon);
        assert_eq!(hours_on("2028-02-14"), 7 * HOUR, "no season given for 2028");
        assert_eq!(hours_on("2026-02-20"), 0, "Friday is off in Ramadan too");

        assert!(!calendar.is_working_time(muscat("2026-03-01 08:00")));
        assert!(calendar.is_working_time(muscat("2026-03-01 09:00")));
        assert!(calendar.is_working_time(muscat("2026-02-15 08:00")));
        assert!(!calendar.is_working_time(muscat("2026-02-15 14:30")));
    }

    #[test]
    fn a_lunch_break_between_two_ranges_is_not_counted() {
        assert_eq!(weekday_of("2026-01-18"), Weekday::Sun);
        let calendar = calendar(week_spec(vec![day(
            "sunday",
            &["13:00-17:00", "08:00-12:00"],
        )]));
        let eleven = muscat("2026-01-18 11:00");
        assert_eq!(
            calendar.business_seconds_between(eleven, muscat("2026-01-18 14:00")),
            2 * HOUR
        );
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2026-01-18 00:00"), muscat("2026-01-19 00:00")),
            8 * HOUR
        );
        // Landing exactly on the end of the morning gives noon, not 13:00.
        assert_eq!(
            calendar.add_business_seconds(eleven, HOUR),
            Some(muscat("2026-01-18 12:00"))
        );
        assert_eq!(
            calendar.add_business_seconds(eleven, HOUR + 1),
            Some(plus_seconds(muscat("2026-01-18 13:00"), 1))
        );
        // The whole day's eight hours end at 17:00 that day, not 08:00 a week later.
        assert_eq!(
            calendar.add_business_seconds(muscat("2026-01-18 06:00"), 8 * HOUR),
            Some(muscat("2026-01-18 17:00"))
        );
        assert!(calendar.is_working_time(plus_seconds(muscat("2026-01-18 12:00"), -1)));
        assert!(!calendar.is_working_time(muscat("2026-01-18 12:00")));
        assert!(!calendar.is_working_time(muscat("2026-01-18 12:30")));
        assert!(calendar.is_working_time(muscat("2026-01-18 13:00")));
    }

    #[test]
    fn touching_ranges_merge() {
        let calendar = calendar(week_spec(vec![day(
            "sunday",
            &["10:00-12:00", "08:00-10:00", "12:00-24:00"],
        )]));
        assert_eq!(calendar.week.days[0].ranges.len(), 1);
        assert_eq!(calendar.week.days[0].total_seconds, 16 * HOUR);
        // 24:00 is the end of the day: Sunday's work runs up to Monday's midnight.
        assert_eq!(
            calendar.add_business_seconds(muscat("2026-01-18 20:00"), 4 * HOUR),
            Some(muscat("2026-01-19 00:00"))
        );
    }

    #[test]
    fn a_span_over_the_year_end_counts_new_years_day_as_a_working_day() {
        assert_eq!(weekday_of("2029-12-31"), Weekday::Mon);
        let calendar = BusinessCalendar::muscat_default();
        // Monday 12:00-14:30, Tuesday 1 January in full, Wednesday 07:30-09:00.
        let from = muscat("2029-12-31 12:00");
        let to = muscat("2030-01-02 09:00");
        assert_eq!(calendar.business_seconds_between(from, to), 11 * HOUR);
        assert_eq!(calendar.add_business_seconds(from, 11 * HOUR), Some(to));
    }

    #[test]
    fn instants_outside_working_hours() {
        let calendar = BusinessCalendar::muscat_default();
        let sunday_early = muscat("2026-01-18 05:00");
        assert_eq!(
            calendar.business_seconds_between(sunday_early, muscat("2026-01-18 20:00")),
            7 * HOUR
        );
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2026-01-16 10:00"), muscat("2026-01-17 10:00")),
            0,
            "Friday to Saturday"
        );
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2026-01-18 15:00"), muscat("2026-01-19 06:00")),
            0,
            "Sunday evening to Monday before work"
        );
        assert_eq!(
            calendar.add_business_seconds(muscat("2026-01-16 10:00"), HOUR),
            Some(muscat("2026-01-18 08:30"))
        );
        assert_eq!(
            calendar.business_seconds_between(muscat("2026-01-19 10:00"), sunday_early),
            0,
            "backwards"
        );
        // A whole working day from its start ends at its end, not at the next day's start.
        assert_eq!(
            calendar.add_business_seconds(muscat("2026-01-18 07:30"), 7 * HOUR),
            Some(muscat("2026-01-18 14:30"))
        );
        assert_eq!(
            calendar.add_business_seconds(muscat("2026-01-18 03:00"), 7 * HOUR),
            Some(muscat("2026-01-18 14:30"))
        );
    }

    #[test]
    fn adding_then_measuring_gives_the_same_seconds() {
        let calendar = BusinessCalendar::muscat_default();
        let starts = [
            "2026-01-16 10:00",
            "2026-01-18 07:30",
            "2026-01-18 14:29",
            "2026-02-17 13:00",
            "2026-03-18 13:59",
            "2026-11-19 14:00",
            "2029-12-31 12:00",
        ];
        let amounts = [
            1,
            59,
            HOUR,
            7 * HOUR,
            7 * HOUR + 1,
            100 * HOUR,
            2_000 * HOUR,
        ];
        for start in starts {
            for seconds in amounts {
                let from = muscat(start);
                let reached = calendar
                    .add_business_seconds(from, seconds)
                    .expect("reachable");
                assert_eq!(
                    calendar.business_seconds_between(from, reached),
                    seconds,
                    "{start} + {seconds} s"
                );
                assert!(calendar.is_working_time(plus_seconds(reached, -1)));
            }
        }
    }

    #[test]
    fn adding_nothing_stays_put() {
        let calendar = BusinessCalendar::muscat_default();
        let friday = muscat("2026-01-16 10:00");
        assert_eq!(calendar.add_business_seconds(friday, 0), Some(friday));
        assert_eq!(calendar.add_business_seconds(friday, -5), Some(friday));
        let odd = Timestamp::from_micros(friday.as_micros() + 123);
        assert_eq!(calendar.add_business_seconds(odd, 0), Some(odd));
    }

    #[test]
    fn a_calendar_without_working_hours_never_reaches_a_deadline() {
        let calendar = calendar(week_spec(Vec::new()));
        let from = muscat("2026-01-18 10:00");
        assert_eq!(calendar.add_business_seconds(from, 1), None);
        assert_eq!(calendar.add_business_seconds(from, 0), Some(from));
        assert_eq!(
            calendar.business_seconds_between(from, muscat("2036-01-18 10:00")),
            0
        );
        assert!(!calendar.is_working_time(from));
    }

    #[test]
    fn deadlines_beyond_ten_years_are_none() {
        let calendar = BusinessCalendar::muscat_default();
        let from = muscat("2030-01-01 00:00");
        // About 35 hours a week: nine years' worth is reachable, eleven years' is not.
        let nine_years = 9 * 52 * 35 * HOUR;
        let reached = calendar
            .add_business_seconds(from, nine_years)
            .expect("reachable");
        assert_eq!(calendar.business_seconds_between(from, reached), nine_years);
        assert_eq!(
            calendar.add_business_seconds(from, 11 * 52 * 35 * HOUR),
            None
        );
        assert_eq!(calendar.add_business_seconds(from, i64::MAX), None);
        // Every day, all day: exactly ten years of 3,653 days is the last reachable amount.
        let always = calendar_always_open();
        let horizon = SEARCH_HORIZON_DAYS * SECONDS_PER_DAY;
        assert_eq!(
            always.add_business_seconds(from, horizon),
            Some(plus_seconds(from, horizon))
        );
        assert_eq!(always.add_business_seconds(from, horizon + 1), None);
    }

    fn calendar_always_open() -> BusinessCalendar {
        calendar(week_spec(every_day(&["00:00-24:00"])))
    }

    #[test]
    fn a_february_29th_holiday_applies_in_leap_years_only() {
        let mut spec = week_spec(every_day(&["09:00-17:00"]));
        spec.recurring_holidays = vec![recurring("Leap Day / يوم كبيس", "02-29")];
        let calendar = calendar(spec);
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2028-02-28 00:00"), muscat("2028-03-02 00:00")),
            2 * 8 * HOUR,
            "2028: 28 February and 1 March"
        );
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2027-02-28 00:00"), muscat("2027-03-02 00:00")),
            2 * 8 * HOUR,
            "2027 has no 29 February, and 1 March is worked"
        );
        assert!(!calendar.is_working_time(muscat("2028-02-29 10:00")));
        assert!(calendar.is_working_time(muscat("2027-03-01 10:00")));
        assert!(
            calendar.is_working_time(muscat("2100-03-01 10:00")),
            "2100 is not a leap year"
        );
        // 2000 was a leap year, 2100 will not be: 25 leap days in 2000..=2099.
        let century = calendar
            .business_seconds_between(muscat("2000-01-01 00:00"), muscat("2100-01-01 00:00"));
        let n_days = days_from_civil(2100, 1, 1) - days_from_civil(2000, 1, 1);
        assert_eq!(century, (n_days - 25) * 8 * HOUR);
    }

    #[test]
    fn day_numbers_agree_with_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        let mut day_number = -800_000;
        while day_number < 800_000 {
            let date = epoch + chrono::Duration::days(day_number);
            let (year, month, day) = civil_from_days(day_number);
            assert_eq!(
                (year, month, day),
                (i64::from(date.year()), date.month(), date.day())
            );
            assert_eq!(
                days_from_civil(year, i64::from(month), i64::from(day)),
                day_number
            );
            assert_eq!(
                weekday_from_sunday(day_number),
                date.weekday().num_days_from_sunday() as usize
            );
            day_number += 97;
        }
    }

    #[test]
    fn extreme_instants_neither_overflow_nor_take_long() {
        let calendar = BusinessCalendar::muscat_default();
        let (earliest, latest) = (
            Timestamp::from_micros(i64::MIN),
            Timestamp::from_micros(i64::MAX),
        );
        let all = calendar.business_seconds_between(earliest, latest);
        assert!(all > 0 && all < i64::MAX / MICROS_PER_SECOND);
        assert_eq!(calendar.add_business_seconds(latest, 1), None);
        assert!(calendar.add_business_seconds(earliest, HOUR).is_some());
        let _ = calendar.is_working_time(earliest);
        let _ = calendar.is_working_time(latest);
        // A deadline beyond the last representable instant is unreachable, not wrapped around.
        let always = calendar_always_open();
        let ten_seconds_before_the_end = plus_seconds(latest, -10);
        assert_eq!(
            always.add_business_seconds(ten_seconds_before_the_end, 10),
            Some(latest)
        );
        assert_eq!(
            always.add_business_seconds(ten_seconds_before_the_end, 11),
            None
        );
        assert_eq!(
            always.business_seconds_between(earliest, latest),
            i64::try_from(
                (i128::from(i64::MAX) - i128::from(i64::MIN)) / i128::from(MICROS_PER_SECOND)
            )
            .expect("fits")
        );
    }

    #[test]
    fn whole_days_over_centuries_match_a_day_by_day_count() {
        // Past 400 years the recurring holidays are counted by whole Gregorian cycles.
        let mut spec = week_spec(vec![
            day("sunday", &["07:30-14:30"]),
            day("monday", &["08:00-12:00", "13:00-16:00"]),
            day("saturday", &["10:00-11:00"]),
        ]);
        spec.recurring_holidays = vec![
            recurring("Leap Day", "02-29"),
            recurring("New Year", "01-01"),
            recurring("National Day", "11-20"),
        ];
        spec.seasons = vec![season("Ramadan", "2026-02-18", "2026-03-19")];
        spec.holidays = vec![holiday("Eid", "2026-03-19", "2026-03-23")];
        let calendar = calendar(spec);
        let first_day = days_from_civil(1790, 3, 1);
        let end_day = first_day + 2 * DAYS_PER_GREGORIAN_CYCLE + 1_234;
        let day_by_day: i64 = (first_day..end_day)
            .map(|d| calendar.hours_on(d).total_seconds)
            .sum();
        assert_eq!(
            calendar.business_seconds_in_days(first_day, end_day),
            day_by_day
        );
    }

    // Validation.

    fn muscat_default_spec() -> CalendarSpec {
        BusinessCalendar::muscat_default().spec().clone()
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let spec = week_spec(vec![
            day("sunday", &["07:30-14:30"]),
            day("monday", &["08:00-12:00", "11:00-13:00", "12:30-12:45"]),
        ]);
        assert_eq!(
            violation_paths(spec),
            ["week[1].hours[1]", "week[1].hours[2]"]
        );
        // Listed out of order, the later entry is still the one named.
        let spec = week_spec(vec![day("monday", &["11:00-13:00", "08:00-12:00"])]);
        assert_eq!(violation_paths(spec), ["week[0].hours[1]"]);
        let spec = week_spec(vec![day("monday", &["08:00-12:00", "12:00-13:00"])]);
        assert!(violation_paths(spec).is_empty(), "touching is fine");
    }

    #[test]
    fn bad_and_repeated_day_names_are_rejected() {
        let spec = week_spec(vec![
            day("sunday", &["07:30-14:30"]),
            day("Monday", &["07:30-14:30"]),
            day("sunday", &["07:30-14:30"]),
            day("funday", &[]),
        ]);
        assert_eq!(
            violation_paths(spec),
            ["week[1].day", "week[2].day", "week[3].day"]
        );
    }

    #[test]
    fn bad_ranges_are_rejected() {
        let spec = week_spec(vec![day(
            "sunday",
            &[
                "14:00-08:00",
                "09:00-09:00",
                "7:30-14:30",
                "07:30-24:01",
                "24:00-24:00",
                "23:00-24:00",
                "07:30 - 08:00",
                "",
            ],
        )]);
        assert_eq!(
            violation_paths(spec),
            [
                "week[0].hours[0]",
                "week[0].hours[1]",
                "week[0].hours[2]",
                "week[0].hours[3]",
                "week[0].hours[4]",
                "week[0].hours[6]",
                "week[0].hours[7]",
            ]
        );
        let nine: Vec<String> = (0..9).map(|h| format!("0{h}:00-0{h}:30")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert_eq!(
            violation_paths(week_spec(vec![day("sunday", &nine)])),
            ["week[0].hours"]
        );
        assert!(violation_paths(week_spec(vec![day("sunday", &nine[..8])])).is_empty());
    }

    #[test]
    fn bad_dates_are_rejected() {
        let mut spec = muscat_default_spec();
        spec.seasons[0].from = "2026-02-30".to_owned();
        spec.seasons[1].to = "2101-01-01".to_owned();
        spec.holidays[0].from = "1999-12-31".to_owned();
        spec.holidays[1].to = "2026/05/30".to_owned();
        spec.recurring_holidays[0].date = "02-30".to_owned();
        spec.recurring_holidays[1].date = "13-01".to_owned();
        spec.recurring_holidays[2].date = "1-1".to_owned();
        assert_eq!(
            violation_paths(spec),
            [
                "seasons[0].from",
                "seasons[1].to",
                "recurring_holidays[0].date",
                "recurring_holidays[1].date",
                "recurring_holidays[2].date",
                "holidays[0].from",
                "holidays[1].to",
            ]
        );
        let mut spec = muscat_default_spec();
        spec.holidays[0].from = "2000-01-01".to_owned();
        spec.holidays[1].to = "2100-12-31".to_owned();
        spec.recurring_holidays[0].date = "02-29".to_owned();
        assert!(
            violation_paths(spec).is_empty(),
            "the bounds themselves are fine"
        );
    }

    #[test]
    fn overlapping_seasons_are_rejected() {
        let mut spec = week_spec(Vec::new());
        spec.seasons = vec![
            season("Ramadan", "2026-02-18", "2026-03-19"),
            season("Summer", "2026-06-01", "2026-08-31"),
            season("Late Ramadan", "2026-03-19", "2026-04-01"),
            season("Inside summer", "2026-07-01", "2026-07-02"),
            season("Autumn", "2026-09-01", "2026-10-01"),
        ];
        assert_eq!(violation_paths(spec.clone()), ["seasons[2]", "seasons[3]"]);
        let violations = BusinessCalendar::parse(spec).expect_err("overlaps");
        assert!(violations[0].description.contains("seasons[0]"));
        assert!(violations[1].description.contains("seasons[1]"));
    }

    #[test]
    fn an_end_before_the_start_is_rejected() {
        let mut spec = muscat_default_spec();
        spec.holidays
            .push(holiday("Backwards", "2026-03-23", "2026-03-19"));
        spec.seasons[1].to = "2027-02-07".to_owned();
        assert_eq!(violation_paths(spec), ["seasons[1].to", "holidays[2].to"]);
        let mut spec = muscat_default_spec();
        spec.holidays
            .push(holiday("One day", "2026-07-23", "2026-07-23"));
        assert!(violation_paths(spec).is_empty());
    }

    #[test]
    fn names_must_be_given_and_short() {
        let mut spec = muscat_default_spec();
        spec.seasons[0].name = "  ".to_owned();
        spec.recurring_holidays[0].name = "x".repeat(101);
        spec.holidays[1].name = "ع".repeat(100);
        assert_eq!(
            violation_paths(spec),
            ["seasons[0].name", "recurring_holidays[0].name"]
        );
    }

    #[test]
    fn list_limits_are_enforced() {
        let mut spec = week_spec(Vec::new());
        spec.seasons = (0..201)
            .map(|i| {
                let day = days_from_civil(2030, 1, 1) + i;
                let (y, m, d) = civil_from_days(day);
                let date = format!("{y}-{m:02}-{d:02}");
                season("Day", &date, &date)
            })
            .collect();
        spec.recurring_holidays = (0..101).map(|_| recurring("Day", "01-01")).collect();
        spec.holidays = (0..2_001)
            .map(|_| holiday("Day", "2030-01-01", "2030-01-01"))
            .collect();
        assert_eq!(
            violation_paths(spec.clone()),
            ["seasons", "recurring_holidays", "holidays"]
        );
        spec.seasons.truncate(200);
        spec.recurring_holidays.truncate(100);
        spec.holidays.truncate(2_000);
        assert!(violation_paths(spec).is_empty());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut spec = muscat_default_spec();
        spec.week[2].day = "wensday".to_owned();
        spec.week[3].hours = vec!["08:00-12:00".to_owned(), "10:00-11:00".to_owned()];
        spec.seasons[0].week[0].hours[0] = "14:00-09:00".to_owned();
        spec.seasons[1].from = "2026-03-01".to_owned();
        spec.recurring_holidays[2].name = String::new();
        spec.holidays[1].to = "2026-05-01".to_owned();
        assert_eq!(
            violation_paths(spec),
            [
                "week[2].day",
                "week[3].hours[1]",
                "seasons[0].week[0].hours[0]",
                "seasons[1]",
                "recurring_holidays[2].name",
                "holidays[1].to",
            ]
        );
    }

    #[test]
    fn a_spec_survives_toml() {
        let spec = muscat_default_spec();
        let text = toml::to_string(&spec).expect("serialize");
        assert_eq!(
            BusinessCalendar::from_toml(&text).map(|c| c.spec().clone()),
            Ok(spec)
        );
        assert!(BusinessCalendar::from_toml("week = []\nweekend = []\n").is_err());
    }

    // Properties, on the default calendar and on random valid ones.

    /// The hours of one day, computed from the spec with chrono alone: what the arithmetic
    /// must agree with.
    fn reference_day_seconds(spec: &CalendarSpec, date: NaiveDate) -> i64 {
        let date_of = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date");
        let month_day = date.format("%m-%d").to_string();
        if spec.recurring_holidays.iter().any(|h| h.date == month_day)
            || spec
                .holidays
                .iter()
                .any(|h| date_of(&h.from) <= date && date <= date_of(&h.to))
        {
            return 0;
        }
        let week = spec
            .seasons
            .iter()
            .find(|s| date_of(&s.from) <= date && date <= date_of(&s.to))
            .map_or(&spec.week, |s| &s.week);
        let name = DAY_NAMES[date.weekday().num_days_from_sunday() as usize];
        let minutes = |hhmm: &str| {
            let (h, m) = hhmm.split_once(':').expect("time");
            h.parse::<i64>().expect("hours") * 60 + m.parse::<i64>().expect("minutes")
        };
        week.iter()
            .filter(|d| d.day == name)
            .flat_map(|d| &d.hours)
            .map(|range| {
                let (start, end) = range.split_once('-').expect("range");
                (minutes(end) - minutes(start)) * 60
            })
            .sum()
    }

    fn hhmm(quarter_hours: u32) -> String {
        format!("{:02}:{:02}", quarter_hours / 4, quarter_hours % 4 * 15)
    }

    fn date_text(day_number: i64) -> String {
        let (year, month, day) = civil_from_days(day_number);
        format!("{year}-{month:02}-{day:02}")
    }

    /// A day's ranges on quarter hours: ordered, possibly touching, never overlapping.
    fn day_hours_strategy() -> impl Strategy<Value = Vec<String>> {
        (prop::collection::vec(0u32..=96, 0..=8), any::<bool>()).prop_map(
            |(mut bounds, reversed)| {
                bounds.sort_unstable();
                let mut ranges: Vec<String> = bounds
                    .chunks_exact(2)
                    .filter(|pair| pair[0] < pair[1])
                    .map(|pair| format!("{}-{}", hhmm(pair[0]), hhmm(pair[1])))
                    .collect();
                if reversed {
                    ranges.reverse();
                }
                ranges
            },
        )
    }

    fn week_strategy() -> impl Strategy<Value = Vec<DayHoursSpec>> {
        prop::collection::vec(prop::option::weighted(0.7, day_hours_strategy()), 7).prop_map(
            |days| {
                days.into_iter()
                    .zip(DAY_NAMES)
                    .filter_map(|(hours, name)| {
                        hours.map(|hours| DayHoursSpec {
                            day: name.to_owned(),
                            hours,
                        })
                    })
                    .collect()
            },
        )
    }

    /// First day of the years where random calendars put their dated days, 2024 to 2030.
    fn dated_first_day() -> i64 {
        days_from_civil(2024, 1, 1)
    }
    const DATED_N_DAYS: i64 = 7 * 365;

    fn calendar_spec_strategy() -> impl Strategy<Value = CalendarSpec> {
        let seasons = prop::collection::btree_set(0..DATED_N_DAYS, 0..=6).prop_flat_map(|bounds| {
            let bounds: Vec<i64> = bounds.into_iter().collect();
            let n_seasons = bounds.len() / 2;
            (
                Just(bounds),
                prop::collection::vec(week_strategy(), n_seasons),
            )
        });
        let yearly_dates = (
            prop::collection::vec((1u32..=12, 1u32..=28), 0..=4),
            any::<bool>(),
        );
        let announced = prop::collection::vec((0..DATED_N_DAYS, 0i64..10), 0..=6);
        (week_strategy(), seasons, yearly_dates, announced).prop_map(
            |(week, (season_bounds, season_weeks), (yearly_dates, leap_day), announced)| {
                let first = dated_first_day();
                let seasons = season_bounds
                    .chunks_exact(2)
                    .zip(season_weeks)
                    .map(|(pair, week)| SeasonSpec {
                        name: "Season".to_owned(),
                        from: date_text(first + pair[0]),
                        to: date_text(first + pair[1] - 1),
                        week,
                    })
                    .collect();
                let mut recurring_holidays: Vec<RecurringHolidaySpec> = yearly_dates
                    .into_iter()
                    .map(|(month, day)| recurring("Yearly", &format!("{month:02}-{day:02}")))
                    .collect();
                if leap_day {
                    recurring_holidays.push(recurring("Leap Day", "02-29"));
                }
                let holidays = announced
                    .into_iter()
                    .map(|(start, length)| {
                        holiday(
                            "Announced",
                            &date_text(first + start),
                            &date_text(first + start + length),
                        )
                    })
                    .collect();
                CalendarSpec {
                    week,
                    seasons,
                    recurring_holidays,
                    holidays,
                }
            },
        )
    }

    fn calendar_strategy() -> impl Strategy<Value = BusinessCalendar> {
        prop_oneof![
            1 => Just(BusinessCalendar::muscat_default()),
            3 => calendar_spec_strategy().prop_map(calendar),
        ]
    }

    /// Instants mostly near the dated days (2023 to 2031), sometimes anywhere in 2000..2100.
    fn instant_strategy() -> impl Strategy<Value = Timestamp> {
        let micros_of = |text: &str| muscat(text).as_micros();
        prop_oneof![
            3 => micros_of("2023-06-01 00:00")..micros_of("2031-06-01 00:00"),
            1 => micros_of("2000-01-01 00:00")..micros_of("2100-12-31 00:00"),
        ]
        .prop_map(Timestamp::from_micros)
    }

    /// A span in microseconds: within a day, within a year, or up to decades.
    fn span_strategy() -> impl Strategy<Value = i64> {
        prop_oneof![
            0..MICROS_PER_DAY,
            0..400 * MICROS_PER_DAY,
            0..30 * 366 * MICROS_PER_DAY,
        ]
    }

    fn whole_second(at: Timestamp) -> Timestamp {
        Timestamp::from_micros(at.as_micros() - at.as_micros().rem_euclid(MICROS_PER_SECOND))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn business_time_is_between_zero_and_wall_time(
            calendar in calendar_strategy(),
            from in instant_strategy(),
            span in span_strategy(),
        ) {
            let to = Timestamp::from_micros(from.as_micros() + span);
            let seconds = calendar.business_seconds_between(from, to);
            prop_assert!(seconds >= 0);
            prop_assert!(seconds <= span / MICROS_PER_SECOND);
            prop_assert_eq!(calendar.business_seconds_between(to, from), 0);
        }

        #[test]
        fn business_time_adds_up_over_consecutive_spans(
            calendar in calendar_strategy(),
            a in instant_strategy(),
            first_span in span_strategy(),
            second_span in span_strategy(),
        ) {
            let b = Timestamp::from_micros(a.as_micros() + first_span);
            let c = Timestamp::from_micros(b.as_micros() + second_span);
            prop_assert_eq!(
                calendar.business_micros_between(a, b) + calendar.business_micros_between(b, c),
                calendar.business_micros_between(a, c)
            );
            // On whole seconds business time is whole seconds too, so seconds add up exactly.
            let (a, b, c) = (whole_second(a), whole_second(b), whole_second(c));
            prop_assert_eq!(
                calendar.business_seconds_between(a, b) + calendar.business_seconds_between(b, c),
                calendar.business_seconds_between(a, c)
            );
        }

        #[test]
        fn adding_what_was_measured_does_not_overshoot(
            calendar in calendar_strategy(),
            from in instant_strategy(),
            span in span_strategy(),
        ) {
            let to = Timestamp::from_micros(from.as_micros() + span);
            let seconds = calendar.business_seconds_between(from, to);
            match calendar.add_business_seconds(from, seconds) {
                Some(reached) => {
                    prop_assert!(from <= reached && reached <= to);
                    prop_assert_eq!(calendar.business_seconds_between(from, reached), seconds);
                }
                None => prop_assert!(span > SEARCH_HORIZON_DAYS * MICROS_PER_DAY),
            }
        }

        #[test]
        fn adding_reaches_the_earliest_instant_with_that_business_time(
            calendar in calendar_strategy(),
            from in instant_strategy(),
            seconds in prop_oneof![0..8 * HOUR, 0..400 * HOUR, 0..20_000 * HOUR],
        ) {
            let target_micros = i128::from(seconds * MICROS_PER_SECOND);
            match calendar.add_business_seconds(from, seconds) {
                Some(reached) => {
                    prop_assert!(reached >= from);
                    prop_assert_eq!(calendar.business_micros_between(from, reached), target_micros);
                    prop_assert_eq!(calendar.business_seconds_between(from, reached), seconds);
                    if seconds > 0 {
                        let just_before = Timestamp::from_micros(reached.as_micros() - 1);
                        let before_micros = calendar.business_micros_between(from, just_before);
                        prop_assert!(before_micros < target_micros);
                        prop_assert!(calendar.is_working_time(just_before));
                    }
                }
                None => {
                    let horizon = plus_seconds(from, SEARCH_HORIZON_DAYS * SECONDS_PER_DAY);
                    prop_assert!(calendar.business_micros_between(from, horizon) < target_micros);
                }
            }
        }

        #[test]
        fn whole_days_agree_with_a_reading_of_the_spec(
            spec in calendar_spec_strategy(),
            first_offset in -30..DATED_N_DAYS + 30,
            n_days in 0i64..60,
        ) {
            let calendar = calendar(spec.clone());
            let first_day = dated_first_day() + first_offset;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
            let expected: i64 = (first_day..first_day + n_days)
                .map(|d| reference_day_seconds(&spec, epoch + chrono::Duration::days(d)))
                .sum();
            let midnight =
                |d: i64| Timestamp::from_micros(d * MICROS_PER_DAY - MUSCAT_OFFSET_MICROS);
            let end_day = first_day + n_days;
            prop_assert_eq!(
                calendar.business_seconds_between(midnight(first_day), midnight(end_day)),
                expected
            );
            // The window's running sum and the day's own hours agree.
            for day in first_day..first_day + n_days {
                prop_assert_eq!(
                    calendar.business_seconds_in_days(day, day + 1),
                    calendar.hours_on(day).total_seconds
                );
            }
        }

        #[test]
        fn working_time_is_where_business_time_passes(
            calendar in calendar_strategy(),
            at in instant_strategy(),
        ) {
            let next = Timestamp::from_micros(at.as_micros() + 1);
            prop_assert_eq!(
                calendar.is_working_time(at),
                calendar.business_micros_between(at, next) == 1
            );
        }
    }

    #[test]
    fn the_default_calendar_agrees_with_a_reading_of_its_spec_day_by_day() {
        let calendar = BusinessCalendar::muscat_default();
        let first = NaiveDate::from_ymd_opt(2000, 1, 1).expect("date");
        let last = NaiveDate::from_ymd_opt(2100, 12, 31).expect("date");
        let expected: i64 = first
            .iter_days()
            .take_while(|d| *d <= last)
            .map(|d| reference_day_seconds(calendar.spec(), d))
            .sum();
        assert_eq!(
            calendar
                .business_seconds_between(muscat("2000-01-01 00:00"), muscat("2101-01-01 00:00")),
            expected
        );
    }
}
