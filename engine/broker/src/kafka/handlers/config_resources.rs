//! What the config APIs share (DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, and CreateTopics v5+ which describes the configs of the
//! topics it creates): the resources they name, where a topic config's value comes
//! from, and replacing a topic's config.
//!
//! A topic's config is stored whole (every key, see [`TopicConfig::to_properties`];
//! a broker key a topic does not hold counts as holding its default), so which
//! keys are the topic's own ("dynamic topic config" in Kafka's words) is decided by
//! value: a key whose value differs from the broker's topic defaults is the topic's
//! own. The limit: a key set explicitly to the default value is reported
//! as a default, and goes on holding that value if the broker's default changes.
//!
//! On a node of a cluster a topic's own configs are the metadata image's (the
//! keys its creation and alterations set), over this broker's topic defaults; an
//! alteration is validated here, as on a single broker, then made by the active
//! controller ([`alter_in_cluster`]) as the keys it sets and removes, and every
//! broker's reconciler applies it to its replicas. Broker resources are each
//! broker's own: a broker describes only itself.

use kafka_protocol::ResponseError;

use std::collections::BTreeMap;

use super::{controller, RequestContext};
use crate::cluster::quorum::ControllerRequest;
use crate::cluster::view::ClusterView;
use crate::config::topic::{self, TOPIC_KEYS};
use crate::config::ConfigKind;
use crate::is_internal;
use crate::kafka::errors::response_error;
use corelog_engine::config::TopicConfig;
use corelog_engine::error::EngineError;
use corelog_engine::shard::TopicMetadata;
use corelog_engine::types::TopicName;

/// Kafka's `ConfigResource.Type` of a topic.
pub const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Kafka's `ConfigResource.Type` of a broker.
pub const RESOURCE_TYPE_BROKER: i8 = 4;

/// Why a config request failed: the Kafka error and the message that explains it.
pub type Failure = (ResponseError, String);

/// An engine error as a [`Failure`], with the engine's text as its message.
pub fn failed(error: EngineError) -> Failure {
    (response_error(&error), error.to_string())
}

/// A refusal given as a raw code (`super::internal_topic_refused`) as a [`Failure`].
pub fn coded((code, message): (i16, String)) -> Failure {
    (ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError), message)
}

/// Where a config value comes from (Kafka's `ConfigSource`, the codes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic (CreateTopics, AlterConfigs).
    DynamicTopic = 1,
    /// Set for the broker at start-up (`corelog broker` flags or YAML file).
    StaticBroker = 4,
    /// Kafka's (or corelog's) built-in default.
    Default = 5,
}

impl ConfigSource {
    pub fn code(self) -> i8 {
        self as i8
    }
}

/// Where the value of topic config `key` comes from, given the broker's defaults for
/// topics: the topic's own when it differs from them, else the broker's when those
/// differ from the built-in ones.
pub fn topic_config_source(key: &str, config: &TopicConfig, defaults: &TopicConfig) -> ConfigSource {
    if topic::value(config, key) != topic::value(defaults, key) {
        ConfigSource::DynamicTopic
    } else if topic::value(defaults, key) != topic::value(&topic::built_in(), key) {
        ConfigSource::StaticBroker
    } else {
        ConfigSource::Default
    }
}

/// Kafka's `ConfigEntry.ConfigType` code of a kind of value.
pub fn config_type(kind: ConfigKind) -> i8 {
    match kind {
        ConfigKind::Boolean => 1,
        ConfigKind::String => 2,
        ConfigKind::Int => 3,
        ConfigKind::Long => 5,
        ConfigKind::Double => 6,
        ConfigKind::List => 7,
    }
}

/// One described config value, in wire-neutral form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub kind: ConfigKind,
    pub documentation: &'static str,
    /// Where the value could come from, most specific first, the entry itself
    /// included (Kafka's synonyms): a topic's own value, then the broker's default
    /// for topics under its broker name, then the built-in default.
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// Every key of a topic's config, described against the broker's topic defaults.
pub fn topic_config_entries(config: &TopicConfig, defaults: &TopicConfig) -> Vec<ConfigEntry> {
    let built_in = topic::built_in();
    TOPIC_KEYS
        .iter()
        .map(|definition| {
            let key = definition.name;
            let value = topic::value(config, key).unwrap_or_default();
            let source = topic_config_source(key, config, defaults);
            let default_value = topic::value(defaults, key).unwrap_or_default();
            let built_in_value = topic::value(&built_in, key).unwrap_or_default();
            let mut synonyms = Vec::with_capacity(3);
            if source == ConfigSource::DynamicTopic {
                synonyms.push((key.to_string(), value.clone(), ConfigSource::DynamicTopic));
            }
            if default_value != built_in_value {
                synonyms.push((definition.broker_name.to_string(), default_value, ConfigSource::StaticBroker));
            }
            synonyms.push((definition.broker_name.to_string(), built_in_value, ConfigSource::Default));
            ConfigEntry {
                name: key.to_string(),
                value,
                source,
                read_only: false,
                kind: definition.kind,
                documentation: definition.documentation,
                synonyms,
            }
        })
        .collect()
}

