//! Model-based property tests of [`PartitionLog`] over the simulated disk.
//!
//! Random sequences of append / read / list-offsets / roll / housekeeping (retention
//! by bytes and by time) / delete-records / truncate / truncate fully and start at /
//! high-watermark moves / sync / clean close + reopen run against the log and against a plain in-memory model: the
//! batches (base offset, stamped bytes, max timestamp), the segment layout the
//! roll rules imply, the log start offset, the high watermark, the durable
//! offset and the leader-epoch history (appends now and then in a newer epoch), in
//! and out of replicated mode (where only `update_high_watermark` moves the high
//! watermark, up to the written end, here the durable offset, and a reopen restores
//! it from its checkpoint). After every operation the log must agree with the model exactly: offsets,
//! stats, and the bytes of every read. Small `segment.bytes` and
//! `index.interval.bytes` make rolls and sparse-index lookups happen all the time.
//!
//! The unit-style tests at the end check that malformed or oversized batches are
//! refused with a typed error and leave the log exactly as it was.

use std::path::Path;
use std::sync::Arc;

use corelog_engine::batch::{self, BatchError, BatchProducer, RecordSpec};
use corelog_engine::config::{Clock, ManualClock};
use corelog_engine::storage::{SimStorage, Storage};
use corelog_engine::*;
use futures_lite::future::block_on;
use proptest::collection::vec;
use proptest::prelude::*;

const DIR: &str = "/data/model/0";
const T0: i64 = 1_700_000_000_000;

fn partition() -> TopicPartition {
    TopicPartition::new(TopicName::new("model").expect("valid"), PartitionId(0))
}

// ---------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct BatchSpec {
    records: usize,
    value_bytes: usize,
    /// Base timestamp relative to the clock (producers' clocks disagree).
    ts_delta: i64,
    /// Spread of the record timestamps inside the batch.
    ts_spread: i64,
}

/// A valid, unstamped batch whose key makes its bytes unique (`seq`).
fn make_batch(seq: u64, spec: &BatchSpec, now: i64) -> Vec<u8> {
    let key = seq.to_be_bytes();
    let value = vec![(seq % 251) as u8; spec.value_bytes];
    let records: Vec<RecordSpec<'_>> = (0..spec.records)
        .map(|i| RecordSpec {
            key: Some(&key),
            value: Some(&value),
            timestamp_delta_ms: (i as i64 * spec.ts_spread) / spec.records as i64,
        })
        .collect();
    batch::build_batch(TimestampMs(now + spec.ts_delta), BatchProducer::default(), &records)
}

fn stamped(bytes: &[u8], base: i64, epoch: i32) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    batch::stamp(&mut bytes, Offset(base), LeaderEpoch(epoch));
    bytes
}

// ---------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MBatch {
    base: i64,
    last: i64,
    /// Exactly what the log must serve: the producer's bytes, stamped.
    bytes: Vec<u8>,
    max_ts: i64,
    /// Each record's timestamp, in offset order from `base`.
    record_ts: Vec<i64>,
}

/// The timestamps of an uncompressed batch's records, read the simplest way: the
/// model's own reading, not the engine's.
fn record_timestamps(bytes: &[u8]) -> Vec<i64> {
    fn varint(bytes: &[u8], at: &mut usize) -> i64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return (value >> 1) as i64 ^ -((value & 1) as i64);
            }
        }
    }
    let header = batch::BatchHeader::parse(bytes).expect("built batch");
    let mut at = batch::BATCH_HEADER_BYTES;
    (0..header.record_count)
        .map(|_| {
            let length = varint(bytes, &mut at) as usize;
            let mut inside = at + 1;
            let delta = varint(bytes, &mut inside);
            at += length;
            header.base_timestamp.0 + delta
        })
        .collect()
}

#[derive(Debug, Clone)]
struct MSeg {
    base: i64,
    next: i64,
    size: u64,
    created_at: i64,
    max_ts: Option<i64>,
}

#[derive(Debug)]
struct Model {
    config: TopicConfig,
    /// Every batch of every segment still on disk, in offset order.
    batches: Vec<MBatch>,
    /// Never empty; the last is active.
    segs: Vec<MSeg>,
    lso: i64,
    hw: i64,
    durable: i64,
    /// The appending leader's epoch (it only grows) and the history the log must
    /// hold, by Kafka's `LeaderEpochFileCache` rules: (epoch, start offset).
    epoch: i32,
    epochs: Vec<(i32, i64)>,
    replicated: bool,
}

impl Model {
    fn new(config: TopicConfig, now: i64) -> Model {
        Model {
            config,
            batches: Vec::new(),
            segs: vec![MSeg { base: 0, next: 0, size: 0, created_at: now, max_ts: None }],
            lso: 0,
            hw: 0,
            durable: 0,
            epoch: 0,
            epochs: Vec::new(),
            replicated: false,
        }
    }

