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

/// A write of a group commit: where its answer goes, and its outcome if the batch commits.
pub(super) type Answer<T> = (
    tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    Result<T, StoreError>,
);

/// Sends each write of a group commit its answer: its own outcome when the batch committed,
/// its own failure or `CommitFailed` when not. True when it committed.
pub(super) fn answer_batch<T, E: std::fmt::Display>(
    answers: Vec<Answer<T>>,
    committed: Result<(), E>,
) -> bool {
    match committed {
        Ok(()) => {
            for (reply, outcome) in answers {
                let _ = reply.send(outcome);
            }
            true
        }
        Err(error) => {
            tracing::error!(error = %error, n_writes = answers.len(), "group commit failed");
            for (reply, outcome) in answers {
                let _ = reply.send(outcome.and(Err(StoreError::CommitFailed)));
            }
            false
        }
    }
}

pub(super) fn unknown(field: &str, description: &str) -> StoreError {
    StoreError::UnknownReference(FieldViolation::new(field, description))
}

/// The normalised text a ticket is found by: reference, subject and description.
pub(crate) fn search_document(ticket: &Ticket) -> String {
    SearchTerms::of(&ticket.subject, &ticket.description).document(&ticket.reference)
}

/// The search terms of a ticket's subject and description. A new ticket's are prepared by the
/// caller, off the single writer, which alone knows the reference number
/// ([`SearchTerms::document`] adds it).
pub(super) struct SearchTerms(String);

impl SearchTerms {
    pub(super) fn of(subject: &str, description: &str) -> Self {
        Self(crate::domain::text::index_terms(&format!(
            "{subject} {description}"
        )))
    }

    /// The whole search document: the reference's terms, then these. The same text as the
    /// terms of "reference subject description" taken together: a reference has no Arabic
    /// article to add a second form of, and normalising joins the two with one space.
    pub(super) fn document(&self, reference: &ReferenceNumber) -> String {
        let reference = crate::domain::text::normalize_for_search(&reference.to_string());
        // What makes the two texts equal: one ASCII word, so no article to expand.
        debug_assert!(!reference.is_empty() && reference.is_ascii() && !reference.contains(' '));
        if self.0.is_empty() {
            reference
        } else {
            format!("{reference} {}", self.0)
        }
    }
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
/// support line, version 1, filed by `created_by` (the writing actor).
pub(super) fn new_ticket(
    new: NewTicket,
    reference: ReferenceNumber,
    directorate: Code,
    default_priority: Priority,
    now: Timestamp,
    created_by: &str,
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
        created_by: Some(created_by.to_owned()),
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

/// The stored columns of a `ticket_facts` row, as both backends read them (flags as
/// booleans, whatever the backend keeps them as).
pub(crate) struct FactsColumns<S = String> {
    pub ticket_id: S,
    pub create_time: i64,
    pub ticket_type: S,
    pub channel: S,
    pub category: S,
    pub directorate: Option<S>,
    pub outlet: Option<S>,
    pub wilayat: Option<S>,
    pub support_line: Option<i64>,
    pub assignee: Option<S>,
    pub status: S,
    pub first_response_seconds: Option<i64>,
    pub resolution_seconds: Option<i64>,
    pub first_response_met: Option<bool>,
    pub resolution_met: Option<bool>,
    pub n_escalations: i64,
    pub reopened: bool,
    pub transferred: bool,
    pub rejected: bool,
    pub resolved_at_line_1: bool,
    pub satisfaction_score: Option<i64>,
    pub resolve_time: Option<i64>,
    pub settle_time: Option<i64>,
}

impl FactsColumns {
    /// The columns of `facts`, to bind.
    pub(crate) fn of(facts: &crate::domain::kpi::TicketFacts) -> Self {
        let code = |c: &Option<Code>| c.as_ref().map(|c| c.as_str().to_owned());
        FactsColumns {
            ticket_id: facts.ticket_id.to_string(),
            create_time: facts.create_time.as_micros(),
            ticket_type: facts.ticket_type.as_str().to_owned(),
            channel: facts.channel.as_str().to_owned(),
            category: facts.category.as_str().to_owned(),
            directorate: code(&facts.directorate),
            outlet: code(&facts.outlet),
            wilayat: code(&facts.wilayat),
            support_line: facts.support_line.map(|l| i64::from(l.number())),
            assignee: facts.assignee.as_ref().map(|a| a.as_str().to_owned()),
            status: facts.status.as_str().to_owned(),
            first_response_seconds: facts.first_response_seconds,
            resolution_seconds: facts.resolution_seconds,
            first_response_met: facts.first_response_met,
            resolution_met: facts.resolution_met,
            n_escalations: i64::from(facts.n_escalations),
            reopened: facts.reopened,
            transferred: facts.transferred,
            rejected: facts.rejected,
            resolved_at_line_1: facts.resolved_at_line_1,
            satisfaction_score: facts.satisfaction_score.map(i64::from),
            resolve_time: facts.resolve_time.map(Timestamp::as_micros),
            settle_time: facts.settle_time.map(Timestamp::as_micros),
        }
    }
}

fn corrupt_facts(what: &str, v: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("ticket facts {what}: {v}"))
}

impl<S: AsRef<str>> FactsColumns<S> {
    /// The facts these columns hold; stored values that do not parse are corrupt data.
    pub(crate) fn into_facts(self) -> Result<crate::domain::kpi::TicketFacts, StoreError> {
        use crate::domain::values::EmployeeId;
        let code = |what: &str, c: &Option<S>| {
            c.as_ref()
                .map(|c| Code::parse(what, c.as_ref()).map_err(|v| corrupt_facts(what, &v)))
                .transpose()
        };
        let view = self.view()?;
        Ok(crate::domain::kpi::TicketFacts {
            ticket_id: TicketId::parse("ticket_id", self.ticket_id.as_ref())
                .map_err(|v| corrupt_facts("ticket id", &v))?,
            create_time: view.create_time,
            ticket_type: view.ticket_type,
            channel: view.channel,
            category: Code::parse("category", view.category)
                .map_err(|v| corrupt_facts("category", &v))?,
            directorate: code("directorate", &self.directorate)?,
            outlet: code("outlet", &self.outlet)?,
            wilayat: code("wilayat", &self.wilayat)?,
            support_line: view.support_line,
            assignee: view
                .assignee
                .map(|a| {
                    EmployeeId::parse("assignee", a).map_err(|v| corrupt_facts("assignee", &v))
                })
                .transpose()?,
            status: Status::from_str_opt(self.status.as_ref())
                .ok_or_else(|| corrupt_facts("status", &self.status.as_ref()))?,
            first_response_seconds: view.first_response_seconds,
            resolution_seconds: view.resolution_seconds,
            first_response_met: view.first_response_met,
            resolution_met: view.resolution_met,
            n_escalations: view.n_escalations,
            reopened: view.reopened,
            transferred: view.transferred,
            rejected: view.rejected,
            resolved_at_line_1: view.resolved_at_line_1,
            satisfaction_score: view.satisfaction_score,
            resolve_time: view.resolve_time,
            settle_time: view.settle_time,
        })
    }

