//! DescribeLogDirs (key 35), v1–v4 (Kafka 4 dropped v0): where this broker keeps
//! its replicas and how big they are. corelog has one log directory, the data
//! directory, so the answer has one result: every replica this broker holds (on a
//! cluster node, the partitions the metadata places here; asked for by topic, only
//! those of the listed partitions that it holds, as Kafka omits the others), each
//! with its size on disk and its offset lag, Kafka's `max(high watermark - log end,
//! 0)`; and (v4) the file system's total and usable bytes, -1 when they cannot be
//! read. No replica is ever being moved between directories: `is_future_key` is
//! false.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName as WireTopicName};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Versions};
use corelog_engine::types::{PartitionId, TopicName, TopicPartition};

pub const VERSIONS: Versions = Versions::new(1, 4);

/// Kafka's value for volume sizes it cannot read.
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub async fn handle(context: &RequestContext<'_>, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let engine = &context.shard.engine;
    // The partitions asked about, by topic; `None`: every replica.
    let wanted: Option<BTreeMap<String, Vec<i32>>> =
        request.topics.map(|topics| topics.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect());
    let mut topics = Vec::new();
    for metadata in engine.topics() {
        let name = metadata.name.as_str();
        let indexes: Vec<i32> = match &wanted {
            None => (0..metadata.partition_count).collect(),
            Some(wanted) => match wanted.get(name) {
                Some(indexes) => {
                    indexes.iter().copied().filter(|i| (0..metadata.partition_count).contains(i)).collect()
                }
                None => continue,
            },
        };
        let mut partitions = Vec::new();
        for index in indexes {
            if !holds_replica(context, &metadata.name, index) {
                continue;
            }
            let partition = TopicPartition::new(metadata.name.clone(), PartitionId(index));
            let Ok(stats) = engine.stats(&partition).await else { continue };
            partitions.push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(index)
                    .with_partition_size(i64::try_from(stats.size_bytes).unwrap_or(i64::MAX))
                    .with_offset_lag((stats.high_watermark.0 - stats.log_end_offset.0).max(0))
                    .with_is_future_key(false),
            );
        }
        if !partitions.is_empty() {
            let wire_name = WireTopicName(StrBytes::from_string(name.to_string()));
            topics.push(DescribeLogDirsTopic::default().with_name(wire_name).with_partitions(partitions));
        }
    }
    let data_dir = engine.data_dir();
    let (total_bytes, usable_bytes) = match corelog_engine::diagnostics::file_system_space(data_dir) {
        Ok(space) => (
            i64::try_from(space.total_bytes).unwrap_or(i64::MAX),
            i64::try_from(space.usable_bytes).unwrap_or(i64::MAX),
        ),
        Err(error) => {
            tracing::warn!("DescribeLogDirs: the size of {}: {error}", data_dir.display());
            (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES)
        }
    };
    let result = DescribeLogDirsResult::default()
        .with_error_code(0)
        .with_log_dir(StrBytes::from_string(data_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    DescribeLogDirsResponse::default().with_error_code(0).with_results(vec![result])
}

/// Whether this broker holds a replica of `topic`/`index`: always on a single
/// broker; on a cluster node, when the metadata places one here (the engine holds a
/// replicated topic whole, its other partitions empty).
fn holds_replica(context: &RequestContext<'_>, topic: &TopicName, index: i32) -> bool {
    match &context.shard.cluster {
        None => true,
        Some(view) => view.partition(topic.as_str(), index).is_some_and(|state| state.replicas.contains(&view.node_id)),
    }
}
