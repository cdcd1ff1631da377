//! `report.html`: one self-contained page (no script, no external file) with the table
//! and the charts, drawn by plotters' SVG backend and embedded inline, so it opens
//! offline in any browser.

use std::fmt::Write as _;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::{Report, ScenarioResult};

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A colour per scenario, in the order the report lists them.
const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

const KILL: RGBColor = RGBColor(200, 0, 0);
const ADD: RGBColor = RGBColor(0, 140, 0);
const FAULT_END: RGBColor = RGBColor(0, 90, 200);

/// The events of a scenario to mark on its charts: the kill and the add, or under
/// `--chaos` the fault's start and end.
fn marks(r: &ScenarioResult) -> Vec<(Option<std::time::Duration>, String, RGBColor)> {
    if !r.timeline.faults.is_empty() {
        return r
            .timeline
            .faults
            .iter()
            .flat_map(|m| {
                [
                    (m.start, format!("{} starts", m.fault.as_str()), KILL),
                    (m.end, format!("{} ends", m.fault.as_str()), FAULT_END),
                ]
            })
            .collect();
    }
    match r.timeline.fault {
        Some(fault) => vec![
            (
                r.timeline.fault_start,
                format!("{} starts", fault.as_str()),
                KILL,
            ),
            (
                r.timeline.fault_end,
                format!("{} ends", fault.as_str()),
                FAULT_END,
            ),
        ],
        None => vec![
            (r.timeline.kill, format!("kill {}", r.timeline.killed), KILL),
            (r.timeline.add, format!("add {}", r.timeline.added), ADD),
        ],
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws into an SVG string; a chart that fails to draw becomes a line saying so, not a
/// missing report.
fn svg(size: (u32, u32), draw: impl FnOnce(&mut String) -> DrawResult) -> String {
    let mut out = String::new();
    match draw(&mut out) {
        Ok(()) => out,
        Err(e) => {
            format!(
                "<p class=\"error\">This chart could not be drawn: {}</p>",
                escape(&e.to_string())
            ) + &format!("<!-- {}x{} -->", size.0, size.1)
        }
    }
}

/// The whole seconds before the stop, as (middle of the second, value) points.
fn series(r: &ScenarioResult, value: impl Fn(&super::report::SecondRow) -> f64) -> Vec<(f64, f64)> {
    let end = r.timeline.stop.map_or(u64::MAX, |s| s.as_secs());
    r.seconds
        .iter()
        .filter(|s| s.t < end)
        .map(|s| (s.t as f64 + 0.5, value(s)))
        .collect()
}

fn x_max(report: &Report) -> f64 {
    report
        .scenarios
        .iter()
        .filter_map(|r| r.timeline.stop)
        .map(|s| s.as_secs_f64())
        .fold(1.0, f64::max)
}

/// A chart's plotting area: x and y as plain numbers, in an SVG string.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// What an axis's labels say at a value.
type Labels<'a> = &'a dyn Fn(&f64) -> String;

/// A line to draw: its label in the legend, its points and its colour.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// What every chart here shares around its lines: a white SVG of `size` with `caption`
/// above, axes from 0 to `x_end` and `y_end` described by `x_desc` and `y_desc`, no light
/// grid lines, and the legend at `legend`.
struct Frame<'a> {
    size: (u32, u32),
    caption: String,
    x_end: f64,
    y_end: f64,
    x_desc: &'a str,
    y_desc: &'a str,
    /// How many x labels, and what they say, where plotters' own would not do.
    x_ticks: Option<(usize, Labels<'a>)>,
    /// Whether the y labels are whole numbers rather than plotters' own.
    whole_y: bool,
    /// Room on the right, for an x label that would overhang the plot.
    margin_right: u32,
    legend: SeriesLabelPosition,
}

impl<'a> Frame<'a> {
    /// A chart over the run's seconds, its y axis counted in whole `y_desc`.
    fn over_time(
        size: (u32, u32),
        caption: String,
        x_end: f64,
        y_end: f64,
        y_desc: &'a str,
        legend: SeriesLabelPosition,
    ) -> Self {
        Frame {
            size,
            caption,
            x_end,
            y_end,
            x_desc: "seconds since the users started",
            y_desc,
            x_ticks: None,
            whole_y: true,
            margin_right: 10,
            legend,
        }
    }

    /// The frame with what `lines` draws in it, as an SVG string (or the line saying why
    /// it could not be drawn).
    fn draw(self, lines: impl FnOnce(&mut Chart<'_, '_>) -> DrawResult) -> String {
        fn whole(y: &f64) -> String {
            format!("{y:.0}")
        }
        svg(self.size, |out| {
            let root = SVGBackend::with_string(out, self.size).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.caption, ("sans-serif", 16))
                .margin(10)
                .margin_right(self.margin_right)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(0f64..self.x_end, 0f64..self.y_end)?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(self.x_desc)
                .y_desc(self.y_desc)
                .light_line_style(WHITE);
            if let Some((count, labels)) = self.x_ticks {
                mesh.x_labels(count).x_label_formatter(labels);
            }
            if self.whole_y {
                mesh.y_label_formatter(&whole);
            }
            mesh.draw()?;
            lines(&mut chart)?;
            chart
                .configure_series_labels()
                .position(self.legend)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()?;
            root.present()?;
            Ok(())
        })
    }
}

/// A line of `points` in `colour`, with its entry in the legend.
fn line(
    chart: &mut Chart<'_, '_>,
    label: &str,
    points: Vec<(f64, f64)>,
    colour: RGBColor,
) -> DrawResult {
    chart
        .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    Ok(())
}

/// Three lines of one scenario over its seconds, with its events marked and labelled.
fn scenario_chart(
    r: &ScenarioResult,
    x_end: f64,
    what: &str,
    y_desc: &str,
    lines: [Line<'_>; 3],
) -> String {
    let y_end = lines
        .iter()
        .flat_map(|l| &l.1)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;
    let caption = format!("{}: {what}", r.scenario.name);
    let frame = Frame::over_time(
        (720, 280),
        caption,
        x_end,
        y_end,
        y_desc,
        SeriesLabelPosition::MiddleRight,
    );
    frame.draw(|chart| {
        for (label, points, colour) in lines {
            line(chart, label, points, colour)?;
        }
        for (at, label, colour) in marks(r) {
            let Some(at) = at else { continue };
            let x = at.as_secs_f64();
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, y_end)],
                colour.stroke_width(2),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                label,
                (x + x_end * 0.005, y_end * 0.97),
                ("sans-serif", 12).into_font().color(&colour),
            )))?;
        }
        Ok(())
    })
}

