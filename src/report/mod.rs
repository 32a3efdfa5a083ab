//! `balagh report --year YYYY`: the yearly statistics as one self-contained HTML page, the
//! year beside the year before and against its KPI targets, in Arabic (right to left) and in
//! English.
//!
//! How it fits together:
//! - [`generate`] opens nothing itself: given a store and the SLA runtime, it brings the SLA
//!   projection up to date (as `ReportingService` does before it reads, so every change
//!   committed before the call is counted), then counts each Muscat month of the year and of
//!   the year before with `Store::tally_ticket_facts` (each fact read once, counted as it is
//!   read, never all in memory) and merges the months into the years
//!   ([`figures::YearFigures::from_months`]).
//! - [`html::render`] turns the figures into the page; [`chart`] draws its SVG charts and
//!   [`locale`] writes its words and numbers. The figures know nothing of HTML and the page
//!   reads nothing from the store.
//! - [`run`] is the command: it opens the store the way `serve` does (`--database-url`,
//!   `BALAGH_DATABASE_URL`, `--config`, or the default SQLite file), refuses to create a
//!   database that does not exist, and writes the page atomically (a temporary file renamed
//!   over `--out`), so a failed run leaves no half-written report.
//!
//! Architecture invariant: the report is computed from the same facts and the same
//! [`crate::domain::kpi`] definitions as `ReportingService.GetKpis`, so a figure on the page
//! is the figure the API gives for the same year.

pub mod chart;
pub mod figures;
pub mod html;
pub mod locale;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, ServeArgs};
use crate::domain::Timestamp;
use crate::domain::calendar::BusinessCalendar;
use crate::sla::{SlaError, SlaRuntime};
use crate::store::{Store, StoreError};
use figures::{YearFigures, YearlyFigures, month_tally, months_of, year_as_of};
pub use locale::Lang;

/// The years a report can be made for (the same bounds as a KPI query's year).
pub const MIN_YEAR: i32 = 2000;
pub const MAX_YEAR: i32 = 2100;

/// A year a report can be made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportYear(i32);

