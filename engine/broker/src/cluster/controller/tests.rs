use proptest::prelude::*;

use super::*;

/// An active controller and the image its committed records build, each record
/// committed at the next index as the quorum would.
struct Cluster {
    controller: Controller,
    image: MetadataImage,
    now_ms: u64,
}

impl Cluster {
    fn new(brokers: i32) -> Cluster {
        let config =
            ControllerConfig { session_timeout_ms: 1_000, producer_id_block: 100, ..ControllerConfig::default() };
        let mut cluster =
            Cluster { controller: Controller::new(config, 7), image: MetadataImage::default(), now_ms: 0 };
        let records = cluster.controller.activate(&cluster.image, 0, "c");
        cluster.commit(records);
        for node_id in 0..brokers {
            cluster.start(node_id);
        }
        cluster
    }

    fn commit(&mut self, records: Vec<MetadataRecord>) {
        for record in records {
            let index = self.image.applied_index + 1;
            self.image.apply(index, &record).unwrap_or_else(|e| panic!("{record:?} does not apply: {e}"));
        }
    }

    /// Registers `node_id` and heartbeats it until unfenced.
    fn start(&mut self, node_id: NodeId) {
        let records = self.controller.register(&self.image, node_id, "127.0.0.1", 9092 + node_id as u16, self.now_ms);
        self.commit(records);
        self.beat(node_id, false);
    }

    fn epoch(&self, node_id: NodeId) -> u64 {
        self.image.brokers[&node_id].epoch
    }

    fn beat(&mut self, node_id: NodeId, want_shutdown: bool) -> HeartbeatReply {
        let heartbeat = Heartbeat { node_id, epoch: self.epoch(node_id), caught_up: true, want_shutdown };
        let (reply, records) = self.controller.heartbeat(&self.image, heartbeat, self.now_ms).expect("heartbeat");
        self.commit(records);
        reply
    }

    /// Time passes; the brokers in `alive` heartbeat, the others do not.
    fn pass(&mut self, ms: u64, alive: &[NodeId]) {
        self.now_ms += ms;
        for node_id in alive {
            if self.image.brokers.contains_key(node_id) {
                self.beat(*node_id, false);
            }
        }
        let records = self.controller.expire_sessions(&self.image, self.now_ms);
        self.commit(records);
    }

    fn create(&mut self, name: &str, partitions: i32, replication_factor: i32) {
        let placement = Placement::Spread { partitions, replication_factor };
        let records = self.controller.create_topic(&self.image, name, placement, BTreeMap::new()).expect("create");
        self.commit(records);
    }

    fn partition(&self, name: &str, index: i32) -> PartitionImage {
        self.image.partition(name, index).expect("partition").clone()
    }

    fn alter(&mut self, name: &str, index: i32, isr: &[NodeId]) -> Result<(), ControllerError> {
        let p = self.partition(name, index);
        let change = AlterPartition {
            node_id: p.leader,
            broker_epoch: self.epoch(p.leader),
            topic_id: self.image.topic(name).expect("topic").id,
            partition: index,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.to_vec(),
        };
        let records = self.controller.alter_partition(&self.image, change)?;
        self.commit(records);
        Ok(())
    }
}

#[test]
fn a_topic_spreads_distinct_replicas_over_the_live_brokers_and_its_first_replica_leads() {
    let mut cluster = Cluster::new(3);
    cluster.create("t", 6, 3);
    let mut leaders = BTreeMap::new();
    for (_, _, p) in cluster.image.partitions() {
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        assert_eq!(distinct.len(), 3, "{p:?}");
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "leaders spread evenly");
    let placement = Placement::Spread { partitions: 1, replication_factor: 4 };
    let error = cluster.controller.create_topic(&cluster.image, "u", placement, BTreeMap::new());
    assert!(matches!(error, Err(ControllerError::InvalidReplicationFactor(_))), "{error:?}");
    let placement = Placement::Spread { partitions: 1, replication_factor: 1 };
    let error = cluster.controller.create_topic(&cluster.image, "t", placement, BTreeMap::new());
    assert_eq!(error, Err(ControllerError::TopicExists("t".to_string())));
}

