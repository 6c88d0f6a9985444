//! The coordinator driven directly: requests in, effects out, appends and markers
//! completed (or failed, or lost in a crash) by hand, time moved by hand.

mod model;

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::{
    AppendId, Effect, ListFilter, ProducerIdSource, Request, RequestId, Response, TransactionDescription,
    TxnCoordinator, TxnMarkers,
};
use crate::txn::log::{replay_records, TxnRecord};
use crate::txn::state::{TransactionMetadata, TxnState};
use crate::txn::{
    partition_for, CoordinatorEpoch, TransactionResult, TransactionVersion, TransactionalId, TxnConfig,
    TRANSACTION_STATE_TOPIC,
};
use corelog_engine::types::{PartitionId, ProducerEpoch, ProducerId, TopicName, TopicPartition};

pub(super) const PARTITIONS: i32 = 3;
pub(super) const TIMEOUT_MS: i32 = 60_000;
pub(super) const EXPIRATION_MS: i64 = 1_000_000;

/// Producer ids from a counter; `unavailable` makes them fail as a cluster node's do
/// while it waits for a block.
#[derive(Debug, Default)]
pub(super) struct Ids {
    pub next: i64,
    pub unavailable: bool,
}

impl ProducerIdSource for Ids {
    fn next_producer_id(&mut self) -> Result<ProducerId, ResponseError> {
        if self.unavailable {
            return Err(ResponseError::CoordinatorLoadInProgress);
        }
        self.next += 1;
        Ok(ProducerId(self.next - 1))
    }
}

pub(super) fn config() -> TxnConfig {
    TxnConfig {
        state_log_partitions: PARTITIONS,
        transaction_timeout_ms_max: 900_000,
        transactional_id_expiration_ms: EXPIRATION_MS,
        ..TxnConfig::default()
    }
}

pub(super) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(TopicName::new(topic).expect("valid"), PartitionId(partition))
}

pub(super) fn id(name: &str) -> TransactionalId {
    TransactionalId(name.into())
}

/// A coordinator of every partition with its runtime's side played by hand: the
/// durable log (records in append order, per partition), appends and markers in
/// flight, and the answers.
pub(super) struct Harness {
    pub coordinator: TxnCoordinator<Ids>,
    pub log: BTreeMap<PartitionId, Vec<TxnRecord>>,
    pub appends: Vec<(AppendId, PartitionId, TxnRecord)>,
    pub markers: Vec<TxnMarkers>,
    pub responses: BTreeMap<RequestId, Response>,
    pub next_request: u64,
    pub now_ms: i64,
    pub coordinator_epoch: CoordinatorEpoch,
}

impl Harness {
    pub fn new() -> Harness {
        let mut harness = Harness {
            coordinator: TxnCoordinator::new(config(), Ids::default()),
            log: BTreeMap::new(),
            appends: Vec::new(),
            markers: Vec::new(),
            responses: BTreeMap::new(),
            next_request: 0,
            now_ms: 1_000,
            coordinator_epoch: CoordinatorEpoch(0),
        };
        harness.load_all();
        harness
    }

    fn load_all(&mut self) {
        for partition in 0..PARTITIONS {
            let records = self.log.get(&PartitionId(partition)).cloned().unwrap_or_default();
            self.coordinator.load_partition(PartitionId(partition), self.coordinator_epoch, replay_records(records));
        }
        self.collect();
    }

    /// Moves the coordinator's effects into the harness's queues, checking on the way
    /// that a transactional id has at most one append in flight and a request one answer.
    pub fn collect(&mut self) {
        for effect in self.coordinator.take_effects() {
            match effect {
                Effect::Append { append, partition, coordinator_epoch, record } => {
                    assert_eq!(coordinator_epoch, self.coordinator_epoch);
                    assert_eq!(partition, partition_for(&record.transactional_id, PARTITIONS));
                    assert!(
                        !self.appends.iter().any(|(_, _, r)| r.transactional_id == record.transactional_id),
                        "two appends in flight for {}",
                        record.transactional_id
                    );
                    self.appends.push((append, partition, record));
                }
                Effect::WriteMarkers(markers) => self.markers.push(markers),
                Effect::Respond { request, response } => {
                    assert!(self.responses.insert(request, response).is_none(), "{request:?} answered twice");
                }
            }
        }
    }

    pub fn send(&mut self, request: Request) -> RequestId {
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        self.coordinator.handle(request_id, request, self.now_ms);
        self.collect();
        request_id
    }

    /// Completes the append at `index` of those in flight: durable, or failed.
    pub fn complete_append(&mut self, index: usize, failure: Option<ResponseError>) {
        let (append, partition, record) = self.appends.remove(index);
        match failure {
            None => {
                self.log.entry(partition).or_default().push(record);
                self.coordinator.append_done(append, self.now_ms);
            }
            Some(error) => self.coordinator.append_failed(append, error),
        }
        self.collect();
    }

    pub fn write_markers(&mut self, index: usize) {
        let markers = self.markers.remove(index);
        self.coordinator.markers_written(&markers, self.now_ms);
        self.collect();
    }

