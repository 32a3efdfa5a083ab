//! SyncService over real gRPC: the outbox's status and its dead letters, inspected and
//! re-driven. A second store handle on the same database plays the worker that gave up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use balagh::grpc::proto;
use balagh::grpc::proto::sync_service_client::SyncServiceClient;
use balagh::store::{PushOutcome, open_store};
use common::*;
use tonic::Code;

#[tokio::test]
async fn dead_letters_are_listed_inspected_and_redriven() {
    let mut app = spawn_app().await;
    let mut sync = SyncServiceClient::new(app.channel.clone());
    let mut complaint = pothole_report();
    complaint.r#type = proto::TicketType::Complaint.into();
    complaint.category = "staff_conduct".into();
    let ticket = create(&mut app, complaint).await;
    // A report is not synchronised by default: one push is owed, for the complaint.
    create(&mut app, pothole_report()).await;
    let status = sync
        .get_sync_status(proto::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.pending, status.dead), (1, 0));
    assert!(status.oldest_pending_time.is_some());

    // The worker gives up on it.
    let worker = open_store(
        &app.db.url,
        8,
        8,
        1,
        Default::default(),
        Arc::new(balagh::domain::SystemClock),
    )
    .await
    .unwrap();
    let claimed = worker
        .claim_outbox("test-worker", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        worker
            .record_push_outcome(
                claimed[0].id,
                "test-worker",
                PushOutcome::Dead {
                    error: "422 unknown category".into()
                }
            )
            .await
            .unwrap()
    );

    let status = sync
        .get_sync_status(proto::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.pending, status.dead), (0, 1));
    let dead = sync
        .list_dead_letters(proto::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.entries.len(), 1);
    let entry = &dead.entries[0];
    assert_eq!(
        (entry.reference.as_str(), entry.kind.as_str()),
        (ticket.reference.as_str(), "create_case")
    );
    assert_eq!(entry.last_error, "422 unknown category");
    assert_eq!(entry.event.as_ref().unwrap().ticket_id, ticket.id);
    assert!(dead.next_page_token.is_empty());

    let redriven = sync
        .redrive_dead_letter(proto::RedriveDeadLetterRequest { id: entry.id })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(redriven.n_attempts, 0);
    // A retried re-drive is fine: the entry is already back in the queue.
    sync.redrive_dead_letter(proto::RedriveDeadLetterRequest { id: entry.id })
        .await
        .unwrap();
    let status = sync
        .get_sync_status(proto::GetSyncStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.pending, status.dead), (1, 0));

    expect_error(
        sync.redrive_dead_letter(proto::RedriveDeadLetterRequest { id: 999_999 })
            .await,
        Code::NotFound,
        "DEAD_LETTER_NOT_FOUND",
    );
    let fields = expect_error(
        sync.redrive_dead_letter(proto::RedriveDeadLetterRequest { id: 0 })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["id"]);
    let fields = expect_error(
        sync.list_dead_letters(proto::ListDeadLettersRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["page_size"]);
    worker.close().await;
    app.stop().await;
}
