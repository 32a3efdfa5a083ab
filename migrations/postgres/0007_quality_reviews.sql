-- Quality reviews of staff (see docs/quality.md): a supervisor's scores of one employee's
-- handling of one ticket on the rubric in force. One review per ticket and employee. The
-- body holds the whole review as JSON (scores with the weights they counted with); the
-- columns beside it are what lists and the sample filter on.
CREATE TABLE quality_reviews (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id      UUID NOT NULL REFERENCES tickets (id),
    employee_id    TEXT NOT NULL,
    reviewer       TEXT NOT NULL,
    review_time    BIGINT NOT NULL,
    weighted_score DOUBLE PRECISION NOT NULL,
    body           JSONB NOT NULL,
    UNIQUE (ticket_id, employee_id)
);

CREATE INDEX quality_reviews_employee ON quality_reviews (employee_id, seq);
CREATE INDEX quality_reviews_review_time ON quality_reviews (review_time);
