//! A cluster of `corelog broker` child processes on loopback: each a
//! [`BrokerProcess`] started with the cluster flags (`--node-id`,
//! `--controller-listener`, `--controller-quorum-voters`, `--cluster-id`), on its own
//! data directory, its client listener on a free port, its controller listener on a
//! port picked before the first node starts (every node must know every voter's).

use std::net::TcpListener;

use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::raw::RawConnection;
use super::{BrokerOptions, BrokerProcess};

/// The cluster id every node of a test cluster is started with.
pub const CLUSTER_ID: &str = "corelog-test-cluster";

pub struct ClusterProcesses {
    /// By node id.
    pub nodes: Vec<BrokerProcess>,
    /// `--controller-quorum-voters`, as every node was given it.
    pub voters: String,
    /// Each node's controller listener port, by node id.
    pub controller_ports: Vec<u16>,
}

impl ClusterProcesses {
    /// Starts `size` nodes (ids 0..size) named `<name>-<id>`, one core each, with the
    /// broker YAML `config_yaml`. Returns once every node accepts connections; the
    /// quorum may still be electing its leader.
    pub fn start(name: &str, size: usize, config_yaml: &str) -> ClusterProcesses {
        let controller_ports = free_ports(size);
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..size)
            .map(|id| {
                let mut options = BrokerOptions::new(&format!("{name}-{id}"));
                options.cores = 1;
                options.config_yaml = Some(config_yaml.to_string());
                options.extra_args = node_args(id as i32, controller_ports[id], &voters, CLUSTER_ID);
                BrokerProcess::start(options)
            })
            .collect();
        ClusterProcesses { nodes, voters, controller_ports }
    }
}

/// The cluster flags of node `node_id`.
pub fn node_args(node_id: i32, controller_port: u16, voters: &str, cluster_id: &str) -> Vec<String> {
    vec![
        "--node-id".to_string(),
        node_id.to_string(),
        "--controller-listener".to_string(),
        format!("127.0.0.1:{controller_port}"),
        "--controller-quorum-voters".to_string(),
        voters.to_string(),
        "--cluster-id".to_string(),
        cluster_id.to_string(),
    ]
}

/// `count` distinct ports free on loopback a moment ago (all held at once while
/// picked, so they differ). Another process may take one before a node binds it;
/// on a test machine that is rare, and the node then fails to start with a clear
/// error.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound address").port()).collect()
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Metadata v12 from `node`, of every topic (`None`) or of `topics`, creating none.
pub fn metadata(node: &BrokerProcess, topics: Option<&[&str]>) -> MetadataResponse {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let topics = topics.map(|names| {
        names.iter().map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name)))).collect()
    });
    let request = MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(false);
    RawConnection::open(node).request(&request, 12)
}

/// The partitions of `topic` in a Metadata answer, by index; empty if absent or in error.
pub fn partitions_of(response: &MetadataResponse, topic: &str) -> Vec<MetadataResponsePartition> {
    let Some(entry) = response.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic)) else {
        return Vec::new();
    };
    if entry.error_code != 0 {
        return Vec::new();
    }
    let mut partitions = entry.partitions.clone();
    partitions.sort_by_key(|p| p.partition_index);
    partitions
}

pub fn broker_ids(response: &MetadataResponse) -> Vec<i32> {
    let mut ids: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort_unstable();
    ids
}
