//! `balagh report --year YYYY` end to end: a small fixed data set of two years created
//! through the real gRPC API on a clock the test moves, the report computed by the library
//! function the command runs and by the binary itself, and the page checked for the
//! hand-computed figures, its direction, its escaping and its English part; then the page
//! rendered in headless Chromium and the screenshot checked for ink where each language puts
//! its title.
//!
//! Runs on SQLite, or on PostgreSQL with `BALAGH_TEST_BACKEND=postgres`. The Chromium test
//! needs `chromium` on PATH: without it the test says SKIPPED and passes, unless
//! `BALAGH_REQUIRE_CHROMIUM=1` (set by `.ci/run`), where it fails. With
//! `BALAGH_REPORT_SCREENSHOT_DIR=DIR` it also keeps its pages and screenshots there.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use balagh::domain::{ManualClock, Timestamp};
use balagh::grpc::proto;
use balagh::grpc::proto::catalog_service_client::CatalogServiceClient;
use balagh::grpc::proto::quality_service_client::QualityServiceClient;
use balagh::grpc::proto::reporting_service_client::ReportingServiceClient;
use balagh::grpc::proto::sla_service_client::SlaServiceClient;
use balagh::report::{Languages, ReportArgs, ReportYear, write_report};
use common::{
    TestApp, TestDb, assign, create, pothole_report, rate, resolve, spawn_app_with, start_work,
};

/// `hour:minute` on a day in Muscat.
fn muscat(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> Timestamp {
    let local = chrono::NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_opt(hour, minute, 0))
        .expect("a valid date");
    Timestamp::from_micros(local.and_utc().timestamp_micros() - 4 * 3_600_000_000)
}

fn later(t: Timestamp, minutes: i64) -> Timestamp {
    Timestamp::from_micros(t.as_micros() + minutes * 60_000_000)
}

/// A category whose names hold markup, to see it escaped.
const PAVEMENTS_AR: &str = "أرصفة <وممرات>";
const PAVEMENTS_EN: &str = "Pavements <& kerbs>";

fn ticket(ticket_type: proto::TicketType, category: &str) -> proto::CreateTicketRequest {
    proto::CreateTicketRequest {
        r#type: ticket_type.into(),
        category: category.into(),
        ..pothole_report()
    }
}

