//! The sync worker's push side: drains the transactional outbox to the national platform.
//!
//! Invariants:
//! - Work is claimed with a lease and no transaction is held across a call to the platform:
//!   claim (commit), push, then record the outcome, fenced by the lease.
//! - Per-ticket order comes from the claim (an entry is never handed out while an older one of
//!   its ticket is pending or dead); different tickets are pushed concurrently.
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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::Clock;
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
    /// Entries claimed at once.
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
    /// dead-letter alert repeats every `alert_interval`, busy or idle.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        let mut commits = self.store.commits();
        let mut next_alert = tokio::time::Instant::now();
        tracing::info!(owner = %self.owner, "sync worker started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if tokio::time::Instant::now() >= next_alert {
                self.alert_on_dead_letters().await;
                next_alert = tokio::time::Instant::now() + self.settings.alert_interval;
            }
            let handled = match self.drain_once().await {
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
        tracing::info!(owner = %self.owner, "sync worker stopped");
    }

    /// Claims one batch and pushes it; returns how many entries it handled.
    pub async fn drain_once(&self) -> Result<usize, StoreError> {
        let limit = {
            let mut breaker = self
                .breaker
                .lock()
                .map_err(|_| StoreError::Corrupt("breaker lock poisoned".into()))?;
            if !breaker.allows(self.clock.now()) {
                return Ok(0);
            }
            // Half open: a single probe.
            if breaker.state() == BreakerState::HalfOpen {
                1
            } else {
                self.settings.batch
            }
        };
        let entries = self
            .store
            .claim_outbox(&self.owner, self.settings.lease, limit)
            .await?;
        let n = entries.len();
        futures::stream::iter(entries)
            .for_each_concurrent(self.settings.concurrency.max(1), |entry| {
                self.try_push_one(entry)
            })
            .await;
        Ok(n)
    }

    async fn try_push_one(&self, entry: OutboxEntry) {
        let span = tracing::info_span!(
            "push",
            ticket_id = %entry.ticket_id,
            reference = %entry.ticket.reference,
            kind = entry.kind.as_str(),
            attempt = entry.n_attempts + 1,
        );
        async {
            let result = self.pusher.push(&entry).await;
            let now = self.clock.now();
            let outcome = match result {
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
            };
            match self
                .store
                .record_push_outcome(entry.id, &self.owner, outcome)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!("lease lost before the outcome was recorded; another worker has the entry"),
                Err(error) => tracing::warn!(error = %error, "recording a push outcome failed; the lease will expire and the push repeat"),
            }
        }
        .instrument(span)
        .await;
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
