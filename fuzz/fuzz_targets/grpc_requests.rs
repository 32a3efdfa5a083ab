//! Every request of balagh's public gRPC services, decoded from fuzzed bytes and handed to the
//! service implementation itself, over a real SQLite store.
//!
//! Input: the first byte picks the RPC (`RPCS[byte % RPCS.len()]`, so append new RPCs at the
//! end and the checked-in seeds keep their meaning); the rest is decoded with prost as that
//! RPC's request message. A message that does not decode is skipped: tonic's codec would have
//! refused it before any service code ran (`src/grpc/codec.rs`).
//!
//! The services are built once per process, the way `Application::run_until_stopped` builds
//! them (the store opened by `store::open_store`, the SLA runtime, the change feed, no national
//! platform), over a SQLite file in a fresh folder (under `/dev/shm` when there is one, so
//! the `synchronous=FULL` commits cost no disk). Eight tickets in different states are filed
//! before the first input; a ticket id written `@0` .. `@7` in a request stands for one of them,
//! and `@8` .. `@15` for the tickets the last eight successful CreateTicket inputs filed (newest
//! first; any other id starting with `@` names one of the sixteen too), so short inputs reach
//! the lifecycle rules, not only "no such ticket". The store's clock is a `ManualClock` that
//! moves one minute per input (for three years at most), so SLA deadlines pass and the
//! escalation sweep has work. State carries over from input to input, as on a server; a crash
//! that needs history to happen may not replay alone.
//!
//! Properties checked on every answer:
//! - no panic, in the service or in any task or thread it reaches (libfuzzer-sys aborts on
//!   any panic);
//! - an error is never `INTERNAL` or `UNKNOWN` (the store here is healthy, so an internal error
//!   is a bug; the error the service logged is printed above the crash);
//! - every error carries a `google.rpc.ErrorInfo` of domain `balagh`, and every
//!   `INVALID_ARGUMENT` a `google.rpc.BadRequest` naming at least one field
//!   (`src/grpc/error.rs` promises both).
//!
//! `WatchTickets` (server streaming) is opened through the trait and polled once without
//! waiting: its request is checked and its snapshot taken, then the stream is dropped.
//!
//! The calls are made in-process without the auth layer, so the services see
//! `Principal::Open` (every ticket in scope, nothing masked), as on a loopback server started
//! without authentication.
//!
//! `BALAGH_FUZZ_STATS=1` prints how each RPC answered (OK, or which code) now and then, to see
//! what the inputs reach. `BALAGH_FUZZ_WRITE_SEEDS=DIR` writes the seed inputs (`seeds()`
//! below) into DIR and exits before fuzzing; see `fuzz/README.md`.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use balagh::domain::sync::SyncPolicy;
use balagh::domain::{Clock, ManualClock, Timestamp};
use balagh::grpc::catalog_service::CatalogServiceImpl;
use balagh::grpc::proto;
use balagh::grpc::proto::catalog_service_server::CatalogService;
use balagh::grpc::proto::quality_service_server::QualityService;
use balagh::grpc::proto::reporting_service_server::ReportingService;
use balagh::grpc::proto::satisfaction_service_server::SatisfactionService;
use balagh::grpc::proto::sla_service_server::SlaService;
use balagh::grpc::proto::sync_service_server::SyncService;
use balagh::grpc::proto::ticket_service_server::TicketService;
use balagh::grpc::quality_service::QualityServiceImpl;
use balagh::grpc::reporting_service::ReportingServiceImpl;
use balagh::grpc::satisfaction_service::SatisfactionServiceImpl;
use balagh::grpc::sla_service::SlaServiceImpl;
use balagh::grpc::sync_service::SyncServiceImpl;
use balagh::grpc::ticket_service::TicketServiceImpl;
use balagh::grpc::watch::{ChangeFeed, WatchSettings, WatchStream};
use balagh::sla::SlaRuntime;
use futures::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// 2026-03-15 08:00 in Muscat (UTC+4), a Sunday: the start of a working week.
const START_MICROS: i64 = 1_773_547_200_000_000;
/// The clock moves this much per input...
const STEP_MICROS: i64 = 60_000_000;
/// ...until it is this far from the start.
const MAX_DRIFT_MICROS: i64 = 3 * 365 * 24 * 3600 * 1_000_000;

/// Folder names of this target's databases: `balagh-fuzz-<pid>`.
const DB_DIR_PREFIX: &str = "balagh-fuzz-";

struct Harness {
    runtime: tokio::runtime::Runtime,
    clock: ManualClock,
    services: Services,
    /// The tickets filed before the first input, named `@0` .. `@7` in requests.
    fixtures: Vec<String>,
    /// With `BALAGH_FUZZ_STATS=1`: how each RPC answered, to see what the inputs reach.
    stats: Option<Stats>,
}

