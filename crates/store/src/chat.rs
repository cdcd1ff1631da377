//! Chat: rooms, their members, and their messages, numbered per room without gaps.
//!
//! A room's messages are numbered 1, 2, 3, ... by `seq`, and a reader that remembers the
//! last `seq` it saw resumes from there, on any replica. For that to miss nothing the
//! numbers must have no holes and commit in order, which is why they are not an identity
//! column: `rooms.last_seq` is raised and the message inserted in one transaction whose
//! first statement is that raise. On PostgreSQL the raise takes the room's row lock, so
//! posters to one room queue (posters to different rooms do not); on SQLite it takes the
//! file's write lock. A post that fails rolls the raise back with it.

use std::collections::HashMap;

use sqlx::postgres::Postgres;
use sqlx::{ColumnIndex, Decode, Executor, Row, Type};

use crate::sql::Db;
use crate::{Backend, Result, Store, StoreError};

/// A room as stored. `last_seq` is the `seq` of its newest message, 0 before the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub id: String,
    pub name: String,
    /// The user id of its creator.
    pub created_by: String,
    pub created_at: i64,
    pub last_seq: i64,
}

/// A message as stored, with its author's username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub room_id: String,
    /// Its place in the room: 1 for the first message, then one more for each.
    pub seq: i64,
    pub id: String,
    pub author_id: String,
    /// The author's username, read from their account.
    pub author: String,
    pub body: String,
    /// The id the author's client chose, which makes a retried post idempotent.
    pub client_id: String,
    pub created_at: i64,
}

/// What posting a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The message is stored, with the next `seq` of its room.
    New(MessageRecord),
    /// The author had already posted this `client_id` in the room: nothing was written,
    /// and this is the message stored then (whose body may differ from the retry's).
    Existing(MessageRecord),
}

impl Posted {
    /// The stored message, new or not.
    pub fn message(&self) -> &MessageRecord {
        match self {
            Posted::New(m) | Posted::Existing(m) => m,
        }
    }

    pub fn into_message(self) -> MessageRecord {
        match self {
            Posted::New(m) | Posted::Existing(m) => m,
        }
    }
}

/// One message of a batch for [`Store::post_messages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// A caller-chosen unique id.
    pub id: String,
    pub author_id: String,
    pub body: String,
    pub client_id: String,
    pub created_at: i64,
}

/// What one message of a batch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batched {
    Posted(Posted),
    /// Its author is not a member of the room: nothing was written for it.
    NotAMember,
}

impl Store {
    /// Creates a room and makes `creator` (a user id) its first member, in one
    /// transaction.
    pub async fn create_room(
        &self,
        id: &str,
        name: &str,
        creator: &str,
        now: i64,
    ) -> Result<RoomRecord> {
        dispatch!(self, db => db.create_room(id, name, creator, now).await)
    }

    pub async fn room(&self, id: &str) -> Result<Option<RoomRecord>> {
        dispatch!(self, db => db.room(id).await)
    }

    /// Rooms `user_id` is a member of, ordered by name (code point by code point, on
    /// both backends) then id.
    pub async fn rooms_of(&self, user_id: &str) -> Result<Vec<RoomRecord>> {
        dispatch!(self, db => db.rooms_of(user_id).await)
    }

    /// Makes `user_id` a member of the room: `Ok(true)` newly joined, `Ok(false)` already
    /// a member, [`StoreError::NotFound`] when there is no such room.
    pub async fn join_room(&self, room_id: &str, user_id: &str, now: i64) -> Result<bool> {
        dispatch!(self, db => db.join_room(room_id, user_id, now).await)
    }

    /// `Ok(true)` left, `Ok(false)` was not a member (which includes there being no such
    /// room).
    pub async fn leave_room(&self, room_id: &str, user_id: &str) -> Result<bool> {
        dispatch!(self, db => db.leave_room(room_id, user_id).await)
    }

    pub async fn is_member(&self, room_id: &str, user_id: &str) -> Result<bool> {
        dispatch!(self, db => db.is_member(room_id, user_id).await)
    }

