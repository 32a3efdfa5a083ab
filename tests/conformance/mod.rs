//! The store conformance suite: the same tests, with the same expectations, for every
//! implementation of `Store`. Each backend's test file instantiates it with
//! `conformance_suite!(open_fn)`, where `open_fn(clock) -> Harness`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use balagh::domain::calendar::BusinessCalendar;
use balagh::domain::kpi::{KpiGrouping, KpiTally, aggregate};
use balagh::domain::lifecycle::Action;
use balagh::domain::sync::OutboxState;
use balagh::domain::ticket::{
    Channel, Location, NewTicket, Reporter, Resolution, ResolutionCode, Status, TicketPatch,
    TicketType, Visibility,
};
use balagh::domain::values::{Code, PhoneNumber};
use balagh::domain::{Clock, ManualClock, Timestamp};
use balagh::store::{
    InboundChange, Reach, RequestKey, Store, StoreError, TicketLookup, TicketQuery, WriteContext,
};

/// A store under test, and how to open the same database again (to prove durability).
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub reopen: Box<
        dyn Fn(ManualClock) -> futures::future::BoxFuture<'static, Arc<dyn Store>> + Send + Sync,
    >,
    pub guard: Box<dyn std::any::Any + Send>,
}

/// 2026-06-01T08:00:00+04:00.
pub const JUNE_2026: i64 = 1_780_286_400_000_000;
/// 2027-01-01T00:00:00+04:00.
pub const NEW_YEAR_2027_MUSCAT: i64 = 1_798_747_200_000_000;

pub fn ctx() -> WriteContext {
    WriteContext {
        actor: "tester".into(),
        request: None,
        reach: None,
    }
}

pub fn ctx_with(request_id: &str, fingerprint: u8) -> WriteContext {
    WriteContext {
        actor: "tester".into(),
        request: Some(RequestKey {
            request_id: request_id.into(),
            fingerprint: [fingerprint; 32],
        }),
        reach: None,
    }
}

pub fn new_ticket(category: &str) -> NewTicket {
    NewTicket {
        ticket_type: TicketType::Report,
        channel: Channel::App,
        category: Code::parse("category", category).unwrap(),
        priority: None,
        subject: "إنارة معطلة في الشارع".into(),
        description: String::new(),
        reporter: Reporter::identified(
            "reporter",
            "Citizen".into(),
            Some(PhoneNumber::parse("phone", "99000000").unwrap()),
            None,
            None,
        )
        .unwrap(),
        location: Location {
            wilayat: Some(Code::parse("w", "muttrah").unwrap()),
            area: None,
            point: None,
        },
        attachments: vec![],
    }
}

pub async fn reference_numbers_are_unique_and_gap_free_under_concurrent_writes(h: Harness) {
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = h.store.clone();
        // Every seventh write fails inside the group commit; it must leave no gap.
        let category = if i % 7 == 3 {
            "no_such_category"
        } else {
            "street_lighting"
        };
        tasks.push(tokio::spawn(async move {
            store.create_ticket(ctx(), new_ticket(category)).await
        }));
    }
    let mut numbers = BTreeSet::new();
    let mut n_failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(ticket) => {
                assert_eq!(ticket.reference.year(), 2026);
                assert!(
                    numbers.insert(ticket.reference.number()),
                    "duplicate reference"
                );
            }
            Err(StoreError::UnknownReference(v)) => {
                assert_eq!(v.field, "category");
                n_failed += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(n_failed, 43);
    let expected: BTreeSet<u32> = (1..=257).collect();
    assert_eq!(numbers, expected);
    let all = h
        .store
        .list_tickets(&TicketQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 257, "failed writes left nothing behind");
}

/// A description with words too long for PostgreSQL's text search (2048 bytes or more) is
/// written, and its other words are found; a word just under the bound is found too.
pub async fn a_word_too_long_to_index_is_left_out_and_the_rest_is_found(h: Harness) {
    let mut new = new_ticket("street_lighting");
    // 2,047 bytes, then 2,048 bytes (1,024 two-byte letters): 3,083 characters in all.
    new.description = format!("{} {} حفرة عميقة", "x".repeat(2047), "ب".repeat(1024));
    let created = h.store.create_ticket(ctx(), new).await.unwrap();
    for words in [vec!["عميقه"], vec!["حفره", "xxxx"]] {
        let found = h
            .store
            .list_tickets(&TicketQuery {
                words: words.iter().map(|w| (*w).to_owned()).collect(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = found.iter().map(|t| t.ticket.id).collect();
        assert_eq!(ids, [created.id], "searching {words:?}");
    }
}

/// What one create of [`creates_written_together_answer_each_as_if_alone`] asks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ask {
    Report,
    Complaint,
    UnknownCategory,
    UnknownWilayat,
    /// A request id shared by three creates of the burst, two of one payload and one of another.
    Shared {
        group: usize,
        payload: u8,
    },
    /// The request id answered before the burst, with its payload or another.
    Earlier {
        payload: u8,
    },
}

/// Many creates at once, so the writer commits them in batches (on PostgreSQL each batch's
/// creates are written together by set-based statements): every create gets the answer it
/// would get alone, references stay gap-free in queue order, and each create's event and
/// push are there exactly once.
pub async fn creates_written_together_answer_each_as_if_alone(h: Harness) {
    let earlier = h
        .store
        .create_ticket(ctx_with("earlier", 1), new_ticket("pothole"))
        .await
        .unwrap();
    let mut asks = Vec::new();
    for i in 0..240 {
        asks.push(match i % 12 {
            1 => Ask::UnknownCategory,
            2 => Ask::UnknownWilayat,
            3 | 4 => Ask::Shared {
                group: i / 12,
                payload: 1,
            },
            5 => Ask::Shared {
                group: i / 12,
                payload: 2,
            },
            6 | 7 => Ask::Complaint,
            8 if i % 24 == 8 => Ask::Earlier { payload: 1 },
            8 => Ask::Earlier { payload: 2 },
            _ => Ask::Report,
        });
    }
    let mut tasks = Vec::new();
    for ask in asks.iter().copied() {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            let (ctx, new) = match ask {
                Ask::Report => (ctx(), new_ticket("pothole")),
                Ask::Complaint => (ctx(), complaint()),
                Ask::UnknownCategory => (ctx(), new_ticket("no_such_category")),
                Ask::UnknownWilayat => {
                    let mut new = new_ticket("pothole");
                    new.location.wilayat = Some(Code::parse("w", "atlantis").unwrap());
                    (ctx(), new)
                }
                Ask::Shared { group, payload } => {
                    let mut new = new_ticket("pothole");
                    new.subject = format!("طلب {group} نسخة {payload}");
                    (ctx_with(&format!("shared-{group}"), payload), new)
                }
                Ask::Earlier { payload } => (ctx_with("earlier", payload), new_ticket("pothole")),
            };
            store.create_ticket(ctx, new).await
        }));
    }
    let mut created = std::collections::BTreeMap::new();
    let mut shared: std::collections::BTreeMap<usize, Vec<(u8, Result<_, StoreError>)>> =
        Default::default();
    for (ask, task) in asks.iter().zip(tasks) {
        let answer = task.await.unwrap();
        match *ask {
            Ask::Report | Ask::Complaint => {
                let ticket = answer.unwrap();
                let expected = if *ask == Ask::Complaint {
                    TicketType::Complaint
                } else {
                    TicketType::Report
                };
                assert_eq!(ticket.ticket_type, expected);
                assert!(created.insert(ticket.reference.number(), ticket).is_none());
            }
            Ask::UnknownCategory => match answer {
                Err(StoreError::UnknownReference(v)) => assert_eq!(v.field, "category"),
                other => panic!("unknown category: {other:?}"),
            },
            Ask::UnknownWilayat => match answer {
                Err(StoreError::UnknownReference(v)) => assert_eq!(v.field, "location.wilayat"),
                other => panic!("unknown wilayat: {other:?}"),
            },
            Ask::Earlier { payload: 1 } => assert_eq!(answer.unwrap(), earlier),
            Ask::Earlier { .. } => {
                assert!(
                    matches!(answer, Err(StoreError::RequestIdReused)),
                    "{answer:?}"
                )
            }
            Ask::Shared { group, payload } => {
                shared.entry(group).or_default().push((payload, answer))
            }
        }
    }
    // Of three creates sharing a request id, the first written decides: the ones with its
    // payload get its ticket, the other is refused.
    for (group, answers) in shared {
        let tickets: Vec<_> = answers
            .iter()
            .filter_map(|(payload, answer)| answer.as_ref().ok().map(|t| (*payload, t.clone())))
            .collect();
        let winner = tickets[0].0;
        assert!(
            tickets
                .iter()
                .all(|(p, t)| *p == winner && *t == tickets[0].1)
        );
        let n_refused = answers
            .iter()
            .filter(|(_, a)| matches!(a, Err(StoreError::RequestIdReused)))
            .count();
        assert_eq!(
            (tickets.len(), n_refused),
            if winner == 1 { (2, 1) } else { (1, 2) },
            "group {group}"
        );
        let ticket = &tickets[0].1;
        assert_eq!(ticket.subject, format!("طلب {group} نسخة {winner}"));
        assert!(
            created
                .insert(ticket.reference.number(), ticket.clone())
                .is_none()
        );
    }
    // 20 rounds of 12: 6 plain creates (0, 6, 7, 9, 10, 11) and one per shared id.
    assert_eq!(created.len(), 20 * 7);
    let numbers: Vec<u32> = created.keys().copied().collect();
    assert_eq!(
        numbers,
        (2..=141).collect::<Vec<_>>(),
        "gap-free after the earlier one"
    );

    // Each created ticket has exactly one event, and cursors follow the references.
    let changes = h.store.read_changes(0, 10_000).await.unwrap();
    assert_eq!(changes.len(), 141);
    let in_cursor_order: Vec<u32> = changes
        .iter()
        .map(|c| c.ticket.reference.number())
        .collect();
    assert_eq!(in_cursor_order, (1..=141).collect::<Vec<_>>());
    for change in &changes[1..] {
        let ticket = &created[&change.ticket.reference.number()];
        assert_eq!(&change.ticket, ticket);
        assert_eq!(change.event.ticket_id, ticket.id);
        assert_eq!(change.event.version, ticket.version);
    }
    // A push for each complaint (the default policy), none for the reports.
    let pushes = h
        .store
        .list_outbox(OutboxState::Pending, 0, 1000)
        .await
        .unwrap();
    let complaints: BTreeSet<_> = created
        .values()
        .filter(|t| t.ticket_type == TicketType::Complaint)
        .map(|t| t.id)
        .collect();
    assert_eq!(complaints.len(), 40);
    let pushed: BTreeSet<_> = pushes.iter().map(|e| e.ticket_id).collect();
    assert_eq!(pushes.len(), 40);
    assert_eq!(pushed, complaints);
    for push in &pushes {
        let change = changes
            .iter()
            .find(|c| c.ticket.id == push.ticket_id)
            .unwrap();
        assert_eq!(push.event.cursor, change.event.cursor);
        assert_eq!(push.ticket, change.ticket);
    }
    // Every shared request id replays its first answer afterwards.
    let again = h
        .store
        .create_ticket(ctx_with("earlier", 1), new_ticket("pothole"))
        .await
        .unwrap();
    assert_eq!(again, earlier);
}

