//! OffsetForLeaderEpoch (key 23), v2–v4: the end offset of a leader epoch, which
//! consumers (librdkafka after a leader change, KIP-320) use to check that their
//! position was not truncated away.
//!
//! This single broker has one leader epoch, 0, for every partition, and stamps it
//! into every batch. The answer comes from the partition's leader-epoch history in
//! the engine (`PartitionStats::leader_epochs`, Kafka's
//! `LeaderEpochFileCache.endOffsetFor`: for the latest epoch, the log end offset;
//! for an older one, the largest epoch at or below it and the start of the next;
//! for one above every epoch, or -1, UNDEFINED (-1, -1)), with epoch 0 assigned at
//! the log end if no batch carries it yet, as a Kafka leader assigns its epoch when
//! elected. A `current_leader_epoch` other than -1 (no check) or 0 is
//! FENCED_LEADER_EPOCH (older) or UNKNOWN_LEADER_EPOCH (newer), as a Kafka leader
//! answers: the partition's resolution checks it (see `resolve`).

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::resolve::{Intent, PartitionRef, TopicRef, LEADER_EPOCH, UNDEFINED_EPOCH};
use super::{PerPartition, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::log::PartitionStats;
use corelog_engine::types::LeaderEpoch;

pub const VERSIONS: Versions = Versions::new(2, 4);

/// Checks each partition's current leader epoch and queues the lookup of its log
/// start and end offsets (staged, see the handlers' module doc); the returned future
/// waits for the replies and answers from them.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: OffsetForLeaderEpochRequest,
) -> impl std::future::Future<Output = OffsetForLeaderEpochResponse> {
    let engine = &context.shard.engine;
    let resolver = context.resolver();
    let mut work = PerPartition::new();
    // The epoch asked for, per partition in request order.
    let mut requested = Vec::new();
    for topic in request.topics {
        requested.extend(topic.partitions.iter().map(|p| LeaderEpoch(p.leader_epoch)));
        let resolved = resolver.topic(TopicRef::Name(topic.topic.0.as_str()), Intent::Read);
        work.topic(
            topic.topic,
            &resolved,
            topic.partitions,
            |p| PartitionRef::new(p.partition).with_current_leader_epoch(LeaderEpoch(p.current_leader_epoch)),
            |resolved, _| async move {
                engine.dispatch_stats(&resolved.partition).await.map_err(|e| response_error(&e))
            },
        )
        .await;
    }
    respond(work, requested)
}

async fn respond(
    work: PerPartition<kafka_protocol::messages::TopicName, PartitionStats>,
    requested: Vec<LeaderEpoch>,
) -> OffsetForLeaderEpochResponse {
    let mut requested = requested.into_iter();
    let topics = work
        .replies()
        .await
        .into_iter()
        .map(|(topic, answers)| {
            let partitions = answers
                .into_iter()
                .map(|(index, answer)| {
                    let result = EpochEndOffset::default().with_partition(index);
                    let requested = requested.next().unwrap_or(UNDEFINED_EPOCH);
                    match answer {
                        Ok(stats) => {
                            let mut history = stats.leader_epochs;
                            if history.latest_epoch().is_none_or(|latest| latest < LEADER_EPOCH) {
                                history.assign(LEADER_EPOCH, stats.log_end_offset);
                            }
                            let answer = history.end_offset_for(requested, stats.log_end_offset);
                            result.with_leader_epoch(answer.leader_epoch.0).with_end_offset(answer.end_offset.0)
                        }
                        Err(error) => result.with_error_code(error.code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
