//! Topic and partition resolution: the one way a handler turns the topics and
//! partitions a request names into the engine's [`TopicName`] and [`TopicPartition`],
//! or into the Kafka error that answers them.
//!
//! A handler says what it does with a topic ([`Intent`]), resolves each topic of its
//! request once, by name or by topic id ([`Resolver::topic`]), then each partition
//! of it ([`ResolvedTopic::partition`]). The checks, in the order they are made, and
//! what each answers:
//!
//! 1. a name is one Kafka accepts ([`TopicName::new`]): INVALID_TOPIC_EXCEPTION; a
//!    topic id is the id of a topic: UNKNOWN_TOPIC_ID;
//! 2. an [`Intent::Alter`] of an internal topic ([`crate::is_internal`]):
//!    TOPIC_AUTHORIZATION_FAILED ([`Refusal::internal_topic`]);
//! 3. the topic exists ([`ResolvedTopic::metadata`], and every partition):
//!    UNKNOWN_TOPIC_OR_PARTITION;
//! 4. the partition index is one of the topic's: UNKNOWN_TOPIC_OR_PARTITION;
//! 5. an [`Intent::Write`] to an internal topic: INVALID_TOPIC_EXCEPTION, as Kafka's
//!    `ReplicaManager` refuses appends to and record deletions of internal topics
//!    (after 4: a partition that does not exist is unknown first);
//! 6. the leader epoch the client believes current ([`PartitionRef`]), where the
//!    request carries one and the handler passes it: FENCED_LEADER_EPOCH when older
//!    than the partition's, UNKNOWN_LEADER_EPOCH when newer, -1 skips the check;
//! 7. in a cluster, an [`Intent::Read`] or [`Intent::Write`] of a partition this
//!    broker does not lead (another does, or none): NOT_LEADER_OR_FOLLOWER;
//! 8. in a cluster, for the same intents, this broker holds the partition's replica
//!    (the reconciler has created the topic's incarnation here): else
//!    UNKNOWN_TOPIC_OR_PARTITION, which clients retry.
//!
//! A handler may answer a refusal differently where Kafka's API does (OffsetCommit
//! answers every refusal with UNKNOWN_TOPIC_OR_PARTITION), and adds its own checks
//! after resolution; it does not look topics or partitions up any other way.
//!
//! Clusters. On a single broker every partition is led by this broker at
//! [`LEADER_EPOCH`], and the engine's registry ([`TopicDirectory`]) is the truth.
//! On a node of a cluster ([`Resolver::in_cluster`]) the metadata image is: a topic
//! exists, and a partition has its leader and leader epoch, as the image says (3, 4,
//! 6, 7 above); the engine only answers whether this broker's replica exists yet
//! (8). The epoch is checked before the leadership, as Kafka's
//! `Partition.getLocalLog` does: a client with an old epoch is told it is fenced
//! and refreshes its metadata. [`Intent::Describe`] and [`Intent::Alter`] need no
//! leadership. A follower's fetch (Fetch with a replica id) is an [`Intent::Read`]
//! like a consumer's: it resolves on the leader.
//!
//! OffsetForLeaderEpoch, Fetch (v9+) and ListOffsets (v4+) pass the current leader
//! epoch the client knows (-1: unknown, not checked), as Kafka checks it: older than
//! the partition's is FENCED_LEADER_EPOCH, newer is UNKNOWN_LEADER_EPOCH; clients
//! refresh their metadata on both. Limits. No
//! handler served today names topics by id (Fetch v13+, DeleteTopics v6+; Metadata
//! v10+ entries without a name are skipped), so [`TopicRef::Id`] is used by none yet;
//! the engine's registry is keyed by name, so a lookup by id scans it. On a cluster
//! node the internal topic is the cluster's (replicated, its partitions led by the
//! groups' coordinators) and resolves like any topic, with its refusals kept.

use std::sync::Arc;

use kafka_protocol::ResponseError;

use crate::cluster::image::MetadataImage;
use crate::cluster::records::NodeId;
use crate::is_internal;
use crate::kafka::errors::response_error;
use corelog_engine::error::EngineError;
use corelog_engine::shard::{EngineHandle, TopicMetadata};
use corelog_engine::types::{LeaderEpoch, PartitionId, TopicId, TopicName, TopicPartition};

