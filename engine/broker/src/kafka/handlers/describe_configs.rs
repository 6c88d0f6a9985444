//! DescribeConfigs (key 32), v1–v4: the configs of topics and of this broker.
//!
//! A topic lists every key of [`TOPIC_KEYS`], with its source (the topic's own,
//! the broker's default for topics, or the built-in default; see
//! [`super::config_resources`] for how the topic's own keys are told apart).
//! A broker lists its settings ([`BROKER_SETTINGS`], the table the `corelog broker`
//! flags and YAML file are read with) and its defaults for topics under their
//! broker names (`log.retention.ms`, ...). Every broker config is read-only: corelog
//! has no dynamic broker configs, so the cluster-wide default resource (an empty
//! broker name) has none. Requested keys that do not exist are left out, as Kafka does.

use std::net::SocketAddr;
use std::path::PathBuf;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::config_resources::{config_type, resolve, topic_config_entries, ConfigEntry, ConfigSource, Resource};
use super::{RequestContext, Versions};
use crate::config::broker::BROKER_SETTINGS;
use crate::config::topic::{self, TOPIC_KEYS};
use crate::BrokerConfig;

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
        Ok(Resource::Broker) => broker_config_entries(&broker.config, broker.listen_addr()),
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

/// The broker's configs, read-only: every row of [`BROKER_SETTINGS`], then its
/// defaults for topics under their broker names. Each is a start-up setting:
/// STATIC_BROKER_CONFIG when it differs from the built-in default
/// (`BrokerConfig::new`'s), else DEFAULT_CONFIG. Values are the running broker's
/// (`listening`: the port is known once it listens, when the configured one is 0).
fn broker_config_entries(config: &BrokerConfig, listening: SocketAddr) -> Vec<ConfigEntry> {
    let built_in = BrokerConfig::new(PathBuf::new());
    let running = BrokerConfig { listen: listening, ..config.clone() };
    let entry = |name: &str, value: String, is_set: bool, default: String, kind, documentation| {
        let source = if is_set { ConfigSource::StaticBroker } else { ConfigSource::Default };
        let mut synonyms = vec![(name.to_string(), value.clone(), source)];
        if is_set {
            synonyms.push((name.to_string(), default, ConfigSource::Default));
        }
        ConfigEntry { name: name.to_string(), value, source, read_only: true, kind, documentation, synonyms }
    };
    let mut entries = Vec::with_capacity(BROKER_SETTINGS.len() + TOPIC_KEYS.len());
    for setting in &BROKER_SETTINGS {
        // Whether it is set is a matter of the configuration; what it is, of the running broker.
        let default = (setting.value)(&built_in);
        let is_set = (setting.value)(config) != default;
        let value = (setting.value)(&running);
        entries.push(entry(setting.name, value, is_set, default, setting.kind, setting.documentation));
    }
    let built_in_topic = topic::built_in();
    for key in &TOPIC_KEYS {
        let value = topic::value(&config.topic_defaults, key.name).unwrap_or_default();
        let default = topic::value(&built_in_topic, key.name).unwrap_or_default();
        entries.push(entry(key.broker_name, value.clone(), value != default, default, key.kind, key.documentation));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[ConfigEntry]) -> Vec<&str> {
        entries.iter().map(|entry| entry.name.as_str()).collect()
    }

    #[test]
    fn a_broker_lists_exactly_its_settings_then_its_topic_defaults() {
        let config = BrokerConfig::new("/var/lib/corelog");
        let entries = broker_config_entries(&config, config.listen);
        let expected: Vec<&str> = BROKER_SETTINGS
            .iter()
            .map(|setting| setting.name)
            .chain(TOPIC_KEYS.iter().map(|key| key.broker_name))
            .collect();
        assert_eq!(names(&entries), expected);
        for entry in &entries {
            assert!(entry.read_only, "{} is not read-only", entry.name);
            assert_eq!(entry.synonyms[0], (entry.name.clone(), entry.value.clone(), entry.source), "{}", entry.name);
        }
        let log_dirs = entries.iter().find(|entry| entry.name == "log.dirs").expect("listed");
        assert_eq!((log_dirs.value.as_str(), log_dirs.source), ("/var/lib/corelog", ConfigSource::StaticBroker));
        let node_id = entries.iter().find(|entry| entry.name == "node.id").expect("listed");
        assert_eq!((node_id.value.as_str(), node_id.source), ("0", ConfigSource::Default));
    }

    #[test]
    fn set_settings_are_static_with_their_default_as_synonym_and_values_are_the_running_brokers() {
        let mut config = BrokerConfig::new("/var/lib/corelog");
        config.node_id = 4;
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        topic::set(&mut config.topic_defaults, "min.insync.replicas", "2").expect("valid");
        topic::set(&mut config.topic_defaults, "retention.ms", "1000").expect("valid");
        let entries = broker_config_entries(&config, SocketAddr::from(([127, 0, 0, 1], 41234)));
        let find = |name: &str| entries.iter().find(|entry| entry.name == name).expect("listed");
        for name in ["node.id", "broker.id"] {
            let entry = find(name);
            assert_eq!((entry.value.as_str(), entry.source), ("4", ConfigSource::StaticBroker), "{name}");
            assert_eq!(entry.synonyms[1], (name.to_string(), "0".to_string(), ConfigSource::Default));
        }
        let listeners = find("listeners");
        assert_eq!(
            (listeners.value.as_str(), listeners.source),
            ("PLAINTEXT://127.0.0.1:41234", ConfigSource::StaticBroker)
        );
        assert_eq!(find("advertised.listeners").value, "PLAINTEXT://127.0.0.1:41234");
        let retention = find("log.retention.ms");
        assert_eq!((retention.value.as_str(), retention.source), ("1000", ConfigSource::StaticBroker));
        let min_insync = find("min.insync.replicas");
        assert_eq!((min_insync.value.as_str(), min_insync.source), ("2", ConfigSource::StaticBroker));
        assert_eq!(find("log.segment.bytes").source, ConfigSource::Default);
        assert_eq!(find("default.replication.factor").value, "1");
    }
}
