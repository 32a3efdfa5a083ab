//! KPIs and statistics: one row of facts per ticket, and the figures of a group of tickets.
//!
//! The SLA projection derives a ticket's [`TicketFacts`] from the ticket, its history and its
//! replayed [`SlaClock`] every time it replays the ticket, and stores them; a KPI query reads
//! the facts of the tickets created in a period and [`aggregate`]s them per group. Nothing
//! here reads the store or the clock: the period end and the calendar are handed in.
//!
//! Definitions (also in `docs/reporting.md`):
//! - times are in business time of the calendar (the SLA clocks' own figures), shown in
//!   hours; the median and the p90 are *nearest-rank* percentiles: the smallest value with at
//!   least 50% (90%) of the values at or below it, so the median of an even count is the
//!   lower middle value;
//! - a *working day*, for the ageing buckets, is 7 business hours (25,200 s): the
//!   municipality's 07:30-14:30 day;
//! - a rate is a percentage of its denominator, and absent when the denominator is zero.
//!
//! Architecture invariant: this module is pure; [`TicketFacts::derive`] depends only on its
//! arguments, so replaying a ticket always yields the same facts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::calendar::BusinessCalendar;
use super::lifecycle::{EventKind, TicketEvent};
use super::sla::{DeadlineKind, SlaClock, is_open_status, is_response_status};
use super::ticket::{Channel, Status, SupportLine, Ticket, TicketType, Visibility};
use super::values::{Code, EmployeeId, TicketId};

/// Business seconds in a working day, for the ageing buckets: 7 business hours.
pub const WORKING_DAY_SECONDS: i64 = 7 * 3600;

/// The lower bounds, in working days, of the ageing buckets after the first:
/// `< 1`, `1 to < 3`, `3 to < 10`, `>= 10`.
pub const AGEING_BOUNDS_DAYS: [i64; 3] = [1, 3, 10];

/// The lowest satisfaction score that counts as satisfied.
pub const SATISFIED_SCORE: u8 = 4;

/// What the KPIs need to know about one ticket, as it stood when it was last replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketFacts {
    pub ticket_id: TicketId,
    pub create_time: Timestamp,
    pub ticket_type: TicketType,
    pub channel: Channel,
    pub category: Code,
    pub directorate: Option<Code>,
    pub outlet: Option<Code>,
    pub wilayat: Option<Code>,
    /// The support line that held the ticket at its first resolution, or holds it now.
    pub support_line: Option<SupportLine>,
    pub assignee: Option<EmployeeId>,
    pub status: Status,
    /// Business seconds from creation to the first response; `None` before one.
    pub first_response_seconds: Option<i64>,
    /// Business seconds the first resolution clock ran (pauses excluded) until the first
    /// resolution; `None` when the ticket was never resolved.
    pub resolution_seconds: Option<i64>,
    /// Whether the first response came within its target; `None` while it can still do so
    /// (and for a ticket merged before any response). `Some(false)` as soon as the target
    /// has passed, even before the response.
    pub first_response_met: Option<bool>,
    /// The same for the first resolution; `None` for a ticket rejected, transferred or
    /// merged before it was resolved.
    pub resolution_met: Option<bool>,
    pub n_escalations: u32,
    pub reopened: bool,
    pub transferred: bool,
    pub rejected: bool,
    /// Resolved (the first time) while on the first support line or on none: first-contact
    /// resolution.
    pub resolved_at_line_1: bool,
    pub satisfaction_score: Option<u8>,
    /// When the ticket was first resolved.
    pub resolve_time: Option<Timestamp>,
    /// When the ticket last left the open statuses (resolved, rejected, transferred,
    /// merged); `None` while it is open.
    pub settle_time: Option<Timestamp>,
}

