//! The figures of the yearly report: the year's KPIs, per Muscat month, per directorate and
//! per category, and the KPI targets beside the actuals; the year before's the same way.
//!
//! A year is counted one Muscat month at a time, each month in a [`KpiTally`] of the
//! [`GROUPINGS`] (the store counts a month's facts into it as it reads them: each fact is
//! read once and a year's facts are never all in memory). The months' tallies, merged, are
//! the year's: exact, since a tally keeps the durations behind the medians and p90s until it
//! finishes. Every figure is the domain's ([`crate::domain::kpi`]); this module only cuts the
//! year into months and names the groups.
//!
//! Nothing here reads the store or the clock: the tallies (or the facts), the moment the
//! figures stand at and the calendar are handed in, so a test can compute a year by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::domain::Timestamp;
use crate::domain::calendar::BusinessCalendar;
use crate::domain::catalog::CatalogData;
use crate::domain::kpi::{
    ALL_GROUP, KpiFigures, KpiGrouping, KpiTally, TicketFacts, muscat_month_start,
};
use crate::domain::kpi_targets::{KpiTargets, TargetKpi, TargetResult};

/// The categories the report ranks.
pub const TOP_CATEGORIES: usize = 10;

/// What each month is counted by, in this order: the whole, per directorate, per category.
pub const GROUPINGS: [KpiGrouping; 3] = [
    KpiGrouping::None,
    KpiGrouping::Directorate,
    KpiGrouping::Category,
];

/// The 13 bounds of a Muscat year's months: 1 January 00:00, 1 February, ..., and 1 January
/// of the next year.
fn month_bounds(year: i32) -> [Timestamp; 13] {
    std::array::from_fn(|i| {
        let (y, m) = if i == 12 {
            (year + 1, 1)
        } else {
            (year, i as u32 + 1)
        };
        // Years 1999 to 2101 are far inside chrono's range.
        muscat_month_start(y, m).unwrap_or(Timestamp::from_micros(0))
    })
}

/// The Muscat months of `year`, January first, each as `[from, to)`.
pub fn months_of(year: i32) -> [(Timestamp, Timestamp); 12] {
    let bounds = month_bounds(year);
    std::array::from_fn(|m| (bounds[m], bounds[m + 1]))
}

/// Where a year's figures stand: the year's end, or `now` if sooner.
pub fn year_as_of(year: i32, now: Timestamp) -> Timestamp {
    month_bounds(year)[12].min(now)
}

/// An empty tally of one month of a year whose figures stand at `as_of` (see
/// [`year_as_of`]).
pub fn month_tally(as_of: Timestamp, calendar: Arc<BusinessCalendar>) -> KpiTally {
    KpiTally::new(&GROUPINGS, as_of, calendar)
}

/// The Muscat month (0 for January) a moment falls in, given the year's [`month_bounds`];
/// `None` outside the year.
fn month_of(bounds: &[Timestamp; 13], t: Timestamp) -> Option<usize> {
    if t < bounds[0] || t >= bounds[12] {
        return None;
    }
    Some(bounds.partition_point(|b| *b <= t) - 1)
}

/// One year's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct YearFigures {
    pub year: i32,
    /// 1 January 00:00 in Muscat, and the next year's.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Where the backlog stands: the end of the year, or the moment of the report if sooner.
    pub as_of: Timestamp,
    pub all: KpiFigures,
    /// January to December. Their backlogs stand at `as_of` too (the page shows none).
    pub months: [KpiFigures; 12],
    pub by_directorate: BTreeMap<String, KpiFigures>,
    pub by_category: BTreeMap<String, KpiFigures>,
}

