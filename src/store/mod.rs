//! Storage of tickets, their event log, the catalog and request ids, behind one trait.
//!
//! Architecture invariants:
//! - Every change of a ticket appends its event in the same transaction, and the event's cursor
//!   order is the commit order.
//! - A mutation with a request id records its first answer in the same transaction as its
//!   effect, so a retry can never act twice.
//! - Catalog references (category, wilayat, directorate, outlet, the original of a merge) are
//!   checked inside the writing transaction, so no ticket ever points at nothing.
//! - SQL is never built from input: values are always bound.
//! - A rating (a call-back's or the national platform's) and its survey ledger entry commit
//!   together; a call-back the survey policy refuses writes nothing. The check and the write
//!   share the transaction, and write transactions are serialised (one writer on SQLite, the
//!   advisory lock on PostgreSQL), so two agents never both pass the check for one beneficiary.
//!
//! [`SqliteStore`] is the embedded implementation; a PostgreSQL one implements the same trait.

mod common;
mod inbound;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::catalog::{CatalogData, Category, Directorate, Outlet, Wilayat};
use crate::domain::filter::TicketFilter;
use crate::domain::kpi::{KpiTally, TicketFacts};
use crate::domain::lifecycle::{Action, LifecycleError, TicketEvent};
use crate::domain::quality::{NewQualityReview, QualityReview};
use crate::domain::satisfaction::{
    CallBackCandidate, CallBackQuery, CallBackRefusal, SurveyPolicy, SurveyRefusal, SurveyRequest,
    UnratedCallBack,
};
use crate::domain::sync::{OutboxState, PushKind, SyncPolicy};
use crate::domain::ticket::{Channel, NewTicket, Priority, Satisfaction, Ticket, TicketPatch};
use crate::domain::values::{EmployeeId, ReferenceNumber, TicketId};
use crate::domain::{FieldViolation, Timestamp};

pub(crate) use common::search_document;
pub(crate) use postgres::WRITER_THREAD_NAME as POSTGRES_WRITER_THREAD_NAME;
pub(crate) use postgres::search_text as postgres_search_text;
pub use postgres::{PostgresStore, PostgresStoreOptions, SessionLimits};

/// A part of the service one replica at a time plays on a shared database (see
/// `crate::leader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaderRole {
    /// The SLA escalation sweep.
    EscalationScheduler,
    /// The pull of the national platform's change feed, and the reconcile sweep.
    PlatformPull,
}

impl LeaderRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderRole::EscalationScheduler => "escalation_scheduler",
            LeaderRole::PlatformPull => "platform_pull",
        }
    }

    /// The PostgreSQL advisory lock key of the role: "balagh" in ASCII, then the role's
    /// number (distinct from the write lock's key).
    pub fn lock_key(self) -> i64 {
        let role = match self {
            LeaderRole::EscalationScheduler => 1,
            LeaderRole::PlatformPull => 2,
        };
        (0x62_61_6c_61_67_68 << 8) | role
    }
}

/// A role held by this replica until it is released or lost.
#[async_trait]
pub trait LeaderLease: Send {
    /// Whether this replica still holds the role. On PostgreSQL the role is a session
    /// advisory lock: held as long as the session that took it is alive, and released by the
    /// server when the session ends, also when the process is killed.
    async fn still_held(&mut self) -> bool;

    /// Gives the role up.
    async fn release(self: Box<Self>);
}

/// The lease of a store only one process uses (SQLite): the role is always held.
pub(crate) struct SoleLease;

#[async_trait]
impl LeaderLease for SoleLease {
    async fn still_held(&mut self) -> bool {
        true
    }

    async fn release(self: Box<Self>) {}
}

/// How many parts of a period [`Store::tally_ticket_facts`] reads at once: one per core of
/// the 2-core machines balagh is sized for.
pub const KPI_READ_PARTS: i64 = 2;

