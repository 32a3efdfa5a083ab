-- Ticket snapshots are about 2 KB of JSON: above the TOAST threshold, so each copy (the
-- ticket, its event's snapshot, its push), and a ticket's search text and vector, are
-- compressed when written. pglz took about 7% of
-- the writer's CPU in a CreateTicket profile (docs/benchmarks.md, bench-pg); lz4 compresses
-- several times faster. Applies to values written from now on; old values stay readable.
-- A server built without lz4 keeps pglz (the statement is refused as not supported).
DO $$
BEGIN
    ALTER TABLE tickets ALTER COLUMN body SET COMPRESSION lz4,
        ALTER COLUMN search_text SET COMPRESSION lz4,
        ALTER COLUMN search_vector SET COMPRESSION lz4;
    ALTER TABLE ticket_events ALTER COLUMN body SET COMPRESSION lz4,
        ALTER COLUMN ticket_body SET COMPRESSION lz4;
    ALTER TABLE outbox ALTER COLUMN ticket_body SET COMPRESSION lz4,
        ALTER COLUMN event_body SET COMPRESSION lz4;
    ALTER TABLE request_records ALTER COLUMN response SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server; ticket bodies stay compressed with pglz';
END
$$;
