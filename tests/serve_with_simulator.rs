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
    let mut sync = SyncServiceClient::new(app.channel.clone());
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let status = sync
                .get_sync_status(proto::GetSyncStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if status.delivered == 1 {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the complaint is pushed within 20 s");
    assert_eq!((delivered.pending, delivered.dead), (0, 0));
    app.stop().await;
}
