-- The event log the SQL-tail bus polls: replicas sharing one database publish to it and
-- read what was appended after the last id they saw. Rows are pruned after a while.
-- Writers take an advisory lock before inserting (see the store's `Lock::Events`), so ids
-- commit in order.
CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_created ON events (created_at);
