//! Partition leaders as one started broker sees them, asked directly (a raw
//! Metadata request to its own listener, past every fault proxy): what a leader
//! watch reads after a fault on a cluster the harness started. A client library
//! asks whichever broker it likes, and a broker cut off from the others still
//! names itself leader of what it led, so its answer says nothing about whether the
//! rest of the cluster moved on.

use std::time::Duration;

use anyhow::Context as _;
use corelog_broker::cluster::peer::PeerConnection;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::driver::kafka::PartitionLeader;

/// Metadata's version: the first without topic ids in requests that is flexible.
const METADATA_VERSION: i16 = 12;

/// The leader (-1: none) and replicas of every partition of `topics` in the
/// metadata of the broker listening at `address`.
pub fn leaders_seen_by(address: &str, topics: &[String], timeout: Duration) -> anyhow::Result<Vec<PartitionLeader>> {
    let mut connection = PeerConnection::connect(address, "corelog-leader-watch", timeout)?;
    let request = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|name| {
                    MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let response =
        connection.request(&request, METADATA_VERSION).with_context(|| format!("Metadata from {address}"))?;
    let mut leaders = Vec::new();
    for topic in response.topics.iter().filter(|topic| topic.error_code == 0) {
        let name = topic.name.as_ref().map(|name| name.0.to_string()).unwrap_or_default();
        for partition in &topic.partitions {
            leaders.push(PartitionLeader {
                topic: name.clone(),
                partition: partition.partition_index,
                leader: partition.leader_id.0,
                replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
            });
        }
    }
    Ok(leaders)
}
