//! Local fan-out: one bounded broadcast channel per topic that has a subscription in this
//! process. Every backend ends here; they differ only in what feeds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Notify};

use crate::{Delivery, CAPACITY};

/// What a topic's channel carries: a delivery and, for the SQL tail, the event id it came
/// from, so that a subscription can leave out what was published before it began.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    seq: i64,
    delivery: Delivery,
}

#[derive(Debug, Default)]
pub(crate) struct Hub {
    topics: Mutex<HashMap<Arc<str>, broadcast::Sender<Envelope>>>,
    /// Signalled when a topic loses its last subscription, so that a backend which
    /// subscribed to it upstream (Redis) can let it go.
    pub(crate) released: Notify,
}

impl Hub {
    /// A receiver for `topic`, opening its channel if this is its first subscription.
    pub(crate) fn subscribe(&self, topic: &str) -> (Arc<str>, broadcast::Receiver<Envelope>) {
        let mut topics = self.lock();
        if let Some((name, sender)) = topics.get_key_value(topic) {
            return (name.clone(), sender.subscribe());
        }
        let name: Arc<str> = Arc::from(topic);
        let (sender, receiver) = broadcast::channel(CAPACITY);
        topics.insert(name.clone(), sender);
        (name, receiver)
    }

    /// Hands a message to every subscription to `topic`; nothing happens when it has none.
    pub(crate) fn deliver(&self, topic: &str, seq: i64, payload: &[u8]) {
        let topics = self.lock();
        if let Some((name, sender)) = topics.get_key_value(topic) {
            let delivery = Delivery::Message {
                topic: name.clone(),
                payload: Arc::from(payload),
            };
            // An error only means that every receiver has just gone; their topic is
            // being released.
            let _ = sender.send(Envelope { seq, delivery });
        }
    }

    /// Tells every subscription it may have missed messages.
    pub(crate) fn gap(&self) {
        for sender in self.lock().values() {
            let _ = sender.send(Envelope {
                seq: 0,
                delivery: Delivery::Gap,
            });
        }
    }

    /// The topics that have at least one subscription.
    pub(crate) fn topics(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn has(&self, topic: &str) -> bool {
        self.lock().contains_key(topic)
    }

    /// Drops `receiver` and closes its topic if it was the last one. Both happen under
    /// the lock that `subscribe` takes, so a topic is never closed under a subscription
    /// being opened, and never left open with none.
    fn release(&self, topic: &str, receiver: broadcast::Receiver<Envelope>) {
        let mut topics = self.lock();
        drop(receiver);
        if topics.get(topic).is_some_and(|s| s.receiver_count() == 0) {
            topics.remove(topic);
            drop(topics);
            self.released.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, broadcast::Sender<Envelope>>> {
        // Nothing panics while holding the lock, and the map is valid after any
        // statement, so a poisoned lock is still a good one.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A subscription to one topic, from [`Bus::subscribe`](crate::Bus::subscribe).
///
/// It holds up to [`CAPACITY`] deliveries for its reader; past that, the oldest are
/// dropped and [`recv`](Subscription::recv) says so with a [`Delivery::Gap`]. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    topic: Arc<str>,
    /// Always `Some` until dropped; taken then so that `Hub::release` can drop it under
    /// the hub's lock.
    receiver: Option<broadcast::Receiver<Envelope>>,
    /// Weak, so that a subscription does not keep a bus alive: when the last `Bus` is
    /// gone, the channels close and `recv` returns `None`.
    hub: Weak<Hub>,
    /// Event ids up to this one were published before the subscription began (SQL tail;
    /// other backends do not number their messages and leave this below every `seq`).
    skip_through: i64,
}

impl Subscription {
    pub(crate) fn new(
        hub: &Arc<Hub>,
        (topic, receiver): (Arc<str>, broadcast::Receiver<Envelope>),
        skip_through: i64,
    ) -> Subscription {
        Subscription {
            topic,
            receiver: Some(receiver),
            hub: Arc::downgrade(hub),
            skip_through,
        }
    }

    /// The next delivery: a message, or a [`Delivery::Gap`] when messages may have been
    /// missed. `None` once every clone of the [`Bus`](crate::Bus) has been dropped.
    ///
    /// Cancel-safe: a delivery is never lost by dropping the future before it completes.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let receiver = self.receiver.as_mut()?;
        loop {
            match receiver.recv().await {
                Ok(Envelope {
                    seq,
                    delivery: Delivery::Message { .. },
                }) if seq <= self.skip_through => continue,
                Ok(envelope) => return Some(envelope.delivery),
                Err(RecvError::Lagged(_)) => return Some(Delivery::Gap),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The topic this subscription follows.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let (Some(hub), Some(receiver)) = (self.hub.upgrade(), self.receiver.take()) {
            hub.release(&self.topic, receiver);
        }
    }
}
