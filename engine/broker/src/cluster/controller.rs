//! The active controller's decisions, sans IO (Kafka's `QuorumController` and its
//! `ReplicationControlManager`, `ClusterControlManager`).
//!
//! The node that leads the metadata quorum is the active controller. Every request
//! that changes metadata (a broker registering or heartbeating, a topic created, a
//! leader reporting an ISR change) comes to it; [`Controller`] checks it against the
//! committed [`MetadataImage`] and answers with the records to propose. The caller
//! proposes them and answers the request once they are committed, one request at a
//! time, so each decision sees the effects of the previous one. Nothing here reads a
//! clock or does IO: `now_ms` is passed in, and randomness comes from a seeded
//! generator.
//!
//! Broker liveness is not in the log: like Kafka's, the sessions (the time of each
//! broker's last heartbeat) live in the active controller's memory only. A new active
//! controller starts every registered broker's session afresh
//! ([`Controller::activate`]), so a failover never fences a broker that was alive.
//!
//! Leadership rules, as Kafka's `PartitionChangeBuilder` has them:
//! - A fenced broker leads nothing and is removed from every ISR, except that the
//!   last member of an ISR stays in it (it holds the committed data; with it gone no
//!   one could lead cleanly again).
//! - A new leader is the first replica, in assignment order, that is in the ISR and
//!   live. With none, and `unclean.leader.election.enable=true` on the topic, the
//!   first live replica leads and becomes the ISR alone (data may be lost: that is
//!   what unclean means). Otherwise the partition has no leader until an ISR member
//!   comes back.
//! - A broker that asks for a controlled shutdown hands over every leadership it
//!   holds first, and is fenced once it leads nothing.
//! - Leadership drifts off the preferred replicas as brokers die and come back.
//!   Every `leader_imbalance_check_interval_ms` (Kafka's
//!   `auto.leader.rebalance.enable` and `leader.imbalance.check.interval.seconds`)
//!   the controller looks, per broker, at the partitions it is the preferred
//!   replica of: when more than `leader_imbalance_percentage` of them are led by
//!   another broker, it gives back to it each one where it is live and in the ISR
//!   ([`Controller::rebalance_leaders`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::image::{BrokerImage, MetadataImage, PartitionImage, TopicImage};
use super::records::{MetadataRecord, NodeId, NO_LEADER};
use corelog_engine::hash::SplitMix64;
use corelog_engine::types::TopicId;

/// The topic config that lets an out-of-sync replica lead.
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A broker whose last heartbeat is older is fenced (Kafka's
    /// `broker.session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// Producer ids handed to a broker at a time.
    pub producer_id_block: i64,
    /// How often leadership is given back to preferred replicas; `None`: never
    /// (Kafka's `auto.leader.rebalance.enable=false`).
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// A broker's share of its preferred partitions led elsewhere, in percent, above
    /// which they are given back (Kafka's `leader.imbalance.per.broker.percentage`).
    pub leader_imbalance_percentage: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            producer_id_block: 1_000,
            leader_imbalance_check_interval_ms: Some(300_000),
            leader_imbalance_percentage: 10,
        }
    }
}

/// Why a request was refused, each with the Kafka error it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    #[error("broker {node_id} with epoch {epoch} is not registered (stale broker epoch)")]
    StaleBrokerEpoch { node_id: NodeId, epoch: u64 },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("broker {0} does not lead the partition")]
    NotLeader(NodeId),
    #[error("leader epoch {given} is older than {current}")]
    FencedLeaderEpoch { given: i32, current: i32 },
    #[error("partition epoch {given} is not the current {current}")]
    InvalidUpdateVersion { given: i32, current: i32 },
    #[error("{0}")]
    IneligibleReplica(String),
    #[error("partition {topic}/{partition} has no eligible leader")]
    EligibleLeadersNotAvailable { topic: String, partition: i32 },
    #[error("the preferred leader of {topic}/{partition} already leads")]
    ElectionNotNeeded { topic: String, partition: i32 },
    #[error("no reassignment of {topic}/{partition} is in progress")]
    NoReassignmentInProgress { topic: String, partition: i32 },
}