#[test]
fn a_broker_that_misses_its_heartbeats_is_fenced_and_the_next_in_sync_replica_leads() {
    let mut cluster = Cluster::new(3);
    cluster.create("t", 1, 3);
    let before = cluster.partition("t", 0);
    let old_leader = before.leader;
    let others: Vec<NodeId> = (0..3).filter(|id| *id != old_leader).collect();
    cluster.pass(600, &others);
    assert!(cluster.image.is_live(old_leader), "within its session");
    cluster.pass(600, &others);
    assert!(!cluster.image.is_live(old_leader), "fenced after 1 200 ms of silence");
    let after = cluster.partition("t", 0);
    assert_eq!(after.leader, before.replicas[1]);
    assert_eq!(after.isr, before.replicas[1..].to_vec());
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
}

#[test]
fn the_last_in_sync_replica_keeps_its_place_and_leads_again_when_it_returns() {
    let mut cluster = Cluster::new(3);
    cluster.create("t", 1, 3);
    let leader = cluster.partition("t", 0).leader;
    cluster.alter("t", 0, &[leader]).expect("shrink to the leader alone");
    cluster.pass(1_500, &[]);
    let p = cluster.partition("t", 0);
    assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![leader]), "no clean leader left");
    // The out-of-sync followers heartbeat again: still no leader, they may have
    // missed committed data.
    let followers: Vec<NodeId> = (0..3).filter(|id| *id != leader).collect();
    for follower in &followers {
        cluster.start(*follower);
    }
    assert_eq!(cluster.partition("t", 0).leader, NO_LEADER);
    cluster.start(leader);
    let p = cluster.partition("t", 0);
    assert_eq!((p.leader, p.isr), (leader, vec![leader]));
}

#[test]
fn with_unclean_election_allowed_an_out_of_sync_replica_leads_alone() {
    let mut cluster = Cluster::new(3);
    let configs = BTreeMap::from([(UNCLEAN_LEADER_ELECTION.to_string(), "true".to_string())]);
    let placement = Placement::Manual(vec![vec![0, 1, 2]]);
    let records = cluster.controller.create_topic(&cluster.image, "t", placement, configs).expect("create");
    cluster.commit(records);
    cluster.alter("t", 0, &[0]).expect("shrink");
    cluster.pass(1_500, &[1, 2]);
    let p = cluster.partition("t", 0);
    assert_eq!((p.leader, p.isr), (1, vec![1]));

    // The out-of-sync replicas were away too when the last in-sync one died: the
    // first of them to come back leads, alone.
    let mut away = Cluster::new(3);
    let configs = BTreeMap::from([(UNCLEAN_LEADER_ELECTION.to_string(), "true".to_string())]);
    let placement = Placement::Manual(vec![vec![0, 1, 2]]);
    let records = away.controller.create_topic(&away.image, "t", placement, configs).expect("create");
    away.commit(records);
    away.alter("t", 0, &[0]).expect("shrink");
    away.pass(1_500, &[0]);
    assert_eq!(away.partition("t", 0).leader, 0, "1 and 2 are fenced; 0 still leads");
    away.pass(1_500, &[]);
    assert!(!away.partition("t", 0).has_leader(), "no live replica at all");
    away.start(2);
    let p = away.partition("t", 0);
    assert_eq!((p.leader, p.isr), (2, vec![2]), "broker 2 came back first and leads uncleanly");

    // Without the topic's consent a returning out-of-sync replica does not lead.
    let mut clean = Cluster::new(3);
    let placement = Placement::Manual(vec![vec![0, 1, 2]]);
    let records = clean.controller.create_topic(&clean.image, "t", placement, BTreeMap::new()).expect("create");
    clean.commit(records);
    clean.alter("t", 0, &[0]).expect("shrink");
    clean.pass(1_500, &[0]);
    clean.pass(1_500, &[]);
    clean.start(2);
    assert!(!clean.partition("t", 0).has_leader(), "only broker 0, the last in sync, may lead");
}

