//! DeleteTopics (key 20), v1–v5: removes topics and their data.
//!
//! The broker's internal topics are refused with TOPIC_AUTHORIZATION_FAILED (see
//! [`Refusal::internal_topic`]): deleting `__consumer_offsets` would erase every
//! group's committed offsets.
//!
//! On a node of a cluster the active controller deletes the topic
//! ([`controller::ask`], within the request's `timeout_ms`); the answer comes once
//! this broker's metadata no longer shows it, and every broker's reconciler then
//! removes its replicas.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller;
use super::resolve::{Intent, Refusal, TopicRef};
use super::{RequestContext, Versions};
use crate::cluster::quorum::ControllerRequest;
use corelog_engine::types::TopicName;

pub const VERSIONS: Versions = Versions::new(1, 5);

pub async fn handle(context: &RequestContext<'_>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for raw_name in request.topic_names {
        let mut result = DeletableTopicResult::default().with_name(Some(raw_name.clone()));
        match delete(context, raw_name.0.as_str(), request.timeout_ms).await {
            Ok(name) => tracing::info!("deleted topic {name}"),
            Err(refusal) => {
                result = result
                    .with_error_code(refusal.error.code())
                    .with_error_message(Some(StrBytes::from_string(refusal.message)));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Deletes the topic `raw_name`. Whether it exists is the engine's to say, under its
/// registry lock: another connection may create or delete it meanwhile.
async fn delete(context: &RequestContext<'_>, raw_name: &str, timeout_ms: i32) -> Result<TopicName, Refusal> {
    let resolved = context.resolver().topic(TopicRef::Name(raw_name), Intent::Alter("delete it"))?;
    match &context.shard.cluster {
        Some(view) => {
            let request = ControllerRequest::DeleteTopic { name: resolved.name().to_string() };
            controller::ask(view, request, controller::deadline(timeout_ms)).await?;
        }
        None => context.shard.engine.delete_topic(resolved.name()).await?,
    }
    Ok(resolved.name().clone())
}
