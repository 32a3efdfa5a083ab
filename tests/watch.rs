//! WatchTickets end to end over real gRPC: resume without gap or duplicate under concurrent
//! writers, filters, snapshots, expired cursors, heartbeats, slow consumers and shutdown.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use balagh::domain::{ManualClock, Timestamp};
use balagh::grpc::proto;
use balagh::grpc::proto::ticket_service_client::TicketServiceClient;
use balagh::store::open_store;
use common::*;
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(20);

fn watch_request(cursor: &str, filter: Option<proto::TicketFilter>) -> proto::WatchTicketsRequest {
    proto::WatchTicketsRequest {
        cursor: cursor.to_owned(),
        filter,
        send_snapshot: false,
    }
}

async fn open(
    client: &mut TicketServiceClient<tonic::transport::Channel>,
    request: proto::WatchTicketsRequest,
) -> Streaming<proto::WatchTicketsResponse> {
    client
        .watch_tickets(request)
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut Streaming<proto::WatchTicketsResponse>) -> proto::WatchTicketsResponse {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
        .expect("not an error")
}

/// The next message that is not a heartbeat.
async fn next_change(
    stream: &mut Streaming<proto::WatchTicketsResponse>,
) -> proto::WatchTicketsResponse {
    loop {
        let message = next(stream).await;
        if message.kind() != proto::ChangeKind::Heartbeat {
            return message;
        }
    }
}

