//! The sync worker's pull side: takes in the national platform's change feed.
//!
//! Invariants:
//! - The feed cursor is stored in the same transaction as the changes of its page
//!   ([`Store::apply_platform_changes`]): after a crash the pull resumes exactly after the last
//!   page it applied, and never skips one.
//! - A change seen twice is applied once (by change id), and an older change never overwrites
//!   a newer state (by case version). Both are the store's rules, so they hold whatever the
//!   feed does (it delivers at least once, and may start a page before the cursor).
//! - A case filed by a citizen becomes one local ticket (channel: national platform); its
//!   creation queues the receipt acknowledgement in the outbox, like any push.
//! - Only cases a citizen filed are ever taken in as new tickets: a case the municipality
//!   shared came from a local ticket, which the push links to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::lifecycle::Action;
use crate::domain::ticket::{Satisfaction, Visibility};
use crate::domain::{Clock, Timestamp};
use crate::platform::client::{PlatformClient, PlatformError};
use crate::platform::contract::{CaseSource, Change, ChangeKind, ChangePage};
use crate::platform::convert::{ConversionError, new_ticket_from_case, note_from_citizen};
use crate::platform::mapping::Mapping;
use crate::store::{InboundChange, InboundOutcome, Store, StoreError};

/// The actor the audit trail names for what the pull writes.
pub const PULL_ACTOR: &str = "national-platform";

#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Changes asked for per page (the platform allows 1 to 1000).
    pub page_size: u32,
    /// How often an idle pull asks the feed again.
    pub interval: Duration,
    /// The wait after a failed page, doubled per failure up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How often the reconcile sweep compares both sides (see [`super::reconcile`]).
    pub reconcile_interval: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            page_size: 500,
            interval: Duration::from_secs(5),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            reconcile_interval: Duration::from_secs(3600),
        }
    }
}

/// Why a pull stopped short.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pull took in, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullReport {
    pub pages: u64,
    pub changes: u64,
    pub created: u64,
    pub applied: u64,
    pub applied_fallback: u64,
    pub nothing: u64,
    pub duplicate: u64,
    pub stale: u64,
    pub unknown_case: u64,
    pub refused: u64,
}

impl PullReport {
    fn count(&mut self, outcome: &InboundOutcome) {
        self.changes += 1;
        let n = match outcome {
            InboundOutcome::Created { .. } => &mut self.created,
            InboundOutcome::Applied { .. } => &mut self.applied,
            InboundOutcome::AppliedFallback { .. } => &mut self.applied_fallback,
            InboundOutcome::Nothing => &mut self.nothing,
            InboundOutcome::Duplicate => &mut self.duplicate,
            InboundOutcome::Stale => &mut self.stale,
            InboundOutcome::UnknownCase => &mut self.unknown_case,
            InboundOutcome::Refused { .. } => &mut self.refused,
        };
        *n += 1;
    }

    fn add(&mut self, other: &PullReport) {
        self.pages += other.pages;
        self.changes += other.changes;
        self.created += other.created;
        self.applied += other.applied;
        self.applied_fallback += other.applied_fallback;
        self.nothing += other.nothing;
        self.duplicate += other.duplicate;
        self.stale += other.stale;
        self.unknown_case += other.unknown_case;
        self.refused += other.refused;
    }
}

/// The last outcome of the pull, for the status RPC and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullHealth {
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    pub totals: PullReport,
}

pub struct Puller {
    client: Arc<PlatformClient>,
    mapping: Arc<Mapping>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: PullSettings,
    health: Mutex<PullHealth>,
    /// Serialises pulls: the loop and a pull asked for over gRPC never read the feed at once.
    running: tokio::sync::Mutex<()>,
    wake: Notify,
}

impl Puller {
    pub fn new(
        client: Arc<PlatformClient>,
        mapping: Arc<Mapping>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: PullSettings,
    ) -> Self {
        Self {
            client,
            mapping,
            store,
            clock,
            settings,
            health: Mutex::new(PullHealth::default()),
            running: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        }
    }

    pub fn health(&self) -> PullHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Runs one reconcile sweep (never at the same time as a pull of this process).
    pub async fn reconcile(&self) -> Result<super::reconcile::ReconcileReport, PullError> {
        let _running = self.running.lock().await;
        super::reconcile::reconcile(&self.client, &self.mapping, &self.store).await
    }

