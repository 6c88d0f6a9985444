//! The log cleaner on the simulated disk: a property test against a model of what
//! compaction keeps, and the rules for tombstones, idempotent producers and
//! transactions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures_lite::future::block_on;
use proptest::prelude::*;

use corelog_engine::batch::{self, BatchProducer, RecordSpec, TxnMarker, TxnOutcome, BATCH_HEADER_BYTES};
use corelog_engine::cleaner::{CleanStep, CleanerLimits, CleanerStats};
use corelog_engine::config::{CleanupPolicy, ManualClock};
use corelog_engine::log::PartitionLog;
use corelog_engine::records;
use corelog_engine::storage::{CrashFault, SimStorage, Storage};
use corelog_engine::types::{LeaderEpoch, Offset, PartitionId, ProducerEpoch, ProducerId, TimestampMs, TopicName};
use corelog_engine::{EngineError, TopicConfig, TopicPartition};

const DIR: &str = "/data/compacted/0";
const T0: TimestampMs = TimestampMs(1_700_000_000_000);
const EPOCH: LeaderEpoch = LeaderEpoch(0);
const DAY_MS: i64 = 24 * 3600 * 1000;

fn compacted_config(segment_bytes: u64) -> TopicConfig {
    TopicConfig {
        segment_bytes,
        index_interval_bytes: 128,
        cleanup_policy: CleanupPolicy { compact: true, delete: false },
        ..TopicConfig::default()
    }
}

fn open(storage: &SimStorage, config: &TopicConfig, clock: &Arc<ManualClock>) -> PartitionLog<SimStorage> {
    let partition = TopicPartition::new(TopicName::new("compacted").expect("valid"), PartitionId(0));
    let opened = PartitionLog::open(storage.clone(), Path::new(DIR), partition, config.clone(), clock.clone());
    block_on(opened).expect("open").0
}

/// A record as the model and a read see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

/// `batch` with its records compressed by `codec` (attribute bits 0-2) and a
/// fresh length and CRC.
fn compressed(batch: &[u8], codec: i16) -> Vec<u8> {
    let records = &batch[BATCH_HEADER_BYTES..];
    let body = records::compress(codec, records).expect("compressed");
    let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
    out.extend_from_slice(&body);
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Every record the log serves from its start to its high watermark, checking
/// that offsets increase and that a read at any offset of a gap lands on the next
/// batch.
fn read_all(log: &PartitionLog<SimStorage>) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let read = block_on(log.read(offset, 1 << 20, None)).expect("read");
        assert!(read.next_offset > offset, "a read below the high watermark at {offset} makes progress");
        for (position, header) in batch::split_batches(&read.bytes).expect("valid batches") {
            assert!(header.base_offset >= offset || position == 0, "batches in offset order");
            let whole = &read.bytes[position..position + header.size_bytes()];
            for record in records::decode_records(whole, 1 << 30).expect("records decode") {
                assert!(seen.last().is_none_or(|last: &Seen| last.offset < record.offset.0), "offsets increase");
                if record.offset >= offset && !header.is_control() {
                    seen.push(Seen {
                        offset: record.offset.0,
                        key: record.key,
                        value: record.value,
                        timestamp: record.timestamp.0,
                    });
                }
            }
        }
        offset = read.next_offset;
    }
    seen
}

/// What compaction up to `cleaned_end` leaves of `appended`: below it, each key's
/// latest record below it (tombstones too: the tests keep them, their horizon far
/// away) and no record without a key; from it on, everything.
fn expected(appended: &[Seen], cleaned_end: i64) -> Vec<Seen> {
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for record in appended.iter().filter(|r| r.offset < cleaned_end) {
        if let Some(key) = &record.key {
            latest.insert(key.clone(), record.offset);
        }
    }
    appended
        .iter()
        .filter(|r| r.offset >= cleaned_end || r.key.as_ref().is_some_and(|key| latest.get(key) == Some(&r.offset)))
        .cloned()
        .collect()
}

