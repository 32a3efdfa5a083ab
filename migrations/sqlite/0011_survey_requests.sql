-- The survey ledger (see docs/satisfaction.md): every time a beneficiary is asked to rate a
-- ticket (a contact-centre call-back that rated, was declined or found no answer, or a
-- rating that arrived from the national platform). The survey policy reads it: nobody is
-- asked about another ticket within the quiet period.
--
-- `beneficiary_hash` is the SHA-256 of the normalised civil ID, else phone, else e-mail of
-- the ticket's reporter at the time (never the value itself); NULL for an anonymous ticket.
-- Rows are written in the same transaction as the rating they come with.
CREATE TABLE survey_requests (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id        TEXT NOT NULL REFERENCES tickets (id),
    beneficiary_hash BLOB CHECK (length(beneficiary_hash) = 32),
    ask_time         INTEGER NOT NULL,
    channel          TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    actor            TEXT NOT NULL
);

-- The policy check (was this beneficiary asked since ...?) and the call-back list's reads of
-- its candidates' beneficiaries.
CREATE INDEX survey_requests_beneficiary ON survey_requests (beneficiary_hash, ask_time);
-- A ticket's survey history.
CREATE INDEX survey_requests_ticket ON survey_requests (ticket_id, seq);
