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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rdsys;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode as RdCommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::{
    CommitMode, ConsumerSettings, Delivery, DeliverySink, Driver, MessageSink, ProducerHandle, ProducerSettings,
    Received, SendError, SendOutcome, SendToken,
};
use crate::payload::now_us;
use crate::workload::TopicSettings;

pub struct KafkaDriver {
    bootstrap: String,
    /// A group-less client for end offsets, created on first use.
    watermarks: Mutex<Option<BaseConsumer>>,
}

impl KafkaDriver {
    pub fn new(bootstrap: impl Into<String>) -> KafkaDriver {
        KafkaDriver { bootstrap: bootstrap.into(), watermarks: Mutex::new(None) }
    }

    /// Deletes `names` (topics a run created); one already gone counts as deleted.
    /// Every topic is tried; the error names those that could not be deleted.
    pub fn delete_topics(&self, names: &[String]) -> anyhow::Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> =
            self.base_config().create().context("creating the admin client")?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let results = futures_lite::future::block_on(admin.delete_topics(&names, &options))
            .with_context(|| format!("deleting topics {}", names.join(", ")))?;
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|result| match result {
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) | Ok(_) => None,
                Err((topic, code)) => Some(format!("{topic}: {code}")),
            })
            .collect();
        if !failed.is_empty() {
            bail!("deleting topics: {}", failed.join(", "));
        }
        Ok(())
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The node id leading `topic`/`partition`, from the cluster's metadata.
    pub fn partition_leader(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        self.partition(topic, partition)?.leader()
    }

    /// The node id of `topic`/`partition`'s first replica, in replica-list order,
    /// that is not its leader, from the cluster's metadata; an error when it has no
    /// leader, or no other replica (replication factor 1).
    pub fn partition_follower(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        self.partition(topic, partition)?.follower()
    }

    /// `topic`/`partition` in the cluster's metadata.
    fn partition(&self, topic: &str, partition: i32) -> anyhow::Result<PartitionLeader> {
        let topics = [topic.to_string()];
        self.leader_reader()?
            .leaders(&topics, Duration::from_secs(10))?
            .into_iter()
            .find(|found| found.partition == partition)
            .with_context(|| format!("the metadata has no partition {topic}/{partition}"))
    }

    /// A client that reads partition leaders from the cluster's metadata, for
    /// repeated reads.
    pub fn leader_reader(&self) -> anyhow::Result<LeaderReader> {
        Ok(LeaderReader { client: self.base_config().create().context("creating a metadata client")? })
    }

    /// The node id of the cluster's active controller, from its metadata.
    pub fn controller_id(&self) -> anyhow::Result<i32> {
        let client: BaseConsumer = self.base_config().create().context("creating a metadata client")?;
        // SAFETY: a live client, which outlives the call; librdkafka copies nothing
        // out but the id.
        let node_id = unsafe { rdsys::rd_kafka_controllerid(client.client().native_ptr(), 10_000) };
        if node_id < 0 {
            bail!("the cluster's metadata named no controller within 10 s");
        }
        Ok(node_id)
    }

    fn base_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }
}

/// One partition's leader in the cluster's metadata (-1: none), and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
    /// Node ids in the partition's replica-list order (the preferred leader first).
    pub replicas: Vec<i32>,
}

impl PartitionLeader {
    /// The leader's node id; an error when the partition has none.
    fn leader(&self) -> anyhow::Result<i32> {
        if self.leader < 0 {
            bail!("{}/{} has no leader", self.topic, self.partition);
        }
        Ok(self.leader)
    }

    /// The first replica, in replica-list order, that is not the leader; an error
    /// when there is no leader or no other replica.
    fn follower(&self) -> anyhow::Result<i32> {
        let leader = self.leader()?;
        self.replicas.iter().copied().find(|&replica| replica != leader).with_context(|| {
            format!("{}/{} has no follower: its replicas are {:?}", self.topic, self.partition, self.replicas)
        })
    }
}

