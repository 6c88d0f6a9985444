//! Thread per core: one glommio executor per shard, each pinned to its own core.
//!
//! A partition is owned by exactly one shard ([`shard_for`]) and its state lives
//! there only, in a partition actor (see [`partition`]). Everyone else, other shards
//! and outside threads alike, reaches it through [`EngineHandle`], which sends a
//! [`ShardRequest`] over the owner's bounded queue and awaits the reply. Queues are
//! bounded, so a slow shard pushes back on its senders. There are no locks on the
//! data path; the topic registry behind an `RwLock` is touched only by admin calls
//! and metadata lookups, and only the controller thread changes it (see
//! [`controller`]: admin operations run there one at a time, to the end).
//! The `dispatch_*` methods return once the op is queued, as a [`Dispatched`]
//! whose reply is awaited later: a Kafka connection queues every op of a request
//! before the next request starts, so its requests reach each partition in order.
//!
//! Every method of [`EngineHandle`] is `async` and works from any executor (a glommio
//! shard, or `futures_lite::future::block_on` in a plain thread): replies travel over
//! flume channels, whose wakers glommio accepts from foreign threads.
//!
//! Damage is contained: a partition whose files start-up finds damaged (see
//! [`crate::log`]) is not opened and stays offline; its files are kept byte for byte,
//! every request to it fails with [`EngineError::PartitionOffline`] (Kafka's
//! `KAFKA_STORAGE_ERROR`), [`EngineHandle::offline_partitions`] names it for
//! Metadata, and every other partition is served. Its shard holds it under its
//! topic's incarnation like an open one, so deleting the topic closes it and
//! removes its files with the rest. A create or a growth that meets damage fails
//! instead, all or nothing (see `OnDamage`). [`repair_partition`] (`corelog repair`)
//! truncates it at the damage, with consent, while the broker is stopped.
//!
//! A shard that panics is gone: glommio unwinds its thread, and its partitions,
//! listener and connections with it. Nothing can restart it in place (its
//! partitions' in-memory state died mid-operation), so the engine makes the death
//! loud and bounded instead: a panic hook logs the shard and the panic, marks the
//! shard failed (requests to it fail at once with [`EngineError::ShardUnavailable`]
//! instead of waiting forever, and shutdown skips it) and reports a [`ShardFailure`]
//! on [`EngineConfig::shard_failures`]. `corelog broker` exits non-zero on it; the
//! next start recovers like after a crash, which loses nothing acknowledged.

mod controller;
pub mod partition;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, RwLock};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::batch::TxnMarker;
use crate::cleaner::CleanStep;
use crate::config::{Clock, SystemClock, TopicConfig, PARTITIONS_PER_TOPIC_MAX};
use crate::cpus::{CpuList, ShardCpus};
use crate::data_dir::DataDir;
use crate::error::{EngineError, Result};
use crate::log::{AppendInfo, OffsetSpec, PartitionLog, PartitionStats, ReadResult, RepairReport};
use crate::producer_state::ActiveProducer;
use crate::storage::DmaStorage;
use crate::types::{
    LeaderEpoch, Offset, PartitionId, ProducerEpoch, ProducerId, ShardId, TimestampMs, TopicId, TopicName,
    TopicPartition,
};
use partition::{PartitionOp, Reader, Reply};

/// The file in each topic directory that records its topic id, partition count and
/// config. Written last on create (once every partition is open), removed first on
/// delete: a topic exists on disk exactly when this file does, and a topic directory
/// without it is an interrupted create or delete and is removed at start-up.
const TOPIC_PROPERTIES_FILE: &str = "topic.properties";

/// A service started on every shard next to its partitions (the Kafka listener):
/// called once per shard, on that shard's thread, with a handle to the engine. The
/// future runs until it ends by itself or the engine shuts down.
pub type ShardService = Arc<dyn Fn(ShardId, EngineHandle) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// How the engine is started.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Number of shards; 0 means one per CPU of `cpus` (one per online CPU when
    /// they are unpinned).
    pub shard_count: usize,
    /// The CPUs the shards are pinned to (shard `i` to the `i`-th, wrapping), or
    /// none; by default every online CPU. A CPU that is not online fails the start.
    pub cpus: ShardCpus,
    /// Capacity of each shard's request queue and each partition's op queue.
    pub queue_depth_max: usize,
    /// Per-file O_DIRECT write buffer of an active segment.
    pub write_buffer_bytes: usize,
    /// Locked memory glommio registers per shard for io_uring.
    pub io_memory_bytes: usize,
    /// Period of segment-age rolls and retention checks.
    pub housekeeping_interval_ms: u64,
    /// How long each shard's log cleaner waits when no compacted partition is due a
    /// pass before it asks them again (Kafka's `log.cleaner.backoff.ms`, whose 15 s
    /// default is shorter here: the question costs a few header reads).
    pub cleaner_backoff_ms: u64,
    pub clock: Arc<dyn Clock>,
    /// Where a shard's panic is reported, besides the log (see the module doc): the
    /// owner of the process should end it, since the dead shard's partitions and
    /// connections cannot come back. `None`: only logged.
    pub shard_failures: Option<flume::Sender<ShardFailure>>,
}

/// A shard whose thread panicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFailure {
    pub shard: ShardId,
    /// The panic's message and where it was raised.
    pub panic: String,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            shard_count: 0,
            cpus: ShardCpus::Online,
            queue_depth_max: 1024,
            write_buffer_bytes: crate::storage::dma::WRITE_BUFFER_BYTES_DEFAULT,
            io_memory_bytes: 10 << 20,
            housekeeping_interval_ms: 1000,
            cleaner_backoff_ms: 1000,
            clock: Arc::new(SystemClock),
            shard_failures: None,
        }
    }
}

/// Which shard owns a partition: a stable hash of the topic plus the partition index,
/// so one topic's partitions spread over all shards.
pub fn shard_for(partition: &TopicPartition, shard_count: usize) -> ShardId {
    let hash = crate::hash::fnv1a(partition.topic.as_str().as_bytes());
    ShardId((hash.wrapping_add(partition.partition.0 as u64) % shard_count as u64) as usize)
}

