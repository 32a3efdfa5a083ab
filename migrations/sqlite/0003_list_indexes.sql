-- A directorate's queue by status, newest first: the directorate apps' main list.
CREATE INDEX tickets_directorate_status_seq ON tickets (directorate, status, seq);
