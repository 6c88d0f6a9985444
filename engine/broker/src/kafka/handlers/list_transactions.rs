//! ListTransactions (key 66), v0–v1: every transactional id this broker coordinates,
//! with its producer id and state, filtered as Kafka's `TransactionStateManager.
//! listTransactionStates` does ([`ListFilter`]): by state (names exactly as Kafka
//! spells them; names it does not know are answered in `unknown_state_filters` and
//! match nothing), by producer id, and from v1 by DurationFilter (only transactions
//! that started more than that many milliseconds ago; -1: all). Dead transactional
//! ids (being expired) are never listed.
//!
//! Every shard's coordinator is asked ([`crate::txn::router::TxnRouter::list`]).
//! COORDINATOR_NOT_AVAILABLE if one is gone, and on a cluster node, which does not
//! serve transactions yet (its ApiVersions does not advertise this API). Never
//! COORDINATOR_LOAD_IN_PROGRESS: requests wait in each coordinator's queue until its
//! partitions are loaded. Not served: v2's TransactionalIdPattern (KIP-1152).

use std::collections::BTreeSet;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId as WireProducerId,
    TransactionalId as WireTransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::txn::coordinator::ListFilter;
use crate::txn::state::TxnState;
use corelog_engine::types::ProducerId;

pub const VERSIONS: Versions = Versions::new(0, 1);

pub async fn handle(context: &RequestContext<'_>, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let response = ListTransactionsResponse::default();
    let Some(transactions) = &context.shard.transactions else {
        return response.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let (filter, unknown_state_filters) = filter_of(&request, context.version);
    match transactions.list(filter).await {
        Ok(listed) => response.with_unknown_state_filters(unknown_state_filters).with_transaction_states(
            listed
                .into_iter()
                .map(|listed| {
                    TransactionState::default()
                        .with_transactional_id(WireTransactionalId(StrBytes::from_string(listed.transactional_id.0)))
                        .with_producer_id(WireProducerId(listed.producer_id.0))
                        .with_transaction_state(StrBytes::from_static_str(listed.state.name()))
                })
                .collect(),
        ),
        Err(error) => response.with_error_code(error.code()),
    }
}

/// The request's filters, and the state names no state has (in request order, each
/// once).
fn filter_of(request: &ListTransactionsRequest, version: i16) -> (ListFilter, Vec<StrBytes>) {
    let mut unknown = Vec::new();
    let states = (!request.state_filters.is_empty()).then(|| {
        let mut states = BTreeSet::new();
        for name in &request.state_filters {
            match TxnState::from_name(name.as_str()) {
                Some(state) => {
                    states.insert(state);
                }
                None if unknown.contains(name) => {}
                None => unknown.push(name.clone()),
            }
        }
        states
    });
    let filter = ListFilter {
        states,
        producer_ids: request.producer_id_filters.iter().map(|id| ProducerId(id.0)).collect(),
        duration_ms: if version >= 1 { request.duration_filter } else { -1 },
    };
    (filter, unknown)
}
