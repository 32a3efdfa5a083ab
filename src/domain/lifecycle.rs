//! The ticket lifecycle as a state machine, and the events each move records.
//!
//! Architecture invariant: this module is pure. It takes a ticket and an action and returns
//! the changed ticket and the event to append, or says why the move makes no sense. The store
//! runs it inside the transaction that writes both, so a change and its event never part.

use serde::{Deserialize, Serialize};

use super::sla::{AlertStage, EscalationTarget, SlaAlert};
use super::ticket::{
    Assignment, Location, Reporter, Resolution, Satisfaction, Status, Ticket, TicketPatch,
    Visibility, check_ticket_rules,
};
use super::values::{Attachment, TicketId};
use super::{FieldViolation, Timestamp};

/// A move of a ticket through its lifecycle, or a comment on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Assign {
        assignment: Assignment,
        note: Option<String>,
    },
    StartWork {
        note: Option<String>,
    },
    WaitOnBeneficiary {
        reason: String,
    },
    Resolve {
        resolution: Resolution,
    },
    Close {
        note: Option<String>,
    },
    Reopen {
        reason: String,
    },
    Reject {
        reason: String,
    },
    Transfer {
        entity: String,
        reason: Option<String>,
    },
    Merge {
        duplicate_of: TicketId,
    },
    Comment {
        text: String,
        visibility: Visibility,
    },
    /// The beneficiary's satisfaction with a resolved ticket (from the national platform or a
    /// contact-centre call-back). A later rating replaces the earlier one on the ticket; the
    /// audit trail keeps both.
    Rate {
        satisfaction: Satisfaction,
    },
    /// The SLA scheduler records a warning or a breach of a deadline; a breach may escalate
    /// the ticket at the same time. Recorded at most once per deadline and stage.
    RecordSlaAlert {
        alert: SlaAlert,
        escalate_to: Option<EscalationTarget>,
    },
    /// A person escalates the ticket, giving a reason.
    Escalate {
        to: EscalationTarget,
        reason: String,
    },
}

/// The kind of an action, without its data: what the transition table is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Assign,
    StartWork,
    WaitOnBeneficiary,
    Resolve,
    Close,
    Reopen,
    Reject,
    Transfer,
    Merge,
    Comment,
    Rate,
    SlaAlert,
    Escalate,
}

impl ActionKind {
    pub const ALL: [ActionKind; 13] = [
        ActionKind::Assign,
        ActionKind::StartWork,
        ActionKind::WaitOnBeneficiary,
        ActionKind::Resolve,
        ActionKind::Close,
        ActionKind::Reopen,
        ActionKind::Reject,
        ActionKind::Transfer,
        ActionKind::Merge,
        ActionKind::Comment,
        ActionKind::Rate,
        ActionKind::SlaAlert,
        ActionKind::Escalate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Assign => "assign",
            ActionKind::StartWork => "start_work",
            ActionKind::WaitOnBeneficiary => "wait_on_beneficiary",
            ActionKind::Resolve => "resolve",
            ActionKind::Close => "close",
            ActionKind::Reopen => "reopen",
            ActionKind::Reject => "reject",
            ActionKind::Transfer => "transfer",
            ActionKind::Merge => "merge",
            ActionKind::Comment => "comment",
            ActionKind::Rate => "rate",
            ActionKind::SlaAlert => "record_sla_alert",
            ActionKind::Escalate => "escalate",
        }
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Assign { .. } => ActionKind::Assign,
            Action::StartWork { .. } => ActionKind::StartWork,
            Action::WaitOnBeneficiary { .. } => ActionKind::WaitOnBeneficiary,
            Action::Resolve { .. } => ActionKind::Resolve,
            Action::Close { .. } => ActionKind::Close,
            Action::Reopen { .. } => ActionKind::Reopen,
            Action::Reject { .. } => ActionKind::Reject,
            Action::Transfer { .. } => ActionKind::Transfer,
            Action::Merge { .. } => ActionKind::Merge,
            Action::Comment { .. } => ActionKind::Comment,
            Action::Rate { .. } => ActionKind::Rate,
            Action::RecordSlaAlert { .. } => ActionKind::SlaAlert,
            Action::Escalate { .. } => ActionKind::Escalate,
        }
    }
}

