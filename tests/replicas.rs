//! Several `balagh serve` processes on one PostgreSQL database, as in production: reference
//! numbers stay unique and gap-free, a watch stream on one replica sees the writes made on
//! another, in order, with no gap, the escalation scheduler runs on one replica at a time,
//! moving to another within seconds when its replica is killed, API replicas run apart from a
//! worker (`--components`), and pushes leased by a replica killed mid-push are taken over by
//! another after the lease, each reaching the simulated platform exactly once.
//!
//! Needs `BALAGH_TEST_DATABASE_URL`; without it the tests say they were left out and pass.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use balagh::grpc::proto;
use balagh::grpc::proto::ticket_service_client::TicketServiceClient;
use common::pg::TestDatabase;
use common::pothole_report;
use tokio_stream::StreamExt;

/// A replica process, killed when dropped; `addr` is its gRPC address (none for a process
/// that runs no gRPC).
struct Replica {
    child: Child,
    addr: Option<SocketAddr>,
}

impl Replica {
    fn start(database_url: &str) -> Self {
        Self::spawn(database_url, &[], "warn", Stdio::inherit())
    }

    /// A replica whose log lines (its leadership ones included) come through the receiver.
    fn start_logging(database_url: &str) -> (Self, std::sync::mpsc::Receiver<String>) {
        Self::start_logging_components(database_url, "grpc,sync,scheduler")
    }

    /// The same, running only `components` (`--components`).
    fn start_logging_components(
        database_url: &str,
        components: &str,
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        let mut replica = Self::spawn(
            database_url,
            &["--components", components],
            "warn,balagh::leader=info",
            Stdio::piped(),
        );
        let stderr = replica.child.stderr.take().expect("stderr");
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("replica: {line}");
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        (replica, received)
    }

    fn spawn(database_url: &str, extra: &[&str], rust_log: &str, stderr: Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_balagh"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start balagh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read address");
        let addr = match line.trim() {
            "balagh running without gRPC" => None,
            first => Some(
                first
                    .strip_prefix("balagh listening on ")
                    .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                    .parse()
                    .expect("address"),
            ),
        };
        Self { child, addr }
    }

    async fn client(&self) -> TicketServiceClient<tonic::transport::Channel> {
        let addr = self.addr.expect("this replica runs gRPC");
        TicketServiceClient::new(common::connect(addr).await)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test]
async fn three_replicas_number_tickets_without_gaps_or_duplicates() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&database.url)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, replica) in replicas.iter().enumerate() {
        for _ in 0..60 {
            let mut client = replica.client().await;
            tasks.spawn(async move {
                let ticket = client
                    .create_ticket(pothole_report())
                    .await
                    .unwrap_or_else(|e| panic!("create on replica {i}: {e:?}"))
                    .into_inner()
                    .ticket
                    .unwrap();
                ticket
                    .reference
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            });
        }
    }
    let mut numbers = BTreeSet::new();
    while let Some(number) = tasks.join_next().await {
        assert!(
            numbers.insert(number.unwrap()),
            "a reference number was issued twice"
        );
    }
    assert_eq!(
        numbers,
        (1..=180).collect::<BTreeSet<u32>>(),
        "gap-free 1..=180"
    );
}

#[tokio::test]
async fn a_watch_on_one_replica_sees_another_replicas_writes_in_order() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let a = Replica::start(&database.url);
    let b = Replica::start(&database.url);
    let mut watcher = a.client().await;
    let mut stream = watcher
        .watch_tickets(proto::WatchTicketsRequest::default())
        .await
        .expect("watch on A")
        .into_inner();
    // Writes on both replicas at once; the watcher is on A.
    let mut writers = tokio::task::JoinSet::new();
    for replica in [&a, &b] {
        for _ in 0..4 {
            let mut client = replica.client().await;
            writers.spawn(async move {
                for _ in 0..10 {
                    client
                        .create_ticket(pothole_report())
                        .await
                        .expect("create");
                }
            });
        }
    }
    let mut cursors = Vec::new();
    while cursors.len() < 80 {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a change in time")
            .expect("stream open")
            .expect("not an error");
        if message.kind() == proto::ChangeKind::Created {
            cursors.push(
                message
                    .cursor
                    .strip_prefix("v1.")
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            );
        }
    }
    while writers.join_next().await.is_some() {}
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursor order, no duplicate"
    );
    // No gap: every event of the log is there (each create appends exactly one event).
    let first = cursors[0];
    assert_eq!(cursors, (first..first + 80).collect::<Vec<_>>());
}

/// Waits up to `within` for a log line holding every one of `words`.
fn wait_for_line(
    log: &std::sync::mpsc::Receiver<String>,
    words: &[&str],
    within: Duration,
) -> Option<String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match log.recv_timeout(left) {
            Ok(line) if words.iter().all(|w| line.contains(w)) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn one_replica_at_a_time_leads_the_scheduler_and_another_takes_over_when_it_is_killed() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let took = ["took the role", "escalation_scheduler"];
    let (mut a, a_log) = Replica::start_logging(&database.url);
    assert!(
        wait_for_line(&a_log, &took, Duration::from_secs(20)).is_some(),
        "the first replica leads the scheduler"
    );
    let (b, b_log) = Replica::start_logging(&database.url);
    // B serves, and for several of its tries (every 2 s) does not take the role A holds.
    b.client().await;
    assert_eq!(
        wait_for_line(&b_log, &took, Duration::from_secs(5)),
        None,
        "a second leader while the first one lives"
    );
    // SIGKILL: no goodbye. PostgreSQL ends A's session and with it the lock.
    a.child.kill().expect("kill A");
    a.child.wait().expect("reap A");
    assert!(
        wait_for_line(&b_log, &took, Duration::from_secs(20)).is_some(),
        "B takes the role once A is dead"
    );
    // B still serves, and creates work as before.
    b.client()
        .await
        .create_ticket(pothole_report())
        .await
        .expect("create on B");
}

