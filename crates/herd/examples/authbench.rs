//! authbench: the load generator behind `bench/auth.sh`.
//!
//! ```text
//! authbench argon2  [--memory-kib 19456 --iterations 2 --parallelism 1] [--permits NPROC]
//!                   [--concurrency 2*PERMITS] [--warmup 2] [--duration 8]
//! authbench login   --url URL --server-pid PID [--users 64] [--concurrency 8]
//!                   [--warmup 2] [--duration 8] [--clk-tck 100]
//! authbench refresh --url URL --server-pid PID [--postgres URL] [--users 100]
//!                   [--sessions 4000] [--per-session 10] [--concurrency 32]
//!                   [--warmup 2] [--duration 8] [--clk-tck 100]
//! ```
//!
//! Each mode prints one JSON line of results on stdout (progress goes to stderr) and
//! fails when it measured nothing, or when any request in the measured window was
//! refused: a throttled login or refresh would make the figure meaningless.
//!
//! - `argon2`: what argon2id alone does on this machine, the ceiling for logins/s. It
//!   verifies a password against a hash made under the given parameters (a login's work)
//!   as fast as it can, two ways: on `--permits` plain threads, and in the arrangement
//!   herd uses (`crates/identity/src/password.rs`): a tokio multi-thread runtime, at most
//!   `--permits` verifications at once behind a semaphore, each on the blocking pool by
//!   `spawn_blocking`, with `--concurrency` callers waiting for a permit. The defaults are
//!   herd's: `HashParams::default()` and one permit per core (`--hash-concurrency`).
//! - `login`: signs up `--users` accounts (not timed), then logs them in round-robin from
//!   `--concurrency` connections, and counts the logins a second. Each login comes from
//!   a client address of its own (`X-Forwarded-For`, believed when herd runs with
//!   `--trusted-proxy 127.0.0.1`), as from many clients, so herd's login throttle, at its
//!   defaults, never refuses one: the per-address limit meets each address once, and a
//!   successful login counts against no per-account limit.
//! - `refresh`: signs up `--users` accounts and opens `--sessions` login sessions among
//!   them (not timed), then `--concurrency` workers each take a session and refresh it
//!   `--per-session` times in a chain, each refresh presenting the refresh token the
//!   previous answer gave (rotation), then take the next session. `--per-session` is at
//!   most herd's per-session refresh limit (`--refresh-limit-session`, 10 at once by
//!   default), so the limit is on, as shipped, and refuses none. With `--postgres`, the
//!   CPU of the database's backends serving herd is read too (`pg_stat_activity`).
//!
//! The CPU figures are `/proc/PID/stat` utime + stime over the measured window, in cores
//! (seconds of CPU a second). Durations are in seconds.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Version};
use clap::{Args, Parser, Subcommand};
use herd_identity::HashParams;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// How long any one setup request may take before the run is abandoned.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = match Cli::parse().mode {
        Mode::Argon2(args) => argon2_alone(&args).await?,
        Mode::Login(args) => login(&args).await?,
        Mode::Refresh(args) => refresh(&args).await?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{result}")?;
    Ok(())
}

#[derive(Debug, Parser)]
#[command(about = "Login and refresh throughput of herd, and argon2id alone")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// argon2id verifications a second, on plain threads and in herd's arrangement.
    Argon2(Argon2Args),
    /// Logins a second against a running `herd serve`.
    Login(LoginArgs),
    /// Rotating refreshes a second against a running `herd serve`.
    Refresh(RefreshArgs),
}

#[derive(Debug, Args)]
struct Window {
    /// Seconds run but not counted.
    #[arg(long, default_value = "2", value_parser = seconds)]
    warmup: Duration,
    /// Seconds counted.
    #[arg(long, default_value = "8", value_parser = seconds)]
    duration: Duration,
}

