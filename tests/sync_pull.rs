//! The sync worker's pull side against the platform simulator over real HTTP: cases citizens
//! file become tickets exactly once, their details, ratings and reopen requests reach the
//! tickets, receipts go back, and the cursor survives a restart. Then a bounded run with a
//! fifth of all platform calls failing: every case filed on the platform exists locally
//! exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use balagh::domain::lifecycle::{Action, EventKind};
use balagh::domain::ticket::{Channel, Resolution, ResolutionCode, Status};
use balagh::domain::{ManualClock, Timestamp};
use balagh::platform::client::{ClientSecret, PlatformClient, PlatformClientConfig};
use balagh::platform::mapping::Mapping;
use balagh::platform::simulator::{
    CitizenAction, FaultKind, FaultSettings, Simulator, SimulatorConfig, SimulatorHandle,
    TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use balagh::store::{Store, WriteContext, open_store};
use balagh::sync::platform_pusher::PlatformPusher;
use balagh::sync::pull::{PullSettings, Puller};
use balagh::sync::{SyncSettings, SyncWorker};
use common::TestDb;
use tokio_util::sync::CancellationToken;

struct Rig {
    store: Arc<dyn Store>,
    clock: ManualClock,
    sim: SimulatorHandle,
    client: Arc<PlatformClient>,
    worker: SyncWorker,
    puller: Puller,
    db: Arc<TestDb>,
    _stop: StopOnDrop,
}

struct StopOnDrop(CancellationToken);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn open(db: &TestDb, clock: &ManualClock) -> Arc<dyn Store> {
    open_store(
        &db.url,
        64,
        256,
        2,
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap()
}

fn puller(store: Arc<dyn Store>, client: Arc<PlatformClient>, clock: &ManualClock) -> Puller {
    Puller::new(
        client,
        Arc::new(Mapping::v1().unwrap()),
        store,
        Arc::new(clock.clone()),
        PullSettings {
            // Small pages, so a run spans many transactions.
            page_size: 7,
            ..PullSettings::default()
        },
    )
}

async fn rig(faults: FaultSettings) -> Rig {
    let db = TestDb::fresh().await;
    let clock = ManualClock::new(Timestamp::from_micros(1_780_286_400_000_000));
    let store = open(&db, &clock).await;
    let shutdown = CancellationToken::new();
    let mut config = SimulatorConfig::for_tests();
    config.faults = faults;
    config.seed = 11;
    config.clock = Arc::new(clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(config, listener, shutdown.clone()).unwrap();
    let mut client_config = PlatformClientConfig::new(
        sim.base_url(),
        "muscat-municipality",
        TEST_CLIENT_ID,
        ClientSecret::new(TEST_CLIENT_SECRET),
    );
    client_config.request_timeout = Duration::from_millis(800);
    let client = Arc::new(PlatformClient::new(client_config).unwrap());
    let pusher = PlatformPusher::new(
        client.clone(),
        Arc::new(Mapping::v1().unwrap()),
        store.clone(),
    );
    let worker = SyncWorker::new(
        store.clone(),
        Arc::new(pusher),
        Arc::new(clock.clone()),
        SyncSettings {
            breaker_threshold: 1_000,
            ..SyncSettings::default()
        },
    );
    let puller = puller(store.clone(), client.clone(), &clock);
    Rig {
        store,
        clock,
        sim,
        client,
        worker,
        puller,
        db,
        _stop: StopOnDrop(shutdown),
    }
}

/// Pulls until the feed is exhausted, retrying failed pages (bounded). Between tries the
/// clock moves on, which also ends the simulator's maintenance windows.
async fn pull_all_at(puller: &Puller, clock: &ManualClock) -> balagh::sync::pull::PullReport {
    for _ in 0..200 {
        match puller.pull_until_caught_up().await {
            Ok(report) => return report,
            Err(error) => {
                eprintln!("pull failed, trying again: {error}");
                clock.advance_micros(10 * 60 * 1_000_000);
            }
        }
    }
    panic!("the pull never caught up");
}

/// Drains the outbox, moving the clock past retry times, until nothing is pending.
async fn drain(rig: &Rig) {
    for _ in 0..400 {
        rig.worker.drain_once().await.unwrap();
        if rig.store.outbox_status().await.unwrap().pending == 0 {
            return;
        }
        rig.clock.advance_micros(30 * 60 * 1_000_000);
    }
    panic!(
        "the outbox did not drain: {:?}",
        rig.store.outbox_status().await.unwrap()
    );
}

fn ctx() -> WriteContext {
    WriteContext {
        actor: "tester".into(),
        request: None,
        reach: None,
    }
}

#[tokio::test]
async fn a_case_a_citizen_files_becomes_one_ticket_and_its_receipt_goes_back() {
    let rig = rig(FaultSettings::default()).await;
    let filed: Vec<_> = (0..3)
        .map(|_| {
            rig.sim
                .citizen_act(Some(CitizenAction::File), None)
                .unwrap()
        })
        .collect();
    let report = pull_all_at(&rig.puller, &rig.clock).await;
    assert_eq!((report.changes, report.created), (3, 3));
    for activity in &filed {
        let id = rig
            .store
            .ticket_for_case(&activity.case_id)
            .await
            .unwrap()
            .expect("the case has a ticket");
        let ticket = rig.store.get_ticket(id).await.unwrap().unwrap();
        assert_eq!(ticket.channel, Channel::NationalPlatform);
        assert_eq!(ticket.status, Status::New);
    }
    // Pulling again takes nothing new in.
    assert_eq!(pull_all_at(&rig.puller, &rig.clock).await.created, 0);

    drain(&rig).await;
    let state = rig.sim.state();
    for activity in &filed {
        let case = &state
            .cases
            .iter()
            .find(|r| r.case.case_id == activity.case_id)
            .unwrap()
            .case;
        let id = rig
            .store
            .ticket_for_case(&activity.case_id)
            .await
            .unwrap()
            .unwrap();
        let ticket = rig.store.get_ticket(id).await.unwrap().unwrap();
        assert_eq!(
            case.entity_reference.as_deref(),
            Some(ticket.reference.to_string().as_str()),
            "the receipt names the local reference"
        );
    }
    // The receipts come back on the feed as the municipality's own changes: nothing to do.
    let report = pull_all_at(&rig.puller, &rig.clock).await;
    assert_eq!((report.created, report.applied), (0, 0));
}

#[tokio::test]
async fn details_ratings_and_reopen_requests_reach_the_ticket() {
    let rig = rig(FaultSettings::default()).await;
    let filed = rig
        .sim
        .citizen_act(Some(CitizenAction::File), None)
        .unwrap();
    pull_all_at(&rig.puller, &rig.clock).await;
    let id = rig
        .store
        .ticket_for_case(&filed.case_id)
        .await
        .unwrap()
        .unwrap();
    rig.sim
        .citizen_act(Some(CitizenAction::Detail), Some(&filed.case_id))
        .unwrap();
    assert_eq!(pull_all_at(&rig.puller, &rig.clock).await.applied, 1);

    // The municipality resolves it; the resolution reaches the platform.
    rig.store
        .apply_action(
            ctx(),
            id,
            None,
            Action::Resolve {
                resolution: Resolution {
                    code: ResolutionCode::Fixed,
                    text: "تمت المعالجة".into(),
                },
            },
        )
        .await
        .unwrap();
    drain(&rig).await;
    rig.sim
        .citizen_act(Some(CitizenAction::Rate), Some(&filed.case_id))
        .unwrap();
    rig.sim
        .citizen_act(Some(CitizenAction::Reopen), Some(&filed.case_id))
        .unwrap();
    let report = pull_all_at(&rig.puller, &rig.clock).await;
    assert_eq!(report.applied, 2, "{report:?}");

    let ticket = rig.store.get_ticket(id).await.unwrap().unwrap();
    let rated = rig.sim.state();
    let case = &rated
        .cases
        .iter()
        .find(|r| r.case.case_id == filed.case_id)
        .unwrap()
        .case;
    let satisfaction = ticket.satisfaction.expect("the rating reached the ticket");
    assert_eq!(satisfaction.score(), case.ratings[0].score);
    assert_eq!(ticket.status, Status::Reopened);
    let events = rig
        .store
        .list_ticket_events(id, 0, 100)
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.record.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Commented,
            EventKind::StatusChanged,
            EventKind::Rated,
            EventKind::StatusChanged,
        ]
    );
}

#[tokio::test]
async fn the_pull_resumes_after_a_restart_and_a_replayed_feed_changes_nothing() {
    let rig = rig(FaultSettings::default()).await;
    for _ in 0..10 {
        rig.sim
            .citizen_act(Some(CitizenAction::File), None)
            .unwrap();
    }
    assert_eq!(pull_all_at(&rig.puller, &rig.clock).await.created, 10);
    let cursor = rig.store.pull_state().await.unwrap().cursor;
    assert!(cursor.is_some());

    // A new process on the same database resumes after the last applied page.
    rig.store.close().await;
    let store = open(&rig.db, &rig.clock).await;
    assert_eq!(store.pull_state().await.unwrap().cursor, cursor);
    for _ in 0..4 {
        rig.sim
            .citizen_act(Some(CitizenAction::File), None)
            .unwrap();
    }
    let again = puller(store.clone(), rig.client.clone(), &rig.clock);
    let report = pull_all_at(&again, &rig.clock).await;
    assert_eq!((report.changes, report.created), (4, 4));

    // The whole feed delivered again (as after a reset, or a cursor the platform expired):
    // every change is recognised, nothing is applied twice.
    let page = rig.client.changes(None, 1000).await.unwrap();
    let mapping = Mapping::v1().unwrap();
    let inbound: Vec<_> = page
        .changes
        .iter()
        .map(|c| balagh::sync::pull::inbound_change(c, &mapping))
        .collect();
    let outcomes = store
        .apply_platform_changes("national-platform", inbound, None)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 14);
    assert!(
        outcomes
            .iter()
            .all(|o| *o == balagh::store::InboundOutcome::Duplicate),
        "{outcomes:?}"
    );
    let listed = store
        .list_tickets(&balagh::store::TicketQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 14);
}

