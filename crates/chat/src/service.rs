//! [`Chat`], the use cases, and the values they answer with.

use std::fmt;
use std::sync::Arc;

use herd_bus::Bus;
use herd_store::{MessageRecord, NewMessage, RoomRecord, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::commit::{Committer, Submitted};
use crate::domain::{
    stored, ClientId, MessageBody, MessageId, PageSize, RoomId, RoomName, Seq, UserId,
};
use crate::follow::{Decoded, Follow};
use crate::quota::{Limits, Quota};
use crate::timings::Timings;

/// What time it is, in unix seconds. Chat reads no clock of its own: whoever builds it
/// decides what time it is (herd passes identity's, so tests can move it).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> i64;
}

impl<F: Fn() -> i64 + Send + Sync + 'static> Clock for F {
    fn now(&self) -> i64 {
        self()
    }
}

/// Why a chat operation was refused or failed. Cheap to clone: every post of a batch
/// whose commit failed is answered with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatError {
    #[error("no such room")]
    NoSuchRoom,
    #[error("join the room first")]
    NotAMember,
    /// The user posted as many messages as [`Limits::posts_per_second`] allows.
    #[error("too many messages; retry in {retry_after} s")]
    TooManyPosts { retry_after: u64 },
    /// The user created as many rooms as [`Limits::rooms_per_minute`] allows.
    #[error("too many rooms created; retry in {retry_after} s")]
    TooManyRooms { retry_after: u64 },
    /// The store refused a value as malformed; the caller's to fix. Values are parsed
    /// at the edge, so this is a rule the parsers missed, not a retryable failure.
    #[error("the store refused the value: {0}")]
    Rejected(#[source] Arc<StoreError>),
    /// The store could not be reached; nothing was acknowledged, so a retry is safe.
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] Arc<StoreError>),
    #[error("the store failed: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The post's commit was abandoned (the replica is stopping) before it said whether
    /// it committed: a retry with the same client id is safe, and says.
    #[error("the post was abandoned before its commit was known")]
    Abandoned,
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> ChatError {
        match e {
            StoreError::NotFound => ChatError::NoSuchRoom,
            e if e.is_bad_input() => ChatError::Rejected(Arc::new(e)),
            e if e.is_unavailable() => ChatError::Unavailable(Arc::new(e)),
            e => ChatError::Store(Arc::new(e)),
        }
    }
}

pub type Result<T, E = ChatError> = std::result::Result<T, E>;

/// A room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: RoomId,
    pub name: RoomName,
    pub created_by: UserId,
    /// Unix seconds.
    pub created_at: i64,
    /// The seq of its newest message, [`Seq::ZERO`] before the first.
    pub last_seq: Seq,
}

impl From<RoomRecord> for Room {
    fn from(r: RoomRecord) -> Room {
        Room {
            id: stored::room_id(r.id),
            name: stored::room_name(r.name),
            created_by: UserId::new(r.created_by),
            created_at: r.created_at,
            last_seq: stored::seq(r.last_seq),
        }
    }
}

/// A stored message. Its JSON is what the bus carries between replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub room: RoomId,
    pub seq: Seq,
    pub id: MessageId,
    /// The author's username.
    pub author: String,
    pub author_id: UserId,
    pub body: MessageBody,
    pub client_id: ClientId,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<MessageRecord> for Message {
    fn from(m: MessageRecord) -> Message {
        Message {
            room: stored::room_id(m.room_id),
            seq: stored::seq(m.seq),
            id: stored::message_id(m.id),
            author: m.author,
            author_id: UserId::new(m.author_id),
            body: stored::body(m.body),
            client_id: stored::client_id(m.client_id),
            created_at: m.created_at,
        }
    }
}

/// What a post did: the stored message, and whether it was stored before (a retried
/// post, whose body may differ from the retry's; the original is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub message: Message,
    pub duplicate: bool,
}

/// A page of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Ascending by seq.
    pub messages: Vec<Message>,
    /// Where the next page starts: the last seq returned, or where this one started
    /// when it is empty.
    pub next_after: Seq,
}

/// Rooms, membership and messages, over the store (the truth) and the bus (the news).
/// Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub(crate) store: Store,
    bus: Bus,
    clock: Arc<dyn Clock>,
    posts: Arc<Quota>,
    rooms: Arc<Quota>,
    /// Announcements decoded once for every follow on this replica.
    decoded: Arc<Decoded>,
    /// Posts waiting for their room's next commit.
    pub(crate) committer: Arc<Committer>,
    /// Told what each stage of a post took.
    pub(crate) timings: Arc<dyn Timings>,
}

impl fmt::Debug for Chat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chat")
            .field("store", &self.store)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

