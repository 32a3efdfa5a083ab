//! `balagh bench`: drives the real server over real gRPC and reports throughput and latency,
//! next to a baseline measured in the same run (see `docs/benchmarks.md`).
//!
//! Why it looks like this:
//! - Figures only mean something next to a reference taken on the same machine at the same
//!   moment, so the run first measures what SQLite alone does with the same durability
//!   settings (WAL, `synchronous=FULL`): one transaction per ticket, sequentially, writing the
//!   same rows the store writes for a CreateTicket. CreateTicket at 64 clients is then
//!   reported as a multiple of that rate, which is what the store's group commit has to earn.
//! - The server is the one `balagh serve` runs ([`Application`]), started in-process on port 0
//!   on a runtime of its own whose threads are named `balagh-server`, so the CPU each side
//!   uses (load generator, server, SQLite threads) can be read from `/proc` and reported: on a
//!   small machine client and server share the cores, and the report has to say so.
//! - ListTickets is only interesting on a large table, and creating a million tickets over
//!   gRPC would take longer than the benchmark. The loader below writes them straight into the
//!   server's SQLite file before the server opens it, in big transactions, with rows of the
//!   exact shape the store writes: tickets built as domain values, moved through the real
//!   lifecycle functions, serialised with serde_json, with their search text, their events
//!   (with the change feed's snapshots where its retention keeps them), the platform pushes
//!   they owed (delivered), unique reference numbers and the reference counters the server
//!   continues from. The loader gives `seq` values itself: the file is fresh and it is the
//!   only writer, so they are the values AUTOINCREMENT would give, and `sqlite_sequence`
//!   follows them.
//!
//! Invariants: nothing here is a timed assertion (tests only check the loader's data); every
//! file the run creates lives in one fresh directory under the system temp directory, removed
//! at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel as GrpcChannel, Endpoint};

use crate::app::Application;
use crate::config::Config;
use crate::domain::catalog::CatalogData;
use crate::domain::lifecycle::{Action, EventRecord, TicketEvent, apply_action, created_event};
use crate::domain::sync::{OutboxState, PushKind, SyncPolicy, push_for};
use crate::domain::ticket::{
    Assignment, Channel, NewTicket, Priority, Resolution, ResolutionCode, Status, SupportLine,
    Ticket, TicketType,
};
use crate::domain::values::{Code, EmployeeId, ReferenceNumber, TicketId};
use crate::domain::{Clock, SystemClock, Timestamp};
use crate::grpc::convert::parse_new_ticket;
use crate::grpc::proto;
use crate::grpc::proto::ticket_service_client::TicketServiceClient;
use crate::grpc::request::{ACTOR_METADATA_KEY, request_key};
use crate::store::search_document;

/// The same migrations the store runs, so the baseline and preloaded files have its schema.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const DEFAULT_SECONDS: f64 = 5.0;
const QUICK_SECONDS: f64 = 1.0;
const DEFAULT_LIST_TICKETS: u64 = 1_000_000;
const QUICK_LIST_TICKETS: u64 = 20_000;
/// Clients sharing one HTTP/2 connection: one connection serialises frames on one task, so
/// many clients get a few connections, as a fleet of real callers would.
pub(crate) const CLIENTS_PER_CHANNEL: usize = 8;
/// Tickets written per transaction by the loader, and per multi-row INSERT statement
/// (17 values a ticket, about 4 events of 6 values each: well under SQLite's 32,766 limit).
const PRELOAD_BATCH: u64 = 10_000;
const ROWS_PER_STATEMENT: usize = 500;
/// At most this many ticket ids are kept for GetTicket to pick from.
const MAX_SAMPLE_IDS: u64 = 100_000;
/// The page ListTickets asks for, and how deep a client pages before starting over.
const LIST_PAGE_SIZE: i32 = 50;
const LIST_MAX_PAGES: u32 = 20;
const LIST_DIRECTORATE: &str = "roads";
/// Preloaded tickets are spread over this many days before now.
const PRELOAD_SPAN_DAYS: i64 = 365;
/// Latency above this is recorded as this (an hour, in microseconds).
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each scenario is measured, after a short warm-up [default: 5, or 1 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Concurrent clients of each gRPC scenario, as a comma list.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 64])]
    pub clients: Vec<usize>,
    /// Tickets preloaded before GetTicket and ListTickets [default: 1000000, or 20000 with
    /// --quick].
    #[arg(long)]
    pub list_tickets: Option<u64>,
    /// Small counts and short runs: a smoke check that finishes in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Run only these parts (repeat the flag or give a comma list); every part by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Run the gRPC scenarios a second time on a server with authentication (each call with
    /// an EdDSA-signed bearer token, checked and authorized by the auth layer), and compare.
    #[arg(long)]
    pub auth: bool,
    /// Decode every field of GetTicket's and ListTickets' answers, as a real client does. By
    /// default the load generator reads only the ticket ids and the page token (the same wire
    /// format, the rest skipped), so that less of the shared machine goes to the client.
    #[arg(long)]
    pub full_decode: bool,
    /// The server's `store.encoded_ticket_cache_mib`; 0 makes ListTickets decode and encode
    /// every ticket of every page [default: the server's default].
    #[arg(long)]
    pub encoded_ticket_cache_mib: Option<u64>,
    /// CreateTicket calls per second made beside the ListTickets scenarios (by 8 paced
    /// clients), so that inboxes change while they are read; none by default.
    #[arg(long)]
    pub list_while_creating: Option<u32>,
    /// The server's `store.sqlite_mmap_mib` [default: the server's default].
    #[arg(long)]
    pub sqlite_mmap_mib: Option<u64>,
}

/// A part of the benchmark that `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Create,
    Get,
    List,
    Baseline,
}

/// What the run does, with every default resolved.
#[derive(Debug, Clone)]
struct Plan {
    measure: Duration,
    warmup: Duration,
    clients: Vec<usize>,
    n_preload: u64,
    quick: bool,
    parts: Vec<Part>,
    auth: bool,
    full_decode: bool,
    encoded_ticket_cache_mib: Option<u64>,
    list_while_creating: Option<u32>,
    sqlite_mmap_mib: Option<u64>,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick {
            QUICK_SECONDS
        } else {
            DEFAULT_SECONDS
        });
        if !seconds.is_finite() || !(0.1..=3600.0).contains(&seconds) {
            anyhow::bail!("--seconds must be from 0.1 to 3600, got {seconds}");
        }
        let mut clients = args.clients.clone();
        clients.sort_unstable();
        clients.dedup();
        if clients.is_empty() || clients.iter().any(|&c| c == 0 || c > 4096) {
            anyhow::bail!("--clients must list numbers from 1 to 4096");
        }
        let n_preload = args.list_tickets.unwrap_or(if args.quick {
            QUICK_LIST_TICKETS
        } else {
            DEFAULT_LIST_TICKETS
        });
        let parts = if args.only.is_empty() {
            vec![Part::Baseline, Part::Create, Part::Get, Part::List]
        } else {
            args.only.clone()
        };
        let reads = parts.contains(&Part::Get) || parts.contains(&Part::List);
        if reads && n_preload == 0 {
            anyhow::bail!("--list-tickets must be at least 1 for GetTicket and ListTickets");
        }
        let measure = Duration::from_secs_f64(seconds);
        Ok(Self {
            measure,
            warmup: (measure / 5).clamp(Duration::from_millis(200), Duration::from_secs(1)),
            clients,
            n_preload,
            quick: args.quick,
            parts,
            auth: args.auth,
            full_decode: args.full_decode,
            encoded_ticket_cache_mib: args.encoded_ticket_cache_mib,
            sqlite_mmap_mib: args.sqlite_mmap_mib,
            list_while_creating: match args.list_while_creating {
                Some(0) | None => None,
                Some(rate) if rate > 100_000 => {
                    anyhow::bail!("--list-while-creating must be at most 100000 a second")
                }
                rate => rate,
            },
        })
    }

    fn runs(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    fn preloads(&self) -> bool {
        self.runs(Part::Get) || self.runs(Part::List)
    }

    /// The server's store settings the flags change.
    fn store_settings(&self) -> impl FnOnce(&mut Config) + Send + 'static {
        let (cache_mib, mmap_mib) = (self.encoded_ticket_cache_mib, self.sqlite_mmap_mib);
        move |config| {
            if let Some(mib) = cache_mib {
                config.store.encoded_ticket_cache_mib = mib;
            }
            if let Some(mib) = mmap_mib {
                config.store.sqlite_mmap_mib = mib;
            }
        }
    }

    fn decode(&self) -> Decode {
        if self.full_decode {
            Decode::Full
        } else {
            Decode::Slim
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let machine = Machine::read();
    println!("balagh bench {}", env!("CARGO_PKG_VERSION"));
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this is a debug build; figures are meaningless. Use `cargo run --release -- bench`."
        );
    }
    println!("machine: {}", machine.describe());
    println!("load average before the run: {}", load_average());
    println!(
        "plan: {:.1} s per scenario after a {:.1} s warm-up; clients {:?}; {} preloaded tickets{}",
        plan.measure.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.clients,
        group_digits(plan.n_preload),
        if plan.quick { " (--quick)" } else { "" }
    );
    let dir = BenchDir::create()?;
    println!("working directory: {}", dir.path().display());
    // Ctrl-C stops the run but still removes the multi-gigabyte working directory.
    let outcome = tokio::select! {
        outcome = run_plan(&plan, dir.path()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    dir.remove();
    let report = outcome?;
    print_report(&plan, &machine, &report);
    Ok(())
}

/// Everything one run measured.
#[derive(Default)]
struct Report {
    baseline: Option<Measured>,
    /// The same inserts without an fsync per commit: how much of the baseline is the disk.
    baseline_without_fsync: Option<Measured>,
    preload: Option<Preloaded>,
    server_start: Option<Duration>,
    scenarios: Vec<Measured>,
    /// The same scenarios on a server with authentication (`--auth`).
    authenticated: Vec<Measured>,
}

async fn run_plan(plan: &Plan, dir: &Path) -> anyhow::Result<Report> {
    let corpus = Arc::new(Corpus::from_catalog(
        &CatalogData::default_catalog()
            .map_err(|e| anyhow::anyhow!("the default catalog is invalid: {e}"))?,
    )?);
    let mut report = Report::default();

    if plan.runs(Part::Baseline) {
        println!("\nmeasuring the SQLite baseline (one transaction per ticket, one connection)");
        let url = sqlite_url(&dir.join("baseline.db"));
        let baseline = measure_baseline(&url, &corpus, Durability::Full, plan).await?;
        println!("  {}", baseline.one_line());
        report.baseline = Some(baseline);
        // For the explanation only: the same work when a commit does not wait for the disk.
        let url = sqlite_url(&dir.join("baseline-no-fsync.db"));
        let relaxed = measure_baseline(&url, &corpus, Durability::NoFsync, plan).await?;
        println!("  {}", relaxed.one_line());
        report.baseline_without_fsync = Some(relaxed);
    }

    let grpc_parts = [Part::Create, Part::Get, Part::List];
    if !grpc_parts.iter().any(|&p| plan.runs(p)) {
        return Ok(report);
    }

    let server_url = sqlite_url(&dir.join("server.db"));
    let mut sample_ids = Vec::new();
    if plan.preloads() {
        println!(
            "\npreloading {} tickets into the server's database before it opens it",
            group_digits(plan.n_preload)
        );
        let preloaded = preload(&server_url, &corpus, plan.n_preload, SystemClock.now()).await?;
        println!("  {}", preloaded.one_line());
        for line in &preloaded.list_plan {
            println!("  ListTickets query plan: {line}");
        }
        sample_ids = preloaded.sample_ids.clone();
        report.preload = Some(preloaded);
    }

    let started = Instant::now();
    let server = RunningServer::start_with(&server_url, plan.store_settings()).await?;
    report.server_start = Some(started.elapsed());
    println!(
        "\nserver listening on {} (opened in {:.2} s)",
        server.addr,
        started.elapsed().as_secs_f64()
    );
    let sample_ids = Arc::new(sample_ids);
    let scenarios = run_scenarios(
        plan,
        &server,
        &Credentials::default(),
        corpus.clone(),
        sample_ids.clone(),
    )
    .await;
    let stopped = server.stop().await;
    report.scenarios = scenarios?;
    stopped?;
    if plan.auth {
        let (credentials, authenticator) = bench_credentials()?;
        let store_settings = plan.store_settings();
        let server = RunningServer::start_with(&server_url, move |config| {
            store_settings(config);
            config.auth = Some(authenticator);
            // One bench caller makes every call: no per-caller limit may slow it down.
            config.limits.caller_rate_per_second = u32::MAX;
            config.limits.caller_burst = u32::MAX;
        })
        .await?;
        println!("\nthe same scenarios with authentication (an EdDSA bearer token per call):");
        let scenarios = run_scenarios(plan, &server, &credentials, corpus, sample_ids).await;
        let stopped = server.stop().await;
        report.authenticated = scenarios?;
        stopped?;
    }
    Ok(report)
}

/// What a bench client sends besides its message: a bearer token on an authenticated
/// server, nothing on an open one.
#[derive(Clone, Default)]
pub(crate) struct Credentials(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Credentials {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        request
    }
}

/// A fresh Ed25519 key, a server that trusts it, and an agent's token signed with it (valid
/// for a day: longer than any run).
fn bench_credentials() -> anyhow::Result<(Credentials, crate::auth::layer::Authenticator)> {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
    use ring::signature::KeyPair as _;
    let random = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&random)
        .map_err(|_| anyhow::anyhow!("cannot make an Ed25519 key"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("cannot read the Ed25519 key"))?;
    let verifier = crate::auth::jwt::JwtVerifier::new(
        "https://bench.invalid",
        "balagh",
        30,
        vec![crate::auth::jwt::VerificationKey {
            kid: "bench".into(),
            algorithm: Algorithm::EdDSA,
            key: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        }],
    )?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("bench".into());
    let claims = serde_json::json!({
        "sub": "bench-agent", "role": "agent", "iss": "https://bench.invalid", "aud": "balagh",
        "exp": jsonwebtoken::get_current_timestamp() + 24 * 3600,
    });
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(pkcs8.as_ref()))
        .context("cannot sign the bench token")?;
    let bearer = format!("Bearer {token}")
        .parse()
        .context("the token is not a header value")?;
    Ok((
        Credentials(Some(bearer)),
        crate::auth::layer::Authenticator {
            jwt: Some(verifier),
            certificates: Default::default(),
        },
    ))
}

