//! The production store: PostgreSQL, shared by several replicas.
//!
//! Same shape as the SQLite store: writes go through one writer per process that owns a
//! writing connection, takes every write waiting in its queue (up to `max_batch`), runs each in
//! its own savepoint of one transaction, commits once (`synchronous_commit` on: durable on
//! return), and only then answers each caller. The writer runs on a thread of its own, so its
//! next statement never waits behind the gRPC handlers. Reads use a pool.
//!
//! Consecutive creates in a batch are written together in two statements (`create_set`):
//! one reads their request ids, categories, wilayats, the reference counter and a cursor
//! each; one writes the tickets, events, pushes, request records and the counter. Each
//! create still gets the answer it would get alone; should the database refuse a statement,
//! the run rolls back and each create is written on its own, so a refused create fails alone.
//! Each statement is a round trip to the server made while holding the write lock, so this is
//! what lets one writer connection keep up with many clients.
//!
//! Invariants:
//! - Every write transaction first takes one transaction-scoped advisory lock, held until it
//!   commits. Event cursors (identity values, drawn by the insert or, for a run of creates,
//!   by `nextval` just before it) are therefore handed out in commit order across all writers
//!   of all replicas: a reader that has seen cursor N has seen every event below N. Group
//!   commit keeps this serialisation cheap.
//! - Reference counters are rows updated in the creating transaction: unique and gap-free
//!   across replicas.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Either, Postgres, QueryBuilder, Row};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::common::{
    Answer, FactsColumns, answer_batch, bind_projection, check_version, from_json,
    inbound_record_fields, new_ticket, not_a_handler, reference, search_document, sla_row, to_json,
    unknown,
};
use super::inbound::{self, InboundTx};
use super::{
    Change, FeedBounds, InboundChange, InboundOutcome, LeaderLease, LeaderRole, ListedBody,
    ListedQualityReview, OutboxEntry, OutboxStatus, PersonalDataAccess, PersonalDataAccessRecord,
    PoolStatus, PullState, PushOutcome, QualityReviewQuery, RequestKey, SettingKey, SlaProgress,
    SlaRow, Snapshot, Store, StoreError, StoredSetting, TicketLookup, TicketQuery, WriteContext,
};
use crate::domain::catalog::{CatalogData, Category, Directorate, Outlet, Wilayat};
use crate::domain::filter::TicketFilter;
use crate::domain::kpi::{KpiTally, TicketFacts};
use crate::domain::lifecycle::{
    Action, EventRecord, TicketEvent, apply_action, apply_patch, created_event,
};
use crate::domain::quality::{self, NewQualityReview, QualityReview};
use crate::domain::satisfaction::{
    self, BeneficiaryKey, CallBackCandidate, CallBackQuery, LastAsk, LedgerEntry, SurveyChannel,
    SurveyOutcome, SurveyPolicy, SurveyRequest, UnratedCallBack,
};
use crate::domain::sync::{OutboxState, PushKind, SyncPolicy, push_for};
use crate::domain::ticket::{
    Assignment, NewTicket, Priority, Satisfaction, Status, Ticket, TicketPatch,
};
use crate::domain::values::{Code, EmployeeId, TicketId};
use crate::domain::{Clock, Timestamp};

/// A SELECT of SLA projection rows (the ticket id as text) followed by the given clauses,
/// assembled from literals at compile time.
macro_rules! select_sla_rows {
    ($clauses:literal) => {
        concat!(
            "SELECT ticket_id::text AS ticket_id, reference, directorate, next_alert_time, ",
            "next_due_time, next_due_kind FROM sla_projection ",
            $clauses
        )
    };
}

