//! `balagh bench-pg`: CreateTicket on PostgreSQL next to `pgbench` writing the same rows, and
//! two replicas on one database (see `docs/benchmarks.md`, section "PostgreSQL").
//!
//! The questions come from issue 5: with `synchronous_commit=on`, does the store's group commit
//! (one writer task, many creates in one transaction) beat PostgreSQL taking each create as a
//! transaction of its own, by at least 1.5x at 32 clients? And with two replicas on one
//! database, what is the total create rate, and how long does a create made on one replica
//! take to reach a WatchTickets stream on the other?
//!
//! Why it looks like this:
//! - The reference is `pgbench` (a subprocess) at the same 32 clients, in the same run, writing
//!   what a create writes into the store's own tables (the store's migrations, so the same
//!   indexes, the generated search vector and its GIN index): the ticket row with its search
//!   text and JSON body, then its created event with the ticket snapshot, in one transaction
//!   each. Its bodies are serialised from tickets the load generator would send, so the rows are
//!   the same size. It leaves out what balagh adds per create (catalog checks, the request-id
//!   lookup and record, the reference counter, the outbox row some tickets owe, one advisory
//!   lock per transaction): the ratio is, if anything, flattering to the baseline.
//! - Each part runs on a scratch database of its own (`balagh_bench_<pid>_<part>`), created
//!   from the URL's server and dropped at the end, also on error or Ctrl-C. Nothing is written
//!   to the database the URL names.
//! - One server runs in-process (`Application`, port 0, the runtime `balagh bench` uses), so the
//!   load generator and the server's CPU can be told apart; the two replicas are `balagh serve`
//!   processes of this binary, as in production (`--components grpc`: the API alone, as the
//!   one in-process server runs it).
//! - Delivery across replicas is timed from the moment the create's response reaches the
//!   client on replica B to the moment the CREATED message reaches a stream on replica A, on
//!   one clock (`Instant`) in this process: "my create is done" to "the other screen shows
//!   it". Both follow the same commit, so the message often arrives first; those count as 0
//!   and are reported, and the time from the start of the create's call to the message is
//!   reported beside it as an upper bound.
//!
//! Invariants: nothing here is a timed assertion; `synchronous_commit` is read and printed, never
//! set; replica processes are killed when the run ends or fails (`kill_on_drop`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel as GrpcChannel;

use crate::bench::{
    CLIENTS_PER_CHANNEL, Corpus, CpuSnapshot, CpuUse, Machine, Measured, RunningServer, Workload,
    connect, drive, group_digits, load_average, micros, new_histogram, new_ticket, prepare_create,
    verdict,
};
use crate::domain::catalog::CatalogData;
use crate::domain::lifecycle::created_event;
use crate::domain::values::{Code, EmployeeId, ReferenceNumber, TicketId};
use crate::domain::{Clock, SystemClock};
use crate::grpc::proto;
use crate::grpc::proto::ticket_service_client::TicketServiceClient;
use crate::grpc::request::ACTOR_METADATA_KEY;
use crate::store::{PostgresStore, PostgresStoreOptions, Store, postgres_search_text};

/// The target of issue 5: group commit at 32 clients against one transaction per create.
const TARGET_RATIO: f64 = 1.5;
/// Distinct tickets the pgbench scripts are made of (pgbench picks one at random per transaction).
const BASELINE_SCRIPTS: u64 = 8;
/// After a replica phase, how long every create may take to reach the stream.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchPgArgs {
    /// A PostgreSQL server to run on; scratch databases are created on it and dropped.
    #[arg(long, env = "BALAGH_BENCH_DATABASE_URL")]
    pub database_url: String,
    /// Seconds each part is measured (pgbench, one server, two replicas).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Concurrent clients; the two replicas get half each.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// The pgbench executable.
    #[arg(long, default_value = "pgbench")]
    pub pgbench: PathBuf,
    /// Rounds of pgbench then one server, one after the other: pgbench's figure moves by 20% or
    /// more from run to run on a shared machine, so the verdict takes the median of the
    /// rounds' ratios.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Run only these parts (a comma list); every part by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

/// A part of the benchmark that `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Pgbench,
    Single,
    Replicas,
}

/// The run, with every default resolved.
struct Plan {
    admin_url: String,
    measure: Duration,
    warmup: Duration,
    clients: usize,
    pgbench: PathBuf,
    rounds: usize,
    parts: Vec<Part>,
}

impl Plan {
    fn from_args(args: &BenchPgArgs) -> anyhow::Result<Self> {
        if !args.seconds.is_finite() || !(1.0..=600.0).contains(&args.seconds) {
            anyhow::bail!("--seconds must be from 1 to 600, got {}", args.seconds);
        }
        if !(2..=512).contains(&args.clients) {
            anyhow::bail!("--clients must be from 2 to 512 (the replicas get half each)");
        }
        if !(1..=20).contains(&args.rounds) {
            anyhow::bail!("--rounds must be from 1 to 20, got {}", args.rounds);
        }
        let measure = Duration::from_secs_f64(args.seconds);
        Ok(Self {
            admin_url: args.database_url.clone(),
            measure,
            warmup: (measure / 10).clamp(Duration::from_millis(500), Duration::from_secs(2)),
            clients: args.clients,
            pgbench: args.pgbench.clone(),
            rounds: args.rounds,
            parts: if args.only.is_empty() {
                vec![Part::Pgbench, Part::Single, Part::Replicas]
            } else {
                args.only.clone()
            },
        })
    }

