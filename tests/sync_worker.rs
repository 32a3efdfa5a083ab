//! The push side of the sync worker against a real store (SQLite, or PostgreSQL with
//! `BALAGH_TEST_BACKEND=postgres`) on an injected clock: order, retries, dead letters, the
//! circuit breaker.
//!
//! The platform here is a scripted `Pusher` that answers what each test needs: these tests
//! are about the worker's decisions. The platform client's own tests run against the
//! simulator over real HTTP.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use balagh::domain::lifecycle::Action;
use balagh::domain::sync::{OutboxState, PushKind};
use balagh::domain::ticket::{
    Channel, Location, NewTicket, Reporter, Resolution, ResolutionCode, TicketType, Visibility,
};
use balagh::domain::values::{Code, PhoneNumber};
use balagh::domain::{Clock, ManualClock, Timestamp};
use balagh::store::{OutboxEntry, Store, WriteContext, open_store};
use balagh::sync::breaker::BreakerState;
use balagh::sync::{PushFailure, Pusher, SyncSettings, SyncWorker};
use common::TestDb;

#[derive(Default)]
struct ScriptedPlatform {
    /// Answers for the next calls, in order; `Ok(())` once the script is used up.
    script: Mutex<VecDeque<Result<(), PushFailure>>>,
    calls: Mutex<Vec<(String, PushKind, String)>>,
}

impl ScriptedPlatform {
    fn answering(answers: Vec<Result<(), PushFailure>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(answers.into()),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<(String, PushKind, String)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Pusher for ScriptedPlatform {
    async fn push(&self, entry: &OutboxEntry) -> Result<(), PushFailure> {
        self.calls.lock().unwrap().push((
            entry.ticket_id.to_string(),
            entry.kind,
            entry.idempotency_key.clone(),
        ));
        self.script.lock().unwrap().pop_front().unwrap_or(Ok(()))
    }
}

fn retryable() -> Result<(), PushFailure> {
    Err(PushFailure::Retryable {
        reason: "503 Service Unavailable".into(),
        retry_after: None,
    })
}

fn ctx() -> WriteContext {
    WriteContext {
        actor: "tester".into(),
        request: None,
    }
}

fn complaint() -> NewTicket {
    NewTicket {
        ticket_type: TicketType::Complaint,
        channel: Channel::App,
        category: Code::parse("category", "staff_conduct").unwrap(),
        priority: None,
        subject: "تأخر الرد على البلاغ".into(),
        description: String::new(),
        reporter: Reporter::identified(
            "reporter",
            "Citizen".into(),
            Some(PhoneNumber::parse("phone", "99000000").unwrap()),
            None,
            None,
        )
        .unwrap(),
        location: Location::default(),
        attachments: vec![],
    }
}

struct Setup {
    store: Arc<dyn Store>,
    clock: ManualClock,
    _db: Arc<TestDb>,
}

async fn setup() -> Setup {
    let db = TestDb::fresh().await;
    let clock = ManualClock::new(Timestamp::from_micros(1_780_286_400_000_000));
    let store = open_store(
        &db.url,
        64,
        256,
        2,
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    Setup {
        store,
        clock,
        _db: db,
    }
}

fn worker(s: &Setup, platform: Arc<ScriptedPlatform>, settings: SyncSettings) -> SyncWorker {
    SyncWorker::new(
        s.store.clone(),
        platform,
        Arc::new(s.clock.clone()),
        settings,
    )
}

#[tokio::test]
async fn pushes_reach_the_platform_once_each_in_each_tickets_order() {
    let s = setup().await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let t = s.store.create_ticket(ctx(), complaint()).await.unwrap();
        for i in 0..3 {
            s.store
                .apply_action(
                    ctx(),
                    t.id,
                    None,
                    Action::Comment {
                        text: format!("رد {i}"),
                        visibility: Visibility::Public,
                    },
                )
                .await
                .unwrap();
        }
        ids.push(t.id.to_string());
    }
    let platform = ScriptedPlatform::answering(vec![]);
    let worker = worker(&s, platform.clone(), SyncSettings::default());
    while worker.drain_once().await.unwrap() > 0 {}
    let calls = platform.calls();
    assert_eq!(calls.len(), 40, "each push once");
    for id in &ids {
        let kinds: Vec<_> = calls.iter().filter(|c| &c.0 == id).map(|c| c.1).collect();
        assert_eq!(
            kinds,
            [
                PushKind::CreateCase,
                PushKind::PublicReply,
                PushKind::PublicReply,
                PushKind::PublicReply
            ]
        );
    }
    let status = s.store.outbox_status().await.unwrap();
    assert_eq!((status.pending, status.delivered), (0, 40));
    s.store.close().await;
}

#[tokio::test]
async fn a_failed_push_waits_its_turn_on_the_clock_then_goes_with_the_same_key() {
    let s = setup().await;
    s.store.create_ticket(ctx(), complaint()).await.unwrap();
    let platform = ScriptedPlatform::answering(vec![retryable()]);
    let worker = worker(&s, platform.clone(), SyncSettings::default());
    assert_eq!(worker.drain_once().await.unwrap(), 1);
    assert_eq!(
        worker.drain_once().await.unwrap(),
        0,
        "not due before its retry time"
    );
    let pending = s
        .store
        .list_outbox(OutboxState::Pending, 0, 10)
        .await
        .unwrap();
    assert_eq!(pending[0].n_attempts, 1);
    assert_eq!(
        pending[0].last_error.as_deref(),
        Some("503 Service Unavailable")
    );
    let wait = pending[0].next_attempt_at.as_micros() - s.clock.now().as_micros();
    assert!(
        (700_000..=1_300_000).contains(&wait),
        "first retry after about a second: {wait}"
    );
    s.clock.advance_micros(wait);
    assert_eq!(worker.drain_once().await.unwrap(), 1);
    let calls = platform.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].2, calls[1].2,
        "the retry carries the same idempotency key"
    );
    assert_eq!(s.store.outbox_status().await.unwrap().delivered, 1);
    s.store.close().await;
}

