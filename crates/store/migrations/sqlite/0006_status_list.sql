-- The Token Status List (draft-ietf-oauth-status-list): each token session holds an index
-- into herd's one status list, which its access tokens carry in their `status` claim.
-- A revocation copies the index into its log line, so the bit stays set while the line
-- lives (as long as any of the session's access tokens can pass), after the session row
-- itself is pruned. Sessions made before this migration have no index: their tokens
-- carry no `status` claim.
ALTER TABLE sessions ADD COLUMN status_idx INTEGER;
CREATE UNIQUE INDEX sessions_status_idx ON sessions (status_idx);
ALTER TABLE revocations ADD COLUMN status_idx INTEGER;

-- Indices of pruned sessions, each free for a new session once `free_at` (the last
-- second one of the old session's access tokens could pass) is far enough behind: see
-- identity's `status_list` module for the margin.
CREATE TABLE status_free (
    idx     INTEGER PRIMARY KEY,
    free_at INTEGER NOT NULL
);
CREATE INDEX status_free_at ON status_free (free_at);

-- The next index never handed out: the list's length. One row.
CREATE TABLE status_list (
    next_idx INTEGER NOT NULL
);
INSERT INTO status_list (next_idx) VALUES (0);