async fn run_scenarios(
    plan: &Plan,
    server: &RunningServer,
    credentials: &Credentials,
    corpus: Arc<Corpus>,
    sample_ids: Arc<Vec<String>>,
) -> anyhow::Result<Vec<Measured>> {
    let max_clients = plan.clients.iter().copied().max().unwrap_or(1);
    let mut channels = Vec::new();
    for _ in 0..max_clients.div_ceil(CLIENTS_PER_CHANNEL) {
        channels.push(connect(server.addr).await?);
    }
    // Reads first, so they see exactly the preloaded table; CreateTicket then writes into it.
    let mut workloads = Vec::new();
    if plan.runs(Part::Get) {
        workloads.push(Workload::Get(sample_ids, plan.decode()));
    }
    if plan.runs(Part::List) {
        workloads.push(Workload::List(plan.decode()));
    }
    if plan.runs(Part::Create) {
        workloads.push(Workload::Create(corpus.clone()));
    }
    let mut results = Vec::new();
    let mut kept = KeptMessages::default();
    kept.report_quietly(server.admin_addr).await;
    for workload in &workloads {
        for &clients in &plan.clients {
            let creating = match (workload, plan.list_while_creating) {
                (Workload::List(_), Some(rate)) => Some(
                    PacedCreates::start(server.addr, credentials, &corpus, rate, clients).await?,
                ),
                _ => None,
            };
            let measured = drive_as(
                credentials,
                workload,
                clients,
                &channels,
                plan.warmup,
                plan.measure,
            )
            .await?;
            println!("  {}", measured.one_line());
            if let Some(creating) = creating {
                creating.stop_and_report(&measured).await?;
            }
            if matches!(workload, Workload::List(_)) {
                kept.report(server.admin_addr, &measured).await;
            }
            results.push(measured);
        }
    }
    Ok(results)
}

/// CreateTicket calls at a steady rate beside a read scenario (`--list-while-creating`), on
/// connections of their own.
struct PacedCreates {
    stop: CancellationToken,
    tasks: JoinSet<(u64, u64)>,
    started: Instant,
}

impl PacedCreates {
    const CLIENTS: u32 = 8;

    async fn start(
        addr: SocketAddr,
        credentials: &Credentials,
        corpus: &Arc<Corpus>,
        rate: u32,
        salt: usize,
    ) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let period = Duration::from_secs_f64(f64::from(Self::CLIENTS) / f64::from(rate));
        for index in 0..Self::CLIENTS {
            let mut client = TicketServiceClient::new(connect(addr).await?);
            let (credentials, corpus, stop) = (credentials.clone(), corpus.clone(), stop.clone());
            let mut rng = SplitMix64::new(0xC0FF_EE00 + (salt as u64) * 64 + u64::from(index));
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let (mut done, mut failed) = (0, 0);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return (done, failed),
                        _ = tick.tick() => {
                            match create_once(&credentials, &mut client, &corpus, rng.next()).await {
                                Ok(_) => done += 1,
                                Err(_) => failed += 1,
                            }
                        }
                    }
                }
            });
        }
        Ok(Self {
            stop,
            tasks,
            started: Instant::now(),
        })
    }

    async fn stop_and_report(mut self, measured: &Measured) -> anyhow::Result<()> {
        self.stop.cancel();
        let elapsed = self.started.elapsed();
        let (mut done, mut failed) = (0, 0);
        while let Some(joined) = self.tasks.join_next().await {
            let (d, f) = joined.context("a paced creator failed")?;
            done += d;
            failed += f;
        }
        println!(
            "  {} @{}: beside it {} tickets created ({:.0}/s, warm-up included), {} failed",
            measured.name,
            measured.clients,
            group_digits(done),
            done as f64 / elapsed.as_secs_f64(),
            failed
        );
        anyhow::ensure!(failed == 0, "{failed} creates beside the reads failed");
        Ok(())
    }
}

/// How many of ListTickets' tickets the server answered from kept messages, read from its
/// `/metrics` (`balagh_list_tickets_{reused,made}_tickets_total`) around each scenario. The
/// counts include the warm-up.
#[derive(Default)]
struct KeptMessages {
    reused: u64,
    made: u64,
}

