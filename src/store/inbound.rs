//! Taking in the national platform's change feed: the rules every backend follows, written
//! once. A backend supplies the few statements ([`InboundTx`]); this module decides.
//!
//! Invariants (inside the one transaction that also moves the pull cursor):
//! - A change id is applied at most once: the feed delivers at least once.
//! - A change no newer than the case's last applied version is skipped, so an old change
//!   never overwrites a newer state (no regression of status).
//! - A case filed by a citizen becomes exactly one local ticket: the link case → ticket is
//!   unique and written with the ticket.
//! - A change the registry refuses (an unknown category, a move the lifecycle forbids with no
//!   fallback) is recorded as refused and rolled back alone: the page is applied again with
//!   a savepoint per change when one is refused ([`apply_changes`]).
//! - A citizen's rating counts as asked by the platform: the survey ledger records it in the
//!   change's transaction, also when the ticket no longer takes a rating and the rating is kept
//!   as a comment instead (the citizen was asked all the same).

use async_trait::async_trait;

use super::{InboundChange, InboundOutcome, StoreError};
use crate::domain::lifecycle::{Action, LifecycleError};
use crate::domain::satisfaction::{SurveyChannel, SurveyOutcome};
use crate::domain::ticket::{NewTicket, Ticket};
use crate::domain::values::TicketId;

/// The statements the rules need, run inside the backend's writing transaction.
#[async_trait]
pub(super) trait InboundTx: Send {
    /// Runs a statement without parameters (the savepoint commands, which both backends
    /// spell alike).
    async fn execute(&mut self, sql: &'static str) -> Result<(), StoreError>;

    /// Whether this change id was taken in before.
    async fn seen(&mut self, change_id: &str) -> Result<bool, StoreError>;

    /// The ticket linked to the case and the case version last applied to it.
    async fn case_link(&mut self, case_id: &str) -> Result<Option<(TicketId, i64)>, StoreError>;

    async fn set_pulled_version(&mut self, case_id: &str, version: i64) -> Result<(), StoreError>;

    /// Creates the ticket (with its event and outbox entry, as any creation) and links the
    /// case to it at `version`.
    async fn take_in(
        &mut self,
        case_id: &str,
        version: i64,
        new: NewTicket,
    ) -> Result<Ticket, StoreError>;

    /// Applies a lifecycle action to the ticket, as any other action; the ticket after it.
    async fn act(&mut self, ticket_id: TicketId, action: Action) -> Result<Ticket, StoreError>;

    /// Records in the survey ledger that the ticket's beneficiary was asked, at the
    /// transaction's time.
    async fn record_survey_request(
        &mut self,
        ticket: &Ticket,
        channel: SurveyChannel,
        outcome: SurveyOutcome,
    ) -> Result<(), StoreError>;

    /// Records what became of a change.
    async fn record(
        &mut self,
        change: &InboundChange,
        outcome: &InboundOutcome,
    ) -> Result<(), StoreError>;
}

/// Applies a page of changes in order; the caller moves the cursor in the same transaction.
///
/// The page is first applied in one savepoint, without one per change: a savepoint per
/// change costs two statements each (two round trips on PostgreSQL), and on SQLite releasing
/// a savepoint nested in another walks the whole in-memory sub-journal, which made a page of
/// 1,000 changes quadratic. Refusals are rare; when one comes, the page is rolled back and
/// applied again with a savepoint per change, so the refused change is rolled back alone and
/// the others are applied exactly as they would have been.
pub(super) async fn apply_changes<T: InboundTx + ?Sized>(
    tx: &mut T,
    changes: &[InboundChange],
) -> Result<Vec<InboundOutcome>, StoreError> {
    tx.execute("SAVEPOINT inbound_page").await?;
    if let Some(outcomes) = apply_in_order(tx, changes, false).await? {
        tx.execute("RELEASE SAVEPOINT inbound_page").await?;
        return Ok(outcomes);
    }
    tx.execute("ROLLBACK TO SAVEPOINT inbound_page").await?;
    tx.execute("RELEASE SAVEPOINT inbound_page").await?;
    let outcomes = apply_in_order(tx, changes, true).await?;
    Ok(outcomes.unwrap_or_default())
}

/// Applies the changes in order and records each. With `savepoint_each`, every change runs in
/// its own savepoint and a refused one is rolled back and recorded as refused, alone (always
/// `Some`). Without, the first refusal ends the run with `None`: its writes so far are in the
/// page's savepoint, which the caller rolls back.
async fn apply_in_order<T: InboundTx + ?Sized>(
    tx: &mut T,
    changes: &[InboundChange],
    savepoint_each: bool,
) -> Result<Option<Vec<InboundOutcome>>, StoreError> {
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        if savepoint_each {
            tx.execute("SAVEPOINT inbound_change").await?;
        }
        let outcome = match apply_one(tx, change).await {
            Ok(outcome) => {
                if savepoint_each {
                    tx.execute("RELEASE SAVEPOINT inbound_change").await?;
                }
                outcome
            }
            Err(error) if is_refusal(&error) && savepoint_each => {
                tx.execute("ROLLBACK TO SAVEPOINT inbound_change").await?;
                tx.execute("RELEASE SAVEPOINT inbound_change").await?;
                InboundOutcome::Refused {
                    reason: error.to_string(),
                }
            }
            Err(error) if is_refusal(&error) => return Ok(None),
            Err(error) => return Err(error),
        };
        if outcome != InboundOutcome::Duplicate {
            tx.record(change, &outcome).await?;
        }
        outcomes.push(outcome);
    }
    Ok(Some(outcomes))
}

