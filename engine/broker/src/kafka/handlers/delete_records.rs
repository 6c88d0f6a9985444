//! DeleteRecords (key 21), v0–v2: advances partitions' log start offsets.
//!
//! Offset -1 means the high watermark (delete everything readable). An offset
//! beyond the high watermark, or another negative one, is OFFSET_OUT_OF_RANGE; one
//! at or below the log start offset changes nothing. The answer's low watermark is
//! the log start offset afterwards, -1 on error. The new log start offset is written
//! durably before the answer; whole segments below it are deleted at once, and
//! reads below it fail from then on even where a segment still holds the bytes.
//!
//! Staged (see the handlers' module doc): each partition's delete is queued in
//! request order before the next request of the connection starts; for offset -1
//! that takes one round trip first, for the high watermark as it is at that place
//! in the partition's order. The deletes then run concurrently, each on its shard.
//!
//! The broker's internal topics are refused with INVALID_TOPIC_EXCEPTION (resolved
//! as an [`Intent::Write`]), as Kafka's `ReplicaManager.deleteRecordsOnLocalLog`
//! refuses them ("Cannot delete records of
//! internal topic"): deleting records of `__consumer_offsets` would erase committed
//! offsets.

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::resolve::{Intent, PartitionRef, TopicRef};
use super::{PerPartition, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::types::Offset;

pub const VERSIONS: Versions = Versions::new(0, 2);

/// The offset that asks for deletion up to the high watermark.
const HIGH_WATERMARK: i64 = -1;
/// Kafka's low watermark on error.
const INVALID_LOW_WATERMARK: i64 = -1;

/// Queues every partition's delete; the returned future waits for their replies.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: DeleteRecordsRequest,
) -> impl std::future::Future<Output = DeleteRecordsResponse> {
    let engine = &context.shard.engine;
    let resolver = context.resolver();
    let mut work = PerPartition::new();
    for topic in request.topics {
        let resolved = resolver.topic(TopicRef::Name(topic.name.0.as_str()), Intent::Write);
        work.topic(
            topic.name,
            &resolved,
            topic.partitions,
            |p| PartitionRef::new(p.partition_index),
            |resolved, wanted| async move {
                let partition = resolved.partition;
                let offset = if wanted.offset == HIGH_WATERMARK {
                    engine.stats(&partition).await.map_err(|e| response_error(&e))?.high_watermark
                } else {
                    Offset(wanted.offset)
                };
                tracing::info!("deleting records of {partition} below {offset}");
                engine.dispatch_delete_records(&partition, offset).await.map_err(|e| response_error(&e))
            },
        )
        .await;
    }
    respond(work)
}

async fn respond(work: PerPartition<kafka_protocol::messages::TopicName, Offset>) -> DeleteRecordsResponse {
    let topics = work
        .replies()
        .await
        .into_iter()
        .map(|(name, answers)| {
            let partitions = answers
                .into_iter()
                .map(|(index, answer)| {
                    let result = DeleteRecordsPartitionResult::default().with_partition_index(index);
                    match answer {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark.0),
                        Err(error) => result.with_error_code(error.code()).with_low_watermark(INVALID_LOW_WATERMARK),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
