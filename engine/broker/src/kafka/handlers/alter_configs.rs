//! AlterConfigs (key 33), v0–v2: replaces a topic's whole set of its own configs.
//!
//! As in Kafka, the keys given become the topic's config and every key not given
//! goes back to the broker's default for topics (entries with a null value count as
//! not given). Values are validated all together before anything changes
//! ([`topic::set_all`], the same validation as CreateTopics); with
//! `validate_only` nothing changes. The new config is written to `topic.properties`
//! durably and applied to every live partition before the answer.
//! Broker configs are read-only: altering one fails with INVALID_CONFIG. The
//! broker's internal topics are refused with TOPIC_AUTHORIZATION_FAILED, even with
//! `validate_only` (see [`internal_topic_refused`]): `retention.ms=1` on
//! `__consumer_offsets` would erase committed offsets.
//!
//! On a node of a cluster the keys given become the topic's own configs in the
//! metadata, through the active controller ([`alter_in_cluster`]).

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::config_resources::{
    alter_in_cluster, broker_configs_read_only, coded, failed, replace_topic_config, resolve, Failure, Resource,
};
use super::{internal_topic_refused, RequestContext, Versions};
use crate::config::topic;
use crate::is_internal;

pub const VERSIONS: Versions = Versions::new(0, 2);

pub async fn handle(context: &RequestContext<'_>, request: AlterConfigsRequest) -> AlterConfigsResponse {
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
    AlterConfigsResponse::default().with_responses(responses)
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
            let entries = resource
                .configs
                .iter()
                .filter_map(|config| config.value.as_ref().map(|value| (config.name.as_str(), value.as_str())));
            if let Some(view) = &context.shard.cluster {
                let own = entries.map(|(key, value)| (key.to_string(), value.to_string())).collect();
                return alter_in_cluster(context, view, &metadata.name, own, validate_only).await;
            }
            let mut updated = context.shard.broker.config.topic_defaults.clone();
            topic::set_all(&mut updated, entries).map_err(failed)?;
            replace_topic_config(context, &metadata, updated, validate_only).await
        }
        // Replacing the (empty) set of dynamic broker configs with nothing is a no-op.
        Resource::Broker | Resource::BrokerDefaults if resource.configs.is_empty() => Ok(()),
        Resource::Broker | Resource::BrokerDefaults => Err(broker_configs_read_only()),
    }
}