/// The transition table: the status an action leads to from a status, or `None` when the
/// move makes no sense. A comment never changes the status, and neither does a rating, which
/// only a resolved or closed ticket takes, nor an SLA alert or an escalation, which only an
/// open ticket takes.
pub fn next_status(from: Status, action: ActionKind) -> Option<Status> {
    use ActionKind as A;
    use Status as S;
    let open = matches!(
        from,
        S::New | S::Assigned | S::InProgress | S::WaitingOnBeneficiary | S::Reopened
    );
    match action {
        A::Comment => Some(from),
        A::Rate if matches!(from, S::Resolved | S::Closed) => Some(from),
        A::SlaAlert | A::Escalate if open => Some(from),
        A::Assign if open => Some(S::Assigned),
        A::StartWork if matches!(from, S::Assigned | S::WaitingOnBeneficiary | S::Reopened) => {
            Some(S::InProgress)
        }
        A::WaitOnBeneficiary if matches!(from, S::Assigned | S::InProgress) => {
            Some(S::WaitingOnBeneficiary)
        }
        // Resolving straight from NEW is first-contact resolution by the contact centre.
        A::Resolve if open => Some(S::Resolved),
        A::Close if from == S::Resolved => Some(S::Closed),
        A::Reopen if matches!(from, S::Resolved | S::Closed) => Some(S::Reopened),
        A::Reject | A::Transfer if matches!(from, S::New | S::Assigned | S::InProgress) => {
            Some(if action == A::Reject {
                S::Rejected
            } else {
                S::Transferred
            })
        }
        A::Merge if open => Some(S::Merged),
        _ => None,
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot {} a ticket that is {}", action.as_str(), status.as_str())]
    NotAllowed { action: ActionKind, status: Status },
    #[error("a ticket that is {} can no longer be edited", status.as_str())]
    NotEditable { status: Status },
    #[error("invalid change")]
    Invalid(Vec<FieldViolation>),
}

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Updated,
    Assigned,
    StatusChanged,
    Commented,
    Rated,
    SlaWarning,
    SlaBreached,
    Escalated,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Assigned => "assigned",
            EventKind::StatusChanged => "status_changed",
            EventKind::Commented => "commented",
            EventKind::Rated => "rated",
            EventKind::SlaWarning => "sla_warning",
            EventKind::SlaBreached => "sla_breached",
            EventKind::Escalated => "escalated",
        }
    }
}

/// The content of one audit-trail entry, before the store gives it a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfaction: Option<Satisfaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_alert: Option<SlaAlert>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<EscalationTarget>,
}

impl EventRecord {
    fn new(kind: EventKind) -> Self {
        Self {
            kind,
            from_status: None,
            to_status: None,
            note: None,
            visibility: None,
            assignment: None,
            changed_fields: Vec::new(),
            satisfaction: None,
            sla_alert: None,
            escalated_to: None,
        }
    }
}

/// An entry of the append-only event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketEvent {
    /// Position in the registry-wide log. Its order is the commit order.
    pub cursor: i64,
    pub ticket_id: TicketId,
    pub actor: String,
    pub occur_time: Timestamp,
    /// The ticket's version after this event.
    pub version: i64,
    pub record: EventRecord,
}

/// The event that records a ticket's creation.
pub fn created_event(ticket: &Ticket) -> EventRecord {
    EventRecord {
        to_status: Some(ticket.status),
        assignment: Some(ticket.assignment.clone()),
        ..EventRecord::new(EventKind::Created)
    }
}

