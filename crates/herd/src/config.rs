//! The command line: clap flags, each also read from a `HERD_*` variable, validated into
//! the settings the program runs with before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use herd_identity::{AuthConfig, HashParams, Rate, SessionTimeouts, Strategy, ThrottleConfig};
use herd_server::app::{check_replica_id, BusSettings, Schema};
use herd_server::chat::ChatLimits;
use herd_server::client::{Cidr, TrustedProxies};
use herd_server::cookies::CookiePolicy;
use herd_server::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "A backend whose replicas keep nothing a user needs on the next request."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: human-readable lines, or one JSON object a line.
    #[arg(long, global = true, env = "HERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one replica: accounts and stateless tokens over HTTP.
    Serve(Box<ServeArgs>),
    /// Inspect, rotate or revoke the signing keys every replica shares.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run N replicas on this machine behind a development balancer, with an admin
    /// API under /_cluster/ (loopback clients only unless --admin-public):
    ///   GET  /_cluster/replicas             the replicas, their state and requests served
    ///   POST /_cluster/replicas             add one
    ///   POST /_cluster/replicas/ID/kill     SIGKILL it (a crash)
    ///   POST /_cluster/replicas/ID/drain    stop routing to it, then SIGTERM it
    /// Every POST must carry the header X-Herd-Admin (any value), and the Host must be a
    /// loopback name, so that no web page can drive it (curl -H 'X-Herd-Admin: 1' ...).
    /// The balancer is for development and the lab, not for production: put nginx or a
    /// cloud balancer in front of `herd serve` replicas there.
    #[command(verbatim_doc_comment)]
    Cluster(Box<ClusterArgs>),
    /// Balance requests over `herd serve` replicas started elsewhere (other hosts),
    /// taking each out while its /readyz fails and back once it passes. The same
    /// balancer as `herd cluster`'s, for a lab spread over hosts; production puts nginx,
    /// a cloud balancer or a Kubernetes Service in front of the replicas.
    Balance(BalanceArgs),
    /// Measure the session designs side by side: for each of memory + round-robin,
    /// memory + sticky, shared + round-robin and token + round-robin, a fresh cluster
    /// and store, the same seeded workload of virtual users, one replica SIGKILLed
    /// and one added under load. Prints a table and writes results.json and
    /// report.html (charts, viewable offline) to --out. docs/lab.md explains the report.
    #[command(verbatim_doc_comment)]
    Lab(Box<LabArgs>),
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys with their state (pending, active, retiring, retired).
    List(IdentityArgs),
    /// Add a key that is published now and signs after --key-publish-delay; delete
    /// keys that have retired.
    Rotate(IdentityArgs),
    /// Withdraw a compromised key at once: delete it from the store, so every replica
    /// refuses the tokens it signed (reason unknown_key) at its next upkeep and drops it
    /// from JWKS. If it is the key signing now, first add a key that signs at once,
    /// ignoring --key-publish-delay: verifiers whose JWKS cache lacks the new key refuse
    /// its tokens until their cache expires, which beats accepting tokens signed with a
    /// leaked key. Sessions survive: clients refresh and get tokens from the new key.
    /// It joins the replicas' bus (the database's event log, or --redis-url) and
    /// returns once every live replica has confirmed dropping the key, or after
    /// --confirm-deadline, naming those that had not.
    Revoke {
        /// The id of the key to withdraw, as `herd keys list` shows it. A kid is
        /// base64url and may start with `-`: it is taken as the kid, not as a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        identity: IdentityArgs,
        /// The replicas' Redis bus, when they use one; else the database's event log.
        #[arg(long, env = "HERD_REDIS_URL")]
        redis_url: Option<String>,
        /// How long to wait for every live replica to confirm.
        #[arg(long, env = "HERD_CONFIRM_DEADLINE", default_value = "1s", value_parser = parse_duration)]
        confirm_deadline: Duration,
    },
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// The store: sqlite://PATH (a file, created when missing) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (a server every replica shares).
    #[arg(long, env = "HERD_DATABASE", default_value = "sqlite://herd.db")]
    pub database: String,
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The `iss` of every token; every replica must share it. Set it to the public URL
    /// clients reach herd at [default: `herd serve`'s own address, http://LISTEN;
    /// otherwise http://127.0.0.1:8080].
    #[arg(long, env = "HERD_ISSUER")]
    pub issuer: Option<String>,

    /// The `aud` of every token.
    #[arg(long, env = "HERD_AUDIENCE", default_value = "herd")]
    pub audience: String,

    /// Access-token lifetime (e.g. 300s, 5m).
    #[arg(long, env = "HERD_ACCESS_TTL", default_value = "5m", value_parser = parse_duration)]
    pub access_ttl: Duration,

    /// Clock skew tolerated when checking exp, nbf and iat; at most 30s.
    #[arg(long, env = "HERD_LEEWAY", default_value = "5s", value_parser = parse_duration)]
    pub leeway: Duration,

    /// Refresh-token lifetime; each refresh starts a new one.
    #[arg(long, env = "HERD_REFRESH_TTL", default_value = "14d", value_parser = parse_duration)]
    pub refresh_ttl: Duration,

    /// How long a spent refresh token still returns its successor (two tabs refreshing
    /// at once); presented later, it revokes the whole session.
    #[arg(long, env = "HERD_REFRESH_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub refresh_grace: Duration,

    /// How long a rotated-in key is published in JWKS before it signs.
    #[arg(long, env = "HERD_KEY_PUBLISH_DELAY", default_value = "60s", value_parser = parse_duration)]
    pub key_publish_delay: Duration,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HERD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This replica's id, sent in x-herd-replica and named in herd-unconfirmed; unique
    /// among the replicas sharing a store [default: HOSTNAME:PORT].
    #[arg(long, env = "HERD_REPLICA_ID")]
    pub replica_id: Option<String>,

    #[command(flatten)]
    pub identity: IdentityArgs,

    /// Apply pending migrations at start; with false, refuse to start on a schema
    /// that is behind.
    #[arg(long, env = "HERD_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// argon2id memory cost in KiB (OWASP: 19456). A password hashed under lower argon2id
    /// parameters than these three is rehashed with them at its next successful login.
    #[arg(long, env = "HERD_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
    pub argon2_memory_kib: u32,

    /// argon2id passes (OWASP: 2).
    #[arg(long, env = "HERD_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// argon2id lanes (OWASP: 1).
    #[arg(long, env = "HERD_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once [default: the number of cores].
    #[arg(long, env = "HERD_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Verified access tokens cached by this replica (derived state); 0 disables.
    #[arg(long, env = "HERD_TOKEN_CACHE", default_value_t = 100_000)]
    pub token_cache: usize,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "HERD_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Largest request head (request line and headers) accepted, in bytes; a request may
    /// carry as many headers as fit. Keep it above what the proxy in front forwards
    /// (nginx: 4 x 8k by default), or a client can make this replica fail the proxy's
    /// requests.
    #[arg(long, env = "HERD_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// How long a client has to send a request head once it started (and a body of at
    /// most --body-limit once its head arrived); a slower one is disconnected.
    #[arg(long, env = "HERD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A connection with no request in flight and no byte either way for this long is
    /// closed. Keep it longer than the keep-alive timeout of the proxy in front (nginx's
    /// upstream keepalive_timeout, 60s), so the proxy closes idle connections first.
    #[arg(long, env = "HERD_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How often to reload the key ring and read new revocations from the store.
    #[arg(long, env = "HERD_UPKEEP_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub upkeep_interval: Duration,

    /// After SIGTERM, how long to keep serving with /readyz failing before the listener
    /// closes, so that a balancer checking /readyz stops sending requests first (longer
    /// than its check interval). Under Kubernetes the preStop pause does this instead.
    #[arg(long, env = "HERD_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// How a caller is recognised. `token` (default): signed access tokens any replica
    /// verifies with no lookup. `shared`: session ids looked up in Redis (--redis-url) or
    /// else the SQL store, on every request. `memory`: session ids in this process's
    /// memory, for comparison only: it needs sticky routing, and every session dies
    /// with the process.
    #[arg(long, env = "HERD_SESSIONS", value_parser = sessions_parser(), default_value_t = Strategy::Token, verbatim_doc_comment)]
    pub sessions: Strategy,

    /// WebSocket connections this replica accepts at once; past it, upgrades get 503.
    #[arg(long, env = "HERD_WS_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub ws_max_connections: usize,

    /// WebSocket connections one user may hold on this replica; past it, 429.
    #[arg(long, env = "HERD_WS_MAX_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub ws_max_connections_per_user: usize,

    /// WebSocket connections still waiting for their auth frame, at once; a budget
    /// apart from --ws-max-connections.
    #[arg(long, env = "HERD_WS_MAX_UNAUTHENTICATED", default_value_t = 1_000)]
    pub ws_max_unauthenticated: usize,

    /// Largest WebSocket frame a client may send, in bytes; at least what the largest
    /// valid message takes once JSON-escaped (49024).
    #[arg(long, env = "HERD_WS_MAX_FRAME", default_value_t = 64 * 1024)]
    pub ws_max_frame: usize,

    /// Frames one WebSocket connection may send a second (twice that in a burst);
    /// past it the connection is closed with 1008.
    #[arg(long, env = "HERD_WS_FRAMES_PER_SECOND", default_value_t = 50)]
    pub ws_frames_per_second: u32,

    /// Rooms one WebSocket connection may follow at once.
    #[arg(long, env = "HERD_WS_MAX_SUBSCRIPTIONS", default_value_t = 32)]
    pub ws_max_subscriptions: usize,

    /// Messages one user may send a second, over WebSocket and HTTP together, per replica.
    #[arg(long, env = "HERD_WS_SENDS_PER_SECOND", default_value_t = 20)]
    pub ws_sends_per_second: u32,

    /// Frames queued for a slow WebSocket client before it is told to resume (4008).
    #[arg(long, env = "HERD_WS_QUEUE", default_value_t = 256)]
    pub ws_queue: usize,

    /// Bytes queued for a slow WebSocket client before it is told to resume (4008).
    #[arg(long, env = "HERD_WS_QUEUE_BYTES", default_value_t = 256 * 1024)]
    pub ws_queue_bytes: usize,

    /// How long one write to a WebSocket client may take before the client, which has
    /// stopped reading, is dropped.
    #[arg(long, env = "HERD_WS_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ws_write_timeout: Duration,

    /// Rooms one user may create a minute, per replica.
    #[arg(long, env = "HERD_ROOMS_PER_MINUTE", default_value_t = 10)]
    pub rooms_per_minute: u32,

    /// How replicas hear each other's news (revocations, key rotations) at once rather
    /// than at their next upkeep: `auto` is Redis when --redis-url is set, else the SQL
    /// tail; `sql` polls the shared database's event log; `in-process` reaches this
    /// replica only.
    #[arg(long, env = "HERD_BUS", value_enum, default_value_t = BusArg::Auto)]
    pub bus: BusArg,

    /// How long a logout (or another revocation) waits for every live replica to
    /// confirm that it refuses the session's tokens before answering anyway; the answer
    /// then names the replicas that had not confirmed (header herd-unconfirmed), and
    /// they refuse at their next upkeep.
    #[arg(long, env = "HERD_CONFIRM_DEADLINE", default_value = "1s", value_parser = parse_duration)]
    pub confirm_deadline: Duration,

    /// How often the SQL-tail bus polls the event log (e.g. 50ms).
    #[arg(long, env = "HERD_BUS_POLL_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub bus_poll_interval: Duration,

    /// Redis for `--sessions shared`, the bus and the login throttle's counts (e.g.
    /// redis://127.0.0.1:6379). When it fails, the throttle counts per replica for a
    /// few seconds rather than refuse logins.
    #[arg(long, env = "HERD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Command connections kept open to Redis. Each is multiplexed: every request's
    /// commands share it, written together while others wait, so one is usually best
    /// (measured: one carried 30-45 % more `shared` requests a second than four,
    /// docs/benchmarks.md).
    #[arg(long, env = "HERD_REDIS_POOL", default_value_t = 1)]
    pub redis_pool: usize,

    /// A `memory` or `shared` session ends after this long unused.
    #[arg(long, env = "HERD_SESSION_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// A `memory` or `shared` session ends this long after login, however used.
    #[arg(long, env = "HERD_SESSION_ABSOLUTE_TIMEOUT", default_value = "12h", value_parser = parse_duration)]
    pub session_absolute_timeout: Duration,

    /// A shared session's expiry is extended at most this often (a store write).
    #[arg(long, env = "HERD_SESSION_TOUCH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub session_touch_interval: Duration,

    /// Failed logins allowed per account from all addresses together, as N/PERIOD:
    /// N at once, then one more every PERIOD/N. The ceiling against guessing from many
    /// addresses; a browser holding the account's device cookie (given by a successful
    /// login) is not counted by it, so strangers cannot lock the owner out. `off`
    /// disables it. With --redis-url every replica shares the count; without it each
    /// replica counts on its own, so N replicas allow N times as many. Past it: 429
    /// with Retry-After.
    #[arg(long, env = "HERD_LOGIN_LIMIT_ACCOUNT", default_value = "100/15m", value_parser = parse_limit, value_name = "N/PERIOD|off", verbatim_doc_comment)]
    pub login_limit_account: LoginLimit,

    /// Failed logins allowed per account from one client address, and per device
    /// cookie, as N/PERIOD; a successful login from that address clears it. `off`
    /// disables it. Shared through --redis-url or per replica, like
    /// --login-limit-account.
    #[arg(long, env = "HERD_LOGIN_LIMIT_ACCOUNT_ADDRESS", default_value = "5/15m", value_parser = parse_limit, value_name = "N/PERIOD|off", verbatim_doc_comment)]
    pub login_limit_account_address: LoginLimit,

    /// Login attempts, failed or not, allowed per client address, as N/PERIOD (e.g.
    /// 100/1m); an IPv6 client counts by its /64. `off` disables it, as a load test
    /// logging in from one machine needs. Shared through --redis-url or per replica,
    /// like --login-limit-account.
    #[arg(long, env = "HERD_LOGIN_LIMIT_ADDRESS", default_value = "100/1m", value_parser = parse_limit, value_name = "N/PERIOD|off", verbatim_doc_comment)]
    pub login_limit_address: LoginLimit,

    /// Signups allowed per client address, as N/PERIOD, or `off`. Shared through
    /// --redis-url or per replica. Past it: 429 with Retry-After.
    #[arg(long, env = "HERD_SIGNUP_LIMIT_ADDRESS", default_value = "20/1h", value_parser = parse_limit, value_name = "N/PERIOD|off", verbatim_doc_comment)]
    pub signup_limit_address: LoginLimit,

    /// Refreshes allowed per login session (grace-window replays included), as
    /// N/PERIOD in whole seconds, or `off`; counted in the store, so every replica
    /// shares it. Past it: 429 with Retry-After.
    #[arg(long, env = "HERD_REFRESH_LIMIT_SESSION", default_value = "10/5m", value_parser = parse_limit, value_name = "N/PERIOD|off", verbatim_doc_comment)]
    pub refresh_limit_session: LoginLimit,

    /// A proxy or balancer whose X-Forwarded-For is believed: an address or CIDR block
    /// (repeat the flag, or separate with commas). For a request from one, the client is
    /// the rightmost X-Forwarded-For address that is not a trusted proxy; otherwise the
    /// client is the socket's peer and X-Forwarded-For is ignored.
    #[arg(long = "trusted-proxy", env = "HERD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr, value_name = "ADDR|CIDR", verbatim_doc_comment)]
    pub trusted_proxies: Vec<Cidr>,

    /// Set cookies without `Secure`, for a browser on plain-http localhost.
    #[arg(long, env = "HERD_INSECURE_COOKIES")]
    pub insecure_cookies: bool,

    /// An origin, besides the request's own host, allowed to send cookie-authenticated
    /// writes (repeat the flag, or separate with commas).
    #[arg(
        long = "allowed-origin",
        env = "HERD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Replicas to start (r1..rN); more can be added through the admin API.
    #[arg(long, env = "HERD_CLUSTER_REPLICAS", default_value_t = 3)]
    pub replicas: usize,

    /// Where the balancer listens; point a browser at it. Port 0 picks a free one.
    #[arg(long, env = "HERD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The store every replica shares: sqlite://PATH (one file, the bus tails it) or
    /// postgres://...
    #[arg(
        long,
        env = "HERD_DATABASE",
        default_value = "sqlite://herd-cluster.db"
    )]
    pub database: String,

    /// Redis for the bus and `--sessions shared`; without it the replicas hear each
    /// other through the database.
    #[arg(long, env = "HERD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The replicas' session strategy (see `herd serve --help`); `memory` needs --sticky.
    #[arg(long, env = "HERD_SESSIONS", value_parser = sessions_parser(), default_value_t = Strategy::Token)]
    pub sessions: Strategy,

    /// Pin each client to one replica with the herd_affinity cookie instead of
    /// round-robin.
    #[arg(long, env = "HERD_CLUSTER_STICKY")]
    pub sticky: bool,

    /// Restart a replica that dies, with the same id on a new port (drained ones stay
    /// down).
    #[arg(long, env = "HERD_CLUSTER_RESPAWN")]
    pub respawn: bool,

    /// Serve /_cluster/ to any client, not only loopback ones. It can kill processes.
    #[arg(long, env = "HERD_CLUSTER_ADMIN_PUBLIC")]
    pub admin_public: bool,

    /// Replicas that may run at once, those of --replicas included: POST
    /// /_cluster/replicas starts no more (409).
    #[arg(long, env = "HERD_CLUSTER_MAX_REPLICAS", default_value_t = herd_lab::DEFAULT_MAX_REPLICAS)]
    pub max_replicas: usize,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// More `herd serve` flags for every replica, after `--`
    /// (e.g. `-- --access-ttl 60s`).
    #[arg(last = true, value_name = "SERVE_FLAGS")]
    pub serve_flags: Vec<String>,
}

