//! The `kafka` driver: librdkafka through the `rdkafka` crate.
//!
//! Producers are `ThreadedProducer`s (librdkafka batches, compresses and retries;
//! its own thread reports each delivery to the [`DeliverySink`]). Consumers are
//! `BaseConsumer`s in a group, each polled by its own thread. A consumer marks a
//! message's offset as done (librdkafka's offset store) before or after handing it
//! to the [`MessageSink`], as the guarantee asks, and librdkafka commits the marked
//! offsets every second and once more when the consumer stops. (Committing every
//! message as its own request would make the coordinator's commit rate, not the
//! system, the limit: librdkafka sends one OffsetCommit at a time.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
}

impl KafkaDriver {
    pub fn new(bootstrap: impl Into<String>) -> KafkaDriver {
        KafkaDriver { bootstrap: bootstrap.into() }
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
        let mut config = self.base_config();
        config.set("group.id", &settings.group_id);
        config.set("auto.offset.reset", "earliest");
        config.set("enable.auto.commit", "true");
        config.set("enable.auto.offset.store", "false");
        config.set("auto.commit.interval.ms", "1000");
        config.set("fetch.wait.max.ms", "100");
        for (key, value) in &settings.overrides {
            config.set(key, value);
        }
        let consumer: BaseConsumer = config.create().context("creating a Kafka consumer")?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).context("subscribing")?;
        let commit = settings.commit;
        let thread = std::thread::Builder::new().name("corelog-consumer".to_string()).spawn(move || {
            // A crash between marking and processing skips (at-most-once); between
            // processing and the next commit, it re-delivers (at-least-once).
            while !stop.load(Ordering::Relaxed) {
                let Some(next) = consumer.poll(Duration::from_millis(100)) else { continue };
                let message = match next {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::debug!("consumer: {error}");
                        continue;
                    }
                };
                if commit == CommitMode::BeforeProcessing {
                    consumer.store_offset_from_message(&message).context("storing the offset")?;
                }
                sink.received(Received {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key(),
                    payload: message.payload().unwrap_or(&[]),
                    received_us: now_us(),
                });
                if commit == CommitMode::AfterProcessing {
                    consumer.store_offset_from_message(&message).context("storing the offset")?;
                }
            }
            // A last synchronous commit of everything marked, then leave the group.
            if let Err(error) = consumer.commit_consumer_state(RdCommitMode::Sync) {
                tracing::debug!("final commit: {error}");
            }
            Ok(())
        })?;
        Ok(thread)
    }
}