impl TicketFacts {
    /// The facts of `ticket`, given its history (oldest first) and its clock replayed from it.
    pub fn derive(ticket: &Ticket, events: &[TicketEvent], clock: &SlaClock) -> TicketFacts {
        let mut status = Status::New;
        let mut line: Option<SupportLine> = None;
        let mut first_response_time = None;
        let mut first_resolve: Option<(Timestamp, Option<SupportLine>)> = None;
        let mut settle_time = None;
        let (mut reopened, mut transferred, mut rejected) = (false, false, false);
        for event in events {
            let record = &event.record;
            let at = event.occur_time;
            let next = record.to_status.unwrap_or(status);
            if let Some(assignment) = &record.assignment {
                line = assignment.support_line.or(line);
            }
            if record.kind == EventKind::Created {
                status = next;
                continue;
            }
            let responded = (record.kind == EventKind::Commented
                && record.visibility == Some(Visibility::Public))
                || (next != status && is_response_status(next));
            if responded && first_response_time.is_none() {
                first_response_time = Some(at);
            }
            if next != status {
                match next {
                    Status::Resolved if first_resolve.is_none() => {
                        first_resolve = Some((at, line));
                    }
                    Status::Reopened => reopened = true,
                    Status::Transferred => transferred = true,
                    Status::Rejected => rejected = true,
                    _ => {}
                }
                if is_open_status(status) && !is_open_status(next) {
                    settle_time = Some(at);
                } else if !is_open_status(status) && is_open_status(next) {
                    settle_time = None;
                }
            }
            status = next;
        }
        if is_open_status(ticket.status) {
            settle_time = None;
        }

        let first_deadline =
            |kind: DeadlineKind| clock.deadlines.iter().find(|d| d.deadline.kind == kind);
        let (first_response_seconds, first_response_met) =
            match first_deadline(DeadlineKind::FirstResponse) {
                Some(d) if d.stop_time.is_some() && d.stop_time == first_response_time => {
                    (Some(d.elapsed_seconds), Some(!d.is_breached()))
                }
                Some(d) if d.is_open() => (None, d.is_breached().then_some(false)),
                _ => (None, None),
            };
        let resolve_time = first_resolve.map(|(at, _)| at);
        let (resolution_seconds, resolution_met) = match first_deadline(DeadlineKind::Resolution) {
            Some(d) if d.stop_time.is_some() && d.stop_time == resolve_time => {
                (Some(d.elapsed_seconds), Some(!d.is_breached()))
            }
            Some(d) if d.is_open() => (None, d.is_breached().then_some(false)),
            _ => (None, None),
        };
        let support_line = match first_resolve {
            Some((_, line)) => line,
            None => ticket.assignment.support_line,
        };
        TicketFacts {
            ticket_id: ticket.id,
            create_time: ticket.create_time,
            ticket_type: ticket.ticket_type,
            channel: ticket.channel,
            category: ticket.category.clone(),
            directorate: ticket.assignment.directorate.clone(),
            outlet: ticket.assignment.outlet.clone(),
            wilayat: ticket.location.wilayat.clone(),
            support_line,
            assignee: ticket.assignment.assignee.clone(),
            status: ticket.status,
            first_response_seconds,
            resolution_seconds,
            first_response_met,
            resolution_met,
            n_escalations: ticket.escalation_level,
            reopened,
            transferred,
            rejected,
            resolved_at_line_1: first_resolve
                .is_some_and(|(_, line)| line.is_none_or(|l| l == SupportLine::First)),
            satisfaction_score: ticket.satisfaction.as_ref().map(|s| s.score()),
            resolve_time,
            settle_time,
        }
    }

    /// The facts borrowed, as the KPI counts read them.
    pub fn view(&self) -> FactsView<'_> {
        FactsView {
            create_time: self.create_time,
            ticket_type: self.ticket_type,
            channel: self.channel,
            category: self.category.as_str(),
            directorate: self.directorate.as_ref().map(Code::as_str),
            outlet: self.outlet.as_ref().map(Code::as_str),
            wilayat: self.wilayat.as_ref().map(Code::as_str),
            support_line: self.support_line,
            assignee: self.assignee.as_ref().map(EmployeeId::as_str),
            first_response_seconds: self.first_response_seconds,
            resolution_seconds: self.resolution_seconds,
            first_response_met: self.first_response_met,
            resolution_met: self.resolution_met,
            n_escalations: self.n_escalations,
            reopened: self.reopened,
            transferred: self.transferred,
            rejected: self.rejected,
            resolved_at_line_1: self.resolved_at_line_1,
            satisfaction_score: self.satisfaction_score,
            resolve_time: self.resolve_time,
            settle_time: self.settle_time,
        }
    }
}

/// What the KPI counts read of one ticket's facts: [`TicketFacts`] less its id and status,
/// with its text borrowed, so a store counts a row without copying it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FactsView<'a> {
    pub create_time: Timestamp,
    pub ticket_type: TicketType,
    pub channel: Channel,
    pub category: &'a str,
    pub directorate: Option<&'a str>,
    pub outlet: Option<&'a str>,
    pub wilayat: Option<&'a str>,
    pub support_line: Option<SupportLine>,
    pub assignee: Option<&'a str>,
    pub first_response_seconds: Option<i64>,
    pub resolution_seconds: Option<i64>,
    pub first_response_met: Option<bool>,
    pub resolution_met: Option<bool>,
    pub n_escalations: u32,
    pub reopened: bool,
    pub transferred: bool,
    pub rejected: bool,
    pub resolved_at_line_1: bool,
    pub satisfaction_score: Option<u8>,
    pub resolve_time: Option<Timestamp>,
    pub settle_time: Option<Timestamp>,
}

impl<'a> FactsView<'a> {
    /// Whether the ticket was open at `at`: created before it and not settled by then.
    /// (A ticket settled, reopened and settled again counts from its last settling.)
    pub fn is_open_at(&self, at: Timestamp) -> bool {
        self.create_time < at && self.settle_time.is_none_or(|t| t > at)
    }

