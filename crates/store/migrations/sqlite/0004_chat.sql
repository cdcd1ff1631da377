-- Chat: rooms, who is in them, and their messages. Times are unix seconds.
--
-- A room's messages are numbered 1, 2, 3, ... with no holes: `rooms.last_seq` is the
-- number of the newest one, and a post raises it and inserts the message in one
-- transaction, so a post that fails takes its number back with it.

CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE room_members (
    room_id   TEXT NOT NULL REFERENCES rooms (id),
    user_id   TEXT NOT NULL REFERENCES users (id),
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
-- "Which rooms is this user in"; the primary key already serves "who is in this room".
CREATE INDEX room_members_user ON room_members (user_id);

-- messages_room_seq_key is also the index history is read by (room, seq > n).
-- messages_client_id_key makes a retried post find the first instead of adding a copy.
CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES rooms (id),
    seq        INTEGER NOT NULL,
    author_id  TEXT NOT NULL REFERENCES users (id),
    body       TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT messages_room_seq_key UNIQUE (room_id, seq),
    CONSTRAINT messages_client_id_key UNIQUE (room_id, author_id, client_id)
);