impl KeptMessages {
    async fn read(admin: SocketAddr) -> anyhow::Result<(u64, u64)> {
        let text = reqwest::Client::new()
            .get(format!("http://{admin}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let counter = |name: &str| -> anyhow::Result<u64> {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
                .map(|v| v as u64)
                .with_context(|| format!("no {name} in /metrics"))
        };
        Ok((
            counter("balagh_list_tickets_reused_tickets_total ")?,
            counter("balagh_list_tickets_made_tickets_total ")?,
        ))
    }

    async fn report_quietly(&mut self, admin: SocketAddr) {
        if let Ok((reused, made)) = Self::read(admin).await {
            (self.reused, self.made) = (reused, made);
        }
    }

    async fn report(&mut self, admin: SocketAddr, measured: &Measured) {
        match Self::read(admin).await {
            Ok((reused, made)) => {
                let (r, m) = (
                    reused.saturating_sub(self.reused),
                    made.saturating_sub(self.made),
                );
                println!(
                    "  ListTickets @{}: {} tickets answered from kept messages, {} made \
                     ({:.1}% kept; warm-up included)",
                    measured.clients,
                    group_digits(r),
                    group_digits(m),
                    100.0 * r as f64 / (r + m).max(1) as f64
                );
                (self.reused, self.made) = (reused, made);
            }
            Err(error) => println!("  (cannot read the server's /metrics: {error:#})"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test.

/// The real application on port 0, on a runtime of its own named `balagh-server`.
pub(crate) struct RunningServer {
    pub(crate) addr: SocketAddr,
    /// The admin port (`/metrics`).
    pub(crate) admin_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RunningServer {
    pub(crate) async fn start(database_url: &str) -> anyhow::Result<Self> {
        Self::start_with(database_url, |_| {}).await
    }

    /// [`RunningServer::start`] with a changed configuration.
    pub(crate) async fn start_with(
        database_url: &str,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("balagh-server")
            .enable_all()
            .build()
            .context("cannot start the server's runtime")?;
        let shutdown = CancellationToken::new();
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        let mut config = Config::for_tests(database_url);
        configure(&mut config);
        let token = shutdown.clone();
        let task = runtime.spawn(async move {
            let app = Application::build(config).await?;
            let addr = app.local_addr().context("the bench's server runs gRPC")?;
            let _ = address_tx.send((addr, app.admin_addr()));
            app.run_until_stopped(token).await
        });
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown,
            task: Some(task),
            runtime: Some(runtime),
        };
        match address_rx.await {
            Ok((addr, admin_addr)) => {
                server.addr = addr;
                server.admin_addr = admin_addr;
                Ok(server)
            }
            Err(_) => {
                // The server ended before it listened; its own error says why.
                let ended = match server.task.take() {
                    Some(task) => task.await.context("the server task failed")?,
                    None => Ok(()),
                };
                ended.context("the server did not start")?;
                anyhow::bail!("the server stopped before it listened")
            }
        }
    }

    /// Stops the server the way SIGTERM does and waits for it to finish its writes.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.context("the server task failed")?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A runtime may not be dropped (blocking) inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<GrpcChannel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .context("invalid server address")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the server at {addr}"))
}

// ---------------------------------------------------------------------------------------------
// Load generation.

#[derive(Clone)]
pub(crate) enum Workload {
    Create(Arc<Corpus>),
    Get(Arc<Vec<String>>, Decode),
    List(Decode),
}

/// How much of a read's answer the load generator decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decode {
    /// Every field, into the generated messages.
    Full,
    /// Only the ticket ids and the page token ([`SlimGetTicketResponse`],
    /// [`SlimListTicketsResponse`]).
    Slim,
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Create(_) => "CreateTicket",
            Workload::Get(..) => "GetTicket",
            Workload::List(_) => "ListTickets",
        }
    }
}

/// One scenario's (or the baseline's) figures.
pub(crate) struct Measured {
    pub(crate) name: String,
    pub(crate) clients: usize,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
    pub(crate) cpu: CpuUse,
    /// ListTickets: rows returned per call, on average.
    pub(crate) rows_per_call: Option<f64>,
}

impl Measured {
    pub(crate) fn ops_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ops as f64 / seconds
        } else {
            0.0
        }
    }

    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    pub(crate) fn one_line(&self) -> String {
        let mut line = format!(
            "{} @{}: {} ops in {:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            self.name,
            self.clients,
            group_digits(self.ops),
            self.elapsed.as_secs_f64(),
            self.ops_per_second(),
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
        );
        if self.errors > 0 {
            let _ = write!(
                line,
                ", {} ERRORS (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        line
    }
}

/// What one client task counted.
struct Tally {
    ops: u64,
    errors: u64,
    rows: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    last_done: Instant,
}

impl Tally {
    fn new(start: Instant) -> anyhow::Result<Self> {
        Ok(Self {
            ops: 0,
            errors: 0,
            rows: 0,
            first_error: None,
            latency: new_histogram()?,
            last_done: start,
        })
    }

    fn count(&mut self, started: Instant, result: anyhow::Result<u64>) {
        let done = Instant::now();
        match result {
            Ok(rows) => {
                self.ops += 1;
                self.rows += rows;
                self.latency
                    .saturating_record(micros(done.saturating_duration_since(started)));
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{error:#}"));
                }
            }
        }
        self.last_done = self.last_done.max(done);
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.ops += other.ops;
        self.errors += other.errors;
        self.rows += other.rows;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency
            .add(&other.latency)
            .context("cannot merge latency histograms")?;
        self.last_done = self.last_done.max(other.last_done);
        Ok(())
    }
}

pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).context("cannot create a histogram")
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Runs `clients` tasks issuing calls back to back for warm-up plus measurement; only calls
/// that start after the warm-up are counted.
pub(crate) async fn drive(
    workload: &Workload,
    clients: usize,
    channels: &[GrpcChannel],
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Measured> {
    drive_as(
        &Credentials::default(),
        workload,
        clients,
        channels,
        warmup,
        measure,
    )
    .await
}

/// [`drive`], each call carrying `credentials`.
async fn drive_as(
    credentials: &Credentials,
    workload: &Workload,
    clients: usize,
    channels: &[GrpcChannel],
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + measure;
    let mut tasks = JoinSet::new();
    for index in 0..clients {
        let channel = channels
            .get(index / CLIENTS_PER_CHANNEL)
            .context("fewer channels than clients need")?
            .clone();
        let workload = workload.clone();
        tasks.spawn(client_loop(
            credentials.clone(),
            workload,
            channel,
            index as u64,
            measure_from,
            stop_at,
        ));
    }
    // The CPU snapshot is taken when measurement begins, not when warm-up does.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuSnapshot::take();
    let mut total = Tally::new(measure_from)?;
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.context("a client task failed")??;
        total.merge(tally)?;
    }
    let cpu_after = CpuSnapshot::take();
    let elapsed = total.last_done.saturating_duration_since(measure_from);
    let cpu = CpuUse::between(&cpu_before, &cpu_after);
    Ok(Measured {
        name: workload.name().to_owned(),
        clients,
        ops: total.ops,
        errors: total.errors,
        first_error: total.first_error,
        elapsed,
        latency: total.latency,
        cpu,
        rows_per_call: matches!(workload, Workload::List(_))
            .then(|| total.rows as f64 / total.ops.max(1) as f64),
    })
}

async fn client_loop(
    credentials: Credentials,
    workload: Workload,
    channel: GrpcChannel,
    index: u64,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<Tally> {
    let mut rng = SplitMix64::new(0x5EED_0000 + index);
    let mut tally = Tally::new(measure_from)?;
    let mut page = Paging::default();
    let mut client = TicketServiceClient::new(channel.clone());
    let mut slim = tonic::client::Grpc::new(channel);
    loop {
        let started = Instant::now();
        if started >= stop_at {
            break;
        }
        let result = match &workload {
            Workload::Create(corpus) => {
                create_once(&credentials, &mut client, corpus, rng.next()).await
            }
            Workload::Get(ids, Decode::Full) => {
                get_once(&credentials, &mut client, ids, &mut rng).await
            }
            Workload::Get(ids, Decode::Slim) => {
                get_once_slim(&credentials, &mut slim, ids, &mut rng).await
            }
            Workload::List(Decode::Full) => list_once(&credentials, &mut client, &mut page).await,
            Workload::List(Decode::Slim) => {
                list_once_slim(&credentials, &mut slim, &mut page).await
            }
        };
        if started >= measure_from {
            tally.count(started, result);
        }
    }
    Ok(tally)
}

async fn create_once(
    credentials: &Credentials,
    client: &mut TicketServiceClient<GrpcChannel>,
    corpus: &Corpus,
    k: u64,
) -> anyhow::Result<u64> {
    let mut message = corpus.sample_request(k);
    // Every mutation of a well-behaved client carries a request id (AIP-155).
    message.request_id = uuid::Uuid::now_v7().to_string();
    let mut request = credentials.request(message);
    request
        .metadata_mut()
        .insert(ACTOR_METADATA_KEY, MetadataValue::from_static("bench"));
    let response = client.create_ticket(request).await?;
    response
        .into_inner()
        .ticket
        .map(|_| 1)
        .context("CreateTicket answered without a ticket")
}

fn pick_id<'a>(ids: &'a [String], rng: &mut SplitMix64) -> anyhow::Result<&'a String> {
    let n = u64::try_from(ids.len()).unwrap_or(u64::MAX).max(1);
    usize::try_from(rng.below(n))
        .ok()
        .and_then(|i| ids.get(i))
        .context("no ticket ids to get")
}

/// 1 when GetTicket answered the ticket asked for.
fn got_ticket(asked: &str, answered: Option<String>) -> anyhow::Result<u64> {
    let answered = answered.context("GetTicket answered without a ticket")?;
    anyhow::ensure!(answered == asked, "GetTicket answered another ticket");
    Ok(1)
}

fn get_request(id: &str) -> proto::GetTicketRequest {
    proto::GetTicketRequest {
        reveal_personal_data: false,
        lookup: Some(proto::get_ticket_request::Lookup::Id(id.to_owned())),
    }
}

async fn get_once(
    credentials: &Credentials,
    client: &mut TicketServiceClient<GrpcChannel>,
    ids: &[String],
    rng: &mut SplitMix64,
) -> anyhow::Result<u64> {
    let id = pick_id(ids, rng)?;
    let response = client
        .get_ticket(credentials.request(get_request(id)))
        .await?;
    got_ticket(id, response.into_inner().ticket.map(|t| t.id))
}

/// `GetTicketResponse` as the load generator reads it by default: the same wire format, only
/// the ticket's id. prost skips the other fields without building them; a real client decodes
/// everything (`--full-decode`).
#[derive(Clone, PartialEq, prost::Message)]
struct SlimGetTicketResponse {
    #[prost(message, optional, tag = "1")]
    ticket: Option<SlimTicket>,
}

/// `ListTicketsResponse` as the load generator reads it by default (see
/// [`SlimGetTicketResponse`]).
#[derive(Clone, PartialEq, prost::Message)]
struct SlimListTicketsResponse {
    #[prost(message, repeated, tag = "1")]
    tickets: Vec<SlimTicket>,
    #[prost(string, tag = "2")]
    next_page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SlimTicket {
    #[prost(string, tag = "1")]
    id: String,
}

const GET_TICKET_PATH: &str = "/balagh.v1.TicketService/GetTicket";

async fn get_once_slim(
    credentials: &Credentials,
    grpc: &mut tonic::client::Grpc<GrpcChannel>,
    ids: &[String],
    rng: &mut SplitMix64,
) -> anyhow::Result<u64> {
    let id = pick_id(ids, rng)?;
    grpc.ready().await?;
    let response = grpc
        .unary(
            credentials.request(get_request(id)),
            tonic::codegen::http::uri::PathAndQuery::from_static(GET_TICKET_PATH),
            tonic_prost::ProstCodec::<proto::GetTicketRequest, SlimGetTicketResponse>::default(),
        )
        .await?;
    got_ticket(id, response.into_inner().ticket.map(|t| t.id))
}

/// What a ListTickets client checks of a page, however much of it it decoded.
struct PageSeen {
    ids: Vec<String>,
    next_page_token: String,
}

impl From<proto::ListTicketsResponse> for PageSeen {
    fn from(page: proto::ListTicketsResponse) -> Self {
        Self {
            ids: page.tickets.into_iter().map(|t| t.id).collect(),
            next_page_token: page.next_page_token,
        }
    }
}

impl From<SlimListTicketsResponse> for PageSeen {
    fn from(page: SlimListTicketsResponse) -> Self {
        Self {
            ids: page.tickets.into_iter().map(|t| t.id).collect(),
            next_page_token: page.next_page_token,
        }
    }
}

/// Where a ListTickets client is in its walk through the inbox's pages.
#[derive(Default)]
struct Paging {
    token: String,
    pages: u32,
}

impl Paging {
    /// Takes a page's outcome (its ticket ids and next token): the number of tickets, or the
    /// error, which ends the walk.
    fn take(&mut self, outcome: Result<PageSeen, tonic::Status>) -> anyhow::Result<u64> {
        let PageSeen {
            ids,
            next_page_token,
        } = match outcome {
            Ok(page) => page,
            Err(status) => {
                self.advance(None);
                return Err(status.into());
            }
        };
        if ids.iter().any(String::is_empty) {
            self.advance(None);
            anyhow::bail!("ListTickets answered a ticket without an id");
        }
        self.advance(Some(next_page_token));
        Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
    }

