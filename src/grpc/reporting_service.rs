//! `balagh.v1.ReportingService`: the KPIs of the tickets created in a period, per group,
//! optionally beside the same period of the year before, as a table or as CSV.
//!
//! The figures come from the per-ticket facts the SLA projection keeps
//! ([`crate::domain::kpi::TicketFacts`]); each call first brings the projection up to date
//! ([`SlaRuntime::follow`]), so every change committed before the call is counted. The
//! aggregation itself is the domain's ([`aggregate`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{EnumInput, Violations, timestamp_from_proto, timestamp_to_proto};
use super::error::{invalid_argument, prefixed};
use super::proto::{self, reporting_service_server::ReportingService};
use super::request::{parse_setting_etag, request_key, write_context};
use crate::domain::kpi::{KpiFigures, KpiGrouping, KpiTally, a_year_before, muscat_month_start};
use crate::domain::kpi_targets::{KpiTargetSpec, KpiTargets, KpiTargetsSpec};
use crate::domain::{FieldViolation, Timestamp};
use crate::sla::SlaRuntime;
use crate::store::{SettingKey, Store, StoredSetting};

/// The longest period one query may cover: a year and a little slack.
pub const MAX_PERIOD_DAYS: i64 = 400;
const DAY_MICROS: i64 = 86_400 * 1_000_000;
const MIN_YEAR: i32 = 2000;
const MAX_YEAR: i32 = 2100;

pub struct ReportingServiceImpl {
    store: Arc<dyn Store>,
    sla: Arc<SlaRuntime>,
}

impl ReportingServiceImpl {
    pub fn new(store: Arc<dyn Store>, sla: Arc<SlaRuntime>) -> Self {
        Self { store, sla }
    }
}

/// A KPI query once parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KpiQuery {
    from: Timestamp,
    to: Timestamp,
    /// The year asked for, when the query names one (targets are per year).
    year: Option<i32>,
    grouping: KpiGrouping,
    compare_previous_year: bool,
}

fn parse_query(query: Option<&proto::KpiQuery>) -> Result<KpiQuery, Vec<FieldViolation>> {
    let Some(q) = query else {
        return Err(vec![FieldViolation::new("query", "is required")]);
    };
    let mut v = Violations::default();
    let grouping = v.take(KpiGrouping::from_proto("query.group_by", q.group_by));
    let period = if q.year != 0 {
        if q.from.is_some() || q.to.is_some() {
            v.push("query.year", "give either a year or from and to, not both");
            None
        } else if !(MIN_YEAR..=MAX_YEAR).contains(&q.year) {
            v.push(
                "query.year",
                format!("must be from {MIN_YEAR} to {MAX_YEAR}"),
            );
            None
        } else {
            muscat_month_start(q.year, 1).zip(muscat_month_start(q.year + 1, 1))
        }
    } else {
        let mut bound = |field: &str, t: &Option<prost_types::Timestamp>| match t {
            None => {
                v.push(field, "is required (or give a year)");
                None
            }
            Some(t) => v.take(timestamp_from_proto(field, t)),
        };
        let from = bound("query.from", &q.from);
        let to = bound("query.to", &q.to);
        match (from, to) {
            (Some(from), Some(to)) if from >= to => {
                v.push("query.to", "must be after from");
                None
            }
            (Some(from), Some(to))
                if to.as_micros() - from.as_micros() > MAX_PERIOD_DAYS * DAY_MICROS =>
            {
                v.push(
                    "query.to",
                    format!("the period must be at most {MAX_PERIOD_DAYS} days"),
                );
                None
            }
            (from, to) => from.zip(to),
        }
    };
    v.finish(|| {
        let (from, to) = period?;
        Some(KpiQuery {
            from,
            to,
            year: (q.year != 0).then_some(q.year),
            grouping: grouping?,
            compare_previous_year: q.compare_previous_year,
        })
    })
}

fn targets_to_proto(stored: Option<&StoredSetting>, targets: &KpiTargets) -> proto::KpiTargets {
    proto::KpiTargets {
        targets: targets
            .spec()
            .targets
            .iter()
            .map(|t| proto::KpiTarget {
                year: t.year,
                scope: t.scope.clone(),
                kpi: t.kpi.clone(),
                target: t.target,
            })
            .collect(),
        etag: crate::domain::ticket::etag_of(stored.map_or(0, |s| s.version)),
        update_time: stored.map(|s| timestamp_to_proto(s.update_time)),
        updated_by: stored.map(|s| s.actor.clone()).unwrap_or_default(),
    }
}

