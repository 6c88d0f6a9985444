//! InitProducerId (key 22), v0–v4: a producer id and epoch for an idempotent or
//! transactional producer.
//!
//! Without a transactional id, Kafka hands out a fresh producer id every time, even
//! when the request names the producer's current id and epoch (KIP-360 epoch bumps
//! of idempotent producers): the partitions' sequence state for the old id simply
//! stops being used.
//!
//! With one, the transactional id's coordinator answers ([`crate::txn`]): the id's
//! producer id with its epoch bumped (fencing an older instance and aborting its
//! open transaction), once that is durable in `__transaction_state`. A cluster node
//! does not serve transactions yet: TRANSACTIONAL_ID_AUTHORIZATION_FAILED (clients
//! rarely get that far: its ApiVersions does not advertise the transaction APIs).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::cluster::quorum::{ControllerReply, ControllerRequest};
use crate::cluster::view::ClusterView;
use crate::kafka::errors::error_code;
use crate::txn;
use corelog_engine::types::{ProducerEpoch, ProducerId as IdOf};

pub const VERSIONS: Versions = Versions::new(0, 4);

pub async fn handle(context: &RequestContext<'_>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(transactional_id) = &request.transactional_id {
        let Some(transactions) = &context.shard.transactions else {
            return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
        };
        let expected = (context.version >= 3 && request.producer_id.0 >= 0)
            .then_some((IdOf(request.producer_id.0), ProducerEpoch(request.producer_epoch)));
        let ask = txn::coordinator::Request::InitProducerId {
            transactional_id: txn::TransactionalId(transactional_id.to_string()),
            timeout_ms: request.transaction_timeout_ms,
            expected,
        };
        return match transactions.ask(ask).await {
            Ok(txn::coordinator::Response::InitProducerId(Ok((id, epoch)))) => {
                response.with_producer_id(ProducerId(id.0)).with_producer_epoch(epoch.0)
            }
            Ok(txn::coordinator::Response::InitProducerId(Err(error))) | Err(error) => {
                response.with_error_code(error.code())
            }
            Ok(other) => {
                tracing::error!("InitProducerId answered with {other:?}");
                response.with_error_code(ResponseError::UnknownServerError.code())
            }
        };
    }
    if let Some(cluster) = &context.shard.cluster {
        return match next_in_cluster(context, cluster).await {
            Ok(id) => response.with_producer_id(ProducerId(id.0)).with_producer_epoch(0),
            Err(error) => response.with_error_code(error.code()),
        };
    }
    match context.shard.broker.producer_ids.next() {
        Ok(id) => response.with_producer_id(ProducerId(id.0)).with_producer_epoch(0),
        Err(error) => {
            tracing::error!("allocating a producer id: {error}");
            response.with_error_code(error_code(&error))
        }
    }
}

/// A producer id from this cluster node's blocks, asking the active controller for a
/// new block when they are used up. No controller to answer is
/// COORDINATOR_NOT_AVAILABLE, which clients retry.
async fn next_in_cluster(
    context: &RequestContext<'_>,
    cluster: &ClusterView,
) -> Result<corelog_engine::types::ProducerId, ResponseError> {
    let ids = &context.shard.broker.cluster_producer_ids;
    if let Some(id) = ids.take() {
        return Ok(id);
    }
    let node_id = cluster.node_id;
    let Some(broker_epoch) = cluster.image().brokers.get(&node_id).map(|b| b.epoch) else {
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    match cluster.request(ControllerRequest::AllocateProducerIds { node_id, broker_epoch }).await {
        ControllerReply::ProducerIds { first, count } => {
            tracing::info!("broker {node_id}: producer ids [{first}, {}) from the controller", first + count);
            ids.add_block(first, count);
            ids.take().ok_or(ResponseError::CoordinatorNotAvailable)
        }
        other => {
            tracing::debug!("broker {node_id}: no producer id block: {other:?}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}
