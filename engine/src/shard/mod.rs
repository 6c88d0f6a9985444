//! Thread per core: one glommio executor per shard, each pinned to its own core.
//!
//! A partition is owned by exactly one shard ([`shard_for`]) and its state lives
//! there only, in a partition actor (see [`partition`]). Everyone else, other shards
//! and outside threads alike, reaches it through [`EngineHandle`], which sends a
//! [`ShardRequest`] over the owner's bounded queue and awaits the reply. Queues are
//! bounded, so a slow shard pushes back on its senders. There are no locks on the
//! data path; the topic registry behind an `RwLock` is touched only by admin calls.
//!
//! Every method of [`EngineHandle`] is `async` and works from any executor (a glommio
//! shard, or `futures_lite::future::block_on` in a plain thread): replies travel over
//! flume channels, whose wakers glommio accepts from foreign threads.

pub mod partition;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Clock, SystemClock, TopicConfig, PARTITIONS_PER_TOPIC_MAX};
use crate::error::{EngineError, Result};
use crate::log::{AppendInfo, OffsetSpec, PartitionLog, PartitionStats, ReadResult};
use crate::storage::dma::{replace_file_durably, sync_dir_blocking};
use crate::storage::DmaStorage;
use crate::types::{LeaderEpoch, Offset, PartitionId, ShardId, TimestampMs, TopicName, TopicPartition};
use partition::{PartitionOp, Reply};

/// The file in each topic directory that records its partition count and config.
/// Written first on create, removed first on delete: a topic directory without it is
/// an interrupted delete and is removed at start-up.
const TOPIC_PROPERTIES_FILE: &str = "topic.properties";

/// A service started on every shard next to its partitions (the Kafka listener):
/// called once per shard, on that shard's thread, with a handle to the engine. The
/// future runs until it ends by itself or the engine shuts down.
pub type ShardService = Arc<dyn Fn(ShardId, EngineHandle) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// How the engine is started.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Number of shards; 0 means one per online CPU.
    pub shard_count: usize,
    /// Pin shard `i` to the `i`-th online CPU.
    pub pin_shards: bool,
    /// Capacity of each shard's request queue and each partition's op queue.
    pub queue_depth_max: usize,
    /// Per-file O_DIRECT write buffer of an active segment.
    pub write_buffer_bytes: usize,
    /// Locked memory glommio registers per shard for io_uring.
    pub io_memory_bytes: usize,
    /// Period of segment-age rolls and retention checks.
    pub housekeeping_interval_ms: u64,
    pub clock: Arc<dyn Clock>,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            shard_count: 0,
            pin_shards: true,
            queue_depth_max: 1024,
            write_buffer_bytes: crate::storage::dma::WRITE_BUFFER_BYTES_DEFAULT,
            io_memory_bytes: 10 << 20,
            housekeeping_interval_ms: 1000,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Which shard owns a partition: a stable hash of the topic plus the partition index,
/// so one topic's partitions spread over all shards.
pub fn shard_for(partition: &TopicPartition, shard_count: usize) -> ShardId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in partition.topic.as_str().bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ShardId((hash.wrapping_add(partition.partition.0 as u64) % shard_count as u64) as usize)
}

/// A request to the shard that owns `partition`.
pub enum ShardRequest {
    Open { partition: TopicPartition, config: TopicConfig, reply: Reply<()> },
    Op { partition: TopicPartition, op: PartitionOp },
    StartService { service: ShardService, handle: EngineHandle, reply: Reply<()> },
    Shutdown { reply: Reply<()> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: TopicName,
    pub partition_count: i32,
    pub config: TopicConfig,
}

struct Shared {
    data_dir: PathBuf,
    shards: Vec<flume::Sender<ShardRequest>>,
    topics: RwLock<BTreeMap<TopicName, TopicMetadata>>,
}

/// A cloneable, `Send` handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

/// The running engine: owns the shard threads. [`Engine::shutdown`] closes every
/// partition cleanly; dropping the engine does the same.
pub struct Engine {
    handle: EngineHandle,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
}

impl Engine {
    /// Probes io_uring, starts the shards and opens every topic found in the data
    /// directory (recovering partitions that were not closed cleanly).
    pub fn start(config: EngineConfig) -> Result<Engine> {
        Engine::start_with_service(config, None)
    }