impl ClusterArgs {
    /// The cluster these flags describe, its balancer on `listen` (already bound), its
    /// replicas run by `program`.
    pub fn cluster_config(
        &self,
        program: std::path::PathBuf,
        listen: SocketAddr,
    ) -> anyhow::Result<herd_lab::ClusterConfig> {
        if self.replicas == 0 {
            bail!("--replicas must be at least 1");
        }
        if self.replicas > self.max_replicas {
            bail!(
                "--replicas {} is more than --max-replicas {}",
                self.replicas,
                self.max_replicas
            );
        }
        if self.sessions == Strategy::Memory && !self.sticky {
            tracing::warn!(
                "--sessions memory without --sticky: a request that lands on another replica is logged out"
            );
        }
        // One issuer for all, the address clients reach them at.
        let args = replica_args(
            &self.database,
            self.redis_url.as_deref(),
            self.sessions,
            &format!("http://{listen}"),
            &self.serve_flags,
        );
        let mut config = herd_lab::ClusterConfig::new(program, args, self.replicas);
        config.policy = if self.sticky {
            herd_lab::Policy::Sticky
        } else {
            herd_lab::Policy::RoundRobin
        };
        config.respawn = self.respawn;
        config.admin_public = self.admin_public;
        config.sessions = Some(self.sessions.to_string());
        config.max_replicas = self.max_replicas;
        config.edge = self.edge.limits()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct BalanceArgs {
    /// Where the balancer listens.
    #[arg(long, env = "HERD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A replica's address, HOST:PORT (repeat the flag, or separate with commas).
    #[arg(
        long = "upstream",
        env = "HERD_UPSTREAMS",
        value_delimiter = ',',
        required = true
    )]
    pub upstreams: Vec<SocketAddr>,

