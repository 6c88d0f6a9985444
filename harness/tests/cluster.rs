//! A cluster of three `corelog broker` processes on loopback, seen by librdkafka's
//! admin client and by raw requests: every node answers Metadata as the cluster
//! (three brokers, a controller, each partition's replicas, ISR, leader and leader
//! epoch); topics are created (replication factor 3; 4 is refused) and deleted
//! through the active controller from any node; a Produce to a follower is
//! NOT_LEADER_OR_FOLLOWER; a group's coordinator is the leader of its partition of
//! the replicated `__consumer_offsets`, and committed offsets outlive a SIGKILLed
//! coordinator; SIGKILLing a partition's
//! leader moves its leadership to another replica at a higher leader epoch and takes
//! the dead broker out of the brokers and every ISR; DescribeQuorum and ElectLeaders
//! answer; a node whose id is not a voter, and a node on another cluster's data
//! directory, refuse to start.

mod common;

use std::time::Duration;

use common::cluster::{
    broker_ids, create_replicated_topic, find_coordinator, free_ports, metadata, node_args, offset_fetch,
    partitions_of, topic_name, wait_for_coordinator, ClusterProcesses, CLUSTER_ID, SETTLE_TIMEOUT,
};
use common::raw::RawConnection;
use common::*;
use corelog_engine::batch::build_value_batch;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, DescribeQuorumRequest, ElectLeadersRequest, ProduceRequest};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

/// The whole test's bound (three broker starts, one failover, the refusals).
const TEST_BOUND: Duration = Duration::from_secs(120);
/// Quick sessions so that a killed broker is fenced within seconds. Not below the
/// quorum's 5 s request timeout: a heartbeat forwarded to a quorum leader that was
/// just killed waits that long for its answer, and a shorter session would have
/// the new controller fence the live brokers too.
const CONFIG_YAML: &str = "broker_session_timeout_ms: 6000\nbroker_heartbeat_interval_ms: 500\n";
/// Longest wait for a killed leader's partitions to have a new leader.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);

const TOPIC: &str = "replicated";

// Kafka's error codes.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_COORDINATOR: i16 = 16;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
const ELECTION_NOT_NEEDED: i16 = 84;

/// The error code of a Produce v9, acks=1, of one batch to one partition.
fn produce(node: &BrokerProcess, topic: &str, partition: i32) -> i16 {
    let batch = build_value_batch(now_timestamp(), 1, 10);
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(batch.into())),
        ]),
    ]);
    let response = RawConnection::open(node).request(&request, 9);
    response.responses[0].partition_responses[0].error_code
}

/// The error code of a CreateTopics v7 of `partitions` × `replication_factor`.
fn create_topic_raw(node: &BrokerProcess, topic: &str, partitions: i32, replication_factor: i16) -> (i16, String) {
    let request = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
        .with_name(topic_name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)]);
    let response = RawConnection::open(node).request(&request, 7);
    let result = &response.topics[0];
    (result.error_code, result.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default())
}

/// The error code of a consumer's Fetch v12 of `topic`/0 from offset 0, naming
/// `current_leader_epoch`.
fn fetch_code(node: &BrokerProcess, topic: &str, current_leader_epoch: i32) -> i16 {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(current_leader_epoch)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    let request = kafka_protocol::messages::FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![partition])]);
    let response = RawConnection::open(node).request(&request, 12);
    response.responses[0].partitions[0].error_code
}

/// ElectLeaders v1 of one partition: its error code.
fn elect(node: &BrokerProcess, election_type: i8, topic: &str, partition: i32) -> i16 {
    let request =
        ElectLeadersRequest::default().with_election_type(election_type).with_timeout_ms(10_000).with_topic_partitions(
            Some(vec![TopicPartitions::default().with_topic(topic_name(topic)).with_partitions(vec![partition])]),
        );
    let response = RawConnection::open(node).request(&request, 1);
    assert_eq!(response.error_code, 0, "ElectLeaders top-level error");
    response.replica_election_results[0].partition_result[0].error_code
}