/// The leader epoch of every partition of this single broker.
pub const LEADER_EPOCH: LeaderEpoch = LeaderEpoch(0);
/// Kafka's `UNDEFINED_EPOCH`, also "no current epoch given" in requests.
pub const UNDEFINED_EPOCH: LeaderEpoch = LeaderEpoch(-1);

/// Where topics are looked up. The engine's registry ([`EngineHandle`]) is the
/// broker's; tests pass a plain list.
pub trait TopicDirectory {
    fn topic(&self, name: &TopicName) -> Option<TopicMetadata>;
    fn topic_by_id(&self, id: TopicId) -> Option<TopicMetadata>;
}

impl TopicDirectory for EngineHandle {
    fn topic(&self, name: &TopicName) -> Option<TopicMetadata> {
        EngineHandle::topic(self, name)
    }

    fn topic_by_id(&self, id: TopicId) -> Option<TopicMetadata> {
        self.topics().into_iter().find(|metadata| metadata.id == id)
    }
}

/// What a handler does with the topic it resolves, which decides what it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Names the topic without touching its logs: Metadata, OffsetCommit.
    Describe,
    /// Reads its partitions' logs: Fetch, ListOffsets, OffsetForLeaderEpoch.
    Read,
    /// Appends to or deletes from its partitions' logs: Produce, DeleteRecords.
    /// Internal topics are refused.
    Write,
    /// Changes the topic itself: CreatePartitions, DeleteTopics. Internal topics are
    /// refused; the text completes "clients may read it but not ...".
    Alter(&'static str),
}

/// A topic as a request names it.
#[derive(Debug, Clone, Copy)]
pub enum TopicRef<'a> {
    /// The name as the request spells it, not yet checked.
    Name(&'a str),
    Id(TopicId),
}

/// A partition as a request names it: its index and the leader epoch the client
/// believes current ([`UNDEFINED_EPOCH`]: no check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRef {
    pub index: i32,
    pub current_leader_epoch: LeaderEpoch,
}

impl PartitionRef {
    /// The partition at `index`, its leader epoch not checked.
    pub fn new(index: i32) -> PartitionRef {
        PartitionRef { index, current_leader_epoch: UNDEFINED_EPOCH }
    }

    pub fn with_current_leader_epoch(self, current_leader_epoch: LeaderEpoch) -> PartitionRef {
        PartitionRef { current_leader_epoch, ..self }
    }
}

/// Why a topic or partition of a request is not served: the Kafka error for the
/// response's error code and, for the APIs with an error-message field, a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: ResponseError,
    pub message: String,
}

impl Refusal {
    pub fn new(error: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal { error, message: message.into() }
    }

    /// The answer to an admin request that would change one of the broker's internal
    /// topics: TOPIC_AUTHORIZATION_FAILED, what a Kafka broker answers a principal
    /// without the ALTER, DELETE or ALTER_CONFIGS permission on the topic
    /// (`KafkaApis.handleDeleteTopicsRequest`, `handleCreatePartitionsRequest`,
    /// `configsAuthorizationApiError`). Kafka itself leaves these to its ACLs; corelog
    /// has none, and no client holds the permission. `action` completes "clients may
    /// not ...".
    pub fn internal_topic(topic: &TopicName, action: &str) -> Refusal {
        Refusal::new(
            ResponseError::TopicAuthorizationFailed,
            format!(
                "{topic} is the broker's internal topic: the group coordinator writes it and replays it at \
                 start-up, so clients may read it but not {action}"
            ),
        )
    }
}

/// An engine error as Kafka's error ([`response_error`]) with the engine's text.
impl From<EngineError> for Refusal {
    fn from(error: EngineError) -> Refusal {
        Refusal { error: response_error(&error), message: error.to_string() }
    }
}

/// Resolves a request's topics against a [`TopicDirectory`], and on a node of a
/// cluster against the metadata image; see the module doc.
pub struct Resolver<'a> {
    directory: &'a dyn TopicDirectory,
    cluster: Option<ClusterTopics>,
}

/// The cluster's metadata as a node's resolver checks against it.
#[derive(Debug, Clone)]
struct ClusterTopics {
    image: Arc<MetadataImage>,
    node_id: NodeId,
}

