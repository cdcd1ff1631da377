//! The `herd` command: parse the configuration, build, run. Everything else lives in the
//! library crates.

mod config;
mod lab;
#[cfg(test)]
mod manifests;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use herd_bus::{Bus, DEFAULT_POLL_INTERVAL};
use herd_identity::{Auth, SystemClock};
use herd_server::app::{bind, open_store, Schema};
use herd_server::news::{self, Unconfirmed};
use herd_server::App;

use crate::config::{Cli, ClusterArgs, Command, KeysCommand, LogFormat};

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
        Command::Serve(args) => {
            let settings = args.settings()?;
            let app = App::build(settings).await?;
            Ok(app.run_until_stopped(shutdown_signal).await?)
        }
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
            let (store, _) = open_store(&identity.database.database, Schema::Migrate).await?;
            let auth = Auth::start(store, Arc::new(SystemClock), config)
                .await
                .context("loading the key ring")?;
            let keys = match command {
                KeysCommand::List(_) => auth.keys().await?,
                KeysCommand::Rotate(_) => auth
                    .rotate_keys()
                    .await
                    .context("rotating the signing keys")?,
                KeysCommand::Revoke {
                    kid,
                    redis_url,
                    confirm_deadline,
                    ..
                } => {
                    let bus = match &redis_url {
                        Some(url) => Bus::redis(url).await.context("connecting to --redis-url")?,
                        None => Bus::sql_tail(auth.store().clone(), DEFAULT_POLL_INTERVAL)
                            .await
                            .context("reading the database's event log")?,
                    };
                    // This command joins the bus as a short-lived member, learns who is
                    // live from their announcements (one heartbeat and a margin), then
                    // revokes through the one path every revocation takes.
                    let me = format!("herd-keys-{}", &herd_identity::random_id()[..8]);
                    let confirmations =
                        news::Confirmations::new(auth.clone(), bus, &me, confirm_deadline);
                    let mut tasks = tokio::task::JoinSet::new();
                    news::relay(confirmations.clone(), &mut tasks).await;
                    tokio::time::sleep(news::HEARTBEAT + Duration::from_millis(500)).await;
                    let (done, unconfirmed) =
                        confirmations.revoke_everywhere(auth.revoke_key(&kid)).await;
                    let done = done.context("revoking a signing key")?;
                    let _ = confirmations.announce(true).await;
                    tasks.shutdown().await;
                    print_revoked(&done, &confirmations.live_peers(), &unconfirmed);
                    done.keys
                }
            };
            print_keys(&keys);
            Ok(())
        }
        Command::Migrate { database } => {
            let (store, applied) = open_store(&database.database, Schema::Migrate).await?;
            store.close().await;
            tracing::info!(applied, "migrations are up to date");
            Ok(())
        }
    }
}

/// Runs `herd cluster`: migrates the shared store once, then the replicas (this same
/// executable, running `serve`) behind the balancer until SIGINT or SIGTERM.
async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let listener =
        bind(args.listen).with_context(|| format!("binding --listen {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let program = std::env::current_exe().context("finding the herd executable")?;
    let config = args.cluster_config(program, local)?;
    let (store, _) = open_store(&args.database, Schema::Migrate).await?;
    store.close().await;
    herd_lab::run(config, listener, shutdown_signal())
        .await
        .context("running the cluster")
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
fn print_revoked(done: &herd_identity::KeyRevoked, live: &[String], unconfirmed: &Unconfirmed) {
    if let Some(added) = &done.added {
        println!("added {added}: it signs now, in place of the revoked key");
    }
    if unconfirmed.is_empty() {
        println!(
            "revoked {}: every live replica ({}) refuses its tokens now; any other at its next upkeep",
            done.revoked,
            if live.is_empty() { "none heard".to_owned() } else { live.join(", ") }
        );
    } else {
        println!(
            "revoked {}: not confirmed by {unconfirmed}, which refuse its tokens at their next upkeep; the others now",
            done.revoked
        );
    }
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
