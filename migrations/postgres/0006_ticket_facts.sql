-- The KPI facts: one row per ticket, written by the SLA projection every time it replays the
-- ticket (see src/domain/kpi.rs). Like the projection, an index rebuilt from the event log,
-- never the source of truth. Times are microseconds since the epoch; durations are business
-- seconds; flags are booleans, NULL where the outcome is not known yet.
CREATE TABLE ticket_facts (
    ticket_id              UUID PRIMARY KEY NOT NULL,
    create_time            BIGINT NOT NULL,
    ticket_type            TEXT NOT NULL,
    channel                TEXT NOT NULL,
    category               TEXT NOT NULL,
    directorate            TEXT,
    outlet                 TEXT,
    wilayat                TEXT,
    support_line           BIGINT,
    assignee               TEXT,
    status                 TEXT NOT NULL,
    first_response_seconds BIGINT,
    resolution_seconds     BIGINT,
    first_response_met     BOOLEAN,
    resolution_met         BOOLEAN,
    n_escalations          BIGINT NOT NULL,
    reopened               BOOLEAN NOT NULL,
    transferred            BOOLEAN NOT NULL,
    rejected               BOOLEAN NOT NULL,
    resolved_at_line_1     BOOLEAN NOT NULL,
    satisfaction_score     BIGINT,
    resolve_time           BIGINT,
    settle_time            BIGINT
);

CREATE INDEX ticket_facts_create_time ON ticket_facts (create_time);
CREATE INDEX ticket_facts_directorate ON ticket_facts (directorate, create_time);
CREATE INDEX ticket_facts_outlet ON ticket_facts (outlet, create_time);
CREATE INDEX ticket_facts_category ON ticket_facts (category, create_time);
CREATE INDEX ticket_facts_channel ON ticket_facts (channel, create_time);
CREATE INDEX ticket_facts_wilayat ON ticket_facts (wilayat, create_time);
CREATE INDEX ticket_facts_support_line ON ticket_facts (support_line, create_time);
CREATE INDEX ticket_facts_assignee ON ticket_facts (assignee, create_time);
