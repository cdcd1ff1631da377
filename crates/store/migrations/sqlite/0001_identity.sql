-- Accounts, login sessions, refresh tokens (stored only as hashes), the shared signing-key
-- ring, revocations and the store-wide secrets. Times are unix seconds.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    CONSTRAINT users_username_key UNIQUE (username)
);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE refresh_tokens (
    hash           BLOB PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions (id),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    spent_at       INTEGER,
    successor_hash BLOB
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    public     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    sign_from  INTEGER NOT NULL
);

-- An append-only log that replicas tail: a row's id orders it, and rows may be deleted
-- once every access token of that session has expired.
CREATE TABLE revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX revocations_expires ON revocations (expires_at);

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
