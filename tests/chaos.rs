//! The chaos test of the national platform bridge (bounded: a couple of minutes at most).
//!
//! The real `balagh serve` process syncs with the platform simulator over real HTTP while
//! tickets are created and changed over gRPC and the simulated citizens file and act, with a
//! fifth of all platform calls failing in every injected way; the registry is killed with
//! SIGKILL and started again several times. Then faults stop, the queues drain, and a
//! Jepsen-style total check compares both sides:
//! - every local ticket meant for the platform exists there exactly once, in the status its
//!   local status maps to, with its public replies in the local order;
//! - every case a citizen filed exists locally exactly once, and carries its local reference;
//! - lost = 0, unexpected = 0, duplicate effects at the platform = 0.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use balagh::grpc::proto;
use balagh::grpc::proto::sync_service_client::SyncServiceClient;
use balagh::grpc::proto::ticket_service_client::TicketServiceClient;
use balagh::platform::mapping::Mapping;
use balagh::platform::simulator::{
    FaultSettings, Simulator, SimulatorConfig, SimulatorHandle, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const TICKETS: usize = 120;
const CITIZEN_ACTIONS: usize = 80;
const KILLS: usize = 3;

/// A server process killed when dropped, so a failing test leaves none behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn start_server(db: &Path, listen: SocketAddr, platform: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_balagh"))
        .args(["serve", "--listen"])
        .arg(listen.to_string())
        .args(["--admin-listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .args([
            "--platform-url",
            platform,
            "--platform-client-id",
            TEST_CLIENT_ID,
        ])
        .env("BALAGH_PLATFORM_CLIENT_SECRET", TEST_CLIENT_SECRET)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start balagh");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    assert!(line.starts_with("balagh listening on "), "{line:?}");
    Server(child)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Calls until the server answers (it may be down between a kill and its restart). Every
/// mutation carries a request id, so a call repeated after a lost answer acts once.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), call()).await {
            Ok(Ok(response)) => return response.into_inner(),
            Ok(Err(status))
                if !matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Internal
                ) =>
            {
                panic!("{what}: {status:?}")
            }
            _ if Instant::now() > deadline => panic!("{what}: no answer within 60 s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn complaint(i: usize) -> proto::CreateTicketRequest {
    proto::CreateTicketRequest {
        r#type: if i.is_multiple_of(3) {
            proto::TicketType::Suggestion
        } else {
            proto::TicketType::Complaint
        }
        .into(),
        channel: proto::Channel::ContactCentre.into(),
        category: "waste_collection".into(),
        subject: format!("شكوى {i}: الحاويات ممتلئة"),
        description: "لم تجمع النفايات منذ أيام".into(),
        reporter: Some(proto::Reporter {
            name: "مواطن".into(),
            phone: "+968 9000 0001".into(),
            ..Default::default()
        }),
        location: Some(proto::Location {
            wilayat: "as_seeb".into(),
            ..Default::default()
        }),
        request_id: format!("chaos-create-{i}"),
        ..Default::default()
    }
}

/// One ticket's life: created, a public reply, and for some a resolution.
async fn ticket_script(channel: Channel, i: usize) {
    let client = TicketServiceClient::new(channel);
    let ticket = retry("create", || {
        let mut c = client.clone();
        async move { c.create_ticket(complaint(i)).await }
    })
    .await
    .ticket
    .expect("ticket");
    retry("comment", || {
        let mut c = client.clone();
        let request = proto::AddCommentRequest {
            ticket_id: ticket.id.clone(),
            request_id: format!("chaos-reply-{i}"),
            text: format!("شكراً، نعمل على الشكوى {i}"),
            visibility: proto::CommentVisibility::Public.into(),
            ..Default::default()
        };
        async move { c.add_comment(request).await }
    })
    .await;
    if i.is_multiple_of(2) {
        retry("resolve", || {
            let mut c = client.clone();
            let request = proto::ResolveTicketRequest {
                ticket_id: ticket.id.clone(),
                request_id: format!("chaos-resolve-{i}"),
                resolution: Some(proto::Resolution {
                    code: proto::ResolutionCode::Fixed.into(),
                    text: "تم الجمع".into(),
                }),
                ..Default::default()
            };
            async move { c.resolve_ticket(request).await }
        })
        .await;
    }
}

async fn all_tickets(client: &TicketServiceClient<Channel>) -> Vec<proto::Ticket> {
    let mut tickets = Vec::new();
    let mut token = String::new();
    loop {
        let page = retry("list", || {
            let mut c = client.clone();
            let request = proto::ListTicketsRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            };
            async move { c.list_tickets(request).await }
        })
        .await;
        tickets.extend(page.tickets);
        if page.next_page_token.is_empty() {
            return tickets;
        }
        token = page.next_page_token;
    }
}

async fn public_replies(client: &TicketServiceClient<Channel>, id: &str) -> Vec<String> {
    let events = retry("events", || {
        let mut c = client.clone();
        let request = proto::ListTicketEventsRequest {
            ticket_id: id.to_owned(),
            page_size: 500,
            ..Default::default()
        };
        async move { c.list_ticket_events(request).await }
    })
    .await;
    events
        .events
        .into_iter()
        .filter(|e| {
            e.kind() == proto::TicketEventKind::Commented
                && e.visibility() == proto::CommentVisibility::Public
        })
        .map(|e| e.note)
        .collect()
}

fn chaos_faults() -> FaultSettings {
    FaultSettings {
        // Shorter than production so the test stays bounded; every kind stays in the mix.
        timeout_hold_ms: 2_000,
        slow_ms: 300,
        maintenance_seconds: 1,
        ..FaultSettings::uniform(0.2)
    }
}

