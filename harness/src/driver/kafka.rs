//! The `kafka` driver: librdkafka through the `rdkafka` crate.
//!
//! Producers are `ThreadedProducer`s (librdkafka batches, compresses and retries;
//! its own thread reports each delivery to the [`DeliverySink`]). Consumers are
//! `BaseConsumer`s in a group, each polled by its own thread (or, when a fault may
//! crash it, by a `corelog consumer-worker` child process: see [`super::worker`]).
//! A consumer takes a batch per poll and commits it before processing
//! (at-most-once: synchronously) or marks each message's offset after handing it
//! to the [`MessageSink`] (at-least-once), and librdkafka commits the marked
//! offsets every second and once more when the consumer stops. (Committing every
//! message as its own request would make the coordinator's commit rate, not the
//! system, the limit: librdkafka sends one OffsetCommit at a time.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode as RdCommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{
    CommitMode, ConsumerSettings, DeliverySink, Driver, MessageSink, ProducerHandle, ProducerSettings, Received,
    SendError, SendOutcome, SendToken,
};
use crate::payload::now_us;

pub struct KafkaDriver {
    bootstrap: String,
    /// A group-less client for end offsets, created on first use.
    watermarks: Mutex<Option<BaseConsumer>>,
}

impl KafkaDriver {
    pub fn new(bootstrap: impl Into<String>) -> KafkaDriver {
        KafkaDriver { bootstrap: bootstrap.into(), watermarks: Mutex::new(None) }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The node id leading `topic`/`partition`, from the cluster's metadata.
    pub fn partition_leader(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        let client: BaseConsumer = self.base_config().create().context("creating a metadata client")?;
        let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10)).with_context(|| format!("reading the metadata of {topic}"))?;
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .filter(|&leader| leader >= 0)
            .with_context(|| format!("{topic}/{partition} has no leader"))
    }

    fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }
}

struct DeliveryContext {
    sink: Arc<dyn DeliverySink>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SendToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<SendToken>) {
        let at_us = now_us();
        let outcome = match result {
            Ok(message) => SendOutcome::Acknowledged { partition: message.partition(), offset: message.offset() },
            Err((error, _)) => SendOutcome::Failed { error: error.to_string(), ambiguous: is_ambiguous(error) },
        };
        self.sink.delivered(*token, outcome, at_us);
    }
}

/// Whether a failed send may still have been written: the request went out and
/// no definite answer came back.
fn is_ambiguous(error: &KafkaError) -> bool {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut)
        | Some(RDKafkaErrorCode::RequestTimedOut)
        | Some(RDKafkaErrorCode::BrokerTransportFailure)
        | Some(RDKafkaErrorCode::AllBrokersDown)
        | Some(RDKafkaErrorCode::NetworkException)
        | Some(RDKafkaErrorCode::PurgeInflight) => true,
        _ => false,
    }
}

struct KafkaProducer {
    producer: ThreadedProducer<DeliveryContext>,
}

impl ProducerHandle for KafkaProducer {
    fn send(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8], token: SendToken) -> Result<(), SendError> {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(token)).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.producer.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(SendError::QueueFull),
            Err((error, _)) => Err(SendError::Failed(error.to_string())),
        }
    }

    fn flush(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.producer.flush(timeout).context("flushing the producer")
    }
}

impl Driver for KafkaDriver {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn create_topic(&self, name: &str, partitions: i32, configs: &BTreeMap<String, String>) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.base_config().create().context("creating the admin client")?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = futures_lite::future::block_on(admin.create_topics([&topic], &options))
            .with_context(|| format!("creating topic {name}"))?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code}");
            }
        }
        Ok(())
    }

    fn producer(&self, settings: &ProducerSettings, sink: Arc<dyn DeliverySink>) -> anyhow::Result<Box<dyn ProducerHandle>> {
        let mut config = self.base_config();
        config.set("acks", &settings.acks);
        config.set("enable.idempotence", settings.idempotent.to_string());
        if !settings.retries {
            config.set("retries", "0");
        }
        config.set("linger.ms", "1");
        config.set("queue.buffering.max.messages", "1000000");
        for (key, value) in &settings.overrides {
            config.set(key, value);
        }
        let producer: ThreadedProducer<DeliveryContext> =
            config.create_with_context(DeliveryContext { sink }).context("creating a Kafka producer")?;
        Ok(Box::new(KafkaProducer { producer }))
    }

    fn consumer(
        &self,
        topics: &[String],
        settings: &ConsumerSettings,
        sink: Arc<dyn MessageSink>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        let consumer = subscribed_consumer(&self.bootstrap, topics, &settings.group_id, &settings.overrides)?;
        let commit = settings.commit;
        let thread = std::thread::Builder::new().name("corelog-consumer".to_string()).spawn(move || {
            consume(&consumer, commit, &*sink, &stop, None)?;
            close(&consumer);
            Ok(())
        })?;
        Ok(thread)
    }

    fn end_offsets(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let mut client = self.watermarks.lock().expect("watermark client lock");
        if client.is_none() {
            *client = Some(self.base_config().create().context("creating the offsets client")?);
        }
        let client: &BaseConsumer = client.as_ref().expect("created above");
        (0..partitions)
            .map(|partition| {
                let (_, high) = client
                    .fetch_watermarks(topic, partition, Duration::from_secs(5))
                    .with_context(|| format!("reading the end offset of {topic}/{partition}"))?;
                Ok(high)
            })
            .collect()
    }
}

