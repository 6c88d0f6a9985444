//! DescribeQuorum (key 55), v0–v2: the metadata quorum (KIP-595, KIP-836), as the
//! one partition of Kafka's `__cluster_metadata` topic: its leader, the leader
//! epoch (the Raft term), the high watermark (the Raft log's commit index) and each
//! voter with its log end offset (the last index known replicated to it); v2 adds
//! each voter's controller listener. There are no observers: every node is a voter.
//!
//! Kafka's brokers forward the request to the quorum's leader; corelog answers
//! from the node asked. Only the leader knows how far each voter's log reaches, so
//! another node answers -1 (unknown) for every voter's log end offset, with the
//! leader, epoch and commit index as it knows them. Last fetch and caught-up times
//! are not tracked: -1. A single broker answers as the one voter of a quorum of
//! one, itself the leader at epoch 0 with an empty log.
//!
//! A topic or partition other than `__cluster_metadata`-0 is answered
//! UNKNOWN_TOPIC_OR_PARTITION, as Kafka's `KafkaRaftClient` does.

use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::cluster::records::{NodeId, NO_LEADER};

pub const VERSIONS: Versions = Versions::new(0, 2);

/// Kafka's name of the metadata log, as a topic of one partition.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Unknown, in a log end offset or a timestamp.
const UNKNOWN: i64 = -1;

/// A listener: its name, host and port.
type Endpoint = (&'static str, String, u16);

/// The quorum as this node knows it.
struct Quorum {
    leader: NodeId,
    epoch: i32,
    high_watermark: i64,
    /// Each voter with its log end offset and its listener.
    voters: Vec<(NodeId, i64, Option<Endpoint>)>,
}

pub async fn handle(context: &RequestContext<'_>, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let quorum = quorum(context);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let known = topic.topic_name.0.as_str() == METADATA_TOPIC;
            let partitions = topic
                .partitions
                .into_iter()
                .map(|partition| match (known, partition.partition_index) {
                    (true, 0) => describe(&quorum),
                    (_, index) => PartitionData::default()
                        .with_partition_index(index)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "the metadata quorum is {METADATA_TOPIC} partition 0"
                        )))),
                })
                .collect();
            TopicData::default().with_topic_name(topic.topic_name).with_partitions(partitions)
        })
        .collect();
    let mut response = DescribeQuorumResponse::default().with_topics(topics);
    if context.version >= 2 {
        let nodes = quorum
            .voters
            .iter()
            .filter_map(|(id, _, listener)| {
                let (name, host, port) = listener.clone()?;
                let listener = Listener::default()
                    .with_name(StrBytes::from_static_str(name))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port);
                Some(Node::default().with_node_id(BrokerId(*id)).with_listeners(vec![listener]))
            })
            .collect();
        response = response.with_nodes(nodes);
    }
    response
}

fn describe(quorum: &Quorum) -> PartitionData {
    let voters = quorum
        .voters
        .iter()
        .map(|(id, log_end_offset, _)| {
            ReplicaState::default()
                .with_replica_id(BrokerId(*id))
                .with_log_end_offset(*log_end_offset)
                .with_last_fetch_timestamp(UNKNOWN)
                .with_last_caught_up_timestamp(UNKNOWN)
        })
        .collect();
    PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(quorum.leader))
        .with_leader_epoch(quorum.epoch)
        .with_high_watermark(quorum.high_watermark)
        .with_current_voters(voters)
        .with_observers(Vec::new())
}

fn quorum(context: &RequestContext<'_>) -> Quorum {
    let broker = &context.shard.broker;
    let Some(view) = &context.shard.cluster else {
        let (host, port) = broker.advertised();
        return Quorum {
            leader: broker.config.node_id,
            epoch: 0,
            high_watermark: 0,
            voters: vec![(broker.config.node_id, 0, Some(("PLAINTEXT", host, port)))],
        };
    };
    let status = view.quorum_status();
    let voters = broker
        .config
        .cluster
        .voters
        .iter()
        .map(|(id, address)| {
            let log_end_offset = status.matched.get(id).map_or(UNKNOWN, |index| *index as i64);
            (*id, log_end_offset, listener(address))
        })
        .collect();
    Quorum {
        leader: status.leader.unwrap_or(NO_LEADER),
        epoch: i32::try_from(status.term).unwrap_or(i32::MAX),
        high_watermark: status.commit as i64,
        voters,
    }
}

/// A voter's controller listener from its `host:port` (`[v6]:port` too).
fn listener(address: &str) -> Option<Endpoint> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(("CONTROLLER", host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voter_addresses_become_controller_listeners() {
        assert_eq!(listener("127.0.0.1:19093"), Some(("CONTROLLER", "127.0.0.1".to_string(), 19093)));
        assert_eq!(listener("[::1]:19095"), Some(("CONTROLLER", "::1".to_string(), 19095)));
        assert_eq!(listener("no-port"), None);
    }
}