    /// The key of the ticket's group.
    pub fn group_key(&self, grouping: KpiGrouping) -> &'a str {
        match grouping {
            KpiGrouping::None => ALL_GROUP,
            KpiGrouping::Directorate => self.directorate.unwrap_or_default(),
            KpiGrouping::Outlet => self.outlet.unwrap_or_default(),
            KpiGrouping::Category => self.category,
            KpiGrouping::Channel => self.channel.as_str(),
            KpiGrouping::Wilayat => self.wilayat.unwrap_or_default(),
            KpiGrouping::SupportLine => match self.support_line {
                None => "",
                Some(SupportLine::First) => "line_1",
                Some(SupportLine::Second) => "line_2",
                Some(SupportLine::Third) => "line_3",
            },
            KpiGrouping::Employee => self.assignee.unwrap_or_default(),
        }
    }
}

/// The group of every ticket when the figures are not grouped.
pub const ALL_GROUP: &str = "all";

/// What the figures are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KpiGrouping {
    None,
    Directorate,
    Outlet,
    Category,
    Channel,
    Wilayat,
    SupportLine,
    Employee,
}

/// The KPIs of a group of tickets (those created in the period).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KpiFigures {
    pub n_tickets: u64,
    /// Tickets by type: report, complaint, suggestion, inquiry.
    pub n_reports: u64,
    pub n_complaints: u64,
    pub n_suggestions: u64,
    pub n_inquiries: u64,
    pub first_response_hours_median: Option<f64>,
    pub first_response_hours_p90: Option<f64>,
    pub resolution_hours_median: Option<f64>,
    pub resolution_hours_p90: Option<f64>,
    /// Share of first responses (and first resolutions) known to be in time, among those
    /// whose outcome is known.
    pub first_response_compliance_percent: Option<f64>,
    pub resolution_compliance_percent: Option<f64>,
    pub n_escalations: u64,
    /// Tickets open at the end of the period (or now, if sooner).
    pub backlog: u64,
    /// The backlog by business age: `< 1`, `1-3`, `3-10`, `>= 10` working days.
    pub ageing: [u64; 4],
    pub n_resolved: u64,
    /// Of the resolved tickets, the share resolved on the first line.
    pub first_contact_resolution_percent: Option<f64>,
    /// Of the resolved tickets, the share reopened at least once.
    pub reopen_percent: Option<f64>,
    /// Of all the tickets, the share transferred (rejected).
    pub transfer_percent: Option<f64>,
    pub rejection_percent: Option<f64>,
    pub n_rated: u64,
    pub satisfaction_average: Option<f64>,
    /// Of the rated tickets, the share rated [`SATISFIED_SCORE`] or more.
    pub satisfied_percent: Option<f64>,
    /// Rated tickets per resolved ticket.
    pub rating_response_percent: Option<f64>,
    /// Staff quality reviews of the group's tickets (grouped by employee: of the employee's
    /// handling), and their average overall score (0 to 100).
    pub n_quality_reviews: u64,
    pub quality_score_average: Option<f64>,
}

/// The `p`th nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // The smallest rank r (1-based) with r / n >= p / 100.
    let rank = (n * p as usize).div_ceil(100).max(1);
    Some(sorted[rank.min(n) - 1])
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn hours(seconds: Option<i64>) -> Option<f64> {
    seconds.map(|s| s as f64 / 3600.0)
}

/// The figures of a group being counted, one ticket at a time: what [`KpiFigures`] is made
/// of before the rates and percentiles. Accumulators of parts of a group (for example the
/// halves of a period counted on two threads) [`merge`](Self::merge) into the accumulator
/// of the whole, with the same result as counting the whole at once.
#[derive(Debug, Clone, Default)]
pub struct KpiAccumulator {
    counts: KpiFigures,
    first_responses: Vec<i64>,
    resolutions: Vec<i64>,
    fr_known: u64,
    fr_met: u64,
    res_known: u64,
    res_met: u64,
    fcr: u64,
    reopened: u64,
    transferred: u64,
    rejected: u64,
    score_sum: u64,
    satisfied: u64,
    review_score_sum: f64,
}

impl KpiAccumulator {
    /// Counts one ticket, with the backlog as it stands at `as_of`.
    pub fn add(&mut self, t: &FactsView<'_>, as_of: Timestamp, calendar: &BusinessCalendar) {
        let f = &mut self.counts;
        f.n_tickets += 1;
        match t.ticket_type {
            TicketType::Report => f.n_reports += 1,
            TicketType::Complaint => f.n_complaints += 1,
            TicketType::Suggestion => f.n_suggestions += 1,
            TicketType::Inquiry => f.n_inquiries += 1,
        }
        self.first_responses.extend(t.first_response_seconds);
        self.resolutions.extend(t.resolution_seconds);
        if let Some(met) = t.first_response_met {
            self.fr_known += 1;
            self.fr_met += u64::from(met);
        }
        if let Some(met) = t.resolution_met {
            self.res_known += 1;
            self.res_met += u64::from(met);
        }
        f.n_escalations += u64::from(t.n_escalations);
        if t.is_open_at(as_of) {
            f.backlog += 1;
            let days =
                calendar.business_seconds_between(t.create_time, as_of) / WORKING_DAY_SECONDS;
            let bucket = AGEING_BOUNDS_DAYS.iter().filter(|b| days >= **b).count();
            f.ageing[bucket] += 1;
        }
        if t.resolve_time.is_some() {
            f.n_resolved += 1;
            self.fcr += u64::from(t.resolved_at_line_1);
            self.reopened += u64::from(t.reopened);
        }
        self.transferred += u64::from(t.transferred);
        self.rejected += u64::from(t.rejected);
        if let Some(score) = t.satisfaction_score {
            f.n_rated += 1;
            self.score_sum += u64::from(score);
            self.satisfied += u64::from(score >= SATISFIED_SCORE);
        }
    }

