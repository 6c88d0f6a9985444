//! Model-based tests of the idempotent producer's state
//! ([`corelog_engine::producer_state`]) through [`PartitionLog`] on the simulated disk.
//!
//! Random sequences of produce requests from three idempotent producers (the next
//! batch, two batches in one set, a retry of a recent batch, a sequence gap, an epoch
//! bump, a zombie with an older epoch, a new epoch not starting at 0, a negative
//! sequence, an append on a full disk), plain batches, syncs, rolls, retention,
//! delete-records, truncation, crashes (every [`CrashFault`] kind) and clean restarts
//! run against a model: the batches the log holds, from which the expected producer
//! state is recomputed by plain replay, and Kafka's rules written out over it. After
//! every step:
//!
//! - each produce gets the model's answer: appended at the log end, a duplicate with
//!   the original batch's offsets, fenced, out of order, or invalid; anything but an
//!   append leaves the log end where it was;
//! - the log's producer state equals the model's (epochs, sequences, offsets);
//! - no snapshot file lies above the log end or below the first segment.
//!
//! After every crash and clean restart, each producer's remembered batches (all of
//! them durable by then, the acknowledged ones included) are retried and must be
//! duplicates with their original offsets, and each producer's next batch must be
//! appended at the recovered end.
//!
//! The tests at the end pin down the recovery paths one by one: crash faults,
//! retention of every batch of a producer, damaged and missing snapshots, truncation.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corelog_engine::batch::{self, BatchProducer, RecordSpec};
use corelog_engine::config::{Clock, ManualClock};
use corelog_engine::producer_state::{parse_snapshot_file_name, snapshot_file_name};
use corelog_engine::segment::parse_segment_file_name;
use corelog_engine::storage::{CrashFault, SimStorage, Storage};
use corelog_engine::*;
use futures_lite::future::block_on;
use proptest::collection::vec;
use proptest::prelude::*;

const DIR: &str = "/data/idempotent/0";
const T0: i64 = 1_700_000_000_000;
const PRODUCERS: [i64; 3] = [7, 8, 9];
/// The last producer starts here, so its sequences wrap past `i32::MAX` in a run.
const WRAPPING_START: i32 = i32::MAX - 3;

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn partition() -> TopicPartition {
    TopicPartition::new(TopicName::new("idempotent").expect("valid"), PartitionId(0))
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

/// The producer fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Idem {
    producer: i64,
    epoch: i16,
    base_seq: i32,
    last_seq: i32,
}

impl Idem {
    fn new(producer: i64, epoch: i16, base_seq: i32, records: usize) -> Idem {
        Idem { producer, epoch, base_seq, last_seq: seq_plus(base_seq, records as i64 - 1) }
    }
}

/// `seq + delta` in Kafka's sequence space, where `i32::MAX` is followed by 0.
fn seq_plus(seq: i32, delta: i64) -> i32 {
    if seq < 0 {
        return seq;
    }
    ((seq as i64 + delta) % (i32::MAX as i64 + 1)) as i32
}

#[derive(Debug, Clone)]
struct MBatch {
    base: i64,
    last: i64,
    idem: Option<Idem>,
}

/// Per producer id: its epoch and its last (at most five) batches as
/// `(base_seq, last_seq, base_offset, last_offset)`.
type MState = BTreeMap<i64, (i16, VecDeque<(i32, i32, i64, i64)>)>;

fn remember(state: &mut MState, idem: &Idem, base: i64, last: i64) {
    let entry = state.entry(idem.producer).or_insert((idem.epoch, VecDeque::new()));
    if entry.0 != idem.epoch {
        *entry = (idem.epoch, VecDeque::new());
    }
    if entry.1.len() == 5 {
        entry.1.pop_front();
    }
    entry.1.push_back((idem.base_seq, idem.last_seq, base, last));
}

/// The state the batches imply: each producer's epoch and last five batches.
fn replay(batches: &[MBatch]) -> MState {
    let mut state = MState::new();
    for batch in batches {
        if let Some(idem) = &batch.idem {
            remember(&mut state, idem, batch.base, batch.last);
        }
    }
    state
}