/// Most messages a consumer takes from one poll before it commits and processes.
pub const BATCH_MAX: usize = 500;

/// A group consumer of `topics`, from the earliest offset when the group has no
/// commit. Offsets are marked by [`consume`] and committed by librdkafka every
/// second (and synchronously by `consume` before processing, at-most-once).
pub fn subscribed_consumer(
    bootstrap: &str,
    topics: &[String],
    group_id: &str,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config.set("group.id", group_id);
    config.set("auto.offset.reset", "earliest");
    config.set("enable.auto.commit", "true");
    config.set("enable.auto.offset.store", "false");
    config.set("auto.commit.interval.ms", "1000");
    config.set("fetch.wait.max.ms", "100");
    for (key, value) in overrides {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().context("creating a Kafka consumer")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).context("subscribing")?;
    Ok(consumer)
}

/// How [`consume`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `stop` was set: the caller closes the consumer (final commit, leave).
    Stopped,
    /// `crash` was set and the consumer stopped halfway through a batch, the worst
    /// moment for its commit mode: the caller must die without closing.
    Crashed,
}

/// Polls batches and hands their messages to `sink`, committing before or after
/// processing as `commit` says, until `stop` is set or, once `crash` is set, until
/// halfway through the next batch (see [`Ending::Crashed`]).
///
/// At-most-once commits synchronously before processing; when that commit fails
/// (the coordinator is away, the partitions were revoked) the batch is dropped
/// unprocessed: a later consumer may then skip it, which at-most-once allows,
/// while processing it could deliver it twice, which it does not.
pub fn consume(
    consumer: &BaseConsumer,
    commit: CommitMode,
    sink: &dyn MessageSink,
    stop: &AtomicBool,
    crash: Option<&AtomicBool>,
) -> anyhow::Result<Ending> {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        let mut timeout = Duration::from_millis(100);
        while batch.len() < BATCH_MAX {
            match consumer.poll(timeout) {
                Some(Ok(message)) => batch.push(message),
                Some(Err(error)) => tracing::debug!("consumer: {error}"),
                None => break,
            }
            timeout = Duration::ZERO;
        }
        if batch.is_empty() {
            continue;
        }
        if commit == CommitMode::BeforeProcessing {
            for message in &batch {
                consumer.store_offset_from_message(message).context("storing an offset")?;
            }
            if let Err(error) = consumer.commit_consumer_state(RdCommitMode::Sync) {
                tracing::debug!("consumer: commit before processing failed ({error}); {} messages dropped", batch.len());
                continue;
            }
        }
        let crashing = crash.is_some_and(|flag| flag.load(Ordering::Relaxed));
        let processed = if crashing { batch.len() / 2 } else { batch.len() };
        for message in &batch[..processed] {
            sink.received(Received {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key(),
                payload: message.payload().unwrap_or(&[]),
                received_us: now_us(),
            });
            if commit == CommitMode::AfterProcessing {
                consumer.store_offset_from_message(message).context("storing an offset")?;
            }
        }
        if crashing {
            return Ok(Ending::Crashed);
        }
    }
    Ok(Ending::Stopped)
}

/// A clean end: a last synchronous commit of everything marked; dropping the
/// consumer then leaves the group.
pub fn close(consumer: &BaseConsumer) {
    if let Err(error) = consumer.commit_consumer_state(RdCommitMode::Sync) {
        tracing::debug!("final commit: {error}");
    }
}