/// Syncs and moves the high watermark to the log end (a single replica's log).
fn visible(log: &mut PartitionLog<SimStorage>) {
    block_on(log.sync()).expect("sync");
    let end = log.log_end_offset();
    log.set_high_watermark(end);
}

fn clean(log: &mut PartitionLog<SimStorage>) -> Option<CleanerStats> {
    block_on(log.clean(&CleanerLimits::default())).expect("clean")
}

fn checkpoint(log: &PartitionLog<SimStorage>) -> i64 {
    log.cleaner_checkpoint().map_or(0, |o| o.0)
}

#[derive(Debug, Clone)]
enum Op {
    /// Records of (key index or none, tombstone) in one batch, compressed with a codec.
    Append {
        records: Vec<(Option<u8>, bool)>,
        codec: i16,
    },
    Roll,
    Clean,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (proptest::option::weighted(0.9, 0u8..6), proptest::bool::weighted(0.1));
    prop_oneof![
        6 => (proptest::collection::vec(record, 1..5), 0i16..5).prop_map(|(records, codec)| Op::Append { records, codec }),
        1 => Just(Op::Roll),
        2 => Just(Op::Clean),
        1 => Just(Op::Reopen),
    ]
}

fn run(ops: &[Op]) {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    // Records without a key, which a compacted topic refuses, are in the log as if
    // written before the topic became compacted: appended under `delete` (with no
    // retention), cleaned as the cleaner cleans any log it is given.
    let config = TopicConfig {
        cleanup_policy: CleanupPolicy { delete: true, compact: false },
        retention_ms: -1,
        ..compacted_config(700)
    };
    let mut log = open(&storage, &config, &clock);
    let mut appended: Vec<Seen> = Vec::new();
    let mut sequence = 0u64;
    for op in ops {
        match op {
            Op::Append { records, codec } => {
                let values: Vec<Vec<u8>> = records
                    .iter()
                    .map(|_| {
                        sequence += 1;
                        format!("value-{sequence}").into_bytes()
                    })
                    .collect();
                let keys: Vec<Option<Vec<u8>>> =
                    records.iter().map(|(key, _)| key.map(|k| format!("key-{k}").into_bytes())).collect();
                let specs: Vec<RecordSpec<'_>> = records
                    .iter()
                    .enumerate()
                    .map(|(i, (_, tombstone))| RecordSpec {
                        key: keys[i].as_deref(),
                        value: (!tombstone).then_some(values[i].as_slice()),
                        timestamp_delta_ms: i as i64,
                    })
                    .collect();
                let bytes = compressed(&batch::build_batch(clock.now(), BatchProducer::default(), &specs), *codec);
                let info = block_on(log.append(bytes, EPOCH)).expect("append");
                for (i, spec) in specs.iter().enumerate() {
                    appended.push(Seen {
                        offset: info.base_offset.0 + i as i64,
                        key: spec.key.map(<[u8]>::to_vec),
                        value: spec.value.map(<[u8]>::to_vec),
                        timestamp: clock.now().0 + i as i64,
                    });
                }
                visible(&mut log);
                clock.advance_ms(10);
            }
            Op::Roll => block_on(log.roll()).expect("roll"),
            Op::Clean => {
                clean(&mut log);
            }
            Op::Reopen => {
                block_on(log.close()).expect("close");
                log = open(&storage, &config, &clock);
            }
        }
        assert_eq!(read_all(&log), expected(&appended, checkpoint(&log)), "after {op:?}");
    }
}

trait Now {
    fn now(&self) -> TimestampMs;
}