impl ReportYear {
    pub fn parse(year: i32) -> Result<Self, ReportError> {
        if (MIN_YEAR..=MAX_YEAR).contains(&year) {
            Ok(Self(year))
        } else {
            Err(ReportError::YearOutOfRange(year))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl std::str::FromStr for ReportYear {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let year: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a year like 2026"))?;
        ReportYear::parse(year).map_err(|e| e.to_string())
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the year must be from {MIN_YEAR} to {MAX_YEAR}, not {0}")]
    YearOutOfRange(i32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot bring the SLA projection up to date")]
    Sla(#[from] SlaError),
    #[error("the computation was interrupted (the process is stopping)")]
    Interrupted,
}

/// Which languages the page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Languages {
    /// Arabic first, then English: one page, `lang="ar" dir="rtl"`, with an English article.
    #[default]
    Both,
    /// Arabic only.
    Ar,
    /// English only (the page is then `lang="en" dir="ltr"`).
    En,
}

impl Languages {
    pub fn list(self) -> &'static [Lang] {
        match self {
            Languages::Both => &[Lang::Ar, Lang::En],
            Languages::Ar => &[Lang::Ar],
            Languages::En => &[Lang::En],
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The Muscat calendar year to report on, 2000 to 2100.
    #[arg(long)]
    pub year: ReportYear,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB (default: the one `serve`
    /// uses, sqlite://data/balagh.db).
    #[arg(long, env = "BALAGH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML file with the remaining settings, as `serve` reads it (its database_url and
    /// store tuning).
    #[arg(long, env = "BALAGH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to write the page (default: balagh-report-YYYY.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The languages of the page.
    #[arg(long, value_enum, default_value_t = Languages::Both)]
    pub lang: Languages,
}

/// The report's figures of `year` as the store holds them now: the projection is brought up
/// to date first, then each year's facts are counted as they are read, once.
pub async fn generate(
    store: &Arc<dyn Store>,
    sla: &SlaRuntime,
    year: ReportYear,
) -> Result<YearlyFigures, ReportError> {
    sla.follow().await?;
    let calendar = Arc::new(sla.config().calendar.clone());
    let now = sla.now();
    let (targets, catalog) = tokio::try_join!(
        async {
            crate::kpi_targets::kpi_targets(store.as_ref())
                .await
                .map(|(_, targets)| targets)
        },
        store.catalog(),
    )?;
    let previous = year_figures(store, &calendar, year.get() - 1, now).await?;
    let current = year_figures(store, &calendar, year.get(), now).await?;
    Ok(YearlyFigures::assemble(
        current, previous, now, &targets, &catalog,
    ))
}

/// One year's figures: each Muscat month's facts counted into its tally as the store reads
/// them (one read of each fact), the tallies merged into the year's.
async fn year_figures(
    store: &Arc<dyn Store>,
    calendar: &Arc<BusinessCalendar>,
    year: i32,
    now: Timestamp,
) -> Result<YearFigures, ReportError> {
    let started = std::time::Instant::now();
    let as_of = year_as_of(year, now);
    let mut months = Vec::with_capacity(12);
    for (from, to) in months_of(year) {
        let tally = month_tally(as_of, calendar.clone());
        months.push(store.tally_ticket_facts(from, to, tally).await?);
    }
    let read = started.elapsed();
    // Sorting the durations of a busy year takes a while: off the async runtime.
    let figures =
        tokio::task::spawn_blocking(move || YearFigures::from_months(year, as_of, months))
            .await
            .map_err(|e| match e.try_into_panic() {
                // A panic while computing is a bug: pass it on rather than report a half year.
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => ReportError::Interrupted,
            })?;
    tracing::debug!(
        year,
        n_tickets = figures.all.n_tickets,
        read_seconds = read.as_secs_f64(),
        finish_seconds = (started.elapsed() - read).as_secs_f64(),
        "report: a year's facts counted"
    );
    Ok(figures)
}

/// The whole page for `year`.
pub async fn render_report(
    store: &Arc<dyn Store>,
    sla: &SlaRuntime,
    year: ReportYear,
    languages: Languages,
) -> Result<(String, YearlyFigures), ReportError> {
    let figures = generate(store, sla, year).await?;
    Ok((html::render(&figures, languages.list()), figures))
}

/// What [`run`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    pub n_tickets: u64,
    pub n_tickets_previous_year: u64,
    pub bytes: usize,
}

/// `balagh report`: opens the store, writes the page, and says where.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let written = write_report(&args, Arc::new(crate::domain::SystemClock)).await?;
    println!(
        "balagh report {}: {} tickets ({} the year before), written to {} ({} KB)",
        args.year.get(),
        written.n_tickets,
        written.n_tickets_previous_year,
        written.path.display(),
        written.bytes.div_ceil(1024)
    );
    Ok(())
}

/// The command's work on a given clock: resolve the database as `serve` does, check the
/// output can be written before reading anything, generate, write atomically.
pub async fn write_report(
    args: &ReportArgs,
    clock: Arc<dyn crate::domain::Clock>,
) -> anyhow::Result<Written> {
    let config = Config::resolve(&ServeArgs {
        database_url: args.database_url.clone(),
        config: args.config.clone(),
        ..ServeArgs::default()
    })?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("balagh-report-{}.html", args.year.get())));
    // Fail on an unwritable output before the (long) read of a year's facts.
    let staging = Staging::create(&out)?;
    refuse_missing_sqlite(&config.database_url)?;
    let store = config.open_store(clock.clone()).await.with_context(|| {
        format!(
            "cannot open the database {}",
            redacted(&config.database_url)
        )
    })?;
    let outcome = async {
        let sla = SlaRuntime::open(store.clone(), clock)
            .await
            .context("cannot load the business calendar and SLA settings")?;
        render_report(&store, &sla, args.year, args.lang)
            .await
            .with_context(|| format!("cannot compute the report of {}", args.year.get()))
    }
    .await;
    store.close().await;
    let (page, figures) = outcome?;
    staging.commit(page.as_bytes())?;
    Ok(Written {
        path: out,
        n_tickets: figures.current.all.n_tickets,
        n_tickets_previous_year: figures.previous.all.n_tickets,
        bytes: page.len(),
    })
}

/// A report must not create an empty database where none was: with a missing SQLite file
/// the store would make one and the page would show an empty year.
fn refuse_missing_sqlite(url: &str) -> anyhow::Result<()> {
    if !url.starts_with("sqlite:") {
        return Ok(());
    }
    let options: sqlx::sqlite::SqliteConnectOptions = url
        .parse()
        .with_context(|| format!("{url:?} is not a SQLite URL"))?;
    let file = options.get_filename();
    if file.as_os_str() != ":memory:" && !file.exists() {
        anyhow::bail!(
            "no database at {} (give --database-url, or run `balagh serve` first)",
            file.display()
        );
    }
    Ok(())
}

/// A database URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The temporary file the page is written to, renamed over the output once complete.
struct Staging {
    temp: PathBuf,
    out: PathBuf,
}

impl Staging {
    fn create(out: &Path) -> anyhow::Result<Staging> {
        let name = out
            .file_name()
            .with_context(|| format!("--out {} names no file", out.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = out.with_file_name(temp_name);
        std::fs::File::create(&temp)
            .with_context(|| format!("cannot write the report to {}", out.display()))?;
        Ok(Staging {
            temp,
            out: out.to_owned(),
        })
    }

    fn commit(self, bytes: &[u8]) -> anyhow::Result<()> {
        std::fs::write(&self.temp, bytes)
            .and_then(|()| std::fs::rename(&self.temp, &self.out))
            .with_context(|| format!("cannot write the report to {}", self.out.display()))
        // On failure, Drop removes the temporary file.
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // After a successful rename there is nothing left to remove.
        let _ = std::fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_years_are_bounded() {
        assert_eq!(
            ReportYear::parse(2026).map(ReportYear::get).ok(),
            Some(2026)
        );
        assert!(matches!(
            ReportYear::parse(1999),
            Err(ReportError::YearOutOfRange(1999))
        ));
        assert!("2101".parse::<ReportYear>().is_err());
        let message = "twenty".parse::<ReportYear>().expect_err("not a year");
        assert!(message.contains("not a year"), "{message}");
        let months = months_of(2026);
        assert_eq!(months[0].0.muscat_year(), 2026);
        assert_eq!(months[11].1.muscat_year(), 2027);
        assert_eq!(months_of(2025)[11].1, months[0].0, "the years meet");
    }

    #[test]
    fn report_database_passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("postgres://balagh:secret@db.example.om/balagh"),
            "postgres://balagh@db.example.om/balagh"
        );
        assert_eq!(
            redacted("sqlite://data/balagh.db"),
            "sqlite://data/balagh.db"
        );
    }

    #[test]
    fn report_refuses_a_missing_sqlite_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("none.db").display());
        let error = refuse_missing_sqlite(&url).expect_err("missing");
        assert!(error.to_string().contains("no database at"), "{error}");
        assert!(!dir.path().join("none.db").exists());
        assert!(refuse_missing_sqlite("postgres://x@localhost/db").is_ok());
    }
}
