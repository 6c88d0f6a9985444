//! The glommio tasks behind the groups of one shard.
//!
//! - The coordinator actor ([`run`]) owns the shard's [`GroupCoordinator`]. It first
//!   waits for the broker's [`Start`]. A single broker then replays every offsets
//!   partition the shard owns; a cluster node loads a partition when the reconciler
//!   says this broker leads it ([`CoordinatorRequest::Lead`]) and unloads it when the
//!   leadership ends ([`CoordinatorRequest::Resign`]). It serves
//!   [`CoordinatorRequest`]s one at a time, sleeping until the next group deadline in
//!   between, and answers NOT_COORDINATOR for a group whose partition is not loaded.
//!   Held JoinGroup/SyncGroup answers leave through the reply channels the
//!   coordinator keeps.
//! - One writer per loaded offsets partition ([`write_loop`]) owns that partition's
//!   [`OffsetsLog`]: it takes every queued write (up to
//!   `offsets_writes_per_append_max`), appends them as one record set (one fdatasync
//!   under `fsync.policy=always`; on a cluster node, acknowledged once the in-sync
//!   replicas have it), applies them to the store and answers the commits. Writes of
//!   one partition are appended in the order the coordinator decided them.
//!
//! The store of each partition is shared (`Rc<RefCell>`, same thread) between its
//! writer, which updates it after each append, and the actor, which reads it for
//! OffsetFetch; neither holds a borrow across an `await`.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use super::coordinator::{GroupCoordinator, StoreWrite};
use super::offsets::{AppendError, OffsetsLog, OffsetsStore, Record, Replicated};
use super::{
    answer, offsets_partition_for, offsets_topic, CommittedOffset, CoordinatorRequest, FetchResponse, GroupConfig,
    GroupError, GroupId, JoinResponse, LeaveResponse, SyncResponse,
};
use crate::cluster::replica_manager::ReplicaManager;
use crate::kafka::errors::response_error;
use corelog_engine::config::{Clock, SystemClock};
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::{shard_for, EngineHandle};
use corelog_engine::types::{LeaderEpoch, PartitionId, ShardId, TopicPartition};

/// How long a cluster node's offset commit waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms` default).
const COMMIT_REPLICATION_TIMEOUT: Duration = Duration::from_millis(5_000);

/// The broker's go-ahead: the offsets topic has this many partitions.
pub struct Start {
    pub offsets_partitions: i32,
    /// A single broker loads every partition the shard owns now; a cluster node
    /// loads the ones it comes to lead, as it comes to lead them.
    pub load_all: bool,
    pub reply: flume::Sender<Result<()>>,
}

/// What the actor needs besides its queues.
pub struct Shard {
    pub shard: ShardId,
    pub engine: EngineHandle,
    pub config: GroupConfig,
    /// A cluster node's led partitions (the slots offsets appends are made in).
    pub replicas: Option<Arc<ReplicaManager>>,
}

/// The coordinator task of one shard; see the module docs. Ends when the broker
/// gives up before starting it, when every router is gone, or with the executor.
pub async fn run(
    shard: Shard,
    requests: flume::Receiver<CoordinatorRequest>,
    start: flume::Receiver<Start>,
    stop: flume::Receiver<()>,
) {
    let id = shard.shard;
    let Ok(Start { offsets_partitions, load_all, reply }) = start.recv_async().await else {
        tracing::debug!("shard {id}: group coordinator not started");
        return;
    };
    let mut actor = Actor::new(shard, offsets_partitions);
    let loaded = if load_all { actor.load_owned().await } else { Ok(()) };
    let failed = loaded.is_err();
    if let Err(error) = &loaded {
        tracing::error!("shard {id}: loading consumer groups: {error}");
    }
    if reply.send(loaded).is_err() {
        tracing::debug!("shard {id}: nobody waits for the group coordinator to load");
    }
    if !failed {
        actor.serve(requests, stop).await;
    }
}

/// One offsets partition this shard's coordinator serves.
struct Loaded {
    store: Rc<RefCell<OffsetsStore>>,
    writer: flume::Sender<StoreWrite>,
    /// Disconnects when the writer has finished (after its queue is dropped).
    finished: flume::Receiver<()>,
    /// The leader epoch it was loaded in (0 on a single broker).
    leader_epoch: LeaderEpoch,
}

struct Actor {
    shard: Shard,
    coordinator: GroupCoordinator,
    loaded: HashMap<PartitionId, Loaded>,
    started: Instant,
}

impl Actor {
    fn new(shard: Shard, offsets_partitions: i32) -> Actor {
        let coordinator = Self::coordinator(&shard, offsets_partitions);
        Actor { shard, coordinator, loaded: HashMap::new(), started: Instant::now() }
    }

