//! One stream: its bounded buffer, the body tonic reads from it, and the task that runs only
//! while the stream is behind (opening with a snapshot or history, or after its buffer was
//! full).
//!
//! Invariants:
//! - The buffer's sender is owned by exactly one party at a time: the feed (attached) or the
//!   catch-up task (detached). So one party orders the stream's messages.
//! - A stream ends with a status only after the messages already in its buffer: the status
//!   travels on its own channel and is read once the buffer is closed and empty.
//! - A client that leaves costs nothing further: its body's drop forgets it in the feed, and
//!   a catch-up task stops at its next send.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::feed::{Attach, Backlog, ChangeFeed};
use super::{
    encode_change, encode_marker, encode_snapshot_ticket, feed_stopped, proto, shutting_down,
    slow_consumer,
};
use crate::domain::filter::TicketFilter;
use crate::grpc::codec::EncodedMessage;
use crate::store::{Snapshot, StoreError};

/// The stream type of the generated `TicketService::watch_tickets` (messages decoded again;
/// the server serves WatchTickets through [`super::route`], which sends the bytes as they are).
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchTicketsResponse, Status>> + Send>>;

/// The sending end of a stream's buffer, and of its final status.
pub(super) struct StreamSink {
    sender: mpsc::Sender<Bytes>,
    end: oneshot::Sender<Status>,
}

impl StreamSink {
    pub(super) fn try_send(&self, message: Bytes) -> Result<(), TrySendError<Bytes>> {
        self.sender.try_send(message)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Ends the stream with `status`, after what is already buffered.
    pub(super) fn fail(self, status: Status) {
        // The client may be gone already; then nobody needs the status.
        let _ = self.end.send(status);
    }
}

/// The messages of one stream, as tonic reads them: encoded changes, then maybe a status.
pub struct ChangeStream {
    items: mpsc::Receiver<Bytes>,
    end: Option<oneshot::Receiver<Status>>,
    feed: Arc<ChangeFeed>,
    id: u64,
    streams_open: prometheus_client::metrics::gauge::Gauge,
    /// The caller's watch-stream slot, given back when the stream ends.
    slot: Option<crate::auth::rate::StreamSlot>,
}

impl ChangeStream {
    /// Holds the caller's stream slot for as long as the stream lives.
    pub fn holding(mut self, slot: Option<crate::auth::rate::StreamSlot>) -> Self {
        self.slot = slot;
        self
    }

    pub(super) fn new(
        feed: Arc<ChangeFeed>,
        id: u64,
        streams_open: prometheus_client::metrics::gauge::Gauge,
    ) -> (StreamSink, Self) {
        let (sender, items) = mpsc::channel(feed.settings.stream_buffer);
        let (end_sender, end) = oneshot::channel();
        streams_open.inc();
        let sink = StreamSink {
            sender,
            end: end_sender,
        };
        let stream = Self {
            items,
            end: Some(end),
            feed,
            id,
            streams_open,
            slot: None,
        };
        (sink, stream)
    }

    /// The same stream with each message decoded, for the generated service trait.
    pub fn decoded(self) -> WatchStream {
        Box::pin(self.map(|item| {
            item.and_then(|message| {
                proto::WatchTicketsResponse::decode(message.into_bytes()).map_err(|error| {
                    Status::internal(format!("a change message did not decode: {error}"))
                })
            })
        }))
    }
}

impl Stream for ChangeStream {
    type Item = Result<EncodedMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.items.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => return Poll::Ready(Some(Ok(EncodedMessage::new(bytes)))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        // Closed and drained: the final status, if the stream was ended with one.
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(end).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(ended) => {
                self.end = None;
                Poll::Ready(ended.ok().map(Err))
            }
        }
    }
}

impl Drop for ChangeStream {
    fn drop(&mut self) {
        self.items.close();
        self.feed.forget(self.id);
        self.streams_open.dec();
    }
}

/// What a catching-up stream sends before anything else.
pub(super) enum Opening {
    Nothing,
    /// The message the feed could not deliver when the buffer was full.
    Pending(Bytes),
    /// Every matching ticket, then the snapshot's end marker.
    Snapshot(Snapshot),
}

