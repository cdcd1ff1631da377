//! [`Follow`]: a room's messages after a seq, from the store and then live from the bus,
//! each exactly once and in order, whatever the bus drops, repeats or reorders.

use std::collections::VecDeque;

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
    Live(Message),
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
    pub(crate) fn new(store: Store, bus: Bus, reader: UserId, room: RoomId, since: Seq) -> Follow {
        Follow {
            store,
            bus,
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
                Some(Delivery::Message { payload, .. }) => {
                    match serde_json::from_slice::<Message>(&payload) {
                        Ok(m) if m.seq <= self.last => {}
                        Ok(m) if m.seq == self.last.next() => {
                            self.last = m.seq;
                            return Some(Ok(Event::Live(m)));
                        }
                        // A hole: an announcement was lost or overtaken; the store has
                        // them all.
                        Ok(_) => self.behind = true,
                        Err(e) => match serde_json::from_slice::<Left>(&payload) {
                            Ok(notice) if notice.left == self.reader => {
                                return Some(Ok(self.left()))
                            }
                            Ok(_) => {}
                            // Not a message this version understands; if it was one,
                            // the next will show the hole it left.
                            Err(_) => {
                                tracing::debug!(room = %self.room, error = %e, "skipped an announcement");
                            }
                        },
                    }
                }
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
