//! Satisfaction surveys end to end over gRPC: the contact centre's call-back list, ratings and
//! unanswered call-backs under the survey policy (nobody asked about another ticket within the
//! quiet period, driven by the server's clock), each refusal with its reason and nothing
//! written, idempotent retries, and a rating from the national platform (the simulator over
//! real HTTP) counting as asked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use balagh::config::PlatformMode;
use balagh::domain::satisfaction::SurveyPolicy;
use balagh::domain::{ManualClock, Timestamp};
use balagh::grpc::proto;
use balagh::grpc::proto::satisfaction_service_client::SatisfactionServiceClient;
use balagh::grpc::proto::sync_service_client::SyncServiceClient;
use common::{
    TestApp, TestDb, create, expect_error, pothole_report, resolve, spawn_app_with,
    wait_for_sync_status,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// Sunday 2026-11-29 08:00 in Muscat (04:00 UTC).
const SUNDAY_8: i64 = 1_795_924_800_000_000;
const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// The quiet period these tests configure (the default is 90 days).
const QUIET_DAYS: u32 = 10;

async fn spawn() -> (TestApp, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_micros(SUNDAY_8));
    let app = spawn_app_with(
        TestDb::fresh().await,
        |c| c.satisfaction = SurveyPolicy::new(QUIET_DAYS, 3).unwrap(),
        Arc::new(clock.clone()),
    )
    .await;
    (app, clock)
}

fn satisfaction(app: &TestApp) -> SatisfactionServiceClient<Channel> {
    SatisfactionServiceClient::new(app.channel.clone())
}

/// A report from a beneficiary reached at `phone`, or by e-mail only when `phone` is empty.
fn report_by(phone: &str) -> proto::CreateTicketRequest {
    let mut request = pothole_report();
    let reporter = request.reporter.as_mut().unwrap();
    reporter.phone = phone.into();
    if phone.is_empty() {
        reporter.email = "citizen@example.om".into();
    }
    request
}

fn anonymous_suggestion() -> proto::CreateTicketRequest {
    let mut request = pothole_report();
    request.r#type = proto::TicketType::Suggestion.into();
    request.reporter = Some(proto::Reporter {
        anonymous: true,
        masked: false,
        erased: false,
        ..Default::default()
    });
    request
}

async fn settled(app: &mut TestApp, request: proto::CreateTicketRequest) -> String {
    let id = create(app, request).await.id;
    resolve(app, &id).await;
    id
}

fn rate(id: &str, score: i32) -> proto::RateTicketRequest {
    proto::RateTicketRequest {
        ticket_id: id.into(),
        score,
        comment: "شكراً".into(),
        ..Default::default()
    }
}

fn attempt(id: &str, outcome: proto::SurveyOutcome) -> proto::RecordCallBackAttemptRequest {
    proto::RecordCallBackAttemptRequest {
        ticket_id: id.into(),
        outcome: outcome.into(),
        request_id: String::new(),
    }
}

async fn candidates(
    app: &TestApp,
    request: proto::ListCallBackCandidatesRequest,
) -> Vec<proto::CallBackCandidate> {
    satisfaction(app)
        .list_call_back_candidates(request)
        .await
        .expect("call-back list")
        .into_inner()
        .candidates
}

/// The ticket ids of the default call-back list.
async fn listed(app: &TestApp) -> Vec<String> {
    candidates(app, Default::default())
        .await
        .into_iter()
        .map(|c| c.ticket.unwrap().id)
        .collect()
}

/// (channel, outcome) of a ticket's survey ledger entries.
async fn ledger(app: &TestApp, id: &str) -> Vec<(proto::SurveyChannel, proto::SurveyOutcome)> {
    satisfaction(app)
        .list_survey_requests(proto::ListSurveyRequestsRequest {
            ticket_id: id.into(),
        })
        .await
        .expect("survey requests")
        .into_inner()
        .survey_requests
        .iter()
        .map(|r| (r.channel(), r.outcome()))
        .collect()
}

