//! CreateTopics (key 19), v2–v7: creates topics with a partition count and topic
//! configs, or with `validate_only` checks the same things and creates nothing.
//! Configs are validated all together by [`topic::set_all`], as AlterConfigs
//! does; v5+ answers with the new topic's configs, described as DescribeConfigs does.
//!
//! On a node of a cluster the active controller creates the topic
//! ([`controller::ask`]): its replicas spread over the live brokers with the
//! replication factor asked for (-1: `default.replication.factor`), or placed as
//! the request's `assignments` say (then partition count and replication factor
//! must be -1, as in Kafka); the configs are validated here first. The answer
//! comes once this broker's metadata shows the topic, with the id the controller
//! gave it. `validate_only` is the controller's decision made here without
//! proposing it ([`controller::dry_run`]). The internal topic cannot be created:
//! every broker holds its own while groups are not replicated.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::config_resources::{failed, topic_config_entries, Failure};
use super::controller;
use super::resolve::Refusal;
use super::{RequestContext, Versions};
use crate::cluster::controller::Placement;
use crate::cluster::quorum::ControllerRequest;
use crate::cluster::view::ClusterView;
use crate::config::topic;
use crate::is_internal;
use corelog_engine::config::TopicConfig;
use corelog_engine::error::EngineError;
use corelog_engine::types::TopicName;

pub const VERSIONS: Versions = Versions::new(2, 7);

pub async fn handle(context: &RequestContext<'_>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        let outcome = match &context.shard.cluster {
            Some(view) => create_in_cluster(context, view, &topic, request.validate_only, request.timeout_ms).await,
            None => create(context, &topic, request.validate_only).await,
        };
        match outcome {
            Ok(Created { partitions, replication_factor, topic_id, config }) => {
                result = result
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_topic_id(topic_id);
                if context.version >= 5 {
                    let configs = topic_config_entries(&config, &context.shard.broker.config.topic_defaults)
                        .into_iter()
                        .map(|entry| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_string(entry.name))
                                .with_value(Some(StrBytes::from_string(entry.value)))
                                .with_read_only(entry.read_only)
                                .with_config_source(entry.source.code())
                                .with_is_sensitive(false)
                        })
                        .collect();
                    result = result.with_configs(Some(configs));
                }
            }
            Err((error, message)) => {
                result = result.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// What a created (or validated) topic is answered with.
struct Created {
    partitions: i32,
    replication_factor: i16,
    /// Nil when nothing was created (`validate_only`).
    topic_id: uuid::Uuid,
    config: TopicConfig,
}

async fn create(context: &RequestContext<'_>, topic: &CreatableTopic, validate_only: bool) -> Result<Created, Failure> {
    let name = TopicName::new(topic.name.0.as_str()).map_err(failed)?;
    let broker = &context.shard.broker;
    if topic.replication_factor != -1 && topic.replication_factor != 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {} is not possible: this cluster has one broker", topic.replication_factor),
        ));
    }
    if !topic.assignments.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "manual replica assignment is not supported".to_string(),
        ));
    }
    let partitions = if topic.num_partitions == -1 { broker.config.default_partitions } else { topic.num_partitions };
    let mut config: TopicConfig = broker.config.topic_defaults.clone();
    let entries = topic
        .configs
        .iter()
        .filter_map(|entry| entry.value.as_ref().map(|value| (entry.name.as_str(), value.as_str())));
    topic::set_all(&mut config, entries).map_err(failed)?;
    let engine = &context.shard.engine;
    if validate_only {
        if !(1..=corelog_engine::config::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(failed(EngineError::InvalidPartitionCount(partitions)));
        }
        if engine.topic(&name).is_some() {
            return Err(failed(EngineError::TopicAlreadyExists(name.to_string())));
        }
        // Nothing was created, so there is no topic id to report.
        return Ok(Created { partitions, replication_factor: 1, topic_id: uuid::Uuid::nil(), config });
    }
    let metadata = engine.create_topic(name.clone(), partitions, config.clone()).await.map_err(failed)?;
    tracing::info!("created topic {name} with {partitions} partitions, topic id {}", metadata.id);
    Ok(Created { partitions, replication_factor: 1, topic_id: uuid::Uuid::from_u128(metadata.id.0), config })
}

