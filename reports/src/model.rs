//! The result model: every type written to or read from `result.json`, in one place.
//!
//! A [`RunResult`] is one execution of a workload (under at most one delivery
//! guarantee). Its JSON is a superset of OpenMessaging Benchmark's `TestResult`: every
//! OMB field keeps OMB's name, unit and shape, so OMB's own tooling reads a corelog
//! result, and an OMB result loads here (as schema version 0, see [`load_result`]).
//! corelog's additions use the same camelCase style and, where they are new scalars,
//! name their unit last (`windowEndMs`, `startMs`).
//!
//! Units, as OMB defines them:
//! - rates are messages per second, one value per window;
//! - `publishLatency*`, `endToEndLatency*` and corelog's `publishCorrectedLatency*`
//!   are milliseconds (fractional);
//! - `publishDelayLatency*` are microseconds.
//!
//! A latency statistic with no samples (an idle window, a run that consumed nothing)
//! is `null`, not 0: `Option<f64>` here, a gap in the charts.
//!
//! Unknown fields are ignored, so this reader keeps working when a later corelog
//! adds an optional field without bumping [`SCHEMA_VERSION`].
//!
//! Time: t = 0 is the start of the measured phase (after warm-up). Window ends and
//! fault windows are milliseconds from t = 0; `startedAtMs` anchors t = 0 to the
//! wall clock.
//!
//! Limits: the model holds whole runs in memory (a one-hour run at one-second windows
//! is a few megabytes of JSON); HdrHistogram logs are separate files, referenced by
//! nothing here yet.
//!
//! [`load_result`]: crate::load_result

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema version this crate writes and reads. Bump it on any change that an
/// older reader would misread (a renamed field, a changed unit); adding an optional
/// field does not need a bump.
pub const SCHEMA_VERSION: u32 = 1;

/// The version a result without `schemaVersion` is given: an OMB `TestResult`.
pub const OMB_SCHEMA_VERSION: u32 = 0;

/// OMB's default statistics window, used for the time axis of results that carry
/// no `windowEndMs` (OMB's own results).
pub const OMB_WINDOW_MS: u64 = 10_000;