/// `[from, to)` cut into [`KPI_READ_PARTS`] consecutive parts of (nearly) equal length.
pub(crate) fn kpi_read_parts(from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Timestamp)> {
    let (start, end) = (from.as_micros(), to.as_micros().max(from.as_micros()));
    let step = (end - start) / KPI_READ_PARTS;
    (0..KPI_READ_PARTS)
        .map(|i| {
            let part_end = if i + 1 == KPI_READ_PARTS {
                end
            } else {
                start + step * (i + 1)
            };
            (
                Timestamp::from_micros(start + step * i),
                Timestamp::from_micros(part_end),
            )
        })
        .collect()
}
pub use sqlite::{
    DEFAULT_MMAP_BYTES as SQLITE_DEFAULT_MMAP_BYTES, MAX_MMAP_BYTES as SQLITE_MAX_MMAP_BYTES,
    SqliteStore, SqliteStoreOptions,
};

/// Opens the store a database URL names: `postgres://` or `postgresql://` for PostgreSQL,
/// anything else (`sqlite://`) for the embedded SQLite store.
pub async fn open_store(
    url: &str,
    max_batch: usize,
    queue_depth: usize,
    readers: u32,
    sync_policy: SyncPolicy,
    clock: std::sync::Arc<dyn crate::domain::Clock>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let options = OpenOptions {
        max_batch,
        queue_depth,
        readers,
        sync_policy,
        ..OpenOptions::default()
    };
    open_store_with(url, options, clock).await
}

/// How a store is opened, whichever its backend; each backend ignores the other's settings.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Most writes committed together in one transaction.
    pub max_batch: usize,
    /// Writes waiting for the writer before callers wait to enqueue.
    pub queue_depth: usize,
    /// Connections in the read pool.
    pub readers: u32,
    /// PostgreSQL: the sessions' timeouts.
    pub limits: SessionLimits,
    /// SQLite: bytes of the file each read connection maps.
    pub sqlite_mmap_bytes: u64,
    /// Which tickets owe pushes to the national platform.
    pub sync_policy: SyncPolicy,
}

impl Default for OpenOptions {
    fn default() -> Self {
        let sqlite = SqliteStoreOptions::new("");
        Self {
            max_batch: sqlite.max_batch,
            queue_depth: sqlite.queue_depth,
            readers: sqlite.readers,
            limits: SessionLimits::default(),
            sqlite_mmap_bytes: sqlite.mmap_bytes,
            sync_policy: sqlite.sync_policy,
        }
    }
}

/// [`open_store`] with every setting of [`OpenOptions`].
pub async fn open_store_with(
    url: &str,
    options: OpenOptions,
    clock: std::sync::Arc<dyn crate::domain::Clock>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PostgresStoreOptions {
            url: url.to_owned(),
            max_batch: options.max_batch,
            queue_depth: options.queue_depth,
            readers: options.readers,
            limits: options.limits,
            sync_policy: options.sync_policy,
        };
        Ok(std::sync::Arc::new(
            PostgresStore::open(options, clock).await?,
        ))
    } else {
        let options = SqliteStoreOptions {
            url: url.to_owned(),
            max_batch: options.max_batch,
            queue_depth: options.queue_depth,
            readers: options.readers,
            mmap_bytes: options.sqlite_mmap_bytes,
            sync_policy: options.sync_policy,
        };
        Ok(std::sync::Arc::new(
            SqliteStore::open(options, clock).await?,
        ))
    }
}

/// Who saw a ticket's personal data, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalDataAccess {
    pub actor: String,
    pub role: String,
    /// The RPC it was seen through.
    pub method: String,
}

/// One recorded reveal of a ticket's personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalDataAccessRecord {
    pub ticket_id: TicketId,
    pub access: PersonalDataAccess,
    pub access_time: Timestamp,
}

/// Who is writing, and the request id that makes the write idempotent.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// Who did it, for the audit trail.
    pub actor: String,
    pub request: Option<RequestKey>,
    /// The tickets the writer may change (a scoped role's directorate or outlet); `None`:
    /// any. Checked inside the write's transaction against the ticket as it stands there.
    pub reach: Option<Reach>,
}

/// Which tickets a write may change. Checked by the store inside the write's transaction,
/// after the ticket is loaded, so that a ticket moved out of the writer's reach between an
/// earlier read and the write is not changed: the write fails with
/// [`StoreError::TicketNotFound`], as a read outside the reach does.
#[derive(Clone)]
pub struct Reach(Arc<dyn Fn(&Ticket) -> bool + Send + Sync>);