/// Applies an action to a ticket at `now`: the changed ticket and the event to append.
/// Cross-ticket checks (the original of a merge exists) are the caller's.
pub fn apply_action(
    ticket: &Ticket,
    action: Action,
    now: Timestamp,
) -> Result<(Ticket, EventRecord), LifecycleError> {
    let kind = action.kind();
    let from = ticket.status;
    let to = next_status(from, kind).ok_or(LifecycleError::NotAllowed {
        action: kind,
        status: from,
    })?;
    let mut next = ticket.clone();
    next.status = to;
    next.version += 1;
    next.update_time = now;
    let mut event = EventRecord::new(EventKind::StatusChanged);
    event.from_status = Some(from);
    event.to_status = Some(to);
    match action {
        Action::Assign { assignment, note } => {
            next.assignment = assignment.clone();
            event.kind = EventKind::Assigned;
            event.assignment = Some(assignment);
            event.note = note;
        }
        Action::StartWork { note } | Action::Close { note } => {
            if kind == ActionKind::Close {
                next.close_time = Some(now);
            }
            event.note = note;
        }
        Action::WaitOnBeneficiary { reason } | Action::Reject { reason } => {
            next.status_reason = Some(reason.clone());
            event.note = Some(reason);
        }
        Action::Resolve { resolution } => {
            event.note = Some(resolution.text.clone());
            next.resolution = Some(resolution);
            next.resolve_time = Some(now);
            next.status_reason = None;
        }
        Action::Reopen { reason } => {
            next.resolution = None;
            next.resolve_time = None;
            next.close_time = None;
            next.status_reason = Some(reason.clone());
            event.note = Some(reason);
        }
        Action::Transfer { entity, reason } => {
            next.transferred_to = Some(entity);
            next.status_reason = reason.clone();
            event.note = reason;
        }
        Action::Merge { duplicate_of } => {
            if duplicate_of == ticket.id {
                return Err(LifecycleError::Invalid(vec![FieldViolation::new(
                    "duplicate_of_ticket_id",
                    "a ticket cannot duplicate itself",
                )]));
            }
            next.duplicate_of = Some(duplicate_of);
        }
        Action::Comment { text, visibility } => {
            event = EventRecord::new(EventKind::Commented);
            event.note = Some(text);
            event.visibility = Some(visibility);
        }
        Action::Rate { satisfaction } => {
            event = EventRecord::new(EventKind::Rated);
            event.note = satisfaction.comment.clone();
            event.satisfaction = Some(satisfaction.clone());
            next.satisfaction = Some(satisfaction);
        }
        Action::RecordSlaAlert { alert, escalate_to } => {
            event = EventRecord::new(match alert.stage {
                AlertStage::Warning => EventKind::SlaWarning,
                AlertStage::Breach => EventKind::SlaBreached,
            });
            if let Some(to) = escalate_to {
                if alert.stage == AlertStage::Warning {
                    return Err(LifecycleError::Invalid(vec![FieldViolation::new(
                        "escalate_to",
                        "a warning does not escalate",
                    )]));
                }
                escalate(&mut next, &mut event, to)?;
            }
            event.sla_alert = Some(alert);
        }
        Action::Escalate { to, reason } => {
            event = EventRecord::new(EventKind::Escalated);
            escalate(&mut next, &mut event, to)?;
            event.note = Some(reason);
        }
    }
    if to != Status::WaitingOnBeneficiary
        && to != Status::Rejected
        && to != Status::Reopened
        && to != Status::Transferred
        && kind != ActionKind::Comment
        && kind != ActionKind::Rate
        && kind != ActionKind::SlaAlert
        && kind != ActionKind::Escalate
    {
        next.status_reason = None;
    }
    Ok((next, event))
}

/// Moves a ticket up to `to`: onto a higher support line (the directorate and outlet stay,
/// the assignee is left for the new line to choose) or to the director general.
fn escalate(
    next: &mut Ticket,
    event: &mut EventRecord,
    to: EscalationTarget,
) -> Result<(), LifecycleError> {
    if !to.is_above(
        next.assignment.support_line,
        next.escalated_to_director_general,
    ) {
        return Err(LifecycleError::Invalid(vec![FieldViolation::new(
            "target",
            format!("the ticket already stands at or above {}", to.as_str()),
        )]));
    }
    match to.support_line() {
        Some(line) => {
            next.assignment.support_line = Some(line);
            next.assignment.assignee = None;
            event.assignment = Some(next.assignment.clone());
        }
        None => next.escalated_to_director_general = true,
    }
    next.escalation_level += 1;
    event.escalated_to = Some(to);
    Ok(())
}