/// The data set, on Sunday to Thursday 08:00-15:00, first response 60 and resolution 420
/// business minutes:
///
/// | ticket | created | type, category, directorate | first response | resolution |
/// |---|---|---|---|---|
/// | P1 | Sun 5 Jan 2025 08:00 | report, pothole, roads | 30 min, met | 1 h, met |
/// | P2 | Sun 5 Jan 2025 08:00 | complaint, pothole, roads | 2 h, late | 5 h, met |
/// | A | Sun 4 Jan 2026 08:00 | report, pothole, roads | 30 min, met | 2 h, met; rated 5; quality 75 |
/// | B | Sun 4 Jan 2026 08:00 | report, pothole, roads | 2 h, late | 3 h, met; rated 2 |
/// | C | Sun 4 Jan 2026 08:00 | complaint, pavements, parks (line 2) | 30 min, met | Mon 10:00: 9 h, late |
/// | D | Sun 1 Mar 2026 08:00 | inquiry, general_inquiry, contact centre | comment at 10 min, met | 20 min, met; rated 4 |
/// | E | Sun 1 Mar 2026 08:00 | suggestion, service_improvement | none, late | none, late |
///
/// Targets: 2026 first responses in time at least 80% (not met: 60%), satisfaction at least
/// 3.5 (met: 3.67), roads' median resolution at most 4 h (met: 2 h); 2027 resolutions in
/// time at least 90%. The report is made on Sunday 10 January 2027, after a sweep recorded
/// E's breaches.
async fn build_data_set(db: &Arc<TestDb>, clock: &ManualClock) {
    use proto::SupportLine::{First, Second};
    use proto::TicketType::{Complaint, Inquiry, Report, Suggestion};
    clock.set(muscat(2025, 1, 1, 8, 0));
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let mut sla = SlaServiceClient::new(app.channel.clone());
    common::sla::replace_calendar_and_settings(
        &mut sla,
        common::sla::working_week("08:00-15:00"),
        common::sla::one_policy(60, 0, 420, &[]),
    )
    .await;
    CatalogServiceClient::new(app.channel.clone())
        .upsert_category(proto::UpsertCategoryRequest {
            category: Some(proto::Category {
                code: "pavements".into(),
                name_ar: PAVEMENTS_AR.into(),
                name_en: PAVEMENTS_EN.into(),
                default_directorate_code: "parks".into(),
                default_priority: proto::Priority::Normal.into(),
                sla_policy_code: "standard".into(),
                active: true,
            }),
            request_id: String::new(),
        })
        .await
        .expect("category");
    set_targets(&mut app).await;

    let t = muscat(2025, 1, 5, 8, 0);
    clock.set(t);
    let p1 = create(&mut app, ticket(Report, "pothole")).await.id;
    let p2 = create(&mut app, ticket(Complaint, "pothole")).await.id;
    assign(&mut app, &p1, "roads", First).await;
    assign(&mut app, &p2, "roads", First).await;
    clock.set(later(t, 30));
    start_work(&mut app, &p1).await;
    clock.set(later(t, 60));
    resolve(&mut app, &p1).await;
    clock.set(later(t, 120));
    start_work(&mut app, &p2).await;
    clock.set(later(t, 300));
    resolve(&mut app, &p2).await;

    let t = muscat(2026, 1, 4, 8, 0);
    clock.set(t);
    let a = create(&mut app, ticket(Report, "pothole")).await.id;
    let b = create(&mut app, ticket(Report, "pothole")).await.id;
    let c = create(&mut app, ticket(Complaint, "pavements")).await.id;
    app.tickets
        .assign_ticket(proto::AssignTicketRequest {
            ticket_id: a.clone(),
            directorate: "roads".into(),
            assignee: "emp-017".into(),
            support_line: First.into(),
            ..Default::default()
        })
        .await
        .expect("assign");
    assign(&mut app, &b, "roads", First).await;
    assign(&mut app, &c, "parks", Second).await;
    clock.set(later(t, 30));
    start_work(&mut app, &a).await;
    start_work(&mut app, &c).await;
    clock.set(later(t, 120));
    start_work(&mut app, &b).await;
    resolve(&mut app, &a).await;
    // A supervisor reviews emp-017's handling of A: 4 of 5 on every criterion, 75 of 100.
    let criterion = |code: &str| proto::CriterionScore {
        criterion: code.into(),
        score: 4,
        ..Default::default()
    };
    QualityServiceClient::new(app.channel.clone())
        .record_quality_review(proto::RecordQualityReviewRequest {
            ticket_id: a.clone(),
            employee_id: "emp-017".into(),
            scores: ["accuracy", "completeness", "courtesy", "timeliness"]
                .map(criterion)
                .to_vec(),
            note: String::new(),
            request_id: String::new(),
        })
        .await
        .expect("quality review");
    clock.set(later(t, 180));
    resolve(&mut app, &b).await;
    // Monday 10:00: seven business hours on Sunday and two on Monday.
    clock.set(later(t, 26 * 60));
    resolve(&mut app, &c).await;

    let t = muscat(2026, 3, 1, 8, 0);
    clock.set(t);
    let d = create(&mut app, ticket(Inquiry, "general_inquiry"))
        .await
        .id;
    create(&mut app, ticket(Suggestion, "service_improvement")).await;
    assign(&mut app, &d, "contact_centre", First).await;
    clock.set(later(t, 10));
    app.tickets
        .add_comment(proto::AddCommentRequest {
            ticket_id: d.clone(),
            text: "المعلومات المطلوبة في الموقع".into(),
            visibility: proto::CommentVisibility::Public.into(),
            ..Default::default()
        })
        .await
        .expect("comment");
    clock.set(later(t, 20));
    resolve(&mut app, &d).await;

    // A sweep long after: E's deadlines have passed and are recorded as breaches.
    clock.set(muscat(2027, 1, 10, 8, 0));
    sla.run_escalation_sweep(proto::RunEscalationSweepRequest {})
        .await
        .expect("sweep");
    app.stop().await;
    rate(db, clock, &[(&a, 5), (&b, 2), (&d, 4)]).await;
}

async fn set_targets(app: &mut TestApp) {
    let target = |year: i32, scope: &str, kpi: &str, value: f64| proto::KpiTarget {
        year,
        scope: scope.into(),
        kpi: kpi.into(),
        target: value,
    };
    ReportingServiceClient::new(app.channel.clone())
        .update_kpi_targets(proto::UpdateKpiTargetsRequest {
            targets: Some(proto::KpiTargets {
                targets: vec![
                    target(2026, "all", "first_response_compliance_percent", 80.0),
                    target(2026, "all", "satisfaction_average", 3.5),
                    target(2026, "directorate:roads", "resolution_hours_median", 4.0),
                    target(2027, "all", "resolution_compliance_percent", 90.0),
                ],
                ..Default::default()
            }),
            etag: "\"0\"".into(),
            request_id: String::new(),
        })
        .await
        .expect("targets");
}

