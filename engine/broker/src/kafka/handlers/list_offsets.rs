//! ListOffsets (key 2), v1–v10: the earliest offset (-2, and EARLIEST_LOCAL -4 (v8+),
//! the same here: no segment is tiered), the latest (-1: the high watermark, or for
//! `isolation_level` 1, read_committed (v2+), the last stable offset), the first
//! record at or after a timestamp (>= 0) and the first record holding the largest
//! timestamp (MAX_TIMESTAMP -3, v7+), each with that record's timestamp and bounded
//! as the latest is (a record at or past it answers offset -1). LATEST_TIERED (-5,
//! v9+) answers offset -1 and leader epoch -1, Kafka's answer without tiered storage.
//! v10's `timeout_ms` is for lookups in tiered storage, which corelog has none of:
//! every answer is at once. A special timestamp older than the request's version
//! allows, or unknown, is UNSUPPORTED_VERSION for its partition, as Kafka's
//! `ReplicaManager.fetchOffset` answers it.
//!
//! In a cluster the engine serves latest as the replicated high watermark too, and
//! the answer's leader epoch (v4+) is the one this node leads the partition in
//! (its `LeaderSlot`'s), or NOT_LEADER_OR_FOLLOWER where it leads none.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::resolve::{Intent, PartitionRef, TopicRef, LEADER_EPOCH};
use super::{Pacer, PerPartition, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::log::{Isolation, OffsetSpec};
use corelog_engine::types::{LeaderEpoch, Offset, TimestampMs};

pub const VERSIONS: Versions = Versions::new(1, 10);

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
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
    let epochs: std::cell::RefCell<HashMap<(String, i32), i32>> = std::cell::RefCell::default();
    // The (topic, partition)s asked for LATEST_TIERED: answered offset -1 and leader
    // epoch -1 whatever the log holds (the engine is asked only to keep the request's
    // partitions staged alike).
    let tiered: std::cell::RefCell<HashSet<(String, i32)>> = std::cell::RefCell::default();
    let (latest, isolation) = match request.isolation_level == READ_COMMITTED {
        true => (OffsetSpec::LastStable, Isolation::ReadCommitted),
        false => (OffsetSpec::Latest, Isolation::ReadUncommitted),
    };
    let version = context.version;
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
                    epochs.borrow_mut().insert(key, slot.leader_epoch.0);
                    Ok(())
                });
                if wanted.timestamp == LATEST_TIERED && version >= 9 {
                    tiered.borrow_mut().insert((resolved.partition.topic.to_string(), resolved.partition.partition.0));
                }
                async move {
                    if let Some(leader_epoch) = leader_epoch {
                        leader_epoch?;
                    }
                    let spec = match (wanted.timestamp, version) {
                        (LATEST, _) => latest,
                        (EARLIEST, _) => OffsetSpec::Earliest,
                        (MAX_TIMESTAMP, 7..) => OffsetSpec::MaxTimestamp(isolation),
                        (EARLIEST_LOCAL, 8..) | (LATEST_TIERED, 9..) => OffsetSpec::Earliest,
                        (timestamp, _) if timestamp >= 0 => OffsetSpec::Timestamp(TimestampMs(timestamp), isolation),
                        _ => return Err(ResponseError::UnsupportedVersion),
                    };
                    engine.dispatch_list_offset(&resolved.partition, spec).await.map_err(|error| response_error(&error))
                }
            },
        )
        .await;
    }
    respond(work, context.version, epochs.into_inner(), tiered.into_inner())
}

/// The response, built with a yield every few entries (see [`Pacer`]): a request
/// may name hundreds of thousands of partitions.
async fn respond(
    work: PerPartition<kafka_protocol::messages::TopicName, Option<(Offset, TimestampMs)>>,
    version: i16,
    epochs: HashMap<(String, i32), i32>,
    tiered: HashSet<(String, i32)>,
) -> ListOffsetsResponse {
    let mut pacer = Pacer::default();
    let mut topics = Vec::new();
    for (name, answers) in work.replies().await {
        let mut partitions = Vec::with_capacity(answers.len());
        for (index, answer) in answers {
            // Looked up by key: a request may name hundreds of thousands of partitions.
            let key = (name.0.to_string(), index);
            // The leader epoch field exists from v4; below it must stay at its default.
            let epoch = epochs.get(&key).map_or(LEADER_EPOCH.0, |epoch| *epoch);
            let leader_epoch = if version >= 4 { epoch } else { -1 };
            let response =
                ListOffsetsPartitionResponse::default().with_partition_index(index).with_leader_epoch(leader_epoch);
            partitions.push(match answer {
                // Nothing is tiered: Kafka answers offset -1 and leader epoch -1.
                Ok(_) if tiered.contains(&key) => response.with_offset(-1).with_timestamp(-1).with_leader_epoch(-1),
                Ok(Some((offset, timestamp))) => response.with_offset(offset.0).with_timestamp(timestamp.0),
                // No record that recent (or none visible): Kafka answers offset -1.
                Ok(None) => response.with_offset(-1).with_timestamp(-1),
                Err(error) => response.with_error_code(error.code()).with_offset(-1).with_timestamp(-1),
            });
            pacer.entry().await;
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}