    /// Completes every append and writes every marker until nothing is in flight.
    pub fn settle(&mut self) {
        while !self.appends.is_empty() || !self.markers.is_empty() {
            if !self.appends.is_empty() {
                self.complete_append(0, None);
            } else {
                self.write_markers(0);
            }
        }
    }

    pub fn tick(&mut self) {
        self.coordinator.tick(self.now_ms);
        self.collect();
    }

    /// The process dies: what was in flight is lost; a new coordinator (one epoch
    /// later) loads every partition from the durable log.
    pub fn crash(&mut self) {
        self.appends.clear();
        self.markers.clear();
        let ids = std::mem::take(&mut self.coordinator.producer_ids);
        self.coordinator = TxnCoordinator::new(config(), ids);
        self.coordinator_epoch = CoordinatorEpoch(self.coordinator_epoch.0 + 1);
        self.load_all();
    }

    pub fn answer(&mut self, request: RequestId) -> Response {
        self.responses.remove(&request).expect("answered")
    }

    pub fn request_and_settle(&mut self, request: Request) -> Response {
        let request = self.send(request);
        self.settle();
        self.answer(request)
    }

    pub fn state(&self, name: &str) -> TxnState {
        self.coordinator.transaction(&id(name)).expect("known").state
    }

    pub fn records_of(&self, name: &str) -> Vec<TxnRecord> {
        let partition = partition_for(&id(name), PARTITIONS);
        let records = self.log.get(&partition).map(Vec::as_slice).unwrap_or_default();
        records.iter().filter(|r| r.transactional_id == id(name)).cloned().collect()
    }
}

pub(super) fn init(name: &str) -> Request {
    Request::InitProducerId { transactional_id: id(name), timeout_ms: TIMEOUT_MS, expected: None }
}

pub(super) fn add(name: &str, producer: (ProducerId, ProducerEpoch), partitions: &[i32]) -> Request {
    Request::AddPartitions {
        transactional_id: id(name),
        producer_id: producer.0,
        producer_epoch: producer.1,
        partitions: partitions.iter().map(|p| tp("orders", *p)).collect(),
        verify_only: false,
    }
}

pub(super) fn end(name: &str, producer: (ProducerId, ProducerEpoch), result: TransactionResult) -> Request {
    Request::EndTxn {
        transactional_id: id(name),
        producer_id: producer.0,
        producer_epoch: producer.1,
        result,
        version: TransactionVersion::V0,
    }
}

fn initialized(harness: &mut Harness, name: &str) -> (ProducerId, ProducerEpoch) {
    match harness.request_and_settle(init(name)) {
        Response::InitProducerId(Ok(producer)) => producer,
        other => panic!("InitProducerId: {other:?}"),
    }
}

fn producer(id: i64, epoch: i16) -> (ProducerId, ProducerEpoch) {
    (ProducerId(id), ProducerEpoch(epoch))
}

#[test]
fn a_transaction_commits_through_prepare_markers_and_complete() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    assert_eq!(p, producer(0, 0));
    let added = h.send(add("t", p, &[0, 1]));
    assert_eq!(h.appends.len(), 1, "the Ongoing record is appended first");
    assert!(!h.responses.contains_key(&added), "answered only once durable");
    h.complete_append(0, None);
    assert_eq!(h.answer(added), Response::AddPartitions(Ok(())));
    assert_eq!(h.state("t"), TxnState::Ongoing);

    let ended = h.send(end("t", p, TransactionResult::Commit));
    h.complete_append(0, None);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(p)), "answered once PrepareCommit is durable");
    assert_eq!(h.state("t"), TxnState::PrepareCommit);
    assert_eq!(
        h.markers,
        vec![TxnMarkers {
            transactional_id: id("t"),
            producer_id: p.0,
            producer_epoch: p.1,
            result: TransactionResult::Commit,
            coordinator_epoch: CoordinatorEpoch(0),
            partitions: [tp("orders", 0), tp("orders", 1)].into(),
        }]
    );
    h.write_markers(0);
    h.complete_append(0, None);
    assert_eq!(h.state("t"), TxnState::CompleteCommit);
    let states: Vec<TxnState> = h.records_of("t").iter().map(|r| r.value.as_ref().expect("value").state).collect();
    assert_eq!(
        states,
        [TxnState::Empty, TxnState::Ongoing, TxnState::PrepareCommit, TxnState::CompleteCommit],
        "one record per transition"
    );
    // A retry of the EndTxn that completed succeeds; one that changes its mind does not.
    assert_eq!(h.request_and_settle(end("t", p, TransactionResult::Commit)), Response::EndTxn(Ok(p)));
    assert_eq!(
        h.request_and_settle(end("t", p, TransactionResult::Abort)),
        Response::EndTxn(Err(ResponseError::InvalidTxnState))
    );
}