fn engine_state(log: &PartitionLog<SimStorage>) -> MState {
    log.producer_state()
        .producers()
        .map(|(id, entry)| {
            let batches = entry
                .batches()
                .map(|b| (b.base_sequence.0, b.last_sequence.0, b.base_offset.0, b.last_offset.0))
                .collect();
            (id.0, (entry.epoch().0, batches))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Append,
    Duplicate { base: i64, last: i64 },
    Fenced,
    OutOfOrder,
    InvalidSequence,
}

/// Kafka's answer to a record set, from the state before it: per batch in order,
/// a retry of a remembered batch answers for the set; an older epoch is fenced; a
/// known producer must continue its sequence (or start a new epoch at 0).
fn expect(state: &MState, set: &[Option<Idem>]) -> Expect {
    let mut working = state.clone();
    for idem in set.iter().flatten() {
        if idem.base_seq < 0 {
            return Expect::InvalidSequence;
        }
        if let Some((epoch, cached)) = state.get(&idem.producer) {
            let retry = cached.iter().find(|c| c.0 == idem.base_seq && c.1 == idem.last_seq);
            if let (true, Some(&(_, _, base, last))) = (*epoch == idem.epoch, retry) {
                return Expect::Duplicate { base, last };
            }
        }
        if let Some((epoch, cached)) = working.get(&idem.producer) {
            if idem.epoch < *epoch {
                return Expect::Fenced;
            }
            let expected = if idem.epoch == *epoch { seq_plus(cached.back().expect("never empty").1, 1) } else { 0 };
            if idem.base_seq != expected {
                return Expect::OutOfOrder;
            }
        }
        remember(&mut working, idem, 0, 0);
    }
    Expect::Append
}

// ---------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Next {
        producer: usize,
        records: usize,
    },
    /// Two batches of one producer in one record set.
    Pair {
        producer: usize,
        records: (usize, usize),
    },
    /// The `back`-th newest batch of the producer the log holds, sent again.
    Retry {
        producer: usize,
        back: usize,
    },
    Gap {
        producer: usize,
        skip: i64,
    },
    BumpEpoch {
        producer: usize,
    },
    Zombie {
        producer: usize,
    },
    NewEpochNotAtZero {
        producer: usize,
        base_seq: i32,
    },
    NegativeSequence {
        producer: usize,
    },
    Plain {
        records: usize,
    },
    /// The producer's next batch on a disk that has no room for it.
    FullDisk {
        producer: usize,
    },
    Sync,
    Roll,
    Housekeeping {
        advance_ms: i64,
    },
    DeleteRecords {
        per_mille: i64,
    },
    Truncate {
        per_mille: i64,
    },
    Crash {
        fault: CrashFault,
    },
    CleanRestart,
}

fn op() -> impl Strategy<Value = Op> {
    let producer = 0..PRODUCERS.len();
    let fault = prop_oneof![
        Just(CrashFault::LoseUnsynced),
        Just(CrashFault::KeepAll),
        any::<u64>().prop_map(|seed| CrashFault::TornTail { seed }),
        any::<u64>().prop_map(|seed| CrashFault::BitFlipInTail { seed }),
    ];
    prop_oneof![
        30 => (producer.clone(), 1..5usize).prop_map(|(producer, records)| Op::Next { producer, records }),
        4 => (producer.clone(), (1..4usize, 1..4usize)).prop_map(|(producer, records)| Op::Pair { producer, records }),
        14 => (producer.clone(), 0..8usize).prop_map(|(producer, back)| Op::Retry { producer, back }),
        3 => (producer.clone(), 1..4i64).prop_map(|(producer, skip)| Op::Gap { producer, skip }),
        3 => producer.clone().prop_map(|producer| Op::BumpEpoch { producer }),
        3 => producer.clone().prop_map(|producer| Op::Zombie { producer }),
        2 => (producer.clone(), 1..50i32).prop_map(|(producer, base_seq)| Op::NewEpochNotAtZero { producer, base_seq }),
        1 => producer.clone().prop_map(|producer| Op::NegativeSequence { producer }),
        6 => (1..4usize).prop_map(|records| Op::Plain { records }),
        2 => producer.prop_map(|producer| Op::FullDisk { producer }),
        10 => Just(Op::Sync),
        3 => Just(Op::Roll),
        5 => (0..20_000i64).prop_map(|advance_ms| Op::Housekeeping { advance_ms }),
        2 => (0..=1000i64).prop_map(|per_mille| Op::DeleteRecords { per_mille }),
        // To the log start half the time: after a delete-records inside a batch, that
        // empties the log.
        3 => prop_oneof![Just(0i64), 0..=1000i64].prop_map(|per_mille| Op::Truncate { per_mille }),
        6 => fault.prop_map(|fault| Op::Crash { fault }),
        3 => Just(Op::CleanRestart),
    ]
}

