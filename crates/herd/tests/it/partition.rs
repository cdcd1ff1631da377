//! Partitions between real network hosts: replicas, the balancer, PostgreSQL, Redis and
//! the client each in a network namespace of their own, joined by veth links, and one
//! replica's links cut by taking the far end down (a pulled cable: packets vanish,
//! connections hang rather than fail fast).
//!
//! ```text
//!   cli ── lb ──┬── ra ──┬── db  (socat -> this machine's PostgreSQL)
//!               │        ├── rd  (a redis-server of its own)
//!               └── rb ──┤
//!                        └── (rb has its own links to db and rd)
//! ```
//!
//! Every host is a namespace (`ip netns`), every line a veth pair with a /24 of its own;
//! PostgreSQL and Redis have one service address each (on their host's loopback), routed
//! over each replica's own link, so both replicas use the same URLs. The balancer is
//! `herd balance`, which checks each replica's `/readyz`. The test's own client and
//! probes run on threads moved into the `cli` and `lb` namespaces.
//!
//! Needs root, iproute2, socat and redis-server: `HERD_TEST_NETNS=1`, plus
//! `HERD_TEST_POSTGRES` (CI runs as root and sets both; `.ci/run`).

use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, herd};

const IGNORED: &str = "needs root, iproute2, socat and redis-server: set HERD_TEST_NETNS=1";

/// The replicas' revocation-log read interval (`--upkeep-interval`, herd's default).
const UPKEEP: Duration = Duration::from_secs(5);

/// The bounds asserted below. They are generous multiples of what the mechanisms promise
/// (a 1 s store timeout in `/readyz`, a 500 ms health interval, a 5 s upkeep), so that
/// a busy machine does not fail them; the measured times are printed and recorded in
/// docs/deploy.md.
const UNREADY_BOUND: Duration = Duration::from_secs(5);
const OUT_OF_ROTATION_BOUND: Duration = Duration::from_secs(8);
const REJOIN_BOUND: Duration = Duration::from_secs(90);
const REVOCATION_BOUND: Duration = Duration::from_secs(15);

/// Concurrent clients in the load loop, each with at most one request in flight.
const CLIENTS: usize = 4;
/// Longer than the time a cut replica may take to leave rotation, so that a client loses
/// at most one request to the cut.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the cut replica stays cut off.
const OUTAGE: Duration = Duration::from_secs(10);

const PG_ADDR: &str = "10.213.100.1";
const REDIS_ADDR: &str = "10.213.101.1";

fn netns_enabled() {
    match std::env::var("HERD_TEST_NETNS") {
        Ok(v) if v == "1" => {}
        _ => panic!("HERD_TEST_NETNS is not 1: {IGNORED}"),
    }
    for (tool, flag) in [("ip", "-V"), ("socat", "-V"), ("redis-server", "--version")] {
        let found = Command::new(tool)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} is not installed: {IGNORED}");
    }
}

/// Runs `program args`, panicking with its stderr when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} ({IGNORED}): {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One link between two hosts: `a` and `b` are namespaces, each end named after its peer.
struct Link {
    a: String,
    b: String,
    /// The b-side device, in namespace `b` (named `to-` and `a`'s role).
    b_dev: String,
}

/// The whole lab: namespaces, links, processes, a database. Torn down on drop, so a
/// failing assertion leaves nothing behind.
struct Net {
    tag: String,
    namespaces: Vec<String>,
    links: Vec<Link>,
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    pg_admin: String,
    pg_name: String,
    pg_url_root: String,
}

