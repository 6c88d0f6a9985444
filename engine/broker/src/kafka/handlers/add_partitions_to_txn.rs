//! AddPartitionsToTxn (key 24), v0–v5: partitions join a producer's ongoing
//! transaction, so its coordinator writes their markers at the end.
//!
//! v0–v3 (clients) carry one transaction; v4+ (KIP-890, partition leaders) carry
//! several, each either added or, with `verify_only`, checked: a partition not in
//! the transaction is answered TRANSACTION_ABORTABLE. As in Kafka, a request naming
//! a partition this broker does not have answers UNKNOWN_TOPIC_OR_PARTITION for it
//! and OPERATION_NOT_ATTEMPTED for the others of its transaction; otherwise every
//! partition gets the coordinator's answer, given once the change is durable. A
//! cluster node does not serve transactions yet: COORDINATOR_NOT_AVAILABLE.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName as WireTopic};
use kafka_protocol::ResponseError;

use super::{wire_code, RequestContext, Versions};
use crate::txn::coordinator::{Request, Response};
use crate::txn::TransactionalId;
use corelog_engine::types::{PartitionId, ProducerEpoch, ProducerId, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(0, 5);

/// One transaction of a request, as the wire has it.
struct Asked {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<AddPartitionsToTxnTopic>,
}

pub async fn handle(context: &RequestContext<'_>, request: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    if context.version <= 3 {
        let asked = Asked {
            transactional_id: request.v3_and_below_transactional_id.to_string(),
            producer_id: request.v3_and_below_producer_id.0,
            producer_epoch: request.v3_and_below_producer_epoch,
            verify_only: false,
            topics: request.v3_and_below_topics,
        };
        let results = transaction(context, asked).await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for asked in request.transactions {
        let transactional_id = asked.transactional_id.clone();
        let asked = Asked {
            transactional_id: asked.transactional_id.to_string(),
            producer_id: asked.producer_id.0,
            producer_epoch: asked.producer_epoch,
            verify_only: asked.verify_only,
            topics: asked.topics,
        };
        let topic_results = transaction(context, asked).await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transactional_id)
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// The per-partition answers of one transaction.
async fn transaction(context: &RequestContext<'_>, asked: Asked) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut unknown = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    for topic in &asked.topics {
        for &index in &topic.partitions {
            match known_partition(context, &topic.name, index) {
                Some(partition) => {
                    partitions.insert(partition);
                }
                None => {
                    unknown.insert((topic.name.to_string(), index));
                }
            }
        }
    }
    let answers: BTreeMap<(String, i32), Option<ResponseError>> = if !unknown.is_empty() {
        let each = |topic: &AddPartitionsToTxnTopic, index: i32| {
            let key = (topic.name.to_string(), index);
            let error = if unknown.contains(&key) {
                ResponseError::UnknownTopicOrPartition
            } else {
                ResponseError::OperationNotAttempted
            };
            (key, Some(error))
        };
        asked.topics.iter().flat_map(|t| t.partitions.iter().map(move |&i| each(t, i))).collect()
    } else {
        coordinator_answers(context, &asked, partitions).await
    };
    asked
        .topics
        .iter()
        .map(|topic| {
            let results = topic
                .partitions
                .iter()
                .map(|&index| {
                    let error = answers.get(&(topic.name.to_string(), index)).copied().flatten();
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(index)
                        .with_partition_error_code(wire_code(error))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(topic.name.clone()).with_results_by_partition(results)
        })
        .collect()
}

/// What the coordinator answers for every partition of the transaction.
async fn coordinator_answers(
    context: &RequestContext<'_>,
    asked: &Asked,
    partitions: BTreeSet<TopicPartition>,
) -> BTreeMap<(String, i32), Option<ResponseError>> {
    let key = |partition: &TopicPartition| (partition.topic.as_str().to_string(), partition.partition.0);
    let all = |error: Option<ResponseError>| partitions.iter().map(|p| (key(p), error)).collect();
    let Some(transactions) = &context.shard.transactions else {
        return all(Some(ResponseError::CoordinatorNotAvailable));
    };
    let request = Request::AddPartitions {
        transactional_id: TransactionalId(asked.transactional_id.clone()),
        producer_id: ProducerId(asked.producer_id),
        producer_epoch: ProducerEpoch(asked.producer_epoch),
        partitions: partitions.clone(),
        verify_only: asked.verify_only,
    };
    match transactions.ask(request).await {
        Ok(Response::AddPartitions(result)) => all(result.err()),
        Ok(Response::VerifyPartitions(verdicts)) => verdicts.iter().map(|(p, error)| (key(p), *error)).collect(),
        Ok(other) => {
            tracing::error!("AddPartitionsToTxn answered with {other:?}");
            all(Some(ResponseError::UnknownServerError))
        }
        Err(error) => all(Some(error)),
    }
}

/// The partition, if this broker has it.
fn known_partition(context: &RequestContext<'_>, topic: &WireTopic, index: i32) -> Option<TopicPartition> {
    let name = TopicName::new(topic.as_str()).ok()?;
    let metadata = context.shard.engine.topic(&name)?;
    (0..metadata.partition_count).contains(&index).then(|| TopicPartition::new(name, PartitionId(index)))
}
