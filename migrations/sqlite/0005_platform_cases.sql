-- Which case on the national platform stands for which local ticket.
CREATE TABLE platform_cases (
    ticket_id   TEXT PRIMARY KEY NOT NULL,
    case_id     TEXT NOT NULL UNIQUE,
    create_time INTEGER NOT NULL
);
