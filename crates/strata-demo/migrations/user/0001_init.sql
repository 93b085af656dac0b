-- Portable SQL: runs as is on SQLite and PostgreSQL.
CREATE TABLE countries (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    country TEXT NOT NULL REFERENCES countries (code),
    version BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    published_ms BIGINT
);
CREATE INDEX outbox_pending ON outbox (published_ms, created_ms);

CREATE TABLE processed_events (
    id TEXT PRIMARY KEY,
    processed_ms BIGINT NOT NULL
);