impl Now for Arc<ManualClock> {
    fn now(&self) -> TimestampMs {
        use corelog_engine::config::Clock;
        self.now_ms()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn after_cleaning_each_key_keeps_its_latest_record_at_its_offset_and_nothing_above_is_lost(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        run(&ops);
    }
}

/// A log of `count` keyed records over few keys, one record a batch, in small segments.
fn keyed_log(storage: &SimStorage, clock: &Arc<ManualClock>, count: usize) -> PartitionLog<SimStorage> {
    let mut log = open(storage, &compacted_config(500), clock);
    for i in 0..count {
        let key = format!("key-{}", i % 3).into_bytes();
        let value = format!("value-{i}").into_bytes();
        let spec = RecordSpec { key: Some(&key), value: Some(&value), timestamp_delta_ms: 0 };
        block_on(log.append(batch::build_batch(clock.now(), BatchProducer::default(), &[spec]), EPOCH))
            .expect("append");
    }
    visible(&mut log);
    log
}

#[test]
fn records_at_or_past_the_high_watermark_are_never_cleaned() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let mut log = keyed_log(&storage, &clock, 40);
    let before = read_all(&log);
    let end = log.log_end_offset();
    log.set_high_watermark(Offset(12));
    let stats = clean(&mut log).expect("a pass");
    assert!(checkpoint(&log) <= 12, "cleaned to {}, past the high watermark", checkpoint(&log));
    assert!(stats.records_removed > 0);
    log.set_high_watermark(end);
    assert_eq!(read_all(&log), expected(&before, checkpoint(&log)));
}

#[test]
fn small_segments_are_merged_into_one_and_offsets_and_timestamps_stay() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let mut log = keyed_log(&storage, &clock, 60);
    let before = read_all(&log);
    let segments_before = log.stats().segment_count;
    let stats = clean(&mut log).expect("a pass");
    assert_eq!(stats.segments_cleaned as usize, segments_before - 1, "every sealed segment");
    assert!(stats.bytes_written < stats.bytes_read);
    assert_eq!(read_all(&log), expected(&before, checkpoint(&log)));
    // The cleaned segments are small now: the next pass merges them.
    let key = b"key-0";
    let spec = RecordSpec { key: Some(key), value: Some(b"newest"), timestamp_delta_ms: 0 };
    block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[spec]), EPOCH)).expect("append");
    block_on(log.roll()).expect("roll");
    visible(&mut log);
    let before = read_all(&log);
    clean(&mut log).expect("a pass");
    let segments_after = log.stats().segment_count;
    assert!(segments_after <= segments_before / 2, "{segments_before} segments, now {segments_after}");
    assert_eq!(read_all(&log), expected(&before, checkpoint(&log)));
    let active_base = segment_bases(&storage).last().copied().expect("a segment");
    assert_eq!(checkpoint(&log), active_base, "cleaned up to the active segment, not into it");
    assert_eq!(read_all(&log), expected(&before, checkpoint(&log)));
    assert_eq!(clean(&mut log), None, "nothing dirty is left until more is appended");
}

#[test]
fn a_tombstone_goes_only_once_delete_retention_has_passed_since_the_pass_that_kept_it() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let config = TopicConfig { delete_retention_ms: DAY_MS, ..compacted_config(300) };
    let mut log = open(&storage, &config, &clock);
    let append = |log: &mut PartitionLog<SimStorage>, key: &[u8], value: Option<&[u8]>| {
        let spec = RecordSpec { key: Some(key), value, timestamp_delta_ms: 0 };
        block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[spec]), EPOCH)).expect("append")
    };
    append(&mut log, b"gone", Some(b"first"));
    let tombstone = append(&mut log, b"gone", None).base_offset;
    for i in 0..20u8 {
        append(&mut log, b"other", Some(&[i; 30]));
    }
    visible(&mut log);
    clean(&mut log).expect("a pass");
    let tombstones = |log: &PartitionLog<SimStorage>| {
        read_all(log).into_iter().filter(|r| r.key.as_deref() == Some(b"gone")).collect::<Vec<_>>()
    };
    assert_eq!(
        tombstones(&log).iter().map(|r| (r.offset, r.value.is_none())).collect::<Vec<_>>(),
        vec![(tombstone.0, true)]
    );
    clock.advance_ms(DAY_MS - 1);
    for i in 0..20u8 {
        append(&mut log, b"other", Some(&[i; 30]));
    }
    visible(&mut log);
    clean(&mut log).expect("a pass");
    assert_eq!(tombstones(&log).len(), 1, "kept until its horizon");
    clock.advance_ms(1);
    for i in 0..20u8 {
        append(&mut log, b"other", Some(&[i; 30]));
    }
    visible(&mut log);
    clean(&mut log).expect("a pass");
    assert!(tombstones(&log).is_empty(), "removed once its horizon passed");
}

