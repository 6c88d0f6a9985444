//! A cluster of `corelog broker` child processes on loopback: each a
//! [`BrokerProcess`] started with the cluster flags (`--node-id`,
//! `--controller-listener`, `--controller-quorum-voters`, `--cluster-id`), on its own
//! data directory, its client listener on a free port, its controller listener on a
//! port picked before the first node starts (every node must know every voter's).

use std::net::TcpListener;

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
