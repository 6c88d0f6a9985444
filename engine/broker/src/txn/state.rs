//! One transactional id's metadata and Kafka's transaction state machine.
//!
//! Every change is two steps, as in Kafka's `TransactionMetadata`: a `prepare_*`
//! method checks the transition, sets the pending state (which blocks any other
//! change) and returns the [`TxnTransit`], the metadata as it will be; the caller
//! appends that to `__transaction_state`, then [`TransactionMetadata::complete`]
//! makes it current (or [`TransactionMetadata::abandon`] drops it if the append
//! failed). An illegal transition is a [`TxnStateError`], never a panic.
//!
//! ```text
//! state              follows                               on
//! Empty              Empty, CompleteCommit, CompleteAbort  InitProducerId (epoch bumped, or a new producer id)
//! Ongoing            Empty, Ongoing, Complete*             AddPartitionsToTxn, AddOffsetsToTxn
//! PrepareCommit      Ongoing                               EndTxn(commit)
//! PrepareAbort       Ongoing, PrepareEpochFence            EndTxn(abort); a fence or timeout (epoch bumped)
//! CompleteCommit     PrepareCommit                         markers written
//! CompleteAbort      PrepareAbort                          markers written
//! Dead               Empty, CompleteCommit, CompleteAbort  expiry (logged as a tombstone)
//! PrepareEpochFence  Ongoing                               Kafka's fence; here folded into PrepareAbort
//! ```

use std::collections::BTreeSet;
use std::fmt;

use corelog_engine::types::{ProducerEpoch, ProducerId, TopicPartition};

use super::{TransactionVersion, TransactionalId, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

/// Kafka's `TransactionState`; the discriminant is the id the log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    /// No transaction: a fresh or re-initialized producer.
    Empty = 0,
    /// Partitions were added; records may be in them.
    Ongoing = 1,
    /// EndTxn(commit) is durable: the transaction will commit, whatever happens.
    PrepareCommit = 2,
    /// EndTxn(abort), a timeout or a fence is durable: the transaction will abort.
    PrepareAbort = 3,
    /// Commit markers are written in every partition.
    CompleteCommit = 4,
    /// Abort markers are written in every partition.
    CompleteAbort = 5,
    /// The transactional id expired and is being removed.
    Dead = 6,
    /// An ongoing transaction is being fenced (a new producer, a timeout): only ever a
    /// pending state, which becomes PrepareAbort with the bumped epoch.
    PrepareEpochFence = 7,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The id `__transaction_state` records (`TransactionStatus`).
    pub fn id(self) -> i8 {
        self as i8
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|state| state.id() == id)
    }

    /// The name DescribeTransactions and ListTransactions report.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state of a name [`TxnState::name`] gives, exactly as spelled (Kafka's
    /// `TransactionState.fromName`): ListTransactions' state filters.
    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|state| state.name() == name)
    }

    /// The states this one may follow (Kafka's `validPreviousStates`).
    pub fn valid_previous_states(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteCommit, CompleteAbort],
            PrepareEpochFence => &[Ongoing],
        }
    }

    pub fn can_follow(self, previous: TxnState) -> bool {
        self.valid_previous_states().contains(&previous)
    }

    /// Whether a transactional id in this state may expire.
    pub fn is_expiration_allowed(self) -> bool {
        matches!(self, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
    }

    /// Whether a transaction is open: not yet complete.
    pub fn has_pending_transaction(self) -> bool {
        matches!(self, TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

impl fmt::Display for TxnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether an epoch is used up: a client never gets `i16::MAX`, so that the
/// coordinator can always fence it with one more bump.
pub fn is_epoch_exhausted(epoch: ProducerEpoch) -> bool {
    epoch.0 >= i16::MAX - 1
}

/// A transition the state machine refuses: a bug in the caller, reported, not panicked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnStateError {
    #[error("{transactional_id}: {to} cannot follow {from}")]
    IllegalTransition { transactional_id: TransactionalId, from: TxnState, to: TxnState },
    #[error("{transactional_id}: a transition to {pending} is already pending")]
    TransitionPending { transactional_id: TransactionalId, pending: TxnState },
    #[error("{transactional_id}: no transition is pending")]
    NothingPending { transactional_id: TransactionalId },
    #[error("{transactional_id}: the pending transition is to {pending}, not {to}")]
    NotThePendingTransition { transactional_id: TransactionalId, pending: TxnState, to: TxnState },
    #[error("{transactional_id}: producer epoch {epoch} of producer id {producer_id} cannot be bumped")]
    EpochExhausted { transactional_id: TransactionalId, producer_id: ProducerId, epoch: ProducerEpoch },
    #[error("{transactional_id}: {reason}")]
    Inconsistent { transactional_id: TransactionalId, reason: String },
}

/// The metadata as a transition leaves it: what `__transaction_state` records
/// (but `last_producer_epoch`, which only memory keeps, as in Kafka).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnTransit {
    pub producer_id: ProducerId,
    /// The producer id before the last rotation (KIP-360: a retry of the
    /// InitProducerId that rotated it is recognised).
    pub previous_producer_id: ProducerId,
    /// With transaction version 2, the producer id the completion of this
    /// transaction moves to (the epoch was exhausted).
    pub next_producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub last_producer_epoch: ProducerEpoch,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    /// When the transaction started (its first AddPartitions), -1 for none.
    pub txn_start_timestamp_ms: i64,
    pub txn_last_update_timestamp_ms: i64,
    pub client_transaction_version: TransactionVersion,
}

/// One transactional id's state (Kafka's `TransactionMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionMetadata {
    pub transactional_id: TransactionalId,
    pub producer_id: ProducerId,
    pub previous_producer_id: ProducerId,
    pub next_producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    /// The epoch before the last bump, while the producer may retry the request that
    /// bumped it (KIP-360); -1 once another producer took the id, and after a load.
    pub last_producer_epoch: ProducerEpoch,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub txn_start_timestamp_ms: i64,
    pub txn_last_update_timestamp_ms: i64,
    pub client_transaction_version: TransactionVersion,
    /// The state a prepared transition moves to, until its record is in the log.
    pub pending_state: Option<TxnState>,
}

