//! Produce (key 0), v3–v9 (advertised from v0, see `api_versions`): appends each
//! partition's record set, as the producer's bytes, to the partition's log.
//!
//! Staged (see the handlers' module doc): the request is dispatched once every
//! partition's append is queued, one after the other in request order, so the
//! appends of pipelined requests reach each partition in request order; the
//! response then waits for all of them together. `acks` 1 and -1 (all) both wait for
//! the engine's acknowledgement, which under `fsync: always` comes after the
//! group-commit fdatasync: with one broker the leader is the whole in-sync replica
//! set. `acks=0` appends the same way; the connection drops the response.
//!
//! In a cluster (`ShardContext::replicas`), a partition this node does not lead is
//! NOT_LEADER_OR_FOLLOWER; batches are stamped with the partition's leader epoch;
//! each append's reply tells the partition's [`LeaderSlot`] where the leader's own
//! log ends (the high watermark may move). `acks=1` (and 0) is answered then.
//! `acks=all` is refused with NOT_ENOUGH_REPLICAS before the append when the ISR is
//! smaller than the topic's `min.insync.replicas`, and after it waits until the high
//! watermark passes the append ([`ReplicaManager::wait_acks_all`]): NONE, or
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile,
//! NOT_LEADER_OR_FOLLOWER if this node stopped leading, REQUEST_TIMED_OUT after the
//! request's `timeout_ms`.
//!
//! The broker's internal topics are refused with INVALID_TOPIC_EXCEPTION (resolved
//! as an [`Intent::Write`]), as Kafka's `ReplicaManager.appendToLocalLog` refuses
//! them ("Cannot append to internal topic"). Kafka lets one client id through
//! (`__admin_client`, its own tools'); corelog lets none: the group coordinator owns
//! the records of `__consumer_offsets` and replays them at start-up.
//!
//! Transactions (KIP-890 part 1, as Kafka 3.6+ checks on the same broker): a request
//! with a `transactional_id` whose batches are transactional is checked first with
//! the transaction coordinator (a verify-only AddPartitionsToTxn): a partition not in
//! the producer's ongoing transaction is answered INVALID_TXN_STATE and not appended.
//! Kafka asks only for a partition where the producer has no open transaction yet;
//! corelog asks once per such request, a hop to the coordinator's shard.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::resolve::{Intent, PartitionRef, TopicRef};
use super::{Pacer, PerPartition, RequestContext, Versions};
use crate::cluster::replica_manager::{AcksAllError, LeaderSlot, ReplicaManager};
use crate::cluster::replication::InsyncError;
use crate::kafka::errors::response_error;
use crate::txn::coordinator::{Request, Response};
use crate::txn::TransactionalId;
use corelog_engine::batch::split_batches;
use corelog_engine::log::AppendInfo;
use corelog_engine::shard::EngineHandle;
use corelog_engine::types::{PartitionId, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(3, 9);

/// Queues every partition's append; the returned future waits for their replies.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: ProduceRequest,
) -> impl std::future::Future<Output = ProduceResponse> {
    let engine = &context.shard.engine;
    let resolver = context.resolver();
    let mut work = PerPartition::new();
    let replicas = context.shard.replicas.clone();
    let acks_all = request.acks == -1;
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms.max(0) as u64);
    // In a cluster, the leader state of each partition appended to, by (topic, index).
    let led: RefCell<Led> = RefCell::default();
    // With trace logging, each partition's producer and sequences, to log with its answer.
    let traced: RefCell<BTreeMap<(String, i32), String>> = RefCell::default();
    let refused = verify_transaction(context, &request).await;
    for topic in request.topic_data {
        let raw_name = topic.name.0.as_str();
        if context.shard.broker.config.test_panic_on_produce_to.as_deref() == Some(raw_name) {
            panic!("test-only panic: a Produce to {raw_name} (--test-panic-on-produce-to)");
        }
        let resolved = resolver.topic(TopicRef::Name(raw_name), Intent::Write);
        work.topic(
            topic.name,
            &resolved,
            topic.partition_data,
            |data| PartitionRef::new(data.index),
            |resolved, data| {
                let leadership = replicas.as_ref().map(|replicas| {
                    let slot = replicas.leader(&resolved.partition).ok_or(ResponseError::NotLeaderOrFollower)?;
                    if acks_all {
                        slot.check_insync().map_err(insync_error)?;
                    }
                    let key = (resolved.partition.topic.to_string(), resolved.partition.partition.0);
                    led.borrow_mut().insert(key, (resolved.partition.clone(), slot.clone()));
                    Ok(slot.leader_epoch)
                });
                if let Some(records) = data.records.as_ref().filter(|_| tracing::enabled!(tracing::Level::TRACE)) {
                    traced
                        .borrow_mut()
                        .insert((resolved.partition.topic.to_string(), data.index), producer_of(records));
                }
                let refusal = refused.get(&(resolved.partition.topic.to_string(), data.index)).copied();
                async move {
                    let Some(records) = data.records else { return Err(ResponseError::CorruptMessage) };
                    if let Some(refusal) = refusal {
                        return Err(refusal);
                    }
                    let partition = resolved.partition;
                    let leader_epoch = match leadership {
                        Some(leader_epoch) => leader_epoch?,
                        None => resolved.leader_epoch,
                    };
                    engine.dispatch_append(&partition, records.to_vec(), leader_epoch).await.map_err(|error| {
                        tracing::debug!("produce to {partition} failed: {error}");
                        response_error(&error)
                    })
                }
            },
        )
        .await;
    }
    let engine = engine.clone();
    let led = led.into_inner();
    let traced = traced.into_inner();
    async move {
        let mut replies = work.replies().await;
        if let Some(replicas) = replicas {
            replicate(&replicas, &engine, &led, &mut replies, acks_all, deadline).await;
        }
        for (name, answers) in replies.iter().filter(|_| tracing::enabled!(tracing::Level::TRACE)) {
            for (index, answer) in answers {
                let producer = traced.get(&(name.0.to_string(), *index)).cloned().unwrap_or_default();
                tracing::trace!("produce to {}-{index} {producer}: {answer:?}", name.0);
            }
        }
        respond(replies).await
    }
}

