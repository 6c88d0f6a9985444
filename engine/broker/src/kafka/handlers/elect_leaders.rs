//! ElectLeaders (key 43), v0–v2: moves partition leadership on request (KIP-183,
//! KIP-460). PREFERRED (0; the only type before v1) gives leadership back to each
//! partition's first replica if it is in the ISR and live; UNCLEAN (1) elects a
//! leader for a partition that has none, from outside the ISR if need be (committed
//! data may be lost: that is what unclean means).
//!
//! On a node of a cluster the active controller decides each partition on its own
//! ([`controller::ask`], within the request's `timeout_ms`): ELECTION_NOT_NEEDED
//! where the wanted leader already leads (PREFERRED) or a leader exists (UNCLEAN),
//! ELIGIBLE_LEADERS_NOT_AVAILABLE where no replica may lead,
//! UNKNOWN_TOPIC_OR_PARTITION for partitions the metadata lacks. A null partition
//! list means every partition, and then, as in Kafka, the partitions whose election
//! was not needed are left out of the answer. A failure to reach the controller is
//! every partition's answer. The answer comes once the controller has applied the
//! new leaders; this broker's own metadata may show them a moment later.
//!
//! A single broker leads every partition already, the preferred and only replica:
//! every partition it has is ELECTION_NOT_NEEDED.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::resolve::{partition_of, Intent, PartitionRef, Refusal, TopicRef};
use super::{controller, wire_code, RequestContext, Versions};
use crate::cluster::controller::Election;
use crate::cluster::quorum::{ControllerReply, ControllerRequest};
use crate::cluster::view::ClusterView;

pub const VERSIONS: Versions = Versions::new(0, 2);

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// Each topic in request order with its partitions' outcomes.
pub(super) type Results = Vec<(String, Vec<(i32, Result<(), Refusal>)>)>;

pub async fn handle(context: &RequestContext<'_>, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let election = match (context.version, request.election_type) {
        (0, _) | (_, PREFERRED) => Election::Preferred,
        (_, UNCLEAN) => Election::Unclean,
        // Kafka's ElectionType has no other value: the request is malformed (v1+,
        // which has the top-level error code).
        (_, other) => {
            tracing::debug!("ElectLeaders with election type {other}");
            return ElectLeadersResponse::default().with_error_code(ResponseError::InvalidRequest.code());
        }
    };
    let named: Option<Vec<(String, i32)>> = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic.0.to_string();
                topic.partitions.into_iter().map(move |index| (name.clone(), index))
            })
            .collect()
    });
    let every_partition = named.is_none();
    let results = match &context.shard.cluster {
        Some(view) => elect_in_cluster(view, election, named, request.timeout_ms).await,
        None => single(context, named.unwrap_or_default()),
    };
    let results = results
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .filter(|(_, outcome)| {
                    !every_partition
                        || !matches!(outcome, Err(refusal) if refusal.error == ResponseError::ElectionNotNeeded)
                })
                .map(|(index, outcome)| {
                    let refusal = outcome.err();
                    PartitionResult::default()
                        .with_partition_id(index)
                        .with_error_code(wire_code(refusal.as_ref().map(|r| r.error)))
                        .with_error_message(refusal.map(|r| StrBytes::from_string(r.message)))
                })
                .collect::<Vec<_>>();
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partitions)
        })
        .filter(|result| !every_partition || !result.partition_result.is_empty())
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

async fn elect_in_cluster(
    view: &ClusterView,
    election: Election,
    named: Option<Vec<(String, i32)>>,
    timeout_ms: i32,
) -> Results {
    let partitions = named
        .unwrap_or_else(|| view.image().partitions().map(|(topic, index, _)| (topic.name.clone(), index)).collect());
    if partitions.is_empty() {
        return Vec::new();
    }
    let request = ControllerRequest::ElectLeaders { election, partitions: partitions.clone() };
    let outcomes: Vec<Result<(), Refusal>> =
        match controller::ask(view, request, controller::deadline(timeout_ms)).await {
            Ok(ControllerReply::Elected(results)) if results.len() == partitions.len() => {
                results.into_iter().map(|result| result.map_err(|error| controller::refusal(&error))).collect()
            }
            Ok(other) => {
                tracing::error!("the controller answered an election with {other:?}");
                let refusal = Refusal::new(ResponseError::UnknownServerError, "the controller's answer did not fit");
                vec![Err(refusal); partitions.len()]
            }
            Err(refusal) => vec![Err(refusal); partitions.len()],
        };
    for ((topic, index), outcome) in partitions.iter().zip(&outcomes) {
        if outcome.is_ok() {
            tracing::info!("elected a {election:?} leader for {topic}-{index}");
        }
    }
    group_by_topic(partitions.into_iter().zip(outcomes))
}

/// A single broker: every partition it has is led by its preferred replica.
fn single(context: &RequestContext<'_>, named: Vec<(String, i32)>) -> Results {
    let resolver = context.resolver();
    let outcomes = named.into_iter().map(|(name, index)| {
        let topic = resolver.topic(TopicRef::Name(&name), Intent::Describe);
        let outcome = match partition_of(&topic, PartitionRef::new(index)) {
            Ok(partition) => Err(Refusal::new(
                ResponseError::ElectionNotNeeded,
                format!("{}: this broker, its only replica, leads it", partition.partition),
            )),
            Err(refusal) => Err(refusal),
        };
        ((name, index), outcome)
    });
    group_by_topic(outcomes)
}

/// Outcomes grouped by topic, topics in the order they first appear.
pub(super) fn group_by_topic(outcomes: impl IntoIterator<Item = ((String, i32), Result<(), Refusal>)>) -> Results {
    let mut results: Results = Vec::new();
    for ((topic, index), outcome) in outcomes {
        match results.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push((index, outcome)),
            None => results.push((topic, vec![(index, outcome)])),
        }
    }
    results
}