#[tokio::test]
async fn with_a_fifth_of_calls_failing_every_filed_case_arrives_exactly_once() {
    let faults = FaultSettings::uniform(0.2).with_rate(FaultKind::DuplicateChanges, 0.3);
    let rig = rig(faults).await;
    let mut filed = Vec::new();
    for _ in 0..60 {
        filed.push(
            rig.sim
                .citizen_act(Some(CitizenAction::File), None)
                .unwrap()
                .case_id,
        );
    }
    pull_all_at(&rig.puller, &rig.clock).await;
    drain(&rig).await;
    // The feed may have been read from failed pages again: a last pull finds nothing new.
    let last = pull_all_at(&rig.puller, &rig.clock).await;
    assert_eq!(last.created, 0);

    let listed = rig
        .store
        .list_tickets(&balagh::store::TicketQuery {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut by_case: BTreeMap<String, usize> = BTreeMap::new();
    for case_id in &filed {
        by_case.insert(case_id.clone(), 0);
    }
    for listed in &listed {
        // Each local ticket is the ticket of exactly one case.
        let case_id = rig
            .store
            .platform_case_id(listed.ticket.id)
            .await
            .unwrap()
            .expect("every ticket here came from the platform");
        *by_case.entry(case_id).or_default() += 1;
    }
    let lost = by_case.values().filter(|n| **n == 0).count();
    let duplicated = by_case.values().filter(|n| **n > 1).count();
    let unexpected = by_case.len() - filed.len();
    let state = rig.sim.state();
    let faults: u64 = state.faults.counts.values().sum();
    let receipts_missing = state
        .cases
        .iter()
        .filter(|r| r.case.entity_reference.is_none())
        .count();
    let repeated_pages = state
        .faults
        .counts
        .get(&FaultKind::DuplicateChanges)
        .copied()
        .unwrap_or(0);
    let totals = rig.puller.health().totals;
    eprintln!(
        "pull under faults: {} cases filed, {faults} faults injected ({repeated_pages} pages repeating earlier changes), {} changes read, {} recognised as duplicates, lost={lost} duplicated={duplicated} unexpected={unexpected} receipts_missing={receipts_missing}",
        filed.len(),
        totals.changes,
        totals.duplicate,
    );
    assert!(
        repeated_pages > 0 && totals.duplicate > 0,
        "the feed repeated changes and the pull recognised them"
    );
    assert!(faults > 5, "faults were injected ({faults})");
    assert_eq!(
        (lost, duplicated, unexpected, receipts_missing),
        (0, 0, 0, 0)
    );
}

#[tokio::test]
async fn the_reconcile_sweep_repairs_drift_and_reports_every_repair() {
    let rig = rig(FaultSettings::default()).await;
    // Two cases the pull took in, and whose receipts went back: in sync.
    for _ in 0..2 {
        rig.sim
            .citizen_act(Some(CitizenAction::File), None)
            .unwrap();
    }
    pull_all_at(&rig.puller, &rig.clock).await;
    drain(&rig).await;
    let report = rig.puller.reconcile().await.unwrap();
    assert_eq!((report.cases, report.in_sync, report.repairs()), (2, 2, 0));

    // Drift 1: a case the pull has not seen (its filing is only in the feed). The sweep takes
    // it in without moving the pull cursor; the pull later recognises it.
    let missed = rig
        .sim
        .citizen_act(Some(CitizenAction::File), None)
        .unwrap();
    let cursor_before = rig.store.pull_state().await.unwrap().cursor;
    let report = rig.puller.reconcile().await.unwrap();
    assert_eq!(report.taken_in, 1, "{report:?}");
    assert!(
        rig.store
            .ticket_for_case(&missed.case_id)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(rig.store.pull_state().await.unwrap().cursor, cursor_before);
    assert_eq!(pull_all_at(&rig.puller, &rig.clock).await.created, 0);

    // Drift 2: the platform shows a status the ticket does not have (changed there by
    // someone else: a manual edit on the platform's portal, or a push lost to a bug). The
    // sweep pushes the ticket's state again and the platform follows.
    drain(&rig).await;
    let case_id = missed.case_id.clone();
    let case = rig.client.get_case(&case_id).await.unwrap();
    rig.client
        .update_case(
            &balagh::platform::client::IdempotencyKey::parse("edited-on-the-portal").unwrap(),
            &case_id,
            case.version,
            &balagh::platform::contract::CaseUpdate {
                status: Some("ST60".into()),
                status_reason: Some("خارج الاختصاص".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let report = rig.puller.reconcile().await.unwrap();
    assert_eq!((report.repushed, report.in_sync), (1, 2), "{report:?}");
    // A second sweep before the repair is delivered leaves it to the queue.
    let report = rig.puller.reconcile().await.unwrap();
    assert_eq!(
        (report.repushed, report.awaiting_queue),
        (0, 1),
        "{report:?}"
    );
    drain(&rig).await;
    let case = rig.client.get_case(&case_id).await.unwrap();
    assert_eq!(
        case.status, "ST20",
        "the platform shows the ticket's status again"
    );
    let report = rig.puller.reconcile().await.unwrap();
    assert_eq!((report.in_sync, report.repairs()), (3, 0), "{report:?}");
}
