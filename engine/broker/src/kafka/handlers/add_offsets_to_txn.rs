//! AddOffsetsToTxn (key 25), v0–v3: a group's `__consumer_offsets` partition joins
//! a producer's ongoing transaction, so TxnOffsetCommit may write there and the
//! transaction's marker reaches it. Answered by the transactional id's coordinator
//! once the change is durable. A cluster node does not serve transactions yet:
//! COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::group::GroupId;
use crate::txn::coordinator::{Request, Response};
use crate::txn::TransactionalId;
use corelog_engine::types::{ProducerEpoch, ProducerId};

pub const VERSIONS: Versions = Versions::new(0, 3);

pub async fn handle(context: &RequestContext<'_>, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let response = AddOffsetsToTxnResponse::default();
    let Some(transactions) = &context.shard.transactions else {
        return response.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let offsets_partition = match context.shard.groups.offsets_partition(&GroupId(request.group_id.0.to_string())) {
        Ok(partition) => partition,
        Err(error) => return response.with_error_code(error.code()),
    };
    let ask = Request::AddOffsets {
        transactional_id: TransactionalId(request.transactional_id.to_string()),
        producer_id: ProducerId(request.producer_id.0),
        producer_epoch: ProducerEpoch(request.producer_epoch),
        offsets_partition,
    };
    match transactions.ask(ask).await {
        Ok(Response::AddOffsets(Ok(()))) => response,
        Ok(Response::AddOffsets(Err(error))) | Err(error) => response.with_error_code(error.code()),
        Ok(other) => {
            tracing::error!("AddOffsetsToTxn answered with {other:?}");
            response.with_error_code(ResponseError::UnknownServerError.code())
        }
    }
}