/// The figures of both periods per group.
type Table = BTreeMap<String, (KpiFigures, Option<KpiFigures>)>;

impl ReportingServiceImpl {
    /// The stored targets (none before the first change).
    async fn targets(&self) -> Result<(Option<StoredSetting>, KpiTargets), Status> {
        Ok(crate::kpi_targets::kpi_targets(self.store.as_ref()).await?)
    }

    /// The table the principal may see: a directorate-scoped caller (a liaison officer) sees
    /// its own directorate's row of a table grouped by directorate, nothing else.
    async fn scoped_table(
        &self,
        principal: &crate::auth::Principal,
        query: KpiQuery,
    ) -> Result<(Table, Option<(Timestamp, Timestamp)>), Status> {
        use crate::auth::TicketScope;
        match principal.ticket_scope() {
            TicketScope::All => self.table(query).await,
            TicketScope::Directorate { directorate, .. }
                if query.grouping == KpiGrouping::Directorate =>
            {
                let (mut table, previous) = self.table(query).await?;
                table.retain(|group, _| group == directorate.as_str());
                Ok((table, previous))
            }
            _ => Err(super::error::status(
                tonic::Code::PermissionDenied,
                "KPI_GROUPING_OUTSIDE_SCOPE",
                "a directorate's staff see the KPIs of their directorate: group by DIRECTORATE",
                std::collections::HashMap::new(),
                &[],
            )),
        }
    }

    async fn table(
        &self,
        query: KpiQuery,
    ) -> Result<(Table, Option<(Timestamp, Timestamp)>), Status> {
        self.sla.follow().await?;
        let calendar = Arc::new(self.sla.config().calendar.clone());
        let now = self.sla.now();
        let figures = |from: Timestamp, to: Timestamp| {
            let store = self.store.clone();
            let calendar = calendar.clone();
            async move {
                // The backlog stands at the end of the period, or now if that is sooner.
                let tally = KpiTally::new(&[query.grouping], to.min(now), calendar);
                let tally = store.tally_ticket_facts(from, to, tally).await?;
                Ok::<_, Status>(tally.finish().pop().unwrap_or_default())
            }
        };
        let current = figures(query.from, query.to).await?;
        if !query.compare_previous_year {
            let table = current.into_iter().map(|(g, f)| (g, (f, None))).collect();
            return Ok((table, None));
        }
        let previous_period = (a_year_before(query.from), a_year_before(query.to));
        let previous = figures(previous_period.0, previous_period.1).await?;
        // A group with tickets in only one of the periods shows empty figures for the other.
        let groups: std::collections::BTreeSet<&String> =
            current.keys().chain(previous.keys()).collect();
        let table = groups
            .into_iter()
            .map(|g| {
                let now = current.get(g).cloned().unwrap_or_default();
                let before = previous.get(g).cloned().unwrap_or_default();
                (g.clone(), (now, Some(before)))
            })
            .collect();
        Ok((table, Some(previous_period)))
    }
}

fn figures_to_proto(f: &KpiFigures) -> proto::KpiFigures {
    let n = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    proto::KpiFigures {
        ticket_count: n(f.n_tickets),
        report_count: n(f.n_reports),
        complaint_count: n(f.n_complaints),
        suggestion_count: n(f.n_suggestions),
        inquiry_count: n(f.n_inquiries),
        first_response_hours_median: f.first_response_hours_median,
        first_response_hours_p90: f.first_response_hours_p90,
        resolution_hours_median: f.resolution_hours_median,
        resolution_hours_p90: f.resolution_hours_p90,
        first_response_compliance_percent: f.first_response_compliance_percent,
        resolution_compliance_percent: f.resolution_compliance_percent,
        escalation_count: n(f.n_escalations),
        backlog: n(f.backlog),
        backlog_under_1_day: n(f.ageing[0]),
        backlog_1_to_3_days: n(f.ageing[1]),
        backlog_3_to_10_days: n(f.ageing[2]),
        backlog_over_10_days: n(f.ageing[3]),
        resolved_count: n(f.n_resolved),
        first_contact_resolution_percent: f.first_contact_resolution_percent,
        reopen_percent: f.reopen_percent,
        transfer_percent: f.transfer_percent,
        rejection_percent: f.rejection_percent,
        rated_count: n(f.n_rated),
        satisfaction_average: f.satisfaction_average,
        satisfied_percent: f.satisfied_percent,
        rating_response_percent: f.rating_response_percent,
        quality_review_count: n(f.n_quality_reviews),
        quality_score_average: f.quality_score_average,
    }
}