impl YearFigures {
    /// The figures of `year` from its months' tallies (January first), each counted into a
    /// [`month_tally`] at `as_of`.
    pub fn from_months(year: i32, as_of: Timestamp, months: Vec<KpiTally>) -> YearFigures {
        let bounds = month_bounds(year);
        let mut month_figures: Vec<KpiFigures> = Vec::with_capacity(12);
        let mut whole: Option<KpiTally> = None;
        for tally in months {
            let mut sets = tally.clone().finish();
            month_figures.push(
                sets.first_mut()
                    .and_then(|all| all.remove(ALL_GROUP))
                    .unwrap_or_default(),
            );
            match &mut whole {
                Some(whole) => whole.merge(tally),
                None => whole = Some(tally),
            }
        }
        month_figures.resize_with(12, KpiFigures::default);
        let mut sets = whole.map(KpiTally::finish).unwrap_or_default().into_iter();
        let mut next = || sets.next().unwrap_or_default();
        let all = next().remove(ALL_GROUP).unwrap_or_default();
        let (by_directorate, by_category) = (next(), next());
        YearFigures {
            year,
            from: bounds[0],
            to: bounds[12],
            as_of,
            all,
            months: std::array::from_fn(|m| std::mem::take(&mut month_figures[m])),
            by_directorate,
            by_category,
        }
    }

    /// The same from facts held in memory (as `Store::ticket_facts` reads them for the
    /// year, in any order), standing at `now`: each fact counted in its month's tally.
    pub fn compute(
        year: i32,
        facts: &[TicketFacts],
        now: Timestamp,
        calendar: Arc<BusinessCalendar>,
    ) -> YearFigures {
        let bounds = month_bounds(year);
        let as_of = year_as_of(year, now);
        let mut months: Vec<KpiTally> = (0..12)
            .map(|_| month_tally(as_of, calendar.clone()))
            .collect();
        for t in facts {
            if let Some(month) = month_of(&bounds, t.create_time) {
                months[month].add(t);
            }
        }
        YearFigures::from_months(year, as_of, months)
    }
}

/// What a directorate or a category is called, in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupName {
    /// From the catalog.
    Named { ar: String, en: String },
    /// A code the catalog does not hold (any more): shown as the code.
    Unknown(String),
    /// The tickets not assigned to a directorate yet.
    NotAssigned,
}

/// A directorate or a category in both years.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub code: String,
    pub name: GroupName,
    pub current: KpiFigures,
    pub previous: KpiFigures,
    /// The group's targets of the year beside its actuals (directorates only).
    pub targets: Vec<TargetResult>,
}

/// Everything the yearly report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct YearlyFigures {
    pub current: YearFigures,
    pub previous: YearFigures,
    /// When the figures were computed.
    pub generated_at: Timestamp,
    /// The municipality-wide targets of the year, beside the year's actuals.
    pub targets: Vec<TargetResult>,
    /// The municipality-wide targets already set for the next year.
    pub next_year_targets: Vec<(TargetKpi, f64)>,
    /// The [`TOP_CATEGORIES`] categories with the most tickets in the year, most first.
    pub top_categories: Vec<GroupRow>,
    /// Categories with tickets in the year.
    pub n_categories: usize,
    /// Every directorate with tickets in either year, most tickets in the year first; the
    /// unassigned tickets last.
    pub directorates: Vec<GroupRow>,
}

