//! chatbench: the load generator behind `bench/chat.sh`.
//!
//! It talks to running `herd serve` replicas over HTTP (sign up, log in, create a room)
//! and WebSocket (`/v1/ws`, `docs/protocol.md`), measures one thing, and prints one JSON
//! line of results on stdout (progress goes to stderr). Every clock reading comes from
//! this one process: a sent message carries in its body the nanoseconds since the run's
//! start `Instant`, and its receiver subtracts that from its own reading of the same
//! clock, so there is no clock skew between sender and receivers to correct for.
//!
//! ```text
//! chatbench latency    --send-url URL --recv-url URL [--subscribers 10] [--rate 1000]
//!                      [--warmup 2] [--duration 10] [--senders 1] [--body-bytes 64]
//!                      [--server-pids PID,PID] [--also-pids PID,...] [--clk-tck 100]
//!                      [--trace-file PATH]
//! chatbench throughput --url URL --server-pid PID [--subscribers 100] [--window 128]
//!                      [--warmup 2] [--duration 10] [--body-bytes 64] [--also-pids PID,...]
//!                      [--clk-tck 100]
//! chatbench idle       --url URL --server-pid PID [--connections 10000] [--batch 100]
//!                      [--warmup-connections 100] [--settle 3] [--subscribe true]
//! ```
//!
//! (`chatbench help MODE` says the same, from the clap definitions below.) Frames are
//! read and written with the server's own types (`herd_server::chat::ServerFrame` and
//! `ClientFrame`), so a change to the protocol breaks this build rather than silently
//! making it count nothing; and a mode that measured nothing (no message received, none
//! delivered, no connection left open) fails instead of printing a result.
//!
//! - `latency`: subscribers on `--recv-url`, a sender on `--send-url` sending `send`
//!   frames at `--rate` a second (paced on a fixed schedule, not waiting for acks), and
//!   the time from just before each `send` frame is written to the moment each
//!   subscriber reads the `message` frame. The first `--warmup` seconds of messages are
//!   delivered but not counted. `--trace-file` writes one CSV line a message (index,
//!   send instant, ack latency, first subscriber's latency), to see when the slow ones
//!   happen.
//! - `throughput`: subscribers on one room, one sender as fast as the subscribers keep up
//!   (at most `--window` messages ahead of the slowest, so no subscriber's server-side
//!   queue can fill), and the frames delivered to all subscribers a second, with the CPU
//!   time the server process spent meanwhile (`/proc/PID/stat` utime + stime).
//! - `idle`: the server's resident memory (`/proc/PID/status` VmRSS) before and after
//!   opening `--connections` authenticated WebSocket connections, each subscribed to one
//!   room (unless `--subscribe false`: then only authenticated) and then left idle, with
//!   how long each handshake took. At most `--batch` handshakes are in flight, so that
//!   the handshake times measure the server rather than a queue of this generator's
//!   making (herd listens with a backlog of 4096, so the kernel drops no SYN either).
//!
//! Durations are in seconds. `--clk-tck` is `getconf CLK_TCK` (the unit of utime/stime).
//! The CPU report also names what the machine spent on anything but the servers, the
//! `--also-pids` (Redis, say) and chatbench itself: `other_cores`, someone else's work.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{ArgAction, Args, Parser, Subcommand};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use herd_server::chat::{ClientFrame, ServerFrame};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any one handshake or setup step may take before the run is abandoned.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = match Cli::parse().mode {
        Mode::Latency(args) => latency(&args).await?,
        Mode::Throughput(args) => throughput(&args).await?,
        Mode::Idle(args) => idle(&args).await?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{result}")?;
    Ok(())
}

// --- command line -----------------------------------------------------------------------

/// The load generator behind bench/chat.sh: measures one thing against running `herd
/// serve` replicas and prints one JSON line of results. Durations are in seconds.
#[derive(Debug, Parser)]
#[command(name = "chatbench")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Fan-out latency: a sender on one replica, subscribers on another.
    Latency(LatencyArgs),
    /// Frames delivered a second to subscribers of one room, per core of the server.
    Throughput(ThroughputArgs),
    /// The server's resident memory per idle connection.
    Idle(IdleArgs),
}

#[derive(Debug, Args)]
struct LatencyArgs {
    /// The replica the sender sends to.
    #[arg(long)]
    send_url: String,
    /// The replica the subscribers subscribe on.
    #[arg(long)]
    recv_url: String,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    subscribers: u64,
    /// Messages a second, paced on a fixed schedule.
    #[arg(long, default_value_t = 1000.0, value_parser = positive)]
    rate: f64,
    /// Seconds of messages sent but not counted.
    #[arg(long, default_value = "2", value_parser = seconds)]
    warmup: Duration,
    /// Seconds of messages counted.
    #[arg(long, default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Sender connections, sharing the schedule.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    senders: u64,
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    /// The servers whose CPU is reported.
    #[arg(long, default_value = "", value_parser = pids)]
    server_pids: Pids,
    /// Other processes whose CPU is counted apart from the noise (Redis, say), each with
    /// its children (PostgreSQL's backends are the postmaster's).
    #[arg(long, default_value = "", value_parser = pids)]
    also_pids: Pids,
    /// `getconf CLK_TCK`: the unit of /proc/PID/stat's utime and stime.
    #[arg(long, default_value_t = 100.0, value_parser = positive)]
    clk_tck: f64,
    /// Writes one CSV line a message: index, send instant, ack and first subscriber's
    /// latency.
    #[arg(long)]
    trace_file: Option<String>,
}