// ---------------------------------------------------------------------------------
// A run
// ---------------------------------------------------------------------------------

/// How often a run reached the situations the test exists for; the model test
/// asserts that the random runs reach each of them.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    duplicates: u64,
    duplicates_after_restart: u64,
    fenced: u64,
    out_of_order: u64,
    wrapped_sequences: u64,
    batches_lost_in_crashes: u64,
    retention_moves: u64,
    log_restarts: u64,
    full_disks: u64,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.duplicates += other.duplicates;
        self.duplicates_after_restart += other.duplicates_after_restart;
        self.fenced += other.fenced;
        self.out_of_order += other.out_of_order;
        self.wrapped_sequences += other.wrapped_sequences;
        self.batches_lost_in_crashes += other.batches_lost_in_crashes;
        self.retention_moves += other.retention_moves;
        self.log_restarts += other.log_restarts;
        self.full_disks += other.full_disks;
    }
}

struct Run {
    storage: SimStorage,
    clock: Arc<ManualClock>,
    config: TopicConfig,
    log: Option<PartitionLog<SimStorage>>,
    /// Every batch appended since the log was last emptied and not since cut away
    /// (truncation, lost in a crash). Retention and delete-records remove nothing
    /// here: producer state outlives them.
    batches: Vec<MBatch>,
    end: i64,
    /// Offsets below this were acknowledged durable (a sync or roll returned Ok).
    acked: i64,
    lso: i64,
    /// Each producer's current epoch, as the client knows it.
    client_epochs: [i16; 3],
    counter: u64,
    history: Vec<String>,
    coverage: Coverage,
}

impl Run {
    fn new(config: TopicConfig) -> Run {
        let storage = SimStorage::new();
        let clock = ManualClock::new(TimestampMs(T0));
        let mut run = Run {
            storage,
            clock,
            config,
            log: None,
            batches: Vec::new(),
            end: 0,
            acked: 0,
            lso: 0,
            client_epochs: [0; 3],
            counter: 0,
            history: Vec::new(),
            coverage: Coverage::default(),
        };
        run.log = Some(run.open());
        run
    }

    fn fail(&self, message: impl std::fmt::Display) -> ! {
        let recent = self.history.iter().rev().take(30).rev().cloned().collect::<Vec<_>>().join("\n  ");
        panic!(
            "{message}\nmodel: end {} acked {} log start {}\nlast operations:\n  {recent}",
            self.end, self.acked, self.lso
        )
    }

