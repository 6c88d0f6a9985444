//! What a run measures, recorded from client threads as it happens.
//!
//! Four latencies, in microseconds, in HdrHistograms (1 µs to 1 hour, 3
//! significant digits): publish service time (handed to the client → acknowledged),
//! corrected publish latency (the rate schedule's intended send time →
//! acknowledged; includes any time the producer fell behind its schedule, so a
//! stalled system cannot hide behind a slow sender), publish delay (intended →
//! handed over: the producers' own lag), and end-to-end latency (send
//! time carried in the payload → consumed). A sample outside the histogram's range
//! is counted in `out_of_range`, never dropped silently.
//!
//! Every second the run takes a [`Window`]: the interval histograms and counters are
//! swapped out and summarised, and the interval histograms are added to the
//! run-long totals. Samples of the warm-up are discarded with its windows.
//!
//! Acknowledgements are also counted in [`ACK_BUCKET_MS`] buckets from t = 0
//! ([`AckTimeline`]), finer than the windows, for the stretches without acks
//! around faults (`corelog_reports::recovery`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use corelog_reports::model::ErrorCount;
use corelog_reports::recovery::PublishBucket;
use hdrhistogram::Histogram;

use crate::driver::{Delivery, DeliverySink, MessageSink, Received, SendOutcome, SendToken};
use crate::payload::PayloadHeader;

/// Highest latency a histogram holds: one hour, in µs.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// `N` latency metrics recorded together (one lock per event, not one per metric):
/// their interval histograms and the out-of-range count.
pub struct Latencies<const N: usize> {
    interval: Mutex<[Histogram<u64>; N]>,
    out_of_range: AtomicU64,
}

impl<const N: usize> Latencies<N> {
    fn new() -> Latencies<N> {
        Latencies { interval: Mutex::new(std::array::from_fn(|_| new_histogram())), out_of_range: AtomicU64::new(0) }
    }

    /// One sample per metric, in the order the metrics are declared.
    pub fn record(&self, values_us: [i64; N]) {
        self.record_all([values_us]);
    }

    /// Many events' samples under one lock.
    pub fn record_all(&self, events: impl IntoIterator<Item = [i64; N]>) {
        let mut histograms = self.interval.lock().expect("histogram lock");
        let mut out_of_range = 0;
        for values_us in events {
            for (histogram, value_us) in histograms.iter_mut().zip(values_us) {
                out_of_range += u64::from(histogram.record(value_us.max(1) as u64).is_err());
            }
        }
        if out_of_range > 0 {
            self.out_of_range.fetch_add(out_of_range, Ordering::Relaxed);
        }
    }

    fn take(&self) -> [Histogram<u64>; N] {
        std::mem::replace(&mut *self.interval.lock().expect("histogram lock"), std::array::from_fn(|_| new_histogram()))
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    ambiguous: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    acknowledged_bytes: AtomicU64,
    foreign: AtomicU64,
}

/// Counts of one window (or of the whole run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub ambiguous: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    pub acknowledged_bytes: u64,
    /// Consumed messages without a harness header (not ours): not measured.
    pub foreign: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.sent += other.sent;
        self.acknowledged += other.acknowledged;
        self.failed += other.failed;
        self.ambiguous += other.ambiguous;
        self.consumed += other.consumed;
        self.consumed_bytes += other.consumed_bytes;
        self.acknowledged_bytes += other.acknowledged_bytes;
        self.foreign += other.foreign;
    }
}

/// One second (or so) of a run.
pub struct Window {
    pub counts: Counts,
    pub publish_service_us: Histogram<u64>,
    pub publish_corrected_us: Histogram<u64>,
    pub publish_delay_us: Histogram<u64>,
    pub end_to_end_us: Histogram<u64>,
    pub out_of_range: u64,
}

/// The width of an [`AckTimeline`] bucket.
pub const ACK_BUCKET_MS: i64 = 100;
/// An [`AckTimeline`] counts at most this many buckets (24 hours); later acks are
/// left out of it (and only of it).
pub const ACK_BUCKETS_MAX: usize = 864_000;

/// Acknowledgements counted per [`ACK_BUCKET_MS`] from t = 0, by the time the
/// client reported them; none before t = 0 is counted.
#[derive(Default)]
struct AckTimeline {
    /// t = 0 in the clock of `Delivery::at_us`; `None` until the warm-up ends.
    origin_us: Option<i64>,
    counts: Vec<u32>,
}

