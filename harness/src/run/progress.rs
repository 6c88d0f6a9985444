//! What a run shows while it goes (the live progress line) and keeps for the end
//! (HdrHistogram interval logs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use super::WINDOW;
use crate::run::metrics::Window;

/// HdrHistogram interval logs (one file per latency, HdrHistogram's log format),
/// kept in memory during the run and written at the end.
pub(super) struct HistogramLogs {
    dir: PathBuf,
    windows: Vec<(Duration, [Histogram<u64>; 4])>,
}

impl HistogramLogs {
    const NAMES: [&'static str; 4] =
        ["publish-latency", "publish-corrected-latency", "publish-delay-latency", "end-to-end-latency"];

    pub(super) fn create(dir: &Path) -> anyhow::Result<HistogramLogs> {
        Ok(HistogramLogs { dir: dir.to_path_buf(), windows: Vec::new() })
    }

    pub(super) fn write(&mut self, window: &Window, elapsed: Duration) -> anyhow::Result<()> {
        let histograms = [
            window.publish_service_us.clone(),
            window.publish_corrected_us.clone(),
            window.publish_delay_us.clone(),
            window.end_to_end_us.clone(),
        ];
        self.windows.push((elapsed.saturating_sub(WINDOW), histograms));
        Ok(())
    }

    pub(super) fn finish(&self) -> anyhow::Result<()> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use std::io::Write;
        let mut serializer = hdrhistogram::serialization::V2Serializer::new();
        for (index, name) in Self::NAMES.iter().enumerate() {
            let path = self.dir.join(format!("{name}.hlog"));
            let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut file = std::io::BufWriter::new(file);
            {
                let mut writer = IntervalLogWriterBuilder::new()
                    .add_comment(&format!("corelog {name}, microseconds"))
                    .begin_log_with(&mut file, &mut serializer)
                    .with_context(|| format!("writing {}", path.display()))?;
                let tag = Tag::new(name);
                for (start, histograms) in &self.windows {
                    writer
                        .write_histogram(&histograms[index], *start, WINDOW, tag)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
                }
            }
            file.flush().with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// How often `corelog run` prints a progress line; `None`: never (`--quiet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProgressEvery(pub Option<Duration>);

/// What one progress line says: the figures of the interval since the previous
/// line, in plain numbers so that the line's format can be tested on fixed inputs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntervalFigures {
    /// Since the producers started (warm-up included).
    pub elapsed: Duration,
    /// `warm-up`, `test` or `drain`.
    pub phase: &'static str,
    /// The interval's length, in seconds.
    pub seconds: f64,
    pub published: u64,
    pub published_bytes: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    /// Acknowledged and not yet consumed, per subscription, at the interval's end.
    pub backlog: i64,
    /// Publish latency over the interval, `None` when nothing was acknowledged.
    pub publish_p50_us: Option<u64>,
    pub publish_p99_us: Option<u64>,
    /// Sends that failed or whose outcome is unknown, over the interval.
    pub errors: u64,
    /// The scheduled faults in effect at the interval's end.
    pub faults: Vec<String>,
}

/// One aligned progress line, as OpenMessaging Benchmark prints one per interval:
/// rates in msg/s and MB/s (10^6 bytes), backlog, publish p50/p99 in ms, errors and
/// the faults in effect.
pub(crate) fn progress_line(label: &str, figures: &IntervalFigures) -> String {
    let seconds = figures.seconds.max(1e-6);
    let rate = |count: u64| count as f64 / seconds;
    let megabytes = |bytes: u64| bytes as f64 / seconds / 1e6;
    let latency = |us: Option<u64>| us.map_or_else(|| "-".to_string(), |us| format!("{:.3}", us as f64 / 1000.0));
    let faults = if figures.faults.is_empty() { "none".to_string() } else { figures.faults.join(", ") };
    format!(
        "{label} {:>6}s {:<7} | pub {:>10.1} msg/s {:>8.2} MB/s | cons {:>10.1} msg/s {:>8.2} MB/s | backlog {:>9} | \
         pub p50 {:>8} ms p99 {:>8} ms | errors {:>5} | faults {faults}",
        figures.elapsed.as_secs(),
        figures.phase,
        rate(figures.published),
        megabytes(figures.published_bytes),
        rate(figures.consumed),
        megabytes(figures.consumed_bytes),
        figures.backlog,
        latency(figures.publish_p50_us),
        latency(figures.publish_p99_us),
        figures.errors,
    )
}

/// One execution's closing figures: what it sustained, and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClosingFigures {
    /// The mean of the measured windows' publish rates, msg/s.
    pub publish_rate: f64,
    pub message_size_bytes: u64,
    pub publish_p99_ms: Option<f64>,
    pub end_to_end_p99_ms: Option<f64>,
    /// `PASS`, `FAIL` or `UNKNOWN`; `None` when nothing was judged.
    pub verdict: Option<&'static str>,
}

/// The closing summary's line for one execution (one guarantee): throughput,
/// publish and end-to-end p99, and the verdict.
pub(crate) fn closing_line(label: &str, figures: &ClosingFigures) -> String {
    let latency = |ms: Option<f64>| ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.3} ms"));
    format!(
        "  {label}: {:.1} msg/s ({:.2} MB/s), publish p99 {}, end-to-end p99 {}: {}",
        figures.publish_rate,
        figures.publish_rate * figures.message_size_bytes as f64 / 1e6,
        latency(figures.publish_p99_ms),
        latency(figures.end_to_end_p99_ms),
        figures.verdict.unwrap_or("not judged"),
    )
}