    /// [`Engine::start`], plus `service` spawned on every shard once all topics are open.
    pub fn start_with_service(config: EngineConfig, service: Option<ShardService>) -> Result<Engine> {
        let cpus = glommio::CpuSet::online().map_err(|e| EngineError::Startup(format!("listing CPUs: {e}")))?;
        // CpuSet is a HashSet: sort, so shard i is pinned to the i-th CPU on every start.
        let mut cpu_ids: Vec<usize> = cpus.iter().map(|location| location.cpu).collect();
        cpu_ids.sort_unstable();
        let shard_count = if config.shard_count == 0 { cpu_ids.len().max(1) } else { config.shard_count };
        crate::diagnostics::probe_io_uring((shard_count * config.io_memory_bytes) as u64)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| EngineError::io("create directory", &config.data_dir, e))?;
        let topics = load_topics(&config.data_dir)?;

        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shard_count).map(|_| flume::bounded(config.queue_depth_max)).unzip();
        let handle = EngineHandle {
            shared: Arc::new(Shared { data_dir: config.data_dir.clone(), shards: senders, topics: RwLock::new(BTreeMap::new()) }),
        };
        let mut threads = Vec::with_capacity(shard_count);
        for (shard, receiver) in receivers.into_iter().enumerate() {
            let placement = match (config.pin_shards, cpu_ids.is_empty()) {
                (true, false) => Placement::Fixed(cpu_ids[shard % cpu_ids.len()]),
                _ => Placement::Unbound,
            };
            let shard_config = config.clone();
            let thread = LocalExecutorBuilder::new(placement)
                .name(&format!("corelog-shard-{shard}"))
                .io_memory(config.io_memory_bytes)
                .spawn(move || run_shard(ShardId(shard), receiver, shard_config))
                .map_err(|e| EngineError::Startup(format!("starting shard {shard}: {e}")))?;
            threads.push(thread);
        }
        let engine = Engine { handle, threads };
        futures_lite::future::block_on(async {
            for metadata in topics.into_values() {
                engine.handle.open_partitions(&metadata, 0).await?;
                engine.handle.shared.topics.write().expect("registry lock").insert(metadata.name.clone(), metadata);
            }
            if let Some(service) = service {
                for shard in 0..shard_count {
                    let (reply, receiver) = flume::bounded(1);
                    let request = ShardRequest::StartService { service: service.clone(), handle: engine.handle(), reply };
                    engine.handle.send(ShardId(shard), request).await?;
                    receiver.recv_async().await.map_err(|_| EngineError::ShardUnavailable(shard))??;
                }
            }
            Ok::<(), EngineError>(())
        })?;
        Ok(engine)
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Closes every partition cleanly (synced, clean-shutdown markers written) and
    /// stops the shard threads.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let mut first_error = None;
        for shard in 0..self.handle.shared.shards.len() {
            let (reply, receiver) = flume::bounded(1);
            if self.handle.shared.shards[shard].send(ShardRequest::Shutdown { reply }).is_ok() {
                if let Ok(Err(error)) = receiver.recv() {
                    first_error.get_or_insert(error);
                }
            }
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                first_error.get_or_insert(EngineError::Startup("a shard thread panicked".to_string()));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if let Err(error) = self.stop() {
                tracing::error!("engine shutdown: {error}");
            }
        }
    }
}

fn topic_dir(data_dir: &Path, topic: &TopicName) -> PathBuf {
    data_dir.join(topic.as_str())
}

fn partition_dir(data_dir: &Path, partition: &TopicPartition) -> PathBuf {
    topic_dir(data_dir, &partition.topic).join(partition.partition.0.to_string())
}