/// The bus topic that carries a room's new messages, and the notices of members who
/// left it.
pub(crate) fn topic(room: &RoomId) -> String {
    format!("room:{room}")
}

/// What the room's topic carries besides messages: a member left, so every follow of
/// theirs, on every replica, ends. Its JSON has none of a [`Message`]'s fields, so
/// neither is read as the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Left {
    pub(crate) left: UserId,
}

impl Chat {
    pub fn new(store: Store, bus: Bus, clock: impl Clock) -> Chat {
        Chat {
            store,
            bus,
            clock: Arc::new(clock),
            posts: Arc::new(Quota::new(Limits::default().posts_per_second, 1)),
            rooms: Arc::new(Quota::new(Limits::default().rooms_per_minute, 60)),
            decoded: Arc::default(),
            committer: Arc::default(),
            timings: Arc::new(()),
        }
    }

    /// The same chat, telling `timings` what each stage of a post took.
    pub fn with_timings(self, timings: Arc<dyn Timings>) -> Chat {
        Chat { timings, ..self }
    }

    /// The same chat, with these per-user limits (fresh counts).
    pub fn with_limits(self, limits: Limits) -> Chat {
        Chat {
            posts: Arc::new(Quota::new(limits.posts_per_second, 1)),
            rooms: Arc::new(Quota::new(limits.rooms_per_minute, 60)),
            ..self
        }
    }

    /// The same chat, announcing and following over `bus` instead.
    pub fn with_bus(self, bus: Bus) -> Chat {
        Chat { bus, ..self }
    }

    /// Creates a room; its creator is its first member.
    pub async fn create_room(&self, creator: &UserId, name: RoomName) -> Result<Room> {
        self.rooms
            .take(creator.as_str(), self.clock.now())
            .map_err(|retry_after| ChatError::TooManyRooms { retry_after })?;
        let id = RoomId::random();
        let record = self
            .store
            .create_room(
                id.as_str(),
                name.as_str(),
                creator.as_str(),
                self.clock.now(),
            )
            .await?;
        Ok(Room::from(record))
    }

    /// The rooms `member` is in, by name then id.
    pub async fn rooms_of(&self, member: &UserId) -> Result<Vec<Room>> {
        let records = self.store.rooms_of(member.as_str()).await?;
        Ok(records.into_iter().map(Room::from).collect())
    }

    /// Makes `user` a member of `room`: true when newly joined, false when a member
    /// already.
    pub async fn join(&self, user: &UserId, room: &RoomId) -> Result<bool> {
        let joined = self
            .store
            .join_room(room.as_str(), user.as_str(), self.clock.now())
            .await?;
        Ok(joined)
    }

    /// Ends `user`'s membership of `room`: true when it was a member, false when not.
    /// Their follows of the room end too, on every replica: a notice on the bus ends
    /// them at once, and a follow that missed it asks the store whenever it reads it.
    pub async fn leave(&self, user: &UserId, room: &RoomId) -> Result<bool> {
        if self.store.room(room.as_str()).await?.is_none() {
            return Err(ChatError::NoSuchRoom);
        }
        let left = self.store.leave_room(room.as_str(), user.as_str()).await?;
        let notice = Left { left: user.clone() };
        match serde_json::to_vec(&notice) {
            Ok(payload) => {
                if let Err(e) = self.bus.publish(&topic(room), &payload).await {
                    tracing::warn!(room = %room, error = %e, "could not announce a leave");
                }
            }
            Err(e) => tracing::warn!(room = %room, error = %e, "could not encode a leave"),
        }
        Ok(left)
    }

    /// Refuses anyone but a member of an existing room.
    pub async fn require_member(&self, user: &UserId, room: &RoomId) -> Result<()> {
        if self.store.is_member(room.as_str(), user.as_str()).await? {
            return Ok(());
        }
        if self.store.room(room.as_str()).await?.is_none() {
            return Err(ChatError::NoSuchRoom);
        }
        Err(ChatError::NotAMember)
    }

    /// Posts a message: committed with the room's next seq before this returns, then
    /// announced on the bus. The same `client_id` from the same author again returns the
    /// message stored the first time and announces nothing.
    pub async fn post(
        &self,
        author: &UserId,
        room: &RoomId,
        body: MessageBody,
        client_id: ClientId,
    ) -> Result<Posted> {
        self.submit(author, room, body, client_id).await
    }

