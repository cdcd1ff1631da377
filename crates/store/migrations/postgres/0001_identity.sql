-- Accounts, login sessions, refresh tokens (stored only as hashes), the shared signing-key
-- ring, revocations and the store-wide secrets. Times are unix seconds. This mirrors
-- migrations/sqlite/0001_identity.sql table for table and constraint for constraint, so
-- that the code (and the constraint names it maps errors by) is the same on both.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT users_username_key UNIQUE (username)
);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE refresh_tokens (
    hash           BYTEA PRIMARY KEY,
    session_id     TEXT NOT NULL REFERENCES sessions (id),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    spent_at       BIGINT,
    successor_hash BYTEA
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    public     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    sign_from  BIGINT NOT NULL
);

-- An append-only log that replicas tail: a row's id orders it, and rows may be deleted
-- once every access token of that session has expired. Writers take an advisory lock
-- before inserting (see the store's `Lock::Revocations`), so ids commit in order.
CREATE TABLE revocations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revocations_expires ON revocations (expires_at);

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
