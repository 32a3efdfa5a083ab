//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, driven through
//! rusqlite, so every statement is a plain call into SQLite on the thread that needs it.
//!
//! Writes go through a single writer thread (`sqlite-writer`) that owns the only writing
//! connection. It takes every write waiting in its queue (up to `max_batch`), runs each inside
//! its own savepoint of one `BEGIN IMMEDIATE` transaction, commits once, and only then answers
//! each caller. This is group commit: one fsync acknowledges many concurrent writes. A write
//! that fails or panics rolls back its savepoint alone; a commit that fails fails every write
//! of its batch. A write is a synchronous closure ([`Op`]) that does SQL and in-memory work
//! only, so the thread never waits on anything but SQLite and the disk.
//!
//! A checkpoint thread (`sqlite-checkpoint`) with a connection of its own copies committed WAL
//! frames into the database file after commits, so the writer does not stop between batches to
//! do it; the writer's own automatic checkpoint remains, at a higher threshold, as the step
//! that lets the WAL start over and as the bound if the checkpoint thread falls behind.
//!
//! Reads use a small pool of read-only connections, which WAL lets run beside the writer.
//! Reads of a bounded, small size (a ticket, a page of a list, a ticket's events) run inline
//! on the calling tokio worker: they take microseconds, less than handing them to another
//! thread and back. Reads whose cost grows with the data (snapshots, the change feed, outbox
//! scans and counts) run on tokio's blocking pool, so they never stall a worker.
//!
//! The schema is migrated at open by sqlx's migrator (existing files carry its
//! `_sqlx_migrations` table), on a connection closed before the store starts.
//!
//! Invariants: a caller hears `Ok` only after the transaction holding its write is durable;
//! the writer is the only writer, so event cursors (AUTOINCREMENT) are in commit order.

use std::any::Any;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{
    Connection, OpenFlags, Row, Transaction, TransactionBehavior, params, params_from_iter,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::common::{
    FactsColumns, SearchTerms, answer_batch, check_version, from_json, inbound_record_fields,
    new_ticket, not_a_handler, reference, search_document, sla_row, to_json, unknown,
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for a lock held by another before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements each connection keeps; list queries differ by filter shape.
const STATEMENT_CACHE: usize = 64;

/// The read connections' default `mmap_size`: 16 GiB, the whole file of a few million
/// tickets. A read then finds the pages in the operating system's page cache without a
/// `pread` and a copy into SQLite's own cache; on the bench machine GetTicket ran 1.3x as
/// fast (docs/benchmarks.md). Only address space is reserved: the file is mapped as far as it
/// reaches. The writer never maps.
pub const DEFAULT_MMAP_BYTES: u64 = 16 << 30;

/// The ceiling on `mmap_size` the bundled SQLite is built with (`SQLITE_MAX_MMAP_SIZE` in
/// `.cargo/config.toml`, 64 GiB): a larger value would be cut to it without a word, so the
/// configuration refuses one.
pub const MAX_MMAP_BYTES: u64 = 64 << 30;

/// The name of the writer thread (at most 15 bytes: Linux truncates thread names). `balagh
/// bench` counts the CPU of threads named `sqlite-*` as SQLite's.
const WRITER_THREAD_NAME: &str = "sqlite-writer";

/// The name of the checkpointer thread, which copies committed WAL frames into the database
/// file beside the writer (see [`run_checkpointer`]).
const CHECKPOINT_THREAD_NAME: &str = "sqlite-checkpoint";

/// How often, at most, the checkpointer runs while commits come.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// WAL pages after which the writer checkpoints inline, itself (`wal_autocheckpoint`; SQLite's
/// default is 1,000 pages, about 4 MiB). The checkpointer normally copies the frames long
/// before: the writer's own checkpoint then copies only the tail the checkpointer has not
/// reached, and lets the next write start the WAL over, which a checkpoint running beside a
/// writer that keeps appending cannot. It also bounds the WAL if the checkpointer stops.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 4_000;

/// The size the `-wal` file is cut back to when the WAL starts over (`journal_size_limit`):
/// above the 16 MiB a steady write load keeps it at, so it is cut only after something held it
/// back, such as a long read.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 << 20;

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// A `sqlite://` URL, for example `sqlite://data/balagh.db`.
    pub url: String,
    /// Most writes committed together in one transaction.
    pub max_batch: usize,
    /// Writes waiting for the writer before callers wait to enqueue (back-pressure).
    pub queue_depth: usize,
    /// Connections in the read pool.
    pub readers: u32,
    /// Bytes of the database file each read connection maps into memory (`mmap_size`); 0
    /// reads through system calls instead.
    pub mmap_bytes: u64,
    /// Which tickets owe pushes to the national platform (written to the outbox).
    pub sync_policy: SyncPolicy,
}

impl SqliteStoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_batch: 512,
            queue_depth: 4096,
            readers: 4,
            mmap_bytes: DEFAULT_MMAP_BYTES,
            sync_policy: SyncPolicy::default(),
        }
    }
}

type Output = Box<dyn Any + Send>;

/// A write as the writer runs it: on the writing connection, inside the write's own
/// savepoint, at the time the writer gives it.
type Op = Box<dyn FnOnce(&Connection, Timestamp) -> Result<Output, StoreError> + Send>;

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Output, StoreError>>,
}

/// What the writer's queue carries.
enum Message {
    Write(Job),
    /// Refuse new writes, finish those already queued, and stop.
    Stop,
}

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    sync_policy: Arc<SyncPolicy>,
    readers: Arc<Readers>,
    commits: watch::Receiver<u64>,
    jobs: mpsc::Sender<Message>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpoints: Arc<AtomicU64>,
}

impl SqliteStore {
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
        options: SqliteStoreOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(&options.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let file = connect.get_filename().to_owned();
        if let Some(parent) = file.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Corrupt(format!("cannot create the database folder: {e}"))
            })?;
        }
        // Migrations run before the writer starts, so nothing else writes meanwhile.
        let migrating = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await?;
        MIGRATOR
            .run(&migrating)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))?;
        migrating.close().await;
        let readers = options.readers.max(1);
        let mmap_bytes = options.mmap_bytes.min(MAX_MMAP_BYTES);
        let (writer, checkpointing, readers) = tokio::task::spawn_blocking(move || {
            let writer = open_connection(&file, Access::Write)?;
            seed_default_catalog(&writer)?;
            let checkpointing = open_connection(&file, Access::Checkpoint)?;
            let readers = (0..readers)
                .map(|_| open_connection(&file, Access::Read { mmap_bytes }))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((writer, checkpointing, readers))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("opening the database panicked: {e}")))??;
        let (jobs, queue) = mpsc::channel(options.queue_depth.max(1));
        let (commit_sender, commits) = watch::channel(0);
        // One pending signal is enough: the checkpointer copies every frame committed so far.
        let (checkpoint_due, checkpoint_signal) = std::sync::mpsc::sync_channel(1);
        let checkpoints = Arc::new(AtomicU64::new(0));
        let checkpointer = {
            let counted = checkpoints.clone();
            std::thread::Builder::new()
                .name(CHECKPOINT_THREAD_NAME.to_owned())
                .spawn(move || run_checkpointer(checkpointing, checkpoint_signal, &counted))
                .map_err(|e| {
                    StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}"))
                })?
        };
        let max_batch = options.max_batch.max(1);
        let committed = Committed {
            count: commit_sender,
            checkpoint_due,
        };
        let thread = std::thread::Builder::new()
            .name(WRITER_THREAD_NAME.to_owned())
            .spawn(move || run_writer(writer, queue, clock, max_batch, committed))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            sync_policy: Arc::new(options.sync_policy),
            readers: Arc::new(Readers::new(readers)),
            commits,
            jobs,
            writer: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some(checkpointer)),
            checkpoints,
        })
    }

    /// Checkpoints of the checkpoint thread that found frames in the WAL and left every one
    /// of them copied into the database file, since the store opened (the writer's own
    /// checkpoints are not counted).
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Hands `op` to the writer and waits until its transaction committed. With a request
    /// key, a recorded first answer is returned instead of running `op` again.
    async fn submit<T, F>(&self, request: Option<RequestKey>, op: F) -> Result<T, StoreError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(&Connection, Timestamp) -> Result<T, StoreError> + Send + 'static,
    {
        let op: Op = Box::new(move |conn, now| {
            if let Some(key) = &request
                && let Some(first) = replay::<T>(conn, key)?
            {
                return Ok(Box::new(first));
            }
            let out = op(conn, now)?;
            if let Some(key) = &request {
                record(conn, key, now, &out)?;
            }
            Ok(Box::new(out))
        });
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Message::Write(Job { op, reply }))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        let out = answer.await.map_err(|_| StoreError::ShuttingDown)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Corrupt("the writer answered with another type".into()))
    }

    /// Runs a short read of bounded size inline, on the calling task's thread.
    async fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reader = self.readers.acquire().await?;
        read(&reader)
    }

    /// Runs a read whose cost grows with the data on the blocking pool.
    async fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.readers.acquire().await?;
        match tokio::task::spawn_blocking(move || read(&reader)).await {
            Ok(out) => out,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(StoreError::ShuttingDown),
        }
    }
}

/// What a connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Write,
    /// Runs checkpoints only.
    Checkpoint,
    /// Reads only, with this many bytes of the file mapped into memory.
    Read {
        mmap_bytes: u64,
    },
}

/// Opens a connection with the store's settings: WAL, `synchronous=FULL`, foreign keys, a
/// busy timeout; a reading connection also refuses writes (`query_only`) and maps the file.
fn open_connection(file: &Path, access: Access) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "the database refused WAL mode (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    match access {
        Access::Read { mmap_bytes } => {
            conn.pragma_update(None, "query_only", true)?;
            // Pages the file's map holds are read in place. A write through the writer's
            // connection reaches the same page cache, and WAL frames are still read from the
            // WAL, so a reader sees exactly what it would without the map.
            let mapped: i64 = conn.pragma_update_and_check(
                None,
                "mmap_size",
                i64::try_from(mmap_bytes).unwrap_or(i64::MAX),
                |row| row.get(0),
            )?;
            if u64::try_from(mapped).ok() != Some(mmap_bytes) {
                tracing::warn!(
                    asked = mmap_bytes,
                    mapped,
                    "SQLite maps less of the database file than configured"
                );
            }
        }
        Access::Checkpoint => {}
        Access::Write => {
            conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
            // When the WAL starts over, a file grown past this (a long read held it back)
            // is cut back to it.
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
            // Each write's savepoint journals the pages it changes; in memory, that costs no
            // system call.
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            conn.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS search_pending (
                     rowid INTEGER PRIMARY KEY,
                     content TEXT NOT NULL,
                     replaces INTEGER NOT NULL
                 )",
            )?;
        }
    }
    // The query planner stability guarantee: a statement's plan does not depend on the
    // values bound to it. Without it SQLite 3.51 marks every statement with `LIMIT ?` to be
    // compiled again each time a new limit is bound (`sqlite3ExprIsInteger` reads the bound
    // value), so a cached statement was prepared anew on every call: a third of a GetTicket's
    // server time went to it (docs/benchmarks.md).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The read-only connections. A reader holds a permit and a connection; both return to the
/// pool when it is dropped.
struct Readers {
    permits: Arc<Semaphore>,
    idle: StdMutex<Vec<Connection>>,
    size: u32,
}

