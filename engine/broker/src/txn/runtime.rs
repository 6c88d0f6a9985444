//! The glommio task behind the transactions of one shard: an actor that owns the
//! shard's [`TxnCoordinator`] (mirroring [`crate::group::runtime`]).
//!
//! - It first waits for the broker's [`Start`], then replays every partition of
//!   [`super::TRANSACTION_STATE_TOPIC`] the shard owns in the engine
//!   ([`super::log::decode_batches`], [`super::log::replay_records`]) into the
//!   coordinator, which resends the markers of every prepared transaction.
//! - It serves [`TxnAsk`]s one at a time; between them it ticks the coordinator every
//!   `transaction.abort.timed.out.transaction.cleanup.interval.ms` (timeouts, expiry,
//!   completions to retry).
//! - The coordinator's effects: an `Append` becomes a task that appends the record
//!   (one batch) to its `__transaction_state` partition, durable (`fsync.policy=always`)
//!   before the completion comes back to the actor; `WriteMarkers` becomes a task that
//!   writes the COMMIT/ABORT marker to every partition of the transaction through
//!   [`EngineHandle::append_txn_marker`] (whichever shard owns it), retrying each until
//!   it is written or the partition is gone (a marker on a `__consumer_offsets`
//!   partition also tells its group coordinator, which applies or drops the
//!   producer's pending TxnOffsetCommit offsets), and then reports the markers written; a
//!   `Respond` answers the waiting handler.
//!
//! A single broker only: the coordinator epoch is 0 and appends use leader epoch 0.
//! Records of one transactional id are never in flight together (the coordinator
//! keeps one pending change per id), so the append tasks need no order between them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use kafka_protocol::ResponseError;

use super::coordinator::{
    AppendId, Effect, ProducerIdSource, Request, RequestId, Response, TxnCoordinator, TxnMarkers,
};
use super::log::{decode_batches, encode_batch, replay_records};
use super::{transaction_state_topic, TransactionResult, TxnConfig};
use crate::kafka::errors::response_error;
use corelog_engine::batch::{TxnMarker, TxnOutcome};
use corelog_engine::config::{Clock, SystemClock};
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::{shard_for, EngineHandle};
use corelog_engine::types::{LeaderEpoch, PartitionId, ProducerId, ShardId, TopicPartition};

/// Bytes asked of the engine per read while replaying a partition.
const REPLAY_READ_BYTES_MAX: usize = 1 << 20;
/// How long a marker write waits before it is tried again after an error.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The broker's go-ahead: the transaction state topic has this many partitions.
pub struct Start {
    pub partitions: i32,
    pub reply: flume::Sender<Result<()>>,
}

/// A request from a handler, with the slot its answer goes to.
pub struct TxnAsk {
    pub request: Request,
    pub reply: flume::Sender<Response>,
}

/// What the actor needs besides its queues.
pub struct Shard {
    pub shard: ShardId,
    pub engine: EngineHandle,
    pub config: TxnConfig,
    /// Where producer ids come from (the broker's allocator).
    pub producer_ids: BrokerProducerIds,
    /// Told when a marker lands on a `__consumer_offsets` partition, so the group
    /// coordinator applies or drops the producer's pending offsets there.
    pub groups: crate::group::GroupRouter,
}

/// [`ProducerIdSource`] over the broker's durable allocator.
#[derive(Clone)]
pub struct BrokerProducerIds(pub Arc<crate::BrokerState>);

impl ProducerIdSource for BrokerProducerIds {
    fn next_producer_id(&mut self) -> std::result::Result<ProducerId, ResponseError> {
        self.0.producer_ids.next().map_err(|error| {
            tracing::error!("allocating a transactional producer id: {error}");
            ResponseError::CoordinatorNotAvailable
        })
    }
}

/// A completion of an effect, sent back to the actor by the task that ran it.
enum Completion {
    Appended(AppendId, std::result::Result<(), ResponseError>),
    MarkersWritten(TxnMarkers),
}

/// The transaction coordinator task of one shard; see the module docs. Ends when the
/// broker gives up before starting it, when every router is gone, or at stop.
pub async fn run(
    shard: Shard,
    requests: flume::Receiver<TxnAsk>,
    start: flume::Receiver<Start>,
    stop: flume::Receiver<()>,
) {
    let id = shard.shard;
    let Ok(Start { partitions, reply }) = start.recv_async().await else {
        tracing::debug!("shard {id}: transaction coordinator not started");
        return;
    };
    let mut actor = Actor::new(shard, partitions);
    let loaded = actor.load_owned().await;
    let failed = loaded.is_err();
    if let Err(error) = &loaded {
        tracing::error!("shard {id}: loading transactions: {error}");
    }
    if reply.send(loaded).is_err() {
        tracing::debug!("shard {id}: nobody waits for the transaction coordinator to load");
    }
    if !failed {
        actor.serve(requests, stop).await;
    }
}