pub async fn reference_numbers_restart_each_muscat_year_and_survive_a_restart(
    h: Harness,
    clock: ManualClock,
) {
    for _ in 0..3 {
        h.store
            .create_ticket(ctx(), new_ticket("pothole"))
            .await
            .unwrap();
    }
    h.store.close().await;
    clock.set(Timestamp::from_micros(NEW_YEAR_2027_MUSCAT - 1));
    let store = (h.reopen)(clock.clone()).await;
    let last_of_2026 = store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    assert_eq!(last_of_2026.reference.to_string(), "MCT-2026-000004");
    clock.set(Timestamp::from_micros(NEW_YEAR_2027_MUSCAT));
    let first_of_2027 = store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    assert_eq!(first_of_2027.reference.to_string(), "MCT-2027-000001");
    assert!(
        store
            .get_ticket_with_events(TicketLookup::Reference(last_of_2026.reference), 1)
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
}

pub async fn request_ids_replay_the_first_answer_even_after_a_restart(
    h: Harness,
    clock: ManualClock,
) {
    let first = h
        .store
        .create_ticket(ctx_with("r-1", 1), new_ticket("pothole"))
        .await
        .unwrap();
    let again = h
        .store
        .create_ticket(ctx_with("r-1", 1), new_ticket("pothole"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert!(matches!(
        h.store
            .create_ticket(ctx_with("r-1", 2), new_ticket("pothole"))
            .await,
        Err(StoreError::RequestIdReused)
    ));
    h.store.close().await;
    let store = (h.reopen)(clock.clone()).await;
    let after_restart = store
        .create_ticket(ctx_with("r-1", 1), new_ticket("pothole"))
        .await
        .unwrap();
    assert_eq!(after_restart, first);
    // Once purged, the id is free again.
    clock.advance_micros(49 * 3600 * 1_000_000);
    let purged = store
        .purge_request_records(Timestamp::from_micros(
            clock_now(&clock) - 48 * 3600 * 1_000_000,
        ))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let fresh = store
        .create_ticket(ctx_with("r-1", 1), new_ticket("pothole"))
        .await
        .unwrap();
    assert_ne!(fresh.id, first.id);
    store.close().await;
}

fn clock_now(clock: &ManualClock) -> i64 {
    use balagh::domain::Clock;
    clock.now().as_micros()
}

pub async fn a_stale_version_or_an_impossible_move_changes_nothing(h: Harness) {
    let ticket = h
        .store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    let resolve = || Action::Resolve {
        resolution: Resolution {
            code: ResolutionCode::Fixed,
            text: "done".into(),
        },
    };
    assert!(matches!(
        h.store
            .apply_action(ctx(), ticket.id, Some(9), resolve())
            .await,
        Err(StoreError::EtagMismatch { current_version: 1 })
    ));
    let (resolved, event) = h
        .store
        .apply_action(ctx(), ticket.id, Some(1), resolve())
        .await
        .unwrap();
    assert_eq!(resolved.status, Status::Resolved);
    assert_eq!(resolved.version, 2);
    assert_eq!(event.version, 2);
    assert!(matches!(
        h.store
            .apply_action(ctx(), ticket.id, None, Action::StartWork { note: None })
            .await,
        Err(StoreError::Lifecycle(_))
    ));
    let events = h
        .store
        .list_ticket_events(ticket.id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 2, "refused changes append no event");
    assert!(events[0].cursor < events[1].cursor);
    let stored = h.store.get_ticket(ticket.id).await.unwrap().unwrap();
    assert_eq!(stored, resolved);
}

/// GetTicket's read: the ticket with its events as of one moment, by id or by reference,
/// while comments are written beside it; the events end at the ticket's version every time.
pub async fn a_ticket_is_read_with_its_events_as_of_one_moment(h: Harness) {
    let ticket = h
        .store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    let writer = {
        let store = h.store.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                store
                    .apply_action(
                        ctx(),
                        ticket.id,
                        None,
                        Action::Comment {
                            text: format!("comment {i}"),
                            visibility: Visibility::Internal,
                        },
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    let mut seen_versions = BTreeSet::new();
    loop {
        let done = writer.is_finished();
        for lookup in [
            TicketLookup::Id(ticket.id),
            TicketLookup::Reference(ticket.reference),
        ] {
            let (read, events) = h
                .store
                .get_ticket_with_events(lookup, 1000)
                .await
                .unwrap()
                .expect("the ticket exists");
            assert_eq!(read.id, ticket.id);
            assert_eq!(
                events.iter().map(|e| e.version).collect::<Vec<_>>(),
                (1..=read.version).collect::<Vec<_>>(),
                "one event per version, oldest first, ending at the ticket's version"
            );
            assert!(events.iter().all(|e| e.ticket_id == ticket.id));
            assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor));
            seen_versions.insert(read.version);
            reads += 1;
        }
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert!(
        reads >= 2 && seen_versions.contains(&41),
        "{reads} reads, {seen_versions:?}"
    );
    // The same events as the event list gives, and at most as many as asked for.
    let (_, all) = h
        .store
        .get_ticket_with_events(TicketLookup::Id(ticket.id), 1000)
        .await
        .unwrap()
        .unwrap();
    let listed = h
        .store
        .list_ticket_events(ticket.id, 0, 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, listed);
    let (_, first_two) = h
        .store
        .get_ticket_with_events(TicketLookup::Reference(ticket.reference), 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_two, listed[..2]);
    // No such ticket: none, by either key.
    let other = h
        .store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    let unknown_reference = balagh::domain::values::ReferenceNumber::new(
        other.reference.year(),
        other.reference.number() + 1,
    )
    .expect("a valid reference");
    for lookup in [
        TicketLookup::Id(balagh::domain::values::TicketId::new_v7()),
        TicketLookup::Reference(unknown_reference),
    ] {
        assert!(
            h.store
                .get_ticket_with_events(lookup, 1000)
                .await
                .unwrap()
                .is_none(),
            "{lookup:?}"
        );
    }
}

/// A write whose reach does not admit the ticket as it stands in the write's transaction
/// (it moved out of a scoped caller's directorate after the caller last saw it) changes
/// nothing and answers as if the ticket did not exist; within reach the same writes go
/// through.
pub async fn a_write_outside_its_reach_changes_nothing(h: Harness) {
    let ticket = h
        .store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    let subject = ticket.subject.clone();
    let outside_reach = Reach::new(move |t| t.subject != subject);
    let outside = || WriteContext {
        reach: Some(outside_reach.clone()),
        ..ctx()
    };
    let comment = || Action::Comment {
        text: "on my way".into(),
        visibility: Visibility::Internal,
    };
    assert!(matches!(
        h.store
            .apply_action(outside(), ticket.id, None, comment())
            .await,
        Err(StoreError::TicketNotFound)
    ));
    let patch = TicketPatch {
        description: Some("moved".into()),
        ..TicketPatch::default()
    };
    assert!(matches!(
        h.store
            .update_ticket(outside(), ticket.id, None, patch.clone())
            .await,
        Err(StoreError::TicketNotFound)
    ));
    let stored = h.store.get_ticket(ticket.id).await.unwrap().unwrap();
    assert_eq!(stored, ticket, "nothing written outside the reach");
    let events = h
        .store
        .list_ticket_events(ticket.id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 1, "only the creation");

    let inside = WriteContext {
        reach: Some(Reach::new(|_| true)),
        ..ctx()
    };
    let (commented, _) = h
        .store
        .apply_action(inside.clone(), ticket.id, None, comment())
        .await
        .unwrap();
    assert_eq!(commented.version, 2);
    let edited = h
        .store
        .update_ticket(inside, ticket.id, Some(2), patch)
        .await
        .unwrap();
    assert_eq!(edited.description, "moved");
}

pub async fn event_cursors_grow_with_commit_order_under_concurrency(h: Harness) {
    let ticket = h
        .store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply_action(
                    ctx(),
                    ticket.id,
                    None,
                    Action::Comment {
                        text: format!("comment {i}"),
                        visibility: balagh::domain::ticket::Visibility::Internal,
                    },
                )
                .await
                .unwrap()
        }));
    }
    let mut by_version = Vec::new();
    for task in tasks {
        let (ticket, event) = task.await.unwrap();
        assert_eq!(ticket.version, event.version);
        by_version.push((event.version, event.cursor));
    }
    by_version.sort();
    // The version order (the order the writes applied) is the cursor order.
    assert!(by_version.windows(2).all(|w| w[0].1 < w[1].1));
    let events = h
        .store
        .list_ticket_events(ticket.id, 0, 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 101);
    let page = h
        .store
        .list_ticket_events(ticket.id, events[49].cursor, 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.len(), 51);
    assert_eq!(page[0], events[50]);
}