/// One execution of a workload: OMB's `TestResult` fields plus corelog's own.
///
/// The per-window fields (`publishRate` … `endToEndLatencyMax`) are parallel arrays,
/// one element per statistics window; `windowEndMs` gives each window's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunResult {
    /// [`SCHEMA_VERSION`] when corelog wrote it; [`OMB_SCHEMA_VERSION`] (absent in
    /// the JSON) for an OMB result.
    #[serde(default = "omb_schema_version")]
    pub schema_version: u32,
    /// Display name in legends and tables. `load_result` fills it from the file
    /// name when absent.
    pub label: Option<String>,

    // --- OMB TestResult: the run's shape -------------------------------------
    /// The workload's name (OMB: `workload`).
    pub workload: String,
    /// The driver's name (`kafka`, `embedded`, or OMB's driver name).
    pub driver: String,
    pub message_size: u64,
    pub topics: u32,
    pub partitions: u32,
    pub producers_per_topic: u32,
    pub consumers_per_topic: u32,

    // --- OMB TestResult: per-window throughput --------------------------------
    /// Messages acknowledged per second, per window.
    pub publish_rate: Vec<f64>,
    /// Failed sends per second, per window.
    pub publish_error_rate: Vec<f64>,
    /// Messages consumed per second, per window.
    pub consume_rate: Vec<f64>,
    /// Messages published but not yet consumed (summed over subscriptions) at each
    /// window's end. May be negative briefly, as in OMB.
    pub backlog: Vec<i64>,

    // --- OMB TestResult: publish latency (send → ack, "service time"), ms -----
    pub publish_latency_avg: Vec<Option<f64>>,
    pub publish_latency_50pct: Vec<Option<f64>>,
    pub publish_latency_75pct: Vec<Option<f64>>,
    pub publish_latency_95pct: Vec<Option<f64>>,
    pub publish_latency_99pct: Vec<Option<f64>>,
    pub publish_latency_999pct: Vec<Option<f64>>,
    pub publish_latency_9999pct: Vec<Option<f64>>,
    pub publish_latency_99999pct: Vec<Option<f64>>,
    pub publish_latency_max: Vec<Option<f64>>,

    // --- OMB TestResult: publish delay (intended send → actual send), µs ------
    pub publish_delay_latency_avg: Vec<Option<f64>>,
    pub publish_delay_latency_50pct: Vec<Option<f64>>,
    pub publish_delay_latency_75pct: Vec<Option<f64>>,
    pub publish_delay_latency_95pct: Vec<Option<f64>>,
    pub publish_delay_latency_99pct: Vec<Option<f64>>,
    pub publish_delay_latency_999pct: Vec<Option<f64>>,
    pub publish_delay_latency_9999pct: Vec<Option<f64>>,
    pub publish_delay_latency_99999pct: Vec<Option<f64>>,
    pub publish_delay_latency_max: Vec<Option<f64>>,

    // --- OMB TestResult: aggregated over the measured phase -------------------
    pub aggregated_publish_latency_avg: Option<f64>,
    pub aggregated_publish_latency_50pct: Option<f64>,
    pub aggregated_publish_latency_75pct: Option<f64>,
    pub aggregated_publish_latency_95pct: Option<f64>,
    pub aggregated_publish_latency_99pct: Option<f64>,
    pub aggregated_publish_latency_999pct: Option<f64>,
    pub aggregated_publish_latency_9999pct: Option<f64>,
    pub aggregated_publish_latency_99999pct: Option<f64>,
    pub aggregated_publish_latency_max: Option<f64>,

    pub aggregated_publish_delay_latency_avg: Option<f64>,
    pub aggregated_publish_delay_latency_50pct: Option<f64>,
    pub aggregated_publish_delay_latency_75pct: Option<f64>,
    pub aggregated_publish_delay_latency_95pct: Option<f64>,
    pub aggregated_publish_delay_latency_99pct: Option<f64>,
    pub aggregated_publish_delay_latency_999pct: Option<f64>,
    pub aggregated_publish_delay_latency_9999pct: Option<f64>,
    pub aggregated_publish_delay_latency_99999pct: Option<f64>,
    pub aggregated_publish_delay_latency_max: Option<f64>,

    /// Percentile (0–100) → publish latency (ms), as OMB's
    /// `aggregatedPublishLatencyQuantiles`.
    pub aggregated_publish_latency_quantiles: Quantiles,
    /// Percentile → publish delay (µs).
    pub aggregated_publish_delay_latency_quantiles: Quantiles,

    // --- OMB TestResult: end-to-end latency (send time in payload → consumed), ms
    pub end_to_end_latency_avg: Vec<Option<f64>>,
    pub end_to_end_latency_50pct: Vec<Option<f64>>,
    pub end_to_end_latency_75pct: Vec<Option<f64>>,
    pub end_to_end_latency_95pct: Vec<Option<f64>>,
    pub end_to_end_latency_99pct: Vec<Option<f64>>,
    pub end_to_end_latency_999pct: Vec<Option<f64>>,
    pub end_to_end_latency_9999pct: Vec<Option<f64>>,
    pub end_to_end_latency_99999pct: Vec<Option<f64>>,
    pub end_to_end_latency_max: Vec<Option<f64>>,

    /// Percentile → end-to-end latency (ms).
    pub aggregated_end_to_end_latency_quantiles: Quantiles,

    pub aggregated_end_to_end_latency_avg: Option<f64>,
    pub aggregated_end_to_end_latency_50pct: Option<f64>,
    pub aggregated_end_to_end_latency_75pct: Option<f64>,
    pub aggregated_end_to_end_latency_95pct: Option<f64>,
    pub aggregated_end_to_end_latency_99pct: Option<f64>,
    pub aggregated_end_to_end_latency_999pct: Option<f64>,
    pub aggregated_end_to_end_latency_9999pct: Option<f64>,
    pub aggregated_end_to_end_latency_99999pct: Option<f64>,
    pub aggregated_end_to_end_latency_max: Option<f64>,

    // --- corelog: corrected publish latency (intended send → ack), ms ---------
    // OMB's publishLatency starts at the actual send, so a stalled broker that
    // delays sends hides its stall there (coordinated omission); this one starts at
    // the time the open-loop schedule meant to send.
    pub publish_corrected_latency_avg: Vec<Option<f64>>,
    pub publish_corrected_latency_50pct: Vec<Option<f64>>,
    pub publish_corrected_latency_75pct: Vec<Option<f64>>,
    pub publish_corrected_latency_95pct: Vec<Option<f64>>,
    pub publish_corrected_latency_99pct: Vec<Option<f64>>,
    pub publish_corrected_latency_999pct: Vec<Option<f64>>,
    pub publish_corrected_latency_9999pct: Vec<Option<f64>>,
    pub publish_corrected_latency_99999pct: Vec<Option<f64>>,
    pub publish_corrected_latency_max: Vec<Option<f64>>,

    pub aggregated_publish_corrected_latency_avg: Option<f64>,
    pub aggregated_publish_corrected_latency_50pct: Option<f64>,
    pub aggregated_publish_corrected_latency_75pct: Option<f64>,
    pub aggregated_publish_corrected_latency_95pct: Option<f64>,
    pub aggregated_publish_corrected_latency_99pct: Option<f64>,
    pub aggregated_publish_corrected_latency_999pct: Option<f64>,
    pub aggregated_publish_corrected_latency_9999pct: Option<f64>,
    pub aggregated_publish_corrected_latency_99999pct: Option<f64>,
    pub aggregated_publish_corrected_latency_max: Option<f64>,

    /// Percentile → corrected publish latency (ms).
    pub aggregated_publish_corrected_latency_quantiles: Quantiles,

    // --- corelog: time --------------------------------------------------------
    /// Unix time (ms) of t = 0, the start of the measured phase.
    pub started_at_ms: Option<u64>,
    /// End of each window, ms from t = 0; parallel to the per-window arrays. Empty
    /// for OMB results, whose windows are taken as [`OMB_WINDOW_MS`] long.
    pub window_end_ms: Vec<u64>,

    // --- corelog: what ran, where ---------------------------------------------
    /// The workload as run (after defaults), as parsed from its YAML.
    pub workload_echo: serde_json::Value,
    /// The workload file's text as the user wrote it, if the harness kept it.
    pub workload_source: Option<String>,
    pub environment: Environment,

    // --- corelog: counts ------------------------------------------------------
    pub counts: RawCounts,
    /// Samples that did not fit a histogram's range, per histogram. They are
    /// counted, never dropped silently; a non-zero count means the percentiles
    /// above are lower bounds.
    pub out_of_range_samples: OutOfRangeSamples,
    /// Errors seen, grouped by operation and error name: the failed sends by the
    /// client's error text, sends the client refused (`send`), and faults that
    /// could not be applied or undone (`fault`). Their counts add up to
    /// `counts.errors` but for the `fault` ones, which are not message errors.
    pub errors: Vec<ErrorCount>,
    /// The run was interrupted (Ctrl-C, SIGTERM) before it ended: its windows
    /// stop early and its drain may not have finished, so its figures cover only
    /// what ran.
    pub partial: bool,
    /// Which of the repeats of a `corelog run --repeat N` this is; `None` for a
    /// run that was not repeated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,

    // --- corelog: chaos ---------------------------------------------------------
    /// Faults injected during the run (empty without a fault schedule).
    pub fault_windows: Vec<FaultWindow>,
    /// The delivery guarantee the clients were configured for, if the workload
    /// named one.
    pub delivery_guarantee: Option<Guarantee>,
    /// The checker's classification and verdict, if the checker ran.
    pub checker: Option<CheckerResult>,
    /// The exactly-once guarantee's transactional stage: what it committed and
    /// aborted, and how long its commits took. `None` for the other guarantees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageSummary>,
}