impl AckTimeline {
    fn note(&mut self, at_us: i64) {
        let Some(origin_us) = self.origin_us else { return };
        if at_us < origin_us {
            return;
        }
        let index = ((at_us - origin_us) / (ACK_BUCKET_MS * 1000)) as usize;
        if index >= ACK_BUCKETS_MAX {
            return;
        }
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(1);
    }

    /// The buckets from t = 0 to `end_ms` (the last one cut there), with the
    /// empty ones.
    fn buckets(&self, end_ms: i64) -> Vec<PublishBucket> {
        let count = (end_ms.max(0) + ACK_BUCKET_MS - 1) / ACK_BUCKET_MS;
        (0..count.min(ACK_BUCKETS_MAX as i64))
            .map(|index| {
                let start_ms = index * ACK_BUCKET_MS;
                let bucket_end_ms = (start_ms + ACK_BUCKET_MS).min(end_ms);
                let acks = self.counts.get(index as usize).copied().unwrap_or(0);
                let publish_rate = f64::from(acks) * 1000.0 / (bucket_end_ms - start_ms) as f64;
                PublishBucket { start_ms, end_ms: bucket_end_ms, publish_rate }
            })
            .collect()
    }
}

/// At most this many distinct error texts are tallied apart; the failures of any
/// other text are counted under [`OTHER_ERRORS`].
pub const ERROR_KINDS_MAX: usize = 64;
/// The error kind that collects the texts past [`ERROR_KINDS_MAX`].
pub const OTHER_ERRORS: &str = "other errors";

/// The failed sends of one error text: how many, and the first of them.
struct ErrorTally {
    count: u64,
    first_at_us: i64,
    /// The first failed message, `p<producer>:<sequence>`, and whether its send
    /// was ambiguous.
    first_example: String,
}

pub struct Metrics {
    message_bytes: u64,
    /// Failed sends by error text (the client's words), so a result lists what its
    /// error count is made of.
    errors: Mutex<BTreeMap<String, ErrorTally>>,
    /// Publish service time, corrected publish latency and publish delay (due →
    /// handed to the client, OMB's: how far producers lagged), recorded per ack.
    pub publish: Latencies<3>,
    pub end_to_end: Latencies<1>,
    counters: Counters,
    acks: Mutex<AckTimeline>,
}

impl Metrics {
    pub fn new(message_bytes: usize) -> Metrics {
        Metrics {
            message_bytes: message_bytes as u64,
            publish: Latencies::new(),
            end_to_end: Latencies::new(),
            counters: Counters::default(),
            acks: Mutex::default(),
            errors: Mutex::default(),
        }
    }

    /// The failed sends so far, one [`ErrorCount`] per error text in the order of
    /// their first failure, with its first example; `first_ms` from t = 0 once the
    /// ack timeline started (negative in the warm-up).
    pub fn error_counts(&self) -> Vec<ErrorCount> {
        let origin_us = self.acks.lock().expect("ack timeline lock").origin_us;
        let errors = self.errors.lock().expect("errors lock");
        let mut counts: Vec<(i64, ErrorCount)> = errors
            .iter()
            .map(|(text, tally)| {
                let count = ErrorCount {
                    operation: "produce".to_string(),
                    error: text.clone(),
                    count: tally.count,
                    first_ms: origin_us.map(|origin_us| (tally.first_at_us - origin_us).div_euclid(1000)),
                    example: Some(tally.first_example.clone()),
                };
                (tally.first_at_us, count)
            })
            .collect();
        counts.sort_by_key(|(first_at_us, _)| *first_at_us);
        counts.into_iter().map(|(_, count)| count).collect()
    }

    fn note_failures(&self, deliveries: &[Delivery]) {
        let mut errors = self.errors.lock().expect("errors lock");
        for delivery in deliveries {
            let SendOutcome::Failed { error, ambiguous } = &delivery.outcome else { continue };
            let known = errors.contains_key(error.as_str());
            let text = if known || errors.len() < ERROR_KINDS_MAX { error.as_str() } else { OTHER_ERRORS };
            let token = delivery.token;
            let tally = errors.entry(text.to_string()).or_insert_with(|| ErrorTally {
                count: 0,
                first_at_us: delivery.at_us,
                first_example: format!(
                    "p{}:{}{}",
                    token.producer_id,
                    token.sequence,
                    if *ambiguous { " (ambiguous: it may have been written)" } else { "" }
                ),
            });
            tally.count += 1;
        }
    }