impl Readers {
    fn new(connections: Vec<Connection>) -> Self {
        let size = u32::try_from(connections.len()).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: StdMutex::new(connections),
            size,
        }
    }

    async fn acquire(self: &Arc<Self>) -> Result<Reader, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        // A permit guarantees an idle connection: there are as many permits as connections.
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .ok_or(StoreError::ShuttingDown)?;
        Ok(Reader {
            readers: self.clone(),
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// Refuses further reads and closes the idle connections.
    fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

struct Reader {
    readers: Arc<Readers>,
    conn: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for Reader {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.readers.permits.is_closed()
        {
            self.readers
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
    }
}

/// Whom the writer tells of each commit.
struct Committed {
    /// Counts commits, for the change feed.
    count: watch::Sender<u64>,
    /// Wakes the checkpointer.
    checkpoint_due: std::sync::mpsc::SyncSender<()>,
}

/// The writer thread: batches queued writes into group commits until the queue closes (the
/// store stopped) or every sender is gone (the store was dropped).
fn run_writer(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Message>,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    committed: Committed,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write(job) => batch.push(job),
                // Refuse new writes, but finish every write already accepted.
                Message::Stop => queue.close(),
            }
            if batch.len() < max_batch {
                next = queue.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        if write_batch(&mut conn, batch.drain(..), clock.as_ref()) {
            committed.count.send_modify(|n| *n = n.wrapping_add(1));
            // Full: a signal is pending already. Disconnected: the checkpointer stopped, and
            // the writer's own checkpoints keep the WAL bounded.
            let _ = committed.checkpoint_due.try_send(());
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(error = %error, "closing the writer connection failed");
    }
}

/// The checkpointer thread: after commits, at most once per [`CHECKPOINT_INTERVAL`], copies
/// the committed WAL frames into the database file (a PASSIVE checkpoint: it takes no lock
/// the writer or the readers wait for). It stops when the writer does.
///
/// Why a thread of its own: with SQLite's automatic checkpoint, the writer itself copied the
/// pages and synced the database file every 1,000 WAL pages, between two group commits, while
/// every queued write waited (about a tenth of the writer's time when creating tickets at 64
/// clients, docs/benchmarks.md). Here the copy runs on another core, beside the next batch.
fn run_checkpointer(conn: Connection, due: std::sync::mpsc::Receiver<()>, checkpoints: &AtomicU64) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut writer_running = due.recv().is_ok();
    while writer_running {
        // (blocked, frames in the WAL, frames copied so far). SQLite reports a checkpoint it
        // could not run (the writer's own was running) as a row, not an error: (1, -1, -1).
        let complete = match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        }) {
            Ok((0, frames, copied)) => {
                if frames > 0 && copied == frames {
                    checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                copied == frames
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(error = %error, "a WAL checkpoint failed");
                false
            }
        };
        // Rest until the interval is over, noting commits meanwhile; stop at once when the
        // writer does.
        let rested = std::time::Instant::now() + CHECKPOINT_INTERVAL;
        let mut committed_meanwhile = false;
        loop {
            let left = rested.saturating_duration_since(std::time::Instant::now());
            match due.recv_timeout(left) {
                Ok(()) => committed_meanwhile = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    writer_running = false;
                    break;
                }
            }
        }
        // A checkpoint stops at the oldest snapshot a reader still holds: what it left is
        // tried again after the rest, also when no commit came meanwhile.
        if writer_running && complete && !committed_meanwhile {
            writer_running = due.recv().is_ok();
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(error = %error, "closing the checkpoint connection failed");
    }
}

/// Runs and commits one batch, then answers every caller; true when it committed.
fn write_batch(
    conn: &mut Connection,
    jobs: impl ExactSizeIterator<Item = Job>,
    clock: &dyn Clock,
) -> bool {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            tracing::error!(error = %error, "cannot begin a write transaction");
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::CommitFailed));
            }
            return false;
        }
    };
    let mut answers = Vec::with_capacity(jobs.len());
    let mut broken = None;
    for job in jobs {
        if broken.is_some() {
            answers.push((job.reply, Err(StoreError::CommitFailed)));
            continue;
        }
        match run_in_savepoint(&mut tx, job.op, clock.now()) {
            Ok(outcome) => answers.push((job.reply, outcome)),
            Err(error) => {
                answers.push((job.reply, Err(StoreError::CommitFailed)));
                broken = Some(error);
            }
        }
    }
    let committed = match broken {
        // A savepoint that could not be rolled back may hold part of a failed write: the
        // whole transaction rolls back (when `tx` drops) instead of committing it.
        Some(error) => Err(error),
        None => flush_search_index(&tx).and_then(|()| tx.commit()),
    };
    answer_batch(answers, committed)
}

/// Moves the search text the batch's writes queued in `temp.search_pending` into
/// `tickets_fts`, in the batch's transaction.
///
/// Why the detour: FTS5 writes its pending index to disk whenever a savepoint opens, so
/// writing `tickets_fts` inside every write's savepoint made one index segment per ticket and
/// then merged them, about a fifth of the writer's time. Queued rows roll back with their
/// write's savepoint like any other row, and reach the index together, once per batch.
fn flush_search_index(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "DELETE FROM tickets_fts
         WHERE rowid IN (SELECT rowid FROM temp.search_pending WHERE replaces)",
    )?
    .execute([])?;
    tx.prepare_cached(
        "INSERT INTO tickets_fts (rowid, content)
         SELECT rowid, content FROM temp.search_pending ORDER BY rowid",
    )?
    .execute([])?;
    tx.prepare_cached("DELETE FROM temp.search_pending")?
        .execute([])?;
    Ok(())
}

/// Runs one write in its own savepoint: kept when the write succeeds, rolled back when it
/// fails or panics. The outer error means the savepoint itself failed, and with it the batch.
fn run_in_savepoint(
    tx: &mut Transaction<'_>,
    op: Op,
    now: Timestamp,
) -> Result<Result<Output, StoreError>, rusqlite::Error> {
    let savepoint = tx.savepoint()?;
    // A panicking write fails alone instead of taking the writer, and with it every later
    // write, down.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| op(&savepoint, now)))
        .unwrap_or_else(|_| Err(StoreError::Corrupt("a write panicked".into())));
    match outcome {
        Ok(out) => {
            savepoint.commit()?;
            Ok(Ok(out))
        }
        Err(error) => {
            // Dropping a savepoint rolls it back and releases it; `finish` reports failures.
            savepoint.finish()?;
            Ok(Err(error))
        }
    }
}

/// The text of a column, borrowed from SQLite's buffer (no copy).
fn read_setting(conn: &Connection, key: SettingKey) -> Result<Option<StoredSetting>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT version, value, actor, update_time FROM settings WHERE key = ?")?;
    let mut rows = statement.query([key.as_str()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(StoredSetting {
        version: row.get("version")?,
        value: row.get("value")?,
        actor: row.get("actor")?,
        update_time: Timestamp::from_micros(row.get("update_time")?),
    }))
}

/// Inserts or replaces a ticket's KPI facts.
fn save_facts(conn: &Connection, c: &FactsColumns) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO ticket_facts (ticket_id, create_time, ticket_type, channel, category,
         directorate, outlet, wilayat, support_line, assignee, status, first_response_seconds,
         resolution_seconds, first_response_met, resolution_met, n_escalations, reopened,
         transferred, rejected, resolved_at_line_1, satisfaction_score, resolve_time,
         settle_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
         ?18, ?19, ?20, ?21, ?22, ?23)
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
    )?
    .execute(params![
        c.ticket_id,
        c.create_time,
        c.ticket_type,
        c.channel,
        c.category,
        c.directorate,
        c.outlet,
        c.wilayat,
        c.support_line,
        c.assignee,
        c.status,
        c.first_response_seconds,
        c.resolution_seconds,
        c.first_response_met,
        c.resolution_met,
        c.n_escalations,
        c.reopened,
        c.transferred,
        c.rejected,
        c.resolved_at_line_1,
        c.satisfaction_score,
        c.resolve_time,
        c.settle_time,
    ])?;
    Ok(())
}

/// Counts the facts of the tickets created in `[from, to)`, and their quality reviews, into
/// `tally`.
fn tally_facts(
    conn: &Connection,
    from: Timestamp,
    to: Timestamp,
    mut tally: KpiTally,
) -> Result<KpiTally, StoreError> {
    // Columns by position, in FACTS_COLUMNS order: a name lookup per column and row costs
    // more than the rest of the read.
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {FACTS_COLUMNS} FROM ticket_facts WHERE create_time >= ?1 AND create_time < ?2"
    ))?;
    let mut rows = statement.query(params![from.as_micros(), to.as_micros()])?;
    while let Some(row) = rows.next()? {
        tally.add_view(&facts_columns_at(row)?.view()?);
    }
    // The quality reviews of those tickets: few, so the reviews are the outer loop (a CROSS
    // JOIN keeps them there) and the facts are looked up by ticket.
    let columns: Vec<String> = FACTS_COLUMNS
        .split(',')
        .map(|c| format!("f.{}", c.trim()))
        .collect();
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {}, q.employee_id, q.weighted_score
         FROM quality_reviews q CROSS JOIN ticket_facts f ON f.ticket_id = q.ticket_id
         WHERE f.create_time >= ?1 AND f.create_time < ?2",
        columns.join(", ")
    ))?;
    let mut rows = statement.query(params![from.as_micros(), to.as_micros()])?;
    while let Some(row) = rows.next()? {
        let columns = facts_columns_at(row)?;
        let reviewed = row.get_ref(23)?.as_str().map_err(rusqlite::Error::from)?;
        tally.add_review(&columns.view()?, reviewed, row.get(24)?);
    }
    Ok(tally)
}

/// The columns of `ticket_facts` in the order [`facts_columns_at`] reads them.
const FACTS_COLUMNS: &str = "ticket_id, create_time, ticket_type, channel, category, directorate,
    outlet, wilayat, support_line, assignee, status, first_response_seconds, resolution_seconds,
    first_response_met, resolution_met, n_escalations, reopened, transferred, rejected,
    resolved_at_line_1, satisfaction_score, resolve_time, settle_time";

/// A row of `SELECT {FACTS_COLUMNS}`, its text borrowed from the row.
fn facts_columns_at<'r>(row: &'r Row<'_>) -> Result<FactsColumns<&'r str>, StoreError> {
    let text = |i: usize| -> Result<&'r str, StoreError> {
        Ok(row.get_ref(i)?.as_str().map_err(rusqlite::Error::from)?)
    };
    let optional_text = |i: usize| -> Result<Option<&'r str>, StoreError> {
        Ok(row
            .get_ref(i)?
            .as_str_or_null()
            .map_err(rusqlite::Error::from)?)
    };
    Ok(FactsColumns {
        ticket_id: text(0)?,
        create_time: row.get(1)?,
        ticket_type: text(2)?,
        channel: text(3)?,
        category: text(4)?,
        directorate: optional_text(5)?,
        outlet: optional_text(6)?,
        wilayat: optional_text(7)?,
        support_line: row.get(8)?,
        assignee: optional_text(9)?,
        status: text(10)?,
        first_response_seconds: row.get(11)?,
        resolution_seconds: row.get(12)?,
        first_response_met: row.get(13)?,
        resolution_met: row.get(14)?,
        n_escalations: row.get(15)?,
        reopened: row.get(16)?,
        transferred: row.get(17)?,
        rejected: row.get(18)?,
        resolved_at_line_1: row.get(19)?,
        satisfaction_score: row.get(20)?,
        resolve_time: row.get(21)?,
        settle_time: row.get(22)?,
    })
}

fn sla_rows(mut rows: rusqlite::Rows<'_>) -> Result<Vec<SlaRow>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(sla_row(
            text(row, "ticket_id")?,
            text(row, "reference")?,
            row.get("directorate")?,
            row.get("next_alert_time")?,
            row.get("next_due_time")?,
            row.get("next_due_kind")?,
        )?);
    }
    Ok(out)
}

fn text<'r>(row: &'r Row<'_>, column: &str) -> Result<&'r str, StoreError> {
    Ok(row
        .get_ref(column)?
        .as_str()
        .map_err(rusqlite::Error::from)?)
}