fn args(db: &TestDb, year: i32, out: &Path) -> ReportArgs {
    ReportArgs {
        year: ReportYear::parse(year).expect("year"),
        database_url: Some(db.url.clone()),
        config: None,
        out: Some(out.to_owned()),
        lang: Languages::Both,
    }
}

/// The texts of the cells of the row headed `header` in the table `table_id`.
#[track_caller]
fn row(html: &str, table_id: &str, header: &str) -> Vec<String> {
    let table_start = html
        .find(&format!("<table id=\"{table_id}\">"))
        .unwrap_or_else(|| panic!("no table {table_id}"));
    let table = &html[table_start..];
    let table = &table[..table.find("</table>").expect("table end")];
    let head = format!("<th scope=\"row\">{header}</th>");
    let start = table
        .find(&head)
        .unwrap_or_else(|| panic!("no row {header} in {table_id}:\n{table}"));
    let row = &table[start + head.len()..];
    let row = &row[..row.find("</tr>").expect("row end")];
    row.split("</td>")
        .filter_map(|cell| cell.rsplit_once('>').map(|(_, text)| text.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_yearly_report_holds_the_hand_computed_figures() {
    let clock = ManualClock::new(muscat(2025, 1, 1, 8, 0));
    let db = TestDb::fresh().await;
    build_data_set(&db, &clock).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report-2026.html");
    let written = write_report(&args(&db, 2026, &out), Arc::new(clock.clone()))
        .await
        .expect("report");
    assert_eq!((written.n_tickets, written.n_tickets_previous_year), (5, 2));
    let html = std::fs::read_to_string(&out).expect("the page");
    assert_eq!(html.len(), written.bytes);

    // One page: Arabic first and right to left, then the English article.
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"ar\" dir=\"rtl\">"));
    let arabic = html.find("<article id=\"ar\" lang=\"ar\" dir=\"rtl\">");
    let english = html.find("<article id=\"en\" lang=\"en\" dir=\"ltr\">");
    assert!(arabic.is_some() && english.is_some() && arabic < english);
    // Self-contained: nothing is fetched.
    for external in [
        "<script", "<link", "src=", "url(", "@import", "http://", "https://",
    ] {
        let used = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!used.contains(external), "the page uses {external}");
    }
    // The category's names are escaped everywhere, in both languages.
    assert!(html.contains("Pavements &lt;&amp; kerbs&gt;"));
    assert!(html.contains("أرصفة &lt;وممرات&gt;"));
    assert!(!html.contains(PAVEMENTS_EN) && !html.contains(PAVEMENTS_AR));

    // Tickets per month by type: report, complaint, suggestion, inquiry, the year, the year
    // before, the change.
    assert_eq!(
        row(&html, "en-months-table", "January"),
        ["2", "1", "0", "0", "3", "2", "+50.0%"]
    );
    assert_eq!(
        row(&html, "en-months-table", "March"),
        ["0", "0", "1", "1", "2", "0", "—"]
    );
    assert_eq!(
        row(&html, "en-months-table", "February"),
        ["0", "0", "0", "0", "0", "0", "—"]
    );
    assert_eq!(
        row(&html, "en-months-table", "Total"),
        ["2", "1", "1", "1", "5", "2", "+150.0%"]
    );
    // The same in Arabic, in Arabic-Indic digits.
    assert_eq!(
        row(&html, "ar-months-table", "يناير"),
        ["٢", "١", "٠", "٠", "٣", "٢", "\u{61C}+٥٠٫٠٪\u{61C}"]
    );

    // SLA compliance: first response and resolution, the year and the year before.
    assert_eq!(
        row(&html, "en-sla-table", "January"),
        ["66.7%", "66.7%", "50.0%", "100.0%"]
    );
    assert_eq!(
        row(&html, "en-sla-table", "March"),
        ["50.0%", "50.0%", "—", "—"]
    );
    assert_eq!(
        row(&html, "en-sla-table", "Total"),
        ["60.0%", "60.0%", "50.0%", "100.0%"]
    );
    assert_eq!(
        row(&html, "ar-sla-table", "المجموع"),
        [
            "٦٠٫٠٪\u{61C}",
            "٦٠٫٠٪\u{61C}",
            "٥٠٫٠٪\u{61C}",
            "١٠٠٫٠٪\u{61C}"
        ]
    );

    // KPIs against targets: the year, the year before, the change, the target, the status,
    // and next year's target.
    assert_eq!(
        row(&html, "en-kpi-table", "First responses in time"),
        ["60.0%", "50.0%", "+10.0 pts", "80.0%", "✗ not met", "—"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "Resolutions in time"),
        ["60.0%", "100.0%", "\u{2212}40.0 pts", "—", "", "90.0%"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "Satisfaction (of 5)"),
        ["3.67", "—", "—", "3.50", "✓ met", "—"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "Resolution, median"),
        ["2.0 h", "1.0 h", "+1.0 h", "—", "", "—"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "Backlog"),
        ["1", "0", "—", "—", "", "—"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "Staff quality reviews"),
        ["1", "0", "—", "—", "", "—"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "Staff quality score (of 100)"),
        ["75.0", "—", "—", "—", "", "—"]
    );

    // Satisfaction per month: ratings, average, satisfied, response rate.
    assert_eq!(
        row(&html, "en-satisfaction-months-table", "January"),
        ["2", "3.50", "50.0%", "66.7%"]
    );
    assert_eq!(
        row(&html, "en-satisfaction-months-table", "Total"),
        ["3", "3.67", "66.7%", "75.0%"]
    );

    // Categories: potholes first; the others, one each, by code.
    assert_eq!(
        row(&html, "en-categories-table", "Pothole"),
        ["2", "40.0%", "2", "±0.0%", "100.0%"]
    );
    assert!(html.contains("of 4 with tickets"));

    // Directorates: tickets, the year before, change, compliance, median, satisfaction,
    // backlog, targets met of those measured.
    let roads = row(
        &html,
        "en-directorates-table",
        "Directorate General of Roads",
    );
    assert_eq!(
        roads,
        [
            "2", "2", "±0.0%", "50.0%", "100.0%", "2.0 h", "3.50", "0", "1 / 1"
        ]
    );
    assert_eq!(
        row(
            &html,
            "en-directorate-targets-table",
            "Directorate General of Roads"
        ),
        ["Resolution, median", "4.0 h", "2.0 h", "✓ met"]
    );
    assert!(!html.contains("The year is not over"));
    assert!(html.contains("Generated 10 January 2027, 08:00 by balagh."));
}

