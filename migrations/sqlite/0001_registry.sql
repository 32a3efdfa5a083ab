-- The ticket registry on SQLite.
--
-- A ticket is kept whole as JSON in `body`; the columns beside it are projections of that
-- body for filtering and ordering, always written together with it by the store.
-- `seq` is the ticket's immutable creation order, which list pagination is keyed on.

CREATE TABLE wilayats (
    code    TEXT PRIMARY KEY NOT NULL,
    name_ar TEXT NOT NULL,
    name_en TEXT NOT NULL
);

CREATE TABLE directorates (
    code    TEXT PRIMARY KEY NOT NULL,
    name_ar TEXT NOT NULL,
    name_en TEXT NOT NULL,
    active  INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE outlets (
    code             TEXT PRIMARY KEY NOT NULL,
    directorate_code TEXT NOT NULL REFERENCES directorates (code),
    wilayat_code     TEXT NOT NULL REFERENCES wilayats (code),
    name_ar          TEXT NOT NULL,
    name_en          TEXT NOT NULL,
    active           INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE categories (
    code                     TEXT PRIMARY KEY NOT NULL,
    name_ar                  TEXT NOT NULL,
    name_en                  TEXT NOT NULL,
    default_directorate_code TEXT NOT NULL REFERENCES directorates (code),
    default_priority         TEXT NOT NULL,
    sla_policy_code          TEXT NOT NULL,
    active                   INTEGER NOT NULL DEFAULT 1
);

-- Reference numbers are counted per year in the same transaction as the ticket they name,
-- so they are unique and without gaps.
CREATE TABLE reference_counters (
    year       INTEGER PRIMARY KEY NOT NULL,
    last_value INTEGER NOT NULL
);

CREATE TABLE tickets (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
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
    support_line INTEGER,
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    body         TEXT NOT NULL
);

-- One index per filter, each ending in seq, so a filtered page is read in order and stops
-- after page_size rows.
CREATE INDEX tickets_status_seq ON tickets (status, seq);
CREATE INDEX tickets_directorate_seq ON tickets (directorate, seq);
CREATE INDEX tickets_category_seq ON tickets (category, seq);
CREATE INDEX tickets_wilayat_seq ON tickets (wilayat, seq);
CREATE INDEX tickets_assignee_seq ON tickets (assignee, seq);
CREATE INDEX tickets_outlet_seq ON tickets (outlet, seq);
CREATE INDEX tickets_create_time ON tickets (create_time);
CREATE INDEX tickets_update_time ON tickets (update_time);

-- Normalised text (reference, subject, description) for search; rowid = tickets.seq.
CREATE VIRTUAL TABLE tickets_fts USING fts5 (content, tokenize = 'unicode61 remove_diacritics 0');

-- The append-only event log. With one writer, AUTOINCREMENT order is commit order.
CREATE TABLE ticket_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    occur_time  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id, seq);

-- AIP-155 request ids: the first answer to a mutation, replayed for a retry.
CREATE TABLE request_records (
    request_id  TEXT PRIMARY KEY NOT NULL,
    fingerprint BLOB NOT NULL,
    response    TEXT NOT NULL,
    create_time INTEGER NOT NULL
);

CREATE INDEX request_records_create_time ON request_records (create_time);