#[derive(Debug, Args)]
struct ThroughputArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    subscribers: u64,
    /// How many messages the sender may be ahead of the slowest subscriber.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    #[arg(long, default_value = "2", value_parser = seconds)]
    warmup: Duration,
    #[arg(long, default_value = "10", value_parser = seconds)]
    duration: Duration,
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    #[arg(long, default_value = "", value_parser = pids)]
    also_pids: Pids,
    #[arg(long, default_value_t = 100.0, value_parser = positive)]
    clk_tck: f64,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Handshakes in flight at most.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Connections opened and closed before the baseline is read.
    #[arg(long, default_value_t = 100)]
    warmup_connections: usize,
    /// Seconds between the last connection and the second reading.
    #[arg(long, default_value = "3", value_parser = seconds)]
    settle: Duration,
    /// Whether each connection subscribes to a room, or is only authenticated.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    subscribe: bool,
}

/// A comma-separated list of pids; empty for none.
#[derive(Debug, Clone, Default)]
struct Pids(Vec<u32>);

fn pids(text: &str) -> Result<Pids, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|_| format!("{p:?} is not a pid")))
        .collect::<Result<_, _>>()
        .map(Pids)
}

fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a duration in seconds"))
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

// --- /proc ------------------------------------------------------------------------------

/// utime + stime of a process, all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (busy, all) clock ticks of every core together, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    let all = busy + v.get(3)? + v.get(4)?;
    Some((busy, all))
}

/// TCP memory the kernel holds for sockets, in pages (`/proc/net/sockstat`, `TCP: ... mem`).
fn tcp_mem_pages() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// CPU spent by some processes and by the machine over a measured window.
struct CpuWindow {
    /// The servers' pids, then the `--also-pids` (Redis, say).
    pids: Vec<u32>,
    servers: usize,
    ticks: Vec<Option<u64>>,
    own: Option<u64>,
    machine: Option<(u64, u64)>,
    at: Instant,
}

impl CpuWindow {
    fn start(servers: &[u32], also: &[u32]) -> CpuWindow {
        let pids: Vec<u32> = servers.iter().chain(also).copied().collect();
        CpuWindow {
            ticks: pids
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    if i < servers.len() {
                        cpu_ticks(*p)
                    } else {
                        tree_ticks(*p)
                    }
                })
                .collect(),
            pids,
            servers: servers.len(),
            own: cpu_ticks(std::process::id()),
            machine: machine_ticks(),
            at: Instant::now(),
        }
    }

    /// Cores used on average since `start` by each server, by the other pids together, by
    /// this generator, and by everything else on the machine (someone else's work: noise),
    /// and the share of the machine that was busy, as JSON.
    fn stop(&self, clk_tck: f64) -> (Vec<Option<f64>>, Value) {
        let wall = self.at.elapsed().as_secs_f64();
        let cores = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 / clk_tck / wall),
            _ => None,
        };
        let mut servers: Vec<Option<f64>> = self
            .pids
            .iter()
            .zip(&self.ticks)
            .enumerate()
            .map(|(i, (pid, before))| {
                let now = if i < self.servers {
                    cpu_ticks(*pid)
                } else {
                    tree_ticks(*pid)
                };
                cores(*before, now)
            })
            .collect();
        let also_each = servers.split_off(self.servers);
        let also: f64 = also_each.iter().flatten().sum();
        let own = cores(self.own, cpu_ticks(std::process::id()));
        let (busy, busy_cores) = match (self.machine, machine_ticks()) {
            (Some((b0, a0)), Some((b1, a1))) if a1 > a0 => (
                Some((b1 - b0) as f64 / (a1 - a0) as f64),
                Some((b1 - b0) as f64 / clk_tck / wall),
            ),
            _ => (None, None),
        };
        let ours = servers.iter().flatten().sum::<f64>() + also + own.unwrap_or(0.0);
        let others = busy_cores.map(|b| (b - ours).max(0.0));
        let json = json!({
            "wall_s": round(wall, 3),
            "server_cores": servers.iter().map(|c| c.map(|c| round(c, 3))).collect::<Vec<_>>(),
            "also_cores": round(also, 3),
            // Each of the --also-pids, with its children, in the order given.
            "also_each_cores": also_each.iter().map(|c| c.map(|c| round(c, 3))).collect::<Vec<_>>(),
            "generator_cores": own.map(|c| round(c, 3)),
            "other_cores": others.map(|c| round(c, 3)),
            "machine_busy": busy.map(|b| round(b, 3)),
        });
        (servers, json)
    }
}

/// utime + stime of a process and its children, in clock ticks: PostgreSQL's work is in
/// its backends, the postmaster's children.
fn tree_ticks(pid: u32) -> Option<u64> {
    let own = cpu_ticks(pid)?;
    let mut children = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The fields after the command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            children += cpu_ticks(child).unwrap_or(0);
        }
    }
    Some(own + children)
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

// --- HTTP and WebSocket plumbing --------------------------------------------------------