impl TransactionMetadata {
    /// A transactional id seen for the first time: its producer id, no epoch yet.
    pub fn new(transactional_id: TransactionalId, producer_id: ProducerId, timeout_ms: i32, now_ms: i64) -> Self {
        TransactionMetadata {
            transactional_id,
            producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            txn_start_timestamp_ms: -1,
            txn_last_update_timestamp_ms: now_ms,
            client_transaction_version: TransactionVersion::V0,
            pending_state: None,
        }
    }

    /// The metadata a loaded record describes (no pending state, no last epoch).
    pub fn from_transit(transactional_id: TransactionalId, transit: TxnTransit) -> Self {
        TransactionMetadata {
            transactional_id,
            producer_id: transit.producer_id,
            previous_producer_id: transit.previous_producer_id,
            next_producer_id: transit.next_producer_id,
            producer_epoch: transit.producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: transit.timeout_ms,
            state: transit.state,
            partitions: transit.partitions,
            txn_start_timestamp_ms: transit.txn_start_timestamp_ms,
            txn_last_update_timestamp_ms: transit.txn_last_update_timestamp_ms,
            client_transaction_version: transit.client_transaction_version,
            pending_state: None,
        }
    }

    /// The current metadata as a transit (what a record of it holds).
    pub fn current(&self) -> TxnTransit {
        TxnTransit {
            producer_id: self.producer_id,
            previous_producer_id: self.previous_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.clone(),
            txn_start_timestamp_ms: self.txn_start_timestamp_ms,
            txn_last_update_timestamp_ms: self.txn_last_update_timestamp_ms,
            client_transaction_version: self.client_transaction_version,
        }
    }

    pub fn is_epoch_exhausted(&self) -> bool {
        is_epoch_exhausted(self.producer_epoch)
    }

    fn error_illegal(&self, to: TxnState) -> TxnStateError {
        TxnStateError::IllegalTransition { transactional_id: self.transactional_id.clone(), from: self.state, to }
    }

    /// Checks `transit` against the current state and marks it pending.
    fn prepare(&mut self, transit: TxnTransit) -> Result<TxnTransit, TxnStateError> {
        if let Some(pending) = self.pending_state {
            return Err(TxnStateError::TransitionPending { transactional_id: self.transactional_id.clone(), pending });
        }
        if !transit.state.can_follow(self.state) {
            return Err(self.error_illegal(transit.state));
        }
        if transit.producer_id.0 < 0 || (transit.state != TxnState::Dead && transit.producer_epoch.0 < 0) {
            return Err(TxnStateError::Inconsistent {
                transactional_id: self.transactional_id.clone(),
                reason: format!("producer id {} epoch {}", transit.producer_id, transit.producer_epoch),
            });
        }
        self.pending_state = Some(transit.state);
        Ok(transit)
    }