impl Net {
    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.tag)
    }

    /// Creates the hosts and links; starts Redis and the PostgreSQL forwarder.
    fn build() -> Net {
        netns_enabled();
        // A tag unique to this run and test, short enough for namespace names.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tag = format!(
            "hp{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sweep_stale_namespaces();
        let pg_admin = herd_store::testing::postgres_admin_url();
        let pg_name = format!("herd_{tag}");
        let pg_url_root = runtime()
            .block_on(herd_store::testing::create_postgres_database(
                &pg_admin, &pg_name,
            ))
            .unwrap_or_else(|e| panic!("creating a database: {e}"));
        let mut net = Net {
            tag,
            namespaces: Vec::new(),
            links: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            pg_admin,
            pg_name,
            pg_url_root,
        };
        for role in ["cli", "lb", "ra", "rb", "db", "rd"] {
            let ns = net.ns(role);
            run("ip", &["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        // (a, b, subnet): a gets .2, b gets .1.
        let links = [
            ("cli", "lb", 1),
            ("ra", "lb", 2),
            ("rb", "lb", 3),
            ("ra", "db", 4),
            ("rb", "db", 5),
            ("ra", "rd", 6),
            ("rb", "rd", 7),
        ];
        for (a, b, subnet) in links {
            let (ns_a, ns_b) = (net.ns(a), net.ns(b));
            let (a_dev, b_dev) = (format!("to-{b}"), format!("to-{a}"));
            run(
                "ip",
                &[
                    "link", "add", &a_dev, "netns", &ns_a, "type", "veth", "peer", "name", &b_dev,
                    "netns", &ns_b,
                ],
            );
            for (ns, dev, host) in [(&ns_a, &a_dev, 2), (&ns_b, &b_dev, 1)] {
                let addr = format!("10.213.{subnet}.{host}/24");
                run("ip", &["-n", ns, "addr", "add", &addr, "dev", dev]);
                run("ip", &["-n", ns, "link", "set", dev, "up"]);
            }
            net.links.push(Link {
                a: a.to_owned(),
                b: b.to_owned(),
                b_dev,
            });
        }
        // One service address for PostgreSQL and one for Redis, reached by each replica
        // over its own link to that host.
        run(
            "ip",
            &[
                "-n",
                &net.ns("db"),
                "addr",
                "add",
                &format!("{PG_ADDR}/32"),
                "dev",
                "lo",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &net.ns("rd"),
                "addr",
                "add",
                &format!("{REDIS_ADDR}/32"),
                "dev",
                "lo",
            ],
        );
        for (replica, db_subnet, rd_subnet) in [("ra", 4, 6), ("rb", 5, 7)] {
            let ns = net.ns(replica);
            let via_db = format!("10.213.{db_subnet}.1");
            let via_rd = format!("10.213.{rd_subnet}.1");
            run("ip", &["-n", &ns, "route", "add", PG_ADDR, "via", &via_db]);
            run(
                "ip",
                &["-n", &ns, "route", "add", REDIS_ADDR, "via", &via_rd],
            );
        }
        net.start_services();
        net
    }

    /// Redis in `rd`; in `db`, socat forwarding PostgreSQL's port to this machine's
    /// server, through a Unix socket (a path is reachable from every namespace, a
    /// loopback port is not) that a second socat, here, connects to it.
    fn start_services(&mut self) {
        let socket = self.dir.path().join("pg.sock");
        let pg_target = pg_host_port(&self.pg_admin);
        let root_side = Command::new("socat")
            .arg(format!(
                "UNIX-LISTEN:{},fork,unlink-early",
                socket.display()
            ))
            .arg(format!("TCP:{pg_target}"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting socat ({IGNORED}): {e}"));
        self.children.push(("socat root".into(), root_side));
        wait_for(Duration::from_secs(10), "the forwarder's socket", || {
            socket.exists().then_some(())
        });
        let db_side = self.spawn_in(
            "db",
            "socat",
            &[
                &format!("TCP-LISTEN:5432,bind={PG_ADDR},fork,reuseaddr"),
                &format!("UNIX-CONNECT:{}", socket.display()),
            ],
        );
        self.children.push(("socat db".into(), db_side));
        // Clients come from other hosts (namespaces), which protected mode would refuse.
        let mut args = herd_bus::testing::server_args(REDIS_ADDR, 6379);
        let dir = self.dir.path().display().to_string();
        args.extend(["--protected-mode", "no", "--dir", &dir].map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let redis = self.spawn_in("rd", "redis-server", &args);
        self.children.push(("redis".into(), redis));
    }

    fn spawn_in(&self, role: &str, program: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {role}: {e}"))
    }

    /// The database URL as the replicas reach it, across their links.
    fn pg_url(&self) -> String {
        format!("postgres://postgres@{PG_ADDR}:5432/{}", self.pg_name)
    }

    /// Migrates (from this host, as the migrate Job would), then starts replicas `ra`
    /// and `rb` with `--migrate=false`, and `herd balance` in `lb` in front of them.
    fn start_herd(&mut self) {
        let out = herd()
            .args(["migrate", "--database", &self.pg_url_root])
            .output()
            .expect("run herd migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (role, addr) in [("ra", "10.213.2.2:8080"), ("rb", "10.213.3.2:8080")] {
            let mut child = self.herd_in(
                role,
                &[
                    "--log-format",
                    "json",
                    "serve",
                    "--listen",
                    addr,
                    "--replica-id",
                    role,
                    "--database",
                    &self.pg_url(),
                    "--redis-url",
                    &format!("redis://{REDIS_ADDR}:6379"),
                    "--bus",
                    "redis",
                    // One issuer for both: without it each issues as its own address.
                    "--issuer",
                    "http://herd.test",
                    "--migrate=false",
                    "--access-ttl",
                    "1h",
                    "--argon2-memory-kib",
                    "64",
                    "--argon2-iterations",
                    "1",
                ],
            );
            let stderr = child.stderr.take().expect("stderr");
            self.children.push((role.to_owned(), child));
            let mut lines = BufReader::new(stderr).lines();
            common::listen_address(&mut lines, "herd is serving");
            forward_log(role, lines);
        }
        let mut balancer = self.herd_in(
            "lb",
            &[
                "--log-format",
                "json",
                "balance",
                "--listen",
                "10.213.1.1:8080",
                "--upstream",
                "10.213.2.2:8080,10.213.3.2:8080",
                "--admin-public",
            ],
        );
        let stderr = balancer.stderr.take().expect("stderr");
        self.children.push(("lb".into(), balancer));
        let mut lines = BufReader::new(stderr).lines();
        common::listen_address(&mut lines, "balancer is serving");
        forward_log("lb", lines);
    }

    fn herd_in(&self, role: &str, args: &[&str]) -> Child {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns(role), env!("CARGO_BIN_EXE_herd")])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("HERD_") {
                command.env_remove(key);
            }
        }
        command
            .spawn()
            .unwrap_or_else(|e| panic!("starting herd in {role}: {e}"))
    }

    fn pid_of(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .expect("a child of that name")
    }

    /// Takes the far end of `replica`'s link to `host` down (or up again): the replica's
    /// own interface stays configured, its packets to `host` go nowhere.
    fn set_link(&self, replica: &str, host: &str, up: bool) {
        let link = self
            .links
            .iter()
            .find(|l| l.a == replica && l.b == host)
            .expect("such a link");
        let state = if up { "up" } else { "down" };
        run(
            "ip",
            &["-n", &self.ns(host), "link", "set", &link.b_dev, state],
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            if let Err(e) = child.kill() {
                eprintln!("stopping {name}: {e}");
            }
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let dropped = runtime().block_on(herd_store::testing::drop_postgres_database(
            &self.pg_admin,
            &self.pg_name,
        ));
        if let Err(e) = dropped {
            eprintln!("dropping test database {}: {e}", self.pg_name);
        }
    }
}

/// Deletes the namespaces an earlier run left behind when it was killed before its
/// `Drop` ran: they are named `hp<pid>x...`, and that pid no longer runs.
fn sweep_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("hp")
            .and_then(|rest| rest.split_once('x'))
            .map(|(pid, _)| pid)
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn pg_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

fn forward_log(role: &str, lines: std::io::Lines<impl std::io::BufRead + Send + 'static>) {
    let role = role.to_owned();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("[{role}] {line}");
        }
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `task` to completion on a thread of its own inside namespace `ns`: the sockets it
/// opens belong to that host.
fn in_netns<F, Fut, T>(ns: &str, task: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
        runtime().block_on(task())
    })
}

fn block_in<F, Fut, T>(ns: &str, task: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    in_netns(ns, task).join().expect("the task panicked")
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .expect("an HTTP client")
}

/// An answer: status (0 for no answer), the replica that gave it, and the replicas it
/// names as not having confirmed a revocation (`herd-unconfirmed`).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    replica: String,
    unconfirmed: Option<String>,
    body: Value,
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<String>,
    body: Option<Value>,
) -> Answer {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(response) => Answer {
            status: response.status().as_u16(),
            replica: response
                .headers()
                .get("x-herd-replica")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            unconfirmed: response
                .headers()
                .get("herd-unconfirmed")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: response.json().await.unwrap_or(Value::Null),
        },
        Err(e) => Answer {
            status: 0,
            replica: String::new(),
            unconfirmed: None,
            body: json!({ "error": e.to_string() }),
        },
    }
}