#[tokio::test]
async fn an_empty_year_is_reported_as_empty() {
    let clock = ManualClock::new(muscat(2030, 6, 1, 8, 0));
    let db = TestDb::fresh().await;
    // The store exists (the command refuses to create one), but holds no tickets.
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    app.stop().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("empty.html");
    let written = write_report(&args(&db, 2030, &out), Arc::new(clock.clone()))
        .await
        .expect("report");
    assert_eq!(written.n_tickets, 0);
    let html = std::fs::read_to_string(&out).expect("the page");
    assert!(html.contains("No tickets were created in 2030."));
    assert!(html.contains("لم يُسجَّل أي بلاغ في عام ٢٠٣٠."));
    assert!(html.contains("The year is not over: the figures stand as of 1 June 2030, 08:00."));
    assert_eq!(
        row(&html, "en-months-table", "Total"),
        ["0", "0", "0", "0", "0", "0", "—"]
    );
    assert_eq!(
        row(&html, "en-kpi-table", "First responses in time"),
        ["—", "—", "—", "—", ""]
    );
    for broken in ["NaN", "inf", "nan"] {
        assert!(!html.contains(broken), "the page shows {broken}");
    }
}

/// Runs the binary with `args`: its exit status, stdout and stderr.
async fn balagh<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
) -> (std::process::ExitStatus, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_balagh"))
        .args(args)
        .env_remove("BALAGH_DATABASE_URL")
        .env_remove("BALAGH_CONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run balagh");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_report_command_writes_the_page() {
    let clock = ManualClock::new(muscat(2025, 1, 1, 8, 0));
    let db = TestDb::fresh().await;
    build_data_set(&db, &clock).await;
    // The command runs beside a running server on the same database.
    let mut app = spawn_app_with(db.clone(), |_| {}, Arc::new(clock.clone())).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("balagh-2026.html");
    let out_text = out.display().to_string();
    let (status, stdout, stderr) = balagh(&[
        "report",
        "--year",
        "2026",
        "--database-url",
        &db.url,
        "--out",
        &out_text,
    ])
    .await;
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("balagh report 2026: 5 tickets (2 the year before), written to"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&out).expect("the page");
    assert_eq!(
        row(&html, "en-months-table", "January"),
        ["2", "1", "0", "0", "3", "2", "+50.0%"]
    );
    // No temporary file is left beside it.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(files, [std::ffi::OsString::from("balagh-2026.html")]);

    // English only: the page itself is English and left to right.
    let (status, _, stderr) = balagh(&[
        "report",
        "--year",
        "2026",
        "--database-url",
        &db.url,
        "--out",
        &out_text,
        "--lang",
        "en",
    ])
    .await;
    assert!(status.success(), "{stderr}");
    let html = std::fs::read_to_string(&out).expect("the page");
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\">"));
    assert!(!html.contains("<article id=\"ar\""));
    app.stop().await;
}