    /// Asks the running loop to pull now instead of at its next interval.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Reads the feed until it has nothing more, one page per transaction. While a page is
    /// applied, the next one is already being fetched (from the cursor the page ends at), so
    /// the platform's answer and the database's work overlap; pages are still applied one at
    /// a time and in order, and a fetched page is dropped if the one before it fails.
    pub async fn pull_until_caught_up(&self) -> Result<PullReport, PullError> {
        let _running = self.running.lock().await;
        let mut report = PullReport::default();
        let result = async {
            let mut cursor = self.store.pull_state().await?.cursor;
            let mut page = self.fetch(cursor.as_deref()).await?;
            loop {
                let Some(next_cursor) = page.next_cursor.clone() else {
                    // An empty feed and no cursor yet: nothing to apply, nothing to remember.
                    return Ok(());
                };
                let has_more = page.has_more;
                if page.changes.is_empty() && cursor.as_deref() == Some(next_cursor.as_str()) {
                    if !has_more {
                        return Ok(());
                    }
                    page = self.fetch(Some(&next_cursor)).await?;
                    continue;
                }
                let (applied, next_page) = if has_more {
                    let (applied, next_page) = tokio::join!(
                        self.apply(page, &next_cursor),
                        self.fetch(Some(&next_cursor))
                    );
                    (applied, Some(next_page))
                } else {
                    (self.apply(page, &next_cursor).await, None)
                };
                report.add(&applied?);
                let Some(next_page) = next_page else {
                    return Ok(());
                };
                page = next_page?;
                cursor = Some(next_cursor);
            }
        }
        .await;
        let now = self.clock.now();
        if let Ok(mut health) = self.health.lock() {
            health.totals.add(&report);
            match &result {
                Ok(()) => {
                    health.last_success = Some(now);
                    health.last_error = None;
                }
                Err(error) => health.last_error = Some(error_text(error)),
            }
        }
        result.map(|()| report)
    }