#[derive(Debug, Args)]
struct Argon2Args {
    /// argon2id memory cost in KiB [default: herd's].
    #[arg(long)]
    memory_kib: Option<u32>,
    /// argon2id passes [default: herd's].
    #[arg(long)]
    iterations: Option<u32>,
    /// argon2id lanes [default: herd's].
    #[arg(long)]
    parallelism: Option<u32>,
    /// Verifications at once [default: the number of cores, as herd's --hash-concurrency].
    #[arg(long)]
    permits: Option<usize>,
    /// Callers in herd's arrangement, each waiting for a permit [default: 2 x permits].
    #[arg(long)]
    concurrency: Option<usize>,
    #[command(flatten)]
    window: Window,
    /// `getconf CLK_TCK`: the unit of /proc/PID/stat's utime and stime.
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
}

#[derive(Debug, Args)]
struct LoginArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    server_pid: u32,
    /// Accounts, signed up before the measurement and logged in round-robin.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Logins in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    #[command(flatten)]
    window: Window,
    /// `getconf CLK_TCK`: the unit of /proc/PID/stat's utime and stime.
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
}

#[derive(Debug, Args)]
struct RefreshArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    server_pid: u32,
    /// herd's PostgreSQL database: the CPU of its backends is reported.
    #[arg(long)]
    postgres: Option<String>,
    /// Accounts the sessions belong to.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Login sessions opened before the measurement.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..))]
    sessions: u64,
    /// Refreshes in a chain on one session before moving to the next; at most herd's
    /// --refresh-limit-session burst, or refreshes are refused.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    per_session: u64,
    /// Refreshes in flight (each on its own session).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    #[command(flatten)]
    window: Window,
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a duration in seconds"))
}

// --- argon2id alone ----------------------------------------------------------------------

async fn argon2_alone(args: &Argon2Args) -> anyhow::Result<Value> {
    let shipped = HashParams::default();
    let params = HashParams {
        memory_kib: args.memory_kib.unwrap_or(shipped.memory_kib),
        iterations: args.iterations.unwrap_or(shipped.iterations),
        parallelism: args.parallelism.unwrap_or(shipped.parallelism),
    };
    let argon = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?,
    );
    let permits = args
        .permits
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let concurrency = args.concurrency.unwrap_or(2 * permits).max(1);
    let password = b"correct horse battery staple".to_vec();
    let salt = SaltString::encode_b64(b"authbench salt!!").map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored = argon
        .hash_password(&password, &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string();
    let work = Arc::new(Verification {
        argon,
        password,
        stored,
    });

    eprintln!("argon2: {permits} plain threads");
    let threads = on_threads(&work, permits, &args.window, args.clk_tck)?;
    eprintln!("argon2: herd's arrangement, {permits} permits, {concurrency} callers");
    let arranged =
        on_blocking_pool(&work, permits, concurrency, &args.window, args.clk_tck).await?;
    Ok(json!({
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "parallelism": params.parallelism,
        "permits": permits,
        "concurrency": concurrency,
        "threads": threads,
        "blocking_pool": arranged,
    }))
}

/// One login's worth of argon2: verifying a password against its stored hash.
struct Verification {
    argon: Argon2<'static>,
    password: Vec<u8>,
    stored: String,
}

impl Verification {
    fn run(&self) -> bool {
        PasswordHash::new(&self.stored)
            .map(|parsed| self.argon.verify_password(&self.password, &parsed).is_ok())
            .unwrap_or(false)
    }
}