#[test]
fn an_idempotent_producers_last_batch_survives_so_its_next_sequence_is_accepted_after_a_rebuild() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&storage, &compacted_config(400), &clock);
    let producer = BatchProducer { producer_id: ProducerId(42), producer_epoch: 0, base_sequence: 0 };
    for sequence in 0..3 {
        let spec = RecordSpec { key: Some(b"k"), value: Some(b"from the producer"), timestamp_delta_ms: 0 };
        let producer = BatchProducer { base_sequence: sequence, ..producer };
        block_on(log.append(batch::build_batch(T0, producer, &[spec]), EPOCH)).expect("append");
    }
    // Later plain writes of the same key supersede every record of the producer.
    for i in 0..30u8 {
        let spec = RecordSpec { key: Some(b"k"), value: Some(&[i; 20]), timestamp_delta_ms: 0 };
        block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[spec]), EPOCH)).expect("append");
    }
    visible(&mut log);
    let stats = clean(&mut log).expect("a pass");
    assert!(stats.records_removed >= 3);
    // Rebuild the producer state from the batch headers alone.
    storage.crash(CrashFault::KeepAll);
    for name in block_on(storage.list_dir(Path::new(DIR))).expect("list") {
        if name.ends_with(".snapshot") {
            block_on(storage.remove_file(&Path::new(DIR).join(name))).expect("remove");
        }
    }
    let mut log = open(&storage, &compacted_config(400), &clock);
    let last = log.producer_state().entry(ProducerId(42)).and_then(|e| e.last_batch().copied());
    assert_eq!(last.map(|b| b.last_sequence.0), Some(2), "the emptied last batch keeps the sequence");
    let spec = RecordSpec { key: Some(b"k"), value: Some(b"next"), timestamp_delta_ms: 0 };
    let next = BatchProducer { base_sequence: 3, ..producer };
    block_on(log.append(batch::build_batch(T0, next, std::slice::from_ref(&spec)), EPOCH)).expect("sequence 3 follows");
    let retry = BatchProducer { base_sequence: 5, ..producer };
    let refused = block_on(log.append(batch::build_batch(T0, retry, &[spec]), EPOCH));
    assert!(matches!(refused, Err(EngineError::OutOfOrderSequence { .. })), "{refused:?}");
}