impl Reach {
    pub fn new(admits: impl Fn(&Ticket) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(admits))
    }

    pub fn admits(&self, ticket: &Ticket) -> bool {
        (self.0)(ticket)
    }
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reach(..)")
    }
}

/// `TicketNotFound` unless the write's reach admits the ticket.
pub(crate) fn check_reach(reach: Option<&Reach>, ticket: &Ticket) -> Result<(), StoreError> {
    match reach {
        Some(reach) if !reach.admits(ticket) => Err(StoreError::TicketNotFound),
        _ => Ok(()),
    }
}

/// An AIP-155 request id and the fingerprint of the request it came with (operation name and
/// payload), so a reuse with another payload is told apart from a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub request_id: String,
    pub fingerprint: [u8; 32],
}

/// What ListTickets filters on. Empty vectors and `None` do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketQuery {
    pub filter: TicketFilter,
    pub channels: Vec<Channel>,
    pub priorities: Vec<Priority>,
    pub create_time_from: Option<Timestamp>,
    pub create_time_to: Option<Timestamp>,
    pub update_time_from: Option<Timestamp>,
    pub update_time_to: Option<Timestamp>,
    /// Normalised search words; every word must match (as a prefix of a word).
    pub words: Vec<String>,
    /// Only the ticket with this reference (a search text that is a reference number).
    pub reference: Option<ReferenceNumber>,
    /// Only tickets created before this position (the previous page's last).
    pub before_position: Option<i64>,
    pub limit: u32,
}

/// A ticket with its position in the creation order, for keyset pagination.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedTicket {
    pub position: i64,
    pub ticket: Ticket,
}

/// A listed ticket as it is stored: its JSON, not yet decoded. ListTickets keeps the message
/// it makes of a body by the body itself (`grpc::encoded_tickets`), so a ticket listed again
/// unchanged is neither decoded nor encoded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBody {
    pub position: i64,
    pub body: Vec<u8>,
}

impl ListedBody {
    pub fn decode(&self) -> Result<ListedTicket, StoreError> {
        Ok(ListedTicket {
            position: self.position,
            ticket: decode_ticket(&self.body)?,
        })
    }
}

/// A ticket from its stored JSON.
pub fn decode_ticket(body: &[u8]) -> Result<Ticket, StoreError> {
    serde_json::from_slice(body).map_err(|e| StoreError::Corrupt(format!("ticket: {e}")))
}

/// One entry of the change feed: an event and the ticket as it stood right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub event: TicketEvent,
    pub ticket: Ticket,
}

/// A push owed to the national platform, as a worker sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub ticket_id: TicketId,
    pub kind: PushKind,
    /// Stable across attempts: the platform applies a push once whatever the retries.
    pub idempotency_key: String,
    /// The ticket as it stood after the change, and the change itself.
    pub ticket: Ticket,
    pub event: TicketEvent,
    pub state: OutboxState,
    pub n_attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub create_time: Timestamp,
}

/// What became of one attempt to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Delivered,
    RetryAt { at: Timestamp, error: String },
    Dead { error: String },
}

/// The outbox at a glance, for status pages, metrics and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStatus {
    pub pending: u64,
    pub leased: u64,
    pub dead: u64,
    pub delivered: u64,
    pub oldest_pending: Option<Timestamp>,
}

/// Connections of a store's read pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub size: u32,
    pub idle: usize,
}

/// Where the change feed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedBounds {
    /// Cursors before this one can no longer be resumed (their snapshots were pruned).
    pub oldest_resumable: i64,
    /// The newest committed event's cursor (0 when there is none).
    pub latest: i64,
}

/// The tickets matching a filter and the cursor they are consistent with: every change after
/// `cursor` is a change of the state shown here.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub cursor: i64,
    pub tickets: Vec<Ticket>,
}

/// A change from the national platform's feed, already in the registry's terms, for
/// [`Store::apply_platform_changes`].
#[derive(Debug, Clone, PartialEq)]
pub struct InboundChange {
    /// The platform's id of the change: a change applied once is skipped when seen again.
    pub change_id: String,
    pub case_id: String,
    /// The case's version right after the change. A change no newer than the last one applied
    /// to the case is skipped, so an old change never overwrites a newer state.
    pub case_version: i64,
    /// The ticket to take in when no local ticket stands for the case yet (a citizen's case).
    pub new_ticket: Option<NewTicket>,
    /// What the change does to the case's ticket.
    pub action: Option<Action>,
    /// Done instead of `action` when the lifecycle refuses it (a reopen request for a ticket
    /// that is already open is kept as a comment): nothing the citizen said is lost.
    pub fallback: Option<Action>,
    /// Why the part of the change that is needed cannot be taken in (its case does not make
    /// a valid ticket, its text is not valid). The change is then recorded as refused and the
    /// cursor moves past it.
    pub problem: Option<String>,
}