/// A fresh user, logged in, and a room it created (and so is a member of).
struct Session {
    token: String,
    room: String,
}

async fn session(base: &str) -> anyhow::Result<Session> {
    let http = reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .build()
        .context("http client")?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let username = format!("cb{}-{nanos}", std::process::id());
    let credentials = json!({ "username": username, "password": "chatbench-password" });
    let signup = http
        .post(format!("{base}/v1/auth/signup"))
        .json(&credentials)
        .send()
        .await
        .context("signup")?;
    if signup.status().as_u16() != 201 {
        bail!("signup answered {}", signup.status());
    }
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .context("login")?
        .error_for_status()
        .context("login")?
        .json()
        .await
        .context("login body")?;
    let token = login["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("login returned no access_token: {login}"))?
        .to_owned();
    let room: Value = http
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(&token)
        .json(&json!({ "name": "chatbench" }))
        .send()
        .await
        .context("create room")?
        .error_for_status()
        .context("create room")?
        .json()
        .await
        .context("room body")?;
    let room = room["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no room id in {room}"))?
        .to_owned();
    Ok(Session { token, room })
}

/// An authenticated WebSocket, once the server said `ready`.
async fn connect(base: &str, token: &str, read_buffer: usize) -> anyhow::Result<Ws> {
    let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().context("ws url")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().context("header")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    // No Nagle: a send frame goes out at once, not after the previous one is acked.
    let (mut ws, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(request, Some(config), true),
    )
    .await
    .context("upgrade timed out")?
    .context("upgrade")?;
    expect(&mut ws, "ready", |f| matches!(f, ServerFrame::Ready { .. })).await?;
    Ok(ws)
}

/// Reads frames until one `want` takes, named `what`; fails on an `error` frame, a close
/// or a timeout.
async fn expect(
    ws: &mut Ws,
    what: &str,
    want: impl Fn(&ServerFrame) -> bool,
) -> anyhow::Result<ServerFrame> {
    loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .with_context(|| format!("no {what} frame within {STEP_TIMEOUT:?}"))?;
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                let frame = server_frame(&text)
                    .with_context(|| format!("waiting for {what}: a frame herd does not send"))?;
                if want(&frame) {
                    return Ok(frame);
                }
                if let ServerFrame::Error { code, message, .. } = frame {
                    bail!("waiting for {what}: {code}: {message}");
                }
            }
            Some(Ok(WsMessage::Close(close))) => bail!("waiting for {what}: closed {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("waiting for {what}: {e}"),
            None => bail!("waiting for {what}: the connection ended"),
        }
    }
}

/// A frame from the server, read with the server's own type.
fn server_frame(text: &str) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_str(text)
}