pub async fn list_pages_by_position_newest_first(h: Harness) {
    for _ in 0..7 {
        h.store
            .create_ticket(ctx(), new_ticket("pothole"))
            .await
            .unwrap();
    }
    let mut before = None;
    let mut seen = Vec::new();
    loop {
        let page = h
            .store
            .list_tickets(&TicketQuery {
                limit: 3,
                before_position: before,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|t| t.position);
        seen.extend(page.into_iter().map(|t| t.ticket.reference.number()));
    }
    assert_eq!(seen, [7, 6, 5, 4, 3, 2, 1]);
}

pub async fn a_closed_store_refuses_writes(h: Harness) {
    h.store.close().await;
    assert!(matches!(
        h.store.create_ticket(ctx(), new_ticket("pothole")).await,
        Err(StoreError::ShuttingDown)
    ));
}

fn complaint() -> NewTicket {
    NewTicket {
        ticket_type: TicketType::Complaint,
        ..new_ticket("staff_conduct")
    }
}

fn comment(text: &str, visibility: balagh::domain::ticket::Visibility) -> Action {
    Action::Comment {
        text: text.into(),
        visibility,
    }
}

pub async fn the_outbox_takes_the_pushes_of_synchronised_tickets_with_their_change(h: Harness) {
    use balagh::domain::sync::PushKind;
    use balagh::domain::ticket::Visibility;
    let complaint = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    // A report is not synchronised by the default policy.
    let report = h
        .store
        .create_ticket(ctx(), new_ticket("pothole"))
        .await
        .unwrap();
    h.store
        .apply_action(
            ctx(),
            report.id,
            None,
            comment("public", Visibility::Public),
        )
        .await
        .unwrap();
    h.store
        .apply_action(
            ctx(),
            complaint.id,
            None,
            comment("internal", Visibility::Internal),
        )
        .await
        .unwrap();
    h.store
        .apply_action(
            ctx(),
            complaint.id,
            None,
            comment("نعتذر عن ذلك", Visibility::Public),
        )
        .await
        .unwrap();
    let resolve = Action::Resolve {
        resolution: Resolution {
            code: ResolutionCode::Fixed,
            text: "done".into(),
        },
    };
    h.store
        .apply_action(ctx(), complaint.id, None, resolve.clone())
        .await
        .unwrap();
    // A refused change owes nothing.
    assert!(
        h.store
            .apply_action(ctx(), complaint.id, None, resolve)
            .await
            .is_err()
    );
    let pending = h
        .store
        .list_outbox(OutboxState::Pending, 0, 100)
        .await
        .unwrap();
    let kinds: Vec<_> = pending.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            PushKind::CreateCase,
            PushKind::PublicReply,
            PushKind::Resolve
        ]
    );
    assert!(pending.iter().all(|e| e.ticket_id == complaint.id));
    assert_eq!(
        pending[1].event.record.note.as_deref(),
        Some("نعتذر عن ذلك")
    );
    assert_eq!(pending[2].ticket.status, Status::Resolved);
    let keys: BTreeSet<_> = pending.iter().map(|e| e.idempotency_key.clone()).collect();
    assert_eq!(
        keys.len(),
        3,
        "each push has its own stable idempotency key"
    );
    let status = h.store.outbox_status().await.unwrap();
    assert_eq!(
        (status.pending, status.leased, status.dead, status.delivered),
        (3, 0, 0, 0)
    );
    assert!(status.oldest_pending.is_some());
}

pub async fn claims_keep_each_tickets_order_and_expired_leases_move_on(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::ticket::Visibility;
    use balagh::store::PushOutcome;
    use std::time::Duration;
    let a = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    let b = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    h.store
        .apply_action(ctx(), a.id, None, comment("1", Visibility::Public))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let first = h.store.claim_outbox("worker-1", lease, 10).await.unwrap();
    // One entry per ticket: a's reply waits behind a's creation.
    let tickets: Vec<_> = first.iter().map(|e| e.ticket_id).collect();
    assert_eq!(tickets, [a.id, b.id]);
    assert!(
        h.store
            .claim_outbox("worker-2", lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.store.outbox_status().await.unwrap().leased, 2);
    assert!(
        h.store
            .record_push_outcome(first[0].id, "worker-1", PushOutcome::Delivered)
            .await
            .unwrap()
    );
    let next = h.store.claim_outbox("worker-2", lease, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].ticket_id, a.id);
    // worker-1 stalls past its lease on b: worker-3 takes it over, and the stale outcome of
    // worker-1 is refused.
    clock.advance_micros(31 * 1_000_000);
    let taken_over = h.store.claim_outbox("worker-3", lease, 10).await.unwrap();
    let ids: Vec<_> = taken_over.iter().map(|e| e.id).collect();
    assert!(ids.contains(&first[1].id), "{ids:?}");
    assert!(
        !h.store
            .record_push_outcome(first[1].id, "worker-1", PushOutcome::Delivered)
            .await
            .unwrap()
    );
    assert!(
        h.store
            .record_push_outcome(first[1].id, "worker-3", PushOutcome::Delivered)
            .await
            .unwrap()
    );
    assert_eq!(h.store.outbox_status().await.unwrap().delivered, 2);
    // Upkeep deletes delivered pushes older than its cut-off, and nothing else.
    let before = h.store.outbox_status().await.unwrap();
    assert!(before.pending + before.leased > 0, "{before:?}");
    assert_eq!(
        h.store
            .prune_delivered_pushes(Timestamp::from_micros(0))
            .await
            .unwrap(),
        0,
        "none was delivered that long ago"
    );
    clock.advance_micros(1);
    assert_eq!(
        h.store.prune_delivered_pushes(clock.now()).await.unwrap(),
        2
    );
    let after = h.store.outbox_status().await.unwrap();
    assert_eq!(after.delivered, 0);
    assert_eq!(
        (after.pending, after.leased, after.dead),
        (before.pending, before.leased, before.dead),
        "only delivered entries go"
    );
}