/// A stream that is not attached to the feed; owned by its catch-up task.
pub(super) struct Detached {
    pub(super) id: u64,
    pub(super) filter: TicketFilter,
    pub(super) sink: StreamSink,
    /// The last cursor handled (sent or filtered out), once the opening is sent.
    pub(super) position: i64,
}

enum End {
    ClientGone,
    Fail(Status),
}

impl From<StoreError> for End {
    fn from(error: StoreError) -> Self {
        End::Fail(error.into())
    }
}

/// Sends what the stream is missing, from the ring or the log, until it can attach.
pub(super) async fn catch_up(feed: Arc<ChangeFeed>, mut stream: Detached, opening: Opening) {
    if let Err(end) = stream.send_opening(&feed, opening).await {
        return stream.end(end);
    }
    loop {
        let sent = match feed.attach_or_backlog(stream) {
            Attach::Attached | Attach::Gone => return,
            Attach::Stopped(detached, status) => return detached.fail(status),
            Attach::Behind(detached, backlog) => {
                stream = detached;
                match backlog {
                    Some(backlog) => stream.send_backlog(&feed, backlog).await,
                    None => stream.send_from_log(&feed).await,
                }
            }
        };
        if let Err(end) = sent {
            return stream.end(end);
        }
    }
}

impl Detached {
    pub(super) fn new(id: u64, filter: TicketFilter, sink: StreamSink, position: i64) -> Self {
        Self {
            id,
            filter,
            sink,
            position,
        }
    }

    pub(super) fn fail(self, status: Status) {
        self.sink.fail(status);
    }

    fn end(self, end: End) {
        match end {
            End::ClientGone => {}
            End::Fail(status) => self.fail(status),
        }
    }

    async fn send_opening(&mut self, feed: &ChangeFeed, opening: Opening) -> Result<(), End> {
        match opening {
            Opening::Nothing => Ok(()),
            Opening::Pending(message) => self.send(feed, message).await,
            Opening::Snapshot(snapshot) => {
                for ticket in &snapshot.tickets {
                    self.send(
                        feed,
                        encode_snapshot_ticket(ticket, feed.settings.mask_personal_data),
                    )
                    .await?;
                }
                let end = encode_marker(proto::ChangeKind::SnapshotEnd, snapshot.cursor);
                self.send(feed, end).await
            }
        }
    }

    async fn send_backlog(&mut self, feed: &ChangeFeed, backlog: Backlog) -> Result<(), End> {
        for message in backlog.messages {
            self.send(feed, message).await?;
        }
        self.position = backlog.through;
        Ok(())
    }

    /// Sends the matching changes of one batch read from the log after `position`.
    async fn send_from_log(&mut self, feed: &ChangeFeed) -> Result<(), End> {
        let changes = feed
            .store
            .read_changes(self.position, feed.settings.catch_up_batch)
            .await?;
        if changes.is_empty() {
            // The feed published past `position`, yet the log holds nothing after it: pruned.
            return Err(End::Fail(feed_stopped()));
        }
        for change in changes {
            if self.filter.matches(&change.ticket) {
                self.send(
                    feed,
                    encode_change(&change, feed.settings.mask_personal_data),
                )
                .await?;
            }
            self.position = change.event.cursor;
        }
        Ok(())
    }

    /// Waits for room in the buffer, at most `send_timeout`: a client that stops reading is
    /// ended rather than waited for.
    async fn send(&self, feed: &ChangeFeed, message: Bytes) -> Result<(), End> {
        let timeout = feed.settings.send_timeout;
        tokio::select! {
            biased;
            () = feed.shutdown.cancelled() => Err(End::Fail(shutting_down())),
            sent = self.sink.sender.send_timeout(message, timeout) => match sent {
                Ok(()) => Ok(()),
                Err(SendTimeoutError::Closed(_)) => Err(End::ClientGone),
                Err(SendTimeoutError::Timeout(_)) => Err(End::Fail(slow_consumer())),
            },
        }
    }
}
