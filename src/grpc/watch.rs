//! WatchTickets: live, resumable streams of ticket changes for directorate apps.
//!
//! One [`ChangeFeed`] per process reads the event log (woken by the store after each commit,
//! with a slow poll as a safety net) and publishes every change once into a bounded broadcast
//! ring. Each stream filters that ring in memory, so the cost of a new event does not grow
//! with a database query per watcher.
//!
//! Invariants:
//! - Within a stream, changes arrive in cursor order with no gap and no duplicate: a stream
//!   subscribes to the ring before it reads history from the log, and skips anything at or
//!   below the last cursor it handled.
//! - A stream that falls behind the shared ring re-reads the log from its own position instead
//!   of missing changes; only a client that stops reading (its own bounded buffer stays full
//!   for `send_timeout`) is ended, with `RESOURCE_EXHAUSTED`, and it never slows other streams.
//! - On shutdown every stream ends with `UNAVAILABLE` so clients reconnect elsewhere.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::convert::{event_to_proto, ticket_to_proto};
use super::error::status;
use super::proto;
use crate::domain::filter::TicketFilter;
use crate::domain::lifecycle::EventKind;
use crate::store::{Change, Store, StoreError};

/// Limits and timings of watch streams.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// An idle stream gets a heartbeat with its cursor this often.
    pub heartbeat_interval: Duration,
    /// A stream whose buffer stays full this long (its client stopped reading) is ended.
    pub send_timeout: Duration,
    /// Messages buffered per stream.
    pub stream_buffer: usize,
    /// Changes kept in the shared ring for streams that are a little behind.
    pub ring_capacity: usize,
    /// Most tickets one snapshot may hold.
    pub max_snapshot_tickets: u32,
    /// Changes read from the log per query when catching up.
    pub catch_up_batch: u32,
    /// How often the feed polls the log even without a commit notification.
    pub poll_interval: Duration,
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
        }
    }
}

/// A published change, with its protobuf message built at most once for all streams.
pub struct FeedItem {
    change: Change,
    message: OnceLock<proto::WatchTicketsResponse>,
}

impl FeedItem {
    fn cursor(&self) -> i64 {
        self.change.event.cursor
    }

    fn message(&self) -> proto::WatchTicketsResponse {
        self.message
            .get_or_init(|| change_message(&self.change))
            .clone()
    }
}

/// The one reader of the event log in this process.
pub struct ChangeFeed {
    live: broadcast::Sender<Arc<FeedItem>>,
    published: watch::Receiver<i64>,
}

impl ChangeFeed {
    /// Starts reading from the log's current end.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &WatchSettings,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, JoinHandle<()>), StoreError> {
        let latest = store.feed_bounds().await?.latest;
        let (live, _) = broadcast::channel(settings.ring_capacity.max(16));
        let (published_sender, published) = watch::channel(latest);
        let task = tokio::spawn(read_log(
            store,
            live.clone(),
            published_sender,
            latest,
            settings.poll_interval,
            shutdown,
        ));
        Ok((Arc::new(Self { live, published }), task))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.live.subscribe()
    }

    /// The last cursor published to streams.
    pub fn published(&self) -> i64 {
        *self.published.borrow()
    }
}

async fn read_log(
    store: Arc<dyn Store>,
    live: broadcast::Sender<Arc<FeedItem>>,
    published: watch::Sender<i64>,
    mut last: i64,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    const BATCH: u32 = 1000;
    let mut commits = store.commits();
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = commits.changed() => if changed.is_err() { return },
            _ = poll.tick() => {}
        }
        loop {
            match store.read_changes(last, BATCH).await {
                Ok(changes) => {
                    let n = changes.len();
                    for change in changes {
                        last = change.event.cursor;
                        // No receiver is fine: nobody is watching right now.
                        let _ = live.send(Arc::new(FeedItem {
                            change,
                            message: OnceLock::new(),
                        }));
                    }
                    published.send_replace(last);
                    if n < BATCH as usize {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "reading the change feed failed; retrying");
                    break;
                }
            }
        }
    }
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
    }
}

fn change_message(change: &Change) -> proto::WatchTicketsResponse {
    proto::WatchTicketsResponse {
        cursor: encode_cursor(change.event.cursor),
        kind: change_kind(change.event.record.kind).into(),
        ticket: Some(ticket_to_proto(&change.ticket)),
        event: Some(event_to_proto(&change.event)),
    }
}

fn marker(kind: proto::ChangeKind, position: i64) -> proto::WatchTicketsResponse {
    proto::WatchTicketsResponse {
        cursor: encode_cursor(position),
        kind: kind.into(),
        ticket: None,
        event: None,
    }
}

/// Where a stream starts.
pub enum Start {
    /// Right after this cursor (resume, or the end of a snapshot already sent).
    After(i64),
    /// A snapshot first, then the changes after its cursor.
    Snapshot(crate::store::Snapshot),
}

/// The stream type of WatchTickets.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchTicketsResponse, Status>> + Send>>;