    /// InitProducerId without a new producer id: the epoch bumped, or (a retry of a
    /// bump the producer never heard of, KIP-360) kept. `expected_epoch` is the
    /// producer's epoch when it sent one; `Ok(None)`: that epoch is fenced.
    pub fn prepare_increment_epoch(
        &mut self,
        timeout_ms: i32,
        expected_epoch: Option<ProducerEpoch>,
        now_ms: i64,
    ) -> Result<Option<TxnTransit>, TxnStateError> {
        let Some((epoch, last_epoch)) = self.bump_for_init(expected_epoch) else { return Ok(None) };
        if epoch != self.producer_epoch && self.is_epoch_exhausted() {
            return Err(TxnStateError::EpochExhausted {
                transactional_id: self.transactional_id.clone(),
                producer_id: self.producer_id,
                epoch: self.producer_epoch,
            });
        }
        let transit = TxnTransit {
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            txn_start_timestamp_ms: -1,
            txn_last_update_timestamp_ms: now_ms,
            previous_producer_id: self.producer_id,
            next_producer_id: NO_PRODUCER_ID,
            client_transaction_version: TransactionVersion::V0,
            ..self.current()
        };
        self.prepare(transit).map(Some)
    }

    /// The (epoch, last epoch) an InitProducerId leaves, or `None`: the expected epoch
    /// is neither the current one nor the one before the last bump (fenced).
    fn bump_for_init(&self, expected_epoch: Option<ProducerEpoch>) -> Option<(ProducerEpoch, ProducerEpoch)> {
        let bumped = ProducerEpoch(self.producer_epoch.0 + 1);
        match expected_epoch {
            None => Some((bumped, NO_PRODUCER_EPOCH)),
            Some(expected) if self.producer_epoch == NO_PRODUCER_EPOCH || expected == self.producer_epoch => {
                Some((bumped, self.producer_epoch))
            }
            Some(expected) if expected == self.last_producer_epoch => {
                Some((self.producer_epoch, self.last_producer_epoch))
            }
            Some(_) => None,
        }
    }

    /// InitProducerId when the epoch is exhausted: a new producer id at epoch 0.
    pub fn prepare_producer_id_rotation(
        &mut self,
        new_producer_id: ProducerId,
        timeout_ms: i32,
        now_ms: i64,
        record_last_epoch: bool,
    ) -> Result<TxnTransit, TxnStateError> {
        if self.state.has_pending_transaction() {
            return Err(self.error_illegal(TxnState::Empty));
        }
        let transit = TxnTransit {
            producer_id: new_producer_id,
            previous_producer_id: self.producer_id,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: ProducerEpoch(0),
            last_producer_epoch: if record_last_epoch { self.producer_epoch } else { NO_PRODUCER_EPOCH },
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            txn_start_timestamp_ms: -1,
            txn_last_update_timestamp_ms: now_ms,
            client_transaction_version: TransactionVersion::V0,
        };
        self.prepare(transit)
    }

    /// AddPartitionsToTxn: the transaction starts (if it had not) with these partitions.
    pub fn prepare_add_partitions(
        &mut self,
        added: &BTreeSet<TopicPartition>,
        now_ms: i64,
    ) -> Result<TxnTransit, TxnStateError> {
        let start = match self.state {
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => now_ms,
            _ => self.txn_start_timestamp_ms,
        };
        let transit = TxnTransit {
            state: TxnState::Ongoing,
            partitions: self.partitions.union(added).cloned().collect(),
            txn_start_timestamp_ms: start,
            txn_last_update_timestamp_ms: now_ms,
            next_producer_id: NO_PRODUCER_ID,
            ..self.current()
        };
        self.prepare(transit)
    }