#[test]
fn requests_are_refused_with_kafkas_errors() {
    let mut h = Harness::new();
    let unknown = add("nobody", producer(0, 0), &[0]);
    assert_eq!(h.request_and_settle(unknown), Response::AddPartitions(Err(ResponseError::InvalidProducerIdMapping)));
    assert_eq!(
        h.request_and_settle(end("nobody", producer(0, 0), TransactionResult::Commit)),
        Response::EndTxn(Err(ResponseError::InvalidProducerIdMapping))
    );
    let empty = Request::InitProducerId { transactional_id: id(""), timeout_ms: TIMEOUT_MS, expected: None };
    assert_eq!(h.request_and_settle(empty), Response::InitProducerId(Err(ResponseError::InvalidRequest)));
    for timeout_ms in [0, -1, 900_001] {
        let request = Request::InitProducerId { transactional_id: id("t"), timeout_ms, expected: None };
        let answer = h.request_and_settle(request);
        assert_eq!(answer, Response::InitProducerId(Err(ResponseError::InvalidTransactionTimeout)));
    }
    let p = initialized(&mut h, "t");
    assert_eq!(
        h.request_and_settle(add("t", (ProducerId(99), p.1), &[0])),
        Response::AddPartitions(Err(ResponseError::InvalidProducerIdMapping))
    );
    assert_eq!(
        h.request_and_settle(add("t", (p.0, ProducerEpoch(5)), &[0])),
        Response::AddPartitions(Err(ResponseError::ProducerFenced))
    );
    assert_eq!(
        h.request_and_settle(end("t", p, TransactionResult::Commit)),
        Response::EndTxn(Err(ResponseError::InvalidTxnState)),
        "no transaction to end"
    );
    // While an append is in flight, the transaction's other requests wait.
    let added = h.send(add("t", p, &[0]));
    assert_eq!(
        h.request_and_settle_no_flush(add("t", p, &[1])),
        Response::AddPartitions(Err(ResponseError::ConcurrentTransactions))
    );
    assert_eq!(
        h.request_and_settle_no_flush(init("t")),
        Response::InitProducerId(Err(ResponseError::ConcurrentTransactions))
    );
    h.settle();
    assert_eq!(h.answer(added), Response::AddPartitions(Ok(())));
    // Already added: answered at once, nothing appended.
    let again = h.send(add("t", p, &[0]));
    assert!(h.appends.is_empty());
    assert_eq!(h.answer(again), Response::AddPartitions(Ok(())));

    let ended = h.send(end("t", p, TransactionResult::Commit));
    h.complete_append(0, None);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(p)));
    // Prepared, markers not yet written.
    assert_eq!(
        h.request_and_settle_no_flush(end("t", p, TransactionResult::Commit)),
        Response::EndTxn(Err(ResponseError::ConcurrentTransactions))
    );
    assert_eq!(
        h.request_and_settle_no_flush(end("t", p, TransactionResult::Abort)),
        Response::EndTxn(Err(ResponseError::InvalidTxnState))
    );
    // The next transaction's first add waits for the markers (parked, not refused).
    let next = h.send(add("t", p, &[1]));
    assert!(!h.responses.contains_key(&next), "parked until the transaction completes");
    assert_eq!(
        h.request_and_settle_no_flush(init("t")),
        Response::InitProducerId(Err(ResponseError::ConcurrentTransactions))
    );
    h.settle();
    assert_eq!(h.answer(next), Response::AddPartitions(Ok(())), "handled once the commit completed");
    assert_eq!(h.state("t"), TxnState::Ongoing, "the next transaction began");
}

impl Harness {
    /// Sends a request answered without an append.
    fn request_and_settle_no_flush(&mut self, request: Request) -> Response {
        let appends = self.appends.len();
        let request = self.send(request);
        assert_eq!(self.appends.len(), appends, "a refusal appends nothing");
        self.answer(request)
    }
}

#[test]
fn a_partition_not_coordinated_here_is_not_coordinator() {
    let mut h = Harness::new();
    let partition = partition_for(&id("t"), PARTITIONS);
    h.coordinator.unload_partition(partition);
    assert_eq!(h.request_and_settle(init("t")), Response::InitProducerId(Err(ResponseError::NotCoordinator)));
    h.coordinator.load_partition(partition, CoordinatorEpoch(0), BTreeMap::new());
    let p = initialized(&mut h, "t");
    // The partition moves away while an append is in flight: its answer says so.
    let added = h.send(add("t", p, &[0]));
    h.coordinator.unload_partition(partition);
    h.complete_append(0, None);
    assert_eq!(h.answer(added), Response::AddPartitions(Err(ResponseError::NotCoordinator)));
    assert!(h.coordinator.transaction(&id("t")).is_none());
}