fn topic_properties(metadata: &TopicMetadata) -> String {
    format!("partitions={}\n{}", metadata.partition_count, metadata.config.to_properties())
}

/// Reads every topic's `topic.properties`; removes directories of interrupted deletes.
fn load_topics(data_dir: &Path) -> Result<BTreeMap<TopicName, TopicMetadata>> {
    let mut topics = BTreeMap::new();
    for entry in std::fs::read_dir(data_dir).map_err(|e| EngineError::io("list directory", data_dir, e))? {
        let entry = entry.map_err(|e| EngineError::io("list directory", data_dir, e))?;
        let Ok(name) = TopicName::new(entry.file_name().to_string_lossy().into_owned()) else { continue };
        if !entry.path().is_dir() {
            continue;
        }
        let properties_path = entry.path().join(TOPIC_PROPERTIES_FILE);
        let text = match std::fs::read_to_string(&properties_path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!("removing {}: a topic delete was interrupted", entry.path().display());
                std::fs::remove_dir_all(entry.path()).map_err(|e| EngineError::io("remove directory", entry.path(), e))?;
                continue;
            }
            Err(error) => return Err(EngineError::io("read", properties_path, error)),
        };
        let (count_line, config_text) = text.split_once('\n').unwrap_or((&text, ""));
        let partition_count = count_line
            .strip_prefix("partitions=")
            .and_then(|n| n.trim().parse::<i32>().ok())
            .filter(|n| (1..=PARTITIONS_PER_TOPIC_MAX).contains(n))
            .ok_or_else(|| EngineError::Startup(format!("{}: bad partitions line {count_line:?}", properties_path.display())))?;
        let config = TopicConfig::from_properties(config_text)?;
        topics.insert(name.clone(), TopicMetadata { name, partition_count, config });
    }
    Ok(topics)
}