pub async fn retries_wait_their_time_and_dead_letters_block_until_redriven(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::ticket::Visibility;
    use balagh::store::PushOutcome;
    use std::time::Duration;
    let t = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    h.store
        .apply_action(ctx(), t.id, None, comment("1", Visibility::Public))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let create = h
        .store
        .claim_outbox("w", lease, 10)
        .await
        .unwrap()
        .remove(0);
    let in_a_minute = Timestamp::from_micros(clock_now(&clock) + 60_000_000);
    assert!(
        h.store
            .record_push_outcome(
                create.id,
                "w",
                PushOutcome::RetryAt {
                    at: in_a_minute,
                    error: "503".into()
                }
            )
            .await
            .unwrap()
    );
    assert!(
        h.store
            .claim_outbox("w", lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    clock.advance_micros(61_000_000);
    let again = h.store.claim_outbox("w", lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].n_attempts), (create.id, 1));
    assert_eq!(again[0].last_error.as_deref(), Some("503"));
    assert!(
        h.store
            .record_push_outcome(
                create.id,
                "w",
                PushOutcome::Dead {
                    error: "422 unknown category".into()
                }
            )
            .await
            .unwrap()
    );
    // The reply must not overtake the dead creation.
    assert!(
        h.store
            .claim_outbox("w", lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let dead = h.store.list_outbox(OutboxState::Dead, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].n_attempts, 2);
    assert!(h.store.redrive_outbox(dead[0].id).await.unwrap());
    assert!(
        !h.store.redrive_outbox(dead[0].id).await.unwrap(),
        "only dead entries are re-driven"
    );
    let redriven = h.store.claim_outbox("w", lease, 10).await.unwrap();
    assert_eq!((redriven[0].id, redriven[0].n_attempts), (create.id, 0));
}

pub async fn outcomes_recorded_together_are_fenced_each_by_its_own_lease(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::ticket::Visibility;
    use balagh::store::PushOutcome;
    use std::time::Duration;
    let a = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    let b = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    let c = h.store.create_ticket(ctx(), complaint()).await.unwrap();
    h.store
        .apply_action(ctx(), a.id, None, comment("1", Visibility::Public))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let claimed = h.store.claim_outbox("worker-1", lease, 10).await.unwrap();
    let tickets: Vec<_> = claimed.iter().map(|e| e.ticket_id).collect();
    assert_eq!(tickets, [a.id, b.id, c.id]);
    // worker-1 stalls past its leases; worker-2 takes over a's creation only.
    clock.advance_micros(31 * 1_000_000);
    let taken_over = h.store.claim_outbox("worker-2", lease, 1).await.unwrap();
    assert_eq!(taken_over[0].id, claimed[0].id);
    assert!(
        h.store
            .record_push_outcomes("worker-1", vec![])
            .await
            .unwrap()
            .is_empty()
    );
    let in_a_minute = Timestamp::from_micros(clock_now(&clock) + 60_000_000);
    let recorded = h
        .store
        .record_push_outcomes(
            "worker-1",
            vec![
                (claimed[0].id, PushOutcome::Delivered),
                (
                    claimed[1].id,
                    PushOutcome::RetryAt {
                        at: in_a_minute,
                        error: "503".into(),
                    },
                ),
                (
                    claimed[2].id,
                    PushOutcome::Dead {
                        error: "422 unknown category".into(),
                    },
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        recorded,
        [false, true, true],
        "the outcome of the entry worker-2 took over is not recorded; the others are"
    );
    let status = h.store.outbox_status().await.unwrap();
    assert_eq!(
        (status.pending, status.leased, status.dead, status.delivered),
        (3, 1, 1, 0),
        "a's creation is still worker-2's, b waits for its retry, c is dead, a's reply waits"
    );
    let dead = h.store.list_outbox(OutboxState::Dead, 0, 10).await.unwrap();
    assert_eq!((dead[0].id, dead[0].n_attempts), (claimed[2].id, 1));
    assert_eq!(dead[0].last_error.as_deref(), Some("422 unknown category"));
    let pending = h
        .store
        .list_outbox(OutboxState::Pending, 0, 10)
        .await
        .unwrap();
    let b_entry = pending.iter().find(|e| e.id == claimed[1].id).unwrap();
    assert_eq!(
        (
            b_entry.n_attempts,
            b_entry.next_attempt_at,
            b_entry.last_error.as_deref()
        ),
        (1, in_a_minute, Some("503"))
    );
    assert!(
        h.store
            .record_push_outcomes("worker-2", vec![(claimed[0].id, PushOutcome::Delivered)])
            .await
            .unwrap()[0]
    );
    // a's creation is delivered: its reply is next; b is not due for a minute.
    let next = h.store.claim_outbox("worker-2", lease, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].ticket_id, a.id);
}

pub async fn concurrent_workers_never_share_an_entry(h: Harness) {
    use std::time::Duration;
    for _ in 0..60 {
        h.store.create_ticket(ctx(), complaint()).await.unwrap();
    }
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let store = h.store.clone();
        workers.spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..10 {
                let claimed = store
                    .claim_outbox(&format!("worker-{w}"), Duration::from_secs(60), 7)
                    .await
                    .unwrap();
                mine.extend(claimed.into_iter().map(|e| e.id));
            }
            mine
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = workers.join_next().await {
        all.extend(mine.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "no entry leased twice");
    assert_eq!(unique.len(), 60);
}

fn platform_change(
    change_id: &str,
    case_id: &str,
    case_version: i64,
    new_ticket: Option<NewTicket>,
    action: Option<Action>,
) -> InboundChange {
    InboundChange {
        change_id: change_id.into(),
        case_id: case_id.into(),
        case_version,
        new_ticket,
        action,
        fallback: None,
        problem: None,
    }
}

fn filed_on_platform() -> NewTicket {
    NewTicket {
        channel: Channel::NationalPlatform,
        ..complaint()
    }
}

/// A change the registry refuses in the middle of a page (a filed case whose category does
/// not exist) is refused alone: the changes around it are applied as if it were not there,
/// and the reference it would have taken goes to the next ticket.
pub async fn a_change_refused_mid_page_is_rolled_back_alone(h: Harness) {
    use balagh::store::InboundOutcome as O;
    let store = h.store.clone();
    let mut unknown = filed_on_platform();
    unknown.category = Code::parse("category", "no_such_category").unwrap();
    let page = vec![
        platform_change("ch-a", "CASE-A", 1, Some(filed_on_platform()), None),
        platform_change("ch-b", "CASE-B", 1, Some(unknown), None),
        platform_change("ch-c", "CASE-C", 1, Some(filed_on_platform()), None),
        // Seen earlier in the page: a duplicate, also when the page is applied twice over.
        platform_change("ch-a", "CASE-A", 1, Some(filed_on_platform()), None),
    ];
    let outcomes = store
        .apply_platform_changes("national-platform", page, Some("cursor-1"))
        .await
        .unwrap();
    let (O::Created { reference: a, .. }, O::Refused { .. }, O::Created { reference: c, .. }) =
        (&outcomes[0], &outcomes[1], &outcomes[2])
    else {
        panic!("created, refused, created: {outcomes:?}");
    };
    assert_eq!(outcomes[3], O::Duplicate);
    let number = |r: &balagh::domain::values::ReferenceNumber| {
        r.to_string()
            .rsplit('-')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(number(c), number(a) + 1, "{a} then {c}: no reference lost");
    assert_eq!(store.ticket_for_case("CASE-B").await.unwrap(), None);
    assert!(store.ticket_for_case("CASE-A").await.unwrap().is_some());
    assert!(store.ticket_for_case("CASE-C").await.unwrap().is_some());
    let state = store.pull_state().await.unwrap();
    assert_eq!(state.cursor.as_deref(), Some("cursor-1"));
    assert_eq!(state.n_changes, 4);
    // The refused change was recorded: sent again, it is a duplicate, not refused anew.
    let again = store
        .apply_platform_changes(
            "national-platform",
            vec![platform_change(
                "ch-b",
                "CASE-B",
                1,
                Some(filed_on_platform()),
                None,
            )],
            Some("cursor-2"),
        )
        .await
        .unwrap();
    assert_eq!(again, [O::Duplicate]);
}

pub async fn platform_changes_apply_once_in_order_and_move_the_cursor_with_them(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::lifecycle::EventKind;
    use balagh::domain::ticket::{Satisfaction, Visibility};
    use balagh::store::InboundOutcome as O;
    let store = h.store.clone();
    assert_eq!(store.pull_state().await.unwrap().cursor, None);

    let page_1 = vec![
        platform_change("ch-1", "CASE-1", 1, Some(filed_on_platform()), None),
        InboundChange {
            problem: Some("the case does not make a valid ticket: subject: empty".into()),
            ..platform_change("ch-2", "CASE-2", 1, None, None)
        },
        platform_change(
            "ch-3",
            "CASE-1",
            2,
            Some(filed_on_platform()),
            Some(comment("تفاصيل إضافية من المواطن", Visibility::Internal)),
        ),
        // The feed delivers at least once, also within a page.
        platform_change("ch-1", "CASE-1", 1, Some(filed_on_platform()), None),
    ];
    let outcomes = store
        .apply_platform_changes("national-platform", page_1, Some("cursor-1"))
        .await
        .unwrap();
    let O::Created { ticket_id, .. } = outcomes[0].clone() else {
        panic!("the filed case became a ticket: {outcomes:?}");
    };
    assert!(matches!(outcomes[1], O::Refused { .. }), "{outcomes:?}");
    assert_eq!(outcomes[2], O::Applied { ticket_id });
    assert_eq!(outcomes[3], O::Duplicate);
    let state = store.pull_state().await.unwrap();
    assert_eq!(state.cursor.as_deref(), Some("cursor-1"));
    assert_eq!(state.n_changes, 4);
    assert_eq!(
        store.ticket_for_case("CASE-1").await.unwrap(),
        Some(ticket_id)
    );
    assert_eq!(store.ticket_for_case("CASE-2").await.unwrap(), None);

    let page_2 = vec![
        // Older than what CASE-1 already reflects.
        platform_change(
            "ch-4",
            "CASE-1",
            2,
            None,
            Some(comment("قديم", Visibility::Internal)),
        ),
        // A reopen request for a ticket that is still open: kept as a comment instead.
        InboundChange {
            fallback: Some(comment("طلب إعادة فتح", Visibility::Internal)),
            ..platform_change(
                "ch-5",
                "CASE-1",
                3,
                None,
                Some(Action::Reopen {
                    reason: "لم تحل".into(),
                }),
            )
        },
        platform_change(
            "ch-6",
            "CASE-9",
            4,
            None,
            Some(comment("?", Visibility::Internal)),
        ),
    ];
    let outcomes = store
        .apply_platform_changes("national-platform", page_2, Some("cursor-2"))
        .await
        .unwrap();
    assert_eq!(outcomes[0], O::Stale);
    assert!(
        matches!(&outcomes[1], O::AppliedFallback { ticket_id: t, .. } if *t == ticket_id),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], O::UnknownCase);

    // The cursor and the changes are durable together.
    let store = (h.reopen)(clock.clone()).await;
    assert_eq!(
        store.pull_state().await.unwrap().cursor.as_deref(),
        Some("cursor-2")
    );
    let events = store
        .list_ticket_events(ticket_id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.record.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Commented,
            EventKind::Commented
        ]
    );
    assert!(events.iter().all(|e| e.actor == "national-platform"));
    let ticket = store.get_ticket(ticket_id).await.unwrap().unwrap();
    assert_eq!(ticket.channel, Channel::NationalPlatform);
    assert_eq!(ticket.status, Status::New);
    // Taking the case in owes the platform its receipt.
    let pending = store
        .list_outbox(OutboxState::Pending, 0, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].kind,
        balagh::domain::sync::PushKind::AcknowledgeReceipt
    );

    // Once resolved, the citizen's rating lands on the ticket.
    store
        .apply_action(
            ctx(),
            ticket_id,
            None,
            Action::Resolve {
                resolution: Resolution {
                    code: ResolutionCode::Fixed,
                    text: "تم".into(),
                },
            },
        )
        .await
        .unwrap();
    let rating =
        Satisfaction::parse("rating", 4, Some("شكراً"), Timestamp::from_micros(JUNE_2026)).unwrap();
    let outcomes = store
        .apply_platform_changes(
            "national-platform",
            vec![platform_change(
                "ch-7",
                "CASE-1",
                5,
                None,
                Some(Action::Rate {
                    satisfaction: rating.clone(),
                }),
            )],
            Some("cursor-3"),
        )
        .await
        .unwrap();
    assert_eq!(outcomes, [O::Applied { ticket_id }]);
    let ticket = store.get_ticket(ticket_id).await.unwrap().unwrap();
    assert_eq!(ticket.satisfaction, Some(rating));
    assert_eq!(store.pull_state().await.unwrap().n_changes, 8);

    // Once its inbox record is pruned, a change delivered yet again is still not applied
    // twice: its case version is not newer than what the ticket reflects.
    clock.advance_micros(1_000_000);
    let pruned = store
        .prune_platform_inbox(Timestamp::from_micros(clock_now(&clock)))
        .await
        .unwrap();
    assert_eq!(
        pruned, 7,
        "every recorded change (the duplicate was never recorded)"
    );
    let outcomes = store
        .apply_platform_changes(
            "national-platform",
            vec![platform_change(
                "ch-3",
                "CASE-1",
                2,
                None,
                Some(comment("تفاصيل إضافية من المواطن", Visibility::Internal)),
            )],
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcomes, [O::Stale]);
}

/// Instantiates every conformance test for one backend.
pub async fn settings_keep_every_version_and_refuse_a_stale_one(h: Harness) {
    use balagh::store::SettingKey;
    let store = &h.store;
    assert_eq!(store.get_setting(SettingKey::Calendar).await.unwrap(), None);
    let first = store
        .put_setting(ctx(), SettingKey::Calendar, "{\"a\":1}".into(), Some(0))
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.actor, "tester");
    // A change made from an old version is refused and writes nothing.
    match store
        .put_setting(ctx(), SettingKey::Calendar, "{\"b\":2}".into(), Some(0))
        .await
    {
        Err(StoreError::SettingVersionMismatch { current_version: 1 }) => {}
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(
        store.get_setting(SettingKey::Calendar).await.unwrap(),
        Some(first.clone())
    );
    let second = store
        .put_setting(ctx(), SettingKey::Calendar, "{\"b\":2}".into(), Some(1))
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    // A retried request answers the first time's answer and writes nothing more.
    let third = store
        .put_setting(
            ctx_with("s-1", 7),
            SettingKey::Calendar,
            "{\"c\":3}".into(),
            None,
        )
        .await
        .unwrap();
    let again = store
        .put_setting(
            ctx_with("s-1", 7),
            SettingKey::Calendar,
            "{\"c\":3}".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!((third.version, again.version), (3, 3));
    // Keys are independent.
    assert_eq!(store.get_setting(SettingKey::Sla).await.unwrap(), None);
    let trail = store
        .list_setting_changes(SettingKey::Calendar, None, 10)
        .await
        .unwrap();
    assert_eq!(
        trail.iter().map(|s| s.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert_eq!(trail[2].value, "{\"a\":1}");
    let page = store
        .list_setting_changes(SettingKey::Calendar, Some(3), 1)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|s| s.version).collect::<Vec<_>>(), [2]);
    store.close().await;
    let reopened = (h.reopen)(ManualClock::new(Timestamp::from_micros(JUNE_2026))).await;
    assert_eq!(
        reopened
            .get_setting(SettingKey::Calendar)
            .await
            .unwrap()
            .map(|s| s.version),
        Some(3)
    );
}

pub async fn the_sla_projection_finds_alerts_due_and_tickets_at_risk(h: Harness) {
    use balagh::domain::sla::DeadlineKind;
    use balagh::store::{SlaProgress, SlaRow};
    let store = &h.store;
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(
            store
                .create_ticket(ctx(), new_ticket("pothole"))
                .await
                .unwrap(),
        );
    }
    let row = |i: usize, directorate: &str, alert: Option<i64>, due: Option<i64>| SlaRow {
        ticket_id: tickets[i].id,
        reference: tickets[i].reference,
        directorate: Some(Code::parse("d", directorate).unwrap()),
        next_alert_time: alert.map(Timestamp::from_micros),
        next_due_time: due.map(Timestamp::from_micros),
        next_due_kind: due.map(|_| DeadlineKind::Resolution),
    };
    let progress = SlaProgress {
        cursor: 5,
        calendar_version: 1,
        sla_version: 2,
    };
    assert_eq!(store.sla_progress().await.unwrap(), SlaProgress::default());
    store
        .save_sla_projection(
            vec![
                row(0, "roads", Some(100), Some(200)),
                row(1, "parks", Some(150), Some(300)),
                row(2, "roads", None, None),
            ],
            Vec::new(),
            Some(progress),
        )
        .await
        .unwrap();
    assert_eq!(store.sla_progress().await.unwrap(), progress);
    let ids = |rows: Vec<SlaRow>| rows.into_iter().map(|r| r.ticket_id).collect::<Vec<_>>();
    let due = |t| store.sla_alerts_due(Timestamp::from_micros(t), 100);
    assert!(ids(due(99).await.unwrap()).is_empty());
    assert_eq!(ids(due(120).await.unwrap()), [tickets[0].id]);
    assert_eq!(
        ids(due(1000).await.unwrap()),
        [tickets[0].id, tickets[1].id]
    );
    let roads = Some(Code::parse("d", "roads").unwrap());
    let at_risk = store
        .sla_at_risk(roads.clone(), Timestamp::from_micros(1000), 100)
        .await
        .unwrap();
    assert_eq!(at_risk, vec![row(0, "roads", Some(100), Some(200))]);
    let all = store
        .sla_at_risk(None, Timestamp::from_micros(250), 100)
        .await
        .unwrap();
    assert_eq!(ids(all), [tickets[0].id]);
    // An idle row leaves the projection; an update replaces a row.
    store
        .save_sla_projection(
            vec![
                row(0, "roads", None, None),
                row(1, "parks", Some(400), Some(500)),
            ],
            Vec::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(ids(due(1000).await.unwrap()), [tickets[1].id]);
    assert_eq!(store.sla_progress().await.unwrap(), progress);
    assert!(
        store
            .sla_at_risk(roads, Timestamp::from_micros(1000), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn ticket_facts_are_replaced_per_ticket_and_read_by_creation_period(h: Harness) {
    use balagh::domain::kpi::TicketFacts;
    use balagh::domain::ticket::SupportLine;
    use balagh::domain::values::EmployeeId;
    use balagh::store::{SlaProgress, SlaRow};
    let store = &h.store;
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(
            store
                .create_ticket(ctx(), new_ticket("pothole"))
                .await
                .unwrap(),
        );
    }
    let code = |c: &str| Code::parse("c", c).unwrap();
    // Every column set, and every optional one empty.
    let full = |i: usize, created: i64| TicketFacts {
        ticket_id: tickets[i].id,
        create_time: Timestamp::from_micros(created),
        ticket_type: TicketType::Complaint,
        channel: Channel::NationalPlatform,
        category: code("pothole"),
        directorate: Some(code("roads")),
        outlet: Some(code("bawshar_outlet")),
        wilayat: Some(code("bawshar")),
        support_line: Some(SupportLine::Second),
        assignee: Some(EmployeeId::parse("a", "emp.42").unwrap()),
        status: Status::Resolved,
        first_response_seconds: Some(1800),
        resolution_seconds: Some(25_200),
        first_response_met: Some(true),
        resolution_met: Some(false),
        n_escalations: 2,
        reopened: true,
        transferred: false,
        rejected: false,
        resolved_at_line_1: true,
        satisfaction_score: Some(4),
        resolve_time: Some(Timestamp::from_micros(created + 10)),
        settle_time: Some(Timestamp::from_micros(created + 20)),
    };
    let bare = |i: usize, created: i64| TicketFacts {
        ticket_id: tickets[i].id,
        create_time: Timestamp::from_micros(created),
        ticket_type: TicketType::Suggestion,
        channel: Channel::App,
        category: code("pothole"),
        directorate: None,
        outlet: None,
        wilayat: None,
        support_line: None,
        assignee: None,
        status: Status::New,
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
        settle_time: None,
    };
    store
        .save_ticket_facts(vec![full(0, 100), bare(1, 200), bare(2, 300)])
        .await
        .unwrap();
    let read = |from: i64, to: i64| {
        store.ticket_facts(Timestamp::from_micros(from), Timestamp::from_micros(to))
    };
    assert_eq!(
        read(0, 1000).await.unwrap(),
        [full(0, 100), bare(1, 200), bare(2, 300)]
    );
    // From is inclusive, to exclusive.
    assert_eq!(read(100, 300).await.unwrap(), [full(0, 100), bare(1, 200)]);
    assert!(read(301, 1000).await.unwrap().is_empty());
    // A replay replaces a ticket's facts, also when written with the projection.
    let progress = SlaProgress {
        cursor: 9,
        calendar_version: 1,
        sla_version: 1,
    };
    let idle = SlaRow {
        ticket_id: tickets[1].id,
        reference: tickets[1].reference,
        directorate: None,
        next_alert_time: None,
        next_due_time: None,
        next_due_kind: None,
    };
    store
        .save_sla_projection(vec![idle], vec![full(1, 200)], Some(progress))
        .await
        .unwrap();
    assert_eq!(store.sla_progress().await.unwrap(), progress);
    assert_eq!(
        read(0, 1000).await.unwrap(),
        [full(0, 100), full(1, 200), bare(2, 300)]
    );

    // Counted as read, in parts of the period: the same figures as the facts aggregated at
    // once, for every grouping of the tally, and the period's bounds kept across the parts
    // ([100, 300) is read as [100, 200) and [200, 300)).
    let calendar = Arc::new(BusinessCalendar::muscat_default());
    let as_of = Timestamp::from_micros(1000);
    let groupings = [
        KpiGrouping::None,
        KpiGrouping::Directorate,
        KpiGrouping::Channel,
    ];
    for (from, to) in [
        (0, 1000),
        (100, 300),
        (101, 300),
        (0, 101),
        (300, 301),
        (301, 1000),
    ] {
        let facts = read(from, to).await.unwrap();
        let tally = KpiTally::new(&groupings, as_of, calendar.clone());
        let tallied = store
            .tally_ticket_facts(
                Timestamp::from_micros(from),
                Timestamp::from_micros(to),
                tally,
            )
            .await
            .unwrap()
            .finish();
        let expected: Vec<_> = groupings
            .iter()
            .map(|g| aggregate(&facts, *g, as_of, &calendar))
            .collect();
        assert_eq!(tallied, expected, "[{from}, {to})");
    }
}

fn assign_to(employee: &str) -> Action {
    Action::Assign {
        assignment: balagh::domain::ticket::Assignment {
            directorate: Some(Code::parse("d", "roads").unwrap()),
            outlet: None,
            assignee: Some(balagh::domain::values::EmployeeId::parse("e", employee).unwrap()),
            support_line: Some(balagh::domain::ticket::SupportLine::Third),
        },
        note: None,
    }
}

fn resolve_action() -> Action {
    Action::Resolve {
        resolution: Resolution {
            code: ResolutionCode::Fixed,
            text: "done".into(),
        },
    }
}

fn review_of(
    ticket: balagh::domain::values::TicketId,
    employee: &str,
    scores: [i64; 4],
) -> balagh::domain::quality::NewQualityReview {
    use balagh::domain::quality::{NewQualityReview, Rubric, ScoreInput};
    let criteria = ["accuracy", "completeness", "courtesy", "timeliness"];
    let scores: Vec<ScoreInput> = criteria
        .iter()
        .zip(scores)
        .map(|(c, score)| ScoreInput {
            criterion: (*c).to_owned(),
            score,
        })
        .collect();
    NewQualityReview::parse(
        &Rubric::default_rubric(),
        1,
        &ticket.to_string(),
        employee,
        &scores,
        "good work",
    )
    .unwrap()
}

pub async fn quality_reviews_need_a_handler_come_once_and_leave_the_sample(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::values::EmployeeId;
    use balagh::store::QualityReviewQuery;
    let store = &h.store;
    let emp = |e: &str| EmployeeId::parse("e", e).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            store
                .create_ticket(ctx(), new_ticket("street_lighting"))
                .await
                .unwrap()
                .id,
        );
    }
    // 0: emp-a, then emp-b, resolved. 1: emp-a, resolved. 2: emp-a, still open.
    // 3: emp-b, resolved.
    for (i, employees) in [
        vec!["emp-a", "emp-b"],
        vec!["emp-a"],
        vec!["emp-a"],
        vec!["emp-b"],
    ]
    .into_iter()
    .enumerate()
    {
        for e in employees {
            store
                .apply_action(ctx(), ids[i], None, assign_to(e))
                .await
                .unwrap();
        }
    }
    clock.advance_micros(3_600_000_000);
    for i in [0, 1, 3] {
        store
            .apply_action(ctx(), ids[i], None, resolve_action())
            .await
            .unwrap();
    }
    let from = Timestamp::from_micros(JUNE_2026);
    let to = Timestamp::from_micros(JUNE_2026 + 86_400_000_000);
    let sample = |e: &'static str, n: u32, seed: u64| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .sample_tickets_for_review(emp(e), from, to, n, seed)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id.to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    let sorted = |picked: &[usize]| {
        let mut out: Vec<String> = picked.iter().map(|i| ids[*i].to_string()).collect();
        out.sort();
        out
    };
    assert_eq!(
        sample("emp-a", 10, 1).await,
        sorted(&[0, 1]),
        "settled, handled"
    );
    assert_eq!(sample("emp-b", 10, 1).await, sorted(&[0, 3]));
    assert!(sample("emp-c", 10, 1).await.is_empty());
    // One of two, the same one for the same seed.
    let one = sample("emp-a", 1, 42).await;
    assert_eq!(one.len(), 1);
    assert_eq!(sample("emp-a", 1, 42).await, one);
    // Outside the period: nothing.
    let later = Timestamp::from_micros(JUNE_2026 + 2 * 86_400_000_000);
    assert!(
        store
            .sample_tickets_for_review(emp("emp-a"), to, later, 10, 1)
            .await
            .unwrap()
            .is_empty()
    );

    // emp-a handled ticket 0 before it was reassigned: reviewable.
    let review = store
        .record_quality_review(ctx(), review_of(ids[0], "emp-a", [5, 4, 3, 2]))
        .await
        .unwrap();
    assert_eq!(review.reviewer, "tester");
    assert_eq!(review.weighted_score, 62.5);
    assert_eq!(review.review_time, balagh::domain::Clock::now(&clock));
    assert_eq!(
        sample("emp-a", 10, 1).await,
        sorted(&[1]),
        "reviewed left the sample"
    );
    assert_eq!(
        sample("emp-b", 10, 1).await,
        sorted(&[0, 3]),
        "per employee"
    );

    assert!(matches!(
        store
            .record_quality_review(ctx(), review_of(ids[0], "emp-a", [1, 1, 1, 1]))
            .await,
        Err(StoreError::QualityReviewExists)
    ));
    match store
        .record_quality_review(ctx(), review_of(ids[2], "emp-c", [3, 3, 3, 3]))
        .await
    {
        Err(StoreError::UnknownReference(v)) => assert_eq!(v.field, "employee_id"),
        other => panic!("expected a refusal of employee_id, got {other:?}"),
    }
    let unknown =
        balagh::domain::values::TicketId::parse("t", "0190f5c2-7a3b-7c4d-8e5f-60718293a4b5")
            .unwrap();
    assert!(matches!(
        store
            .record_quality_review(ctx(), review_of(unknown, "emp-a", [3, 3, 3, 3]))
            .await,
        Err(StoreError::TicketNotFound)
    ));
    // A retry with the same request id gets the first answer, not a duplicate error.
    let first = store
        .record_quality_review(
            ctx_with("review-1", 1),
            review_of(ids[3], "emp-b", [4, 4, 4, 4]),
        )
        .await
        .unwrap();
    let again = store
        .record_quality_review(
            ctx_with("review-1", 1),
            review_of(ids[3], "emp-b", [4, 4, 4, 4]),
        )
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.weighted_score, 75.0);

    let all = |employee: Option<&str>, after: Option<i64>, limit: u32| QualityReviewQuery {
        employee: employee.map(emp),
        from: None,
        to: None,
        after_position: after,
        limit,
    };
    let listed = store
        .list_quality_reviews(&all(None, None, 10))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "refused reviews left nothing behind");
    assert_eq!(listed[0].review, review);
    assert_eq!(listed[1].review, first);
    let page = store
        .list_quality_reviews(&all(None, None, 1))
        .await
        .unwrap();
    let rest = store
        .list_quality_reviews(&all(None, Some(page[0].position), 10))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].review.employee_id.as_str(), "emp-b");
    let of_b = store
        .list_quality_reviews(&all(Some("emp-b"), None, 10))
        .await
        .unwrap();
    assert_eq!(of_b.len(), 1);
    let in_future = store
        .list_quality_reviews(&QualityReviewQuery {
            from: Some(to),
            ..all(None, None, 10)
        })
        .await
        .unwrap();
    assert!(in_future.is_empty());
}

