//! The README's demo in a real browser: headless Chromium, driven over the Chrome
//! DevTools Protocol, signs up on the page `herd cluster` serves, chats, kills the
//! replica holding its WebSocket from the cluster panel, and is still logged in and
//! receiving messages afterwards. A screenshot of the end state is kept in
//! `target/test-artifacts/browser-cluster.png` (`browser-cluster-failure.png` when a
//! wait times out). The same flow on a 390 px phone screen checks what the page tells
//! (the guide, the reconnect event and its counts, traffic on an added replica, a
//! drained replica apart from a killed one) and keeps `browser-phone-after-kill.png`,
//! `browser-desktop-after-kill.png` and `browser-phone-after-drain.png`.
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

/// Captures the whole page at the viewport `set_viewport` last set, as a PNG under
/// `target/test-artifacts/`, without resizing the viewport (the page's heights in `vh`
/// stay what the person in front of it sees).
async fn screenshot_as_shown(page: &mut Page, name: &str) -> PathBuf {
    page.eval(
        "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
    )
    .await;
    let size = page
        .eval("[document.documentElement.clientWidth, Math.ceil(document.documentElement.scrollHeight)]")
        .await;
    let (width, height) = (
        size[0].as_u64().unwrap_or(390),
        size[1].as_u64().unwrap_or(900).min(6000),
    );
    let shot = page
        .call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 },
            }),
        )
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

/// Emulates a screen `width` CSS pixels wide (a phone when `mobile`).
async fn set_viewport(page: &mut Page, width: u32, height: u32, mobile: bool) {
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
    )
    .await;
}

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

/// Whether every element `selector` matches lies inside the viewport once scrolled to,
/// and the page is no wider than the screen; the offenders otherwise.
fn all_on_screen(selector: &str) -> String {
    format!(
        r#"(() => {{
  const off = [];
  if (document.documentElement.scrollWidth > window.innerWidth) {{
    off.push(`the page is ${{document.documentElement.scrollWidth}} px wide`);
  }}
  const found = [...document.querySelectorAll({selector})];
  if (!found.length) return 'nothing matches {selector}';
  for (const el of found) {{
    el.scrollIntoView({{ block: 'center', inline: 'nearest' }});
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.left < 0 || r.top < 0 || r.right > window.innerWidth
        || r.bottom > window.innerHeight) {{
      off.push(`${{el.getAttribute('aria-label')}} at ${{JSON.stringify(r)}} in ${{window.innerWidth}}x${{window.innerHeight}}`);
    }}
  }}
  return off.length ? off.join('; ') : true;
}})()"#,
        selector = js(selector)
    )
}

/// The log entry of the page's latest reconnect: its data attributes.
const RECONNECT: &str = r#"(() => {
  const li = document.querySelector('#log li[data-event="reconnect"]');
  return li ? { ...li.dataset, text: li.textContent } : null;
})()"#;

