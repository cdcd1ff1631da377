//! One scenario, from a fresh cluster to its result.
//!
//! The events are driven by what has happened, not by the clock alone, so that a slow
//! machine shifts them rather than breaks them:
//! - the kill waits for `phases.kill` **and** for every user to have been served once
//!   (so that every user holds a session the crash can take), for at most
//!   [`KILL_WAIT`] more;
//! - the add waits for the killed process to be reaped, and keeps the configured gap
//!   after the kill;
//! - the stop keeps the configured gap after the add.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::metrics::Recorder;
use super::report::{ScenarioResult, Timeline};
use super::workload::{self, Shared};
use super::{LabConfig, Scenario};
use crate::replicas::Cluster;
use crate::{ClusterConfig, LabError, State};

/// How much longer than `phases.kill` the kill waits for every user to be served.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often the timeline looks at the cluster and the users.
const TICK: Duration = Duration::from_millis(50);

/// The replica the lab kills: the first, which every policy has given users to.
const VICTIM: &str = "r1";

pub(crate) fn bar(scenario: &Scenario, config: &LabConfig) -> ProgressBar {
    let tenths = u64::try_from(config.phases.stop.as_millis() / 100).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(tenths);
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(scenario.name.clone());
    bar.set_message("starting the cluster");
    bar
}

/// Runs `scenario` on a cluster made from `cluster`, then stops the cluster.
pub(crate) async fn run(
    scenario: &Scenario,
    mut cluster: ClusterConfig,
    config: &LabConfig,
    bar: &ProgressBar,
) -> Result<ScenarioResult, LabError> {
    cluster.replicas = config.replicas;
    cluster.policy = scenario.policy;
    cluster.respawn = false;
    cluster.replica_log = Some(config.out_dir.join(format!("{}.log", scenario.name)));
    // Replicas log a refused session at info; under `memory` with round-robin that is
    // a line per request, work the other designs are spared. The server's warnings and
    // the line announcing a replica's port (target `herd`) are kept.
    cluster.env.push((
        "RUST_LOG".to_owned(),
        "info,herd_server=warn,sqlx=warn".to_owned(),
    ));
    let cluster = Arc::new(Cluster::new(cluster)?);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LabError::Listener)?;
    let address = listener.local_addr().map_err(LabError::Listener)?;
    let (stop_balancer, stopped) = oneshot::channel::<()>();
    let balancer = tokio::spawn(crate::balancer::serve(
        cluster.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let result = async {
        for _ in 0..config.replicas {
            cluster.add()?;
        }
        drive(
            scenario,
            &cluster,
            &format!("http://{address}"),
            config,
            bar,
        )
        .await
    }
    .await;
    bar.set_message("stopping the cluster");
    let _ = stop_balancer.send(());
    let _ = balancer.await;
    cluster.stop_all().await;
    result
}

async fn drive(
    scenario: &Scenario,
    cluster: &Arc<Cluster>,
    base: &str,
    config: &LabConfig,
    bar: &ProgressBar,
) -> Result<ScenarioResult, LabError> {
    let deadline = tokio::time::Instant::now() + config.setup_timeout;
    while !cluster.views().iter().all(|r| r.state == State::Up) {
        if tokio::time::Instant::now() >= deadline {
            return Err(LabError::Setup(format!(
                "the replicas were not all up after {:?} (their log: {})",
                config.setup_timeout,
                config
                    .out_dir
                    .join(format!("{}.log", scenario.name))
                    .display()
            )));
        }
        tokio::time::sleep(TICK).await;
    }
    bar.set_message(format!("signing up {} users", config.users));
    let client = workload::client()?;
    // The setup (accounts, rooms) is not measured, and talks to one replica directly:
    // through a round-robin balancer a lone client's login and its next request always
    // land on different replicas, which `memory` sessions cannot survive.
    let first = cluster
        .views()
        .into_iter()
        .find_map(|r| r.port)
        .ok_or_else(|| LabError::Setup("no replica has a port".into()))?;
    let direct = format!("http://127.0.0.1:{first}");
    let rooms = workload::setup(&client, &direct, config.users, config.rooms, deadline).await?;

    let start = std::time::Instant::now();
    let recorder = Arc::new(Recorder::new(start, config.phases.warmup));
    let shared = Arc::new(Shared {
        client,
        base: base.to_owned(),
        recorder: recorder.clone(),
        rooms,
        think: config.think,
        seed: config.seed,
    });
    let (stop, stopped) = watch::channel(false);
    let users: Vec<_> = (0..config.users)
        .map(|i| tokio::spawn(workload::user(shared.clone(), i, stopped.clone())))
        .collect();

    let phases = config.phases;
    let mut timeline = Timeline::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        ticks.tick().await;
        let t = recorder.now();
        let (ok, relogins, failed) = recorder.totals();
        let phase = match (timeline.kill, timeline.add) {
            (None, _) if t < phases.warmup => "warm-up",
            (None, _) => "before the kill",
            (Some(_), None) => "after the kill",
            (Some(_), Some(_)) => "after the add",
        };
        bar.set_position(u64::try_from(t.as_millis() / 100).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{phase:<15} ok {ok}  re-logins {relogins}  failed {failed}"
        ));

        match (timeline.kill, timeline.add) {
            (None, _) => {
                let everyone = recorder.served_users() >= config.users;
                if t >= phases.kill && (everyone || t >= phases.kill + KILL_WAIT) {
                    timeline.users_served_at_kill = recorder.served_users();
                    cluster
                        .kill(VICTIM)
                        .map_err(|e| LabError::Timeline(format!("killing {VICTIM}: {e:?}")))?;
                    // After the signal: a request that starts from here on was sent
                    // to a replica already told to die.
                    let (at, in_flight) = recorder.killed();
                    timeline.kill = Some(at);
                    timeline.killed = VICTIM.to_owned();
                    timeline.in_flight_at_kill = in_flight;
                }
            }
            (Some(kill), None) => {
                let reaped = cluster
                    .views()
                    .iter()
                    .any(|r| r.id == VICTIM && r.state == State::Dead);
                if reaped && timeline.reaped.is_none() {
                    timeline.reaped = Some(recorder.gone());
                }
                if reaped && t >= phases.add.max(kill + (phases.add - phases.kill)) {
                    let added = cluster.add()?;
                    timeline.add = Some(recorder.added(&added.id));
                    timeline.added = added.id;
                }
            }
            (Some(_), Some(add)) => {
                if timeline.added_up.is_none()
                    && cluster
                        .views()
                        .iter()
                        .any(|r| r.id == timeline.added && r.state == State::Up)
                {
                    timeline.added_up = Some(t);
                }
                if t >= phases.stop.max(add + (phases.stop - phases.add)) {
                    // The stop is when the users are told; what they had in flight
                    // then still finishes, and counts.
                    timeline.stop = Some(recorder.now());
                    break Ok(());
                }
            }
        }
        // However slow the machine, a scenario that has not reached its end a minute
        // after it should have is stuck; say where.
        if t > phases.stop + KILL_WAIT + Duration::from_secs(60) {
            break Err(LabError::Timeline(format!(
                "the timeline stalled at {t:?}: kill {:?}, add {:?}",
                timeline.kill, timeline.add
            )));
        }
    };
    let _ = stop.send(true);
    bar.set_message("stopping the users");
    for user in users {
        if let Err(e) = user.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    outcome?;
    drop(shared);
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| LabError::Timeline("a user outlived the scenario".into()))?;
    Ok(ScenarioResult::new(
        scenario,
        config,
        timeline,
        recorder.finish(),
    ))
}