fn replay<T: DeserializeOwned>(
    conn: &Connection,
    key: &RequestKey,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT fingerprint, response FROM request_records WHERE request_id = ?")?;
    let mut rows = statement.query([&key.request_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let fingerprint = row
        .get_ref("fingerprint")?
        .as_blob()
        .map_err(rusqlite::Error::from)?;
    if fingerprint != key.fingerprint {
        return Err(StoreError::RequestIdReused);
    }
    serde_json::from_str(text(row, "response")?)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("request record: {e}")))
}

fn record<T: Serialize>(
    conn: &Connection,
    key: &RequestKey,
    now: Timestamp,
    out: &T,
) -> Result<(), StoreError> {
    let response = to_json(out)?;
    conn.prepare_cached(
        "INSERT INTO request_records (request_id, fingerprint, response, create_time) VALUES (?, ?, ?, ?)",
    )?
    .execute(params![
        key.request_id,
        key.fingerprint.as_slice(),
        response,
        now.as_micros()
    ])?;
    Ok(())
}

fn seed_default_catalog(conn: &Connection) -> Result<(), StoreError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM wilayats", [], |row| row.get(0))?;
    if n > 0 {
        return Ok(());
    }
    let catalog = CatalogData::default_catalog().map_err(StoreError::Corrupt)?;
    let tx = conn.unchecked_transaction()?;
    for w in &catalog.wilayats {
        put_wilayat(&tx, w)?;
    }
    for d in &catalog.directorates {
        put_directorate(&tx, d)?;
    }
    for o in &catalog.outlets {
        put_outlet(&tx, o)?;
    }
    for c in &catalog.categories {
        put_category(&tx, c)?;
    }
    tx.commit()?;
    tracing::info!(
        n_categories = catalog.categories.len(),
        "loaded the default catalog into an empty database"
    );
    Ok(())
}

fn put_wilayat(conn: &Connection, w: &Wilayat) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO wilayats (code, name_ar, name_en) VALUES (?, ?, ?)
         ON CONFLICT (code) DO UPDATE SET name_ar = excluded.name_ar, name_en = excluded.name_en",
    )?
    .execute(params![w.code.as_str(), w.name_ar, w.name_en])?;
    Ok(())
}

fn put_directorate(conn: &Connection, d: &Directorate) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO directorates (code, name_ar, name_en, active) VALUES (?, ?, ?, ?)
         ON CONFLICT (code) DO UPDATE SET name_ar = excluded.name_ar, name_en = excluded.name_en,
             active = excluded.active",
    )?
    .execute(params![d.code.as_str(), d.name_ar, d.name_en, d.active])?;
    Ok(())
}

fn put_outlet(conn: &Connection, o: &Outlet) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO outlets (code, directorate_code, wilayat_code, name_ar, name_en, active)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (code) DO UPDATE SET directorate_code = excluded.directorate_code,
             wilayat_code = excluded.wilayat_code, name_ar = excluded.name_ar,
             name_en = excluded.name_en, active = excluded.active",
    )?
    .execute(params![
        o.code.as_str(),
        o.directorate_code.as_str(),
        o.wilayat_code.as_str(),
        o.name_ar,
        o.name_en,
        o.active
    ])?;
    Ok(())
}

fn put_category(conn: &Connection, c: &Category) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO categories (code, name_ar, name_en, default_directorate_code,
             default_priority, sla_policy_code, active)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (code) DO UPDATE SET name_ar = excluded.name_ar, name_en = excluded.name_en,
             default_directorate_code = excluded.default_directorate_code,
             default_priority = excluded.default_priority,
             sla_policy_code = excluded.sla_policy_code, active = excluded.active",
    )?
    .execute(params![
        c.code.as_str(),
        c.name_ar,
        c.name_en,
        c.default_directorate_code.as_str(),
        c.default_priority.as_str(),
        c.sla_policy_code.as_str(),
        c.active
    ])?;
    Ok(())
}

/// The category's routing defaults, when it exists and is in use.
fn check_category(
    conn: &Connection,
    field: &str,
    code: &Code,
) -> Result<(Code, Priority), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT default_directorate_code, default_priority, active FROM categories WHERE code = ?",
    )?;
    let mut rows = statement.query([code.as_str()])?;
    let Some(row) = rows.next()? else {
        return Err(unknown(field, "is not a category of the catalog"));
    };
    if !row.get::<_, bool>("active")? {
        return Err(unknown(field, "is a category no longer in use"));
    }
    let directorate = Code::parse(
        "default_directorate_code",
        text(row, "default_directorate_code")?,
    )
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let priority = text(row, "default_priority")?;
    let priority = Priority::from_str_opt(priority)
        .ok_or_else(|| StoreError::Corrupt(format!("category priority {priority}")))?;
    Ok((directorate, priority))
}

/// The `active` flag (or `1`) the one-column `sql` reads for `code`; `None` when absent.
fn check_exists(
    conn: &Connection,
    sql: &'static str,
    code: &Code,
) -> Result<Option<bool>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query([code.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(row.get(0)?)),
        None => Ok(None),
    }
}

fn check_wilayat(conn: &Connection, field: &str, code: &Code) -> Result<(), StoreError> {
    match check_exists(conn, "SELECT 1 FROM wilayats WHERE code = ?", code)? {
        Some(_) => Ok(()),
        None => Err(unknown(field, "is not a wilayat of Muscat Governorate")),
    }
}

fn check_directorate(conn: &Connection, field: &str, code: &Code) -> Result<(), StoreError> {
    match check_exists(conn, "SELECT active FROM directorates WHERE code = ?", code)? {
        Some(true) => Ok(()),
        Some(false) => Err(unknown(field, "is a directorate no longer in use")),
        None => Err(unknown(field, "is not a directorate of the catalog")),
    }
}

fn check_assignment(conn: &Connection, assignment: &Assignment) -> Result<(), StoreError> {
    if let Some(directorate) = &assignment.directorate {
        check_directorate(conn, "directorate", directorate)?;
    }
    if let Some(outlet) = &assignment.outlet {
        let mut statement =
            conn.prepare_cached("SELECT directorate_code, active FROM outlets WHERE code = ?")?;
        let mut rows = statement.query([outlet.as_str()])?;
        let Some(row) = rows.next()? else {
            return Err(unknown("outlet", "is not an outlet of the catalog"));
        };
        if !row.get::<_, bool>("active")? {
            return Err(unknown("outlet", "is an outlet no longer in use"));
        }
        let owner = text(row, "directorate_code")?;
        if assignment.directorate.as_ref().map(Code::as_str) != Some(owner) {
            return Err(unknown("outlet", "belongs to another directorate"));
        }
    }
    Ok(())
}

/// A ticket's projected columns, in this order: ticket_type, channel, category, priority,
/// status, directorate, outlet, wilayat, assignee, support_line. Insert and update write the
/// same projection from one place, so the columns can never disagree with the body (the
/// rusqlite counterpart of `common::bind_projection!`).
fn projection(ticket: &Ticket) -> [Value; 10] {
    let text = |value: Option<&str>| value.map_or(Value::Null, |v| Value::Text(v.to_owned()));
    [
        Value::Text(ticket.ticket_type.as_str().to_owned()),
        Value::Text(ticket.channel.as_str().to_owned()),
        Value::Text(ticket.category.as_str().to_owned()),
        Value::Text(ticket.priority.as_str().to_owned()),
        Value::Text(ticket.status.as_str().to_owned()),
        text(ticket.assignment.directorate.as_ref().map(Code::as_str)),
        text(ticket.assignment.outlet.as_ref().map(Code::as_str)),
        text(ticket.location.wilayat.as_ref().map(Code::as_str)),
        text(ticket.assignment.assignee.as_ref().map(|a| a.as_str())),
        ticket
            .assignment
            .support_line
            .map_or(Value::Null, |l| Value::Integer(i64::from(l.number()))),
    ]
}

fn insert_ticket(
    conn: &Connection,
    ticket: &Ticket,
    body: &str,
    terms: &SearchTerms,
) -> Result<i64, StoreError> {
    let mut values = vec![
        Value::Text(ticket.id.to_string()),
        Value::Text(ticket.reference.to_string()),
    ];
    values.extend(projection(ticket));
    values.extend([
        Value::Integer(ticket.create_time.as_micros()),
        Value::Integer(ticket.update_time.as_micros()),
        Value::Integer(ticket.version),
        Value::Text(body.to_owned()),
        ticket.created_by.clone().map_or(Value::Null, Value::Text),
    ]);
    let seq: i64 = conn
        .prepare_cached(
            "INSERT INTO tickets (id, reference, ticket_type, channel, category, priority, status,
                 directorate, outlet, wilayat, assignee, support_line, create_time, update_time,
                 version, body, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING seq",
        )?
        .query_row(params_from_iter(values), |row| row.get(0))?;
    queue_search_text(conn, seq, terms.document(&ticket.reference), false)?;
    Ok(seq)
}

/// Queues a ticket's search text for the batch's [`flush_search_index`]; `replaces` when the
/// ticket may already be in the index (an edit). A ticket created and edited in the same
/// batch keeps `replaces` false: the index does not hold it yet.
fn queue_search_text(
    conn: &Connection,
    seq: i64,
    document: String,
    replaces: bool,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO temp.search_pending (rowid, content, replaces) VALUES (?, ?, ?)
         ON CONFLICT (rowid) DO UPDATE SET content = excluded.content",
    )?
    .execute(params![seq, document, replaces])?;
    Ok(())
}

fn save_ticket(
    conn: &Connection,
    seq: i64,
    before: &Ticket,
    ticket: &Ticket,
    body: &str,
) -> Result<(), StoreError> {
    let mut values = Vec::from(projection(ticket));
    values.extend([
        Value::Integer(ticket.update_time.as_micros()),
        Value::Integer(ticket.version),
        Value::Text(body.to_owned()),
        Value::Integer(seq),
    ]);
    conn.prepare_cached(
        "UPDATE tickets SET ticket_type = ?, channel = ?, category = ?, priority = ?, status = ?,
             directorate = ?, outlet = ?, wilayat = ?, assignee = ?, support_line = ?,
             update_time = ?, version = ?, body = ?
         WHERE seq = ?",
    )?
    .execute(params_from_iter(values))?;
    if before.subject != ticket.subject || before.description != ticket.description {
        queue_search_text(conn, seq, search_document(ticket), true)?;
    }
    Ok(())
}

/// Appends the event of a change, with the ticket as it stands after it (`ticket_body`).
fn append_event(
    conn: &Connection,
    ticket: &Ticket,
    ticket_body: &str,
    author: &Author,
    now: Timestamp,
    record: EventRecord,
) -> Result<TicketEvent, StoreError> {
    let ticket_id = ticket.id.to_string();
    let cursor: i64 = conn
        .prepare_cached(
            "INSERT INTO ticket_events (ticket_id, kind, actor, occur_time, version, body, ticket_body)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )?
        .query_row(
            params![
                ticket_id,
                record.kind.as_str(),
                author.actor,
                now.as_micros(),
                ticket.version,
                to_json(&record)?,
                ticket_body
            ],
            |row| row.get(0),
        )?;
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
        conn.prepare_cached(
            "INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key, ticket_body,
                 event_body, state, next_attempt_at, create_time, update_time)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
        )?
        .execute(params![
            ticket_id,
            cursor,
            kind.as_str(),
            format!("balagh-{}-{cursor}", ticket.id),
            ticket_body,
            to_json(&event)?,
            now.as_micros(),
            now.as_micros(),
            now.as_micros()
        ])?;
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

/// Whether a ticket with this id exists.
fn ticket_exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM tickets WHERE id = ?")?
        .exists([id])?)
}

