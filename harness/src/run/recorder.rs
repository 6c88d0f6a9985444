//! The sinks the clients report to: every event goes to the [`Metrics`] (rates,
//! latencies) and to the checker's [`History`] (who sent what, what was read where),
//! and consumers' positions are kept so the drain can tell when each subscription
//! has read its partitions to the end.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use crate::checker::{History, Reported};
use crate::driver::{Delivery, DeliverySink, MessageSink, Received, SendOutcome, SendToken};
use crate::payload::PayloadHeader;
use crate::run::metrics::Metrics;

/// The producers' sink.
pub struct Recorder {
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    /// Under exactly-once the producers write the stage's input while the
    /// subscriptions read its output, so an acknowledgement's offset says nothing
    /// about where the message is read: the history records it without one.
    pub pipeline: bool,
}

impl DeliverySink for Recorder {
    fn delivered(&self, token: SendToken, outcome: SendOutcome, at_us: i64) {
        self.delivered_all(&[Delivery { token, outcome, at_us }]);
    }

    fn delivered_all(&self, deliveries: &[Delivery]) {
        self.history.outcomes(deliveries.iter().map(|delivery| {
            let reported = match delivery.outcome {
                SendOutcome::Acknowledged { partition, .. } if self.pipeline => {
                    Reported::Acknowledged { partition, offset: -1 }
                }
                SendOutcome::Acknowledged { partition, offset } => Reported::Acknowledged { partition, offset },
                SendOutcome::Failed { ambiguous, .. } => Reported::Failed { ambiguous },
            };
            (delivery.token.producer_id, delivery.token.sequence, reported)
        }));
        self.metrics.delivered_all(deliveries);
    }
}

/// How far one subscription has read: the highest offset seen per (topic index,
/// partition), over all of its consumers (partitions move between them).
#[derive(Default)]
pub struct ReadPositions(Mutex<HashMap<(u32, i32), i64>>);

impl ReadPositions {
    fn note(&self, topic: u32, partition: i32, offset: i64) {
        let mut positions = self.0.lock().expect("positions lock");
        let highest = positions.entry((topic, partition)).or_insert(offset);
        *highest = (*highest).max(offset);
    }

    /// The highest offset read of a partition, if any.
    fn highest(&self, topic: u32, partition: i32) -> Option<i64> {
        self.0.lock().expect("positions lock").get(&(topic, partition)).copied()
    }

    /// Whether every partition was read up to `end_offsets[p]` (exclusive).
    pub fn caught_up(&self, topic: u32, end_offsets: &[i64]) -> bool {
        let positions = self.0.lock().expect("positions lock");
        end_offsets.iter().enumerate().all(|(partition, &end)| {
            end <= 0 || positions.get(&(topic, partition as i32)).is_some_and(|&highest| highest + 1 >= end)
        })
    }
}

/// One consumer's sink: knows its topic's index and its subscription.
pub struct ConsumerSink {
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    pub topic_index: u32,
    pub subscription: u32,
    pub positions: Arc<ReadPositions>,
    /// Test only (`corelog run --test-forget-reads N`): reads of messages whose
    /// sequence is a multiple of N are kept from the history, so the checker sees
    /// those messages lost; metrics and read positions still count them, so the
    /// drain completes as usual.
    pub forget_reads: Option<NonZeroU64>,
    /// The subscription reads the exactly-once stage's output (see [`ConsumerSink::pipeline_read`]).
    pub pipeline: bool,
}

impl ConsumerSink {
    /// A read of the exactly-once stage's output, if it is not a message to
    /// record as usual: returns `true` when it was handled here.
    ///
    /// - The end mark (`pipeline::END_MARK`) only moves the read position.
    /// - A copy marked aborted is an aborted read for the checker.
    /// - A read at or below the highest offset this subscription already read of
    ///   the partition is the subscription's own consumer reading again after a
    ///   rebalance (it commits after processing, at least once): the output did
    ///   not change, so it says nothing about the stage and is left out. A copy
    ///   the stage wrote twice lies at a new, higher offset and is recorded.
    fn pipeline_read(&self, message: &Received<'_>) -> bool {
        if message.payload == crate::run::pipeline::END_MARK {
            self.positions.note(self.topic_index, message.partition, message.offset);
            return true;
        }
        if let Some(header) = PayloadHeader::parse_aborted(message.payload) {
            let (topic, partition, offset) = (self.topic_index, message.partition, message.offset);
            self.history.aborted_read(topic, partition, offset, header.producer_id, header.sequence);
            self.positions.note(topic, partition, offset);
            return true;
        }
        self.positions.highest(self.topic_index, message.partition).is_some_and(|highest| message.offset <= highest)
    }
}

impl MessageSink for ConsumerSink {
    fn received(&self, message: Received<'_>) {
        if self.pipeline && self.pipeline_read(&message) {
            return;
        }
        if let Some(header) = PayloadHeader::parse(message.payload) {
            // Test only: see `forget_reads`.
            let forgotten = self.forget_reads.is_some_and(|every| header.sequence % every.get() == 0);
            if !forgotten {
                self.history.received(
                    self.subscription,
                    self.topic_index,
                    message.partition,
                    message.offset,
                    header.producer_id,
                    header.sequence,
                );
            }
        }
        self.positions.note(self.topic_index, message.partition, message.offset);
        self.metrics.received(message);
    }
}