struct Actor {
    shard: ShardId,
    engine: EngineHandle,
    coordinator: TxnCoordinator<BrokerProducerIds>,
    partitions: i32,
    tick_interval: Duration,
    groups: crate::group::GroupRouter,
    hold_markers: bool,
    replies: HashMap<RequestId, flume::Sender<Response>>,
    next_request: u64,
    completions: (flume::Sender<Completion>, flume::Receiver<Completion>),
}

impl Actor {
    fn new(shard: Shard, partitions: i32) -> Actor {
        let config = TxnConfig { state_log_partitions: partitions, ..shard.config };
        let tick_interval = Duration::from_millis(config.abort_timed_out_transaction_cleanup_interval_ms.max(1));
        let hold_markers = config.test_hold_markers;
        Actor {
            shard: shard.shard,
            engine: shard.engine,
            coordinator: TxnCoordinator::new(config, shard.producer_ids),
            partitions,
            tick_interval,
            groups: shard.groups,
            hold_markers,
            replies: HashMap::new(),
            next_request: 0,
            completions: flume::unbounded(),
        }
    }

    fn now_ms() -> i64 {
        SystemClock.now_ms().0
    }

    /// Every `__transaction_state` partition this shard owns, replayed into the
    /// coordinator.
    async fn load_owned(&mut self) -> Result<()> {
        let mut loaded = 0;
        let mut transactions = 0;
        for index in 0..self.partitions {
            let partition = TopicPartition::new(transaction_state_topic(), PartitionId(index));
            if shard_for(&partition, self.engine.shard_count()) != self.shard {
                continue;
            }
            let mut records = Vec::new();
            let stats = self.engine.stats(&partition).await?;
            let mut offset = stats.log_start_offset;
            while offset < stats.high_watermark {
                let read =
                    self.engine.read(&partition, offset, REPLAY_READ_BYTES_MAX, Some(stats.high_watermark)).await?;
                if read.bytes.is_empty() || read.next_offset <= offset {
                    break;
                }
                let skipped = decode_batches(&read.bytes, &partition, |record| records.push(record))?;
                if skipped > 0 {
                    tracing::warn!("{partition}: replay skipped {skipped} records that do not decode");
                }
                offset = read.next_offset;
            }
            let replayed = replay_records(records);
            transactions += replayed.len();
            self.coordinator.load_partition(partition.partition, super::CoordinatorEpoch(0), replayed);
            loaded += 1;
        }
        tracing::info!(
            "shard {}: transaction coordinator serving {loaded} partitions, {transactions} transactional ids loaded",
            self.shard
        );
        self.run_effects();
        Ok(())
    }

    async fn serve(&mut self, requests: flume::Receiver<TxnAsk>, stop: flume::Receiver<()>) {
        enum Event {
            Request(Option<TxnAsk>),
            Completion(Completion),
            Tick,
            Stop,
        }
        let completions = self.completions.1.clone();
        loop {
            let request = async { Event::Request(requests.recv_async().await.ok()) };
            let completion = async {
                match completions.recv_async().await {
                    Ok(completion) => Event::Completion(completion),
                    Err(_) => std::future::pending().await,
                }
            };
            let tick = async {
                glommio::timer::sleep(self.tick_interval).await;
                Event::Tick
            };
            let stopped = async {
                crate::stop_requested(&stop).await;
                Event::Stop
            };
            match request.or(completion).or(tick).or(stopped).await {
                Event::Request(Some(TxnAsk { request, reply })) => {
                    let id = RequestId(self.next_request);
                    self.next_request += 1;
                    self.replies.insert(id, reply);
                    self.coordinator.handle(id, request, Self::now_ms());
                }
                Event::Request(None) | Event::Stop => {
                    tracing::debug!("shard {}: transaction coordinator stopping", self.shard);
                    return;
                }
                Event::Completion(Completion::Appended(append, Ok(()))) => {
                    self.coordinator.append_done(append, Self::now_ms())
                }
                Event::Completion(Completion::Appended(append, Err(error))) => {
                    self.coordinator.append_failed(append, error)
                }
                Event::Completion(Completion::MarkersWritten(markers)) => {
                    self.coordinator.markers_written(&markers, Self::now_ms())
                }
                Event::Tick => self.coordinator.tick(Self::now_ms()),
            }
            self.run_effects();
        }
    }