    /// Counts a staff quality review with its overall score (0 to 100).
    pub fn add_review(&mut self, weighted_score: f64) {
        self.counts.n_quality_reviews += 1;
        self.review_score_sum += weighted_score;
    }

    /// Adds the tickets `other` counted.
    pub fn merge(&mut self, other: KpiAccumulator) {
        let (f, o) = (&mut self.counts, &other.counts);
        f.n_tickets += o.n_tickets;
        f.n_reports += o.n_reports;
        f.n_complaints += o.n_complaints;
        f.n_suggestions += o.n_suggestions;
        f.n_inquiries += o.n_inquiries;
        f.n_escalations += o.n_escalations;
        f.backlog += o.backlog;
        for (mine, theirs) in f.ageing.iter_mut().zip(o.ageing) {
            *mine += theirs;
        }
        f.n_resolved += o.n_resolved;
        f.n_rated += o.n_rated;
        f.n_quality_reviews += o.n_quality_reviews;
        self.review_score_sum += other.review_score_sum;
        self.first_responses.extend(other.first_responses);
        self.resolutions.extend(other.resolutions);
        self.fr_known += other.fr_known;
        self.fr_met += other.fr_met;
        self.res_known += other.res_known;
        self.res_met += other.res_met;
        self.fcr += other.fcr;
        self.reopened += other.reopened;
        self.transferred += other.transferred;
        self.rejected += other.rejected;
        self.score_sum += other.score_sum;
        self.satisfied += other.satisfied;
    }

    /// The figures: rates, percentiles and averages of what was counted.
    pub fn finish(mut self) -> KpiFigures {
        self.first_responses.sort_unstable();
        self.resolutions.sort_unstable();
        let mut f = self.counts;
        f.first_response_hours_median = hours(percentile(&self.first_responses, 50));
        f.first_response_hours_p90 = hours(percentile(&self.first_responses, 90));
        f.resolution_hours_median = hours(percentile(&self.resolutions, 50));
        f.resolution_hours_p90 = hours(percentile(&self.resolutions, 90));
        f.first_response_compliance_percent = percent(self.fr_met, self.fr_known);
        f.resolution_compliance_percent = percent(self.res_met, self.res_known);
        f.first_contact_resolution_percent = percent(self.fcr, f.n_resolved);
        f.reopen_percent = percent(self.reopened, f.n_resolved);
        f.transfer_percent = percent(self.transferred, f.n_tickets);
        f.rejection_percent = percent(self.rejected, f.n_tickets);
        f.satisfaction_average = (f.n_rated > 0).then(|| self.score_sum as f64 / f.n_rated as f64);
        f.satisfied_percent = percent(self.satisfied, f.n_rated);
        f.rating_response_percent = percent(f.n_rated, f.n_resolved);
        f.quality_score_average =
            (f.n_quality_reviews > 0).then(|| self.review_score_sum / f.n_quality_reviews as f64);
        f
    }
}

/// Accumulators per group key, filled one ticket at a time: see [`aggregate`].
#[derive(Debug, Clone)]
pub struct KpiGroups {
    grouping: KpiGrouping,
    as_of: Timestamp,
    groups: HashMap<String, KpiAccumulator>,
}

impl KpiGroups {
    pub fn new(grouping: KpiGrouping, as_of: Timestamp) -> Self {
        Self {
            grouping,
            as_of,
            groups: HashMap::new(),
        }
    }

    /// Counts one ticket in its group.
    pub fn add(&mut self, t: &FactsView<'_>, calendar: &BusinessCalendar) {
        let as_of = self.as_of;
        self.group(t.group_key(self.grouping))
            .add(t, as_of, calendar);
    }

    /// Counts a quality review of `reviewed`'s handling of the ticket `t`: in the ticket's
    /// group, or in the reviewed employee's when grouped by employee.
    pub fn add_review(&mut self, t: &FactsView<'_>, reviewed: &str, weighted_score: f64) {
        let key = match self.grouping {
            KpiGrouping::Employee => reviewed,
            grouping => t.group_key(grouping),
        };
        self.group(key).add_review(weighted_score);
    }

    /// The accumulator of the group `key`: a group's key is copied once, when its first
    /// ticket is counted, not per ticket.
    fn group(&mut self, key: &str) -> &mut KpiAccumulator {
        if !self.groups.contains_key(key) {
            self.groups
                .insert(key.to_owned(), KpiAccumulator::default());
        }
        self.groups
            .get_mut(key)
            .expect("the group was inserted above")
    }

