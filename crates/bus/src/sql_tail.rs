//! The SQL tail: replicas sharing one database publish by appending to its event log and
//! learn of each other's messages by polling it, one poller per [`Bus`](crate::Bus).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_store::Store;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::hub::{Hub, Subscription};
use crate::{unavailable, BusError, HEALTH_TIMEOUT};

/// How long events stay in the log. A poller that could not read the log for half of
/// this (the other half is a margin for clocks that disagree between replicas) may find
/// that events it never read were deleted, and says so with a gap.
const RETENTION: Duration = Duration::from_secs(10 * 60);

/// How often one poller deletes expired events. Every replica's poller prunes; deleting
/// what another already deleted is harmless, so they need not agree on who does it.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Events read per query. A poller that fell behind reads batch after batch until it
/// catches up, rather than loading the whole backlog at once.
const BATCH: i64 = 500;

/// The poll interval while someone waits for news (see [`SqlTail::hurry`]): answers to
/// a message this replica published (confirmations of a revocation) are read within
/// about this long, not a whole poll interval later.
const HURRIED_POLL: Duration = Duration::from_millis(2);

#[derive(Debug)]
pub(crate) struct SqlTail {
    store: Store,
    /// Woken after a local publish, so that this replica's own subscribers need not wait
    /// for the next poll.
    wake: Arc<Notify>,
    /// The id of the last event the poller handed out.
    cursor: Arc<AtomicI64>,
    /// Until when the poller polls every [`HURRIED_POLL`] instead of its interval.
    hurried_until: Arc<Mutex<Option<Instant>>>,
}

impl SqlTail {
    /// Starts the poller from the newest event in the log: a bus is news from now on,
    /// never a replay.
    pub(crate) async fn start(
        store: Store,
        poll_interval: Duration,
        hub: Arc<Hub>,
    ) -> Result<(SqlTail, AbortHandle), BusError> {
        let start = store.last_event_id().await.map_err(unavailable)?;
        let tail = SqlTail {
            store: store.clone(),
            wake: Arc::new(Notify::new()),
            cursor: Arc::new(AtomicI64::new(start)),
            hurried_until: Arc::default(),
        };
        let poller = Poller {
            store,
            hub,
            wake: tail.wake.clone(),
            cursor: tail.cursor.clone(),
            hurried_until: tail.hurried_until.clone(),
            poll_interval,
            last_read: Instant::now(),
            failing: false,
            last_prune: None,
        };
        let task = tokio::spawn(poller.run());
        Ok((tail, task.abort_handle()))
    }

    /// Appends the message to the log (so it is durable once this returns), then wakes
    /// the local poller.
    pub(crate) async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BusError> {
        self.store
            .append_event(topic, payload, unix_now())
            .await
            .map_err(unavailable)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Polls every [`HURRIED_POLL`] for the next `span`, starting now.
    pub(crate) fn hurry(&self, span: Duration) {
        let until = Instant::now() + span;
        let mut hurried = self
            .hurried_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *hurried = Some(hurried.map_or(until, |at| at.max(until)));
        drop(hurried);
        self.wake.notify_one();
    }

    /// Opens the subscription, then reads where the log ends: every event after that
    /// point was appended after the subscription existed, and every event up to it was
    /// published before, so it is left out even if the poller has not reached it yet.
    pub(crate) async fn subscribe(&self, hub: &Arc<Hub>, topic: &str) -> Subscription {
        let receiver = hub.subscribe(topic);
        let cut = match self.store.last_event_id().await {
            Ok(id) => id,
            Err(e) => {
                // Without the log's end, the poller's position is the best cut there is:
                // what the subscription may then see from before it began, it would also
                // have seen had it subscribed a moment earlier.
                tracing::debug!(error = %e, "reading the end of the event log for a new subscription");
                self.cursor.load(Ordering::Acquire)
            }
        };
        Subscription::new(hub, receiver, cut)
    }

    pub(crate) async fn healthy(&self) -> bool {
        matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, self.store.ping()).await,
            Ok(Ok(()))
        )
    }
}

struct Poller {
    store: Store,
    hub: Arc<Hub>,
    wake: Arc<Notify>,
    cursor: Arc<AtomicI64>,
    hurried_until: Arc<Mutex<Option<Instant>>>,
    poll_interval: Duration,
    /// When the log was last read successfully.
    last_read: Instant,
    /// Whether the last read failed, so that an outage is logged once, not every poll.
    failing: bool,
    last_prune: Option<Instant>,
}

impl Poller {
    async fn run(mut self) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval()) => {}
                () = self.wake.notified() => {}
            }
            self.poll().await;
            self.prune().await;
        }
    }

    /// The poll interval now: [`HURRIED_POLL`] while someone waits for news.
    fn interval(&self) -> Duration {
        let hurried = self
            .hurried_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *hurried {
            Some(until) if Instant::now() < until => HURRIED_POLL.min(self.poll_interval),
            _ => self.poll_interval,
        }
    }

    /// Hands out every event appended since the last poll, batch after batch.
    async fn poll(&mut self) {
        loop {
            let after = self.cursor.load(Ordering::Acquire);
            let events = match self.store.events_since(after, BATCH).await {
                Ok(events) => events,
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(error = %e, "the bus cannot read the event log; retrying");
                        self.failing = true;
                    }
                    return;
                }
            };
            if self.failing {
                tracing::info!("the bus reads the event log again");
                self.failing = false;
            }
            if self.last_read.elapsed() > RETENTION / 2 {
                tracing::warn!("the event log went unread for long enough to have been pruned; subscriptions are told of a gap");
                self.hub.gap();
            }
            self.last_read = Instant::now();

            let full = events.len() as i64 == BATCH;
            for event in &events {
                self.hub.deliver(&event.topic, event.id, &event.payload);
            }
            if let Some(last) = events.last() {
                self.cursor.store(last.id, Ordering::Release);
            }
            if !full {
                return;
            }
        }
    }

    async fn prune(&mut self) {
        if self.last_prune.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(Instant::now());
        let before = unix_now() - RETENTION.as_secs() as i64;
        match self.store.prune_events(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "pruned the event log"),
            Err(e) => tracing::debug!(error = %e, "pruning the event log; will retry"),
        }
    }
}

/// Unix seconds, for the event log's `created_at`. The store reads no clock; the bus
/// needs only this one coarse reading, for pruning.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