/// The line that closes a phase outside the measured time (see [`phase`]).
pub(crate) fn phase_line(what: &str, took: Duration) -> String {
    format!("  {what}: done in {:.1} s", took.as_secs_f64())
}

/// Runs `step`, a phase outside the measured time (starting the brokers, the
/// checker's pass over the history), under a spinner saying `what` while it runs
/// when stderr is a terminal (indicatif draws nothing otherwise), then prints a
/// [`phase_line`]. `--quiet` (`every` of `None`) shows neither.
pub(super) fn phase<T>(every: ProgressEvery, what: &str, step: impl FnOnce() -> T) -> T {
    if every.0.is_none() {
        return step();
    }
    let started = std::time::Instant::now();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("{what}…"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let value = step();
    spinner.finish_and_clear();
    eprintln!("{}", phase_line(what, started.elapsed()));
    value
}

/// A scheduled fault: in effect from `from` to `until`, measured from the start of
/// the warm-up.
pub(super) struct ScheduledFault {
    pub from: Duration,
    pub until: Duration,
    pub label: String,
}

/// The live progress: a bar over warm-up and test on a terminal, and every
/// [`ProgressEvery`] one [`progress_line`], above the bar on a terminal and as a
/// plain line when stderr is not one.
pub(super) struct Progress {
    bar: indicatif::ProgressBar,
    label: String,
    every: ProgressEvery,
    /// What the windows since the last line added up to.
    pending: Pending,
    /// When the last line was printed, since the start of the warm-up.
    last_line: Duration,
    faults: Vec<ScheduledFault>,
}

/// The windows since the last progress line.
struct Pending {
    seconds: f64,
    counts: crate::run::metrics::Counts,
    publish_us: Histogram<u64>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            seconds: 0.0,
            counts: Default::default(),
            publish_us: Histogram::new(3).expect("3 significant figures is a valid histogram"),
        }
    }
}