impl<'a> Resolver<'a> {
    /// A single broker's resolver: the engine's registry is the truth.
    pub fn new(directory: &'a dyn TopicDirectory) -> Resolver<'a> {
        Resolver { directory, cluster: None }
    }

    /// A cluster node's resolver: topics, partitions, leaders and leader epochs as
    /// `image` has them; `directory` says which replicas this node holds.
    pub fn in_cluster(directory: &'a dyn TopicDirectory, image: Arc<MetadataImage>, node_id: NodeId) -> Resolver<'a> {
        Resolver { directory, cluster: Some(ClusterTopics { image, node_id }) }
    }

    /// Checks 1 and 2 of the module doc, and looks the topic up. The topic need not
    /// exist: [`ResolvedTopic::metadata`] and [`ResolvedTopic::partition`] say so.
    pub fn topic(&self, topic: TopicRef<'_>, intent: Intent) -> Result<ResolvedTopic, Refusal> {
        let name = match topic {
            TopicRef::Name(raw) => TopicName::new(raw)?,
            TopicRef::Id(id) => {
                let in_image = self.cluster.as_ref().and_then(|c| c.image.topic_by_id(id)).map(|t| t.name.clone());
                match in_image {
                    Some(name) => TopicName::new(name)?,
                    None => match self.directory.topic_by_id(id) {
                        Some(metadata) if self.cluster.is_none() => metadata.name,
                        _ => {
                            return Err(Refusal::new(
                                ResponseError::UnknownTopicId,
                                format!("no topic has the id {id}"),
                            ))
                        }
                    },
                }
            }
        };
        if let Intent::Alter(action) = intent {
            if is_internal(&name) {
                return Err(Refusal::internal_topic(&name, action));
            }
        }
        let metadata = self.directory.topic(&name);
        let cluster = self.cluster.clone();
        Ok(ResolvedTopic { name, metadata, intent, cluster })
    }
}

/// A topic of a request whose name (or id) resolved; it may not exist.
#[derive(Debug, Clone)]
pub struct ResolvedTopic {
    name: TopicName,
    /// The engine's topic (on a cluster node: this broker's replicas of it).
    metadata: Option<TopicMetadata>,
    intent: Intent,
    cluster: Option<ClusterTopics>,
}

impl ResolvedTopic {
    pub fn name(&self) -> &TopicName {
        &self.name
    }

    /// The topic as the engine's registry had it at resolution, or
    /// UNKNOWN_TOPIC_OR_PARTITION. On a cluster node, this broker's replicas of it,
    /// which the reconciler may not have created yet: the cluster's topic is the image's.
    pub fn metadata(&self) -> Result<&TopicMetadata, Refusal> {
        self.metadata.as_ref().ok_or_else(|| EngineError::UnknownTopicOrPartition(self.name.to_string()).into())
    }

    /// Checks 3 to 8 of the module doc for one partition of this topic.
    pub fn partition(&self, wanted: PartitionRef) -> Result<ResolvedPartition, Refusal> {
        if let Some(cluster) = &self.cluster {
            return self.cluster_partition(cluster, wanted);
        }
        let metadata = self.metadata()?;
        let partition = TopicPartition::new(self.name.clone(), PartitionId(wanted.index));
        if !(0..metadata.partition_count).contains(&wanted.index) {
            return Err(EngineError::UnknownTopicOrPartition(partition.to_string()).into());
        }
        self.check_internal_write(&partition)?;
        check_current_leader_epoch(wanted.current_leader_epoch, LEADER_EPOCH)?;
        Ok(ResolvedPartition { partition, leader_epoch: LEADER_EPOCH })
    }

    /// Check 5: clients never write to the internal topic.
    fn check_internal_write(&self, partition: &TopicPartition) -> Result<(), Refusal> {
        if self.intent == Intent::Write && is_internal(&self.name) {
            return Err(Refusal::new(
                ResponseError::InvalidTopicException,
                format!("{partition}: clients may not write to or delete from the broker's internal topic"),
            ));
        }
        Ok(())
    }

    /// Checks 3 to 8 against the cluster's image.
    fn cluster_partition(&self, cluster: &ClusterTopics, wanted: PartitionRef) -> Result<ResolvedPartition, Refusal> {
        let partition = TopicPartition::new(self.name.clone(), PartitionId(wanted.index));
        let unknown = || -> Refusal { EngineError::UnknownTopicOrPartition(partition.to_string()).into() };
        let topic = cluster.image.topic(self.name.as_str()).ok_or_else(unknown)?;
        let state = usize::try_from(wanted.index).ok().and_then(|i| topic.partitions.get(i)).ok_or_else(unknown)?;
        self.check_internal_write(&partition)?;
        let leader_epoch = LeaderEpoch(state.leader_epoch);
        check_current_leader_epoch(wanted.current_leader_epoch, leader_epoch)?;
        if matches!(self.intent, Intent::Read | Intent::Write) {
            if state.leader != cluster.node_id {
                let leader = match state.has_leader() {
                    true => format!("broker {} leads it", state.leader),
                    false => "no broker leads it".to_string(),
                };
                return Err(Refusal::new(
                    ResponseError::NotLeaderOrFollower,
                    format!(
                        "{partition}: {leader} (leader epoch {}), not this broker {}",
                        leader_epoch.0, cluster.node_id
                    ),
                ));
            }
            let held = self.metadata.as_ref().is_some_and(|m| m.id == topic.id && wanted.index < m.partition_count);
            if !held {
                return Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("{partition}: this broker leads it but has not created its replica yet"),
                ));
            }
        }
        Ok(ResolvedPartition { partition, leader_epoch })
    }
}