/// A frame for the server, written with the server's own type.
fn client_frame(frame: &ClientFrame) -> WsMessage {
    WsMessage::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

/// A connection subscribed (since 0) to `room`, once the server said `subscribed`.
async fn subscriber(base: &str, token: &str, room: &str, read_buffer: usize) -> anyhow::Result<Ws> {
    let mut ws = connect(base, token, read_buffer).await?;
    let subscribe = ClientFrame::Subscribe {
        room: room.to_owned(),
        since: 0,
    };
    ws.send(client_frame(&subscribe))
        .await
        .context("subscribe")?;
    expect(&mut ws, "subscribed", |f| {
        matches!(f, ServerFrame::Subscribed { .. })
    })
    .await?;
    Ok(ws)
}

/// Opens `n` connections, subscribed to `room` when there is one, at most `batch`
/// handshakes at a time; returns them with how long each took, from the TCP connect to
/// `ready` (or `subscribed`).
async fn open(
    base: &str,
    token: &str,
    room: Option<&str>,
    n: usize,
    batch: usize,
    read_buffer: usize,
) -> anyhow::Result<(Vec<Ws>, Vec<Duration>)> {
    let mut all = Vec::with_capacity(n);
    let mut took = Vec::with_capacity(n);
    while all.len() < n {
        let take = batch.min(n - all.len());
        let handles: Vec<_> = (0..take)
            .map(|_| {
                let (base, token) = (base.to_owned(), token.to_owned());
                let room = room.map(str::to_owned);
                tokio::spawn(async move {
                    let began = Instant::now();
                    let ws = match &room {
                        Some(room) => subscriber(&base, &token, room, read_buffer).await?,
                        None => connect(&base, &token, read_buffer).await?,
                    };
                    Ok::<_, anyhow::Error>((ws, began.elapsed()))
                })
            })
            .collect();
        for handle in handles {
            let (ws, t) = handle.await.context("connection task")??;
            all.push(ws);
            took.push(t);
        }
    }
    Ok((all, took))
}

/// Opens `n` subscribers of `room`, 100 handshakes at a time.
async fn subscribers(base: &str, token: &str, room: &str, n: usize) -> anyhow::Result<Vec<Ws>> {
    Ok(open(base, token, Some(room), n, 100, 64 * 1024).await?.0)
}

/// A `send` frame whose body carries the message's index and the send instant (ns since
/// `start`), padded with `x` to `body_bytes`.
fn send_frame(room: &str, index: u64, sent_ns: u64, body_bytes: usize) -> WsMessage {
    let mut body = format!("{index} {sent_ns} ");
    while body.len() < body_bytes {
        body.push('x');
    }
    client_frame(&ClientFrame::Send {
        room: room.to_owned(),
        body,
        client_id: format!("c{index}"),
    })
}

/// The (index, send instant) a `message` frame's body carries, and its seq; `None` for
/// any other frame.
fn parse_message(text: &str) -> Option<(u64, u64, i64)> {
    let ServerFrame::Message(message) = server_frame(text).ok()? else {
        return None;
    };
    let mut words = message.body.split(' ');
    let index = words.next()?.parse().ok()?;
    let sent = words.next()?.parse().ok()?;
    Some((index, sent, message.seq))
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn us(ns: Option<u64>) -> Value {
    ns.map_or(Value::Null, |ns| json!(round(ns as f64 / 1000.0, 1)))
}

// --- server-side stages ------------------------------------------------------------------

/// One histogram of a replica's `/metrics`: cumulative counts by upper bound (`+Inf`
/// last), the sum and the count.
#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// The chat stage histograms (`herd_chat_stage_seconds`, by stage) and the posts per
/// commit (`herd_chat_commit_posts`, as `commit_posts`) of some replicas, added together.
#[derive(Debug, Clone, Default)]
struct Stages(std::collections::BTreeMap<String, Hist>);

impl Stages {
    /// Reads the stage histograms of each of `bases`' `/metrics`, summed; a replica that
    /// does not answer adds nothing (and the report then shows none).
    async fn scrape(bases: &[&str]) -> Stages {
        let mut stages = Stages::default();
        let Ok(http) = reqwest::Client::builder().timeout(STEP_TIMEOUT).build() else {
            return stages;
        };
        for base in bases {
            let text = match http.get(format!("{base}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => {
                    eprintln!("could not read {base}/metrics: {e}");
                    continue;
                }
            };
            for line in text.lines() {
                stages.add_line(line);
            }
        }
        stages
    }

    fn add_line(&mut self, line: &str) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            return;
        };
        let Ok(value) = value.parse::<f64>() else {
            return;
        };
        let (name, labels) = series
            .split_once('{')
            .map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
        let label = |key: &str| {
            labels.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_owned())
            })
        };
        let (key, part) = if let Some(part) = name.strip_prefix("herd_chat_stage_seconds_") {
            let Some(stage) = label("stage") else {
                return;
            };
            (stage, part)
        } else if let Some(part) = name.strip_prefix("herd_chat_commit_posts_") {
            ("commit_posts".to_owned(), part)
        } else {
            return;
        };
        let hist = self.0.entry(key).or_default();
        match part {
            "sum" => hist.sum += value,
            "count" => hist.count += value,
            "bucket" => {
                let le = match label("le").as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(le) => le,
                        Err(_) => return,
                    },
                    None => return,
                };
                match hist.buckets.iter_mut().find(|(bound, _)| *bound == le) {
                    Some((_, count)) => *count += value,
                    None => {
                        hist.buckets.push((le, value));
                        hist.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    }
                }
            }
            _ => {}
        }
    }

    /// What was recorded between `before` and `self`.
    fn since(&self, before: &Stages) -> Stages {
        let mut diff = self.clone();
        for (key, hist) in &mut diff.0 {
            let Some(old) = before.0.get(key) else {
                continue;
            };
            hist.sum -= old.sum;
            hist.count -= old.count;
            for (bound, count) in &mut hist.buckets {
                if let Some((_, was)) = old.buckets.iter().find(|(b, _)| b == bound) {
                    *count -= was;
                }
            }
        }
        diff
    }

    /// Per stage: how many observations, their mean, and p50/p99 estimated from the
    /// buckets (linear within a bucket, as Prometheus's `histogram_quantile`); the posts
    /// per commit likewise, unscaled.
    fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (key, hist) in &self.0 {
            let scale = if key == "commit_posts" { 1.0 } else { 1e6 };
            let mean = (hist.count > 0.0).then(|| hist.sum / hist.count * scale);
            let q = |p: f64| hist.quantile(p).map(|v| round(v * scale, 1));
            out.insert(
                key.clone(),
                json!({
                    "count": hist.count,
                    "mean": mean.map(|m| round(m, 1)),
                    "p50": q(0.5),
                    "p99": q(0.99),
                }),
            );
        }
        Value::Object(out)
    }
}

impl Hist {
    fn quantile(&self, p: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = p * self.count;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let within = cumulative - lower.1;
                let share = if within > 0.0 {
                    (rank - lower.1) / within
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * share);
            }
            lower = (bound, cumulative);
        }
        None
    }
}

// --- latency ----------------------------------------------------------------------------

/// What one latency subscriber saw.
#[derive(Default)]
struct Seen {
    latencies_ns: Vec<u64>,
    /// (index, latency) of every message, kept by the first subscriber only.
    trace: Vec<(u64, u64)>,
    received: u64,
    out_of_order: u64,
    closed: Option<String>,
}

