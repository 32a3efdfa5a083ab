//! No personal data in logs: a full scenario (tickets created, read with a reveal, listed,
//! edited, watched, worked, resolved, pushed to the simulated national platform, bad input
//! refused) runs with every target logging at TRACE, and the captured output is searched for
//! the reporter's name, phone (in every written form), e-mail and civil ID. The simulated
//! national platform's whole state is searched too (the contract takes no reporter data, so
//! none is sent), and so are the metrics the admin port serves.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balagh::grpc::proto;
use common::*;

/// Everything logged, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_scenario_at_trace_level_logs_no_personal_data() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test process's only subscriber");

    let (mut app, platform) = spawn_app_beside_simulator().await;
    let mut watch = app
        .tickets
        .watch_tickets(proto::WatchTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ticket = create(&mut app, identified_complaint()).await;
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a change in time")
        .unwrap()
        .unwrap();
    assert_eq!(first.ticket.unwrap().reporter.unwrap().name, REPORTER_NAME);
    app.tickets
        .get_ticket(proto::GetTicketRequest {
            reveal_personal_data: true,
            lookup: Some(proto::get_ticket_request::Lookup::Id(ticket.id.clone())),
        })
        .await
        .unwrap();
    app.tickets
        .list_tickets(proto::ListTicketsRequest {
            text: "Testiya".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut edit = ticket.clone();
    edit.reporter.as_mut().unwrap().email = "zainab.other@mail.example.om".into();
    app.tickets
        .update_ticket(proto::UpdateTicketRequest {
            ticket: Some(edit),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["reporter".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assign(
        &mut app,
        &ticket.id,
        "health_affairs",
        proto::SupportLine::Second,
    )
    .await;
    start_work(&mut app, &ticket.id).await;
    resolve(&mut app, &ticket.id).await;
    // Bad input that carries personal data is refused; the refusal is logged without it.
    let mut bad = identified_complaint();
    bad.reporter.as_mut().unwrap().phone = format!("{REPORTER_PHONE_DIGITS}x");
    bad.reporter.as_mut().unwrap().email = format!("{REPORTER_NAME}@");
    app.tickets
        .create_ticket(bad)
        .await
        .expect_err("an invalid phone and e-mail");
    // The pushes reach the simulated platform.
    tokio::time::timeout(
        Duration::from_secs(30),
        wait_for_sync_status(&app, |s| s.delivered >= 1 && s.pending == 0),
    )
    .await
    .expect("the pushes are delivered");
    let (code, metrics) = http_get(app.admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("balagh_grpc_requests_total"));
    let (code, platform_state) = http_get(platform, "/admin/state").await;
    assert_eq!(code, 200);
    assert!(
        platform_state.contains(&ticket.reference),
        "the case is on the platform"
    );
    app.stop().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 100,
        "TRACE logging captured too little to mean anything: {} lines",
        logs.lines().count()
    );
    assert!(
        logs.contains("ticket created"),
        "the service's own events are captured"
    );
    let searched = [
        ("the logs", &logs),
        ("the platform's state", &platform_state),
        ("the metrics", &metrics),
    ];
    for needle in [
        REPORTER_NAME,
        "Zainab",
        "Testiya",
        REPORTER_PHONE_DIGITS,
        "9123 4567",
        "+96891234567",
        REPORTER_EMAIL,
        "zainab.other",
        REPORTER_CIVIL_ID,
    ] {
        for (place, text) in &searched {
            let hits: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(needle))
                .take(3)
                .collect();
            assert!(
                hits.is_empty(),
                "personal data {needle:?} in {place}:\n{}",
                hits.join("\n")
            );
        }
    }
}