async fn ticket(app: &mut TestApp, id: &str) -> proto::Ticket {
    app.tickets
        .get_ticket(proto::GetTicketRequest {
            reveal_personal_data: false,
            lookup: Some(proto::get_ticket_request::Lookup::Id(id.into())),
        })
        .await
        .expect("get")
        .into_inner()
        .ticket
        .expect("ticket")
}

/// The metadata of the ErrorInfo of a failed call, after checking its code and reason.
fn refusal(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    reason: &str,
) -> std::collections::HashMap<String, String> {
    let status = result.expect_err("the call should be refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(common::reason(&status), reason, "{status:?}");
    status
        .get_error_details()
        .error_info()
        .map(|info| info.metadata.clone())
        .unwrap_or_default()
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

use balagh::grpc::proto::SurveyChannel as Ch;
use balagh::grpc::proto::SurveyOutcome as Out;

#[tokio::test]
async fn the_list_leaves_out_a_beneficiary_asked_within_the_quiet_period_until_it_ends() {
    let (mut app, clock) = spawn().await;
    let salim_older = settled(&mut app, report_by("+968 9120 0001")).await;
    clock.advance_micros(HOUR);
    // Salim again, his number written another way: the same beneficiary.
    let salim_newer = settled(&mut app, report_by("91200001")).await;
    clock.advance_micros(HOUR);
    let aisha = settled(&mut app, report_by("91200002")).await;
    let anonymous = settled(&mut app, anonymous_suggestion()).await;
    let by_mail = settled(&mut app, report_by("")).await;
    let open = create(&mut app, report_by("91200003")).await.id;
    clock.advance_micros(HOUR);

    // One entry per beneficiary, the most recently settled first; no anonymous ticket, none
    // without a phone, none still open.
    let list = candidates(&app, Default::default()).await;
    let ids: Vec<_> = list.iter().map(|c| c.ticket.clone().unwrap().id).collect();
    assert_eq!(ids, [aisha.clone(), salim_newer.clone()]);
    for left_out in [&salim_older, &anonymous, &by_mail, &open] {
        assert!(!ids.contains(left_out));
    }
    let first = &list[0];
    assert_eq!(first.previous_attempt_count, 0);
    assert_eq!(first.last_attempt_time, None);
    assert_eq!(
        first
            .ticket
            .as_ref()
            .unwrap()
            .reporter
            .as_ref()
            .unwrap()
            .phone,
        "+96891200002",
        "the agent gets the number to call"
    );
    assert_eq!(
        first.settle_time.as_ref().map(|t| t.seconds),
        Some((SUNDAY_8 + 2 * HOUR) / 1_000_000)
    );

    // Salim rates his newer ticket on the call-back: out of the list.
    let rated_at = SUNDAY_8 + 3 * HOUR;
    app.tickets
        .rate_ticket(rate(&salim_newer, 5))
        .await
        .expect("rate");
    assert_eq!(listed(&app).await, std::slice::from_ref(&aisha));
    assert_eq!(
        ledger(&app, &salim_newer).await,
        [(Ch::CallBack, Out::Rated)]
    );

    // Asking him about the older ticket is refused until the quiet period is over, and the
    // refusal writes nothing.
    let before = ticket(&mut app, &salim_older).await;
    let metadata = refusal(
        app.tickets.rate_ticket(rate(&salim_older, 4)).await,
        "BENEFICIARY_ASKED_RECENTLY",
    );
    let ask_again = rated_at + i64::from(QUIET_DAYS) * DAY;
    assert_eq!(metadata["ask_again_time"], rfc3339(ask_again));
    assert_eq!(metadata["last_ask_channel"], "call_back");
    let after = ticket(&mut app, &salim_older).await;
    assert_eq!((after.etag, after.satisfaction), (before.etag, None));
    assert!(ledger(&app, &salim_older).await.is_empty());

    // A second before the end of the quiet period: still refused, still not proposed.
    clock.set(Timestamp::from_micros(ask_again - 1_000_000));
    refusal(
        app.tickets.rate_ticket(rate(&salim_older, 4)).await,
        "BENEFICIARY_ASKED_RECENTLY",
    );
    assert_eq!(listed(&app).await, std::slice::from_ref(&aisha));
    // Then he may be asked again.
    clock.set(Timestamp::from_micros(ask_again));
    assert_eq!(listed(&app).await, [aisha, salim_older.clone()]);
    app.tickets
        .rate_ticket(rate(&salim_older, 4))
        .await
        .expect("rate after the quiet period");
    assert_eq!(
        ledger(&app, &salim_older).await,
        [(Ch::CallBack, Out::Rated)]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unanswered_call_back_is_tried_again_and_every_refusal_names_its_reason() {
    let (mut app, clock) = spawn().await;
    let first = settled(&mut app, report_by("91300001")).await;
    let second = settled(&mut app, report_by("91300001")).await;
    let anonymous = settled(&mut app, anonymous_suggestion()).await;
    let by_mail = settled(&mut app, report_by("")).await;
    let open = create(&mut app, report_by("91300002")).await.id;
    let mut sat = satisfaction(&app);

    // Nobody answers; trying the same ticket again is allowed.
    let recorded = sat
        .record_call_back_attempt(attempt(&first, Out::NoAnswer))
        .await
        .expect("no answer")
        .into_inner()
        .survey_request
        .unwrap();
    assert_eq!(recorded.ticket_id, first);
    assert_eq!(
        (recorded.channel(), recorded.outcome()),
        (Ch::CallBack, Out::NoAnswer)
    );
    assert_eq!(recorded.actor, "anonymous");
    clock.advance_micros(HOUR);
    sat.record_call_back_attempt(attempt(&first, Out::NoAnswer))
        .await
        .expect("no answer again, same ticket");

    // The refusals, each with its reason, none writing anything.
    let metadata = refusal(
        sat.record_call_back_attempt(attempt(&second, Out::Declined))
            .await,
        "BENEFICIARY_ASKED_RECENTLY",
    );
    assert_eq!(
        metadata["ask_again_time"],
        rfc3339(SUNDAY_8 + HOUR + i64::from(QUIET_DAYS) * DAY)
    );
    refusal(
        app.tickets.rate_ticket(rate(&second, 3)).await,
        "BENEFICIARY_ASKED_RECENTLY",
    );
    refusal(
        sat.record_call_back_attempt(attempt(&anonymous, Out::NoAnswer))
            .await,
        "BENEFICIARY_ANONYMOUS",
    );
    refusal(
        sat.record_call_back_attempt(attempt(&by_mail, Out::NoAnswer))
            .await,
        "BENEFICIARY_HAS_NO_PHONE",
    );
    refusal(
        sat.record_call_back_attempt(attempt(&open, Out::Declined))
            .await,
        "TICKET_NEW",
    );
    for (request, field) in [
        (attempt(&first, Out::Rated), "outcome"),
        (attempt(&first, Out::Unspecified), "outcome"),
        (
            proto::RecordCallBackAttemptRequest {
                outcome: 99,
                ..attempt(&first, Out::NoAnswer)
            },
            "outcome",
        ),
        (attempt("not-a-ticket", Out::NoAnswer), "ticket_id"),
    ] {
        let fields = expect_error(
            sat.record_call_back_attempt(request).await,
            Code::InvalidArgument,
            "INVALID_FIELDS",
        );
        assert_eq!(fields, [field]);
    }
    expect_error(
        sat.record_call_back_attempt(attempt(&uuid::Uuid::now_v7().to_string(), Out::NoAnswer))
            .await,
        Code::NotFound,
        "TICKET_NOT_FOUND",
    );
    assert_eq!(
        ledger(&app, &first).await,
        [(Ch::CallBack, Out::NoAnswer), (Ch::CallBack, Out::NoAnswer)]
    );
    for id in [&second, &anonymous, &by_mail, &open] {
        assert!(ledger(&app, id).await.is_empty());
    }
    assert_eq!(
        ticket(&mut app, &second).await.satisfaction,
        None,
        "the refused rating was not recorded"
    );

    // Called today without an answer: not proposed again today, but tomorrow (and the
    // beneficiary's other ticket never, while the first is pending).
    assert!(listed(&app).await.is_empty());
    clock.advance_micros(DAY);
    let tomorrow = candidates(&app, Default::default()).await;
    assert_eq!(tomorrow.len(), 1);
    assert_eq!(tomorrow[0].ticket.as_ref().unwrap().id, first);
    assert_eq!(tomorrow[0].previous_attempt_count, 2);
    assert_eq!(
        tomorrow[0].last_attempt_time.as_ref().map(|t| t.seconds),
        Some((SUNDAY_8 + HOUR) / 1_000_000)
    );
    // A third try without an answer is the last the list proposes (max_call_attempts = 3).
    sat.record_call_back_attempt(attempt(&first, Out::NoAnswer))
        .await
        .expect("third try");
    clock.advance_micros(DAY);
    assert!(listed(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_list_is_filtered_by_directorate_and_window_and_its_limits_are_checked() {
    let (mut app, clock) = spawn().await;
    let old = settled(&mut app, report_by("91400001")).await;
    clock.advance_micros(40 * DAY);
    let roads = settled(&mut app, report_by("91400002")).await;
    let mut waste = report_by("91400003");
    waste.category = "waste_collection".into();
    let health = settled(&mut app, waste).await;
    clock.advance_micros(HOUR);

    assert_eq!(listed(&app).await, [health.clone(), roads.clone()]);
    let of = |directorate: &str, days: i32, max: i32| proto::ListCallBackCandidatesRequest {
        directorate: directorate.into(),
        settled_within_days: days,
        max_candidates: max,
    };
    let ids = |list: Vec<proto::CallBackCandidate>| -> Vec<String> {
        list.into_iter().map(|c| c.ticket.unwrap().id).collect()
    };
    assert_eq!(
        ids(candidates(&app, of("roads", 0, 0)).await),
        std::slice::from_ref(&roads)
    );
    assert_eq!(
        ids(candidates(&app, of("", 60, 0)).await),
        [health.clone(), roads, old]
    );
    assert_eq!(ids(candidates(&app, of("", 0, 1)).await), [health]);
    for (request, field) in [
        (of("", 0, -1), "max_candidates"),
        (of("", 0, 501), "max_candidates"),
        (of("", -5, 0), "settled_within_days"),
        (of("", 366, 0), "settled_within_days"),
        (of("Roads!", 0, 0), "directorate"),
    ] {
        let fields = expect_error(
            satisfaction(&app).list_call_back_candidates(request).await,
            Code::InvalidArgument,
            "INVALID_FIELDS",
        );
        assert_eq!(fields, [field]);
    }
    app.stop().await;
}

#[tokio::test]
async fn retries_with_a_request_id_get_the_first_answer_and_write_once() {
    let (mut app, clock) = spawn().await;
    let first = settled(&mut app, report_by("91500001")).await;
    let second = settled(&mut app, report_by("91500002")).await;
    let mut sat = satisfaction(&app);

    let with_id = |id: &str, outcome: Out, request_id: &str| proto::RecordCallBackAttemptRequest {
        request_id: request_id.into(),
        ..attempt(id, outcome)
    };
    let answer = sat
        .record_call_back_attempt(with_id(&first, Out::NoAnswer, "call-1"))
        .await
        .expect("attempt")
        .into_inner();
    clock.advance_micros(HOUR);
    let replay = sat
        .record_call_back_attempt(with_id(&first, Out::NoAnswer, "call-1"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(replay, answer);
    expect_error(
        sat.record_call_back_attempt(with_id(&first, Out::Declined, "call-1"))
            .await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );
    assert_eq!(ledger(&app, &first).await, [(Ch::CallBack, Out::NoAnswer)]);

    let rating = proto::RateTicketRequest {
        request_id: "rate-1".into(),
        ..rate(&second, 4)
    };
    let rated = app.tickets.rate_ticket(rating.clone()).await.expect("rate");
    let again = app.tickets.rate_ticket(rating).await.expect("retry");
    assert_eq!(again.into_inner(), rated.into_inner());
    assert_eq!(ledger(&app, &second).await, [(Ch::CallBack, Out::Rated)]);
    app.stop().await;
}

/// The app with the platform simulator beside it; the simulator's address.
async fn spawn_with_simulator() -> (TestApp, std::net::SocketAddr) {
    let simulator = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(
        TestDb::fresh().await,
        |c| {
            c.platform = PlatformMode::Simulator {
                listen: simulator,
                citizen_rate: 0.0,
            }
        },
        Arc::new(balagh::domain::SystemClock),
    )
    .await;
    (app, simulator)
}

/// Makes a simulated citizen act (`POST /admin/citizens/act`), retrying (bounded) while the
/// simulator starts; the case id acted on.
async fn citizen(simulator: std::net::SocketAddr, body: serde_json::Value) -> String {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = http
            .post(format!("http://{simulator}/admin/citizens/act"))
            .json(&body)
            .send()
            .await
        {
            let done: serde_json::Value =
                response.error_for_status().unwrap().json().await.unwrap();
            return done[0]["case_id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the simulator did not listen within 5 s");
}

#[tokio::test]
async fn a_rating_given_on_the_national_platform_counts_as_asked() {
    let (mut app, simulator) = spawn_with_simulator().await;
    let mut sync = SyncServiceClient::new(app.channel.clone());
    // A citizen files a complaint on the platform (complaints are never anonymous).
    let mut case_id = String::new();
    let mut platform_ticket = None;
    for _ in 0..20 {
        case_id = citizen(simulator, serde_json::json!({"action": "file"})).await;
        sync.trigger_pull(proto::TriggerPullRequest {})
            .await
            .expect("pull");
        let listed = app
            .tickets
            .list_tickets(proto::ListTicketsRequest {
                channels: vec![proto::Channel::NationalPlatform.into()],
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tickets;
        let newest = listed.into_iter().next().expect("the case became a ticket");
        if !newest.reporter.as_ref().unwrap().anonymous {
            platform_ticket = Some(newest);
            break;
        }
    }
    let platform_ticket = platform_ticket.expect("a citizen who gave a phone");
    let phone = platform_ticket.reporter.as_ref().unwrap().phone.clone();
    assert!(!phone.is_empty());
    resolve(&mut app, &platform_ticket.id).await;
    // The citizen rates once the resolution reached the platform.
    tokio::time::timeout(
        Duration::from_secs(20),
        wait_for_sync_status(&app, |s| s.pending == 0 && s.leased == 0 && s.delivered > 0),
    )
    .await
    .expect("the resolution is pushed within 20 s");
    citizen(
        simulator,
        serde_json::json!({"action": "rate", "case_id": case_id}),
    )
    .await;
    sync.trigger_pull(proto::TriggerPullRequest {})
        .await
        .expect("pull");
    assert!(
        ticket(&mut app, &platform_ticket.id)
            .await
            .satisfaction
            .is_some()
    );
    assert_eq!(
        ledger(&app, &platform_ticket.id).await,
        [(Ch::NationalPlatform, Out::Rated)]
    );

    // The same citizen's ticket at the contact centre: not proposed, and not to be asked.
    let local = settled(&mut app, report_by(&phone)).await;
    assert!(
        !listed(&app).await.contains(&local),
        "asked on the platform just now"
    );
    let metadata = refusal(
        app.tickets.rate_ticket(rate(&local, 5)).await,
        "BENEFICIARY_ASKED_RECENTLY",
    );
    assert_eq!(metadata["last_ask_channel"], "national_platform");
    assert!(ledger(&app, &local).await.is_empty());
    app.stop().await;
}