/// What a heartbeat tells the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub fenced: bool,
    /// The broker asked to shut down and leads nothing any more: it may stop.
    pub shutdown_ready: bool,
}

/// A broker's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: NodeId,
    pub epoch: u64,
    /// The broker has applied the metadata log up to its registration at least, so
    /// it knows what it replicates.
    pub caught_up: bool,
    /// The broker is shutting down (controlled shutdown).
    pub want_shutdown: bool,
}

/// How a leader is elected on request (Kafka's ElectLeaders `election_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Election {
    /// Give leadership back to the first replica if it is in the ISR and live.
    Preferred,
    /// Elect a leader where there is none, from outside the ISR if need be.
    Unclean,
}

pub struct Controller {
    config: ControllerConfig,
    /// Last heartbeat per broker, in ms.
    sessions: BTreeMap<NodeId, u64>,
    random: SplitMix64,
    /// When leadership imbalance was last checked.
    imbalance_checked_ms: u64,
}

impl Controller {
    pub fn new(config: ControllerConfig, seed: u64) -> Controller {
        Controller { config, sessions: BTreeMap::new(), random: SplitMix64::new(seed), imbalance_checked_ms: 0 }
    }

    /// This node became the active controller at `now_ms`: every registered broker
    /// has a full session ahead of it. The records to propose first: the cluster id
    /// when the log has none yet.
    pub fn activate(&mut self, image: &MetadataImage, now_ms: u64, cluster_id: &str) -> Vec<MetadataRecord> {
        self.sessions = image.brokers.keys().map(|id| (*id, now_ms)).collect();
        self.imbalance_checked_ms = now_ms;
        match image.cluster_id {
            None => vec![MetadataRecord::Cluster { cluster_id: cluster_id.to_string() }],
            Some(_) => Vec::new(),
        }
    }