fn omb_schema_version() -> u32 {
    OMB_SCHEMA_VERSION
}

impl Default for RunResult {
    /// An empty result at the current [`SCHEMA_VERSION`], for the harness to fill.
    // long-functions: table (one struct literal, a field a line, that serde's default reads)
    fn default() -> Self {
        RunResult {
            schema_version: SCHEMA_VERSION,
            label: None,
            workload: String::new(),
            driver: String::new(),
            message_size: 0,
            topics: 0,
            partitions: 0,
            producers_per_topic: 0,
            consumers_per_topic: 0,
            publish_rate: Vec::new(),
            publish_error_rate: Vec::new(),
            consume_rate: Vec::new(),
            backlog: Vec::new(),
            publish_latency_avg: Vec::new(),
            publish_latency_50pct: Vec::new(),
            publish_latency_75pct: Vec::new(),
            publish_latency_95pct: Vec::new(),
            publish_latency_99pct: Vec::new(),
            publish_latency_999pct: Vec::new(),
            publish_latency_9999pct: Vec::new(),
            publish_latency_99999pct: Vec::new(),
            publish_latency_max: Vec::new(),
            publish_delay_latency_avg: Vec::new(),
            publish_delay_latency_50pct: Vec::new(),
            publish_delay_latency_75pct: Vec::new(),
            publish_delay_latency_95pct: Vec::new(),
            publish_delay_latency_99pct: Vec::new(),
            publish_delay_latency_999pct: Vec::new(),
            publish_delay_latency_9999pct: Vec::new(),
            publish_delay_latency_99999pct: Vec::new(),
            publish_delay_latency_max: Vec::new(),
            aggregated_publish_latency_avg: None,
            aggregated_publish_latency_50pct: None,
            aggregated_publish_latency_75pct: None,
            aggregated_publish_latency_95pct: None,
            aggregated_publish_latency_99pct: None,
            aggregated_publish_latency_999pct: None,
            aggregated_publish_latency_9999pct: None,
            aggregated_publish_latency_99999pct: None,
            aggregated_publish_latency_max: None,
            aggregated_publish_delay_latency_avg: None,
            aggregated_publish_delay_latency_50pct: None,
            aggregated_publish_delay_latency_75pct: None,
            aggregated_publish_delay_latency_95pct: None,
            aggregated_publish_delay_latency_99pct: None,
            aggregated_publish_delay_latency_999pct: None,
            aggregated_publish_delay_latency_9999pct: None,
            aggregated_publish_delay_latency_99999pct: None,
            aggregated_publish_delay_latency_max: None,
            aggregated_publish_latency_quantiles: Quantiles::default(),
            aggregated_publish_delay_latency_quantiles: Quantiles::default(),
            end_to_end_latency_avg: Vec::new(),
            end_to_end_latency_50pct: Vec::new(),
            end_to_end_latency_75pct: Vec::new(),
            end_to_end_latency_95pct: Vec::new(),
            end_to_end_latency_99pct: Vec::new(),
            end_to_end_latency_999pct: Vec::new(),
            end_to_end_latency_9999pct: Vec::new(),
            end_to_end_latency_99999pct: Vec::new(),
            end_to_end_latency_max: Vec::new(),
            aggregated_end_to_end_latency_quantiles: Quantiles::default(),
            aggregated_end_to_end_latency_avg: None,
            aggregated_end_to_end_latency_50pct: None,
            aggregated_end_to_end_latency_75pct: None,
            aggregated_end_to_end_latency_95pct: None,
            aggregated_end_to_end_latency_99pct: None,
            aggregated_end_to_end_latency_999pct: None,
            aggregated_end_to_end_latency_9999pct: None,
            aggregated_end_to_end_latency_99999pct: None,
            aggregated_end_to_end_latency_max: None,
            publish_corrected_latency_avg: Vec::new(),
            publish_corrected_latency_50pct: Vec::new(),
            publish_corrected_latency_75pct: Vec::new(),
            publish_corrected_latency_95pct: Vec::new(),
            publish_corrected_latency_99pct: Vec::new(),
            publish_corrected_latency_999pct: Vec::new(),
            publish_corrected_latency_9999pct: Vec::new(),
            publish_corrected_latency_99999pct: Vec::new(),
            publish_corrected_latency_max: Vec::new(),
            aggregated_publish_corrected_latency_avg: None,
            aggregated_publish_corrected_latency_50pct: None,
            aggregated_publish_corrected_latency_75pct: None,
            aggregated_publish_corrected_latency_95pct: None,
            aggregated_publish_corrected_latency_99pct: None,
            aggregated_publish_corrected_latency_999pct: None,
            aggregated_publish_corrected_latency_9999pct: None,
            aggregated_publish_corrected_latency_99999pct: None,
            aggregated_publish_corrected_latency_max: None,
            aggregated_publish_corrected_latency_quantiles: Quantiles::default(),
            started_at_ms: None,
            window_end_ms: Vec::new(),
            workload_echo: serde_json::Value::Null,
            workload_source: None,
            environment: Environment::default(),
            counts: RawCounts::default(),
            out_of_range_samples: OutOfRangeSamples::default(),
            errors: Vec::new(),
            partial: false,
            repeat: None,
            fault_windows: Vec::new(),
            delivery_guarantee: None,
            checker: None,
            stage: None,
        }
    }
}