#[test]
fn aborted_records_go_and_markers_stay_until_their_transaction_is_gone_and_their_horizon_passed() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let config = TopicConfig { delete_retention_ms: DAY_MS, ..compacted_config(400) };
    let mut log = open(&storage, &config, &clock);
    let txn = |log: &mut PartitionLog<SimStorage>, producer: i64, sequence: i32, key: &[u8]| {
        let spec = RecordSpec { key: Some(key), value: Some(b"transactional"), timestamp_delta_ms: 0 };
        let producer = BatchProducer { producer_id: ProducerId(producer), producer_epoch: 0, base_sequence: sequence };
        block_on(log.append(batch::build_transactional_batch(T0, producer, &[spec]), EPOCH))
            .expect("append")
            .base_offset
    };
    let marker = |log: &mut PartitionLog<SimStorage>, producer: i64, outcome| {
        let marker = TxnMarker { outcome, coordinator_epoch: 0 };
        block_on(log.append_txn_marker(ProducerId(producer), ProducerEpoch(0), marker, EPOCH))
            .expect("marker")
            .base_offset
    };
    let plain = |log: &mut PartitionLog<SimStorage>, key: &[u8], value: &[u8]| {
        let spec = RecordSpec { key: Some(key), value: Some(value), timestamp_delta_ms: 0 };
        block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[spec]), EPOCH)).expect("append");
    };
    let aborted = txn(&mut log, 7, 0, b"aborted");
    let committed = txn(&mut log, 8, 0, b"committed");
    let abort = marker(&mut log, 7, TxnOutcome::Abort);
    let commit = marker(&mut log, 8, TxnOutcome::Commit);
    // Each producer's last batch is in a second transaction, committed.
    let kept = txn(&mut log, 7, 1, b"seven");
    txn(&mut log, 8, 1, b"eight");
    marker(&mut log, 7, TxnOutcome::Commit);
    marker(&mut log, 8, TxnOutcome::Commit);
    plain(&mut log, b"committed", b"superseded");
    let filler = |log: &mut PartitionLog<SimStorage>| {
        for i in 0..20u8 {
            plain(log, b"filler", &[i; 30]);
        }
        visible(log);
    };
    filler(&mut log);
    clean(&mut log).expect("a pass");
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert!(!offsets.contains(&aborted.0), "the aborted record goes");
    assert!(!offsets.contains(&committed.0), "the superseded committed record goes");
    assert!(offsets.contains(&kept.0), "the latest committed record stays");
    let has = |log: &PartitionLog<SimStorage>, offset: Offset| control_offsets(log).contains(&offset.0);
    assert!(has(&log, abort) && has(&log, commit), "a pass that removed their records keeps the markers");
    let index = |log: &PartitionLog<SimStorage>| {
        log.aborted_transactions(Offset(0), log.log_end_offset()).iter().map(|a| a.last_offset).collect::<Vec<_>>()
    };
    assert_eq!(index(&log), vec![abort], "the abort's index entry stays with its marker");
    filler(&mut log);
    clean(&mut log).expect("a pass");
    assert!(has(&log, abort) && has(&log, commit), "removable now, but delete.retention.ms has not passed");
    assert!(index(&log).is_empty(), "no aborted record is left for the index to hide");
    clock.advance_ms(DAY_MS);
    filler(&mut log);
    clean(&mut log).expect("a pass");
    assert!(!has(&log, abort) && !has(&log, commit), "markers go once their horizon passed");
    assert_eq!(control_offsets(&log).len(), 2, "the second transactions' markers stay");
}

/// Offsets of the control records the log still serves.
fn control_offsets(log: &PartitionLog<SimStorage>) -> Vec<i64> {
    let mut offsets = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let read = block_on(log.read(offset, 1 << 20, None)).expect("read");
        for (position, header) in batch::split_batches(&read.bytes).expect("valid") {
            if header.is_control() {
                let whole = &read.bytes[position..position + header.size_bytes()];
                offsets.extend(records::decode_records(whole, 1 << 20).expect("decode").iter().map(|r| r.offset.0));
            }
        }
        offset = read.next_offset;
    }
    offsets
}

/// Base offsets of the segment files on the disk, in order.
fn segment_bases(storage: &SimStorage) -> Vec<i64> {
    let names = block_on(storage.list_dir(Path::new(DIR))).expect("list");
    names.iter().filter_map(|n| n.strip_suffix(".log")).filter_map(|n| n.parse().ok()).collect()
}

/// A log of keyed records over small segments, with a producer, a tombstone and an
/// aborted transaction in it, closed cleanly and reopened: the same log for every
/// crash point.
fn crash_subject(storage: &SimStorage, clock: &Arc<ManualClock>) -> PartitionLog<SimStorage> {
    let mut log = open(storage, &compacted_config(400), clock);
    for i in 0..45u32 {
        let key = format!("key-{}", i % 4).into_bytes();
        let value = format!("value-{i}").into_bytes();
        let value = (i % 11 != 5).then_some(value.as_slice());
        let spec = RecordSpec { key: Some(&key), value, timestamp_delta_ms: 0 };
        let producer = match i % 3 {
            0 => BatchProducer { producer_id: ProducerId(3), producer_epoch: 0, base_sequence: (i / 3) as i32 },
            _ => BatchProducer::default(),
        };
        let bytes = compressed(&batch::build_batch(clock.now(), producer, &[spec]), (i % 5) as i16);
        block_on(log.append(bytes, EPOCH)).expect("append");
    }
    visible(&mut log);
    block_on(log.close()).expect("close");
    open(storage, &compacted_config(400), clock)
}

