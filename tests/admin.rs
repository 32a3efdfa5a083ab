//! The admin HTTP port over real HTTP: liveness, readiness, and Prometheus metrics that count
//! real gRPC calls by method and status.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use balagh::grpc::proto;
use common::*;

#[tokio::test]
async fn liveness_readiness_and_metrics_of_real_calls() {
    let mut app = spawn_app().await;
    assert_eq!(http_get(app.admin, "/livez").await.0, 200);
    let (status, body) = http_get(app.admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready"));

    create(&mut app, pothole_report()).await;
    create(&mut app, pothole_report()).await;
    let missing = app
        .tickets
        .get_ticket(proto::GetTicketRequest {
            reveal_personal_data: false,
            lookup: Some(proto::get_ticket_request::Lookup::Id(
                "0190d7a4-0000-7000-8000-000000000000".into(),
            )),
        })
        .await;
    assert!(missing.is_err());
    let stream = app
        .tickets
        .watch_tickets(proto::WatchTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let (status, metrics) = http_get(app.admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"balagh_grpc_requests_total{method="/balagh.v1.TicketService/CreateTicket",code="Ok"} 2"#,
        r#"balagh_grpc_requests_total{method="/balagh.v1.TicketService/GetTicket",code="NotFound"} 1"#,
        "balagh_watch_streams_open 1",
        "balagh_event_log_latest_cursor 2",
        r#"balagh_outbox_entries{state="pending"} 0"#,
        r#"balagh_outbox_entries{state="dead"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("balagh_grpc_request_duration_seconds_bucket"));
    assert!(
        !metrics.contains("Test Citizen"),
        "no personal data in metrics"
    );
    drop(stream);
    app.stop().await;
}

#[tokio::test]
async fn readiness_is_503_while_not_serving() {
    let app = spawn_app().await;
    // The same admin router, over real HTTP, with the serving flag down (as during a drain).
    let store = balagh::store::open_store(
        &app.db.url,
        16,
        16,
        1,
        Default::default(),
        Arc::new(balagh::domain::SystemClock),
    )
    .await
    .unwrap();
    let (feed, _task) = balagh::grpc::watch::ChangeFeed::start(
        store.clone(),
        &Default::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let state = balagh::admin::AdminState {
        metrics: balagh::metrics::Metrics::new(),
        store,
        feed,
        serving: Arc::new(AtomicBool::new(false)),
        clock: Arc::new(balagh::domain::SystemClock),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(balagh::admin::serve(listener, state, stop.clone()));
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not serving"));
    assert_eq!(http_get(addr, "/livez").await.0, 200);
    stop.cancel();
    server.await.unwrap();
}