/// Reads partition leaders (and replicas) from the cluster's metadata, one Metadata
/// request per read.
pub struct LeaderReader {
    client: BaseConsumer,
}

impl LeaderReader {
    /// Every partition of `topics`, its leader and its replicas.
    pub fn leaders(&self, topics: &[String], timeout: Duration) -> anyhow::Result<Vec<PartitionLeader>> {
        let mut leaders = Vec::new();
        for topic in topics {
            let metadata = self
                .client
                .fetch_metadata(Some(topic), timeout)
                .with_context(|| format!("reading the metadata of {topic}"))?;
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                leaders.push(PartitionLeader {
                    topic: topic.clone(),
                    partition: partition.id(),
                    leader: partition.leader(),
                    replicas: partition.replicas().to_vec(),
                });
            }
        }
        Ok(leaders)
    }
}

/// Reports the deliveries that [`KafkaProducer::serve`] does not: those served by
/// rdkafka's own polling while the producer flushes or is dropped.
struct DeliveryContext {
    sink: Arc<dyn DeliverySink>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SendToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<SendToken>) {
        let outcome = match result {
            Ok(message) => SendOutcome::Acknowledged { partition: message.partition(), offset: message.offset() },
            Err((error, _)) => failed(error),
        };
        self.sink.delivered(*token, outcome, now_us());
    }
}

fn failed(error: &KafkaError) -> SendOutcome {
    SendOutcome::Failed { error: error.to_string(), ambiguous: is_ambiguous(error) }
}

/// Whether a failed send may still have been written: the request went out and
/// no definite answer came back.
fn is_ambiguous(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::PurgeInflight
        )
    )
}

struct KafkaProducer {
    /// Dropped first (field order): librdkafka wants every queue and topic handle
    /// released before its client is destroyed. The producer's own drop then purges
    /// and flushes, reporting by polling its queue, without the eventfd.
    reports: ReportQueue,
    topics: TopicHandles,
    producer: BaseProducer<DeliveryContext>,
    /// Scratch for [`KafkaProducer::report`], kept to reuse its allocation.
    deliveries: Vec<Delivery>,
}

/// The producer's librdkafka topic handles, by name, made on first use.
///
/// Why: `BaseProducer::send` names the topic on every message, which costs a
/// C string allocation and, inside librdkafka, a lookup under the client's
/// write lock; with a handle a send is one `rd_kafka_produceva` call. (A producer
/// sends to one topic, so a list beats a map.)
struct TopicHandles(Vec<(String, *mut rdsys::rd_kafka_topic_t)>);

// SAFETY: the pointers are librdkafka topic handles, reference-counted objects that
// librdkafka lets any thread use and release (`rd_kafka_produceva` and
// `rd_kafka_topic_destroy` are thread-safe), so moving them to another thread is
// sound. Not `Sync`: one thread at a time uses them, through `&mut`.
unsafe impl Send for TopicHandles {}

impl TopicHandles {
    fn get(&mut self, client: *mut rdsys::rd_kafka_t, topic: &str) -> Result<*mut rdsys::rd_kafka_topic_t, SendError> {
        if let Some((_, handle)) = self.0.iter().find(|(name, _)| name == topic) {
            return Ok(*handle);
        }
        let name = std::ffi::CString::new(topic)
            .map_err(|_| SendError::Failed(format!("topic name {topic:?} contains a NUL byte")))?;
        // SAFETY: a live client; a null configuration takes the client's defaults.
        let handle = unsafe { rdsys::rd_kafka_topic_new(client, name.as_ptr(), std::ptr::null_mut()) };
        if handle.is_null() {
            // SAFETY: reads this thread's last librdkafka error.
            let code = unsafe { rdsys::rd_kafka_last_error() };
            return Err(SendError::Failed(format!(
                "creating a handle for topic {topic}: {}",
                RDKafkaErrorCode::from(code)
            )));
        }
        self.0.push((topic.to_string(), handle));
        Ok(handle)
    }
}

