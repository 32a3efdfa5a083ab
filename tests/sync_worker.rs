//! The push side of the sync worker against a real store (SQLite, or PostgreSQL with
//! `BALAGH_TEST_BACKEND=postgres`) on an injected clock: order, retries, dead letters, the
//! circuit breaker, and the pipelined drain (a slow push, a lease that runs out mid-push,
//! shutdown).
//!
//! The platform here is a scripted `Pusher` that answers what each test needs: these tests
//! are about the worker's decisions. The platform client's own tests run against the
//! simulator over real HTTP.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use balagh::domain::lifecycle::Action;
use balagh::domain::sync::{OutboxState, PushKind};
use balagh::domain::ticket::{
    Channel, Location, NewTicket, Reporter, Resolution, ResolutionCode, Ticket, TicketType,
    Visibility,
};
use balagh::domain::values::{Code, PhoneNumber};
use balagh::domain::{Clock, ManualClock, Timestamp};
use balagh::store::{OutboxEntry, Store, WriteContext, open_store};
use balagh::sync::breaker::BreakerState;
use balagh::sync::retry::RetryPolicy;
use balagh::sync::{PushFailure, Pusher, SyncSettings, SyncWorker};
use common::TestDb;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
        reach: None,
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

fn worker(s: &Setup, platform: Arc<dyn Pusher>, settings: SyncSettings) -> SyncWorker {
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

/// A platform that answers `Ok` at once, except to the creation of the tickets it is told to
/// hold, which waits until released: a slow answer, under the test's control.
#[derive(Default)]
struct GatedPlatform {
    held: Mutex<HashMap<String, Arc<Semaphore>>>,
    calls: Mutex<Vec<(String, PushKind)>>,
}

impl GatedPlatform {
    fn holding(tickets: &[&Ticket]) -> Arc<Self> {
        let held = tickets
            .iter()
            .map(|t| (t.id.to_string(), Arc::new(Semaphore::new(0))))
            .collect();
        Arc::new(Self {
            held: Mutex::new(held),
            calls: Mutex::default(),
        })
    }

    fn release(&self, ticket: &Ticket) {
        self.held.lock().unwrap()[&ticket.id.to_string()].add_permits(1);
    }

    fn calls_for(&self, ticket: &Ticket) -> Vec<PushKind> {
        let id = ticket.id.to_string();
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.0 == id).map(|c| c.1).collect()
    }

    fn n_calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// Waits, in real time and for a few seconds at most, until `done` says so.
async fn eventually<F: Future<Output = bool>>(mut done: impl FnMut() -> F) {
    for _ in 0..5_000 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("what the test waited for never happened");
}

/// Waits until `n` entries are delivered.
async fn until_delivered(store: &Arc<dyn Store>, n: u64) {
    eventually(|| async { store.outbox_status().await.unwrap().delivered == n }).await;
}

#[async_trait]
impl Pusher for GatedPlatform {
    async fn push(&self, entry: &OutboxEntry) -> Result<(), PushFailure> {
        let id = entry.ticket_id.to_string();
        self.calls.lock().unwrap().push((id.clone(), entry.kind));
        let gate = self.held.lock().unwrap().get(&id).cloned();
        if let (Some(gate), PushKind::CreateCase) = (gate, entry.kind) {
            gate.acquire().await.unwrap().forget();
        }
        Ok(())
    }
}

fn pipelined(concurrency: usize, batch: u32) -> SyncSettings {
    SyncSettings {
        concurrency,
        batch,
        ..SyncSettings::default()
    }
}

#[tokio::test]
async fn the_pipelined_drain_pushes_everything_due_once_in_each_tickets_order() {
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
    let worker = worker(&s, platform.clone(), pipelined(4, 3));
    // A ticket's next entry becomes due as its previous one is recorded: one drain takes all.
    let handled = worker
        .drain_until_idle(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(handled, 40);
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
    assert_eq!(
        (status.pending, status.leased, status.delivered),
        (0, 0, 40)
    );
    s.store.close().await;
}

#[tokio::test]
async fn a_slow_push_holds_up_its_own_slot_only_and_its_ticket() {
    let s = setup().await;
    let slow = s.store.create_ticket(ctx(), complaint()).await.unwrap();
    s.store
        .apply_action(
            ctx(),
            slow.id,
            None,
            Action::Comment {
                text: "رد".into(),
                visibility: Visibility::Public,
            },
        )
        .await
        .unwrap();
    for _ in 0..11 {
        s.store.create_ticket(ctx(), complaint()).await.unwrap();
    }
    let platform = GatedPlatform::holding(&[&slow]);
    // Two slots, two entries a claim: one batch at a time would stop at the first claim.
    let worker = worker(&s, platform.clone(), pipelined(2, 2));
    let watch = async {
        until_delivered(&s.store, 11).await;
        let status = s.store.outbox_status().await.unwrap();
        assert_eq!(
            (status.delivered, status.pending),
            (11, 2),
            "the other tickets went by; the slow ticket's reply waits behind its creation"
        );
        assert_eq!(platform.calls_for(&slow), [PushKind::CreateCase]);
        platform.release(&slow);
    };
    let running = CancellationToken::new();
    let (handled, ()) = tokio::join!(worker.drain_until_idle(&running), watch);
    assert_eq!(handled.unwrap(), 13);
    assert_eq!(
        platform.calls_for(&slow),
        [PushKind::CreateCase, PushKind::PublicReply]
    );
    assert_eq!(s.store.outbox_status().await.unwrap().delivered, 13);
    s.store.close().await;
}

#[tokio::test]
async fn a_push_that_outlasts_its_lease_is_not_sent_twice_at_once() {
    let s = setup().await;
    let slow = s.store.create_ticket(ctx(), complaint()).await.unwrap();
    s.store
        .apply_action(
            ctx(),
            slow.id,
            None,
            Action::Comment {
                text: "رد".into(),
                visibility: Visibility::Public,
            },
        )
        .await
        .unwrap();
    let other = s.store.create_ticket(ctx(), complaint()).await.unwrap();
    for _ in 0..5 {
        s.store.create_ticket(ctx(), complaint()).await.unwrap();
    }
    let platform = GatedPlatform::holding(&[&slow, &other]);
    let settings = pipelined(2, 2);
    let lease = i64::try_from(settings.lease.as_micros()).unwrap();
    let worker = worker(&s, platform.clone(), settings);
    let watch = async {
        eventually(|| async { platform.n_calls() == 2 }).await;
        // Both slots are taken; the slow push's lease runs out, then the other push ends and
        // the worker claims again: the slow entry is due again, to this very worker.
        s.clock.advance_micros(lease + 1_000_000);
        platform.release(&other);
        until_delivered(&s.store, 6).await;
        assert_eq!(
            platform.n_calls(),
            7,
            "the slow creation was not sent again"
        );
        assert_eq!(s.store.outbox_status().await.unwrap().pending, 2);
        platform.release(&slow);
    };
    let running = CancellationToken::new();
    let (handled, ()) = tokio::join!(worker.drain_until_idle(&running), watch);
    assert_eq!(handled.unwrap(), 8);
    assert_eq!(
        platform.calls_for(&slow),
        [PushKind::CreateCase, PushKind::PublicReply],
        "the creation went once, and its outcome was recorded"
    );
    let status = s.store.outbox_status().await.unwrap();
    assert_eq!((status.delivered, status.leased), (8, 0));
    s.store.close().await;
}

#[tokio::test]
async fn on_shutdown_the_drain_claims_no_more_and_pushes_what_it_holds() {
    let s = setup().await;
    let first = s.store.create_ticket(ctx(), complaint()).await.unwrap();
    let second = s.store.create_ticket(ctx(), complaint()).await.unwrap();
    for _ in 0..8 {
        s.store.create_ticket(ctx(), complaint()).await.unwrap();
    }
    let platform = GatedPlatform::holding(&[&first, &second]);
    let worker = worker(&s, platform.clone(), pipelined(2, 2));
    let shutdown = CancellationToken::new();
    let stop = async {
        eventually(|| async { platform.n_calls() == 2 }).await;
        shutdown.cancel();
        platform.release(&first);
        platform.release(&second);
    };
    let (handled, ()) = tokio::join!(worker.drain_until_idle(&shutdown), stop);
    let handled = handled.unwrap();
    let status = s.store.outbox_status().await.unwrap();
    assert_eq!(
        status.delivered, handled as u64,
        "whatever it claimed it pushed"
    );
    assert_eq!(
        status.leased, 0,
        "no entry left waiting for its lease to run out"
    );
    assert_eq!(status.pending, 10 - handled as u64);
    assert!(status.pending > 0, "nothing claimed after the shutdown");
    s.store.close().await;
}

#[tokio::test]
async fn retries_due_at_once_go_again_while_claims_and_outcomes_cross() {
    let s = setup().await;
    for _ in 0..40 {
        s.store.create_ticket(ctx(), complaint()).await.unwrap();
    }
    // The first 40 attempts fail and are due again at once, so claims under way keep reading
    // entries whose outcomes are being recorded: each must go again, once, and none be left
    // leased to a worker that does not push it.
    let platform = ScriptedPlatform::answering((0..40).map(|_| retryable()).collect());
    let settings = SyncSettings {
        retry: RetryPolicy {
            initial_interval: Duration::ZERO,
            max_interval: Duration::ZERO,
            ..RetryPolicy::default()
        },
        breaker_threshold: 1_000,
        ..pipelined(4, 4)
    };
    let worker = worker(&s, platform.clone(), settings);
    let handled = worker
        .drain_until_idle(&CancellationToken::new())
        .await
        .unwrap();
    let status = s.store.outbox_status().await.unwrap();
    assert_eq!(
        (status.delivered, status.pending, status.leased),
        (40, 0, 0)
    );
    assert_eq!((handled, platform.calls().len()), (80, 80));
    s.store.close().await;
}

#[tokio::test]
async fn a_probe_that_finds_nothing_due_leaves_the_next_one_to_a_later_drain() {
    let s = setup().await;
    s.store.create_ticket(ctx(), complaint()).await.unwrap();
    // Rate limited for two minutes: the breaker opens for 30 s, the entry waits longer.
    let platform = ScriptedPlatform::answering(vec![Err(PushFailure::Retryable {
        reason: "429 Too Many Requests".into(),
        retry_after: Some(Duration::from_secs(120)),
    })]);
    let settings = SyncSettings {
        breaker_threshold: 1,
        breaker_cool_down: Duration::from_secs(30),
        ..SyncSettings::default()
    };
    let worker = worker(&s, platform.clone(), settings);
    assert_eq!(worker.drain_once().await.unwrap(), 1);
    assert!(matches!(worker.breaker_state(), BreakerState::Open { .. }));
    // The cool-down is over, but nothing is due: no probe goes, and none is spent.
    s.clock.advance_micros(31 * 1_000_000);
    assert_eq!(worker.drain_once().await.unwrap(), 0);
    let idle = CancellationToken::new();
    assert_eq!(worker.drain_until_idle(&idle).await.unwrap(), 0);
    assert_eq!(platform.calls().len(), 1);
    // Once the entry is due, it is the probe; it succeeds and the breaker closes.
    s.clock.advance_micros(90 * 1_000_000);
    assert_eq!(worker.drain_until_idle(&idle).await.unwrap(), 1);
    assert_eq!(worker.breaker_state(), BreakerState::Closed);
    assert_eq!(s.store.outbox_status().await.unwrap().delivered, 1);
    s.store.close().await;
}