/// ok/s, re-logins/s and failed/s of one scenario, with its kill and add marked.
fn timeline_chart(r: &ScenarioResult, x_end: f64) -> String {
    let lines = [
        ("ok", series(r, |s| s.ok as f64), PALETTE[2]),
        (
            "forced re-logins",
            series(r, |s| s.relogins as f64),
            PALETTE[1],
        ),
        ("failed", series(r, |s| s.failed as f64), BLACK),
    ];
    scenario_chart(r, x_end, "requests per second", "per second", lines)
}

/// p50, p99 and the slowest ok request of one scenario, second by second, with its
/// events marked: what a fault did to latency.
fn latency_over_time_chart(r: &ScenarioResult, x_end: f64) -> String {
    let lines = [
        ("p50", series(r, |s| s.p50_ms.unwrap_or(0.0)), PALETTE[2]),
        ("p99", series(r, |s| s.p99_ms.unwrap_or(0.0)), PALETTE[1]),
        ("slowest", series(r, |s| s.max_ms.unwrap_or(0.0)), BLACK),
    ];
    scenario_chart(
        r,
        x_end,
        "latency of ok requests per second",
        "milliseconds",
        lines,
    )
}

/// A section per fault under `--chaos`: its invariants as a table, what it cost, what
/// was excused, and its two charts.
fn chaos_sections(report: &Report, x_end: f64) -> String {
    let mut page = String::new();
    if !report.chaos.is_empty() {
        page.push_str("<h2>Faults</h2>\n");
    }
    for c in &report.chaos {
        let _ = writeln!(page, "<h3>{}: {}</h3>", c.fault.as_str(), c.status);
        chaos_section(&mut page, c);
        charts_of(&mut page, report, c.scenario.as_deref(), x_end);
    }
    if let Some(s) = &report.chaos_sequence {
        page.push_str("<h2>Faults in sequence, on one cluster</h2>\n");
        let order: Vec<&str> = s.faults.iter().map(|f| f.as_str()).collect();
        let _ = writeln!(
            page,
            "<p>{}, one after another under the same users; each fault's window runs from its start to the next one's.</p>",
            escape(&order.join(", "))
        );
        page.push_str("<h3>The whole run</h3>\n");
        invariants_table(&mut page, &s.invariants);
        if let Some(cost) = &s.cost {
            let _ = writeln!(
                page,
                "<p>Cost: {} failed requests; the slowest request around a fault {}; the longest recovery {:.2} s.</p>",
                cost.failed,
                cost.slowest.map_or_else(|| "-".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
                cost.time_to_recover.as_secs_f64(),
            );
        }
        for note in &s.notes {
            let _ = writeln!(page, "<p>{}</p>", escape(note));
        }
        charts_of(&mut page, report, Some(&s.scenario), x_end);
        for c in &s.windows {
            let _ = writeln!(
                page,
                "<h3>sequence, {}{}: {}</h3>",
                c.fault.as_str(),
                c.victim
                    .as_ref()
                    .map_or_else(String::new, |v| format!(" ({})", escape(v))),
                c.status
            );
            chaos_section(&mut page, c);
        }
    }
    page
}

fn invariants_table(page: &mut String, invariants: &[super::Invariant]) {
    page.push_str("<table><tr><th>invariant</th><th>held</th><th>broken</th><th>checked</th><th>what was checked</th></tr>\n");
    for i in invariants {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(i.name),
            if i.held { "held" } else { "<b>broken</b>" },
            i.broken,
            i.checked,
            escape(&i.note)
        );
    }
    page.push_str("</table>\n");
}