/// The columns of `ticket_facts` that `facts_columns_from_pg` reads, each prefixed with `$t`
/// (a table alias and its dot, or nothing), assembled from literals at compile time. Keep
/// them first in a query and in this order: `facts_columns_from_pg` reads them by position
/// (the conformance test `ticket_facts_are_replaced_per_ticket_and_read_by_creation_period`
/// reads every column back).
macro_rules! facts_columns {
    ($t:literal) => {
        concat!(
            $t,
            "ticket_id::text AS ticket_id, ",
            $t,
            "create_time, ",
            $t,
            "ticket_type, ",
            $t,
            "channel, ",
            $t,
            "category, ",
            $t,
            "directorate, ",
            $t,
            "outlet, ",
            $t,
            "wilayat, ",
            $t,
            "support_line, ",
            $t,
            "assignee, ",
            $t,
            "status, ",
            $t,
            "first_response_seconds, ",
            $t,
            "resolution_seconds, ",
            $t,
            "first_response_met, ",
            $t,
            "resolution_met, ",
            $t,
            "n_escalations, ",
            $t,
            "reopened, ",
            $t,
            "transferred, ",
            $t,
            "rejected, ",
            $t,
            "resolved_at_line_1, ",
            $t,
            "satisfaction_score, ",
            $t,
            "resolve_time, ",
            $t,
            "settle_time",
        )
    };
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The search document with hyphens as spaces: PostgreSQL's parser would read "-2026" in
/// "mct-2026-000123" as a signed number, which no prefix query matches.
///
/// Words of 2048 bytes or more are left out: a `tsvector` cannot hold them (PostgreSQL refuses
/// the row), and `to_tsvector` skipped them before migration 0012, which trims them from older
/// rows the same way.
pub(crate) fn search_text(ticket: &Ticket) -> String {
    search_document(ticket)
        .replace('-', " ")
        .split(' ')
        .filter(|word| word.len() < MAX_LEXEME_BYTES)
        .collect::<Vec<_>>()
        .join(" ")
}

/// PostgreSQL's bound on a `tsvector` lexeme, exclusive (2047 bytes at most).
const MAX_LEXEME_BYTES: usize = 2048;

/// The `tsquery` literal that finds the tickets whose search text has a word starting with
/// each of `words` (normalised query words): every word, split at hyphens as the search text
/// is (see [`search_text`]), as a quoted prefix term. The search vector holds the search
/// text's words as they are (migration 0012), so no text parser stands between the two. No
/// term (only hyphens) gives the empty query, which matches nothing.
fn prefix_query(words: &[String]) -> String {
    words
        .iter()
        .flat_map(|w| w.split('-'))
        .filter(|w| !w.is_empty())
        .map(|w| format!("'{}':*", w.replace('\\', "\\\\").replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// The LISTEN/NOTIFY channel on which writers announce commits to every replica.
const COMMIT_CHANNEL: &str = "balagh_commits";

/// Wakes this process's change feed when any replica commits. Reconnects after errors; a
/// missed notification only delays a reader until its next poll.
async fn listen_for_commits(
    pool: PgPool,
    commits: Arc<watch::Sender<u64>>,
    stop: CancellationToken,
) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for commits; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(error) = listener.listen(COMMIT_CHANNEL).await {
            tracing::warn!(error = %error, "cannot listen for commits; retrying");
            continue;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(_) => commits.send_modify(|n| *n = n.wrapping_add(1)),
                    Err(error) => {
                        tracing::warn!(error = %error, "lost the commit listener; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// How often, at most, [`clean_search_index`] empties the search index's pending list.
const SEARCH_INDEX_CLEAN_INTERVAL: Duration = Duration::from_millis(250);

/// Moves the entries of the search index's pending list into the index proper, after
/// commits, at most every [`SEARCH_INDEX_CLEAN_INTERVAL`].
///
/// A GIN index takes new entries into a pending list; the insert that finds the list longer
/// than `gin_pending_list_limit` (4 MB) merges it into the index, in its own statement. That
/// insert is the writer's, under the write lock that every replica's writes wait for: 6% of
/// its CPU at 32 creating clients (docs/benchmarks.md). Merging from this session instead
/// keeps that work off the write path (an insert that finds this session merging goes on
/// without waiting), and keeps the list short for searches, which read all of it.
///
/// Only the index's owner may merge; a session that may not logs it once and stops (inserts
/// then merge as before).
async fn clean_search_index(
    pool: PgPool,
    mut commits: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = commits.changed() => if changed.is_err() { return },
        }
        let cleaned = sqlx::query("SELECT gin_clean_pending_list('tickets_search'::regclass)")
            .execute(&pool)
            .await;
        match cleaned {
            Ok(_) => {}
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => {
                tracing::warn!(
                    "this session does not own the search index, so inserts keep merging its \
                     pending list; run balagh as the owner of its tables"
                );
                return;
            }
            Err(error) => tracing::debug!(error = %error, "cleaning the search index failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SEARCH_INDEX_CLEAN_INTERVAL) => {}
        }
    }
}

/// A role held as a session advisory lock on a connection of its own.
struct PgLease {
    conn: PgConnection,
    key: i64,
}

/// How long a lease's liveness check may take before the role counts as lost.
const LEASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[async_trait]
impl LeaderLease for PgLease {
    async fn still_held(&mut self) -> bool {
        // The lock is the session's: the session answering means the lock is still ours.
        let check = sqlx::query("SELECT 1").execute(&mut self.conn);
        matches!(
            tokio::time::timeout(LEASE_CHECK_TIMEOUT, check).await,
            Ok(Ok(_))
        )
    }

    async fn release(mut self: Box<Self>) {
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn);
        tokio::time::timeout(LEASE_CHECK_TIMEOUT, unlock).await.ok();
        // Closing the session releases the lock in any case.
        self.conn.close().await.ok();
    }
}

/// The advisory lock every write transaction holds until it commits ("balagh" in ASCII).
#[cfg_attr(not(test), allow(dead_code))]
const WRITE_LOCK_KEY: i64 = 0x62_61_6c_61_67_68;

/// Begins a write transaction and takes [`WRITE_LOCK_KEY`] in one round trip (a simple query
/// may hold several statements). A unit test checks that the key is the same.
const BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(108170569672552)";

/// Rolls the current write transaction back and begins another with [`WRITE_LOCK_KEY`], in one
/// round trip. The session's transaction depth, which sqlx keeps, stays 1.
const RESTART_WRITE: &str = "ROLLBACK; BEGIN; SELECT pg_advisory_xact_lock(108170569672552)";

/// How to open a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreOptions {
    /// A `postgres://` URL, for example `postgres://balagh@db.internal/balagh`.
    pub url: String,
    /// Most writes committed together in one transaction.
    pub max_batch: usize,
    /// Writes waiting for the writer before callers wait to enqueue (back-pressure).
    pub queue_depth: usize,
    /// Connections in the read pool.
    pub readers: u32,
    /// Statement and idle timeouts of the store's sessions, and the read pool's wait.
    pub limits: SessionLimits,
    /// Which tickets owe pushes to the national platform (written to the outbox).
    pub sync_policy: SyncPolicy,
}

impl PostgresStoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_batch: 512,
            queue_depth: 4096,
            readers: 4,
            limits: SessionLimits::default(),
            sync_policy: SyncPolicy::default(),
        }
    }
}

/// What the store's PostgreSQL sessions may take (`[store]` in docs/operations.md).
///
/// Serialization failures: the store runs at READ COMMITTED and every write transaction first
/// takes one advisory lock, so writes never wait on each other's rows and PostgreSQL has no
/// serialization failure or deadlock to report. Should one come anyway (40001, 40P01, for
/// example from a manual session holding row locks), or a lock wait or statement outlive
/// these limits, the write fails alone and the caller gets `UNAVAILABLE` (`STORAGE_BUSY`): it
/// retries with the same `request_id`, which makes the retry safe. Nothing retries inside
/// the store, where a retry would hide the cause and hold the writer for every other caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// `statement_timeout` of every session but the migration's (an index build may take
    /// longer); `None` for none. A write whose lock wait or statement outlives it fails.
    pub statement_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout`: a replica frozen inside a write transaction
    /// holds every replica's write lock until PostgreSQL ends its session.
    pub idle_in_transaction_timeout: Option<Duration>,
    /// How long a read waits for a pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Some(Duration::from_secs(30)),
            idle_in_transaction_timeout: Some(Duration::from_secs(60)),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl SessionLimits {
    /// `options` with these limits as session parameters (sent at connection start-up).
    fn apply(&self, options: PgConnectOptions) -> PgConnectOptions {
        let millis = |d: Option<Duration>| d.map_or(0, |d| d.as_millis()).to_string();
        options.options([
            ("statement_timeout", millis(self.statement_timeout)),
            (
                "idle_in_transaction_session_timeout",
                millis(self.idle_in_transaction_timeout),
            ),
        ])
    }
}

type Output = Box<dyn Any + Send>;
type Op = Box<
    dyn for<'c> FnOnce(&'c mut PgConnection, Timestamp) -> BoxFuture<'c, Result<Output, StoreError>>
        + Send,
>;

type Reply = oneshot::Sender<Result<Output, StoreError>>;

/// What a job asks of the writer.
enum Work {
    /// Any write, run in a savepoint of its own.
    Op(Op),
    /// A CreateTicket, written with the other creates of its batch by set-based statements
    /// (see [`create_run`]).
    Create(Box<CreateJob>),
}

struct Job {
    work: Work,
    reply: Reply,
}

/// One CreateTicket as the writer receives it.
struct CreateJob {
    author: Author,
    new: NewTicket,
    request: Option<RequestKey>,
}

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    /// How to open a session outside the pools (a leader's lease).
    connect: PgConnectOptions,
    /// Per role this replica does not hold, the session it last tried to take it on: kept
    /// for the next try, so a replica waiting for a role does not open a session each time.
    candidates: std::sync::Mutex<HashMap<i64, PgConnection>>,
    sync_policy: Arc<SyncPolicy>,
    readers: PgPool,
    commits: watch::Receiver<u64>,
    jobs: mpsc::Sender<Job>,
    stop_writer: CancellationToken,
    /// Resolves when the writer's thread has finished (an error: it panicked).
    writer: Mutex<Option<oneshot::Receiver<()>>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Empties the search index's pending list (see [`clean_search_index`]).
    cleaner: Mutex<Option<JoinHandle<()>>>,
}

impl PostgresStore {
    fn author(&self, actor: String, reach: Option<super::Reach>) -> Author {
        Author {
            actor,
            reach,
            sync: self.sync_policy.clone(),
        }
    }

    /// Opens (creating when missing) the database, runs migrations, loads the default catalog
    /// into an empty database, and starts the writer.
    pub async fn open(
        options: PostgresStoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let unlimited = PgConnectOptions::from_str(&options.url)?.application_name("balagh");
        // sqlx takes an advisory lock while migrating, so replicas starting together are safe.
        // The migration's session has no statement timeout: building an index on a large
        // table may take longer.
        let migrating = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(unlimited.clone())
            .await?;
        MIGRATOR
            .run(&migrating)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))?;
        migrating.close().await;
        let connect = options.limits.apply(unlimited);
        // Two more than the readers: the commit listener keeps a connection of its own, and
        // the search index's cleaner borrows one now and then.
        let readers = PgPoolOptions::new()
            .max_connections(options.readers.max(1) + 2)
            .min_connections(1)
            .acquire_timeout(options.limits.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        let (jobs, queue) = mpsc::channel(options.queue_depth.max(1));
        let (commit_sender, commits) = watch::channel(0);
        let commit_sender = Arc::new(commit_sender);
        let stop_writer = CancellationToken::new();
        let writer = start_writer(
            connect.clone(),
            WriterParts {
                queue,
                stop: stop_writer.clone(),
                clock,
                max_batch: options.max_batch.max(1),
                commits: commit_sender.clone(),
            },
        )
        .await?;
        let listener = tokio::spawn(listen_for_commits(
            readers.clone(),
            commit_sender,
            stop_writer.clone(),
        ));
        let cleaner = tokio::spawn(clean_search_index(
            readers.clone(),
            commits.clone(),
            stop_writer.clone(),
        ));
        Ok(Self {
            connect,
            candidates: std::sync::Mutex::new(HashMap::new()),
            sync_policy: Arc::new(options.sync_policy),
            readers,
            commits,
            jobs,
            stop_writer,
            writer: Mutex::new(Some(writer)),
            listener: Mutex::new(Some(listener)),
            cleaner: Mutex::new(Some(cleaner)),
        })
    }

    /// Hands `op` to the writer and waits until its transaction committed. With a request
    /// key, a recorded first answer is returned instead of running `op` again.
    async fn submit<T, F>(&self, request: Option<RequestKey>, op: F) -> Result<T, StoreError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection, Timestamp) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.run(Work::Op(with_request(request, op))).await
    }

    /// Hands `work` to the writer and waits until its transaction committed.
    async fn run<T: Send + 'static>(&self, work: Work) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { work, reply })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let out = answer.await.map_err(|_| StoreError::ShuttingDown)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Corrupt("the writer answered with another type".into()))
    }
}

fn erase<F>(f: F) -> Op
where
    F: for<'c> FnOnce(&'c mut PgConnection, Timestamp) -> BoxFuture<'c, Result<Output, StoreError>>
        + Send
        + 'static,
{
    Box::new(f)
}

/// `op` as the writer runs it: with a request key, a recorded first answer is returned
/// instead of running `op` again, and `op`'s answer is recorded in its transaction.
fn with_request<T, F>(request: Option<RequestKey>, op: F) -> Op
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: for<'c> FnOnce(&'c mut PgConnection, Timestamp) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    erase(move |conn, now| {
        Box::pin(async move {
            if let Some(key) = &request
                && let Some(first) = replay::<T>(conn, key).await?
            {
                return Ok(Box::new(first) as Output);
            }
            let out = op(conn, now).await?;
            if let Some(key) = &request {
                record(conn, key, now, &out).await?;
            }
            Ok(Box::new(out) as Output)
        })
    })
}

/// A create written on its own, as any other write (when its batch could not be written
/// with set-based statements).
fn create_op(job: CreateJob) -> Op {
    let CreateJob {
        author,
        new,
        request,
    } = job;
    with_request(request, move |conn, now| {
        Box::pin(create_ticket_tx(conn, author, new, now))
    })
}

/// The writer's thread (`balagh bench` counts its CPU as the server's).
pub(crate) const WRITER_THREAD_NAME: &str = "pg-writer";

/// What the writer runs on: its queue, when to stop, and whom to tell of commits.
struct WriterParts {
    queue: mpsc::Receiver<Job>,
    stop: CancellationToken,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    commits: Arc<watch::Sender<u64>>,
}

/// Connects the writer, loads the default catalog into an empty database, and runs the writer
/// on a thread of its own with a single-threaded runtime; returns once it is connected, with a
/// receiver that resolves when the thread finishes.
///
/// Every statement of a write transaction is a round trip during which the write lock is held
/// for every replica. On the server's runtime the writer's next statement waited behind the
/// gRPC handlers it had just answered (about 0.7 ms a round trip at 32 clients,
/// docs/benchmarks.md); on its own thread it is sent as soon as the answer arrives.
async fn start_writer(
    connect: PgConnectOptions,
    parts: WriterParts,
) -> Result<oneshot::Receiver<()>, StoreError> {
    let (ready, started) = oneshot::channel::<Result<(), StoreError>>();
    let (done, finished) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(WRITER_THREAD_NAME.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(StoreError::Corrupt(format!(
                        "cannot start the writer's runtime: {error}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                let connected = async {
                    let mut conn = PgConnection::connect_with(&connect).await?;
                    seed_default_catalog(&mut conn).await?;
                    Ok::<_, StoreError>(conn)
                };
                match connected.await {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        run_writer(conn, parts).await;
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                    }
                }
            });
            let _ = done.send(());
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
    started.await.map_err(|_| StoreError::ShuttingDown)??;
    Ok(finished)
}

async fn run_writer(mut conn: PgConnection, parts: WriterParts) {
    let mut writer = Writer {
        batch: Vec::with_capacity(parts.max_batch),
        closed: false,
        parts,
    };
    while writer.next_batch().await {
        let error = match conn.begin_with(BEGIN_WRITE).await {
            Ok(tx) => {
                writer.write_chain(tx).await;
                continue;
            }
            Err(error) => error,
        };
        refuse_batch(&mut conn, writer.batch.drain(..), &error).await;
    }
    if let Err(error) = conn.close().await {
        tracing::warn!(error = %error, "closing the writer connection failed");
    }
}

/// The writer's loop state.
struct Writer {
    parts: WriterParts,
    /// The writes of the transaction being written.
    batch: Vec<Job>,
    /// Whether the queue was closed (shutdown): what it holds is written, nothing is added.
    closed: bool,
}

impl Writer {
    /// Waits for writes and takes up to `max_batch` of them; false once the queue is closed
    /// and empty.
    async fn next_batch(&mut self) -> bool {
        loop {
            tokio::select! {
                biased;
                n = self.parts.queue.recv_many(&mut self.batch, self.parts.max_batch) => return n > 0,
                () = self.parts.stop.cancelled(), if !self.closed => self.close(),
            }
        }
    }

    /// Refuses new writes, but keeps every write already accepted.
    fn close(&mut self) {
        self.parts.queue.close();
        self.closed = true;
    }

    /// Writes the batch in `tx`, which holds the write lock, and commits it; while more
    /// writes wait, each commit begins the next transaction (see [`commit_and_begin`]) and
    /// the next batch is written in it.
    async fn write_chain(&mut self, mut tx: sqlx::Transaction<'_, Postgres>) {
        loop {
            let (answers, written) =
                write_in(&mut tx, self.batch.drain(..), self.parts.clock.as_ref()).await;
            if let Err(error) = written {
                // Nothing of the batch can commit; dropping `tx` rolls back what is left.
                self.answer(answers, Err(error));
                return;
            }
            if self.parts.stop.is_cancelled() && !self.closed {
                self.close();
            }
            if self.parts.queue.is_empty() {
                let committed = tx.commit().await.map_err(StoreError::from);
                self.answer(answers, committed);
                return;
            }
            let (committed, next) = commit_and_begin(&mut tx).await;
            self.answer(answers, committed);
            let ready = match next {
                Next::Locked => true,
                Next::Unlocked => match sqlx::raw_sql(TAKE_WRITE_LOCK).execute(&mut *tx).await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::error!(error = %error, "cannot take the write lock");
                        false
                    }
                },
                Next::NotBegun => false,
            };
            // Only this task takes from the queue, which was not empty.
            if !ready || !self.next_batch().await {
                // Dropping `tx` rolls back whatever the session is in, if anything.
                return;
            }
        }
    }

    fn answer(&self, answers: Answers, committed: Result<(), StoreError>) {
        if answer_batch(answers, committed) {
            self.parts.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Commits the write transaction and begins the next one, trying for the write lock without
/// waiting, in one round trip (see [`commit_and_begin`]).
const COMMIT_AND_BEGIN: &str = "COMMIT; BEGIN; SELECT pg_try_advisory_xact_lock(108170569672552)";

/// Takes the write lock in a transaction that began without it, waiting for it.
const TAKE_WRITE_LOCK: &str = "SELECT pg_advisory_xact_lock(108170569672552)";

/// Where [`commit_and_begin`] left the session.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// In the next transaction, with the write lock.
    Locked,
    /// In the next transaction, without the lock: another session holds it or waits for it.
    Unlocked,
    /// Not in a transaction that can write: `tx`'s drop rolls back whatever it is in.
    NotBegun,
}

/// Commits `tx` and, in the same round trip, begins the next write transaction on its session
/// and tries for the write lock: when writes are waiting, the round trip of a `BEGIN` of their
/// own is saved (a tenth of a batch's time at 32 creating clients, docs/benchmarks.md). The
/// lock is only tried, never waited for, so the commit's answers are never held up behind
/// another replica's batch; PostgreSQL refuses a try while another session waits for the
/// lock, so replicas still take turns. The writer ends the chain with a plain commit when its
/// queue is empty: an idle writer holds nothing.
///
/// Returns whether the commit went through (a failed commit ran nothing after it), and where
/// the session is.
async fn commit_and_begin(
    tx: &mut sqlx::Transaction<'_, Postgres>,
) -> (Result<(), StoreError>, Next) {
    let mut results = sqlx::raw_sql(COMMIT_AND_BEGIN).fetch_many(&mut **tx);
    // One result per statement, in order: the first is the commit's.
    let mut completed = 0_usize;
    let mut locked = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(Either::Left(_)) => completed += 1,
            Ok(Either::Right(row)) => locked = row.try_get::<bool, _>(0).ok(),
            Err(error) => {
                let committed = if completed == 0 {
                    tracing::error!(error = %error, "group commit failed");
                    Err(StoreError::CommitFailed)
                } else {
                    tracing::error!(error = %error, "cannot begin the next write transaction");
                    Ok(())
                };
                return (committed, Next::NotBegun);
            }
        }
    }
    let next = match locked {
        Some(true) => Next::Locked,
        Some(false) => Next::Unlocked,
        None => {
            tracing::error!("trying for the write lock answered no row");
            Next::NotBegun
        }
    };
    (Ok(()), next)
}

/// Answers a batch that was refused before it was written: its transaction did not begin.
async fn refuse_batch(
    conn: &mut PgConnection,
    jobs: impl Iterator<Item = Job>,
    error: &sqlx::Error,
) {
    tracing::error!(error = %error, "cannot begin a write transaction");
    // BEGIN may have run and the lock failed (a lock wait beyond statement_timeout): the
    // session is then in an aborted transaction that sqlx does not know of.
    if let Err(rollback) = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
        tracing::error!(error = %rollback, "rolling back a failed begin failed");
    }
    for job in jobs {
        let _ = job.reply.send(Err(StoreError::CommitFailed));
    }
}

/// What each write of a batch answers once the batch's commit is known.
type Answers = Vec<Answer<Output>>;

/// Runs the batch in `tx`, which holds the write lock, up to its commit; returns each write's
/// answer, to be sent once the commit is known, and `Err` when the transaction can no longer
/// commit what it holds: sqlx rolled it back (see [`lost_transaction`]), or a failed statement
/// aborted it, whose `COMMIT` would then roll back without an error.
async fn write_in(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    jobs: impl ExactSizeIterator<Item = Job>,
    clock: &dyn Clock,
) -> (Answers, Result<(), StoreError>) {
    let mut answers = Vec::with_capacity(jobs.len());
    // Consecutive creates are written together; any other write ends the run, so writes
    // keep the order in which they were queued.
    let mut creates = Vec::new();
    // Nothing written yet: a run of creates needs no savepoint (see `create_run`).
    let mut fresh = true;
    let mut notified = false;
    for job in jobs {
        match job.work {
            Work::Create(create) => creates.push((*create, job.reply)),
            Work::Op(op) => {
                if !creates.is_empty() {
                    let run = std::mem::take(&mut creates);
                    notified |= create_run(tx, run, fresh, clock.now(), &mut answers).await;
                }
                fresh = false;
                let outcome = in_savepoint(tx, op, clock.now()).await;
                answers.push((job.reply, outcome));
            }
        }
    }
    if !creates.is_empty() {
        notified |= create_run(tx, creates, fresh, clock.now(), &mut answers).await;
    }
    if lost_transaction(tx) {
        tracing::error!("the write transaction was rolled back under its batch");
        return (answers, Err(StoreError::CommitFailed));
    }
    // Other replicas' change feeds wake up when this commits (NOTIFY is delivered at commit).
    // It only wakes them: they read the event log, which is the truth. A run of creates
    // notifies in its own statement.
    if !notified
        && let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(COMMIT_CHANNEL)
            .execute(&mut **tx)
            .await
    {
        tracing::error!(error = %error, "could not notify other replicas of a commit");
        return (answers, Err(StoreError::CommitFailed));
    }
    (answers, Ok(()))
}

/// Whether the write transaction is gone. A `SAVEPOINT` refused by the server (the transaction
/// was aborted outside any savepoint, say when `RESTART_WRITE` lost its lock wait) makes sqlx
/// roll the whole transaction back and count it as ended. A write begun after that would begin
/// a transaction of its own, without the write lock, so nothing more is written in it: its
/// writes answer `CommitFailed`, and so does every write the rollback discarded.
fn lost_transaction(conn: &PgConnection) -> bool {
    !conn.is_in_transaction()
}

/// Runs `op` in a savepoint of its own: a failing (or panicking) write rolls back alone
/// instead of taking the batch, or the writer and every later write, down with it.
async fn in_savepoint(
    conn: &mut PgConnection,
    op: Op,
    now: Timestamp,
) -> Result<Output, StoreError> {
    if lost_transaction(conn) {
        return Err(StoreError::CommitFailed);
    }
    let mut savepoint = conn.begin().await?;
    match caught(op(&mut savepoint, now)).await {
        Ok(out) => savepoint
            .commit()
            .await
            .map(|()| out)
            .map_err(StoreError::from),
        Err(error) => {
            if let Err(rollback) = savepoint.rollback().await {
                tracing::error!(error = %rollback, "rolling back a savepoint failed");
            }
            Err(error)
        }
    }
}

/// Writes a run of consecutive creates together (see [`create_set`]). Should that fail, the
/// run rolls back and each create is written on its own, so a create the database refuses
/// fails alone. Returns whether the run's write notified other replicas.
///
/// A run that is the first write of its transaction (`fresh`) is written without a savepoint:
/// a savepoint is a round trip, and a subtransaction that PostgreSQL must track for every row
/// it writes. Its failure rolls the whole transaction back instead (nothing else is in it)
/// and begins a new one with the write lock; the creates are then written one by one.
async fn create_run(
    conn: &mut PgConnection,
    run: Vec<(CreateJob, Reply)>,
    fresh: bool,
    now: Timestamp,
    answers: &mut Answers,
) -> bool {
    if lost_transaction(conn) {
        answers.extend(
            run.into_iter()
                .map(|(_, reply)| (reply, Err(StoreError::CommitFailed))),
        );
        return false;
    }
    let jobs: Vec<&CreateJob> = run.iter().map(|(job, _)| job).collect();
    let written = if fresh {
        match caught(create_set(conn, &jobs, now)).await {
            Ok(outcome) => Some(outcome),
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    n_creates = jobs.len(),
                    "writing a run of creates together failed; writing each on its own"
                );
                if let Err(restart) = sqlx::raw_sql(RESTART_WRITE).execute(&mut *conn).await {
                    // The transaction stays aborted: every write after this fails, and so
                    // does the commit's answer to each.
                    tracing::error!(error = %restart, "restarting a write transaction failed");
                }
                None
            }
        }
    } else {
        match conn.begin().await {
            Ok(mut savepoint) => match caught(create_set(&mut savepoint, &jobs, now)).await {
                Ok(outcome) => match savepoint.commit().await {
                    Ok(()) => Some(outcome),
                    Err(error) => {
                        tracing::warn!(error = %error, "releasing the savepoint of a run of creates failed");
                        None
                    }
                },
                Err(error) => {
                    tracing::warn!(
                        error = %error,
                        n_creates = jobs.len(),
                        "writing a run of creates together failed; writing each on its own"
                    );
                    if let Err(rollback) = savepoint.rollback().await {
                        tracing::error!(error = %rollback, "rolling back a savepoint failed");
                    }
                    None
                }
            },
            Err(error) => {
                tracing::warn!(error = %error, "cannot open a savepoint for a run of creates");
                None
            }
        }
    };
    match written {
        Some(RunOutcome {
            answers: outcomes,
            notified,
        }) => {
            answers.extend(run.into_iter().map(|(_, reply)| reply).zip(outcomes));
            notified
        }
        None => {
            for (job, reply) in run {
                let outcome = in_savepoint(conn, create_op(job), now).await;
                answers.push((reply, outcome));
            }
            false
        }
    }
}

/// `write` with a panic turned into an error, so a bug in one write cannot take the writer
/// down with it.
async fn caught<T>(
    write: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    AssertUnwindSafe(write)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Corrupt("a write panicked".into())))
}

/// What became of one create of a run while it is written.
enum Pending {
    /// Answered without writing: replayed, refused, or a copy of an earlier create of the run
    /// with the same request id (`Copy(i)`, resolved once `i` is written).
    Done(Result<Output, StoreError>),
    Copy(usize),
    /// Passed the checks: to be written with the category's defaults.
    Valid(Code, Priority),
    /// Written.
    Written(Box<Ticket>),
}

/// Writes every create of `jobs` with two statements: one reads what the run needs (the
/// request ids answered before, the categories and wilayats, the year's reference counter,
/// and a cursor per create), one writes the tickets, their created events, the pushes, the
/// request records and the counter together, and notifies other replicas. Each statement is a
/// round trip during which the write lock is held, and each JSON body is parsed once: the
/// event and the push take the ticket's parsed body. Sharing the per-statement cost is what
/// group commit is for.
///
/// Each create gets the answer its write alone would get (the same refusals, in the same
/// order: request id, category, wilayat), and references and cursors are handed out in queue
/// order. An `Err` means the database refused a statement; the caller then rolls the run back
/// and writes each create on its own.
async fn create_set(
    conn: &mut PgConnection,
    jobs: &[&CreateJob],
    now: Timestamp,
) -> Result<RunOutcome, StoreError> {
    let mut pending: Vec<Option<Pending>> = (0..jobs.len()).map(|_| None).collect();
    let year = now.muscat_year();
    let reads = RunReads::fetch(conn, jobs, year).await?;

    // Request ids answered before, by this run or by an earlier transaction.
    let mut first_in_run: HashMap<&str, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let Some(key) = &job.request else { continue };
        if let Some((fingerprint, response)) = reads.recorded.get(&key.request_id) {
            pending[i] = Some(Pending::Done(if *fingerprint != key.fingerprint {
                Err(StoreError::RequestIdReused)
            } else {
                from_json::<Ticket>(response, "request record").map(|t| Box::new(t) as Output)
            }));
        } else if let Some(&first) = first_in_run.get(key.request_id.as_str()) {
            pending[i] = Some(
                if jobs[first].request.as_ref().map(|k| k.fingerprint) == Some(key.fingerprint) {
                    Pending::Copy(first)
                } else {
                    Pending::Done(Err(StoreError::RequestIdReused))
                },
            );
        } else {
            first_in_run.insert(&key.request_id, i);
        }
    }

    // The catalog checks.
    for (i, job) in jobs.iter().enumerate() {
        // A copy is checked too: when its first fails, it fails the same way.
        if matches!(pending[i], Some(Pending::Done(_))) {
            continue;
        }
        let checked =
            category_defaults("category", reads.categories.get(job.new.category.as_str()))
                .and_then(|defaults| match &job.new.location.wilayat {
                    Some(wilayat) if !reads.wilayats.contains(wilayat.as_str()) => Err(unknown(
                        "location.wilayat",
                        "is not a wilayat of Muscat Governorate",
                    )),
                    _ => Ok(defaults),
                });
        match (checked, &pending[i]) {
            (Err(error), _) => pending[i] = Some(Pending::Done(Err(error))),
            (Ok(_), Some(Pending::Copy(_))) => {}
            (Ok((directorate, priority)), _) => {
                pending[i] = Some(Pending::Valid(directorate, priority));
            }
        }
    }

    // References and cursors in queue order: the write lock keeps both from moving under us.
    let mut rows = RunRows::default();
    let mut next_number = reads.last_reference;
    let mut cursors = reads.cursors.iter().copied();
    for (i, job) in jobs.iter().enumerate() {
        let (directorate, priority) = match pending[i].take() {
            Some(Pending::Valid(directorate, priority)) => (directorate, priority),
            other => {
                pending[i] = other;
                continue;
            }
        };
        next_number += 1;
        let ticket = new_ticket(
            job.new.clone(),
            reference(year, next_number)?,
            directorate,
            priority,
            now,
            &job.author.actor,
        );
        let cursor = cursors
            .next()
            .ok_or_else(|| StoreError::Corrupt("a run has fewer cursors than creates".into()))?;
        let body = to_json(&ticket)?;
        let event = TicketEvent {
            cursor,
            ticket_id: ticket.id,
            actor: job.author.actor.clone(),
            occur_time: now,
            version: ticket.version,
            record: created_event(&ticket),
        };
        rows.tickets.push(&ticket, &body);
        rows.events.push(&event)?;
        // The push this change owes the national platform commits with the change.
        if job.author.sync.applies_to(&ticket)
            && let Some(kind) = push_for(&ticket, &event.record)
        {
            rows.outbox.push(&ticket, &event, kind)?;
        }
        if let Some(key) = &job.request {
            // The recorded answer is the ticket as written: its body.
            rows.records.push(key, body);
        }
        pending[i] = Some(Pending::Written(Box::new(ticket)));
    }
    let notified = if rows.tickets.ids.is_empty() {
        false
    } else {
        rows.insert(conn, year, reads.last_reference, next_number, now)
            .await?;
        true
    };

    // Every create's answer; a copy takes the answer of the create it repeats.
    let copied: Vec<Option<Ticket>> = pending
        .iter()
        .map(|p| match p {
            Some(Pending::Copy(first)) => match &pending[*first] {
                Some(Pending::Written(ticket)) => Some((**ticket).clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let answers = pending
        .into_iter()
        .zip(copied)
        .map(|(p, copy)| match (p, copy) {
            (Some(Pending::Done(outcome)), _) => outcome,
            (Some(Pending::Written(ticket)), _) => Ok(ticket as Output),
            (_, Some(ticket)) => Ok(Box::new(ticket) as Output),
            _ => Err(StoreError::Corrupt(
                "a create of its run got no answer".into(),
            )),
        })
        .collect();
    Ok(RunOutcome { answers, notified })
}

/// What a run of creates answered, and whether its write notified other replicas.
struct RunOutcome {
    answers: Vec<Result<Output, StoreError>>,
    notified: bool,
}

/// What a run of creates reads before it writes, in one statement.
struct RunReads {
    /// Request id to (fingerprint, recorded answer), for the run's request ids answered before.
    recorded: HashMap<String, (Vec<u8>, String)>,
    /// The run's categories that exist, by code.
    categories: HashMap<String, PgRow>,
    /// The run's wilayats that exist.
    wilayats: HashSet<String>,
    /// The year's last reference number (0 before the year's first ticket).
    last_reference: i64,
    /// One event cursor per create of the run, ascending; a create that is not written
    /// leaves its cursor unused (a gap, as a rolled-back write leaves one).
    cursors: Vec<i64>,
}

impl RunReads {
    /// Reads them under the write lock, which every writer of the counter and of the event log
    /// holds until it commits: the counter cannot move and the cursors follow every cursor
    /// already committed.
    async fn fetch(
        conn: &mut PgConnection,
        jobs: &[&CreateJob],
        year: i32,
    ) -> Result<Self, StoreError> {
        let request_ids: Vec<&str> = jobs
            .iter()
            .filter_map(|job| job.request.as_ref().map(|key| key.request_id.as_str()))
            .collect();
        let categories: Vec<&str> = jobs.iter().map(|job| job.new.category.as_str()).collect();
        let wilayats: Vec<&str> = jobs
            .iter()
            .filter_map(|job| job.new.location.wilayat.as_ref().map(Code::as_str))
            .collect();
        let n_cursors =
            i64::try_from(jobs.len()).map_err(|_| StoreError::Corrupt("run size".into()))?;
        let mut reads = Self {
            recorded: HashMap::new(),
            categories: HashMap::new(),
            wilayats: HashSet::new(),
            last_reference: 0,
            cursors: Vec::with_capacity(jobs.len()),
        };
        let mut rows = sqlx::query(
            "SELECT 'record' AS kind, request_id AS code, fingerprint, response,
                 NULL::text AS default_directorate_code, NULL::text AS default_priority,
                 NULL::bool AS active, NULL::int8 AS number
             FROM request_records WHERE request_id = ANY($1)
             UNION ALL
             SELECT 'category', code, NULL, NULL, default_directorate_code, default_priority,
                 active, NULL
             FROM categories WHERE code = ANY($2)
             UNION ALL
             SELECT 'wilayat', code, NULL, NULL, NULL, NULL, NULL, NULL
             FROM wilayats WHERE code = ANY($3)
             UNION ALL
             SELECT 'counter', NULL, NULL, NULL, NULL, NULL, NULL, last_value
             FROM reference_counters WHERE year = $4
             UNION ALL
             SELECT 'cursor', NULL, NULL, NULL, NULL, NULL, NULL, nextval(s.events)
             FROM (SELECT pg_get_serial_sequence('ticket_events', 'seq')::regclass AS events) s,
                 generate_series(1, $5)",
        )
        .bind(&request_ids)
        .bind(&categories)
        .bind(&wilayats)
        .bind(year)
        .bind(n_cursors)
        .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            match row.try_get::<&str, _>("kind")? {
                "record" => {
                    reads.recorded.insert(
                        row.try_get("code")?,
                        (row.try_get("fingerprint")?, row.try_get("response")?),
                    );
                }
                "category" => {
                    reads.categories.insert(row.try_get("code")?, row);
                }
                "wilayat" => {
                    reads.wilayats.insert(row.try_get("code")?);
                }
                "counter" => reads.last_reference = row.try_get("number")?,
                _ => reads.cursors.push(row.try_get("number")?),
            }
        }
        drop(rows);
        reads.cursors.sort_unstable();
        Ok(reads)
    }
}

async fn replay<T: DeserializeOwned>(
    conn: &mut PgConnection,
    key: &RequestKey,
) -> Result<Option<T>, StoreError> {
    let row =
        sqlx::query("SELECT fingerprint, response FROM request_records WHERE request_id = $1")
            .bind(&key.request_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let fingerprint: Vec<u8> = row.try_get("fingerprint")?;
    if fingerprint != key.fingerprint {
        return Err(StoreError::RequestIdReused);
    }
    let response: String = row.try_get("response")?;
    serde_json::from_str(&response)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("request record: {e}")))
}

async fn record<T: Serialize>(
    conn: &mut PgConnection,
    key: &RequestKey,
    now: Timestamp,
    out: &T,
) -> Result<(), StoreError> {
    let response = to_json(out)?;
    sqlx::query(
        "INSERT INTO request_records (request_id, fingerprint, response, create_time) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.request_id)
    .bind(key.fingerprint.as_slice())
    .bind(response)
    .bind(now.as_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn seed_default_catalog(conn: &mut PgConnection) -> Result<(), StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM wilayats")
        .fetch_one(&mut *conn)
        .await?;
    if n > 0 {
        return Ok(());
    }
    let catalog = CatalogData::default_catalog().map_err(StoreError::Corrupt)?;
    let mut tx = conn.begin().await?;
    for w in &catalog.wilayats {
        put_wilayat(&mut tx, w).await?;
    }
    for d in &catalog.directorates {
        put_directorate(&mut tx, d).await?;
    }
    for o in &catalog.outlets {
        put_outlet(&mut tx, o).await?;
    }
    for c in &catalog.categories {
        put_category(&mut tx, c).await?;
    }
    tx.commit().await?;
    tracing::info!(
        n_categories = catalog.categories.len(),
        "loaded the default catalog into an empty database"
    );
    Ok(())
}

async fn put_wilayat(conn: &mut PgConnection, w: &Wilayat) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO wilayats (code, name_ar, name_en) VALUES ($1, $2, $3)
         ON CONFLICT (code) DO UPDATE SET name_ar = excluded.name_ar, name_en = excluded.name_en",
    )
    .bind(w.code.as_str())
    .bind(&w.name_ar)
    .bind(&w.name_en)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn put_directorate(conn: &mut PgConnection, d: &Directorate) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO directorates (code, name_ar, name_en, active) VALUES ($1, $2, $3, $4)
         ON CONFLICT (code) DO UPDATE SET name_ar = excluded.name_ar, name_en = excluded.name_en,
             active = excluded.active",
    )
    .bind(d.code.as_str())
    .bind(&d.name_ar)
    .bind(&d.name_en)
    .bind(d.active)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn put_outlet(conn: &mut PgConnection, o: &Outlet) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outlets (code, directorate_code, wilayat_code, name_ar, name_en, active)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (code) DO UPDATE SET directorate_code = excluded.directorate_code,
             wilayat_code = excluded.wilayat_code, name_ar = excluded.name_ar,
             name_en = excluded.name_en, active = excluded.active",
    )
    .bind(o.code.as_str())
    .bind(o.directorate_code.as_str())
    .bind(o.wilayat_code.as_str())
    .bind(&o.name_ar)
    .bind(&o.name_en)
    .bind(o.active)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn put_category(conn: &mut PgConnection, c: &Category) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO categories (code, name_ar, name_en, default_directorate_code,
             default_priority, sla_policy_code, active)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (code) DO UPDATE SET name_ar = excluded.name_ar, name_en = excluded.name_en,
             default_directorate_code = excluded.default_directorate_code,
             default_priority = excluded.default_priority,
             sla_policy_code = excluded.sla_policy_code, active = excluded.active",
    )
    .bind(c.code.as_str())
    .bind(&c.name_ar)
    .bind(&c.name_en)
    .bind(c.default_directorate_code.as_str())
    .bind(c.default_priority.as_str())
    .bind(c.sla_policy_code.as_str())
    .bind(c.active)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The category's routing defaults, when it exists and is in use.
async fn check_category(
    conn: &mut PgConnection,
    field: &str,
    code: &Code,
) -> Result<(Code, Priority), StoreError> {
    let row = sqlx::query(
        "SELECT default_directorate_code, default_priority, active FROM categories WHERE code = $1",
    )
    .bind(code.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    category_defaults(field, row.as_ref())
}

/// A category's default directorate and priority from its row, or why `field` names no
/// category a ticket may have.
fn category_defaults(field: &str, row: Option<&PgRow>) -> Result<(Code, Priority), StoreError> {
    let Some(row) = row else {
        return Err(unknown(field, "is not a category of the catalog"));
    };
    if !row.try_get::<bool, _>("active")? {
        return Err(unknown(field, "is a category no longer in use"));
    }
    let directorate: String = row.try_get("default_directorate_code")?;
    let priority: String = row.try_get("default_priority")?;
    let directorate = Code::parse("default_directorate_code", &directorate)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let priority = Priority::from_str_opt(&priority)
        .ok_or_else(|| StoreError::Corrupt(format!("category priority {priority}")))?;
    Ok((directorate, priority))
}

async fn check_exists(
    conn: &mut PgConnection,
    sql: &'static str,
    code: &Code,
) -> Result<Option<bool>, StoreError> {
    let active: Option<bool> = sqlx::query_scalar(sql)
        .bind(code.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(active)
}

async fn check_wilayat(
    conn: &mut PgConnection,
    field: &str,
    code: &Code,
) -> Result<(), StoreError> {
    match check_exists(conn, "SELECT TRUE FROM wilayats WHERE code = $1", code).await? {
        Some(_) => Ok(()),
        None => Err(unknown(field, "is not a wilayat of Muscat Governorate")),
    }
}

async fn check_directorate(
    conn: &mut PgConnection,
    field: &str,
    code: &Code,
) -> Result<(), StoreError> {
    match check_exists(
        conn,
        "SELECT active FROM directorates WHERE code = $1",
        code,
    )
    .await?
    {
        Some(true) => Ok(()),
        Some(false) => Err(unknown(field, "is a directorate no longer in use")),
        None => Err(unknown(field, "is not a directorate of the catalog")),
    }
}

async fn check_assignment(
    conn: &mut PgConnection,
    assignment: &Assignment,
) -> Result<(), StoreError> {
    if let Some(directorate) = &assignment.directorate {
        check_directorate(conn, "directorate", directorate).await?;
    }
    if let Some(outlet) = &assignment.outlet {
        let row = sqlx::query("SELECT directorate_code, active FROM outlets WHERE code = $1")
            .bind(outlet.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Err(unknown("outlet", "is not an outlet of the catalog"));
        };
        if !row.try_get::<bool, _>("active")? {
            return Err(unknown("outlet", "is an outlet no longer in use"));
        }
        let owner: String = row.try_get("directorate_code")?;
        if assignment.directorate.as_ref().map(Code::as_str) != Some(owner.as_str()) {
            return Err(unknown("outlet", "belongs to another directorate"));
        }
    }
    Ok(())
}

/// The columns of a run's new tickets, for one multi-row insert.
#[derive(Default)]
struct TicketRows {
    ids: Vec<String>,
    references: Vec<String>,
    types: Vec<&'static str>,
    channels: Vec<&'static str>,
    categories: Vec<String>,
    priorities: Vec<&'static str>,
    statuses: Vec<&'static str>,
    directorates: Vec<Option<String>>,
    outlets: Vec<Option<String>>,
    wilayats: Vec<Option<String>>,
    assignees: Vec<Option<String>>,
    support_lines: Vec<Option<i16>>,
    create_times: Vec<i64>,
    update_times: Vec<i64>,
    versions: Vec<i64>,
    bodies: Vec<String>,
    search_texts: Vec<String>,
    created_by: Vec<Option<String>>,
}

impl TicketRows {
    fn push(&mut self, ticket: &Ticket, body: &str) {
        let code = |c: &Option<Code>| c.as_ref().map(|c| c.as_str().to_owned());
        self.ids.push(ticket.id.to_string());
        self.references.push(ticket.reference.to_string());
        self.types.push(ticket.ticket_type.as_str());
        self.channels.push(ticket.channel.as_str());
        self.categories.push(ticket.category.as_str().to_owned());
        self.priorities.push(ticket.priority.as_str());
        self.statuses.push(ticket.status.as_str());
        self.directorates.push(code(&ticket.assignment.directorate));
        self.outlets.push(code(&ticket.assignment.outlet));
        self.wilayats.push(code(&ticket.location.wilayat));
        self.assignees.push(
            ticket
                .assignment
                .assignee
                .as_ref()
                .map(|a| a.as_str().to_owned()),
        );
        self.support_lines.push(
            ticket
                .assignment
                .support_line
                .map(|l| i16::from(l.number())),
        );
        self.create_times.push(ticket.create_time.as_micros());
        self.update_times.push(ticket.update_time.as_micros());
        self.versions.push(ticket.version);
        self.bodies.push(body.to_owned());
        self.search_texts.push(search_text(ticket));
        self.created_by.push(ticket.created_by.clone());
    }
}

/// The created events of a run's new tickets, one per ticket in the tickets' order (their
/// ticket ids are the tickets', and their snapshot is the ticket's body, taken from the
/// ticket rows in the statement).
#[derive(Default)]
struct EventRows {
    cursors: Vec<i64>,
    kinds: Vec<&'static str>,
    actors: Vec<String>,
    versions: Vec<i64>,
    bodies: Vec<String>,
}

impl EventRows {
    fn push(&mut self, event: &TicketEvent) -> Result<(), StoreError> {
        self.cursors.push(event.cursor);
        self.kinds.push(event.record.kind.as_str());
        self.actors.push(event.actor.clone());
        self.versions.push(event.version);
        self.bodies.push(to_json(&event.record)?);
        Ok(())
    }
}

/// The pushes a run of creates owes the national platform (their ticket snapshot is the
/// ticket's body, taken from the ticket rows in the statement).
#[derive(Default)]
struct OutboxRows {
    ticket_ids: Vec<String>,
    cursors: Vec<i64>,
    kinds: Vec<&'static str>,
    keys: Vec<String>,
    event_bodies: Vec<String>,
}

impl OutboxRows {
    fn push(
        &mut self,
        ticket: &Ticket,
        event: &TicketEvent,
        kind: PushKind,
    ) -> Result<(), StoreError> {
        self.ticket_ids.push(ticket.id.to_string());
        self.cursors.push(event.cursor);
        self.kinds.push(kind.as_str());
        self.keys
            .push(format!("balagh-{}-{}", ticket.id, event.cursor));
        self.event_bodies.push(to_json(event)?);
        Ok(())
    }
}

/// The first answers of a run's creates that carried a request id.
#[derive(Default)]
struct RecordRows {
    request_ids: Vec<String>,
    fingerprints: Vec<Vec<u8>>,
    responses: Vec<String>,
}

impl RecordRows {
    fn push(&mut self, key: &RequestKey, response: String) {
        self.request_ids.push(key.request_id.clone());
        self.fingerprints.push(key.fingerprint.to_vec());
        self.responses.push(response);
    }
}

/// Everything a run of creates writes.
#[derive(Default)]
struct RunRows {
    tickets: TicketRows,
    events: EventRows,
    outbox: OutboxRows,
    records: RecordRows,
}

impl RunRows {
    /// Writes the run in one statement: the year's counter moves from `last_reference` to
    /// `new_reference`, the tickets (in queue order, so `seq` follows it), their created
    /// events at the cursors read under the write lock, the pushes and the request records;
    /// and other replicas are notified (delivered at commit). The event and the push take the
    /// ticket's body as the tickets insert parsed it.
    ///
    /// The counter is moved by the run's size and checked against `new_reference`: a counter
    /// written by a session without the write lock fails the run instead of a reference
    /// being handed out twice.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        year: i32,
        last_reference: i64,
        new_reference: i64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let t = &self.tickets;
        let (e, o, r) = (&self.events, &self.outbox, &self.records);
        let counter: Option<i64> = sqlx::query_scalar(
            "WITH counter AS (
                 INSERT INTO reference_counters (year, last_value) VALUES ($1, $2)
                 ON CONFLICT (year) DO UPDATE SET last_value = reference_counters.last_value + $2
                 RETURNING last_value
             ), new_tickets AS (
                 INSERT INTO tickets (id, reference, ticket_type, channel, category, priority,
                     status, directorate, outlet, wilayat, assignee, support_line, create_time,
                     update_time, version, body, search_text, created_by)
                 SELECT id::uuid, reference, ticket_type, channel, category, priority, status,
                     directorate, outlet, wilayat, assignee, support_line, create_time,
                     update_time, version, body::jsonb, search_text, created_by
                 FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                     $14::text[], $15::int2[], $16::int8[], $17::int8[], $18::int8[],
                     $19::text[], $20::text[], $21::text[])
                     WITH ORDINALITY AS t(id, reference, ticket_type, channel, category,
                         priority, status, directorate, outlet, wilayat, assignee, support_line,
                         create_time, update_time, version, body, search_text, created_by, n)
                 ORDER BY n
                 RETURNING id, body
             ), new_events AS (
                 INSERT INTO ticket_events (seq, ticket_id, kind, actor, occur_time, version,
                     body, ticket_body)
                 OVERRIDING SYSTEM VALUE
                 SELECT e.seq, t.id, e.kind, e.actor, $3, e.version, e.body::jsonb, t.body
                 FROM unnest($22::int8[], $23::text[], $24::text[], $25::text[], $26::int8[],
                     $27::text[]) AS e(seq, ticket_id, kind, actor, version, body)
                 JOIN new_tickets t ON t.id = e.ticket_id::uuid
                 ORDER BY e.seq
             ), pushes AS (
                 INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key,
                     ticket_body, event_body, state, next_attempt_at, create_time, update_time)
                 SELECT t.id, o.event_cursor, o.kind, o.idempotency_key, t.body,
                     o.event_body::jsonb, 'pending', $3, $3, $3
                 FROM unnest($28::text[], $29::int8[], $30::text[], $31::text[], $32::text[])
                     AS o(ticket_id, event_cursor, kind, idempotency_key, event_body)
                 JOIN new_tickets t ON t.id = o.ticket_id::uuid
                 ORDER BY o.event_cursor
             ), records AS (
                 INSERT INTO request_records (request_id, fingerprint, response, create_time)
                 SELECT request_id, fingerprint, response, $3
                 FROM unnest($33::text[], $34::bytea[], $35::text[])
                     AS r(request_id, fingerprint, response)
             )
             SELECT (SELECT last_value FROM counter) FROM (SELECT pg_notify($36, '')) AS notified",
        )
        .bind(year)
        .bind(new_reference - last_reference)
        .bind(now.as_micros())
        .bind(&t.ids)
        .bind(&t.references)
        .bind(&t.types)
        .bind(&t.channels)
        .bind(&t.categories)
        .bind(&t.priorities)
        .bind(&t.statuses)
        .bind(&t.directorates)
        .bind(&t.outlets)
        .bind(&t.wilayats)
        .bind(&t.assignees)
        .bind(&t.support_lines)
        .bind(&t.create_times)
        .bind(&t.update_times)
        .bind(&t.versions)
        .bind(&t.bodies)
        .bind(&t.search_texts)
        .bind(&t.created_by)
        .bind(&e.cursors)
        // The events' ticket ids: the tickets', in the same order.
        .bind(&t.ids)
        .bind(&e.kinds)
        .bind(&e.actors)
        .bind(&e.versions)
        .bind(&e.bodies)
        .bind(&o.ticket_ids)
        .bind(&o.cursors)
        .bind(&o.kinds)
        .bind(&o.keys)
        .bind(&o.event_bodies)
        .bind(&r.request_ids)
        .bind(&r.fingerprints)
        .bind(&r.responses)
        .bind(COMMIT_CHANNEL)
        .fetch_one(&mut *conn)
        .await?;
        if counter != Some(new_reference) {
            return Err(StoreError::Corrupt(format!(
                "the reference counter moved under the write lock (expected {new_reference}, found {counter:?})"
            )));
        }
        Ok(())
    }
}

async fn insert_ticket(
    conn: &mut PgConnection,
    ticket: &Ticket,
    body: &str,
) -> Result<i64, StoreError> {
    let query = sqlx::query_scalar(
        "INSERT INTO tickets (id, reference, ticket_type, channel, category, priority, status,
             directorate, outlet, wilayat, assignee, support_line, create_time, update_time,
             version, body, search_text, created_by)
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
             $16::jsonb, $17, $18)
         RETURNING seq",
    )
    .bind(ticket.id.to_string())
    .bind(ticket.reference.to_string());
    let seq: i64 = bind_projection!(query, ticket, i16)
        .bind(ticket.create_time.as_micros())
        .bind(ticket.update_time.as_micros())
        .bind(ticket.version)
        .bind(body)
        .bind(search_text(ticket))
        .bind(ticket.created_by.as_deref())
        .fetch_one(&mut *conn)
        .await?;
    Ok(seq)
}

async fn save_ticket(
    conn: &mut PgConnection,
    seq: i64,
    ticket: &Ticket,
    body: &str,
) -> Result<(), StoreError> {
    let query = sqlx::query(
        "UPDATE tickets SET ticket_type = $1, channel = $2, category = $3, priority = $4, status = $5,
             directorate = $6, outlet = $7, wilayat = $8, assignee = $9, support_line = $10,
             update_time = $11, version = $12, body = $13::jsonb, search_text = $14
         WHERE seq = $15",
    );
    bind_projection!(query, ticket, i16)
        .bind(ticket.update_time.as_micros())
        .bind(ticket.version)
        .bind(body)
        .bind(search_text(ticket))
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends the event of a change, with the ticket as it stands after it (`ticket_body`).
async fn append_event(
    conn: &mut PgConnection,
    ticket: &Ticket,
    ticket_body: &str,
    author: &Author,
    now: Timestamp,
    record: EventRecord,
) -> Result<TicketEvent, StoreError> {
    let cursor: i64 = sqlx::query_scalar(
        "INSERT INTO ticket_events (ticket_id, kind, actor, occur_time, version, body, ticket_body)
         VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb, $7::jsonb) RETURNING seq",
    )
    .bind(ticket.id.to_string())
    .bind(record.kind.as_str())
    .bind(&author.actor)
    .bind(now.as_micros())
    .bind(ticket.version)
    .bind(to_json(&record)?)
    .bind(ticket_body)
    .fetch_one(&mut *conn)
    .await?;
    let event = TicketEvent {
        cursor,
        ticket_id: ticket.id,
        actor: author.actor.clone(),
        occur_time: now,
        version: ticket.version,
        record,
    };
    // The push this change owes the national platform commits with the change.
    if author.sync.applies_to(ticket)
        && let Some(kind) = push_for(ticket, &event.record)
    {
        sqlx::query(
            "INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key, ticket_body,
                 event_body, state, next_attempt_at, create_time, update_time)
             VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6::jsonb, 'pending', $7, $8, $9)",
        )
        .bind(ticket.id.to_string())
        .bind(cursor)
        .bind(kind.as_str())
        .bind(format!("balagh-{}-{cursor}", ticket.id))
        .bind(ticket_body)
        .bind(to_json(&event)?)
        .bind(now.as_micros())
        .bind(now.as_micros())
        .bind(now.as_micros())
        .execute(&mut *conn)
        .await?;
    }
    Ok(event)
}

/// Who writes, the tickets they may change, and the sync policy that decides what the
/// platform is owed.
#[derive(Clone)]
struct Author {
    actor: String,
    reach: Option<super::Reach>,
    sync: Arc<SyncPolicy>,
}

async fn record_quality_review_tx(
    conn: &mut PgConnection,
    reviewer: String,
    review: NewQualityReview,
    now: Timestamp,
) -> Result<QualityReview, StoreError> {
    let (_, ticket) = load_ticket(conn, review.ticket_id).await?;
    let bodies: Vec<String> = sqlx::query_scalar(
        "SELECT body::text FROM ticket_events WHERE ticket_id = $1::uuid ORDER BY seq",
    )
    .bind(ticket.id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let history = bodies
        .iter()
        .map(|body| from_json::<EventRecord>(body, "event"))
        .collect::<Result<Vec<_>, _>>()?;
    if !quality::handled_by(&ticket, &history, &review.employee_id) {
        return Err(StoreError::UnknownReference(not_a_handler()));
    }
    let review = QualityReview::from_new(review, reviewer, now);
    // ON CONFLICT keeps a race between replicas from failing the writer's transaction.
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO quality_reviews
             (ticket_id, employee_id, reviewer, review_time, weighted_score, body)
         VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb)
         ON CONFLICT (ticket_id, employee_id) DO NOTHING
         RETURNING seq",
    )
    .bind(review.ticket_id.to_string())
    .bind(review.employee_id.as_str())
    .bind(&review.reviewer)
    .bind(now.as_micros())
    .bind(review.weighted_score)
    .bind(to_json(&review)?)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        return Err(StoreError::QualityReviewExists);
    }
    Ok(review)
}

async fn load_ticket(conn: &mut PgConnection, id: TicketId) -> Result<(i64, Ticket), StoreError> {
    let row = sqlx::query("SELECT seq, body::text AS body FROM tickets WHERE id = $1::uuid")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::TicketNotFound)?;
    let body: String = row.try_get("body")?;
    Ok((row.try_get("seq")?, from_json(&body, "ticket")?))
}

async fn create_ticket_tx(
    conn: &mut PgConnection,
    author: Author,
    new: NewTicket,
    now: Timestamp,
) -> Result<Ticket, StoreError> {
    let (directorate, default_priority) = check_category(conn, "category", &new.category).await?;
    if let Some(wilayat) = &new.location.wilayat {
        check_wilayat(conn, "location.wilayat", wilayat).await?;
    }
    let year = now.muscat_year();
    let number: i64 = sqlx::query_scalar(
        "INSERT INTO reference_counters (year, last_value) VALUES ($1, 1)
         ON CONFLICT (year) DO UPDATE SET last_value = reference_counters.last_value + 1
         RETURNING last_value",
    )
    .bind(year)
    .fetch_one(&mut *conn)
    .await?;
    let ticket = new_ticket(
        new,
        reference(year, number)?,
        directorate,
        default_priority,
        now,
        &author.actor,
    );
    let body = to_json(&ticket)?;
    insert_ticket(conn, &ticket, &body).await?;
    append_event(conn, &ticket, &body, &author, now, created_event(&ticket)).await?;
    Ok(ticket)
}

async fn update_ticket_tx(
    conn: &mut PgConnection,
    author: Author,
    id: TicketId,
    expected_version: Option<i64>,
    patch: TicketPatch,
    now: Timestamp,
) -> Result<Ticket, StoreError> {
    let (seq, current) = load_ticket(conn, id).await?;
    super::check_reach(author.reach.as_ref(), &current)?;
    check_version(&current, expected_version)?;
    if let Some(category) = &patch.category {
        check_category(conn, "ticket.category", category).await?;
    }
    if let Some(wilayat) = patch.location.as_ref().and_then(|l| l.wilayat.as_ref()) {
        check_wilayat(conn, "ticket.location.wilayat", wilayat).await?;
    }
    let (next, record) = apply_patch(&current, patch, now)?;
    if next.version == current.version {
        return Ok(current);
    }
    let body = to_json(&next)?;
    save_ticket(conn, seq, &next, &body).await?;
    append_event(conn, &next, &body, &author, now, record).await?;
    Ok(next)
}

async fn apply_action_tx(
    conn: &mut PgConnection,
    author: Author,
    id: TicketId,
    expected_version: Option<i64>,
    action: Action,
    now: Timestamp,
) -> Result<(Ticket, TicketEvent), StoreError> {
    let (seq, current) = load_ticket(conn, id).await?;
    super::check_reach(author.reach.as_ref(), &current)?;
    check_version(&current, expected_version)?;
    match &action {
        Action::Assign { assignment, .. } => check_assignment(conn, assignment).await?,
        Action::Merge { duplicate_of } if *duplicate_of != id => {
            let original = match load_ticket(conn, *duplicate_of).await {
                Ok((_, original)) => original,
                Err(StoreError::TicketNotFound) => {
                    return Err(unknown("duplicate_of_ticket_id", "is not a ticket"));
                }
                Err(other) => return Err(other),
            };
            if original.status == Status::Merged {
                return Err(unknown(
                    "duplicate_of_ticket_id",
                    "is itself merged: merge into its original instead",
                ));
            }
        }
        _ => {}
    }
    let (next, record) = apply_action(&current, action, now)?;
    let body = to_json(&next)?;
    save_ticket(conn, seq, &next, &body).await?;
    let event = append_event(conn, &next, &body, &author, now, record).await?;
    Ok((next, event))
}

/// Adds an entry to the survey ledger: the ticket's beneficiary was asked at `now`.
async fn insert_survey_request(
    conn: &mut PgConnection,
    ticket: &Ticket,
    channel: SurveyChannel,
    outcome: SurveyOutcome,
    actor: &str,
    now: Timestamp,
) -> Result<SurveyRequest, StoreError> {
    let beneficiary = BeneficiaryKey::of(&ticket.reporter);
    sqlx::query(
        "INSERT INTO survey_requests
             (ticket_id, beneficiary_hash, ask_time, channel, outcome, actor)
         VALUES ($1::uuid, $2, $3, $4, $5, $6)",
    )
    .bind(ticket.id.to_string())
    .bind(beneficiary.as_ref().map(|k| k.as_bytes().as_slice()))
    .bind(now.as_micros())
    .bind(channel.as_str())
    .bind(outcome.as_str())
    .bind(actor)
    .execute(&mut *conn)
    .await?;
    Ok(SurveyRequest {
        ticket_id: ticket.id,
        ask_time: now,
        channel,
        outcome,
        actor: actor.to_owned(),
    })
}

/// The latest time the ticket's beneficiary was asked about another ticket after `since`.
async fn last_ask_elsewhere(
    conn: &mut PgConnection,
    ticket: &Ticket,
    since: Timestamp,
) -> Result<LastAsk, StoreError> {
    let Some(key) = BeneficiaryKey::of(&ticket.reporter) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT ask_time, channel FROM survey_requests
         WHERE beneficiary_hash = $1 AND ask_time > $2 AND ticket_id <> $3::uuid
         ORDER BY ask_time DESC LIMIT 1",
    )
    .bind(key.as_bytes().as_slice())
    .bind(since.as_micros())
    .bind(ticket.id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let channel: String = row.try_get("channel")?;
    let channel = SurveyChannel::from_str_opt(&channel)
        .ok_or_else(|| StoreError::Corrupt(format!("survey channel {channel}")))?;
    Ok(Some((
        Timestamp::from_micros(row.try_get("ask_time")?),
        channel,
    )))
}

async fn rate_on_call_back_tx(
    conn: &mut PgConnection,
    author: Author,
    id: TicketId,
    expected_version: Option<i64>,
    satisfaction: Satisfaction,
    policy: SurveyPolicy,
    now: Timestamp,
) -> Result<(Ticket, TicketEvent), StoreError> {
    let (_, current) = load_ticket(conn, id).await?;
    super::check_reach(author.reach.as_ref(), &current)?;
    check_version(&current, expected_version)?;
    let last = last_ask_elsewhere(conn, &current, policy.quiet_since(now)).await?;
    satisfaction::check_call_back(&current, true, last, &policy)?;
    let actor = author.actor.clone();
    let (ticket, event) = apply_action_tx(
        conn,
        author,
        id,
        expected_version,
        Action::Rate { satisfaction },
        now,
    )
    .await?;
    insert_survey_request(
        conn,
        &ticket,
        SurveyChannel::CallBack,
        SurveyOutcome::Rated,
        &actor,
        now,
    )
    .await?;
    Ok((ticket, event))
}

async fn record_unrated_call_back_tx(
    conn: &mut PgConnection,
    actor: String,
    id: TicketId,
    outcome: UnratedCallBack,
    policy: SurveyPolicy,
    now: Timestamp,
) -> Result<SurveyRequest, StoreError> {
    let (_, ticket) = load_ticket(conn, id).await?;
    let last = last_ask_elsewhere(conn, &ticket, policy.quiet_since(now)).await?;
    satisfaction::check_call_back(&ticket, false, last, &policy)?;
    insert_survey_request(
        conn,
        &ticket,
        SurveyChannel::CallBack,
        outcome.into(),
        &actor,
        now,
    )
    .await
}

/// The inbound rules' statements on the writer's connection.
struct PgInbound<'c> {
    conn: &'c mut PgConnection,
    author: Author,
    now: Timestamp,
}

#[async_trait]
impl InboundTx for PgInbound<'_> {
    async fn execute(&mut self, sql: &'static str) -> Result<(), StoreError> {
        sqlx::query(sql).execute(&mut *self.conn).await?;
        Ok(())
    }

    async fn seen(&mut self, change_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM platform_inbox WHERE change_id = $1")
                .bind(change_id)
                .fetch_optional(&mut *self.conn)
                .await?
                .is_some(),
        )
    }

    async fn case_link(&mut self, case_id: &str) -> Result<Option<(TicketId, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT ticket_id::text AS ticket_id, pulled_version FROM platform_cases
             WHERE case_id = $1",
        )
        .bind(case_id)
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(|row| {
            let id: String = row.try_get("ticket_id")?;
            let id = TicketId::parse("ticket_id", &id)
                .map_err(|v| StoreError::Corrupt(format!("platform case link: {v}")))?;
            Ok((id, row.try_get("pulled_version")?))
        })
        .transpose()
    }

    async fn set_pulled_version(&mut self, case_id: &str, version: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE platform_cases SET pulled_version = $1 WHERE case_id = $2")
            .bind(version)
            .bind(case_id)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn take_in(
        &mut self,
        case_id: &str,
        version: i64,
        new: NewTicket,
    ) -> Result<Ticket, StoreError> {
        let ticket = create_ticket_tx(self.conn, self.author.clone(), new, self.now).await?;
        sqlx::query(
            "INSERT INTO platform_cases (ticket_id, case_id, create_time, pulled_version)
             VALUES ($1::uuid, $2, $3, $4)",
        )
        .bind(ticket.id.to_string())
        .bind(case_id)
        .bind(self.now.as_micros())
        .bind(version)
        .execute(&mut *self.conn)
        .await?;
        Ok(ticket)
    }

    async fn act(&mut self, ticket_id: TicketId, action: Action) -> Result<Ticket, StoreError> {
        apply_action_tx(
            self.conn,
            self.author.clone(),
            ticket_id,
            None,
            action,
            self.now,
        )
        .await
        .map(|(ticket, _)| ticket)
    }

    async fn record_survey_request(
        &mut self,
        ticket: &Ticket,
        channel: SurveyChannel,
        outcome: SurveyOutcome,
    ) -> Result<(), StoreError> {
        insert_survey_request(
            self.conn,
            ticket,
            channel,
            outcome,
            &self.author.actor,
            self.now,
        )
        .await
        .map(drop)
    }

    async fn record(
        &mut self,
        change: &InboundChange,
        outcome: &InboundOutcome,
    ) -> Result<(), StoreError> {
        let (ticket_id, detail) = inbound_record_fields(outcome);
        sqlx::query(
            "INSERT INTO platform_inbox
                 (change_id, case_id, case_version, outcome, detail, ticket_id, apply_time)
             VALUES ($1, $2, $3, $4, $5, $6::uuid, $7)",
        )
        .bind(&change.change_id)
        .bind(&change.case_id)
        .bind(change.case_version)
        .bind(outcome.as_str())
        .bind(detail)
        .bind(ticket_id.map(|id| id.to_string()))
        .bind(self.now.as_micros())
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}

/// Records one attempt's outcome if `owner` still holds the entry's lease; `false` if not.
async fn record_push_outcome_tx(
    conn: &mut PgConnection,
    id: i64,
    owner: &str,
    outcome: PushOutcome,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = match outcome {
        PushOutcome::Delivered => {
            sqlx::query(
                "UPDATE outbox SET state = 'delivered', n_attempts = n_attempts + 1,
                     lease_owner = NULL, lease_until = NULL, update_time = $1
                 WHERE seq = $2 AND state = 'pending' AND lease_owner = $3",
            )
            .bind(now.as_micros())
            .bind(id)
            .bind(owner)
            .execute(&mut *conn)
            .await?
        }
        PushOutcome::RetryAt { at, error } => {
            sqlx::query(
                "UPDATE outbox SET n_attempts = n_attempts + 1, next_attempt_at = $4,
                     last_error = $5, lease_owner = NULL, lease_until = NULL, update_time = $1
                 WHERE seq = $2 AND state = 'pending' AND lease_owner = $3",
            )
            .bind(now.as_micros())
            .bind(id)
            .bind(owner)
            .bind(at.as_micros())
            .bind(error)
            .execute(&mut *conn)
            .await?
        }
        PushOutcome::Dead { error } => {
            sqlx::query(
                "UPDATE outbox SET state = 'dead', n_attempts = n_attempts + 1,
                     last_error = $4, lease_owner = NULL, lease_until = NULL, update_time = $1
                 WHERE seq = $2 AND state = 'pending' AND lease_owner = $3",
            )
            .bind(now.as_micros())
            .bind(id)
            .bind(owner)
            .bind(error)
            .execute(&mut *conn)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

/// A SELECT of survey ledger rows (the ticket id as text) followed by the given clauses,
/// assembled from literals at compile time.
macro_rules! select_ledger_rows {
    ($clauses:literal) => {
        concat!(
            "SELECT seq, ticket_id::text AS ticket_id, beneficiary_hash, ask_time, channel, ",
            "outcome, actor FROM survey_requests ",
            $clauses
        )
    };
}

fn ledger_entry_from_row(row: &PgRow) -> Result<LedgerEntry, StoreError> {
    let ticket_id: String = row.try_get("ticket_id")?;
    let beneficiary: Option<Vec<u8>> = row.try_get("beneficiary_hash")?;
    let channel: String = row.try_get("channel")?;
    let outcome: String = row.try_get("outcome")?;
    Ok(LedgerEntry {
        beneficiary: beneficiary
            .map(|bytes| {
                BeneficiaryKey::from_bytes(&bytes)
                    .ok_or_else(|| StoreError::Corrupt("a beneficiary hash is not 32 bytes".into()))
            })
            .transpose()?,
        request: SurveyRequest {
            ticket_id: TicketId::parse("ticket_id", &ticket_id)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ask_time: Timestamp::from_micros(row.try_get("ask_time")?),
            channel: SurveyChannel::from_str_opt(&channel)
                .ok_or_else(|| StoreError::Corrupt(format!("survey channel {channel}")))?,
            outcome: SurveyOutcome::from_str_opt(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("survey outcome {outcome}")))?,
            actor: row.try_get("actor")?,
        },
    })
}

fn outbox_from_row(row: &PgRow) -> Result<OutboxEntry, StoreError> {
    let ticket_id: String = row.try_get("ticket_id")?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let ticket: String = row.try_get("ticket_body")?;
    let event: String = row.try_get("event_body")?;
    let n_attempts: i64 = row.try_get("n_attempts")?;
    Ok(OutboxEntry {
        id: row.try_get("seq")?,
        ticket_id: TicketId::parse("ticket_id", &ticket_id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        kind: PushKind::from_str_opt(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("push kind {kind}")))?,
        idempotency_key: row.try_get("idempotency_key")?,
        ticket: from_json(&ticket, "outbox ticket")?,
        event: from_json(&event, "outbox event")?,
        state: OutboxState::from_str_opt(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox state {state}")))?,
        n_attempts: u32::try_from(n_attempts).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp::from_micros(row.try_get("next_attempt_at")?),
        last_error: row.try_get("last_error")?,
        create_time: Timestamp::from_micros(row.try_get("create_time")?),
    })
}

fn ticket_from_row(row: &PgRow) -> Result<Ticket, StoreError> {
    let body: String = row.try_get("body")?;
    from_json(&body, "ticket")
}

fn event_from_row(row: &PgRow) -> Result<TicketEvent, StoreError> {
    let ticket_id: String = row.try_get("ticket_id")?;
    let body: String = row.try_get("body")?;
    Ok(TicketEvent {
        cursor: row.try_get("seq")?,
        ticket_id: TicketId::parse("ticket_id", &ticket_id)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        actor: row.try_get("actor")?,
        occur_time: Timestamp::from_micros(row.try_get("occur_time")?),
        version: row.try_get("version")?,
        record: from_json(&body, "event")?,
    })
}

fn push_in<I, T>(qb: &mut QueryBuilder<Postgres>, column: &'static str, values: I)
where
    I: IntoIterator<Item = T>,
    T: for<'t> sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
{
    let mut values = values.into_iter().peekable();
    if values.peek().is_none() {
        return;
    }
    qb.push(" AND ").push(column).push(" IN (");
    let mut list = qb.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    qb.push(")");
}

/// The conditions of a ticket filter, on the projected columns of `tickets`.
fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &TicketFilter) {
    push_in(qb, "status", filter.statuses.iter().map(|s| s.as_str()));
    push_in(qb, "ticket_type", filter.types.iter().map(|t| t.as_str()));
    push_in(
        qb,
        "category",
        filter.categories.iter().map(|c| c.as_str().to_owned()),
    );
    push_in(
        qb,
        "directorate",
        filter.directorates.iter().map(|c| c.as_str().to_owned()),
    );
    push_in(
        qb,
        "outlet",
        filter.outlets.iter().map(|c| c.as_str().to_owned()),
    );
    push_in(
        qb,
        "wilayat",
        filter.wilayats.iter().map(|c| c.as_str().to_owned()),
    );
    push_in(
        qb,
        "assignee",
        filter.assignees.iter().map(|a| a.as_str().to_owned()),
    );
    push_in(
        qb,
        "support_line",
        filter.support_lines.iter().map(|l| i64::from(l.number())),
    );
    push_in(qb, "created_by", filter.creators.iter().cloned());
}

fn push_range(
    qb: &mut QueryBuilder<Postgres>,
    column: &'static str,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) {
    if let Some(from) = from {
        qb.push(" AND ")
            .push(column)
            .push(" >= ")
            .push_bind(from.as_micros());
    }
    if let Some(to) = to {
        qb.push(" AND ")
            .push(column)
            .push(" < ")
            .push_bind(to.as_micros());
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_ticket(&self, ctx: WriteContext, new: NewTicket) -> Result<Ticket, StoreError> {
        let job = CreateJob {
            author: self.author(ctx.actor, ctx.reach),
            new,
            request: ctx.request,
        };
        self.run(Work::Create(Box::new(job))).await
    }

    async fn update_ticket(
        &self,
        ctx: WriteContext,
        id: TicketId,
        expected_version: Option<i64>,
        patch: TicketPatch,
    ) -> Result<Ticket, StoreError> {
        let author = self.author(ctx.actor, ctx.reach);
        self.submit(ctx.request, move |conn, now| {
            Box::pin(update_ticket_tx(
                conn,
                author,
                id,
                expected_version,
                patch,
                now,
            ))
        })
        .await
    }

    async fn apply_action(
        &self,
        ctx: WriteContext,
        id: TicketId,
        expected_version: Option<i64>,
        action: Action,
    ) -> Result<(Ticket, TicketEvent), StoreError> {
        let author = self.author(ctx.actor, ctx.reach);
        self.submit(ctx.request, move |conn, now| {
            Box::pin(apply_action_tx(
                conn,
                author,
                id,
                expected_version,
                action,
                now,
            ))
        })
        .await
    }

    async fn get_ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        sqlx::query("SELECT body::text AS body FROM tickets WHERE id = $1::uuid")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?
            .as_ref()
            .map(ticket_from_row)
            .transpose()
    }

    async fn list_ticket_bodies(&self, query: &TicketQuery) -> Result<Vec<ListedBody>, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT seq, body::text AS body FROM tickets WHERE 1 = 1",
        );
        push_filter(&mut qb, &query.filter);
        push_in(
            &mut qb,
            "channel",
            query.channels.iter().map(|c| c.as_str()),
        );
        push_in(
            &mut qb,
            "priority",
            query.priorities.iter().map(|p| p.as_str()),
        );
        push_range(
            &mut qb,
            "create_time",
            query.create_time_from,
            query.create_time_to,
        );
        push_range(
            &mut qb,
            "update_time",
            query.update_time_from,
            query.update_time_to,
        );
        if !query.words.is_empty() {
            qb.push(" AND search_vector @@ ")
                .push_bind(prefix_query(&query.words))
                .push("::tsquery");
        }
        if let Some(reference) = query.reference {
            qb.push(" AND reference = ")
                .push_bind(reference.to_string());
        }
        if let Some(before) = query.before_position {
            qb.push(" AND seq < ").push_bind(before);
        }
        qb.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = qb.build().fetch_all(&self.readers).await?;
        rows.into_iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(ListedBody {
                    position: row.try_get("seq")?,
                    body: body.into_bytes(),
                })
            })
            .collect()
    }

    async fn get_ticket_with_events(
        &self,
        lookup: TicketLookup,
        max_events: u32,
    ) -> Result<Option<(Ticket, Vec<TicketEvent>)>, StoreError> {
        // One statement, so one snapshot: the ticket's body repeats on each event's row and
        // is decoded once.
        macro_rules! with_events_where {
            ($condition:literal) => {
                concat!(
                    "SELECT t.body::text AS ticket_body, e.seq,
                         e.ticket_id::text AS ticket_id, e.actor, e.occur_time, e.version,
                         e.body::text AS body
                     FROM tickets t
                     LEFT JOIN LATERAL (
                         SELECT seq, ticket_id, actor, occur_time, version, body
                         FROM ticket_events
                         WHERE ticket_id = t.id ORDER BY seq LIMIT $2
                     ) e ON true
                     WHERE ",
                    $condition,
                    " ORDER BY e.seq"
                )
            };
        }
        const BY_ID: &str = with_events_where!("t.id = $1::uuid");
        const BY_REFERENCE: &str = with_events_where!("t.reference = $1");
        let (sql, key) = match lookup {
            TicketLookup::Id(id) => (BY_ID, id.to_string()),
            TicketLookup::Reference(reference) => (BY_REFERENCE, reference.to_string()),
        };
        let rows = sqlx::query(sql)
            .bind(key)
            .bind(i64::from(max_events))
            .fetch_all(&self.readers)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let body: String = first.try_get("ticket_body")?;
        let ticket: Ticket = from_json(&body, "ticket")?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            // A ticket without events (none is written so) has one row with no event.
            if row.try_get::<Option<i64>, _>("seq")?.is_some() {
                events.push(event_from_row(row)?);
            }
        }
        Ok(Some((ticket, events)))
    }

    async fn list_ticket_events(
        &self,
        id: TicketId,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Option<Vec<TicketEvent>>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ticket_id::text AS ticket_id, actor, occur_time, version,
                 body::text AS body
             FROM ticket_events
             WHERE ticket_id = $1::uuid AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.to_string())
        .bind(after_cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        if rows.is_empty() {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1::BIGINT FROM tickets WHERE id = $1::uuid")
                    .bind(id.to_string())
                    .fetch_optional(&self.readers)
                    .await?;
            if exists.is_none() {
                return Ok(None);
            }
        }
        rows.iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn catalog(&self) -> Result<CatalogData, StoreError> {
        let parse = |field: &str, text: String| {
            Code::parse(field, &text).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        let mut conn = self.readers.acquire().await?;
        let wilayats = sqlx::query("SELECT code, name_ar, name_en FROM wilayats ORDER BY code")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| {
                Ok(Wilayat {
                    code: parse("code", r.try_get("code")?)?,
                    name_ar: r.try_get("name_ar")?,
                    name_en: r.try_get("name_en")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let directorates =
            sqlx::query("SELECT code, name_ar, name_en, active FROM directorates ORDER BY code")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|r| {
                    Ok(Directorate {
                        code: parse("code", r.try_get("code")?)?,
                        name_ar: r.try_get("name_ar")?,
                        name_en: r.try_get("name_en")?,
                        active: r.try_get("active")?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
        let outlets = sqlx::query(
            "SELECT code, directorate_code, wilayat_code, name_ar, name_en, active
             FROM outlets ORDER BY code",
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| {
            Ok(Outlet {
                code: parse("code", r.try_get("code")?)?,
                directorate_code: parse("directorate_code", r.try_get("directorate_code")?)?,
                wilayat_code: parse("wilayat_code", r.try_get("wilayat_code")?)?,
                name_ar: r.try_get("name_ar")?,
                name_en: r.try_get("name_en")?,
                active: r.try_get("active")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let categories = sqlx::query(
            "SELECT code, name_ar, name_en, default_directorate_code, default_priority,
                 sla_policy_code, active
             FROM categories ORDER BY code",
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| {
            let priority: String = r.try_get("default_priority")?;
            Ok(Category {
                code: parse("code", r.try_get("code")?)?,
                name_ar: r.try_get("name_ar")?,
                name_en: r.try_get("name_en")?,
                default_directorate_code: parse(
                    "default_directorate_code",
                    r.try_get("default_directorate_code")?,
                )?,
                default_priority: Priority::from_str_opt(&priority)
                    .ok_or_else(|| StoreError::Corrupt(format!("priority {priority}")))?,
                sla_policy_code: parse("sla_policy_code", r.try_get("sla_policy_code")?)?,
                active: r.try_get("active")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(CatalogData {
            wilayats,
            directorates,
            outlets,
            categories,
        })
    }

    async fn upsert_wilayat(
        &self,
        ctx: WriteContext,
        wilayat: Wilayat,
    ) -> Result<Wilayat, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            Box::pin(async move {
                put_wilayat(conn, &wilayat).await?;
                Ok(wilayat)
            })
        })
        .await
    }

    async fn upsert_directorate(
        &self,
        ctx: WriteContext,
        directorate: Directorate,
    ) -> Result<Directorate, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            Box::pin(async move {
                put_directorate(conn, &directorate).await?;
                Ok(directorate)
            })
        })
        .await
    }

    async fn upsert_outlet(&self, ctx: WriteContext, outlet: Outlet) -> Result<Outlet, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            Box::pin(async move {
                check_directorate(conn, "outlet.directorate_code", &outlet.directorate_code)
                    .await?;
                check_wilayat(conn, "outlet.wilayat_code", &outlet.wilayat_code).await?;
                put_outlet(conn, &outlet).await?;
                Ok(outlet)
            })
        })
        .await
    }

    async fn upsert_category(
        &self,
        ctx: WriteContext,
        category: Category,
    ) -> Result<Category, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            Box::pin(async move {
                check_directorate(
                    conn,
                    "category.default_directorate_code",
                    &category.default_directorate_code,
                )
                .await?;
                put_category(conn, &category).await?;
                Ok(category)
            })
        })
        .await
    }

    async fn read_changes(&self, after_cursor: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        // Events written before the change feed existed carry no snapshot; the ticket as it
        // stands now is the best there is for them.
        let rows = sqlx::query(
            "SELECT e.seq, e.ticket_id::text AS ticket_id, e.actor, e.occur_time, e.version,
                 e.body::text AS body, COALESCE(e.ticket_body, t.body)::text AS ticket_body
             FROM ticket_events e LEFT JOIN tickets t ON t.id = e.ticket_id
             WHERE e.seq > $1 ORDER BY e.seq LIMIT $2",
        )
        .bind(after_cursor)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let ticket: String = row.try_get("ticket_body")?;
                Ok(Change {
                    event: event_from_row(row)?,
                    ticket: from_json(&ticket, "ticket snapshot")?,
                })
            })
            .collect()
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT pruned_through FROM feed_state WHERE id = 1) AS pruned,
                    (SELECT COALESCE(MAX(seq), 0) FROM ticket_events) AS latest",
        )
        .fetch_one(&self.readers)
        .await?;
        Ok(FeedBounds {
            oldest_resumable: row.try_get("pruned")?,
            latest: row.try_get("latest")?,
        })
    }

    async fn snapshot(
        &self,
        filter: &TicketFilter,
        max_tickets: u32,
    ) -> Result<Snapshot, StoreError> {
        // One repeatable-read transaction: a single view of the database, so the cursor and
        // the tickets agree (cursors are in commit order, see the module docs).
        let mut tx = self
            .readers
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let cursor: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM ticket_events")
            .fetch_one(&mut *tx)
            .await?;
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT body::text AS body FROM tickets WHERE 1 = 1");
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(max_tickets) + 1);
        let rows = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        if rows.len() > max_tickets as usize {
            return Err(StoreError::SnapshotTooLarge { max: max_tickets });
        }
        Ok(Snapshot {
            cursor,
            tickets: rows.iter().map(ticket_from_row).collect::<Result<_, _>>()?,
        })
    }

    async fn prune_feed(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            Box::pin(async move {
                let through: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(seq) FROM ticket_events WHERE occur_time < $1")
                        .bind(before.as_micros())
                        .fetch_one(&mut *conn)
                        .await?;
                let Some(through) = through else { return Ok(0) };
                let done = sqlx::query(
                    "UPDATE ticket_events SET ticket_body = NULL
                     WHERE seq <= $1 AND ticket_body IS NOT NULL",
                )
                .bind(through)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE feed_state SET pruned_through = GREATEST(pruned_through, $1) WHERE id = 1",
                )
                .bind(through)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let owner = owner.to_owned();
        let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let mut entries: Vec<OutboxEntry> = self
            .submit(None, move |conn, now| {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "UPDATE outbox SET lease_owner = $1, lease_until = $2, update_time = $3
             WHERE seq IN (
                 SELECT o.seq FROM outbox o
                 WHERE o.state = 'pending' AND o.next_attempt_at <= $4
                     AND (o.lease_until IS NULL OR o.lease_until <= $4)
                     AND NOT EXISTS (
                         SELECT 1 FROM outbox p
                         WHERE p.ticket_id = o.ticket_id AND p.seq < o.seq
                             AND p.state IN ('pending', 'dead'))
                 ORDER BY o.seq LIMIT $5
                 FOR UPDATE SKIP LOCKED)
             RETURNING seq, ticket_id::text AS ticket_id, kind, idempotency_key, ticket_body::text AS ticket_body, event_body::text AS event_body, state, n_attempts, next_attempt_at, last_error, create_time",
                    )
                    .bind(&owner)
                    .bind(now.as_micros().saturating_add(lease))
                    .bind(now.as_micros())
                    .bind(now.as_micros())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *conn)
                    .await?;
                    rows.iter().map(outbox_from_row).collect::<Result<Vec<_>, _>>()
                })
            })
            .await?;
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    async fn record_push_outcome(
        &self,
        id: i64,
        owner: &str,
        outcome: PushOutcome,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.submit(None, move |conn, now| {
            Box::pin(async move { record_push_outcome_tx(conn, id, &owner, outcome, now).await })
        })
        .await
    }

    async fn record_push_outcomes(
        &self,
        owner: &str,
        outcomes: Vec<(i64, PushOutcome)>,
    ) -> Result<Vec<bool>, StoreError> {
        let owner = owner.to_owned();
        self.submit(None, move |conn, now| {
            Box::pin(async move {
                let mut recorded = Vec::with_capacity(outcomes.len());
                for (id, outcome) in outcomes {
                    recorded.push(record_push_outcome_tx(conn, id, &owner, outcome, now).await?);
                }
                Ok(recorded)
            })
        })
        .await
    }

    async fn list_outbox(
        &self,
        state: OutboxState,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ticket_id::text AS ticket_id, kind, idempotency_key, ticket_body::text AS ticket_body, event_body::text AS event_body, state, n_attempts, next_attempt_at, last_error, create_time FROM outbox
             WHERE state = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(state.as_str())
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn redrive_outbox(&self, id: i64) -> Result<bool, StoreError> {
        self.submit(None, move |conn, now| {
            Box::pin(async move {
                let done = sqlx::query(
                    "UPDATE outbox SET state = 'pending', n_attempts = 0, next_attempt_at = $1,
                 lease_owner = NULL, lease_until = NULL, update_time = $1
             WHERE seq = $2 AND state = 'dead'",
                )
                .bind(now.as_micros())
                .bind(id)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    async fn outbox_status(&self) -> Result<OutboxStatus, StoreError> {
        let row = sqlx::query(
            "SELECT
                 COUNT(*) FILTER (WHERE state = 'pending') AS pending,
                 COUNT(*) FILTER (WHERE state = 'pending' AND lease_owner IS NOT NULL) AS leased,
                 COUNT(*) FILTER (WHERE state = 'dead') AS dead,
                 COUNT(*) FILTER (WHERE state = 'delivered') AS delivered,
                 MIN(create_time) FILTER (WHERE state = 'pending') AS oldest
             FROM outbox",
        )
        .fetch_one(&self.readers)
        .await?;
        let count = |name: &str| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(name)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(OutboxStatus {
            pending: count("pending")?,
            leased: count("leased")?,
            dead: count("dead")?,
            delivered: count("delivered")?,
            oldest_pending: row
                .try_get::<Option<i64>, _>("oldest")?
                .map(Timestamp::from_micros),
        })
    }

    async fn link_platform_case(
        &self,
        ticket_id: TicketId,
        case_id: &str,
    ) -> Result<(), StoreError> {
        let case_id = case_id.to_owned();
        self.submit(None, move |conn, now| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO platform_cases (ticket_id, case_id, create_time)
                     VALUES ($1::uuid, $2, $3) ON CONFLICT (ticket_id) DO NOTHING",
                )
                .bind(ticket_id.to_string())
                .bind(&case_id)
                .bind(now.as_micros())
                .execute(&mut *conn)
                .await?;
                let linked: String = sqlx::query_scalar(
                    "SELECT case_id FROM platform_cases WHERE ticket_id = $1::uuid",
                )
                .bind(ticket_id.to_string())
                .fetch_one(&mut *conn)
                .await?;
                if linked == case_id {
                    Ok(())
                } else {
                    Err(StoreError::Corrupt(format!(
                        "ticket {ticket_id} is linked to platform case {linked}, not {case_id}"
                    )))
                }
            })
        })
        .await
    }

    async fn platform_case_id(&self, ticket_id: TicketId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT case_id FROM platform_cases WHERE ticket_id = $1::uuid")
                .bind(ticket_id.to_string())
                .fetch_optional(&self.readers)
                .await?,
        )
    }

    async fn ticket_for_case(&self, case_id: &str) -> Result<Option<TicketId>, StoreError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT ticket_id::text FROM platform_cases WHERE case_id = $1")
                .bind(case_id)
                .fetch_optional(&self.readers)
                .await?;
        id.map(|id| {
            TicketId::parse("ticket_id", &id)
                .map_err(|v| StoreError::Corrupt(format!("platform case link: {v}")))
        })
        .transpose()
    }

    async fn apply_platform_changes(
        &self,
        actor: &str,
        changes: Vec<InboundChange>,
        next_cursor: Option<&str>,
    ) -> Result<Vec<InboundOutcome>, StoreError> {
        let author = self.author(actor.to_owned(), None);
        let next_cursor = next_cursor.map(str::to_owned);
        self.submit(None, move |conn, now| {
            Box::pin(async move {
                let mut tx = PgInbound { conn, author, now };
                let outcomes = inbound::apply_changes(&mut tx, &changes).await?;
                let Some(next_cursor) = next_cursor else {
                    return Ok(outcomes);
                };
                sqlx::query(
                    "INSERT INTO platform_pull (id, cursor, n_changes, update_time)
                     VALUES (1, $1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor,
                         n_changes = platform_pull.n_changes + excluded.n_changes,
                         update_time = excluded.update_time",
                )
                .bind(&next_cursor)
                .bind(i64::try_from(changes.len()).unwrap_or(i64::MAX))
                .bind(now.as_micros())
                .execute(&mut *tx.conn)
                .await?;
                Ok(outcomes)
            })
        })
        .await
    }

    async fn pull_state(&self) -> Result<PullState, StoreError> {
        let row =
            sqlx::query("SELECT cursor, n_changes, update_time FROM platform_pull WHERE id = 1")
                .fetch_optional(&self.readers)
                .await?;
        row.map(|row| {
            Ok(PullState {
                cursor: Some(row.try_get("cursor")?),
                last_pull_time: Some(Timestamp::from_micros(row.try_get("update_time")?)),
                n_changes: u64::try_from(row.try_get::<i64, _>("n_changes")?).unwrap_or(0),
            })
        })
        .transpose()
        .map(Option::unwrap_or_default)
    }

    async fn prune_platform_inbox(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM platform_inbox WHERE apply_time < $1")
                    .bind(before.as_micros())
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn prune_delivered_pushes(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            Box::pin(async move {
                let done = sqlx::query(
                    "DELETE FROM outbox WHERE state = 'delivered' AND update_time < $1",
                )
                .bind(before.as_micros())
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn get_setting(&self, key: SettingKey) -> Result<Option<StoredSetting>, StoreError> {
        let row =
            sqlx::query("SELECT version, value, actor, update_time FROM settings WHERE key = $1")
                .bind(key.as_str())
                .fetch_optional(&self.readers)
                .await?;
        row.map(|row| setting_from_row(&row, "update_time"))
            .transpose()
    }

    async fn put_setting(
        &self,
        ctx: WriteContext,
        key: SettingKey,
        value: String,
        expected_version: Option<i64>,
    ) -> Result<StoredSetting, StoreError> {
        self.submit(ctx.request, move |conn, now| {
            Box::pin(async move {
                let current: i64 =
                    sqlx::query_scalar("SELECT version FROM settings WHERE key = $1 FOR UPDATE")
                        .bind(key.as_str())
                        .fetch_optional(&mut *conn)
                        .await?
                        .unwrap_or(0);
                if expected_version.is_some_and(|v| v != current) {
                    return Err(StoreError::SettingVersionMismatch {
                        current_version: current,
                    });
                }
                let stored = StoredSetting {
                    version: current + 1,
                    value,
                    actor: ctx.actor,
                    update_time: now,
                };
                sqlx::query(
                    "INSERT INTO settings (key, version, value, actor, update_time)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (key) DO UPDATE SET version = excluded.version,
                     value = excluded.value, actor = excluded.actor,
                     update_time = excluded.update_time",
                )
                .bind(key.as_str())
                .bind(stored.version)
                .bind(&stored.value)
                .bind(&stored.actor)
                .bind(now.as_micros())
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "INSERT INTO setting_changes (key, version, value, actor, change_time)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(key.as_str())
                .bind(stored.version)
                .bind(&stored.value)
                .bind(&stored.actor)
                .bind(now.as_micros())
                .execute(&mut *conn)
                .await?;
                Ok(stored)
            })
        })
        .await
    }

    async fn list_setting_changes(
        &self,
        key: SettingKey,
        before_version: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredSetting>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, value, actor, change_time FROM setting_changes
             WHERE key = $1 AND version < $2 ORDER BY version DESC LIMIT $3",
        )
        .bind(key.as_str())
        .bind(before_version.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| setting_from_row(row, "change_time"))
            .collect()
    }

    async fn sla_progress(&self) -> Result<SlaProgress, StoreError> {
        let row = sqlx::query(
            "SELECT cursor, calendar_version, sla_version FROM sla_progress WHERE id = 1",
        )
        .fetch_optional(&self.readers)
        .await?;
        row.map(|row| {
            Ok(SlaProgress {
                cursor: row.try_get("cursor")?,
                calendar_version: row.try_get("calendar_version")?,
                sla_version: row.try_get("sla_version")?,
            })
        })
        .transpose()
        .map(Option::unwrap_or_default)
    }

    async fn save_sla_projection(
        &self,
        rows: Vec<SlaRow>,
        facts: Vec<TicketFacts>,
        progress: Option<SlaProgress>,
    ) -> Result<(), StoreError> {
        self.submit(None, move |conn, _now| {
            Box::pin(async move {
                for facts in &facts {
                    save_facts(&mut *conn, FactsColumns::of(facts)).await?;
                }
                for row in &rows {
                    let id = row.ticket_id.to_string();
                    if row.is_idle() {
                        sqlx::query("DELETE FROM sla_projection WHERE ticket_id = $1::uuid")
                            .bind(&id)
                            .execute(&mut *conn)
                            .await?;
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO sla_projection (ticket_id, reference, directorate,
                         next_alert_time, next_due_time, next_due_kind)
                         VALUES ($1::uuid, $2, $3, $4, $5, $6)
                         ON CONFLICT (ticket_id) DO UPDATE SET reference = excluded.reference,
                         directorate = excluded.directorate,
                         next_alert_time = excluded.next_alert_time,
                         next_due_time = excluded.next_due_time,
                         next_due_kind = excluded.next_due_kind",
                    )
                    .bind(&id)
                    .bind(row.reference.to_string())
                    .bind(row.directorate.as_ref().map(|d| d.as_str().to_owned()))
                    .bind(row.next_alert_time.map(Timestamp::as_micros))
                    .bind(row.next_due_time.map(Timestamp::as_micros))
                    .bind(row.next_due_kind.map(|k| k.as_str()))
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some(p) = progress {
                    sqlx::query(
                        "INSERT INTO sla_progress (id, cursor, calendar_version, sla_version)
                         VALUES (1, $1, $2, $3)
                         ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor,
                         calendar_version = excluded.calendar_version,
                         sla_version = excluded.sla_version",
                    )
                    .bind(p.cursor)
                    .bind(p.calendar_version)
                    .bind(p.sla_version)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn ticket_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TicketFacts>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            facts_columns!(""),
            " FROM ticket_facts WHERE create_time >= $1 AND create_time < $2
                 ORDER BY create_time, ticket_id"
        ))
        .bind(from.as_micros())
        .bind(to.as_micros())
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| facts_columns_from_pg(row)?.into_facts())
            .collect()
    }

    async fn try_lead(&self, role: LeaderRole) -> Result<Option<Box<dyn LeaderLease>>, StoreError> {
        // A session of its own, outside the pools: the lock lives as long as this session.
        // The session of the last failed try is used again.
        let cached = self
            .candidates
            .lock()
            .map_err(|_| StoreError::Corrupt("the candidate sessions' lock is poisoned".into()))?
            .remove(&role.lock_key());
        let mut conn = match cached {
            Some(conn) => conn,
            None => PgConnection::connect_with(&self.connect).await?,
        };
        // A session that fails here is dropped, and the next try opens a new one.
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(role.lock_key())
            .fetch_one(&mut conn)
            .await?;
        if !taken {
            if let Ok(mut candidates) = self.candidates.lock() {
                candidates.insert(role.lock_key(), conn);
            }
            return Ok(None);
        }
        Ok(Some(Box::new(PgLease {
            conn,
            key: role.lock_key(),
        })))
    }

    async fn tally_ticket_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
        tally: KpiTally,
    ) -> Result<KpiTally, StoreError> {
        // Each part on a task of its own, so the parts are decoded and counted on all cores.
        let parts = super::kpi_read_parts(from, to)
            .into_iter()
            .map(|(from, to)| {
                let mut part = tally.empty_like();
                let readers = self.readers.clone();
                tokio::spawn(async move {
                    let mut rows = sqlx::query(concat!(
                        "SELECT ",
                        facts_columns!(""),
                        " FROM ticket_facts WHERE create_time >= $1 AND create_time < $2"
                    ))
                    .bind(from.as_micros())
                    .bind(to.as_micros())
                    .fetch(&readers);
                    while let Some(row) = rows.try_next().await? {
                        part.add_view(&facts_columns_from_pg(&row)?.view()?);
                    }
                    drop(rows);
                    // The quality reviews of those tickets.
                    let reviews = sqlx::query(concat!(
                        "SELECT ",
                        facts_columns!("f."),
                        ", q.employee_id, q.weighted_score
                             FROM quality_reviews q JOIN ticket_facts f ON f.ticket_id = q.ticket_id
                             WHERE f.create_time >= $1 AND f.create_time < $2"
                    ))
                    .bind(from.as_micros())
                    .bind(to.as_micros())
                    .fetch_all(&readers)
                    .await?;
                    for row in &reviews {
                        let columns = facts_columns_from_pg(row)?;
                        let reviewed: &str = row.try_get("employee_id")?;
                        part.add_review(&columns.view()?, reviewed, row.try_get("weighted_score")?);
                    }
                    Ok::<_, StoreError>(part)
                })
            })
            .collect::<Vec<_>>();
        let mut tally = tally;
        for part in futures::future::join_all(parts).await {
            match part {
                Ok(part) => tally.merge(part?),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => return Err(StoreError::ShuttingDown),
            }
        }
        Ok(tally)
    }

    async fn sla_alerts_due(&self, now: Timestamp, limit: u32) -> Result<Vec<SlaRow>, StoreError> {
        let rows = sqlx::query(select_sla_rows!(
            "WHERE next_alert_time IS NOT NULL
             AND next_alert_time <= $1 ORDER BY next_alert_time LIMIT $2"
        ))
        .bind(now.as_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(sla_row_from_pg).collect()
    }

    async fn sla_at_risk(
        &self,
        directorate: Option<Code>,
        due_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<SlaRow>, StoreError> {
        let rows = match directorate {
            Some(d) => {
                sqlx::query(select_sla_rows!(
                    "WHERE directorate = $1
                     AND next_due_time IS NOT NULL AND next_due_time < $2
                     ORDER BY next_due_time LIMIT $3"
                ))
                .bind(d.as_str().to_owned())
                .bind(due_before.as_micros())
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
                .await?
            }
            None => {
                sqlx::query(select_sla_rows!(
                    "WHERE next_due_time IS NOT NULL
                     AND next_due_time < $1 ORDER BY next_due_time LIMIT $2"
                ))
                .bind(due_before.as_micros())
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
                .await?
            }
        };
        rows.iter().map(sla_row_from_pg).collect()
    }

    async fn enqueue_repair_push(
        &self,
        ticket_id: TicketId,
        kind: PushKind,
    ) -> Result<Option<i64>, StoreError> {
        self.submit(None, move |conn, now| {
            Box::pin(async move {
                let blocked = sqlx::query(
                    "SELECT 1::BIGINT FROM outbox WHERE ticket_id = $1::uuid AND state IN ('pending', 'dead') LIMIT 1",
                )
                .bind(ticket_id.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .is_some();
                if blocked {
                    return Ok(None);
                }
                let row = sqlx::query(
                    "SELECT seq, ticket_id::text AS ticket_id, actor, occur_time, version, body::text AS body
                     FROM ticket_events WHERE ticket_id = $1::uuid ORDER BY seq DESC LIMIT 1",
                )
                .bind(ticket_id.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::TicketNotFound)?;
                let event = event_from_row(&row)?;
                let ticket_body: String = sqlx::query_scalar("SELECT body::text FROM tickets WHERE id = $1::uuid")
                    .bind(ticket_id.to_string())
                    .fetch_one(&mut *conn)
                    .await?;
                let seq: i64 = sqlx::query_scalar(
                    "INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key, ticket_body,
                         event_body, state, next_attempt_at, create_time, update_time)
                     VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6::jsonb, 'pending', $7, $8, $9) RETURNING seq",
                )
                .bind(ticket_id.to_string())
                .bind(event.cursor)
                .bind(kind.as_str())
                // Not the key of the original push: the platform would answer from its
                // idempotency store and change nothing.
                .bind(format!(
                    "balagh-{ticket_id}-{}-repair-{}",
                    event.cursor,
                    now.as_micros()
                ))
                .bind(&ticket_body)
                .bind(to_json(&event)?)
                .bind(now.as_micros())
                .bind(now.as_micros())
                .bind(now.as_micros())
                .fetch_one(&mut *conn)
                .await?;
                Ok(Some(seq))
            })
        })
        .await
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: self.readers.size(),
            idle: self.readers.num_idle(),
        }
    }

    async fn record_quality_review(
        &self,
        ctx: WriteContext,
        review: NewQualityReview,
    ) -> Result<QualityReview, StoreError> {
        self.submit(ctx.request, move |conn, now| {
            Box::pin(record_quality_review_tx(conn, ctx.actor, review, now))
        })
        .await
    }

    async fn list_quality_reviews(
        &self,
        query: &QualityReviewQuery,
    ) -> Result<Vec<ListedQualityReview>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body::text AS body FROM quality_reviews
             WHERE ($1::text IS NULL OR employee_id = $1) AND review_time >= $2
               AND review_time < $3 AND seq > $4
             ORDER BY seq LIMIT $5",
        )
        .bind(query.employee.as_ref().map(|e| e.as_str().to_owned()))
        .bind(query.from.map_or(i64::MIN, Timestamp::as_micros))
        .bind(query.to.map_or(i64::MAX, Timestamp::as_micros))
        .bind(query.after_position.unwrap_or(0))
        .bind(i64::from(query.limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                Ok(ListedQualityReview {
                    position: row.try_get("seq")?,
                    review: from_json(&body, "quality review")?,
                })
            })
            .collect()
    }

    async fn sample_tickets_for_review(
        &self,
        employee: EmployeeId,
        from: Timestamp,
        to: Timestamp,
        n: u32,
        seed: u64,
    ) -> Result<Vec<Ticket>, StoreError> {
        // A ticket settled at or after `from` was last updated at or after it: the update
        // time narrows the scan, the settle time decides.
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT t.body::text FROM tickets t
             WHERE t.status IN ('resolved', 'closed') AND t.update_time >= $1
               AND (t.assignee = $2 OR EXISTS (
                    SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id
                      AND e.body -> 'assignment' ->> 'assignee' = $2))
               AND NOT EXISTS (
                    SELECT 1 FROM quality_reviews q
                    WHERE q.ticket_id = t.id AND q.employee_id = $2)",
        )
        .bind(from.as_micros())
        .bind(employee.as_str())
        .fetch_all(&self.readers)
        .await?;
        let mut settled = Vec::new();
        for body in bodies {
            let ticket: Ticket = from_json(&body, "ticket")?;
            if quality::settle_time(&ticket).is_some_and(|at| from <= at && at < to) {
                settled.push(ticket);
            }
        }
        Ok(quality::choose_sample(seed, settled, n as usize))
    }

    async fn rate_on_call_back(
        &self,
        ctx: WriteContext,
        id: TicketId,
        expected_version: Option<i64>,
        satisfaction: Satisfaction,
        policy: SurveyPolicy,
    ) -> Result<(Ticket, TicketEvent), StoreError> {
        let author = self.author(ctx.actor, ctx.reach);
        self.submit(ctx.request, move |conn, now| {
            Box::pin(rate_on_call_back_tx(
                conn,
                author,
                id,
                expected_version,
                satisfaction,
                policy,
                now,
            ))
        })
        .await
    }

    async fn record_unrated_call_back(
        &self,
        ctx: WriteContext,
        id: TicketId,
        outcome: UnratedCallBack,
        policy: SurveyPolicy,
    ) -> Result<SurveyRequest, StoreError> {
        self.submit(ctx.request, move |conn, now| {
            Box::pin(record_unrated_call_back_tx(
                conn, ctx.actor, id, outcome, policy, now,
            ))
        })
        .await
    }

    async fn erase_personal_data(
        &self,
        ctx: WriteContext,
        id: TicketId,
        reason: String,
    ) -> Result<Ticket, StoreError> {
        let author = self.author(ctx.actor, ctx.reach);
        self.submit(ctx.request, move |conn, now| {
            Box::pin(async move {
                let (seq, current) = load_ticket(conn, id).await?;
                super::check_reach(author.reach.as_ref(), &current)?;
                let ticket =
                    match crate::domain::lifecycle::erase_personal_data(&current, reason, now) {
                        Some((next, record)) => {
                            let body = to_json(&next)?;
                            save_ticket(conn, seq, &next, &body).await?;
                            append_event(conn, &next, &body, &author, now, record).await?;
                            next
                        }
                        None => current,
                    };
                let reporter = to_json(&ticket.reporter)?;
                let ticket_id = id.to_string();
                sqlx::query(
                    "UPDATE ticket_events
                     SET ticket_body = jsonb_set(ticket_body, '{reporter}', $1::jsonb)
                     WHERE ticket_id = $2::uuid AND ticket_body IS NOT NULL",
                )
                .bind(&reporter)
                .bind(&ticket_id)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE outbox SET ticket_body = jsonb_set(ticket_body, '{reporter}', $1::jsonb)
                     WHERE ticket_id = $2::uuid",
                )
                .bind(&reporter)
                .bind(&ticket_id)
                .execute(&mut *conn)
                .await?;
                sqlx::query("DELETE FROM request_records WHERE strpos(response, $1) > 0")
                    .bind(&ticket_id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "UPDATE survey_requests SET beneficiary_hash = NULL WHERE ticket_id = $1::uuid",
                )
                .bind(&ticket_id)
                .execute(&mut *conn)
                .await?;
                Ok(ticket)
            })
        })
        .await
    }

    async fn tickets_to_anonymise(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TicketId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id::text FROM tickets
             WHERE status IN ('closed', 'rejected', 'transferred', 'merged')
               AND update_time < $1
               AND (body->'reporter'->>'anonymous')::boolean = false
               AND COALESCE((body->'reporter'->>'erased')::boolean, false) = false
             ORDER BY update_time LIMIT $2",
        )
        .bind(before.as_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        ids.iter()
            .map(|id| TicketId::parse("id", id).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    async fn record_personal_data_access(
        &self,
        access: PersonalDataAccess,
        tickets: Vec<TicketId>,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = tickets.iter().map(ToString::to_string).collect();
        self.submit(None, move |conn, now| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO personal_data_accesses (ticket_id, actor, role, method, access_time)
                     SELECT id::uuid, $2, $3, $4, $5 FROM UNNEST($1::text[]) AS id",
                )
                .bind(ids)
                .bind(access.actor)
                .bind(access.role)
                .bind(access.method)
                .bind(now.as_micros())
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn list_personal_data_accesses(
        &self,
        id: TicketId,
        after: i64,
        limit: u32,
    ) -> Result<Option<Vec<(i64, PersonalDataAccessRecord)>>, StoreError> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tickets WHERE id = $1::uuid")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT seq, actor, role, method, access_time FROM personal_data_accesses
             WHERE ticket_id = $1::uuid AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("seq")?,
                    PersonalDataAccessRecord {
                        ticket_id: id,
                        access: PersonalDataAccess {
                            actor: row.try_get("actor")?,
                            role: row.try_get("role")?,
                            method: row.try_get("method")?,
                        },
                        access_time: Timestamp::from_micros(row.try_get("access_time")?),
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()
            .map(Some)
    }

    async fn list_survey_requests(
        &self,
        id: TicketId,
        limit: u32,
    ) -> Result<Option<Vec<SurveyRequest>>, StoreError> {
        let exists = sqlx::query("SELECT 1 FROM tickets WHERE id = $1::uuid")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let rows = sqlx::query(select_ledger_rows!(
            "WHERE ticket_id = $1::uuid ORDER BY seq LIMIT $2"
        ))
        .bind(id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| ledger_entry_from_row(row).map(|e| e.request))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn call_back_candidates(
        &self,
        query: &CallBackQuery,
    ) -> Result<Vec<CallBackCandidate>, StoreError> {
        // A ticket settled at or after `settled_from` was last updated at or after it: the
        // update time narrows the scan (tickets_update_time), the settle time decides.
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body::text FROM tickets
             WHERE update_time >= $1 AND status IN ('resolved', 'closed')
               AND ($2::text IS NULL OR directorate = $2)
               AND body ->> 'satisfaction' IS NULL
               AND body -> 'reporter' ->> 'phone' IS NOT NULL",
        )
        .bind(query.settled_from.as_micros())
        .bind(query.directorate.as_ref().map(|d| d.as_str().to_owned()))
        .fetch_all(&self.readers)
        .await?;
        let mut tickets = Vec::with_capacity(bodies.len());
        for body in bodies {
            let ticket: Ticket = from_json(&body, "ticket")?;
            if satisfaction::may_be_called_about(&ticket) {
                tickets.push(ticket);
            }
        }
        let mut keys: Vec<Vec<u8>> = tickets
            .iter()
            .filter_map(|t| BeneficiaryKey::of(&t.reporter))
            .map(|k| k.as_bytes().to_vec())
            .collect();
        keys.sort();
        keys.dedup();
        let ids: Vec<String> = tickets.iter().map(|t| t.id.to_string()).collect();
        let rows = sqlx::query(select_ledger_rows!(
            "WHERE (beneficiary_hash = ANY($1) AND ask_time > $2) OR ticket_id = ANY($3::uuid[])"
        ))
        .bind(keys)
        .bind(query.policy.quiet_since(query.now).as_micros())
        .bind(ids)
        .fetch_all(&self.readers)
        .await?;
        let ledger = rows
            .iter()
            .map(ledger_entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(satisfaction::choose_call_backs(tickets, &ledger, query))
    }

    async fn purge_request_records(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM request_records WHERE create_time < $1")
                    .bind(before.as_micros())
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            })
        })
        .await
    }

    async fn close(&self) {
        self.stop_writer.cancel();
        if let Some(finished) = self.writer.lock().await.take()
            && finished.await.is_err()
        {
            tracing::error!("the writer thread ended without finishing its work");
        }
        if let Some(task) = self.listener.lock().await.take()
            && let Err(error) = task.await
        {
            tracing::error!(error = %error, "the commit listener failed");
        }
        if let Some(task) = self.cleaner.lock().await.take()
            && let Err(error) = task.await
        {
            tracing::error!(error = %error, "the search index cleaner failed");
        }
        self.readers.close().await;
        let candidates: Vec<PgConnection> = match self.candidates.lock() {
            Ok(mut candidates) => candidates.drain().map(|(_, conn)| conn).collect(),
            Err(_) => Vec::new(),
        };
        for conn in candidates {
            conn.close().await.ok();
        }
    }
}

/// Inserts or replaces a ticket's KPI facts.
async fn save_facts(conn: &mut PgConnection, c: FactsColumns) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ticket_facts (ticket_id, create_time, ticket_type, channel, category,
         directorate, outlet, wilayat, support_line, assignee, status, first_response_seconds,
         resolution_seconds, first_response_met, resolution_met, n_escalations, reopened,
         transferred, rejected, resolved_at_line_1, satisfaction_score, resolve_time,
         settle_time)
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
         $17, $18, $19, $20, $21, $22, $23)
         ON CONFLICT (ticket_id) DO UPDATE SET create_time = excluded.create_time,
         ticket_type = excluded.ticket_type, channel = excluded.channel,
         category = excluded.category, directorate = excluded.directorate,
         outlet = excluded.outlet, wilayat = excluded.wilayat,
         support_line = excluded.support_line, assignee = excluded.assignee,
         status = excluded.status, first_response_seconds = excluded.first_response_seconds,
         resolution_seconds = excluded.resolution_seconds,
         first_response_met = excluded.first_response_met,
         resolution_met = excluded.resolution_met, n_escalations = excluded.n_escalations,
         reopened = excluded.reopened, transferred = excluded.transferred,
         rejected = excluded.rejected, resolved_at_line_1 = excluded.resolved_at_line_1,
         satisfaction_score = excluded.satisfaction_score,
         resolve_time = excluded.resolve_time, settle_time = excluded.settle_time",
    )
    .bind(c.ticket_id)
    .bind(c.create_time)
    .bind(c.ticket_type)
    .bind(c.channel)
    .bind(c.category)
    .bind(c.directorate)
    .bind(c.outlet)
    .bind(c.wilayat)
    .bind(c.support_line)
    .bind(c.assignee)
    .bind(c.status)
    .bind(c.first_response_seconds)
    .bind(c.resolution_seconds)
    .bind(c.first_response_met)
    .bind(c.resolution_met)
    .bind(c.n_escalations)
    .bind(c.reopened)
    .bind(c.transferred)
    .bind(c.rejected)
    .bind(c.resolved_at_line_1)
    .bind(c.satisfaction_score)
    .bind(c.resolve_time)
    .bind(c.settle_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// A `ticket_facts` row, its text borrowed from the row.
/// Reads the columns `facts_columns!` selects, which come first in every query that uses
/// it, by position: a KPI read decodes a million rows, and a lookup by name per column was a
/// measurable part of that.
fn facts_columns_from_pg(row: &PgRow) -> Result<FactsColumns<&str>, StoreError> {
    Ok(FactsColumns {
        ticket_id: row.try_get(0)?,
        create_time: row.try_get(1)?,
        ticket_type: row.try_get(2)?,
        channel: row.try_get(3)?,
        category: row.try_get(4)?,
        directorate: row.try_get(5)?,
        outlet: row.try_get(6)?,
        wilayat: row.try_get(7)?,
        support_line: row.try_get(8)?,
        assignee: row.try_get(9)?,
        status: row.try_get(10)?,
        first_response_seconds: row.try_get(11)?,
        resolution_seconds: row.try_get(12)?,
        first_response_met: row.try_get(13)?,
        resolution_met: row.try_get(14)?,
        n_escalations: row.try_get(15)?,
        reopened: row.try_get(16)?,
        transferred: row.try_get(17)?,
        rejected: row.try_get(18)?,
        resolved_at_line_1: row.try_get(19)?,
        satisfaction_score: row.try_get(20)?,
        resolve_time: row.try_get(21)?,
        settle_time: row.try_get(22)?,
    })
}

fn sla_row_from_pg(row: &PgRow) -> Result<SlaRow, StoreError> {
    sla_row(
        row.try_get("ticket_id")?,
        row.try_get("reference")?,
        row.try_get("directorate")?,
        row.try_get("next_alert_time")?,
        row.try_get("next_due_time")?,
        row.try_get("next_due_kind")?,
    )
}

fn setting_from_row(row: &PgRow, time_column: &str) -> Result<StoredSetting, StoreError> {
    Ok(StoredSetting {
        version: row.try_get("version")?,
        value: row.try_get("value")?,
        actor: row.try_get("actor")?,
        update_time: Timestamp::from_micros(row.try_get(time_column)?),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgConnection};

    use super::{
        BEGIN_WRITE, COMMIT_AND_BEGIN, Next, RESTART_WRITE, TAKE_WRITE_LOCK, WRITE_LOCK_KEY,
        commit_and_begin, prefix_query,
    };

    #[test]
    fn a_search_is_a_prefix_term_per_word_split_at_hyphens() {
        let words = |ws: &[&str]| ws.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            prefix_query(&words(&["مدرسه", "mct-2026-000123"])),
            "'مدرسه':* & 'mct':* & '2026':* & '000123':*"
        );
        // Quotes and backslashes cannot end a term early (normalised words hold neither).
        assert_eq!(
            prefix_query(&words(&["a'b", "c\\"])),
            "'a''b':* & 'c\\\\':*"
        );
        assert_eq!(prefix_query(&words(&["-", "--"])), "");
    }

    /// Runs `body` with a database of its own on the server `BALAGH_TEST_DATABASE_URL` names
    /// (the test is left out, with a notice, without one), and drops the database afterwards,
    /// also when `body` panics: the panic is passed on after.
    async fn in_scratch_database<F, Fut>(prefix: &str, body: F)
    where
        F: FnOnce(PgConnectOptions) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use sqlx::Connection;
        let Ok(url) = std::env::var("BALAGH_TEST_DATABASE_URL") else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL test {} left out because BALAGH_TEST_DATABASE_URL is not set",
                std::thread::current().name().unwrap_or("?")
            );
            return;
        };
        let admin_options = PgConnectOptions::from_str(&url).unwrap();
        let mut admin = PgConnection::connect_with(&admin_options).await.unwrap();
        let name = format!(
            "balagh_{prefix}_{}_{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        // The name is made of a literal, digits and hex, never of input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let outcome = tokio::spawn(body(admin_options.database(&name))).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        if let Err(error) = outcome {
            match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("the test's task ended: {error}"),
            }
        }
    }

    /// The writer's chained commit. A database of its own, so no other session wants the lock
    /// (advisory locks are per database; the key is balagh's).
    #[tokio::test]
    async fn a_commit_begins_the_next_transaction_and_never_waits_there_for_the_lock() {
        in_scratch_database("chain", |options| async move {
            use sqlx::{Connection, Row};
            let mut writer = PgConnection::connect_with(&options).await.unwrap();
            let mut tx = writer.begin_with(BEGIN_WRITE).await.unwrap();
            // Nobody else wants the lock: the next transaction has it.
            let (committed, next) = commit_and_begin(&mut tx).await;
            assert!(committed.is_ok());
            assert_eq!(next, Next::Locked);

            // Another session waits for the lock: the commit hands it over, and the next
            // transaction begins without it, at once.
            let mut other = PgConnection::connect_with(&options).await.unwrap();
            let other_pid: i32 = sqlx::query("SELECT pg_backend_pid()")
                .fetch_one(&mut other)
                .await
                .unwrap()
                .get(0);
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            let holder = tokio::spawn(async move {
                let other_tx = other.begin_with(BEGIN_WRITE).await.unwrap();
                released.await.unwrap();
                other_tx.commit().await.unwrap();
            });
            let mut watcher = PgConnection::connect_with(&options).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                assert!(
                    !holder.is_finished() && tokio::time::Instant::now() < deadline,
                    "the other session never waited for the lock"
                );
                let waiting: bool = sqlx::query(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)",
                )
                .bind(other_pid)
                .fetch_one(&mut watcher)
                .await
                .unwrap()
                .get(0);
                if waiting {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (committed, next) = commit_and_begin(&mut tx).await;
            assert!(committed.is_ok());
            assert_eq!(next, Next::Unlocked);
            // The other session has the lock until it is told to commit: the commit above did not
            // wait for it. Now the writer waits for the lock, in the transaction begun without it.
            release.send(()).unwrap();
            sqlx::raw_sql(TAKE_WRITE_LOCK)
                .execute(&mut *tx)
                .await
                .unwrap();
            holder.await.unwrap();
            tx.commit().await.unwrap();
            writer.close().await.unwrap();
            watcher.close().await.unwrap();
        })
        .await;
    }

    /// The search index's cleaner merges its pending list as the index's owner, and stops at
    /// once, after one warning, in a session that does not own it (SQLSTATE 42501). Any other
    /// error would leave it running, and the test waiting.
    #[tokio::test]
    async fn the_index_cleaner_stops_when_it_does_not_own_the_index() {
        in_scratch_database("cleaner", |options| async move {
            use sqlx::postgres::PgPoolOptions;
            let owner = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .unwrap();
            sqlx::raw_sql(
                "CREATE TABLE t (v tsvector);
                 CREATE INDEX tickets_search ON t USING gin (v) WITH (fastupdate = on);
                 INSERT INTO t SELECT to_tsvector('simple', 'word ' || g) FROM generate_series(1, 100) g",
            )
            .execute(&owner)
            .await
            .unwrap();
            let stop = tokio_util::sync::CancellationToken::new();
            let run = |pool: sqlx::PgPool| {
                let (commits, commit) = tokio::sync::watch::channel(0u64);
                let task = tokio::spawn(super::clean_search_index(pool, commit, stop.clone()));
                commits.send(1).unwrap();
                (commits, task)
            };

            let (_commits, as_owner) = run(owner.clone());
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!as_owner.is_finished(), "the owner's cleaner keeps running");

            // pg_monitor exists on every server since PostgreSQL 10 and owns nothing here.
            let not_owner = PgPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::raw_sql("SET ROLE pg_monitor").execute(conn).await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .unwrap();
            let (_commits, as_other) = run(not_owner.clone());
            tokio::time::timeout(Duration::from_secs(30), as_other)
                .await
                .expect("the cleaner stops when it may not merge")
                .unwrap();
            assert!(!as_owner.is_finished(), "the owner's cleaner still runs");
            stop.cancel();
            as_owner.await.unwrap();
            owner.close().await;
            not_owner.close().await;
        })
        .await;
    }

    #[test]
    fn a_write_transaction_begins_by_taking_the_write_lock() {
        assert_eq!(
            BEGIN_WRITE,
            format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
        );
        assert_eq!(RESTART_WRITE, format!("ROLLBACK; {BEGIN_WRITE}"));
        assert_eq!(
            COMMIT_AND_BEGIN,
            format!("COMMIT; BEGIN; SELECT pg_try_advisory_xact_lock({WRITE_LOCK_KEY})")
        );
        assert_eq!(
            TAKE_WRITE_LOCK,
            format!("SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
        );
    }
}
