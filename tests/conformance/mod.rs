//! The store conformance suite: the same tests, with the same expectations, for every
//! implementation of `Store`. Each backend's test file instantiates it with
//! `conformance_suite!(open_fn)`, where `open_fn(clock) -> Harness`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use balagh::domain::lifecycle::Action;
use balagh::domain::sync::OutboxState;
use balagh::domain::ticket::{
    Channel, Location, NewTicket, Reporter, Resolution, ResolutionCode, Status, TicketType,
};
use balagh::domain::values::{Code, PhoneNumber};
use balagh::domain::{ManualClock, Timestamp};
use balagh::store::{InboundChange, RequestKey, Store, StoreError, TicketQuery, WriteContext};

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
    }
}

pub fn ctx_with(request_id: &str, fingerprint: u8) -> WriteContext {
    WriteContext {
        actor: "tester".into(),
        request: Some(RequestKey {
            request_id: request_id.into(),
            fingerprint: [fingerprint; 32],
        }),
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
            .get_ticket_by_reference(last_of_2026.reference)
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
        async fn a_closed_store_refuses_writes() {
            let Some(h) = $open(clock()).await else {
                return;
            };
            conformance::a_closed_store_refuses_writes(h).await;
        }
    };
}