async fn create_in_cluster(
    context: &RequestContext<'_>,
    view: &ClusterView,
    topic: &CreatableTopic,
    validate_only: bool,
    timeout_ms: i32,
) -> Result<Created, Failure> {
    let name = TopicName::new(topic.name.0.as_str()).map_err(failed)?;
    if is_internal(&name) {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("{name} is the broker's internal topic: every broker of the cluster holds its own"),
        ));
    }
    let broker = &context.shard.broker;
    let configs: BTreeMap<String, String> = topic
        .configs
        .iter()
        .filter_map(|entry| entry.value.as_ref().map(|value| (entry.name.to_string(), value.to_string())))
        .collect();
    let mut config: TopicConfig = broker.config.topic_defaults.clone();
    topic::set_all(&mut config, configs.iter().map(|(key, value)| (key.as_str(), value.as_str()))).map_err(failed)?;
    let placement = placement(context, topic)?;
    let (partitions, replication_factor) = match &placement {
        Placement::Spread { partitions, replication_factor } => (*partitions, *replication_factor),
        Placement::Manual(lists) => (lists.len() as i32, lists.first().map_or(0, Vec::len) as i32),
    };
    let request = ControllerRequest::CreateTopic { name: name.to_string(), placement, configs };
    let refused = |refusal: Refusal| (refusal.error, refusal.message);
    let replication_factor = i16::try_from(replication_factor).unwrap_or(i16::MAX);
    if validate_only {
        controller::dry_run(&view.image(), &request).map_err(refused)?;
        return Ok(Created { partitions, replication_factor, topic_id: uuid::Uuid::nil(), config });
    }
    controller::ask(view, request, controller::deadline(timeout_ms)).await.map_err(refused)?;
    let image = view.image();
    let topic_id = image.topic(name.as_str()).map_or(uuid::Uuid::nil(), |t| uuid::Uuid::from_u128(t.id.0));
    tracing::info!(
        "created topic {name} with {partitions} partitions of {replication_factor} replicas, topic id {topic_id}"
    );
    Ok(Created { partitions, replication_factor, topic_id, config })
}

/// Where the request puts the new topic's replicas: spread (partition count and
/// replication factor, -1 for the broker's defaults) or its own assignment (one
/// replica list per partition, partitions numbered from 0 without gaps).
fn placement(context: &RequestContext<'_>, topic: &CreatableTopic) -> Result<Placement, Failure> {
    let config = &context.shard.broker.config;
    if topic.assignments.is_empty() {
        let partitions = if topic.num_partitions == -1 { config.default_partitions } else { topic.num_partitions };
        if !(1..=corelog_engine::config::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(failed(EngineError::InvalidPartitionCount(partitions)));
        }
        let replication_factor = match topic.replication_factor {
            -1 => config.cluster.default_replication_factor,
            factor => i32::from(factor),
        };
        return Ok(Placement::Spread { partitions, replication_factor });
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "both numPartitions or replicationFactor and replicasAssignments were set: give one or the other"
                .to_string(),
        ));
    }
    let mut assignments: Vec<&CreatableReplicaAssignment> = topic.assignments.iter().collect();
    assignments.sort_by_key(|assignment| assignment.partition_index);
    if assignments.len() as i32 > corelog_engine::config::PARTITIONS_PER_TOPIC_MAX {
        return Err(failed(EngineError::InvalidPartitionCount(assignments.len() as i32)));
    }
    if assignments.iter().enumerate().any(|(index, assignment)| assignment.partition_index != index as i32) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "partitions should be a consecutive 0-based integer sequence".to_string(),
        ));
    }
    Ok(Placement::Manual(
        assignments.iter().map(|assignment| assignment.broker_ids.iter().map(|id| id.0).collect()).collect(),
    ))
}
