//! How publishing fared around each fault: the longest stretch without an
//! acknowledged publish ([`FaultWindow::no_ack_ms`]) and the time until the publish
//! rate was back to its steady value ([`FaultWindow::publish_recovered_ms`]).
//!
//! Both are computed here and nowhere else, from time series of acknowledged
//! publishes cut into consecutive buckets ([`PublishBucket`]): the result's own
//! windows (`publishRate`, one a second), and for the stretches without acks the
//! finer buckets the harness counts, when it has them. Pure functions: no clock,
//! no IO.
//!
//! Limits: a bucket only says whether it saw acks and how many, not when, so a
//! stretch without acks is known to a bucket on each side (the lengths here are
//! lower bounds), and the recovery to a window (1 s). The recovery is judged from
//! the fault's start: a fault whose effect shows only after [`RECOVERY_HOLD_WINDOWS`]
//! in-band windows counts as recovered at once. At very low rates, ordinary gaps
//! between acks (batching, linger) count as stretches without acks too.

use crate::model::{FaultWindow, LatencyKind, LatencyStat, RunResult};

/// The publish rate is back when within this fraction of the steady value, either side.
pub const PUBLISH_RATE_BAND: f64 = 0.10;
/// ... and stays there for this many consecutive windows (3 s at 1 s windows).
pub const RECOVERY_HOLD_WINDOWS: usize = 3;
/// The steady rate leaves out the windows of a fault and of this long after it.
pub const STEADY_MARGIN_MS: i64 = 5_000;
/// Fewer windows than this outside the faults give no steady rate.
pub const STEADY_WINDOWS_MIN: usize = 3;

/// Acknowledged publishes over one interval of the measured phase, ms from t = 0
/// (the interval is `(start_ms, end_ms]`). Buckets of a series are consecutive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishBucket {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Acknowledged publishes per second over the bucket; 0 exactly when none.
    pub publish_rate: f64,
}

/// The result's windows as buckets: each runs from the previous window's end, the
/// first from as far before its end as the second is long (a nominal 1 s when
/// there is no second; OMB's windows, without `windowEndMs`, are 10 s).
pub fn publish_windows(result: &RunResult) -> Vec<PublishBucket> {
    buckets(result, result.publish_rate.len())
}

/// The first `count` windows of `result` as buckets (a rate of 0 past `publishRate`).
fn buckets(result: &RunResult, count: usize) -> Vec<PublishBucket> {
    let end_ms = |index: usize| (result.window_end_seconds(index) * 1000.0).round() as i64;
    let first_length_ms = if count > 1 { end_ms(1) - end_ms(0) } else { 1_000 };
    (0..count)
        .map(|index| PublishBucket {
            start_ms: if index == 0 { end_ms(0) - first_length_ms } else { end_ms(index - 1) },
            end_ms: end_ms(index),
            publish_rate: result.publish_rate.get(index).copied().unwrap_or(0.0),
        })
        .collect()
}

/// Fills `noAckMs` and `publishRecoveredMs` of every fault window of `result` from
/// its windows, and from `acks` for the stretches without acks when the harness
/// counted acks in finer buckets (cut at the result's last window end).
pub fn measure_fault_windows(result: &mut RunResult, acks: Option<&[PublishBucket]>) {
    let windows = publish_windows(result);
    let steady = steady_publish_rate_of(&windows, &result.fault_windows);
    let acks = acks.unwrap_or(&windows);
    for fault in &mut result.fault_windows {
        fault.no_ack_ms = no_ack_ms(acks, fault);
        fault.publish_recovered_ms = publish_recovered_ms(&windows, fault, steady);
    }
}

/// The steady publish rate of `result`: see [`steady_publish_rate_of`].
pub fn steady_publish_rate(result: &RunResult) -> Option<f64> {
    steady_publish_rate_of(&publish_windows(result), &result.fault_windows)
}

/// The median publish rate of the windows that overlap no fault nor the
/// [`STEADY_MARGIN_MS`] after it (a fault open to the end of the run takes every
/// window from its start). `None` when fewer than [`STEADY_WINDOWS_MIN`] windows are
/// left, or their median is 0 (nothing to recover to).
pub fn steady_publish_rate_of(windows: &[PublishBucket], faults: &[FaultWindow]) -> Option<f64> {
    let disturbed = |window: &PublishBucket, fault: &FaultWindow| {
        let quiet_from_ms = fault.end_ms.map_or(i64::MAX, |end_ms| end_ms.saturating_add(STEADY_MARGIN_MS));
        window.end_ms > fault.start_ms && window.start_ms < quiet_from_ms
    };
    let mut rates: Vec<f64> = windows
        .iter()
        .filter(|window| !faults.iter().any(|fault| disturbed(window, fault)))
        .map(|window| window.publish_rate)
        .collect();
    if rates.len() < STEADY_WINDOWS_MIN {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let middle = rates.len() / 2;
    let median = if rates.len().is_multiple_of(2) { (rates[middle - 1] + rates[middle]) / 2.0 } else { rates[middle] };
    (median > 0.0).then_some(median)
}

/// One latency kind over the windows of one period of a run (steady or faulted).
///
/// Derived from the windows' own percentiles, since a result keeps no histogram per
/// period: `p50` and `p99` are the medians of the windows' p50 and p99 (a typical
/// window of the period), `worst_p99` the highest window p99. Windows without
/// samples are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeriodLatency {
    /// Windows of the period with samples of this kind.
    pub windows: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub worst_p99: Option<f64>,
}