impl Drop for TopicHandles {
    fn drop(&mut self) {
        for &(_, handle) in &self.0 {
            // SAFETY: each handle was made by `rd_kafka_topic_new` and is released once;
            // queued messages hold their own references.
            unsafe { rdsys::rd_kafka_topic_destroy(handle) };
        }
    }
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

// SAFETY: the queue handle is a reference-counted librdkafka object whose functions
// any thread may call (librdkafka's queue API is thread-safe), and the eventfd is an
// owned descriptor; moving both to another thread is sound. Not `Sync`: one thread
// at a time uses them.
unsafe impl Send for ReportQueue {}

impl ReportQueue {
    fn new(producer: &BaseProducer<DeliveryContext>) -> anyhow::Result<ReportQueue> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: eventfd(2) takes no pointers and touches no memory of ours.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("creating the producer's eventfd");
        }
        // SAFETY: `raw` is the open descriptor eventfd(2) just returned, which nothing
        // else owns or closes.
        let eventfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: a live client, which outlives the queue handle: `KafkaProducer` drops
        // this `ReportQueue` first (field order).
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        if queue.is_null() {
            anyhow::bail!("librdkafka has no main queue for the producer");
        }
        // An eventfd takes 8-byte writes.
        let one: u64 = 1;
        // SAFETY: `queue` is live and `eventfd` stays open until `Drop` disables the
        // event; librdkafka copies the 8 payload bytes, so `one` need only live
        // across the call.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(queue, eventfd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
        Ok(ReportQueue { queue, eventfd })
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
            // SAFETY: reads at most 8 bytes into `counter`, a live u64, from our
            // open eventfd.
            unsafe { libc::read(fd.fd, (&mut counter as *mut u64).cast(), 8) };
        }
    }
}

impl Drop for ReportQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live until here and released once; the event is
        // disabled before the eventfd (a later field) closes, so librdkafka never
        // writes to a closed or reused descriptor.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

