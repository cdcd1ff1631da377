//! Helpers shared by the modules that run the `herd` executable: the executable itself,
//! one [`Replica`] (`herd serve`) and one [`Cluster`] (`herd cluster`).

mod cluster;
mod replica;

pub use cluster::Cluster;
pub use replica::Replica;

use std::io::{BufRead, Lines};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `herd serve` flags for a cheap argon2id: tests log in many times and test nothing
/// about the hash's cost.
pub const CHEAP_HASH: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// The `herd` executable, with no `HERD_*` variable from the environment running the
/// tests: only the flags a test passes count.
pub fn herd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn database(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("herd.db").display())
}

/// Reads JSON log lines until the one whose message is `message`, and returns its
/// `listen` field. Lines that are not JSON (a cluster's forwarded replica lines) are
/// skipped.
pub fn listen_address(lines: &mut Lines<impl BufRead>, message: &str) -> String {
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the process exited before logging {message:?}"))
            .expect("line");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == message {
            return entry["fields"]["listen"]
                .as_str()
                .expect("listen")
                .to_owned();
        }
    }
}

/// Reads `lines` into `log` on a thread of its own until the process closes its end, so
/// that the pipe never fills up and stalls the process.
pub fn keep_lines(
    lines: Lines<impl BufRead + Send + 'static>,
    log: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            log.lock().expect("log").push(line);
        }
    })
}

/// Signs `username` up at `base` (a replica's URL, or a balancer's) and logs them in;
/// returns their access token.
pub async fn signup_and_login(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> String {
    let credentials = json!({ "username": username, "password": password });
    let signup = client
        .post(format!("{base}/v1/auth/signup"))
        .json(&credentials)
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    let login: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    login["access_token"].as_str().expect("token").to_owned()
}

/// A WebSocket client's connection, as `tokio-tungstenite` makes it.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (`ws://HOST/v1/ws`: a replica, a balancer, nginx) with
/// `token` as its bearer; the socket and the upgrade's response.
pub async fn websocket(
    url: &str,
    token: &str,
) -> (
    Ws,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().expect("request");
    let bearer = format!("Bearer {token}").parse().expect("header");
    request.headers_mut().insert("authorization", bearer);
    tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("upgrade at {url}: {e}"))
}

/// Stops a child gently (SIGTERM, so it can stop its own children or workers), then for
/// good once `grace` has passed.
pub fn stop(child: &mut Child, grace: Duration) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The replica that served a response, from `x-herd-replica`.
pub fn replica_of(response: &reqwest::Response) -> String {
    response.headers()["x-herd-replica"]
        .to_str()
        .expect("ascii")
        .to_owned()
}
/// Raw HTTP/1.1 over TCP, for requests a well-behaved client library would not send: an
/// attacker's.
pub mod raw {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Longer than any bound the edge tests configure: a connection still open or a
    /// request still unanswered after it is held for ever, and the test fails rather
    /// than hang.
    pub const NEVER: Duration = Duration::from_secs(60);

    /// A `GET /healthz` with `extra` headers of its own and a body of `body` bytes that
    /// the handler never reads.
    pub fn crowded_healthz(host: &str, extra: usize, body: usize) -> Vec<u8> {
        let mut head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
        for i in 0..extra {
            head.push_str(&format!("x-filler-{i}: {i}\r\n"));
        }
        head.push_str(&format!("content-length: {body}\r\n\r\n"));
        let mut request = head.into_bytes();
        request.extend(std::iter::repeat_n(b'a', body));
        request
    }

    /// Sends `request` on a new connection to `addr` and returns the status code of the
    /// answer, or `None` when the connection closed without one.
    pub async fn status_of(addr: &str, request: &[u8]) -> Option<u16> {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // A peer that answers early and closes may reset the rest of the write: the
        // answer, if any, is still read below.
        let _ = stream.write_all(request).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(NEVER, stream.read(&mut chunk))
                .await
                .expect("an answer or a close, not silence");
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
    }

    /// Reads one response with a Content-Length body from a connection kept alive;
    /// returns its status line.
    pub async fn read_response(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(NEVER, stream.read(&mut chunk))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n > 0, "closed before a whole answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text.lines().next().unwrap_or_default().to_owned();
            }
        }
    }

    /// Waits for the server to close `stream`, reading whatever it sends; false if it
    /// is still open after [`NEVER`].
    pub async fn closed_by_peer(stream: &mut TcpStream) -> bool {
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

    /// A request head that never ends: a slowloris connection.
    pub async fn slowloris(addr: &str) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nx-slow: ")
            .await
            .expect("send");
        stream
    }
}

/// `herd` under a limit of `open_files` file descriptors (`ulimit -n`), as a replica on
/// a small host or container runs.
pub fn herd_with_open_files(open_files: u32) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_herd"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HERD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
