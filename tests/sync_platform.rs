//! The sync worker pushing to the platform simulator over real HTTP: the happy path end to end,
//! then a bounded run with a fifth of all platform calls failing in every injected way, after
//! which every ticket meant for the platform exists there exactly once, in its final state.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use balagh::domain::lifecycle::Action;
use balagh::domain::ticket::{
    Channel, Location, NewTicket, Reporter, Resolution, ResolutionCode, TicketType, Visibility,
};
use balagh::domain::values::{Code, PhoneNumber};
use balagh::domain::{ManualClock, Timestamp};
use balagh::platform::client::{ClientSecret, PlatformClient, PlatformClientConfig};
use balagh::platform::mapping::Mapping;
use balagh::platform::simulator::{
    FaultSettings, Simulator, SimulatorConfig, SimulatorHandle, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use balagh::store::{Store, WriteContext, open_store};
use balagh::sync::platform_pusher::PlatformPusher;
use balagh::sync::{SyncSettings, SyncWorker};
use common::TestDb;
use tokio_util::sync::CancellationToken;

fn ctx() -> WriteContext {
    WriteContext {
        actor: "tester".into(),
        request: None,
        reach: None,
    }
}

fn complaint(i: usize) -> NewTicket {
    NewTicket {
        ticket_type: TicketType::Complaint,
        channel: Channel::App,
        category: Code::parse("category", "waste_collection").unwrap(),
        priority: None,
        subject: format!("شكوى رقم {i}: لم تجمع النفايات"),
        description: "الحاويات ممتلئة".into(),
        reporter: Reporter::identified(
            "reporter",
            "Citizen".into(),
            Some(PhoneNumber::parse("phone", "99000000").unwrap()),
            None,
            None,
        )
        .unwrap(),
        location: Location {
            wilayat: Some(Code::parse("w", "as_seeb").unwrap()),
            area: None,
            point: None,
        },
        attachments: vec![],
    }
}

struct Rig {
    store: Arc<dyn Store>,
    clock: ManualClock,
    sim: SimulatorHandle,
    worker: SyncWorker,
    _stop: StopOnDrop,
    _db: Arc<TestDb>,
}

struct StopOnDrop(CancellationToken);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn rig(faults: FaultSettings) -> Rig {
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
    let shutdown = CancellationToken::new();
    let mut config = SimulatorConfig::for_tests();
    config.faults = faults;
    config.seed = 7;
    // One clock for both sides: moving it ends maintenance windows as it makes retries due.
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
    let client = PlatformClient::new(client_config).unwrap();
    let pusher = PlatformPusher::new(
        Arc::new(client),
        Arc::new(Mapping::v1().unwrap()),
        store.clone(),
    );
    let settings = SyncSettings {
        breaker_threshold: 1_000,
        ..SyncSettings::default()
    };
    let worker = SyncWorker::new(
        store.clone(),
        Arc::new(pusher),
        Arc::new(clock.clone()),
        settings,
    );
    Rig {
        store,
        clock,
        sim,
        worker,
        _stop: StopOnDrop(shutdown),
        _db: db,
    }
}

/// Drains the outbox, moving the worker's clock past retry times, until nothing is pending.
async fn drain(rig: &Rig) {
    for _ in 0..400 {
        rig.worker.drain_once().await.unwrap();
        let status = rig.store.outbox_status().await.unwrap();
        if status.pending == 0 {
            return;
        }
        rig.clock.advance_micros(30 * 60 * 1_000_000);
    }
    let dead = rig
        .store
        .list_outbox(balagh::domain::sync::OutboxState::Dead, 0, 5)
        .await
        .unwrap();
    let errors: Vec<_> = dead
        .iter()
        .map(|e| (e.kind, e.last_error.clone()))
        .collect();
    panic!(
        "the outbox did not drain: {:?}; dead letters: {errors:?}",
        rig.store.outbox_status().await.unwrap()
    );
}

#[tokio::test]
async fn a_complaint_its_reply_and_its_resolution_reach_the_platform() {
    let rig = rig(FaultSettings::default()).await;
    let t = rig.store.create_ticket(ctx(), complaint(1)).await.unwrap();
    rig.store
        .apply_action(
            ctx(),
            t.id,
            None,
            Action::Comment {
                text: "نعتذر، سيتم الجمع اليوم".into(),
                visibility: Visibility::Public,
            },
        )
        .await
        .unwrap();
    rig.store
        .apply_action(
            ctx(),
            t.id,
            None,
            Action::Resolve {
                resolution: Resolution {
                    code: ResolutionCode::Fixed,
                    text: "تم جمع النفايات".into(),
                },
            },
        )
        .await
        .unwrap();
    drain(&rig).await;
    let state = rig.sim.state();
    assert_eq!(state.cases.len(), 1);
    let case = &state.cases[0].case;
    assert_eq!(
        case.entity_reference.as_deref(),
        Some(t.reference.to_string().as_str())
    );
    let resolved = Mapping::v1()
        .unwrap()
        .status_to_platform(balagh::domain::ticket::Status::Resolved)
        .unwrap()
        .to_owned();
    assert_eq!(case.status, resolved);
    assert_eq!(
        rig.store.platform_case_id(t.id).await.unwrap().as_deref(),
        Some(case.case_id.as_str())
    );
    let status = rig.store.outbox_status().await.unwrap();
    assert_eq!((status.delivered, status.dead), (3, 0));
}

#[tokio::test]
async fn with_a_fifth_of_calls_failing_every_ticket_arrives_exactly_once_in_its_final_state() {
    let rig = rig(FaultSettings::uniform(0.2)).await;
    let mut tickets = Vec::new();
    for i in 0..25 {
        let t = rig.store.create_ticket(ctx(), complaint(i)).await.unwrap();
        rig.store
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
        if i % 2 == 0 {
            rig.store
                .apply_action(
                    ctx(),
                    t.id,
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
        }
        tickets.push(t);
    }
    drain(&rig).await;
    let state = rig.sim.state();
    let faults: u64 = state.faults.counts.values().sum();
    assert!(faults > 10, "faults were injected ({faults})");
    let status = rig.store.outbox_status().await.unwrap();
    assert_eq!(status.dead, 0, "nothing given up");
    // Jepsen-style total check by entity reference.
    let mut at_platform: BTreeMap<String, Vec<&balagh::platform::contract::Case>> = BTreeMap::new();
    for record in &state.cases {
        at_platform
            .entry(record.case.entity_reference.clone().unwrap_or_default())
            .or_default()
            .push(&record.case);
    }
    let mapping = Mapping::v1().unwrap();
    let (mut lost, mut duplicated, mut wrong_state) = (0, 0, 0);
    for (i, t) in tickets.iter().enumerate() {
        match at_platform.get(&t.reference.to_string()).map(Vec::as_slice) {
            None | Some([]) => lost += 1,
            Some([case]) => {
                let want = if i % 2 == 0 {
                    balagh::domain::ticket::Status::Resolved
                } else {
                    balagh::domain::ticket::Status::New
                };
                if case.status != mapping.status_to_platform(want).unwrap() {
                    wrong_state += 1;
                }
            }
            Some(_) => duplicated += 1,
        }
    }
    let unexpected = at_platform.len().saturating_sub(tickets.len());
    eprintln!(
        "sync under faults: {} tickets, {faults} faults injected, lost={lost} duplicated={duplicated} unexpected={unexpected} wrong_state={wrong_state}",
        tickets.len()
    );
    assert_eq!((lost, duplicated, unexpected, wrong_state), (0, 0, 0, 0));
}
