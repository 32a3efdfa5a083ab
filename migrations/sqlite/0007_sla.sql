-- Settings kept as versioned JSON documents (the business calendar, the SLA settings), with
-- an audit trail of every version.
CREATE TABLE settings (
    key         TEXT PRIMARY KEY NOT NULL,
    version     INTEGER NOT NULL,
    value       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    update_time INTEGER NOT NULL
);

CREATE TABLE setting_changes (
    key         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    value       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    change_time INTEGER NOT NULL,
    PRIMARY KEY (key, version)
);

-- The SLA projection: for each open ticket with a deadline, when the escalation sweep next
-- has something to record and when its soonest deadline is due. Rebuilt from the event log;
-- never the source of truth (the ticket's history is).
CREATE TABLE sla_projection (
    ticket_id       TEXT PRIMARY KEY NOT NULL,
    reference       TEXT NOT NULL,
    directorate     TEXT,
    next_alert_time INTEGER,
    next_due_time   INTEGER,
    next_due_kind   TEXT
);

CREATE INDEX sla_projection_alert ON sla_projection (next_alert_time)
    WHERE next_alert_time IS NOT NULL;
CREATE INDEX sla_projection_due ON sla_projection (next_due_time)
    WHERE next_due_time IS NOT NULL;
CREATE INDEX sla_projection_directorate_due ON sla_projection (directorate, next_due_time)
    WHERE next_due_time IS NOT NULL;

CREATE TABLE sla_progress (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    cursor           INTEGER NOT NULL,
    calendar_version INTEGER NOT NULL,
    sla_version      INTEGER NOT NULL
);
