//! How handlers reach the transaction coordinator of a transactional id, and the
//! broker's start-up plumbing of the per-shard actors ([`super::runtime`]), as
//! [`crate::group`]'s `GroupRouter` and `Coordinators` do for groups.
//!
//! A transactional id is coordinated by the shard that owns its partition of
//! `__transaction_state` in the engine ([`shard_for`] of [`super::partition_for`]).
//! Single broker only: a cluster node starts no transaction coordinator (the topic
//! and the markers are not replicated yet), and its handlers refuse transactions.

use std::sync::Arc;

use kafka_protocol::ResponseError;

use super::coordinator::{ListFilter, ListedTransaction, Request, Response};
use super::runtime::{self, BrokerProducerIds, TxnAsk};
use super::{partition_for, transaction_state_topic, TransactionalId, TxnConfig};
use crate::shard_queues::{LazyShardQueues, ShardQueues};
use corelog_engine::config::Durability;
use corelog_engine::error::{EngineError, Result};
use corelog_engine::shard::{shard_for, EngineHandle};
use corelog_engine::types::{ShardId, TopicPartition};

/// Reaches the coordinator of any transactional id. Cheap to clone; owned by one shard.
#[derive(Clone)]
pub struct TxnRouter {
    coordinators: Arc<[flume::Sender<TxnAsk>]>,
    partitions: i32,
}

impl TxnRouter {
    /// The shard whose coordinator owns `transactional_id`.
    pub fn shard_for(&self, transactional_id: &TransactionalId) -> ShardId {
        let partition = partition_for(transactional_id, self.partitions);
        shard_for(&TopicPartition::new(transaction_state_topic(), partition), self.coordinators.len())
    }

    /// Asks the coordinator of the request's transactional id and waits for its
    /// answer: once the change is durable in `__transaction_state`.
    /// COORDINATOR_NOT_AVAILABLE when the coordinator is gone (the broker stops).
    /// A request without a transactional id (ListTransactions) goes to [`TxnRouter::list`].
    pub async fn ask(&self, request: Request) -> std::result::Result<Response, ResponseError> {
        let Some(transactional_id) = request.transactional_id() else {
            tracing::error!("a transaction request without a transactional id sent to one coordinator");
            return Err(ResponseError::UnknownServerError);
        };
        let shard = self.shard_for(transactional_id);
        let answer = self.send(shard, request).await?;
        answer.recv_async().await.map_err(|_| ResponseError::CoordinatorNotAvailable)
    }

    async fn send(
        &self,
        shard: ShardId,
        request: Request,
    ) -> std::result::Result<flume::Receiver<Response>, ResponseError> {
        let (reply, answer) = flume::bounded(1);
        self.coordinators[shard.0]
            .send_async(TxnAsk { request, reply })
            .await
            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
        Ok(answer)
    }

    /// ListTransactions: every shard's coordinator asked (all queued before any
    /// answer is awaited), their transactions merged by transactional id.
    /// COORDINATOR_NOT_AVAILABLE if one of them is gone.
    pub async fn list(&self, filter: ListFilter) -> std::result::Result<Vec<ListedTransaction>, ResponseError> {
        let mut answers = Vec::with_capacity(self.coordinators.len());
        for shard in 0..self.coordinators.len() {
            answers.push(self.send(ShardId(shard), Request::List(filter.clone())).await?);
        }
        let mut listed = Vec::new();
        for answer in answers {
            match answer.recv_async().await.map_err(|_| ResponseError::CoordinatorNotAvailable)? {
                Response::List(transactions) => listed.extend(transactions),
                other => {
                    tracing::error!("ListTransactions answered with {other:?}");
                    return Err(ResponseError::UnknownServerError);
                }
            }
        }
        listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(listed)
    }
}

/// The coordinator queues of every shard, made by the first shard to start (the
/// engine decides the shard count). Cheap to clone (`Send + Sync`); the lock is
/// touched only at start-up.
#[derive(Clone)]
pub struct TxnCoordinators {
    config: TxnConfig,
    channels: LazyShardQueues<TxnAsk, runtime::Start>,
}

impl TxnCoordinators {
    pub fn new(config: TxnConfig) -> TxnCoordinators {
        TxnCoordinators { config, channels: LazyShardQueues::default() }
    }

    fn channels(&self, shard_count: usize) -> &ShardQueues<TxnAsk, runtime::Start> {
        self.channels.get_or_make(shard_count, self.config.coordinator_queue_depth_max, "transaction coordinator")
    }

    /// Runs on `shard`'s thread: spawns the shard's coordinator task, which waits for
    /// [`TxnCoordinators::load`], and returns the router for this shard's handlers.
    pub fn start_on_shard(
        &self,
        shard: ShardId,
        engine: EngineHandle,
        producer_ids: BrokerProducerIds,
        groups: crate::group::GroupRouter,
        stop: flume::Receiver<()>,
    ) -> TxnRouter {
        let channels = self.channels(engine.shard_count());
        // The partition count of an existing topic wins; the broker creates a missing
        // one with the configured count, so every shard computes the same.
        let partitions =
            engine.topic(&transaction_state_topic()).map_or(self.config.state_log_partitions, |m| m.partition_count);
        let actor = runtime::Shard { shard, engine, config: self.config.clone(), producer_ids, groups };
        let task = runtime::run(actor, channels.receivers[shard.0].clone(), channels.starts[shard.0].1.clone(), stop);
        glommio::spawn_local(task).detach();
        TxnRouter { coordinators: channels.senders.clone(), partitions }
    }

    /// Creates `__transaction_state` if missing (its durability and retention
    /// restored if changed), then has every shard's coordinator replay its
    /// partitions. Returns once all are loaded and serving.
    pub async fn load(&self, engine: &EngineHandle) -> Result<()> {
        let Some(channels) = self.channels.get() else {
            return Err(EngineError::Startup("no shard started a transaction coordinator".to_string()));
        };
        let partitions = self.local_state_topic(engine).await?;
        channels.start_all(|reply| runtime::Start { partitions, reply }).await
    }

    /// A single broker's own `__transaction_state`. Returns its partition count.
    async fn local_state_topic(&self, engine: &EngineHandle) -> Result<i32> {
        let topic = transaction_state_topic();
        match engine.topic(&topic) {
            Some(metadata) => {
                let config = &metadata.config;
                if config.durability != Durability::Always || config.retention_ms != -1 || config.retention_bytes != -1
                {
                    tracing::warn!("{topic}: restoring fsync.policy=always and unlimited retention");
                    let mut fixed = config.clone();
                    fixed.durability = Durability::Always;
                    fixed.retention_ms = -1;
                    fixed.retention_bytes = -1;
                    engine.set_topic_config(&topic, fixed).await?;
                }
                Ok(metadata.partition_count)
            }
            None => {
                let config = self.config.state_topic_config();
                let metadata = engine.create_topic(topic.clone(), self.config.state_log_partitions, config).await?;
                tracing::info!("created {topic} with {} partitions", metadata.partition_count);
                Ok(metadata.partition_count)
            }
        }
    }
}