    /// A fence of the ongoing transaction (a new producer's InitProducerId, a
    /// timeout): the epoch bumped and the transaction to abort, in one record of
    /// PrepareAbort (Kafka's PrepareEpochFence then PrepareAbort, of which only the
    /// second is logged).
    pub fn prepare_fence_and_abort(&mut self, now_ms: i64) -> Result<TxnTransit, TxnStateError> {
        if self.state != TxnState::Ongoing {
            return Err(self.error_illegal(TxnState::PrepareEpochFence));
        }
        if self.producer_epoch.0 == i16::MAX {
            return Err(TxnStateError::EpochExhausted {
                transactional_id: self.transactional_id.clone(),
                producer_id: self.producer_id,
                epoch: self.producer_epoch,
            });
        }
        let transit = TxnTransit {
            producer_epoch: ProducerEpoch(self.producer_epoch.0 + 1),
            last_producer_epoch: NO_PRODUCER_EPOCH,
            state: TxnState::PrepareAbort,
            txn_last_update_timestamp_ms: now_ms,
            next_producer_id: NO_PRODUCER_ID,
            client_transaction_version: TransactionVersion::V0,
            ..self.current()
        };
        self.prepare(transit)
    }

    /// EndTxn: PrepareCommit or PrepareAbort. With transaction version 2 the epoch is
    /// bumped, and `next_producer_id` (set when the bump exhausts the epoch) is what
    /// the completion moves to.
    pub fn prepare_end(
        &mut self,
        result: super::TransactionResult,
        version: TransactionVersion,
        next_producer_id: ProducerId,
        now_ms: i64,
    ) -> Result<TxnTransit, TxnStateError> {
        let state = match result {
            super::TransactionResult::Commit => TxnState::PrepareCommit,
            super::TransactionResult::Abort => TxnState::PrepareAbort,
        };
        let (epoch, last_epoch) = if version.bumps_epoch_at_end() {
            if self.producer_epoch.0 == i16::MAX {
                return Err(TxnStateError::EpochExhausted {
                    transactional_id: self.transactional_id.clone(),
                    producer_id: self.producer_id,
                    epoch: self.producer_epoch,
                });
            }
            (ProducerEpoch(self.producer_epoch.0 + 1), self.producer_epoch)
        } else {
            (self.producer_epoch, self.last_producer_epoch)
        };
        let transit = TxnTransit {
            producer_epoch: epoch,
            last_producer_epoch: last_epoch,
            state,
            txn_last_update_timestamp_ms: now_ms,
            next_producer_id,
            client_transaction_version: version,
            ..self.current()
        };
        self.prepare(transit)
    }

