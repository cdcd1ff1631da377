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
//! - `chaos.rs`: `--chaos`: the faults, the lab's cuttable proxy, the revoker and the
//!   invariants checked after each fault.
//! - `subscribers.rs`: the chaos runs' WebSocket subscribers, which resume after every
//!   reconnection.

mod chaos;
mod charts;
mod metrics;
mod report;
mod subscribers;
mod timeline;
mod workload;

pub use chaos::{Break, ChaosResult, Cost, Fault, Invariant, SequenceResult};

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
    /// Under `--chaos`: the fault this run injects instead of the kill and the add.
    pub fault: Option<Fault>,
    /// Under `--chaos-sequence`: the faults this run injects one after another.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sequence: Vec<Fault>,
}

impl Scenario {
    /// The faults this run injects, in order (none for the designs' kill and add).
    pub fn faults(&self) -> Vec<Fault> {
        self.fault
            .into_iter()
            .chain(self.sequence.clone())
            .collect()
    }
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
        fault: None,
        sequence: Vec::new(),
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
    /// `--chaos`: the faults to inject, each in a run of its own (token sessions,
    /// round-robin) instead of the scenarios' kill and add.
    pub chaos: Vec<Fault>,
    /// `--chaos-sequence`: faults to inject one after another in one run, on one
    /// cluster and one store, each in its own window.
    pub chaos_sequence: Vec<Fault>,
    /// Test-only: break the run on purpose to show the checker failing.
    pub chaos_break: Option<Break>,
    /// libfaketime's library, for the clock fault.
    pub faketime: Option<PathBuf>,
}

/// The chaos run of `fault`: token sessions behind round-robin, the design that claims
/// to lose nothing.
pub fn chaos_scenario(fault: Fault, redis: bool) -> Scenario {
    let mut scenario = scenarios(redis)
        .into_iter()
        .find(|s| s.sessions == Strategy::Token)
        .unwrap_or_else(|| unreachable!("the token design is always compared"));
    scenario.name = format!("chaos-{}", fault.as_str());
    scenario.fault = Some(fault);
    scenario
}

/// The sequence run of `faults`: one cluster, token sessions behind round-robin.
pub fn sequence_scenario(faults: Vec<Fault>) -> Scenario {
    let mut scenario = chaos_scenario(Fault::Kill, false);
    scenario.name = "chaos-sequence".to_owned();
    scenario.fault = None;
    scenario.sequence = faults;
    scenario
}

/// A backend the replicas reach over TCP, which the cut fault puts a proxy in front of.
#[derive(Debug, Clone)]
pub struct Backend {
    /// "PostgreSQL", "Redis".
    pub name: String,
    /// The replicas' argument that names it (a URL); the cut replica gets it with
    /// `host_port` replaced by the proxy's address.
    pub arg: String,
    pub host_port: String,
    pub addr: std::net::SocketAddr,
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