const DAY: i64 = 86_400_000_000;

/// A pothole report from a beneficiary reached at `phone` (and `civil_id`), or by e-mail only
/// when `phone` is `None`.
fn reported_by(phone: Option<&str>, civil_id: Option<&str>) -> NewTicket {
    use balagh::domain::values::{CivilId, Email};
    NewTicket {
        reporter: Reporter::identified(
            "reporter",
            "Citizen".into(),
            phone.map(|p| PhoneNumber::parse("phone", p).unwrap()),
            phone
                .is_none()
                .then(|| Email::parse("email", "citizen@example.om").unwrap()),
            civil_id.map(|c| CivilId::parse("civil_id", c).unwrap()),
        )
        .unwrap(),
        ..new_ticket("pothole")
    }
}

fn anonymous_suggestion() -> NewTicket {
    NewTicket {
        ticket_type: TicketType::Suggestion,
        reporter: Reporter::anonymous(),
        ..new_ticket("pothole")
    }
}

/// Creates and resolves a ticket; its id.
async fn settled_ticket(
    store: &Arc<dyn Store>,
    new: NewTicket,
) -> balagh::domain::values::TicketId {
    let ticket = store.create_ticket(ctx(), new).await.unwrap();
    store
        .apply_action(ctx(), ticket.id, None, resolve_action())
        .await
        .unwrap();
    ticket.id
}

