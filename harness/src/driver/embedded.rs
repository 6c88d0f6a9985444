//! The `embedded` driver: the corelog engine in this process, without a broker or a
//! network, to measure the engine's own limits with the same harness.
//!
//! A producer is a thread fed by a bounded queue; it groups what is queued by
//! partition into uncompressed RecordBatch v2 batches (up to
//! [`BATCH_BYTES_MAX`]), appends them concurrently and reports each message's
//! outcome. Partitioning: by an FNV-1a hash of the key, or round-robin per batch
//! without a key. A consumer is a thread that reads every partition of its topics
//! from offset 0 and decodes the records (the only record decoder in corelog: the
//! broker never decodes records). There are no consumer groups: the consumers of a
//! subscription split the partitions statically (`ConsumerSettings::member`), and
//! commit modes have no effect. A consumer that falls behind retention skips to the
//! log start offset, as Kafka's `auto.offset.reset=earliest` does.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _};
use corelog_engine::batch::{build_batch, split_batches, BatchProducer, RecordSpec, BATCH_HEADER_BYTES};
use corelog_engine::cpus::ShardCpus;
use corelog_engine::{
    Durability, Engine, EngineConfig, EngineError, EngineHandle, LeaderEpoch, Offset, OffsetSpec, PartitionId,
    TimestampMs, TopicConfig, TopicName, TopicPartition,
};
use futures_lite::future::block_on;

use super::{
    ConsumerSettings, DeliverySink, Driver, MessageSink, ProducerHandle, ProducerSettings, Received, SendError,
    SendOutcome, SendToken,
};
use crate::payload::now_us;
use crate::workload::TopicSettings;

/// Largest batch the embedded producer builds.
pub const BATCH_BYTES_MAX: usize = 64 << 10;
/// Messages queued per producer before `send` reports a full queue.
pub const PRODUCER_QUEUE_MAX: usize = 100_000;
/// Bytes read per partition per read.
const READ_BYTES_MAX: usize = 1 << 20;

pub struct EmbeddedDriver {
    engine: Engine,
}

impl EmbeddedDriver {
    /// Starts an engine on `data_dir` with `shards` shards (0: one per core).
    pub fn start(data_dir: &Path, shards: usize, cpus: ShardCpus) -> anyhow::Result<EmbeddedDriver> {
        let mut config = EngineConfig::new(data_dir);
        config.shard_count = shards;
        config.cpus = cpus;
        let engine =
            Engine::start(config).with_context(|| format!("starting the embedded engine on {}", data_dir.display()))?;
        Ok(EmbeddedDriver { engine })
    }

    pub fn shutdown(self) -> anyhow::Result<()> {
        self.engine.shutdown().context("closing the embedded engine")
    }
}

enum Outgoing {
    Message { topic: String, partition: Option<i32>, key: Option<Vec<u8>>, payload: Vec<u8>, token: SendToken },
    Flush(flume::Sender<()>),
}

struct EmbeddedProducer {
    queue: flume::Sender<Outgoing>,
    thread: Option<JoinHandle<()>>,
}

impl ProducerHandle for EmbeddedProducer {
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        token: SendToken,
    ) -> Result<(), SendError> {
        let message = Outgoing::Message {
            topic: topic.to_string(),
            partition,
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            token,
        };
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => Err(SendError::QueueFull),
            Err(flume::TrySendError::Disconnected(_)) => {
                Err(SendError::Failed("the embedded producer stopped".to_string()))
            }
        }
    }

    fn flush(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let (done, flushed) = flume::bounded(1);
        self.queue.send(Outgoing::Flush(done)).context("the embedded producer stopped")?;
        flushed.recv_timeout(timeout).context("flushing the embedded producer timed out")
    }
}

impl Drop for EmbeddedProducer {
    fn drop(&mut self) {
        let (closed, _) = flume::bounded(1);
        self.queue = closed;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the embedded producer thread panicked");
            }
        }
    }
}