#[test]
fn a_failed_append_changes_nothing_and_maps_the_error() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    for (error, answer) in [
        (ResponseError::NotEnoughReplicas, ResponseError::CoordinatorNotAvailable),
        (ResponseError::RequestTimedOut, ResponseError::CoordinatorNotAvailable),
        (ResponseError::NotLeaderOrFollower, ResponseError::NotCoordinator),
        (ResponseError::MessageTooLarge, ResponseError::UnknownServerError),
    ] {
        let added = h.send(add("t", p, &[0]));
        h.complete_append(0, Some(error));
        assert_eq!(h.answer(added), Response::AddPartitions(Err(answer)));
        let metadata = h.coordinator.transaction(&id("t")).expect("known");
        assert_eq!((metadata.state, metadata.pending_state), (TxnState::Empty, None));
    }
    // The first record of a new transactional id fails: nothing of it stays.
    let first = h.send(init("new"));
    h.complete_append(0, Some(ResponseError::NotEnoughReplicas));
    assert_eq!(h.answer(first), Response::InitProducerId(Err(ResponseError::CoordinatorNotAvailable)));
    assert!(h.coordinator.transaction(&id("new")).is_none());
    // A completion whose append fails is retried on the tick.
    h.request_and_settle(add("t", p, &[0]));
    let ended = h.send(end("t", p, TransactionResult::Abort));
    h.complete_append(0, None);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(p)));
    h.write_markers(0);
    h.complete_append(0, Some(ResponseError::NotEnoughReplicas));
    assert_eq!(h.state("t"), TxnState::PrepareAbort);
    h.tick();
    h.settle();
    assert_eq!(h.state("t"), TxnState::CompleteAbort);
}

#[test]
fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let mut h = Harness::new();
    let old = initialized(&mut h, "t");
    h.request_and_settle(add("t", old, &[0, 2]));
    // A second instance with the same transactional id: the open transaction is
    // aborted under a bumped epoch, and the new instance told to retry.
    let fencing = h.send(init("t"));
    h.complete_append(0, None);
    assert_eq!(h.answer(fencing), Response::InitProducerId(Err(ResponseError::ConcurrentTransactions)));
    assert_eq!(h.state("t"), TxnState::PrepareAbort);
    assert_eq!(h.markers.len(), 1);
    assert_eq!((h.markers[0].producer_epoch, h.markers[0].result), (ProducerEpoch(1), TransactionResult::Abort));
    // The old producer is fenced from now on.
    assert_eq!(
        h.request_and_settle_no_flush(end("t", old, TransactionResult::Commit)),
        Response::EndTxn(Err(ResponseError::ProducerFenced))
    );
    h.settle();
    assert_eq!(h.state("t"), TxnState::CompleteAbort);
    let new = initialized(&mut h, "t");
    assert_eq!(new, producer(old.0 .0, 2), "the retry bumps again");
    assert_eq!(h.request_and_settle(add("t", old, &[0])), Response::AddPartitions(Err(ResponseError::ProducerFenced)));
    assert_eq!(h.request_and_settle(add("t", new, &[0])), Response::AddPartitions(Ok(())));
}

#[test]
fn an_open_transaction_times_out_into_an_abort() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    h.request_and_settle(add("t", p, &[0]));
    let started = h.now_ms;
    h.now_ms = started + i64::from(TIMEOUT_MS);
    h.tick();
    assert!(h.appends.is_empty(), "not yet: the timeout is exceeded only after it");
    h.now_ms += 1;
    h.tick();
    assert_eq!(h.appends.len(), 1);
    h.settle();
    assert_eq!(h.state("t"), TxnState::CompleteAbort);
    let metadata = h.coordinator.transaction(&id("t")).expect("known");
    assert_eq!(metadata.producer_epoch, ProducerEpoch(1), "the timeout fenced the producer");
    assert_eq!(
        h.request_and_settle(end("t", p, TransactionResult::Commit)),
        Response::EndTxn(Err(ResponseError::ProducerFenced))
    );
}

#[test]
fn an_idle_transactional_id_expires_with_a_tombstone() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    h.now_ms += EXPIRATION_MS - 1;
    h.tick();
    assert!(h.appends.is_empty());
    h.now_ms += 1;
    h.tick();
    h.settle();
    assert!(h.coordinator.transaction(&id("t")).is_none());
    assert_eq!(h.records_of("t").last().expect("records").value, None, "a tombstone");
    assert_eq!(
        h.request_and_settle(add("t", p, &[0])),
        Response::AddPartitions(Err(ResponseError::InvalidProducerIdMapping))
    );
    h.crash();
    assert!(h.coordinator.transaction(&id("t")).is_none(), "replay removes it too");
    // An open transaction does not expire (it times out instead).
    let p = initialized(&mut h, "u");
    h.request_and_settle(add("u", p, &[0]));
    h.now_ms += EXPIRATION_MS;
    let metadata = h.coordinator.transaction(&id("u")).expect("known").clone();
    assert_eq!(metadata.state, TxnState::Ongoing);
    h.tick();
    h.settle();
    assert_eq!(h.state("u"), TxnState::CompleteAbort);
}

#[test]
fn a_crash_between_prepare_and_complete_resends_the_markers() {
    for result in [TransactionResult::Commit, TransactionResult::Abort] {
        let mut h = Harness::new();
        let p = initialized(&mut h, "t");
        h.request_and_settle(add("t", p, &[0, 1]));
        let ended = h.send(end("t", p, result));
        h.complete_append(0, None);
        assert_eq!(h.answer(ended), Response::EndTxn(Ok(p)));
        h.crash();
        assert_eq!(h.markers.len(), 1, "the loaded coordinator sends the markers again");
        assert_eq!(h.markers[0].result, result);
        assert_eq!(h.markers[0].coordinator_epoch, CoordinatorEpoch(1), "under its own epoch");
        // A crash after the markers, before the completion record: sent once more.
        h.crash();
        h.settle();
        let done = if result == TransactionResult::Commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        assert_eq!(h.state("t"), done);
    }
}