/// What became of one inbound change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InboundOutcome {
    /// A new local ticket for a case filed on the platform.
    Created {
        ticket_id: TicketId,
        reference: ReferenceNumber,
    },
    /// The action was applied to the case's ticket.
    Applied { ticket_id: TicketId },
    /// The lifecycle refused the action; its fallback was applied instead.
    AppliedFallback {
        ticket_id: TicketId,
        refused: String,
    },
    /// Nothing to do locally: the municipality's own change coming back, or a kind of change
    /// the registry does not act on.
    Nothing,
    /// This change was applied before (the feed delivers at least once).
    Duplicate,
    /// Older than what was already applied to the case.
    Stale,
    /// No local ticket stands for the case and the change does not bring one: left to the
    /// reconcile sweep.
    UnknownCase,
    /// The change cannot be taken in; `reason` says why (kept for the reconcile report).
    Refused { reason: String },
}

impl InboundOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            InboundOutcome::Created { .. } => "created",
            InboundOutcome::Applied { .. } => "applied",
            InboundOutcome::AppliedFallback { .. } => "applied_fallback",
            InboundOutcome::Nothing => "nothing",
            InboundOutcome::Duplicate => "duplicate",
            InboundOutcome::Stale => "stale",
            InboundOutcome::UnknownCase => "unknown_case",
            InboundOutcome::Refused { .. } => "refused",
        }
    }
}

/// Where the pull from the platform's change feed stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullState {
    /// The feed cursor to resume after; `None` before the first change was taken in.
    pub cursor: Option<String>,
    /// When a page of the feed was last applied.
    pub last_pull_time: Option<Timestamp>,
    /// Changes taken in since the beginning (duplicates included).
    pub n_changes: u64,
}

/// A versioned setting kept as a document, with an audit trail of every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettingKey {
    /// The business calendar ([`crate::domain::calendar::CalendarSpec`] as JSON).
    Calendar,
    /// The SLA policies and escalation matrix ([`crate::domain::sla::SlaSettingsSpec`]).
    Sla,
    /// KPI targets per year ([`crate::domain::kpi_targets::KpiTargetsSpec`]).
    KpiTargets,
    /// The rubric of staff quality reviews ([`crate::domain::quality::RubricSpec`]).
    QualityRubric,
}

impl SettingKey {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingKey::Calendar => "calendar",
            SettingKey::Sla => "sla",
            SettingKey::KpiTargets => "kpi_targets",
            SettingKey::QualityRubric => "quality_rubric",
        }
    }
}

/// A setting as stored: its JSON document and version (1 for the first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSetting {
    pub version: i64,
    pub value: String,
    pub actor: String,
    pub update_time: Timestamp,
}

/// An open ticket's next SLA times, as the SLA projection keeps them for the escalation
/// sweep and the board of tickets at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaRow {
    pub ticket_id: TicketId,
    pub reference: ReferenceNumber,
    pub directorate: Option<crate::domain::values::Code>,
    /// When the sweep next has something to record; `None`: nothing pending.
    pub next_alert_time: Option<Timestamp>,
    /// The soonest due time of an open deadline not breached yet, and its kind.
    pub next_due_time: Option<Timestamp>,
    pub next_due_kind: Option<crate::domain::sla::DeadlineKind>,
}

impl SlaRow {
    /// A row with no time left to watch: the projection drops it.
    pub fn is_idle(&self) -> bool {
        self.next_alert_time.is_none() && self.next_due_time.is_none()
    }
}

/// How far the SLA projection has followed the event log, and under which settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlaProgress {
    pub cursor: i64,
    pub calendar_version: i64,
    pub sla_version: i64,
}

