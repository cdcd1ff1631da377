//! The `herd` command: parse the configuration, build, run. Everything else lives in the
//! library crates.

mod config;
mod lab;
#[cfg(test)]
mod manifests;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Parser as _;
use herd_bus::Bus;
use herd_identity::{Auth, SystemClock};
use herd_server::cookies::CookiePolicy;
use herd_server::{AppState, ServerConfig};
use herd_store::Store;
use tokio::net::TcpListener;

use crate::config::{BusArg, Cli, ClusterArgs, Command, KeysCommand, LogFormat, ServeArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The lab reports what happens in its results; its replicas' lines go to a log file
    // per scenario, and its own (a replica killed, a connection refused: the point of
    // the exercise) would only scroll the progress bars away.
    let default_filter = match cli.command {
        Command::Lab(_) => "error",
        _ => "info,sqlx=warn",
    };
    init_logging(cli.log_format, default_filter);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("herd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Cluster(args) => cluster(*args).await,
        Command::Balance(args) => {
            let config = args.balance_config()?;
            let listener =
                bind(args.listen).with_context(|| format!("binding --listen {}", args.listen))?;
            herd_lab::balance(config, listener, shutdown_signal())
                .await
                .context("running the balancer")
        }
        Command::Lab(args) => lab::run(*args).await,
        Command::Keys { command } => {
            let (KeysCommand::List(identity)
            | KeysCommand::Rotate(identity)
            | KeysCommand::Revoke { identity, .. }) = &command;
            let config = identity.auth_config()?;
            let store = open_store(&identity.database.database, true).await?;
            let auth = Auth::start(store, Arc::new(SystemClock), config)
                .await
                .context("loading the key ring")?;
            let keys = match command {
                KeysCommand::List(_) => auth.keys().await?,
                KeysCommand::Rotate(_) => auth
                    .rotate_keys()
                    .await
                    .context("rotating the signing keys")?,
                KeysCommand::Revoke { kid, .. } => {
                    let done = auth
                        .revoke_key(&kid)
                        .await
                        .context("revoking a signing key")?;
                    print_revoked(&done);
                    done.keys
                }
            };
            print_keys(&keys);
            Ok(())
        }
        Command::Migrate { database } => {
            let store = Store::open(&database.database)
                .await
                .with_context(|| format!("opening --database {}", database.database))?;
            let ran = store.migrate().await.context("applying migrations")?;
            tracing::info!(applied = ran, "migrations are up to date");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut auth_config = args.auth_config()?;
    let store = open_store(&args.identity.database.database, args.migrate).await?;
    let listener =
        bind(args.listen).with_context(|| format!("binding --listen {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    if args.identity.issuer.is_none() {
        auth_config.issuer = config::issuer_at(local);
        tracing::info!(
            issuer = %auth_config.issuer,
            "no --issuer: tokens name this replica's address; replicas that share a database must share one --issuer"
        );
    }
    let replica_id = args
        .replica_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", hostname(), local.port()));
    let auth = Auth::start(store.clone(), Arc::new(SystemClock), auth_config)
        .await
        .context("starting identity")?;
    let state = AppState::new(
        auth,
        ServerConfig {
            replica_id: replica_id.clone(),
            body_limit: args.body_limit,
            upkeep_interval: args.upkeep_interval,
            cookies: CookiePolicy {
                insecure: args.insecure_cookies,
                allowed_origins: args.allowed_origins.clone(),
            },
            chat: args.chat_limits()?,
            trusted_proxies: args.trusted_proxies(),
            connections: args.connection_limits()?,
        },
    )
    .map_err(|e| anyhow::anyhow!("--replica-id: {e}"))?
    .with_bus(bus(&args, &store).await?);
    tracing::info!(
        listen = %local,
        replica = %replica_id,
        sessions = state.auth.session_backend(),
        login_throttle = state.auth.throttle_backend(),
        "herd is serving"
    );
    let draining = state.clone();
    let drain_delay = args.drain_delay;
    let shutdown = async move {
        shutdown_signal().await;
        draining.start_draining();
        if !drain_delay.is_zero() {
            tracing::info!(
                ?drain_delay,
                "still serving while balancers take this replica out"
            );
            // A second signal stops the wait: an operator in a hurry.
            tokio::select! {
                () = tokio::time::sleep(drain_delay) => {},
                () = shutdown_signal() => {},
            }
        }
    };
    herd_server::serve(listener, state, shutdown)
        .await
        .context("serving")?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs `herd cluster`: migrates the shared store once, then the replicas (this same
/// executable, running `serve`) behind the balancer until SIGINT or SIGTERM.
async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let listener =
        bind(args.listen).with_context(|| format!("binding --listen {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let program = std::env::current_exe().context("finding the herd executable")?;
    let config = args.cluster_config(program, local)?;
    open_store(&args.database, true).await?.close().await;
    herd_lab::run(config, listener, shutdown_signal())
        .await
        .context("running the cluster")
}

/// The bus `--bus` names; `auto` is Redis when there is a Redis, else the SQL tail.
async fn bus(args: &ServeArgs, store: &Store) -> anyhow::Result<Bus> {
    let kind = match (args.bus, &args.redis_url) {
        (BusArg::Auto, Some(_)) => BusArg::Redis,
        (BusArg::Auto, None) => BusArg::Sql,
        (kind, _) => kind,
    };
    Ok(match (kind, &args.redis_url) {
        (BusArg::InProcess, _) => Bus::in_process(),
        (BusArg::Redis, Some(url)) => Bus::redis(url)
            .await
            .context("connecting the bus to --redis-url")?,
        _ => Bus::sql_tail(store.clone(), args.bus_poll_interval)
            .await
            .context("starting the SQL-tail bus")?,
    })
}

/// Binds `addr` with a listen backlog large enough for a reconnect storm: when a replica
/// dies its WebSocket clients all reconnect at once, and the default of 128 made the
/// excess wait a second for the kernel to retry (docs/benchmarks.md).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

pub(crate) async fn open_store(url: &str, migrate: bool) -> anyhow::Result<Store> {
    let store = Store::open(url)
        .await
        .with_context(|| format!("opening --database {url}"))?;
    if migrate {
        store.migrate().await.context("applying migrations")?;
    } else {
        let pending = store
            .pending_migrations()
            .await
            .context("reading the schema version")?;
        if pending > 0 {
            bail!("the database schema is {pending} migration(s) behind: run `herd migrate` first");
        }
    }
    Ok(store)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
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

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[allow(clippy::print_stdout)]
fn print_revoked(done: &herd_identity::KeyRevoked) {
    if let Some(added) = &done.added {
        println!("added {added}: it signs now, in place of the revoked key");
    }
    println!(
        "revoked {}: every replica refuses its tokens after its next upkeep",
        done.revoked
    );
    println!();
}

#[allow(clippy::print_stdout)]
fn print_keys(keys: &[herd_identity::KeyInfo]) {
    println!(
        "{:<44} {:<9} {:>12} {:>12}",
        "KID", "STATE", "SIGN_FROM", "RETIRE_AT"
    );
    for k in keys {
        let retire = k
            .retire_at
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        println!(
            "{:<44} {:<9} {:>12} {:>12}",
            k.kid, k.state, k.sign_from, retire
        );
    }
}
