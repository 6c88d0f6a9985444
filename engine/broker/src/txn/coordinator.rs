//! [`TxnCoordinator`]: the transactions of the `__transaction_state` partitions one
//! broker coordinates, as a state machine (Kafka's `TransactionCoordinator`).
//!
//! No IO and no clock. Inputs are [`Request`]s (each with a caller's [`RequestId`]),
//! [`TxnCoordinator::tick`] with `now_ms`, and completions: an append done or failed
//! ([`AppendId`]), markers written. Outputs are [`Effect`]s taken with
//! [`TxnCoordinator::take_effects`]: a record to append to `__transaction_state`,
//! markers to write, an answer to a request. A change of a transaction takes effect
//! only once its record is appended; until then the transaction has a pending state
//! and other requests for it get CONCURRENT_TRANSACTIONS.
//!
//! The rules and error codes follow Kafka's coordinator: fencing by epoch bump when a
//! new producer calls InitProducerId with the same transactional id (an open
//! transaction is aborted first and the caller told CONCURRENT_TRANSACTIONS), KIP-360
//! (a producer that retries InitProducerId with its epoch keeps it or bumps it;
//! an exhausted epoch gets a new producer id), KIP-890 part 1 (verify-only
//! AddPartitionsToTxn, answered TRANSACTION_ABORTABLE for a partition not in the
//! transaction) and part 2 (transaction version 2: every EndTxn bumps the epoch).
//! A transaction that reached PrepareCommit commits, whatever happens after: a
//! coordinator that loads a partition resends the markers of every prepared one.
//!
//! One departure from Kafka, invisible to clients but for its latency: Kafka answers
//! EndTxn once PrepareCommit is durable and a producer's next AddPartitionsToTxn or
//! AddOffsetsToTxn, arriving while the markers are still written, gets
//! CONCURRENT_TRANSACTIONS, which librdkafka retries 20 ms later (AddPartitions)
//! or after `retry.backoff.ms`, 100 ms (AddOffsets): a floor under every small
//! transaction (measured: 5 214 msg/s committing every 100 messages). Here such a
//! request from the transaction's current producer is parked until the completion
//! record is appended and then handled as if it had just arrived; at most
//! [`PARKED_PER_TRANSACTION_MAX`] per transaction, and one still parked after
//! [`PARKED_MS_MAX`] (seen on the tick) is answered CONCURRENT_TRANSACTIONS after
//! all, so a transaction whose markers cannot be written holds no client.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::log::TxnRecord;
use super::state::{TransactionMetadata, TxnState, TxnTransit};
use super::{
    partition_for, CoordinatorEpoch, TransactionResult, TransactionVersion, TransactionalId, TxnConfig,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use crate::group::offsets_topic;
use corelog_engine::types::{PartitionId, ProducerEpoch, ProducerId, TopicPartition};

/// Where producer ids come from (the broker's [`crate::producer_ids`] allocators).
pub trait ProducerIdSource {
    /// A producer id never handed out before, or the error to answer (a cluster node
    /// waiting for a block from the controller answers COORDINATOR_LOAD_IN_PROGRESS,
    /// as Kafka's does).
    fn next_producer_id(&mut self) -> Result<ProducerId, ResponseError>;
}

/// The caller's name for a request, given back with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// The coordinator's name for an append, given back with its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppendId(pub u64);

/// A request to the coordinator; the handlers have decoded and validated the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// InitProducerId with a transactional id; `expected` is KIP-360's producer id
    /// and epoch of a producer that already has one.
    InitProducerId { transactional_id: TransactionalId, timeout_ms: i32, expected: Option<(ProducerId, ProducerEpoch)> },
    /// AddPartitionsToTxn; `verify_only` is KIP-890's check from a partition leader.
    AddPartitions {
        transactional_id: TransactionalId,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        partitions: BTreeSet<TopicPartition>,
        verify_only: bool,
    },
    /// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
    AddOffsets {
        transactional_id: TransactionalId,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        offsets_partition: PartitionId,
    },
    /// EndTxn; `version` is the client's transaction version (2 from EndTxn v5).
    EndTxn {
        transactional_id: TransactionalId,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        result: TransactionResult,
        version: TransactionVersion,
    },
    /// DescribeTransactions of one transactional id: a query, nothing changes.
    Describe { transactional_id: TransactionalId },
    /// ListTransactions: every transactional id of this coordinator's partitions that
    /// passes the filters; a query, nothing changes.
    List(ListFilter),
}

impl Request {
    /// The transactional id whose coordinator serves the request; `None` for a
    /// request every coordinator answers (ListTransactions).
    pub fn transactional_id(&self) -> Option<&TransactionalId> {
        match self {
            Request::InitProducerId { transactional_id, .. }
            | Request::AddPartitions { transactional_id, .. }
            | Request::AddOffsets { transactional_id, .. }
            | Request::EndTxn { transactional_id, .. }
            | Request::Describe { transactional_id } => Some(transactional_id),
            Request::List(_) => None,
        }
    }
}