#[test]
fn markers_of_a_deposed_coordinator_are_ignored() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    h.request_and_settle(add("t", p, &[0]));
    h.send(end("t", p, TransactionResult::Commit));
    h.complete_append(0, None);
    let stale = h.markers.remove(0);
    h.crash();
    h.coordinator.markers_written(&stale, h.now_ms);
    h.collect();
    assert!(h.appends.is_empty(), "markers of epoch 0 do not complete epoch 1's transaction");
    h.settle();
    assert_eq!(h.state("t"), TxnState::CompleteCommit);
}

#[test]
fn kip_360_a_producer_keeps_its_id_and_a_retry_its_epoch() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    let recover = |expected| Request::InitProducerId { transactional_id: id("t"), timeout_ms: TIMEOUT_MS, expected };
    let bumped = h.request_and_settle(recover(Some(p)));
    assert_eq!(bumped, Response::InitProducerId(Ok(producer(p.0 .0, 1))));
    // The producer never heard of the bump and retries with its old epoch: the same answer.
    assert_eq!(h.request_and_settle(recover(Some(p))), bumped);
    // An epoch older than that is fenced; so is another producer id.
    assert_eq!(
        h.request_and_settle(recover(Some(producer(p.0 .0, 0)))),
        Response::InitProducerId(Ok(producer(p.0 .0, 1))),
        "still the retry"
    );
    h.request_and_settle(recover(None)); // another instance: epoch 2, last epoch forgotten
    assert_eq!(h.request_and_settle(recover(Some(p))), Response::InitProducerId(Err(ResponseError::ProducerFenced)));
    assert_eq!(
        h.request_and_settle(recover(Some(producer(77, 0)))),
        Response::InitProducerId(Err(ResponseError::ProducerFenced))
    );
}

/// Loads `t` with its epoch at `epoch` (as a long-lived producer would reach it).
fn at_epoch(h: &mut Harness, epoch: i16) -> (ProducerId, ProducerEpoch) {
    let p = initialized(h, "t");
    let partition = partition_for(&id("t"), PARTITIONS);
    let mut records = h.log[&partition].clone();
    let last = records.last_mut().expect("a record").value.as_mut().expect("a value");
    last.producer_epoch = ProducerEpoch(epoch);
    h.log.insert(partition, records);
    h.crash();
    (p.0, ProducerEpoch(epoch))
}

#[test]
fn an_exhausted_epoch_gets_a_new_producer_id() {
    let mut h = Harness::new();
    let p = at_epoch(&mut h, i16::MAX - 2);
    let expected = |p| Request::InitProducerId { transactional_id: id("t"), timeout_ms: TIMEOUT_MS, expected: Some(p) };
    let last = h.request_and_settle(expected(p));
    assert_eq!(last, Response::InitProducerId(Ok((p.0, ProducerEpoch(i16::MAX - 1)))), "the last epoch a client gets");
    let rotated = h.request_and_settle(expected((p.0, ProducerEpoch(i16::MAX - 1))));
    let Response::InitProducerId(Ok(rotated)) = rotated else { panic!("{rotated:?}") };
    assert_ne!(rotated.0, p.0);
    assert_eq!(rotated.1, ProducerEpoch(0));
    // The retry of the rotation, from the old id with the exhausted epoch, is recognised.
    let retried = h.request_and_settle(expected((p.0, ProducerEpoch(i16::MAX - 1))));
    assert_eq!(retried, Response::InitProducerId(Ok(rotated)));
    // The old id is fenced for everything else.
    assert_eq!(
        h.request_and_settle(add("t", (p.0, ProducerEpoch(i16::MAX - 1)), &[0])),
        Response::AddPartitions(Err(ResponseError::InvalidProducerIdMapping))
    );
}

#[test]
fn a_fence_at_the_last_epoch_leaves_a_rotation_for_the_next_producer() {
    let mut h = Harness::new();
    let p = at_epoch(&mut h, i16::MAX - 1);
    h.request_and_settle(add("t", p, &[0]));
    let fencing = h.request_and_settle(init("t"));
    assert_eq!(fencing, Response::InitProducerId(Err(ResponseError::ConcurrentTransactions)));
    assert_eq!(h.coordinator.transaction(&id("t")).expect("known").producer_epoch, ProducerEpoch(i16::MAX));
    let Response::InitProducerId(Ok(next)) = h.request_and_settle(init("t")) else { panic!("a producer id") };
    assert_eq!(next.1, ProducerEpoch(0));
    assert_ne!(next.0, p.0);
}

#[test]
fn producer_ids_unavailable_is_retriable() {
    let mut h = Harness::new();
    h.coordinator.producer_ids.unavailable = true;
    assert_eq!(
        h.request_and_settle(init("t")),
        Response::InitProducerId(Err(ResponseError::CoordinatorLoadInProgress))
    );
    h.coordinator.producer_ids.unavailable = false;
    assert_eq!(h.request_and_settle(init("t")), Response::InitProducerId(Ok(producer(0, 0))));
}

