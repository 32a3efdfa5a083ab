//! The sync worker's push side: drains the transactional outbox to the national platform.
//!
//! Invariants:
//! - Work is claimed with a lease and no transaction is held across a call to the platform:
//!   claim (commit), push, then record the outcome, fenced by the lease.
//! - Per-ticket order comes from the claim (an entry is never handed out while an older one of
//!   its ticket is pending or dead); different tickets are pushed concurrently.
//! - The drain is pipelined: up to `concurrency` pushes are in flight, and more work is claimed
//!   in small chunks as slots free up, so one slow or failing push holds up its own slot only.
//! - Every push carries the entry's stable idempotency key, so a retry after an answer lost in
//!   transit takes effect once at the platform.
//! - The retry schedule lives in the database (`next_attempt_at`, `n_attempts`, `last_error`),
//!   so it survives restarts; what cannot be delivered becomes a dead letter, and an alert is
//!   logged again and again for as long as any dead letter waits.

pub mod breaker;
pub mod platform_pusher;
pub mod pull;
pub mod reconcile;
pub mod retry;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::OptionFuture;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::Clock;
use crate::domain::values::TicketId;
use crate::store::{OutboxEntry, PushOutcome, Store, StoreError};
use breaker::{Breaker, BreakerState};
use retry::{RetryDecision, RetryPolicy};

/// Why a push did not go through, in the two classes the worker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushFailure {
    /// Transport error, timeout, 408, 429, 5xx, or a conflict not yet resolved: try again
    /// later, not before `retry_after`.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Refused for good (any other 4xx): a dead letter, to be looked at and re-driven.
    Rejected { reason: String },
}

/// Delivers one push to the national platform. Implementations send the entry's
/// idempotency key and resolve version conflicts themselves (fetch, merge by field ownership,
/// retry) before answering `Retryable`.
#[async_trait]
pub trait Pusher: Send + Sync + 'static {
    async fn push(&self, entry: &OutboxEntry) -> Result<(), PushFailure>;
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub retry: RetryPolicy,
    /// How long a claimed entry stays with this worker before another may take it.
    pub lease: Duration,
    /// Entries claimed at once by [`SyncWorker::drain_once`]; the pipelined drain claims at
    /// most `concurrency` at a time, and never more than this.
    pub batch: u32,
    /// Pushes in flight at once (always of different tickets).
    pub concurrency: usize,
    /// How long an idle worker waits for a commit before looking again.
    pub idle_poll: Duration,
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
    pub breaker_max_cool_down: Duration,
    /// How often the dead-letter alert repeats while any dead letter waits.
    pub alert_interval: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            lease: Duration::from_secs(60),
            batch: 200,
            concurrency: 32,
            idle_poll: Duration::from_secs(1),
            breaker_threshold: 10,
            breaker_cool_down: Duration::from_secs(5),
            breaker_max_cool_down: Duration::from_secs(300),
            alert_interval: Duration::from_secs(60),
        }
    }
}

pub struct SyncWorker {
    store: Arc<dyn Store>,
    pusher: Arc<dyn Pusher>,
    clock: Arc<dyn Clock>,
    settings: SyncSettings,
    breaker: Mutex<Breaker>,
    /// This worker's name in leases: unique per process.
    owner: String,
    /// When this worker last delivered a push.
    last_delivery: Mutex<Option<crate::domain::Timestamp>>,
}