/// Starts a stream's producer and returns the stream. `live` must be subscribed before the
/// start position was determined, so nothing falls between history and live changes.
pub fn spawn_stream(
    store: Arc<dyn Store>,
    live: broadcast::Receiver<Arc<FeedItem>>,
    filter: TicketFilter,
    start: Start,
    settings: WatchSettings,
    shutdown: CancellationToken,
    streams_open: prometheus_client::metrics::gauge::Gauge,
) -> WatchStream {
    let (sender, items) = mpsc::channel::<Outgoing>(settings.stream_buffer.max(1));
    let (end_sender, end) = oneshot::channel::<Status>();
    streams_open.inc();
    tokio::spawn(async move {
        // Counted while the producer runs: it ends when the stream ends for any reason.
        struct Open(prometheus_client::metrics::gauge::Gauge);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let _open = Open(streams_open);
        let mut pump = Pump {
            store,
            filter,
            settings,
            sender,
            position: 0,
        };
        match pump.run(live, start, shutdown).await {
            Ok(()) | Err(End::ClientGone) => {}
            Err(End::Fail(status)) => {
                let _ = end_sender.send(status);
            }
        }
    });
    // The buffered messages first, then the terminal status, if any. A shared change
    // becomes its message only when tonic takes it, so what waits in the buffer is a pointer.
    let terminal =
        futures::stream::once(end).filter_map(|ended| async move { ended.ok().map(Err) });
    let items = ReceiverStream::new(items).map(|outgoing| {
        Ok(match outgoing {
            Outgoing::Shared(item) => item.message(),
            Outgoing::Owned(message) => *message,
        })
    });
    Box::pin(items.chain(terminal))
}

/// What waits in a stream's buffer: a change shared by every stream that follows it, or a
/// message of this stream's own (snapshot, catch-up, heartbeat). Boxed, so a slot stays small.
enum Outgoing {
    Shared(Arc<FeedItem>),
    Owned(Box<proto::WatchTicketsResponse>),
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

struct Pump {
    store: Arc<dyn Store>,
    filter: TicketFilter,
    settings: WatchSettings,
    sender: mpsc::Sender<Outgoing>,
    /// The last cursor handled (sent or filtered out).
    position: i64,
}

impl Pump {
    async fn run(
        &mut self,
        mut live: broadcast::Receiver<Arc<FeedItem>>,
        start: Start,
        shutdown: CancellationToken,
    ) -> Result<(), End> {
        match start {
            Start::After(position) => self.position = position,
            Start::Snapshot(snapshot) => {
                for ticket in &snapshot.tickets {
                    self.send(Outgoing::Owned(Box::new(proto::WatchTicketsResponse {
                        cursor: String::new(),
                        kind: proto::ChangeKind::Snapshot.into(),
                        ticket: Some(ticket_to_proto(ticket)),
                        event: None,
                    })))
                    .await?;
                }
                self.position = snapshot.cursor;
                self.send(Outgoing::Owned(Box::new(marker(
                    proto::ChangeKind::SnapshotEnd,
                    snapshot.cursor,
                ))))
                .await?;
            }
        }
        self.catch_up().await?;
        let period = self.settings.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    return Err(End::Fail(status(
                        Code::Unavailable,
                        "SHUTTING_DOWN",
                        "the server is shutting down; resume from your last cursor on another instance",
                        HashMap::new(),
                        &[],
                    )));
                }
                item = live.recv() => match item {
                    Ok(item) => {
                        if item.cursor() <= self.position {
                            continue;
                        }
                        self.position = item.cursor();
                        if self.filter.matches(&item.change.ticket) {
                            self.send(Outgoing::Shared(item)).await?;
                            heartbeat.reset();
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Behind the shared ring: the log has everything, read it from there.
                        self.catch_up().await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(End::Fail(status(
                            Code::Unavailable,
                            "FEED_STOPPED",
                            "the change feed stopped; resume from your last cursor",
                            HashMap::new(),
                            &[],
                        )));
                    }
                },
                _ = heartbeat.tick() => {
                    self.send(Outgoing::Owned(Box::new(marker(
                        proto::ChangeKind::Heartbeat,
                        self.position,
                    )))).await?;
                }
            }
        }
    }

    /// Sends every matching change in the log after `position`, up to the log's end.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let changes = self
                .store
                .read_changes(self.position, self.settings.catch_up_batch)
                .await?;
            let n = changes.len();
            for change in changes {
                self.position = change.event.cursor;
                if self.filter.matches(&change.ticket) {
                    self.send(Outgoing::Owned(Box::new(change_message(&change))))
                        .await?;
                }
            }
            if n < self.settings.catch_up_batch as usize {
                return Ok(());
            }
        }
    }

    async fn send(&self, message: Outgoing) -> Result<(), End> {
        match self
            .sender
            .send_timeout(message, self.settings.send_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::ClientGone),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(End::Fail(status(
                Code::ResourceExhausted,
                "SLOW_CONSUMER",
                "the stream was ended because its client stopped reading; resume from your last cursor",
                HashMap::new(),
                &[],
            ))),
        }
    }
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
}