/// A partition of a request that this broker serves for the handler's [`Intent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPartition {
    pub partition: TopicPartition,
    /// The partition's leader epoch (on a cluster node, the image's): what appends
    /// stamp and ListOffsets and OffsetForLeaderEpoch answer.
    pub leader_epoch: LeaderEpoch,
}

/// Resolves one partition of a topic that may itself have been refused: a topic's
/// refusal is each of its partitions' answer.
pub fn partition_of(
    topic: &Result<ResolvedTopic, Refusal>,
    wanted: PartitionRef,
) -> Result<ResolvedPartition, Refusal> {
    match topic {
        Ok(topic) => topic.partition(wanted),
        Err(refusal) => Err(refusal.clone()),
    }
}

/// A Kafka leader's check of the epoch the client believes current against the
/// partition's `leader_epoch`: [`UNDEFINED_EPOCH`] skips it.
fn check_current_leader_epoch(current: LeaderEpoch, leader_epoch: LeaderEpoch) -> Result<(), Refusal> {
    let error = if current == UNDEFINED_EPOCH || current == leader_epoch {
        return Ok(());
    } else if current < leader_epoch {
        ResponseError::FencedLeaderEpoch
    } else {
        ResponseError::UnknownLeaderEpoch
    };
    Err(Refusal::new(error, format!("the current leader epoch is {}, not {}", leader_epoch.0, current.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corelog_engine::config::TopicConfig;

    /// A registry of `(name, id, partition count)`.
    struct Registry(Vec<TopicMetadata>);

    impl Registry {
        fn new(topics: &[(&str, u128, i32)]) -> Registry {
            Registry(
                topics
                    .iter()
                    .map(|&(name, id, partition_count)| TopicMetadata {
                        name: TopicName::new(name).unwrap(),
                        id: TopicId(id),
                        partition_count,
                        config: TopicConfig::default(),
                    })
                    .collect(),
            )
        }
    }

    impl TopicDirectory for Registry {
        fn topic(&self, name: &TopicName) -> Option<TopicMetadata> {
            self.0.iter().find(|metadata| metadata.name == *name).cloned()
        }

        fn topic_by_id(&self, id: TopicId) -> Option<TopicMetadata> {
            self.0.iter().find(|metadata| metadata.id == id).cloned()
        }
    }

    fn registry() -> Registry {
        Registry::new(&[("orders", 7, 3), (crate::group::OFFSETS_TOPIC, 9, 50)])
    }

    /// The error of resolving `partition` of the topic `name` for `intent`, if any.
    fn error(registry: &Registry, name: &str, intent: Intent, partition: PartitionRef) -> Option<ResponseError> {
        let topic = Resolver::new(registry).topic(TopicRef::Name(name), intent);
        partition_of(&topic, partition).err().map(|refusal| refusal.error)
    }

    #[test]
    fn a_partition_of_a_known_topic_resolves_at_the_broker_leader_epoch() {
        let registry = registry();
        let topic = Resolver::new(&registry).topic(TopicRef::Name("orders"), Intent::Read).unwrap();
        assert_eq!(topic.name().as_str(), "orders");
        assert_eq!(topic.metadata().unwrap().partition_count, 3);
        let resolved = topic.partition(PartitionRef::new(2)).unwrap();
        assert_eq!(resolved.partition, TopicPartition::new(TopicName::new("orders").unwrap(), PartitionId(2)));
        assert_eq!(resolved.leader_epoch, LEADER_EPOCH);
    }

    #[test]
    fn an_unknown_topic_is_unknown_topic_or_partition_for_every_intent() {
        let registry = registry();
        for intent in [Intent::Describe, Intent::Read, Intent::Write, Intent::Alter("change it")] {
            let topic = Resolver::new(&registry).topic(TopicRef::Name("missing"), intent).unwrap();
            assert_eq!(topic.metadata().unwrap_err().error, ResponseError::UnknownTopicOrPartition);
            assert_eq!(topic.metadata().unwrap_err().message, "unknown topic or partition missing");
            assert_eq!(
                error(&registry, "missing", intent, PartitionRef::new(0)),
                Some(ResponseError::UnknownTopicOrPartition)
            );
        }
    }

    #[test]
    fn a_name_kafka_refuses_is_invalid_topic_exception_for_the_topic_and_each_partition() {
        let registry = registry();
        for name in ["", ".", "..", "a/b", "with space", &"x".repeat(250)] {
            let topic = Resolver::new(&registry).topic(TopicRef::Name(name), Intent::Read);
            let refusal = topic.as_ref().unwrap_err();
            assert_eq!(refusal.error, ResponseError::InvalidTopicException, "{name:?}");
            assert!(refusal.message.starts_with("invalid topic name"), "{name:?}: {}", refusal.message);
            assert_eq!(
                partition_of(&topic, PartitionRef::new(0)).unwrap_err().error,
                ResponseError::InvalidTopicException
            );
        }
    }

    #[test]
    fn a_partition_index_out_of_range_is_unknown_topic_or_partition() {
        let registry = registry();
        for index in [-1, 3, 4, i32::MAX, i32::MIN] {
            assert_eq!(
                error(&registry, "orders", Intent::Read, PartitionRef::new(index)),
                Some(ResponseError::UnknownTopicOrPartition),
                "partition {index}"
            );
        }
        assert_eq!(error(&registry, "orders", Intent::Read, PartitionRef::new(0)), None);
    }

    #[test]
    fn a_topic_id_resolves_to_its_topic_or_to_unknown_topic_id() {
        let registry = registry();
        let resolver = Resolver::new(&registry);
        let topic = resolver.topic(TopicRef::Id(TopicId(7)), Intent::Read).unwrap();
        assert_eq!(topic.name().as_str(), "orders");
        assert_eq!(topic.partition(PartitionRef::new(1)).unwrap().partition.to_string(), "orders-1");
        let refused = resolver.topic(TopicRef::Id(TopicId(8)), Intent::Read).unwrap_err();
        assert_eq!(refused.error, ResponseError::UnknownTopicId);
        let internal = resolver.topic(TopicRef::Id(TopicId(9)), Intent::Alter("delete it")).unwrap_err();
        assert_eq!(internal.error, ResponseError::TopicAuthorizationFailed, "the internal topic by id too");
    }

    #[test]
    fn internal_topics_are_read_freely_but_refused_writes_and_alterations() {
        let registry = registry();
        let offsets = crate::group::OFFSETS_TOPIC;
        for intent in [Intent::Describe, Intent::Read] {
            assert_eq!(error(&registry, offsets, intent, PartitionRef::new(0)), None, "{intent:?}");
        }
        assert_eq!(
            error(&registry, offsets, Intent::Write, PartitionRef::new(0)),
            Some(ResponseError::InvalidTopicException)
        );
        assert_eq!(
            error(&registry, offsets, Intent::Write, PartitionRef::new(50)),
            Some(ResponseError::UnknownTopicOrPartition),
            "a partition that does not exist is unknown before it is refused"
        );
        let altered = Resolver::new(&registry).topic(TopicRef::Name(offsets), Intent::Alter("delete it")).unwrap_err();
        assert_eq!(altered.error, ResponseError::TopicAuthorizationFailed);
        assert!(altered.message.ends_with("so clients may read it but not delete it"), "{}", altered.message);
        assert!(Resolver::new(&registry).topic(TopicRef::Name("orders"), Intent::Alter("delete it")).is_ok());
        assert_eq!(error(&registry, "orders", Intent::Write, PartitionRef::new(0)), None);
    }

    #[test]
    fn current_leader_epochs_other_than_ours_are_fenced_or_unknown() {
        let registry = registry();
        let at = |epoch| PartitionRef::new(0).with_current_leader_epoch(LeaderEpoch(epoch));
        assert_eq!(error(&registry, "orders", Intent::Read, at(-1)), None);
        assert_eq!(error(&registry, "orders", Intent::Read, at(0)), None);
        assert_eq!(error(&registry, "orders", Intent::Read, at(1)), Some(ResponseError::UnknownLeaderEpoch));
        assert_eq!(error(&registry, "orders", Intent::Read, at(-2)), Some(ResponseError::FencedLeaderEpoch));
        assert_eq!(
            error(&registry, "orders", Intent::Read, PartitionRef::new(3).with_current_leader_epoch(LeaderEpoch(1))),
            Some(ResponseError::UnknownTopicOrPartition),
            "an unknown partition has no epoch to compare"
        );
    }

    /// An image where `orders` (id 7) has 2 partitions: 0 led by broker 1 at epoch
    /// 0, 1 led by broker 2 and then by nobody (epoch 1).
    fn cluster_image() -> Arc<MetadataImage> {
        use crate::cluster::records::MetadataRecord;
        let mut image = MetadataImage::default();
        let topic_id = TopicId(7);
        let records = [
            MetadataRecord::Topic { name: "orders".into(), topic_id, configs: Default::default() },
            MetadataRecord::Partition { topic_id, partition: 0, replicas: vec![1, 2], isr: vec![1, 2], leader: 1 },
            MetadataRecord::Partition { topic_id, partition: 1, replicas: vec![2, 1], isr: vec![2, 1], leader: 2 },
            MetadataRecord::Partition { topic_id, partition: 1, replicas: vec![2, 1], isr: vec![2], leader: -1 },
            MetadataRecord::Topic {
                name: crate::group::OFFSETS_TOPIC.into(),
                topic_id: TopicId(9),
                configs: Default::default(),
            },
            MetadataRecord::Partition {
                topic_id: TopicId(9),
                partition: 0,
                replicas: vec![5],
                isr: vec![5],
                leader: 5,
            },
            MetadataRecord::Partition {
                topic_id: TopicId(9),
                partition: 1,
                replicas: vec![6],
                isr: vec![6],
                leader: 6,
            },
        ];
        for (index, record) in records.iter().enumerate() {
            image.apply(index as u64 + 1, record).unwrap();
        }
        Arc::new(image)
    }

    fn cluster_error(
        registry: &Registry,
        node_id: NodeId,
        name: &str,
        intent: Intent,
        partition: PartitionRef,
    ) -> Option<ResponseError> {
        let topic = Resolver::in_cluster(registry, cluster_image(), node_id).topic(TopicRef::Name(name), intent);
        partition_of(&topic, partition).err().map(|refusal| refusal.error)
    }

    #[test]
    fn in_a_cluster_only_the_leader_resolves_reads_and_writes_at_the_images_epoch() {
        let registry = Registry::new(&[("orders", 7, 2)]);
        let resolver = Resolver::in_cluster(&registry, cluster_image(), 1);
        for intent in [Intent::Read, Intent::Write] {
            let topic = resolver.topic(TopicRef::Name("orders"), intent).unwrap();
            assert_eq!(topic.partition(PartitionRef::new(0)).unwrap().leader_epoch, LeaderEpoch(0));
            let refused = topic.partition(PartitionRef::new(1)).unwrap_err();
            assert_eq!(refused.error, ResponseError::NotLeaderOrFollower, "{intent:?}");
            assert!(refused.message.contains("no broker leads it"), "{}", refused.message);
            let other = cluster_error(&registry, 2, "orders", intent, PartitionRef::new(0));
            assert_eq!(other, Some(ResponseError::NotLeaderOrFollower), "broker 2 follows partition 0");
        }
        for intent in [Intent::Describe, Intent::Alter("change it")] {
            let topic = resolver.topic(TopicRef::Name("orders"), intent).unwrap();
            assert_eq!(topic.partition(PartitionRef::new(1)).unwrap().leader_epoch, LeaderEpoch(1), "{intent:?}");
        }
    }

    #[test]
    fn in_a_cluster_the_image_says_what_exists_and_the_engine_whether_the_replica_is_here() {
        let registry = Registry::new(&[("orders", 7, 2), ("stale", 3, 1)]);
        let at = PartitionRef::new;
        assert_eq!(
            cluster_error(&registry, 1, "orders", Intent::Read, at(2)),
            Some(ResponseError::UnknownTopicOrPartition)
        );
        assert_eq!(
            cluster_error(&registry, 1, "stale", Intent::Describe, at(0)),
            Some(ResponseError::UnknownTopicOrPartition),
            "a local topic the image no longer has is unknown"
        );
        let not_yet = Registry::new(&[]);
        assert_eq!(cluster_error(&not_yet, 1, "orders", Intent::Describe, at(0)), None);
        assert_eq!(
            cluster_error(&not_yet, 1, "orders", Intent::Write, at(0)),
            Some(ResponseError::UnknownTopicOrPartition),
            "led here, but the reconciler has not created it yet"
        );
        let old_incarnation = Registry::new(&[("orders", 6, 2)]);
        assert_eq!(
            cluster_error(&old_incarnation, 1, "orders", Intent::Read, at(0)),
            Some(ResponseError::UnknownTopicOrPartition)
        );
        let resolver = Resolver::in_cluster(&registry, cluster_image(), 1);
        assert_eq!(resolver.topic(TopicRef::Id(TopicId(7)), Intent::Read).unwrap().name().as_str(), "orders");
        assert_eq!(
            resolver.topic(TopicRef::Id(TopicId(3)), Intent::Read).unwrap_err().error,
            ResponseError::UnknownTopicId
        );
    }

    #[test]
    fn in_a_cluster_the_current_leader_epoch_is_checked_against_the_images_before_leadership() {
        let registry = Registry::new(&[("orders", 7, 2)]);
        let at = |epoch| PartitionRef::new(1).with_current_leader_epoch(LeaderEpoch(epoch));
        assert_eq!(cluster_error(&registry, 2, "orders", Intent::Read, at(0)), Some(ResponseError::FencedLeaderEpoch));
        assert_eq!(cluster_error(&registry, 2, "orders", Intent::Read, at(2)), Some(ResponseError::UnknownLeaderEpoch));
        assert_eq!(
            cluster_error(&registry, 2, "orders", Intent::Read, at(1)),
            Some(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(cluster_error(&registry, 2, "orders", Intent::Describe, at(1)), None);
    }

    #[test]
    fn in_a_cluster_the_internal_topic_resolves_at_its_leader_and_keeps_its_refusals() {
        let registry = registry();
        let offsets = crate::group::OFFSETS_TOPIC;
        assert_eq!(cluster_error(&registry, 5, offsets, Intent::Read, PartitionRef::new(0)), None);
        assert_eq!(
            cluster_error(&registry, 5, offsets, Intent::Read, PartitionRef::new(1)),
            Some(ResponseError::NotLeaderOrFollower),
            "broker 6 leads partition 1: a follower fetches it from there"
        );
        assert_eq!(
            cluster_error(&registry, 5, offsets, Intent::Write, PartitionRef::new(0)),
            Some(ResponseError::InvalidTopicException)
        );
        let altered = Resolver::in_cluster(&registry, cluster_image(), 5)
            .topic(TopicRef::Name(offsets), Intent::Alter("delete it"))
            .unwrap_err();
        assert_eq!(altered.error, ResponseError::TopicAuthorizationFailed);
    }
}
