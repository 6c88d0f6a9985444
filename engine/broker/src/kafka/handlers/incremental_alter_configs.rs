//! IncrementalAlterConfigs (key 44), v0–v1: changes some of a topic's configs.
//!
//! Each entry is one operation on one key (Kafka's `AlterConfigOp.OpType`): SET a
//! value, DELETE the topic's own value (the key goes back to the broker's default
//! for topics), APPEND items to or SUBTRACT items from a list config
//! (`cleanup.policy` is the only one; on any other key they are INVALID_CONFIG).
//! A key may appear once per resource (INVALID_REQUEST otherwise, as in Kafka).
//! DELETEs apply first, then the other operations all together through
//! [`topic::set_all`], the validation CreateTopics and AlterConfigs use, so
//! either every operation of a resource applies or none does. With `validate_only`
//! nothing changes. Broker configs are read-only: altering one fails with
//! INVALID_CONFIG. The broker's internal topics are refused with
//! TOPIC_AUTHORIZATION_FAILED, even with `validate_only`, as in AlterConfigs.
//!
//! On a node of a cluster the operations are checked the same way, then change the
//! topic's own configs in the metadata through the active controller
//! ([`alter_in_cluster`]): SET stores the value given, APPEND and SUBTRACT the list
//! they make, DELETE removes the key.

use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::config_resources::{
    alter_in_cluster, broker_configs_read_only, coded, failed, replace_topic_config, resolve, Failure, Resource,
};
use super::{internal_topic_refused, RequestContext, Versions};
use crate::config::topic::{self, topic_key};
use crate::config::ConfigKind;
use crate::is_internal;
use corelog_engine::config::TopicConfig;
use corelog_engine::error::EngineError;

pub const VERSIONS: Versions = Versions::new(0, 1);

/// One operation, as the request gives it: key, Kafka's operation code, value.
pub type Operation<'a> = (&'a str, i8, Option<&'a str>);

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    context: &RequestContext<'_>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let response = match alter(context, resource, request.validate_only).await {
            Ok(()) => response.with_error_message(None),
            Err((error, message)) => {
                response.with_error_code(error.code()).with_error_message(Some(StrBytes::from_string(message)))
            }
        };
        responses.push(response);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    context: &RequestContext<'_>,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Failure> {
    match resolve(context, resource.resource_type, resource.resource_name.as_str())? {
        Resource::Topic(metadata) if is_internal(&metadata.name) => {
            Err(coded(internal_topic_refused(&metadata.name, "change its config")))
        }
        Resource::Topic(metadata) => {
            let operations: Vec<Operation<'_>> = resource
                .configs
                .iter()
                .map(|config| {
                    (config.name.as_str(), config.config_operation, config.value.as_ref().map(|v| v.as_str()))
                })
                .collect();
            let updated = apply(&metadata.config, &context.shard.broker.config.topic_defaults, &operations)?;
            match &context.shard.cluster {
                Some(view) => {
                    let mut own =
                        view.image().topic(metadata.name.as_str()).map(|t| t.configs.clone()).unwrap_or_default();
                    for &(key, operation, value) in &operations {
                        match (operation, value) {
                            (DELETE, _) => own.remove(key),
                            (SET, Some(value)) => own.insert(key.to_string(), value.to_string()),
                            _ => own.insert(key.to_string(), topic::value(&updated, key).unwrap_or_default()),
                        };
                    }
                    alter_in_cluster(context, view, &metadata.name, own, validate_only).await
                }
                None => replace_topic_config(context, &metadata, updated, validate_only).await,
            }
        }
        Resource::Broker | Resource::BrokerDefaults if resource.configs.is_empty() => Ok(()),
        Resource::Broker | Resource::BrokerDefaults => Err(broker_configs_read_only()),
    }
}

