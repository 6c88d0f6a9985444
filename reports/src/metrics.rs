//! The summary metrics: one list, shown by the HTML summary table and compared by
//! the change table, so the two never disagree on what a metric is.

use crate::model::{LatencyKind, LatencyStat, RunResult};

/// How a metric's values are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Whole numbers with thousands separators.
    Count,
    /// About three significant digits.
    Measure,
}

/// Which way a metric improves, for `corelog compare`'s better/worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Rates and messages delivered.
    Higher,
    /// Latencies, backlog, errors and anomalies.
    Lower,
}

/// Reads a metric's value from a run.
type MetricValue = Box<dyn Fn(&RunResult) -> Option<f64>>;

/// One summary metric.
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    pub format: Format,
    pub better: Better,
    value: MetricValue,
}

impl Metric {
    fn new(
        name: impl Into<String>,
        unit: &'static str,
        format: Format,
        better: Better,
        value: impl Fn(&RunResult) -> Option<f64> + 'static,
    ) -> Metric {
        Metric { name: name.into(), unit, format, better, value: Box::new(value) }
    }

    pub fn value(&self, run: &RunResult) -> Option<f64> {
        (self.value)(run).filter(|v| v.is_finite())
    }

    pub fn format(&self, value: Option<f64>) -> String {
        match value {
            None => "–".to_string(),
            Some(value) => match self.format {
                Format::Count => group_thousands(value.round()),
                Format::Measure => format_measure(value),
            },
        }
    }
}

/// The latency statistics summarised per kind.
const SUMMARY_STATS: [LatencyStat; 6] =
    [LatencyStat::Avg, LatencyStat::P50, LatencyStat::P99, LatencyStat::P999, LatencyStat::P9999, LatencyStat::Max];

/// Every summary metric, in display order. A metric no run has a value for is
/// left out by the tables, not here.
pub fn metrics() -> Vec<Metric> {
    let mut metrics = vec![
        Metric::new("publish rate (avg)", "msg/s", Format::Measure, Better::Higher, |r| mean(&r.publish_rate)),
        Metric::new("consume rate (avg)", "msg/s", Format::Measure, Better::Higher, |r| mean(&r.consume_rate)),
        Metric::new("publish error rate (avg)", "err/s", Format::Measure, Better::Lower, |r| {
            mean(&r.publish_error_rate)
        }),
        Metric::new("backlog (max)", "msg", Format::Count, Better::Lower, |r| {
            r.backlog.iter().max().map(|&b| b as f64)
        }),
    ];
    for kind in [LatencyKind::Publish, LatencyKind::PublishCorrected, LatencyKind::EndToEnd, LatencyKind::PublishDelay]
    {
        for stat in SUMMARY_STATS {
            metrics.push(Metric::new(
                format!("{} latency {}", kind.title(), stat.title()),
                kind.unit(),
                Format::Measure,
                Better::Lower,
                move |r| r.latency(kind).aggregated(stat),
            ));
        }
    }
    // OMB results carry no counts: show "–", not a misleading 0.
    let corelog = |r: &RunResult, value: u64| (!r.is_omb()).then_some(value as f64);
    metrics.extend([
        Metric::new("messages produced", "msg", Format::Count, Better::Higher, move |r| corelog(r, r.counts.produced)),
        Metric::new("messages acknowledged", "msg", Format::Count, Better::Higher, move |r| {
            corelog(r, r.counts.acknowledged)
        }),
        Metric::new("messages consumed", "msg", Format::Count, Better::Higher, move |r| corelog(r, r.counts.consumed)),
        Metric::new("errors", "", Format::Count, Better::Lower, move |r| corelog(r, r.counts.errors)),
        Metric::new("out-of-range samples", "", Format::Count, Better::Lower, move |r| {
            corelog(r, r.out_of_range_samples.total())
        }),
    ]);
    let anomaly_names = crate::model::CheckerCounts::default().anomalies().map(|(name, _)| name);
    for (index, name) in anomaly_names.into_iter().enumerate() {
        metrics.push(Metric::new(format!("checker: {name}"), "msg", Format::Count, Better::Lower, move |r| {
            let checker = r.checker.as_ref()?;
            checker.counts.anomalies().get(index).map(|&(_, count)| count as f64)
        }));
    }
    metrics
}

fn mean(values: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

/// About three significant digits, thousands separated: 12,345; 987.6; 1.23; 0.042.
pub fn format_measure(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        group_thousands(value.round())
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else if magnitude == 0.0 {
        "0".to_string()
    } else {
        format!("{value:.3}")
    }
}

/// A whole number with "," between thousands.
pub fn group_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 && digits != "0" {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// Names for `runs` in legends and table headers: each run's display label, made
/// unique with " #2", " #3" where two runs would share one.
pub fn run_labels(runs: &[RunResult]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::with_capacity(runs.len());
    for run in runs {
        let base = run.display_label();
        let mut label = base.clone();
        let mut n = 2;
        while labels.contains(&label) {
            label = format!("{base} #{n}");
            n += 1;
        }
        labels.push(label);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(group_thousands(1234567.0), "1,234,567");
        assert_eq!(group_thousands(-1234.0), "-1,234");
        assert_eq!(group_thousands(999.0), "999");
        assert_eq!(format_measure(12345.6), "12,346");
        assert_eq!(format_measure(123.45), "123.5");
        assert_eq!(format_measure(1.2345), "1.23");
        assert_eq!(format_measure(0.04219), "0.042");
    }
}
