//! Group commit: the posts waiting for one room are written in one transaction.
//!
//! A room's posts commit one at a time whatever happens (its row lock, or SQLite's write
//! lock, queues them), so one transaction per post caps a room at one commit's round
//! trips and sync per message. Instead, a post is queued under its room and the first
//! post to find the room idle starts a task that commits everything queued for it, at
//! most [`MAX_BATCH`] at a time, with [`Store::post_messages`](herd_store::Store::post_messages),
//! until nothing is left; posts that arrive meanwhile go in the next batch. Under light
//! load a batch is one post, committed at once; under heavy load the batches grow, and
//! so does the rate a room takes. A batch is announced in one exchange with the bus (one
//! Redis pipeline), so announcing does not cap a room at one round trip a message either.
//!
//! What a post promises is unchanged: it is answered only once its commit is durable and
//! the message announced (or with the error that failed the batch, which then wrote
//! nothing of it); seqs are gap-free and in the order posts were queued; a `client_id`
//! already stored (or earlier in the batch) returns the stored message. A batch that the
//! store refused for a value in it (a body PostgreSQL will not take, say) is retried one
//! post at a time, so the bad post fails alone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use herd_store::{Batched, NewMessage};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::domain::RoomId;
use crate::service::{Chat, ChatError, Message, Posted, Result};
use crate::timings::Stage;

/// Posts committed in one transaction, at most.
pub const MAX_BATCH: usize = 256;

/// The posts waiting for each room's next commit. A room is in the map exactly while a
/// task commits for it.
#[derive(Debug, Default)]
pub(crate) struct Committer {
    waiting: Mutex<HashMap<RoomId, Vec<Job>>>,
}

#[derive(Debug)]
struct Job {
    message: NewMessage,
    answer: oneshot::Sender<Answered>,
    /// When it was queued, for [`Stage::CommitQueue`].
    queued: Instant,
}

/// A post's outcome, and a token its holder drops once it has passed the answer on.
type Answered = (Result<Posted>, Option<oneshot::Sender<()>>);

/// How long a batch's announcement waits for its posters to pass their answers on, at
/// most (they do at once, unless the connection is busy with an earlier answer).
const ANSWER_PATIENCE: Duration = Duration::from_secs(1);

impl Committer {
    /// Queues `message` for `room`, starting the room's task if it has none.
    pub(crate) fn enqueue(&self, chat: &Chat, room: &RoomId, message: NewMessage) -> Submitted {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            message,
            answer,
            queued: Instant::now(),
        };
        let start = {
            let mut waiting = self.lock();
            match waiting.get_mut(room) {
                Some(jobs) => {
                    jobs.push(job);
                    false
                }
                None => {
                    waiting.insert(room.clone(), vec![job]);
                    true
                }
            }
        };
        if start {
            tokio::spawn(commit_room(chat.clone(), room.clone()));
        }
        Submitted(State::Waiting(answered))
    }

    /// The next batch for `room`, or `None` (and the room forgotten) when none waits.
    fn next_batch(&self, room: &RoomId) -> Option<Vec<Job>> {
        let mut waiting = self.lock();
        let jobs = waiting.get_mut(room)?;
        if jobs.is_empty() {
            waiting.remove(room);
            return None;
        }
        let n = jobs.len().min(MAX_BATCH);
        Some(jobs.drain(..n).collect())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, Vec<Job>>> {
        // Nothing panics under the lock, and the map is valid after every statement.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A room's task: commits its waiting posts, a batch at a time, until none is left.
async fn commit_room(chat: Chat, room: RoomId) {
    let mut running = Running {
        committer: chat.committer.clone(),
        room: room.clone(),
        done: false,
    };
    // Each batch's announcement, after the one before it.
    let mut announced: Option<JoinHandle<()>> = None;
    while let Some(jobs) = chat.committer.next_batch(&room) {
        announced = commit(&chat, &room, jobs, announced.take()).await;
    }
    running.done = true;
}

/// Forgets a room whose task ended before its queue did (it panicked, or its runtime
/// stopped): the posts still queued are dropped, answered with
/// [`ChatError::Abandoned`], and the room's next post starts a new task.
struct Running {
    committer: Arc<Committer>,
    room: RoomId,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            self.committer.lock().remove(&self.room);
        }
    }
}