/// One fault's invariants, cost, excuses and notes.
fn chaos_section(page: &mut String, c: &super::ChaosResult) {
    if let Some(reason) = &c.reason {
        let _ = writeln!(page, "<p>Skipped: {}</p>", escape(reason));
        return;
    }
    invariants_table(page, &c.invariants);
    if let Some(cost) = &c.cost {
        let _ = writeln!(
            page,
            "<p>Cost: {} failed requests; slowest request around the fault {}; recovered {:.2} s after the start; the balancer stopped using the replica {} after the start.</p>",
            cost.failed,
            cost.slowest.map_or_else(|| "-".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
            cost.time_to_recover.as_secs_f64(),
            cost.detected_after.map_or_else(|| "never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        );
    }
    for note in c
        .excused
        .iter()
        .map(|e| format!("excused: {e}"))
        .chain(c.notes.iter().cloned())
    {
        let _ = writeln!(page, "<p>{}</p>", escape(&note));
    }
}

/// The two charts of the scenario named `scenario`, marked with its faults.
fn charts_of(page: &mut String, report: &Report, scenario: Option<&str>, x_end: f64) {
    if let Some(r) = report
        .scenarios
        .iter()
        .find(|r| Some(r.scenario.name.as_str()) == scenario)
    {
        page.push_str("<figure>");
        page.push_str(&timeline_chart(r, x_end));
        page.push_str("</figure>\n<figure>");
        page.push_str(&latency_over_time_chart(r, x_end));
        page.push_str("</figure>\n");
    }
}

/// ok/s of every scenario on one chart.
fn throughput_chart(report: &Report, x_end: f64) -> String {
    let all: Vec<Vec<(f64, f64)>> = report
        .scenarios
        .iter()
        .map(|r| series(r, |s| s.ok as f64))
        .collect();
    let y_end = all.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let frame = Frame::over_time(
        (720, 300),
        "ok requests per second, every scenario".to_owned(),
        x_end,
        y_end,
        "ok/s",
        SeriesLabelPosition::LowerRight,
    );
    frame.draw(|chart| {
        for (i, (r, points)) in report.scenarios.iter().zip(all).enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            line(chart, &r.scenario.name, points, colour)?;
            for at in marks(r).into_iter().filter_map(|m| m.0) {
                let x = at.as_secs_f64();
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, y_end)],
                    colour.mix(0.5).stroke_width(1),
                )))?;
            }
        }
        Ok(())
    })
}

/// The latency distribution of ok requests: latency at each percentile, the x axis in
/// "nines" (90%, 99%, 99.9%, ...), as HdrHistogram plots it.
fn latency_chart(report: &Report) -> String {
    fn nines(p: f64) -> f64 {
        -(1.0 - p / 100.0).max(1e-6).log10()
    }
    fn percentile(x: &f64) -> String {
        match x.round() as i64 {
            0 => "0%".to_owned(),
            1 => "90%".to_owned(),
            2 => "99%".to_owned(),
            3 => "99.9%".to_owned(),
            _ => "99.99%".to_owned(),
        }
    }
    let y_end = report
        .scenarios
        .iter()
        .flat_map(|r| r.latency.iter().map(|p| p.ms))
        .fold(1.0, f64::max)
        * 1.1;
    let frame = Frame {
        size: (720, 320),
        caption: "latency distribution of ok requests".to_owned(),
        x_end: 4.0,
        y_end,
        x_desc: "percentile",
        y_desc: "milliseconds",
        x_ticks: Some((5, &percentile)),
        whole_y: false,
        margin_right: 30,
        legend: SeriesLabelPosition::UpperLeft,
    };
    frame.draw(|chart| {
        for (i, r) in report.scenarios.iter().enumerate() {
            let points: Vec<(f64, f64)> = r
                .latency
                .iter()
                .map(|p| (nines(p.percentile), p.ms))
                .collect();
            line(chart, &r.scenario.name, points, PALETTE[i % PALETTE.len()])?;
        }
        Ok(())
    })
}

