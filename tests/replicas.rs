//! Several `balagh serve` processes on one PostgreSQL database, as in production: reference
//! numbers stay unique and gap-free, a watch stream on one replica sees the writes made on
//! another, in order, with no gap, and the escalation scheduler runs on one replica at a time,
//! moving to another within seconds when its replica is killed.
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

/// A replica process, killed when dropped.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    fn start(database_url: &str) -> Self {
        Self::spawn(database_url, "warn", Stdio::inherit())
    }

    /// A replica whose log lines (its leadership ones included) come through the receiver.
    fn start_logging(database_url: &str) -> (Self, std::sync::mpsc::Receiver<String>) {
        let mut replica = Self::spawn(database_url, "warn,balagh::leader=info", Stdio::piped());
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

    fn spawn(database_url: &str, rust_log: &str, stderr: Stdio) -> Self {
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
        let addr = line
            .trim()
            .strip_prefix("balagh listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Self { child, addr }
    }

    async fn client(&self) -> TicketServiceClient<tonic::transport::Channel> {
        TicketServiceClient::new(common::connect(self.addr).await)
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