impl ProducerHandle for KafkaProducer {
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        token: SendToken,
    ) -> Result<(), SendError> {
        use rdsys::rd_kafka_vtype_t::*;
        let client = self.producer.client().native_ptr();
        let topic = self.topics.get(client, topic)?;
        // The message's timestamp is its send time, as librdkafka would set it, but
        // without librdkafka reading the clock again.
        let timestamp_ms = token.sent_us / 1000;
        let token = Box::into_raw(Box::new(token));
        let (key_ptr, key_len) =
            key.map_or((std::ptr::null_mut(), 0), |key| (key.as_ptr() as *mut libc::c_void, key.len()));
        let value = |vtype, u| rdsys::rd_kafka_vu_t { vtype, u };
        let vus = [
            value(RD_KAFKA_VTYPE_RKT, rdsys::rd_kafka_vu_s__bindgen_ty_1 { rkt: topic }),
            // Unassigned (-1): librdkafka's partitioner chooses.
            value(RD_KAFKA_VTYPE_PARTITION, rdsys::rd_kafka_vu_s__bindgen_ty_1 { i32_: partition.unwrap_or(-1) }),
            value(
                RD_KAFKA_VTYPE_MSGFLAGS,
                rdsys::rd_kafka_vu_s__bindgen_ty_1 { i: rdsys::RD_KAFKA_MSG_F_COPY as libc::c_int },
            ),
            value(
                RD_KAFKA_VTYPE_VALUE,
                rdsys::rd_kafka_vu_s__bindgen_ty_1 {
                    mem: rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                        ptr: payload.as_ptr() as *mut libc::c_void,
                        size: payload.len(),
                    },
                },
            ),
            value(
                RD_KAFKA_VTYPE_KEY,
                rdsys::rd_kafka_vu_s__bindgen_ty_1 {
                    mem: rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 { ptr: key_ptr, size: key_len },
                },
            ),
            value(RD_KAFKA_VTYPE_OPAQUE, rdsys::rd_kafka_vu_s__bindgen_ty_1 { ptr: token.cast() }),
            value(RD_KAFKA_VTYPE_TIMESTAMP, rdsys::rd_kafka_vu_s__bindgen_ty_1 { i64_: timestamp_ms }),
        ];
        // SAFETY: a live client and topic handle; librdkafka copies payload and key
        // (F_COPY) and, on success, owns the token until its delivery report, where
        // `KafkaProducer::report` (or, while flushing, `DeliveryContext::delivery`)
        // takes it back as the `Box` it was.
        let error = unsafe { rdsys::rd_kafka_produceva(client, vus.as_ptr(), vus.len()) };
        if error.is_null() {
            return Ok(());
        }
        // SAFETY: the message was not enqueued, so `token` is still the `Box` made
        // above, taken back once; `error` is a live error object that we own, read
        // and then free once.
        let code = unsafe {
            drop(Box::from_raw(token));
            let code = rdsys::rd_kafka_error_code(error);
            rdsys::rd_kafka_error_destroy(error);
            code
        };
        match RDKafkaErrorCode::from(code) {
            RDKafkaErrorCode::QueueFull => Err(SendError::QueueFull),
            code => Err(SendError::Failed(KafkaError::MessageProduction(code).to_string())),
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
    /// Reports every delivery that is ready, a produce response's worth at a time.
    ///
    /// This takes the events off the queue itself rather than through
    /// `BaseProducer::poll`, which hands each message to the context on its own
    /// (and the sink then locks the metrics and the history once per message): at
    /// a million messages a second, a fifth of the producer thread's time.
    fn serve(&mut self) {
        // A report that lands while the queue is not empty writes nothing to the
        // eventfd: serve until it is empty, so the next one does. (Bounded, in case
        // librdkafka keeps something queued: this must not spin; a caller's wait
        // still ends at its deadline.)
        for _ in 0..REPORT_POLLS_MAX {
            // SAFETY: a valid queue handle; a zero timeout does not block.
            let event = unsafe { rdsys::rd_kafka_queue_poll(self.reports.queue, 0) };
            if event.is_null() {
                break;
            }
            // SAFETY: a live event of the type read from it, destroyed once, after it
            // was handled. A delivery report's messages are ones `send` enqueued, so
            // their opaques are its `Box<SendToken>`s, as `report` requires.
            unsafe {
                match rdsys::rd_kafka_event_type(event) {
                    rdsys::RD_KAFKA_EVENT_DR => self.report(event),
                    kind => self.other_event(event, kind),
                }
                rdsys::rd_kafka_event_destroy(event);
            }
        }
    }

    /// Hands a delivery-report event's messages to the sink in one batch, timed
    /// when the event was taken (one clock read per produce response).
    ///
    /// # Safety
    ///
    /// `event` is a live delivery-report event of this producer, whose messages'
    /// opaques are the `Box<SendToken>`s `send` made.
    unsafe fn report(&mut self, event: *mut rdsys::rd_kafka_event_t) {
        let at_us = now_us();
        // SAFETY: `event` is live (the caller's promise); librdkafka fills at most
        // `count` pointers into the vector's spare capacity and says how many, so
        // `set_len` covers only initialised elements.
        let messages = unsafe {
            let count = rdsys::rd_kafka_event_message_count(event);
            let mut messages: Vec<*const rdsys::rd_kafka_message_t> = Vec::with_capacity(count);
            let taken = rdsys::rd_kafka_event_message_array(event, messages.as_mut_ptr(), count);
            messages.set_len(taken.min(count));
            messages
        };
        self.deliveries.clear();
        for &message in &messages {
            // SAFETY: each pointer is a message of the live event, and its opaque is
            // the `Box<SendToken>` `send` leaked for it, taken back exactly once here.
            let (message, token) = unsafe {
                let message = &*message;
                (message, *Box::from_raw(message._private.cast::<SendToken>()))
            };
            let outcome = match message.err {
                rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {
                    SendOutcome::Acknowledged { partition: message.partition, offset: message.offset }
                }
                code => failed(&KafkaError::MessageProduction(code.into())),
            };
            self.deliveries.push(Delivery { token, outcome, at_us });
        }
        self.producer.context().sink.delivered_all(&self.deliveries);
    }

    /// Any other event on the producer's queue (rdkafka routes librdkafka's log and
    /// errors there): handed to the context's `log` and `error`, as rdkafka's own
    /// polling would.
    ///
    /// # Safety
    ///
    /// `event` is a live event of type `kind`.
    unsafe fn other_event(&self, event: *mut rdsys::rd_kafka_event_t, kind: rdsys::rd_kafka_event_type_t) {
        let text = |text: *const libc::c_char| {
            if text.is_null() {
                String::new()
            } else {
                // SAFETY: `text` is only given strings librdkafka returned for the live
                // `event`, which are NUL-terminated and live as long as the event.
                unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy().into_owned()
            }
        };
        let context = self.producer.context();
        match kind {
            rdsys::RD_KAFKA_EVENT_LOG => {
                let (mut facility, mut message, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                // SAFETY: a live log event; the out-pointers are our locals.
                if unsafe { rdsys::rd_kafka_event_log(event, &mut facility, &mut message, &mut level) } != 0 {
                    return;
                }
                // syslog levels, as librdkafka reports them.
                let level = match level {
                    0 => RDKafkaLogLevel::Emerg,
                    1 => RDKafkaLogLevel::Alert,
                    2 => RDKafkaLogLevel::Critical,
                    3 => RDKafkaLogLevel::Error,
                    4 => RDKafkaLogLevel::Warning,
                    5 => RDKafkaLogLevel::Notice,
                    6 => RDKafkaLogLevel::Info,
                    _ => RDKafkaLogLevel::Debug,
                };
                context.log(level, &text(facility), &text(message));
            }
            rdsys::RD_KAFKA_EVENT_ERROR => {
                // SAFETY: a live error event; the description is read before it is
                // destroyed.
                let (code, description) =
                    unsafe { (rdsys::rd_kafka_event_error(event), rdsys::rd_kafka_event_error_string(event)) };
                context.error(KafkaError::Global(code.into()), text(description).trim());
            }
            _ => {
                // SAFETY: a live event.
                let name = unsafe { rdsys::rd_kafka_event_name(event) };
                tracing::debug!("producer: ignored librdkafka event {}", text(name));
            }
        }
    }
}

impl Driver for KafkaDriver {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn create_topic(&self, name: &str, partitions: i32, settings: &TopicSettings) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.base_config().create().context("creating the admin client")?;
        // -1 asks for the cluster's default.
        let replicas = settings.replication_factor.map_or(-1, |replicas| replicas as i32);
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
        for (key, value) in &settings.configs {
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

    fn producer(
        &self,
        settings: &ProducerSettings,
        sink: Arc<dyn DeliverySink>,
    ) -> anyhow::Result<Box<dyn ProducerHandle>> {
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
            config.create_with_context(DeliveryContext { sink }).context("creating a Kafka producer")?;
        let reports = ReportQueue::new(&producer)?;
        Ok(Box::new(KafkaProducer { reports, topics: TopicHandles(Vec::new()), producer, deliveries: Vec::new() }))
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
                tracing::debug!(
                    "consumer: commit before processing failed ({error}); {} messages dropped",
                    batch.len()
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: i32, replicas: &[i32]) -> PartitionLeader {
        PartitionLeader { topic: "t".to_string(), partition: 0, leader, replicas: replicas.to_vec() }
    }

    #[test]
    fn a_follower_is_the_first_replica_in_list_order_that_does_not_lead() {
        assert_eq!(partition(2, &[2, 0, 1]).follower().unwrap(), 0);
        assert_eq!(partition(0, &[2, 0, 1]).follower().unwrap(), 2);
        assert_eq!(partition(1, &[1]).follower().unwrap_err().to_string(), "t/0 has no follower: its replicas are [1]");
        assert_eq!(partition(-1, &[1, 2]).follower().unwrap_err().to_string(), "t/0 has no leader");
    }
}
