//! herd's local cluster: N replicas as child processes on one machine, behind a
//! **development balancer**, with an admin API to add, kill and drain replicas.
//!
//! The lab knows nothing of handler internals. It starts whatever program it is given
//! (the `herd` binary, running `serve`), reads each child's bound address from its JSON
//! log line `"herd is serving"`, and from then on speaks only HTTP to it: `/readyz` for
//! health, and the client's requests, proxied.
//!
//! The balancer is for a laptop, not for production: it round-robins (or, with
//! [`Policy::Sticky`], pins a browser to a replica with the `herd_affinity` cookie) over
//! the replicas whose `/readyz` passed in the last half-second, retries once on another
//! replica a request that never reached one, and proxies WebSocket upgrades. Production
//! puts nginx or a cloud balancer in front of herd instead. [`balance`] runs the same
//! balancer in front of replicas started elsewhere (`herd balance --upstream ...`), for a
//! lab spread over hosts.
//!
//! Layout:
//! - `replicas.rs`: the replica table, child processes (spawn, log forwarding, exit,
//!   respawn), health checks and signals.
//! - `balancer.rs`: the hyper server, replica choice, retry, forwarding headers and
//!   WebSocket upgrades.
//! - `listen.rs`: the balancer's client connections and their bounds ([`EdgeLimits`]).
//! - `admin.rs`: `/_cluster/...`, loopback-only unless told otherwise.
//! - `problem.rs`: RFC 9457 problem+json answers the balancer gives itself.
//! - `lab/`: `herd lab`, the load generator that runs the session designs side by side
//!   on clusters like this one, kills and adds replicas under load, and reports.

mod admin;
mod balancer;
pub mod lab;
mod listen;
mod problem;
mod replicas;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use admin::ADMIN_HEADER;
pub use listen::EdgeLimits;
pub use replicas::{Ended, ReplicaView, State, TRAFFIC_SECONDS};

/// How the balancer picks a replica for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Each request to the next healthy replica in turn.
    RoundRobin,
    /// A client keeps the replica named by its `herd_affinity` cookie while that replica
    /// is healthy; the balancer sets the cookie when it is absent or names a replica that
    /// is gone.
    Sticky,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::Sticky => "sticky",
        }
    }
}

/// What the cluster runs and how.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The replica program (the `herd` executable).
    pub program: PathBuf,
    /// Arguments every replica gets; the lab appends `--listen 127.0.0.1:0` and
    /// `--replica-id rN`. They must make the child log, as JSON on stderr, a line whose
    /// message is `herd is serving` with a `listen` field.
    pub args: Vec<String>,
    /// Replicas started at once (r1..rN).
    pub replicas: usize,
    pub policy: Policy,
    /// Restart a replica that dies (with the same id, on a new port), unless it was
    /// drained.
    pub respawn: bool,
    /// Serve `/_cluster/` to any client, not only loopback ones.
    pub admin_public: bool,
    /// How often each replica's `/readyz` is asked.
    pub health_interval: Duration,
    /// How long replicas get to stop after SIGTERM before they are killed.
    pub stop_timeout: Duration,
    /// Where the replicas' log lines go, prefixed with their id: this file (appended
    /// to) when set, else our stderr.
    pub replica_log: Option<PathBuf>,
    /// Environment variables every replica gets on top of ours.
    pub env: Vec<(String, String)>,
    /// The session strategy the replicas run (`token`, `shared`, `memory`), shown by
    /// the admin API so that the page can say what a crash will do; the lab passes it
    /// on and knows nothing of what it means.
    pub sessions: Option<String>,
    /// The balancer's bounds on client connections and on its waits on replicas.
    pub edge: EdgeLimits,
    /// Replicas that may run at once, counting those started with the cluster: the
    /// admin API's `POST /_cluster/replicas` starts no more.
    pub max_replicas: usize,
    /// Replicas started differently from the others (the lab's chaos faults: one
    /// replica reaching the store through a proxy it can cut, or with its clock moved).
    pub overrides: Vec<ReplicaOverride>,
}

/// How one replica, named by its id, differs from the others.
#[derive(Debug, Clone, Default)]
pub struct ReplicaOverride {
    pub id: String,
    /// Arguments equal to the first of a pair are replaced by the second.
    pub replace_args: Vec<(String, String)>,
    /// Environment variables on top of the cluster's.
    pub env: Vec<(String, String)>,
}

