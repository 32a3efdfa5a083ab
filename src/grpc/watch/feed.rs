//! The one reader of the event log per process, and the dispatch of each change to the
//! attached streams it concerns.
//!
//! Invariants:
//! - Changes are published one at a time, in cursor order, under the feed's lock; a stream
//!   attaches, detaches or leaves under the same lock, so it sees a change entirely or not at
//!   all, and `published` is always the position of every attached stream (or below the
//!   position it attached at).
//! - The ring holds every change after `ring_floor` up to `published`, so a stream whose
//!   position is at or after `ring_floor` catches up from memory.
//! - Nothing here waits while holding the lock: deliveries are `try_send`, and a stream that
//!   cannot take one is handed to a task of its own (see `stream.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::index::{IndexKey, StreamIndex, filter_keys};
use super::stream::{ChangeStream, Detached, Opening, StreamSink, catch_up};
use super::{
    Start, WatchSettings, encode_change, encode_marker, feed_stopped, proto, shutting_down,
};
use crate::domain::filter::TicketFilter;
use crate::domain::ticket::Ticket;
use crate::store::{Store, StoreError};

/// Changes read from the log per query by the feed.
const READ_BATCH: u32 = 1000;
/// Heartbeat checks per heartbeat interval: an idle stream gets its heartbeat between one and
/// 1 + 1/HEARTBEAT_TICKS intervals after its last message.
const HEARTBEAT_TICKS: u64 = 4;

/// A published change: its ticket, for filtering, and its message, encoded once for every
/// stream that receives it.
pub(super) struct FeedItem {
    cursor: i64,
    ticket: Ticket,
    encoded: Bytes,
}

/// The one reader of the event log in this process, and the registry of attached streams.
pub struct ChangeFeed {
    state: Mutex<FeedState>,
    /// `FeedState::published`, readable without the lock.
    published: AtomicI64,
    next_id: AtomicU64,
    pub(super) store: Arc<dyn Store>,
    pub(super) settings: WatchSettings,
    pub(super) shutdown: CancellationToken,
}

struct FeedState {
    /// The cursor of the last change dispatched.
    published: i64,
    /// Recent changes, oldest first: every change after `ring_floor`, up to `published`.
    ring: VecDeque<Arc<FeedItem>>,
    ring_floor: i64,
    streams: HashMap<u64, Attached>,
    index: StreamIndex,
    /// Heartbeat ticks so far.
    tick: u64,
    /// Set once the feed stopped: the status every stream still open ends with.
    stopped: Option<fn() -> Status>,
}

/// A stream that has handled every change up to `published`, fed by the feed itself.
struct Attached {
    filter: TicketFilter,
    keys: Vec<IndexKey>,
    sink: StreamSink,
    /// It had handled every change up to here when it attached (possibly beyond `published`,
    /// after reading the log): changes at or below are skipped.
    attached_at: i64,
    /// The tick of its last message.
    last_active: u64,
}

/// Why a delivery did not go through.
enum Lapse {
    /// The buffer is full: the stream continues on a task of its own, which sends `message`
    /// (the change at `through`) first.
    Full { message: Bytes, through: i64 },
    /// The client left.
    Closed,
}

/// What a catching-up stream should do next.
pub(super) enum Attach {
    /// It is attached: the feed delivers from now on.
    Attached,
    /// The feed stopped: end the stream with this status.
    Stopped(Detached, Status),
    /// Its client left.
    Gone,
    /// Not caught up yet: send these messages from the ring, or read the log if `None`
    /// (the ring no longer reaches back to its position).
    Behind(Detached, Option<Backlog>),
}

/// The messages a stream missed, from the ring.
pub(super) struct Backlog {
    pub(super) messages: Vec<Bytes>,
    /// The position the stream has handled once they are sent.
    pub(super) through: i64,
}

impl ChangeFeed {
    /// Starts reading from the log's current end.
    pub async fn start(
        store: Arc<dyn Store>,
        settings: &WatchSettings,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, JoinHandle<()>), StoreError> {
        let latest = store.feed_bounds().await?.latest;
        let settings = WatchSettings {
            ring_capacity: settings.ring_capacity.max(16),
            stream_buffer: settings.stream_buffer.max(1),
            catch_up_batch: settings.catch_up_batch.max(1),
            ..settings.clone()
        };
        let feed = Arc::new(Self {
            state: Mutex::new(FeedState {
                published: latest,
                ring: VecDeque::with_capacity(settings.ring_capacity),
                ring_floor: latest,
                streams: HashMap::new(),
                index: StreamIndex::default(),
                tick: 0,
                stopped: None,
            }),
            published: AtomicI64::new(latest),
            next_id: AtomicU64::new(0),
            store,
            settings,
            shutdown,
        });
        let task = tokio::spawn(read_log(feed.clone(), latest));
        Ok((feed, task))
    }