    /// How often each replica's /readyz is asked; a failed answer (or none within 1 s)
    /// takes it out of rotation until one passes.
    #[arg(long, env = "HERD_HEALTH_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// Pin each client to one replica with the herd_affinity cookie instead of
    /// round-robin.
    #[arg(long, env = "HERD_BALANCE_STICKY")]
    pub sticky: bool,

    /// Serve GET /_cluster/replicas (each replica's state) to any client, not only
    /// loopback ones.
    #[arg(long, env = "HERD_BALANCE_ADMIN_PUBLIC")]
    pub admin_public: bool,

    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// The development balancer's bounds (`herd cluster` and `herd balance`).
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Largest request head a client may send through the balancer, in bytes (as many
    /// headers as fit); below a replica's --max-header-bytes, so what passes, with
    /// X-Forwarded-* added, a replica accepts.
    #[arg(long = "balancer-max-header-bytes", env = "HERD_BALANCER_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// How long a client has to send a request head once it started (and a body the
    /// balancer buffers once the head arrived).
    #[arg(long = "balancer-header-read-timeout", env = "HERD_BALANCER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A client connection with no request in flight and no byte either way for this
    /// long is closed.
    #[arg(long = "balancer-idle-timeout", env = "HERD_BALANCER_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long one try waits for a replica's response head. A safe request (GET, HEAD)
    /// is then retried on another replica, and retried at once when its replica fails
    /// /readyz meanwhile (paused, dying); other requests get 504.
    #[arg(long, env = "HERD_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
}

impl EdgeArgs {
    pub fn limits(&self) -> anyhow::Result<herd_lab::EdgeLimits> {
        if self.max_header_bytes < 8192 {
            bail!("--balancer-max-header-bytes must be at least 8192 bytes");
        }
        for (flag, value) in [
            ("--balancer-header-read-timeout", self.header_read_timeout),
            ("--balancer-idle-timeout", self.idle_timeout),
            ("--upstream-timeout", self.upstream_timeout),
        ] {
            if value.is_zero() {
                bail!("{flag} must be more than 0s");
            }
        }
        Ok(herd_lab::EdgeLimits {
            max_header_bytes: self.max_header_bytes,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            upstream_timeout: self.upstream_timeout,
        })
    }
}

impl BalanceArgs {
    pub fn balance_config(&self) -> anyhow::Result<herd_lab::BalanceConfig> {
        if self.health_interval.is_zero() {
            bail!("--health-interval must be more than 0s");
        }
        let mut upstreams = self.upstreams.clone();
        upstreams.sort_unstable();
        if let Some(twice) = upstreams.windows(2).find(|w| w[0] == w[1]) {
            bail!("--upstream {} is given twice", twice[0]);
        }
        Ok(herd_lab::BalanceConfig {
            upstreams: self.upstreams.clone(),
            policy: if self.sticky {
                herd_lab::Policy::Sticky
            } else {
                herd_lab::Policy::RoundRobin
            },
            health_interval: self.health_interval,
            admin_public: self.admin_public,
            edge: self.edge.limits()?,
        })
    }
}

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Virtual users per scenario.
    #[arg(long, env = "HERD_LAB_USERS", default_value_t = 100)]
    pub users: usize,