/// The CSV columns of a figures block, in order.
const CSV_COLUMNS: [&str; 28] = [
    "ticket_count",
    "report_count",
    "complaint_count",
    "suggestion_count",
    "inquiry_count",
    "first_response_hours_median",
    "first_response_hours_p90",
    "resolution_hours_median",
    "resolution_hours_p90",
    "first_response_compliance_percent",
    "resolution_compliance_percent",
    "escalation_count",
    "backlog",
    "backlog_under_1_day",
    "backlog_1_to_3_days",
    "backlog_3_to_10_days",
    "backlog_over_10_days",
    "resolved_count",
    "first_contact_resolution_percent",
    "reopen_percent",
    "transfer_percent",
    "rejection_percent",
    "rated_count",
    "satisfaction_average",
    "satisfied_percent",
    "rating_response_percent",
    "quality_review_count",
    "quality_score_average",
];

/// The cells of a figures block, in [`CSV_COLUMNS`] order: counts as integers, other figures
/// with two decimals, an absent figure as an empty cell.
fn csv_cells(f: &KpiFigures) -> Vec<String> {
    let count = |n: u64| n.to_string();
    let real = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_default();
    vec![
        count(f.n_tickets),
        count(f.n_reports),
        count(f.n_complaints),
        count(f.n_suggestions),
        count(f.n_inquiries),
        real(f.first_response_hours_median),
        real(f.first_response_hours_p90),
        real(f.resolution_hours_median),
        real(f.resolution_hours_p90),
        real(f.first_response_compliance_percent),
        real(f.resolution_compliance_percent),
        count(f.n_escalations),
        count(f.backlog),
        count(f.ageing[0]),
        count(f.ageing[1]),
        count(f.ageing[2]),
        count(f.ageing[3]),
        count(f.n_resolved),
        real(f.first_contact_resolution_percent),
        real(f.reopen_percent),
        real(f.transfer_percent),
        real(f.rejection_percent),
        count(f.n_rated),
        real(f.satisfaction_average),
        real(f.satisfied_percent),
        real(f.rating_response_percent),
        count(f.n_quality_reviews),
        real(f.quality_score_average),
    ]
}

/// One field per RFC 4180: quoted (with inner quotes doubled) when it holds a comma, a
/// quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The table as CSV: a header row, then one line per group, lines ending in CRLF.
fn to_csv(table: &Table, compare_previous_year: bool) -> String {
    let mut header = vec!["group".to_owned()];
    header.extend(CSV_COLUMNS.iter().map(|c| (*c).to_owned()));
    if compare_previous_year {
        header.extend(CSV_COLUMNS.iter().map(|c| format!("previous_year_{c}")));
    }
    let mut lines = vec![header];
    for (group, (current, previous)) in table {
        let mut line = vec![group.clone()];
        line.extend(csv_cells(current));
        if compare_previous_year {
            line.extend(csv_cells(
                previous.as_ref().unwrap_or(&KpiFigures::default()),
            ));
        }
        lines.push(line);
    }
    let mut csv = String::new();
    for line in lines {
        let fields: Vec<String> = line.iter().map(|f| csv_field(f)).collect();
        csv.push_str(&fields.join(","));
        csv.push_str("\r\n");
    }
    csv
}