    fn coordinator(shard: &Shard, offsets_partitions: i32) -> GroupCoordinator {
        let wall_ms = SystemClock.now_ms().0 as u64;
        let seed = wall_ms.rotate_left(16) ^ (shard.shard.0 as u64);
        GroupCoordinator::new(shard.config.clone(), offsets_partitions, seed)
    }

    /// A single broker's start: every offsets partition this shard owns.
    async fn load_owned(&mut self) -> Result<()> {
        let shard = self.shard.shard;
        let partitions = self.coordinator.offsets_partitions();
        let mut groups_loaded = 0;
        for index in 0..partitions {
            let partition = TopicPartition::new(offsets_topic(), PartitionId(index));
            if shard_for(&partition, self.shard.engine.shard_count()) != shard {
                continue;
            }
            groups_loaded += self.load(partition.partition, LeaderEpoch(0), None).await?;
        }
        tracing::info!(
            "shard {shard}: group coordinator serving {} offsets partitions, {groups_loaded} groups loaded",
            self.loaded.len()
        );
        Ok(())
    }

    /// Replays one offsets partition into a store and the groups it holds into the
    /// coordinator, and starts its writer. Returns the number of groups loaded.
    async fn load(
        &mut self,
        index: PartitionId,
        leader_epoch: LeaderEpoch,
        replicated: Option<Replicated>,
    ) -> Result<usize> {
        let config = &self.shard.config;
        let partition = TopicPartition::new(offsets_topic(), index);
        let log = OffsetsLog::load(
            self.shard.engine.clone(),
            partition.clone(),
            config.offsets_snapshot_interval_bytes,
            replicated,
        )
        .await?;
        let store = log.store();
        let now_ms = self.now_ms();
        let mut groups_loaded = 0;
        for (group_id, stored) in store.borrow().groups() {
            if offsets_partition_for(group_id, self.coordinator.offsets_partitions()) != index {
                // The topic's partition count changed under the groups.
                tracing::warn!("{partition}: group {group_id:?} belongs to another partition; not loaded");
                continue;
            }
            self.coordinator.load_group(now_ms, group_id.clone(), stored);
            groups_loaded += 1;
        }
        let (writer, writes) = flume::bounded(config.offsets_writes_queue_max.max(1));
        let (done, finished) = flume::bounded(1);
        let writes_max = config.offsets_writes_per_append_max.max(1);
        glommio::spawn_local(async move {
            write_loop(log, writes, writes_max).await;
            drop(done);
        })
        .detach();
        self.loaded.insert(index, Loaded { store, writer, finished, leader_epoch });
        Ok(groups_loaded)
    }

    /// A cluster node leads offsets partition `index` in `leader_epoch` now.
    async fn lead(&mut self, index: PartitionId, partitions: i32, leader_epoch: LeaderEpoch) {
        let shard = self.shard.shard;
        if let Some(loaded) = self.loaded.get(&index) {
            if loaded.leader_epoch == leader_epoch {
                return;
            }
            self.resign(index).await;
        }
        if partitions != self.coordinator.offsets_partitions() {
            if !self.loaded.is_empty() || !self.coordinator.is_empty() {
                tracing::error!(
                    "shard {shard}: the offsets topic has {partitions} partitions, not {}; not loading partition {index}",
                    self.coordinator.offsets_partitions()
                );
                return;
            }
            self.coordinator = Self::coordinator(&self.shard, partitions);
        }
        let partition = TopicPartition::new(offsets_topic(), index);
        let slot = self.shard.replicas.as_ref().and_then(|r| r.leader(&partition).map(|slot| (r.clone(), slot)));
        let Some((replicas, slot)) = slot.filter(|(_, slot)| slot.leader_epoch == leader_epoch) else {
            // The leadership already moved on; its own Lead or Resign follows.
            tracing::debug!("shard {shard}: {partition}: no longer led in epoch {leader_epoch}; not loaded");
            return;
        };
        let replicated = Replicated { replicas, slot, timeout: COMMIT_REPLICATION_TIMEOUT };
        let started = Instant::now();
        match self.load(index, leader_epoch, Some(replicated)).await {
            Ok(groups) => tracing::info!(
                "shard {shard}: coordinating the groups of {partition} (leader epoch {leader_epoch}): {groups} \
                 loaded in {} ms",
                started.elapsed().as_millis()
            ),
            Err(error) => tracing::error!("shard {shard}: loading the groups of {partition}: {error}"),
        }
    }

