//! A cluster of `corelog broker` child processes on loopback: each a
//! [`BrokerProcess`] started with the cluster flags (`--node-id`,
//! `--controller-listener`, `--controller-quorum-voters`, `--cluster-id`), on its own
//! data directory, its client listener on a free port, its controller listener on a
//! port picked before the first node starts (every node must know every voter's).

use std::net::TcpListener;
use std::time::Duration;

use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
use kafka_protocol::messages::{
    FindCoordinatorRequest, MetadataRequest, MetadataResponse, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use rdkafka::admin::{NewTopic, TopicReplication};

use super::raw::RawConnection;
use super::{admin_client, admin_options, block_on, wait_until, BrokerOptions, BrokerProcess};

/// Longest wait for a cluster's metadata to settle (a coordinator named, a
/// leader elected after a broker died).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

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

impl ClusterProcesses {
    /// [`ClusterProcesses::start`], then waits until every node lists all of them
    /// as live brokers.
    pub fn start_live(name: &str, size: usize, config_yaml: &str) -> ClusterProcesses {
        let cluster = ClusterProcesses::start(name, size, config_yaml);
        let ids: Vec<i32> = (0..size as i32).collect();
        for node in &cluster.nodes {
            wait_until("every broker live in Metadata", SETTLE_TIMEOUT, || {
                broker_ids(&metadata(node, Some(&[]))) == ids
            });
        }
        cluster
    }

    /// Every node's client address, comma-separated (`bootstrap.servers`).
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(BrokerProcess::bootstrap).collect::<Vec<_>>().join(",")
    }
}

/// Creates `topic` with `replicas` replicas per partition through librdkafka's
/// admin client, and asserts the cluster said yes.
pub fn create_replicated_topic(
    node: &BrokerProcess,
    topic: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) {
    let admin = admin_client(node);
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    let results = block_on(admin.create_topics([&new_topic], &admin_options())).expect("CreateTopics");
    assert_eq!(results, vec![Ok(topic.to_string())]);
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

/// The coordinator FindCoordinator v3 names for a group, from `node`, or its error
/// code and message.
pub fn find_coordinator(node: &BrokerProcess, group: &str) -> Result<i32, (i16, String)> {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string())).with_key_type(0);
    let response = RawConnection::open(node).request(&request, 3);
    match response.error_code {
        0 => Ok(response.node_id.0),
        code => Err((code, response.error_message.map(|m| m.to_string()).unwrap_or_default())),
    }
}

/// Waits until `node` names a coordinator for `group` other than `not`.
pub fn wait_for_coordinator(node: &BrokerProcess, group: &str, not: Option<i32>) -> i32 {
    let mut last = Err((0, String::new()));
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    while std::time::Instant::now() < deadline {
        last = find_coordinator(node, group);
        match last {
            Ok(id) if Some(id) != not => return id,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    panic!("no coordinator (other than {not:?}) for group {group} after {SETTLE_TIMEOUT:?}; last answer {last:?}");
}

/// OffsetFetch v7 of every partition `group` committed, from `node`: the top-level
/// error code and each (topic, partition, offset).
pub fn offset_fetch(node: &BrokerProcess, group: &str) -> (i16, Vec<(String, i32, i64)>) {
    let fetch = OffsetFetchRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let response = RawConnection::open(node).request(&fetch, 7);
    let offsets = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset)))
        .collect();
    (response.error_code, offsets)
}