#[test]
fn a_three_node_cluster_answers_as_one_and_moves_leadership_off_a_killed_broker() {
    let _watchdog = Watchdog::new("cluster", TEST_BOUND);
    let mut cluster = ClusterProcesses::start("cluster", 3, CONFIG_YAML);

    // Every node sees three live brokers and a controller.
    for node in &cluster.nodes {
        wait_until("three live brokers and a controller in Metadata", SETTLE_TIMEOUT, || {
            let response = metadata(node, Some(&[]));
            broker_ids(&response) == [0, 1, 2] && response.controller_id.0 >= 0
        });
    }
    let response = metadata(&cluster.nodes[1], Some(&[]));
    assert_eq!(response.cluster_id.as_ref().map(|id| id.to_string()).as_deref(), Some("corelog-test-cluster"));

    // CreateTopics through librdkafka's admin client (which sends it to the controller).
    let admin = admin_client(&cluster.nodes[0]);
    let replicated = NewTopic::new(TOPIC, 3, TopicReplication::Fixed(3));
    let results = block_on(admin.create_topics([&replicated], &admin_options())).expect("CreateTopics");
    assert_eq!(results, vec![Ok(TOPIC.to_string())]);
    let too_many = NewTopic::new("too-many-replicas", 1, TopicReplication::Fixed(4));
    let results = block_on(admin.create_topics([&too_many], &admin_options())).expect("CreateTopics");
    assert_eq!(results, vec![Err(("too-many-replicas".to_string(), RDKafkaErrorCode::InvalidReplicationFactor))]);
    // From a node that may not be the controller too (the request is forwarded).
    let (code, message) = create_topic_raw(&cluster.nodes[2], "too-many-replicas", 1, 4);
    assert_eq!(code, INVALID_REPLICATION_FACTOR, "{message}");
    assert!(message.contains("3 brokers are available"), "{message}");

    // Every node shows every partition with three replicas, all in sync, and a leader.
    for node in &cluster.nodes {
        wait_until("the new topic in every node's Metadata", SETTLE_TIMEOUT, || {
            let partitions = partitions_of(&metadata(node, None), TOPIC);
            partitions.len() == 3
                && partitions.iter().all(|p| {
                    p.error_code == 0 && p.replica_nodes.len() == 3 && p.isr_nodes.len() == 3 && p.leader_id.0 >= 0
                })
        });
    }
    let before = partitions_of(&metadata(&cluster.nodes[0], Some(&[TOPIC])), TOPIC);
    let leader = before[0].leader_id.0;
    let old_epoch = before[0].leader_epoch;
    assert_eq!(before[0].replica_nodes[0].0, leader, "the preferred replica leads a new partition");
    let follower = (0..3).find(|id| *id != leader).expect("a follower");

    // A Produce to a follower is refused; the leader takes it once its replica exists.
    assert_eq!(produce(&cluster.nodes[follower as usize], TOPIC, 0), NOT_LEADER_OR_FOLLOWER);
    wait_until("the leader to accept a Produce", SETTLE_TIMEOUT, || {
        produce(&cluster.nodes[leader as usize], TOPIC, 0) == 0
    });

    // The first group lookup has the controller create __consumer_offsets, replicated
    // on all three; every node then names the same coordinator for a group (the
    // leader of its offsets partition), and the others refuse its group requests.
    let coordinator = wait_for_coordinator(&cluster.nodes[1], "g", None);
    for node in &cluster.nodes {
        wait_until("every node to name the same coordinator", SETTLE_TIMEOUT, || {
            find_coordinator(node, "g") == Ok(coordinator)
        });
    }
    let offsets_topic =
        partitions_of(&metadata(&cluster.nodes[0], Some(&["__consumer_offsets"])), "__consumer_offsets");
    assert_eq!(offsets_topic.len(), 8, "offsets.topic.num.partitions");
    assert!(offsets_topic.iter().all(|p| p.replica_nodes.len() == 3), "{offsets_topic:?}");
    let other = (0..3).find(|id| *id != coordinator).expect("another broker") as usize;
    assert_eq!(offset_fetch(&cluster.nodes[other], "g").0, NOT_COORDINATOR, "OffsetFetch on broker {other}");
    wait_until("the coordinator to serve OffsetFetch", SETTLE_TIMEOUT, || {
        offset_fetch(&cluster.nodes[coordinator as usize], "g").0 == 0
    });

    // DescribeQuorum: a leader, its term, the commit index, three voters.
    let describe = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name("__cluster_metadata"))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let quorum = RawConnection::open(&cluster.nodes[0]).request(&describe, 2);
    let state = &quorum.topics[0].partitions[0];
    assert_eq!(state.error_code, 0);
    assert!(state.leader_id.0 >= 0 && state.leader_epoch >= 1 && state.high_watermark > 0, "{state:?}");
    let mut voters: Vec<i32> = state.current_voters.iter().map(|v| v.replica_id.0).collect();
    voters.sort_unstable();
    assert_eq!(voters, [0, 1, 2]);
    assert_eq!(quorum.nodes.len(), 3, "v2 names each voter's controller listener");
    let quorum_leader = state.leader_id.0 as usize;
    let from_leader = RawConnection::open(&cluster.nodes[quorum_leader]).request(&describe, 2);
    let voters = &from_leader.topics[0].partitions[0].current_voters;
    assert!(voters.iter().all(|v| v.log_end_offset > 0), "the leader knows every voter's log end: {voters:?}");

    // The preferred replica leads already.
    assert_eq!(elect(&cluster.nodes[follower as usize], 0, TOPIC, 0), ELECTION_NOT_NEEDED);

    // SIGKILL partition 0's leader: another replica leads at a higher epoch, and the
    // dead broker leaves the brokers and every ISR.
    cluster.nodes[leader as usize].kill();
    let survivor = &cluster.nodes[follower as usize];
    let deadline = std::time::Instant::now() + FAILOVER_TIMEOUT;
    let last = loop {
        let response = metadata(survivor, Some(&[TOPIC]));
        let partitions = partitions_of(&response, TOPIC);
        let moved = !broker_ids(&response).contains(&leader)
            && partitions.len() == 3
            && partitions[0].leader_id.0 >= 0
            && partitions[0].leader_id.0 != leader
            && partitions[0].leader_epoch > old_epoch
            && partitions.iter().all(|p| p.isr_nodes.iter().all(|id| id.0 != leader))
            && partitions.iter().all(|p| p.offline_replicas.iter().any(|id| id.0 == leader));
        let last = (broker_ids(&response), partitions);
        if moved {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new leader of partition 0 without the killed broker {leader} after {FAILOVER_TIMEOUT:?}; \
             last (brokers, partitions): {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (brokers, partitions) = last;
    assert_eq!(brokers.len(), 2, "{brokers:?}");
    assert!(partitions[0].replica_nodes.iter().any(|id| id.0 == leader), "replicas stay assigned");
    // A consumer's Fetch that names the old leader epoch is fenced; one from the
    // future is unknown; the current one is served.
    let (new_leader, new_epoch) = (partitions[0].leader_id.0 as usize, partitions[0].leader_epoch);
    wait_until("the new leader to serve a Fetch in its epoch", SETTLE_TIMEOUT, || {
        fetch_code(&cluster.nodes[new_leader], TOPIC, new_epoch) == 0
    });
    assert_eq!(fetch_code(&cluster.nodes[new_leader], TOPIC, old_epoch), FENCED_LEADER_EPOCH);
    assert_eq!(fetch_code(&cluster.nodes[new_leader], TOPIC, new_epoch + 1), UNKNOWN_LEADER_EPOCH);
    assert_eq!(fetch_code(&cluster.nodes[new_leader], TOPIC, -1), 0, "no epoch: not checked");
    // Its preferred replica is dead: no preferred election is possible.
    assert_eq!(elect(survivor, 0, TOPIC, 0), ELIGIBLE_LEADERS_NOT_AVAILABLE);

    // DeleteTopics removes it from every live node's metadata.
    let admin = admin_client(survivor);
    let results = block_on(admin.delete_topics(&[TOPIC], &admin_options())).expect("DeleteTopics");
    assert_eq!(results, vec![Ok(TOPIC.to_string())]);
    for (id, node) in cluster.nodes.iter().enumerate().filter(|(id, _)| *id as i32 != leader) {
        wait_until(&format!("node {id} to forget the deleted topic"), SETTLE_TIMEOUT, || {
            let response = metadata(node, None);
            response.topics.iter().all(|t| t.name.as_ref().is_none_or(|n| n.0.as_str() != TOPIC))
        });
    }

    // Bad input: the killed node's data directory belongs to this cluster, not another.
    let killed = &cluster.nodes[leader as usize];
    let data_dir = killed.data_dir().display().to_string();
    let listen_args = ["--data-dir", data_dir.as_str(), "--listen", "127.0.0.1:0", "--cores", "1"];
    let other = node_args(leader, cluster.controller_ports[leader as usize], &cluster.voters, "another-cluster");
    let args: Vec<&str> = listen_args.iter().copied().chain(other.iter().map(String::as_str)).collect();
    let (status, log) = run_broker_expecting_exit(&args, Duration::from_secs(30));
    assert!(!status.success(), "started on another cluster's data:\n{log}");
    assert!(log.contains(&format!("belongs to cluster {CLUSTER_ID}, not another-cluster")), "{log}");

    // A node id that is not among the voters.
    let empty = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary data directory");
    let empty_dir = empty.path().display().to_string();
    let stranger = node_args(7, cluster.controller_ports[0], &cluster.voters, CLUSTER_ID);
    let listen_args = ["--data-dir", empty_dir.as_str(), "--listen", "127.0.0.1:0", "--cores", "1"];
    let args: Vec<&str> = listen_args.iter().copied().chain(stranger.iter().map(String::as_str)).collect();
    let (status, log) = run_broker_expecting_exit(&args, Duration::from_secs(30));
    assert!(!status.success(), "a node that is not a voter started:\n{log}");
    assert!(log.contains("node 7 is not among the voters"), "{log}");

    // Two brokers with one node id: a second node started with the running
    // `follower`'s id is refused, whether it takes that node's controller listener
    // (in use) or another one (not where the voters reach node `follower`).
    let twin_data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary data directory");
    let twin_dir = twin_data.path().display().to_string();
    let listen_args = ["--data-dir", twin_dir.as_str(), "--listen", "127.0.0.1:0", "--cores", "1"];
    let same_port = cluster.controller_ports[follower as usize];
    for (port, why) in [(same_port, "address in use"), (free_ports(1)[0], "voter entry is")] {
        let twin = node_args(follower, port, &cluster.voters, CLUSTER_ID);
        let args: Vec<&str> = listen_args.iter().copied().chain(twin.iter().map(String::as_str)).collect();
        let (status, log) = run_broker_expecting_exit(&args, Duration::from_secs(30));
        assert!(!status.success(), "a second node {follower} started:\n{log}");
        assert!(log.contains(why) && log.contains(&format!("node {follower}")), "{why}: {log}");
    }
    assert_eq!(broker_ids(&metadata(survivor, Some(&[]))).len(), 2, "the running node {follower} serves on");

    for (id, node) in cluster.nodes.iter_mut().enumerate() {
        if id as i32 != leader {
            node.stop();
        }
    }
}

#[test]
fn committed_offsets_outlive_a_killed_group_coordinator() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::FutureProducer;
    use rdkafka::{Message, Offset, TopicPartitionList};

    let _watchdog = Watchdog::new("cluster-groups", TEST_BOUND);
    let mut cluster = ClusterProcesses::start_live("cluster-groups", 3, CONFIG_YAML);
    let bootstrap = cluster.bootstrap();
    create_replicated_topic(&cluster.nodes[0], "orders", 1, 3, &[]);
    let producer: FutureProducer = client_config(&cluster.nodes[0])
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    let messages: Vec<Outgoing> = (0..100).map(|i| (None, format!("order-{i}").into_bytes())).collect();
    let outcomes = common::produce(&producer, "orders", Some(0), &messages, Duration::from_secs(30));
    expect_all_acknowledged("orders", &outcomes);

    let base_config = client_config(&cluster.nodes[0]);
    let consumer_of = |bootstrap: &str| -> BaseConsumer {
        base_config
            .clone()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "g")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer")
    };
    // A member of g reads 40 records and commits offset 40.
    let consumer = consumer_of(&bootstrap);
    consumer.subscribe(&["orders"]).expect("subscribe");
    let mut read = 0;
    wait_until("the first member to read 40 records", SETTLE_TIMEOUT, || {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("a record");
            assert_eq!(message.offset(), read, "records in order");
            read += 1;
        }
        read == 40
    });
    let mut commit = TopicPartitionList::new();
    commit.add_partition_offset("orders", 0, Offset::Offset(40)).expect("offset");
    consumer.commit(&commit, CommitMode::Sync).expect("commit");
    drop(consumer);

    // SIGKILL g's coordinator: the new leader of its offsets partition takes over
    // with the committed offset, which every in-sync replica had before the commit
    // was acknowledged.
    let coordinator = wait_for_coordinator(&cluster.nodes[0], "g", None);
    cluster.nodes[coordinator as usize].kill();
    let survivors: Vec<usize> = (0..3).filter(|id| *id != coordinator as usize).collect();
    let successor = wait_for_coordinator(&cluster.nodes[survivors[0]], "g", Some(coordinator));
    assert!(survivors.contains(&(successor as usize)), "{successor} coordinates g");
    let mut last = None;
    let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
    while last != Some((0, vec![("orders".to_string(), 0, 40)])) {
        assert!(std::time::Instant::now() < deadline, "OffsetFetch from the new coordinator: {last:?}");
        std::thread::sleep(Duration::from_millis(100));
        last = Some(offset_fetch(&cluster.nodes[successor as usize], "g"));
    }

    // A new member of g resumes at the committed offset.
    let survivors_bootstrap = survivors.iter().map(|id| cluster.nodes[*id].bootstrap()).collect::<Vec<_>>().join(",");
    let consumer = consumer_of(&survivors_bootstrap);
    consumer.subscribe(&["orders"]).expect("subscribe");
    let mut first = None;
    wait_until("the second member to read a record", SETTLE_TIMEOUT, || {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            first = Some(message.expect("a record").offset());
        }
        first.is_some()
    });
    assert_eq!(first, Some(40), "the new member starts at the committed offset");
    drop(consumer);
    for id in survivors {
        cluster.nodes[id].stop();
    }
}
