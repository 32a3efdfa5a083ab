//! SLA and escalation end to end over gRPC, with a clock the test moves: the calendar and
//! SLA settings managed over the API, deadlines on the ticket, warnings and breaches recorded
//! once (also after a restart), escalation up the matrix, the board of tickets at risk, and
//! the refusals of bad input.

mod common;

use std::sync::Arc;

use balagh::domain::{ManualClock, Timestamp};
use balagh::grpc::proto;
use balagh::grpc::proto::sla_service_client::SlaServiceClient;
use common::{TestApp, TestDb, create, expect_error, pothole_report, spawn_app_with};
use tonic::transport::Channel;

/// Sunday 2026-11-29 08:00 in Muscat (04:00 UTC).
const SUNDAY_8: i64 = 1_795_924_800_000_000;
const MINUTE: i64 = 60_000_000;

fn at_minutes(minutes: i64) -> Timestamp {
    Timestamp::from_micros(SUNDAY_8 + minutes * MINUTE)
}

fn sla_client(app: &TestApp) -> SlaServiceClient<Channel> {
    SlaServiceClient::new(app.channel.clone())
}

/// Sunday to Thursday 08:00-16:00, no holidays.
fn simple_calendar() -> proto::BusinessCalendar {
    common::sla::working_week("08:00-16:00")
}

/// One policy for every category: first response 60, update 120, resolution 480 business
/// minutes; lines hold 120, 240 and 480; line-hold and resolution breaches escalate.
fn simple_settings() -> proto::SlaSettings {
    common::sla::one_policy(
        60,
        120,
        480,
        &[
            proto::DeadlineKind::LineHold,
            proto::DeadlineKind::Resolution,
        ],
    )
}

async fn configure(sla: &mut SlaServiceClient<Channel>) {
    common::sla::replace_calendar_and_settings(sla, simple_calendar(), simple_settings()).await;
}

async fn sweep(sla: &mut SlaServiceClient<Channel>) -> proto::RunEscalationSweepResponse {
    sla.run_escalation_sweep(proto::RunEscalationSweepRequest {})
        .await
        .expect("sweep")
        .into_inner()
}

async fn events(app: &mut TestApp, ticket_id: &str) -> Vec<proto::TicketEvent> {
    app.tickets
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: ticket_id.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("events")
        .into_inner()
        .events
}

async fn get(app: &mut TestApp, ticket_id: &str) -> proto::Ticket {
    app.tickets
        .get_ticket(proto::GetTicketRequest {
            reveal_personal_data: false,
            lookup: Some(proto::get_ticket_request::Lookup::Id(ticket_id.into())),
        })
        .await
        .expect("get")
        .into_inner()
        .ticket
        .expect("ticket")
}

fn alerts(events: &[proto::TicketEvent]) -> Vec<(proto::TicketEventKind, proto::DeadlineKind)> {
    events
        .iter()
        .filter_map(|e| e.sla_alert.as_ref().map(|a| (e.kind(), a.kind())))
        .collect()
}

async fn assign_line_1(app: &mut TestApp, ticket_id: &str) {
    app.tickets
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: ticket_id.into(),
            directorate: "roads".into(),
            support_line: proto::SupportLine::First.into(),
            ..Default::default()
        })
        .await
        .expect("assign");
}