fn rating(score: i64, clock: &ManualClock) -> balagh::domain::ticket::Satisfaction {
    balagh::domain::ticket::Satisfaction::parse(
        "rating",
        score,
        None,
        Timestamp::from_micros(clock_now(clock)),
    )
    .unwrap()
}

fn outcomes_of(
    requests: &[balagh::domain::satisfaction::SurveyRequest],
) -> Vec<(
    balagh::domain::satisfaction::SurveyChannel,
    balagh::domain::satisfaction::SurveyOutcome,
)> {
    requests.iter().map(|r| (r.channel, r.outcome)).collect()
}

pub async fn call_backs_follow_the_survey_policy_and_a_refusal_writes_nothing(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::lifecycle::LifecycleError;
    use balagh::domain::satisfaction::{
        SurveyChannel as Ch, SurveyOutcome as Out, SurveyPolicy, SurveyRefusal, UnratedCallBack,
    };
    let store = h.store.clone();
    let policy = SurveyPolicy::new(90, 3).unwrap();
    let first = settled_ticket(&store, reported_by(Some("99100001"), None)).await;
    // The same beneficiary, the phone written another way.
    let second = settled_ticket(&store, reported_by(Some("+968 9910 0001"), None)).await;
    let open = store
        .create_ticket(ctx(), reported_by(Some("99100002"), None))
        .await
        .unwrap()
        .id;
    let anonymous = settled_ticket(&store, anonymous_suggestion()).await;
    let by_mail = settled_ticket(&store, reported_by(None, None)).await;

    // A ticket that is not settled takes no call-back.
    let refused = store
        .record_unrated_call_back(ctx(), open, UnratedCallBack::NoAnswer, policy)
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Lifecycle(LifecycleError::NotAllowed { .. }))
        ),
        "{refused:?}"
    );
    // Nobody to call.
    assert!(matches!(
        store
            .record_unrated_call_back(ctx(), anonymous, UnratedCallBack::Declined, policy)
            .await,
        Err(StoreError::Survey(SurveyRefusal::Anonymous))
    ));
    assert!(matches!(
        store
            .record_unrated_call_back(ctx(), by_mail, UnratedCallBack::NoAnswer, policy)
            .await,
        Err(StoreError::Survey(SurveyRefusal::NoPhone))
    ));

    // No answer, twice: asking again about the same ticket is allowed.
    let asked_at = clock_now(&clock);
    let attempt = store
        .record_unrated_call_back(ctx(), first, UnratedCallBack::NoAnswer, policy)
        .await
        .unwrap();
    assert_eq!(
        (
            attempt.ticket_id,
            attempt.ask_time.as_micros(),
            attempt.actor.as_str()
        ),
        (first, asked_at, "tester")
    );
    clock.advance_micros(DAY);
    let last_asked_at = clock_now(&clock);
    store
        .record_unrated_call_back(ctx(), first, UnratedCallBack::NoAnswer, policy)
        .await
        .unwrap();

    // Another ticket of the same beneficiary: refused, with the time they may be asked again,
    // and nothing written (neither the rating nor a ledger entry).
    let before = store.get_ticket(second).await.unwrap().unwrap();
    for refused in [
        store
            .rate_on_call_back(ctx(), second, None, rating(4, &clock), policy)
            .await
            .map(drop),
        store
            .record_unrated_call_back(ctx(), second, UnratedCallBack::Declined, policy)
            .await
            .map(drop),
    ] {
        match refused {
            Err(StoreError::Survey(SurveyRefusal::AskedRecently {
                last_ask_time,
                last_channel,
                ask_again_time,
            })) => {
                assert_eq!(last_ask_time.as_micros(), last_asked_at);
                assert_eq!(last_channel, Ch::CallBack);
                assert_eq!(ask_again_time.as_micros(), last_asked_at + 90 * DAY);
            }
            other => panic!("expected BENEFICIARY_ASKED_RECENTLY, got {other:?}"),
        }
    }
    assert_eq!(store.get_ticket(second).await.unwrap().unwrap(), before);
    assert_eq!(
        store.list_survey_requests(second, 100).await.unwrap(),
        Some(vec![])
    );

    // The beneficiary answers on a third call and rates: rating and ledger entry together.
    let (rated, event) = store
        .rate_on_call_back(ctx(), first, None, rating(5, &clock), policy)
        .await
        .unwrap();
    assert_eq!(rated.satisfaction.map(|s| s.score()), Some(5));
    assert_eq!(
        event.record.kind,
        balagh::domain::lifecycle::EventKind::Rated
    );
    let ledger = store
        .list_survey_requests(first, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcomes_of(&ledger),
        [
            (Ch::CallBack, Out::NoAnswer),
            (Ch::CallBack, Out::NoAnswer),
            (Ch::CallBack, Out::Rated)
        ]
    );
    // A stale etag refuses the rating before anything is written.
    assert!(matches!(
        store
            .rate_on_call_back(ctx(), first, Some(1), rating(3, &clock), policy)
            .await,
        Err(StoreError::EtagMismatch { .. })
    ));
    assert_eq!(
        store
            .list_survey_requests(first, 100)
            .await
            .unwrap()
            .unwrap()
            .len(),
        3
    );

    // A rating of an anonymous ticket is taken (the beneficiary called in); no policy applies.
    store
        .rate_on_call_back(ctx(), anonymous, None, rating(4, &clock), policy)
        .await
        .unwrap();

    // Once the quiet period after the last ask is over, the other ticket may be asked about.
    clock.set(Timestamp::from_micros(last_asked_at + 90 * DAY));
    let (rated, _) = store
        .rate_on_call_back(ctx(), second, None, rating(3, &clock), policy)
        .await
        .unwrap();
    assert_eq!(rated.satisfaction.map(|s| s.score()), Some(3));

    // An unknown ticket.
    let unknown = balagh::domain::values::TicketId::new_v7();
    assert!(matches!(
        store
            .record_unrated_call_back(ctx(), unknown, UnratedCallBack::NoAnswer, policy)
            .await,
        Err(StoreError::TicketNotFound)
    ));
    assert_eq!(
        store.list_survey_requests(unknown, 100).await.unwrap(),
        None
    );

    // The ledger is durable.
    let store = (h.reopen)(clock.clone()).await;
    assert_eq!(
        outcomes_of(
            &store
                .list_survey_requests(second, 100)
                .await
                .unwrap()
                .unwrap()
        ),
        [(Ch::CallBack, Out::Rated)]
    );
}