/// Answers by RPC and code, printed to stderr at every power of two of inputs from 1024 on.
#[derive(Default)]
struct Stats {
    answers: std::sync::Mutex<std::collections::BTreeMap<(&'static str, String), u64>>,
}

impl Stats {
    fn count(&self, rpc: &'static str, answer: Option<&Result<(), Status>>) {
        let outcome = match answer {
            None => "undecodable".to_owned(),
            Some(Ok(())) => "OK".to_owned(),
            Some(Err(status)) => format!("{:?}", status.code()),
        };
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        *answers.entry((rpc, outcome)).or_default() += 1;
        let total: u64 = answers.values().sum();
        if total >= 1024 && total.is_power_of_two() {
            eprintln!("answers after {total} inputs:");
            for ((rpc, outcome), n) in answers.iter() {
                eprintln!("  {rpc:<45} {outcome:<18} {n}");
            }
        }
    }
}

/// The seven services, built as `Application::run_until_stopped` builds them.
struct Services {
    tickets: TicketServiceImpl,
    catalog: CatalogServiceImpl,
    sync: SyncServiceImpl,
    sla: SlaServiceImpl,
    reporting: ReportingServiceImpl,
    quality: QualityServiceImpl,
    satisfaction: SatisfactionServiceImpl,
}

impl Harness {
    /// Replaces an alias by the ticket id it names: `@0` .. `@7` the fixtures, `@8` .. `@15`
    /// the tickets the last eight successful CreateTicket inputs filed, newest first.
    /// Any other id that starts with `@` names one of those sixteen too (by the sum of its
    /// bytes), so a mutated alias still reaches a ticket.
    fn alias(&self, id: &mut String) {
        let Some(name) = id.strip_prefix('@') else {
            return;
        };
        let n = name.parse::<usize>().unwrap_or_else(|_| {
            name.bytes().map(usize::from).sum::<usize>() % (self.fixtures.len() + RECENT_TICKETS)
        });
        let real = match n.checked_sub(self.fixtures.len()) {
            None => self.fixtures.get(n).cloned(),
            Some(k) => recently_created()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(k)
                .cloned(),
        };
        if let Some(real) = real {
            *id = real;
        }
    }
}

/// Most tickets remembered from CreateTicket inputs.
const RECENT_TICKETS: usize = 8;

fn recently_created() -> &'static std::sync::Mutex<std::collections::VecDeque<String>> {
    static RECENT: OnceLock<std::sync::Mutex<std::collections::VecDeque<String>>> = OnceLock::new();
    RECENT.get_or_init(Default::default)
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(build_harness)
}

fn build_harness() -> Harness {
    // Errors the services log (an internal error's cause chain) are printed above a crash.
    let filter = std::env::var("BALAGH_FUZZ_LOG").unwrap_or_else(|_| "error".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = database_dir();
    let url = format!("sqlite://{}", dir.join("balagh.db").display());
    let clock = ManualClock::new(Timestamp::from_micros(START_MICROS));
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let services = runtime.block_on(async {
        let store = balagh::store::open_store(
            &url,
            512,
            4096,
            4,
            SyncPolicy::default(),
            shared_clock.clone(),
        )
        .await
        .expect("the SQLite store opens");
        let watch_settings = WatchSettings::default();
        // Never cancelled: the feed runs for as long as the process.
        let (feed, _feed_task) =
            ChangeFeed::start(store.clone(), &watch_settings, CancellationToken::new())
                .await
                .expect("the change feed starts");
        let sla = SlaRuntime::open(store.clone(), shared_clock.clone())
            .await
            .expect("the SLA runtime opens");
        let policy = balagh::domain::satisfaction::SurveyPolicy::default();
        Services {
            tickets: TicketServiceImpl::new(
                store.clone(),
                sla.clone(),
                feed,
                watch_settings,
                balagh::metrics::Metrics::new().watch_streams_open.clone(),
                policy,
            ),
            catalog: CatalogServiceImpl::new(store.clone()),
            sync: SyncServiceImpl::new(store.clone(), None),
            sla: SlaServiceImpl::new(store.clone(), sla.clone()),
            reporting: ReportingServiceImpl::new(store.clone(), sla),
            quality: QualityServiceImpl::new(store.clone()),
            satisfaction: SatisfactionServiceImpl::new(store, shared_clock, policy),
        }
    });
    let fixtures = runtime.block_on(file_fixtures(&services));
    Harness {
        runtime,
        clock,
        services,
        fixtures,
        stats: std::env::var_os("BALAGH_FUZZ_STATS").map(|_| Stats::default()),
    }
}

/// A fresh folder for this process's database. Folders of processes that are gone are
/// removed first: a fuzzing process ends by `exit` or `abort`, never dropping its statics.
fn database_dir() -> PathBuf {
    let base = std::env::var_os("BALAGH_FUZZ_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                shm.to_owned()
            } else {
                std::env::temp_dir()
            }
        });
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(DB_DIR_PREFIX))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{DB_DIR_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a folder for the fuzzing database");
    dir
}

