-- Chat: rooms, who is in them, and their messages. Times are unix seconds. This mirrors
-- migrations/sqlite/0004_chat.sql table for table and constraint for constraint.
--
-- A room's messages are numbered 1, 2, 3, ... with no holes: `rooms.last_seq` is the
-- number of the newest one, and a post raises it and inserts the message in one
-- transaction, so a post that fails takes its number back with it. (An identity column
-- or a sequence could not do this: PostgreSQL never hands a number back.)

-- COLLATE "C" orders names by code point, as SQLite's default BINARY collation does, so
-- that a user's room list comes back in the same order whichever the backend.
CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE room_members (
    room_id   TEXT NOT NULL REFERENCES rooms (id),
    user_id   TEXT NOT NULL REFERENCES users (id),
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
-- "Which rooms is this user in"; the primary key already serves "who is in this room".
CREATE INDEX room_members_user ON room_members (user_id);

-- messages_room_seq_key is also the index history is read by (room, seq > n).
-- messages_client_id_key makes a retried post find the first instead of adding a copy.
CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES rooms (id),
    seq        BIGINT NOT NULL,
    author_id  TEXT NOT NULL REFERENCES users (id),
    body       TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT messages_room_seq_key UNIQUE (room_id, seq),
    CONSTRAINT messages_client_id_key UNIQUE (room_id, author_id, client_id)
);