/// A config resource named by a request.
#[derive(Debug)]
pub enum Resource {
    Topic(TopicMetadata),
    /// This broker (its id as the resource name).
    Broker,
    /// The cluster-wide dynamic broker defaults (an empty resource name): there are none.
    BrokerDefaults,
}

/// Finds the resource a request names. Errors, as Kafka gives them: an unknown
/// topic is UNKNOWN_TOPIC_OR_PARTITION, a broker id that is not a number or not this
/// broker's is INVALID_REQUEST (there is no other broker to forward to), and so is a
/// resource type other than topic and broker.
pub fn resolve(context: &RequestContext<'_>, resource_type: i8, resource_name: &str) -> Result<Resource, Failure> {
    match resource_type {
        RESOURCE_TYPE_TOPIC => {
            let name = TopicName::new(resource_name).map_err(failed)?;
            if let Some(view) = context.shard.cluster.as_ref().filter(|_| !is_internal(&name)) {
                let image = view.image();
                let topic = image
                    .topic(name.as_str())
                    .ok_or_else(|| failed(EngineError::UnknownTopicOrPartition(name.to_string())))?;
                let mut config = context.shard.broker.config.topic_defaults.clone();
                topic::set_all(&mut config, topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map_err(failed)?;
                let partition_count = topic.partitions.len() as i32;
                return Ok(Resource::Topic(TopicMetadata { name, id: topic.id, partition_count, config }));
            }
            context
                .shard
                .engine
                .topic(&name)
                .map(Resource::Topic)
                .ok_or_else(|| failed(EngineError::UnknownTopicOrPartition(name.to_string())))
        }
        RESOURCE_TYPE_BROKER => {
            if resource_name.is_empty() {
                return Ok(Resource::BrokerDefaults);
            }
            let node_id = context.shard.broker.config.node_id;
            match resource_name.parse::<i32>() {
                Ok(id) if id == node_id => Ok(Resource::Broker),
                Ok(id) if context.shard.cluster.is_some() => Err((
                    ResponseError::InvalidRequest,
                    format!("this is broker {node_id}: ask broker {id} for its own configs"),
                )),
                Ok(id) => Err((
                    ResponseError::InvalidRequest,
                    format!("this is broker {node_id}, the only broker of the cluster; there is no broker {id}"),
                )),
                Err(_) => Err((
                    ResponseError::InvalidRequest,
                    format!("a broker resource is named by the broker's id, an integer, not {resource_name:?}"),
                )),
            }
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("config resource type {other} is not supported: only topics (2) and brokers (4)"),
        )),
    }
}

/// Why a broker resource cannot be altered.
pub fn broker_configs_read_only() -> Failure {
    (
        ResponseError::InvalidConfig,
        "broker configs are read-only in corelog: set them with the `corelog broker` flags or its YAML file \
         and restart the broker"
            .to_string(),
    )
}

/// Replaces a topic's config (durably, then in every live partition) unless
/// `validate_only` or nothing changes. Two alterations of one topic racing on
/// different connections do not merge: the last one written wins.
pub async fn replace_topic_config(
    context: &RequestContext<'_>,
    metadata: &TopicMetadata,
    updated: TopicConfig,
    validate_only: bool,
) -> Result<(), Failure> {
    if validate_only || updated == metadata.config {
        return Ok(());
    }
    // flush.* are not stored: they change only with fsync.policy.
    let changed: Vec<String> = topic::topic_key_names()
        .filter(|key| !TopicConfig::KEYS.contains(key) || TopicConfig::STORED_KEYS.contains(key))
        .filter(|key| topic::value(&metadata.config, key) != topic::value(&updated, key))
        .map(|key| format!("{key}={}", topic::value(&updated, key).unwrap_or_default()))
        .collect();
    context.shard.engine.set_topic_config(&metadata.name, updated).await.map_err(failed)?;
    tracing::info!("altered config of topic {}: {}", metadata.name, changed.join(", "));
    Ok(())
}