#[test]
fn verify_only_checks_without_changing_anything() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    h.request_and_settle(add("t", p, &[0]));
    let verify = |producer: (ProducerId, ProducerEpoch)| Request::AddPartitions {
        transactional_id: id("t"),
        producer_id: producer.0,
        producer_epoch: producer.1,
        partitions: [tp("orders", 0), tp("orders", 1)].into(),
        verify_only: true,
    };
    let answer = h.request_and_settle_no_flush(verify(p));
    let expected: BTreeMap<_, _> =
        [(tp("orders", 0), None), (tp("orders", 1), Some(ResponseError::TransactionAbortable))].into();
    assert_eq!(answer, Response::VerifyPartitions(expected));
    let answer = h.request_and_settle_no_flush(verify((p.0, ProducerEpoch(3))));
    let fenced: BTreeMap<_, _> = [tp("orders", 0), tp("orders", 1)]
        .into_iter()
        .map(|partition| (partition, Some(ResponseError::ProducerFenced)))
        .collect();
    assert_eq!(answer, Response::VerifyPartitions(fenced));
    assert_eq!(h.coordinator.transaction(&id("t")).expect("known").partitions.len(), 1);
}

#[test]
fn add_offsets_adds_the_groups_offsets_partition() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    let request = Request::AddOffsets {
        transactional_id: id("t"),
        producer_id: p.0,
        producer_epoch: p.1,
        offsets_partition: PartitionId(5),
    };
    assert_eq!(h.request_and_settle(request), Response::AddOffsets(Ok(())));
    let partitions = &h.coordinator.transaction(&id("t")).expect("known").partitions;
    assert_eq!(partitions, &BTreeSet::from([tp(crate::group::OFFSETS_TOPIC, 5)]));
    assert_ne!(TRANSACTION_STATE_TOPIC, crate::group::OFFSETS_TOPIC);
}

#[test]
fn transaction_version_2_bumps_the_epoch_at_every_end() {
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    let end_v2 = |producer: (ProducerId, ProducerEpoch), result| Request::EndTxn {
        transactional_id: id("t"),
        producer_id: producer.0,
        producer_epoch: producer.1,
        result,
        version: TransactionVersion::V2,
    };
    h.request_and_settle(add("t", p, &[0]));
    let ended = h.send(end_v2(p, TransactionResult::Commit));
    h.complete_append(0, None);
    let next = producer(p.0 .0, 1);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(next)));
    assert_eq!(h.markers[0].producer_epoch, ProducerEpoch(1), "markers carry the bumped epoch");
    // A retry with the old epoch while prepared: retriable.
    assert_eq!(
        h.request_and_settle_no_flush(end_v2(p, TransactionResult::Commit)),
        Response::EndTxn(Err(ResponseError::ConcurrentTransactions))
    );
    h.settle();
    assert_eq!(h.request_and_settle(end_v2(p, TransactionResult::Commit)), Response::EndTxn(Ok(next)), "a retry");
    assert_eq!(h.request_and_settle(add("t", p, &[0])), Response::AddPartitions(Err(ResponseError::ProducerFenced)));
    assert_eq!(h.request_and_settle(add("t", next, &[0])), Response::AddPartitions(Ok(())));
}

#[test]
fn transaction_version_2_rotates_the_producer_id_when_the_end_exhausts_the_epoch() {
    let mut h = Harness::new();
    let p = at_epoch(&mut h, i16::MAX - 1);
    h.request_and_settle(add("t", p, &[0]));
    let request = Request::EndTxn {
        transactional_id: id("t"),
        producer_id: p.0,
        producer_epoch: p.1,
        result: TransactionResult::Commit,
        version: TransactionVersion::V2,
    };
    let ended = h.send(request.clone());
    h.complete_append(0, None);
    let Response::EndTxn(Ok(next)) = h.answer(ended) else { panic!("ended") };
    assert_ne!(next.0, p.0);
    assert_eq!(next.1, ProducerEpoch(0));
    assert_eq!(h.markers[0].producer_epoch, ProducerEpoch(i16::MAX), "the old id's markers fence it");
    h.settle();
    let metadata = h.coordinator.transaction(&id("t")).expect("known");
    assert_eq!((metadata.producer_id, metadata.producer_epoch), next);
    assert_eq!(h.request_and_settle(request), Response::EndTxn(Ok(next)), "the retry from the old id");
    assert_eq!(h.request_and_settle(add("t", next, &[0])), Response::AddPartitions(Ok(())));
}

impl Harness {
    fn describe(&mut self, name: &str) -> Result<TransactionDescription, ResponseError> {
        match self.request_and_settle_no_flush(Request::Describe { transactional_id: id(name) }) {
            Response::Describe(described) => described,
            other => panic!("DescribeTransactions answered {other:?}"),
        }
    }

