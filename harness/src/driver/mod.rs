//! Drivers: how the harness talks to the system under test.
//!
//! - [`kafka`]: real Kafka clients (librdkafka through the `rdkafka` crate) against
//!   any Kafka-compatible cluster: the brokers the harness started or a bootstrap list.
//! - [`embedded`]: the corelog engine in this process, no network, no broker: the
//!   engine's own limits.
//!
//! Both report to the same sinks ([`DeliverySink`], [`MessageSink`]), so the
//! measurement code does not know which driver ran.

pub mod embedded;
#[allow(unsafe_code)] // librdkafka's C API: batched delivery reports, topic handles
pub mod kafka;
pub mod processor;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::workload::TopicSettings;

/// What a producer is asked to guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSettings {
    /// `0`, `1` or `all` (Kafka's `acks`).
    pub acks: String,
    /// Retry failed sends (Kafka clients' default); `false` for at-most-once.
    pub retries: bool,
    /// The idempotent producer (`enable.idempotence`).
    pub idempotent: bool,
    /// Client configuration overrides from the workload, applied last.
    pub overrides: BTreeMap<String, String>,
}

/// When a consumer commits what it consumed.
///
/// Consumers take messages in batches (what one poll has ready, up to
/// [`kafka::BATCH_MAX`]); the commit point is relative to the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Commit the batch's offsets synchronously, then process it (at-most-once: a
    /// crash while processing loses the rest of the batch, never re-delivers it).
    BeforeProcessing,
    /// Process, then mark the offsets; they are committed every second and when
    /// the consumer stops (at-least-once: a crash re-delivers what was processed
    /// since the last commit).
    AfterProcessing,
}

impl CommitMode {
    pub fn name(self) -> &'static str {
        match self {
            CommitMode::BeforeProcessing => "before",
            CommitMode::AfterProcessing => "after",
        }
    }

    pub fn from_name(name: &str) -> Option<CommitMode> {
        match name {
            "before" => Some(CommitMode::BeforeProcessing),
            "after" => Some(CommitMode::AfterProcessing),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub group_id: String,
    /// This consumer's index among its group's `members` (for drivers without group
    /// coordination, which then split partitions statically: index i takes every
    /// partition p with p % members == i).
    pub member: (usize, usize),
    pub commit: CommitMode,
    pub overrides: BTreeMap<String, String>,
}

/// Identifies one send to the measurement code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendToken {
    pub producer_id: u64,
    pub sequence: u64,
    /// When the rate schedule wanted it sent (µs since the epoch).
    pub intended_us: i64,
    /// When it was handed to the client.
    pub sent_us: i64,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Acknowledged {
        partition: i32,
        offset: i64,
    },
    /// `ambiguous`: the message may have been persisted (timed out, connection lost
    /// after sending); the checker counts these apart from failures.
    Failed {
        error: String,
        ambiguous: bool,
    },
}

/// One send's outcome, known at `at_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub token: SendToken,
    pub outcome: SendOutcome,
    pub at_us: i64,
}

pub trait DeliverySink: Send + Sync {
    /// Called once per send, from a client thread, when its outcome is known.
    fn delivered(&self, token: SendToken, outcome: SendOutcome, at_us: i64);

    /// The outcomes of many sends at once (a produce response's worth), each
    /// reported exactly as [`DeliverySink::delivered`] would; a sink that locks
    /// per event overrides this to lock once per batch.
    fn delivered_all(&self, deliveries: &[Delivery]) {
        for delivery in deliveries {
            self.delivered(delivery.token, delivery.outcome.clone(), delivery.at_us);
        }
    }
}

/// One consumed message. Where it was read from (topic, partition, offset, key)
/// is for the delivery checker; the latency measurement needs only the payload.
#[allow(dead_code)]
pub struct Received<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub received_us: i64,
}

pub trait MessageSink: Send + Sync {
    /// Called from a consumer thread for every message, in consumption order.
    fn received(&self, message: Received<'_>);
}

#[derive(Debug)]
pub enum SendError {
    /// The client's queue is full: poll, wait a little, retry.
    QueueFull,
    Failed(String),
}

pub trait ProducerHandle: Send {
    /// Hands one message to the client. `partition`: where it must go; `None` lets
    /// the client's partitioner choose (by key, or for keyless messages as the
    /// client does).
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        token: SendToken,
    ) -> Result<(), SendError>;
    /// Reports the outcomes that are ready to the sink, then waits up to `timeout`
    /// (the time to the next send), reporting outcomes as they arrive. The producer
    /// thread calls it between sends (with a zero timeout when it is behind its
    /// schedule) and instead of sleeping. A driver that reports from its own thread
    /// just sleeps.
    fn poll(&mut self, timeout: Duration) {
        if !timeout.is_zero() {
            std::thread::sleep(timeout);
        }
    }
    /// Waits until every queued message has an outcome, or `timeout`.
    fn flush(&mut self, timeout: Duration) -> anyhow::Result<()>;
}

pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Creates a topic (an existing one is an error: a run starts from empty topics)
    /// with `settings`' replicas and configs.
    fn create_topic(&self, name: &str, partitions: i32, settings: &TopicSettings) -> anyhow::Result<()>;
    fn producer(
        &self,
        settings: &ProducerSettings,
        sink: Arc<dyn DeliverySink>,
    ) -> anyhow::Result<Box<dyn ProducerHandle>>;
    /// Starts a consumer thread that reads `topics` from the beginning until `stop`
    /// is set, handing every message to `sink`.
    fn consumer(
        &self,
        topics: &[String],
        settings: &ConsumerSettings,
        sink: Arc<dyn MessageSink>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>>;
    /// The log end offset (high watermark) of each of `topic`'s partitions: where a
    /// consumer that read everything stands. The drain uses it to tell "caught up"
    /// from "still behind".
    fn end_offsets(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>>;
}