fn report(
    subject: &str,
    reporter: proto::Reporter,
    kind: proto::TicketType,
) -> proto::CreateTicketRequest {
    proto::CreateTicketRequest {
        r#type: kind.into(),
        channel: proto::Channel::ContactCentre.into(),
        category: "pothole".into(),
        priority: 0,
        subject: subject.into(),
        description: "حفرة عميقة أمام المدرسة تسبب خطراً على السيارات.\nيرجى الإصلاح.".into(),
        reporter: Some(reporter),
        location: Some(proto::Location {
            wilayat: "bawshar".into(),
            area: "Al Khuwair".into(),
            point: Some(proto::LatLng {
                latitude: 23.588,
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

fn citizen(n: u32) -> proto::Reporter {
    proto::Reporter {
        name: format!("Citizen {n}"),
        phone: format!("+968 9000 {n:04}"),
        email: format!("citizen{n}@example.om"),
        ..Default::default()
    }
}

/// Files the eight fixture tickets and moves them along: @0 new, @1 assigned, @2 in progress,
/// @3 resolved, @4 closed, @5 waiting on the beneficiary, @6 an anonymous suggestion, @7 a
/// complaint.
async fn file_fixtures(h: &Services) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..8u32 {
        let (reporter, kind) = match n {
            6 => (
                proto::Reporter {
                    anonymous: true,
                    ..Default::default()
                },
                proto::TicketType::Suggestion,
            ),
            7 => (citizen(n), proto::TicketType::Complaint),
            _ => (citizen(n), proto::TicketType::Report),
        };
        let created = h
            .tickets
            .create_ticket(Request::new(report(
                &format!("حفرة رقم {n}"),
                reporter,
                kind,
            )))
            .await
            .expect("a fixture ticket is filed")
            .into_inner();
        ids.push(created.ticket.expect("the created ticket").id);
    }
    let assign = |id: &str| proto::AssignTicketRequest {
        ticket_id: id.into(),
        directorate: "roads".into(),
        support_line: proto::SupportLine::Second.into(),
        ..Default::default()
    };
    let start = |id: &str| proto::StartWorkRequest {
        ticket_id: id.into(),
        ..Default::default()
    };
    for id in &ids[1..6] {
        h.tickets
            .assign_ticket(Request::new(assign(id)))
            .await
            .expect("a fixture is assigned");
    }
    for id in &ids[2..6] {
        h.tickets
            .start_work(Request::new(start(id)))
            .await
            .expect("a fixture is started");
    }
    for id in &ids[3..5] {
        h.tickets
            .resolve_ticket(Request::new(proto::ResolveTicketRequest {
                ticket_id: id.clone(),
                resolution: Some(proto::Resolution {
                    code: proto::ResolutionCode::Fixed.into(),
                    text: "تم الإصلاح".into(),
                }),
                ..Default::default()
            }))
            .await
            .expect("a fixture is resolved");
    }
    h.tickets
        .close_ticket(Request::new(proto::CloseTicketRequest {
            ticket_id: ids[4].clone(),
            ..Default::default()
        }))
        .await
        .expect("a fixture is closed");
    h.tickets
        .wait_on_beneficiary(Request::new(proto::WaitOnBeneficiaryRequest {
            ticket_id: ids[5].clone(),
            reason: "صورة أوضح للموقع".into(),
            ..Default::default()
        }))
        .await
        .expect("a fixture waits on its beneficiary");
    ids
}

/// Declares the RPC table: `RPCS` (the names, in selector order) and `call`, which decodes
/// the message of the RPC at `index`, replaces fixture aliases, calls the service and settles
/// its answer (`then first_message` for a server stream; a unary answer is taken as it is).
macro_rules! rpcs {
    ($( $name:literal => $service:ident . $method:ident ( $request:ty ) via $trait_:ident
        $(then $finish:ident)?, |$h:ident, $m:ident| $aliases:expr; )*) => {
        const RPCS: &[&str] = &[$($name,)*];

        /// `None` when the message does not decode.
        async fn call(h: &Harness, index: usize, bytes: &[u8]) -> Option<Result<(), Status>> {
            let mut at = 0usize;
            $(
                if index == at {
                    let mut message = <$request>::decode(bytes).ok()?;
                    {
                        let $h = h;
                        let $m = &mut message;
                        let _ = (&$h, &$m);
                        $aliases;
                    }
                    let answer = $trait_::$method(&h.services.$service, Request::new(message)).await;
                    return Some(finish!($($finish)?)(answer));
                }
                at += 1;
            )*
            let _ = at;
            None
        }
    };
}

macro_rules! finish {
    () => {
        unary
    };
    ($finish:ident) => {
        $finish
    };
}

fn unary<T>(answer: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    answer.map(|_| ())
}

/// CreateTicket's answer: the new ticket becomes `@8` (see `Harness::alias`).
fn remember_created(
    answer: Result<tonic::Response<proto::CreateTicketResponse>, Status>,
) -> Result<(), Status> {
    if let Some(ticket) = &answer?.get_ref().ticket {
        let mut recent = recently_created().lock().unwrap_or_else(|e| e.into_inner());
        recent.push_front(ticket.id.clone());
        recent.truncate(RECENT_TICKETS);
    }
    Ok(())
}

/// A stream is polled once, without waiting: its request was checked and its snapshot taken
/// when it opened; the first message, if ready, may still be an error.
fn first_message(answer: Result<tonic::Response<WatchStream>, Status>) -> Result<(), Status> {
    let mut stream = answer?.into_inner();
    match stream.next().now_or_never() {
        Some(Some(Err(status))) => Err(status),
        _ => Ok(()),
    }
}

rpcs! {
    "TicketService/CreateTicket" => tickets.create_ticket(proto::CreateTicketRequest) via TicketService then remember_created, |h, m| ();
    "TicketService/GetTicket" => tickets.get_ticket(proto::GetTicketRequest) via TicketService, |h, m| {
        if let Some(proto::get_ticket_request::Lookup::Id(id)) = &mut m.lookup {
            h.alias(id);
        }
    };
    "TicketService/ListTickets" => tickets.list_tickets(proto::ListTicketsRequest) via TicketService, |h, m| ();
    "TicketService/UpdateTicket" => tickets.update_ticket(proto::UpdateTicketRequest) via TicketService, |h, m| {
        if let Some(ticket) = &mut m.ticket {
            h.alias(&mut ticket.id);
            h.alias(&mut ticket.duplicate_of_ticket_id);
        }
    };
    "TicketService/AssignTicket" => tickets.assign_ticket(proto::AssignTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/StartWork" => tickets.start_work(proto::StartWorkRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/WaitOnBeneficiary" => tickets.wait_on_beneficiary(proto::WaitOnBeneficiaryRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/ResolveTicket" => tickets.resolve_ticket(proto::ResolveTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/CloseTicket" => tickets.close_ticket(proto::CloseTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/ReopenTicket" => tickets.reopen_ticket(proto::ReopenTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/RejectTicket" => tickets.reject_ticket(proto::RejectTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/TransferTicket" => tickets.transfer_ticket(proto::TransferTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/MergeTicket" => tickets.merge_ticket(proto::MergeTicketRequest) via TicketService, |h, m| {
        h.alias(&mut m.ticket_id);
        h.alias(&mut m.duplicate_of_ticket_id);
    };
    "TicketService/AddComment" => tickets.add_comment(proto::AddCommentRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/EscalateTicket" => tickets.escalate_ticket(proto::EscalateTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/RateTicket" => tickets.rate_ticket(proto::RateTicketRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/ListTicketEvents" => tickets.list_ticket_events(proto::ListTicketEventsRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/WatchTickets" => tickets.watch_tickets(proto::WatchTicketsRequest) via TicketService then first_message, |h, m| ();

    "CatalogService/ListDirectorates" => catalog.list_directorates(proto::ListDirectoratesRequest) via CatalogService, |h, m| ();
    "CatalogService/ListOutlets" => catalog.list_outlets(proto::ListOutletsRequest) via CatalogService, |h, m| ();
    "CatalogService/ListCategories" => catalog.list_categories(proto::ListCategoriesRequest) via CatalogService, |h, m| ();
    "CatalogService/ListWilayats" => catalog.list_wilayats(proto::ListWilayatsRequest) via CatalogService, |h, m| ();
    "CatalogService/UpsertDirectorate" => catalog.upsert_directorate(proto::UpsertDirectorateRequest) via CatalogService, |h, m| ();
    "CatalogService/UpsertOutlet" => catalog.upsert_outlet(proto::UpsertOutletRequest) via CatalogService, |h, m| ();
    "CatalogService/UpsertCategory" => catalog.upsert_category(proto::UpsertCategoryRequest) via CatalogService, |h, m| ();

    "SyncService/GetSyncStatus" => sync.get_sync_status(proto::GetSyncStatusRequest) via SyncService, |h, m| ();
    "SyncService/ListDeadLetters" => sync.list_dead_letters(proto::ListDeadLettersRequest) via SyncService, |h, m| ();
    "SyncService/RedriveDeadLetter" => sync.redrive_dead_letter(proto::RedriveDeadLetterRequest) via SyncService, |h, m| ();
    "SyncService/TriggerPull" => sync.trigger_pull(proto::TriggerPullRequest) via SyncService, |h, m| ();
    "SyncService/TriggerReconcile" => sync.trigger_reconcile(proto::TriggerReconcileRequest) via SyncService, |h, m| ();

    "SlaService/GetCalendar" => sla.get_calendar(proto::GetCalendarRequest) via SlaService, |h, m| ();
    "SlaService/UpdateCalendar" => sla.update_calendar(proto::UpdateCalendarRequest) via SlaService, |h, m| ();
    "SlaService/AddHoliday" => sla.add_holiday(proto::AddHolidayRequest) via SlaService, |h, m| ();
    "SlaService/GetSlaSettings" => sla.get_sla_settings(proto::GetSlaSettingsRequest) via SlaService, |h, m| ();
    "SlaService/UpdateSlaSettings" => sla.update_sla_settings(proto::UpdateSlaSettingsRequest) via SlaService, |h, m| ();
    "SlaService/ListSettingChanges" => sla.list_setting_changes(proto::ListSettingChangesRequest) via SlaService, |h, m| ();
    "SlaService/GetTicketSla" => sla.get_ticket_sla(proto::GetTicketSlaRequest) via SlaService, |h, m| h.alias(&mut m.ticket_id);
    "SlaService/ListTicketsAtRisk" => sla.list_tickets_at_risk(proto::ListTicketsAtRiskRequest) via SlaService, |h, m| ();
    "SlaService/RunEscalationSweep" => sla.run_escalation_sweep(proto::RunEscalationSweepRequest) via SlaService, |h, m| ();

    "ReportingService/GetKpis" => reporting.get_kpis(proto::GetKpisRequest) via ReportingService, |h, m| ();
    "ReportingService/ExportKpisCsv" => reporting.export_kpis_csv(proto::ExportKpisCsvRequest) via ReportingService, |h, m| ();
    "ReportingService/GetKpiTargets" => reporting.get_kpi_targets(proto::GetKpiTargetsRequest) via ReportingService, |h, m| ();
    "ReportingService/UpdateKpiTargets" => reporting.update_kpi_targets(proto::UpdateKpiTargetsRequest) via ReportingService, |h, m| ();

    "QualityService/GetRubric" => quality.get_rubric(proto::GetRubricRequest) via QualityService, |h, m| ();
    "QualityService/UpdateRubric" => quality.update_rubric(proto::UpdateRubricRequest) via QualityService, |h, m| ();
    "QualityService/RecordQualityReview" => quality.record_quality_review(proto::RecordQualityReviewRequest) via QualityService, |h, m| h.alias(&mut m.ticket_id);
    "QualityService/ListQualityReviews" => quality.list_quality_reviews(proto::ListQualityReviewsRequest) via QualityService, |h, m| ();
    "QualityService/SampleTicketsForReview" => quality.sample_tickets_for_review(proto::SampleTicketsForReviewRequest) via QualityService, |h, m| ();

    "SatisfactionService/ListCallBackCandidates" => satisfaction.list_call_back_candidates(proto::ListCallBackCandidatesRequest) via SatisfactionService, |h, m| ();
    "SatisfactionService/RecordCallBackAttempt" => satisfaction.record_call_back_attempt(proto::RecordCallBackAttemptRequest) via SatisfactionService, |h, m| h.alias(&mut m.ticket_id);
    "SatisfactionService/ListSurveyRequests" => satisfaction.list_survey_requests(proto::ListSurveyRequestsRequest) via SatisfactionService, |h, m| h.alias(&mut m.ticket_id);

    // Added after the table above was first fixed: new RPCs go here, at the end.
    "TicketService/ErasePersonalData" => tickets.erase_personal_data(proto::ErasePersonalDataRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
    "TicketService/ListPersonalDataAccesses" => tickets.list_personal_data_accesses(proto::ListPersonalDataAccessesRequest) via TicketService, |h, m| h.alias(&mut m.ticket_id);
}

/// The properties every error must have (see the module docs).
fn check(rpc: &str, status: &Status) {
    let code = status.code();
    assert!(
        !matches!(code, Code::Internal | Code::Unknown),
        "{rpc} answered {code:?}: {:?} (the cause is logged above)",
        status.message()
    );
    let details = status
        .check_error_details()
        .unwrap_or_else(|e| panic!("{rpc}: the details of {code:?} do not decode: {e}"));
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{rpc} answered {code:?} without an ErrorInfo: {status:?}"));
    assert_eq!(info.domain, "balagh", "{rpc}: ErrorInfo domain");
    if code == Code::InvalidArgument {
        let violations = details
            .bad_request()
            .map_or(0, |b| b.field_violations.len());
        assert!(
            violations > 0,
            "{rpc} answered INVALID_ARGUMENT without a field violation: {status:?}"
        );
    }
}

/// The seed inputs: for every RPC the empty message, and for most a valid one.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }
    let at = |id: &str| id.to_owned();
    let mut seeds: Vec<(&'static str, Vec<u8>)> =
        RPCS.iter().map(|name| (*name, Vec::new())).collect();
    let mut add = |name: &'static str, message: &dyn Fn() -> Vec<u8>| seeds.push((name, message()));
    add("TicketService/CreateTicket", &|| {
        report(
            "حفرة كبيرة في شارع الخوير",
            citizen(42),
            proto::TicketType::Report,
        )
        .encode_to_vec()
    });
    add("TicketService/GetTicket", &|| {
        proto::GetTicketRequest {
            lookup: Some(proto::get_ticket_request::Lookup::Id(at("@1"))),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/GetTicket", &|| {
        proto::GetTicketRequest {
            lookup: Some(proto::get_ticket_request::Lookup::Reference(
                "MCT-2026-000001".into(),
            )),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/ListTickets", &|| {
        proto::ListTicketsRequest {
            page_size: 3,
            statuses: vec![proto::TicketStatus::New.into()],
            categories: vec!["pothole".into()],
            wilayats: vec!["bawshar".into()],
            create_time_from: ts(1_773_000_000),
            text: "مدرسه".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/UpdateTicket", &|| {
        proto::UpdateTicketRequest {
            ticket: Some(proto::Ticket {
                id: at("@0"),
                subject: "حفرة أكبر".into(),
                priority: proto::Priority::High.into(),
                etag: "\"1\"".into(),
                ..Default::default()
            }),
            update_mask: Some(field_mask(&["subject", "priority"])),
            request_id: "0190a4e2-update".into(),
        }
        .encode_to_vec()
    });
    add("TicketService/AssignTicket", &|| {
        proto::AssignTicketRequest {
            ticket_id: at("@0"),
            directorate: "municipal_services".into(),
            outlet: "outlet_bawshar".into(),
            assignee: "emp-1001".into(),
            support_line: proto::SupportLine::Third.into(),
            note: "للمعاينة".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/StartWork", &|| {
        proto::StartWorkRequest {
            ticket_id: at("@1"),
            note: "بدأ العمل".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/WaitOnBeneficiary", &|| {
        proto::WaitOnBeneficiaryRequest {
            ticket_id: at("@2"),
            reason: "موقع أدق".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/ResolveTicket", &|| {
        proto::ResolveTicketRequest {
            ticket_id: at("@2"),
            resolution: Some(proto::Resolution {
                code: proto::ResolutionCode::Fixed.into(),
                text: "تم".into(),
            }),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/CloseTicket", &|| {
        proto::CloseTicketRequest {
            ticket_id: at("@3"),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/ReopenTicket", &|| {
        proto::ReopenTicketRequest {
            ticket_id: at("@4"),
            reason: "عادت الحفرة".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/RejectTicket", &|| {
        proto::RejectTicketRequest {
            ticket_id: at("@7"),
            reason: "ليس من اختصاص البلدية".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/TransferTicket", &|| {
        proto::TransferTicketRequest {
            ticket_id: at("@6"),
            entity: "ministry-of-housing".into(),
            reason: "اختصاص الوزارة".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/MergeTicket", &|| {
        proto::MergeTicketRequest {
            ticket_id: at("@0"),
            duplicate_of_ticket_id: at("@1"),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/AddComment", &|| {
        proto::AddCommentRequest {
            ticket_id: at("@1"),
            text: "اتصلنا بالمواطن".into(),
            visibility: proto::CommentVisibility::Public.into(),
            request_id: "c-1".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/EscalateTicket", &|| {
        proto::EscalateTicketRequest {
            ticket_id: at("@2"),
            reason: "تأخر".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/RateTicket", &|| {
        proto::RateTicketRequest {
            ticket_id: at("@3"),
            score: 4,
            comment: "شكراً".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    // The same moves on the tickets the latest CreateTicket inputs filed.
    for (name, fresh) in [
        (
            "TicketService/AssignTicket",
            proto::AssignTicketRequest {
                ticket_id: at("@8"),
                directorate: "roads".into(),
                support_line: proto::SupportLine::Second.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "TicketService/StartWork",
            proto::StartWorkRequest {
                ticket_id: at("@8"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "TicketService/ResolveTicket",
            proto::ResolveTicketRequest {
                ticket_id: at("@8"),
                resolution: Some(proto::Resolution {
                    code: proto::ResolutionCode::InformationProvided.into(),
                    text: "أبلغنا المواطن".into(),
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "TicketService/CloseTicket",
            proto::CloseTicketRequest {
                ticket_id: at("@8"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "TicketService/MergeTicket",
            proto::MergeTicketRequest {
                ticket_id: at("@8"),
                duplicate_of_ticket_id: at("@9"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "TicketService/RejectTicket",
            proto::RejectTicketRequest {
                ticket_id: at("@9"),
                reason: "مكرر".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ] {
        add(name, &|| fresh.clone());
    }
    add("TicketService/ListTicketEvents", &|| {
        proto::ListTicketEventsRequest {
            ticket_id: at("@4"),
            page_size: 2,
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/WatchTickets", &|| {
        proto::WatchTicketsRequest {
            cursor: String::new(),
            filter: Some(proto::TicketFilter {
                categories: vec!["pothole".into()],
                statuses: vec![proto::TicketStatus::New.into()],
                ..Default::default()
            }),
            send_snapshot: true,
        }
        .encode_to_vec()
    });
    add("TicketService/WatchTickets", &|| {
        proto::WatchTicketsRequest {
            cursor: "v1.3".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/ErasePersonalData", &|| {
        proto::ErasePersonalDataRequest {
            ticket_id: at("@7"),
            reason: "طلب صاحب البيانات DSR-2026-001".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("TicketService/ListPersonalDataAccesses", &|| {
        proto::ListPersonalDataAccessesRequest {
            ticket_id: at("@1"),
            page_size: 5,
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("CatalogService/ListOutlets", &|| {
        proto::ListOutletsRequest {
            directorate_code: "municipal_services".into(),
        }
        .encode_to_vec()
    });
    add("CatalogService/UpsertDirectorate", &|| {
        proto::UpsertDirectorateRequest {
            directorate: Some(proto::Directorate {
                code: "markets".into(),
                name_ar: "الأسواق".into(),
                name_en: "Markets".into(),
                active: true,
            }),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("CatalogService/UpsertOutlet", &|| {
        proto::UpsertOutletRequest {
            outlet: Some(proto::Outlet {
                code: "outlet_seeb_2".into(),
                directorate_code: "municipal_services".into(),
                wilayat_code: "as_seeb".into(),
                name_ar: "منفذ السيب ٢".into(),
                name_en: "As Seeb 2".into(),
                active: true,
            }),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("CatalogService/UpsertCategory", &|| {
        proto::UpsertCategoryRequest {
            category: Some(proto::Category {
                code: "graffiti".into(),
                name_ar: "كتابة على الجدران".into(),
                name_en: "Graffiti".into(),
                default_directorate_code: "municipal_services".into(),
                default_priority: proto::Priority::Low.into(),
                sla_policy_code: "field_fault".into(),
                active: true,
            }),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("SyncService/ListDeadLetters", &|| {
        proto::ListDeadLettersRequest {
            page_size: 5,
            page_token: String::new(),
        }
        .encode_to_vec()
    });
    add("SyncService/RedriveDeadLetter", &|| {
        proto::RedriveDeadLetterRequest { id: 1 }.encode_to_vec()
    });
    add("SlaService/UpdateCalendar", &|| {
        let hours = |day: &str| proto::DayHours {
            day: day.into(),
            hours: vec!["07:30-14:30".into()],
        };
        proto::UpdateCalendarRequest {
            calendar: Some(proto::BusinessCalendar {
                week: ["sunday", "monday", "tuesday", "wednesday", "thursday"]
                    .into_iter()
                    .map(hours)
                    .collect(),
                seasons: vec![proto::Season {
                    name: "ramadan".into(),
                    from: "2026-02-18".into(),
                    to: "2026-03-19".into(),
                    week: vec![proto::DayHours {
                        day: "sunday".into(),
                        hours: vec!["09:00-14:00".into()],
                    }],
                }],
                recurring_holidays: vec![proto::RecurringHoliday {
                    name: "national day".into(),
                    date: "11-18".into(),
                }],
                holidays: vec![proto::Holiday {
                    name: "eid".into(),
                    from: "2026-03-20".into(),
                    to: "2026-03-23".into(),
                }],
                ..Default::default()
            }),
            etag: "\"1\"".into(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("SlaService/AddHoliday", &|| {
        proto::AddHolidayRequest {
            holiday: Some(proto::Holiday {
                name: "storm".into(),
                from: "2026-03-16".into(),
                to: "2026-03-16".into(),
            }),
            ..Default::default()
        }
        .encode_to_vec()
    });
    add("SlaService/UpdateSlaSettings", &|| {
        proto::UpdateSlaSettingsRequest {
            settings: Some(proto::SlaSettings {
                warn_at_percent: 75,
                default_policy: "standard".into(),
                escalation_steps: vec![
                    proto::EscalationTarget::Line2.into(),
                    proto::EscalationTarget::DirectorGeneral.into(),
                ],
                escalate_on: vec![proto::DeadlineKind::Resolution.into()],
                line_1_hold_minutes: 60,
                line_2_hold_minutes: 480,
                line_3_hold_minutes: 2400,
                policies: vec![proto::SlaPolicy {
                    code: "standard".into(),
                    name: "Standard".into(),
                    targets: vec![proto::PriorityTargets {
                        priority: proto::Priority::Normal.into(),
                        first_response_minutes: 240,
                        update_interval_minutes: 1440,
                        resolution_minutes: 4800,
                    }],
                }],
                ..Default::default()
            }),
            etag: "\"1\"".into(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("SlaService/ListSettingChanges", &|| {
        proto::ListSettingChangesRequest {
            setting: proto::SettingKind::Calendar.into(),
            page_size: 2,
            page_token: String::new(),
        }
        .encode_to_vec()
    });
    add("SlaService/GetTicketSla", &|| {
        proto::GetTicketSlaRequest {
            ticket_id: at("@2"),
        }
        .encode_to_vec()
    });
    add("SlaService/ListTicketsAtRisk", &|| {
        proto::ListTicketsAtRiskRequest {
            directorate: "roads".into(),
            within_business_minutes: 600,
            page_size: 10,
        }
        .encode_to_vec()
    });
    let query = || proto::KpiQuery {
        from: ts(1_767_225_600),
        to: ts(1_798_761_600),
        year: 0,
        group_by: proto::KpiGrouping::Directorate.into(),
        compare_previous_year: true,
    };
    add("ReportingService/GetKpis", &|| {
        proto::GetKpisRequest {
            query: Some(query()),
        }
        .encode_to_vec()
    });
    add("ReportingService/GetKpis", &|| {
        proto::GetKpisRequest {
            query: Some(proto::KpiQuery {
                year: 2026,
                group_by: proto::KpiGrouping::Employee.into(),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    });
    add("ReportingService/ExportKpisCsv", &|| {
        proto::ExportKpisCsvRequest {
            query: Some(query()),
        }
        .encode_to_vec()
    });
    add("ReportingService/UpdateKpiTargets", &|| {
        proto::UpdateKpiTargetsRequest {
            targets: Some(proto::KpiTargets {
                targets: vec![proto::KpiTarget {
                    year: 2026,
                    scope: "roads".into(),
                    kpi: "resolution_compliance_percent".into(),
                    target: 90.0,
                }],
                ..Default::default()
            }),
            etag: String::new(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("QualityService/UpdateRubric", &|| {
        proto::UpdateRubricRequest {
            rubric: Some(proto::Rubric {
                criteria: vec![
                    proto::RubricCriterion {
                        code: "courtesy".into(),
                        name_ar: "اللباقة".into(),
                        name_en: "Courtesy".into(),
                        weight: 2,
                    },
                    proto::RubricCriterion {
                        code: "accuracy".into(),
                        name_ar: "الدقة".into(),
                        name_en: "Accuracy".into(),
                        weight: 3,
                    },
                ],
                ..Default::default()
            }),
            etag: "\"1\"".into(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("QualityService/RecordQualityReview", &|| {
        proto::RecordQualityReviewRequest {
            ticket_id: at("@3"),
            employee_id: "emp-1001".into(),
            scores: vec![proto::CriterionScore {
                criterion: "courtesy".into(),
                score: 4,
                weight: 0,
            }],
            note: "جيد".into(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("QualityService/ListQualityReviews", &|| {
        proto::ListQualityReviewsRequest {
            employee_id: "emp-1001".into(),
            from: ts(1_767_225_600),
            to: ts(1_798_761_600),
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec()
    });
    add("QualityService/SampleTicketsForReview", &|| {
        proto::SampleTicketsForReviewRequest {
            employee_id: "emp-1001".into(),
            from: ts(1_767_225_600),
            to: ts(1_798_761_600),
            count: 3,
            seed: 7,
        }
        .encode_to_vec()
    });
    add("SatisfactionService/ListCallBackCandidates", &|| {
        proto::ListCallBackCandidatesRequest {
            directorate: "roads".into(),
            settled_within_days: 30,
            max_candidates: 10,
        }
        .encode_to_vec()
    });
    add("SatisfactionService/RecordCallBackAttempt", &|| {
        proto::RecordCallBackAttemptRequest {
            ticket_id: at("@3"),
            outcome: proto::SurveyOutcome::NoAnswer.into(),
            request_id: String::new(),
        }
        .encode_to_vec()
    });
    add("SatisfactionService/ListSurveyRequests", &|| {
        proto::ListSurveyRequestsRequest {
            ticket_id: at("@3"),
        }
        .encode_to_vec()
    });
    seeds
}

fn field_mask(paths: &[&str]) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// `BALAGH_FUZZ_WRITE_SEEDS=DIR`: writes every seed as `DIR/<rpc>-<n>` and exits.
fn write_seeds_if_asked() {
    let Some(dir) = std::env::var_os("BALAGH_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("the seed folder");
    let mut n_written = 0;
    for (i, (name, message)) in seeds().into_iter().enumerate() {
        let index = RPCS
            .iter()
            .position(|rpc| *rpc == name)
            .unwrap_or_else(|| panic!("a seed for an RPC not in the table: {name}"));
        let mut input = vec![u8::try_from(index).expect("fewer than 256 RPCs")];
        input.extend(message);
        let file = dir.join(format!("{}-{i:03}", name.replace('/', "-")));
        std::fs::write(&file, input).expect("a seed file");
        n_written += 1;
    }
    eprintln!("wrote {n_written} seeds into {}", dir.display());
    std::process::exit(0);
}

fuzz_target!(init: {
    write_seeds_if_asked();
    harness();
}, |data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let h = harness();
    let index = usize::from(selector) % RPCS.len();
    let rpc = RPCS[index];
    // A call that never answers is a hang: libFuzzer's -timeout reports it, with a stack.
    let answer = h.runtime.block_on(call(h, index, bytes));
    if let Some(Err(status)) = &answer {
        check(rpc, status);
    }
    if let Some(stats) = &h.stats {
        stats.count(rpc, answer.as_ref());
    }
    let drift = h.clock.now().as_micros() - START_MICROS;
    if drift < MAX_DRIFT_MICROS {
        h.clock.advance_micros(STEP_MICROS);
    }
});