    /// What the KPI counts read of these columns, borrowed: the codes are taken as stored
    /// (they were checked when written), the enums and numbers are checked.
    pub(crate) fn view(&self) -> Result<crate::domain::kpi::FactsView<'_>, StoreError> {
        use crate::domain::ticket::{Channel, TicketType};
        fn text<S: AsRef<str>>(c: &Option<S>) -> Option<&str> {
            c.as_ref().map(AsRef::as_ref)
        }
        Ok(crate::domain::kpi::FactsView {
            create_time: Timestamp::from_micros(self.create_time),
            ticket_type: TicketType::from_str_opt(self.ticket_type.as_ref())
                .ok_or_else(|| corrupt_facts("type", &self.ticket_type.as_ref()))?,
            channel: Channel::from_str_opt(self.channel.as_ref())
                .ok_or_else(|| corrupt_facts("channel", &self.channel.as_ref()))?,
            category: self.category.as_ref(),
            directorate: text(&self.directorate),
            outlet: text(&self.outlet),
            wilayat: text(&self.wilayat),
            support_line: self
                .support_line
                .map(|n| {
                    u8::try_from(n)
                        .map_err(|e| corrupt_facts("support line", &e))
                        .and_then(|n| {
                            SupportLine::try_from(n).map_err(|e| corrupt_facts("support line", &e))
                        })
                })
                .transpose()?,
            assignee: text(&self.assignee),
            first_response_seconds: self.first_response_seconds,
            resolution_seconds: self.resolution_seconds,
            first_response_met: self.first_response_met,
            resolution_met: self.resolution_met,
            n_escalations: u32::try_from(self.n_escalations)
                .map_err(|e| corrupt_facts("escalations", &e))?,
            reopened: self.reopened,
            transferred: self.transferred,
            rejected: self.rejected,
            resolved_at_line_1: self.resolved_at_line_1,
            satisfaction_score: self
                .satisfaction_score
                .map(|s| u8::try_from(s).map_err(|e| corrupt_facts("satisfaction", &e)))
                .transpose()?,
            resolve_time: self.resolve_time.map(Timestamp::from_micros),
            settle_time: self.settle_time.map(Timestamp::from_micros),
        })
    }
}

/// The refusal of a review of an employee who never handled the ticket.
pub(super) fn not_a_handler() -> FieldViolation {
    FieldViolation::new(
        "employee_id",
        "did not handle this ticket: neither its assignee nor an assignee in its history",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document made from prepared terms is, to the byte, the terms of "reference subject
    /// description" taken together, as every ticket indexed so far was indexed.
    #[test]
    fn prepared_search_terms_make_the_same_document_as_the_whole_text() {
        let texts = [
            ("", ""),
            ("إنارة معطلة في الشارع", ""),
            ("", "أمام المدرسة، قرب الحديقة"),
            ("  ...حفرة!! ", " -- والحديقة للأطفال ٣٤ "),
            (
                "Pothole on Sultan Qaboos St.",
                "Near exit 12\u{200B}, since ١٢/٥",
            ),
            ("-", "-"),
            ("ـــ", "\u{064B}\u{0650}"),
        ];
        for (year, number) in [(2026, 1), (2027, 123_456)] {
            let reference = ReferenceNumber::new(year, number).expect("a reference number");
            for (subject, description) in texts {
                let whole = crate::domain::text::index_terms(&format!(
                    "{reference} {subject} {description}"
                ));
                assert_eq!(
                    SearchTerms::of(subject, description).document(&reference),
                    whole,
                    "{subject:?} / {description:?}"
                );
            }
        }
    }
}