    /// The markers are written: CompleteCommit or CompleteAbort, the partitions
    /// cleared, and the producer id moved to the next one if the end exhausted it.
    pub fn prepare_complete(&mut self, now_ms: i64) -> Result<TxnTransit, TxnStateError> {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => {
                return Err(self.error_illegal(if other == TxnState::Ongoing {
                    TxnState::CompleteCommit
                } else {
                    other
                }))
            }
        };
        let rotate = self.client_transaction_version.bumps_epoch_at_end() && self.next_producer_id != NO_PRODUCER_ID;
        let (producer_id, epoch) =
            if rotate { (self.next_producer_id, ProducerEpoch(0)) } else { (self.producer_id, self.producer_epoch) };
        let previous_producer_id = if self.client_transaction_version.bumps_epoch_at_end() {
            self.producer_id
        } else {
            self.previous_producer_id
        };
        let transit = TxnTransit {
            producer_id,
            previous_producer_id,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: epoch,
            last_producer_epoch: self.producer_epoch,
            state,
            partitions: BTreeSet::new(),
            txn_last_update_timestamp_ms: now_ms,
            ..self.current()
        };
        self.prepare(transit)
    }

    /// Expiry: the transactional id is removed (a tombstone in the log).
    pub fn prepare_dead(&mut self) -> Result<TxnTransit, TxnStateError> {
        let transit = TxnTransit { state: TxnState::Dead, partitions: BTreeSet::new(), ..self.current() };
        self.prepare(transit)
    }

    /// The transit's record is in the log: it becomes the current metadata.
    pub fn complete(&mut self, transit: TxnTransit) -> Result<(), TxnStateError> {
        let id = || self.transactional_id.clone();
        let pending = self.pending_state.ok_or_else(|| TxnStateError::NothingPending { transactional_id: id() })?;
        if pending != transit.state {
            return Err(TxnStateError::NotThePendingTransition { transactional_id: id(), pending, to: transit.state });
        }
        if !transit.state.can_follow(self.state) {
            return Err(self.error_illegal(transit.state));
        }
        if let Some(reason) = self.inconsistency(&transit) {
            return Err(TxnStateError::Inconsistent { transactional_id: id(), reason });
        }
        let transactional_id = self.transactional_id.clone();
        *self = TransactionMetadata {
            last_producer_epoch: transit.last_producer_epoch,
            ..TransactionMetadata::from_transit(transactional_id, transit)
        };
        Ok(())
    }

    /// Kafka's sanity checks of a completion: the epoch moves by at most one (or to 0
    /// with a new producer id), partitions are only added while Ongoing, and only a
    /// started transaction completes.
    fn inconsistency(&self, transit: &TxnTransit) -> Option<String> {
        let new_id = transit.producer_id != self.producer_id;
        let epoch_ok = transit.producer_epoch == self.producer_epoch
            || i32::from(transit.producer_epoch.0) == i32::from(self.producer_epoch.0) + 1
            || (new_id && transit.producer_epoch.0 == 0);
        if !epoch_ok {
            return Some(format!("epoch {} after {}", transit.producer_epoch, self.producer_epoch));
        }
        match transit.state {
            TxnState::Empty if !transit.partitions.is_empty() || transit.txn_start_timestamp_ms != -1 => {
                Some("an Empty transaction with partitions or a start".into())
            }
            TxnState::Ongoing if !self.partitions.is_subset(&transit.partitions) => {
                Some("partitions removed from an ongoing transaction".into())
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort if transit.partitions != self.partitions => {
                Some("partitions changed at the end of a transaction".into())
            }
            TxnState::CompleteCommit | TxnState::CompleteAbort if transit.txn_start_timestamp_ms == -1 => {
                Some("a transaction completed without a start".into())
            }
            _ => None,
        }
    }

    /// The append of the pending transition failed: nothing changes.
    pub fn abandon(&mut self) {
        self.pending_state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::TransactionResult;
    use corelog_engine::types::{PartitionId, TopicName};

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new(TopicName::new("orders").expect("valid"), PartitionId(partition))
    }

    fn metadata() -> TransactionMetadata {
        TransactionMetadata::new(TransactionalId("t".into()), ProducerId(7), 60_000, 0)
    }

    fn step(
        metadata: &mut TransactionMetadata,
        prepare: impl FnOnce(&mut TransactionMetadata) -> Result<TxnTransit, TxnStateError>,
    ) {
        let transit = prepare(metadata).expect("legal");
        metadata.complete(transit).expect("completes");
    }

    #[test]
    fn a_transaction_goes_round_the_state_machine() {
        let mut m = metadata();
        let transit = m.prepare_increment_epoch(60_000, None, 1).expect("legal").expect("not fenced");
        m.complete(transit).expect("completes");
        assert_eq!((m.state, m.producer_epoch), (TxnState::Empty, ProducerEpoch(0)));
        step(&mut m, |m| m.prepare_add_partitions(&[tp(0)].into(), 2));
        step(&mut m, |m| m.prepare_add_partitions(&[tp(1)].into(), 3));
        assert_eq!((m.state, m.partitions.len(), m.txn_start_timestamp_ms), (TxnState::Ongoing, 2, 2));
        step(&mut m, |m| m.prepare_end(TransactionResult::Commit, TransactionVersion::V0, NO_PRODUCER_ID, 4));
        assert_eq!(m.state, TxnState::PrepareCommit);
        step(&mut m, |m| m.prepare_complete(5));
        assert_eq!((m.state, m.partitions.len(), m.producer_epoch), (TxnState::CompleteCommit, 0, ProducerEpoch(0)));
        step(&mut m, |m| m.prepare_add_partitions(&[tp(2)].into(), 6));
        assert_eq!(m.txn_start_timestamp_ms, 6, "a new transaction starts now");
    }

    #[test]
    fn illegal_transitions_are_errors() {
        let mut m = metadata();
        m.producer_epoch = ProducerEpoch(0);
        assert!(matches!(
            m.prepare_end(TransactionResult::Commit, TransactionVersion::V0, NO_PRODUCER_ID, 1),
            Err(TxnStateError::IllegalTransition { from: TxnState::Empty, to: TxnState::PrepareCommit, .. })
        ));
        assert!(matches!(m.prepare_complete(1), Err(TxnStateError::IllegalTransition { .. })));
        assert!(matches!(m.prepare_fence_and_abort(1), Err(TxnStateError::IllegalTransition { .. })));
        let transit = m.prepare_add_partitions(&[tp(0)].into(), 1).expect("legal");
        assert!(matches!(m.prepare_dead(), Err(TxnStateError::TransitionPending { pending: TxnState::Ongoing, .. })));
        let mut other = transit.clone();
        other.state = TxnState::PrepareAbort;
        assert!(matches!(m.complete(other), Err(TxnStateError::NotThePendingTransition { .. })));
        m.abandon();
        assert!(matches!(m.complete(transit), Err(TxnStateError::NothingPending { .. })));
        assert_eq!(m.state, TxnState::Empty, "a failed or refused transition changes nothing");
    }

    #[test]
    fn every_pair_of_states_follows_kafkas_table() {
        use TxnState::*;
        let legal = [
            (Empty, Empty),
            (CompleteCommit, Empty),
            (CompleteAbort, Empty),
            (Ongoing, Ongoing),
            (Empty, Ongoing),
            (CompleteCommit, Ongoing),
            (CompleteAbort, Ongoing),
            (Ongoing, PrepareCommit),
            (Ongoing, PrepareAbort),
            (PrepareEpochFence, PrepareAbort),
            (PrepareCommit, CompleteCommit),
            (PrepareAbort, CompleteAbort),
            (Empty, Dead),
            (CompleteAbort, Dead),
            (CompleteCommit, Dead),
            (Ongoing, PrepareEpochFence),
        ];
        for from in TxnState::ALL {
            for to in TxnState::ALL {
                assert_eq!(to.can_follow(from), legal.contains(&(from, to)), "{from} → {to}");
            }
        }
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_id(state.id()), Some(state));
        }
        assert_eq!(TxnState::from_id(8), None);
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
        assert_eq!(TxnState::from_name("ongoing"), None, "names are matched as Kafka spells them");
    }

    #[test]
    fn init_bumps_keeps_or_fences_the_epoch() {
        let mut m = metadata();
        m.producer_epoch = ProducerEpoch(4);
        m.last_producer_epoch = ProducerEpoch(3);
        // A retry of the bump from 3 to 4: kept (KIP-360).
        let kept = m.prepare_increment_epoch(1, Some(ProducerEpoch(3)), 1).expect("legal").expect("retry");
        assert_eq!((kept.producer_epoch, kept.last_producer_epoch), (ProducerEpoch(4), ProducerEpoch(3)));
        m.abandon();
        let bumped = m.prepare_increment_epoch(1, Some(ProducerEpoch(4)), 1).expect("legal").expect("current");
        assert_eq!((bumped.producer_epoch, bumped.last_producer_epoch), (ProducerEpoch(5), ProducerEpoch(4)));
        m.abandon();
        assert_eq!(m.prepare_increment_epoch(1, Some(ProducerEpoch(2)), 1), Ok(None), "fenced");
        m.producer_epoch = ProducerEpoch(i16::MAX - 1);
        assert!(matches!(m.prepare_increment_epoch(1, None, 1), Err(TxnStateError::EpochExhausted { .. })));
        let rotated = m.prepare_producer_id_rotation(ProducerId(8), 1, 1, true).expect("legal");
        assert_eq!(
            (rotated.producer_id, rotated.producer_epoch, rotated.previous_producer_id),
            (ProducerId(8), ProducerEpoch(0), ProducerId(7))
        );
    }

    #[test]
    fn version_2_ends_bump_the_epoch_and_rotate_when_exhausted() {
        let mut m = metadata();
        m.producer_epoch = ProducerEpoch(i16::MAX - 1);
        step(&mut m, |m| m.prepare_add_partitions(&[tp(0)].into(), 1));
        step(&mut m, |m| m.prepare_end(TransactionResult::Abort, TransactionVersion::V2, ProducerId(9), 2));
        assert_eq!((m.producer_epoch, m.next_producer_id), (ProducerEpoch(i16::MAX), ProducerId(9)));
        step(&mut m, |m| m.prepare_complete(3));
        assert_eq!(
            (m.state, m.producer_id, m.producer_epoch, m.previous_producer_id),
            (TxnState::CompleteAbort, ProducerId(9), ProducerEpoch(0), ProducerId(7))
        );
    }
}
