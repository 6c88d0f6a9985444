//! DescribeProducers (key 61), v0: the active producers of each named partition, from
//! the partition's producer state (Kafka's `ReplicaManager.activeProducerState`):
//! producer id, epoch, last sequence, last timestamp, coordinator epoch and the first
//! offset of the producer's open transaction (-1 when none).
//!
//! Each partition resolves as a read ([`super::resolve`]): an invalid topic name is
//! INVALID_TOPIC_EXCEPTION, an unknown topic or partition UNKNOWN_TOPIC_OR_PARTITION,
//! and on a cluster node a partition this broker does not lead
//! NOT_LEADER_OR_FOLLOWER (the admin client asks the leader). Served on a single
//! broker and on a cluster node alike: it reads the engine's producer state, which a
//! leader keeps for every append.
//!
//! Limits. Kafka answers on a follower too (any replica holding the log); corelog
//! answers on the leader only. The coordinator epoch is always -1: the engine's
//! producer state does not keep the epoch of a producer's last marker (Kafka's
//! `ProducerStateEntry.coordinatorEpoch`). The last timestamp is the broker's clock
//! at the producer's last append (the batch's max timestamp for a batch re-read from
//! the log after a crash), where Kafka reports the batch's max timestamp.

use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId as WireProducerId};
use kafka_protocol::protocol::StrBytes;

use super::resolve::{partition_of, Intent, PartitionRef, TopicRef};
use super::{RequestContext, Versions};
use crate::kafka::errors::response_error;
use corelog_engine::producer_state::ActiveProducer;

pub const VERSIONS: Versions = Versions::new(0, 0);

/// Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH`: no marker's coordinator epoch known.
const NO_COORDINATOR_EPOCH: i32 = -1;

pub async fn handle(context: &RequestContext<'_>, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let resolver = context.resolver();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let resolved = resolver.topic(TopicRef::Name(topic.name.0.as_str()), Intent::Read);
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let answer = PartitionResponse::default().with_partition_index(index);
            let partition = match partition_of(&resolved, PartitionRef::new(index)) {
                Ok(partition) => partition.partition,
                Err(refusal) => {
                    partitions.push(
                        answer
                            .with_error_code(refusal.error.code())
                            .with_error_message(Some(StrBytes::from_string(refusal.message))),
                    );
                    continue;
                }
            };
            let answer = match context.shard.engine.producers(&partition).await {
                Ok(producers) => answer.with_active_producers(producers.iter().map(producer_state).collect()),
                Err(error) => answer
                    .with_error_code(response_error(&error).code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            };
            partitions.push(answer);
        }
        topics.push(TopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    DescribeProducersResponse::default().with_topics(topics)
}

fn producer_state(producer: &ActiveProducer) -> ProducerState {
    ProducerState::default()
        .with_producer_id(WireProducerId(producer.producer_id.0))
        .with_producer_epoch(i32::from(producer.epoch.0))
        .with_last_sequence(producer.last_sequence.map_or(-1, |sequence| sequence.0))
        .with_last_timestamp(producer.last_timestamp.map_or(-1, |timestamp| timestamp.0))
        .with_coordinator_epoch(NO_COORDINATOR_EPOCH)
        .with_current_txn_start_offset(producer.current_txn_start_offset.map_or(-1, |offset| offset.0))
}