#[tokio::test]
async fn refused_pushes_become_dead_letters_that_hold_their_ticket_until_redriven() {
    let s = setup().await;
    let t = s.store.create_ticket(ctx(), complaint()).await.unwrap();
    s.store
        .apply_action(
            ctx(),
            t.id,
            None,
            Action::Resolve {
                resolution: Resolution {
                    code: ResolutionCode::InformationProvided,
                    text: "تم".into(),
                },
            },
        )
        .await
        .unwrap();
    let platform = ScriptedPlatform::answering(vec![Err(PushFailure::Rejected {
        reason: "422 unknown category".into(),
    })]);
    let worker = worker(&s, platform.clone(), SyncSettings::default());
    worker.drain_once().await.unwrap();
    assert_eq!(
        worker.drain_once().await.unwrap(),
        0,
        "the resolution waits behind the dead creation"
    );
    let dead = s.store.list_outbox(OutboxState::Dead, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("422 unknown category"));
    assert!(s.store.redrive_outbox(dead[0].id).await.unwrap());
    while worker.drain_once().await.unwrap() > 0 {}
    let kinds: Vec<_> = platform.calls().into_iter().map(|c| c.1).collect();
    assert_eq!(
        kinds,
        [
            PushKind::CreateCase,
            PushKind::CreateCase,
            PushKind::Resolve
        ]
    );
    s.store.close().await;
}

#[tokio::test]
async fn a_push_that_keeps_failing_is_given_up_after_the_attempt_cap() {
    let s = setup().await;
    s.store.create_ticket(ctx(), complaint()).await.unwrap();
    let platform = ScriptedPlatform::answering((0..5).map(|_| retryable()).collect());
    let mut settings = SyncSettings::default();
    settings.retry.max_attempts = 3;
    settings.breaker_threshold = 100;
    let worker = worker(&s, platform.clone(), settings);
    for _ in 0..3 {
        assert_eq!(worker.drain_once().await.unwrap(), 1);
        s.clock.advance_micros(3_600 * 1_000_000);
    }
    let dead = s.store.list_outbox(OutboxState::Dead, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].n_attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 3 attempts")
    );
    s.store.close().await;
}

#[tokio::test]
async fn the_breaker_stops_hammering_a_failing_platform_probes_and_closes_by_itself() {
    let s = setup().await;
    for _ in 0..20 {
        s.store.create_ticket(ctx(), complaint()).await.unwrap();
    }
    let platform = ScriptedPlatform::answering((0..5).map(|_| retryable()).collect());
    let settings = SyncSettings {
        batch: 5,
        concurrency: 1,
        breaker_threshold: 5,
        breaker_cool_down: Duration::from_secs(30),
        ..SyncSettings::default()
    };
    let worker = worker(&s, platform.clone(), settings);
    assert_eq!(worker.drain_once().await.unwrap(), 5);
    assert!(matches!(worker.breaker_state(), BreakerState::Open { .. }));
    // Open: nothing is claimed, the platform is left alone.
    s.clock.advance_micros(10 * 1_000_000);
    assert_eq!(worker.drain_once().await.unwrap(), 0);
    assert_eq!(platform.calls().len(), 5);
    // After the cool-down one probe goes; it succeeds and the worker drains the rest.
    s.clock.advance_micros(21 * 1_000_000);
    assert_eq!(worker.drain_once().await.unwrap(), 1);
    assert_eq!(worker.breaker_state(), BreakerState::Closed);
    while worker.drain_once().await.unwrap() > 0 {
        s.clock.advance_micros(60 * 1_000_000);
    }
    assert_eq!(s.store.outbox_status().await.unwrap().delivered, 20);
    s.store.close().await;
}