impl YearlyFigures {
    /// Puts a year beside the year before, names the groups from the catalog, and measures
    /// the targets.
    pub fn assemble(
        current: YearFigures,
        previous: YearFigures,
        generated_at: Timestamp,
        targets: &KpiTargets,
        catalog: &CatalogData,
    ) -> YearlyFigures {
        let year = current.year;
        let directorate_name = |code: &str| {
            if code.is_empty() {
                return GroupName::NotAssigned;
            }
            catalog
                .directorates
                .iter()
                .find(|d| d.code.as_str() == code)
                .map_or(GroupName::Unknown(code.to_owned()), |d| GroupName::Named {
                    ar: d.name_ar.clone(),
                    en: d.name_en.clone(),
                })
        };
        let category_name = |code: &str| {
            catalog
                .categories
                .iter()
                .find(|c| c.code.as_str() == code)
                .map_or(GroupName::Unknown(code.to_owned()), |c| GroupName::Named {
                    ar: c.name_ar.clone(),
                    en: c.name_en.clone(),
                })
        };

        let mut directorates: Vec<GroupRow> =
            rows(&current.by_directorate, &previous.by_directorate)
                .map(|(code, now, before)| GroupRow {
                    name: directorate_name(&code),
                    targets: targets.evaluate(year, KpiGrouping::Directorate, &code, &now),
                    code,
                    current: now,
                    previous: before,
                })
                .collect();
        directorates.sort_by(|a, b| {
            (
                a.code.is_empty(),
                b.current.n_tickets,
                b.previous.n_tickets,
                &a.code,
            )
                .cmp(&(
                    b.code.is_empty(),
                    a.current.n_tickets,
                    a.previous.n_tickets,
                    &b.code,
                ))
        });

        let mut categories: Vec<GroupRow> = rows(&current.by_category, &previous.by_category)
            .filter(|(_, now, _)| now.n_tickets > 0)
            .map(|(code, now, before)| GroupRow {
                name: category_name(&code),
                code,
                current: now,
                previous: before,
                targets: Vec::new(),
            })
            .collect();
        categories
            .sort_by(|a, b| (b.current.n_tickets, &a.code).cmp(&(a.current.n_tickets, &b.code)));
        let n_categories = categories.len();
        categories.truncate(TOP_CATEGORIES);

        let municipality_targets =
            targets.evaluate(year, KpiGrouping::None, ALL_GROUP, &current.all);
        let next_year_targets = targets
            .evaluate(year + 1, KpiGrouping::None, ALL_GROUP, &current.all)
            .into_iter()
            .map(|t| (t.kpi, t.target))
            .collect();
        YearlyFigures {
            current,
            previous,
            generated_at,
            targets: municipality_targets,
            next_year_targets,
            top_categories: categories,
            n_categories,
            directorates,
        }
    }

    pub fn year(&self) -> i32 {
        self.current.year
    }

    /// Whether the year had begun but not ended when the figures were computed.
    pub fn is_in_progress(&self) -> bool {
        self.current.from <= self.current.as_of && self.current.as_of < self.current.to
    }

    /// Whether the year had not begun when the figures were computed.
    pub fn is_in_future(&self) -> bool {
        self.current.as_of < self.current.from
    }
}

