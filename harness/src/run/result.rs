//! Turns what a run measured into the `corelog-reports` result model.
//!
//! Units follow OMB's TestResult: publish and end-to-end latencies in milliseconds,
//! publish delay in microseconds; rates per second of window.

use corelog_reports::model::{ErrorCount, Quantiles, RunResult};
use hdrhistogram::Histogram;

use crate::run::load::SendErrors;
use crate::run::metrics::Window;

/// Percentiles written to the quantile maps (as OMB's `…Quantiles`).
const QUANTILES: [f64; 16] =
    [1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0];

/// The nine statistics of one latency, in the unit `scale` divides µs into.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub p9999: Option<f64>,
    pub p99999: Option<f64>,
    pub max: Option<f64>,
}

pub fn stats(histogram: &Histogram<u64>, scale: f64) -> Stats {
    if histogram.is_empty() {
        return Stats::default();
    }
    let q = |quantile: f64| Some(histogram.value_at_quantile(quantile) as f64 / scale);
    Stats {
        avg: Some(histogram.mean() / scale),
        p50: q(0.50),
        p75: q(0.75),
        p95: q(0.95),
        p99: q(0.99),
        p999: q(0.999),
        p9999: q(0.9999),
        p99999: q(0.99999),
        max: Some(histogram.max() as f64 / scale),
    }
}

pub fn quantiles(histogram: &Histogram<u64>, scale: f64) -> Quantiles {
    if histogram.is_empty() {
        return Quantiles::default();
    }
    Quantiles::from_points(QUANTILES.iter().map(|&p| (p, histogram.value_at_quantile(p / 100.0) as f64 / scale)))
}

/// Appends a window's rates and latency statistics to the result's series;
/// `end_ms` is the window's end in ms since the run started (t = 0).
pub fn push_window(result: &mut RunResult, window: &Window, seconds: f64, end_ms: u64, backlog: i64) {
    let per_second = |count: u64| count as f64 / seconds.max(1e-6);
    result.publish_rate.push(per_second(window.counts.acknowledged));
    result.publish_error_rate.push(per_second(window.counts.failed + window.counts.ambiguous));
    result.consume_rate.push(per_second(window.counts.consumed));
    result.backlog.push(backlog);
    result.window_end_ms.push(end_ms);
    macro_rules! push {
        ($histogram:expr, $scale:expr, $($field:ident),*) => {{
            let s = stats($histogram, $scale);
            let values = [s.avg, s.p50, s.p75, s.p95, s.p99, s.p999, s.p9999, s.p99999, s.max];
            let mut values = values.into_iter();
            $(result.$field.push(values.next().flatten());)*
        }};
    }
    push!(
        &window.publish_service_us,
        1000.0,
        publish_latency_avg,
        publish_latency_50pct,
        publish_latency_75pct,
        publish_latency_95pct,
        publish_latency_99pct,
        publish_latency_999pct,
        publish_latency_9999pct,
        publish_latency_99999pct,
        publish_latency_max
    );
    push!(
        &window.publish_corrected_us,
        1000.0,
        publish_corrected_latency_avg,
        publish_corrected_latency_50pct,
        publish_corrected_latency_75pct,
        publish_corrected_latency_95pct,
        publish_corrected_latency_99pct,
        publish_corrected_latency_999pct,
        publish_corrected_latency_9999pct,
        publish_corrected_latency_99999pct,
        publish_corrected_latency_max
    );
    push!(
        &window.publish_delay_us,
        1.0,
        publish_delay_latency_avg,
        publish_delay_latency_50pct,
        publish_delay_latency_75pct,
        publish_delay_latency_95pct,
        publish_delay_latency_99pct,
        publish_delay_latency_999pct,
        publish_delay_latency_9999pct,
        publish_delay_latency_99999pct,
        publish_delay_latency_max
    );
    push!(
        &window.end_to_end_us,
        1000.0,
        end_to_end_latency_avg,
        end_to_end_latency_50pct,
        end_to_end_latency_75pct,
        end_to_end_latency_95pct,
        end_to_end_latency_99pct,
        end_to_end_latency_999pct,
        end_to_end_latency_9999pct,
        end_to_end_latency_99999pct,
        end_to_end_latency_max
    );
}