/// What ListQualityReviews filters on; `None` does not filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityReviewQuery {
    pub employee: Option<EmployeeId>,
    /// Reviews recorded in `[from, to)`.
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Only reviews after this position (the previous page's last).
    pub after_position: Option<i64>,
    pub limit: u32,
}

/// A review with its position in the order of recording, for keyset pagination.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedQualityReview {
    pub position: i64,
    pub review: QualityReview,
}

/// Why a store call failed. The gRPC layer maps each variant to a status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ticket not found")]
    TicketNotFound,
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("the ticket changed since its etag was read (now at version {current_version})")]
    EtagMismatch { current_version: i64 },
    #[error("the setting changed since its etag was read (now at version {current_version})")]
    SettingVersionMismatch { current_version: i64 },
    /// A referenced catalog entry or ticket does not exist or is inactive.
    #[error("unknown reference: {0}")]
    UnknownReference(FieldViolation),
    /// The employee was already reviewed on this ticket (one review per ticket and employee).
    #[error("the employee was already reviewed on this ticket")]
    QualityReviewExists,
    /// The survey policy refuses a call-back (see [`crate::domain::satisfaction`]).
    #[error(transparent)]
    Survey(#[from] SurveyRefusal),
    #[error("the request id was already used with another request")]
    RequestIdReused,
    #[error("the snapshot would hold more than {max} tickets")]
    SnapshotTooLarge { max: u32 },
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("the transaction holding this write failed to commit")]
    CommitFailed,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// An error of the embedded SQLite store's driver (rusqlite).
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data could not be read: {0}")]
    Corrupt(String),
}

impl From<CallBackRefusal> for StoreError {
    fn from(refusal: CallBackRefusal) -> Self {
        match refusal {
            CallBackRefusal::Lifecycle(error) => StoreError::Lifecycle(error),
            CallBackRefusal::Survey(refusal) => StoreError::Survey(refusal),
        }
    }
}

/// How a caller names one ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketLookup {
    Id(TicketId),
    Reference(ReferenceNumber),
}

