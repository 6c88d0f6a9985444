//! ListOffsets (key 2), v1–v6: the earliest offset (-2), the latest (-1, the high
//! watermark), or the first offset of the first batch whose max timestamp reaches
//! the given one (batch granularity: records are never decoded).

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{concurrently, RequestContext, Versions};
use crate::kafka::errors::error_code;
use crate::log::OffsetSpec;
use crate::types::{PartitionId, TimestampMs, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(1, 6);

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn handle(context: &RequestContext<'_>, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let engine = &context.shard.engine;
    let mut lookups = Vec::new();
    let mut shape = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = TopicName::new(topic.name.0.as_str()).map_err(|e| error_code(&e));
        let partition_count = name.as_ref().ok().and_then(|n| engine.topic(n)).map_or(0, |m| m.partition_count);
        let mut indexes = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            indexes.push(wanted.partition_index);
            let engine = engine.clone();
            let name = name.clone();
            lookups.push(async move {
                let name = name?;
                if !(0..partition_count).contains(&wanted.partition_index) {
                    return Err(ResponseError::UnknownTopicOrPartition.code());
                }
                let spec = match wanted.timestamp {
                    LATEST => OffsetSpec::Latest,
                    EARLIEST => OffsetSpec::Earliest,
                    timestamp if timestamp >= 0 => OffsetSpec::Timestamp(TimestampMs(timestamp)),
                    _ => return Err(ResponseError::UnsupportedVersion.code()),
                };
                let partition = TopicPartition::new(name, PartitionId(wanted.partition_index));
                engine.list_offset(&partition, spec).await.map_err(|error| error_code(&error))
            });
        }
        shape.push((topic.name, indexes));
    }
    let version = context.version;
    let mut results = concurrently(lookups).await.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    // The leader epoch field exists from v4; below it must stay at its default.
                    let leader_epoch = if version >= 4 { 0 } else { -1 };
                    let response =
                        ListOffsetsPartitionResponse::default().with_partition_index(index).with_leader_epoch(leader_epoch);
                    match results.next() {
                        Some(Ok(Some((offset, timestamp)))) => response.with_offset(offset.0).with_timestamp(timestamp.0),
                        // No batch that recent: Kafka answers offset -1.
                        Some(Ok(None)) => response.with_offset(-1).with_timestamp(-1),
                        Some(Err(code)) => response.with_error_code(code).with_offset(-1).with_timestamp(-1),
                        None => response.with_error_code(ResponseError::UnknownServerError.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