/// A newcomer's flow on a phone: the guide says what to expect under this cluster's
/// design; the first load's 401 is not shown as a failure; the message box counts
/// characters and refuses (rather than cuts) a long message and one of spaces; Kill is
/// on screen; the crash shows in the log as a reconnect with its counts worked out
/// from the seqs received; an added replica shows traffic; a drained replica is shown
/// as drained, not as a crash; a refused message offers Retry and Dismiss. Screenshots
/// after the Kill, phone and desktop, and after the drain.
#[tokio::test]
#[ignore = "needs chromium: set HERD_TEST_CHROMIUM=/usr/bin/chromium"]
async fn on_a_phone_the_page_shows_the_crash_and_the_added_replica() {
    let program = std::env::var("HERD_TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!(
            "set HERD_TEST_CHROMIUM to a Chromium executable, \
             e.g. HERD_TEST_CHROMIUM=/usr/bin/chromium"
        )
    });
    let cluster = Cluster::start(&["--sessions", "token"]);
    let browser = Chromium::launch(&program);
    let mut page = Page::attach(&browser).await;
    set_viewport(&mut page, 390, 844, true).await;

    page.call("Page.navigate", json!({ "url": cluster.url("/") }))
        .await;
    page.wait_for(
        "the page, its cluster panel and its guide",
        "document.readyState === 'complete' && document.getElementById('cluster')?.hidden === false \
         && document.querySelectorAll('#cluster-replicas tr').length === 2 \
         && document.getElementById('guide')?.dataset.sessions === 'token'",
    )
    .await;
    let guide = page
        .eval("document.getElementById('guide-kill').textContent")
        .await;
    assert!(
        guide.as_str().is_some_and(|t| t.contains("stay logged in")),
        "the guide's Kill step under token sessions: {guide}"
    );
    let first = page
        .wait_for(
            "the first load's GET /v1/me in the log",
            "(() => { const li = document.querySelector('#log li[data-path=\"/v1/me\"][data-status=\"401\"]');\
               return li && { cls: li.className, text: li.textContent }; })()",
        )
        .await;
    assert!(
        !first["cls"].as_str().unwrap_or_default().contains("bad")
            && first["text"]
                .as_str()
                .unwrap_or_default()
                .contains("expected"),
        "the first load's 401 is shown as a failure: {first}"
    );
    let favicon = cluster
        .client
        .get(cluster.url("/favicon.ico"))
        .send()
        .await
        .expect("favicon");
    assert_eq!(favicon.status(), 200);

    page.eval(
        "document.getElementById('signup-username').value = 'carol';\
         document.getElementById('signup-password').value = 'correct horse battery';\
         document.getElementById('signup-form').requestSubmit(); true",
    )
    .await;
    page.wait_for(
        "logged in as carol",
        "document.getElementById('auth').hidden \
         && document.querySelector('#me[data-username=\"carol\"]')?.dataset.session",
    )
    .await;
    // A refused room name shows under its own form, and goes on the next attempt.
    page.eval(
        "document.getElementById('room-name').value = ' ';\
         document.getElementById('room-create-form').requestSubmit(); true",
    )
    .await;
    page.wait_for(
        "the create-room error under its form",
        "!document.getElementById('room-create-error').hidden \
         && document.getElementById('room-join-error').hidden \
         && document.getElementById('rooms-error').hidden",
    )
    .await;
    page.eval(
        "document.getElementById('room-name').value = 'phone';\
         document.getElementById('room-create-form').requestSubmit(); true",
    )
    .await;
    page.wait_for(
        "the room picked, the error gone and the socket live",
        "document.getElementById('room-id').textContent !== '-' \
         && document.getElementById('room-create-error').hidden \
         && !document.getElementById('message-body').disabled \
         && document.getElementById('ws-status').dataset.state === 'live'",
    )
    .await;

    // 5,000 characters: counted, refused with the reason, and not cut.
    let long = page
        .eval(
            "(() => { const input = document.getElementById('message-body');\
               input.value = 'x'.repeat(5000);\
               input.dispatchEvent(new Event('input'));\
               document.getElementById('message-form').requestSubmit();\
               return { length: input.value.length,\
                 count: document.getElementById('message-count').textContent,\
                 over: document.getElementById('message-count').classList.contains('over'),\
                 error: document.getElementById('message-error').textContent,\
                 sent: document.querySelectorAll('#messages li').length }; })()",
        )
        .await;
    assert_eq!(long["length"], 5000, "the input cut the message: {long}");
    assert_eq!(long["over"], true, "{long}");
    assert!(
        long["count"]
            .as_str()
            .is_some_and(|c| c.starts_with("5,000")),
        "{long}"
    );
    assert!(
        long["error"].as_str().is_some_and(|e| e.contains("4,000")),
        "{long}"
    );
    assert_eq!(long["sent"], 0, "{long}");
    let spaces = page
        .eval(
            "(() => { const input = document.getElementById('message-body');\
               input.value = '    '; input.dispatchEvent(new Event('input'));\
               document.getElementById('message-form').requestSubmit();\
               return document.getElementById('message-error').textContent; })()",
        )
        .await;
    assert!(
        spaces.as_str().is_some_and(|e| e.contains("spaces")),
        "a message of spaces is refused silently: {spaces}"
    );
    send_from_page(&mut page, "from a phone").await;
    page.wait_for("message #1 acknowledged", &acked(1, "from a phone"))
        .await;
    assert_eq!(
        page.eval("document.getElementById('message-error').hidden")
            .await,
        true
    );

    // Kill and Drain are on screen at 390 px.
    let on_screen = page
        .eval(&all_on_screen("#cluster .kill, #cluster .drain"))
        .await;
    assert_eq!(on_screen, true, "off-screen at 390 px: {on_screen}");

    let holder = page
        .wait_for(
            "the replica holding the socket, marked in the panel",
            "(() => { const s = document.getElementById('ws-status');\
               const row = document.querySelector('#cluster-replicas tr.socket');\
               return s.dataset.state === 'live' && row && row.dataset.id === s.dataset.replica\
                 && s.dataset.replica; })()",
        )
        .await;
    let holder = holder.as_str().expect("replica id").to_owned();
    page.eval(&format!(
        "document.querySelector('#cluster .kill[data-id=' + JSON.stringify({}) + ']').click(); true",
        js(&holder)
    ))
    .await;

    // The crash, told: which socket closed, where it resumed, from which seq, and what
    // the seqs received since say.
    let event = page
        .wait_for(
            "the reconnect event",
            &format!(
                "(() => {{ const e = {RECONNECT}; return e && e.from === {h} && e.to !== {h} && e; }})()",
                h = js(&holder)
            ),
        )
        .await;
    assert_eq!(event["since"], "1", "{event}");
    assert_eq!(event["missed"], "0", "{event}");
    assert_eq!(event["duplicated"], "0", "{event}");
    let text = event["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("socket on {holder} closed (1006)"))
            && text.contains("0 missed, 0 duplicated"),
        "{event}"
    );
    let survivor = event["to"].as_str().expect("to").to_owned();
    page.wait_for(
        "the killed replica shown as killed",
        &format!(
            "document.querySelector('#cluster-replicas tr[data-id=' + JSON.stringify({}) + '] td.state')\
               ?.textContent === 'killed'",
            js(&holder)
        ),
    )
    .await;

    // Another user's message after the resume: counted in the event, still no gap.
    let dave = json!({ "username": "dave", "password": "correct horse battery" });
    let (status, body) = cluster.call("/v1/auth/signup", None, dave.clone()).await;
    assert_eq!(status, 201, "signup: {body}");
    let (status, body) = cluster.call("/v1/auth/login", None, dave).await;
    assert_eq!(status, 200, "login: {body}");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let room = page
        .eval("document.getElementById('room-id').textContent")
        .await;
    let room = room.as_str().expect("room").to_owned();
    let (status, body) = cluster
        .call(&format!("/v1/rooms/{room}/join"), Some(&token), json!({}))
        .await;
    assert_eq!(status, 200, "join: {body}");
    let (status, body) = cluster
        .call(
            &format!("/v1/rooms/{room}/messages"),
            Some(&token),
            json!({ "body": "seen on the phone?", "client_id": "dave-1" }),
        )
        .await;
    assert_eq!(status, 201, "post: {body}");
    let event = page
        .wait_for(
            "the event counting dave's message",
            &format!("(() => {{ const e = {RECONNECT}; return e && e.received === '1' && e; }})()"),
        )
        .await;
    assert_eq!(
        (&event["missed"], &event["duplicated"]),
        (&json!("0"), &json!("0")),
        "{event}"
    );
    assert_eq!(page.eval(SEQS).await, json!([1, 2]), "no gap, no duplicate");

    page.wait_for(
        "the panel marking the socket's new replica",
        &format!(
            "document.querySelector('#cluster-replicas tr.socket')?.dataset.id === {}",
            js(&survivor)
        ),
    )
    .await;
    let phone = screenshot_as_shown(&mut page, "browser-phone-after-kill.png").await;
    eprintln!("screenshot: {}", phone.display());
    set_viewport(&mut page, 1280, 900, false).await;
    let desktop = screenshot_as_shown(&mut page, "browser-desktop-after-kill.png").await;
    eprintln!("screenshot: {}", desktop.display());
    set_viewport(&mut page, 390, 844, true).await;

    // Add: the new replica takes a share of the traffic (the page's own heartbeat
    // included), which the panel shows for it.
    page.eval("document.getElementById('cluster-add').click(); true")
        .await;
    let added = page
        .wait_for(
            "the add event",
            "document.querySelector('#log li[data-event=\"add\"]')?.dataset.replica",
        )
        .await;
    let added = added.as_str().expect("added id").to_owned();
    page.wait_for(
        "traffic on the added replica",
        &format!(
            "Number(document.querySelector('#cluster-replicas tr[data-id=' + JSON.stringify({}) + ']')\
               ?.dataset.traffic) > 0",
            js(&added)
        ),
    )
    .await;
    let table = cluster.replicas().await;
    let served = table["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .find(|r| r["id"] == added.as_str())
        .map(|r| r["recent_requests"].clone());
    assert!(
        served.as_ref().and_then(Value::as_array).is_some_and(|c| c
            .iter()
            .filter_map(Value::as_u64)
            .sum::<u64>()
            > 0),
        "the admin API shows no traffic on {added}: {served:?}"
    );

    // Drain the survivor: shown as drained, not as a crash; the socket moves (1012).
    page.eval(&format!(
        "document.querySelector('#cluster .drain[data-id=' + JSON.stringify({}) + ']').click(); true",
        js(&survivor)
    ))
    .await;
    page.wait_for(
        "the drained replica shown as drained",
        &format!(
            "(() => {{ const row = document.querySelector('#cluster-replicas tr[data-id=' + JSON.stringify({}) + ']');\
               const cell = row && row.querySelector('td.state');\
               return Boolean(cell && row.dataset.ended === 'drained' && cell.textContent === 'drained'\
                 && cell.classList.contains('state-drained')); }})()",
            js(&survivor)
        ),
    )
    .await;
    page.wait_for(
        "the socket resumed on the added replica",
        &format!(
            "(() => {{ const e = {RECONNECT}; return e && e.from === {} && e.to === {} && e.missed === '0'; }})()",
            js(&survivor),
            js(&added)
        ),
    )
    .await;
    let shot = screenshot_as_shown(&mut page, "browser-phone-after-drain.png").await;
    eprintln!("screenshot: {}", shot.display());

    // A message the server refuses (carol left the room meanwhile, from another tab)
    // stays with the reason and a Retry and a Dismiss; Dismiss takes it away.
    let left = page
        .eval(&format!(
            "fetch('/v1/rooms/' + {} + '/leave', {{ method: 'POST', credentials: 'same-origin',               headers: {{ 'x-csrf-token': sessionStorage.getItem('herd.csrf') }} }})               .then((r) => r.status)",
            js(&room)
        ))
        .await;
    assert_eq!(left, 200, "leaving the room");
    send_from_page(&mut page, "after leaving").await;
    page.wait_for(
        "the refused message with Retry and Dismiss",
        "(() => { const li = document.querySelector('#messages li.failed');\
           return Boolean(li && li.querySelector('.ack').textContent.startsWith('not sent')\
             && li.querySelector('button.retry') && li.querySelector('button.dismiss')); })()",
    )
    .await;
    page.eval("document.querySelector('#messages li.failed button.dismiss').click(); true")
        .await;
    page.wait_for(
        "the refused message dismissed",
        "!document.querySelector('#messages li.failed')",
    )
    .await;
    assert!(
        page.problems.is_empty(),
        "the page reported problems: {:#?}\nchromium: {}",
        page.problems,
        tail(&browser.log, 20)
    );
}

