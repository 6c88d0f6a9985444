//! Charts: what to draw (backend-neutral specs built from the model) apart from how
//! to draw it (a [`ChartRenderer`]; [`PngRenderer`] is the one we ship).
//!
//! [`build_charts`] decides which charts a set of runs gets and fills them with
//! data, one function per chart, in [`ChartId::ALL`]'s order; a renderer only turns
//! a [`Chart`] into image bytes. Writing files is not a renderer's business:
//! `report.rs` names and writes every output.
//!
//! Limits: fault labels are staggered over three rows above the plot; many faults
//! close together still overprint there (the Faults table lists every one). Lines
//! are drawn point to point, without downsampling: fine for hours of one-second
//! windows, not meant for millions of points.
//!
//! Several runs in one report are overlaid: one colour per run, and where a run has
//! several lines in a chart (p50/p99/p99.9, publish/consume) a dash pattern tells
//! them apart. A single run gets one colour per line instead; its consume line is
//! dashed too and drawn after publish, so where the two coincide both show.
//!
//! Honesty rules every builder keeps: the time axis ends with the data (the last
//! window or fault end), counts (backlog, anomalies) are `y_counts` panels (from
//! 0, whole ticks; a negative backlog is drawn as 0), and throughput is given in
//! msg/s and MB/s. Where legends go is the renderer's business: `PngRenderer`
//! puts them beside the plot, never over it.

mod png;

pub use self::png::PngRenderer;

use crate::error::Result;
use crate::model::{FaultWindow, LatencyKind, LatencyStat, RunResult};

/// The charts a report can hold. Each has one file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChartId {
    /// Publish and consume rate over time.
    Throughput,
    /// Backlog over time.
    Backlog,
    /// p50/p99/p99.9 latency over time, one panel per latency kind.
    LatencyOverTime,
    /// Latency by percentile, log percentile axis.
    LatencyQuantiles,
    /// Checker anomaly counts per delivery guarantee.
    GuaranteeCounts,
}

impl ChartId {
    /// Every chart, in report order: [`build_charts`] builds them in this order.
    pub const ALL: [ChartId; 5] = [
        ChartId::Throughput,
        ChartId::Backlog,
        ChartId::LatencyOverTime,
        ChartId::LatencyQuantiles,
        ChartId::GuaranteeCounts,
    ];

    /// The file name without extension; also the chart's id in report.html.
    pub fn file_stem(self) -> &'static str {
        match self {
            ChartId::Throughput => "throughput",
            ChartId::Backlog => "backlog",
            ChartId::LatencyOverTime => "latency-over-time",
            ChartId::LatencyQuantiles => "latency-quantiles",
            ChartId::GuaranteeCounts => "guarantee-counts",
        }
    }
}

/// One chart, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub id: ChartId,
    pub title: String,
    /// One sentence under the chart in report.html: how to read it.
    pub caption: String,
    pub body: ChartBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChartBody {
    TimeSeries(TimeSeriesChart),
    Quantiles(QuantileChart),
    Bars(BarChart),
}

/// Values over time (seconds from t = 0), in stacked panels sharing the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeriesChart {
    pub panels: Vec<Panel>,
    /// Shaded on every panel, labelled by kind and target.
    pub faults: Vec<FaultBand>,
    /// Seconds: from 0 to the last window end or fault end; the axis ends here.
    pub x_end_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub y_scale: Scale,
    /// The values are counts: the axis starts at 0 and its ticks are whole numbers.
    pub y_counts: bool,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// One line. `y == None` is a gap (a window without samples).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    /// Index into the renderer's palette.
    pub color: usize,
    pub dash: Dash,
    pub points: Vec<(f64, Option<f64>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
}

impl Dash {
    const BY_INDEX: [Dash; 3] = [Dash::Solid, Dash::Dashed, Dash::Dotted];

    fn nth(index: usize) -> Dash {
        Dash::BY_INDEX[index % Dash::BY_INDEX.len()]
    }
}

/// A fault window on the time axis, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultBand {
    pub label: String,
    pub start_seconds: f64,
    pub end_seconds: f64,
}

/// Latency against percentile. Line x values are percentiles (0–100); the
/// renderer draws them on a log axis of 1/(1−q), from 50% to 99.99%.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileChart {
    pub y_label: String,
    pub lines: Vec<Line>,
}

