//! A scenario's numbers, the terminal table, and `results.json`.
//!
//! Definitions (docs/lab.md says the same for readers of the report):
//! - **ok**: authenticated requests (`/v1/me`, history, send, join) answered 2xx.
//!   Logins are counted apart, so a design that makes users log in all the time does
//!   not look busy for it.
//! - **forced re-logins**: 401s to authenticated requests; each sends the user back to
//!   the login.
//! - **logged out by the crash**: distinct users holding a session from before the kill
//!   that a request started after the kill found gone (401).
//! - **failed**: 5xx answers, connection errors and timeouts; **failed after kill**
//!   counts only requests *started* after the killed process was seen reaped (within
//!   one 50 ms tick of its exit), so those in flight when the replica died, or sent
//!   to it while it was dying, are not in it.
//! - **throughput before the crash**: ok/s over the whole seconds from the end of the
//!   warm-up to the kill; **after the scale-out**: from the added replica's first
//!   passed health check (or the add, if it never passed) to the stop.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};

use super::metrics::{Recorded, Second};
use super::{LabConfig, Scenario};
use crate::LabError;

pub(crate) fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(d.as_secs_f64()))
}

pub(crate) fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(d.as_secs_f64() * 1000.0))
}

pub(crate) fn optional_seconds<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => seconds(d, s),
        None => s.serialize_none(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

/// When the events of one scenario happened, from the moment its users started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    #[serde(serialize_with = "optional_seconds")]
    pub kill: Option<Duration>,
    pub killed: String,
    pub users_served_at_kill: usize,
    pub in_flight_at_kill: u64,
    /// When the killed process was seen reaped.
    #[serde(serialize_with = "optional_seconds")]
    pub reaped: Option<Duration>,
    #[serde(serialize_with = "optional_seconds")]
    pub add: Option<Duration>,
    pub added: String,
    /// When the added replica first passed its health check.
    #[serde(serialize_with = "optional_seconds")]
    pub added_up: Option<Duration>,
    /// When the added replica first answered one of the workload's requests.
    #[serde(serialize_with = "optional_seconds")]
    pub added_first_served: Option<Duration>,
    #[serde(serialize_with = "optional_seconds")]
    pub stop: Option<Duration>,
    /// Under `--chaos`: the fault, when it started and when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<super::Fault>,
    #[serde(serialize_with = "optional_seconds")]
    pub fault_start: Option<Duration>,
    #[serde(serialize_with = "optional_seconds")]
    pub fault_end: Option<Duration>,
    /// Under `--chaos-sequence`: every fault of the run, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultMark>,
}

/// One fault of a sequence run on its charts.
#[derive(Debug, Clone, Serialize)]
pub struct FaultMark {
    pub fault: super::Fault,
    /// The replica it was done to, or added (clock).
    pub victim: Option<String>,
    #[serde(serialize_with = "optional_seconds")]
    pub start: Option<Duration>,
    #[serde(serialize_with = "optional_seconds")]
    pub end: Option<Duration>,
}

/// One second of the timeline, as `results.json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SecondRow {
    pub t: u64,
    pub ok: u64,
    pub relogins: u64,
    pub logins: u64,
    pub failed: u64,
    pub throttled: u64,
    pub unexpected: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The slowest ok request that ended in this second.
    pub max_ms: Option<f64>,
}

/// Latency at a percentile, for the distribution chart.
#[derive(Debug, Clone, Serialize)]
pub struct Percentile {
    pub percentile: f64,
    pub ms: f64,
}

/// Everything one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub users: usize,
    pub requests_ok: u64,
    pub logins: u64,
    pub forced_relogins: u64,
    /// Forced re-logins per authenticated request between the warm-up and the kill.
    pub relogin_ratio_before_crash: Option<f64>,
    pub logged_out_by_crash: usize,
    pub failed: u64,
    pub failed_after_kill: u64,
    pub throttled: u64,
    pub unexpected: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub throughput_before_crash: Option<f64>,
    pub throughput_after_scale_out: Option<f64>,
    /// From the add to the new replica's first passed health check.
    #[serde(serialize_with = "optional_seconds")]
    pub add_to_up: Option<Duration>,
    /// From the add to the new replica's first answer to the workload.
    #[serde(serialize_with = "optional_seconds")]
    pub add_to_first_served: Option<Duration>,
    pub timeline: Timeline,
    pub seconds: Vec<SecondRow>,
    pub latency: Vec<Percentile>,
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| ms(h.value_at_quantile(q)))
}