    /// Follows `next_page_token` a few pages deep, then starts over; after an error, starts
    /// over at once.
    fn advance(&mut self, next_page_token: Option<String>) {
        match next_page_token {
            Some(token) if !token.is_empty() && self.pages + 1 < LIST_MAX_PAGES => {
                self.token = token;
                self.pages += 1;
            }
            _ => *self = Self::default(),
        }
    }
}

/// The filtered list of a directorate's inbox: its new tickets, newest first, a page of 50.
/// Each client follows the page tokens a few pages deep, then starts over.
fn list_request(page_token: &str) -> proto::ListTicketsRequest {
    proto::ListTicketsRequest {
        page_size: LIST_PAGE_SIZE,
        page_token: page_token.to_owned(),
        statuses: vec![proto::TicketStatus::New.into()],
        directorates: vec![LIST_DIRECTORATE.to_owned()],
        ..Default::default()
    }
}

async fn list_once(
    credentials: &Credentials,
    client: &mut TicketServiceClient<GrpcChannel>,
    page: &mut Paging,
) -> anyhow::Result<u64> {
    let outcome = client
        .list_tickets(credentials.request(list_request(&page.token)))
        .await
        .map(|response| PageSeen::from(response.into_inner()));
    page.take(outcome)
}

async fn list_once_slim(
    credentials: &Credentials,
    grpc: &mut tonic::client::Grpc<GrpcChannel>,
    page: &mut Paging,
) -> anyhow::Result<u64> {
    grpc.ready().await?;
    let outcome = grpc
        .unary(
            credentials.request(list_request(&page.token)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                crate::grpc::watch::route::LIST_TICKETS_PATH,
            ),
            tonic_prost::ProstCodec::<proto::ListTicketsRequest, SlimListTicketsResponse>::default(
            ),
        )
        .await
        .map(|response| PageSeen::from(response.into_inner()));
    page.take(outcome)
}

// ---------------------------------------------------------------------------------------------
// The baseline: SQLite alone.

/// Inserts tickets one transaction each, sequentially on one connection, into a fresh file
/// with the store's schema and durability: the rows a CreateTicket with a request id writes
/// (reference counter, ticket, search text, created event with its feed snapshot, the outbox
/// row when the sync policy owes the platform a push, request record), and nothing else (no
/// catalog checks, no savepoints, no gRPC). The writes go through rusqlite, the store's own
/// driver, on a thread named like the store's writer, so the baseline pays no more per
/// statement than the store does.
async fn measure_baseline(
    url: &str,
    corpus: &Corpus,
    durability: Durability,
    plan: &Plan,
) -> anyhow::Result<Measured> {
    open_prepared(url, corpus, durability)
        .await?
        .close()
        .await
        .context("cannot close the prepared baseline database")?;
    let file = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {url}"))?
        .get_filename()
        .to_owned();
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(BASELINE_THREAD_NAME.to_owned())
                .spawn_scoped(scope, || run_baseline(&file, corpus, durability, plan))
                .context("cannot start the baseline thread")?
                .join()
                .map_err(|_| anyhow::anyhow!("the baseline thread panicked"))?
        })
    })
}

/// The baseline's thread; its name starts like the store's writer thread, so its CPU is
/// counted as SQLite's.
const BASELINE_THREAD_NAME: &str = "sqlite-baseline";

fn run_baseline(
    file: &Path,
    corpus: &Corpus,
    durability: Durability,
    plan: &Plan,
) -> anyhow::Result<Measured> {
    let (warmup, measure) = (plan.warmup, plan.measure);
    let mut conn = rusqlite::Connection::open(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0))?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::NoFsync => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let clock = SystemClock;
    let mut rng = SplitMix64::new(0xBA5E);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + measure;
    let mut tally = Tally::new(measure_from)?;
    let mut cpu_before = None;
    loop {
        let started = Instant::now();
        if started >= stop_at {
            break;
        }
        if started >= measure_from {
            cpu_before.get_or_insert_with(CpuSnapshot::take);
        }
        let create = prepare_create(corpus, rng.next())?;
        let result = insert_one_transaction(&mut conn, create, &corpus.sync_policy, clock.now());
        if started >= measure_from {
            tally.count(started, result.map(|()| 1));
        } else {
            result?;
        }
    }
    let cpu_after = CpuSnapshot::take();
    conn.close()
        .map_err(|(_, e)| e)
        .context("cannot close the baseline database")?;
    Ok(Measured {
        name: match durability {
            Durability::Full => "SQLite baseline",
            Durability::NoFsync => "SQLite no fsync",
        }
        .to_owned(),
        clients: 1,
        ops: tally.ops,
        errors: tally.errors,
        first_error: tally.first_error,
        elapsed: tally.last_done.saturating_duration_since(measure_from),
        latency: tally.latency,
        cpu: match &cpu_before {
            Some(before) => CpuUse::between(before, &cpu_after),
            None => CpuUse::default(),
        },
        rows_per_call: None,
    })
}

/// A CreateTicket, parsed as the server would, ready to be written by the baseline.
pub(crate) struct PreparedCreate {
    pub(crate) key: crate::store::RequestKey,
    pub(crate) new: NewTicket,
    pub(crate) directorate: Code,
    pub(crate) default_priority: Priority,
}

pub(crate) fn prepare_create(corpus: &Corpus, k: u64) -> anyhow::Result<PreparedCreate> {
    let mut message = corpus.sample_request(k);
    message.request_id = uuid::Uuid::now_v7().to_string();
    let key = request_key("CreateTicket", &message.request_id, &message, |r| {
        r.request_id.clear()
    })
    .context("invalid request id")?
    .context("the request id is missing")?;
    let new = parse_new_ticket(&message)
        .map_err(|v| anyhow::anyhow!("a generated request is invalid: {v:?}"))?;
    let category = corpus.category(&new.category)?;
    Ok(PreparedCreate {
        key,
        directorate: category.directorate.clone(),
        default_priority: category.priority,
        new,
    })
}

/// One ticket in one transaction: the rows the store's `create_ticket_tx` and request record
/// write, with the same statements.
fn insert_one_transaction(
    conn: &mut rusqlite::Connection,
    create: PreparedCreate,
    sync_policy: &SyncPolicy,
    now: Timestamp,
) -> anyhow::Result<()> {
    let PreparedCreate {
        key,
        new,
        directorate,
        default_priority,
    } = create;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .context("cannot begin")?;
    let year = now.muscat_year();
    let number: i64 = tx
        .prepare_cached(
            "INSERT INTO reference_counters (year, last_value) VALUES (?, 1)
             ON CONFLICT (year) DO UPDATE SET last_value = last_value + 1
             RETURNING last_value",
        )?
        .query_row([year], |row| row.get(0))?;
    let reference = u32::try_from(number)
        .ok()
        .and_then(|n| ReferenceNumber::new(year, n))
        .with_context(|| format!("reference counter {year}/{number}"))?;
    let ticket = new_ticket(
        new,
        directorate,
        default_priority,
        TicketId::new_v7(),
        reference,
        now,
    );
    let body = serde_json::to_string(&ticket)?;
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO tickets (id, reference, ticket_type, channel, category, priority, status,
                 directorate, outlet, wilayat, assignee, support_line, create_time, update_time,
                 version, body)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING seq",
        )?
        .query_row(
            rusqlite::params![
                ticket.id.to_string(),
                ticket.reference.to_string(),
                ticket.ticket_type.as_str(),
                ticket.channel.as_str(),
                ticket.category.as_str(),
                ticket.priority.as_str(),
                ticket.status.as_str(),
                ticket.assignment.directorate.as_ref().map(Code::as_str),
                ticket.assignment.outlet.as_ref().map(Code::as_str),
                ticket.location.wilayat.as_ref().map(Code::as_str),
                ticket.assignment.assignee.as_ref().map(EmployeeId::as_str),
                ticket
                    .assignment
                    .support_line
                    .map(|l| i64::from(l.number())),
                ticket.create_time.as_micros(),
                ticket.update_time.as_micros(),
                ticket.version,
                body,
            ],
            |row| row.get(0),
        )?;
    tx.prepare_cached("INSERT INTO tickets_fts (rowid, content) VALUES (?, ?)")?
        .execute(rusqlite::params![seq, search_document(&ticket)])?;
    let record = created_event(&ticket);
    let cursor: i64 = tx
        .prepare_cached(
            "INSERT INTO ticket_events (ticket_id, kind, actor, occur_time, version, body, ticket_body)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )?
        .query_row(
            rusqlite::params![
                ticket.id.to_string(),
                record.kind.as_str(),
                "bench",
                now.as_micros(),
                ticket.version,
                serde_json::to_string(&record)?,
                body,
            ],
            |row| row.get(0),
        )?;
    // The push the national platform is owed, under the policy the server runs with.
    if let Some(kind) = push_for(&ticket, &record).filter(|_| sync_policy.applies_to(&ticket)) {
        let event = TicketEvent {
            cursor,
            ticket_id: ticket.id,
            actor: "bench".to_owned(),
            occur_time: now,
            version: ticket.version,
            record,
        };
        tx.prepare_cached(
            "INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key, ticket_body,
                 event_body, state, next_attempt_at, create_time, update_time)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
        )?
        .execute(rusqlite::params![
            ticket.id.to_string(),
            cursor,
            kind.as_str(),
            format!("balagh-{}-{cursor}", ticket.id),
            body,
            serde_json::to_string(&event)?,
            now.as_micros(),
            now.as_micros(),
            now.as_micros(),
        ])?;
    }
    tx.prepare_cached(
        "INSERT INTO request_records (request_id, fingerprint, response, create_time)
         VALUES (?, ?, ?, ?)",
    )?
    .execute(rusqlite::params![
        key.request_id,
        key.fingerprint.as_slice(),
        body,
        now.as_micros(),
    ])?;
    tx.commit().context("cannot commit")?;
    Ok(())
}

/// The ticket the store creates from `new` (see the store's `create_ticket_tx`), given the
/// category's routing defaults.
pub(crate) fn new_ticket(
    new: NewTicket,
    directorate: Code,
    default_priority: Priority,
    id: TicketId,
    reference: ReferenceNumber,
    now: Timestamp,
) -> Ticket {
    Ticket {
        id,
        reference,
        ticket_type: new.ticket_type,
        channel: new.channel,
        category: new.category,
        priority: new.priority.unwrap_or(default_priority),
        status: Status::New,
        subject: new.subject,
        description: new.description,
        reporter: new.reporter,
        location: new.location,
        attachments: new.attachments,
        assignment: Assignment {
            directorate: Some(directorate),
            outlet: None,
            assignee: None,
            support_line: Some(SupportLine::First),
        },
        resolution: None,
        transferred_to: None,
        duplicate_of: None,
        status_reason: None,
        create_time: now,
        update_time: now,
        resolve_time: None,
        close_time: None,
        satisfaction: None,
        escalation_level: 0,
        escalated_to_director_general: false,
        version: 1,
        created_by: None,
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite files with the store's schema, settings and row shapes.

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// How a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// The store's setting: WAL with `synchronous=FULL`, an fsync of the WAL per commit.
    Full,
    /// WAL with `synchronous=NORMAL`: no fsync per commit (not what the store does).
    NoFsync,
}

/// Connects with the store's settings (WAL, foreign keys, `synchronous=FULL` unless told
/// otherwise), runs the store's migrations and loads the default catalog the way the store
/// does on first start.
async fn open_prepared(
    url: &str,
    corpus: &Corpus,
    durability: Durability,
) -> anyhow::Result<SqliteConnection> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {url}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::NoFsync => SqliteSynchronous::Normal,
        })
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .context("the migrations failed")?;
    load_catalog(&mut conn, &corpus.catalog).await?;
    Ok(conn)
}