fn load_ticket(conn: &Connection, id: TicketId) -> Result<(i64, Ticket), StoreError> {
    let mut statement = conn.prepare_cached("SELECT seq, body FROM tickets WHERE id = ?")?;
    let mut rows = statement.query([id.to_string()])?;
    let row = rows.next()?.ok_or(StoreError::TicketNotFound)?;
    Ok((row.get("seq")?, ticket_from_row(row)?))
}

fn create_ticket_tx(
    conn: &Connection,
    author: Author,
    new: NewTicket,
    terms: &SearchTerms,
    now: Timestamp,
) -> Result<Ticket, StoreError> {
    let (directorate, default_priority) = check_category(conn, "category", &new.category)?;
    if let Some(wilayat) = &new.location.wilayat {
        check_wilayat(conn, "location.wilayat", wilayat)?;
    }
    let year = now.muscat_year();
    let number: i64 = conn
        .prepare_cached(
            "INSERT INTO reference_counters (year, last_value) VALUES (?, 1)
             ON CONFLICT (year) DO UPDATE SET last_value = last_value + 1
             RETURNING last_value",
        )?
        .query_row([year], |row| row.get(0))?;
    let ticket = new_ticket(
        new,
        reference(year, number)?,
        directorate,
        default_priority,
        now,
        &author.actor,
    );
    let body = to_json(&ticket)?;
    insert_ticket(conn, &ticket, &body, terms)?;
    append_event(conn, &ticket, &body, &author, now, created_event(&ticket))?;
    Ok(ticket)
}

fn update_ticket_tx(
    conn: &Connection,
    author: Author,
    id: TicketId,
    expected_version: Option<i64>,
    patch: TicketPatch,
    now: Timestamp,
) -> Result<Ticket, StoreError> {
    let (seq, current) = load_ticket(conn, id)?;
    super::check_reach(author.reach.as_ref(), &current)?;
    check_version(&current, expected_version)?;
    if let Some(category) = &patch.category {
        check_category(conn, "ticket.category", category)?;
    }
    if let Some(wilayat) = patch.location.as_ref().and_then(|l| l.wilayat.as_ref()) {
        check_wilayat(conn, "ticket.location.wilayat", wilayat)?;
    }
    let (next, record) = apply_patch(&current, patch, now)?;
    if next.version == current.version {
        return Ok(current);
    }
    let body = to_json(&next)?;
    save_ticket(conn, seq, &current, &next, &body)?;
    append_event(conn, &next, &body, &author, now, record)?;
    Ok(next)
}

fn apply_action_tx(
    conn: &Connection,
    author: Author,
    id: TicketId,
    expected_version: Option<i64>,
    action: Action,
    now: Timestamp,
) -> Result<(Ticket, TicketEvent), StoreError> {
    let (seq, current) = load_ticket(conn, id)?;
    super::check_reach(author.reach.as_ref(), &current)?;
    check_version(&current, expected_version)?;
    match &action {
        Action::Assign { assignment, .. } => check_assignment(conn, assignment)?,
        Action::Merge { duplicate_of } if *duplicate_of != id => {
            let original = match load_ticket(conn, *duplicate_of) {
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
    save_ticket(conn, seq, &current, &next, &body)?;
    let event = append_event(conn, &next, &body, &author, now, record)?;
    Ok((next, event))
}

/// The writer's connection, lent to the shared inbound rules ([`inbound::apply_changes`]).
/// Those rules are async because the PostgreSQL store awaits its statements; every statement
/// here is synchronous, so their future never suspends: `block_on` polls it to completion at
/// once, on the writer thread that owns the connection.
struct WriterConnection<'c>(&'c Connection);

// SAFETY: a `WriterConnection` only lives inside the future that `apply_inbound` polls to
// completion with `block_on` on the writer thread; it never reaches another thread, so the
// connection (which is `Send` but not `Sync`) is only ever used by the thread that owns it.
unsafe impl Send for WriterConnection<'_> {}

/// The inbound rules' statements on the writer's connection.
struct SqliteInbound<'c> {
    conn: WriterConnection<'c>,
    author: Author,
    now: Timestamp,
}

#[async_trait]
impl InboundTx for SqliteInbound<'_> {
    async fn execute(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.conn.0.execute_batch(sql)?;
        Ok(())
    }

    async fn seen(&mut self, change_id: &str) -> Result<bool, StoreError> {
        let mut statement = self
            .conn
            .0
            .prepare_cached("SELECT 1 FROM platform_inbox WHERE change_id = ?")?;
        Ok(statement.exists([change_id])?)
    }

    async fn case_link(&mut self, case_id: &str) -> Result<Option<(TicketId, i64)>, StoreError> {
        let mut statement = self.conn.0.prepare_cached(
            "SELECT ticket_id, pulled_version FROM platform_cases WHERE case_id = ?",
        )?;
        let mut rows = statement.query([case_id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let id = TicketId::parse("ticket_id", text(row, "ticket_id")?)
            .map_err(|v| StoreError::Corrupt(format!("platform case link: {v}")))?;
        Ok(Some((id, row.get("pulled_version")?)))
    }

    async fn set_pulled_version(&mut self, case_id: &str, version: i64) -> Result<(), StoreError> {
        self.conn
            .0
            .prepare_cached("UPDATE platform_cases SET pulled_version = ? WHERE case_id = ?")?
            .execute(params![version, case_id])?;
        Ok(())
    }

    async fn take_in(
        &mut self,
        case_id: &str,
        version: i64,
        new: NewTicket,
    ) -> Result<Ticket, StoreError> {
        let terms = SearchTerms::of(&new.subject, &new.description);
        let ticket = create_ticket_tx(self.conn.0, self.author.clone(), new, &terms, self.now)?;
        self.conn
            .0
            .prepare_cached(
                "INSERT INTO platform_cases (ticket_id, case_id, create_time, pulled_version)
                 VALUES (?, ?, ?, ?)",
            )?
            .execute(params![
                ticket.id.to_string(),
                case_id,
                self.now.as_micros(),
                version
            ])?;
        Ok(ticket)
    }

    async fn act(&mut self, ticket_id: TicketId, action: Action) -> Result<Ticket, StoreError> {
        apply_action_tx(
            self.conn.0,
            self.author.clone(),
            ticket_id,
            None,
            action,
            self.now,
        )
        .map(|(ticket, _)| ticket)
    }

    async fn record_survey_request(
        &mut self,
        ticket: &Ticket,
        channel: SurveyChannel,
        outcome: SurveyOutcome,
    ) -> Result<(), StoreError> {
        insert_survey_request(
            self.conn.0,
            ticket,
            channel,
            outcome,
            &self.author.actor,
            self.now,
        )
        .map(drop)
    }

    async fn record(
        &mut self,
        change: &InboundChange,
        outcome: &InboundOutcome,
    ) -> Result<(), StoreError> {
        let (ticket_id, detail) = inbound_record_fields(outcome);
        self.conn
            .0
            .prepare_cached(
                "INSERT INTO platform_inbox
                     (change_id, case_id, case_version, outcome, detail, ticket_id, apply_time)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                change.change_id,
                change.case_id,
                change.case_version,
                outcome.as_str(),
                detail,
                ticket_id.map(|id| id.to_string()),
                self.now.as_micros()
            ])?;
        Ok(())
    }
}

/// Applies a page of the platform's feed and moves the pull cursor with it (see
/// [`Store::apply_platform_changes`]).
fn apply_inbound_tx(
    conn: &Connection,
    author: Author,
    changes: &[InboundChange],
    next_cursor: Option<&str>,
    now: Timestamp,
) -> Result<Vec<InboundOutcome>, StoreError> {
    let mut tx = SqliteInbound {
        conn: WriterConnection(conn),
        author,
        now,
    };
    let outcomes = futures::executor::block_on(inbound::apply_changes(&mut tx, changes))?;
    if let Some(next_cursor) = next_cursor {
        conn.prepare_cached(
            "INSERT INTO platform_pull (id, cursor, n_changes, update_time)
             VALUES (1, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor,
                 n_changes = platform_pull.n_changes + excluded.n_changes,
                 update_time = excluded.update_time",
        )?
        .execute(params![
            next_cursor,
            i64::try_from(changes.len()).unwrap_or(i64::MAX),
            now.as_micros()
        ])?;
    }
    Ok(outcomes)
}

/// Queues a repair push of the ticket's current state (see [`Store::enqueue_repair_push`]).
fn enqueue_repair_push_tx(
    conn: &Connection,
    ticket_id: TicketId,
    kind: PushKind,
    now: Timestamp,
) -> Result<Option<i64>, StoreError> {
    let ticket = ticket_id.to_string();
    let blocked = conn
        .prepare_cached(
            "SELECT 1 FROM outbox WHERE ticket_id = ? AND state IN ('pending', 'dead') LIMIT 1",
        )?
        .exists([&ticket])?;
    if blocked {
        return Ok(None);
    }
    let event = {
        let mut statement = conn.prepare_cached(
            "SELECT seq, ticket_id, actor, occur_time, version, body FROM ticket_events
             WHERE ticket_id = ? ORDER BY seq DESC LIMIT 1",
        )?;
        let mut rows = statement.query([&ticket])?;
        let row = rows.next()?.ok_or(StoreError::TicketNotFound)?;
        event_from_row(row)?
    };
    let ticket_body: String = conn
        .prepare_cached("SELECT body FROM tickets WHERE id = ?")?
        .query_row([&ticket], |row| row.get(0))?;
    let seq = conn
        .prepare_cached(
            "INSERT INTO outbox (ticket_id, event_cursor, kind, idempotency_key, ticket_body,
                 event_body, state, next_attempt_at, create_time, update_time)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) RETURNING seq",
        )?
        .query_row(
            params![
                ticket,
                event.cursor,
                kind.as_str(),
                // Not the key of the original push: the platform would answer from its
                // idempotency store and change nothing.
                format!(
                    "balagh-{ticket_id}-{}-repair-{}",
                    event.cursor,
                    now.as_micros()
                ),
                ticket_body,
                to_json(&event)?,
                now.as_micros(),
                now.as_micros(),
                now.as_micros()
            ],
            |row| row.get(0),
        )?;
    Ok(Some(seq))
}

/// The columns [`outbox_from_row`] reads.
const OUTBOX_COLUMNS: &str = "seq, ticket_id, kind, idempotency_key, ticket_body, event_body, \
     state, n_attempts, next_attempt_at, last_error, create_time";

fn outbox_from_row(row: &Row<'_>) -> Result<OutboxEntry, StoreError> {
    let kind = text(row, "kind")?;
    let state = text(row, "state")?;
    let n_attempts: i64 = row.get("n_attempts")?;
    Ok(OutboxEntry {
        id: row.get("seq")?,
        ticket_id: TicketId::parse("ticket_id", text(row, "ticket_id")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        kind: PushKind::from_str_opt(kind)
            .ok_or_else(|| StoreError::Corrupt(format!("push kind {kind}")))?,
        idempotency_key: row.get("idempotency_key")?,
        ticket: from_json(text(row, "ticket_body")?, "outbox ticket")?,
        event: from_json(text(row, "event_body")?, "outbox event")?,
        state: OutboxState::from_str_opt(state)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox state {state}")))?,
        n_attempts: u32::try_from(n_attempts).unwrap_or(u32::MAX),
        next_attempt_at: Timestamp::from_micros(row.get("next_attempt_at")?),
        last_error: row.get("last_error")?,
        create_time: Timestamp::from_micros(row.get("create_time")?),
    })
}

fn record_quality_review_tx(
    conn: &Connection,
    reviewer: String,
    review: NewQualityReview,
    now: Timestamp,
) -> Result<QualityReview, StoreError> {
    let (_, ticket) = load_ticket(conn, review.ticket_id)?;
    let history = collect(
        conn,
        "SELECT body FROM ticket_events WHERE ticket_id = ? ORDER BY seq",
        [ticket.id.to_string()],
        |row| from_json::<EventRecord>(text(row, "body")?, "event"),
    )?;
    if !quality::handled_by(&ticket, &history, &review.employee_id) {
        return Err(StoreError::UnknownReference(not_a_handler()));
    }
    let exists = conn
        .prepare_cached("SELECT 1 FROM quality_reviews WHERE ticket_id = ? AND employee_id = ?")?
        .exists(params![ticket.id.to_string(), review.employee_id.as_str()])?;
    if exists {
        return Err(StoreError::QualityReviewExists);
    }
    let review = QualityReview::from_new(review, reviewer, now);
    conn.prepare_cached(
        "INSERT INTO quality_reviews
             (ticket_id, employee_id, reviewer, review_time, weighted_score, body)
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        review.ticket_id.to_string(),
        review.employee_id.as_str(),
        review.reviewer,
        now.as_micros(),
        review.weighted_score,
        to_json(&review)?
    ])?;
    Ok(review)
}