    /// The transactional ids ListTransactions gives with `filter`, with their state.
    fn list(&mut self, filter: ListFilter) -> Vec<(String, TxnState)> {
        match self.request_and_settle_no_flush(Request::List(filter)) {
            Response::List(listed) => listed.into_iter().map(|t| (t.transactional_id.0, t.state)).collect(),
            other => panic!("ListTransactions answered {other:?}"),
        }
    }
}

#[test]
fn describe_reports_the_current_state_partitions_and_start_of_a_transaction() {
    let mut h = Harness::new();
    assert_eq!(h.describe("nobody"), Err(ResponseError::TransactionalIdNotFound));
    assert_eq!(h.describe(""), Err(ResponseError::InvalidRequest));
    let p = initialized(&mut h, "t");
    let empty = h.describe("t").expect("described");
    assert_eq!(
        (empty.state, empty.producer_id, empty.producer_epoch, empty.timeout_ms, empty.txn_start_timestamp_ms),
        (TxnState::Empty, p.0, p.1, TIMEOUT_MS, -1),
        "no transaction yet: start time -1"
    );
    assert!(empty.partitions.is_empty());

    h.now_ms = 5_000;
    h.send(add("t", p, &[0, 1]));
    assert_eq!(h.describe("t").expect("described").state, TxnState::Empty, "the current state, not the pending one");
    h.settle();
    h.now_ms = 6_000;
    h.request_and_settle(Request::AddOffsets {
        transactional_id: id("t"),
        producer_id: p.0,
        producer_epoch: p.1,
        offsets_partition: PartitionId(2),
    });
    let ongoing = h.describe("t").expect("described");
    assert_eq!((ongoing.state, ongoing.txn_start_timestamp_ms), (TxnState::Ongoing, 5_000), "started at the first add");
    let offsets = TopicPartition::new(crate::group::offsets_topic(), PartitionId(2));
    assert_eq!(ongoing.partitions, [tp("orders", 0), tp("orders", 1), offsets].into());

    let ended = h.send(end("t", p, TransactionResult::Commit));
    h.complete_append(0, None);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(p)));
    let prepared = h.describe("t").expect("described");
    assert_eq!((prepared.state, prepared.partitions.len()), (TxnState::PrepareCommit, 3), "markers not written yet");
    h.settle();
    let complete = h.describe("t").expect("described");
    assert_eq!(
        (complete.state, complete.partitions.len(), complete.txn_start_timestamp_ms),
        (TxnState::CompleteCommit, 0, 5_000),
        "complete: no partitions, the start kept (as Kafka's record keeps it)"
    );

    h.coordinator.unload_partition(partition_for(&id("t"), PARTITIONS));
    assert_eq!(h.describe("t"), Err(ResponseError::NotCoordinator));
}

#[test]
fn list_filters_by_state_producer_id_and_duration_as_kafka_does() {
    let mut h = Harness::new();
    let a = initialized(&mut h, "a");
    let b = initialized(&mut h, "b");
    let c = initialized(&mut h, "c");
    h.now_ms = 10_000;
    h.request_and_settle(add("a", a, &[0]));
    h.now_ms = 12_000;
    h.request_and_settle(add("c", c, &[1]));
    h.request_and_settle(end("c", c, TransactionResult::Commit));
    assert_eq!(h.state("c"), TxnState::CompleteCommit);
    h.now_ms = 20_000;
    let states = |names: &[&str]| Some(names.iter().map(|n| TxnState::from_name(n).expect("known")).collect());
    let all = vec![
        ("a".to_string(), TxnState::Ongoing),
        ("b".to_string(), TxnState::Empty),
        ("c".to_string(), TxnState::CompleteCommit),
    ];
    let filter = |states, producer_ids: &[ProducerId], duration_ms| ListFilter {
        states,
        producer_ids: producer_ids.iter().copied().collect(),
        duration_ms,
    };
    assert_eq!(h.list(filter(None, &[], -1)), all, "no filter: every transactional id");
    assert_eq!(h.list(filter(states(&["Ongoing"]), &[], -1)), all[..1]);
    assert_eq!(h.list(filter(states(&["Ongoing", "CompleteCommit"]), &[], -1)), vec![all[0].clone(), all[2].clone()]);
    assert_eq!(h.list(filter(Some(BTreeSet::new()), &[], -1)), [], "only unknown state names: nothing");
    assert_eq!(h.list(filter(None, &[b.0], -1)), all[1..2]);
    assert_eq!(h.list(filter(states(&["Ongoing"]), &[b.0], -1)), [], "both filters apply");
    // "a" started 10 s ago, "c" 8 s ago; "b" never started (start -1), which passes
    // any duration filter in Kafka's test (now - start > duration).
    assert_eq!(h.list(filter(None, &[], 9_999)), vec![all[0].clone(), all[1].clone()]);
    assert_eq!(h.list(filter(None, &[], 10_000)), all[1..2], "longer than the duration, not as long");
    assert_eq!(h.list(filter(None, &[], 7_999)), all);

    // Dead (being expired) is never listed; ids of partitions not coordinated here neither.
    let partition = partition_for(&id("d"), PARTITIONS);
    let mut transactions: BTreeMap<TransactionalId, TransactionMetadata> = BTreeMap::new();
    for name in ["a", "b", "c"] {
        if partition_for(&id(name), PARTITIONS) == partition {
            transactions.insert(id(name), h.coordinator.transaction(&id(name)).expect("known").clone());
        }
    }
    let mut dead = TransactionMetadata::new(id("d"), ProducerId(50), TIMEOUT_MS, 0);
    dead.state = TxnState::Dead;
    transactions.insert(id("d"), dead);
    h.coordinator.load_partition(partition, CoordinatorEpoch(0), transactions);
    assert_eq!(h.list(filter(None, &[], -1)), all, "Dead is not listed");
    assert_eq!(h.describe("d"), Err(ResponseError::TransactionalIdNotFound), "nor described");
    h.coordinator.unload_partition(partition_for(&id("a"), PARTITIONS));
    assert!(!h.list(filter(None, &[], -1)).iter().any(|(name, _)| name == "a"));
}

