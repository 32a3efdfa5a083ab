-- The search vector is the search text's words, as they are. balagh normalises the text
-- itself (src/domain/text.rs: Arabic letter forms, diacritics, digits, case, separators), so
-- the words are already the lexemes; PostgreSQL's text parser (`to_tsvector`) only repeated
-- that work, and was 11% of the writer's CPU in a CreateTicket profile (docs/benchmarks.md,
-- bench-pg). It also disagreed with balagh on what a letter is (it dropped "²" and "½",
-- which the normaliser keeps). Queries are built the same way: each normalised word is a
-- prefix term of a `tsquery` literal, with no parser in between.
--
-- A stored generated column cannot change its expression in place before PostgreSQL 17, so
-- the column and its index are made again: the table is rewritten once, under its exclusive
-- lock (about a minute per million tickets; docs/operations.md, "Upgrading").
-- The rewrite compresses with lz4 where the server has it, as 0011 set for new values.
DO $$
BEGIN
    PERFORM set_config('default_toast_compression', 'lz4', true);
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server; the search vector stays compressed with pglz';
END
$$;
-- A lexeme holds at most 2047 bytes; to_tsvector skipped longer words, array_to_tsvector refuses
-- them. balagh leaves them out of the search text from now on; older rows are trimmed the
-- same way.
UPDATE tickets
SET search_text = array_to_string(ARRAY(
        SELECT w FROM unnest(string_to_array(search_text, ' ')) AS w
        WHERE octet_length(w) < 2048), ' ')
WHERE octet_length(search_text) >= 2048
    AND EXISTS (SELECT 1 FROM unnest(string_to_array(search_text, ' ')) AS w
                WHERE octet_length(w) >= 2048);
ALTER TABLE tickets DROP COLUMN search_vector;
ALTER TABLE tickets ADD COLUMN search_vector TSVECTOR GENERATED ALWAYS AS
    (array_to_tsvector(array_remove(string_to_array(search_text, ' '), ''))) STORED;
CREATE INDEX tickets_search ON tickets USING GIN (search_vector);

-- And so are the values written from now on, as in 0011.
DO $$
BEGIN
    ALTER TABLE tickets ALTER COLUMN search_vector SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server; the search vector stays compressed with pglz';
END
$$;
