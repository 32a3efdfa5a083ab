//! Shared helpers of the end-to-end tests: the real application on port 0 with a fresh SQLite
//! file, real gRPC clients, and readers of the rich error details.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use balagh::app::Application;
use balagh::config::Config;
use balagh::domain::lifecycle::Action;
use balagh::domain::ticket::Satisfaction;
use balagh::domain::values::TicketId;
use balagh::domain::{Clock, ManualClock, SystemClock};
use balagh::grpc::proto;
use balagh::grpc::proto::catalog_service_client::CatalogServiceClient;
use balagh::grpc::proto::ticket_service_client::TicketServiceClient;
use balagh::store::{
    PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions, Store, WriteContext,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub mod pg;
pub mod sla;

/// A fresh, empty database for one test: a temporary SQLite file, or, when
/// `BALAGH_TEST_BACKEND=postgres`, a new PostgreSQL database (dropped at the end).
pub struct TestDb {
    pub url: String,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl TestDb {
    pub async fn fresh() -> Arc<TestDb> {
        if std::env::var("BALAGH_TEST_BACKEND").as_deref() == Ok("postgres") {
            let database = pg::TestDatabase::create()
                .await
                .expect("BALAGH_TEST_BACKEND=postgres needs BALAGH_TEST_DATABASE_URL");
            return Arc::new(TestDb {
                url: database.url.clone(),
                _guard: Box::new(database),
            });
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("balagh.db").display());
        Arc::new(TestDb {
            url,
            _guard: Box::new(dir),
        })
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub channel: Channel,
    pub tickets: TicketServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
    pub shutdown: CancellationToken,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
    pub db: Arc<TestDb>,
}

impl TestApp {
    /// Stops the server the way SIGTERM does, and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestDb::fresh().await, |_| {}, Arc::new(SystemClock)).await
}

/// The application on `db`, with a changed configuration and a chosen clock.
/// A test app (fresh SQLite file, system clock) pushing to an in-process platform simulator
/// whose citizens stay idle, and the simulator's address.
pub async fn spawn_app_beside_simulator() -> (TestApp, SocketAddr) {
    let platform = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let app = spawn_app_with(
        TestDb::fresh().await,
        move |c| {
            c.platform = balagh::config::PlatformMode::Simulator {
                listen: platform,
                citizen_rate: 0.0,
            }
        },
        Arc::new(SystemClock),
    )
    .await;
    (app, platform)
}

pub async fn spawn_app_with(
    db: Arc<TestDb>,
    configure: impl FnOnce(&mut Config),
    clock: Arc<dyn Clock>,
) -> TestApp {
    let mut config = Config::for_tests(db.url.clone());
    configure(&mut config);
    let app = Application::build_with_clock(config, clock)
        .await
        .expect("build app");
    let addr = app.local_addr().expect("the test server runs gRPC");
    let admin = app.admin_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channel = connect(addr).await;
    TestApp {
        addr,
        admin,
        tickets: TicketServiceClient::new(channel.clone()),
        catalog: CatalogServiceClient::new(channel.clone()),
        channel,
        shutdown,
        server: Some(server),
        db,
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// A valid report of a pothole in Bawshar, from an identified citizen.
pub fn pothole_report() -> proto::CreateTicketRequest {
    proto::CreateTicketRequest {
        r#type: proto::TicketType::Report.into(),
        channel: proto::Channel::ContactCentre.into(),
        category: "pothole".into(),
        priority: 0,
        subject: "حفرة كبيرة في شارع الخوير".into(),
        description: "حفرة عميقة أمام المدرسة تسبب خطراً على السيارات.\nيرجى الإصلاح.".into(),
        reporter: Some(proto::Reporter {
            name: "Test Citizen".into(),
            phone: "+968 9000 0001".into(),
            email: String::new(),
            civil_id: String::new(),
            anonymous: false,
            masked: false,
            erased: false,
        }),
        location: Some(proto::Location {
            wilayat: "bawshar".into(),
            area: "Al Khuwair".into(),
            point: Some(proto::LatLng {
                latitude: 23.5880,
                longitude: 58.4059,
            }),
        }),
        attachments: vec![proto::Attachment {
            uri: "https://files.example.om/photos/1.jpg".into(),
            media_type: "image/jpeg".into(),
            size_bytes: 123_456,
            sha256: "a".repeat(64),
        }],
        request_id: String::new(),
    }
}

/// A reporter whose every field the personal-data tests search for in logs and traces.
pub const REPORTER_NAME: &str = "Zainab Testiya Albusaidi";
pub const REPORTER_PHONE_DIGITS: &str = "91234567";
pub const REPORTER_EMAIL: &str = "zainab.testiya@mail.example.om";
pub const REPORTER_CIVIL_ID: &str = "87654321";

/// A complaint (synchronised with the platform) filed by that identified reporter.
pub fn identified_complaint() -> proto::CreateTicketRequest {
    let mut request = pothole_report();
    request.r#type = proto::TicketType::Complaint.into();
    request.category = "waste_collection".into();
    request.reporter = Some(proto::Reporter {
        name: REPORTER_NAME.into(),
        phone: "+968 9123 4567".into(),
        email: REPORTER_EMAIL.into(),
        civil_id: REPORTER_CIVIL_ID.into(),
        anonymous: false,
        masked: false,
        erased: false,
    });
    request
}

/// Polls `GetSyncStatus` every 50 ms until `done` holds for it, and returns that status.
/// Unbounded: callers put it under a timeout.
pub async fn wait_for_sync_status(
    app: &TestApp,
    done: impl Fn(&proto::GetSyncStatusResponse) -> bool,
) -> proto::GetSyncStatusResponse {
    let mut sync = proto::sync_service_client::SyncServiceClient::new(app.channel.clone());
    loop {
        let status = sync
            .get_sync_status(proto::GetSyncStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if done(&status) {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn create(app: &mut TestApp, request: proto::CreateTicketRequest) -> proto::Ticket {
    app.tickets
        .create_ticket(request)
        .await
        .expect("create ticket")
        .into_inner()
        .ticket
        .expect("ticket in response")
}

/// Assigns a ticket to a directorate and a support line.
pub async fn assign(app: &mut TestApp, id: &str, directorate: &str, line: proto::SupportLine) {
    app.tickets
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: id.into(),
            directorate: directorate.into(),
            support_line: line.into(),
            ..Default::default()
        })
        .await
        .expect("assign");
}

/// Moves a ticket to in progress: its first response.
pub async fn start_work(app: &mut TestApp, id: &str) {
    app.tickets
        .start_work(proto::StartWorkRequest {
            ticket_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("start work");
}

/// Resolves a ticket as fixed.
pub async fn resolve(app: &mut TestApp, id: &str) {
    app.tickets
        .resolve_ticket(proto::ResolveTicketRequest {
            ticket_id: id.into(),
            resolution: Some(proto::Resolution {
                code: proto::ResolutionCode::Fixed.into(),
                text: "تم الإصلاح".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("resolve");
}

/// The store of `db`, opened beside (or instead of) the server, on `clock`.
pub async fn open_store(db: &TestDb, clock: &ManualClock) -> Arc<dyn Store> {
    if db.is_sqlite() {
        Arc::new(
            SqliteStore::open(
                SqliteStoreOptions::new(db.url.clone()),
                Arc::new(clock.clone()),
            )
            .await
            .expect("open sqlite"),
        )
    } else {
        Arc::new(
            PostgresStore::open(
                PostgresStoreOptions::new(db.url.clone()),
                Arc::new(clock.clone()),
            )
            .await
            .expect("open postgres"),
        )
    }
}

/// Records ratings through the store, as the pull from the national platform does (no RPC
/// records one). Run it with the server stopped.
pub async fn rate(db: &TestDb, clock: &ManualClock, ratings: &[(&str, i64)]) {
    let store = open_store(db, clock).await;
    for (id, score) in ratings {
        let satisfaction =
            Satisfaction::parse("satisfaction", *score, None, clock.now()).expect("rating");
        store
            .apply_action(
                WriteContext {
                    actor: "platform-pull".into(),
                    request: None,
                    reach: None,
                },
                TicketId::parse("id", id).expect("id"),
                None,
                Action::Rate { satisfaction },
            )
            .await
            .expect("rate");
    }
    store.close().await;
}

/// The ErrorInfo reason of a status; panics unless there is exactly one ErrorInfo in domain
/// "balagh".
pub fn reason(status: &tonic::Status) -> String {
    let details = status.get_error_details_vec();
    let infos: Vec<_> = details
        .iter()
        .filter_map(|d| match d {
            tonic_types::ErrorDetail::ErrorInfo(info) => Some(info.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(infos.len(), 1, "exactly one ErrorInfo in {status:?}");
    assert_eq!(infos[0].domain, "balagh");
    infos[0].reason.clone()
}

/// The fields named by the BadRequest detail of a status.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts code and reason, returning the violated fields.
pub fn expect_error(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: tonic::Code,
    expected_reason: &str,
) -> Vec<String> {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), expected_reason, "{status:?}");
    violated_fields(&status)
}

/// A plain HTTP/1.1 GET on loopback: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
