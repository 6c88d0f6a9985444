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
//! The broker's internal topics are refused with INVALID_TOPIC_EXCEPTION (resolved
//! as an [`Intent::Write`]), as Kafka's `ReplicaManager.appendToLocalLog` refuses
//! them ("Cannot append to internal topic"). Kafka lets one client id through
//! (`__admin_client`, its own tools'); corelog lets none: the group coordinator owns
//! the records of `__consumer_offsets` and replays them at start-up.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::resolve::{Intent, PartitionRef, TopicRef};
use super::{PerPartition, RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::log::AppendInfo;

pub const VERSIONS: Versions = Versions::new(3, 9);

/// Queues every partition's append; the returned future waits for their replies.
pub async fn dispatch(
    context: &RequestContext<'_>,
    request: ProduceRequest,
) -> impl std::future::Future<Output = ProduceResponse> {
    let engine = &context.shard.engine;
    let resolver = context.resolver();
    let mut work = PerPartition::new();
    for topic in request.topic_data {
        let raw_name = topic.name.0.as_str();
        if context.shard.broker.config.test_panic_on_produce_to.as_deref() == Some(raw_name) {
            panic!("test-only panic: a Produce to {raw_name} (--test-panic-on-produce-to)");
        }
        let resolved = resolver.topic(TopicRef::Name(raw_name), Intent::Write);
        work.topic(
            topic.name,
            &resolved,
            topic.partition_data,
            |data| PartitionRef::new(data.index),
            |resolved, data| async move {
                let Some(records) = data.records else { return Err(ResponseError::CorruptMessage) };
                let partition = resolved.partition;
                engine.dispatch_append(&partition, records.to_vec(), resolved.leader_epoch).await.map_err(|error| {
                    tracing::debug!("produce to {partition} failed: {error}");
                    response_error(&error)
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
                        Err(error) => response.with_error_code(error.code()).with_base_offset(-1),
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
