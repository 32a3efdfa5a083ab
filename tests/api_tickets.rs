//! End-to-end tests of TicketService over a real gRPC connection to the real server on port 0,
//! with a fresh SQLite file each: every RPC, its success and each of its failure codes.

mod common;

use std::collections::HashSet;

use balagh::grpc::proto;
use common::*;
use prost_types::FieldMask;
use tonic::Code;

fn get_by_id(id: &str) -> proto::GetTicketRequest {
    proto::GetTicketRequest {
        reveal_personal_data: false,
        lookup: Some(proto::get_ticket_request::Lookup::Id(id.to_owned())),
    }
}

async fn get(app: &mut TestApp, id: &str) -> proto::Ticket {
    app.tickets
        .get_ticket(get_by_id(id))
        .await
        .expect("get")
        .into_inner()
        .ticket
        .expect("ticket")
}

async fn list(app: &mut TestApp, request: proto::ListTicketsRequest) -> proto::ListTicketsResponse {
    app.tickets
        .list_tickets(request)
        .await
        .expect("list")
        .into_inner()
}

#[tokio::test]
async fn create_then_get_by_id_and_by_reference_keeps_arabic_text_exactly() {
    let mut app = spawn_app().await;
    let request = pothole_report();
    let created = create(&mut app, request.clone()).await;

    let year = chrono_year_now();
    assert_eq!(created.reference, format!("MCT-{year}-000001"));
    assert_eq!(created.subject, request.subject);
    assert_eq!(created.description, request.description);
    assert_eq!(created.status(), proto::TicketStatus::New);
    // The category's defaults route and prioritise the ticket.
    assert_eq!(created.priority(), proto::Priority::High);
    let assignment = created.assignment.clone().expect("assignment");
    assert_eq!(assignment.directorate, "roads");
    assert_eq!(assignment.support_line(), proto::SupportLine::First);
    assert_eq!(created.reporter.as_ref().unwrap().phone, "+96890000001");
    assert_eq!(created.etag, "\"1\"");

    let mut by_id = get(&mut app, &created.id).await;
    // GetTicket adds the SLA clocks, which no other call carries.
    let sla = by_id.sla.take().expect("GetTicket shows the ticket's SLA");
    assert_eq!(sla.policy_code, "field_fault");
    assert!(!sla.deadlines.is_empty());
    assert_eq!(by_id, created);
    let by_reference = app
        .tickets
        .get_ticket(proto::GetTicketRequest {
            reveal_personal_data: false,
            lookup: Some(proto::get_ticket_request::Lookup::Reference(
                created.reference.to_lowercase(),
            )),
        })
        .await
        .expect("get by reference")
        .into_inner()
        .ticket
        .map(|t| proto::Ticket { sla: None, ..t })
        .unwrap();
    assert_eq!(by_reference, created);

    let second = create(&mut app, pothole_report()).await;
    assert_eq!(second.reference, format!("MCT-{year}-000002"));
    app.stop().await;
}

fn chrono_year_now() -> i32 {
    use balagh::domain::{Clock, SystemClock};
    SystemClock.now().muscat_year()
}

