//! `herd lab`: the session designs side by side, measured on real clusters.
//!
//! Each [`Scenario`] gets a fresh cluster (the same [`Cluster`](crate::replicas) and
//! balancer `herd cluster` runs, in this process), a fresh store from the caller's
//! [`Environment`], and the same seeded workload. Its timeline: the users log in and
//! work through a warm-up; one replica is SIGKILLed; later a replica is added; then
//! the users stop. The report says, per scenario, what the users saw.
//!
//! Layout:
//! - `workload.rs`: the virtual users and the setup (accounts, rooms) before the clock.
//! - `metrics.rs`: what they saw, a second at a time, and the crash's facts.
//! - `timeline.rs`: one scenario from cluster start to stop, the events driven by what
//!   has happened (everyone served before the kill, the kill seen before the add).
//! - `report.rs`: the summary numbers, the terminal table, `results.json`.
//! - `charts.rs`: `report.html`, its charts drawn as inline SVG.

mod charts;
mod metrics;
mod report;
mod timeline;
mod workload;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use herd_identity::Strategy;
use serde::Serialize;

pub use report::{Report, ScenarioResult};

use crate::{ClusterConfig, LabError, Policy};

/// One design under test.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// A short name, also used for file names: `memory-rr`, `memory-sticky`, ...
    pub name: String,
    /// How its replicas recognise a caller (`herd serve --sessions`).
    pub sessions: Strategy,
    pub policy: Policy,
    /// Where sessions live, in words: "replica memory", "Redis", "SQL store", "none".
    pub session_store: String,
}

/// The four designs herd compares (memory sessions behind round-robin and behind sticky
/// routing, shared sessions, tokens), in the order the report shows them. `shared`
/// keeps its sessions in Redis when the lab has one, else in the SQL store.
pub fn scenarios(redis: bool) -> Vec<Scenario> {
    let scenario = |name: &str, sessions, policy, store: &str| Scenario {
        name: name.to_owned(),
        sessions,
        policy,
        session_store: store.to_owned(),
    };
    let shared = if redis { "Redis" } else { "SQL store" };
    vec![
        scenario(
            "memory-rr",
            Strategy::Memory,
            Policy::RoundRobin,
            "replica memory",
        ),
        scenario(
            "memory-sticky",
            Strategy::Memory,
            Policy::Sticky,
            "replica memory",
        ),
        scenario("shared-rr", Strategy::Shared, Policy::RoundRobin, shared),
        scenario(
            "token-rr",
            Strategy::Token,
            Policy::RoundRobin,
            "none (signed token)",
        ),
    ]
}

/// When things happen, from the moment the users start. Each event also waits for
/// what it depends on (see `timeline.rs`), keeping the gaps between events.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Phases {
    /// Throughput "before the crash" is measured from here to the kill.
    #[serde(serialize_with = "report::seconds")]
    pub warmup: Duration,
    /// SIGKILL one replica (t1).
    #[serde(serialize_with = "report::seconds")]
    pub kill: Duration,
    /// Add a replica (t2).
    #[serde(serialize_with = "report::seconds")]
    pub add: Duration,
    /// Stop the users (t3).
    #[serde(serialize_with = "report::seconds")]
    pub stop: Duration,
}

impl Phases {
    /// Refuses phases out of order, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.warmup > self.kill {
            return Err("the warm-up must end at or before the kill".into());
        }
        if self.kill.is_zero() {
            return Err("the kill must come after the users start (t1 > 0)".into());
        }
        if self.add <= self.kill {
            return Err("the add (t2) must come after the kill (t1)".into());
        }
        if self.stop <= self.add {
            return Err("the stop (t3) must come after the add (t2)".into());
        }
        Ok(())
    }
}