/// ListTransactions' filters, as Kafka's `TransactionStateManager.listTransactionStates`
/// applies them: a transaction is listed if it is not Dead, its producer id is one of
/// `producer_ids` (when any), its state one of `states` (when given), and it started
/// more than `duration_ms` ago (when >= 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// `None`: any state. `Some` of an empty set: the request named only unknown
    /// states, so no transaction passes (as in Kafka).
    pub states: Option<BTreeSet<TxnState>>,
    /// Empty: any producer id.
    pub producer_ids: BTreeSet<ProducerId>,
    /// -1 (any negative): no duration filter (ListTransactions v1's DurationFilter).
    pub duration_ms: i64,
}

/// No filter: every transactional id but the Dead ones.
impl Default for ListFilter {
    fn default() -> Self {
        ListFilter { states: None, producer_ids: BTreeSet::new(), duration_ms: -1 }
    }
}

impl ListFilter {
    /// Kafka's test, with its quirk: a transaction that never started has start time
    /// -1, so it passes any duration filter (`now - (-1) > duration`).
    fn passes(&self, metadata: &TransactionMetadata, now_ms: i64) -> bool {
        metadata.state != TxnState::Dead
            && (self.producer_ids.is_empty() || self.producer_ids.contains(&metadata.producer_id))
            && self.states.as_ref().is_none_or(|states| states.contains(&metadata.state))
            && (self.duration_ms < 0 || now_ms.saturating_sub(metadata.txn_start_timestamp_ms) > self.duration_ms)
    }
}

/// What DescribeTransactions reports of one transactional id (Kafka's
/// `TransactionCoordinator.handleDescribeTransactions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    /// The current state, not a pending one.
    pub state: TxnState,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub timeout_ms: i32,
    /// When its current (or last) transaction started; -1 for none since the last
    /// InitProducerId.
    pub txn_start_timestamp_ms: i64,
    /// The partitions of the transaction, `__consumer_offsets` ones included; all of
    /// them until the transaction completes (Kafka drops each as its marker lands).
    pub partitions: BTreeSet<TopicPartition>,
}

/// One line of ListTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTransaction {
    pub transactional_id: TransactionalId,
    pub producer_id: ProducerId,
    pub state: TxnState,
}

/// An answer, one kind per request kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    InitProducerId(Result<(ProducerId, ProducerEpoch), ResponseError>),
    AddPartitions(Result<(), ResponseError>),
    /// Per partition: None, or why it is not in the transaction.
    VerifyPartitions(BTreeMap<TopicPartition, Option<ResponseError>>),
    AddOffsets(Result<(), ResponseError>),
    /// The producer id and epoch the producer goes on with.
    EndTxn(Result<(ProducerId, ProducerEpoch), ResponseError>),
    Describe(Result<TransactionDescription, ResponseError>),
    List(Vec<ListedTransaction>),
}

/// Transaction markers to write to every partition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMarkers {
    pub transactional_id: TransactionalId,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub result: TransactionResult,
    pub coordinator_epoch: CoordinatorEpoch,
    pub partitions: BTreeSet<TopicPartition>,
}

/// What the coordinator asks of its runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Append `record` to `partition` of `__transaction_state` as its coordinator
    /// of `coordinator_epoch`, then call `append_done` or `append_failed`.
    Append { append: AppendId, partition: PartitionId, coordinator_epoch: CoordinatorEpoch, record: TxnRecord },
    /// Write these markers (WriteTxnMarkers), retrying each partition until it is
    /// written or gone, then call `markers_written` with them.
    WriteMarkers(TxnMarkers),
    /// Answer a request.
    Respond { request: RequestId, response: Response },
}

/// What happens once an append is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterAppend {
    InitProducerId(RequestId),
    /// A new producer's InitProducerId fenced an open transaction: answered
    /// CONCURRENT_TRANSACTIONS once the abort is prepared (the producer retries).
    InitFence(RequestId),
    AddPartitions(RequestId),
    AddOffsets(RequestId),
    EndTxn(RequestId),
    TimeoutAbort,
    Complete,
    Expire,
}

impl AfterAppend {
    fn request(self) -> Option<RequestId> {
        match self {
            AfterAppend::InitProducerId(request)
            | AfterAppend::InitFence(request)
            | AfterAppend::AddPartitions(request)
            | AfterAppend::AddOffsets(request)
            | AfterAppend::EndTxn(request) => Some(request),
            AfterAppend::TimeoutAbort | AfterAppend::Complete | AfterAppend::Expire => None,
        }
    }

    /// The answer to the request when the append did not happen.
    fn failed(self, error: ResponseError) -> Option<(RequestId, Response)> {
        let response = match self {
            AfterAppend::InitProducerId(_) | AfterAppend::InitFence(_) => Response::InitProducerId(Err(error)),
            AfterAppend::AddPartitions(_) => Response::AddPartitions(Err(error)),
            AfterAppend::AddOffsets(_) => Response::AddOffsets(Err(error)),
            AfterAppend::EndTxn(_) => Response::EndTxn(Err(error)),
            AfterAppend::TimeoutAbort | AfterAppend::Complete | AfterAppend::Expire => return None,
        };
        self.request().map(|request| (request, response))
    }
}

struct PendingAppend {
    transactional_id: TransactionalId,
    partition: PartitionId,
    coordinator_epoch: CoordinatorEpoch,
    transit: TxnTransit,
    then: AfterAppend,
}