impl EngineHandle {
    pub fn shard_count(&self) -> usize {
        self.shared.shards.len()
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    async fn send(&self, shard: ShardId, request: ShardRequest) -> Result<()> {
        self.shared.shards[shard.0].send_async(request).await.map_err(|_| EngineError::ShardUnavailable(shard.0))
    }

    async fn op<T>(&self, partition: &TopicPartition, make: impl FnOnce(Reply<T>) -> PartitionOp) -> Result<T> {
        let shard = shard_for(partition, self.shard_count());
        let (reply, receiver) = flume::bounded(1);
        self.send(shard, ShardRequest::Op { partition: partition.clone(), op: make(reply) }).await?;
        receiver.recv_async().await.map_err(|_| EngineError::ShardUnavailable(shard.0))?
    }

    async fn open_partitions(&self, metadata: &TopicMetadata, from: i32) -> Result<()> {
        let mut waiting = Vec::new();
        for index in from..metadata.partition_count {
            let partition = TopicPartition::new(metadata.name.clone(), PartitionId(index));
            let shard = shard_for(&partition, self.shard_count());
            let (reply, receiver) = flume::bounded(1);
            self.send(shard, ShardRequest::Open { partition, config: metadata.config.clone(), reply }).await?;
            waiting.push((shard, receiver));
        }
        for (shard, receiver) in waiting {
            receiver.recv_async().await.map_err(|_| EngineError::ShardUnavailable(shard.0))??;
        }
        Ok(())
    }

    pub fn topics(&self) -> Vec<TopicMetadata> {
        self.shared.topics.read().expect("registry lock").values().cloned().collect()
    }

    pub fn topic(&self, name: &TopicName) -> Option<TopicMetadata> {
        self.shared.topics.read().expect("registry lock").get(name).cloned()
    }

    /// Creates a topic: its properties file first (durably), then its partitions.
    pub async fn create_topic(&self, name: TopicName, partition_count: i32, config: TopicConfig) -> Result<TopicMetadata> {
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partition_count) {
            return Err(EngineError::InvalidPartitionCount(partition_count));
        }
        let metadata = TopicMetadata { name: name.clone(), partition_count, config };
        {
            let mut topics = self.shared.topics.write().expect("registry lock");
            if topics.contains_key(&name) {
                return Err(EngineError::TopicAlreadyExists(name.to_string()));
            }
            let dir = topic_dir(&self.shared.data_dir, &name);
            std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("create directory", &dir, e))?;
            replace_file_durably(&dir.join(TOPIC_PROPERTIES_FILE), topic_properties(&metadata).as_bytes())?;
            topics.insert(name.clone(), metadata.clone());
        }
        if let Err(error) = self.open_partitions(&metadata, 0).await {
            if let Err(cleanup) = self.delete_topic(&name).await {
                tracing::error!("cleaning up failed topic {name}: {cleanup}");
            }
            return Err(error);
        }
        Ok(metadata)
    }

    /// Deletes a topic and its data: the properties file goes first, so an
    /// interrupted delete finishes at the next start.
    pub async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        let metadata = self
            .shared
            .topics
            .write()
            .expect("registry lock")
            .remove(name)
            .ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
        let dir = topic_dir(&self.shared.data_dir, name);
        let properties = dir.join(TOPIC_PROPERTIES_FILE);
        std::fs::remove_file(&properties).map_err(|e| EngineError::io("remove", &properties, e))?;
        sync_dir_blocking(&dir)?;
        for index in 0..metadata.partition_count {
            let partition = TopicPartition::new(name.clone(), PartitionId(index));
            match self.op(&partition, |reply| PartitionOp::Close { delete: true, reply }).await {
                Ok(()) | Err(EngineError::UnknownTopicOrPartition(_)) => {}
                Err(error) => return Err(error),
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(EngineError::io("remove directory", &dir, error)),
        }
    }

    /// Grows a topic to `partition_count` partitions.
    pub async fn create_partitions(&self, name: &TopicName, partition_count: i32) -> Result<TopicMetadata> {
        let (before, metadata) = {
            let mut topics = self.shared.topics.write().expect("registry lock");
            let metadata = topics.get_mut(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
            if partition_count <= metadata.partition_count || partition_count > PARTITIONS_PER_TOPIC_MAX {
                return Err(EngineError::InvalidPartitionCount(partition_count));
            }
            let before = metadata.partition_count;
            let mut updated = metadata.clone();
            updated.partition_count = partition_count;
            let path = topic_dir(&self.shared.data_dir, name).join(TOPIC_PROPERTIES_FILE);
            replace_file_durably(&path, topic_properties(&updated).as_bytes())?;
            *metadata = updated.clone();
            (before, updated)
        };
        self.open_partitions(&metadata, before).await?;
        Ok(metadata)
    }

    /// Replaces a topic's config on disk and in every partition.
    pub async fn set_topic_config(&self, name: &TopicName, config: TopicConfig) -> Result<()> {
        let metadata = {
            let mut topics = self.shared.topics.write().expect("registry lock");
            let metadata = topics.get_mut(name).ok_or_else(|| EngineError::UnknownTopicOrPartition(name.to_string()))?;
            let mut updated = metadata.clone();
            updated.config = config.clone();
            let path = topic_dir(&self.shared.data_dir, name).join(TOPIC_PROPERTIES_FILE);
            replace_file_durably(&path, topic_properties(&updated).as_bytes())?;
            *metadata = updated.clone();
            updated
        };
        for index in 0..metadata.partition_count {
            let partition = TopicPartition::new(name.clone(), PartitionId(index));
            let config = config.clone();
            self.op(&partition, |reply| PartitionOp::SetConfig { config, reply }).await?;
        }
        Ok(())
    }

    /// Appends a record set (one or more v2 batches). Returns once the topic's
    /// durability policy is satisfied: under `always`, after the group commit's sync.
    pub async fn append(&self, partition: &TopicPartition, bytes: Vec<u8>, leader_epoch: LeaderEpoch) -> Result<AppendInfo> {
        self.op(partition, |reply| PartitionOp::Append { bytes, leader_epoch, reply }).await
    }

    /// Whole batches from `offset` (at most `max_bytes`, at least one batch), up to
    /// `offset_limit` or the high watermark.
    pub async fn read(
        &self,
        partition: &TopicPartition,
        offset: Offset,
        max_bytes: usize,
        offset_limit: Option<Offset>,
    ) -> Result<ReadResult> {
        self.op(partition, |reply| PartitionOp::Read { offset, max_bytes, offset_limit, reply }).await
    }

    pub async fn list_offset(&self, partition: &TopicPartition, spec: OffsetSpec) -> Result<Option<(Offset, TimestampMs)>> {
        self.op(partition, |reply| PartitionOp::ListOffset { spec, reply }).await
    }

    /// Syncs a partition now, whatever its policy; returns the durable offset.
    pub async fn sync(&self, partition: &TopicPartition) -> Result<Offset> {
        self.op(partition, |reply| PartitionOp::Sync { reply }).await
    }

    pub async fn truncate(&self, partition: &TopicPartition, offset: Offset) -> Result<()> {
        self.op(partition, |reply| PartitionOp::Truncate { offset, reply }).await
    }

    pub async fn delete_records(&self, partition: &TopicPartition, offset: Offset) -> Result<Offset> {
        self.op(partition, |reply| PartitionOp::DeleteRecords { offset, reply }).await
    }

    pub async fn stats(&self, partition: &TopicPartition) -> Result<PartitionStats> {
        self.op(partition, |reply| PartitionOp::Stats { reply }).await
    }

    /// Returns once the partition's high watermark is past `offset` (data to read),
    /// or the partition is gone. The partition's actor answers when an append (or,
    /// under `always`, its sync) moves the high watermark; callers bound the wait
    /// and dropping the future withdraws it.
    pub async fn wait_for_data(&self, partition: &TopicPartition, offset: Offset) {
        if let Err(error) = self.op(partition, |reply| PartitionOp::WaitForData { offset, reply }).await {
            tracing::debug!("waiting for data on {partition}: {error}");
        }
    }
}