    /// The last cursor published to streams.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    /// Opens a stream of the changes matching `filter` from `start`. `streams_open` counts it
    /// for as long as the returned stream exists.
    pub fn open(
        self: &Arc<Self>,
        filter: TicketFilter,
        start: Start,
        streams_open: prometheus_client::metrics::gauge::Gauge,
    ) -> ChangeStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sink, stream) = ChangeStream::new(self.clone(), id, streams_open);
        match start {
            Start::After(position) => {
                let detached = Detached::new(id, filter, sink, position);
                match self.attach_or_backlog(detached) {
                    Attach::Attached | Attach::Gone => {}
                    Attach::Stopped(detached, status) => detached.fail(status),
                    Attach::Behind(detached, _) => {
                        tokio::spawn(catch_up(self.clone(), detached, Opening::Nothing));
                    }
                }
            }
            Start::Snapshot(snapshot) => {
                let detached = Detached::new(id, filter, sink, snapshot.cursor);
                tokio::spawn(catch_up(
                    self.clone(),
                    detached,
                    Opening::Snapshot(snapshot),
                ));
            }
        }
        stream
    }

    /// Attaches the stream if it has handled everything published; otherwise hands it back
    /// with what to send next.
    pub(super) fn attach_or_backlog(&self, stream: Detached) -> Attach {
        let mut state = self.lock();
        if let Some(status) = state.stopped {
            return Attach::Stopped(stream, status());
        }
        if stream.sink.is_closed() {
            return Attach::Gone;
        }
        if stream.position >= state.published {
            state.attach(stream);
            return Attach::Attached;
        }
        let backlog = state.ring_backlog(
            stream.position,
            &stream.filter,
            self.settings.catch_up_batch as usize,
        );
        Attach::Behind(stream, backlog)
    }

    /// Drops a stream whose client left, if it is attached.
    pub(super) fn forget(&self, id: u64) {
        let mut state = self.lock();
        if let Some(stream) = state.streams.remove(&id) {
            state.index.remove(id, &stream.keys);
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Nothing panics while holding the lock; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers one change to every attached stream it matches, and keeps it in the ring.
    fn publish(self: &Arc<Self>, item: Arc<FeedItem>) {
        let mut state = self.lock();
        let lapses = state.dispatch(&item);
        state.published = item.cursor;
        self.published.store(item.cursor, Ordering::Release);
        state.push_ring(item, self.settings.ring_capacity);
        self.detach(&mut state, lapses);
    }

    /// Sends a heartbeat to every attached stream that had no message for a while.
    fn heartbeat(self: &Arc<Self>) {
        let mut state = self.lock();
        state.tick += 1;
        let FeedState {
            published,
            streams,
            tick,
            ..
        } = &mut *state;
        let beat = encode_marker(proto::ChangeKind::Heartbeat, *published);
        let mut lapses = Vec::new();
        for (id, stream) in streams.iter_mut() {
            if *tick - stream.last_active < HEARTBEAT_TICKS {
                continue;
            }
            let position = stream.attached_at.max(*published);
            let message = if position == *published {
                beat.clone()
            } else {
                encode_marker(proto::ChangeKind::Heartbeat, position)
            };
            if let Some(lapse) = stream.offer(message, position, *tick) {
                lapses.push((*id, lapse));
            }
        }
        self.detach(&mut state, lapses);
    }

    /// Hands streams that could not take a message to tasks of their own.
    fn detach(self: &Arc<Self>, state: &mut FeedState, lapses: Vec<(u64, Lapse)>) {
        for (id, lapse) in lapses {
            let Some(stream) = state.streams.remove(&id) else {
                continue;
            };
            state.index.remove(id, &stream.keys);
            if let Lapse::Full { message, through } = lapse {
                let detached = Detached::new(id, stream.filter, stream.sink, through);
                tokio::spawn(catch_up(self.clone(), detached, Opening::Pending(message)));
            }
        }
    }

    /// Ends every stream: attached ones now, catching-up ones when they next try to attach.
    fn stop(&self, status: fn() -> Status) {
        let mut state = self.lock();
        state.stopped = Some(status);
        state.index = StreamIndex::default();
        for (_, stream) in state.streams.drain() {
            stream.sink.fail(status());
        }
    }
}

impl FeedState {
    fn attach(&mut self, stream: Detached) {
        let keys = filter_keys(&stream.filter);
        self.index.insert(stream.id, &keys);
        self.streams.insert(
            stream.id,
            Attached {
                filter: stream.filter,
                keys,
                sink: stream.sink,
                attached_at: stream.position,
                last_active: self.tick,
            },
        );
    }

    /// Offers the change to every candidate the index names; returns who could not take it.
    fn dispatch(&mut self, item: &FeedItem) -> Vec<(u64, Lapse)> {
        let FeedState {
            streams,
            index,
            tick,
            ..
        } = self;
        let mut lapses = Vec::new();
        index.candidates(&item.ticket, |id| {
            let Some(stream) = streams.get_mut(&id) else {
                return;
            };
            if item.cursor <= stream.attached_at || !stream.filter.matches(&item.ticket) {
                return;
            }
            if let Some(lapse) = stream.offer(item.encoded.clone(), item.cursor, *tick) {
                lapses.push((id, lapse));
            }
        });
        lapses
    }

    fn push_ring(&mut self, item: Arc<FeedItem>, capacity: usize) {
        self.ring.push_back(item);
        while self.ring.len() > capacity {
            if let Some(oldest) = self.ring.pop_front() {
                self.ring_floor = oldest.cursor;
            }
        }
    }

    /// Up to `limit` changes after `position` from the ring, those matching `filter` encoded;
    /// `None` if the ring no longer holds every change after `position`.
    fn ring_backlog(&self, position: i64, filter: &TicketFilter, limit: usize) -> Option<Backlog> {
        if position < self.ring_floor {
            return None;
        }
        let from = self.ring.partition_point(|item| item.cursor <= position);
        let mut backlog = Backlog {
            messages: Vec::new(),
            through: position,
        };
        for item in self.ring.range(from..).take(limit) {
            backlog.through = item.cursor;
            if filter.matches(&item.ticket) {
                backlog.messages.push(item.encoded.clone());
            }
        }
        Some(backlog)
    }
}

impl Attached {
    /// Pushes the message (at position `through`) without waiting.
    fn offer(&mut self, message: Bytes, through: i64, tick: u64) -> Option<Lapse> {
        match self.sink.try_send(message) {
            Ok(()) => {
                self.last_active = tick;
                None
            }
            Err(TrySendError::Full(message)) => Some(Lapse::Full { message, through }),
            Err(TrySendError::Closed(_)) => Some(Lapse::Closed),
        }
    }
}

/// Reads every new change once, encodes it once and publishes it, until shutdown.
async fn read_log(feed: Arc<ChangeFeed>, mut last: i64) {
    let mut commits = feed.store.commits();
    let mut poll = tokio::time::interval(feed.settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tick_period = (feed.settings.heartbeat_interval / HEARTBEAT_TICKS as u32)
        .max(std::time::Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval(tick_period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended_by: fn() -> Status = loop {
        tokio::select! {
            biased;
            () = feed.shutdown.cancelled() => break shutting_down,
            // Before commits: under a steady stream of commits, idle streams still need theirs.
            _ = heartbeat.tick() => {
                feed.heartbeat();
                continue;
            }
            changed = commits.changed() => if changed.is_err() { break feed_stopped },
            _ = poll.tick() => {}
        }
        last = publish_new_changes(&feed, last).await;
    };
    feed.stop(ended_by);
}

/// Publishes every change after `last` in the log; returns the last cursor published.
async fn publish_new_changes(feed: &Arc<ChangeFeed>, mut last: i64) -> i64 {
    loop {
        let changes = match feed.store.read_changes(last, READ_BATCH).await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(error = %error, "reading the change feed failed; retrying");
                return last;
            }
        };
        let n = changes.len();
        for change in changes {
            // Encoded outside the lock, once for every stream.
            let item = Arc::new(FeedItem {
                cursor: change.event.cursor,
                encoded: encode_change(&change, feed.settings.mask_personal_data),
                ticket: change.ticket,
            });
            last = item.cursor;
            feed.publish(item);
            // A large batch does not keep this worker from the other tasks.
            tokio::task::coop::consume_budget().await;
        }
        if n < READ_BATCH as usize {
            return last;
        }
    }
}
