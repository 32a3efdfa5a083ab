-- The pull from the national platform's change feed.

-- The newest case version applied from the feed, per linked case: an older change is skipped.
ALTER TABLE platform_cases ADD COLUMN pulled_version INTEGER NOT NULL DEFAULT 0;

-- Every feed change taken in, by the platform's change id: a change seen twice is applied
-- once. Also the record of what became of each change, for the reconcile report.
CREATE TABLE platform_inbox (
    change_id    TEXT PRIMARY KEY NOT NULL,
    case_id      TEXT NOT NULL,
    case_version INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    detail       TEXT,
    ticket_id    TEXT,
    apply_time   INTEGER NOT NULL
);
CREATE INDEX platform_inbox_case ON platform_inbox (case_id);
CREATE INDEX platform_inbox_outcome ON platform_inbox (outcome, apply_time);

-- The cursor the pull resumes after, committed with the changes it covers. One row.
CREATE TABLE platform_pull (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    cursor      TEXT NOT NULL,
    n_changes   INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
