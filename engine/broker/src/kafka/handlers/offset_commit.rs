//! OffsetCommit (key 8), v2–v9: stores a group's consumed positions in
//! `__consumer_offsets`. The answer comes once the commit is durable (the topic is
//! `fsync.policy=always`). Members of a group must name the current generation;
//! clients outside group management commit with generation -1 into empty groups.
//! Partitions of topics that do not exist get UNKNOWN_TOPIC_OR_PARTITION, and so do
//! those of topics whose names are invalid: Kafka's `handleOffsetCommitRequest`
//! only asks its metadata cache whether the partition exists.
//!
//! Staged (see the handlers' module doc): the request is dispatched once the commit
//! is on the coordinator's queue, so of two commits pipelined on one connection the
//! later one is appended later and is the one kept.

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, TopicRef};
use super::{wire_code, RequestContext, Versions};
use crate::group::{CommitRequest, CommitResponse, CommittedOffset, GenerationId, GroupId, MemberId};
use corelog_engine::types::{LeaderEpoch, Offset};

pub const VERSIONS: Versions = Versions::new(2, 9);

/// Queues the commit on the group's coordinator; the returned future waits for it
/// to be durable and answers.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: OffsetCommitRequest,
) -> impl std::future::Future<Output = OffsetCommitResponse> {
    let resolver = context.resolver();
    let mut shape: Vec<(usize, i32, Answer)> = Vec::new();
    let mut offsets = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let resolved = resolver.topic(TopicRef::Name(topic.name.0.as_str()), Intent::Describe);
        for partition in &topic.partitions {
            let Ok(resolved) = partition_of(&resolved, PartitionRef::new(partition.partition_index)) else {
                // Whatever the refusal, an invalid name's too (see the module doc).
                let refused = Answer::Refused(ResponseError::UnknownTopicOrPartition);
                shape.push((topic_index, partition.partition_index, refused));
                continue;
            };
            let committed = CommittedOffset {
                offset: Offset(partition.committed_offset),
                leader_epoch: LeaderEpoch(if context.version >= 6 { partition.committed_leader_epoch } else { -1 }),
                metadata: partition.committed_metadata.as_ref().map(|m| m.to_string()),
                commit_timestamp_ms: 0,
            };
            offsets.push((resolved.partition, committed));
            shape.push((topic_index, partition.partition_index, Answer::Coordinator));
        }
    }
    let committed = if offsets.is_empty() {
        None
    } else {
        let commit = CommitRequest {
            group_id: GroupId(request.group_id.0.to_string()),
            generation: GenerationId(request.generation_id_or_member_epoch),
            member_id: MemberId(request.member_id.to_string()),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
            offsets,
        };
        Some(context.shard.groups.dispatch_commit(commit).await)
    };
    respond(request, shape, committed)
}

/// Who answers one partition of the request.
enum Answer {
    /// The handler, refusing it.
    Refused(ResponseError),
    /// The coordinator, in the order of the commit's offsets.
    Coordinator,
}

/// `shape` as `dispatch` made it: (topic index, partition index, who answers), the
/// coordinator's answers in `committed`.
async fn respond(
    request: OffsetCommitRequest,
    shape: Vec<(usize, i32, Answer)>,
    committed: Option<impl std::future::Future<Output = CommitResponse>>,
) -> OffsetCommitResponse {
    let mut results = match committed {
        Some(committed) => committed.await.into_iter(),
        None => Vec::new().into_iter(),
    };
    let mut topics: Vec<OffsetCommitResponseTopic> =
        request.topics.iter().map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone())).collect();
    for (topic_index, partition_index, answer) in shape {
        let error = match answer {
            Answer::Refused(error) => Some(error),
            Answer::Coordinator => results.next().unwrap_or(Some(ResponseError::UnknownServerError)),
        };
        topics[topic_index].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition_index)
                .with_error_code(wire_code(error)),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}
