-- Portable SQL: runs as is on SQLite and PostgreSQL.
CREATE TABLE categories (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE products (
    id BIGINT PRIMARY KEY,
    category_id BIGINT NOT NULL REFERENCES categories (id),
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);

-- The transactional outbox: written in the same transaction as the change it announces,
-- published by the relay, marked when published.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    published_ms BIGINT
);
CREATE INDEX outbox_pending ON outbox (published_ms, created_ms);

-- Events this service has handled, so a redelivered one is skipped.
CREATE TABLE processed_events (
    id TEXT PRIMARY KEY,
    processed_ms BIGINT NOT NULL
);
