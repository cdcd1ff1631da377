//! [`Follow`]: a room's messages after a seq, from the store and then live from the bus,
//! each exactly once and in order, whatever the bus drops, repeats or reorders.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use herd_bus::{Bus, Delivery, Subscription};
use herd_store::Store;

use crate::domain::{PageSize, RoomId, Seq, UserId};
use crate::service::{read_after, topic, ChatError, Left, Message};

/// What following a room yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message read from the store: the history after `since`, or a hole in the live
    /// sequence being filled. It waits in the store, so a transport may deliver it at
    /// the reader's pace.
    Stored(Message),
    /// Every message up to `last_seq` has been yielded; what follows is live. Said once,
    /// after the history.
    CaughtUp { last_seq: Seq },
    /// A message as the bus delivered it, the next in the sequence. A reader that cannot
    /// keep up with these is the transport's to drop: it resumes from its last seq.
    /// Decoded once per replica and shared by every follow of the room here ([`Live`]).
    Live(Live),
    /// The reader is no longer a member of the room (they left it, on any replica):
    /// nothing more follows. Said once, last.
    Left,
}

/// One reader following one room from a seq, built by
/// [`Chat::follow`](crate::Chat::follow).
///
/// It subscribes to the bus first, then reads the store from `since`, then goes live,
/// dropping what it has already yielded by seq, and reading the store again whenever the
/// live sequence has a hole (an announcement lost or overtaken) or the bus reports a
/// `Gap`. A reconnect that follows again from the last seq it saw, on any replica, so
/// misses nothing and repeats nothing.
///
/// It ends with [`Event::Left`] when its reader leaves the room: at once on the bus's
/// notice, or, if that was lost, at the next read of the store, which asks first
/// whether the reader is still a member.
#[derive(Debug)]
pub struct Follow {
    store: Store,
    bus: Bus,
    /// The replica's decoded announcements, shared by its follows.
    decoded: Arc<Decoded>,
    reader: UserId,
    room: RoomId,
    /// Whether membership must be asked before the store is read again: not for the
    /// first read, which [`Chat::follow`](crate::Chat::follow) has just checked.
    recheck: bool,
    /// Made by the first [`next`](Follow::next), before the store is first read. Not in
    /// `Chat::follow`, whose caller may be a connection's reader: on Redis, subscribing
    /// waits for the server, and the reader has other frames to answer meanwhile.
    live: Option<Subscription>,
    /// The seq of the last message yielded.
    last: Seq,
    /// Read from the store, not yet yielded.
    pending: VecDeque<Message>,
    /// Whether the store must be read before anything live is yielded.
    behind: bool,
    caught_up_said: bool,
    finished: bool,
}