    fn end(&self) -> i64 {
        self.segs.last().expect("never empty").next
    }

    fn active(&mut self) -> &mut MSeg {
        self.segs.last_mut().expect("never empty")
    }

    fn roll(&mut self, now: i64) {
        let end = self.end();
        self.durable = end;
        let active = self.active();
        if active.next == active.base {
            // Rolling an empty segment recreates it in place.
            active.created_at = now;
        } else {
            self.segs.push(MSeg { base: end, next: end, size: 0, created_at: now, max_ts: None });
        }
    }

    fn should_roll(&self, incoming: u64, now: i64) -> bool {
        let active = self.segs.last().expect("never empty");
        active.next != active.base
            && (active.size + incoming > self.config.segment_bytes || now - active.created_at >= self.config.segment_ms)
    }

    /// `set` holds unstamped batches. Returns the expected base and last offset.
    fn append(&mut self, set: &[Vec<u8>], epoch: i32, now: i64) -> (i64, i64) {
        let total: u64 = set.iter().map(|b| b.len() as u64).sum();
        if self.should_roll(total, now) {
            self.roll(now);
        }
        let base = self.end();
        if self.epochs.last().is_none_or(|(latest, _)| *latest != epoch) {
            // Kafka's assign: what the new entry contradicts goes.
            self.epochs.retain(|(e, start)| *e < epoch && *start < base);
            self.epochs.push((epoch, base));
        }
        let mut next = base;
        for bytes in set {
            let header = batch::BatchHeader::parse(bytes).expect("built batch");
            let last = next + header.last_offset_delta as i64;
            let max_ts = header.max_timestamp.0;
            let record_ts = record_timestamps(bytes);
            self.batches.push(MBatch { base: next, last, bytes: stamped(bytes, next, epoch), max_ts, record_ts });
            let active = self.active();
            active.size += bytes.len() as u64;
            active.next = last + 1;
            active.max_ts = Some(active.max_ts.map_or(max_ts, |m| m.max(max_ts)));
            next = last + 1;
        }
        (base, next - 1)
    }

    /// The log start moved to `start`: Kafka's `truncateFromStart`.
    fn epochs_from_start(&mut self, start: i64) {
        let below = self.epochs.iter().take_while(|(_, s)| *s <= start).count();
        if below > 0 {
            let holding = self.epochs[below - 1].0;
            self.epochs.drain(..below);
            self.epochs.insert(0, (holding, start));
        }
    }

    fn drop_first_segment(&mut self) {
        let seg = self.segs.remove(0);
        self.batches.retain(|b| b.base >= seg.next);
    }

    fn housekeeping(&mut self, now: i64) -> usize {
        if self.should_roll(0, now) {
            self.roll(now);
        }
        let retention_bytes = self.config.retention_bytes;
        let retention_ms = self.config.retention_ms;
        let mut size: u64 = self.segs.iter().map(|s| s.size).sum();
        let mut deleted = 0;
        loop {
            let seg = &self.segs[0];
            let active = self.segs.len() == 1;
            if active && seg.next == seg.base {
                break;
            }
            let remaining = size - seg.size;
            let too_big = retention_bytes >= 0 && remaining >= retention_bytes as u64;
            let newest = seg.max_ts.unwrap_or(seg.created_at);
            let too_old = retention_ms >= 0 && now - newest > retention_ms;
            // Kafka only deletes segments wholly below the high watermark: records a
            // consumer has not been allowed to see are not deleted under it.
            let below_hw = seg.next <= self.hw;
            if !((too_big || too_old) && below_hw) {
                break;
            }
            if active {
                // The active segment goes too, as in Kafka: rolled first, so the log
                // keeps an empty segment at its end.
                self.roll(now);
            }
            size = remaining;
            self.drop_first_segment();
            deleted += 1;
        }
        if self.segs[0].base > self.lso {
            self.lso = self.segs[0].base;
            self.epochs_from_start(self.lso);
        }
        deleted
    }

    fn delete_records(&mut self, offset: i64) -> Option<i64> {
        if offset > self.hw || offset < 0 {
            return None;
        }
        if offset > self.lso {
            self.lso = offset;
            self.epochs_from_start(offset);
            while self.segs.len() > 1 && self.segs[0].next <= offset {
                self.drop_first_segment();
            }
        }
        Some(self.lso)
    }

