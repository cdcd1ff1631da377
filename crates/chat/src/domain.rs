//! Values parsed at the edge: once built, a [`RoomName`], [`MessageBody`] or
//! [`ClientId`] is valid, and an id of one kind cannot be passed where another is wanted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused; the message says what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("must be 1 to 64 characters long")]
    RoomNameLength,
    #[error(
        "may not contain control characters, bidi controls, zero-width or other invisible \
         characters, or a byte-order mark"
    )]
    RoomNameControl,
    #[error("must be 1 to 4000 characters long")]
    BodyLength,
    #[error(
        "may not contain NUL or other control characters besides tab and newlines, bidi \
         embeddings, overrides or isolates, or a byte-order mark"
    )]
    BodyControl,
    #[error("must be a room id (a UUID)")]
    RoomId,
    #[error("must be 1 to 64 printable ASCII characters")]
    ClientId,
    #[error("must be 0 or more")]
    NegativeSeq,
    #[error("must be from 1 to 500")]
    PageSize,
}

/// The common face of the string newtypes: read-only access, `Display`, and
/// serialisation as a plain string.
macro_rules! string_type {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

/// Deserialising goes through `parse`, so a value read from JSON (a bus announcement)
/// is as valid as one parsed at the edge.
macro_rules! parsed_from_string {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(raw: String) -> Result<$name, Invalid> {
                $name::parse(&raw)
            }
        }
    };
}

/// Characters that change how the text around them is laid out, or are not seen at
/// all, yet are not control characters (Unicode's `Cf`, format, and a few letters
/// that render as nothing): in a room's name they make two names that look the same,
/// or one that looks empty.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}')
}

/// Characters that reorder the text after them until a matching end (bidi embeddings,
/// overrides and isolates), which can make a message read differently from what it
/// holds, and the byte-order mark, which is not text. The directional marks (LRM, RLM,
/// ALM) stay allowed: they affect only the character next to them, and right-to-left
/// writing needs them.
fn reorders(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A room's name: 1 to 64 characters after trimming, no control characters and no
/// invisible ones (see `docs/protocol.md`, "Characters").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct RoomName(String);
string_type!(RoomName);
parsed_from_string!(RoomName);

impl RoomName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<RoomName, Invalid> {
        let name = raw.trim();
        let len = name.chars().count();
        if len == 0 || len > Self::MAX_CHARS {
            return Err(Invalid::RoomNameLength);
        }
        if name.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(Invalid::RoomNameControl);
        }
        Ok(RoomName(name.to_owned()))
    }
}

/// A message's text: 1 to 4000 characters, kept exactly as sent. Any character but NUL
/// and the other control characters (tab, line feed and carriage return aside), the
/// bidi embeddings, overrides and isolates, and the byte-order mark: zero-width joiners
/// and non-joiners stay, since emoji sequences and Persian need them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct MessageBody(String);
string_type!(MessageBody);
parsed_from_string!(MessageBody);

impl MessageBody {
    pub const MAX_CHARS: usize = 4000;

    /// The most bytes a valid body can take inside a JSON string: every character
    /// outside the Basic Multilingual Plane written as a `\uXXXX\uXXXX` pair (12 bytes),
    /// as encoders that escape everything but ASCII do. A transport's frame limit must
    /// take this plus its envelope, or a valid body would be refused on one transport
    /// and taken on another.
    pub const MAX_JSON_BYTES: usize = Self::MAX_CHARS * 12;

    pub fn parse(raw: &str) -> Result<MessageBody, Invalid> {
        let len = raw.chars().count();
        if len == 0 || len > Self::MAX_CHARS {
            return Err(Invalid::BodyLength);
        }
        let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || !(c.is_control() || reorders(c));
        if !raw.chars().all(allowed) {
            return Err(Invalid::BodyControl);
        }
        Ok(MessageBody(raw.to_owned()))
    }
}

/// The id a client chooses for a message, which makes a retried post idempotent: 1 to
/// 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ClientId(String);
string_type!(ClientId);
parsed_from_string!(ClientId);

impl ClientId {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<ClientId, Invalid> {
        if raw.is_empty()
            || raw.len() > Self::MAX_CHARS
            || !raw.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Invalid::ClientId);
        }
        Ok(ClientId(raw.to_owned()))
    }
}

/// A room's id: a UUID in its lowercase hyphenated form, as rooms get them. Parsed at
/// the edge, so that no text a client makes up (a NUL, a megabyte) reaches the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct RoomId(String);
string_type!(RoomId);

impl RoomId {
    /// An id taken on trust, for ids that did not come from a client.
    pub fn new(id: impl Into<String>) -> RoomId {
        RoomId(id.into())
    }

    /// The id a client names a room by (a path segment, a frame's field). Anything
    /// but a UUID names no room; the transport answers as for a room that is not there.
    pub fn parse(raw: &str) -> Result<RoomId, Invalid> {
        let b = raw.as_bytes();
        let shaped = b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            });
        if !shaped {
            return Err(Invalid::RoomId);
        }
        Ok(RoomId(raw.to_owned()))
    }

    pub(crate) fn random() -> RoomId {
        RoomId(random_uuid())
    }
}

/// A message's id, unique across rooms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);
string_type!(MessageId);

impl MessageId {
    pub(crate) fn random() -> MessageId {
        MessageId(random_uuid())
    }
}

/// A user's id, as whoever authenticated the caller established it: chat trusts it and
/// knows nothing of how it was proven.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);
string_type!(UserId);

impl UserId {
    pub fn new(id: impl Into<String>) -> UserId {
        UserId(id.into())
    }
}

/// A message's place in its room: 1 for the first, then one more for each, with no
/// holes. 0 is the place before the first, where a whole history starts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(i64);

