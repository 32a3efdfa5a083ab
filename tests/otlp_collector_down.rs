//! A collector that is down never stops the service: with trace export pointed at a port
//! where nothing listens, the server starts, answers every call (each well within a generous
//! timeout, with no timing asserted beyond it), stops, and trace export shuts down within
//! its bound; the failed exports cost a warning in the log, nothing more.
//!
//! The global subscriber is installed once per process, so this file holds one test.

mod common;

use std::time::Duration;

use balagh::config::{LogFormat, TraceExportConfig};
use balagh::grpc::proto;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_answered_while_the_collector_is_down() {
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let traces = TraceExportConfig::new(
        &format!("http://{down}"),
        "the test's endpoint",
        "balagh",
        1.0,
    )
    .expect("valid");
    let telemetry = balagh::telemetry::init_with_traces(LogFormat::Text, Some(&traces))
        .expect("telemetry starts although the collector is down");
    assert!(
        telemetry.is_exporting(),
        "this test process's only subscriber"
    );

    let mut app = spawn_app().await;
    for _ in 0..20 {
        let call = async {
            let ticket = create(&mut app, pothole_report()).await;
            app.tickets
                .get_ticket(proto::GetTicketRequest {
                    reveal_personal_data: false,
                    lookup: Some(proto::get_ticket_request::Lookup::Id(ticket.id)),
                })
                .await
                .expect("get")
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("a create and a get answered while the collector is down");
    }
    tokio::time::timeout(Duration::from_secs(30), app.stop())
        .await
        .expect("the server stops");
    tokio::time::timeout(Duration::from_secs(30), telemetry.shutdown())
        .await
        .expect("trace export gives up on the buffered spans within its bound");
}