    /// A broker (re)starts. A broker that was registered before gets a new epoch;
    /// its old registration's leaderships were given up when it was fenced, or are
    /// given up now.
    pub fn register(
        &mut self,
        image: &MetadataImage,
        node_id: NodeId,
        host: &str,
        port: u16,
        now_ms: u64,
    ) -> Vec<MetadataRecord> {
        self.sessions.insert(node_id, now_ms);
        let mut records = match image.brokers.get(&node_id) {
            Some(old) if !old.fenced => fence(image, node_id, old.epoch),
            _ => Vec::new(),
        };
        records.push(MetadataRecord::RegisterBroker { node_id, host: host.to_string(), port });
        records
    }

    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        heartbeat: Heartbeat,
        now_ms: u64,
    ) -> Result<(HeartbeatReply, Vec<MetadataRecord>), ControllerError> {
        let Heartbeat { node_id, epoch, caught_up, want_shutdown } = heartbeat;
        let broker = registered(image, node_id, epoch)?;
        self.sessions.insert(node_id, now_ms);
        if want_shutdown {
            if broker.fenced {
                return Ok((HeartbeatReply { fenced: true, shutdown_ready: true }, Vec::new()));
            }
            // Hand every leadership over, then fence: a broker that leads nothing
            // fenced in one step, one that still leads gets its handover now and is
            // fenced by a later heartbeat.
            let records = fence(image, node_id, epoch);
            return Ok((HeartbeatReply { fenced: false, shutdown_ready: false }, records));
        }
        if broker.fenced && caught_up {
            let mut records = vec![MetadataRecord::UnfenceBroker { node_id, epoch }];
            records.extend(leaders_for_leaderless(image, node_id));
            return Ok((HeartbeatReply { fenced: false, shutdown_ready: false }, records));
        }
        Ok((HeartbeatReply { fenced: broker.fenced, shutdown_ready: false }, Vec::new()))
    }

    /// Fences every live broker whose session expired by `now_ms`.
    pub fn expire_sessions(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<MetadataRecord> {
        let timeout = self.config.session_timeout_ms;
        let mut after = image.clone();
        let mut records = Vec::new();
        for broker in image.live_brokers() {
            let last = self.sessions.get(&broker.node_id).copied().unwrap_or(0);
            if now_ms.saturating_sub(last) > timeout {
                tracing::warn!(
                    "broker {} missed its heartbeats for {} ms: fencing it",
                    broker.node_id,
                    now_ms.saturating_sub(last)
                );
                let fencing = fence(&after, broker.node_id, broker.epoch);
                apply_all(&mut after, &fencing);
                records.extend(fencing);
            }
        }
        records
    }

    /// Once per `leader_imbalance_check_interval_ms`: for each broker whose
    /// preferred partitions are led elsewhere more than `leader_imbalance_percentage`
    /// of the time, the records that give each of them back to it where it is live
    /// and in the ISR (see the module doc).
    pub fn rebalance_leaders(&mut self, image: &MetadataImage, now_ms: u64) -> Vec<MetadataRecord> {
        let Some(interval_ms) = self.config.leader_imbalance_check_interval_ms else { return Vec::new() };
        if now_ms.saturating_sub(self.imbalance_checked_ms) < interval_ms {
            return Vec::new();
        }
        self.imbalance_checked_ms = now_ms;
        // Per preferred broker: its partitions, and those another broker leads.
        let mut preferred: BTreeMap<NodeId, (u64, Vec<PartitionRef<'_>>)> = BTreeMap::new();
        for (topic, index, state) in image.partitions() {
            let Some(&first) = state.replicas.first() else { continue };
            let entry = preferred.entry(first).or_default();
            entry.0 += 1;
            if state.leader != first {
                entry.1.push((topic, index, state));
            }
        }
        let mut records = Vec::new();
        for (broker, (count, elsewhere)) in preferred {
            let percentage = elsewhere.len() as u64 * 100 / count.max(1);
            if percentage <= self.config.leader_imbalance_percentage || !image.is_live(broker) {
                continue;
            }
            let movable: Vec<_> = elsewhere.into_iter().filter(|(_, _, state)| state.isr.contains(&broker)).collect();
            if !movable.is_empty() {
                tracing::info!(
                    "broker {broker} leads {}% fewer of its preferred partitions than it could: \
                     giving {} back to it",
                    percentage,
                    movable.len()
                );
            }
            for (topic, index, state) in movable {
                records.push(partition_record(topic.id, index, state, state.isr.clone(), broker));
            }
        }
        records
    }

    /// A new topic with `partitions` partitions of `replication_factor` replicas on
    /// live brokers, or with the given assignment (one replica list per partition).
    pub fn create_topic(
        &mut self,
        image: &MetadataImage,
        name: &str,
        placement: Placement,
        configs: BTreeMap<String, String>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if image.topic(name).is_some() {
            return Err(ControllerError::TopicExists(name.to_string()));
        }
        let assignment = self.assignment(image, placement, 0)?;
        let topic_id = self.new_topic_id(image);
        let mut records = vec![MetadataRecord::Topic { name: name.to_string(), topic_id, configs }];
        records.extend(new_partitions(image, topic_id, 0, assignment));
        Ok(records)
    }

    /// Grows `name` to `count` partitions.
    pub fn create_partitions(
        &mut self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<NodeId>>>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        let existing = topic.partitions.len() as i32;
        if count <= existing {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic {name} has {existing} partitions; {count} does not add any"
            )));
        }
        let factor = topic.partitions.first().map_or(1, |p| p.replicas.len() as i32);
        let placement = match assignment {
            Some(assignment) => Placement::Manual(assignment),
            None => Placement::Spread { partitions: count - existing, replication_factor: factor },
        };
        let assignment = self.assignment(image, placement, existing)?;
        if assignment.len() as i32 != count - existing {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "{} replica lists for {} new partitions",
                assignment.len(),
                count - existing
            )));
        }
        Ok(new_partitions(image, topic.id, existing, assignment))
    }

    pub fn delete_topic(&mut self, image: &MetadataImage, name: &str) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        Ok(vec![MetadataRecord::DeleteTopic { topic_id: topic.id }])
    }

    /// Sets (`Some`) or removes topic configs; the broker validated them.
    pub fn alter_configs(
        &mut self,
        image: &MetadataImage,
        name: &str,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let topic = image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        Ok(changes
            .into_iter()
            .map(|(key, value)| MetadataRecord::TopicConfig { topic_id: topic.id, key, value })
            .collect())
    }

    /// A partition leader reports a new ISR (Kafka's AlterPartition): checked
    /// against the leader's broker epoch, leader epoch and partition epoch, so a
    /// leader that was replaced, or that computed the change against an older
    /// state, changes nothing.
    pub fn alter_partition(
        &mut self,
        image: &MetadataImage,
        change: AlterPartition,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let AlterPartition { node_id, broker_epoch, topic_id, partition, leader_epoch, partition_epoch, isr } = change;
        registered(image, node_id, broker_epoch)?;
        let topic = image.topic_by_id(topic_id).ok_or_else(|| ControllerError::UnknownTopic(topic_id.to_string()))?;
        let current = topic
            .partitions
            .get(usize::try_from(partition).unwrap_or(usize::MAX))
            .ok_or_else(|| ControllerError::UnknownTopic(format!("{}/{partition}", topic.name)))?;
        if current.leader != node_id {
            return Err(ControllerError::NotLeader(node_id));
        }
        if leader_epoch != current.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch { given: leader_epoch, current: current.leader_epoch });
        }
        if partition_epoch != current.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                given: partition_epoch,
                current: current.partition_epoch,
            });
        }
        let distinct: BTreeSet<NodeId> = isr.iter().copied().collect();
        if distinct.len() != isr.len() || !isr.contains(&node_id) {
            return Err(ControllerError::IneligibleReplica(format!("ISR {isr:?} must name the leader once")));
        }
        if let Some(stranger) = isr.iter().find(|r| !current.replicas.contains(r)) {
            return Err(ControllerError::IneligibleReplica(format!("{stranger} is not a replica")));
        }
        if let Some(fenced) = isr.iter().find(|r| !current.isr.contains(r) && !image.is_live(**r)) {
            return Err(ControllerError::IneligibleReplica(format!("replica {fenced} is fenced")));
        }
        let isr = in_replica_order(&current.replicas, &isr);
        Ok(vec![partition_record(topic_id, partition, current, isr, current.leader)])
    }

    /// Elects leaders for `partitions` (`(topic, index)`), each answered on its own.
    pub fn elect_leaders(
        &mut self,
        image: &MetadataImage,
        election: Election,
        partitions: &[(String, i32)],
    ) -> (Vec<Result<(), ControllerError>>, Vec<MetadataRecord>) {
        let mut records = Vec::new();
        let results = partitions
            .iter()
            .map(|(name, index)| {
                let topic = image.topic(name).ok_or_else(|| ControllerError::UnknownTopic(name.clone()))?;
                let current = image
                    .partition(name, *index)
                    .ok_or_else(|| ControllerError::UnknownTopic(format!("{name}/{index}")))?;
                let not_available =
                    || ControllerError::EligibleLeadersNotAvailable { topic: name.clone(), partition: *index };
                let (leader, isr) = match election {
                    Election::Preferred => {
                        let preferred = current.replicas.first().copied().unwrap_or(NO_LEADER);
                        if current.leader == preferred {
                            return Err(ControllerError::ElectionNotNeeded { topic: name.clone(), partition: *index });
                        }
                        if !current.isr.contains(&preferred) || !image.is_live(preferred) {
                            return Err(not_available());
                        }
                        (preferred, current.isr.clone())
                    }
                    Election::Unclean => {
                        if current.has_leader() {
                            return Err(ControllerError::ElectionNotNeeded { topic: name.clone(), partition: *index });
                        }
                        match elect(image, current, None, true) {
                            Some(choice) => choice,
                            None => return Err(not_available()),
                        }
                    }
                };
                records.push(partition_record(topic.id, *index, current, isr, leader));
                Ok(())
            })
            .collect();
        (results, records)
    }

    /// The next block of producer ids for `node_id`.
    pub fn allocate_producer_ids(
        &mut self,
        image: &MetadataImage,
        node_id: NodeId,
        broker_epoch: u64,
    ) -> Result<(i64, i64, Vec<MetadataRecord>), ControllerError> {
        registered(image, node_id, broker_epoch)?;
        let (first, count) = (image.next_producer_id, self.config.producer_id_block);
        Ok((first, count, vec![MetadataRecord::ProducerIds { node_id, first, count }]))
    }

    /// Replica lists for new partitions numbered from `first_partition`.
    fn assignment(
        &mut self,
        image: &MetadataImage,
        placement: Placement,
        first_partition: i32,
    ) -> Result<Vec<Vec<NodeId>>, ControllerError> {
        match placement {
            Placement::Manual(lists) => {
                let factor = lists.first().map_or(0, Vec::len);
                for list in &lists {
                    let distinct: BTreeSet<_> = list.iter().collect();
                    if list.is_empty() || list.len() != factor || distinct.len() != list.len() {
                        return Err(ControllerError::InvalidReplicaAssignment(format!(
                            "replica list {list:?}: every partition needs the same number of distinct replicas"
                        )));
                    }
                    if let Some(unknown) = list.iter().find(|id| !image.brokers.contains_key(id)) {
                        return Err(ControllerError::InvalidReplicaAssignment(format!(
                            "broker {unknown} is not registered"
                        )));
                    }
                }
                Ok(lists)
            }
            Placement::Spread { partitions, replication_factor } => {
                if partitions < 1 {
                    return Err(ControllerError::InvalidPartitions(format!("{partitions} partitions")));
                }
                let live: Vec<NodeId> = image.live_brokers().map(|b| b.node_id).collect();
                if replication_factor < 1 || replication_factor as usize > live.len() {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "replication factor {replication_factor}: {} brokers are available",
                        live.len()
                    )));
                }
                // Leaders round-robin from a random start (as Kafka's rack-unaware
                // placement), each partition's followers the brokers after its leader,
                // so every broker leads and follows about as many partitions.
                let start = (self.random.next_u64() % live.len() as u64) as usize;
                Ok((0..partitions as usize)
                    .map(|p| {
                        let at = start + first_partition as usize + p;
                        (0..replication_factor as usize).map(|r| live[(at + r) % live.len()]).collect()
                    })
                    .collect())
            }
        }
    }

    fn new_topic_id(&mut self, image: &MetadataImage) -> TopicId {
        loop {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&self.random.next_u64().to_be_bytes());
            bytes[8..].copy_from_slice(&self.random.next_u64().to_be_bytes());
            let id = TopicId::from_random_bytes(bytes);
            if image.topic_by_id(id).is_none() && id.0 != 0 {
                return id;
            }
        }
    }
}

