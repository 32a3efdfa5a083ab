//! Which tickets a caller follows: the filter of WatchTickets (and the core of ListTickets).

use super::ticket::{Status, SupportLine, Ticket, TicketType};
use super::values::{Code, EmployeeId};

/// Empty lists do not filter; values of one list combine with OR, lists with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketFilter {
    pub directorates: Vec<Code>,
    pub outlets: Vec<Code>,
    pub categories: Vec<Code>,
    pub types: Vec<TicketType>,
    pub statuses: Vec<Status>,
    pub wilayats: Vec<Code>,
    pub assignees: Vec<EmployeeId>,
    pub support_lines: Vec<SupportLine>,
    /// The callers that filed the ticket. Not offered to clients: the scope of an external
    /// system sets it (see `auth::TicketScope`).
    pub creators: Vec<String>,
}

fn any_of<T: PartialEq>(allowed: &[T], value: Option<&T>) -> bool {
    allowed.is_empty() || value.is_some_and(|v| allowed.contains(v))
}

impl TicketFilter {
    /// Whether the ticket, as it stands, is one the filter follows.
    pub fn matches(&self, ticket: &Ticket) -> bool {
        let a = &ticket.assignment;
        any_of(&self.directorates, a.directorate.as_ref())
            && any_of(&self.outlets, a.outlet.as_ref())
            && any_of(&self.categories, Some(&ticket.category))
            && any_of(&self.types, Some(&ticket.ticket_type))
            && any_of(&self.statuses, Some(&ticket.status))
            && any_of(&self.wilayats, ticket.location.wilayat.as_ref())
            && any_of(&self.assignees, a.assignee.as_ref())
            && any_of(&self.support_lines, a.support_line.as_ref())
            && any_of(&self.creators, ticket.created_by.as_ref())
    }
}
