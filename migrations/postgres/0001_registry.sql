-- The ticket registry on PostgreSQL. Same model as the SQLite schema: a ticket is kept whole
-- as JSON in `body`, the columns beside it are projections for filtering and ordering,
-- written together with it. `seq` is the immutable creation order used by pagination.

CREATE TABLE wilayats (
    code    TEXT PRIMARY KEY,
    name_ar TEXT NOT NULL,
    name_en TEXT NOT NULL
);

CREATE TABLE directorates (
    code    TEXT PRIMARY KEY,
    name_ar TEXT NOT NULL,
    name_en TEXT NOT NULL,
    active  BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE outlets (
    code             TEXT PRIMARY KEY,
    directorate_code TEXT NOT NULL REFERENCES directorates (code),
    wilayat_code     TEXT NOT NULL REFERENCES wilayats (code),
    name_ar          TEXT NOT NULL,
    name_en          TEXT NOT NULL,
    active           BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE categories (
    code                     TEXT PRIMARY KEY,
    name_ar                  TEXT NOT NULL,
    name_en                  TEXT NOT NULL,
    default_directorate_code TEXT NOT NULL REFERENCES directorates (code),
    default_priority         TEXT NOT NULL,
    sla_policy_code          TEXT NOT NULL,
    active                   BOOLEAN NOT NULL DEFAULT TRUE
);

-- Counted per year in the creating transaction (the row lock serialises writers), so
-- reference numbers are unique and without gaps, also across replicas.
CREATE TABLE reference_counters (
    year       INTEGER PRIMARY KEY,
    last_value BIGINT NOT NULL
);

CREATE TABLE tickets (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           UUID NOT NULL UNIQUE,
    reference    TEXT NOT NULL UNIQUE,
    ticket_type  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    category     TEXT NOT NULL REFERENCES categories (code),
    priority     TEXT NOT NULL,
    status       TEXT NOT NULL,
    directorate  TEXT,
    outlet       TEXT,
    wilayat      TEXT,
    assignee     TEXT,
    support_line SMALLINT,
    create_time  BIGINT NOT NULL,
    update_time  BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    search_text  TEXT NOT NULL,
    -- Stored, so a filter that the planner applies row by row costs no parsing.
    search_vector TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED,
    body         JSONB NOT NULL
);

CREATE INDEX tickets_status_seq ON tickets (status, seq);
CREATE INDEX tickets_directorate_seq ON tickets (directorate, seq);
-- A directorate's queue by status, newest first: the directorate apps' main list.
CREATE INDEX tickets_directorate_status_seq ON tickets (directorate, status, seq);
CREATE INDEX tickets_category_seq ON tickets (category, seq);
CREATE INDEX tickets_wilayat_seq ON tickets (wilayat, seq);
CREATE INDEX tickets_assignee_seq ON tickets (assignee, seq);
CREATE INDEX tickets_outlet_seq ON tickets (outlet, seq);
CREATE INDEX tickets_create_time ON tickets (create_time);
CREATE INDEX tickets_update_time ON tickets (update_time);
-- Normalised words (reference, subject, description, and words without the Arabic article),
-- matched by prefix with the 'simple' configuration: normalisation happens in balagh.
CREATE INDEX tickets_search ON tickets USING GIN (search_vector);

-- The append-only event log. Writers append under a transaction-scoped advisory lock held
-- until commit, so identity values are assigned in commit order: a reader that has seen
-- cursor N has seen every event below N.
CREATE TABLE ticket_events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id   UUID NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    occur_time  BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    body        JSONB NOT NULL,
    ticket_body JSONB
);

CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id, seq);
CREATE INDEX ticket_events_occur_time ON ticket_events (occur_time);

CREATE TABLE feed_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);

INSERT INTO feed_state (id, pruned_through) VALUES (1, 0);

CREATE TABLE request_records (
    request_id  TEXT PRIMARY KEY,
    fingerprint BYTEA NOT NULL,
    response    TEXT NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX request_records_create_time ON request_records (create_time);