/// Grouped bars: for each category, one bar per group.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub y_label: String,
    pub categories: Vec<String>,
    pub groups: Vec<BarGroup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    pub label: String,
    pub color: usize,
    /// One per category.
    pub values: Vec<u64>,
}

/// Turns a chart into image bytes. Implementations must not write files.
pub trait ChartRenderer {
    /// The file extension of the images, without dot (`png`).
    fn extension(&self) -> &'static str;
    /// The MIME type, for data URIs (`image/png`).
    fn mime_type(&self) -> &'static str;
    /// Renders one chart.
    fn render(&self, chart: &Chart) -> Result<Vec<u8>>;
}

/// The percentiles-over-time lines drawn per latency kind.
const OVER_TIME_STATS: [LatencyStat; 3] = [LatencyStat::P50, LatencyStat::P99, LatencyStat::P999];

/// The latency kinds shown in the over-time and quantile charts. Publish delay
/// (µs, the client's own scheduling lag) is in the tables only.
const CHARTED_KINDS: [LatencyKind; 3] = [LatencyKind::Publish, LatencyKind::PublishCorrected, LatencyKind::EndToEnd];

/// The charts for `runs`, in report order; a chart without data is left out.
/// `labels[i]` names `runs[i]` in legends (a missing one falls back to the run's
/// display label).
pub fn build_charts(runs: &[RunResult], labels: &[String]) -> Vec<Chart> {
    let input = ChartInput::new(runs, labels);
    ChartId::ALL
        .into_iter()
        .filter_map(|id| {
            let build = match id {
                ChartId::Throughput => throughput_chart,
                ChartId::Backlog => backlog_chart,
                ChartId::LatencyOverTime => latency_over_time_chart,
                ChartId::LatencyQuantiles => latency_quantiles_chart,
                ChartId::GuaranteeCounts => guarantee_counts_chart,
            };
            build(&input)
        })
        .collect()
}

/// What every chart is built from: the runs, their legend labels, and the fault
/// bands and time axis that all time-series charts share.
struct ChartInput<'a> {
    runs: &'a [RunResult],
    /// One per run.
    labels: Vec<String>,
    faults: Vec<FaultBand>,
    x_end_seconds: f64,
    /// Several runs overlaid: a colour per run, a dash per line of a run.
    overlay: bool,
}

impl<'a> ChartInput<'a> {
    fn new(runs: &'a [RunResult], labels: &[String]) -> Self {
        let labels = runs
            .iter()
            .enumerate()
            .map(|(i, run)| labels.get(i).cloned().unwrap_or_else(|| run.display_label()))
            .collect();
        let faults = fault_bands(runs);
        let x_end_seconds = time_axis_end(runs, &faults);
        ChartInput { runs, labels, faults, x_end_seconds, overlay: runs.len() > 1 }
    }

    /// Line `line_index` of run `run_index`, called `name`: with several runs, in
    /// the run's colour with the line's dash; with one, in the line's colour.
    fn line(&self, run_index: usize, line_index: usize, name: &str, points: Vec<(f64, Option<f64>)>) -> Line {
        Line {
            label: line_label(self.overlay, &self.labels[run_index], name),
            color: if self.overlay { run_index } else { line_index },
            dash: if self.overlay { Dash::nth(line_index) } else { Dash::Solid },
            points,
        }
    }

    /// A time-series body over `panels`, with the shared fault bands and time axis.
    fn time_series(&self, panels: Vec<Panel>) -> ChartBody {
        ChartBody::TimeSeries(TimeSeriesChart {
            panels,
            faults: self.faults.clone(),
            x_end_seconds: self.x_end_seconds,
        })
    }
}

/// Publish and consume rate over time, in messages and in megabytes (10^6 bytes)
/// per second; the MB/s panel needs the runs' message size and is left out when no
/// run has one.
fn throughput_chart(input: &ChartInput<'_>) -> Option<Chart> {
    let msg_lines = throughput_lines(input, |_| Some(1.0));
    if msg_lines.is_empty() {
        return None;
    }
    let mut panels = vec![Panel {
        title: "Publish and consume rate (msg/s)".into(),
        y_label: "msg/s".into(),
        y_scale: Scale::Linear,
        y_counts: false,
        lines: msg_lines,
    }];
    let megabytes = |run: &RunResult| (run.message_size > 0).then(|| run.message_size as f64 / 1e6);
    let mb_lines = throughput_lines(input, megabytes);
    if !mb_lines.is_empty() {
        panels.push(Panel {
            title: "Publish and consume rate (MB/s)".into(),
            y_label: "MB/s".into(),
            y_scale: Scale::Linear,
            y_counts: false,
            lines: mb_lines,
        });
    }
    Some(Chart {
        id: ChartId::Throughput,
        title: "Throughput".into(),
        caption: "Messages (and megabytes, 10^6 bytes of payload) per second acknowledged (publish) and \
                  consumed, per window; consume is dashed and drawn over publish, so where the two coincide \
                  both stay visible. Shaded bands are injected faults."
            .into(),
        body: input.time_series(panels),
    })
}