/// Adds an entry to the survey ledger: the ticket's beneficiary was asked at `now`.
fn insert_survey_request(
    conn: &Connection,
    ticket: &Ticket,
    channel: SurveyChannel,
    outcome: SurveyOutcome,
    actor: &str,
    now: Timestamp,
) -> Result<SurveyRequest, StoreError> {
    let beneficiary = BeneficiaryKey::of(&ticket.reporter);
    conn.prepare_cached(
        "INSERT INTO survey_requests
             (ticket_id, beneficiary_hash, ask_time, channel, outcome, actor)
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        ticket.id.to_string(),
        beneficiary.as_ref().map(|k| k.as_bytes().as_slice()),
        now.as_micros(),
        channel.as_str(),
        outcome.as_str(),
        actor
    ])?;
    Ok(SurveyRequest {
        ticket_id: ticket.id,
        ask_time: now,
        channel,
        outcome,
        actor: actor.to_owned(),
    })
}

/// The latest time the ticket's beneficiary was asked about another ticket after `since`.
fn last_ask_elsewhere(
    conn: &Connection,
    ticket: &Ticket,
    since: Timestamp,
) -> Result<LastAsk, StoreError> {
    let Some(key) = BeneficiaryKey::of(&ticket.reporter) else {
        return Ok(None);
    };
    let mut statement = conn.prepare_cached(
        "SELECT ask_time, channel FROM survey_requests
         WHERE beneficiary_hash = ? AND ask_time > ? AND ticket_id <> ?
         ORDER BY ask_time DESC LIMIT 1",
    )?;
    let mut rows = statement.query(params![
        key.as_bytes().as_slice(),
        since.as_micros(),
        ticket.id.to_string()
    ])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let channel = text(row, "channel")?;
    let channel = SurveyChannel::from_str_opt(channel)
        .ok_or_else(|| StoreError::Corrupt(format!("survey channel {channel}")))?;
    Ok(Some((
        Timestamp::from_micros(row.get("ask_time")?),
        channel,
    )))
}

fn rate_on_call_back_tx(
    conn: &Connection,
    author: Author,
    id: TicketId,
    expected_version: Option<i64>,
    satisfaction: Satisfaction,
    policy: SurveyPolicy,
    now: Timestamp,
) -> Result<(Ticket, TicketEvent), StoreError> {
    let (_, current) = load_ticket(conn, id)?;
    super::check_reach(author.reach.as_ref(), &current)?;
    check_version(&current, expected_version)?;
    let last = last_ask_elsewhere(conn, &current, policy.quiet_since(now))?;
    satisfaction::check_call_back(&current, true, last, &policy)?;
    let actor = author.actor.clone();
    let (ticket, event) = apply_action_tx(
        conn,
        author,
        id,
        expected_version,
        Action::Rate { satisfaction },
        now,
    )?;
    insert_survey_request(
        conn,
        &ticket,
        SurveyChannel::CallBack,
        SurveyOutcome::Rated,
        &actor,
        now,
    )?;
    Ok((ticket, event))
}

fn record_unrated_call_back_tx(
    conn: &Connection,
    actor: &str,
    id: TicketId,
    outcome: UnratedCallBack,
    policy: SurveyPolicy,
    now: Timestamp,
) -> Result<SurveyRequest, StoreError> {
    let (_, ticket) = load_ticket(conn, id)?;
    let last = last_ask_elsewhere(conn, &ticket, policy.quiet_since(now))?;
    satisfaction::check_call_back(&ticket, false, last, &policy)?;
    insert_survey_request(
        conn,
        &ticket,
        SurveyChannel::CallBack,
        outcome.into(),
        actor,
        now,
    )
}

/// The columns [`ledger_entry_from_row`] reads.
const LEDGER_COLUMNS: &str = "seq, ticket_id, beneficiary_hash, ask_time, channel, outcome, actor";

fn ledger_entry_from_row(row: &Row<'_>) -> Result<LedgerEntry, StoreError> {
    let channel = text(row, "channel")?;
    let outcome = text(row, "outcome")?;
    let beneficiary: Option<Vec<u8>> = row.get("beneficiary_hash")?;
    Ok(LedgerEntry {
        beneficiary: beneficiary
            .map(|bytes| {
                BeneficiaryKey::from_bytes(&bytes)
                    .ok_or_else(|| StoreError::Corrupt("a beneficiary hash is not 32 bytes".into()))
            })
            .transpose()?,
        request: SurveyRequest {
            ticket_id: TicketId::parse("ticket_id", text(row, "ticket_id")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ask_time: Timestamp::from_micros(row.get("ask_time")?),
            channel: SurveyChannel::from_str_opt(channel)
                .ok_or_else(|| StoreError::Corrupt(format!("survey channel {channel}")))?,
            outcome: SurveyOutcome::from_str_opt(outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("survey outcome {outcome}")))?,
            actor: row.get("actor")?,
        },
    })
}

/// The call-back list (see [`Store::call_back_candidates`]).
fn call_back_candidates_read(
    conn: &Connection,
    query: &CallBackQuery,
) -> Result<Vec<CallBackCandidate>, StoreError> {
    // A ticket settled at or after `settled_from` was last updated at or after it: the update
    // time narrows the scan, the settle time decides. Without statistics (the store runs no
    // ANALYZE) SQLite would take the status index and walk every settled ticket there ever
    // was; the window's tickets are few beside them.
    let tickets: Vec<Ticket> = collect(
        conn,
        "SELECT body FROM tickets INDEXED BY tickets_update_time
         WHERE update_time >= ?1 AND status IN ('resolved', 'closed')
           AND (?2 IS NULL OR directorate = ?2)
           AND json_extract(body, '$.satisfaction') IS NULL
           AND json_extract(body, '$.reporter.phone') IS NOT NULL",
        params![
            query.settled_from.as_micros(),
            query.directorate.as_ref().map(Code::as_str)
        ],
        ticket_from_row,
    )?
    .into_iter()
    .filter(satisfaction::may_be_called_about)
    .collect();
    let quiet_since = query.policy.quiet_since(query.now).as_micros();
    let mut ledger = std::collections::BTreeMap::new();
    let mut keys = std::collections::HashSet::new();
    let mut by_key = conn.prepare_cached(&format!(
        "SELECT {LEDGER_COLUMNS} FROM survey_requests
         WHERE beneficiary_hash = ? AND ask_time > ?"
    ))?;
    let mut by_ticket = conn.prepare_cached(&format!(
        "SELECT {LEDGER_COLUMNS} FROM survey_requests WHERE ticket_id = ?"
    ))?;
    for ticket in &tickets {
        if let Some(key) = BeneficiaryKey::of(&ticket.reporter)
            && keys.insert(key)
        {
            let mut rows = by_key.query(params![key.as_bytes().as_slice(), quiet_since])?;
            while let Some(row) = rows.next()? {
                ledger.insert(row.get::<_, i64>("seq")?, ledger_entry_from_row(row)?);
            }
        }
        let mut rows = by_ticket.query([ticket.id.to_string()])?;
        while let Some(row) = rows.next()? {
            ledger.insert(row.get::<_, i64>("seq")?, ledger_entry_from_row(row)?);
        }
    }
    let ledger: Vec<LedgerEntry> = ledger.into_values().collect();
    Ok(satisfaction::choose_call_backs(tickets, &ledger, query))
}

fn ticket_from_row(row: &Row<'_>) -> Result<Ticket, StoreError> {
    from_json(text(row, "body")?, "ticket")
}

fn event_from_row(row: &Row<'_>) -> Result<TicketEvent, StoreError> {
    Ok(TicketEvent {
        cursor: row.get("seq")?,
        ticket_id: TicketId::parse("ticket_id", text(row, "ticket_id")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        actor: row.get("actor")?,
        occur_time: Timestamp::from_micros(row.get("occur_time")?),
        version: row.get("version")?,
        record: from_json(text(row, "body")?, "event")?,
    })
}

/// Every row `statement` returns for `values`, decoded by `decode`.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(values)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// SQL text and the values of its `?` placeholders, built together so they cannot drift
/// apart. Only fixed text is pushed; every value from input is bound.
struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.text.push('?');
        self.values.push(value.into());
        self
    }

    /// ` AND column IN (?, ...)`, nothing when `values` is empty.
    fn push_in<I, T>(&mut self, column: &'static str, values: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<Value>,
    {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() {
            return;
        }
        self.push(" AND ").push(column).push(" IN (");
        for (n, value) in values.enumerate() {
            if n > 0 {
                self.push(", ");
            }
            self.push_bind(value);
        }
        self.push(")");
    }

    fn push_range(&mut self, column: &'static str, from: Option<Timestamp>, to: Option<Timestamp>) {
        if let Some(from) = from {
            self.push(" AND ")
                .push(column)
                .push(" >= ")
                .push_bind(from.as_micros());
        }
        if let Some(to) = to {
            self.push(" AND ")
                .push(column)
                .push(" < ")
                .push_bind(to.as_micros());
        }
    }

    /// The conditions of a ticket filter, on the projected columns of `tickets`.
    fn push_filter(&mut self, filter: &TicketFilter) {
        let owned = |s: &str| s.to_owned();
        self.push_in("status", filter.statuses.iter().map(|s| owned(s.as_str())));
        self.push_in(
            "ticket_type",
            filter.types.iter().map(|t| owned(t.as_str())),
        );
        self.push_in(
            "category",
            filter.categories.iter().map(|c| owned(c.as_str())),
        );
        self.push_in(
            "directorate",
            filter.directorates.iter().map(|c| owned(c.as_str())),
        );
        self.push_in("outlet", filter.outlets.iter().map(|c| owned(c.as_str())));
        self.push_in("wilayat", filter.wilayats.iter().map(|c| owned(c.as_str())));
        self.push_in(
            "assignee",
            filter.assignees.iter().map(|a| owned(a.as_str())),
        );
        self.push_in(
            "support_line",
            filter.support_lines.iter().map(|l| i64::from(l.number())),
        );
        self.push_in("created_by", filter.creators.iter().cloned());
    }
}

