//! Redis pub/sub. Publishing goes through a reconnecting `ConnectionManager`; receiving
//! through one dedicated pub/sub connection per [`Bus`](crate::Bus), owned by a task
//! that fans its messages out to the hub. When that connection drops, the task tells
//! every subscription of a gap, reconnects with backoff, subscribes again to every topic
//! that still has a subscription, and tells them of a gap once more: the first gap is
//! news that messages are being missed, the second is the moment from which a resync
//! from the store is complete.
//!
//! Only the task talks to the pub/sub connection, so SUBSCRIBE and UNSUBSCRIBE for a
//! topic can never cross on the wire.

use std::collections::HashSet;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Client, Msg, RedisResult};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::hub::{Envelope, Hub, Subscription};
use crate::{unavailable, BusError, TimedOut, HEALTH_TIMEOUT, NO_CUT};

/// herd's channels share the Redis server with whatever else uses it.
const PREFIX: &str = "herd:";

/// Bounds on every round trip, so that a Redis that is down or unreachable fails a
/// publish in bounded time instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// The pub/sub connection is retried after `BACKOFF_MIN`, doubling up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Subscribe requests waiting for the subscriber task.
const COMMAND_QUEUE: usize = 64;

pub(crate) struct Redis {
    publisher: ConnectionManager,
    commands: mpsc::Sender<Subscribe>,
    /// Whether the pub/sub connection is up, for readiness.
    live: Arc<AtomicBool>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A request to the subscriber task for a receiver on `topic`, answered once the pub/sub
/// connection is subscribed to it, or at once when the connection is down (it will be
/// subscribed on reconnection).
struct Subscribe {
    topic: String,
    reply: oneshot::Sender<(Arc<str>, broadcast::Receiver<Envelope>)>,
}

impl Redis {
    /// Connects both connections, so that a wrong URL or an unreachable server is an
    /// error at start-up rather than a bus that never delivers.
    pub(crate) async fn connect(
        url: &str,
        hub: Arc<Hub>,
    ) -> Result<(Redis, AbortHandle), BusError> {
        let client = Client::open(url).map_err(BusError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            // One attempt per reconnection: the manager starts another at the next
            // command. A schedule of retries would make publishes queue behind it
            // instead of failing promptly while Redis is down.
            .set_number_of_retries(0)
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        let publisher = within(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        let (sink, stream) = within(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await?
            .split();

        let (commands, requests) = mpsc::channel(COMMAND_QUEUE);
        let live = Arc::new(AtomicBool::new(true));
        let subscriber = Subscriber {
            client,
            hub,
            requests,
            live: live.clone(),
        };
        let first = Connection {
            sink,
            stream,
            subscribed: HashSet::new(),
        };
        let task = tokio::spawn(subscriber.run(first));
        let redis = Redis {
            publisher,
            commands,
            live,
        };
        Ok((redis, task.abort_handle()))
    }

    pub(crate) async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BusError> {
        let mut connection = self.publisher.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel(topic)).arg(payload);
        // The reply counts the connections that received it; none is not an error, as
        // nobody may be subscribed.
        within(COMMAND_TIMEOUT, publish.query_async::<i64>(&mut connection)).await?;
        Ok(())
    }

    /// Every payload's `PUBLISH` in one pipeline: one round trip for a batch. Redis
    /// runs a connection's commands in order, so they are delivered in order.
    pub(crate) async fn publish_all(
        &self,
        topic: &str,
        payloads: &[Vec<u8>],
    ) -> Result<(), BusError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut connection = self.publisher.clone();
        let channel = channel(topic);
        let mut pipe = redis::pipe();
        for payload in payloads {
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(payload.as_slice())
                .ignore();
        }
        within(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut connection)).await?;
        Ok(())
    }

    pub(crate) async fn subscribe(&self, hub: &Arc<Hub>, topic: &str) -> Subscription {
        let (reply, answer) = oneshot::channel();
        let request = Subscribe {
            topic: topic.to_owned(),
            reply,
        };
        if self.commands.send(request).await.is_ok() {
            if let Ok(receiver) = answer.await {
                return Subscription::new(hub, receiver, NO_CUT);
            }
        }
        // The task runs as long as the bus, so only a bug (a panic) stops it early. Say
        // so loudly, and rather than fail the caller, hand out a subscription that hears
        // nothing until the bus ends.
        tracing::error!(topic, "the Redis subscriber task has stopped");
        Subscription::new(hub, hub.subscribe(topic), NO_CUT)
    }

