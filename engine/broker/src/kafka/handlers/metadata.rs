//! Metadata (key 3), v0–v12: brokers, topics and partition leaders. Requested topics
//! that do not exist are created when both the request and the broker allow it
//! (`auto_create_topics`), with the broker's default partition count and configs.
//!
//! A partition that is offline because its files are damaged is listed with
//! `KAFKA_STORAGE_ERROR`, this broker still its leader (so clients send it their
//! requests and get the same error, as from Kafka for a partition in an offline log
//! directory), an empty ISR and this broker as its offline replica.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::resolve::{Intent, Refusal, TopicRef, LEADER_EPOCH};
use super::{RequestContext, Versions};
use corelog_engine::error::EngineError;
use corelog_engine::shard::TopicMetadata;
use corelog_engine::types::PartitionId;

pub const VERSIONS: Versions = Versions::new(0, 12);

pub async fn handle(context: &RequestContext<'_>, request: MetadataRequest) -> MetadataResponse {
    let broker = &context.shard.broker;
    let engine = &context.shard.engine;
    let node_id = BrokerId(broker.config.node_id);
    let (host, port) = broker.advertised();
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(node_id)
        .with_host(StrBytes::from_string(host))
        .with_port(port as i32)];

    // v0 asks for every topic with an empty list, v1+ with a null one.
    let requested: Option<Vec<kafka_protocol::messages::TopicName>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && context.version == 0 => None,
        Some(topics) => Some(topics.into_iter().filter_map(|t| t.name).collect()),
    };
    let allow_create = broker.config.auto_create_topics && (context.version < 4 || request.allow_auto_topic_creation);
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
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(node_id)
        .with_topics(topics)
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