/// Under the design herd argues against, the guide says beforehand what a Kill will do,
/// and the page then does it: logged out, with the reason, in the notice and the log.
#[tokio::test]
#[ignore = "needs chromium: set HERD_TEST_CHROMIUM=/usr/bin/chromium"]
async fn under_memory_sessions_the_guide_warns_and_the_kill_logs_out() {
    let program = std::env::var("HERD_TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!(
            "set HERD_TEST_CHROMIUM to a Chromium executable, \
             e.g. HERD_TEST_CHROMIUM=/usr/bin/chromium"
        )
    });
    let cluster = Cluster::start(&["--sessions", "memory", "--sticky"]);
    let browser = Chromium::launch(&program);
    let mut page = Page::attach(&browser).await;
    page.call("Page.navigate", json!({ "url": cluster.url("/") }))
        .await;
    page.wait_for(
        "the guide for memory sessions",
        "document.getElementById('guide')?.dataset.sessions === 'memory' \
         && document.getElementById('guide')?.dataset.policy === 'sticky'",
    )
    .await;
    let kill = page
        .eval("document.getElementById('guide-kill').textContent")
        .await;
    assert!(
        kill.as_str()
            .is_some_and(|t| t.contains("you are logged out")),
        "{kill}"
    );

    page.eval(
        "document.getElementById('signup-username').value = 'erin';\
         document.getElementById('signup-password').value = 'correct horse battery';\
         document.getElementById('signup-form').requestSubmit(); true",
    )
    .await;
    page.wait_for(
        "logged in as erin",
        "document.getElementById('auth').hidden \
         && document.querySelector('#me[data-username=\"erin\"]')?.dataset.session",
    )
    .await;
    // Sticky: the replica holding the session is the one serving the page.
    let holder = page
        .wait_for(
            "the replica serving erin",
            "document.getElementById('me').dataset.replica",
        )
        .await;
    let holder = holder.as_str().expect("replica").to_owned();
    page.wait_for(
        "the Kill button of that replica",
        &format!(
            "Boolean(document.querySelector('#cluster .kill[data-id=' + JSON.stringify({}) + ']'))",
            js(&holder)
        ),
    )
    .await;
    page.eval(&format!(
        "document.querySelector('#cluster .kill[data-id=' + JSON.stringify({}) + ']').click(); true",
        js(&holder)
    ))
    .await;
    let out = page
        .wait_for(
            "logged out, saying why",
            "(() => { const n = document.getElementById('notice');\
               const e = document.querySelector('#log li[data-event=\"logged-out\"]');\
               return !document.getElementById('auth').hidden && !n.hidden && e\
                 && { notice: n.textContent, log: e.textContent }; })()",
        )
        .await;
    assert!(
        out["notice"]
            .as_str()
            .is_some_and(|t| t.contains("replica holding your session died")),
        "{out}"
    );
    assert!(
        page.problems.is_empty(),
        "the page reported problems: {:#?}",
        page.problems
    );
}