pub struct TxnCoordinator<P> {
    config: TxnConfig,
    producer_ids: P,
    /// The `__transaction_state` partitions this coordinator owns, with its epoch.
    owned: BTreeMap<PartitionId, CoordinatorEpoch>,
    transactions: BTreeMap<TransactionalId, TransactionMetadata>,
    appends: BTreeMap<AppendId, PendingAppend>,
    next_append: u64,
    /// Prepared transactions whose markers are written but whose completion record
    /// could not be appended: retried on the tick.
    completions_due: BTreeSet<TransactionalId>,
    /// Requests of the next transaction that arrived while this one's markers were
    /// written (see the module docs).
    parked: BTreeMap<TransactionalId, Vec<Parked>>,
    effects: Vec<Effect>,
}

/// A refusal before any change: the request is answered at once.
type Refusal = ResponseError;

/// Most AddPartitions/AddOffsets parked per completing transaction (a client sends
/// one at a time; more are answered CONCURRENT_TRANSACTIONS as Kafka would).
pub const PARKED_PER_TRANSACTION_MAX: usize = 8;
/// How long a parked request may wait for its transaction's completion before it is
/// answered CONCURRENT_TRANSACTIONS (checked on the tick, so up to a tick later).
pub const PARKED_MS_MAX: i64 = 1_000;

/// A request waiting for its transaction to complete.
struct Parked {
    request_id: RequestId,
    request: Request,
    since_ms: i64,
}

/// What an InitProducerId's append leads to, given its request.
type InitFollowUp = fn(RequestId) -> AfterAppend;

impl<P: ProducerIdSource> TxnCoordinator<P> {
    pub fn new(config: TxnConfig, producer_ids: P) -> TxnCoordinator<P> {
        assert!(config.state_log_partitions > 0, "the transaction state topic has partitions");
        TxnCoordinator {
            config,
            producer_ids,
            owned: BTreeMap::new(),
            transactions: BTreeMap::new(),
            appends: BTreeMap::new(),
            next_append: 0,
            completions_due: BTreeSet::new(),
            parked: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    /// The effects since the last call, in the order they were decided.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn partition_for(&self, transactional_id: &TransactionalId) -> PartitionId {
        partition_for(transactional_id, self.config.state_log_partitions)
    }

    pub fn transaction(&self, transactional_id: &TransactionalId) -> Option<&TransactionMetadata> {
        self.transactions.get(transactional_id)
    }

    pub fn transactions(&self) -> impl Iterator<Item = &TransactionMetadata> {
        self.transactions.values()
    }

    pub fn producer_ids(&self) -> &P {
        &self.producer_ids
    }

    /// This broker became the coordinator of `partition` at `coordinator_epoch`, whose
    /// replay ([`super::log::replay`]) found `transactions`. Prepared transactions get
    /// their markers sent again; open ones time out as usual.
    pub fn load_partition(
        &mut self,
        partition: PartitionId,
        coordinator_epoch: CoordinatorEpoch,
        transactions: BTreeMap<TransactionalId, TransactionMetadata>,
    ) {
        self.unload_partition(partition);
        self.owned.insert(partition, coordinator_epoch);
        for (transactional_id, metadata) in transactions {
            if self.partition_for(&transactional_id) != partition {
                tracing::warn!("{transactional_id}: found in {partition}, belongs elsewhere; skipped");
                continue;
            }
            if matches!(metadata.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                self.send_markers(&metadata, coordinator_epoch);
            }
            self.transactions.insert(transactional_id, metadata);
        }
    }

    /// This broker is no longer the coordinator of `partition`: its transactions are
    /// forgotten; appends in flight are answered NOT_COORDINATOR when they complete.
    pub fn unload_partition(&mut self, partition: PartitionId) {
        self.owned.remove(&partition);
        let partitions = self.config.state_log_partitions;
        self.transactions.retain(|id, _| partition_for(id, partitions) != partition);
        self.completions_due.retain(|id| partition_for(id, partitions) != partition);
        let (moved, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(id, _)| partition_for(id, partitions) == partition);
        self.parked = kept;
        for parked in moved.into_values().flatten() {
            self.answer_parked(parked, ResponseError::NotCoordinator);
        }
    }

    pub fn handle(&mut self, request_id: RequestId, request: Request, now_ms: i64) {
        if self.park_if_completing(request_id, &request, now_ms) {
            return;
        }
        match request {
            Request::InitProducerId { transactional_id, timeout_ms, expected } => {
                self.init_producer_id(request_id, transactional_id, timeout_ms, expected, now_ms)
            }
            Request::AddPartitions { transactional_id, producer_id, producer_epoch, partitions, verify_only: true } => {
                let response = self.verify_partitions(&transactional_id, producer_id, producer_epoch, partitions);
                self.respond(request_id, Response::VerifyPartitions(response));
            }
            Request::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                verify_only: false,
            } => {
                let then = AfterAppend::AddPartitions(request_id);
                self.add_partitions(then, transactional_id, (producer_id, producer_epoch), partitions, now_ms);
            }
            Request::AddOffsets { transactional_id, producer_id, producer_epoch, offsets_partition } => {
                let partitions = [TopicPartition::new(offsets_topic(), offsets_partition)].into();
                let then = AfterAppend::AddOffsets(request_id);
                self.add_partitions(then, transactional_id, (producer_id, producer_epoch), partitions, now_ms);
            }
            Request::EndTxn { transactional_id, producer_id, producer_epoch, result, version } => {
                let producer = (producer_id, producer_epoch);
                self.end_txn(request_id, transactional_id, producer, result, version, now_ms)
            }
            Request::Describe { transactional_id } => {
                let response = Response::Describe(self.describe(&transactional_id));
                self.respond(request_id, response);
            }
            Request::List(filter) => {
                let response = Response::List(self.list(&filter, now_ms));
                self.respond(request_id, response);
            }
        }
    }

