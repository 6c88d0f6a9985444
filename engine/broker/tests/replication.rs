//! Data replication with real brokers in one process: three `Broker`s on loopback,
//! each with its engine, quorum member and fetchers; Produce and DeleteRecords
//! requests sent the way a client sends them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{DeleteRecordsRequest, ProduceRequest, TopicName as WireTopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use corelog_broker::cluster::config::ClusterSettings;
use corelog_broker::cluster::controller::Placement;
use corelog_broker::cluster::peer::PeerConnection;
use corelog_broker::cluster::quorum::{ControllerReply, ControllerRequest};
use corelog_broker::cluster::records::NodeId;
use corelog_broker::{Broker, BrokerConfig};
use corelog_engine::batch::build_value_batch;
use corelog_engine::types::{Offset, PartitionId, TimestampMs, TopicName, TopicPartition};

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address")
}

fn start(node_id: NodeId, voters: &[(NodeId, String)], root: &Path) -> Broker {
    start_with(node_id, voters, root, |_| {})
}

/// [`start`], with `tweak` applied to the broker's config last.
fn start_with(
    node_id: NodeId,
    voters: &[(NodeId, String)],
    root: &Path,
    tweak: impl FnOnce(&mut BrokerConfig),
) -> Broker {
    let mut config = BrokerConfig::new(root.join(format!("broker{node_id}")));
    config.node_id = node_id;
    config.listen = free_address();
    config.engine.shard_count = 1;
    config.engine.cpus = corelog_engine::cpus::ShardCpus::Unpinned;
    config.cluster = ClusterSettings {
        controller_listener: Some(voters[node_id as usize].1.parse().expect("address")),
        voters: voters.to_vec(),
        cluster_id: Some("replication-test".to_string()),
        session_timeout_ms: 2_000,
        heartbeat_interval_ms: 200,
        replica_lag_time_max_ms: 2_000,
        default_replication_factor: 3,
        ..ClusterSettings::default()
    };
    tweak(&mut config);
    Broker::start(config).expect("broker starts")
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `request` through `broker`'s quorum member until an active controller answers.
fn controller(broker: &Broker, request: ControllerRequest) -> ControllerReply {
    let quorum = broker.cluster().expect("a cluster node").quorum();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match quorum.request(request.clone()) {
            ControllerReply::NotController { .. } | ControllerReply::TimedOut if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            reply => return reply,
        }
    }
}

fn partition(topic: &str) -> TopicPartition {
    TopicPartition::new(TopicName::new(topic).expect("name"), PartitionId(0))
}

/// Produces one batch of `count` records to partition 0 of `topic` through `broker`;
/// the partition's error and base offset.
fn produce(broker: &Broker, topic: &str, acks: i16, count: usize) -> (Option<ResponseError>, i64) {
    let address = broker.local_addr().to_string();
    let mut connection =
        PeerConnection::connect(&address, "replication-test", Duration::from_secs(20)).expect("connect");
    // Stamped now: the topic's age retention (7 days) deletes the active segment too.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    let records = build_value_batch(TimestampMs(now.as_millis() as i64), count, 100);
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(WireTopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))]),
    ]);
    let response = connection.request(&request, 7).expect("produce answered");
    let answer = &response.responses[0].partition_responses[0];
    (ResponseError::try_from_code(answer.error_code), answer.base_offset)
}

/// Every batch of the replica's log, and its high watermark.
fn replica_state(broker: &Broker, topic: &str) -> (Vec<u8>, i64) {
    let engine = broker.handle().expect("engine");
    let partition = partition(topic);
    let read = futures_lite::future::block_on(engine.read_replica(&partition, Offset(0), 64 << 20)).expect("read");
    let stats = futures_lite::future::block_on(engine.stats(&partition)).expect("stats");
    (read.bytes, stats.high_watermark.0)
}