async fn load_catalog(conn: &mut SqliteConnection, catalog: &CatalogData) -> anyhow::Result<()> {
    let mut tx = Connection::begin(&mut *conn).await?;
    for w in &catalog.wilayats {
        sqlx::query("INSERT OR IGNORE INTO wilayats (code, name_ar, name_en) VALUES (?, ?, ?)")
            .bind(w.code.as_str())
            .bind(&w.name_ar)
            .bind(&w.name_en)
            .execute(&mut *tx)
            .await?;
    }
    for d in &catalog.directorates {
        sqlx::query(
            "INSERT OR IGNORE INTO directorates (code, name_ar, name_en, active)
             VALUES (?, ?, ?, ?)",
        )
        .bind(d.code.as_str())
        .bind(&d.name_ar)
        .bind(&d.name_en)
        .bind(d.active)
        .execute(&mut *tx)
        .await?;
    }
    for o in &catalog.outlets {
        sqlx::query(
            "INSERT OR IGNORE INTO outlets
                 (code, directorate_code, wilayat_code, name_ar, name_en, active)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(o.code.as_str())
        .bind(o.directorate_code.as_str())
        .bind(o.wilayat_code.as_str())
        .bind(&o.name_ar)
        .bind(&o.name_en)
        .bind(o.active)
        .execute(&mut *tx)
        .await?;
    }
    for c in &catalog.categories {
        sqlx::query(
            "INSERT OR IGNORE INTO categories (code, name_ar, name_en, default_directorate_code,
                 default_priority, sla_policy_code, active)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.code.as_str())
        .bind(&c.name_ar)
        .bind(&c.name_en)
        .bind(c.default_directorate_code.as_str())
        .bind(c.default_priority.as_str())
        .bind(c.sla_policy_code.as_str())
        .bind(c.active)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Writes tickets (with seq `first_seq`, `first_seq + 1`, ...), their search text, their
/// events (seq from `first_event_seq`) and the platform pushes those owed (delivered) with
/// multi-row statements: the same rows as the store's `insert_ticket` and `append_event`
/// (with the snapshots its feed pruning has not yet dropped), without a round trip to
/// SQLite's thread per row. Returns the next event seq.
async fn insert_histories(
    conn: &mut SqliteConnection,
    histories: &[History],
    first_seq: i64,
    first_event_seq: i64,
) -> anyhow::Result<i64> {
    let mut rows = Vec::with_capacity(histories.len());
    for (n, history) in histories.iter().enumerate() {
        let seq = first_seq + i64::try_from(n)?;
        rows.push((
            seq,
            &history.ticket,
            serde_json::to_string(&history.ticket)?,
        ));
    }
    let mut tickets = QueryBuilder::<Sqlite>::new(
        "INSERT INTO tickets (seq, id, reference, ticket_type, channel, category, priority,
             status, directorate, outlet, wilayat, assignee, support_line, create_time,
             update_time, version, body) ",
    );
    tickets.push_values(&rows, |mut row, (seq, t, body)| {
        row.push_bind(*seq)
            .push_bind(t.id.to_string())
            .push_bind(t.reference.to_string())
            .push_bind(t.ticket_type.as_str())
            .push_bind(t.channel.as_str())
            .push_bind(t.category.as_str().to_owned())
            .push_bind(t.priority.as_str())
            .push_bind(t.status.as_str())
            .push_bind(
                t.assignment
                    .directorate
                    .as_ref()
                    .map(|c| c.as_str().to_owned()),
            )
            .push_bind(t.assignment.outlet.as_ref().map(|c| c.as_str().to_owned()))
            .push_bind(t.location.wilayat.as_ref().map(|c| c.as_str().to_owned()))
            .push_bind(
                t.assignment
                    .assignee
                    .as_ref()
                    .map(|a| a.as_str().to_owned()),
            )
            .push_bind(t.assignment.support_line.map(|l| i64::from(l.number())))
            .push_bind(t.create_time.as_micros())
            .push_bind(t.update_time.as_micros())
            .push_bind(t.version)
            .push_bind(body.clone());
    });
    tickets.build().execute(&mut *conn).await?;

    let mut search = QueryBuilder::<Sqlite>::new("INSERT INTO tickets_fts (rowid, content) ");
    search.push_values(&rows, |mut row, (seq, t, _)| {
        row.push_bind(*seq).push_bind(search_document(t));
    });
    search.build().execute(&mut *conn).await?;

    let mut events = Vec::new();
    let mut pushes = Vec::new();
    let mut event_seq = first_event_seq;
    for history in histories {
        let id = history.ticket.id;
        for event in &history.events {
            events.push((
                event_seq,
                id.to_string(),
                event,
                serde_json::to_string(&event.record)?,
            ));
            if let Some((kind, ticket_body)) = &event.push {
                let as_sent = TicketEvent {
                    cursor: event_seq,
                    ticket_id: id,
                    actor: event.actor.clone(),
                    occur_time: event.at,
                    version: event.version,
                    record: event.record.clone(),
                };
                pushes.push((
                    event_seq,
                    id,
                    *kind,
                    ticket_body,
                    serde_json::to_string(&as_sent)?,
                    event.at,
                ));
            }
            event_seq += 1;
        }
    }
    // Chunked so that no statement binds more than SQLite's 32,766 values.
    for chunk in events.chunks(2_000) {
        let mut log = QueryBuilder::<Sqlite>::new(
            "INSERT INTO ticket_events (seq, ticket_id, kind, actor, occur_time, version, body,
                 ticket_body) ",
        );
        log.push_values(chunk, |mut row, (seq, id, event, body)| {
            row.push_bind(*seq)
                .push_bind(id.clone())
                .push_bind(event.record.kind.as_str())
                .push_bind(event.actor.clone())
                .push_bind(event.at.as_micros())
                .push_bind(event.version)
                .push_bind(body.clone())
                .push_bind(event.ticket_body.clone());
        });
        log.build().execute(&mut *conn).await?;
    }
    for chunk in pushes.chunks(2_000) {
        let mut outbox = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key, ticket_body,
                 event_body, state, n_attempts, next_attempt_at, create_time, update_time) ",
        );
        outbox.push_values(
            chunk,
            |mut row, (cursor, id, kind, ticket_body, event_body, at)| {
                row.push_bind(id.to_string())
                    .push_bind(*cursor)
                    .push_bind(kind.as_str())
                    .push_bind(format!("balagh-{id}-{cursor}"))
                    .push_bind((*ticket_body).clone())
                    .push_bind(event_body.clone())
                    .push_bind(OutboxState::Delivered.as_str())
                    .push_bind(1i64)
                    .push_bind(at.as_micros())
                    .push_bind(at.as_micros())
                    .push_bind(at.as_micros());
            },
        );
        outbox.build().execute(&mut *conn).await?;
    }
    Ok(event_seq)
}

/// What the loader wrote.
struct Preloaded {
    n_tickets: u64,
    n_events: u64,
    elapsed: Duration,
    /// How long the feed pruning statement took (the server runs it again when it starts).
    prune_elapsed: Duration,
    database_bytes: u64,
    /// Tickets matching the ListTickets filter of the benchmark.
    n_matching_list: i64,
    /// `EXPLAIN QUERY PLAN` of the store's query for that filter.
    list_plan: Vec<String>,
    /// Reference numbers given per year, which the server's counters continue from.
    counters: BTreeMap<i32, u32>,
    /// Evenly spaced ids of preloaded tickets, for GetTicket.
    sample_ids: Vec<String>,
}

impl Preloaded {
    fn tickets_per_second(&self) -> f64 {
        self.n_tickets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn one_line(&self) -> String {
        format!(
            "{} tickets and {} events in {:.1} s ({:.0} tickets/s, of which feed pruning {:.1} s); database {:.2} GiB; {} match the ListTickets filter",
            group_digits(self.n_tickets),
            group_digits(self.n_events),
            self.elapsed.as_secs_f64(),
            self.tickets_per_second(),
            self.prune_elapsed.as_secs_f64(),
            self.database_bytes as f64 / GIB,
            group_digits(u64::try_from(self.n_matching_list).unwrap_or(0)),
        )
    }
}

/// Writes `n` tickets created over the year before `now` into the database at `url`, which
/// no server may have open. Each ticket is built as the store builds it, then moved through
/// the real lifecycle to a status that depends on its age (recent tickets are mostly open,
/// old ones mostly closed), and written with its search text and every event of its history.
async fn preload(url: &str, corpus: &Corpus, n: u64, now: Timestamp) -> anyhow::Result<Preloaded> {
    let started = Instant::now();
    let mut conn = open_prepared(url, corpus, Durability::Full).await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tickets")
        .fetch_one(&mut conn)
        .await?;
    if existing > 0 {
        anyhow::bail!("the database to preload already holds {existing} tickets");
    }
    let span_micros = PRELOAD_SPAN_DAYS * 24 * 3600 * 1_000_000;
    // Events older than the server's feed retention have had their snapshots pruned.
    let retention = Config::for_tests(url).watch.retention();
    let feed_from = Timestamp::from_micros(
        now.as_micros() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX / 2),
    );
    let sample_every = n.div_ceil(MAX_SAMPLE_IDS).max(1);
    let mut counters = BTreeMap::<i32, u32>::new();
    let mut sample_ids = Vec::new();
    let mut n_events = 0u64;
    let mut next_event_seq = 1i64;
    let mut rng = SplitMix64::new(0x10AD);
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let mut i = 0u64;
    while i < n {
        let end = (i + PRELOAD_BATCH).min(n);
        let mut batch = Vec::with_capacity(usize::try_from(end - i).unwrap_or(0));
        for j in i..end {
            // Creation times rise with j, so `seq` order is creation order, as in production.
            let offset = i64::try_from(
                u128::from(n - j) * u128::from(span_micros.unsigned_abs()) / u128::from(n),
            )
            .unwrap_or(span_micros);
            let create_time = Timestamp::from_micros(now.as_micros() - offset);
            let year = create_time.muscat_year();
            let counter = counters.entry(year).or_insert(0);
            *counter += 1;
            let reference = ReferenceNumber::new(year, *counter)
                .with_context(|| format!("reference {year}/{counter}"))?;
            let history = corpus.history(&mut rng, j, reference, create_time, now, feed_from)?;
            n_events += history.events.len() as u64;
            if j.is_multiple_of(sample_every) {
                sample_ids.push(history.ticket.id.to_string());
            }
            batch.push(history);
        }
        let mut tx = Connection::begin(&mut conn)
            .await
            .context("cannot begin a preload batch")?;
        // seq is given explicitly (tickets j + 1, events counted on): the tables are empty
        // and this is their only writer (see the module docs).
        let first_seq = i64::try_from(i).context("too many tickets")? + 1;
        for (n_chunk, chunk) in batch.chunks(ROWS_PER_STATEMENT).enumerate() {
            let chunk_seq = first_seq + i64::try_from(n_chunk * ROWS_PER_STATEMENT)?;
            next_event_seq = insert_histories(&mut tx, chunk, chunk_seq, next_event_seq).await?;
        }
        tx.commit().await.context("cannot commit a preload batch")?;
        i = end;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            println!(
                "  ... {} of {} tickets ({:.0} s)",
                group_digits(i),
                group_digits(n),
                started.elapsed().as_secs_f64()
            );
        }
    }
    for (year, last) in &counters {
        sqlx::query(
            "INSERT INTO reference_counters (year, last_value) VALUES (?, ?)
             ON CONFLICT (year) DO UPDATE SET last_value = max(last_value, excluded.last_value)",
        )
        .bind(year)
        .bind(i64::from(*last))
        .execute(&mut conn)
        .await?;
    }
    // The server's own pruning statements (`prune_feed`), which its upkeep also runs at start:
    // they mark where resumable history begins and find nothing else left to drop.
    let pruning = Instant::now();
    let through: Option<i64> =
        sqlx::query_scalar("SELECT MAX(seq) FROM ticket_events WHERE occur_time < ?")
            .bind(feed_from.as_micros())
            .fetch_one(&mut conn)
            .await?;
    if let Some(through) = through {
        sqlx::query(
            "UPDATE ticket_events SET ticket_body = NULL WHERE seq <= ? AND ticket_body IS NOT NULL",
        )
        .bind(through)
        .execute(&mut conn)
        .await?;
        sqlx::query("UPDATE feed_state SET pruned_through = MAX(pruned_through, ?) WHERE id = 1")
            .bind(through)
            .execute(&mut conn)
            .await?;
    }
    let prune_elapsed = pruning.elapsed();
    let n_matching_list: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tickets WHERE status = ? AND directorate = ?")
            .bind(Status::New.as_str())
            .bind(LIST_DIRECTORATE)
            .fetch_one(&mut conn)
            .await?;
    // The statement the store builds for the benchmark's filter (see SqliteStore::list_tickets).
    let plan_rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT seq, body FROM tickets WHERE 1 = 1 AND status IN (?)
         AND directorate IN (?) ORDER BY seq DESC LIMIT ?",
    )
    .bind(Status::New.as_str())
    .bind(LIST_DIRECTORATE)
    .bind(i64::from(LIST_PAGE_SIZE) + 1)
    .fetch_all(&mut conn)
    .await?;
    conn.close()
        .await
        .context("cannot close the preloaded database")?;
    let path = url.trim_start_matches("sqlite://");
    let database_bytes = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{path}{suffix}")).ok())
        .map(|m| m.len())
        .sum();
    Ok(Preloaded {
        n_tickets: n,
        n_events,
        elapsed: started.elapsed(),
        prune_elapsed,
        database_bytes,
        n_matching_list,
        list_plan: plan_rows.into_iter().map(|r| r.3).collect(),
        counters,
        sample_ids,
    })
}

