//! The README's demo in a real browser: headless Chromium, driven over the Chrome
//! DevTools Protocol, signs up on the page `herd cluster` serves, chats, kills the
//! replica holding its WebSocket from the cluster panel, and is still logged in and
//! receiving messages afterwards. A screenshot of the end state is kept in
//! `target/test-artifacts/browser-cluster.png` (`browser-cluster-failure.png` when a
//! wait times out).
//!
//! Ignored unless asked for; it needs Chromium:
//!
//! ```sh
//! HERD_TEST_CHROMIUM=/usr/bin/chromium cargo test -p herd --test it browser:: -- --include-ignored
//! ```
//!
//! The CDP client is the few lines this needs (one page, sequential commands) rather
//! than a browser-automation crate: a WebSocket to the browser, `Target.attachToTarget`
//! with `flatten`, and `Runtime.evaluate` against the ids `web/app.js` documents.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{stop, Cluster};

/// How long any one wait on the page may take.
const WAIT: Duration = Duration::from_secs(15);

fn tail(log: &Mutex<Vec<String>>, n: usize) -> String {
    let log = log.lock().expect("log");
    log[log.len().saturating_sub(n)..].join("\n")
}

/// A headless Chromium child with its own profile, killed when dropped.
struct Chromium {
    child: Child,
    /// The browser's DevTools WebSocket.
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch(program: &str) -> Chromium {
        let profile = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("HERD_TEST_CHROMIUM={program} does not start: {e}"));
        // The port is the browser's choice; it says which on stderr.
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, url) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            // Reading on after the address keeps the pipe from filling up.
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(at) = line.find("DevTools listening on ") {
                    let _ = found.send(line[at + "DevTools listening on ".len()..].to_owned());
                }
                sink.lock().expect("log").push(line);
            }
        });
        let url = match url.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                stop(&mut child, Duration::from_secs(1));
                panic!(
                    "{program} never said \"DevTools listening on\":\n{}",
                    tail(&log, 50)
                );
            }
        };
        Chromium {
            child,
            url,
            log,
            _profile: profile,
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of the browser, attached over the browser's DevTools socket.
struct Page {
    socket: Socket,
    session: String,
    next_id: u64,
    /// Exceptions and console errors the page reported, for failure messages.
    problems: Vec<String>,
}

impl Page {
    async fn attach(browser: &Chromium) -> Page {
        let (socket, _) = tokio_tungstenite::connect_async(browser.url.as_str())
            .await
            .expect("connect to the DevTools socket");
        let mut page = Page {
            socket,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
        };
        let targets = page.call("Target.getTargets", json!({})).await;
        let target = targets["targetInfos"]
            .as_array()
            .expect("targetInfos")
            .iter()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets}"))["targetId"]
            .clone();
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        page.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }

    /// Sends one command (to the page once attached) and waits for its answer; events
    /// that come meanwhile are only looked at for problems to report.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket
            .send(WsMessage::text(command.to_string()))
            .await
            .expect("send a DevTools command");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} in 30 s"));
            let text = match frame {
                Some(Ok(WsMessage::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("the DevTools socket ended during {method}: {other:?}"),
            };
            let message: Value = serde_json::from_str(&text).expect("DevTools json");
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.note(&message);
        }
    }

    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.problems.push(format!(
                "exception: {}",
                params["exceptionDetails"]["exception"]["description"]
            )),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .problems
                .push(format!("console.error: {}", params["args"])),
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("{expression} threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `condition` every 100 ms until it is truthy, and returns its value; on
    /// timeout, keeps a screenshot and fails saying what the page showed.
    async fn wait_for(&mut self, what: &str, condition: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.eval(condition).await;
            if truthy(&value) {
                return value;
            }
            if Instant::now() >= deadline {
                let shown = self.eval(SNAPSHOT).await;
                let saved = self.screenshot("browser-cluster-failure.png").await;
                panic!(
                    "timed out after {WAIT:?} waiting for {what} ({condition})\n\
                     the page: {shown:#}\nproblems: {:#?}\nscreenshot: {}",
                    self.problems,
                    saved.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Captures the whole page as a PNG under `target/test-artifacts/`.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let height = self
            .eval("Math.ceil(document.documentElement.scrollHeight)")
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(900, 4000);
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1200, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        // Two animation frames: the resized page has been laid out and painted.
        self.eval(
            "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        )
        .await;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("data"))
            .expect("base64");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
        std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write the screenshot");
        path.canonicalize().unwrap_or(path)
    }
}

/// What the page shows, for failure messages.
const SNAPSHOT: &str = r#"(() => {
  const $ = (id) => document.getElementById(id);
  return {
    me: $('me').textContent,
    notice: $('notice').hidden ? null : $('notice').textContent,
    signupError: $('signup-error').textContent,
    roomsError: $('rooms-error').textContent,
    ws: { state: $('ws-status').dataset.state, replica: $('ws-status').dataset.replica,
          text: $('ws-status').textContent },
    messages: [...document.querySelectorAll('#messages li')].map((li) =>
      `${li.dataset.seq || '-'} ${li.className} ${li.textContent}`),
    cluster: [...document.querySelectorAll('#cluster-replicas tr')].map((tr) => tr.textContent),
  };
})()"#;

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A JavaScript string literal.
fn js(text: &str) -> String {
    Value::from(text).to_string()
}