/// Where a new topic's (or new partitions') replicas go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Spread over the live brokers.
    Spread { partitions: i32, replication_factor: i32 },
    /// One replica list per partition, the first replica the preferred leader.
    Manual(Vec<Vec<NodeId>>),
}

/// An ISR change a partition leader asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub node_id: NodeId,
    pub broker_epoch: u64,
    #[serde(with = "super::records::topic_id_text")]
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// `node_id`'s registration, if `epoch` is its current one.
fn registered(image: &MetadataImage, node_id: NodeId, epoch: u64) -> Result<&BrokerImage, ControllerError> {
    image.brokers.get(&node_id).filter(|b| b.epoch == epoch).ok_or(ControllerError::StaleBrokerEpoch { node_id, epoch })
}

/// Records that fence `node_id` (epoch `epoch`): every partition it leads gets a
/// new leader (or none), every ISR loses it unless it is the last member.
fn fence(image: &MetadataImage, node_id: NodeId, epoch: u64) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for (topic, index, partition) in image.partitions() {
        if partition.leader != node_id && !partition.isr.contains(&node_id) {
            continue;
        }
        let (leader, isr) = if partition.leader == node_id {
            elect(image, partition, Some(node_id), unclean_allowed(topic)).unwrap_or_else(|| {
                (
                    NO_LEADER,
                    if partition.isr.len() > 1 { without(&partition.isr, node_id) } else { partition.isr.clone() },
                )
            })
        } else if partition.isr.len() > 1 {
            (partition.leader, without(&partition.isr, node_id))
        } else {
            continue;
        };
        records.push(partition_record(topic.id, index, partition, isr, leader));
    }
    records.push(MetadataRecord::FenceBroker { node_id, epoch });
    records
}