#[test]
fn a_crash_at_every_change_to_the_disk_during_a_clean_reopens_a_log_with_the_same_latest_values() {
    let clock = ManualClock::new(T0);
    let reference = SimStorage::new();
    let mut log = crash_subject(&reference, &clock);
    let before = read_all(&log);
    clean(&mut log).expect("a pass");
    let cleaned_end = checkpoint(&log);
    let after = read_all(&log);
    let latest = |records: &[Seen]| {
        let mut latest: BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> = BTreeMap::new();
        for record in records {
            latest.insert(record.key.clone().expect("keyed"), (record.offset, record.value.clone()));
        }
        latest
    };
    assert_eq!(latest(&after), latest(&before));
    for changes in 0.. {
        let storage = SimStorage::new();
        let mut log = crash_subject(&storage, &clock);
        storage.die_after_changes(changes);
        let outcome = block_on(log.clean(&CleanerLimits::default()));
        let finished = outcome.is_ok() && !log.is_poisoned();
        drop(log);
        storage.crash(CrashFault::TornTail { seed: changes });
        let log = open(&storage, &compacted_config(400), &clock);
        let reopened = read_all(&log);
        let what = format!("crash after {changes} changes ({outcome:?})");
        assert_eq!(latest(&reopened), latest(&before), "{what}: each key's latest record");
        for record in &reopened {
            assert!(before.contains(record), "{what}: {record:?} was never appended");
        }
        for record in expected(&before, cleaned_end) {
            assert!(reopened.contains(&record), "{what}: {record:?} was lost");
        }
        let names = block_on(storage.list_dir(Path::new(DIR))).expect("list");
        assert!(
            names.iter().all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap") && !n.ends_with(".deleted")),
            "{what}: the open left {names:?}"
        );
        if finished {
            assert_eq!(reopened, after, "{what}: the whole pass survives");
            assert!(changes > 10, "the pass took {changes} changes");
            break;
        }
    }
}

#[test]
fn a_compacted_topic_refuses_a_record_without_a_key_and_writes_nothing() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let mut log = open(&storage, &compacted_config(400), &clock);
    let keyed = RecordSpec { key: Some(b"k"), value: Some(b"v"), timestamp_delta_ms: 0 };
    let keyless = RecordSpec { key: None, value: Some(b"v"), timestamp_delta_ms: 0 };
    let bytes = compressed(&batch::build_batch(T0, BatchProducer::default(), &[keyed.clone(), keyless]), 4);
    let refused = block_on(log.append(bytes, EPOCH));
    assert!(matches!(refused, Err(EngineError::RecordWithoutKey { offset_delta: 1, .. })), "{refused:?}");
    assert_eq!(log.log_end_offset(), Offset(0));
    block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[keyed]), EPOCH)).expect("keyed");
}

#[test]
fn a_compact_only_topic_keeps_its_segments_past_retention_and_compact_delete_does_not() {
    for delete in [false, true] {
        let storage = SimStorage::new();
        let clock = ManualClock::new(T0);
        let config = TopicConfig {
            retention_ms: 1000,
            cleanup_policy: CleanupPolicy { delete, compact: true },
            ..compacted_config(300)
        };
        let mut log = open(&storage, &config, &clock);
        for i in 0..20u8 {
            let spec = RecordSpec { key: Some(&[i]), value: Some(&[i; 40]), timestamp_delta_ms: 0 };
            block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[spec]), EPOCH)).expect("append");
        }
        visible(&mut log);
        clock.advance_ms(10_000);
        let deleted = block_on(log.housekeeping()).expect("housekeeping");
        assert_eq!(deleted > 0, delete, "compact,delete applies retention; compact alone does not ({deleted})");
    }
}

fn has_cleaned_files(storage: &SimStorage) -> bool {
    let names = block_on(storage.list_dir(Path::new(DIR))).expect("list");
    names.iter().any(|n| n.ends_with(".cleaned"))
}

