//! DescribeConfigs (key 32), v1–v4: the configs of topics and of this broker.
//!
//! A topic lists every key of [`TOPIC_KEYS`], with its source (the topic's own,
//! the broker's default for topics, or the built-in default; see
//! [`super::config_resources`] for how the topic's own keys are told apart).
//! A broker lists a small fixed set: its identity and listener, the settings of
//! `corelog broker` that have a Kafka name, and its defaults for topics under their
//! broker names (`log.retention.ms`, ...). Every broker config is read-only: corelog
//! has no dynamic broker configs, so the cluster-wide default resource (an empty
//! broker name) has none. Requested keys that do not exist are left out, as Kafka does.

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::config_resources::{config_type, resolve, topic_config_entries, ConfigEntry, ConfigSource, Resource};
use super::{RequestContext, Versions};
use crate::config::topic::{self, TOPIC_KEYS};
use crate::config::ConfigKind;
use crate::{BrokerConfig, BrokerState};

pub const VERSIONS: Versions = Versions::new(1, 4);

pub async fn handle(context: &RequestContext<'_>, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let include_documentation = context.version >= 3 && request.include_documentation;
    let results = request
        .resources
        .iter()
        .map(|resource| describe(context, resource, request.include_synonyms, include_documentation))
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(
    context: &RequestContext<'_>,
    resource: &DescribeConfigsResource,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResult {
    let result = DescribeConfigsResult::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone())
        .with_error_message(None);
    let broker = &context.shard.broker;
    let entries = match resolve(context, resource.resource_type, resource.resource_name.as_str()) {
        Ok(Resource::Topic(metadata)) => topic_config_entries(&metadata.config, &broker.config.topic_defaults),
        Ok(Resource::Broker) => broker_config_entries(broker),
        Ok(Resource::BrokerDefaults) => Vec::new(),
        Err((error, message)) => {
            return result.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)))
        }
    };
    let wanted = |name: &str| match &resource.configuration_keys {
        Some(keys) if !keys.is_empty() => keys.iter().any(|key| key.as_str() == name),
        _ => true,
    };
    let configs = entries
        .into_iter()
        .filter(|entry| wanted(&entry.name))
        .map(|entry| {
            let synonyms = if include_synonyms {
                entry
                    .synonyms
                    .into_iter()
                    .map(|(name, value, source)| {
                        DescribeConfigsSynonym::default()
                            .with_name(StrBytes::from_string(name))
                            .with_value(Some(StrBytes::from_string(value)))
                            .with_source(source.code())
                    })
                    .collect()
            } else {
                Vec::new()
            };
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(entry.name))
                .with_value(Some(StrBytes::from_string(entry.value)))
                .with_read_only(entry.read_only)
                .with_config_source(entry.source.code())
                .with_is_sensitive(false)
                .with_synonyms(synonyms)
                .with_config_type(config_type(entry.kind))
                .with_documentation(include_documentation.then(|| StrBytes::from_static_str(entry.documentation)))
        })
        .collect();
    result.with_configs(configs)
}

/// The broker's configs: read-only, each a start-up setting (STATIC_BROKER_CONFIG
/// when it differs from `BrokerConfig::new`'s default, else DEFAULT_CONFIG).
fn broker_config_entries(broker: &BrokerState) -> Vec<ConfigEntry> {
    let config = &broker.config;
    let built_in = BrokerConfig::new(config.engine.data_dir.clone());
    let (host, port) = broker.advertised();
    let entry =
        |name: &str, value: String, is_set: bool, kind: ConfigKind, documentation: &'static str, default: String| {
            let source = if is_set { ConfigSource::StaticBroker } else { ConfigSource::Default };
            let mut synonyms = vec![(name.to_string(), value.clone(), source)];
            if is_set {
                synonyms.push((name.to_string(), default, ConfigSource::Default));
            }
            ConfigEntry { name: name.to_string(), value, source, read_only: true, kind, documentation, synonyms }
        };
    let mut entries = vec![
        entry(
            "broker.id",
            config.node_id.to_string(),
            config.node_id != built_in.node_id,
            ConfigKind::Int,
            "This broker's id (`corelog broker --node-id`, or node_id in its YAML file).",
            built_in.node_id.to_string(),
        ),
        entry(
            "node.id",
            config.node_id.to_string(),
            config.node_id != built_in.node_id,
            ConfigKind::Int,
            "This broker's id (`corelog broker --node-id`, or node_id in its YAML file).",
            built_in.node_id.to_string(),
        ),
        entry(
            "advertised.listeners",
            format!("PLAINTEXT://{host}:{port}"),
            config.advertised_listener.is_some(),
            ConfigKind::String,
            "The address clients are told to connect to; by default the listen address.",
            String::new(),
        ),
        entry(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            config.auto_create_topics != built_in.auto_create_topics,
            ConfigKind::Boolean,
            "Whether Metadata requests create the topics they name that do not exist.",
            built_in.auto_create_topics.to_string(),
        ),
        entry(
            "num.partitions",
            config.default_partitions.to_string(),
            config.default_partitions != built_in.default_partitions,
            ConfigKind::Int,
            "Partition count of auto-created topics and of CreateTopics asking for the default (-1).",
            built_in.default_partitions.to_string(),
        ),
        entry(
            "default.replication.factor",
            "1".to_string(),
            false,
            ConfigKind::Int,
            "Always 1: corelog is a single broker.",
            "1".to_string(),
        ),
        entry(
            "socket.request.max.bytes",
            config.request_bytes_max.to_string(),
            config.request_bytes_max != built_in.request_bytes_max,
            ConfigKind::Int,
            "Largest request accepted; a larger one closes the connection.",
            built_in.request_bytes_max.to_string(),
        ),
        entry(
            "max.connections",
            config.connections_max.to_string(),
            config.connections_max != built_in.connections_max,
            ConfigKind::Int,
            "Connections served at once; more are closed when accepted.",
            built_in.connections_max.to_string(),
        ),
        entry(
            "log.dirs",
            config.engine.data_dir.display().to_string(),
            true,
            ConfigKind::String,
            "The data directory (`corelog broker --data-dir`).",
            String::new(),
        ),
    ];
    let built_in_topic = topic::built_in();
    for definition in &TOPIC_KEYS {
        let value = topic::value(&config.topic_defaults, definition.name).unwrap_or_default();
        let default = topic::value(&built_in_topic, definition.name).unwrap_or_default();
        entries.push(entry(
            definition.broker_name,
            value.clone(),
            value != default,
            definition.kind,
            definition.documentation,
            default,
        ));
    }
    entries
}