/// Mean ok/s over the whole seconds in `[from, to)`; when the window holds no whole
/// second (very short phases), over the window itself.
fn throughput(seconds: &[Second], from: Duration, to: Duration) -> Option<f64> {
    if to <= from {
        return None;
    }
    let first = from.as_secs() + u64::from(from.subsec_nanos() > 0);
    let last = to.as_secs();
    let (first, last, span) = if last > first {
        (first, last, (last - first) as f64)
    } else {
        (from.as_secs(), to.as_secs() + 1, (to - from).as_secs_f64())
    };
    let ok: u64 = seconds
        .iter()
        .enumerate()
        .filter(|(i, _)| (first..last).contains(&(*i as u64)))
        .map(|(_, s)| s.ok)
        .sum();
    Some(round3(ok as f64 / span))
}

impl ScenarioResult {
    pub(crate) fn new(
        scenario: &Scenario,
        config: &LabConfig,
        mut timeline: Timeline,
        recorded: Recorded,
    ) -> ScenarioResult {
        timeline.added_first_served = recorded.first_served_by_new;
        let sum = |f: fn(&Second) -> u64| recorded.seconds.iter().map(f).sum::<u64>();
        let total = &recorded.total;
        let nines = (0..=40).map(|i| f64::from(i) / 10.0);
        let latency = if !total.is_empty() {
            nines
                .map(|n| {
                    let q = 1.0 - 10f64.powf(-n);
                    Percentile {
                        percentile: round3(q * 100.0),
                        ms: ms(total.value_at_quantile(q)),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let before = timeline
            .kill
            .and_then(|kill| throughput(&recorded.seconds, config.phases.warmup, kill));
        let after = match (timeline.added_up.or(timeline.add), timeline.stop) {
            (Some(from), Some(to)) => throughput(&recorded.seconds, from, to),
            _ => None,
        };
        let since_add = |t: Option<Duration>| match (timeline.add, t) {
            (Some(add), Some(t)) => t.checked_sub(add),
            _ => None,
        };
        ScenarioResult {
            scenario: scenario.clone(),
            users: config.users,
            requests_ok: sum(|s| s.ok),
            logins: sum(|s| s.logins),
            forced_relogins: sum(|s| s.relogins),
            relogin_ratio_before_crash: (recorded.steady_requests > 0).then(|| {
                round3(recorded.steady_logged_out as f64 / recorded.steady_requests as f64)
            }),
            logged_out_by_crash: recorded.logged_out_by_crash,
            failed: sum(|s| s.failed),
            failed_after_kill: recorded.failed_after_kill,
            throttled: sum(|s| s.throttled),
            unexpected: sum(|s| s.unexpected),
            p50_ms: quantile_ms(total, 0.5),
            p99_ms: quantile_ms(total, 0.99),
            p999_ms: quantile_ms(total, 0.999),
            max_ms: (!total.is_empty()).then(|| ms(total.max())),
            throughput_before_crash: before,
            throughput_after_scale_out: after,
            add_to_up: since_add(timeline.added_up),
            add_to_first_served: since_add(timeline.added_first_served),
            seconds: recorded
                .seconds
                .iter()
                .enumerate()
                .map(|(t, s)| SecondRow {
                    t: t as u64,
                    ok: s.ok,
                    relogins: s.relogins,
                    logins: s.logins,
                    failed: s.failed,
                    throttled: s.throttled,
                    unexpected: s.unexpected,
                    p50_ms: quantile_ms(&s.latency, 0.5),
                    p99_ms: quantile_ms(&s.latency, 0.99),
                    max_ms: (!s.latency.is_empty()).then(|| ms(s.latency.max())),
                })
                .collect(),
            latency,
            timeline,
        }
    }
}

/// A whole lab run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: LabConfig,
    /// Cores this machine offers the lab, replicas and load generator alike.
    pub cores: usize,
    /// When the run finished, seconds since the Unix epoch.
    pub finished_at: u64,
    pub scenarios: Vec<ScenarioResult>,
    /// `--chaos`: a section per fault, in the order asked, skipped ones included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<super::ChaosResult>,
    /// `--chaos-sequence`: the faults one after another on one cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos_sequence: Option<super::SequenceResult>,
}

impl Report {
    pub(crate) fn new(config: LabConfig, scenarios: Vec<ScenarioResult>) -> Report {
        Report {
            config,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            finished_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            scenarios,
            chaos: Vec::new(),
            chaos_sequence: None,
        }
    }

    /// Every invariant broken under `--chaos`, as `fault: invariant` lines.
    pub fn chaos_broken(&self) -> Vec<String> {
        self.chaos
            .iter()
            .flat_map(|c| {
                c.broken()
                    .into_iter()
                    .map(move |name| format!("{}: {name}", c.fault.as_str()))
            })
            .chain(
                self.chaos_sequence
                    .iter()
                    .flat_map(|s| s.broken().into_iter().map(|b| format!("sequence, {b}"))),
            )
            .collect()
    }

    /// The terminal report of `--chaos`: a section per fault with its invariants, then
    /// the sequence's windows and its whole run.
    pub fn chaos_text(&self) -> String {
        let mut out = String::new();
        for c in &self.chaos {
            out.push_str(&format!("== {}: {}", c.fault.as_str(), c.status));
            chaos_section_text(&mut out, c);
        }
        if let Some(s) = &self.chaos_sequence {
            for c in &s.windows {
                out.push_str(&format!(
                    "== sequence, {}{}: {}",
                    c.fault.as_str(),
                    c.victim
                        .as_ref()
                        .map_or_else(String::new, |v| format!(" ({v})")),
                    c.status
                ));
                chaos_section_text(&mut out, c);
            }
            out.push_str("== sequence, whole run\n");
            invariants_text(&mut out, &s.invariants);
            if let Some(cost) = &s.cost {
                cost_text(&mut out, cost);
            }
        }
        out
    }

    pub fn results_path(&self) -> PathBuf {
        self.config.out_dir.join("results.json")
    }

    pub fn html_path(&self) -> PathBuf {
        self.config.out_dir.join("report.html")
    }

    pub(crate) fn write(&self) -> Result<(), LabError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| LabError::Output(self.results_path(), std::io::Error::other(e)))?;
        let path = self.results_path();
        std::fs::write(&path, json).map_err(|e| LabError::Output(path, e))?;
        let path = self.html_path();
        std::fs::write(&path, super::charts::html(self)).map_err(|e| LabError::Output(path, e))
    }

    /// The summary, a row per scenario after a header row.
    pub fn rows(&self) -> Vec<Vec<String>> {
        let header = [
            "scenario",
            "ok",
            "re-logins",
            "logged out by crash",
            "failed",
            "429",
            "p50 ms",
            "p99 ms",
            "ok/s before crash",
            "ok/s after add",
            "add→first served",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
        let opt = |x: Option<f64>, digits: usize| {
            x.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
        };
        for r in &self.scenarios {
            let share = 100.0 * r.logged_out_by_crash as f64 / r.users.max(1) as f64;
            rows.push(vec![
                r.scenario.name.clone(),
                r.requests_ok.to_string(),
                r.forced_relogins.to_string(),
                format!("{} ({share:.0}%)", r.logged_out_by_crash),
                format!("{} ({} after kill)", r.failed, r.failed_after_kill),
                r.throttled.to_string(),
                opt(r.p50_ms, 1),
                opt(r.p99_ms, 1),
                opt(r.throughput_before_crash, 0),
                opt(r.throughput_after_scale_out, 0),
                r.add_to_first_served.map_or_else(
                    || "never".to_owned(),
                    |d| format!("{:.2}s", d.as_secs_f64()),
                ),
            ]);
        }
        rows
    }

    /// The terminal table: a row per scenario.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let columns = rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if c == 0 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                out.push_str(&"-".repeat(rule));
                out.push('\n');
            }
        }
        out
    }
}