    fn ensure(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(message());
        }
    }

    fn ok<T>(&self, result: Result<T>, what: &str) -> T {
        result.unwrap_or_else(|error| self.fail(format!("{what} failed: {error}")))
    }

    fn note(&mut self, text: String) {
        self.history.push(text);
    }

    fn open(&self) -> PartitionLog<SimStorage> {
        let opened =
            PartitionLog::open(self.storage.clone(), dir(), partition(), self.config.clone(), self.clock.clone());
        self.ok(block_on(opened), "open").0
    }

    fn log(&self) -> &PartitionLog<SimStorage> {
        self.log.as_ref().expect("open")
    }

    fn log_mut(&mut self) -> &mut PartitionLog<SimStorage> {
        self.log.as_mut().expect("open")
    }

    fn state(&self) -> MState {
        replay(&self.batches)
    }

    fn build(&mut self, idem: Option<Idem>, records: usize) -> Vec<u8> {
        self.counter += 1;
        let key = self.counter.to_be_bytes();
        let specs: Vec<RecordSpec<'_>> = (0..records)
            .map(|i| RecordSpec { key: Some(&key), value: Some(b"value"), timestamp_delta_ms: i as i64 })
            .collect();
        let producer = match idem {
            Some(idem) => BatchProducer {
                producer_id: ProducerId(idem.producer),
                producer_epoch: idem.epoch,
                base_sequence: idem.base_seq,
            },
            None => BatchProducer::default(),
        };
        batch::build_batch(self.clock.now_ms(), producer, &specs)
    }

    /// What a well-behaved client sends next: its epoch, and the sequence after the
    /// log's last batch of that epoch (0 in a new epoch).
    fn next_idem(&self, producer: usize, records: usize) -> Idem {
        let id = PRODUCERS[producer];
        let epoch = self.client_epochs[producer];
        let base_seq = match self.state().get(&id) {
            Some((known, cached)) if *known == epoch => seq_plus(cached.back().expect("never empty").1, 1),
            Some(_) => 0,
            None if producer == 2 => WRAPPING_START,
            None => 0,
        };
        Idem::new(id, epoch, base_seq, records)
    }

    /// Sends a record set and checks the answer against the model.
    fn produce(&mut self, set: Vec<(Option<Idem>, usize)>) -> Expect {
        let expected = expect(&self.state(), &set.iter().map(|(idem, _)| *idem).collect::<Vec<_>>());
        let bytes: Vec<Vec<u8>> = set.iter().map(|(idem, records)| self.build(*idem, *records)).collect();
        self.note(format!("produce {set:?}: expect {expected:?}"));
        let result = block_on(self.log_mut().append(bytes.concat(), LeaderEpoch(0)));
        match (expected, result) {
            (Expect::Append, Ok(info)) => {
                self.ensure(!info.duplicate && info.base_offset == Offset(self.end), || {
                    format!("append landed at {info:?}, the end was {}", self.end)
                });
                for (idem, records) in set {
                    let (base, last) = (self.end, self.end + records as i64 - 1);
                    self.batches.push(MBatch { base, last, idem });
                    if let Some(idem) = idem {
                        if idem.last_seq < idem.base_seq {
                            self.coverage.wrapped_sequences += 1;
                        }
                        let index = PRODUCERS.iter().position(|p| *p == idem.producer).expect("a test producer");
                        self.client_epochs[index] = self.client_epochs[index].max(idem.epoch);
                    }
                    self.end = last + 1;
                }
                self.ensure(info.last_offset == Offset(self.end - 1), || format!("append {info:?}: last offset"));
            }
            (Expect::Duplicate { base, last }, Ok(info)) => {
                self.coverage.duplicates += 1;
                self.ensure(
                    info.duplicate && info.base_offset == Offset(base) && info.last_offset == Offset(last),
                    || format!("expected a duplicate of [{base}, {last}], got {info:?}"),
                );
            }
            (Expect::Fenced, Err(EngineError::InvalidProducerEpoch { .. })) => self.coverage.fenced += 1,
            (Expect::OutOfOrder, Err(EngineError::OutOfOrderSequence { .. })) => self.coverage.out_of_order += 1,
            (Expect::InvalidSequence, Err(EngineError::InvalidSequence { .. })) => {}
            (expected, result) => self.fail(format!("expected {expected:?}, got {result:?}")),
        }
        self.ensure(self.log().log_end_offset() == Offset(self.end), || {
            format!("log end {} after the produce, model end {}", self.log().log_end_offset(), self.end)
        });
        expected
    }

    fn set_high_watermark(&mut self) {
        let acked = Offset(self.acked);
        self.log_mut().set_high_watermark(acked);
    }

    /// Everything the model says about the log, compared.
    fn check(&self, what: &str) {
        let (engine, model) = (engine_state(self.log()), self.state());
        self.ensure(engine == model, || format!("{what}: producer state\n  log:   {engine:?}\n  model: {model:?}"));
        let stats = self.log().stats();
        self.ensure(stats.log_end_offset == Offset(self.end) && stats.log_start_offset == Offset(self.lso), || {
            format!("{what}: offsets {stats:?}")
        });
        let names = block_on(self.storage.list_dir(dir())).expect("list");
        let first_base = names.iter().filter_map(|n| parse_segment_file_name(n)).min().expect("a segment");
        for snapshot in names.iter().filter_map(|n| parse_snapshot_file_name(n)) {
            self.ensure(snapshot <= Offset(self.end) && snapshot >= first_base, || {
                format!("{what}: snapshot at {snapshot} outside [{first_base}, {}]", self.end)
            });
        }
    }

    /// After a restart: every remembered batch is a duplicate with its offsets, and
    /// every producer's next batch lands at the end.
    fn check_retries(&mut self, what: &str) {
        for (producer, (epoch, cached)) in self.state() {
            for (base_seq, last_seq, base, last) in cached {
                let idem = Idem { producer, epoch, base_seq, last_seq };
                let outcome = self.produce(vec![(Some(idem), (last - base + 1) as usize)]);
                self.ensure(outcome == Expect::Duplicate { base, last }, || {
                    format!("{what}: retry of producer {producer}'s batch [{base}, {last}]: {outcome:?}")
                });
                self.coverage.duplicates_after_restart += 1;
            }
        }
        for producer in 0..PRODUCERS.len() {
            let idem = self.next_idem(producer, 1);
            let outcome = self.produce(vec![(Some(idem), 1)]);
            self.ensure(outcome == Expect::Append, || format!("{what}: producer {producer}'s next batch: {outcome:?}"));
        }
    }

    fn sync(&mut self) {
        let result = block_on(self.log_mut().sync());
        let synced = self.ok(result, "sync");
        self.ensure(synced == Offset(self.end), || format!("sync returned {synced}"));
        self.acked = self.end;
        self.set_high_watermark();
    }

    fn crash(&mut self, fault: CrashFault) {
        self.note(format!("crash {fault:?}"));
        drop(self.log.take());
        self.storage.crash(fault);
        self.log = Some(self.open());
        let recovered = self.log().log_end_offset().0;
        self.ensure(recovered >= self.acked && recovered <= self.end, || {
            format!("{fault:?}: recovered end {recovered}, acknowledged {}", self.acked)
        });
        self.ensure(recovered == self.end || self.batches.iter().any(|b| b.base == recovered), || {
            format!("{fault:?}: recovered end {recovered} is not a batch boundary")
        });
        if recovered < self.end {
            self.coverage.batches_lost_in_crashes += 1;
        }
        self.batches.retain(|b| b.base < recovered);
        self.end = recovered;
        self.acked = recovered;
        self.check(&format!("after {fault:?}"));
        self.check_retries(&format!("after {fault:?}"));
        self.sync();
    }

    fn clean_restart(&mut self) {
        self.note("close and reopen".to_string());
        let log = self.log.take().expect("open");
        self.ok(block_on(log.close()), "close");
        self.log = Some(self.open());
        self.acked = self.end;
        self.check("after a clean restart");
        self.check_retries("after a clean restart");
        self.sync();
    }

    fn truncate(&mut self, offset: i64) {
        self.note(format!("truncate to {offset}"));
        let result = block_on(self.log_mut().truncate_to(Offset(offset)));
        self.ok(result, "truncate");
        let offset = offset.max(self.lso);
        if offset < self.end {
            let cut = self.batches.iter().find(|b| b.last >= offset).expect("the model holds it").base;
            if cut < self.lso {
                // The batch holding the log start went whole: the log restarts empty there.
                self.batches.clear();
                self.end = self.lso;
                self.coverage.log_restarts += 1;
            } else {
                self.batches.retain(|b| b.base < cut);
                self.end = cut;
            }
            self.acked = self.end;
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Next { producer, records } => {
                let idem = self.next_idem(producer, records);
                self.produce(vec![(Some(idem), records)]);
            }
            Op::Pair { producer, records: (first, second) } => {
                let one = self.next_idem(producer, first);
                let two = Idem::new(one.producer, one.epoch, seq_plus(one.last_seq, 1), second);
                self.produce(vec![(Some(one), first), (Some(two), second)]);
            }
            Op::Retry { producer, back } => {
                let id = PRODUCERS[producer];
                let sent: Vec<(Idem, usize)> = self
                    .batches
                    .iter()
                    .rev()
                    .filter_map(|b| b.idem.filter(|i| i.producer == id).map(|i| (i, (b.last - b.base + 1) as usize)))
                    .take(8)
                    .collect();
                if let Some(&(idem, records)) = sent.get(back % sent.len().max(1)) {
                    self.produce(vec![(Some(idem), records)]);
                }
            }
            Op::Gap { producer, skip } => {
                let mut idem = self.next_idem(producer, 1);
                idem.base_seq = seq_plus(idem.base_seq, skip);
                idem.last_seq = idem.base_seq;
                self.produce(vec![(Some(idem), 1)]);
            }
            Op::BumpEpoch { producer } => {
                self.client_epochs[producer] += 1;
                let idem = Idem::new(PRODUCERS[producer], self.client_epochs[producer], 0, 1);
                self.produce(vec![(Some(idem), 1)]);
            }
            Op::Zombie { producer } => {
                let mut idem = self.next_idem(producer, 1);
                idem.epoch -= 1;
                self.produce(vec![(Some(idem), 1)]);
            }
            Op::NewEpochNotAtZero { producer, base_seq } => {
                let idem = Idem::new(PRODUCERS[producer], self.client_epochs[producer] + 1, base_seq, 1);
                self.produce(vec![(Some(idem), 1)]);
            }
            Op::NegativeSequence { producer } => {
                let epoch = self.client_epochs[producer];
                let idem = Idem { producer: PRODUCERS[producer], epoch, base_seq: -1, last_seq: -1 };
                self.produce(vec![(Some(idem), 1)]);
            }
            Op::Plain { records } => {
                self.produce(vec![(None, records)]);
            }
            Op::FullDisk { producer } => {
                let idem = self.next_idem(producer, 2);
                let bytes = self.build(Some(idem), 2);
                let names = block_on(self.storage.list_dir(dir())).expect("list");
                let used: u64 = names.iter().map(|n| self.storage.file_len(&dir().join(n)).unwrap_or(0)).sum();
                self.storage.set_space_bytes_max(Some(used));
                self.note(format!("full disk, then {idem:?}"));
                let result = block_on(self.log_mut().append(bytes, LeaderEpoch(0)));
                self.storage.set_space_bytes_max(None);
                self.ensure(matches!(result, Err(EngineError::NoSpace { .. })), || {
                    format!("an append on a full disk: {result:?}")
                });
                self.coverage.full_disks += 1;
            }
            Op::Sync => {
                self.note("sync".to_string());
                self.sync();
            }
            Op::Roll => {
                self.note("roll".to_string());
                let result = block_on(self.log_mut().roll());
                self.ok(result, "roll");
                self.acked = self.end;
                self.set_high_watermark();
            }
            Op::Housekeeping { advance_ms } => {
                self.note(format!("housekeeping after {advance_ms} ms"));
                self.clock.advance_ms(advance_ms);
                let result = block_on(self.log_mut().housekeeping());
                self.ok(result, "housekeeping");
                let lso = self.log().log_start_offset().0;
                if lso > self.lso {
                    self.coverage.retention_moves += 1;
                }
                self.lso = lso;
            }
            Op::DeleteRecords { per_mille } => {
                let hw = self.log().high_watermark().0;
                let offset = self.lso + (hw - self.lso) * per_mille / 1000;
                self.note(format!("delete records below {offset}"));
                let result = block_on(self.log_mut().delete_records(Offset(offset)));
                self.lso = self.ok(result, "delete records").0;
            }
            Op::Truncate { per_mille } => {
                let offset = self.lso + (self.end - self.lso) * per_mille / 1000;
                self.truncate(offset);
            }
            Op::Crash { fault } => self.crash(fault),
            Op::CleanRestart => self.clean_restart(),
        }
        self.check(&format!("after {op:?}"));
    }
}

