//! The coordinator against a model: random sequences of requests from several
//! producers per transactional id, appends completed or failed in any order, markers
//! written in any order, time moved and ticked, and crashes (what is in flight is
//! lost; a new coordinator loads the durable log). Checked after every step:
//!
//! - the durable log of each transactional id is a legal path of the state machine,
//!   and a PrepareCommit (PrepareAbort) is followed by CompleteCommit (CompleteAbort);
//! - at most one append per transactional id is in flight;
//! - the coordinator's memory is what its durable log replays to (so a crash loses
//!   nothing that was answered);
//! - a fenced epoch never succeeds (AddPartitions, AddOffsets, a verify, an EndTxn
//!   that prepares);
//! - epochs of a producer id never go down in the log, and InitProducerId hands out
//!   strictly higher epochs but to a KIP-360 retry;
//! - after a tick, no transaction open longer than its timeout is left unaborted;
//! - DescribeTransactions and ListTransactions report the durable log, never a
//!   pending state;
//! - once everything in flight completes and time passes every timeout, no
//!   transaction is open or prepared.
//!
//! Time moves by small steps, half a timeout, past a timeout, or past
//! `transactional.id.expiration.ms` (tombstones). proptest prints the smallest
//! failing sequence and keeps it in `proptest-regressions/`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{add, end, id, tp, Harness, EXPIRATION_MS, TIMEOUT_MS};
use crate::txn::coordinator::{ListFilter, Request, RequestId, Response};
use crate::txn::log::{replay_records, TxnRecord};
use crate::txn::state::TxnState;
use crate::txn::{TransactionResult, TransactionVersion, TransactionalId, NO_PRODUCER_EPOCH};
use corelog_engine::types::{PartitionId, ProducerEpoch, ProducerId};
use kafka_protocol::ResponseError;

const IDS: usize = 2;
/// Producer instances per transactional id; the second uses transaction version 2.
const CLIENTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Init { txn: usize, client: usize, recover: bool },
    Add { txn: usize, client: usize, partition: i32 },
    AddOffsets { txn: usize, client: usize },
    Verify { txn: usize, client: usize, partition: i32 },
    End { txn: usize, client: usize, commit: bool },
    CompleteAppend { index: usize, fail: bool },
    WriteMarkers { index: usize },
    Advance { ms: i64 },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let txn = 0..IDS;
    let client = 0..CLIENTS;
    prop_oneof![
        2 => (txn.clone(), client.clone(), any::<bool>()).prop_map(|(txn, client, recover)| Op::Init { txn, client, recover }),
        4 => (txn.clone(), client.clone(), 0..3i32).prop_map(|(txn, client, partition)| Op::Add { txn, client, partition }),
        1 => (txn.clone(), client.clone()).prop_map(|(txn, client)| Op::AddOffsets { txn, client }),
        1 => (txn.clone(), client.clone(), 0..3i32).prop_map(|(txn, client, partition)| Op::Verify { txn, client, partition }),
        3 => (txn, client, any::<bool>()).prop_map(|(txn, client, commit)| Op::End { txn, client, commit }),
        8 => (0..4usize, prop::bool::weighted(0.15)).prop_map(|(index, fail)| Op::CompleteAppend { index, fail }),
        4 => (0..4usize).prop_map(|index| Op::WriteMarkers { index }),
        2 => prop_oneof![
            4 => Just(10i64),
            2 => Just(i64::from(TIMEOUT_MS) / 2),
            1 => Just(i64::from(TIMEOUT_MS) + 1),
            1 => Just(EXPIRATION_MS),
        ]
        .prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Crash),
    ]
}

/// What a request was, to check its answer.
#[derive(Debug, Clone)]
struct Sent {
    producer: Option<(ProducerId, ProducerEpoch)>,
    txn: usize,
    client: usize,
    /// InitProducerId with an expected producer (a KIP-360 retry may keep the epoch).
    recovering: bool,
    /// Whether the request appended (a prepare, an add), not answered from memory.
    appended: bool,
    kind: &'static str,
}