    fn runs(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }
}

pub async fn run(args: BenchPgArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let machine = Machine::read();
    println!("balagh bench-pg {}", env!("CARGO_PKG_VERSION"));
    if cfg!(debug_assertions) {
        println!(
            "WARNING: this is a debug build; figures are meaningless. Use `cargo run --release -- bench-pg`."
        );
    }
    println!("machine: {}", machine.describe());
    println!("load average before the run: {}", load_average());
    println!(
        "plan: {:.1} s per part after a {:.1} s warm-up; {} clients (two replicas: {} each); \
         {} round(s) of pgbench then one server",
        plan.measure.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.clients,
        plan.clients / 2,
        plan.rounds
    );
    let settings = ServerSettings::read(&plan.admin_url).await?;
    println!("PostgreSQL: {}", settings.describe());
    if settings.synchronous_commit != "on" {
        println!(
            "WARNING: synchronous_commit is {:?}, not on: the figures are not the issue's.",
            settings.synchronous_commit
        );
    }
    let dir = std::env::temp_dir().join(format!("balagh-bench-pg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut scratch = ScratchDatabases::new(&plan.admin_url);
    // Ctrl-C stops the run but still drops the scratch databases.
    let outcome = tokio::select! {
        outcome = run_plan(&plan, &dir, &mut scratch) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.drop_all().await;
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        eprintln!("warning: cannot remove {}: {error}", dir.display());
    }
    let report = outcome?;
    print_report(&plan, &settings, &report);
    Ok(())
}

/// Everything one run measured.
#[derive(Default)]
struct Report {
    /// One per round, in order.
    pgbench: Vec<PgbenchRun>,
    /// One per round, in order.
    single: Vec<Measured>,
    replicas: Option<ReplicasRun>,
}

impl Report {
    /// Each round's CreateTicket rate over pgbench's, when both ran.
    fn ratios(&self) -> Vec<f64> {
        self.single
            .iter()
            .zip(&self.pgbench)
            .map(|(single, pgbench)| single.ops_per_second() / pgbench.figures.tps.max(1e-9))
            .collect()
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

async fn run_plan(
    plan: &Plan,
    dir: &Path,
    scratch: &mut ScratchDatabases,
) -> anyhow::Result<Report> {
    let corpus = Arc::new(Corpus::from_catalog(
        &CatalogData::default_catalog()
            .map_err(|e| anyhow::anyhow!("the default catalog is invalid: {e}"))?,
    )?);
    let mut report = Report::default();
    for round in 1..=plan.rounds {
        if plan.runs(Part::Pgbench) {
            let url = scratch.create(&format!("pgbench_{round}")).await?;
            println!(
                "\npgbench (round {round}): {} clients, one transaction per ticket (ticket row + created event)",
                plan.clients
            );
            let measured = run_pgbench(plan, &url, dir, &corpus).await?;
            println!("  {}", measured.one_line());
            report.pgbench.push(measured);
        }
        if plan.runs(Part::Single) {
            let url = scratch.create(&format!("single_{round}")).await?;
            println!(
                "\none balagh server in-process (round {round}), {} clients",
                plan.clients
            );
            let measured = run_single(plan, &url, &corpus).await?;
            println!("  {}", measured.one_line());
            report.single.push(measured);
        }
    }
    if plan.runs(Part::Replicas) {
        let url = scratch.create("replicas").await?;
        println!(
            "\ntwo `balagh serve` replicas on one database, {} clients each, a watch on A",
            plan.clients / 2
        );
        let measured = run_replicas(plan, &url, dir, &corpus).await?;
        println!("  {}", measured.one_line());
        report.replicas = Some(measured);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The server's settings, and scratch databases.

/// What decides how a commit reaches the disk, read from the server.
struct ServerSettings {
    version: String,
    synchronous_commit: String,
    fsync: String,
    shared_buffers: String,
    wal_sync_method: String,
    commit_delay: String,
    max_connections: String,
}

impl ServerSettings {
    async fn read(url: &str) -> anyhow::Result<Self> {
        let mut conn = PgConnection::connect(url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {url}"))?;
        let settings = Self {
            version: show(&mut conn, "server_version").await?,
            synchronous_commit: show(&mut conn, "synchronous_commit").await?,
            fsync: show(&mut conn, "fsync").await?,
            shared_buffers: show(&mut conn, "shared_buffers").await?,
            wal_sync_method: show(&mut conn, "wal_sync_method").await?,
            commit_delay: show(&mut conn, "commit_delay").await?,
            max_connections: show(&mut conn, "max_connections").await?,
        };
        conn.close().await.ok();
        Ok(settings)
    }

    fn describe(&self) -> String {
        format!(
            "{}; synchronous_commit={}, fsync={}, shared_buffers={}, wal_sync_method={}, \
             commit_delay={}, max_connections={}",
            self.version,
            self.synchronous_commit,
            self.fsync,
            self.shared_buffers,
            self.wal_sync_method,
            self.commit_delay,
            self.max_connections
        )
    }
}

/// One setting of the server, as `SHOW` prints it.
async fn show(conn: &mut PgConnection, setting: &'static str) -> anyhow::Result<String> {
    // The setting's name is a literal of this file, never input.
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
        .fetch_one(conn)
        .await
        .with_context(|| format!("SHOW {setting}"))
}

/// The scratch databases of this run, dropped together at the end.
pub(crate) struct ScratchDatabases {
    admin_url: String,
    names: Vec<String>,
}

impl ScratchDatabases {
    pub(crate) fn new(admin_url: &str) -> Self {
        Self {
            admin_url: admin_url.to_owned(),
            names: Vec::new(),
        }
    }

    /// Creates `balagh_bench_<pid>_<part>` and returns its URL.
    pub(crate) async fn create(&mut self, part: &str) -> anyhow::Result<String> {
        let name = format!("balagh_bench_{}_{part}", std::process::id());
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        // The name is made here from digits and a literal, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("cannot create the scratch database {name}"))?;
        admin.close().await.ok();
        self.names.push(name.clone());
        Ok(with_database(&self.admin_url, &name))
    }

    pub(crate) async fn drop_all(self) {
        let mut admin = match PgConnection::connect(&self.admin_url).await {
            Ok(admin) => admin,
            Err(error) => {
                eprintln!("warning: cannot connect to drop {:?}: {error}", self.names);
                return;
            }
        };
        for name in &self.names {
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
            if let Err(error) = dropped {
                eprintln!("warning: cannot drop the scratch database {name}: {error}");
            }
        }
        admin.close().await.ok();
    }
}

/// `url` with its database replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{server}/{name}{query}")
}

/// Runs the store's migrations and catalog on a fresh database, as a replica's first start does.
async fn prepare_schema(url: &str) -> anyhow::Result<()> {
    let store = PostgresStore::open(PostgresStoreOptions::new(url), Arc::new(SystemClock))
        .await
        .context("cannot open the store on the scratch database")?;
    store.close().await;
    Ok(())
}

async fn count_tickets(url: &str) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect(url).await?;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM tickets")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// The baseline: pgbench, one transaction per ticket.

/// What pgbench reported, and what the run around it saw.
struct PgbenchRun {
    figures: PgbenchFigures,
    rows: i64,
    cpu: CpuUse,
    clients: usize,
}

impl PgbenchRun {
    fn one_line(&self) -> String {
        format!(
            "pgbench @{}: {} transactions ({} failed) = {:.0}/s, latency average {:.2} ms; {} tickets in the table",
            self.clients,
            group_digits(self.figures.transactions),
            self.figures.failed,
            self.figures.tps,
            self.figures.latency_average_ms,
            group_digits(u64::try_from(self.rows).unwrap_or(0)),
        )
    }
}

/// The lines of pgbench's summary that the report uses.
#[derive(Debug, Clone, PartialEq)]
struct PgbenchFigures {
    transactions: u64,
    failed: u64,
    latency_average_ms: f64,
    /// Without the initial connection time.
    tps: f64,
}

/// Reads pgbench's summary (PostgreSQL 15's wording; `failed` is absent before 15).
fn parse_pgbench(output: &str) -> anyhow::Result<PgbenchFigures> {
    let value = |prefix: &str| {
        output
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let number = |prefix: &str| -> anyhow::Result<f64> {
        value(prefix)
            .with_context(|| format!("no {prefix:?} line in pgbench's output"))?
            .parse()
            .with_context(|| format!("pgbench's {prefix:?} is not a number"))
    };
    Ok(PgbenchFigures {
        transactions: value("number of transactions actually processed:")
            .context("no transaction count in pgbench's output")?
            .parse()
            .context("pgbench's transaction count is not a number")?,
        failed: value("number of failed transactions:")
            .map_or(Ok(0), str::parse)
            .context("pgbench's failed count is not a number")?,
        latency_average_ms: number("latency average =")?,
        tps: number("tps =")?,
    })
}

/// One pgbench script: the rows the store writes for the `k`-th generated create (a ticket
/// with its search text, then its created event with the ticket's snapshot) in one
/// transaction. The texts are dollar-quoted literals; the ticket's id and reference are made
/// per transaction, so the unique indexes see new values.
fn pgbench_script(corpus: &Corpus, k: u64) -> anyhow::Result<String> {
    let create = prepare_create(corpus, k)?;
    let now = SystemClock.now();
    let reference = ReferenceNumber::new(now.muscat_year(), 1).context("reference number")?;
    let ticket = new_ticket(
        create.new,
        create.directorate,
        create.default_priority,
        TicketId::new_v7(),
        reference,
        now,
    );
    let body = serde_json::to_string(&ticket)?;
    let event = serde_json::to_string(&created_event(&ticket))?;
    // As the PostgreSQL store writes it.
    let search = postgres_search_text(&ticket);
    let text = |value: Option<&str>| value.map_or("NULL".to_owned(), |v| format!("'{v}'"));
    for literal in [&body, &event, &search] {
        anyhow::ensure!(
            !literal.contains("$t$") && !literal.contains('\n'),
            "a generated text cannot be dollar-quoted on one line"
        );
    }
    let now_micros = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
    Ok(format!(
        "-- balagh bench-pg: the rows of one CreateTicket, one transaction.\n\
         BEGIN;\n\
         INSERT INTO tickets (id, reference, ticket_type, channel, category, priority, status, \
         directorate, outlet, wilayat, assignee, support_line, create_time, update_time, version, \
         body, search_text) VALUES (gen_random_uuid(), \
         'pgb-{year}-' || lpad(nextval('pgbench_reference')::text, 6, '0'), \
         '{ticket_type}', '{channel}', '{category}', '{priority}', '{status}', {directorate}, \
         {outlet}, {wilayat}, {assignee}, {support_line}, {now_micros}, {now_micros}, 1, \
         $t${body}$t$::jsonb, $t${search}$t$) RETURNING id AS ticket_id \\gset\n\
         INSERT INTO ticket_events (ticket_id, kind, actor, occur_time, version, body, ticket_body) \
         VALUES (':ticket_id'::uuid, '{kind}', 'bench', {now_micros}, 1, $t${event}$t$::jsonb, \
         $t${body}$t$::jsonb);\n\
         END;\n",
        year = now.muscat_year(),
        ticket_type = ticket.ticket_type.as_str(),
        channel = ticket.channel.as_str(),
        category = ticket.category.as_str(),
        priority = ticket.priority.as_str(),
        status = ticket.status.as_str(),
        directorate = text(ticket.assignment.directorate.as_ref().map(Code::as_str)),
        outlet = text(ticket.assignment.outlet.as_ref().map(Code::as_str)),
        wilayat = text(ticket.location.wilayat.as_ref().map(Code::as_str)),
        assignee = text(ticket.assignment.assignee.as_ref().map(EmployeeId::as_str)),
        support_line = ticket
            .assignment
            .support_line
            .map_or("NULL".to_owned(), |l| l.number().to_string()),
        kind = created_event(&ticket).kind.as_str(),
    ))
}

async fn run_pgbench(
    plan: &Plan,
    url: &str,
    dir: &Path,
    corpus: &Corpus,
) -> anyhow::Result<PgbenchRun> {
    prepare_schema(url).await?;
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("CREATE SEQUENCE pgbench_reference")
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    let mut command = Command::new(&plan.pgbench);
    command.args(["-n", "-j", "2"]);
    command.arg("-c").arg(plan.clients.to_string());
    command
        .arg("-T")
        .arg(plan.measure.as_secs().max(1).to_string());
    for k in 0..BASELINE_SCRIPTS {
        let path = dir.join(format!("create-{k}.sql"));
        std::fs::write(&path, pgbench_script(corpus, k)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        command.arg("-f").arg(&path);
    }
    command
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let before = CpuSnapshot::take();
    let output = command
        .output()
        .await
        .with_context(|| format!("cannot run {}", plan.pgbench.display()))?;
    let cpu = CpuUse::between(&before, &CpuSnapshot::take());
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let figures = parse_pgbench(&stdout)
        .with_context(|| format!("cannot read pgbench's summary:\n{stdout}"))?;
    Ok(PgbenchRun {
        figures,
        rows: count_tickets(url).await?,
        cpu,
        clients: plan.clients,
    })
}

// ---------------------------------------------------------------------------------------------
// One server, in-process.

async fn run_single(plan: &Plan, url: &str, corpus: &Arc<Corpus>) -> anyhow::Result<Measured> {
    let server = RunningServer::start(url).await?;
    let mut channels = Vec::new();
    for _ in 0..plan.clients.div_ceil(CLIENTS_PER_CHANNEL) {
        channels.push(connect(server.addr).await?);
    }
    let measured = drive(
        &Workload::Create(corpus.clone()),
        plan.clients,
        &channels,
        plan.warmup,
        plan.measure,
    )
    .await;
    drop(channels);
    let stopped = server.stop().await;
    let measured = measured?;
    stopped?;
    println!("  {} tickets in the table", count_tickets(url).await?);
    Ok(measured)
}

// ---------------------------------------------------------------------------------------------
// Two replicas, a watch on one of them.

/// A `balagh serve` process (this binary) on port 0, killed when dropped.
struct ReplicaProcess {
    child: Child,
    addr: SocketAddr,
}

impl ReplicaProcess {
    async fn start(database_url: &str, log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the balagh executable")?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(&exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--components",
                "grpc",
                "--database-url",
                database_url,
            ])
            .env("RUST_LOG", "warn")
            .env_remove("BALAGH_CONFIG")
            .env_remove("BALAGH_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let stdout = child.stdout.take().context("the replica's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the replica did not print its address within 60 s")?
            .context("cannot read the replica's stdout")?
            .with_context(|| {
                format!(
                    "the replica exited before it listened: {}",
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                )
            })?;
        let addr = first
            .trim()
            .strip_prefix("balagh listening on ")
            .with_context(|| format!("unexpected first line from the replica: {first:?}"))?
            .parse()
            .with_context(|| format!("no address in the replica's first line {first:?}"))?;
        // Keep reading, so a replica that prints more never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    /// CPU time the process used so far (user + system), from `/proc/<pid>/stat`.
    fn cpu_time(&self) -> Duration {
        const TICKS_PER_SECOND: f64 = 100.0;
        let ticks = self
            .child
            .id()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| {
                // The fields after the command name, which ends with the last ')'.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: u64 = fields.get(11)?.parse().ok()?;
                let stime: u64 = fields.get(12)?.parse().ok()?;
                Some(utime + stime)
            })
            .unwrap_or(0);
        Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND)
    }
}

/// Which replica a create was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// Creates waiting for their CREATED message on A's stream, and messages waiting for their
/// create's response (the stream can be faster than the response: both follow one commit).
#[derive(Default)]
struct DeliveryBoard {
    pending: HashMap<String, Pending>,
    /// Delivery latencies of counted creates made on A and on B.
    same_replica: Latencies,
    across_replicas: Latencies,
}

/// Microseconds from the create's response, and from the start of its call, to the message.
#[derive(Default)]
struct Latencies {
    from_response: Vec<u64>,
    from_call: Vec<u64>,
    /// Messages that arrived before the create's response (counted as 0 from the response).
    before_response: u64,
}

/// When a create's call started and its response arrived.
#[derive(Clone, Copy)]
struct CreateTimes {
    started: Instant,
    answered: Instant,
}

enum Pending {
    Created {
        side: Side,
        times: CreateTimes,
        counted: bool,
    },
    Delivered(Instant),
}

impl DeliveryBoard {
    fn created(&mut self, id: String, side: Side, times: CreateTimes, counted: bool) {
        match self.pending.remove(&id) {
            Some(Pending::Delivered(at)) => {
                if counted {
                    self.record(side, times, at);
                }
            }
            _ => {
                let pending = Pending::Created {
                    side,
                    times,
                    counted,
                };
                self.pending.insert(id, pending);
            }
        }
    }

    fn delivered(&mut self, id: String, at: Instant) {
        match self.pending.remove(&id) {
            Some(Pending::Created {
                side,
                times,
                counted,
            }) => {
                if counted {
                    self.record(side, times, at);
                }
            }
            _ => {
                self.pending.insert(id, Pending::Delivered(at));
            }
        }
    }

    fn record(&mut self, side: Side, times: CreateTimes, delivered: Instant) {
        let latencies = match side {
            Side::A => &mut self.same_replica,
            Side::B => &mut self.across_replicas,
        };
        if delivered < times.answered {
            latencies.before_response += 1;
        }
        latencies
            .from_response
            .push(micros(delivered.saturating_duration_since(times.answered)));
        latencies
            .from_call
            .push(micros(delivered.saturating_duration_since(times.started)));
    }

    /// Counted creates whose message has not arrived.
    fn missing(&self) -> u64 {
        self.pending
            .values()
            .filter(|p| matches!(p, Pending::Created { counted: true, .. }))
            .count() as u64
    }

    fn undelivered(&self) -> usize {
        self.pending
            .values()
            .filter(|p| matches!(p, Pending::Created { .. }))
            .count()
    }
}

/// Delivery latency histograms of one kind of create.
struct Delivery {
    from_response: Histogram<u64>,
    from_call: Histogram<u64>,
    before_response: u64,
}

impl Delivery {
    fn from_latencies(latencies: &Latencies) -> anyhow::Result<Self> {
        let histogram = |values: &[u64]| -> anyhow::Result<Histogram<u64>> {
            let mut h = new_histogram()?;
            for &v in values {
                h.saturating_record(v);
            }
            Ok(h)
        };
        Ok(Self {
            from_response: histogram(&latencies.from_response)?,
            from_call: histogram(&latencies.from_call)?,
            before_response: latencies.before_response,
        })
    }
}

/// What the two-replica part measured.
struct ReplicasRun {
    /// CreateTicket on A and on B.
    sides: [Measured; 2],
    same_replica: Delivery,
    across_replicas: Delivery,
    missing: u64,
    /// Cores both replica processes used during the measurement.
    replica_cores: f64,
    cpu: CpuUse,
}

impl ReplicasRun {
    fn total_per_second(&self) -> f64 {
        self.sides.iter().map(Measured::ops_per_second).sum()
    }

    fn one_line(&self) -> String {
        format!(
            "two replicas: {:.0} creates/s in all (A {:.0}/s, B {:.0}/s); delivery on A of B's creates p50 {:.1} ms, p99 {:.1} ms; {} missing",
            self.total_per_second(),
            self.sides[0].ops_per_second(),
            self.sides[1].ops_per_second(),
            quantile_ms(&self.across_replicas.from_response, 0.50),
            quantile_ms(&self.across_replicas.from_response, 0.99),
            self.missing
        )
    }
}

fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1000.0
}

async fn run_replicas(
    plan: &Plan,
    url: &str,
    dir: &Path,
    corpus: &Arc<Corpus>,
) -> anyhow::Result<ReplicasRun> {
    // One after the other: the first runs the migrations and loads the catalog.
    let a = ReplicaProcess::start(url, &dir.join("replica-a.log")).await?;
    let b = ReplicaProcess::start(url, &dir.join("replica-b.log")).await?;
    let board = Arc::new(Mutex::new(DeliveryBoard::default()));

    let mut watcher = TicketServiceClient::new(connect(a.addr).await?);
    let mut stream = watcher
        .watch_tickets(proto::WatchTicketsRequest::default())
        .await
        .context("cannot open a watch on replica A")?
        .into_inner();
    let watch_board = board.clone();
    let watch = tokio::spawn(async move {
        while let Some(message) = stream.message().await? {
            if message.kind() != proto::ChangeKind::Created {
                continue;
            }
            let at = Instant::now();
            if let Some(ticket) = message.ticket {
                lock(&watch_board).delivered(ticket.id, at);
            }
        }
        anyhow::Ok(())
    });

    let per_side = plan.clients / 2;
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop_at = measure_from + plan.measure;
    let mut tasks = JoinSet::new();
    for (side, replica) in [(Side::A, &a), (Side::B, &b)] {
        let mut channels = Vec::new();
        for _ in 0..per_side.div_ceil(CLIENTS_PER_CHANNEL) {
            channels.push(connect(replica.addr).await?);
        }
        for index in 0..per_side {
            let channel = channels[index / CLIENTS_PER_CHANNEL].clone();
            let seed = index as u64 + if side == Side::B { 1_000 } else { 0 };
            tasks.spawn(create_and_note(
                TicketServiceClient::new(channel),
                corpus.clone(),
                board.clone(),
                side,
                seed,
                (measure_from, stop_at),
            ));
        }
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuSnapshot::take();
    let replicas_before = a.cpu_time() + b.cpu_time();
    let mut tallies = [SideTally::new(measure_from)?, SideTally::new(measure_from)?];
    while let Some(joined) = tasks.join_next().await {
        let (side, tally) = joined.context("a client task failed")??;
        tallies[usize::from(side == Side::B)].merge(tally)?;
    }
    let cpu = CpuUse::between(&cpu_before, &CpuSnapshot::take());
    let replica_cores = (a.cpu_time() + b.cpu_time())
        .saturating_sub(replicas_before)
        .as_secs_f64()
        / measure_from.elapsed().as_secs_f64().max(1e-9);

    // Every create's message should reach the stream shortly after the last response.
    let drained = Instant::now();
    while lock(&board).undelivered() > 0 && drained.elapsed() < DRAIN_LIMIT {
        if watch.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    if let Ok(Ok(Err(error))) = tokio::time::timeout(Duration::from_secs(1), watch).await {
        println!("  the watch on A ended: {error:#}");
    }
    let board = std::mem::take(&mut *lock(&board));
    let [tally_a, tally_b] = tallies;
    Ok(ReplicasRun {
        sides: [
            tally_a.into_measured("CreateTicket on A", per_side, measure_from, cpu),
            tally_b.into_measured("CreateTicket on B", per_side, measure_from, cpu),
        ],
        same_replica: Delivery::from_latencies(&board.same_replica)?,
        across_replicas: Delivery::from_latencies(&board.across_replicas)?,
        missing: board.missing(),
        replica_cores,
        cpu,
    })
}

fn lock(board: &Mutex<DeliveryBoard>) -> std::sync::MutexGuard<'_, DeliveryBoard> {
    // A panicking holder leaves counts, not broken invariants: keep going.
    board
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the clients of one replica counted.
struct SideTally {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    last_done: Instant,
}

impl SideTally {
    fn new(start: Instant) -> anyhow::Result<Self> {
        Ok(Self {
            ops: 0,
            errors: 0,
            first_error: None,
            latency: new_histogram()?,
            last_done: start,
        })
    }

    fn merge(&mut self, other: SideTally) -> anyhow::Result<()> {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency
            .add(&other.latency)
            .context("cannot merge latency histograms")?;
        self.last_done = self.last_done.max(other.last_done);
        Ok(())
    }

    fn into_measured(
        self,
        name: &str,
        clients: usize,
        measure_from: Instant,
        cpu: CpuUse,
    ) -> Measured {
        Measured {
            name: name.to_owned(),
            clients,
            ops: self.ops,
            errors: self.errors,
            first_error: self.first_error,
            elapsed: self.last_done.saturating_duration_since(measure_from),
            latency: self.latency,
            cpu,
            rows_per_call: None,
        }
    }
}

/// Creates back to back on one replica; notes each created ticket on the board when its
/// response arrives. Only creates started after the warm-up count.
async fn create_and_note(
    mut client: TicketServiceClient<GrpcChannel>,
    corpus: Arc<Corpus>,
    board: Arc<Mutex<DeliveryBoard>>,
    side: Side,
    seed: u64,
    (measure_from, stop_at): (Instant, Instant),
) -> anyhow::Result<(Side, SideTally)> {
    let mut tally = SideTally::new(measure_from)?;
    let mut k = seed.wrapping_mul(0x9E37_79B9);
    loop {
        let started = Instant::now();
        if started >= stop_at {
            break;
        }
        k = k.wrapping_add(1);
        let mut message = corpus.sample_request(k);
        message.request_id = uuid::Uuid::now_v7().to_string();
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert(ACTOR_METADATA_KEY, MetadataValue::from_static("bench"));
        let outcome = client.create_ticket(request).await;
        let done = Instant::now();
        let counted = started >= measure_from;
        match outcome.map(|r| r.into_inner().ticket) {
            Ok(Some(ticket)) => {
                let times = CreateTimes {
                    started,
                    answered: done,
                };
                lock(&board).created(ticket.id, side, times, counted);
                if counted {
                    tally.ops += 1;
                    tally.latency.saturating_record(micros(done - started));
                }
            }
            Ok(None) | Err(_) if !counted => {}
            Ok(None) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| "CreateTicket answered without a ticket".to_owned());
            }
            Err(status) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| status.to_string());
            }
        }
        if counted {
            tally.last_done = tally.last_done.max(done);
        }
    }
    Ok((side, tally))
}

// ---------------------------------------------------------------------------------------------
// The report.

fn print_report(plan: &Plan, settings: &ServerSettings, report: &Report) {
    println!("\n## Results\n");
    println!("PostgreSQL: {}", settings.describe());
    println!("load average after the run: {}", load_average());
    println!();
    println!(
        "| run | clients | creates | errors | seconds | creates/s | p50 ms | p99 ms | max ms | cores: load generator / balagh / others (PostgreSQL, pgbench, ...) | machine busy | iowait |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|");
    let rounds = report.pgbench.len().max(report.single.len());
    let round_label = |label: &str, i: usize| {
        if rounds > 1 {
            format!("{label} (round {})", i + 1)
        } else {
            label.to_owned()
        }
    };
    for (i, p) in report.pgbench.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | (mean {:.2}) | | | 0.00 / 0.00 / {:.2} | {:.0}% | {:.0}% |",
            round_label("pgbench: ticket + event, one transaction each", i),
            p.clients,
            group_digits(p.figures.transactions),
            p.figures.failed,
            plan.measure.as_secs_f64(),
            p.figures.tps,
            p.figures.latency_average_ms,
            p.cpu.other_cores,
            p.cpu.machine_busy * 100.0,
            p.cpu.machine_iowait * 100.0,
        );
    }
    let row = |label: &str, m: &Measured, balagh_cores: f64, other_cores: f64| {
        println!(
            "| {label} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} / {:.2} / {:.2} | {:.0}% | {:.0}% |",
            m.clients,
            group_digits(m.ops),
            m.errors,
            m.elapsed.as_secs_f64(),
            m.ops_per_second(),
            m.quantile_ms(0.50),
            m.quantile_ms(0.99),
            m.max_ms(),
            m.cpu.bench_cores,
            balagh_cores,
            other_cores,
            m.cpu.machine_busy * 100.0,
            m.cpu.machine_iowait * 100.0,
        );
    };
    for (i, m) in report.single.iter().enumerate() {
        row(
            &round_label("balagh, one server", i),
            m,
            m.cpu.server_cores,
            m.cpu.other_cores,
        );
    }
    if let Some(r) = &report.replicas {
        // The replicas are other processes: take their share out of "others".
        let others = (r.cpu.other_cores - r.replica_cores).max(0.0);
        row("balagh replica A", &r.sides[0], r.replica_cores, others);
        row("balagh replica B", &r.sides[1], r.replica_cores, others);
        println!(
            "| balagh, two replicas in all | {} | {} | {} | | **{:.0}** | | | | (the two rows above share one measurement) | | |",
            plan.clients / 2 * 2,
            group_digits(r.sides.iter().map(|m| m.ops).sum()),
            r.sides.iter().map(|m| m.errors).sum::<u64>(),
            r.total_per_second(),
        );
    }
    for m in report
        .single
        .iter()
        .chain(report.replicas.iter().flat_map(|r| &r.sides))
    {
        if let Some(error) = &m.first_error {
            println!(
                "{} @{}: {} errors, the first: {error}",
                m.name, m.clients, m.errors
            );
        }
    }

    if let Some(r) = &report.replicas {
        println!("\n### WatchTickets on replica A: create's response -> CREATED message\n");
        println!(
            "| creates made on | deliveries | from the response: p50 ms | p99 ms | max ms | messages before the response | from the call's start: p50 ms | p99 ms |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|");
        for (label, d) in [
            ("replica B (across replicas)", &r.across_replicas),
            ("replica A (the same replica)", &r.same_replica),
        ] {
            println!(
                "| {label} | {} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.2} |",
                group_digits(d.from_response.len()),
                quantile_ms(&d.from_response, 0.50),
                quantile_ms(&d.from_response, 0.99),
                d.from_response.max() as f64 / 1000.0,
                group_digits(d.before_response),
                quantile_ms(&d.from_call, 0.50),
                quantile_ms(&d.from_call, 0.99),
            );
        }
        println!(
            "missing (no message within {} s of the last create): {}",
            DRAIN_LIMIT.as_secs(),
            r.missing
        );
    }

    println!("\n## Against the baseline and the target\n");
    println!(
        "synchronous_commit = {} (read from the server, not set by the tool)",
        settings.synchronous_commit
    );
    let single_rate = median(report.single.iter().map(Measured::ops_per_second));
    let pgbench_rate = median(report.pgbench.iter().map(|p| p.figures.tps));
    let ratios = report.ratios();
    match (median(ratios.iter().copied()), single_rate, pgbench_rate) {
        (Some(ratio), Some(single), Some(pgbench)) => {
            let errors: u64 = report.single.iter().map(|m| m.errors).sum();
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
            println!(
                "target CreateTicket@{} >= {TARGET_RATIO}x pgbench: {} (median of {} round(s): {:.2}x; each round: {}; median rates {:.0}/s against {:.0}/s)",
                plan.clients,
                verdict(ratio >= TARGET_RATIO && errors == 0),
                ratios.len(),
                ratio,
                each.join(", "),
                single,
                pgbench
            );
        }
        _ => println!("target CreateTicket >= {TARGET_RATIO}x pgbench: not measured (run both)"),
    }
    if let Some(r) = &report.replicas {
        if let Some(single) = single_rate {
            println!(
                "two replicas / one server (median): {:.2}x ({:.0}/s against {:.0}/s)",
                r.total_per_second() / single.max(1e-9),
                r.total_per_second(),
                single
            );
        }
        if let Some(pgbench) = pgbench_rate {
            println!(
                "two replicas / pgbench (median): {:.2}x",
                r.total_per_second() / pgbench.max(1e-9)
            );
        }
        println!(
            "delivery across replicas (no target in the issue): p50 {:.1} ms, p99 {:.1} ms from the create's response",
            quantile_ms(&r.across_replicas.from_response, 0.50),
            quantile_ms(&r.across_replicas.from_response, 0.99)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_takes_the_median_of_the_rounds() {
        assert_eq!(median([]), None);
        assert_eq!(median([1.19]), Some(1.19));
        assert_eq!(median([1.9, 1.19, 1.5]), Some(1.5));
        assert_eq!(median([2.0, 1.0, 4.0, 3.0]), Some(2.5));
    }

    /// pgbench 15's summary, as printed for a custom script.
    const PGBENCH_15: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: multiple scripts
scaling factor: 1
query mode: simple
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 20 s
number of transactions actually processed: 41234
number of failed transactions: 0 (0.000%)
latency average = 15.527 ms
initial connection time = 78.479 ms
tps = 2060.918245 (without initial connection time)
SQL script 1: /tmp/create-0.sql
 - weight: 1 (targets 12.5% of total)
 - 5170 transactions (12.5% of total, tps = 258.4)
";

    #[test]
    fn pgbench_summary_is_read() {
        assert_eq!(
            parse_pgbench(PGBENCH_15).expect("parsed"),
            PgbenchFigures {
                transactions: 41_234,
                failed: 0,
                latency_average_ms: 15.527,
                tps: 2060.918245,
            }
        );
    }

    #[test]
    fn pgbench_summary_without_tps_is_an_error() {
        let cut = PGBENCH_15.replace("tps = 2060", "rate = 2060");
        assert!(parse_pgbench(&cut).is_err());
    }

    #[test]
    fn deliveries_are_matched_to_creates_in_either_order() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut board = DeliveryBoard::default();
        let times = |started, answered| CreateTimes {
            started: at(started),
            answered: at(answered),
        };
        // The usual order: the response, then the message.
        board.created("a".into(), Side::B, times(0, 10), true);
        board.delivered("a".into(), at(13));
        // The message first: 0 from the response, still timed from the call's start.
        board.delivered("b".into(), at(9));
        board.created("b".into(), Side::B, times(1, 10), true);
        // A warm-up create is matched but not counted; a counted one never delivered is missing.
        board.created("c".into(), Side::A, times(0, 5), false);
        board.delivered("c".into(), at(6));
        board.created("d".into(), Side::A, times(0, 5), true);

        let across = &board.across_replicas;
        assert_eq!(across.from_response, vec![3_000, 1]);
        assert_eq!(across.from_call, vec![13_000, 8_000]);
        assert_eq!(across.before_response, 1);
        assert!(board.same_replica.from_response.is_empty());
        assert_eq!(board.missing(), 1);
        assert_eq!(board.undelivered(), 1);
    }

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn a_pgbench_script_writes_a_ticket_and_its_event_in_one_transaction() {
        let corpus = Corpus::from_catalog(&CatalogData::default_catalog().expect("catalog"))
            .expect("corpus");
        let script = pgbench_script(&corpus, 3).expect("script");
        let lines: Vec<&str> = script.lines().filter(|l| !l.starts_with("--")).collect();
        assert_eq!(lines.len(), 4, "{script}");
        assert_eq!(lines[0], "BEGIN;");
        assert!(lines[1].starts_with("INSERT INTO tickets ") && lines[1].ends_with("\\gset"));
        assert!(
            lines[2].starts_with("INSERT INTO ticket_events ") && lines[2].contains(":ticket_id")
        );
        assert_eq!(lines[3], "END;");
    }
}
