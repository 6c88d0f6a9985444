//! ListOffsets (key 2), v1–v6: the earliest offset (-2), the latest (-1: the high
//! watermark, or for `isolation_level` 1, read_committed (v2+), the last stable
//! offset), or the first offset of the first batch whose max timestamp reaches the
//! given one (batch granularity: records are never decoded).
//!
//! In a cluster the engine serves latest as the replicated high watermark too, and
//! the answer's leader epoch (v4+) is the one this node leads the partition in
//! (its `LeaderSlot`'s), or NOT_LEADER_OR_FOLLOWER where it leads none.

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::resolve::{Intent, PartitionRef, TopicRef, LEADER_EPOCH};
use super::{PerPartition, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::log::OffsetSpec;
use corelog_engine::types::{LeaderEpoch, Offset, TimestampMs};

pub const VERSIONS: Versions = Versions::new(1, 6);

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// `isolation_level` of a consumer that reads committed data only.
const READ_COMMITTED: i8 = 1;

/// Queues every partition's lookup (staged, see the handlers' module doc); the
/// returned future waits for their replies.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: ListOffsetsRequest,
) -> impl std::future::Future<Output = ListOffsetsResponse> {
    let engine = &context.shard.engine;
    let resolver = context.resolver();
    let mut work = PerPartition::new();
    let replicas = context.shard.replicas.clone();
    // The leader epoch answered per (topic, partition) in a cluster.
    let epochs: std::cell::RefCell<Vec<((String, i32), i32)>> = std::cell::RefCell::default();
    let latest = if request.isolation_level == READ_COMMITTED { OffsetSpec::LastStable } else { OffsetSpec::Latest };
    for topic in request.topics {
        let resolved = resolver.topic(TopicRef::Name(topic.name.0.as_str()), Intent::Read);
        work.topic(
            topic.name,
            &resolved,
            topic.partitions,
            // The current leader epoch (v4+; -1 before) is checked as Fetch's is.
            |p| PartitionRef::new(p.partition_index).with_current_leader_epoch(LeaderEpoch(p.current_leader_epoch)),
            |resolved, wanted| {
                let leader_epoch = replicas.as_ref().map(|replicas| {
                    let slot = replicas.leader(&resolved.partition).ok_or(ResponseError::NotLeaderOrFollower)?;
                    let key = (resolved.partition.topic.to_string(), resolved.partition.partition.0);
                    epochs.borrow_mut().push((key, slot.leader_epoch.0));
                    Ok(())
                });
                async move {
                    if let Some(leader_epoch) = leader_epoch {
                        leader_epoch?;
                    }
                    let spec = match wanted.timestamp {
                        LATEST => latest,
                        EARLIEST => OffsetSpec::Earliest,
                        timestamp if timestamp >= 0 => OffsetSpec::Timestamp(TimestampMs(timestamp)),
                        _ => return Err(ResponseError::UnsupportedVersion),
                    };
                    engine.dispatch_list_offset(&resolved.partition, spec).await.map_err(|error| response_error(&error))
                }
            },
        )
        .await;
    }
    respond(work, context.version, epochs.into_inner())
}

async fn respond(
    work: PerPartition<kafka_protocol::messages::TopicName, Option<(Offset, TimestampMs)>>,
    version: i16,
    epochs: Vec<((String, i32), i32)>,
) -> ListOffsetsResponse {
    let topics = work
        .replies()
        .await
        .into_iter()
        .map(|(name, answers)| {
            let partitions = answers
                .into_iter()
                .map(|(index, answer)| {
                    // The leader epoch field exists from v4; below it must stay at its default.
                    let epoch = epochs
                        .iter()
                        .find(|((topic, partition), _)| *topic == name.0.as_str() && *partition == index)
                        .map_or(LEADER_EPOCH.0, |(_, epoch)| *epoch);
                    let leader_epoch = if version >= 4 { epoch } else { -1 };
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(index)
                        .with_leader_epoch(leader_epoch);
                    match answer {
                        Ok(Some((offset, timestamp))) => response.with_offset(offset.0).with_timestamp(timestamp.0),
                        // No batch that recent: Kafka answers offset -1.
                        Ok(None) => response.with_offset(-1).with_timestamp(-1),
                        Err(error) => response.with_error_code(error.code()).with_offset(-1).with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
