//! KPIs end to end over gRPC, on a small fixed data set with hand-computed figures: a week
//! of tickets of two directorates (resolved fast, late, reopened, transferred, rejected,
//! escalated, rated, still open), run through the real API on a clock the test moves; the
//! same figures as CSV; a year beside the year before; and the refusals of bad periods.
//! Runs on SQLite, or on PostgreSQL with `BALAGH_TEST_BACKEND=postgres`.
//!
//! Ratings reach balagh only from the national platform's feed (no RPC records one), so the
//! test records them through the `Store` itself, as the pull does, with the server stopped.

mod common;

use std::sync::Arc;

use balagh::domain::{ManualClock, Timestamp};
use balagh::grpc::proto;
use balagh::grpc::proto::reporting_service_client::ReportingServiceClient;
use balagh::grpc::proto::sla_service_client::SlaServiceClient;
use common::{
    TestApp, TestDb, assign, create, expect_error, pothole_report, rate, resolve, spawn_app_with,
    start_work,
};
use tonic::transport::Channel;

/// Sunday 2026-11-29 08:00 in Muscat (04:00 UTC).
const SUNDAY_8: i64 = 1_795_924_800_000_000;
/// Sunday 2025-11-30 08:00 in Muscat: 364 days earlier.
const SUNDAY_8_A_YEAR_BEFORE: i64 = SUNDAY_8 - 364 * DAY;
/// 2026-11-29 00:00 and 2026-12-06 00:00 in Muscat: the week of the data set.
const WEEK_FROM_SECONDS: i64 = (SUNDAY_8 - 8 * HOUR) / 1_000_000;
const WEEK_TO_SECONDS: i64 = WEEK_FROM_SECONDS + 7 * 86_400;
const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_micros(SUNDAY_8 + offset)
}

/// Sunday to Thursday 08:00-15:00 (seven business hours, one working day), no holidays;
/// first response 60 and resolution 420 business minutes for every ticket; breaches are
/// recorded but escalate nothing, so every escalation here is one the test makes.
async fn configure(sla: &mut SlaServiceClient<Channel>) {
    common::sla::replace_calendar_and_settings(
        sla,
        common::sla::working_week("08:00-15:00"),
        common::sla::one_policy(60, 0, 420, &[]),
    )
    .await;
}

fn complaint() -> proto::CreateTicketRequest {
    proto::CreateTicketRequest {
        r#type: proto::TicketType::Complaint.into(),
        ..pothole_report()
    }
}

/// The roads and parks tickets of the week, and a roads ticket of the same week a year
/// earlier. Returns the ids to rate: (the fast one, the escalated one, the late one).
async fn build_data_set(app: &mut TestApp, clock: &ManualClock) -> (String, String, String) {
    use proto::SupportLine::{First, Second};
    // A year earlier: one roads ticket, answered after 30 minutes, resolved after an hour.
    clock.set(Timestamp::from_micros(SUNDAY_8_A_YEAR_BEFORE));
    let t0 = create(app, pothole_report()).await.id;
    assign(app, &t0, "roads", First).await;
    clock.set(Timestamp::from_micros(SUNDAY_8_A_YEAR_BEFORE + 30 * MINUTE));
    start_work(app, &t0).await;
    clock.set(Timestamp::from_micros(SUNDAY_8_A_YEAR_BEFORE + HOUR));
    resolve(app, &t0).await;

    clock.set(at(0));
    // roads: T1 fast, T2 late answer and escalated, T3 reopened, T4 left open.
    let t1 = create(app, pothole_report()).await.id;
    let t2 = create(app, complaint()).await.id;
    let t3 = create(app, pothole_report()).await.id;
    let t4 = create(app, pothole_report()).await.id;
    // parks: T5 transferred, T6 rejected, T7 on line 2 and resolved late.
    let t5 = create(app, complaint()).await.id;
    let t6 = create(app, pothole_report()).await.id;
    let t7 = create(app, pothole_report()).await.id;
    for id in [&t1, &t2, &t3, &t4] {
        assign(app, id, "roads", First).await;
    }
    assign(app, &t5, "parks", First).await;
    assign(app, &t6, "parks", First).await;
    assign(app, &t7, "parks", Second).await;

    clock.set(at(20 * MINUTE));
    start_work(app, &t3).await;
    clock.set(at(30 * MINUTE));
    start_work(app, &t1).await;
    app.tickets
        .reject_ticket(proto::RejectTicketRequest {
            ticket_id: t6.clone(),
            reason: "ليس من اختصاص البلدية".into(),
            ..Default::default()
        })
        .await
        .expect("reject");
    clock.set(at(HOUR));
    app.tickets
        .transfer_ticket(proto::TransferTicketRequest {
            ticket_id: t5.clone(),
            entity: "Ministry of Housing".into(),
            ..Default::default()
        })
        .await
        .expect("transfer");
    start_work(app, &t7).await;
    resolve(app, &t3).await;
    clock.set(at(2 * HOUR));
    resolve(app, &t1).await;
    clock.set(at(3 * HOUR));
    app.tickets
        .add_comment(proto::AddCommentRequest {
            ticket_id: t2.clone(),
            text: "نعمل على الطلب".into(),
            visibility: proto::CommentVisibility::Public.into(),
            ..Default::default()
        })
        .await
        .expect("comment");
    app.tickets
        .escalate_ticket(proto::EscalateTicketRequest {
            ticket_id: t2.clone(),
            target: proto::EscalationTarget::Line2.into(),
            reason: "يحتاج إلى ضابط الاتصال".into(),
            ..Default::default()
        })
        .await
        .expect("escalate");
    clock.set(at(5 * HOUR));
    resolve(app, &t2).await;
    // Monday 08:00: T3 is reopened, and resolved again at 09:00.
    clock.set(at(DAY));
    app.tickets
        .reopen_ticket(proto::ReopenTicketRequest {
            ticket_id: t3.clone(),
            reason: "الحفرة عادت".into(),
            ..Default::default()
        })
        .await
        .expect("reopen");
    clock.set(at(DAY + HOUR));
    resolve(app, &t3).await;
    // Monday 10:00: T7 resolved after nine business hours (Sunday's seven and two).
    clock.set(at(DAY + 2 * HOUR));
    resolve(app, &t7).await;
    (t1, t2, t7)
}