/// Polls every future until all are done; outputs in input order.
async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
    let mut futures: Vec<_> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future finished")).collect()
}

/// A message waiting to be appended with the others of its partition: its key, its
/// payload, and the token its delivery report carries.
type PendingMessage = (Option<Vec<u8>>, Vec<u8>, SendToken);

/// Pending messages by (topic, partition), each partition's in queue order.
type ByPartition = BTreeMap<(String, i32), Vec<PendingMessage>>;

/// An append in flight, borrowing the messages it reports on.
type Append<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The producer thread: takes what is queued, groups it by partition, appends each
/// partition's batches concurrently, then answers the flushes queued with it.
fn run_producer(engine: EngineHandle, queue: flume::Receiver<Outgoing>, sink: Arc<dyn DeliverySink>) {
    let round_robin = AtomicU64::new(0);
    while let Ok(first) = queue.recv() {
        let mut drained = vec![first];
        drained.extend(queue.try_iter().take(PRODUCER_QUEUE_MAX));
        let sticky = round_robin.fetch_add(1, Ordering::Relaxed);
        let (by_partition, flushes) = group_by_partition(&engine, drained, sticky, sink.as_ref());
        let mut appends: Vec<Append<'_>> = Vec::new();
        for ((topic, partition), messages) in &by_partition {
            let Ok(name) = TopicName::new(topic.as_str()) else { continue };
            let target = TopicPartition::new(name, PartitionId(*partition));
            let mut start = 0;
            while start < messages.len() {
                let end = batch_end(messages, start);
                appends.push(append_batch(engine.clone(), target.clone(), &messages[start..end], sink.clone()));
                start = end;
            }
        }
        block_on(join_all(appends));
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The queued messages grouped by partition, each partition's in queue order, and the
/// flushes queued with them. A message with no partition to go to is reported failed.
fn group_by_partition(
    engine: &EngineHandle,
    drained: Vec<Outgoing>,
    sticky: u64,
    sink: &dyn DeliverySink,
) -> (ByPartition, Vec<flume::Sender<()>>) {
    let mut by_partition = ByPartition::new();
    let mut flushes = Vec::new();
    for outgoing in drained {
        match outgoing {
            Outgoing::Message { topic, partition, key, payload, token } => {
                match partition_for(engine, &topic, partition, key.as_deref(), sticky) {
                    Ok(partition) => by_partition.entry((topic, partition)).or_default().push((key, payload, token)),
                    Err(error) => sink.delivered(token, SendOutcome::Failed { error, ambiguous: false }, now_us()),
                }
            }
            Outgoing::Flush(done) => flushes.push(done),
        }
    }
    (by_partition, flushes)
}

/// The partition a message goes to: the one it names, else its key's hash, else
/// `sticky` (one per round of queued messages); the error for an unknown topic or
/// partition.
fn partition_for(
    engine: &EngineHandle,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    sticky: u64,
) -> Result<i32, String> {
    let Some(count) = TopicName::new(topic).ok().and_then(|n| engine.topic(&n)).map(|m| m.partition_count) else {
        return Err(format!("unknown topic {topic}"));
    };
    match (partition, key) {
        (Some(partition), _) if (0..count).contains(&partition) => Ok(partition),
        (Some(partition), _) => Err(format!("topic {topic} has no partition {partition}")),
        (None, Some(key)) => Ok((corelog_engine::hash::fnv1a(key) % count as u64) as i32),
        (None, None) => Ok((sticky % count as u64) as i32),
    }
}

/// Where the batch that starts at `messages[start]` ends: it takes at least one
/// message, and more while it stays within [`BATCH_BYTES_MAX`].
fn batch_end(messages: &[PendingMessage], start: usize) -> usize {
    let mut end = start;
    let mut bytes = BATCH_HEADER_BYTES;
    while end < messages.len() && (end == start || bytes + messages[end].1.len() + 32 <= BATCH_BYTES_MAX) {
        bytes += messages[end].1.len() + messages[end].0.as_ref().map_or(0, Vec::len) + 32;
        end += 1;
    }
    end
}

/// Builds `chunk` into one batch now; the append of it to `target`, which reports
/// each message's outcome.
fn append_batch(
    engine: EngineHandle,
    target: TopicPartition,
    chunk: &[PendingMessage],
    sink: Arc<dyn DeliverySink>,
) -> Append<'_> {
    let specs: Vec<RecordSpec<'_>> = chunk
        .iter()
        .map(|(key, value, _)| RecordSpec { key: key.as_deref(), value: Some(value), timestamp_delta_ms: 0 })
        .collect();
    let batch = build_batch(TimestampMs(now_us() / 1000), BatchProducer::default(), &specs);
    Box::pin(async move {
        let result = engine.append(&target, batch, LeaderEpoch(0)).await;
        let at_us = now_us();
        for (index, (_, _, token)) in chunk.iter().enumerate() {
            let outcome = match &result {
                Ok(info) => SendOutcome::Acknowledged {
                    partition: target.partition.0,
                    offset: info.base_offset.0 + index as i64,
                },
                Err(error) => SendOutcome::Failed { error: error.to_string(), ambiguous: false },
            };
            sink.delivered(*token, outcome, at_us);
        }
    })
}

impl Driver for EmbeddedDriver {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn create_topic(&self, name: &str, partitions: i32, settings: &TopicSettings) -> anyhow::Result<()> {
        if settings.replication_factor.is_some_and(|replicas| replicas > 1) {
            bail!("the embedded engine holds one replica of each partition");
        }
        let mut config = TopicConfig { durability: Durability::Never, ..TopicConfig::default() };
        for (key, value) in &settings.configs {
            // The broker's table: its keys are accepted (and stored) as a broker would.
            corelog_broker::config::topic::set(&mut config, key, value)
                .with_context(|| format!("topic {name}: config {key}={value}"))?;
        }
        let name = TopicName::new(name)?;
        block_on(self.engine.handle().create_topic(name, partitions, config))?;
        Ok(())
    }

    fn producer(
        &self,
        _settings: &ProducerSettings,
        sink: Arc<dyn DeliverySink>,
    ) -> anyhow::Result<Box<dyn ProducerHandle>> {
        let (queue, receiver) = flume::bounded(PRODUCER_QUEUE_MAX);
        let engine = self.engine.handle();
        let thread = std::thread::Builder::new()
            .name("corelog-embedded-producer".to_string())
            .spawn(move || run_producer(engine, receiver, sink))?;
        Ok(Box::new(EmbeddedProducer { queue, thread: Some(thread) }))
    }

    fn consumer(
        &self,
        topics: &[String],
        settings: &ConsumerSettings,
        sink: Arc<dyn MessageSink>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        let engine = self.engine.handle();
        let (member, members) = (settings.member.0, settings.member.1.max(1));
        let mut positions: HashMap<TopicPartition, Offset> = HashMap::new();
        for topic in topics {
            let name = TopicName::new(topic.as_str())?;
            let Some(metadata) = engine.topic(&name) else { bail!("unknown topic {topic}") };
            for index in (0..metadata.partition_count).filter(|p| *p as usize % members == member) {
                positions.insert(TopicPartition::new(name.clone(), PartitionId(index)), Offset(0));
            }
        }
        let thread = std::thread::Builder::new().name("corelog-embedded-consumer".to_string()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut any = false;
                for (partition, position) in positions.iter_mut() {
                    let read = match block_on(engine.read(partition, *position, READ_BYTES_MAX, None)) {
                        Ok(read) => read,
                        Err(EngineError::OffsetOutOfRange { log_start_offset, .. }) if log_start_offset > *position => {
                            tracing::warn!("{partition}: offsets {position}..{log_start_offset} were deleted by retention before they were read");
                            *position = log_start_offset;
                            continue;
                        }
                        Err(error) => return Err(error.into()),
                    };
                    if read.bytes.is_empty() {
                        continue;
                    }
                    any = true;
                    let received_us = now_us();
                    for_each_record(&read.bytes, |offset, key, value| {
                        sink.received(Received {
                            topic: partition.topic.as_str(),
                            partition: partition.partition.0,
                            offset,
                            key,
                            payload: value.unwrap_or(&[]),
                            received_us,
                        });
                    })?;
                    *position = read.next_offset;
                }
                if !any {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        })?;
        Ok(thread)
    }

    fn end_offsets(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let name = TopicName::new(topic)?;
        (0..partitions).map(|p| self.end_offset(&TopicPartition::new(name.clone(), PartitionId(p)))).collect()
    }
}

impl EmbeddedDriver {
    fn end_offset(&self, partition: &TopicPartition) -> anyhow::Result<i64> {
        let latest = block_on(self.engine.handle().list_offset(partition, OffsetSpec::Latest))?;
        Ok(latest.map_or(0, |(offset, _)| offset.0))
    }
}

/// Calls `each(offset, key, value)` for every record of uncompressed v2 batches.
fn for_each_record(bytes: &[u8], mut each: impl FnMut(i64, Option<&[u8]>, Option<&[u8]>)) -> anyhow::Result<()> {
    for (position, header) in split_batches(bytes)? {
        let attributes = i16::from_be_bytes([bytes[position + 21], bytes[position + 22]]);
        if attributes & 0x7 != 0 {
            bail!(
                "compressed batch at offset {}: the embedded driver only writes uncompressed ones",
                header.base_offset.0
            );
        }
        let end = position + header.size_bytes();
        let mut cursor = &bytes[position + BATCH_HEADER_BYTES..end];
        while !cursor.is_empty() {
            let length = read_varint(&mut cursor)? as usize;
            let (mut record, rest) = cursor.split_at(length.min(cursor.len()));
            cursor = rest;
            record = &record[1..]; // attributes
            read_varint(&mut record)?; // timestamp delta
            let offset_delta = read_varint(&mut record)?;
            let key = read_bytes(&mut record)?;
            let value = read_bytes(&mut record)?;
            each(header.base_offset.0 + offset_delta, key, value);
        }
    }
    Ok(())
}

fn read_varint(cursor: &mut &[u8]) -> anyhow::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = cursor.split_first() else { bail!("truncated varint") };
        *cursor = rest;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    bail!("varint longer than 10 bytes")
}

