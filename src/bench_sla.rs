//! `balagh bench-sla`: the escalation scheduler's sweep over many open tickets, next to a
//! baseline measured in the same run.
//!
//! On a fresh SQLite file under the system temp directory, or with `--database-url` on a
//! scratch database of that PostgreSQL server (both removed at the end), with the default
//! calendar and SLA settings and a clock the bench moves:
//! 1. `--tickets` open tickets are filed over 100 minutes of a Sunday morning (100 waves),
//!    so their deadlines are spread the way a working morning spreads them;
//! 2. baseline: every open ticket read once, in pages of 500 (the raw read rate);
//! 3. projection rebuild: the first sweep replays every open ticket's history (what a
//!    calendar or settings change costs);
//! 4. idle sweep: a sweep with nothing due, the scheduler's steady state (target: under 1 s
//!    with 100,000 open tickets);
//! 5. alert sweep: the clock passes the first-response warning of the first wave, so one
//!    ticket in a hundred has a warning to record;
//! 6. KPIs of the year, grouped by directorate and by category, over the ticket facts the
//!    projection keeps (ReportingService.GetKpis without the gRPC round trip);
//! 7. the yearly report of that year, as `balagh report` makes it: the projection brought up
//!    to date, each month of the year and of the year before counted as its facts are read
//!    (each fact once), the HTML page (both languages) rendered and written to the scratch
//!    folder.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;

use crate::domain::filter::TicketFilter;
use crate::domain::kpi::{KpiGrouping, KpiTally};
use crate::domain::ticket::{Channel, Location, NewTicket, Reporter, TicketType};
use crate::domain::values::{Code, PhoneNumber};
use crate::domain::{ManualClock, Timestamp};
use crate::report::{Languages, ReportYear, render_report};
use crate::sla::{OPEN_STATUSES, SlaRuntime};
use crate::store::{Store, TicketQuery, WriteContext, open_store};