fn read_catalog(conn: &Connection) -> Result<CatalogData, StoreError> {
    let code = |row: &Row<'_>, column: &str| {
        Code::parse(column, text(row, column)?).map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let wilayats = collect(
        conn,
        "SELECT code, name_ar, name_en FROM wilayats ORDER BY code",
        [],
        |r| {
            Ok(Wilayat {
                code: code(r, "code")?,
                name_ar: r.get("name_ar")?,
                name_en: r.get("name_en")?,
            })
        },
    )?;
    let directorates = collect(
        conn,
        "SELECT code, name_ar, name_en, active FROM directorates ORDER BY code",
        [],
        |r| {
            Ok(Directorate {
                code: code(r, "code")?,
                name_ar: r.get("name_ar")?,
                name_en: r.get("name_en")?,
                active: r.get("active")?,
            })
        },
    )?;
    let outlets = collect(
        conn,
        "SELECT code, directorate_code, wilayat_code, name_ar, name_en, active
         FROM outlets ORDER BY code",
        [],
        |r| {
            Ok(Outlet {
                code: code(r, "code")?,
                directorate_code: code(r, "directorate_code")?,
                wilayat_code: code(r, "wilayat_code")?,
                name_ar: r.get("name_ar")?,
                name_en: r.get("name_en")?,
                active: r.get("active")?,
            })
        },
    )?;
    let categories = collect(
        conn,
        "SELECT code, name_ar, name_en, default_directorate_code, default_priority,
             sla_policy_code, active
         FROM categories ORDER BY code",
        [],
        |r| {
            let priority = text(r, "default_priority")?;
            Ok(Category {
                code: code(r, "code")?,
                name_ar: r.get("name_ar")?,
                name_en: r.get("name_en")?,
                default_directorate_code: code(r, "default_directorate_code")?,
                default_priority: Priority::from_str_opt(priority)
                    .ok_or_else(|| StoreError::Corrupt(format!("priority {priority}")))?,
                sla_policy_code: code(r, "sla_policy_code")?,
                active: r.get("active")?,
            })
        },
    )?;
    Ok(CatalogData {
        wilayats,
        directorates,
        outlets,
        categories,
    })
}

/// The ListTickets statement for `query`: newest first, keyset-paginated by `seq`.
fn list_statement(query: &TicketQuery) -> Sql {
    let mut sql = Sql::new("SELECT seq, body FROM tickets WHERE 1 = 1");
    sql.push_filter(&query.filter);
    sql.push_in(
        "channel",
        query.channels.iter().map(|c| c.as_str().to_owned()),
    );
    sql.push_in(
        "priority",
        query.priorities.iter().map(|p| p.as_str().to_owned()),
    );
    sql.push_range("create_time", query.create_time_from, query.create_time_to);
    sql.push_range("update_time", query.update_time_from, query.update_time_to);
    if !query.words.is_empty() {
        // Each normalised word as a quoted FTS5 prefix term; the words hold no quotes.
        let expression = query
            .words
            .iter()
            .map(|w| format!("\"{}\"*", w.replace('"', "")))
            .collect::<Vec<_>>()
            .join(" ");
        sql.push(" AND seq IN (SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH ")
            .push_bind(expression)
            .push(")");
    }
    if let Some(reference) = query.reference {
        sql.push(" AND reference = ")
            .push_bind(reference.to_string());
    }
    if let Some(before) = query.before_position {
        sql.push(" AND seq < ").push_bind(before);
    }
    sql.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    sql
}

fn claim_outbox_tx(
    conn: &Connection,
    owner: &str,
    lease: i64,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let sql = format!(
        "UPDATE outbox SET lease_owner = ?1, lease_until = ?2, update_time = ?3
         WHERE seq IN (
             SELECT o.seq FROM outbox o
             WHERE o.state = 'pending' AND o.next_attempt_at <= ?4
                 AND (o.lease_until IS NULL OR o.lease_until <= ?4)
                 AND NOT EXISTS (
                     SELECT 1 FROM outbox p
                     WHERE p.ticket_id = o.ticket_id AND p.seq < o.seq
                         AND p.state IN ('pending', 'dead'))
             ORDER BY o.seq LIMIT ?5)
         RETURNING {OUTBOX_COLUMNS}"
    );
    collect(
        conn,
        &sql,
        params![
            owner,
            now.as_micros().saturating_add(lease),
            now.as_micros(),
            now.as_micros(),
            i64::from(limit)
        ],
        outbox_from_row,
    )
}

fn record_push_outcome_tx(
    conn: &Connection,
    id: i64,
    owner: &str,
    outcome: PushOutcome,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let now = now.as_micros();
    let done = match outcome {
        PushOutcome::Delivered => conn
            .prepare_cached(
                "UPDATE outbox SET state = 'delivered', n_attempts = n_attempts + 1,
                     lease_owner = NULL, lease_until = NULL, update_time = ?1
                 WHERE seq = ?2 AND state = 'pending' AND lease_owner = ?3",
            )?
            .execute(params![now, id, owner])?,
        PushOutcome::RetryAt { at, error } => conn
            .prepare_cached(
                "UPDATE outbox SET n_attempts = n_attempts + 1, next_attempt_at = ?4,
                     last_error = ?5, lease_owner = NULL, lease_until = NULL, update_time = ?1
                 WHERE seq = ?2 AND state = 'pending' AND lease_owner = ?3",
            )?
            .execute(params![now, id, owner, at.as_micros(), error])?,
        PushOutcome::Dead { error } => conn
            .prepare_cached(
                "UPDATE outbox SET state = 'dead', n_attempts = n_attempts + 1,
                     last_error = ?4, lease_owner = NULL, lease_until = NULL, update_time = ?1
                 WHERE seq = ?2 AND state = 'pending' AND lease_owner = ?3",
            )?
            .execute(params![now, id, owner, error])?,
    };
    Ok(done == 1)
}

fn prune_feed_tx(conn: &Connection, before: Timestamp) -> Result<u64, StoreError> {
    let through: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM ticket_events WHERE occur_time < ?")?
        .query_row([before.as_micros()], |row| row.get(0))?;
    let Some(through) = through else {
        return Ok(0);
    };
    let done = conn
        .prepare_cached(
            "UPDATE ticket_events SET ticket_body = NULL
             WHERE seq <= ? AND ticket_body IS NOT NULL",
        )?
        .execute([through])?;
    conn.prepare_cached(
        "UPDATE feed_state SET pruned_through = MAX(pruned_through, ?) WHERE id = 1",
    )?
    .execute([through])?;
    Ok(u64::try_from(done).unwrap_or(u64::MAX))
}

