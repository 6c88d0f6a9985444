//! DeleteRecords (key 21), v0–v2: advances partitions' log start offsets.
//!
//! Offset -1 means the high watermark (delete everything readable). An offset
//! beyond the high watermark, or another negative one, is OFFSET_OUT_OF_RANGE; one
//! at or below the log start offset changes nothing. The answer's low watermark is
//! the log start offset afterwards, -1 on error. The new log start offset is written
//! durably before the answer; whole segments below it are deleted at once, and
//! reads below it fail from then on even where a segment still holds the bytes.
//! Partitions are handled concurrently, each on its own shard.

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::{concurrently, RequestContext, Versions};
use crate::kafka::errors::error_code;
use crate::types::{Offset, PartitionId, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(0, 2);

/// The offset that asks for deletion up to the high watermark.
const HIGH_WATERMARK: i64 = -1;
/// Kafka's low watermark on error.
const INVALID_LOW_WATERMARK: i64 = -1;

pub async fn handle(context: &RequestContext<'_>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let engine = &context.shard.engine;
    let mut deletions = Vec::new();
    let mut shape = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = TopicName::new(topic.name.0.as_str()).map_err(|e| error_code(&e));
        let partition_count = name.as_ref().ok().and_then(|n| engine.topic(n)).map_or(0, |m| m.partition_count);
        let mut indexes = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            indexes.push(wanted.partition_index);
            let engine = engine.clone();
            let name = name.clone();
            deletions.push(async move {
                let name = name?;
                if !(0..partition_count).contains(&wanted.partition_index) {
                    return Err(ResponseError::UnknownTopicOrPartition.code());
                }
                let partition = TopicPartition::new(name, PartitionId(wanted.partition_index));
                let offset = if wanted.offset == HIGH_WATERMARK {
                    engine.stats(&partition).await.map_err(|e| error_code(&e))?.high_watermark
                } else {
                    Offset(wanted.offset)
                };
                let low_watermark = engine.delete_records(&partition, offset).await.map_err(|e| error_code(&e))?;
                tracing::info!("deleted records of {partition} below {offset}: log start offset {low_watermark}");
                Ok(low_watermark)
            });
        }
        shape.push((topic.name, indexes));
    }
    let mut results = concurrently(deletions).await.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let result = DeleteRecordsPartitionResult::default().with_partition_index(index);
                    match results.next() {
                        Some(Ok(low_watermark)) => result.with_low_watermark(low_watermark.0),
                        Some(Err(code)) => result.with_error_code(code).with_low_watermark(INVALID_LOW_WATERMARK),
                        None => result
                            .with_error_code(ResponseError::UnknownServerError.code())
                            .with_low_watermark(INVALID_LOW_WATERMARK),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