impl Progress {
    pub(super) fn new(total: Duration, label: String, every: ProgressEvery) -> Progress {
        let target = if every.0.is_some() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let bar = indicatif::ProgressBar::with_draw_target(Some(total.as_secs()), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template("  [{elapsed_precise}/{duration_precise}] {bar:30} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress { bar, label, every, pending: Pending::new(), last_line: Duration::ZERO, faults: Vec::new() }
    }

    pub(super) fn set_faults(&mut self, faults: Vec<ScheduledFault>) {
        self.faults = faults;
    }

    /// Adds a window; prints a progress line when the interval has passed.
    pub(super) fn update(
        &mut self,
        elapsed: Duration,
        phase: &'static str,
        window: &Window,
        seconds: f64,
        backlog: i64,
    ) {
        self.bar.set_position(elapsed.as_secs());
        self.bar.set_message(format!("{phase}, backlog {backlog}"));
        self.pending.seconds += seconds;
        self.pending.counts += window.counts;
        // Both histograms track the same range, so adding cannot fail.
        self.pending.publish_us.add(&window.publish_service_us).ok();
        let Some(interval) = self.every.0 else { return };
        if elapsed.saturating_sub(self.last_line) < interval {
            return;
        }
        let pending = std::mem::replace(&mut self.pending, Pending::new());
        let acknowledged = !pending.publish_us.is_empty();
        let figures = IntervalFigures {
            elapsed,
            phase,
            seconds: pending.seconds,
            published: pending.counts.acknowledged,
            published_bytes: pending.counts.acknowledged_bytes,
            consumed: pending.counts.consumed,
            consumed_bytes: pending.counts.consumed_bytes,
            backlog,
            publish_p50_us: acknowledged.then(|| pending.publish_us.value_at_quantile(0.5)),
            publish_p99_us: acknowledged.then(|| pending.publish_us.value_at_quantile(0.99)),
            errors: pending.counts.failed + pending.counts.ambiguous,
            faults: self
                .faults
                .iter()
                .filter(|fault| fault.from <= elapsed && elapsed < fault.until)
                .map(|fault| fault.label.clone())
                .collect(),
        };
        let line = progress_line(&self.label, &figures);
        self.last_line = elapsed;
        // A hidden bar prints nothing, so without a terminal the line goes alone.
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> IntervalFigures {
        IntervalFigures {
            elapsed: Duration::from_secs(15),
            phase: "test",
            seconds: 5.0,
            published: 10_000,
            published_bytes: 5_120_000,
            consumed: 9_990,
            consumed_bytes: 5_114_880,
            backlog: 10,
            publish_p50_us: Some(1_234),
            publish_p99_us: Some(15_871),
            errors: 0,
            faults: Vec::new(),
        }
    }

    #[test]
    fn a_progress_line_gives_rates_backlog_latency_errors_and_faults_in_aligned_columns() {
        let steady = progress_line("e2e (at-least-once)", &figures());
        let mut faulted = figures();
        faulted.elapsed = Duration::from_secs(120);
        faulted.published = 123_456_789;
        faulted.publish_p50_us = None;
        faulted.publish_p99_us = None;
        faulted.errors = 3;
        faulted.backlog = -2;
        faulted.faults = vec!["crash broker-1".to_string(), "latency all".to_string()];
        let faulted = progress_line("e2e (at-least-once)", &faulted);
        let golden = "\
e2e (at-least-once)     15s test    | pub     2000.0 msg/s     1.02 MB/s | cons     1998.0 msg/s     1.02 MB/s | backlog        10 | pub p50    1.234 ms p99   15.871 ms | errors     0 | faults none
e2e (at-least-once)    120s test    | pub 24691357.8 msg/s     1.02 MB/s | cons     1998.0 msg/s     1.02 MB/s | backlog        -2 | pub p50        - ms p99        - ms | errors     3 | faults crash broker-1, latency all";
        assert_eq!(format!("{steady}\n{faulted}"), golden);
        // Every column starts at the same place on both lines.
        let columns = |line: &str| line.match_indices('|').map(|(at, _)| at).collect::<Vec<_>>();
        assert_eq!(columns(&steady), columns(&faulted));
    }

    #[test]
    fn a_phase_line_says_what_ran_and_how_long_it_took() {
        assert_eq!(
            phase_line("starting 3 brokers", Duration::from_millis(4_240)),
            "  starting 3 brokers: done in 4.2 s"
        );
        let quiet = ProgressEvery(None);
        assert_eq!(phase(quiet, "checking", || 7), 7, "the step's value comes back, quiet or not");
    }

    #[test]
    fn the_closing_line_gives_throughput_both_p99s_and_the_verdict() {
        let judged = ClosingFigures {
            publish_rate: 1999.95,
            message_size_bytes: 512,
            publish_p99_ms: Some(5.8714),
            end_to_end_p99_ms: Some(12.3),
            verdict: Some("PASS"),
        };
        assert_eq!(
            closing_line("e2e-short (at-least-once)", &judged),
            "  e2e-short (at-least-once): 2000.0 msg/s (1.02 MB/s), publish p99 5.871 ms, end-to-end p99 12.300 ms: PASS"
        );
        let unjudged = ClosingFigures { end_to_end_p99_ms: None, verdict: None, ..judged };
        assert_eq!(
            closing_line("producer-only", &unjudged),
            "  producer-only: 2000.0 msg/s (1.02 MB/s), publish p99 5.871 ms, end-to-end p99 -: not judged"
        );
    }
}
