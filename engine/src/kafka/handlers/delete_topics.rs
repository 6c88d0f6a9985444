//! DeleteTopics (key 20), v1–v5: removes topics and their data.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Versions};
use crate::kafka::errors::error_code;
use crate::types::TopicName;

pub const VERSIONS: Versions = Versions::new(1, 5);

pub async fn handle(context: &RequestContext<'_>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for raw_name in request.topic_names {
        let mut result = DeletableTopicResult::default().with_name(Some(raw_name.clone()));
        let deleted = match TopicName::new(raw_name.0.as_str()) {
            Ok(name) => context.shard.engine.delete_topic(&name).await.map(|()| name),
            Err(error) => Err(error),
        };
        match deleted {
            Ok(name) => tracing::info!("deleted topic {name}"),
            Err(error) => {
                result = result.with_error_code(error_code(&error)).with_error_message(Some(StrBytes::from_string(error.to_string())));
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