/// Not Kafka's answer, Kafka's outcome sooner: an add from the current producer that
/// arrives while the last transaction's markers are written waits for its
/// completion instead of CONCURRENT_TRANSACTIONS and a client backoff; an add from
/// anyone else, one past the per-transaction bound, and one whose wait outlasts
/// PARKED_MS_MAX are answered as Kafka answers them; moving the partition away
/// answers the parked NOT_COORDINATOR.
#[test]
fn adds_during_the_markers_wait_for_the_completion_within_bounds() {
    use super::{PARKED_MS_MAX, PARKED_PER_TRANSACTION_MAX};
    let mut h = Harness::new();
    let p = initialized(&mut h, "t");
    h.request_and_settle(add("t", p, &[0]));
    let ended = h.send(end("t", p, TransactionResult::Commit));
    h.complete_append(0, None);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(p)));
    assert_eq!(h.markers.len(), 1, "the markers are being written");

    let offsets = h.send(Request::AddOffsets {
        transactional_id: id("t"),
        producer_id: p.0,
        producer_epoch: p.1,
        offsets_partition: PartitionId(1),
    });
    let mut parked = vec![offsets];
    for _ in 1..PARKED_PER_TRANSACTION_MAX {
        parked.push(h.send(add("t", p, &[2])));
    }
    assert!(parked.iter().all(|request| !h.responses.contains_key(request)), "all parked");
    assert_eq!(
        h.request_and_settle_no_flush(add("t", p, &[3])),
        Response::AddPartitions(Err(ResponseError::ConcurrentTransactions)),
        "past the bound: Kafka's answer"
    );
    assert_eq!(
        h.request_and_settle_no_flush(add("t", (p.0, ProducerEpoch(p.1 .0 + 1)), &[2])),
        Response::AddPartitions(Err(ResponseError::ProducerFenced)),
        "only the current producer waits"
    );
    h.settle();
    assert_eq!(h.answer(offsets), Response::AddOffsets(Ok(())));
    for request in &parked[1..] {
        assert_eq!(h.answer(*request), Response::AddPartitions(Ok(())));
    }
    assert_eq!(h.state("t"), TxnState::Ongoing);

    // Transaction version 2 with the producer id rotated: the new id's first add,
    // refused by the producer check while the old id's markers are written, waits too.
    let mut v2 = Harness::new();
    let exhausted = at_epoch(&mut v2, i16::MAX - 1);
    v2.request_and_settle(add("t", exhausted, &[0]));
    let ended = v2.send(Request::EndTxn {
        transactional_id: id("t"),
        producer_id: exhausted.0,
        producer_epoch: exhausted.1,
        result: TransactionResult::Commit,
        version: TransactionVersion::V2,
    });
    v2.complete_append(0, None);
    let Response::EndTxn(Ok(next)) = v2.answer(ended) else { panic!("ended") };
    assert_ne!(next.0, exhausted.0, "a new producer id");
    let first = v2.send(add("t", next, &[1]));
    assert!(!v2.responses.contains_key(&first), "parked");
    v2.settle();
    assert_eq!(v2.answer(first), Response::AddPartitions(Ok(())));

    // Markers that are not written: the wait ends on the tick after PARKED_MS_MAX.
    let u = initialized(&mut h, "u");
    h.request_and_settle(add("u", u, &[0]));
    let ended = h.send(end("u", u, TransactionResult::Abort));
    h.complete_append(0, None);
    assert_eq!(h.answer(ended), Response::EndTxn(Ok(u)));
    let waiting = h.send(add("u", u, &[1]));
    h.now_ms += PARKED_MS_MAX - 1;
    h.tick();
    assert!(!h.responses.contains_key(&waiting), "still within its wait");
    h.now_ms += 1;
    h.tick();
    assert_eq!(h.answer(waiting), Response::AddPartitions(Err(ResponseError::ConcurrentTransactions)));
    // Parked again, then the partition moves away.
    let moved = h.send(add("u", u, &[1]));
    h.coordinator.unload_partition(partition_for(&id("u"), PARTITIONS));
    h.collect();
    assert_eq!(h.answer(moved), Response::AddPartitions(Err(ResponseError::NotCoordinator)));
}