/// Commits one batch and answers each of its posts; the new messages are announced by a
/// task of their own once every poster has passed its answer on (so a connection says
/// its `ack` before its subscriptions see the message) and once the batch before is
/// announced; returns the last announcement (to come) so far. The next batch commits
/// meanwhile.
async fn commit(
    chat: &Chat,
    room: &RoomId,
    jobs: Vec<Job>,
    before: Option<JoinHandle<()>>,
) -> Option<JoinHandle<()>> {
    let batch: Vec<NewMessage> = jobs.iter().map(|j| j.message.clone()).collect();
    let began = Instant::now();
    for job in &jobs {
        let waited = began.saturating_duration_since(job.queued);
        chat.timings.stage(Stage::CommitQueue, waited);
    }
    let stored = chat.store.post_messages(room.as_str(), &batch).await;
    let committed = Instant::now();
    let took = committed.saturating_duration_since(began);
    for _ in &jobs {
        chat.timings.stage(Stage::Commit, took);
    }
    chat.timings.batch(jobs.len());
    match stored {
        Ok(answers) => {
            let mut passed = Vec::with_capacity(jobs.len());
            let mut fresh = Vec::new();
            for (job, answer) in jobs.into_iter().zip(answers) {
                let result = match answer {
                    Batched::NotAMember => Err(ChatError::NotAMember),
                    Batched::Posted(posted) => {
                        let (posted, new) = chat.answered(posted);
                        fresh.extend(new.then(|| posted.message.clone()));
                        Ok(posted)
                    }
                };
                let (token, said) = oneshot::channel();
                passed.push(said);
                let _ = job.answer.send((result, Some(token)));
            }
            let chat = chat.clone();
            Some(tokio::spawn(announce(
                chat, before, passed, fresh, committed,
            )))
        }
        // One post the store refused fails the batch: each goes alone, so it fails alone.
        Err(e) if e.is_bad_input() && jobs.len() > 1 => {
            if let Some(before) = before {
                let _ = before.await;
            }
            for job in jobs {
                let result = chat.post_alone(room, &job.message).await;
                let _ = job.answer.send((result, None));
            }
            None
        }
        Err(e) => {
            let e = ChatError::from(e);
            for job in jobs {
                let _ = job.answer.send((Err(e.clone()), None));
            }
            before
        }
    }
}

/// Announces a committed batch's new messages, in seq order, after the batch before it
/// and after its posters passed their answers on.
async fn announce(
    chat: Chat,
    before: Option<JoinHandle<()>>,
    passed: Vec<oneshot::Receiver<()>>,
    fresh: Vec<Message>,
    committed: Instant,
) {
    if let Some(before) = before {
        let _ = before.await;
    }
    let _ = tokio::time::timeout(ANSWER_PATIENCE, async {
        for said in passed {
            let _ = said.await;
        }
    })
    .await;
    let Some(room) = fresh.first().map(|m| m.room.clone()) else {
        return;
    };
    let began = Instant::now();
    let waited = began.saturating_duration_since(committed);
    for _ in &fresh {
        chat.timings.stage(Stage::AnnounceQueue, waited);
    }
    // The batch's messages in one exchange with the bus: published one at a time, a
    // round trip each, they capped a room at one round trip a message.
    chat.announce_all(&room, &fresh).await;
    let took = began.elapsed();
    for _ in &fresh {
        chat.timings.stage(Stage::Publish, took);
    }
}

/// A submitted post's answer, from [`Chat::submit`]. Dropping it does not withdraw the
/// post. A new message is announced only once the future that answered it is dropped
/// (or a second has passed): a transport drops it after passing the answer on, so its
/// client hears the answer before the message itself comes back to it.
#[derive(Debug)]
pub struct Submitted(State);

#[derive(Debug)]
enum State {
    Refused(Option<ChatError>),
    Waiting(oneshot::Receiver<Answered>),
    /// Answered; holds the token until dropped.
    Answered {
        _token: Option<oneshot::Sender<()>>,
    },
}

impl Submitted {
    pub(crate) fn refused(e: ChatError) -> Submitted {
        Submitted(State::Refused(Some(e)))
    }
}

impl Future for Submitted {
    type Output = Result<Posted>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Posted>> {
        match &mut self.0 {
            State::Refused(e) => Poll::Ready(Err(e.take().unwrap_or(ChatError::Abandoned))),
            State::Waiting(answered) => match Pin::new(answered).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok((result, token))) => {
                    self.0 = State::Answered { _token: token };
                    Poll::Ready(result)
                }
                Poll::Ready(Err(_)) => Poll::Ready(Err(ChatError::Abandoned)),
            },
            State::Answered { .. } => Poll::Ready(Err(ChatError::Abandoned)),
        }
    }
}