// ---------------------------------------------------------------------------------------------
// Realistic tickets.

/// A category with what the generator and the store need to know about it.
struct CategoryInfo {
    code: Code,
    directorate: Code,
    priority: Priority,
    ticket_type: TicketType,
    subject: &'static str,
    detail: &'static str,
}

/// The catalog, and the words tickets are made of.
pub(crate) struct Corpus {
    catalog: CatalogData,
    categories: Vec<CategoryInfo>,
    wilayats: Vec<String>,
    /// The policy `Application::build` gives the store: which changes owe the platform a push.
    sync_policy: SyncPolicy,
}

/// What citizens write about each category of the default catalog: subject, then details.
const TEXTS: &[(&str, &str, &str)] = &[
    (
        "pothole",
        "حفرة في الطريق",
        "توجد حفرة عميقة في الطريق تسبب خطراً على السيارات والمارة",
    ),
    (
        "street_lighting",
        "إنارة الشارع معطلة",
        "أعمدة الإنارة في الشارع لا تعمل منذ عدة أيام والمكان مظلم ليلاً",
    ),
    (
        "stormwater_drainage",
        "تجمع مياه الأمطار",
        "تجمعت مياه الأمطار في الشارع وأغلقت الطريق أمام المنازل",
    ),
    (
        "waste_collection",
        "لم يتم جمع النفايات",
        "الحاويات ممتلئة ولم يتم جمع النفايات منذ أسبوع والرائحة منتشرة",
    ),
    (
        "public_cleanliness",
        "مخلفات في مكان عام",
        "توجد مخلفات بناء ملقاة على جانب الطريق بجوار الحديقة",
    ),
    (
        "pest_control",
        "انتشار الحشرات",
        "انتشار البعوض والحشرات في الحي بسبب المياه الراكدة",
    ),
    (
        "food_safety",
        "مخالفة في سلامة الغذاء",
        "مطعم يقدم أطعمة منتهية الصلاحية ولا يلتزم بالاشتراطات الصحية",
    ),
    (
        "stray_animals",
        "حيوانات سائبة",
        "مجموعة من الكلاب الضالة تتجول بين المنازل وتخيف الأطفال",
    ),
    (
        "building_violation",
        "مخالفة بناء",
        "أعمال بناء بدون ترخيص تتجاوز حدود الأرض وتغلق الممر",
    ),
    (
        "building_permit",
        "استفسار عن رخصة بناء",
        "أرغب في معرفة المستندات المطلوبة لتجديد رخصة البناء ومدة الإجراء",
    ),
    (
        "parks_maintenance",
        "صيانة الحديقة",
        "ألعاب الأطفال في الحديقة مكسورة ونظام الري لا يعمل",
    ),
    (
        "commercial_license",
        "استفسار عن ترخيص تجاري",
        "ما هي رسوم تجديد الترخيص التجاري لمحل صغير وهل يمكن التجديد إلكترونياً",
    ),
    (
        "staff_conduct",
        "شكوى من تعامل موظف",
        "تعامل الموظف في مركز الخدمة كان غير لائق وتأخر إنجاز المعاملة",
    ),
    (
        "service_improvement",
        "اقتراح لتحسين الخدمة",
        "أقترح إضافة خدمة تتبع الطلبات عبر الرسائل النصية لتوفير الوقت",
    ),
    (
        "general_inquiry",
        "استفسار عام",
        "أرغب في معرفة أوقات عمل مراكز الخدمة خلال شهر رمضان",
    ),
];

const AREAS: &[&str] = &[
    "الخوير",
    "روي",
    "القرم",
    "الموالح",
    "العذيبة",
    "الحيل",
    "المعبيلة",
    "الوادي الكبير",
    "الغبرة",
    "مدينة السلطان قابوس",
    "الأنصب",
    "وادي عدي",
];
const LANDMARKS: &[&str] = &[
    "المسجد",
    "المدرسة",
    "المركز الصحي",
    "الدوار",
    "محطة الوقود",
    "السوق",
];
const FIRST_NAMES: &[&str] = &[
    "أحمد",
    "محمد",
    "سالم",
    "خالد",
    "فاطمة",
    "مريم",
    "عائشة",
    "سعيد",
    "نورة",
    "يوسف",
];
const FAMILY_NAMES: &[&str] = &[
    "البلوشي",
    "الحارثي",
    "الهنائي",
    "الكندي",
    "الرواحي",
    "الشكيلي",
    "المعمري",
    "الفارسي",
];

/// A ticket's whole history: the final ticket and every event, each with the ticket after it.
struct History {
    ticket: Ticket,
    events: Vec<HistoryEvent>,
}

/// One event of a [`History`], with the ticket's version after it.
struct HistoryEvent {
    version: i64,
    actor: String,
    at: Timestamp,
    record: EventRecord,
    /// The ticket after the event, kept by the change feed for its retention, then dropped.
    ticket_body: Option<String>,
    /// The push to the platform this event owed (long delivered), with the ticket after it.
    push: Option<(PushKind, String)>,
}

impl Corpus {
    pub(crate) fn from_catalog(catalog: &CatalogData) -> anyhow::Result<Self> {
        let categories: Vec<CategoryInfo> = catalog
            .categories
            .iter()
            .filter(|c| c.active)
            .map(|c| {
                let (subject, detail) = TEXTS
                    .iter()
                    .find(|(code, _, _)| *code == c.code.as_str())
                    .map_or(("بلاغ", "يرجى النظر في هذا البلاغ"), |(_, s, d)| (*s, *d));
                let ticket_type = match c.code.as_str() {
                    "service_improvement" => TicketType::Suggestion,
                    "staff_conduct" => TicketType::Complaint,
                    "general_inquiry" | "building_permit" | "commercial_license" => {
                        TicketType::Inquiry
                    }
                    _ => TicketType::Report,
                };
                CategoryInfo {
                    code: c.code.clone(),
                    directorate: c.default_directorate_code.clone(),
                    priority: c.default_priority,
                    ticket_type,
                    subject,
                    detail,
                }
            })
            .collect();
        if categories.is_empty() {
            anyhow::bail!("the catalog has no active category");
        }
        let wilayats: Vec<String> = catalog
            .wilayats
            .iter()
            .map(|w| w.code.as_str().to_owned())
            .collect();
        if wilayats.is_empty() {
            anyhow::bail!("the catalog has no wilayat");
        }
        Ok(Self {
            catalog: catalog.clone(),
            categories,
            wilayats,
            sync_policy: SyncPolicy::default(),
        })
    }