    /// Parks an AddPartitions or AddOffsets from the current producer of a
    /// transaction whose markers are being written (PrepareCommit or PrepareAbort,
    /// its completion record perhaps in flight); `true` if it did.
    fn park_if_completing(&mut self, request_id: RequestId, request: &Request, now_ms: i64) -> bool {
        let (transactional_id, producer_id, producer_epoch) = match request {
            Request::AddPartitions { transactional_id, producer_id, producer_epoch, verify_only: false, .. }
            | Request::AddOffsets { transactional_id, producer_id, producer_epoch, .. } => {
                (transactional_id, *producer_id, *producer_epoch)
            }
            _ => return false,
        };
        let completing = match self.current_producer(transactional_id, producer_id, producer_epoch) {
            Ok(metadata) => matches!(metadata.state, TxnState::PrepareCommit | TxnState::PrepareAbort),
            // Transaction version 2: the producer already has the id the completion
            // moves to.
            Err(ResponseError::ConcurrentTransactions) => true,
            Err(_) => false,
        };
        let waiting = self.parked.get(transactional_id).map_or(0, Vec::len);
        if !completing || waiting >= PARKED_PER_TRANSACTION_MAX {
            return false;
        }
        let parked = Parked { request_id, request: request.clone(), since_ms: now_ms };
        self.parked.entry(transactional_id.clone()).or_default().push(parked);
        true
    }

    /// The transaction completed (or a released request's append did): its parked
    /// requests are handled now, in arrival order, one at a time: once one leaves an
    /// append in flight, the rest wait for that append, as a client's next request
    /// would have.
    fn release_parked(&mut self, transactional_id: &TransactionalId, now_ms: i64) {
        while let Some(parked) =
            self.parked.get_mut(transactional_id).and_then(|queue| (!queue.is_empty()).then(|| queue.remove(0)))
        {
            self.handle(parked.request_id, parked.request, now_ms);
            if self.transactions.get(transactional_id).is_none_or(|m| m.pending_state.is_some()) {
                break;
            }
        }
        if self.parked.get(transactional_id).is_some_and(Vec::is_empty) {
            self.parked.remove(transactional_id);
        }
    }

    fn answer_parked(&mut self, parked: Parked, error: ResponseError) {
        let response = match parked.request {
            Request::AddOffsets { .. } => Response::AddOffsets(Err(error)),
            _ => Response::AddPartitions(Err(error)),
        };
        self.respond(parked.request_id, response);
    }

    /// DescribeTransactions of one transactional id, as Kafka's coordinator answers
    /// it: INVALID_REQUEST for an empty id, NOT_COORDINATOR when this coordinator does
    /// not own its partition, TRANSACTIONAL_ID_NOT_FOUND when it has no metadata or is
    /// being expired (Dead). Never COORDINATOR_LOAD_IN_PROGRESS: the runtime serves
    /// requests only once its partitions are loaded (they wait in its queue).
    pub fn describe(&self, transactional_id: &TransactionalId) -> Result<TransactionDescription, ResponseError> {
        self.owner_epoch(transactional_id)?;
        let metadata = self
            .transactions
            .get(transactional_id)
            .filter(|metadata| metadata.state != TxnState::Dead)
            .ok_or(ResponseError::TransactionalIdNotFound)?;
        Ok(TransactionDescription {
            state: metadata.state,
            producer_id: metadata.producer_id,
            producer_epoch: metadata.producer_epoch,
            timeout_ms: metadata.timeout_ms,
            txn_start_timestamp_ms: metadata.txn_start_timestamp_ms,
            partitions: metadata.partitions.clone(),
        })
    }

    /// ListTransactions: every transactional id of the partitions this coordinator
    /// owns that passes `filter` at `now_ms`, by transactional id.
    pub fn list(&self, filter: &ListFilter, now_ms: i64) -> Vec<ListedTransaction> {
        self.transactions
            .values()
            .filter(|metadata| self.owned.contains_key(&self.partition_for(&metadata.transactional_id)))
            .filter(|metadata| filter.passes(metadata, now_ms))
            .map(|metadata| ListedTransaction {
                transactional_id: metadata.transactional_id.clone(),
                producer_id: metadata.producer_id,
                state: metadata.state,
            })
            .collect()
    }

    fn respond(&mut self, request: RequestId, response: Response) {
        self.effects.push(Effect::Respond { request, response });
    }

    /// The coordinator epoch of `transactional_id`'s partition, if this broker owns it.
    fn owner_epoch(&self, transactional_id: &TransactionalId) -> Result<CoordinatorEpoch, Refusal> {
        if transactional_id.0.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        self.owned.get(&self.partition_for(transactional_id)).copied().ok_or(ResponseError::NotCoordinator)
    }