    /// Adds the groups `other` counted (over the same grouping and `as_of`).
    pub fn merge(&mut self, other: KpiGroups) {
        debug_assert_eq!(self.grouping, other.grouping);
        for (key, acc) in other.groups {
            match self.groups.get_mut(&key) {
                Some(mine) => mine.merge(acc),
                None => {
                    self.groups.insert(key, acc);
                }
            }
        }
    }

    /// The figures per group key, in key order.
    pub fn finish(self) -> BTreeMap<String, KpiFigures> {
        self.groups
            .into_iter()
            .map(|(key, acc)| (key, acc.finish()))
            .collect()
    }
}

/// One pass over the facts of a period, counting several groupings at once: what a KPI
/// query (one grouping) and the yearly report (several) read the facts through. A store
/// reads a long period in parts at once, each into a [`KpiTally::empty_like`] of the tally,
/// and [`merge`](KpiTally::merge)s them: the facts are never all held in memory.
#[derive(Debug, Clone)]
pub struct KpiTally {
    sets: Vec<KpiGroups>,
    calendar: Arc<BusinessCalendar>,
}

impl KpiTally {
    /// A tally of `groupings` (in this order), with backlogs as they stand at `as_of`.
    pub fn new(
        groupings: &[KpiGrouping],
        as_of: Timestamp,
        calendar: Arc<BusinessCalendar>,
    ) -> Self {
        Self {
            sets: groupings
                .iter()
                .map(|g| KpiGroups::new(*g, as_of))
                .collect(),
            calendar,
        }
    }

    /// A tally of the same groupings that has counted nothing yet.
    pub fn empty_like(&self) -> Self {
        Self {
            sets: self
                .sets
                .iter()
                .map(|s| KpiGroups::new(s.grouping, s.as_of))
                .collect(),
            calendar: self.calendar.clone(),
        }
    }

    /// Counts one ticket in every grouping.
    pub fn add(&mut self, t: &TicketFacts) {
        self.add_view(&t.view());
    }

    /// Counts one ticket, as a store reads it, in every grouping.
    pub fn add_view(&mut self, t: &FactsView<'_>) {
        for set in &mut self.sets {
            set.add(t, &self.calendar);
        }
    }

    /// Counts a staff quality review of the ticket `t` in every grouping (see
    /// [`KpiGroups::add_review`]).
    pub fn add_review(&mut self, t: &FactsView<'_>, reviewed: &str, weighted_score: f64) {
        for set in &mut self.sets {
            set.add_review(t, reviewed, weighted_score);
        }
    }

    /// Adds what `other`, a tally of the same groupings, counted.
    pub fn merge(&mut self, other: KpiTally) {
        for (mine, theirs) in self.sets.iter_mut().zip(other.sets) {
            mine.merge(theirs);
        }
    }

    /// The figures per group of each grouping, in the order the groupings were given.
    pub fn finish(self) -> Vec<BTreeMap<String, KpiFigures>> {
        self.sets.into_iter().map(KpiGroups::finish).collect()
    }
}

/// The figures of `facts` per group, by group key: a code, an employee id, a channel,
/// `line_1` to `line_3`, [`ALL_GROUP`] when not grouped, and `""` for tickets without a
/// value (not assigned yet).
pub fn aggregate(
    facts: &[TicketFacts],
    grouping: KpiGrouping,
    as_of: Timestamp,
    calendar: &BusinessCalendar,
) -> BTreeMap<String, KpiFigures> {
    let mut groups = KpiGroups::new(grouping, as_of);
    for t in facts {
        groups.add(&t.view(), calendar);
    }
    groups.finish()
}

/// 1 `month` (1 to 12) of `year`, 00:00 in Muscat: where a KPI year (or month) starts.
/// `None` only for dates chrono cannot hold.
pub fn muscat_month_start(year: i32, month: u32) -> Option<Timestamp> {
    let midnight = chrono::NaiveDate::from_ymd_opt(year, month, 1)?.and_hms_opt(0, 0, 0)?;
    Some(Timestamp::from_micros(
        midnight.and_utc().timestamp_micros() - Timestamp::MUSCAT_OFFSET_SECONDS * 1_000_000,
    ))
}