/// A request to the shard that owns `partition`.
pub enum ShardRequest {
    /// Opens a partition of incarnation `topic_id`, inactive: only ops naming
    /// `topic_id` reach it until [`ShardRequest::Activate`]. Refused if the
    /// partition is open already, in any incarnation: two actors never share a
    /// directory. If its files are damaged, the shard holds it offline under
    /// `topic_id` and answers the damage (see [`EngineError::is_damage`]).
    Open {
        partition: TopicPartition,
        topic_id: TopicId,
        config: TopicConfig,
        reply: Reply<()>,
    },
    /// Makes every partition of incarnation `topic_id` of `topic` on this shard
    /// reachable by ops that name no incarnation (the data path): sent once the
    /// topic's creation or growth is durable, so no append lands in partitions that
    /// a failed creation would delete again.
    Activate {
        topic: TopicName,
        topic_id: TopicId,
        reply: Reply<()>,
    },
    /// An op for `partition`: for incarnation `topic_id` if given (admin calls),
    /// otherwise for the active incarnation (the data path). A partition of any other
    /// incarnation, or none, answers UNKNOWN_TOPIC_OR_PARTITION.
    Op {
        partition: TopicPartition,
        topic_id: Option<TopicId>,
        op: PartitionOp,
    },
    StartService {
        service: ShardService,
        handle: EngineHandle,
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: TopicName,
    /// This incarnation of the name.
    pub id: TopicId,
    pub partition_count: i32,
    pub config: TopicConfig,
}

struct Shared {
    data_dir: PathBuf,
    shards: Vec<flume::Sender<ShardRequest>>,
    /// The committed topics: a topic is here from the end of its creation to the
    /// start of its deletion. Changed only on the controller thread.
    topics: RwLock<BTreeMap<TopicName, TopicMetadata>>,
    controller: flume::Sender<controller::ControllerRequest>,
    /// Partitions that start-up found damaged and left offline, with the damage (read
    /// by Metadata). Written at start-up, before any admin operation runs, and by
    /// topic deletion on the controller.
    offline: RwLock<BTreeMap<TopicPartition, String>>,
    /// Per shard: set once its thread has panicked (see [`ShardFailure`]).
    failed: Arc<[AtomicBool]>,
}

/// A cloneable, `Send` handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

/// An op on its owner shard's queue whose reply is still to come (the `dispatch_*`
/// methods of [`EngineHandle`]). Ops on one partition run in the order they were
/// queued: the shard routes its queue in order to the partition's queue, which the
/// partition's actor serves in order. So a caller that queues op A, then op B on the
/// same partition, knows A runs first, whatever order it awaits the replies in.
/// Dropping it withdraws nothing: the op runs and its reply is discarded.
#[must_use = "the op is queued; the reply says whether it succeeded"]
pub struct Dispatched<T> {
    shard: ShardId,
    receiver: flume::Receiver<Result<T>>,
}

impl<T> Dispatched<T> {
    /// Waits for the op's reply.
    pub async fn reply(self) -> Result<T> {
        self.receiver.recv_async().await.map_err(|_| EngineError::ShardUnavailable(self.shard.0))?
    }
}

/// The running engine: owns the shard threads. [`Engine::shutdown`] closes every
/// partition cleanly; dropping the engine does the same.
pub struct Engine {
    handle: EngineHandle,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    controller: Option<std::thread::JoinHandle<()>>,
    /// The data directory's lock, released only after every shard has stopped (a
    /// field is dropped after `Drop::drop` has run).
    _data_dir: DataDir,
}

impl Engine {
    /// Probes io_uring, starts the shards and opens every topic found in the data
    /// directory (recovering partitions that were not closed cleanly).
    pub fn start(config: EngineConfig) -> Result<Engine> {
        Engine::start_with_service(config, None)
    }

    /// [`Engine::start`], plus `service` spawned on every shard once all topics are open.
    pub fn start_with_service(config: EngineConfig, service: Option<ShardService>) -> Result<Engine> {
        let data_dir = DataDir::open(&config.data_dir)?;
        Engine::start_in(data_dir, config, service)
    }