/// The topic config after `operations`, starting from `current`; a DELETEd key
/// takes its value in `defaults` (the broker's defaults for topics).
pub fn apply(
    current: &TopicConfig,
    defaults: &TopicConfig,
    operations: &[Operation<'_>],
) -> Result<TopicConfig, Failure> {
    let invalid_request = |message: String| (ResponseError::InvalidRequest, message);
    let invalid_config = |key: &str, value: &str, reason: &str| {
        failed(EngineError::InvalidConfig {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        })
    };
    for (index, (key, _, _)) in operations.iter().enumerate() {
        if operations[..index].iter().any(|(earlier, _, _)| earlier == key) {
            return Err(invalid_request(format!("config key {key} appears more than once in one resource")));
        }
    }
    let mut deleted: Vec<(&str, String)> = Vec::new();
    let mut assigned: Vec<(&str, String)> = Vec::new();
    for &(key, operation, value) in operations {
        let Some(definition) = topic_key(key) else {
            return Err(invalid_config(key, value.unwrap_or_default(), "unknown topic config key"));
        };
        if operation == DELETE {
            deleted.push((key, topic::value(defaults, key).unwrap_or_default()));
            continue;
        }
        let Some(value) = value else {
            return Err(invalid_request(format!("operation {operation} on {key} needs a value, and it is null")));
        };
        let list_only = |name: &str| {
            if definition.kind == ConfigKind::List {
                Ok(())
            } else {
                Err(invalid_config(key, value, &format!("{name} applies only to list configs, and {key} is not one")))
            }
        };
        let new_value = match operation {
            SET => value.to_string(),
            APPEND => {
                list_only("APPEND")?;
                let mut items = list_items(&topic::value(current, key).unwrap_or_default());
                for item in list_items(value) {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                items.join(",")
            }
            SUBTRACT => {
                list_only("SUBTRACT")?;
                let removed = list_items(value);
                let items: Vec<String> = list_items(&topic::value(current, key).unwrap_or_default())
                    .into_iter()
                    .filter(|item| !removed.contains(item))
                    .collect();
                items.join(",")
            }
            other => {
                return Err(invalid_request(format!(
                "unknown config operation {other} on {key}: expected 0 (SET), 1 (DELETE), 2 (APPEND) or 3 (SUBTRACT)"
            )))
            }
        };
        assigned.push((key, new_value));
    }
    let mut updated = current.clone();
    topic::set_all(&mut updated, deleted.iter().map(|(key, value)| (*key, value.as_str()))).map_err(failed)?;
    topic::set_all(&mut updated, assigned.iter().map(|(key, value)| (*key, value.as_str()))).map_err(failed)?;
    Ok(updated)
}

/// The items of a comma-separated list value (empty items dropped).
fn list_items(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use corelog_engine::config::{CleanupPolicy, Durability};

    const NEVER: &str = "9223372036854775807";

    fn code(result: Result<TopicConfig, Failure>) -> ResponseError {
        match result {
            Ok(config) => panic!("accepted: {config:?}"),
            Err((error, _)) => error,
        }
    }

    #[test]
    fn set_and_delete_start_from_the_current_config_and_the_broker_defaults() {
        let defaults = TopicConfig { retention_ms: 1000, ..TopicConfig::default() };
        let current = TopicConfig { retention_ms: 5, segment_bytes: 4096, ..defaults.clone() };
        let updated =
            apply(&current, &defaults, &[("retention.ms", DELETE, None), ("max.message.bytes", SET, Some("2048"))])
                .expect("valid");
        assert_eq!(updated.retention_ms, 1000, "DELETE goes back to the broker's default");
        assert_eq!(updated.segment_bytes, 4096, "keys not named keep their value");
        assert_eq!(updated.max_message_bytes, 2048);
    }

    #[test]
    fn flush_keys_set_and_delete_the_fsync_policy() {
        let defaults = TopicConfig::default();
        let synced = apply(&defaults, &defaults, &[("flush.ms", SET, Some("0")), ("flush.messages", SET, Some("1"))])
            .expect("valid");
        assert_eq!(synced.durability, Durability::Always);
        let interval = apply(&synced, &defaults, &[("flush.messages", DELETE, None), ("flush.ms", SET, Some("250"))])
            .expect("valid");
        assert_eq!(interval.durability, Durability::IntervalMs(250));
        let back = apply(&interval, &defaults, &[("flush.ms", DELETE, None)]).expect("valid");
        assert_eq!(back.durability, Durability::Never);
        // With brokers that sync by default, deleting the topic's own flush keys syncs again.
        let always = TopicConfig { durability: Durability::Always, ..TopicConfig::default() };
        let relaxed = apply(&always, &always, &[("flush.messages", SET, Some(NEVER)), ("flush.ms", SET, Some("100"))])
            .expect("valid");
        assert_eq!(relaxed.durability, Durability::IntervalMs(100));
        let both_orders = [
            [("flush.messages", DELETE, None), ("flush.ms", DELETE, None)],
            [("flush.ms", DELETE, None), ("flush.messages", DELETE, None)],
        ];
        for order in both_orders {
            assert_eq!(apply(&relaxed, &always, &order).expect("valid").durability, Durability::Always);
        }
        assert_eq!(
            apply(&relaxed, &always, &[("fsync.policy", DELETE, None)]).expect("valid").durability,
            Durability::Always
        );
    }

    #[test]
    fn append_and_subtract_apply_only_to_list_configs() {
        let config = TopicConfig::default();
        let invalid_config = ResponseError::InvalidConfig;
        assert_eq!(
            apply(&config, &config, &[("cleanup.policy", APPEND, Some("delete"))]).expect("no-op append"),
            config
        );
        let both = apply(&config, &config, &[("cleanup.policy", APPEND, Some("compact"))]).expect("append");
        assert_eq!(both.cleanup_policy, CleanupPolicy { delete: true, compact: true });
        let compact = apply(&both, &both, &[("cleanup.policy", SUBTRACT, Some("delete"))]).expect("subtract");
        assert_eq!(compact.cleanup_policy, CleanupPolicy { delete: false, compact: true });
        assert_eq!(code(apply(&config, &config, &[("cleanup.policy", SUBTRACT, Some("delete"))])), invalid_config);
        assert_eq!(
            apply(&config, &config, &[("cleanup.policy", SUBTRACT, Some("compact"))]).expect("no-op subtract"),
            config
        );
        assert_eq!(code(apply(&config, &config, &[("retention.ms", APPEND, Some("5"))])), invalid_config);
        assert_eq!(code(apply(&config, &config, &[("fsync.policy", SUBTRACT, Some("never"))])), invalid_config);
    }

    #[test]
    fn bad_operations_are_refused_and_nothing_applies() {
        let config = TopicConfig::default();
        let invalid_request = ResponseError::InvalidRequest;
        let invalid_config = ResponseError::InvalidConfig;
        let repeated = [("retention.ms", SET, Some("1")), ("retention.ms", DELETE, None)];
        assert_eq!(code(apply(&config, &config, &repeated)), invalid_request);
        assert_eq!(code(apply(&config, &config, &[("retention.ms", 7, Some("1"))])), invalid_request);
        assert_eq!(code(apply(&config, &config, &[("retention.ms", SET, None)])), invalid_request);
        assert_eq!(code(apply(&config, &config, &[("no.such.key", SET, Some("1"))])), invalid_config);
        assert_eq!(code(apply(&config, &config, &[("no.such.key", DELETE, None)])), invalid_config);
        let one_bad = [("retention.ms", SET, Some("1")), ("segment.bytes", SET, Some("1"))];
        assert_eq!(code(apply(&config, &config, &one_bad)), invalid_config);
        let contradicting = [("fsync.policy", SET, Some("never")), ("flush.messages", SET, Some("1"))];
        assert_eq!(code(apply(&config, &config, &contradicting)), invalid_config);
    }

    #[test]
    fn broker_keys_are_set_and_deleted_like_engine_keys() {
        let defaults = topic::built_in();
        let invalid_config = ResponseError::InvalidConfig;
        let raised = apply(&defaults, &defaults, &[("min.insync.replicas", SET, Some("2"))]).expect("valid");
        assert_eq!(topic::min_insync_replicas(&raised), 2);
        assert_eq!(code(apply(&raised, &defaults, &[("min.insync.replicas", SET, Some("0"))])), invalid_config);
        assert_eq!(code(apply(&raised, &defaults, &[("min.insync.replicas", APPEND, Some("3"))])), invalid_config);
        let deleted = apply(&raised, &defaults, &[("min.insync.replicas", DELETE, None)]).expect("valid");
        assert_eq!(deleted, defaults, "DELETE goes back to the broker's default");
    }
}
