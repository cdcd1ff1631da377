-- Nothing to do on SQLite. On PostgreSQL this version adds `herd_post_messages`, which
-- commits a batch of chat posts in one round trip; SQLite runs in the process, where a
-- statement costs no round trip, so `Store::post_messages` sends it the statements one
-- by one as before. The version exists here too because every version is written for
-- both backends (see `migrate.rs`); this statement only marks it.
SELECT 1;
