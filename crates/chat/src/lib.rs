//! herd's chat: rooms, their members, and their messages, numbered per room without
//! gaps, over the store (the truth) and the bus (the news).
//!
//! [`Chat`] is the use cases: create a room, join, leave, list a member's rooms, post
//! (durable before it is acknowledged, idempotent by the client's id, announced on the
//! bus after the commit), read history a page at a time, and [`follow`](Chat::follow) a
//! room from a seq. What it takes is parsed at the edge ([`RoomName`], [`MessageBody`],
//! [`ClientId`], [`Seq`], [`PageSize`]), and ids of different things are different types,
//! so a room's id cannot be passed as a user's.
//!
//! It knows nothing of HTTP, WebSocket frames or tokens: a transport (herd's REST
//! handlers, its WebSocket) authenticates the caller, hands over a [`UserId`], and turns
//! [`ChatError`] and [`Event`] into what its clients read.
//!
//! ```no_run
//! # async fn demo(store: herd_store::Store) -> Result<(), herd_chat::ChatError> {
//! use herd_chat::{Chat, ClientId, Event, MessageBody, RoomName, Seq, UserId};
//!
//! let chat = Chat::new(store, herd_bus::Bus::in_process(), || 1_700_000_000);
//! let ada = UserId::new("ada's id");
//! let room = chat.create_room(&ada, RoomName::parse("general").unwrap()).await?;
//! let mut follow = chat.follow(&ada, &room.id, Seq::ZERO).await?;
//! let body = MessageBody::parse("hello").unwrap();
//! chat.post(&ada, &room.id, body, ClientId::parse("c-1").unwrap()).await?;
//! while let Some(event) = follow.next().await {
//!     match event? {
//!         Event::Stored(m) => println!("{}: {}", m.seq, m.body),
//!         Event::Live(m) => println!("{}: {}", m.seq, m.body),
//!         Event::CaughtUp { .. } => {}
//!         Event::Left => break,
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Layout:
//! - `domain.rs`: the values parsed at the edge, the ids, and [`Invalid`].
//! - `service.rs`: [`Chat`], [`ChatError`], and what the use cases answer with
//!   ([`Room`], [`Message`], [`Posted`], [`HistoryPage`]).
//! - `commit.rs`: group commit, the posts waiting for a room written in one
//!   transaction by one task per room; [`Submitted`], a queued post's answer.
//! - `follow.rs`: [`Follow`], a room's messages after a seq, exactly once and in order,
//!   until its reader leaves the room; [`Live`], a live message decoded once per
//!   replica and shared by its readers (with the transport's encoding of it).
//! - `quota.rs`: [`Limits`], what one user may do a second or a minute, whichever
//!   transport they use.
//! - `timings.rs`: [`Timings`], what a post's [`Stage`]s took, handed to whoever asked
//!   ([`Chat::with_timings`]; herd's metrics).

mod commit;
mod domain;
mod follow;
mod quota;
mod service;
mod timings;

pub use commit::{Submitted, MAX_BATCH};
pub use domain::{
    ClientId, Invalid, MessageBody, MessageId, PageSize, RoomId, RoomName, Seq, UserId,
};
pub use follow::{Event, Follow, Live};
pub use quota::Limits;
pub use service::{Chat, ChatError, Clock, HistoryPage, Message, Posted, Result, Room};
pub use timings::{Stage, Timings};