#[tokio::test]
async fn api_replicas_and_a_worker_run_apart_and_only_the_worker_leads_the_scheduler() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let took = ["took the role", "escalation_scheduler"];
    let (api, api_log) = Replica::start_logging_components(&database.url, "grpc");
    // The API replica serves, and never takes the scheduler's role, even while it is free.
    api.client()
        .await
        .create_ticket(pothole_report())
        .await
        .expect("create on the API replica");
    assert_eq!(
        wait_for_line(&api_log, &took, Duration::from_secs(5)),
        None,
        "an API-only replica leads the scheduler"
    );
    let (worker, worker_log) = Replica::start_logging_components(&database.url, "sync,scheduler");
    assert_eq!(worker.addr, None, "the worker runs no gRPC");
    assert!(
        wait_for_line(&worker_log, &took, Duration::from_secs(20)).is_some(),
        "the worker leads the scheduler"
    );
}

/// Complaints pushed while the replica that claimed them is killed mid-push: the other
/// replica takes the leased pushes over once their lease ends, and the simulated platform
/// holds every complaint exactly once (the retried pushes carry the same idempotency keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_leased_by_a_replica_killed_mid_push_are_taken_over_once() {
    use balagh::platform::simulator::{
        FaultKind, FaultSettings, Simulator, SimulatorConfig, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
    };
    const COMPLAINTS: usize = 40;
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    // Every platform answer is 400 ms late, so pushes are in flight when the replica dies.
    let stop = tokio_util::sync::CancellationToken::new();
    let simulator = Simulator::start(
        SimulatorConfig {
            faults: FaultSettings {
                rates: [(FaultKind::Slow, 1.0)].into_iter().collect(),
                slow_ms: 400,
                ..FaultSettings::default()
            },
            ..SimulatorConfig::for_tests()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        stop.clone(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("balagh.toml");
    std::fs::write(&config, "[sync]\nlease_seconds = 5\n").unwrap();
    let secret = dir.path().join("platform-secret");
    std::fs::write(&secret, TEST_CLIENT_SECRET).unwrap();
    let base_url = simulator.base_url();
    let platform = [
        "--config",
        config.to_str().unwrap(),
        "--platform-url",
        &base_url,
        "--platform-client-id",
        TEST_CLIENT_ID,
        "--platform-client-secret-file",
        secret.to_str().unwrap(),
    ];
    let mut a = Replica::spawn(&database.url, &platform, "error", Stdio::inherit());
    let mut client = a.client().await;
    let mut references = BTreeSet::new();
    for _ in 0..COMPLAINTS {
        let ticket = client
            .create_ticket(proto::CreateTicketRequest {
                r#type: proto::TicketType::Complaint.into(),
                ..pothole_report()
            })
            .await
            .expect("create a complaint")
            .into_inner()
            .ticket
            .unwrap();
        references.insert(ticket.reference);
    }
    // Once A has claimed pushes and waits for the platform's answers, kill it.
    let mut a_sync = balagh::grpc::proto::sync_service_client::SyncServiceClient::new(
        common::connect(a.addr.expect("A runs gRPC")).await,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let leased = loop {
        let status = a_sync
            .get_sync_status(proto::GetSyncStatusRequest {})
            .await
            .expect("status on A")
            .into_inner();
        // Pushes of 32 tickets at once, each held 400 ms by the platform.
        if status.leased >= 20 {
            break status.leased;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A did not claim pushes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    a.child.kill().expect("kill A");
    a.child.wait().expect("reap A");
    let delivered_before_b = simulator.state().cases.len();
    assert!(
        delivered_before_b < COMPLAINTS,
        "A died before it pushed everything ({delivered_before_b} delivered)"
    );
    let b = Replica::spawn(&database.url, &platform, "error", Stdio::inherit());
    let mut sync = balagh::grpc::proto::sync_service_client::SyncServiceClient::new(
        common::connect(b.addr.expect("B runs gRPC")).await,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = sync
            .get_sync_status(proto::GetSyncStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.dead, 0, "no dead letter: {status:?}");
        if status.pending == 0 && status.leased == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B did not take the pushes over: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut at_platform = std::collections::BTreeMap::<String, usize>::new();
    for record in simulator.state().cases {
        if let Some(reference) = record.case.entity_reference {
            *at_platform.entry(reference).or_default() += 1;
        }
    }
    let lost = references
        .iter()
        .filter(|r| !at_platform.contains_key(*r))
        .count();
    let duplicated = at_platform.values().filter(|n| **n > 1).count();
    let unexpected = at_platform
        .keys()
        .filter(|r| !references.contains(*r))
        .count();
    eprintln!(
        "replicas: {COMPLAINTS} complaints, {leased} pushes leased by A and {delivered_before_b} at the platform when A was killed; lost={lost} duplicated={duplicated} unexpected={unexpected}"
    );
    assert_eq!((lost, duplicated, unexpected), (0, 0, 0));
    stop.cancel();
}