    pub(crate) async fn healthy(&self) -> bool {
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        let mut connection = self.publisher.clone();
        let ping = redis::cmd("PING");
        within(HEALTH_TIMEOUT, ping.query_async::<String>(&mut connection))
            .await
            .is_ok()
    }
}

struct Subscriber {
    client: Client,
    hub: Arc<Hub>,
    requests: mpsc::Receiver<Subscribe>,
    live: Arc<AtomicBool>,
}

/// The pub/sub connection and the topics it is subscribed to.
struct Connection {
    sink: PubSubSink,
    stream: PubSubStream,
    subscribed: HashSet<Arc<str>>,
}

impl Subscriber {
    async fn run(mut self, first: Connection) {
        let mut connection = Some(first);
        let mut backoff = BACKOFF_MIN;
        let mut retry_at = Instant::now();
        loop {
            if let Some(up) = connection.as_mut() {
                // `select!` picks a ready branch at random, so a flood of messages does
                // not starve subscribe requests.
                let kept = tokio::select! {
                    message = next(&mut up.stream) => match message {
                        Some(message) => {
                            self.deliver(&message);
                            true
                        }
                        None => false,
                    },
                    request = self.requests.recv() => match request {
                        Some(request) => up.subscribe(&self.hub, request).await,
                        None => return,
                    },
                    () = self.hub.released.notified() => up.let_go(&self.hub).await,
                };
                if !kept {
                    connection = None;
                    self.live.store(false, Ordering::Release);
                    tracing::warn!(
                        "lost the Redis pub/sub connection; subscriptions are told of a gap"
                    );
                    self.hub.gap();
                    backoff = BACKOFF_MIN;
                    retry_at = Instant::now() + backoff;
                }
            } else {
                tokio::select! {
                    request = self.requests.recv() => match request {
                        // The topic is in the hub from now on, so the reconnection will
                        // subscribe to it.
                        Some(request) => {
                            let _ = request.reply.send(self.hub.subscribe(&request.topic));
                        }
                        None => return,
                    },
                    () = tokio::time::sleep_until(retry_at) => match self.reconnect().await {
                        Ok(up) => {
                            connection = Some(up);
                            self.live.store(true, Ordering::Release);
                            tracing::info!(
                                "Redis pub/sub connection restored; subscriptions are told of a gap"
                            );
                            self.hub.gap();
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, ?backoff, "reconnecting to Redis pub/sub");
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            retry_at = Instant::now() + backoff;
                        }
                    },
                }
            }
        }
    }

    /// A new pub/sub connection, subscribed to every topic that has a subscription.
    async fn reconnect(&self) -> Result<Connection, BusError> {
        let (sink, stream) = within(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await?
            .split();
        let mut up = Connection {
            sink,
            stream,
            subscribed: HashSet::new(),
        };
        for topic in self.hub.topics() {
            within(COMMAND_TIMEOUT, up.sink.subscribe(channel(&topic))).await?;
            up.subscribed.insert(topic);
        }
        Ok(up)
    }

    fn deliver(&self, message: &Msg) {
        if let Some(topic) = message.get_channel_name().strip_prefix(PREFIX) {
            self.hub.deliver(topic, 0, message.get_payload_bytes());
        }
    }
}

impl Connection {
    /// Answers `request`, subscribing upstream first if the topic is new. False when the
    /// connection failed.
    async fn subscribe(&mut self, hub: &Hub, request: Subscribe) -> bool {
        // The receiver is opened before SUBSCRIBE so that it misses nothing that arrives
        // once Redis has subscribed.
        let receiver = hub.subscribe(&request.topic);
        let topic = receiver.0.clone();
        let mut kept = true;
        if !self.subscribed.contains(&topic) {
            kept = within(COMMAND_TIMEOUT, self.sink.subscribe(channel(&topic)))
                .await
                .is_ok();
            if kept {
                self.subscribed.insert(topic);
            }
        }
        let _ = request.reply.send(receiver);
        kept
    }

    /// Unsubscribes from topics that no longer have a subscription. False when the
    /// connection failed.
    async fn let_go(&mut self, hub: &Hub) -> bool {
        let gone: Vec<Arc<str>> = self
            .subscribed
            .iter()
            .filter(|topic| !hub.has(topic))
            .cloned()
            .collect();
        for topic in gone {
            if within(COMMAND_TIMEOUT, self.sink.unsubscribe(channel(&topic)))
                .await
                .is_err()
            {
                return false;
            }
            self.subscribed.remove(&topic);
        }
        true
    }
}

fn channel(topic: &str) -> String {
    format!("{PREFIX}{topic}")
}

/// The next message, or `None` once the connection has closed.
async fn next(stream: &mut PubSubStream) -> Option<Msg> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// `call`, failed as unavailable if Redis does not answer within `limit`.
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable(TimedOut(limit))),
    }
}
