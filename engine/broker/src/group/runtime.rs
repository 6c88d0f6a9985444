//! The glommio tasks behind the groups of one shard.
//!
//! - The coordinator actor ([`run`]) owns the shard's [`GroupCoordinator`]. It first
//!   waits for the broker's [`Start`], replays the shard's offsets partitions, then
//!   serves [`CoordinatorRequest`]s one at a time, sleeping until the next group
//!   deadline in between. Held JoinGroup/SyncGroup answers leave through the reply
//!   channels the coordinator keeps.
//! - One writer per offsets partition ([`write_loop`]) owns that partition's
//!   [`OffsetsLog`]: it takes every queued write (up to
//!   `offsets_writes_per_append_max`), appends them as one record set (one fdatasync
//!   under `fsync.policy=always`), applies them to the store and answers the commits.
//!   Writes of one partition are appended in the order the coordinator decided them.
//!
//! The store of each partition is shared (`Rc<RefCell>`, same thread) between its
//! writer, which updates it after each durable append, and the actor, which reads it
//! for OffsetFetch; neither holds a borrow across an `await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use super::coordinator::{GroupCoordinator, StoreWrite};
use super::offsets::{OffsetsLog, OffsetsStore, Record};
use super::{
    answer, offsets_partition_for, offsets_topic, CommittedOffset, CoordinatorRequest, FetchResponse, GroupConfig,
    GroupError,
};
use crate::kafka::errors::response_error;
use corelog_engine::config::{Clock, SystemClock};
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::{shard_for, EngineHandle};
use corelog_engine::types::{PartitionId, ShardId, TopicPartition};

/// The broker's go-ahead: the offsets topic exists with this many partitions.
pub struct Start {
    pub offsets_partitions: i32,
    pub reply: flume::Sender<Result<()>>,
}

/// The coordinator task of one shard; see the module docs. Ends when the broker
/// gives up before starting it, when every router is gone, or with the executor.
pub async fn run(
    shard: ShardId,
    engine: EngineHandle,
    config: GroupConfig,
    requests: flume::Receiver<CoordinatorRequest>,
    start: flume::Receiver<Start>,
    stop: flume::Receiver<()>,
) {
    let Ok(Start { offsets_partitions, reply }) = start.recv_async().await else {
        tracing::debug!("shard {shard}: group coordinator not started");
        return;
    };
    let mut actor = match Actor::load(shard, &engine, &config, offsets_partitions).await {
        Ok(actor) => {
            if reply.send(Ok(())).is_err() {
                tracing::debug!("shard {shard}: nobody waits for the group coordinator to load");
            }
            actor
        }
        Err(error) => {
            tracing::error!("shard {shard}: loading consumer groups: {error}");
            if reply.send(Err(error)).is_err() {
                tracing::debug!("shard {shard}: nobody waits for the group coordinator to load");
            }
            return;
        }
    };
    actor.serve(requests, stop).await;
}

struct Actor {
    shard: ShardId,
    coordinator: GroupCoordinator,
    stores: HashMap<PartitionId, Rc<RefCell<OffsetsStore>>>,
    writers: HashMap<PartitionId, flume::Sender<StoreWrite>>,
    started: Instant,
}

impl Actor {
    /// Replays every offsets partition this shard owns into stores and the groups
    /// they hold into the coordinator, and starts each partition's writer.
    async fn load(
        shard: ShardId,
        engine: &EngineHandle,
        config: &GroupConfig,
        offsets_partitions: i32,
    ) -> Result<Actor> {
        let wall_ms = SystemClock.now_ms().0 as u64;
        let seed = wall_ms.rotate_left(16) ^ (shard.0 as u64);
        let mut coordinator = GroupCoordinator::new(config.clone(), offsets_partitions, seed);
        let started = Instant::now();
        let mut stores = HashMap::new();
        let mut writers = HashMap::new();
        let mut groups_loaded = 0;
        for index in 0..offsets_partitions {
            let partition = TopicPartition::new(offsets_topic(), PartitionId(index));
            if shard_for(&partition, engine.shard_count()) != shard {
                continue;
            }
            let log =
                OffsetsLog::load(engine.clone(), partition.clone(), config.offsets_snapshot_interval_bytes).await?;
            let store = log.store();
            for (group_id, stored) in store.borrow().groups() {
                if offsets_partition_for(group_id, offsets_partitions) != partition.partition {
                    // The topic's partition count changed under the groups.
                    tracing::warn!("{partition}: group {group_id:?} belongs to another partition; not loaded");
                    continue;
                }
                coordinator.load_group(0, group_id.clone(), stored);
                groups_loaded += 1;
            }
            let (queue, writes) = flume::bounded(config.offsets_writes_queue_max.max(1));
            glommio::spawn_local(write_loop(log, writes, config.offsets_writes_per_append_max.max(1))).detach();
            stores.insert(partition.partition, store);
            writers.insert(partition.partition, queue);
        }
        tracing::info!(
            "shard {shard}: group coordinator serving {} offsets partitions, {groups_loaded} groups loaded",
            stores.len()
        );
        Ok(Actor { shard, coordinator, stores, writers, started })
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
                Event::Request(Some(request)) => self.handle(request),
                Event::Request(None) => return,
                Event::Deadline => {}
                Event::Stop => {
                    tracing::debug!("shard {}: group coordinator stopping", self.shard);
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

    fn handle(&mut self, request: CoordinatorRequest) {
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
                let response = match self.stores.get(&partition) {
                    Some(store) => FetchResponse {
                        error: None,
                        offsets: store.borrow().committed(&request.group_id, request.partitions.as_deref()),
                    },
                    None => FetchResponse { error: Some(GroupError::NotCoordinator), offsets: Vec::new() },
                };
                answer(reply, response);
            }
            CoordinatorRequest::List(reply) => answer(reply, coordinator.list()),
            CoordinatorRequest::Describe(group_id, reply) => answer(reply, coordinator.describe(&group_id)),
            CoordinatorRequest::Delete(group_id, reply) => coordinator.delete(group_id, reply),
        }
    }

    async fn send_write(&self, write: StoreWrite) {
        let Some(queue) = self.writers.get(&write.partition()) else {
            tracing::error!("shard {}: no writer for offsets partition {}", self.shard, write.partition());
            return fail_write(write, GroupError::NotCoordinator);
        };
        if let Err(flume::SendError(write)) = queue.send_async(write).await {
            fail_write(write, GroupError::CoordinatorNotAvailable);
        }
    }
}

/// Answers a write that will not be appended.
fn fail_write(write: StoreWrite, error: GroupError) {
    match write {
        StoreWrite::Commit { results, reply, .. } => {
            answer(reply, results.into_iter().map(|r| r.or(Some(error))).collect())
        }
        StoreWrite::Delete { reply, .. } => answer(reply, Some(error)),
        StoreWrite::Group { group_id, .. } => {
            tracing::warn!("group {group_id}: metadata not persisted: {}", error.code())
        }
    }
}

/// The error a committer sees when the append failed, as Kafka maps it: retriable
/// coordinator errors for an unavailable or unwritable partition, so clients retry.
fn append_error(error: &EngineError) -> GroupError {
    match response_error(error) {
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
            if matches!(write, StoreWrite::Delete { .. }) {
                append_writes(&mut log, std::mem::take(&mut chunk)).await;
                append_writes(&mut log, vec![write]).await;
            } else {
                chunk.push(write);
            }
        }
        append_writes(&mut log, chunk).await;
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
            (write, Some(error)) => fail_write(write, error),
        }
    }
}