    /// Starts counting acks in buckets from `origin_us` (t = 0, in the clock of
    /// `Delivery::at_us`).
    pub fn start_ack_timeline(&self, origin_us: i64) {
        self.acks.lock().expect("ack timeline lock").origin_us = Some(origin_us);
    }

    /// The acks counted in [`ACK_BUCKET_MS`] buckets from t = 0 to `end_ms`.
    pub fn ack_buckets(&self, end_ms: i64) -> Vec<PublishBucket> {
        self.acks.lock().expect("ack timeline lock").buckets(end_ms)
    }

    pub fn note_sent(&self) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Swaps out everything recorded since the last call.
    pub fn take_window(&self) -> Window {
        let c = &self.counters;
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let counts = Counts {
            sent: take(&c.sent),
            acknowledged: take(&c.acknowledged),
            failed: take(&c.failed),
            ambiguous: take(&c.ambiguous),
            consumed: take(&c.consumed),
            consumed_bytes: take(&c.consumed_bytes),
            acknowledged_bytes: take(&c.acknowledged_bytes),
            foreign: take(&c.foreign),
        };
        let out_of_range = self.publish.out_of_range.swap(0, Ordering::Relaxed)
            + self.end_to_end.out_of_range.swap(0, Ordering::Relaxed);
        let [publish_service_us, publish_corrected_us, publish_delay_us] = self.publish.take();
        let [end_to_end_us] = self.end_to_end.take();
        Window { counts, publish_service_us, publish_corrected_us, publish_delay_us, end_to_end_us, out_of_range }
    }
}

impl DeliverySink for Metrics {
    fn delivered(&self, token: SendToken, outcome: SendOutcome, at_us: i64) {
        self.delivered_all(&[Delivery { token, outcome, at_us }]);
    }