#[derive(Debug, clap::Args)]
pub struct BenchSlaArgs {
    /// Open tickets in the registry.
    #[arg(long, default_value_t = 100_000)]
    pub tickets: u64,
    /// Creates in flight at once while filling the registry.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// A PostgreSQL server to run on instead of a scratch SQLite file, for example
    /// `postgres://postgres@127.0.0.1:5432/postgres`: the bench creates a scratch database
    /// there (`balagh_bench_<pid>_sla`) and drops it at the end.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Sunday 2026-11-29 07:30 in Muscat, the start of the default calendar's working day.
const SUNDAY_MORNING: i64 = 1_795_923_000_000_000;
const MINUTE: i64 = 60_000_000;
const WAVES: u64 = 100;

struct Run {
    name: &'static str,
    n: u64,
    seconds: f64,
    note: String,
    /// The run's target at 1,000,000 tickets, in seconds, if it has one.
    target_at_1m: Option<f64>,
}

pub async fn run(args: BenchSlaArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("bench-sla: a debug build; its figures are meaningless (use --release)");
    }
    let dir = std::env::temp_dir().join(format!(
        "balagh-bench-sla-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).context("cannot create the scratch folder")?;
    let outcome = match &args.database_url {
        Some(server) => {
            let mut scratch = crate::bench_pg::ScratchDatabases::new(server);
            let outcome = match scratch.create("sla").await {
                Ok(url) => bench(&args, &dir, &url).await,
                Err(error) => Err(error),
            };
            scratch.drop_all().await;
            outcome
        }
        None => {
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            bench(&args, &dir, &url).await
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn bench(args: &BenchSlaArgs, dir: &std::path::Path, url: &str) -> anyhow::Result<()> {
    let clock = ManualClock::new(Timestamp::from_micros(SUNDAY_MORNING));
    let backend = if url.starts_with("sqlite:") {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    eprintln!("bench-sla: on {backend}");
    let store = open_store(
        url,
        256,
        4096,
        4,
        crate::domain::sync::SyncPolicy::default(),
        Arc::new(clock.clone()),
    )
    .await?;
    let sla = SlaRuntime::open(store.clone(), Arc::new(clock.clone())).await?;

    let started = Instant::now();
    let per_wave = args.tickets.div_ceil(WAVES);
    let mut filed = 0;
    for wave in 0..WAVES {
        clock.set(at_minute(wave as i64));
        let n = per_wave.min(args.tickets - filed);
        file_tickets(&store, n, args.concurrency).await?;
        filed += n;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    eprintln!("bench-sla: {filed} tickets filed in {fill_seconds:.1} s");

    let mut runs = Vec::new();
    // Baseline: every open ticket read once.
    let started = Instant::now();
    let read = read_all_open(&store).await?;
    runs.push(Run {
        name: "baseline: read every open ticket (pages of 500)",
        n: read,
        seconds: started.elapsed().as_secs_f64(),
        note: String::new(),
        target_at_1m: None,
    });

    // Minute 89: no warning is due yet (the first wave's comes at minute 90).
    clock.set(at_minute(89));
    let started = Instant::now();
    let rebuild = sla.sweep().await?;
    runs.push(Run {
        name: "projection rebuild (first sweep)",
        n: u64::from(rebuild.tickets_recomputed),
        seconds: started.elapsed().as_secs_f64(),
        note: format!("{} alerts", rebuild.warnings + rebuild.breaches),
        target_at_1m: None,
    });
    let started = Instant::now();
    let idle = sla.sweep().await?;
    runs.push(Run {
        name: "idle sweep (nothing due)",
        n: filed,
        seconds: started.elapsed().as_secs_f64(),
        note: format!(
            "{} recomputed, {} alerts",
            idle.tickets_recomputed,
            idle.warnings + idle.breaches
        ),
        target_at_1m: None,
    });
    clock.set(at_minute(90));
    let started = Instant::now();
    let alerts = sla.sweep().await?;
    runs.push(Run {
        name: "alert sweep (first wave's warnings due)",
        n: u64::from(alerts.warnings + alerts.breaches),
        seconds: started.elapsed().as_secs_f64(),
        note: format!(
            "{} warnings, {} breaches, {} escalations",
            alerts.warnings, alerts.breaches, alerts.escalations
        ),
        target_at_1m: None,
    });
    let started = Instant::now();
    let after = sla.sweep().await?;
    runs.push(Run {
        name: "the next sweep (follows the alerts' events)",
        n: u64::from(after.tickets_recomputed),
        seconds: started.elapsed().as_secs_f64(),
        note: format!("{} alerts", after.warnings + after.breaches),
        target_at_1m: None,
    });
    // KPIs of the year so far, grouped by directorate and by category: read the facts the
    // projection keeps, aggregate them (what ReportingService.GetKpis does).
    let year_start = Timestamp::from_micros(SUNDAY_MORNING - 365 * 24 * 60 * MINUTE);
    let year_end = at_minute(24 * 60);
    let calendar = Arc::new(sla.config().calendar.clone());
    for (name, grouping) in [
        ("KPIs of the year by directorate", KpiGrouping::Directorate),
        ("KPIs of the year by category", KpiGrouping::Category),
    ] {
        let started = Instant::now();
        let tally = KpiTally::new(&[grouping], at_minute(90), calendar.clone());
        let groups = store
            .tally_ticket_facts(year_start, year_end, tally)
            .await?
            .finish()
            .pop()
            .unwrap_or_default();
        runs.push(Run {
            name,
            n: groups.values().map(|f| f.n_tickets).sum(),
            seconds: started.elapsed().as_secs_f64(),
            note: format!("{} groups", groups.len()),
            target_at_1m: Some(1.0),
        });
    }
    // The yearly report of the year the tickets were filed in.
    let year = ReportYear::parse(at_minute(0).muscat_year())?;
    let started = Instant::now();
    let (page, figures) = render_report(&store, &sla, year, Languages::Both).await?;
    std::fs::write(dir.join("report.html"), &page).context("cannot write the report")?;
    runs.push(Run {
        name: "yearly report",
        n: figures.current.all.n_tickets,
        seconds: started.elapsed().as_secs_f64(),
        note: format!("{} KB of HTML", page.len().div_ceil(1024)),
        target_at_1m: Some(10.0),
    });
    store.close().await;
    print_report(args, &runs);
    Ok(())
}

fn at_minute(minute: i64) -> Timestamp {
    Timestamp::from_micros(SUNDAY_MORNING + minute * MINUTE)
}

async fn file_tickets(store: &Arc<dyn Store>, n: u64, concurrency: usize) -> anyhow::Result<()> {
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| {
            let store = store.clone();
            async move {
                store
                    .create_ticket(
                        WriteContext {
                            actor: "bench".into(),
                            request: None,
                            reach: None,
                        },
                        pothole(),
                    )
                    .await
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    for result in results {
        result.context("create ticket")?;
    }
    Ok(())
}

async fn read_all_open(store: &Arc<dyn Store>) -> anyhow::Result<u64> {
    let mut query = TicketQuery {
        filter: TicketFilter {
            statuses: OPEN_STATUSES.to_vec(),
            ..TicketFilter::default()
        },
        limit: 500,
        ..TicketQuery::default()
    };
    let mut n = 0;
    loop {
        let page = store.list_tickets(&query).await?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        query.before_position = Some(last.position);
        n += page.len() as u64;
    }
}

fn pothole() -> NewTicket {
    NewTicket {
        ticket_type: TicketType::Report,
        channel: Channel::ContactCentre,
        category: Code::parse("category", "pothole").expect("a valid code"),
        priority: None,
        subject: "حفرة في الطريق".into(),
        description: "حفرة عميقة أمام المدرسة".into(),
        reporter: Reporter::identified(
            "reporter",
            "Bench Citizen".into(),
            Some(PhoneNumber::parse("phone", "99000000").expect("a valid phone")),
            None,
            None,
        )
        .expect("a valid reporter"),
        location: Location {
            wilayat: Some(Code::parse("wilayat", "bawshar").expect("a valid code")),
            area: None,
            point: None,
        },
        attachments: Vec::new(),
    }
}

fn print_report(args: &BenchSlaArgs, runs: &[Run]) {
    println!(
        "bench-sla: {} open tickets on {}, {} cores",
        args.tickets,
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("| run | items | seconds | items/s | notes |");
    println!("|---|--:|--:|--:|---|");
    for r in runs {
        println!(
            "| {} | {} | {:.3} | {:.0} | {} |",
            r.name,
            r.n,
            r.seconds,
            r.n as f64 / r.seconds.max(1e-9),
            r.note
        );
    }
    let base = runs[0].seconds;
    let idle = &runs[2];
    println!();
    println!(
        "idle sweep over {} open tickets: {:.3} s ({:.3}x the time to read them all once); target < 1 s: {}",
        args.tickets,
        idle.seconds,
        idle.seconds / base.max(1e-9),
        if idle.seconds < 1.0 { "met" } else { "not met" }
    );
    println!(
        "alert sweep: {} alerts in {:.3} s; target < 1 s: {}",
        runs[3].n,
        runs[3].seconds,
        if runs[3].seconds < 1.0 {
            "met"
        } else {
            "not met"
        }
    );
    for (run, target) in runs.iter().filter_map(|r| r.target_at_1m.map(|t| (r, t))) {
        println!(
            "{}: {} tickets' facts in {:.3} s; target < {target} s (at 1,000,000 tickets): {}",
            run.name,
            run.n,
            run.seconds,
            if run.n >= 1_000_000 && run.seconds < target {
                "met"
            } else if run.n >= 1_000_000 {
                "not met"
            } else {
                "not measured at that size"
            }
        );
    }
    println!(
        "projection rebuild: {:.0} tickets/s ({:.2}x the raw read rate)",
        runs[1].n as f64 / runs[1].seconds.max(1e-9),
        (runs[1].n as f64 / runs[1].seconds.max(1e-9))
            / (runs[0].n as f64 / runs[0].seconds.max(1e-9))
    );
}
