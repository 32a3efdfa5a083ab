//! `balagh.v1.SyncService`: the outbox's status and its dead letters, for operators.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::convert::{event_to_proto, timestamp_to_proto};
use super::error::{invalid_argument, status};
use super::proto::{self, sync_service_server::SyncService};
use super::request::{PageToken, page_size};
use crate::domain::FieldViolation;
use crate::domain::sync::OutboxState;
use crate::store::{OutboxEntry, Store};
use crate::sync::SyncWorker;
use crate::sync::breaker::BreakerState;
use crate::sync::pull::{PullError, Puller};

/// The running sync worker, when a platform is configured.
#[derive(Clone)]
pub struct SyncRuntime {
    pub worker: Arc<SyncWorker>,
    pub puller: Arc<Puller>,
}

pub struct SyncServiceImpl {
    store: Arc<dyn Store>,
    sync: Option<SyncRuntime>,
}

impl SyncServiceImpl {
    pub fn new(store: Arc<dyn Store>, sync: Option<SyncRuntime>) -> Self {
        Self { store, sync }
    }

    /// The entry with `id` in whichever state it is.
    async fn find(&self, id: i64) -> Result<Option<OutboxEntry>, Status> {
        for state in [
            OutboxState::Pending,
            OutboxState::Dead,
            OutboxState::Delivered,
        ] {
            let found = self.store.list_outbox(state, id - 1, 1).await?;
            if let Some(entry) = found.into_iter().find(|e| e.id == id) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

impl SyncServiceImpl {
    fn runtime(&self) -> Result<&SyncRuntime, Status> {
        self.sync.as_ref().ok_or_else(|| {
            status(
                Code::FailedPrecondition,
                "PLATFORM_NOT_CONFIGURED",
                "no national platform is configured",
                HashMap::new(),
                &[],
            )
        })
    }
}

fn pull_error(error: PullError) -> Status {
    match error {
        PullError::Store(e) => Status::from(e),
        PullError::Platform(e) => status(
            Code::Unavailable,
            "PLATFORM_UNAVAILABLE",
            format!("the national platform's change feed could not be read: {e}"),
            HashMap::new(),
            &[],
        ),
    }
}

fn entry_to_proto(e: &OutboxEntry) -> proto::OutboxEntry {
    proto::OutboxEntry {
        id: e.id,
        ticket_id: e.ticket_id.to_string(),
        reference: e.ticket.reference.to_string(),
        kind: e.kind.as_str().to_owned(),
        idempotency_key: e.idempotency_key.clone(),
        n_attempts: i64::from(e.n_attempts),
        last_error: e.last_error.clone().unwrap_or_default(),
        create_time: Some(timestamp_to_proto(e.create_time)),
        next_attempt_time: Some(timestamp_to_proto(e.next_attempt_at)),
        event: Some(event_to_proto(&e.event)),
    }
}

#[tonic::async_trait]
impl SyncService for SyncServiceImpl {
    async fn get_sync_status(
        &self,
        _request: Request<proto::GetSyncStatusRequest>,
    ) -> Result<Response<proto::GetSyncStatusResponse>, Status> {
        let s = self.store.outbox_status().await?;
        let pull = self.store.pull_state().await?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut response = proto::GetSyncStatusResponse {
            pending: count(s.pending),
            leased: count(s.leased),
            dead: count(s.dead),
            delivered: count(s.delivered),
            oldest_pending_time: s.oldest_pending.map(timestamp_to_proto),
            platform_configured: self.sync.is_some(),
            last_pull_time: pull.last_pull_time.map(timestamp_to_proto),
            pull_cursor: pull.cursor.unwrap_or_default(),
            pulled_changes: count(pull.n_changes),
            ..Default::default()
        };
        if let Some(sync) = &self.sync {
            response.breaker_state = match sync.worker.breaker_state() {
                BreakerState::Closed => "CLOSED",
                BreakerState::Open { .. } => "OPEN",
                BreakerState::HalfOpen => "HALF_OPEN",
            }
            .to_owned();
            response.last_push_time = sync.worker.last_delivery().map(timestamp_to_proto);
            response.last_pull_error = sync.puller.health().last_error.unwrap_or_default();
        }
        Ok(Response::new(response))
    }

    async fn trigger_pull(
        &self,
        _request: Request<proto::TriggerPullRequest>,
    ) -> Result<Response<proto::TriggerPullResponse>, Status> {
        let sync = self.runtime()?;
        let report = sync
            .puller
            .pull_until_caught_up()
            .await
            .map_err(pull_error)?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(proto::TriggerPullResponse {
            pages: n(report.pages),
            changes: n(report.changes),
            created: n(report.created),
            applied: n(report.applied),
            applied_fallback: n(report.applied_fallback),
            nothing: n(report.nothing),
            duplicate: n(report.duplicate),
            stale: n(report.stale),
            unknown_case: n(report.unknown_case),
            refused: n(report.refused),
        }))
    }

    async fn trigger_reconcile(
        &self,
        _request: Request<proto::TriggerReconcileRequest>,
    ) -> Result<Response<proto::TriggerReconcileResponse>, Status> {
        let sync = self.runtime()?;
        let report = sync.puller.reconcile().await.map_err(pull_error)?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(proto::TriggerReconcileResponse {
            cases: n(report.cases),
            in_sync: n(report.in_sync),
            taken_in: n(report.taken_in),
            repushed: n(report.repushed),
            awaiting_queue: n(report.awaiting_queue),
            unlinked: n(report.unlinked),
            refused: n(report.refused),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<proto::ListDeadLettersRequest>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        let message = request.get_ref();
        let limit = page_size(message.page_size, 50, 500).map_err(|v| invalid_argument(vec![v]))?;
        let after = PageToken::decode(&message.page_token, 0)
            .map_err(|v| invalid_argument(vec![v]))?
            .map_or(0, |t| t.position);
        let mut entries = self
            .store
            .list_outbox(OutboxState::Dead, after, limit + 1)
            .await?;
        let next_page_token = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries
                .last()
                .map(|e| {
                    PageToken {
                        position: e.id,
                        filter_hash: 0,
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListDeadLettersResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn redrive_dead_letter(
        &self,
        request: Request<proto::RedriveDeadLetterRequest>,
    ) -> Result<Response<proto::RedriveDeadLetterResponse>, Status> {
        let id = request.get_ref().id;
        if id <= 0 {
            return Err(invalid_argument(vec![FieldViolation::new(
                "id",
                "must be the id of a dead letter",
            )]));
        }
        let redriven = self.store.redrive_outbox(id).await?;
        let entry = self.find(id).await?.ok_or_else(|| {
            status(
                Code::NotFound,
                "DEAD_LETTER_NOT_FOUND",
                "no outbox entry with this id",
                HashMap::new(),
                &[],
            )
        })?;
        if !redriven && entry.state == OutboxState::Delivered {
            return Err(status(
                Code::FailedPrecondition,
                "ENTRY_DELIVERED",
                "this push was delivered; there is nothing to re-drive",
                HashMap::new(),
                &[],
            ));
        }
        tracing::info!(outbox_id = id, ticket_id = %entry.ticket_id, "dead letter re-driven");
        Ok(Response::new(proto::RedriveDeadLetterResponse {
            entry: Some(entry_to_proto(&entry)),
        }))
    }
}
