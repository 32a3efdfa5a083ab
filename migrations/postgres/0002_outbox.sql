-- The transactional outbox: one row per push owed to the national platform, written in the
-- transaction of the change that owes it. Workers claim rows with a lease (FOR UPDATE SKIP
-- LOCKED); per-ticket order is kept by never claiming a row while an older row of the same
-- ticket is pending or dead.

CREATE TABLE outbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id       UUID NOT NULL,
    event_cursor    BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    ticket_body     JSONB NOT NULL,
    event_body      JSONB NOT NULL,
    state           TEXT NOT NULL,
    n_attempts      BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL
);

CREATE INDEX outbox_claim ON outbox (state, next_attempt_at, seq);
CREATE INDEX outbox_ticket ON outbox (ticket_id, seq);