    /// Queues the append of `transit` for `transactional_id` (whose pending state
    /// `prepare_*` has set).
    fn append(&mut self, transactional_id: TransactionalId, transit: TxnTransit, then: AfterAppend) {
        let partition = self.partition_for(&transactional_id);
        let coordinator_epoch = self.owned[&partition];
        let append = AppendId(self.next_append);
        self.next_append += 1;
        let record = TxnRecord::of(transactional_id.clone(), &transit);
        self.effects.push(Effect::Append { append, partition, coordinator_epoch, record });
        self.appends.insert(append, PendingAppend { transactional_id, partition, coordinator_epoch, transit, then });
    }

    fn init_producer_id(
        &mut self,
        request: RequestId,
        transactional_id: TransactionalId,
        timeout_ms: i32,
        expected: Option<(ProducerId, ProducerEpoch)>,
        now_ms: i64,
    ) {
        let prepared = self.prepare_init(&transactional_id, timeout_ms, expected, now_ms);
        match prepared {
            Err(error) => self.respond(request, Response::InitProducerId(Err(error))),
            Ok((transit, then)) => self.append(transactional_id, transit, then(request)),
        }
    }

    /// Kafka's `prepareInitProducerIdTransit`: the transition InitProducerId asks for.
    fn prepare_init(
        &mut self,
        transactional_id: &TransactionalId,
        timeout_ms: i32,
        expected: Option<(ProducerId, ProducerEpoch)>,
        now_ms: i64,
    ) -> Result<(TxnTransit, InitFollowUp), Refusal> {
        self.owner_epoch(transactional_id)?;
        if timeout_ms <= 0 || timeout_ms > self.config.transaction_timeout_ms_max {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        if !self.transactions.contains_key(transactional_id) {
            let producer_id = self.producer_ids.next_producer_id()?;
            let metadata = TransactionMetadata::new(transactional_id.clone(), producer_id, timeout_ms, now_ms);
            self.transactions.insert(transactional_id.clone(), metadata);
        }
        let metadata = &self.transactions[transactional_id];
        if metadata.pending_state.is_some() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let valid_producer = |(producer_id, epoch): (ProducerId, ProducerEpoch)| {
            metadata.producer_epoch == NO_PRODUCER_EPOCH
                || producer_id == metadata.producer_id
                || (producer_id == metadata.previous_producer_id && super::state::is_epoch_exhausted(epoch))
        };
        if !expected.is_none_or(valid_producer) {
            return Err(ResponseError::ProducerFenced);
        }
        match metadata.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(ResponseError::ConcurrentTransactions),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let transit = self.prepare_new_epoch(transactional_id, timeout_ms, expected, now_ms)?;
                Ok((transit, AfterAppend::InitProducerId))
            }
            TxnState::Ongoing => {
                let metadata = self.transactions.get_mut(transactional_id).expect("present");
                let transit = metadata.prepare_fence_and_abort(now_ms).map_err(bug)?;
                Ok((transit, AfterAppend::InitFence))
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Err(bug(metadata.state)),
        }
    }

    /// An idle transactional id's next epoch, or its next producer id when the epoch
    /// is exhausted (and the producer, if it says, has the current one).
    fn prepare_new_epoch(
        &mut self,
        transactional_id: &TransactionalId,
        timeout_ms: i32,
        expected: Option<(ProducerId, ProducerEpoch)>,
        now_ms: i64,
    ) -> Result<TxnTransit, Refusal> {
        let metadata = &self.transactions[transactional_id];
        if metadata.is_epoch_exhausted() && expected.is_none_or(|(_, epoch)| epoch == metadata.producer_epoch) {
            let producer_id = self.producer_ids.next_producer_id()?;
            let metadata = self.transactions.get_mut(transactional_id).expect("present");
            return metadata
                .prepare_producer_id_rotation(producer_id, timeout_ms, now_ms, expected.is_some())
                .map_err(bug);
        }
        let metadata = self.transactions.get_mut(transactional_id).expect("present");
        match metadata.prepare_increment_epoch(timeout_ms, expected.map(|(_, epoch)| epoch), now_ms) {
            Ok(Some(transit)) => Ok(transit),
            Ok(None) => Err(ResponseError::ProducerFenced),
            Err(error) => Err(bug(error)),
        }
    }