/// What every scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct LabConfig {
    /// Virtual users.
    pub users: usize,
    /// Mean think time between a user's requests.
    #[serde(serialize_with = "report::millis")]
    pub think: Duration,
    pub seed: u64,
    pub phases: Phases,
    /// Replicas each cluster starts with.
    pub replicas: usize,
    /// Chat rooms the users are spread over.
    pub rooms: usize,
    /// Where `results.json`, `report.html` and each scenario's replica log go.
    pub out_dir: PathBuf,
    /// Draw a progress bar per scenario (only ever on a terminal).
    #[serde(skip)]
    pub progress: bool,
    /// How long starting a cluster and signing the users up may take.
    #[serde(serialize_with = "report::seconds")]
    pub setup_timeout: Duration,
    /// The store and bus the replicas share, in words, for the report.
    pub store: String,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the caller provides per scenario: a cluster whose replicas share a store no
/// earlier scenario has touched (migrated, empty), and the clean-up after it.
pub trait Environment {
    /// The cluster for `scenario`: program and arguments (with its `--sessions`); the
    /// lab sets the replica count, the policy and the log file itself.
    fn prepare(
        &mut self,
        scenario: &Scenario,
    ) -> impl Future<Output = Result<ClusterConfig, BoxError>>;
    /// Called once the scenario's replicas have stopped, whether it succeeded or not.
    fn release(&mut self, scenario: &Scenario) -> impl Future<Output = Result<(), BoxError>>;
}

/// Runs every scenario in turn and writes the report into `config.out_dir`.
pub async fn run(
    config: LabConfig,
    scenarios: Vec<Scenario>,
    env: &mut impl Environment,
) -> Result<Report, LabError> {
    config.phases.validate().map_err(LabError::Config)?;
    if config.users == 0 || config.replicas < 2 || config.rooms == 0 {
        return Err(LabError::Config(
            "the lab needs at least one user, one room and two replicas (one is killed)".into(),
        ));
    }
    std::fs::create_dir_all(&config.out_dir)
        .map_err(|e| LabError::Output(config.out_dir.clone(), e))?;
    let bars = indicatif::MultiProgress::with_draw_target(if config.progress {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let mut results = Vec::with_capacity(scenarios.len());
    for scenario in &scenarios {
        let cluster = env
            .prepare(scenario)
            .await
            .map_err(|e| LabError::Environment(format!("preparing {}: {e}", scenario.name)))?;
        let bar = bars.add(timeline::bar(scenario, &config));
        let result = timeline::run(scenario, cluster, &config, &bar).await;
        match &result {
            Ok(r) => bar.finish_with_message(format!(
                "done: ok {}  re-logins {}  logged out by the crash {}  failed {}",
                r.requests_ok, r.forced_relogins, r.logged_out_by_crash, r.failed
            )),
            Err(_) => bar.abandon_with_message("failed"),
        }
        let released = env.release(scenario).await;
        let result = result?;
        released
            .map_err(|e| LabError::Environment(format!("cleaning up {}: {e}", scenario.name)))?;
        results.push(result);
    }
    let report = Report::new(config, results);
    report.write()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_out_of_order_are_refused() {
        let s = Duration::from_secs;
        let ok = Phases {
            warmup: s(3),
            kill: s(8),
            add: s(13),
            stop: s(20),
        };
        assert!(ok.validate().is_ok());
        let err = Phases { add: s(8), ..ok }.validate().expect_err("refused");
        assert!(err.contains("t2"), "{err}");
        assert!(Phases { warmup: s(9), ..ok }.validate().is_err());
        assert!(Phases { stop: s(13), ..ok }.validate().is_err());
    }

    #[test]
    fn the_four_designs_are_compared_and_shared_uses_redis_when_there_is_one() {
        let names: Vec<String> = scenarios(false).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["memory-rr", "memory-sticky", "shared-rr", "token-rr"]
        );
        assert_eq!(scenarios(true)[2].session_store, "Redis");
        assert_eq!(scenarios(false)[2].session_store, "SQL store");
    }
}
