//! CreateTopics (key 19), v2–v7: creates topics with a partition count and topic
//! configs, or with `validate_only` checks the same things and creates nothing.
//! Configs are validated all together by [`topic::set_all`], as AlterConfigs
//! does; v5+ answers with the new topic's configs, described as DescribeConfigs does.

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::config_resources::{failed, topic_config_entries, Failure};
use super::{RequestContext, Versions};
use crate::config::topic;
use corelog_engine::config::TopicConfig;
use corelog_engine::error::EngineError;
use corelog_engine::types::TopicName;

pub const VERSIONS: Versions = Versions::new(2, 7);

pub async fn handle(context: &RequestContext<'_>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        let outcome = create(context, &topic, request.validate_only).await;
        match outcome {
            Ok((partitions, topic_id, config)) => {
                result = result.with_num_partitions(partitions).with_replication_factor(1).with_topic_id(topic_id);
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

async fn create(
    context: &RequestContext<'_>,
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    validate_only: bool,
) -> Result<(i32, uuid::Uuid, TopicConfig), Failure> {
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
        return Ok((partitions, uuid::Uuid::nil(), config));
    }
    let metadata = engine.create_topic(name.clone(), partitions, config.clone()).await.map_err(failed)?;
    tracing::info!("created topic {name} with {partitions} partitions, topic id {}", metadata.id);
    Ok((partitions, uuid::Uuid::from_u128(metadata.id.0), config))
}