    fn truncate(&mut self, offset: i64, now: i64) {
        let offset = offset.max(self.lso);
        if offset >= self.end() {
            return;
        }
        let cut = self.batches.iter().find(|b| b.base <= offset && offset <= b.last).expect("offset is stored").base;
        self.batches.retain(|b| b.base < cut);
        self.segs.retain(|s| s.base <= offset);
        let (base, batches) = (self.segs.last().expect("kept").base, &self.batches);
        let kept: Vec<&MBatch> = batches.iter().filter(|b| b.base >= base).collect();
        let size = kept.iter().map(|b| b.bytes.len() as u64).sum();
        let max_ts = kept.iter().map(|b| b.max_ts).max();
        let active = self.active();
        active.next = cut;
        active.size = size;
        active.max_ts = max_ts;
        if self.end() < self.lso {
            // Everything left is below the log start offset: the log restarts empty
            // there, so no offset below it is ever handed out again.
            let lso = self.lso;
            self.batches.clear();
            self.segs = vec![MSeg { base: lso, next: lso, size: 0, created_at: now, max_ts: None }];
            self.epochs.clear();
        }
        let end = self.end();
        self.epochs.retain(|(_, s)| *s < end);
        self.hw = self.hw.min(end).max(self.lso);
        // Truncation syncs what it keeps.
        self.durable = end;
    }

    /// Kafka's `truncateFullyAndStartAt`: everything goes and the log starts empty
    /// at `offset`, below the log start too. False: refused, a negative offset.
    fn truncate_fully_and_start_at(&mut self, offset: i64, now: i64) -> bool {
        if offset < 0 {
            return false;
        }
        self.batches.clear();
        self.segs = vec![MSeg { base: offset, next: offset, size: 0, created_at: now, max_ts: None }];
        self.epochs.clear();
        self.lso = offset;
        self.hw = offset;
        self.durable = offset;
        true
    }

    fn set_hw(&mut self, offset: i64) {
        self.hw = offset.min(self.end()).max(self.lso);
    }

    fn reopen(&mut self, now: i64) {
        for seg in &mut self.segs {
            seg.created_at = now;
        }
        if !self.replicated {
            self.hw = self.end();
        }
        // In replicated mode the clean close checkpointed the high watermark, and the
        // open restores it.
        self.durable = self.end();
        // The open cuts the history to the log, start first.
        self.epochs_from_start(self.lso);
        let end = self.end();
        self.epochs.retain(|(_, s)| *s < end);
    }

    /// `None`: OffsetOutOfRange. Otherwise the bytes and next offset of the read.
    fn read(&self, offset: i64, max_bytes: usize, limit: Option<i64>) -> Option<(Vec<u8>, i64)> {
        let end = self.end();
        if offset < self.lso || offset > end {
            return None;
        }
        let limit = limit.unwrap_or(self.hw).min(end);
        let Some(first) = self.batches.iter().position(|b| b.base <= offset && offset <= b.last) else {
            return Some((Vec::new(), offset));
        };
        let seg = self.segs.iter().find(|s| s.base <= self.batches[first].base && self.batches[first].base < s.next);
        let seg_next = seg.expect("every batch is in a segment").next;
        let mut bytes = Vec::new();
        let mut next = offset;
        for b in &self.batches[first..] {
            if b.base >= seg_next || b.base >= limit {
                break;
            }
            if !bytes.is_empty() && bytes.len() + b.bytes.len() > max_bytes {
                break;
            }
            bytes.extend_from_slice(&b.bytes);
            next = b.last + 1;
        }
        Some((bytes, next))
    }

    /// The first record at or past the log start whose timestamp reaches `t`.
    fn offset_for_timestamp(&self, t: i64) -> Option<(i64, i64)> {
        let (offset, ts) = self.batches.iter().find_map(|b| {
            let mut records = b.record_ts.iter().enumerate().map(|(i, ts)| (b.base + i as i64, *ts));
            records.find(|(offset, ts)| *offset >= self.lso && *ts >= t)
        })?;
        (offset < self.hw).then_some((offset, ts))
    }

    /// The first record holding the largest timestamp of the batches on disk.
    fn max_timestamp(&self) -> Option<(i64, i64)> {
        let max = self.batches.iter().map(|b| b.max_ts).max()?;
        let (offset, ts) = self.batches.iter().find_map(|b| {
            let mut records = b.record_ts.iter().enumerate().map(|(i, ts)| (b.base + i as i64, *ts));
            records.find(|(_, ts)| *ts == max)
        })?;
        (offset < self.hw).then_some((offset, ts))
    }
}

// ---------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------

