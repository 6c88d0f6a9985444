//! FindCoordinator (key 10), v0–v4: which broker coordinates a group. With one
//! broker the answer for a group (key type 0) is always this broker; v4 asks for
//! several keys at once (KIP-699). A transactional id (key type 1) is coordinated
//! by this broker too on a single broker (its shard that owns the id's partition of
//! `__transaction_state` serves it, see [`crate::txn::router`]); a cluster node does
//! not serve transactions yet and answers COORDINATOR_NOT_AVAILABLE.
//!
//! On a node of a cluster a group is coordinated, as in Kafka, by the leader of its
//! partition of the cluster's `__consumer_offsets` (replicated like any topic):
//! that broker loads the partition's groups from the replicated log when it comes
//! to lead it, so committed offsets and group generations survive the loss of a
//! broker. COORDINATOR_NOT_AVAILABLE while the partition has no live leader. The
//! first lookup in a cluster without the topic asks the controller to create it
//! (`offsets.topic.num.partitions`, `offsets.topic.replication.factor` capped at the
//! number of voters) and answers COORDINATOR_NOT_AVAILABLE until it exists with a
//! leader; clients retry.

use std::time::Duration;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::resolve::Refusal;
use super::{controller, wire_code, RequestContext, Versions};
use crate::cluster::controller::Placement;
use crate::cluster::quorum::ControllerRequest;
use crate::cluster::view::ClusterView;
use crate::group::{offsets_partition_for, GroupId, OFFSETS_TOPIC};

pub const VERSIONS: Versions = Versions::new(0, 4);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// How long a lookup waits for the controller to create the offsets topic.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The coordinator of one key: a broker, or an error.
struct Answer {
    error: Option<Refusal>,
    node_id: BrokerId,
    host: String,
    port: i32,
}

impl Answer {
    fn refused(error: Refusal) -> Answer {
        Answer { error: Some(error), node_id: BrokerId(-1), host: String::new(), port: -1 }
    }
}

async fn answer(context: &RequestContext<'_>, key_type: i8, key: &str) -> Answer {
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION if context.shard.transactions.is_some() => {}
        KEY_TYPE_TRANSACTION => {
            return Answer::refused(Refusal::new(
                ResponseError::CoordinatorNotAvailable,
                "transactions are not served on a cluster yet",
            ))
        }
        other => {
            return Answer::refused(Refusal::new(
                ResponseError::InvalidRequest,
                format!("unknown coordinator key type {other}"),
            ))
        }
    }
    let Some(view) = &context.shard.cluster else {
        let broker = &context.shard.broker;
        let (host, port) = broker.advertised();
        return Answer { error: None, node_id: BrokerId(broker.config.node_id), host, port: port as i32 };
    };
    match group_coordinator(context, view, key).await {
        Ok(broker) => {
            Answer { error: None, node_id: BrokerId(broker.node_id), host: broker.host, port: i32::from(broker.port) }
        }
        Err(refusal) => Answer::refused(refusal),
    }
}

/// A cluster's coordinator of `group`: the leader of its offsets partition.
async fn group_coordinator(
    context: &RequestContext<'_>,
    view: &ClusterView,
    group: &str,
) -> Result<crate::cluster::image::BrokerImage, Refusal> {
    let partitions = match view.offsets_partitions() {
        Some(partitions) => partitions,
        None => {
            create_offsets_topic(context, view).await?;
            view.offsets_partitions().ok_or_else(|| {
                Refusal::new(ResponseError::CoordinatorNotAvailable, format!("{OFFSETS_TOPIC} is being created"))
            })?
        }
    };
    let partition = offsets_partition_for(&GroupId(group.to_string()), partitions);
    view.offsets_leader(partition.0).ok_or_else(|| {
        Refusal::new(
            ResponseError::CoordinatorNotAvailable,
            format!("{OFFSETS_TOPIC}/{partition}, which holds group {group:?}, has no live leader"),
        )
    })
}

/// Asks the controller for the cluster's offsets topic; Ok once this shard's
/// image has it. Another broker creating it at the same time is no error.
async fn create_offsets_topic(context: &RequestContext<'_>, view: &ClusterView) -> Result<(), Refusal> {
    let config = &context.shard.broker.config;
    let voters = config.cluster.voters.len().max(1) as i32;
    let replication_factor = config.groups.offsets_replication_factor.clamp(1, voters);
    let request = ControllerRequest::CreateTopic {
        name: OFFSETS_TOPIC.to_string(),
        placement: Placement::Spread { partitions: config.groups.offsets_partitions, replication_factor },
        configs: config.groups.offsets_topic_configs(),
    };
    tracing::info!(
        "broker {}: asking the controller for {OFFSETS_TOPIC} ({} partitions, replication factor {replication_factor})",
        view.node_id,
        config.groups.offsets_partitions
    );
    match controller::ask(view, request, std::time::Instant::now() + CREATE_TIMEOUT).await {
        Ok(_) => Ok(()),
        Err(refusal) if refusal.error == ResponseError::TopicAlreadyExists => Ok(()),
        Err(refusal) => Err(Refusal::new(
            ResponseError::CoordinatorNotAvailable,
            format!("{OFFSETS_TOPIC} cannot be created yet: {}", refusal.message),
        )),
    }
}

pub async fn handle(context: &RequestContext<'_>, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if context.version >= 4 {
        let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
        for key in request.coordinator_keys {
            let answer = answer(context, request.key_type, key.as_str()).await;
            coordinators.push(
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(answer.node_id)
                    .with_host(StrBytes::from_string(answer.host))
                    .with_port(answer.port)
                    .with_error_code(wire_code(answer.error.as_ref().map(|refusal| refusal.error)))
                    .with_error_message(answer.error.map(|refusal| StrBytes::from_string(refusal.message))),
            );
        }
        return FindCoordinatorResponse::default().with_error_message(None).with_coordinators(coordinators);
    }
    // v0 has no key type: a group.
    let key_type = if context.version == 0 { KEY_TYPE_GROUP } else { request.key_type };
    let answer = answer(context, key_type, request.key.as_str()).await;
    FindCoordinatorResponse::default()
        .with_error_code(wire_code(answer.error.as_ref().map(|refusal| refusal.error)))
        .with_error_message(answer.error.map(|refusal| StrBytes::from_string(refusal.message)))
        .with_node_id(answer.node_id)
        .with_host(StrBytes::from_string(answer.host))
        .with_port(answer.port)
}
