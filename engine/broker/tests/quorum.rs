//! The metadata quorum with real nodes in one process: three `Quorum`s on loopback
//! TCP, each with its Raft log in its own directory, the brokers' memberships
//! registering and heartbeating through them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corelog_broker::cluster::controller::{ControllerConfig, Placement};
use corelog_broker::cluster::image::MetadataImage;
use corelog_broker::cluster::membership::{Endpoint, Membership};
use corelog_broker::cluster::quorum::{ControllerReply, ControllerRequest, Quorum, QuorumConfig};
use corelog_broker::cluster::records::NodeId;

const CLUSTER: &str = "quorum-test-cluster";

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address")
}

fn config(node_id: NodeId, voters: &[(NodeId, String)], root: &Path, cluster_id: &str) -> QuorumConfig {
    let listen = voters[node_id as usize].1.parse().expect("address");
    let mut config = QuorumConfig::new(
        node_id,
        voters.to_vec(),
        listen,
        cluster_id.to_string(),
        root.join(format!("node{node_id}")),
    );
    config.tick = Duration::from_millis(50);
    config.controller =
        ControllerConfig { session_timeout_ms: 1_500, producer_id_block: 1_000, ..ControllerConfig::default() };
    config.snapshot_entries = 16;
    config.seed = node_id as u64;
    config
}

struct Node {
    quorum: Arc<Quorum>,
    _membership: Membership,
}

fn start(node_id: NodeId, voters: &[(NodeId, String)], root: &Path) -> Node {
    let quorum = Arc::new(Quorum::start(config(node_id, voters, root, CLUSTER)).expect("quorum starts"));
    let endpoint = Endpoint { node_id, host: "127.0.0.1".to_string(), port: 9000 + node_id as u16 };
    let membership = Membership::start(quorum.clone(), endpoint, Duration::from_millis(200)).expect("membership");
    Node { quorum, _membership: membership }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn live(image: &MetadataImage) -> Vec<NodeId> {
    image.live_brokers().map(|b| b.node_id).collect()
}

/// Sends `request` through `node` until an active controller answers it.
fn request(node: &Node, request: ControllerRequest) -> ControllerReply {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match node.quorum.request(request.clone()) {
            ControllerReply::NotController { .. } | ControllerReply::TimedOut if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            reply => return reply,
        }
    }
}

#[test]
fn three_nodes_elect_a_controller_agree_on_metadata_and_survive_the_loss_and_return_of_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let mut nodes: Vec<Node> = (0..3).map(|id| start(id, &voters, root.path())).collect();

    wait_for("three live brokers", Duration::from_secs(20), || {
        nodes.iter().all(|n| live(&n.quorum.image()) == vec![0, 1, 2])
    });
    assert!(nodes.iter().all(|n| n.quorum.image().cluster_id.as_deref() == Some(CLUSTER)));

    // A topic created through a node that may not lead: forwarded to the leader.
    let follower = nodes.iter().position(|n| n.quorum.status().leader != Some(n.quorum.node_id())).expect("a follower");
    let create = ControllerRequest::CreateTopic {
        name: "orders".to_string(),
        placement: Placement::Spread { partitions: 3, replication_factor: 3 },
        configs: BTreeMap::new(),
    };
    let reply = request(&nodes[follower], create.clone());
    assert!(matches!(reply, ControllerReply::Done { .. }), "{reply:?}");
    let reply = request(&nodes[follower], create);
    assert!(matches!(reply, ControllerReply::Refused(_)), "a second create is refused: {reply:?}");
    wait_for("every node to see the topic", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.quorum.image().topic("orders").is_some_and(|t| t.partitions.len() == 3))
    });

    // The leader's process goes away (quorum and membership at once).
    let leader = nodes[0].quorum.status().leader.expect("a leader") as usize;
    let gone = nodes.remove(leader);
    let before = gone.quorum.image();
    drop(gone);
    wait_for("a new controller and the old one fenced", Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            let image = n.quorum.image();
            n.quorum.status().leader.is_some_and(|l| l as usize != leader) && !image.is_live(leader as NodeId)
        })
    });
    let image = nodes[0].quorum.image();
    for (_, index, partition) in image.partitions() {
        assert_ne!(partition.leader, leader as NodeId, "partition {index} moved away from the fenced broker");
        let old = &before.topic("orders").expect("topic").partitions[index as usize];
        if old.leader == leader as NodeId {
            assert!(partition.leader_epoch > old.leader_epoch, "new leader, new epoch");
        }
    }

    // It comes back from its directory: same topic id, registers again, unfenced.
    let back = start(leader as NodeId, &voters, root.path());
    wait_for("the returning broker to be live again", Duration::from_secs(20), || {
        live(&back.quorum.image()) == vec![0, 1, 2]
    });
    assert_eq!(
        back.quorum.image().topic("orders").map(|t| t.id),
        nodes[0].quorum.image().topic("orders").map(|t| t.id)
    );
    let status = back.quorum.status();
    assert!(status.commit >= 16 || status.applied > 0, "{status:?}");
}

