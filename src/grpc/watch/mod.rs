//! WatchTickets: live, resumable streams of ticket changes for directorate apps.
//!
//! One [`ChangeFeed`] per process reads the event log (woken by the store after each commit,
//! with a slow poll as a safety net). It encodes each change's protobuf message **once**, keeps
//! it in a bounded ring of recent changes, and hands the same bytes to exactly the streams whose
//! filter matches. It finds them through an index of the streams by filter value
//! ([`index`]), so a change costs nothing for the streams it cannot concern, and no task runs
//! per stream while the stream keeps up: a delivery is a non-blocking push of a shared
//! [`bytes::Bytes`] into the stream's bounded buffer, which tonic copies into the HTTP/2 frame
//! ([`route`]).
//!
//! Invariants:
//! - Within a stream, changes arrive in cursor order with no gap and no duplicate. A stream is
//!   either *attached* (it has handled every change the feed has published, and receives each
//!   new one from the feed) or *catching up* (a task of its own sends what it missed, from the
//!   ring or else from the log, then attaches). It attaches under the feed's lock, and only
//!   once its position has reached what the feed published; the feed skips, for that stream,
//!   every change at or below the position it attached at.
//! - A delivery never waits. If a stream's buffer is full, the feed detaches the stream and its
//!   own task waits for room (at most `send_timeout`) and catches up. Only a client that stops
//!   reading is ended, with `RESOURCE_EXHAUSTED`; writers and other streams never wait for it.
//! - A stream never receives a change its filter does not match: the index only narrows the
//!   candidates, [`TicketFilter::matches`] decides.
//! - On shutdown every stream ends with `UNAVAILABLE`, after the messages already buffered.

mod feed;
mod index;
pub mod route;
mod stream;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use super::convert::{event_to_proto, ticket_to_proto_masked};
use super::error::status;
use super::proto;
use crate::domain::lifecycle::EventKind;
use crate::domain::ticket::Ticket;
use crate::store::Change;

pub use feed::ChangeFeed;
pub use stream::{ChangeStream, WatchStream};

/// Limits and timings of watch streams.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// An idle stream gets a heartbeat with its cursor this often.
    pub heartbeat_interval: Duration,
    /// A stream whose buffer stays full this long (its client stopped reading) is ended.
    pub send_timeout: Duration,
    /// Messages buffered per stream.
    pub stream_buffer: usize,
    /// Recent changes kept in memory for streams that are a little behind.
    pub ring_capacity: usize,
    /// Most tickets one snapshot may hold.
    pub max_snapshot_tickets: u32,
    /// Changes read from the log (or the ring) per step when catching up.
    pub catch_up_batch: u32,
    /// How often the feed polls the log even without a commit notification.
    pub poll_interval: Duration,
    /// Whether tickets go out with the reporter's personal data masked (on a server with
    /// authentication: a stream is never a reveal, see docs/security.md).
    pub mask_personal_data: bool,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            stream_buffer: 256,
            ring_capacity: 4096,
            max_snapshot_tickets: 10_000,
            catch_up_batch: 500,
            poll_interval: Duration::from_secs(1),
            mask_personal_data: false,
        }
    }
}

/// Where a stream starts.
pub enum Start {
    /// Right after this cursor (resume, or now).
    After(i64),
    /// A snapshot first, then the changes after its cursor.
    Snapshot(crate::store::Snapshot),
}

/// Opaque cursors: a version prefix and the event's position in the log.
pub fn encode_cursor(position: i64) -> String {
    format!("v1.{position}")
}

pub fn decode_cursor(cursor: &str) -> Option<i64> {
    cursor
        .strip_prefix("v1.")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 0)
}

fn change_kind(kind: EventKind) -> proto::ChangeKind {
    match kind {
        EventKind::Created => proto::ChangeKind::Created,
        EventKind::Updated => proto::ChangeKind::Updated,
        EventKind::Assigned => proto::ChangeKind::Assigned,
        EventKind::StatusChanged => proto::ChangeKind::StatusChanged,
        EventKind::Commented => proto::ChangeKind::Commented,
        EventKind::Rated => proto::ChangeKind::Rated,
        EventKind::SlaWarning => proto::ChangeKind::SlaWarning,
        EventKind::SlaBreached => proto::ChangeKind::SlaBreached,
        EventKind::Escalated => proto::ChangeKind::Escalated,
    }
}

/// The encoded `WatchTicketsResponse` of one change.
fn encode_change(change: &Change, mask: bool) -> Bytes {
    encode(&proto::WatchTicketsResponse {
        cursor: encode_cursor(change.event.cursor),
        kind: change_kind(change.event.record.kind).into(),
        ticket: Some(ticket_to_proto_masked(&change.ticket, mask)),
        event: Some(event_to_proto(&change.event)),
    })
}

fn encode_snapshot_ticket(ticket: &Ticket, mask: bool) -> Bytes {
    encode(&proto::WatchTicketsResponse {
        cursor: String::new(),
        kind: proto::ChangeKind::Snapshot.into(),
        ticket: Some(ticket_to_proto_masked(ticket, mask)),
        event: None,
    })
}

/// A message with a cursor and nothing else: a heartbeat or the end of a snapshot.
fn encode_marker(kind: proto::ChangeKind, position: i64) -> Bytes {
    encode(&proto::WatchTicketsResponse {
        cursor: encode_cursor(position),
        kind: kind.into(),
        ticket: None,
        event: None,
    })
}

fn encode(message: &proto::WatchTicketsResponse) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        "SHUTTING_DOWN",
        "the server is shutting down; resume from your last cursor on another instance",
        HashMap::new(),
        &[],
    )
}

fn feed_stopped() -> Status {
    status(
        Code::Unavailable,
        "FEED_STOPPED",
        "the change feed stopped; resume from your last cursor",
        HashMap::new(),
        &[],
    )
}

fn slow_consumer() -> Status {
    status(
        Code::ResourceExhausted,
        "SLOW_CONSUMER",
        "the stream was ended because its client stopped reading; resume from your last cursor",
        HashMap::new(),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("42"), None);
        assert_eq!(decode_cursor("v1.-3"), None);
        assert_eq!(decode_cursor("v1.x"), None);
    }

    #[test]
    fn a_marker_decodes_as_the_message_it_stands_for() {
        let bytes = encode_marker(proto::ChangeKind::Heartbeat, 7);
        let message = proto::WatchTicketsResponse::decode(bytes).unwrap();
        assert_eq!(message.kind(), proto::ChangeKind::Heartbeat);
        assert_eq!(message.cursor, "v1.7");
        assert!(message.ticket.is_none());
    }
}