/// The same wall-clock time in Muscat one calendar year earlier (29 February becomes the
/// 28th): where the previous year's period of a comparison starts and ends.
pub fn a_year_before(t: Timestamp) -> Timestamp {
    let offset = Timestamp::MUSCAT_OFFSET_SECONDS * 1_000_000;
    let local_micros = t.as_micros() + offset;
    let Some(local) = chrono::DateTime::from_timestamp_micros(local_micros) else {
        return t;
    };
    match local
        .naive_utc()
        .checked_sub_months(chrono::Months::new(12))
    {
        Some(earlier) => Timestamp::from_micros(earlier.and_utc().timestamp_micros() - offset),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{CalendarSpec, DayHoursSpec};
    use crate::domain::lifecycle::{EventRecord, created_event};
    use crate::domain::sla::{SlaSettings, SlaSettingsSpec};
    use crate::domain::ticket::{Assignment, Satisfaction};

    /// Sunday 2026-11-29 08:00 in Muscat (04:00 UTC).
    const SUNDAY_8: i64 = 1_795_924_800_000_000;
    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;

    fn at(offset_micros: i64) -> Timestamp {
        Timestamp::from_micros(SUNDAY_8 + offset_micros)
    }

    /// Sunday to Thursday, 08:00-15:00: seven business hours, one working day.
    fn calendar() -> BusinessCalendar {
        let week = ["sunday", "monday", "tuesday", "wednesday", "thursday"]
            .into_iter()
            .map(|day| DayHoursSpec {
                day: day.to_owned(),
                hours: vec!["08:00-15:00".to_owned()],
            })
            .collect();
        BusinessCalendar::parse(CalendarSpec {
            week,
            seasons: Vec::new(),
            recurring_holidays: Vec::new(),
            holidays: Vec::new(),
        })
        .expect("valid calendar")
    }

    /// First response 60, resolution 420 business minutes.
    fn settings() -> SlaSettings {
        let toml = r#"
            warn_at_percent = 75
            default_policy = "standard"
            escalation_steps = ["line_2", "line_3", "director_general"]
            escalate_on = ["resolution"]
            [line_hold_minutes]
            line_1 = 120
            line_2 = 240
            line_3 = 480
            [[policies]]
            code = "standard"
            name = "Standard"
            targets.urgent = { first_response = 60, resolution = 420 }
            targets.high = { first_response = 60, resolution = 420 }
            targets.normal = { first_response = 60, resolution = 420 }
            targets.low = { first_response = 60, resolution = 420 }
        "#;
        let spec: SlaSettingsSpec = toml::from_str(toml).expect("toml");
        SlaSettings::parse(spec).expect("valid settings")
    }

    fn code(text: &str) -> Code {
        Code::parse("code", text).expect("code")
    }

    struct History {
        ticket: Ticket,
        events: Vec<TicketEvent>,
    }

    impl History {
        fn new(created: Timestamp) -> Self {
            let mut ticket = crate::domain::ticket::sample_ticket(created);
            ticket.location.wilayat = Some(code("bawshar"));
            let record = created_event(&ticket);
            let mut history = History {
                ticket,
                events: Vec::new(),
            };
            history.push(created, record);
            history
        }

        fn push(&mut self, time: Timestamp, record: EventRecord) {
            if let Some(status) = record.to_status {
                self.ticket.status = status;
            }
            if let Some(assignment) = &record.assignment {
                self.ticket.assignment = assignment.clone();
            }
            let cursor = self.events.len() as i64 + 1;
            self.events.push(TicketEvent {
                cursor,
                ticket_id: self.ticket.id,
                actor: "test".into(),
                occur_time: time,
                version: cursor,
                record,
            });
        }

        fn status(&mut self, time: Timestamp, to: Status) {
            let mut record = created_event(&self.ticket);
            record.kind = EventKind::StatusChanged;
            record.from_status = Some(self.ticket.status);
            record.to_status = Some(to);
            record.assignment = None;
            self.push(time, record);
        }

        fn assign(&mut self, time: Timestamp, directorate: &str, line: SupportLine) {
            let mut record = created_event(&self.ticket);
            record.kind = EventKind::Assigned;
            record.from_status = Some(self.ticket.status);
            record.to_status = Some(Status::Assigned);
            record.assignment = Some(Assignment {
                directorate: Some(code(directorate)),
                support_line: Some(line),
                ..Assignment::default()
            });
            self.push(time, record);
        }

        fn facts(&self, now: Timestamp) -> TicketFacts {
            let clock = SlaClock::replay(
                &self.ticket,
                &self.events,
                &code("standard"),
                &settings(),
                &calendar(),
                now,
            );
            TicketFacts::derive(&self.ticket, &self.events, &clock)
        }
    }

    #[test]
    fn kpi_facts_of_a_ticket_resolved_on_the_first_line() {
        let mut h = History::new(at(0));
        h.assign(at(10 * MINUTE), "roads", SupportLine::First);
        h.status(at(30 * MINUTE), Status::InProgress);
        h.status(at(2 * HOUR), Status::Resolved);
        h.ticket.satisfaction = Some(Satisfaction::parse("s", 5, None, at(3 * HOUR)).unwrap());
        let facts = h.facts(at(DAY));
        assert_eq!(facts.first_response_seconds, Some(30 * 60));
        assert_eq!(facts.first_response_met, Some(true));
        assert_eq!(facts.resolution_seconds, Some(2 * 3600));
        assert_eq!(facts.resolution_met, Some(true));
        assert!(facts.resolved_at_line_1);
        assert_eq!(facts.support_line, Some(SupportLine::First));
        assert_eq!(facts.directorate, Some(code("roads")));
        assert_eq!(facts.wilayat, Some(code("bawshar")));
        assert_eq!(facts.resolve_time, Some(at(2 * HOUR)));
        assert_eq!(facts.settle_time, Some(at(2 * HOUR)));
        assert_eq!(facts.satisfaction_score, Some(5));
        assert!(!facts.reopened && !facts.transferred && !facts.rejected);
    }

    #[test]
    fn kpi_facts_count_business_time_and_keep_the_first_resolution_of_a_reopened_ticket() {
        // Created Thursday 14:00: one business hour that day, then the weekend.
        let thursday_14 = 4 * DAY + 6 * HOUR;
        let mut h = History::new(at(thursday_14));
        h.assign(at(thursday_14), "roads", SupportLine::Second);
        // Sunday 09:00: two business hours after creation, past the one-hour target.
        h.status(at(7 * DAY + HOUR), Status::InProgress);
        // Sunday 10:00: resolved after three business hours, then reopened.
        h.status(at(7 * DAY + 2 * HOUR), Status::Resolved);
        h.status(at(8 * DAY), Status::Reopened);
        let facts = h.facts(at(8 * DAY + HOUR));
        assert_eq!(facts.first_response_seconds, Some(2 * 3600));
        assert_eq!(facts.first_response_met, Some(false));
        assert_eq!(facts.resolution_seconds, Some(3 * 3600));
        assert_eq!(facts.resolution_met, Some(true));
        assert!(facts.reopened);
        assert!(!facts.resolved_at_line_1, "resolved on line 2");
        assert_eq!(facts.support_line, Some(SupportLine::Second));
        assert_eq!(facts.settle_time, None, "open again");
        assert_eq!(facts.resolve_time, Some(at(7 * DAY + 2 * HOUR)));
    }

    #[test]
    fn kpi_facts_of_open_rejected_and_transferred_tickets() {
        let open = History::new(at(0)).facts(at(30 * MINUTE));
        assert_eq!(
            (open.first_response_met, open.resolution_met),
            (None, None),
            "still running, in time"
        );
        let late = History::new(at(0)).facts(at(2 * HOUR));
        assert_eq!(
            (late.first_response_met, late.resolution_met),
            (Some(false), None),
            "the first response is late even before it comes"
        );
        let mut rejected = History::new(at(0));
        rejected.status(at(20 * MINUTE), Status::Rejected);
        let facts = rejected.facts(at(DAY));
        assert!(facts.rejected);
        assert_eq!(facts.first_response_seconds, Some(20 * 60));
        assert_eq!(
            (facts.resolution_seconds, facts.resolution_met),
            (None, None)
        );
        assert_eq!(facts.settle_time, Some(at(20 * MINUTE)));
        let mut transferred = History::new(at(0));
        transferred.status(at(HOUR), Status::Transferred);
        assert!(transferred.facts(at(DAY)).transferred);
    }

    fn fact(directorate: &str) -> TicketFacts {
        TicketFacts {
            ticket_id: TicketId::new_v7(),
            create_time: at(0),
            ticket_type: TicketType::Complaint,
            channel: Channel::App,
            category: code("roads"),
            directorate: Some(code(directorate)),
            outlet: None,
            wilayat: None,
            support_line: Some(SupportLine::First),
            assignee: None,
            status: Status::Resolved,
            first_response_seconds: None,
            resolution_seconds: None,
            first_response_met: None,
            resolution_met: None,
            n_escalations: 0,
            reopened: false,
            transferred: false,
            rejected: false,
            resolved_at_line_1: false,
            satisfaction_score: None,
            resolve_time: None,
            settle_time: Some(at(HOUR)),
        }
    }

    #[test]
    fn kpi_percentiles_are_nearest_rank() {
        let ten: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 50), Some(5));
        assert_eq!(percentile(&ten, 90), Some(9));
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(
            percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90),
            Some(10)
        );
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn kpi_figures_of_a_hand_built_group() {
        let hour = 3600;
        let mut facts = Vec::new();
        // Five resolved tickets of "roads", first responses of 1..5 hours and resolutions of
        // 2, 4, 6, 8, 10 hours.
        for i in 1..=5_i64 {
            let mut t = fact("roads");
            t.first_response_seconds = Some(i * hour);
            t.first_response_met = Some(i <= 1);
            t.resolution_seconds = Some(2 * i * hour);
            t.resolution_met = Some(2 * i <= 7);
            t.resolve_time = Some(at(HOUR));
            t.resolved_at_line_1 = i <= 2;
            t.reopened = i == 5;
            t.satisfaction_score = [Some(5), Some(4), Some(2), None, None][i as usize - 1];
            t.ticket_type = if i <= 2 {
                TicketType::Report
            } else {
                TicketType::Complaint
            };
            facts.push(t);
        }
        // A rejected one, a transferred one (both with a response) and an escalated one still
        // open: created on Sunday, so open for four working days on Thursday 09:00.
        let mut rejected = fact("roads");
        rejected.rejected = true;
        rejected.status = Status::Rejected;
        rejected.ticket_type = TicketType::Inquiry;
        let mut transferred = fact("roads");
        transferred.transferred = true;
        transferred.ticket_type = TicketType::Suggestion;
        let mut open = fact("roads");
        open.status = Status::InProgress;
        open.settle_time = None;
        open.n_escalations = 2;
        open.resolution_met = Some(false);
        facts.extend([rejected, transferred, open]);
        // A young ticket of "parks", created Thursday 08:00 and open one hour later.
        let mut young = fact("parks");
        young.create_time = at(4 * DAY);
        young.settle_time = None;
        facts.push(young);

        let as_of = at(4 * DAY + HOUR);
        let groups = aggregate(&facts, KpiGrouping::Directorate, as_of, &calendar());
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["parks", "roads"]);
        let roads = &groups["roads"];
        assert_eq!(roads.n_tickets, 8);
        assert_eq!(
            (
                roads.n_reports,
                roads.n_complaints,
                roads.n_suggestions,
                roads.n_inquiries
            ),
            (2, 4, 1, 1)
        );
        assert_eq!(roads.first_response_hours_median, Some(3.0));
        assert_eq!(roads.first_response_hours_p90, Some(5.0));
        assert_eq!(roads.resolution_hours_median, Some(6.0));
        assert_eq!(roads.resolution_hours_p90, Some(10.0));
        // 1 of 5 first responses in time; 3 of 6 resolutions (2, 4, 6 h of 5 met, the open
        // one already late).
        assert_eq!(roads.first_response_compliance_percent, Some(20.0));
        assert_eq!(roads.resolution_compliance_percent, Some(50.0));
        assert_eq!(roads.n_escalations, 2);
        assert_eq!(roads.backlog, 1);
        assert_eq!(roads.ageing, [0, 0, 1, 0], "4 working days and 1 hour");
        assert_eq!(roads.n_resolved, 5);
        assert_eq!(roads.first_contact_resolution_percent, Some(40.0));
        assert_eq!(roads.reopen_percent, Some(20.0));
        assert_eq!(roads.transfer_percent, Some(12.5));
        assert_eq!(roads.rejection_percent, Some(12.5));
        assert_eq!(roads.n_rated, 3);
        assert_eq!(roads.satisfaction_average, Some(11.0 / 3.0));
        assert_eq!(roads.satisfied_percent, Some(200.0 / 3.0));
        assert_eq!(roads.rating_response_percent, Some(60.0));

        let parks = &groups["parks"];
        assert_eq!((parks.n_tickets, parks.backlog), (1, 1));
        assert_eq!(parks.ageing, [1, 0, 0, 0]);
        assert_eq!(parks.first_response_hours_median, None);
        assert_eq!(parks.first_contact_resolution_percent, None);
        assert_eq!(parks.transfer_percent, Some(0.0));

        let all = aggregate(&facts, KpiGrouping::None, as_of, &calendar());
        assert_eq!(all.keys().collect::<Vec<_>>(), [ALL_GROUP]);
        assert_eq!(all[ALL_GROUP].n_tickets, 9);
        let lines = aggregate(&facts, KpiGrouping::SupportLine, as_of, &calendar());
        assert_eq!(lines.keys().collect::<Vec<_>>(), ["line_1"]);
        let employees = aggregate(&facts, KpiGrouping::Employee, as_of, &calendar());
        assert_eq!(
            employees.keys().collect::<Vec<_>>(),
            [""],
            "nobody assigned"
        );

        // Counted in two parts (at every cut) and merged: the same figures as at once, for
        // several groupings counted in one pass.
        let groupings = [KpiGrouping::Directorate, KpiGrouping::None];
        let calendar = Arc::new(calendar());
        for cut in 0..=facts.len() {
            let whole = KpiTally::new(&groupings, as_of, calendar.clone());
            let (mut first, mut second) = (whole.empty_like(), whole.empty_like());
            facts[..cut].iter().for_each(|t| first.add(t));
            facts[cut..].iter().for_each(|t| second.add(t));
            first.merge(second);
            assert_eq!(
                first.finish(),
                [groups.clone(), all.clone()],
                "cut after {cut} tickets"
            );
        }
    }

    #[test]
    fn kpi_backlog_counts_tickets_open_at_the_end_of_the_period() {
        let mut settled_late = fact("roads");
        settled_late.settle_time = Some(at(3 * DAY));
        let mut created_after = fact("roads");
        created_after.create_time = at(2 * DAY);
        created_after.settle_time = None;
        let groups = aggregate(
            &[settled_late, created_after],
            KpiGrouping::None,
            at(DAY),
            &calendar(),
        );
        let figures = &groups[ALL_GROUP];
        assert_eq!(figures.backlog, 1);
        assert_eq!(figures.ageing, [0, 1, 0, 0], "one working day old");
    }

    #[test]
    fn kpi_a_year_before_keeps_the_muscat_wall_clock() {
        // 2026-01-01 00:00 Muscat -> 2025-01-01 00:00 Muscat.
        let new_year_2026 = Timestamp::from_micros(1_767_211_200_000_000);
        assert_eq!(
            a_year_before(new_year_2026),
            Timestamp::from_micros(1_735_675_200_000_000)
        );
        assert_eq!(a_year_before(new_year_2026).muscat_year(), 2025);
    }
}
