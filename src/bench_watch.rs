//! `balagh bench-watch`: many live WatchTickets streams on one server while tickets are created,
//! and what they cost (see `docs/benchmarks.md`, section "WatchTickets").
//!
//! The question it answers comes from the issue: 10,000 concurrent streams on one process while
//! creates run at 1,000/s. How long from commit to delivery (p50, p99), how much server memory
//! one stream holds, and how much create throughput the watchers take away.
//!
//! Why it looks like this:
//! - The server runs in a **separate process** (`balagh serve` on port 0, this very binary), so
//!   its resident memory (`VmRSS` in `/proc/<pid>/status`) is the server's alone: the streams'
//!   client side lives here, in the load generator. Memory per stream is the growth of the
//!   server's RSS when the streams open, divided by their number.
//! - Throughput only means something next to a reference from the same machine and the same
//!   moment, so every create figure is measured twice in one run: first with no stream open,
//!   then with all of them, paced (`--rate`) and unpaced (64 clients as fast as they go).
//! - Delivery latency is the receive time minus the ticket's `create_time`. The server stamps
//!   `create_time` inside the write transaction, just before its group commit, so the figure is
//!   commit-to-delivery plus the commit itself (an upper bound). Both ends read the same
//!   machine clock (`SystemTime`).
//! - How many deliveries a create causes depends only on how many streams its ticket matches,
//!   so the filter is a choice (`--filter`), printed with the fan-out it implies. Every create
//!   is routed so that exactly one group of streams matches it, and each stream's expected count
//!   is then known exactly: a shortfall is reported, not guessed.
//! - The load generator decodes only the fields it needs (kind, cursor, create time, directorate,
//!   wilayat) with a slim prost message on the same wire format, so that on a small machine,
//!   where client and server share the cores, the client's share stays small. The CPU each
//!   process used is read from `/proc` and printed, so the report says who was busy.
//!
//! Invariants: nothing here is a timed assertion; the server process is killed when the run ends
//! or fails (`kill_on_drop`); every file lives in one fresh directory under the system temp
//! directory, removed at the end; a server that grows beyond `--max-server-rss-mib` stops the
//! run rather than the machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::domain::catalog::CatalogData;
use crate::grpc::proto;
use crate::grpc::proto::ticket_service_client::TicketServiceClient;
use crate::grpc::request::ACTOR_METADATA_KEY;

const WATCH_PATH: &str = "/balagh.v1.TicketService/WatchTickets";
const DEFAULT_STREAMS: usize = 10_000;
const QUICK_STREAMS: usize = 500;
const DEFAULT_SECONDS: f64 = 20.0;
const QUICK_SECONDS: f64 = 5.0;
const DEFAULT_MAX_SECONDS: f64 = 5.0;
const QUICK_MAX_SECONDS: f64 = 2.0;
const DEFAULT_DRAIN_SECONDS: f64 = 30.0;
const QUICK_DRAIN_SECONDS: f64 = 10.0;
/// Paced creates before anything is measured: SQLite's caches and the connections warm up.
const WARMUP: Duration = Duration::from_secs(1);
/// Pause before reading the server's RSS, so allocations of the last step have settled.
const SETTLE: Duration = Duration::from_secs(3);
/// Most time all streams may take to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// Creates that fill the server's shared ring of recent changes (`WatchSettings::ring_capacity`,
/// 4,096) before memory is measured, so the ring's fixed size is not counted per stream.
const RING_FILL_CREATES: u64 = 4_600;
/// Creating clients sharing one HTTP/2 connection, as in `balagh bench`.
const CLIENTS_PER_CHANNEL: usize = 8;
/// The server's `limits.max_concurrent_streams`; a connection cannot carry more.
const SERVER_STREAMS_PER_CONNECTION: usize = 256;
/// Stream tasks record latencies into this many shared histograms, a batch at a time: one
/// histogram per stream would cost the load generator gigabytes at 10,000 streams.
const LATENCY_SHARDS: usize = 64;
const FLUSH_EVERY: usize = 256;
/// Latency above this is recorded as this (ten minutes, in microseconds).
const MAX_LATENCY_MICROS: u64 = 600_000_000;
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 a second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;
const TARGET_P99_MS: f64 = 250.0;
const TARGET_BYTES_PER_STREAM: f64 = 20_000.0;
const TARGET_WATCHER_COST: f64 = 0.20;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchWatchArgs {
    /// Concurrent WatchTickets streams [default: 10000, or 500 with --quick].
    #[arg(long)]
    pub streams: Option<usize>,
    /// CreateTicket calls per second in the paced phases.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of each paced phase [default: 20, or 5 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Concurrent clients issuing the paced creates (enough that the rate is not limited by
    /// each client waiting for its group commit).
    #[arg(long, default_value_t = 64)]
    pub creators: usize,
    /// Which tickets each stream follows (this sets how many streams each create reaches).
    #[arg(long, value_enum, default_value_t = StreamFilter::Directorate)]
    pub filter: StreamFilter,
    /// Concurrent clients of the unpaced (maximum throughput) creates.
    #[arg(long, default_value_t = 64)]
    pub max_clients: usize,
    /// Seconds of each unpaced phase [default: 5, or 2 with --quick].
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Streams per HTTP/2 connection (the server allows 256).
    #[arg(long, default_value_t = 200)]
    pub streams_per_connection: usize,
    /// Most seconds to wait after a phase for every stream to receive every matching create
    /// [default: 30, or 10 with --quick].
    #[arg(long)]
    pub drain_seconds: Option<f64>,
    /// Stop the run when the server's resident memory exceeds this many MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_server_rss_mib: u64,
    /// 500 streams and 5-second phases: a smoke check that finishes in well under a minute.
    #[arg(long)]
    pub quick: bool,
}

/// What each stream asks for. Each create's ticket matches exactly one group of streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamFilter {
    /// No filter: every stream receives every create (fan-out = number of streams).
    All,
    /// Streams spread evenly over the directorates that categories route to.
    Directorate,
    /// Streams spread evenly over (directorate, wilayat) pairs.
    DirectorateWilayat,
}

impl StreamFilter {
    fn name(self) -> &'static str {
        match self {
            StreamFilter::All => "all (no filter)",
            StreamFilter::Directorate => "directorate",
            StreamFilter::DirectorateWilayat => "directorate-wilayat",
        }
    }
}

/// The run, with every default resolved.
#[derive(Debug, Clone)]
struct Plan {
    streams: usize,
    rate: f64,
    paced: Duration,
    creators: usize,
    filter: StreamFilter,
    max_clients: usize,
    unpaced: Duration,
    streams_per_connection: usize,
    drain: Duration,
    max_server_rss_kib: u64,
    quick: bool,
}

impl Plan {
    fn from_args(args: &BenchWatchArgs) -> anyhow::Result<Self> {
        let pick = |value: Option<f64>, normal: f64, quick: f64| {
            value.unwrap_or(if args.quick { quick } else { normal })
        };
        let seconds = |name: &str, value: f64| -> anyhow::Result<Duration> {
            if !value.is_finite() || !(0.5..=3600.0).contains(&value) {
                anyhow::bail!("--{name} must be from 0.5 to 3600, got {value}");
            }
            Ok(Duration::from_secs_f64(value))
        };
        let streams = args.streams.unwrap_or(if args.quick {
            QUICK_STREAMS
        } else {
            DEFAULT_STREAMS
        });
        if !(1..=100_000).contains(&streams) {
            anyhow::bail!("--streams must be from 1 to 100000");
        }
        if !args.rate.is_finite() || !(1.0..=100_000.0).contains(&args.rate) {
            anyhow::bail!("--rate must be from 1 to 100000 creates a second");
        }
        if !(1..=4096).contains(&args.creators) || !(1..=4096).contains(&args.max_clients) {
            anyhow::bail!("--creators and --max-clients must be from 1 to 4096");
        }
        if !(1..=SERVER_STREAMS_PER_CONNECTION).contains(&args.streams_per_connection) {
            anyhow::bail!(
                "--streams-per-connection must be from 1 to {SERVER_STREAMS_PER_CONNECTION} (the server's limit)"
            );
        }
        Ok(Self {
            streams,
            rate: args.rate,
            paced: seconds(
                "seconds",
                pick(args.seconds, DEFAULT_SECONDS, QUICK_SECONDS),
            )?,
            creators: args.creators,
            filter: args.filter,
            max_clients: args.max_clients,
            unpaced: seconds(
                "max-seconds",
                pick(args.max_seconds, DEFAULT_MAX_SECONDS, QUICK_MAX_SECONDS),
            )?,
            streams_per_connection: args.streams_per_connection,
            drain: seconds(
                "drain-seconds",
                pick(
                    args.drain_seconds,
                    DEFAULT_DRAIN_SECONDS,
                    QUICK_DRAIN_SECONDS,
                ),
            )?,
            max_server_rss_kib: args.max_server_rss_mib.saturating_mul(1024),
            quick: args.quick,
        })
    }