/// The shard's event loop: opens partitions, routes ops to their actors, runs the
/// periodic ticks, and closes everything on shutdown.
async fn run_shard(shard: ShardId, requests: flume::Receiver<ShardRequest>, config: EngineConfig) {
    let storage = DmaStorage::new(config.write_buffer_bytes);
    if let Err(error) = storage.prime_device_probe(&config.data_dir, &format!(".io-probe-{}", shard.0)).await {
        tracing::error!("shard {shard}: probing the data directory's device: {error}");
    }
    let partitions: Rc<std::cell::RefCell<HashMap<TopicPartition, flume::Sender<PartitionOp>>>> = Rc::default();
    let ticker = glommio::spawn_local(tick(partitions.clone(), config.housekeeping_interval_ms)).detach();
    while let Ok(request) = requests.recv_async().await {
        match request {
            ShardRequest::Open { partition, config: topic_config, reply } => {
                let result = open_partition(&storage, &config, &partition, topic_config, config.queue_depth_max).await;
                let result = result.map(|queue| {
                    partitions.borrow_mut().insert(partition, queue);
                });
                if reply.send(result).is_err() {
                    tracing::debug!("shard {shard}: open reply dropped");
                }
            }
            ShardRequest::Op { partition, op } => {
                let queue = partitions.borrow().get(&partition).cloned();
                let Some(queue) = queue else {
                    reject(op, EngineError::UnknownTopicOrPartition(partition.to_string()));
                    continue;
                };
                let closing = matches!(op, PartitionOp::Close { .. });
                if closing {
                    partitions.borrow_mut().remove(&partition);
                }
                if let Err(flume::SendError(op)) = queue.send_async(op).await {
                    reject(op, EngineError::UnknownTopicOrPartition(partition.to_string()));
                }
            }
            ShardRequest::StartService { service, handle, reply } => {
                glommio::spawn_local(service(shard, handle)).detach();
                if reply.send(Ok(())).is_err() {
                    tracing::debug!("shard {shard}: service reply dropped");
                }
            }
            ShardRequest::Shutdown { reply } => {
                ticker.cancel();
                let result = close_all(&partitions).await;
                if reply.send(result).is_err() {
                    tracing::debug!("shard {shard}: shutdown reply dropped");
                }
                return;
            }
        }
    }
    ticker.cancel();
    if let Err(error) = close_all(&partitions).await {
        tracing::error!("shard {shard}: closing partitions: {error}");
    }
}