impl SyncWorker {
    pub fn new(
        store: Arc<dyn Store>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
        settings: SyncSettings,
    ) -> Self {
        let breaker = Breaker::new(
            settings.breaker_threshold,
            settings.breaker_cool_down,
            settings.breaker_max_cool_down,
        );
        Self {
            store,
            pusher,
            clock,
            settings,
            breaker: Mutex::new(breaker),
            owner: format!("sync-{}", uuid::Uuid::now_v7().simple()),
            last_delivery: Mutex::new(None),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// When this worker last delivered a push, if it has.
    pub fn last_delivery(&self) -> Option<crate::domain::Timestamp> {
        self.last_delivery.lock().ok().and_then(|t| *t)
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .map(|b| b.state())
            .unwrap_or(BreakerState::Closed)
    }

    /// Drains the outbox until `shutdown`: woken by commits, polling when idle. The
    /// dead-letter alert repeats every `alert_interval`, busy or idle, beside the drain.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(owner = %self.owner, "sync worker started");
        tokio::join!(
            self.push_until_stopped(&shutdown),
            self.alert_until_stopped(&shutdown)
        );
        tracing::info!(owner = %self.owner, "sync worker stopped");
    }

    async fn push_until_stopped(&self, shutdown: &CancellationToken) {
        let mut commits = self.store.commits();
        while !shutdown.is_cancelled() {
            let handled = match self.drain_until_idle(shutdown).await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(error = %error, "claiming outbox work failed");
                    0
                }
            };
            if handled > 0 {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = commits.changed() => {}
                () = tokio::time::sleep(self.settings.idle_poll) => {}
            }
        }
    }

    async fn alert_until_stopped(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            self.alert_on_dead_letters().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.alert_interval) => {}
            }
        }
    }

    /// Claims one batch and pushes it, `concurrency` at a time; returns how many entries it
    /// handled. The next batch waits for the slowest push of this one: a step for tests on
    /// an injected clock. The running worker drains with [`SyncWorker::drain_until_idle`].
    pub async fn drain_once(&self) -> Result<usize, StoreError> {
        let Some(limit) = self.claim_limit(self.settings.batch)? else {
            return Ok(0);
        };
        let claimed = self
            .store
            .claim_outbox(&self.owner, self.settings.lease, limit)
            .await;
        if claimed.as_ref().map_or(true, Vec::is_empty) {
            self.return_probe();
        }
        let entries = claimed?;
        let n = entries.len();
        futures::stream::iter(entries)
            .for_each_concurrent(self.settings.concurrency.max(1), |entry| {
                self.try_push_one(entry)
            })
            .await;
        Ok(n)
    }

    /// Pushes everything due, pipelined: up to `concurrency` pushes stay in flight, and the
    /// worker claims more (a chunk of `concurrency`, at most `batch`) whenever fewer than a
    /// chunk wait for a slot, so slots never wait for a claim and a slow push holds up its
    /// own slot only, not a batch. A push frees its slot when the platform has answered; its
    /// outcome is recorded with the others that end meanwhile, in one write. Returns how
    /// many attempts it handled (outcomes decided) once nothing is in flight and a claim finds
    /// nothing due, or the breaker holds pushes back, or `shutdown` is cancelled. Whatever it
    /// claimed it pushes, and records, before returning, also on shutdown, as `drain_once`
    /// pushes its whole batch; a claim that fails is reported after that.
    ///
    /// No transaction spans a push: each claim commits before its entries go out. Per-ticket
    /// order holds because an entry stays pending and leased until its outcome is recorded,
    /// so the store hands out no later entry of its ticket meanwhile.
    pub async fn drain_until_idle(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let concurrency = self.settings.concurrency.max(1);
        let chunk = self
            .settings
            .batch
            .clamp(1, u32::try_from(concurrency).unwrap_or(u32::MAX));
        let push = |entry: OutboxEntry| async move {
            let outcome = self.push_one(&entry).await;
            (Attempt::of(&entry), entry.ticket_id, outcome)
        };
        let record = |ended: Vec<(Attempt, TicketId, PushOutcome)>| async move {
            let (attempts, outcomes): (Vec<_>, Vec<_>) = ended
                .into_iter()
                .map(|(attempt, ticket_id, outcome)| ((attempt, ticket_id), (attempt.id, outcome)))
                .unzip();
            let recorded = self.store.record_push_outcomes(&self.owner, outcomes).await;
            (attempts, recorded)
        };
        let claim_more = |limit: u32| async move {
            let claimed = self
                .store
                .claim_outbox(&self.owner, self.settings.lease, limit)
                .await;
            (limit, claimed)
        };
        // Claimed, waiting for a slot.
        let mut waiting = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        // Pushes that ended, their outcomes not yet handed to the store.
        let mut ended = Vec::new();
        let mut recording = None;
        let mut claim = None;
        // Every attempt from its claim until its outcome is recorded.
        let mut held = HashSet::new();
        // The attempts whose outcomes were recorded while the claim was under way: the claim
        // may have read the outbox before them (see `Attempt`).
        let mut recorded_during_claim = HashSet::new();
        // After a claim that came back short, the next one waits for an outcome to be
        // recorded: only then can a ticket's next entry be due (or a retry, whose time is
        // passing anyway).
        let mut more_may_be_due = true;
        let mut failure = None;
        let mut handled = 0;
        loop {
            while in_flight.len() < concurrency
                && let Some(entry) = waiting.pop_front()
            {
                in_flight.push(push(entry));
            }
            if recording.is_none() && !ended.is_empty() {
                recording = Some(Box::pin(record(std::mem::take(&mut ended))));
            }
            if claim.is_none()
                && more_may_be_due
                && failure.is_none()
                && !shutdown.is_cancelled()
                && waiting.len() < chunk as usize
            {
                match self.claim_limit(chunk) {
                    Ok(Some(limit)) => {
                        recorded_during_claim.clear();
                        claim = Some(Box::pin(claim_more(limit)));
                    }
                    Ok(None) => more_may_be_due = false,
                    Err(error) => failure = Some(error),
                }
            }
            if claim.is_none() && in_flight.is_empty() && recording.is_none() {
                break;
            }
            tokio::select! {
                Some((limit, claimed)) = OptionFuture::from(claim.as_mut()) => {
                    claim = None;
                    if claimed.as_ref().map_or(true, Vec::is_empty) {
                        self.return_probe();
                    }
                    match claimed {
                        Ok(entries) => {
                            more_may_be_due = entries.len() >= limit as usize
                                || !recorded_during_claim.is_empty();
                            for entry in entries {
                                let attempt = Attempt::of(&entry);
                                if recorded_during_claim.contains(&attempt) {
                                    // That attempt's outcome, or, had it failed to be
                                    // recorded, the lease, says when the entry goes again.
                                } else if held.insert(attempt) {
                                    waiting.push_back(entry);
                                } else {
                                    tracing::warn!(
                                        ticket_id = %entry.ticket_id,
                                        "a push outlasted its lease; it goes on, once"
                                    );
                                }
                            }
                        }
                        Err(error) => failure = Some(error),
                    }
                }
                Some(push_ended) = in_flight.next(), if !in_flight.is_empty() => {
                    ended.push(push_ended);
                }
                Some((attempts, recorded)) = OptionFuture::from(recording.as_mut()) => {
                    recording = None;
                    log_recorded(&attempts, recorded);
                    for (attempt, _) in attempts {
                        held.remove(&attempt);
                        if claim.is_some() {
                            recorded_during_claim.insert(attempt);
                        }
                        handled += 1;
                    }
                    more_may_be_due = true;
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(handled),
        }
    }

    /// How many entries the next claim may take: `None` while the breaker is open, one
    /// probe while it is half open, else `wanted`.
    fn claim_limit(&self, wanted: u32) -> Result<Option<u32>, StoreError> {
        let mut breaker = self
            .breaker
            .lock()
            .map_err(|_| StoreError::Corrupt("breaker lock poisoned".into()))?;
        if !breaker.allows(self.clock.now()) {
            return Ok(None);
        }
        if breaker.state() == BreakerState::HalfOpen {
            Ok(Some(1))
        } else {
            Ok(Some(wanted))
        }
    }

    /// Pushes one entry and records its outcome.
    async fn try_push_one(&self, entry: OutboxEntry) {
        let outcome = self.push_one(&entry).await;
        let recorded = self
            .store
            .record_push_outcome(entry.id, &self.owner, outcome)
            .await
            .map(|recorded| vec![recorded]);
        log_recorded(&[(Attempt::of(&entry), entry.ticket_id)], recorded);
    }

    /// Pushes one entry and decides its outcome, for the caller to record.
    async fn push_one(&self, entry: &OutboxEntry) -> PushOutcome {
        let span = tracing::info_span!(
            "push",
            ticket_id = %entry.ticket_id,
            reference = %entry.ticket.reference,
            kind = entry.kind.as_str(),
            attempt = entry.n_attempts + 1,
        );
        async {
            let result = self.pusher.push(entry).await;
            let now = self.clock.now();
            match result {
                Ok(()) => {
                    self.with_breaker(|b| b.record_success());
                    if let Ok(mut last) = self.last_delivery.lock() {
                        *last = Some(now);
                    }
                    tracing::debug!("pushed");
                    PushOutcome::Delivered
                }
                Err(PushFailure::Rejected { reason }) => {
                    // The platform answered: it is up, the push itself is wrong.
                    self.with_breaker(|b| b.record_success());
                    tracing::warn!(reason = %reason, "push refused: dead letter");
                    PushOutcome::Dead { error: reason }
                }
                Err(PushFailure::Retryable {
                    reason,
                    retry_after,
                }) => {
                    self.with_breaker(|b| b.record_failure(now));
                    match self.settings.retry.after_failure(
                        entry.n_attempts + 1,
                        entry.create_time,
                        now,
                        retry_after,
                    ) {
                        RetryDecision::RetryAt(at) => {
                            tracing::info!(reason = %reason, "push failed; will retry");
                            PushOutcome::RetryAt { at, error: reason }
                        }
                        RetryDecision::GiveUp(why) => {
                            tracing::warn!(reason = %reason, "push failed for the last time: dead letter");
                            PushOutcome::Dead {
                                error: format!("{why}; last error: {reason}"),
                            }
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// After a claim that took nothing: a half-open breaker's probe was not used, so the
    /// next claim may probe (see [`Breaker::return_probe`]); otherwise nothing changes.
    fn return_probe(&self) {
        let now = self.clock.now();
        self.with_breaker(|b| b.return_probe(now));
    }

    fn with_breaker(&self, f: impl FnOnce(&mut Breaker)) {
        if let Ok(mut breaker) = self.breaker.lock() {
            f(&mut breaker);
        }
    }

    async fn alert_on_dead_letters(&self) {
        match self.store.outbox_status().await {
            Ok(status) if status.dead > 0 => tracing::error!(
                n_dead = status.dead,
                "ALERT: pushes to the national platform are waiting as dead letters; inspect and re-drive them"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "reading the outbox status failed"),
        }
    }
}

/// One attempt at an entry: the entry with its attempt count. Every outcome recorded adds one
/// to the count, so a claim that hands back an entry with the count of an attempt this worker
/// still holds, or has just recorded, read it before that outcome: its lease ran out during
/// the push. With a higher count the outcome is recorded and the entry is due again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Attempt {
    id: i64,
    n_attempts: u32,
}

impl Attempt {
    fn of(entry: &OutboxEntry) -> Self {
        Self {
            id: entry.id,
            n_attempts: entry.n_attempts,
        }
    }
}

/// Logs the outcomes that could not be recorded, and why.
fn log_recorded(attempts: &[(Attempt, TicketId)], recorded: Result<Vec<bool>, StoreError>) {
    match recorded {
        Ok(recorded) => {
            for ((_, ticket_id), _) in attempts.iter().zip(recorded).filter(|(_, r)| !r) {
                tracing::warn!(
                    ticket_id = %ticket_id,
                    "lease lost before the outcome was recorded; another worker has the entry"
                );
            }
        }
        Err(error) => tracing::warn!(
            error = %error,
            n_outcomes = attempts.len(),
            "recording push outcomes failed; the leases will expire and the pushes repeat"
        ),
    }
}
