//! The `kafka` driver: librdkafka through the `rdkafka` crate.
//!
//! Producers are `BaseProducer`s served by the thread that sends (librdkafka batches,
//! compresses and retries in its own threads). That thread reports deliveries to the
//! [`DeliverySink`] between sends, and while it waits for its next send it sleeps
//! on an eventfd librdkafka writes to when a delivery report arrives, so each
//! acknowledgement is timed when it arrives, not when the thread next looks. Why not
//! `ThreadedProducer` (a second thread that polls): every message was then
//! allocated on one thread and freed on another, and every acknowledgement crossed
//! threads. With the poll thread, at 100 B messages, the harness reached about 1.2 M
//! msg/s next to `rdkafka_performance`'s 1.6-2 M (which serves its reports from its
//! sending thread, as this does now); without it, about 1.4 M. Consumers are
//! `BaseConsumer`s in a group, each polled by its own thread (or, when a fault may
//! crash it, by a `corelog consumer-worker` child process: see [`super::worker`]).
//! A consumer takes a batch per poll and commits it before processing
//! (at-most-once: synchronously) or marks each message's offset after handing it
//! to the [`MessageSink`] (at-least-once), and librdkafka commits the marked
//! offsets every second and once more when the consumer stops. (Committing every
//! message as its own request would make the coordinator's commit rate, not the
//! system, the limit: librdkafka sends one OffsetCommit at a time.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
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
    /// When [`KafkaProducer::poll`] took the report being served off the queue (µs
    /// since the epoch; 0: not serving, e.g. the reports a drop's flush serves).
    /// One clock read per report rather than per message: a report carries every
    /// message of a produce response, all acknowledged at once.
    serving_since_us: AtomicI64,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SendToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<SendToken>) {
        let at_us = match self.serving_since_us.load(Ordering::Relaxed) {
            0 => now_us(),
            since => since,
        };
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
    /// Dropped first (field order): librdkafka wants every queue handle released
    /// before its client is destroyed. The producer's own drop then purges and
    /// flushes, reporting by polling its queue, without the eventfd.
    reports: ReportQueue,
    producer: BaseProducer<DeliveryContext>,
}

/// Most reports one [`KafkaProducer::serve`] takes off the queue (a bound, so that
/// it cannot spin).
const REPORT_POLLS_MAX: usize = 1024;

/// The producer's delivery-report queue (librdkafka's main queue) with an eventfd
/// that librdkafka writes to whenever a report lands on the empty queue.
struct ReportQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    eventfd: std::os::fd::OwnedFd,
}

// The queue handle is a reference-counted librdkafka object; librdkafka's queue
// functions are thread-safe, and this handle is used by one thread at a time.
unsafe impl Send for ReportQueue {}

impl ReportQueue {
    fn new(producer: &BaseProducer<DeliveryContext>) -> anyhow::Result<ReportQueue> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain syscall; the descriptor is owned from here on.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("creating the producer's eventfd");
        }
        let eventfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: the client outlives the handle: `KafkaProducer` drops this first.
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        if queue.is_null() {
            anyhow::bail!("librdkafka has no main queue for the producer");
        }
        // An eventfd takes 8-byte writes; librdkafka copies the payload.
        let one: u64 = 1;
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(queue, eventfd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
        Ok(ReportQueue { queue, eventfd })
    }

    fn is_empty(&self) -> bool {
        // SAFETY: a valid queue handle.
        unsafe { rdsys::rd_kafka_queue_length(self.queue) == 0 }
    }

    /// Sleeps until librdkafka signals a report or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd { fd: self.eventfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd; ppoll takes a µs-precise timeout (poll's is ms).
        let ready = unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
        if ready > 0 {
            let mut counter = 0u64;
            // Resets the counter; nonblocking, so a concurrent reset just reads EAGAIN.
            unsafe { libc::read(fd.fd, (&mut counter as *mut u64).cast(), 8) };
        }
    }
}

impl Drop for ReportQueue {
    fn drop(&mut self) {
        // SAFETY: disable before the eventfd closes, then release the handle.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
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

    fn poll(&mut self, timeout: Duration) {
        // Called after every send: no clock read unless there is something to do.
        self.serve();
        if timeout.is_zero() {
            return;
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            self.reports.wait(deadline - now);
            self.serve();
        }
    }

    fn flush(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.producer.flush(timeout).context("flushing the producer")
    }
}

impl KafkaProducer {
    /// Reports every delivery that is ready.
    fn serve(&mut self) {
        let context = self.producer.context();
        // A report that lands while the queue is not empty writes nothing to the
        // eventfd: serve until it is empty, so the next one does. (Bounded, in case
        // librdkafka keeps something queued that a poll does not take: this must not
        // spin; a caller's wait still ends at its deadline.)
        for _ in 0..REPORT_POLLS_MAX {
            if self.reports.is_empty() {
                break;
            }
            context.serving_since_us.store(now_us(), Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
        }
        context.serving_since_us.store(0, Ordering::Relaxed);
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
        let producer: BaseProducer<DeliveryContext> =
            config.create_with_context(DeliveryContext { sink, serving_since_us: AtomicI64::new(0) }).context("creating a Kafka producer")?;
        let reports = ReportQueue::new(&producer)?;
        Ok(Box::new(KafkaProducer { reports, producer }))
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