async fn start_simulator(shutdown: &CancellationToken) -> SimulatorHandle {
    let config = SimulatorConfig {
        faults: chaos_faults(),
        seed: 2026,
        ..SimulatorConfig::for_tests()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(config, listener, shutdown.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_and_sigkill_restarts_both_sides_end_up_the_same() {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let sim = Arc::new(start_simulator(&shutdown).await);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chaos.db");
    let listen = free_port();
    let platform = sim.base_url();
    let mut server = start_server(&db, listen, &platform);
    let channel = Channel::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect_lazy();

    // Tickets change locally while citizens file and act on the platform.
    let mut scripts = tokio::task::JoinSet::new();
    for i in 0..TICKETS {
        let channel = channel.clone();
        scripts.spawn(async move {
            // Spread over the run, so kills land in the middle of the traffic.
            tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
            ticket_script(channel, i).await;
        });
    }
    let citizens = {
        let sim = sim.clone();
        tokio::spawn(async move {
            for _ in 0..CITIZEN_ACTIONS {
                // Actions that are impossible right now (nothing to rate yet) are refused.
                let _ = sim.citizen_act(None, None);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        server.0.kill().expect("SIGKILL");
        server.0.wait().expect("reap");
        tokio::time::sleep(Duration::from_millis(200)).await;
        server = start_server(&db, listen, &platform);
    }
    while let Some(done) = scripts.join_next().await {
        done.expect("a ticket script failed");
    }
    citizens.await.unwrap();

    // Faults stop; the queues drain (a restart also resets the breaker's back-off).
    sim.set_faults(FaultSettings::default()).unwrap();
    sim.set_maintenance(0);
    drop(server);
    let _server = start_server(&db, listen, &platform);
    let sync = SyncServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut settled_rounds = 0;
    loop {
        retry("pull", || {
            let mut c = sync.clone();
            async move { c.trigger_pull(proto::TriggerPullRequest {}).await }
        })
        .await;
        let status = retry("status", || {
            let mut c = sync.clone();
            async move { c.get_sync_status(proto::GetSyncStatusRequest {}).await }
        })
        .await;
        assert_eq!(status.dead, 0, "nothing became a dead letter: {status:?}");
        if status.pending == 0 {
            settled_rounds += 1;
            if settled_rounds == 1 {
                // Repair what the faults left drifting (a citizen's request the ticket could
                // not take when it came), then let the repairs drain too.
                retry("reconcile", || {
                    let mut c = sync.clone();
                    async move { c.trigger_reconcile(proto::TriggerReconcileRequest {}).await }
                })
                .await;
            } else {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The total check.
    let client = TicketServiceClient::new(channel.clone());
    let local = all_tickets(&client).await;
    let state = sim.state();
    let mapping = Mapping::v1().unwrap();
    let mut by_reference: BTreeMap<String, Vec<&balagh::platform::contract::Case>> =
        BTreeMap::new();
    for record in &state.cases {
        if let Some(reference) = &record.case.entity_reference {
            by_reference
                .entry(reference.clone())
                .or_default()
                .push(&record.case);
        }
    }
    let (mut lost, mut duplicated, mut wrong_state, mut wrong_replies) = (0, 0, 0, 0);
    for ticket in &local {
        let status = balagh::domain::ticket::Status::from_str_opt(
            &ticket
                .status()
                .as_str_name()
                .trim_start_matches("TICKET_STATUS_")
                .to_lowercase(),
        )
        .expect("a known status");
        match by_reference.get(&ticket.reference).map(Vec::as_slice) {
            None | Some([]) => lost += 1,
            Some([case]) => {
                if case.status != mapping.status_to_platform(status).unwrap() {
                    wrong_state += 1;
                    eprintln!(
                        "{}: local {status:?}, platform {}",
                        ticket.reference, case.status
                    );
                }
                let replies: Vec<_> = case.replies.iter().map(|r| r.text.clone()).collect();
                if replies != public_replies(&client, &ticket.id).await {
                    wrong_replies += 1;
                }
            }
            Some(_) => duplicated += 1,
        }
    }
    let citizen_cases = state
        .cases
        .iter()
        .filter(|r| r.case.source == balagh::platform::contract::CaseSource::Citizen)
        .count();
    let from_platform = local
        .iter()
        .filter(|t| t.channel() == proto::Channel::NationalPlatform)
        .count();
    let local_references: std::collections::BTreeSet<&str> =
        local.iter().map(|t| t.reference.as_str()).collect();
    let unexpected = by_reference
        .keys()
        .filter(|r| !local_references.contains(r.as_str()))
        .count()
        + state
            .cases
            .iter()
            .filter(|r| r.case.entity_reference.is_none())
            .count();
    let faults: u64 = state.faults.counts.values().sum();
    eprintln!(
        "chaos: {} s, {KILLS} SIGKILL restarts, {faults} faults injected, {} local tickets ({} from citizens' cases), {} cases at the platform ({citizen_cases} filed by citizens): lost={lost} duplicated={duplicated} unexpected={unexpected} wrong_state={wrong_state} wrong_replies={wrong_replies}",
        started.elapsed().as_secs(),
        local.len(),
        from_platform,
        state.cases.len(),
    );
    assert!(faults > 20, "faults were injected ({faults})");
    assert_eq!(local.len(), TICKETS + citizen_cases);
    assert_eq!(from_platform, citizen_cases);
    assert_eq!(
        (lost, duplicated, unexpected, wrong_state, wrong_replies),
        (0, 0, 0, 0, 0)
    );
    shutdown.cancel();
}