#[test]
fn a_node_refuses_to_start_when_it_is_not_a_voter_and_is_not_heard_by_another_cluster() {
    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..2).map(|id| (id, free_address().to_string())).collect();
    let mut outsider = config(0, &voters, root.path(), CLUSTER);
    outsider.node_id = 5;
    let error = Quorum::start(outsider).err().expect("refused").to_string();
    assert!(error.contains("node 5 is not among the voters"), "{error}");

    // Two nodes of one voter list but different clusters never form a quorum.
    let a = Quorum::start(config(0, &voters, root.path(), "cluster-a")).expect("a");
    let b = Quorum::start(config(1, &voters, root.path(), "cluster-b")).expect("b");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((a.status().leader, b.status().leader), (None, None), "no quorum across clusters");
}

#[test]
fn each_broker_holds_the_topics_the_metadata_places_on_it_with_the_controllers_topic_id() {
    use corelog_broker::cluster::config::ClusterConfig;
    use corelog_broker::cluster::replica_manager::ReplicaManager;
    use corelog_broker::cluster::runtime::{start_quorum, ClusterRuntime};
    use corelog_engine::config::TopicConfig;
    use corelog_engine::shard::{Engine, EngineConfig};
    use corelog_engine::types::TopicName;

    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let mut nodes = Vec::new();
    for node_id in 0..3 {
        let data = root.path().join(format!("broker{node_id}"));
        let mut cluster = ClusterConfig::new(voters[node_id as usize].1.parse().expect("address"), voters.clone());
        cluster.heartbeat_interval = Duration::from_millis(200);
        cluster.session_timeout = Duration::from_millis(1_500);
        let meta = data.join("corelog+meta");
        std::fs::create_dir_all(&meta).expect("meta dir");
        let quorum = start_quorum(node_id, &cluster, CLUSTER.to_string(), &meta).expect("quorum");
        let mut engine_config = EngineConfig::new(&data);
        engine_config.shard_count = 1;
        engine_config.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
        let engine = Engine::start(engine_config).expect("engine");
        let endpoint = Endpoint { node_id, host: "127.0.0.1".to_string(), port: 9000 };
        let replicas = Arc::new(ReplicaManager::new(node_id, quorum.clone(), cluster.replica_lag_time_max));
        // No group coordinator runs on this bare engine: leaderships of offsets
        // partitions are told to nobody.
        let groups = corelog_broker::group::Coordinators::new(Default::default(), true);
        let runtime = ClusterRuntime::start(
            quorum,
            &cluster,
            endpoint,
            engine.handle(),
            TopicConfig::default(),
            replicas,
            groups,
        )
        .expect("runtime");
        nodes.push((runtime, engine));
    }
    wait_for("three live brokers", Duration::from_secs(20), || {
        nodes.iter().all(|(runtime, _)| live(&runtime.image()) == vec![0, 1, 2])
    });
    let create = |name: &str, placement| ControllerRequest::CreateTopic {
        name: name.to_string(),
        placement,
        configs: BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]),
    };
    let through = |request: ControllerRequest| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match nodes[1].0.quorum().request(request.clone()) {
                ControllerReply::NotController { .. } | ControllerReply::TimedOut if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                reply => return reply,
            }
        }
    };
    assert!(matches!(
        through(create("everywhere", Placement::Spread { partitions: 2, replication_factor: 3 })),
        ControllerReply::Done { .. }
    ));
    assert!(matches!(through(create("on-two", Placement::Manual(vec![vec![1, 2]]))), ControllerReply::Done { .. }));
    let everywhere = TopicName::new("everywhere").expect("name");
    let on_two = TopicName::new("on-two").expect("name");
    wait_for("the topics on their brokers", Duration::from_secs(20), || {
        nodes.iter().enumerate().all(|(i, (_, engine))| {
            let handle = engine.handle();
            handle.topic(&everywhere).is_some() && handle.topic(&on_two).is_some() == (i != 0)
        })
    });
    let id = nodes[0].0.image().topic("everywhere").expect("in the image").id;
    for (_, engine) in &nodes {
        let local = engine.handle().topic(&everywhere).expect("local topic");
        assert_eq!((local.id, local.partition_count, local.config.retention_ms), (id, 2, 60_000));
    }
    assert!(matches!(
        through(ControllerRequest::DeleteTopic { name: "everywhere".to_string() }),
        ControllerReply::Done { .. }
    ));
    wait_for("the deleted topic gone everywhere", Duration::from_secs(20), || {
        nodes.iter().all(|(_, engine)| engine.handle().topic(&everywhere).is_none())
    });
    for (runtime, engine) in nodes {
        runtime.shutdown(Duration::from_secs(5));
        engine.shutdown().expect("engine shutdown");
    }
}