async fn latency(args: &LatencyArgs) -> anyhow::Result<Value> {
    let LatencyArgs {
        send_url,
        recv_url,
        rate,
        warmup,
        duration,
        senders,
        body_bytes,
        clk_tck,
        ..
    } = args;
    let (rate, warmup, duration, senders, body_bytes, clk_tck) =
        (*rate, *warmup, *duration, *senders, *body_bytes, *clk_tck);
    let n = usize::try_from(args.subscribers).context("--subscribers")?;
    let (server_pids, also_pids) = (&args.server_pids.0, &args.also_pids.0);
    let trace_file = &args.trace_file;

    let session = session(send_url).await?;
    let start = Instant::now();
    let warm = (rate * warmup.as_secs_f64()).round() as u64;
    let total = warm + (rate * duration.as_secs_f64()).round() as u64;
    eprintln!("latency: {n} subscribers on {recv_url}, {rate}/s from {send_url} ({senders} sender connection(s)), {total} messages");

    let subs = subscribers(recv_url, &session.token, &session.room, n).await?;
    let (stop, stopped) = watch::channel(false);
    let receivers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(j, ws)| {
            let stopped = stopped.clone();
            tokio::spawn(latency_subscriber(
                ws,
                start,
                warm,
                total,
                stopped,
                Duration::from_secs_f64(warmup.as_secs_f64() + duration.as_secs_f64()) * 2,
                j == 0 && trace_file.is_some(),
            ))
        })
        .collect();

    // The send instant of each message, for the ack latency (the commit, as the sender
    // sees it).
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut sockets = Vec::new();
    for _ in 0..senders {
        sockets.push(connect(send_url, &session.token, 64 * 1024).await?);
    }
    let t0 = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut sender_tasks = Vec::new();
    for (k, ws) in (0..senders).zip(sockets) {
        sender_tasks.push(tokio::spawn(paced_sender(
            ws,
            start,
            session.room.clone(),
            (k, senders),
            (t0, period),
            (warm, total),
            body_bytes,
            sent_at.clone(),
        )));
    }
    let cpu = CpuWindow::start(server_pids, also_pids);
    // The servers' stage timings from the end of the warm-up's sends to the end of the
    // run: read once the last warm-up message has been sent.
    let bases = [send_url.as_str(), recv_url.as_str()];
    let warm_done = t0 + period.mul_f64(warm as f64);
    let stages_before = tokio::spawn({
        let bases = bases.map(str::to_owned);
        async move {
            tokio::time::sleep_until(warm_done).await;
            Stages::scrape(&bases.each_ref().map(String::as_str)).await
        }
    });
    let mut sent = 0;
    let mut max_lag_ns = 0;
    let mut acks = Vec::new();
    let mut errors = serde_json::Map::new();
    let mut send_window: Option<(u64, u64)> = None;
    for task in sender_tasks {
        let report = task.await.context("sender task")??;
        sent += report.sent;
        max_lag_ns = max_lag_ns.max(report.max_lag_ns);
        acks.extend(report.ack_ns);
        for (code, count) in report.errors {
            let c = errors.get(&code).and_then(Value::as_u64).unwrap_or(0);
            errors.insert(code, json!(c + count));
        }
        if let Some((a, b)) = report.measured_window_ns {
            send_window = Some(send_window.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
    }
    let (_, cpu_json) = cpu.stop(clk_tck);
    // Give the subscribers a moment to drain, then stop whoever is still waiting.
    let drained = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    for mut task in receivers {
        let result = match tokio::time::timeout_at(drained, &mut task).await {
            Ok(result) => result,
            Err(_) => {
                stop.send_replace(true);
                task.await
            }
        };
        seen.push(result.context("subscriber task")?);
    }

    let stages = Stages::scrape(&bases)
        .await
        .since(&stages_before.await.context("stage scrape")?)
        .json();

    let mut all: Vec<u64> = Vec::new();
    let mut received = 0;
    let mut out_of_order = 0;
    let mut closed = Vec::new();
    for s in &seen {
        all.extend(&s.latencies_ns);
        received += s.received;
        out_of_order += s.out_of_order;
        if let Some(c) = &s.closed {
            closed.push(c.clone());
        }
    }
    if let Some(path) = &trace_file {
        write_trace(
            path,
            &sent_at,
            &acks,
            seen.first().map_or(&[][..], |s| &s.trace),
        )?;
    }
    all.sort_unstable();
    let mut acks: Vec<u64> = acks
        .iter()
        .filter(|(i, _)| *i >= warm)
        .map(|(_, ns)| *ns)
        .collect();
    acks.sort_unstable();
    let measured = total - warm;
    let expected = measured * n as u64;
    let achieved_rate = send_window
        .filter(|(a, b)| b > a && measured > 1)
        .map(|(a, b)| (measured - 1) as f64 / ((b - a) as f64 / 1e9));
    let result = json!({
        "mode": "latency",
        "subscribers": n,
        "rate": rate,
        "senders": senders,
        "warmup_s": warmup.as_secs_f64(),
        "duration_s": duration.as_secs_f64(),
        "body_bytes": body_bytes,
        "messages": total,
        "measured_messages": measured,
        "sent": sent,
        "achieved_rate": achieved_rate.map(|r| round(r, 1)),
        "sender_max_lag_us": us(Some(max_lag_ns)),
        "send_errors": errors,
        "received": received,
        "samples": all.len(),
        "missing": expected.saturating_sub(all.len() as u64),
        "out_of_order": out_of_order,
        "closed": closed,
        "p50_us": us(percentile(&all, 50.0)),
        "p90_us": us(percentile(&all, 90.0)),
        "p99_us": us(percentile(&all, 99.0)),
        "p999_us": us(percentile(&all, 99.9)),
        "max_us": us(all.last().copied()),
        "mean_us": us((!all.is_empty()).then(|| all.iter().sum::<u64>() / all.len() as u64)),
        "ack_p50_us": us(percentile(&acks, 50.0)),
        "ack_p99_us": us(percentile(&acks, 99.0)),
        "cpu": cpu_json,
        // Per stage on the servers (µs; commit_posts in posts), from the end of the
        // warm-up's sends: commit_queue, commit, announce_queue, publish (the sender's
        // replica), fanout, write (the subscribers'), and commit_posts.
        "stages": stages,
    });
    // Nothing measured and no subscriber cut off means the counting is broken (a frame
    // this generator no longer recognises, say); subscribers the server closed are a
    // result, and reported as one.
    if all.is_empty() && closed.is_empty() {
        bail!("latency: no subscriber received a measured message: {result}");
    }
    Ok(result)
}

/// One CSV line a message: index, send instant (ms since start), ack latency and the
/// first subscriber's latency (µs; empty when unknown).
fn write_trace(
    path: &str,
    sent_at: &[AtomicU64],
    acks: &[(u64, u64)],
    received: &[(u64, u64)],
) -> anyhow::Result<()> {
    let acks: HashMap<u64, u64> = acks.iter().copied().collect();
    let received: HashMap<u64, u64> = received.iter().copied().collect();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("create {path}"))?,
    );
    writeln!(out, "index,sent_ms,ack_us,received_us")?;
    let cell = |v: Option<&u64>| v.map_or(String::new(), |ns| format!("{:.1}", *ns as f64 / 1e3));
    for (i, sent) in sent_at.iter().enumerate() {
        let i = i as u64;
        let sent = sent.load(Ordering::Relaxed) as f64 / 1e6;
        writeln!(
            out,
            "{i},{sent:.3},{},{}",
            cell(acks.get(&i)),
            cell(received.get(&i))
        )?;
    }
    out.flush()?;
    Ok(())
}