/// The latency histograms a run records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LatencyKind {
    /// Send → ack (OMB's `publishLatency`), ms.
    Publish,
    /// Intended send → ack, ms (corelog).
    PublishCorrected,
    /// Intended send → actual send (OMB's `publishDelayLatency`), µs.
    PublishDelay,
    /// Send time carried in the payload → consumed (OMB's `endToEndLatency`), ms.
    EndToEnd,
}

impl LatencyKind {
    pub const ALL: [LatencyKind; 4] =
        [LatencyKind::Publish, LatencyKind::PublishCorrected, LatencyKind::PublishDelay, LatencyKind::EndToEnd];

    /// A short human name, as used in legends and tables.
    pub fn title(self) -> &'static str {
        match self {
            LatencyKind::Publish => "publish",
            LatencyKind::PublishCorrected => "publish (corrected)",
            LatencyKind::PublishDelay => "publish delay",
            LatencyKind::EndToEnd => "end-to-end",
        }
    }

    /// The unit of this kind's values.
    pub fn unit(self) -> &'static str {
        match self {
            LatencyKind::PublishDelay => "us",
            _ => "ms",
        }
    }
}

/// The statistics kept per latency kind, per window and aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LatencyStat {
    Avg,
    P50,
    P75,
    P95,
    P99,
    P999,
    P9999,
    P99999,
    Max,
}

impl LatencyStat {
    pub const ALL: [LatencyStat; 9] = [
        LatencyStat::Avg,
        LatencyStat::P50,
        LatencyStat::P75,
        LatencyStat::P95,
        LatencyStat::P99,
        LatencyStat::P999,
        LatencyStat::P9999,
        LatencyStat::P99999,
        LatencyStat::Max,
    ];

