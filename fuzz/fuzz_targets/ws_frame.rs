//! The WebSocket protocol decoder on arbitrary frames: it must decode or refuse, never
//! panic, and decode only JSON objects tagged with a frame type; the checks a `send`
//! frame then goes through must not panic either.

#![no_main]

use herd_chat::{ClientId, MessageBody};
use herd_server::chat::{decode_client_frame, ClientFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the WebSocket protocol; the server never sees others as text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client_frame(text) {
        Ok(frame) => {
            let value: serde_json::Value =
                serde_json::from_str(text).expect("a decoded frame is JSON");
            assert!(value["type"].is_string(), "a frame without a type decoded");
            if let ClientFrame::Send {
                body, client_id, ..
            } = frame
            {
                let _ = MessageBody::parse(&body);
                let _ = ClientId::parse(&client_id);
            }
        }
        // The error's text goes back to the client in an error frame.
        Err(e) => drop(e.to_string()),
    }
});