fn check_state(log: &PartitionLog<SimStorage>, model: &Model, what: &str) {
    let stats = log.stats();
    let expected_size: u64 = model.segs.iter().map(|s| s.size).sum();
    assert_eq!(stats.log_end_offset, Offset(model.end()), "{what}: log end; {stats:?}");
    assert_eq!(stats.log_start_offset, Offset(model.lso), "{what}: log start; {stats:?}");
    assert_eq!(stats.high_watermark, Offset(model.hw), "{what}: high watermark; {stats:?}");
    assert_eq!(stats.durable_offset, Offset(model.durable), "{what}: durable offset; {stats:?}");
    assert_eq!(stats.segment_count, model.segs.len(), "{what}: segment count; model {:?}; {stats:?}", model.segs);
    assert_eq!(stats.size_bytes, expected_size, "{what}: size; model {:?}; {stats:?}", model.segs);
    assert_eq!(stats.poisoned, None, "{what}");
    let epochs: Vec<(i32, i64)> = stats.leader_epochs.entries().iter().map(|e| (e.epoch.0, e.start_offset.0)).collect();
    assert_eq!(epochs, model.epochs, "{what}: leader epochs");
}

async fn check_read(
    log: &PartitionLog<SimStorage>,
    model: &Model,
    offset: i64,
    max_bytes: usize,
    limit: Option<i64>,
    what: &str,
) -> Option<i64> {
    let actual = log.read(Offset(offset), max_bytes, limit.map(Offset)).await;
    match (model.read(offset, max_bytes, limit), actual) {
        (None, Err(EngineError::OffsetOutOfRange { requested, log_start_offset, log_end_offset })) => {
            assert_eq!(requested, Offset(offset), "{what}");
            assert_eq!(log_start_offset, Offset(model.lso), "{what}");
            assert_eq!(log_end_offset, Offset(model.end()), "{what}");
            None
        }
        (None, other) => panic!("{what}: read at {offset} should be out of range, got {other:?}"),
        (Some(_), Err(error)) => panic!("{what}: read at {offset} (max {max_bytes}, limit {limit:?}) failed: {error}"),
        (Some((bytes, next)), Ok(read)) => {
            if read.bytes != bytes {
                panic!(
                    "{what}: read at {offset} (max {max_bytes}, limit {limit:?}) served batches {:?}, model has {:?}",
                    describe(&read.bytes),
                    describe(&bytes)
                );
            }
            assert_eq!(read.next_offset, Offset(next), "{what}: next offset of read at {offset}");
            assert_eq!(read.log_start_offset, Offset(model.lso), "{what}");
            assert_eq!(read.log_end_offset, Offset(model.end()), "{what}");
            assert_eq!(read.high_watermark, Offset(model.hw), "{what}");
            Some(next)
        }
    }
}

/// (base offset, size) of each batch in a read, for failure messages.
fn describe(bytes: &[u8]) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(header) = batch::BatchHeader::parse(&bytes[at..]) {
        out.push((header.base_offset.0, header.size_bytes()));
        at += header.size_bytes();
        if at >= bytes.len() {
            break;
        }
    }
    out
}

/// Reads the whole log from its start, as a consumer would, comparing each read.
async fn check_all_reads(log: &PartitionLog<SimStorage>, model: &Model, max_bytes: usize, what: &str) {
    let end = model.end();
    let mut offset = model.lso;
    while offset < end {
        let next = check_read(log, model, offset, max_bytes, Some(end), what).await.expect("in range");
        assert!(next > offset, "{what}: read at {offset} made no progress");
        offset = next;
    }
    let at_end = log.read(Offset(end), max_bytes, Some(Offset(end))).await.expect("read at the end");
    assert!(at_end.bytes.is_empty() && at_end.next_offset == Offset(end), "{what}: read at the end: {at_end:?}");
}

