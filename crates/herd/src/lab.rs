//! `herd lab`: gives each scenario of the lab a fresh, migrated store and replicas that
//! run this same executable, then prints the lab's table.

use std::path::PathBuf;

use anyhow::Context as _;
use herd_lab::lab::{Backend, BoxError, Environment, Fault, Scenario};
use herd_lab::ClusterConfig;
use herd_server::app::{open_store, Schema};

use crate::config::{replica_args, LabArgs};

/// Fresh stores for the scenarios: a SQLite file each in a temporary directory, or a
/// PostgreSQL database each, created before the scenario and dropped after it.
#[derive(Debug)]
struct Stores {
    program: PathBuf,
    postgres: Option<String>,
    redis_url: Option<String>,
    serve_flags: Vec<String>,
    scratch: tempfile::TempDir,
    /// The PostgreSQL database of the scenario running now.
    current: Option<String>,
    /// The scenario's database URL and Redis URL, as its replicas got them.
    urls: (Option<String>, Option<String>),
    /// A redis-server of the lab's own, for the redis-restart fault: the shared one is
    /// never restarted.
    own_redis: Option<OwnRedis>,
}

/// A redis-server the lab starts, kills and starts again on the same port.
#[derive(Debug)]
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> anyhow::Result<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for redis-server")?
            .port();
        let mut redis = OwnRedis { port, child: None };
        redis.run()?;
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let child = std::process::Command::new("redis-server")
            // Nothing kept on disk: a restarted server has lost everything, as a crashed
            // cache would have (herd_bus::testing starts its servers the same way).
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting redis-server (is it on PATH?)")?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        anyhow::bail!(
            "redis-server on port {} did not listen within 10 s",
            self.port
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `host:port` of a URL (`scheme://[user@]host:port/...`) and its address.
fn host_port(url: &str) -> Option<(String, std::net::SocketAddr)> {
    use std::net::ToSocketAddrs as _;
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let addr = host_port.to_socket_addrs().ok()?.next()?;
    Some((host_port.to_owned(), addr))
}

impl Stores {
    /// The database name for `scenario`: unique to this run, so two labs (or a test)
    /// on one server never share one.
    fn database_name(scenario: &Scenario) -> String {
        format!(
            "herd_lab_{}_{}",
            std::process::id(),
            scenario.name.replace('-', "_")
        )
    }
}