fn chaos_section_text(out: &mut String, c: &super::ChaosResult) {
    if let Some(reason) = &c.reason {
        out.push_str(&format!(" ({reason})"));
    }
    out.push('\n');
    invariants_text(out, &c.invariants);
    if let Some(cost) = &c.cost {
        cost_text(out, cost);
    }
    for e in &c.excused {
        out.push_str(&format!("  excused: {e}\n"));
    }
}

fn invariants_text(out: &mut String, invariants: &[super::Invariant]) {
    for i in invariants {
        out.push_str(&format!(
            "  {:<7} {:>5} of {:>6}  {}\n",
            if i.held { "held" } else { "BROKEN" },
            i.broken,
            i.checked,
            i.name
        ));
    }
}

fn cost_text(out: &mut String, cost: &super::Cost) {
    out.push_str(&format!(
        "  cost: {} failed, slowest {}, recovered after {:.2} s, detected after {}\n",
        cost.failed,
        cost.slowest.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        ),
        cost.time_to_recover.as_secs_f64(),
        cost.detected_after.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.2} s", d.as_secs_f64())
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds_with(ok: &[u64]) -> Vec<Second> {
        ok.iter()
            .map(|&ok| Second {
                ok,
                relogins: 0,
                logins: 0,
                failed: 0,
                throttled: 0,
                unexpected: 0,
                latency: super::super::metrics::histogram(),
            })
            .collect()
    }

    #[test]
    fn throughput_counts_whole_seconds_inside_the_window() {
        let s = seconds_with(&[100, 10, 20, 30, 1000]);
        // [0.5, 4.2): whole seconds 1, 2, 3.
        let t = throughput(&s, Duration::from_millis(500), Duration::from_millis(4200));
        assert_eq!(t, Some(20.0));
        // No whole second inside [1.2, 1.7): the window's own length.
        let t = throughput(&s, Duration::from_millis(1200), Duration::from_millis(1700));
        assert_eq!(t, Some(20.0));
        assert_eq!(
            throughput(&s, Duration::from_secs(3), Duration::from_secs(2)),
            None
        );
    }
}