/// The publish and consume lines of every run, each rate multiplied by `unit(run)`;
/// a run whose `unit` is `None` is left out. Consume is dashed even for a single
/// run and comes after publish, so it is drawn on top of it.
fn throughput_lines(input: &ChartInput<'_>, unit: impl Fn(&RunResult) -> Option<f64>) -> Vec<Line> {
    let mut lines = Vec::new();
    for (run_index, run) in input.runs.iter().enumerate() {
        let Some(factor) = unit(run) else { continue };
        let named = [("publish", &run.publish_rate), ("consume", &run.consume_rate)];
        for (line_index, (name, rates)) in named.into_iter().enumerate() {
            if rates.is_empty() {
                continue;
            }
            let points =
                rates.iter().enumerate().map(|(i, &rate)| (run.window_end_seconds(i), Some(rate * factor))).collect();
            let mut line = input.line(run_index, line_index, name, points);
            line.dash = Dash::nth(line_index);
            lines.push(line);
        }
    }
    lines
}

/// Backlog over time: one line per run, in the run's colour even alone. A count:
/// the axis starts at 0 and a negative backlog (OMB's counts can dip below 0
/// while acknowledgements are in flight) is drawn as 0.
fn backlog_chart(input: &ChartInput<'_>) -> Option<Chart> {
    let lines: Vec<Line> = input
        .runs
        .iter()
        .enumerate()
        .filter(|(_, run)| !run.backlog.is_empty())
        .map(|(run_index, run)| Line {
            label: if input.overlay { input.labels[run_index].clone() } else { "backlog".into() },
            color: run_index,
            dash: Dash::Solid,
            points: run
                .backlog
                .iter()
                .enumerate()
                .map(|(i, &backlog)| (run.window_end_seconds(i), Some(backlog.max(0) as f64)))
                .collect(),
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    Some(Chart {
        id: ChartId::Backlog,
        title: "Backlog".into(),
        caption: "Messages published but not yet consumed at the end of each window.".into(),
        body: input.time_series(vec![Panel {
            title: "Backlog".into(),
            y_label: "messages".into(),
            y_scale: Scale::Linear,
            y_counts: true,
            lines,
        }]),
    })
}

/// Latency percentiles over time: one panel per charted kind that has windows.
fn latency_over_time_chart(input: &ChartInput<'_>) -> Option<Chart> {
    let panels: Vec<Panel> =
        CHARTED_KINDS.into_iter().filter_map(|kind| latency_over_time_panel(input, kind)).collect();
    if panels.is_empty() {
        return None;
    }
    Some(Chart {
        id: ChartId::LatencyOverTime,
        title: "Latency percentiles over time".into(),
        caption: "p50, p99 and p99.9 per window (log scale). Publish is send to ack, \
                  corrected is intended send to ack, end-to-end is send to consume."
            .into(),
        body: input.time_series(panels),
    })
}

/// The [`OVER_TIME_STATS`] lines of `kind` for every run; `None` when no run has a
/// window of them.
fn latency_over_time_panel(input: &ChartInput<'_>, kind: LatencyKind) -> Option<Panel> {
    let mut lines = Vec::new();
    for (run_index, run) in input.runs.iter().enumerate() {
        let view = run.latency(kind);
        for (stat_index, stat) in OVER_TIME_STATS.into_iter().enumerate() {
            let windows = view.windows(stat);
            if windows.iter().all(Option::is_none) {
                continue;
            }
            let points = windows.iter().enumerate().map(|(i, &value)| (run.window_end_seconds(i), value)).collect();
            lines.push(input.line(run_index, stat_index, stat.title(), points));
        }
    }
    if lines.is_empty() {
        return None;
    }
    Some(Panel {
        title: format!("{} latency", capitalise(kind.title())),
        y_label: kind.unit().into(),
        y_scale: Scale::Log,
        y_counts: false,
        lines,
    })
}

/// Latency by percentile over the whole measured phase, one line per charted kind.
fn latency_quantiles_chart(input: &ChartInput<'_>) -> Option<Chart> {
    let mut lines = Vec::new();
    for (run_index, run) in input.runs.iter().enumerate() {
        for (kind_index, kind) in CHARTED_KINDS.into_iter().enumerate() {
            let points = quantile_points(run, kind);
            if points.is_empty() {
                continue;
            }
            lines.push(input.line(run_index, kind_index, kind.title(), points));
        }
    }
    if lines.is_empty() {
        return None;
    }
    Some(Chart {
        id: ChartId::LatencyQuantiles,
        title: "Latency by percentile".into(),
        caption: "Latency over the whole measured phase by percentile; the percentile \
                  axis is logarithmic in 1/(1-q), so each step right is one more nine."
            .into(),
        body: ChartBody::Quantiles(QuantileChart { y_label: "ms".into(), lines }),
    })
}

/// The checker's anomaly counts, one bar group per checked run. A group is named by
/// its guarantee, and by its run too when another run has the same guarantee.
fn guarantee_counts_chart(input: &ChartInput<'_>) -> Option<Chart> {
    let checked: Vec<(usize, &RunResult)> =
        input.runs.iter().enumerate().filter(|(_, run)| run.checker.is_some()).collect();
    if checked.is_empty() {
        return None;
    }
    let mut categories = Vec::new();
    let mut groups = Vec::new();
    for (group_index, &(run_index, run)) in checked.iter().enumerate() {
        let Some(checker) = &run.checker else {
            continue;
        };
        let anomalies = checker.counts.anomalies();
        if categories.is_empty() {
            categories = anomalies.iter().map(|(name, _)| name.to_string()).collect();
        }
        let same_guarantee_elsewhere = checked.iter().any(|&(other, other_run)| {
            other != run_index && other_run.checker.as_ref().map(|c| c.guarantee) == Some(checker.guarantee)
        });
        groups.push(BarGroup {
            label: if same_guarantee_elsewhere {
                format!("{}: {}", checker.guarantee, input.labels[run_index])
            } else {
                checker.guarantee.to_string()
            },
            color: group_index,
            values: anomalies.iter().map(|&(_, count)| count).collect(),
        });
    }
    Some(Chart {
        id: ChartId::GuaranteeCounts,
        title: "Checker anomalies per delivery guarantee".into(),
        caption: "Messages per anomaly category after the final drain (lost, unseen \
                  and duplicate count once per subscription); ambiguous sends are \
                  counted apart, not as failures."
            .into(),
        body: ChartBody::Bars(BarChart { y_label: "messages".into(), categories, groups }),
    })
}

/// A run's latency distribution for the quantile chart: its quantile map, or, for a
/// result without one, its aggregated percentiles.
fn quantile_points(run: &RunResult, kind: LatencyKind) -> Vec<(f64, Option<f64>)> {
    let view = run.latency(kind);
    if !view.quantiles.is_empty() {
        return view.quantiles.points().iter().map(|&(q, value)| (q, Some(value))).collect();
    }
    LatencyStat::ALL.into_iter().filter_map(|stat| Some((stat.percentile()?, Some(view.aggregated(stat)?)))).collect()
}

/// Every run's fault windows as bands, deduplicated and ordered by start. Runs of
/// one schedule (one per guarantee) inject the same fault a few milliseconds
/// apart: windows with the same label whose ends are within
/// [`SAME_FAULT_SECONDS`] of each other are one band, spanning them all.
fn fault_bands(runs: &[RunResult]) -> Vec<FaultBand> {
    let run_end_seconds = |run: &RunResult| match run.window_count() {
        0 => 0.0,
        n => run.window_end_seconds(n - 1),
    };
    let mut bands: Vec<FaultBand> = Vec::new();
    for run in runs {
        for fault in &run.fault_windows {
            let band = band_of(fault, run_end_seconds(run));
            let same = |other: &&mut FaultBand| {
                other.label == band.label
                    && (other.start_seconds - band.start_seconds).abs() <= SAME_FAULT_SECONDS
                    && (other.end_seconds - band.end_seconds).abs() <= SAME_FAULT_SECONDS
            };
            match bands.iter_mut().find(same) {
                Some(other) => {
                    other.start_seconds = other.start_seconds.min(band.start_seconds);
                    other.end_seconds = other.end_seconds.max(band.end_seconds);
                }
                None => bands.push(band),
            }
        }
    }
    bands.sort_by(|a, b| a.start_seconds.total_cmp(&b.start_seconds));
    bands
}

/// How far apart two runs' windows of one scheduled fault may be (see [`fault_bands`]).
const SAME_FAULT_SECONDS: f64 = 0.5;

fn band_of(fault: &FaultWindow, run_end_seconds: f64) -> FaultBand {
    let start_seconds = (fault.start_ms as f64 / 1000.0).max(0.0);
    let end_seconds = match fault.end_ms {
        Some(end_ms) => (end_ms as f64 / 1000.0).max(start_seconds),
        None => run_end_seconds.max(start_seconds),
    };
    FaultBand { label: fault.label(), start_seconds, end_seconds }
}

fn time_axis_end(runs: &[RunResult], faults: &[FaultBand]) -> f64 {
    let windows_end = runs
        .iter()
        .filter_map(|run| run.window_count().checked_sub(1).map(|last| run.window_end_seconds(last)))
        .fold(0.0_f64, f64::max);
    let faults_end = faults.iter().map(|band| band.end_seconds).fold(0.0_f64, f64::max);
    let end = windows_end.max(faults_end);
    if end > 0.0 {
        end
    } else {
        1.0
    }
}

fn line_label(overlay: bool, run_label: &str, line: &str) -> String {
    if overlay {
        format!("{run_label}: {line}")
    } else {
        line.to_string()
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(windows: &[(&str, i64, i64)]) -> RunResult {
        let mut run = RunResult::new();
        run.fault_windows = windows
            .iter()
            .map(|&(target, start_ms, end_ms)| FaultWindow {
                kind: "crash".to_string(),
                target: target.to_string(),
                start_ms,
                end_ms: Some(end_ms),
                parameters: serde_json::Value::Null,
                ..FaultWindow::default()
            })
            .collect();
        run
    }

    #[test]
    fn throughput_is_charted_in_msg_and_mb_per_second_with_consume_dashed_over_publish() {
        let mut run = RunResult::new();
        run.message_size = 1000;
        run.publish_rate = vec![2000.0, 2000.0];
        run.consume_rate = vec![2000.0, 2000.0];
        run.backlog = vec![-3, 5];
        run.window_end_ms = vec![1000, 2000];
        let charts = build_charts(&[run], &["run".into()]);
        let ChartBody::TimeSeries(throughput) = &charts[0].body else { panic!("a time series") };
        assert_eq!(throughput.x_end_seconds, 2.0, "the axis ends with the data");
        let units: Vec<&str> = throughput.panels.iter().map(|p| p.y_label.as_str()).collect();
        assert_eq!(units, ["msg/s", "MB/s"]);
        let mb = &throughput.panels[1].lines;
        assert_eq!(mb[0].points[0].1, Some(2.0));
        let drawn: Vec<(&str, Dash)> = mb.iter().map(|l| (l.label.as_str(), l.dash)).collect();
        assert_eq!(drawn, [("publish", Dash::Solid), ("consume", Dash::Dashed)], "consume last, so on top");
        let ChartBody::TimeSeries(backlog) = &charts[1].body else { panic!("a time series") };
        assert!(backlog.panels[0].y_counts);
        assert_eq!(backlog.panels[0].lines[0].points[0].1, Some(0.0), "a negative backlog is drawn as 0");
    }

    #[test]
    fn one_scheduled_fault_in_several_runs_is_one_band_and_distinct_faults_stay_apart() {
        let runs = [
            run_with(&[("broker-0", 6_002, 8_002), ("broker-0", 20_000, 21_000)]),
            run_with(&[("broker-0", 6_000, 8_010)]),
            run_with(&[("broker-1", 6_001, 8_001)]),
        ];
        let bands = fault_bands(&runs);
        assert_eq!(bands.len(), 3, "{bands:?}");
        assert_eq!((bands[0].start_seconds, bands[0].end_seconds), (6.0, 8.01));
        assert_eq!(bands[1].label, "crash broker-1");
        assert_eq!(bands[2].start_seconds, 20.0);
    }
}
