//! A WebSocket client for tests: JSON frames in and out, every wait bounded.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// How long any one wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server ended a connection with.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Closed(u16),
    Dropped,
}

/// An upgrade the server refused: its status, content type and body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Value,
}

impl TestApp {
    /// Connects with exactly the extra request headers given (e.g. `cookie`, `origin`),
    /// without waiting for anything; a refusal comes back with its problem body.
    pub async fn ws_with_headers(&self, headers: &[(&str, &str)]) -> Result<Socket, Refusal> {
        let mut request = self.ws_url().into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Socket { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refusal {
                status: response.status().as_u16(),
                content_type: response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null),
            }),
            Err(e) => panic!("connecting: {e}"),
        }
    }

    fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.base.replacen("http://", "ws://", 1))
    }

    /// Connects with a bearer token and waits for `ready`.
    pub async fn ws(&self, access_token: &str) -> Socket {
        let mut socket = self
            .ws_raw(Some(access_token), None)
            .await
            .expect("upgrade");
        let ready = socket.next_of("ready").await;
        assert_eq!(ready["replica"], self.options.replica_id.as_str());
        socket
    }

    /// Connects with a bearer token and waits for `ready`, over a TCP socket whose
    /// receive buffer is a few KiB: a client that then stops reading fills it at once,
    /// as it would after the kernel's larger buffers, only sooner.
    pub async fn ws_small_buffer(&self, access_token: &str) -> Socket {
        let addr: std::net::SocketAddr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = tcp.connect(addr).await.expect("connect");
        let mut request = self.ws_url().into_client_request().expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {access_token}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
        let mut socket = Socket { ws };
        socket.next_of("ready").await;
        socket
    }

    /// Connects, with the bearer token and Origin given, without waiting for anything.
    pub async fn ws_raw(&self, bearer: Option<&str>, origin: Option<&str>) -> Result<Socket, u16> {
        let mut request = self.ws_url().into_client_request().expect("request");
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().expect("header"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Socket { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("connecting: {e}"),
        }
    }
}

impl Socket {
    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, text: String) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// The next JSON frame, or how the connection ended.
    pub async fn next(&mut self) -> Result<Value, End> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame or a close within the patience");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("JSON frame"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(End::Closed(frame.map_or(1005, |f| f.code.into())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(End::Dropped),
            }
        }
    }

    /// The next frame of type `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Ok(frame) if frame["type"] == kind => return frame,
                Ok(_) => continue,
                Err(end) => panic!("connection ended ({end:?}) while waiting for {kind}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> End {
        loop {
            if let Err(end) = self.next().await {
                return end;
            }
        }
    }

    pub async fn subscribe(&mut self, room: &str, since: i64) {
        self.send(json!({ "type": "subscribe", "room": room, "since": since }))
            .await;
    }

    pub async fn say(&mut self, room: &str, body: &str, client_id: &str) -> Value {
        self.send(json!({ "type": "send", "room": room, "body": body, "client_id": client_id }))
            .await;
        self.next_of("ack").await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