#[test]
fn alter_partition_is_refused_from_a_stale_leader_or_for_an_ineligible_isr() {
    let mut cluster = Cluster::new(3);
    cluster.create("t", 1, 3);
    let p = cluster.partition("t", 0);
    let (leader, follower) = (p.leader, p.replicas[1]);
    let change = |p: &PartitionImage, cluster: &Cluster, isr: Vec<NodeId>| AlterPartition {
        node_id: p.leader,
        broker_epoch: cluster.epoch(p.leader),
        topic_id: cluster.image.topic("t").expect("topic").id,
        partition: 0,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr,
    };
    let image = cluster.image.clone();
    let stale_version = AlterPartition { partition_epoch: p.partition_epoch - 1, ..change(&p, &cluster, vec![leader]) };
    let refused = cluster.controller.alter_partition(&image, stale_version);
    assert!(matches!(refused, Err(ControllerError::InvalidUpdateVersion { .. })), "{refused:?}");
    let old_epoch = AlterPartition { leader_epoch: p.leader_epoch - 1, ..change(&p, &cluster, vec![leader]) };
    let refused = cluster.controller.alter_partition(&image, old_epoch);
    assert!(matches!(refused, Err(ControllerError::FencedLeaderEpoch { .. })), "{refused:?}");
    let not_leader = AlterPartition {
        node_id: follower,
        broker_epoch: cluster.epoch(follower),
        ..change(&p, &cluster, vec![follower])
    };
    assert_eq!(cluster.controller.alter_partition(&image, not_leader), Err(ControllerError::NotLeader(follower)));
    let stale_broker = AlterPartition { broker_epoch: 1, ..change(&p, &cluster, vec![leader]) };
    assert!(matches!(
        cluster.controller.alter_partition(&image, stale_broker),
        Err(ControllerError::StaleBrokerEpoch { .. })
    ));
    assert!(matches!(cluster.alter("t", 0, &[follower]), Err(ControllerError::IneligibleReplica(_))), "leader missing");
    assert!(matches!(cluster.alter("t", 0, &[leader, 9]), Err(ControllerError::IneligibleReplica(_))), "not a replica");

    cluster.alter("t", 0, &[leader]).expect("shrink");
    let shrunk = cluster.partition("t", 0);
    assert_eq!((shrunk.isr.clone(), shrunk.partition_epoch, shrunk.leader_epoch), (vec![leader], 1, 0));
    // A fenced replica may not join; a live one may.
    let third = p.replicas[2];
    let alive: Vec<NodeId> = (0..3).filter(|id| *id != third).collect();
    cluster.pass(1_500, &alive);
    assert!(matches!(cluster.alter("t", 0, &[leader, third]), Err(ControllerError::IneligibleReplica(_))));
    cluster.alter("t", 0, &[follower, leader]).expect("expand");
    assert_eq!(cluster.partition("t", 0).isr, vec![leader, follower], "kept in replica order");
}

#[test]
fn a_controlled_shutdown_hands_leadership_over_before_the_broker_is_fenced() {
    let mut cluster = Cluster::new(3);
    cluster.create("t", 3, 3);
    let reply = cluster.beat(0, true);
    assert!(!reply.shutdown_ready);
    assert!(cluster.image.partitions().all(|(_, _, p)| p.leader != 0 && !p.isr.contains(&0)));
    assert!(!cluster.image.is_live(0));
    let reply = cluster.beat(0, true);
    assert!(reply.fenced && reply.shutdown_ready);
}