    /// Mean think time between a user's requests (each is uniform in half to one and
    /// a half times it).
    #[arg(long, env = "HERD_LAB_THINK", default_value = "200ms", value_parser = parse_duration)]
    pub think: Duration,

    /// Seed of the users' random think times and request mix; the same in every
    /// scenario.
    #[arg(long, env = "HERD_LAB_SEED", default_value_t = 1)]
    pub seed: u64,

    /// End of the warm-up: throughput before the crash is measured from here.
    #[arg(long, env = "HERD_LAB_WARMUP", default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// When one replica is SIGKILLed (t1), once every user has been served.
    #[arg(long, env = "HERD_LAB_KILL_AT", default_value = "8s", value_parser = parse_duration)]
    pub kill_at: Duration,

    /// When a replica is added (t2).
    #[arg(long, env = "HERD_LAB_ADD_AT", default_value = "13s", value_parser = parse_duration)]
    pub add_at: Duration,

    /// When the users stop (t3).
    #[arg(long, env = "HERD_LAB_STOP_AT", default_value = "20s", value_parser = parse_duration)]
    pub stop_at: Duration,

    /// Replicas each scenario's cluster starts with.
    #[arg(long, env = "HERD_LAB_REPLICAS", default_value_t = 3)]
    pub replicas: usize,

    /// Chat rooms the users are spread over [default: one per 10 users].
    #[arg(long, env = "HERD_LAB_ROOMS")]
    pub rooms: Option<usize>,

