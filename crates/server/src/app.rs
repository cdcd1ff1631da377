//! One way to start a replica: [`App::build`] opens the store (migrating it, or checking
//! that its schema is current), starts identity and the bus, builds the [`AppState`] and
//! binds the listener; [`App::run_until_stopped`] serves until told to stop, drains, and
//! closes the store. The `herd` binary and the test harness both go through here, so the
//! tests run the production wiring.
//!
//! [`Settings`] is what a replica runs with, already validated: the binary validates
//! every flag into it before anything here opens the store. The harness changes what a
//! test needs through [`AppBuilder`]: a clock it can move, a bus shared by the replicas
//! of one test.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use herd_bus::{Bus, BusError};
use herd_identity::{Auth, AuthConfig, AuthError, Clock, SystemClock};
use herd_store::{Store, StoreError};
use tokio::net::TcpListener;

use crate::chat::ChatLimits;
use crate::client::TrustedProxies;
use crate::cookies::CookiePolicy;
use crate::{AppState, ConnectionLimits, ServerConfig};

/// The target of a replica's life-cycle lines (serving, draining, stopped): the binary's,
/// as before start-up moved here. The line announcing the port is how `herd cluster` and
/// `herd lab` find a replica, and the lab keeps target `herd` at info while it quiets
/// `herd_server` to warnings.
const LOG_TARGET: &str = "herd";

/// Everything a replica runs with, each value already valid.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://PATH` or `postgres://...`.
    pub database: String,
    /// Whether start-up applies pending migrations, or refuses a schema that is behind.
    pub schema: Schema,
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Sent in `x-herd-replica`; `None` for `HOSTNAME:PORT`, with the port bound. A
    /// given id has passed [`check_replica_id`].
    pub replica_id: Option<String>,
    pub auth: AuthConfig,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How often the key ring is reloaded and the revocation log tailed.
    pub upkeep_interval: Duration,
    pub cookies: CookiePolicy,
    pub chat: ChatLimits,
    pub trusted_proxies: TrustedProxies,
    pub bus: BusSettings,
    /// Header size, header-read and idle bounds on the replica's connections.
    pub connections: ConnectionLimits,
    /// No `--issuer` was given: tokens and the discovery document name the address
    /// the replica is bound to ([`issuer_at`]), known only once it is bound.
    pub issuer_follows_listen: bool,
    /// After the stop signal, how long `/readyz` fails while every other request is
    /// still served, before the listener closes.
    pub drain_delay: Duration,
    /// How long a revocation (logout, refresh-token reuse, ...) waits for every live
    /// replica to confirm it before answering anyway, naming those that did not.
    pub confirm_deadline: Duration,
}

/// What start-up does with the store's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations.
    Migrate,
    /// Refuse to start on a schema that is behind (replicas under an orchestrator that
    /// migrates once, from a job).
    Check,
}

/// How a replica hears the others' news (chat messages, revocations, key rotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusSettings {
    /// This replica only.
    InProcess,
    /// The shared database's event log, polled this often.
    Sql { poll_interval: Duration },
    /// Redis pub/sub at this URL.
    Redis { url: String },
}

