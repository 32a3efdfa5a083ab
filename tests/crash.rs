//! A write acknowledged OK survives `kill -9`: the real `balagh` binary is started on port 0,
//! takes concurrent creates (so group commit batches them), is killed with SIGKILL, and is
//! started again on the same SQLite file.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use balagh::grpc::proto;
use balagh::grpc::proto::ticket_service_client::TicketServiceClient;
use common::pothole_report;

/// A server process that is killed when dropped, so a failing test leaves none behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Starts `balagh serve` and reads the address it prints on its first line.
fn start_server(db: &Path) -> (Server, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_balagh"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--database-url",
        ])
        .arg(format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start balagh");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("balagh listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    (Server(child), addr)
}

#[tokio::test]
async fn acknowledged_tickets_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let (mut server, addr) = start_server(&db);
    let channel = common::connect(addr).await;

    // Many creates in flight at once; the server is killed while later ones are still running.
    let mut acknowledged = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let mut client = TicketServiceClient::new(channel.clone());
        in_flight.spawn(async move { client.create_ticket(pothole_report()).await });
    }
    while acknowledged.len() < 100 {
        if let Ok(response) = in_flight.join_next().await.expect("task").expect("join") {
            acknowledged.push(response.into_inner().ticket.expect("ticket"));
        }
    }
    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("reap");
    while let Some(result) = in_flight.join_next().await {
        if let Ok(Ok(response)) = result {
            acknowledged.push(response.into_inner().ticket.expect("ticket"));
        }
    }

    let (server, addr) = start_server(&db);
    let mut client = TicketServiceClient::new(common::connect(addr).await);
    let mut max_number = 0;
    for ticket in &acknowledged {
        let stored = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_ticket(proto::GetTicketRequest {
                reveal_personal_data: false,
                lookup: Some(proto::get_ticket_request::Lookup::Id(ticket.id.clone())),
            }),
        )
        .await
        .expect("answer in time")
        .expect("an acknowledged ticket is still there")
        .into_inner()
        .ticket
        .map(|t| proto::Ticket { sla: None, ..t })
        .expect("ticket");
        assert_eq!(&stored, ticket);
        let number: u32 = ticket
            .reference
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        max_number = max_number.max(number);
    }
    // Numbering continues after the crash and never reuses an acknowledged reference.
    let next = client
        .create_ticket(pothole_report())
        .await
        .expect("create after restart")
        .into_inner()
        .ticket
        .unwrap();
    let next_number: u32 = next.reference.rsplit('-').next().unwrap().parse().unwrap();
    assert!(next_number > max_number, "{next_number} after {max_number}");
    eprintln!(
        "{} tickets acknowledged before or during SIGKILL, all present after restart",
        acknowledged.len()
    );
    drop(server);
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("term.db");
    let (mut server, addr) = start_server(&db);
    let mut client = TicketServiceClient::new(common::connect(addr).await);
    client
        .create_ticket(pothole_report())
        .await
        .expect("create");
    let pid = server.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || server.0.wait())
        .await
        .unwrap()
        .expect("wait");
    assert!(status.success(), "graceful exit, got {status:?}");
}
