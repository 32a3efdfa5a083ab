//! `balagh bench-sync`: how fast the sync worker drains the outbox into the platform
//! simulator and takes in its change feed, next to a baseline measured in the same run.
//!
//! Runs, each on a fresh SQLite file under the system temp directory (removed at the end):
//! 1. baseline: the raw rate of `create_case` calls to the simulator with the same client and
//!    the same concurrency as the worker, without any database;
//! 2. push, fault-free: `--changes` complaints queued (one `create_case` push each), then the
//!    worker drains them; pushes per second from the first claim to an empty queue;
//! 3. push with `--faults` (default 20%) of platform calls failing in every injected way,
//!    everything else the same; all must be delivered, and the drain time is compared with
//!    the fault-free one;
//! 4. pull: the simulator's citizens file `--changes` cases, then the pull takes the feed in.
//!
//! The retry schedule is the production one scaled down (first retry after 20 ms instead of
//! 1 s, cap 1 s), injected timeouts hold the connection 300 ms instead of 30 s, slow answers
//! come 100 ms late and maintenance windows last 1 s, so a run measures throughput rather
//! than the production waits; the figures say so. The client's token path is scaled the same
//! way: a second token request after 50 ms without an answer (500 ms in production), 500 ms
//! at most per token request (3 s); `--token-hedge-ms` and `--token-timeout-ms` change them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::domain::SystemClock;
use crate::domain::ticket::{Channel, Location, NewTicket, Reporter, TicketType};
use crate::domain::values::{Code, PhoneNumber};
use crate::platform::client::{ClientSecret, IdempotencyKey, PlatformClient, PlatformClientConfig};
use crate::platform::contract::{NewCase, PlatformTime};
use crate::platform::mapping::Mapping;
use crate::platform::simulator::{
    CitizenAction, FaultKind, FaultSettings, Simulator, SimulatorConfig, SimulatorHandle,
};
use crate::store::{Store, WriteContext, open_store};
use crate::sync::platform_pusher::PlatformPusher;
use crate::sync::pull::{PullSettings, Puller};
use crate::sync::retry::RetryPolicy;
use crate::sync::{SyncSettings, SyncWorker};

#[derive(Debug, clap::Args)]
pub struct BenchSyncArgs {
    /// Pushes queued, and cases filed for the pull.
    #[arg(long, default_value_t = 50_000)]
    pub changes: u64,
    /// Share of platform calls failing in the second push run.
    #[arg(long, default_value_t = 0.2)]
    pub faults: f64,
    /// Pushes in flight at once (the worker's concurrency and the baseline's).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The client's `token_hedge_delay`, in milliseconds: a token request that has not
    /// answered this long gets a second beside it.
    #[arg(long, default_value_t = 50)]
    pub token_hedge_ms: u64,
    /// The client's `token_request_timeout`, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub token_timeout_ms: u64,
    /// The client's `hedge_delay`, in milliseconds: a push that has not answered this long is
    /// sent again beside the first, same key (0: never).
    #[arg(long, default_value_t = 50)]
    pub hedge_ms: u64,
    /// Tokens the client keeps fetched ahead of need (`[sync] standby_tokens`).
    #[arg(long, default_value_t = crate::platform::client::DEFAULT_STANDBY_TOKENS)]
    pub standby_tokens: usize,
    /// Changes asked for per page of the pull (the worker's default: 500; the platform
    /// allows 1 to 1000).
    #[arg(long, default_value_t = PullSettings::default().page_size,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pull_page_size: u32,
    /// Runs the pull alone (no baseline, no push runs).
    #[arg(long)]
    pub pull_only: bool,
    /// Leaves the pull out (baseline and the two push runs only).
    #[arg(long, conflicts_with = "pull_only")]
    pub push_only: bool,
    /// The fault kinds that share `--faults` in the second push run, comma-separated
    /// (default: every kind but maintenance windows); for finding which kind costs what.
    #[arg(long, value_delimiter = ',')]
    pub fault_kinds: Vec<FaultKind>,
}

struct Run {
    name: &'static str,
    n: u64,
    seconds: f64,
    note: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.n as f64 / self.seconds.max(1e-9)
    }
}

pub async fn run(args: BenchSyncArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("bench-sync: a debug build; its figures are meaningless (use --release)");
    }
    let dir = ScratchDir::create()?;
    if args.pull_only {
        let pull = pull_run(&args, &dir.0).await?;
        println!(
            "pull: {} changes in {:.2} s, {:.0}/s ({}); target 5,000/s: {}",
            pull.n,
            pull.seconds,
            pull.rate(),
            pull.note,
            verdict(pull.rate() >= 5000.0)
        );
        return Ok(());
    }
    let mut runs = Vec::new();
    runs.push(baseline(&args).await?);
    runs.push(push_run(&args, &dir.0, "push, fault-free", 0.0).await?);
    runs.push(push_run(&args, &dir.0, "push, with faults", args.faults).await?);
    if !args.push_only {
        runs.push(pull_run(&args, &dir.0).await?);
    }
    print_report(&args, &runs);
    Ok(())
}