/// Every group of either year, with its figures in both (empty figures where it had none).
fn rows<'a>(
    current: &'a BTreeMap<String, KpiFigures>,
    previous: &'a BTreeMap<String, KpiFigures>,
) -> impl Iterator<Item = (String, KpiFigures, KpiFigures)> + 'a {
    let keys: BTreeSet<&String> = current.keys().chain(previous.keys()).collect();
    keys.into_iter().map(|key| {
        (
            key.clone(),
            current.get(key).cloned().unwrap_or_default(),
            previous.get(key).cloned().unwrap_or_default(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{CalendarSpec, DayHoursSpec};
    use crate::domain::catalog::CatalogData;
    use crate::domain::kpi::aggregate;
    use crate::domain::kpi_targets::{KpiTargetSpec, KpiTargetsSpec};
    use crate::domain::ticket::{Channel, Status, SupportLine, TicketType};
    use crate::domain::values::{Code, TicketId};

    const HOUR: i64 = 3_600_000_000;

    fn calendar() -> Arc<BusinessCalendar> {
        let week = ["sunday", "monday", "tuesday", "wednesday", "thursday"]
            .into_iter()
            .map(|day| DayHoursSpec {
                day: day.to_owned(),
                hours: vec!["08:00-15:00".to_owned()],
            })
            .collect();
        Arc::new(
            BusinessCalendar::parse(CalendarSpec {
                week,
                seasons: Vec::new(),
                recurring_holidays: Vec::new(),
                holidays: Vec::new(),
            })
            .expect("valid calendar"),
        )
    }

    fn code(text: &str) -> Code {
        Code::parse("code", text).expect("code")
    }

    /// A resolved complaint of `category`, assigned to `directorate`, created at `at`.
    fn fact(at: Timestamp, directorate: Option<&str>, category: &str) -> TicketFacts {
        TicketFacts {
            ticket_id: TicketId::new_v7(),
            create_time: at,
            ticket_type: TicketType::Complaint,
            channel: Channel::App,
            category: code(category),
            directorate: directorate.map(code),
            outlet: None,
            wilayat: None,
            support_line: Some(SupportLine::First),
            assignee: None,
            status: Status::Resolved,
            first_response_seconds: Some(1800),
            resolution_seconds: Some(3600),
            first_response_met: Some(true),
            resolution_met: Some(true),
            n_escalations: 0,
            reopened: false,
            transferred: false,
            rejected: false,
            resolved_at_line_1: true,
            satisfaction_score: None,
            resolve_time: Some(Timestamp::from_micros(at.as_micros() + HOUR)),
            settle_time: Some(Timestamp::from_micros(at.as_micros() + HOUR)),
        }
    }

    fn month(year: i32, m: u32) -> Timestamp {
        muscat_month_start(year, m).expect("month")
    }

    #[test]
    fn report_months_are_muscat_months() {
        let bounds = month_bounds(2026);
        // 31 December 2025 21:00 UTC is 1 January 2026 01:00 in Muscat.
        let new_year_night = Timestamp::from_micros(1_767_214_800_000_000);
        assert_eq!(month_of(&bounds, new_year_night), Some(0));
        let just_before = Timestamp::from_micros(bounds[1].as_micros() - 1);
        assert_eq!(month_of(&bounds, just_before), Some(0));
        assert_eq!(month_of(&bounds, bounds[1]), Some(1));
        assert_eq!(month_of(&bounds, bounds[11]), Some(11));
        assert_eq!(month_of(&bounds, bounds[12]), None, "next year");
        assert_eq!(
            month_of(&bounds, Timestamp::from_micros(bounds[0].as_micros() - 1)),
            None
        );
        assert_eq!(bounds[0].muscat_year(), 2026);
        assert_eq!(bounds[12].muscat_year(), 2027);
    }

    #[test]
    fn report_figures_of_a_hand_built_year() {
        let mut facts = vec![
            fact(month(2026, 1), Some("roads"), "pothole"),
            fact(month(2026, 1), Some("roads"), "pothole"),
            fact(month(2026, 3), Some("parks"), "trees"),
            fact(month(2026, 12), None, "pothole"),
        ];
        facts[0].satisfaction_score = Some(5);
        facts[1].satisfaction_score = Some(2);
        facts[1].first_response_met = Some(false);
        // Still open: in the backlog of March and of the year.
        facts[2].settle_time = None;
        facts[2].resolve_time = None;
        facts[2].resolution_seconds = None;
        facts[2].resolution_met = None;
        let previous = vec![fact(month(2025, 1), Some("roads"), "waste")];
        let now = month(2027, 2);
        let current = YearFigures::compute(2026, &facts, now, calendar());
        let before = YearFigures::compute(2025, &previous, now, calendar());
        assert_eq!(current.all.n_tickets, 4);
        // The months' tallies merged are the year's KPIs, as a KPI query counts them.
        let as_of = current.as_of;
        assert_eq!(
            current.all,
            aggregate(&facts, KpiGrouping::None, as_of, &calendar())[ALL_GROUP]
        );
        assert_eq!(
            current.by_directorate,
            aggregate(&facts, KpiGrouping::Directorate, as_of, &calendar())
        );
        assert_eq!(
            current.by_category,
            aggregate(&facts, KpiGrouping::Category, as_of, &calendar())
        );
        assert_eq!(current.all.satisfaction_average, Some(3.5));
        let counts: Vec<u64> = current.months.iter().map(|m| m.n_tickets).collect();
        assert_eq!(counts, [2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(
            current.months[0].first_response_compliance_percent,
            Some(50.0)
        );
        assert_eq!(current.months[1].first_response_compliance_percent, None);
        assert_eq!(current.months[2].backlog, 1);
        assert_eq!(current.all.backlog, 1);
        assert_eq!(current.as_of, month(2027, 1), "the year is over");

        let catalog = CatalogData::default_catalog().expect("catalog");
        let targets = KpiTargets::parse(KpiTargetsSpec {
            targets: vec![
                KpiTargetSpec {
                    year: 2026,
                    scope: "all".into(),
                    kpi: "first_response_compliance_percent".into(),
                    target: 80.0,
                },
                KpiTargetSpec {
                    year: 2027,
                    scope: "all".into(),
                    kpi: "satisfaction_average".into(),
                    target: 4.0,
                },
                KpiTargetSpec {
                    year: 2026,
                    scope: "directorate:roads".into(),
                    kpi: "satisfaction_average".into(),
                    target: 3.0,
                },
            ],
        })
        .expect("targets");
        let yearly = YearlyFigures::assemble(current, before, now, &targets, &catalog);
        assert!(!yearly.is_in_progress());
        assert_eq!(yearly.targets.len(), 1);
        assert_eq!(yearly.targets[0].actual, Some(75.0));
        assert_eq!(yearly.targets[0].met, Some(false));
        assert_eq!(
            yearly.next_year_targets,
            [(TargetKpi::SatisfactionAverage, 4.0)]
        );
        let directorates: Vec<(&str, u64, u64)> = yearly
            .directorates
            .iter()
            .map(|d| (d.code.as_str(), d.current.n_tickets, d.previous.n_tickets))
            .collect();
        assert_eq!(
            directorates,
            [("roads", 2, 1), ("parks", 1, 0), ("", 1, 0)],
            "most tickets first, the unassigned last"
        );
        assert!(matches!(
            yearly.directorates[0].name,
            GroupName::Named { .. }
        ));
        assert_eq!(yearly.directorates[2].name, GroupName::NotAssigned);
        assert_eq!(yearly.directorates[0].targets.len(), 1);
        assert_eq!(
            yearly.directorates[0].targets[0].met,
            Some(true),
            "3.5 >= 3"
        );
        let categories: Vec<(&str, u64, u64)> = yearly
            .top_categories
            .iter()
            .map(|c| (c.code.as_str(), c.current.n_tickets, c.previous.n_tickets))
            .collect();
        assert_eq!(
            categories,
            [("pothole", 3, 0), ("trees", 1, 0)],
            "a category with tickets only the year before is not ranked"
        );
        assert_eq!(yearly.n_categories, 2);
    }

    #[test]
    fn report_figures_of_an_empty_year_in_progress() {
        let now = month(2026, 6);
        let current = YearFigures::compute(2026, &[], now, calendar());
        let before = YearFigures::compute(2025, &[], now, calendar());
        let yearly = YearlyFigures::assemble(
            current,
            before,
            now,
            &KpiTargets::default(),
            &CatalogData::default_catalog().expect("catalog"),
        );
        assert!(yearly.is_in_progress() && !yearly.is_in_future());
        assert_eq!(yearly.current.all.n_tickets, 0);
        let ahead = YearFigures::compute(2027, &[], now, calendar());
        let yearly = YearlyFigures::assemble(
            ahead,
            YearFigures::compute(2026, &[], now, calendar()),
            now,
            &KpiTargets::default(),
            &CatalogData::default_catalog().expect("catalog"),
        );
        assert!(yearly.is_in_future() && !yearly.is_in_progress());
        assert!(yearly.top_categories.is_empty() && yearly.directorates.is_empty());
        assert_eq!(yearly.current.all.first_response_compliance_percent, None);
    }
}
