//! OffsetFetch (key 9), v1–v9: a group's committed offsets. Up to v7 one group per
//! request; from v8 several (each answered by its own coordinator). A partition
//! without a commit (or of an unknown topic) answers offset -1; a null topic list
//! asks for every committed partition of the group. Groups need not exist: clients
//! fetch before they ever commit.
//!
//! `require_stable` (v7+, sent by read_committed consumers): a partition whose
//! offsets a transaction committed (TxnOffsetCommit durable) but whose marker is not
//! written yet answers UNSTABLE_OFFSET_COMMIT with offset -1, as Kafka's coordinator
//! does; the consumer retries until the transaction completes instead of starting
//! from the offset before it.

use std::collections::BTreeSet;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::resolve::{Intent, TopicRef};
use super::{wire_code, RequestContext, Versions};
use crate::group::{CommittedOffset, FetchRequest, GroupError, GroupId};
use corelog_engine::types::{PartitionId, TopicPartition};

pub const VERSIONS: Versions = Versions::new(1, 9);

/// One partition's answer.
struct Fetched {
    partition_index: i32,
    committed: Option<CommittedOffset>,
    error: Option<GroupError>,
}

/// One group's answer, topics in request order (or by name for "all").
struct GroupFetch {
    error: Option<GroupError>,
    topics: Vec<(kafka_protocol::messages::TopicName, Vec<Fetched>)>,
}

/// Fetches one group's offsets; `topics` as the request names them (`None`: all).
async fn fetch_group(
    context: &RequestContext<'_>,
    group_id: GroupId,
    topics: Option<Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>>,
    require_stable: bool,
) -> GroupFetch {
    let Some(topics) = topics else {
        let request = FetchRequest { group_id, partitions: None, require_stable };
        let response = context.shard.groups.fetch(request).await;
        let mut grouped: Vec<(kafka_protocol::messages::TopicName, Vec<Fetched>)> = Vec::new();
        for (partition, committed) in response.offsets {
            let fetched = stable(&response.unstable, &partition, committed, None);
            match grouped.last_mut() {
                Some((name, partitions)) if name.0.as_str() == partition.topic.as_str() => partitions.push(fetched),
                _ => grouped.push((
                    kafka_protocol::messages::TopicName(StrBytes::from_string(partition.topic.as_str().to_string())),
                    vec![fetched],
                )),
            }
        }
        return GroupFetch { error: response.error, topics: grouped };
    };
    // Commits are kept for any topic name, existing or not: only the name is checked.
    let resolver = context.resolver();
    let topics: Vec<_> = topics
        .into_iter()
        .map(|(name, partitions)| {
            let resolved = resolver.topic(TopicRef::Name(name.0.as_str()), Intent::Describe).ok();
            (name, resolved, partitions)
        })
        .collect();
    let mut asked = Vec::new();
    for (_, resolved, partitions) in &topics {
        if let Some(topic) = resolved {
            asked.extend(partitions.iter().map(|&index| TopicPartition::new(topic.name().clone(), PartitionId(index))));
        }
    }
    let response = context.shard.groups.fetch(FetchRequest { group_id, partitions: Some(asked), require_stable }).await;
    let mut answers = response.offsets.into_iter();
    let topics = topics
        .into_iter()
        .map(|(name, resolved, partitions)| {
            let valid = resolved.is_some();
            let fetched = partitions
                .into_iter()
                .map(|partition_index| {
                    // Unknown or invalid topic names answer -1 like any uncommitted partition.
                    let answer = if valid { answers.next() } else { None };
                    match answer {
                        Some((partition, committed)) => {
                            stable(&response.unstable, &partition, committed, response.error)
                        }
                        None => Fetched { partition_index, committed: None, error: response.error },
                    }
                })
                .collect();
            (name, fetched)
        })
        .collect();
    GroupFetch { error: response.error, topics }
}

/// One partition's answer: UNSTABLE_OFFSET_COMMIT (and no offset) if it is `unstable`.
fn stable(
    unstable: &BTreeSet<TopicPartition>,
    partition: &TopicPartition,
    committed: Option<CommittedOffset>,
    error: Option<GroupError>,
) -> Fetched {
    let partition_index = partition.partition.0;
    if unstable.contains(partition) {
        Fetched { partition_index, committed: None, error: Some(GroupError::UnstableOffsetCommit) }
    } else {
        Fetched { partition_index, committed, error }
    }
}

/// A partition's committed offset, leader epoch and metadata, as the response has them.
fn offset_fields(fetched: &Fetched) -> (i64, i32, Option<StrBytes>) {
    match &fetched.committed {
        Some(c) => (c.offset.0, c.leader_epoch.0, Some(StrBytes::from_string(c.metadata.clone().unwrap_or_default()))),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

pub async fn handle(context: &RequestContext<'_>, request: OffsetFetchRequest) -> OffsetFetchResponse {
    if context.version < 8 {
        let topics = request.topics.map(|topics| topics.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
        let group_id = GroupId(request.group_id.0.to_string());
        let fetched = fetch_group(context, group_id, topics, request.require_stable).await;
        let topics = fetched
            .topics
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .iter()
                    .map(|p| {
                        let (offset, epoch, metadata) = offset_fields(p);
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(epoch)
                            .with_metadata(metadata)
                            .with_error_code(wire_code(p.error))
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
            })
            .collect();
        return OffsetFetchResponse::default().with_topics(topics).with_error_code(wire_code(fetched.error));
    }
    let mut groups = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let topics = group.topics.map(|topics| topics.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
        let group_id = GroupId(group.group_id.0.to_string());
        let fetched = fetch_group(context, group_id, topics, request.require_stable).await;
        let topics = fetched
            .topics
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .iter()
                    .map(|p| {
                        let (offset, epoch, metadata) = offset_fields(p);
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(p.partition_index)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(epoch)
                            .with_metadata(metadata)
                            .with_error_code(wire_code(p.error))
                    })
                    .collect();
                OffsetFetchResponseTopics::default().with_name(name).with_partitions(partitions)
            })
            .collect();
        groups.push(
            OffsetFetchResponseGroup::default()
                .with_group_id(group.group_id)
                .with_topics(topics)
                .with_error_code(wire_code(fetched.error)),
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}