    fn delivered_all(&self, deliveries: &[Delivery]) {
        let (mut acknowledged, mut ambiguous, mut failed) = (0, 0, 0);
        for delivery in deliveries {
            match delivery.outcome {
                SendOutcome::Acknowledged { .. } => acknowledged += 1,
                SendOutcome::Failed { ambiguous: true, .. } => ambiguous += 1,
                SendOutcome::Failed { .. } => failed += 1,
            }
        }
        if ambiguous + failed > 0 {
            self.note_failures(deliveries);
        }
        let c = &self.counters;
        for (counter, count) in [(&c.acknowledged, acknowledged), (&c.ambiguous, ambiguous), (&c.failed, failed)] {
            if count > 0 {
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
        if acknowledged > 0 {
            c.acknowledged_bytes.fetch_add(acknowledged * self.message_bytes, Ordering::Relaxed);
            let mut timeline = self.acks.lock().expect("ack timeline lock");
            for delivery in deliveries.iter().filter(|d| matches!(d.outcome, SendOutcome::Acknowledged { .. })) {
                timeline.note(delivery.at_us);
            }
            drop(timeline);
            self.publish.record_all(
                deliveries.iter().filter(|d| matches!(d.outcome, SendOutcome::Acknowledged { .. })).map(|d| {
                    let (token, at_us) = (d.token, d.at_us);
                    [at_us - token.sent_us, at_us - token.intended_us, token.sent_us - token.intended_us]
                }),
            );
        }
    }
}

impl MessageSink for Metrics {
    fn received(&self, message: Received<'_>) {
        let Some(header) = PayloadHeader::parse(message.payload) else {
            self.counters.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.counters.consumed.fetch_add(1, Ordering::Relaxed);
        self.counters.consumed_bytes.fetch_add(message.payload.len() as u64, Ordering::Relaxed);
        self.end_to_end.record([message.received_us - header.send_time_us]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(intended_us: i64, sent_us: i64) -> SendToken {
        SendToken { producer_id: 1, sequence: 0, intended_us, sent_us }
    }

    #[test]
    fn failed_sends_are_listed_by_error_text_with_their_first_message_and_time() {
        let metrics = Metrics::new(100);
        metrics.start_ack_timeline(1_000_000);
        let failed = |sequence: u64, error: &str, ambiguous: bool, at_us: i64| Delivery {
            token: SendToken { producer_id: 3, sequence, intended_us: 0, sent_us: 0 },
            outcome: SendOutcome::Failed { error: error.into(), ambiguous },
            at_us,
        };
        metrics.delivered_all(&[failed(7, "timed out", true, 3_500_000), failed(8, "timed out", true, 3_600_000)]);
        metrics.delivered(
            SendToken { producer_id: 1, sequence: 2, intended_us: 0, sent_us: 0 },
            SendOutcome::Failed { error: "not leader".into(), ambiguous: false },
            900_000,
        );
        let errors = metrics.error_counts();
        let listed: Vec<(&str, u64, Option<i64>, Option<&str>)> =
            errors.iter().map(|e| (e.error.as_str(), e.count, e.first_ms, e.example.as_deref())).collect();
        assert_eq!(
            listed,
            [
                ("not leader", 1, Some(-100), Some("p1:2")),
                ("timed out", 2, Some(2_500), Some("p3:7 (ambiguous: it may have been written)")),
            ]
        );
        assert!(errors.iter().all(|e| e.operation == "produce"));
        let window = metrics.take_window();
        assert_eq!(window.counts.failed + window.counts.ambiguous, 3, "the list adds up to the count");
    }

    #[test]
    fn service_and_corrected_latency_differ_by_the_schedule_lag_and_windows_reset() {
        let metrics = Metrics::new(100);
        metrics.note_sent();
        // Wanted at t=1000, handed to the client at 1500 (behind schedule), acked at 2000.
        metrics.delivered(token(1_000, 1_500), SendOutcome::Acknowledged { partition: 0, offset: 0 }, 2_000);
        metrics.delivered(token(0, 0), SendOutcome::Failed { error: "x".into(), ambiguous: true }, 10);
        metrics.delivered(token(0, 0), SendOutcome::Failed { error: "y".into(), ambiguous: false }, 10);
        let window = metrics.take_window();
        assert_eq!(window.counts.sent, 1);
        assert_eq!((window.counts.acknowledged, window.counts.ambiguous, window.counts.failed), (1, 1, 1));
        assert_eq!(window.publish_service_us.max(), 500);
        assert!(window.publish_corrected_us.max() >= 999 && window.publish_corrected_us.max() <= 1001);
        let empty = metrics.take_window();
        assert_eq!(empty.counts, Counts::default());
        assert_eq!(empty.publish_service_us.len(), 0);
    }

    #[test]
    fn acks_are_counted_in_buckets_from_t0_and_cut_at_the_end() {
        let metrics = Metrics::new(100);
        let acknowledged = SendOutcome::Acknowledged { partition: 0, offset: 0 };
        metrics.delivered(token(0, 0), acknowledged.clone(), 5_000);
        metrics.start_ack_timeline(1_000_000);
        for at_us in [999_999, 1_000_000, 1_050_000, 1_250_000] {
            metrics.delivered(token(0, 0), acknowledged.clone(), at_us);
        }
        let buckets = metrics.ack_buckets(350);
        let rates: Vec<(i64, i64, f64)> = buckets.iter().map(|b| (b.start_ms, b.end_ms, b.publish_rate)).collect();
        assert_eq!(rates, [(0, 100, 20.0), (100, 200, 0.0), (200, 300, 10.0), (300, 350, 0.0)]);
    }

    #[test]
    fn out_of_range_samples_are_counted_and_foreign_messages_are_not_measured() {
        let metrics = Metrics::new(100);
        metrics.end_to_end.record([LATENCY_US_MAX as i64 * 2]);
        metrics.received(Received {
            topic: "t",
            partition: 0,
            offset: 0,
            key: None,
            payload: b"not ours",
            received_us: 5,
        });
        let mut payload = vec![0u8; 64];
        PayloadHeader { producer_id: 1, sequence: 1, send_time_us: 1_000 }.stamp(&mut payload);
        metrics.received(Received {
            topic: "t",
            partition: 0,
            offset: 1,
            key: None,
            payload: &payload,
            received_us: 1_250,
        });
        let window = metrics.take_window();
        assert_eq!(window.out_of_range, 1);
        assert_eq!(window.counts.foreign, 1);
        assert_eq!(window.counts.consumed, 1);
        assert_eq!(window.end_to_end_us.max(), 250);
    }
}