#[test]
fn a_new_active_controller_gives_every_broker_a_fresh_session() {
    let mut cluster = Cluster::new(3);
    cluster.now_ms = 50_000;
    let config = ControllerConfig { session_timeout_ms: 1_000, producer_id_block: 100, ..ControllerConfig::default() };
    let mut successor = Controller::new(config, 8);
    assert!(successor.activate(&cluster.image, cluster.now_ms, "c").is_empty(), "the cluster id is in the log");
    assert!(successor.expire_sessions(&cluster.image, cluster.now_ms + 900).is_empty());
    assert_eq!(successor.expire_sessions(&cluster.image, cluster.now_ms + 1_100).len(), 3);
}

#[test]
fn a_restarted_broker_gets_a_new_epoch_and_requests_of_its_old_life_are_refused() {
    let mut cluster = Cluster::new(2);
    cluster.create("t", 1, 2);
    let old = cluster.epoch(1);
    cluster.start(1);
    assert!(cluster.epoch(1) > old);
    let heartbeat = Heartbeat { node_id: 1, epoch: old, caught_up: true, want_shutdown: false };
    let refused = cluster.controller.heartbeat(&cluster.image, heartbeat, cluster.now_ms);
    assert_eq!(refused.map(|_| ()), Err(ControllerError::StaleBrokerEpoch { node_id: 1, epoch: old }));
    let ids = cluster.controller.allocate_producer_ids(&cluster.image, 1, old);
    assert!(ids.is_err());
    let (first, count, records) =
        cluster.controller.allocate_producer_ids(&cluster.image, 1, cluster.epoch(1)).expect("ids");
    cluster.commit(records);
    let (next, _, _) = cluster.controller.allocate_producer_ids(&cluster.image, 0, cluster.epoch(0)).expect("ids");
    assert_eq!((first, count, next), (0, 100, 100), "blocks never overlap");
}

#[test]
fn preferred_election_gives_leadership_back_to_the_first_replica() {
    let mut cluster = Cluster::new(3);
    let placement = Placement::Manual(vec![vec![0, 1, 2]]);
    let records = cluster.controller.create_topic(&cluster.image, "t", placement, BTreeMap::new()).expect("create");
    cluster.commit(records);
    let partitions = [("t".to_string(), 0)];
    let (results, _) = cluster.controller.elect_leaders(&cluster.image, Election::Preferred, &partitions);
    assert!(matches!(results[0], Err(ControllerError::ElectionNotNeeded { .. })));
    cluster.pass(1_500, &[1, 2]);
    assert_eq!(cluster.partition("t", 0).leader, 1);
    cluster.start(0);
    cluster.alter("t", 0, &[0, 1, 2]).expect("0 caught up");
    let (results, records) = cluster.controller.elect_leaders(&cluster.image, Election::Preferred, &partitions);
    assert_eq!(results, vec![Ok(())]);
    cluster.commit(records);
    assert_eq!(cluster.partition("t", 0).leader, 0);
}

/// What may happen to the cluster between two checks of the invariants.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes; the brokers whose bit is set heartbeat.
    Pass {
        ms: u64,
        alive: u8,
    },
    Restart(NodeId),
    Create {
        partitions: i32,
        replication_factor: i32,
    },
    /// The leader of the n-th partition shrinks its ISR to itself or grows it back.
    Alter {
        nth: usize,
        shrink: bool,
    },
    Shutdown(NodeId),
    /// The periodic check of leadership imbalance runs.
    Rebalance,
    /// The n-th partition is moved to the brokers whose bit is set (in id order,
    /// rotated by `rotate`), or its move cancelled (no bit set); then finished moves
    /// complete.
    Reassign {
        nth: usize,
        brokers: u8,
        rotate: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..1_500, any::<u8>()).prop_map(|(ms, alive)| Step::Pass { ms, alive }),
        1 => (0..4).prop_map(Step::Restart),
        1 => (1..4, 1..4).prop_map(|(partitions, replication_factor)| Step::Create { partitions, replication_factor }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(nth, shrink)| Step::Alter { nth, shrink }),
        1 => (0..4).prop_map(Step::Shutdown),
        1 => Just(Step::Rebalance),
        2 => (any::<usize>(), any::<u8>(), 0usize..4).prop_map(|(nth, brokers, rotate)| Step::Reassign { nth, brokers, rotate }),
    ]
}