/// The report page.
pub(crate) fn html(report: &Report) -> String {
    let c = &report.config;
    let x_end = x_max(report);
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>herd lab report</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} .error {{ color: #a00; }} dt {{ font-weight: bold; }}
</style></head><body>
<h1>herd lab report</h1>
<p>{users} virtual users, mean think time {think} ms, seed {seed}; {replicas} replicas per
scenario; store: {store}; {cores} cores. Timeline: warm-up until {warm} s, kill at {kill} s,
add at {add} s, stop at {stop} s (each event also waits for what it depends on; the
actual times are marked on the charts). Each scenario ran on a fresh cluster and a fresh
store.</p>
"#,
        users = c.users,
        think = c.think.as_millis(),
        seed = c.seed,
        replicas = c.replicas,
        store = escape(&c.store),
        cores = report.cores,
        warm = c.phases.warmup.as_secs_f64(),
        kill = c.phases.kill.as_secs_f64(),
        add = c.phases.add.as_secs_f64(),
        stop = c.phases.stop.as_secs_f64(),
    );
    page.push_str("<h2>Summary</h2>\n<table>\n");
    for (i, row) in report.rows().iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        page.push_str("<tr>");
        for cell in row {
            let _ = write!(page, "<{tag}>{}</{tag}>", escape(cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    page.push_str(
        r#"<dl>
<dt>ok</dt><dd>authenticated requests (me, history, send, join) answered 2xx; logins are counted apart.</dd>
<dt>re-logins</dt><dd>401s to authenticated requests: each sends the user back to the login.</dd>
<dt>logged out by crash</dt><dd>users holding a session from before the kill that a request started after the kill found gone.</dd>
<dt>failed</dt><dd>5xx answers, connection errors and timeouts; "after kill" counts only requests started after the killed process had exited (as seen within 50 ms), not those in flight when it died.</dd>
<dt>ok/s before crash, after add</dt><dd>mean ok requests per second from the end of the warm-up to the kill, and from the added replica's first passed health check to the stop.</dd>
<dt>add→first served</dt><dd>from the add to the first workload request the new replica answered; "never" when no user was sent to it.</dd>
</dl>
"#,
    );
    page.push_str("<h2>Throughput</h2>\n<figure>");
    page.push_str(&throughput_chart(report, x_end));
    page.push_str("</figure>\n<h2>Latency</h2>\n<figure>");
    page.push_str(&latency_chart(report));
    page.push_str("</figure>\n");
    if !report.chaos.is_empty() || report.chaos_sequence.is_some() {
        page.push_str(&chaos_sections(report, x_end));
        page.push_str("</body></html>\n");
        return page;
    }
    page.push_str("<h2>Each scenario</h2>\n");
    for r in &report.scenarios {
        let _ = write!(
            page,
            "<h3>{name}</h3><p>sessions: {sessions}, kept in {store}; balancer: {policy}.</p>\n<figure>",
            name = escape(&r.scenario.name),
            sessions = r.scenario.sessions.as_str(),
            store = escape(&r.scenario.session_store),
            policy = r.scenario.policy.as_str(),
        );
        page.push_str(&timeline_chart(r, x_end));
        page.push_str("</figure>\n");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::metrics::{Outcome, Recorder};
    use super::super::report::Timeline;
    use super::super::{scenarios, LabConfig, Phases};
    use super::*;

    #[test]
    fn the_page_holds_every_chart_inline_with_the_events_marked() {
        let s = Duration::from_secs;
        let config = LabConfig {
            users: 2,
            think: Duration::from_millis(100),
            seed: 1,
            phases: Phases {
                warmup: s(0),
                kill: s(1),
                add: s(2),
                stop: s(3),
            },
            replicas: 3,
            rooms: 1,
            out_dir: "unused".into(),
            progress: false,
            chaos: Vec::new(),
            chaos_sequence: Vec::new(),
            chaos_break: None,
            faketime: None,
            setup_timeout: s(1),
            store: "SQLite <test>".into(),
        };
        let timeline = Timeline {
            kill: Some(s(1)),
            killed: "r1".into(),
            add: Some(s(2)),
            added: "r4".into(),
            stop: Some(s(3)),
            ..Timeline::default()
        };
        let results: Vec<ScenarioResult> = scenarios(false)
            .iter()
            .map(|scenario| {
                let recorded = Recorder::new(Instant::now(), Duration::ZERO);
                let t = recorded.begin();
                recorded.end(0, t, Outcome::Ok, None, Some("r2"));
                ScenarioResult::new(scenario, &config, timeline.clone(), recorded.finish())
            })
            .collect();
        let report = Report::new(config, results);
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 2 + 4);
        assert!(!page.contains("could not be drawn"), "{page}");
        assert!(page.contains("kill r1") && page.contains("add r4"));
        // Text from the run is escaped, not taken for markup.
        assert!(page.contains("SQLite &lt;test&gt;"));
        assert!(!page.contains("<script"), "the page needs no script");
    }
}