/// The partitions of a transactional producer's request that its coordinator says
/// are not in its ongoing transaction (or whose check failed), by (topic, index),
/// with the error to answer; empty for a request without transactional batches.
async fn verify_transaction(
    context: &RequestContext<'_>,
    request: &ProduceRequest,
) -> BTreeMap<(String, i32), ResponseError> {
    let (Some(transactions), Some(transactional_id)) = (&context.shard.transactions, &request.transactional_id) else {
        return BTreeMap::new();
    };
    let mut partitions = BTreeSet::new();
    let mut producer = None;
    for topic in &request.topic_data {
        let Ok(name) = TopicName::new(topic.name.0.as_str()) else { continue };
        for data in &topic.partition_data {
            let Some(records) = &data.records else { continue };
            let Ok(batches) = split_batches(records) else { continue };
            if let Some((_, header)) = batches.first().filter(|(_, h)| h.is_transactional() && !h.is_control()) {
                producer = Some((header.producer_id, header.producer_epoch));
                partitions.insert(TopicPartition::new(name.clone(), PartitionId(data.index)));
            }
        }
    }
    let Some((producer_id, producer_epoch)) = producer else { return BTreeMap::new() };
    let ask = Request::AddPartitions {
        transactional_id: TransactionalId(transactional_id.to_string()),
        producer_id,
        producer_epoch,
        partitions: partitions.clone(),
        verify_only: true,
    };
    let key = |partition: &TopicPartition| (partition.topic.to_string(), partition.partition.0);
    let verdicts = match transactions.ask(ask).await {
        Ok(Response::VerifyPartitions(verdicts)) => verdicts,
        other => {
            tracing::debug!("verifying a transactional produce: {other:?}");
            return partitions.iter().map(|p| (key(p), ResponseError::NotEnoughReplicas)).collect();
        }
    };
    let produce_error = |error: ResponseError| match error {
        ResponseError::TransactionAbortable | ResponseError::InvalidTxnState => ResponseError::InvalidTxnState,
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        ResponseError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        // The coordinator is moving or busy: retriable, as Kafka maps it.
        _ => ResponseError::NotEnoughReplicas,
    };
    // A partition the coordinator did not answer for is not known to be in the transaction.
    partitions
        .iter()
        .filter_map(|partition| match verdicts.get(partition) {
            Some(None) => None,
            Some(Some(error)) => Some((key(partition), produce_error(*error))),
            None => Some((key(partition), ResponseError::InvalidTxnState)),
        })
        .collect()
}

