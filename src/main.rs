//! `balagh`: config, telemetry, the application, and a wait for a signal (then the last
//! spans are flushed). Nothing else.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use balagh::app::Application;
use balagh::config::{Config, LogFormat, ServeArgs};

/// mimalloc for every allocation of the process: Rust's through this, C's (SQLite's) through
/// the crate's `override` feature, which replaces `malloc` (docs/benchmarks.md, "The
/// allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "balagh",
    version,
    about = "Muscat Municipality's ticket registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Follow tickets live and print each change; resumes from the cursor file after a restart.
    Watch(balagh::watch_client::WatchArgs),
    /// Drive a real server over gRPC and report throughput and latency (docs/benchmarks.md).
    Bench(balagh::bench::BenchArgs),
    /// Many live WatchTickets streams on a server process while tickets are created: delivery
    /// latency, memory per stream and the watchers' cost to creates (docs/benchmarks.md).
    BenchWatch(balagh::bench_watch::BenchWatchArgs),
    /// CreateTicket on PostgreSQL next to pgbench writing the same rows, and two replicas on one
    /// database: total creates and watch delivery across replicas (docs/benchmarks.md).
    BenchPg(balagh::bench_pg::BenchPgArgs),
    /// The sync worker's push drain and pull apply rates against the platform simulator, with
    /// and without faults, next to the raw platform call rate (docs/benchmarks.md).
    BenchSync(balagh::bench_sync::BenchSyncArgs),
    /// The escalation scheduler's sweep over many open tickets, next to the raw read rate
    /// (docs/benchmarks.md).
    BenchSla(balagh::bench_sla::BenchSlaArgs),
    /// The yearly statistics as one self-contained HTML page, Arabic and English, the year
    /// beside the year before and against its KPI targets (docs/reporting.md).
    Report(balagh::report::ReportArgs),
    /// A SIMULATOR of the national platform over HTTP, with faults on a fixed seed and
    /// simulated citizens (docs/platform-api.md). Never the real platform.
    PlatformSim(balagh::platform::simulator::SimArgs),
    /// Print the table of which role may call which RPC, as docs/security.md shows it.
    AccessTable,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::AccessTable => {
            print!("{}", balagh::auth::policy::markdown_table());
            Ok(())
        }
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            let telemetry =
                balagh::telemetry::init_with_traces(config.log_format, config.traces.as_ref())?;
            let app = Application::build(config).await?;
            // Tests and scripts read the real address from this first line of stdout.
            match app.local_addr() {
                Some(address) => println!("balagh listening on {address}"),
                None => println!("balagh running without gRPC"),
            }
            let shutdown = CancellationToken::new();
            balagh::shutdown::cancel_on_signal(shutdown.clone());
            let stopped = app.run_until_stopped(shutdown).await;
            // The spans of the last calls are still buffered.
            telemetry.shutdown().await;
            stopped
        }
        Command::Watch(args) => balagh::watch_client::run(args).await,
        Command::Bench(args) => {
            balagh::telemetry::init_with_default(LogFormat::Text, "warn");
            balagh::bench::run(args).await.context("bench failed")
        }
        Command::BenchWatch(args) => {
            balagh::telemetry::init(LogFormat::Text);
            balagh::bench_watch::run(args)
                .await
                .context("bench-watch failed")
        }
        Command::BenchPg(args) => {
            balagh::telemetry::init_with_default(LogFormat::Text, "warn");
            balagh::bench_pg::run(args).await.context("bench-pg failed")
        }
        Command::BenchSync(args) => {
            balagh::telemetry::init_with_default(LogFormat::Text, "error");
            balagh::bench_sync::run(args)
                .await
                .context("bench-sync failed")
        }
        Command::BenchSla(args) => {
            balagh::telemetry::init_with_default(LogFormat::Text, "error");
            balagh::bench_sla::run(args)
                .await
                .context("bench-sla failed")
        }
        Command::Report(args) => {
            balagh::telemetry::init_with_default(LogFormat::Text, "warn");
            balagh::report::run(args).await.context("report failed")
        }
        Command::PlatformSim(args) => {
            balagh::telemetry::init(args.log_format);
            balagh::platform::simulator::run(args)
                .await
                .context("platform-sim failed")
        }
    }
}
