-- What a user sees of their own sessions, and accounts that were deleted.
--
-- A session remembers the client address and user agent its login came from (either may
-- be unknown: NULL) and when it last refreshed (NULL until it does), so its owner can
-- tell their sessions apart. The user agent is cut to 256 characters before it is stored.
ALTER TABLE sessions ADD COLUMN client_addr TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN refreshed_at BIGINT;
-- "Which sessions does this user have", for listing and ending them.
CREATE INDEX sessions_user ON sessions (user_id);

-- A deleted account stays as a tombstone: its messages keep their author (so rooms' seqs
-- stay gap-free and history keeps its shape) and its username stays taken. Its password
-- hash is emptied, which no password verifies, and it can no longer log in.
ALTER TABLE users ADD COLUMN deleted_at BIGINT;