    /// A cluster node no longer leads offsets partition `index`: its groups are
    /// unloaded and its writer finishes (its queued writes fail: the slot resigned).
    async fn resign(&mut self, index: PartitionId) {
        let Some(Loaded { writer, finished, .. }) = self.loaded.remove(&index) else { return };
        let groups = self.coordinator.unload_partition(index);
        drop(writer);
        // Only the writer task holds the sender; it is dropped when the task ends.
        let _ = finished.recv_async().await;
        tracing::info!("shard {}: {}/{index}: {groups} groups unloaded", self.shard.shard, offsets_topic());
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn serve(&mut self, requests: flume::Receiver<CoordinatorRequest>, stop: flume::Receiver<()>) {
        enum Event {
            Request(Option<CoordinatorRequest>),
            Deadline,
            Stop,
        }
        let mut stopping = false;
        loop {
            let deadline_ms = self.coordinator.next_deadline_ms();
            let now_ms = self.now_ms();
            let request = async { Event::Request(requests.recv_async().await.ok()) };
            let deadline = async {
                match deadline_ms {
                    Some(deadline_ms) => {
                        if deadline_ms > now_ms {
                            glommio::timer::sleep(Duration::from_millis(deadline_ms - now_ms)).await;
                        }
                        Event::Deadline
                    }
                    None => std::future::pending().await,
                }
            };
            let stopped = async {
                if stopping {
                    std::future::pending::<()>().await;
                }
                crate::stop_requested(&stop).await;
                Event::Stop
            };
            match request.or(deadline).or(stopped).await {
                Event::Request(Some(request)) => self.handle(request).await,
                Event::Request(None) => return,
                Event::Deadline => {}
                Event::Stop => {
                    tracing::debug!("shard {}: group coordinator stopping", self.shard.shard);
                    stopping = true;
                    self.coordinator.shutdown();
                }
            }
            // Deadlines that passed while requests kept the actor busy run now.
            self.coordinator.tick(self.now_ms());
            for write in self.coordinator.take_writes() {
                self.send_write(write).await;
            }
        }
    }

    async fn handle(&mut self, request: CoordinatorRequest) {
        if let Some(group_id) = group_of(&request) {
            if !self.loaded.contains_key(&self.coordinator.offsets_partition(group_id)) {
                return refuse(request, GroupError::NotCoordinator);
            }
        }
        let now_ms = self.now_ms();
        let coordinator = &mut self.coordinator;
        match request {
            CoordinatorRequest::Join(request, reply) => coordinator.join(now_ms, request, reply),
            CoordinatorRequest::Sync(request, reply) => coordinator.sync(now_ms, request, reply),
            CoordinatorRequest::Heartbeat(request, reply) => answer(reply, coordinator.heartbeat(now_ms, request)),
            CoordinatorRequest::Leave(request, reply) => answer(reply, coordinator.leave(now_ms, request)),
            CoordinatorRequest::Commit(request, reply) => coordinator.commit(now_ms, request, reply),
            CoordinatorRequest::Fetch(request, reply) => {
                let partition = coordinator.offsets_partition(&request.group_id);
                let response = match self.loaded.get(&partition) {
                    Some(loaded) => {
                        let store = loaded.store.borrow();
                        let offsets = store.committed(&request.group_id, request.partitions.as_deref());
                        let unstable = if request.require_stable {
                            let pending = store.pending_partitions(&request.group_id);
                            offsets.iter().map(|(p, _)| p).filter(|p| pending.contains(*p)).cloned().collect()
                        } else {
                            BTreeSet::new()
                        };
                        FetchResponse { error: None, offsets, unstable }
                    }
                    None => FetchResponse {
                        error: Some(GroupError::NotCoordinator),
                        offsets: Vec::new(),
                        unstable: BTreeSet::new(),
                    },
                };
                answer(reply, response);
            }
            CoordinatorRequest::List(reply) => answer(reply, coordinator.list()),
            CoordinatorRequest::Describe(group_id, reply) => answer(reply, Ok(coordinator.describe(&group_id))),
            CoordinatorRequest::Delete(group_id, reply) => coordinator.delete(group_id, reply),
            CoordinatorRequest::Lead { partition, partitions, leader_epoch } => {
                self.lead(partition, partitions, leader_epoch).await
            }
            CoordinatorRequest::Resign { partition } => self.resign(partition).await,
            CoordinatorRequest::TxnCommit(request, reply) => match self.coordinator.validate_txn_commit(&request) {
                Err(error) => answer(reply, vec![Some(error); request.offsets.len()]),
                Ok(()) => {
                    let partition = self.coordinator.offsets_partition(&request.group_id);
                    self.send_write(StoreWrite::TxnCommit { partition, request, reply }).await
                }
            },
            CoordinatorRequest::CompleteTxn { partition, producer_id, commit, reply } => {
                match self.loaded.get(&partition) {
                    Some(loaded) => {
                        let count = loaded.store.borrow_mut().complete_txn(producer_id, commit);
                        tracing::debug!(
                            "{}/{partition}: {count} offsets of producer {producer_id} done",
                            offsets_topic()
                        );
                    }
                    None => tracing::warn!(
                        "{}/{partition}: a transaction's marker for a partition not loaded",
                        offsets_topic()
                    ),
                }
                answer(reply, ());
            }
        }
    }

    async fn send_write(&self, write: StoreWrite) {
        let Some(loaded) = self.loaded.get(&write.partition()) else {
            tracing::debug!("shard {}: offsets partition {} is not loaded", self.shard.shard, write.partition());
            return fail_write(write, GroupError::NotCoordinator);
        };
        if let Err(flume::SendError(write)) = loaded.writer.send_async(write).await {
            fail_write(write, GroupError::CoordinatorNotAvailable);
        }
    }
}

/// The group a request is about, if it is about one.
fn group_of(request: &CoordinatorRequest) -> Option<&GroupId> {
    match request {
        CoordinatorRequest::Join(request, _) => Some(&request.group_id),
        CoordinatorRequest::Sync(request, _) => Some(&request.group_id),
        CoordinatorRequest::Heartbeat(request, _) => Some(&request.group_id),
        CoordinatorRequest::Leave(request, _) => Some(&request.group_id),
        CoordinatorRequest::Commit(request, _) => Some(&request.group_id),
        CoordinatorRequest::Fetch(request, _) => Some(&request.group_id),
        CoordinatorRequest::TxnCommit(request, _) => Some(&request.group_id),
        CoordinatorRequest::Describe(group_id, _) | CoordinatorRequest::Delete(group_id, _) => Some(group_id),
        CoordinatorRequest::List(_)
        | CoordinatorRequest::Lead { .. }
        | CoordinatorRequest::Resign { .. }
        | CoordinatorRequest::CompleteTxn { .. } => None,
    }
}

/// Answers a group request with `error` alone.
fn refuse(request: CoordinatorRequest, error: GroupError) {
    match request {
        CoordinatorRequest::Join(request, reply) => answer(reply, JoinResponse::error(request.member_id, error)),
        CoordinatorRequest::Sync(_, reply) => answer(reply, SyncResponse::error(error)),
        CoordinatorRequest::Heartbeat(_, reply) | CoordinatorRequest::Delete(_, reply) => answer(reply, Some(error)),
        CoordinatorRequest::Leave(_, reply) => answer(reply, LeaveResponse { error: Some(error), members: Vec::new() }),
        CoordinatorRequest::Commit(request, reply) => answer(reply, vec![Some(error); request.offsets.len()]),
        CoordinatorRequest::Fetch(_, reply) => {
            answer(reply, FetchResponse { error: Some(error), offsets: Vec::new(), unstable: BTreeSet::new() })
        }
        CoordinatorRequest::Describe(_, reply) => answer(reply, Err(error)),
        CoordinatorRequest::TxnCommit(request, reply) => answer(reply, vec![Some(error); request.offsets.len()]),
        CoordinatorRequest::CompleteTxn { reply, .. } => answer(reply, ()),
        CoordinatorRequest::List(_) | CoordinatorRequest::Lead { .. } | CoordinatorRequest::Resign { .. } => {}
    }
}

/// Answers a write that will not be appended.
fn fail_write(write: StoreWrite, error: GroupError) {
    match write {
        StoreWrite::Commit { results, reply, .. } => {
            answer(reply, results.into_iter().map(|r| r.or(Some(error))).collect())
        }
        StoreWrite::Delete { reply, .. } => answer(reply, Some(error)),
        StoreWrite::TxnCommit { request, reply, .. } => answer(reply, vec![Some(error); request.offsets.len()]),
        StoreWrite::Group { group_id, .. } => {
            tracing::warn!("group {group_id}: metadata not persisted: {}", error.code())
        }
    }
}

/// The error a committer sees when the append failed, as Kafka maps it: retriable
/// coordinator errors for an unavailable or unwritable partition, so clients retry
/// (after looking the coordinator up again for NOT_COORDINATOR).
fn append_error(error: &AppendError) -> GroupError {
    let error = match error {
        AppendError::Engine(error) => response_error(error),
        AppendError::NotLeader => return GroupError::NotCoordinator,
        AppendError::NotEnoughReplicas | AppendError::TimedOut => return GroupError::CoordinatorNotAvailable,
    };
    match error {
        GroupError::UnknownTopicOrPartition | GroupError::NotEnoughReplicas | GroupError::RequestTimedOut => {
            GroupError::CoordinatorNotAvailable
        }
        GroupError::NotLeaderOrFollower | GroupError::KafkaStorageError => GroupError::NotCoordinator,
        GroupError::MessageTooLarge | GroupError::RecordListTooLarge | GroupError::InvalidFetchSize => {
            GroupError::InvalidCommitOffsetSize
        }
        other => other,
    }
}

/// The writer of one offsets partition; see the module docs.
async fn write_loop(mut log: OffsetsLog, writes: flume::Receiver<StoreWrite>, writes_per_append_max: usize) {
    while let Ok(first) = writes.recv_async().await {
        let mut batch = vec![first];
        while batch.len() < writes_per_append_max {
            match writes.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        // A delete's tombstones are computed from the store, so everything queued
        // before it is appended (and applied) first.
        let mut chunk = Vec::new();
        for write in batch {
            if let StoreWrite::TxnCommit { request, reply, .. } = write {
                // A transactional batch of its own (the producer's id and epoch).
                append_writes(&mut log, std::mem::take(&mut chunk)).await;
                append_txn_commit(&mut log, request, reply).await;
            } else if matches!(write, StoreWrite::Delete { .. }) {
                append_writes(&mut log, std::mem::take(&mut chunk)).await;
                append_writes(&mut log, vec![write]).await;
            } else {
                chunk.push(write);
            }
        }
        append_writes(&mut log, chunk).await;
    }
}

/// Appends a TxnOffsetCommit's records as its producer's transactional batch
/// (pending in the store until the transaction's marker) and answers it.
async fn append_txn_commit(
    log: &mut OffsetsLog,
    request: super::TxnCommitRequest,
    reply: super::Reply<super::CommitResponse>,
) {
    let now = SystemClock.now_ms();
    let records: Vec<Record> = request
        .offsets
        .iter()
        .map(|(partition, committed)| Record::Offset {
            group_id: request.group_id.clone(),
            partition: partition.clone(),
            value: Some(CommittedOffset { commit_timestamp_ms: now.0, ..committed.clone() }),
        })
        .collect();
    if records.is_empty() {
        return answer(reply, Vec::new());
    }
    let producer = (request.producer_id, request.producer_epoch);
    match log.append_transactional(&records, producer, now).await {
        Ok(_) => answer(reply, vec![None; records.len()]),
        Err(error) => {
            tracing::error!("{}: appending a transactional offset commit: {error}", log.partition());
            let error = match &error {
                AppendError::Engine(EngineError::InvalidProducerEpoch { .. }) => GroupError::ProducerFenced,
                _ => append_error(&error),
            };
            answer(reply, vec![Some(error); records.len()])
        }
    }
}

/// Appends the records of `writes` as one record set and answers them.
async fn append_writes(log: &mut OffsetsLog, writes: Vec<StoreWrite>) {
    if writes.is_empty() {
        return;
    }
    let now = SystemClock.now_ms();
    let mut records = Vec::new();
    for write in &writes {
        match write {
            StoreWrite::Commit { group_id, offsets, .. } => {
                records.extend(offsets.iter().map(|(partition, committed)| Record::Offset {
                    group_id: group_id.clone(),
                    partition: partition.clone(),
                    value: Some(CommittedOffset { commit_timestamp_ms: now.0, ..committed.clone() }),
                }));
            }
            StoreWrite::Group { group_id, record, .. } => {
                records.push(Record::Group { group_id: group_id.clone(), value: Some(record.clone()) });
            }
            StoreWrite::Delete { group_id, .. } => records.extend(log.store().borrow().tombstones(group_id)),
            StoreWrite::TxnCommit { .. } => unreachable!("appended on its own by append_txn_commit"),
        }
    }
    let result = log.append(&records, now).await;
    if let Err(error) = &result {
        tracing::error!("{}: appending {} records: {error}", log.partition(), records.len());
    }
    let error = result.as_ref().err().map(append_error);
    for write in writes {
        match (write, error) {
            (StoreWrite::Commit { results, reply, .. }, None) => answer(reply, results),
            (StoreWrite::Delete { reply, .. }, None) => answer(reply, None),
            (StoreWrite::Group { .. }, None) => {}
            // Never here: write_loop appends a TxnCommit on its own.
            (write @ StoreWrite::TxnCommit { .. }, None) => fail_write(write, GroupError::UnknownServerError),
            (write, Some(error)) => fail_write(write, error),
        }
    }
}