    pub fn title(self) -> &'static str {
        match self {
            LatencyStat::Avg => "avg",
            LatencyStat::P50 => "p50",
            LatencyStat::P75 => "p75",
            LatencyStat::P95 => "p95",
            LatencyStat::P99 => "p99",
            LatencyStat::P999 => "p99.9",
            LatencyStat::P9999 => "p99.99",
            LatencyStat::P99999 => "p99.999",
            LatencyStat::Max => "max",
        }
    }

    /// The percentile (0–100) this statistic is, if it is one.
    pub fn percentile(self) -> Option<f64> {
        match self {
            LatencyStat::P50 => Some(50.0),
            LatencyStat::P75 => Some(75.0),
            LatencyStat::P95 => Some(95.0),
            LatencyStat::P99 => Some(99.0),
            LatencyStat::P999 => Some(99.9),
            LatencyStat::P9999 => Some(99.99),
            LatencyStat::P99999 => Some(99.999),
            LatencyStat::Avg | LatencyStat::Max => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A borrowed, structured view of one latency kind's flat OMB-style fields.
#[derive(Debug, Clone, Copy)]
pub struct LatencyView<'a> {
    pub kind: LatencyKind,
    windows: [&'a [Option<f64>]; 9],
    aggregated: [Option<f64>; 9],
    pub quantiles: &'a Quantiles,
}

impl<'a> LatencyView<'a> {
    /// The per-window values of `stat` (one per window; `None` for no samples).
    pub fn windows(&self, stat: LatencyStat) -> &'a [Option<f64>] {
        self.windows[stat.index()]
    }

    /// The value of `stat` over the whole measured phase.
    pub fn aggregated(&self, stat: LatencyStat) -> Option<f64> {
        self.aggregated[stat.index()]
    }

    /// Whether this kind has any data at all (so renderers can leave it out).
    pub fn has_data(&self) -> bool {
        !self.quantiles.is_empty()
            || self.aggregated.iter().any(Option::is_some)
            || self.windows.iter().any(|w| w.iter().any(Option::is_some))
    }
}

/// A [`LatencyView`] of a [`RunResult`]'s flat fields: the nine per-window ones and the
/// nine aggregated ones, both in [`LatencyStat`] order, then the quantiles.
macro_rules! latency_view {
    ($result:expr, $kind:expr,
     $avg:ident, $p50:ident, $p75:ident, $p95:ident, $p99:ident, $p999:ident,
     $p9999:ident, $p99999:ident, $max:ident,
     $aavg:ident, $a50:ident, $a75:ident, $a95:ident, $a99:ident, $a999:ident,
     $a9999:ident, $a99999:ident, $amax:ident, $quantiles:ident) => {
        LatencyView {
            kind: $kind,
            windows: [
                &$result.$avg,
                &$result.$p50,
                &$result.$p75,
                &$result.$p95,
                &$result.$p99,
                &$result.$p999,
                &$result.$p9999,
                &$result.$p99999,
                &$result.$max,
            ],
            aggregated: [
                $result.$aavg,
                $result.$a50,
                $result.$a75,
                $result.$a95,
                $result.$a99,
                $result.$a999,
                $result.$a9999,
                $result.$a99999,
                $result.$amax,
            ],
            quantiles: &$result.$quantiles,
        }
    };
}

impl RunResult {
    /// An empty result at the current schema version (same as `default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this result came from OMB rather than corelog.
    pub fn is_omb(&self) -> bool {
        self.schema_version == OMB_SCHEMA_VERSION
    }

    /// The number of statistics windows (the longest per-window array).
    pub fn window_count(&self) -> usize {
        let latency_len = LatencyKind::ALL
            .iter()
            .flat_map(|&kind| {
                let view = self.latency(kind);
                LatencyStat::ALL.map(|stat| view.windows(stat).len())
            })
            .max()
            .unwrap_or(0);
        [
            self.publish_rate.len(),
            self.publish_error_rate.len(),
            self.consume_rate.len(),
            self.backlog.len(),
            latency_len,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// The end of window `index`, in seconds from t = 0: `windowEndMs` when the
    /// result has it for that window, else OMB's fixed [`OMB_WINDOW_MS`] windows.
    pub fn window_end_seconds(&self, index: usize) -> f64 {
        match self.window_end_ms.get(index) {
            Some(&end_ms) => end_ms as f64 / 1000.0,
            None => (index as f64 + 1.0) * OMB_WINDOW_MS as f64 / 1000.0,
        }
    }

    /// The label to show for this run: its `label`, else workload and guarantee.
    pub fn display_label(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        let workload = if self.workload.is_empty() { "run" } else { self.workload.as_str() };
        match self.delivery_guarantee {
            Some(guarantee) => format!("{workload} ({guarantee})"),
            None => workload.to_string(),
        }
    }

    /// The JSON names of fields holding NaN or infinity (none, in a valid result).
    pub fn non_finite_fields(&self) -> Vec<String> {
        let mut fields = Vec::new();
        let rates = [
            ("publishRate", &self.publish_rate),
            ("publishErrorRate", &self.publish_error_rate),
            ("consumeRate", &self.consume_rate),
        ];
        for (name, values) in rates {
            if values.iter().any(|v| !v.is_finite()) {
                fields.push(name.to_string());
            }
        }
        for kind in LatencyKind::ALL {
            let view = self.latency(kind);
            for stat in LatencyStat::ALL {
                let bad = |v: &Option<f64>| v.is_some_and(|v| !v.is_finite());
                if view.windows(stat).iter().any(bad) {
                    fields.push(format!("{} windows {}", kind.title(), stat.title()));
                }
                if bad(&view.aggregated(stat)) {
                    fields.push(format!("{} aggregated {}", kind.title(), stat.title()));
                }
            }
        }
        fields
    }

    /// A structured view of one latency kind.
    pub fn latency(&self, kind: LatencyKind) -> LatencyView<'_> {
        match kind {
            LatencyKind::Publish => self.publish_latency(),
            LatencyKind::PublishCorrected => self.publish_corrected_latency(),
            LatencyKind::PublishDelay => self.publish_delay_latency(),
            LatencyKind::EndToEnd => self.end_to_end_latency(),
        }
    }

    fn publish_latency(&self) -> LatencyView<'_> {
        latency_view!(
            self,
            LatencyKind::Publish,
            publish_latency_avg,
            publish_latency_50pct,
            publish_latency_75pct,
            publish_latency_95pct,
            publish_latency_99pct,
            publish_latency_999pct,
            publish_latency_9999pct,
            publish_latency_99999pct,
            publish_latency_max,
            aggregated_publish_latency_avg,
            aggregated_publish_latency_50pct,
            aggregated_publish_latency_75pct,
            aggregated_publish_latency_95pct,
            aggregated_publish_latency_99pct,
            aggregated_publish_latency_999pct,
            aggregated_publish_latency_9999pct,
            aggregated_publish_latency_99999pct,
            aggregated_publish_latency_max,
            aggregated_publish_latency_quantiles
        )
    }

    fn publish_corrected_latency(&self) -> LatencyView<'_> {
        latency_view!(
            self,
            LatencyKind::PublishCorrected,
            publish_corrected_latency_avg,
            publish_corrected_latency_50pct,
            publish_corrected_latency_75pct,
            publish_corrected_latency_95pct,
            publish_corrected_latency_99pct,
            publish_corrected_latency_999pct,
            publish_corrected_latency_9999pct,
            publish_corrected_latency_99999pct,
            publish_corrected_latency_max,
            aggregated_publish_corrected_latency_avg,
            aggregated_publish_corrected_latency_50pct,
            aggregated_publish_corrected_latency_75pct,
            aggregated_publish_corrected_latency_95pct,
            aggregated_publish_corrected_latency_99pct,
            aggregated_publish_corrected_latency_999pct,
            aggregated_publish_corrected_latency_9999pct,
            aggregated_publish_corrected_latency_99999pct,
            aggregated_publish_corrected_latency_max,
            aggregated_publish_corrected_latency_quantiles
        )
    }

    fn publish_delay_latency(&self) -> LatencyView<'_> {
        latency_view!(
            self,
            LatencyKind::PublishDelay,
            publish_delay_latency_avg,
            publish_delay_latency_50pct,
            publish_delay_latency_75pct,
            publish_delay_latency_95pct,
            publish_delay_latency_99pct,
            publish_delay_latency_999pct,
            publish_delay_latency_9999pct,
            publish_delay_latency_99999pct,
            publish_delay_latency_max,
            aggregated_publish_delay_latency_avg,
            aggregated_publish_delay_latency_50pct,
            aggregated_publish_delay_latency_75pct,
            aggregated_publish_delay_latency_95pct,
            aggregated_publish_delay_latency_99pct,
            aggregated_publish_delay_latency_999pct,
            aggregated_publish_delay_latency_9999pct,
            aggregated_publish_delay_latency_99999pct,
            aggregated_publish_delay_latency_max,
            aggregated_publish_delay_latency_quantiles
        )
    }

    fn end_to_end_latency(&self) -> LatencyView<'_> {
        latency_view!(
            self,
            LatencyKind::EndToEnd,
            end_to_end_latency_avg,
            end_to_end_latency_50pct,
            end_to_end_latency_75pct,
            end_to_end_latency_95pct,
            end_to_end_latency_99pct,
            end_to_end_latency_999pct,
            end_to_end_latency_9999pct,
            end_to_end_latency_99999pct,
            end_to_end_latency_max,
            aggregated_end_to_end_latency_avg,
            aggregated_end_to_end_latency_50pct,
            aggregated_end_to_end_latency_75pct,
            aggregated_end_to_end_latency_95pct,
            aggregated_end_to_end_latency_99pct,
            aggregated_end_to_end_latency_999pct,
            aggregated_end_to_end_latency_9999pct,
            aggregated_end_to_end_latency_99999pct,
            aggregated_end_to_end_latency_max,
            aggregated_end_to_end_latency_quantiles
        )
    }
}