impl ClusterConfig {
    pub fn new(program: PathBuf, args: Vec<String>, replicas: usize) -> ClusterConfig {
        ClusterConfig {
            program,
            args,
            replicas,
            policy: Policy::RoundRobin,
            respawn: false,
            admin_public: false,
            health_interval: Duration::from_millis(500),
            stop_timeout: Duration::from_secs(10),
            replica_log: None,
            env: Vec::new(),
            sessions: None,
            edge: EdgeLimits::default(),
            max_replicas: DEFAULT_MAX_REPLICAS,
            overrides: Vec::new(),
        }
    }
}

/// Replicas a cluster runs at most unless told otherwise: a laptop's worth.
pub const DEFAULT_MAX_REPLICAS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("starting replica {id} ({program}): {source}")]
    Spawn {
        id: String,
        program: String,
        source: std::io::Error,
    },
    #[error("reading the balancer's address: {0}")]
    Listener(std::io::Error),
    #[error("opening the replica log {0}: {1}")]
    ReplicaLog(PathBuf, std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("setting up the scenario: {0}")]
    Setup(String),
    #[error("running the scenario: {0}")]
    Timeline(String),
    #[error("{0}")]
    Environment(String),
    #[error("writing {0}: {1}")]
    Output(PathBuf, std::io::Error),
    #[error("this balancer proxies to replicas started elsewhere (--upstream); it starts none")]
    FixedUpstreams,
    #[error("every replica exited before it was ready, so nothing would ever answer; {0}")]
    StartFailed(String),
    #[error("the cluster runs at most {0} replicas (--max-replicas); kill or drain one first")]
    TooManyReplicas(usize),
}

/// `herd balance`: the balancer alone, in front of replicas started elsewhere.
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// The replicas' addresses; each is an id in `/_cluster/replicas`.
    pub upstreams: Vec<std::net::SocketAddr>,
    pub policy: Policy,
    /// How often each replica's `/readyz` is asked.
    pub health_interval: Duration,
    /// Serve `/_cluster/replicas` to any client, not only loopback ones.
    pub admin_public: bool,
    /// The balancer's bounds on client connections and on its waits on replicas.
    pub edge: EdgeLimits,
}

/// Balances `listener`'s connections over replicas that run elsewhere (other hosts,
/// other network namespaces) until `shutdown` resolves: the same proxying, retry and
/// active `/readyz` checks as [`run`], with no process of its own to start or stop.
pub async fn balance(
    config: BalanceConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LabError> {
    let local = listener.local_addr().map_err(LabError::Listener)?;
    let mut cluster = ClusterConfig::new(PathBuf::new(), Vec::new(), 0);
    cluster.policy = config.policy;
    cluster.health_interval = config.health_interval;
    cluster.admin_public = config.admin_public;
    cluster.edge = config.edge;
    let cluster = replicas::Cluster::fixed(cluster, &config.upstreams)?;
    tracing::info!(
        listen = %local,
        upstreams = config.upstreams.len(),
        policy = config.policy.as_str(),
        "balancer is serving"
    );
    balancer::serve(cluster, listener, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the cluster until `shutdown` resolves: starts the replicas, balances `listener`'s
/// connections over them, then stops every replica (SIGTERM, then SIGKILL after
/// `stop_timeout`). Fails with [`LabError::StartFailed`] when every replica exits before
/// it is ever ready (the rule is `Cluster::failed_at_start`'s).
pub async fn run(
    config: ClusterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LabError> {
    let local = listener.local_addr().map_err(LabError::Listener)?;
    let count = config.replicas;
    let cluster = Arc::new(replicas::Cluster::new(config)?);
    let started = (0..count).try_for_each(|_| cluster.add().map(drop));
    if let Err(e) = started {
        cluster.stop_all().await;
        return Err(e);
    }
    tokio::pin!(shutdown);
    let serving = async {
        // The balancer sends nothing to a replica whose /readyz has not passed, and on a
        // shared bus a replica is not ready until it has compared its clock with its
        // peers' (up to 1.5 s): accept, and say so, once one is, so that the first page
        // load is served rather than answered 503.
        tokio::select! {
            () = cluster.first_up() => {}
            () = &mut shutdown => return,
        }
        tracing::info!(
            listen = %local,
            open = %format!("http://{local}/"),
            replicas = count,
            policy = cluster.config.policy.as_str(),
            "cluster is serving"
        );
        balancer::serve(cluster.clone(), listener, shutdown.as_mut()).await;
    };
    let failed = tokio::select! {
        () = serving => None,
        failure = cluster.failed_at_start() => Some(failure),
    };
    tracing::info!("stopping the replicas");
    cluster.stop_all().await;
    if let Some(failure) = failed {
        return Err(LabError::StartFailed(failure));
    }
    tracing::info!("stopped");
    Ok(())
}