/// What must hold after every committed step, whatever the steps were.
fn check_invariants(image: &MetadataImage, leader_epochs: &mut BTreeMap<(String, i32), (NodeId, i32)>) {
    for (topic, index, p) in image.partitions() {
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        assert_eq!(distinct.len(), p.replicas.len(), "{p:?}");
        assert!(!p.isr.is_empty(), "an ISR is never empty: {p:?}");
        assert!(p.isr.iter().all(|r| p.replicas.contains(r)), "ISR within the replicas: {p:?}");
        assert!(p.adding.iter().chain(&p.removing).all(|r| p.replicas.contains(r)), "moves within the replicas: {p:?}");
        assert!(p.adding.iter().all(|r| !p.removing.contains(r)), "adding and removing apart: {p:?}");
        if p.has_leader() {
            assert!(p.isr.contains(&p.leader), "the leader is in sync: {p:?}");
            assert!(image.is_live(p.leader), "the leader is live: {p:?}");
        }
        if p.isr.len() > 1 {
            assert!(p.isr.iter().all(|r| image.is_live(*r)), "fenced brokers leave ISRs but the last: {p:?}");
        }
        let key = (topic.name.clone(), index);
        if let Some((leader, epoch)) = leader_epochs.get(&key) {
            assert!(p.leader_epoch >= *epoch, "leader epochs never go back: {p:?}");
            if p.leader != *leader {
                assert!(p.leader_epoch > *epoch, "a new leader has a new epoch: {p:?}");
            }
        }
        leader_epochs.insert(key, (p.leader, p.leader_epoch));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Without unclean election, whatever happens (leadership given back to
    /// preferred replicas among it), a partition is led only by a live broker from
    /// its ISR, and leader epochs only rise.
    #[test]
    fn leadership_stays_within_live_in_sync_replicas(steps in proptest::collection::vec(step(), 1..60)) {
        let mut cluster = Cluster::new(4);
        let mut leader_epochs = BTreeMap::new();
        let mut topics = 0;
        // The imbalance check runs on its own clock: each step is one interval later.
        let interval = ControllerConfig::default().leader_imbalance_check_interval_ms.expect("on by default");
        let mut rebalance_at = 0;
        for step in steps {
            match step {
                Step::Pass { ms, alive } => {
                    let alive: Vec<NodeId> = (0..4).filter(|id| alive & (1 << id) != 0).collect();
                    cluster.pass(ms, &alive);
                }
                Step::Restart(node_id) => cluster.start(node_id),
                Step::Create { partitions, replication_factor } => {
                    let placement = Placement::Spread { partitions, replication_factor };
                    let name = format!("t{topics}");
                    if let Ok(records) = cluster.controller.create_topic(&cluster.image, &name, placement, BTreeMap::new()) {
                        cluster.commit(records);
                        topics += 1;
                    }
                }
                Step::Alter { nth, shrink } => {
                    let led: Vec<(String, i32, PartitionImage)> = cluster
                        .image
                        .partitions()
                        .filter(|(_, _, p)| p.has_leader())
                        .map(|(t, i, p)| (t.name.clone(), i, p.clone()))
                        .collect();
                    if let Some((name, index, p)) = led.get(nth % led.len().max(1)) {
                        let isr = if shrink { vec![p.leader] } else { p.replicas.clone() };
                        // Growing may be refused (a fenced replica); shrinking never is.
                        let result = cluster.alter(name, *index, &isr);
                        prop_assert!(!shrink || result.is_ok(), "{result:?}");
                    }
                }
                Step::Shutdown(node_id) => {
                    if cluster.image.brokers.contains_key(&node_id) {
                        cluster.beat(node_id, true);
                    }
                }
                Step::Rebalance => {
                    rebalance_at += interval;
                    let records = cluster.controller.rebalance_leaders(&cluster.image, rebalance_at);
                    cluster.commit(records);
                }
                Step::Reassign { nth, brokers, rotate } => {
                    let partitions: Vec<(String, i32)> =
                        cluster.image.partitions().map(|(t, i, _)| (t.name.clone(), i)).collect();
                    if let Some((name, index)) = partitions.get(nth % partitions.len().max(1)) {
                        let mut target: Vec<NodeId> = (0..4).filter(|id| brokers & (1 << id) != 0).collect();
                        if !target.is_empty() {
                            let by = rotate % target.len();
                            target.rotate_left(by);
                        }
                        let change = (name.clone(), *index, Some(target).filter(|t| !t.is_empty()));
                        let (_, records) = cluster.controller.alter_reassignments(&cluster.image, &[change]);
                        cluster.commit(records);
                    }
                    let records = cluster.controller.complete_reassignments(&cluster.image);
                    cluster.commit(records);
                }
            }
            check_invariants(&cluster.image, &mut leader_epochs);
        }
    }
}

#[test]
fn leadership_goes_back_to_preferred_replicas_once_a_broker_is_imbalanced_past_the_threshold() {
    let mut cluster = Cluster::new(3);
    let placement = Placement::Manual(vec![vec![0, 1, 2]; 10]);
    let records = cluster.controller.create_topic(&cluster.image, "t", placement, BTreeMap::new()).expect("create");
    cluster.commit(records);
    // Broker 0 dies: its ten partitions move to broker 1; it comes back and catches up.
    cluster.pass(1_500, &[1, 2]);
    assert!((0..10).all(|i| cluster.partition("t", i).leader == 1));
    cluster.start(0);
    for index in 0..10 {
        cluster.alter("t", index, &[0, 1, 2]).expect("0 caught up");
    }
    // Nine given back by hand: one of ten (10%) led elsewhere is not past the threshold.
    let nine: Vec<(String, i32)> = (1..10).map(|i| ("t".to_string(), i)).collect();
    let (_, records) = cluster.controller.elect_leaders(&cluster.image, Election::Preferred, &nine);
    cluster.commit(records);
    let interval = ControllerConfig::default().leader_imbalance_check_interval_ms.expect("on by default");
    let first_check = cluster.now_ms + interval;
    assert!(cluster.controller.rebalance_leaders(&cluster.image, first_check).is_empty(), "10% is not past 10%");
    // Broker 0 dies and returns again: now all ten are elsewhere.
    cluster.pass(1_500, &[1, 2]);
    cluster.start(0);
    for index in 0..10 {
        let isr = cluster.partition("t", index).isr;
        if !isr.contains(&0) {
            cluster.alter("t", index, &[0, 1, 2]).expect("0 caught up");
        }
    }
    assert!((0..10).all(|i| cluster.partition("t", i).leader != 0));
    let epochs: Vec<i32> = (0..10).map(|i| cluster.partition("t", i).leader_epoch).collect();
    assert!(
        cluster.controller.rebalance_leaders(&cluster.image, first_check + interval / 2).is_empty(),
        "checked once per interval"
    );
    let records = cluster.controller.rebalance_leaders(&cluster.image, first_check + interval);
    cluster.commit(records);
    for index in 0..10 {
        let state = cluster.partition("t", index);
        assert_eq!(state.leader, 0, "partition {index} back on its preferred replica");
        assert!(state.leader_epoch > epochs[index as usize], "a new leader epoch");
    }
    // A broker outside the ISR is not given leadership back.
    let mut off = Cluster::new(3);
    let placement = Placement::Manual(vec![vec![0, 1, 2]]);
    let records = off.controller.create_topic(&off.image, "t", placement, BTreeMap::new()).expect("create");
    off.commit(records);
    off.pass(1_500, &[1, 2]);
    off.start(0);
    assert!(off.controller.rebalance_leaders(&off.image, off.now_ms + interval).is_empty(), "0 is not in the ISR");
}

#[test]
fn a_reassignment_adds_replicas_first_and_drops_the_old_ones_once_the_new_are_in_sync() {
    let mut cluster = Cluster::new(4);
    let placement = Placement::Manual(vec![vec![0, 1, 2]]);
    let records = cluster.controller.create_topic(&cluster.image, "t", placement, BTreeMap::new()).expect("create");
    cluster.commit(records);
    let moving = [("t".to_string(), 0, Some(vec![1, 2, 3]))];
    let (results, records) = cluster.controller.alter_reassignments(&cluster.image, &moving);
    assert_eq!(results, vec![Ok(())]);
    cluster.commit(records);
    let p = cluster.partition("t", 0);
    assert_eq!((p.replicas.clone(), p.adding.clone(), p.removing.clone()), (vec![1, 2, 3, 0], vec![3], vec![0]));
    assert_eq!((p.leader, p.isr.clone()), (0, vec![0, 1, 2]), "the leader and ISR stay while 3 catches up");
    assert!(cluster.controller.complete_reassignments(&cluster.image).is_empty(), "3 is not in sync yet");
    cluster.alter("t", 0, &[0, 1, 2, 3]).expect("3 caught up");
    let records = cluster.controller.complete_reassignments(&cluster.image);
    cluster.commit(records);
    let done = cluster.partition("t", 0);
    assert_eq!((done.replicas.clone(), done.isr.clone()), (vec![1, 2, 3], vec![1, 2, 3]));
    assert!(done.adding.is_empty() && done.removing.is_empty());
    assert_eq!(done.leader, 1, "the old leader left: the first target replica in sync leads");
    assert!(done.leader_epoch > p.leader_epoch);

    // Refusals, each for its own partition entry.
    let bad = [
        ("t".to_string(), 0, None),
        ("t".to_string(), 0, Some(vec![1, 9])),
        ("t".to_string(), 0, Some(vec![1, 1])),
        ("t".to_string(), 0, Some(vec![])),
        ("nope".to_string(), 0, Some(vec![1])),
    ];
    let (results, records) = cluster.controller.alter_reassignments(&cluster.image, &bad);
    assert!(matches!(results[0], Err(ControllerError::NoReassignmentInProgress { .. })), "{results:?}");
    assert!(
        results[1..4].iter().all(|r| matches!(r, Err(ControllerError::InvalidReplicaAssignment(_)))),
        "{results:?}"
    );
    assert!(matches!(results[4], Err(ControllerError::UnknownTopic(_))), "{results:?}");
    assert!(records.is_empty());

    // A reassignment cancelled before it finishes returns to the replicas it started from.
    let (_, records) =
        cluster.controller.alter_reassignments(&cluster.image, &[("t".to_string(), 0, Some(vec![0, 1]))]);
    cluster.commit(records);
    assert_eq!(cluster.partition("t", 0).adding, vec![0]);
    let (results, records) = cluster.controller.alter_reassignments(&cluster.image, &[("t".to_string(), 0, None)]);
    assert_eq!(results, vec![Ok(())]);
    cluster.commit(records);
    let cancelled = cluster.partition("t", 0);
    assert_eq!(
        (cancelled.replicas.clone(), cancelled.isr.clone(), cancelled.leader),
        (vec![1, 2, 3], vec![1, 2, 3], 1)
    );
    assert!(cancelled.adding.is_empty() && cancelled.removing.is_empty());
    // Shrinking to replicas already in sync adds nothing: it holds at once.
    let (_, records) =
        cluster.controller.alter_reassignments(&cluster.image, &[("t".to_string(), 0, Some(vec![3, 2]))]);
    cluster.commit(records);
    let shrunk = cluster.partition("t", 0);
    assert_eq!((shrunk.replicas.clone(), shrunk.isr.clone(), shrunk.leader), (vec![3, 2], vec![3, 2], 3));
}