/// Runs the binary with `args`, expecting it to exit with `code` (2: a bad argument, 1: a
/// failure) and a message holding `expected` (and no panic); returns the message.
async fn fails_with<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    code: i32,
    expected: &str,
) -> String {
    let (status, _, stderr) = balagh(args).await;
    assert_eq!(status.code(), Some(code), "balagh {args:?}: {stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[tokio::test]
async fn the_report_command_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("r.html").display().to_string();
    let missing = format!("sqlite://{}", dir.path().join("none.db").display());
    let report = |url: &str, out: &str| {
        [
            "report",
            "--year",
            "2026",
            "--database-url",
            url,
            "--out",
            out,
        ]
        .map(str::to_owned)
    };

    fails_with(
        &["report", "--year", "1999", "--out", &out],
        2,
        "the year must be from 2000 to 2100, not 1999",
    )
    .await;

    fails_with(&report(&missing, &out), 1, "no database at").await;
    assert!(
        !dir.path().join("none.db").exists(),
        "no database is created"
    );

    let unwritable = dir.path().join("no-such-folder").join("r.html");
    fails_with(
        &report(&missing, &unwritable.display().to_string()),
        1,
        "cannot write the report to",
    )
    .await;

    // Nothing listens on port 1.
    let stderr = fails_with(
        &report("postgres://balagh:secret@127.0.0.1:1/balagh", &out),
        1,
        "cannot open the database postgres://balagh@127.0.0.1:1/balagh",
    )
    .await;
    assert!(
        !stderr.contains("secret"),
        "the password stays out of messages"
    );
    assert!(
        !Path::new(&out).exists(),
        "a failed report leaves no page behind"
    );
}

// ---- Headless Chromium ----

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// Says so past the test harness's capture, so a plain `cargo test` shows it.
fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {what}: install Debian's chromium to run it (CI requires it)"
    );
}

/// Renders `page` in headless Chromium and returns the PNG screenshot.
async fn screenshot(chromium: &Path, page: &Path, work: &Path, name: &str) -> Vec<u8> {
    let png = work.join(format!("{name}.png"));
    let profile = work.join(format!("{name}-profile"));
    let run = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1280,4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("chromium finishes within two minutes")
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot");
    if let Some(keep) = std::env::var_os("BALAGH_REPORT_SCREENSHOT_DIR") {
        std::fs::create_dir_all(&keep).expect("screenshot dir");
        std::fs::write(Path::new(&keep).join(format!("{name}.png")), &bytes).expect("keep");
        std::fs::copy(page, Path::new(&keep).join(format!("{name}.html"))).expect("keep");
    }
    bytes
}

#[tokio::test]
async fn the_page_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("BALAGH_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "BALAGH_REQUIRE_CHROMIUM=1 but chromium is not on PATH"
        );
        skipped("the headless Chromium render of the yearly report");
        return;
    };
    let clock = ManualClock::new(muscat(2025, 1, 1, 8, 0));
    let db = TestDb::fresh().await;
    build_data_set(&db, &clock).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let both = dir.path().join("both.html");
    write_report(&args(&db, 2026, &both), Arc::new(clock.clone()))
        .await
        .expect("report");
    let english = dir.path().join("english.html");
    let mut english_args = args(&db, 2026, &english);
    english_args.lang = Languages::En;
    write_report(&english_args, Arc::new(clock.clone()))
        .await
        .expect("report");

    for (page, name, title_side) in [
        (&both, "report-ar", Side::Right),
        (&english, "report-en", Side::Left),
    ] {
        let png = screenshot(&chromium, page, dir.path(), name).await;
        let image = png::decode(&png);
        assert_eq!((image.width, image.height), (1280, 4000), "{name}");
        let colours = image.distinct_colours();
        assert!(
            colours > 50,
            "{name}: only {colours} colours: a blank page?"
        );
        let ink = image.ink_share(0, image.height);
        assert!(
            (0.005..0.6).contains(&ink),
            "{name}: {ink:.3} of the pixels are ink"
        );
        // The title block (the first 230 rows) sits at the start of the line: on the right
        // in Arabic, on the left in English.
        let (left, right) = image.ink_by_half(0, 230);
        match title_side {
            Side::Right => assert!(
                right > 2 * left,
                "{name}: title ink left {left}, right {right}"
            ),
            Side::Left => assert!(
                left > 2 * right,
                "{name}: title ink left {left}, right {right}"
            ),
        }
    }
}