/// `kind`'s latency in the steady period (the windows [`steady_publish_rate_of`]
/// takes: outside every fault and the [`STEADY_MARGIN_MS`] after it) and in the
/// faulted one (the windows that overlap a fault, an instant one included); the
/// windows of the margins after faults are in neither.
pub fn latency_by_period(result: &RunResult, kind: LatencyKind) -> (PeriodLatency, PeriodLatency) {
    let windows = buckets(result, result.window_count());
    let view = result.latency(kind);
    let (p50s, p99s) = (view.windows(LatencyStat::P50), view.windows(LatencyStat::P99));
    let mut steady = (Vec::new(), Vec::new());
    let mut faulted = (Vec::new(), Vec::new());
    for (index, window) in windows.iter().enumerate() {
        let (Some(Some(p50)), Some(Some(p99))) = (p50s.get(index), p99s.get(index)) else { continue };
        let in_fault = result.fault_windows.iter().any(|fault| overlaps(window, fault));
        let period = if in_fault {
            &mut faulted
        } else if undisturbed(window, &result.fault_windows) {
            &mut steady
        } else {
            continue;
        };
        period.0.push(*p50);
        period.1.push(*p99);
    }
    let summarise = |(p50s, p99s): (Vec<f64>, Vec<f64>)| PeriodLatency {
        windows: p50s.len(),
        p50: median(p50s.clone()),
        p99: median(p99s.clone()),
        worst_p99: p99s.iter().copied().reduce(f64::max),
    };
    (summarise(steady), summarise(faulted))
}

/// Whether `window` (`(start_ms, end_ms]`) overlaps `fault`; an instant fault
/// overlaps the window it happened in.
fn overlaps(window: &PublishBucket, fault: &FaultWindow) -> bool {
    let end_ms = fault.end_ms.unwrap_or(i64::MAX);
    if end_ms > fault.start_ms {
        window.end_ms > fault.start_ms && window.start_ms < end_ms
    } else {
        window.start_ms < fault.start_ms && fault.start_ms <= window.end_ms
    }
}

/// Whether `window` overlaps no fault nor the [`STEADY_MARGIN_MS`] after it.
fn undisturbed(window: &PublishBucket, faults: &[FaultWindow]) -> bool {
    !faults.iter().any(|fault| {
        let quiet_from_ms = fault.end_ms.map_or(i64::MAX, |end_ms| end_ms.saturating_add(STEADY_MARGIN_MS));
        window.end_ms > fault.start_ms && window.start_ms < quiet_from_ms
    })
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[middle - 1] + values[middle]) / 2.0 } else { values[middle] })
}

/// The longest run of buckets without acks that began within the fault: from its
/// start to its end, or to the series' end if it is open (an instant fault: at its
/// start). The last ack before such a run was in the bucket before it, so the run
/// began between that bucket's start and its own first bucket's start; it counts
/// when that span meets the fault. Its length is from its first bucket's start to
/// its last bucket's end. 0 if there is none; `None` for an empty series or a
/// fault that starts at or after the series' end.
pub fn no_ack_ms(acks: &[PublishBucket], fault: &FaultWindow) -> Option<i64> {
    let series_end_ms = acks.last()?.end_ms;
    if fault.start_ms >= series_end_ms {
        return None;
    }
    let fault_end_ms = fault.end_ms.unwrap_or(series_end_ms);
    let mut longest_ms = 0;
    let mut index = 0;
    while index < acks.len() {
        if acks[index].publish_rate > 0.0 {
            index += 1;
            continue;
        }
        let first = index;
        while index < acks.len() && acks[index].publish_rate <= 0.0 {
            index += 1;
        }
        let began_after_ms = if first == 0 { i64::MIN } else { acks[first - 1].start_ms };
        let began_by_ms = acks[first].start_ms;
        if began_after_ms <= fault_end_ms && began_by_ms >= fault.start_ms {
            longest_ms = longest_ms.max(acks[index - 1].end_ms - began_by_ms);
        }
    }
    Some(longest_ms)
}