/// Errors that concern the change itself, not the database: recorded, never retried.
fn is_refusal(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::UnknownReference(_) | StoreError::Lifecycle(_) | StoreError::TicketNotFound
    )
}

async fn apply_one<T: InboundTx + ?Sized>(
    tx: &mut T,
    change: &InboundChange,
) -> Result<InboundOutcome, StoreError> {
    if tx.seen(&change.change_id).await? {
        return Ok(InboundOutcome::Duplicate);
    }
    let (ticket_id, created) = match tx.case_link(&change.case_id).await? {
        Some((_, pulled)) if change.case_version <= pulled => return Ok(InboundOutcome::Stale),
        Some((ticket_id, _)) => {
            tx.set_pulled_version(&change.case_id, change.case_version)
                .await?;
            (ticket_id, None)
        }
        None => match (&change.new_ticket, &change.problem) {
            (Some(new), _) => {
                let ticket = tx
                    .take_in(&change.case_id, change.case_version, new.clone())
                    .await?;
                (
                    ticket.id,
                    Some(InboundOutcome::Created {
                        ticket_id: ticket.id,
                        reference: ticket.reference,
                    }),
                )
            }
            (None, Some(reason)) => {
                return Ok(InboundOutcome::Refused {
                    reason: reason.clone(),
                });
            }
            (None, None) => return Ok(InboundOutcome::UnknownCase),
        },
    };
    if let (None, Some(reason), None) = (&change.action, &change.problem, &created) {
        return Ok(InboundOutcome::Refused {
            reason: reason.clone(),
        });
    }
    let acted = match &change.action {
        None => InboundOutcome::Nothing,
        Some(action) => {
            let (acted, ticket) = match tx.act(ticket_id, action.clone()).await {
                Ok(ticket) => (InboundOutcome::Applied { ticket_id }, Some(ticket)),
                Err(StoreError::Lifecycle(refused @ LifecycleError::NotAllowed { .. })) => {
                    match &change.fallback {
                        Some(fallback) => {
                            let ticket = tx.act(ticket_id, fallback.clone()).await?;
                            let acted = InboundOutcome::AppliedFallback {
                                ticket_id,
                                refused: refused.to_string(),
                            };
                            (acted, Some(ticket))
                        }
                        None => {
                            let acted = InboundOutcome::Refused {
                                reason: refused.to_string(),
                            };
                            (acted, None)
                        }
                    }
                }
                Err(other) => return Err(other),
            };
            if let (Action::Rate { .. }, Some(ticket)) = (action, ticket) {
                tx.record_survey_request(
                    &ticket,
                    SurveyChannel::NationalPlatform,
                    SurveyOutcome::Rated,
                )
                .await?;
            }
            acted
        }
    };
    Ok(created.unwrap_or(acted))
}