async fn latency_subscriber(
    mut ws: Ws,
    start: Instant,
    warm: u64,
    total: u64,
    mut stopped: watch::Receiver<bool>,
    give_up: Duration,
    trace: bool,
) -> Seen {
    let mut seen = Seen {
        latencies_ns: Vec::with_capacity((total - warm) as usize),
        ..Seen::default()
    };
    let mut last_seq = None;
    let deadline = tokio::time::sleep(give_up);
    tokio::pin!(deadline);
    loop {
        let frame = tokio::select! {
            biased;
            frame = ws.next() => frame,
            _ = stopped.changed() => break,
            () = &mut deadline => break,
        };
        let now = start.elapsed().as_nanos() as u64;
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                let Some((index, sent, seq)) = parse_message(&text) else {
                    continue;
                };
                if last_seq.is_some_and(|l: i64| seq != l + 1) {
                    seen.out_of_order += 1;
                }
                last_seq = Some(seq);
                seen.received += 1;
                if index >= warm {
                    seen.latencies_ns.push(now.saturating_sub(sent));
                }
                if trace {
                    seen.trace.push((index, now.saturating_sub(sent)));
                }
                if index + 1 >= total {
                    break;
                }
            }
            Some(Ok(WsMessage::Close(close))) => {
                seen.closed =
                    Some(close.map_or("no code".into(), |c| u16::from(c.code).to_string()));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                seen.closed = Some(e.to_string());
                break;
            }
            None => {
                seen.closed = Some("ended".into());
                break;
            }
        }
    }
    let _ = ws.close(None).now_or_never();
    seen
}

struct SenderReport {
    sent: u64,
    max_lag_ns: u64,
    /// (index, send-to-ack latency) of every acknowledged message.
    ack_ns: Vec<(u64, u64)>,
    errors: HashMap<String, u64>,
    /// Send instants of the first and last measured message this sender sent.
    measured_window_ns: Option<(u64, u64)>,
}