    /// The `k`-th generated request: what a contact-centre agent or the app sends.
    pub(crate) fn sample_request(&self, k: u64) -> proto::CreateTicketRequest {
        let mut r = SplitMix64::new(k);
        let category = pick(&self.categories, &mut r);
        let ticket_type = match category.ticket_type {
            TicketType::Report if r.below(5) == 0 => TicketType::Complaint,
            other => other,
        };
        let channel = match r.below(20) {
            0..=7 => Channel::ContactCentre,
            8..=13 => Channel::App,
            14..=15 => Channel::Outlet,
            16 => Channel::Email,
            17 => Channel::SocialMedia,
            _ => Channel::NationalPlatform,
        };
        let area = *pick(AREAS, &mut r);
        let anonymous = ticket_type == TicketType::Suggestion && r.below(3) == 0;
        let reporter = if anonymous {
            proto::Reporter {
                masked: false,
                erased: false,
                anonymous: true,
                ..Default::default()
            }
        } else {
            let name = format!(
                "{} {}",
                pick(FIRST_NAMES, &mut r),
                pick(FAMILY_NAMES, &mut r)
            );
            proto::Reporter {
                masked: false,
                erased: false,
                name,
                phone: format!("9{:07}", r.below(10_000_000)),
                email: if r.below(3) == 0 {
                    format!("citizen{}@example.om", r.below(1_000_000))
                } else {
                    String::new()
                },
                civil_id: if r.below(2) == 0 {
                    format!("{:08}", r.below(100_000_000))
                } else {
                    String::new()
                },
                anonymous: false,
            }
        };
        let located = ticket_type == TicketType::Report || r.below(10) < 7;
        let location = located.then(|| proto::Location {
            wilayat: pick(&self.wilayats, &mut r).clone(),
            area: area.to_owned(),
            point: (r.below(10) < 6).then(|| proto::LatLng {
                latitude: 23.45 + r.unit() * 0.2,
                longitude: 58.10 + r.unit() * 0.55,
            }),
        });
        let attachments = if r.below(10) < 3 {
            vec![proto::Attachment {
                uri: format!("https://files.example.om/balagh/{:016x}.jpg", r.next()),
                media_type: "image/jpeg".to_owned(),
                size_bytes: i64::try_from(50_000 + r.below(4_000_000)).unwrap_or(50_000),
                sha256: format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    r.next(),
                    r.next(),
                    r.next(),
                    r.next()
                ),
            }]
        } else {
            Vec::new()
        };
        proto::CreateTicketRequest {
            r#type: proto::TicketType::from(ticket_type).into(),
            channel: proto::Channel::from(channel).into(),
            category: category.code.as_str().to_owned(),
            priority: 0,
            subject: format!("{} - {}", category.subject, area),
            description: format!(
                "{} في منطقة {}، بالقرب من {}، مبنى رقم {}.\nأرجو سرعة المعالجة وإفادتي بالنتيجة.",
                category.detail,
                area,
                pick(LANDMARKS, &mut r),
                1 + r.below(2000)
            ),
            reporter: Some(reporter),
            location,
            attachments,
            request_id: String::new(),
        }
    }

    fn category(&self, code: &Code) -> anyhow::Result<&CategoryInfo> {
        self.categories
            .iter()
            .find(|c| &c.code == code)
            .with_context(|| format!("category {code} is not in the catalog"))
    }

    /// The `j`-th preloaded ticket, created at `created` and moved through its lifecycle up
    /// to `now` by the same functions the store runs.
    fn history(
        &self,
        rng: &mut SplitMix64,
        j: u64,
        reference: ReferenceNumber,
        created: Timestamp,
        now: Timestamp,
        feed_from: Timestamp,
    ) -> anyhow::Result<History> {
        let mut message = self.sample_request(j.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        message.request_id.clear();
        let new = parse_new_ticket(&message)
            .map_err(|v| anyhow::anyhow!("a generated request is invalid: {v:?}"))?;
        let category = self.category(&new.category)?;
        let directorate = category.directorate.clone();
        let id = ticket_id_at(created, j)?;
        let ticket = new_ticket(
            new,
            directorate.clone(),
            category.priority,
            id,
            reference,
            created,
        );
        let agent = format!("agent.{:03}", rng.below(120));
        let snapshot = |ticket: &Ticket, at: Timestamp| -> anyhow::Result<Option<String>> {
            Ok(if at >= feed_from {
                Some(serde_json::to_string(ticket)?)
            } else {
                None
            })
        };
        let owed = |ticket: &Ticket, record: &EventRecord| -> anyhow::Result<_> {
            match push_for(ticket, record).filter(|_| self.sync_policy.applies_to(ticket)) {
                Some(kind) => Ok(Some((kind, serde_json::to_string(ticket)?))),
                None => Ok(None),
            }
        };
        let record = created_event(&ticket);
        let mut events = vec![HistoryEvent {
            version: ticket.version,
            actor: agent.clone(),
            at: created,
            ticket_body: snapshot(&ticket, created)?,
            push: owed(&ticket, &record)?,
            record,
        }];

        let age_days = (now.as_micros() - created.as_micros()) as f64 / 86_400e6;
        let open_probability = 0.03 + 0.9 * (-age_days / 5.0).exp();
        let employee = format!("emp-{:04}", rng.below(600));
        let assign = Action::Assign {
            assignment: Assignment {
                directorate: Some(directorate),
                outlet: None,
                assignee: Some(EmployeeId::parse("assignee", &employee)?),
                support_line: Some(if rng.below(3) == 0 {
                    SupportLine::Second
                } else {
                    SupportLine::Third
                }),
            },
            note: None,
        };
        let resolve = Action::Resolve {
            resolution: match ticket.ticket_type {
                TicketType::Inquiry => Resolution {
                    code: ResolutionCode::InformationProvided,
                    text: "تم تزويد المواطن بالمعلومات المطلوبة".to_owned(),
                },
                TicketType::Suggestion => Resolution {
                    code: ResolutionCode::SuggestionAccepted,
                    text: "شكراً على الاقتراح، تمت إحالته للدراسة".to_owned(),
                },
                _ => Resolution {
                    code: ResolutionCode::Fixed,
                    text: "تمت المعالجة من قبل الفريق الميداني".to_owned(),
                },
            },
        };
        let close = Action::Close { note: None };
        let start = Action::StartWork { note: None };
        let roll = rng.unit();
        let steps: Vec<Action> = if rng.unit() < open_probability {
            match roll {
                x if x < 0.40 => vec![],
                x if x < 0.65 => vec![assign],
                x if x < 0.90 => vec![assign, start],
                _ => vec![
                    assign,
                    start,
                    Action::WaitOnBeneficiary {
                        reason: "يرجى تزويدنا بصورة واضحة للموقع".to_owned(),
                    },
                ],
            }
        } else {
            match roll {
                x if x < 0.05 => vec![Action::Reject {
                    reason: "البلاغ ليس من اختصاص البلدية".to_owned(),
                }],
                x if x < 0.10 => vec![Action::Transfer {
                    entity: "هيئة تنظيم الخدمات العامة".to_owned(),
                    reason: Some("من اختصاص جهة أخرى".to_owned()),
                }],
                x if x < 0.15 => vec![assign, start, resolve],
                // First-contact resolution by the contact centre, then closed.
                x if x < 0.35 => vec![resolve, close],
                _ => vec![assign, start, resolve, close],
            }
        };
        let age_micros = now.as_micros() - created.as_micros();
        let gap = (age_micros / (steps.len() as i64 + 1)).min(8 * 3600 * 1_000_000);
        let mut current = ticket;
        for (n, action) in steps.into_iter().enumerate() {
            let at = Timestamp::from_micros(created.as_micros() + gap * (n as i64 + 1));
            let actor = if matches!(action, Action::Assign { .. }) {
                agent.clone()
            } else {
                employee.clone()
            };
            let (next, record) = apply_action(&current, action, at)
                .map_err(|e| anyhow::anyhow!("a generated history is invalid: {e}"))?;
            events.push(HistoryEvent {
                version: next.version,
                actor,
                at,
                ticket_body: snapshot(&next, at)?,
                push: owed(&next, &record)?,
                record,
            });
            current = next;
        }
        Ok(History {
            ticket: current,
            events,
        })
    }
}

/// A UUIDv7 for a ticket created at `at`, unique by `j`, as `TicketId::new_v7` would have
/// given at that time.
fn ticket_id_at(at: Timestamp, j: u64) -> anyhow::Result<TicketId> {
    let millis = u64::try_from(at.as_micros() / 1000).context("a time before 1970")?;
    let mut bytes = [0u8; 10];
    bytes[..8].copy_from_slice(&j.to_be_bytes());
    bytes[8..].copy_from_slice(&SplitMix64::new(j).next().to_be_bytes()[..2]);
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid();
    Ok(TicketId::parse("id", &uuid.to_string())?)
}

fn pick<'a, T>(items: &'a [T], r: &mut SplitMix64) -> &'a T {
    let n = u64::try_from(items.len()).unwrap_or(u64::MAX).max(1);
    let i = usize::try_from(r.below(n)).unwrap_or(0);
    &items[i.min(items.len().saturating_sub(1))]
}

/// A small, fast, seedable generator (SplitMix64): the workload is reproducible run to run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Where the CPU goes: per-thread run time from /proc, grouped by thread name.

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// Cores used on average by each side during the measurement.
    pub(crate) bench_cores: f64,
    pub(crate) server_cores: f64,
    pub(crate) sqlite_cores: f64,
    /// Cores used by every other process on the machine (a build, a profiler, ...).
    pub(crate) other_cores: f64,
    /// Share of all the machine's cores busy, and waiting for I/O, during the measurement
    /// (every process, not only this one).
    pub(crate) machine_busy: f64,
    pub(crate) machine_iowait: f64,
}

pub(crate) struct CpuSnapshot {
    at: Instant,
    /// Thread id to (group, nanoseconds on a CPU).
    threads: HashMap<u32, (ThreadGroup, u64)>,
    /// (busy, iowait, total) ticks from /proc/stat, and the number of CPUs counted.
    machine: (u64, u64, u64),
    n_cpus: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThreadGroup {
    Bench,
    Server,
    Sqlite,
}

impl CpuSnapshot {
    /// Reads /proc; on a system without it every figure is zero.
    pub(crate) fn take() -> Self {
        let mut threads = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
            for entry in entries.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let path = entry.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let group = if name.starts_with("balagh-server")
                    || name.starts_with(crate::store::POSTGRES_WRITER_THREAD_NAME)
                {
                    ThreadGroup::Server
                } else if name.starts_with("sqlite-") || name.starts_with("sqlx-sqlite") {
                    // The store's writer, the baseline, and sqlx's connection threads.
                    ThreadGroup::Sqlite
                } else {
                    ThreadGroup::Bench
                };
                let ns = std::fs::read_to_string(path.join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0);
                threads.insert(tid, (group, ns));
            }
        }
        let (machine, n_cpus) = machine_ticks().unwrap_or(((0, 0, 0), 0));
        Self {
            at: Instant::now(),
            threads,
            machine,
            n_cpus,
        }
    }
}

/// (busy, iowait, total) clock ticks of all CPUs since boot, and how many CPUs that is.
fn machine_ticks() -> Option<((u64, u64, u64), usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let n_cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = field(3);
    let iowait = field(4);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some(((busy, iowait, busy + idle + iowait), n_cpus))
}

impl CpuUse {
    pub(crate) fn between(before: &CpuSnapshot, after: &CpuSnapshot) -> Self {
        let wall = after.at.saturating_duration_since(before.at).as_nanos() as f64;
        if wall <= 0.0 {
            return Self::default();
        }
        let mut ns = [0u64; 3];
        for (tid, (group, after_ns)) in &after.threads {
            let before_ns = before.threads.get(tid).map_or(0, |(_, n)| *n);
            let slot = match group {
                ThreadGroup::Bench => 0,
                ThreadGroup::Server => 1,
                ThreadGroup::Sqlite => 2,
            };
            ns[slot] += after_ns.saturating_sub(before_ns);
        }
        let (b0, w0, t0) = before.machine;
        let (b1, w1, t1) = after.machine;
        let total = t1.saturating_sub(t0).max(1) as f64;
        let machine_busy = b1.saturating_sub(b0) as f64 / total;
        let own = ns.iter().sum::<u64>() as f64 / wall;
        Self {
            bench_cores: ns[0] as f64 / wall,
            server_cores: ns[1] as f64 / wall,
            sqlite_cores: ns[2] as f64 / wall,
            other_cores: (machine_busy * after.n_cpus as f64 - own).max(0.0),
            machine_busy,
            machine_iowait: w1.saturating_sub(w0) as f64 / total,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The machine and the report.

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub(crate) struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_bytes: u64,
    kernel: String,
}

impl Machine {
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib * 1024);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_bytes,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB memory, Linux {}",
            self.cpus,
            self.cpu_model,
            self.memory_bytes as f64 / GIB,
            self.kernel
        )
    }
}