    fn stream_connections(&self) -> usize {
        self.streams.div_ceil(self.streams_per_connection)
    }

    fn create_connections(&self) -> usize {
        self.creators
            .max(self.max_clients)
            .div_ceil(CLIENTS_PER_CHANNEL)
    }
}

pub async fn run(args: BenchWatchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let catalog = CatalogData::default_catalog()
        .map_err(|e| anyhow::anyhow!("the default catalog is invalid: {e}"))?;
    let routing = Arc::new(Routing::new(plan.filter, &catalog)?);
    let machine = Machine::read();
    println!("balagh bench-watch {}", env!("CARGO_PKG_VERSION"));
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this is a debug build; figures are meaningless. Use `cargo run --release -- bench-watch`."
        );
    }
    println!("machine: {}", machine.describe());
    println!("load average before the run: {}", load_average());
    print_plan(&plan, &routing);
    // Each connection is one descriptor on each side; the server also holds its SQLite files.
    let descriptors = plan.stream_connections() + plan.create_connections() + 64;
    if let Some(soft) = machine.open_files_soft
        && descriptors as u64 > soft
    {
        anyhow::bail!(
            "the run needs about {descriptors} file descriptors per process but `ulimit -n` is {soft}; \
             raise it or use more --streams-per-connection"
        );
    }
    let dir = WorkDir::create()?;
    println!("working directory: {}", dir.path().display());
    let outcome = tokio::select! {
        outcome = run_plan(&plan, routing.clone(), dir.path()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    dir.remove();
    let report = outcome?;
    print_report(&plan, &machine, &routing, &report);
    Ok(())
}

fn print_plan(plan: &Plan, routing: &Routing) {
    let groups = routing.groups.len();
    let fan_out = plan.streams as f64 / groups as f64;
    println!(
        "plan: {} streams over {} HTTP/2 connections ({} a connection), filter {} \
         ({} group{} of streams: each create reaches ~{:.0} streams, ~{} deliveries/s at {:.0} creates/s)",
        group_digits(plan.streams as u64),
        plan.stream_connections(),
        plan.streams_per_connection,
        plan.filter.name(),
        groups,
        if groups == 1 { "" } else { "s" },
        fan_out,
        group_digits((fan_out * plan.rate) as u64),
        plan.rate,
    );
    println!(
        "      paced creates {:.0}/s for {:.1} s from {} clients; unpaced creates from {} clients \
         for {:.1} s; each without streams, then with them; drain up to {:.0} s{}",
        plan.rate,
        plan.paced.as_secs_f64(),
        plan.creators,
        plan.max_clients,
        plan.unpaced.as_secs_f64(),
        plan.drain.as_secs_f64(),
        if plan.quick { " (--quick)" } else { "" }
    );
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Everything one run measured; a phase the run did not reach stays `None`.
#[derive(Default)]
struct Report {
    server_pid: u32,
    server_addr: Option<SocketAddr>,
    rss_start_kib: Option<u64>,
    warmup: Option<CreateRun>,
    paced_without: Option<CreateRun>,
    unpaced_without: Option<CreateRun>,
    rss_before_streams_kib: Option<u64>,
    open: Option<Opened>,
    rss_idle_kib: Option<u64>,
    rss_after_traffic_kib: Option<u64>,
    idle_cpu: Option<CpuUse>,
    ring_fill: Option<CreateRun>,
    primer_received: Option<u64>,
    paced_with: Option<CreateRun>,
    unpaced_with: Option<CreateRun>,
    /// How long after each phase with streams every stream had everything (None: not within
    /// the drain time).
    drained: [Option<Duration>; 2],
    rss_end_kib: Option<u64>,
    rss_peak_kib: u64,
    bench_rss_kib: Option<u64>,
    streams: Option<StreamSummary>,
    aborted: Option<String>,
    server_log: LogSummary,
}

struct Opened {
    opened: usize,
    failed: usize,
    first_failure: Option<String>,
    took: Duration,
}

async fn run_plan(plan: &Plan, routing: Arc<Routing>, dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut server = ServerProcess::start(dir).await?;
    report.server_pid = server.pid;
    report.server_addr = Some(server.addr);
    println!(
        "\nserver process {} listening on {}",
        server.pid, server.addr
    );
    let abort = CancellationToken::new();
    let monitor = RssMonitor::start(server.pid, plan.max_server_rss_kib, abort.clone());
    let outcome = run_phases(plan, &routing, &server, &monitor, &abort, &mut report).await;
    report.rss_peak_kib = monitor.overall_peak();
    report.aborted = monitor.aborted_message();
    monitor.stop().await;
    server.stop().await;
    report.server_log = LogSummary::read(&server.log);
    outcome?;
    Ok(report)
}

async fn run_phases(
    plan: &Plan,
    routing: &Arc<Routing>,
    server: &ServerProcess,
    monitor: &RssMonitor,
    abort: &CancellationToken,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pid = server.pid;
    let mut creators = Vec::new();
    for _ in 0..plan.create_connections() {
        creators.push(connect(server.addr).await?);
    }
    report.rss_start_kib = read_rss_kib(pid);

    let paced = |label: &'static str, duration: Duration, first_k: u64| Load {
        label,
        clients: plan.creators,
        duration,
        rate: Some(plan.rate),
        first_k,
        max_creates: None,
    };
    let unpaced = |label: &'static str, first_k: u64| Load {
        label,
        clients: plan.max_clients,
        duration: plan.unpaced,
        rate: None,
        first_k,
        max_creates: None,
    };

    println!("\nwithout streams");
    let warmup = run_creates(
        routing,
        &creators,
        paced("warm-up", WARMUP, 0),
        pid,
        monitor,
        abort,
    )
    .await?;
    println!("  {}", warmup.one_line());
    report.warmup = Some(warmup);
    let measured = run_creates(
        routing,
        &creators,
        paced("paced", plan.paced, 1_000_000_000),
        pid,
        monitor,
        abort,
    )
    .await?;
    println!("  {}", measured.one_line());
    report.paced_without = Some(measured);
    let measured = run_creates(
        routing,
        &creators,
        unpaced("unpaced", 2_000_000_000),
        pid,
        monitor,
        abort,
    )
    .await?;
    println!("  {}", measured.one_line());
    report.unpaced_without = Some(measured);
    if abort.is_cancelled() {
        return Ok(());
    }

    // The shared ring holds changes only while someone watches; one unfiltered stream and
    // enough creates fill it, so its fixed size is in the "before" figure, not per stream.
    let stop_primer = CancellationToken::new();
    let primer = tokio::spawn(read_one_stream(
        connect(server.addr).await?,
        stop_primer.clone(),
    ));
    let measured = run_creates(
        routing,
        &creators,
        Load {
            label: "ring fill (1 stream)",
            clients: plan.max_clients,
            duration: Duration::from_secs(120),
            rate: None,
            first_k: 2_500_000_000,
            max_creates: Some(RING_FILL_CREATES),
        },
        pid,
        monitor,
        abort,
    )
    .await?;
    println!("  {}", measured.one_line());
    report.ring_fill = Some(measured);
    let outcome = measure_streams(plan, routing, server, &creators, monitor, abort, report).await;
    stop_primer.cancel();
    match primer.await {
        Ok(Ok(n)) => report.primer_received = Some(n),
        Ok(Err(status)) => {
            println!("  warning: the unfiltered stream that fills the ring failed: {status:?}")
        }
        Err(error) => println!("  warning: the unfiltered stream's task failed: {error}"),
    }
    outcome
}

