//! AlterPartitionReassignments (key 45), v0–v1: moves partitions to other brokers
//! (KIP-455). Each partition names its new replica list, or null to cancel a move
//! in progress. The active controller decides each one ([`controller::ask`]): the
//! new replicas are added and fetch from the leader; once they are all in the ISR
//! the old ones are dropped and a leader outside the new list hands over (see
//! `cluster::controller::reassignment`). The answer comes once the move has
//! started, not finished: ListPartitionReassignments shows the ones in progress.
//!
//! Per partition: UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (an empty
//! list, a broker twice or not registered, or a list none of whose replicas is in
//! sync when nothing is to be added), NO_REASSIGNMENT_IN_PROGRESS (cancelling
//! none), and with `allow_replication_factor_change` false (v1)
//! INVALID_REPLICATION_FACTOR for a list of another length. When no controller
//! answers, the top-level error says so. A single broker can only "move" a
//! partition to itself, which changes nothing.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::elect_leaders::{group_by_topic, Results};
use super::resolve::{partition_of, Intent, PartitionRef, Refusal, TopicRef};
use super::{controller, wire_code, RequestContext, Versions};
use crate::cluster::controller::ReassignmentChange;
use crate::cluster::quorum::{ControllerReply, ControllerRequest};
use crate::cluster::records::NodeId;
use crate::cluster::view::ClusterView;

pub const VERSIONS: Versions = Versions::new(0, 1);

pub async fn handle(
    context: &RequestContext<'_>,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_factor_change = context.version < 1 || request.allow_replication_factor_change;
    let changes: Vec<ReassignmentChange> = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic.partitions.into_iter().map(move |p| {
                (name.clone(), p.partition_index, p.replicas.map(|ids| ids.into_iter().map(|id| id.0).collect()))
            })
        })
        .collect();
    let outcome = match &context.shard.cluster {
        Some(view) => reassign_in_cluster(view, changes, allow_factor_change, request.timeout_ms).await,
        None => Ok(single(context, changes)),
    };
    let response =
        AlterPartitionReassignmentsResponse::default().with_allow_replication_factor_change(allow_factor_change);
    let results = match outcome {
        Ok(results) => results,
        Err(refusal) => {
            return response
                .with_error_code(refusal.error.code())
                .with_error_message(Some(StrBytes::from_string(refusal.message)))
        }
    };
    let responses = results
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, outcome)| {
                    let refusal = outcome.err();
                    ReassignablePartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(wire_code(refusal.as_ref().map(|r| r.error)))
                        .with_error_message(refusal.map(|r| StrBytes::from_string(r.message)))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect();
    response.with_error_message(None).with_responses(responses)
}

async fn reassign_in_cluster(
    view: &ClusterView,
    changes: Vec<ReassignmentChange>,
    allow_factor_change: bool,
    timeout_ms: i32,
) -> Result<Results, Refusal> {
    let image = view.image();
    // Partitions refused here are not sent to the controller.
    let mut outcomes: Vec<Option<Result<(), Refusal>>> = vec![None; changes.len()];
    if !allow_factor_change {
        for (outcome, (name, index, target)) in outcomes.iter_mut().zip(&changes) {
            let (Some(target), Some(state)) = (target, image.partition(name, *index)) else { continue };
            let current = state.replicas.iter().filter(|r| !state.adding.contains(r)).count();
            if target.len() != current {
                *outcome = Some(Err(Refusal::new(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "{name}/{index} has {current} replicas, not {}, and the replication factor may not change",
                        target.len()
                    ),
                )));
            }
        }
    }
    let asked: Vec<ReassignmentChange> =
        changes.iter().zip(&outcomes).filter(|(_, o)| o.is_none()).map(|(c, _)| c.clone()).collect();
    if !asked.is_empty() {
        let request = ControllerRequest::AlterReassignments { changes: asked.clone() };
        let results = match controller::ask(view, request, controller::deadline(timeout_ms)).await? {
            ControllerReply::Reassigned(results) if results.len() == asked.len() => results,
            other => {
                tracing::error!("the controller answered a reassignment with {other:?}");
                return Err(Refusal::new(ResponseError::UnknownServerError, "the controller's answer did not fit"));
            }
        };
        let mut results = results.into_iter();
        for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
            *outcome = results.next().map(|result| result.map_err(|error| controller::refusal(&error)));
        }
    }
    for ((name, index, target), outcome) in changes.iter().zip(&outcomes) {
        if matches!(outcome, Some(Ok(()))) {
            tracing::info!("reassigning {name}-{index} to {target:?}");
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Refusal::new(ResponseError::UnknownServerError, "not decided"))));
    Ok(group_by_topic(changes.into_iter().map(|(name, index, _)| (name, index)).zip(outcomes)))
}

/// A single broker: a partition can only be "moved" to this broker, where it is.
fn single(context: &RequestContext<'_>, changes: Vec<ReassignmentChange>) -> Results {
    let resolver = context.resolver();
    let node_id: NodeId = context.shard.broker.config.node_id;
    let outcomes = changes.into_iter().map(|(name, index, target)| {
        let topic = resolver.topic(TopicRef::Name(&name), Intent::Describe);
        let outcome = partition_of(&topic, PartitionRef::new(index)).and_then(|partition| match target {
            None => Err(Refusal::new(
                ResponseError::NoReassignmentInProgress,
                format!("no reassignment of {} is in progress", partition.partition),
            )),
            Some(target) if target == [node_id] => Ok(()),
            Some(target) => Err(Refusal::new(
                ResponseError::InvalidReplicaAssignment,
                format!("{target:?}: this single broker {node_id} is the only one a replica can be on"),
            )),
        });
        ((name, index), outcome)
    });
    group_by_topic(outcomes)
}