/// The leader state of each partition appended to, by (topic, partition index).
type Led = BTreeMap<(String, i32), (TopicPartition, Arc<LeaderSlot>)>;

type Replies = Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Result<AppendInfo, ResponseError>)>)>;

/// A cluster leader's part after the local appends: each one's log end to the
/// leader state, then for `acks=all` the wait for the high watermark.
async fn replicate(
    replicas: &ReplicaManager,
    engine: &EngineHandle,
    led: &Led,
    replies: &mut Replies,
    acks_all: bool,
    deadline: Instant,
) {
    for (name, answers) in replies.iter_mut() {
        for (index, answer) in answers.iter_mut() {
            let Ok(info) = answer else { continue };
            let Some((partition, slot)) = led.get(&(name.0.to_string(), *index)) else { continue };
            replicas.appended(engine, partition, slot, info.log_end_offset).await;
        }
    }
    if !acks_all {
        return;
    }
    for (name, answers) in replies.iter_mut() {
        for (index, answer) in answers.iter_mut() {
            let Ok(info) = answer else { continue };
            let Some((_, slot)) = led.get(&(name.0.to_string(), *index)) else { continue };
            let decided = async { replicas.wait_acks_all(slot, info.last_offset).await.map_err(acks_all_error) };
            let timeout = async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                Err(ResponseError::RequestTimedOut)
            };
            if let Err(error) = futures_lite::future::or(decided, timeout).await {
                *answer = Err(error);
            }
        }
    }
}

/// The producer id, epoch and sequences of a record set's first batch, for the
/// trace of each append.
fn producer_of(records: &[u8]) -> String {
    match split_batches(records) {
        Ok(batches) => match batches.first() {
            Some((_, h)) => format!(
                "producer {:?} epoch {:?} sequences {:?}+{} ({} batches)",
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.last_offset_delta,
                batches.len()
            ),
            None => "no batch".to_string(),
        },
        Err(error) => format!("unreadable batches: {error}"),
    }
}

fn insync_error(error: InsyncError) -> ResponseError {
    match error {
        InsyncError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        InsyncError::NotEnoughReplicasAfterAppend { .. } => ResponseError::NotEnoughReplicasAfterAppend,
    }
}

fn acks_all_error(error: AcksAllError) -> ResponseError {
    match error {
        AcksAllError::Insync(error) => insync_error(error),
        AcksAllError::NotLeader => ResponseError::NotLeaderOrFollower,
    }
}

/// The response, built with a yield every few entries (see [`Pacer`]): a request
/// may name hundreds of thousands of partitions.
async fn respond(replies: Replies) -> ProduceResponse {
    let mut pacer = Pacer::default();
    let mut responses = Vec::with_capacity(replies.len());
    for (name, answers) in replies {
        let mut partition_responses = Vec::with_capacity(answers.len());
        for (index, answer) in answers {
            let response = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_start_offset(-1)
                .with_log_append_time_ms(-1);
            partition_responses.push(match answer {
                Ok(info) => response.with_base_offset(info.base_offset.0),
                Err(error) => response.with_error_code(error.code()).with_base_offset(-1),
            });
            pacer.entry().await;
        }
        responses.push(TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses));
    }
    ProduceResponse::default().with_responses(responses)
}
