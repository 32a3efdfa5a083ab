//! Staff quality reviews end to end over gRPC: the rubric managed over the API, the sample of
//! an employee's settled tickets proposed for review (only theirs, only unreviewed, the same
//! for the same seed), recording reviews, and every refusal, none of which writes anything;
//! the reviews' scores in the KPIs.

mod common;

use std::sync::Arc;

use balagh::domain::{ManualClock, Timestamp};
use balagh::grpc::proto;
use balagh::grpc::proto::quality_service_client::QualityServiceClient;
use balagh::grpc::proto::reporting_service_client::ReportingServiceClient;
use balagh::grpc::proto::sla_service_client::SlaServiceClient;
use common::{TestApp, TestDb, create, expect_error, pothole_report, resolve, spawn_app_with};
use tonic::Code;
use tonic::transport::Channel;

/// Sunday 2026-11-29 08:00 in Muscat (04:00 UTC).
const SUNDAY_8: i64 = 1_795_924_800_000_000;
const HOUR: i64 = 3_600_000_000;

fn ts(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: 0,
    }
}

async fn spawn() -> (TestApp, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_micros(SUNDAY_8));
    let app = spawn_app_with(TestDb::fresh().await, |_| {}, Arc::new(clock.clone())).await;
    (app, clock)
}

fn quality(app: &TestApp) -> QualityServiceClient<Channel> {
    QualityServiceClient::new(app.channel.clone())
}

async fn assign(app: &mut TestApp, id: &str, employee: &str) {
    app.tickets
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: id.into(),
            directorate: "roads".into(),
            assignee: employee.into(),
            support_line: proto::SupportLine::Third.into(),
            ..Default::default()
        })
        .await
        .expect("assign");
}

/// Four tickets: 0 handled by emp-a then emp-b, resolved; 1 by emp-a, resolved; 2 by emp-a,
/// still open; 3 by emp-b, resolved. Resolved an hour after SUNDAY_8.
async fn four_tickets(app: &mut TestApp, clock: &ManualClock) -> Vec<String> {
    let mut ids = Vec::new();
    for handlers in [
        vec!["emp-a", "emp-b"],
        vec!["emp-a"],
        vec!["emp-a"],
        vec!["emp-b"],
    ] {
        let id = create(app, pothole_report()).await.id;
        for employee in handlers {
            assign(app, &id, employee).await;
        }
        ids.push(id);
    }
    clock.advance_micros(HOUR);
    for i in [0, 1, 3] {
        resolve(app, &ids[i]).await;
    }
    ids
}

fn scores(values: &[(&str, i32)]) -> Vec<proto::CriterionScore> {
    values
        .iter()
        .map(|(criterion, score)| proto::CriterionScore {
            criterion: (*criterion).into(),
            score: *score,
            weight: 0,
        })
        .collect()
}

fn review(ticket: &str, employee: &str, values: [i32; 4]) -> proto::RecordQualityReviewRequest {
    proto::RecordQualityReviewRequest {
        ticket_id: ticket.into(),
        employee_id: employee.into(),
        scores: scores(&[
            ("accuracy", values[0]),
            ("completeness", values[1]),
            ("courtesy", values[2]),
            ("timeliness", values[3]),
        ]),
        note: "ردّ لبق وحلّ كامل".into(),
        request_id: String::new(),
    }
}

fn sample_request(employee: &str, count: i32, seed: u64) -> proto::SampleTicketsForReviewRequest {
    proto::SampleTicketsForReviewRequest {
        employee_id: employee.into(),
        from: Some(ts(SUNDAY_8)),
        to: Some(ts(SUNDAY_8 + 24 * HOUR)),
        count,
        seed,
    }
}

