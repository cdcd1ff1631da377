//! `herd lab`: gives each scenario of the lab a fresh, migrated store and replicas that
//! run this same executable, then prints the lab's table.

use std::path::PathBuf;

use anyhow::Context as _;
use herd_lab::lab::{BoxError, Environment, Scenario};
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
        let args = replica_args(
            &url,
            self.redis_url.as_deref(),
            scenario.sessions,
            // Tokens only need an issuer every replica agrees on.
            "http://herd-lab",
            &serve_flags,
        );
        Ok(ClusterConfig::new(self.program.clone(), args, 0))
    }

    async fn release(&mut self, _scenario: &Scenario) -> Result<(), BoxError> {
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
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_report(report: &herd_lab::lab::Report) {
    print!("{}", report.table());
    println!();
    println!("results: {}", report.results_path().display());
    println!("report:  {}", report.html_path().display());
}