    /// Whether `fault` can be injected here, or why not (`cannot inject: ...`): asked
    /// before the fault's run, which is then reported as skipped.
    fn can_inject(&self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::RedisRestart | Fault::PostgresKill | Fault::Cut => Err(format!(
                "cannot inject {}: the environment has no way to",
                fault.as_str()
            )),
            _ => Ok(()),
        }
    }

    /// The store and bus of the scenario prepared last, as TCP backends (none for a
    /// SQLite file).
    fn backends(&self) -> Vec<Backend> {
        Vec::new()
    }

    /// Injects a fault on what every replica shares ([`Fault::RedisRestart`],
    /// [`Fault::PostgresKill`]).
    fn inject(&mut self, fault: Fault) -> impl Future<Output = Result<(), String>> {
        async move { Err(format!("cannot inject {}", fault.as_str())) }
    }

    /// Ends a fault [`Environment::inject`] started (Redis started again).
    fn heal(&mut self, fault: Fault) -> impl Future<Output = Result<(), String>> {
        async move {
            let _ = fault;
            Ok(())
        }
    }
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
    let mut chaos = Vec::new();
    for &fault in &config.chaos {
        if let Some(why) = skip(&*env, &config, fault) {
            chaos.push(ChaosResult::skipped(fault, why));
            continue;
        }
        let scenario = chaos_scenario(fault, false);
        let (result, checked) = run_one(&scenario, &config, &bars, env).await?;
        results.push(result);
        match checked {
            Some(timeline::Checked::Alone(c)) => chaos.push(c),
            _ => {
                return Err(LabError::Timeline(format!(
                    "{}: the fault's run was not checked",
                    scenario.name
                )))
            }
        }
    }
    let mut sequence = None;
    if !config.chaos_sequence.is_empty() {
        let skipped: Vec<(Fault, String)> = config
            .chaos_sequence
            .iter()
            .filter_map(|&f| skip(&*env, &config, f).map(|why| (f, why)))
            .collect();
        let faults: Vec<Fault> = config
            .chaos_sequence
            .iter()
            .copied()
            .filter(|f| !skipped.iter().any(|(s, _)| s == f))
            .collect();
        if !faults.is_empty() {
            let scenario = sequence_scenario(faults);
            let (result, checked) = run_one(&scenario, &config, &bars, env).await?;
            results.push(result);
            let Some(timeline::Checked::Sequence(mut s)) = checked else {
                return Err(LabError::Timeline(
                    "the sequence run was not checked".to_owned(),
                ));
            };
            // The skipped faults keep their place in the order asked.
            let mut ran = s.windows.into_iter();
            s.windows = config
                .chaos_sequence
                .iter()
                .map(|&f| match skipped.iter().find(|(x, _)| *x == f) {
                    Some((_, why)) => ChaosResult::skipped(f, why.clone()),
                    None => ran
                        .next()
                        .unwrap_or_else(|| unreachable!("a window per fault that ran")),
                })
                .collect();
            s.faults.clone_from(&config.chaos_sequence);
            sequence = Some(s);
        } else {
            sequence = Some(SequenceResult {
                scenario: String::new(),
                faults: config.chaos_sequence.clone(),
                windows: skipped
                    .into_iter()
                    .map(|(f, why)| ChaosResult::skipped(f, why))
                    .collect(),
                invariants: Vec::new(),
                cost: None,
                notes: vec!["no fault of the sequence could be injected here".to_owned()],
            });
        }
    }
    let scenarios = if config.chaos.is_empty() && config.chaos_sequence.is_empty() {
        scenarios
    } else {
        Vec::new()
    };
    for scenario in &scenarios {
        let cluster = env
            .prepare(scenario)
            .await
            .map_err(|e| LabError::Environment(format!("preparing {}: {e}", scenario.name)))?;
        let bar = bars.add(timeline::bar(scenario, &config));
        let result = timeline::run(scenario, cluster, &config, &bar, env)
            .await
            .map(|(r, _)| r);
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
    let mut report = Report::new(config, results);
    report.chaos = chaos;
    report.chaos_sequence = sequence;
    report.write()?;
    Ok(report)
}

/// Why `fault` cannot be injected here, if it cannot.
fn skip(env: &impl Environment, config: &LabConfig, fault: Fault) -> Option<String> {
    match env.can_inject(fault) {
        Err(why) => Some(why),
        Ok(()) if fault == Fault::Clock && config.faketime.is_none() => Some(
            "cannot inject clock: libfaketime not found (--faketime-lib, HERD_LAB_FAKETIME)"
                .to_owned(),
        ),
        Ok(()) => None,
    }
}

/// One chaos run (a fault alone, or a sequence) on a fresh cluster and store.
async fn run_one(
    scenario: &Scenario,
    config: &LabConfig,
    bars: &indicatif::MultiProgress,
    env: &mut impl Environment,
) -> Result<(ScenarioResult, Option<timeline::Checked>), LabError> {
    let cluster = env
        .prepare(scenario)
        .await
        .map_err(|e| LabError::Environment(format!("preparing {}: {e}", scenario.name)))?;
    let bar = bars.add(timeline::bar(scenario, config));
    let result = timeline::run(scenario, cluster, config, &bar, env).await;
    match &result {
        Ok((_, Some(timeline::Checked::Alone(c)))) => {
            bar.finish_with_message(format!("done: broken {:?}", c.broken()));
        }
        Ok((_, Some(timeline::Checked::Sequence(s)))) => {
            bar.finish_with_message(format!("done: broken {:?}", s.broken()));
        }
        Ok((_, None)) => bar.finish_with_message("done"),
        Err(_) => bar.abandon_with_message("failed"),
    }
    let released = env.release(scenario).await;
    let result = result?;
    released.map_err(|e| LabError::Environment(format!("cleaning up {}: {e}", scenario.name)))?;
    Ok(result)
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