/// Sends messages `k`, `k + of`, `k + 2 of`, ... below `total`, each at
/// `t0 + index * period`, without waiting for acks; a task alongside reads the acks.
/// Messages from `warm` on are the measured ones.
#[allow(clippy::too_many_arguments)]
async fn paced_sender(
    ws: Ws,
    start: Instant,
    room: String,
    (k, of): (u64, u64),
    (t0, period): (tokio::time::Instant, Duration),
    (warm, total): (u64, u64),
    body_bytes: usize,
    sent_at: Arc<Vec<AtomicU64>>,
) -> anyhow::Result<SenderReport> {
    let (mut sink, mut stream) = ws.split();
    let mine = (k..total).step_by(of as usize).count() as u64;
    let acks = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut ack_ns = Vec::with_capacity(mine as usize);
            let mut errors: HashMap<String, u64> = HashMap::new();
            let mut answered = 0;
            while answered < mine {
                let frame = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await
                {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(e))) => {
                        *errors.entry(format!("socket: {e}")).or_default() += 1;
                        break;
                    }
                    Ok(None) => {
                        *errors.entry("socket ended".into()).or_default() += 1;
                        break;
                    }
                    Err(_) => {
                        *errors.entry("no answer within 10 s".into()).or_default() += 1;
                        break;
                    }
                };
                let now = start.elapsed().as_nanos() as u64;
                let WsMessage::Text(text) = frame else {
                    continue;
                };
                let index = |client_id: &str| {
                    client_id
                        .strip_prefix('c')
                        .and_then(|i| i.parse::<usize>().ok())
                };
                match server_frame(&text) {
                    Ok(ServerFrame::Ack { client_id, .. }) => {
                        answered += 1;
                        if let Some(i) = index(&client_id) {
                            let at = sent_at.get(i).map_or(0, |a| a.load(Ordering::Relaxed));
                            ack_ns.push((i as u64, now.saturating_sub(at)));
                        }
                    }
                    Ok(ServerFrame::Error { code, .. }) => {
                        answered += 1;
                        *errors.entry(code).or_default() += 1;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        *errors.entry(format!("unreadable frame: {e}")).or_default() += 1;
                    }
                }
            }
            (ack_ns, errors)
        })
    };
    let mut sent = 0;
    let mut max_lag_ns = 0u64;
    let mut first_last: Option<(u64, u64)> = None;
    let mut index = k;
    while index < total {
        let due = t0 + period.mul_f64(index as f64);
        tokio::time::sleep_until(due).await;
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        max_lag_ns = max_lag_ns.max(lag.as_nanos() as u64);
        let sent_ns = start.elapsed().as_nanos() as u64;
        if let Some(slot) = sent_at.get(index as usize) {
            slot.store(sent_ns, Ordering::Relaxed);
        }
        sink.send(send_frame(&room, index, sent_ns, body_bytes))
            .await
            .context("send frame")?;
        if index >= warm {
            first_last = Some(first_last.map_or((sent_ns, sent_ns), |(a, _)| (a, sent_ns)));
        }
        sent += 1;
        index += of;
    }
    let (ack_ns, errors) = acks.await.context("ack task")?;
    let _ = sink.close().await;
    Ok(SenderReport {
        sent,
        max_lag_ns,
        ack_ns,
        errors,
        measured_window_ns: first_last,
    })
}

// --- throughput -------------------------------------------------------------------------