/// One request from namespace `ns`, with a short timeout.
fn request(
    ns: &str,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let (url, token) = (url.to_owned(), token.map(str::to_owned));
    block_in(ns, move || async move {
        send(&client(Duration::from_secs(3)), method, url, token, body).await
    })
}

/// Signs up `user` and logs in, through `base` from `ns`; returns the access token.
fn login(ns: &str, base: &str, user: &str) -> String {
    let creds = json!({ "username": user, "password": "correct horse battery" });
    let signup = request(
        ns,
        reqwest::Method::POST,
        &format!("{base}/v1/auth/signup"),
        None,
        Some(creds.clone()),
    );
    assert_eq!(signup.status, 201, "{signup:?}");
    let login = request(
        ns,
        reqwest::Method::POST,
        &format!("{base}/v1/auth/login"),
        None,
        Some(creds),
    );
    assert_eq!(login.status, 200, "{login:?}");
    login.body["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// Polls `check` every 50 ms until it gives a value or `limit` passes.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request of the load loop.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    finished: Instant,
    status: u16,
    replica: String,
    path: &'static str,
}

/// `CLIENTS` clients in namespace `cli`, each sending one request at a time through the
/// balancer until stopped, alternating `GET /v1/me` (no store query under tokens) and
/// `GET /v1/rooms` (a store query), so a replica cut off from the store has requests
/// that need it.
struct Load {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(ns: &str, base: &str, token: &str) -> Load {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (base, token) = (base.to_owned(), token.to_owned());
        let (out, halt) = (outcomes.clone(), stop.clone());
        let thread = in_netns(ns, move || async move {
            let http = client(CLIENT_TIMEOUT);
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..CLIENTS {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                let (out, halt) = (out.clone(), halt.clone());
                tasks.spawn(async move {
                    let mut i = n;
                    while !halt.load(Ordering::Relaxed) {
                        let path = if i % 2 == 0 { "/v1/me" } else { "/v1/rooms" };
                        i += 1;
                        let started = Instant::now();
                        let answer = send(
                            &http,
                            reqwest::Method::GET,
                            format!("{base}{path}"),
                            Some(token.clone()),
                            None,
                        )
                        .await;
                        out.lock().expect("outcomes").push(Outcome {
                            started,
                            finished: Instant::now(),
                            status: answer.status,
                            replica: answer.replica,
                            path,
                        });
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        });
        Load {
            outcomes,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().expect("outcomes").clone()
    }

    fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the load loop panicked");
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn replica_state(net: &Net, id: &str) -> String {
    let answer = request(
        &net.ns("cli"),
        reqwest::Method::GET,
        "http://10.213.1.1:8080/_cluster/replicas",
        None,
        None,
    );
    answer.body["replicas"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["id"] == id))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("unknown")
        .to_owned()
}

#[test]
#[ignore = "needs root, iproute2, socat and redis-server: set HERD_TEST_NETNS=1"]
fn a_replica_cut_off_from_postgres_and_redis_leaves_rotation_and_rejoins_by_itself() {
    let mut net = Net::build();
    net.start_herd();
    let (cli, lb) = (net.ns("cli"), net.ns("lb"));
    let base = "http://10.213.1.1:8080";
    let replica_a = "10.213.2.2:8080";

    wait_for(Duration::from_secs(20), "both replicas in rotation", || {
        (replica_state(&net, replica_a) == "up" && replica_state(&net, "10.213.3.2:8080") == "up")
            .then_some(())
    });
    let token = login(&cli, base, "partition_user");
    let load = Load::start(&cli, base, &token);
    wait_for(Duration::from_secs(20), "load on both replicas", || {
        let seen = load.snapshot();
        (seen.iter().any(|o| o.replica == "ra" && o.status == 200)
            && seen.iter().any(|o| o.replica == "rb" && o.status == 200))
        .then_some(())
    });
    let pid_a = net.pid_of("ra");

    // The cut: ra loses PostgreSQL and Redis; the balancer and rb are untouched.
    let cut = Instant::now();
    net.set_link("ra", "db", false);
    net.set_link("ra", "rd", false);

    let unready = wait_for(UNREADY_BOUND * 2, "ra's /readyz to fail", || {
        let answer = request(
            &lb,
            reqwest::Method::GET,
            &format!("http://{replica_a}/readyz"),
            None,
            None,
        );
        (answer.status != 200).then(|| (Instant::now(), answer))
    });
    let (unready_at, unready_answer) = unready;
    assert_eq!(unready_answer.status, 503, "{unready_answer:?}");
    assert_eq!(
        unready_answer.body["type"], "urn:herd:problem:unavailable",
        "{unready_answer:?}"
    );
    let out_at = wait_for(
        OUT_OF_ROTATION_BOUND * 2,
        "the balancer to take ra out",
        || (replica_state(&net, replica_a) == "down").then(Instant::now),
    );
    // Traffic carries on, on rb alone, while the outage lasts: longer than the store's
    // pool waits for a connection (5 s), so what ra's pool does meanwhile counts, and at
    // least 100 answers after ra left.
    wait_for(OUTAGE * 4, "100 answers after ra left", || {
        let after = load
            .snapshot()
            .into_iter()
            .filter(|o| o.started > out_at)
            .count();
        (after >= 100 && cut.elapsed() >= OUTAGE).then_some(())
    });

    let restore = Instant::now();
    net.set_link("ra", "db", true);
    net.set_link("ra", "rd", true);
    let rejoin_at = wait_for(REJOIN_BOUND, "ra to rejoin", || {
        (replica_state(&net, replica_a) == "up").then(Instant::now)
    });
    wait_for(
        Duration::from_secs(30),
        "ra to serve the load again",
        || {
            load.snapshot()
                .iter()
                .any(|o| o.started > rejoin_at && o.replica == "ra" && o.status == 200)
                .then_some(())
        },
    );
    let outcomes = load.finish();
    assert_eq!(net.pid_of("ra"), pid_a, "ra rejoined as the same process");

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    // Requests that were on ra when it lost the store hang until the link returns (or
    // their client gives up): the in-flight ones.
    let slow: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.finished - o.started > Duration::from_secs(1))
        .map(|o| {
            format!(
                "{} on {} took {:?}",
                o.path,
                o.replica,
                o.finished - o.started
            )
        })
        .collect();
    let after_out: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started > out_at && o.started < restore)
        .collect();
    let report = format!(
        "partition: /readyz failed {:?} after the cut (bound {UNREADY_BOUND:?}); out of \
         rotation after {:?} (bound {OUT_OF_ROTATION_BOUND:?}); link down for {:?}; back in \
         rotation {:?} after the link returned (bound {REJOIN_BOUND:?}); {} requests, {} \
         failed ({CLIENTS} clients): {:?}; slow but answered: {slow:?}",
        unready_at - cut,
        out_at - cut,
        restore - cut,
        rejoin_at - restore,
        outcomes.len(),
        failed.len(),
        failed
            .iter()
            .map(|o| format!(
                "{} {} after the cut, {} for {:?}",
                o.path,
                if o.started >= cut {
                    format!("{:?}", o.started - cut)
                } else {
                    format!("-{:?}", cut - o.started)
                },
                o.status,
                o.finished - o.started
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("{report}");
    assert!(unready_at - cut <= UNREADY_BOUND, "{report}");
    assert!(out_at - cut <= OUT_OF_ROTATION_BOUND, "{report}");
    assert!(rejoin_at - restore <= REJOIN_BOUND, "{report}");
    // Once out of rotation, ra gets nothing: every request sent after that went to rb
    // and succeeded.
    assert!(
        after_out
            .iter()
            .all(|o| o.replica == "rb" && o.status == 200),
        "{report}"
    );
    // The only failures are requests in flight while ra was still in rotation: at most
    // one a client (a client waits CLIENT_TIMEOUT, longer than ra took to leave).
    assert!(failed.iter().all(|o| o.started < out_at), "{report}");
    assert!(failed.len() <= CLIENTS, "{report}");
}

#[test]
#[ignore = "needs root, iproute2, socat and redis-server: set HERD_TEST_NETNS=1"]
fn a_replica_cut_off_from_the_bus_still_learns_of_logouts_from_the_store() {
    let mut net = Net::build();
    net.start_herd();
    let lb = net.ns("lb");
    let (a, b) = ("http://10.213.2.2:8080", "http://10.213.3.2:8080");
    let me_on_b = |token: &str| {
        request(
            &lb,
            reqwest::Method::GET,
            &format!("{b}/v1/me"),
            Some(token),
            None,
        )
    };
    let logout_on_a = |token: &str| {
        let answer = request(
            &lb,
            reqwest::Method::POST,
            &format!("{a}/v1/auth/logout"),
            Some(token),
            None,
        );
        assert_eq!(answer.status, 204, "{answer:?}");
        answer
    };
    // Both replicas know each other as live before the cut (they announce themselves
    // every second), so a logout on A waits for B's confirmation.
    wait_for(REVOCATION_BOUND, "ra to count rb as live", || {
        let text = block_in(&lb, move || async move {
            client(Duration::from_secs(3))
                .get(format!("{a}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()
        })?;
        text.lines().any(|l| l == "herd_live_peers 1").then_some(())
    });
    let warm = login(&lb, a, "bus_warm_user");
    let answer = logout_on_a(&warm);
    assert_eq!(
        answer.unconfirmed, None,
        "rb confirms while it hears the bus: {answer:?}"
    );
    assert_eq!(
        me_on_b(&warm).status,
        401,
        "refused on rb once the logout answered"
    );

    let during = login(&lb, a, "bus_cut_user");
    assert_eq!(me_on_b(&during).status, 200);

    // rb loses Redis only: the bus. PostgreSQL is still there.
    net.set_link("rb", "rd", false);
    let logged_out = Instant::now();
    // rb was live a moment ago and now hears nothing: the logout answers after the
    // confirmation deadline, naming it; rb converges from the store.
    let answer = logout_on_a(&during);
    assert_eq!(
        answer.unconfirmed.as_deref(),
        Some("rb"),
        "the logout names the replica cut off from the bus: {answer:?}"
    );
    let refused_during = wait_for(REVOCATION_BOUND * 2, "rb to refuse the token", || {
        let answer = me_on_b(&during);
        assert_ne!(answer.status, 0, "rb stopped answering: {answer:?}");
        (answer.status == 401).then(|| Instant::now() - logged_out)
    });
    // rb still serves meanwhile: the bus is not a readiness dependency.
    let ready = request(
        &lb,
        reqwest::Method::GET,
        &format!("{b}/readyz"),
        None,
        None,
    );
    assert_eq!(ready.status, 200, "{ready:?}");

    net.set_link("rb", "rd", true);
    let restored = Instant::now();
    assert_eq!(
        me_on_b(&during).status,
        401,
        "still refused after the link returned"
    );
    let after = login(&lb, a, "bus_back_user");
    assert_eq!(me_on_b(&after).status, 200);
    let logged_out = Instant::now();
    logout_on_a(&after);
    let refused_after = wait_for(REVOCATION_BOUND * 2, "rb to refuse the new token", || {
        (me_on_b(&after).status == 401).then(|| Instant::now() - logged_out)
    });
    let report = format!(
        "bus cut: rb refused a logout made during the cut after {refused_during:?} (store \
         tail, upkeep {UPKEEP:?}; bound {REVOCATION_BOUND:?}); after the link returned \
         ({:?} ago), a new logout after {refused_after:?}",
        Instant::now() - restored
    );
    eprintln!("{report}");
    assert!(refused_during <= REVOCATION_BOUND, "{report}");
    assert!(refused_after <= REVOCATION_BOUND, "{report}");
}