/// Deletes the records of partition 0 of `topic` below `offset` through `broker`
/// (DeleteRecords); the partition's error and low watermark (its new log start).
fn delete_records(broker: &Broker, topic: &str, offset: i64) -> (Option<ResponseError>, i64) {
    let address = broker.local_addr().to_string();
    let mut connection =
        PeerConnection::connect(&address, "replication-test", Duration::from_secs(20)).expect("connect");
    let partitions = vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(offset)];
    let name = WireTopicName(StrBytes::from_string(topic.to_string()));
    let topics = vec![DeleteRecordsTopic::default().with_name(name).with_partitions(partitions)];
    let request = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(topics);
    let response = connection.request(&request, 2).expect("delete records answered");
    let answer = &response.topics[0].partitions[0];
    (ResponseError::try_from_code(answer.error_code), answer.low_watermark)
}

/// The replica's log start, log end and every batch from its log start; `None`
/// while a read races a move of its log start.
fn replica_log(broker: &Broker, topic: &str) -> Option<(i64, i64, Vec<u8>)> {
    let engine = broker.handle().expect("engine");
    let partition = partition(topic);
    let stats = futures_lite::future::block_on(engine.stats(&partition)).ok()?;
    let read = futures_lite::future::block_on(engine.read_replica(&partition, stats.log_start_offset, 64 << 20));
    let read = read.ok()?;
    Some((read.log_start_offset.0, read.log_end_offset.0, read.bytes))
}

fn leader_of(broker: &Broker, topic: &str) -> NodeId {
    broker.cluster().expect("cluster").image().partition(topic, 0).map_or(-1, |p| p.leader)
}

/// Waits until every broker sees all of `brokers` live.
fn wait_live(brokers: &BTreeMap<NodeId, Broker>) {
    wait_for("every broker live", Duration::from_secs(30), || {
        brokers.values().all(|b| b.cluster().expect("cluster").image().live_brokers().count() == brokers.len())
    });
}

/// Waits until `topic`/0 has a leader among `brokers` that takes an acks=all
/// produce (of 10 records); returns it.
fn wait_leader_taking_acks_all(brokers: &BTreeMap<NodeId, Broker>, topic: &str) -> NodeId {
    let observer = brokers.values().next().expect("a broker");
    wait_for("the topic's leader in the image", Duration::from_secs(20), || {
        brokers.contains_key(&leader_of(observer, topic))
    });
    let leader = leader_of(observer, topic);
    wait_for("the leader to take acks=all produces", Duration::from_secs(20), || {
        produce(&brokers[&leader], topic, -1, 10).0.is_none()
    });
    leader
}