fn print_report(plan: &Plan, machine: &Machine, report: &Report) {
    println!("\n## Results\n");
    println!("machine: {}", machine.describe());
    if let Some(p) = &report.preload {
        println!("preload: {}", p.one_line());
        let counters: Vec<String> = p
            .counters
            .iter()
            .map(|(year, last)| format!("{year}: {last}"))
            .collect();
        println!(
            "reference counters left for the server: {}",
            counters.join(", ")
        );
    }
    if let Some(start) = report.server_start {
        println!("server start: {:.2} s", start.as_secs_f64());
    }
    println!("load average after the run: {}", load_average());
    println!();
    println!(
        "| scenario        | clients |       ops | errors | seconds |    ops/s | p50 ms | p99 ms | max ms | cores bench / server / sqlite / others | machine busy | iowait |"
    );
    println!(
        "|-----------------|--------:|----------:|-------:|--------:|---------:|-------:|-------:|-------:|----------------------------------------|-------------:|-------:|"
    );
    for m in report
        .baseline
        .iter()
        .chain(&report.baseline_without_fsync)
        .chain(&report.scenarios)
    {
        println!(
            "| {:<15} | {:>7} | {:>9} | {:>6} | {:>7.2} | {:>8.0} | {:>6.2} | {:>6.2} | {:>6.1} | {:>11.2} / {:>6.2} / {:>6.2} / {:>6.2} | {:>11.0}% | {:>5.0}% |",
            m.name,
            m.clients,
            group_digits(m.ops),
            m.errors,
            m.elapsed.as_secs_f64(),
            m.ops_per_second(),
            m.quantile_ms(0.50),
            m.quantile_ms(0.99),
            m.max_ms(),
            m.cpu.bench_cores,
            m.cpu.server_cores,
            m.cpu.sqlite_cores,
            m.cpu.other_cores,
            m.cpu.machine_busy * 100.0,
            m.cpu.machine_iowait * 100.0,
        );
    }
    for m in report
        .scenarios
        .iter()
        .filter(|m| m.rows_per_call.is_some())
    {
        println!(
            "ListTickets @{}: {:.1} tickets per page on average",
            m.clients,
            m.rows_per_call.unwrap_or(0.0)
        );
    }
    for m in report
        .baseline
        .iter()
        .chain(&report.baseline_without_fsync)
        .chain(&report.scenarios)
    {
        if let Some(error) = &m.first_error {
            println!(
                "{} @{}: {} errors, the first: {error}",
                m.name, m.clients, m.errors
            );
        }
    }

    if !report.authenticated.is_empty() {
        println!("\n## With authentication (an EdDSA bearer token per call)\n");
        for m in &report.authenticated {
            let open = report
                .scenarios
                .iter()
                .find(|o| o.name == m.name && o.clients == m.clients);
            println!(
                "{}{}",
                m.one_line(),
                open.map(|o| format!(
                    "; {:.2}x the same calls without authentication ({:.0}/s)",
                    m.ops_per_second() / o.ops_per_second().max(1e-9),
                    o.ops_per_second()
                ))
                .unwrap_or_default()
            );
        }
    }

    println!("\n## Against the baseline and the targets\n");
    let find = |name: &str| -> Vec<&Measured> {
        report.scenarios.iter().filter(|m| m.name == name).collect()
    };
    if let Some(baseline) = &report.baseline {
        let base = baseline.ops_per_second();
        println!(
            "SQLite baseline: {:.0} tickets/s, one durable transaction each",
            base
        );
        if let Some(relaxed) = &report.baseline_without_fsync {
            println!(
                "SQLite without an fsync per commit: {:.0} tickets/s = {:.1}x the baseline \
                 (the fsync is what group commit shares; the statements of each ticket remain)",
                relaxed.ops_per_second(),
                relaxed.ops_per_second() / base.max(1e-9)
            );
        }
        for m in find("CreateTicket") {
            println!(
                "CreateTicket @{} / baseline = {:.1}x",
                m.clients,
                m.ops_per_second() / base.max(1e-9)
            );
        }
        match find("CreateTicket").into_iter().find(|m| m.clients == 64) {
            Some(m) => {
                let ratio = m.ops_per_second() / base.max(1e-9);
                println!(
                    "target CreateTicket@64 >= 10x baseline: {} ({:.1}x: {:.0}/s against {:.0}/s)",
                    verdict(ratio >= 10.0 && m.errors == 0),
                    ratio,
                    m.ops_per_second(),
                    base
                );
            }
            None => println!(
                "target CreateTicket@64 >= 10x baseline: not measured (needs --clients with 64)"
            ),
        }
    } else {
        println!("target CreateTicket@64 >= 10x baseline: not measured (baseline not run)");
    }
    let gets = find("GetTicket");
    if let Some(best) = gets
        .iter()
        .max_by(|a, b| a.ops_per_second().total_cmp(&b.ops_per_second()))
    {
        println!(
            "target GetTicket >= 20,000/s: {} (best {:.0}/s at {} clients)",
            verdict(best.ops_per_second() >= 20_000.0 && best.errors == 0),
            best.ops_per_second(),
            best.clients
        );
    }
    let lists = find("ListTickets");
    if !lists.is_empty() {
        let scale = if plan.n_preload >= DEFAULT_LIST_TICKETS {
            String::new()
        } else {
            format!(
                " [only {} tickets: the target is stated for 1,000,000]",
                group_digits(plan.n_preload)
            )
        };
        for m in lists {
            println!(
                "target ListTickets p99 < 20 ms @{}: {} (p99 {:.2} ms){scale}",
                m.clients,
                verdict(m.quantile_ms(0.99) < 20.0 && m.errors == 0),
                m.quantile_ms(0.99)
            );
        }
    }
}

/// The 1, 5 and 15 minute load averages: whether something else was running.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// 1234567 as "1,234,567".
pub(crate) fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fresh directory under the system temp directory, removed at the end (also on error).
struct BenchDir(Option<PathBuf>);

impl BenchDir {
    fn create() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("balagh-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("."))
    }

    fn remove(mut self) {
        if let Some(path) = self.0.take()
            && let Err(error) = std::fs::remove_dir_all(&path)
        {
            eprintln!("warning: cannot remove {}: {error}", path.display());
        }
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, SqliteStoreOptions, Store, TicketQuery, WriteContext};

    fn corpus() -> Corpus {
        Corpus::from_catalog(&CatalogData::default_catalog().expect("default catalog"))
            .expect("corpus")
    }

    #[test]
    fn generated_requests_are_valid_create_ticket_requests() {
        let corpus = corpus();
        for k in 0..2_000 {
            let request = corpus.sample_request(k);
            assert!(
                parse_new_ticket(&request).is_ok(),
                "request {k} is invalid: {:?}",
                parse_new_ticket(&request).err()
            );
        }
    }

    #[test]
    fn the_slim_answers_read_the_real_wire_format() {
        use prost::Message as _;
        let corpus = corpus();
        let ticket = |id: &str| {
            let request = corpus.sample_request(7);
            proto::Ticket {
                id: id.into(),
                subject: request.subject,
                description: request.description,
                reporter: request.reporter,
                location: request.location,
                ..Default::default()
            }
        };
        let got = proto::GetTicketResponse {
            ticket: Some(ticket("a")),
        };
        let slim = SlimGetTicketResponse::decode(got.encode_to_vec().as_slice()).expect("get");
        assert_eq!(slim.ticket.map(|t| t.id), Some("a".to_owned()));
        let page = proto::ListTicketsResponse {
            tickets: vec![ticket("a"), ticket("b")],
            next_page_token: "next".into(),
        };
        let slim = SlimListTicketsResponse::decode(page.encode_to_vec().as_slice()).expect("list");
        assert_eq!(
            slim.tickets
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(slim.next_page_token, "next");
    }

    #[test]
    fn a_client_walks_twenty_pages_then_starts_over() {
        let mut page = Paging::default();
        for k in 1..LIST_MAX_PAGES {
            page.advance(Some(format!("token {k}")));
            assert_eq!(page.token, format!("token {k}"));
        }
        page.advance(Some("one too many".into()));
        assert!(page.token.is_empty(), "the twentieth page was the last");
        page.advance(Some("a".into()));
        page.advance(Some(String::new()));
        assert!(page.token.is_empty(), "the last page ends the walk");
        page.advance(Some("a".into()));
        page.advance(None);
        assert!(page.token.is_empty(), "an error ends the walk");
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(1_234_567), "1,234,567");
    }

    #[tokio::test]
    async fn the_store_reads_preloaded_tickets_and_continues_their_numbering() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = sqlite_url(&dir.path().join("preloaded.db"));
        let corpus = corpus();
        let n = 600;
        let preloaded = preload(&url, &corpus, n, SystemClock.now())
            .await
            .expect("preload");
        assert_eq!(preloaded.n_tickets, n);
        assert!(preloaded.n_events >= n);
        assert!(!preloaded.sample_ids.is_empty());

        let store = SqliteStore::open(SqliteStoreOptions::new(&url), Arc::new(SystemClock))
            .await
            .expect("open");
        let listed = store
            .list_tickets(&TicketQuery {
                limit: 1_000,
                ..TicketQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(listed.len(), 600);
        let mut references: Vec<String> = listed
            .iter()
            .map(|t| t.ticket.reference.to_string())
            .collect();
        references.sort();
        references.dedup();
        assert_eq!(references.len(), 600, "references are unique");
        // Newest first, and creation order is seq order.
        assert!(
            listed
                .windows(2)
                .all(|w| w[0].ticket.create_time >= w[1].ticket.create_time)
        );
        let id = TicketId::parse("id", &preloaded.sample_ids[0]).expect("id");
        let ticket = store.get_ticket(id).await.expect("get").expect("found");
        let events = store
            .list_ticket_events(id, 0, 100)
            .await
            .expect("events")
            .expect("ticket exists");
        assert_eq!(events.last().map(|e| e.version), Some(ticket.version));
        let mut conn = SqliteConnection::connect(&url).await.expect("connect");
        let (with_snapshot, pruned_through): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM ticket_events WHERE ticket_body IS NOT NULL),
                    (SELECT pruned_through FROM feed_state WHERE id = 1)",
        )
        .fetch_one(&mut conn)
        .await
        .expect("feed state");
        assert!(with_snapshot > 0, "recent events keep their snapshots");
        assert!(pruned_through > 0, "old events are marked as pruned");
        conn.close().await.expect("close");

        let message = corpus.sample_request(7);
        let created = store
            .create_ticket(
                WriteContext {
                    actor: "test".to_owned(),
                    request: None,
                    reach: None,
                },
                parse_new_ticket(&message).expect("valid"),
            )
            .await
            .expect("create");
        let year = created.reference.year();
        let before = preloaded.counters.get(&year).copied().unwrap_or(0);
        assert_eq!(created.reference.number(), before + 1);
        store.close().await;
    }
}