    /// Appends a message with the next `seq` of the room, assigned inside the
    /// transaction: 1, 2, 3, ... per room, with no holes even when posters race or a
    /// post fails, committed in `seq` order.
    ///
    /// The same (`room_id`, `author_id`, `client_id`) again returns
    /// [`Posted::Existing`] with the message stored the first time, never a second copy,
    /// also when two identical posts race. `id` is a caller-chosen unique id. A room that
    /// does not exist is [`StoreError::NotFound`]. Membership is not checked here. A
    /// connection lost under it is tried once more on a fresh one, which the client id
    /// makes safe.
    pub async fn post_message(
        &self,
        room_id: &str,
        id: &str,
        author_id: &str,
        body: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Posted> {
        // As for a batch (see post_messages): one more try when the connection was lost.
        once_more_if_lost("a post", || async {
            dispatch!(self, db => {
                db.post_message(room_id, id, author_id, body, client_id, now)
                    .await
            })
        })
        .await
    }

    /// Appends a batch of messages to one room in one transaction, each from a member of
    /// the room, in the batch's order: what [`post_message`](Store::post_message) does for
    /// one, with one commit for all. Each new message takes the room's next `seq`; one
    /// whose (author, `client_id`) is already stored, or earlier in the batch, is
    /// [`Posted::Existing`] and takes none; one whose author is not a member is
    /// [`Batched::NotAMember`]. The answers are in the batch's order.
    ///
    /// An error means nothing of the batch was written. A connection lost under it
    /// ([`StoreError::is_connection_lost`]) is tried once more on a fresh one. A room
    /// that does not exist is [`StoreError::NotFound`].
    ///
    /// On PostgreSQL the whole batch is one round trip: one call of the
    /// `herd_post_messages` function, in autocommit.
    pub async fn post_messages(&self, room_id: &str, batch: &[NewMessage]) -> Result<Vec<Batched>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The pool can hand out a connection the server is ending (a restart,
        // `pg_terminate_backend`: its check before the handing-out passed a moment
        // earlier), or the server can end it mid-transaction. One more try on a fresh
        // connection saves the posts, and is safe even if the first commit did land:
        // each message's client id then returns the stored message, never a copy.
        once_more_if_lost("a batch of posts", || async {
            match &self.backend {
                // PostgreSQL runs the batch's statements itself, in `herd_post_messages`:
                // one round trip instead of seven, each of which waited for a core on a
                // busy server. SQLite runs in this process, where a statement costs no
                // round trip, so it is sent them one by one.
                Backend::Postgres(db) => db.post_messages_in_one_call(room_id, batch).await,
                Backend::Sqlite(db) => db.post_messages(room_id, batch).await,
            }
        })
        .await
    }

    /// At most `limit` messages of the room with `seq > after_seq`, ascending. Since
    /// seqs have no holes, a reader can tell from the first `seq` whether it missed any.
    pub async fn messages_after(
        &self,
        room_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<MessageRecord>> {
        // A read: one more try on a fresh connection, as for posts.
        once_more_if_lost("a history read", || async {
            dispatch!(self, db => db.messages_after(room_id, after_seq, limit).await)
        })
        .await
    }
}

/// Runs `call`, and once more when the connection it ran on was lost under it
/// ([`StoreError::is_connection_lost`]): the pool then hands out a fresh one. Only for
/// calls a second run cannot double: reads, and posts (their client ids return the
/// stored message, never a copy).
async fn once_more_if_lost<T, F, Fut>(what: &str, call: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match call().await {
        Err(e) if e.is_connection_lost() => {
            tracing::warn!(error = %e, "the connection was lost under {what}; trying it once more");
            call().await
        }
        done => done,
    }
}

/// `SELECT`s messages with their author's name (`[deleted]` once the account is deleted:
/// no username has brackets, so it cannot be mistaken for one), in the columns `message_from` reads,
/// from `messages m`; `$where` picks them (and may order and limit them).
macro_rules! select_messages {
    ($where:literal) => {
        concat!(
            "SELECT m.room_id, m.seq, m.id, m.author_id, \
             CASE WHEN u.deleted_at IS NULL THEN u.username ELSE '[deleted]' END, \
             m.body, m.client_id, m.created_at FROM messages m JOIN users u ON u.id = m.author_id WHERE ",
            $where
        )
    };
}

impl_queries! {
    async fn create_room(
        &self,
        id: &str,
        name: &str,
        creator: &str,
        now: i64,
    ) -> Result<RoomRecord> {
        let mut tx = DB::begin(self.pool()).await?;
        let insert = sqlx::query(
            "INSERT INTO rooms (id, name, created_by, created_at, last_seq) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(id)
        .bind(name)
        .bind(creator)
        .bind(now);
        tx.execute(insert).await?;
        let join = sqlx::query(
            "INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(creator)
        .bind(now);
        tx.execute(join).await?;
        tx.commit().await?;
        Ok(RoomRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            created_by: creator.to_owned(),
            created_at: now,
            last_seq: 0,
        })
    }

    async fn room(&self, id: &str) -> Result<Option<RoomRecord>> {
        let select = sqlx::query(
            "SELECT id, name, created_by, created_at, last_seq FROM rooms WHERE id = $1",
        )
        .bind(id);
        let row = self.pool().fetch_optional(select).await?;
        Ok(row.map(|r| room_from(&r)))
    }

    async fn rooms_of(&self, user_id: &str) -> Result<Vec<RoomRecord>> {
        let select = sqlx::query(
            "SELECT r.id, r.name, r.created_by, r.created_at, r.last_seq \
             FROM rooms r JOIN room_members m ON m.room_id = r.id \
             WHERE m.user_id = $1 ORDER BY r.name, r.id",
        )
        .bind(user_id);
        let rows = self.pool().fetch_all(select).await?;
        Ok(rows.iter().map(room_from).collect())
    }

    async fn join_room(&self, room_id: &str, user_id: &str, now: i64) -> Result<bool> {
        // The WHERE also settles SQLite's parsing ambiguity of INSERT ... SELECT with an
        // ON CONFLICT clause, which it needs one for.
        let join = sqlx::query(
            "INSERT INTO room_members (room_id, user_id, joined_at) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM rooms WHERE id = $1) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now);
        if DB::rows_affected(&self.pool().execute(join).await?) == 1 {
            return Ok(true);
        }
        // Nothing inserted: already a member, or no such room. Rooms are never deleted,
        // so a room seen missing by the insert is still missing here and vice versa.
        let exists = sqlx::query("SELECT COUNT(*) FROM rooms WHERE id = $1").bind(room_id);
        if self.pool().fetch_one(exists).await?.get::<i64, _>(0) == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(false)
    }

    async fn leave_room(&self, room_id: &str, user_id: &str) -> Result<bool> {
        let delete = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id);
        Ok(DB::rows_affected(&self.pool().execute(delete).await?) == 1)
    }

    async fn is_member(&self, room_id: &str, user_id: &str) -> Result<bool> {
        let select =
            sqlx::query("SELECT COUNT(*) FROM room_members WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id);
        Ok(self.pool().fetch_one(select).await?.get::<i64, _>(0) > 0)
    }

    async fn post_message(
        &self,
        room_id: &str,
        id: &str,
        author_id: &str,
        body: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Posted> {
        // A retry usually comes after the first post committed: answer it without
        // taking a lock or a seq.
        if let Some(first) = self.posted(room_id, author_id, client_id).await? {
            return Ok(Posted::Existing(first));
        }

        let mut tx = DB::begin(self.pool()).await?;
        // The write comes first, as in `rotate_refresh`: on SQLite the transaction then
        // holds the write lock from its first statement, so it cannot fail to upgrade a
        // read lock; on PostgreSQL (READ COMMITTED) it takes the room's row lock, and a
        // racing poster's UPDATE waits for this commit and then raises the committed
        // value. Either way seqs are handed out one at a time and commit in order.
        let raise = sqlx::query(
            "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
        )
        .bind(room_id);
        let Some(row) = tx.fetch_optional(raise).await? else {
            return Err(StoreError::NotFound);
        };
        let seq: i64 = row.get(0);

        let insert = sqlx::query(
            "INSERT INTO messages (id, room_id, seq, author_id, body, client_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(room_id)
        .bind(seq)
        .bind(author_id)
        .bind(body)
        .bind(client_id)
        .bind(now);
        if let Err(e) = tx.execute(insert).await {
            // An identical post committed between the check above and the insert. The
            // rollback hands the seq back, and the winner's message is the answer.
            // Which unique key broke is not asked (SQLite does not say): if no earlier
            // post with this client id is found, the error stands.
            tx.rollback().await?;
            if is_unique_violation(&e) {
                if let Some(first) = self.posted(room_id, author_id, client_id).await? {
                    return Ok(Posted::Existing(first));
                }
            }
            return Err(e.into());
        }

        // Read back in the transaction, for the author's name; this is also exactly the
        // record `messages_after` will return.
        let select = sqlx::query(select_messages!("m.room_id = $1 AND m.seq = $2"))
            .bind(room_id)
            .bind(seq);
        let message = message_from(&tx.fetch_one(select).await?);
        tx.commit().await?;
        Ok(Posted::New(message))
    }

    /// The batch commit, statement by statement: what SQLite runs. PostgreSQL runs the
    /// same statements with the same meaning inside `herd_post_messages`
    /// (`migrations/postgres/0008_post_messages.sql`), so a change here is a change there.
    async fn post_messages(&self, room_id: &str, batch: &[NewMessage]) -> Result<Vec<Batched>> {
        let mut tx = DB::begin(self.pool()).await?;
        // The room's row first, as in `post_message`: on PostgreSQL its lock (held to the
        // commit) queues every other poster to the room, on any replica, and the reads
        // below then see what they committed; on SQLite the write lock is taken at once.
        let lock = sqlx::query(
            "UPDATE rooms SET last_seq = last_seq WHERE id = $1 RETURNING last_seq",
        )
        .bind(room_id);
        let Some(row) = tx.fetch_optional(lock).await? else {
            return Err(StoreError::NotFound);
        };
        let mut seq: i64 = row.get(0);

        let mut authors: Vec<&str> = Vec::new();
        let mut client_ids: Vec<&str> = Vec::new();
        for m in batch {
            if !authors.contains(&m.author_id.as_str()) {
                authors.push(&m.author_id);
            }
            if !client_ids.contains(&m.client_id.as_str()) {
                client_ids.push(&m.client_id);
            }
        }
        // The members among the authors, with their names.
        let members_sql = format!(
            "SELECT u.id, u.username FROM room_members r JOIN users u ON u.id = r.user_id \
             WHERE r.room_id = $1 AND r.user_id IN ({})",
            placeholders(2, authors.len())
        );
        let mut members = sqlx::query(&members_sql).bind(room_id);
        for author in &authors {
            members = members.bind(*author);
        }
        let names: HashMap<String, String> = tx
            .fetch_all(members)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // What was posted before under these client ids (a superset: any author with any
        // of the ids; the pairs are matched below).
        let posted_sql = format!(
            "SELECT m.room_id, m.seq, m.id, m.author_id, u.username, m.body, m.client_id, \
             m.created_at FROM messages m JOIN users u ON u.id = m.author_id \
             WHERE m.room_id = $1 AND m.author_id IN ({}) AND m.client_id IN ({})",
            placeholders(2, authors.len()),
            placeholders(2 + authors.len(), client_ids.len())
        );
        let mut posted = sqlx::query(&posted_sql).bind(room_id);
        for author in &authors {
            posted = posted.bind(*author);
        }
        for client_id in &client_ids {
            posted = posted.bind(*client_id);
        }
        let mut stored: HashMap<(String, String), MessageRecord> = tx
            .fetch_all(posted)
            .await?
            .iter()
            .map(|r| {
                let m = message_from(r);
                ((m.author_id.clone(), m.client_id.clone()), m)
            })
            .collect();

        let mut answers = Vec::with_capacity(batch.len());
        let mut fresh: Vec<MessageRecord> = Vec::new();
        for m in batch {
            let Some(author) = names.get(&m.author_id) else {
                answers.push(Batched::NotAMember);
                continue;
            };
            let key = (m.author_id.clone(), m.client_id.clone());
            if let Some(first) = stored.get(&key) {
                answers.push(Batched::Posted(Posted::Existing(first.clone())));
                continue;
            }
            seq += 1;
            let record = MessageRecord {
                room_id: room_id.to_owned(),
                seq,
                id: m.id.clone(),
                author_id: m.author_id.clone(),
                author: author.clone(),
                body: m.body.clone(),
                client_id: m.client_id.clone(),
                created_at: m.created_at,
            };
            stored.insert(key, record.clone());
            answers.push(Batched::Posted(Posted::New(record.clone())));
            fresh.push(record);
        }
        if !fresh.is_empty() {
            let rows: Vec<String> = (0..fresh.len())
                .map(|i| format!("({})", placeholders(1 + 7 * i, 7)))
                .collect();
            let insert_sql = format!(
                "INSERT INTO messages (id, room_id, seq, author_id, body, client_id, created_at) \
                 VALUES {}",
                rows.join(", ")
            );
            let mut insert = sqlx::query(&insert_sql);
            for m in &fresh {
                insert = insert
                    .bind(m.id.as_str())
                    .bind(m.room_id.as_str())
                    .bind(m.seq)
                    .bind(m.author_id.as_str())
                    .bind(m.body.as_str())
                    .bind(m.client_id.as_str())
                    .bind(m.created_at);
            }
            tx.execute(insert).await?;
            let raise = sqlx::query("UPDATE rooms SET last_seq = $2 WHERE id = $1")
                .bind(room_id)
                .bind(seq);
            tx.execute(raise).await?;
        }
        tx.commit().await?;
        Ok(answers)
    }

    async fn messages_after(
        &self,
        room_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<MessageRecord>> {
        // A negative LIMIT means "no limit" to SQLite and is an error to PostgreSQL;
        // clamped, it means none on both.
        let select = sqlx::query(select_messages!(
            "m.room_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3"
        ))
        .bind(room_id)
        .bind(after_seq)
        .bind(limit.max(0));
        let rows = self.pool().fetch_all(select).await?;
        Ok(rows.iter().map(message_from).collect())
    }

    /// The message `author_id` posted in the room under `client_id`, if any.
    async fn posted(
        &self,
        room_id: &str,
        author_id: &str,
        client_id: &str,
    ) -> Result<Option<MessageRecord>> {
        let select = sqlx::query(select_messages!(
            "m.room_id = $1 AND m.author_id = $2 AND m.client_id = $3"
        ))
        .bind(room_id)
        .bind(author_id)
        .bind(client_id);
        let row = self.pool().fetch_optional(select).await?;
        Ok(row.map(|r| message_from(&r)))
    }
}

impl Db<Postgres> {
    /// [`Store::post_messages`] on PostgreSQL: the statements of the generic
    /// `post_messages`, run by the server in `herd_post_messages` (migration 0008) and
    /// sent as one statement in autocommit, whose implicit transaction commits as it
    /// returns. The batch goes as one array per column; the answer is a row per message
    /// in the batch's order, its stored message in `select_messages!`'s columns and then
    /// what it came to. The batch must not be empty.
    async fn post_messages_in_one_call(
        &self,
        room_id: &str,
        batch: &[NewMessage],
    ) -> Result<Vec<Batched>> {
        let ids: Vec<&str> = batch.iter().map(|m| m.id.as_str()).collect();
        let authors: Vec<&str> = batch.iter().map(|m| m.author_id.as_str()).collect();
        let bodies: Vec<&str> = batch.iter().map(|m| m.body.as_str()).collect();
        let client_ids: Vec<&str> = batch.iter().map(|m| m.client_id.as_str()).collect();
        let created_at: Vec<i64> = batch.iter().map(|m| m.created_at).collect();
        let call = sqlx::query(
            "SELECT room_id, seq, id, author_id, author, body, client_id, created_at, outcome \
             FROM herd_post_messages($1, $2, $3, $4, $5, $6) ORDER BY ord",
        )
        .bind(room_id)
        .bind(ids)
        .bind(authors)
        .bind(bodies)
        .bind(client_ids)
        .bind(created_at);
        let rows = self.pool().fetch_all(call).await?;
        // The function answers every message of a room that exists, and none of one that
        // does not.
        if rows.is_empty() {
            return Err(StoreError::NotFound);
        }
        if rows.len() != batch.len() {
            return Err(unexpected(format!(
                "herd_post_messages answered {} rows for {} messages",
                rows.len(),
                batch.len()
            )));
        }
        rows.iter()
            .map(|r| match r.get::<&str, _>(8) {
                "new" => Ok(Batched::Posted(Posted::New(message_from(r)))),
                "existing" => Ok(Batched::Posted(Posted::Existing(message_from(r)))),
                "not a member" => Ok(Batched::NotAMember),
                other => Err(unexpected(format!(
                    "herd_post_messages answered the outcome {other:?}"
                ))),
            })
            .collect()
    }
}

/// An answer from the database that the store's own SQL cannot give: a bug, reported as
/// the database error it would be if the server had misspoken.
fn unexpected(what: String) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(what))
}

fn room_from<R>(r: &R) -> RoomRecord
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    RoomRecord {
        id: r.get(0),
        name: r.get(1),
        created_by: r.get(2),
        created_at: r.get(3),
        last_seq: r.get(4),
    }
}

/// A row of `select_messages!`.
fn message_from<R>(r: &R) -> MessageRecord
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    MessageRecord {
        room_id: r.get(0),
        seq: r.get(1),
        id: r.get(2),
        author_id: r.get(3),
        author: r.get(4),
        body: r.get(5),
        client_id: r.get(6),
        created_at: r.get(7),
    }
}

/// `$first, $first+1, ...`: `n` numbered placeholders, which both backends take.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