/// The errors a result lists for its error count: the failed sends by error text
/// (`failed`, as the metrics tallied them), then the sends the client refused
/// before they were handed over: one row, with the first refusal's text and
/// message (the others' texts are in the debug log, `CORELOG_LOG=debug`).
pub fn message_errors(mut failed: Vec<ErrorCount>, refused: &SendErrors) -> Vec<ErrorCount> {
    if refused.count > 0 {
        let (text, example) = refused.first.clone().unzip();
        failed.push(ErrorCount {
            operation: "send".to_string(),
            error: format!("refused by the client: {}", text.as_deref().unwrap_or("no text")),
            count: refused.count,
            first_ms: None,
            example,
        });
    }
    failed
}

/// The run-long histograms of the measured phase.
pub struct Totals {
    pub publish_service_us: Histogram<u64>,
    pub publish_corrected_us: Histogram<u64>,
    pub publish_delay_us: Histogram<u64>,
    pub end_to_end_us: Histogram<u64>,
}

/// Fills the aggregated statistics and quantile maps.
pub fn set_aggregates(result: &mut RunResult, totals: &Totals) {
    macro_rules! set {
        ($histogram:expr, $scale:expr, $quantiles:ident, $($field:ident),*) => {{
            let s = stats($histogram, $scale);
            let values = [s.avg, s.p50, s.p75, s.p95, s.p99, s.p999, s.p9999, s.p99999, s.max];
            let mut values = values.into_iter();
            $(result.$field = values.next().flatten();)*
            result.$quantiles = quantiles($histogram, $scale);
        }};
    }
    set!(
        &totals.publish_service_us,
        1000.0,
        aggregated_publish_latency_quantiles,
        aggregated_publish_latency_avg,
        aggregated_publish_latency_50pct,
        aggregated_publish_latency_75pct,
        aggregated_publish_latency_95pct,
        aggregated_publish_latency_99pct,
        aggregated_publish_latency_999pct,
        aggregated_publish_latency_9999pct,
        aggregated_publish_latency_99999pct,
        aggregated_publish_latency_max
    );
    set!(
        &totals.publish_corrected_us,
        1000.0,
        aggregated_publish_corrected_latency_quantiles,
        aggregated_publish_corrected_latency_avg,
        aggregated_publish_corrected_latency_50pct,
        aggregated_publish_corrected_latency_75pct,
        aggregated_publish_corrected_latency_95pct,
        aggregated_publish_corrected_latency_99pct,
        aggregated_publish_corrected_latency_999pct,
        aggregated_publish_corrected_latency_9999pct,
        aggregated_publish_corrected_latency_99999pct,
        aggregated_publish_corrected_latency_max
    );
    set!(
        &totals.publish_delay_us,
        1.0,
        aggregated_publish_delay_latency_quantiles,
        aggregated_publish_delay_latency_avg,
        aggregated_publish_delay_latency_50pct,
        aggregated_publish_delay_latency_75pct,
        aggregated_publish_delay_latency_95pct,
        aggregated_publish_delay_latency_99pct,
        aggregated_publish_delay_latency_999pct,
        aggregated_publish_delay_latency_9999pct,
        aggregated_publish_delay_latency_99999pct,
        aggregated_publish_delay_latency_max
    );
    set!(
        &totals.end_to_end_us,
        1000.0,
        aggregated_end_to_end_latency_quantiles,
        aggregated_end_to_end_latency_avg,
        aggregated_end_to_end_latency_50pct,
        aggregated_end_to_end_latency_75pct,
        aggregated_end_to_end_latency_95pct,
        aggregated_end_to_end_latency_99pct,
        aggregated_end_to_end_latency_999pct,
        aggregated_end_to_end_latency_9999pct,
        aggregated_end_to_end_latency_99999pct,
        aggregated_end_to_end_latency_max
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_sends_are_one_row_with_the_first_refusals_text_and_message() {
        let failed = vec![ErrorCount {
            operation: "produce".to_string(),
            error: "Broker: Request timed out".to_string(),
            count: 3,
            first_ms: Some(1_200),
            example: Some("p0:17".to_string()),
        }];
        let refused = SendErrors { count: 2, first: Some(("Local: Unknown topic".to_string(), "p1:4".to_string())) };
        let rows = message_errors(failed.clone(), &refused);
        assert_eq!(rows[0], failed[0], "the failed sends come first, as tallied");
        assert_eq!(rows[1].operation, "send");
        assert_eq!(rows[1].error, "refused by the client: Local: Unknown topic");
        assert_eq!((rows[1].count, rows[1].example.as_deref()), (2, Some("p1:4")));
        assert_eq!(message_errors(failed, &SendErrors::default()).len(), 1, "no refusal, no row");
    }
}