#[test]
fn every_replica_holds_the_leaders_batches_and_acks_all_waits_for_the_in_sync_replicas() {
    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let mut brokers: BTreeMap<NodeId, Broker> = (0..3).map(|id| (id, start(id, &voters, root.path()))).collect();
    wait_live(&brokers);

    let create = ControllerRequest::CreateTopic {
        name: "orders".to_string(),
        placement: Placement::Spread { partitions: 1, replication_factor: 3 },
        configs: BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
    };
    let reply = controller(&brokers[&0], create);
    assert!(matches!(reply, ControllerReply::Done { .. }), "{reply:?}");
    wait_for("the topic's leader in the image", Duration::from_secs(20), || {
        brokers.contains_key(&leader_of(&brokers[&0], "orders"))
    });
    let leader = leader_of(&brokers[&0], "orders");

    // acks=all: answered once every in-sync replica has the batch.
    wait_for("the leader to take acks=all produces", Duration::from_secs(20), || {
        produce(&brokers[&leader], "orders", -1, 10).0.is_none()
    });
    for round in 0..20 {
        let acks = if round % 2 == 0 { 1 } else { -1 };
        let (error, _) = produce(&brokers[&leader], "orders", acks, 10);
        assert_eq!(error, None, "round {round}, acks {acks}");
    }
    let (leader_log, leader_high_watermark) = replica_state(&brokers[&leader], "orders");
    assert_eq!(leader_high_watermark, 210, "every append acknowledged is below the high watermark");
    wait_for("every replica to hold the same batches and high watermark", Duration::from_secs(20), || {
        brokers.values().all(|b| replica_state(b, "orders") == (leader_log.clone(), leader_high_watermark))
    });

    // A follower's batches are the leader's, byte for byte; a produce to it is refused.
    let follower = *brokers.keys().find(|id| **id != leader).expect("a follower");
    assert_eq!(produce(&brokers[&follower], "orders", 1, 1).0, Some(ResponseError::NotLeaderOrFollower));

    // A topic on the leader and that follower only, which needs both in sync.
    let pair = ControllerRequest::CreateTopic {
        name: "pair".to_string(),
        placement: Placement::Manual(vec![vec![leader, follower]]),
        configs: BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
    };
    assert!(matches!(controller(&brokers[&0], pair), ControllerReply::Done { .. }));
    wait_for("the pair's leader to take acks=all produces", Duration::from_secs(20), || {
        produce(&brokers[&leader], "pair", -1, 5).0.is_none()
    });

    // The follower stops: each ISR loses it. Two in sync are still enough for
    // "orders"; one is fewer than "pair" needs.
    brokers.remove(&follower).expect("follower").shutdown().expect("clean shutdown");
    wait_for("the stopped follower out of the ISRs", Duration::from_secs(20), || {
        let image = brokers[&leader].cluster().expect("cluster").image();
        ["orders", "pair"].iter().all(|t| !image.partition(t, 0).expect("partition").isr.contains(&follower))
    });
    assert_eq!(produce(&brokers[&leader], "orders", -1, 10).0, None);
    wait_for("acks=all to pair refused with NOT_ENOUGH_REPLICAS", Duration::from_secs(20), || {
        produce(&brokers[&leader], "pair", -1, 1).0 == Some(ResponseError::NotEnoughReplicas)
    });
    assert_eq!(produce(&brokers[&leader], "pair", 1, 3).0, None, "acks=1 is still taken");

    for (_, broker) in brokers {
        broker.shutdown().expect("clean shutdown");
    }
}

/// Kafka's `truncateFullyAndStartAt` and `maybeIncrementLogStartOffset`: a follower
/// away while the leader deleted past its log end restarts its log at the leader's
/// log start and catches up from there, and followers move their log start up to
/// the leader's.
#[test]
fn a_follower_behind_the_leaders_log_start_starts_there_and_followers_follow_the_log_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let mut brokers: BTreeMap<NodeId, Broker> = (0..3).map(|id| (id, start(id, &voters, root.path()))).collect();
    wait_live(&brokers);
    let create = ControllerRequest::CreateTopic {
        name: "trimmed".to_string(),
        placement: Placement::Spread { partitions: 1, replication_factor: 3 },
        configs: BTreeMap::new(),
    };
    assert!(matches!(controller(&brokers[&0], create), ControllerReply::Done { .. }));
    let leader = wait_leader_taking_acks_all(&brokers, "trimmed");
    for _ in 0..2 {
        assert_eq!(produce(&brokers[&leader], "trimmed", -1, 10).0, None);
    }
    let same_as_leader = |brokers: &BTreeMap<NodeId, Broker>, ids: &[NodeId], start: i64, end: i64| {
        let leader_log = replica_log(&brokers[&leader], "trimmed");
        let expected = leader_log.filter(|(s, e, _)| (*s, *e) == (start, end));
        expected.is_some() && ids.iter().all(|id| replica_log(&brokers[id], "trimmed") == expected)
    };
    let followers: Vec<NodeId> = brokers.keys().copied().filter(|id| *id != leader).collect();
    wait_for("every replica to hold offsets 0 to 30", Duration::from_secs(20), || {
        same_as_leader(&brokers, &followers, 0, 30)
    });

    // One follower stops with offsets 0 to 30; the leader goes on to 60, then
    // deletes up to 45, past the stopped follower's log end.
    let (stopped, stayed) = (followers[0], followers[1]);
    brokers.remove(&stopped).expect("follower").shutdown().expect("clean shutdown");
    wait_for("the stopped follower out of the ISR", Duration::from_secs(20), || {
        let image = brokers[&leader].cluster().expect("cluster").image();
        !image.partition("trimmed", 0).expect("partition").isr.contains(&stopped)
    });
    for _ in 0..3 {
        assert_eq!(produce(&brokers[&leader], "trimmed", -1, 10).0, None);
    }
    assert_eq!(delete_records(&brokers[&leader], "trimmed", 45), (None, 45));

    // The follower that stayed up takes the leader's log start from its fetches
    // (45 is inside the batch 40..50, which it keeps).
    wait_for("the follower that stayed up to start at 45 too", Duration::from_secs(20), || {
        same_as_leader(&brokers, &[stayed], 45, 60)
    });

    // Restarted on its data, it finds the leader's log starting past its end (at 30,
    // or at 0 when the restarted reconciler's first, empty, metadata image had the
    // topic deleted and created again): its log restarts empty at 45, then at 40 to
    // take the batch that holds 45, and its log start follows the leader's to 45.
    brokers.insert(stopped, start(stopped, &voters, root.path()));
    wait_for("the restarted follower to hold the leader's log from 45 to 60", Duration::from_secs(30), || {
        same_as_leader(&brokers, &[stopped], 45, 60)
    });
    wait_for("the restarted follower back in the ISR", Duration::from_secs(20), || {
        let image = brokers[&leader].cluster().expect("cluster").image();
        image.partition("trimmed", 0).expect("partition").isr.contains(&stopped)
    });

    // Both followers follow the next move.
    assert_eq!(produce(&brokers[&leader], "trimmed", -1, 10).0, None);
    assert_eq!(delete_records(&brokers[&leader], "trimmed", 65), (None, 65));
    wait_for("both followers to start at 65", Duration::from_secs(20), || same_as_leader(&brokers, &followers, 65, 70));

    for (_, broker) in brokers {
        broker.shutdown().expect("clean shutdown");
    }
}

