//! docs/protocol.schema.json: generated from the server's frame types, and every frame
//! the server's types produce or its decoder accepts agrees with it.

use std::collections::BTreeSet;

use herd_server::chat::{protocol_schema, ClientFrame, ServerFrame};
use herd_server::rooms::Message;
use serde_json::{json, Value};

const COMMITTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/protocol.schema.json"
);

fn committed() -> Value {
    let text = std::fs::read_to_string(COMMITTED).expect("docs/protocol.schema.json");
    serde_json::from_str(&text).expect("the committed schema is JSON")
}

/// A validator for one of the schema's definitions.
fn validator(def: &str) -> jsonschema::Validator {
    let mut schema = committed();
    schema["$ref"] = json!(format!("#/$defs/{def}"));
    schema.as_object_mut().expect("object").remove("oneOf");
    jsonschema::draft202012::new(&schema).expect("a valid JSON Schema 2020-12")
}

fn assert_valid(validator: &jsonschema::Validator, frame: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(frame)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{frame} breaks the schema: {errors:?}");
}

/// The `type` values a oneOf of frames documents.
fn documented_types(def: &str) -> BTreeSet<String> {
    let schema = committed();
    schema["$defs"][def]["oneOf"]
        .as_array()
        .expect("a oneOf of frames")
        .iter()
        .map(|variant| {
            let t = &variant["properties"]["type"];
            t["enum"][0]
                .as_str()
                .or_else(|| t["const"].as_str())
                .or_else(|| variant["allOf"][1]["properties"]["type"]["enum"][0].as_str())
                .unwrap_or_else(|| panic!("a frame without a type: {variant}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn the_committed_schema_is_the_one_the_frame_types_generate() {
    let generated = protocol_schema();
    if std::env::var_os("HERD_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&generated).expect("json") + "\n";
        std::fs::write(COMMITTED, text).expect("write the schema");
    }
    assert_eq!(
        committed(),
        generated,
        "docs/protocol.schema.json is stale: regenerate it with \
         HERD_BLESS=1 cargo test -p herd-server --test it protocol"
    );
}

fn message() -> Message {
    Message {
        room: "r1".into(),
        seq: 7,
        id: "m1".into(),
        author: "alice".into(),
        author_id: "u1".into(),
        body: "hello".into(),
        client_id: "c-1".into(),
        created_at: 1_700_000_000,
    }
}

#[test]
fn every_frame_the_server_sends_matches_the_schema() {
    let frames = [
        ServerFrame::Ready {
            user_id: "u1".into(),
            session_id: "s1".into(),
            replica: "host:8080".into(),
        },
        ServerFrame::Message(message()),
        ServerFrame::Subscribed {
            room: "r1".into(),
            last_seq: 7,
        },
        ServerFrame::Unsubscribed { room: "r1".into() },
        ServerFrame::Ack {
            client_id: "c-1".into(),
            room: "r1".into(),
            seq: 7,
            id: "m1".into(),
            duplicate: false,
        },
        ServerFrame::Error {
            code: "rate-limited".into(),
            message: "slow down".into(),
            client_id: Some("c-1".into()),
        },
        ServerFrame::Error {
            code: "bad-frame".into(),
            message: "not a frame".into(),
            client_id: None,
        },
        ServerFrame::Reauth {
            expires_at: 1_700_000_300,
        },
        ServerFrame::Reauthed {
            expires_at: Some(1_700_000_600),
        },
        ServerFrame::Reauthed { expires_at: None },
    ];
    let server = validator("ServerFrame");
    let client = validator("ClientFrame");
    let mut seen = BTreeSet::new();
    for frame in &frames {
        let value = serde_json::to_value(frame).expect("serializes");
        assert_valid(&server, &value);
        assert!(
            !client.is_valid(&value),
            "{value} is also a valid client frame"
        );
        seen.insert(value["type"].as_str().expect("a type").to_owned());
    }
    assert_eq!(
        seen,
        documented_types("ServerFrame"),
        "a server frame untested"
    );
    // A frame that breaks the schema is caught (the validator is not vacuous).
    assert!(!server.is_valid(&json!({"type": "ack", "room": "r1"})));
    assert!(!server.is_valid(&json!({"type": "teleport"})));
}

#[test]
fn every_client_frame_the_schema_documents_is_accepted_by_the_decoder() {
    let frames = [
        json!({"type": "auth", "token": "t"}),
        json!({"type": "reauth", "token": "t"}),
        json!({"type": "subscribe", "room": "r1", "since": 0}),
        json!({"type": "unsubscribe", "room": "r1"}),
        json!({"type": "send", "room": "r1", "body": "hi", "client_id": "c-1"}),
    ];
    let client = validator("ClientFrame");
    let mut seen = BTreeSet::new();
    for frame in &frames {
        assert_valid(&client, frame);
        serde_json::from_value::<ClientFrame>(frame.clone())
            .unwrap_or_else(|e| panic!("the server refuses {frame}: {e}"));
        seen.insert(frame["type"].as_str().expect("a type").to_owned());
    }
    assert_eq!(
        seen,
        documented_types("ClientFrame"),
        "a client frame untested"
    );
    // What the schema refuses, the decoder refuses too.
    for bad in [
        json!({"type": "subscribe", "room": "r1"}),
        json!({"type": "send", "room": "r1", "body": "hi"}),
        json!({"type": "auth"}),
    ] {
        assert!(!client.is_valid(&bad), "{bad} passes the schema");
        assert!(
            serde_json::from_value::<ClientFrame>(bad.clone()).is_err(),
            "{bad} decodes"
        );
    }
}