enum Side {
    Left,
    Right,
}

/// Just enough of PNG to look at a screenshot: 8-bit greyscale, RGB or RGBA, not interlaced.
mod png {
    use std::collections::HashSet;
    use std::io::Read;

    pub struct Image {
        pub width: usize,
        pub height: usize,
        /// RGB, row by row.
        pub pixels: Vec<[u8; 3]>,
    }

    impl Image {
        pub fn distinct_colours(&self) -> usize {
            self.pixels.iter().collect::<HashSet<_>>().len()
        }

        fn is_ink(p: &[u8; 3]) -> bool {
            p.iter().map(|c| u32::from(*c)).sum::<u32>() < 3 * 200
        }

        /// The share of clearly non-white pixels in rows `from..to`.
        pub fn ink_share(&self, from: usize, to: usize) -> f64 {
            let rows = &self.pixels[from * self.width..to * self.width];
            rows.iter().filter(|p| Self::is_ink(p)).count() as f64 / rows.len() as f64
        }

        /// Ink pixels in rows `from..to`, in the left half and in the right half.
        pub fn ink_by_half(&self, from: usize, to: usize) -> (usize, usize) {
            let (mut left, mut right) = (0, 0);
            for y in from..to {
                for x in 0..self.width {
                    if Self::is_ink(&self.pixels[y * self.width + x]) {
                        if x < self.width / 2 {
                            left += 1;
                        } else {
                            right += 1;
                        }
                    }
                }
            }
            (left, right)
        }
    }

    pub fn decode(bytes: &[u8]) -> Image {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        let mut at = 8;
        let (mut width, mut height, mut channels) = (0, 0, 0);
        let mut compressed = Vec::new();
        while at + 8 <= bytes.len() {
            let length = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = &bytes[at + 4..at + 8];
            let data = &bytes[at + 8..at + 8 + length];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(data[8], 8, "8-bit samples");
                    channels = match data[9] {
                        0 => 1,
                        2 => 3,
                        4 => 2,
                        6 => 4,
                        other => panic!("colour type {other}"),
                    };
                    assert_eq!(data[12], 0, "not interlaced");
                }
                b"IDAT" => compressed.extend_from_slice(data),
                b"IEND" => break,
                _ => {}
            }
            at += 12 + length;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&compressed[..])
            .read_to_end(&mut raw)
            .expect("inflate");
        let stride = width * channels;
        assert_eq!(raw.len(), height * (stride + 1), "image data size");
        // Undo each row's filter (PNG specification, section 9).
        let mut previous = vec![0u8; stride];
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
            let filter = line[0];
            let mut current = line[1..].to_vec();
            for i in 0..stride {
                let a = if i >= channels {
                    current[i - channels]
                } else {
                    0
                };
                let b = previous[i];
                let c = if i >= channels {
                    previous[i - channels]
                } else {
                    0
                };
                let predictor = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                    4 => paeth(a, b, c),
                    other => panic!("filter {other}"),
                };
                current[i] = current[i].wrapping_add(predictor);
            }
            for x in 0..width {
                let p = &current[x * channels..(x + 1) * channels];
                pixels.push(match channels {
                    1 | 2 => [p[0], p[0], p[0]],
                    _ => [p[0], p[1], p[2]],
                });
            }
            previous = current;
        }
        Image {
            width,
            height,
            pixels,
        }
    }

    fn paeth(a: u8, b: u8, c: u8) -> u8 {
        let p = i16::from(a) + i16::from(b) - i16::from(c);
        let (pa, pb, pc) = (
            (p - i16::from(a)).abs(),
            (p - i16::from(b)).abs(),
            (p - i16::from(c)).abs(),
        );
        if pa <= pb && pa <= pc {
            a
        } else if pb <= pc {
            b
        } else {
            c
        }
    }
}