/// Ms from the fault's start to the start of the first of
/// [`RECOVERY_HOLD_WINDOWS`] consecutive windows whose publish rate is within
/// ±[`PUBLISH_RATE_BAND`] of `steady`, among the windows that end after the fault's
/// start; 0 if that first window began before the fault did (the rate never left
/// the band). A rate above the band is not recovered either. `None` without a
/// steady rate, or when no such windows came before the series ended.
pub fn publish_recovered_ms(windows: &[PublishBucket], fault: &FaultWindow, steady: Option<f64>) -> Option<i64> {
    let steady = steady?;
    let in_band = |window: &PublishBucket| (window.publish_rate - steady).abs() <= steady * PUBLISH_RATE_BAND;
    let mut streak_start_ms = None;
    let mut streak = 0;
    for window in windows.iter().filter(|window| window.end_ms > fault.start_ms) {
        if !in_band(window) {
            streak = 0;
            continue;
        }
        if streak == 0 {
            streak_start_ms = Some(window.start_ms);
        }
        streak += 1;
        if streak >= RECOVERY_HOLD_WINDOWS {
            return streak_start_ms.map(|start_ms| (start_ms - fault.start_ms).max(0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets of `width_ms` from t = 0, one per rate.
    fn series(width_ms: i64, rates: &[f64]) -> Vec<PublishBucket> {
        (0..rates.len() as i64)
            .map(|index| PublishBucket {
                start_ms: index * width_ms,
                end_ms: (index + 1) * width_ms,
                publish_rate: rates[index as usize],
            })
            .collect()
    }

    fn fault(start_ms: i64, end_ms: Option<i64>) -> FaultWindow {
        FaultWindow { kind: "crash".into(), target: "broker-1".into(), start_ms, end_ms, ..FaultWindow::default() }
    }

    /// A result of 1 s windows at `rates` with `faults`, measured from its windows.
    fn measured(rates: &[f64], faults: Vec<FaultWindow>) -> RunResult {
        let mut result = RunResult::new();
        result.publish_rate = rates.to_vec();
        result.window_end_ms = (1..=rates.len() as u64).map(|second| second * 1000).collect();
        result.fault_windows = faults;
        measure_fault_windows(&mut result, None);
        result
    }

    #[test]
    fn a_fault_with_a_three_second_gap_and_a_slow_ramp_recovers_after_the_ramp() {
        // Steady 1000/s; crash at 10.3 s for 2 s: a partial window, 3 s without
        // acks, then 40%, 70%, 85%, 95% and steady again.
        let mut rates = vec![1000.0; 30];
        rates[10..18].copy_from_slice(&[300.0, 0.0, 0.0, 0.0, 400.0, 700.0, 850.0, 950.0]);
        rates[19] = 1040.0;
        let result = measured(&rates, vec![fault(10_300, Some(12_300))]);
        let window = &result.fault_windows[0];
        assert_eq!(window.no_ack_ms, Some(3_000));
        // 17 s (950/s) starts the first three in-band windows: 6.7 s after the start.
        assert_eq!(window.publish_recovered_ms, Some(6_700));
        assert_eq!(steady_publish_rate(&result), Some(1000.0));
    }

    #[test]
    fn finer_ack_buckets_measure_the_gap_to_their_width() {
        let mut fine = vec![500.0; 300];
        fine[104..131].fill(0.0);
        let gap = no_ack_ms(&series(100, &fine), &fault(10_300, Some(12_300)));
        assert_eq!(gap, Some(2_700));
    }

    #[test]
    fn a_fault_that_never_recovers_has_no_recovery_time() {
        let mut rates = vec![1000.0; 20];
        rates[10..].fill(200.0);
        rates[15..].fill(0.0);
        let result = measured(&rates, vec![fault(10_000, Some(16_000))]);
        let window = &result.fault_windows[0];
        assert_eq!(window.publish_recovered_ms, None);
        // The stretch without acks from 15 s runs to the end of the run: 5 s.
        assert_eq!(window.no_ack_ms, Some(5_000));
    }

    #[test]
    fn a_recovery_the_run_ends_before_confirming_is_not_counted() {
        let mut rates = vec![1000.0; 20];
        rates[10..18].fill(100.0);
        let result = measured(&rates, vec![fault(10_000, Some(11_000))]);
        assert_eq!(result.fault_windows[0].publish_recovered_ms, None, "two in-band windows only");
    }

    #[test]
    fn a_fault_that_does_not_degrade_recovers_at_once_and_never_stops_acks() {
        let rates: Vec<f64> = (0..30).map(|second| 1000.0 + if second % 2 == 0 { 30.0 } else { -30.0 }).collect();
        let result = measured(&rates, vec![fault(10_500, Some(15_500))]);
        let window = &result.fault_windows[0];
        assert_eq!((window.no_ack_ms, window.publish_recovered_ms), (Some(0), Some(0)));
    }

    #[test]
    fn a_rate_above_the_band_has_not_recovered() {
        // After a pause, the open-loop producers catch up at twice the rate for 4 s.
        let mut rates = vec![1000.0; 30];
        rates[10..17].copy_from_slice(&[0.0, 0.0, 0.0, 2000.0, 2000.0, 1500.0, 1200.0]);
        let result = measured(&rates, vec![fault(10_000, Some(13_000))]);
        assert_eq!(result.fault_windows[0].publish_recovered_ms, Some(7_000));
    }

    #[test]
    fn a_window_open_to_the_end_of_the_run_takes_every_window_after_its_start() {
        let mut rates = vec![1000.0; 20];
        rates[12..16].fill(0.0);
        let result = measured(&rates, vec![fault(11_000, None)]);
        let window = &result.fault_windows[0];
        assert_eq!(window.no_ack_ms, Some(4_000));
        assert_eq!(window.publish_recovered_ms, Some(5_000));
        // Only the 11 windows before the fault are steady; a fault open from 1 s leaves none.
        let result = measured(&rates, vec![fault(1_000, None)]);
        assert_eq!(steady_publish_rate(&result), None);
        assert_eq!(result.fault_windows[0].publish_recovered_ms, None);
        assert_eq!(result.fault_windows[0].no_ack_ms, Some(4_000));
    }

    #[test]
    fn an_instant_fault_counts_a_stretch_that_began_at_it() {
        // A reset at 10.5 s; acks stop within that window and come back at 13 s.
        let mut rates = vec![1000.0; 20];
        rates[10..13].copy_from_slice(&[600.0, 0.0, 0.0]);
        let window = &measured(&rates, vec![fault(10_500, Some(10_500))]).fault_windows[0];
        assert_eq!((window.no_ack_ms, window.publish_recovered_ms), (Some(2_000), Some(2_500)));
        // A stretch that began before the reset is not its doing.
        let mut rates = vec![1000.0; 20];
        rates[10..13].fill(0.0);
        let window = &measured(&rates, vec![fault(10_500, Some(10_500))]).fault_windows[0];
        assert_eq!(window.no_ack_ms, Some(0));
        // Nor is one that began after an instant fault's window.
        let window = &measured(&rates, vec![fault(8_500, Some(8_500))]).fault_windows[0];
        assert_eq!(window.no_ack_ms, Some(0));
    }

    #[test]
    fn without_a_steady_rate_nothing_recovers() {
        let result = measured(&[0.0; 10], vec![fault(5_000, Some(6_000))]);
        assert_eq!(steady_publish_rate(&result), None);
        assert_eq!(result.fault_windows[0].publish_recovered_ms, None);
        assert_eq!(result.fault_windows[0].no_ack_ms, Some(0), "the acks had stopped before the fault");
    }

    #[test]
    fn the_steady_rate_leaves_out_faults_and_their_margin() {
        // 15 s slow during the fault, then 5 s of catching up.
        let mut rates = vec![1000.0; 30];
        rates[5..20].fill(10.0);
        rates[20..25].fill(5000.0);
        let windows = series(1_000, &rates);
        // The windows of 5–25 s are out (the fault and the 5 s after it): the median is 1000.
        assert_eq!(steady_publish_rate_of(&windows, &[fault(5_000, Some(20_000))]), Some(1000.0));
        // Without the fault, the slow windows pull the median down.
        assert_eq!(steady_publish_rate_of(&windows, &[]), Some(505.0));
    }

    #[test]
    fn nothing_is_measured_without_windows_or_after_them() {
        let mut result = RunResult::new();
        result.fault_windows = vec![fault(1_000, Some(2_000))];
        measure_fault_windows(&mut result, None);
        assert_eq!((result.fault_windows[0].no_ack_ms, result.fault_windows[0].publish_recovered_ms), (None, None));
        let result = measured(&[1000.0; 10], vec![fault(10_000, None)]);
        assert_eq!(result.fault_windows[0].no_ack_ms, None);
    }

    #[test]
    fn the_first_window_starts_as_far_before_its_end_as_the_second_is_long() {
        let mut result = RunResult::new();
        result.publish_rate = vec![1.0, 2.0];
        result.window_end_ms = vec![20, 1_020];
        let windows = publish_windows(&result);
        assert_eq!((windows[0].start_ms, windows[0].end_ms, windows[1].start_ms), (-980, 20, 20));
    }
}
