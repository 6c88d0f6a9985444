//! Whole brokers as nodes of one cluster, in one process: three `Broker`s with
//! cluster settings on loopback, spoken to over the Kafka protocol.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use corelog_broker::cluster::peer::PeerConnection;
use corelog_broker::{Broker, BrokerConfig};
use kafka_protocol::messages::InitProducerIdRequest;

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address")
}

fn config(
    node_id: i32,
    root: &std::path::Path,
    listen: SocketAddr,
    voters: &str,
    controller: SocketAddr,
) -> BrokerConfig {
    let mut config = BrokerConfig::new(root.join(format!("broker{node_id}")));
    config.node_id = node_id;
    config.listen = listen;
    config.engine.shard_count = 1;
    config.engine.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
    config.cluster.voters = corelog_broker::cluster::config::parse_voters(voters).expect("voters");
    config.cluster.controller_listener = Some(controller);
    config.cluster.cluster_id = Some("brokers-test".to_string());
    config.cluster.heartbeat_interval_ms = 200;
    config.cluster.session_timeout_ms = 2_000;
    config
}

/// Producer ids from `broker`, retrying while it has no controller to ask.
fn producer_ids(broker: SocketAddr, count: usize) -> Vec<i64> {
    let mut connection =
        PeerConnection::connect(&broker.to_string(), "cluster-test", Duration::from_secs(10)).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ids = Vec::new();
    while ids.len() < count {
        let response = connection.request(
            &InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000),
            4,
        );
        let response = response.expect("an answer");
        if response.error_code == 0 {
            ids.push(response.producer_id.0);
        } else {
            assert!(Instant::now() < deadline, "no producer id from {broker}: error {}", response.error_code);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    ids
}

#[test]
fn producer_ids_are_unique_across_the_brokers_of_a_cluster_and_across_restarts() {
    let root = tempfile::tempdir().expect("tempdir");
    let listens: Vec<SocketAddr> = (0..3).map(|_| free_address()).collect();
    let controllers: Vec<SocketAddr> = (0..3).map(|_| free_address()).collect();
    let voters = controllers.iter().enumerate().map(|(i, a)| format!("{i}@{a}")).collect::<Vec<_>>().join(",");
    let configs: Vec<BrokerConfig> =
        (0..3).map(|i| config(i, root.path(), listens[i as usize], &voters, controllers[i as usize])).collect();
    let brokers: Vec<Broker> = configs.iter().map(|c| Broker::start(c.clone()).expect("broker starts")).collect();

    let mut seen = BTreeSet::new();
    for listen in &listens {
        for id in producer_ids(*listen, 3) {
            assert!(seen.insert(id), "producer id {id} handed out twice");
        }
    }
    // A restarted broker gets a fresh block, never its old one again.
    let mut brokers = brokers.into_iter();
    let first = brokers.next().expect("broker 0");
    first.shutdown().expect("shutdown");
    let restarted = Broker::start(configs[0].clone()).expect("restart");
    for id in producer_ids(listens[0], 3) {
        assert!(seen.insert(id), "producer id {id} handed out twice after a restart");
    }
    restarted.shutdown().expect("shutdown");
    for broker in brokers {
        broker.shutdown().expect("shutdown");
    }
}

#[test]
fn a_node_given_cpus_that_are_not_online_starts_nothing_and_says_which_are() {
    let root = tempfile::tempdir().expect("tempdir");
    let (listen, controller) = (free_address(), free_address());
    let voters = format!("0@{controller}");
    let mut config = config(0, root.path(), listen, &voters, controller);
    config.engine.cpus = corelog_engine::cpus::ShardCpus::parse("0,8191").expect("a CPU list");
    let error = Broker::start(config).err().expect("CPU 8191 is not online");
    let online = corelog_engine::cpus::online().expect("the online CPUs are listed");
    assert_eq!(
        error.to_string(),
        format!("invalid config corelog.cpus=\"0,8191\": CPU 8191 is not online (online CPUs: {online})")
    );
    assert!(!root.path().join("broker0").exists(), "no data directory was made");
    TcpListener::bind(controller).expect("the controller listener was never bound");
}

/// Transactions are a single broker's for now: a cluster node's ApiVersions leaves
/// out the transaction APIs that need the coordinator (DescribeTransactions and
/// ListTransactions among them) and its handlers answer errors, while a single broker
/// advertises them. DescribeProducers, which reads a partition's producer state, is
/// advertised by both.
#[test]
fn a_cluster_node_does_not_serve_transactions_yet_and_a_single_broker_does() {
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, DescribeTransactionsRequest, EndTxnRequest, FindCoordinatorRequest,
        ListTransactionsRequest, ProducerId, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let root = tempfile::tempdir().expect("tempdir");
    let (listen, controller) = (free_address(), free_address());
    let node = Broker::start(config(0, root.path(), listen, &format!("0@{controller}"), controller)).expect("starts");
    let mut single_config = BrokerConfig::new(root.path().join("single"));
    single_config.listen = free_address();
    single_config.engine.shard_count = 1;
    single_config.engine.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
    let single = Broker::start(single_config).expect("single broker starts");
    let transaction_keys = corelog_broker::kafka::handlers::TRANSACTION_API_KEYS.iter().map(|&k| k as i16);

    let advertised = |address: SocketAddr| -> BTreeSet<i16> {
        let mut connection =
            PeerConnection::connect(&address.to_string(), "txn-test", Duration::from_secs(10)).expect("connect");
        let response = connection.request(&ApiVersionsRequest::default(), 3).expect("ApiVersions");
        response.api_keys.iter().map(|k| k.api_key).collect()
    };
    let on_node = advertised(listen);
    let on_single = advertised(single.local_addr());
    for key in transaction_keys {
        assert!(!on_node.contains(&key), "a cluster node advertises API key {key}");
        assert!(on_single.contains(&key), "a single broker does not advertise API key {key}");
    }
    for (keys, broker) in [(&on_node, "a cluster node"), (&on_single, "a single broker")] {
        assert!(keys.contains(&(ApiKey::DescribeProducers as i16)), "{broker} does not advertise DescribeProducers");
    }

    let mut connection =
        PeerConnection::connect(&listen.to_string(), "txn-test", Duration::from_secs(10)).expect("connect");
    let id = || TransactionalId(StrBytes::from_static_str("txn"));
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("txn")).with_key_type(1);
    assert_eq!(connection.request(&find, 3).expect("FindCoordinator").error_code, 15, "COORDINATOR_NOT_AVAILABLE");
    let init = InitProducerIdRequest::default().with_transactional_id(Some(id())).with_transaction_timeout_ms(60_000);
    assert_eq!(
        connection.request(&init, 1).expect("InitProducerId").error_code,
        53,
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    );
    let end = EndTxnRequest::default().with_transactional_id(id()).with_producer_id(ProducerId(1)).with_committed(true);
    assert_eq!(connection.request(&end, 1).expect("EndTxn").error_code, 15, "COORDINATOR_NOT_AVAILABLE");
    let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![id()]);
    let described = connection.request(&describe, 0).expect("DescribeTransactions");
    let codes: Vec<i16> = described.transaction_states.iter().map(|state| state.error_code).collect();
    assert_eq!(codes, vec![15], "COORDINATOR_NOT_AVAILABLE for the id");
    let listed = connection.request(&ListTransactionsRequest::default(), 1).expect("ListTransactions");
    assert_eq!(listed.error_code, 15, "COORDINATOR_NOT_AVAILABLE");
    drop(connection);
    single.shutdown().expect("shutdown");
    node.shutdown().expect("shutdown");
}