fn read_bytes<'a>(cursor: &mut &'a [u8]) -> anyhow::Result<Option<&'a [u8]>> {
    let length = read_varint(cursor)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if length > cursor.len() {
        bail!("record field of {length} bytes overruns its record");
    }
    let (field, rest) = cursor.split_at(length);
    *cursor = rest;
    Ok(Some(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_back_to_what_was_built() {
        let specs = [
            RecordSpec { key: Some(b"k1"), value: Some(b"first"), timestamp_delta_ms: 0 },
            RecordSpec { key: None, value: Some(&[7u8; 300]), timestamp_delta_ms: 5 },
            RecordSpec { key: Some(b""), value: None, timestamp_delta_ms: 9 },
        ];
        let mut batch = build_batch(TimestampMs(1_700_000_000_000), BatchProducer::default(), &specs);
        corelog_engine::batch::stamp(&mut batch, Offset(40), LeaderEpoch(0));
        let mut seen = Vec::new();
        for_each_record(&batch, |offset, key, value| {
            seen.push((offset, key.map(<[u8]>::to_vec), value.map(<[u8]>::to_vec)))
        })
        .expect("decodes");
        assert_eq!(
            seen,
            vec![
                (40, Some(b"k1".to_vec()), Some(b"first".to_vec())),
                (41, None, Some(vec![7u8; 300])),
                (42, Some(Vec::new()), None),
            ]
        );
    }
}