fn week(group_by: proto::KpiGrouping) -> proto::KpiQuery {
    proto::KpiQuery {
        from: Some(prost_types::Timestamp {
            seconds: WEEK_FROM_SECONDS,
            nanos: 0,
        }),
        to: Some(prost_types::Timestamp {
            seconds: WEEK_TO_SECONDS,
            nanos: 0,
        }),
        group_by: group_by.into(),
        ..Default::default()
    }
}

async fn kpis(
    reporting: &mut ReportingServiceClient<Channel>,
    query: proto::KpiQuery,
) -> proto::GetKpisResponse {
    reporting
        .get_kpis(proto::GetKpisRequest { query: Some(query) })
        .await
        .expect("kpis")
        .into_inner()
}

#[track_caller]
fn close(actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or_else(|| panic!("expected {expected}, got nothing"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

fn row<'a>(response: &'a proto::GetKpisResponse, group: &str) -> &'a proto::KpiRow {
    response
        .rows
        .iter()
        .find(|r| r.group == group)
        .unwrap_or_else(|| panic!("no group {group} in {response:#?}"))
}

#[tokio::test]
async fn kpis_of_a_fixed_week_match_the_hand_computed_figures() {
    let clock = ManualClock::new(Timestamp::from_micros(SUNDAY_8_A_YEAR_BEFORE));
    let db = TestDb::fresh().await;
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    configure(&mut SlaServiceClient::new(app.channel.clone())).await;
    let (t1, t2, t7) = build_data_set(&mut app, &clock).await;
    app.stop().await;
    clock.set(at(DAY + 3 * HOUR));
    rate(&db, &clock, &[(&t1, 5), (&t2, 2), (&t7, 4)]).await;

    // Thursday 09:00: T4 has been open 29 business hours, four working days.
    clock.set(at(4 * DAY + HOUR));
    let app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let mut reporting = ReportingServiceClient::new(app.channel.clone());
    let answer = kpis(&mut reporting, week(proto::KpiGrouping::Directorate)).await;
    assert_eq!(answer.group_by(), proto::KpiGrouping::Directorate);
    assert_eq!(
        answer
            .rows
            .iter()
            .map(|r| r.group.as_str())
            .collect::<Vec<_>>(),
        ["parks", "roads"]
    );
    assert!(answer.previous_year_from.is_none());

    let roads = row(&answer, "roads");
    assert!(roads.previous_year.is_none());
    let f = roads.figures.as_ref().expect("figures");
    assert_eq!(
        (
            f.ticket_count,
            f.report_count,
            f.complaint_count,
            f.suggestion_count,
            f.inquiry_count
        ),
        (4, 3, 1, 0, 0)
    );
    // First responses after 20 min, 30 min and 3 h (T4 has none yet).
    close(f.first_response_hours_median, 0.5);
    close(f.first_response_hours_p90, 3.0);
    // First resolutions after 1 h (T3, before its reopening), 2 h and 5 h.
    close(f.resolution_hours_median, 2.0);
    close(f.resolution_hours_p90, 5.0);
    // First responses in time: T1 and T3, not T2 (3 h) nor T4 (none after 29 h).
    close(f.first_response_compliance_percent, 50.0);
    // Resolutions in time: T1, T2, T3; T4 is already late.
    close(f.resolution_compliance_percent, 75.0);
    assert_eq!(f.escalation_count, 1);
    assert_eq!(
        (
            f.backlog,
            f.backlog_under_1_day,
            f.backlog_1_to_3_days,
            f.backlog_3_to_10_days,
            f.backlog_over_10_days
        ),
        (1, 0, 0, 1, 0)
    );
    assert_eq!(f.resolved_count, 3);
    // T1 and T3 resolved on line 1; T2 after its escalation to line 2.
    close(f.first_contact_resolution_percent, 200.0 / 3.0);
    close(f.reopen_percent, 100.0 / 3.0);
    close(f.transfer_percent, 0.0);
    close(f.rejection_percent, 0.0);
    assert_eq!(f.rated_count, 2);
    close(f.satisfaction_average, 3.5);
    close(f.satisfied_percent, 50.0);
    close(f.rating_response_percent, 200.0 / 3.0);

    let f = row(&answer, "parks").figures.expect("figures");
    assert_eq!(
        (f.ticket_count, f.report_count, f.complaint_count),
        (3, 2, 1)
    );
    // Answers after 30 min (the rejection), 1 h (the transfer) and 1 h (work started).
    close(f.first_response_hours_median, 1.0);
    close(f.first_response_hours_p90, 1.0);
    close(f.first_response_compliance_percent, 100.0);
    // Only T7 was resolved: nine business hours, over the seven allowed.
    close(f.resolution_hours_median, 9.0);
    close(f.resolution_hours_p90, 9.0);
    close(f.resolution_compliance_percent, 0.0);
    assert_eq!((f.escalation_count, f.backlog, f.resolved_count), (0, 0, 1));
    close(f.first_contact_resolution_percent, 0.0);
    close(f.reopen_percent, 0.0);
    close(f.transfer_percent, 100.0 / 3.0);
    close(f.rejection_percent, 100.0 / 3.0);
    assert_eq!(f.rated_count, 1);
    close(f.satisfaction_average, 4.0);
    close(f.satisfied_percent, 100.0);
    close(f.rating_response_percent, 100.0);

    // Not grouped: one row of all seven.
    let all = kpis(&mut reporting, week(proto::KpiGrouping::None)).await;
    assert_eq!(all.rows.len(), 1);
    let f = all.rows[0].figures.expect("figures");
    assert_eq!(all.rows[0].group, "all");
    assert_eq!((f.ticket_count, f.backlog, f.rated_count), (7, 1, 3));
    close(f.satisfaction_average, 11.0 / 3.0);
    // By support line: where each ticket was first resolved, or stands now.
    let lines = kpis(&mut reporting, week(proto::KpiGrouping::SupportLine)).await;
    let counts: Vec<_> = lines
        .rows
        .iter()
        .map(|r| (r.group.as_str(), r.figures.as_ref().map(|f| f.ticket_count)))
        .collect();
    assert_eq!(counts, [("line_1", Some(5)), ("line_2", Some(2))]);

    // The same table as CSV.
    let csv = reporting
        .export_kpis_csv(proto::ExportKpisCsvRequest {
            query: Some(week(proto::KpiGrouping::Directorate)),
        })
        .await
        .expect("csv")
        .into_inner()
        .csv;
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(
        lines[0],
        "group,ticket_count,report_count,complaint_count,suggestion_count,inquiry_count,\
         first_response_hours_median,first_response_hours_p90,resolution_hours_median,\
         resolution_hours_p90,first_response_compliance_percent,resolution_compliance_percent,\
         escalation_count,backlog,backlog_under_1_day,backlog_1_to_3_days,backlog_3_to_10_days,\
         backlog_over_10_days,resolved_count,first_contact_resolution_percent,reopen_percent,\
         transfer_percent,rejection_percent,rated_count,satisfaction_average,satisfied_percent,\
         rating_response_percent,quality_review_count,quality_score_average"
    );
    assert_eq!(
        lines[1],
        "parks,3,2,1,0,0,1.00,1.00,9.00,9.00,100.00,0.00,0,0,0,0,0,0,1,0.00,0.00,33.33,33.33,\
         1,4.00,100.00,100.00,0,"
    );
    assert_eq!(
        lines[2],
        "roads,4,3,1,0,0,0.50,3.00,2.00,5.00,50.00,75.00,1,1,0,0,1,0,3,66.67,33.33,0.00,0.00,\
         2,3.50,50.00,66.67,0,"
    );
    let mut app = app;
    app.stop().await;
}

#[tokio::test]
async fn a_year_is_shown_beside_the_year_before() {
    let clock = ManualClock::new(Timestamp::from_micros(SUNDAY_8_A_YEAR_BEFORE));
    let db = TestDb::fresh().await;
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    configure(&mut SlaServiceClient::new(app.channel.clone())).await;
    build_data_set(&mut app, &clock).await;
    clock.set(at(4 * DAY + HOUR));
    let mut reporting = ReportingServiceClient::new(app.channel.clone());
    let answer = kpis(
        &mut reporting,
        proto::KpiQuery {
            year: 2026,
            group_by: proto::KpiGrouping::Directorate.into(),
            compare_previous_year: true,
            ..Default::default()
        },
    )
    .await;
    // 1 January 2026 and 2025, 00:00 in Muscat.
    assert_eq!(answer.from.as_ref().map(|t| t.seconds), Some(1_767_211_200));
    assert_eq!(
        answer.previous_year_from.as_ref().map(|t| t.seconds),
        Some(1_735_675_200)
    );
    assert_eq!(
        answer.previous_year_to.as_ref().map(|t| t.seconds),
        Some(1_767_211_200)
    );
    let roads = row(&answer, "roads");
    assert_eq!(roads.figures.as_ref().map(|f| f.ticket_count), Some(4));
    let before = roads.previous_year.as_ref().expect("the year before");
    assert_eq!((before.ticket_count, before.resolved_count), (1, 1));
    close(before.first_response_hours_median, 0.5);
    close(before.resolution_hours_median, 1.0);
    close(before.resolution_compliance_percent, 100.0);
    close(before.first_contact_resolution_percent, 100.0);
    let parks = row(&answer, "parks");
    assert_eq!(parks.figures.as_ref().map(|f| f.ticket_count), Some(3));
    let before = parks.previous_year.as_ref().expect("the year before");
    assert_eq!(before.ticket_count, 0, "no parks tickets a year earlier");
    assert_eq!(before.first_response_hours_median, None);

    // The CSV has both periods side by side.
    let csv = reporting
        .export_kpis_csv(proto::ExportKpisCsvRequest {
            query: Some(proto::KpiQuery {
                year: 2026,
                group_by: proto::KpiGrouping::None.into(),
                compare_previous_year: true,
                ..Default::default()
            }),
        })
        .await
        .expect("csv")
        .into_inner()
        .csv;
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let cells: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(header.len(), 57);
    assert_eq!(cells.len(), 57);
    assert_eq!(header[29], "previous_year_ticket_count");
    assert_eq!((cells[0], cells[1], cells[29]), ("all", "7", "1"));
    app.stop().await;
}

#[tokio::test]
async fn bad_periods_are_refused_naming_the_fields() {
    let clock = ManualClock::new(at(0));
    let mut app = spawn_app_with(TestDb::fresh().await, |_| {}, Arc::new(clock.clone())).await;
    let mut reporting = ReportingServiceClient::new(app.channel.clone());
    let fields = expect_error(
        reporting
            .get_kpis(proto::GetKpisRequest { query: None })
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["query"]);
    let mut backwards = week(proto::KpiGrouping::Unspecified);
    std::mem::swap(&mut backwards.from, &mut backwards.to);
    let fields = expect_error(
        reporting
            .get_kpis(proto::GetKpisRequest {
                query: Some(backwards),
            })
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["query.group_by", "query.to"]);
    let mut too_long = week(proto::KpiGrouping::Channel);
    too_long.to = Some(prost_types::Timestamp {
        seconds: WEEK_FROM_SECONDS + 401 * 86_400,
        nanos: 0,
    });
    let fields = expect_error(
        reporting
            .export_kpis_csv(proto::ExportKpisCsvRequest {
                query: Some(too_long),
            })
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["query.to"]);
    let fields = expect_error(
        reporting
            .get_kpis(proto::GetKpisRequest {
                query: Some(proto::KpiQuery {
                    year: 2026,
                    from: week(proto::KpiGrouping::None).from,
                    group_by: 99,
                    ..Default::default()
                }),
            })
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["query.group_by", "query.year"]);
    let fields = expect_error(
        reporting
            .get_kpis(proto::GetKpisRequest {
                query: Some(proto::KpiQuery {
                    group_by: proto::KpiGrouping::Wilayat.into(),
                    ..Default::default()
                }),
            })
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["query.from", "query.to"]);
    app.stop().await;
}

#[tokio::test]
async fn a_years_targets_are_shown_beside_the_actuals() {
    let clock = ManualClock::new(Timestamp::from_micros(SUNDAY_8_A_YEAR_BEFORE));
    let db = TestDb::fresh().await;
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let mut sla = SlaServiceClient::new(app.channel.clone());
    configure(&mut sla).await;
    build_data_set(&mut app, &clock).await;
    clock.set(at(4 * DAY + HOUR));
    let mut reporting = ReportingServiceClient::new(app.channel.clone());
    let none = reporting
        .get_kpi_targets(proto::GetKpiTargetsRequest {})
        .await
        .expect("targets")
        .into_inner()
        .targets
        .expect("targets");
    assert!(none.targets.is_empty());
    let target = |scope: &str, kpi: &str, value: f64| proto::KpiTarget {
        year: 2026,
        scope: scope.into(),
        kpi: kpi.into(),
        target: value,
    };
    let update = |targets: Vec<proto::KpiTarget>, etag: &str| proto::UpdateKpiTargetsRequest {
        targets: Some(proto::KpiTargets {
            targets,
            ..Default::default()
        }),
        etag: etag.into(),
        request_id: String::new(),
    };

    // Mistakes are named, and nothing is stored.
    let fields = expect_error(
        reporting
            .update_kpi_targets(update(
                vec![
                    target("directorate:roads", "happiness", 1.0),
                    target("all", "reopen_percent", 150.0),
                ],
                &none.etag,
            ))
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(
        fields,
        ["targets.targets[0].kpi", "targets.targets[1].target"]
    );
    let fields = expect_error(
        reporting.update_kpi_targets(update(vec![], "")).await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["etag"]);
    expect_error(
        reporting.update_kpi_targets(update(vec![], "\"3\"")).await,
        tonic::Code::Aborted,
        "ETAG_MISMATCH",
    );

    let stored = reporting
        .update_kpi_targets(update(
            vec![
                target(
                    "directorate:roads",
                    "first_response_compliance_percent",
                    50.0,
                ),
                target("directorate:roads", "resolution_hours_median", 0.1),
                target("directorate:parks", "satisfaction_average", 4.0),
                target("all", "reopen_percent", 10.0),
            ],
            &none.etag,
        ))
        .await
        .expect("targets")
        .into_inner()
        .targets
        .expect("targets");
    assert_eq!(stored.targets.len(), 4);
    assert_ne!(stored.etag, none.etag);

    let answer = kpis(
        &mut reporting,
        proto::KpiQuery {
            year: 2026,
            group_by: proto::KpiGrouping::Directorate.into(),
            ..Default::default()
        },
    )
    .await;
    let roads = row(&answer, "roads");
    let figures = roads.figures.as_ref().expect("figures");
    assert_eq!(roads.targets.len(), 2, "{roads:#?}");
    let compliance = &roads.targets[0];
    assert_eq!(compliance.kpi, "first_response_compliance_percent");
    assert_eq!(compliance.actual, figures.first_response_compliance_percent);
    assert_eq!(
        compliance.met,
        figures.first_response_compliance_percent.map(|a| a >= 50.0)
    );
    let median = &roads.targets[1];
    assert_eq!(median.actual, figures.resolution_hours_median);
    assert_eq!(
        median.met,
        Some(false),
        "a median of 0.1 business hours is not reached"
    );
    // The municipality-wide target shows only on the ungrouped figures.
    let all = kpis(
        &mut reporting,
        proto::KpiQuery {
            year: 2026,
            group_by: proto::KpiGrouping::None.into(),
            ..Default::default()
        },
    )
    .await;
    let everyone = row(&all, "all");
    assert_eq!(everyone.targets.len(), 1);
    assert_eq!(everyone.targets[0].kpi, "reopen_percent");
    // A week is not a year: no targets.
    let week_answer = kpis(&mut reporting, week(proto::KpiGrouping::Directorate)).await;
    assert!(row(&week_answer, "roads").targets.is_empty());

    // The change is in the audit trail.
    let trail = sla
        .list_setting_changes(proto::ListSettingChangesRequest {
            setting: proto::SettingKind::KpiTargets.into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("trail")
        .into_inner();
    assert_eq!(trail.changes.len(), 1);
    assert!(trail.changes[0].value_json.contains("directorate:roads"));
    app.stop().await;
}