/// Leaders for the partitions that have none and that `node_id`, just unfenced,
/// can lead: cleanly when it is in their ISR; uncleanly, alone in the ISR, when it
/// is not but the topic allows it (no in-sync replica is live: the partition
/// would have a leader otherwise), as Kafka's controller elects an out-of-sync
/// replica that comes back to a partition with none.
fn leaders_for_leaderless(image: &MetadataImage, node_id: NodeId) -> Vec<MetadataRecord> {
    image
        .partitions()
        .filter(|(_, _, p)| !p.has_leader() && p.replicas.contains(&node_id))
        .filter_map(|(topic, index, p)| {
            if p.isr.contains(&node_id) {
                return Some(partition_record(topic.id, index, p, p.isr.clone(), node_id));
            }
            unclean_allowed(topic).then(|| {
                tracing::warn!(
                    "unclean leader election: broker {node_id}, outside the ISR {:?}, leads {}/{index}; \
                     committed data may be lost",
                    p.isr,
                    topic.name
                );
                partition_record(topic.id, index, p, vec![node_id], node_id)
            })
        })
        .collect()
}

/// A new `(leader, isr)` for `partition` without `excluded`: the first live ISR
/// member in replica order, else (unclean) the first live replica with itself as
/// the ISR.
fn elect(
    image: &MetadataImage,
    partition: &PartitionImage,
    excluded: Option<NodeId>,
    unclean: bool,
) -> Option<(NodeId, Vec<NodeId>)> {
    let eligible = |id: &&NodeId| Some(**id) != excluded && image.is_live(**id);
    let isr = match excluded {
        Some(gone) if partition.isr.len() > 1 => without(&partition.isr, gone),
        _ => partition.isr.clone(),
    };
    if let Some(leader) = partition.replicas.iter().filter(|r| isr.contains(r)).find(eligible) {
        return Some((*leader, isr));
    }
    if unclean {
        tracing::warn!("unclean leader election: a replica outside the ISR leads, committed data may be lost");
        return partition.replicas.iter().find(eligible).map(|leader| (*leader, vec![*leader]));
    }
    None
}