#[tonic::async_trait]
impl ReportingService for ReportingServiceImpl {
    async fn get_kpis(
        &self,
        request: Request<proto::GetKpisRequest>,
    ) -> Result<Response<proto::GetKpisResponse>, Status> {
        let query = parse_query(request.get_ref().query.as_ref()).map_err(invalid_argument)?;
        let principal = crate::auth::Principal::of(&request);
        let (table, previous_period) = self.scoped_table(&principal, query).await?;
        let targets = match query.year {
            Some(_) => self.targets().await?.1,
            None => KpiTargets::default(),
        };
        Ok(Response::new(proto::GetKpisResponse {
            from: Some(timestamp_to_proto(query.from)),
            to: Some(timestamp_to_proto(query.to)),
            previous_year_from: previous_period.map(|(from, _)| timestamp_to_proto(from)),
            previous_year_to: previous_period.map(|(_, to)| timestamp_to_proto(to)),
            group_by: proto::KpiGrouping::from(query.grouping).into(),
            rows: table
                .iter()
                .map(|(group, (current, previous))| proto::KpiRow {
                    group: group.clone(),
                    figures: Some(figures_to_proto(current)),
                    previous_year: previous.as_ref().map(figures_to_proto),
                    targets: query
                        .year
                        .map(|year| targets.evaluate(year, query.grouping, group, current))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| proto::KpiTargetResult {
                            kpi: t.kpi.as_str().to_owned(),
                            target: t.target,
                            actual: t.actual,
                            met: t.met,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn get_kpi_targets(
        &self,
        _request: Request<proto::GetKpiTargetsRequest>,
    ) -> Result<Response<proto::GetKpiTargetsResponse>, Status> {
        let (stored, targets) = self.targets().await?;
        Ok(Response::new(proto::GetKpiTargetsResponse {
            targets: Some(targets_to_proto(stored.as_ref(), &targets)),
        }))
    }

    async fn update_kpi_targets(
        &self,
        request: Request<proto::UpdateKpiTargetsRequest>,
    ) -> Result<Response<proto::UpdateKpiTargetsResponse>, Status> {
        let message = request.get_ref();
        let mut v = Violations::default();
        let key = v.take(request_key(
            "UpdateKpiTargets",
            &message.request_id,
            message,
            |m| m.request_id.clear(),
        ));
        // Before the first change the targets are the empty default, whose etag is "0".
        let version = v
            .take(parse_setting_etag("etag", &message.etag, "targets"))
            .map(Some);
        let spec = KpiTargetsSpec {
            targets: message
                .targets
                .as_ref()
                .map(|t| t.targets.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|t| KpiTargetSpec {
                    year: t.year,
                    scope: t.scope.clone(),
                    kpi: t.kpi.clone(),
                    target: t.target,
                })
                .collect(),
        };
        let parsed = v.take_many(
            KpiTargets::parse(spec).map_err(|violations| prefixed("targets.", violations)),
        );
        let (key, version, parsed) = v
            .finish(|| Some((key?, version?, parsed?)))
            .map_err(invalid_argument)?;
        let value = serde_json::to_string(parsed.spec())
            .map_err(|e| Status::internal(format!("cannot encode the targets: {e}")))?;
        let stored = self
            .store
            .put_setting(
                write_context(&request, key),
                SettingKey::KpiTargets,
                value,
                version,
            )
            .await?;
        tracing::info!(version = stored.version, "KPI targets changed");
        Ok(Response::new(proto::UpdateKpiTargetsResponse {
            targets: Some(targets_to_proto(Some(&stored), &parsed)),
        }))
    }

    async fn export_kpis_csv(
        &self,
        request: Request<proto::ExportKpisCsvRequest>,
    ) -> Result<Response<proto::ExportKpisCsvResponse>, Status> {
        let query = parse_query(request.get_ref().query.as_ref()).map_err(invalid_argument)?;
        let principal = crate::auth::Principal::of(&request);
        let (table, _) = self.scoped_table(&principal, query).await?;
        Ok(Response::new(proto::ExportKpisCsvResponse {
            csv: to_csv(&table, query.compare_previous_year),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_csv_quotes_per_rfc_4180() {
        assert_eq!(csv_field("roads"), "roads");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn kpi_query_periods_are_checked() {
        let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let fields = |q: proto::KpiQuery| {
            parse_query(Some(&q))
                .expect_err("invalid")
                .into_iter()
                .map(|v| v.field)
                .collect::<Vec<_>>()
        };
        let group_by = proto::KpiGrouping::Directorate.into();
        assert_eq!(
            fields(proto::KpiQuery {
                from: at(100),
                to: at(100),
                ..Default::default()
            }),
            ["query.group_by", "query.to"]
        );
        assert_eq!(
            fields(proto::KpiQuery {
                from: at(0),
                to: at(401 * 86_400),
                group_by,
                ..Default::default()
            }),
            ["query.to"]
        );
        assert_eq!(
            fields(proto::KpiQuery {
                year: 2026,
                to: at(5),
                group_by,
                ..Default::default()
            }),
            ["query.year"]
        );
        let year = parse_query(Some(&proto::KpiQuery {
            year: 2026,
            group_by,
            ..Default::default()
        }))
        .expect("valid");
        assert_eq!(year.from.muscat_year(), 2026);
        assert_eq!(year.to.muscat_year(), 2027);
        assert_eq!(a_year_before(year.to), year.from);
    }
}