    /// Run only these scenarios (repeat, or separate with commas): memory-rr,
    /// memory-sticky, shared-rr, token-rr.
    #[arg(long = "scenario", env = "HERD_LAB_SCENARIOS", value_delimiter = ',')]
    pub scenarios: Vec<String>,

    /// Where results.json, report.html and each scenario's replica log go.
    #[arg(long, env = "HERD_LAB_OUT", default_value = "lab-results")]
    pub out: std::path::PathBuf,

    /// The store: each scenario gets a fresh one. Without it, a new SQLite file in a
    /// temporary directory; with postgres://... (a server the lab may create databases
    /// on), a new database per scenario, dropped after it.
    // Not HERD_DATABASE: that names the one store of `serve` or `cluster`, often a
    // SQLite file, which the lab must not take as its server for throw-away databases.
    #[arg(long, env = "HERD_LAB_DATABASE")]
    pub database: Option<String>,

    /// Redis for the bus and the shared scenario's sessions; without it the replicas
    /// hear each other through the database and shared sessions live in it.
    #[arg(long, env = "HERD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Draw no progress bars (they are drawn only on a terminal anyway).
    #[arg(long, env = "HERD_LAB_NO_PROGRESS")]
    pub no_progress: bool,

    /// Inject these faults instead of the scenarios' kill and add, each in a run of its
    /// own (token sessions, round-robin), and check the invariants after each: kill,
    /// pause, drain, cut, redis-restart, postgres-kill, clock, or all. Each starts at
    /// --kill-at and ends at --add-at. The lab fails when an invariant breaks.
    #[arg(long, env = "HERD_LAB_CHAOS", value_delimiter = ',')]
    pub chaos: Vec<String>,

    /// Inject these faults one after another in one run, on one cluster and one store
    /// under the same users (the same names, or all; each at most once): the first at
    /// --kill-at for --add-at minus --kill-at, each next one after --stop-at minus
    /// --add-at of recovery. Checked per fault and for the whole run. With --chaos,
    /// runs after its faults.
    #[arg(long, env = "HERD_LAB_CHAOS_SEQUENCE", value_delimiter = ',')]
    pub chaos_sequence: Vec<String>,

    /// Test-only: break a chaos run on purpose (resume: subscribers do not resume;
    /// lost-ack: the checker is fed an acknowledgement the store never had).
    #[arg(long, hide = true)]
    pub chaos_break: Option<String>,

    /// libfaketime's library, for the clock fault [default: found in the usual places].
    #[arg(long, env = "HERD_LAB_FAKETIME")]
    pub faketime_lib: Option<std::path::PathBuf>,

    /// More `herd serve` flags for every replica, after `--`
    /// (e.g. `-- --argon2-memory-kib 64`).
    #[arg(last = true, value_name = "SERVE_FLAGS")]
    pub serve_flags: Vec<String>,
}

impl LabArgs {
    /// The lab these flags describe and its scenarios, or which flag is wrong and why.
    pub fn lab_config(
        &self,
    ) -> anyhow::Result<(herd_lab::lab::LabConfig, Vec<herd_lab::lab::Scenario>)> {
        use herd_lab::lab::{scenarios, LabConfig, Phases};
        if self.users == 0 {
            bail!("--users must be at least 1");
        }
        if self.think.is_zero() {
            bail!("--think must be more than 0");
        }
        if self.replicas < 2 {
            bail!("--replicas must be at least 2: the lab kills one");
        }
        if self.rooms == Some(0) {
            bail!("--rooms must be at least 1");
        }
        if let Some(url) = &self.database {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                bail!("--database must be postgres://... (without it each scenario gets a fresh SQLite file)");
            }
        }
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") {
                bail!("--redis-url must start with redis://");
            }
        }
        let phases = Phases {
            warmup: self.warmup,
            kill: self.kill_at,
            add: self.add_at,
            stop: self.stop_at,
        };
        phases
            .validate()
            .map_err(|e| anyhow::anyhow!("--warmup/--kill-at/--add-at/--stop-at: {e}"))?;
        let all = scenarios(self.redis_url.is_some());
        let chosen: Vec<_> = if self.scenarios.is_empty() {
            all
        } else {
            for name in &self.scenarios {
                if !all.iter().any(|s| &s.name == name) {
                    let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                    bail!("--scenario {name:?} is not one of {}", known.join(", "));
                }
            }
            all.into_iter()
                .filter(|s| self.scenarios.contains(&s.name))
                .collect()
        };
        let store = match (&self.database, &self.redis_url) {
            (Some(_), Some(_)) => {
                "PostgreSQL (a database per scenario), bus and shared sessions in Redis"
            }
            (Some(_), None) => "PostgreSQL (a database per scenario), bus over the database",
            (None, Some(_)) => "SQLite (a file per scenario), bus and shared sessions in Redis",
            (None, None) => "SQLite (a file per scenario), bus over the database",
        };
        let chaos = herd_lab::lab::Fault::parse_list(&self.chaos)
            .map_err(|e| anyhow::anyhow!("--chaos: {e}"))?;
        let chaos_sequence = herd_lab::lab::Fault::parse_list(&self.chaos_sequence)
            .map_err(|e| anyhow::anyhow!("--chaos-sequence: {e}"))?;
        if let Some(twice) = chaos_sequence
            .iter()
            .enumerate()
            .find(|(i, f)| chaos_sequence[..*i].contains(f))
        {
            bail!(
                "--chaos-sequence: {} is named twice; each fault runs at most once in a sequence",
                twice.1.as_str()
            );
        }
        let chaos_break = self
            .chaos_break
            .as_deref()
            .map(herd_lab::lab::Break::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--chaos-break: {e}"))?;
        let faketime = self.faketime_lib.clone().or_else(|| {
            [
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/faketime/libfaketime.so.1",
                "/usr/local/lib/faketime/libfaketime.so.1",
            ]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
        });
        let config = LabConfig {
            chaos,
            chaos_sequence,
            chaos_break,
            faketime,
            users: self.users,
            think: self.think,
            seed: self.seed,
            phases,
            replicas: self.replicas,
            rooms: self.rooms.unwrap_or(self.users.div_ceil(10)),
            out_dir: self.out.clone(),
            progress: !self.no_progress,
            setup_timeout: Duration::from_secs(120),
            store: store.to_owned(),
        };
        Ok((config, chosen))
    }
}

