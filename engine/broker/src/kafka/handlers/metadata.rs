//! Metadata (key 3), v0–v12: brokers, topics and partition leaders. Requested topics
//! that do not exist are created when both the request and the broker allow it
//! (`auto_create_topics`), with the broker's default partition count and configs.
//!
//! A partition that is offline because its files are damaged is listed with
//! `KAFKA_STORAGE_ERROR`, this broker still its leader (so clients send it their
//! requests and get the same error, as from Kafka for a partition in an offline log
//! directory), an empty ISR and this broker as its offline replica.
//!
//! On a node of a cluster the answer is the metadata image's: the live (unfenced)
//! brokers with their registered addresses, the quorum's leader as the controller
//! (-1 while there is none), and per partition its leader and leader epoch,
//! replicas, ISR and offline replicas (replicas that are not live brokers); a
//! partition without a leader has LEADER_NOT_AVAILABLE, as in Kafka. Topics are
//! auto-created through the active controller with the broker's default partition
//! count and `default.replication.factor` (INVALID_REPLICATION_FACTOR with fewer
//! live brokers, as Kafka), and the topic is answered LEADER_NOT_AVAILABLE, which
//! clients retry, as Kafka answers a topic it just asked its controller for. The
//! internal topic is every broker's own while groups are not replicated: not
//! listed among all topics, and when named, answered as on a single broker.

use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::controller;
use super::resolve::{Intent, Refusal, TopicRef, LEADER_EPOCH};
use super::{RequestContext, Versions};
use crate::cluster::controller::Placement;
use crate::cluster::image::{MetadataImage, PartitionImage, TopicImage};
use crate::cluster::quorum::ControllerRequest;
use crate::cluster::records::NO_LEADER;
use crate::cluster::view::ClusterView;
use crate::is_internal;
use corelog_engine::error::EngineError;
use corelog_engine::shard::TopicMetadata;
use corelog_engine::types::{PartitionId, TopicName};

pub const VERSIONS: Versions = Versions::new(0, 12);

/// How long an auto-creation tries to reach the active controller before the topic
/// is answered LEADER_NOT_AVAILABLE (the client asks again).
const AUTO_CREATE_TIMEOUT: Duration = Duration::from_secs(3);

/// The topics a request names: `None` for all.
type Requested = Option<Vec<kafka_protocol::messages::TopicName>>;

pub async fn handle(context: &RequestContext<'_>, request: MetadataRequest) -> MetadataResponse {
    let broker = &context.shard.broker;
    // v0 asks for every topic with an empty list, v1+ with a null one.
    let requested: Requested = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && context.version == 0 => None,
        Some(topics) => Some(topics.into_iter().filter_map(|t| t.name).collect()),
    };
    let allow_create = broker.config.auto_create_topics && (context.version < 4 || request.allow_auto_topic_creation);
    let (brokers, controller_id, topics) = match &context.shard.cluster {
        Some(view) => cluster(context, view, requested, allow_create).await,
        None => single(context, requested, allow_create).await,
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(controller_id)
        .with_topics(topics)
}

/// A single broker's brokers (itself), controller (itself) and topics.
async fn single(
    context: &RequestContext<'_>,
    requested: Requested,
    allow_create: bool,
) -> (Vec<MetadataResponseBroker>, BrokerId, Vec<MetadataResponseTopic>) {
    let broker = &context.shard.broker;
    let engine = &context.shard.engine;
    let node_id = BrokerId(broker.config.node_id);
    let (host, port) = broker.advertised();
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node_id)
        .with_host(StrBytes::from_string(host))
        .with_port(port as i32)];
    let topics = match requested {
        None => engine.topics().iter().map(|m| topic_entry(context, m, node_id)).collect(),
        Some(names) => {
            let mut topics = Vec::with_capacity(names.len());
            for raw_name in names {
                let entry = match lookup(context, raw_name.0.as_str(), allow_create).await {
                    Ok(metadata) => topic_entry(context, &metadata, node_id),
                    Err(refusal) => {
                        MetadataResponseTopic::default().with_name(Some(raw_name)).with_error_code(refusal.error.code())
                    }
                };
                topics.push(entry);
            }
            topics
        }
    };
    (brokers, node_id, topics)
}

/// A cluster node's answer: brokers, controller and topics from the metadata image.
async fn cluster(
    context: &RequestContext<'_>,
    view: &ClusterView,
    requested: Requested,
    allow_create: bool,
) -> (Vec<MetadataResponseBroker>, BrokerId, Vec<MetadataResponseTopic>) {
    let image = view.image();
    let brokers = image
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect();
    let controller_id = BrokerId(view.quorum_status().leader.unwrap_or(NO_LEADER));
    let topics = match requested {
        None => image.topics.values().map(|t| cluster_topic_entry(context, &image, t)).collect(),
        Some(names) => {
            let mut topics = Vec::with_capacity(names.len());
            for raw_name in names {
                let error_entry = |error: ResponseError| {
                    MetadataResponseTopic::default().with_name(Some(raw_name.clone())).with_error_code(error.code())
                };
                let name = match context.resolver().topic(TopicRef::Name(raw_name.0.as_str()), Intent::Describe) {
                    Ok(topic) => topic.name().clone(),
                    Err(refusal) => {
                        topics.push(error_entry(refusal.error));
                        continue;
                    }
                };
                // The internal topic is created by FindCoordinator, never by Metadata.
                let entry = match image.topic(name.as_str()) {
                    Some(topic) => cluster_topic_entry(context, &image, topic),
                    None if allow_create && !is_internal(&name) => {
                        error_entry(auto_create(context, view, name.as_str()).await)
                    }
                    None => error_entry(ResponseError::UnknownTopicOrPartition),
                };
                topics.push(entry);
            }
            topics
        }
    };
    (brokers, controller_id, topics)
}

