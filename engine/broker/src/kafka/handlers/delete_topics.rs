//! DeleteTopics (key 20), v1–v5: removes topics and their data.
//!
//! The broker's internal topics are refused with TOPIC_AUTHORIZATION_FAILED (see
//! [`internal_topic_refused`]): deleting `__consumer_offsets` would erase every
//! group's committed offsets.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{internal_topic_refused, RequestContext, Versions};
use crate::is_internal;
use crate::kafka::errors::error_code;
use corelog_engine::types::TopicName;

pub const VERSIONS: Versions = Versions::new(1, 5);

pub async fn handle(context: &RequestContext<'_>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for raw_name in request.topic_names {
        let mut result = DeletableTopicResult::default().with_name(Some(raw_name.clone()));
        let deleted = match TopicName::new(raw_name.0.as_str()) {
            Ok(name) if is_internal(&name) => Err(internal_topic_refused(&name, "delete it")),
            Ok(name) => match context.shard.engine.delete_topic(&name).await {
                Ok(()) => Ok(name),
                Err(error) => Err((error_code(&error), error.to_string())),
            },
            Err(error) => Err((error_code(&error), error.to_string())),
        };
        match deleted {
            Ok(name) => tracing::info!("deleted topic {name}"),
            Err((code, message)) => {
                result = result.with_error_code(code).with_error_message(Some(StrBytes::from_string(message)));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
