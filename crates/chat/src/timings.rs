//! Where a post's time goes between its arrival and its announcement, for whoever wants
//! to know (herd's `/metrics`): chat measures its own stages and hands each duration to
//! a [`Timings`] it was given, and keeps nothing itself.

use std::time::Duration;

/// A stage of a post on the replica that takes it, in the order a post goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// From [`Chat::submit`](crate::Chat::submit) to the start of the commit that
    /// writes it: the wait behind the room's commit in progress.
    CommitQueue,
    /// The commit that writes it (and the rest of its batch): the store's round trips
    /// and its sync to disk.
    Commit,
    /// From the commit's end to the start of its announcement: the wait for its poster
    /// to pass the answer on, and for the batch before to be announced.
    AnnounceQueue,
    /// Publishing its batch on the bus (on Redis, one pipeline of `PUBLISH`es: one round
    /// trip for the batch).
    Publish,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::CommitQueue,
        Stage::Commit,
        Stage::AnnounceQueue,
        Stage::Publish,
    ];

    /// A name for the stage, fixed: fit for a metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::CommitQueue => "commit_queue",
            Stage::Commit => "commit",
            Stage::AnnounceQueue => "announce_queue",
            Stage::Publish => "publish",
        }
    }
}

/// Receives chat's measurements. Called on the hot path, once a post per stage and once
/// a commit: an implementation must be cheap and must not block.
pub trait Timings: Send + Sync + 'static {
    /// One post spent `took` in `stage`.
    fn stage(&self, stage: Stage, took: Duration);
    /// One commit wrote `posts` posts.
    fn batch(&self, posts: usize);
}

/// Measures nothing: what a [`Chat`](crate::Chat) reports to unless given another.
impl Timings for () {
    fn stage(&self, _: Stage, _: Duration) {}
    fn batch(&self, _: usize) {}
}