/// The condition "message `seq` is shown, stored and acknowledged, with `body`".
fn acked(seq: u64, body: &str) -> String {
    format!(
        r#"(() => {{
  const li = document.querySelector('#messages li[data-seq="{seq}"]');
  return Boolean(li && !li.classList.contains('pending')
    && !document.querySelector('#messages li.pending')
    && li.querySelector('.body').textContent === {body}
    && li.querySelector('.ack').textContent.startsWith('✓ stored as #{seq}'));
}})()"#,
        body = js(body)
    )
}

/// The seqs `#messages` shows, in order.
const SEQS: &str =
    "[...document.querySelectorAll('#messages li')].map((li) => Number(li.dataset.seq || 0))";

/// Sends a message from the page's form.
async fn send_from_page(page: &mut Page, body: &str) {
    page.eval(&format!(
        "document.getElementById('message-body').value = {};\
         document.getElementById('message-form').requestSubmit(); true",
        js(body)
    ))
    .await;
}

#[tokio::test]
#[ignore = "needs chromium: set HERD_TEST_CHROMIUM=/usr/bin/chromium"]
async fn the_page_survives_killing_the_replica_that_holds_its_socket() {
    let program = std::env::var("HERD_TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!(
            "set HERD_TEST_CHROMIUM to a Chromium executable, \
             e.g. HERD_TEST_CHROMIUM=/usr/bin/chromium"
        )
    });
    // Dropped in reverse order: the browser first, then the cluster.
    let cluster = Cluster::start(&["--sessions", "token"]);
    let browser = Chromium::launch(&program);
    let mut page = Page::attach(&browser).await;

    page.call("Page.navigate", json!({ "url": cluster.url("/") }))
        .await;
    page.wait_for(
        "the page and its cluster panel",
        "document.readyState === 'complete' && !document.getElementById('cluster').hidden \
         && document.querySelectorAll('#cluster-replicas tr').length === 2",
    )
    .await;

    // Sign up, which logs in (cookies), and create a room.
    page.eval(
        "document.getElementById('signup-username').value = 'alice';\
         document.getElementById('signup-password').value = 'correct horse battery';\
         document.getElementById('signup-form').requestSubmit(); true",
    )
    .await;
    let session = page
        .wait_for(
            "logged in as alice",
            "document.getElementById('auth').hidden \
             && document.querySelector('#me[data-username=\"alice\"]')?.dataset.session",
        )
        .await;
    page.eval(
        "document.getElementById('room-name').value = 'ops';\
         document.getElementById('room-create-form').requestSubmit(); true",
    )
    .await;
    let room = page
        .wait_for(
            "the room picked and the socket live",
            "(() => { const id = document.getElementById('room-id').textContent;\
               return id !== '-' && !document.getElementById('message-body').disabled \
                 && document.getElementById('ws-status').dataset.state === 'live' && id; })()",
        )
        .await;
    let room = room.as_str().expect("room id").to_owned();

    // A message from the page, acknowledged.
    send_from_page(&mut page, "before the kill").await;
    page.wait_for("message #1 acknowledged", &acked(1, "before the kill"))
        .await;

    // Kill the replica holding the page's WebSocket, from the panel.
    let holder = page
        .wait_for(
            "the replica holding the socket",
            "(() => { const s = document.getElementById('ws-status');\
               return s.dataset.state === 'live' && s.dataset.replica; })()",
        )
        .await;
    let holder = holder.as_str().expect("replica id").to_owned();
    page.wait_for(
        "the panel marking the socket's replica",
        &format!(
            "document.querySelector('#cluster-replicas tr.socket')?.dataset.id === {}",
            js(&holder)
        ),
    )
    .await;
    page.eval(&format!(
        "document.querySelector('#cluster .kill[data-id=' + JSON.stringify({}) + ']').click(); true",
        js(&holder)
    ))
    .await;
    let deadline = Instant::now() + WAIT;
    while cluster.state_of(&holder).await.as_deref() != Some("dead") {
        assert!(
            Instant::now() < deadline,
            "{holder} was not killed: {:?}\n{}",
            cluster.replicas().await,
            tail(&cluster.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Live again, on the other replica, and still the same login session.
    let survivor = page.wait_for(
        "the socket live on another replica",
        &format!(
            "(() => {{ const s = document.getElementById('ws-status');\
               return s.dataset.state === 'live' && s.dataset.replica !== {} && s.dataset.replica; }})()",
            js(&holder)
        ),
    )
    .await;
    let still = page
        .eval(
            "({ auth: document.getElementById('auth').hidden,\
                session: document.querySelector('#me[data-username=\"alice\"]')?.dataset.session,\
                notice: document.getElementById('notice').hidden ? '' \
                  : document.getElementById('notice').textContent })",
        )
        .await;
    assert_eq!(still["auth"], true, "the log-in form came back: {still}");
    assert_eq!(still["session"], session, "not the same session: {still}");
    let notice = still["notice"].as_str().unwrap_or_default().to_lowercase();
    assert!(!notice.contains("log"), "a logged-out notice: {still}");

    // Another user posts over the HTTP API; the page shows it as the next seq.
    let bob = json!({ "username": "bob", "password": "correct horse battery" });
    let (status, body) = cluster.call("/v1/auth/signup", None, bob.clone()).await;
    assert_eq!(status, 201, "signup: {body}");
    let (status, body) = cluster.call("/v1/auth/login", None, bob).await;
    assert_eq!(status, 200, "login: {body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = cluster
        .call(&format!("/v1/rooms/{room}/join"), Some(&token), json!({}))
        .await;
    assert_eq!(status, 200, "join: {body}");
    let (status, body) = cluster
        .call(
            &format!("/v1/rooms/{room}/messages"),
            Some(&token),
            json!({ "body": "hello from bob", "client_id": "bob-1" }),
        )
        .await;
    assert_eq!(status, 201, "post: {body}");
    assert_eq!(body["seq"], 2, "{body}");
    page.wait_for(
        "bob's message as #2",
        "(() => { const li = document.querySelector('#messages li[data-seq=\"2\"]');\
           return Boolean(li && li.querySelector('.author').textContent === 'bob'\
             && li.querySelector('.body').textContent === 'hello from bob'); })()",
    )
    .await;

    // And the page still sends.
    send_from_page(&mut page, "after the kill").await;
    page.wait_for("message #3 acknowledged", &acked(3, "after the kill"))
        .await;
    assert_eq!(
        page.eval(SEQS).await,
        json!([1, 2, 3]),
        "no gap, no duplicate"
    );

    // The panel (polled every second) says where the socket went, for the screenshot.
    page.wait_for(
        "the panel marking the socket's new replica",
        &format!(
            "document.querySelector('#cluster-replicas tr.socket')?.dataset.id === {}",
            js(survivor.as_str().expect("replica id"))
        ),
    )
    .await;
    let shot = page.screenshot("browser-cluster.png").await;
    eprintln!("screenshot: {}", shot.display());
    assert!(
        page.problems.is_empty(),
        "the page reported problems: {:#?}\nchromium: {}",
        page.problems,
        tail(&browser.log, 20)
    );
}