#[tokio::test]
async fn create_reports_every_invalid_field_and_writes_nothing() {
    let mut app = spawn_app().await;
    let mut request = pothole_report();
    request.r#type = 0;
    request.channel = 99;
    request.subject = "x".repeat(201);
    request.description = "bad\u{0}text".into();
    request.reporter.as_mut().unwrap().phone = "12345".into();
    request.reporter.as_mut().unwrap().email = "not-an-email".into();
    request.location.as_mut().unwrap().point = Some(proto::LatLng {
        latitude: 123.0,
        longitude: f64::NAN,
    });
    request.attachments[0].sha256 = "XYZ".into();
    request.request_id = "has space".into();
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    for field in [
        "type",
        "channel",
        "subject",
        "description",
        "reporter.phone",
        "reporter.email",
        "location.point.latitude",
        "location.point.longitude",
        "attachments[0].sha256",
        "request_id",
    ] {
        assert!(
            fields.contains(&field.to_owned()),
            "{field} missing from {fields:?}"
        );
    }
    assert!(list(&mut app, Default::default()).await.tickets.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn create_refuses_unknown_catalog_references_and_misplaced_anonymity() {
    let mut app = spawn_app().await;
    let mut request = pothole_report();
    request.category = "no_such_category".into();
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["category"]);

    let mut request = pothole_report();
    request.location.as_mut().unwrap().wilayat = "dubai".into();
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["location.wilayat"]);

    // Anonymous complaints are refused; anonymous suggestions are welcome.
    let mut request = pothole_report();
    request.r#type = proto::TicketType::Complaint.into();
    request.reporter = Some(proto::Reporter {
        anonymous: true,
        masked: false,
        erased: false,
        ..Default::default()
    });
    let fields = expect_error(
        app.tickets.create_ticket(request.clone()).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["reporter.anonymous"]);
    request.r#type = proto::TicketType::Suggestion.into();
    request.category = "service_improvement".into();
    let suggestion = create(&mut app, request).await;
    assert!(suggestion.reporter.unwrap().anonymous);

    // A report needs a wilayat; an identified reporter needs a way to be reached.
    let mut request = pothole_report();
    request.location = None;
    request.reporter.as_mut().unwrap().phone.clear();
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert!(
        fields.contains(&"location.wilayat".to_owned()),
        "{fields:?}"
    );
    assert!(fields.contains(&"reporter.phone".to_owned()), "{fields:?}");

    // Only the suggestion was written, and it took the first reference number.
    let all = list(&mut app, Default::default()).await.tickets;
    assert_eq!(all.len(), 1);
    assert!(all[0].reference.ends_with("-000001"));
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_replays_the_first_answer_and_refuses_another_payload() {
    let mut app = spawn_app().await;
    let mut request = pothole_report();
    request.request_id = "5b0e4f4e-7d7a-4c51-9b0e-3f1b2d9c8a11".into();
    let first = create(&mut app, request.clone()).await;
    let again = create(&mut app, request.clone()).await;
    assert_eq!(first, again);

    request.subject = "another subject".into();
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );
    assert_eq!(fields, ["request_id"]);

    // The same id on another operation is a reuse too.
    let reuse = app
        .tickets
        .add_comment(proto::AddCommentRequest {
            ticket_id: first.id.clone(),
            request_id: "5b0e4f4e-7d7a-4c51-9b0e-3f1b2d9c8a11".into(),
            text: "note".into(),
            ..Default::default()
        })
        .await;
    expect_error(reuse, Code::InvalidArgument, "REQUEST_ID_REUSED");

    // A lifecycle move retried with its id acts once.
    let resolve = proto::ResolveTicketRequest {
        ticket_id: first.id.clone(),
        request_id: "resolve-1".into(),
        resolution: Some(proto::Resolution {
            code: proto::ResolutionCode::Fixed.into(),
            text: "تم الإصلاح".into(),
        }),
        ..Default::default()
    };
    let resolved = app
        .tickets
        .resolve_ticket(resolve.clone())
        .await
        .unwrap()
        .into_inner();
    let replayed = app
        .tickets
        .resolve_ticket(resolve)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved, replayed);

    assert_eq!(list(&mut app, Default::default()).await.tickets.len(), 1);
    let events = app
        .tickets
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: first.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 2, "created and resolved, once each");
    app.stop().await;
}