async fn open_partition(
    storage: &DmaStorage,
    config: &EngineConfig,
    partition: &TopicPartition,
    topic_config: TopicConfig,
    queue_depth_max: usize,
) -> Result<flume::Sender<PartitionOp>> {
    let dir = partition_dir(&config.data_dir, partition);
    let (log, report) =
        PartitionLog::open(storage.clone(), &dir, partition.clone(), topic_config, config.clock.clone()).await?;
    if report.bytes_truncated > 0 {
        tracing::warn!(
            "recovered {partition} after an unclean shutdown: truncated a {}-byte torn or corrupt tail after {} \
             valid batches of the active segment; the log now ends at offset {} (consumers past it get \
             OFFSET_OUT_OF_RANGE and reset)",
            report.bytes_truncated,
            report.batches_valid,
            log.log_end_offset()
        );
    }
    let (queue, receiver) = flume::bounded(queue_depth_max);
    glommio::spawn_local(partition::run(log, receiver)).detach();
    Ok(queue)
}

async fn close_all(partitions: &Rc<std::cell::RefCell<HashMap<TopicPartition, flume::Sender<PartitionOp>>>>) -> Result<()> {
    let queues: Vec<_> = partitions.borrow_mut().drain().collect();
    let mut first_error = None;
    for (partition, queue) in queues {
        let (reply, receiver) = flume::bounded(1);
        if queue.send_async(PartitionOp::Close { delete: false, reply }).await.is_ok() {
            match receiver.recv_async().await {
                Ok(Err(error)) => {
                    tracing::error!("closing {partition}: {error}");
                    first_error.get_or_insert(error);
                }
                Ok(Ok(())) | Err(_) => {}
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sends a housekeeping tick (segment roll by age, retention) to every partition of
/// the shard. A tick is dropped, not queued, when a partition's queue is full: the
/// partition is busy and the next tick will do.
async fn tick(partitions: Rc<std::cell::RefCell<HashMap<TopicPartition, flume::Sender<PartitionOp>>>>, housekeeping_ms: u64) {
    loop {
        glommio::timer::sleep(Duration::from_millis(housekeeping_ms.max(1))).await;
        for queue in partitions.borrow().values() {
            if queue.try_send(PartitionOp::Housekeeping).is_err() {
                tracing::trace!("housekeeping tick skipped for a busy partition");
            }
        }
    }
}

fn reject(op: PartitionOp, error: EngineError) {
    fn send<T>(reply: Reply<T>, error: EngineError) {
        if reply.send(Err(error)).is_err() {
            tracing::debug!("a rejection found its requester gone");
        }
    }
    match op {
        PartitionOp::Append { reply, .. } => send(reply, error),
        PartitionOp::Read { reply, .. } => send(reply, error),
        PartitionOp::ListOffset { reply, .. } => send(reply, error),
        PartitionOp::Sync { reply } => send(reply, error),
        PartitionOp::Truncate { reply, .. } => send(reply, error),
        PartitionOp::DeleteRecords { reply, .. } => send(reply, error),
        PartitionOp::SetConfig { reply, .. } => send(reply, error),
        PartitionOp::Stats { reply } => send(reply, error),
        PartitionOp::WaitForData { reply, .. } => send(reply, error),
        PartitionOp::Close { reply, .. } => send(reply, error),
        PartitionOp::Housekeeping => {}
    }
}
