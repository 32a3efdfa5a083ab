-- The KPI facts: one row per ticket, written by the SLA projection every time it replays the
-- ticket (see src/domain/kpi.rs). Like the projection, an index rebuilt from the event log,
-- never the source of truth. Times are microseconds since the epoch; durations are business
-- seconds; flags are 0 or 1, NULL where the outcome is not known yet.
CREATE TABLE ticket_facts (
    ticket_id              TEXT PRIMARY KEY NOT NULL,
    create_time            INTEGER NOT NULL,
    ticket_type            TEXT NOT NULL,
    channel                TEXT NOT NULL,
    category               TEXT NOT NULL,
    directorate            TEXT,
    outlet                 TEXT,
    wilayat                TEXT,
    support_line           INTEGER,
    assignee               TEXT,
    status                 TEXT NOT NULL,
    first_response_seconds INTEGER,
    resolution_seconds     INTEGER,
    first_response_met     INTEGER,
    resolution_met         INTEGER,
    n_escalations          INTEGER NOT NULL,
    reopened               INTEGER NOT NULL,
    transferred            INTEGER NOT NULL,
    rejected               INTEGER NOT NULL,
    resolved_at_line_1     INTEGER NOT NULL,
    satisfaction_score     INTEGER,
    resolve_time           INTEGER,
    settle_time            INTEGER
);

CREATE INDEX ticket_facts_create_time ON ticket_facts (create_time);
CREATE INDEX ticket_facts_directorate ON ticket_facts (directorate, create_time);
CREATE INDEX ticket_facts_outlet ON ticket_facts (outlet, create_time);
CREATE INDEX ticket_facts_category ON ticket_facts (category, create_time);
CREATE INDEX ticket_facts_channel ON ticket_facts (channel, create_time);
CREATE INDEX ticket_facts_wilayat ON ticket_facts (wilayat, create_time);
CREATE INDEX ticket_facts_support_line ON ticket_facts (support_line, create_time);
CREATE INDEX ticket_facts_assignee ON ticket_facts (assignee, create_time);
