//! FindCoordinator (key 10), v0–v4: which broker coordinates a group. With one
//! broker the answer for a group (key type 0) is always this broker; v4 asks for
//! several keys at once (KIP-699). Transactions (key type 1) have no coordinator
//! yet: COORDINATOR_NOT_AVAILABLE, which clients retry.
//!
//! On a node of a cluster every group is coordinated by one broker, the live broker
//! with the lowest id ([`ClusterView::group_coordinator`]), so that all members of a
//! group meet at one coordinator; every other broker answers the group requests
//! NOT_COORDINATOR (checked in one place, [`crate::group::GroupRouter`]), and
//! clients look the coordinator up again. COORDINATOR_NOT_AVAILABLE while no broker
//! is live. The limit, until groups are replicated (when a group's coordinator will
//! be the leader of its `__consumer_offsets` partition): the groups and committed
//! offsets live in that broker's own `__consumer_offsets` only. When it stops or
//! is fenced, the next lowest id coordinates, without the offsets committed to the
//! first (they come back when it is again the lowest live id); if it is replaced
//! by a broker on an empty disk, they are lost.
//!
//! [`ClusterView::group_coordinator`]: crate::cluster::view::ClusterView::group_coordinator

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::resolve::Refusal;
use super::{wire_code, RequestContext, Versions};

pub const VERSIONS: Versions = Versions::new(0, 4);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The coordinator of one key: this broker, or an error.
struct Answer {
    error: Option<Refusal>,
    node_id: BrokerId,
    host: String,
    port: i32,
}

fn answer(context: &RequestContext<'_>, key_type: i8) -> Answer {
    let error = match key_type {
        KEY_TYPE_GROUP => None,
        KEY_TYPE_TRANSACTION => {
            Some(Refusal::new(ResponseError::CoordinatorNotAvailable, "transactions are not supported yet"))
        }
        other => Some(Refusal::new(ResponseError::InvalidRequest, format!("unknown coordinator key type {other}"))),
    };
    let refused = |error| Answer { error: Some(error), node_id: BrokerId(-1), host: String::new(), port: -1 };
    match (error, &context.shard.cluster) {
        (None, None) => {
            let broker = &context.shard.broker;
            let (host, port) = broker.advertised();
            Answer { error: None, node_id: BrokerId(broker.config.node_id), host, port: port as i32 }
        }
        (None, Some(view)) => match view.group_coordinator() {
            Some(coordinator) => Answer {
                error: None,
                node_id: BrokerId(coordinator.node_id),
                host: coordinator.host,
                port: i32::from(coordinator.port),
            },
            None => refused(Refusal::new(
                ResponseError::CoordinatorNotAvailable,
                "no broker of the cluster is live to coordinate groups",
            )),
        },
        (Some(error), _) => refused(error),
    }
}

pub async fn handle(context: &RequestContext<'_>, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if context.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let answer = answer(context, request.key_type);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(answer.node_id)
                    .with_host(StrBytes::from_string(answer.host))
                    .with_port(answer.port)
                    .with_error_code(wire_code(answer.error.as_ref().map(|refusal| refusal.error)))
                    .with_error_message(answer.error.map(|refusal| StrBytes::from_string(refusal.message)))
            })
            .collect();
        return FindCoordinatorResponse::default().with_error_message(None).with_coordinators(coordinators);
    }
    // v0 has no key type: a group.
    let key_type = if context.version == 0 { KEY_TYPE_GROUP } else { request.key_type };
    let answer = answer(context, key_type);
    FindCoordinatorResponse::default()
        .with_error_code(wire_code(answer.error.as_ref().map(|refusal| refusal.error)))
        .with_error_message(answer.error.map(|refusal| StrBytes::from_string(refusal.message)))
        .with_node_id(answer.node_id)
        .with_host(StrBytes::from_string(answer.host))
        .with_port(answer.port)
}
