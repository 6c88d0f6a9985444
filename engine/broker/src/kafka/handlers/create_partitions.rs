//! CreatePartitions (key 37), v0–v3: grows topics to a new partition count, or with
//! `validate_only` checks the same things and changes nothing.
//!
//! A topic never shrinks, and growing to the count it has is an error too (both
//! INVALID_PARTITIONS, as in Kafka), as is passing
//! [`PARTITIONS_PER_TOPIC_MAX`]. Manual assignments are accepted only as what the
//! one broker would do anyway: one list per new partition, holding this broker.
//! A topic named twice in one request fails both times with INVALID_REQUEST.
//! The broker's internal topics are refused with TOPIC_AUTHORIZATION_FAILED (see
//! [`Refusal::internal_topic`]): groups map to `__consumer_offsets` partitions by a
//! hash modulo the partition count, so growing it would lose every group.
//!
//! On a node of a cluster the count is checked against the metadata image and the
//! active controller adds the partitions ([`controller::ask`], within the request's
//! `timeout_ms`): spread over the live brokers with the topic's replication factor,
//! or as the request's assignments say (one replica list per new partition, checked
//! by the controller). `validate_only` is the controller's decision made here
//! without proposing it ([`controller::dry_run`]).

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::controller;
use super::resolve::{Intent, Refusal, TopicRef};
use super::{RequestContext, Versions};
use crate::cluster::quorum::ControllerRequest;
use corelog_engine::config::PARTITIONS_PER_TOPIC_MAX;
use corelog_engine::error::EngineError;

pub const VERSIONS: Versions = Versions::new(0, 3);

pub async fn handle(context: &RequestContext<'_>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let repeated = request.topics.iter().filter(|other| other.name == topic.name).count() > 1;
        let outcome = if repeated {
            Err(Refusal::new(
                ResponseError::InvalidRequest,
                format!("topic {} appears more than once in the request", topic.name.0),
            ))
        } else {
            grow(context, topic, request.validate_only, request.timeout_ms).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(()) => result,
            Err(refusal) => result
                .with_error_code(refusal.error.code())
                .with_error_message(Some(StrBytes::from_string(refusal.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    context: &RequestContext<'_>,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
    timeout_ms: i32,
) -> Result<(), Refusal> {
    let resolved =
        context.resolver().topic(TopicRef::Name(topic.name.0.as_str()), Intent::Alter("add partitions to it"))?;
    let name = resolved.name();
    let current = match &context.shard.cluster {
        Some(view) => match view.image().topic(name.as_str()) {
            Some(image) => image.partitions.len() as i32,
            None => return Err(EngineError::UnknownTopicOrPartition(name.to_string()).into()),
        },
        None => resolved.metadata()?.partition_count,
    };
    let wanted = topic.count;
    let invalid_partitions = |message: String| Err(Refusal::new(ResponseError::InvalidPartitions, message));
    if wanted < current {
        return invalid_partitions(format!("topic {name} has {current} partitions and cannot shrink to {wanted}"));
    }
    if wanted == current {
        return invalid_partitions(format!("topic {name} already has {current} partitions"));
    }
    if wanted > PARTITIONS_PER_TOPIC_MAX {
        return invalid_partitions(format!(
            "{wanted} partitions is more than the {PARTITIONS_PER_TOPIC_MAX} a topic may have"
        ));
    }
    if let Some(view) = &context.shard.cluster {
        let assignment = topic
            .assignments
            .as_ref()
            .map(|lists| lists.iter().map(|list| list.broker_ids.iter().map(|id| id.0).collect()).collect());
        let request = ControllerRequest::CreatePartitions { name: name.to_string(), count: wanted, assignment };
        if validate_only {
            return controller::dry_run(&view.image(), &request);
        }
        controller::ask(view, request, controller::deadline(timeout_ms)).await?;
        tracing::info!("grew topic {name} from {current} to {wanted} partitions");
        return Ok(());
    }
    if let Some(assignments) = &topic.assignments {
        let node_id = context.shard.broker.config.node_id;
        let new_partitions = (wanted - current) as usize;
        if assignments.len() != new_partitions {
            return Err(Refusal::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "{} assignments given for the {new_partitions} new partitions of topic {name}",
                    assignments.len()
                ),
            ));
        }
        if assignments.iter().any(|assignment| assignment.broker_ids.iter().map(|id| id.0).ne([node_id])) {
            return Err(Refusal::new(
                ResponseError::InvalidReplicaAssignment,
                format!("this cluster is one broker, {node_id}: every new partition's replicas must be [{node_id}]"),
            ));
        }
    }
    if validate_only {
        return Ok(());
    }
    // The engine checks the count again under its registry lock: another connection
    // may have grown the topic since.
    context.shard.engine.create_partitions(name, wanted).await?;
    tracing::info!("grew topic {name} from {current} to {wanted} partitions");
    Ok(())
}