/// The `herd serve` arguments of a replica in a cluster: one database, one issuer and
/// one bus for all (`herd cluster` and `herd lab` alike).
pub fn replica_args(
    database: &str,
    redis_url: Option<&str>,
    sessions: Strategy,
    issuer: &str,
    serve_flags: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--log-format",
        "json",
        "serve",
        "--database",
        database,
        "--issuer",
        issuer,
        // The balancer speaks plain http on localhost.
        "--insecure-cookies",
        // ... and connects from it: believe its X-Forwarded-For, so logins are
        // throttled by the client's address, not all as the balancer's.
        "--trusted-proxy",
        "127.0.0.1,::1",
        "--sessions",
        sessions.as_str(),
    ]
    .map(str::to_owned)
    .to_vec();
    match redis_url {
        Some(url) => args.extend(["--bus", "redis", "--redis-url", url].map(str::to_owned)),
        None => args.extend(["--bus", "sql"].map(str::to_owned)),
    }
    args.extend(serve_flags.iter().cloned());
    args
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BusArg {
    Auto,
    InProcess,
    Sql,
    Redis,
}

/// `--sessions`: identity's strategies by name, `memory` labelled in `--help` as the
/// design kept only to be compared.
fn sessions_parser() -> impl clap::builder::TypedValueParser<Value = Strategy> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    PossibleValuesParser::new(Strategy::ALL.map(|strategy| {
        let value = PossibleValue::new(strategy.as_str());
        match strategy {
            Strategy::Memory => {
                value.help("Needs sticky routing; dies with its process. For comparison only")
            }
            Strategy::Token | Strategy::Shared => value,
        }
    }))
    .try_map(|name| name.parse::<Strategy>())
}

/// The issuer of commands that serve nothing themselves (`herd keys`): `herd serve`'s
/// default address.
const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";

impl IdentityArgs {
    /// The identity settings these flags describe, or which flag is wrong and why.
    pub fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let issuer = self.issuer.as_deref().unwrap_or(DEFAULT_ISSUER);
        let mut config = AuthConfig::new(issuer.to_owned(), self.audience.clone());
        if issuer.trim().is_empty() {
            bail!("--issuer must not be empty");
        }
        if self.audience.trim().is_empty() {
            bail!("--audience must not be empty");
        }
        config.access_ttl = whole_seconds("--access-ttl", self.access_ttl, 1)?;
        config.leeway = whole_seconds("--leeway", self.leeway, 0)?;
        if config.leeway > Duration::from_secs(30) {
            bail!(
                "--leeway must be at most 30s (got {}s): a longer one keeps expired tokens alive",
                config.leeway.as_secs()
            );
        }
        config.refresh_ttl = whole_seconds("--refresh-ttl", self.refresh_ttl, 1)?;
        config.refresh_grace = whole_seconds("--refresh-grace", self.refresh_grace, 0)?;
        if config.refresh_grace >= config.refresh_ttl {
            bail!("--refresh-grace must be shorter than --refresh-ttl");
        }
        config.key_publish_delay = whole_seconds("--key-publish-delay", self.key_publish_delay, 0)?;
        Ok(config)
    }
}

impl ServeArgs {
    pub fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let mut config = self.identity.auth_config()?;
        config.hash = HashParams {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        };
        config.hash.validate().map_err(|e| {
            anyhow::anyhow!("--argon2-memory-kib/--argon2-iterations/--argon2-parallelism: {e}")
        })?;
        if let Some(n) = self.hash_concurrency {
            if n == 0 {
                bail!("--hash-concurrency must be at least 1");
            }
            config.hash_concurrency = n;
        }
        config.cache_capacity = self.token_cache;
        config.throttle = ThrottleConfig {
            account: self.login_limit_account.0,
            account_address: self.login_limit_account_address.0,
            address: self.login_limit_address.0,
            signup: self.signup_limit_address.0,
            refresh: self.refresh_limit_session.0,
            ..ThrottleConfig::default()
        };
        config.strategy = self.sessions;
        if self.bus == BusArg::Redis && self.redis_url.is_none() {
            bail!("--bus redis needs --redis-url");
        }
        if self.bus_poll_interval.is_zero() {
            bail!("--bus-poll-interval must be more than 0");
        }
        if let Some(url) = &self.redis_url {
            // This build has no TLS for Redis: refuse rediss:// plainly rather than fail
            // at the first connection.
            if !url.starts_with("redis://") {
                bail!("--redis-url must start with redis:// (rediss:// is not supported by this build)");
            }
        }
        config.redis_url = self.redis_url.clone();
        if self.redis_pool == 0 {
            bail!("--redis-pool must be at least 1");
        }
        config.redis_pool = self.redis_pool;
        config.sessions = SessionTimeouts {
            idle: whole_seconds("--session-idle-timeout", self.session_idle_timeout, 1)?,
            absolute: whole_seconds(
                "--session-absolute-timeout",
                self.session_absolute_timeout,
                1,
            )?,
            touch_interval: whole_seconds(
                "--session-touch-interval",
                self.session_touch_interval,
                0,
            )?,
        };
        if config.sessions.touch_interval >= config.sessions.idle {
            bail!("--session-touch-interval must be shorter than --session-idle-timeout");
        }
        for origin in &self.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                bail!("--allowed-origin {origin:?} must be scheme://host[:port], like https://app.example");
            }
        }
        if self.body_limit < 1024 {
            bail!("--body-limit must be at least 1024 bytes");
        }
        if self.upkeep_interval.is_zero() {
            bail!("--upkeep-interval must be more than 0s");
        }
        if !config.key_publish_delay.is_zero()
            && self.upkeep_interval.as_secs() >= config.key_publish_delay.as_secs()
        {
            tracing::warn!(
                "--upkeep-interval is not shorter than --key-publish-delay: replicas may meet a new key's \
                 tokens before their periodic reload (they still reload on an unknown kid)"
            );
        }
        Ok(config)
    }
}

