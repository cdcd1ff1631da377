//! A chat of its own per test, and the fixtures tests share.

use herd_bus::Bus;
use herd_chat::{
    Chat, ClientId, Limits, Message, MessageBody, Posted, Room, RoomId, RoomName, UserId,
};
use herd_store::{Store, UserRecord};
use tempfile::TempDir;

/// A moment to run tests at; chat takes the time it is given.
pub const NOW: i64 = 1_700_000_000;

/// No per-user limit a test meets by posting a lot at one moment; the limits have tests
/// of their own.
pub const UNLIMITED: Limits = Limits {
    posts_per_second: u32::MAX,
    rooms_per_minute: u32::MAX,
};

/// One replica's chat over a store on a temporary SQLite file.
pub struct TestChat {
    pub chat: Chat,
    pub store: Store,
    pub bus: Bus,
    /// The store's URL, for a test that reaches its database directly.
    pub url: String,
    _dir: TempDir,
}

impl TestChat {
    pub async fn start() -> TestChat {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("chat.db").display());
        let store = Store::connect(&url).await.expect("store");
        let bus = Bus::in_process();
        let chat = Chat::new(store.clone(), bus.clone(), || NOW).with_limits(UNLIMITED);
        TestChat {
            chat,
            store,
            bus,
            url,
            _dir: dir,
        }
    }

    /// Another chat over the same store whose announcements this one's followers never
    /// hear, as a replica whose bus lost them.
    pub fn unheard(&self) -> Chat {
        Chat::new(self.store.clone(), Bus::in_process(), || NOW).with_limits(UNLIMITED)
    }

    /// An account; chat only needs its id and name to exist.
    pub async fn user(&self, name: &str) -> UserId {
        let id = format!("u-{name}");
        self.store
            .create_user(&UserRecord {
                id: id.clone(),
                username: name.to_owned(),
                password_hash: "not a hash".into(),
                created_at: NOW,
            })
            .await
            .expect("create user");
        UserId::new(id)
    }

    pub async fn room(&self, creator: &UserId, name: &str) -> Room {
        self.chat
            .create_room(creator, RoomName::parse(name).expect("a room name"))
            .await
            .expect("create room")
    }

    pub async fn post(
        &self,
        author: &UserId,
        room: &RoomId,
        body: &str,
        client_id: &str,
    ) -> Posted {
        post(&self.chat, author, room, body, client_id).await
    }
}

pub async fn post(
    chat: &Chat,
    author: &UserId,
    room: &RoomId,
    body: &str,
    client_id: &str,
) -> Posted {
    chat.post(
        author,
        room,
        MessageBody::parse(body).expect("a body"),
        ClientId::parse(client_id).expect("a client id"),
    )
    .await
    .expect("post")
}

pub fn seqs(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.seq.get()).collect()
}