    /// [`post`](Chat::post), queued now and answered by the returned future: posts
    /// submitted one after another (on any task of this replica) take their room's seqs
    /// in that order, so a connection may send the next before the last is answered. The
    /// posts waiting for a room are committed together, in one transaction, by one task
    /// per room (see `commit.rs`); each is answered once that commit is durable and the
    /// message announced, or with the error that failed it, which then wrote nothing. A
    /// post is committed whether or not its answer is awaited.
    pub fn submit(
        &self,
        author: &UserId,
        room: &RoomId,
        body: MessageBody,
        client_id: ClientId,
    ) -> Submitted {
        if let Err(retry_after) = self.posts.take(author.as_str(), self.clock.now()) {
            return Submitted::refused(ChatError::TooManyPosts { retry_after });
        }
        let message = NewMessage {
            id: MessageId::random().as_str().to_owned(),
            author_id: author.as_str().to_owned(),
            body: body.as_str().to_owned(),
            client_id: client_id.as_str().to_owned(),
            created_at: self.clock.now(),
        };
        self.committer.enqueue(self, room, message)
    }

    /// One post in a transaction of its own, membership checked first: what a batch
    /// falls back to when the store refused a value in it, so that one bad post fails
    /// alone.
    pub(crate) async fn post_alone(&self, room: &RoomId, message: &NewMessage) -> Result<Posted> {
        self.require_member(&UserId::new(message.author_id.clone()), room)
            .await?;
        let posted = self
            .store
            .post_message(
                room.as_str(),
                &message.id,
                &message.author_id,
                &message.body,
                &message.client_id,
                message.created_at,
            )
            .await?;
        Ok(self.stored(posted).await)
    }

    /// A stored post as answered, announced on the bus when it is new.
    pub(crate) async fn stored(&self, posted: herd_store::Posted) -> Posted {
        let (posted, new) = self.answered(posted);
        if new {
            self.announce(&posted.message).await;
        }
        posted
    }

    /// A stored post as answered, and whether it is new (to be announced).
    pub(crate) fn answered(&self, posted: herd_store::Posted) -> (Posted, bool) {
        let duplicate = matches!(posted, herd_store::Posted::Existing(_));
        let message = Message::from(posted.into_message());
        (Posted { message, duplicate }, !duplicate)
    }

    /// Publishes a stored message for live delivery. A failure loses nothing: followers
    /// notice the hole in seqs, or get a bus `Gap`, and read the store.
    pub(crate) async fn announce(&self, message: &Message) {
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(room = %message.room, seq = %message.seq, error = %e, "could not encode a message");
                return;
            }
        };
        if let Err(e) = self.bus.publish(&topic(&message.room), &payload).await {
            tracing::warn!(room = %message.room, seq = %message.seq, error = %e, "could not announce a message");
        }
    }

    /// [`announce`](Chat::announce)s `messages`, all of one room, in order, in one
    /// exchange with the bus (one round trip on Redis, not one a message).
    pub(crate) async fn announce_all(&self, room: &RoomId, messages: &[Message]) {
        let mut payloads = Vec::with_capacity(messages.len());
        for message in messages {
            match serde_json::to_vec(message) {
                Ok(payload) => payloads.push(payload),
                Err(e) => {
                    tracing::warn!(room = %message.room, seq = %message.seq, error = %e, "could not encode a message");
                }
            }
        }
        if let Err(e) = self.bus.publish_all(&topic(room), &payloads).await {
            let (first, last) = (messages.first(), messages.last());
            tracing::warn!(room = %room, first = ?first.map(|m| m.seq), last = ?last.map(|m| m.seq), error = %e, "could not announce messages");
        }
    }

    /// At most `limit` messages of `room` after `after`, ascending; members only.
    pub async fn history(
        &self,
        reader: &UserId,
        room: &RoomId,
        after: Seq,
        limit: PageSize,
    ) -> Result<HistoryPage> {
        self.require_member(reader, room).await?;
        let messages = read_after(&self.store, room, after, limit).await?;
        let next_after = messages.last().map_or(after, |m| m.seq);
        Ok(HistoryPage {
            messages,
            next_after,
        })
    }

    /// Follows `room` from `since` for a member: every message after it, in order,
    /// exactly once, then the live ones (see [`Follow`]).
    pub async fn follow(&self, reader: &UserId, room: &RoomId, since: Seq) -> Result<Follow> {
        self.require_member(reader, room).await?;
        Ok(Follow::new(
            self.store.clone(),
            self.bus.clone(),
            self.decoded.clone(),
            reader.clone(),
            room.clone(),
            since,
        ))
    }
}

/// At most `limit` stored messages of `room` after `after`, ascending.
pub(crate) async fn read_after(
    store: &Store,
    room: &RoomId,
    after: Seq,
    limit: PageSize,
) -> Result<Vec<Message>> {
    let records = store
        .messages_after(room.as_str(), after.get(), limit.get())
        .await?;
    Ok(records.into_iter().map(Message::from).collect())
}
