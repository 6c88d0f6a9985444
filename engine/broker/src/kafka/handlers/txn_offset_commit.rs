//! TxnOffsetCommit (key 28), v0–v3: a transactional producer commits a group's
//! offsets with its transaction (`send_offsets_to_transaction`).
//!
//! The group's coordinator appends them to the group's `__consumer_offsets`
//! partition as the producer's transactional batch and answers once that is
//! durable; they stay pending, invisible to OffsetFetch, until the transaction
//! coordinator writes the transaction's marker there (AddOffsetsToTxn put the
//! partition in the transaction): COMMIT applies them, ABORT drops them, as Kafka's
//! `GroupMetadataManager` does. Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION, metadata over `offset.metadata.max.bytes`
//! OFFSET_METADATA_TOO_LARGE. Not checked (Kafka checks them from v3): the
//! generation and member of a consumer in the group. A cluster node does not serve
//! transactions yet: COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, TopicRef};
use super::{wire_code, RequestContext, Versions};
use crate::group::{CommittedOffset, GroupId, TxnCommitRequest};
use corelog_engine::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

pub const VERSIONS: Versions = Versions::new(0, 3);

pub async fn handle(context: &RequestContext<'_>, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let resolver = context.resolver();
    let metadata_bytes_max = context.shard.broker.config.groups.offset_metadata_bytes_max;
    // (topic index, partition index, the handler's refusal or None: the coordinator's).
    let mut shape: Vec<(usize, i32, Option<ResponseError>)> = Vec::new();
    let mut offsets = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let resolved = resolver.topic(TopicRef::Name(topic.name.0.as_str()), Intent::Describe);
        for partition in &topic.partitions {
            let index = partition.partition_index;
            let Ok(resolved) = partition_of(&resolved, PartitionRef::new(index)) else {
                shape.push((topic_index, index, Some(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            let metadata = partition.committed_metadata.as_ref().map(|m| m.to_string());
            if metadata.as_ref().is_some_and(|m| m.len() > metadata_bytes_max) {
                shape.push((topic_index, index, Some(ResponseError::OffsetMetadataTooLarge)));
                continue;
            }
            let leader_epoch = LeaderEpoch(if context.version >= 2 { partition.committed_leader_epoch } else { -1 });
            let committed = CommittedOffset {
                offset: Offset(partition.committed_offset),
                leader_epoch,
                metadata,
                commit_timestamp_ms: 0,
            };
            offsets.push((resolved.partition, committed));
            shape.push((topic_index, index, None));
        }
    }
    let mut results = if offsets.is_empty() {
        Vec::new()
    } else if context.shard.transactions.is_none() {
        vec![Some(ResponseError::CoordinatorNotAvailable); offsets.len()]
    } else {
        let commit = TxnCommitRequest {
            group_id: GroupId(request.group_id.0.to_string()),
            producer_id: ProducerId(request.producer_id.0),
            producer_epoch: ProducerEpoch(request.producer_epoch),
            offsets,
        };
        context.shard.groups.txn_commit(commit).await
    }
    .into_iter();
    let mut topics: Vec<TxnOffsetCommitResponseTopic> =
        request.topics.iter().map(|t| TxnOffsetCommitResponseTopic::default().with_name(t.name.clone())).collect();
    for (topic_index, partition_index, refusal) in shape {
        let error = match refusal {
            Some(error) => Some(error),
            None => results.next().unwrap_or(Some(ResponseError::UnknownServerError)),
        };
        topics[topic_index].partitions.push(
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(partition_index)
                .with_error_code(wire_code(error)),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}