#[tokio::test]
async fn get_ticket_failures() {
    let mut app = spawn_app().await;
    expect_error(
        app.tickets
            .get_ticket(get_by_id("0190d7a4-0000-7000-8000-000000000000"))
            .await,
        Code::NotFound,
        "TICKET_NOT_FOUND",
    );
    let fields = expect_error(
        app.tickets.get_ticket(get_by_id("not-a-uuid")).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["id"]);
    let fields = expect_error(
        app.tickets
            .get_ticket(proto::GetTicketRequest {
                reveal_personal_data: false,
                lookup: Some(proto::get_ticket_request::Lookup::Reference(
                    "MCT-20-1".into(),
                )),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["reference"]);
    expect_error(
        app.tickets
            .get_ticket(proto::GetTicketRequest {
                reveal_personal_data: false,
                lookup: Some(proto::get_ticket_request::Lookup::Reference(
                    "MCT-2026-999999".into(),
                )),
            })
            .await,
        Code::NotFound,
        "TICKET_NOT_FOUND",
    );
    expect_error(
        app.tickets
            .get_ticket(proto::GetTicketRequest {
                lookup: None,
                reveal_personal_data: false,
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    app.stop().await;
}

#[tokio::test]
async fn list_filters_and_finds_arabic_text_however_it_is_spelled() {
    let mut app = spawn_app().await;
    let pothole = create(&mut app, pothole_report()).await;
    let mut waste = pothole_report();
    waste.category = "waste_collection".into();
    waste.subject = "لم يتم جمع النفايات من الحارة".into();
    waste.description = "الحاويات ممتلئة منذ أسبوع".into();
    waste.location.as_mut().unwrap().wilayat = "as_seeb".into();
    let waste = create(&mut app, waste).await;
    let mut inquiry = pothole_report();
    inquiry.r#type = proto::TicketType::Inquiry.into();
    inquiry.category = "building_permit".into();
    inquiry.subject = "Building permit question".into();
    inquiry.description = "How long does a permit take?".into();
    let inquiry = create(&mut app, inquiry).await;

    let ids =
        |r: proto::ListTicketsResponse| r.tickets.into_iter().map(|t| t.id).collect::<Vec<_>>();
    // Newest first.
    assert_eq!(
        ids(list(&mut app, Default::default()).await),
        [inquiry.id.clone(), waste.id.clone(), pothole.id.clone()]
    );
    let by_directorate = list(
        &mut app,
        proto::ListTicketsRequest {
            directorates: vec!["health_affairs".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(by_directorate), vec![waste.id.clone()]);
    let by_type_and_wilayat = list(
        &mut app,
        proto::ListTicketsRequest {
            types: vec![proto::TicketType::Report.into()],
            wilayats: vec!["bawshar".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(by_type_and_wilayat), vec![pothole.id.clone()]);

    // "مدرسه" (haa) with diacritics finds "المدرسة" (taa marbuta); "النفايات" with tatweel.
    for (text, want) in [
        ("مَدرسه", pothole.id.clone()),
        ("النفـــايات", waste.id.clone()),
        ("PERMIT", inquiry.id.clone()),
        (&pothole.reference.clone(), pothole.id.clone()),
    ] {
        let found = list(
            &mut app,
            proto::ListTicketsRequest {
                text: text.to_owned(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(found), [want], "searching {text}");
    }
    let nothing = list(
        &mut app,
        proto::ListTicketsRequest {
            text: "مستشفى".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(nothing.tickets.is_empty());

    let by_status = list(
        &mut app,
        proto::ListTicketsRequest {
            statuses: vec![proto::TicketStatus::Resolved.into()],
            ..Default::default()
        },
    )
    .await;
    assert!(by_status.tickets.is_empty());

    let since_creation = list(
        &mut app,
        proto::ListTicketsRequest {
            create_time_from: waste.create_time,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(since_creation), [inquiry.id.clone(), waste.id.clone()]);
    app.stop().await;
}

#[tokio::test]
async fn list_refuses_bad_paging_and_bad_filters() {
    let mut app = spawn_app().await;
    for _ in 0..3 {
        create(&mut app, pothole_report()).await;
    }
    let fields = expect_error(
        app.tickets
            .list_tickets(proto::ListTicketsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["page_size"]);
    // Above the maximum is lowered, not refused.
    let big = list(
        &mut app,
        proto::ListTicketsRequest {
            page_size: 100_000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(big.tickets.len(), 3);
    assert!(big.next_page_token.is_empty());

    let fields = expect_error(
        app.tickets
            .list_tickets(proto::ListTicketsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["page_token"]);

    let first = list(
        &mut app,
        proto::ListTicketsRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    assert!(!first.next_page_token.is_empty());
    let fields = expect_error(
        app.tickets
            .list_tickets(proto::ListTicketsRequest {
                page_size: 1,
                page_token: first.next_page_token.clone(),
                directorates: vec!["roads".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["page_token"]);

    let fields = expect_error(
        app.tickets
            .list_tickets(proto::ListTicketsRequest {
                statuses: vec![0, 42],
                categories: vec!["Not A Code".into()],
                text: "!!! ؟؟".into(),
                create_time_from: Some(prost_types::Timestamp {
                    seconds: -5,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    for field in [
        "statuses[0]",
        "statuses[1]",
        "categories[0]",
        "text",
        "create_time_from",
    ] {
        assert!(fields.contains(&field.to_owned()), "{field} in {fields:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn paging_under_concurrent_writes_neither_skips_nor_repeats() {
    let mut app = spawn_app().await;
    let mut existing = HashSet::new();
    for _ in 0..25 {
        existing.insert(create(&mut app, pothole_report()).await.id);
    }
    // A writer keeps creating tickets while a reader pages through.
    let mut writer = app.tickets.clone();
    let writing = tokio::spawn(async move {
        for _ in 0..40 {
            writer
                .create_ticket(pothole_report())
                .await
                .expect("create");
        }
    });
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &mut app,
            proto::ListTicketsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await;
        seen.extend(page.tickets.into_iter().map(|t| t.id));
        tokio::task::yield_now().await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    writing.await.unwrap();
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no ticket repeated");
    assert!(
        existing.is_subset(&unique),
        "no ticket that existed before paging was skipped"
    );
    app.stop().await;
}

#[tokio::test]
async fn update_ticket_with_mask_and_etag() {
    let mut app = spawn_app().await;
    let ticket = create(&mut app, pothole_report()).await;
    let update = |t: proto::Ticket, paths: &[&str]| proto::UpdateTicketRequest {
        ticket: Some(t),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        request_id: String::new(),
    };
    let mut changed = ticket.clone();
    changed.subject = "حفرة كبيرة جداً".into();
    changed.priority = proto::Priority::Urgent.into();
    changed.description = "ignored: not in the mask".into();
    let updated = app
        .tickets
        .update_ticket(update(changed.clone(), &["subject", "priority"]))
        .await
        .expect("update")
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(updated.subject, "حفرة كبيرة جداً");
    assert_eq!(updated.priority(), proto::Priority::Urgent);
    assert_eq!(updated.description, ticket.description);
    assert_eq!(updated.etag, "\"2\"");

    // The old etag is stale now.
    let status = app
        .tickets
        .update_ticket(update(changed.clone(), &["subject"]))
        .await
        .expect_err("stale etag");
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(reason(&status), "ETAG_MISMATCH");

    let mut bad = updated.clone();
    bad.category = "nope".into();
    let fields = expect_error(
        app.tickets.update_ticket(update(bad, &["category"])).await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["ticket.category"]);
    let fields = expect_error(
        app.tickets
            .update_ticket(update(updated.clone(), &["status", "reference"]))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["update_mask", "update_mask"]);
    let mut bad = updated.clone();
    bad.r#type = proto::TicketType::Complaint.into();
    bad.reporter = Some(proto::Reporter {
        anonymous: true,
        masked: false,
        erased: false,
        ..Default::default()
    });
    let fields = expect_error(
        app.tickets
            .update_ticket(update(bad, &["type", "reporter"]))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["ticket.reporter.anonymous"]);
    let mut missing = updated.clone();
    missing.id = "0190d7a4-0000-7000-8000-000000000000".into();
    expect_error(
        app.tickets
            .update_ticket(update(missing, &["subject"]))
            .await,
        Code::NotFound,
        "TICKET_NOT_FOUND",
    );

    // A closed ticket can no longer be edited.
    let id = updated.id.clone();
    resolve(&mut app, &id).await;
    app.tickets
        .close_ticket(proto::CloseTicketRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("close");
    let mut closed = get(&mut app, &id).await;
    closed.subject = "too late".into();
    expect_error(
        app.tickets
            .update_ticket(update(closed, &["subject"]))
            .await,
        Code::FailedPrecondition,
        "TICKET_CLOSED",
    );
    let after = get(&mut app, &id).await;
    assert_eq!(after.subject, "حفرة كبيرة جداً", "no half-written state");
    app.stop().await;
}

async fn listed(app: &mut TestApp) -> Vec<proto::Ticket> {
    list(app, proto::ListTicketsRequest::default())
        .await
        .tickets
}

/// The ticket as GetTicket answers it, without the SLA clock that only GetTicket carries.
async fn got(app: &mut TestApp, id: String) -> proto::Ticket {
    let mut ticket = get(app, &id).await;
    ticket.sla = None;
    ticket
}

/// ListTickets keeps the messages it made (`grpc::encoded_tickets`): every change must still
/// show in the next page, exactly as GetTicket answers it, and each page stays what prost
/// would encode.
#[tokio::test]
async fn a_listed_ticket_shows_each_change_at_once() {
    let mut app = spawn_app().await;
    let ticket = create(&mut app, pothole_report()).await;
    let other = create(&mut app, pothole_report()).await;
    let first = listed(&mut app).await;
    assert_eq!(first, listed(&mut app).await, "read twice, the same");
    assert_eq!(first[0], got(&mut app, other.id.clone()).await);

    let mut changed = ticket.clone();
    changed.subject = "حفرة أكبر".into();
    app.tickets
        .update_ticket(proto::UpdateTicketRequest {
            ticket: Some(changed),
            update_mask: Some(FieldMask {
                paths: vec!["subject".into()],
            }),
            request_id: String::new(),
        })
        .await
        .expect("update");
    let after_edit = listed(&mut app).await;
    assert_eq!(after_edit[1].subject, "حفرة أكبر");
    assert_eq!(after_edit[1].etag, "\"2\"");
    assert_eq!(after_edit[1], got(&mut app, ticket.id.clone()).await);
    assert_eq!(after_edit[0], first[0], "the unchanged ticket is unchanged");

    app.tickets
        .erase_personal_data(proto::ErasePersonalDataRequest {
            ticket_id: ticket.id.clone(),
            reason: "the beneficiary asked".into(),
            ..Default::default()
        })
        .await
        .expect("erase");
    let after_erasure = listed(&mut app).await;
    let reporter = after_erasure[1].reporter.clone().expect("reporter");
    assert!(reporter.erased, "{reporter:?}");
    assert!(reporter.phone.is_empty() && reporter.name.is_empty());
    assert_eq!(after_erasure[1], got(&mut app, ticket.id.clone()).await);
    app.stop().await;
}

async fn resolve(app: &mut TestApp, id: &str) -> proto::Ticket {
    app.tickets
        .resolve_ticket(proto::ResolveTicketRequest {
            ticket_id: id.to_owned(),
            resolution: Some(proto::Resolution {
                code: proto::ResolutionCode::Fixed.into(),
                text: "تم ردم الحفرة".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("resolve")
        .into_inner()
        .ticket
        .unwrap()
}

#[tokio::test]
async fn a_ticket_moves_through_the_three_support_lines_and_its_audit_trail_records_every_step() {
    let mut app = spawn_app().await;
    let ticket = create(&mut app, pothole_report()).await;
    let id = ticket.id.clone();
    let mut client = app.tickets.clone();

    let assigned = client
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: id.clone(),
            etag: ticket.etag.clone(),
            directorate: "roads".into(),
            note: "تحويل إلى ضابط الاتصال".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(assigned.status(), proto::TicketStatus::Assigned);
    assert_eq!(
        assigned.assignment.as_ref().unwrap().support_line(),
        proto::SupportLine::Second,
        "routing to a directorate reaches its liaison officer"
    );
    let third_line = client
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: id.clone(),
            directorate: "municipal_services".into(),
            outlet: "outlet_bawshar".into(),
            assignee: "emp-1042".into(),
            support_line: proto::SupportLine::Third.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(third_line.assignment.as_ref().unwrap().assignee, "emp-1042");
    client
        .start_work(proto::StartWorkRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let waiting = client
        .wait_on_beneficiary(proto::WaitOnBeneficiaryRequest {
            ticket_id: id.clone(),
            reason: "نحتاج صورة للموقع".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(waiting.status_reason, "نحتاج صورة للموقع");
    client
        .start_work(proto::StartWorkRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let comment = client
        .add_comment(proto::AddCommentRequest {
            ticket_id: id.clone(),
            text: "الفريق في الموقع".into(),
            visibility: proto::CommentVisibility::Public.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        comment.event.unwrap().visibility(),
        proto::CommentVisibility::Public
    );
    let resolved = resolve(&mut app, &id).await;
    assert_eq!(resolved.status(), proto::TicketStatus::Resolved);
    assert!(resolved.resolve_time.is_some());
    let closed = client
        .close_ticket(proto::CloseTicketRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert!(closed.close_time.is_some());

    // Impossible moves name the current state.
    let status = client
        .resolve_ticket(proto::ResolveTicketRequest {
            ticket_id: id.clone(),
            resolution: Some(proto::Resolution {
                code: proto::ResolutionCode::Fixed.into(),
                text: "again".into(),
            }),
            ..Default::default()
        })
        .await
        .expect_err("resolving a closed ticket");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "TICKET_CLOSED");

    let reopened = client
        .reopen_ticket(proto::ReopenTicketRequest {
            ticket_id: id.clone(),
            reason: "الحفرة عادت".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(reopened.status(), proto::TicketStatus::Reopened);
    assert!(reopened.resolution.is_none());

    let events = client
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    use proto::TicketEventKind as K;
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            K::Created,
            K::Assigned,
            K::Assigned,
            K::StatusChanged,
            K::StatusChanged,
            K::StatusChanged,
            K::Commented,
            K::StatusChanged,
            K::StatusChanged,
            K::StatusChanged
        ]
    );
    assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(events.last().unwrap().etag, reopened.etag);
    assert_eq!(events[1].note, "تحويل إلى ضابط الاتصال");

    // Paging the audit trail.
    let first = client
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: id.clone(),
            page_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: id.clone(),
            page_size: 100,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.events.len() + second.events.len(), events.len());
    assert_eq!(second.events.first().unwrap().cursor, events[4].cursor);
    app.stop().await;
}

#[tokio::test]
async fn lifecycle_failures_reject_transfer_merge() {
    let mut app = spawn_app().await;
    let a = create(&mut app, pothole_report()).await;
    let b = create(&mut app, pothole_report()).await;
    let c = create(&mut app, pothole_report()).await;
    let mut client = app.tickets.clone();

    // Reject, then reopening a rejected ticket is refused with its state.
    client
        .reject_ticket(proto::RejectTicketRequest {
            ticket_id: a.id.clone(),
            reason: "الطريق تابع لوزارة النقل".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    expect_error(
        client
            .reopen_ticket(proto::ReopenTicketRequest {
                ticket_id: a.id.clone(),
                reason: "please".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "TICKET_REJECTED",
    );
    // Missing required fields.
    let fields = expect_error(
        client
            .reject_ticket(proto::RejectTicketRequest {
                ticket_id: b.id.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["reason"]);
    let fields = expect_error(
        client
            .assign_ticket(proto::AssignTicketRequest {
                ticket_id: "x".into(),
                etag: "bad".into(),
                outlet: "outlet_bawshar".into(),
                support_line: 9,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["ticket_id", "etag", "directorate", "support_line"]);
    // An outlet of another directorate.
    let fields = expect_error(
        client
            .assign_ticket(proto::AssignTicketRequest {
                ticket_id: b.id.clone(),
                directorate: "roads".into(),
                outlet: "outlet_bawshar".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["outlet"]);
    // A stale etag on a lifecycle move.
    expect_error(
        client
            .start_work(proto::StartWorkRequest {
                ticket_id: b.id.clone(),
                etag: "\"7\"".into(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    // Start work on a NEW ticket makes no sense: it is not assigned yet.
    expect_error(
        client
            .start_work(proto::StartWorkRequest {
                ticket_id: b.id.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "TICKET_NEW",
    );

    let transferred = client
        .transfer_ticket(proto::TransferTicketRequest {
            ticket_id: b.id.clone(),
            entity: "وزارة النقل والاتصالات وتقنية المعلومات".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(transferred.status(), proto::TicketStatus::Transferred);
    assert_eq!(
        transferred.transferred_to,
        "وزارة النقل والاتصالات وتقنية المعلومات"
    );

    // Merge: not into itself, not into nothing, then into a real original.
    let merge = |id: &str, into: &str| proto::MergeTicketRequest {
        ticket_id: id.to_owned(),
        duplicate_of_ticket_id: into.to_owned(),
        ..Default::default()
    };
    let fields = expect_error(
        client.merge_ticket(merge(&c.id, &c.id)).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["duplicate_of_ticket_id"]);
    let fields = expect_error(
        client
            .merge_ticket(merge(&c.id, "0190d7a4-0000-7000-8000-000000000000"))
            .await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    assert_eq!(fields, ["duplicate_of_ticket_id"]);
    let merged = client
        .merge_ticket(merge(&c.id, &a.id))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(merged.duplicate_of_ticket_id, a.id);
    assert_eq!(merged.status(), proto::TicketStatus::Merged);
    // Nothing can be merged into a merged ticket.
    let d = create(&mut app, pothole_report()).await;
    expect_error(
        client.merge_ticket(merge(&d.id, &c.id)).await,
        Code::InvalidArgument,
        "UNKNOWN_REFERENCE",
    );
    // Not found, for every lifecycle RPC's shared path.
    expect_error(
        client
            .close_ticket(proto::CloseTicketRequest {
                ticket_id: "0190d7a4-0000-7000-8000-000000000000".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "TICKET_NOT_FOUND",
    );
    expect_error(
        client
            .list_ticket_events(proto::ListTicketEventsRequest {
                ticket_id: "0190d7a4-0000-7000-8000-000000000000".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "TICKET_NOT_FOUND",
    );
    expect_error(
        client
            .add_comment(proto::AddCommentRequest {
                ticket_id: d.id.clone(),
                text: "   ".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_message_gets_a_status_and_the_server_keeps_serving() {
    let mut app = spawn_app().await;
    let mut request = pothole_report();
    request.description = "ب".repeat(1024 * 1024);
    let status = app
        .tickets
        .create_ticket(request)
        .await
        .expect_err("too big");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Just under the message limit but over the field limit: a precise field violation.
    let mut request = pothole_report();
    request.description = "ب".repeat(5001);
    let fields = expect_error(
        app.tickets.create_ticket(request).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["description"]);
    create(&mut app, pothole_report()).await;
    app.stop().await;
}

/// Sends raw bytes as a gRPC request body, to test what no well-behaved client can send.
mod raw {
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct RawCodec;
    pub struct RawEncoder;
    pub struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            use bytes::Buf;
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_and_writes_nothing() {
    let mut app = spawn_app().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/balagh.v1.TicketService/CreateTicket",
    );
    for body in [
        vec![0x2a, 0x02, 0xff, 0xfe], // subject (field 5) with invalid UTF-8
        vec![0x08],                   // a truncated varint
        vec![0x2a, 0x7f, 0x41],       // a string longer than the message
    ] {
        grpc.ready().await.unwrap();
        let result = grpc
            .unary(tonic::Request::new(body), path.clone(), raw::RawCodec)
            .await;
        expect_error(result, Code::InvalidArgument, "MALFORMED_MESSAGE");
    }
    assert!(list(&mut app, Default::default()).await.tickets.is_empty());
    create(&mut app, pothole_report()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_call_back_rating_needs_a_resolved_ticket_and_a_score_from_1_to_5() {
    let mut app = spawn_app().await;
    let ticket = create(&mut app, pothole_report()).await;
    let rate = |score: i32, comment: &str| proto::RateTicketRequest {
        ticket_id: ticket.id.clone(),
        etag: String::new(),
        request_id: String::new(),
        score,
        comment: comment.into(),
    };
    // An open ticket is not rated yet.
    expect_error(
        app.tickets.rate_ticket(rate(4, "")).await,
        Code::FailedPrecondition,
        "TICKET_NEW",
    );
    app.tickets
        .resolve_ticket(proto::ResolveTicketRequest {
            ticket_id: ticket.id.clone(),
            resolution: Some(proto::Resolution {
                code: proto::ResolutionCode::Fixed.into(),
                text: "تم ردم الحفرة".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("resolve");
    for score in [0, 6, -1] {
        let fields = expect_error(
            app.tickets.rate_ticket(rate(score, "")).await,
            Code::InvalidArgument,
            "INVALID_FIELDS",
        );
        assert_eq!(fields, ["score"]);
    }
    let fields = expect_error(
        app.tickets.rate_ticket(rate(3, &"ك".repeat(5000))).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["comment"]);

    let first = app
        .tickets
        .rate_ticket(rate(4, "شكراً على سرعة الاستجابة"))
        .await
        .expect("rate")
        .into_inner();
    let rated = first.ticket.expect("ticket");
    assert_eq!(rated.satisfaction.as_ref().map(|s| s.score), Some(4));
    assert_eq!(
        first.event.expect("event").kind(),
        proto::TicketEventKind::Rated
    );
    // A later call-back replaces the rating on the ticket; the trail keeps both.
    let second = app
        .tickets
        .rate_ticket(rate(5, ""))
        .await
        .expect("rate again")
        .into_inner()
        .ticket
        .expect("ticket");
    assert_eq!(second.satisfaction.as_ref().map(|s| s.score), Some(5));
    let events = app
        .tickets
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: ticket.id.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("events")
        .into_inner()
        .events;
    let ratings: Vec<i32> = events
        .iter()
        .filter(|e| e.kind() == proto::TicketEventKind::Rated)
        .filter_map(|e| e.satisfaction.as_ref().map(|s| s.score))
        .collect();
    assert_eq!(ratings, [4, 5]);
    app.stop().await;
}