fn link_platform_case_tx(
    conn: &Connection,
    ticket_id: TicketId,
    case_id: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let ticket = ticket_id.to_string();
    conn.prepare_cached(
        "INSERT INTO platform_cases (ticket_id, case_id, create_time)
         VALUES (?, ?, ?) ON CONFLICT (ticket_id) DO NOTHING",
    )?
    .execute(params![ticket, case_id, now.as_micros()])?;
    let linked: String = conn
        .prepare_cached("SELECT case_id FROM platform_cases WHERE ticket_id = ?")?
        .query_row([&ticket], |row| row.get(0))?;
    if linked == case_id {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "ticket {ticket_id} is linked to platform case {linked}, not {case_id}"
        )))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_ticket(&self, ctx: WriteContext, new: NewTicket) -> Result<Ticket, StoreError> {
        let author = self.author(ctx.actor, ctx.reach);
        // Prepared here, on the caller's worker: the writer is the store's one bottleneck.
        let terms = SearchTerms::of(&new.subject, &new.description);
        self.submit(ctx.request, move |conn, now| {
            create_ticket_tx(conn, author, new, &terms, now)
        })
        .await
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
            update_ticket_tx(conn, author, id, expected_version, patch, now)
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
            apply_action_tx(conn, author, id, expected_version, action, now)
        })
        .await
    }

    async fn get_ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached("SELECT body FROM tickets WHERE id = ?")?;
            let mut rows = statement.query([id.to_string()])?;
            rows.next()?.map(ticket_from_row).transpose()
        })
        .await
    }

    async fn get_ticket_with_events(
        &self,
        lookup: TicketLookup,
        max_events: u32,
    ) -> Result<Option<(Ticket, Vec<TicketEvent>)>, StoreError> {
        self.read(move |conn| {
            // One read transaction: both statements see the same commit.
            let tx = conn.unchecked_transaction()?;
            let ticket = {
                let (sql, key) = match lookup {
                    TicketLookup::Id(id) => {
                        ("SELECT body FROM tickets WHERE id = ?", id.to_string())
                    }
                    TicketLookup::Reference(reference) => (
                        "SELECT body FROM tickets WHERE reference = ?",
                        reference.to_string(),
                    ),
                };
                let mut statement = tx.prepare_cached(sql)?;
                let mut rows = statement.query([key])?;
                rows.next()?.map(ticket_from_row).transpose()?
            };
            let Some(ticket) = ticket else {
                return Ok(None);
            };
            let events = collect(
                &tx,
                "SELECT seq, ticket_id, actor, occur_time, version, body FROM ticket_events
                 WHERE ticket_id = ? ORDER BY seq LIMIT ?",
                params![ticket.id.to_string(), i64::from(max_events)],
                event_from_row,
            )?;
            Ok(Some((ticket, events)))
        })
        .await
    }

    async fn list_ticket_bodies(&self, query: &TicketQuery) -> Result<Vec<ListedBody>, StoreError> {
        let sql = list_statement(query);
        self.read(move |conn| {
            collect(conn, &sql.text, params_from_iter(&sql.values), |row| {
                Ok(ListedBody {
                    position: row.get("seq")?,
                    body: row
                        .get_ref("body")?
                        .as_bytes()
                        .map_err(|e| StoreError::Corrupt(format!("ticket: {e}")))?
                        .to_vec(),
                })
            })
        })
        .await
    }

    async fn list_ticket_events(
        &self,
        id: TicketId,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Option<Vec<TicketEvent>>, StoreError> {
        let ticket = id.to_string();
        self.read(move |conn| {
            let events = collect(
                conn,
                "SELECT seq, ticket_id, actor, occur_time, version, body FROM ticket_events
                 WHERE ticket_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                params![ticket, after_cursor, i64::from(limit)],
                event_from_row,
            )?;
            if events.is_empty() && !ticket_exists(conn, &ticket)? {
                return Ok(None);
            }
            Ok(Some(events))
        })
        .await
    }

    async fn catalog(&self) -> Result<CatalogData, StoreError> {
        self.read(read_catalog).await
    }

    async fn upsert_wilayat(
        &self,
        ctx: WriteContext,
        wilayat: Wilayat,
    ) -> Result<Wilayat, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            put_wilayat(conn, &wilayat)?;
            Ok(wilayat)
        })
        .await
    }

    async fn upsert_directorate(
        &self,
        ctx: WriteContext,
        directorate: Directorate,
    ) -> Result<Directorate, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            put_directorate(conn, &directorate)?;
            Ok(directorate)
        })
        .await
    }

    async fn upsert_outlet(&self, ctx: WriteContext, outlet: Outlet) -> Result<Outlet, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            check_directorate(conn, "outlet.directorate_code", &outlet.directorate_code)?;
            check_wilayat(conn, "outlet.wilayat_code", &outlet.wilayat_code)?;
            put_outlet(conn, &outlet)?;
            Ok(outlet)
        })
        .await
    }

    async fn upsert_category(
        &self,
        ctx: WriteContext,
        category: Category,
    ) -> Result<Category, StoreError> {
        self.submit(ctx.request, move |conn, _now| {
            check_directorate(
                conn,
                "category.default_directorate_code",
                &category.default_directorate_code,
            )?;
            put_category(conn, &category)?;
            Ok(category)
        })
        .await
    }

    async fn read_changes(&self, after_cursor: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        // Events written before the change feed existed carry no snapshot; the ticket as it
        // stands now is the best there is for them.
        self.read_blocking(move |conn| {
            collect(
                conn,
                "SELECT e.seq, e.ticket_id, e.actor, e.occur_time, e.version, e.body,
                     COALESCE(e.ticket_body, t.body) AS ticket_body
                 FROM ticket_events e LEFT JOIN tickets t ON t.id = e.ticket_id
                 WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                params![after_cursor, i64::from(limit)],
                |row| {
                    Ok(Change {
                        event: event_from_row(row)?,
                        ticket: from_json(text(row, "ticket_body")?, "ticket snapshot")?,
                    })
                },
            )
        })
        .await
    }

    async fn feed_bounds(&self) -> Result<FeedBounds, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT (SELECT pruned_through FROM feed_state WHERE id = 1) AS pruned,
                            (SELECT COALESCE(MAX(seq), 0) FROM ticket_events) AS latest",
                )?
                .query_row([], |row| {
                    Ok(FeedBounds {
                        oldest_resumable: row.get("pruned")?,
                        latest: row.get("latest")?,
                    })
                })?)
        })
        .await
    }

    async fn snapshot(
        &self,
        filter: &TicketFilter,
        max_tickets: u32,
    ) -> Result<Snapshot, StoreError> {
        let mut sql = Sql::new("SELECT body FROM tickets WHERE 1 = 1");
        sql.push_filter(filter);
        sql.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(max_tickets) + 1);
        self.read_blocking(move |conn| {
            // One read transaction: WAL gives it a single view of the database, so the cursor
            // and the tickets agree.
            let tx = conn.unchecked_transaction()?;
            let cursor: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM ticket_events")?
                .query_row([], |row| row.get(0))?;
            let tickets = collect(
                &tx,
                &sql.text,
                params_from_iter(&sql.values),
                ticket_from_row,
            )?;
            tx.commit()?;
            if tickets.len() > max_tickets as usize {
                return Err(StoreError::SnapshotTooLarge { max: max_tickets });
            }
            Ok(Snapshot { cursor, tickets })
        })
        .await
    }

    async fn prune_feed(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| prune_feed_tx(conn, before))
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
                claim_outbox_tx(conn, &owner, lease, limit, now)
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
            record_push_outcome_tx(conn, id, &owner, outcome, now)
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
            outcomes
                .into_iter()
                .map(|(id, outcome)| record_push_outcome_tx(conn, id, &owner, outcome, now))
                .collect()
        })
        .await
    }

    async fn list_outbox(
        &self,
        state: OutboxState,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read_blocking(move |conn| {
            collect(
                conn,
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox
                     WHERE state = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ),
                params![state.as_str(), after_id, i64::from(limit)],
                outbox_from_row,
            )
        })
        .await
    }

    async fn redrive_outbox(&self, id: i64) -> Result<bool, StoreError> {
        self.submit(None, move |conn, now| {
            let done = conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'pending', n_attempts = 0, next_attempt_at = ?1,
                         lease_owner = NULL, lease_until = NULL, update_time = ?1
                     WHERE seq = ?2 AND state = 'dead'",
                )?
                .execute(params![now.as_micros(), id])?;
            Ok(done == 1)
        })
        .await
    }

    async fn outbox_status(&self) -> Result<OutboxStatus, StoreError> {
        self.read_blocking(|conn| {
            let count = |row: &Row<'_>, name: &str| -> Result<u64, rusqlite::Error> {
                let n: i64 = row.get(name)?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            Ok(conn
                .prepare_cached(
                    "SELECT
                         COUNT(*) FILTER (WHERE state = 'pending') AS pending,
                         COUNT(*) FILTER (WHERE state = 'pending' AND lease_owner IS NOT NULL)
                             AS leased,
                         COUNT(*) FILTER (WHERE state = 'dead') AS dead,
                         COUNT(*) FILTER (WHERE state = 'delivered') AS delivered,
                         MIN(create_time) FILTER (WHERE state = 'pending') AS oldest
                     FROM outbox",
                )?
                .query_row([], |row| {
                    Ok(OutboxStatus {
                        pending: count(row, "pending")?,
                        leased: count(row, "leased")?,
                        dead: count(row, "dead")?,
                        delivered: count(row, "delivered")?,
                        oldest_pending: row
                            .get::<_, Option<i64>>("oldest")?
                            .map(Timestamp::from_micros),
                    })
                })?)
        })
        .await
    }

    async fn link_platform_case(
        &self,
        ticket_id: TicketId,
        case_id: &str,
    ) -> Result<(), StoreError> {
        let case_id = case_id.to_owned();
        self.submit(None, move |conn, now| {
            link_platform_case_tx(conn, ticket_id, &case_id, now)
        })
        .await
    }

    async fn platform_case_id(&self, ticket_id: TicketId) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT case_id FROM platform_cases WHERE ticket_id = ?")?;
            let mut rows = statement.query([ticket_id.to_string()])?;
            Ok(rows.next()?.map(|row| row.get(0)).transpose()?)
        })
        .await
    }

    async fn ticket_for_case(&self, case_id: &str) -> Result<Option<TicketId>, StoreError> {
        let id: Option<String> = self
            .read(|conn| {
                let mut statement =
                    conn.prepare_cached("SELECT ticket_id FROM platform_cases WHERE case_id = ?")?;
                let mut rows = statement.query([case_id])?;
                Ok(rows.next()?.map(|row| row.get(0)).transpose()?)
            })
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
            apply_inbound_tx(conn, author, &changes, next_cursor.as_deref(), now)
        })
        .await
    }

    async fn pull_state(&self) -> Result<PullState, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT cursor, n_changes, update_time FROM platform_pull WHERE id = 1",
            )?;
            let mut rows = statement.query([])?;
            let Some(row) = rows.next()? else {
                return Ok(PullState::default());
            };
            Ok(PullState {
                cursor: Some(row.get("cursor")?),
                last_pull_time: Some(Timestamp::from_micros(row.get("update_time")?)),
                n_changes: u64::try_from(row.get::<_, i64>("n_changes")?).unwrap_or(0),
            })
        })
        .await
    }

    async fn prune_platform_inbox(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            let n = conn
                .prepare_cached("DELETE FROM platform_inbox WHERE apply_time < ?")?
                .execute([before.as_micros()])?;
            Ok(n as u64)
        })
        .await
    }

    async fn prune_delivered_pushes(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            let n = conn
                .prepare_cached("DELETE FROM outbox WHERE state = 'delivered' AND update_time < ?")?
                .execute([before.as_micros()])?;
            Ok(n as u64)
        })
        .await
    }

    async fn enqueue_repair_push(
        &self,
        ticket_id: TicketId,
        kind: PushKind,
    ) -> Result<Option<i64>, StoreError> {
        self.submit(None, move |conn, now| {
            enqueue_repair_push_tx(conn, ticket_id, kind, now)
        })
        .await
    }

    async fn get_setting(&self, key: SettingKey) -> Result<Option<StoredSetting>, StoreError> {
        self.read(move |conn| read_setting(conn, key)).await
    }

    async fn put_setting(
        &self,
        ctx: WriteContext,
        key: SettingKey,
        value: String,
        expected_version: Option<i64>,
    ) -> Result<StoredSetting, StoreError> {
        self.submit(ctx.request, move |conn, now| {
            let current = read_setting(conn, key)?.map_or(0, |s| s.version);
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
            conn.prepare_cached(
                "INSERT INTO settings (key, version, value, actor, update_time)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key) DO UPDATE SET version = excluded.version,
                 value = excluded.value, actor = excluded.actor,
                 update_time = excluded.update_time",
            )?
            .execute(params![
                key.as_str(),
                stored.version,
                stored.value,
                stored.actor,
                now.as_micros()
            ])?;
            conn.prepare_cached(
                "INSERT INTO setting_changes (key, version, value, actor, change_time)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                key.as_str(),
                stored.version,
                stored.value,
                stored.actor,
                now.as_micros()
            ])?;
            Ok(stored)
        })
        .await
    }

    async fn list_setting_changes(
        &self,
        key: SettingKey,
        before_version: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredSetting>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT version, value, actor, change_time FROM setting_changes
                 WHERE key = ?1 AND version < ?2 ORDER BY version DESC LIMIT ?3",
            )?;
            let mut rows = statement.query(params![
                key.as_str(),
                before_version.unwrap_or(i64::MAX),
                limit
            ])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(StoredSetting {
                    version: row.get("version")?,
                    value: row.get("value")?,
                    actor: row.get("actor")?,
                    update_time: Timestamp::from_micros(row.get("change_time")?),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn sla_progress(&self) -> Result<SlaProgress, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT cursor, calendar_version, sla_version FROM sla_progress WHERE id = 1",
            )?;
            let mut rows = statement.query([])?;
            let Some(row) = rows.next()? else {
                return Ok(SlaProgress::default());
            };
            Ok(SlaProgress {
                cursor: row.get("cursor")?,
                calendar_version: row.get("calendar_version")?,
                sla_version: row.get("sla_version")?,
            })
        })
        .await
    }

    async fn save_sla_projection(
        &self,
        rows: Vec<SlaRow>,
        facts: Vec<TicketFacts>,
        progress: Option<SlaProgress>,
    ) -> Result<(), StoreError> {
        self.submit(None, move |conn, _now| {
            for facts in &facts {
                save_facts(conn, &FactsColumns::of(facts))?;
            }
            for row in &rows {
                let id = row.ticket_id.to_string();
                if row.is_idle() {
                    conn.prepare_cached("DELETE FROM sla_projection WHERE ticket_id = ?")?
                        .execute([&id])?;
                    continue;
                }
                conn.prepare_cached(
                    "INSERT INTO sla_projection (ticket_id, reference, directorate,
                     next_alert_time, next_due_time, next_due_kind)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (ticket_id) DO UPDATE SET reference = excluded.reference,
                     directorate = excluded.directorate,
                     next_alert_time = excluded.next_alert_time,
                     next_due_time = excluded.next_due_time,
                     next_due_kind = excluded.next_due_kind",
                )?
                .execute(params![
                    id,
                    row.reference.to_string(),
                    row.directorate.as_ref().map(Code::as_str),
                    row.next_alert_time.map(Timestamp::as_micros),
                    row.next_due_time.map(Timestamp::as_micros),
                    row.next_due_kind.map(|k| k.as_str()),
                ])?;
            }
            if let Some(p) = progress {
                conn.prepare_cached(
                    "INSERT INTO sla_progress (id, cursor, calendar_version, sla_version)
                     VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor,
                     calendar_version = excluded.calendar_version,
                     sla_version = excluded.sla_version",
                )?
                .execute(params![p.cursor, p.calendar_version, p.sla_version])?;
            }
            Ok(())
        })
        .await
    }

    async fn ticket_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TicketFacts>, StoreError> {
        self.read_blocking(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {FACTS_COLUMNS} FROM ticket_facts
                 WHERE create_time >= ?1 AND create_time < ?2 ORDER BY create_time, ticket_id"
            ))?;
            let mut rows = statement.query(params![from.as_micros(), to.as_micros()])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(facts_columns_at(row)?.into_facts()?);
            }
            Ok(out)
        })
        .await
    }

    async fn try_lead(
        &self,
        _role: LeaderRole,
    ) -> Result<Option<Box<dyn LeaderLease>>, StoreError> {
        // A SQLite file is served by one process: it plays every role.
        Ok(Some(Box::new(super::SoleLease)))
    }

    async fn tally_ticket_facts(
        &self,
        from: Timestamp,
        to: Timestamp,
        tally: KpiTally,
    ) -> Result<KpiTally, StoreError> {
        let parts = super::kpi_read_parts(from, to)
            .into_iter()
            .map(|(from, to)| {
                let part = tally.empty_like();
                self.read_blocking(move |conn| tally_facts(conn, from, to, part))
            })
            .collect::<Vec<_>>();
        let mut tally = tally;
        for part in futures::future::try_join_all(parts).await? {
            tally.merge(part);
        }
        Ok(tally)
    }

    async fn sla_alerts_due(&self, now: Timestamp, limit: u32) -> Result<Vec<SlaRow>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT * FROM sla_projection WHERE next_alert_time IS NOT NULL
                 AND next_alert_time <= ?1 ORDER BY next_alert_time LIMIT ?2",
            )?;
            let rows = statement.query(params![now.as_micros(), limit])?;
            sla_rows(rows)
        })
        .await
    }

    async fn sla_at_risk(
        &self,
        directorate: Option<Code>,
        due_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<SlaRow>, StoreError> {
        self.read(move |conn| match &directorate {
            Some(d) => {
                let mut statement = conn.prepare_cached(
                    "SELECT * FROM sla_projection WHERE directorate = ?1
                     AND next_due_time IS NOT NULL AND next_due_time < ?2
                     ORDER BY next_due_time LIMIT ?3",
                )?;
                sla_rows(statement.query(params![d.as_str(), due_before.as_micros(), limit])?)
            }
            None => {
                let mut statement = conn.prepare_cached(
                    "SELECT * FROM sla_projection WHERE next_due_time IS NOT NULL
                     AND next_due_time < ?1 ORDER BY next_due_time LIMIT ?2",
                )?;
                sla_rows(statement.query(params![due_before.as_micros(), limit])?)
            }
        })
        .await
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: self.readers.size,
            idle: self.readers.permits.available_permits(),
        }
    }

    async fn record_quality_review(
        &self,
        ctx: WriteContext,
        review: NewQualityReview,
    ) -> Result<QualityReview, StoreError> {
        self.submit(ctx.request, move |conn, now| {
            record_quality_review_tx(conn, ctx.actor, review, now)
        })
        .await
    }

    async fn list_quality_reviews(
        &self,
        query: &QualityReviewQuery,
    ) -> Result<Vec<ListedQualityReview>, StoreError> {
        let employee = query.employee.as_ref().map(|e| e.as_str().to_owned());
        let from = query.from.map_or(i64::MIN, Timestamp::as_micros);
        let to = query.to.map_or(i64::MAX, Timestamp::as_micros);
        let after = query.after_position.unwrap_or(0);
        let limit = i64::from(query.limit);
        self.read(move |conn| {
            collect(
                conn,
                "SELECT seq, body FROM quality_reviews
                 WHERE (?1 IS NULL OR employee_id = ?1) AND review_time >= ?2
                   AND review_time < ?3 AND seq > ?4
                 ORDER BY seq LIMIT ?5",
                params![employee, from, to, after, limit],
                |row| {
                    Ok(ListedQualityReview {
                        position: row.get("seq")?,
                        review: from_json(text(row, "body")?, "quality review")?,
                    })
                },
            )
        })
        .await
    }

    async fn sample_tickets_for_review(
        &self,
        employee: EmployeeId,
        from: Timestamp,
        to: Timestamp,
        n: u32,
        seed: u64,
    ) -> Result<Vec<Ticket>, StoreError> {
        self.read_blocking(move |conn| {
            // A ticket settled at or after `from` was last updated at or after it: the
            // update time narrows the scan, the settle time decides.
            let candidates = collect(
                conn,
                "SELECT t.body FROM tickets t
                 WHERE t.status IN ('resolved', 'closed') AND t.update_time >= ?1
                   AND (t.assignee = ?2 OR EXISTS (
                        SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id
                          AND json_extract(e.body, '$.assignment.assignee') = ?2))
                   AND NOT EXISTS (
                        SELECT 1 FROM quality_reviews q
                        WHERE q.ticket_id = t.id AND q.employee_id = ?2)",
                params![from.as_micros(), employee.as_str()],
                ticket_from_row,
            )?;
            let settled: Vec<Ticket> = candidates
                .into_iter()
                .filter(|t| quality::settle_time(t).is_some_and(|at| from <= at && at < to))
                .collect();
            Ok(quality::choose_sample(seed, settled, n as usize))
        })
        .await
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
            rate_on_call_back_tx(
                conn,
                author,
                id,
                expected_version,
                satisfaction,
                policy,
                now,
            )
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
            record_unrated_call_back_tx(conn, &ctx.actor, id, outcome, policy, now)
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
            let (seq, current) = load_ticket(conn, id)?;
            super::check_reach(author.reach.as_ref(), &current)?;
            let ticket = match crate::domain::lifecycle::erase_personal_data(&current, reason, now)
            {
                Some((next, record)) => {
                    let body = to_json(&next)?;
                    save_ticket(conn, seq, &current, &next, &body)?;
                    append_event(conn, &next, &body, &author, now, record)?;
                    next
                }
                None => current,
            };
            let reporter = to_json(&ticket.reporter)?;
            let ticket_id = id.to_string();
            conn.prepare_cached(
                "UPDATE ticket_events SET ticket_body = json_set(ticket_body, '$.reporter', json(?1))
                 WHERE ticket_id = ?2 AND ticket_body IS NOT NULL",
            )?
            .execute(params![reporter, ticket_id])?;
            conn.prepare_cached(
                "UPDATE outbox SET ticket_body = json_set(ticket_body, '$.reporter', json(?1))
                 WHERE ticket_id = ?2",
            )?
            .execute(params![reporter, ticket_id])?;
            conn.prepare_cached("DELETE FROM request_records WHERE instr(response, ?1) > 0")?
                .execute([&ticket_id])?;
            conn.prepare_cached(
                "UPDATE survey_requests SET beneficiary_hash = NULL WHERE ticket_id = ?1",
            )?
            .execute([&ticket_id])?;
            Ok(ticket)
        })
        .await
    }

    async fn tickets_to_anonymise(
        &self,
        before: Timestamp,
        limit: u32,
    ) -> Result<Vec<TicketId>, StoreError> {
        self.read(move |conn| {
            collect(
                conn,
                "SELECT id FROM tickets
                 WHERE status IN ('closed', 'rejected', 'transferred', 'merged')
                   AND update_time < ?1
                   AND json_extract(body, '$.reporter.anonymous') = 0
                   AND COALESCE(json_extract(body, '$.reporter.erased'), 0) = 0
                 ORDER BY update_time LIMIT ?2",
                params![before.as_micros(), i64::from(limit)],
                |row| {
                    TicketId::parse("id", text(row, "id")?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                },
            )
        })
        .await
    }

    async fn record_personal_data_access(
        &self,
        access: PersonalDataAccess,
        tickets: Vec<TicketId>,
    ) -> Result<(), StoreError> {
        self.submit(None, move |conn, now| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO personal_data_accesses (ticket_id, actor, role, method, access_time)
                 VALUES (?, ?, ?, ?, ?)",
            )?;
            for id in tickets {
                insert.execute(params![
                    id.to_string(),
                    access.actor,
                    access.role,
                    access.method,
                    now.as_micros()
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn list_personal_data_accesses(
        &self,
        id: TicketId,
        after: i64,
        limit: u32,
    ) -> Result<Option<Vec<(i64, PersonalDataAccessRecord)>>, StoreError> {
        self.read(move |conn| {
            if !ticket_exists(conn, &id.to_string())? {
                return Ok(None);
            }
            let rows = collect(
                conn,
                "SELECT seq, actor, role, method, access_time FROM personal_data_accesses
                 WHERE ticket_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                params![id.to_string(), after, i64::from(limit)],
                |row| {
                    Ok((
                        row.get::<_, i64>("seq")?,
                        PersonalDataAccessRecord {
                            ticket_id: id,
                            access: PersonalDataAccess {
                                actor: row.get("actor")?,
                                role: row.get("role")?,
                                method: row.get("method")?,
                            },
                            access_time: Timestamp::from_micros(row.get("access_time")?),
                        },
                    ))
                },
            )?;
            Ok(Some(rows))
        })
        .await
    }

    async fn list_survey_requests(
        &self,
        id: TicketId,
        limit: u32,
    ) -> Result<Option<Vec<SurveyRequest>>, StoreError> {
        self.read(move |conn| {
            if !ticket_exists(conn, &id.to_string())? {
                return Ok(None);
            }
            let entries = collect(
                conn,
                &format!(
                    "SELECT {LEDGER_COLUMNS} FROM survey_requests
                     WHERE ticket_id = ? ORDER BY seq LIMIT ?"
                ),
                params![id.to_string(), i64::from(limit)],
                ledger_entry_from_row,
            )?;
            Ok(Some(entries.into_iter().map(|e| e.request).collect()))
        })
        .await
    }

    async fn call_back_candidates(
        &self,
        query: &CallBackQuery,
    ) -> Result<Vec<CallBackCandidate>, StoreError> {
        let query = query.clone();
        self.read_blocking(move |conn| call_back_candidates_read(conn, &query))
            .await
    }

    async fn purge_request_records(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.submit(None, move |conn, _now| {
            let done = conn
                .prepare_cached("DELETE FROM request_records WHERE create_time < ?")?
                .execute([before.as_micros()])?;
            Ok(u64::try_from(done).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn close(&self) {
        // The writer refuses new writes from here on, but finishes every write already
        // accepted; it is gone already when the queue is closed.
        let _ = self.jobs.send(Message::Stop).await;
        if let Some(thread) = self.writer.lock().await.take() {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("the writer thread failed"),
            }
        }
        // The checkpointer stops when the writer has.
        if let Some(thread) = self.checkpointer.lock().await.take() {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("the checkpoint thread failed"),
            }
        }
        self.readers.close();
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// A cached statement with bound values, `LIMIT ?` among them, runs again without being
    /// compiled again: the plan does not hang on the values (QPSG).
    #[test]
    fn a_cached_statement_is_not_compiled_again_for_new_values() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let file = dir.path().join("reprepare.db");
        let setup = Connection::open(&file).expect("create the file");
        setup
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE events (seq INTEGER PRIMARY KEY, ticket TEXT NOT NULL);
                 CREATE INDEX events_ticket ON events (ticket, seq);
                 INSERT INTO events (ticket) VALUES ('a'), ('a'), ('b'), ('a');",
            )
            .expect("a small table");
        for access in [
            Access::Read {
                mmap_bytes: DEFAULT_MMAP_BYTES,
            },
            Access::Write,
        ] {
            let conn = open_connection(&file, access).expect("open with the store's settings");
            let sql = "SELECT seq FROM events WHERE ticket = ? AND seq > ? ORDER BY seq LIMIT ?";
            for (after, limit, expected) in
                [(0, 2, vec![1, 2]), (1, 1, vec![2]), (0, 5, vec![1, 2, 4])]
            {
                let seqs: Vec<i64> =
                    collect(
                        &conn,
                        sql,
                        params!["a", after, limit],
                        |row| Ok(row.get(0)?),
                    )
                    .expect("the query runs");
                assert_eq!(seqs, expected, "{access:?}: after {after}, limit {limit}");
            }
            let statement = conn.prepare_cached(sql).expect("still cached");
            assert_eq!(
                statement.get_status(StatementStatus::RePrepare),
                0,
                "{access:?}: the statement was compiled again for new values"
            );
        }
    }

    /// A read connection maps as much of the file as configured, none when 0.
    #[test]
    fn a_read_connection_maps_what_it_is_given() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let file = dir.path().join("mapped.db");
        Connection::open(&file)
            .and_then(|c| c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);"))
            .expect("a database");
        // Above 2 GiB only if SQLite was built with the ceiling of `.cargo/config.toml`.
        for mmap_bytes in [0, 4 << 20, DEFAULT_MMAP_BYTES, MAX_MMAP_BYTES] {
            let conn = open_connection(&file, Access::Read { mmap_bytes }).expect("opens");
            let mapped: i64 = conn
                .pragma_query_value(None, "mmap_size", |row| row.get(0))
                .expect("reads the pragma");
            assert_eq!(u64::try_from(mapped), Ok(mmap_bytes));
        }
        let writer = open_connection(&file, Access::Write).expect("opens");
        let mapped: i64 = writer
            .pragma_query_value(None, "mmap_size", |row| row.get(0))
            .expect("reads the pragma");
        assert_eq!(mapped, 0, "the writer writes through system calls only");
    }
}
