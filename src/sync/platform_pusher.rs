//! The [`Pusher`] that delivers outbox entries to the national platform with
//! [`PlatformClient`], converting through the versioned mapping.
//!
//! Field ownership: the municipality owns a case's type, category, status, wilayat and its
//! replies and resolution; the platform owns what citizens add. An update therefore sends the
//! municipality's fields as they stand on the ticket, against the case's current version
//! fetched just before: a version conflict means someone else (a citizen) changed the case in
//! between, and the next attempt simply fetches again. Every write carries the entry's stable
//! idempotency key, so an attempt whose answer was lost takes effect once.

use std::sync::Arc;

use async_trait::async_trait;

use super::{PushFailure, Pusher};
use crate::domain::sync::PushKind;
use crate::platform::client::{IdempotencyKey, PlatformClient, PlatformError};
use crate::platform::contract::ProblemType;
use crate::platform::convert::{
    ConversionError, case_update_from_ticket, new_case_from_ticket, new_reply,
    new_resolution_from_ticket, receipt_for,
};
use crate::platform::mapping::Mapping;
use crate::store::{OutboxEntry, Store};

pub struct PlatformPusher {
    client: Arc<PlatformClient>,
    mapping: Arc<Mapping>,
    store: Arc<dyn Store>,
}

impl PlatformPusher {
    pub fn new(client: Arc<PlatformClient>, mapping: Arc<Mapping>, store: Arc<dyn Store>) -> Self {
        Self {
            client,
            mapping,
            store,
        }
    }

    async fn case_id(&self, entry: &OutboxEntry) -> Result<String, PushFailure> {
        self.store
            .platform_case_id(entry.ticket_id)
            .await
            .map_err(|e| retryable(format!("reading the case link failed: {e}")))?
            .ok_or_else(|| {
                // Cannot happen while per-ticket order holds (the creation goes first); if it
                // does, waiting lets a re-driven creation link the case.
                retryable("the ticket has no case on the platform yet".to_owned())
            })
    }
}

fn retryable(reason: String) -> PushFailure {
    PushFailure::Retryable {
        reason,
        retry_after: None,
    }
}

fn from_conversion(error: ConversionError) -> PushFailure {
    PushFailure::Rejected {
        reason: format!("cannot be expressed in the platform's terms: {error}"),
    }
}

fn from_platform(error: PlatformError) -> PushFailure {
    match error {
        PlatformError::Retryable { retry_after, .. } => PushFailure::Retryable {
            reason: error.to_string(),
            retry_after,
        },
        // The outcome of the write is unknown: the same key makes the retry safe.
        PlatformError::Malformed { .. } | PlatformError::Conflict { .. } => {
            retryable(error.to_string())
        }
        // Refused credentials are not this push's fault: every push would fail alike. Keep
        // them queued; the breaker opens and the logs say why until credentials are fixed.
        PlatformError::Unauthorized { .. } => retryable(error.to_string()),
        PlatformError::Rejected { .. } | PlatformError::Config(_) => PushFailure::Rejected {
            reason: error.to_string(),
        },
    }
}

#[async_trait]
impl Pusher for PlatformPusher {
    async fn push(&self, entry: &OutboxEntry) -> Result<(), PushFailure> {
        let key =
            IdempotencyKey::parse(&entry.idempotency_key).map_err(|v| PushFailure::Rejected {
                reason: format!("invalid idempotency key: {v}"),
            })?;
        let ticket = &entry.ticket;
        match entry.kind {
            PushKind::CreateCase => {
                let case = new_case_from_ticket(ticket, &self.mapping).map_err(from_conversion)?;
                let case_id = match self.client.create_case(&key, &case).await {
                    Ok(outcome) => outcome.case.case_id,
                    // Filed before (its key since forgotten): the platform names the case.
                    Err(PlatformError::Rejected {
                        problem: Some(problem),
                        ..
                    }) if problem.kind() == Some(ProblemType::DuplicateReference)
                        && problem.case_id.is_some() =>
                    {
                        problem.case_id.clone().unwrap_or_default()
                    }
                    Err(error) => return Err(from_platform(error)),
                };
                self.store
                    .link_platform_case(ticket.id, &case_id)
                    .await
                    .map_err(|e| retryable(format!("recording the case link failed: {e}")))
            }
            PushKind::AcknowledgeReceipt => {
                let case_id = self.case_id(entry).await?;
                self.client
                    .acknowledge_receipt(&key, &case_id, &receipt_for(ticket))
                    .await
                    .map(drop)
                    .map_err(from_platform)
            }
            PushKind::PublicReply => {
                let case_id = self.case_id(entry).await?;
                let text = entry.event.record.note.as_deref().unwrap_or_default();
                self.client
                    .add_reply(
                        &key,
                        &case_id,
                        None,
                        &new_reply(text, entry.event.occur_time),
                    )
                    .await
                    .map(drop)
                    .map_err(from_platform)
            }
            PushKind::UpdateStatus | PushKind::Transfer => {
                let case_id = self.case_id(entry).await?;
                let update =
                    case_update_from_ticket(ticket, &self.mapping).map_err(from_conversion)?;
                let current = self
                    .client
                    .get_case(&case_id)
                    .await
                    .map_err(from_platform)?;
                self.client
                    .update_case(&key, &case_id, current.version, &update)
                    .await
                    .map(drop)
                    .map_err(from_platform)
            }
            PushKind::Resolve => {
                let case_id = self.case_id(entry).await?;
                let resolution =
                    new_resolution_from_ticket(ticket, &self.mapping).map_err(from_conversion)?;
                let current = self
                    .client
                    .get_case(&case_id)
                    .await
                    .map_err(from_platform)?;
                self.client
                    .resolve_case(&key, &case_id, current.version, &resolution)
                    .await
                    .map(drop)
                    .map_err(from_platform)
            }
        }
    }
}