async fn throughput(args: &ThroughputArgs) -> anyhow::Result<Value> {
    let ThroughputArgs {
        url,
        server_pid,
        window,
        warmup,
        duration,
        body_bytes,
        clk_tck,
        ..
    } = args;
    let (server_pid, window, warmup, duration, body_bytes, clk_tck) = (
        *server_pid,
        *window,
        *warmup,
        *duration,
        *body_bytes,
        *clk_tck,
    );
    let n = usize::try_from(args.subscribers).context("--subscribers")?;
    let also_pids = &args.also_pids.0;
    if cpu_ticks(server_pid).is_none() {
        bail!("--server-pid must name a running process");
    }

    let session = session(url).await?;
    eprintln!("throughput: {n} subscribers on {url}, one sender at most {window} messages ahead of the slowest");
    let subs = subscribers(url, &session.token, &session.room, n).await?;
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let alive: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(true)).collect());
    let closes: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let receivers: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(j, mut ws)| {
            let (counts, alive, closes) = (counts.clone(), alive.clone(), closes.clone());
            tokio::spawn(async move {
                let why = loop {
                    match ws.next().await {
                        Some(Ok(WsMessage::Text(text))) => {
                            if let Ok(ServerFrame::Message(_)) = server_frame(&text) {
                                if let Some(c) = counts.get(j) {
                                    c.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Some(Ok(WsMessage::Close(close))) => {
                            break close.map_or("no code".into(), |c| u16::from(c.code).to_string())
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break e.to_string(),
                        None => break "ended".to_owned(),
                    }
                };
                if let Some(a) = alive.get(j) {
                    a.store(false, Ordering::Relaxed);
                }
                closes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(why);
            })
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let blocked = Arc::new(AtomicU64::new(0));
    let ws = connect(url, &session.token, 64 * 1024).await?;
    let sender = {
        let (stop, sent, blocked, counts, alive) = (
            stop.clone(),
            sent.clone(),
            blocked.clone(),
            counts.clone(),
            alive.clone(),
        );
        let room = session.room.clone();
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let errors = tokio::spawn(async move {
                let mut errors: HashMap<String, u64> = HashMap::new();
                while let Some(Ok(frame)) = stream.next().await {
                    if let WsMessage::Text(text) = frame {
                        if let Ok(ServerFrame::Error { code, .. }) = server_frame(&text) {
                            *errors.entry(code).or_default() += 1;
                        }
                    }
                }
                errors
            });
            let slowest = || {
                counts
                    .iter()
                    .zip(alive.iter())
                    .filter(|(_, a)| a.load(Ordering::Relaxed))
                    .map(|(c, _)| c.load(Ordering::Relaxed))
                    .min()
            };
            let mut floor = 0;
            let mut index = 0u64;
            while !stop.load(Ordering::Relaxed) {
                while index >= floor + window && !stop.load(Ordering::Relaxed) {
                    match slowest() {
                        None => return Err(anyhow!("every subscriber is gone")),
                        Some(m) if index < m + window => floor = m,
                        Some(_) => {
                            blocked.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                sink.send(send_frame(&room, index, 0, body_bytes))
                    .await
                    .context("send frame")?;
                sent.fetch_add(1, Ordering::Relaxed);
                index += 1;
            }
            let _ = sink.close().await;
            errors.abort();
            Ok::<_, anyhow::Error>(errors.await.unwrap_or_default())
        })
    };

    let delivered = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    tokio::time::sleep(warmup).await;
    let (d0, s0) = (delivered(), sent.load(Ordering::Relaxed));
    let cpu = CpuWindow::start(&[server_pid], also_pids);
    tokio::time::sleep(duration).await;
    let (d1, s1) = (delivered(), sent.load(Ordering::Relaxed));
    let wall = cpu.at.elapsed().as_secs_f64();
    let (cores, cpu_json) = cpu.stop(clk_tck);
    stop.store(true, Ordering::Relaxed);
    let sender_errors = match tokio::time::timeout(Duration::from_secs(10), sender).await {
        Ok(Ok(Ok(errors))) => json!(errors),
        Ok(Ok(Err(e))) => json!({ "sender": e.to_string() }),
        Ok(Err(e)) => json!({ "sender task": e.to_string() }),
        Err(_) => json!({ "sender": "did not stop within 10 s" }),
    };
    for r in &receivers {
        r.abort();
    }
    let delivered_per_s = (d1 - d0) as f64 / wall;
    let server_cores = cores.first().copied().flatten();
    let per_core = server_cores
        .filter(|c| *c > 0.0)
        .map(|c| delivered_per_s / c);
    let closed = closes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let result = json!({
        "mode": "throughput",
        "subscribers": n,
        "window": window,
        "warmup_s": warmup.as_secs_f64(),
        "duration_s": duration.as_secs_f64(),
        "body_bytes": body_bytes,
        "sent_per_s": round((s1 - s0) as f64 / wall, 1),
        "delivered": d1 - d0,
        "delivered_per_s": round(delivered_per_s, 1),
        "server_cores": server_cores.map(|c| round(c, 3)),
        "delivered_per_s_per_core": per_core.map(|p| round(p, 1)),
        "sender_waits": blocked.load(Ordering::Relaxed),
        "sender_errors": sender_errors,
        "closed_early": closed,
        "cpu": cpu_json,
    });
    if d1 == d0 && closed.is_empty() {
        bail!("throughput: no message was delivered in the measured window: {result}");
    }
    Ok(result)
}

// --- idle -------------------------------------------------------------------------------

async fn idle(args: &IdleArgs) -> anyhow::Result<Value> {
    let IdleArgs {
        url,
        server_pid,
        warmup_connections: warm,
        settle,
        subscribe,
        ..
    } = args;
    let (server_pid, warm, settle, subscribe) = (*server_pid, *warm, *settle, *subscribe);
    let n = usize::try_from(args.connections).context("--connections")?;
    let batch = usize::try_from(args.batch).context("--batch")?;
    if rss_kib(server_pid).is_none() {
        bail!("--server-pid must name a running process");
    }

    let session = session(url).await?;
    // A few connections first, so that what the first connection of all initialises
    // (the room's bus topic, buffers, pools) is in the baseline, not in the per-connection
    // figure.
    if warm > 0 {
        let (first, _) = open(url, &session.token, Some(&session.room), warm, batch, 4096).await?;
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = rss_kib(server_pid).ok_or_else(|| anyhow!("server gone"))?;
    let tcp_before = tcp_mem_pages();
    let own_before = rss_kib(std::process::id());
    eprintln!("idle: server RSS {before} KiB; opening {n} connections, {batch} at a time");

    let opening = Instant::now();
    let room = subscribe.then_some(session.room.as_str());
    let (mut conns, mut took) = open(url, &session.token, room, n, batch, 4096).await?;
    took.sort_unstable();
    let took: Vec<u64> = took.iter().map(|d| d.as_nanos() as u64).collect();
    let open_s = opening.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let after = rss_kib(server_pid).ok_or_else(|| anyhow!("server gone"))?;
    let tcp_after = tcp_mem_pages();
    let own_after = rss_kib(std::process::id());
    // Every connection should still be open and quiet: nothing to read, no close.
    let still_open = conns
        .iter_mut()
        .map(|ws| ws.next().now_or_never().is_none())
        .filter(|open| *open)
        .count();
    eprintln!("idle: server RSS {after} KiB with {still_open} of {n} connections open");
    drop(conns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_close = rss_kib(server_pid);

    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    let page_kib = 4.0;
    let result = json!({
        "mode": "idle",
        "connections": n,
        "subscribed": subscribe,
        "still_open": still_open,
        "batch": batch,
        "warmup_connections": warm,
        "open_s": round(open_s, 2),
        "handshake_p50_us": us(percentile(&took, 50.0)),
        "handshake_p99_us": us(percentile(&took, 99.0)),
        "settle_s": settle.as_secs_f64(),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_close_kib": after_close,
        "bytes_per_connection": round(per_conn, 0),
        "kib_per_connection": round(per_conn / 1024.0, 2),
        "kernel_tcp_kib_before": tcp_before.map(|p| p as f64 * page_kib),
        "kernel_tcp_kib_after": tcp_after.map(|p| p as f64 * page_kib),
        "generator_rss_kib_before": own_before,
        "generator_rss_kib_after": own_after,
    });
    if still_open == 0 {
        bail!("idle: no connection stayed open: {result}");
    }
    Ok(result)
}