/// A broker's reconciler acts only on metadata replayed up to what it had applied
/// before it stopped: an older image (the empty one before the replay, or the
/// snapshot's) lacks the topics created since and would have the broker delete
/// them. With every broker restarted at once, that deleted the topic's data on all.
#[test]
fn a_whole_cluster_restarted_at_once_keeps_every_acknowledged_record() {
    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let start_all = |voters: &[(NodeId, String)]| -> BTreeMap<NodeId, Broker> {
        // In parallel: a node's start waits for a quorum leader, which needs the others.
        let starting: Vec<_> = (0..3)
            .map(|id| {
                let (voters, root) = (voters.to_vec(), root.path().to_path_buf());
                std::thread::spawn(move || (id, start(id, &voters, &root)))
            })
            .collect();
        starting.into_iter().map(|t| t.join().expect("a broker started")).collect()
    };
    let brokers = start_all(&voters);
    wait_live(&brokers);
    let create = ControllerRequest::CreateTopic {
        name: "kept".to_string(),
        placement: Placement::Spread { partitions: 1, replication_factor: 3 },
        configs: BTreeMap::new(),
    };
    assert!(matches!(controller(&brokers[&0], create), ControllerReply::Done { .. }));
    let leader = wait_leader_taking_acks_all(&brokers, "kept");
    for _ in 0..2 {
        assert_eq!(produce(&brokers[&leader], "kept", -1, 10).0, None);
    }
    let before = replica_state(&brokers[&leader], "kept");
    assert_eq!(before.1, 30);
    wait_for("every replica to hold the 30 records", Duration::from_secs(20), || {
        brokers.values().all(|b| replica_state(b, "kept") == before)
    });

    // Every broker stops, then all start again on their data.
    let stopping: Vec<_> = brokers
        .into_values()
        .map(|broker| std::thread::spawn(move || broker.shutdown().expect("clean shutdown")))
        .collect();
    for stopped in stopping {
        stopped.join().expect("a broker stopped");
    }
    let brokers = start_all(&voters);
    wait_for("a leader of the topic again", Duration::from_secs(30), || {
        brokers.contains_key(&leader_of(&brokers[&0], "kept"))
    });
    let leader = leader_of(&brokers[&0], "kept");
    wait_for("the new leader to hold all 30 acknowledged records", Duration::from_secs(20), || {
        replica_state(&brokers[&leader], "kept") == before
    });
    for (_, broker) in brokers {
        broker.shutdown().expect("clean shutdown");
    }
}

