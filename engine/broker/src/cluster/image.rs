//! The metadata image: the cluster's metadata as of one index of the quorum's log,
//! built by applying committed [`MetadataRecord`]s in order (Kafka's `MetadataImage`).
//!
//! Applying is deterministic and total: a record that does not fit the image (a
//! partition of a topic that does not exist, a fence of an epoch that is not the
//! broker's) changes nothing and is reported, so every node's image stays the same
//! function of the log. The image is also the snapshot: serialized whole, it lets a
//! node that restarts or falls behind start from it instead of from the first record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::records::{MetadataRecord, NodeId, NO_LEADER};
use corelog_engine::types::TopicId;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub node_id: NodeId,
    /// The index of its latest registration: a broker that restarts registers again
    /// and gets a higher epoch, so requests of its previous life are told apart.
    pub epoch: u64,
    pub host: String,
    pub port: u16,
    /// A fenced broker leads nothing and counts in no ISR.
    pub fenced: bool,
}

/// One partition's replicas, leader and in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// In preference order: the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// [`NO_LEADER`] when no eligible replica is left.
    pub leader: NodeId,
    /// Rises each time the leader changes; stamped into the batches the leader appends.
    pub leader_epoch: i32,
    /// Rises on every change (Kafka's partition epoch): AlterPartition requests name
    /// the one they were computed against.
    pub partition_epoch: i32,
    /// A reassignment in progress: replicas being added (not yet in the ISR) and
    /// removed (once the added ones are in sync). Empty: none.
    #[serde(default)]
    pub adding: Vec<NodeId>,
    #[serde(default)]
    pub removing: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    #[serde(with = "super::records::topic_id_text")]
    pub id: TopicId,
    /// Topic configs set on this topic (the rest are the broker's defaults).
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<NodeId, BrokerImage>,
    /// By name.
    pub topics: BTreeMap<String, TopicImage>,
    /// The first producer id no broker has been given yet.
    pub next_producer_id: i64,
    /// The quorum log index this image is as of.
    pub applied_index: u64,
}

impl MetadataImage {
    /// Applies the record committed at `index` (indexes rise by one from record to
    /// record, but for entries that hold no record). A record that does not fit
    /// leaves the image as it was and is returned as an error to report.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), String> {
        self.applied_index = self.applied_index.max(index);
        match record {
            MetadataRecord::Cluster { cluster_id } => match &self.cluster_id {
                Some(existing) if existing != cluster_id => {
                    return Err(format!("cluster id {cluster_id} after {existing}"));
                }
                _ => self.cluster_id = Some(cluster_id.clone()),
            },
            MetadataRecord::RegisterBroker { node_id, host, port } => {
                let broker =
                    BrokerImage { node_id: *node_id, epoch: index, host: host.clone(), port: *port, fenced: true };
                self.brokers.insert(*node_id, broker);
            }
            MetadataRecord::FenceBroker { node_id, epoch } | MetadataRecord::UnfenceBroker { node_id, epoch } => {
                let broker = self
                    .brokers
                    .get_mut(node_id)
                    .filter(|b| b.epoch == *epoch)
                    .ok_or_else(|| format!("no broker {node_id} with epoch {epoch}"))?;
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Topic { name, topic_id, configs } => {
                if self.topics.contains_key(name) || self.topic_by_id(*topic_id).is_some() {
                    return Err(format!("topic {name} ({topic_id}) exists"));
                }
                let topic =
                    TopicImage { name: name.clone(), id: *topic_id, configs: configs.clone(), partitions: Vec::new() };
                self.topics.insert(name.clone(), topic);
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader } => {
                self.apply_partition(*topic_id, *partition, replicas, isr, *leader)?
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                let name = self.topic_by_id(*topic_id).map(|t| t.name.clone()).ok_or_else(|| unknown(*topic_id))?;
                self.topics.remove(&name);
            }
            MetadataRecord::TopicConfig { topic_id, key, value } => {
                let topic = self.topic_by_id_mut(*topic_id)?;
                match value {
                    Some(value) => topic.configs.insert(key.clone(), value.clone()),
                    None => topic.configs.remove(key),
                };
            }
            MetadataRecord::Reassignment { topic_id, partition, adding, removing } => {
                let topic = self.topic_by_id_mut(*topic_id)?;
                let state = usize::try_from(*partition)
                    .ok()
                    .and_then(|index| topic.partitions.get_mut(index))
                    .ok_or_else(|| format!("partition {partition} of {} does not exist", topic.name))?;
                state.adding = adding.clone();
                state.removing = removing.clone();
            }
            MetadataRecord::ProducerIds { first, count, .. } => {
                if *first < self.next_producer_id || *count <= 0 {
                    return Err(format!("producer ids [{first}, +{count}) below {}", self.next_producer_id));
                }
                self.next_producer_id = first + count;
            }
        }
        Ok(())
    }

