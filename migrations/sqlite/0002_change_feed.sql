-- The change feed behind WatchTickets: each event keeps the ticket as it stood after it, so a
-- watcher resuming from an old cursor sees each change as it was made. Snapshots older than
-- the feed retention are dropped (set to NULL) and `pruned_through` records the last event
-- whose snapshot is gone: a cursor before it can no longer be resumed.

ALTER TABLE ticket_events ADD COLUMN ticket_body TEXT;

CREATE TABLE feed_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
);

INSERT INTO feed_state (id, pruned_through) VALUES (1, 0);

CREATE INDEX ticket_events_occur_time ON ticket_events (occur_time);