/// Kafka's `auto.leader.rebalance.enable`: a preferred replica that comes back and
/// catches up is given its leadership back by the controller's periodic check.
#[test]
fn a_preferred_replica_that_comes_back_leads_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let quick_rebalance = |config: &mut BrokerConfig| {
        config.cluster.leader_imbalance_check_interval_s = 1;
        config.cluster.leader_imbalance_percentage = 0;
    };
    let mut brokers: BTreeMap<NodeId, Broker> =
        (0..3).map(|id| (id, start_with(id, &voters, root.path(), quick_rebalance))).collect();
    wait_live(&brokers);
    let create = ControllerRequest::CreateTopic {
        name: "preferred".to_string(),
        placement: Placement::Manual(vec![vec![0, 1, 2]]),
        configs: BTreeMap::new(),
    };
    assert!(matches!(controller(&brokers[&1], create), ControllerReply::Done { .. }));
    wait_for("broker 0, the preferred replica, to lead", Duration::from_secs(20), || {
        leader_of(&brokers[&1], "preferred") == 0
    });
    // Broker 0 stops (its leadership moves first) and starts again on its data.
    brokers.remove(&0).expect("broker 0").shutdown().expect("clean shutdown");
    wait_for("another leader", Duration::from_secs(20), || {
        // Node ids start at 0 and -1 is none: any leader but broker 0.
        leader_of(&brokers[&1], "preferred") > 0
    });
    brokers.insert(0, start_with(0, &voters, root.path(), quick_rebalance));
    wait_for("broker 0 back in the ISR and leading again", Duration::from_secs(30), || {
        let image = brokers[&1].cluster().expect("cluster").image();
        image.partition("preferred", 0).is_some_and(|p| p.leader == 0 && p.isr.contains(&0))
    });
    for (_, broker) in brokers {
        broker.shutdown().expect("clean shutdown");
    }
}