/// Every read a consumer could make from a batch boundary, for comparing a log with
/// itself across a reopen.
async fn snapshot(log: &PartitionLog<SimStorage>) -> Vec<(i64, usize, Vec<u8>, Offset, Offset, Offset)> {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let mut out = Vec::new();
    let mut offsets = vec![start.0];
    let mut offset = start;
    while offset < end {
        let read = log.read(offset, 1, Some(end)).await.expect("read");
        offset = read.next_offset;
        offsets.push(offset.0);
    }
    for offset in offsets {
        for max_bytes in [0, 700, 1 << 20] {
            let read = log.read(Offset(offset), max_bytes, Some(end)).await.expect("read");
            out.push((offset, max_bytes, read.bytes, read.next_offset, read.log_start_offset, read.log_end_offset));
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// In the leader's epoch, one higher with `new_epoch`.
    Append {
        batches: Vec<BatchSpec>,
        new_epoch: bool,
        advance_hw: bool,
    },
    Read {
        at: u32,
        max_bytes: u32,
        limit: Option<u32>,
    },
    ListByTime {
        pick: u32,
        jitter: i64,
    },
    ListEnds,
    Roll,
    Advance {
        ms: i64,
    },
    Housekeeping,
    SetRetention {
        bytes: Option<u32>,
        ms: Option<u32>,
    },
    DeleteRecords {
        at: u32,
    },
    Truncate {
        at: u32,
    },
    TruncateFullyAndStartAt {
        at: u32,
    },
    SetHighWatermark {
        pick: u32,
    },
    SetReplicated {
        on: bool,
    },
    /// The broker's move in replicated mode.
    UpdateHighWatermark {
        pick: u32,
    },
    Sync,
    Reopen,
}

#[derive(Debug, Clone)]
struct Case {
    segment_bytes: u64,
    index_interval_bytes: u32,
    segment_ms: i64,
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (1usize..=5, prop_oneof![4 => 0usize..120, 1 => 120usize..700], -3000i64..3000, 0i64..400)
        .prop_map(|(records, value_bytes, ts_delta, ts_spread)| BatchSpec { records, value_bytes, ts_delta, ts_spread })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => (vec(batch_spec(), 1..=3), proptest::bool::weighted(0.15), proptest::bool::weighted(0.85))
            .prop_map(|(batches, new_epoch, advance_hw)| Op::Append { batches, new_epoch, advance_hw }),
        5 => (any::<u32>(), 0u32..3000, proptest::option::of(any::<u32>()))
            .prop_map(|(at, max_bytes, limit)| Op::Read { at, max_bytes, limit }),
        4 => (any::<u32>(), -2i64..=2).prop_map(|(pick, jitter)| Op::ListByTime { pick, jitter }),
        1 => Just(Op::ListEnds),
        2 => Just(Op::Roll),
        2 => (0i64..8000).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Housekeeping),
        1 => (proptest::option::of(0u32..6000), proptest::option::of(500u32..20_000))
            .prop_map(|(bytes, ms)| Op::SetRetention { bytes, ms }),
        2 => any::<u32>().prop_map(|at| Op::DeleteRecords { at }),
        1 => any::<u32>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u32>().prop_map(|at| Op::TruncateFullyAndStartAt { at }),
        1 => any::<u32>().prop_map(|pick| Op::SetHighWatermark { pick }),
        1 => any::<bool>().prop_map(|on| Op::SetReplicated { on }),
        2 => any::<u32>().prop_map(|pick| Op::UpdateHighWatermark { pick }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (200u64..4000, 0u32..2000, prop_oneof![2 => Just(1i64 << 50), 1 => 3000i64..40_000]).prop_map(
        |(segment_bytes, index_interval_bytes, segment_ms)| Case { segment_bytes, index_interval_bytes, segment_ms },
    )
}

/// `lo + sel mod (hi - lo + 1)`.
fn pick(sel: u32, lo: i64, hi: i64) -> i64 {
    lo + (sel as i64).rem_euclid(hi - lo + 1)
}

async fn open(storage: &SimStorage, config: &TopicConfig, clock: &Arc<ManualClock>) -> PartitionLog<SimStorage> {
    let (log, _) = PartitionLog::open(storage.clone(), Path::new(DIR), partition(), config.clone(), clock.clone())
        .await
        .expect("open");
    log
}

async fn run_case(case: Case, ops: Vec<Op>) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(TimestampMs(T0));
    let config = TopicConfig {
        segment_bytes: case.segment_bytes,
        index_interval_bytes: case.index_interval_bytes,
        segment_ms: case.segment_ms,
        retention_bytes: -1,
        retention_ms: -1,
        ..TopicConfig::default()
    };
    let mut log = open(&storage, &config, &clock).await;
    let mut model = Model::new(config.clone(), T0);
    let mut seq = 0u64;
    check_state(&log, &model, "after open");

    for (step, op) in ops.into_iter().enumerate() {
        let now = clock.now_ms().0;
        let what = format!("step {step} {op:?}");
        match op {
            Op::Append { batches, new_epoch, advance_hw } => {
                model.epoch += i32::from(new_epoch);
                let epoch = model.epoch;
                let set: Vec<Vec<u8>> = batches
                    .iter()
                    .map(|spec| {
                        seq += 1;
                        make_batch(seq, spec, now)
                    })
                    .collect();
                let (base, last) = model.append(&set, epoch, now);
                let info = log.append(set.concat(), LeaderEpoch(epoch)).await.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!((info.base_offset, info.last_offset), (Offset(base), Offset(last)), "{what}");
                assert_eq!(info.batch_count, set.len(), "{what}");
                assert_eq!(info.log_append_time, TimestampMs(now), "{what}");
                assert_eq!(info.log_end_offset, Offset(model.durable), "{what}: the written end it vouches for");
                if advance_hw && !model.replicated {
                    log.set_high_watermark(log.log_end_offset());
                    model.set_hw(model.end());
                }
            }
            Op::Read { at, max_bytes, limit } => {
                let offset = pick(at, model.lso - 2, model.end() + 2);
                let limit = limit.map(|l| pick(l, model.lso - 1, model.end() + 1));
                check_read(&log, &model, offset, max_bytes as usize, limit, &what).await;
                check_read(&log, &model, offset, max_bytes as usize, None, &what).await;
            }
            Op::ListByTime { pick: sel, jitter } => {
                let t = if !model.batches.is_empty() && sel % 4 != 0 {
                    model.batches[sel as usize % model.batches.len()].max_ts + jitter
                } else {
                    now + pick(sel, -12_000, 12_000)
                };
                let actual = log
                    .list_offset(OffsetSpec::Timestamp(TimestampMs(t), Isolation::ReadUncommitted))
                    .await
                    .expect("list offset");
                let expected = model.offset_for_timestamp(t).map(|(o, ts)| (Offset(o), TimestampMs(ts)));
                assert_eq!(actual, expected, "{what}: offset for timestamp {t}; batches {:?}", timeline(&model));
            }
            Op::ListEnds => {
                let earliest = log.list_offset(OffsetSpec::Earliest).await.expect("earliest");
                let latest = log.list_offset(OffsetSpec::Latest).await.expect("latest");
                assert_eq!(earliest, Some((Offset(model.lso), TimestampMs(-1))), "{what}");
                assert_eq!(latest, Some((Offset(model.hw), TimestampMs(-1))), "{what}");
                let max = log.list_offset(OffsetSpec::MaxTimestamp(Isolation::ReadUncommitted)).await.expect("max");
                let expected = model.max_timestamp().map(|(o, ts)| (Offset(o), TimestampMs(ts)));
                assert_eq!(max, expected, "{what}: max timestamp; batches {:?}", timeline(&model));
            }
            Op::Roll => {
                log.roll().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                model.roll(now);
            }
            Op::Advance { ms } => clock.advance_ms(ms),
            Op::Housekeeping => {
                let deleted = log.housekeeping().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                let segs_before = model.segs.clone();
                let expected = model.housekeeping(now);
                assert_eq!(deleted, expected, "{what}: segments deleted; model before {segs_before:?}");
            }
            Op::SetRetention { bytes, ms } => {
                model.config.retention_bytes = bytes.map_or(-1, i64::from);
                model.config.retention_ms = ms.map_or(-1, i64::from);
                log.set_config(model.config.clone());
            }
            Op::DeleteRecords { at } => {
                let offset = pick(at, model.lso - 1, model.hw + 1);
                let actual = log.delete_records(Offset(offset)).await;
                match (model.delete_records(offset), actual) {
                    (Some(lso), Ok(actual)) => assert_eq!(actual, Offset(lso), "{what}: delete records to {offset}"),
                    (None, Err(EngineError::OffsetOutOfRange { .. })) => {}
                    (expected, actual) => panic!("{what}: delete records to {offset}: {actual:?}, model {expected:?}"),
                }
            }
            Op::Truncate { at } => {
                let offset = pick(at, model.lso - 2, model.end() + 1);
                log.truncate_to(Offset(offset)).await.unwrap_or_else(|e| panic!("{what}: truncate to {offset}: {e}"));
                model.truncate(offset, now);
            }
            Op::TruncateFullyAndStartAt { at } => {
                let offset = pick(at, -2, model.end() + 40);
                let restarted = log.truncate_fully_and_start_at(Offset(offset)).await;
                match (model.truncate_fully_and_start_at(offset, now), restarted) {
                    (true, Ok(())) => {}
                    (false, Err(EngineError::OffsetOutOfRange { .. })) => {}
                    (expected, actual) => panic!("{what}: truncate fully at {offset}: {actual:?}, model {expected}"),
                }
            }
            Op::SetHighWatermark { pick: sel } => {
                // The high watermark sits on batch boundaries (it follows appends or
                // syncs), at or above the log start.
                let mut boundaries: Vec<i64> =
                    model.batches.iter().map(|b| b.last + 1).filter(|o| *o >= model.lso).collect();
                boundaries.push(model.end());
                let offset = boundaries[sel as usize % boundaries.len()];
                log.set_high_watermark(Offset(offset));
                model.set_hw(offset);
            }
            Op::SetReplicated { on } => {
                log.set_replicated(on).await.unwrap_or_else(|e| panic!("{what}: {e}"));
                model.replicated = on;
                if !on {
                    // What the partition actor does on leaving replicated mode.
                    log.advance_high_watermark(log.local_end_offset());
                    model.hw = model.hw.max(model.durable.max(model.lso));
                }
            }
            Op::UpdateHighWatermark { pick: sel } => {
                let offset = pick(sel, model.lso - 2, model.end() + 2);
                match (log.update_high_watermark(Offset(offset)), model.replicated) {
                    (Ok(hw), true) => {
                        model.hw = offset.min(model.durable).max(model.lso);
                        assert_eq!(hw, Offset(model.hw), "{what}");
                    }
                    (Err(EngineError::NotReplicated { .. }), false) => {}
                    (other, replicated) => panic!("{what}: {other:?} (replicated {replicated})"),
                }
            }
            Op::Sync => {
                let synced = log.sync().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(synced, Offset(model.end()), "{what}");
                model.durable = model.end();
            }
            Op::Reopen => {
                let before = snapshot(&log).await;
                log.close().await.unwrap_or_else(|e| panic!("{what}: close: {e}"));
                let (reopened, report) = PartitionLog::open(
                    storage.clone(),
                    Path::new(DIR),
                    partition(),
                    model.config.clone(),
                    clock.clone(),
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                log = reopened;
                assert_eq!(report.bytes_truncated, 0, "{what}: a clean reopen truncated: {report:?}");
                assert!(!report.indexes_rebuilt, "{what}: a clean reopen rebuilt indexes: {report:?}");
                model.reopen(now);
                let after = snapshot(&log).await;
                assert!(before == after, "{what}: reads differ after a clean reopen");
            }
        }
        check_state(&log, &model, &what);
        let max_bytes = [0usize, 150, 900, 1 << 20][step % 4];
        check_all_reads(&log, &model, max_bytes, &what).await;
    }
    log.close().await.expect("close");
}

fn timeline(model: &Model) -> Vec<(i64, i64)> {
    model.batches.iter().map(|b| (b.base, b.max_ts)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model(case in case(), ops in vec(op(), 1..90)) {
        block_on(run_case(case, ops));
    }
}

// ---------------------------------------------------------------------------------
// Malformed and oversized batches
// ---------------------------------------------------------------------------------

/// Sizes of every file of the log, and every read from its start.
async fn fingerprint(
    storage: &SimStorage,
    log: &PartitionLog<SimStorage>,
) -> (Vec<(String, u64)>, Vec<u8>, PartitionStats) {
    let dir = Path::new(DIR);
    let names = storage.list_dir(dir).await.expect("list");
    let sizes = names.into_iter().map(|n| (n.clone(), storage.file_len(&dir.join(&n)).unwrap_or(0))).collect();
    let mut all = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, Some(log.log_end_offset())).await.expect("read");
        all.extend_from_slice(&read.bytes);
        offset = read.next_offset;
    }
    (sizes, all, log.stats())
}

fn crc_fixed(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn malformed_batches_are_rejected_and_nothing_is_written() {
    block_on(async {
        let storage = SimStorage::new();
        let clock = ManualClock::new(TimestampMs(T0));
        let config = TopicConfig { segment_bytes: 600, index_interval_bytes: 100, ..TopicConfig::default() };
        let mut log = open(&storage, &config, &clock).await;
        for i in 0..12 {
            log.append(batch::build_value_batch(TimestampMs(T0 + i), 2, 40), LeaderEpoch(1)).await.expect("append");
        }
        log.set_high_watermark(log.log_end_offset());
        let before = fingerprint(&storage, &log).await;
        assert!(before.2.segment_count > 1, "{:?}", before.2);

        let good = batch::build_value_batch(TimestampMs(T0), 3, 30);
        let n = good.len();
        let mut bad_crc = good.clone();
        bad_crc[n - 1] ^= 0x40;
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        let mut magic_zero_crc_ok = good.clone();
        magic_zero_crc_ok[16] = 0;
        let mut bad_count = good.clone();
        bad_count[57..61].copy_from_slice(&9i32.to_be_bytes());
        let bad_count = crc_fixed(bad_count);
        let mut negative_delta = good.clone();
        negative_delta[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        let negative_delta = crc_fixed(negative_delta);
        let mut long_length = good.clone();
        long_length[8..12].copy_from_slice(&((n - 12 + 5) as i32).to_be_bytes());
        let mut tiny_length = good.clone();
        tiny_length[8..12].copy_from_slice(&10i32.to_be_bytes());
        let mut trailing_short = good.clone();
        trailing_short.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let mut trailing_zeros = good.clone();
        trailing_zeros.extend_from_slice(&[0u8; 100]);
        let mut good_then_bad = good.clone();
        good_then_bad.extend_from_slice(&bad_crc);
        let mut good_then_truncated = good.clone();
        good_then_truncated.extend_from_slice(&good[..n - 3]);

        type Check = fn(&BatchError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", Vec::new(), |e| matches!(e, BatchError::TooShort { len_bytes: 0 })),
            ("bad crc", bad_crc.clone(), |e| matches!(e, BatchError::CrcMismatch { .. })),
            ("magic 1", bad_magic, |e| *e == BatchError::UnsupportedMagic(1)),
            ("magic 0", magic_zero_crc_ok, |e| *e == BatchError::UnsupportedMagic(0)),
            ("record count past last offset delta", bad_count, |e| matches!(e, BatchError::BadRecordCount { .. })),
            ("negative last offset delta", negative_delta, |e| matches!(e, BatchError::BadRecordCount { .. })),
            ("truncated header", good[..40].to_vec(), |e| matches!(e, BatchError::TooShort { len_bytes: 40 })),
            ("truncated body", good[..n - 1].to_vec(), |e| matches!(e, BatchError::LengthMismatch { .. })),
            ("length past the end", long_length, |e| matches!(e, BatchError::LengthMismatch { .. })),
            ("length below a header", tiny_length, |e| matches!(e, BatchError::LengthMismatch { .. })),
            ("trailing garbage", trailing_short, |e| matches!(e, BatchError::TooShort { len_bytes: 4 })),
            ("trailing zeros", trailing_zeros, |e| matches!(e, BatchError::LengthMismatch { .. })),
            ("good then bad crc", good_then_bad, |e| matches!(e, BatchError::CrcMismatch { .. })),
            ("good then truncated", good_then_truncated, |e| matches!(e, BatchError::LengthMismatch { .. })),
        ];
        for (name, bytes, expected) in cases {
            match log.append(bytes, LeaderEpoch(1)).await {
                Err(EngineError::InvalidBatch(error)) => assert!(expected(&error), "{name}: wrong error {error:?}"),
                other => panic!("{name}: expected an invalid-batch error, got {other:?}"),
            }
            let after = fingerprint(&storage, &log).await;
            assert!(after == before, "{name}: the rejected append changed the log: {:?} vs {:?}", after.2, before.2);
        }

        // The log still works, and the good batch lands right at the old end.
        let end = log.log_end_offset();
        let info = log.append(good.clone(), LeaderEpoch(1)).await.expect("append after rejections");
        assert_eq!(info.base_offset, end);
        log.set_high_watermark(log.log_end_offset());
        let read = log.read(end, 1 << 20, None).await.expect("read");
        assert_eq!(&read.bytes[16..], &good[16..]);
        // And all of it survives a clean reopen.
        let expected = fingerprint(&storage, &log).await.1;
        log.close().await.expect("close");
        let log = open(&storage, &config, &clock).await;
        assert_eq!(fingerprint(&storage, &log).await.1, expected);
    });
}

/// A batch of one record whose total size is exactly `size_bytes`.
fn batch_of_size(size_bytes: usize) -> Vec<u8> {
    for value_bytes in 0..size_bytes {
        let bytes = batch::build_value_batch(TimestampMs(T0), 1, value_bytes);
        if bytes.len() == size_bytes {
            return bytes;
        }
        assert!(bytes.len() < size_bytes, "no batch of exactly {size_bytes} bytes");
    }
    unreachable!()
}

#[test]
fn batches_over_max_message_bytes_are_rejected_and_nothing_is_written() {
    block_on(async {
        let storage = SimStorage::new();
        let clock = ManualClock::new(TimestampMs(T0));
        let config = TopicConfig { max_message_bytes: 1000, segment_bytes: 2500, ..TopicConfig::default() };
        let mut log = open(&storage, &config, &clock).await;
        for _ in 0..4 {
            log.append(batch::build_value_batch(TimestampMs(T0), 2, 200), LeaderEpoch(0)).await.expect("append");
        }
        log.set_high_watermark(log.log_end_offset());
        let before = fingerprint(&storage, &log).await;

        let too_big = batch_of_size(1001);
        match log.append(too_big.clone(), LeaderEpoch(0)).await {
            Err(EngineError::BatchTooLarge { size_bytes: 1001, size_bytes_max: 1000 }) => {}
            other => panic!("expected BatchTooLarge, got {other:?}"),
        }
        assert!(fingerprint(&storage, &log).await == before, "an oversized batch changed the log");

        // One oversized batch in a record set rejects the whole set.
        let mut set = batch::build_value_batch(TimestampMs(T0), 1, 10);
        set.extend_from_slice(&too_big);
        match log.append(set, LeaderEpoch(0)).await {
            Err(EngineError::BatchTooLarge { size_bytes: 1001, .. }) => {}
            other => panic!("expected BatchTooLarge, got {other:?}"),
        }
        assert!(fingerprint(&storage, &log).await == before, "a set with an oversized batch changed the log");

        // The limit is per batch and inclusive.
        let end = log.log_end_offset();
        let info = log.append(batch_of_size(1000), LeaderEpoch(0)).await.expect("a batch of exactly the limit");
        assert_eq!(info.base_offset, end);
        let mut two = batch_of_size(900);
        two.extend_from_slice(&batch_of_size(900));
        let info = log.append(two, LeaderEpoch(0)).await.expect("a set larger than the limit, of small batches");
        assert_eq!((info.base_offset, info.batch_count), (end.next(), 2));
    });
}