/// Makes `own` the topic's own configs (the keys set on it, over the broker's
/// defaults) through the active controller, unless `validate_only` or nothing
/// changes: validated first as the reconcilers will apply them, then the keys that
/// change are set and the others the topic had are removed.
pub async fn alter_in_cluster(
    context: &RequestContext<'_>,
    view: &ClusterView,
    name: &TopicName,
    own: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), Failure> {
    let mut config = context.shard.broker.config.topic_defaults.clone();
    topic::set_all(&mut config, own.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(failed)?;
    let image = view.image();
    let current = image
        .topic(name.as_str())
        .map(|t| &t.configs)
        .ok_or_else(|| failed(EngineError::UnknownTopicOrPartition(name.to_string())))?;
    let mut changes: Vec<(String, Option<String>)> =
        current.keys().filter(|key| !own.contains_key(*key)).map(|key| (key.clone(), None)).collect();
    changes.extend(
        own.iter().filter(|(key, value)| current.get(*key) != Some(value)).map(|(k, v)| (k.clone(), Some(v.clone()))),
    );
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    let described: Vec<String> =
        changes.iter().map(|(key, value)| format!("{key}={}", value.as_deref().unwrap_or("(default)"))).collect();
    let request = ControllerRequest::AlterConfigs { name: name.to_string(), changes };
    let deadline = std::time::Instant::now() + controller::DEFAULT_TIMEOUT;
    controller::ask(view, request, deadline).await.map_err(|refusal| (refusal.error, refusal.message))?;
    tracing::info!("altered config of topic {name}: {}", described.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corelog_engine::config::Durability;

    #[test]
    fn sources_tell_topic_overrides_from_broker_and_built_in_defaults() {
        let defaults = TopicConfig { retention_ms: 1000, ..TopicConfig::default() };
        let config = TopicConfig { durability: Durability::Always, ..defaults.clone() };
        assert_eq!(topic_config_source("fsync.policy", &config, &defaults), ConfigSource::DynamicTopic);
        assert_eq!(topic_config_source("flush.messages", &config, &defaults), ConfigSource::DynamicTopic);
        assert_eq!(topic_config_source("flush.ms", &config, &defaults), ConfigSource::Default);
        assert_eq!(topic_config_source("retention.ms", &config, &defaults), ConfigSource::StaticBroker);
        assert_eq!(topic_config_source("segment.bytes", &config, &defaults), ConfigSource::Default);
        assert_eq!(ConfigSource::DynamicTopic.code(), 1);
    }

    #[test]
    fn topic_entries_cover_every_key_with_synonyms_most_specific_first() {
        let defaults = TopicConfig { retention_ms: 1000, ..TopicConfig::default() };
        let config = TopicConfig { retention_ms: 5, ..defaults.clone() };
        let entries = topic_config_entries(&config, &defaults);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, topic::topic_key_names().collect::<Vec<_>>());
        let retention = entries.iter().find(|e| e.name == "retention.ms").expect("listed");
        assert_eq!(
            (retention.value.as_str(), retention.source, retention.read_only),
            ("5", ConfigSource::DynamicTopic, false)
        );
        let synonyms: Vec<(&str, &str, ConfigSource)> =
            retention.synonyms.iter().map(|(n, v, s)| (n.as_str(), v.as_str(), *s)).collect();
        assert_eq!(
            synonyms,
            vec![
                ("retention.ms", "5", ConfigSource::DynamicTopic),
                ("log.retention.ms", "1000", ConfigSource::StaticBroker),
                ("log.retention.ms", "604800000", ConfigSource::Default),
            ]
        );
        let segment = entries.iter().find(|e| e.name == "segment.bytes").expect("listed");
        assert_eq!(
            segment.synonyms,
            vec![("log.segment.bytes".to_string(), "1073741824".to_string(), ConfigSource::Default)]
        );
    }

    #[test]
    fn broker_keys_are_described_like_engine_keys() {
        let mut defaults = topic::built_in();
        topic::set(&mut defaults, "min.insync.replicas", "2").expect("valid");
        let mut config = defaults.clone();
        topic::set(&mut config, "min.insync.replicas", "3").expect("valid");
        let entries = topic_config_entries(&config, &defaults);
        let entry = entries.iter().find(|e| e.name == "min.insync.replicas").expect("listed");
        assert_eq!(
            (entry.value.as_str(), entry.source, entry.kind),
            ("3", ConfigSource::DynamicTopic, ConfigKind::Int)
        );
        let synonyms: Vec<(&str, &str, ConfigSource)> =
            entry.synonyms.iter().map(|(n, v, s)| (n.as_str(), v.as_str(), *s)).collect();
        assert_eq!(
            synonyms,
            vec![
                ("min.insync.replicas", "3", ConfigSource::DynamicTopic),
                ("min.insync.replicas", "2", ConfigSource::StaticBroker),
                ("min.insync.replicas", "1", ConfigSource::Default),
            ]
        );
        // A topic the engine made without broker keys (the offsets topic) holds the default.
        let bare = TopicConfig::default();
        assert_eq!(topic_config_source("min.insync.replicas", &bare, &topic::built_in()), ConfigSource::Default);
        let entries = topic_config_entries(&bare, &topic::built_in());
        let entry = entries.iter().find(|e| e.name == "min.insync.replicas").expect("listed");
        assert_eq!((entry.value.as_str(), entry.source), ("1", ConfigSource::Default));
    }
}