/// One unfiltered stream that reads until stopped; returns the changes it received.
async fn read_one_stream(channel: Channel, stop: CancellationToken) -> Result<u64, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(proto::WatchTicketsRequest::default()),
            PathAndQuery::from_static(WATCH_PATH),
            tonic_prost::ProstCodec::<proto::WatchTicketsRequest, SlimChange>::default(),
        )
        .await?
        .into_inner();
    let mut n = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(n),
            next = stream.message() => match next? {
                Some(_) => n += 1,
                None => return Ok(n),
            },
        }
    }
}

async fn measure_streams(
    plan: &Plan,
    routing: &Arc<Routing>,
    server: &ServerProcess,
    creators: &[Channel],
    monitor: &RssMonitor,
    abort: &CancellationToken,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pid = server.pid;
    tokio::time::sleep(SETTLE).await;
    let rss_before = read_rss_kib(pid).context("cannot read the server's VmRSS")?;
    report.rss_before_streams_kib = Some(rss_before);
    println!("\nserver RSS before streams: {}", mib(rss_before));

    // The streams.
    let board = Arc::new(StreamBoard::new(plan.streams, routing)?);
    let stop_streams = CancellationToken::new();
    let mut stream_channels = Vec::new();
    for _ in 0..plan.stream_connections() {
        stream_channels.push(connect(server.addr).await?);
    }
    let opening = Instant::now();
    let mut stream_tasks = JoinSet::new();
    for index in 0..plan.streams {
        let channel = stream_channels
            .get(index / plan.streams_per_connection)
            .context("fewer connections than streams need")?
            .clone();
        let request = proto::WatchTicketsRequest {
            cursor: String::new(),
            filter: routing.groups[board.group_of(index)].filter.clone(),
            send_snapshot: false,
        };
        stream_tasks.spawn(follow(
            index,
            channel,
            request,
            board.clone(),
            stop_streams.clone(),
        ));
    }
    let outcome = stream_phases(
        plan, routing, creators, &board, opening, pid, monitor, abort, report,
    )
    .await;
    report.rss_end_kib = read_rss_kib(pid);
    report.bench_rss_kib = read_rss_kib(std::process::id());
    stop_streams.cancel();
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while stream_tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        println!("  warning: some stream tasks did not end within 30 s of being stopped");
        stream_tasks.abort_all();
    }
    report.streams = Some(board.summary(
        report.paced_with.as_ref().map(|r| r.per_group.as_slice()),
        report.unpaced_with.as_ref().map(|r| r.per_group.as_slice()),
    ));
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn stream_phases(
    plan: &Plan,
    routing: &Arc<Routing>,
    creators: &[Channel],
    board: &Arc<StreamBoard>,
    opening: Instant,
    pid: u32,
    monitor: &RssMonitor,
    abort: &CancellationToken,
    report: &mut Report,
) -> anyhow::Result<()> {
    println!("\nopening {} streams", group_digits(plan.streams as u64));
    loop {
        let opened = board.opened.load(Ordering::Relaxed);
        let failed = board.open_failed.load(Ordering::Relaxed);
        if opened + failed >= plan.streams
            || opening.elapsed() >= OPEN_TIMEOUT
            || abort.is_cancelled()
        {
            report.open = Some(Opened {
                opened,
                failed,
                first_failure: board.first_open_failure(),
                took: opening.elapsed(),
            });
            println!(
                "  {} open, {} failed, in {:.2} s",
                group_digits(opened as u64),
                failed,
                opening.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if abort.is_cancelled() {
        return Ok(());
    }
    let idle_from = CpuSample::take(pid);
    tokio::time::sleep(SETTLE).await;
    report.idle_cpu = Some(CpuUse::between(&idle_from, &CpuSample::take(pid)));
    let rss_idle = read_rss_kib(pid).context("cannot read the server's VmRSS")?;
    report.rss_idle_kib = Some(rss_idle);
    let before = report.rss_before_streams_kib.unwrap_or(rss_idle);
    println!(
        "  server RSS with the streams idle: {} (+{} = {} bytes a stream)",
        mib(rss_idle),
        mib(rss_idle.saturating_sub(before)),
        group_digits(rss_idle.saturating_sub(before) * 1024 / plan.streams.max(1) as u64)
    );

    println!("\nwith streams");
    let measured = run_creates(
        routing,
        creators,
        Load {
            label: "paced",
            clients: plan.creators,
            duration: plan.paced,
            rate: Some(plan.rate),
            first_k: 3_000_000_000,
            max_creates: None,
        },
        pid,
        monitor,
        abort,
    )
    .await?;
    println!("  {}", measured.one_line());
    let drained = drain(board, &measured.per_group, 0, plan.drain, abort).await;
    println!("  {}", drained_line(drained, plan.drain));
    report.drained[0] = drained;
    report.paced_with = Some(measured);
    if abort.is_cancelled() {
        return Ok(());
    }
    // The streams' buffers have now carried traffic: what an open stream holds in steady state.
    tokio::time::sleep(SETTLE).await;
    report.rss_after_traffic_kib = read_rss_kib(pid);
    if let Some(after) = report.rss_after_traffic_kib {
        println!(
            "  server RSS with the streams idle again after traffic: {} ({} bytes a stream)",
            mib(after),
            group_digits(after.saturating_sub(before) * 1024 / plan.streams.max(1) as u64)
        );
    }

    // Creates from here on count as the unpaced phase (by their create_time).
    board
        .unpaced_from_micros
        .store(micros_since_epoch(SystemTime::now()), Ordering::Relaxed);
    let measured = run_creates(
        routing,
        creators,
        Load {
            label: "unpaced",
            clients: plan.max_clients,
            duration: plan.unpaced,
            rate: None,
            first_k: 4_000_000_000,
            max_creates: None,
        },
        pid,
        monitor,
        abort,
    )
    .await?;
    println!("  {}", measured.one_line());
    let drained = drain(board, &measured.per_group, 1, plan.drain, abort).await;
    println!("  {}", drained_line(drained, plan.drain));
    report.drained[1] = drained;
    report.unpaced_with = Some(measured);
    Ok(())
}

fn drained_line(drained: Option<Duration>, limit: Duration) -> String {
    match drained {
        Some(after) => format!(
            "every stream had every matching create {:.2} s after the last create",
            after.as_secs_f64()
        ),
        None => format!(
            "NOT every stream had every matching create {:.0} s after the last create",
            limit.as_secs_f64()
        ),
    }
}

/// Waits until every open stream received every create of `phase` that matches it.
async fn drain(
    board: &StreamBoard,
    per_group: &[u64],
    phase: usize,
    limit: Duration,
    abort: &CancellationToken,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if board.pending(phase, per_group) == 0 {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit || abort.is_cancelled() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The server process.

struct ServerProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `balagh serve` (this binary) on port 0 and reads the address from its first line.
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the balagh executable")?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let database_url = format!("sqlite://{}", dir.join("bench.db").display());
        let mut child = Command::new(&exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--database-url",
            ])
            .arg(&database_url)
            .env("RUST_LOG", "warn")
            .env_remove("BALAGH_CONFIG")
            .env_remove("BALAGH_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child
            .stdout
            .take()
            .context("the server's stdout is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not print its address within 60 s")?
            .context("cannot read the server's stdout")?
            .with_context(|| {
                format!(
                    "the server exited before it listened; see its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default().trim()
                )
            })?;
        let addr = first
            .trim()
            .strip_prefix("balagh listening on ")
            .with_context(|| format!("unexpected first line from the server: {first:?}"))?
            .parse()
            .with_context(|| format!("no address in the server's first line {first:?}"))?;
        // Keep reading, so a server that prints more never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            pid,
            addr,
            log,
        })
    }

    /// Kills the server: its database is thrown away with the working directory.
    async fn stop(&mut self) {
        if let Err(error) = self.child.kill().await {
            eprintln!("warning: cannot stop the server process: {error}");
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .context("invalid server address")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the server at {addr}"))
}

/// The errors and warnings the server logged (it runs with `RUST_LOG=warn`).
#[derive(Default)]
struct LogSummary {
    lines: usize,
    first: Vec<String>,
}

impl LogSummary {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        Self {
            lines: lines.len(),
            first: lines.iter().take(5).map(|l| (*l).to_owned()).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Creates.

/// Which streams each create reaches, and the create requests that reach them.
struct Routing {
    groups: Vec<Group>,
}

/// One group of streams with the same filter, and what the creates routed to it contain.
struct Group {
    label: String,
    directorate: Option<String>,
    wilayat: Option<String>,
    filter: Option<proto::TicketFilter>,
    categories: Vec<String>,
    wilayats: Vec<String>,
}

impl Routing {
    fn new(filter: StreamFilter, catalog: &CatalogData) -> anyhow::Result<Self> {
        let categories: Vec<(String, String)> = catalog
            .categories
            .iter()
            .filter(|c| c.active)
            .map(|c| {
                (
                    c.default_directorate_code.as_str().to_owned(),
                    c.code.as_str().to_owned(),
                )
            })
            .collect();
        // Directorates that receive new tickets, in the catalog's order.
        let directorates: Vec<String> = catalog
            .directorates
            .iter()
            .map(|d| d.code.as_str().to_owned())
            .filter(|d| categories.iter().any(|(cd, _)| cd == d))
            .collect();
        let wilayats: Vec<String> = catalog
            .wilayats
            .iter()
            .map(|w| w.code.as_str().to_owned())
            .collect();
        if directorates.is_empty() || wilayats.is_empty() {
            anyhow::bail!("the catalog has no active category or no wilayat");
        }
        let of = |directorate: &str| -> Vec<String> {
            categories
                .iter()
                .filter(|(d, _)| d == directorate)
                .map(|(_, c)| c.clone())
                .collect()
        };
        let groups = match filter {
            StreamFilter::All => vec![Group {
                label: "every ticket".to_owned(),
                directorate: None,
                wilayat: None,
                filter: None,
                categories: categories.iter().map(|(_, c)| c.clone()).collect(),
                wilayats: wilayats.clone(),
            }],
            StreamFilter::Directorate => directorates
                .iter()
                .map(|d| Group {
                    label: d.clone(),
                    directorate: Some(d.clone()),
                    wilayat: None,
                    filter: Some(proto::TicketFilter {
                        directorates: vec![d.clone()],
                        ..Default::default()
                    }),
                    categories: of(d),
                    wilayats: wilayats.clone(),
                })
                .collect(),
            StreamFilter::DirectorateWilayat => directorates
                .iter()
                .flat_map(|d| wilayats.iter().map(move |w| (d, w)))
                .map(|(d, w)| Group {
                    label: format!("{d}/{w}"),
                    directorate: Some(d.clone()),
                    wilayat: Some(w.clone()),
                    filter: Some(proto::TicketFilter {
                        directorates: vec![d.clone()],
                        wilayats: vec![w.clone()],
                        ..Default::default()
                    }),
                    categories: of(d),
                    wilayats: vec![w.clone()],
                })
                .collect(),
        };
        Ok(Self { groups })
    }

    /// The `k`-th create: its group (creates go round the groups evenly) and the request, of
    /// the size and shape of a real report from the app.
    fn request(&self, k: u64) -> (usize, proto::CreateTicketRequest) {
        let n_groups = self.groups.len().max(1) as u64;
        let index = usize::try_from(k % n_groups).unwrap_or(0);
        let group = &self.groups[index];
        let h = mix(k);
        let category = pick(&group.categories, h);
        let wilayat = pick(&group.wilayats, h >> 32);
        let (subject, area) = (pick(SUBJECTS, h >> 8), pick(AREAS, h >> 16));
        let request = proto::CreateTicketRequest {
            r#type: proto::TicketType::Report.into(),
            channel: proto::Channel::App.into(),
            category: category.to_owned(),
            priority: 0,
            subject: format!("{subject} - {area}"),
            description: format!(
                "بلاغ من تطبيق المواطن في منطقة {area}، بالقرب من المسجد، مبنى رقم {}.\n\
                 أرجو سرعة المعالجة وإفادتي بالنتيجة.",
                1 + k % 2000
            ),
            reporter: Some(proto::Reporter {
                masked: false,
                erased: false,
                name: "مواطن من تطبيق بلاغ".to_owned(),
                phone: format!("9{:07}", k % 10_000_000),
                email: String::new(),
                civil_id: String::new(),
                anonymous: false,
            }),
            location: Some(proto::Location {
                wilayat: wilayat.to_owned(),
                area: area.to_owned(),
                point: Some(proto::LatLng {
                    latitude: 23.45 + (h % 1000) as f64 * 0.0002,
                    longitude: 58.10 + ((h >> 10) % 1000) as f64 * 0.0005,
                }),
            }),
            attachments: Vec::new(),
            // Every mutation of a well-behaved client carries a request id (AIP-155).
            request_id: uuid::Uuid::now_v7().to_string(),
        };
        (index, request)
    }
}

const SUBJECTS: &[&str] = &[
    "حفرة في الطريق",
    "إنارة الشارع معطلة",
    "تجمع مياه الأمطار",
    "لم يتم جمع النفايات",
    "مخالفة بناء",
    "صيانة الحديقة",
];
const AREAS: &[&str] = &["الخوير", "روي", "القرم", "الموالح", "العذيبة", "الحيل"];

fn pick<T: AsRef<str>>(items: &[T], h: u64) -> &str {
    let n = items.len().max(1) as u64;
    usize::try_from(h % n)
        .ok()
        .and_then(|i| items.get(i))
        .map_or("", AsRef::as_ref)
}

/// SplitMix64's finaliser: spreads consecutive numbers over all bits.
fn mix(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One phase of creates: paced at `rate`, or (None) as fast as `clients` go.
struct Load {
    label: &'static str,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    /// Where the phase's request numbers start (each phase writes different tickets).
    first_k: u64,
    /// Stop after this many creates were started, even before `duration`.
    max_creates: Option<u64>,
}

/// One phase's figures.
struct CreateRun {
    label: &'static str,
    clients: usize,
    rate: Option<f64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// Successful creates per group of streams.
    per_group: Vec<u64>,
    cpu: CpuUse,
    server_rss_peak_kib: u64,
}

impl CreateRun {
    fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }

    fn one_line(&self) -> String {
        let mut line = format!(
            "{} creates @{}{}: {} in {:.2} s = {:.0}/s, p50 {:.1} ms, p99 {:.1} ms; cores server {:.2} / bench {:.2} / others {:.2}; server RSS peak {}",
            self.label,
            self.clients,
            self.rate.map_or(String::new(), |r| format!(" at {r:.0}/s")),
            group_digits(self.ok),
            self.elapsed.as_secs_f64(),
            self.per_second(),
            quantile_ms(&self.latency, 0.50),
            quantile_ms(&self.latency, 0.99),
            self.cpu.server_cores,
            self.cpu.bench_cores,
            self.cpu.other_cores,
            mib(self.server_rss_peak_kib),
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

/// What one creating client counted.
struct CreateTally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    per_group: Vec<u64>,
    last_done: Instant,
}

impl CreateTally {
    fn new(n_groups: usize, start: Instant) -> anyhow::Result<Self> {
        Ok(Self {
            ok: 0,
            errors: 0,
            first_error: None,
            latency: new_histogram()?,
            per_group: vec![0; n_groups],
            last_done: start,
        })
    }

    fn merge(&mut self, other: CreateTally) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency
            .add(&other.latency)
            .context("cannot merge latency histograms")?;
        for (total, n) in self.per_group.iter_mut().zip(other.per_group) {
            *total += n;
        }
        self.last_done = self.last_done.max(other.last_done);
        Ok(())
    }
}

async fn run_creates(
    routing: &Arc<Routing>,
    channels: &[Channel],
    load: Load,
    pid: u32,
    monitor: &RssMonitor,
    abort: &CancellationToken,
) -> anyhow::Result<CreateRun> {
    let start = Instant::now();
    let end = start + load.duration;
    let next = Arc::new(AtomicU64::new(0));
    monitor.reset_peak();
    let cpu_before = CpuSample::take(pid);
    let mut tasks = JoinSet::new();
    for index in 0..load.clients {
        let channel = channels
            .get((index / CLIENTS_PER_CHANNEL) % channels.len().max(1))
            .context("no connection for the creating clients")?
            .clone();
        tasks.spawn(create_loop(
            routing.clone(),
            TicketServiceClient::new(channel),
            next.clone(),
            (start, end),
            load.rate,
            (load.first_k, load.max_creates),
            abort.clone(),
        ));
    }
    let mut total = CreateTally::new(routing.groups.len(), start)?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.context("a creating client failed")??)?;
    }
    let cpu = CpuUse::between(&cpu_before, &CpuSample::take(pid));
    Ok(CreateRun {
        label: load.label,
        clients: load.clients,
        rate: load.rate,
        ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        elapsed: total.last_done.saturating_duration_since(start),
        latency: total.latency,
        per_group: total.per_group,
        cpu,
        server_rss_peak_kib: monitor.peak(),
    })
}

async fn create_loop(
    routing: Arc<Routing>,
    mut client: TicketServiceClient<Channel>,
    next: Arc<AtomicU64>,
    (start, end): (Instant, Instant),
    rate: Option<f64>,
    (first_k, max_creates): (u64, Option<u64>),
    abort: CancellationToken,
) -> anyhow::Result<CreateTally> {
    let mut tally = CreateTally::new(routing.groups.len(), start)?;
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        match rate {
            Some(rate) => {
                // The k-th create is due at k / rate: a client that falls behind the schedule
                // sends at once, so the achieved rate shows what the server could take. The
                // phase still ends on time; creates not sent by then are not sent.
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if due >= end || Instant::now() >= end {
                    break;
                }
                tokio::select! {
                    () = abort.cancelled() => break,
                    () = tokio::time::sleep_until(due.into()) => {}
                }
            }
            None => {
                if Instant::now() >= end || abort.is_cancelled() {
                    break;
                }
            }
        }
        if max_creates.is_some_and(|max| k >= max) {
            break;
        }
        let (group, message) = routing.request(first_k.wrapping_add(k));
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            ACTOR_METADATA_KEY,
            MetadataValue::from_static("bench-watch"),
        );
        let started = Instant::now();
        let outcome = client.create_ticket(request).await;
        let done = Instant::now();
        match outcome {
            Ok(_) => {
                tally.ok += 1;
                if let Some(n) = tally.per_group.get_mut(group) {
                    *n += 1;
                }
                tally
                    .latency
                    .saturating_record(micros(done.saturating_duration_since(started)));
            }
            Err(status) => {
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
        tally.last_done = tally.last_done.max(done);
    }
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// Streams.

/// `WatchTicketsResponse` as this load generator reads it: the same wire format, only the
/// fields it checks. prost skips the rest without building it, which keeps the client's share
/// of a small machine small; a real client decodes everything.
#[derive(Clone, PartialEq, prost::Message)]
struct SlimChange {
    #[prost(int32, tag = "2")]
    kind: i32,
    #[prost(message, optional, tag = "3")]
    ticket: Option<SlimTicket>,
    #[prost(message, optional, tag = "4")]
    event: Option<SlimEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SlimTicket {
    #[prost(message, optional, tag = "11")]
    location: Option<SlimLocation>,
    #[prost(message, optional, tag = "13")]
    assignment: Option<SlimAssignment>,
    #[prost(message, optional, tag = "18")]
    create_time: Option<prost_types::Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SlimLocation {
    #[prost(string, tag = "1")]
    wilayat: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SlimAssignment {
    #[prost(string, tag = "1")]
    directorate: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SlimEvent {
    #[prost(int64, tag = "1")]
    cursor: i64,
}

/// What all stream tasks share: per-stream counters the controller reads while they run, and
/// the latency histograms they fill.
struct StreamBoard {
    n_groups: usize,
    /// The directorate and wilayat each group's tickets must have.
    expect: Vec<(Option<String>, Option<String>)>,
    opened_flags: Vec<AtomicBool>,
    ended_flags: Vec<AtomicBool>,
    /// CREATED messages received per stream: paced phase, unpaced phase.
    received: Vec<[AtomicU64; 2]>,
    opened: AtomicUsize,
    open_failed: AtomicUsize,
    out_of_order: AtomicU64,
    mismatched: AtomicU64,
    other_kinds: AtomicU64,
    /// Streams that ended before the run stopped them, by gRPC code.
    ends: Mutex<BTreeMap<String, (u64, String)>>,
    open_failures: Mutex<Option<String>>,
    /// Delivery latency in microseconds: [paced, unpaced] per shard.
    latency: Vec<Mutex<[Histogram<u64>; 2]>>,
    /// Creates stamped at or after this (microseconds since the epoch) are the unpaced phase's.
    unpaced_from_micros: AtomicU64,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking stream task cannot leave a histogram or counter half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StreamBoard {
    fn new(streams: usize, routing: &Routing) -> anyhow::Result<Self> {
        let mut latency = Vec::with_capacity(LATENCY_SHARDS);
        for _ in 0..LATENCY_SHARDS {
            latency.push(Mutex::new([new_histogram()?, new_histogram()?]));
        }
        Ok(Self {
            n_groups: routing.groups.len().max(1),
            expect: routing
                .groups
                .iter()
                .map(|g| (g.directorate.clone(), g.wilayat.clone()))
                .collect(),
            opened_flags: (0..streams).map(|_| AtomicBool::new(false)).collect(),
            ended_flags: (0..streams).map(|_| AtomicBool::new(false)).collect(),
            received: (0..streams)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            opened: AtomicUsize::new(0),
            open_failed: AtomicUsize::new(0),
            out_of_order: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            other_kinds: AtomicU64::new(0),
            ends: Mutex::new(BTreeMap::new()),
            open_failures: Mutex::new(None),
            latency,
            unpaced_from_micros: AtomicU64::new(u64::MAX),
        })
    }

    fn group_of(&self, stream: usize) -> usize {
        stream % self.n_groups
    }

    fn first_open_failure(&self) -> Option<String> {
        locked(&self.open_failures).clone()
    }

    fn record_end(&self, stream: usize, code: String, message: String) {
        if let Some(flag) = self.ended_flags.get(stream) {
            flag.store(true, Ordering::Relaxed);
        }
        locked(&self.ends)
            .entry(code)
            .and_modify(|(n, _)| *n += 1)
            .or_insert((1, message));
    }

    fn flush(&self, stream: usize, pending: &mut Vec<(usize, u64)>) {
        if pending.is_empty() {
            return;
        }
        let mut shard = locked(&self.latency[stream % LATENCY_SHARDS]);
        for &(phase, latency) in pending.iter() {
            shard[phase].saturating_record(latency);
        }
        pending.clear();
    }

    /// Creates of `phase` that open streams still have to receive.
    fn pending(&self, phase: usize, per_group: &[u64]) -> u64 {
        (0..self.received.len())
            .filter(|&i| {
                self.opened_flags[i].load(Ordering::Relaxed)
                    && !self.ended_flags[i].load(Ordering::Relaxed)
            })
            .map(|i| {
                let expected = per_group.get(self.group_of(i)).copied().unwrap_or(0);
                expected.saturating_sub(self.received[i][phase].load(Ordering::Relaxed))
            })
            .sum()
    }

    fn summary(&self, paced: Option<&[u64]>, unpaced: Option<&[u64]>) -> StreamSummary {
        let phase = |p: usize, per_group: Option<&[u64]>| -> Option<Delivery> {
            let per_group = per_group?;
            let mut d = Delivery::default();
            for i in 0..self.received.len() {
                if !self.opened_flags[i].load(Ordering::Relaxed) {
                    continue;
                }
                let expected = per_group.get(self.group_of(i)).copied().unwrap_or(0);
                let received = self.received[i][p].load(Ordering::Relaxed);
                d.expected += expected;
                d.received += received;
                d.missing += expected.saturating_sub(received);
                d.extra += received.saturating_sub(expected);
                if received < expected {
                    d.streams_short += 1;
                }
            }
            let mut latency = new_histogram().ok()?;
            for shard in &self.latency {
                let _ = latency.add(&locked(shard)[p]);
            }
            d.latency = Some(latency);
            Some(d)
        };
        StreamSummary {
            deliveries: [phase(0, paced), phase(1, unpaced)],
            out_of_order: self.out_of_order.load(Ordering::Relaxed),
            mismatched: self.mismatched.load(Ordering::Relaxed),
            other_kinds: self.other_kinds.load(Ordering::Relaxed),
            ends: locked(&self.ends).clone(),
        }
    }
}

#[derive(Default)]
struct Delivery {
    expected: u64,
    received: u64,
    missing: u64,
    extra: u64,
    streams_short: u64,
    latency: Option<Histogram<u64>>,
}

struct StreamSummary {
    deliveries: [Option<Delivery>; 2],
    out_of_order: u64,
    mismatched: u64,
    other_kinds: u64,
    ends: BTreeMap<String, (u64, String)>,
}

/// One stream: opens WatchTickets from now and counts and times every CREATED change until
/// the run stops it.
async fn follow(
    index: usize,
    channel: Channel,
    request: proto::WatchTicketsRequest,
    board: Arc<StreamBoard>,
    stop: CancellationToken,
) {
    let mut grpc = tonic::client::Grpc::new(channel);
    let open = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        grpc.server_streaming(
            tonic::Request::new(request),
            PathAndQuery::from_static(WATCH_PATH),
            tonic_prost::ProstCodec::<proto::WatchTicketsRequest, SlimChange>::default(),
        )
        .await
    };
    let opened = tokio::select! {
        () = stop.cancelled() => return,
        opened = open => opened,
    };
    let mut stream = match opened {
        Ok(response) => response.into_inner(),
        Err(status) => {
            board.open_failed.fetch_add(1, Ordering::Relaxed);
            let mut first = locked(&board.open_failures);
            if first.is_none() {
                *first = Some(format!("{:?}: {}", status.code(), status.message()));
            }
            return;
        }
    };
    board.opened_flags[index].store(true, Ordering::Relaxed);
    board.opened.fetch_add(1, Ordering::Relaxed);
    let (want_directorate, want_wilayat) = &board.expect[board.group_of(index)];
    let created = i32::from(proto::ChangeKind::Created);
    let mut pending: Vec<(usize, u64)> = Vec::new();
    let mut last_cursor = 0i64;
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = stream.message() => next,
        };
        let change = match next {
            Ok(Some(change)) => change,
            Ok(None) => {
                board.record_end(
                    index,
                    "ended without a status".to_owned(),
                    "the server closed the stream".to_owned(),
                );
                break;
            }
            Err(status) => {
                board.record_end(
                    index,
                    format!("{:?}", status.code()),
                    status.message().to_owned(),
                );
                break;
            }
        };
        let received_at = micros_since_epoch(SystemTime::now());
        if change.kind != created {
            board.other_kinds.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let cursor = change.event.as_ref().map_or(0, |e| e.cursor);
        if cursor <= last_cursor {
            board.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        last_cursor = last_cursor.max(cursor);
        let Some(ticket) = change.ticket else {
            board.mismatched.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let directorate = ticket.assignment.as_ref().map(|a| a.directorate.as_str());
        let wilayat = ticket.location.as_ref().map(|l| l.wilayat.as_str());
        if want_directorate
            .as_deref()
            .is_some_and(|want| directorate != Some(want))
            || want_wilayat
                .as_deref()
                .is_some_and(|want| wilayat != Some(want))
        {
            board.mismatched.fetch_add(1, Ordering::Relaxed);
        }
        let created_at = ticket.create_time.as_ref().map_or(0, timestamp_micros);
        let phase = usize::from(created_at >= board.unpaced_from_micros.load(Ordering::Relaxed));
        board.received[index][phase].fetch_add(1, Ordering::Relaxed);
        pending.push((phase, received_at.saturating_sub(created_at).max(1)));
        if pending.len() >= FLUSH_EVERY {
            board.flush(index, &mut pending);
        }
    }
    board.flush(index, &mut pending);
}

fn timestamp_micros(t: &prost_types::Timestamp) -> u64 {
    let micros = i128::from(t.seconds) * 1_000_000 + i128::from(t.nanos) / 1_000;
    u64::try_from(micros).unwrap_or(0)
}

fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------------
// Measuring the processes.

/// The server's resident memory in KiB (`VmRSS`), or None when it cannot be read.
fn read_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples the server's RSS in the background: the peak of each phase, and a stop of the run
/// when the server grows past the limit.
struct RssMonitor {
    peak_kib: Arc<AtomicU64>,
    overall_peak_kib: Arc<AtomicU64>,
    aborted_at_kib: Arc<AtomicU64>,
    limit_kib: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RssMonitor {
    fn start(pid: u32, limit_kib: u64, abort: CancellationToken) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let overall_peak_kib = Arc::new(AtomicU64::new(0));
        let aborted_at_kib = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (peak, overall, aborted, stop) = (
                peak_kib.clone(),
                overall_peak_kib.clone(),
                aborted_at_kib.clone(),
                stop.clone(),
            );
            async move {
                let mut tick = tokio::time::interval(RSS_SAMPLE_EVERY);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(rss) = read_rss_kib(pid) else {
                        return;
                    };
                    peak.fetch_max(rss, Ordering::Relaxed);
                    overall.fetch_max(rss, Ordering::Relaxed);
                    if rss > limit_kib && !abort.is_cancelled() {
                        aborted.store(rss, Ordering::Relaxed);
                        abort.cancel();
                    }
                }
            }
        });
        Self {
            peak_kib,
            overall_peak_kib,
            aborted_at_kib,
            limit_kib,
            stop,
            task,
        }
    }

    fn reset_peak(&self) {
        self.peak_kib.store(0, Ordering::Relaxed);
    }

    fn peak(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }

    fn overall_peak(&self) -> u64 {
        self.overall_peak_kib.load(Ordering::Relaxed)
    }

    fn aborted_message(&self) -> Option<String> {
        let at = self.aborted_at_kib.load(Ordering::Relaxed);
        (at > 0).then(|| {
            format!(
                "the server's RSS reached {} (limit {}, --max-server-rss-mib)",
                mib(at),
                mib(self.limit_kib)
            )
        })
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// CPU time of the server process and of this one, and of the whole machine.
struct CpuSample {
    at: Instant,
    server_ticks: u64,
    bench_ticks: u64,
    /// (busy, total) jiffies of all CPUs, from /proc/stat.
    machine: (u64, u64),
}

impl CpuSample {
    fn take(server_pid: u32) -> Self {
        Self {
            at: Instant::now(),
            server_ticks: process_ticks(server_pid).unwrap_or(0),
            bench_ticks: process_ticks(std::process::id()).unwrap_or(0),
            machine: machine_ticks().unwrap_or((0, 0)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server_cores: f64,
    bench_cores: f64,
    machine_busy: f64,
    /// Cores busy outside the server and this process: other work sharing the machine.
    other_cores: f64,
}

impl CpuUse {
    fn between(before: &CpuSample, after: &CpuSample) -> Self {
        let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
        let cores = |a: u64, b: u64| {
            if seconds > 0.0 {
                b.saturating_sub(a) as f64 / TICKS_PER_SECOND / seconds
            } else {
                0.0
            }
        };
        let busy = after.machine.0.saturating_sub(before.machine.0) as f64;
        let total = after.machine.1.saturating_sub(before.machine.1) as f64;
        let server_cores = cores(before.server_ticks, after.server_ticks);
        let bench_cores = cores(before.bench_ticks, after.bench_ticks);
        let machine_busy = if total > 0.0 { busy / total } else { 0.0 };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Self {
            server_cores,
            bench_cores,
            machine_busy,
            other_cores: (machine_busy * cpus - server_cores - bench_cores).max(0.0),
        }
    }
}

/// utime + stime of a process (all its threads), in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed. utime and stime are
    // fields 14 and 15, the 12th and 13th after the name's closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) jiffies of all CPUs; idle and iowait count as not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The machine the figures come from.
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_kib: u64,
    kernel: String,
    open_files_soft: Option<u64>,
    open_files_hard: Option<u64>,
}

impl Machine {
    fn read() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0);
        // "Max open files            20000                20000                files"
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_files: Vec<Option<u64>> = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .map(|rest| {
                rest.split_whitespace()
                    .take(2)
                    .map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_kib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
            open_files_soft: open_files.first().copied().flatten(),
            open_files_hard: open_files.get(1).copied().flatten(),
        }
    }

    fn describe(&self) -> String {
        let limit = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
        format!(
            "{} CPUs ({}), MemTotal {:.1} GiB, Linux {}, open files (ulimit -n) {} soft / {} hard",
            self.cpus,
            self.cpu_model,
            self.memory_kib as f64 / (1024.0 * 1024.0),
            self.kernel,
            limit(self.open_files_soft),
            limit(self.open_files_hard),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

fn print_report(plan: &Plan, machine: &Machine, routing: &Routing, report: &Report) {
    println!("\n## Results\n");
    println!("machine: {}", machine.describe());
    println!("load average after the run: {}", load_average());
    println!(
        "streams: {} over {} connections, filter {} ({} groups: {})",
        group_digits(plan.streams as u64),
        plan.stream_connections(),
        plan.filter.name(),
        routing.groups.len(),
        routing
            .groups
            .iter()
            .map(|g| g.label.as_str())
            .take(8)
            .collect::<Vec<_>>()
            .join(", ")
            + if routing.groups.len() > 8 {
                ", ..."
            } else {
                ""
            }
    );
    if let Some(reason) = &report.aborted {
        println!("RUN STOPPED EARLY: {reason}");
    }
    if let Some(open) = &report.open {
        println!(
            "opened {} streams in {:.2} s; {} failed to open{}",
            group_digits(open.opened as u64),
            open.took.as_secs_f64(),
            open.failed,
            open.first_failure
                .as_ref()
                .map_or(String::new(), |f| format!(" (first: {f})"))
        );
    }

    println!("\n### CreateTicket, without and with the streams\n");
    println!(
        "| phase | streams | clients | target/s | creates | errors | seconds | creates/s | p50 ms | p99 ms | max ms | server cores | bench cores | other cores | machine busy | server RSS peak |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let rows = [
        (&report.paced_without, 0),
        (&report.unpaced_without, 0),
        (&report.paced_with, plan.streams),
        (&report.unpaced_with, plan.streams),
    ];
    for (run, streams) in rows {
        if let Some(r) = run {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0}% | {} |",
                r.label,
                group_digits(streams as u64),
                r.clients,
                r.rate.map_or("max".to_owned(), |v| format!("{v:.0}")),
                group_digits(r.ok),
                r.errors,
                r.elapsed.as_secs_f64(),
                r.per_second(),
                quantile_ms(&r.latency, 0.50),
                quantile_ms(&r.latency, 0.99),
                r.latency.max() as f64 / 1000.0,
                r.cpu.server_cores,
                r.cpu.bench_cores,
                r.cpu.other_cores,
                r.cpu.machine_busy * 100.0,
                mib(r.server_rss_peak_kib),
            );
        }
    }
    for r in [
        &report.warmup,
        &report.paced_without,
        &report.unpaced_without,
        &report.paced_with,
        &report.unpaced_with,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(error) = &r.first_error {
            println!(
                "{} creates: {} errors, the first: {error}",
                r.label, r.errors
            );
        }
    }

    println!("\n### Deliveries (CREATED changes, receive time - create_time)\n");
    let phases = [&report.paced_with, &report.unpaced_with];
    if let Some(s) = &report.streams {
        println!(
            "| phase | expected | received | missing | extra | streams short | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | all delivered |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
        for (i, label) in ["paced", "unpaced"].iter().enumerate() {
            let Some(d) = &s.deliveries[i] else { continue };
            let Some(latency) = &d.latency else { continue };
            let seconds = phases[i].as_ref().map_or(0.0, |r| r.elapsed.as_secs_f64());
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                group_digits(d.expected),
                group_digits(d.received),
                group_digits(d.missing),
                group_digits(d.extra),
                group_digits(d.streams_short),
                group_digits((d.received as f64 / seconds.max(1e-9)) as u64),
                quantile_ms(latency, 0.50),
                quantile_ms(latency, 0.99),
                quantile_ms(latency, 0.999),
                latency.max() as f64 / 1000.0,
                report.drained[i].map_or_else(
                    || format!("not within {:.0} s", plan.drain.as_secs_f64()),
                    |d| format!("{:.2} s after the last create", d.as_secs_f64())
                ),
            );
        }
        println!(
            "out of order or repeated: {}; not matching the stream's filter: {}; other kinds (heartbeats): {}",
            s.out_of_order, s.mismatched, s.other_kinds
        );
        if s.ends.is_empty() {
            println!("streams ended by the server before the run stopped them: none");
        }
        for (code, (n, message)) in &s.ends {
            println!("streams ended by the server: {n} with {code} (e.g. {message:?})");
        }
        // The server's extra CPU with streams, per delivery: what one more watcher costs.
        if let (Some(without), Some(with), Some(d)) =
            (&report.paced_without, &report.paced_with, &s.deliveries[0])
        {
            let scaled =
                without.cpu.server_cores * with.per_second() / without.per_second().max(1e-9);
            let deliveries = d.received as f64 / with.elapsed.as_secs_f64().max(1e-9);
            if deliveries > 0.0 {
                println!(
                    "server CPU per delivery (paced phase, estimate): {:.1} us ({:.2} cores with \
                     streams against {:.2} for the same create rate without)",
                    (with.cpu.server_cores - scaled).max(0.0) * 1e6 / deliveries,
                    with.cpu.server_cores,
                    scaled
                );
            }
        }
    } else {
        println!("(the run stopped before the streams opened)");
    }
    if let Some(n) = report.primer_received {
        println!(
            "(one more unfiltered stream was open from the ring fill on and received {})",
            group_digits(n)
        );
    }

    println!("\n### Server memory (VmRSS)\n");
    let show = |v: Option<u64>| v.map_or("-".to_owned(), mib);
    println!(
        "at start {}; before the streams (ring filled) {}; streams open, before traffic {}; \
         streams idle after traffic {}; at the end {}; peak {}",
        show(report.rss_start_kib),
        show(report.rss_before_streams_kib),
        show(report.rss_idle_kib),
        show(report.rss_after_traffic_kib),
        show(report.rss_end_kib),
        mib(report.rss_peak_kib),
    );
    let opened = report.open.as_ref().map_or(0, |o| o.opened);
    let per_stream = |kib: Option<u64>| -> Option<f64> {
        let (before, kib) = (report.rss_before_streams_kib?, kib?);
        (opened > 0).then(|| kib.saturating_sub(before) as f64 * 1024.0 / opened as f64)
    };
    let fresh = per_stream(report.rss_idle_kib);
    let steady = per_stream(report.rss_after_traffic_kib);
    let peak = per_stream(report.paced_with.as_ref().map(|r| r.server_rss_peak_kib));
    for (label, bytes) in [
        ("per stream, just opened", fresh),
        ("per stream, idle after traffic (steady state)", steady),
        ("per stream, peak of the paced phase", peak),
    ] {
        if let Some(bytes) = bytes {
            println!("{label}: {} bytes", group_digits(bytes as u64));
        }
    }
    if let Some(cpu) = report.idle_cpu {
        println!(
            "CPU in the {:.0} s after the streams opened (each reads the log once): server {:.2} cores, bench {:.2} cores",
            SETTLE.as_secs_f64(),
            cpu.server_cores,
            cpu.bench_cores
        );
    }
    if let Some(bench) = report.bench_rss_kib {
        println!("load generator RSS at the end: {}", mib(bench));
    }
    println!(
        "server log (RUST_LOG=warn): {} lines{}",
        report.server_log.lines,
        if report.server_log.first.is_empty() {
            String::new()
        } else {
            format!(", the first:\n  {}", report.server_log.first.join("\n  "))
        }
    );

    println!("\n## Against the targets\n");
    match (
        &report.paced_with,
        report
            .streams
            .as_ref()
            .and_then(|s| s.deliveries[0].as_ref()),
    ) {
        (Some(run), Some(d)) => {
            let p99 = d
                .latency
                .as_ref()
                .map_or(f64::INFINITY, |l| quantile_ms(l, 0.99));
            let complete = d.missing == 0 && report.drained[0].is_some();
            println!(
                "target delivery p99 < {TARGET_P99_MS:.0} ms with {} streams: {} (p99 {p99:.1} ms; \
                 {} of {} deliveries, {} missing) at {:.0} creates/s",
                group_digits(opened as u64),
                verdict(p99 < TARGET_P99_MS && complete),
                group_digits(d.received),
                group_digits(d.expected),
                group_digits(d.missing),
                run.per_second(),
            );
            if run.per_second() < 0.95 * plan.rate {
                let without = report
                    .paced_without
                    .as_ref()
                    .map_or(0.0, CreateRun::per_second);
                println!(
                    "  CAVEAT: creates ran at {:.0}/s, not the {:.0}/s asked for ({:.0}/s without \
                     streams): the verdict holds for the rate reached, not for {:.0}/s",
                    run.per_second(),
                    plan.rate,
                    without,
                    plan.rate
                );
            }
        }
        _ => println!("target delivery p99 < {TARGET_P99_MS:.0} ms: not measured"),
    }
    match (fresh, steady) {
        (Some(fresh), Some(steady)) => println!(
            "target server memory < 20 KB a stream: {} ({} bytes a stream idle after traffic; \
             {} just opened)",
            verdict(steady.max(fresh) < TARGET_BYTES_PER_STREAM),
            group_digits(steady as u64),
            group_digits(fresh as u64)
        ),
        (Some(fresh), None) => println!(
            "target server memory < 20 KB a stream: {} ({} bytes a stream just opened; \
             not measured after traffic)",
            verdict(fresh < TARGET_BYTES_PER_STREAM),
            group_digits(fresh as u64)
        ),
        _ => println!("target server memory < 20 KB a stream: not measured"),
    }
    if let (Some(without), Some(with)) = (&report.unpaced_without, &report.unpaced_with) {
        let ratio = with.per_second() / without.per_second().max(1e-9);
        println!(
            "target watchers cost < {:.0}% of create throughput: {} (unpaced {:.0}/s with streams \
             against {:.0}/s without = {:.2}x, a cost of {:.0}%)",
            TARGET_WATCHER_COST * 100.0,
            verdict(1.0 - ratio < TARGET_WATCHER_COST && with.errors == 0),
            with.per_second(),
            without.per_second(),
            ratio,
            (1.0 - ratio) * 100.0
        );
    } else {
        println!("target watchers cost < 20%: not measured");
    }
    if let (Some(without), Some(with)) = (&report.paced_without, &report.paced_with) {
        println!(
            "paced creates: {:.0}/s without streams (p99 {:.1} ms), {:.0}/s with them (p99 {:.1} ms)",
            without.per_second(),
            quantile_ms(&without.latency, 0.99),
            with.per_second(),
            quantile_ms(&with.latency, 0.99)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).context("cannot create a histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// 1234567 as "1,234,567".
fn group_digits(n: u64) -> String {
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
struct WorkDir(Option<PathBuf>);

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("balagh-bench-watch-{}-{nanos}", std::process::id()));
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

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::convert::parse_new_ticket;
    use prost::Message;

    fn routing(filter: StreamFilter) -> Routing {
        Routing::new(filter, &CatalogData::default_catalog().expect("catalog")).expect("routing")
    }

    #[test]
    fn generated_creates_are_valid_and_go_round_the_groups() {
        for filter in [
            StreamFilter::All,
            StreamFilter::Directorate,
            StreamFilter::DirectorateWilayat,
        ] {
            let routing = routing(filter);
            for k in 0..500u64 {
                let (group, request) = routing.request(k);
                assert_eq!(group as u64, k % routing.groups.len() as u64);
                assert!(
                    parse_new_ticket(&request).is_ok(),
                    "{filter:?} request {k} is invalid: {:?}",
                    parse_new_ticket(&request).err()
                );
                let g = &routing.groups[group];
                assert!(g.categories.contains(&request.category));
                let wilayat = request.location.as_ref().map(|l| l.wilayat.as_str());
                assert!(g.wilayat.as_deref().is_none_or(|w| Some(w) == wilayat));
            }
        }
        assert_eq!(routing(StreamFilter::All).groups.len(), 1);
        assert!(routing(StreamFilter::Directorate).groups.len() > 1);
    }

    #[test]
    fn the_slim_message_reads_the_real_wire_format() {
        let full = proto::WatchTicketsResponse {
            cursor: "v1.42".to_owned(),
            kind: proto::ChangeKind::Created.into(),
            ticket: Some(proto::Ticket {
                id: "t".to_owned(),
                subject: "حفرة".to_owned(),
                location: Some(proto::Location {
                    wilayat: "bawshar".to_owned(),
                    ..Default::default()
                }),
                assignment: Some(proto::Assignment {
                    directorate: "roads".to_owned(),
                    ..Default::default()
                }),
                create_time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5_000,
                }),
                ..Default::default()
            }),
            event: Some(proto::TicketEvent {
                cursor: 42,
                ..Default::default()
            }),
        };
        let slim = SlimChange::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(slim.kind, i32::from(proto::ChangeKind::Created));
        assert_eq!(slim.event.map(|e| e.cursor), Some(42));
        let ticket = slim.ticket.expect("ticket");
        assert_eq!(ticket.location.expect("location").wilayat, "bawshar");
        assert_eq!(ticket.assignment.expect("assignment").directorate, "roads");
        assert_eq!(
            ticket.create_time.as_ref().map(timestamp_micros),
            Some(1_700_000_000_000_005)
        );
    }

    #[test]
    fn proc_readers_read_this_process() {
        assert!(read_rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        assert!(process_ticks(std::process::id()).is_some());
        assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total && total > 0));
    }
}