/// A latency distribution as (percentile 0–100, value) points, ascending by
/// percentile. In JSON, an object keyed by the percentile as a string (`"99.9"`),
/// as OMB's Jackson-written `Map<Double, Double>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantiles(Vec<(f64, f64)>);

impl Quantiles {
    /// Builds from points in any order; the last of equal percentiles wins, and
    /// points with a non-finite percentile or value are left out.
    pub fn from_points(points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut points: Vec<(f64, f64)> =
            points.into_iter().filter(|(percentile, value)| percentile.is_finite() && value.is_finite()).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        Quantiles(points)
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Quantiles {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (percentile, value) in &self.0 {
            // `{:?}` keeps a ".0" on whole numbers ("50.0"), as Java's Double.toString.
            map.serialize_entry(&format!("{percentile:?}"), value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Quantiles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantilesVisitor;
        impl<'de> Visitor<'de> for QuantilesVisitor {
            type Value = Quantiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of percentile (\"99.9\") to latency")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Quantiles, A::Error> {
                let mut points = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, f64>()? {
                    let percentile: f64 = key
                        .trim()
                        .parse()
                        .map_err(|_| de::Error::custom(format!("quantile key {key:?} is not a percentile")))?;
                    if !(0.0..=100.0).contains(&percentile) {
                        return Err(de::Error::custom(format!("quantile key {key:?} is outside 0..=100")));
                    }
                    points.push((percentile, value));
                }
                Ok(Quantiles::from_points(points))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Quantiles, E> {
                Ok(Quantiles::default())
            }
        }
        deserializer.deserialize_any(QuantilesVisitor)
    }
}

/// Where the run happened. Every field is optional: an OMB result has none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Environment {
    /// As `/proc/cpuinfo`'s "model name".
    pub cpu_model: Option<String>,
    /// Logical CPUs online.
    pub cpu_cores: Option<u32>,
    /// How threads were pinned, in words ("broker shards on cores 0-1; clients on 2-3").
    pub pinning: Option<String>,
    /// Where the shards of each broker (or embedded engine) the harness started ran;
    /// empty for an external cluster.
    pub broker_cpus: Vec<BrokerCpus>,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// Distribution and version ("Debian GNU/Linux 12").
    pub os: Option<String>,
    pub memory_bytes: Option<u64>,
    pub hostname: Option<String>,
    /// The corelog version that produced the result.
    pub corelog_version: Option<String>,
    /// The git commit corelog was built from, with "-dirty" if the tree was.
    pub git_commit: Option<String>,
    /// Anything else worth recording (client library versions, cluster endpoints).
    pub extra: BTreeMap<String, String>,
}

/// The shards of one broker the harness started, and the CPUs they were pinned to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerCpus {
    /// The broker's name in fault targets (`broker-0`), or `engine` for the embedded one.
    pub broker: String,
    pub shards: u32,
    /// A CPU list in the Linux cpuset syntax (`0-1,3`; shard i on the i-th CPU,
    /// wrapping), or `unpinned`.
    pub cpus: String,
}

/// The run's raw message counts over the measured phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawCounts {
    /// Sends attempted.
    pub produced: u64,
    /// Sends the broker acknowledged.
    pub acknowledged: u64,
    /// Messages consumed (every delivery, duplicates included).
    pub consumed: u64,
    /// Failed operations (sends and consumes), the sum of `errors`.
    pub errors: u64,
}

/// Samples outside a histogram's trackable range, per latency kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutOfRangeSamples {
    pub publish_latency: u64,
    pub publish_corrected_latency: u64,
    pub publish_delay_latency: u64,
    pub end_to_end_latency: u64,
}

impl OutOfRangeSamples {
    pub fn total(&self) -> u64 {
        self.publish_latency + self.publish_corrected_latency + self.publish_delay_latency + self.end_to_end_latency
    }
}

/// One of the N repeats of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Repeat {
    /// 1-based.
    pub index: u32,
    pub count: u32,
}