impl ServeArgs {
    /// Every flag of `herd serve` validated into the settings the replica runs with, or
    /// which flag is wrong and why. Nothing is opened before this has passed, so a bad
    /// flag leaves the database as it was.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let auth = self.auth_config()?;
        let chat = self.chat_limits()?;
        if let Some(id) = &self.replica_id {
            check_replica_id(id).map_err(|e| anyhow::anyhow!("--replica-id: {e}"))?;
        }
        let bus = match (self.bus, &self.redis_url) {
            (BusArg::Redis | BusArg::Auto, Some(url)) => BusSettings::Redis { url: url.clone() },
            (BusArg::InProcess, _) => BusSettings::InProcess,
            // `auto` without Redis, and `redis` without a URL (refused by auth_config).
            _ => BusSettings::Sql {
                poll_interval: self.bus_poll_interval,
            },
        };
        Ok(Settings {
            database: self.identity.database.database.clone(),
            schema: if self.migrate {
                Schema::Migrate
            } else {
                Schema::Check
            },
            listen: self.listen,
            replica_id: self.replica_id.clone(),
            auth,
            body_limit: self.body_limit,
            upkeep_interval: self.upkeep_interval,
            cookies: CookiePolicy {
                insecure: self.insecure_cookies,
                allowed_origins: self.allowed_origins.clone(),
            },
            chat,
            trusted_proxies: self.trusted_proxies(),
            bus,
            connections: self.connection_limits()?,
            issuer_follows_listen: self.identity.issuer.is_none(),
            drain_delay: self.drain_delay,
            confirm_deadline: self.confirm_deadline,
        })
    }

    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone())
    }

    pub fn connection_limits(&self) -> anyhow::Result<herd_server::ConnectionLimits> {
        if self.max_header_bytes < 8192 {
            bail!("--max-header-bytes must be at least 8192 bytes");
        }
        if self.header_read_timeout.is_zero() {
            bail!("--header-read-timeout must be more than 0s");
        }
        if self.idle_timeout.is_zero() {
            bail!("--idle-timeout must be more than 0s");
        }
        Ok(herd_server::ConnectionLimits {
            max_header_bytes: self.max_header_bytes,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        })
    }

    pub fn chat_limits(&self) -> anyhow::Result<ChatLimits> {
        for (flag, value) in [
            ("--ws-max-connections", self.ws_max_connections),
            (
                "--ws-max-connections-per-user",
                self.ws_max_connections_per_user,
            ),
            ("--ws-max-unauthenticated", self.ws_max_unauthenticated),
            ("--ws-max-subscriptions", self.ws_max_subscriptions),
            ("--ws-queue", self.ws_queue),
            ("--ws-queue-bytes", self.ws_queue_bytes),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        let min_frame = herd_server::chat::min_frame_bytes();
        if self.ws_max_frame < min_frame {
            bail!("--ws-max-frame must be at least {min_frame} bytes, what the largest valid message takes");
        }
        for (flag, value) in [
            ("--ws-sends-per-second", self.ws_sends_per_second),
            ("--ws-frames-per-second", self.ws_frames_per_second),
            ("--rooms-per-minute", self.rooms_per_minute),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        if self.ws_write_timeout.is_zero() {
            bail!("--ws-write-timeout must be more than 0");
        }
        Ok(ChatLimits {
            max_frame_bytes: self.ws_max_frame,
            max_subscriptions: self.ws_max_subscriptions,
            max_connections: self.ws_max_connections,
            max_connections_per_user: self.ws_max_connections_per_user,
            max_unauthenticated: self.ws_max_unauthenticated,
            sends_per_second: self.ws_sends_per_second,
            frames_per_second: self.ws_frames_per_second,
            rooms_per_minute: self.rooms_per_minute,
            outbound_queue: self.ws_queue,
            outbound_bytes: self.ws_queue_bytes,
            write_timeout: self.ws_write_timeout,
            ..ChatLimits::default()
        })
    }
}

/// A login limit: a rate, or `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit(pub Option<Rate>);

/// Parses `N/PERIOD` (`5/15m`, `100/1m`, `10/30s`) or `off`.
fn parse_limit(raw: &str) -> Result<LoginLimit, String> {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("off") {
        return Ok(LoginLimit(None));
    }
    let (attempts, period) = raw
        .split_once('/')
        .ok_or_else(|| format!("{raw:?} is not N/PERIOD (like 5/15m) or off"))?;
    let attempts: u32 = attempts
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?}: {attempts:?} is not a whole number of attempts"))?;
    let period = parse_duration(period)?;
    if period.subsec_nanos() != 0 {
        return Err(format!("{raw:?}: the period must be whole seconds"));
    }
    let period = i64::try_from(period.as_secs()).map_err(|_| format!("{raw:?} is too long"))?;
    Rate::new(attempts, period)
        .map(|rate| LoginLimit(Some(rate)))
        .map_err(|e| format!("{raw:?}: {e}"))
}

fn parse_cidr(raw: &str) -> Result<Cidr, String> {
    Cidr::parse(raw)
}

/// `d` when it is a whole number of seconds, at least `min`, that the clock's `i64`
/// seconds can hold.
fn whole_seconds(flag: &str, d: Duration, min: u64) -> anyhow::Result<Duration> {
    if d.subsec_nanos() != 0 {
        bail!("{flag} must be a whole number of seconds");
    }
    if d.as_secs() < min {
        bail!("{flag} must be at least {min}s");
    }
    i64::try_from(d.as_secs()).with_context(|| format!("{flag} is too long"))?;
    Ok(d)
}