/// One partition of an image: its topic, index and state.
type PartitionRef<'a> = (&'a TopicImage, i32, &'a PartitionImage);

fn unclean_allowed(topic: &TopicImage) -> bool {
    topic.configs.get(UNCLEAN_LEADER_ELECTION).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn new_partitions(
    image: &MetadataImage,
    topic_id: TopicId,
    first: i32,
    assignment: Vec<Vec<NodeId>>,
) -> Vec<MetadataRecord> {
    assignment
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| {
            let isr: Vec<NodeId> = replicas.iter().copied().filter(|r| image.is_live(*r)).collect();
            let leader = isr.first().copied().unwrap_or(NO_LEADER);
            // A partition whose replicas are all fenced starts with them all in its
            // ISR: it holds no data yet, so any of them may lead once back.
            let isr = if isr.is_empty() { replicas.clone() } else { isr };
            MetadataRecord::Partition { topic_id, partition: first + i as i32, replicas, isr, leader }
        })
        .collect()
}

fn partition_record(
    topic_id: TopicId,
    partition: i32,
    current: &PartitionImage,
    isr: Vec<NodeId>,
    leader: NodeId,
) -> MetadataRecord {
    MetadataRecord::Partition { topic_id, partition, replicas: current.replicas.clone(), isr, leader }
}

fn without(list: &[NodeId], gone: NodeId) -> Vec<NodeId> {
    list.iter().copied().filter(|id| *id != gone).collect()
}

fn in_replica_order(replicas: &[NodeId], members: &[NodeId]) -> Vec<NodeId> {
    replicas.iter().copied().filter(|r| members.contains(r)).collect()
}

/// Applies `records` in order at made-up indexes: what the image will be once they
/// commit, for decisions that build on each other within one step.
fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
    for record in records {
        let index = image.applied_index + 1;
        if let Err(error) = image.apply(index, record) {
            tracing::error!("controller decided a record that does not apply: {error}");
        }
    }
}

mod reassignment;
pub use reassignment::ReassignmentChange;

#[cfg(test)]
mod tests;
