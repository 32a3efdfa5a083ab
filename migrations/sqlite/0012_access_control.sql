-- Access control (docs/security.md): who filed each ticket, for the scope of external
-- systems, and the log of reveals of a ticket's personal data.
ALTER TABLE tickets ADD COLUMN created_by TEXT;
CREATE INDEX tickets_created_by_seq ON tickets (created_by, seq);

CREATE TABLE personal_data_accesses (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    method      TEXT NOT NULL,
    access_time INTEGER NOT NULL
);
CREATE INDEX personal_data_accesses_ticket ON personal_data_accesses (ticket_id, seq);