/// Asks the active controller for the topic `name` with the broker's defaults: the
/// topic's answer, LEADER_NOT_AVAILABLE unless the controller refused.
async fn auto_create(context: &RequestContext<'_>, view: &ClusterView, name: &str) -> ResponseError {
    let config = &context.shard.broker.config;
    let placement = Placement::Spread {
        partitions: config.default_partitions,
        replication_factor: config.cluster.default_replication_factor,
    };
    let request = ControllerRequest::CreateTopic { name: name.to_string(), placement, configs: Default::default() };
    match controller::ask(view, request, Instant::now() + AUTO_CREATE_TIMEOUT).await {
        Ok(_) => {
            tracing::info!(
                "auto-created topic {name} with {} partitions of {} replicas",
                config.default_partitions,
                config.cluster.default_replication_factor
            );
            ResponseError::LeaderNotAvailable
        }
        // Another broker's client created it, or no controller answered: ask again.
        Err(refusal)
            if matches!(
                refusal.error,
                ResponseError::TopicAlreadyExists | ResponseError::NotController | ResponseError::RequestTimedOut
            ) =>
        {
            tracing::debug!("auto-creating topic {name}: {}", refusal.message);
            ResponseError::LeaderNotAvailable
        }
        Err(refusal) => {
            tracing::info!("auto-creating topic {name}: {}", refusal.message);
            refusal.error
        }
    }
}

fn cluster_topic_entry(
    context: &RequestContext<'_>,
    image: &MetadataImage,
    topic: &TopicImage,
) -> MetadataResponseTopic {
    let node_id = context.shard.broker.config.node_id;
    // Damaged partitions of this broker's replicas: this broker answers for those it leads.
    let offline = match TopicName::new(topic.name.as_str()) {
        Ok(name) => context.shard.engine.offline_partitions(&name),
        Err(_) => Default::default(),
    };
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let index = index as i32;
            let damaged_here = state.leader == node_id && offline.contains(&PartitionId(index));
            cluster_partition_entry(image, index, state, damaged_here)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(kafka_protocol::messages::TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(uuid::Uuid::from_u128(topic.id.0))
        .with_is_internal(crate::is_internal_name(&topic.name))
        .with_partitions(partitions)
}

fn cluster_partition_entry(
    image: &MetadataImage,
    index: i32,
    state: &PartitionImage,
    damaged_here: bool,
) -> MetadataResponsePartition {
    let ids = |nodes: &[i32]| nodes.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let offline: Vec<i32> = state.replicas.iter().copied().filter(|id| !image.is_live(*id)).collect();
    let error = if !state.has_leader() {
        Some(ResponseError::LeaderNotAvailable)
    } else if damaged_here {
        Some(ResponseError::KafkaStorageError)
    } else {
        None
    };
    MetadataResponsePartition::default()
        .with_error_code(super::wire_code(error))
        .with_partition_index(index)
        .with_leader_id(BrokerId(state.leader))
        .with_leader_epoch(state.leader_epoch)
        .with_replica_nodes(ids(&state.replicas))
        .with_isr_nodes(ids(&state.isr))
        .with_offline_replicas(ids(&offline))
}

/// The topic's metadata, creating it if allowed.
async fn lookup(context: &RequestContext<'_>, raw_name: &str, allow_create: bool) -> Result<TopicMetadata, Refusal> {
    let topic = context.resolver().topic(TopicRef::Name(raw_name), Intent::Describe)?;
    match topic.metadata() {
        Ok(metadata) => return Ok(metadata.clone()),
        Err(unknown) if !allow_create => return Err(unknown),
        Err(_) => {}
    }
    let name = topic.name();
    let engine = &context.shard.engine;
    let broker = &context.shard.broker;
    match engine
        .create_topic(name.clone(), broker.config.default_partitions, broker.config.topic_defaults.clone())
        .await
    {
        Ok(metadata) => {
            tracing::info!("auto-created topic {name} with {} partitions", metadata.partition_count);
            Ok(metadata)
        }
        // Another connection created it first.
        Err(EngineError::TopicAlreadyExists(_)) => {
            context.resolver().topic(TopicRef::Name(raw_name), Intent::Describe)?.metadata().cloned()
        }
        Err(error) => Err(error.into()),
    }
}

fn topic_entry(context: &RequestContext<'_>, metadata: &TopicMetadata, node_id: BrokerId) -> MetadataResponseTopic {
    let offline = context.shard.engine.offline_partitions(&metadata.name);
    let partitions = (0..metadata.partition_count)
        .map(|index| {
            let partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node_id)
                .with_leader_epoch(LEADER_EPOCH.0)
                .with_replica_nodes(vec![node_id]);
            if offline.contains(&PartitionId(index)) {
                partition
                    .with_error_code(ResponseError::KafkaStorageError.code())
                    .with_isr_nodes(Vec::new())
                    .with_offline_replicas(vec![node_id])
            } else {
                partition.with_isr_nodes(vec![node_id])
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(kafka_protocol::messages::TopicName(StrBytes::from_string(metadata.name.to_string()))))
        .with_topic_id(uuid::Uuid::from_u128(metadata.id.0))
        .with_is_internal(crate::is_internal(&metadata.name))
        .with_partitions(partitions)
}