impl Environment for Stores {
    async fn prepare(&mut self, scenario: &Scenario) -> Result<ClusterConfig, BoxError> {
        self.own_redis = None;
        let restarts_redis = scenario.faults().contains(&Fault::RedisRestart);
        let redis_url = match (&self.redis_url, restarts_redis) {
            (Some(_), true) => {
                let own = OwnRedis::start()?;
                let url = own.url();
                self.own_redis = Some(own);
                Some(url)
            }
            (url, _) => url.clone(),
        };
        let url = match &self.postgres {
            Some(admin) => {
                let name = Self::database_name(scenario);
                let url = herd_store::create_postgres_database(admin, &name)
                    .await
                    .with_context(|| format!("creating the database {name}"))?;
                self.current = Some(name);
                url
            }
            None => format!(
                "sqlite://{}",
                self.scratch
                    .path()
                    .join(format!("{}.db", scenario.name))
                    .display()
            ),
        };
        // Migrated once here rather than by three replicas racing at start.
        let (store, _) = open_store(&url, Schema::Migrate).await?;
        store.close().await;
        // Every virtual user comes from this machine's one address, which login and
        // signup throttling would take for one client hammering them; the lab measures
        // the session designs, so those limits are off (flags after `--` can set them
        // again).
        let serve_flags: Vec<String> = [
            "--login-limit-address",
            "off",
            "--signup-limit-address",
            "off",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(self.serve_flags.iter().cloned())
        .collect();
        self.urls = (
            self.postgres.is_some().then(|| url.clone()),
            redis_url.clone(),
        );
        let args = replica_args(
            &url,
            redis_url.as_deref(),
            scenario.sessions,
            // Tokens only need an issuer every replica agrees on.
            "http://herd-lab",
            &serve_flags,
        );
        Ok(ClusterConfig::new(self.program.clone(), args, 0))
    }

    fn can_inject(&self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Cut | Fault::PostgresKill if self.postgres.is_none() => Err(format!(
                "cannot inject {}: the store is a SQLite file each replica opens itself, with \
                 no connection to {} (run with --database postgres://...)",
                fault.as_str(),
                if fault == Fault::Cut { "cut" } else { "end" }
            )),
            Fault::RedisRestart if self.redis_url.is_none() => Err(
                "cannot inject redis-restart: no Redis (--redis-url); the bus is a tail of the \
                 database"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }

    fn backends(&self) -> Vec<Backend> {
        let (database, redis) = &self.urls;
        [("PostgreSQL", database), ("Redis", redis)]
            .into_iter()
            .filter_map(|(name, url)| {
                let url = url.as_ref()?;
                let (host_port, addr) = host_port(url)?;
                Some(Backend {
                    name: name.to_owned(),
                    arg: url.clone(),
                    host_port,
                    addr,
                })
            })
            .collect()
    }

    async fn inject(&mut self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::RedisRestart => {
                let own = self
                    .own_redis
                    .as_mut()
                    .ok_or("no redis-server of the lab's own to restart")?;
                own.kill();
                Ok(())
            }
            Fault::PostgresKill => {
                use sqlx::Connection as _;
                let (Some(admin), Some(name)) = (&self.postgres, &self.current) else {
                    return Err("no PostgreSQL database of the scenario's own".to_owned());
                };
                let mut connection = sqlx::PgConnection::connect(admin)
                    .await
                    .map_err(|e| e.to_string())?;
                // The scenario's own database only: other people's are not touched.
                let ended: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(name)
                .fetch_all(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
                tracing::info!(database = %name, connections = ended.len(), "ended the database's connections");
                let _ = connection.close().await;
                Ok(())
            }
            other => Err(format!(
                "{} is not a fault of the shared backends",
                other.as_str()
            )),
        }
    }

    async fn heal(&mut self, fault: Fault) -> Result<(), String> {
        if fault == Fault::RedisRestart {
            if let Some(own) = self.own_redis.as_mut() {
                own.run().map_err(|e| format!("{e:#}"))?;
            }
        }
        Ok(())
    }

    async fn release(&mut self, _scenario: &Scenario) -> Result<(), BoxError> {
        self.own_redis = None;
        if let (Some(admin), Some(name)) = (&self.postgres, self.current.take()) {
            herd_store::drop_postgres_database(admin, &name)
                .await
                .with_context(|| format!("dropping the database {name}"))?;
        }
        Ok(())
    }
}

pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    let (config, scenarios) = args.lab_config()?;
    let mut stores = Stores {
        program: std::env::current_exe().context("finding the herd executable")?,
        postgres: args.database.clone(),
        redis_url: args.redis_url.clone(),
        serve_flags: args.serve_flags.clone(),
        scratch: tempfile::Builder::new()
            .prefix("herd-lab-")
            .tempdir()
            .context("creating a directory for the scenarios' SQLite files")?,
        current: None,
        urls: (None, None),
        own_redis: None,
    };
    let report = tokio::select! {
        report = herd_lab::lab::run(config, scenarios, &mut stores) => report,
        () = crate::shutdown_signal() => {
            // The scenario's replicas are killed as the runtime drops their tasks (they
            // are spawned with kill_on_drop); its database would outlive us.
            if let Some(scenario) = stores.current.clone() {
                if let Some(admin) = &stores.postgres {
                    let _ = herd_store::drop_postgres_database(admin, &scenario).await;
                }
            }
            anyhow::bail!("interrupted: no report written");
        }
    };
    let report = report.context("running the lab")?;
    print_report(&report);
    let broken = report.chaos_broken();
    if !broken.is_empty() {
        anyhow::bail!("invariants broken under --chaos:\n{}", broken.join("\n"));
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_report(report: &herd_lab::lab::Report) {
    if report.chaos.is_empty() && report.chaos_sequence.is_none() {
        print!("{}", report.table());
    } else {
        print!("{}", report.chaos_text());
    }
    println!();
    println!("results: {}", report.results_path().display());
    println!("report:  {}", report.html_path().display());
}