async fn sample(app: &TestApp, employee: &str, count: i32, seed: u64) -> Vec<String> {
    quality(app)
        .sample_tickets_for_review(sample_request(employee, count, seed))
        .await
        .expect("sample")
        .into_inner()
        .tickets
        .into_iter()
        .map(|t| t.ticket_id)
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn all_reviews(app: &TestApp) -> Vec<proto::QualityReview> {
    quality(app)
        .list_quality_reviews(proto::ListQualityReviewsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .reviews
}

#[tokio::test]
async fn the_sample_holds_only_the_employees_settled_unreviewed_tickets_the_same_per_seed() {
    let (mut app, clock) = spawn().await;
    let ids = four_tickets(&mut app, &clock).await;
    let pick = |i: &[usize]| sorted(i.iter().map(|i| ids[*i].clone()).collect());

    assert_eq!(sorted(sample(&app, "emp-a", 0, 7).await), pick(&[0, 1]));
    assert_eq!(sorted(sample(&app, "emp-b", 10, 7).await), pick(&[0, 3]));
    assert!(sample(&app, "emp-nobody", 10, 7).await.is_empty());
    let one = sample(&app, "emp-a", 1, 99).await;
    assert_eq!(one.len(), 1);
    for _ in 0..3 {
        assert_eq!(
            sample(&app, "emp-a", 1, 99).await,
            one,
            "same seed, same sample"
        );
    }
    let settled = quality(&app)
        .sample_tickets_for_review(sample_request("emp-b", 10, 7))
        .await
        .unwrap()
        .into_inner()
        .tickets;
    assert_eq!(settled.len(), 2);
    for t in &settled {
        assert_eq!(t.settle_time, Some(ts(SUNDAY_8 + HOUR)));
        assert_eq!(t.directorate, "roads");
        assert_eq!(t.category, "pothole");
        assert!(!t.reference.is_empty());
    }

    // Reviewed for emp-a: out of emp-a's sample, still in emp-b's.
    quality(&app)
        .record_quality_review(review(&ids[0], "emp-a", [5, 5, 5, 5]))
        .await
        .unwrap();
    assert_eq!(sample(&app, "emp-a", 10, 7).await, pick(&[1]));
    assert_eq!(sorted(sample(&app, "emp-b", 10, 7).await), pick(&[0, 3]));
    // The period counts from the resolution.
    let mut later = sample_request("emp-a", 10, 7);
    later.from = Some(ts(SUNDAY_8 + 2 * HOUR));
    assert!(
        quality(&app)
            .sample_tickets_for_review(later)
            .await
            .unwrap()
            .into_inner()
            .tickets
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_review_is_scored_on_the_rubric_and_listed() {
    let (mut app, clock) = spawn().await;
    let ids = four_tickets(&mut app, &clock).await;
    let mut request = tonic::Request::new(review(&ids[0], "emp-b", [4, 3, 5, 2]));
    request
        .metadata_mut()
        .insert("x-balagh-actor", "supervisor.salim".parse().unwrap());
    let recorded = quality(&app)
        .record_quality_review(request)
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!(recorded.reviewer, "supervisor.salim");
    assert_eq!(recorded.weighted_score, 62.5);
    assert_eq!(recorded.rubric_version, 1);
    assert_eq!(recorded.note, "ردّ لبق وحلّ كامل");
    assert_eq!(recorded.review_time, Some(ts(SUNDAY_8 + HOUR)));
    assert!(recorded.scores.iter().all(|s| s.weight == 1));

    clock.advance_micros(HOUR);
    quality(&app)
        .record_quality_review(review(&ids[3], "emp-b", [5, 5, 5, 5]))
        .await
        .unwrap();
    quality(&app)
        .record_quality_review(review(&ids[1], "emp-a", [1, 1, 1, 1]))
        .await
        .unwrap();
    assert_eq!(all_reviews(&app).await.len(), 3);
    let page = |token: String| proto::ListQualityReviewsRequest {
        employee_id: "emp-b".into(),
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let first = quality(&app)
        .list_quality_reviews(page(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.reviews, vec![recorded]);
    let second = quality(&app)
        .list_quality_reviews(page(first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.reviews[0].weighted_score, 100.0);
    let third = quality(&app)
        .list_quality_reviews(page(second.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert!(third.reviews.is_empty());
    let since = quality(&app)
        .list_quality_reviews(proto::ListQualityReviewsRequest {
            from: Some(ts(SUNDAY_8 + 2 * HOUR)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(since.reviews.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn every_refusal_names_its_cause_and_writes_nothing() {
    let (mut app, clock) = spawn().await;
    let ids = four_tickets(&mut app, &clock).await;
    let mut client = quality(&app);

    let unknown = client
        .record_quality_review(review(
            "0190f5c2-7a3b-7c4d-8e5f-60718293a4b5",
            "emp-a",
            [3, 3, 3, 3],
        ))
        .await;
    expect_error(unknown, Code::NotFound, "TICKET_NOT_FOUND");

    let stranger = client
        .record_quality_review(review(&ids[1], "emp-b", [3, 3, 3, 3]))
        .await;
    assert_eq!(
        expect_error(stranger, Code::InvalidArgument, "UNKNOWN_REFERENCE"),
        ["employee_id"]
    );

    let mut bad = review(&ids[1], "emp-a", [3, 3, 6, 3]);
    bad.scores.remove(3);
    bad.scores.push(proto::CriterionScore {
        criterion: "speed".into(),
        score: 0,
        weight: 0,
    });
    assert_eq!(
        expect_error(
            client.record_quality_review(bad).await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        [
            "scores[2].score",
            "scores[3].criterion",
            "scores[3].score",
            "scores"
        ]
    );
    let mut twice = review(&ids[1], "emp-a", [3, 3, 3, 3]);
    twice.scores[3].criterion = "accuracy".into();
    twice.ticket_id = "not-a-ticket".into();
    assert_eq!(
        expect_error(
            client.record_quality_review(twice).await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["ticket_id", "scores[3].criterion", "scores"]
    );
    assert!(all_reviews(&app).await.is_empty(), "nothing half-written");

    let mut first = review(&ids[1], "emp-a", [3, 4, 3, 4]);
    first.request_id = "review-1".into();
    let recorded = client
        .record_quality_review(first.clone())
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    // A retry gets the first answer; a second review is refused.
    assert_eq!(
        client
            .record_quality_review(first)
            .await
            .unwrap()
            .into_inner()
            .review
            .unwrap(),
        recorded
    );
    expect_error(
        client
            .record_quality_review(review(&ids[1], "emp-a", [5, 5, 5, 5]))
            .await,
        Code::AlreadyExists,
        "QUALITY_REVIEW_EXISTS",
    );
    assert_eq!(all_reviews(&app).await, vec![recorded]);

    let mut wrong_sample = sample_request("", 51, 1);
    wrong_sample.to = Some(ts(SUNDAY_8 - HOUR));
    assert_eq!(
        expect_error(
            client.sample_tickets_for_review(wrong_sample).await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["employee_id", "to", "count"]
    );
    let mut no_period = sample_request("emp-a", -1, 1);
    no_period.from = None;
    no_period.to = Some(ts(SUNDAY_8 + 500 * 24 * HOUR));
    assert_eq!(
        expect_error(
            client.sample_tickets_for_review(no_period).await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["from", "count"]
    );
    let mut too_long = sample_request("emp-a", 5, 1);
    too_long.to = Some(ts(SUNDAY_8 + 401 * 24 * HOUR));
    assert_eq!(
        expect_error(
            client.sample_tickets_for_review(too_long).await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["to"]
    );
    let bad_list = client
        .list_quality_reviews(proto::ListQualityReviewsRequest {
            employee_id: "emp a".into(),
            from: Some(ts(SUNDAY_8)),
            to: Some(ts(SUNDAY_8)),
            page_size: -1,
            page_token: "junk".into(),
        })
        .await;
    assert_eq!(
        expect_error(bad_list, Code::InvalidArgument, "INVALID_FIELDS"),
        ["employee_id", "to", "page_size", "page_token"]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_rubric_is_configurable_with_an_etag_and_audited() {
    let (mut app, clock) = spawn().await;
    let ids = four_tickets(&mut app, &clock).await;
    let mut client = quality(&app);
    let rubric = client
        .get_rubric(proto::GetRubricRequest {})
        .await
        .unwrap()
        .into_inner()
        .rubric
        .unwrap();
    let codes: Vec<&str> = rubric.criteria.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(
        codes,
        ["accuracy", "completeness", "courtesy", "timeliness"]
    );
    assert!(
        rubric
            .criteria
            .iter()
            .all(|c| c.weight == 1 && !c.name_ar.is_empty())
    );

    let criterion = |code: &str, weight: u32| proto::RubricCriterion {
        code: code.into(),
        name_ar: "معيار".into(),
        name_en: code.into(),
        weight,
    };
    let update = |criteria: Vec<proto::RubricCriterion>, etag: &str| proto::UpdateRubricRequest {
        rubric: Some(proto::Rubric {
            criteria,
            ..Default::default()
        }),
        etag: etag.into(),
        request_id: String::new(),
    };
    assert_eq!(
        expect_error(
            client
                .update_rubric(update(vec![criterion("accuracy", 3)], ""))
                .await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["etag"]
    );
    assert_eq!(
        expect_error(
            client
                .update_rubric(update(
                    vec![criterion("accuracy", 3), criterion("accuracy", 0)],
                    &rubric.etag
                ))
                .await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["rubric.criteria[1].code", "rubric.criteria[1].weight"]
    );
    let updated = client
        .update_rubric(update(
            vec![criterion("accuracy", 3), criterion("courtesy", 1)],
            &rubric.etag,
        ))
        .await
        .unwrap()
        .into_inner()
        .rubric
        .unwrap();
    assert_ne!(updated.etag, rubric.etag);
    expect_error(
        client
            .update_rubric(update(vec![criterion("accuracy", 1)], &rubric.etag))
            .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );

    // Reviews now score the new rubric, with its weights.
    assert_eq!(
        expect_error(
            client
                .record_quality_review(review(&ids[1], "emp-a", [5, 5, 1, 5]))
                .await,
            Code::InvalidArgument,
            "INVALID_FIELDS"
        ),
        ["scores[1].criterion", "scores[3].criterion"]
    );
    let recorded = client
        .record_quality_review(proto::RecordQualityReviewRequest {
            ticket_id: ids[1].clone(),
            employee_id: "emp-a".into(),
            scores: scores(&[("courtesy", 1), ("accuracy", 5)]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!(recorded.weighted_score, 75.0);
    assert_eq!(recorded.rubric_version, 2);

    let changes = SlaServiceClient::new(app.channel.clone())
        .list_setting_changes(proto::ListSettingChangesRequest {
            setting: proto::SettingKind::QualityRubric.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(
        changes.iter().map(|c| c.version).collect::<Vec<_>>(),
        [2, 1]
    );
    app.stop().await;
}

#[tokio::test]
async fn quality_scores_count_in_the_kpis_per_reviewed_employee_and_per_group() {
    let (mut app, clock) = spawn().await;
    let ids = four_tickets(&mut app, &clock).await;
    // emp-b: 62.5 (ticket 0) and 100 (ticket 3); emp-a: 0 (ticket 1) and 100 (ticket 0,
    // which emp-a handled before emp-b holds it now).
    for (ticket, employee, values) in [
        (0, "emp-b", [4, 3, 5, 2]),
        (3, "emp-b", [5, 5, 5, 5]),
        (1, "emp-a", [1, 1, 1, 1]),
        (0, "emp-a", [5, 5, 5, 5]),
    ] {
        quality(&app)
            .record_quality_review(review(&ids[ticket], employee, values))
            .await
            .expect("review");
    }
    let mut reporting = ReportingServiceClient::new(app.channel.clone());
    let figures = |group_by: proto::KpiGrouping| {
        let request = proto::GetKpisRequest {
            query: Some(proto::KpiQuery {
                from: Some(ts(SUNDAY_8 - HOUR)),
                to: Some(ts(SUNDAY_8 + 24 * HOUR)),
                group_by: group_by.into(),
                ..Default::default()
            }),
        };
        let mut reporting = reporting.clone();
        async move {
            let rows = reporting.get_kpis(request).await.unwrap().into_inner().rows;
            rows.into_iter()
                .map(|row| {
                    let f = row.figures.unwrap();
                    (
                        row.group,
                        f.ticket_count,
                        f.quality_review_count,
                        f.quality_score_average,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        figures(proto::KpiGrouping::Employee).await,
        [
            ("emp-a".to_owned(), 2, 2, Some(50.0)),
            ("emp-b".to_owned(), 2, 2, Some(81.25)),
        ],
        "by the reviewed employee, whoever holds the ticket now"
    );
    assert_eq!(
        figures(proto::KpiGrouping::Directorate).await,
        [("roads".to_owned(), 4, 4, Some(65.625))]
    );
    let csv = reporting
        .export_kpis_csv(proto::ExportKpisCsvRequest {
            query: Some(proto::KpiQuery {
                from: Some(ts(SUNDAY_8 - HOUR)),
                to: Some(ts(SUNDAY_8 + 24 * HOUR)),
                group_by: proto::KpiGrouping::None.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .csv;
    // 65.625 to two decimals, rounded half to even.
    assert!(csv.lines().nth(1).unwrap().ends_with(",4,65.62"), "{csv}");
    app.stop().await;
}