/// Why a replica did not start or stopped with an error. The messages name the flag or
/// the step, as an operator reads them.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `url` has its password replaced by `***` ([`without_password`]): this message
    /// reaches stderr and the error log.
    #[error("opening --database {url}")]
    Open {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("applying migrations")]
    Migrate(#[source] StoreError),
    #[error("reading the schema version")]
    SchemaVersion(#[source] StoreError),
    #[error("the database schema is {pending} migration(s) behind: run `herd migrate` first")]
    SchemaBehind { pending: usize },
    #[error("binding --listen {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the bound address")]
    LocalAddr(#[source] std::io::Error),
    #[error("starting identity")]
    Identity(#[source] AuthError),
    #[error("--replica-id: {0}")]
    ReplicaId(String),
    #[error("connecting the bus to --redis-url")]
    RedisBus(#[source] BusError),
    #[error("starting the SQL-tail bus")]
    SqlBus(#[source] BusError),
    #[error("serving")]
    Serve(#[source] std::io::Error),
}

/// `url` with the password of its user info, if any, replaced by `***`, so that a
/// database URL can be named in an error or a log line.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_owned(),
    }
}

/// The issuer a replica publishes when `--issuer` is not given: the address it
/// listens on, as `herd cluster` does for its balancer, so that the discovery
/// document's `jwks_uri` points where something answers. An unspecified address
/// (0.0.0.0) is named by loopback, which answers on this host at least.
pub fn issuer_at(listening: SocketAddr) -> String {
    let mut reachable = listening;
    if reachable.ip().is_unspecified() {
        reachable.set_ip(match reachable {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{reachable}")
}

/// Opens the store at `url` and applies pending migrations or checks that there are
/// none, as `schema` says; also how many migrations it applied. `herd serve`, `keys`,
/// `migrate`, `cluster` and `lab` all open their store this way.
pub async fn open_store(url: &str, schema: Schema) -> Result<(Store, usize), StartError> {
    let store = Store::open(url).await.map_err(|source| StartError::Open {
        url: without_password(url),
        source,
    })?;
    let applied = match schema {
        Schema::Migrate => store.migrate().await.map_err(StartError::Migrate)?,
        Schema::Check => {
            let pending = store
                .pending_migrations()
                .await
                .map_err(StartError::SchemaVersion)?;
            if pending > 0 {
                return Err(StartError::SchemaBehind { pending });
            }
            0
        }
    };
    Ok((store, applied))
}

/// Whether `id` can be a replica id: it is sent as a header value.
pub fn check_replica_id(id: &str) -> Result<(), String> {
    HeaderValue::from_str(id)
        .map(drop)
        .map_err(|_| format!("replica id {id:?} is not a valid header value"))
}

/// A replica ready to serve: store open, identity started, listener bound.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local: SocketAddr,
    state: AppState,
    store: Store,
    drain_delay: Duration,
}

/// [`App::build`] with the parts a test replaces.
#[derive(Debug)]
pub struct AppBuilder {
    settings: Settings,
    clock: Arc<dyn Clock>,
    bus: Option<Bus>,
}

impl AppBuilder {
    /// Identity's clock, instead of the system's (a `ManualClock` in tests of expiry).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> AppBuilder {
        self.clock = clock;
        self
    }

    /// A bus already running, instead of the one `settings.bus` names (one in-process
    /// bus shared by the replicas of a test, as if they were one process).
    pub fn bus(mut self, bus: Bus) -> AppBuilder {
        self.bus = Some(bus);
        self
    }

    /// Opens the store, starts identity and the bus, binds the listener.
    pub async fn build(self) -> Result<App, StartError> {
        let AppBuilder {
            settings,
            clock,
            bus,
        } = self;
        let (store, _) = open_store(&settings.database, settings.schema).await?;
        let listener = bind(settings.listen).map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        let local = listener.local_addr().map_err(StartError::LocalAddr)?;
        let mut auth_config = settings.auth;
        if settings.issuer_follows_listen {
            auth_config.issuer = issuer_at(local);
            tracing::info!(
                target: LOG_TARGET,
                issuer = %auth_config.issuer,
                "no --issuer: tokens name this replica's address; replicas that share a database must share one --issuer"
            );
        }
        let replica_id = settings
            .replica_id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), local.port()));
        let auth = Auth::start(store.clone(), clock, auth_config)
            .await
            .map_err(StartError::Identity)?;
        let bus = match bus {
            Some(bus) => bus,
            None => start_bus(&settings.bus, &store).await?,
        };
        let state = AppState::new(
            auth,
            ServerConfig {
                replica_id,
                body_limit: settings.body_limit,
                upkeep_interval: settings.upkeep_interval,
                cookies: settings.cookies,
                chat: settings.chat,
                trusted_proxies: settings.trusted_proxies,
                connections: settings.connections,
                confirm_deadline: settings.confirm_deadline,
            },
        )
        .map_err(StartError::ReplicaId)?
        .with_bus(bus);
        Ok(App {
            listener,
            local,
            state,
            store,
            drain_delay: settings.drain_delay,
        })
    }
}

impl App {
    /// A replica with the system clock and the bus `settings` names.
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        App::builder(settings).build().await
    }

    pub fn builder(settings: Settings) -> AppBuilder {
        AppBuilder {
            settings,
            clock: Arc::new(SystemClock),
            bus: None,
        }
    }

    /// The address the listener is bound to (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal()` resolves, then drains: `/readyz` fails for the drain
    /// delay while every other request is still served, cut short when `signal()`
    /// resolves a second time (an operator in a hurry). Then the listener closes, the
    /// requests in flight finish, and the store is closed.
    pub async fn run_until_stopped<F>(
        self,
        mut signal: impl FnMut() -> F + Send + 'static,
    ) -> Result<(), StartError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let App {
            listener,
            local,
            state,
            store,
            drain_delay,
        } = self;
        tracing::info!(
            target: LOG_TARGET,
            listen = %local,
            replica = %state.replica,
            sessions = state.auth.session_backend(),
            login_throttle = state.auth.throttle_backend(),
            "herd is serving"
        );
        let draining = state.clone();
        let shutdown = async move {
            signal().await;
            draining.start_draining();
            if !drain_delay.is_zero() {
                tracing::info!(
                    target: LOG_TARGET,
                    ?drain_delay,
                    "still serving while balancers take this replica out"
                );
                tokio::select! {
                    () = tokio::time::sleep(drain_delay) => {},
                    () = signal() => {},
                }
            }
        };
        crate::serve(listener, state, shutdown)
            .await
            .map_err(StartError::Serve)?;
        store.close().await;
        tracing::info!(target: LOG_TARGET, "stopped");
        Ok(())
    }
}

/// Starts the bus `settings` names.
async fn start_bus(settings: &BusSettings, store: &Store) -> Result<Bus, StartError> {
    Ok(match settings {
        BusSettings::InProcess => Bus::in_process(),
        BusSettings::Sql { poll_interval } => Bus::sql_tail(store.clone(), *poll_interval)
            .await
            .map_err(StartError::SqlBus)?,
        BusSettings::Redis { url } => Bus::redis(url).await.map_err(StartError::RedisBus)?,
    })
}

/// Binds `addr` with a listen backlog large enough for a reconnect storm: when a replica
/// dies its WebSocket clients all reconnect at once, and the default of 128 made the
/// excess wait a second for the kernel to retry (docs/benchmarks.md). The balancers of
/// `herd cluster` and `herd balance` bind the same way.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_database_url_is_named_without_its_password() {
        assert_eq!(
            without_password("postgres://herd:s3cr3t@db:5432/herd?sslmode=require"),
            "postgres://herd:***@db:5432/herd?sslmode=require"
        );
        assert_eq!(
            without_password("redis://:hunter2@cache:6379"),
            "redis://:***@cache:6379"
        );
        assert_eq!(
            without_password("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(without_password("sqlite://herd.db"), "sqlite://herd.db");
    }
}