    /// [`Engine::start_with_service`] in a data directory the caller has already
    /// opened and locked (the broker reads its own files there before the engine
    /// starts). `config.data_dir` must be that directory.
    pub fn start_in(data_dir: DataDir, config: EngineConfig, service: Option<ShardService>) -> Result<Engine> {
        assert_eq!(data_dir.path(), config.data_dir, "the engine starts in the data directory it was given");
        let online = crate::cpus::online()?;
        let pinned =
            config.cpus.resolve(&online).map_err(|reason| EngineError::Startup(format!("shard CPUs: {reason}")))?;
        let shard_count = match (config.shard_count, &pinned) {
            (0, Some(cpus)) => cpus.cpus().len(),
            (0, None) => online.cpus().len(),
            (count, _) => count,
        };
        log_placement(shard_count, pinned.as_ref());
        crate::diagnostics::probe_io_uring((shard_count * config.io_memory_bytes) as u64)?;
        let topics = load_topics(&config.data_dir)?;

        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shard_count).map(|_| flume::bounded(config.queue_depth_max)).unzip();
        let (controller_sender, controller_receiver) = flume::bounded(config.queue_depth_max);
        let failed: Arc<[AtomicBool]> = (0..shard_count).map(|_| AtomicBool::new(false)).collect();
        install_shard_panic_hook();
        let handle = EngineHandle {
            shared: Arc::new(Shared {
                data_dir: config.data_dir.clone(),
                shards: senders,
                topics: RwLock::new(BTreeMap::new()),
                controller: controller_sender,
                offline: RwLock::new(BTreeMap::new()),
                failed: failed.clone(),
            }),
        };
        let mut threads = Vec::with_capacity(shard_count);
        for (shard, receiver) in receivers.into_iter().enumerate() {
            let placement = match &pinned {
                Some(cpus) => Placement::Fixed(cpus.cpu_for(ShardId(shard))),
                None => Placement::Unbound,
            };
            let shard_config = config.clone();
            let watch =
                ShardWatch { shard: ShardId(shard), failed: failed.clone(), report: config.shard_failures.clone() };
            let thread = LocalExecutorBuilder::new(placement)
                .name(&format!("corelog-shard-{shard}"))
                .io_memory(config.io_memory_bytes)
                .spawn(move || {
                    SHARD_WATCH.with(|slot| *slot.borrow_mut() = Some(watch));
                    run_shard(ShardId(shard), receiver, shard_config)
                })
                .map_err(|e| EngineError::Startup(format!("starting shard {shard}: {e}")))?;
            threads.push(thread);
        }
        let mut engine = Engine { handle, threads, controller: None, _data_dir: data_dir };
        engine.controller = Some(controller::start(controller_receiver)?);
        futures_lite::future::block_on(async {
            for metadata in topics.into_values() {
                let partitions = 0..metadata.partition_count;
                let (_, failed) = engine.handle.open_partitions(&metadata, partitions, OnDamage::KeepOffline).await;
                if let Some(error) = failed {
                    return Err(error);
                }
                engine.handle.activate(&metadata).await?;
                engine.handle.shared.topics.write().expect("registry lock").insert(metadata.name.clone(), metadata);
            }
            if let Some(service) = service {
                for shard in 0..shard_count {
                    let (reply, receiver) = flume::bounded(1);
                    let request =
                        ShardRequest::StartService { service: service.clone(), handle: engine.handle(), reply };
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
        // The admin operation under way finishes first (it needs the shards); the
        // ones queued behind the stop are dropped and their callers get an error.
        if let Some(controller) = self.controller.take() {
            if self.handle.shared.controller.send(controller::ControllerRequest::Stop).is_err() {
                tracing::debug!("the controller thread had ended already");
            }
            if controller.join().is_err() {
                first_error.get_or_insert(EngineError::ThreadPanicked { thread: "controller".to_string() });
            }
        }
        for shard in 0..self.handle.shared.shards.len() {
            if self.handle.shared.failed[shard].load(Ordering::Acquire) {
                // Nobody reads its queue any more: a request would wait forever.
                first_error.get_or_insert(EngineError::ShardUnavailable(shard));
                continue;
            }
            let (reply, receiver) = flume::bounded(1);
            if self.handle.shared.shards[shard].send(ShardRequest::Shutdown { reply }).is_ok() {
                if let Ok(Err(error)) = receiver.recv() {
                    first_error.get_or_insert(error);
                }
            }
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                first_error.get_or_insert(EngineError::ThreadPanicked { thread: "shard".to_string() });
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

/// The key of the topic id's line in `topic.properties`, the second line.
const TOPIC_ID_KEY: &str = "topic.id";

fn topic_properties(metadata: &TopicMetadata) -> String {
    format!(
        "partitions={}\n{TOPIC_ID_KEY}={}\n{}",
        metadata.partition_count,
        metadata.id,
        metadata.config.to_properties()
    )
}

/// Parses [`topic_properties`]. A file written before topic ids were stored has no
/// id line; its topic keeps the id it has always been reported with, derived from
/// the name.
fn parse_topic_properties(name: TopicName, text: &str, path: &Path) -> Result<TopicMetadata> {
    let bad = |reason: String| EngineError::CorruptFile { path: path.to_path_buf(), reason };
    let (count_line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let partition_count = count_line
        .strip_prefix("partitions=")
        .and_then(|n| n.trim().parse::<i32>().ok())
        .filter(|n| (1..=PARTITIONS_PER_TOPIC_MAX).contains(n))
        .ok_or_else(|| bad(format!("bad partitions line {count_line:?}")))?;
    let (id, config_text) = match rest.strip_prefix(TOPIC_ID_KEY).and_then(|r| r.strip_prefix('=')) {
        Some(id_and_rest) => {
            let (id_line, config_text) = id_and_rest.split_once('\n').unwrap_or((id_and_rest, ""));
            let id = TopicId::parse(id_line.trim()).ok_or_else(|| bad(format!("bad {TOPIC_ID_KEY} {id_line:?}")))?;
            (id, config_text)
        }
        None => (controller::topic_id_from_name(&name), rest),
    };
    let config = TopicConfig::from_properties(config_text)?;
    Ok(TopicMetadata { name, id, partition_count, config })
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
                tracing::warn!("removing {}: a topic create or delete was interrupted", entry.path().display());
                std::fs::remove_dir_all(entry.path())
                    .map_err(|e| EngineError::io("remove directory", entry.path(), e))?;
                continue;
            }
            Err(error) => return Err(EngineError::io("read", properties_path, error)),
        };
        topics.insert(name.clone(), parse_topic_properties(name, &text, &properties_path)?);
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
        if self.shared.failed[shard.0].load(Ordering::Acquire) {
            return Err(EngineError::ShardUnavailable(shard.0));
        }
        self.shared.shards[shard.0].send_async(request).await.map_err(|_| EngineError::ShardUnavailable(shard.0))
    }

    /// Shards whose thread panicked (see [`ShardFailure`]).
    pub fn failed_shards(&self) -> Vec<ShardId> {
        (0..self.shard_count())
            .filter(|&shard| self.shared.failed[shard].load(Ordering::Acquire))
            .map(ShardId)
            .collect()
    }

    /// The partitions of `topic` that are offline because their files are damaged.
    pub fn offline_partitions(&self, topic: &TopicName) -> BTreeSet<PartitionId> {
        let offline = self.shared.offline.read().expect("offline registry lock");
        offline.keys().filter(|partition| partition.topic == *topic).map(|partition| partition.partition).collect()
    }

    /// An op for the active incarnation of `partition` (the data path).
    async fn op<T>(&self, partition: &TopicPartition, make: impl FnOnce(Reply<T>) -> PartitionOp) -> Result<T> {
        self.dispatch(partition, make).await?.reply().await
    }

    /// Puts an op for the active incarnation of `partition` on its owner shard's
    /// queue and returns without waiting for the reply.
    async fn dispatch<T>(
        &self,
        partition: &TopicPartition,
        make: impl FnOnce(Reply<T>) -> PartitionOp,
    ) -> Result<Dispatched<T>> {
        self.dispatch_on(partition, None, make).await
    }

    /// An op for `partition`, of incarnation `topic_id` if given (admin calls),
    /// else of the active one.
    async fn op_on<T>(
        &self,
        partition: &TopicPartition,
        topic_id: Option<TopicId>,
        make: impl FnOnce(Reply<T>) -> PartitionOp,
    ) -> Result<T> {
        self.dispatch_on(partition, topic_id, make).await?.reply().await
    }

    async fn dispatch_on<T>(
        &self,
        partition: &TopicPartition,
        topic_id: Option<TopicId>,
        make: impl FnOnce(Reply<T>) -> PartitionOp,
    ) -> Result<Dispatched<T>> {
        let shard = shard_for(partition, self.shard_count());
        let (reply, receiver) = flume::bounded(1);
        self.send(shard, ShardRequest::Op { partition: partition.clone(), topic_id, op: make(reply) }).await?;
        Ok(Dispatched { shard, receiver })
    }

    /// Opens partitions `indexes` of `metadata`'s incarnation, inactive, all at once
    /// (each on its shard). Waits for every answer, so that on failure the caller
    /// knows exactly which the shards now hold: returns those, and the first error.
    /// A partition whose files are damaged is held too, offline (a close of the
    /// incarnation must reach it); `on_damage` says whether that fails the open.
    async fn open_partitions(
        &self,
        metadata: &TopicMetadata,
        indexes: Range<i32>,
        on_damage: OnDamage,
    ) -> (Vec<PartitionId>, Option<EngineError>) {
        let mut waiting = Vec::with_capacity(indexes.len());
        let mut first_error = None;
        for index in indexes {
            let partition = TopicPartition::new(metadata.name.clone(), PartitionId(index));
            let shard = shard_for(&partition, self.shard_count());
            let (reply, receiver) = flume::bounded(1);
            let request =
                ShardRequest::Open { partition, topic_id: metadata.id, config: metadata.config.clone(), reply };
            match self.send(shard, request).await {
                Ok(()) => waiting.push((PartitionId(index), shard, receiver)),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        let mut opened = Vec::with_capacity(waiting.len());
        for (index, shard, receiver) in waiting {
            match receiver.recv_async().await.map_err(|_| EngineError::ShardUnavailable(shard.0)) {
                Ok(Ok(())) => opened.push(index),
                // The shard holds the partition offline (see `Target::Offline`).
                Ok(Err(error)) if error.is_damage() => {
                    opened.push(index);
                    match on_damage {
                        OnDamage::KeepOffline => {
                            let partition = TopicPartition::new(metadata.name.clone(), index);
                            let cause = error.to_string();
                            tracing::error!("{}", offline_error(&self.shared.data_dir, &partition, &cause));
                            self.shared.offline.write().expect("offline registry lock").insert(partition, cause);
                        }
                        OnDamage::Fail => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
                Ok(Err(error)) | Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        (opened, first_error)
    }

    /// Closes partitions `indexes` of incarnation `topic_id` of `topic`, all at once;
    /// with `delete`, their directories go too (an offline partition's stays, for the
    /// caller to remove with the topic's directory). Every close is attempted; returns
    /// the first error. A partition whose close was delivered has no actor afterwards,
    /// whatever the outcome: the actor ends after answering a close.
    async fn close_partitions(
        &self,
        topic: &TopicName,
        topic_id: TopicId,
        indexes: impl Iterator<Item = PartitionId>,
        delete: bool,
    ) -> Result<()> {
        let mut waiting = Vec::new();
        let mut first_error = None;
        for index in indexes {
            let partition = TopicPartition::new(topic.clone(), index);
            let shard = shard_for(&partition, self.shard_count());
            let (reply, receiver) = flume::bounded(1);
            let op = PartitionOp::Close { delete, reply };
            let request = ShardRequest::Op { partition: partition.clone(), topic_id: Some(topic_id), op };
            match self.send(shard, request).await {
                Ok(()) => waiting.push((partition, shard, receiver)),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        for (partition, shard, receiver) in waiting {
            match receiver.recv_async().await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!("closing {partition} (topic id {topic_id}): {error}");
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert(EngineError::ShardUnavailable(shard.0));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Activates `metadata`'s incarnation on every shard (see [`ShardRequest::Activate`]).
    async fn activate(&self, metadata: &TopicMetadata) -> Result<()> {
        let mut waiting = Vec::with_capacity(self.shard_count());
        for shard in 0..self.shard_count() {
            let (reply, receiver) = flume::bounded(1);
            let request = ShardRequest::Activate { topic: metadata.name.clone(), topic_id: metadata.id, reply };
            self.send(ShardId(shard), request).await?;
            waiting.push((shard, receiver));
        }
        for (shard, receiver) in waiting {
            receiver.recv_async().await.map_err(|_| EngineError::ShardUnavailable(shard))??;
        }
        Ok(())
    }

    pub fn topics(&self) -> Vec<TopicMetadata> {
        self.shared.topics.read().expect("registry lock").values().cloned().collect()
    }

    pub fn topic(&self, name: &TopicName) -> Option<TopicMetadata> {
        self.shared.topics.read().expect("registry lock").get(name).cloned()
    }

    /// Creates a topic, all or nothing: a new topic id, every partition opened, then
    /// its properties file (the commit point), then the registry. Runs on the
    /// controller, after every admin operation asked for before it.
    pub async fn create_topic(
        &self,
        name: TopicName,
        partition_count: i32,
        config: TopicConfig,
    ) -> Result<TopicMetadata> {
        self.on_controller("create topic", move |handle| async move {
            controller::create_topic(&handle, name, partition_count, config, None).await
        })
        .await
    }

    /// [`EngineHandle::create_topic`] with the id a cluster's controller gave the
    /// topic, so every replica's incarnation has the same id.
    pub async fn create_topic_with_id(
        &self,
        name: TopicName,
        id: TopicId,
        partition_count: i32,
        config: TopicConfig,
    ) -> Result<TopicMetadata> {
        self.on_controller("create topic", move |handle| async move {
            controller::create_topic(&handle, name, partition_count, config, Some(id)).await
        })
        .await
    }

    /// Deletes a topic and its data: the properties file goes first (the commit
    /// point), then the registry entry, then every partition (actor and files), then
    /// the directory. Runs on the controller; once it returns, no op reaches the
    /// deleted incarnation and a create of the same name starts from nothing.
    pub async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        let name = name.clone();
        self.on_controller("delete topic", move |handle| async move { controller::delete_topic(&handle, &name).await })
            .await
    }

    /// Grows a topic to `partition_count` partitions, all or nothing. Runs on the
    /// controller.
    pub async fn create_partitions(&self, name: &TopicName, partition_count: i32) -> Result<TopicMetadata> {
        let name = name.clone();
        self.on_controller("create partitions", move |handle| async move {
            controller::create_partitions(&handle, &name, partition_count).await
        })
        .await
    }

    /// Replaces a topic's config on disk and in every partition. Runs on the
    /// controller.
    pub async fn set_topic_config(&self, name: &TopicName, config: TopicConfig) -> Result<()> {
        let name = name.clone();
        self.on_controller("set topic config", move |handle| async move {
            controller::set_topic_config(&handle, &name, config).await
        })
        .await
    }

    /// Appends a record set (one or more v2 batches). Returns once the topic's
    /// durability policy is satisfied: under `always`, after the group commit's sync.
    pub async fn append(
        &self,
        partition: &TopicPartition,
        bytes: Vec<u8>,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        self.dispatch_append(partition, bytes, leader_epoch).await?.reply().await
    }

    /// [`EngineHandle::append`] in two stages: returns once the append is queued
    /// (its place in the partition's order is fixed), with its reply to come.
    pub async fn dispatch_append(
        &self,
        partition: &TopicPartition,
        bytes: Vec<u8>,
        leader_epoch: LeaderEpoch,
    ) -> Result<Dispatched<AppendInfo>> {
        self.dispatch(partition, |reply| PartitionOp::Append { bytes, leader_epoch, reply }).await
    }

    /// A follower's append: the leader's batches as they are, with their offsets and
    /// leader epochs (see [`PartitionLog::append_replicated`]). Returns as
    /// [`EngineHandle::append`] does, once the durability policy is satisfied.
    pub async fn append_replicated(&self, partition: &TopicPartition, bytes: Vec<u8>) -> Result<AppendInfo> {
        self.dispatch_append_replicated(partition, bytes).await?.reply().await
    }

    /// [`EngineHandle::append_replicated`] in two stages, as [`EngineHandle::dispatch_append`].
    pub async fn dispatch_append_replicated(
        &self,
        partition: &TopicPartition,
        bytes: Vec<u8>,
    ) -> Result<Dispatched<AppendInfo>> {
        self.dispatch(partition, |reply| PartitionOp::AppendReplicated { bytes, reply }).await
    }

    /// Makes `leader_epoch` the partition's latest epoch from its log end on, durably,
    /// before anything is appended in it: what a replica does when it becomes leader
    /// (see [`PartitionLog::assign_leader_epoch`]).
    pub async fn assign_leader_epoch(&self, partition: &TopicPartition, leader_epoch: LeaderEpoch) -> Result<()> {
        self.op(partition, |reply| PartitionOp::AssignLeaderEpoch { leader_epoch, reply }).await
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
        self.dispatch_read(partition, offset, max_bytes, offset_limit).await?.reply().await
    }

    /// [`EngineHandle::read`] in two stages, as [`EngineHandle::dispatch_append`].
    pub async fn dispatch_read(
        &self,
        partition: &TopicPartition,
        offset: Offset,
        max_bytes: usize,
        offset_limit: Option<Offset>,
    ) -> Result<Dispatched<ReadResult>> {
        self.dispatch(partition, |reply| PartitionOp::Read {
            offset,
            max_bytes,
            offset_limit,
            reader: Reader::Consumer,
            reply,
        })
        .await
    }

    /// A consumer's read of committed data (`isolation_level=1`): as
    /// [`EngineHandle::read`], but up to the last stable offset, with the aborted
    /// transactions overlapping what it returns
    /// ([`PartitionLog::read_committed`]); in two stages, as
    /// [`EngineHandle::dispatch_append`].
    pub async fn dispatch_read_committed(
        &self,
        partition: &TopicPartition,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<Dispatched<ReadResult>> {
        let read = |reply| PartitionOp::Read {
            offset,
            max_bytes,
            offset_limit: None,
            reader: Reader::CommittedConsumer,
            reply,
        };
        self.dispatch(partition, read).await
    }

    /// Appends the COMMIT or ABORT marker of producer `producer_id`'s transaction
    /// (what the transaction coordinator's WriteTxnMarkers asks of a leader), stamped
    /// with `leader_epoch`; see [`PartitionLog::append_txn_marker`]. Returns as
    /// [`EngineHandle::append`] does, once the durability policy is satisfied.
    pub async fn append_txn_marker(
        &self,
        partition: &TopicPartition,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        marker: TxnMarker,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let op = |reply| PartitionOp::AppendTxnMarker { producer_id, producer_epoch, marker, leader_epoch, reply };
        self.dispatch(partition, op).await?.reply().await
    }

    /// A follower's fetch: whole batches from `offset` (at most `max_bytes`, at least
    /// one batch) up to the partition's written log end, past the high watermark: what
    /// the leader has written out, replicated or not yet.
    pub async fn read_replica(
        &self,
        partition: &TopicPartition,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.dispatch_read_replica(partition, offset, max_bytes).await?.reply().await
    }

    /// [`EngineHandle::read_replica`] in two stages, as [`EngineHandle::dispatch_append`].
    pub async fn dispatch_read_replica(
        &self,
        partition: &TopicPartition,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<Dispatched<ReadResult>> {
        let read = |reply| PartitionOp::Read { offset, max_bytes, offset_limit: None, reader: Reader::Replica, reply };
        self.dispatch(partition, read).await
    }

    /// Puts the partition in replicated mode (`true`) or takes it out: in it, the
    /// high watermark moves only by [`EngineHandle::set_high_watermark`]; out of it,
    /// the partition moves it itself as appends are written (under `fsync: always`,
    /// synced). Returns the high watermark.
    pub async fn set_replicated(&self, partition: &TopicPartition, replicated: bool) -> Result<Offset> {
        self.op(partition, |reply| PartitionOp::SetReplicated { replicated, reply }).await
    }

    /// In replicated mode, moves the high watermark to `offset` (the minimum log end
    /// of the in-sync replicas), clamped to what this replica has written out (under
    /// `always`, synced) and to the log start; returns where it is.
    /// [`EngineError::NotReplicated`] outside replicated mode.
    pub async fn set_high_watermark(&self, partition: &TopicPartition, offset: Offset) -> Result<Offset> {
        self.op(partition, |reply| PartitionOp::SetHighWatermark { offset, reply }).await
    }

    pub async fn list_offset(
        &self,
        partition: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        self.dispatch_list_offset(partition, spec).await?.reply().await
    }

    /// [`EngineHandle::list_offset`] in two stages, as [`EngineHandle::dispatch_append`].
    pub async fn dispatch_list_offset(
        &self,
        partition: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<Dispatched<Option<(Offset, TimestampMs)>>> {
        self.dispatch(partition, |reply| PartitionOp::ListOffset { spec, reply }).await
    }

    /// Syncs a partition now, whatever its policy; returns the durable offset.
    pub async fn sync(&self, partition: &TopicPartition) -> Result<Offset> {
        self.op(partition, |reply| PartitionOp::Sync { reply }).await
    }

    pub async fn truncate(&self, partition: &TopicPartition, offset: Offset) -> Result<()> {
        self.op(partition, |reply| PartitionOp::Truncate { offset, reply }).await
    }

    /// Empties a partition's log and starts it at `offset` (a follower whose log end
    /// the leader's log start has passed); see
    /// [`PartitionLog::truncate_fully_and_start_at`]. Durable when it returns.
    pub async fn truncate_fully_and_start_at(&self, partition: &TopicPartition, offset: Offset) -> Result<()> {
        self.op(partition, |reply| PartitionOp::TruncateFullyAndStartAt { offset, reply }).await
    }

    pub async fn delete_records(&self, partition: &TopicPartition, offset: Offset) -> Result<Offset> {
        self.dispatch_delete_records(partition, offset).await?.reply().await
    }

    /// [`EngineHandle::delete_records`] in two stages, as [`EngineHandle::dispatch_append`].
    pub async fn dispatch_delete_records(
        &self,
        partition: &TopicPartition,
        offset: Offset,
    ) -> Result<Dispatched<Offset>> {
        self.dispatch(partition, |reply| PartitionOp::DeleteRecords { offset, reply }).await
    }

    pub async fn stats(&self, partition: &TopicPartition) -> Result<PartitionStats> {
        self.dispatch_stats(partition).await?.reply().await
    }

    /// [`EngineHandle::stats`] in two stages, as [`EngineHandle::dispatch_append`].
    pub async fn dispatch_stats(&self, partition: &TopicPartition) -> Result<Dispatched<PartitionStats>> {
        self.dispatch(partition, |reply| PartitionOp::Stats { reply }).await
    }

    /// The producers of a partition's producer state, by ascending producer id
    /// (DescribeProducers).
    pub async fn producers(&self, partition: &TopicPartition) -> Result<Vec<ActiveProducer>> {
        self.op(partition, |reply| PartitionOp::Producers { reply }).await
    }

    /// Returns once the partition's high watermark is past `offset` (data to read),
    /// or the partition is gone. The partition's actor answers when an append (or,
    /// under `always`, its sync) moves the high watermark; callers bound the wait
    /// and dropping the future withdraws it.
    pub async fn wait_for_data(&self, partition: &TopicPartition, offset: Offset) {
        if let Err(error) =
            self.op(partition, |reply| PartitionOp::WaitForData { offset, reader: Reader::Consumer, reply }).await
        {
            tracing::debug!("waiting for data on {partition}: {error}");
        }
    }

    /// [`EngineHandle::wait_for_data`] for a consumer reading committed data: returns
    /// once the partition's last stable offset is past `offset`.
    pub async fn wait_for_committed_data(&self, partition: &TopicPartition, offset: Offset) {
        let wait = |reply| PartitionOp::WaitForData { offset, reader: Reader::CommittedConsumer, reply };
        if let Err(error) = self.op(partition, wait).await {
            tracing::debug!("waiting for committed data on {partition}: {error}");
        }
    }

    /// [`EngineHandle::wait_for_data`] for a follower's fetch: returns once the
    /// partition's written log end is past `offset`.
    pub async fn wait_for_replica_data(&self, partition: &TopicPartition, offset: Offset) {
        if let Err(error) =
            self.op(partition, |reply| PartitionOp::WaitForData { offset, reader: Reader::Replica, reply }).await
        {
            tracing::debug!("waiting for replica data on {partition}: {error}");
        }
    }
}

/// What [`EngineHandle::open_partitions`] makes of a partition whose files are
/// damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDamage {
    /// Start-up: the partition stays offline (in the offline registry, and held by
    /// its shard), and the rest of the topic is served.
    KeepOffline,
    /// A create or a growth: the partition's directory was just made empty, so an
    /// open can only meet "damage" as an IO error of the device (EIO and the like);
    /// the operation fails and is undone, all or nothing like any other failure.
    Fail,
}

/// Where a shard sends the ops of one of its partitions: the actor of the one open
/// incarnation, or nowhere if that incarnation is offline.
struct Route {
    topic_id: TopicId,
    /// Reachable by ops that name no incarnation (see [`ShardRequest::Activate`]).
    active: bool,
    target: Target,
}

#[derive(Clone)]
enum Target {
    /// The partition's actor.
    Actor(flume::Sender<PartitionOp>),
    /// Not opened because its files are damaged (the cause): every op but a close
    /// is refused with [`EngineError::PartitionOffline`]. A close only removes the
    /// route; the files go with the topic's directory (see `controller::delete_topic`).
    Offline(String),
}

/// A shard's open partitions. Owned by the shard's thread (shared with its ticker).
type Routes = Rc<std::cell::RefCell<HashMap<TopicPartition, Route>>>;

/// The shard's event loop: opens partitions, routes ops to their actors, runs the
/// periodic ticks, and closes everything on shutdown.
async fn run_shard(shard: ShardId, requests: flume::Receiver<ShardRequest>, config: EngineConfig) {
    let storage = DmaStorage::new(config.write_buffer_bytes);
    probe_device(shard, &storage, &config).await;
    let state = ShardState { shard, storage, config, partitions: Rc::default() };
    let ticker = glommio::spawn_local(tick(state.partitions.clone(), state.config.housekeeping_interval_ms)).detach();
    // The cleaner runs in a task queue of its own with a small share, so the
    // shard's connections and partitions get the CPU first when both want it.
    let cleaner_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(CLEANER_SHARES),
        glommio::Latency::NotImportant,
        "log-cleaner",
    );
    let cleaner = glommio::spawn_local_into(
        clean_compacted(state.partitions.clone(), state.config.cleaner_backoff_ms),
        cleaner_queue,
    )
    .map(|task| task.detach());
    if let Err(error) = &cleaner {
        tracing::error!("shard {shard}: the log cleaner could not start: {error}");
    }
    while let Ok(request) = requests.recv_async().await {
        match request {
            ShardRequest::Open { partition, topic_id, config, reply } => {
                let result = state.open(partition, topic_id, config).await;
                answer(shard, "open", reply, result);
            }
            ShardRequest::Activate { topic, topic_id, reply } => {
                state.activate(&topic, topic_id);
                answer(shard, "activate", reply, Ok(()));
            }
            ShardRequest::Op { partition, topic_id, op } => state.route(partition, topic_id, op).await,
            ShardRequest::StartService { service, handle, reply } => {
                glommio::spawn_local(service(shard, handle)).detach();
                answer(shard, "service", reply, Ok(()));
            }
            ShardRequest::Shutdown { reply } => {
                ticker.cancel();
                if let Ok(cleaner) = &cleaner {
                    cleaner.cancel();
                }
                let result = close_all(&state.partitions).await;
                answer(shard, "shutdown", reply, result);
                return;
            }
        }
    }
    ticker.cancel();
    if let Ok(cleaner) = &cleaner {
        cleaner.cancel();
    }
    if let Err(error) = close_all(&state.partitions).await {
        tracing::error!("shard {shard}: closing partitions: {error}");
    }
}

/// Primes the storage's device probe. It reads the meta directory's device-probe
/// file, written for it; if that is missing, it looks for any file of a block under
/// the data directory, and else writes a probe of its own into the meta directory
/// (see `crate::data_dir`).
async fn probe_device(shard: ShardId, storage: &DmaStorage, config: &EngineConfig) {
    let meta_dir = crate::data_dir::meta_dir(&config.data_dir);
    let probe_name = format!("{}{}", crate::data_dir::IO_PROBE_PREFIX, shard.0);
    let probed = if crate::data_dir::has_device_probe(&config.data_dir) {
        storage.prime_device_probe(&meta_dir, &probe_name).await
    } else {
        storage.prime_device_probe(&config.data_dir, &format!("{}/{probe_name}", crate::data_dir::META_DIR)).await
    };
    if let Err(error) = probed {
        tracing::error!("shard {shard}: probing the data directory's device: {error}");
    }
}

fn answer<T>(shard: ShardId, what: &str, reply: Reply<T>, result: Result<T>) {
    if reply.send(result).is_err() {
        tracing::debug!("shard {shard}: {what} reply dropped");
    }
}

/// What one shard's event loop owns.
struct ShardState {
    shard: ShardId,
    storage: DmaStorage,
    config: EngineConfig,
    partitions: Routes,
}

impl ShardState {
    /// Opens `partition` of incarnation `topic_id` (inactive), or holds it offline
    /// when its files are damaged.
    async fn open(&self, partition: TopicPartition, topic_id: TopicId, topic_config: TopicConfig) -> Result<()> {
        let open = self.partitions.borrow().get(&partition).map(|route| route.topic_id);
        let result = match open {
            // The controller closes an incarnation before it opens another, so this
            // is a bug; refusing keeps one actor per directory.
            Some(open_id) => {
                tracing::error!(
                    "shard {}: {partition} (topic id {topic_id}) is open already, as {open_id}",
                    self.shard
                );
                Err(EngineError::TopicAlreadyExists(partition.to_string()))
            }
            None => {
                let depth = self.config.queue_depth_max;
                open_partition(&self.storage, &self.config, &partition, topic_config, depth).await
            }
        };
        match result {
            Ok(queue) => {
                let route = Route { topic_id, active: false, target: Target::Actor(queue) };
                self.partitions.borrow_mut().insert(partition, route);
                Ok(())
            }
            // Damaged files: the partition is held, offline, under this incarnation,
            // so that ops reaching it learn why and a close of the incarnation (a
            // delete, or an undone create) finds it. The caller decides what the
            // damage means (see `OnDamage`) and logs it.
            Err(error) if error.is_damage() => {
                let target = Target::Offline(error.to_string());
                self.partitions.borrow_mut().insert(partition, Route { topic_id, active: false, target });
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    fn activate(&self, topic: &TopicName, topic_id: TopicId) {
        for (partition, route) in self.partitions.borrow_mut().iter_mut() {
            if partition.topic == *topic && route.topic_id == topic_id {
                route.active = true;
            }
        }
    }

    /// Hands `op` to the partition's actor, or answers it: offline, unknown, or (a
    /// close of an offline partition) done.
    async fn route(&self, partition: TopicPartition, topic_id: Option<TopicId>, op: PartitionOp) {
        let target = match self.partitions.borrow().get(&partition) {
            Some(route) if topic_id.map_or(route.active, |id| id == route.topic_id) => Some(route.target.clone()),
            _ => None,
        };
        let queue = match (target, op) {
            (Some(Target::Actor(queue)), op) => (queue, op),
            (Some(Target::Offline(_)), PartitionOp::Close { reply, .. }) => {
                self.partitions.borrow_mut().remove(&partition);
                return answer(self.shard, "close", reply, Ok(()));
            }
            (Some(Target::Offline(cause)), op) => {
                return reject(op, offline_error(&self.config.data_dir, &partition, &cause));
            }
            (None, op) => return reject(op, EngineError::UnknownTopicOrPartition(partition.to_string())),
        };
        let (queue, op) = queue;
        // Once removed here, no later op reaches this actor: the close is the last
        // op it is sent.
        if matches!(op, PartitionOp::Close { .. }) {
            self.partitions.borrow_mut().remove(&partition);
        }
        if let Err(flume::SendError(op)) = queue.send_async(op).await {
            reject(op, EngineError::UnknownTopicOrPartition(partition.to_string()));
        }
    }
}

fn offline_error(data_dir: &Path, partition: &TopicPartition, cause: &str) -> EngineError {
    EngineError::PartitionOffline {
        partition: partition.clone(),
        data_dir: data_dir.to_path_buf(),
        cause: cause.to_string(),
    }
}

/// What a shard's thread knows about itself, for the panic hook.
struct ShardWatch {
    shard: ShardId,
    failed: Arc<[AtomicBool]>,
    report: Option<flume::Sender<ShardFailure>>,
}

thread_local! {
    /// Set on each shard's thread before its executor runs anything.
    static SHARD_WATCH: RefCell<Option<ShardWatch>> = const { RefCell::new(None) };
}

/// Says where the shards run, once at start: which CPU each shard is pinned to.
fn log_placement(shard_count: usize, pinned: Option<&CpuList>) {
    match pinned {
        Some(cpus) => {
            let each: Vec<String> = (0..shard_count).map(|shard| cpus.cpu_for(ShardId(shard)).to_string()).collect();
            tracing::info!("{shard_count} shard(s) pinned to CPUs {cpus} (shard i on CPU: {})", each.join(","));
        }
        None => tracing::info!("{shard_count} shard(s), unpinned"),
    }
}

/// Installs, once per process, a panic hook that reports panics on shard threads (see
/// the module doc) and then runs the hook that was there before (the default one
/// prints the message and where it was raised). Panics on other threads go to the
/// previous hook alone.
fn install_shard_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report_shard_panic(info);
            previous(info);
        }));
    });
}

fn report_shard_panic(info: &std::panic::PanicHookInfo<'_>) {
    // A thread being torn down has no locals left to read: then it is no shard's.
    let _ = SHARD_WATCH.try_with(|slot| {
        let Ok(slot) = slot.try_borrow() else { return };
        let Some(watch) = slot.as_ref() else { return };
        watch.failed[watch.shard.0].store(true, Ordering::Release);
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        let place = info.location().map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        let panic = format!("{message}{place}");
        tracing::error!(
            "shard {} panicked: {panic}; its partitions, listener and connections are gone, and requests to them fail",
            watch.shard
        );
        if let Some(report) = &watch.report {
            if report.try_send(ShardFailure { shard: watch.shard, panic }).is_err() {
                tracing::debug!("shard {}: the failure report found nobody listening, or a full queue", watch.shard);
            }
        }
    });
}

/// `corelog repair`: finds the first damage of one partition's log and, with
/// `truncate` (consent), cuts the log right before it (see
/// [`PartitionLog::repair`]). The broker must be stopped: this takes the data
/// directory's lock ([`DataDir::lock_existing`]) for its whole run, so it fails beside
/// a running broker and a broker started meanwhile is refused. Runs on a glommio
/// executor of its own, like the shards, since the storage is io_uring's.
pub fn repair_partition(data_dir: &Path, partition: &TopicPartition, truncate: bool) -> Result<RepairReport> {
    let _lock = DataDir::lock_existing(data_dir)?;
    let properties = topic_dir(data_dir, &partition.topic).join(TOPIC_PROPERTIES_FILE);
    if !properties.exists() {
        return Err(EngineError::UnknownTopicOrPartition(format!(
            "{}: no topic {} in {}",
            partition,
            partition.topic,
            data_dir.display()
        )));
    }
    let dir = partition_dir(data_dir, partition);
    if !dir.is_dir() {
        return Err(EngineError::UnknownTopicOrPartition(format!("{partition}: no directory {}", dir.display())));
    }
    let io_memory_bytes = EngineConfig::new(data_dir).io_memory_bytes;
    crate::diagnostics::probe_io_uring(io_memory_bytes as u64)?;
    let index_interval_bytes = TopicConfig::default().index_interval_bytes;
    let now = SystemClock.now_ms();
    let storage = DmaStorage::new(crate::storage::dma::WRITE_BUFFER_BYTES_DEFAULT);
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("corelog-repair")
        .io_memory(io_memory_bytes)
        .spawn(move || async move { PartitionLog::repair(storage, &dir, index_interval_bytes, now, truncate).await })
        .map_err(|e| EngineError::Startup(format!("starting the repair executor: {e}")))?
        .join()
        .map_err(|e| EngineError::Startup(format!("the repair executor failed: {e}")))?
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

async fn close_all(partitions: &Routes) -> Result<()> {
    let queues: Vec<_> = partitions
        .borrow_mut()
        .drain()
        .filter_map(|(partition, route)| match route.target {
            Target::Actor(queue) => Some((partition, queue)),
            Target::Offline(_) => None,
        })
        .collect();
    let mut first_error = None;
    for (partition, queue) in queues {
        let (reply, receiver) = flume::bounded(1);
        if queue.send_async(PartitionOp::Close { delete: false, reply }).await.is_ok() {
            if let Ok(Err(error)) = receiver.recv_async().await {
                tracing::error!("closing {partition}: {error}");
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sends a housekeeping tick (segment roll by age, retention) to every partition of
/// the shard. A tick is dropped, not queued, when a partition's queue is full: the
/// partition is busy and the next tick will do.
async fn tick(partitions: Routes, housekeeping_ms: u64) {
    loop {
        glommio::timer::sleep(Duration::from_millis(housekeeping_ms.max(1))).await;
        for route in partitions.borrow().values() {
            let Target::Actor(queue) = &route.target else { continue };
            if queue.try_send(PartitionOp::Housekeeping).is_err() {
                tracing::trace!("housekeeping tick skipped for a busy partition");
            }
        }
    }
}

/// The log cleaner's share of a shard's CPU against the default queue's 1000.
const CLEANER_SHARES: usize = 100;

/// The shard's log cleaner (Kafka's `CleanerThread`, one per shard): asks every
/// partition how dirty it is, runs a pass on the dirtiest one due, and asks again at
/// once after a pass, or after `backoff_ms` when none was due. A pass runs on its
/// partition's actor one step per op (one chunk of a segment read and written, or
/// one group swapped in), so the partition's appends and reads queued meanwhile
/// wait for one step at most; the longest is a swap, which reads the new segment
/// once to open it.
async fn clean_compacted(partitions: Routes, backoff_ms: u64) {
    loop {
        let queues: Vec<(TopicPartition, flume::Sender<PartitionOp>)> = partitions
            .borrow()
            .iter()
            .filter_map(|(partition, route)| match &route.target {
                Target::Actor(queue) => Some((partition.clone(), queue.clone())),
                _ => None,
            })
            .collect();
        let mut dirtiest: Option<(f64, TopicPartition, flume::Sender<PartitionOp>)> = None;
        for (partition, queue) in queues {
            let (reply, answer) = flume::bounded(1);
            if queue.send_async(PartitionOp::CleanerCheck { reply }).await.is_err() {
                continue;
            }
            match answer.recv_async().await {
                Ok(Ok(Some(ratio))) if dirtiest.as_ref().is_none_or(|(best, ..)| ratio > *best) => {
                    dirtiest = Some((ratio, partition, queue));
                }
                Ok(Err(error)) => tracing::warn!("log cleaner: {partition}: {error}"),
                _ => {}
            }
        }
        let Some((ratio, partition, queue)) = dirtiest else {
            glommio::timer::sleep(Duration::from_millis(backoff_ms.max(1))).await;
            continue;
        };
        clean_partition(&partition, &queue, ratio, backoff_ms).await;
    }
}

/// Runs one pass on a partition, one step per op: the partition's other ops queued
/// meanwhile go first.
async fn clean_partition(partition: &TopicPartition, queue: &flume::Sender<PartitionOp>, ratio: f64, backoff_ms: u64) {
    let backoff = Duration::from_millis(backoff_ms.max(1));
    loop {
        let (reply, answer) = flume::bounded(1);
        if queue.send_async(PartitionOp::Clean { reply }).await.is_err() {
            return;
        }
        match answer.recv_async().await {
            Ok(Ok(CleanStep::Working)) => glommio::yield_if_needed().await,
            Ok(Ok(CleanStep::Done(stats))) => {
                tracing::info!(
                    "log cleaner: {partition} (dirty ratio {ratio:.2}): read {} bytes, wrote {}, removed {} of {} \
                     records",
                    stats.bytes_read,
                    stats.bytes_written,
                    stats.records_removed,
                    stats.records_read
                );
                return;
            }
            // Due, yet nothing cleaned (the offset map cannot hold one key, or the
            // pass was abandoned), or failed: wait rather than ask again at once.
            Ok(Ok(CleanStep::Idle)) | Err(_) => return glommio::timer::sleep(backoff).await,
            Ok(Err(error)) => {
                tracing::error!("log cleaner: {partition}: {error}");
                return glommio::timer::sleep(backoff).await;
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
        PartitionOp::AppendReplicated { reply, .. } => send(reply, error),
        PartitionOp::AppendTxnMarker { reply, .. } => send(reply, error),
        PartitionOp::AssignLeaderEpoch { reply, .. } => send(reply, error),
        PartitionOp::Read { reply, .. } => send(reply, error),
        PartitionOp::ListOffset { reply, .. } => send(reply, error),
        PartitionOp::Sync { reply } => send(reply, error),
        PartitionOp::Truncate { reply, .. } => send(reply, error),
        PartitionOp::TruncateFullyAndStartAt { reply, .. } => send(reply, error),
        PartitionOp::DeleteRecords { reply, .. } => send(reply, error),
        PartitionOp::SetConfig { reply, .. } => send(reply, error),
        PartitionOp::Stats { reply } => send(reply, error),
        PartitionOp::Producers { reply } => send(reply, error),
        PartitionOp::WaitForData { reply, .. } => send(reply, error),
        PartitionOp::SetReplicated { reply, .. } => send(reply, error),
        PartitionOp::SetHighWatermark { reply, .. } => send(reply, error),
        PartitionOp::Close { reply, .. } => send(reply, error),
        PartitionOp::CleanerCheck { reply } => send(reply, error),
        PartitionOp::Clean { reply } => send(reply, error),
        PartitionOp::Housekeeping => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build_value_batch;
    use futures_lite::future::block_on;

    fn start_engine() -> (tempfile::TempDir, Engine) {
        // The build disk: O_DIRECT needs a real file system, and /tmp may be tmpfs.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp");
        std::fs::create_dir_all(root).expect("create target/tmp");
        let dir = tempfile::tempdir_in(root).expect("tempdir on the build disk");
        let mut config = EngineConfig::new(dir.path());
        config.shard_count = 2;
        let engine = Engine::start(config).expect("start");
        (dir, engine)
    }

    fn metadata(topic: &str, id: u128, partition_count: i32) -> TopicMetadata {
        TopicMetadata {
            name: TopicName::new(topic).expect("valid"),
            id: TopicId(id),
            partition_count,
            config: TopicConfig::default(),
        }
    }

    fn append(handle: &EngineHandle, partition: &TopicPartition) -> Result<AppendInfo> {
        block_on(handle.append(partition, build_value_batch(TimestampMs(0), 1, 10), LeaderEpoch(0)))
    }

    fn stats_of(handle: &EngineHandle, partition: &TopicPartition, id: TopicId) -> Result<PartitionStats> {
        block_on(handle.op_on(partition, Some(id), |reply| PartitionOp::Stats { reply }))
    }

    fn unknown<T>(result: Result<T>) -> bool {
        matches!(result, Err(EngineError::UnknownTopicOrPartition(_)))
    }

    /// The calling thread's `Cpus_allowed_list` (`0-1`).
    fn allowed_cpus_of_this_thread() -> String {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("the thread's status");
        let allowed = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:"));
        allowed.expect("Cpus_allowed_list").trim().to_string()
    }

    /// Each shard's `Cpus_allowed_list`, as the shard's own thread reads it.
    fn shard_affinities(cpus: ShardCpus, shard_count: usize) -> Vec<String> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp");
        std::fs::create_dir_all(root).expect("create target/tmp");
        let dir = tempfile::tempdir_in(root).expect("tempdir on the build disk");
        let mut config = EngineConfig::new(dir.path());
        config.shard_count = shard_count;
        config.cpus = cpus;
        let (sender, affinities) = flume::unbounded();
        let service: ShardService = Arc::new(move |shard, _handle| {
            let sender = sender.clone();
            Box::pin(async move {
                sender.send((shard, allowed_cpus_of_this_thread())).expect("the test waits");
            })
        });
        let engine = Engine::start_with_service(config, Some(service)).expect("start");
        let count = engine.handle.shared.shards.len();
        let mut seen: Vec<(ShardId, String)> = affinities.iter().take(count).collect();
        engine.shutdown().expect("shutdown");
        seen.sort();
        seen.into_iter().map(|(_, allowed)| allowed).collect()
    }

    #[test]
    fn shards_run_on_the_cpus_they_are_given_in_order_and_wrap() {
        let online = crate::cpus::online().expect("the online CPUs are listed");
        let last = *online.cpus().last().expect("a CPU");
        let one = CpuList::from_cpus([last]).expect("a CPU");
        // No shard count: one per listed CPU.
        assert_eq!(shard_affinities(ShardCpus::Pinned(one.clone()), 0), [last.to_string()]);
        assert_eq!(shard_affinities(ShardCpus::Pinned(one), 2), [last.to_string(), last.to_string()]);
        let every: Vec<String> = online.cpus().iter().map(ToString::to_string).collect();
        assert_eq!(shard_affinities(ShardCpus::Online, 0), every);
        // Unpinned: as the thread that started it.
        assert_eq!(shard_affinities(ShardCpus::Unpinned, 1), [allowed_cpus_of_this_thread()]);
    }

    #[test]
    fn a_shard_cpu_that_is_not_online_fails_the_start_naming_the_online_cpus() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tmp");
        std::fs::create_dir_all(root).expect("create target/tmp");
        let dir = tempfile::tempdir_in(root).expect("tempdir on the build disk");
        let mut config = EngineConfig::new(dir.path());
        config.cpus = ShardCpus::Pinned(CpuList::parse("8191").expect("a CPU list"));
        let online = crate::cpus::online().expect("the online CPUs are listed");
        let error = Engine::start(config).err().expect("CPU 8191 is not online").to_string();
        assert_eq!(error, format!("shard CPUs: CPU 8191 is not online (online CPUs: {online})"));
    }

    #[test]
    fn a_partition_serves_the_data_path_once_active_and_admin_ops_only_for_its_own_incarnation() {
        let (_dir, engine) = start_engine();
        let handle = engine.handle();
        let topic = metadata("routes", 1, 1);
        let other = metadata("routes", 2, 1);
        let partition = TopicPartition::new(topic.name.clone(), PartitionId(0));
        let (opened, failed) = block_on(handle.open_partitions(&topic, 0..1, OnDamage::Fail));
        assert_eq!((opened, failed.map(|e| e.to_string())), (vec![PartitionId(0)], None));

        assert!(unknown(append(&handle, &partition)), "an inactive partition took an append");
        stats_of(&handle, &partition, topic.id).expect("an op naming its incarnation");
        assert!(unknown(stats_of(&handle, &partition, other.id)), "an op for another incarnation was served");
        let (opened, failed) = block_on(handle.open_partitions(&other, 0..1, OnDamage::Fail));
        let refused = matches!(failed, Some(EngineError::TopicAlreadyExists(_)));
        assert!(opened.is_empty() && refused, "a second actor opened {partition}");

        block_on(handle.activate(&topic)).expect("activate");
        assert_eq!(append(&handle, &partition).expect("an append once active").base_offset, Offset(0));
        // A close for another incarnation (a delete of an older topic of the name)
        // does not reach this one.
        let closed = block_on(handle.close_partitions(&topic.name, other.id, [PartitionId(0)].into_iter(), true));
        assert!(unknown(closed), "a close for another incarnation was served");
        assert_eq!(append(&handle, &partition).expect("still open").base_offset, Offset(1));
        block_on(handle.close_partitions(&topic.name, topic.id, [PartitionId(0)].into_iter(), true)).expect("close");
        assert!(unknown(append(&handle, &partition)), "an append reached a closed partition");
        engine.shutdown().expect("shutdown");
    }

    #[test]
    fn a_create_that_fails_on_one_partition_leaves_no_topic_and_no_partition_open() {
        let (dir, engine) = start_engine();
        let handle = engine.handle();
        // A stray actor on partition 3 (only reachable by going around the
        // controller) makes the create's open of that partition fail.
        let stray = metadata("half", 7, 4);
        let (opened, failed) = block_on(handle.open_partitions(&stray, 3..4, OnDamage::Fail));
        assert!(failed.is_none() && opened == vec![PartitionId(3)]);

        let failed = block_on(handle.create_topic(stray.name.clone(), 8, TopicConfig::default()));
        assert!(matches!(failed, Err(EngineError::TopicAlreadyExists(_))), "{failed:?}");
        assert_eq!(handle.topic(&stray.name), None, "a failed create is in the registry");
        assert!(
            !dir.path().join("half").join(TOPIC_PROPERTIES_FILE).exists(),
            "a failed create left its properties file"
        );
        for index in (0..8).filter(|index| *index != 3) {
            let partition = TopicPartition::new(stray.name.clone(), PartitionId(index));
            let result = block_on(handle.stats(&partition));
            assert!(
                matches!(result, Err(EngineError::UnknownTopicOrPartition(_))),
                "{partition} stayed open: {result:?}"
            );
        }

        // The undo removed the topic directory, the stray's files with it (the stray
        // broke the controller's rule that no actor outlives its topic), so its close
        // may fail; the actor ends either way.
        let closed = block_on(handle.close_partitions(&stray.name, stray.id, [PartitionId(3)].into_iter(), true));
        assert!(!matches!(closed, Err(EngineError::UnknownTopicOrPartition(_))), "the stray was not open: {closed:?}");
        let created = block_on(handle.create_topic(stray.name.clone(), 8, TopicConfig::default())).expect("create");
        for index in 0..8 {
            let partition = TopicPartition::new(stray.name.clone(), PartitionId(index));
            assert_eq!(append(&handle, &partition).expect("append").base_offset, Offset(0), "{partition}");
        }
        assert_eq!(handle.topic(&stray.name), Some(created));
        engine.shutdown().expect("shutdown");
    }
}
