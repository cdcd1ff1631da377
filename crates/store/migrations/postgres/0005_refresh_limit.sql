-- The per-session refresh meter: the theoretical arrival time (GCRA) of the session's next
-- refresh, in unix seconds; 0 for a session that never refreshed.
ALTER TABLE sessions ADD COLUMN refresh_tat BIGINT NOT NULL DEFAULT 0;
