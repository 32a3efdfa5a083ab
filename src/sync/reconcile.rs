//! The reconcile sweep: compares the national platform's cases with the registry and repairs
//! drift, reporting every repair.
//!
//! The platform has no "list cases" call; its change feed, read from its start, carries every
//! case it keeps with its latest state (each change holds the case as it stood). The sweep
//! reads it all, keeps each case's newest version, and then:
//! - a case a citizen filed that has no local ticket is taken in, by the same rules as the
//!   pull (so a case seen by the pull meanwhile is not taken in twice);
//! - a linked case whose status differs from what the local ticket's status maps to, while
//!   nothing for that ticket is still queued for the platform, gets the ticket's state pushed
//!   again (a fresh outbox entry: the municipality owns the status);
//! - a case the municipality shared that has no local link is reported (the push of its
//!   creation links it when it is retried, or an operator looks at it).
//!
//! The sweep never moves the pull cursor and never deletes anything.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::sync::PushKind;
use crate::domain::ticket::Status;
use crate::platform::client::PlatformClient;
use crate::platform::contract::{Case, CaseSource};
use crate::platform::convert::new_ticket_from_case;
use crate::platform::mapping::Mapping;
use crate::store::{InboundChange, InboundOutcome, Store};

use super::pull::{PULL_ACTOR, PullError};

/// What a sweep found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Cases on the platform (their newest versions in the feed).
    pub cases: u64,
    /// Cases whose local ticket agrees with them.
    pub in_sync: u64,
    /// Citizens' cases taken in as new tickets.
    pub taken_in: u64,
    /// Tickets whose state was queued for the platform again.
    pub repushed: u64,
    /// Differences left alone because pushes for the ticket are still queued (they will
    /// settle it) or dead (an operator re-drives them).
    pub awaiting_queue: u64,
    /// Cases the municipality shared that no local ticket is linked to.
    pub unlinked: u64,
    /// Cases that cannot be taken in (logged with the reason).
    pub refused: u64,
}

impl ReconcileReport {
    pub fn repairs(&self) -> u64 {
        self.taken_in + self.repushed
    }
}

/// Runs one sweep.
pub async fn reconcile(
    client: &PlatformClient,
    mapping: &Mapping,
    store: &Arc<dyn Store>,
) -> Result<ReconcileReport, PullError> {
    let cases = platform_cases(client).await?;
    let mut report = ReconcileReport {
        cases: cases.len() as u64,
        ..ReconcileReport::default()
    };
    let mut take_in = Vec::new();
    for case in cases.values() {
        match store.ticket_for_case(&case.case_id).await? {
            None => match case.source {
                CaseSource::Citizen => take_in.push(case_change(case, mapping)),
                CaseSource::Entity => {
                    report.unlinked += 1;
                    tracing::warn!(
                        case_id = %case.case_id,
                        entity_reference = case.entity_reference.as_deref().unwrap_or(""),
                        "reconcile: a case the municipality shared is linked to no local ticket"
                    );
                }
            },
            Some(ticket_id) => {
                let Some(ticket) = store.get_ticket(ticket_id).await? else {
                    continue;
                };
                let expected = mapping.status_to_platform(ticket.status).ok();
                if expected == Some(case.status.as_str()) {
                    report.in_sync += 1;
                    continue;
                }
                // The feed's copy may predate a push delivered since: look at the case as it
                // stands now before calling it drift.
                let current = client.get_case(&case.case_id).await?;
                if expected == Some(current.status.as_str()) {
                    report.in_sync += 1;
                    continue;
                }
                let kind = match ticket.status {
                    Status::Resolved => PushKind::Resolve,
                    Status::Transferred => PushKind::Transfer,
                    _ => PushKind::UpdateStatus,
                };
                match store.enqueue_repair_push(ticket_id, kind).await? {
                    Some(_) => {
                        report.repushed += 1;
                        tracing::warn!(
                            reference = %ticket.reference,
                            case_id = %case.case_id,
                            platform_status = %current.status,
                            local_status = ticket.status.as_str(),
                            "reconcile repair: the ticket's state is pushed to the platform again"
                        );
                    }
                    None => report.awaiting_queue += 1,
                }
            }
        }
    }
    if !take_in.is_empty() {
        let outcomes = store
            .apply_platform_changes(PULL_ACTOR, take_in.clone(), None)
            .await?;
        for (change, outcome) in take_in.iter().zip(outcomes) {
            match outcome {
                InboundOutcome::Created { reference, .. } => {
                    report.taken_in += 1;
                    tracing::warn!(
                        case_id = %change.case_id,
                        reference = %reference,
                        "reconcile repair: a case filed on the platform was missing locally and is taken in"
                    );
                }
                InboundOutcome::Refused { reason } => {
                    report.refused += 1;
                    tracing::warn!(case_id = %change.case_id, reason = %reason, "reconcile: a case cannot be taken in");
                }
                _ => report.in_sync += 1,
            }
        }
    }
    tracing::info!(
        cases = report.cases,
        in_sync = report.in_sync,
        taken_in = report.taken_in,
        repushed = report.repushed,
        awaiting_queue = report.awaiting_queue,
        unlinked = report.unlinked,
        refused = report.refused,
        "reconcile sweep done"
    );
    Ok(report)
}

/// Every case in the feed, at its newest version.
async fn platform_cases(client: &PlatformClient) -> Result<HashMap<String, Case>, PullError> {
    let mut cases: HashMap<String, Case> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.changes(after.as_deref(), 1000).await?;
        for change in page.changes {
            let newer = cases
                .get(&change.case_id)
                .is_none_or(|known| known.version < change.case.version);
            if newer {
                cases.insert(change.case_id.clone(), change.case);
            }
        }
        if !page.has_more || page.next_cursor.is_none() || page.next_cursor == after {
            return Ok(cases);
        }
        after = page.next_cursor;
    }
}

/// A citizen's case as a change that takes it in (and does nothing else).
fn case_change(case: &Case, mapping: &Mapping) -> InboundChange {
    let (new_ticket, problem) = match new_ticket_from_case(case, mapping) {
        Ok(inbound) => (Some(inbound.ticket), None),
        Err(error) => (None, Some(error.to_string())),
    };
    InboundChange {
        // Not a change id of the feed: the sweep's own, once per case version.
        change_id: format!("reconcile:{}:{}", case.case_id, case.version),
        case_id: case.case_id.clone(),
        case_version: case.version,
        new_ticket,
        action: None,
        fallback: None,
        problem,
    }
}