#[test]
fn a_pass_runs_in_steps_with_appends_between_them_and_is_abandoned_when_its_segments_go() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let mut log = keyed_log(&storage, &clock, 60);
    let mut appended = read_all(&log);
    let limits = CleanerLimits { read_chunk_bytes: 64, ..CleanerLimits::default() };
    let mut pass = None;
    let mut steps = 0;
    let stats = loop {
        match block_on(log.clean_step(&mut pass, &limits)).expect("step") {
            CleanStep::Working => steps += 1,
            CleanStep::Done(stats) => break stats,
            CleanStep::Idle => panic!("the pass stopped after {steps} steps"),
        }
        // An append between every two steps.
        let key = format!("key-{}", steps % 3).into_bytes();
        let value = format!("between-{steps}").into_bytes();
        let spec = RecordSpec { key: Some(&key), value: Some(&value), timestamp_delta_ms: 0 };
        let info =
            block_on(log.append(batch::build_batch(T0, BatchProducer::default(), &[spec]), EPOCH)).expect("append");
        appended.push(Seen { offset: info.base_offset.0, key: Some(key), value: Some(value), timestamp: T0.0 });
        visible(&mut log);
    };
    assert!(steps > 20, "a pass of {} bytes read in {steps} steps", stats.bytes_read);
    assert_eq!(read_all(&log), expected(&appended, checkpoint(&log)));

    // A pass whose segments go (delete-records past them) between two steps is
    // abandoned, its `.cleaned` files removed; the next one starts over.
    let before = read_all(&log);
    let mut pass = None;
    while !has_cleaned_files(&storage) {
        let step = block_on(log.clean_step(&mut pass, &limits)).expect("step");
        assert_eq!(step, CleanStep::Working, "a pass writing its first group");
    }
    let second_base = segment_bases(&storage)[1];
    block_on(log.delete_records(Offset(second_base))).expect("delete records");
    assert_eq!(block_on(log.clean_step(&mut pass, &limits)).expect("step"), CleanStep::Idle);
    assert!(pass.is_none() && !has_cleaned_files(&storage), "abandoned, its files removed");
    clean(&mut log);
    let kept: Vec<Seen> = before.into_iter().filter(|r| r.offset >= second_base).collect();
    assert_eq!(latest_values(&read_all(&log)), latest_values(&kept));
}

fn latest_values(records: &[Seen]) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    records.iter().map(|r| (r.key.clone().expect("keyed"), (r.offset, r.value.clone()))).collect()
}

#[test]
fn min_compaction_lag_keeps_recent_segments_dirty_and_max_compaction_lag_makes_a_pass_overdue() {
    let storage = SimStorage::new();
    let clock = ManualClock::new(T0);
    let hour_ms = 3600 * 1000;
    let config = TopicConfig {
        min_compaction_lag_ms: hour_ms,
        max_compaction_lag_ms: 2 * hour_ms,
        min_cleanable_dirty_ratio: corelog_engine::config::DirtyRatio(1.0),
        ..compacted_config(400)
    };
    let mut log = open(&storage, &config, &clock);
    for i in 0..40u32 {
        let key = format!("key-{}", i % 3).into_bytes();
        let spec = RecordSpec { key: Some(&key), value: Some(b"value"), timestamp_delta_ms: 0 };
        block_on(log.append(batch::build_batch(clock.now(), BatchProducer::default(), &[spec]), EPOCH))
            .expect("append");
        visible(&mut log);
    }
    let range = block_on(log.cleanable_range()).expect("range");
    assert_eq!(range.first_uncleanable, range.first_dirty, "every record is younger than min.compaction.lag.ms");
    assert!(!range.is_due(1.0));
    assert_eq!(clean(&mut log), None);
    clock.advance_ms(hour_ms + 1);
    let range = block_on(log.cleanable_range()).expect("range");
    assert!(range.first_uncleanable > range.first_dirty, "past the lag, the sealed segments are cleanable");
    assert!(!range.compaction_overdue && !range.is_due(1.0), "a ratio of 1 is never passed");
    clock.advance_ms(hour_ms);
    let range = block_on(log.cleanable_range()).expect("range");
    assert!(range.compaction_overdue && range.is_due(1.0), "past max.compaction.lag.ms a pass is due anyway");
    assert!(clean(&mut log).is_some_and(|stats| stats.records_removed > 0));
}