impl Seq {
    /// Before the first message.
    pub const ZERO: Seq = Seq(0);

    pub fn new(seq: i64) -> Result<Seq, Invalid> {
        if seq < 0 {
            return Err(Invalid::NegativeSeq);
        }
        Ok(Seq(seq))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The place right after this one.
    pub(crate) fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many messages one page of history holds: 1 to 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(i64);

impl PageSize {
    pub const MAX: PageSize = PageSize(500);
    pub const DEFAULT: PageSize = PageSize(100);

    pub fn new(size: i64) -> Result<PageSize, Invalid> {
        if !(1..=Self::MAX.0).contains(&size) {
            return Err(Invalid::PageSize);
        }
        Ok(PageSize(size))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for PageSize {
    fn default() -> PageSize {
        PageSize::DEFAULT
    }
}

/// Values read back from the store, which only ever held parsed ones.
pub(crate) mod stored {
    use super::*;

    pub fn room_name(s: String) -> RoomName {
        RoomName(s)
    }
    pub fn body(s: String) -> MessageBody {
        MessageBody(s)
    }
    pub fn client_id(s: String) -> ClientId {
        ClientId(s)
    }
    pub fn room_id(s: String) -> RoomId {
        RoomId(s)
    }
    pub fn message_id(s: String) -> MessageId {
        MessageId(s)
    }
    pub fn seq(s: i64) -> Seq {
        Seq(s)
    }
}

/// A random (version 4) UUID, the shape of every id herd makes.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    #[allow(clippy::expect_used)]
    getrandom::getrandom(&mut b).expect("the operating system's random generator failed");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_trimmed_and_bounded_by_characters_not_bytes() {
        assert_eq!(
            RoomName::parse("  general ").map(|n| n.into_string()),
            Ok("general".into())
        );
        assert_eq!(RoomName::parse("   "), Err(Invalid::RoomNameLength));
        assert!(RoomName::parse(&"é".repeat(64)).is_ok());
        assert_eq!(
            RoomName::parse(&"é".repeat(65)),
            Err(Invalid::RoomNameLength)
        );
        assert_eq!(RoomName::parse("a\u{7}b"), Err(Invalid::RoomNameControl));
    }

    #[test]
    fn bodies_and_client_ids_have_their_own_rules() {
        assert!(MessageBody::parse(&"é".repeat(4000)).is_ok());
        assert_eq!(
            MessageBody::parse(&"a".repeat(4001)),
            Err(Invalid::BodyLength)
        );
        assert_eq!(MessageBody::parse(""), Err(Invalid::BodyLength));
        // Bodies keep their spaces; a client id has none.
        assert_eq!(
            MessageBody::parse(" hi ").map(|b| b.into_string()),
            Ok(" hi ".into())
        );
        assert_eq!(ClientId::parse("c 1"), Err(Invalid::ClientId));
        assert_eq!(ClientId::parse("é"), Err(Invalid::ClientId));
        assert_eq!(ClientId::parse(&"c".repeat(65)), Err(Invalid::ClientId));
        assert!(ClientId::parse(&"c".repeat(64)).is_ok());
    }

    #[test]
    fn a_nul_or_a_bidi_override_is_refused_in_every_field_that_could_hold_it() {
        assert_eq!(MessageBody::parse("a\u{0}b"), Err(Invalid::BodyControl));
        assert_eq!(MessageBody::parse("\u{1}"), Err(Invalid::BodyControl));
        assert_eq!(
            MessageBody::parse("\u{202e}txt.exe"),
            Err(Invalid::BodyControl)
        );
        assert_eq!(MessageBody::parse("\u{2067}x"), Err(Invalid::BodyControl));
        assert_eq!(MessageBody::parse("\u{feff}"), Err(Invalid::BodyControl));
        // Lines, tabs, right-to-left marks, emoji joined by ZWJ and Persian's ZWNJ stay.
        for ok in [
            "a\tb\r\nc",
            "\u{200f}שלום",
            "👩\u{200d}💻",
            "می\u{200c}خواهم",
        ] {
            assert!(MessageBody::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "a\u{0}",
            "\u{feff}",
            "\u{200b}",
            "a\u{202e}b",
            "\u{3164}",
            "\u{2066}x",
        ] {
            assert_eq!(
                RoomName::parse(bad),
                Err(Invalid::RoomNameControl),
                "{bad:?}"
            );
        }
        assert_eq!(ClientId::parse("c\u{0}"), Err(Invalid::ClientId));
        assert_eq!(RoomId::parse("%00"), Err(Invalid::RoomId));
        assert_eq!(RoomId::parse("\u{0}"), Err(Invalid::RoomId));
        assert_eq!(RoomId::parse("no-such-room"), Err(Invalid::RoomId));
        let id = RoomId::random();
        assert_eq!(RoomId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn seqs_and_page_sizes_are_in_range() {
        assert_eq!(Seq::new(-1), Err(Invalid::NegativeSeq));
        assert_eq!(Seq::new(0), Ok(Seq::ZERO));
        assert_eq!(PageSize::new(0), Err(Invalid::PageSize));
        assert_eq!(PageSize::new(501), Err(Invalid::PageSize));
        assert_eq!(PageSize::new(500), Ok(PageSize::MAX));
    }

    #[test]
    fn a_parsed_value_deserialises_only_if_it_parses() {
        let body: Result<MessageBody, _> = serde_json::from_str("\"\"");
        assert!(body.is_err());
        let name: RoomName = serde_json::from_str("\" general \"").expect("a name");
        assert_eq!(name.as_str(), "general");
    }

    #[test]
    fn ids_are_version_4_uuids() {
        let id = RoomId::random();
        let id = id.as_str();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(RoomId::random().as_str(), id);
    }
}
