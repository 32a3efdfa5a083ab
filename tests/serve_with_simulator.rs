//! `balagh serve --with-simulator`, as a newcomer runs it: a complaint created over gRPC is
//! pushed by the sync worker to the platform simulator beside the service.

mod common;

use std::sync::Arc;
use std::time::Duration;

use balagh::config::PlatformMode;
use balagh::grpc::proto;
use balagh::grpc::proto::sync_service_client::SyncServiceClient;
use common::*;

#[tokio::test]
async fn a_complaint_reaches_the_simulated_platform() {
    let mut app = spawn_app_with(
        TestDb::fresh().await,
        |c| {
            c.platform = PlatformMode::Simulator {
                listen: "127.0.0.1:0".parse().unwrap(),
                citizen_rate: 0.0,
            }
        },
        Arc::new(balagh::domain::SystemClock),
    )
    .await;
    let mut complaint = pothole_report();
    complaint.r#type = proto::TicketType::Complaint.into();
    complaint.category = "waste_collection".into();
    create(&mut app, complaint).await;
    let delivered = tokio::time::timeout(
        Duration::from_secs(20),
        wait_for_sync_status(&app, |s| s.delivered == 1),
    )
    .await
    .expect("the complaint is pushed within 20 s");
    assert_eq!((delivered.pending, delivered.dead), (0, 0));
    app.stop().await;
}

/// A free loopback port for the in-process simulator, so the test can play its citizens.
fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_case_filed_on_the_platform_arrives_and_the_sync_service_reports_the_pull() {
    let simulator = free_port();
    let mut app = spawn_app_with(
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
    // The simulator starts with the server's background tasks: wait (bounded) until it listens.
    let http = reqwest::Client::new();
    let mut answer = None;
    for _ in 0..100 {
        match http
            .post(format!("http://{simulator}/admin/citizens/act"))
            .json(&serde_json::json!({"action": "file", "count": 2}))
            .send()
            .await
        {
            Ok(response) => {
                answer = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let filed: serde_json::Value = answer
        .expect("the simulator listens within 5 s")
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filed.as_array().map(Vec::len), Some(2));

    let mut sync = SyncServiceClient::new(app.channel.clone());
    let pulled = sync
        .trigger_pull(proto::TriggerPullRequest {})
        .await
        .unwrap()
        .into_inner();
    // The worker's own pull may have taken them in first: between both, two tickets.
    let listed = app
        .tickets
        .list_tickets(proto::ListTicketsRequest {
            channels: vec![proto::Channel::NationalPlatform.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tickets.len(), 2, "{pulled:?}");
    assert!(pulled.created <= 2);

    let status = sync
        .get_sync_status(proto::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.platform_configured);
    assert_eq!(status.breaker_state, "CLOSED");
    assert!(!status.pull_cursor.is_empty());
    assert!(status.last_pull_time.is_some());
    assert!(status.pulled_changes >= 2);
    assert_eq!(status.last_pull_error, "");

    let swept = sync
        .trigger_reconcile(proto::TriggerReconcileRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(swept.cases, 2);
    assert_eq!((swept.taken_in, swept.repushed, swept.refused), (0, 0, 0));
    app.stop().await;
}

#[tokio::test]
async fn without_a_platform_pull_and_reconcile_are_refused_and_the_status_says_so() {
    let mut app = spawn_app().await;
    let mut sync = SyncServiceClient::new(app.channel.clone());
    expect_error(
        sync.trigger_pull(proto::TriggerPullRequest {}).await,
        tonic::Code::FailedPrecondition,
        "PLATFORM_NOT_CONFIGURED",
    );
    expect_error(
        sync.trigger_reconcile(proto::TriggerReconcileRequest {})
            .await,
        tonic::Code::FailedPrecondition,
        "PLATFORM_NOT_CONFIGURED",
    );
    let status = sync
        .get_sync_status(proto::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.platform_configured);
    assert_eq!(status.pull_cursor, "");
    app.stop().await;
}
