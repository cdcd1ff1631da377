//! `herd-notes --herd-url http://127.0.0.1:8080 --issuer http://127.0.0.1:8080`: the
//! notes example service on its own port.

use anyhow::Context as _;
use clap::Parser;
use herd_verify::{Config, Verifier};

#[derive(Debug, Parser)]
#[command(about = "An example service that accepts herd's access tokens offline")]
struct Args {
    /// herd's base URL (JWKS and revocation feed).
    #[arg(long, env = "NOTES_HERD_URL", default_value = "http://127.0.0.1:8080")]
    herd_url: String,
    /// The `iss` herd's tokens carry [default: the herd URL].
    #[arg(long, env = "NOTES_ISSUER")]
    issuer: Option<String>,
    /// The `aud` herd's tokens carry.
    #[arg(long, env = "NOTES_AUDIENCE", default_value = "herd")]
    audience: String,
    /// Where to listen.
    #[arg(long, env = "NOTES_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let issuer = args.issuer.unwrap_or_else(|| args.herd_url.clone());
    let mut config = Config::new(args.herd_url, issuer);
    config.expect.audience = args.audience;
    let verifier = Verifier::start(config);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "notes is serving");
    herd_notes::serve(listener, verifier)
        .await
        .context("serving")
}
