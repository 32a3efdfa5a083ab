//! What the registry owes the national platform: which tickets are synchronised, and which of
//! their changes become a push. The outbox stores one entry per push, in the transaction of
//! the change itself, so a committed change can never miss its push.

use serde::{Deserialize, Serialize};

use super::lifecycle::{EventKind, EventRecord};
use super::ticket::{Channel, Status, Ticket, TicketType, Visibility};

/// Which tickets go to the national platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Tickets of these types go.
    pub types: Vec<TicketType>,
    /// Tickets that came in through these channels go too, whatever their type.
    pub channels: Vec<Channel>,
}

impl Default for SyncPolicy {
    /// Complaints and suggestions, plus everything that came from the platform.
    fn default() -> Self {
        Self {
            types: vec![TicketType::Complaint, TicketType::Suggestion],
            channels: vec![Channel::NationalPlatform],
        }
    }
}

impl SyncPolicy {
    /// Nothing goes: for deployments without a platform.
    pub fn none() -> Self {
        Self {
            types: Vec::new(),
            channels: Vec::new(),
        }
    }

    pub fn applies_to(&self, ticket: &Ticket) -> bool {
        self.types.contains(&ticket.ticket_type) || self.channels.contains(&ticket.channel)
    }
}

/// The kinds of push to the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    /// File a case for a ticket the municipality received elsewhere.
    CreateCase,
    /// Acknowledge receipt of a case filed on the platform.
    AcknowledgeReceipt,
    UpdateStatus,
    PublicReply,
    Resolve,
    Transfer,
}

impl PushKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::CreateCase => "create_case",
            PushKind::AcknowledgeReceipt => "acknowledge_receipt",
            PushKind::UpdateStatus => "update_status",
            PushKind::PublicReply => "public_reply",
            PushKind::Resolve => "resolve",
            PushKind::Transfer => "transfer",
        }
    }

    pub fn from_str_opt(text: &str) -> Option<Self> {
        [
            PushKind::CreateCase,
            PushKind::AcknowledgeReceipt,
            PushKind::UpdateStatus,
            PushKind::PublicReply,
            PushKind::Resolve,
            PushKind::Transfer,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// The push a change of a synchronised ticket owes the platform, if any. Internal comments
/// and edits of descriptive fields stay in the municipality.
pub fn push_for(ticket: &Ticket, record: &EventRecord) -> Option<PushKind> {
    match record.kind {
        EventKind::Created if ticket.channel == Channel::NationalPlatform => {
            Some(PushKind::AcknowledgeReceipt)
        }
        EventKind::Created => Some(PushKind::CreateCase),
        EventKind::Commented => {
            (record.visibility == Some(Visibility::Public)).then_some(PushKind::PublicReply)
        }
        // Edits stay local; a rating came from the beneficiary, who rated it on the platform
        // or on a call-back: nothing to tell the platform.
        // SLA alerts and escalations are the municipality's internal follow-up.
        EventKind::Updated
        | EventKind::Rated
        | EventKind::SlaWarning
        | EventKind::SlaBreached
        | EventKind::Escalated => None,
        EventKind::Assigned | EventKind::StatusChanged => {
            if record.from_status == record.to_status {
                return None;
            }
            Some(match record.to_status {
                Some(Status::Resolved) => PushKind::Resolve,
                Some(Status::Transferred) => PushKind::Transfer,
                _ => PushKind::UpdateStatus,
            })
        }
    }
}

/// The state of an outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for (another) attempt; possibly leased to a worker right now.
    Pending,
    Delivered,
    /// Gave up: refused by the platform or out of attempts. Waits to be re-driven.
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Dead => "dead",
        }
    }

    pub fn from_str_opt(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(OutboxState::Pending),
            "delivered" => Some(OutboxState::Delivered),
            "dead" => Some(OutboxState::Dead),
            _ => None,
        }
    }
}
