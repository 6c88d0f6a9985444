//! TxnOffsetCommit (key 28), v0–v3: a transactional producer commits a group's
//! offsets with its transaction (`send_offsets_to_transaction`).
//!
//! The group's coordinator appends them to the group's `__consumer_offsets`
//! partition as the producer's transactional batch and answers once that is
//! durable; they stay pending, invisible to OffsetFetch, until the transaction
//! coordinator writes the transaction's marker there (AddOffsetsToTxn put the
//! partition in the transaction): COMMIT applies them, ABORT drops them, as Kafka's
//! `GroupMetadataManager` does. The transaction coordinator is asked first whether
//! the group's offsets partition is in the producer's ongoing transaction (a
//! verify-only AddPartitionsToTxn, as Kafka 3.6+ does): if not, every partition is
//! answered INVALID_TXN_STATE and nothing is written, so no pending offsets wait
//! for a marker that will never come. Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION, metadata over `offset.metadata.max.bytes`
//! OFFSET_METADATA_TOO_LARGE. From v3 the consumer's generation, member id and
//! group instance id come along (KIP-447: `send_offsets_to_transaction` with the
//! consumer's group metadata), and the group coordinator refuses a commit from a
//! member the group no longer has (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID) or from an
//! older generation (ILLEGAL_GENERATION), as Kafka does: a processor that lost its
//! partitions in a rebalance cannot commit offsets for them. A cluster node does not
//! serve transactions yet: COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, TopicRef};
use super::{wire_code, RequestContext, Versions};
use crate::group::{offsets_topic, CommittedOffset, GenerationId, GroupId, MemberId, TxnCommitRequest};
use crate::txn::coordinator::{Request, Response};
use crate::txn::TransactionalId;
use corelog_engine::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TopicPartition};

pub const VERSIONS: Versions = Versions::new(0, 3);

/// Whether the transaction coordinator has the group's offsets partition in the
/// producer's ongoing transaction; the error to answer if not.
async fn verify(
    context: &RequestContext<'_>,
    request: &TxnOffsetCommitRequest,
    group_id: &GroupId,
) -> Result<(), ResponseError> {
    let transactions = context.shard.transactions.as_ref().ok_or(ResponseError::CoordinatorNotAvailable)?;
    let partition = TopicPartition::new(offsets_topic(), context.shard.groups.offsets_partition(group_id)?);
    let ask = Request::AddPartitions {
        transactional_id: TransactionalId(request.transactional_id.to_string()),
        producer_id: ProducerId(request.producer_id.0),
        producer_epoch: ProducerEpoch(request.producer_epoch),
        partitions: [partition.clone()].into(),
        verify_only: true,
    };
    match transactions.ask(ask).await? {
        Response::VerifyPartitions(verdicts) => match verdicts.get(&partition) {
            Some(None) => Ok(()),
            Some(Some(ResponseError::TransactionAbortable)) | None => Err(ResponseError::InvalidTxnState),
            Some(Some(error)) => Err(*error),
        },
        other => {
            tracing::error!("TxnOffsetCommit's check answered with {other:?}");
            Err(ResponseError::UnknownServerError)
        }
    }
}

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
    let group_id = GroupId(request.group_id.0.to_string());
    let mut results = if offsets.is_empty() {
        Vec::new()
    } else if let Err(error) = verify(context, &request, &group_id).await {
        vec![Some(error); offsets.len()]
    } else {
        let commit = TxnCommitRequest {
            group_id,
            generation: GenerationId(request.generation_id),
            member_id: MemberId(request.member_id.to_string()),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
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
