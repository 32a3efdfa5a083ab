-- Which case on the national platform stands for which local ticket.
CREATE TABLE platform_cases (
    ticket_id   UUID PRIMARY KEY,
    case_id     TEXT NOT NULL UNIQUE,
    create_time BIGINT NOT NULL
);