struct Model {
    h: Harness,
    /// What each producer instance was last told: (producer id, epoch).
    clients: BTreeMap<(usize, usize), (ProducerId, ProducerEpoch)>,
    sent: BTreeMap<RequestId, Sent>,
    /// Per producer id, the lowest epoch not fenced.
    fence_floor: BTreeMap<ProducerId, i32>,
    /// Per producer id, the highest epoch InitProducerId handed out.
    init_epochs: BTreeMap<ProducerId, i16>,
    /// Durable records already checked, per `__transaction_state` partition.
    checked: BTreeMap<PartitionId, usize>,
    /// The last durable record of each transactional id.
    last: BTreeMap<TransactionalId, Option<crate::txn::state::TxnTransit>>,
}

fn name(txn: usize) -> String {
    format!("txn-{txn}")
}

fn version(client: usize) -> TransactionVersion {
    if client == 1 {
        TransactionVersion::V2
    } else {
        TransactionVersion::V0
    }
}

impl Model {
    fn new() -> Model {
        Model {
            h: Harness::new(),
            clients: BTreeMap::new(),
            sent: BTreeMap::new(),
            fence_floor: BTreeMap::new(),
            init_epochs: BTreeMap::new(),
            checked: BTreeMap::new(),
            last: BTreeMap::new(),
        }
    }