fn model_config(segment_bytes: u64, retention_bytes: i64) -> TopicConfig {
    TopicConfig {
        segment_bytes,
        segment_ms: 1 << 50,
        retention_bytes,
        retention_ms: -1,
        index_interval_bytes: 150,
        durability: Durability::Always,
        ..TopicConfig::default()
    }
}

#[test]
fn producer_state_matches_model() {
    let config = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (300..1500u64, prop_oneof![Just(-1i64), 1500..4000i64], vec(op(), 1..150));
    let total = std::cell::Cell::new(Coverage::default());
    let result = runner.run(&strategy, |(segment_bytes, retention_bytes, ops)| {
        let mut run = Run::new(model_config(segment_bytes, retention_bytes));
        for op in &ops {
            run.step(op);
        }
        // Whatever happened, a crash now keeps every remembered batch a duplicate.
        run.crash(CrashFault::LoseUnsynced);
        let mut sum = total.get();
        sum.add(&run.coverage);
        total.set(sum);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // Shrinking re-runs cases, so these are at least what the 64 cases reached.
    let coverage = total.get();
    let reached = [
        coverage.duplicates,
        coverage.duplicates_after_restart,
        coverage.fenced,
        coverage.out_of_order,
        coverage.wrapped_sequences,
        coverage.batches_lost_in_crashes,
        coverage.retention_moves,
        coverage.log_restarts,
        coverage.full_disks,
    ];
    assert!(reached.iter().all(|count| *count > 0), "the runs missed a situation: {coverage:?}");
}

// ---------------------------------------------------------------------------------
// The recovery paths one by one
// ---------------------------------------------------------------------------------

fn snapshot_offsets(storage: &SimStorage) -> Vec<i64> {
    let names = block_on(storage.list_dir(dir())).expect("list");
    names.iter().filter_map(|n| parse_snapshot_file_name(n)).map(|o| o.0).collect()
}

fn snapshot_path(offset: i64) -> PathBuf {
    dir().join(snapshot_file_name(Offset(offset)))
}

#[test]
fn an_acknowledged_batch_retried_after_any_crash_is_a_duplicate_and_the_sequence_continues() {
    let faults = [
        CrashFault::LoseUnsynced,
        CrashFault::KeepAll,
        CrashFault::TornTail { seed: 5 },
        CrashFault::BitFlipInTail { seed: 9 },
    ];
    for fault in faults {
        for roll_between in [false, true] {
            let mut run = Run::new(model_config(1 << 20, -1));
            for _ in 0..3 {
                run.step(&Op::Next { producer: 0, records: 2 });
            }
            if roll_between {
                run.step(&Op::Roll);
            }
            run.step(&Op::Next { producer: 0, records: 3 });
            run.step(&Op::Sync);
            // One more that is never acknowledged: the crash may or may not keep it.
            run.step(&Op::Next { producer: 0, records: 1 });
            drop(run.log.take());
            run.storage.crash(fault);
            run.log = Some(run.open());
            let case = format!("{fault:?}, roll between: {roll_between}");
            for (base_seq, last_seq, base, last) in [(0, 1, 0, 1), (4, 5, 4, 5), (6, 8, 6, 8)] {
                let idem = Idem { producer: 7, epoch: 0, base_seq, last_seq };
                let retry = run.build(Some(idem), (last - base + 1) as usize);
                let answer = block_on(run.log_mut().append(retry, LeaderEpoch(0))).expect("answered");
                assert!(answer.duplicate, "{case}: {answer:?}");
                assert_eq!((answer.base_offset, answer.last_offset), (Offset(base), Offset(last)), "{case}");
            }
            let end = run.log().log_end_offset();
            assert!(end == Offset(9) || end == Offset(10), "{case}: recovered end {end}");
            let next = run.build(Some(Idem::new(7, 0, end.0 as i32, 1)), 1);
            let answer = block_on(run.log_mut().append(next, LeaderEpoch(0))).expect("the next batch");
            assert!(!answer.duplicate && answer.base_offset == end, "{case}: {answer:?}");
        }
    }
}

#[test]
fn a_producer_whose_batches_retention_deleted_is_still_known_after_a_crash() {
    let mut run = Run::new(model_config(400, 1200));
    run.step(&Op::Next { producer: 0, records: 2 });
    for _ in 0..40 {
        run.step(&Op::Plain { records: 3 });
    }
    run.step(&Op::Sync);
    run.step(&Op::Housekeeping { advance_ms: 0 });
    assert!(run.lso > 1, "retention deleted producer 7's only batch (log start {})", run.lso);
    let snapshots = snapshot_offsets(&run.storage);
    assert_eq!(snapshots.first().copied(), Some(run.lso), "the first segment's snapshot stays, older ones go");
    drop(run.log.take());
    run.storage.crash(CrashFault::LoseUnsynced);
    run.log = Some(run.open());
    let retry = run.build(Some(Idem::new(7, 0, 0, 2)), 2);
    let answer = block_on(run.log_mut().append(retry, LeaderEpoch(0))).expect("answered");
    assert!(answer.duplicate && answer.base_offset == Offset(0), "{answer:?}");
    let gap = run.build(Some(Idem::new(7, 0, 5, 1)), 1);
    let answer = block_on(run.log_mut().append(gap, LeaderEpoch(0)));
    assert!(matches!(answer, Err(EngineError::OutOfOrderSequence { .. })), "still checked: {answer:?}");
    run.check("after retention and a crash");
}

#[test]
fn a_damaged_or_missing_snapshot_falls_back_to_an_older_one_or_a_scan() {
    let mut run = Run::new(model_config(500, -1));
    for i in 0..30 {
        run.step(&Op::Next { producer: i % 3, records: 1 + i % 3 });
    }
    run.step(&Op::Sync);
    let expected = engine_state(run.log());
    let log = run.log.take().expect("open");
    block_on(log.close()).expect("close");
    let snapshots = snapshot_offsets(&run.storage);
    assert!(snapshots.len() >= 3, "rolls and the close wrote snapshots: {snapshots:?}");
    let newest = *snapshots.last().expect("some");
    assert_eq!(newest, run.end, "the clean close wrote one at the end");

    // A damaged newest snapshot: the one before it serves, plus a scan after it.
    run.storage.corrupt(&snapshot_path(newest), 20, 0x40);
    run.log = Some(run.open());
    assert_eq!(engine_state(run.log()), expected, "after a damaged snapshot");
    assert!(!snapshot_offsets(&run.storage).contains(&newest), "the damaged snapshot was deleted");

    // No snapshot at all: a scan from the first segment rebuilds the same state.
    drop(run.log.take());
    for offset in snapshot_offsets(&run.storage) {
        block_on(run.storage.remove_file(&snapshot_path(offset))).expect("remove");
    }
    run.log = Some(run.open());
    assert_eq!(engine_state(run.log()), expected, "after losing every snapshot");
    run.check_retries("after losing every snapshot");
}

#[test]
fn truncation_rebuilds_the_state_and_deletes_the_snapshots_above_the_cut() {
    let mut run = Run::new(model_config(400, -1));
    for _ in 0..20 {
        run.step(&Op::Next { producer: 0, records: 2 });
    }
    run.step(&Op::Sync);
    assert!(snapshot_offsets(&run.storage).iter().any(|o| *o > 8), "rolls wrote snapshots past the cut");
    run.truncate(9);
    assert_eq!(run.end, 8, "the batch holding offset 9 starts at 8");
    run.check("after truncation");
    assert!(snapshot_offsets(&run.storage).iter().all(|o| *o <= 8));
    // The first batch cut away is no retry any more but the next batch; a batch that
    // stayed still is a retry.
    assert_eq!(run.produce(vec![(Some(Idem::new(7, 0, 8, 2)), 2)]), Expect::Append);
    assert_eq!(run.produce(vec![(Some(Idem::new(7, 0, 6, 2)), 2)]), Expect::Duplicate { base: 6, last: 7 });
    run.crash(CrashFault::LoseUnsynced);
}