fn cursor_number(cursor: &str) -> i64 {
    cursor.strip_prefix("v1.").unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_watcher_that_reconnects_from_its_cursor_misses_nothing_and_sees_nothing_twice() {
    let mut app = spawn_app().await;
    let mut watcher = app.tickets.clone();
    let mut stream = open(&mut watcher, watch_request("", None)).await;

    // Four writers at once: creates and comments, 4 x 30 changes.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let mut client = app.tickets.clone();
        writers.spawn(async move {
            let mut id = String::new();
            for i in 0..30 {
                if i % 3 == 0 {
                    let mut request = pothole_report();
                    request.subject = format!("writer {w} ticket {i}");
                    id = client
                        .create_ticket(request)
                        .await
                        .unwrap()
                        .into_inner()
                        .ticket
                        .unwrap()
                        .id;
                } else {
                    client
                        .add_comment(proto::AddCommentRequest {
                            ticket_id: id.clone(),
                            text: format!("comment {i}"),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            }
        });
    }
    let mut seen = Vec::new();
    let mut n_reconnects = 0;
    while seen.len() < 120 {
        let message = next_change(&mut stream).await;
        seen.push(cursor_number(&message.cursor));
        // Drop the connection every 17 changes and resume from the last cursor.
        if seen.len() % 17 == 0 {
            drop(stream);
            n_reconnects += 1;
            stream = open(&mut watcher, watch_request(&message.cursor, None)).await;
        }
    }
    while writers.join_next().await.is_some() {}
    assert!(n_reconnects >= 7);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "cursor order, no duplicate"
    );
    // Exactly the log: every event of every ticket, nothing else.
    let tickets = app
        .tickets
        .list_tickets(proto::ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tickets;
    let mut logged = Vec::new();
    for ticket in tickets {
        let events = app
            .tickets
            .list_ticket_events(proto::ListTicketEventsRequest {
                ticket_id: ticket.id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        logged.extend(events.into_iter().map(|e| e.cursor));
    }
    logged.sort();
    assert_eq!(seen, logged);
    drop(stream);
    app.stop().await;
}

#[tokio::test]
async fn a_directorate_watcher_never_sees_another_directorates_tickets() {
    let mut app = spawn_app().await;
    let mut client = app.tickets.clone();
    let health_only = Some(proto::TicketFilter {
        directorates: vec!["health_affairs".into()],
        ..Default::default()
    });
    let mut stream = open(&mut client, watch_request("", health_only)).await;
    let mut waste = pothole_report();
    waste.category = "waste_collection".into();
    for i in 0..10 {
        create(
            &mut app,
            if i % 2 == 0 {
                pothole_report()
            } else {
                waste.clone()
            },
        )
        .await;
    }
    for _ in 0..5 {
        let message = next_change(&mut stream).await;
        assert_eq!(message.kind(), proto::ChangeKind::Created);
        let ticket = message.ticket.unwrap();
        assert_eq!(ticket.assignment.unwrap().directorate, "health_affairs");
        assert_eq!(ticket.category, "waste_collection");
    }
    // A roads ticket reassigned to health affairs becomes visible with that change.
    let roads = create(&mut app, pothole_report()).await;
    client
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: roads.id.clone(),
            directorate: "health_affairs".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let message = next_change(&mut stream).await;
    assert_eq!(message.kind(), proto::ChangeKind::Assigned);
    assert_eq!(message.ticket.unwrap().id, roads.id);
    assert_eq!(message.event.unwrap().ticket_id, roads.id);
    drop(stream);
    app.stop().await;
}

#[tokio::test]
async fn list_then_watch_sends_a_consistent_snapshot_then_the_changes_after_it() {
    let mut app = spawn_app().await;
    let mut existing = HashSet::new();
    for _ in 0..3 {
        existing.insert(create(&mut app, pothole_report()).await.id);
    }
    let mut client = app.tickets.clone();
    let mut stream = open(
        &mut client,
        proto::WatchTicketsRequest {
            cursor: String::new(),
            filter: Some(proto::TicketFilter {
                statuses: vec![proto::TicketStatus::New.into()],
                ..Default::default()
            }),
            send_snapshot: true,
        },
    )
    .await;
    let mut snapshot = HashSet::new();
    let end = loop {
        let message = next(&mut stream).await;
        match message.kind() {
            proto::ChangeKind::Snapshot => {
                snapshot.insert(message.ticket.unwrap().id);
            }
            proto::ChangeKind::SnapshotEnd => break message.cursor,
            other => panic!("unexpected {other:?} before the end of the snapshot"),
        }
    };
    assert_eq!(snapshot, existing);
    let later = create(&mut app, pothole_report()).await;
    let message = next_change(&mut stream).await;
    assert_eq!(message.kind(), proto::ChangeKind::Created);
    assert_eq!(message.ticket.unwrap().id, later.id);
    assert!(cursor_number(&message.cursor) > cursor_number(&end));
    drop(stream);

    // A snapshot larger than allowed is refused with a precise error.
    let mut small = spawn_app_with(
        TestDb::fresh().await,
        |c| c.watch.max_snapshot_tickets = 1,
        Arc::new(balagh::domain::SystemClock),
    )
    .await;
    create(&mut small, pothole_report()).await;
    create(&mut small, pothole_report()).await;
    let refused = small
        .tickets
        .watch_tickets(proto::WatchTicketsRequest {
            send_snapshot: true,
            ..Default::default()
        })
        .await;
    expect_error(refused, Code::FailedPrecondition, "SNAPSHOT_TOO_LARGE");
    small.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn bad_cursors_and_filters_are_refused_precisely() {
    let mut app = spawn_app().await;
    let mut client = app.tickets.clone();
    let fields = expect_error(
        client.watch_tickets(watch_request("yesterday", None)).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["cursor"]);
    let fields = expect_error(
        client.watch_tickets(watch_request("v1.999999", None)).await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["cursor"]);
    let fields = expect_error(
        client
            .watch_tickets(watch_request(
                "",
                Some(proto::TicketFilter {
                    statuses: vec![77],
                    directorates: vec!["Roads!".into()],
                    ..Default::default()
                }),
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELDS",
    );
    assert_eq!(fields, ["filter.directorates[0]", "filter.statuses[0]"]);
    app.stop().await;
}

#[tokio::test]
async fn a_cursor_older_than_the_retention_is_out_of_range_with_the_oldest_valid_cursor() {
    let db = TestDb::fresh().await;
    let start = Timestamp::from_micros(1_780_286_400_000_000);
    let clock = ManualClock::new(start);
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let mut client = app.tickets.clone();
    let mut stream = open(&mut client, watch_request("", None)).await;
    create(&mut app, pothole_report()).await;
    let first_cursor = next_change(&mut stream).await.cursor;
    drop(stream);
    app.stop().await;

    // Eight days later the first change has left the feed.
    clock.advance_micros(8 * 24 * 3600 * 1_000_000);
    let store = open_store(
        &db.url,
        16,
        16,
        1,
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let pruned = store
        .prune_feed(Timestamp::from_micros(
            start.as_micros() + 24 * 3600 * 1_000_000,
        ))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    store.close().await;

    let mut app = spawn_app_with(db, |_| {}, Arc::new(clock)).await;
    let status = app
        .tickets
        .watch_tickets(watch_request("v1.0", None))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(reason(&status), "CURSOR_EXPIRED");
    let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
    assert_eq!(info.metadata.get("oldest_cursor"), Some(&first_cursor));
    // Resuming from the oldest valid cursor works.
    app.tickets
        .watch_tickets(watch_request(&first_cursor, None))
        .await
        .expect("resume at the horizon");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_it_can_resume_from() {
    let mut app = spawn_app_with(
        TestDb::fresh().await,
        |c| c.watch.heartbeat_seconds = 1,
        Arc::new(balagh::domain::SystemClock),
    )
    .await;
    create(&mut app, pothole_report()).await;
    let mut client = app.tickets.clone();
    let mut stream = open(
        &mut client,
        watch_request(
            "",
            Some(proto::TicketFilter {
                directorates: vec!["parks".into()],
                ..Default::default()
            }),
        ),
    )
    .await;
    // Changes the watcher does not follow still move its heartbeat cursor forward.
    let latest = create(&mut app, pothole_report()).await;
    let beat = next(&mut stream).await;
    assert_eq!(beat.kind(), proto::ChangeKind::Heartbeat);
    assert!(beat.ticket.is_none());
    let events = client
        .list_ticket_events(proto::ListTicketEventsRequest {
            ticket_id: latest.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(cursor_number(&beat.cursor), events[0].cursor);
    drop(stream);
    let mut resumed = open(&mut client, watch_request(&beat.cursor, None)).await;
    let mut parks = pothole_report();
    parks.category = "parks_maintenance".into();
    let park = create(&mut app, parks).await;
    let message = next_change(&mut resumed).await;
    assert_eq!(message.ticket.unwrap().id, park.id);
    drop(resumed);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_ended_without_slowing_a_fast_one() {
    let mut app = spawn_app_with(
        TestDb::fresh().await,
        |c| {
            c.watch.send_timeout_seconds = 1;
            c.watch.stream_buffer = 4;
        },
        Arc::new(balagh::domain::SystemClock),
    )
    .await;
    // Separate connections, as separate apps would have. The slow one has small HTTP/2
    // windows, so what it does not read backs up to the server quickly.
    let small_window = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut slow_client = TicketServiceClient::new(small_window);
    let mut fast_client = TicketServiceClient::new(connect(app.addr).await);
    let mut slow = open(&mut slow_client, watch_request("", None)).await;
    let mut fast = open(&mut fast_client, watch_request("", None)).await;
    // Far more than the HTTP/2 windows and send buffers between the two ends can hold.
    let n = 800;
    let mut big = pothole_report();
    big.description = "وصف طويل ".repeat(500);
    let writer = {
        let mut client = app.tickets.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                client.create_ticket(big.clone()).await.unwrap();
            }
        })
    };
    for _ in 0..n {
        assert_eq!(
            next_change(&mut fast).await.kind(),
            proto::ChangeKind::Created
        );
    }
    writer.await.unwrap();
    // The slow reader finally reads: what was buffered, then RESOURCE_EXHAUSTED.
    let mut n_received = 0;
    let ended = loop {
        match tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("in time")
        {
            Some(Ok(_)) => n_received += 1,
            Some(Err(status)) => break status,
            None => panic!("the slow stream ended without a status"),
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert_eq!(reason(&ended), "SLOW_CONSUMER");
    assert!(
        n_received < n,
        "the slow stream was cut short ({n_received} of {n})"
    );
    drop(fast);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_that_falls_behind_memory_and_buffers_catches_up_in_order_without_gaps() {
    // A tiny buffer and ring of recent changes: the stream of a client that does not read for
    // a while falls out of both and must get every change back, in order, from the log and
    // then from memory, once its client reads again.
    let mut app = spawn_app_with(
        TestDb::fresh().await,
        |c| {
            c.watch.stream_buffer = 2;
            c.watch.ring_capacity = 16;
            c.watch.send_timeout_seconds = 600;
        },
        Arc::new(balagh::domain::SystemClock),
    )
    .await;
    let small_window = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let mut late_client = TicketServiceClient::new(small_window);
    let mut late = open(&mut late_client, watch_request("", None)).await;
    // The same directorate twice: still one message per change.
    let roads_twice = Some(proto::TicketFilter {
        directorates: vec!["roads".into(), "roads".into()],
        ..Default::default()
    });
    let mut roads_client = app.tickets.clone();
    let mut roads = open(&mut roads_client, watch_request("", roads_twice)).await;
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while let Some(Ok(message)) = roads.next().await {
            if message.kind() == proto::ChangeKind::Created {
                ids.push(message.ticket.unwrap().id);
            }
        }
        ids
    });

    // Far more than the buffers and HTTP/2 windows between the late client and the server hold.
    let n = 300;
    let mut big = pothole_report();
    big.description = "وصف طويل ".repeat(500);
    let mut waste = pothole_report();
    waste.category = "waste_collection".into();
    let mut created = Vec::new();
    let mut created_roads = Vec::new();
    for i in 0..n {
        let ticket = create(
            &mut app,
            if i % 3 == 0 {
                waste.clone()
            } else {
                big.clone()
            },
        )
        .await;
        if i % 3 != 0 {
            created_roads.push(ticket.id.clone());
        }
        created.push(ticket.id);
    }

    let mut cursors = Vec::new();
    let mut ids = Vec::new();
    while ids.len() < n {
        let message = next_change(&mut late).await;
        cursors.push(cursor_number(&message.cursor));
        ids.push(message.ticket.unwrap().id);
    }
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursor order");
    assert_eq!(ids, created, "every change once, in commit order");
    // Nothing more is owed: the next message is the next change, not a repeat.
    let after = create(&mut app, pothole_report()).await;
    assert_eq!(next_change(&mut late).await.ticket.unwrap().id, after.id);
    created_roads.push(after.id);

    drop(late);
    app.shutdown.cancel();
    let roads_ids = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the roads stream ends at shutdown")
        .unwrap();
    assert_eq!(
        roads_ids, created_roads,
        "only roads tickets, each once, in order"
    );
    app.stop().await;
}

#[tokio::test]
async fn streams_end_with_unavailable_when_the_server_shuts_down() {
    let mut app = spawn_app().await;
    let mut client = app.tickets.clone();
    let mut stream = open(&mut client, watch_request("", None)).await;
    create(&mut app, pothole_report()).await;
    next_change(&mut stream).await;
    app.shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("a final status")
        .expect_err("an error status");
    assert_eq!(ended.code(), Code::Unavailable);
    assert_eq!(reason(&ended), "SHUTTING_DOWN");
    app.stop().await;
}