/// A fresh folder under the system temp directory, removed when dropped (also on error).
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "balagh-bench-sync-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&path).context("cannot create the scratch folder")?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_report(args: &BenchSyncArgs, runs: &[Run]) {
    println!(
        "bench-sync: {} changes, concurrency {}, {} cores, token hedge {} ms, token timeout {} ms, \
         hedge {}",
        args.changes,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, usize::from),
        args.token_hedge_ms,
        args.token_timeout_ms,
        if args.hedge_ms == 0 {
            "never".to_owned()
        } else {
            format!("{} ms", args.hedge_ms)
        }
    );
    println!();
    println!("| run | items | seconds | items/s | notes |");
    println!("|---|--:|--:|--:|---|");
    for r in runs {
        println!(
            "| {} | {} | {:.2} | {:.0} | {} |",
            r.name,
            r.n,
            r.seconds,
            r.rate(),
            r.note
        );
    }
    let base = runs[0].rate();
    let free = &runs[1];
    let faulty = &runs[2];
    let pull = &runs[3];
    println!();
    println!(
        "push fault-free: {:.0}/s ({:.2}x the raw create_case rate); target 5,000/s: {}",
        free.rate(),
        free.rate() / base,
        verdict(free.rate() >= 5000.0)
    );
    println!(
        "push with faults: drain {:.2}x the fault-free time; target at most 3x: {}",
        faulty.seconds / free.seconds,
        verdict(faulty.seconds <= 3.0 * free.seconds)
    );
    println!(
        "pull: {:.0} changes/s; target 5,000/s: {}",
        pull.rate(),
        verdict(pull.rate() >= 5000.0)
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

async fn simulator(
    args: &BenchSyncArgs,
    faults: FaultSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SimulatorHandle, Arc<PlatformClient>)> {
    let config = SimulatorConfig {
        faults,
        seed: 3,
        ..SimulatorConfig::for_tests()
    };
    let entity = config.entity.clone();
    let client_id = config.client_id.clone();
    let secret = ClientSecret::new(config.client_secret.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(config, listener, shutdown.clone())?;
    let mut client_config = PlatformClientConfig::new(sim.base_url(), entity, client_id, secret);
    client_config.request_timeout = Duration::from_secs(2);
    client_config.token_hedge_delay = Duration::from_millis(args.token_hedge_ms);
    client_config.token_request_timeout = Duration::from_millis(args.token_timeout_ms);
    client_config.hedge_delay = (args.hedge_ms > 0).then(|| Duration::from_millis(args.hedge_ms));
    client_config.standby_tokens = args.standby_tokens;
    Ok((sim, Arc::new(PlatformClient::new(client_config)?)))
}

fn faults(total: f64, chosen: &[FaultKind]) -> FaultSettings {
    if total <= 0.0 {
        return FaultSettings::default();
    }
    // A maintenance window fails every call while it lasts: drawn per call at a rate share,
    // thousands of calls a second would keep the platform in maintenance nearly all the time,
    // far beyond "a fifth of calls failing". The other kinds share the whole rate.
    let kinds: Vec<_> = if chosen.is_empty() {
        FaultKind::ALL
            .into_iter()
            .filter(|k| *k != FaultKind::Maintenance)
            .collect()
    } else {
        chosen.to_vec()
    };
    let each = total / kinds.len() as f64;
    let mut settings = FaultSettings {
        timeout_hold_ms: 300,
        slow_ms: 100,
        ..FaultSettings::default()
    };
    for kind in kinds {
        settings = settings.with_rate(kind, each);
    }
    settings
}

async fn baseline(args: &BenchSyncArgs) -> anyhow::Result<Run> {
    let shutdown = CancellationToken::new();
    let (_sim, client) = simulator(args, FaultSettings::default(), &shutdown).await?;
    let n = args.changes.min(20_000);
    let mapping = Mapping::v1()?;
    let category = mapping
        .category_to_platform(&Code::parse("category", "waste_collection")?)?
        .to_owned();
    let case_type = mapping.type_to_platform(TicketType::Complaint)?.to_owned();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(args.concurrency, |i| {
            let client = client.clone();
            let (category, case_type) = (category.clone(), case_type.clone());
            async move {
                let case = NewCase {
                    case_type,
                    category,
                    status: "ST20".into(),
                    subject: format!("baseline {i}"),
                    description: String::new(),
                    wilayat: None,
                    area: None,
                    location: None,
                    entity_reference: format!("MCT-2026-{:06}", i + 1),
                    filed_at: PlatformTime::new(crate::domain::Timestamp::from_micros(
                        1_780_286_400_000_000,
                    )),
                };
                let key = IdempotencyKey::parse(&format!("baseline-{i}")).expect("valid key");
                if let Err(error) = client.create_case(&key, &case).await {
                    eprintln!("baseline call failed: {error}");
                }
            }
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    Ok(Run {
        name: "baseline: create_case calls, no database",
        n,
        seconds,
        note: "the same client and concurrency".into(),
    })
}

fn complaint(i: u64) -> anyhow::Result<NewTicket> {
    Ok(NewTicket {
        ticket_type: TicketType::Complaint,
        channel: Channel::App,
        category: Code::parse("category", "waste_collection")?,
        priority: None,
        subject: format!("لم تجمع النفايات {i}"),
        description: "الحاويات ممتلئة منذ ثلاثة أيام".into(),
        reporter: Reporter::identified(
            "reporter",
            "Citizen".into(),
            Some(PhoneNumber::parse("phone", "99000000")?),
            None,
            None,
        )?,
        location: Location {
            wilayat: Some(Code::parse("wilayat", "as_seeb")?),
            area: None,
            point: None,
        },
        attachments: vec![],
    })
}

async fn fresh_store(dir: &std::path::Path, name: &str) -> anyhow::Result<Arc<dyn Store>> {
    let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    Ok(open_store(
        &url,
        512,
        4096,
        4,
        Default::default(),
        Arc::new(SystemClock),
    )
    .await?)
}

async fn push_run(
    args: &BenchSyncArgs,
    dir: &std::path::Path,
    name: &'static str,
    fault_rate: f64,
) -> anyhow::Result<Run> {
    let store = fresh_store(dir, &name.replace([' ', ','], "_")).await?;
    let ctx = WriteContext {
        actor: "bench".into(),
        request: None,
        reach: None,
    };
    futures::stream::iter(0..args.changes)
        .map(|i| {
            let store = store.clone();
            let ctx = ctx.clone();
            async move {
                store
                    .create_ticket(ctx, complaint(i)?)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let shutdown = CancellationToken::new();
    let (sim, client) = simulator(args, faults(fault_rate, &args.fault_kinds), &shutdown).await?;
    let pusher = PlatformPusher::new(client.clone(), Arc::new(Mapping::v1()?), store.clone());
    let worker = SyncWorker::new(
        store.clone(),
        Arc::new(pusher),
        Arc::new(SystemClock),
        SyncSettings {
            retry: RetryPolicy {
                initial_interval: Duration::from_millis(20),
                max_interval: Duration::from_secs(1),
                ..RetryPolicy::default()
            },
            batch: 1000,
            concurrency: args.concurrency,
            // The bench wants every failure retried, not paused behind an open breaker.
            breaker_threshold: u32::MAX,
            ..SyncSettings::default()
        },
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        let handled = worker.drain_until_idle(&shutdown).await?;
        let status = store.outbox_status().await?;
        if status.pending == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the outbox did not drain in 10 minutes"
        );
        if handled == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let status = store.outbox_status().await?;
    let state = sim.state();
    let injected: u64 = state.faults.counts.values().sum();
    let token_requests = state.faults.token_requests;
    let cases = state.cases.len() as u64;
    let api_requests = state.faults.api_requests;
    let hedges = client.hedge_stats();
    eprintln!(
        "{name}: faults by kind: {}",
        state
            .faults
            .counts
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    shutdown.cancel();
    store.close().await;
    anyhow::ensure!(
        status.dead == 0 && status.delivered == args.changes && cases == args.changes,
        "not all delivered exactly once: {status:?}, {cases} cases at the platform"
    );
    Ok(Run {
        name,
        n: args.changes,
        seconds,
        note: format!(
            "{} delivered, 0 dead, {cases} cases at the platform, {injected} faults injected, \
             {api_requests} requests ({token_requests} for tokens), {} hedged ({} settled by \
             the second request, {} refused by the budget)",
            status.delivered, hedges.sent, hedges.won, hedges.refused
        ),
    })
}

async fn pull_run(args: &BenchSyncArgs, dir: &std::path::Path) -> anyhow::Result<Run> {
    let store = fresh_store(dir, "pull").await?;
    let shutdown = CancellationToken::new();
    let (sim, client) = simulator(args, FaultSettings::default(), &shutdown).await?;
    for _ in 0..args.changes {
        sim.citizen_act(Some(CitizenAction::File), None)?;
    }
    let puller = Puller::new(
        client,
        Arc::new(Mapping::v1()?),
        store.clone(),
        Arc::new(SystemClock),
        PullSettings {
            page_size: args.pull_page_size,
            ..PullSettings::default()
        },
    );
    eprintln!(
        "pull: {} cases filed at the platform; taking them in",
        args.changes
    );
    let started = Instant::now();
    let report = puller.pull_until_caught_up().await?;
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    store.close().await;
    anyhow::ensure!(
        report.created == args.changes,
        "not every case became a ticket: {report:?}"
    );
    Ok(Run {
        name: "pull: cases filed on the platform taken in",
        n: report.changes,
        seconds,
        note: format!(
            "{} pages of {}, {} tickets created",
            report.pages, args.pull_page_size, report.created
        ),
    })
}