/// Errors of one kind during one operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorCount {
    /// `produce`, `consume`, `commit`, `admin`, …
    pub operation: String,
    /// The Kafka error name or the client's error text (`REQUEST_TIMED_OUT`).
    pub error: String,
    pub count: u64,
    /// When it was first seen, ms from t = 0.
    pub first_ms: Option<i64>,
    /// The first occurrence, to start an investigation from (for a send, the
    /// message id `p<producer>:<sequence>`); `None` when not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// One injected fault, shaded on every time-series chart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultWindow {
    /// `crash`, `pause`, `restart`, `latency`, `bandwidth`, `reset`, `blackhole`,
    /// `down`, `partition`, …
    pub kind: String,
    /// What it hit: `broker-1`, `proxy broker-0 client->broker`.
    pub target: String,
    /// Start, ms from t = 0; negative if it began during warm-up (charts clip it).
    pub start_ms: i64,
    /// End, ms from t = 0; `None` if it lasted to the end of the run. Equal to
    /// `start_ms` for an instant fault (a connection reset).
    pub end_ms: Option<i64>,
    /// The fault's parameters as scheduled (`{"delayMs": 200, "jitterMs": 50}`).
    pub parameters: serde_json::Value,
    /// For a fault on the process of brokers of a cluster that led partitions of
    /// the run's topics: how long until the metadata named other leaders for them.
    /// `None` when not measured (one broker, other kinds, no metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_change: Option<LeaderChange>,
    /// The longest stretch without any acknowledged publish that began within the
    /// window (from `start_ms` to `end_ms`, or to the end of the run if open), in
    /// ms; 0 if acknowledgements never stopped. Measured from acknowledgements
    /// counted in 100 ms buckets, so it is a lower bound up to 200 ms short (up to
    /// 2 s short, at the 1 s resolution of the windows, when the harness kept no
    /// finer data); a stretch still going when the run ended counts to that end.
    /// `None` when not measured (an older result, a fault after the last window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_ack_ms: Option<i64>,
    /// Ms from `start_ms` until the publish rate was back within ±10% of its
    /// steady value and stayed there for 3 windows (3 s): the start of the first
    /// such window, 0 if the rate never left that band (resolution 1 s). The
    /// steady value is the median `publishRate` of the windows outside every fault
    /// and the 5 s after each. `None` when the rate had not recovered by the end
    /// of the run, when there was no steady value to compare with (fewer than 3
    /// windows outside the faults, or a median of 0), or when not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_recovered_ms: Option<i64>,
}

/// How leadership moved off the brokers a fault hit, as the cluster's metadata
/// showed it (polled every 100 ms from the fault's start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LeaderChange {
    /// Partitions of the run's topics that the faulted brokers led just before it.
    pub partitions: u32,
    /// Ms from the fault's start until every one of them had a leader other than
    /// the faulted brokers; `None` if that was not seen while watched.
    pub moved_ms: Option<i64>,
    /// How long the metadata was watched: until the leaders moved, the watch's
    /// bound, or the end of the run, whichever came first.
    pub watched_ms: i64,
}

impl FaultWindow {
    /// "kind target", as the chart labels it.
    pub fn label(&self) -> String {
        if self.target.is_empty() {
            self.kind.clone()
        } else {
            format!("{} {}", self.kind, self.target)
        }
    }
}

/// A delivery guarantee a run can be checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// acks=0/1, no retries, commit before processing: loss allowed, no duplicates.
    AtMostOnce,
    /// acks=all, retries, commit after processing: no loss, duplicates allowed.
    AtLeastOnce,
    /// An idempotent producer: no loss, no duplicates from producer retries.
    Idempotent,
    /// Transactions with read_committed: no loss, no duplicates, no aborted reads.
    ExactlyOnce,
}

impl Guarantee {
    pub const ALL: [Guarantee; 4] =
        [Guarantee::AtMostOnce, Guarantee::AtLeastOnce, Guarantee::Idempotent, Guarantee::ExactlyOnce];

    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtMostOnce => "at-most-once",
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::Idempotent => "idempotent",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The checker's result for one run: counts by category (Jepsen's words) and the
/// verdict against the run's guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckerResult {
    pub guarantee: Guarantee,
    #[serde(default)]
    pub counts: CheckerCounts,
    pub verdict: Verdict,
}

/// Message counts after the final drain (Jepsen's categories). Every message carries
/// a run-unique producer id and sequence number, so a message is one (producer,
/// sequence) pair however often it was stored or read.
///
/// Units: where a subscription (consumer group) is involved, a count is over
/// (subscription, message) pairs, so with two subscriptions one message never read
/// by either counts 2 under `lost`; every other count is over distinct messages.
/// A missing field reads as 0 (`writtenTwice` came later), so older `result.json`
/// files stay readable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckerCounts {
    /// Sends attempted (handed to the client), over messages.
    pub attempted: u64,
    /// Sends acknowledged by the cluster, over messages.
    pub acknowledged: u64,
    /// (subscription, message) pairs read at least once.
    pub consumed: u64,
    /// (subscription, message) pairs: acknowledged at an offset of a partition and
    /// never read by the subscription, although it read a later offset of that
    /// partition.
    pub lost: u64,
    /// (subscription, message) pairs: acknowledged and never read by the
    /// subscription, which read nothing beyond the message's offset either: possibly
    /// still in flight when the drain ended.
    pub unseen: u64,
    /// (subscription, message) pairs: read more than once by one subscription,
    /// whatever the cause (consumer redelivery, or a producer retry written twice).
    pub duplicate: u64,
    /// Messages, acknowledged or not, stored at two or more offsets (read at two
    /// offsets, or acknowledged at one and read at another): a producer retry wrote
    /// them again.
    pub written_twice: u64,
    /// Messages stored in a partition after a higher sequence number of the same
    /// producer (Jepsen's nonmonotonic send).
    pub reordered: u64,
    /// Messages read at a (topic, partition, offset) where a different message was
    /// also read: two messages at one offset, a broker bug.
    pub inconsistent_offsets: u64,
    /// Messages of an aborted transaction that a read_committed consumer saw.
    pub aborted_read: u64,
    /// Sends with no definite answer (timed out, connection lost, or no outcome at
    /// all): possibly persisted. Not failures; counted apart, over messages.
    pub ambiguous: u64,
}

