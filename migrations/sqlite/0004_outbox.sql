-- The transactional outbox: one row per push owed to the national platform, written in the
-- transaction of the change that owes it. Workers claim rows with a lease; per-ticket order is
-- kept by never claiming a row while an older row of the same ticket is pending or dead.

CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id       TEXT NOT NULL,
    event_cursor    INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    ticket_body     TEXT NOT NULL,
    event_body      TEXT NOT NULL,
    state           TEXT NOT NULL,
    n_attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    create_time     INTEGER NOT NULL,
    update_time     INTEGER NOT NULL
);

CREATE INDEX outbox_claim ON outbox (state, next_attempt_at, seq);
CREATE INDEX outbox_ticket ON outbox (ticket_id, seq);