/// AlterPartitionReassignments moves a partition's replicas as Kafka does (KIP-455);
/// a move that cannot finish (its new replica's broker is down) is listed in
/// progress until cancelled.
#[test]
fn a_partition_moves_to_other_brokers_and_a_stuck_move_can_be_cancelled() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest};

    let reassign = |broker: &Broker, replicas: Option<Vec<i32>>| -> i16 {
        let address = broker.local_addr().to_string();
        let mut connection =
            PeerConnection::connect(&address, "replication-test", Duration::from_secs(20)).expect("connect");
        let partition = ReassignablePartition::default()
            .with_partition_index(0)
            .with_replicas(replicas.map(|ids| ids.into_iter().map(BrokerId).collect()));
        let topic = ReassignableTopic::default()
            .with_name(WireTopicName(StrBytes::from_static_str("moving")))
            .with_partitions(vec![partition]);
        let request = AlterPartitionReassignmentsRequest::default().with_timeout_ms(10_000).with_topics(vec![topic]);
        let response = connection.request(&request, 0).expect("AlterPartitionReassignments answered");
        assert_eq!(response.error_code, 0, "{:?}", response.error_message);
        response.responses[0].partitions[0].error_code
    };
    let in_progress = |broker: &Broker| -> Vec<(Vec<i32>, Vec<i32>, Vec<i32>)> {
        let address = broker.local_addr().to_string();
        let mut connection =
            PeerConnection::connect(&address, "replication-test", Duration::from_secs(20)).expect("connect");
        let response =
            connection.request(&ListPartitionReassignmentsRequest::default().with_topics(None), 0).expect("answered");
        let ids = |nodes: &[BrokerId]| nodes.iter().map(|id| id.0).collect::<Vec<_>>();
        response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (ids(&p.replicas), ids(&p.adding_replicas), ids(&p.removing_replicas)))
            .collect()
    };

    let root = tempfile::tempdir().expect("tempdir");
    let voters: Vec<(NodeId, String)> = (0..3).map(|id| (id, free_address().to_string())).collect();
    let mut brokers: BTreeMap<NodeId, Broker> = (0..3).map(|id| (id, start(id, &voters, root.path()))).collect();
    wait_live(&brokers);
    let create = ControllerRequest::CreateTopic {
        name: "moving".to_string(),
        placement: Placement::Manual(vec![vec![0, 1]]),
        configs: BTreeMap::new(),
    };
    assert!(matches!(controller(&brokers[&1], create), ControllerReply::Done { .. }));
    wait_for("broker 0 to lead and take acks=all", Duration::from_secs(20), || {
        leader_of(&brokers[&1], "moving") == 0 && produce(&brokers[&0], "moving", -1, 10).0.is_none()
    });
    for _ in 0..2 {
        assert_eq!(produce(&brokers[&0], "moving", -1, 10).0, None);
    }
    let before = replica_state(&brokers[&0], "moving");
    assert_eq!(before.1, 30);

    // Broker 2 is down: a move onto it starts but cannot finish, and is listed.
    brokers.remove(&2).expect("broker 2").shutdown().expect("clean shutdown");
    assert_eq!(reassign(&brokers[&1], Some(vec![1, 2])), 0);
    assert_eq!(in_progress(&brokers[&1]), vec![(vec![1, 2, 0], vec![2], vec![0])]);
    assert_eq!(reassign(&brokers[&1], None), 0, "cancelled");
    wait_for("the cancelled move to leave the list", Duration::from_secs(10), || in_progress(&brokers[&1]).is_empty());
    let image = brokers[&1].cluster().expect("cluster").image();
    // Back on brokers 0 and 1, in the order the move left them (the target first),
    // as Kafka's revert leaves them.
    assert_eq!(image.partition("moving", 0).map(|p| p.replicas.clone()), Some(vec![1, 0]));
    assert_eq!(reassign(&brokers[&1], None), ResponseError::NoReassignmentInProgress.code());
    assert_eq!(reassign(&brokers[&1], Some(vec![1, 7])), ResponseError::InvalidReplicaAssignment.code());

    // With broker 2 back, the move finishes: 2 holds the records, 1 leads, 0 lets go.
    brokers.insert(2, start(2, &voters, root.path()));
    wait_for("broker 2 live again", Duration::from_secs(30), || {
        brokers[&1].cluster().expect("cluster").image().live_brokers().count() == 3
    });
    assert_eq!(reassign(&brokers[&1], Some(vec![1, 2])), 0);
    wait_for("the move to finish", Duration::from_secs(30), || {
        let image = brokers[&1].cluster().expect("cluster").image();
        image.partition("moving", 0).is_some_and(|p| p.replicas == [1, 2] && p.adding.is_empty() && p.leader == 1)
    });
    wait_for("broker 2 to hold the 30 records", Duration::from_secs(20), || {
        replica_state(&brokers[&2], "moving") == before && replica_state(&brokers[&1], "moving") == before
    });
    wait_for("broker 0 to drop its replica", Duration::from_secs(20), || {
        brokers[&0].handle().expect("engine").topic(&TopicName::new("moving").expect("name")).is_none()
    });
    assert!(in_progress(&brokers[&1]).is_empty());
    // Broker 1 takes the lead once its reconciler applies the change (a client
    // gets NOT_LEADER_OR_FOLLOWER until then and retries).
    wait_for("the new leader to take acks=all", Duration::from_secs(20), || {
        produce(&brokers[&1], "moving", -1, 10).0.is_none()
    });
    for (_, broker) in brokers {
        broker.shutdown().expect("clean shutdown");
    }
}