    fn request(&mut self, txn: usize, client: usize, op: &Op) -> Option<(Request, Sent)> {
        let producer = self.clients.get(&(txn, client)).copied();
        let mut sent = Sent { producer, txn, client, recovering: false, appended: false, kind: "" };
        let transactional_id = id(&name(txn));
        let request = match op {
            Op::Init { recover, .. } => {
                let expected = producer.filter(|_| *recover);
                sent.recovering = expected.is_some();
                sent.kind = "init";
                Request::InitProducerId { transactional_id, timeout_ms: TIMEOUT_MS, expected }
            }
            Op::Add { partition, .. } => {
                sent.kind = "add";
                add(&name(txn), producer?, &[*partition])
            }
            Op::AddOffsets { .. } => {
                sent.kind = "offsets";
                let (producer_id, producer_epoch) = producer?;
                Request::AddOffsets { transactional_id, producer_id, producer_epoch, offsets_partition: PartitionId(1) }
            }
            Op::Verify { partition, .. } => {
                sent.kind = "verify";
                let (producer_id, producer_epoch) = producer?;
                Request::AddPartitions {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions: [tp("orders", *partition)].into(),
                    verify_only: true,
                }
            }
            Op::End { commit, .. } => {
                sent.kind = "end";
                let result = if *commit { TransactionResult::Commit } else { TransactionResult::Abort };
                match end(&name(txn), producer?, result) {
                    Request::EndTxn { transactional_id, producer_id, producer_epoch, result, .. } => {
                        let version = version(client);
                        Request::EndTxn { transactional_id, producer_id, producer_epoch, result, version }
                    }
                    other => other,
                }
            }
            _ => unreachable!("not a request"),
        };
        Some((request, sent))
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Init { txn, client, .. }
            | Op::Add { txn, client, .. }
            | Op::AddOffsets { txn, client }
            | Op::Verify { txn, client, .. }
            | Op::End { txn, client, .. } => {
                let Some((request, mut sent)) = self.request(*txn, *client, op) else { return };
                let appends = self.h.appends.len();
                let request_id = self.h.send(request);
                sent.appended = self.h.appends.len() > appends;
                self.sent.insert(request_id, sent);
            }
            Op::CompleteAppend { index, fail } => {
                if !self.h.appends.is_empty() {
                    let index = index % self.h.appends.len();
                    self.h.complete_append(index, fail.then_some(ResponseError::NotEnoughReplicas));
                }
            }
            Op::WriteMarkers { index } => {
                if !self.h.markers.is_empty() {
                    self.h.write_markers(index % self.h.markers.len());
                }
            }
            Op::Advance { ms } => {
                self.h.now_ms += ms;
                self.h.tick();
                self.check_timeouts();
            }
            Op::Crash => {
                self.check_memory_is_the_log();
                self.h.crash();
                self.sent.clear(); // their answers are lost with the connection
            }
        }
        self.check_log();
        self.check_answers();
        self.check_memory_is_the_log();
        self.check_queries();
    }

    /// DescribeTransactions and ListTransactions answer what the durable log says
    /// (an id whose first record is still in flight: Empty at epoch -1), never a
    /// pending state; ListTransactions without filters lists every id.
    fn check_queries(&self) {
        let replayed = replay_records(self.h.log.values().flatten().cloned());
        let listed = self.h.coordinator.list(&ListFilter::default(), self.h.now_ms);
        let known: Vec<_> = self.h.coordinator.transactions().map(|m| m.transactional_id.clone()).collect();
        assert_eq!(listed.iter().map(|t| t.transactional_id.clone()).collect::<Vec<_>>(), known);
        for listed in listed {
            let described = self.h.coordinator.describe(&listed.transactional_id).expect("described");
            assert_eq!((described.state, described.producer_id), (listed.state, listed.producer_id));
            let seen = (described.state, described.producer_id, described.producer_epoch, described.partitions);
            match replayed.get(&listed.transactional_id) {
                Some(durable) => assert_eq!(
                    seen,
                    (durable.state, durable.producer_id, durable.producer_epoch, durable.partitions.clone()),
                    "{} described other than its log",
                    listed.transactional_id
                ),
                None => assert_eq!((seen.0, seen.2), (TxnState::Empty, NO_PRODUCER_EPOCH)),
            }
        }
    }

    /// Every new durable record: a legal step from the id's last one; fences noted.
    fn check_log(&mut self) {
        let mut new = Vec::new();
        for (partition, records) in &self.h.log {
            let checked = self.checked.entry(*partition).or_default();
            new.extend(records[*checked..].iter().cloned());
            *checked = records.len();
        }
        for record in new {
            self.check_record(record);
        }
    }

    fn check_record(&mut self, record: TxnRecord) {
        let previous = self.last.get(&record.transactional_id).cloned().flatten();
        match (&previous, &record.value) {
            (None, None) => panic!("a tombstone of nothing: {record:?}"),
            (None, Some(value)) => assert_eq!(value.state, TxnState::Empty, "a first record: {record:?}"),
            (Some(previous), None) => {
                assert!(
                    previous.state.is_expiration_allowed(),
                    "{} expired in {}",
                    record.transactional_id,
                    previous.state
                )
            }
            (Some(previous), Some(value)) => {
                assert!(value.state.can_follow(previous.state), "{} → {}: {record:?}", previous.state, value.state);
                if value.producer_id == previous.producer_id {
                    assert!(value.producer_epoch >= previous.producer_epoch, "the epoch went down: {record:?}");
                } else {
                    assert_eq!(value.producer_epoch, ProducerEpoch(0), "a new producer id starts at 0");
                    self.fence_floor.insert(previous.producer_id, i32::MAX);
                }
                let fence = value.state == TxnState::PrepareAbort
                    && previous.state == TxnState::Ongoing
                    && value.producer_epoch.0 == previous.producer_epoch.0 + 1
                    && value.client_transaction_version == TransactionVersion::V0;
                if fence {
                    self.raise_floor(value.producer_id, value.producer_epoch);
                }
            }
        }
        if let Some(value) = &record.value {
            if value.state == TxnState::Empty {
                self.raise_floor(value.producer_id, value.producer_epoch);
            }
        }
        self.last.insert(record.transactional_id, record.value);
    }

    fn raise_floor(&mut self, producer_id: ProducerId, epoch: ProducerEpoch) {
        let floor = self.fence_floor.entry(producer_id).or_insert(0);
        *floor = (*floor).max(i32::from(epoch.0));
    }

    fn fenced(&self, (producer_id, epoch): (ProducerId, ProducerEpoch)) -> bool {
        i32::from(epoch.0) < self.fence_floor.get(&producer_id).copied().unwrap_or(0)
    }

    fn check_answers(&mut self) {
        let answered: Vec<RequestId> = self.h.responses.keys().copied().collect();
        for request in answered {
            let response = self.h.answer(request);
            let Some(sent) = self.sent.remove(&request) else { continue };
            self.check_answer(&sent, response);
        }
    }

    fn check_answer(&mut self, sent: &Sent, response: Response) {
        let used = sent.producer;
        match response {
            Response::InitProducerId(Ok(producer)) => {
                let last = self.init_epochs.entry(producer.0).or_insert(NO_PRODUCER_EPOCH.0);
                if sent.recovering {
                    assert!(producer.1 .0 >= *last, "InitProducerId went back to {producer:?}");
                } else {
                    assert!(producer.1 .0 > *last, "InitProducerId handed out {producer:?} twice");
                }
                *last = producer.1 .0;
                self.clients.insert((sent.txn, sent.client), producer);
            }
            Response::AddPartitions(Ok(())) | Response::AddOffsets(Ok(())) => {
                let used = used.expect("a producer");
                assert!(!self.fenced(used), "{} succeeded with fenced {used:?}", sent.kind);
            }
            Response::VerifyPartitions(results) => {
                let used = used.expect("a producer");
                if results.values().any(Option::is_none) {
                    assert!(!self.fenced(used), "verify succeeded with fenced {used:?}");
                }
            }
            Response::EndTxn(Ok(next)) => {
                let used = used.expect("a producer");
                if sent.appended {
                    assert!(!self.fenced(used), "EndTxn prepared with fenced {used:?}");
                }
                self.clients.insert((sent.txn, sent.client), next);
            }
            Response::InitProducerId(Err(_))
            | Response::AddPartitions(Err(_))
            | Response::AddOffsets(Err(_))
            | Response::EndTxn(Err(_)) => {}
            Response::Describe(_) | Response::List(_) => unreachable!("the model asks its queries directly"),
        }
    }

    /// Right after a tick: every transaction open past its timeout is being aborted.
    fn check_timeouts(&self) {
        for metadata in self.h.coordinator.transactions() {
            let expired = metadata.txn_start_timestamp_ms + i64::from(metadata.timeout_ms) < self.h.now_ms;
            if metadata.state == TxnState::Ongoing && metadata.pending_state.is_none() {
                assert!(!expired, "{} open past its timeout after a tick", metadata.transactional_id);
            }
        }
    }

    /// The coordinator's memory (pending transitions aside) is its durable log replayed.
    fn check_memory_is_the_log(&self) {
        let records = self.h.log.values().flatten().cloned();
        let replayed = replay_records(records);
        for metadata in self.h.coordinator.transactions() {
            let Some(durable) = replayed.get(&metadata.transactional_id) else {
                // Created by an InitProducerId whose first record is not in yet.
                assert_eq!(
                    (metadata.state, metadata.producer_epoch),
                    (TxnState::Empty, NO_PRODUCER_EPOCH),
                    "{} is in memory only",
                    metadata.transactional_id
                );
                continue;
            };
            let mut memory = metadata.clone();
            memory.pending_state = None;
            memory.last_producer_epoch = NO_PRODUCER_EPOCH;
            assert_eq!(&memory, durable, "memory and log disagree");
        }
        for id in replayed.keys() {
            assert!(self.h.coordinator.transaction(id).is_some(), "{id} is in the log only");
        }
    }

    /// Everything in flight completes, time passes every timeout: nothing stays open.
    fn finish(&mut self) {
        for _ in 0..4 {
            self.h.settle();
            self.check_log();
            self.check_answers();
            self.h.now_ms += i64::from(TIMEOUT_MS) + 1;
            self.h.tick();
            self.h.settle();
            self.check_log();
            self.check_answers();
        }
        self.check_memory_is_the_log();
        for (id, last) in &self.last {
            if let Some(value) = last {
                assert!(
                    matches!(value.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort),
                    "{id} ends in {}",
                    value.state
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_coordinator_keeps_the_models_invariants(ops in proptest::collection::vec(op(), 1..160)) {
        let mut model = Model::new();
        for op in &ops {
            model.step(op);
        }
        model.finish();
    }
}

/// A deterministic scenario of the model's hardest case: a commit prepared, then a
/// crash before its markers, a second crash after them, a new producer's fence in
/// between: the commit still completes and nothing else is lost.
#[test]
fn a_prepared_commit_survives_crashes_and_a_new_producer() {
    let mut model = Model::new();
    let ops = [
        Op::Init { txn: 0, client: 0, recover: false },
        Op::CompleteAppend { index: 0, fail: false },
        Op::Add { txn: 0, client: 0, partition: 1 },
        Op::CompleteAppend { index: 0, fail: false },
        Op::End { txn: 0, client: 0, commit: true },
        Op::CompleteAppend { index: 0, fail: false },
        Op::Crash,
        Op::Init { txn: 0, client: 1, recover: false },
        Op::WriteMarkers { index: 0 },
        Op::Crash,
        Op::WriteMarkers { index: 0 },
        Op::CompleteAppend { index: 0, fail: false },
    ];
    for op in &ops {
        model.step(op);
    }
    let last = model.last[&id("txn-0")].clone().expect("a value");
    assert_eq!(last.state, TxnState::CompleteCommit);
    model.finish();
}
