-- A claim takes the oldest due entries: it walks the pending entries in queue order and stops
-- at its limit. With the index on (state, next_attempt_at, seq) the planner walked the
-- primary key instead and filtered every delivered entry on the way (delivered entries stay),
-- about 0.2 s a claim behind 45,000 delivered ones; on (state, seq) it walks the pending
-- entries alone, in order, and checks `next_attempt_at` and the lease on the way.
DROP INDEX outbox_claim;
CREATE INDEX outbox_claim ON outbox (state, seq);
