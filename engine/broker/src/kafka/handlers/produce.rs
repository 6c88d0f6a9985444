//! Produce (key 0), v3–v9 (advertised from v0, see `api_versions`): appends each
//! partition's record set, as the producer's bytes, to the partition's log.
//!
//! Staged (see the handlers' module doc): the request is dispatched once every
//! partition's append is queued, one after the other in request order, so the
//! appends of pipelined requests reach each partition in request order; the
//! response then waits for all of them together. `acks` 1 and -1 (all) both wait for
//! the engine's acknowledgement, which under `fsync: always` comes after the
//! group-commit fdatasync: with one broker the leader is the whole in-sync replica
//! set. `acks=0` appends the same way; the connection drops the response.
//!
//! The broker's internal topics are refused with INVALID_TOPIC_EXCEPTION, as Kafka's
//! `ReplicaManager.appendToLocalLog` refuses them ("Cannot append to internal
//! topic"). Kafka lets one client id through (`__admin_client`, its own tools');
//! corelog lets none: the group coordinator owns the records of `__consumer_offsets`
//! and replays them at start-up.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{PerPartition, RequestContext, Versions};
use crate::is_internal;
use crate::kafka::errors::error_code;
use corelog_engine::log::AppendInfo;
use corelog_engine::types::LeaderEpoch;

pub const VERSIONS: Versions = Versions::new(3, 9);

/// Queues every partition's append; the returned future waits for their replies.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: ProduceRequest,
) -> impl std::future::Future<Output = ProduceResponse> {
    let engine = &context.shard.engine;
    let mut work = PerPartition::new();
    for topic in request.topic_data {
        let raw_name = topic.name.0.to_string();
        if context.shard.broker.config.test_panic_on_produce_to.as_deref() == Some(raw_name.as_str()) {
            panic!("test-only panic: a Produce to {raw_name} (--test-panic-on-produce-to)");
        }
        work.topic(
            engine,
            topic.name,
            &raw_name,
            topic.partition_data,
            |data| data.index,
            |partition, data| async move {
                if is_internal(&partition.topic) {
                    tracing::debug!("produce to {partition} refused: an internal topic");
                    return Err(ResponseError::InvalidTopicException.code());
                }
                let Some(records) = data.records else { return Err(ResponseError::CorruptMessage.code()) };
                engine.dispatch_append(&partition, records.to_vec(), LeaderEpoch(0)).await.map_err(|error| {
                    tracing::debug!("produce to {partition} failed: {error}");
                    error_code(&error)
                })
            },
        )
        .await;
    }
    respond(work)
}

async fn respond(work: PerPartition<kafka_protocol::messages::TopicName, AppendInfo>) -> ProduceResponse {
    let responses = work
        .replies()
        .await
        .into_iter()
        .map(|(name, answers)| {
            let partition_responses = answers
                .into_iter()
                .map(|(index, answer)| {
                    let response = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_log_start_offset(-1)
                        .with_log_append_time_ms(-1);
                    match answer {
                        Ok(info) => response.with_base_offset(info.base_offset.0),
                        Err(code) => response.with_error_code(code).with_base_offset(-1),
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