/// The storage every backend implements, with the same behaviour (see the conformance tests).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_ticket(&self, ctx: WriteContext, new: NewTicket) -> Result<Ticket, StoreError>;

    /// Edits descriptive fields. `expected_version`, when set, must be the current version.
    async fn update_ticket(
        &self,
        ctx: WriteContext,
        id: TicketId,
        expected_version: Option<i64>,
        patch: TicketPatch,
    ) -> Result<Ticket, StoreError>;

    /// Moves a ticket through its lifecycle (or comments on it) and returns it with the event.
    async fn apply_action(
        &self,
        ctx: WriteContext,
        id: TicketId,
        expected_version: Option<i64>,
        action: Action,
    ) -> Result<(Ticket, TicketEvent), StoreError>;

    async fn get_ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError>;

    /// Tickets matching the query, newest first, at most `query.limit`.
    async fn list_tickets(&self, query: &TicketQuery) -> Result<Vec<ListedTicket>, StoreError> {
        self.list_ticket_bodies(query)
            .await?
            .iter()
            .map(ListedBody::decode)
            .collect()
    }

    /// The tickets [`Store::list_tickets`] answers, as their stored JSON.
    async fn list_ticket_bodies(&self, query: &TicketQuery) -> Result<Vec<ListedBody>, StoreError>;

    /// A ticket with its first `max_events` events, oldest first, read as of one moment: when
    /// the ticket has no more than `max_events`, the last is the ticket's version. What
    /// GetTicket answers with (the events give the SLA clock); one read instead of two, and
    /// no write can fall between them. `None` when there is no such ticket.
    async fn get_ticket_with_events(
        &self,
        lookup: TicketLookup,
        max_events: u32,
    ) -> Result<Option<(Ticket, Vec<TicketEvent>)>, StoreError>;

    /// A ticket's events with a cursor above `after_cursor`, oldest first, at most `limit`.
    /// `None` when the ticket does not exist.
    async fn list_ticket_events(
        &self,
        id: TicketId,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Option<Vec<TicketEvent>>, StoreError>;

    async fn catalog(&self) -> Result<CatalogData, StoreError>;

    async fn upsert_wilayat(
        &self,
        ctx: WriteContext,
        wilayat: Wilayat,
    ) -> Result<Wilayat, StoreError>;

    async fn upsert_directorate(
        &self,
        ctx: WriteContext,
        directorate: Directorate,
    ) -> Result<Directorate, StoreError>;

    async fn upsert_outlet(&self, ctx: WriteContext, outlet: Outlet) -> Result<Outlet, StoreError>;

    async fn upsert_category(
        &self,
        ctx: WriteContext,
        category: Category,
    ) -> Result<Category, StoreError>;

    /// Changes with a cursor above `after_cursor`, in cursor order, at most `limit`.
    async fn read_changes(&self, after_cursor: i64, limit: u32) -> Result<Vec<Change>, StoreError>;

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError>;

    /// A consistent snapshot of the tickets matching `filter`, oldest first; refused with
    /// [`StoreError::SnapshotTooLarge`] above `max_tickets`.
    async fn snapshot(
        &self,
        filter: &TicketFilter,
        max_tickets: u32,
    ) -> Result<Snapshot, StoreError>;

    /// Drops the ticket snapshots of events that occurred before `before` from the change
    /// feed (the audit trail keeps the events); returns how many.
    async fn prune_feed(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Changes value after every commit that may have appended events: wakes feed readers.
    fn commits(&self) -> tokio::sync::watch::Receiver<u64>;

    fn pool_status(&self) -> PoolStatus;

    /// Leases up to `limit` pushes that are due, to `owner` for `lease`. An entry is
    /// never handed out while an older entry of the same ticket is pending or dead, so the
    /// platform sees each ticket's changes in order. Expired leases are handed out again.
    async fn claim_outbox(
        &self,
        owner: &str,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records the outcome of an attempt by the lease holder: delivered, to be retried at
    /// `next_attempt_at`, or dead. `false` when `owner` no longer holds the lease (another
    /// worker took it over): the outcome is then not recorded.
    async fn record_push_outcome(
        &self,
        id: i64,
        owner: &str,
        outcome: PushOutcome,
    ) -> Result<bool, StoreError>;

    /// Records the outcomes of several attempts by `owner` in one write, each as
    /// [`Store::record_push_outcome`] records one: the answers, in the order given, are
    /// `false` for the entries whose lease `owner` no longer holds (those outcomes are not
    /// recorded). The worker records what ends while this write is under way in the next.
    async fn record_push_outcomes(
        &self,
        owner: &str,
        outcomes: Vec<(i64, PushOutcome)>,
    ) -> Result<Vec<bool>, StoreError>;

    /// Entries in one state, oldest first, after `after_id`.
    async fn list_outbox(
        &self,
        state: OutboxState,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Puts a dead entry back in the queue with a fresh attempt count; `false` if it was not
    /// dead.
    async fn redrive_outbox(&self, id: i64) -> Result<bool, StoreError>;

    async fn outbox_status(&self) -> Result<OutboxStatus, StoreError>;

    /// Records that `case_id` on the national platform stands for the ticket. Idempotent;
    /// linking a ticket to a second case is refused as corrupt data.
    async fn link_platform_case(
        &self,
        ticket_id: TicketId,
        case_id: &str,
    ) -> Result<(), StoreError>;

    async fn platform_case_id(&self, ticket_id: TicketId) -> Result<Option<String>, StoreError>;

    /// The local ticket standing for a platform case, if any.
    async fn ticket_for_case(&self, case_id: &str) -> Result<Option<TicketId>, StoreError>;

    /// Applies one page of the platform's change feed and moves the pull cursor to
    /// `next_cursor` (when given), all in one transaction: a crash either applies the page and
    /// its cursor or neither. Each change runs in its own savepoint, so a change the registry
    /// refuses is recorded as refused and never blocks the ones after it. `actor` is the audit
    /// name.
    async fn apply_platform_changes(
        &self,
        actor: &str,
        changes: Vec<InboundChange>,
        next_cursor: Option<&str>,
    ) -> Result<Vec<InboundOutcome>, StoreError>;

    /// Queues the ticket's current state for the platform again (a reconcile repair), with a
    /// fresh idempotency key, as a push of `kind` carrying the ticket's latest event. `None`
    /// (and nothing queued) while any push of the ticket is still pending or dead: those
    /// settle it first.
    async fn enqueue_repair_push(
        &self,
        ticket_id: TicketId,
        kind: PushKind,
    ) -> Result<Option<i64>, StoreError>;

    async fn pull_state(&self) -> Result<PullState, StoreError>;

    /// Forgets the inbox records of feed changes applied before `before`; returns how many.
    /// A change delivered again after that is still never applied twice: its case version is
    /// not newer than the one applied, so it is skipped as stale.
    async fn prune_platform_inbox(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Deletes the outbox entries delivered before `before` (pending, retrying and dead ones
    /// stay whatever their age); returns how many. Without it the outbox grows by every push
    /// for ever.
    async fn prune_delivered_pushes(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// The current version of a setting; `None` before it was first stored.
    async fn get_setting(&self, key: SettingKey) -> Result<Option<StoredSetting>, StoreError>;

    /// Stores a new version of a setting and its audit record in one transaction.
    /// `expected_version`, when set, must be the current version (0: not stored yet), else
    /// [`StoreError::SettingVersionMismatch`].
    async fn put_setting(
        &self,
        ctx: WriteContext,
        key: SettingKey,
        value: String,
        expected_version: Option<i64>,
    ) -> Result<StoredSetting, StoreError>;

    /// The audit trail of a setting, newest first, versions below `before_version`.
    async fn list_setting_changes(
        &self,
        key: SettingKey,
        before_version: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredSetting>, StoreError>;

    async fn sla_progress(&self) -> Result<SlaProgress, StoreError>;

    /// Writes projected rows (an idle row removes the ticket's), the KPI facts of the
    /// replayed tickets (replacing their earlier facts) and, when given, the progress they
    /// bring the projection to, in one transaction.
    async fn save_sla_projection(
        &self,
        rows: Vec<SlaRow>,
        facts: Vec<TicketFacts>,
        progress: Option<SlaProgress>,
    ) -> Result<(), StoreError>;

    /// Stores tickets' KPI facts, replacing the earlier facts of the same tickets.
    async fn save_ticket_facts(&self, facts: Vec<TicketFacts>) -> Result<(), StoreError> {
        self.save_sla_projection(Vec::new(), facts, None).await
    }

    /// The KPI facts of the tickets created in `[from, to)`, oldest first.
    async fn ticket_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TicketFacts>, StoreError>;

    /// Takes `role` for this replica when no other replica holds it (`None` when one does).
    async fn try_lead(&self, role: LeaderRole) -> Result<Option<Box<dyn LeaderLease>>, StoreError>;

    /// Counts the KPI facts of the tickets created in `[from, to)` into `tally` as they are
    /// read, in [`KPI_READ_PARTS`] parts of the period read at once.
    async fn tally_ticket_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
        tally: KpiTally,
    ) -> Result<KpiTally, StoreError>;

    /// Tickets whose next SLA alert is due at `now`, soonest first.
    async fn sla_alerts_due(&self, now: Timestamp, limit: u32) -> Result<Vec<SlaRow>, StoreError>;

    /// Tickets (of one directorate, or all) with a deadline due before `due_before`, soonest
    /// first.
    async fn sla_at_risk(
        &self,
        directorate: Option<crate::domain::values::Code>,
        due_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<SlaRow>, StoreError>;

    /// Records a quality review (its reviewer is `ctx.actor`, its time the commit's). Refused
    /// for an unknown ticket ([`StoreError::TicketNotFound`]), for an employee who never
    /// handled the ticket (neither its assignee nor an assignee in its history:
    /// [`StoreError::UnknownReference`] on `employee_id`), and for a second review of the same
    /// employee on the same ticket ([`StoreError::QualityReviewExists`]).
    async fn record_quality_review(
        &self,
        ctx: WriteContext,
        review: NewQualityReview,
    ) -> Result<QualityReview, StoreError>;

    /// Reviews matching the query, in the order they were recorded.
    async fn list_quality_reviews(
        &self,
        query: &QualityReviewQuery,
    ) -> Result<Vec<ListedQualityReview>, StoreError>;

    /// Up to `n` tickets settled (resolved, or closed without a resolution) in `[from, to)`
    /// that `employee` handled and that have no review of them yet, chosen by
    /// [`crate::domain::quality::choose_sample`] with `seed`: the same seed proposes the same
    /// tickets.
    async fn sample_tickets_for_review(
        &self,
        employee: EmployeeId,
        from: Timestamp,
        to: Timestamp,
        n: u32,
        seed: u64,
    ) -> Result<Vec<Ticket>, StoreError>;

    /// Records a rating given on a contact-centre call-back: the rating itself (as
    /// [`Store::apply_action`] with [`Action::Rate`] would) and the call-back in the survey
    /// ledger, in one transaction. Refused, writing nothing, as [`check_call_back`] decides:
    /// a ticket that is not settled ([`StoreError::Lifecycle`]), a beneficiary asked about
    /// another ticket within the policy's quiet period ([`StoreError::Survey`]). The ledger
    /// entry carries the commit's time.
    ///
    /// [`Store::apply_action`] with [`Action::Rate`] records a rating without a ledger entry;
    /// the gRPC API never does that: call-back ratings come here, the national platform's
    /// through [`Store::apply_platform_changes`], which writes the entry with the rating.
    ///
    /// [`check_call_back`]: crate::domain::satisfaction::check_call_back
    async fn rate_on_call_back(
        &self,
        ctx: WriteContext,
        id: TicketId,
        expected_version: Option<i64>,
        satisfaction: Satisfaction,
        policy: SurveyPolicy,
    ) -> Result<(Ticket, TicketEvent), StoreError>;

    /// Records a contact-centre call-back that brought no rating (the beneficiary declined, or
    /// nobody answered) in the survey ledger, at the commit's time. Refused, writing nothing,
    /// for a ticket that is not settled, an anonymous ticket, one without a phone, and a
    /// beneficiary asked about another ticket within the quiet period.
    async fn record_unrated_call_back(
        &self,
        ctx: WriteContext,
        id: TicketId,
        outcome: UnratedCallBack,
        policy: SurveyPolicy,
    ) -> Result<SurveyRequest, StoreError>;

    /// Erases the reporter's personal data of a ticket (see
    /// [`crate::domain::lifecycle::erase_personal_data`]) and, in the same transaction, every
    /// copy of it the store keeps: the ticket bodies of its events and of its pending pushes,
    /// the recorded answers (AIP-155) that carry the ticket, and the beneficiary key of its
    /// survey ledger entries. Returns the ticket as it stands; a ticket with nothing to erase
    /// is returned unchanged (the copies are scrubbed again all the same).
    async fn erase_personal_data(
        &self,
        ctx: WriteContext,
        id: TicketId,
        reason: String,
    ) -> Result<Ticket, StoreError>;

    /// Tickets in a final status (closed, rejected, transferred, merged) unchanged since
    /// `before` whose reporter still has personal data, oldest first, at most `limit`: what
    /// the retention policy anonymises.
    async fn tickets_to_anonymise(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TicketId>, StoreError>;

    /// Records that `actor` (with `role`) saw the personal data of these tickets through
    /// `method`, at the commit's time. Reveals are audited (docs/security.md).
    async fn record_personal_data_access(
        &self,
        access: PersonalDataAccess,
        tickets: Vec<TicketId>,
    ) -> Result<(), StoreError>;

    /// The recorded reveals of one ticket's personal data after position `after`, oldest
    /// first, at most `limit`, each with its position; `None` when the ticket does not exist.
    async fn list_personal_data_accesses(
        &self,
        id: TicketId,
        after: i64,
        limit: u32,
    ) -> Result<Option<Vec<(i64, PersonalDataAccessRecord)>>, StoreError>;

    /// The survey ledger's entries about one ticket, oldest first, at most `limit`; `None`
    /// when the ticket does not exist.
    async fn list_survey_requests(
        &self,
        id: TicketId,
        limit: u32,
    ) -> Result<Option<Vec<SurveyRequest>>, StoreError>;

    /// The contact centre's call-back list, as
    /// [`choose_call_backs`](crate::domain::satisfaction::choose_call_backs) makes it from
    /// the settled, unrated tickets with a phone of the query's period and the ledger entries
    /// of their beneficiaries.
    async fn call_back_candidates(
        &self,
        query: &CallBackQuery,
    ) -> Result<Vec<CallBackCandidate>, StoreError>;

    /// Forgets request ids recorded before `before`; returns how many.
    async fn purge_request_records(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Finishes the writes already accepted, refuses new ones, and closes the database.
    async fn close(&self);
}