    /// A [`MetadataRecord::Partition`]: the partition's new state (its epochs moved
    /// on), or a new partition at the end of its topic.
    fn apply_partition(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        replicas: &[NodeId],
        isr: &[NodeId],
        leader: NodeId,
    ) -> Result<(), String> {
        let topic = self.topic_by_id_mut(topic_id)?;
        let index = usize::try_from(partition).map_err(|_| format!("partition {partition}"))?;
        let fresh = PartitionImage {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        let count = topic.partitions.len();
        match topic.partitions.get_mut(index) {
            Some(existing) => {
                let leader_epoch = existing.leader_epoch + i32::from(existing.leader != leader);
                let partition_epoch = existing.partition_epoch + 1;
                // A reassignment in progress stays until its own record ends it.
                let (adding, removing) = (std::mem::take(&mut existing.adding), std::mem::take(&mut existing.removing));
                *existing = PartitionImage { leader_epoch, partition_epoch, adding, removing, ..fresh };
            }
            None if index == count => topic.partitions.push(fresh),
            None => return Err(format!("partition {partition} of {} skips ahead", topic.name)),
        }
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    fn topic_by_id_mut(&mut self, id: TopicId) -> Result<&mut TopicImage, String> {
        self.topics.values_mut().find(|t| t.id == id).ok_or_else(|| unknown(id))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        self.topic(topic)?.partitions.get(usize::try_from(partition).ok()?)
    }

    /// Whether `node_id` is registered and not fenced.
    pub fn is_live(&self, node_id: NodeId) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// Registered, unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Every partition, as `(topic, partition index, state)`.
    pub fn partitions(&self) -> impl Iterator<Item = (&TopicImage, i32, &PartitionImage)> {
        self.topics.values().flat_map(|t| t.partitions.iter().enumerate().map(move |(i, p)| (t, i as i32, p)))
    }

    /// The image as a snapshot's data.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataImage, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("metadata snapshot: {e}"))
    }
}

impl PartitionImage {
    pub fn has_leader(&self) -> bool {
        self.leader != NO_LEADER
    }
}

fn unknown(id: TopicId) -> String {
    format!("no topic with id {id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TopicId = TopicId(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);

    fn partition(replicas: &[NodeId], isr: &[NodeId], leader: NodeId) -> MetadataRecord {
        MetadataRecord::Partition { topic_id: ID, partition: 0, replicas: replicas.to_vec(), isr: isr.to_vec(), leader }
    }

    fn with_topic() -> MetadataImage {
        let mut image = MetadataImage::default();
        let topic = MetadataRecord::Topic { name: "t".to_string(), topic_id: ID, configs: BTreeMap::new() };
        image.apply(1, &topic).expect("topic");
        image.apply(2, &partition(&[0, 1, 2], &[0, 1, 2], 0)).expect("partition");
        image
    }

    #[test]
    fn the_leader_epoch_rises_with_each_new_leader_and_the_partition_epoch_with_every_change() {
        let mut image = with_topic();
        image.apply(3, &partition(&[0, 1, 2], &[0, 1], 0)).expect("isr shrinks");
        let p = image.partition("t", 0).expect("partition");
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
        image.apply(4, &partition(&[0, 1, 2], &[1], 1)).expect("new leader");
        let p = image.partition("t", 0).expect("partition");
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 1, 2));
        image.apply(5, &partition(&[0, 1, 2], &[1], NO_LEADER)).expect("leader gone");
        image.apply(6, &partition(&[0, 1, 2], &[1], 1)).expect("back");
        assert_eq!(image.partition("t", 0).expect("partition").leader_epoch, 3);
    }

    #[test]
    fn a_registration_gives_the_broker_its_index_as_epoch_and_fences_it_until_unfenced() {
        let mut image = MetadataImage::default();
        image.apply(5, &MetadataRecord::RegisterBroker { node_id: 1, host: "h".into(), port: 1 }).expect("register");
        assert!(!image.is_live(1));
        assert!(image.apply(6, &MetadataRecord::UnfenceBroker { node_id: 1, epoch: 4 }).is_err(), "old epoch");
        assert!(!image.is_live(1));
        image.apply(7, &MetadataRecord::UnfenceBroker { node_id: 1, epoch: 5 }).expect("unfence");
        assert!(image.is_live(1));
        image.apply(9, &MetadataRecord::RegisterBroker { node_id: 1, host: "h".into(), port: 1 }).expect("restart");
        assert_eq!(image.brokers[&1].epoch, 9);
        assert!(!image.is_live(1));
    }

    #[test]
    fn records_that_do_not_fit_change_nothing() {
        let mut image = with_topic();
        let before = image.clone();
        let other = TopicId(7);
        let misfits = [
            MetadataRecord::Topic { name: "t".to_string(), topic_id: other, configs: BTreeMap::new() },
            MetadataRecord::Partition { topic_id: other, partition: 0, replicas: vec![0], isr: vec![0], leader: 0 },
            MetadataRecord::Partition { topic_id: ID, partition: 5, replicas: vec![0], isr: vec![0], leader: 0 },
            MetadataRecord::DeleteTopic { topic_id: other },
            MetadataRecord::FenceBroker { node_id: 3, epoch: 1 },
            MetadataRecord::ProducerIds { node_id: 0, first: -1, count: 10 },
        ];
        for record in &misfits {
            assert!(image.apply(2, record).is_err(), "{record:?}");
        }
        assert_eq!(image, before);
    }

    #[test]
    fn the_snapshot_gives_back_the_image() {
        let mut image = with_topic();
        image.apply(3, &MetadataRecord::Cluster { cluster_id: "c".into() }).expect("cluster");
        image.apply(4, &MetadataRecord::ProducerIds { node_id: 0, first: 0, count: 1000 }).expect("ids");
        assert_eq!(MetadataImage::decode(&image.encode()).expect("decodes"), image);
        assert!(MetadataImage::decode(b"{").is_err());
    }
}