fn on_threads(
    work: &Arc<Verification>,
    threads: usize,
    window: &Window,
    clk_tck: f64,
) -> anyhow::Result<Value> {
    let phase = Arc::new(Phase::default());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (work, phase) = (work.clone(), phase.clone());
            std::thread::spawn(move || {
                while !phase.stopped() {
                    assert!(work.run(), "the password did not verify");
                    if phase.counting() {
                        phase.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(window.warmup);
    let cpu = Cpu::start(std::process::id(), Vec::new());
    let started = phase.open();
    std::thread::sleep(window.duration);
    let measured = phase.close(started);
    let (cores, _) = cpu.stop(clk_tck)?;
    let faults = cpu.faults();
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?;
    }
    measured.with_cores(cores, faults, "verifications")
}

async fn on_blocking_pool(
    work: &Arc<Verification>,
    permits: usize,
    concurrency: usize,
    window: &Window,
    clk_tck: f64,
) -> anyhow::Result<Value> {
    let phase = Arc::new(Phase::default());
    let semaphore = Arc::new(Semaphore::new(permits));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (work, phase, semaphore) = (work.clone(), phase.clone(), semaphore.clone());
            tokio::spawn(async move {
                while !phase.stopped() {
                    // As herd's PasswordHasher::blocking: the permit is held until the
                    // blocking task's answer is back on the async side.
                    let _permit = semaphore.acquire().await?;
                    let work = work.clone();
                    let ok = tokio::task::spawn_blocking(move || work.run()).await?;
                    anyhow::ensure!(ok, "the password did not verify");
                    if phase.counting() {
                        phase.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(window.warmup).await;
    let cpu = Cpu::start(std::process::id(), Vec::new());
    let started = phase.open();
    tokio::time::sleep(window.duration).await;
    let measured = phase.close(started);
    let (cores, _) = cpu.stop(clk_tck)?;
    let faults = cpu.faults();
    for task in tasks {
        task.await??;
    }
    measured.with_cores(cores, faults, "verifications")
}

// --- the measured window -----------------------------------------------------------------

/// Where a run is: warming up, counting, or stopped; and what it counted.
#[derive(Default)]
struct Phase {
    counting: AtomicBool,
    stopped: AtomicBool,
    done: AtomicU64,
}

/// What a window counted, and how long it lasted.
struct Measured {
    done: u64,
    wall: Duration,
}

impl Phase {
    fn counting(&self) -> bool {
        self.counting.load(Ordering::Relaxed)
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Opens the window. The operations that finish inside it are counted, as wrk does:
    /// in a steady state that is the rate, and it matches the CPU read over the same
    /// window (operations that straddle an edge spend part of their CPU inside it).
    fn open(&self) -> Instant {
        self.counting.store(true, Ordering::SeqCst);
        Instant::now()
    }

    fn close(&self, started: Instant) -> Measured {
        self.counting.store(false, Ordering::SeqCst);
        let wall = started.elapsed();
        self.stopped.store(true, Ordering::SeqCst);
        Measured {
            done: self.done.load(Ordering::SeqCst),
            wall,
        }
    }
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64()
    }

    /// The result, with the rate per second of CPU the measured process spent (`cores`
    /// on average over the window): what the work costs whatever share of the machine
    /// it was given, the figure that holds on a machine other work shares.
    fn with_cores(&self, cores: f64, faults: Option<u64>, what: &str) -> anyhow::Result<Value> {
        let mut result = self.result(what)?;
        result["cores"] = json!(round(cores, 3));
        result["per_cpu_s"] = json!(round(self.per_second() / cores, 1));
        result["page_faults_per_op"] = json!(faults.map(|f| self.per_op(f)));
        Ok(result)
    }

    /// `total` shared among the operations counted.
    fn per_op(&self, total: u64) -> f64 {
        round(total as f64 / self.done.max(1) as f64, 1)
    }

    fn result(&self, what: &str) -> anyhow::Result<Value> {
        if self.done == 0 {
            bail!("no {what} completed in the measured window");
        }
        Ok(json!({
            "count": self.done,
            "window_s": round(self.wall.as_secs_f64(), 3),
            "per_s": round(self.per_second(), 1),
        }))
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

/// Minor page faults of a process so far, all its threads (`/proc/PID/stat` minflt).
fn page_faults(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // minflt is field 10.
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// (busy, all) clock ticks of every core together, from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?;
    Some((busy, busy + v.get(3)? + v.get(4)?))
}

/// The CPU that herd, the database's backends, this generator and the whole machine spent
/// over a window.
struct Cpu {
    server: u32,
    backends: Vec<u32>,
    before: Vec<Option<u64>>,
    faults: Option<u64>,
    machine: Option<(u64, u64)>,
    at: Instant,
}

impl Cpu {
    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        [self.server, std::process::id()]
            .into_iter()
            .chain(self.backends.iter().copied())
    }

    fn start(server: u32, backends: Vec<u32>) -> Cpu {
        let mut cpu = Cpu {
            server,
            backends,
            before: Vec::new(),
            faults: page_faults(server),
            machine: machine_ticks(),
            at: Instant::now(),
        };
        cpu.before = cpu.pids().map(cpu_ticks).collect();
        cpu
    }

    /// Minor page faults of the measured process (herd, or argon2 alone) since `start`.
    fn faults(&self) -> Option<u64> {
        Some(page_faults(self.server)?.saturating_sub(self.faults?))
    }

    /// Cores used: (herd, as JSON with the rest).
    fn stop(&self, clk_tck: f64) -> anyhow::Result<(f64, Value)> {
        let wall = self.at.elapsed().as_secs_f64();
        let used: Vec<Option<f64>> = self
            .pids()
            .zip(&self.before)
            .map(|(pid, before)| {
                let (b, a) = ((*before)?, cpu_ticks(pid)?);
                Some(a.saturating_sub(b) as f64 / clk_tck / wall)
            })
            .collect();
        let server = used[0].context("herd's /proc/PID/stat could not be read")?;
        let generator = used[1].unwrap_or(0.0);
        let backends: f64 = used[2..].iter().flatten().sum();
        let busy = match (self.machine, machine_ticks()) {
            (Some((b0, _)), Some((b1, _))) => Some((b1 - b0) as f64 / clk_tck / wall),
            _ => None,
        };
        let others = busy.map(|b| (b - server - generator - backends).max(0.0));
        let mut json = json!({
            "server_cores": round(server, 3),
            "generator_cores": round(generator, 3),
            // Everything else the machine did meanwhile: other work on the same cores.
            "other_cores": others.map(|c| round(c, 3)),
        });
        if !self.backends.is_empty() {
            json["postgres_backends"] = json!(self.backends.len());
            json["postgres_cores"] = json!(round(backends, 3));
        }
        Ok((server, json))
    }
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

// --- HTTP -------------------------------------------------------------------------------

/// The token answer of login and refresh: the fields of `herd_server::auth::Tokens` read
/// here (that type is `Serialize` only: its `token_type` is a `&'static str`).
#[derive(Debug, Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: Option<String>,
}

/// A client of one herd: signs up and logs in accounts, each from its own address.
struct Herd {
    http: reqwest::Client,
    url: String,
}

/// An account and the address it logs in from (`X-Forwarded-For`).
struct Account {
    username: String,
    password: String,
    address: String,
}

/// The `n`th address of 10.0.0.0/8, from 10.0.0.1 on: one per account or session, so
/// the throttle meters each apart.
fn address(n: u64) -> String {
    let n = n + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

impl Herd {
    fn new(url: &str, connections: u64) -> anyhow::Result<Herd> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(connections)?)
            .timeout(STEP_TIMEOUT)
            .build()?;
        Ok(Herd {
            http,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    async fn post(
        &self,
        path: &str,
        address: &str,
        body: &Value,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}{path}", self.url))
            .header("x-forwarded-for", address)
            .json(body)
            .send()
            .await?)
    }

    /// Signs up `n` accounts, `concurrency` at a time, named after this run.
    async fn accounts(&self, n: u64, concurrency: u64) -> anyhow::Result<Vec<Account>> {
        let run = std::process::id();
        let accounts: Vec<Account> = (0..n)
            .map(|i| Account {
                username: format!("ab{run}x{i}"),
                password: format!("pw-{run}-{i}-not-a-secret"),
                address: address(i),
            })
            .collect();
        let next = AtomicU64::new(0);
        let signups = (0..concurrency).map(|_| async {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(account) = usize::try_from(i).ok().and_then(|i| accounts.get(i)) else {
                    return anyhow::Ok(());
                };
                let body = json!({"username": account.username, "password": account.password});
                let response = self
                    .post("/v1/auth/signup", &account.address, &body)
                    .await?;
                let status = response.status();
                if status != reqwest::StatusCode::CREATED {
                    bail!("signup returned {status}: {}", response.text().await?);
                }
            }
        });
        futures_util::future::try_join_all(signups).await?;
        Ok(accounts)
    }

    /// Logs `account` in from `address`; the tokens, or why not.
    async fn login(&self, account: &Account, address: &str) -> anyhow::Result<Tokens> {
        let body = json!({"username": account.username, "password": account.password});
        tokens(self.post("/v1/auth/login", address, &body).await?).await
    }

    async fn refresh(&self, refresh_token: &str, address: &str) -> anyhow::Result<Tokens> {
        let body = json!({ "refresh_token": refresh_token });
        tokens(self.post("/v1/auth/refresh", address, &body).await?).await
    }
}

async fn tokens(response: reqwest::Response) -> anyhow::Result<Tokens> {
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        bail!("{status}: {}", response.text().await?);
    }
    let tokens: Tokens = response.json().await?;
    anyhow::ensure!(!tokens.access_token.is_empty(), "no access token");
    Ok(tokens)
}

/// Latencies in microseconds: p50 and p99, in milliseconds.
fn percentiles(mut micros: Vec<u32>) -> Value {
    micros.sort_unstable();
    let at = |q: f64| {
        let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
        round(f64::from(micros[i]) / 1000.0, 2)
    };
    if micros.is_empty() {
        return json!({});
    }
    json!({"p50_ms": at(0.50), "p99_ms": at(0.99)})
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

// --- login ------------------------------------------------------------------------------

async fn login(args: &LoginArgs) -> anyhow::Result<Value> {
    let herd = Arc::new(Herd::new(&args.url, args.concurrency)?);
    eprintln!("login: signing up {} accounts (not timed)", args.users);
    // Signups hash through half of herd's hashing slots; more at once only queue.
    let accounts = Arc::new(herd.accounts(args.users, 4).await?);
    let phase = Arc::new(Phase::default());
    let next = Arc::new(AtomicU64::new(0));
    eprintln!("login: {} logins in flight", args.concurrency);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (herd, accounts, phase, next) =
                (herd.clone(), accounts.clone(), phase.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !phase.stopped() {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let account = &accounts[usize::try_from(n % accounts.len() as u64)?];
                    let sent = Instant::now();
                    let tokens = herd
                        .login(account, &address(n))
                        .await
                        .with_context(|| format!("login of {}", account.username))?;
                    anyhow::ensure!(
                        tokens.refresh_token.is_some(),
                        "a login gave no refresh token"
                    );
                    if phase.counting() {
                        latencies.push(micros(sent));
                        phase.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    tokio::time::sleep(args.window.warmup).await;
    let cpu = Cpu::start(args.server_pid, Vec::new());
    let started = phase.open();
    tokio::time::sleep(args.window.duration).await;
    let measured = phase.close(started);
    let (server_cores, cpu_json) = cpu.stop(args.clk_tck)?;
    let faults = cpu.faults();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let mut result = measured.result("logins")?;
    result["page_faults_per_op"] = json!(faults.map(|f| measured.per_op(f)));
    result["per_cpu_s"] = json!(round(measured.per_second() / server_cores, 1));
    result["users"] = json!(args.users);
    result["concurrency"] = json!(args.concurrency);
    merge(&mut result, percentiles(latencies));
    merge(&mut result, cpu_json);
    Ok(result)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

// --- refresh ----------------------------------------------------------------------------

/// A login session being refreshed: its latest refresh token and its address.
struct Session {
    refresh_token: String,
    address: String,
}

async fn refresh(args: &RefreshArgs) -> anyhow::Result<Value> {
    let herd = Arc::new(Herd::new(&args.url, args.concurrency)?);
    eprintln!(
        "refresh: signing up {} accounts and opening {} sessions (not timed)",
        args.users, args.sessions
    );
    let accounts = herd.accounts(args.users, 4).await?;
    let next = AtomicU64::new(0);
    let logins = (0..args.concurrency).map(|_| async {
        let mut opened = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= args.sessions {
                return anyhow::Ok(opened);
            }
            let account = &accounts[usize::try_from(i % args.users)?];
            // Each session from its own address: the login throttle's per-address count
            // is then one login, whatever --sessions is.
            let address = address(i);
            let tokens = herd.login(account, &address).await?;
            opened.push(Session {
                refresh_token: tokens
                    .refresh_token
                    .context("a login gave no refresh token")?,
                address,
            });
        }
    });
    let sessions: Vec<Session> = futures_util::future::try_join_all(logins)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let backends = match &args.postgres {
        Some(url) => postgres_backends(url).await?,
        None => Vec::new(),
    };
    let queue = Arc::new(std::sync::Mutex::new(sessions));
    let phase = Arc::new(Phase::default());
    // Set when a worker found no session left: the window then ends there.
    let exhausted = Arc::new(tokio::sync::Notify::new());
    eprintln!(
        "refresh: {} refresh chains at once, {} refreshes each",
        args.concurrency, args.per_session
    );
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (herd, queue, phase, exhausted) = (
                herd.clone(),
                queue.clone(),
                phase.clone(),
                exhausted.clone(),
            );
            let per_session = args.per_session;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !phase.stopped() {
                    let taken = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(mut session) = taken else {
                        exhausted.notify_one();
                        break;
                    };
                    for _ in 0..per_session {
                        if phase.stopped() {
                            break;
                        }
                        let sent = Instant::now();
                        let tokens = herd
                            .refresh(&session.refresh_token, &session.address)
                            .await
                            .context("refresh")?;
                        session.refresh_token = tokens
                            .refresh_token
                            .context("a refresh gave no refresh token")?;
                        if phase.counting() {
                            latencies.push(micros(sent));
                            phase.done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let ended_early = tokio::select! {
        () = tokio::time::sleep(args.window.warmup) => false,
        () = exhausted.notified() => true,
    };
    if ended_early {
        bail!("the sessions ran out during the warm-up: raise --sessions");
    }
    let cpu = Cpu::start(args.server_pid, backends);
    let started = phase.open();
    let ended_early = tokio::select! {
        () = tokio::time::sleep(args.window.duration) => false,
        () = exhausted.notified() => true,
    };
    let measured = phase.close(started);
    let (server_cores, cpu) = cpu.stop(args.clk_tck)?;
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    if ended_early {
        eprintln!(
            "refresh: the sessions ran out after {:.1} s of the window; the rate is over that",
            measured.wall.as_secs_f64()
        );
    }
    let mut result = measured.result("refreshes")?;
    result["per_server_core"] = json!(round(measured.per_second() / server_cores, 1));
    result["sessions"] = json!(args.sessions);
    result["per_session"] = json!(args.per_session);
    result["concurrency"] = json!(args.concurrency);
    result["ended_early"] = json!(ended_early);
    merge(&mut result, percentiles(latencies));
    merge(&mut result, cpu);
    Ok(result)
}

/// The pids of the PostgreSQL backends connected to `url`'s database, this query's own
/// excepted: herd's pool, once the setup has opened its connections.
async fn postgres_backends(url: &str) -> anyhow::Result<Vec<u32>> {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    Ok(pids
        .into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .collect())
}
