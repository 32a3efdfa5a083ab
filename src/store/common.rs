//! What every store implementation shares: encoding of stored JSON, the search document, the
//! version check, and the shape of a newly created ticket.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{InboundOutcome, StoreError};
use crate::domain::ticket::{Assignment, NewTicket, Priority, Status, SupportLine, Ticket};
use crate::domain::values::{Code, ReferenceNumber, TicketId};
use crate::domain::{FieldViolation, Timestamp};

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("encoding: {e}")))
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn unknown(field: &str, description: &str) -> StoreError {
    StoreError::UnknownReference(FieldViolation::new(field, description))
}

/// The normalised text a ticket is found by: reference, subject and description.
pub(super) fn search_document(ticket: &Ticket) -> String {
    crate::domain::text::index_terms(&format!(
        "{} {} {}",
        ticket.reference, ticket.subject, ticket.description
    ))
}

pub(super) fn check_version(ticket: &Ticket, expected: Option<i64>) -> Result<(), StoreError> {
    match expected {
        Some(version) if version != ticket.version => Err(StoreError::EtagMismatch {
            current_version: ticket.version,
        }),
        _ => Ok(()),
    }
}

/// A new ticket as it is first stored: NEW, routed to its category's directorate at the first
/// support line, version 1.
pub(super) fn new_ticket(
    new: NewTicket,
    reference: ReferenceNumber,
    directorate: Code,
    default_priority: Priority,
    now: Timestamp,
) -> Ticket {
    Ticket {
        id: TicketId::new_v7(),
        reference,
        ticket_type: new.ticket_type,
        channel: new.channel,
        category: new.category,
        priority: new.priority.unwrap_or(default_priority),
        status: Status::New,
        subject: new.subject,
        description: new.description,
        reporter: new.reporter,
        location: new.location,
        attachments: new.attachments,
        assignment: Assignment {
            directorate: Some(directorate),
            outlet: None,
            assignee: None,
            support_line: Some(SupportLine::First),
        },
        resolution: None,
        transferred_to: None,
        duplicate_of: None,
        status_reason: None,
        create_time: now,
        update_time: now,
        resolve_time: None,
        close_time: None,
        satisfaction: None,
        escalation_level: 0,
        escalated_to_director_general: false,
        version: 1,
    }
}

/// The reference number for counter value `number` in `year`.
pub(super) fn reference(year: i32, number: i64) -> Result<ReferenceNumber, StoreError> {
    u32::try_from(number)
        .ok()
        .and_then(|n| ReferenceNumber::new(year, n))
        .ok_or_else(|| StoreError::Corrupt(format!("reference counter {year}/{number}")))
}

/// Binds a ticket's projected columns, in this order: ticket_type, channel, category,
/// priority, status, directorate, outlet, wilayat, assignee, support_line (as `$line`, the
/// backend's integer type). Insert and update write the same projection from one place, so
/// the columns can never disagree with the body.
macro_rules! bind_projection {
    ($query:expr, $ticket:expr, $line:ty) => {
        $query
            .bind($ticket.ticket_type.as_str())
            .bind($ticket.channel.as_str())
            .bind($ticket.category.as_str())
            .bind($ticket.priority.as_str())
            .bind($ticket.status.as_str())
            .bind($ticket.assignment.directorate.as_ref().map(Code::as_str))
            .bind($ticket.assignment.outlet.as_ref().map(Code::as_str))
            .bind($ticket.location.wilayat.as_ref().map(Code::as_str))
            .bind($ticket.assignment.assignee.as_ref().map(|a| a.as_str()))
            .bind(
                $ticket
                    .assignment
                    .support_line
                    .map(|l| <$line>::from(l.number())),
            )
    };
}

pub(super) use bind_projection;

/// What the inbox keeps of an outcome besides its name: the ticket and the reason.
pub(super) fn inbound_record_fields(
    outcome: &InboundOutcome,
) -> (Option<TicketId>, Option<String>) {
    match outcome {
        InboundOutcome::Created {
            ticket_id,
            reference,
        } => (Some(*ticket_id), Some(reference.to_string())),
        InboundOutcome::Applied { ticket_id } => (Some(*ticket_id), None),
        InboundOutcome::AppliedFallback { ticket_id, refused } => {
            (Some(*ticket_id), Some(refused.clone()))
        }
        InboundOutcome::Refused { reason } => (None, Some(reason.clone())),
        InboundOutcome::Nothing
        | InboundOutcome::Duplicate
        | InboundOutcome::Stale
        | InboundOutcome::UnknownCase => (None, None),
    }
}

/// An SLA projection row from its stored columns (both backends keep the same ones).
pub(crate) fn sla_row(
    ticket_id: &str,
    reference: &str,
    directorate: Option<String>,
    next_alert_time: Option<i64>,
    next_due_time: Option<i64>,
    next_due_kind: Option<String>,
) -> Result<super::SlaRow, StoreError> {
    let corrupt =
        |what: &str, v: String| StoreError::Corrupt(format!("sla projection {what}: {v}"));
    Ok(super::SlaRow {
        ticket_id: TicketId::parse("ticket_id", ticket_id)
            .map_err(|v| corrupt("ticket id", v.to_string()))?,
        reference: ReferenceNumber::parse("reference", reference)
            .map_err(|v| corrupt("reference", v.to_string()))?,
        directorate: directorate
            .map(|d| Code::parse("directorate", &d))
            .transpose()
            .map_err(|v| corrupt("directorate", v.to_string()))?,
        next_alert_time: next_alert_time.map(Timestamp::from_micros),
        next_due_time: next_due_time.map(Timestamp::from_micros),
        next_due_kind: next_due_kind
            .map(|k| {
                crate::domain::sla::DeadlineKind::from_str_opt(&k)
                    .ok_or_else(|| corrupt("deadline kind", k))
            })
            .transpose()?,
    })
}