impl Follow {
    pub(crate) fn new(
        store: Store,
        bus: Bus,
        decoded: Arc<Decoded>,
        reader: UserId,
        room: RoomId,
        since: Seq,
    ) -> Follow {
        Follow {
            store,
            bus,
            decoded,
            reader,
            room,
            recheck: false,
            live: None,
            last: since,
            pending: VecDeque::new(),
            behind: true,
            caught_up_said: false,
            finished: false,
        }
    }

    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The next event; `None` once the bus is gone or after an error. An error is the
    /// store failing while the history or a hole was read: nothing was skipped, and
    /// following again from the last seq yielded resumes exactly there.
    ///
    /// Cancel-safe: a call dropped before it resolves loses nothing, so it may sit in a
    /// `select!`.
    pub async fn next(&mut self) -> Option<Result<Event, ChatError>> {
        if self.finished {
            return None;
        }
        if self.live.is_none() {
            self.live = Some(self.bus.subscribe(&topic(&self.room)).await);
        }
        loop {
            if let Some(message) = self.pending.pop_front() {
                self.last = message.seq;
                return Some(Ok(Event::Stored(message)));
            }
            if self.behind {
                if self.recheck {
                    match self
                        .store
                        .is_member(self.room.as_str(), self.reader.as_str())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return Some(Ok(self.left())),
                        Err(e) => {
                            self.finished = true;
                            return Some(Err(e.into()));
                        }
                    }
                }
                self.recheck = true;
                match read_after(&self.store, &self.room, self.last, PageSize::MAX).await {
                    Ok(page) => {
                        // A full page may not be the end of it.
                        self.behind = page.len() as i64 == PageSize::MAX.get();
                        self.pending.extend(page);
                        continue;
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
            }
            if !self.caught_up_said {
                self.caught_up_said = true;
                return Some(Ok(Event::CaughtUp {
                    last_seq: self.last,
                }));
            }
            let live = self.live.as_mut()?;
            match live.recv().await {
                None => {
                    self.finished = true;
                    return None;
                }
                Some(Delivery::Gap) => self.behind = true,
                Some(Delivery::Message { payload, .. }) => match self.decoded.get(&payload) {
                    Announcement::Message(m) if m.seq <= self.last => {}
                    Announcement::Message(m) if m.seq == self.last.next() => {
                        self.last = m.seq;
                        return Some(Ok(Event::Live(m)));
                    }
                    // A hole: an announcement was lost or overtaken; the store has them
                    // all.
                    Announcement::Message(_) => self.behind = true,
                    Announcement::Left(user) if user == self.reader => {
                        return Some(Ok(self.left()))
                    }
                    Announcement::Left(_) => {}
                    // Not a message this version understands; if it was one, the next
                    // will show the hole it left.
                    Announcement::Other => {
                        tracing::debug!(room = %self.room, "skipped an announcement");
                    }
                },
            }
        }
    }

    /// Ends the follow: its reader is no longer a member.
    fn left(&mut self) -> Event {
        self.finished = true;
        self.pending.clear();
        Event::Left
    }
}

/// A live message, decoded once per replica from the bus's payload and shared (not
/// copied) by every follow of its room on the replica. A transport that sends it to many
/// readers encodes it once too, with [`Live::encoded`].
#[derive(Clone)]
pub struct Live(Arc<Shared>);

struct Shared {
    message: Message,
    /// When the first follow on this replica decoded it.
    decoded_at: Instant,
    /// The first transport encoding asked for, kept for every reader after it.
    encoded: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Live {
    fn new(message: Message) -> Live {
        Live(Arc::new(Shared {
            message,
            decoded_at: Instant::now(),
            encoded: OnceLock::new(),
        }))
    }

    pub fn message(&self) -> &Message {
        &self.0.message
    }

    /// When this replica decoded it: the first of its follows to be woken by the bus
    /// delivery did, so this is the delivery's arrival plus one task wake-up. What a
    /// transport measures its own fan-out from.
    pub fn decoded_at(&self) -> Instant {
        self.0.decoded_at
    }

    /// The message, copied only if another reader still shares it.
    pub fn into_message(self) -> Message {
        match Arc::try_unwrap(self.0) {
            Ok(shared) => shared.message,
            Err(shared) => shared.message.clone(),
        }
    }

    /// `encode(message)`, made by the first reader that asks and shared by all that ask
    /// after it (a transport's frame, say, so that 100 subscribers cost one encoding).
    /// Cheap only if `T`'s clone is (an `Arc`, a `Bytes`); one transport per replica is
    /// expected, and a second type asked for is encoded each time, not kept.
    pub fn encoded<T: Clone + Send + Sync + 'static>(&self, encode: impl Fn(&Message) -> T) -> T {
        let kept = self
            .0
            .encoded
            .get_or_init(|| Box::new(encode(&self.0.message)));
        match kept.downcast_ref::<T>() {
            Some(value) => value.clone(),
            None => encode(&self.0.message),
        }
    }
}

impl Deref for Live {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.0.message
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.message.fmt(f)
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Live) -> bool {
        self.0.message == other.0.message
    }
}

impl Eq for Live {}

impl PartialEq<Message> for Live {
    fn eq(&self, other: &Message) -> bool {
        &self.0.message == other
    }
}

/// What a payload on a room's topic says, decoded.
#[derive(Debug, Clone)]
pub(crate) enum Announcement {
    Message(Live),
    Left(UserId),
    Other,
}

impl Announcement {
    fn decode(payload: &[u8]) -> Announcement {
        if let Ok(m) = serde_json::from_slice::<Message>(payload) {
            return Announcement::Message(Live::new(m));
        }
        match serde_json::from_slice::<Left>(payload) {
            Ok(notice) => Announcement::Left(notice.left),
            Err(_) => Announcement::Other,
        }
    }
}

/// The announcements a replica's follows decoded lately, by payload. The bus hands every
/// subscription on a replica the same `Arc` for one message, so the first follow to read
/// it decodes it and the others find it here: one parse a message per replica, not one
/// per reader. The newest [`Decoded::KEPT`] are kept (a reader further behind than that
/// decodes its own); each holds its payload, so an address is not reused while kept.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    by_address: HashMap<usize, (Arc<[u8]>, Announcement)>,
    order: VecDeque<usize>,
}

impl Decoded {
    /// As many as a bus subscription holds: a reader within its bus's window finds them.
    const KEPT: usize = herd_bus::CAPACITY;

    fn get(&self, payload: &Arc<[u8]>) -> Announcement {
        let address = payload.as_ptr() as usize;
        if let Some(found) = self.find(address, payload) {
            return found;
        }
        let decoded = Announcement::decode(payload);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // Another reader may have decoded it meanwhile: theirs is the one shared.
        if let Some((kept, found)) = recent.by_address.get(&address) {
            if Arc::ptr_eq(kept, payload) {
                return found.clone();
            }
        }
        if recent.order.len() >= Self::KEPT {
            if let Some(oldest) = recent.order.pop_front() {
                recent.by_address.remove(&oldest);
            }
        }
        recent
            .by_address
            .insert(address, (payload.clone(), decoded.clone()));
        recent.order.push_back(address);
        decoded
    }

    fn find(&self, address: usize, payload: &Arc<[u8]>) -> Option<Announcement> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let (kept, found) = recent.by_address.get(&address)?;
        Arc::ptr_eq(kept, payload).then(|| found.clone())
    }
}