    /// One page of the feed after `cursor`.
    async fn fetch(&self, cursor: Option<&str>) -> Result<ChangePage, PullError> {
        match self.client.changes(cursor, self.settings.page_size).await {
            Ok(page) => Ok(page),
            Err(error) if error.is_cursor_expired() => {
                // The feed no longer keeps our position: read it again from its start. What
                // was applied before is recognised by change id and case version.
                tracing::error!(
                    "the platform's change feed expired the pull cursor; reading the feed again from its start"
                );
                Ok(self.client.changes(None, self.settings.page_size).await?)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Applies one page and stores `next_cursor` with it, in one transaction.
    async fn apply(&self, page: ChangePage, next_cursor: &str) -> Result<PullReport, PullError> {
        let span = tracing::info_span!("pull", n_changes = page.changes.len());
        async {
            let inbound = page
                .changes
                .iter()
                .map(|change| inbound_change(change, &self.mapping))
                .collect::<Vec<_>>();
            let outcomes = self
                .store
                .apply_platform_changes(PULL_ACTOR, inbound, Some(next_cursor))
                .await?;
            let mut report = PullReport {
                pages: 1,
                ..PullReport::default()
            };
            for (change, outcome) in page.changes.iter().zip(&outcomes) {
                report.count(outcome);
                log_outcome(change, outcome);
            }
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Pulls every `interval` (or when woken) until `shutdown`, backing off after failures,
    /// and sweeps every `reconcile_interval`.
    pub async fn run_until_stopped(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!("platform pull started");
        let mut failures = 0u32;
        let mut next_sweep = tokio::time::Instant::now() + self.settings.reconcile_interval;
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                if let Err(error) = self.reconcile().await {
                    tracing::warn!(error = %error_text(&error), "the reconcile sweep failed");
                }
                next_sweep = tokio::time::Instant::now() + self.settings.reconcile_interval;
            }
            let wait = match self.pull_until_caught_up().await {
                Ok(_) => {
                    failures = 0;
                    self.settings.interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = self
                        .settings
                        .backoff
                        .saturating_mul(2u32.saturating_pow(failures.min(16) - 1))
                        .min(self.settings.max_backoff);
                    tracing::warn!(error = %error_text(&error), retry_in_ms = wait.as_millis() as u64, "pulling the platform's change feed failed");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("platform pull stopped");
    }
}

fn error_text(error: &PullError) -> String {
    match error {
        PullError::Platform(e) => e.to_string(),
        // Database details stay in the logs of the store; the status says what failed.
        PullError::Store(e) => format!("applying the changes failed: {e}"),
    }
}

fn log_outcome(change: &Change, outcome: &InboundOutcome) {
    match outcome {
        InboundOutcome::Created { reference, .. } => tracing::info!(
            case_id = %change.case_id,
            reference = %reference,
            "a case filed on the national platform became a ticket"
        ),
        InboundOutcome::Refused { reason } => tracing::warn!(
            case_id = %change.case_id,
            change_id = %change.change_id,
            kind = change.kind.as_str(),
            reason = %reason,
            "a change from the national platform was refused"
        ),
        InboundOutcome::UnknownCase => tracing::info!(
            case_id = %change.case_id,
            kind = change.kind.as_str(),
            "a change of a case with no local ticket (yet); left to the reconcile sweep"
        ),
        other => tracing::debug!(
            case_id = %change.case_id,
            kind = change.kind.as_str(),
            outcome = other.as_str(),
            "platform change taken in"
        ),
    }
}

/// A feed change in the registry's terms. Conversion problems are carried, not raised: the
/// store records them as refused and the pull moves on.
pub fn inbound_change(change: &Change, mapping: &Mapping) -> InboundChange {
    let mut problem = None;
    let mut fail = |error: ConversionError| {
        problem.get_or_insert_with(|| error.to_string());
    };
    // Every change of a citizen's case can bring the case in, should its filing have been
    // missed: the store uses this only when no ticket stands for the case yet.
    let new_ticket = match change.case.source {
        CaseSource::Citizen => match new_ticket_from_case(&change.case, mapping) {
            Ok(inbound) => {
                if inbound.category_via_fallback {
                    tracing::warn!(
                        case_id = %change.case_id,
                        category = %change.case.category,
                        "a platform category is not in the mapping table: the fallback category is used"
                    );
                }
                Some(inbound.ticket)
            }
            Err(error) => {
                fail(error);
                None
            }
        },
        CaseSource::Entity => None,
    };
    let (action, fallback) = match citizen_action(change) {
        Ok(pair) => pair,
        Err(error) => {
            fail(error);
            (None, None)
        }
    };
    InboundChange {
        change_id: change.change_id.clone(),
        case_id: change.case_id.clone(),
        case_version: change.case_version,
        new_ticket,
        action,
        fallback,
        problem,
    }
}

type ActionPair = (Option<Action>, Option<Action>);

/// What a citizen's change does to the ticket, and what is kept instead when the ticket's
/// state does not allow it. Changes the municipality made itself do nothing here.
fn citizen_action(change: &Change) -> Result<ActionPair, ConversionError> {
    let internal = |text: String| Action::Comment {
        text,
        visibility: Visibility::Internal,
    };
    Ok(match change.kind {
        ChangeKind::DetailAdded => match &change.detail {
            Some(detail) => {
                let text = note_from_citizen("detail.text", &detail.text)?;
                (Some(internal(text)), None)
            }
            None => (None, None),
        },
        ChangeKind::Rated => match &change.rating {
            Some(rating) => {
                let satisfaction = Satisfaction::parse(
                    "rating",
                    i64::from(rating.score),
                    rating.comment.as_deref(),
                    rating.rated_at.timestamp(),
                )
                .map_err(ConversionError::Invalid)?;
                let note = match &satisfaction.comment {
                    Some(comment) => format!(
                        "Rating from the national platform: {}/5. {comment}",
                        satisfaction.score()
                    ),
                    None => format!(
                        "Rating from the national platform: {}/5",
                        satisfaction.score()
                    ),
                };
                (Some(Action::Rate { satisfaction }), Some(internal(note)))
            }
            None => (None, None),
        },
        ChangeKind::ReopenRequested => match &change.reopen_request {
            Some(request) => {
                let reason = note_from_citizen("reopen_request.reason", &request.reason)?;
                let note = format!("Reopen requested on the national platform: {reason}");
                (Some(Action::Reopen { reason }), Some(internal(note)))
            }
            None => (None, None),
        },
        ChangeKind::Filed
        | ChangeKind::Created
        | ChangeKind::Received
        | ChangeKind::Updated
        | ChangeKind::ReplyAdded
        | ChangeKind::Resolved
        | ChangeKind::Unknown => (None, None),
    })
}