/// Parses `90`, `90s`, `5m`, `2h`, `14d` (a bare number is seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{raw:?} is not a duration: write a whole number with s, m, h or d, like 30s or 5m")
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?} has an unknown unit: use s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_issues_tokens_as_the_address_it_listens_on() {
        let at = |a: &str| herd_server::app::issuer_at(a.parse().expect("addr"));
        assert_eq!(at("127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(at("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(at("[::]:9000"), "http://[::1]:9000");
        assert_eq!(at("192.168.1.5:80"), "http://192.168.1.5:80");
        let cli =
            Cli::try_parse_from(["herd", "serve", "--listen", "127.0.0.1:9000"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.identity.issuer, None,
            "no fixed default to shadow --listen"
        );
        let cli = Cli::try_parse_from(["herd", "serve", "--issuer", "https://auth.example"])
            .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.auth_config().expect("valid").issuer,
            "https://auth.example"
        );
    }

    /// bench/auth.sh holds logins against argon2id alone at `HashParams::default()`
    /// (crates/herd/examples/authbench.rs); the figure means "at the parameters herd
    /// ships" only while `herd serve`'s flags default to those very ones.
    #[test]
    fn serve_hashes_at_the_default_hash_params() {
        let cli = Cli::try_parse_from(["herd", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let config = args.auth_config().expect("valid");
        assert_eq!(config.hash, HashParams::default());
        assert_eq!(
            config.hash_concurrency,
            std::thread::available_parallelism().map_or(2, |n| n.get()),
            "one hashing slot per core, as authbench's argon2 mode assumes"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_long_leeway_is_refused_naming_the_flag() {
        let cli = Cli::try_parse_from(["herd", "serve", "--leeway", "60s"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let err = args.auth_config().expect_err("refused").to_string();
        assert!(err.contains("--leeway"), "{err}");
    }

    #[test]
    fn a_bad_duration_is_refused_by_clap() {
        let err =
            Cli::try_parse_from(["herd", "serve", "--access-ttl", "soon"]).expect_err("refused");
        assert!(err.to_string().contains("--access-ttl"), "{err}");
    }

    #[test]
    fn cluster_replicas_share_database_issuer_and_bus() {
        let cli = Cli::try_parse_from([
            "herd",
            "cluster",
            "--database",
            "sqlite://x.db",
            "--sticky",
            "--",
            "--access-ttl",
            "60s",
        ])
        .expect("parses");
        let Command::Cluster(args) = cli.command else {
            panic!("cluster")
        };
        let listen = "127.0.0.1:9000".parse().expect("addr");
        let config = args.cluster_config("herd".into(), listen).expect("valid");
        let joined = config.args.join(" ");
        assert!(
            joined.contains("serve --database sqlite://x.db"),
            "{joined}"
        );
        assert!(
            joined.contains("--issuer http://127.0.0.1:9000"),
            "{joined}"
        );
        assert!(joined.contains("--bus sql"), "{joined}");
        assert!(joined.contains("--trusted-proxy 127.0.0.1,::1"), "{joined}");
        assert!(joined.ends_with("--access-ttl 60s"), "{joined}");
        assert_eq!(config.policy, herd_lab::Policy::Sticky);
        assert_eq!(config.replicas, 3);
    }

    #[test]
    fn login_limits_parse_with_defaults_and_off() {
        let cli = Cli::try_parse_from(["herd", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = args.auth_config().expect("valid");
        assert_eq!(
            config.throttle.account_address.map(|r| r.to_string()),
            Some("5/900s".into())
        );
        assert_eq!(
            config.throttle.account.map(|r| r.to_string()),
            Some("100/900s".into()),
            "the ceiling over all addresses is far above one address's limit"
        );
        assert_eq!(
            config.throttle.signup.map(|r| r.to_string()),
            Some("20/3600s".into())
        );
        assert_eq!(
            config.throttle.refresh.map(|r| r.to_string()),
            Some("10/300s".into())
        );
        assert_eq!(
            config.throttle.address.map(|r| r.to_string()),
            Some("100/60s".into())
        );
        assert!(args.trusted_proxies.is_empty());

        let cli = Cli::try_parse_from([
            "herd",
            "serve",
            "--login-limit-account",
            "off",
            "--login-limit-address",
            "10/30s",
            "--trusted-proxy",
            "10.0.0.0/8,::1",
            "--trusted-proxy",
            "192.0.2.1",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let config = args.auth_config().expect("valid");
        assert_eq!(config.throttle.account, None);
        assert_eq!(
            config.throttle.address.map(|r| r.to_string()),
            Some("10/30s".into())
        );
        assert_eq!(args.trusted_proxies.len(), 3);
    }

    #[test]
    fn bad_login_limits_and_proxies_are_refused_naming_the_flag() {
        for (flag, value) in [
            ("--login-limit-account", "0/1m"),
            ("--login-limit-account", "5"),
            ("--login-limit-address", "5/0s"),
            ("--login-limit-address", "many/1m"),
            ("--login-limit-address", "5/400d"),
            ("--trusted-proxy", "10.0.0.0/40"),
            ("--trusted-proxy", "balancer.local"),
        ] {
            let err = Cli::try_parse_from(["herd", "serve", flag, value])
                .expect_err("refused")
                .to_string();
            assert!(err.contains(flag), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn serve_settings_name_the_bus_the_flags_choose() {
        let bus = |flags: &[&str]| {
            let cli = Cli::try_parse_from(["herd", "serve"].iter().chain(flags)).expect("parses");
            let Command::Serve(args) = cli.command else {
                panic!("serve")
            };
            args.settings().expect("valid").bus
        };
        let sql = BusSettings::Sql {
            poll_interval: Duration::from_millis(50),
        };
        let redis = BusSettings::Redis {
            url: "redis://cache:6379".into(),
        };
        assert_eq!(bus(&[]), sql);
        assert_eq!(bus(&["--redis-url", "redis://cache:6379"]), redis);
        assert_eq!(
            bus(&["--bus", "redis", "--redis-url", "redis://cache:6379"]),
            redis
        );
        assert_eq!(
            bus(&["--bus", "sql", "--redis-url", "redis://cache:6379"]),
            sql
        );
        assert_eq!(bus(&["--bus", "in-process"]), BusSettings::InProcess);
    }

    #[test]
    fn balance_needs_distinct_upstreams() {
        let err = Cli::try_parse_from(["herd", "balance"]).expect_err("refused");
        assert!(err.to_string().contains("--upstream"), "{err}");
        let cli = Cli::try_parse_from([
            "herd",
            "balance",
            "--upstream",
            "10.0.0.1:8080,10.0.0.2:8080",
            "--upstream",
            "10.0.0.1:8080",
        ])
        .expect("parses");
        let Command::Balance(args) = cli.command else {
            panic!("balance")
        };
        let err = args.balance_config().expect_err("refused").to_string();
        assert!(err.contains("10.0.0.1:8080 is given twice"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