    /// Starts what the coordinator asked for since the last call.
    fn run_effects(&mut self) {
        for effect in self.coordinator.take_effects() {
            match effect {
                Effect::Respond { request, response } => match self.replies.remove(&request) {
                    Some(reply) => {
                        if reply.send(response).is_err() {
                            tracing::debug!("a transaction request's requester went away before its answer");
                        }
                    }
                    None => tracing::error!("shard {}: an answer to unknown request {request:?}", self.shard),
                },
                Effect::Append { append, partition, coordinator_epoch: _, record } => {
                    let engine = self.engine.clone();
                    let done = self.completions.0.clone();
                    glommio::spawn_local(async move {
                        let result = append_record(&engine, partition, &record).await;
                        let _ = done.send(Completion::Appended(append, result));
                    })
                    .detach();
                }
                Effect::WriteMarkers(markers) if self.hold_markers => {
                    tracing::warn!("{}: markers held (--test-hold-txn-markers)", markers.transactional_id);
                }
                Effect::WriteMarkers(markers) => {
                    let engine = self.engine.clone();
                    let done = self.completions.0.clone();
                    let groups = self.groups.clone();
                    glommio::spawn_local(async move {
                        write_markers(&engine, &groups, &markers).await;
                        let _ = done.send(Completion::MarkersWritten(markers));
                    })
                    .detach();
                }
            }
        }
    }
}

/// Appends one `__transaction_state` record, durable before it returns Ok.
async fn append_record(
    engine: &EngineHandle,
    partition: PartitionId,
    record: &super::log::TxnRecord,
) -> std::result::Result<(), ResponseError> {
    let partition = TopicPartition::new(transaction_state_topic(), partition);
    let bytes = encode_batch(std::slice::from_ref(record), SystemClock.now_ms());
    match engine.append(&partition, bytes, LeaderEpoch(0)).await {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::error!("{partition}: appending the record of {}: {error}", record.transactional_id);
            Err(response_error(&error))
        }
    }
}

/// Writes the marker of `markers` to each of its partitions, each retried until it
/// is written or its partition is gone (deleted with its topic). The partitions are
/// written at once, a task each, so a transaction's completion waits for its
/// slowest partition's durable append, not for the sum of them (each is an
/// fdatasync under `fsync.policy` always, `__consumer_offsets` always is).
async fn write_markers(engine: &EngineHandle, groups: &crate::group::GroupRouter, markers: &TxnMarkers) {
    let outcome = match markers.result {
        TransactionResult::Commit => TxnOutcome::Commit,
        TransactionResult::Abort => TxnOutcome::Abort,
    };
    let marker = TxnMarker { outcome, coordinator_epoch: markers.coordinator_epoch.0 };
    let markers = std::rc::Rc::new(markers.clone());
    let tasks: Vec<_> = markers
        .partitions
        .iter()
        .map(|partition| {
            let (engine, groups, markers, partition) =
                (engine.clone(), groups.clone(), markers.clone(), partition.clone());
            glommio::spawn_local(async move {
                let written = write_marker(&engine, &partition, &markers, marker).await;
                if written && partition.topic == crate::group::offsets_topic() {
                    let commit = markers.result == TransactionResult::Commit;
                    groups.complete_txn(partition.partition, markers.producer_id, commit).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
}

/// One partition's marker: whether it was written (not if the partition is gone).
async fn write_marker(
    engine: &EngineHandle,
    partition: &TopicPartition,
    markers: &TxnMarkers,
    marker: TxnMarker,
) -> bool {
    let mut attempts: u64 = 0;
    loop {
        let result = engine
            .append_txn_marker(partition, markers.producer_id, markers.producer_epoch, marker, LeaderEpoch(0))
            .await;
        match result {
            Ok(_) => return true,
            Err(EngineError::UnknownTopicOrPartition(_)) => {
                tracing::warn!("{partition}: gone before the marker of {}; skipped", markers.transactional_id);
                return false;
            }
            Err(error) => {
                attempts += 1;
                if attempts.is_power_of_two() {
                    tracing::warn!(
                        "{partition}: writing the marker of {} ({attempts} attempts): {error}",
                        markers.transactional_id
                    );
                }
                glommio::timer::sleep(MARKER_RETRY_BACKOFF).await;
            }
        }
    }
}
