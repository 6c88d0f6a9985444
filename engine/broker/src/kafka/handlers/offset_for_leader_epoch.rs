//! OffsetForLeaderEpoch (key 23), v2–v4: the end offset of a leader epoch, which
//! consumers (librdkafka after a leader change, KIP-320) use to check that their
//! position was not truncated away.
//!
//! This single broker has one leader epoch, 0, for every partition, and stamps it
//! into every batch; its history is one entry, epoch 0 starting at the log start
//! offset. [`end_offset_for`] is Kafka's lookup over such a history
//! (`LeaderEpochFileCache.endOffsetFor`): for the latest epoch, the log end offset;
//! for an older one, the largest epoch at or below it and the start of the next;
//! for one above every epoch, or -1, UNDEFINED (-1, -1). A `current_leader_epoch`
//! other than -1 (no check) or 0 is FENCED_LEADER_EPOCH (older) or
//! UNKNOWN_LEADER_EPOCH (newer), as a Kafka leader answers: the partition's
//! resolution checks it (see `resolve`).

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::resolve::{Intent, PartitionRef, TopicRef, LEADER_EPOCH, UNDEFINED_EPOCH};
use super::{PerPartition, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::log::PartitionStats;
use corelog_engine::types::{LeaderEpoch, Offset};

pub const VERSIONS: Versions = Versions::new(2, 4);

/// Kafka's `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: Offset = Offset(-1);

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
                            let history = [(LEADER_EPOCH, stats.log_start_offset)];
                            let (epoch, end_offset) = end_offset_for(&history, requested, stats.log_end_offset);
                            result.with_leader_epoch(epoch.0).with_end_offset(end_offset.0)
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

/// The end offset of `requested` and the epoch it belongs to, over `history`: each
/// epoch with the offset where it starts, in increasing order of both, the last one
/// being the current epoch (Kafka's `LeaderEpochFileCache.endOffsetFor`).
pub fn end_offset_for(
    history: &[(LeaderEpoch, Offset)],
    requested: LeaderEpoch,
    log_end_offset: Offset,
) -> (LeaderEpoch, Offset) {
    assert!(
        history.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1),
        "a leader-epoch history grows in both epoch and start offset: {history:?}"
    );
    const UNDEFINED: (LeaderEpoch, Offset) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
    if requested == UNDEFINED_EPOCH {
        return UNDEFINED;
    }
    if history.last().is_some_and(|(latest, _)| *latest == requested) {
        return (requested, log_end_offset);
    }
    // The first epoch after the requested one ends it; none means the requested
    // epoch is newer than any this log has seen.
    let Some(&(_, next_start)) = history.iter().find(|(epoch, _)| *epoch > requested) else {
        return UNDEFINED;
    };
    match history.iter().rev().find(|(epoch, _)| *epoch <= requested) {
        Some(&(floor, _)) => (floor, next_start),
        // Older than every epoch kept: Kafka answers the requested epoch itself with
        // the start of the first later one (possibly inexact: epochs may be gone).
        None => (requested, next_start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(history: &[(i32, i64)], requested: i32, log_end_offset: i64) -> (i32, i64) {
        let history: Vec<(LeaderEpoch, Offset)> = history.iter().map(|&(e, o)| (LeaderEpoch(e), Offset(o))).collect();
        let (epoch, offset) = end_offset_for(&history, LeaderEpoch(requested), Offset(log_end_offset));
        (epoch.0, offset.0)
    }

    #[test]
    fn the_single_epoch_of_this_broker_ends_at_the_log_end_offset() {
        assert_eq!(lookup(&[(0, 0)], 0, 42), (0, 42));
        assert_eq!(lookup(&[(0, 7)], 0, 7), (0, 7), "all records deleted: the end is the start");
        assert_eq!(lookup(&[(0, 0)], 1, 42), (-1, -1), "an epoch the log has not seen is undefined");
        assert_eq!(lookup(&[(0, 0)], -1, 42), (-1, -1), "an undefined epoch is undefined");
    }

    #[test]
    fn older_epochs_end_where_the_next_one_starts() {
        let history = [(0, 0), (2, 5), (5, 9)];
        assert_eq!(lookup(&history, 5, 12), (5, 12));
        assert_eq!(lookup(&history, 4, 12), (2, 9), "epochs 3 and 4 never led: the floor epoch 2 ends at 9");
        assert_eq!(lookup(&history, 2, 12), (2, 9));
        assert_eq!(lookup(&history, 1, 12), (0, 5));
        assert_eq!(lookup(&history, 0, 12), (0, 5));
        assert_eq!(lookup(&history, 6, 12), (-1, -1));
        assert_eq!(lookup(&[(3, 4), (5, 9)], 1, 12), (1, 4), "below every epoch: the first later epoch's start");
        assert_eq!(lookup(&[], 0, 12), (-1, -1));
    }
}
