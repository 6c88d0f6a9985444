//! Produce (key 0), v3–v9 (advertised from v0, see `api_versions`): appends each
//! partition's record set, as the producer's bytes, to the partition's log.
//!
//! Partitions are appended concurrently (each on its owner shard) and answered in
//! request order. `acks` 1 and -1 (all) both wait for the engine's acknowledgement,
//! which under `fsync: always` comes after the group-commit fdatasync: with one
//! broker the leader is the whole in-sync replica set. `acks=0` appends the same way;
//! the connection drops the response.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{concurrently, RequestContext, Versions};
use crate::kafka::errors::error_code;
use crate::types::{LeaderEpoch, PartitionId, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(3, 9);

pub async fn handle(context: &RequestContext<'_>, request: ProduceRequest) -> ProduceResponse {
    let engine = &context.shard.engine;
    let mut appends = Vec::new();
    let mut shape = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = TopicName::new(topic.name.0.as_str());
        let partition_count = name.as_ref().ok().and_then(|n| engine.topic(n)).map_or(0, |m| m.partition_count);
        let mut indexes = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            indexes.push(data.index);
            let engine = engine.clone();
            let name = name.as_ref().map(|n| n.clone()).map_err(|e| error_code(e));
            appends.push(async move {
                let name = name?;
                if !(0..partition_count).contains(&data.index) {
                    return Err(ResponseError::UnknownTopicOrPartition.code());
                }
                let Some(records) = data.records else { return Err(ResponseError::CorruptMessage.code()) };
                let partition = TopicPartition::new(name, PartitionId(data.index));
                engine.append(&partition, records.to_vec(), LeaderEpoch(0)).await.map_err(|error| {
                    tracing::debug!("produce to {partition} failed: {error}");
                    error_code(&error)
                })
            });
        }
        shape.push((topic.name, indexes));
    }
    let mut results = concurrently(appends).await.into_iter();
    let responses = shape
        .into_iter()
        .map(|(name, indexes)| {
            let partition_responses = indexes
                .into_iter()
                .map(|index| {
                    let response = PartitionProduceResponse::default().with_index(index).with_log_start_offset(-1);
                    match results.next() {
                        Some(Ok(info)) => response.with_base_offset(info.base_offset.0).with_log_append_time_ms(-1),
                        Some(Err(code)) => response.with_error_code(code).with_base_offset(-1).with_log_append_time_ms(-1),
                        None => response.with_error_code(ResponseError::UnknownServerError.code()),
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