    /// The checks AddPartitions and its verify-only form share: the transactional id
    /// is known here and the producer is its current one.
    fn current_producer(
        &self,
        transactional_id: &TransactionalId,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    ) -> Result<&TransactionMetadata, Refusal> {
        self.owner_epoch(transactional_id)?;
        let metadata = self.transactions.get(transactional_id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        let prepared = matches!(metadata.state, TxnState::PrepareCommit | TxnState::PrepareAbort);
        if prepared && producer_id == metadata.next_producer_id {
            // Transaction version 2: the producer already has the id the completion
            // moves to; it waits for the completion.
            return Err(ResponseError::ConcurrentTransactions);
        }
        if metadata.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if metadata.producer_epoch != producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(metadata)
    }

    /// KIP-890 part 1: is each partition in the producer's ongoing transaction?
    fn verify_partitions(
        &self,
        transactional_id: &TransactionalId,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        partitions: BTreeSet<TopicPartition>,
    ) -> BTreeMap<TopicPartition, Option<ResponseError>> {
        let checked = self.current_producer(transactional_id, producer_id, producer_epoch).and_then(|metadata| {
            if matches!(metadata.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                Err(ResponseError::ConcurrentTransactions)
            } else {
                Ok(metadata)
            }
        });
        partitions
            .into_iter()
            .map(|partition| {
                let error = match &checked {
                    Err(error) => Some(*error),
                    Ok(metadata) if metadata.partitions.contains(&partition) => None,
                    Ok(_) => Some(ResponseError::TransactionAbortable),
                };
                (partition, error)
            })
            .collect()
    }

    fn add_partitions(
        &mut self,
        then: AfterAppend,
        transactional_id: TransactionalId,
        (producer_id, producer_epoch): (ProducerId, ProducerEpoch),
        partitions: BTreeSet<TopicPartition>,
        now_ms: i64,
    ) {
        let prepared = self.current_producer(&transactional_id, producer_id, producer_epoch).and_then(|metadata| {
            if metadata.pending_state.is_some()
                || matches!(metadata.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            {
                return Err(ResponseError::ConcurrentTransactions);
            }
            Ok(metadata.state == TxnState::Ongoing && partitions.is_subset(&metadata.partitions))
        });
        let prepared = prepared.and_then(|already_added| {
            if already_added {
                return Ok(None);
            }
            let metadata = self.transactions.get_mut(&transactional_id).expect("checked");
            metadata.prepare_add_partitions(&partitions, now_ms).map(Some).map_err(bug)
        });
        match prepared {
            Ok(Some(transit)) => self.append(transactional_id, transit, then),
            Ok(None) => self.answer_after(then, Ok(())),
            Err(error) => self.answer_after(then, Err(error)),
        }
    }

    /// Answers the request of an AddPartitions or AddOffsets.
    fn answer_after(&mut self, then: AfterAppend, result: Result<(), ResponseError>) {
        match then {
            AfterAppend::AddPartitions(request) => self.respond(request, Response::AddPartitions(result)),
            AfterAppend::AddOffsets(request) => self.respond(request, Response::AddOffsets(result)),
            other => unreachable!("only adds are answered here, not {other:?}"),
        }
    }

    fn end_txn(
        &mut self,
        request: RequestId,
        transactional_id: TransactionalId,
        producer: (ProducerId, ProducerEpoch),
        result: TransactionResult,
        version: TransactionVersion,
        now_ms: i64,
    ) {
        match self.prepare_end(&transactional_id, producer, result, version, now_ms) {
            Ok(EndDecision::Prepared(transit)) => {
                self.append(transactional_id, transit, AfterAppend::EndTxn(request));
            }
            Ok(EndDecision::AlreadyDone(producer)) => self.respond(request, Response::EndTxn(Ok(producer))),
            Err(error) => self.respond(request, Response::EndTxn(Err(error))),
        }
    }

    /// Kafka's `endTransaction` from a client, up to the append.
    fn prepare_end(
        &mut self,
        transactional_id: &TransactionalId,
        (producer_id, producer_epoch): (ProducerId, ProducerEpoch),
        result: TransactionResult,
        version: TransactionVersion,
        now_ms: i64,
    ) -> Result<EndDecision, Refusal> {
        self.owner_epoch(transactional_id)?;
        let metadata = self.transactions.get(transactional_id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_end_producer(metadata, producer_id, producer_epoch)?;
        if metadata.pending_state.is_some() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let same = |wanted: TransactionResult| wanted == result;
        match metadata.state {
            TxnState::Ongoing => {
                let exhausted = version.bumps_epoch_at_end() && metadata.is_epoch_exhausted();
                let next_producer_id = if exhausted { self.producer_ids.next_producer_id()? } else { NO_PRODUCER_ID };
                let metadata = self.transactions.get_mut(transactional_id).expect("present");
                let transit = metadata.prepare_end(result, version, next_producer_id, now_ms).map_err(bug)?;
                Ok(EndDecision::Prepared(transit))
            }
            TxnState::CompleteCommit if same(TransactionResult::Commit) => {
                Ok(EndDecision::AlreadyDone((metadata.producer_id, metadata.producer_epoch)))
            }
            TxnState::CompleteAbort if same(TransactionResult::Abort) => {
                Ok(EndDecision::AlreadyDone((metadata.producer_id, metadata.producer_epoch)))
            }
            TxnState::PrepareCommit if same(TransactionResult::Commit) => Err(ResponseError::ConcurrentTransactions),
            TxnState::PrepareAbort if same(TransactionResult::Abort) => Err(ResponseError::ConcurrentTransactions),
            TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort
            | TxnState::PrepareCommit
            | TxnState::PrepareAbort => Err(ResponseError::InvalidTxnState),
            TxnState::Dead | TxnState::PrepareEpochFence => Err(bug(metadata.state)),
        }
    }

    /// The record of `append` is in the log: the transition takes effect and its
    /// follow-up runs (an answer, markers, a removal).
    pub fn append_done(&mut self, append: AppendId, now_ms: i64) {
        let Some(pending) = self.appends.remove(&append) else {
            tracing::warn!("append {append:?} completed twice or never started");
            return;
        };
        let transactional_id = pending.transactional_id.clone();
        let owner = self.owned.get(&pending.partition) == Some(&pending.coordinator_epoch);
        let metadata = self.transactions.get_mut(&transactional_id).filter(|_| owner);
        let Some(metadata) = metadata else {
            // The partition moved (or was reloaded) meanwhile.
            if let Some((request, response)) = pending.then.failed(ResponseError::NotCoordinator) {
                self.respond(request, response);
            }
            return;
        };
        if let Err(error) = metadata.complete(pending.transit) {
            tracing::error!("{error}");
            metadata.abandon();
            if let Some((request, response)) = pending.then.failed(ResponseError::UnknownServerError) {
                self.respond(request, response);
            }
            return;
        }
        self.after_append(transactional_id, pending.coordinator_epoch, pending.then, now_ms);
    }

    fn after_append(
        &mut self,
        transactional_id: TransactionalId,
        coordinator_epoch: CoordinatorEpoch,
        then: AfterAppend,
        now_ms: i64,
    ) {
        let metadata = &self.transactions[&transactional_id];
        let producer = (metadata.producer_id, metadata.producer_epoch);
        match then {
            AfterAppend::InitProducerId(request) => self.respond(request, Response::InitProducerId(Ok(producer))),
            AfterAppend::InitFence(request) => {
                self.respond(request, Response::InitProducerId(Err(ResponseError::ConcurrentTransactions)));
                self.send_markers_of(&transactional_id, coordinator_epoch, now_ms);
            }
            AfterAppend::AddPartitions(request) => {
                self.respond(request, Response::AddPartitions(Ok(())));
                self.release_parked(&transactional_id, now_ms);
            }
            AfterAppend::AddOffsets(request) => {
                self.respond(request, Response::AddOffsets(Ok(())));
                self.release_parked(&transactional_id, now_ms);
            }
            AfterAppend::EndTxn(request) => {
                // With transaction version 2 and an exhausted epoch, the producer goes
                // on with the producer id the completion moves to.
                let next = if metadata.next_producer_id != NO_PRODUCER_ID {
                    (metadata.next_producer_id, ProducerEpoch(0))
                } else {
                    producer
                };
                self.respond(request, Response::EndTxn(Ok(next)));
                self.send_markers_of(&transactional_id, coordinator_epoch, now_ms);
            }
            AfterAppend::TimeoutAbort => self.send_markers_of(&transactional_id, coordinator_epoch, now_ms),
            AfterAppend::Complete => self.release_parked(&transactional_id, now_ms),
            AfterAppend::Expire => {
                self.transactions.remove(&transactional_id);
            }
        }
    }

    fn send_markers_of(
        &mut self,
        transactional_id: &TransactionalId,
        coordinator_epoch: CoordinatorEpoch,
        now_ms: i64,
    ) {
        let metadata = self.transactions[transactional_id].clone();
        if metadata.partitions.is_empty() {
            self.complete_transaction(transactional_id, now_ms);
        } else {
            self.send_markers(&metadata, coordinator_epoch);
        }
    }

    fn send_markers(&mut self, metadata: &TransactionMetadata, coordinator_epoch: CoordinatorEpoch) {
        let result = match metadata.state {
            TxnState::PrepareCommit => TransactionResult::Commit,
            TxnState::PrepareAbort => TransactionResult::Abort,
            other => {
                tracing::error!("{}: markers of a transaction in {other}", metadata.transactional_id);
                return;
            }
        };
        self.effects.push(Effect::WriteMarkers(TxnMarkers {
            transactional_id: metadata.transactional_id.clone(),
            producer_id: metadata.producer_id,
            producer_epoch: metadata.producer_epoch,
            result,
            coordinator_epoch,
            partitions: metadata.partitions.clone(),
        }));
    }

    /// The append of `append` failed and its record is not in the log (a runtime that
    /// cannot tell reloads the partition instead): the transition is dropped and the
    /// request answered with Kafka's mapping of `error`.
    pub fn append_failed(&mut self, append: AppendId, error: ResponseError) {
        let Some(pending) = self.appends.remove(&append) else {
            tracing::warn!("append {append:?} failed twice or never started");
            return;
        };
        let owner = self.owned.get(&pending.partition) == Some(&pending.coordinator_epoch);
        if let Some(metadata) = self.transactions.get_mut(&pending.transactional_id).filter(|_| owner) {
            metadata.abandon();
            if metadata.producer_epoch == NO_PRODUCER_EPOCH {
                // Its first record: the transactional id was never in the log.
                self.transactions.remove(&pending.transactional_id);
            } else if pending.then == AfterAppend::Complete {
                self.completions_due.insert(pending.transactional_id.clone());
            }
        }
        let answer = if owner { append_error(error) } else { ResponseError::NotCoordinator };
        if let Some((request, response)) = pending.then.failed(answer) {
            self.respond(request, response);
        }
    }

    /// Every partition of the transaction has its marker: the completion record is
    /// appended (CompleteCommit or CompleteAbort).
    pub fn markers_written(&mut self, markers: &TxnMarkers, now_ms: i64) {
        let partition = self.partition_for(&markers.transactional_id);
        if self.owned.get(&partition) != Some(&markers.coordinator_epoch) {
            return;
        }
        let Some(metadata) = self.transactions.get(&markers.transactional_id) else { return };
        if (metadata.producer_id, metadata.producer_epoch) != (markers.producer_id, markers.producer_epoch)
            || !matches!(metadata.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
        {
            tracing::warn!("{}: markers written for a transaction no longer prepared", markers.transactional_id);
            return;
        }
        self.complete_transaction(&markers.transactional_id.clone(), now_ms);
    }

    fn complete_transaction(&mut self, transactional_id: &TransactionalId, now_ms: i64) {
        let metadata = self.transactions.get_mut(transactional_id).expect("present");
        match metadata.prepare_complete(now_ms) {
            Ok(transit) => {
                self.completions_due.remove(transactional_id);
                self.append(transactional_id.clone(), transit, AfterAppend::Complete);
            }
            Err(error) => tracing::error!("{error}"),
        }
    }

    /// The timer: aborts transactions open longer than their timeout (fencing their
    /// producer), expires transactional ids idle for `transactional.id.expiration.ms`,
    /// and retries completions whose append failed.
    pub fn tick(&mut self, now_ms: i64) {
        let expiration_ms = self.config.transactional_id_expiration_ms;
        let mut timed_out = Vec::new();
        let mut expired = Vec::new();
        for (transactional_id, metadata) in &self.transactions {
            if metadata.pending_state.is_some() || !self.owned.contains_key(&self.partition_for(transactional_id)) {
                continue;
            }
            if metadata.state == TxnState::Ongoing
                && metadata.txn_start_timestamp_ms.saturating_add(i64::from(metadata.timeout_ms)) < now_ms
            {
                timed_out.push(transactional_id.clone());
            } else if metadata.state.is_expiration_allowed()
                && metadata.txn_last_update_timestamp_ms.saturating_add(expiration_ms) <= now_ms
            {
                expired.push(transactional_id.clone());
            }
        }
        for transactional_id in timed_out {
            let metadata = self.transactions.get_mut(&transactional_id).expect("present");
            match metadata.prepare_fence_and_abort(now_ms) {
                Ok(transit) => self.append(transactional_id, transit, AfterAppend::TimeoutAbort),
                Err(error) => tracing::error!("{error}"),
            }
        }
        for transactional_id in expired {
            let metadata = self.transactions.get_mut(&transactional_id).expect("present");
            match metadata.prepare_dead() {
                Ok(transit) => self.append(transactional_id, transit, AfterAppend::Expire),
                Err(error) => tracing::error!("{error}"),
            }
        }
        let overdue: Vec<TransactionalId> = self
            .parked
            .iter()
            .filter(|(_, parked)| parked.iter().any(|p| now_ms.saturating_sub(p.since_ms) >= PARKED_MS_MAX))
            .map(|(id, _)| id.clone())
            .collect();
        for transactional_id in overdue {
            let parked = self.parked.remove(&transactional_id).unwrap_or_default();
            for parked in parked {
                self.answer_parked(parked, ResponseError::ConcurrentTransactions);
            }
        }
        for transactional_id in std::mem::take(&mut self.completions_due) {
            let pending = self.transactions.get(&transactional_id).is_none_or(|m| m.pending_state.is_some());
            if !pending {
                self.complete_transaction(&transactional_id, now_ms);
            }
        }
    }
}

enum EndDecision {
    Prepared(TxnTransit),
    /// A retry of an EndTxn that completed: answered with the producer's id and epoch.
    AlreadyDone((ProducerId, ProducerEpoch)),
}

/// Kafka's producer id and epoch checks of EndTxn from a client, transaction
/// version 2's retries included (the epoch the end bumped, the producer id it rotated).
fn check_end_producer(
    metadata: &TransactionMetadata,
    producer_id: ProducerId,
    producer_epoch: ProducerEpoch,
) -> Result<(), Refusal> {
    let version_2 = metadata.client_transaction_version.bumps_epoch_at_end();
    let retry_on_overflow = version_2
        && metadata.previous_producer_id == producer_id
        && producer_epoch.0 == i16::MAX - 1
        && metadata.producer_epoch.0 == 0;
    let retry_on_epoch_bump = version_2 && i32::from(metadata.producer_epoch.0) == i32::from(producer_epoch.0) + 1;
    let valid_epoch = if version_2 {
        match metadata.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => retry_on_epoch_bump,
            TxnState::CompleteCommit | TxnState::CompleteAbort => retry_on_epoch_bump || retry_on_overflow,
            _ => producer_epoch == metadata.producer_epoch,
        }
    } else {
        producer_epoch == metadata.producer_epoch
    };
    if metadata.producer_id != producer_id && !retry_on_overflow {
        Err(ResponseError::InvalidProducerIdMapping)
    } else if !valid_epoch {
        Err(ResponseError::ProducerFenced)
    } else {
        Ok(())
    }
}

/// Kafka's answer to a failed append to `__transaction_state`.
fn append_error(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::UnknownTopicOrPartition
        | ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => ResponseError::NotCoordinator,
        _ => ResponseError::UnknownServerError,
    }
}

/// A state the coordinator never leaves a transaction in, or a transition it never
/// prepares wrongly: logged, answered UNKNOWN_SERVER_ERROR.
fn bug(what: impl std::fmt::Display) -> ResponseError {
    tracing::error!("transaction coordinator bug: {what}");
    ResponseError::UnknownServerError
}

#[cfg(test)]
mod tests;
