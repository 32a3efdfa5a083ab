//! Load shedding end to end: a server allowed one call at a time answers a second call, made
//! while the first is still being worked on, at once with `RESOURCE_EXHAUSTED`, reason
//! `OVERLOADED` and a `RetryInfo`; health checks still answer; once the first call is done
//! the next one is served.
//!
//! The first call is a `SyncService.TriggerPull` against a simulated national platform that
//! holds every answer 1.5 s, so it is surely in flight while the second call is made.

mod common;

use std::sync::Arc;
use std::time::Duration;

use balagh::config::{PlatformMode, PlatformSettings};
use balagh::domain::SystemClock;
use balagh::grpc::proto;
use balagh::grpc::proto::sync_service_client::SyncServiceClient;
use balagh::platform::client::ClientSecret;
use balagh::platform::simulator::{
    FaultKind, FaultSettings, Simulator, SimulatorConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use common::{TestDb, spawn_app_with};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_beyond_the_limit_is_shed_with_retry_info_and_probes_still_answer() {
    let stop = tokio_util::sync::CancellationToken::new();
    let config = SimulatorConfig {
        faults: FaultSettings {
            rates: [(FaultKind::Slow, 1.0)].into_iter().collect(),
            slow_ms: 1500,
            ..FaultSettings::default()
        },
        ..SimulatorConfig::for_tests()
    };
    let entity = config.entity.clone();
    let simulator = Simulator::start(
        config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        stop.clone(),
    )
    .unwrap();
    let app = spawn_app_with(
        TestDb::fresh().await,
        |c| {
            c.limits.max_in_flight = 1;
            c.platform = PlatformMode::Remote(PlatformSettings {
                base_url: simulator.base_url(),
                entity,
                client_id: TEST_CLIENT_ID.to_owned(),
                client_secret: ClientSecret::new(TEST_CLIENT_SECRET.to_owned()),
            });
        },
        Arc::new(SystemClock),
    )
    .await;

    // The one slot: a pull that waits on the slow platform.
    let mut sync = SyncServiceClient::new(app.channel.clone());
    let pull = tokio::spawn(async move { sync.trigger_pull(proto::TriggerPullRequest {}).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pull.is_finished(), "the pull is still in flight");

    // A second call is shed at once, saying why and when to retry.
    let mut tickets = app.tickets.clone();
    let shed = tickets
        .list_tickets(proto::ListTicketsRequest::default())
        .await
        .expect_err("shed");
    assert_eq!(shed.code(), Code::ResourceExhausted, "{shed:?}");
    let details = shed.get_error_details();
    assert_eq!(
        details.error_info().expect("ErrorInfo").reason,
        "OVERLOADED"
    );
    assert_eq!(
        details.retry_info().expect("RetryInfo").retry_delay,
        Some(Duration::from_secs(1))
    );
    // Probes are not shed.
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers while the server is at its limit");

    // Once the pull is done, its slot serves the next call.
    tokio::time::timeout(Duration::from_secs(30), pull)
        .await
        .expect("the pull ends")
        .unwrap()
        .expect("the pull succeeds");
    tickets
        .list_tickets(proto::ListTicketsRequest::default())
        .await
        .expect("served once the slot is free");
    let mut app = app;
    app.stop().await;
    stop.cancel();
}
