-- Portable SQL: runs as is on SQLite and PostgreSQL.
CREATE TABLE payments (
    id BIGINT PRIMARY KEY,
    order_id BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL
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