pub async fn a_call_back_attempt_with_a_request_id_is_recorded_once(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::satisfaction::{SurveyPolicy, UnratedCallBack};
    let store = h.store.clone();
    let policy = SurveyPolicy::default();
    let ticket = settled_ticket(&store, reported_by(Some("99100003"), None)).await;
    let first = store
        .record_unrated_call_back(
            ctx_with("attempt-1", 1),
            ticket,
            UnratedCallBack::NoAnswer,
            policy,
        )
        .await
        .unwrap();
    clock.advance_micros(DAY);
    let again = store
        .record_unrated_call_back(
            ctx_with("attempt-1", 1),
            ticket,
            UnratedCallBack::NoAnswer,
            policy,
        )
        .await
        .unwrap();
    assert_eq!(again, first, "the retry gets the first answer");
    assert!(matches!(
        store
            .record_unrated_call_back(
                ctx_with("attempt-1", 2),
                ticket,
                UnratedCallBack::Declined,
                policy
            )
            .await,
        Err(StoreError::RequestIdReused)
    ));
    assert_eq!(
        store
            .list_survey_requests(ticket, 100)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
}

pub async fn the_call_back_list_proposes_each_beneficiary_once_when_they_may_be_asked(
    h: Harness,
    clock: ManualClock,
) {
    use balagh::domain::satisfaction::{CallBackQuery, SurveyPolicy, UnratedCallBack};
    let store = h.store.clone();
    let policy = SurveyPolicy::new(30, 2).unwrap();
    let query = |clock: &ManualClock, directorate: Option<&str>| CallBackQuery {
        directorate: directorate.map(|d| Code::parse("directorate", d).unwrap()),
        settled_from: Timestamp::from_micros(clock_now(clock) - 20 * DAY),
        now: Timestamp::from_micros(clock_now(clock)),
        policy,
        limit: 50,
    };
    let listed = |candidates: Vec<balagh::domain::satisfaction::CallBackCandidate>| {
        candidates
            .into_iter()
            .map(|c| c.ticket.id)
            .collect::<Vec<_>>()
    };
    // Settled a month ago: out of the 20-day window.
    let too_old = settled_ticket(&store, reported_by(Some("99100010"), None)).await;
    clock.advance_micros(30 * DAY);
    let salim_older = settled_ticket(&store, reported_by(Some("99100011"), Some("1234567"))).await;
    clock.advance_micros(DAY);
    // Salim again, by civil ID with another phone: the same beneficiary.
    let salim_newer = settled_ticket(&store, reported_by(Some("99100012"), Some("1234567"))).await;
    clock.advance_micros(DAY);
    let aisha = settled_ticket(&store, reported_by(Some("99100013"), None)).await;
    let anonymous = settled_ticket(&store, anonymous_suggestion()).await;
    let by_mail = settled_ticket(&store, reported_by(None, None)).await;
    let mut waste = reported_by(Some("99100014"), None);
    waste.category = Code::parse("category", "waste_collection").unwrap();
    let khalid = settled_ticket(&store, waste).await;
    let rated = settled_ticket(&store, reported_by(Some("99100015"), None)).await;
    store
        .apply_action(
            ctx(),
            rated,
            None,
            Action::Rate {
                satisfaction: rating(4, &clock),
            },
        )
        .await
        .unwrap();
    let still_open = store
        .create_ticket(ctx(), reported_by(Some("99100016"), None))
        .await
        .unwrap()
        .id;
    clock.advance_micros(DAY);

    let all = store
        .call_back_candidates(&query(&clock, None))
        .await
        .unwrap();
    assert_eq!(listed(all.clone()), [khalid, aisha, salim_newer]);
    assert!(all.iter().all(|c| c.n_previous_attempts == 0));
    for left_out in [too_old, salim_older, anonymous, by_mail, rated, still_open] {
        assert!(!listed(all.clone()).contains(&left_out));
    }
    assert_eq!(
        listed(
            store
                .call_back_candidates(&query(&clock, Some("roads")))
                .await
                .unwrap()
        ),
        [aisha, salim_newer]
    );
    assert_eq!(
        listed(
            store
                .call_back_candidates(&CallBackQuery {
                    limit: 1,
                    ..query(&clock, None)
                })
                .await
                .unwrap()
        ),
        [khalid]
    );

    // Aisha does not answer: not again today, again tomorrow, then no more after two tries.
    store
        .record_unrated_call_back(ctx(), aisha, UnratedCallBack::NoAnswer, policy)
        .await
        .unwrap();
    // Salim declines: neither of his tickets comes back within the quiet period.
    store
        .record_unrated_call_back(ctx(), salim_newer, UnratedCallBack::Declined, policy)
        .await
        .unwrap();
    assert_eq!(
        listed(
            store
                .call_back_candidates(&query(&clock, None))
                .await
                .unwrap()
        ),
        [khalid]
    );
    clock.advance_micros(DAY);
    let tomorrow = store
        .call_back_candidates(&query(&clock, None))
        .await
        .unwrap();
    assert_eq!(listed(tomorrow.clone()), [khalid, aisha]);
    assert_eq!(tomorrow[1].n_previous_attempts, 1);
    store
        .record_unrated_call_back(ctx(), aisha, UnratedCallBack::NoAnswer, policy)
        .await
        .unwrap();
    clock.advance_micros(DAY);
    assert_eq!(
        listed(
            store
                .call_back_candidates(&query(&clock, None))
                .await
                .unwrap()
        ),
        [khalid]
    );

    // After the quiet period Salim may be asked again: about his older ticket, since he
    // declined the newer one. (Both are still in a window long enough.)
    clock.advance_micros(30 * DAY);
    let later = store
        .call_back_candidates(&CallBackQuery {
            settled_from: Timestamp::from_micros(clock_now(&clock) - 60 * DAY),
            ..query(&clock, Some("roads"))
        })
        .await
        .unwrap();
    assert_eq!(listed(later), [salim_older]);
}

pub async fn a_platform_rating_counts_as_asked_with_the_rating(h: Harness, clock: ManualClock) {
    use balagh::domain::satisfaction::{
        CallBackQuery, SurveyChannel as Ch, SurveyOutcome as Out, SurveyPolicy, SurveyRefusal,
    };
    use balagh::store::InboundOutcome as O;
    let store = h.store.clone();
    let policy = SurveyPolicy::default();
    let filed = NewTicket {
        channel: Channel::NationalPlatform,
        ..reported_by(Some("99100020"), None)
    };
    let outcomes = store
        .apply_platform_changes(
            "national-platform",
            vec![platform_change("ch-1", "CASE-1", 1, Some(filed), None)],
            Some("cursor-1"),
        )
        .await
        .unwrap();
    let O::Created { ticket_id, .. } = outcomes[0].clone() else {
        panic!("{outcomes:?}");
    };
    store
        .apply_action(ctx(), ticket_id, None, resolve_action())
        .await
        .unwrap();
    let local = settled_ticket(&store, reported_by(Some("99100020"), None)).await;
    clock.advance_micros(DAY);
    let taken_in_at = clock_now(&clock);
    let outcomes = store
        .apply_platform_changes(
            "national-platform",
            vec![platform_change(
                "ch-2",
                "CASE-1",
                2,
                None,
                Some(Action::Rate {
                    satisfaction: rating(2, &clock),
                }),
            )],
            Some("cursor-2"),
        )
        .await
        .unwrap();
    assert_eq!(outcomes, [O::Applied { ticket_id }]);
    let ledger = store
        .list_survey_requests(ticket_id, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes_of(&ledger), [(Ch::NationalPlatform, Out::Rated)]);
    assert_eq!(ledger[0].ask_time.as_micros(), taken_in_at);
    assert_eq!(ledger[0].actor, "national-platform");

    // The beneficiary's local ticket is not proposed, and a call-back about it is refused.
    let candidates = store
        .call_back_candidates(&CallBackQuery {
            directorate: None,
            settled_from: Timestamp::from_micros(clock_now(&clock) - 30 * DAY),
            now: Timestamp::from_micros(clock_now(&clock)),
            policy,
            limit: 50,
        })
        .await
        .unwrap();
    assert!(candidates.is_empty(), "{candidates:?}");
    assert!(matches!(
        store
            .rate_on_call_back(ctx(), local, None, rating(5, &clock), policy)
            .await,
        Err(StoreError::Survey(SurveyRefusal::AskedRecently {
            last_channel: Ch::NationalPlatform,
            ..
        }))
    ));

    // A rating that arrives when the ticket no longer takes one is kept as a comment; the
    // citizen was asked all the same. A refused change writes no ledger entry.
    store
        .apply_action(
            ctx(),
            ticket_id,
            None,
            Action::Reopen {
                reason: "عاد العطل".into(),
            },
        )
        .await
        .unwrap();
    let outcomes = store
        .apply_platform_changes(
            "national-platform",
            vec![
                InboundChange {
                    fallback: Some(comment(
                        "Rating from the national platform: 1/5",
                        balagh::domain::ticket::Visibility::Internal,
                    )),
                    ..platform_change(
                        "ch-3",
                        "CASE-1",
                        3,
                        None,
                        Some(Action::Rate {
                            satisfaction: rating(1, &clock),
                        }),
                    )
                },
                platform_change(
                    "ch-4",
                    "CASE-1",
                    4,
                    None,
                    Some(Action::Rate {
                        satisfaction: rating(1, &clock),
                    }),
                ),
            ],
            Some("cursor-3"),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcomes[0], O::AppliedFallback { .. }),
        "{outcomes:?}"
    );
    assert!(matches!(outcomes[1], O::Refused { .. }), "{outcomes:?}");
    let ledger = store
        .list_survey_requests(ticket_id, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcomes_of(&ledger),
        [
            (Ch::NationalPlatform, Out::Rated),
            (Ch::NationalPlatform, Out::Rated)
        ]
    );
}

/// Who filed a ticket is kept and filters lists (the scope of external systems), and the
/// reveals of personal data are recorded per ticket, in order, paged by position.
pub async fn creators_filter_lists_and_personal_data_reveals_are_logged(h: Harness) {
    use balagh::store::PersonalDataAccess;
    let store = h.store;
    let by = |actor: &str| WriteContext {
        actor: actor.into(),
        request: None,
        reach: None,
    };
    let mine = store
        .create_ticket(by("rop-cases"), new_ticket("street_lighting"))
        .await
        .unwrap();
    let other = store
        .create_ticket(by("agent-1"), new_ticket("street_lighting"))
        .await
        .unwrap();
    assert_eq!(mine.created_by.as_deref(), Some("rop-cases"));
    let reread = store.get_ticket(mine.id).await.unwrap().unwrap();
    assert_eq!(reread.created_by.as_deref(), Some("rop-cases"));
    let mut query = TicketQuery {
        limit: 10,
        ..TicketQuery::default()
    };
    query.filter.creators = vec!["rop-cases".into()];
    let listed = store.list_tickets(&query).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.ticket.id).collect::<Vec<_>>(),
        vec![mine.id]
    );

    let access = |actor: &str| PersonalDataAccess {
        actor: actor.into(),
        role: "agent".into(),
        method: "GetTicket".into(),
    };
    store
        .record_personal_data_access(access("agent-1"), vec![mine.id, other.id])
        .await
        .unwrap();
    store
        .record_personal_data_access(access("agent-2"), vec![mine.id])
        .await
        .unwrap();
    let log = store
        .list_personal_data_accesses(mine.id, 0, 10)
        .await
        .unwrap()
        .expect("the ticket exists");
    assert_eq!(
        log.iter()
            .map(|(_, r)| r.access.actor.as_str())
            .collect::<Vec<_>>(),
        vec!["agent-1", "agent-2"]
    );
    assert!(log[0].0 < log[1].0, "positions grow");
    let after_first = store
        .list_personal_data_accesses(mine.id, log[0].0, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].1.ticket_id, mine.id);
    let of_other = store
        .list_personal_data_accesses(other.id, 0, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(of_other.len(), 1);
    let unknown = balagh::domain::values::TicketId::new_v7();
    assert!(
        store
            .list_personal_data_accesses(unknown, 0, 10)
            .await
            .unwrap()
            .is_none()
    );
}