#[tokio::test]
async fn deadlines_warn_breach_and_escalate_once_also_after_a_restart() {
    let clock = ManualClock::new(at_minutes(0));
    let db = TestDb::fresh().await;
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let mut sla = sla_client(&app);
    configure(&mut sla).await;
    let ticket = create(&mut app, pothole_report()).await;
    assign_line_1(&mut app, &ticket.id).await;

    // Deadlines are on the ticket from the start.
    let shown = get(&mut app, &ticket.id).await;
    let clock_view = shown.sla.expect("GetTicket carries the SLA");
    assert_eq!(clock_view.policy_code, "standard");
    let first = clock_view
        .deadlines
        .iter()
        .find(|d| d.kind() == proto::DeadlineKind::FirstResponse)
        .expect("a first-response deadline");
    assert_eq!(
        first.due_time.as_ref().map(|t| t.seconds),
        Some(at_minutes(60).as_micros() / 1_000_000)
    );

    let report = sweep(&mut sla).await;
    assert!(report.tickets_recomputed >= 1, "{report:?}");
    assert_eq!((report.warnings, report.breaches), (0, 0));

    // 46 minutes: the first response is 75% gone.
    clock.set(at_minutes(46));
    let report = sweep(&mut sla).await;
    assert_eq!(
        (report.warnings, report.breaches, report.escalations),
        (1, 0, 0)
    );
    // 61 minutes: first response breached (recorded, not escalating by these settings).
    clock.set(at_minutes(61));
    let report = sweep(&mut sla).await;
    assert_eq!(
        (report.warnings, report.breaches, report.escalations),
        (0, 1, 0)
    );
    // 91 minutes: line 1 has held the ticket for 75% of its two hours.
    clock.set(at_minutes(91));
    let report = sweep(&mut sla).await;
    assert_eq!(
        (report.warnings, report.breaches, report.escalations),
        (1, 0, 0)
    );
    // 121 minutes: line 1's hold is breached and the ticket goes to line 2.
    clock.set(at_minutes(121));
    let report = sweep(&mut sla).await;
    assert_eq!(
        (report.warnings, report.breaches, report.escalations),
        (0, 1, 1)
    );
    let escalated = get(&mut app, &ticket.id).await;
    assert_eq!(
        escalated.assignment.as_ref().map(|a| a.support_line()),
        Some(proto::SupportLine::Second)
    );
    assert_eq!(escalated.escalation_level, 1);
    let log = events(&mut app, &ticket.id).await;
    assert_eq!(
        alerts(&log),
        [
            (
                proto::TicketEventKind::SlaWarning,
                proto::DeadlineKind::FirstResponse
            ),
            (
                proto::TicketEventKind::SlaBreached,
                proto::DeadlineKind::FirstResponse
            ),
            (
                proto::TicketEventKind::SlaWarning,
                proto::DeadlineKind::LineHold
            ),
            (
                proto::TicketEventKind::SlaBreached,
                proto::DeadlineKind::LineHold
            ),
        ]
    );
    let breach = log.last().expect("events");
    assert_eq!(breach.escalated_to(), proto::EscalationTarget::Line2);
    assert_eq!(breach.actor, "sla-scheduler");

    // Nothing fires twice: not on the next sweep, not after a restart.
    let report = sweep(&mut sla).await;
    assert_eq!((report.warnings, report.breaches), (0, 0));
    app.stop().await;
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let mut sla = sla_client(&app);
    let report = sweep(&mut sla).await;
    assert_eq!((report.warnings, report.breaches), (0, 0), "{report:?}");
    assert_eq!(events(&mut app, &ticket.id).await.len(), log.len());

    // The board: line 2 may hold it 240 business minutes, so it is due at minute 361.
    let board = |within: u32| proto::ListTicketsAtRiskRequest {
        directorate: "roads".into(),
        within_business_minutes: within,
        page_size: 0,
    };
    let soon = sla
        .list_tickets_at_risk(board(60))
        .await
        .expect("board")
        .into_inner();
    assert!(soon.tickets.is_empty(), "{soon:?}");
    let later = sla
        .list_tickets_at_risk(board(300))
        .await
        .expect("board")
        .into_inner();
    assert_eq!(later.tickets.len(), 1);
    assert_eq!(later.tickets[0].reference, ticket.reference);
    assert_eq!(later.tickets[0].kind(), proto::DeadlineKind::LineHold);
    assert!(!later.tickets[0].breached);
    let other = sla
        .list_tickets_at_risk(proto::ListTicketsAtRiskRequest {
            directorate: "parks".into(),
            within_business_minutes: 300,
            page_size: 0,
        })
        .await
        .expect("board")
        .into_inner();
    assert!(other.tickets.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_person_escalates_up_the_matrix_with_a_reason_until_the_top() {
    let clock = ManualClock::new(at_minutes(0));
    let mut app = spawn_app_with(TestDb::fresh().await, |_| {}, Arc::new(clock.clone())).await;
    let mut sla = sla_client(&app);
    configure(&mut sla).await;
    let ticket = create(&mut app, pothole_report()).await;
    assign_line_1(&mut app, &ticket.id).await;
    let escalate = |target: proto::EscalationTarget, reason: &str| proto::EscalateTicketRequest {
        ticket_id: ticket.id.clone(),
        etag: String::new(),
        request_id: String::new(),
        target: target.into(),
        reason: reason.into(),
    };

    let fields = expect_error(
        app.tickets
            .escalate_ticket(escalate(proto::EscalationTarget::Unspecified, ""))
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["reason"]);
    let before = events(&mut app, &ticket.id).await.len();

    let answer = app
        .tickets
        .escalate_ticket(escalate(
            proto::EscalationTarget::Unspecified,
            "المواطن اتصل ثلاث مرات",
        ))
        .await
        .expect("escalate")
        .into_inner();
    let escalated = answer.ticket.expect("ticket");
    assert_eq!(
        escalated.assignment.as_ref().map(|a| a.support_line()),
        Some(proto::SupportLine::Second)
    );
    let event = answer.event.expect("event");
    assert_eq!(event.kind(), proto::TicketEventKind::Escalated);
    assert_eq!(event.note, "المواطن اتصل ثلاث مرات");

    // Down is not an escalation, and changes nothing.
    let fields = expect_error(
        app.tickets
            .escalate_ticket(escalate(proto::EscalationTarget::Line2, "again"))
            .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["target"]);
    assert_eq!(events(&mut app, &ticket.id).await.len(), before + 1);

    app.tickets
        .escalate_ticket(escalate(
            proto::EscalationTarget::DirectorGeneral,
            "a road closed for a week",
        ))
        .await
        .expect("to the director general");
    let top = get(&mut app, &ticket.id).await;
    assert!(top.escalated_to_director_general);
    assert_eq!(top.escalation_level, 2);
    expect_error(
        app.tickets
            .escalate_ticket(escalate(proto::EscalationTarget::Unspecified, "more"))
            .await,
        tonic::Code::FailedPrecondition,
        "NO_HIGHER_ESCALATION",
    );

    // A resolved ticket is not escalated.
    common::resolve(&mut app, &ticket.id).await;
    let status = app
        .tickets
        .escalate_ticket(escalate(proto::EscalationTarget::Line3, "late"))
        .await
        .expect_err("not open");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    app.stop().await;
}

#[tokio::test]
async fn calendar_and_settings_changes_are_checked_audited_and_recompute_deadlines() {
    let clock = ManualClock::new(at_minutes(0));
    let mut app = spawn_app_with(TestDb::fresh().await, |_| {}, Arc::new(clock.clone())).await;
    let mut sla = sla_client(&app);
    configure(&mut sla).await;
    let ticket = create(&mut app, pothole_report()).await;
    sweep(&mut sla).await;
    let calendar = sla
        .get_calendar(proto::GetCalendarRequest {})
        .await
        .expect("calendar")
        .into_inner()
        .calendar
        .expect("calendar");

    // Bad hours, a stale etag, a missing etag: refused, nothing changes.
    let mut bad = simple_calendar();
    bad.week[0].hours = vec!["16:00-08:00".into()];
    let fields = expect_error(
        sla.update_calendar(proto::UpdateCalendarRequest {
            calendar: Some(bad),
            etag: calendar.etag.clone(),
            request_id: String::new(),
        })
        .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["calendar.week[0].hours[0]"]);
    expect_error(
        sla.update_calendar(proto::UpdateCalendarRequest {
            calendar: Some(simple_calendar()),
            etag: "\"1\"".into(),
            request_id: String::new(),
        })
        .await,
        tonic::Code::Aborted,
        "ETAG_MISMATCH",
    );
    let fields = expect_error(
        sla.update_calendar(proto::UpdateCalendarRequest {
            calendar: Some(simple_calendar()),
            etag: String::new(),
            request_id: String::new(),
        })
        .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["etag"]);
    let fields = expect_error(
        sla.add_holiday(proto::AddHolidayRequest {
            holiday: Some(proto::Holiday {
                name: "Backwards".into(),
                from: "2026-12-02".into(),
                to: "2026-12-01".into(),
            }),
            ..Default::default()
        })
        .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["holiday.to"]);
    let mut bad_settings = simple_settings();
    bad_settings.warn_at_percent = 0;
    bad_settings.policies[0].targets.pop();
    let current = sla
        .get_sla_settings(proto::GetSlaSettingsRequest {})
        .await
        .expect("settings")
        .into_inner()
        .settings
        .expect("settings");
    let fields = expect_error(
        sla.update_sla_settings(proto::UpdateSlaSettingsRequest {
            settings: Some(bad_settings),
            etag: current.etag.clone(),
            request_id: String::new(),
        })
        .await,
        tonic::Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(
        fields,
        ["settings.warn_at_percent", "settings.policies[0].targets"]
    );
    let unchanged = sla
        .get_calendar(proto::GetCalendarRequest {})
        .await
        .expect("calendar")
        .into_inner()
        .calendar
        .expect("calendar");
    assert_eq!(unchanged.etag, calendar.etag);

    // Today becomes a holiday: the first response moves to Monday 09:00.
    let with_holiday = sla
        .add_holiday(proto::AddHolidayRequest {
            holiday: Some(proto::Holiday {
                name: "Announced holiday / عطلة معلنة".into(),
                from: "2026-11-29".into(),
                to: "2026-11-29".into(),
            }),
            etag: calendar.etag.clone(),
            request_id: "holiday-1".into(),
        })
        .await
        .expect("add holiday")
        .into_inner()
        .calendar
        .expect("calendar");
    assert_ne!(with_holiday.etag, calendar.etag);
    assert_eq!(with_holiday.holidays.len(), 1);
    let report = sweep(&mut sla).await;
    assert!(report.tickets_recomputed >= 1, "{report:?}");
    let shown = get(&mut app, &ticket.id).await.sla.expect("sla");
    let first = shown
        .deadlines
        .iter()
        .find(|d| d.kind() == proto::DeadlineKind::FirstResponse)
        .expect("first response");
    assert_eq!(
        first.due_time.as_ref().map(|t| t.seconds),
        Some(at_minutes(24 * 60 + 60).as_micros() / 1_000_000)
    );

    // The audit trail: the defaults, the simple calendar, the holiday.
    let trail = sla
        .list_setting_changes(proto::ListSettingChangesRequest {
            setting: proto::SettingKind::Calendar.into(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("trail")
        .into_inner();
    assert_eq!(
        trail.changes.iter().map(|c| c.version).collect::<Vec<_>>(),
        [3, 2]
    );
    assert!(trail.changes[0].value_json.contains("2026-11-29"));
    let rest = sla
        .list_setting_changes(proto::ListSettingChangesRequest {
            setting: proto::SettingKind::Calendar.into(),
            page_size: 2,
            page_token: trail.next_page_token,
        })
        .await
        .expect("trail")
        .into_inner();
    assert_eq!(rest.changes.len(), 1);
    assert_eq!(rest.changes[0].version, 1);
    assert_eq!(rest.changes[0].actor, "balagh (defaults)");
    app.stop().await;
}
