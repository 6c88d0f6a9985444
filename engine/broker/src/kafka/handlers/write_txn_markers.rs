//! WriteTxnMarkers (key 27), v1: a transaction coordinator asks this broker, as
//! the partitions' leader, to write COMMIT/ABORT markers. A single broker's own
//! coordinator writes them through the engine directly ([`crate::txn::runtime`]);
//! this serves another coordinator, for completeness (each partition's marker
//! through [`corelog_engine::shard::EngineHandle::append_txn_marker`], a
//! `__consumer_offsets` one also applied to the group's pending offsets). A
//! partition this broker does not have is UNKNOWN_TOPIC_OR_PARTITION; a cluster
//! node does not serve transactions yet: NOT_LEADER_OR_FOLLOWER for every partition.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;

use super::{wire_code, RequestContext, Versions};
use crate::group::offsets_topic;
use crate::kafka::errors::response_error;
use corelog_engine::batch::{TxnMarker, TxnOutcome};
use corelog_engine::types::{LeaderEpoch, PartitionId, ProducerEpoch, ProducerId, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(1, 1);

pub async fn handle(context: &RequestContext<'_>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let outcome = if marker.transaction_result { TxnOutcome::Commit } else { TxnOutcome::Abort };
        let written = TxnMarker { outcome, coordinator_epoch: marker.coordinator_epoch };
        let producer = (ProducerId(marker.producer_id.0), ProducerEpoch(marker.producer_epoch));
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for &index in &topic.partition_indexes {
                let error = write(context, topic.name.as_str(), index, producer, written).await.err();
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(wire_code(error)),
                );
            }
            topics.push(WritableTxnMarkerTopicResult::default().with_name(topic.name).with_partitions(partitions));
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(marker.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// One partition's marker.
async fn write(
    context: &RequestContext<'_>,
    topic: &str,
    index: i32,
    (producer_id, producer_epoch): (ProducerId, ProducerEpoch),
    marker: TxnMarker,
) -> Result<(), ResponseError> {
    if context.shard.transactions.is_none() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let name = TopicName::new(topic).map_err(|_| ResponseError::UnknownTopicOrPartition)?;
    let metadata = context.shard.engine.topic(&name).ok_or(ResponseError::UnknownTopicOrPartition)?;
    if !(0..metadata.partition_count).contains(&index) {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    let partition = TopicPartition::new(name, PartitionId(index));
    let appended =
        context.shard.engine.append_txn_marker(&partition, producer_id, producer_epoch, marker, LeaderEpoch(0)).await;
    appended.map_err(|error| response_error(&error))?;
    if partition.topic == offsets_topic() {
        let commit = marker.outcome == TxnOutcome::Commit;
        context.shard.groups.complete_txn(partition.partition, producer_id, commit).await;
    }
    Ok(())
}
