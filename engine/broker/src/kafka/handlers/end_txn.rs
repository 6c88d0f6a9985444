//! EndTxn (key 26), v0–v4: a producer commits or aborts its ongoing transaction.
//!
//! The coordinator answers once the PrepareCommit/PrepareAbort record is durable in
//! `__transaction_state`; the markers are written to the transaction's partitions
//! after the answer (a read_committed consumer sees the records once they land).
//! v5 (transaction version 2, KIP-890 part 2: every end bumps the epoch, partitions
//! added implicitly by Produce) is not served. A cluster node does not serve
//! transactions yet: COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId as WireProducerId};
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::txn::coordinator::{Request, Response};
use crate::txn::{TransactionResult, TransactionVersion, TransactionalId};
use corelog_engine::types::{ProducerEpoch, ProducerId};

pub const VERSIONS: Versions = Versions::new(0, 4);

pub async fn handle(context: &RequestContext<'_>, request: EndTxnRequest) -> EndTxnResponse {
    let response = EndTxnResponse::default().with_producer_id(WireProducerId(-1)).with_producer_epoch(-1);
    let Some(transactions) = &context.shard.transactions else {
        return response.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let ask = Request::EndTxn {
        transactional_id: TransactionalId(request.transactional_id.to_string()),
        producer_id: ProducerId(request.producer_id.0),
        producer_epoch: ProducerEpoch(request.producer_epoch),
        result: if request.committed { TransactionResult::Commit } else { TransactionResult::Abort },
        version: TransactionVersion::V0,
    };
    match transactions.ask(ask).await {
        Ok(Response::EndTxn(Ok((id, epoch)))) => {
            response.with_producer_id(WireProducerId(id.0)).with_producer_epoch(epoch.0)
        }
        Ok(Response::EndTxn(Err(error))) | Err(error) => response.with_error_code(error.code()),
        Ok(other) => {
            tracing::error!("EndTxn answered with {other:?}");
            response.with_error_code(ResponseError::UnknownServerError.code())
        }
    }
}
