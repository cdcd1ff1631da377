-- Sessions of the `shared` strategy when there is no Redis: keyed by the SHA-256 of the
-- session id the client holds, so the table holds no live credential.
CREATE TABLE shared_sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    username   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX shared_sessions_last_seen ON shared_sessions (last_seen);
