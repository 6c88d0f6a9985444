//! DescribeTransactions (key 65), v0: the state of each named transactional id, from
//! its coordinator ([`crate::txn`]): Kafka's state name (Empty, Ongoing,
//! PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead,
//! PrepareEpochFence), producer id and epoch, transaction timeout, start time (-1 when
//! none) and the topic partitions of the transaction (`__consumer_offsets` ones
//! included).
//!
//! Errors per id, as Kafka's coordinator gives them: INVALID_REQUEST for an empty id,
//! TRANSACTIONAL_ID_NOT_FOUND for one without metadata (or being expired),
//! NOT_COORDINATOR when this broker's shard does not own the id's partition of
//! `__transaction_state`. COORDINATOR_LOAD_IN_PROGRESS never: requests wait in the
//! coordinator's queue until its partitions are loaded. A cluster node does not
//! serve transactions yet: COORDINATOR_NOT_AVAILABLE for every id (Kafka's answer of
//! an inactive coordinator); its ApiVersions does not advertise this API.
//!
//! Limits. Partitions stay in the answer until the transaction completes: markers
//! are reported written for the transaction as a whole (Kafka lists only those
//! without their marker while it prepares to commit or abort). PrepareEpochFence is
//! never reported: the fence and its abort are one record here, PrepareAbort.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId as WireProducerId, TopicName as WireTopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{RequestContext, Versions};
use crate::txn::coordinator::{Request, Response, TransactionDescription};
use crate::txn::TransactionalId;

pub const VERSIONS: Versions = Versions::new(0, 0);

pub async fn handle(
    context: &RequestContext<'_>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for wire_id in request.transactional_ids {
        let transactional_id = TransactionalId(wire_id.0.to_string());
        let answer = TransactionState::default().with_transactional_id(wire_id);
        let described = match &context.shard.transactions {
            None => Err(ResponseError::CoordinatorNotAvailable),
            Some(transactions) => match transactions.ask(Request::Describe { transactional_id }).await {
                Ok(Response::Describe(described)) => described,
                Ok(other) => {
                    tracing::error!("DescribeTransactions answered with {other:?}");
                    Err(ResponseError::UnknownServerError)
                }
                Err(error) => Err(error),
            },
        };
        states.push(match described {
            Ok(described) => describe(answer, &described),
            Err(error) => answer.with_error_code(error.code()),
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

fn describe(answer: TransactionState, described: &TransactionDescription) -> TransactionState {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for partition in &described.partitions {
        topics.entry(partition.topic.as_str()).or_default().push(partition.partition.0);
    }
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            TopicData::default()
                .with_topic(WireTopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    answer
        .with_transaction_state(StrBytes::from_static_str(described.state.name()))
        .with_transaction_timeout_ms(described.timeout_ms)
        .with_transaction_start_time_ms(described.txn_start_timestamp_ms)
        .with_producer_id(WireProducerId(described.producer_id.0))
        .with_producer_epoch(described.producer_epoch.0)
        .with_topics(topics)
}