impl CheckerCounts {
    /// The anomaly categories, in display order, with their counts: what the
    /// guarantee bar chart shows (attempted/acknowledged/consumed are not anomalies).
    pub fn anomalies(&self) -> [(&'static str, u64); 8] {
        [
            ("lost", self.lost),
            ("unseen", self.unseen),
            ("duplicate", self.duplicate),
            ("written twice", self.written_twice),
            ("reordered", self.reordered),
            ("inconsistent offsets", self.inconsistent_offsets),
            ("aborted read", self.aborted_read),
            ("ambiguous", self.ambiguous),
        ]
    }

    /// Every count, in display order.
    pub fn all(&self) -> [(&'static str, u64); 11] {
        let [a, b, c, d, e, f, g, h] = self.anomalies();
        [
            ("attempted", self.attempted),
            ("acknowledged", self.acknowledged),
            ("consumed", self.consumed),
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
        ]
    }
}

/// Whether a run kept its guarantee's promise, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub status: VerdictStatus,
    /// The promise checked, in words ("no acknowledged message lost").
    #[serde(default)]
    pub promise: String,
    /// One sentence per broken promise, or per reason the checker could not
    /// decide; then notes that did not change the status (starting "Note:"). A
    /// passing verdict has notes at most.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Example message ids per category, to start an investigation from.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictStatus {
    /// The promise held.
    Pass,
    /// The promise was broken.
    Fail,
    /// The checker could not decide (the drain did not finish, too many ambiguous
    /// sends).
    Unknown,
}

impl VerdictStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictStatus::Pass => "PASS",
            VerdictStatus::Fail => "FAIL",
            VerdictStatus::Unknown => "UNKNOWN",
        }
    }
}

/// Example messages of one anomaly category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Evidence {
    /// A category of [`CheckerCounts`] (`lost`, `duplicate`, …).
    pub category: String,
    /// Message ids (`p3:1042 @ orders/2:5531`: producer 3's sequence 1042 at
    /// topic `orders`, partition 2, offset 5531), ten at most.
    pub message_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_counts_written_before_written_twice_existed_still_load() {
        let old = r#"{"attempted": 10, "acknowledged": 9, "consumed": 9, "lost": 0,
            "unseen": 0, "duplicate": 1, "reordered": 0, "inconsistentOffsets": 2,
            "abortedRead": 0, "ambiguous": 1}"#;
        let counts: CheckerCounts = serde_json::from_str(old).expect("an old counts object");
        assert_eq!(counts.written_twice, 0);
        assert_eq!(counts.inconsistent_offsets, 2);
        assert_eq!(counts.anomalies().len() + 3, counts.all().len());
        assert_eq!(counts.anomalies()[3], ("written twice", 0));
    }

    #[test]
    fn a_fault_window_names_its_leader_change_only_when_measured() {
        let mut window = FaultWindow { kind: "crash".into(), target: "broker-1".into(), ..FaultWindow::default() };
        let json = serde_json::to_value(&window).expect("serializes");
        assert!(json.get("leaderChange").is_none(), "{json}");
        window.leader_change = Some(LeaderChange { partitions: 2, moved_ms: Some(3_200), watched_ms: 3_200 });
        let json = serde_json::to_value(&window).expect("serializes");
        assert_eq!(json["leaderChange"], serde_json::json!({"partitions": 2, "movedMs": 3200, "watchedMs": 3200}));
        let back: FaultWindow = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, window);
    }

    #[test]
    fn a_fault_window_names_its_publish_measures_only_when_measured_and_older_ones_load() {
        let old = r#"{"kind": "pause", "target": "broker-0", "startMs": 1000, "endMs": 4000, "parameters": null}"#;
        let mut window: FaultWindow = serde_json::from_str(old).expect("an older fault window");
        assert_eq!((window.no_ack_ms, window.publish_recovered_ms), (None, None));
        let json = serde_json::to_value(&window).expect("serializes");
        assert!(json.get("noAckMs").is_none() && json.get("publishRecoveredMs").is_none(), "{json}");
        window.no_ack_ms = Some(3_000);
        window.publish_recovered_ms = Some(6_700);
        let json = serde_json::to_value(&window).expect("serializes");
        assert_eq!(
            (&json["noAckMs"], &json["publishRecoveredMs"]),
            (&serde_json::json!(3000), &serde_json::json!(6700))
        );
        let back: FaultWindow = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, window);
    }
}

/// What the exactly-once guarantee's consume-transform-produce stage did: its
/// transactions, over all processors and their restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSummary {
    pub processors: u32,
    /// The fraction of transactions the processors were asked to abort.
    pub abort_rate: f64,
    /// `false` only for the test-only at-least-once stage.
    pub transactional: bool,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted on purpose (`abortRate`).
    pub aborted_planned: u64,
    /// Transactions aborted because a call failed (a broker away, a fenced epoch).
    pub aborted_on_error: u64,
    /// Input messages whose transaction committed (a message processed again
    /// after an abort counts once per commit).
    pub messages_committed: u64,
    /// From `begin_transaction` to the commit's answer, ms.
    pub commit_latency_p50_ms: f64,
    pub commit_latency_p99_ms: f64,
    pub commit_latency_max_ms: f64,
}