/// Erasure removes the reporter's personal data from the ticket and every copy the store
/// keeps (event bodies the change feed serves, pending pushes, recorded answers), keeps the
/// ticket, its trail and its place, and is idempotent; the retention policy finds settled
/// tickets left unchanged long enough, and not those already erased.
pub async fn erasure_scrubs_every_copy_and_retention_finds_settled_tickets(
    h: Harness,
    clock: ManualClock,
) {
    let store = h.store;
    let phone = "99000000";
    let ticket = store
        .create_ticket(ctx_with("erase-me", 7), complaint())
        .await
        .unwrap();
    assert!(ticket.reporter.has_personal_data());
    let (rejected, _) = store
        .apply_action(
            ctx(),
            ticket.id,
            None,
            Action::Reject {
                reason: "not the municipality's".into(),
            },
        )
        .await
        .unwrap();
    let other = store.create_ticket(ctx(), complaint()).await.unwrap();
    let cutoff = Timestamp::from_micros(clock.now().as_micros() + 1);
    assert_eq!(
        store.tickets_to_anonymise(cutoff, 10).await.unwrap(),
        vec![ticket.id],
        "only the settled ticket, not the open one"
    );
    assert!(
        store
            .tickets_to_anonymise(rejected.update_time, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing changed before its last change"
    );

    let unknown = balagh::domain::values::TicketId::new_v7();
    assert!(matches!(
        store.erase_personal_data(ctx(), unknown, "r".into()).await,
        Err(StoreError::TicketNotFound)
    ));
    let erased = store
        .erase_personal_data(ctx(), ticket.id, "request DP-1".into())
        .await
        .unwrap();
    assert!(erased.reporter.is_erased() && !erased.reporter.has_personal_data());
    assert_eq!(erased.version, rejected.version + 1);
    assert_eq!(
        erased.status,
        Status::Rejected,
        "the ticket stays as it was"
    );
    let again = store
        .erase_personal_data(ctx(), ticket.id, "request DP-1".into())
        .await
        .unwrap();
    assert_eq!(
        again.version, erased.version,
        "erasing twice changes nothing"
    );
    assert!(
        store
            .tickets_to_anonymise(cutoff, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // No copy keeps the phone: the feed serves every version of the ticket erased, the
    // pending pushes carry it erased, and the recorded answer is gone.
    let changes = store.read_changes(0, 100).await.unwrap();
    let of_ticket: Vec<_> = changes
        .iter()
        .filter(|c| c.ticket.id == ticket.id)
        .collect();
    assert!(of_ticket.len() >= 3, "created, rejected, erased");
    for change in &of_ticket {
        assert!(
            change.ticket.reporter.is_erased(),
            "{:?}",
            change.event.record.kind
        );
    }
    let last = of_ticket.last().unwrap();
    assert_eq!(
        last.event.record.changed_fields,
        vec!["reporter".to_owned()]
    );
    assert_eq!(last.event.record.note.as_deref(), Some("request DP-1"));
    let pushes = store
        .claim_outbox("conformance", std::time::Duration::from_secs(60), 100)
        .await
        .unwrap();
    assert!(pushes.iter().any(|p| p.ticket_id == ticket.id));
    for push in pushes.iter().filter(|p| p.ticket_id == ticket.id) {
        assert!(push.ticket.reporter.is_erased());
    }
    let of_other: Vec<_> = pushes.iter().filter(|p| p.ticket_id == other.id).collect();
    assert!(
        !of_other.is_empty(),
        "the other complaint's push is claimed too"
    );
    for push in of_other {
        assert_eq!(
            push.ticket
                .reporter
                .phone()
                .map(|p| p.as_str().contains(phone)),
            Some(true),
            "another ticket keeps its data"
        );
    }
    let replayed = store
        .create_ticket(ctx_with("erase-me", 7), complaint())
        .await
        .unwrap();
    assert_ne!(
        replayed.id, ticket.id,
        "the recorded answer carrying the data was dropped, not replayed"
    );
    assert!(
        store
            .get_ticket(ticket.id)
            .await
            .unwrap()
            .unwrap()
            .reporter
            .is_erased()
    );
}

#[macro_export]
macro_rules! conformance_suite {
    ($open:path) => {
        fn clock() -> balagh::domain::ManualClock {
            balagh::domain::ManualClock::new(balagh::domain::Timestamp::from_micros(
                conformance::JUNE_2026,
            ))
        }

        #[tokio::test]
        async fn reference_numbers_are_unique_and_gap_free_under_concurrent_writes() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::reference_numbers_are_unique_and_gap_free_under_concurrent_writes(h).await;
        }

        #[tokio::test]
        async fn a_word_too_long_to_index_is_left_out_and_the_rest_is_found() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_word_too_long_to_index_is_left_out_and_the_rest_is_found(h).await;
        }

        #[tokio::test]
        async fn creates_written_together_answer_each_as_if_alone() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::creates_written_together_answer_each_as_if_alone(h).await;
        }

        #[tokio::test]
        async fn reference_numbers_restart_each_muscat_year_and_survive_a_restart() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::reference_numbers_restart_each_muscat_year_and_survive_a_restart(h, clock)
                .await;
        }

        #[tokio::test]
        async fn request_ids_replay_the_first_answer_even_after_a_restart() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::request_ids_replay_the_first_answer_even_after_a_restart(h, clock).await;
        }

        #[tokio::test]
        async fn a_stale_version_or_an_impossible_move_changes_nothing() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_stale_version_or_an_impossible_move_changes_nothing(h).await;
        }

        #[tokio::test]
        async fn a_ticket_is_read_with_its_events_as_of_one_moment() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_ticket_is_read_with_its_events_as_of_one_moment(h).await;
        }

        #[tokio::test]
        async fn a_write_outside_its_reach_changes_nothing() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_write_outside_its_reach_changes_nothing(h).await;
        }

        #[tokio::test]
        async fn event_cursors_grow_with_commit_order_under_concurrency() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::event_cursors_grow_with_commit_order_under_concurrency(h).await;
        }

        #[tokio::test]
        async fn list_pages_by_position_newest_first() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::list_pages_by_position_newest_first(h).await;
        }

        #[tokio::test]
        async fn the_outbox_takes_the_pushes_of_synchronised_tickets_with_their_change() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::the_outbox_takes_the_pushes_of_synchronised_tickets_with_their_change(h)
                .await;
        }

        #[tokio::test]
        async fn claims_keep_each_tickets_order_and_expired_leases_move_on() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::claims_keep_each_tickets_order_and_expired_leases_move_on(h, clock).await;
        }

        #[tokio::test]
        async fn retries_wait_their_time_and_dead_letters_block_until_redriven() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::retries_wait_their_time_and_dead_letters_block_until_redriven(h, clock)
                .await;
        }

        #[tokio::test]
        async fn outcomes_recorded_together_are_fenced_each_by_its_own_lease() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::outcomes_recorded_together_are_fenced_each_by_its_own_lease(h, clock)
                .await;
        }

        #[tokio::test]
        async fn concurrent_workers_never_share_an_entry() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::concurrent_workers_never_share_an_entry(h).await;
        }

        #[tokio::test]
        async fn a_change_refused_mid_page_is_rolled_back_alone() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_change_refused_mid_page_is_rolled_back_alone(h).await;
        }

        #[tokio::test]
        async fn platform_changes_apply_once_in_order_and_move_the_cursor_with_them() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::platform_changes_apply_once_in_order_and_move_the_cursor_with_them(
                h, clock,
            )
            .await;
        }

        #[tokio::test]
        async fn settings_keep_every_version_and_refuse_a_stale_one() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::settings_keep_every_version_and_refuse_a_stale_one(h).await;
        }

        #[tokio::test]
        async fn the_sla_projection_finds_alerts_due_and_tickets_at_risk() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::the_sla_projection_finds_alerts_due_and_tickets_at_risk(h).await;
        }

        #[tokio::test]
        async fn ticket_facts_are_replaced_per_ticket_and_read_by_creation_period() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::ticket_facts_are_replaced_per_ticket_and_read_by_creation_period(h).await;
        }

        #[tokio::test]
        async fn quality_reviews_need_a_handler_come_once_and_leave_the_sample() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::quality_reviews_need_a_handler_come_once_and_leave_the_sample(h, clock)
                .await;
        }

        #[tokio::test]
        async fn call_backs_follow_the_survey_policy_and_a_refusal_writes_nothing() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::call_backs_follow_the_survey_policy_and_a_refusal_writes_nothing(h, clock)
                .await;
        }

        #[tokio::test]
        async fn erasure_scrubs_every_copy_and_retention_finds_settled_tickets() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::erasure_scrubs_every_copy_and_retention_finds_settled_tickets(h, clock)
                .await;
        }

        #[tokio::test]
        async fn creators_filter_lists_and_personal_data_reveals_are_logged() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::creators_filter_lists_and_personal_data_reveals_are_logged(h).await;
        }

        #[tokio::test]
        async fn a_call_back_attempt_with_a_request_id_is_recorded_once() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::a_call_back_attempt_with_a_request_id_is_recorded_once(h, clock).await;
        }

        #[tokio::test]
        async fn the_call_back_list_proposes_each_beneficiary_once_when_they_may_be_asked() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::the_call_back_list_proposes_each_beneficiary_once_when_they_may_be_asked(
                h, clock,
            )
            .await;
        }

        #[tokio::test]
        async fn a_platform_rating_counts_as_asked_with_the_rating() {
            let clock = clock();
            let Some(h) = $open(clock.clone()).await else {
                return;
            };
            conformance::a_platform_rating_counts_as_asked_with_the_rating(h, clock).await;
        }

        #[tokio::test]
        async fn a_closed_store_refuses_writes() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_closed_store_refuses_writes(h).await;
        }
    };
}
