-- The event log the SQL-tail bus polls: replicas sharing one database publish to it and
-- read what was appended after the last id they saw. Rows are pruned after a while.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_created ON events (created_at);