/// Applies an edit of descriptive fields. Category existence is the caller's to check.
pub fn apply_patch(
    ticket: &Ticket,
    patch: TicketPatch,
    now: Timestamp,
) -> Result<(Ticket, EventRecord), LifecycleError> {
    if ticket.status.is_final() {
        return Err(LifecycleError::NotEditable {
            status: ticket.status,
        });
    }
    let mut next = ticket.clone();
    let mut changed = Vec::new();
    fn set<T: PartialEq>(slot: &mut T, value: Option<T>, name: &str, changed: &mut Vec<String>) {
        if let Some(value) = value
            && *slot != value
        {
            *slot = value;
            changed.push(name.to_owned());
        }
    }
    set(
        &mut next.ticket_type,
        patch.ticket_type,
        "type",
        &mut changed,
    );
    set(&mut next.category, patch.category, "category", &mut changed);
    set(&mut next.priority, patch.priority, "priority", &mut changed);
    set(&mut next.subject, patch.subject, "subject", &mut changed);
    set(
        &mut next.description,
        patch.description,
        "description",
        &mut changed,
    );
    set::<Reporter>(&mut next.reporter, patch.reporter, "reporter", &mut changed);
    set::<Location>(&mut next.location, patch.location, "location", &mut changed);
    set::<Vec<Attachment>>(
        &mut next.attachments,
        patch.attachments,
        "attachments",
        &mut changed,
    );
    let violations = check_ticket_rules(next.ticket_type, Some(&next.reporter), &next.location);
    if !violations.is_empty() {
        return Err(LifecycleError::Invalid(violations));
    }
    if !changed.is_empty() {
        next.version += 1;
        next.update_time = now;
    }
    let mut event = EventRecord::new(EventKind::Updated);
    event.changed_fields = changed;
    Ok((next, event))
}

/// Erases the reporter's personal data (a data subject's request, or the retention policy):
/// allowed in every status, closed tickets included, since the ticket and its statistics
/// stay. `None` when there is nothing to erase (anonymous, or erased already).
pub fn erase_personal_data(
    current: &Ticket,
    reason: String,
    now: Timestamp,
) -> Option<(Ticket, EventRecord)> {
    if !current.reporter.has_personal_data() {
        return None;
    }
    let mut next = current.clone();
    next.reporter = Reporter::erased();
    next.version += 1;
    next.update_time = now;
    let mut event = EventRecord::new(EventKind::Updated);
    event.changed_fields = vec!["reporter".to_owned()];
    event.note = Some(reason);
    Some((next, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionKind as A;
    use Status as S;

    /// The expected table, written out by hand: for every status, the actions allowed and
    /// where they lead. Anything not listed must be refused.
    fn expected() -> Vec<(S, A, S)> {
        let mut rows = Vec::new();
        for s in S::ALL {
            rows.push((*s, A::Comment, *s));
        }
        for s in [
            S::New,
            S::Assigned,
            S::InProgress,
            S::WaitingOnBeneficiary,
            S::Reopened,
        ] {
            rows.push((s, A::Assign, S::Assigned));
            rows.push((s, A::Resolve, S::Resolved));
            rows.push((s, A::Merge, S::Merged));
            rows.push((s, A::SlaAlert, s));
            rows.push((s, A::Escalate, s));
        }
        for s in [S::Assigned, S::WaitingOnBeneficiary, S::Reopened] {
            rows.push((s, A::StartWork, S::InProgress));
        }
        for s in [S::Assigned, S::InProgress] {
            rows.push((s, A::WaitOnBeneficiary, S::WaitingOnBeneficiary));
        }
        for s in [S::New, S::Assigned, S::InProgress] {
            rows.push((s, A::Reject, S::Rejected));
            rows.push((s, A::Transfer, S::Transferred));
        }
        rows.push((S::Resolved, A::Close, S::Closed));
        rows.push((S::Resolved, A::Reopen, S::Reopened));
        rows.push((S::Closed, A::Reopen, S::Reopened));
        rows.push((S::Resolved, A::Rate, S::Resolved));
        rows.push((S::Closed, A::Rate, S::Closed));
        rows
    }

    #[test]
    fn every_status_against_every_action() {
        let expected = expected();
        let mut n_allowed = 0;
        for from in S::ALL {
            for action in ActionKind::ALL {
                let want = expected
                    .iter()
                    .find(|(s, a, _)| s == from && *a == action)
                    .map(|(_, _, to)| *to);
                assert_eq!(next_status(*from, action), want, "{from:?} + {action:?}");
                n_allowed += usize::from(want.is_some());
            }
        }
        assert_eq!(n_allowed, expected.len());
        assert_eq!(S::ALL.len() * ActionKind::ALL.len(), 130);
    }

    #[test]
    fn the_moves_the_issue_names_are_refused() {
        assert_eq!(next_status(S::Closed, A::Resolve), None);
        assert_eq!(next_status(S::Rejected, A::Reopen), None);
        assert_eq!(next_status(S::Merged, A::Assign), None);
        assert_eq!(next_status(S::Transferred, A::StartWork), None);
    }
}
