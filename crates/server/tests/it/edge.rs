//! A replica's connections under attack from a client with no account: too many headers,
//! a body the handler ignores, a request head that never ends, a connection that never
//! sends anything. Raw TCP, so that nothing between the test and the replica fixes the
//! request up.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{spawn_with, Options, TestApp};

/// Longer than any bound these tests configure: a connection still open after it is a
/// connection the replica holds for ever, and the test fails instead of hanging.
const NEVER: Duration = Duration::from_secs(60);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// A `GET /healthz` as a proxy would forward an attacker's: `extra` headers of its own
/// and a body of `body` bytes that the handler never reads.
fn crowded_healthz(extra: usize, body: usize) -> Vec<u8> {
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: replica\r\n");
    for i in 0..extra {
        head.push_str(&format!("x-filler-{i}: {i}\r\n"));
    }
    head.push_str(&format!("content-length: {body}\r\n\r\n"));
    let mut request = head.into_bytes();
    request.extend(std::iter::repeat_n(b'a', body));
    request
}

/// A request head that stops mid-header and never ends: a slowloris.
const UNFINISHED_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: replica\r\nx-slow: ";

/// Reads one HTTP/1.1 response with a Content-Length body; returns its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(NEVER, stream.read(&mut chunk))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// Waits for the replica to close `stream`, reading (and dropping) whatever it sends.
async fn closed_by_replica(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    let waited = tokio::time::timeout(NEVER, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    waited.await.is_ok()
}

#[tokio::test]
async fn a_request_with_as_many_headers_as_a_replica_takes_and_an_unread_body_is_served_and_keeps_the_connection(
) {
    let app = spawn_with(Options::default()).await;
    let mut stream = connect(&app).await;
    // Host and Content-Length, and fillers up to the count: the most a replica parses
    // (hyper's own bound), served three times on one connection with the body unread.
    let extra = herd_edge::REPLICA_MAX_HEADERS - 2;
    for _ in 0..3 {
        stream
            .write_all(&crowded_healthz(extra, 65_000))
            .await
            .expect("send");
        let status = read_response(&mut stream).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    // One more header is over it: 431 (and a lingering close, tried below).
    stream
        .write_all(&crowded_healthz(extra + 1, 65_000))
        .await
        .expect("send");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
}

#[tokio::test]
async fn a_request_over_the_header_count_is_refused_and_its_body_still_read() {
    let app = spawn_with(Options::default()).await;
    let mut stream = connect(&app).await;
    // The head alone first, over the count a replica parses, as a proxy sends a request:
    // the replica refuses it before the body is on its way. It used to close the
    // connection then, so the proxy's next write of the body met a reset, which nginx
    // counts as the replica failing.
    let body = 512_000;
    let request = crowded_healthz(1_000, body);
    let (head, rest) = request.split_at(request.len() - body);
    stream.write_all(head).await.expect("send the head");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    for (i, chunk) in rest.chunks(64_000).enumerate() {
        let sent = stream.write_all(chunk).await;
        assert!(sent.is_ok(), "chunk {i} of the body met {sent:?}");
    }
    stream.shutdown().await.expect("end of the request");
    assert!(
        closed_by_replica(&mut stream).await,
        "the replica still holds the refused connection"
    );
}

#[tokio::test]
async fn a_slowloris_request_head_is_cut_off_after_the_header_read_timeout() {
    let mut options = Options::default();
    options.connections.header_read_timeout = Duration::from_millis(300);
    let app = spawn_with(options).await;
    let mut stream = connect(&app).await;
    stream.write_all(UNFINISHED_HEAD).await.expect("send");
    assert!(
        closed_by_replica(&mut stream).await,
        "the replica still holds an unfinished request head"
    );
    // The replica itself is fine.
    let healthz = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), 200);
}

/// Between requests a keep-alive connection is idle, not slow: hyper's own header-read
/// timer ran there too and cut it at the header-read timeout (10 s) rather than the idle
/// timeout (75 s), under the keep-alive timeouts of the proxies in front. A head begun on
/// it is still held to the header-read timeout, from its first byte.
#[tokio::test]
async fn a_kept_alive_connection_waits_for_the_idle_timeout_but_a_slow_head_on_it_does_not() {
    let mut options = Options::default();
    options.connections.header_read_timeout = Duration::from_millis(200);
    // Longer than the test: whatever closes the connection here is not the idle timeout.
    options.connections.idle_timeout = Duration::from_secs(600);
    let app = spawn_with(options).await;
    let mut stream = connect(&app).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: replica\r\n\r\n";
    stream.write_all(request).await.expect("send");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Five header-read timeouts with nothing sent either way.
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the replica ended an idle keep-alive connection at the header-read timeout: {waited:?}"
    );
    stream.write_all(request).await.expect("send again");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    stream
        .write_all(UNFINISHED_HEAD)
        .await
        .expect("send a head that never ends");
    assert!(
        closed_by_replica(&mut stream).await,
        "the replica still holds an unfinished request head on a kept-alive connection"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() {
    let mut options = Options::default();
    options.connections.idle_timeout = Duration::from_millis(300);
    let app = spawn_with(options).await;
    let mut silent = connect(&app).await;
    assert!(
        closed_by_replica(&mut silent).await,
        "the replica still holds a connection that never said anything"
    );
    // ... and so is one that sent a request and then nothing more.
    let mut kept_alive = connect(&app).await;
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: replica\r\n\r\n")
        .await
        .expect("send");
    let status = read_response(&mut kept_alive).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        closed_by_replica(&mut kept_alive).await,
        "the replica still holds an idle keep-alive connection"
    );
}

#[tokio::test]
async fn a_request_head_over_the_header_byte_limit_gets_431() {
    let mut options = Options::default();
    options.connections.max_header_bytes = 16 * 1024;
    let app = spawn_with(options).await;
    let mut stream = connect(&app).await;
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: replica\r\n");
    request.push_str(&format!("x-big: {}\r\n\r\n", "a".repeat(20 * 1024)));
    stream.write_all(request.as_bytes()).await.expect("send");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_instead_of_holding_the_request() {
    let mut options = Options::default();
    options.connections.header_read_timeout = Duration::from_millis(300);
    let app = spawn_with(options).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: replica\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"user",
        )
        .await
        .expect("send");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
}

/// A body sent in chunks declares no length: a request with Transfer-Encoding and no
/// Content-Length must still meet the body limit. (A request with neither header has no
/// body in HTTP/1, and is routed without the limit's bookkeeping: this is the request
/// that must not be taken for one.)
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413() {
    let app = spawn_with(Options {
        body_limit: 2048,
        ..Options::default()
    })
    .await;
    let mut stream = connect(&app).await;
    let body = format!(
        r#"{{"username": "alice", "password": "{}"}}"#,
        "x".repeat(4096)
    );
    let mut request = String::from(
        "POST /v1/auth/signup HTTP/1.1\r\nHost: replica\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    for chunk in body.as_bytes().chunks(1000) {
        request.push_str(&format!("{:x}\r\n", chunk.len()));
        request.push_str(std::str::from_utf8(chunk).expect("ascii"));
        request.push_str("\r\n");
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let status = read_response(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
}
